"""One consistent, sanitized view of every message (issue 5, RFC 3501
2.3.1.1: the data of a message never changes).

A mailbox in Dovecot (stored directly) holds: a clean single-part and a
clean multipart (quoted-printable and base64 parts), EICAR as an
attachment (stripped), EICAR as the whole body of a single-part message
(denied), GTUBE (spamBlocker builtin: subject tagged), a setup.exe
attachment (filename rule: stripped) and a message/rfc822 part whose own
attachment is EICAR.  One proxy action does all of it (consistency
strict, the default).

The sanitized message (BODY[] through the gateway) is appended to a
scratch mailbox directly: what Dovecot answers for those bytes is the
reference for every other item.  Checked:

- first sight: a fresh gateway (nothing judged) whose first FETCH of a
  message asks only RFC822.SIZE, or only BODYSTRUCTURE, ENVELOPE, BODY,
  BODY[2], BODY[2.MIME], BODY[HEADER], a partial or BINARY.SIZE[n]
  answers what the sanitized message gives; each message is judged once
  ("message judged" log lines) and later whole fetches add none;
- every item (RFC822.SIZE, BODYSTRUCTURE, BODY, ENVELOPE, BODY[],
  HEADER/TEXT, HEADER.FIELDS, every BODY[n], BODY[n.MIME], n.HEADER,
  n.TEXT, BINARY[n], BINARY.SIZE[n], partials) in one FETCH and in one
  FETCH each, with FETCH and UID FETCH, in new sessions, and after a
  restart of the gateway on the same state_dir: equal to the reference;
  the invariants between items hold (RFC822.SIZE == len(BODY[]),
  BODY[HEADER] + BODY[TEXT] == BODY[], BODY[n.MIME] + BODY[n] in BODY[],
  partials reassemble, BINARY[n] is the decoded BODY[n], BINARY.SIZE[n]
  its length); clean messages are byte-identical to Dovecot's answers;
  no EICAR and no .exe bytes anywhere;
- scanned once: after the first pass one "message judged" line per
  message; later sessions and the restart add none;
- the same bytes COPYed to another mailbox: known by their SHA-256,
  not judged again;
- a client's header sync (Thunderbird's UID FETCH 1:* of UID
  RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (...)]) of 400 unjudged
  messages: clean ones byte-identical, the others the sanitized
  message's answers, each judged once;
- consistency lazy: RFC822.SIZE alone of an infected message is the
  original size (the documented trade-off);
- EXPUNGE, APPEND and STORE from another session (direct to Dovecot)
  while the gateway's own fetch of large unjudged messages runs, under
  FETCH and UID FETCH: sequence numbers map to the right UIDs, each
  EXPUNGE, EXISTS and flag change arrives once, nothing of the
  gateway's own commands reaches the client;
- pipelining: three FETCHes of derived items of unjudged messages and a
  NOOP sent at once: tagged answers in order, each with its own data.

test_harness_direct checks the reference machinery itself against plain
Dovecot (the invariants hold for Dovecot's own answers).
"""

import base64
import binascii
import imaplib
import quopri
import re
import threading
import time

import pytest

import corpus
from conftest import CRASH
import dovecot as dovecot_mod
import gateway as gateway_mod
from gateway import EICAR, VIRUS_NAME, large_multipart_message
from rawimap import RawIMAP, fetch_dict, fetch_items, norm_structure

pytestmark = pytest.mark.gateway

PW = "secret"
USER = "consist"          # the mailbox fetched through the gateways
REF = "consref"           # sanitized bytes appended directly: the reference
SYNC = "conssync"         # many messages, a client's header sync
SYNCREF = "conssyncref"
EXP_USERS = ("consexp1", "consexp2", "consexp3", "consexp4")
ACTION = "consist"
SPAM_TAG = "***SPAM*** "
EICAR_B64 = base64.b64encode(EICAR)[:60]
CRLF = b"\r\n"
JUDGED = re.compile(r"^.*\bmessage judged\b.*$", re.M)
CUT = re.compile(r"^.*\ban already sanitized message\b.*$", re.M)

# what the filename rule strips: harmless bytes behind a .exe name
EXE_BYTES = (b"This is not a program, only its name says so: setup.exe "
             b"consistency test payload." + CRLF) * 4
EXE_B64 = base64.b64encode(EXE_BYTES)[:60]


# ---- the messages -----------------------------------------------------------

def _qp_text():
    return (b"Gr=C3=BC=C3=9Fe aus dem Labor, eine weiche Zeilen=\r\n"
            b"umbruch-Stelle und ein Gleichheitszeichen =3D hier.\r\n"
            b"Zweite Zeile mit =E2=82=AC.\r\n")


def build_messages():
    """[(name, bytes)] in mailbox order."""
    import random
    rng = random.Random(5005)
    leaf, mixed, single = (corpus.leaf, corpus.mixed_message,
                           corpus.single_message)
    text = corpus.TEXT
    inner = mixed(97, "cons-inner", b"forwarded invoice", [
        text, leaf(b"application/octet-stream", EICAR, b"eicar.com",
                   b"base64")])
    out = [
        ("clean-plain", single(1, "cons-clean-plain", b"lunch?",
                               b"Lunch at noon?" + CRLF + CRLF +
                               b"See you there." + CRLF)),
        ("clean-multi", mixed(2, "cons-clean-multi", b"the report", [
            text,
            leaf(b"text/plain; charset=utf-8", _qp_text(), None,
                 b"quoted-printable"),
            leaf(b"application/octet-stream", rng.randbytes(3000),
                 b"data.bin", b"base64")])),
        ("eicar-att", mixed(3, "cons-eicar-att", b"invoice", [
            text,
            leaf(b"application/octet-stream", EICAR, b"eicar.com",
                 b"base64"),
            leaf(b"application/pdf", rng.randbytes(2000), b"report.pdf",
                 b"base64")])),
        ("eicar-body", single(4, "cons-eicar-body", b"plain eicar", EICAR)),
        ("spam", single(5, "cons-spam", b"cheap meds",
                        b"Buy now!" + CRLF + CRLF + corpus.GTUBE + CRLF)),
        ("exe-att", mixed(6, "cons-exe-att", b"tools", [
            text, leaf(b"application/octet-stream", EXE_BYTES, b"setup.exe",
                       b"base64")])),
        ("nested-eicar", mixed(7, "cons-nested", b"Fwd: invoice", [
            text, b"Content-Type: message/rfc822" + CRLF + CRLF + inner])),
    ]
    return out


MESSAGES = build_messages()
NAMES = [n for n, _ in MESSAGES]
CLEAN = ("clean-plain", "clean-multi")
CHANGED = [n for n in NAMES if n not in CLEAN]


