"""The scand engines are loaded once and shared by every scand worker.

The loader (`imapgwd -P loader`) loads the ClamAV databases and forks the
scand workers from its memory; each worker is re-parented to the parent
(a child subreaper) and then sandboxes itself.  A gateway with three scand
workers scans with a database of 200,000 random body signatures (tens of
MB of engine) besides the EICAR one:

(a) every worker is a child of the parent, forked from the loader;
(b) each worker's own memory (Private_Dirty in /proc/PID/smaps_rollup)
    is a small part of one engine (the loader's Rss): N workers do not
    cost N engines;
(c) a worker killed with SIGKILL is forked again from the loader, as a
    child of the parent, and the gateway still scans;
(d) the loader killed: the workers keep scanning, a new loader loads and
    later workers come from it;
(e) a reload that needs a database the loader has not loaded starts a
    new loader, then replaces the workers one by one;
(f) a forked worker that breaks its sandbox is reported and forked again.
"""

import imaplib
import os
import random
import re
import signal
import time

import pytest

import gateway as gateway_mod
import mailgen
from dovecot import free_port
from gateway import (EICAR, IMAPGWD_HOOKS, VIRUS_NAME, eicar_body_message,
                     policy, write_signatures)
from rawimap import RawIMAP

pytestmark = pytest.mark.gateway

PW = "secret"
USER = "scandshared"
NSIGS = 200000
WORKERS = (1, 3, 1)  # one netd: it sends scans round robin to the three
# A message no signature matches until the reload of test (e).
MARKER = b"imapgw-shared-engine-marker-5b1f0c2e9d"
MARKER_NAME = "Imapgw.Test.Reloaded"


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


def _write_big_database(sigdir):
    """200,000 random ndb body signatures: an engine of tens of MB that no
    message here matches."""
    rng = random.Random(4242)
    with open(os.path.join(sigdir, "imapgw-big.ndb"), "w") as f:
        for i in range(NSIGS):
            f.write("Imapgw.Test.Big.%d:0:*:%s\n"
                    % (i, rng.randbytes(12).hex()))


@pytest.fixture(scope="module")
def g(dovecot):
    _add_user(dovecot)
    clean = mailgen.messages(1, seed=77)[0]
    c = dovecot.connect(USER)
    try:
        c.select("INBOX")
        c.store("1:*", "+FLAGS", r"(\Deleted)")
        c.expunge()
    except imaplib.IMAP4.error:
        pass            # empty
    finally:
        c.logout()
    marked = (b"From: a@example.org\r\nTo: scandshared@example.org\r\n"
              b"Subject: marker\r\nMessage-ID: <marker@example.org>\r\n"
              b"\r\n" + MARKER + b"\r\n")
    dovecot.append(USER, [eicar_body_message(7), clean, marked])
    gw = gateway_mod.Gateway(
        servers={"dovecot": [dovecot.address]},
        policies=[policy("imap-in", free_port(), "dovecot")],
        workers=WORKERS)
    _write_big_database(gw.sigdir)
    gw.stored = dovecot.fetch_bodies(USER)
    assert len(gw.stored) == 3
    gw.marker_known = False
    try:
        gw.start(timeout=60)
        _wait(lambda: _settled(gw), 60, gw, "workers and loader ready")
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def log_on_failure(g, request):
    off = g.log_offset()
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("\n---- imapgwd log during the test ----")
        print(g.log_since(off)[-20000:])


# ---- helpers ------------------------------------------------------------------

def _wait(pred, timeout, g, what):
    return g.wait_until(pred, timeout, what)


def _status(g):
    return g.worker_rows()


def _settled_n(g, n):
    """The status rows of n workers and the loader, all ready, or None."""
    rows = _status(g)
    want = ["scand-%d" % i for i in range(n)] + ["loader"]
    if all(k in rows and rows[k][0] > 0 and rows[k][1] == "ready"
           for k in want):
        return rows
    return None


def _settled(g):
    return _settled_n(g, WORKERS[1])


def _workers(rows):
    return {n: pid for n, (pid, _) in rows.items() if n != "loader"}


def _children_of(pid):
    out = []
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, t)) as f:
            out += [int(x) for x in f.read().split()]
    return out


