"""SIGHUP: a broken file keeps the old config; a good one takes effect for
new sessions while open sessions keep working."""

import time

import pytest

import mailgen
from dovecot import free_port, is_listening
from gateway import policy
from rawimap import RawIMAP

pytestmark = pytest.mark.gateway

BROKEN = [
    # YAML syntax error
    "user: _imapgw\npolicies: [ { name: imap-in, listen: [ \"127.0.0.1:1\" \n",
    # valid YAML, invalid config: policy to a server that does not exist
    None,
]


def _serves(port, user="reloader"):
    c = RawIMAP(port, timeout=10)
    try:
        c.login(user, "secret")
        st, _ = c.command("NOOP")
        return st
    finally:
        c.logout()


def test_sighup_with_broken_config_keeps_old(make_gateway):
    g = make_gateway()
    port = g.port()
    assert b"OK" in _serves(port)
    for broken in BROKEN:
        if broken is None:
            broken = g.config_text(policies=[
                policy("imap-in", free_port(), "no-such-server")])
        off = g.log_offset()
        g.write_config(broken)
        g.reload()
        m = g.wait_log(r"(?im)^.*(error|invalid|fail|unknown).*$", since=off,
                       timeout=10)
        assert m, "no error logged for a broken config:\n" + g.log_since(off)
        time.sleep(0.3)
        assert g.alive(), g.log_tail()
        assert is_listening(port)
        assert b"OK" in _serves(port)


def test_sighup_new_port_open_session_survives(make_gateway, dovecot):
    g = make_gateway()
    old = g.port()
    msg = mailgen.messages(1, seed=99)[0]
    dovecot.append("reloader", msg)
    direct = dovecot.fetch_bodies("reloader")

    c = RawIMAP(old)
    c.login("reloader", "secret")
    c.command("SELECT INBOX")

    new = free_port()
    g.policies = [policy("imap-in", new, "dovecot")]
    g.write_config()
    g.reload()
    end = time.time() + 10
    while time.time() < end and not is_listening(new):
        time.sleep(0.05)
    assert is_listening(new), g.log_tail()

    # new sessions on the new port
    d = RawIMAP(new)
    try:
        d.login("reloader", "secret")
        d.command("SELECT INBOX")
        assert d.fetch_bodies() == direct
    finally:
        d.logout()

    # the session opened before the reload still works
    try:
        st, _ = c.command("NOOP")
        assert b"OK" in st
        assert c.fetch_bodies() == direct
    finally:
        c.logout()

    # and the old listener is gone
    end = time.time() + 10
    while time.time() < end and is_listening(old):
        time.sleep(0.05)
    assert not is_listening(old), "old listen port still open after reload"
    assert g.alive()
