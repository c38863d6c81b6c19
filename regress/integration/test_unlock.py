"""imapgwctl unlock: open a locked attachment with the gateway's key.

No daemon is needed.  The locked sample comes from the unit test
build/test/test_lock run with IMAPGW_LOCK_SAMPLE_DIR (it creates
lock.key with lock_key_load and seals a sample with lock_seal, the code
scand uses); the tests open it as a raw file, as base64 text, from stdin,
with the key of a config's state_dir, and refuse a wrong key, altered
files, bad key files and existing outputs.  The format documented in
common/lock.h is also checked independently with python3-cryptography
when it is installed.
"""

import base64
import hashlib
import hmac
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from dovecot import free_port
from gateway import GW_USER, IMAPGWCTL, TOP, config_yaml, policy

TEST_LOCK = os.path.join(TOP, "build", "test", "test_lock")
AUTH_FAILED = b"authentication failed (wrong key or altered file)"
NOT_LOCKED = b"not an imapgw locked file"


def _run(argv, stdin=None, timeout=30):
    return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, cwd="/")


def _out(r):
    return "rc=%s\nstdout=%r\nstderr=%r" % (r.returncode, r.stdout[:200],
                                            r.stderr)


@pytest.fixture(scope="module")
def sample():
    """A directory with lock.key, sample.locked, sample.orig and the
    original name and type."""
    if not os.path.exists(TEST_LOCK):
        r = subprocess.run(["make", "-s", "build/test/test_lock"], cwd=TOP,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert r.returncode == 0, r.stdout.decode(errors="replace")
    d = tempfile.mkdtemp(prefix="imapgw-unlock.")
    os.chmod(d, 0o700)
    env = dict(os.environ, IMAPGW_LOCK_SAMPLE_DIR=d)
    r = subprocess.run([TEST_LOCK], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, _out(r)
    s = {"dir": d, "key": os.path.join(d, "lock.key"),
         "blob": os.path.join(d, "sample.locked")}
    with open(os.path.join(d, "sample.orig"), "rb") as f:
        s["orig"] = f.read()
    with open(s["blob"], "rb") as f:
        s["blob_bytes"] = f.read()
    with open(os.path.join(d, "sample.meta"), "rb") as f:
        s["name"], s["type"] = f.read().decode().splitlines()
    yield s
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def work():
    d = tempfile.mkdtemp(prefix="imapgw-unlock-work.")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _summary(s):
    return ("original: name=%s, type=%s, %d bytes\n"
            % (s["name"], s["type"], len(s["orig"]))).encode()


def _mime_base64(data):
    """The body of a MIME part: base64 in lines of 76, CRLF."""
    b = base64.b64encode(data)
    return b"".join(b[i:i + 76] + b"\r\n" for i in range(0, len(b), 76))


def _write(path, data, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def test_sample_is_a_locked_file(sample):
    st = os.stat(sample["key"])
    assert stat.S_ISREG(st.st_mode) and st.st_size == 32
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert sample["blob_bytes"].startswith(b"IMAPGWL1")
    assert sample["orig"] not in sample["blob_bytes"]


def test_unlock_raw_to_file(sample, work):
    out = os.path.join(work, "report.pdf")
    r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], "-o", out,
              sample["blob"]])
    assert r.returncode == 0, _out(r)
    assert r.stdout == b"", _out(r)
    assert r.stderr == _summary(sample), _out(r)
    with open(out, "rb") as f:
        assert f.read() == sample["orig"]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_unlock_raw_to_stdout(sample):
    r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], sample["blob"]])
    assert r.returncode == 0, _out(r)
    assert r.stdout == sample["orig"]
    assert r.stderr == _summary(sample), _out(r)


