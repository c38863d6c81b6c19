"""Every message fetched through the gateway is judged (issue 3, item 2).

A mailbox of clean messages (mailgen: 8-bit, long lines, attachments,
IMAP-looking lines; and a 4 MB multipart), EICAR-infected messages (EICAR
as a base64 attachment of a multipart, EICAR as the whole text of a
single-part message, EICAR among 1 MB attachments of a 3 MB multipart) is
fetched through the gateway with a raw client, imaplib, mbsync, fetchmail
and curl.  Clean messages arrive byte-identical to a direct fetch (the whole
FETCH response, not only the literal); infected ones arrive sanitized:

- attachment: the infected part is replaced by a text/plain part whose text
  names the virus, every other part (and the top-level header) is
  byte-identical;
- body: a deny message that keeps Subject/From/To/Cc/Date/Message-ID.

RFC822.SIZE, BINARY.SIZE[], BODYSTRUCTURE and BODY in the same response
describe the sanitized message: they are compared with what Dovecot itself
says about the sanitized bytes (appended to a scratch mailbox).  Rewrites
are deterministic.  Scanner failures and oversize messages are never
passed as if scanned.
"""

import base64
import imaplib
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import mailgen
from clients import mbsync_pull
from dovecot import free_port
from gateway import (EICAR, VIRUS_NAME, eicar_attachment_message,
                     eicar_body_message, large_multipart_message, mime_parts,
                     policy)
from rawimap import RawIMAP, fetch_dict, norm_structure

pytestmark = pytest.mark.gateway

PW = "secret"
USER = "scanfetch"
EICAR_B64 = base64.b64encode(EICAR)[:60]
VIRUS_RX = re.compile(re.escape(VIRUS_NAME).encode())

# item specs that fetch the whole message, and the item name answered
WHOLE = [("BODY.PEEK[]", b"BODY[]"), ("BODY[]", b"BODY[]"),
         ("RFC822", b"RFC822"), ("BINARY.PEEK[]", b"BINARY[]"),
         ("BINARY[]", b"BINARY[]")]


# ---- the mailbox ---------------------------------------------------------------

class Box:
    """The seeded mailbox: uid -> (kind, original bytes as stored)."""

    def __init__(self):
        self.kind = {}
        self.orig = {}

    def uids(self, *kinds):
        return sorted(u for u, k in self.kind.items()
                      if not kinds or k in kinds)

    @property
    def clean(self):
        return self.uids("clean", "large")

    @property
    def infected(self):
        return self.uids("att", "body", "large-att")


def _seed(dovecot, user):
    clean = mailgen.messages(6, seed=31)
    plan = [("clean", clean[0]), ("att", eicar_attachment_message(1)),
            ("clean", clean[1]), ("body", eicar_body_message(2)),
            ("clean", clean[2]), ("clean", clean[3]),
            ("large", large_multipart_message(10, 4 << 20)),
            ("att", eicar_attachment_message(3, pad=20000)),
            ("clean", clean[4]),
            ("large-att", large_multipart_message(11, 3 << 20,
                                                  infected=True)),
            ("clean", clean[5]), ("body", eicar_body_message(4))]
    c = RawIMAP(dovecot.port, timeout=60)
    try:
        c.login(user, PW)
        for _, m in plan:
            c.append("INBOX", m, literal_plus=True)
    finally:
        c.logout()
    stored = dovecot.fetch_bodies(user)
    box = Box()
    for uid, (kind, m) in zip(sorted(stored), plan):
        box.kind[uid] = kind
        box.orig[uid] = stored[uid]
        assert stored[uid] == mailgen.normalize(m)
    return box


@pytest.fixture(scope="module")
def box(dovecot):
    return _seed(dovecot, USER)


def _session(port, user=USER):
    c = RawIMAP(port, timeout=60)
    c.login(user, PW)
    c.command("EXAMINE INBOX")
    return c


def uid_fetch(c, uids, items):
    """{uid: Response} of UID FETCH uids (items)."""
    st, rs = c.command("UID FETCH %s (UID %s)" %
                       (",".join(map(str, uids)), items))
    out = {}
    for r in rs:
        if b" FETCH " not in r.line[:30]:
            continue
        out[int(fetch_dict(r)[b"UID"])] = r
    assert sorted(out) == sorted(uids), (st, rs[:3])
    return out


