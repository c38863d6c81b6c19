#!/bin/sh
# Run every imapgw test and print one summary line (called by `make check`
# after the build):
#
#   1. each unit test binary build/test/test_* and build/test-asan/test_*
#      (each prints "NAME: N passed, N failed");
#   2. the integration tests: /usr/bin/python3 -m pytest regress/integration
#      (root; starts a throwaway Dovecot and imapgwd on 127.0.0.1);
#   3. the last line: "N passed, N failed" (", N skipped" when some were).
#
# A unit binary that exits non-zero or prints no summary line counts as a
# failure; pytest errors count as failures.  Exits non-zero when anything
# failed or when no test ran.
#
# Options through the environment: PYTEST_ARGS (extra pytest arguments, e.g.
# "-k sandbox -x"), UNIT_TIMEOUT (seconds per unit binary, default 300).

cd "$(dirname "$0")/.." || exit 1

PYTHON=/usr/bin/python3
pass=0
fail=0
skip=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/imapgw-checks.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

: "${UBSAN_OPTIONS:=print_stacktrace=1}"
export UBSAN_OPTIONS

# num KEY FILE: the number before KEY in the pytest summary line, else 0.
num() {
	n=$(sed -n "s/.*[^0-9]\([0-9][0-9]*\) $1.*/\1/p;s/^\([0-9][0-9]*\) $1.*/\1/p" "$2" | head -n 1)
	echo "${n:-0}"
}

# 1. unit tests
for t in build/test/test_* build/test-asan/test_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	timeout "${UNIT_TIMEOUT:-300}" "./$t" >"$tmp/unit" 2>&1
	rc=$?
	cat "$tmp/unit"
	line=$(grep -E '^[^ ]+: [0-9]+ passed, [0-9]+ failed' "$tmp/unit" |
	    tail -n 1)
	if [ -z "$line" ]; then
		echo "$t: no summary line (exit status $rc): counted as 1 failed"
		fail=$((fail + 1))
		continue
	fi
	p=$(echo "$line" | sed -E 's/^[^ ]+: ([0-9]+) passed, ([0-9]+) failed.*/\1/')
	f=$(echo "$line" | sed -E 's/^[^ ]+: ([0-9]+) passed, ([0-9]+) failed.*/\2/')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "$t: exit status $rc after \"$line\": counted as 1 failed"
		f=1
	fi
	pass=$((pass + p))
	fail=$((fail + f))
done

# 2. integration tests
if ! "$PYTHON" -c 'import pytest' 2>/dev/null; then
	echo "regress/integration: $PYTHON has no pytest (apt-get install" \
	    "python3-pytest): counted as 1 failed"
	fail=$((fail + 1))
else
	{
		PYTHONDONTWRITEBYTECODE=1 "$PYTHON" -m pytest -q \
		    -p no:cacheprovider $PYTEST_ARGS regress/integration 2>&1
		echo $? >"$tmp/rc"
	} | tee "$tmp/pytest"
	rc=$(cat "$tmp/rc")
	# the summary is the last line that ends in "in N.NNs"
	grep -E ' in [0-9.]+s( \([0-9:]+\))?( =+)?$' "$tmp/pytest" | tail -n 1 \
	    >"$tmp/summary"
	p=$(($(num passed "$tmp/summary") + $(num xpassed "$tmp/summary")))
	f=$(($(num failed "$tmp/summary") + $(num error "$tmp/summary")))
	s=$(($(num skipped "$tmp/summary") + $(num xfailed "$tmp/summary")))
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "regress/integration: pytest exit status $rc: counted as" \
		    "1 failed"
		f=1
	fi
	pass=$((pass + p))
	fail=$((fail + f))
	skip=$((skip + s))
fi

# 3. one line
if [ "$skip" -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ] && [ $((pass + fail)) -gt 0 ]
