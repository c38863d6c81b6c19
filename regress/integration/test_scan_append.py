"""Uploads are judged before the server gets them (issue 3, item 3).

APPEND of EICAR is refused with a tagged NO naming the virus and Dovecot's
mailbox is unchanged (MESSAGES and UIDNEXT asked directly: an APPEND that
reached Dovecot would move UIDNEXT even if the message were expunged).
200 clean random messages appended with synchronizing literals, with
LITERAL+ and with RFC 3516 literal8 (`~{n}`) are stored byte for byte.
MULTIAPPEND is judged per message, refused as a whole.  Over
max_email_size: NO [TOOBIG], without a continuation for `{n}`, with the
literal consumed for `{n+}`; the session goes on.
"""

import re

import pytest

import mailgen
from dovecot import free_port
from gateway import (VIRUS_NAME, eicar_attachment_message,
                     eicar_body_message, policy)
from rawimap import RawIMAP

pytestmark = pytest.mark.gateway

PW = "secret"
CLEAN = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: clean\r\n"
         b"Message-ID: <clean-append@example.org>\r\n\r\nnothing here\r\n")


def _login(port, user):
    c = RawIMAP(port, timeout=60)
    c.login(user, PW)
    return c


def _ensure(dovecot, user, mailbox):
    c = dovecot.connect(user)
    try:
        c.create(mailbox)
    finally:
        c.logout()


def _status(dovecot, user, mailbox="INBOX"):
    st = dovecot.status(user, mailbox)
    return st["MESSAGES"], st["UIDNEXT"]


def append_raw(c, mailbox, msgs, mode):
    """APPEND msgs (one or more: MULTIAPPEND) in mode 'sync' ({n}, waiting
    for each '+'), 'plus' ({n+}) or 'binary' (~{n}, synchronizing).
    Returns (tagged line, untagged responses, number of '+' seen)."""
    tag = c.tag()
    conts = 0
    head = ("%s APPEND %s" % (tag, mailbox)).encode()
    for i, m in enumerate(msgs):
        if mode == "plus":
            mark = b"{%d+}" % len(m)
        elif mode == "binary":
            mark = b"~{%d}" % len(m)
        else:
            mark = b"{%d}" % len(m)
        c.send(head + b" " + mark + b"\r\n")
        if mode != "plus":
            r = c.read_response()
            if not r.line.startswith(b"+"):
                assert r.line.startswith(tag.encode() + b" "), r
                return r.line, [], conts
            conts += 1
        c.send(m)
        head = b""
    c.send(b"\r\n")
    rs = c.read_until_tagged(tag)
    conts += sum(1 for r in rs if r.line.startswith(b"+"))
    return rs[-1].line, rs[:-1], conts


# ---- EICAR refused -------------------------------------------------------------

@pytest.mark.parametrize("mode", ["sync", "plus", "binary"])
@pytest.mark.parametrize("kind", ["attachment", "body"])
def test_append_eicar_refused(gw, dovecot, mode, kind):
    msg = eicar_attachment_message(7) if kind == "attachment" else \
        eicar_body_message(8)
    before = _status(dovecot, "scanappend")
    off = gw.log_offset()
    c = _login(gw.port(), "scanappend")
    try:
        st, rs, conts = append_raw(c, "INBOX", [msg], mode)
        assert re.match(rb"t\d+ NO ", st), st
        assert VIRUS_NAME.encode() in st, \
            "the NO does not say why (virus name): %r" % st
        if mode != "plus":
            assert conts == 1, "the gateway answers the continuation"
        # the session goes on
        st, _ = c.command("NOOP")
        assert b"OK" in st
    finally:
        c.logout()
    assert _status(dovecot, "scanappend") == before, \
        "Dovecot's mailbox changed: an infected upload reached it"
    assert gw.wait_log(r"^.*\bupload rejected\b.*\buser=scanappend\b.*$",
                       since=off), gw.log_since(off)