def _boundary(msg):
    m = re.search(rb'boundary="([^"]+)"', msg.split(b"\r\n\r\n", 1)[0])
    return m.group(1) if m else None


def _header_lines(msg):
    head = msg.split(b"\r\n\r\n", 1)[0]
    return re.findall(rb"(?m)^[A-Za-z-]+:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*",
                      head)


def _field(msg, name):
    for ln in _header_lines(msg):
        if ln.lower().startswith(name.lower() + b":"):
            return ln
    return None


def assert_sanitized(kind, orig, got, what=""):
    """got is the sanitized form of orig (a virus of the test database)."""
    assert EICAR not in got, "EICAR passed %s: %r" % (what, got[:300])
    assert EICAR_B64 not in got, "base64 EICAR passed %s" % what
    assert VIRUS_RX.search(got), \
        "no deny message naming %s %s: %r" % (VIRUS_NAME, what, got[-600:])
    if kind in ("att", "large-att"):
        b = _boundary(orig)
        po, pg = mime_parts(orig, b), mime_parts(got, b)
        assert len(po) == len(pg), (what, len(po), len(pg), got[:2000])
        # which part held EICAR
        bad = [i for i, p in enumerate(po)
               if EICAR_B64 in p or EICAR in p]
        assert len(bad) == 1, bad
        for i, (a, g) in enumerate(zip(po, pg)):
            if i in bad:
                continue
            assert a == g, "part %d changed %s: %r ... vs %r ..." % (
                i, what, a[:200], g[:200])
        rep = pg[bad[0]]
        rhead = rep.split(b"\r\n\r\n", 1)[0]
        assert re.search(rb"(?im)^Content-Type:\s*text/plain", rhead), \
            (what, rep[:400])
        assert VIRUS_RX.search(rep), (what, rep)
    else:
        assert kind == "body"
        for name in (b"Subject", b"From", b"To", b"Cc", b"Date",
                     b"Message-ID"):
            assert _field(got, name) == _field(orig, name), \
                (what, name, _field(got, name), _field(orig, name))
        ct = _field(got, b"Content-Type")
        assert ct is None or re.match(rb"(?i)Content-Type:\s*text/plain", ct)


# ---- byte-identity of clean messages ------------------------------------------

def test_clean_fetch_responses_byte_identical(gw, dovecot, box):
    """For clean messages the gateway is invisible: every FETCH response,
    all items, every byte, is what Dovecot sends."""
    specs = ["BODY.PEEK[]", "RFC822.SIZE BODYSTRUCTURE BODY.PEEK[]",
             "RFC822", "BODY[]", "BINARY.PEEK[]",
             "BINARY.SIZE[] BODY ENVELOPE BINARY[] FLAGS"]
    g, d = _session(gw.port()), _session(dovecot.port)
    try:
        for spec in specs:
            rg = uid_fetch(g, box.clean, spec)
            rd = uid_fetch(d, box.clean, spec)
            for uid in box.clean:
                assert rg[uid].parts == rd[uid].parts, \
                    "%s of clean uid %d differs: %r vs %r" % (
                        spec, uid, rg[uid], rd[uid])
    finally:
        g.logout()
        d.logout()


# ---- infected messages ------------------------------------------------------

def _reference(dovecot, msg):
    """What Dovecot says about msg itself: RFC822.SIZE, BODYSTRUCTURE,
    BODY, BINARY.SIZE[] of msg appended to a scratch mailbox."""
    c = RawIMAP(dovecot.port, timeout=60)
    try:
        c.login("scanref", PW)
        c.append("INBOX", msg, literal_plus=True)
        st, rs = c.command("EXAMINE INBOX")
        n = [int(r.line.split()[1]) for r in rs
             if r.line.rstrip().endswith(b"EXISTS")][0]
        st, rs = c.command("FETCH %d (RFC822.SIZE BODYSTRUCTURE BODY "
                           "BODY.PEEK[])" % n)
        d = fetch_dict(rs[0])
        assert d[b"BODY[]"] == msg, "Dovecot changed the sanitized message"
        return d
    finally:
        c.logout()


