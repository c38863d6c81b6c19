"""IMAP commands through the gateway: the client sees what Dovecot says."""

import imaplib
import re

import pytest

from mailgen import normalize
from rawimap import RawIMAP

PW = "secret"


def imap(port, user=None):
    c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    if user:
        c.login(user, PW)
    return c


def caps_of(line):
    m = re.search(rb"CAPABILITY ([^\]\r\n]*)", line, re.I)
    return m.group(1).split() if m else []


def test_greeting(gw):
    c = RawIMAP(gw.port())
    try:
        assert c.greeting.line.startswith(b"* OK"), c.greeting
    finally:
        c.logout()


FORBIDDEN_CAPS = re.compile(rb"^(COMPRESS=.*|CATENATE|URLAUTH.*|STARTTLS|"
                            rb"AUTH=.*-PLUS)$", re.I)


def test_capability_allow_list(gw, dovecot):
    """The allow-list holds in all three places: the greeting's code, the
    CAPABILITY response before and after login, and the LOGIN tagged OK.
    What stays is what Dovecot offers; APPENDLIMIT is the action's
    max_email_size (50M by default) when the server's is larger or absent."""
    def caps(port, user, where):
        c = RawIMAP(port)
        try:
            if where == "greeting":
                return caps_of(c.greeting.line)
            if where == "login":
                st, rs = c.login(user, PW)
                return caps_of(st)
            if user:
                c.login(user, PW)
            st, rs = c.command("CAPABILITY")
            assert st.split()[1] == b"OK", st
            return caps_of(b" ".join(r.line for r in rs))
        finally:
            c.logout()

    for user, where in ((None, "greeting"), (None, "capability"),
                        ("caps", "login"), ("caps", "capability")):
        got = caps(gw.port(), user, where)
        want = caps(dovecot.port, user, where)
        assert got, (where, got)
        assert b"IMAP4rev1" in got
        for cap in got:
            assert not FORBIDDEN_CAPS.match(cap), (where, cap)
            assert cap in want or cap.startswith(b"APPENDLIMIT="), \
                (where, cap, want)
        limits = [c for c in got if c.startswith(b"APPENDLIMIT=")]
        assert limits == [b"APPENDLIMIT=%d" % (50 << 20)], (where, got)
        if where == "capability" and user:
            # what Dovecot offers after login and the gateway drops
            assert b"CATENATE" in want or b"URLAUTH" in want or \
                any(c.startswith(b"COMPRESS=") for c in want), want
            for keep in (b"LITERAL+", b"IDLE", b"ID"):
                assert keep in got, got


def test_login_wrong_password(gw):
    c = imap(gw.port())
    try:
        with pytest.raises(imaplib.IMAP4.error):
            c.login("alice", "wrong")
        # the session survives a failed login
        c.login("alice", PW)
        assert c.noop()[0] == "OK"
    finally:
        c.logout()


def _seed(dovecot, user, n, tag):
    msgs = [("From: x@example.org\r\nTo: %s@example.org\r\n"
             "Subject: %s %d\r\nMessage-ID: <%s-%d@example.org>\r\n\r\n"
             "body %d\r\n" % (user, tag, i, tag, i, i)).encode()
            for i in range(n)]
    return dovecot.append(user, msgs)


def test_list_select_fetch_store_search(gw, dovecot):
    uids = _seed(dovecot, "alice", 3, "lsfss")
    dovecot.append("alice", b"Subject: other\r\n\r\nx\r\n", mailbox="Archive")
    d = dovecot.connect("alice")
    c = imap(gw.port(), "alice")
    try:
        # LIST: same mailboxes as directly
        typ, lg = c.list('""', "*")
        typ2, ld = d.list('""', "*")
        assert typ == "OK" and sorted(lg) == sorted(ld)
        assert any(b"Archive" in x for x in lg)

        # SELECT: same counts, UIDVALIDITY as directly
        typ, data = c.select("INBOX")
        assert typ == "OK"
        n = int(data[0])
        typ, dd = d.select("INBOX")
        assert n == int(dd[0]) and n >= 3
        assert (c.response("UIDVALIDITY")[1] == d.response("UIDVALIDITY")[1])

        # FETCH: same bytes as directly
        spec = "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)] " \
               "BODY.PEEK[])"
        typ, fg = c.uid("FETCH", "%d:%d" % (uids[0], uids[-1]), spec)
        typ2, fd = d.uid("FETCH", "%d:%d" % (uids[0], uids[-1]), spec)
        assert typ == "OK" and fg == fd

        # STORE: flag set through the gateway is seen directly
        typ, data = c.uid("STORE", str(uids[1]), "+FLAGS", r"(\Flagged)")
        assert typ == "OK" and b"\\Flagged" in data[0]
        d.select("INBOX")
        typ, data = d.uid("FETCH", str(uids[1]), "(FLAGS)")
        assert b"\\Flagged" in data[0]

        # SEARCH: same answers as directly
        for crit in ("FLAGGED", 'SUBJECT "lsfss 2"', "ALL", "UNSEEN"):
            r1 = c.uid("SEARCH", None, crit)
            r2 = d.uid("SEARCH", None, crit)
            assert r1 == r2, crit
        assert c.uid("SEARCH", None, "FLAGGED")[1][0].split() == \
            [str(uids[1]).encode()]

        typ, data = c.logout()
        assert typ == "BYE"
    finally:
        d.logout()


