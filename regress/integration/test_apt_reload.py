"""APT Blocker's database is read again with the configuration.

An attachment whose SHA-256 the database rates low passes (the finding is
logged); the file is rewritten to rate it high and the gateway reloaded
(SIGHUP): the same message, fetched again, arrives with the attachment
replaced by the deny text naming the threat.  The parent reads the file
(scand cannot), so a reload is what brings the new hashes to scand.
"""

import base64
import hashlib
import imaplib
import os

import pytest

from dovecot import free_port
from gateway import policy

pytestmark = pytest.mark.gateway

PW = "secret"
USER = "aptreload"
PAYLOAD = b"a harmless-looking tool the APT database will rate\n" * 20
MSG = (b"From: Eve <eve@example.org>\r\n"
       b"To: aptreload@example.org\r\n"
       b"Subject: the tool\r\n"
       b"Message-ID: <imapgw-apt-reload@example.org>\r\n"
       b"MIME-Version: 1.0\r\n"
       b"Content-Type: multipart/mixed; boundary=\"aa\"\r\n\r\n"
       b"--aa\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
       b"--aa\r\nContent-Type: application/octet-stream; name=\"tool.dat\"\r\n"
       b"Content-Disposition: attachment; filename=\"tool.dat\"\r\n"
       b"Content-Transfer-Encoding: base64\r\n\r\n"
       + base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")
       + b"--aa--\r\n")


def _fetch(port):
    c = imaplib.IMAP4("127.0.0.1", port)
    try:
        c.login(USER, PW)
        c.select("INBOX", readonly=True)
        typ, data = c.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK", data
        return data[0][1]
    finally:
        c.logout()


def _write_db(path, level):
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    with open(path + ".tmp", "w") as f:
        f.write("# test\n%s %s Tool.Dual.Use\n" % (sha, level))
    os.rename(path + ".tmp", path)


def test_apt_database_reloaded(dovecot, make_gateway, tmp_path):
    c = dovecot.connect(USER)
    try:
        typ, data = c.select("INBOX")
        if int(data[0]):
            c.store("1:*", "+FLAGS", r"(\Deleted)")
            c.expunge()
    finally:
        c.logout()
    dovecot.append(USER, MSG)
    db = str(tmp_path / "apt.db")
    _write_db(db, "low")
    port = free_port()
    g = make_gateway(
        actions={"apt": {"inherit": "IMAP-Server.Standard",
                         "apt_blocker": {"enabled": True, "database": db,
                                         "actions": {"high": "strip",
                                                     "medium": "strip",
                                                     "low": "allow"}}}},
        policies=[policy("imap-in", port, "dovecot", action="apt")])
    off = g.log_offset()
    body = _fetch(port)
    assert body == MSG, body[:300]
    m = g.wait_log(r"message judged.*apt:threat=Tool\.Dual\.Use,level=low",
                   since=off)
    assert m, g.log_text()[-2000:]

    _write_db(db, "high")
    off = g.log_offset()
    g.reload()
    assert g.wait_log(r"configuration reloaded", since=off)
    body = _fetch(port)
    assert base64.encodebytes(PAYLOAD)[:60] not in body
    assert b"APT threat Tool.Dual.Use (high)" in body
    assert b"Subject: the tool\r\n" in body
    assert g.wait_log(r"message judged.*apt:threat=Tool\.Dual\.Use,"
                      r"level=high.*action=strip", since=off)
