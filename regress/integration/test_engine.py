"""The IMAP engine in front of a real Dovecot (issue 3, items 4-6, 8):
capabilities filtered in all three places and refused commands for what
was removed, ID answered pre-auth and the real client address upstream
(shown by Dovecot's own log with login_trusted_networks), authentication
passing through with the user known to the gateway, pipelining with scans
in flight, IDLE while a scan runs."""

import base64
import os
import re
import select
import signal
import time

import pytest

import dovecot as dovecot_mod
import gateway as gwm
from dovecot import free_port
from fakeimap import FakeIMAP, Reply
from gateway import (EICAR, VIRUS_NAME, eicar_attachment_message,
                     eicar_body_message, large_multipart_message, policy)
from rawimap import RawIMAP, fetch_dict

pytestmark = pytest.mark.gateway

PW = "secret"
FORBIDDEN = re.compile(rb"^(COMPRESS=.*|CATENATE|URLAUTH(=.*)?|STARTTLS|"
                       rb"AUTH=.*-PLUS)$", re.I)
# what a client needs and the gateway must keep when the server offers it
ESSENTIAL = [b"IMAP4rev1", b"LITERAL+", b"SASL-IR", b"ID", b"ENABLE",
             b"IDLE", b"NAMESPACE", b"UIDPLUS", b"UNSELECT", b"MOVE",
             b"BINARY", b"MULTIAPPEND", b"CONDSTORE", b"QRESYNC",
             b"AUTH=PLAIN", b"AUTH=LOGIN"]


def caps_of(line):
    m = re.search(rb"CAPABILITY ([^\]\r\n]*)", line, re.I)
    return m.group(1).split() if m else []


def _client_rx(port, ip="127.0.0.1"):
    return r"\bclient=\[?%s\]?:%d\b" % (re.escape(ip), port)


# ---- capabilities -------------------------------------------------------------

@pytest.fixture(scope="module")
def caps_env(tmp_path_factory):
    """A Dovecot that offers STARTTLS (ssl = yes) and COMPRESS=DEFLATE
    (imap_zlib) besides CATENATE, and a gateway in front of it whose action
    has max_email_size 10M."""
    tmp = tmp_path_factory.mktemp("capsdovecot")
    cert, key = dovecot_mod.make_cert(str(tmp))
    d = dovecot_mod.Dovecot(
        users={"capsuser": PW},
        extra_conf=dovecot_mod.SSL_CONF.format(cert=cert, key=key) +
        dovecot_mod.COMPRESS_CONF)
    d.start()
    g = gwm.Gateway(
        servers={"dovecot": [d.address]},
        actions={"ten": {"inherit": "IMAP-Server.Standard",
                         "general": {"max_email_size": "10M"}}},
        policies=[policy("imap-in", free_port(), "dovecot", action="ten")])
    try:
        g.start()
        yield d, g
    finally:
        g.stop()
        d.stop()


def _caps_everywhere(port):
    """{where: caps} for greeting, CAPABILITY pre-login, LOGIN tagged OK,
    CAPABILITY post-login, AUTHENTICATE PLAIN tagged OK.  (Dovecot leaves
    the code out of the tagged OK when the client asked CAPABILITY before,
    hence a connection for each.)"""
    out = {}
    c = RawIMAP(port)
    try:
        out["greeting"] = caps_of(c.greeting.line)
        st, rs = c.login("capsuser", PW)
        out["login OK"] = caps_of(st)
        st, rs = c.command("CAPABILITY")
        out["capability post-login"] = caps_of(b" ".join(r.line
                                                         for r in rs))
    finally:
        c.logout()
    c = RawIMAP(port)
    try:
        st, rs = c.command("CAPABILITY")
        out["capability pre-login"] = caps_of(b" ".join(r.line for r in rs))
    finally:
        c.logout()
    c = RawIMAP(port)
    try:
        ir = base64.b64encode(b"\0capsuser\0" + PW.encode()).decode()
        st, rs = c.command("AUTHENTICATE PLAIN " + ir)
        out["authenticate OK"] = caps_of(st)
    finally:
        c.logout()
    return out


