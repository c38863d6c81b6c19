"""imapgw header-sync benchmark (make bench; issue 5, consistency strict):
the header-only sync a mail client does when it opens a large mailbox,
straight from a throwaway Dovecot and through imapgwd, in the same run.

The mailbox: BENCH_SYNC_MESSAGES (10,000) small realistic messages (a few
Received lines, the usual header fields, a text body of 0.3-3 KB; 10%
with a small base64 attachment, 2% with an EICAR attachment, 1% GTUBE
spam), written as maildir files straight into Dovecot's mail directory
(no APPEND: seconds, not minutes).

The sync is what Thunderbird sends for new headers (its header list):

    UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To
      Cc Bcc Subject Date Message-ID Priority X-Priority References
      Newsgroups In-Reply-To Content-Type Reply-To)])

(BENCH_SYNC_ITEMS replaces the item list; e.g. the mbsync-like
"UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (DATE FROM TO
CC SUBJECT MESSAGE-ID)]").  LOGIN/EXAMINE are not timed.  Paths, each
repeated BENCH_SYNC_REPS (3) times, the median printed:

  direct        Dovecot itself (the baseline of every ratio)
  relay         imapgwd with antivirus off: nothing judged, the relay's
                own cost
  lazy first    imapgwd, consistency lazy, a fresh gateway (own
                state_dir: nothing judged) per repetition
  lazy second   the same gateway again, a new session (lazy judges
                here too: HEADER.FIELDS is a section, so BODY.PEEK[] is
                added and the message judged)
  strict first  consistency strict (the default), a fresh gateway per
                repetition: every message is fetched and judged by the
                gateway before its headers are answered
  strict second the same gateway, a new session (verdict cache in memory)
  strict cached the last strict gateway again, new sessions, measured in
                rounds with direct and relay: each round syncs direct,
                through the relay and through it, one after another, so
                that load from elsewhere weighs on all three alike; the
                target ratio is the median of the rounds' ratios
  strict restart the gateway restarted on the same state_dir before each
                repetition (verdicts from state_dir/verdicts, LMDB)

Also printed: the peak RSS (VmHWM, /proc) of every netd process after the
strict first run (netd starts with the gateway, so that is the peak of the
run), the "message judged" lines each gateway logged, and how many
responses differ from Dovecot's (infected and spam messages should; with
strict also their RFC822.SIZE).  Target of the issue: strict cached
<= 1.1x direct (printed, never asserted: a benchmark, not a test).

Environment: BENCH_SYNC_MESSAGES (10000), BENCH_SYNC_REPS (3),
BENCH_SYNC_SCAND (2 scand workers), BENCH_SYNC_NETD (1),
BENCH_SYNC_ITEMS, BENCH_SYNC_SEED (99), BENCH_SYNC_SKIP (comma list of
lazy, strict, restart), IMAPGWD (build/imapgwd).
"""

import base64
import os
import random
import re
import statistics
import sys
import time

import benchlib as bl
from benchlib import RawIMAP, dv, gwm

NMSG = bl.env_int("BENCH_SYNC_MESSAGES", 10000)
REPS = bl.env_int("BENCH_SYNC_REPS", 3, minimum=1)
SCAND = bl.env_int("BENCH_SYNC_SCAND", 2)
NETD = bl.env_int("BENCH_SYNC_NETD", 1)
SEED = bl.env_int("BENCH_SYNC_SEED", 99)
ITEMS = os.environ.get(
    "BENCH_SYNC_ITEMS",
    "UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject "
    "Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
    "Content-Type Reply-To)]")
SKIP = bl.env_set("BENCH_SYNC_SKIP")
USER, PW = "syncbench", "bench"
TARGET = 1.1                 # strict, cached: <= 1.1x direct

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
JUDGED = re.compile(r"\bmessage judged\b")
UID_RX = re.compile(rb"\bUID (\d+)")


# ---- the mailbox ------------------------------------------------------------

WORDS = None


def _words(rng):
    global WORDS
    if WORDS is None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        WORDS = ["".join(rng.choice(letters)
                         for _ in range(rng.randint(2, 10)))
                 for _ in range(2000)]
    return WORDS


def _text(rng, n):
    w = _words(rng)
    out, line, size = [], [], 0
    while size < n:
        word = rng.choice(w)
        line.append(word)
        size += len(word) + 1
        if len(line) > 10:
            out.append(" ".join(line))
            line = []
    out.append(" ".join(line))
    return ("\r\n".join(out) + "\r\n").encode()


