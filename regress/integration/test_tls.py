"""TLS: implicit listeners, STARTTLS per policy, TLS to the backend,
profiles, SNI, resumption, OCSP, key isolation, certificate reload.

Certificates come from regress/lib/certs.py (a test CA, a leaf for
localhost/127.0.0.1, one for mail2.test, expired, wrong-name, self-signed).
The backend is a Dovecot with ssl = yes (STARTTLS on its plain port,
implicit TLS on its imaps port; dovecot.tls_dovecot); behaviour no real
server produces (PREAUTH, [ALERT] before TLS, bytes after a STARTTLS OK)
comes from tlsfake.py.

Tests whose id contains "dovecot" run the same client against Dovecot
itself: they check the harness (certificates, clients, options), not the
gateway.
"""

import base64
import imaplib
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

import certs as certs_mod
from clients import mbsync_pull
import dovecot as dovecot_mod
import gateway as gateway_mod
from conftest import DIRECT, watched
from rawimap import first_line
from tlsfake import TLSFake

PASSWORD = "secret"
USERS = ["tlsuser", "tlsinj", "tlseicar", "tlscurl", "tlssync", "tlsback",
         "tlsreq", "tlsbig"]
ONESUITE = "TLS_CHACHA20_POLY1305_SHA256"
free_port = dovecot_mod.free_port


# ---- fixtures --------------------------------------------------------------

