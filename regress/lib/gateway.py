"""Start build/imapgwd for tests and the benchmark.

    gw = Gateway(servers={"dovecot": [dovecot.address]},
                 policies=[policy("imap-in", port, "dovecot")]).start()
    ... gw.port("imap-in"), gw.log_text(), gw.ctl("status") ...
    gw.stop()

Each gateway gets its own directory (chroot, state_dir, control socket,
config and stderr log) under /run (root-owned, not world-writable, so that a
daemon checking the ownership of every path component of its chroot accepts
it), falling back to /tmp.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from dovecot import die_with_parent, ensure_system_user, is_listening

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Overridable to test other builds (e.g. an installed imapgwd).
IMAPGWD = os.environ.get("IMAPGWD", os.path.join(TOP, "build", "imapgwd"))
IMAPGWD_HOOKS = os.environ.get(
    "IMAPGWD_HOOKS", os.path.join(TOP, "build", "test", "imapgwd-hooks"))
IMAPGWCTL = os.environ.get("IMAPGWCTL",
                           os.path.join(TOP, "build", "imapgwctl"))
GW_USER = "_imapgw"

ROLES = ("netd", "scand", "tlsd")


def policy(name, port, to, disposition="allow", frm=("any",),
           idle_timeout="30m", action=None, **extra):
    """A policy mapping; action (a proxy action name) and any extra keys
    are added only when given."""
    p = {"name": name, "listen": ["127.0.0.1:%d" % port],
         "from": list(frm), "to": to, "disposition": disposition,
         "idle_timeout": idle_timeout}
    if action is not None:
        p["action"] = action
    p.update(extra)
    return p


def _q(s):
    return '"%s"' % str(s).replace("\\", "\\\\").replace('"', '\\"')


def _scalar(v):
    """Plain scalar when that is unambiguous, else double-quoted."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*|[0-9]+[smhdKMG]", str(v)):
        return str(v)
    return _q(v)


def _flow(v):
    if isinstance(v, dict):
        return "{ " + ", ".join("%s: %s" % (k, _flow(x))
                                for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[ " + ", ".join(_flow(x) for x in v) + " ]"
    return _scalar(v)


# The EICAR test string, and ClamAV signatures the tests write themselves
# (no network: no freshclam).  ndb: name:target:offset:hex.
EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!"
         b"$H+H*")
TEST_ACTION = "test-scan"
VIRUS_NAME = "Imapgw.Test.EICAR"     # what the deny message must name


def _b64(data):
    import base64
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _headers(n, subject, extra=b""):
    return (b"From: Mallory <mallory@example.org>\r\n"
            b"To: Alice <alice@example.org>\r\n"
            b"Cc: Bob <bob@example.org>\r\n"
            b"Subject: " + subject + b"\r\n"
            b"Date: Wed, 03 Jan 2024 12:%02d:00 +0100\r\n" % (n % 60) +
            b"Message-ID: <imapgw-eicar-%d@example.org>\r\n" % n + extra)


def eicar_attachment_message(n=0, pad=0):
    """multipart/mixed: a text part, EICAR as a base64 attachment
    (eicar.com), and a clean base64 attachment of pad random bytes (default
    a few hundred) after it."""
    import random
    rng = random.Random(1000 + n)
    clean = bytes(rng.getrandbits(8) for _ in range(pad or 300 + n))
    b = b"=_eicar%d" % n
    return (_headers(n, b"invoice %d with attachment" % n,
                     b"MIME-Version: 1.0\r\n"
                     b"Content-Type: multipart/mixed; boundary=\"" + b +
                     b"\"\r\n") + b"\r\n"
            b"This is a multi-part message in MIME format.\r\n"
            b"--" + b + b"\r\n"
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            b"Please find the invoice attached.\r\n\r\n"
            b"--" + b + b"\r\n"
            b"Content-Type: application/octet-stream; name=\"eicar.com\"\r\n"
            b"Content-Disposition: attachment; filename=\"eicar.com\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + _b64(EICAR) +
            b"--" + b + b"\r\n"
            b"Content-Type: application/pdf; name=\"report.pdf\"\r\n"
            b"Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + _b64(clean) +
            b"--" + b + b"--\r\n")


def eicar_body_message(n=0):
    """A single-part text/plain message whose body is EICAR."""
    return (_headers(n, b"plain eicar %d" % n) + b"\r\n" + EICAR + b"\r\n")


