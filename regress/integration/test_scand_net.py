"""scand has network access only when the configuration needs it.

A scand worker's seccomp policy allows TCP clients (socket(AF_INET/
AF_INET6, SOCK_STREAM) and connect) only when an action a policy uses has
spamBlocker enabled with engine spamd or rspamd; otherwise socket and
connect kill it like any other forbidden call.  `imapgwctl audit` compares
each worker with the policy of the flags it was started with, and says
whether that policy has network:

(a) engine builtin: every scand is audited "(no network)", 0 differences;
(b) engine spamd on a closed port: every scand is audited "(network)",
    0 differences, and a fetched message still arrives unchanged (spam
    unavailable, on_unavailable allow), with no sandbox violation;
(c) a reload from builtin to spamd replaces the scand workers with ones
    that have network, which do connect to the engine's address (and
    back), and the audit stays at 0 differences;
(d) a reload that does not change what scand needs replaces nobody;
(e) until it is replaced, a worker without network asked to use spamd
    does not try (socket() would kill it): the check is unavailable, the
    message arrives, and the worker logs why.

Each check fetches a message appended for it, so that no verdict
remembered from an earlier fetch answers instead of scand.
"""

import imaplib
import os
import re
import signal
import socket
import threading
import time

import pytest

import mailgen
from dovecot import free_port
from gateway import policy
from rawimap import RawIMAP

pytestmark = pytest.mark.gateway

PW = "secret"
USER = "scandnet"
ACTION = "spam-net"
# What a scand without network says when asked to reach a spam engine.
NONET = r"^.*scand\[\d+\]: .*no network access.*$"
WORKERS = (1, 2, 1)


def _add_user(dovecot):
    """A mailbox of our own: Dovecot re-reads its passwd-file when it
    changes (give it a few seconds)."""
    if USER not in dovecot.users:
        dovecot.users[USER] = PW
        with open(os.path.join(dovecot.dir, "passwd"), "a") as f:
            f.write("%s:{PLAIN}%s::::::\n" % (USER, PW))
    end = time.time() + 15
    while True:
        try:
            dovecot.connect(USER).logout()
            return
        except imaplib.IMAP4.error:
            if time.time() > end:
                raise
            time.sleep(0.2)


def _closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


def _action(engine, port=None):
    sb = {"enabled": True, "engine": engine}
    if engine != "builtin":
        sb.update({"address": "127.0.0.1:%d" % port, "timeout": "5s",
                   "on_unavailable": "allow"})
    return {ACTION: {"inherit": "IMAP-Server.Standard", "spamblocker": sb}}


