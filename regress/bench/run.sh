#!/bin/sh
# make bench: throughput of imapgwd against a direct Dovecot fetch (a
# benchmark, not a test).  See regress/bench/bench.py for the knobs.
cd "$(dirname "$0")/../.." || exit 1
exec env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 regress/bench/bench.py "$@"
