"""Real IMAP clients through the gateway: curl, mbsync, fetchmail.

Each result is compared with Dovecot's BODY[] fetched directly, after
undoing what the client itself does (curl: nothing; mbsync: LF line ends
and an X-TUID header; fetchmail: LF line ends and a Received header on top).
"""

import os
import re
import shutil
import subprocess

import pytest

import mailgen
from clients import mbsync_pull
from rawimap import RawIMAP

NMSG = 6


def _seed(dovecot, user):
    """Append test messages directly; returns {uid: BODY[]} as stored."""
    c = RawIMAP(dovecot.port)
    try:
        c.login(user, "secret")
        for m in mailgen.messages(NMSG, seed=7):
            c.append("INBOX", m)
    finally:
        c.logout()
    return dovecot.fetch_bodies(user)


def _lf_hashes(bodies):
    return sorted(mailgen.sha(b.replace(b"\r\n", b"\n")) for b in bodies)


def _need(tool):
    if shutil.which(tool) is None:
        pytest.fail("%s is not installed (make deps installs it)" % tool)


def test_curl_fetch_by_uid(gw, dovecot):
    _need("curl")
    direct = _seed(dovecot, "curler")
    for uid in sorted(direct)[:3]:
        r = subprocess.run(
            ["curl", "-sS", "--max-time", "30", "--user", "curler:secret",
             "imap://127.0.0.1:%d/INBOX;UID=%d" % (gw.port(), uid)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert r.returncode == 0, r.stderr
        assert mailgen.sha(r.stdout) == mailgen.sha(direct[uid]), uid
    # a custom command, as in the demo
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "--user", "curler:secret",
         "imap://127.0.0.1:%d/INBOX" % gw.port(), "-X", "FETCH 1:* (FLAGS)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(b"FETCH (FLAGS") == len(direct), r.stdout


def test_mbsync_pull(gw, dovecot, tmp_path):
    direct = _seed(dovecot, "syncer")
    # mbsync stores LF line ends (undone by _lf_hashes)
    got = list(mbsync_pull(tmp_path, gw.port(), "syncer", "secret").values())
    assert len(got) == len(direct)
    assert _lf_hashes(got) == _lf_hashes(direct.values())


def test_fetchmail_keep(gw, dovecot, tmp_path):
    """fetchmail fetches BODY.PEEK[HEADER] and BODY.PEEK[TEXT] separately."""
    _need("fetchmail")
    direct = _seed(dovecot, "fetcher")
    out = tmp_path / "out"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        "poll 127.0.0.1 service %d protocol IMAP auth password timeout 30\n"
        '  user "fetcher" there with password "secret" is "root" here\n'
        "  options keep fetchall sslproto '' no rewrite\n"
        "  mda \"/bin/sh -c 'cat > %s/m.$$'\"\n" % (gw.port(), out))
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path))
    r = subprocess.run(["fetchmail", "-f", str(rc), "--idfile",
                        str(tmp_path / "ids"), "--pidfile",
                        str(tmp_path / "pid")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    got = []
    for f in os.listdir(out):
        b = (out / f).read_bytes()
        b = re.sub(rb"\AReceived:[^\n]*\n(?:[ \t][^\n]*\n)*", b"", b)
        got.append(b)
    assert len(got) == len(direct)
    assert _lf_hashes(got) == _lf_hashes(direct.values())
