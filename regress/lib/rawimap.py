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
    def __init__(self, port, host="127.0.0.1", timeout=30, greeting=True,
                 source=None):
        """source: local address to bind to (e.g. "127.0.0.7")."""
        self.sock = socket.create_connection(
            (host, port), timeout=timeout,
            source_address=(source, 0) if source else None)
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


def first_line(sock):
    """What sock (plain or TLS) gives up to its first LF, or until EOF:
    a greeting.  Reads in pieces of 4 KB, so a little past the LF may
    come too."""
    buf = b""
    while b"\n" not in buf:
        d = sock.recv(4096)
        if not d:
            break
        buf += d
    return buf


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


# ---- parsing responses (for tests that look inside FETCH) -----------------

class Atom(bytes):
    """An atom or number as it appeared (NIL is None, not an Atom)."""


class Str(bytes):
    """A quoted string or a literal's bytes."""


def _pieces(r):
    """(text, literal-or-None) pairs of a Response, in order."""
    out = []
    parts = list(r.parts)
    i = 0
    while i < len(parts):
        line = parts[i]
        lit = None
        s = line.rstrip(b"\r\n")
        if s.endswith(b"}") and b"{" in s and i + 1 < len(parts):
            n = s[s.rindex(b"{") + 1:-1].rstrip(b"+")
            if n.isdigit() and len(parts[i + 1]) == int(n):
                lit = parts[i + 1]
                i += 1
        out.append((line, lit))
        i += 1
    return out


def parse_tokens(r):
    """The response as a nested list: Atom, Str, None (NIL), lists.
    FETCH item names keep their section and partial
    (`BODY[HEADER.FIELDS (A B)]<0>` is one Atom)."""
    stack = [[]]
    for line, lit in _pieces(r):
        s = line
        if lit is not None:
            s = line.rstrip(b"\r\n")
            s = s[:s.rindex(b"{")]
            if s.endswith(b"~"):
                s = s[:-1]
        else:
            s = s.rstrip(b"\r\n")
        i, n = 0, len(s)
        while i < n:
            c = s[i:i + 1]
            if c == b" ":
                i += 1
            elif c == b"(":
                stack.append([])
                i += 1
            elif c == b")":
                if len(stack) < 2:
                    raise ValueError("unbalanced ) in %r" % s[:200])
                top = stack.pop()
                stack[-1].append(top)
                i += 1
            elif c == b'"':
                j, out = i + 1, b""
                while s[j:j + 1] != b'"':
                    if j >= n:
                        raise ValueError("unterminated string")
                    if s[j:j + 1] == b"\\":
                        j += 1
                    out += s[j:j + 1]
                    j += 1
                stack[-1].append(Str(out))
                i = j + 1
            else:
                j, depth = i, 0
                while j < n:
                    ch = s[j:j + 1]
                    if ch == b"[":
                        depth += 1
                    elif ch == b"]":
                        depth -= 1
                    elif depth == 0 and ch in b" ()":
                        break
                    j += 1
                tok = s[i:j]
                stack[-1].append(None if tok.upper() == b"NIL" else Atom(tok))
                i = j
        if lit is not None:
            stack[-1].append(Str(lit))
    if len(stack) != 1:
        raise ValueError("unbalanced ( in %r" % r.line[:200])
    return stack[0]


def fetch_items(r):
    """(msgno, [(NAME, value), ...]) of a `* n FETCH (...)` response;
    names upper-cased, BODY.PEEK answered as BODY."""
    toks = parse_tokens(r)
    if len(toks) < 4 or toks[0] != b"*" or toks[2].upper() != b"FETCH":
        raise ValueError("not a FETCH response: %r" % r)
    lst = toks[3]
    out = []
    for k in range(0, len(lst) - 1, 2):
        out.append((bytes(lst[k]).upper(), lst[k + 1]))
    return int(toks[1]), out


def fetch_dict(r):
    """{NAME: value} of a FETCH response (last one wins)."""
    return dict(fetch_items(r)[1])


def norm_structure(v):
    """BODYSTRUCTURE / BODY for comparison: strings upper-cased (types,
    subtypes, parameter names and encodings are case-insensitive)."""
    if isinstance(v, list):
        return [norm_structure(x) for x in v]
    if v is None:
        return None
    return bytes(v).upper()


def read_all(c, timeout=10):
    """Everything the gateway still sends: (data, how) with how 'eof',
    'reset' or 'timeout'."""
    c.settimeout(timeout)
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = c.f.read1(65536)
        except ConnectionResetError:
            return data, "reset"
        except socket.timeout:
            return data, "timeout"
        if not chunk:
            return data, "eof"
        data += chunk
    return data, "timeout"