def test_capabilities_filtered_everywhere(caps_env):
    d, g = caps_env
    direct = _caps_everywhere(d.port)
    via = _caps_everywhere(g.port())
    # what this Dovecot offers and the gateway must remove
    assert b"STARTTLS" in direct["greeting"], direct
    assert b"COMPRESS=DEFLATE" in direct["capability post-login"], direct
    assert b"CATENATE" in direct["login OK"], direct
    for where, caps in via.items():
        assert caps, "no capability list in %s" % where
        bad = [x for x in caps if FORBIDDEN.match(x)]
        assert not bad, "%s offers %s through the gateway" % (where, bad)
        assert caps.count(b"APPENDLIMIT=10485760") == 1, (where, caps)
        for x in caps:
            assert x in direct[where] or x.startswith(b"APPENDLIMIT="), \
                (where, x, "not offered by Dovecot")
        # what clients need was kept
        for x in ESSENTIAL:
            if x in direct[where]:
                assert x in caps, (where, x, "dropped")


def test_removed_capability_commands_refused(caps_env):
    """STARTTLS, COMPRESS DEFLATE and APPEND with CATENATE get a tagged NO
    from the gateway; the session stays plain IMAP (a NOOP after COMPRESS
    would be garbage if Dovecot had switched to DEFLATE)."""
    d, g = caps_env
    before = d.status("capsuser")
    off = g.log_offset()
    c = RawIMAP(g.port())
    try:
        st, _ = c.command("STARTTLS", check=False)
        assert re.match(rb"t\d+ NO ", st), st
        st, _ = c.command("NOOP")
        assert b" OK" in st
        c.login("capsuser", PW)
        st, _ = c.command("COMPRESS DEFLATE", check=False)
        assert re.match(rb"t\d+ NO ", st), st
        st, _ = c.command("NOOP")
        assert b" OK" in st
        st, _ = c.command("SELECT INBOX")
        tag = c.tag()
        c.send(b"%s APPEND INBOX CATENATE (TEXT {%d+}\r\n%s)\r\n" %
               (tag.encode(), 32, b"Subject: cat\r\n\r\ncatenated body\r\n"))
        rs = c.read_until_tagged(tag)
        assert re.match(rb"t\d+ NO ", rs[-1].line), rs
        st, _ = c.command("NOOP")
        assert b" OK" in st
    finally:
        c.logout()
    assert d.status("capsuser") == before, "the CATENATE APPEND reached " \
        "Dovecot"
    log = g.log_since(off)
    for cmd in ("STARTTLS", "COMPRESS", "APPEND"):
        assert re.search(r"command refused.*command=%s" % cmd, log), \
            (cmd, log)


def test_default_appendlimit(gw):
    c = RawIMAP(gw.port())
    try:
        caps = caps_of(c.greeting.line)
        assert b"APPENDLIMIT=%d" % (50 << 20) in caps, caps
    finally:
        c.logout()


def test_plus_sasl_and_urlauth_filtered():
    """AUTH=*-PLUS (channel binding cannot survive a gateway) and URLAUTH:
    this Dovecot 2.3 offers neither, so a scripted server does."""
    caps = (b"IMAP4rev1 LITERAL+ SASL-IR AUTH=SCRAM-SHA-256-PLUS "
            b"AUTH=SCRAM-SHA-256 AUTH=PLAIN URLAUTH URLAUTH=BINARY "
            b"COMPRESS=DEFLATE CATENATE STARTTLS APPENDLIMIT=999999999 IDLE")
    srv = FakeIMAP([(rb"CAPABILITY", b"* CAPABILITY " + caps +
                     b"\r\n{tag} OK done\r\n"),
                    (rb"LOGIN", b"{tag} OK [CAPABILITY " + caps +
                     b"] logged in\r\n")],
                   greeting=b"* OK [CAPABILITY " + caps + b"] fake\r\n")
    srv.start()
    g = gwm.Gateway(servers={"fake": [srv.address]},
                    policies=[policy("imap-in", free_port(), "fake")])
    try:
        g.start()
        c = RawIMAP(g.port())
        lists = [caps_of(c.greeting.line)]
        st, rs = c.command("CAPABILITY")
        lists.append(caps_of(b" ".join(r.line for r in rs)))
        st, rs = c.login("x", "y")
        lists.append(caps_of(st))
        c.logout()
        for got in lists:
            assert got, lists
            assert not [x for x in got if FORBIDDEN.match(x)], got
            assert b"AUTH=SCRAM-SHA-256" in got and b"IDLE" in got, got
            assert got.count(b"APPENDLIMIT=%d" % (50 << 20)) == 1, got
    finally:
        g.stop()
        srv.stop()


