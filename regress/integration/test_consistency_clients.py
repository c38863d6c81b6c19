"""Real clients that look at a message's structure or size first and
fetch it (or parts of it) later, through a gateway that has judged
nothing yet (issue 5, consistency strict):

- mbsync: UID FETCH of UID FLAGS RFC822.SIZE first, BODY.PEEK[] later;
  with MaxSize 1k it propagates a placeholder that states the size it
  was told for messages over the limit, and the whole message for the
  others: the size and the choice follow the sanitized message;
- fetchmail: RFC822.SIZE, then BODY.PEEK[HEADER] and BODY.PEEK[TEXT]
  separately;
- curl: imap://.../INBOX;UID=n;SECTION=2 (or 1) and ;SECTION=HEADER.

What each client stores is the sanitized message (or section): the same
bytes imaplib then gets for BODY[] (BODY[section]) through the same
gateway, and Dovecot's answer for the sanitized bytes stored directly.
Each message is judged once.  The messages are test_consistency.py's.
"""

import imaplib
import os
import re
import shutil
import subprocess

import pytest

import dovecot as dovecot_mod
from clients import mbsync_pull
from rawimap import RawIMAP
from test_consistency import (CLEAN, EICAR, EICAR_B64, EXE_B64, EXE_BYTES,
                              MESSAGES, NAMES, PW, close, fetch1, judged,
                              new_gateway, stop_gateway)

pytestmark = pytest.mark.gateway

USER = "consclient"
REF = "consclref"


def _need(tool):
    if shutil.which(tool) is None:
        pytest.fail("%s is not installed (make deps installs it)" % tool)


def _lf(b):
    return b.replace(b"\r\n", b"\n")


def _no_leak(b, what):
    for bad in (EICAR, EICAR_B64, EXE_BYTES[:60], EXE_B64,
                _lf(EXE_BYTES[:60])):
        assert bad not in b, "%s: %r passed" % (what, bad[:30])


@pytest.fixture(scope="module")
def dove():
    d = dovecot_mod.Dovecot(users={USER: PW, REF: PW})
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def box(dove):
    uids = dove.append(USER, [m for _, m in MESSAGES])
    assert len(uids) == len(MESSAGES)
    return {name: uid for (name, _), uid in zip(MESSAGES, uids)}


@pytest.fixture(scope="module")
def sanitized(dove, box):
    """{name: BODY[]} through a gateway of its own (whole messages)."""
    g = new_gateway(dove)
    try:
        out = _imaplib_bodies(g, box)
    finally:
        stop_gateway(g)
    for name, _ in MESSAGES:
        _no_leak(out[name], name)
    return out


@pytest.fixture(scope="module")
def refsec(dove, sanitized):
    """Dovecot's own answers for the sanitized bytes stored directly:
    {(name, section): bytes} for 1, 2 (where it exists) and HEADER."""
    out = {}
    c = RawIMAP(dove.port, timeout=60)
    try:
        c.login(REF, PW)
        for name in NAMES:
            c.append("INBOX", sanitized[name], literal_plus=True)
        c.command("EXAMINE INBOX")
        for i, name in enumerate(NAMES):
            r, v = fetch1(c, i + 1, ["BODY.PEEK[1]", "BODY.PEEK[2]",
                                     "BODY.PEEK[HEADER]"])
            for sec in ("1", "2", "HEADER"):
                out[(name, sec)] = v.get(("BODY[%s]" % sec).encode())
    finally:
        close(c)
    return out


def _imaplib_bodies(g, box, specs=None):
    """{name: BODY[]} of imaplib UID FETCH through gateway g, or with
    specs ({name: [spec, ...]}) {(name, spec): value}."""
    c = imaplib.IMAP4("127.0.0.1", g.port(), timeout=30)
    out = {}
    try:
        c.login(USER, PW)
        c.select("INBOX", readonly=True)
        for name in NAMES:
            for spec in (specs or {}).get(name, ["BODY.PEEK[]"]):
                typ, data = c.uid("FETCH", str(box[name]), "(%s)" % spec)
                assert typ == "OK", (name, spec, data)
                lit = [d[1] for d in data if isinstance(d, tuple)]
                assert len(lit) == 1, (name, spec, data)
                out[(name, spec) if specs else name] = lit[0]
        c.logout()
    finally:
        try:
            c.shutdown()
        except Exception:
            pass
    return out


def _check_judged_once(g):
    n = judged(g)
    assert n == len(NAMES), \
        "%d 'message judged' lines for %d messages (each should be " \
        "judged once, before the first answer about it)" % (n, len(NAMES))


# ---- mbsync -----------------------------------------------------------------

def _mbsync(g, tmp_path, maxsize=None):
    """Run mbsync against g; returns [stored file bytes] (X-TUID line
    removed), in file name order."""
    return list(mbsync_pull(tmp_path, g.port(), USER, PW,
                            maxsize=maxsize).values())


