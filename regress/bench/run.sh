#!/bin/sh
# make bench: throughput of imapgwd against a direct Dovecot fetch, then
# the scanning benchmark (throughput with scanning against direct and
# clamscan, memory per idle session, NOOP latency), then the pipeline
# benchmark (messages per second through scand against clamscan and
# clamdscan --multiscan, memory of N scand workers against one).
# Benchmarks, not tests.  See regress/bench/bench.py,
# regress/bench/scan_bench.py and regress/bench/pipeline_bench.py for the
# knobs.
cd "$(dirname "$0")/../.." || exit 1
env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 regress/bench/bench.py "$@"
rc=$?
echo
env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 regress/bench/scan_bench.py
rc2=$?
echo
env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 regress/bench/pipeline_bench.py
rc3=$?
[ "$rc" -ne 0 ] && exit "$rc"
[ "$rc2" -ne 0 ] && exit "$rc2"
exit "$rc3"