def make_message(rng, i, kind):
    """One message (CRLF): kind plain, attach, eicar or spam."""
    names = ["Alice Example", "Bob Builder", "Carol Danvers", "Dave Jones",
             "Erin Brockovich", "Frank Castle", "Grace Hopper"]
    frm = rng.choice(names)
    to = rng.choice(names)
    date = "%s, %02d %s 2024 %02d:%02d:%02d +0100" % (
        rng.choice(["Mon", "Tue", "Wed", "Thu", "Fri"]), rng.randint(1, 28),
        rng.choice(["Jan", "Feb", "Mar", "Apr", "May", "Jun"]),
        rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
    subject = " ".join(rng.choice(_words(rng))
                       for _ in range(rng.randint(2, 8)))
    head = []
    for h in range(rng.randint(1, 4)):
        head.append("Received: from mx%d.example.net (mx%d.example.net "
                    "[192.0.2.%d])\r\n\tby mail.example.org with ESMTPS id "
                    "%08X; %s" % (h, h, rng.randint(1, 254),
                                  rng.getrandbits(32), date))
    head += ["From: %s <%s@example.org>" % (frm, frm.split()[0].lower()),
             "To: %s <%s@example.org>" % (to, to.split()[0].lower()),
             "Subject: %s %d" % (subject, i), "Date: %s" % date,
             "Message-ID: <sync-%d-%08x@example.org>" % (i,
                                                         rng.getrandbits(32)),
             "MIME-Version: 1.0"]
    if rng.random() < 0.3:
        head.append("References: <sync-%d@example.org>" % max(0, i - 1))
        head.append("In-Reply-To: <sync-%d@example.org>" % max(0, i - 1))
    body = _text(rng, rng.randint(300, 3000))
    if kind == "spam":
        body += b"\r\n" + GTUBE + b"\r\n"
    if kind in ("attach", "eicar"):
        b = "=_sync%d" % i
        head.append('Content-Type: multipart/mixed; boundary="%s"' % b)
        if kind == "eicar":
            att, name = gwm.EICAR, "invoice.com"
        else:
            att, name = rng.randbytes(rng.randint(500, 6000)), "data.bin"
        enc = base64.encodebytes(att).replace(b"\n", b"\r\n")
        msg = ("\r\n".join(head) + "\r\n\r\n").encode() + \
            b"--" + b.encode() + b"\r\nContent-Type: text/plain; " \
            b"charset=us-ascii\r\n\r\n" + body + \
            b"--" + b.encode() + b"\r\nContent-Type: application/" \
            b"octet-stream; name=\"" + name.encode() + \
            b"\"\r\nContent-Disposition: attachment; filename=\"" + \
            name.encode() + b"\"\r\nContent-Transfer-Encoding: base64" \
            b"\r\n\r\n" + enc + b"--" + b.encode() + b"--\r\n"
        return msg
    head.append("Content-Type: text/plain; charset=us-ascii")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def kinds(rng, n):
    out = []
    for _ in range(n):
        r = rng.random()
        out.append("eicar" if r < 0.02 else "spam" if r < 0.03 else
                   "attach" if r < 0.13 else "plain")
    return out


def write_maildir(d, user, msgs):
    """The messages as maildir files in user's INBOX (cur/, S= size in the
    name so that Dovecot need not stat them), owned by the mail user."""
    import pwd
    pw = pwd.getpwnam(dv.MAIL_USER)
    home = os.path.join(d.dir, "mail", user)
    md = os.path.join(home, "Maildir")
    for sub in ("", "cur", "new", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    base = int(time.time()) - len(msgs)
    cur = os.path.join(md, "cur")
    for i, m in enumerate(msgs):
        fn = os.path.join(cur, "%d.M%dP1.syncbench,S=%d:2," % (
            base + i, i, len(m)))
        with open(fn, "wb") as f:
            f.write(m)
        os.utime(fn, (base + i, base + i))
    for root, dirs, files in os.walk(home):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)


# ---- the sync ---------------------------------------------------------------

def sync(port):
    """(seconds, {uid: response bytes}) of one header sync in a new
    session; login and EXAMINE not timed."""
    c = RawIMAP(port, timeout=600)
    c.login(USER, PW)
    c.command("EXAMINE INBOX")
    f = c.f
    out = {}
    t0 = time.perf_counter()
    c.send(("s UID FETCH 1:* (%s)\r\n" % ITEMS).encode())
    cur = []
    for line, data in bl.response_lines(f, b"s"):
        cur.append(line)
        if data is not None:
            cur.append(data)
            continue
        resp = b"".join(cur)
        cur = []
        m = UID_RX.search(resp)
        if m and b" FETCH " in resp[:30]:
            out[int(m.group(1))] = resp
    dt = time.perf_counter() - t0
    c.logout()
    return dt, out


# ---- the gateway ------------------------------------------------------------

def action(consistency):
    return {"inherit": "IMAP-Server.Standard",
            "general": {"consistency": consistency},
            "antivirus": {"enabled": True, "on_virus": "strip",
                          "on_error": "deny"},
            "spamblocker": {"enabled": True, "engine": "builtin",
                            "categories": {
                                "confirmed": {"action": "tag",
                                              "tag": "***SPAM*** "},
                                "bulk": {"action": "allow"},
                                "suspect": {"action": "allow"}}}}


def start_gateway(d, binary, consistency):
    return bl.gateway(d, binary, action(consistency), "sync",
                      workers=(NETD, SCAND, 1), timeout=120)


def netd_pids(g):
    return g.pids_of("netd") or bl.role_pids(g, "netd")


def peak_rss_kb(pids):
    """{pid: (VmHWM, VmRSS)} in KB."""
    out = {}
    for p in pids:
        try:
            st = gwm.proc_status(p)
            out[p] = (int(st.get("VmHWM", "0 kB").split()[0]),
                      int(st.get("VmRSS", "0 kB").split()[0]))
        except (OSError, ValueError):
            pass
    return out


def store_note(g, ks, msgs):
    """What the verdict store holds on disk, against the mail: it keeps
    the sanitized form of the changed messages (not re-derived from the
    original: a rescan after a signature update could give another one,
    and costs what the first run shows)."""
    path = os.path.join(g.state_dir, "verdicts", "data.mdb")
    try:
        st = os.stat(path)
    except OSError:
        return "verdict store: %s not found" % path
    changed = sum(len(m) for m, k in zip(msgs, ks)
                  if k in ("eicar", "spam"))
    return ("verdict store (state_dir/verdicts/data.mdb): %.1f MB on disk "
            "(%.1f MB allocated) for %d messages, %.1f MB of them "
            "changed (their sanitized form is stored)" % (
                st.st_size / 1e6, st.st_blocks * 512 / 1e6, len(msgs),
                changed / 1e6))


def judged(g):
    return len(JUDGED.findall(g.log_text()))


def differing(base, got):
    """(responses that differ from direct, UIDs missing)."""
    diff = sum(1 for u, r in got.items() if base.get(u) != r)
    return diff, len(set(base) - set(got))


# ---- main -------------------------------------------------------------------

def main():
    binary = bl.preflight("sync_bench")
    if binary is None:
        return 1
    d = dv.Dovecot(users={USER: PW}).start()
    gws = []
    try:
        rng = random.Random(SEED)
        ks = kinds(rng, NMSG)
        t0 = time.time()
        msgs = [make_message(rng, i, k) for i, k in enumerate(ks)]
        write_maildir(d, USER, msgs)
        total = sum(len(m) for m in msgs)
        print("sync_bench: %d messages, %.1f MB (%d with EICAR, %d GTUBE, "
              "%d with an attachment), written in %.1f s" % (
                  NMSG, total / 1e6, ks.count("eicar"), ks.count("spam"),
                  ks.count("attach"), time.time() - t0), flush=True)
        print("sync_bench: UID FETCH 1:* (%s)" % ITEMS)
        print("sync_bench: %d repetitions each, netd %d, scand %d" % (
            REPS, NETD, SCAND), flush=True)

        # warm-up: Dovecot indexes the maildir and fills its cache
        _, base = sync(d.port)
        if len(base) != NMSG:
            print("sync_bench: WARNING: Dovecot answered %d of %d messages"
                  % (len(base), NMSG))
        times = {}
        notes = {}

        def rec(name, dt):
            times.setdefault(name, []).append(dt)

        def gateway_runs(mode, key):
            """first (fresh gateway) and second (new session) runs, each
            repetition with a fresh gateway; returns the last gateway."""
            last = None
            peaks = []
            for rep in range(REPS):
                g = start_gateway(d, binary, mode)
                gws.append(g)
                dt, got = sync(g.port())
                rec("%s first" % key, dt)
                peaks.append(peak_rss_kb(netd_pids(g)))
                n1 = judged(g)
                dt2, got2 = sync(g.port())
                rec("%s second" % key, dt2)
                n2 = judged(g) - n1
                if rep == 0:
                    diff, missing = differing(base, got)
                    diff2, _ = differing(got, got2)
                    notes[key] = (
                        "%s: %d responses differ from direct, %d missing; "
                        "%d 'message judged' lines in the first run, %d in "
                        "the second; second run differs from first in %d" %
                        (key, diff, missing, n1, n2, diff2))
                if last is not None:
                    last.stop()
                    gws.remove(last)
                last = g
            return last, peaks

        peaks = []
        failed = []

        def guarded(name, fn):
            try:
                return fn()
            except Exception as ex:
                tail = gws[-1].log_tail(15) if gws and gws[-1].dir else ""
                failed.append("%s: FAILED: %s: %s\n%s" % (
                    name, type(ex).__name__, ex, tail))
                print("sync_bench: %s failed: %s: %s" % (
                    name, type(ex).__name__, ex), flush=True)
                return None

        def relay_start():
            # the relay alone: no judging (antivirus off), what any
            # mode pays to go through netd; measured in the rounds
            g = bl.gateway(d, binary, bl.RELAY, "relay",
                           workers=(NETD, SCAND, 1), timeout=120)
            gws.append(g)
            sync(g.port())
            return g

        relay = guarded("relay", relay_start) \
            if "relay" not in SKIP else None

        def rounds(strict):
            """direct, the relay and the strict gateway's cached sync
            one after another in each round, so that whatever else
            loads the machine weighs on all of them alike."""
            for _ in range(REPS):
                rec("direct", sync(d.port)[0])
                if relay is not None:
                    rec("relay", sync(relay.port())[0])
                if strict is not None:
                    dt, got = sync(strict.port())
                    rec("strict cached", dt)
                    diff, _ = differing(base, got)
                    notes["cached"] = (
                        "strict cached: %d responses differ from direct "
                        "(the infected and spam messages)" % diff)
                pairs.append(tuple(times[k][-1] for k in
                                   ("direct", "relay", "strict cached")
                                   if k in times))

        pairs = []
        if "lazy" not in SKIP:
            r = guarded("lazy", lambda: gateway_runs("lazy", "lazy"))
            for g in list(gws):
                if g is not relay:
                    g.stop()
                    gws.remove(g)
        if "strict" not in SKIP:
            r = guarded("strict", lambda: gateway_runs("strict", "strict"))
            if r is not None:
                g, peaks = r
                guarded("rounds", lambda: rounds(g))

                def restarts():
                    n0 = judged(g)
                    for rep in range(REPS):
                        g.stop(cleanup=False)
                        g.start(timeout=120)
                        dt, got = sync(g.port())
                        rec("strict restart", dt)
                    notes["restart"] = (
                        "strict restart: %d 'message judged' lines over %d "
                        "restarts (0: verdicts kept in state_dir/verdicts)"
                        % (judged(g) - n0, REPS))
                if "restart" not in SKIP:
                    guarded("strict restart", restarts)
                notes["store"] = store_note(g, ks, msgs)

        if not pairs:
            guarded("rounds", lambda: rounds(None))
        print()
        bl.header(("best s", "median s", "msgs/s (med)", "x direct"),
                  (10, 10, 12, 10), 16)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in ("direct", "relay", "lazy first", "lazy second",
                  "strict first", "strict second", "strict cached",
                  "strict restart"):
            if k not in times:
                continue
            bl.row(k, (min(times[k]), med[k], NMSG / med[k],
                       med[k] / med["direct"]),
                   ("%10.3f", "%10.3f", "%12.0f", "%10.2f"), 16)
        print()
        for k in ("lazy", "strict", "cached", "restart", "store"):
            if k in notes:
                print(notes[k])
        if peaks:
            worst = max((v[0] for p in peaks for v in p.values()),
                        default=0)
            print("netd peak RSS (VmHWM) after the strict first run: %s; "
                  "max %.1f MB" % (
                      ", ".join("%d KB" % v[0] for p in peaks[:1]
                                for v in p.values()), worst / 1024))
        if "strict cached" in times:
            # per round: the cached sync against direct and the relay
            # measured next to it
            rd = [p[-1] / p[0] for p in pairs]
            r = statistics.median(rd)
            print("target: strict, cached <= %.1fx direct: %.2fx, median "
                  "of %d rounds (each %s) (%s)" % (
                      TARGET, r, len(rd),
                      " ".join("%.2f" % x for x in rd),
                      "met" if r <= TARGET else "NOT MET"))
            if relay is not None:
                print("strict, cached against the relay alone: %.2fx "
                      "(what strict adds to any relayed sync)" % (
                          statistics.median(p[2] / p[1] for p in pairs)))
        if "strict restart" in med:
            r = med["strict restart"] / med["direct"]
            print("strict after restart (LMDB): %.2fx direct (%s %.1fx)" % (
                r, "within" if r <= TARGET else "over", TARGET))
        for f in failed:
            print()
            print(f)
        return 1 if failed else 0
    finally:
        for g in gws:
            g.stop()
        d.stop()


if __name__ == "__main__":
    sys.exit(main())
