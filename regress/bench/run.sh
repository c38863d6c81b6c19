#!/bin/sh
# make bench: throughput of imapgwd against a direct Dovecot fetch, then
# the scanning benchmark (throughput with scanning against direct and
# clamscan, memory per idle session, NOOP latency), then the pipeline
# benchmark (messages per second through scand against clamscan and
# clamdscan --multiscan, memory of N scand workers against one), then the
# header-sync benchmark (a client's header sync of a 10,000-message
# mailbox: direct, consistency lazy, strict uncached, cached and after a
# restart; peak RSS of netd), then the TLS benchmark (full handshakes per
# second and bulk fetch over TLS: Dovecot's imaps, stunnel4 and imapgwd's
# implicit TLS listener in front of Dovecot).
# Benchmarks, not tests.  See regress/bench/bench.py,
# regress/bench/scan_bench.py, regress/bench/pipeline_bench.py,
# regress/bench/sync_bench.py and regress/bench/tls_bench.py for the
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
echo
env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 regress/bench/sync_bench.py
rc4=$?
echo
env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 regress/bench/tls_bench.py
rc5=$?
[ "$rc" -ne 0 ] && exit "$rc"
[ "$rc2" -ne 0 ] && exit "$rc2"
[ "$rc3" -ne 0 ] && exit "$rc3"
[ "$rc4" -ne 0 ] && exit "$rc4"
exit "$rc5"
