"""The client proxy, run inside a network namespace (test_client_proxy.py
starts it with `ip netns exec`): a Dovecot on 127.0.0.2:993 with a
certificate of a test server CA, the gateway listening on
127.0.0.1:10993 with `to: original-destination` and a Proxy Authority,
and an nft rule that redirects root's connections to 127.0.0.2:993 to
the gateway (the gateway's own connections run as its user and are not
redirected).  A client connects to 127.0.0.2:993 as if nothing were in
between.  Prints one JSON object with what it saw; exits 0 when it could
run the scenario at all.
"""

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import dovecot as dovecot_mod  # noqa: E402
import gateway as gateway_mod  # noqa: E402

IMAPGWD = os.path.join(HERE, "..", "..", "build", "imapgwd")
GW_PORT = 10993
PW = "secret"


def sh(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, **kw)


def make_ca(d, name, cn):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
       "-days", "30", "-subj", "/CN=" + cn,
       "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(key, 0o600)
    return crt, key


def make_leaf(d, ca, name, san):
    key, csr = os.path.join(d, name + ".key"), os.path.join(d, name + ".csr")
    crt, ext = os.path.join(d, name + ".crt"), os.path.join(d, name + ".ext")
    sh("openssl", "req", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
       "-subj", "/CN=mail.test")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % san)
    sh("openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
       "-CAcreateserial", "-days", "30", "-out", crt, "-extfile", ext)
    os.chmod(key, 0o600)
    return crt, key