class Listener:
    """A loopback TCP port that accepts connections, counts them and
    closes them at once (an engine that never answers)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            c.close()

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture(scope="module")
def mailbox(dovecot):
    """Our mailbox, empty; fresh() appends a message no fetch has seen
    and returns its UID and bytes as Dovecot holds them."""
    _add_user(dovecot)
    c = dovecot.connect(USER)
    try:
        c.select("INBOX")
        c.store("1:*", "+FLAGS", r"(\Deleted)")
        c.expunge()
    except imaplib.IMAP4.error:
        pass            # empty
    finally:
        c.logout()
    seeds = iter(range(4711, 1000000))

    def fresh():
        uids = dovecot.append(USER, mailgen.messages(1, seed=next(seeds)))
        assert len(uids) == 1, uids
        return uids[0], dovecot.fetch_bodies(USER)[uids[0]]
    return fresh


def _gateway(make_gateway, engine, port=None):
    g = make_gateway(policies=[policy("imap-in", free_port(), "dovecot",
                                      action=ACTION)],
                     workers=WORKERS, actions=_action(engine, port),
                     start=False)
    g.start(timeout=60)
    _wait(lambda: _scand_ready(g), 60, g, "scand workers ready")
    return g


def _wait(pred, timeout, g, what):
    return g.wait_until(pred, timeout, what)


def _status(g):
    return g.worker_rows()


def _scand_ready(g):
    """{name: pid} of the scand workers when all run and are ready."""
    rows = _status(g)
    want = ["scand-%d" % i for i in range(WORKERS[1])] + ["loader"]
    if all(k in rows and rows[k][0] > 0 and rows[k][1] == "ready"
           for k in want):
        return {k: rows[k][0] for k in want if k != "loader"}
    return None


def _audit(g):
    """The audit's text, after checking that it found no difference;
    {pid: "network" | "no network"} of the scand workers."""
    r = g.ctl("audit")
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    assert re.search(r"^audit: 0 differences, 0 processes not audited$",
                     out, re.M), out
    nets = {int(p): what for p, what in re.findall(
        r"^audit scand pid (\d+) \((network|no network)\)$", out, re.M)}
    return out, nets


def _check_audit(g, network):
    """Every scand worker audited with (or without) network, exactly."""
    workers = _scand_ready(g)
    assert workers, g.ctl("status").stdout
    out, nets = _audit(g)
    want = "network" if network else "no network"
    assert sorted(nets) == sorted(workers.values()), (nets, workers, out)
    assert set(nets.values()) == {want}, (nets, out)
    line = "expected tcp" if network else "expected none"
    live = "live tcp" if network else "live none"
    rows = [ln for ln in out.splitlines() if ln.startswith("ok   network ")]
    assert len(rows) == len(workers), out
    assert all(line in ln and live in ln for ln in rows), rows
    # netd and tlsd have no such line: their policy is fixed.
    assert not re.search(r"^audit (netd|tlsd) pid \d+ \(", out, re.M), out
    return workers


def _fetch_fresh(g, mailbox):
    """A new message fetched through the gateway arrives unchanged; the
    log lines of its scan."""
    off = g.log_offset()
    uid, body = mailbox()
    c = RawIMAP(g.port(), timeout=60)
    try:
        c.login(USER, PW)
        c.command("EXAMINE INBOX")
        got = c.fetch_bodies(str(uid))
    finally:
        c.logout()
    assert list(got) == [uid], got.keys()
    assert got[uid] == body, "the message changed"
    m = g.wait_log(r"^.*scand\[\d+\]: message judged .*user=%s .*$" % USER,
                   since=off, timeout=10)
    assert m, g.log_since(off)
    return m.group(0)


def _no_violation(g):
    log = g.log_text()
    assert "sandbox violation" not in log, log[-5000:]
    assert "SIGSYS" not in log, log[-5000:]


def test_builtin_scand_has_no_network(make_gateway, mailbox):
    g = _gateway(make_gateway, "builtin")
    _check_audit(g, network=False)
    judged = _fetch_fresh(g, mailbox)
    assert "spam:" not in judged, judged
    _check_audit(g, network=False)
    _no_violation(g)


def test_spamd_scand_has_network(make_gateway, mailbox):
    g = _gateway(make_gateway, "spamd", _closed_port())
    _check_audit(g, network=True)
    off = g.log_offset()
    # spamd is not there: the check is unavailable and on_unavailable
    # (allow) delivers the message as it is.
    judged = _fetch_fresh(g, mailbox)
    assert "spam:unavailable,action=allow" in judged, judged
    assert not re.search(NONET, g.log_since(off), re.M), g.log_since(off)
    _check_audit(g, network=True)
    _no_violation(g)


def test_reload_gives_and_takes_network(make_gateway, mailbox, listener):
    g = _gateway(make_gateway, "builtin")
    before = _check_audit(g, network=False)

    # builtin -> spamd: every worker is replaced by one with network
    off = g.log_offset()
    g.actions = _action("spamd", listener.port)
    g.write_config()
    g.reload()
    assert g.wait_log(r"configuration reloaded \(generation 2\)",
                      since=off, timeout=20), g.log_since(off)

    def replaced():
        w = _scand_ready(g)
        if w and not set(w.values()) & set(before.values()):
            return w
        return None
    after = _wait(replaced, 60, g, "scand workers replaced")
    log = g.log_since(off)
    for name, pid in before.items():
        assert re.search(r"replacing %s pid %d: the configuration uses "
                         r"spamBlocker's spamd or rspamd engine"
                         % (name, pid), log), log[-5000:]
    _check_audit(g, network=True)
    # the new worker connects to the engine (which hangs up: unavailable)
    judged = _fetch_fresh(g, mailbox)
    assert "spam:unavailable,action=allow" in judged, judged
    assert listener.accepted >= 1, g.log_since(off)[-5000:]
    assert not re.search(NONET, g.log_since(off), re.M), g.log_since(off)
    _no_violation(g)

    # and back: network access no longer needed is taken away
    off = g.log_offset()
    g.actions = _action("builtin")
    g.write_config()
    g.reload()
    assert g.wait_log(r"configuration reloaded \(generation 3\)",
                      since=off, timeout=20), g.log_since(off)

    def replaced_again():
        w = _scand_ready(g)
        if w and not set(w.values()) & set(after.values()):
            return w
        return None
    _wait(replaced_again, 60, g, "scand workers replaced again")
    log = g.log_since(off)
    assert re.search(r"replacing scand-\d pid \d+: its sandbox allows "
                     r"network access the configuration no longer needs",
                     log), log[-5000:]
    _check_audit(g, network=False)
    judged = _fetch_fresh(g, mailbox)
    assert "spam:" not in judged, judged
    _no_violation(g)


def test_reload_without_network_change_keeps_workers(make_gateway, mailbox):
    """A reload that does not change what scand needs replaces nobody."""
    g = _gateway(make_gateway, "spamd", _closed_port())
    before = _check_audit(g, network=True)
    off = g.log_offset()
    g.actions = _action("rspamd", _closed_port())
    g.write_config()
    g.reload()
    assert g.wait_log(r"configuration reloaded \(generation 2\)",
                      since=off, timeout=20), g.log_since(off)
    time.sleep(1)
    assert "replacing scand" not in g.log_since(off), g.log_since(off)
    assert _check_audit(g, network=True) == before
    judged = _fetch_fresh(g, mailbox)
    assert "spam:unavailable,action=allow" in judged, judged
    _no_violation(g)


def test_old_worker_without_network_answers_unavailable(make_gateway,
                                                        mailbox, listener):
    """The loader held stopped: it cannot answer the new config, so the
    parent cannot replace the workers yet, and the old ones (no network)
    get the spamd config."""
    g = _gateway(make_gateway, "builtin")
    before = _check_audit(g, network=False)
    loader = _status(g)["loader"][0]
    off = g.log_offset()
    os.kill(loader, signal.SIGSTOP)
    try:
        g.actions = _action("spamd", listener.port)
        g.write_config()
        g.reload()
        assert g.wait_log(r"configuration reloaded \(generation 2\)",
                          since=off, timeout=20), g.log_since(off)
        judged = _fetch_fresh(g, mailbox)
        assert "spam:unavailable,action=allow" in judged, judged
        assert g.wait_log(NONET, since=off, timeout=10), g.log_since(off)
        assert listener.accepted == 0
        assert "replacing scand" not in g.log_since(off), g.log_since(off)
        # still the same workers, audited as they were started
        assert _check_audit(g, network=False) == before
        _no_violation(g)
    finally:
        os.kill(loader, signal.SIGCONT)

    def replaced():
        w = _scand_ready(g)
        if w and not set(w.values()) & set(before.values()):
            return w
        return None
    _wait(replaced, 60, g, "scand workers replaced")
    _check_audit(g, network=True)
    judged = _fetch_fresh(g, mailbox)
    assert "spam:unavailable,action=allow" in judged, judged
    assert listener.accepted >= 1, g.log_since(off)[-5000:]
    _no_violation(g)