@pytest.mark.parametrize("form", ["mime", "oneline", "spaces"])
def test_unlock_base64_file(sample, work, form):
    if form == "mime":
        text = _mime_base64(sample["blob_bytes"])
    elif form == "oneline":
        text = base64.b64encode(sample["blob_bytes"])
    else:
        b = base64.b64encode(sample["blob_bytes"]).decode()
        text = ("\n  " + " \t".join(b[i:i + 60]
                                   for i in range(0, len(b), 60))
                + "\n\n").encode()
    path = _write(os.path.join(work, "part.b64"), text, 0o644)
    r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], path])
    assert r.returncode == 0, _out(r)
    assert r.stdout == sample["orig"]
    assert r.stderr == _summary(sample), _out(r)


@pytest.mark.parametrize("form", ["raw", "base64"])
def test_unlock_stdin(sample, work, form):
    data = sample["blob_bytes"] if form == "raw" else \
        _mime_base64(sample["blob_bytes"])
    out = os.path.join(work, "out")
    r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], "-o", out, "-"],
             stdin=data)
    assert r.returncode == 0, _out(r)
    assert r.stderr == _summary(sample), _out(r)
    with open(out, "rb") as f:
        assert f.read() == sample["orig"]


def test_unlock_key_of_the_config(sample, work):
    """Without -k: lock.key in the state_dir of -f's configuration."""
    state = os.path.join(work, "state")
    os.mkdir(state, 0o700)
    shutil.copy2(sample["key"], os.path.join(state, "lock.key"))
    conf = os.path.join(work, "imapgwd.yaml")
    _write(conf, config_yaml(GW_USER, os.path.join(work, "empty"), state,
                             os.path.join(work, "ctl.sock"),
                             {"dovecot": ["127.0.0.1:%d" % free_port()]},
                             [policy("imap-in", free_port(), "dovecot")])
           .encode(), 0o644)
    r = _run([IMAPGWCTL, "-f", conf, "unlock", sample["blob"]])
    assert r.returncode == 0, _out(r)
    assert r.stdout == sample["orig"]
    # no key there: a clear message, nothing written
    os.unlink(os.path.join(state, "lock.key"))
    out = os.path.join(work, "out")
    r = _run([IMAPGWCTL, "-f", conf, "unlock", "-o", out, sample["blob"]])
    assert r.returncode == 1, _out(r)
    assert (os.path.join(state, "lock.key") + ": No such file").encode() \
        in r.stderr, _out(r)
    assert not os.path.exists(out)
    # a broken configuration is reported, not guessed around
    _write(conf, b"state_dir: [\n", 0o644)
    r = _run([IMAPGWCTL, "-f", conf, "unlock", sample["blob"]])
    assert r.returncode == 1, _out(r)
    assert b"cannot load the configuration" in r.stderr, _out(r)
    assert conf.encode() in r.stderr, _out(r)


def test_unlock_wrong_key(sample, work):
    other = _write(os.path.join(work, "other.key"), os.urandom(32))
    out = os.path.join(work, "out")
    r = _run([IMAPGWCTL, "unlock", "-k", other, "-o", out, sample["blob"]])
    assert r.returncode == 1, _out(r)
    assert AUTH_FAILED in r.stderr, _out(r)
    assert b"original:" not in r.stderr, _out(r)
    assert not os.path.exists(out)
    r = _run([IMAPGWCTL, "unlock", "-k", other, sample["blob"]])
    assert r.returncode == 1, _out(r)
    assert r.stdout == b"", _out(r)
    assert AUTH_FAILED in r.stderr, _out(r)


def test_unlock_refuses_to_overwrite(sample, work):
    out = _write(os.path.join(work, "exists"), b"keep me", 0o644)
    r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], "-o", out,
              sample["blob"]])
    assert r.returncode == 1, _out(r)
    assert b"already exists" in r.stderr, _out(r)
    with open(out, "rb") as f:
        assert f.read() == b"keep me"
    # nor through a symbolic link, even a dangling one
    link = os.path.join(work, "link")
    os.symlink(os.path.join(work, "target"), link)
    r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], "-o", link,
              sample["blob"]])
    assert r.returncode == 1, _out(r)
    assert not os.path.exists(os.path.join(work, "target"))