def test_mbsync(dove, box, sanitized, tmp_path):
    """mbsync (sizes and flags first, bodies later) through a fresh
    gateway stores the sanitized messages, the bytes imaplib then gets."""
    g = new_gateway(dove)
    try:
        files = _mbsync(g, tmp_path)
        via = _imaplib_bodies(g, box)
        _check_judged_once(g)
    finally:
        stop_gateway(g)
    for f in files:
        _no_leak(f, "mbsync")
    assert sorted(files) == sorted(_lf(via[n]) for n in NAMES), \
        "mbsync stored other messages than imaplib's BODY[] through the " \
        "gateway"
    assert all(via[n] == sanitized[n] for n in NAMES)


class _Direct:
    """Dovecot itself in place of a gateway (checks the harness)."""

    def __init__(self, d):
        self.d = d

    def port(self, name=None):
        return self.d.port


def _target(dove, via):
    return new_gateway(dove) if via == "gateway" else _Direct(dove)


def _done(g):
    if not isinstance(g, _Direct):
        stop_gateway(g)


def _expected(via, sanitized):
    """What a client must get: the sanitized messages through the
    gateway, the stored ones from Dovecot itself."""
    return sanitized if via == "gateway" else dict(MESSAGES)


@pytest.mark.parametrize("via", ["dovecot", "gateway"])
def test_mbsync_maxsize(dove, box, sanitized, tmp_path, via):
    """MaxSize 1k: mbsync decides from RFC822.SIZE (asked before any
    body) which messages it propagates whole; the others become a
    placeholder with their header that states the size (in KiB).  Both
    follow the sanitized message (the .exe message is 1240 bytes stored,
    under 1k sanitized).  via dovecot: the same against Dovecot and the
    stored messages (checks the harness)."""
    want = _expected(via, sanitized)
    g = _target(dove, via)
    try:
        files = _mbsync(g, tmp_path, maxsize="1k")
        if via == "gateway":
            _check_judged_once(g)
    finally:
        _done(g)
    small = sorted(_lf(want[n]) for n in NAMES if len(want[n]) <= 1024)
    big = {n: len(want[n]) for n in NAMES if len(want[n]) > 1024}
    whole = sorted(f for f in files if f in small)
    rest = [f for f in files if f not in small]
    if via == "gateway":
        for f in files:
            _no_leak(f, "mbsync MaxSize")
    assert whole == small, \
        "mbsync (MaxSize 1k) propagated %d messages whole, the messages " \
        "of at most 1k are %d: it was told other sizes; the others:\n%s" % (
            len(whole), len(small), "\n".join(repr(f[:300]) for f in rest))
    assert len(rest) == len(big), (len(rest), big, [f[:200] for f in rest])
    heads = {_lf(want[n]).split(b"\n\n", 1)[0]: n for n in big}
    probs = []
    for f in rest:
        h, text = f.split(b"\n\n", 1)
        h = h.replace(b"\nSubject: [placeholder] ", b"\nSubject: ", 1)
        name = heads.get(h)
        if name is None:
            probs.append("a placeholder with a header of no message: %r"
                         % h[:300])
            continue
        m = re.search(rb"size of (\d+)KiB", text)
        if m and int(m.group(1)) != big[name] >> 10:
            probs.append("%s: the placeholder states %s KiB, the message "
                         "is %d bytes" % (name, m.group(1).decode(),
                                          big[name]))
    assert not probs, "\n".join(probs)


# ---- fetchmail --------------------------------------------------------------

FETCHMAIL_CASES = [(via, limit) for via in ("dovecot", "gateway")
                   for limit in (None, 1024)]


@pytest.mark.parametrize("via,limit", FETCHMAIL_CASES,
                         ids=["%s-%s" % (v, "limit%d" % n if n else "all")
                              for v, n in FETCHMAIL_CASES])
