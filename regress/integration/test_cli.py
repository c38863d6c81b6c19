"""The command line: imapgwd -n (config check, as root and as nobody),
imapgwd refusing to start unprivileged, imapgwctl reload and imapgwctl
without a daemon."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from dovecot import free_port, is_listening
from gateway import GW_USER, IMAPGWCTL, IMAPGWD, config_yaml, policy
from rawimap import RawIMAP

pytestmark = pytest.mark.gateway

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
DEFAULT_CONFIG = "/etc/imapgw/imapgwd.yaml"


@pytest.fixture
def cfgdir():
    """A directory nobody (uid 65534) can read, for config files."""
    base = "/run" if os.access("/run", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="imapgw-cli.", dir=base)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def _good_config(d, port=None):
    """A valid config: everything under d, one policy on a free port."""
    return config_yaml(GW_USER, os.path.join(d, "empty"),
                       os.path.join(d, "state"), os.path.join(d, "ctl.sock"),
                       {"dovecot": ["127.0.0.1:%d" % free_port()]},
                       [policy("imap-in", port or free_port(), "dovecot")])


def _run(argv, timeout=20):
    return subprocess.run(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, cwd="/")


def _out(r):
    return "rc=%s\nstdout=%r\nstderr=%r" % (r.returncode, r.stdout, r.stderr)


# ---- imapgwd -n -----------------------------------------------------------

@pytest.mark.parametrize("who", ["root", "nobody"])
def test_check_good_config(cfgdir, who):
    conf = _write(os.path.join(cfgdir, "good.yaml"), _good_config(cfgdir))
    prefix = NOBODY if who == "nobody" else []
    r = _run(prefix + [IMAPGWD, "-n", "-f", conf])
    assert r.returncode == 0, _out(r)
    assert r.stdout == b"configuration OK\n", _out(r)
    assert r.stderr == b"", _out(r)
    # -n checks only: nothing was created or opened
    assert not os.path.exists(os.path.join(cfgdir, "ctl.sock")), _out(r)
    assert not os.path.exists(os.path.join(cfgdir, "empty")), _out(r)


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_check_bad_config_reports_every_error(cfgdir, who):
    good = _good_config(cfgdir)
    # two errors: an unknown top-level key (line 2) and a bad duration in
    # the policy's idle_timeout
    lines = good.splitlines()
    lines.insert(1, "bogus_key: 1")
    text = "\n".join(lines) + "\n"
    text = text.replace("idle_timeout: 30m", "idle_timeout: 5x")
    assert "idle_timeout: 5x" in text
    conf = _write(os.path.join(cfgdir, "bad.yaml"), text)
    want_dur = (text.splitlines().index("    idle_timeout: 5x") + 1,
                len("    idle_timeout: ") + 1)
    prefix = NOBODY if who == "nobody" else []
    r = _run(prefix + [IMAPGWD, "-n", "-f", conf])
    assert r.returncode == 1, _out(r)
    assert b"configuration OK" not in r.stdout + r.stderr, _out(r)
    err = r.stderr.decode(errors="replace").splitlines()
    rx = re.compile(r"^%s:(\d+):(\d+): (.+)$" % re.escape(conf))
    parsed = [rx.match(ln) for ln in err]
    assert len(err) == 2 and all(parsed), _out(r)
    (l1, c1, m1), (l2, c2, m2) = [(int(m.group(1)), int(m.group(2)),
                                   m.group(3)) for m in parsed]
    assert (l1, c1) == (2, 1) and "bogus_key" in m1, _out(r)
    assert (l2, c2) == want_dur and "5x" in m2, (want_dur, _out(r))


def test_check_builtin_default(cfgdir):
    if os.path.exists(DEFAULT_CONFIG):
        pytest.skip("%s exists, so imapgwd -n would check it instead of "
                    "the built-in default" % DEFAULT_CONFIG)
    for prefix in ([], NOBODY):
        r = _run(prefix + [IMAPGWD, "-n"])
        assert r.returncode == 0, _out(r)
        assert r.stdout == b"configuration OK\n", _out(r)
        assert r.stderr == b"", _out(r)


# ---- imapgwd as non-root ---------------------------------------------------

# Runs the command as a child of a subreaper, so that any process imapgwd
# forks (children, or a daemon(3) fork) is ours to see, and kill, after it
# exited.
SUBREAPER = r"""
import ctypes, json, os, signal, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(36, 1, 0, 0, 0) != 0:          # PR_SET_CHILD_SUBREAPER
    raise SystemExit("prctl failed")
