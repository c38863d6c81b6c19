"""The content pipeline through the gateway: the corpus (corpus.py) stored
in a Dovecot mailbox directly, fetched through one gateway with imaplib,
and uploaded through it.

- FETCH BODY[] of every entry: the same expectations as the offline mode
  (the message unchanged where it may be clean, else the expected
  structure), and the same bytes as `imapgwd -S ... -o` wrote for it;
- APPEND of every entry through the gateway: NO (saying why) where a
  fetch is rewritten, and Dovecot's mailbox unchanged (UIDNEXT); OK and
  stored byte for byte where it is clean.

One Dovecot and one gateway for the module, one policy per corpus action
(corpus-all, corpus-av), one mailbox.  The heavy entries (10,000 parts)
are fetched once and not uploaded.
"""

import imaplib
import re
import time

import pytest

import corpus
import dovecot as dovecot_mod
import gateway as gateway_mod
from conftest import CRASH

pytestmark = pytest.mark.gateway

C = corpus.shared()
PW = "secret"
USER = "pipeline"          # the mailbox fetched through the gateway
UPUSER = "pipeup"          # uploads through the gateway
UPBOX = "Uploads"
NAMES = [e.name for e in C.entries]
LIGHT = [e.name for e in C.entries if not e.heavy]
FETCHED = NAMES


@pytest.fixture(scope="module")
def dove():
    d = dovecot_mod.Dovecot(users={USER: PW, UPUSER: PW})
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def gwy(dove, request):
    pols = [gateway_mod.policy(a, dovecot_mod.free_port(), "dovecot",
                               action=a) for a in (corpus.ACT_ALL,
                                                   corpus.ACT_AV)]
    g = gateway_mod.Gateway(servers={"dovecot": [dove.address]},
                            policies=pols, actions=C.actions(),
                            workers=(1, 2, 1), level="info")
    # the offline mode's lock key: locked parts are the same bytes
    corpus.install_lock_key(g.state_dir)
    try:
        g.start()
    except RuntimeError as ex:
        g.stop()
        pytest.fail("the gateway does not start with the corpus config: "
                    "%s" % ex, pytrace=False)
    yield g
    m = CRASH.search(g.log_text())
    g.stop()
    if m:
        pytest.fail("imapgwd child crashed: %s" % m.group(0), pytrace=False)


@pytest.fixture(scope="module")
def stored(dove):
    """{name: uid} of the corpus in USER's INBOX, stored directly."""
    entries = [C.get(n) for n in FETCHED]
    uids = dove.append(USER, [e.data for e in entries])
    assert len(uids) == len(entries)
    bodies = dove.fetch_bodies(USER)
    for e, uid in zip(entries, uids):
        assert bodies[uid] == e.data, "Dovecot changed %s" % e.name
    return {e.name: uid for e, uid in zip(entries, uids)}


def _connect(port, user):
    c = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    c.login(user, PW)
    return c


def _close(c):
    try:
        c.logout()
    except Exception:
        pass
    try:
        c.shutdown()
    except Exception:
        pass


def _fetch_uid(c, uid):
    typ, data = c.uid("FETCH", str(uid), "(BODY[])")
    if typ != "OK":
        return None, "FETCH %s: %r" % (typ, data)
    for item in data:
        if isinstance(item, tuple) and b"BODY[]" in item[0]:
            return item[1], None
    return None, "no BODY[] in %r" % (data,)


def _fetch_all(port, names, stored):
    """{name: (bytes or None, error, seconds)} of FETCH BODY[] of names
    in one session (a new one after an error)."""
    out = {}
    c = None
    for name in names:
        t = time.time()
        try:
            if c is None:
                c = _connect(port, USER)
                typ, _ = c.select("INBOX", readonly=True)
                assert typ == "OK"
            body, err = _fetch_uid(c, stored[name])
        except Exception as ex:
            body, err = None, "%s: %s" % (type(ex).__name__, ex)
            if c is not None:
                _close(c)
            c = None
        out[name] = (body, err, time.time() - t)
    if c is not None:
        _close(c)
    return out


@pytest.fixture(scope="module")
def fetched(gwy, stored):
    """{name: (bytes or None, error, seconds)} of FETCH BODY[] through
    the gateway, one session per policy; the heavy entries in sessions
    of their own, in threads, while the others go on."""
    import concurrent.futures
    out = {}
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = []
        for name in FETCHED:
            if C.get(name).heavy:
                futs.append(ex.submit(_fetch_all,
                                      gwy.port(C.get(name).action),
                                      [name], stored))
        for act in (corpus.ACT_ALL, corpus.ACT_AV):
            names = [n for n in FETCHED
                     if C.get(n).action == act and not C.get(n).heavy]
            futs.append(ex.submit(_fetch_all, gwy.port(act), names, stored))
        for f in futs:
            out.update(f.result())
    return out