# ---- ID ---------------------------------------------------------------------------

def test_preauth_id_answered_by_gateway(gw, dovecot):
    mark = "test-%d" % os.getpid()
    doff = dovecot.log_offset()
    c = RawIMAP(gw.port())
    try:
        st, rs = c.command('ID ("name" "%s" "version" "1.0")' % mark)
        assert re.match(rb"t\d+ OK", st), st
        ids = [r.line for r in rs if r.line.startswith(b"* ID ")]
        assert len(ids) == 1 and b'"name" "imapgw"' in ids[0], rs
        c.login("iduser", PW)
    finally:
        c.logout()
    assert dovecot.wait_log(r"Login: user=<iduser>", since=doff)
    assert mark not in dovecot.log_since(doff), \
        "the client's pre-auth ID reached Dovecot:\n" + \
        dovecot.log_since(doff)


def test_real_client_address_reaches_dovecot(gw, dovecot):
    """login_trusted_networks = 127.0.0.0/8: Dovecot takes the gateway's
    x-originating-ip; a client on 127.0.0.7 shows as rip=127.0.0.7 in
    Dovecot's login line (the gateway itself connects from 127.0.0.1)."""
    doff = dovecot.log_offset()
    c = RawIMAP(gw.port(), source="127.0.0.7")
    try:
        lport = c.local_port
        c.login("iduser", PW)
        st, _ = c.command("NOOP")
    finally:
        c.logout()
    m = dovecot.wait_log(r"^.*Login: user=<iduser>.*$", since=doff)
    assert m, dovecot.log_since(doff)
    assert "rip=127.0.0.7," in m.group(0), m.group(0)
    m = dovecot.wait_log(r"^.*ID sent: .*x-originating-ip=127\.0\.0\.7.*$",
                         since=doff)
    assert m and "x-originating-port=%d" % lport in m.group(0), \
        dovecot.log_since(doff)


def test_client_originating_ip_replaced(gw, dovecot):
    doff = dovecot.log_offset()
    c = RawIMAP(gw.port(), source="127.0.0.7")
    try:
        c.login("iduser", PW)
        st, rs = c.command('ID ("name" "postauth" "x-originating-ip" '
                           '"10.9.8.7" "x-originating-port" "4711")')
        assert re.match(rb"t\d+ OK", st), st
        # post-auth ID is Dovecot's to answer
        assert any(b'"name" "Dovecot"' in r.line for r in rs), rs
    finally:
        c.logout()
    m = dovecot.wait_log(r"^.*imap\(iduser\).*ID sent: name=postauth.*$",
                         since=doff)
    assert m, dovecot.log_since(doff)
    assert "x-originating-ip=127.0.0.7" in m.group(0), m.group(0)
    assert "10.9.8.7" not in dovecot.log_since(doff)
    assert "4711" not in m.group(0), m.group(0)


# ---- authentication -------------------------------------------------------------

def _b64(b):
    return base64.b64encode(b).decode()


def _auth(c, how, user, pw):
    """Log in with method how; returns the tagged line."""
    tag = c.tag().encode()
    u, p = user.encode(), pw.encode()

    def cont():
        r = c.read_response()
        assert r.line.startswith(b"+"), r
        return r

    if how == "login-quoted":
        c.send(tag + b' LOGIN "%s" "%s"\r\n' % (u, p))
    elif how == "login-sync":
        c.send(tag + b" LOGIN {%d}\r\n" % len(u))
        cont()
        c.send(u + b" {%d}\r\n" % len(p))
        cont()
        c.send(p + b"\r\n")
    elif how == "login-plus":
        c.send(tag + b" LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" %
               (len(u), u, len(p), p))
    elif how == "plain-ir":
        c.send(tag + b" AUTHENTICATE PLAIN %s\r\n" %
               _b64(b"\0" + u + b"\0" + p).encode())
    elif how == "plain":
        c.send(tag + b" AUTHENTICATE PLAIN\r\n")
        cont()
        c.send(_b64(b"\0" + u + b"\0" + p).encode() + b"\r\n")
    elif how == "login-sasl":
        c.send(tag + b" AUTHENTICATE LOGIN\r\n")
        cont()
        c.send(_b64(u).encode() + b"\r\n")
        cont()
        c.send(_b64(p).encode() + b"\r\n")
    else:
        raise ValueError(how)
    rs = c.read_until_tagged(tag.decode())
    return rs[-1].line


