"""What the benchmarks in regress/bench share: the environment knobs, the
start-up checks, the test mailbox (messages, APPEND), the timed fetch of
a whole mailbox, the gateway with a plain relay action, /proc readings
(CPU, memory, processes by role) and the result tables.

Importing it puts regress/lib on sys.path (dovecot, gateway, rawimap).
"""

import base64
import hashlib
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import dovecot as dv          # noqa: E402
import gateway as gwm         # noqa: E402
from rawimap import RawIMAP   # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")

# An action that relays and scans nothing (scanning is measured by
# scan_bench.py and pipeline_bench.py).
RELAY = {"inherit": "IMAP-Server.Standard", "antivirus": {"enabled": False}}


# ---- environment and start-up ----------------------------------------------

def env_int(name, default, minimum=None):
    v = int(os.environ.get(name, str(default)))
    return v if minimum is None else max(minimum, v)


def env_set(name):
    """A comma list from the environment as a set (BENCH_*_SKIP)."""
    return set(s.strip() for s in os.environ.get(name, "").split(",")
               if s.strip())


def preflight(prog):
    """The imapgwd binary to measure, or None after saying why not (not
    root, binary missing) on stderr."""
    if os.geteuid() != 0:
        print("%s: must run as root" % prog, file=sys.stderr)
        return None
    binary = os.environ.get("IMAPGWD", gwm.IMAPGWD)
    if not os.path.exists(binary):
        print("%s: %s missing: run make first" % (prog, binary),
              file=sys.stderr)
        return None
    return binary


# ---- the mailbox ------------------------------------------------------------