def test_append_eicar_with_imaplib(gw, dovecot):
    import imaplib
    before = _status(dovecot, "scanappend")
    c = imaplib.IMAP4("127.0.0.1", gw.port(), timeout=30)
    try:
        c.login("scanappend", PW)
        typ, data = c.append("INBOX", None, None, eicar_body_message(9))
        assert typ == "NO", (typ, data)
        assert VIRUS_NAME.encode() in data[0], data
        assert c.noop()[0] == "OK"
        c.logout()
    finally:
        try:
            c.shutdown()
        except Exception:
            pass
    assert _status(dovecot, "scanappend") == before


# ---- 200 clean messages, three literal forms ---------------------------------

N = 200


@pytest.mark.parametrize("mode", ["sync", "plus", "binary"])
def test_append_200_clean_byte_identical(gw, dovecot, mode):
    msgs = mailgen.messages(N, seed=4242 + len(mode))
    box = "Bulk-" + mode
    _ensure(dovecot, "appendbulk", box)
    c = _login(gw.port(), "appendbulk")
    try:
        if mode == "binary":
            st, rs = c.command("CAPABILITY")
            assert any(b" BINARY" in r.line for r in rs), rs
        if mode == "plus":
            # pipelined: every APPEND in one stream, answers read after
            tags = []
            data = []
            for m in msgs:
                t = c.tag()
                tags.append(t)
                data.append(b"%s APPEND %s {%d+}\r\n" %
                            (t.encode(), box.encode(), len(m)) + m + b"\r\n")
            c.send(b"".join(data))
            for t in tags:
                rs = c.read_until_tagged(t)
                assert rs[-1].line.startswith(t.encode() + b" OK"), rs
        else:
            for m in msgs:
                st, rs, conts = append_raw(c, box, [m], mode)
                assert b" OK" in st, st
                assert conts == 1
    finally:
        c.logout()
    stored = dovecot.fetch_bodies("appendbulk", box)
    assert len(stored) == N
    got = [stored[u] for u in sorted(stored)]
    bad = [i for i, m in enumerate(msgs)
           if mailgen.sha(got[i]) != mailgen.sha(mailgen.normalize(m))]
    assert not bad, "stored message differs from the appended one " \
        "(%s) for %s" % (mode, bad[:20])


# ---- MULTIAPPEND -------------------------------------------------------------

@pytest.mark.parametrize("mode", ["sync", "plus"])
def test_multiappend_clean_pair(gw, dovecot, mode):
    box = "Multi-" + mode
    _ensure(dovecot, "multiappend", box)
    msgs = mailgen.messages(2, seed=99)
    c = _login(gw.port(), "multiappend")
    try:
        st, rs, conts = append_raw(c, box, msgs, mode)
        assert b" OK" in st, st
        if mode == "sync":
            assert conts == 2
    finally:
        c.logout()
    stored = dovecot.fetch_bodies("multiappend", box)
    assert [stored[u] for u in sorted(stored)] == \
        [mailgen.normalize(m) for m in msgs]


@pytest.mark.parametrize("mode", ["sync", "plus"])
@pytest.mark.parametrize("infected_first", [False, True])
def test_multiappend_one_infected_refuses_all(gw, dovecot, mode,
                                             infected_first):
    box = "MultiBad"
    _ensure(dovecot, "multiappend", box)
    msgs = [CLEAN, eicar_attachment_message(5)]
    if infected_first:
        msgs.reverse()
    before = _status(dovecot, "multiappend", box)
    c = _login(gw.port(), "multiappend")
    try:
        st, rs, conts = append_raw(c, box, msgs, mode)
        assert re.match(rb"t\d+ NO ", st), st
        assert VIRUS_NAME.encode() in st, st
        st, _ = c.command("NOOP")
        assert b"OK" in st
    finally:
        c.logout()
    assert _status(dovecot, "multiappend", box) == before, \
        "part of a refused MULTIAPPEND reached Dovecot"


# ---- max_email_size ----------------------------------------------------------

@pytest.fixture(scope="module")
def small_gw(dovecot):
    import gateway as gwm
    g = gwm.Gateway(
        servers={"dovecot": [dovecot.address]},
        actions={"small": {"inherit": "IMAP-Server.Standard",
                           "general": {"max_email_size": "64K"}}},
        policies=[policy("imap-in", free_port(), "dovecot",
                         action="small")])
    g.start()
    yield g
    g.stop()