AUTH_METHODS = ["login-quoted", "login-sync", "login-plus", "plain-ir",
                "plain", "login-sasl"]


@pytest.mark.parametrize("how", AUTH_METHODS)
def test_authentication_passes_and_user_is_logged(gw, how):
    off = gw.log_offset()
    c = RawIMAP(gw.port())
    try:
        lport = c.local_port
        st = _auth(c, how, "authuser", PW)
        assert re.match(rb"t\d+ OK", st), st
        st, rs = c.command("SELECT INBOX")
        assert b" OK" in st
    finally:
        c.logout()
    m = gw.wait_log(r"^.*\blogin\b.*%s.*$" % _client_rx(lport), since=off)
    assert m, gw.log_since(off)
    assert re.search(r"\buser=authuser\b", m.group(0)), m.group(0)


@pytest.mark.parametrize("how,src", [("login-quoted", "127.0.1.1"),
                                     ("plain-ir", "127.0.1.2"),
                                     ("login-sasl", "127.0.1.3")])
def test_failed_authentication_logged(gw, how, src):
    """Each from its own address: Dovecot's auth penalty is per client
    address (rip, which the gateway's ID sets), so other tests from
    127.0.0.1 are not slowed down."""
    off = gw.log_offset()
    c = RawIMAP(gw.port(), source=src)
    try:
        lport = c.local_port
        st = _auth(c, how, "authuser", "wrong")
        assert re.match(rb"t\d+ NO", st), st
    finally:
        c.logout()
    m = gw.wait_log(r"^.*\blogin failed\b.*%s.*$" % _client_rx(lport, src),
                    since=off)
    assert m and "user=authuser" in m.group(0), gw.log_since(off)
    assert not re.search(r"\blogin client=.*%s" % _client_rx(lport, src),
                         gw.log_since(off))


def _xoauth2_server():
    """Accepts AUTHENTICATE XOAUTH2 with and without SASL-IR."""
    def start(m, line, conn):
        conn.state["tag"] = conn.tag
        return b"+ \r\n"

    def finish(m, line, conn):
        conn.state["token"] = line.strip()
        return conn.state.get("tag", b"*") + b" OK [CAPABILITY IMAP4rev1 " \
            b"LITERAL+ IDLE] logged in\r\n"

    def with_ir(m, line, conn):
        conn.state["token"] = m.group(1)
        return b"{tag} OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] logged in\r\n"

    return FakeIMAP([
        (rb"^\S+ AUTHENTICATE XOAUTH2 (\S+)\r?\n$", Reply(with_ir)),
        (rb"^\S+ AUTHENTICATE XOAUTH2\r?\n$", Reply(start)),
        (rb"^[A-Za-z0-9+/]+=*\r?\n$", Reply(finish)),
    ], greeting=b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR "
                b"AUTH=XOAUTH2] fake oauth server\r\n")


@pytest.mark.parametrize("ir", [True, False], ids=["sasl-ir", "no-ir"])
def test_xoauth2_user_logged(ir):
    srv = _xoauth2_server().start()
    g = gwm.Gateway(servers={"fake": [srv.address]},
                    policies=[policy("imap-in", free_port(), "fake")])
    try:
        g.start()
        user = "oauth.user@example.org"
        token = _b64(b"user=%s\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBh"
                     b"\x01\x01" % user.encode()).encode()
        c = RawIMAP(g.port())
        lport = c.local_port
        tag = c.tag().encode()
        if ir:
            c.send(tag + b" AUTHENTICATE XOAUTH2 " + token + b"\r\n")
        else:
            c.send(tag + b" AUTHENTICATE XOAUTH2\r\n")
            r = c.read_response()
            assert r.line.startswith(b"+"), r
            c.send(token + b"\r\n")
        rs = c.read_until_tagged(tag.decode())
        assert re.match(rb"t\d+ OK", rs[-1].line), rs
        c.logout()
        conn = srv.wait_conn(1)
        assert conn.state.get("token") == token, \
            "the token reached the server changed"
        m = g.wait_log(r"^.*\blogin\b.*%s.*$" % _client_rx(lport))
        assert m and re.search(r"\buser=%s\b" % re.escape(user),
                               m.group(0)), g.log_text()[-3000:]
    finally:
        g.stop()
        srv.stop()


