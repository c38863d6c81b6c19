"""The ENVELOPE scand gives with a rewritten message (common/scan.h) is
byte for byte what Dovecot answers for FETCH ENVELOPE of that message.

Each message goes through `imapgwd -S FILE --json -o OUT` (the offline
mode: the real, sandboxed scand); the report of a changed verdict holds
"envelope" (bytes from 0x80 up as \\u0080..\\u00ff).  OUT is appended to a
scratch mailbox of a private Dovecot, and its own FETCH ENVELOPE, as sent
on the wire (quoted strings and literals as they are), must be the same
bytes.

The messages: header edge cases (missing fields, groups, 8-bit, quotes
and backslashes, folding, several From, empty and blank subjects, RFC
2047 words left encoded, syntax errors, routes, comments, LF line ends)
with an EICAR attachment (stripped) or an EICAR body (denied: a new
message built from the original's envelope fields), and every message of
the shared corpus (corpus.py) that a fetch rewrites.
"""

import json
import os
import subprocess

import pytest

import corpus
import dovecot as dovecot_mod
import gateway
from rawimap import RawIMAP

pytestmark = pytest.mark.gateway

C = corpus.shared()
USER, PW = "envref", "secret"
EICAR = corpus.EICAR

# name -> header lines (CRLF added), the message body decides the verdict
HEADERS = {
    "full": [
        b"Date: Thu, 15 Feb 2007 01:02:03 +0200",
        b"Subject: subject header",
        b"From: From Real <fromuser@fromdomain.org>",
        b"Sender: Sender Real <senderuser@senderdomain.org>",
        b"Reply-To: Reply Real <replyuser@replydomain.org>",
        b"To: To Real <touser@todomain.org>",
        b"Cc: Cc Real <ccuser@ccdomain.org>",
        b"Bcc: Bcc Real <bccuser@bccdomain.org>",
        b"In-Reply-To: <reply@to.id>",
        b"Message-ID: <msg@id>"],
    "none": [],
    "from-only": [b"From: joe@example.com"],
    "sender-empty": [b"From: Joe <joe@example.com>", b"Sender:",
                     b"Reply-To: "],
    "groups": [
        b"From: a@b.c",
        b"To: undisclosed-recipients:;",
        b"Cc: team: x@y.z, \"Some One\" <s@o.ne>;, after@x.y",
        b"Bcc: g1: a@a.a;, g2:;"],
    "group-open": [b"From: a@b.c", b"To: open: x@y.z, w@v.u"],
    "8bit": [
        b"Subject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln",
        b"From: J\xc3\xb6rg M\xc3\xbcller <jm@example.de>",
        b"To: \"Ren\xe9 Latin1\" <rene@example.fr>",
        b"Cc: j\xc3\xb6rg@ex\xc3\xa4mple.de",
        b"Message-ID: <\xc3\xa9t\xc3\xa9@example.com>"],
    "quotes": [
        b"Subject: he said \"hi\" and \\ left",
        b"From: \"a \\\"q\\\" b\" <q@x.org>",
        b"To: \"back\\\\slash\" <b@x.org>",
        b"Cc: \"five\"\"\"\"\"quotes\" <f@x.org>",
        b"Date: \"quoted\" \\date"],
    "many-quotes": [b"Subject: \"a\" \"b\" \"c\"", b"From: x@y.z"],
    "folded": [
        b"Subject: a folded\r\n\tsubject with a tab\r\n  and spaces",
        b"From: Folded\r\n Name <f@x.org>",
        b"To: one@x.org,\r\n two@x.org,\r\n\tThree <three@x.org>",
        b"Date: Thu, 15 Feb 2007\r\n 01:02:03 +0200",
        b"Message-ID:\r\n <folded@id>"],
    "multiple-from": [
        b"From: First <first@x.org>",
        b"Subject: first subject",
        b"From: Second <second@x.org>, Third <third@x.org>",
        b"Subject: second subject",
        b"Date: one", b"Date: two"],
    "empty-subject": [b"Subject:", b"From: a@b.c", b"To:", b"Cc: "],
    "blank-subject": [b"Subject:    ", b"From: a@b.c"],
    "spaces-subject": [b"Subject:   lots   of \t  blanks   ",
                       b"From: a@b.c"],
    "rfc2047": [
        b"Subject: =?UTF-8?B?R3LDvMOfZQ==?= and =?ISO-8859-1?Q?J=F6rg?=",
        b"From: =?ISO-8859-1?Q?J=F6rg?= <j@x.de>",
        b"To: \"=?UTF-8?Q?Z=C3=BC?=\" <z@x.de>"],
    "syntax": [
        b"From: joe@",
        b"To: <a@b",
        b"Cc: a@b c@d, , e@f",
        b"Bcc: Name <>",
        b"Reply-To: @only.domain"],
    "syntax2": [b"From: <>", b"To: ,", b"Cc: \"unterminated <x@y>",
                b"Sender: a@b@c"],
    "route": [b"From: <@r1.example,@r2.example:u@d.example>",
              b"To: Name <@r.example:u@d.example>",
              b"Cc: <@bad:>"],
    "comments": [b"From: joe@example.com (Joe Bloggs)",
                 b"To: (lead) x@y.z (trail), Name (c) <n@m.o>",
                 b"Subject: (not a comment)"],
    "literal-domain": [b"From: user@[192.168.1.1]",
                       b"To: \"john doe\"@example.com",
                       b"Cc: john.q.public@example.com"],
    "ids": [b"From: a@b.c",
            b"In-Reply-To: <a@b> <c@d>  (comment)",
            b"Message-ID:   <spaced@id>   "],
    "case": [b"SUBJECT: upper", b"from: lower@x.org", b"TO: UP@X.ORG",
             b"message-id: <case@id>", b"REPLY-to: r@x.org"],
    "long": [b"Subject: " + b"long " * 300,
             b"From: \"" + b"n" * 500 + b"\" <long@x.org>"],
    "specials": [b"Subject: {5}\r\n braces",
                 b"From: \"paren ( and )\" <p@x.org>",
                 b"To: \"NIL\" <nil@x.org>"],
    "words": [b"From: user", b"To: Undisclosed recipients",
              b"Cc: \"john doe\"", b"Bcc: \"quoted\" and words",
              b"Reply-To: a b c, d@e.f", b"Sender: word (comment)"],
    "group-broken": [b"From: a@b.c", b"To: g: bad@, ok@x.y, <z;",
                     b"Cc: h: \"q\";, tail@x.y", b"Bcc: :;"],
    "routes-broken": [b"From: <@r1.example x@y.z>", b"To: <@:u@d.example>",
                      b"Cc: <@r.example,u@d.example>",
                      b"Bcc: <@r.example:>"],
    "empty-group-sender": [b"From: a@b.c", b"Sender: empty:;",
                           b"Reply-To: (only a comment)"],
    "nul": [b"Subject: a\x00b", b"From: \"n\x00l\" <n@x.org>"],
    "ctl": [b"Subject: tab\there and \x01ctl", b"From: a@b.c"],
}


