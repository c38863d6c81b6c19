"""Anomalies (issue 3, item 7): what no real server sends, from a scripted
fake server (regress/lib/fakeimap.py), and what no sane client sends.

A malformed server response, an over-long line or a literal larger than
allowed ends the session: the client gets a `* BYE` line and then EOF, the
gateway logs an `anomaly` line naming it, and nothing of the malformed
response reaches the client (every malformed response carries the marker
GARBAGE; the client must never see it).  Client-side anomalies never reach
the server.
"""

import re
import time

import pytest

import gateway as gwm
from dovecot import free_port
from fakeimap import FakeIMAP, Reply
from gateway import policy
from rawimap import RawIMAP, read_all

pytestmark = pytest.mark.gateway

MARK = b"GARBAGE"
VALID = b"* 1 FETCH (FLAGS (\\Seen) UID 1)\r\n"


def _client_rx(lport):
    return r"\bclient=\[?127\.0\.0\.1\]?:%d\b" % lport


def _send_quietly(c, data):
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


class Env:
    def __init__(self, script, action=None, **gwkw):
        self.srv = FakeIMAP(script).start()
        pol = policy("imap-in", free_port(), "fake")
        if action:
            pol["action"] = action
        self.gw = gwm.Gateway(servers={"fake": [self.srv.address]},
                              policies=[pol], **gwkw)
        self.gw.start()

    def stop(self):
        self.gw.stop()
        self.srv.stop()


@pytest.fixture
def env(request):
    made = []

    def make(script, **kw):
        e = Env(script, **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print("\n---- imapgwd log ----\n" + e.gw.log_text()[-8000:])
        log = e.gw.log_text()
        e.stop()
        m = re.search(r"^.*\b(child died|sandbox violation|signal=SIG\w+|"
                      r"AddressSanitizer|runtime error:).*$", log, re.M)
        assert not m, "imapgwd child crashed: %s" % m.group(0)


# ---- malformed server responses ----------------------------------------------

SERVER_CASES = {
    # literal announced, fewer bytes, then the server closes
    "truncated-literal": Reply(VALID + b"* 1 FETCH (BODY[] {50}\r\n" + MARK +
                               b"abc", close=True),
    "unbalanced-parens": VALID + b"* 1 FETCH (FLAGS (\\Seen " + MARK +
    b") UID 1\r\n{tag} OK done\r\n",
    "extra-close-paren": VALID + b"* 1 FETCH (UID 1)) " + MARK +
    b"\r\n{tag} OK done\r\n",
    "bad-literal-marker": VALID + b"* 1 FETCH (BODY[] {12a}\r\n" + MARK +
    b"12345)\r\n{tag} OK done\r\n",
    "nonsync-literal-from-server": VALID + b"* 1 FETCH (BODY[] {7+}\r\n" +
    MARK + b")\r\n{tag} OK done\r\n",
    "literal-above-uint64": VALID + b"* 1 FETCH (BODY[] "
    b"{99999999999999999999}\r\n" + MARK + b")\r\n{tag} OK done\r\n",
    "unterminated-quoted": VALID + b'* 1 FETCH (BODY[] "' + MARK +
    b"\r\n{tag} OK done\r\n",
    "overlong-line": VALID + b"* 1 FETCH (BODY[] \"" + MARK +
    b"x" * 80000 + b"\")\r\n{tag} OK done\r\n",
    "nul-in-line": VALID + b"* OK " + MARK + b"\x00here\r\n{tag} OK done\r\n",
}


@pytest.mark.parametrize("case", sorted(SERVER_CASES))
def test_malformed_server_response(env, case):
    e = env([(rb"FETCH", SERVER_CASES[case])])
    off = e.gw.log_offset()
    c = RawIMAP(e.gw.port())
    lport = c.local_port
    c.login("someone", "pw")
    c.command("SELECT INBOX")
    _send_quietly(c, b"f1 FETCH 1 (FLAGS UID BODY.PEEK[])\r\n")
    data, how = read_all(c)
    c.close()
    assert how in ("eof", "reset"), (how, data[-300:])
    assert MARK not in data, \
        "bytes of the malformed response reached the client: %r" % data[-400:]
    lines = data.split(b"\r\n")
    assert any(ln.startswith(b"* BYE") for ln in lines), \
        "no BYE for the client: %r" % data[-400:]
    # nothing after the BYE, and the valid response before it went out
    assert data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].startswith(b"* BYE"), \
        data[-400:]
    assert VALID in data, data[:400]
    assert b"f1 OK" not in data
    m = e.gw.wait_log(r"^.*\banomaly\b.*%s.*$" % _client_rx(lport),
                      since=off)
    assert m, "no anomaly log line:\n" + e.gw.log_since(off)
    assert "server" in m.group(0), m.group(0)


