"""Test certificates made with the openssl command line.

    pki = CertFactory(dirpath)        # a test CA in dirpath (ca.crt, ca.key)
    s = pki.server("server")          # CN/SAN localhost + IP 127.0.0.1
    s.cert, s.key, s.chain            # leaf, key (0600), leaf + CA
    pki.server("mail2", names=["mail2.test"])
    pki.server("expired", expired=True)
    pki.server("wrongname", names=["wrong.example"], ips=())
    pki.self_signed("selfsigned")
    pki.ocsp_response(s)              # DER file: a good OCSP response

Leaves are signed with `openssl ca` (a tiny index.txt, so that an OCSP
response can be produced with `openssl ocsp` against it).  Every key file is
mode 0600, owned by root.  Nothing here reaches the network.
"""

import os
import subprocess

OPENSSL = "openssl"

_CA_CONF = """\
[ ca ]
default_ca = testca

[ testca ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
certificate = {dir}/ca.crt
private_key = {dir}/ca.key
default_md = sha256
default_days = 30
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no

[ anything ]
commonName = supplied
organizationName = optional

[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
"""

_CA_EXT = """\
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""


def run(args, **kw):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" %
                           (" ".join(args), r.returncode,
                            r.stdout.decode(errors="replace")))
    return r.stdout.decode(errors="replace")


class Cert:
    """One certificate: paths of the leaf, the key, the leaf followed by
    the CA (what a server sends), and the names it was made for."""

    def __init__(self, name, cert, key, chain, names, ips, ca_signed=True):
        self.name = name
        self.cert = cert
        self.key = key
        self.chain = chain
        self.names = list(names)
        self.ips = list(ips)
        self.ca_signed = ca_signed

    def key_body(self):
        """The base64 body of the PEM key (first long line), to look for
        in process memory."""
        with open(self.key) as f:
            lines = [ln.strip() for ln in f if not ln.startswith("-----")]
        return "".join(lines)

    def fingerprint(self):
        out = run([OPENSSL, "x509", "-in", self.cert, "-noout",
                   "-fingerprint", "-sha256"])
        return out.strip().split("=", 1)[1]

    def pem(self):
        with open(self.cert) as f:
            return f.read()

    def __repr__(self):
        return "Cert(%s)" % self.name


class CertFactory:
    def __init__(self, dirpath, ca_cn="imapgw test CA"):
        self.dir = os.path.abspath(dirpath)
        os.makedirs(os.path.join(self.dir, "newcerts"), exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "ca.cnf")
        with open(self.conf, "w") as f:
            f.write(_CA_CONF.format(dir=self.dir) + _CA_EXT)
        with open(os.path.join(self.dir, "index.txt"), "w"):
            pass
        with open(os.path.join(self.dir, "index.txt.attr"), "w") as f:
            f.write("unique_subject = no\n")
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("1000\n")
        self.ca_cert = os.path.join(self.dir, "ca.crt")
        self.ca_key = os.path.join(self.dir, "ca.key")
        run([OPENSSL, "req", "-x509", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "30",
             "-subj", "/CN=%s" % ca_cn, "-config", self.conf,
             "-extensions", "v3_ca"])
        os.chmod(self.ca_key, 0o600)
        self.certs = {}

    def _key(self, path, kind="ec"):
        if kind == "rsa":
            run([OPENSSL, "genpkey", "-algorithm", "RSA",
                 "-pkeyopt", "rsa_keygen_bits:2048", "-out", path])
        else:
            run([OPENSSL, "genpkey", "-algorithm", "EC",
                 "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", path])
        os.chmod(path, 0o600)

    @staticmethod
    def _san(names, ips):
        return ", ".join(["DNS:%s" % n for n in names] +
                         ["IP:%s" % i for i in ips])

    def server(self, name, names=("localhost",), ips=("127.0.0.1",),
               cn=None, expired=False, days=30, kind="ec"):
        """A leaf signed by the test CA for names/ips (SAN), CN the first
        name.  expired: valid in 2020 only."""
        cn = cn or (list(names) + list(ips) + [name])[0]
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".crt")
        ext = os.path.join(self.dir, name + ".ext")
        self._key(key, kind)
        with open(ext, "w") as f:
            f.write("[ leaf ]\nbasicConstraints = critical, CA:false\n"
                    "keyUsage = critical, digitalSignature, "
                    "keyEncipherment\nextendedKeyUsage = serverAuth\n"
                    "subjectKeyIdentifier = hash\n"
                    "authorityKeyIdentifier = keyid\n")
            san = self._san(names, ips)
            if san:
                f.write("subjectAltName = %s\n" % san)
        run([OPENSSL, "req", "-new", "-key", key, "-out", csr,
             "-subj", "/CN=%s" % cn, "-config", self.conf])
        args = [OPENSSL, "ca", "-batch", "-notext", "-config", self.conf,
                "-in", csr, "-out", crt, "-extfile", ext,
                "-extensions", "leaf"]
        if expired:
            args += ["-startdate", "20200101000000Z",
                     "-enddate", "20200201000000Z"]
        else:
            args += ["-days", str(days)]
        run(args)
        chain = os.path.join(self.dir, name + ".chain.crt")
        with open(chain, "w") as out:
            for p in (crt, self.ca_cert):
                with open(p) as f:
                    out.write(f.read())
        c = Cert(name, crt, key, chain, names, ips)
        self.certs[name] = c
        return c

    def self_signed(self, name, names=("localhost",), ips=("127.0.0.1",)):
        """A self-signed certificate for the right names (not from the
        test CA)."""
        key = os.path.join(self.dir, name + ".key")
        crt = os.path.join(self.dir, name + ".crt")
        self._key(key)
        run([OPENSSL, "req", "-x509", "-new", "-key", key, "-out", crt,
             "-days", "30", "-subj", "/CN=%s" % names[0],
             "-config", self.conf,
             "-addext", "subjectAltName = %s" % self._san(names, ips)])
        c = Cert(name, crt, key, crt, names, ips, ca_signed=False)
        self.certs[name] = c
        return c

    def ocsp_response(self, cert, out=None):
        """A DER OCSP response "good" for cert, signed by the test CA from
        the CA's index (openssl ocsp as a one-shot responder)."""
        out = out or os.path.join(self.dir, cert.name + ".ocsp.der")
        req = os.path.join(self.dir, cert.name + ".ocsp.req")
        run([OPENSSL, "ocsp", "-issuer", self.ca_cert, "-cert", cert.cert,
             "-no_nonce", "-reqout", req])
        run([OPENSSL, "ocsp", "-index", os.path.join(self.dir, "index.txt"),
             "-rsigner", self.ca_cert, "-rkey", self.ca_key,
             "-CA", self.ca_cert, "-reqin", req, "-respout", out,
             "-ndays", "7"])
        return out


def install(cert, dst_cert, dst_key, chain=True):
    """Copy a certificate (with the chain) and its key over dst paths
    (rename, key 0600): what an operator does before a reload."""
    for src, dst, mode in ((cert.chain if chain else cert.cert, dst_cert,
                            0o644), (cert.key, dst_key, 0o600)):
        with open(src, "rb") as f:
            data = f.read()
        tmp = dst + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.rename(tmp, dst)


if __name__ == "__main__":
    import sys
    import tempfile
    import time
    t0 = time.time()
    d = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    f = CertFactory(d)
    s = f.server("server")
    f.server("mail2", names=["mail2.test"], ips=())
    f.server("expired", expired=True)
    f.server("wrongname", names=["wrong.example"], ips=())
    f.self_signed("selfsigned")
    print(f.ocsp_response(s))
    print(d, "%.2fs" % (time.time() - t0))