def read_until(sock, tag):
    data = b""
    while not data.endswith(b"\r\n") or (tag + b" ") not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def main():
    out = {}
    d = tempfile.mkdtemp(prefix="imapgw-proxy.")
    os.chmod(d, 0o755)
    sh("ip", "link", "set", "lo", "up")
    server_ca = make_ca(d, "server-ca", "imapgw test server CA")
    proxy_ca = make_ca(d, "proxy-ca", "imapgw test Proxy Authority")
    # argv[1]: the real server's names ("DNS:mail.test" alone: only the
    # name the client asks for can verify it)
    san = sys.argv[1] if len(sys.argv) > 1 else "DNS:mail.test,IP:127.0.0.2"
    leaf = make_leaf(d, server_ca, "server", san)
    conf = dovecot_mod.TLS_CONF.format(cert=leaf[0], key=leaf[1],
                                       imaps_port=993)
    conf = conf.replace("address = 127.0.0.1\n    port = 993",
                        "address = 127.0.0.2\n    port = 993")
    dove = dovecot_mod.Dovecot(users={"proxied": PW}, extra_conf=conf)
    dove.start()
    gateway_mod.ensure_system_user(gateway_mod.GW_USER)
    orig = gateway_mod.eicar_attachment_message(7)
    dove.append("proxied", [orig])
    out["orig_has_eicar"] = base64.b64encode(gateway_mod.EICAR)[:40] in orig
    sigdir = gateway_mod.write_signatures(os.path.join(d, "clamav"))
    state = os.path.join(d, "state")
    empty = os.path.join(d, "empty")
    os.makedirs(empty)
    yaml = """\
user: {user}
chroot: {empty}
state_dir: {state}
control: {{ socket: {d}/ctl.sock }}
workers: {{ netd: 1, scand: 1, tlsd: 1 }}
log: {{ target: stderr, level: info }}
certificates:
  proxy-ca: {{ cert: {pca}, key: {pkey} }}
actions:
  client-av: {{ inherit: IMAP-Client.Standard,
               antivirus: {{ database: {sigdir} }} }}
tls_profiles:
  outbound: {{ ca_file: {sca} }}
policies:
  - name: client-proxy
    listen: [ {{ address: "127.0.0.1:{port}", tls: implicit }} ]
    from: [ any ]
    to: original-destination
    action: client-av
    tls: {{ authority: proxy-ca, profile: outbound }}
""".format(user=gateway_mod.GW_USER, empty=empty, state=state, d=d,
           pca=proxy_ca[0], pkey=proxy_ca[1], sca=server_ca[0],
           port=GW_PORT, sigdir=sigdir)
    with open(os.path.join(d, "gw.yaml"), "w") as f:
        f.write(yaml)
    log = open(os.path.join(d, "gw.log"), "w")
    gw = subprocess.Popen([IMAPGWD, "-d", "-f", os.path.join(d, "gw.yaml")],
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if dovecot_mod.is_listening(GW_PORT):
                break
            time.sleep(0.1)
        time.sleep(1.0)  # workers ready
        # root's connections to 127.0.0.2:993 go to the gateway
        sh("nft", "add table ip imapgw")
        sh("nft", "add chain ip imapgw out { type nat hook output "
           "priority -100 ; }")
        sh("nft", "add rule ip imapgw out ip daddr 127.0.0.2 tcp dport 993 "
           "meta skuid 0 redirect to :%d" % GW_PORT)
        ctx = ssl.create_default_context(cafile=proxy_ca[0])
        raw = socket.create_connection(("127.0.0.2", 993), timeout=20)
        tls = ctx.wrap_socket(raw, server_hostname="mail.test")
        cert = tls.getpeercert()
        out["issuer"] = dict(x[0] for x in cert["issuer"])
        out["san"] = cert.get("subjectAltName")
        out["greeting"] = tls.recv(4096).decode(errors="replace")
        tls.sendall(b"a LOGIN proxied secret\r\n")
        out["login"] = read_until(tls, b"a").decode(errors="replace")
        tls.sendall(b"b SELECT INBOX\r\n")
        read_until(tls, b"b")
        tls.sendall(b"c FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n")
        body = read_until(tls, b"c")
        out["fetch_has_eicar"] = (
            gateway_mod.EICAR in body or
            base64.b64encode(gateway_mod.EICAR)[:40] in body)
        out["fetch_has_virus_name"] = b"Imapgw.Test.EICAR" in body
        out["fetch_has_notice"] = b".locked" in body
        out["fetch_ok"] = b"c OK" in body
        tls.sendall(b"d LOGOUT\r\n")
        tls.close()
        # a client that names no server (no SNI): the real server is
        # verified by its address
        nctx = ssl.create_default_context(cafile=proxy_ca[0])
        nctx.check_hostname = False
        raw = socket.create_connection(("127.0.0.2", 993), timeout=20)
        try:
            t2 = nctx.wrap_socket(raw, server_hostname=None)
            out["nosni_greeting"] = t2.recv(4096).decode(errors="replace")
            t2.close()
        except (OSError, ssl.SSLError) as ex:
            out["nosni_error"] = repr(ex)
        # a ClientHello that never completes: ended when the connect
        # timeout (10 s) passes without more
        raw = socket.create_connection(("127.0.0.2", 993), timeout=40)
        raw.sendall(b"\x16\x03\x01\x02\x00\x01")
        t0 = time.time()
        try:
            out["stalled_answer"] = raw.recv(4096).decode(errors="replace")
        except OSError as ex:
            out["stalled_answer"] = repr(ex)
        out["stalled_secs"] = time.time() - t0
        raw.close()
        # not TLS at all: the gateway ends it without meeting the server
        raw = socket.create_connection(("127.0.0.2", 993), timeout=20)
        raw.sendall(b"a LOGIN proxied secret\r\n")
        try:
            out["plain_answer"] = raw.recv(4096).decode(errors="replace")
        except OSError as ex:
            out["plain_answer"] = repr(ex)
        raw.close()
        time.sleep(0.5)
        # the real server, as the gateway saw it
        with open(os.path.join(d, "gw.log")) as f:
            text = f.read()
        out["log_server_tls"] = [ln for ln in text.splitlines()
                                 if "server tls" in ln][:2]
        out["log_client_tls"] = [ln for ln in text.splitlines()
                                 if "client tls" in ln][:2]
        out["log_backend"] = "backend=127.0.0.2:993" in text
        out["log_verify_failed"] = [ln for ln in text.splitlines()
                                    if "certificate verify failed" in ln][:2]
        out["log_not_hello"] = [ln for ln in text.splitlines()
                                if "not a TLS ClientHello" in ln][:2]
        out["log_no_hello"] = [ln for ln in text.splitlines()
                               if "no ClientHello in time" in ln][:2]
    except Exception as ex:  # reported, the test fails on it
        out["error"] = repr(ex)
        try:
            with open(os.path.join(d, "gw.log")) as f:
                out["log_tail"] = f.read()[-4000:]
        except OSError:
            pass
    finally:
        gw.terminate()
        gw.wait(timeout=20)
        dove.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