# ---- client anomalies ----------------------------------------------------------

CLIENT_CASES = {
    "overlong-line": b"a1 NOOP " + MARK + b"x" * 70000,
    "overlong-line-with-lf": b"a1 NOOP " + MARK + b"x" * 70000 + b"\r\n",
    "literal-above-uint64": b"a1 APPEND INBOX {99999999999999999999+}\r\n" +
    MARK + b"\r\n",
    "bad-literal-marker": b"a1 LOGIN {12a}\r\n" + MARK + b"\r\n",
    "literal-too-many-digits": b"a1 APPEND INBOX {0000000000000000000001+}"
    b"\r\n" + MARK + b"\r\n",
}


@pytest.mark.parametrize("case", sorted(CLIENT_CASES))
def test_client_anomaly_ends_session(env, case):
    e = env([])
    off = e.gw.log_offset()
    c = RawIMAP(e.gw.port())
    lport = c.local_port
    c.login("someone", "pw")
    _send_quietly(c, CLIENT_CASES[case])
    data, how = read_all(c)
    c.close()
    assert how in ("eof", "reset"), (how, data[-300:])
    assert re.search(rb"(?m)^\* BYE ", data), data[-300:]
    m = e.gw.wait_log(r"^.*\banomaly\b.*%s.*$" % _client_rx(lport),
                      since=off)
    assert m, "no anomaly log line:\n" + e.gw.log_since(off)
    assert "client" in m.group(0), m.group(0)
    time.sleep(0.2)
    assert MARK not in e.srv.received(), \
        "the anomalous client input reached the server: %r" % \
        e.srv.received()[-300:]


def test_malformed_command_refused_session_goes_on(env):
    """A command the parser cannot read gets a BAD from the gateway (the
    server might read it differently), an anomaly line, and the session
    continues; the server never sees it."""
    e = env([])
    off = e.gw.log_offset()
    c = RawIMAP(e.gw.port())
    lport = c.local_port
    try:
        c.login("someone", "pw")
        st, _ = c.command("FETCH 1 (BODY[" + MARK.decode() + " UID",
                          check=False)
        assert re.match(rb"t\d+ BAD ", st), st
        st, _ = c.command("NOOP")
        assert b" OK" in st
    finally:
        c.logout()
    assert MARK not in e.srv.received()
    m = e.gw.wait_log(r"^.*\banomaly\b.*%s.*$" % _client_rx(lport),
                      since=off)
    assert m, e.gw.log_since(off)


def test_literal_over_max_email_size_not_spooled(env):
    """A FETCH literal larger than max_email_size (64K action) is not
    buffered for scanning: with oversize deny the client gets a deny
    message instead of the 200K body, the session goes on."""
    body = b"Subject: big\r\n\r\n" + (MARK + b"y" * 93 + b"\r\n") * 2000
    resp = b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n" % (len(body),
                                                          len(body)) + \
        body + b")\r\n{tag} OK done\r\n"
    e = env([(rb"FETCH", resp)], action="small",
            actions={"small": {"inherit": "IMAP-Server.Standard",
                               "general": {"max_email_size": "64K",
                                           "oversize": "deny"}}})
    c = RawIMAP(e.gw.port())
    try:
        c.login("someone", "pw")
        st, rs = c.command("FETCH 1 (RFC822.SIZE BODY.PEEK[])")
        lits = [x for r in rs for x in r.literals]
        assert len(lits) == 1
        assert MARK not in lits[0]
        m = re.search(rb"RFC822\.SIZE (\d+)", rs[0].line)
        assert m and int(m.group(1)) == len(lits[0]), rs[0].line[:200]
        st, _ = c.command("NOOP")
        assert b" OK" in st
    finally:
        c.logout()


# ---- referrals ---------------------------------------------------------------

def test_referral_code_removed(env):
    """A [REFERRAL ...] code (RFC 2221) would send the client to another
    server, around the gateway: the gateway removes the code and keeps the
    response, and logs it."""
    e = env([(rb"LOGIN", b"{tag} NO [REFERRAL imap://alice@other.example/] "
                         b"Try elsewhere\r\n")])
    c = RawIMAP(e.gw.port())
    try:
        st, _ = c.command('LOGIN "alice" "secret"', check=False)
        assert st.split()[1:2] == [b"NO"], st
        assert b"REFERRAL" not in st and b"other.example" not in st, st
        assert st.rstrip(b"\r\n").endswith(b"NO Try elsewhere"), st
    finally:
        c.logout()
    assert e.gw.wait_log(r"referral removed", timeout=5), e.gw.log_tail()
