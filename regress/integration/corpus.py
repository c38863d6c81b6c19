"""A corpus of messages with the outcome the content pipeline must give.

    c = corpus.build("/run/imapgw-corpus.x")   # or corpus.shared()
    for e in c.entries: e.name, e.data, e.action, e.expect
    c.sigdir, c.aptdb, c.actions(), c.write_offline_config()
    corpus.check_report(e, report_json, kind)   -> [problems]
    corpus.check_output(e, original, output)    -> [problems]

Nothing is downloaded: every message is generated here, and the only files
taken from outside are Debian's clamav-testfiles
(/usr/share/clamav-testfiles), found by a signature database the corpus
writes itself (ClamAV's official one is not there offline):

    sigdir/imapgw-corpus.ndb  EICAR's hex signature (Imapgw.Test.EICAR)
    sigdir/imapgw-corpus.hdb  md5:size:Imapgw.Test.<file> of each test file
    apt.db                    APT Blocker entries (hash level name)
    lock.key (install_lock_key) a fixed lock key, so that the offline mode
                              and a gateway lock a part to the same bytes

Two proxy actions (see actions()):

  corpus-all  everything on: content types (auto_detect; PE executables
              strip, application/pdf lock), filenames (*.exe strip),
              headers (X-Campaign-Tracker: * strip), antivirus (on_virus
              strip, on_error deny), APT Blocker (high strip, medium lock,
              low allow), spamBlocker (builtin, confirmed: tag
              "***SPAM*** ", bulk and suspect: allow)
  corpus-av   antivirus only (the clamav-testfiles: a PE or PDF would
              otherwise be judged by the content type rules first)

Expectations follow DESIGN.md: strip replaces a part by a text/plain part
with the deny message; lock replaces it by an application/x-imapgw-locked
attachment named "<original>.locked"; deny replaces the message by the deny
message keeping Date/From/To/Cc/Subject/Message-ID/In-Reply-To/References;
a virus in the body of a single-part message cannot be stripped: deny; an
upload (APPEND) is rejected instead of rewritten (spamBlocker does not
judge uploads, scand/scan.c); the stages run in the order header,
content_type/filename, antivirus, apt (only on AV-clean parts), spam.
Where the outcome depends on where a limit is (the 200-level and
10,000-part messages) an entry lists alternatives; an infected one must
never pass.

Run as a script it builds the corpus and checks it on its own (every
message parses, `file --mime-type` of the PE, PDF and PNG, the archives,
clamscan with the corpus database; --dovecot: Dovecot stores each one byte
for byte):

    /usr/bin/python3 corpus.py [--keep DIR] [--dovecot]
"""

import atexit
import base64
import binascii
import email
import email.policy
import hashlib
import io
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import gateway  # noqa: E402

EICAR = gateway.EICAR
EICAR_B64 = base64.b64encode(EICAR)
EICAR_VIRUS = "Imapgw.Test.EICAR"
TESTFILES = "/usr/share/clamav-testfiles"
# Those attached (when they exist); all small.  clam.exe is also inside
# clam.zip and friends: libclamav may name either.
TESTFILE_NAMES = ["clam.exe", "clam.zip", "clam.pdf", "clam.7z",
                  "clam.tar.gz", "clam.cab", "clam.ole.doc", "clam.exe.bz2",
                  "clam.exe.rtf", "clam-upx.exe"]
GTUBE = (b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*"
         b"C.34X")
SPAM_TAG = "***SPAM*** "
DENY_MARK = "IMAPGW-CORPUS-DENY"
DENY_MESSAGE = (DENY_MARK + ": %(reason)%\n"
                "action=%(action)% type=%(type)% file=%(filename)% "
                "virus=%(virus)%\n")
LOCKED_TYPE = "application/x-imapgw-locked"
PE_TYPES = ("application/x-dosexec",
            "application/vnd.microsoft.portable-executable")
TRACKER = b"X-Campaign-Tracker: abc-123-campaign"
# The header fields a deny message keeps (DESIGN.md).
KEPT = ("Date", "From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To",
        "References")
# Pipeline order: a stage's findings come after those of earlier stages.
ORDER = {"header": 0, "content_type": 1, "filename": 1, "antivirus": 2,
         "apt": 3, "spam": 4}
STAGES = ("header", "content_type", "filename", "antivirus", "apt", "spam",
          "error", "oversize")
# The lock key (common/lock.h: <state_dir>/lock.key, 32 bytes, 0600, root)
# the offline mode and the gateway share, so that locked parts compare.
LOCK_KEY = hashlib.sha256(b"imapgw corpus lock key").digest()
LOCK_MAGIC = b"IMAPGWL1"
ACT_ALL = "corpus-all"
ACT_AV = "corpus-av"

CRLF = b"\r\n"


# ---- building blocks --------------------------------------------------------

def b64(data):
    return base64.encodebytes(data).replace(b"\n", CRLF)


def head(n, name, subject, extra=()):
    """The top-level header of corpus message n (CRLF, no empty line)."""
    h = [b"From: Mallory Sender <mallory@example.org>",
         b"To: Alice <alice@example.org>",
         b"Cc: Bob <bob@example.org>",
         b"Subject: " + subject,
         b"Date: Thu, 04 Jan 2024 10:%02d:%02d +0100" % (n // 60, n % 60),
         b"Message-ID: <corpus-%s@example.org>" % name.encode(),
         b"In-Reply-To: <thread-%d@example.org>" % n,
         b"References: <thread-root@example.org> <thread-%d@example.org>" % n,
         b"X-Mailer: imapgw corpus generator"]
    h += list(extra)
    return CRLF.join(h) + CRLF


def leaf(ctype, body, filename=None, cte=None, disp=None, extra=()):
    """A MIME entity (header, empty line, body); body is already encoded
    unless cte is base64 (then it is encoded here)."""
    h = [b"Content-Type: " + ctype]
    if filename is not None and b"name" not in ctype:
        h[0] += b'; name="' + filename + b'"'
    if disp is None and filename is not None:
        disp = b'attachment; filename="' + filename + b'"'
    if disp is not None:
        h.append(b"Content-Disposition: " + disp)
    if cte is not None:
        h.append(b"Content-Transfer-Encoding: " + cte)
        if cte == b"base64":
            body = b64(body)
    h += list(extra)
    if not body.endswith(CRLF):
        body += CRLF
    return CRLF.join(h) + CRLF + CRLF + body


def multipart(subtype, boundary, parts, preamble=b"This is a multi-part "
              b"message in MIME format." + CRLF):
    """The body of a multipart (no header): delimiters, parts, close."""
    out = [preamble]
    for p in parts:
        out.append(b"--" + boundary + CRLF + p)
        if not p.endswith(CRLF):
            out.append(CRLF)
    out.append(b"--" + boundary + b"--" + CRLF)
    return b"".join(out)


def mixed_message(n, name, subject, parts, subtype=b"mixed", extra=()):
    bnd = b"=_corpus_" + name.encode()
    return (head(n, name, subject, list(extra) + [
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/' + subtype + b'; boundary="' + bnd +
        b'"']) + CRLF + multipart(subtype, bnd, parts))


def single_message(n, name, subject, body, ctype=b"text/plain; "
                   b"charset=us-ascii", cte=None, extra=()):
    h = list(extra) + [b"MIME-Version: 1.0", b"Content-Type: " + ctype]
    if cte:
        h.append(b"Content-Transfer-Encoding: " + cte)
    if not body.endswith(CRLF):
        body += CRLF
    return head(n, name, subject, h) + CRLF + body


TEXT = leaf(b"text/plain; charset=us-ascii",
            b"Hello Alice," + CRLF + CRLF + b"the files are attached." + CRLF)


def qp_all(data):
    """Quoted-printable that encodes every non-alphanumeric byte, so that
    the encoded form does not contain the data."""
    out, line = [], b""
    for c in data:
        ch = bytes([c])
        tok = ch if ch.isalnum() else b"=%02X" % c
        if len(line) + len(tok) > 72:
            out.append(line + b"=")
            line = b""
        line += tok
    out.append(line)
    return CRLF.join(out) + CRLF


def uuencode(data, name, mode=b"644"):
    lines = [b"begin " + mode + b" " + name]
    for i in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[i:i + 45]).rstrip(b"\n"))
    lines += [b"`", b"end"]
    return CRLF.join(lines) + CRLF


