"""servers.<pool>.connect: lazy, the default (imapgwd.yaml(5), imapgwd(8)
RELAY).

A lazy pool's client is greeted at once with the greeting the pool's
server gave this netd before (the first session of a netd, and of each
configuration, meets the server first, as an eager pool does); the server
is met at the client's first command for it, and its greeting is checked
against the one the client got before anything goes to it.  A client that
never asks for anything (a port scan, a TLS handshake and goodbye) costs
the server nothing.

Real Dovecot (its log shows which connections reached it: the ID with the
real client's port comes first on each), real clients (imaplib, curl);
servers that change their greeting, refuse or greet PREAUTH come from
tlsfake.py, since no Dovecot does that between two connections.
"""

import imaplib
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

import certs as certs_mod
import dovecot as dovecot_mod
import gateway as gateway_mod
from conftest import DIRECT, PASSWORD
from rawimap import first_line
from tlsfake import TLSFake

pytestmark = pytest.mark.gateway
free_port = dovecot_mod.free_port
USER = "carol"


@pytest.fixture(autouse=True)
def _not_direct():
    if DIRECT:
        pytest.skip("IMAPGW_TEST_DIRECT=1")


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="imapgw-lazy-certs.")
    f = certs_mod.CertFactory(d)
    f.server("server")
    yield f
    shutil.rmtree(d, ignore_errors=True)


def lazy_gw(make_gateway, member, port, connect=None, workers=(1, 1, 1),
            extra=None, **pol):
    """A gateway with one netd (one learned greeting) in front of member,
    its pool's connect as given (None: not said, the default: lazy)."""
    srv = {"members": [member]}
    if connect is not None:
        srv["connect"] = connect
    srv.update(extra or {})
    return make_gateway(
        servers={"pool": srv},
        policies=[gateway_mod.policy("imap-in", port, "pool", **pol)],
        workers=workers)