import tempfile
# files, not pipes: a forked process holding a pipe open would stall us
out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
rc = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err, timeout=20).returncode
out.seek(0)
err.seek(0)
def kids():
    out = []
    for t in os.listdir("/proc/self/task"):
        with open("/proc/self/task/%s/children" % t) as f:
            out += [int(x) for x in f.read().split()]
    return out
forked = []
todo = kids()
while todo:                                   # kill the whole tree
    p = todo.pop()
    forked.append(p)
    try:
        with open("/proc/%d/task/%d/children" % (p, p)) as f:
            todo += [int(x) for x in f.read().split()]
    except OSError:
        pass
for p in forked:
    try:
        os.kill(p, signal.SIGKILL)
    except OSError:
        pass
while True:                                   # and reap what we inherited
    try:
        pid, _ = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if pid not in forked:
        forked.append(pid)
print(json.dumps({"rc": rc, "stdout": out.read().decode("latin-1"),
                  "stderr": err.read().decode("latin-1"), "forked": forked}))
"""


@pytest.mark.parametrize("foreground", [True, False],
                         ids=["foreground", "daemon"])
def test_refuses_to_start_unprivileged(cfgdir, foreground):
    port = free_port()
    conf = _write(os.path.join(cfgdir, "good.yaml"),
                  _good_config(cfgdir, port))
    argv = NOBODY + [IMAPGWD] + (["-d"] if foreground else []) + \
        ["-f", conf]
    p = subprocess.run([sys.executable, "-c", SUBREAPER] + argv,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["rc"] == 1, r
    assert "must be started as root" in r["stderr"], r
    assert r["forked"] == [], "imapgwd forked processes as non-root: %s" % r
    assert not is_listening(port), r
    assert not os.path.exists(os.path.join(cfgdir, "ctl.sock")), r


# ---- imapgwctl ------------------------------------------------------------

def test_ctl_without_daemon():
    r = _run([IMAPGWCTL, "-s", "/nonexistent", "status"])
    assert r.returncode == 2, _out(r)
    assert b"cannot connect" in r.stderr, _out(r)
    assert r.stdout == b"", _out(r)


def test_ctl_reload_opens_new_port(make_gateway):
    g = make_gateway()
    old = g.port("imap-in")
    new = free_port()
    assert not is_listening(new)
    g.policies = g.policies + [policy("imap-new", new, "dovecot")]
    g.write_config()
    off = g.log_offset()
    r = g.ctl("reload")
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, _out(r)
    assert re.search(r"\bgeneration\b.*\b2\b", out), _out(r)
    assert g.wait_log(r"configuration reloaded \(generation 2\)", since=off,
                      timeout=10), g.log_since(off)
    for port in (new, old):
        c = RawIMAP(port, timeout=10)
        try:
            c.login("ctlreload", "secret")
            st, _ = c.command("NOOP")
            assert st.startswith(b"t2 OK"), st
        finally:
            c.logout()
    m = g.wait_log(r"^.*\bsession start\b.*\bpolicy=imap-new\b.*$",
                   since=off, timeout=10)
    assert m, g.log_since(off)
    st = g.ctl("status").stdout.decode(errors="replace")
    assert re.search(r"\bgeneration 2\b", st), st