def _multipart(hdr, eol=b"\r\n"):
    lines = list(hdr) + [
        b"MIME-Version: 1.0",
        b"Content-Type: multipart/mixed; boundary=\"env-b1\"",
        b"", b"--env-b1", b"Content-Type: text/plain; charset=us-ascii",
        b"", b"see the attachment", b"--env-b1",
        b"Content-Type: application/octet-stream; name=\"e.com\"",
        b"Content-Disposition: attachment; filename=\"e.com\"",
        b"", EICAR, b"--env-b1--", b""]
    return eol.join(lines)


def _body(hdr):
    """A single part whose body is EICAR: denied."""
    return b"\r\n".join(list(hdr) + [b"", EICAR, b""])


def _messages():
    out = {}
    for name, hdr in HEADERS.items():
        out["strip-" + name] = _multipart(hdr)
    for name in ("full", "folded", "8bit", "quotes", "groups", "none"):
        out["deny-" + name] = _body(HEADERS[name])
    for name in ("full", "folded", "8bit"):
        out["lf-" + name] = _multipart(
            [h.replace(b"\r\n", b"\n") for h in HEADERS[name]], b"\n")
    return out


MESSAGES = _messages()


def _run(conf, name, data, action):
    src = os.path.join(C.path, "env-%s.eml" % name)
    out = os.path.join(C.path, "env-%s.out" % name)
    with open(src, "wb") as f:
        f.write(data)
    if os.path.exists(out):
        os.unlink(out)
    r = subprocess.run([gateway.IMAPGWD, "-f", conf, "-a", action, "-S", src,
                        "--json", "-o", out], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    rep = corpus.parse_json(r.stdout)
    assert rep is not None, "%s: no report: %r %r" % (name, r.stdout[-500:],
                                                      r.stderr[-1500:])
    msg = None
    if os.path.exists(out):
        with open(out, "rb") as f:
            msg = f.read()
    return rep, msg


def envelope_item(r):
    """The raw bytes of the ENVELOPE value of a FETCH response."""
    raw = b"".join(r.parts)
    i = raw.index(b"ENVELOPE (") + len(b"ENVELOPE ")
    return imap_list(raw, i)


def imap_list(raw, i):
    """raw[i:j] for the parenthesized list that starts at i: quoted
    strings and literals skipped whole."""
    depth, j = 0, i
    while True:
        c = raw[j:j + 1]
        if c == b"":
            raise ValueError("unterminated list at %d" % i)
        if c == b"(":
            depth += 1
        elif c == b")":
            depth -= 1
            if depth == 0:
                return raw[i:j + 1]
        elif c == b'"':
            j += 1
            while raw[j:j + 1] != b'"':
                j += 2 if raw[j:j + 1] == b"\\" else 1
        elif c == b"{":
            k = raw.index(b"}\r\n", j)
            j = k + 3 + int(raw[j + 1:k]) - 1
        j += 1


@pytest.fixture(scope="module")
def dovecot():
    d = dovecot_mod.Dovecot(users={USER: PW}).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def runs():
    """{name: (report, rewritten bytes)}: the messages above, and the
    corpus entries a fetch rewrites (as test_pipeline.py ran them)."""
    conf = corpus.offline_config(C)
    out = {}
    for name, data in MESSAGES.items():
        out[name] = _run(conf, name, data, corpus.ACT_AV)
    jobs = [(e, "fetch", "1") for e in C.entries
            if not e.heavy and not all(a["verdict"] == "clean"
                                       for a in e.alternatives())]
    for (name, _, _), r in corpus.offline_runs(C, jobs).items():
        out["corpus-" + name] = (r.report, r.out)
    return out


@pytest.fixture(scope="module")
def reference(dovecot, runs):
    """{name: Dovecot's ENVELOPE bytes} of every rewritten message."""
    names = sorted(n for n, (rep, msg) in runs.items()
                   if rep and rep.get("verdict") == "changed" and msg)
    c = RawIMAP(dovecot.port, timeout=60)
    try:
        c.login(USER, PW)
        for n in names:
            c.append("INBOX", runs[n][1], literal_plus=True)
        c.command("SELECT INBOX")
        st, rs = c.command("FETCH 1:* (ENVELOPE BODY.PEEK[])")
        got = {}
        for r in rs:
            if b" FETCH " not in r.line[:20]:
                continue
            seq = int(r.line.split()[1])
            got[names[seq - 1]] = (envelope_item(r), r.literals[-1])
        assert len(got) == len(names), (len(got), len(names))
        return got
    finally:
        c.logout()


def test_verdicts(runs):
    """Every crafted message is rewritten (strip or deny) and its report
    carries an envelope; no other verdict has one."""
    for name in MESSAGES:
        rep, msg = runs[name]
        assert rep.get("verdict") == "changed", (name, rep)
        assert rep.get("action") == ("deny" if name.startswith("deny-")
                                     else "strip"), (name, rep)
        assert isinstance(rep.get("envelope"), str), (name, rep)
        assert msg, name
    for name, (rep, msg) in runs.items():
        if rep and rep.get("verdict") != "changed":
            assert "envelope" not in rep, (name, rep)


@pytest.mark.parametrize("name", sorted(MESSAGES) + sorted(
    "corpus-" + e.name for e in C.entries
    if not e.heavy and not all(a["verdict"] == "clean"
                               for a in e.alternatives())))
def test_envelope_matches_dovecot(runs, reference, name):
    rep, msg = runs[name]
    if not rep or rep.get("verdict") != "changed":
        pytest.skip("%s: verdict %s" % (name, rep and rep.get("verdict")))
    env, stored = reference[name]
    # Dovecot serves what it stored with CRLF line ends, NUL as 0x80.
    served = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert stored == served.replace(b"\0", b"\x80"), \
        "%s: Dovecot stored other bytes" % name
    ours = rep["envelope"].encode("latin-1")
    assert ours == env, "%s:\n scand   %r\n dovecot %r" % (name, ours, env)
