"""imapgw pipeline benchmark (make bench): messages per second through
scand on a corpus of a few thousand mixed messages, against clamscan and
clamdscan --multiscan on the same files with the same signatures, and the
memory of N scand workers against one, with a large generated signature
set.  Every number is measured in this run; ratios are against baselines
measured in this run.  A benchmark, not a test: it prints the targets and
whether they were met, and never fails on a missed one.

1. Corpus: BENCH_PIPE_MESSAGES mixed messages (seeded, so runs compare):
   plain text, text+HTML alternatives, base64 attachments (PDF-like,
   PNG/JPEG-like, small ZIPs made with zipfile), and a few marker kinds
   that each stage of the pipeline should act on: EICAR attachments
   (antivirus), GTUBE bodies (spamBlocker), setup.exe attachments
   (content type and file name rules), an attachment whose SHA-256 is in
   the APT database (APT Blocker), an "X-Mailer: ... spam ..." header
   (header rules).  2 KB to ~300 KB.  Written as .eml files (clamscan,
   clamdscan) and appended to a throwaway Dovecot mailbox (the gateway).
2. Signatures: BENCH_PIPE_SIGS random signatures in a temporary ClamAV
   database directory (BENCH_PIPE_NDB_PCT percent ndb body signatures,
   the rest hdb md5:size:Name), plus the EICAR ndb signature as
   regress/lib/gateway.py writes it; one directory for imapgwd, clamscan
   and clamd.  An APT Blocker database of BENCH_PIPE_APT random SHA-256
   hashes (plus the marker attachment's).
3. Throughput, messages per second, each path fetched or scanned once per
   repetition with a fresh process (no verdict or clean-file cache carried
   over between repetitions), the paths interleaved within a repetition;
   the median is printed:
     direct        Dovecot, no gateway (reference)
     gateway       imapgwd, scand workers = BENCH_PIPE_SCAND, the action
                   with the whole pipeline (antivirus, content_types with
                   auto_detect, filenames, headers, apt_blocker,
                   spamblocker builtin); if `imapgwd -n` refuses a section
                   it is left out, and if the gateway does not start with
                   the pipeline it is measured with antivirus only: the
                   output says so in capitals (PIPELINE FALLBACK)
     clamscan      one process over the files; its database load is
                   measured as clamscan on one file and printed with and
                   without it
     clamd         clamdscan --multiscan --fdpass over the directory,
                   clamd (MaxThreads = CPUs, the same signatures) already
                   loaded: its load time is printed, not counted
   The client fetches each message with its own UID FETCH n BODY.PEEK[]
   over BENCH_PIPE_CONNS parallel connections (disjoint, interleaved UID
   sets), or with BENCH_PIPE_FETCH=range one UID FETCH per connection
   over a contiguous range.  CPU time per message of scand, netd, clamd
   and clamscan is printed as well (from /proc and getrusage), with the
   CPUs each path kept busy and the machine's idle share during each
   pass: other load on the machine skews the rates, CPU per message
   less so.  Which marker messages came back changed shows which stages
   of the pipeline acted.  Target: gateway >= 1.0x clamd's message rate.
4. Memory: imapgwd started with 1 and then BENCH_PIPE_WORKERS scand
   workers, same action and signatures; the PSS of every scand process
   (command line with "-P scand", and "-P loader": the process that
   loads the engines and forks the workers, if there is one) summed,
   idle when ready and again after scanning a few messages on every
   worker.  Target: N workers <= 1.2x one.  One engine's RSS (the
   loader's, or the single scand's; and clamd's) is printed too.

Environment: BENCH_PIPE_MESSAGES (3000), BENCH_PIPE_SEED (1234),
BENCH_PIPE_SIGS (300000), BENCH_PIPE_NDB_PCT (50), BENCH_PIPE_APT (100000),
BENCH_PIPE_SCAND (online CPUs), BENCH_PIPE_CONNS (2 x CPUs),
BENCH_PIPE_FETCH (each | range), BENCH_PIPE_REPS (1),
BENCH_PIPE_WORKERS (4), BENCH_PIPE_SKIP (comma list of: direct, gateway,
clamscan, clamd, memory), BENCH_PIPE_KEEP (keep the temporary
directory), IMAPGWD (build/imapgwd).  Needs root, Dovecot, and the
Debian packages clamav and clamav-daemon for the comparisons (a missing
one is reported and skipped).
"""

import base64
import hashlib
import io
import math
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import benchlib as bl
from benchlib import RawIMAP, cmdline, cpu_delta, cpu_seconds, dv, gwm, \
    mem_kb, role_pids

NCPU = os.cpu_count() or 1
NMSG = bl.env_int("BENCH_PIPE_MESSAGES", 3000)
SEED = bl.env_int("BENCH_PIPE_SEED", 1234)
NSIGS = bl.env_int("BENCH_PIPE_SIGS", 300000)
NDB_PCT = bl.env_int("BENCH_PIPE_NDB_PCT", 50)
NAPT = bl.env_int("BENCH_PIPE_APT", 100000)
SCAND = bl.env_int("BENCH_PIPE_SCAND", NCPU)
CONNS = bl.env_int("BENCH_PIPE_CONNS", 2 * NCPU)
FETCH = os.environ.get("BENCH_PIPE_FETCH", "each")
REPS = bl.env_int("BENCH_PIPE_REPS", 1, minimum=1)
NWORKERS = bl.env_int("BENCH_PIPE_WORKERS", 4)
SKIP = bl.env_set("BENCH_PIPE_SKIP")
KEEP = bool(os.environ.get("BENCH_PIPE_KEEP"))
USER, PW = "pipebench", "bench"

TARGET_CLAMD = 1.0            # gateway msgs/s >= 1.0x clamd multiscan
TARGET_MEM = 1.2              # PSS of N scand workers <= 1.2x one

