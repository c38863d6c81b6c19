"""Access rules and dispositions; a backend that is down."""

import re
import socket
import time

import pytest

from dovecot import free_port
from gateway import policy
from conftest import check_no_crash
from rawimap import RawIMAP, expect_closed_without_data

pytestmark = pytest.mark.gateway


@pytest.fixture(scope="module")
def gw_policies(dovecot, request):
    """One gateway with a listener per case."""
    import gateway as gwm
    dead = free_port()        # nobody listens here: connection refused
    pols = [
        policy("nomatch", free_port(), "dovecot", frm=["10.0.0.0/8"]),
        policy("deny", free_port(), "dovecot", disposition="deny"),
        policy("deny-reset", free_port(), "dovecot",
               disposition="deny-reset"),
        policy("down", free_port(), "deadpool"),
        policy("ok", free_port(), "dovecot"),
    ]
    g = gwm.Gateway(servers={"dovecot": [dovecot.address],
                             "deadpool": ["127.0.0.1:%d" % dead]},
                    policies=pols, connect_timeout="3s")
    g.dead_port = dead
    g.start()
    yield g
    g.stop()


@pytest.fixture
def gp(gw_policies, request):
    off = gw_policies.log_offset()
    yield gw_policies
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("\n---- imapgwd log during the test ----")
        print(gw_policies.log_since(off)[-20000:])
    check_no_crash(gw_policies, off)


def test_source_not_allowed_is_closed_without_greeting(gp):
    how, data = expect_closed_without_data(gp.port("nomatch"))
    assert data == b"", data
    assert how in ("eof", "reset"), how


def test_disposition_deny_closes_quietly(gp):
    how, data = expect_closed_without_data(gp.port("deny"))
    assert data == b"", data
    assert how == "eof", how


def test_disposition_deny_reset_sends_rst(gp):
    how, data = expect_closed_without_data(gp.port("deny-reset"))
    assert data == b"", data
    assert how == "reset", how


def test_backend_down_says_unavailable(gp):
    off = gp.log_offset()
    s = socket.create_connection(("127.0.0.1", gp.port("down")), timeout=20)
    lport = s.getsockname()[1]
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    finally:
        s.close()
    first = data.split(b"\r\n")[0]
    assert first.startswith(b"* BYE [UNAVAILABLE]"), data
    assert data.endswith(b"\r\n"), data
    # the log names the server that could not be reached, on a line that
    # says what failed (not just the session start line)
    rx = (r"(?im)^(?=.*(unavailable|refused|unreachable|error|fail))"
          r"(?=.*(deadpool|127\.0\.0\.1:%d)).*$" % gp.dead_port)
    m = gp.wait_log(rx, since=off, timeout=5)
    assert m, gp.log_since(off)
    # and the session end line counts the BYE the client got
    m = gp.wait_log(r"(?m)^.*session end\b.*client=127\.0\.0\.1:%d\b.*$"
                    % lport, since=off, timeout=5)
    assert m, gp.log_since(off)
    out = re.search(r"\b(?:bytes_out|out)=(\d+)", m.group(0))
    assert out and int(out.group(1)) == len(data), (len(data), m.group(0))


def test_denied_and_failed_sessions_leave_gateway_serving(gp):
    """After every refusal and a backend failure, new sessions still work
    (each netd worker gets several)."""
    for port in ("nomatch", "deny", "deny-reset", "down"):
        for _ in range(2):
            expect_closed_without_data(gp.port(port))
    time.sleep(0.2)
    for _ in range(6):
        c = RawIMAP(gp.port("ok"), timeout=10)
        try:
            c.login("dave", "secret")
            st, _ = c.command("NOOP")
            assert b"OK" in st
        finally:
            c.logout()
    assert gp.alive()
