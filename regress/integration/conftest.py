"""Fixtures: a throwaway Dovecot and imapgwd gateways in front of it.

Every test talks to the gateway's port, never to Dovecot's, unless it
compares with a direct fetch on purpose.

IMAPGW_TEST_DIRECT=1 runs the protocol tests straight against Dovecot (to
check the harness itself while no daemon exists); gateway-only tests are
skipped in that mode.  It is a development aid: `make check` never sets it.
IMAPGW_KEEP=1 keeps gateway directories (config, log) for inspection.
"""

import contextlib
import os
import re
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)

import dovecot as dovecot_mod  # noqa: E402
import gateway as gateway_mod  # noqa: E402

DIRECT = os.environ.get("IMAPGW_TEST_DIRECT") == "1"
PASSWORD = "secret"
USERS = ["alice", "bob", "carol", "dave", "bulk", "idler", "lplus", "syncer",
         "fetcher", "curler", "logger", "reloader", "hooker", "sandbox",
         "caps", "scandshared", "aptreload",
         # test_relay.py, test_cli.py
         "silent", "early", "active", "longline", "shortline", "literal",
         "halfclose", "bigfetch", "jsonlog", "respawn", "sigterm",
         "ctlreload",
         # test_scan_fetch.py, test_scan_append.py, test_engine.py
         "scanfetch", "scanref", "scanerr", "scanappend", "appendbulk",
         "multiappend", "toobig", "capsuser", "iduser", "authuser",
         "pipeliner", "idler3", "bigscan"]


def pytest_configure(config):
    config.addinivalue_line("markers",
                            "gateway: needs the real gateway (not DIRECT)")


def pytest_collection_modifyitems(config, items):
    if not DIRECT:
        return
    skip = pytest.mark.skip(reason="IMAPGW_TEST_DIRECT=1: gateway-only test")
    for item in items:
        if "gateway" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session", autouse=True)
def must_be_root():
    if os.geteuid() != 0:
        pytest.fail("the integration tests must run as root (they start "
                    "Dovecot and imapgwd, create users and chroot dirs)",
                    pytrace=False)


@pytest.fixture(scope="session")
def dovecot():
    d = dovecot_mod.Dovecot(users={u: PASSWORD for u in USERS})
    d.start()
    yield d
    d.stop()


class DirectGateway:
    """Stand-in for Gateway in DIRECT mode: Dovecot's own port."""

    def __init__(self, d):
        self.d = d

    def port(self, name=None):
        return self.d.port

    def log_offset(self):
        return 0

    def log_since(self, off):
        return ""

    def log_tail(self, n=60):
        return ""

    def alive(self):
        return True


CRASH = re.compile(r"^.*\b(child died|sandbox violation|signal=SIG\w+|"
                   r"AddressSanitizer|runtime error:).*$", re.M)


def check_no_crash(gw, offset):
    """Fail if a child of gw died (crash, kill) since log offset.

    Called after every test, so that a crash a test provoked without
    noticing (e.g. on the error path of a session) is reported."""
    time.sleep(0.1)
    m = CRASH.search(gw.log_since(offset))
    if m:
        pytest.fail("imapgwd child crashed during the test: %s" % m.group(0),
                    pytrace=False)


def _report_log(request, gw, offset):
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stdout.write("\n---- imapgwd log during the test ----\n")
        sys.stdout.write(gw.log_since(offset)[-20000:])


@pytest.fixture(scope="session")
def gw_session(dovecot):
    """The main gateway: one allow policy `imap-in` in front of Dovecot."""
    if DIRECT:
        yield DirectGateway(dovecot)
        return
    port = dovecot_mod.free_port()
    g = gateway_mod.Gateway(
        servers={"dovecot": [dovecot.address]},
        policies=[gateway_mod.policy("imap-in", port, "dovecot")])
    g.start()
    yield g
    g.stop()


@contextlib.contextmanager
def watched(g, request):
    """A gateway shared by tests, for one test: its log printed when the
    test fails, and any child crash during the test fails it."""
    off = g.log_offset()
    yield g
    _report_log(request, g, off)
    if not DIRECT:
        check_no_crash(g, off)


@pytest.fixture
def gw(gw_session, request):
    """The main gateway, with its log printed when the test fails."""
    with watched(gw_session, request) as g:
        yield g


@pytest.fixture
def make_gateway(dovecot, request):
    """Factory for extra gateways (stopped at the end of the test).

    make_gateway(policies=[...], servers={...}, binary=...)

    Set g.expect_crash = True on a gateway whose children are killed on
    purpose; otherwise any child death fails the test at teardown."""
    made = []

    def make(policies=None, servers=None, binary=None, start=True, **kw):
        if servers is None:
            servers = {"dovecot": [dovecot.address]}
        if policies is None:
            policies = [gateway_mod.policy(
                "imap-in", dovecot_mod.free_port(), "dovecot")]
        g = gateway_mod.Gateway(servers=servers, policies=policies,
                                binary=binary, **kw)
        made.append(g)
        if start:
            g.start()
        return g

    yield make
    crashed = []
    for g in made:
        _report_log(request, g, 0)
        if g.proc is not None and not getattr(g, "expect_crash", False):
            m = CRASH.search(g.log_text())
            if m:
                crashed.append(m.group(0))
        g.stop()
    if crashed:
        pytest.fail("imapgwd child crashed during the test: %s" % crashed,
                    pytrace=False)
