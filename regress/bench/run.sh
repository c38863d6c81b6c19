#!/bin/sh
# make bench: throughput of imapgwd against a direct Dovecot fetch, then
# the scanning benchmark (throughput with scanning against direct and
# clamscan, memory per idle session, NOOP latency).  Benchmarks, not tests.
# See regress/bench/bench.py and regress/bench/scan_bench.py for the knobs.
cd "$(dirname "$0")/../.." || exit 1
env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 regress/bench/bench.py "$@"
rc=$?
echo
env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 regress/bench/scan_bench.py
rc2=$?
[ "$rc" -ne 0 ] && exit "$rc"
exit "$rc2"
