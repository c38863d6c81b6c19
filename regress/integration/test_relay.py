"""The relay as imapgwd(8) RELAY, LOGGING and SIGNALS describe it: idle
timeout, max line length, synchronizing literals held until the server
answers, half-close, bounded memory under backpressure, JSON logs, respawn
with backoff and SIGTERM."""

import base64
import hashlib
import json
import os
import random
import re
import signal
import socket
import time

import pytest

from dovecot import free_port
from gateway import policy, proc_status
from rawimap import RawIMAP, read_all

pytestmark = pytest.mark.gateway

PW = "secret"


# ---- helpers -----------------------------------------------------------------

def _client_rx(lport):
    return r"\bclient=\[?127\.0\.0\.1\]?:%d\b" % lport


def session_end(g, lport, since=0, timeout=10):
    """The `session end` log line of the client on local port lport."""
    m = g.wait_log(r"^.*\bsession end\b.*%s.*$" % _client_rx(lport),
                   since=since, timeout=timeout)
    return m.group(0) if m else None


def read_lines_until(c, pred, timeout=10):
    """Response lines (literals kept inline) until pred(lines) is true."""
    c.settimeout(timeout)
    lines = []
    end = time.monotonic() + timeout
    while not pred(lines):
        assert time.monotonic() < end, lines
        lines.append(c.readline())
    return lines


def wait_until(t):
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def rss_kib(pid):
    return int(proc_status(pid)["VmRSS"].split()[0])


# ---- 3. idle timeout ------------------------------------------------------------

@pytest.fixture
def idle_gw(make_gateway):
    return make_gateway(policies=[policy("imap-in", free_port(), "dovecot",
                                         idle_timeout="2s")])


def test_idle_timeout_closes_silent_client(idle_gw):
    g = idle_gw
    off = g.log_offset()
    c = RawIMAP(g.port())
    lport = c.local_port
    c.login("silent", PW)
    t0 = time.monotonic()
    data, how = read_all(c, timeout=8)
    elapsed = time.monotonic() - t0
    c.close()
    assert how in ("eof", "reset"), (how, data, elapsed)
    assert data.startswith(b"* BYE Idle timeout"), (data, how)
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == 1, data
    # policy idle_timeout 2s: not before, and within ~5 s
    assert 1.5 <= elapsed <= 5.0, elapsed
    line = session_end(g, lport, since=off)
    assert line and 'reason="idle timeout"' in line, g.log_since(off)


def test_idle_timeout_reset_by_activity(idle_gw):
    """NOOP every second for 5 s (on a fixed schedule): never idle for 2 s,
    so never closed."""
    g = idle_gw
    off = g.log_offset()
    c = RawIMAP(g.port())
    lport = c.local_port
    c.login("active", PW)
    t0 = time.monotonic()
    try:
        for k in range(1, 6):
            wait_until(t0 + k)
            st, rs = c.command("NOOP")
            assert st.startswith(b"t%d OK" % (k + 1)), (k, st)
            assert not any(r.line.startswith(b"* BYE") for r in rs), rs
        wait_until(t0 + 5.9)
        st, _ = c.command("NOOP")
        assert b" OK " in st, st
        assert session_end(g, lport, since=off, timeout=0) is None, \
            g.log_since(off)
    finally:
        c.logout()


def test_idle_timeout_counts_from_last_activity(idle_gw):
    """The idle time is measured from the last byte, to better than a
    second: a client that was active 1.1 s ago is not idle for 2 s.

    Aligned on CLOCK_MONOTONIC (the clock time.monotonic() and netd's
    timers share): the session starts just after a whole second K, so its
    first idle check is at about K+2.05; the client's last command is at
    K+0.95.  At the check the client has been silent for 1.1 s."""
    g = idle_gw
    off = g.log_offset()
    for attempt in range(3):
        now = time.monotonic()
        k = int(now) + 1
        wait_until(k + 0.03)
        c = RawIMAP(g.port())
        lport = c.local_port
        c.login("early", PW)
        if time.monotonic() < k + 0.85:
            break
        c.logout()          # login too slow for the alignment; again
    else:
        pytest.fail("could not align the session on a second (login slow)")
    wait_until(k + 0.95)
    st, _ = c.command("NOOP")
    t_last = time.monotonic()
    assert b" OK " in st, st
    data, how = read_all(c, timeout=6)
    silent = time.monotonic() - t_last
    c.close()
    assert data.startswith(b"* BYE Idle timeout"), (data, how)
    assert silent >= 1.9, (
        "closed for idle_timeout 2s after only %.2f s of silence" % silent,
        session_end(g, lport, since=off))


# ---- 4. max line length --------------------------------------------------------

