"""imapgw TLS benchmark (make bench): TLS termination by imapgwd (tlsd)
against Dovecot's own imaps port and against stunnel4 in front of
Dovecot's plain port, all in the same run, all with the same certificate
(RSA 2048 by default, BENCH_TLS_KEY=ec for ECDSA P-256; a leaf of a test
CA, the chain leaf + CA sent by every server).

Paths (loopback only):

  dovecot   Dovecot's implicit TLS port (imaps, ssl = yes)
  stunnel   stunnel4 (foreground, written config) terminating TLS in front
            of Dovecot's plain port
  gw auto  imapgwd's implicit TLS listener (tls mode enabled) in front of
            Dovecot's plain port, as configured by default: workers auto
            (netd, scand and tlsd each as many as online CPUs) and the
            pool's connect not said (lazy: the client is greeted with the
            greeting Dovecot gave before, and Dovecot is met at the first
            command, which the handshake clients never send)
  gw N/S/T  the same with netd/scand/tlsd worker counts N/S/T; several
            worker sets can be compared in one run
  gw ... eager
            the same gateway, another listener whose pool has connect:
            eager: Dovecot is met for every client, once its handshake is
            done (handshakes only)

1. Full TLS handshakes per second (no resumption: a new session every
   time), TLS 1.3 and TLS 1.2 separately: BENCH_TLS_CLIENTS processes
   (Python ssl, no certificate verification on the client, so that the
   client's share of the CPU stays small) connect in a loop for
   BENCH_TLS_SECONDS; a handshake counts when the IMAP greeting has been
   read over TLS (each path does the same work: TLS, a backend
   connection where there is one, Dovecot's greeting; but the gateway's
   lazy paths: TLS and the gateway's copy of that greeting), then the
   client resets the connection (SO_LINGER 0: no TIME_WAIT pile-up).  Besides
   the rate: CPU microseconds per handshake of the TLS front (Dovecot's
   processes for the dovecot path; stunnel; imapgwd and its workers) and
   of Dovecot behind it, from /proc, and of the client processes, and
   how often a client waited per handshake (its voluntary context
   switches: each flight or greeting that arrives apart is one).
2. Bulk fetch over TLS: UID FETCH 1:* BODY.PEEK[] of a mailbox of
   BENCH_TLS_MESSAGES (50) messages of BENCH_TLS_SIZE (1 MB), MB/s of
   literal data (login/select not timed).  The gateway relays with an
   action without antivirus (as bench.py), and, as an extra row, with
   the scanning action: its first fetch judges every message (one
   sample, "first"), later ones answer from the verdict cache.

Medians of BENCH_TLS_REPS repetitions, the paths interleaved within
each repetition.  Ratios: handshakes gateway/dovecot, default (lazy) and
eager (target >= 1.0) and bulk gateway/stunnel (target >= 1.0), printed,
never asserted.

Environment: BENCH_TLS_KEY (rsa | ec), BENCH_TLS_VERSIONS ("1.3,1.2"),
BENCH_TLS_CLIENTS (8), BENCH_TLS_SECONDS (1.5), BENCH_TLS_REPS (5),
BENCH_TLS_MESSAGES (50), BENCH_TLS_SIZE (1048576), BENCH_TLS_WORKERS
(netd,scand,tlsd sets separated by ";", "auto" for the default, which
is 2,2,2 on 2 CPUs; default "auto;1,1,1;1,1,2"; every set is a gateway of
its own, all measured in the run; the first is the main one of the
ratios unless BENCH_TLS_MAIN names another), BENCH_TLS_STUNNEL_DEBUG
(stunnel's log level, 5 = its default: a few lines per connection, to a
file, syslog off; the gateway logs at info to a file), BENCH_TLS_SKIP
(comma list of handshake, bulk), IMAPGWD (build/imapgwd).

Bulk rows also give the client's CPU seconds per fetch: a path that
sends small TLS records costs the client more (one SSL_read per record).
"""

import multiprocessing as mp
import os
import random
import resource
import shutil
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import time

import benchlib as bl
from benchlib import dv, gwm
import certs as certmod       # noqa: E402  (regress/lib, via benchlib)
from rawimap import first_line  # noqa: E402  (regress/lib, via benchlib)

KEY = os.environ.get("BENCH_TLS_KEY", "rsa")
VERSIONS = [v.strip() for v in
            os.environ.get("BENCH_TLS_VERSIONS", "1.3,1.2").split(",")
            if v.strip()]