@pytest.fixture(scope="module")
def offline():
    """The offline mode's results for the same entries (reused from
    test_pipeline.py when it ran in this session; the heavy ones only
    then)."""
    jobs = [(C.get(n), "fetch", "1") for n in FETCHED if not C.get(n).heavy]
    corpus.offline_runs(C, jobs)
    return {n: corpus.cached_run(n) for n in FETCHED}


def _got(fetched, name):
    body, err, secs = fetched[name]
    assert body is not None, "FETCH BODY[] of %s through the gateway " \
        "failed: %s" % (name, err)
    return body


@pytest.mark.parametrize("name", FETCHED)
def test_gateway_fetch(fetched, name):
    """What the client gets is what the corpus expects."""
    e = C.get(name)
    got = _got(fetched, name)
    if got == e.data:
        assert corpus.may_be_clean(e), \
            "%s passed the gateway unchanged (%s)" % (name, e.note or
                                                      e.expect.get("action"))
        return
    assert not all(a["verdict"] == "clean" for a in e.alternatives()), \
        "%s is clean but the gateway changed it:\n%r" % (name, got[:2000])
    probs = corpus.check_output(e, e.data, got)
    assert not probs, "%s: %s\n--- received ---\n%s" % (
        name, "\n".join(probs), got[:3000].decode("utf-8", "replace"))


@pytest.mark.parametrize("name", FETCHED)
def test_gateway_equals_offline(fetched, offline, name):
    """The gateway sends the bytes the offline mode writes (or the
    original where that says clean)."""
    got = _got(fetched, name)
    r = offline[name]
    if r is None:
        pytest.skip("no offline run of %s in this session (heavy: run "
                    "with test_pipeline.py)" % name)
    assert r.report is not None, "the offline mode gave no report: " + \
        r.why()
    if r.report.get("verdict") == "clean":
        want = C.get(name).data
    else:
        want = r.out
    assert want is not None, r.why()
    assert got == want, "%s: the gateway sent other bytes than `imapgwd " \
        "-S` wrote (%s):\n gateway %r\n offline %r" % (
            name, r.report.get("verdict"), got[:800], want[:800])


# ---- uploads ----------------------------------------------------------------

@pytest.fixture(scope="module")
def uploaded(gwy, dove):
    """{name: (typ, text, uidnext before, uidnext after)} of APPEND of
    every light entry through the gateway."""
    c = dove.connect(UPUSER)
    try:
        c.create(UPBOX)
    finally:
        _close(c)
    out = {}
    conns = {}
    try:
        for name in LIGHT:
            e = C.get(name)
            before = dove.status(UPUSER, UPBOX)["UIDNEXT"]
            try:
                c = conns.get(e.action)
                if c is None:
                    c = conns[e.action] = _connect(gwy.port(e.action),
                                                   UPUSER)
                typ, data = c.append(UPBOX, None, None, e.data)
                text = b" ".join(d for d in data if isinstance(d, bytes))
            except Exception as ex:
                typ, text = "ERROR", ("%s: %s" % (type(ex).__name__,
                                                  ex)).encode()
                conns.pop(e.action, None)
            after = dove.status(UPUSER, UPBOX)["UIDNEXT"]
            out[name] = (typ, text, before, after)
    finally:
        for c in conns.values():
            _close(c)
    return out


@pytest.mark.parametrize("name", LIGHT)
def test_gateway_append(uploaded, fetched, dove, name):
    """NO where a fetch is rewritten (Dovecot never gets it), OK where
    it is clean (stored byte for byte); spam is not judged on upload."""
    e = C.get(name)
    typ, text, before, after = uploaded[name]
    got = fetched.get(name, (None,))[0]
    want = corpus.append_outcome(e)
    if want != "either":
        rejected = want == "reject"
    elif got is None:
        rejected = typ != "OK"
    else:
        # either outcome is allowed; it must agree with the fetch
        rejected = got != e.data
    if rejected:
        assert typ == "NO", "upload of %s: %s %r, expected NO" % (
            name, typ, text)
        assert re.search(rb"[A-Za-z]{3}", text), \
            "the NO does not say why: %r" % text
        assert after == before, "Dovecot's mailbox changed: the " \
            "rejected upload %s reached it" % name
    else:
        assert typ == "OK", "upload of clean %s refused: %s %r" % (
            name, typ, text)
        assert after == before + 1, (before, after)
        c = dove.connect(UPUSER)
        try:
            c.select(UPBOX, readonly=True)
            typ, data = c.uid("FETCH", str(before), "(BODY.PEEK[])")
            stored = [d[1] for d in data if isinstance(d, tuple)]
        finally:
            _close(c)
        assert stored == [e.data], "%s stored with other bytes" % name