def test_infected_sanitized_with_consistent_items(gw, dovecot, box):
    """FETCH (RFC822.SIZE BODYSTRUCTURE BODY BODY.PEEK[]) of an infected
    message: the literal is sanitized, RFC822.SIZE is its length and
    BODYSTRUCTURE/BODY are what Dovecot computes for the sanitized bytes
    (the stripped part is TEXT PLAIN)."""
    g = _session(gw.port())
    try:
        rs = uid_fetch(g, box.infected,
                       "RFC822.SIZE BODYSTRUCTURE BODY BODY.PEEK[]")
    finally:
        g.logout()
    for uid in box.infected:
        kind = box.kind[uid]
        d = fetch_dict(rs[uid])
        got = d[b"BODY[]"]
        assert_sanitized(kind, box.orig[uid], got, "uid %d" % uid)
        assert int(d[b"RFC822.SIZE"]) == len(got), (uid, d[b"RFC822.SIZE"])
        ref = _reference(dovecot, got)
        assert int(ref[b"RFC822.SIZE"]) == len(got)
        assert norm_structure(d[b"BODYSTRUCTURE"]) == \
            norm_structure(ref[b"BODYSTRUCTURE"]), \
            "BODYSTRUCTURE of uid %d (%s) does not describe the sanitized " \
            "message:\n gateway: %r\n dovecot: %r" % (
                uid, kind, d[b"BODYSTRUCTURE"], ref[b"BODYSTRUCTURE"])
        assert norm_structure(d[b"BODY"]) == norm_structure(ref[b"BODY"]), \
            (uid, d[b"BODY"], ref[b"BODY"])
        if kind == "att":
            # the stripped part (2) shows as TEXT PLAIN
            part2 = d[b"BODYSTRUCTURE"][1]
            assert [bytes(x).upper() for x in part2[:2]] == \
                [b"TEXT", b"PLAIN"], part2


@pytest.mark.parametrize("spec,name", WHOLE, ids=[w[0] for w in WHOLE])
def test_every_whole_message_item_is_sanitized(gw, dovecot, box, spec, name):
    """BODY[], BODY.PEEK[], RFC822, BINARY[]: infected ones sanitized
    (against the server's own bytes for that item), clean ones identical;
    BINARY[] with BINARY.SIZE[], the others with RFC822.SIZE: the size
    matches the literal, before or after it in the response."""
    size = "BINARY.SIZE[]" if name == b"BINARY[]" else "RFC822.SIZE"
    sname = size.encode()
    g, dc = _session(gw.port()), _session(dovecot.port)
    try:
        for order in ("%s %s" % (size, spec), "%s %s" % (spec, size)):
            rg = uid_fetch(g, box.uids(), order)
            rd = uid_fetch(dc, box.uids(), order)
            for uid in box.uids():
                dg, dd = fetch_dict(rg[uid]), fetch_dict(rd[uid])
                got, direct = dg[name], dd[name]
                assert int(dg[sname]) == len(got), \
                    (order, uid, dg[sname], len(got))
                if uid in box.clean:
                    assert rg[uid].parts == rd[uid].parts, (order, uid)
                else:
                    assert_sanitized(box.kind[uid], direct, got,
                                     "%s uid %d" % (order, uid))
    finally:
        g.logout()
        dc.logout()


def test_same_infected_message_same_bytes(gw, box):
    """Deterministic rewrite: the same message fetched twice in one
    session and again in another session gives the same bytes."""
    seen = {}
    for _ in range(2):
        g = _session(gw.port())
        try:
            for _ in range(2):
                rs = uid_fetch(g, box.infected, "BODY.PEEK[]")
                for uid, r in rs.items():
                    seen.setdefault(uid, set()).add(fetch_dict(r)[b"BODY[]"])
        finally:
            g.logout()
    for uid, versions in seen.items():
        assert len(versions) == 1, \
            "uid %d (%s) rewritten differently on each fetch" % (
                uid, box.kind[uid])