@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="imapgw-tls-certs.",
                         dir="/run" if os.access("/run", os.W_OK) else None)
    f = certs_mod.CertFactory(d)
    f.server("server")
    f.server("mail2", names=["mail2.test"], ips=())
    f.server("server2")                      # for the reload test
    f.server("expired", expired=True)
    f.server("wrongname", names=["wrong.example"], ips=())
    f.self_signed("selfsigned")
    yield f
    if not os.environ.get("IMAPGW_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tdove(pki):
    """Dovecot with TLS (the CA-signed localhost certificate)."""
    s = pki.certs["server"]
    d = dovecot_mod.tls_dovecot(s.chain, s.key,
                                users={u: PASSWORD for u in USERS})
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def bad_doves(pki):
    """{name: Dovecot} serving the expired, wrong-name and self-signed
    certificates."""
    out = {}
    try:
        for n in ("expired", "wrongname", "selfsigned"):
            c = pki.certs[n]
            out[n] = dovecot_mod.tls_dovecot(
                c.chain, c.key, users={"tlsback": PASSWORD}).start()
        yield out
    finally:
        for d in out.values():         # in parallel: each takes ~1 s
            if d.proc is not None and d.proc.poll() is None:
                d.proc.terminate()
        for d in out.values():
            d.stop()


def _certs(pki, *names):
    return {n: {"cert": pki.certs[c].chain, "key": pki.certs[c].key}
            for n, c in names}


def _profiles(pki):
    return {
        "testca": {"ca_file": pki.ca_cert},
        "noverify": {"verify_peer": False},
        "tls13only": {"min_version": "1.3"},
        "onesuite": {"ciphersuites": ONESUITE},
    }


def _module_gateway(pki, servers, policies, certs):
    """A started gateway with the test certificates (certs: (name, pki
    certificate) pairs) and profiles; stopped when the module's fixture
    ends."""
    g = gateway_mod.Gateway(servers=servers, policies=policies,
                            certificates=_certs(pki, *certs),
                            tls_profiles=_profiles(pki))
    g.start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def tgw_module(pki, tdove):
    """One gateway, client side: policies with every tls mode, implicit
    listeners, two certificates (SNI), profiles."""
    if DIRECT:
        pytest.skip("IMAPGW_TEST_DIRECT=1")
    ports = {k: free_port() for k in
             ("en", "en_imp", "req", "req_imp", "dis", "t13", "suite")}
    both = {"mode": "enabled", "certificate": ["gateway", "second"]}
    pol = gateway_mod.policy
    policies = [
        pol("tls-enabled", ports["en"], "dovecot", tls=both),
        pol("tls-required", ports["req"], "dovecot",
            tls={"mode": "required", "certificate": "gateway"},
            listen=["127.0.0.1:%d" % ports["req"],
                    {"address": "127.0.0.1:%d" % ports["req_imp"],
                     "tls": "implicit"}]),
        pol("tls-disabled", ports["dis"], "dovecot",
            tls={"mode": "disabled"}),
        pol("tls13", ports["t13"], "dovecot",
            tls={"mode": "enabled", "certificate": "gateway",
                 "profile": "tls13only"}),
        pol("onesuite", ports["suite"], "dovecot",
            tls={"mode": "enabled", "certificate": "gateway",
                 "profile": "onesuite"}),
    ]
    # implicit listeners next to the plain ones
    policies[0]["listen"].append({"address": "127.0.0.1:%d" %
                                  ports["en_imp"], "tls": "implicit"})
    for p in policies[3:]:
        p["listen"] = [{"address": p["listen"][0], "tls": "implicit"}]
    yield from _module_gateway(
        pki, {"dovecot": [tdove.address]}, policies,
        (("gateway", "server"), ("second", "mail2")))


@pytest.fixture
def tgw(tgw_module, request):
    with watched(tgw_module, request) as g:
        yield g


@pytest.fixture
def make_tls_gateway(pki, make_gateway):
    """Extra gateways (conftest's make_gateway: stopped after the test,
    crashes fail it), with the test certificates and profiles unless
    given."""
    if DIRECT:
        pytest.skip("IMAPGW_TEST_DIRECT=1")

    def make(servers, policies, certificates=None, tls_profiles=None,
             start=True):
        return make_gateway(
            servers=servers, policies=policies, start=start,
            certificates=certificates if certificates is not None else
            _certs(pki, ("gateway", "server")),
            tls_profiles=tls_profiles if tls_profiles is not None else
            _profiles(pki))

    yield make


# ---- helpers ----------------------------------------------------------------

def ctx_ca(pki, **kw):
    c = ssl.create_default_context(cafile=pki.ca_cert)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


class Target:
    """Where a client connects: plain (STARTTLS) and implicit TLS ports,
    and the log that shows what the server saw."""

    def __init__(self, name, plain, imaps):
        self.name = name
        self.plain = plain
        self.imaps = imaps


@pytest.fixture(params=["dovecot", "gateway"])
def tgt(request, tdove):
    if request.param == "dovecot":
        return Target("dovecot", tdove.port, tdove.imaps_port)
    g = request.getfixturevalue("tgw")
    return Target("gateway", g.port("tls-enabled", tls="none"),
                  g.port("tls-enabled", tls="implicit"))


class Raw:
    """A line-level IMAP client that can turn TLS on in the middle."""

    def __init__(self, port, timeout=10, tls_ctx=None, sni=None):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        if tls_ctx is not None:
            self.sock = tls_ctx.wrap_socket(self.sock, server_hostname=sni)
        self.buf = b""
        self.log = b""

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed; got %r" % self.log[-400:])
        self.buf += d
        self.log += d

    def line(self):
        while b"\n" not in self.buf:
            self._fill()
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln + b"\n"

    def send(self, data):
        self.sock.sendall(data)

    def cmd(self, tag, text):
        """Send `tag text`, return (untagged lines, tagged line)."""
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def until(self, tag):
        out = []
        while True:
            ln = self.line()
            if ln.startswith(tag + b" "):
                return out, ln
            out.append(ln)

    def read_rest(self, wait=1.0):
        """Whatever arrives within wait seconds (until EOF)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        out = self.buf
        self.buf = b""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    break
                out += d
                self.log += d
        except (socket.timeout, ssl.SSLError, OSError):
            pass
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass
        return out

    def starttls(self, ctx, sni="localhost"):
        assert self.buf == b"", "plaintext left before TLS: %r" % self.buf
        self.sock = ctx.wrap_socket(self.sock, server_hostname=sni)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def caps_of(lines):
    for ln in lines:
        if ln.upper().startswith(b"* CAPABILITY "):
            return set(ln.upper().split()[2:])
    return set()


def s_client(port, *args, data=b"a LOGOUT\n", timeout=15, ign_eof=True):
    """openssl s_client output (stdout+stderr) and return code.  With
    ign_eof it runs until the server closes (after data's LOGOUT)."""
    r = subprocess.run(["openssl", "s_client", "-connect",
                        "127.0.0.1:%d" % port, "-crlf"] +
                       (["-ign_eof"] if ign_eof else []) + list(args),
                       input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace")


def _need(tool):
    if shutil.which(tool) is None:
        pytest.fail("%s is not installed (make deps installs it)" % tool)


def _seed(d, user, msgs):
    c = d.connect(user)
    try:
        c.select("INBOX")
        typ, data = c.search(None, "ALL")
        if data[0]:
            c.store(b",".join(data[0].split()).decode(), "+FLAGS",
                    "(\\Deleted)")
            c.expunge()
    finally:
        c.logout()
    return d.append(user, msgs)


def _msg(n):
    return (b"From: a@example.org\r\nTo: b@example.org\r\n"
            b"Subject: tls test %d\r\nMessage-ID: <tls-%d@example.org>\r\n"
            b"\r\nhello over tls %d\r\n" % (n, n, n))


# ---- harness ----------------------------------------------------------------

def test_harness_certificates(pki):
    ca = pki.ca_cert
    ok = subprocess.run(["openssl", "verify", "-CAfile", ca,
                         pki.certs["server"].cert, pki.certs["mail2"].cert],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert ok.returncode == 0, ok.stdout
    for n, why in (("expired", "expired"), ("selfsigned", "")):
        r = subprocess.run(["openssl", "verify", "-CAfile", ca,
                            pki.certs[n].cert],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert r.returncode != 0 and why in r.stdout.decode(), n
    r = subprocess.run(["openssl", "verify", "-CAfile", ca, "-verify_ip",
                        "127.0.0.1", pki.certs["wrongname"].cert],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert r.returncode != 0, r.stdout
    for c in pki.certs.values():
        assert os.stat(c.key).st_mode & 0o777 == 0o600


# ---- client side: implicit TLS and STARTTLS ------------------------------

def test_implicit_imaplib(tgt, tdove, pki):
    c = imaplib.IMAP4_SSL("127.0.0.1", tgt.imaps, ssl_context=ctx_ca(pki),
                          timeout=15)
    try:
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert b"STARTTLS" not in [x.encode() for x in c.capabilities]
        typ, _ = c.login("tlsuser", PASSWORD)
        assert typ == "OK"
        typ, _ = c.select("INBOX")
        assert typ == "OK"
    finally:
        c.logout()


def test_starttls_imaplib(tgt, pki):
    c = imaplib.IMAP4("127.0.0.1", tgt.plain, timeout=15)
    try:
        assert "STARTTLS" in c.capabilities
        c.starttls(ssl_context=ctx_ca(pki))
        typ, data = c.capability()
        caps = set(data[0].upper().split())
        assert b"STARTTLS" not in caps, caps
        assert b"LOGINDISABLED" not in caps, caps
        typ, _ = c.login("tlsuser", PASSWORD)
        assert typ == "OK"
    finally:
        c.logout()


def test_mode_disabled(tgw):
    r = Raw(tgw.port("tls-disabled"))
    try:
        r.line()
        lines, tagged = r.cmd(b"a", b"CAPABILITY")
        assert b"STARTTLS" not in caps_of(lines)
        lines, tagged = r.cmd(b"b", b"STARTTLS")
        assert tagged.startswith(b"b NO"), tagged
        # still plaintext and usable
        lines, tagged = r.cmd(b"c", b"LOGIN tlsuser " + PASSWORD.encode())
        assert tagged.startswith(b"c OK"), tagged
    finally:
        r.close()


def test_mode_enabled_caps(tgw, pki):
    r = Raw(tgw.port("tls-enabled", tls="none"))
    try:
        r.line()
        lines, _ = r.cmd(b"a", b"CAPABILITY")
        caps = caps_of(lines)
        assert b"STARTTLS" in caps and b"LOGINDISABLED" not in caps, caps
        _, tagged = r.cmd(b"b", b"STARTTLS")
        assert tagged.startswith(b"b OK"), tagged
        r.starttls(ctx_ca(pki))
        lines, tagged = r.cmd(b"c", b"CAPABILITY")
        caps = caps_of(lines)
        assert tagged.startswith(b"c OK") and b"IMAP4REV1" in caps, lines
        assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
        # no second STARTTLS inside TLS
        _, tagged = r.cmd(b"d", b"STARTTLS")
        assert tagged[:4] in (b"d NO", b"d BA"), tagged
        _, tagged = r.cmd(b"e", b"NOOP")
        assert tagged.startswith(b"e OK"), tagged
    finally:
        r.close()


def test_starttls_after_login_refused(tgt):
    """STARTTLS only in the not-authenticated state (RFC 3501 6.2.1)."""
    r = Raw(tgt.plain)
    try:
        r.line()
        _, tagged = r.cmd(b"a", b"LOGIN tlsuser " + PASSWORD.encode())
        assert tagged.startswith(b"a OK"), tagged
        _, tagged = r.cmd(b"b", b"STARTTLS")
        assert tagged[:4] in (b"b NO", b"b BA"), tagged
        _, tagged = r.cmd(b"c", b"NOOP")
        assert tagged.startswith(b"c OK"), tagged
    finally:
        r.close()


def test_mode_required(tgw, tdove, pki):
    off = tdove.log_offset()
    r = Raw(tgw.port("tls-required"))
    try:
        greeting = r.line()
        assert b"PREAUTH" not in greeting
        lines, _ = r.cmd(b"a", b"CAPABILITY")
        caps = caps_of(lines)
        assert b"LOGINDISABLED" in caps and b"STARTTLS" in caps, caps
        assert not any(c.startswith(b"AUTH=") for c in caps), caps
        _, tagged = r.cmd(b"b", b"LOGIN tlsreq " + PASSWORD.encode())
        assert tagged.startswith(b"b NO [PRIVACYREQUIRED]"), tagged
        _, tagged = r.cmd(b"c", b"AUTHENTICATE PLAIN AHRsc3JlcQBzZWNyZXQ=")
        assert tagged.startswith(b"c NO [PRIVACYREQUIRED]"), tagged
        _, tagged = r.cmd(b"d", b"STARTTLS")
        assert tagged.startswith(b"d OK"), tagged
        r.starttls(ctx_ca(pki))
        lines, _ = r.cmd(b"e", b"CAPABILITY")
        caps = caps_of(lines)
        assert b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps
        _, tagged = r.cmd(b"f", b"LOGIN tlsreq " + PASSWORD.encode())
        assert tagged.startswith(b"f OK"), tagged
        r.cmd(b"g", b"LOGOUT")
    finally:
        r.close()
    # exactly one login reached Dovecot: the one inside TLS
    assert tdove.wait_log(r"Login: user=<tlsreq>", since=off)
    assert len(re.findall(r"Login: user=<tlsreq>",
                          tdove.log_since(off))) == 1


def test_mode_required_implicit(tgw, pki):
    """On an implicit TLS listener of a required policy nothing is
    disabled."""
    r = Raw(tgw.port("tls-required", tls="implicit"), tls_ctx=ctx_ca(pki),
            sni="localhost")
    try:
        r.line()
        lines, _ = r.cmd(b"a", b"CAPABILITY")
        caps = caps_of(lines)
        assert b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps
        _, tagged = r.cmd(b"b", b"LOGIN tlsreq " + PASSWORD.encode())
        assert tagged.startswith(b"b OK"), tagged
    finally:
        r.close()


def _started(g, port, since, timeout=0):
    """The gateway's `session start` line of the client on local port
    port, logged after offset since, or None."""
    return g.wait_log(r"\bsession start\b.*\bclient=127\.0\.0\.1:%d\b"
                      % port, since=since, timeout=timeout)


def _greeted_within(port, seconds):
    """Whether a client that sends nothing is greeted within seconds."""
    s = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    try:
        return first_line(s).startswith(b"* OK")
    except socket.timeout:
        return False
    finally:
        s.close()


@pytest.mark.parametrize("until", ["ClientHello", "deferral"])
def test_implicit_accept_deferred(tgw, pki, until):
    """An implicit TLS listener hands a connection over when the client's
    first bytes are in (TCP_DEFER_ACCEPT).  ClientHello: a client that
    has sent nothing for half a second is not a session yet; its
    ClientHello makes it one, and the handshake and greeting follow.
    deferral: a client that sends nothing is accepted once the deferral
    is over (the kernel's SYN-ACK timer: about a second), and its TLS
    still works when it comes: deferring loses no connection.  A plain
    listener of the same policy greets a silent client at once."""
    port = tgw.port("tls-enabled", tls="implicit")
    off = tgw.log_offset()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    me = s.getsockname()[1]
    t = None
    try:
        if until == "ClientHello":
            time.sleep(0.5)
            assert _started(tgw, me, off) is None, tgw.log_since(off)
        else:
            assert _started(tgw, me, off, timeout=8), tgw.log_since(off)
        t = ctx_ca(pki).wrap_socket(s, server_hostname="localhost")
        assert first_line(t).startswith(b"* OK")
        assert _started(tgw, me, off, timeout=5), tgw.log_since(off)
    finally:
        (t or s).close()
    assert _greeted_within(tgw.port("tls-enabled", tls="none"), 0.8)


def test_reload_listener_tls_mode(make_tls_gateway, tdove, pki):
    """A reload that keeps a listen address but changes its mode sets
    the socket to match: implicit to plain, a silent client is greeted
    at once (not after the deferral); plain to implicit, a client that
    has sent nothing is not a session until its ClientHello."""
    port = free_port()
    tls = {"mode": "enabled", "certificate": "gateway"}

    def pol(mode):
        return [gateway_mod.policy(
            "flip", port, "dovecot", tls=tls,
            listen=[{"address": "127.0.0.1:%d" % port, "tls": mode}])]

    def tls_greets():
        try:
            c = ctx_ca(pki).wrap_socket(
                socket.create_connection(("127.0.0.1", port), timeout=5),
                server_hostname="localhost")
        except (OSError, ssl.SSLError):
            return False
        try:
            return first_line(c).startswith(b"* OK")
        finally:
            c.close()

    g = make_tls_gateway(servers={"dovecot": [tdove.address]},
                         policies=pol("implicit"))
    assert not _greeted_within(port, 0.8)
    for mode in ("none", "implicit"):
        off = g.log_offset()
        g.policies = pol(mode)
        g.write_config()
        g.reload()
        assert g.wait_log(r"configuration reloaded", since=off), \
            g.log_since(off)
        if mode == "none":
            g.wait_until(lambda: _greeted_within(port, 0.8), 10,
                         "a silent client greeted within 0.8 s")
            continue
        g.wait_until(tls_greets, 10, "a greeting over implicit TLS")
        off = g.log_offset()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        me = s.getsockname()[1]
        try:
            time.sleep(0.5)
            assert _started(g, me, off) is None, g.log_since(off)
        finally:
            s.close()


def test_eicar_over_tls(tgw, tdove, pki):
    uid = _seed(tdove, "tlseicar", [gateway_mod.eicar_attachment_message(1)])
    assert tdove.fetch_bodies("tlseicar")[uid[0]].count(
        gateway_mod._b64(gateway_mod.EICAR)[:20]) == 1
    c = imaplib.IMAP4_SSL("127.0.0.1", tgw.port("tls-enabled",
                                                  tls="implicit"),
                          ssl_context=ctx_ca(pki), timeout=30)
    try:
        c.login("tlseicar", PASSWORD)
        bodies = dovecot_mod.fetch_all_bodies(c)
    finally:
        c.logout()
    body = bodies[uid[0]]
    assert gateway_mod._b64(gateway_mod.EICAR)[:20] not in body
    assert gateway_mod.EICAR not in body
    assert b"Please find the invoice attached." in body


# ---- bulk data through tlsd, both ways ------------------------------------

def _big_msg(seed, size):
    """About size bytes: a base64 attachment of random bytes."""
    raw = random.Random(seed).randbytes(size * 57 // 78)
    return (b"From: a@example.org\r\nTo: b@example.org\r\n"
            b"Subject: big %d\r\nMessage-ID: <tls-big-%d@example.org>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream"
            b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" % (seed, seed)
            + base64.encodebytes(raw).replace(b"\n", b"\r\n"))


@pytest.mark.parametrize("side", ["client", "backend"])
def test_large_message_both_ways(request, make_tls_gateway, tdove, pki,
                                 side):
    """A message many relay buffers long goes up (APPEND) and comes back
    (FETCH) through tlsd byte for byte: client side over implicit TLS,
    backend side with implicit TLS to Dovecot."""
    _seed(tdove, "tlsbig", [])
    if side == "client":
        g = request.getfixturevalue("tgw")
        c = imaplib.IMAP4_SSL("127.0.0.1", g.port("tls-enabled",
                                                  tls="implicit"),
                              ssl_context=ctx_ca(pki), timeout=60)
    else:
        port = free_port()
        make_tls_gateway(
            servers={"back": {"members": ["127.0.0.1:%d" %
                                          tdove.imaps_port],
                              "tls": "implicit", "tls_profile": "testca",
                              "server_name": "localhost"}},
            policies=[gateway_mod.policy("imap-in", port, "back")])
        c = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    msgs = [_big_msg(1, 6 << 20), _big_msg(2, 3 << 20)]
    try:
        c.login("tlsbig", PASSWORD)
        for m in msgs:
            typ, data = c.append("INBOX", None, None, m)
            assert typ == "OK", data
        got = dovecot_mod.fetch_all_bodies(c)
    finally:
        c.logout()
    stored = tdove.fetch_bodies("tlsbig")
    assert sorted(stored.values()) == sorted(msgs)
    assert sorted(got.values()) == sorted(msgs)


# ---- STARTTLS command injection (USENIX Security 2021) -------------------

@pytest.mark.parametrize("injected", ["CAPABILITY", "LOGIN"])
def test_starttls_injection(tgt, tdove, pki, injected):
    """Plaintext pipelined after STARTTLS is discarded, never executed
    inside TLS."""
    off = tdove.log_offset()
    inj = b"b CAPABILITY\r\n" if injected == "CAPABILITY" else \
        b"b LOGIN tlsinj " + PASSWORD.encode() + b"\r\n"
    r = Raw(tgt.plain)
    try:
        r.line()
        r.send(b"a STARTTLS\r\n" + inj)
        ln = r.line()
        assert ln.startswith(b"a OK"), ln
        assert r.buf == b"", "plaintext after the STARTTLS OK: %r" % r.buf
        try:
            r.starttls(ctx_ca(pki))
        except (ssl.SSLError, OSError):
            # Dovecot drops a client that pipelines after STARTTLS: safe
            # too.  The gateway discards the plaintext and goes on.
            if tgt.name != "dovecot":
                raise
            return
        lines, tagged = r.cmd(b"c", b"NOOP")
        assert tagged.startswith(b"c OK"), tagged
        assert not any(x.startswith(b"b ") for x in lines), lines
        rest = r.read_rest(0.5)
        assert b"\nb " not in b"\n" + rest, rest
        assert b"* CAPABILITY" not in b"".join(lines) + rest
        _, tagged = r.cmd(b"d", b"LOGOUT")
    finally:
        r.close()
    time.sleep(0.3)
    assert "tlsinj" not in tdove.log_since(off)


# ---- before TLS: PREAUTH and [ALERT] from upstream (fake server) ----------

def test_preauth_before_tls(make_tls_gateway):
    fake = TLSFake(greeting=b"* PREAUTH [CAPABILITY IMAP4rev1] welcome "
                   b"back\r\n").start()
    try:
        port = free_port()
        g = make_tls_gateway(
            servers={"fake": [fake.address]},
            policies=[gateway_mod.policy(
                "imap-in", port, "fake",
                tls={"mode": "enabled", "certificate": "gateway"})])
        r = Raw(port)
        try:
            got = r.read_rest(3)
        finally:
            r.close()
        assert b"PREAUTH" not in got, got
        # the session ends: nothing, or a BYE
        assert got == b"" or got.startswith(b"* BYE"), got
        assert g.wait_log(r"PREAUTH", timeout=5), g.log_tail()
    finally:
        fake.stop()


def test_alert_before_tls_removed(make_tls_gateway, pki):
    fake = TLSFake(greeting=b"* OK [ALERT] urgent: visit evil.example to "
                   b"keep your mailbox\r\n",
                   caps_plain=b"IMAP4rev1 AUTH=PLAIN",
                   pre_tls_untagged=b"* OK [ALERT] evil alert\r\n").start()
    try:
        port, iport = free_port(), free_port()
        g = make_tls_gateway(
            servers={"fake": [fake.address]},
            policies=[gateway_mod.policy(
                "imap-in", port, "fake",
                listen=["127.0.0.1:%d" % port,
                        {"address": "127.0.0.1:%d" % iport,
                         "tls": "implicit"}],
                tls={"mode": "enabled", "certificate": "gateway"})])
        # control: over implicit TLS the alert is the server's, kept
        r = Raw(iport, tls_ctx=ctx_ca(pki), sni="localhost")
        try:
            greeting = r.line()
            assert b"[ALERT]" in greeting, greeting
        finally:
            r.close()
        r = Raw(port)
        try:
            greeting = r.line()
            assert greeting.startswith(b"* OK"), greeting
            lines, tagged = r.cmd(b"a", b"CAPABILITY")
            lines2, tagged2 = r.cmd(b"b", b"NOOP")
            _, tagged3 = r.cmd(b"c", b"STARTTLS")
            assert tagged3.startswith(b"c OK"), tagged3
        finally:
            r.close()
        # the code is gone (the text may stay: it is no alert any more)
        assert b"[ALERT]" not in r.log.upper(), r.log
        assert r.log.startswith(b"* OK"), r.log
        assert g.wait_log(r"(?i)alert", timeout=5), g.log_tail()
    finally:
        fake.stop()


# ---- to the backend ---------------------------------------------------------

def _login_via(port, user="tlsback"):
    """(ok, text): LOGIN + SELECT through the gateway's plain port."""
    r = Raw(port, timeout=4)
    try:
        g = r.line()
        if not g.startswith(b"* OK"):
            return False, g + r.read_rest(0.3)
        _, t = r.cmd(b"a", b"LOGIN %s %s" % (user.encode(),
                                            PASSWORD.encode()))
        if not t.startswith(b"a OK"):
            return False, t
        _, t = r.cmd(b"b", b"SELECT INBOX")
        r.cmd(b"c", b"LOGOUT")
        return t.startswith(b"b OK"), t
    except (EOFError, OSError) as e:
        return False, str(e).encode() + r.log
    finally:
        r.close()


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_backend_tls_good(make_tls_gateway, tdove, mode):
    port = free_port()
    member = "127.0.0.1:%d" % (tdove.imaps_port if mode == "implicit"
                               else tdove.port)
    make_tls_gateway(
        servers={"back": {"members": [member], "tls": mode,
                          "tls_profile": "testca",
                          "server_name": "localhost"}},
        policies=[gateway_mod.policy("imap-in", port, "back")])
    off = tdove.log_offset()
    ok, text = _login_via(port)
    assert ok, text
    m = tdove.wait_log(r"imap-login: .*Login: user=<tlsback>.*", since=off)
    assert m and "TLS" in m.group(0), tdove.log_since(off)


def test_backend_tls_default_name_is_address(make_tls_gateway, tdove):
    """No server_name: the member's address is checked (the certificate
    has IP:127.0.0.1)."""
    port = free_port()
    make_tls_gateway(
        servers={"back": {"members": ["127.0.0.1:%d" % tdove.imaps_port],
                          "tls": "implicit", "tls_profile": "testca"}},
        policies=[gateway_mod.policy("imap-in", port, "back")])
    ok, text = _login_via(port)
    assert ok, text


def test_backend_default_name_is_host(make_tls_gateway, pki):
    """No server_name, a member given by host name: that name is checked
    (and sent as SNI); the same server by address is refused, since its
    certificate names no address."""
    ai = socket.getaddrinfo("localhost", None, 0, socket.SOCK_STREAM)
    if ai[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first")
    c = pki.certs.get("nameonly") or pki.server("nameonly", ips=())
    d = dovecot_mod.tls_dovecot(c.chain, c.key,
                                users={"tlsback": PASSWORD}).start()
    try:
        p1, p2 = free_port(), free_port()
        make_tls_gateway(
            servers={"byname": {"members": ["localhost:%d" % d.imaps_port],
                                "tls": "implicit", "tls_profile": "testca"},
                     "byaddr": {"members": ["127.0.0.1:%d" % d.imaps_port],
                                "tls": "implicit", "tls_profile": "testca"}},
            policies=[gateway_mod.policy("byname", p1, "byname"),
                      gateway_mod.policy("byaddr", p2, "byaddr")])
        ok, text = _login_via(p1)
        assert ok, text
        ok, text = _login_via(p2)
        assert not ok and text.startswith(b"* BYE [UNAVAILABLE]"), text
    finally:
        d.stop()


BAD_REASON = {
    "expired": r"expired",
    "wrongname": r"host ?name|name mismatch|does not match|"
                 r"wrong\.example|server_name",
    "selfsigned": r"self[- ]signed|local issuer|unable to get|untrusted",
}


@pytest.fixture(scope="module")
def bad_gw_module(pki, bad_doves):
    """One gateway with a pool (and a policy) per bad certificate and
    TLS mode, each verified (profile testca) and lax (verify_peer
    false)."""
    if DIRECT:
        pytest.skip("IMAPGW_TEST_DIRECT=1")
    servers, policies = {}, []
    for bad, d in sorted(bad_doves.items()):
        for mode in ("implicit", "starttls"):
            member = "127.0.0.1:%d" % (d.imaps_port if mode == "implicit"
                                       else d.port)
            for prof in ("testca", "noverify"):
                name = "%s-%s-%s" % (bad, mode, prof)
                servers[name] = {"members": [member], "tls": mode,
                                 "tls_profile": prof,
                                 "server_name": "localhost"}
                policies.append(gateway_mod.policy(name, free_port(), name))
    yield from _module_gateway(pki, servers, policies,
                               (("gateway", "server"),))


@pytest.fixture
def bad_gw(bad_gw_module, request):
    with watched(bad_gw_module, request) as g:
        yield g


@pytest.mark.parametrize("bad", ["expired", "wrongname", "selfsigned"])
@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_backend_bad_cert(bad_gw, bad_doves, bad, mode):
    """Refused with verification (the log names the reason), accepted
    with verify_peer: false."""
    g = bad_gw
    off = g.log_offset()
    d = bad_doves[bad]
    doff = d.log_offset()
    r = Raw(g.port("%s-%s-testca" % (bad, mode)))
    try:
        got = r.read_rest(4)
    finally:
        r.close()
    assert got.startswith(b"* BYE [UNAVAILABLE]"), got
    m = g.wait_log(r"(?i)^.*(?:%s).*$" % BAD_REASON[bad], since=off,
                   timeout=5)
    assert m, g.log_since(off)
    assert "Login: user=<tlsback>" not in d.log_since(doff)
    # verify_peer: false accepts the same server
    ok, text = _login_via(g.port("%s-%s-noverify" % (bad, mode)))
    assert ok, text


def test_backend_starttls_preauth(make_tls_gateway):
    fake = TLSFake(greeting=b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] "
                   b"hi\r\n").start()
    try:
        port = free_port()
        g = make_tls_gateway(
            servers={"fake": {"members": [fake.address], "tls": "starttls",
                              "tls_profile": "testca",
                              "server_name": "localhost"}},
            policies=[gateway_mod.policy("imap-in", port, "fake")])
        r = Raw(port)
        try:
            got = r.read_rest(3)
        finally:
            r.close()
        assert got.startswith(b"* BYE [UNAVAILABLE]"), got
        assert b"PREAUTH" not in got
        assert g.wait_log(r"PREAUTH", timeout=5), g.log_tail()
    finally:
        fake.stop()


@pytest.mark.parametrize("after", [b"", b"* OK [ALERT] injected\r\n"],
                         ids=["clean", "data-after-ok"])
def test_backend_starttls_fake(make_tls_gateway, pki, after):
    """A fake STARTTLS server: works when clean; bytes sent after its
    STARTTLS OK (before the handshake) never reach the client."""
    s = pki.certs["server"]
    fake = TLSFake(cert=s.chain, key=s.key, after_starttls=after).start()
    try:
        port = free_port()
        g = make_tls_gateway(
            servers={"fake": {"members": [fake.address], "tls": "starttls",
                              "tls_profile": "testca",
                              "server_name": "localhost"}},
            policies=[gateway_mod.policy("imap-in", port, "fake")])
        r = Raw(port, timeout=4)
        try:
            if not after:
                assert r.line().startswith(b"* OK")
                _, t = r.cmd(b"a", b"LOGIN u p")
                assert t.startswith(b"a OK"), t
                r.cmd(b"b", b"LOGOUT")
                assert any(b"LOGIN" in ln for ln in fake.conns[0].tls)
                # server_name is sent as SNI
                assert fake.snis == ["localhost"], fake.snis
            else:
                got = r.read_rest(3)
                assert b"injected" not in got, got
                assert got.startswith(b"* BYE [UNAVAILABLE]"), got
                assert g.wait_log(r"(?i)after its STARTTLS|data after",
                                  timeout=5), g.log_tail()
        finally:
            r.close()
    finally:
        fake.stop()


# ---- profiles ---------------------------------------------------------------

_tls11 = {}


def _client_can_tls11(pki):
    """Can this openssl s_client speak TLS 1.1 at all (to an s_server that
    allows it)?  Otherwise a refusal proves nothing."""
    if "ok" in _tls11:
        return _tls11["ok"]
    s = pki.certs["server"]
    port = free_port()
    srv = subprocess.Popen(
        ["openssl", "s_server", "-accept", "127.0.0.1:%d" % port,
         "-cert", s.cert, "-key", s.key, "-tls1_1",
         "-cipher", "DEFAULT@SECLEVEL=0", "-naccept", "1", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 5
        while not dovecot_mod.is_listening(port) and time.time() < end:
            time.sleep(0.05)
        rc, out = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
                           data=b"", ign_eof=False, timeout=5)
        _tls11["ok"] = "TLSv1.1" in out and rc == 0
    finally:
        srv.kill()
        srv.wait()
    return _tls11["ok"]


def test_tls11_refused_tls13_ok(tgw, pki):
    port = tgw.port("tls-enabled", tls="implicit")
    rc, out = s_client(port, "-tls1_3", "-CAfile", pki.ca_cert,
                       "-verify_return_error")
    assert rc == 0 and "TLSv1.3" in out, out
    assert "* OK" in out, out
    if not _client_can_tls11(pki):
        pytest.skip("this openssl s_client cannot speak TLS 1.1 even at "
                    "SECLEVEL=0: the refusal would prove nothing")
    rc, out = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0, out
    assert "* OK" not in out, out
    # the gateway still works afterwards
    rc, out = s_client(port, "-tls1_2", "-CAfile", pki.ca_cert,
                       "-verify_return_error")
    assert rc == 0 and "TLSv1.2" in out, out


def test_min_version_13(tgw, pki):
    port = tgw.port("tls13")
    ctx = ctx_ca(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, OSError)):
        Raw(port, tls_ctx=ctx, sni="localhost").line()
    r = Raw(port, tls_ctx=ctx_ca(pki), sni="localhost")
    try:
        assert r.sock.version() == "TLSv1.3"
        assert r.line().startswith(b"* OK")
    finally:
        r.close()
    rc, out = s_client(port, "-tls1_2", "-CAfile", pki.ca_cert)
    assert rc != 0 and "* OK" not in out, out


def test_ciphersuites_one(tgw, pki):
    port = tgw.port("onesuite")
    rc, out = s_client(port, "-tls1_3", "-CAfile", pki.ca_cert,
                       "-verify_return_error")
    assert rc == 0 and ONESUITE in out, out
    r = Raw(port, tls_ctx=ctx_ca(pki), sni="localhost")
    try:
        assert r.sock.cipher()[0] == ONESUITE, r.sock.cipher()
    finally:
        r.close()
    # the default profile offers more than that one
    r = Raw(tgw.port("tls-enabled", tls="implicit"), tls_ctx=ctx_ca(pki),
            sni="localhost")
    try:
        assert r.sock.cipher()[0] != ONESUITE
    finally:
        r.close()


def test_sni_selects_certificate(tgw, pki):
    port = tgw.port("tls-enabled", tls="implicit")
    rc, out = s_client(port, "-servername", "mail2.test", "-CAfile",
                       pki.ca_cert, "-verify_hostname", "mail2.test",
                       "-verify_return_error")
    assert rc == 0 and re.search(r"subject=.*CN ?= ?mail2\.test", out), out
    rc, out = s_client(port, "-servername", "localhost", "-CAfile",
                       pki.ca_cert, "-verify_return_error")
    assert rc == 0 and re.search(r"subject=.*CN ?= ?localhost", out), out
    # no SNI: the first certificate is the default
    rc, out = s_client(port, "-noservername", "-CAfile", pki.ca_cert)
    assert re.search(r"subject=.*CN ?= ?localhost", out), out
    # Python verifies the name it asked for
    for name in ("mail2.test", "localhost"):
        r = Raw(port, tls_ctx=ctx_ca(pki), sni=name)
        try:
            assert r.line().startswith(b"* OK")
        finally:
            r.close()
    # STARTTLS too
    r = Raw(tgw.port("tls-enabled", tls="none"))
    try:
        r.line()
        r.cmd(b"a", b"STARTTLS")
        r.starttls(ctx_ca(pki), sni="mail2.test")
        _, t = r.cmd(b"b", b"NOOP")
        assert t.startswith(b"b OK")
    finally:
        r.close()


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_session_resumption(tgt, pki, version):
    ctx = ctx_ca(pki)
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion,
                                                        version)
    r = Raw(tgt.imaps, tls_ctx=ctx, sni="localhost")
    try:
        r.line()
        r.cmd(b"a", b"NOOP")       # TLS 1.3 tickets arrive after the
        sess = r.sock.session      # handshake
        assert r.sock.session_reused is False
    finally:
        r.close()
    assert sess is not None
    s = socket.create_connection(("127.0.0.1", tgt.imaps), timeout=10)
    t = ctx.wrap_socket(s, server_hostname="localhost", session=sess)
    try:
        assert t.recv(100).startswith(b"* OK")
        assert t.session_reused is True
    finally:
        t.close()


def test_session_resumption_s_client(tgw, pki, tmp_path):
    port = tgw.port("tls-enabled", tls="implicit")
    sess = str(tmp_path / "sess.pem")
    rc, out = s_client(port, "-tls1_2", "-sess_out", sess, "-CAfile",
                       pki.ca_cert)
    assert rc == 0 and os.path.getsize(sess) > 0, out
    rc, out = s_client(port, "-tls1_2", "-sess_in", sess, "-CAfile",
                       pki.ca_cert)
    assert rc == 0 and "Reused, TLSv1.2" in out, out


def test_ocsp_stapling(make_tls_gateway, pki):
    s = pki.certs["server"]
    try:
        der = pki.ocsp_response(s)
    except RuntimeError as e:
        pytest.skip("cannot produce an OCSP response: %s" % e)
    port = free_port()
    make_tls_gateway(
        servers={"dovecot": ["127.0.0.1:9"]},
        certificates={"gateway": {"cert": s.chain, "key": s.key,
                                  "ocsp": der}},
        policies=[gateway_mod.policy(
            "imap-in", port, "dovecot",
            listen=[{"address": "127.0.0.1:%d" % port, "tls": "implicit"}],
            tls={"mode": "enabled", "certificate": "gateway"})])
    rc, out = s_client(port, "-status", "-CAfile", pki.ca_cert)
    assert "OCSP Response Status: successful" in out, out
    assert "Cert Status: good" in out, out


def test_no_ocsp_without_file(tgw, pki):
    rc, out = s_client(tgw.port("tls-enabled", tls="implicit"), "-status",
                       "-CAfile", pki.ca_cert)
    assert rc == 0 and "OCSP response: no response sent" in out, out


# ---- real clients -----------------------------------------------------------

def test_s_client_both_ways(tgt, pki):
    rc, out = s_client(tgt.imaps, "-CAfile", pki.ca_cert,
                       "-verify_return_error", "-verify_ip", "127.0.0.1")
    assert rc == 0 and "* OK" in out and "Verify return code: 0" in out, out
    # the chain after the leaf in the cert file is sent
    assert re.search(r"^ 1 s:CN ?= ?imapgw test CA", out, re.M), out
    rc, out = s_client(tgt.plain, "-starttls", "imap", "-CAfile",
                       pki.ca_cert, "-verify_return_error")
    assert rc == 0 and "Verify return code: 0" in out, out
    assert "a OK" in out or "BYE" in out, out


def test_curl(tgt, tdove, pki):
    _need("curl")
    uids = _seed(tdove, "tlscurl", [_msg(1)])
    base = ["curl", "-sS", "--max-time", "20", "--user",
            "tlscurl:" + PASSWORD, "--cacert", pki.ca_cert]
    r = subprocess.run(base + ["imaps://127.0.0.1:%d/INBOX;UID=%d"
                               % (tgt.imaps, uids[0])],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"hello over tls 1" in r.stdout
    r = subprocess.run(base + ["--ssl-reqd", "imap://localhost:%d/INBOX"
                               % tgt.plain, "-X", "FETCH 1:* (FLAGS)"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"FETCH (FLAGS" in r.stdout, r.stdout


@pytest.mark.parametrize("ssltype", ["IMAPS", "STARTTLS"])
def test_mbsync(tgt, tdove, pki, tmp_path, ssltype):
    _seed(tdove, "tlssync", [_msg(i) for i in range(3)])
    files = mbsync_pull(tmp_path,
                        tgt.imaps if ssltype == "IMAPS" else tgt.plain,
                        "tlssync", PASSWORD, host="localhost",
                        ssltype=ssltype, cafile=pki.ca_cert, timeout=20)
    assert len(files) == 3


# ---- keys isolated ----------------------------------------------------------

def _mem_contains(pid, needles, budget=4.0):
    """True/False whether any needle is in the readable memory of pid;
    None if the scan did not finish within budget seconds."""
    end = time.time() + budget
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read().splitlines()
    with open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for ln in maps:
            parts = ln.split()
            if len(parts) < 2 or not parts[1].startswith("r"):
                continue
            if len(parts) >= 6 and parts[5] in ("[vvar]", "[vsyscall]",
                                               "[vvar_vclock]"):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            for n in needles:
                if n in data:
                    return True
            if time.time() > end:
                return None
    return False


def _key_needles(cert):
    import base64
    body = cert.key_body()
    lines = [ln.strip() for ln in open(cert.key) if not ln.startswith("---")]
    der = base64.b64decode(body)
    out = subprocess.run(["openssl", "pkey", "-in", cert.key, "-noout",
                          "-text"], stdout=subprocess.PIPE).stdout.decode()
    m = re.search(r"priv:\s*((?:[0-9a-f]{2}:?\s*)+)", out)
    needles = [ln.encode() for ln in lines if len(ln) >= 40] + [der]
    if m:
        scalar = bytes.fromhex(re.sub(r"[^0-9a-f]", "", m.group(1)))
        scalar = scalar.lstrip(b"\0")
        if len(scalar) >= 24:
            # big-endian as in the file, and as OpenSSL's BIGNUM limbs
            # hold it on a little-endian machine
            needles += [scalar, scalar[::-1]]
    return needles


def test_status_counts_tls_connections(tgw, pki):
    """imapgwctl status: a tlsd row counts the TLS connection it relays
    (active, and total since start)."""
    c = imaplib.IMAP4_SSL("127.0.0.1", tgw.port("tls-enabled",
                                                 tls="implicit"),
                          ssl_context=ctx_ca(pki), timeout=15)
    try:
        c.noop()
        out = tgw.ctl("status").stdout.decode(errors="replace")
        rows = [ln.split() for ln in out.splitlines()
                if ln.startswith("tlsd ")]
        assert rows, out
        assert sum(int(r[5]) for r in rows) >= 1, out
        assert sum(int(r[6]) for r in rows) >= 1, out
    finally:
        c.logout()


def test_keys_isolated(tgw, pki):
    r = tgw.ctl("audit")
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    tls_lines = [ln for ln in out.splitlines() if "tlsd" in ln]
    assert any("gateway" in ln for ln in tls_lines), out
    assert any("second" in ln for ln in tls_lines), out
    netd_lines = [ln for ln in out.splitlines()
                  if re.search(r"\bnetd\b", ln) and "key" in ln]
    assert netd_lines and all("no key material" in ln
                              for ln in netd_lines), out
    scand_lines = [ln for ln in out.splitlines()
                   if re.search(r"\bscand\b", ln) and "key" in ln]
    assert all("no key material" in ln for ln in scand_lines), out

    # make netd do TLS work first, so that a leak would show
    c = imaplib.IMAP4_SSL("127.0.0.1", tgw.port("tls-enabled",
                                                 tls="implicit"),
                          ssl_context=ctx_ca(pki), timeout=15)
    c.login("tlsuser", PASSWORD)
    keys = [pki.certs["server"], pki.certs["mail2"]]
    needles = [n for k in keys for n in _key_needles(k)]
    paths = {os.path.realpath(k.key) for k in keys}
    try:
        # control: the scan finds the key where it must be, in tlsd
        control = [_mem_contains(pid, needles) for pid in
                   tgw.pids_of("tlsd")]
        pids = tgw.pids_of("netd") + tgw.pids_of("scand")
        assert tgw.pids_of("netd"), tgw.roles()
        assert tgw.pids_of("tlsd"), tgw.roles()
        incomplete = []
        for pid in pids:
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    target_ = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                assert target_ not in paths, (pid, fd, target_)
            found = _mem_contains(pid, needles)
            if found is None:
                incomplete.append(pid)
            assert found is not True, \
                "private key bytes in the memory of %s[%d]" % (
                    tgw.roles().get(pid), pid)
    finally:
        c.logout()
    if incomplete:
        pytest.skip("memory scan of %s did not finish in time (fd check "
                    "passed)" % incomplete)
    if True not in control:
        pytest.skip("the memory scan did not find the key even in tlsd "
                    "(%s): its negative result proves little (fd check "
                    "passed)" % control)


# ---- reload -----------------------------------------------------------------

def _peer_fingerprint(port, pki):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t = ctx_ca(pki).wrap_socket(s, server_hostname="localhost")
    try:
        import hashlib
        return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()
    finally:
        t.close()


def _fp(cert):
    return cert.fingerprint().replace(":", "").lower()


@pytest.mark.parametrize("how", ["imapgwctl", "SIGHUP"])
def test_reload_new_certificate(make_tls_gateway, pki, tdove, how):
    d = tempfile.mkdtemp(prefix="imapgw-tls-reload.", dir=pki.dir)
    crt, key = os.path.join(d, "gw.crt"), os.path.join(d, "gw.key")
    certs_mod.install(pki.certs["server"], crt, key)
    port, iport = free_port(), free_port()
    g = make_tls_gateway(
        servers={"dovecot": [tdove.address]},
        certificates={"gateway": {"cert": crt, "key": key}},
        policies=[gateway_mod.policy(
            "imap-in", port, "dovecot",
            listen=["127.0.0.1:%d" % port,
                    {"address": "127.0.0.1:%d" % iport, "tls": "implicit"}],
            tls={"mode": "enabled", "certificate": "gateway"})])
    assert _peer_fingerprint(iport, pki) == _fp(pki.certs["server"])
    certs_mod.install(pki.certs["server2"], crt, key)
    off = g.log_offset()
    if how == "SIGHUP":
        g.reload()
    else:
        r = g.ctl("reload")
        assert r.returncode == 0, r.stdout + r.stderr
    want = _fp(pki.certs["server2"])
    end = time.time() + 15
    got = None
    while time.time() < end:
        try:
            got = _peer_fingerprint(iport, pki)
        except (OSError, ssl.SSLError):
            got = None
        if got == want:
            break
        time.sleep(0.2)
    assert got == want, g.log_since(off)
    # STARTTLS sees it too
    r = Raw(port)
    try:
        r.line()
        r.cmd(b"a", b"STARTTLS")
        r.starttls(ctx_ca(pki))
        import hashlib
        assert hashlib.sha256(r.sock.getpeercert(True)).hexdigest() == want
    finally:
        r.close()
    # a broken pair (the old certificate, the new key): the reload is
    # refused, the running certificate stays
    with open(pki.certs["server"].chain, "rb") as f:
        data = f.read()
    with open(crt + ".tmp", "wb") as f:
        f.write(data)
    os.rename(crt + ".tmp", crt)
    off = g.log_offset()
    if how == "SIGHUP":
        g.reload()
    else:
        g.ctl("reload")
    assert g.wait_log(r"(?i)does not match", since=off, timeout=10), \
        g.log_since(off)
    time.sleep(0.5)
    assert g.alive()
    assert _peer_fingerprint(iport, pki) == want, g.log_since(off)