def large_multipart_message(n, size, infected=False):
    """About size bytes: a text part and base64 attachments of random
    bytes of about 1 MB each; with infected, EICAR is the second
    attachment."""
    import random
    rng = random.Random(2000 + n)
    b = b"=_large%d" % n
    parts = [b"Content-Type: text/plain; charset=utf-8\r\n"
             b"Content-Transfer-Encoding: 8bit\r\n\r\n"
             b"Large message %d \xc3\xa4\xc3\xb6\xc3\xbc\r\n" % n]
    left = size
    k = 0
    while left > 0:
        raw = min(left, 1 << 20) * 57 // 78
        parts.append(b"Content-Type: application/octet-stream; "
                     b"name=\"blob%d.bin\"\r\n"
                     b"Content-Disposition: attachment; "
                     b"filename=\"blob%d.bin\"\r\n"
                     b"Content-Transfer-Encoding: base64\r\n\r\n" % (k, k)
                     + _b64(rng.randbytes(max(raw, 1))))
        left -= 1 << 20
        k += 1
        if infected and k == 1:
            parts.append(b"Content-Type: application/x-msdownload; "
                         b"name=\"setup.exe\"\r\n"
                         b"Content-Disposition: attachment; "
                         b"filename=\"setup.exe\"\r\n"
                         b"Content-Transfer-Encoding: base64\r\n\r\n" +
                         _b64(EICAR))
    body = b"".join(b"--" + b + b"\r\n" + p for p in parts) + \
        b"--" + b + b"--\r\n"
    return (_headers(n, b"large %d%s" % (n, b" infected" if infected else b""),
                     b"MIME-Version: 1.0\r\n"
                     b"Content-Type: multipart/mixed; boundary=\"" + b +
                     b"\"\r\n") + b"\r\n" + body)


def mime_parts(msg, boundary):
    """[preamble, part 1, ..., part n, epilogue] of a multipart (bytes
    between boundary lines, the delimiter lines themselves excluded)."""
    import re
    delim = re.compile(rb"(?:\r?\n|\A)--" + re.escape(boundary) +
                       rb"(--)?[ \t]*\r?\n")
    out, pos = [], 0
    for m in delim.finditer(msg):
        out.append(msg[pos:m.start()])
        pos = m.end()
        if m.group(1):
            break
    out.append(msg[pos:])
    return out


def write_signatures(sigdir, name="imapgw-test.ndb"):
    """A ClamAV database directory with the EICAR signature."""
    os.makedirs(sigdir, exist_ok=True)
    with open(os.path.join(sigdir, name), "w") as f:
        f.write("Imapgw.Test.EICAR:0:*:%s\n" % EICAR.hex())
    os.chmod(sigdir, 0o755)
    return sigdir


def _with_database(actions, sigdir):
    """Every action scans with the test signatures unless it says
    otherwise; TEST_ACTION is the default action of the test policies."""
    out = {TEST_ACTION: {"inherit": "IMAP-Server.Standard",
                         "antivirus": {"database": sigdir}}}
    for name, body in (actions or {}).items():
        body = dict(body)
        av = dict(body.get("antivirus", {}))
        av.setdefault("database", sigdir)
        body["antivirus"] = av
        out[name] = body
    return out


