"""The offline mode: imapgwd -S message judges one message with a real,
sandboxed scand and prints the verdict (text, or JSON with --json), and
writes what a client would get with -o.

Exit status: 0 clean, 1 the policy acted, 2 scan error, 3 usage,
configuration or system error.  No Dovecot and no daemon are needed: each
test writes its own config, ClamAV signatures (EICAR) and messages."""

import base64
import email
import email.policy
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from dovecot import ensure_system_user, free_port
from gateway import (EICAR, GW_USER, IMAPGWD, TEST_ACTION, VIRUS_NAME,
                     config_yaml, eicar_attachment_message,
                     eicar_body_message, policy, write_signatures)

pytestmark = pytest.mark.gateway

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
DENY_TEXT = b"This message was blocked by the IMAP security gateway."
EICAR_B64 = base64.b64encode(EICAR)

CLEAN = (b"From: Alice <alice@example.org>\r\n"
         b"To: Bob <bob@example.org>\r\n"
         b"Subject: lunch\r\n"
         b"Date: Wed, 03 Jan 2024 12:00:00 +0100\r\n"
         b"Message-ID: <imapgw-offline-clean@example.org>\r\n"
         b"MIME-Version: 1.0\r\n"
         b"Content-Type: text/plain; charset=us-ascii\r\n"
         b"\r\n"
         b"Noon at the usual place?\r\n")


