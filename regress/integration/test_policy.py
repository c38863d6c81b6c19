"""Access rules and dispositions; a backend that is down."""

import re
import time

import pytest

from dovecot import free_port
from gateway import policy
from rawimap import expect_closed_without_data

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
    how, data = expect_closed_without_data(gp.port("down"), timeout=20)
    first = data.split(b"\r\n")[0]
    assert first.startswith(b"* BYE [UNAVAILABLE]"), data
    assert data.endswith(b"\r\n"), data
    assert how in ("eof", "reset")
    # the log names the server that could not be reached
    m = gp.wait_log(r"(?m)^.*(deadpool|127\.0\.0\.1:%d).*$" % gp.dead_port,
                    since=off, timeout=5)
    assert m, gp.log_since(off)