def config_yaml(user, chroot, state_dir, socket_path, servers, policies,
                workers=(2, 1, 1), level="debug", connect_timeout="10s",
                log_format="text", actions=None, sigdir=None,
                certificates=None, tls_profiles=None):
    """The YAML text of a gateway config.

    servers: {name: [member, ...]} or {name: {members: [...], tls: ...,
    tls_profile: ..., server_name: ...}} (pool keys besides members).
    certificates: {name: {cert: PATH, key: PATH[, ocsp: PATH]}}.
    tls_profiles: {name: {min_version: "1.2", verify_peer: false, ...}}.

    workers: (netd, scand, tlsd), or None: not said (the default, auto).

    actions: {name: {key: value, ...}} proxy actions (flow mappings).
    sigdir: ClamAV database directory for every action (and the default
    action TEST_ACTION of policies that name none)."""
    if sigdir:
        actions = _with_database(actions, sigdir)
        policies = [dict(p, action=p.get("action", TEST_ACTION))
                    for p in policies]
    out = []
    out.append("# generated by regress/lib/gateway.py")
    out.append("user: %s" % user)
    out.append("chroot: %s" % _q(chroot))
    out.append("state_dir: %s" % _q(state_dir))
    if workers is not None:
        out.append("workers: { netd: %d, scand: %d, tlsd: %d }"
                   % tuple(workers))
    out.append("log: { target: stderr, format: %s, level: %s }"
               % (log_format, level))
    out.append("control: { socket: %s }" % _q(socket_path))
    if certificates:
        out.append("certificates:")
        for name, body in certificates.items():
            out.append("  %s: %s" % (_scalar(name), _flow(body)))
    if tls_profiles:
        out.append("tls_profiles:")
        for name, body in tls_profiles.items():
            out.append("  %s: %s" % (_scalar(name), _flow(body)))
    out.append("servers:")
    for name, members in servers.items():
        pool = dict(members) if isinstance(members, dict) else \
            {"members": list(members)}
        out.append("  %s:" % name)
        out.append("    members: %s" % _flow(list(pool.pop("members"))))
        out.append("    connect_timeout: %s" %
                   pool.pop("connect_timeout", connect_timeout))
        for k, v in pool.items():
            out.append("    %s: %s" % (k, _flow(v)))
    if actions:
        out.append("actions:")
        for name, body in actions.items():
            out.append("  %s: %s" % (_scalar(name), _flow(body)))
    else:
        out.append("actions: {}")
    out.append("policies:")
    for p in policies:
        lead = "  - "
        for k, v in p.items():
            out.append("%s%s: %s" % (lead, k, _flow(v)))
            lead = "    "
    return "\n".join(out) + "\n"


def _children(pid):
    """All descendant pids of pid (via /proc/PID/task/*/children)."""
    out = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def proc_status(pid):
    d = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            d[k] = v.strip()
    return d


def auto_workers():
    """What workers: auto (the default) gives for each role: the online
    CPUs, at most 64."""
    return max(1, min(os.sysconf("SC_NPROCESSORS_ONLN"), 64))