def _ppid(pid):
    return int(gateway_mod.proc_status(pid)["PPid"])


def _cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def _rollup(pid):
    """kB fields of /proc/PID/smaps_rollup."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for ln in f:
            p = ln.split()
            if len(p) == 3 and p[2] == "kB":
                out[p[0].rstrip(":")] = int(p[1])
    return out


def _fetch_all(g):
    """{uid: BODY[]} through the gateway."""
    c = RawIMAP(g.port(), timeout=60)
    try:
        c.login(USER, PW)
        c.command("EXAMINE INBOX")
        return c.fetch_bodies()
    finally:
        c.logout()


def _assert_scans(g, times=3):
    """Each fetch: EICAR replaced by a deny message naming the virus, the
    clean message byte for byte; the marker message too, or replaced once
    its signature is loaded."""
    uids = sorted(g.stored)
    for _ in range(times):
        got = _fetch_all(g)
        assert sorted(got) == uids, (got.keys(), uids)
        infected, clean, marked = (got[u] for u in uids)
        assert EICAR not in infected, "EICAR passed the gateway"
        assert VIRUS_NAME.encode() in infected, infected[:600]
        assert clean == g.stored[uids[1]], "the clean message changed"
        if g.marker_known:
            assert MARKER not in marked, marked[:600]
            assert MARKER_NAME.encode() in marked, marked[:600]
        else:
            assert marked == g.stored[uids[2]], marked[:600]


def _scan_fresh(g, dovecot, n=3):
    """n new EICAR messages (new content each time, so nothing can answer
    from a verdict judged before) fetched through the gateway: each is
    replaced by a deny message.  They are removed afterwards."""
    g.fresh = getattr(g, "fresh", 1000) + n
    uids = dovecot.append(USER, [eicar_body_message(g.fresh - k)
                                 for k in range(n)])
    assert len(uids) == n, uids
    try:
        c = RawIMAP(g.port(), timeout=60)
        try:
            c.login(USER, PW)
            c.command("EXAMINE INBOX")
            for u in uids:
                got = c.fetch_bodies(str(u))
                assert list(got) == [u], got.keys()
                assert EICAR not in got[u], "EICAR passed the gateway"
                assert VIRUS_NAME.encode() in got[u], got[u][:600]
        finally:
            c.logout()
    finally:
        d = dovecot.connect(USER)
        try:
            d.select("INBOX")
            d.uid("STORE", ",".join(map(str, uids)), "+FLAGS",
                  r"(\Deleted)")
            d.expunge()
        finally:
            d.logout()


def _check_worker(g, name, pid, loader):
    """A worker forked from the loader: the parent's child, sandboxed,
    showing itself as scand-N."""
    assert _ppid(pid) == g.proc.pid, (name, pid, _ppid(pid), g.proc.pid)
    assert _cmdline(pid)[1:5] == ["-P", "scand", "-I", name.split("-")[1]], \
        (name, _cmdline(pid))
    st = gateway_mod.proc_status(pid)
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", (name, st)
    assert "0" not in st["Uid"].split(), (name, st["Uid"])
    assert os.readlink("/proc/%d/root" % pid).startswith(g.state_dir)
    assert pid != loader


def _memory(g, rows, when):
    """Print the numbers; check each worker's own memory is small next to
    one engine."""
    loader = rows["loader"][0]
    lm = _rollup(loader)
    lines = ["scand memory %s (kB; the loader's Rss holds one engine):"
             % when,
             "  %-8s %7s %7s %7s %13s %12s" % ("process", "pid", "Rss", "Pss",
                                              "Private_Dirty",
                                              "Shared_Dirty"),
             "  %-8s %7d %7d %7d %13d %12d" % ("loader", loader, lm["Rss"],
                                              lm["Pss"], lm["Private_Dirty"],
                                              lm["Shared_Dirty"])]
    own = {}
    for name, pid in sorted(_workers(rows).items()):
        m = _rollup(pid)
        own[name] = m["Private_Dirty"]
        lines.append("  %-8s %7d %7d %7d %13d %12d"
                     % (name, pid, m["Rss"], m["Pss"], m["Private_Dirty"],
                        m["Shared_Dirty"]))
    lines.append("  workers' Private_Dirty together: %d kB; one engine "
                 "(loader Rss): %d kB" % (sum(own.values()), lm["Rss"]))
    print("\n" + "\n".join(lines))
    # The database is big enough for the numbers to mean something.
    assert lm["Rss"] > 20 * 1024, lm
    for name, kb in own.items():
        assert kb < 0.2 * lm["Rss"], (name, kb, lm["Rss"], lines)
    assert sum(own.values()) < 0.5 * lm["Rss"], lines


# ---- the tests ----------------------------------------------------------------

def test_workers_are_children_of_the_parent(g, log_on_failure):
    rows = _settled(g)
    assert rows, _status(g)
    loader = rows["loader"][0]
    assert _ppid(loader) == g.proc.pid
    assert _cmdline(loader)[1:3] == ["-P", "loader"], _cmdline(loader)
    st = gateway_mod.proc_status(loader)
    assert st["Seccomp"] == "0", st   # unconfined by design
    workers = _workers(rows)
    assert len(workers) == WORKERS[1]
    for name, pid in workers.items():
        _check_worker(g, name, pid, loader)
    # the middle processes of the double fork are gone: the parent's
    # children are exactly the workers, the loader, netd and tlsd
    kids = _children_of(g.proc.pid)
    assert sorted(kids) == sorted(g.pids_of("netd") + g.pids_of("tlsd") +
                                  list(workers.values()) + [loader]), \
        (kids, g.roles())
    for pid in kids:
        assert not gateway_mod.proc_status(pid)["State"].startswith("Z")
    text = g.log_text()
    for name, pid in workers.items():
        assert re.search(r"\bstarted %s pid %d\b" % (name, pid), text), name
    assert re.search(r"loader pid %d ready" % loader, text), text
    a = g.ctl("audit")
    out = a.stdout.decode(errors="replace")
    assert a.returncode == 0, out
    for pid in workers.values():
        assert re.search(r"^audit scand pid %d: 0 differences$" % pid, out,
                         re.M), out
    assert re.search(r"^loader pid %d: unconfined by design" % loader, out,
                     re.M), out


def test_engine_memory_is_shared(g, log_on_failure, capsys):
    rows = _settled(g)
    assert rows
    _assert_scans(g, times=2)
    time.sleep(0.3)
    with capsys.disabled():
        _memory(g, rows, "after scanning")


def test_killed_worker_forked_again_from_the_loader(g, dovecot,
                                                    log_on_failure, capsys):
    rows = _settled(g)
    loader = rows["loader"][0]
    victim = rows["scand-1"][0]
    off = g.log_offset()
    os.kill(victim, signal.SIGKILL)
    m = g.wait_log(r"\bstarted scand-1 pid (\d+)", since=off, timeout=20)
    assert m, g.log_since(off)
    new = int(m.group(1))
    assert new != victim
    assert re.search(r"child died .*pid=%d .*signal=SIGKILL" % victim,
                     g.log_since(off)), g.log_since(off)
    rows = _wait(lambda: (lambda r: r if r and r["scand-1"][0] == new
                          else None)(_settled(g)), 20, g, "scand-1 ready")
    assert rows["loader"][0] == loader, "the loader changed"
    _check_worker(g, "scand-1", new, loader)
    # the new worker scans too (one netd: round robin over the three)
    off = g.log_offset()
    _scan_fresh(g, dovecot, n=3)
    assert g.wait_log(r"^.*\bscand\[%d\]: (?!peer |instance ).*$" % new,
                      since=off, timeout=5), g.log_since(off)
    _assert_scans(g, times=1)
    with capsys.disabled():
        _memory(g, rows, "after a worker was forked again")


def test_loader_killed_workers_keep_scanning(g, dovecot, log_on_failure,
                                            capsys):
    rows = _settled(g)
    old_loader = rows["loader"][0]
    workers = _workers(rows)
    off = g.log_offset()
    os.kill(old_loader, signal.SIGKILL)
    assert g.wait_log(r"child died .*role=loader .*pid=%d " % old_loader,
                      since=off, timeout=10), g.log_since(off)
    # the workers scan on, with their copies of the engine
    _scan_fresh(g, dovecot, n=3)
    _assert_scans(g, times=1)
    rows = _wait(lambda: (lambda r: r if r and r["loader"][0] != old_loader
                          else None)(_settled(g)), 60, g, "a new loader")
    loader = rows["loader"][0]
    assert _ppid(loader) == g.proc.pid
    assert _workers(rows) == workers, "workers were restarted"
    # a worker that dies now comes from the new loader
    victim = workers["scand-2"]
    off = g.log_offset()
    os.kill(victim, signal.SIGKILL)
    m = g.wait_log(r"\bstarted scand-2 pid (\d+)", since=off, timeout=20)
    assert m, g.log_since(off)
    new = int(m.group(1))
    rows = _wait(lambda: (lambda r: r if r and r["scand-2"][0] == new
                          else None)(_settled(g)), 20, g, "scand-2 ready")
    _check_worker(g, "scand-2", new, loader)
    _scan_fresh(g, dovecot, n=3)
    _assert_scans(g, times=1)
    # scand-0 and scand-1 still share the first loader's engine, scand-2
    # shares the new loader's
    with capsys.disabled():
        _memory(g, rows, "after the loader was replaced")
    assert "sandbox violation" not in g.log_text()


def test_reload_with_a_new_database_replaces_loader_then_workers(
        g, log_on_failure, capsys):
    rows = _settled(g)
    old_loader = rows["loader"][0]
    old = _workers(rows)
    # the same databases and one more signature, in a directory the
    # loader has not loaded
    newdir = write_signatures(os.path.join(g.dir, "clamav-reloaded"))
    _write_big_database(newdir)
    with open(os.path.join(newdir, "imapgw-marker.ndb"), "w") as f:
        f.write("%s:0:*:%s\n" % (MARKER_NAME, MARKER.hex()))
    g.sigdir = newdir
    g.write_config()
    off = g.log_offset()
    g.reload()
    assert g.wait_log(r"the configuration needs the antivirus database "
                      r"%s, which the loader pid %d has not loaded"
                      % (re.escape(newdir), old_loader),
                      since=off, timeout=10), g.log_since(off)

    def replaced():
        r = _settled(g)
        if not r or r["loader"][0] == old_loader:
            return None
        if any(r[n][0] == pid for n, pid in old.items()):
            return None
        return r
    rows = _wait(replaced, 60, g, "a new loader and new workers")
    text = g.log_since(off)
    assert re.search(r"loader pid %d stopped: replaced" % old_loader, text)
    # one at a time: each worker is replaced after the one before runs
    events = re.findall(r"(replacing|started) (scand-\d+) pid (\d+)", text)
    reps = [e for e in events if e[0] == "replacing"]
    assert sorted(n for _, n, _ in reps) == sorted(old), events
    for a, b in zip(events, events[1:]):
        if a[0] == "replacing":
            assert b[0] == "started" and b[1] == a[1], events
    loader = rows["loader"][0]
    for name, pid in _workers(rows).items():
        _check_worker(g, name, pid, loader)
    g.marker_known = True
    _assert_scans(g, times=3)
    with capsys.disabled():
        _memory(g, rows, "after a reload replaced the loader")


def test_forked_worker_violation_reported_and_forked_again(make_gateway):
    gw = make_gateway(binary=IMAPGWD_HOOKS, workers=(1, 2, 1))
    gw.expect_crash = True      # scand-0 breaks its sandbox on purpose
    rows = _wait(lambda: _settled_n(gw, 2), 30, gw, "workers ready")
    victim = rows["scand-0"][0]
    off = gw.log_offset()
    r = gw.ctl("test-violate", "scand")
    assert r.returncode == 0, r.stdout + r.stderr
    m = gw.wait_log(r"(?m)^.*sandbox violation.*$", since=off, timeout=10)
    assert m, gw.log_since(off)
    line = m.group(0)
    assert "role=scand" in line and "syscall=ptrace" in line and \
        "pid=%d" % victim in line, line
    m = gw.wait_log(r"\bstarted scand-0 pid (\d+)", since=off, timeout=10)
    assert m, gw.log_since(off)
    new = int(m.group(1))
    rows = _wait(lambda: (lambda r: r if r and r["scand-0"][0] == new
                          else None)(_settled_n(gw, 2)), 20, gw,
                 "scand-0 forked again")
    _check_worker(gw, "scand-0", new, rows["loader"][0])