def action(consistency=None):
    a = {"inherit": "IMAP-Server.Standard",
         "content_types": {"auto_detect": False, "rules": []},
         "filenames": {"rules": [{"match": "*.exe", "action": "strip"}]},
         "headers": {"rules": []},
         "antivirus": {"enabled": True, "on_virus": "strip",
                       "on_error": "deny"},
         "apt_blocker": {"enabled": False},
         "spamblocker": {"enabled": True, "engine": "builtin",
                         "categories": {
                             "confirmed": {"action": "tag", "tag": SPAM_TAG},
                             "bulk": {"action": "allow"},
                             "suspect": {"action": "allow"}}}}
    if consistency is not None:
        a["general"] = {"consistency": consistency}
    return a


def new_gateway(dove, consistency=None, workers=(1, 1, 1), level="info"):
    """A started gateway (its own state_dir: nothing judged) with one
    policy and the test action."""
    g = gateway_mod.Gateway(
        servers={"dovecot": [dove.address]},
        policies=[gateway_mod.policy("imap-in", dovecot_mod.free_port(),
                                     "dovecot", action=ACTION)],
        actions={ACTION: action(consistency)}, workers=workers,
        level=level)
    try:
        g.start()
    except RuntimeError as ex:
        g.stop()
        pytest.fail("the gateway does not start (consistency %s): %s" %
                    (consistency or "default", ex), pytrace=False)
    return g


def stop_gateway(g):
    m = CRASH.search(g.log_text()) if g.dir else None
    g.stop()
    if m:
        pytest.fail("imapgwd child crashed: %s" % m.group(0), pytrace=False)


def judged(g):
    """'message judged' lines in g's log so far (after a moment, so that
    a line being written is counted)."""
    time.sleep(0.3)
    return len(JUDGED.findall(g.log_text()))


# ---- IMAP helpers -----------------------------------------------------------

def session(port, user=USER, box="INBOX", select=False):
    c = RawIMAP(port, timeout=15)
    c.login(user, PW)
    c.command("%s %s" % ("SELECT" if select else "EXAMINE", box))
    return c


def close(c):
    try:
        c.logout()
    except Exception:
        pass


def resp_name(spec):
    """The item name a FETCH response uses for spec (upper case, no
    .PEEK, partial <origin> only)."""
    s = spec.upper().replace(".PEEK[", "[")
    m = re.match(r"^(.*)<(\d+)\.\d+>$", s)
    if m:
        s = "%s<%s>" % (m.group(1), m.group(2))
    return s.encode()


def fetch1(c, seq_or_uid, specs, uid=False):
    """One FETCH of specs for one message: (Response, {name: value})."""
    st, rs = c.command("%sFETCH %d (%s)" % ("UID " if uid else "",
                                            seq_or_uid, " ".join(specs)),
                       check=False)
    assert b" OK" in st[:12], "FETCH %s (%s): %r %r" % (
        seq_or_uid, " ".join(specs), st, rs[:3])
    fr = [r for r in rs if re.match(rb"\* \d+ FETCH ", r.line)]
    data = [r for r in fr if set(dict(fetch_items(r)[1])) - {b"FLAGS"}]
    assert len(data) == 1, "FETCH %s (%s): %d data responses: %r" % (
        seq_or_uid, " ".join(specs), len(data), fr[:4])
    return data[0], fetch_dict(data[0])


def literals_of(r):
    return [p for p in r.literals]


def assert_no_leak(r, what):
    for lit in [r.line] + literals_of(r):
        assert EICAR not in lit and EICAR_B64 not in lit and \
            EICAR[:40] not in lit, "EICAR passed in %s" % what
        assert EXE_BYTES[:60] not in lit and EXE_B64 not in lit, \
            "the .exe attachment passed in %s" % what


# ---- structure, item lists and invariants -----------------------------------

def walk(bs, prefix=""):
    """[(section, kind, encoding, parent is multipart)] of a parsed
    BODYSTRUCTURE; kind multipart, message or leaf."""
    out = []
    if isinstance(bs[0], list):
        i = 0
        for child in bs:
            if not isinstance(child, list):
                break
            i += 1
            out += _node(child, prefix + str(i), True)
    else:
        out += _node(bs, prefix + "1", False)
    return out


def _node(bs, sec, parent_multi):
    if isinstance(bs[0], list):
        return [(sec, "multipart", None, parent_multi)] + \
            walk(bs, sec + ".")
    t, st = bytes(bs[0]).upper(), bytes(bs[1]).upper()
    enc = bytes(bs[5]).upper() if bs[5] is not None else b"7BIT"
    if t == b"MESSAGE" and st == b"RFC822":
        return [(sec, "message", enc, parent_multi)] + \
            walk(bs[8], sec + ".")
    return [(sec, "leaf", enc, parent_multi)]


CHUNK = 700


def item_specs(bs, size):
    """Every item asked for a message whose (sanitized) BODYSTRUCTURE is
    bs and whose size is size."""
    specs = ["RFC822.SIZE", "BODYSTRUCTURE", "BODY", "ENVELOPE",
             "BODY.PEEK[]", "BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]",
             "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]", "BINARY.SIZE[]"]
    first_leaf = None
    for sec, kind, enc, pm in walk(bs):
        specs.append("BODY.PEEK[%s]" % sec)
        if pm:
            specs.append("BODY.PEEK[%s.MIME]" % sec)
        if kind == "message":
            specs += ["BODY.PEEK[%s.HEADER]" % sec,
                      "BODY.PEEK[%s.TEXT]" % sec]
        if kind == "leaf":
            specs += ["BINARY.PEEK[%s]" % sec, "BINARY.SIZE[%s]" % sec]
            if first_leaf is None:
                first_leaf = sec
    for off in range(0, size + 1, CHUNK):
        specs.append("BODY.PEEK[]<%d.%d>" % (off, CHUNK))
    if first_leaf:
        specs += ["BODY.PEEK[%s]<0.40>" % first_leaf,
                  "BODY.PEEK[%s]<40.40>" % first_leaf]
    return specs


def _decode(enc, data):
    enc = enc.upper()
    if enc == b"BASE64":
        return base64.b64decode(data)
    if enc == b"QUOTED-PRINTABLE":
        return quopri.decodestring(data)
    return data


