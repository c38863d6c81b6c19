"""A fake IMAP server for TLS behaviour no real server produces.

    srv = TLSFake(greeting=b"* PREAUTH hello\\r\\n").start()
    srv = TLSFake(cert=c.chain, key=c.key,
                  after_starttls=b"* OK [ALERT] injected\\r\\n").start()
    srv = TLSFake(pre_tls_untagged=b"* OK [ALERT] click here\\r\\n").start()
    ... srv.address, srv.conns[i].plain / .tls (client lines) ...
    srv.stop()

Before TLS it answers CAPABILITY (with STARTTLS when it has a
certificate), NOOP, LOGIN, LOGOUT and STARTTLS; pre_tls_untagged is sent
before every tagged answer before TLS.  STARTTLS gets "tag OK" followed,
in the same write, by after_starttls; then the TLS handshake (server side,
cert/key) and a minimal IMAP server inside TLS.  Every client line is kept
(conn.plain before TLS, conn.tls inside TLS); srv.snis lists the server
names (SNI) clients asked for.
"""

import socket
import ssl
import threading

from fakeimap import Listener


class FakeConn:
    def __init__(self, srv, sock):
        self.srv = srv
        self.sock = sock
        self.plain = []
        self.tls = []
        self.handshake_error = None
        self.done = threading.Event()

    def _lines(self, f):
        while True:
            line = f.readline(65536)
            if not line:
                return
            yield line

    def send(self, s, data):
        try:
            s.sendall(data)
        except OSError:
            pass

    def serve(self):
        srv = self.srv
        s = self.sock
        try:
            self.send(s, srv.greeting)
            f = s.makefile("rb")
            starttls = False
            for line in self._lines(f):
                self.plain.append(line)
                w = line.split()
                tag = w[0] if w else b"*"
                cmd = w[1].upper() if len(w) > 1 else b""
                pre = srv.pre_tls_untagged
                if cmd == b"STARTTLS" and srv.ctx is not None:
                    self.send(s, pre + tag + b" OK Begin TLS negotiation "
                              b"now\r\n" + srv.after_starttls)
                    starttls = True
                    break
                if cmd == b"CAPABILITY":
                    self.send(s, pre + b"* CAPABILITY " + srv.caps_plain +
                              b"\r\n" + tag + b" OK done\r\n")
                elif cmd == b"LOGOUT":
                    self.send(s, b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    return
                elif cmd == b"LOGIN":
                    self.send(s, pre + tag + b" OK logged in\r\n")
                else:
                    self.send(s, pre + tag + b" OK done\r\n")
            if not starttls:
                return
            try:
                t = srv.ctx.wrap_socket(s, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self.handshake_error = e
                return
            f = t.makefile("rb")
            for line in self._lines(f):
                self.tls.append(line)
                w = line.split()
                tag = w[0] if w else b"*"
                cmd = w[1].upper() if len(w) > 1 else b""
                if cmd == b"CAPABILITY":
                    self.send(t, b"* CAPABILITY " + srv.caps_tls +
                              b"\r\n" + tag + b" OK done\r\n")
                elif cmd == b"LOGOUT":
                    self.send(t, b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    return
                elif cmd == b"SELECT" or cmd == b"EXAMINE":
                    self.send(t, b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] u\r\n"
                              + tag + b" OK [READ-WRITE] done\r\n")
                else:
                    self.send(t, tag + b" OK done\r\n")
        except (OSError, ValueError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass
            self.done.set()


class TLSFake(Listener):
    conn_timeout = 20
    backlog = 16

    def __init__(self, greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS "
                 b"LOGINDISABLED] fake ready\r\n", cert=None, key=None,
                 after_starttls=b"", pre_tls_untagged=b"",
                 caps_plain=b"IMAP4rev1 STARTTLS LOGINDISABLED",
                 caps_tls=b"IMAP4rev1 AUTH=PLAIN", host="127.0.0.1"):
        self.greeting = greeting
        self.after_starttls = after_starttls
        self.pre_tls_untagged = pre_tls_untagged
        self.caps_plain = caps_plain
        self.caps_tls = caps_tls
        self.ctx = None
        if cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert, key)
            self.ctx.sni_callback = self._sni
        self.snis = []           # server names clients sent (None: none)
        self._listen_init(host)

    def _sni(self, sslobj, name, ctx):
        self.snis.append(name)
        return None

    def new_conn(self, sock, addr):
        return FakeConn(self, sock)