class Gateway:
    def __init__(self, servers, policies, binary=None, workers=(2, 1, 1),
                 connect_timeout="10s", level="debug", log_format="text",
                 actions=None, certificates=None, tls_profiles=None):
        self.servers = servers
        self.certificates = certificates
        self.tls_profiles = tls_profiles
        self.log_format = log_format
        self.actions = actions
        self.policies = policies
        self.binary = binary or IMAPGWD
        self.workers = workers
        self.connect_timeout = connect_timeout
        self.level = level
        self.proc = None
        base = "/run" if os.access("/run", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="imapgw-test.", dir=base)
        os.chmod(self.dir, 0o755)
        self.chroot = os.path.join(self.dir, "empty")
        self.state_dir = os.path.join(self.dir, "state")
        self.socket = os.path.join(self.dir, "ctl.sock")
        self.conf = os.path.join(self.dir, "imapgwd.yaml")
        self.logpath = os.path.join(self.dir, "imapgwd.log")
        for d in (self.chroot, self.state_dir):
            os.mkdir(d)
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
        self.sigdir = write_signatures(os.path.join(self.dir, "clamav"))

    # ---- config -------------------------------------------------------------

    def config_text(self, policies=None, servers=None):
        return config_yaml(GW_USER, self.chroot, self.state_dir, self.socket,
                           servers or self.servers, policies or self.policies,
                           self.workers, self.level, self.connect_timeout,
                           self.log_format, self.actions, self.sigdir,
                           self.certificates, self.tls_profiles)

    def write_config(self, text=None):
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text if text is not None else self.config_text())
        os.rename(tmp, self.conf)

    def port(self, name=None, tls=None):
        """The first listen port of policy name (of the first policy if
        None); with tls="implicit" the first implicit TLS listener, with
        tls="none" the first plain one."""
        for p in self.policies:
            if name is None or p["name"] == name:
                for entry in p["listen"]:
                    addr, mode = (entry.get("address"),
                                  entry.get("tls", "none")) \
                        if isinstance(entry, dict) else (entry, "none")
                    if tls is None or mode == tls:
                        return int(addr.rsplit(":", 1)[1])
        raise KeyError(name)

    # ---- life cycle -----------------------------------------------------------

    def start(self, timeout=20):
        if not os.path.exists(self.binary):
            raise RuntimeError("%s does not exist: run make first"
                               % self.binary)
        ensure_system_user(GW_USER)
        self.write_config()
        self.logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen([self.binary, "-d", "-f", self.conf],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     cwd="/", preexec_fn=die_with_parent)
        self.known_children = set()
        ports = [int((e.get("address") if isinstance(e, dict) else e)
                     .rsplit(":", 1)[1])
                 for p in self.policies for e in p["listen"]]
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("imapgwd exited with %s:\n%s" %
                                   (self.proc.returncode, self.log_tail()))
            if all(is_listening(p) for p in ports):
                self.wait_workers(timeout=min(5, max(1, end - time.time())))
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("imapgwd did not listen on %s within %ds:\n%s" %
                           (ports, timeout, self.log_tail()))

    def wait_workers(self, timeout=20):
        """Wait (best effort) until the configured number of children runs
        and every one of them reports ready (sandboxed), per `status`."""
        end = time.time() + timeout
        want = sum(self.workers) if self.workers is not None else \
            3 * auto_workers()
        while time.time() < end:
            if len(self.children()) >= want:
                r = self.ctl("status")
                rows = [ln for ln in r.stdout.decode().splitlines()
                        if ln.split()[:1] and ln.split()[0] in ROLES]
                if len(rows) >= want and \
                        all(" ready " in ln for ln in rows):
                    return True
            time.sleep(0.05)
        return False

    def children(self):
        if self.proc is None:
            return []
        kids = _children(self.proc.pid)
        self.known_children.update(kids)
        return kids

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, cleanup=True):
        if self.proc is not None:
            kids = set(self.children()) | self.known_children
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            # children of this gateway that outlived it (by pid, ours only)
            for k in kids:
                try:
                    with open("/proc/%d/cmdline" % k, "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if os.path.basename(self.binary).encode() in cmd:
                    try:
                        os.kill(k, signal.SIGKILL)
                    except OSError:
                        pass
            self.logf.close()
            self.proc = None
        if cleanup and self.dir and not os.environ.get("IMAPGW_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    # ---- control ------------------------------------------------------------

    def ctl(self, *args, timeout=15):
        return subprocess.run([IMAPGWCTL, "-s", self.socket] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)

    # ---- log ----------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_offset(self):
        try:
            return os.path.getsize(self.logpath)
        except OSError:
            return 0

    def log_since(self, offset):
        with open(self.logpath, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_log(self, pattern, since=0, timeout=10):
        """First match of regex pattern in the log after offset since."""
        rx = re.compile(pattern, re.M)
        end = time.time() + timeout
        while True:
            m = rx.search(self.log_since(since))
            if m or time.time() > end:
                return m
            time.sleep(0.05)

    def roles(self):
        """{pid: role} of live children, from `role[pid]` log prefixes and
        from each child's command line / comm."""
        pids = self.children()
        out = {}
        for role, pid in re.findall(r"\b(netd|scand|tlsd)\[(\d+)\]",
                                    self.log_text()):
            if int(pid) in pids:
                out[int(pid)] = role
        for pid in pids:
            if pid in out:
                continue
            for fn in ("cmdline", "comm"):
                try:
                    with open("/proc/%d/%s" % (pid, fn), "rb") as f:
                        txt = f.read().replace(b"\0", b" ").decode(
                            errors="replace")
                except OSError:
                    continue
                m = re.search(r"\b(netd|scand|tlsd)\b", txt)
                if m:
                    out[pid] = m.group(1)
                    break
        return out

    def pids_of(self, role):
        return sorted(p for p, r in self.roles().items() if r == role)

    def worker_rows(self):
        """{"scand-0": (pid, state), ..., "loader": (pid, state)}, from
        imapgwctl status."""
        out = self.ctl("status").stdout.decode(errors="replace")
        rows = {}
        for ln in out.splitlines():
            f = ln.split()
            if len(f) >= 5 and f[0] in ("scand", "loader"):
                name = "loader" if f[0] == "loader" else "scand-" + f[1]
                rows[name] = (int(f[2]), f[4])
        return rows

    def wait_until(self, pred, timeout, what):
        """pred()'s first true value within timeout seconds; else
        AssertionError naming what, with the status and the log's end."""
        end = time.time() + timeout
        while time.time() < end:
            v = pred()
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s:\n%s\n%s" % (
            what, self.ctl("status").stdout.decode(errors="replace"),
            self.log_tail()))