def _send_quietly(c, data):
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def test_line_longer_than_64k_is_refused(gw):
    off = gw.log_offset()
    c = RawIMAP(gw.port())
    lport = c.local_port
    c.login("longline", PW)
    line = b"a NOOP " + b"x" * (70000 - 7)
    assert len(line) == 70000
    _send_quietly(c, line)              # no LF
    data, how = read_all(c, timeout=10)
    c.close()
    assert how in ("eof", "reset"), (how, data[-300:])
    assert data.endswith(
        b"* BYE Protocol error: line longer than 65536 bytes\r\n"), data[-300:]
    m = gw.wait_log(r"^.*\banomaly\b.*%s.*$" % _client_rx(lport), since=off)
    assert m and "line longer than 65536 bytes" in m.group(0), \
        gw.log_since(off)
    end = session_end(gw, lport, since=off)
    assert end and re.search(r'reason="client protocol error: line longer',
                             end), end


def test_max_line_length_from_inherited_action(make_gateway):
    g = make_gateway(
        actions={"short-lines": {"inherit": "IMAP-Server.Standard",
                                 "general": {"max_line_length": "1K"}}},
        policies=[policy("imap-in", free_port(), "dovecot",
                         action="short-lines")])
    off = g.log_offset()
    c = RawIMAP(g.port())
    lport = c.local_port
    c.login("shortline", PW)
    # 900 bytes: relayed; Dovecot answers it (NOOP takes no argument)
    ok = b"b NOOP " + b"y" * (900 - 7)
    assert len(ok) == 900
    c.send(ok + b"\r\n")
    rs = c.read_until_tagged("b")
    assert re.match(rb"b (OK|NO|BAD) ", rs[-1].line), rs
    assert not any(r.line.startswith(b"* BYE") for r in rs), rs
    # 2000 bytes: refused by the gateway
    bad = b"c NOOP " + b"z" * (2000 - 7)
    _send_quietly(c, bad + b"\r\n")
    data, how = read_all(c, timeout=10)
    c.close()
    assert how in ("eof", "reset"), (how, data)
    assert data == b"* BYE Protocol error: line longer than 1024 bytes\r\n", \
        data
    end = session_end(g, lport, since=off)
    assert end and 'reason="client protocol error: line longer than 1024 ' \
        'bytes"' in end, end


# ---- 5. synchronizing literals ---------------------------------------------------

def test_dovecot_refuses_append_before_continuation(dovecot):
    """The premise of the next test: Dovecot answers an APPEND to a missing
    mailbox with a tagged NO [TRYCREATE] instead of a "+"."""
    c = RawIMAP(dovecot.port)
    try:
        c.login("literal", PW)
        c.send(b"a APPEND nosuchbox {12}\r\n")
        r = c.read_response()
        assert r.line.startswith(b"a NO [TRYCREATE]"), r
    finally:
        c.close()


def test_held_literal_read_as_commands_when_refused(gw, dovecot):
    """A command with a synchronizing literal goes upstream and waits: when
    the server refuses the command instead of sending "+", the bytes the
    client sent on are commands, for the server and for the gateway alike.
    (Dovecot answers an unknown command with BAD before its literal;
    APPEND literals are answered by the gateway itself, see test_append.)"""
    off = gw.log_offset()
    c = RawIMAP(gw.port())
    try:
        st, _ = c.login("literal", PW)
        c.send(b"a XYZZY {12}\r\nb1 NOOP\r\nxx\r\n")
        lines = read_lines_until(
            c, lambda ls: any(x.startswith(b"b1 ") for x in ls) and
            any(x.startswith(b"a ") for x in ls) and
            any(x.startswith(b"xx ") for x in ls))
        assert not any(x.startswith(b"+") for x in lines), lines
        tagged = {x.split(b" ", 1)[0]: x for x in lines}
        assert tagged[b"a"].startswith(b"a BAD"), lines
        assert tagged[b"b1"].startswith(b"b1 OK"), lines
        assert tagged[b"xx"].startswith(b"xx BAD"), lines
        # the refusal comes first: only then are the held bytes commands
        order = [x.split(b" ", 1)[0] for x in lines
                 if not x.startswith(b"*")]
        assert order.index(b"a") < order.index(b"b1"), lines
        m = gw.wait_log(r"^.*client command b1 NOOP\b.*$", since=off)
        assert m, gw.log_since(off)
        st, _ = c.command("NOOP")
        assert b" OK " in st, st
    finally:
        c.logout()


def test_literal_sent_after_continuation(gw, dovecot):
    before = dovecot.fetch_bodies("literal")
    c = RawIMAP(gw.port())
    try:
        c.login("literal", PW)
        c.send(b"c APPEND INBOX {5}\r\n")
        r = c.read_response()
        assert r.line.startswith(b"+"), r
        c.send(b"hello\r\n")
        rs = c.read_until_tagged("c")
        assert rs[-1].line.startswith(b"c OK"), rs
    finally:
        c.logout()
    after = dovecot.fetch_bodies("literal")
    new = {u: b for u, b in after.items() if u not in before}
    assert list(new.values()) == [b"hello"], (before, after)