def invariants(v, bs, what):
    """Problems of one message's items {name: value} among themselves."""
    probs = []
    body = v[b"BODY[]"]
    if int(v[b"RFC822.SIZE"]) != len(body):
        probs.append("%s: RFC822.SIZE %s != len(BODY[]) %d" % (
            what, v[b"RFC822.SIZE"], len(body)))
    if v[b"BODY[HEADER]"] + v[b"BODY[TEXT]"] != body:
        probs.append("%s: BODY[HEADER] + BODY[TEXT] != BODY[]" % what)
    parts = [v[k] for k in sorted((k for k in v
                                   if k.startswith(b"BODY[]<")),
                                  key=lambda k: int(k[7:-1]))]
    if parts and b"".join(parts) != body:
        probs.append("%s: the partials BODY[]<n.%d> do not reassemble "
                     "BODY[]" % (what, CHUNK))
    pos = 0
    for sec, kind, enc, pm in walk(bs):
        s = sec.encode()
        part = v[b"BODY[" + s + b"]"]
        if pm:
            whole = v[b"BODY[" + s + b".MIME]"] + part
            at = body.find(whole, pos if "." not in sec else 0)
            if at < 0:
                probs.append("%s: BODY[%s.MIME] + BODY[%s] is not in "
                             "BODY[] (after the previous part)" % (
                                 what, sec, sec))
            elif "." not in sec:
                pos = at + len(whole)
        elif part not in body:
            probs.append("%s: BODY[%s] is not in BODY[]" % (what, sec))
        if kind == "message":
            if v[b"BODY[" + s + b".HEADER]"] + v[b"BODY[" + s + b".TEXT]"] \
                    != part:
                probs.append("%s: BODY[%s.HEADER] + BODY[%s.TEXT] != "
                             "BODY[%s]" % (what, sec, sec, sec))
        if kind == "leaf":
            binary = v[b"BINARY[" + s + b"]"]
            try:
                want = _decode(enc, part)
            except (binascii.Error, ValueError) as ex:
                probs.append("%s: BODY[%s] does not decode as %s: %s" % (
                    what, sec, enc, ex))
                want = None
            if want is not None and binary != want:
                probs.append("%s: BINARY[%s] is not BODY[%s] decoded (%s)"
                             % (what, sec, sec, enc.decode()))
            if int(v[b"BINARY.SIZE[" + s + b"]"]) != len(binary):
                probs.append("%s: BINARY.SIZE[%s] %s != len(BINARY[%s]) %d"
                             % (what, sec, v[b"BINARY.SIZE[" + s + b"]"],
                                sec, len(binary)))
    first = [k for k in v if re.match(rb"BODY\[[0-9.]+\]<0>$", k)]
    for k in first:
        sec = k[:k.index(b"<")]
        joined = v[k] + v[sec + b"<40>"]
        if joined != v[sec][:80]:
            probs.append("%s: %s<0.40> + <40.40> != its first 80 bytes" % (
                what, sec.decode()))
    return probs


def same_value(name, got, want):
    if name in (b"BODYSTRUCTURE", b"BODY"):
        return norm_structure(got) == norm_structure(want)
    return got == want


# ---- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def dove():
    d = dovecot_mod.Dovecot(users={u: PW for u in
                                   (USER, REF, SYNC, SYNCREF) + EXP_USERS})
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def box(dove):
    """{name: uid} and {name: original bytes as stored} of USER's INBOX."""
    uids = dove.append(USER, [m for _, m in MESSAGES])
    assert len(uids) == len(MESSAGES)
    bodies = dove.fetch_bodies(USER)
    orig = {}
    for (name, m), uid in zip(MESSAGES, uids):
        assert bodies[uid] == m, "Dovecot changed %s" % name
        orig[name] = m
    uid = {name: u for (name, _), u in zip(MESSAGES, uids)}
    seq = {name: i + 1 for i, name in enumerate(NAMES)}
    return {"uid": uid, "seq": seq, "orig": orig}


@pytest.fixture(scope="module")
def gwy(dove, request):
    """The main gateway (strict, the default): two netd and two scand
    workers, so that sessions meet different workers."""
    g = new_gateway(dove, workers=(2, 2, 1))
    yield g
    stop_gateway(g)


@pytest.fixture(scope="module")
def sanitized(gwy, box):
    """{name: BODY[] through the main gateway}: its first full pass
    (whole messages, which every mode judges)."""
    c = session(gwy.port())
    out = {}
    try:
        for name in NAMES:
            r, v = fetch1(c, box["uid"][name], ["BODY.PEEK[]"], uid=True)
            out[name] = v[b"BODY[]"]
    finally:
        close(c)
    gwy.first_pass_judged = judged(gwy)
    return out


@pytest.fixture(scope="module")
def ref(dove, box, sanitized):
    """Dovecot's own answers for the sanitized bytes (a scratch mailbox):
    {name: {"bs": BODYSTRUCTURE, "specs": [...], "vals": {item: value}}}.
    For clean messages the original mailbox is asked (the same bytes)."""
    out = {}
    c = RawIMAP(dove.port, timeout=60)
    c.login(REF, PW)
    try:
        for name in NAMES:
            c.append("INBOX", sanitized[name], literal_plus=True)
        st, rs = c.command("EXAMINE INBOX")
        for i, name in enumerate(NAMES):
            seq = i + 1
            r, v = fetch1(c, seq, ["BODYSTRUCTURE", "BODY.PEEK[]"])
            assert v[b"BODY[]"] == sanitized[name], \
                "Dovecot changed the sanitized %s" % name
            bs = v[b"BODYSTRUCTURE"]
            specs = item_specs(bs, len(sanitized[name]))
            r, vals = fetch1(c, seq, specs)
            missing = [s for s in specs if resp_name(s) not in vals]
            assert not missing, (name, missing)
            out[name] = {"bs": bs, "specs": specs, "vals": vals}
    finally:
        close(c)
    return out


@pytest.fixture(scope="module")
def direct(dove, box, ref):
    """Dovecot's own FETCH responses (Response.parts) for the clean
    messages: {(name, spec or "all", uid): parts}."""
    out = {}
    c = session(dove.port)
    try:
        for name in CLEAN:
            specs = ref[name]["specs"]
            for uid in (False, True):
                key = box["uid"][name] if uid else box["seq"][name]
                for spec in specs:
                    r, _ = fetch1(c, key, [spec], uid=uid)
                    out[(name, spec, uid)] = r.parts
                r, _ = fetch1(c, key, specs, uid=uid)
                out[(name, "all", uid)] = r.parts
    finally:
        close(c)
    return out


# ---- the harness against plain Dovecot --------------------------------------

def test_harness_direct(dove, box):
    """The item lists and the invariants hold for Dovecot's own answers
    about the original messages (checks the test, not the gateway)."""
    c = session(dove.port)
    probs = []
    try:
        for name in NAMES:
            r, v = fetch1(c, box["seq"][name], ["BODYSTRUCTURE",
                                                "BODY.PEEK[]"])
            specs = item_specs(v[b"BODYSTRUCTURE"], len(v[b"BODY[]"]))
            r, vals = fetch1(c, box["seq"][name], specs)
            probs += invariants(vals, v[b"BODYSTRUCTURE"], "direct " + name)
            kinds = {k for _, k, _, _ in walk(v[b"BODYSTRUCTURE"])}
            if name == "nested-eicar":
                assert "message" in kinds
            if name == "clean-multi":
                encs = {e for _, _, e, _ in walk(v[b"BODYSTRUCTURE"])}
                assert {b"BASE64", b"QUOTED-PRINTABLE"} <= encs, encs
    finally:
        close(c)
    assert not probs, "\n".join(probs)