def zip_bytes(members, level=zipfile.ZIP_DEFLATED):
    """members: [(name, bytes)] -> a ZIP (fixed dates: deterministic)."""
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", level) as z:
        for name, data in members:
            zi = zipfile.ZipInfo(name, date_time=(2024, 1, 4, 10, 0, 0))
            zi.compress_type = level
            zi.external_attr = 0o644 << 16
            z.writestr(zi, data)
    return bio.getvalue()


def encrypted_zip(workdir, members):
    """`zip -P secret` (ZipCrypto) of members written to workdir."""
    d = tempfile.mkdtemp(dir=workdir)
    for name, data in members:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        os.utime(os.path.join(d, name), (1704362400, 1704362400))
    out = os.path.join(d, "enc.zip")
    r = subprocess.run(["zip", "-q", "-X", "-P", "secret", out] +
                       [m[0] for m in members], cwd=d,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError("zip -P failed: %s" % r.stdout.decode())
    with open(out, "rb") as f:
        data = f.read()
    shutil.rmtree(d)
    return data


def minimal_pdf():
    """A valid one-page PDF 1.4 (xref offsets computed)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] "
            b"/Contents 4 0 R /Resources << >> >>"]
    stream = b"BT /F1 12 Tf 20 100 Td (quarterly report) Tj ET"
    objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream +
                b"\nendstream")
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offs = []
    for i, o in enumerate(objs, 1):
        offs.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for o in offs:
        out += b"%010d 00000 n \n" % o
    out += (b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(objs) + 1, xref))
    return out


def minimal_pe():
    """MZ header, DOS stub, e_lfanew -> "PE\\0\\0", COFF header and a PE32
    optional header: libmagic says "PE32 executable"."""
    mz = bytearray(64)
    mz[0:2] = b"MZ"
    struct.pack_into("<I", mz, 0x3c, 0x80)
    stub = (b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21"
            b"This program cannot be run in DOS mode.\r\r\n$")
    stub += b"\0" * (64 - len(stub))
    opt = struct.pack("<HBBIIIIIIIIIHHHHHHIIIIHHIIIIII", 0x10b, 14, 0,
                      0x200, 0, 0, 0x1000, 0x1000, 0x1000, 0x400000, 0x1000,
                      0x200, 6, 0, 0, 0, 6, 0, 0, 0x2000, 0x200, 0, 3,
                      0x8140, 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    opt += b"\0" * 128
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x14c, 0, 0x65000000, 0, 0,
                                   len(opt), 0x0102)
    return bytes(mz) + stub + coff + opt


def png(w=16, h=16):
    """A small valid RGB PNG."""
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = b"".join(b"\0" + b"".join(bytes((x * 16 % 256, y * 16 % 256, 128))
                                     for x in range(w)) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def random_bytes(seed, n):
    return random.Random(seed).randbytes(n)


# ---- entries ----------------------------------------------------------------

class Entry:
    """One message and what the pipeline must make of it.

    expect (for a FETCH; an APPEND gets "reject" where this says
    "changed"):
      verdict    "clean" or "changed"
      action     the action of the report ("allow" for clean), or a tuple
                 of acceptable ones
      stages     stages that must have findings
      maybe      stages that may have findings that act (not "allow")
      findings   [ {key: value} ]: each must be matched by one finding
      rewrite    what the output must look like (check_output):
                   {"deny": True}                 the deny message
                   {"exact": bytes}               exactly these bytes
                   {"parts": {path: state}}       state kept/stripped/
                                                  locked:<name>, parts
                                                  not named must be kept
                 plus "absent": [bytes] never in the output
      append     what differs for an upload (spam: not judged)
      alt        a list of expect dicts: any one may hold (robustness
                 entries whose outcome depends on where the limits are)

    slow: time-bounded (bombs, depth, width); heavy: so slow to judge
    (10,000 parts) that the tests judge it once per mode.
    """

    def __init__(self, name, data, expect, action=ACT_ALL, slow=False,
                 heavy=False, note=""):
        self.name = name
        self.data = data
        self.expect = expect
        self.action = action
        self.slow = slow or heavy   # size, depth or width: time-bounded
        self.heavy = heavy          # so slow to judge that tests judge it
        self.note = note            # once

    def alternatives(self):
        return self.expect.get("alt") or [self.expect]

    def __repr__(self):
        return "<Entry %s %d bytes>" % (self.name, len(self.data))


def _clean():
    return {"verdict": "clean", "action": "allow", "stages": set(),
            "maybe": set(), "rewrite": None}


def _strip(stages, parts, absent=(), findings=(), maybe=()):
    return {"verdict": "changed", "action": "strip", "stages": set(stages),
            "maybe": set(maybe), "findings": list(findings),
            "rewrite": {"parts": parts, "absent": list(absent)}}


def _deny(stages, absent=(), findings=(), maybe=()):
    return {"verdict": "changed", "action": "deny", "stages": set(stages),
            "maybe": set(maybe), "findings": list(findings),
            "rewrite": {"deny": True, "absent": list(absent)}}


EICAR_ABSENT = [EICAR, EICAR_B64[:40]]


class Corpus:
    def __init__(self, path):
        self.path = path
        self.entries = []
        self.sigdir = os.path.join(path, "clamav")
        self.aptdb = os.path.join(path, "apt.db")
        self.testfiles = []          # (file name, virus name)
        self.apt = []                # (hash, level, name)

    def get(self, name):
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def add(self, *a, **kw):
        e = Entry(*a, **kw)
        assert all(x.name != e.name for x in self.entries), e.name
        self.entries.append(e)
        return e

    # ---- config -----------------------------------------------------------

    def actions(self):
        """The proxy actions (for gateway.config_yaml / Gateway(actions=))."""
        all_on = {
            "inherit": "IMAP-Server.Standard",
            "content_types": {
                "auto_detect": True, "none_matched": "allow",
                "rules": [{"match": PE_TYPES[0], "action": "strip"},
                          {"match": PE_TYPES[1], "action": "strip"},
                          {"match": "application/pdf", "action": "lock"}]},
            "filenames": {"rules": [{"match": "*.exe", "action": "strip"}]},
            "headers": {"rules": [{"match": "X-Campaign-Tracker: *",
                                   "action": "strip"}]},
            "antivirus": {"enabled": True, "database": self.sigdir,
                          "on_virus": "strip", "on_error": "deny"},
            "apt_blocker": {"enabled": True, "database": self.aptdb,
                            "actions": {"high": "strip", "medium": "lock",
                                        "low": "allow"}},
            "spamblocker": {"enabled": True, "engine": "builtin",
                            "categories": {
                                "confirmed": {"action": "tag",
                                              "tag": SPAM_TAG},
                                "bulk": {"action": "allow"},
                                "suspect": {"action": "allow"}}},
            "deny_message": DENY_MESSAGE,
        }
        av_only = {
            "inherit": "IMAP-Server.Standard",
            "content_types": {"auto_detect": False, "rules": []},
            "filenames": {"rules": []},
            "headers": {"rules": []},
            "antivirus": {"enabled": True, "database": self.sigdir,
                          "on_virus": "strip", "on_error": "deny"},
            "apt_blocker": {"enabled": False},
            "spamblocker": {"enabled": False},
            "deny_message": DENY_MESSAGE,
        }
        return {ACT_ALL: all_on, ACT_AV: av_only}

    def config_text(self, chroot, state_dir, socket_path, servers, policies,
                    workers=(1, 1, 1), level="info"):
        return gateway.config_yaml(gateway.GW_USER, chroot, state_dir,
                                   socket_path, servers, policies,
                                   workers=workers, level=level,
                                   actions=self.actions(),
                                   sigdir=self.sigdir)

    def write_offline_config(self, name="offline.yaml"):
        """A config for `imapgwd -S` (both actions used by a policy, a
        backend that is never contacted); returns its path."""
        from dovecot import ensure_system_user, free_port
        ensure_system_user(gateway.GW_USER)
        base = os.path.join(self.path, "offline")
        chroot = os.path.join(base, "empty")
        state = os.path.join(base, "state")
        for d in (base, chroot, state):
            os.makedirs(d, exist_ok=True)
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
        install_lock_key(state)
        pols = [gateway.policy(ACT_ALL, free_port(), "nowhere",
                               action=ACT_ALL),
                gateway.policy(ACT_AV, free_port(), "nowhere",
                               action=ACT_AV)]
        text = self.config_text(chroot, state, os.path.join(base, "ctl.sock"),
                                {"nowhere": ["127.0.0.1:9"]}, pols)
        path = os.path.join(self.path, name)
        with open(path, "w") as f:
            f.write(text)
        return path


def install_lock_key(state_dir):
    """Put the corpus lock key where imapgwd looks for it."""
    p = os.path.join(state_dir, "lock.key")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, LOCK_KEY)
    finally:
        os.close(fd)
    os.chown(p, 0, 0)
    os.chmod(p, 0o600)


def _write_signatures(c):
    os.makedirs(c.sigdir, exist_ok=True)
    with open(os.path.join(c.sigdir, "imapgw-corpus.ndb"), "w") as f:
        f.write("%s:0:*:%s\n" % (EICAR_VIRUS, EICAR.hex()))
    lines = []
    for fn in TESTFILE_NAMES:
        p = os.path.join(TESTFILES, fn)
        if not os.path.isfile(p):
            continue
        with open(p, "rb") as f:
            data = f.read()
        virus = "Imapgw.Test." + re.sub(r"[^A-Za-z0-9]", "_", fn)
        lines.append("%s:%d:%s\n" % (hashlib.md5(data).hexdigest(),
                                     len(data), virus))
        c.testfiles.append((fn, virus, data))
    with open(os.path.join(c.sigdir, "imapgw-corpus.hdb"), "w") as f:
        f.writelines(lines)
    os.chmod(c.sigdir, 0o755)


def _write_apt(c):
    with open(c.aptdb, "w") as f:
        f.write("# imapgw corpus APT Blocker database\n"
                "# <sha256 or md5> <high|medium|low> <threat name>\n\n")
        for h, level, name in c.apt:
            f.write("%s %s %s\n" % (h, level, name))
    os.chmod(c.aptdb, 0o644)


def build(path):
    """Write the corpus into path (created) and return the Corpus."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    c = Corpus(path)
    _write_signatures(c)
    n = [0]

    def num():
        n[0] += 1
        return n[0]

    def mixed(name, subject, parts, **kw):
        return mixed_message(num(), name, subject, parts, **kw)

    def single(name, subject, body, **kw):
        return single_message(num(), name, subject, body, **kw)

    eicar_strip = dict(absent=EICAR_ABSENT,
                       findings=[{"stage": "antivirus",
                                  "virus": EICAR_VIRUS}])

    # -- EICAR in every wrapping --------------------------------------------
    c.add("eicar-body", single("eicar-body", b"plain EICAR body", EICAR),
          _deny({"antivirus"}, **eicar_strip),
          note="a virus in the body of a single-part message: strip "
               "impossible, deny")
    c.add("eicar-base64", mixed("eicar-base64", b"EICAR as base64", [
        TEXT, leaf(b"application/octet-stream", EICAR, b"eicar.com",
                   b"base64")]),
        _strip({"antivirus"}, {"2": "stripped"}, **dict(
            eicar_strip, findings=[{"stage": "antivirus", "part": "2",
                                    "virus": EICAR_VIRUS,
                                    "filename": "eicar.com"}])))
    c.add("eicar-qp", mixed("eicar-qp", b"EICAR quoted-printable", [
        TEXT, leaf(b"text/plain; charset=us-ascii", qp_all(EICAR),
                   b"eicar.txt", b"quoted-printable")]),
        _strip({"antivirus"}, {"2": "stripped"}, **eicar_strip))
    c.add("eicar-uuencode", mixed("eicar-uuencode", b"EICAR x-uuencode", [
        TEXT, leaf(b"application/octet-stream", uuencode(EICAR, b"eicar.com"),
                   b"eicar.com", b"x-uuencode")]),
        _strip({"antivirus"}, {"2": "stripped"}, **eicar_strip))
    c.add("eicar-uuencode-inline", single(
        "eicar-uuencode-inline", b"EICAR uuencoded in the text",
        b"Here is the file you asked for:" + CRLF + CRLF +
        uuencode(EICAR, b"eicar.com") + CRLF + b"Regards" + CRLF),
        _deny({"antivirus"}, **eicar_strip),
        note="a uuencoded block in a single-part text body: deny")
    c.add("eicar-zip", mixed("eicar-zip", b"EICAR in a ZIP", [
        TEXT, leaf(b"application/zip", zip_bytes([("eicar.com", EICAR),
                                                  ("readme.txt",
                                                   b"read me\n")]),
                   b"eicar.zip", b"base64")]),
        _strip({"antivirus"}, {"2": "stripped"}, **eicar_strip))
    inner = single_message(99, "inner-body", b"forwarded", EICAR)
    c.add("eicar-rfc822-body", mixed("eicar-rfc822-body", b"Fwd: EICAR", [
        TEXT, b"Content-Type: message/rfc822" + CRLF +
        b"Content-Disposition: attachment" + CRLF + CRLF + inner]),
        _strip({"antivirus"}, {"2": "stripped"}, **eicar_strip),
        note="the infected part is the body of an attached message: the "
             "message/rfc822 part is what is stripped")
    inner = mixed_message(98, "inner-att", b"forwarded with attachment", [
        TEXT, leaf(b"application/octet-stream", EICAR, b"eicar.com",
                   b"base64")])
    c.add("eicar-rfc822-attachment", mixed(
        "eicar-rfc822-attachment", b"Fwd: EICAR attached", [
            TEXT, b"Content-Type: message/rfc822" + CRLF + CRLF + inner]),
        _strip({"antivirus"}, {"2.2": "stripped", "2.1": "kept"},
               **eicar_strip))

    # -- clamav-testfiles, antivirus only --------------------------------
    for i, (fn, virus, data) in enumerate(c.testfiles):
        name = "testfile-" + re.sub(r"[^A-Za-z0-9]+", "-", fn)
        others = [v for _, v, _ in c.testfiles]
        c.add(name, mixed(name, b"sample " + fn.encode(), [
            TEXT, leaf(b"application/octet-stream", data, fn.encode(),
                       b"base64"),
            leaf(b"text/plain; charset=us-ascii", b"after the sample" +
                 CRLF)]),
            dict(_strip({"antivirus"}, {"2": "stripped"},
                        absent=[b64(data)[:60]]),
                 virus_any=others),
            action=ACT_AV)

    # -- content types, file names, headers --------------------------------
    pdf = minimal_pdf()
    c.add("pdf-as-bin", mixed("pdf-as-bin", b"the report", [
        TEXT, leaf(b"application/octet-stream", pdf, b"report.bin",
                   b"base64")]),
        {"verdict": "changed", "action": "lock", "stages": {"content_type"},
         "maybe": set(),
         "findings": [{"stage": "content_type", "part": "2",
                       "detected": "application/pdf"}],
         "rewrite": {"parts": {"2": "locked:report.bin.locked"},
                     "absent": [b64(pdf)[:60]]}},
        note="declared application/octet-stream, detected application/pdf")
    pe = minimal_pe()
    c.add("pe-as-text", mixed("pe-as-text", b"some notes", [
        TEXT, leaf(b"text/plain; charset=us-ascii", pe, b"notes.txt",
                   b"base64")]),
        _strip({"content_type"}, {"2": "stripped"}, absent=[b64(pe)[:60]]),
        note="declared text/plain, detected a PE executable")
    harmless = (b"This is not a program, only its name says so." + CRLF) * 3
    c.add("name-rfc2231", mixed("name-rfc2231", b"CV attached", [
        TEXT, b"Content-Type: application/octet-stream" + CRLF +
        b"Content-Disposition: attachment;" + CRLF +
        b" filename*=UTF-8''r%C3%A9sum%C3%A9.exe" + CRLF +
        b"Content-Transfer-Encoding: base64" + CRLF + CRLF + b64(harmless)]),
        _strip({"filename"}, {"2": "stripped"}, absent=[b64(harmless)[:40]],
               findings=[{"stage": "filename",
                          "filename": "r\u00e9sum\u00e9.exe"}]))
    enc = b"=?UTF-8?B?" + base64.b64encode(b"rechnung.exe") + b"?="
    c.add("name-rfc2047", mixed("name-rfc2047", b"Rechnung", [
        TEXT, b'Content-Type: application/octet-stream; name="' + enc +
        b'"' + CRLF + b'Content-Disposition: attachment; filename="' + enc +
        b'"' + CRLF + b"Content-Transfer-Encoding: base64" + CRLF + CRLF +
        b64(harmless + b"2")]),
        _strip({"filename"}, {"2": "stripped"},
               absent=[b64(harmless + b"2")[:40]],
               findings=[{"stage": "filename", "filename": "rechnung.exe"}]))
    exezip = zip_bytes([("readme.txt", b"see setup\n"),
                        ("setup.exe", harmless)])
    c.add("exe-in-zip", mixed("exe-in-zip", b"tools", [
        TEXT, leaf(b"application/zip", exezip, b"tools.zip", b"base64")]),
        _strip({"filename"}, {"2": "stripped"}, absent=[b64(exezip)[:60]],
               findings=[{"stage": "filename", "filename": "setup.exe"}]),
        note="a member name in an archive")
    gtube_msg = single("gtube", b"cheap meds",
                       b"Buy now!" + CRLF + CRLF + GTUBE + CRLF)
    c.add("gtube", gtube_msg,
          {"verdict": "changed", "action": "tag", "stages": {"spam"},
           "maybe": set(),
           "findings": [{"stage": "spam", "category": "confirmed"}],
           # scand/scan.c: "spamBlocker does not judge uploads"
           "append": {"verdict": "clean", "action": "allow",
                      "stages": set(), "findings": []},
           "rewrite": {"exact": gtube_msg.replace(
               b"\r\nSubject: cheap meds\r\n",
               b"\r\nSubject: " + SPAM_TAG.encode() + b"cheap meds\r\n", 1)}})
    trk = single("header-strip", b"newsletter", b"Our news." + CRLF,
                 extra=[TRACKER])
    c.add("header-strip", trk,
          {"verdict": "changed", "action": "strip", "stages": {"header"},
           "maybe": set(),
           "findings": [{"stage": "header"}],
           "rewrite": {"exact": trk.replace(TRACKER + CRLF, b"", 1)}})

    # -- APT Blocker ----------------------------------------------------------
    apt_parts = {}
    for level, hashkind in (("high", "sha256"), ("medium", "md5"),
                            ("low", "sha256")):
        data = random_bytes("apt-" + level, 3000)
        h = getattr(hashlib, hashkind)(data).hexdigest()
        c.apt.append((h, level, "Imapgw.APT." + level.capitalize()))
        apt_parts[level] = data
    # EICAR is in the APT database too: APT must not judge what the
    # antivirus found (only AV-clean parts go to APT).
    c.apt.append((hashlib.sha256(EICAR).hexdigest(), "high",
                  "Imapgw.APT.Eicar"))
    _write_apt(c)
    for level, act, state in (("high", "strip", "stripped"),
                              ("medium", "lock",
                               "locked:payload-medium.bin.locked"),
                              ("low", "allow", None)):
        data = apt_parts[level]
        name = "apt-" + level
        msg = mixed(name, b"payload " + level.encode(), [
            TEXT, leaf(b"application/octet-stream", data,
                       b"payload-" + level.encode() + b".bin", b"base64")])
        f = [{"stage": "apt", "level": level, "part": "2"}]
        if state is None:
            e = _clean()
            e["stages"] = {"apt"}
            e["findings"] = f
        else:
            e = {"verdict": "changed", "action": act, "stages": {"apt"},
                 "maybe": set(), "findings": f,
                 "rewrite": {"parts": {"2": state},
                             "absent": [b64(data)[:60]]}}
        c.add(name, msg, e)

    # -- what cannot be judged: on_error (deny) -------------------------------
    ezip = encrypted_zip(path, [("secret.txt", b"top secret plans\n" * 20)])
    c.add("zip-encrypted", mixed("zip-encrypted", b"encrypted", [
        TEXT, leaf(b"application/zip", ezip, b"secret.zip", b"base64")]),
        _deny({"error"}, absent=[b64(ezip)[:60]],
              maybe={"antivirus", "apt"}),
        note="an encrypted member cannot be judged: on_error deny")
    zeros = zip_bytes([("zeros.bin", bytes(50 << 20))])
    c.add("zip-bomb", mixed("zip-bomb", b"bomb", [
        TEXT, leaf(b"application/zip", zeros, b"big.zip", b"base64")]),
        _deny({"error"}, absent=[b64(zeros)[:60]],
              maybe={"antivirus", "apt"}),
        slow=True, note="50 MB of zeros deflated: a limit, on_error deny")
    nest = zeros
    for i in range(4):
        nest = zip_bytes([("level%d.zip" % (4 - i), nest)])
    c.add("zip-bomb-nested", mixed("zip-bomb-nested", b"nested bomb", [
        TEXT, leaf(b"application/zip", nest, b"nested.zip", b"base64")]),
        _deny({"error"}, absent=[b64(nest)[:60]],
              maybe={"antivirus", "apt"}),
        slow=True, note="the bomb five ZIPs deep (max_archive_depth 3)")

    # -- structure limits: judged without crash, in bounded time -----------
    # Whether a structure beyond the parser's limits is an error (deny) or
    # judged as the bytes it is (clean) is the implementation's choice;
    # an infected one must never pass.
    limit_clean = {"alt": [_clean(), _deny({"error"},
                                           maybe={"antivirus", "apt"})]}
    limit_infected = {"alt": [
        dict(_strip({"antivirus"}, {}, absent=EICAR_ABSENT,
                    maybe={"error", "apt"}), any_path=True),
        _deny({"antivirus"}, absent=EICAR_ABSENT, maybe={"error", "apt"}),
        _deny({"error"}, absent=EICAR_ABSENT, maybe={"antivirus", "apt"})]}
    # One wide message only (judging 10,000 parts is slow): 9,999 tiny
    # text parts and EICAR in the last one, beyond the parser's 10,000
    # parts when the message itself counts.
    tiny = [b"Content-Type: text/plain" + CRLF + CRLF + b"p%d" % i + CRLF
            for i in range(9999)]
    c.add("multipart-10000", mixed(
        "multipart-10000", b"10000 parts, EICAR last", tiny + [
            leaf(b"application/octet-stream", EICAR, b"eicar.com",
                 b"base64")]),
        dict(limit_infected), heavy=True,
        note="10,000 tiny parts, EICAR base64 in the last one")

    def nested_mp(depth, bottom):
        ent = bottom
        for d in range(depth, 0, -1):
            bnd = b"=_n%d" % d
            ent = (b'Content-Type: multipart/mixed; boundary="' + bnd + b'"'
                   + CRLF + CRLF + multipart(b"mixed", bnd, [ent],
                                             preamble=b""))
        return ent

    def nested_msg(depth, bottom):
        ent = bottom
        for d in range(depth, 0, -1):
            ent = (b"Content-Type: message/rfc822" + CRLF + CRLF +
                   b"Subject: level %d" % d + CRLF +
                   b"MIME-Version: 1.0" + CRLF + ent)
        return ent

    deep_text = leaf(b"text/plain", b"at the bottom" + CRLF)
    deep_eicar = leaf(b"application/octet-stream", EICAR, b"eicar.com",
                      b"base64")
    for kind, fn in (("multipart", nested_mp), ("rfc822", nested_msg)):
        for infected, bottom in ((False, deep_text), (True, deep_eicar)):
            name = "nested-%s-200%s" % (kind, "-eicar" if infected else "")
            ent = fn(200, bottom)
            hdr, body = ent.split(CRLF + CRLF, 1)
            msg = head(num(), name, name.encode(), [b"MIME-Version: 1.0"] +
                       hdr.split(CRLF)) + CRLF + body
            c.add(name, msg, dict(limit_infected if infected
                                  else limit_clean), slow=True)

    # -- clean ----------------------------------------------------------------
    c.add("clean-plain", single("clean-plain", b"lunch?",
                                b"Lunch at noon?" + CRLF), _clean())
    c.add("clean-alternative", mixed("clean-alternative", b"newsletter", [
        leaf(b"text/plain; charset=utf-8", b"Plain version." + CRLF),
        leaf(b"text/html; charset=utf-8",
             b"<html><body><p>HTML version.</p></body></html>" + CRLF)],
        subtype=b"alternative"), _clean())
    c.add("clean-image", mixed("clean-image", b"a picture", [
        TEXT, leaf(b"image/png", png(), b"dot.png", b"base64")]), _clean())

    # -- all stages at once, in order -----------------------------------------
    combo = mixed("combo", b"everything", [
        TEXT, leaf(b"application/octet-stream", pdf, b"report.bin",
                   b"base64"),
        leaf(b"application/octet-stream", EICAR, b"eicar.com", b"base64"),
        leaf(b"application/octet-stream", apt_parts["high"],
             b"payload-high.bin", b"base64"),
        leaf(b"image/png", png(), b"dot.png", b"base64")],
        extra=[TRACKER])
    c.add("combo", combo,
          {"verdict": "changed", "action": ("strip", "lock"),
           "stages": {"header", "content_type", "antivirus", "apt"},
           "maybe": set(), "order": True,
           "findings": [{"stage": "content_type", "part": "2"},
                        {"stage": "antivirus", "part": "3"},
                        {"stage": "apt", "part": "4", "level": "high"}],
           "rewrite": {"parts": {"1": "kept",
                                 "2": "locked:report.bin.locked",
                                 "3": "stripped", "4": "stripped",
                                 "5": "kept"},
                       "removed_header": TRACKER,
                       "absent": EICAR_ABSENT +
                       [b64(apt_parts["high"])[:60], b64(pdf)[:60]]}},
          note="header strip, PDF lock, virus strip, APT high strip, one "
               "clean image, in one message; findings in pipeline order")

    for e in c.entries:
        assert b"\0" not in e.data and b"\r" not in e.data.replace(CRLF, b"")
        with open(os.path.join(path, e.name + ".eml"), "wb") as f:
            f.write(e.data)
    return c


_shared = {}


def shared():
    """One corpus per process (built on first use, removed at exit unless
    IMAPGW_KEEP is set)."""
    if "c" not in _shared:
        base = "/run" if os.access("/run", os.W_OK) else None
        d = tempfile.mkdtemp(prefix="imapgw-corpus.", dir=base)
        os.chmod(d, 0o755)
        _shared["c"] = build(d)
        if not os.environ.get("IMAPGW_KEEP"):
            atexit.register(shutil.rmtree, d, True)
    return _shared["c"]


# ---- checking ---------------------------------------------------------------

def _as_set(v):
    if isinstance(v, (tuple, list, set, frozenset)):
        return set(v)
    return {v}


def check_report(entry, rep, kind="fetch"):
    """Problems of a JSON report (dict) against the entry, [] if none.
    Tries every alternative; returns the problems of the closest one."""
    best = None
    for exp in entry.alternatives():
        p = _check_report_one(exp, rep, kind)
        if not p:
            return []
        if best is None or len(p) < len(best):
            best = p
    return best


def _stage_list(rep):
    return [f.get("stage") for f in rep.get("findings", [])
            if isinstance(f, dict)]


def _check_report_one(exp, rep, kind):
    if kind == "append" and "append" in exp:
        exp = dict(exp, **exp["append"])
    p = []
    want = exp["verdict"]
    if kind == "append" and want == "changed":
        want = "reject"
    if rep.get("verdict") != want:
        p.append("verdict %r, expected %r" % (rep.get("verdict"), want))
    if rep.get("action") not in _as_set(exp["action"]):
        p.append("action %r, expected %s" % (rep.get("action"),
                                              exp["action"]))
    findings = [f for f in rep.get("findings", []) if isinstance(f, dict)]
    stages = _stage_list(rep)
    for s in stages:
        if s not in STAGES:
            p.append("unknown stage %r" % s)
    for s in sorted(exp["stages"]):
        if s not in stages:
            p.append("no %s finding (findings: %s)" % (s, stages))
    allowed = exp["stages"] | exp.get("maybe", set())
    for f in findings:
        s = f.get("stage")
        acts = f.get("action", "?") != "allow"
        if s not in allowed and (acts or s == "error"):
            p.append("unexpected %s finding: %r" % (s, f))
    for want_f in exp.get("findings", []):
        if not any(all(_fmatch(f.get(k), v) or
                       # an archive member's name: "member", the part's
                       # own name in "filename"
                       (k == "filename" and _fmatch(f.get("member"), v))
                       for k, v in want_f.items()) for f in findings):
            p.append("no finding with %r in %r" % (want_f, findings))
    if exp.get("virus_any"):
        names = [f.get("virus") for f in findings
                 if f.get("stage") == "antivirus"]
        if not any(_fmatch(n, v) for n in names for v in exp["virus_any"]):
            p.append("virus names %r are none of the corpus database's %r"
                     % (names, exp["virus_any"]))
    if exp.get("order"):
        last = -1
        for s in stages:
            o = ORDER.get(s)
            if o is None:
                continue
            if o < last:
                p.append("findings not in pipeline order: %s" % stages)
                break
            last = o
    return p


def _fmatch(got, want):
    if got == want:
        return True
    # libclamav names signatures of unofficial databases "<name>.UNOFFICIAL"
    if isinstance(got, str) and isinstance(want, str) and \
            want.startswith("Imapgw.Test.") and got == want + ".UNOFFICIAL":
        return True
    if isinstance(got, str) and isinstance(want, str):
        return got.lower() == want.lower()
    return False


# ---- the output: structure --------------------------------------------------

def split_entity(b):
    """(header, body) of a MIME entity (the empty line belongs to
    neither)."""
    if b.startswith(CRLF):
        return b"", b[2:]
    i = b.find(CRLF + CRLF)
    if i < 0:
        return b, b""
    return b[:i + 2], b[i + 4:]


def _ctype_raw(hdr):
    m = re.search(rb"(?im)^content-type:[ \t]*([^;\s]+)"
                  rb"((?:[^\r\n]|\r\n[ \t])*)", hdr)
    if not m:
        return b"text/plain", b""
    return m.group(1).lower(), m.group(2)


def raw_children(ent):
    """The child entities (bytes) of a multipart or message/rfc822
    entity, as cut by its boundary; [] for a leaf."""
    hdr, body = split_entity(ent)
    ct, params = _ctype_raw(hdr)
    if ct == b"message/rfc822":
        return [body]
    if not ct.startswith(b"multipart/"):
        return []
    m = re.search(rb'(?i)boundary="?([^";\r\n]+)"?', params)
    if not m:
        return []
    bnd = re.escape(m.group(1))
    delim = re.compile(rb"(?:\r\n|\A)--" + bnd + rb"(--)?[ \t]*(?:\r\n|\Z)")
    out, pos, started = [], 0, False
    for d in delim.finditer(body):
        if started:
            out.append(body[pos:d.start()])
        started = True
        pos = d.end()
        if d.group(1):
            break
    return out


def raw_part(msg, path):
    """The bytes of the entity at IMAP part number path ("2", "2.1")."""
    ent = msg
    for num in path.split("."):
        hdr, _ = split_entity(ent)
        if _ctype_raw(hdr)[0] == b"message/rfc822":
            ent = raw_children(ent)[0]
            hdr, _ = split_entity(ent)
        kids = raw_children(ent)
        if _ctype_raw(hdr)[0].startswith(b"multipart/"):
            ent = kids[int(num) - 1]
        elif num != "1":
            raise KeyError(path)
    return ent


def email_part(m, path):
    for num in path.split("."):
        if m.get_content_type() == "message/rfc822":
            m = m.get_payload()[0]
        if m.is_multipart():
            m = m.get_payload()[int(num) - 1]
        elif num != "1":
            raise KeyError(path)
    return m


def _top_paths(msg):
    """Paths of the direct children of a multipart message."""
    return ["%d" % (i + 1) for i in range(len(raw_children(msg)))]


def _decoded(part):
    try:
        d = part.get_payload(decode=True)
    except Exception:
        d = None
    return d or b""


def _deny_text(part):
    t = _decoded(part)
    return t.decode("utf-8", "replace")


def header_line(msg, name):
    """The raw field (with continuation lines) of name, or None."""
    hdr = split_entity(msg)[0]
    m = re.search(rb"(?im)^" + re.escape(name.encode()) +
                  rb":[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", hdr)
    return m.group(0) if m else None


def check_output(entry, orig, out, exp=None):
    """Problems of a rewritten message against the entry's expectation
    ([] if none).  exp: one alternative (default: the entry's, or the
    first that fits)."""
    if exp is None:
        best = None
        for e in entry.alternatives():
            if e["verdict"] != "changed":
                continue
            p = check_output(entry, orig, out, e)
            if not p:
                return []
            if best is None or len(p) < len(best):
                best = p
        return best if best is not None else ["no rewrite expected"]
    rw = exp.get("rewrite") or {}
    p = []
    for a in rw.get("absent", []):
        if a in out:
            p.append("the output still holds %r" % a[:40])
    try:
        m = email.message_from_bytes(out, policy=email.policy.default)
    except Exception as ex:  # the parser is lenient: should not happen
        return p + ["the output does not parse: %r" % ex]
    if "exact" in rw:
        if out != rw["exact"]:
            p.append("output differs from the expected bytes:\n got %r\n "
                     "want %r" % (out[:600], rw["exact"][:600]))
        return p
    if rw.get("deny"):
        return p + _check_deny(orig, out, m)
    if exp.get("any_path"):
        if DENY_MARK.encode() not in out:
            p.append("no deny text in the output")
        return p
    return p + _check_parts(rw, orig, out, m)


def _check_deny(orig, out, m):
    p = []
    if m.is_multipart() or m.get_content_type() != "text/plain":
        p.append("deny message is %s, not a text/plain message"
                 % m.get_content_type())
    for name in KEPT:
        if header_line(out, name) != header_line(orig, name):
            p.append("deny message: %s is %r, was %r" % (
                name, header_line(out, name), header_line(orig, name)))
    for name in ("X-Mailer", "X-Campaign-Tracker"):
        if header_line(out, name) is not None:
            p.append("deny message keeps %s" % name)
    if DENY_MARK not in _deny_text(m):
        p.append("deny message without the deny text: %r" % out[-400:])
    return p


def _check_parts(rw, orig, out, m):
    p = []
    ohdr, _ = split_entity(orig)
    nhdr, _ = split_entity(out)
    rm = rw.get("removed_header")
    if rm is not None:
        if rm in nhdr:
            p.append("header %r not removed" % rm)
        if ohdr.replace(rm + CRLF, b"", 1) != nhdr:
            p.append("top-level header changed beyond removing %r:\n %r\n"
                     " %r" % (rm, ohdr, nhdr))
    elif ohdr != nhdr:
        p.append("top-level header changed:\n %r\n %r" % (ohdr, nhdr))
    states = dict(rw.get("parts", {}))
    if len(raw_children(orig)) != len(raw_children(out)):
        p.append("%d parts instead of %d" % (len(raw_children(out)),
                                             len(raw_children(orig))))
    for path in _top_paths(orig):
        if not any(s == path or s.startswith(path + ".") for s in states):
            states[path] = "kept"
    try:
        om = email.message_from_bytes(orig, policy=email.policy.default)
    except Exception as ex:
        return p + ["the original does not parse: %r" % ex]
    for path, state in sorted(states.items()):
        try:
            rpart = raw_part(out, path)
            epart = email_part(m, path)
            opart = raw_part(orig, path)
            eorig = email_part(om, path)
        except (KeyError, IndexError):
            p.append("part %s missing in the output" % path)
            continue
        if state == "kept":
            if rpart != opart:
                p.append("part %s changed: %r... -> %r..." % (
                    path, opart[:120], rpart[:120]))
        elif state == "stripped":
            if epart.is_multipart() or epart.get_content_type() != \
                    "text/plain":
                p.append("part %s is %s, not a text/plain deny part" % (
                    path, epart.get_content_type()))
            if DENY_MARK not in _deny_text(epart):
                p.append("part %s has no deny text: %r" % (path,
                                                            rpart[:300]))
            if epart.get_filename():
                p.append("stripped part %s still has a file name %r" % (
                    path, epart.get_filename()))
            od = _decoded(eorig)
            if len(od) >= 16 and od in out:
                p.append("part %s: the original content is still there"
                         % path)
        elif state.startswith("locked:"):
            want = state.split(":", 1)[1]
            if epart.get_content_type() != LOCKED_TYPE:
                p.append("part %s is %s, not %s" % (
                    path, epart.get_content_type(), LOCKED_TYPE))
            if epart.get_filename() != want:
                p.append("locked part %s is named %r, not %r" % (
                    path, epart.get_filename(), want))
            d = _decoded(epart)
            od = _decoded(eorig)
            if not d:
                p.append("locked part %s is empty" % path)
            elif not d.startswith(LOCK_MAGIC):
                p.append("locked part %s does not start with %r: %r" % (
                    path, LOCK_MAGIC, d[:16]))
            elif od and (d == od or od in d or od[:64] in d):
                p.append("locked part %s holds the original in clear"
                         % path)
        else:
            raise ValueError(state)
    return p


# ---- the offline mode -------------------------------------------------------

class Offline:
    """The result of one `imapgwd -S` run."""

    def __init__(self, cmd, rc, stdout, stderr, out, secs):
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.out = out              # bytes of -o OUT, None if not written
        self.secs = secs
        self.report = parse_json(stdout)

    def why(self):
        return "%s\n  exit %s after %.1fs\n  stdout: %r\n  stderr: %r" % (
            " ".join(self.cmd), self.rc, self.secs, self.stdout[:600],
            self.stderr[-1500:])


def parse_json(b):
    """The JSON report in stdout (the whole of it, or the outermost
    {...}), or None."""
    import json
    try:
        return json.loads(b)
    except ValueError:
        pass
    i, j = b.find(b"{"), b.rfind(b"}")
    if 0 <= i < j:
        try:
            return json.loads(b[i:j + 1])
        except ValueError:
            return None
    return None


def offline_scan(conf, c, entry, kind="fetch", tag="1", timeout=120,
                 binary=None):
    """imapgwd -f conf -a ACTION -S FILE --json -o OUT [-k append]."""
    src = os.path.join(c.path, entry.name + ".eml")
    outdir = os.path.join(c.path, "out")
    os.makedirs(outdir, exist_ok=True)
    out = os.path.join(outdir, "%s.%s.%s" % (entry.name, kind, tag))
    if os.path.exists(out):
        os.unlink(out)
    cmd = [binary or gateway.IMAPGWD, "-f", conf, "-a", entry.action,
           "-S", src, "--json", "-o", out]
    if kind == "append":
        cmd += ["-k", "append"]
    t = time.time()
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        rc, so, se = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as ex:
        rc, so, se = "timeout", ex.stdout or b"", ex.stderr or b""
    except OSError as ex:           # e.g. the binary is being rebuilt
        rc, so, se = "cannot run: %s" % ex, b"", b""
    secs = time.time() - t
    data = None
    if os.path.exists(out):
        with open(out, "rb") as f:
            data = f.read()
    return Offline(cmd, rc, so, se, data, secs)


_offline_cache = {}


def offline_config(c):
    """The offline config of the corpus (written once)."""
    if "conf" not in _offline_cache:
        _offline_cache["conf"] = c.write_offline_config()
    return _offline_cache["conf"]


def offline_runs(c, jobs, workers=None):
    """{(name, kind, tag): Offline} for jobs [(entry, kind, tag)], run in
    parallel; results are kept for the process, so that the gateway tests
    compare with the runs test_pipeline.py made."""
    import concurrent.futures
    conf = offline_config(c)
    todo = [j for j in jobs if (j[0].name, j[1], j[2]) not in _offline_cache]
    # the slow ones first, so that they do not end the run alone
    todo.sort(key=lambda j: (not j[0].heavy, not j[0].slow))
    n = workers or max(2, os.cpu_count() or 2)
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        futs = {ex.submit(offline_scan, conf, c, e, kind, tag):
                (e.name, kind, tag) for e, kind, tag in todo}
        for f in concurrent.futures.as_completed(futs):
            _offline_cache[futs[f]] = f.result()
    return {(e.name, kind, tag): _offline_cache[e.name, kind, tag]
            for e, kind, tag in jobs}


def cached_run(name, kind="fetch", tag="1"):
    return _offline_cache.get((name, kind, tag))


def append_outcome(entry):
    """"reject", "clean" or "either" for an upload of entry."""
    outs = set()
    for a in entry.alternatives():
        v = a.get("append", {}).get("verdict", a["verdict"])
        outs.add("reject" if v == "changed" else v)
    return outs.pop() if len(outs) == 1 else "either"


def may_be_clean(entry):
    return any(a["verdict"] == "clean" for a in entry.alternatives())


def must_change(entry):
    return all(a["verdict"] == "changed" for a in entry.alternatives())


def expected_rc(entry, rep, kind="fetch"):
    """The exit codes the offline mode may give for this entry (0 clean,
    1 policy acted, 2 scan error), judged by the report when the entry
    allows more than one outcome."""
    errs = rep is not None and "error" in _stage_list(rep)
    verdict = rep.get("verdict") if rep else None
    if verdict == "clean":
        return {0}
    if verdict in ("changed", "reject"):
        return {1, 2} if errs else {1}
    alts = entry.alternatives()
    if all(a["verdict"] == "clean" for a in alts):
        return {0}
    return {0, 1, 2}


# ---- checking the corpus itself ---------------------------------------------

def self_check(c):
    """Problems of the corpus itself: every message parses, the
    detected types and archives are what the expectations assume, and
    libclamav (clamscan) finds what the signatures should find."""
    p = []
    for e in c.entries:
        try:
            m = email.message_from_bytes(e.data, policy=email.policy.default)
            if m.defects:
                p.append("%s: parser defects %r" % (e.name, m.defects))
        except Exception as ex:
            p.append("%s: does not parse: %r" % (e.name, ex))
    tmp = tempfile.mkdtemp(dir=c.path)
    try:
        files = {"pdf": minimal_pdf(), "pe": minimal_pe(), "png": png()}
        for k, data in files.items():
            with open(os.path.join(tmp, k), "wb") as f:
                f.write(data)
        r = subprocess.run(["file", "-b", "--mime-type"] +
                           [os.path.join(tmp, k) for k in files],
                           stdout=subprocess.PIPE)
        types = r.stdout.decode().split()
        want = ["application/pdf", PE_TYPES, "image/png"]
        for k, t, w in zip(files, types, want):
            if t not in _as_set(w):
                p.append("file --mime-type of the %s: %s" % (k, t))
        # archives
        for name, member in (("eicar-zip", "eicar.com"),
                             ("exe-in-zip", "setup.exe")):
            z = _attachment(c.get(name))
            with zipfile.ZipFile(io.BytesIO(z)) as zf:
                if zf.testzip() is not None or member not in zf.namelist():
                    p.append("%s: bad ZIP %r" % (name, zf.namelist()))
        z = _attachment(c.get("zip-encrypted"))
        zp = os.path.join(tmp, "enc.zip")
        with open(zp, "wb") as f:
            f.write(z)
        r = subprocess.run(["unzip", "-P", "secret", "-p", zp],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if not r.stdout.startswith(b"top secret"):
            p.append("zip-encrypted: unzip -P secret failed: %r" % r.stderr)
        with zipfile.ZipFile(io.BytesIO(z)) as zf:
            if not zf.infolist()[0].flag_bits & 1:
                p.append("zip-encrypted: member not encrypted")
        z = _attachment(c.get("zip-bomb"))
        with zipfile.ZipFile(io.BytesIO(z)) as zf:
            if zf.infolist()[0].file_size != 50 << 20:
                p.append("zip-bomb: member size %d" %
                         zf.infolist()[0].file_size)
        # signatures: clamscan with the corpus database on the attachments
        if shutil.which("clamscan"):
            paths = [os.path.join(TESTFILES, fn) for fn, _, _ in c.testfiles]
            ep = os.path.join(tmp, "eicar")
            with open(ep, "wb") as f:
                f.write(EICAR)
            r = subprocess.run(["clamscan", "--no-summary", "-d", c.sigdir,
                                ep] + paths, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            found = r.stdout.decode()
            for path in [ep] + paths:
                if not re.search(re.escape(path) + r": \S+ FOUND", found):
                    p.append("clamscan does not find %s with the corpus "
                             "database:\n%s" % (path, found))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return p


def _attachment(e, path="2"):
    m = email.message_from_bytes(e.data, policy=email.policy.default)
    return email_part(m, path).get_payload(decode=True)


def dovecot_check(c, d, user):
    """Dovecot accepts every message and serves it byte for byte."""
    p = []
    uids = d.append(user, [e.data for e in c.entries], mailbox="Corpus")
    bodies = {}
    cx = d.connect(user)
    try:
        from dovecot import fetch_all_bodies
        bodies = fetch_all_bodies(cx, "Corpus")
    finally:
        cx.logout()
    for e, uid in zip(c.entries, uids):
        if bodies.get(uid) != e.data:
            p.append("%s: Dovecot serves other bytes" % e.name)
    if len(uids) != len(c.entries):
        p.append("Dovecot stored %d of %d" % (len(uids), len(c.entries)))
    return p


def describe(c):
    """The corpus list with expectations, one line each."""
    out = []
    for e in c.entries:
        alts = []
        for x in e.alternatives():
            rw = x.get("rewrite") or {}
            shape = ("deny" if rw.get("deny") else "exact" if "exact" in rw
                     else ",".join("%s=%s" % kv for kv in
                                   sorted(rw.get("parts", {}).items()))
                     if rw else "")
            alts.append("%s/%s [%s] %s" % (
                x["verdict"], "|".join(sorted(_as_set(x["action"]))),
                ",".join(sorted(x["stages"])), shape))
        out.append("%-28s %-10s %8d  %s%s" % (
            e.name, e.action, len(e.data), " OR ".join(alts),
            ("  -- " + e.note) if e.note else ""))
    return "\n".join(out)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="build and check the corpus")
    ap.add_argument("--keep", help="build into this directory and keep it")
    ap.add_argument("--dovecot", action="store_true",
                    help="also store it in a throwaway Dovecot (as root)")
    a = ap.parse_args(argv)
    if a.keep:
        c = build(a.keep)
    else:
        c = shared()
    print(describe(c))
    probs = self_check(c)
    if a.dovecot:
        import dovecot as dmod
        d = dmod.Dovecot(users={"corpus": "secret"}).start()
        try:
            probs += dovecot_check(c, d, "corpus")
        finally:
            d.stop()
    for x in probs:
        print("PROBLEM:", x)
    print("%d entries, %d problems, in %s" % (len(c.entries), len(probs),
                                              c.path))
    return 1 if probs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
