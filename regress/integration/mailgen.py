"""Deterministic random messages for byte-transparency tests.

Content a relay can get wrong: 8-bit bytes, lines longer than 1000
characters, CRLF and bare LF mixed, base64 attachments of random bytes, and
body lines that look like IMAP (tagged responses, literals `{n}`, `{n+}`,
`~{n}`, `)`, `* BYE`), which a gateway must never parse as protocol because
they travel inside literals.  No NUL and no bare CR: those are not allowed in
IMAP literals (RFC 3501 4.3) and servers reject or rewrite them.
"""

import base64
import hashlib
import random

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett "
         "kilo lima mike november oscar papa quebec romeo sierra tango "
         "uniform victor whiskey xray yankee zulu").split()

IMAPISH = [
    b"* BYE [UNAVAILABLE] not really",
    b"t1 OK LOGIN completed",
    b"A001 FETCH 1:* (BODY[])",
    b"* 1 FETCH (BODY[] {12}",
    b"a APPEND INBOX {5+}",
    b"+ go ahead",
    b")",
    b"* 99 EXISTS",
    b"DONE",
    b"~{3}",
    b"x LOGOUT",
]


def normalize(msg):
    """What Dovecot returns for a stored message: every line ends in CRLF."""
    return msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def sha(b):
    return hashlib.sha256(b).hexdigest()


def _text_line(rng, eightbit):
    n = rng.choice((0, 5, 40, 72, 76, 200, 998, 999, 1000, 1001, 1500, 4000))
    if eightbit:
        pool = list(range(0x20, 0x7f)) + list(range(0x80, 0x100))
    else:
        pool = list(range(0x20, 0x7f))
    return bytes(rng.choice(pool) for _ in range(n))


def _eol(rng):
    return b"\r\n" if rng.random() < 0.6 else b"\n"


def _body_text(rng, lines, eightbit):
    out = []
    for _ in range(lines):
        r = rng.random()
        if r < 0.08:
            out.append(rng.choice(IMAPISH))
        else:
            out.append(_text_line(rng, eightbit))
        out.append(_eol(rng))
    return b"".join(out)


def _attachment(rng, size):
    data = bytes(rng.getrandbits(8) for _ in range(size))
    b64 = base64.encodebytes(data)        # 76-char lines, LF
    if rng.random() < 0.5:
        b64 = b64.replace(b"\n", b"\r\n")
    return b64


def message(rng, i):
    """Message number i (bytes)."""
    kind = i % 4
    subj = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
    hdr = [
        b"From: Sender %d <sender%d@example.org>" % (i, i),
        b"To: Alice <alice@example.org>",
        b"Subject: msg " + str(i).encode() + b" " + subj.encode()
        + (b" \xe4\xf6\xfc" if kind == 0 else b""),
        b"Date: Tue, 02 Jan 2024 %02d:%02d:00 +0000" % (i % 24, i % 60),
        b"Message-ID: <imapgw-test-%d-%d@example.org>" % (i, rng.getrandbits(32)),
        b"X-Long: " + b"h" * rng.choice((10, 990, 2000)),
    ]
    eol = _eol(rng)
    if kind == 0:
        hdr += [b"MIME-Version: 1.0",
                b"Content-Type: text/plain; charset=iso-8859-1",
                b"Content-Transfer-Encoding: 8bit"]
        body = _body_text(rng, rng.randint(1, 60), True)
    elif kind == 1:
        hdr += [b"MIME-Version: 1.0",
                b'Content-Type: multipart/mixed; boundary="=_b%d"' % i]
        att = _attachment(rng, rng.randint(100, 150000))
        body = (b"--=_b%d\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n" % i
                + _body_text(rng, rng.randint(1, 20), True)
                + b"--=_b%d\r\nContent-Type: application/octet-stream; "
                b'name="data%d.bin"\r\nContent-Disposition: attachment; '
                b'filename="data%d.bin"\r\n'
                b"Content-Transfer-Encoding: base64\r\n\r\n" % (i, i, i)
                + att + b"--=_b%d--\r\n" % i)
    elif kind == 2:
        body = _body_text(rng, rng.randint(1, 200), False)
    else:
        hdr += [b"MIME-Version: 1.0",
                b'Content-Type: multipart/mixed; boundary="outer%d"' % i]
        att = _attachment(rng, rng.randint(1000, 60000))
        body = (b"--outer%d\nContent-Type: multipart/alternative; "
                b'boundary="inner%d"\n\n--inner%d\nContent-Type: text/plain\n\n'
                % (i, i, i)
                + _body_text(rng, 5, False)
                + b"--inner%d\nContent-Type: text/html\n\n<p>hi</p>\n"
                b"--inner%d--\n--outer%d\n"
                b"Content-Type: image/png; name=x.png\n"
                b"Content-Transfer-Encoding: base64\n\n" % (i, i, i)
                + att + b"--outer%d--\n" % i)
    return eol.join(hdr) + eol + eol + body


def messages(n, seed=20240102):
    rng = random.Random(seed)
    return [message(rng, i) for i in range(n)]