# ---- whole messages, the first pass -----------------------------------------

def test_whole_messages_sanitized(box, sanitized, gwy):
    """BODY[] through the gateway: clean ones unchanged, the others
    rewritten as the action says; each judged once."""
    orig = box["orig"]
    for name in NAMES:
        got = sanitized[name]
        if name in CLEAN:
            assert got == orig[name], "clean %s changed" % name
            continue
        assert got != orig[name], "%s passed unchanged" % name
        for bad in (EICAR, EICAR_B64, EXE_BYTES[:60], EXE_B64):
            assert bad not in got, "%s: %r passed" % (name, bad[:30])
        if name in ("eicar-att", "eicar-body", "nested-eicar"):
            assert VIRUS_NAME.encode() in got, (name, got[-800:])
        if name == "spam":
            assert b"\r\nSubject: " + SPAM_TAG.encode() + b"cheap meds\r\n" \
                in got, got[:600]
    assert gwy.first_pass_judged == len(NAMES), \
        "%d 'message judged' lines after the first pass over %d messages" \
        % (gwy.first_pass_judged, len(NAMES))


# ---- first sight: the first FETCH asks a derived item only ------------------

def _first_sight_specs(kind, name, ref):
    bs = ref[name]["bs"]
    nodes = walk(bs)
    multi = isinstance(bs[0], list)
    leaves = [s for s, k, _, _ in nodes if k == "leaf"]
    if kind == "section":
        return ["BODY.PEEK[2]" if multi else "BODY.PEEK[1]"]
    if kind == "mime":
        return ["BODY.PEEK[2.MIME]" if multi else
                "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]"]
    if kind == "partial":
        return ["BODY.PEEK[]<0.%d>" % CHUNK]
    if kind == "binary":
        sec = "2" if "2" in leaves else leaves[-1]
        return ["BINARY.SIZE[%s]" % sec]
    return [kind]


FIRST_SIGHT = ["RFC822.SIZE", "BODYSTRUCTURE", "ENVELOPE", "BODY",
               "section", "mime", "BODY.PEEK[HEADER]", "partial", "binary"]


@pytest.mark.parametrize("kind", FIRST_SIGHT)
def test_first_sight(dove, box, ref, direct, kind):
    """A fresh gateway: the first FETCH of each message asks only one
    derived item; the answer is already the sanitized message's (clean:
    Dovecot's own bytes).  Every message is judged once for it, and
    fetching the whole messages afterwards judges nothing more."""
    g = new_gateway(dove)
    doff = dove.log_offset()
    try:
        c = session(g.port())
        probs = []
        try:
            for name in NAMES:
                specs = _first_sight_specs(kind, name, ref)
                r, v = fetch1(c, box["uid"][name], specs, uid=True)
                assert_no_leak(r, "%s of %s" % (specs, name))
                if name in CLEAN and \
                        r.parts != direct[(name, specs[0], True)]:
                    probs.append("clean %s, first FETCH (%s): not "
                                 "Dovecot's response: %r vs %r" % (
                                     name, specs[0],
                                     _short(b"".join(r.parts)),
                                     _short(b"".join(
                                         direct[(name, specs[0], True)]))))
                for spec in specs:
                    k = resp_name(spec)
                    want = ref[name]["vals"].get(k)
                    if want is None:
                        # not in the item list: ask Dovecot for the
                        # sanitized copy
                        want = _ref_item(dove, name, spec)
                    if not same_value(k, v.get(k), want):
                        probs.append(
                            "%s, first FETCH (%s): the gateway answered "
                            "%r, the sanitized message gives %r" % (
                                name, spec, _short(v.get(k)),
                                _short(want)))
            n1 = judged(g)
            for name in NAMES:
                r, v = fetch1(c, box["uid"][name], ["BODY.PEEK[]"],
                              uid=True)
                if v[b"BODY[]"] != ref[name]["vals"][b"BODY[]"]:
                    probs.append("%s: BODY[] after the first FETCH differs "
                                 "from the sanitized message" % name)
            n2 = judged(g)
        finally:
            close(c)
    finally:
        stop_gateway(g)
    assert not probs, "\n".join(probs)
    assert n1 == len(NAMES), \
        "after a first FETCH of %s of each of %d messages the gateway " \
        "logged %d 'message judged' lines (want one per message: the " \
        "gateway judges a message before answering any derived item)" % (
            kind, len(NAMES), n1)
    assert n2 == n1, "BODY[] judged the messages again (%d more lines)" % (
        n2 - n1)
    logins = re.findall(r"imap-login: (?:Info: )?Login: user=<%s>" % USER,
                        dove.log_since(doff))
    assert len(logins) == 1, \
        "%d logins to Dovecot for one client session: the gateway's own " \
        "fetch must use the client's backend connection" % len(logins)


def _ref_item(dove, name, spec):
    c = session(dove.port, REF)
    try:
        r, v = fetch1(c, NAMES.index(name) + 1, [spec])
        return v.get(resp_name(spec))
    finally:
        close(c)


def _short(v):
    if isinstance(v, (bytes, bytearray)) and len(v) > 200:
        return bytes(v[:200]) + b"...(%d bytes)" % len(v)
    return v


def test_imaplib_size_then_body(dove, box, ref):
    """imaplib, fresh gateway: RFC822.SIZE first (alone), BODY[] later in
    another session: the size is the length of what BODY[] brings."""
    g = new_gateway(dove)
    bad = []
    try:
        sizes = {}
        c = imaplib.IMAP4("127.0.0.1", g.port(), timeout=15)
        c.login(USER, PW)
        c.select("INBOX", readonly=True)
        typ, data = c.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
        assert typ == "OK", data
        for item in data:
            m = re.search(rb"UID (\d+) RFC822\.SIZE (\d+)|"
                          rb"RFC822\.SIZE (\d+) UID (\d+)", item)
            if m.group(1):
                sizes[int(m.group(1))] = int(m.group(2))
            else:
                sizes[int(m.group(4))] = int(m.group(3))
        c.logout()
        c = imaplib.IMAP4("127.0.0.1", g.port(), timeout=15)
        c.login(USER, PW)
        c.select("INBOX", readonly=True)
        for name in NAMES:
            uid = box["uid"][name]
            typ, data = c.uid("FETCH", str(uid), "(BODY.PEEK[])")
            body = [d[1] for d in data if isinstance(d, tuple)][0]
            assert body == ref[name]["vals"][b"BODY[]"], name
            if sizes.get(uid) != len(body):
                bad.append("%s: RFC822.SIZE %s, BODY[] %d bytes" % (
                    name, sizes.get(uid), len(body)))
        c.logout()
    finally:
        stop_gateway(g)
    assert not bad, "RFC822.SIZE asked first is not the size of the " \
        "message the client then gets:\n" + "\n".join(bad)