class Env:
    """A directory (root-owned, 0755, as the daemon wants state_dir) with
    a config whose one policy uses TEST_ACTION (EICAR signatures,
    on_virus strip), and helpers to run imapgwd -S."""

    def __init__(self, d):
        self.dir = d
        self.state = os.path.join(d, "state")
        os.mkdir(self.state)
        os.chmod(self.state, 0o755)
        self.sigdir = write_signatures(os.path.join(d, "clamav"))
        self.conf = self.write("imapgwd.yaml", config_yaml(
            GW_USER, os.path.join(d, "empty"), self.state,
            os.path.join(d, "ctl.sock"),
            {"mailstore": ["127.0.0.1:%d" % free_port()]},
            [policy("imap-in", free_port(), "mailstore")],
            level="info", sigdir=self.sigdir,
            actions={"deny-all": {"inherit": "IMAP-Server.Standard",
                                  "antivirus": {"on_virus": "deny"}}}))

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, data):
        p = self.path(name)
        with open(p, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.chmod(p, 0o644)
        return p

    def run(self, *args, conf=True, prefix=(), stdin=None, timeout=120):
        argv = list(prefix) + [IMAPGWD]
        if conf:
            argv += ["-f", self.conf]
        argv += list(args)
        return subprocess.run(argv, input=stdin,
                              stdin=None if stdin is not None
                              else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, cwd=self.dir)


def _out(r):
    return "rc=%s\nstdout=%r\nstderr=%r" % (r.returncode, r.stdout[-3000:],
                                            r.stderr[-3000:])


@pytest.fixture
def env():
    if not os.path.exists(IMAPGWD):
        pytest.fail("%s does not exist: run make first" % IMAPGWD)
    ensure_system_user(GW_USER)
    base = "/run" if os.access("/run", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="imapgw-offline.", dir=base)
    os.chmod(d, 0o755)
    yield Env(d)
    if not os.environ.get("IMAPGW_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


def _parts(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return msg, [p for p in msg.walk() if not p.is_multipart()]


# ---- verdicts -----------------------------------------------------------------

def test_clean_message(env):
    src = env.write("clean.eml", CLEAN)
    r = env.run("-S", src)
    assert r.returncode == 0, _out(r)
    assert re.search(rb"(?i)\bclean\b", r.stdout), _out(r)
    j = env.run("-S", src, "--json")
    assert j.returncode == 0, _out(j)
    rep = json.loads(j.stdout)
    assert rep["verdict"] == "clean", rep
    assert rep["action"] == "allow", rep


def test_clean_output_is_the_original(env):
    src = env.write("clean.eml", CLEAN)
    out = env.path("out.eml")
    r = env.run("-S", src, "-o", out)
    assert r.returncode == 0, _out(r)
    with open(out, "rb") as f:
        assert f.read() == CLEAN
    assert b"original" in r.stdout, _out(r)
    j = env.run("-S", src, "-o", out, "--json")
    rep = json.loads(j.stdout)
    assert rep["output"] == {"file": out, "message": "original"}, rep


def test_eicar_attachment_stripped(env):
    orig = eicar_attachment_message(7)
    src = env.write("eicar.eml", orig)
    out1, out2 = env.path("out1.eml"), env.path("out2.eml")
    r = env.run("-S", src, "-o", out1)
    assert r.returncode == 1, _out(r)
    assert re.search(rb"(?i)\bchanged\b", r.stdout), _out(r)
    assert re.search(rb"(?i)\bstrip\b", r.stdout), _out(r)
    assert b"rewritten" in r.stdout, _out(r)
    with open(out1, "rb") as f:
        got = f.read()
    # it parses as MIME; the attachment is gone, the deny text is there
    msg, leaves = _parts(got)
    assert msg.is_multipart(), got[:500]
    names = [p.get_filename() for p in leaves]
    assert "eicar.com" not in names, names
    assert "report.pdf" in names, names
    assert EICAR not in got and EICAR_B64 not in got, got
    assert DENY_TEXT in got, got
    assert VIRUS_NAME.encode() in got, got
    _, oleaves = _parts(orig)
    assert len(leaves) == len(oleaves), (names, got[:2000])
    for name in ("Subject", "From", "To", "Message-ID", "Date"):
        assert msg[name] == email.message_from_bytes(orig)[name], name
    # deterministic: a second run writes the same bytes
    r2 = env.run("-S", src, "-o", out2)
    assert r2.returncode == 1, _out(r2)
    with open(out2, "rb") as f:
        assert f.read() == got


def test_eicar_body_denied(env):
    orig = eicar_body_message(3)
    src = env.write("body.eml", orig)
    out = env.path("out.eml")
    r = env.run("-S", src, "-o", out, "--json")
    assert r.returncode == 1, _out(r)
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "changed", rep
    assert rep["output"]["message"] == "rewritten", rep
    with open(out, "rb") as f:
        got = f.read()
    assert EICAR not in got and DENY_TEXT in got, got
    assert email.message_from_bytes(got)["Subject"] == \
        email.message_from_bytes(orig)["Subject"]


def test_json_report(env):
    src = env.write("eicar.eml", eicar_attachment_message(8))
    r = env.run("-S", src, "--json")
    assert r.returncode == 1, _out(r)
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "changed", rep
    assert rep["action"] == "strip", rep
    assert VIRUS_NAME in rep["reason"], rep
    assert "output" not in rep, rep
    # -j is --json
    j = env.run("-j", "-S", src)
    assert json.loads(j.stdout)["verdict"] == "changed", _out(j)


def test_append_is_rejected(env):
    src = env.write("eicar.eml", eicar_attachment_message(9))
    out = env.path("never.eml")
    r = env.run("-S", src, "-k", "append", "--json", "-o", out)
    assert r.returncode == 1, _out(r)
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "reject", rep
    assert rep["output"]["message"] == "none", rep
    assert not os.path.exists(out)
    t = env.run("-S", src, "-k", "append")
    assert t.returncode == 1, _out(t)
    assert re.search(rb"(?i)\breject", t.stdout), _out(t)
    # a clean upload passes
    c = env.run("-S", env.write("clean.eml", CLEAN), "-k", "append")
    assert c.returncode == 0, _out(c)


def test_action_option_and_default(env):
    src = env.write("eicar.eml", eicar_attachment_message(10))
    # no -a: the action of the first policy (TEST_ACTION: strip)
    d = env.run("-S", src, "--json")
    assert json.loads(d.stdout)["action"] == "strip", _out(d)
    a = env.run("-S", src, "--json", "-a", TEST_ACTION)
    assert json.loads(a.stdout)["action"] == "strip", _out(a)
    # another action of the file: on_virus deny
    n = env.run("-S", src, "--json", "-a", "deny-all")
    assert n.returncode == 1, _out(n)
    rep = json.loads(n.stdout)
    assert rep["verdict"] == "changed" and rep["action"] == "deny", rep


def test_message_from_stdin(env):
    orig = eicar_attachment_message(11)
    out1, out2 = env.path("a.eml"), env.path("b.eml")
    r1 = env.run("-S", "-", "-o", out1, stdin=orig)
    r2 = env.run("-S", env.write("m.eml", orig), "-o", out2)
    assert r1.returncode == 1 and r2.returncode == 1, _out(r1) + _out(r2)
    with open(out1, "rb") as f1, open(out2, "rb") as f2:
        assert f1.read() == f2.read()


def test_output_to_stdout(env):
    src = env.write("eicar.eml", eicar_attachment_message(12))
    r = env.run("-S", src, "-o", "-")
    assert r.returncode == 1, _out(r)
    assert DENY_TEXT in r.stdout and EICAR_B64 not in r.stdout, _out(r)
    assert b"rewritten" in r.stderr, _out(r)


# ---- errors ---------------------------------------------------------------------

def test_unknown_action(env):
    r = env.run("-S", env.write("clean.eml", CLEAN), "-a", "no-such-action")
    assert r.returncode == 3, _out(r)
    assert b"no action named 'no-such-action'" in r.stderr, _out(r)
    assert TEST_ACTION.encode() in r.stderr, _out(r)   # the known ones
    assert r.stdout == b"", _out(r)


def test_missing_message(env):
    missing = env.path("nope.eml")
    r = env.run("-S", missing)
    assert r.returncode == 3, _out(r)
    assert missing.encode() in r.stderr, _out(r)
    assert b"No such file" in r.stderr, _out(r)
    assert r.stdout == b"", _out(r)


def test_config_error(env):
    text = open(env.conf).read().replace("idle_timeout: 30m",
                                          "idle_timeout: 5x")
    bad = env.write("bad.yaml", "bogus_key: 1\n" + text)
    r = env.run("-f", bad, "-S", env.write("clean.eml", CLEAN), conf=False)
    assert r.returncode == 3, _out(r)
    err = r.stderr.decode(errors="replace")
    assert re.search(r"^%s:1:1: .*bogus_key" % re.escape(bad), err,
                     re.M), _out(r)
    assert re.search(r"^%s:\d+:\d+: .*5x" % re.escape(bad), err,
                     re.M), _out(r)
    assert r.stdout == b"", _out(r)


def test_usage_errors(env):
    src = env.write("clean.eml", CLEAN)
    for args in (["-S", src, "-k", "sideways"], ["-S", src, "extra"],
                 ["--json"], ["-S", src, "-x"]):
        r = env.run(*args)
        assert r.returncode == 3, (args, _out(r))
        assert b"usage:" in r.stderr, (args, _out(r))


def test_needs_root(env):
    src = env.write("clean.eml", CLEAN)
    r = env.run("-S", src, prefix=NOBODY)
    assert r.returncode == 3, _out(r)
    assert b"must run as root" in r.stderr, _out(r)
    assert r.stdout == b"", _out(r)
    # nothing was prepared for scand
    assert not os.path.exists(os.path.join(env.state, "scand")), _out(r)


def test_scand_cannot_start(env):
    """A database directory that does not exist: scand says why and
    exits before its sandbox; that is a configuration error (3)."""
    text = open(env.conf).read().replace(env.sigdir, env.path("nodb"))
    conf = env.write("nodb.yaml", text)
    r = env.run("-f", conf, "-S", env.write("clean.eml", CLEAN), conf=False)
    assert r.returncode == 3, _out(r)
    assert b"scand could not start" in r.stderr, _out(r)
    assert env.path("nodb").encode() in r.stderr, _out(r)
