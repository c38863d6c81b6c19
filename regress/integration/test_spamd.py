"""spamBlocker against the real engines: Debian's spamd (SpamAssassin) and
rspamd, each started here on 127.0.0.1 on a free port with a throwaway
configuration that works offline (no DNS, no network tests, no Bayes).

The checks themselves are in regress/unit/test_spam.c: given
IMAPGW_SPAMD=127.0.0.1:PORT or IMAPGW_RSPAMD=127.0.0.1:PORT it sends GTUBE
(which must come back "confirmed") and a plain message (which must not be
spam) to the real server with scand/spam.c, from a normal process and from
inside scand's seccomp sandbox.  This file builds that binary, starts the
servers, runs it and reports how long each server took to start and to
answer.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
TEST_SPAM = os.path.join(TOP, "build", "test", "test_spam")
SPAMD = "/usr/sbin/spamd"
RSPAMD = "/usr/bin/rspamd"

GTUBE = ("XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL"
         "*C.34X")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path, n=30):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(no log: %s)" % e


def stop(proc):
    """End a server this file started (its own pid only)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def test_spam():
    r = subprocess.run(["make", "-s", "build/test/test_spam"], cwd=TOP,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=600)
    if r.returncode != 0:
        pytest.fail("make build/test/test_spam failed:\n" +
                    r.stdout.decode(errors="replace"), pytrace=False)
    return TEST_SPAM


def spamd_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PING SPAMC/1.5\r\n\r\n")
            s.settimeout(5)
            return b"PONG" in s.recv(256)
    except OSError:
        return False