# ---- every item, every way, the same answers --------------------------------

def _check_message(name, vals, responses, ref, direct, how, uid):
    """Problems of one message's answers through the gateway.

    vals: {item: value}; responses: {spec or "all": Response}."""
    probs = []
    want = ref[name]["vals"]
    for spec in ref[name]["specs"]:
        k = resp_name(spec)
        if k not in vals:
            probs.append("%s %s: no %s in the answer" % (how, name,
                                                         k.decode()))
            continue
        if not same_value(k, vals[k], want[k]):
            probs.append("%s %s: %s is %r, the sanitized message gives %r"
                         % (how, name, k.decode(), _short(vals[k]),
                            _short(want[k])))
    if not probs:
        probs += invariants(vals, ref[name]["bs"], "%s %s" % (how, name))
    if name in CLEAN:
        for key, r in responses.items():
            d = direct[(name, key, uid)]
            if r.parts != d:
                probs.append("%s clean %s: the response to (%s) is not "
                             "Dovecot's: %r vs %r" % (
                                 how, name, key if key != "all" else
                                 "all items", _short(b"".join(r.parts)),
                                 _short(b"".join(d))))
    return probs


def _pass(g, box, ref, direct, mode, uid, how):
    """Fetch every item of every message through g (three sessions open
    at once, messages spread over them); returns the problems."""
    conns = [session(g.port()) for _ in range(3)]
    probs = []
    try:
        for i, name in enumerate(NAMES):
            c = conns[i % len(conns)]
            key = box["uid"][name] if uid else box["seq"][name]
            specs = ref[name]["specs"]
            responses, vals = {}, {}
            if mode == "all":
                r, vals = fetch1(c, key, specs, uid=uid)
                responses["all"] = r
                assert_no_leak(r, "%s %s" % (how, name))
            else:
                for spec in specs:
                    r, v = fetch1(c, key, [spec], uid=uid)
                    assert_no_leak(r, "%s %s (%s)" % (how, name, spec))
                    responses[spec] = r
                    vals.update(v)
            probs += _check_message(name, vals, responses, ref, direct,
                                    how, uid)
    finally:
        for c in conns:
            close(c)
    return probs


COMBOS = [(m, u) for m in ("all", "separate") for u in (False, True)]
COMBO_IDS = ["%s-%s" % (m, "uid" if u else "seq") for m, u in COMBOS]


@pytest.mark.parametrize("mode,uid", COMBOS, ids=COMBO_IDS)
def test_items_consistent(gwy, box, ref, direct, mode, uid):
    """Every item in one FETCH ("all") or one FETCH each ("separate"),
    FETCH or UID FETCH, new sessions: what the sanitized message gives;
    clean messages byte-identical to Dovecot; nothing judged again."""
    before = judged(gwy)
    probs = _pass(gwy, box, ref, direct, mode, uid,
                  "%s %s FETCH" % (mode, "UID" if uid else "seq"))
    assert not probs, "\n".join(probs[:40])
    assert judged(gwy) == before, \
        "messages judged again in new sessions: %d more 'message judged' " \
        "lines" % (judged(gwy) - before)


def test_restart_same_answers(gwy, box, ref, direct):
    """The gateway stopped and started again on the same state_dir: the
    same answers for every item, every way, and no message judged again
    (the verdicts are in state_dir/verdicts)."""
    total = judged(gwy)
    gwy.stop(cleanup=False)
    gwy.start()
    probs = []
    for mode, uid in COMBOS:
        probs += _pass(gwy, box, ref, direct, mode, uid,
                       "after restart %s %s FETCH" % (
                           mode, "UID" if uid else "seq"))
    assert not probs, "\n".join(probs[:40])
    assert judged(gwy) == total, \
        "after the restart %d messages were judged again (the verdict " \
        "store under state_dir did not keep them)" % (judged(gwy) - total)


def test_copy_judged_by_content(gwy, dove, box, ref):
    """The same messages COPYed to another mailbox (new UIDs, same bytes)
    are known by their SHA-256: fetched through the gateway they are the
    same sanitized messages, and nothing is judged again."""
    c = dove.connect(USER)
    try:
        c.create("Copies")
        c.select("INBOX")
        typ, data = c.copy("1:*", "Copies")
        assert typ == "OK", data
    finally:
        c.logout()
    before = judged(gwy)
    g = session(gwy.port(), box="Copies")
    probs = []
    try:
        for i, name in enumerate(NAMES):
            r, v = fetch1(g, i + 1, ["RFC822.SIZE", "BODYSTRUCTURE",
                                     "BODY.PEEK[]"])
            assert_no_leak(r, "copy of %s" % name)
            for k in (b"RFC822.SIZE", b"BODYSTRUCTURE", b"BODY[]"):
                if not same_value(k, v[k], ref[name]["vals"][k]):
                    probs.append("copy of %s: %s is %r, the sanitized "
                                 "message gives %r" % (
                                     name, k.decode(), _short(v[k]),
                                     _short(ref[name]["vals"][k])))
    finally:
        close(g)
    assert not probs, "\n".join(probs)
    assert judged(gwy) == before, \
        "copies of judged messages judged again (%d 'message judged' " \
        "lines): verdicts are also kept by content SHA-256" % (
            judged(gwy) - before)


# ---- a client's header sync of a larger mailbox -----------------------------

SYNC_ITEMS = ("UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc "
              "Bcc Subject Date Message-ID Priority X-Priority References "
              "Newsgroups In-Reply-To Content-Type Reply-To)]")
SYNC_FIELDS = re.compile(rb"^BODY\[HEADER\.FIELDS ")


def _uid_fetch_all(port, user, items):
    """{uid: Response} of UID FETCH 1:* (items) in a new session."""
    c = session(port, user)
    try:
        st, rs = c.command("UID FETCH 1:* (%s)" % items)
    finally:
        close(c)
    out = {}
    for r in rs:
        if re.match(rb"\* \d+ FETCH ", r.line):
            d = fetch_dict(r)
            if b"UID" in d and set(d) - {b"UID", b"FLAGS"}:
                out[int(d[b"UID"])] = r
    return out


