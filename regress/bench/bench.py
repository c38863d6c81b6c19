"""imapgw throughput benchmark (make bench): BODY[] of a ~100 MB mailbox
fetched straight from a throwaway Dovecot and through imapgwd, in the same
run.  Prints both times and the gateway/direct throughput ratio.

Environment: BENCH_MESSAGES (100), BENCH_SIZE (bytes, 1048576), BENCH_REPS
(5), IMAPGWD (build/imapgwd).
"""

import base64
import hashlib
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import dovecot as dv          # noqa: E402
import gateway as gwm         # noqa: E402
from rawimap import RawIMAP   # noqa: E402

NMSG = int(os.environ.get("BENCH_MESSAGES", "100"))
SIZE = int(os.environ.get("BENCH_SIZE", str(1 << 20)))
REPS = int(os.environ.get("BENCH_REPS", "5"))
USER, PW = "bench", "bench"


def make_message(rng, i):
    """About SIZE bytes: headers, a text part, a base64 attachment."""
    head = ("From: bench@example.org\r\nTo: bench@example.org\r\n"
            "Subject: bench %d\r\nMessage-ID: <bench-%d@example.org>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            "--b\r\nContent-Type: text/plain\r\n\r\nbenchmark message\r\n"
            "--b\r\nContent-Type: application/octet-stream; name=\"d.bin\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" % (i, i)).encode()
    tail = b"--b--\r\n"
    raw = max(0, (SIZE - len(head) - len(tail)) * 57 // 78)
    att = base64.encodebytes(rng.randbytes(raw)).replace(b"\n", b"\r\n")
    return head + att + tail


def fetch_all(port, digest=False):
    """Seconds for UID FETCH 1:* BODY.PEEK[] (login/select not timed),
    bytes of literal data, and a digest of the literals if asked."""
    c = RawIMAP(port, timeout=120)
    c.login(USER, PW)
    c.command("EXAMINE INBOX")
    h = hashlib.sha256() if digest else None
    n = 0
    t0 = time.perf_counter()
    c.send(b"f UID FETCH 1:* BODY.PEEK[]\r\n")
    f = c.f
    while True:
        line = f.readline()
        if not line:
            raise EOFError("connection closed during FETCH")
        if line.startswith(b"f "):
            if not line.startswith(b"f OK"):
                raise RuntimeError(line)
            break
        s = line.rstrip(b"\r\n")
        if s.endswith(b"}") and b"{" in s:
            k = int(s[s.rindex(b"{") + 1:-1])
            data = f.read(k)
            if len(data) != k:
                raise EOFError("short literal")
            n += k
            if h:
                h.update(data)
    dt = time.perf_counter() - t0
    c.logout()
    return dt, n, (h.hexdigest() if h else None)


def main():
    if os.geteuid() != 0:
        print("bench: must run as root", file=sys.stderr)
        return 1
    binary = os.environ.get("IMAPGWD", gwm.IMAPGWD)
    if not os.path.exists(binary):
        print("bench: %s missing: run make first" % binary, file=sys.stderr)
        return 1
    d = dv.Dovecot(users={USER: PW}).start()
    g = None
    try:
        print("bench: building mailbox: %d messages of %d bytes ..."
              % (NMSG, SIZE), flush=True)
        rng = random.Random(42)
        c = RawIMAP(d.port, timeout=120)
        c.login(USER, PW)
        for i in range(NMSG):
            c.append("INBOX", make_message(rng, i), literal_plus=True)
        c.logout()

        # The relay alone: scanning is measured by scan_bench.py.
        g = gwm.Gateway(servers={"dovecot": [d.address]},
                        actions={"relay": {"inherit": "IMAP-Server.Standard",
                                           "antivirus": {"enabled": False}}},
                        policies=[gwm.policy("imap-in", dv.free_port(),
                                             "dovecot", action="relay")],
                        binary=binary, level="info")
        g.start()

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
        print("%-8s %10s %10s %12s" % ("path", "best s", "median s",
                                        "MB/s (med)"))
        med = {}
        for k in ("direct", "gateway"):
            med[k] = statistics.median(times[k])
            print("%-8s %10.3f %10.3f %12.1f" % (k, min(times[k]), med[k],
                                                 total / 1e6 / med[k]))
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
