"""The block action and the auto-block list.

An action whose filenames rule `*.exe` says block: a message with a
setup.exe attachment fetched through the gateway ends the connection
before a byte of the attachment reaches the client, and the parent puts
127.0.0.1 on the auto-block list; from then on a connection from
127.0.0.1 is closed at once, without a greeting, by every netd (a netd
respawned included), until `imapgwctl unblock 127.0.0.1` removes the
entry or it expires.  A reload keeps the list, and its new duration (2s)
applies to the next block: an upload (APPEND) of the same message, which
never reaches Dovecot, then expires by itself.  With an exception
127.0.0.0/8 a block only drops the session.
"""

import base64
import os
import re
import signal
import time

import pytest

from conftest import CRASH
from dovecot import free_port
from gateway import Gateway, policy
from rawimap import RawIMAP, expect_closed_without_data, read_all

pytestmark = pytest.mark.gateway

PW = "secret"
USER = "scanerr"          # its INBOX is emptied first, as test_scan_fetch does
ACTION = {"inherit": "IMAP-Server.Standard",
          "filenames": {"rules": [{"match": "*.exe", "action": "block"}]}}

# What the client must never see: the attachment, as it is stored.
PAYLOAD = b"imapgw block test payload " * 40
PAYLOAD_B64 = base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")
EXE_MSG = (b"From: Mallory <mallory@example.org>\r\n"
           b"To: scanerr@example.org\r\n"
           b"Subject: your installer\r\n"
           b"Message-ID: <imapgw-block-1@example.org>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"bb\"\r\n\r\n"
           b"--bb\r\nContent-Type: text/plain\r\n\r\nrun the attachment\r\n"
           b"--bb\r\nContent-Type: application/octet-stream; "
           b"name=\"setup.exe\"\r\n"
           b"Content-Disposition: attachment; filename=\"setup.exe\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + PAYLOAD_B64 +
           b"--bb--\r\n")


def _one_message(dovecot):
    """USER's INBOX holds exactly EXE_MSG."""
    c = dovecot.connect(USER)
    try:
        typ, data = c.select("INBOX")
        if int(data[0]):
            c.store("1:*", "+FLAGS", r"(\Deleted)")
            c.expunge()
    finally:
        c.logout()
    dovecot.append(USER, EXE_MSG)
    assert len(dovecot.fetch_bodies(USER)) == 1


def _gateway(make_gateway, auto_block, workers=(1, 1, 1)):
    """A gateway whose policy uses ACTION, with auto_block (YAML text)
    appended to its config; g.auto_block may be changed, then
    g.write_config() and g.reload()."""
    g = make_gateway(actions={"block-act": ACTION},
                     policies=[policy("imap-in", free_port(), "dovecot",
                                      action="block-act")],
                     workers=workers, start=False)
    g.auto_block = auto_block
    g.config_text = lambda *a, **kw: \
        Gateway.config_text(g, *a, **kw) + g.auto_block
    g.start()
    return g


def _fetch_dropped(g):
    """Fetch the message through g: the gateway closes the connection and
    no byte of the attachment arrives."""
    c = RawIMAP(g.port(), timeout=30)
    try:
        c.login(USER, PW)
        c.command("EXAMINE INBOX")
        c.send(b"f1 FETCH 1 (BODY.PEEK[])\r\n")
        data, how = read_all(c, timeout=15)
    finally:
        c.close()
    assert how in ("eof", "reset"), (how, data[:300])
    assert PAYLOAD_B64[:76] not in data and PAYLOAD[:40] not in data, \
        "the attachment reached the client: %r" % data[:300]
    assert not re.search(rb"(?m)^f1 OK", data), data[:300]


def _append_dropped(g, dovecot):
    """Upload the message through g: the gateway takes the literal, then
    closes the connection; Dovecot never gets it."""
    before = dovecot.status(USER)["UIDNEXT"]
    c = RawIMAP(g.port(), timeout=30)
    try:
        c.login(USER, PW)
        c.send(b"a1 APPEND INBOX {%d}\r\n" % len(EXE_MSG))
        r = c.read_response()
        assert r.line.startswith(b"+"), r
        c.send(EXE_MSG + b"\r\n")
        data, how = read_all(c, timeout=15)
    finally:
        c.close()
    assert how in ("eof", "reset"), (how, data[:300])
    assert not re.search(rb"(?m)^a1 OK", data), data[:300]
    assert dovecot.status(USER)["UIDNEXT"] == before, \
        "the blocked upload reached Dovecot"


def _refused(g, n=1):
    """n connections in a row are closed at once without a byte."""
    for _ in range(n):
        assert expect_closed_without_data(g.port(), timeout=5) == \
            ("eof", b"")


def _accepted(g):
    c = RawIMAP(g.port(), timeout=10)     # reads the greeting
    c.logout()


def _blocked(g):
    r = g.ctl("blocked")
    assert r.returncode == 0, r
    return r.stdout.decode()