def _empty(dovecot, user):
    c = dovecot.connect(user)
    try:
        typ, data = c.select("INBOX")
        if int(data[0]):
            c.store("1:*", "+FLAGS", r"(\Deleted)")
            c.expunge()
    finally:
        c.logout()


# ---- pipelining ------------------------------------------------------------------

PIPELINE = (b"p1 NOOP\r\n"
            b"p2 FETCH 2 (RFC822.SIZE BODY.PEEK[])\r\n"
            b"p3 FETCH 1 (BODY.PEEK[])\r\n"
            b"p4 SEARCH ALL\r\n"
            b"p5 FETCH 3 (BODY.PEEK[] RFC822.SIZE)\r\n"
            b"p6 NOOP\r\n")
# which untagged response answers which command
OWNER = {("fetch", 2): "p2", ("fetch", 1): "p3", ("search", None): "p4",
         ("fetch", 3): "p5"}


def _pipeline(port):
    c = RawIMAP(port, timeout=60)
    try:
        c.login("pipeliner", PW)
        c.command("EXAMINE INBOX")
        c.send(PIPELINE)
        rs = c.read_until_tagged("p6")
    finally:
        c.logout()
    seq = []
    for r in rs:
        ln = r.line
        if ln.startswith(b"* ") and b" FETCH " in ln[:20]:
            seq.append((("fetch", int(ln.split()[1])), r))
        elif ln.startswith(b"* SEARCH"):
            seq.append((("search", None), r))
        elif re.match(rb"p\d ", ln):
            seq.append((("tagged", ln[:2].decode()), r))
        else:
            seq.append((("other", ln[:40]), r))
    return seq


def test_pipelined_commands_answered_in_order(gw, dovecot):
    """NOOP, FETCH of an infected message, FETCH of a clean one, SEARCH,
    another infected FETCH and NOOP in one write: every answer arrives
    once, each untagged response before its command's tagged OK;
    infected sanitized, clean byte-identical.  Dovecot runs pipelined
    commands side by side and interleaves their answers; in strict
    consistency the gateway runs each FETCH alone (its responses are
    answered from its verdicts), so the FETCHes are answered in the order
    sent, which is also a valid order, not necessarily Dovecot's."""
    clean = (b"From: a@example.org\r\nTo: pipeliner@example.org\r\n"
             b"Subject: clean pipelined\r\nMessage-ID: <pl-1@example.org>"
             b"\r\n\r\nhello\r\n")
    _empty(dovecot, "pipeliner")
    dovecot.append("pipeliner", [clean, eicar_attachment_message(21),
                                 eicar_body_message(22)])
    direct = _pipeline(dovecot.port)
    via = _pipeline(gw.port())
    kinds = [k for k, _ in via]
    tags = [k[1] for k in kinds if k[0] == "tagged"]
    assert sorted(tags) == ["p1", "p2", "p3", "p4", "p5", "p6"], kinds
    for k, owner in OWNER.items():
        assert kinds.count(k) == 1, (k, kinds)
        assert kinds.index(k) < kinds.index(("tagged", owner)), (k, kinds)
    assert sorted(kinds, key=repr) == \
        sorted([k for k, _ in direct], key=repr), (kinds, direct)
    fetches = [k[1] for k in kinds
               if k[0] == "tagged" and k[1] in ("p2", "p3", "p5")]
    assert fetches == ["p2", "p3", "p5"], kinds
    for k, r in via:
        if k[0] == "tagged":
            assert b" OK" in r.line, r
    got = {k: r for k, r in via}
    assert got[("search", None)].line.split()[2:] == [b"1", b"2", b"3"]
    f1 = fetch_dict(got[("fetch", 1)])
    assert f1[b"BODY[]"] == clean
    for n in (2, 3):
        f = fetch_dict(got[("fetch", n)])
        assert EICAR not in f[b"BODY[]"]
        assert VIRUS_NAME.encode() in f[b"BODY[]"]
        assert int(f[b"RFC822.SIZE"]) == len(f[b"BODY[]"])