@pytest.fixture(scope="module")
def spamd():
    if not os.access(SPAMD, os.X_OK):
        pytest.skip("%s is not installed (apt-get install spamd)" % SPAMD)
    try:
        pwd.getpwnam("debian-spamd")
    except KeyError:
        pytest.skip("no user debian-spamd (Debian's spamd package makes it)")
    d = tempfile.mkdtemp(prefix="imapgw-spamd.")
    os.chmod(d, 0o755)
    # The site config replaces /etc/spamassassin: the plugin loaders
    # (*.pre) are needed, the rules come from /usr/share/spamassassin.
    for f in os.listdir("/etc/spamassassin"):
        if f.endswith(".pre"):
            shutil.copy(os.path.join("/etc/spamassassin", f), d)
    with open(os.path.join(d, "local.cf"), "w") as f:
        f.write("dns_available no\n"
                "skip_rbl_checks 1\n"
                "use_bayes 0\n"
                "bayes_auto_learn 0\n")
    port = free_port()
    log = os.path.join(d, "spamd.log")
    t0 = time.time()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [SPAMD, "-L", "-x", "-u", "debian-spamd",
             "--siteconfigpath=" + d, "-i", "127.0.0.1", "-A", "127.0.0.1",
             "-p", str(port), "-m", "2", "--pidfile=" + d + "/spamd.pid",
             "-s", "stderr"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        while not spamd_ping(port):
            if proc.poll() is not None:
                pytest.fail("spamd exited with %s:\n%s" %
                            (proc.returncode, log_tail(log)), pytrace=False)
            if time.time() - t0 > 120:
                pytest.fail("spamd did not answer PING within 120 s:\n" +
                            log_tail(log), pytrace=False)
            time.sleep(0.1)
        started = time.time() - t0
        print("\nspamd answered PING %.2f s after its start" % started)
        yield {"address": "127.0.0.1:%d" % port, "port": port, "log": log,
               "started": started}
    finally:
        stop(proc)
        shutil.rmtree(d, ignore_errors=True)


def rspamd_ping(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/ping" % port,
                                    timeout=2) as r:
            return r.read().strip() == b"pong"
    except OSError:
        return False


RSPAMD_CONF = """\
.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}
worker "normal" {
    bind_socket = "127.0.0.1:%(port)d";
    count = 1;
    .include "$CONFDIR/worker-normal.inc"
}
"""

# No DNS leaves the machine: the only name server is a closed loopback
# port; no hyperscan compilation (it takes long and is not needed).
RSPAMD_OPTIONS = """\
dns {
    nameserver = ["127.0.0.1:%(dns)d"];
    timeout = 1s;
    retransmits = 1;
}
disable_hyperscan = true;
"""


@pytest.fixture(scope="module")
def rspamd():
    if not os.access(RSPAMD, os.X_OK):
        pytest.skip("%s is not installed (apt-get install rspamd)" % RSPAMD)
    try:
        pw = pwd.getpwnam("_rspamd")
    except KeyError:
        pytest.skip("no user _rspamd (Debian's rspamd package makes it)")
    if not os.path.exists("/etc/rspamd/common.conf"):
        pytest.skip("/etc/rspamd/common.conf missing: rspamd cannot start")
    d = tempfile.mkdtemp(prefix="imapgw-rspamd.")
    os.chmod(d, 0o755)
    os.mkdir(os.path.join(d, "local.d"))
    port, dns = free_port(), free_port()
    with open(os.path.join(d, "rspamd.conf"), "w") as f:
        f.write(RSPAMD_CONF % {"port": port})
    with open(os.path.join(d, "local.d", "options.inc"), "w") as f:
        f.write(RSPAMD_OPTIONS % {"dns": dns})
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
    os.chown(d, pw.pw_uid, pw.pw_gid)
    out_path = os.path.join(d, "rspamd.out")
    log = os.path.join(d, "rspamd.log")
    t0 = time.time()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [RSPAMD, "-f", "-u", "_rspamd", "-g", "_rspamd",
             "-c", os.path.join(d, "rspamd.conf"),
             "--var", "CONFDIR=/etc/rspamd", "--var", "LOCAL_CONFDIR=" + d,
             "--var", "RUNDIR=" + d, "--var", "DBDIR=" + d,
             "--var", "LOGDIR=" + d],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        while not rspamd_ping(port):
            if proc.poll() is not None:
                pytest.skip("rspamd cannot start here (exit status %s):\n%s"
                            "\n%s" % (proc.returncode, log_tail(out_path),
                                      log_tail(log)))
            if time.time() - t0 > 180:
                pytest.skip("rspamd did not answer /ping within 180 s:\n" +
                            log_tail(log))
            time.sleep(0.2)
        started = time.time() - t0
        print("\nrspamd answered /ping %.2f s after its start" % started)
        yield {"address": "127.0.0.1:%d" % port, "port": port, "log": log,
               "started": started}
    finally:
        stop(proc)
        shutil.rmtree(d, ignore_errors=True)


def run_test_spam(binary, env_name, address):
    env = dict(os.environ)
    env.pop("IMAPGW_SPAMD", None)
    env.pop("IMAPGW_RSPAMD", None)
    env[env_name] = address
    t0 = time.time()
    r = subprocess.run([binary], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=600)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    assert re.search(r"^test_spam: \d+ passed, 0 failed$", out, re.M), out
    print("".join("\n" + l for l in out.splitlines()
                  if l.startswith("real ")))
    return out, time.time() - t0


def timings(out, name):
    found = re.findall(r"^real %s: (\w+) score (\S+) category (\S+) in (\d+) "
                       r"ms" % name, out, re.M)
    return {w: (float(s), int(c), int(ms)) for w, s, c, ms in found}


def test_spamc_sees_gtube(spamd):
    """The server itself works: Debian's spamc gets GTUBE as spam."""
    if not shutil.which("spamc"):
        pytest.skip("no spamc")
    msg = ("From: a@example.org\r\nTo: b@example.org\r\nSubject: t\r\n\r\n" +
           GTUBE + "\r\n").encode()
    r = subprocess.run(["spamc", "-d", "127.0.0.1", "-p", str(spamd["port"]),
                        "-c"], input=msg, stdout=subprocess.PIPE,
                       timeout=120)
    m = re.match(r"(-?[0-9.]+)/", r.stdout.decode())
    assert m and float(m.group(1)) >= 1000, r.stdout


def test_real_spamd(test_spam, spamd):
    out, took = run_test_spam(test_spam, "IMAPGW_SPAMD", spamd["address"])
    t = timings(out, "spamd")
    assert set(t) == {"GTUBE", "ham"}, out
    assert t["GTUBE"][0] >= 1000 and t["GTUBE"][1] == 0, out
    assert t["ham"][1] == -1 and t["ham"][0] < 5, out
    print("\nspamd: started in %.2f s; GTUBE answered in %d ms, ham in %d "
          "ms; test_spam took %.1f s" % (spamd["started"], t["GTUBE"][2],
                                         t["ham"][2], took))


def test_real_rspamd(test_spam, rspamd):
    # Its name server is ours (a closed loopback port), not the
    # machine's: nothing leaves the machine.
    with open(rspamd["log"], errors="replace") as f:
        assert "from resolv.conf" not in f.read()
    out, took = run_test_spam(test_spam, "IMAPGW_RSPAMD", rspamd["address"])
    t = timings(out, "rspamd")
    assert set(t) == {"GTUBE", "ham"}, out
    assert t["GTUBE"][1] == 0, out
    assert t["ham"][1] == -1 and t["ham"][0] < 5, out
    print("\nrspamd: started in %.2f s; GTUBE answered in %d ms, ham in %d "
          "ms; test_spam took %.1f s" % (rspamd["started"], t["GTUBE"][2],
                                         t["ham"][2], took))