def test_append_sync_literal(gw, dovecot):
    """APPEND with a synchronizing literal, exact bytes (CRLF/LF mixed,
    8-bit, IMAP-looking lines inside the literal)."""
    msg = (b"From: a@example.org\r\nSubject: sync literal \xe9\r\n\n"
           b"line one\r\nt9 LOGOUT\r\n* BYE fake\n{5}\r\n" + b"L" * 1500
           + b"\nlast\r\n")
    c = RawIMAP(gw.port())
    try:
        c.login("bob", PW)
        st = c.append("INBOX", msg)
        m = re.search(rb"APPENDUID \d+ (\d+)", st)
        assert m, st
        uid = int(m.group(1))
        st, _ = c.command("NOOP")          # session still in sync
        assert b"OK" in st
    finally:
        c.logout()
    assert dovecot.fetch_bodies("bob")[uid] == normalize(msg)

    # and imaplib's own APPEND (sync literal, CRLF lines)
    c = imap(gw.port(), "bob")
    try:
        typ, data = c.append("INBOX", None, None, b"Subject: imaplib\r\n\r\nok\r\n")
        assert typ == "OK", data
    finally:
        c.logout()


def test_append_literal_plus(gw, dovecot):
    """APPEND with a non-synchronizing literal {n+}: no continuation request,
    the payload goes through verbatim and is never read as commands."""
    msg = (b"From: a@example.org\r\nSubject: literal plus\r\n\r\n"
           b"x1 LOGOUT\r\n* 1 EXISTS\r\n)\r\nDONE\r\n~{3}\r\n" +
           bytes(range(0x80, 0x100)) + b"\r\nend\n")
    c = RawIMAP(gw.port())
    try:
        c.login("lplus", PW)
        tag = c.tag()
        c.send(b"%s APPEND INBOX (\\Seen) {%d+}\r\n" % (tag.encode(), len(msg))
               + msg + b"\r\n")
        rs = c.read_until_tagged(tag)
        assert rs[-1].line.startswith(tag.encode() + b" OK"), rs
        assert not any(r.line.startswith(b"+") for r in rs), rs
        uid = int(re.search(rb"APPENDUID \d+ (\d+)", rs[-1].line).group(1))
        # two APPENDs with {n+} pipelined in one write, then NOOP
        t1, t2, t3 = c.tag(), c.tag(), c.tag()
        c.send(b"%s APPEND INBOX {%d+}\r\n%s\r\n%s APPEND INBOX {%d+}\r\n%s\r\n"
               b"%s NOOP\r\n" % (t1.encode(), len(msg), msg, t2.encode(),
                                 len(msg), msg, t3.encode()))
        for t in (t1, t2, t3):
            rs = c.read_until_tagged(t)
            assert rs[-1].line.startswith(t.encode() + b" OK"), rs
    finally:
        c.logout()
    bodies = dovecot.fetch_bodies("lplus")
    assert bodies[uid] == normalize(msg)
    assert len([b for b in bodies.values() if b == normalize(msg)]) == 3


def test_idle_sees_append_from_other_connection(gw):
    a = RawIMAP(gw.port())
    b = RawIMAP(gw.port())
    try:
        a.login("idler", PW)
        st, rs = a.command("SELECT INBOX")
        n = [int(r.line.split()[1]) for r in rs
             if r.line.rstrip().endswith(b"EXISTS")][0]
        a.send(b"i1 IDLE\r\n")
        r = a.read_response()
        assert r.line.startswith(b"+"), r
        b.login("idler", PW)
        b.append("INBOX", b"Subject: wake up\r\n\r\nidle test\r\n")
        a.settimeout(15)
        want = b"* %d EXISTS" % (n + 1)
        seen = []
        while True:
            r = a.read_response()
            seen.append(r.line)
            if r.line.startswith(want):
                break
            assert not r.line.startswith(b"i1 "), seen
        a.send(b"DONE\r\n")
        rs = a.read_until_tagged("i1")
        assert rs[-1].line.startswith(b"i1 OK"), rs
        st, _ = a.command("NOOP")
        assert b"OK" in st
    finally:
        a.logout()
        b.logout()


def test_logout(gw):
    c = RawIMAP(gw.port())
    c.login("carol", PW)
    tag = c.tag()
    c.send(tag.encode() + b" LOGOUT\r\n")
    rs = c.read_until_tagged(tag)
    assert any(r.line.startswith(b"* BYE") for r in rs), rs
    assert rs[-1].line.startswith(tag.encode() + b" OK"), rs
    # then the gateway closes the connection
    c.settimeout(10)
    assert c.f.read() == b""
    c.close()