def _sized(n):
    head = (b"From: a@example.org\r\nSubject: %d bytes\r\n"
            b"Message-ID: <sized-%d@example.org>\r\n\r\n" % (n, n))
    line = b"x" * 70 + b"\r\n"
    body = line * ((n - len(head)) // len(line) + 1)
    return (head + body)[:n - 2] + b"\r\n"


def test_toobig_sync_literal_refused_without_continuation(small_gw, dovecot):
    before = _status(dovecot, "toobig")
    c = _login(small_gw.port(), "toobig")
    try:
        msg = _sized(65537)
        tag = c.tag()
        c.send(b"%s APPEND INBOX {%d}\r\n" % (tag.encode(), len(msg)))
        r = c.read_response()
        assert r.line.startswith(tag.encode() + b" NO [TOOBIG]"), \
            "expected a tagged NO [TOOBIG] and no '+', got %r" % r
        # the client sends no payload; the session goes on
        st, _ = c.command("NOOP")
        assert b"OK" in st
    finally:
        c.logout()
    assert _status(dovecot, "toobig") == before


def test_toobig_literal_plus_consumed(small_gw, dovecot):
    before = _status(dovecot, "toobig")
    c = _login(small_gw.port(), "toobig")
    try:
        msg = _sized(100 * 1024)
        # the payload holds lines that would be commands if it were read
        # as such; after it, NOOP must be the next command
        evil = b"\r\nx1 LOGOUT\r\nx2 DELETE INBOX\r\n"
        msg = msg[:-200] + evil + msg[-200 + len(evil):]
        assert len(msg) == 100 * 1024
        tag = c.tag()
        c.send(b"%s APPEND INBOX {%d+}\r\n" % (tag.encode(), len(msg)) +
               msg + b"\r\n")
        rs = c.read_until_tagged(tag)
        assert rs[-1].line.startswith(tag.encode() + b" NO [TOOBIG]"), rs
        assert not any(r.line.startswith(b"+") for r in rs), rs
        st, rs = c.command("NOOP")
        assert b"OK" in st
        assert not any(r.line.startswith(b"* BYE") for r in rs)
    finally:
        c.logout()
    assert _status(dovecot, "toobig") == before


@pytest.mark.parametrize("mode", ["sync", "plus"])
def test_toobig_boundary(small_gw, dovecot, mode):
    """Exactly max_email_size (65536 bytes) is taken and stored."""
    before = _status(dovecot, "toobig")
    msg = _sized(65536)
    c = _login(small_gw.port(), "toobig")
    try:
        st, rs, conts = append_raw(c, "INBOX", [msg], mode)
        assert b" OK" in st, st
    finally:
        c.logout()
    n, nxt = _status(dovecot, "toobig")
    assert n == before[0] + 1
    stored = dovecot.fetch_bodies("toobig")
    assert stored[nxt - 1] == msg


def test_toobig_in_multiappend(small_gw, dovecot):
    """The second message of a MULTIAPPEND is too large: the whole command
    is refused, the first message is not stored either."""
    before = _status(dovecot, "toobig")
    c = _login(small_gw.port(), "toobig")
    try:
        st, rs, conts = append_raw(c, "INBOX", [CLEAN, _sized(80000)],
                                   "plus")
        assert re.match(rb"t\d+ NO \[TOOBIG\]", st), st
        st, _ = c.command("NOOP")
        assert b"OK" in st
    finally:
        c.logout()
    assert _status(dovecot, "toobig") == before


def test_appendlimit_is_max_email_size(small_gw):
    c = _login(small_gw.port(), "toobig")
    try:
        st, rs = c.command("CAPABILITY")
        caps = b" ".join(r.line for r in rs).split()
        assert b"APPENDLIMIT=65536" in caps, caps
        assert len([x for x in caps if x.startswith(b"APPENDLIMIT")]) == 1
    finally:
        c.logout()