def test_imaplib_fetch(gw, dovecot, box):
    """Python imaplib through the gateway: RFC822 of every message."""
    c = imaplib.IMAP4("127.0.0.1", gw.port(), timeout=60)
    try:
        c.login(USER, PW)
        typ, data = c.select("INBOX", readonly=True)
        assert typ == "OK"
        typ, data = c.uid("FETCH", "1:*", "(UID RFC822.SIZE RFC822)")
        assert typ == "OK", data
        got = {}
        for item in data:
            if isinstance(item, tuple):
                m = re.search(rb"UID (\d+)", item[0])
                s = re.search(rb"RFC822\.SIZE (\d+)", item[0])
                got[int(m.group(1))] = item[1]
                assert int(s.group(1)) == len(item[1]), item[0]
        c.logout()
    finally:
        try:
            c.shutdown()
        except Exception:
            pass
    assert sorted(got) == box.uids()
    for uid in box.uids():
        if uid in box.clean:
            assert got[uid] == box.orig[uid], uid
        else:
            assert_sanitized(box.kind[uid], box.orig[uid], got[uid],
                             "imaplib uid %d" % uid)


def test_section_and_partial_fetches_never_leak(gw, dovecot, box):
    """DESIGN: partial and section fetches never let unscanned content
    through; a client that asks for BODY[2], BODY[TEXT], RFC822.TEXT,
    BINARY[2] or BODY[]<0.n> of an infected message never sees EICAR."""
    g = _session(gw.port())
    leaks = []
    try:
        for uid in box.uids("att", "body"):
            for spec in ("BODY.PEEK[TEXT]", "RFC822.TEXT", "BODY.PEEK[1]",
                         "BODY.PEEK[2]", "BINARY.PEEK[1]", "BINARY.PEEK[2]",
                         "BODY.PEEK[]<0.100000>", "BODY.PEEK[2]<0.40>"):
                st, rs = g.command("UID FETCH %d (%s)" % (uid, spec),
                                   check=False)
                for r in rs:
                    for lit in r.literals:
                        if EICAR in lit or EICAR_B64 in lit or \
                                EICAR[:40] in lit:
                            leaks.append((uid, box.kind[uid], spec))
    finally:
        g.logout()
    assert not leaks, "infected content passed in section/partial " \
        "fetches: %s" % leaks


# ---- real clients -------------------------------------------------------------

def _need(tool):
    if shutil.which(tool) is None:
        pytest.fail("%s is not installed (make deps installs it)" % tool)


def _via_gateway(gw, box):
    """{uid: BODY[]} through the gateway, each checked."""
    g = _session(gw.port())
    try:
        rs = uid_fetch(g, box.uids(), "BODY.PEEK[]")
    finally:
        g.logout()
    out = {u: fetch_dict(r)[b"BODY[]"] for u, r in rs.items()}
    for uid in box.uids():
        if uid in box.clean:
            assert out[uid] == box.orig[uid]
        else:
            assert_sanitized(box.kind[uid], box.orig[uid], out[uid])
    return out


def _lf(b):
    return b.replace(b"\r\n", b"\n")


def _check_client_result(name, files, box, via):
    """files: the messages a client stored, LF line ends (client's own
    additions removed).  They must be the gateway's sanitized/clean
    messages, one each, and nothing infected."""
    for f, b in files.items():
        assert EICAR not in b and EICAR_B64 not in b, \
            "%s stored EICAR in %s" % (name, f)
    want = sorted(mailgen.sha(_lf(via[u])) for u in box.uids())
    got = sorted(mailgen.sha(b) for b in files.values())
    assert len(got) == len(want), (name, len(got), len(want))
    if got != want:
        bad = []
        byhash = {mailgen.sha(_lf(via[u])): u for u in box.uids()}
        for f, b in files.items():
            if mailgen.sha(b) not in byhash:
                bad.append((f, b[:300]))
        pytest.fail("%s stored messages the gateway did not deliver "
                    "(or changed them): %r" % (name, bad[:3]))
    n_denied = sum(1 for b in files.values() if VIRUS_RX.search(b))
    assert n_denied == len(box.infected), (name, n_denied)


