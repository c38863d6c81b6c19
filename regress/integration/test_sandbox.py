"""Every child is sandboxed as the design says, and /proc agrees with
`imapgwctl audit`; a forbidden system call kills the child, is logged and
the child is respawned."""

import os
import re
import time

import pytest

from gateway import IMAPGWD_HOOKS, proc_status
from rawimap import RawIMAP

pytestmark = pytest.mark.gateway


def _check_child(gw, pid, role, audit_out):
    # A child loads what it needs (scand: signatures) before it drops
    # privileges; the seccomp filter is the last step.  Wait for it.
    end = time.time() + 15
    st = proc_status(pid)
    while st.get("Seccomp") != "2" and time.time() < end:
        time.sleep(0.05)
        st = proc_status(pid)
    for k in ("Uid", "Gid"):
        ids = st[k].split()
        assert "0" not in ids, "%s %d runs with %s %s" % (role, pid, k, ids)
    assert "0" not in st.get("Groups", "").split(), (role, pid, st["Groups"])
    assert st["NoNewPrivs"] == "1", (role, pid, st["NoNewPrivs"])
    assert st["Seccomp"] == "2", (role, pid, st["Seccomp"])
    assert int(st["CapEff"], 16) == 0, (role, pid, st["CapEff"])
    root = os.readlink("/proc/%d/root" % pid)
    assert root != "/", (role, pid, root)
    if role == "scand":
        # scand has its own root with a private tmp (under state_dir)
        assert root.startswith(gw.state_dir) or root == gw.chroot or \
            root in audit_out, (role, pid, root, audit_out)
    else:
        assert root == gw.chroot, (role, pid, root)


def _loader_pid(gw):
    """The scand loader's pid, from `imapgwctl status`."""
    out = gw.ctl("status").stdout.decode(errors="replace")
    for ln in out.splitlines():
        f = ln.split()
        if f[:1] == ["loader"]:
            return int(f[2])
    return None


def test_children_sandboxed(gw):
    kids = gw.children()
    roles = gw.roles()
    assert kids, "no children:\n" + gw.log_tail()
    count = {r: list(roles.values()).count(r) for r in ("netd", "scand", "tlsd")}
    assert count["netd"] >= 2 and count["scand"] >= 1 and \
        count["tlsd"] >= 1, (count, roles, kids)
    audit = gw.ctl("audit")
    out = audit.stdout.decode(errors="replace")
    # The scand loader is the one child outside any sandbox, by design:
    # root, no chroot, no filter; it only loads the engines and forks the
    # scand workers, which sandbox themselves (test_scand_shared.py).
    loader = _loader_pid(gw)
    assert loader in kids, (loader, kids)
    assert re.search(r"^loader pid %d: unconfined by design" % loader,
                     out, re.M), out
    for pid in kids:
        if pid != loader:
            _check_child(gw, pid, roles.get(pid, "?"), out)


def test_audit_reports_no_differences(gw):
    r = gw.ctl("audit")
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    assert re.search(r"\b0 differences?\b", out), out
    # No action of this gateway uses spamd or rspamd: no scand may open
    # a socket (test_scand_net.py has the other cases).
    scand = gw.pids_of("scand")
    nets = re.findall(r"^audit scand pid (\d+) \((no network|network)\)$",
                      out, re.M)
    assert sorted(int(p) for p, _ in nets) == sorted(scand), (scand, out)
    assert all(w == "no network" for _, w in nets), out
    assert re.search(r"^ok   network +expected none +live none$", out,
                     re.M), out


def test_status_lists_children(gw):
    r = gw.ctl("status")
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    for pid in gw.children():
        assert re.search(r"\b%d\b" % pid, out), (pid, out)


def test_violation_logged_and_child_respawned(make_gateway):
    g = make_gateway(binary=IMAPGWD_HOOKS)
    g.expect_crash = True       # the hook kills a netd on purpose
    before = set(g.pids_of("netd"))
    assert len(before) == 2, (g.roles(), g.log_tail())
    off = g.log_offset()
    r = g.ctl("test-violate", "netd")
    assert r.returncode == 0, r.stdout + r.stderr
    m = g.wait_log(r"(?m)^.*sandbox violation.*$", since=off, timeout=10)
    assert m, g.log_since(off)
    line = m.group(0)
    assert "netd" in line and "syscall=ptrace" in line, line
    victims = [int(x) for x in re.findall(r"\d+", line) if int(x) in before]
    assert victims, "violation line names no netd pid %s: %s" % (before, line)

    end = time.time() + 10
    now = set()
    while time.time() < end:
        now = set(g.pids_of("netd"))
        if len(now) == 2 and victims[0] not in now:
            break
        time.sleep(0.05)
    assert victims[0] not in now, (now, g.log_since(off))
    assert len(now - before) == 1 and len(now) == 2, \
        (before, now, g.log_since(off))
    new = (now - before).pop()
    _check_child(g, new, "netd", "")

    # the gateway still serves, repeatedly (both netd workers)
    for _ in range(4):
        c = RawIMAP(g.port())
        try:
            c.login("hooker", "secret")
            st, _ = c.command("NOOP")
            assert b"OK" in st
        finally:
            c.logout()
    assert g.alive()


def test_violation_hook_absent_from_production_build(gw):
    """test-violate exists only in build/test/imapgwd-hooks."""
    before = gw.pids_of("netd")
    r = gw.ctl("test-violate", "netd")
    assert r.returncode != 0, r.stdout + r.stderr
    time.sleep(0.3)
    assert gw.pids_of("netd") == before
    assert "sandbox violation" not in gw.log_text()