# ---- IDLE while a scan runs ----------------------------------------------------

def _wait_line(c, pattern, tag, timeout=15):
    """Read responses until one matches pattern; fail on the tagged end."""
    c.settimeout(timeout)
    seen = []
    end = time.time() + timeout
    while time.time() < end:
        r = c.read_response()
        seen.append(r.line)
        if re.match(pattern, r.line):
            return r
        assert not r.line.startswith(tag.encode() + b" "), seen
    pytest.fail("no %r within %ss: %r" % (pattern, timeout, seen))


def test_idle_events_pass_while_a_scan_runs(make_gateway, dovecot):
    """Session A idles.  Session C fetches a large message whose scan is
    held (scand stopped).  Meanwhile an APPEND, a flag change and an
    EXPUNGE by another session reach A as EXISTS, FETCH FLAGS, EXPUNGE;
    C's answer is still pending.  Then the scan completes, C gets its
    message, an APPEND through the gateway wakes A again, DONE ends IDLE."""
    big = large_multipart_message(40, 6 << 20)
    for u in ("idler3", "bigscan"):
        _empty(dovecot, u)
    dovecot.append("bigscan", big)
    direct_big = list(dovecot.fetch_bodies("bigscan").values())[0]
    g = make_gateway(workers=(1, 1, 1))
    scand = g.pids_of("scand")
    assert len(scand) == 1
    a = RawIMAP(g.port(), timeout=30)
    cc = RawIMAP(g.port(), timeout=60)
    stopped = False
    try:
        a.login("idler3", PW)
        st, rs = a.command("SELECT INBOX")
        n = [int(r.line.split()[1]) for r in rs
             if r.line.rstrip().endswith(b"EXISTS")][0]
        a.send(b"i1 IDLE\r\n")
        r = a.read_response()
        assert r.line.startswith(b"+"), r

        cc.login("bigscan", PW)
        cc.command("EXAMINE INBOX")
        os.kill(scand[0], signal.SIGSTOP)
        stopped = True
        cc.send(b"c1 FETCH 1 (BODY.PEEK[])\r\n")
        time.sleep(1.0)

        b = dovecot.connect("idler3")
        try:
            b.append("INBOX", None, None,
                     b"Subject: wake 1\r\n\r\nidle while scanning\r\n")
            _wait_line(a, rb"\* %d EXISTS" % (n + 1), "i1")
            b.select("INBOX")
            b.store(str(n + 1), "+FLAGS", r"(\Flagged)")
            r = _wait_line(a, rb"\* %d FETCH \(" % (n + 1), "i1")
            assert b"\\Flagged" in r.line, r
            b.store(str(n + 1), "+FLAGS", r"(\Deleted)")
            b.expunge()
            _wait_line(a, rb"\* %d EXPUNGE" % (n + 1), "i1")
        finally:
            b.logout()
        # the scan of C's message is still held: nothing for C yet
        assert not select.select([cc.sock], [], [], 0)[0], \
            "C got an answer while its scan was held"
        os.kill(scand[0], signal.SIGCONT)
        stopped = False
        rs = cc.read_until_tagged("c1")
        assert rs[-1].line.startswith(b"c1 OK"), rs
        assert fetch_dict(rs[0])[b"BODY[]"] == direct_big

        b2 = RawIMAP(g.port())
        try:
            b2.login("idler3", PW)
            b2.append("INBOX", b"Subject: wake 2\r\n\r\nthrough the gw\r\n")
        finally:
            b2.logout()
        _wait_line(a, rb"\* %d EXISTS" % (n + 1), "i1")
        a.send(b"DONE\r\n")
        rs = a.read_until_tagged("i1")
        assert rs[-1].line.startswith(b"i1 OK"), rs
        st, _ = a.command("NOOP")
        assert b" OK" in st
    finally:
        if stopped:
            os.kill(scand[0], signal.SIGCONT)
        a.logout()
        cc.logout()
