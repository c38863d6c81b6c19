"""imapgw throughput benchmark (make bench): BODY[] of a ~100 MB mailbox
fetched straight from a throwaway Dovecot and through imapgwd, in the same
run.  Prints both times and the gateway/direct throughput ratio.

Environment: BENCH_MESSAGES (100), BENCH_SIZE (bytes, 1048576), BENCH_REPS
(5), IMAPGWD (build/imapgwd).
"""

import random
import sys

import benchlib as bl

NMSG = bl.env_int("BENCH_MESSAGES", 100)
SIZE = bl.env_int("BENCH_SIZE", 1 << 20)
REPS = bl.env_int("BENCH_REPS", 5)
USER, PW = "bench", "bench"


def fetch_all(port, digest=False):
    """Seconds for UID FETCH 1:* BODY.PEEK[] (login/select not timed),
    bytes of literal data, and a digest of the literals if asked."""
    return bl.fetch_all(port, USER, PW, digest)[:3]


def main():
    binary = bl.preflight("bench")
    if binary is None:
        return 1
    d = bl.dv.Dovecot(users={USER: PW}).start()
    g = None
    try:
        print("bench: building mailbox: %d messages of %d bytes ..."
              % (NMSG, SIZE), flush=True)
        rng = random.Random(42)
        bl.append_all(d.port, USER, PW,
                      (bl.make_message(rng, i, SIZE) for i in range(NMSG)))

        # The relay alone: scanning is measured by scan_bench.py.
        g = bl.gateway(d, binary, bl.RELAY)

        # correctness and warm-up: both paths deliver the same bytes
        _, n1, h1 = fetch_all(d.port, digest=True)
        _, n2, h2 = fetch_all(g.port(), digest=True)
        if (n1, h1) != (n2, h2):
            print("bench: WARNING: gateway delivered different bytes "
                  "(%d vs %d bytes direct)" % (n2, n1))
        total = n1
        print("bench: mailbox %.1f MB, %d repetitions each" %
              (total / 1e6, REPS), flush=True)

        times = {"direct": [], "gateway": []}
        for _ in range(REPS):
            times["direct"].append(fetch_all(d.port)[0])
            times["gateway"].append(fetch_all(g.port())[0])

        print()
        med = bl.throughput_table(times, total, ("direct", "gateway"), 8, 10)
        ratio = med["direct"] / med["gateway"]
        best = min(times["direct"]) / min(times["gateway"])
        print()
        print("gateway/direct throughput: %.2f (median), %.2f (best)"
              % (ratio, best))
        return 0
    finally:
        if g is not None:
            g.stop()
        d.stop()

if __name__ == "__main__":
    sys.exit(main())
