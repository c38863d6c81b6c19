#!/bin/sh
# Run libFuzzer harnesses, each for FUZZ_TIME seconds (default 10), and fail
# if any of them finds a crash, a sanitizer report or a broken invariant.
#
#   FUZZ_TIME=600 sh regress/fuzz/run.sh build/fuzz/fuzz_command ...
#
# Each harness regress/fuzz/NAME.c (binary build/fuzz/NAME) starts from the
# seed corpus regress/fuzz/corpus_${NAME#fuzz_}/ and writes what it learns
# to build/fuzz/corpus-NAME/ (the seeds in the tree stay as they are);
# crashing inputs go to build/fuzz/artifacts/.  Options for libFuzzer can be
# added with FUZZ_ARGS (e.g. "-jobs=4 -workers=4").  Prints one line per
# harness: executions, executions per second, coverage and features.

cd "$(dirname "$0")/../.." || exit 1
: "${FUZZ_TIME:=10}"
: "${UBSAN_OPTIONS:=print_stacktrace=1:halt_on_error=1}"
: "${ASAN_OPTIONS:=abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS ASAN_OPTIONS

[ $# -gt 0 ] || set -- build/fuzz/fuzz_command build/fuzz/fuzz_response build/fuzz/fuzz_sni
mkdir -p build/fuzz/artifacts
rc=0
for bin in "$@"; do
	name=$(basename "$bin")
	seeds=regress/fuzz/corpus_${name#fuzz_}
	work=build/fuzz/corpus-$name
	log=build/fuzz/$name.log
	mkdir -p "$work"
	if [ ! -x "$bin" ]; then
		echo "$name: $bin missing"
		rc=1
		continue
	fi
	# shellcheck disable=SC2086
	"$bin" -max_total_time="$FUZZ_TIME" -timeout=10 -rss_limit_mb=2048 \
	    -max_len=65536 -print_final_stats=1 -dict=regress/fuzz/imap.dict \
	    -artifact_prefix=build/fuzz/artifacts/"$name"- $FUZZ_ARGS \
	    "$work" "$seeds" >"$log" 2>&1
	st=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	cov=$(grep -aE '^#[0-9]+' "$log" | sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/cov \1 ft \2/p' | tail -n 1)
	if [ "$st" -ne 0 ]; then
		echo "$name: FAILED (exit $st), see $log:"
		grep -aE 'ERROR|invariant failed|runtime error|SUMMARY|Test unit written' "$log" | head -n 10
		rc=1
	else
		echo "$name: ok, ${execs:-?} runs in ${FUZZ_TIME}s, ${speed:-?}/s, ${cov:-cov ?}, corpus $(ls "$work" | wc -l) files"
	fi
done
exit $rc
