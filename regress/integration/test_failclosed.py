"""Nothing passes unscanned: the scanner failing in the ways DESIGN.md
names (crash of scand, signatures that cannot be loaded, temp directory
missing) gives the on_error result or an error of the session, never the
message as if it had been scanned.

- scand is SIGKILLed while it judges a message (the 10,000-part one of the
  corpus, EICAR in its last part, which takes long enough to be caught in
  the middle): the client
  gets the on_error deny message (or its session fails), never the
  message; a new scand serves the next FETCH;
- the signature database is a directory with a corrupt .ndb, a file, or
  missing: the gateway does not scan (scand refuses to run, or imapgwd
  refuses to start), logs why naming the database, and every FETCH gets
  the on_error result or an error;
- scand's temp directory (state_dir/scand/tmp, its /tmp) is replaced by a
  file, or made inaccessible, after start: libclamav cannot work, and
  messages get the on_error result, never "clean".

The gateways use one action ("fc-action": antivirus with the corpus
signatures, on_error deny, the corpus deny message) and one scand.
"""

import os
import re
import select
import signal
import time

import pytest

import corpus
import dovecot as dovecot_mod
import gateway as gateway_mod
from rawimap import RawIMAP

pytestmark = pytest.mark.gateway

C = corpus.shared()
PW = "secret"
USER = "failclosed"
ACTION = "fc-action"
MARK = corpus.DENY_MARK.encode()


def _clean_zip_message():
    z = corpus.zip_bytes([("readme.txt", b"nothing to see here\n" * 40)])
    return corpus.mixed_message(90, "clean-zip", b"documents", [
        corpus.TEXT, corpus.leaf(b"application/zip", z, b"docs.zip",
                                 b"base64")])


MESSAGES = {
    "wide": C.get("multipart-10000").data,
    "image": C.get("clean-image").data,
    "plain": C.get("clean-plain").data,
    "eicar": C.get("eicar-base64").data,
    "zip": _clean_zip_message(),
}


@pytest.fixture(scope="module")
def dove():
    d = dovecot_mod.Dovecot(users={USER: PW})
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def box(dove):
    """{key: uid} of MESSAGES in USER's INBOX."""
    keys = list(MESSAGES)
    uids = dove.append(USER, [MESSAGES[k] for k in keys])
    assert len(uids) == len(keys)
    return dict(zip(keys, uids))


@pytest.fixture
def make_gw(dove, request):
    made = []

    def make(database=None, start=True, wait_ready=True):
        act = {"inherit": "IMAP-Server.Standard",
               "antivirus": {"enabled": True,
                             "database": database or C.sigdir,
                             "on_virus": "strip", "on_error": "deny"},
               "deny_message": corpus.DENY_MESSAGE}
        g = gateway_mod.Gateway(
            servers={"dovecot": [dove.address]},
            policies=[gateway_mod.policy("imap-in", dovecot_mod.free_port(),
                                         "dovecot", action=ACTION)],
            actions={ACTION: act}, workers=(1, 1, 1), level="debug")
        made.append(g)
        if not wait_ready:
            # scand is expected never to be ready: do not wait for it
            g.wait_workers = lambda timeout=0: False
        if start:
            g.start()
        return g

    yield make
    for g in made:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print("\n---- imapgwd log ----\n" + g.log_text()[-15000:])
        g.stop()


def _never_original(key, lits, what):
    """None of the literals the client got is (or holds) the original."""
    orig = MESSAGES[key]
    body = orig.split(b"\r\n\r\n", 1)[1]
    for lit in lits:
        assert lit != orig, "%s: the unscanned message passed" % what
        assert body[:4000] not in lit, \
            "%s: the original body passed" % what
        assert corpus.EICAR not in lit and corpus.EICAR_B64[:40] not in lit


def _fetch(port, uid, timeout=60):
    """UID FETCH uid (BODY.PEEK[]): (tagged line or b"EOF", literals)."""
    c = RawIMAP(port, timeout=timeout)
    lits = []
    try:
        c.login(USER, PW)
        c.command("EXAMINE INBOX")
        tag = c.tag()
        c.send(("%s UID FETCH %d (BODY.PEEK[])\r\n" % (tag, uid)).encode())
        try:
            rs = c.read_until_tagged(tag)
        except (EOFError, OSError):
            return b"EOF", lits
        for r in rs:
            lits += r.literals
        return rs[-1].line, lits
    finally:
        try:
            c.close()
        except Exception:
            pass


def _assert_fail_closed(key, tagged, lits, what):
    """The on_error deny message, or an error: never the message."""
    _never_original(key, lits, what)
    if lits:
        assert any(MARK in lit for lit in lits), \
            "%s: the client got something that is neither the message " \
            "nor the deny message: %r" % (what, lits[0][:600])
    else:
        assert re.match(rb"(EOF|t\d+ (NO|BAD|OK))", tagged), (what, tagged)


def _cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        f = f.read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])     # utime + stime


# ---- scand killed during a scan ---------------------------------------------