def test_header_sync_many(dove):
    """Thunderbird's header sync (UID FETCH 1:* of UID RFC822.SIZE FLAGS
    and BODY.PEEK[HEADER.FIELDS (...)]) of 400 unjudged messages, some
    infected or spam, through a fresh gateway: one answer per message,
    clean ones byte-identical to Dovecot's, the others those of the
    sanitized message; each judged once.  Two more syncs in new sessions
    (the mailbox mark: no probe) give the same answers, with no more
    cuts by scand ("already sanitized" debug lines): the items of each
    changed message come from netd's cut cache, filled by the first."""
    import mailgen
    msgs = mailgen.messages(400, seed=404)
    for i in range(0, 400, 37):
        msgs[i] = gateway_mod.eicar_attachment_message(i)
    for i in range(5, 400, 61):
        msgs[i] = corpus.single_message(i, "sync-spam-%d" % i, b"offer",
                                        b"Buy!" + CRLF + corpus.GTUBE)
    c = RawIMAP(dove.port, timeout=120)
    try:
        c.login(SYNC, PW)
        for k in range(0, len(msgs), 100):
            t = c.tag()
            c.send(t.encode() + b" APPEND INBOX" + b"".join(
                b" {%d+}\r\n" % len(m) + m for m in msgs[k:k + 100]) +
                b"\r\n")
            st = c.read_until_tagged(t)[-1].line
            assert st.startswith(t.encode() + b" OK"), st
    finally:
        close(c)
    direct = _uid_fetch_all(dove.port, SYNC, SYNC_ITEMS)
    assert len(direct) == len(msgs)
    g = new_gateway(dove, workers=(1, 2, 1), level="debug")
    try:
        try:
            got = _uid_fetch_all(g.port(), SYNC, SYNC_ITEMS)
        except (EOFError, OSError) as ex:
            m = g.wait_log(CRASH.pattern, timeout=3)
            pytest.fail("the header sync through the gateway failed (%s)%s"
                        % (ex, ": " + m.group(0) if m else ""),
                        pytrace=False)
        n1 = judged(g)
        c = session(g.port(), SYNC)
        try:
            bodies = c.fetch_bodies()
        finally:
            close(c)
        n2 = judged(g)
        again = []
        cuts = []
        for _ in range(2):
            cuts.append(len(CUT.findall(g.log_text())))
            again.append(_uid_fetch_all(g.port(), SYNC, SYNC_ITEMS))
            time.sleep(0.3)
        cuts.append(len(CUT.findall(g.log_text())))
    finally:
        stop_gateway(g)
    for k, a in enumerate(again):
        diff = [u for u in got if a.get(u) is None or
                a[u].parts != got[u].parts]
        assert not diff, "sync %d differs from the first for UIDs %r" % (
            k + 2, diff[:10])
    assert sorted(got) == sorted(direct), \
        "answers for %d of %d messages" % (len(got), len(direct))
    stored = {}
    c = session(dove.port, SYNC)
    try:
        stored = c.fetch_bodies()
    finally:
        close(c)
    changed = sorted(u for u in direct if bodies[u] != stored[u])
    assert len(changed) >= 11 + 7, "only %d messages changed" % len(changed)
    probs = []
    for u in direct:
        assert_no_leak(got[u], "header sync UID %d" % u)
        if u not in changed and got[u].parts != direct[u].parts:
            probs.append("clean UID %d: %r, Dovecot: %r" % (
                u, got[u].line[:200], direct[u].line[:200]))
    # the changed ones: what Dovecot says about the sanitized bytes
    c = RawIMAP(dove.port, timeout=60)
    try:
        c.login(SYNCREF, PW)
        for u in changed:
            c.append("INBOX", bodies[u], literal_plus=True)
    finally:
        close(c)
    ref = _uid_fetch_all(dove.port, SYNCREF, SYNC_ITEMS)
    for u, r in zip(changed, [ref[k] for k in sorted(ref)]):
        dg, dr = fetch_dict(got[u]), fetch_dict(r)
        for k in dr:
            if k in (b"UID", b"FLAGS"):
                continue
            if dg.get(k) != dr[k]:
                probs.append("UID %d: %s is %r, the sanitized message "
                             "gives %r" % (u, k.decode(), _short(dg.get(k)),
                                           _short(dr[k])))
    assert not probs, "\n".join(probs[:20])
    assert n1 == len(msgs), \
        "%d 'message judged' lines after the header sync of %d messages" % (
            n1, len(msgs))
    assert n2 == n1, "BODY[] judged again: %d" % (n2 - n1)
    assert cuts[0] >= len(changed), \
        "first sync: %d cuts by scand for %d changed messages" % (
            cuts[0], len(changed))
    assert cuts[2] == cuts[0], \
        "later syncs: %d and %d cuts by scand (want 0: netd's cut cache)" \
        % (cuts[1] - cuts[0], cuts[2] - cuts[1])


# ---- lazy -------------------------------------------------------------------

def test_lazy_size_is_original(dove, box, ref):
    """consistency: lazy (the documented trade-off): RFC822.SIZE asked
    alone passes as the server sent it (the original size) for an
    infected message, while BODY[] is sanitized."""
    g = new_gateway(dove, consistency="lazy")
    try:
        c = session(g.port())
        try:
            for name in ("eicar-att", "eicar-body"):
                uid = box["uid"][name]
                r, v = fetch1(c, uid, ["RFC822.SIZE"], uid=True)
                assert int(v[b"RFC822.SIZE"]) == len(box["orig"][name]), \
                    "lazy: RFC822.SIZE of %s alone is %s, not the " \
                    "original %d" % (name, v[b"RFC822.SIZE"],
                                     len(box["orig"][name]))
                r, v = fetch1(c, uid, ["BODY.PEEK[]"], uid=True)
                assert v[b"BODY[]"] == ref[name]["vals"][b"BODY[]"], name
                assert len(v[b"BODY[]"]) != len(box["orig"][name])
                r, v = fetch1(c, uid, ["BODY.PEEK[2]"
                                       if name == "eicar-att" else
                                       "BODY.PEEK[1]"], uid=True)
                assert_no_leak(r, "lazy section of %s" % name)
        finally:
            close(c)
    finally:
        stop_gateway(g)


# ---- EXPUNGE while the gateway's own fetch runs -----------------------------

def _large_box(dove, user):
    """user's INBOX: small and ~3 MB clean messages, none judged by any
    gateway yet; returns [(uid, size)] in mailbox order."""
    import mailgen
    small = mailgen.messages(4, seed=77)
    msgs = [small[0], large_multipart_message(41, 3 << 20), small[1],
            large_multipart_message(42, 3 << 20), small[2],
            large_multipart_message(43, 3 << 20),
            large_multipart_message(44, 2 << 20), small[3]]
    msgs = [mailgen.normalize(m) for m in msgs]
    c = RawIMAP(dove.port, timeout=120)
    try:
        c.login(user, PW)
        for m in msgs:
            c.append("INBOX", m, literal_plus=True)
    finally:
        close(c)
    bodies = dove.fetch_bodies(user)
    assert len(bodies) == len(msgs)
    return [(u, len(bodies[u])) for u in sorted(bodies)]