def test_fetchmail(dove, box, sanitized, tmp_path, via, limit):
    """fetchmail (RFC822.SIZE, then BODY.PEEK[HEADER] and BODY.PEEK[TEXT]
    separately) through a fresh gateway delivers the sanitized messages;
    with limit 1024 it skips what RFC822.SIZE says is larger: the
    sanitized sizes decide (the .exe message is 1240 bytes stored, 838
    sanitized).  via dovecot: the same against Dovecot and the stored
    messages (checks the harness)."""
    _need("fetchmail")
    want = _expected(via, sanitized)
    g = _target(dove, via)
    try:
        out = tmp_path / "out"
        out.mkdir()
        rc = tmp_path / "fetchmailrc"
        rc.write_text(
            "set no syslog\n"
            "poll 127.0.0.1 service %d protocol IMAP auth password "
            "timeout 30\n"
            '  user "%s" there with password "%s" is "root" here\n'
            "  options keep fetchall sslproto '' no rewrite%s\n"
            "  mda \"/bin/sh -c 'cat > %s/m.$$'\"\n" % (
                g.port(), USER, PW, " limit %d" % limit if limit else "",
                out))
        rc.chmod(0o600)
        env = dict(os.environ, HOME=str(tmp_path))
        r = subprocess.run(["fetchmail", "-v", "-f", str(rc), "--idfile",
                            str(tmp_path / "ids"), "--pidfile",
                            str(tmp_path / "pid")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=env, timeout=90)
        log = r.stdout.decode(errors="replace")
        assert r.returncode == 0, log
        if via == "gateway":
            got = _imaplib_bodies(g, box)
            _check_judged_once(g)
        else:
            got = want
    finally:
        _done(g)
    files = []
    for f in sorted(os.listdir(out)):
        b = (out / f).read_bytes()
        files.append(re.sub(rb"\AReceived:[^\n]*\n(?:[ \t][^\n]*\n)*", b"",
                            b))
    if via == "gateway":
        for f in files:
            _no_leak(f, "fetchmail")
    names = [n for n in NAMES if not limit or len(want[n]) <= limit]
    assert sorted(files) == sorted(_lf(got[n]) for n in names), \
        "fetchmail delivered other messages than imaplib's BODY[] " \
        "through the gateway%s: %d files, want %s" % (
            " of those within the limit" if limit else "", len(files),
            names)
    assert all(got[n] == want[n] for n in NAMES)
    # fetchmail -v: "(H header octets)" and "(B body octets)" per message
    hs = [int(x) for x in re.findall(r"\((\d+) header octets\)", log)]
    bs = [int(x) for x in re.findall(r"\((\d+) body octets\)", log)]
    assert len(hs) == len(bs) == len(names), (hs, bs, names)
    assert sorted(h + b for h, b in zip(hs, bs)) == \
        sorted(len(want[n]) for n in names), \
        "BODY[HEADER] + BODY[TEXT] sizes %s, the messages are %s" % (
            sorted(h + b for h, b in zip(hs, bs)),
            sorted(len(want[n]) for n in names))


# ---- curl sections ----------------------------------------------------------

def _curl(port, url_tail):
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "--user", "%s:%s" % (USER, PW),
         "imap://127.0.0.1:%d/INBOX;%s" % (port, url_tail)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, (url_tail, r.stderr)
    return r.stdout


def test_curl_sections(dove, box, sanitized, refsec):
    """curl ;SECTION=2 (1 for single-part) and ;SECTION=HEADER of every
    message, first thing a fresh gateway sees of it: the sanitized
    message's section, as Dovecot gives it for the sanitized bytes and
    as imaplib gets it through the same gateway afterwards."""
    _need("curl")
    g = new_gateway(dove)
    probs = []
    try:
        got = {}
        secs = {}
        for name in NAMES:
            multi = b"multipart/" in MESSAGES[NAMES.index(name)][1].split(
                b"\r\n\r\n", 1)[0].lower()
            secs[name] = ["2" if multi else "1", "HEADER"]
            for sec in secs[name]:
                got[(name, sec)] = _curl(g.port(), "UID=%d;SECTION=%s" % (
                    box[name], sec))
        n_first = judged(g)
        via = _imaplib_bodies(g, box, specs={
            n: ["BODY.PEEK[%s]" % x for x in secs[n]] for n in NAMES})
        n_after = judged(g)
    finally:
        stop_gateway(g)
    for (name, sec), b in sorted(got.items()):
        _no_leak(b, "curl %s SECTION=%s" % (name, sec))
        want = refsec[(name, sec)]
        if b != want:
            probs.append("curl %s SECTION=%s: %r, the sanitized message's "
                         "section is %r" % (name, sec, b[:200], want[:200]))
        if b != via[(name, "BODY.PEEK[%s]" % sec)]:
            probs.append("curl %s SECTION=%s differs from imaplib's "
                         "BODY[%s] through the gateway" % (name, sec, sec))
        if sec == "HEADER" and \
                not sanitized[name].startswith(b):
            probs.append("curl %s SECTION=HEADER is not the start of the "
                         "sanitized message" % name)
        if name in CLEAN:
            orig = dict(MESSAGES)[name]
            if sec == "HEADER" and not orig.startswith(b):
                probs.append("clean %s: its header changed" % name)
    assert not probs, "\n".join(probs)
    assert n_first == len(NAMES), \
        "%d 'message judged' lines after curl fetched sections of %d " \
        "messages (each must be judged before the first answer)" % (
            n_first, len(NAMES))
    assert n_after == n_first, "judged again: %d" % (n_after - n_first)