def test_unlock_altered_files(sample, work):
    blob = sample["blob_bytes"]
    for i in (9, 30, len(blob) // 2, len(blob) - 1):
        b = bytearray(blob)
        b[i] ^= 0x01
        path = _write(os.path.join(work, "altered"), bytes(b), 0o644)
        r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], path])
        assert r.returncode == 1, _out(r)
        assert AUTH_FAILED in r.stderr, _out(r)
        assert r.stdout == b"", _out(r)
    for cut in (len(blob) - 1, 100, 30):
        path = _write(os.path.join(work, "short"), blob[:cut], 0o644)
        r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], path])
        assert r.returncode == 1, _out(r)
        assert AUTH_FAILED in r.stderr or NOT_LOCKED in r.stderr, _out(r)
        assert r.stdout == b"", _out(r)
    # base64 of an altered file
    b = bytearray(blob)
    b[-5] ^= 0x80
    path = _write(os.path.join(work, "altered.b64"), _mime_base64(bytes(b)),
                  0o644)
    r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], path])
    assert r.returncode == 1 and AUTH_FAILED in r.stderr, _out(r)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\x00\x01\xff",
                                     b"SGVsbG8=\n", b"QUJD=x\n"])
def test_unlock_not_a_locked_file(sample, work, content):
    path = _write(os.path.join(work, "junk"), content, 0o644)
    r = _run([IMAPGWCTL, "unlock", "-k", sample["key"], path])
    assert r.returncode == 1, _out(r)
    assert NOT_LOCKED in r.stderr, _out(r)
    assert r.stdout == b"", _out(r)


def test_unlock_bad_key_files(sample, work):
    key = open(sample["key"], "rb").read()
    cases = [
        (_write(os.path.join(work, "k644"), key, 0o644), b"mode 0644"),
        (_write(os.path.join(work, "k31"), key[:31]), b"31 bytes"),
        (_write(os.path.join(work, "k33"), key + b"x"), b"33 bytes"),
        (os.path.join(work, "missing"), b"No such file"),
        (work, b"not a regular file"),
    ]
    for path, msg in cases:
        r = _run([IMAPGWCTL, "unlock", "-k", path, sample["blob"]])
        assert r.returncode == 1, _out(r)
        assert msg in r.stderr, (path, _out(r))
        assert r.stdout == b"", _out(r)


@pytest.mark.parametrize("argv", [["unlock"], ["unlock", "-k"],
                                  ["unlock", "-x", "f"],
                                  ["unlock", "a", "b"]])
def test_unlock_usage(argv):
    r = _run([IMAPGWCTL] + argv)
    assert r.returncode == 1, _out(r)
    assert b"usage: imapgwctl" in r.stderr, _out(r)


def test_unlock_missing_input(sample, work):
    r = _run([IMAPGWCTL, "unlock", "-k", sample["key"],
              os.path.join(work, "nothing")])
    assert r.returncode == 1, _out(r)
    assert b"No such file" in r.stderr, _out(r)


def test_format_as_documented(sample):
    """common/lock.h's format, decrypted without imapgw's code."""
    aead = pytest.importorskip(
        "cryptography.hazmat.primitives.ciphers.aead")
    hashes = pytest.importorskip("cryptography.hazmat.primitives.hashes")
    hkdf = pytest.importorskip("cryptography.hazmat.primitives.kdf.hkdf")
    key = open(sample["key"], "rb").read()

    def derive(info):
        return hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                         info=info).derive(key)

    blob = sample["blob_bytes"]
    magic, nonce, body = blob[:8], blob[8:20], blob[20:]
    assert magic == b"IMAPGWL1"
    pt = aead.AESGCM(derive(b"imapgw lock enc")).decrypt(nonce, body, magic)
    assert hmac.new(derive(b"imapgw lock iv"), pt,
                    hashlib.sha256).digest()[:12] == nonce
    fl = int.from_bytes(pt[:4], "big")
    name = pt[4:4 + fl]
    cl = int.from_bytes(pt[4 + fl:8 + fl], "big")
    ctype = pt[8 + fl:8 + fl + cl]
    assert name.decode() == sample["name"]
    assert ctype.decode() == sample["type"]
    assert pt[8 + fl + cl:] == sample["orig"]