CLAMSCAN = shutil.which("clamscan")
CLAMDSCAN = shutil.which("clamdscan")
CLAMD = "/usr/sbin/clamd" if os.access("/usr/sbin/clamd", os.X_OK) \
    else shutil.which("clamd")

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

# Per mille of the corpus for each kind; "plain" takes the rest.
MIX = [("eicar", 30), ("gtube", 20), ("exe", 10), ("apt", 10),
       ("xmailer", 10), ("attach", 270), ("alt", 300)]

SECTIONS = ("content_types", "filenames", "headers", "apt_blocker",
            "spamblocker")


# ---- corpus -----------------------------------------------------------------

class Corpus:
    """Seeded message generator.  Text comes from a pool of pseudo-words
    made once, so that a few hundred MB of mail are made in seconds."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        rng = self.rng
        letters = "etaoinshrdlucmfwypvbgkjqxz"
        words = []
        for _ in range(3000):
            n = rng.choice((2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 11))
            words.append("".join(rng.choice(letters[:18 if n < 6 else 26])
                                 for _ in range(n)))
        lines, line = [], []
        size = 0
        while size < (1 << 20):
            w = rng.choice(words)
            if sum(len(x) + 1 for x in line) + len(w) > 72:
                s = " ".join(line)
                if rng.random() < 0.08:
                    s += "."
                lines.append(s)
                size += len(s) + 2
                line = []
                if rng.random() < 0.1:
                    lines.append("")
            line.append(w)
        self.pool = ("\r\n".join(lines) + "\r\n").encode()
        # the APT marker attachment: the same bytes in every apt message
        self.apt_blob = self.pdf_like(40000, random.Random(seed + 1))
        self.apt_sha256 = hashlib.sha256(self.apt_blob).hexdigest()

    # sizes: log-uniform between lo and hi
    def size(self, lo, hi):
        return int(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))

    def text(self, n):
        """About n bytes of CRLF text, starting and ending at a line."""
        pool = self.pool
        start = self.rng.randrange(0, len(pool) - n - 200) if \
            n + 200 < len(pool) else 0
        start = pool.index(b"\r\n", start) + 2
        end = pool.find(b"\r\n", start + n)
        if end < 0:
            end = len(pool) - 2
        return pool[start:end + 2]

    def html(self, n):
        paras = self.text(n).split(b"\r\n\r\n")
        body = b"".join(b"<p>" + p.replace(b"\r\n", b"\r\n ") + b"</p>\r\n"
                        for p in paras if p.strip())
        return (b"<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\">"
                b"<title>newsletter</title></head>\r\n<body>\r\n" + body +
                b"</body></html>\r\n")

    @staticmethod
    def pdf_like(n, rng):
        return (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length " +
                str(n).encode() + b" /Filter /FlateDecode >>\nstream\n" +
                rng.randbytes(n) + b"\nendstream\nendobj\ntrailer\n"
                b"<< /Root 1 0 R >>\n%%EOF\n")

    def png_like(self, n):
        return (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x02\x00"
                b"\x00\x00\x01\x80\x08\x06\x00\x00\x00" +
                self.rng.randbytes(n) + b"\x00\x00\x00\x00IEND\xaeB`\x82")

    def jpeg_like(self, n):
        return (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01"
                b"\x00\x01\x00\x00" + self.rng.randbytes(n) + b"\xff\xd9")

    def zip_small(self, n):
        """A ZIP of a few text members (deflated) and maybe a binary one,
        with fixed timestamps: the same seed makes the same bytes."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            k = self.rng.randint(1, 4)
            for i in range(k):
                zi = zipfile.ZipInfo("doc%d.txt" % i, (2024, 1, 2, 3, 4, 6))
                zi.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(zi, self.text(max(200, n // k)))
            if self.rng.random() < 0.5:
                zi = zipfile.ZipInfo("data.bin", (2024, 1, 2, 3, 4, 6))
                z.writestr(zi, self.rng.randbytes(max(100, n // 8)))
        return buf.getvalue()

    def headers(self, i, subject, extra=b""):
        r = self.rng
        return (b"Return-Path: <sender%d@example.net>\r\n" % r.randrange(500)
                + b"Received: from mx%d.example.net (mx%d.example.net "
                b"[192.0.2.%d])\r\n\tby mail.example.org with ESMTPS id "
                b"%08x\r\n\tfor <bench@example.org>; Wed, 03 Jan 2024 "
                b"12:%02d:%02d +0100\r\n" % (i % 7, i % 7, i % 250 + 1,
                                             r.getrandbits(32), i % 60,
                                             (i * 7) % 60) +
                b"From: Sender %d <sender%d@example.net>\r\n" % (i % 500,
                                                                 i % 500) +
                b"To: Bench <bench@example.org>\r\n"
                b"Subject: " + subject + b"\r\n"
                b"Date: Wed, 03 Jan 2024 12:%02d:%02d +0100\r\n"
                % (i % 60, (i * 7) % 60) +
                b"Message-ID: <pipe-%d.%08x@example.net>\r\n"
                % (i, r.getrandbits(32)) + extra +
                b"MIME-Version: 1.0\r\n")

    @staticmethod
    def part(ctype, body, name=None, cte=None):
        h = b"Content-Type: " + ctype
        if name:
            h += b"; name=\"" + name + b"\""
        h += b"\r\n"
        if name:
            h += (b"Content-Disposition: attachment; filename=\"" + name +
                  b"\"\r\n")
        if cte:
            h += b"Content-Transfer-Encoding: " + cte + b"\r\n"
        return h + b"\r\n" + body

    @staticmethod
    def b64(data):
        return base64.encodebytes(data).replace(b"\n", b"\r\n")

    @staticmethod
    def multipart(sub, boundary, parts):
        return (b"Content-Type: multipart/" + sub + b"; boundary=\"" +
                boundary + b"\"\r\n\r\n"
                b"This is a multi-part message in MIME format.\r\n" +
                b"".join(b"--" + boundary + b"\r\n" + p +
                         (b"" if p.endswith(b"\r\n") else b"\r\n")
                         for p in parts) +
                b"--" + boundary + b"--\r\n")

    def textpart(self, n):
        return self.part(b"text/plain; charset=us-ascii", self.text(n),
                         cte=b"7bit")

    def attachment(self, n):
        r = self.rng.random()
        if r < 0.35:
            return self.part(b"application/pdf", self.b64(
                self.pdf_like(n, self.rng)), b"report%d.pdf" %
                self.rng.randrange(100), b"base64")
        if r < 0.55:
            return self.part(b"image/png", self.b64(self.png_like(n)),
                             b"image%d.png" % self.rng.randrange(100),
                             b"base64")
        if r < 0.75:
            return self.part(b"image/jpeg", self.b64(self.jpeg_like(n)),
                             b"photo%d.jpg" % self.rng.randrange(100),
                             b"base64")
        return self.part(b"application/zip", self.b64(self.zip_small(n)),
                         b"files%d.zip" % self.rng.randrange(100), b"base64")

    def message(self, i, kind):
        b = b"=_pipe_%d_%08x" % (i, self.rng.getrandbits(32))
        subj = b"pipeline bench %d: %s" % (i, kind.encode())
        if kind == "plain":
            return (self.headers(i, subj) +
                    b"Content-Type: text/plain; charset=us-ascii\r\n"
                    b"Content-Transfer-Encoding: 7bit\r\n\r\n" +
                    self.text(self.size(2000, 12000)))
        if kind == "alt":
            n = self.size(3000, 60000)
            return self.headers(i, subj) + self.multipart(b"alternative", b, [
                self.textpart(n // 3),
                self.part(b"text/html; charset=utf-8", self.html(n // 2),
                          cte=b"8bit")])
        if kind == "attach":
            total = self.size(20000, 300000)
            k = 1 if self.rng.random() < 0.7 else 2
            raw = max(1000, (total - 2000) * 57 // 78 // k)
            return self.headers(i, subj) + self.multipart(b"mixed", b, [
                self.textpart(self.size(300, 3000))] +
                [self.attachment(raw) for _ in range(k)])
        if kind == "eicar":
            return self.headers(i, subj) + self.multipart(b"mixed", b, [
                self.textpart(self.size(500, 20000)),
                self.part(b"application/octet-stream", self.b64(gwm.EICAR),
                          b"eicar.com", b"base64")])
        if kind == "gtube":
            return (self.headers(i, b"cheap pills %d" % i) +
                    b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" +
                    self.text(self.size(1500, 6000)) + GTUBE + b"\r\n")
        if kind == "exe":
            exe = (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff"
                   b"\x00\x00\xb8" + b"\x00" * 43 + b"\x80\x00\x00\x00" +
                   b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd"
                   b"\x21This program cannot be run in DOS mode.\r\r\n$" +
                   b"\x00" * 7 + b"PE\x00\x00L\x01\x03\x00" +
                   self.rng.randbytes(self.size(5000, 60000)))
            return self.headers(i, subj) + self.multipart(b"mixed", b, [
                self.textpart(self.size(300, 3000)),
                self.part(b"application/octet-stream", self.b64(exe),
                          b"setup.exe", b"base64")])
        if kind == "apt":
            return self.headers(i, subj) + self.multipart(b"mixed", b, [
                self.textpart(self.size(300, 3000)),
                self.part(b"application/pdf", self.b64(self.apt_blob),
                          b"statement.pdf", b"base64")])
        if kind == "xmailer":
            return (self.headers(i, subj,
                                 b"X-Mailer: bulk spam sender 2.1\r\n") +
                    b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" +
                    self.text(self.size(2000, 8000)))
        raise ValueError(kind)

    def make(self, n):
        kinds = []
        for k, pm in MIX:
            kinds += [k] * max(1, int(round(n * pm / 1000.0)))
        kinds = kinds[:n]
        kinds += ["plain"] * (n - len(kinds))
        self.rng.shuffle(kinds)
        return [(k, self.message(i, k)) for i, k in enumerate(kinds)]


# ---- signatures -------------------------------------------------------------

def write_signatures(sigdir, n, ndb_pct, seed):
    """n random signatures (ndb_pct percent ndb body signatures, the rest
    hdb) and EICAR's ndb signature (gateway.write_signatures)."""
    rng = random.Random(seed)
    gwm.write_signatures(sigdir)
    nndb = n * ndb_pct // 100
    with open(os.path.join(sigdir, "bench.hdb"), "w") as f:
        for i in range(n - nndb):
            f.write("%032x:%d:Bench.Hdb.%d\n" % (
                rng.getrandbits(128), rng.randrange(100, 4000000), i))
    with open(os.path.join(sigdir, "bench.ndb"), "w") as f:
        for i in range(nndb):
            f.write("Bench.Ndb.%d:0:*:%s\n" % (
                i, rng.randbytes(rng.randrange(12, 33)).hex()))
    for fn in os.listdir(sigdir):
        os.chmod(os.path.join(sigdir, fn), 0o644)
    return n + 1


def write_apt(path, n, seed, extra):
    rng = random.Random(seed)
    levels = ("high", "medium", "low")
    with open(path, "w") as f:
        f.write("# generated by regress/bench/pipeline_bench.py\n")
        for i in range(n):
            f.write("%064x %s Bench.APT.%d\n" % (rng.getrandbits(256),
                                                 levels[i % 3], i))
        for h in extra:
            f.write("%s high Bench.APT.Marker\n" % h)
    os.chmod(path, 0o644)


# ---- the mailbox and the fetch client ---------------------------------------

def build_mailbox(d, msgs, batch=100):
    """APPEND every message: MULTIAPPEND (RFC 3502) of batch messages with
    LITERAL+, which Dovecot saves in one transaction (UIDs 1..n)."""
    c = RawIMAP(d.port, timeout=300)
    c.login(USER, PW)
    for s in range(0, len(msgs), batch):
        t = c.tag()
        out = [t.encode() + b" APPEND INBOX"]
        for m in msgs[s:s + batch]:
            out.append(b" {%d+}\r\n" % len(m) + m)
        c.send(b"".join(out) + b"\r\n")
        st = c.read_until_tagged(t)[-1].line
        if not st.startswith((t + " OK").encode()):
            raise RuntimeError("APPEND: %r" % st[:200])
    c.logout()


UID_RX = re.compile(rb"\bUID (\d+)")


def fetch_pass(port, nmsg, conns, mode=FETCH):
    """Fetch messages 1..nmsg over conns parallel connections.  Returns
    (seconds, {uid: (length, sha256 hex)}, [errors]).  Login and EXAMINE
    are not timed; the clock runs from the start of the first FETCH to the
    end of the last one."""
    uids = list(range(1, nmsg + 1))
    conns = max(1, min(conns, nmsg))
    if mode == "range":
        per = (nmsg + conns - 1) // conns
        sets = [uids[k * per:(k + 1) * per] for k in range(conns)]
    else:
        sets = [uids[k::conns] for k in range(conns)]
    sets = [s for s in sets if s]
    cs = []
    for _ in sets:
        c = RawIMAP(port, timeout=600)
        c.login(USER, PW)
        c.command("EXAMINE INBOX")
        cs.append(c)
    results = {}
    errors = []
    lock = threading.Lock()
    start = threading.Barrier(len(cs) + 1)

    def read_fetch(c, tag, want_uid, out):
        for s, data in bl.fetch_literals(c.f, tag):
            uid = want_uid
            if uid is None:
                m = UID_RX.search(s)
                uid = int(m.group(1)) if m else -1
            out[uid] = (len(data), hashlib.sha256(data).hexdigest())

    def run(c, myset):
        out = {}
        try:
            start.wait()
            if mode == "range":
                tag = b"r"
                c.send(b"r UID FETCH %d:%d BODY.PEEK[]\r\n"
                       % (myset[0], myset[-1]))
                read_fetch(c, tag, None, out)
            else:
                for uid in myset:
                    tag = b"f%d" % uid
                    c.send(b"f%d UID FETCH %d BODY.PEEK[]\r\n" % (uid, uid))
                    read_fetch(c, tag, uid, out)
        except Exception as e:      # reported, not raised: a benchmark
            with lock:
                errors.append("%r after %d messages" % (e, len(out)))
        with lock:
            results.update(out)

    ths = [threading.Thread(target=run, args=(c, s), daemon=True)
           for c, s in zip(cs, sets)]
    for t in ths:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ths:
        t.join()
    dt = time.perf_counter() - t0
    for c in cs:
        try:
            c.logout()
        except Exception:
            pass
    return dt, results, errors


# ---- processes --------------------------------------------------------------

def machine_ticks():
    """(idle + iowait, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v[:8])


# Idle share of the whole machine during each timed pass, by path: a
# slow path with idle CPUs is waiting, not short of CPU.
IDLE = {}


class Idle:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.t0 = machine_ticks()

    def __exit__(self, *a):
        t1 = machine_ticks()
        tot = t1[1] - self.t0[1]
        if tot > 0:
            IDLE.setdefault(self.path, []).append(
                (t1[0] - self.t0[0]) / float(tot))


# scand and the loader that forks its workers from its loaded engines
SCAND_ROLES = ("scand", "loader")


# ---- the gateway ------------------------------------------------------------

def pipeline_action(sigdir, aptdb, sections, off=()):
    """The action: antivirus with sigdir, each of sections on as the
    benchmark configures it, each of off explicitly off (no rules, not
    enabled: IMAP-Server.Standard has rules and APT and spam on), the
    others as inherited."""
    a = {"inherit": "IMAP-Server.Standard",
         "antivirus": {"enabled": True, "database": sigdir,
                       "on_virus": "strip"}}
    on = {
        "content_types": {"auto_detect": True, "none_matched": "allow",
                          "rules": [
                              {"match": "application/x-dosexec",
                               "action": "strip"},
                              {"match": "application/x-msdownload",
                               "action": "strip"},
                              {"match": "application/x-ms-shortcut",
                               "action": "strip"}]},
        "filenames": {"rules": [{"match": "*.exe", "action": "strip"},
                                {"match": "*.scr", "action": "strip"},
                                {"match": "*.vbs", "action": "strip"}]},
        "headers": {"rules": [{"match": "X-Mailer: *spam*",
                               "action": "strip"}]},
        "apt_blocker": {"enabled": True, "database": aptdb,
                        "actions": {"high": "strip", "medium": "strip",
                                    "low": "allow"}},
        "spamblocker": {"enabled": True, "engine": "builtin"},
    }
    disabled = {
        "content_types": {"auto_detect": False, "none_matched": "allow",
                          "rules": []},
        "filenames": {"none_matched": "allow", "rules": []},
        "headers": {"none_matched": "allow", "rules": []},
        "apt_blocker": {"enabled": False},
        "spamblocker": {"enabled": False},
    }
    for k in off:
        if k not in sections:
            a[k] = disabled[k]
    for k in sections:
        a[k] = on[k]
    return a


def make_gateway(d, binary, action, scand, netd=None):
    return bl.gateway(d, binary, action, "pipeline",
                      workers=(netd or NCPU, scand, 1), start=False)


def config_check(d, binary, action):
    """(ok, error text) of imapgwd -n on the config with this action."""
    g = make_gateway(d, binary, action, 1)
    try:
        g.write_config()
        r = subprocess.run([binary, "-n", "-f", g.conf],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        return r.returncode == 0, r.stdout.decode(errors="replace").strip()
    finally:
        g.stop()


def choose_pipeline(d, binary, sigdir, aptdb):
    """What imapgwd -n accepts: (sections on, sections that can be turned
    off, {refused section: error}).  The whole pipeline if it can; else
    each section that is accepted on its own, the others turned off if
    that is accepted, else left as inherited."""
    def check(on, off):
        return config_check(d, binary, pipeline_action(sigdir, aptdb, on,
                                                       off))
    ok, err = check(SECTIONS, ())
    if ok:
        offable = [s for s in SECTIONS if check((), [s])[0]]
        return list(SECTIONS), offable, {}
    accepted, offable, refused = [], [], {}
    for s in SECTIONS:
        ok1, err1 = check([s], ())
        if ok1:
            accepted.append(s)
        else:
            refused[s] = err1
        if check((), [s])[0]:
            offable.append(s)
    if accepted and not check(accepted, offable)[0]:
        err = check(accepted, offable)[1]
        refused.update({s: "accepted alone, not together: " + err
                        for s in accepted})
        accepted = []
    return accepted, offable, refused


CHILD_DIED = re.compile(r"child exited role=(?:scand|loader)\b.*")


def start_gateway(d, binary, action, scand, netd=None, timeout=120):
    """A gateway whose workers all report ready; fails as soon as a scand
    worker or the loader exits while starting (a config it refuses, a
    database it cannot load), without waiting for its respawn."""
    g = make_gateway(d, binary, action, scand, netd)
    try:
        g.start(timeout=timeout)
        end = time.time() + timeout
        while not g.wait_workers(timeout=1):
            m = CHILD_DIED.search(g.log_text())
            if m or not g.alive() or time.time() > end:
                raise RuntimeError("scand workers not ready (%s):\n%s" % (
                    m.group(0) if m else "after %ds" % timeout,
                    g.log_tail(8)))
    except Exception:
        g.stop()
        raise
    return g


# ---- the benchmarks ---------------------------------------------------------

def expect_changes(kinds, sections):
    """Kinds of marker messages that the active pipeline should rewrite."""
    want = {"eicar"}
    if "spamblocker" in sections:
        want.add("gtube")
    if "content_types" in sections or "filenames" in sections:
        want.add("exe")
    if "apt_blocker" in sections:
        want.add("apt")
    if "headers" in sections:
        want.add("xmailer")
    return want


def report_changes(kinds, digests, results, sections):
    """Per kind: messages delivered changed by the gateway."""
    changed = {}
    count = {}
    missing = 0
    for i, k in enumerate(kinds):
        count[k] = count.get(k, 0) + 1
        r = results.get(i + 1)
        if r is None:
            missing += 1
            continue
        if r != digests[i]:
            changed[k] = changed.get(k, 0) + 1
    want = expect_changes(kinds, sections)
    row = []
    for k in sorted(count, key=lambda k: (k not in want, k)):
        row.append("%s %d/%d%s" % (k, changed.get(k, 0), count[k],
                                   " (expected all)" if k in want else ""))
    print("messages changed by the gateway, by kind: " + ", ".join(row))
    if missing:
        print("WARNING: %d messages not delivered by the gateway" % missing)
    stages = {"antivirus": "eicar", "spamblocker": "gtube",
              "content_types/filenames": "exe", "apt_blocker": "apt",
              "headers": "xmailer"}
    seen = [s for s, k in stages.items() if changed.get(k)]
    quiet = [s for s, k in stages.items() if not changed.get(k)]
    print("stages seen acting on their marker messages: %s; no effect seen: "
          "%s" % (", ".join(seen) or "none", ", ".join(quiet) or "none"))
    for k in count:
        if k not in want and changed.get(k):
            print("NOTE: %d '%s' messages changed that no configured stage "
                  "is expected to change" % (changed[k], k))


def clamscan_pass(corpdir, onefile, sigdir, want_found):
    """clamscan on one file (start-up + database load), then over the
    corpus directory.  Returns ((seconds, cpu) one file, (seconds, cpu)
    all)."""
    out = []
    for target in ([onefile], ["-r", corpdir]):
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        with Idle("clamscan" if target[0] == "-r" else "clamscan-1file"):
            r = subprocess.run([CLAMSCAN, "--no-summary", "--infected",
                                "-d", sigdir] + target,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append((dt, (ru1.ru_utime - ru0.ru_utime) +
                    (ru1.ru_stime - ru0.ru_stime)))
    found = r.stdout.count(b" FOUND")
    if found != want_found or r.returncode not in (0, 1):
        print("WARNING: clamscan exit %d, found %d infected, expected %d: "
              "%s" % (r.returncode, found, want_found,
                      r.stderr.decode(errors="replace")[-300:]))
    return out[0], out[1]


class Clamd:
    """A private clamd: LocalSocket in its own directory, no TCP."""

    def __init__(self, base, sigdir, threads):
        self.dir = os.path.join(base, "clamd")
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        self.sock = os.path.join(self.dir, "clamd.sock")
        self.conf = os.path.join(self.dir, "clamd.conf")
        with open(self.conf, "w") as f:
            f.write("LocalSocket %s\nDatabaseDirectory %s\nForeground yes\n"
                    "MaxThreads %d\nMaxQueue %d\nTemporaryDirectory %s\n"
                    "LogFile %s\nLogTime yes\nSelfCheck 0\n"
                    % (self.sock, sigdir, threads, max(100, 4 * threads),
                       os.path.join(self.dir, "tmp"),
                       os.path.join(self.dir, "clamd.log")))
        self.proc = None
        self.load_s = None

    def start(self, timeout=300):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.logf = open(os.path.join(self.dir, "clamd.stderr"), "ab")
        t0 = time.perf_counter()
        self.proc = bl.spawn([CLAMD, "-c", self.conf], self.logf)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("clamd exited with %s: %s" % (
                    self.proc.returncode, self.log_tail()))
            if self.ping():
                self.load_s = time.perf_counter() - t0
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("clamd did not answer within %ds" % timeout)

    def ping(self):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(self.sock)
            s.sendall(b"zPING\0")
            r = s.recv(64)
            s.close()
            return r.startswith(b"PONG")
        except OSError:
            return False

    def log_tail(self):
        out = ""
        for fn in ("clamd.log", "clamd.stderr"):
            try:
                with open(os.path.join(self.dir, fn), "rb") as f:
                    out += f.read()[-1500:].decode(errors="replace")
            except OSError:
                pass
        return out

    def stop(self):
        if self.proc is not None:
            bl.stop_proc(self.proc, 20)
            self.proc = None
            self.logf.close()


def clamd_pass(base, corpdir, sigdir, want_found):
    """clamdscan --multiscan --fdpass over the directory, clamd freshly
    started (its clean-file cache starts empty) with MaxThreads = CPUs.
    Returns ((seconds, clamd cpu), load seconds, (pss, rss) KB)."""
    cd = Clamd(base, sigdir, NCPU)
    cd.start()
    try:
        pid = cd.proc.pid
        c0 = cpu_seconds([pid])
        t0 = time.perf_counter()
        with Idle("clamd"):
            r = subprocess.run([CLAMDSCAN, "-c", cd.conf, "--multiscan",
                                "--fdpass", "--no-summary", "--infected",
                                corpdir],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        c1 = cpu_seconds([pid])
        found = r.stdout.count(b" FOUND")
        if found != want_found or r.returncode not in (0, 1):
            print("WARNING: clamdscan exit %d, found %d infected, expected "
                  "%d: %s" % (r.returncode, found, want_found,
                              (r.stderr + r.stdout).decode(
                                  errors="replace")[-300:]))
        m = mem_kb(pid)
        return (dt, cpu_delta(c0, c1)), cd.load_s, (m[:2] if m else None)
    finally:
        cd.stop()


def gateway_pass(d, binary, action, n):
    """One pass through a freshly started gateway.  Returns ((seconds,
    scand cpu, netd cpu), results, errors, start-up seconds)."""
    t0 = time.perf_counter()
    g = start_gateway(d, binary, action, SCAND)
    load = time.perf_counter() - t0
    errors = []
    try:
        sc = role_pids(g, *SCAND_ROLES)
        nd = role_pids(g, "netd")
        s0, n0 = cpu_seconds(sc), cpu_seconds(nd)
        with Idle("gateway"):
            dt, results, errs = fetch_pass(g.port(), n, CONNS)
        s1, n1 = cpu_seconds(sc), cpu_seconds(nd)
        errors += errs
        if not g.alive():
            errors.append("imapgwd exited:\n" + g.log_tail(20))
        else:
            dead = [p for p in sc if p not in s1]
            if dead:
                errors.append("scand workers %s ended during the pass "
                              "(respawned?): %s" % (dead, g.log_tail(10)))
        return (dt, cpu_delta(s0, s1), cpu_delta(n0, n1)), results, \
            errors, load
    finally:
        g.stop()


def scand_memory(g):
    """(sum of PSS, [(pid, mem_kb, command line)]) of scand and loader."""
    pids = role_pids(g, *SCAND_ROLES)
    rows = [(p, mem_kb(p), cmdline(p)) for p in pids]
    rows = [r for r in rows if r[1]]
    return sum(r[1][0] for r in rows), rows


def bench_memory(d, binary, action, n):
    print("== memory of scand: 1 worker and %d workers, the same action and "
          "signatures" % NWORKERS, flush=True)
    res = {}
    for w in (1, NWORKERS):
        try:
            g = start_gateway(d, binary, action, w, netd=1)
        except Exception as e:
            print("memory bench: imapgwd with %d scand workers did not "
                  "start: %s" % (w, e))
            return
        try:
            time.sleep(1.0)
            idle, _ = scand_memory(g)
            # a few messages on every worker: heaps grow to their working
            # size (netd spreads requests over the workers)
            fetch_pass(g.port(), min(n, 8 * w), 2 * w)
            time.sleep(0.5)
            busy, rows = scand_memory(g)
            res[w] = (idle, busy, rows)
            print("%d worker%s: %d scand processes: PSS idle %.1f MB, after "
                  "scanning %.1f MB" % (w, "" if w == 1 else "s", len(rows),
                                        idle / 1024.0, busy / 1024.0))
            for p, m, cl in rows:
                print("    pid %-7d %-26s PSS %6.1f MB  RSS %6.1f MB  "
                      "PSS anon %6.1f MB  private %6.1f MB" % (
                          p, cl.replace(b"\0", b" ").decode(
                              errors="replace").strip()[-26:],
                          m[0] / 1024.0, m[1] / 1024.0, m[2] / 1024.0,
                          m[3] / 1024.0))
            nwork = len(role_pids(g, "scand"))
            if nwork != w:
                print("    WARNING: found %d scand workers, expected %d"
                      % (nwork, w))
        finally:
            g.stop()
    if 1 in res and NWORKERS in res:
        # the engines live in the loader if there is one, else in the
        # single worker
        for p, m, cl in res[1][2]:
            if b"-P\0loader" in cl:
                print("one engine: RSS of the loader %.1f MB (1-worker "
                      "case)" % (m[1] / 1024.0))
        for p, m, cl in res[1][2]:
            if b"-P\0scand" in cl:
                print("one scand worker: RSS %.1f MB, of it private %.1f MB "
                      "(1-worker case, after scanning)"
                      % (m[1] / 1024.0, m[3] / 1024.0))
        for label, ix in (("idle", 0), ("after scanning", 1)):
            r = res[NWORKERS][ix] / float(res[1][ix] or 1)
            print("PSS %d workers / 1 worker, %s: %.2fx (target <= %.1fx: "
                  "%s)" % (NWORKERS, label, r, TARGET_MEM,
                           "met" if r <= TARGET_MEM else "MISSED"))
    print(flush=True)


# ---- main -------------------------------------------------------------------

def rate_row(name, n, nbytes, runs, cpu_ix=None, note=""):
    dts = [r[0] for r in runs]
    med = statistics.median(dts)
    cpu = ""
    if cpu_ix is not None:
        cpu = "%8.2f" % (statistics.median(r[cpu_ix] for r in runs)
                         * 1000.0 / n)
    print("%-22s %9.2f %10.1f %9.1f %8s  %s" % (
        name, med, n / med, nbytes / 1e6 / med, cpu or "-", note))
    return n / med


def main():
    binary = bl.preflight("pipeline bench")
    if binary is None:
        return 1
    t_begin = time.perf_counter()
    load0 = "%.2f %.2f %.2f" % os.getloadavg()
    base = tempfile.mkdtemp(prefix="imapgw-pipebench.")
    os.chmod(base, 0o755)
    d = None
    try:
        sigdir = os.path.join(base, "clamav")
        os.mkdir(sigdir)
        os.chmod(sigdir, 0o755)
        corpdir = os.path.join(base, "corpus")
        os.mkdir(corpdir)
        aptdb = os.path.join(base, "apt.db")

        t0 = time.perf_counter()
        corpus = Corpus(SEED)
        msgs = corpus.make(NMSG)
        kinds = [k for k, _ in msgs]
        msgs = [m for _, m in msgs]
        digests = [(len(m), hashlib.sha256(m).hexdigest()) for m in msgs]
        total = sum(len(m) for m in msgs)
        for i, m in enumerate(msgs):
            with open(os.path.join(corpdir, "m%05d.eml" % (i + 1)),
                      "wb") as f:
                f.write(m)
        nsig = write_signatures(sigdir, NSIGS, NDB_PCT, SEED + 2)
        write_apt(aptdb, NAPT, SEED + 3, [corpus.apt_sha256])
        n_eicar = kinds.count("eicar")
        sizes = sorted(len(m) for m in msgs)
        print("pipeline bench: %d messages, %.1f MB (sizes %.1f KB .. %.1f "
              "KB, median %.1f KB); %s" % (
                  NMSG, total / 1e6, sizes[0] / 1024.0, sizes[-1] / 1024.0,
                  sizes[len(sizes) // 2] / 1024.0,
                  ", ".join("%s %d" % (k, kinds.count(k))
                            for k in sorted(set(kinds)))))
        print("signatures: %d in %s (%d%% ndb body signatures, the rest hdb, "
              "plus EICAR); APT database: %d SHA-256 hashes; %d CPUs; "
              "generated in %.1f s" % (nsig, sigdir, NDB_PCT, NAPT + 1, NCPU,
                                       time.perf_counter() - t0), flush=True)

        d = dv.Dovecot(users={USER: PW}).start()
        t0 = time.perf_counter()
        build_mailbox(d, msgs)
        print("mailbox: %d messages appended in %.1f s" % (
            NMSG, time.perf_counter() - t0))
        # warm-up and check: Dovecot serves the bytes that were appended
        _, res0, errs = fetch_pass(d.port, NMSG, CONNS)
        bad = sum(1 for i in range(NMSG) if res0.get(i + 1) != digests[i])
        if bad or errs:
            print("WARNING: Dovecot served %d messages other than appended "
                  "(%s)" % (bad, errs[:3]))

        sections, offable, refused = choose_pipeline(d, binary, sigdir,
                                                     aptdb)
        if refused:
            print()
            print("PIPELINE FALLBACK: imapgwd -n refused %s; measuring with "
                  "antivirus%s (rerun when the config keys land)" % (
                      ", ".join(refused), "".join(" + " + s for s in sections)
                      or " only"))
            for s, e in refused.items():
                print("  %s: %s" % (s, " | ".join(e.splitlines()[:3])))
        action = pipeline_action(sigdir, aptdb, sections, offable)
        print("gateway action: antivirus%s; scand workers %d, netd workers "
              "%d; client: %d connections, %s" % (
                  "".join(" + " + s for s in sections), SCAND, NCPU, CONNS,
                  "UID FETCH n BODY.PEEK[] per message" if FETCH != "range"
                  else "one UID FETCH range BODY.PEEK[] per connection"))
        print(flush=True)

        print("== throughput: %d messages, %.1f MB, %d repetition%s each, "
              "fresh process per repetition" % (NMSG, total / 1e6, REPS,
                                                "" if REPS == 1 else "s"),
              flush=True)
        runs = {k: [] for k in ("direct", "gateway", "clamscan",
                                "clamscan-1file", "clamd")}
        notes = {}
        gres, gloads, cloads, clamd_mem = None, [], [], None
        have_clamscan = bool(CLAMSCAN) and "clamscan" not in SKIP
        have_clamd = bool(CLAMD and CLAMDSCAN) and "clamd" not in SKIP
        if not CLAMSCAN:
            print("clamscan not installed: no comparison (Debian package "
                  "clamav)")
        if not (CLAMD and CLAMDSCAN):
            print("clamd/clamdscan not installed: no comparison (Debian "
                  "package clamav-daemon)")
        small = min(range(NMSG), key=lambda i: len(msgs[i]))
        onefile = os.path.join(corpdir, "m%05d.eml" % (small + 1))
        # repetitions interleave the paths, so that a change of machine
        # load during the run hits all of them
        for rep in range(REPS):
            if "direct" not in SKIP:
                dt, _, errs = fetch_pass(d.port, NMSG, CONNS)
                runs["direct"].append((dt,))
                for e in errs[:3]:
                    print("WARNING: direct fetch: %s" % e)
            if "gateway" not in SKIP:
                gr = None
                try:
                    gr, gres, gerrs, gload = gateway_pass(d, binary, action,
                                                          NMSG)
                except Exception as e:
                    print("gateway with antivirus%s did not run: %s" % (
                        "".join(" + " + s for s in sections),
                        str(e)[:1500]))
                    if sections:
                        print("PIPELINE FALLBACK: retrying with antivirus "
                              "only")
                        sections = []
                        action = pipeline_action(sigdir, aptdb, [],
                                                 offable)
                        try:
                            gr, gres, gerrs, gload = gateway_pass(
                                d, binary, action, NMSG)
                        except Exception as e2:
                            print("gateway (antivirus only) did not run: %s"
                                  % str(e2)[:1500])
                if gr:
                    runs["gateway"].append(gr)
                    gloads.append(gload)
                    for e in gerrs[:5]:
                        print("WARNING: gateway: %s" % e)
            if have_clamscan:
                one, allf = clamscan_pass(corpdir, onefile, sigdir, n_eicar)
                runs["clamscan-1file"].append(one)
                runs["clamscan"].append(allf)
            if have_clamd:
                try:
                    cr, cload, clamd_mem = clamd_pass(base, corpdir, sigdir,
                                                      n_eicar)
                    runs["clamd"].append(cr)
                    cloads.append(cload)
                except Exception as e:
                    print("clamd comparison failed: %s" % str(e)[:1500])
                    have_clamd = False
        runs = {k: v for k, v in runs.items() if v}
        if gres is not None:
            report_changes(kinds, digests, gres, sections)
        if gloads:
            notes["gateway"] = "start-up to ready %.1f s, not counted" % \
                statistics.median(gloads)
        if cloads:
            notes["clamd"] = ("MaxThreads %d (default 10); load %.1f s, not "
                              "counted" % (NCPU, statistics.median(cloads)))

        print()
        print("%-22s %9s %10s %9s %8s" % ("path", "median s", "msgs/s",
                                           "MB/s", "CPU ms/m"))
        rate = {}
        if "direct" in runs:
            rate["direct"] = rate_row("direct (Dovecot)", NMSG, total,
                                      runs["direct"])
        if "gateway" in runs:
            rate["gateway"] = rate_row("gateway (pipeline)", NMSG, total,
                                       runs["gateway"], 1,
                                       notes.get("gateway", "") +
                                       "; CPU: scand")
            print("%-22s %9s %10s %9s %8.2f  netd" % (
                "", "", "", "",
                statistics.median(r[2] for r in runs["gateway"]) * 1000.0
                / NMSG))
        if "clamscan" in runs:
            one = statistics.median(r[0] for r in runs["clamscan-1file"])
            onecpu = statistics.median(r[1] for r in runs["clamscan-1file"])
            rate["clamscan"] = rate_row("clamscan", NMSG, total,
                                        runs["clamscan"], 1,
                                        "one process, load included")
            net = [(r[0] - one, r[1] - onecpu) for r in runs["clamscan"]]
            if min(r[0] for r in net) > 0:
                rate["clamscan-noload"] = rate_row(
                    "clamscan - load", NMSG, total, net, 1,
                    "minus clamscan on 1 file (%.2f s)" % one)
        if "clamd" in runs:
            rate["clamd"] = rate_row("clamdscan --multiscan", NMSG, total,
                                     runs["clamd"], 1,
                                     notes.get("clamd", "") + "; CPU: clamd")
        print()
        if "gateway" in rate:
            g = rate["gateway"]
            if "direct" in rate:
                print("gateway / direct message rate:   %.2f" %
                      (g / rate["direct"]))
            if "clamscan" in rate:
                print("gateway / clamscan message rate: %.2f (with its "
                      "load), %s" % (
                          g / rate["clamscan"],
                          ("%.2f (without)" % (g / rate["clamscan-noload"]))
                          if "clamscan-noload" in rate else "load not "
                          "measurable"))
            if "clamd" in rate:
                r = g / rate["clamd"]
                print("gateway / clamdscan --multiscan message rate: %.2f "
                      "(target >= %.1f: %s)%s" % (
                          r, TARGET_CLAMD,
                          "met" if r >= TARGET_CLAMD else "MISSED",
                          "" if len(sections) == len(SECTIONS) else
                          "  [NOT the whole pipeline: antivirus%s]" %
                          "".join(" + " + s for s in sections)))
        busy = []
        if "gateway" in runs:
            r = runs["gateway"][0]
            busy.append("gateway scand %.2f + netd %.2f of %d" % (
                r[1] / r[0], r[2] / r[0], NCPU))
        if "clamscan" in runs:
            r = runs["clamscan"][0]
            busy.append("clamscan %.2f of 1" % (r[1] / r[0]))
        if "clamd" in runs:
            r = runs["clamd"][0]
            busy.append("clamd %.2f of %d" % (r[1] / r[0], NCPU))
        if busy:
            print("CPUs busy during the first pass (CPU s / wall s): " +
                  "; ".join(busy))
        if IDLE:
            print("machine CPU idle during the passes (median): " + ", ".join(
                "%s %.0f%%" % (k, 100 * statistics.median(v))
                for k, v in IDLE.items() if k != "clamscan-1file") +
                "  (other load on the machine skews the rates; CPU per "
                "message less so)")
        if "gateway" in runs and "clamd" in runs:
            gc = statistics.median(r[1] + r[2] for r in runs["gateway"])
            cc = statistics.median(r[1] for r in runs["clamd"])
            print("CPU per message (independent of machine load): gateway "
                  "scand+netd %.2f ms, clamd %.2f ms; clamd/gateway %.2f"
                  % (gc * 1000.0 / NMSG, cc * 1000.0 / NMSG,
                     cc / gc if gc else 0.0))
        if clamd_mem:
            print("clamd with these signatures: PSS %.1f MB, RSS %.1f MB "
                  "(%d threads)" % (clamd_mem[0] / 1024.0,
                                    clamd_mem[1] / 1024.0, NCPU))
        print(flush=True)

        if "memory" not in SKIP:
            bench_memory(d, binary, action, NMSG)
        print("pipeline bench: %.0f s in all; load average at start %s, "
              "at the end %s" % (time.perf_counter() - t_begin, load0,
                                 "%.2f %.2f %.2f" % os.getloadavg()))
        return 0
    finally:
        if d is not None:
            d.stop()
        if KEEP:
            print("kept %s" % base)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
