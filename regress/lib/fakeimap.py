"""A small scripted fake IMAP server for anomaly tests.

Only for what no real server sends (malformed responses, odd SASL
mechanisms): everything else is tested against the real Dovecot.

    srv = FakeIMAP([
        (rb"LOGIN", b"{tag} OK logged in\\r\\n"),
        (rb"FETCH", Reply(b"* 1 FETCH (BODY[] {5}\\r\\nabc", close=True)),
    ]).start()
    ... srv.port, srv.address ...
    srv.stop()

Each accepted connection gets the greeting, then every complete client
line (literals included: `{n}` gets a "+" continuation, `{n+}` and `~{n}`
are read as they come) is matched against the script in order; the first
rule whose regex matches (re.search on the whole line, CRLF and literal
payload included) answers.  "{tag}" in the reply is replaced by the line's
tag.  A rule may be used once (once=True) or every time.  Lines that match
nothing get "{tag} OK done"; LOGOUT gets "* BYE" and the connection is
closed.  What each connection received is kept in srv.conns[i].received
(bytes), so a test can check that garbage never reached the server.
"""

import re
import socket
import threading
import time


class Reply:
    """What the server does for a matched line: send data (bytes, or a
    function of (match, line, conn) returning bytes) in pieces with pauses,
    then maybe close."""

    def __init__(self, data=b"", close=False, once=False, delay=0.0,
                 pieces=None):
        self.data = data
        self.close = close
        self.once = once
        self.delay = delay
        self.pieces = pieces      # list of bytes, sent with delay between

    def render(self, m, line, conn):
        data = self.data(m, line, conn) if callable(self.data) else self.data
        return data.replace(b"{tag}", conn.tag)


def _reply(x):
    return x if isinstance(x, Reply) else Reply(x)


class Conn:
    def __init__(self, srv, sock, addr):
        self.srv = srv
        self.sock = sock
        self.addr = addr
        self.received = b""
        self.lines = []          # complete client lines, literals included
        self.tag = b"*"
        self.closed = threading.Event()
        self.state = {}          # free for reply functions (SASL steps)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def _recv_more(self, buf):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.received += chunk
        return buf + chunk

    def read_line(self, buf):
        """One logical line with its literals; returns (line, rest)."""
        line = b""
        while True:
            while b"\n" not in buf:
                if len(buf) > self.srv.max_line:
                    raise EOFError
                buf = self._recv_more(buf)
            seg, buf = buf.split(b"\n", 1)
            seg += b"\n"
            line += seg
            m = re.search(rb"~?\{(\d+)(\+?)\}\r?\n\Z", seg)
            if not m:
                return line, buf
            n = int(m.group(1))
            if n > self.srv.max_literal:
                raise EOFError
            if not m.group(2):
                self.send(b"+ go ahead\r\n")
            while len(buf) < n:
                buf = self._recv_more(buf)
            line += buf[:n]
            buf = buf[n:]

    def serve(self):
        buf = b""
        try:
            self.send(self.srv.greeting)
            while True:
                line, buf = self.read_line(buf)
                self.lines.append(line)
                self.tag = line.split(b" ", 1)[0].strip() or b"*"
                if not self.answer(line):
                    break
        except (EOFError, OSError):
            pass
        finally:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.closed.set()

    def answer(self, line):
        for i, (rx, rep) in enumerate(self.srv.script):
            if rep.once and i in self.srv.used:
                continue
            m = re.search(rx, line, re.I | re.S)
            if not m:
                continue
            if rep.once:
                self.srv.used.add(i)
            if rep.delay:
                time.sleep(rep.delay)
            if rep.pieces:
                for k, p in enumerate(rep.pieces):
                    if k:
                        time.sleep(rep.delay or 0.2)
                    self.send(p.replace(b"{tag}", self.tag))
            data = rep.render(m, line, self)
            if data:
                self.send(data)
            return not rep.close
        words = line.split()
        if len(words) >= 2 and words[1].upper() == b"LOGOUT":
            self.send(b"* BYE fake server logging out\r\n" + self.tag +
                      b" OK LOGOUT completed\r\n")
            return False
        self.send(self.tag + b" OK done\r\n")
        return True


class Listener:
    """A loopback listening socket that serves each accepted connection
    in a thread: conn_class(server, sock, addr).serve().  The fake
    servers here and in the TLS tests are built on it."""

    conn_timeout = 60
    backlog = 64

    def _listen_init(self, host):
        self.host = host
        self.conns = []
        self.lsock = None
        self.thread = None
        self._stop = threading.Event()

    @property
    def port(self):
        return self.lsock.getsockname()[1]

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((self.host, 0))
        self.lsock.listen(self.backlog)
        self.lsock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def new_conn(self, sock, addr):
        raise NotImplementedError

    def _accept(self):
        while not self._stop.is_set():
            try:
                s, addr = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(self.conn_timeout)
            c = self.new_conn(s, addr)
            self.conns.append(c)
            threading.Thread(target=c.serve, daemon=True).start()

    def stop(self):
        self._stop.set()
        if self.lsock is not None:
            self.lsock.close()
        for c in self.conns:
            try:
                c.sock.close()
            except OSError:
                pass
        if self.thread is not None:
            self.thread.join(2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()


class FakeIMAP(Listener):
    DEFAULT_GREETING = b"* OK [CAPABILITY IMAP4rev1 LITERAL+] fake ready\r\n"

    def __init__(self, script=(), greeting=None, host="127.0.0.1",
                 max_line=1 << 20, max_literal=64 << 20):
        self.script = [(rx if isinstance(rx, bytes) else rx.encode(),
                        _reply(rep)) for rx, rep in script]
        self.greeting = greeting if greeting is not None else \
            self.DEFAULT_GREETING
        self.max_line = max_line
        self.max_literal = max_literal
        self.used = set()
        self._listen_init(host)

    def new_conn(self, sock, addr):
        return Conn(self, sock, addr)

    def wait_conn(self, n=1, timeout=10):
        """The n-th connection (1-based), once it was accepted."""
        end = time.time() + timeout
        while len(self.conns) < n:
            if time.time() > end:
                raise TimeoutError("fake server: no connection %d" % n)
            time.sleep(0.02)
        return self.conns[n - 1]

    def received(self):
        """Everything every connection received, concatenated."""
        return b"".join(c.received for c in self.conns)
