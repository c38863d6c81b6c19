"""Real IMAP clients run by the tests: mbsync (isync) pulling a mailbox
into a maildir.  One config writer and one runner for every test that
uses it."""

import os
import re
import shutil
import subprocess

MBSYNCRC = """\
IMAPAccount a
Host %(host)s
Port %(port)d
User %(user)s
Pass %(pw)s
SSLType %(ssltype)s
%(cafile)sAuthMechs LOGIN
Timeout %(timeout)d

IMAPStore remote
Account a

MaildirStore local
Path %(dir)s/
Inbox %(dir)s/INBOX
%(maxsize)s
Channel ch
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
"""

TUID = re.compile(rb"(?m)^X-TUID: [^\n]*\n")


def mbsync_pull(workdir, port, user, pw, host="127.0.0.1", ssltype="None",
                cafile=None, maxsize=None, timeout=30):
    """Pull INBOX with mbsync into workdir/maildir (a new directory);
    {file name: bytes} of what it stored, the X-TUID line mbsync adds to
    each header removed.  AssertionError with mbsync's output if it
    fails or is not installed."""
    assert shutil.which("mbsync"), \
        "mbsync is not installed (make deps installs it)"
    mdir = os.path.join(str(workdir), "maildir")
    os.mkdir(mdir)
    rc = os.path.join(str(workdir), "mbsyncrc")
    with open(rc, "w") as f:
        f.write(MBSYNCRC % {
            "host": host, "port": port, "user": user, "pw": pw,
            "ssltype": ssltype, "timeout": timeout, "dir": mdir,
            "cafile": "CertificateFile %s\n" % cafile if cafile else "",
            "maxsize": "MaxSize %s\n" % maxsize if maxsize else ""})
    r = subprocess.run(["mbsync", "-c", rc, "-a"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=4 * timeout)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    files = {}
    for sub in ("cur", "new"):
        d = os.path.join(mdir, "INBOX", sub)
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                files[name] = TUID.sub(b"", f.read(), count=1)
    return files