def make_message(rng, i, size, subject="bench", msgid="bench", extra=b""):
    """About size bytes: headers, a text part, a base64 attachment of
    random bytes, then extra (more MIME parts, ending in CRLF)."""
    head = ("From: bench@example.org\r\nTo: bench@example.org\r\n"
            "Subject: %s %d\r\nMessage-ID: <%s-%d@example.org>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            "--b\r\nContent-Type: text/plain\r\n\r\nbenchmark message\r\n"
            "--b\r\nContent-Type: application/octet-stream; name=\"d.bin\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            % (subject, i, msgid, i)).encode()
    tail = b"--b--\r\n"
    raw = max(0, (size - len(head) - len(tail) - len(extra)) * 57 // 78)
    att = base64.encodebytes(rng.randbytes(raw)).replace(b"\n", b"\r\n")
    return head + att + extra + tail


def append_all(port, user, pw, msgs):
    """APPEND (LITERAL+) every message of the iterable msgs to INBOX."""
    c = RawIMAP(port, timeout=120)
    c.login(user, pw)
    for m in msgs:
        c.append("INBOX", m, literal_plus=True)
    c.logout()


# ---- fetching ---------------------------------------------------------------

def response_lines(f, tag=b"f"):
    """Read the response to the command tagged tag from the file f up to
    its tagged OK (else RuntimeError); yield (line, literal) for every
    untagged line, literal being the literal it announces or None."""
    prefix = tag + b" "
    while True:
        line = f.readline()
        if not line:
            raise EOFError("connection closed during FETCH")
        if line.startswith(prefix):
            if not line.startswith(prefix + b"OK"):
                raise RuntimeError(line[:200])
            return
        s = line.rstrip(b"\r\n")
        data = None
        if s.endswith(b"}") and b"{" in s:
            k = int(s[s.rindex(b"{") + 1:-1].rstrip(b"+"))
            data = f.read(k)
            if len(data) != k:
                raise EOFError("short literal")
        yield line, data


def fetch_literals(f, tag=b"f"):
    """(line, literal) of the lines of response_lines that announce
    one."""
    for line, data in response_lines(f, tag):
        if data is not None:
            yield line, data


def timed_fetch(send, f, digest=False, marker=None):
    """UID FETCH 1:* BODY.PEEK[] on a logged-in, selected session (send
    writes bytes, f reads them): (seconds, literal bytes, sha256 hex of
    the literals or None, literals that contain marker)."""
    h = hashlib.sha256() if digest else None
    n = hits = 0
    t0 = time.perf_counter()
    send(b"f UID FETCH 1:* BODY.PEEK[]\r\n")
    for _, data in fetch_literals(f):
        n += len(data)
        if h:
            h.update(data)
        if marker is not None and marker in data:
            hits += 1
    dt = time.perf_counter() - t0
    return dt, n, (h.hexdigest() if h else None), hits


def fetch_all(port, user, pw, digest=False, marker=None, timeout=120):
    """timed_fetch in a new plaintext session (login/EXAMINE not
    timed)."""
    c = RawIMAP(port, timeout=timeout)
    c.login(user, pw)
    c.command("EXAMINE INBOX")
    r = timed_fetch(c.send, c.f, digest, marker)
    c.logout()
    return r


# ---- the gateway ------------------------------------------------------------

def gateway(d, binary, action=None, name="relay", workers=None,
            timeout=None, start=True):
    """An imapgwd in front of Dovecot d: one policy imap-in on a free
    port, with action (under name) or the default one; started if start
    (with timeout if given; stopped again if it does not start)."""
    kw = {}
    if workers is not None:
        kw["workers"] = workers
    g = gwm.Gateway(servers={"dovecot": [d.address]},
                    actions={name: action} if action else None,
                    policies=[gwm.policy("imap-in", dv.free_port(), "dovecot",
                                         action=name if action else None)],
                    binary=binary, level="info", **kw)
    if not start:
        return g
    try:
        if timeout is None:
            g.start()
        else:
            g.start(timeout=timeout)
    except Exception:
        g.stop()
        raise
    return g


# ---- other servers ----------------------------------------------------------

def spawn(argv, logf):
    """A server that stays in the foreground: stdout and stderr to the
    file logf, killed when this process dies."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=subprocess.STDOUT,
                            preexec_fn=dv.die_with_parent)


def stop_proc(proc, wait):
    """SIGTERM, up to wait seconds for it to end, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---- /proc ------------------------------------------------------------------

def _stat_fields(pid):
    """The fields of /proc/pid/stat after the command name, or None."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rindex(")") + 2:].split()


def cpu_seconds(pids, children=False):
    """{pid: utime+stime seconds} of live processes; with children also
    cutime+cstime: the CPU of children that ended and were waited for."""
    out = {}
    end = 15 if children else 13
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            out[pid] = sum(int(x) for x in fields[11:end]) / float(TICK)
    return out


def cpu_delta(before, after, new=False):
    """CPU seconds from before to after; a process only in after counts
    from 0 if new, else not at all."""
    if new:
        return sum(v - before.get(p, 0.0) for p, v in after.items())
    return sum(after[p] - before[p] for p in after if p in before)


def session_pids(sid):
    """Pids of the processes of session sid."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            fields = _stat_fields(d)
            if fields is not None and int(fields[3]) == sid:
                out.append(int(d))
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def role_pids(g, *roles):
    """Descendants of gateway g whose command line has "-P role" for one
    of roles."""
    if not g.alive():
        return []
    want = [b"-P\0" + r.encode() + b"\0" for r in roles]
    return sorted(p for p in gwm._children(g.proc.pid)
                  if any(w in cmdline(p) + b"\0" for w in want))


def mem_kb(pid):
    """(Pss, Rss, Pss_Anon, USS = Private_Clean + Private_Dirty) in KB
    from smaps_rollup, or None."""
    vals = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Pss", "Rss", "Pss_Anon", "Private_Clean",
                         "Private_Dirty"):
                    vals[k] = int(v.split()[0])
    except OSError:
        return None
    return (vals.get("Pss", 0), vals.get("Rss", 0), vals.get("Pss_Anon", 0),
            vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0))


def pss_kb(pids):
    """Summed PSS in KB of the processes that are still there."""
    return sum(m[0] for m in map(mem_kb, pids) if m)


# ---- results ----------------------------------------------------------------

def header(cols, widths, name_width=14, name="path"):
    print(("%%-%ds" % name_width + "".join(" %%%ds" % w for w in widths))
          % ((name,) + tuple(cols)))


def row(name, vals, fmts, name_width=14):
    print(("%%-%ds" % name_width + "".join(" " + f for f in fmts))
          % ((name,) + tuple(vals)))


def table(title, rows, cols, fmt, name_width=14, width=12):
    """title, a header of cols, rows of (name, values) in fmt, a blank
    line."""
    print(title)
    header(cols, [width] * len(cols), name_width)
    for name, vals in rows:
        row(name, vals, fmt, name_width)
    print()


def throughput(times, total):
    """(best s, median s, MB/s of the median) of fetches of total
    bytes."""
    med = statistics.median(times)
    return min(times), med, total / 1e6 / med


def throughput_table(times, total, keys, name_width, width):
    """best/median/MB/s rows of times {path: [seconds]} in the order of
    keys, columns width wide (MB/s: width + 2); the medians."""
    header(("best s", "median s", "MB/s (med)"), (width, width, width + 2),
           name_width)
    fmts = ("%%%d.3f" % width, "%%%d.3f" % width, "%%%d.1f" % (width + 2))
    for k in keys:
        row(k, throughput(times[k], total), fmts, name_width)
    return {k: statistics.median(times[k]) for k in keys}