# ---- 6. half-close -------------------------------------------------------------

def test_half_close_still_gets_answers(gw):
    off = gw.log_offset()
    c = RawIMAP(gw.port())
    lport = c.local_port
    c.login("halfclose", PW)
    c.send(b"a1 NOOP\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    data, how = read_all(c, timeout=10)
    c.close()
    assert how == "eof", (how, data)
    assert re.match(rb"^a1 OK [^\r\n]*\r\n$", data), data
    end = session_end(gw, lport, since=off)
    assert end, gw.log_since(off)
    assert 'reason="client closed"' in end, end


# ---- 7. backpressure and bounded memory ---------------------------------------

def _big_message(size=40 << 20, seed=7):
    rng = random.Random(seed)
    raw = rng.randbytes(size * 3 // 4 - 2048)
    body = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = (b"From: big@example.org\r\nTo: bigfetch@example.org\r\n"
            b"Subject: 40 MB\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    return head + body


def test_slow_reader_bounded_memory(make_gateway, dovecot):
    """The 40 MB message is scanned (the action's ClamAV limits allow it)
    and arrives whole, while netd's memory stays flat even though the
    client does not read for a while."""
    port = free_port()
    gw = make_gateway(
        actions={"big": {"inherit": "IMAP-Server.Standard",
                         "antivirus": {"max_file_size": "64M",
                                       "max_scan_size": "128M"}}},
        policies=[policy("imap-in", port, "dovecot", action="big")])
    msg = _big_message()
    assert len(msg) > 39 << 20
    dovecot.append("bigfetch", msg)
    direct = dovecot.fetch_bodies("bigfetch")
    assert len(direct) == 1
    want = hashlib.sha256(list(direct.values())[0]).hexdigest()

    c = RawIMAP(gw.port(), timeout=60)
    try:
        c.login("bigfetch", PW)
        c.command("SELECT INBOX")
        pids = gw.pids_of("netd")
        assert len(pids) == 2, (pids, gw.roles())
        base = {p: rss_kib(p) for p in pids}
        peak = dict(base)
        c.send(b"a FETCH 1 BODY.PEEK[]\r\n")
        end = time.monotonic() + 3
        while time.monotonic() < end:
            for p in pids:
                peak[p] = max(peak[p], rss_kib(p))
            time.sleep(0.1)
        growth = {p: peak[p] - base[p] for p in pids}
        print("netd VmRSS KiB before the fetch %s, peak while not reading %s"
              % (base, peak))
        assert all(g < 8 * 1024 for g in growth.values()), (
            "netd RSS (KiB) before the fetch %s, peak while the client "
            "does not read %s" % (base, peak))
        rs = c.read_until_tagged("a")
    finally:
        c.logout()
    assert rs[-1].line.startswith(b"a OK"), rs[-1]
    bodies = [r.literals[0] for r in rs if r.literals]
    assert len(bodies) == 1, rs
    got = hashlib.sha256(bodies[0]).hexdigest()
    assert got == want, (len(bodies[0]), len(msg))


# ---- 8. JSON logs -----------------------------------------------------------

def test_json_log(make_gateway):
    g = make_gateway(log_format="json")
    c = RawIMAP(g.port())
    lport = c.local_port
    c.login("jsonlog", PW)
    c.command("NOOP")
    c.logout()
    assert g.wait_log(r'"msg":"session end".*"client":"127\.0\.0\.1:%d"'
                      % lport), g.log_tail()
    time.sleep(0.2)
    objs = []
    for n, line in enumerate(g.log_text().splitlines(), 1):
        try:
            o = json.loads(line)
        except ValueError:
            pytest.fail("log line %d is not JSON: %r" % (n, line))
        assert isinstance(o, dict), (n, line)
        for k in ("time", "level", "role", "pid", "msg"):
            assert k in o, (n, k, line)
        assert isinstance(o["pid"], int), line
        assert o["role"] in ("parent", "netd", "scand", "tlsd", "loader"), \
            line
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$",
                        o["time"]), line
        objs.append(o)
    client = "127.0.0.1:%d" % lport
    starts = [o for o in objs if o["msg"] == "session start"
              and o.get("client") == client]
    ends = [o for o in objs if o["msg"] == "session end"
            and o.get("client") == client]
    assert len(starts) == 1 and len(ends) == 1, objs
    s, e = starts[0], ends[0]
    for o in (s, e):
        assert o["policy"] == "imap-in", o
        assert o["server"] == "dovecot", o
        assert o["backend"] == g.servers["dovecot"][0], o
        assert o["role"] == "netd", o
    for k in ("bytes_in", "bytes_out", "duration", "reason"):
        assert k in e, (k, e)
    assert int(e["bytes_in"]) == c.nsent, (c.nsent, e)
    assert int(e["bytes_out"]) == c.nrecv, (c.nrecv, e)
    assert float(e["duration"]) >= 0, e
    assert e["reason"] == "logout", e


# ---- 9. respawn with backoff ---------------------------------------------------

def _stamp(line):
    """Seconds (with ms) of a text log line's timestamp."""
    m = re.match(r"^\d{4}-\d\d-\d\d (\d\d):(\d\d):(\d\d\.\d+) ", line)
    assert m, line
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def test_respawn_with_backoff(make_gateway):
    g = make_gateway()
    g.expect_crash = True       # scand is killed on purpose
    netd = g.pids_of("netd")
    first = g.pids_of("scand")
    assert len(first) == 1 and len(netd) == 2, g.roles()
    off = g.log_offset()
    victims = []
    pid = first[0]
    for n in (1, 2):
        since = g.log_offset()
        os.kill(pid, signal.SIGKILL)
        victims.append(pid)
        m = g.wait_log(r"\bstarted scand-0 pid (\d+)", since=since,
                       timeout=10)
        assert m, g.log_since(off)
        pid = int(m.group(1))
        assert pid not in victims
    text = g.log_since(off)
    died = re.findall(r"^.*\bchild died\b.*$", text, re.M)
    assert len(died) == 2, text
    for line, v in zip(died, victims):
        assert "role=scand" in line and "signal=SIGKILL" in line, line
        assert re.search(r"\bpid=%d\b" % v, line), (v, line)
    resp = re.findall(r"respawning scand-0 in (\d+) s", text)
    assert resp == ["1", "2"], text
    # and the delays are real: death to restart
    events = [(_stamp(ln), "died" if "child died" in ln else "started")
              for ln in text.splitlines()
              if "child died" in ln or "started scand-0" in ln]
    kinds = [k for _, k in events]
    assert kinds == ["died", "started", "died", "started"], text
    gaps = [(events[1][0] - events[0][0]) % 86400,     # midnight
            (events[3][0] - events[2][0]) % 86400]
    assert 0.9 <= gaps[0] < 1.9 and 1.9 <= gaps[1] < 3.5, (gaps, text)

    # the new scand runs and status lists it
    end = time.monotonic() + 5
    while time.monotonic() < end and g.pids_of("scand") != [pid]:
        time.sleep(0.05)
    assert g.pids_of("scand") == [pid], (pid, g.roles())
    st = g.ctl("status")
    out = st.stdout.decode(errors="replace")
    assert st.returncode == 0, out + st.stderr.decode(errors="replace")
    assert re.search(r"^.*\bscand\b.*\b%d\b.*$" % pid, out, re.M), (pid, out)
    # netd was not disturbed, and the gateway still relays (both netd)
    assert g.pids_of("netd") == netd, (netd, g.roles())
    for _ in range(4):
        c = RawIMAP(g.port())
        try:
            c.login("respawn", PW)
            st, _ = c.command("NOOP")
            assert b" OK " in st, st
        finally:
            c.logout()
    assert g.alive()
    assert "child died" not in g.log_since(off)[len(text):], g.log_since(off)


# ---- 10. SIGTERM ---------------------------------------------------------------

def _gone(pid):
    try:
        return proc_status(pid)["State"].startswith("Z")
    except OSError:
        return True


def test_sigterm_stops_everything(make_gateway):
    g = make_gateway()
    kids = g.children()
    # 2 netd, 1 scand, 1 tlsd and the scand loader
    assert len(kids) == 5, g.roles()
    assert os.path.exists(g.socket)
    c = RawIMAP(g.port())
    lport = c.local_port
    c.login("sigterm", PW)
    c.command("SELECT INBOX")
    off = g.log_offset()
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    try:
        rc = g.proc.wait(6)
    except Exception:
        pytest.fail("imapgwd still running 6 s after SIGTERM:\n"
                    + g.log_since(off))
    left = [p for p in kids if not _gone(p)]
    elapsed = time.monotonic() - t0
    assert not left, (left, g.log_since(off))
    assert elapsed < 6, elapsed
    assert rc == 0, (rc, g.log_since(off))
    # the client's connection is closed
    data, how = read_all(c, timeout=5)
    c.close()
    assert how in ("eof", "reset"), (how, data)
    text = g.log_since(off)
    end = session_end(g, lport, since=off, timeout=0)
    assert end and re.search(r"\breason=shutdown\b", end), text
    assert re.search(r"\bparent\[\d+\]: stopped$", text, re.M), text
    assert "did not stop" not in text, text
    assert not os.path.exists(g.socket), os.listdir(g.dir)