def test_scand_killed_mid_scan(make_gw, box):
    g = make_gw()
    pids = g.pids_of("scand")
    assert len(pids) == 1, g.roles()
    scand = pids[0]
    off = g.log_offset()
    c = RawIMAP(g.port(), timeout=90)
    lits = []
    try:
        c.login(USER, PW)
        c.command("EXAMINE INBOX")
        tag = c.tag()
        t0 = _cpu_ticks(scand)
        c.send(("%s UID FETCH %d (BODY.PEEK[])\r\n" %
                (tag, box["wide"])).encode())
        # wait until scand is busy with it (50 ms of CPU), then kill it
        end = time.time() + 20
        while _cpu_ticks(scand) - t0 < 5:
            r, _, _ = select.select([c.sock], [], [], 0.01)
            assert not r, "the scan ended before scand could be killed " \
                "(it took less than 50 ms of CPU): use a slower message"
            assert time.time() < end, "scand did not start the scan"
        os.kill(scand, signal.SIGKILL)
        try:
            rs = c.read_until_tagged(tag)
            tagged = rs[-1].line
            for r in rs:
                lits += r.literals
        except (EOFError, OSError):
            tagged = b"EOF"
    finally:
        c.close()
    _assert_fail_closed("wide", tagged, lits, "scand killed mid-scan")
    assert g.wait_log(r"scand.*(died|exited|signal|killed)|"
                      r"(died|signal).*scand", since=off, timeout=10), \
        "the death of scand is not logged:\n" + g.log_since(off)[-3000:]
    # a new scand judges the next message
    end = time.time() + 20
    while time.time() < end:
        new = g.pids_of("scand")
        if new and new != [scand] and g.wait_workers(timeout=2):
            break
        time.sleep(0.1)
    tagged, lits = _fetch(g.port(), box["plain"])
    assert lits == [MESSAGES["plain"]], \
        "after the respawn a clean message does not pass: %r %r" % (
            tagged, lits[:1])


# ---- signatures that cannot be loaded ---------------------------------------

ERROR_WORDS = (r"\b(cannot|can't|unable|errors?|failed|failure|malformed|"
               r"corrupt|invalid|not a directory|no such file|refus\w*)\b")


def _bad_database(kind, base):
    """(database path, regex of a log line that says it is unusable)"""
    if kind == "corrupt-ndb":
        p = os.path.join(base, "sigs")
        os.makedirs(p, exist_ok=True)
        # a good signature and a malformed one
        with open(os.path.join(p, "good.ndb"), "w") as f:
            f.write("Imapgw.Test.EICAR:0:*:%s\n" % corpus.EICAR.hex())
        with open(os.path.join(p, "broken.ndb"), "w") as f:
            f.write("Imapgw.Test.Broken:0:*:zz-this-is-not-hex\n")
    elif kind == "file":
        p = os.path.join(base, "sigs.ndb")
        with open(p, "w") as f:
            f.write("Imapgw.Test.EICAR:0:*:%s\n" % corpus.EICAR.hex())
    else:
        p = os.path.join(base, "no-such-dir")
    # the line names the database (the directory or a file in it) and
    # says what is wrong
    name = re.escape(p)
    rx = r"(?im)^.*(%s.*%s|%s.*%s).*$" % (name, ERROR_WORDS, ERROR_WORDS,
                                          name)
    return p, rx


@pytest.mark.parametrize("kind", ["corrupt-ndb", "file", "missing"])
def test_bad_signature_database(make_gw, box, kind):
    base = os.path.join(C.path, "db-%d" % ["corrupt-ndb", "file",
                                            "missing"].index(kind))
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)
    db, why_rx = _bad_database(kind, base)
    g = make_gw(database=db, start=False, wait_ready=False)
    try:
        g.start()
    except RuntimeError:
        # imapgwd itself refused to start: it must say why
        assert re.search(why_rx, g.log_text()), \
            "imapgwd refused to start without saying why:\n" + \
            g.log_text()[-3000:]
        return
    m = g.wait_log(why_rx, timeout=10)
    assert m, "nothing in the log says the database %s is unusable:\n%s" % (
        db, g.log_text()[-3000:])
    for key in ("plain", "eicar", "image"):
        tagged, lits = _fetch(g.port(), box[key], timeout=30)
        _assert_fail_closed(key, tagged, lits,
                            "%s database, %s message" % (kind, key))
    # scand never claims to be ready with it
    r = g.ctl("status")
    rows = [ln for ln in r.stdout.decode().splitlines()
            if ln.split()[:1] == ["scand"]]
    assert not any(" ready " in ln for ln in rows), rows


# ---- the temp directory -----------------------------------------------------

@pytest.mark.parametrize("how", ["file", "mode000"])
def test_broken_tmp(make_gw, box, how):
    g = make_gw()
    tmp = os.path.join(g.state_dir, "scand", "tmp")
    assert os.path.isdir(tmp), "scand's tmp is not at %s" % tmp
    # the gateway works before (with another message: a remembered
    # verdict of one judged before the breakage would be a fair answer)
    tagged, lits = _fetch(g.port(), box["plain"])
    assert lits == [MESSAGES["plain"]], (tagged, lits[:1])
    off = g.log_offset()
    if how == "file":
        os.rename(tmp, tmp + ".away")
        with open(tmp, "w") as f:
            f.write("not a directory\n")
    else:
        os.chmod(tmp, 0)
    try:
        for key in ("zip", "image", "eicar"):
            tagged, lits = _fetch(g.port(), box[key], timeout=30)
            _assert_fail_closed(key, tagged, lits,
                                "tmp broken (%s), %s message" % (how, key))
        assert g.wait_log(r"^.*(temp|tmp).*$", since=off, timeout=5), \
            "nothing in the log says the temp directory is unusable:\n" + \
            g.log_since(off)[-3000:]
    finally:
        if how == "file":
            os.unlink(tmp)
            os.rename(tmp + ".away", tmp)
        else:
            os.chmod(tmp, 0o700)