def _direct_uids(dove, user):
    c = RawIMAP(dove.port, timeout=60)
    try:
        c.login(user, PW)
        c.command("EXAMINE INBOX")
        st, rs = c.command("UID SEARCH ALL")
        toks = b" ".join(r.line for r in rs
                         if r.line.startswith(b"* SEARCH")).split()[2:]
        return [int(t) for t in toks]
    finally:
        close(c)


class View:
    """A client's view of the mailbox (seq -> uid), kept from the
    untagged responses it reads, and what was wrong about them."""

    ALLOWED_ITEMS = {b"UID", b"RFC822.SIZE", b"FLAGS"}

    def __init__(self, uids, sizes, tags):
        self.uids = list(uids)
        self.sizes = sizes
        self.tags = tags
        self.expunged = []
        self.fetched = {}
        self.flag_updates = []
        self.exists = []
        self.probs = []

    def feed(self, r):
        line = r.line
        m = re.match(rb"\* (\d+) (EXPUNGE|EXISTS|RECENT|FETCH)\b", line)
        if r.literals:
            self.probs.append("a literal reached the client (nothing it "
                              "asked for has one): %r" % line[:120])
        if line.startswith(b"*") and not m:
            if not re.match(rb"\* (OK|NO|BAD|BYE)\b", line):
                self.probs.append("unexpected untagged response %r"
                                  % line[:120])
            return
        if not line.startswith(b"*"):
            tag = line.split(b" ", 1)[0].decode(errors="replace")
            if tag not in self.tags and not line.startswith(b"+"):
                self.probs.append("a tagged response with a tag the client "
                                  "never sent: %r" % line[:120])
            return
        n, what = int(m.group(1)), m.group(2)
        if what == b"EXPUNGE":
            if not 1 <= n <= len(self.uids):
                self.probs.append("EXPUNGE %d of %d messages" % (
                    n, len(self.uids)))
                return
            self.expunged.append(self.uids.pop(n - 1))
        elif what == b"EXISTS":
            self.exists.append(n)
            if n < len(self.uids):
                self.probs.append("EXISTS %d shrinks the mailbox below %d "
                                  "(an EXPUNGE missing)" % (n, len(self.uids)))
            # new messages: UIDs not known yet
            self.uids += [None] * (n - len(self.uids))
        elif what == b"FETCH":
            items = dict(fetch_items(r)[1])
            extra = set(items) - self.ALLOWED_ITEMS
            if extra:
                self.probs.append("FETCH response with items the client did "
                                  "not ask for: %s" % sorted(extra))
            if not 1 <= n <= len(self.uids):
                self.probs.append("FETCH %d of %d messages" % (
                    n, len(self.uids)))
                return
            if b"FLAGS" in items and b"RFC822.SIZE" not in items:
                self.flag_updates.append((self.uids[n - 1],
                                          [bytes(f) for f in
                                           items[b"FLAGS"]]))
            if b"UID" in items:
                uid = int(items[b"UID"])
                if self.uids[n - 1] is None:
                    self.uids[n - 1] = uid
                if self.uids[n - 1] != uid:
                    self.probs.append(
                        "FETCH %d says UID %d, but message %d is UID %d in "
                        "the client's view" % (n, uid, n, self.uids[n - 1]))
                if b"RFC822.SIZE" in items:
                    if uid in self.fetched:
                        self.probs.append("UID %d answered twice" % uid)
                    self.fetched[uid] = int(items[b"RFC822.SIZE"])
                    if int(items[b"RFC822.SIZE"]) != self.sizes.get(uid):
                        self.probs.append("UID %d RFC822.SIZE %s, is %s" % (
                            uid, items[b"RFC822.SIZE"], self.sizes.get(uid)))


NEW_MSG = (b"From: b@example.org\r\nTo: a@example.org\r\n"
           b"Subject: arrived during the FETCH\r\n\r\nnew\r\n")

EXPUNGE_CASES = [(via, uid) for via in ("dovecot", "gateway")
                 for uid in (False, True)]


@pytest.mark.parametrize("via,uid", EXPUNGE_CASES,
                         ids=["%s-%s" % (v, "uid" if u else "seq")
                              for v, u in EXPUNGE_CASES])
def test_expunge_during_own_fetch(dove, via, uid):
    """Client A (raw reader) asks RFC822.SIZE (and UID) of every message
    of a mailbox of unjudged ~3 MB messages; meanwhile B (direct to
    Dovecot) expunges some of them, twice, appends one (EXISTS) and flags
    one (FETCH FLAGS).  A's responses stay consistent (sequence numbers
    map to the right UIDs, each EXPUNGE once, the flag change once,
    nothing A did not ask for), then a NOOP brings A's view to
    Dovecot's.  via dovecot:
    A talks to Dovecot itself (checks the harness)."""
    user = EXP_USERS[EXPUNGE_CASES.index((via, uid))]
    layout = _large_box(dove, user)
    uids = [u for u, _ in layout]
    sizes = dict(layout)
    # B deletes a large and a small one early, another large one later
    rounds = [[uids[3], uids[4]], [uids[5]]]
    flagged = uids[1]
    g = new_gateway(dove) if via == "gateway" else None
    a = None
    try:
        a = session(g.port() if g else dove.port, user)
        view = View(uids, sizes, {"f1", "n1"})
        b = RawIMAP(dove.port, timeout=60)
        b.login(user, PW)
        b.command("SELECT INBOX")
        cmd = b"f1 UID FETCH 1:* (RFC822.SIZE)\r\n" if uid else \
            b"f1 FETCH 1:* (UID RFC822.SIZE)\r\n"
        errors = []

        appended = []

        def expunger():
            try:
                for delay, victims in zip((0.05, 0.3), rounds):
                    time.sleep(delay)
                    b.command("UID STORE %s +FLAGS.SILENT (\\Deleted)" %
                              ",".join(map(str, victims)))
                    b.command("EXPUNGE")
                    if not appended:
                        # a new message (EXISTS) and a flag change (FETCH
                        # FLAGS) for A while its FETCH runs
                        st = b.append("INBOX", NEW_MSG, literal_plus=True)
                        m = re.search(rb"APPENDUID \d+ (\d+)", st)
                        appended.append(int(m.group(1)))
                        b.command("UID STORE %d +FLAGS.SILENT (\\Flagged)"
                                  % flagged)
            except Exception as ex:
                errors.append(ex)

        t = threading.Thread(target=expunger)
        t0 = time.monotonic()
        a.send(cmd)
        t.start()
        status = None
        while status is None:
            r = a.read_response()
            if r.line.startswith(b"f1 "):
                status = r.line
            else:
                view.feed(r)
        secs = time.monotonic() - t0
        print("FETCH took %.3f s; responses: %d EXPUNGE during it" % (
            secs, len(view.expunged)))
        t.join(30)
        close(b)
        assert not errors, errors
        assert re.match(rb"f1 (OK|NO)\b", status), status
        a.send(b"n1 NOOP\r\n")
        while True:
            r = a.read_response()
            if r.line.startswith(b"n1 "):
                assert r.line.startswith(b"n1 OK"), r.line
                break
            view.feed(r)
        now = _direct_uids(dove, user)
    finally:
        if a is not None:
            close(a)
        if g is not None:
            stop_gateway(g)
    gone = sorted(rounds[0] + rounds[1])
    assert sorted(set(uids) - set(now)) == gone, (uids, now)
    assert now[-1:] == appended, (now, appended)
    assert not view.probs, "\n".join(view.probs)
    assert view.uids[-1:] in ([None], appended), \
        "the new message UID %s was not announced (EXISTS %s): the " \
        "client's view ends %s" % (appended, view.exists, view.uids[-3:])
    view.uids[-1:] = appended
    ups = [f for u, f in view.flag_updates
           if u == flagged and b"\\Flagged" in f]
    assert len(ups) == 1, \
        "the flag change of UID %d reached the client %d times (%s)" % (
            flagged, len(ups), view.flag_updates)
    assert sorted(view.expunged) == gone, \
        "EXPUNGE responses for UIDs %s, expunged were %s" % (
            view.expunged, gone)
    assert view.uids == now, \
        "after NOOP the client's view %s differs from Dovecot's %s" % (
            view.uids, now)
    missing = [u for u in now if u not in view.fetched and
               u not in appended]
    assert not missing, "no RFC822.SIZE for the surviving UIDs %s (%s, " \
        "the FETCH took %.2f s)" % (missing, status, secs)


