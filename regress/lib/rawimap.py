"""A small raw IMAP client for tests: exact bytes on the wire.

imaplib rewrites line endings in APPEND and only knows synchronizing
literals; this client sends what it is given (LITERAL+ `{n+}` or `{n}` with
a continuation wait) and reads responses with literals kept as bytes.
"""

import socket
import time


class IMAPError(Exception):
    pass


class Response:
    """One response: the text lines with literals replaced by placeholders
    and the literals in order."""

    def __init__(self):
        self.parts = []      # list of bytes (line pieces) and literals
        self.literals = []

    @property
    def line(self):
        return b"".join(p for p in self.parts if isinstance(p, bytes))

    def __repr__(self):
        return "<Response %r +%d literals>" % (self.line[:200],
                                               len(self.literals))


class RawIMAP:
    def __init__(self, port, host="127.0.0.1", timeout=30, greeting=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb", buffering=1 << 16)
        self.ntag = 0
        self.nsent = 0          # bytes written to the server
        self.nrecv = 0          # bytes read from the server
        self.greeting = self.read_response() if greeting else None

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def close(self):
        try:
            self.f.close()
        finally:
            self.sock.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(data)
        self.nsent += len(data)

    def tag(self):
        self.ntag += 1
        return "t%d" % self.ntag

    def readline(self):
        line = self.f.readline(1 << 20)
        self.nrecv += len(line)
        if not line:
            raise EOFError("connection closed by peer")
        return line

    def read_response(self):
        """Read one response (a line plus any literals it announces)."""
        r = Response()
        while True:
            line = self.readline()
            r.parts.append(line)
            s = line.rstrip(b"\r\n")
            if s.endswith(b"}") and b"{" in s:
                n = s[s.rindex(b"{") + 1:-1].rstrip(b"+")
                if n.isdigit():
                    lit = self.f.read(int(n))
                    self.nrecv += len(lit)
                    if len(lit) != int(n):
                        raise EOFError("short literal")
                    r.literals.append(lit)
                    r.parts.append(lit)
                    continue
            return r

    def read_until_tagged(self, tag):
        """Responses up to and including the tagged one for tag."""
        out = []
        t = tag.encode() + b" "
        while True:
            r = self.read_response()
            out.append(r)
            if r.line.startswith(t):
                return out

    def command(self, cmd, check=True):
        """Send `TAG cmd`, return (tagged status line, untagged responses)."""
        tag = self.tag()
        if isinstance(cmd, str):
            cmd = cmd.encode()
        self.send(tag.encode() + b" " + cmd + b"\r\n")
        rs = self.read_until_tagged(tag)
        status = rs[-1].line
        if check and not status.startswith((tag + " OK").encode()):
            raise IMAPError(status)
        return status, rs[:-1]

    def login(self, user, password):
        return self.command('LOGIN "%s" "%s"' % (user, password))

    def append(self, mailbox, msg, literal_plus=False, flags=None):
        """APPEND msg verbatim; returns the tagged status line."""
        tag = self.tag()
        fl = (" (%s)" % flags) if flags else ""
        if literal_plus:
            self.send(("%s APPEND %s%s {%d+}\r\n" % (tag, mailbox, fl,
                                                     len(msg))).encode()
                      + msg + b"\r\n")
        else:
            self.send(("%s APPEND %s%s {%d}\r\n" % (tag, mailbox, fl,
                                                    len(msg))).encode())
            while True:
                r = self.read_response()
                if r.line.startswith(b"+"):
                    break
                if r.line.startswith(tag.encode() + b" "):
                    raise IMAPError(r.line)
            self.send(msg + b"\r\n")
        rs = self.read_until_tagged(tag)
        status = rs[-1].line
        if not status.startswith((tag + " OK").encode()):
            raise IMAPError(status)
        return status

    def fetch_bodies(self, seqset="1:*", uid=True):
        """{uid: BODY[]} via UID FETCH."""
        st, rs = self.command(("UID FETCH %s (UID BODY.PEEK[])" if uid else
                               "FETCH %s (UID BODY.PEEK[])") % seqset)
        out = {}
        for r in rs:
            toks = r.line.replace(b"(", b" ").split()
            if b"FETCH" in toks and b"UID" in toks and r.literals:
                out[int(toks[toks.index(b"UID") + 1])] = r.literals[0]
        return out

    def read_to_eof(self):
        """Everything the server still sends until it closes."""
        data = self.f.read()
        self.nrecv += len(data)
        return data

    def logout(self):
        try:
            self.command("LOGOUT", check=False)
        except (EOFError, OSError):
            pass
        self.close()


def expect_closed_without_data(port, timeout=10):
    """Connect and read: returns 'eof', 'reset' or the bytes received."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionResetError:
        # the RST arrived before connect() returned
        return ("reset", b"")
    try:
        data = b""
        end = time.time() + timeout
        while time.time() < end:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                return ("reset", data)
            if not chunk:
                return ("eof", data)
            data += chunk
        return ("open", data)
    finally:
        s.close()