CLIENTS = bl.env_int("BENCH_TLS_CLIENTS", 8)
SECONDS = float(os.environ.get("BENCH_TLS_SECONDS", "1.5"))
REPS = bl.env_int("BENCH_TLS_REPS", 5, minimum=1)
NMSG = bl.env_int("BENCH_TLS_MESSAGES", 50)
SIZE = bl.env_int("BENCH_TLS_SIZE", 1 << 20)


def worker_set(text):
    """None for "auto" (the default: workers not said), else (N, S, T)."""
    text = text.strip()
    return None if text == "auto" else tuple(int(x) for x in text.split(","))


WORKERS = [worker_set(w)
           for w in os.environ.get("BENCH_TLS_WORKERS",
                                   "auto;1,1,1;1,1,2").split(";")
           if w.strip()]
MAIN = os.environ.get("BENCH_TLS_MAIN")
STUNNEL_DEBUG = os.environ.get("BENCH_TLS_STUNNEL_DEBUG", "5")
SKIP = bl.env_set("BENCH_TLS_SKIP")
USER, PW = "tlsbench", "bench"
TLSV = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


# ---- clients ----------------------------------------------------------------

def client_ctx(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version:
        ctx.minimum_version = ctx.maximum_version = TLSV[version]
    return ctx


def tls_connect(port, ctx, timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(s, server_hostname="localhost")


def _handshaker(port, version, start, end, out):
    """One client process: full handshakes until end, each counted when
    the greeting line has been read."""
    ctx = client_ctx(version)
    n = errs = 0
    linger = struct.pack("ii", 1, 0)
    while time.time() < start:
        time.sleep(0.001)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    while time.time() < end:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = ctx.wrap_socket(s, server_hostname="localhost")
            if first_line(t).startswith(b"* OK"):
                n += 1
            else:
                errs += 1
            t.close()
        except OSError:
            errs += 1
            try:
                s.close()
            except Exception:
                pass
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    out.send((n, errs, (ru1.ru_utime + ru1.ru_stime) -
              (ru0.ru_utime + ru0.ru_stime), ru1.ru_nvcsw - ru0.ru_nvcsw))
    out.close()


class Path:
    def __init__(self, name, port, front_pids, dove_sid, tls_front=True):
        self.name = name
        self.port = port
        self.front_pids = front_pids     # callable: pids of the TLS front
        self.dove_sid = dove_sid
        self.tls_front = tls_front       # False: the front is Dovecot


def handshake_sample(path, version, seconds=SECONDS):
    """(handshakes/s, errors, front CPU us/hs, dovecot CPU us/hs,
    client CPU us/hs, client waits (voluntary context switches) per
    handshake)."""
    start = time.time() + 0.3
    end = start + seconds
    pipes, procs = [], []
    for _ in range(CLIENTS):
        r, w = mp.Pipe(duplex=False)
        p = mp.Process(target=_handshaker,
                       args=(path.port, version, start, end, w))
        p.start()
        w.close()
        pipes.append(r)
        procs.append(p)
    while time.time() < start:
        time.sleep(0.005)
    dpids = bl.session_pids(path.dove_sid)
    # with the CPU of ended children: Dovecot's master starts more
    # imap-login processes under load, and they end
    d0 = bl.cpu_seconds(dpids, children=True)
    f0 = bl.cpu_seconds(path.front_pids(), children=True) \
        if path.tls_front else {}
    t0 = time.time()
    n = errs = 0
    ccpu = 0.0
    waits = 0
    for r in pipes:
        a, b, c, w = r.recv()
        n += a
        errs += b
        ccpu += c
        waits += w
    t1 = time.time()
    d1 = bl.cpu_seconds(set(dpids) | set(bl.session_pids(path.dove_sid)),
                        children=True)
    f1 = bl.cpu_seconds(path.front_pids(), children=True) \
        if path.tls_front else {}
    for p in procs:
        p.join()
    dt = max(seconds, min(t1 - t0, seconds + 1))
    nn = max(n, 1)
    dcpu = bl.cpu_delta(d0, d1, new=True)
    fcpu = bl.cpu_delta(f0, f1, new=True) if path.tls_front else dcpu
    return (n / dt, errs, fcpu * 1e6 / nn,
            (dcpu * 1e6 / nn) if path.tls_front else 0.0, ccpu * 1e6 / nn,
            waits / nn)


def probe(port, version):
    """Negotiated protocol and cipher, and the greeting, of one
    connection."""
    t = tls_connect(port, client_ctx(version), timeout=10)
    try:
        g = t.recv(4096)
        return t.version(), t.cipher()[0], g
    finally:
        t.close()


FETCH_CPU = []       # client CPU seconds of each fetch_tls


def fetch_tls(port, digest=False):
    """Seconds for UID FETCH 1:* BODY.PEEK[] over TLS (login/select not
    timed), literal bytes, digest."""
    t = tls_connect(port, client_ctx(None), timeout=120)
    f = t.makefile("rb", buffering=1 << 16)

    def cmd(line):
        tag = line.split(b" ", 1)[0]
        t.sendall(line + b"\r\n")
        while True:
            ln = f.readline()
            if not ln:
                raise EOFError("closed during %r" % line)
            if ln.startswith(tag + b" "):
                if not ln.startswith(tag + b" OK"):
                    raise RuntimeError(ln)
                return

    g = f.readline()
    if not g.startswith(b"* OK"):
        raise RuntimeError("greeting %r" % g)
    cmd(b"a LOGIN %s %s" % (USER.encode(), PW.encode()))
    cmd(b"b EXAMINE INBOX")
    c0 = time.process_time()
    dt, n, hexdigest, _ = bl.timed_fetch(t.sendall, f, digest)
    FETCH_CPU.append(time.process_time() - c0)
    try:
        cmd(b"z LOGOUT")
    except Exception:
        pass
    f.close()
    t.close()
    return dt, n, hexdigest


# ---- stunnel ----------------------------------------------------------------

class Stunnel:
    def __init__(self, cert, key, backend, workdir):
        self.port = dv.free_port()
        self.dir = workdir
        self.conf = os.path.join(workdir, "stunnel.conf")
        self.log = os.path.join(workdir, "stunnel.log")
        with open(self.conf, "w") as f:
            # syslog = no: with no syslog daemon glibc's syslog() writes
            # every line to /dev/console (a serial console here: ms per
            # line); foreground = quiet: no copy on stderr either.
            f.write("foreground = quiet\nsyslog = no\npid =\n"
                    "debug = %s\noutput = %s\n"
                    "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
                    "[imaps]\naccept = 127.0.0.1:%d\nconnect = %s\n"
                    "cert = %s\nkey = %s\n"
                    % (STUNNEL_DEBUG, self.log, self.port, backend, cert,
                       key))
        self.proc = None

    def start(self, timeout=10):
        exe = shutil.which("stunnel4") or shutil.which("stunnel")
        self.logf = open(self.log + ".stderr", "ab")
        self.proc = bl.spawn([exe, self.conf], self.logf)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                break
            if dv.is_listening(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("stunnel did not start: see %s" % self.log)

    def pids(self):
        return [self.proc.pid] if self.proc else []

    def stop(self):
        if self.proc is not None:
            bl.stop_proc(self.proc, 10)
            self.proc = None
            self.logf.close()


# ---- main -------------------------------------------------------------------

def wname(w):
    return "gw auto" if w is None else "gw %d/%d/%d" % w


def start_gateway(binary, d, cert, w):
    """A gateway with workers w (None: the default), its policies "relay"
    and "scan" through a pool that does not say connect (the default),
    "relay-eager" through one with connect: eager."""
    ports = (dv.free_port(), dv.free_port(), dv.free_port())
    tls = {"mode": "enabled", "certificate": "gateway"}
    g = gwm.Gateway(
        servers={"dove": {"members": [{"address": d.address}],
                          "tls": "none"},
                 "doveeager": {"members": [{"address": d.address}],
                               "tls": "none", "connect": "eager"}},
        certificates={"gateway": {"cert": cert.chain, "key": cert.key}},
        actions={"relay": {"inherit": "IMAP-Server.Standard",
                           "antivirus": {"enabled": False}}},
        policies=[
            gwm.policy("relay", ports[0], "dove", action="relay",
                       listen=[{"address": "127.0.0.1:%d" % ports[0],
                                "tls": "implicit"}], tls=tls),
            gwm.policy("scan", ports[1], "dove",
                       listen=[{"address": "127.0.0.1:%d" % ports[1],
                                "tls": "implicit"}], tls=tls),
            gwm.policy("relay-eager", ports[2], "doveeager", action="relay",
                       listen=[{"address": "127.0.0.1:%d" % ports[2],
                                "tls": "implicit"}], tls=tls)],
        binary=binary, level="info", workers=w)
    g.start()
    return g


def main():
    binary = bl.preflight("tls bench")
    if binary is None:
        return 1
    if not (shutil.which("stunnel4") or shutil.which("stunnel")):
        print("tls bench: stunnel4 not installed (Debian package stunnel4, "
              "make deps): no stunnel comparison", file=sys.stderr)
        return 1
    main_w = worker_set(MAIN) if MAIN else WORKERS[0]
    if main_w not in WORKERS:
        WORKERS.insert(0, main_w)
    mp.set_start_method("fork")
    work = tempfile.mkdtemp(prefix="imapgw-tlsbench.")
    os.chmod(work, 0o755)
    pki = certmod.CertFactory(os.path.join(work, "pki"))
    cert = pki.server("server", kind=KEY)
    keydesc = "RSA 2048" if KEY == "rsa" else "ECDSA P-256"
    d = dv.tls_dovecot(cert.chain, cert.key, users={USER: PW}).start()
    st = None
    gws = {}
    try:
        st = Stunnel(cert.chain, cert.key, d.address, work).start()
        for w in WORKERS:
            gws[w] = start_gateway(binary, d, cert, w)
        dsid = d.proc.pid

        def gw_pids(g):
            return lambda: [g.proc.pid] + g.children()

        paths = [Path("dovecot", d.imaps_port, lambda: [], dsid,
                      tls_front=False),
                 Path("stunnel", st.port, st.pids, dsid)]
        for w, g in gws.items():
            paths.append(Path(wname(w), g.port("relay", tls="implicit"),
                              gw_pids(g), dsid))
        # handshakes only: logged in, a lazy pool is an eager one
        hpaths = list(paths)
        for w, g in gws.items():
            hpaths.append(Path(wname(w) + " eager",
                               g.port("relay-eager", tls="implicit"),
                               gw_pids(g), dsid))

        print("tls bench: certificate %s (leaf + CA chain, the same file "
              "for all); %d client processes; %d CPUs; imapgwd %s"
              % (keydesc, CLIENTS, os.cpu_count(), binary))
        print("tls bench: worker sets netd/scand/tlsd: %s (auto: %d each, "
              "the default); stunnel debug = %s, gateway log level info"
              % (", ".join(wname(w)[3:] for w in WORKERS),
                 gwm.auto_workers(), STUNNEL_DEBUG))
        broken = []
        for v in VERSIONS:
            for p in hpaths:
                try:
                    ver, ciph, greet = probe(p.port, v)
                except (OSError, ssl.SSLError) as e:
                    ver, ciph, greet = "-", "-", repr(e).encode()
                # the first TLS record of the greeting, which may not be
                # all of it
                print("  %-10s %-8s %-28s %s" % (p.name, ver, ciph,
                                                 greet[:40]))
                if not greet.startswith(b"* OK"):
                    broken.append("%s (TLS %s)" % (p.name, v))
        print(flush=True)
        if broken:
            print("tls bench: no IMAP greeting over TLS from %s: see the "
                  "logs (IMAPGW_KEEP=1 keeps them)" % ", ".join(broken),
                  file=sys.stderr)
            for g in gws.values():
                print(g.log_text()[-2000:], file=sys.stderr)
            return 1

        hs = {}
        if "handshake" not in SKIP:
            for v in VERSIONS:
                # warm-up (process pools, caches)
                for p in hpaths:
                    handshake_sample(p, v, seconds=0.3)
            for _ in range(REPS):
                for v in VERSIONS:
                    for p in hpaths:
                        hs.setdefault((v, p.name), []).append(
                            handshake_sample(p, v))
            for v in VERSIONS:
                rows = []
                for p in hpaths:
                    s = hs[(v, p.name)]
                    rows.append((p.name, (
                        statistics.median(x[0] for x in s),
                        max(x[0] for x in s),
                        sum(x[1] for x in s),
                        statistics.median(x[2] for x in s),
                        statistics.median(x[3] for x in s),
                        statistics.median(x[4] for x in s),
                        statistics.median(x[5] for x in s))))
                bl.table("== full TLS %s handshakes (greeting read), %d "
                      "clients, %.1fs x %d" % (v, CLIENTS, SECONDS, REPS),
                      rows, ("hs/s (med)", "hs/s (best)", "errors",
                             "front us/hs", "dove us/hs", "client us/hs",
                             "client waits"),
                      ("%12.0f", "%12.0f", "%12d", "%12.0f", "%12.0f",
                       "%12.0f", "%12.2f"))

        bulk = {}
        first_scan = {}
        total = 0
        if "bulk" not in SKIP:
            print("tls bench: building mailbox: %d messages of %d bytes ..."
                  % (NMSG, SIZE), flush=True)
            rng = random.Random(42)
            bl.append_all(d.port, USER, PW,
                          (bl.make_message(rng, i, SIZE, "tls bench", "tlsb")
                           for i in range(NMSG)))
            bpaths = [(p.name, p.port) for p in paths]
            _, n0, h0 = fetch_tls(d.imaps_port, digest=True)
            total = n0
            for name, port in bpaths[1:]:
                _, n1, h1 = fetch_tls(port, digest=True)
                if (n1, h1) != (n0, h0):
                    print("WARNING: %s delivered other bytes (%d vs %d)"
                          % (name, n1, n0))
            for w, g in gws.items():
                # the first fetch through the scanning policy judges every
                # message; later ones hit the verdict cache
                dt, n1, h1 = fetch_tls(g.port("scan", tls="implicit"),
                                       digest=True)
                first_scan[w] = dt
                bpaths.append((wname(w) + " scan", g.port("scan",
                                                          tls="implicit")))
            bcpu = {}
            for _ in range(REPS):
                for name, port in bpaths:
                    bulk.setdefault(name, []).append(fetch_tls(port)[0])
                    bcpu.setdefault(name, []).append(FETCH_CPU[-1])
            rows = []
            for name, _ in bpaths:
                rows.append((name, bl.throughput(bulk[name], total) +
                             (statistics.median(bcpu[name]),)))
            for w, dt in first_scan.items():
                rows.append((wname(w) + " scan 1st", (dt, dt,
                                                      total / 1e6 / dt,
                                                      float("nan"))))
            bl.table("== bulk UID FETCH 1:* BODY.PEEK[] over TLS, %.1f MB, "
                  "%d reps (scan: later fetches answer from the verdict "
                  "cache; scan 1st: the judging fetch, one sample)"
                  % (total / 1e6, REPS), rows,
                  ("best s", "median s", "MB/s (med)", "client CPU s"),
                  ("%12.3f", "%12.3f", "%12.1f", "%12.3f"))

        mw = wname(main_w)
        print("== ratios, median (best); worker set %s is the main one; "
              "the issue's targets: >= 1.0" % mw)

        def hsr(v, name, f):
            return f(x[0] for x in hs[(v, name)])

        for v in VERSIONS if hs else ():
            for w in WORKERS:
                for name in (wname(w), wname(w) + " eager"):
                    print("handshakes TLS %s %s/dovecot: %.2f (%.2f)   "
                          "stunnel/dovecot: %.2f (%.2f)%s"
                          % (v, name,
                             hsr(v, name, statistics.median) /
                             hsr(v, "dovecot", statistics.median),
                             hsr(v, name, max) / hsr(v, "dovecot", max),
                             hsr(v, "stunnel", statistics.median) /
                             hsr(v, "dovecot", statistics.median),
                             hsr(v, "stunnel", max) /
                             hsr(v, "dovecot", max),
                             "  <- main" if w == main_w else ""))
        if bulk:
            med = {k: statistics.median(v) for k, v in bulk.items()}
            best = {k: min(v) for k, v in bulk.items()}
            for w in WORKERS:
                n = wname(w)
                print("bulk %s/stunnel: %.2f (%.2f)   %s/dovecot: %.2f   "
                      "scan cached/stunnel: %.2f   scan 1st/stunnel: "
                      "%.2f%s"
                      % (n, med["stunnel"] / med[n],
                         best["stunnel"] / best[n], n,
                         med["dovecot"] / med[n],
                         med["stunnel"] / med[n + " scan"],
                         med["stunnel"] / first_scan[w],
                         "  <- main" if w == main_w else ""))
        return 0
    finally:
        for g in gws.values():
            g.stop()
        if st is not None:
            st.stop()
        d.stop()
        if not os.environ.get("IMAPGW_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