def _site_blocked(g, since, extra=""):
    """The parent's log line for the block, then a moment for every netd
    to take the entry."""
    m = g.wait_log(r"\bparent\[\d+\]: site blocked address=127\.0\.0\.1 "
                   r".*%s.*$" % extra, since=since)
    assert m, g.log_since(since)
    time.sleep(0.3)
    return m.group(0)


def test_block_refuse_unblock_reload_expire(make_gateway, dovecot):
    _one_message(dovecot)
    g = _gateway(make_gateway, "auto_block: { duration: 20m }\n",
                 workers=(2, 1, 1))

    # A fetch that the block action ends.
    off = g.log_offset()
    _fetch_dropped(g)
    line = _site_blocked(g, off, r"for=(20m00s|19m5\ds)")
    assert "setup.exe" in line or "*.exe" in line, line
    assert g.wait_log(r"\bnetd\[\d+\]: site blocked client=127\.0\.0\.1:\d+ "
                      r"user=scanerr reason=.*$", since=off), \
        g.log_since(off)
    _refused(g, 4)
    assert g.wait_log(r'\bnetd\[\d+\]: session denied client=127\.0\.0\.1:'
                      r'\d+ policy=imap-in reason="blocked site"$',
                      since=off)
    out = _blocked(g)
    rows = [ln for ln in out.splitlines() if ln.startswith("127.0.0.1 ")]
    assert out.startswith("ADDRESS") and len(rows) == 1, out
    assert re.search(r"^127\.0\.0\.1 +(20m00s|19m\d\ds) +\d{4}-\d\d-\d\d "
                     r"\d\d:\d\d:\d\d .*\.exe", rows[0]), out

    # A respawned netd gets the list before it accepts.
    m = CRASH.search(g.log_text())
    assert not m, m.group(0)
    g.expect_crash = True
    old = g.pids_of("netd")
    assert len(old) == 2, g.roles()
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    end = time.time() + 10
    while time.time() < end and \
            (len(g.pids_of("netd")) < 2 or set(g.pids_of("netd")) & set(old)):
        time.sleep(0.05)
    g.wait_workers(timeout=10)
    assert not set(g.pids_of("netd")) & set(old), g.roles()
    _refused(g, 4)

    # A reload keeps the list; its new duration is for new entries.
    off = g.log_offset()
    g.auto_block = "auto_block: { duration: 2s }\n"
    g.write_config()
    g.reload()
    assert g.wait_log(r"configuration reloaded \(generation 2\)",
                      since=off), g.log_since(off)
    _refused(g, 2)
    assert re.search(r"(?m)^127\.0\.0\.1 +(20m00s|19m\d\ds) ", _blocked(g))

    # unblock lets the next connection in; a second unblock finds none.
    # (an IPv4-mapped IPv6 address is its IPv4 address)
    r = g.ctl("unblock", "::ffff:127.0.0.1")
    assert r.returncode == 0 and r.stdout == b"127.0.0.1 unblocked\n", r
    time.sleep(0.3)
    _accepted(g)
    _accepted(g)
    r = g.ctl("unblock", "127.0.0.1")
    assert r.returncode == 1, r
    assert b"127.0.0.1 is not on the auto-block list" in r.stdout, r
    r = g.ctl("unblock", "::1")
    assert r.returncode == 1 and b"::1 is not on" in r.stdout, r
    r = g.ctl("unblock", "not-an-address")
    assert r.returncode == 2 and b"not an IPv4 or IPv6" in r.stderr, r
    assert _blocked(g) == "no blocked sites\n"
    assert g.wait_log(r"\bparent\[\d+\]: site unblocked "
                      r"address=127\.0\.0\.1$", since=off)

    # An upload blocks too, for the new 2s, and expires by itself.
    off = g.log_offset()
    _append_dropped(g, dovecot)
    _site_blocked(g, off, r"for=[12]s")
    _refused(g, 2)
    assert re.search(r"(?m)^127\.0\.0\.1 +[12]s ", _blocked(g))
    assert g.wait_log(r"\bparent\[\d+\]: block expired address=127\.0\.0\.1$",
                      since=off, timeout=5), g.log_since(off)
    _accepted(g)
    assert _blocked(g) == "no blocked sites\n"


def test_block_exception_only_drops(make_gateway, dovecot):
    _one_message(dovecot)
    g = _gateway(make_gateway, "auto_block:\n  duration: 20m\n"
                 "  exceptions: [ 127.0.0.0/8, \"2001:db8::/32\" ]\n")
    off = g.log_offset()
    _fetch_dropped(g)
    m = g.wait_log(r"\bparent\[\d+\]: site not blocked address=127\.0\.0\.1 "
                   r"exception=127\.0\.0\.0/8 .*$", since=off)
    assert m, g.log_since(off)
    time.sleep(0.3)
    _accepted(g)
    assert _blocked(g) == "no blocked sites\n"
    assert not re.search(r"parent\[\d+\]: site blocked ",
                         g.log_since(off)), g.log_since(off)