# ---- pipelining -------------------------------------------------------------

PIPE_CASES = [(via, uid) for via in ("dovecot", "gateway")
              for uid in (False, True)]


@pytest.mark.parametrize("via,uid", PIPE_CASES,
                         ids=["%s-%s" % (v, "uid" if u else "seq")
                              for v, u in PIPE_CASES])
def test_pipelined_derived_fetches(dove, box, ref, via, uid):
    """A fresh gateway; three FETCHes (all FETCH or all UID FETCH: Dovecot
    itself may answer a UID FETCH pipelined after a FETCH out of order,
    RFC 3501 5.5) of derived items of unjudged messages and a NOOP sent
    without waiting: the tagged answers come back in order, each
    command's data before its own tagged answer and equal to the
    sanitized messages'.  via dovecot: the same against Dovecot itself,
    compared with its own answers (checks the harness)."""
    def keys(*names):
        return ",".join(str(box["uid" if uid else "seq"][n]) for n in names)

    verb = "UID FETCH" if uid else "FETCH"
    cmds = [
        ("p1", "%s %s (RFC822.SIZE)" % (verb, keys(*NAMES[:4])),
         NAMES[:4], [b"RFC822.SIZE"]),
        ("p2", "%s %s (BODYSTRUCTURE ENVELOPE)" % (
            verb, keys("spam", "nested-eicar")), ["spam", "nested-eicar"],
         [b"BODYSTRUCTURE", b"ENVELOPE"]),
        ("p3", "%s %s (BODY.PEEK[1] BODY.PEEK[HEADER])" % (
            verb, keys("exe-att", "eicar-att")), ["eicar-att", "exe-att"],
         [b"BODY[1]", b"BODY[HEADER]"]),
        ("p4", "NOOP", [], []),
    ]
    if via == "dovecot":
        want = {}
        c = session(dove.port)
        try:
            for name in NAMES:
                r, want[name] = fetch1(
                    c, box["seq"][name], ["RFC822.SIZE", "BODYSTRUCTURE",
                                          "ENVELOPE", "BODY.PEEK[1]",
                                          "BODY.PEEK[HEADER]"])
        finally:
            close(c)
    else:
        want = {name: ref[name]["vals"] for name in NAMES}
    g = new_gateway(dove) if via == "gateway" else None
    try:
        c = session(g.port() if g else dove.port)
        try:
            c.send(b"".join(("%s %s\r\n" % (t, cmd)).encode()
                            for t, cmd, _, _ in cmds))
            got = []
            cur = []
            while len(got) < len(cmds):
                r = c.read_response()
                if re.match(rb"p\d ", r.line):
                    got.append((r.line.split()[0].decode(),
                                r.line, cur))
                    cur = []
                else:
                    cur.append(r)
        finally:
            close(c)
    finally:
        if g is not None:
            stop_gateway(g)
    assert [t for t, _, _ in got] == [t for t, _, _, _ in cmds], \
        "tagged answers out of order: %s" % [x[1] for x in got]
    # Dovecot runs pipelined FETCHes concurrently: their data may come
    # mixed, but each before its own tagged answer.  The item names tell
    # which command a FETCH response answers.
    probs = []
    seen = {t: set() for t, _, _, _ in cmds}
    done = set()
    for tag, line, rs in got:
        for r in rs:
            if not re.match(rb"\* \d+ FETCH ", r.line):
                continue
            if via == "gateway":
                assert_no_leak(r, "pipelined FETCH")
            n, its = fetch_items(r)
            d = dict(its)
            names = set(d) - {b"FLAGS", b"UID"}
            if not names:
                continue
            owner = [c for c in cmds if c[3] and set(c[3]) == names]
            if len(owner) != 1:
                probs.append("a FETCH response with items %s no command "
                             "asked for: %r" % (sorted(names), r.line[:100]))
                continue
            otag, cmd, onames, items = owner[0]
            if otag in done:
                probs.append("%s: a FETCH response after its tagged "
                             "answer" % cmd)
            name = NAMES[n - 1]
            if name not in onames:
                probs.append("%s: a FETCH response for message %d (%s) "
                             "which it did not ask" % (cmd, n, name))
                continue
            if name in seen[otag]:
                probs.append("%s: two FETCH responses for %s" % (cmd, name))
            seen[otag].add(name)
            if uid and int(d.get(b"UID", 0)) != box["uid"][name]:
                probs.append("%s: message %d answered with UID %s" % (
                    cmd, n, d.get(b"UID")))
            for k in items:
                if not same_value(k, d.get(k), want[name][k]):
                    probs.append("%s: %s of %s is %r, the %s message "
                                 "gives %r" % (
                                     cmd, k.decode(), name,
                                     _short(d.get(k)),
                                     "sanitized" if g else "stored",
                                     _short(want[name][k])))
        done.add(tag)
        if not line.startswith(tag.encode() + b" OK"):
            probs.append("%r" % line)
    for tag, cmd, names, items in cmds:
        if sorted(seen[tag]) != sorted(names):
            probs.append("%s: answers for %s, asked %s" % (
                cmd, sorted(seen[tag]), sorted(names)))
    assert not probs, "\n".join(probs)