def test_mbsync_sync_result(gw, box, tmp_path):
    via = _via_gateway(gw, box)
    files = mbsync_pull(tmp_path, gw.port(), USER, PW, timeout=60)
    _check_client_result("mbsync", files, box, via)


def test_fetchmail_result(gw, box, tmp_path):
    _need("fetchmail")
    via = _via_gateway(gw, box)
    out = tmp_path / "out"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        "poll 127.0.0.1 service %d protocol IMAP auth password timeout 60\n"
        '  user "%s" there with password "%s" is "root" here\n'
        "  options keep fetchall sslproto '' no rewrite\n"
        "  mda \"/bin/sh -c 'cat > %s/m.$$'\"\n" % (gw.port(), USER, PW, out))
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path))
    r = subprocess.run(["fetchmail", "-f", str(rc), "--idfile",
                        str(tmp_path / "ids"), "--pidfile",
                        str(tmp_path / "pid")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    files = {}
    for f in os.listdir(out):
        b = (out / f).read_bytes()
        files[f] = re.sub(rb"\AReceived:[^\n]*\n(?:[ \t][^\n]*\n)*", b"", b)
    _check_client_result("fetchmail", files, box, via)


def test_curl_result(gw, box):
    _need("curl")
    via = _via_gateway(gw, box)
    for uid in box.uids():
        r = subprocess.run(
            ["curl", "-sS", "--max-time", "60", "--user", "%s:%s" % (USER, PW),
             "imap://127.0.0.1:%d/INBOX;UID=%d" % (gw.port(), uid)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
        assert r.returncode == 0, (uid, r.stderr)
        assert r.stdout == via[uid], \
            "curl got other bytes for uid %d (%s)" % (uid, box.kind[uid])
        if uid in box.infected:
            assert_sanitized(box.kind[uid], box.orig[uid], r.stdout, "curl")
        else:
            assert r.stdout == box.orig[uid]


# ---- scanner failure and oversize ------------------------------------------

def _one_message_box(dovecot, user, msg):
    """user's INBOX holds exactly msg; returns its stored bytes."""
    c = dovecot.connect(user)
    try:
        c.select("INBOX")
        c.store("1:*", "+FLAGS", r"(\Deleted)")
        c.expunge()
    except imaplib.IMAP4.error:
        pass
    finally:
        c.logout()
    dovecot.append(user, msg)
    bodies = dovecot.fetch_bodies(user)
    assert len(bodies) == 1
    return list(bodies.values())[0]


def _fetch_one(port, user, spec="RFC822.SIZE BODYSTRUCTURE BODY.PEEK[]",
               before_read=None):
    c = RawIMAP(port, timeout=60)
    try:
        c.login(user, PW)
        c.command("EXAMINE INBOX")
        tag = c.tag()
        c.send(("%s FETCH 1 (%s)\r\n" % (tag, spec)).encode())
        if before_read:
            before_read()
        rs = c.read_until_tagged(tag)
        assert rs[-1].line.startswith(tag.encode() + b" OK"), rs
        fr = [r for r in rs if b" FETCH " in r.line[:20]]
        assert len(fr) == 1, rs
        return fetch_dict(fr[0])
    finally:
        c.logout()


def _random_attachment_message(n, size):
    import random
    rng = random.Random(n)
    data = base64.encodebytes(rng.randbytes(size)).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nTo: scanerr@example.org\r\n"
            b"Subject: attachment of %d bytes\r\n"
            b"Message-ID: <scanerr-%d@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n"
            b"--xx\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
            b"--xx\r\nContent-Type: application/octet-stream; name=a.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" % (size, n)
            + data + b"--xx--\r\n")


def _assert_denied(d, orig, what):
    got = d[b"BODY[]"]
    assert got != orig, "%s: the original passed" % what
    assert orig.split(b"\r\n\r\n", 1)[1][:2000] not in got, \
        "%s: the original's body passed" % what
    assert int(d[b"RFC822.SIZE"]) == len(got), (what, d[b"RFC822.SIZE"])
    bs = d[b"BODYSTRUCTURE"]
    assert [bytes(x).upper() for x in bs[:2]] == [b"TEXT", b"PLAIN"], \
        (what, bs)
    assert int(bs[6]) == len(got.split(b"\r\n\r\n", 1)[1]), (what, bs, got)


def _scan_gateway(make_gateway, general=None, antivirus=None):
    act = {"inherit": "IMAP-Server.Standard"}
    if general:
        act["general"] = general
    if antivirus:
        act["antivirus"] = antivirus
    return make_gateway(actions={"err-act": act},
                        policies=[policy("imap-in", free_port(), "dovecot",
                                         action="err-act")],
                        workers=(1, 1, 1))


@pytest.mark.parametrize("on_error", ["deny", "allow"])
def test_unscannable_attachment(make_gateway, dovecot, on_error):
    """antivirus max_file_size 1K and a 100K attachment: the scanner cannot
    judge it; on_error deny gives a deny message, on_error allow passes the
    original and logs that it was not scanned."""
    orig = _one_message_box(dovecot, "scanerr",
                            _random_attachment_message(1, 100 * 1024))
    g = _scan_gateway(make_gateway,
                      antivirus={"max_file_size": "1K", "on_error": on_error})
    off = g.log_offset()
    d = _fetch_one(g.port(), "scanerr")
    if on_error == "deny":
        _assert_denied(d, orig, "max_file_size 1K, on_error deny")
    else:
        assert d[b"BODY[]"] == orig
        m = g.wait_log(r"^.*\b(unscanned|not scanned)\b.*$", since=off)
        assert m, "no log line saying the message passed unscanned:\n" + \
            g.log_since(off)


@pytest.mark.parametrize("on_error", ["deny", "allow"])
def test_scanner_killed_during_fetch(make_gateway, dovecot, on_error):
    """scand is stopped while it holds the message and then killed: the
    client gets a deny message (on_error deny) or the original with a log
    line saying it was not scanned (on_error allow); never a silent pass."""
    orig = _one_message_box(dovecot, "scanerr",
                            _random_attachment_message(2, 30000))
    g = _scan_gateway(make_gateway, antivirus={"on_error": on_error})
    g.expect_crash = True
    scand = g.pids_of("scand")
    assert len(scand) == 1, g.roles()
    off = g.log_offset()

    # stop it first so that the FETCH's scan is queued, then kill it
    os.kill(scand[0], signal.SIGSTOP)
    try:
        d = _fetch_one(g.port(), "scanerr",
                       before_read=lambda: (time.sleep(0.5),
                                            os.kill(scand[0], signal.SIGKILL)))
    finally:
        try:
            os.kill(scand[0], signal.SIGKILL)
        except OSError:
            pass
    if on_error == "deny":
        _assert_denied(d, orig, "scand killed, on_error deny")
    else:
        assert d[b"BODY[]"] == orig
        m = g.wait_log(r"^.*\b(scan error|unscanned|not scanned)\b.*"
                       r"allow.*$", since=off)
        assert m, "no log line saying the message passed unscanned:\n" + \
            g.log_since(off)


@pytest.mark.parametrize("oversize", ["deny", "allow"])
def test_oversize_message(make_gateway, dovecot, oversize):
    """max_email_size 64K and a 100K message: oversize deny gives a deny
    message (sizes consistent); oversize allow passes it unscanned, and the
    log says so."""
    orig = _one_message_box(dovecot, "scanerr",
                            _random_attachment_message(3, 75 * 1024))
    assert 90 * 1024 < len(orig) < 120 * 1024
    g = _scan_gateway(make_gateway,
                      general={"max_email_size": "64K",
                               "oversize": oversize})
    off = g.log_offset()
    d = _fetch_one(g.port(), "scanerr")
    if oversize == "deny":
        _assert_denied(d, orig, "oversize deny")
        assert re.search(rb"(?i)larger|size|oversize", d[b"BODY[]"]), d
    else:
        assert d[b"BODY[]"] == orig
        assert int(d[b"RFC822.SIZE"]) == len(orig)
        m = g.wait_log(r"^.*\boversize\b.*\ballow\b.*$", since=off)
        assert m and re.search(r"unscanned|not scanned", m.group(0)), \
            g.log_since(off)