def greeting_and_close(port, ctx=None):
    """The greeting line; the client then leaves without a command."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        return first_line(s), s.getsockname()[1]
    finally:
        s.close()


def reached_dovecot(d, off, lport):
    """Did a connection of the client on local port lport reach Dovecot?
    (The gateway's ID names the client's port, first thing on every
    backend connection.)"""
    return re.search(r"x-originating-port=%d\b" % lport, d.log_since(off))


def login_tagged(sock, f, tag):
    """Send `tag LOGIN` (and a LOGOUT after it); the tagged answer to
    the LOGIN, past the untagged lines before it."""
    sock.sendall(b"%s LOGIN %s %s\r\nz LOGOUT\r\n" %
                 (tag, USER.encode(), PASSWORD.encode()))
    ln = f.readline()
    while ln.startswith(b"* "):
        ln = f.readline()
    return ln


def session_ended(g, lport, timeout=10):
    return g.wait_log(r"session end\b.*client=127\.0\.0\.1:%d\b.*$" % lport,
                      timeout=timeout)


@pytest.mark.parametrize("connect", [None, "lazy"])
def test_lazy_greets_without_server(make_gateway, dovecot, connect):
    """A pool that says nothing (the default) or connect: lazy.  The
    first session meets Dovecot; later ones that leave after the greeting
    never do, and get the same greeting byte for byte; the one that logs
    in meets Dovecot at its LOGIN, with the ID (the client's own address)
    first, and works as through an eager pool."""
    port = free_port()
    g = lazy_gw(make_gateway, dovecot.address, port, connect=connect)
    off = dovecot.log_offset()
    first, lp = greeting_and_close(port)
    assert first.startswith(b"* OK [CAPABILITY "), first
    assert dovecot.wait_log(r"x-originating-port=%d\b" % lp, since=off)
    assert session_ended(g, lp)
    off = dovecot.log_offset()
    ports = []
    for _ in range(5):
        again, lp = greeting_and_close(port)
        assert again == first
        ports.append(lp)
    for lp in ports:
        m = session_ended(g, lp)
        assert m and 'reason="client closed"' in m.group(0), m
    c = imaplib.IMAP4("127.0.0.1", port)
    lp = c.sock.getsockname()[1]
    assert c.welcome + b"\r\n" == first
    c.login(USER, PASSWORD)
    typ, data = c.select("INBOX")
    assert typ == "OK", data
    c.logout()
    log = dovecot.log_since(off)
    for p in ports:
        assert not reached_dovecot(dovecot, off, p), log
    m_id = re.search(r"ID sent: x-originating-ip=127\.0\.0\.1, "
                     r"x-originating-port=%d\b.*session=<([^>]+)>" % lp, log)
    assert m_id, log
    m_login = re.search(r"Login: user=<%s>.*session=<%s>" %
                        (USER, re.escape(m_id.group(1))), log)
    assert m_login and m_login.start() > m_id.start(), log


def test_eager_meets_server_every_time(make_gateway, dovecot):
    """Control: an eager pool meets the server for every client, as the
    test above shows the lazy one does not."""
    port = free_port()
    lazy_gw(make_gateway, dovecot.address, port, connect="eager")
    greeting_and_close(port)
    off = dovecot.log_offset()
    _, lp = greeting_and_close(port)
    assert dovecot.wait_log(r"x-originating-port=%d\b" % lp, since=off)


def test_lazy_pipelined_first_commands(make_gateway, dovecot):
    """Commands the client sends in one write before the server is met
    all go, in order, once it is."""
    port = free_port()
    lazy_gw(make_gateway, dovecot.address, port)
    greeting_and_close(port)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    try:
        assert f.readline().startswith(b"* OK")
        s.sendall(b"a NOOP\r\nb CAPABILITY\r\nc LOGIN %s %s\r\n"
                  b"d SELECT INBOX\r\ne LOGOUT\r\n" %
                  (USER.encode(), PASSWORD.encode()))
        tagged = []
        while True:
            ln = f.readline()
            if not ln:
                break
            if not ln.startswith(b"*"):
                tagged.append(ln.split(b" ", 2)[:2])
    finally:
        f.close()
        s.close()
    assert tagged == [[b"a", b"OK"], [b"b", b"OK"], [b"c", b"OK"],
                      [b"d", b"OK"], [b"e", b"OK"]], tagged


def test_lazy_idle_before_first_command(make_gateway, dovecot):
    port = free_port()
    g = lazy_gw(make_gateway, dovecot.address, port, idle_timeout="2s")
    greeting_and_close(port)
    off = dovecot.log_offset()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    lp = s.getsockname()[1]
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    t0 = time.monotonic()
    assert f.readline().startswith(b"* BYE Idle timeout")
    assert f.readline() == b""
    assert 1.5 < time.monotonic() - t0 < 8
    f.close()
    s.close()
    m = session_ended(g, lp)
    assert m and "idle timeout" in m.group(0)
    assert not reached_dovecot(dovecot, off, lp)


def test_lazy_server_down(make_gateway):
    """The server went away after it greeted: the client is greeted, and
    its first command gets BYE [UNAVAILABLE]; the log says why."""
    d = dovecot_mod.Dovecot(users={USER: PASSWORD}).start()
    try:
        port = free_port()
        g = lazy_gw(make_gateway, d.address, port)
        greeting_and_close(port)
    finally:
        d.stop()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    try:
        assert f.readline().startswith(b"* OK [CAPABILITY")
        s.sendall(b"a LOGIN %s %s\r\n" % (USER.encode(), PASSWORD.encode()))
        assert f.readline() == b"* BYE [UNAVAILABLE] Server unavailable\r\n"
        assert f.readline() == b""
    finally:
        f.close()
        s.close()
    assert g.wait_log(r"backend unavailable.*error=\"?Connection refused",
                      timeout=5), g.log_tail()


@pytest.mark.parametrize("second,why", [
    (b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] new ready\r\n",
     "server capabilities changed since the client was greeted"),
    (b"* BYE too many connections\r\n", "server refused the connection"),
    (b"* PREAUTH [CAPABILITY IMAP4rev1] hello\r\n",
     "server greeted PREAUTH"),
])
def test_lazy_greeting_checked(make_gateway, second, why):
    """The server's own greeting is checked before the client's command
    goes: other capabilities than the client was told, a refusal or
    PREAUTH end the session with BYE [UNAVAILABLE] and nothing of the
    client's reaches the server; a changed OK greeting is what the next
    client gets."""
    fake = TLSFake(greeting=b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] "
                   b"fake ready\r\n").start()
    try:
        port = free_port()
        g = lazy_gw(make_gateway, fake.address, port,
                    extra={"send_id": False})
        first, _ = greeting_and_close(port)
        assert first.startswith(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN")
        fake.greeting = second
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        f = s.makefile("rb")
        try:
            assert f.readline() == first
            s.sendall(b"a LOGIN u p\r\n")
            assert f.readline() == (b"* BYE [UNAVAILABLE] Server "
                                    b"unavailable\r\n")
            assert f.readline() == b""
        finally:
            f.close()
            s.close()
        assert g.wait_log(r"backend unavailable.*%s" % re.escape(why),
                          timeout=5), g.log_tail()
        time.sleep(0.3)
        assert all(b"LOGIN" not in ln for c in fake.conns for ln in c.plain)
        third, _ = greeting_and_close(port)
        if second.startswith(b"* OK"):
            assert third.startswith(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN "
                                    b"ID APPENDLIMIT="), third
            assert third.endswith(b"] new ready\r\n"), third
        else:
            assert third == first   # a refusal is not kept
    finally:
        fake.stop()


def _ctx(pki):
    return ssl.create_default_context(cafile=pki.ca_cert)


def test_lazy_tls_client_side(make_gateway, dovecot, pki):
    """Implicit TLS and STARTTLS in front of a lazy pool: the TLS client
    that leaves after the greeting never reaches Dovecot; with TLS
    required, a LOGIN before STARTTLS is refused by the gateway without
    meeting the server; after STARTTLS the capabilities are fresh and the
    login works."""
    port, iport = free_port(), free_port()
    c = pki.certs["server"]
    g = make_gateway(
        servers={"pool": {"members": [dovecot.address], "connect": "lazy"}},
        policies=[gateway_mod.policy(
            "imap-in", port, "pool",
            listen=["127.0.0.1:%d" % port,
                    {"address": "127.0.0.1:%d" % iport, "tls": "implicit"}],
            tls={"mode": "required", "certificate": "gateway"})],
        certificates={"gateway": {"cert": c.chain, "key": c.key}},
        workers=(1, 1, 1))
    first, _ = greeting_and_close(iport, _ctx(pki))
    off = dovecot.log_offset()
    again, lp = greeting_and_close(iport, _ctx(pki))
    assert again == first and b"STARTTLS" not in again
    m = session_ended(g, lp)
    assert m and 'reason="client closed"' in m.group(0)
    # plain, TLS required: the pre-TLS greeting, the refusal, STARTTLS
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    plp = s.getsockname()[1]
    f = s.makefile("rb")
    greet = f.readline()
    assert b"STARTTLS" in greet and b"LOGINDISABLED" in greet, greet
    s.sendall(b"a LOGIN %s %s\r\n" % (USER.encode(), PASSWORD.encode()))
    assert f.readline().startswith(b"a NO [PRIVACYREQUIRED]")
    s.sendall(b"b STARTTLS\r\n")
    assert f.readline().startswith(b"b OK")
    f.close()
    t = _ctx(pki).wrap_socket(s, server_hostname="localhost")
    f = t.makefile("rb")
    t.sendall(b"c CAPABILITY\r\n")
    caps = f.readline()
    assert caps.startswith(b"* CAPABILITY") and b"STARTTLS" not in caps and \
        b"LOGINDISABLED" not in caps, caps
    assert f.readline().startswith(b"c OK")
    assert login_tagged(t, f, b"d").startswith(b"d OK")
    f.close()
    t.close()
    log = dovecot.log_since(off)
    assert not reached_dovecot(dovecot, off, lp), log
    assert dovecot.wait_log(r"x-originating-port=%d\b" % plp, since=off)


@pytest.fixture(scope="module")
def tdove(pki):
    s = pki.certs["server"]
    d = dovecot_mod.tls_dovecot(s.chain, s.key, users={USER: PASSWORD})
    d.start()
    yield d
    d.stop()


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_lazy_tls_to_server(make_gateway, tdove, pki, mode):
    """A lazy pool with TLS to its members: the server is met, TLS and
    all, at the first command; the greeting checked is the one inside TLS
    (implicit) or the one before STARTTLS (starttls)."""
    port = free_port()
    member = "127.0.0.1:%d" % (tdove.imaps_port if mode == "implicit"
                               else tdove.port)
    g = make_gateway(
        servers={"pool": {"members": [member], "tls": mode,
                          "tls_profile": "testca",
                          "server_name": "localhost", "connect": "lazy"}},
        policies=[gateway_mod.policy("imap-in", port, "pool")],
        tls_profiles={"testca": {"ca_file": pki.ca_cert}},
        workers=(1, 1, 1))
    first, _ = greeting_and_close(port)
    off = tdove.log_offset()
    c = imaplib.IMAP4("127.0.0.1", port)
    assert c.welcome + b"\r\n" == first
    c.login(USER, PASSWORD)
    assert c.select("INBOX")[0] == "OK"
    c.logout()
    m = tdove.wait_log(r"imap-login: .*Login: user=<%s>.*" % USER, since=off)
    assert m and "TLS" in m.group(0), tdove.log_since(off)
    assert g.wait_log(r"server tls\b.*server=pool", timeout=5)


def test_curl_through_lazy(make_gateway, dovecot):
    """A real client that logs in at once (curl) through a lazy pool."""
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    port = free_port()
    lazy_gw(make_gateway, dovecot.address, port)
    greeting_and_close(port)
    r = subprocess.run(["curl", "-s", "--max-time", "15",
                        "imap://127.0.0.1:%d/INBOX?NEW" % port,
                        "-u", "%s:%s" % (USER, PASSWORD)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr


def test_lazy_checked_against_what_this_client_got(make_gateway):
    """Two clients greeted with the old greeting; the server changes its
    capabilities.  The first to send a command is ended and the new
    greeting is kept; the second is still checked against the greeting
    it got, not the one kept since, and is ended too."""
    fake = TLSFake(greeting=b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] "
                   b"fake ready\r\n").start()
    try:
        port = free_port()
        lazy_gw(make_gateway, fake.address, port, extra={"send_id": False})
        first, _ = greeting_and_close(port)
        socks = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            f = s.makefile("rb")
            assert f.readline() == first
            socks.append((s, f))
        fake.greeting = (b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] "
                         b"new ready\r\n")
        for s, f in socks:
            s.sendall(b"a LOGIN u p\r\n")
            assert f.readline() == (b"* BYE [UNAVAILABLE] Server "
                                    b"unavailable\r\n")
            f.close()
            s.close()
        third, _ = greeting_and_close(port)
        assert b" ID " in third and third.endswith(b"new ready\r\n"), third
    finally:
        fake.stop()


def test_lazy_across_reload(make_gateway, dovecot):
    """A reload starts afresh: the first client under the new
    configuration meets the server again (and is greeted by it); a client
    greeted under the old one, still waiting, logs in as before."""
    port = free_port()
    g = lazy_gw(make_gateway, dovecot.address, port)
    greeting_and_close(port)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    try:
        assert f.readline().startswith(b"* OK [CAPABILITY")
        off = g.log_offset()
        g.write_config()
        g.reload()
        assert g.wait_log(r"netd\[\d+\]: using config generation 2",
                          since=off, timeout=10), g.log_since(off)
        doff = dovecot.log_offset()
        _, lp = greeting_and_close(port)
        assert dovecot.wait_log(r"x-originating-port=%d\b" % lp, since=doff)
        _, lp2 = greeting_and_close(port)
        time.sleep(0.3)
        assert not reached_dovecot(dovecot, doff, lp2)
        assert login_tagged(s, f, b"a").startswith(b"a OK")
    finally:
        f.close()
        s.close()
