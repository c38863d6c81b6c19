/*
 * tlsd: contexts, handshakes both ways, the relay, and the same inside
 * tlsd's real seccomp sandbox.  The test plays netd (IMSG_TLS_START over
 * a socketpair, with the TCP socket) and the TLS peer (OpenSSL client or
 * server over loopback TCP); tlsd runs in a forked child with its event
 * loop.  Certificates are made here with the OpenSSL API.  Needs root
 * for the sandboxed run.
 */
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "../../tlsd/tlsd.h"
#include "buf.h"
#include "config.h"
#include "imsg.h"
#include "log.h"
#include "proc.h"
#include "sandbox.h"
#include "test.h"
#include "tls.h"

#define NOBODY 65534
#define RELAY_BYTES (1024 * 1024)
#define OCSP_BYTES "\x30\x03\x0a\x01\x00 test OCSP response"

/* Keys and certificates, made once. */
struct pem {
	char *data;
	size_t len;
};

static EVP_PKEY *ca_key, *srv_key, *auth_key;
static X509 *ca_cert, *srv_cert, *alt_cert, *expired_cert, *wrong_cert,
    *self_cert, *multi_cert, *cnonly_cert, *auth_cert, *short_cert;
static struct pem ca_pem, srv_chain_pem, srv_key_pem, alt_pem, auth_pem,
    auth_key_pem, short_pem;

/* multi_cert's names, as DONE has them. */
#define MULTI_NAMES \
	"DNS:mail.example.org,DNS:*.b.example,IP:192.0.2.1,IP:2001:db8::1"

static int listen_fd = -1;
static struct sockaddr_in listen_addr;

/* ---- certificates ---- */

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ext == NULL || !X509_add_ext(x, ext, -1)) {
		fprintf(stderr, "extension %s\n", value);
		exit(1);
	}
	X509_EXTENSION_free(ext);
}

/* A certificate for cn and san, valid from..to days from now, signed by
 * issuer (NULL: itself). */
static X509 *
mkcert(EVP_PKEY *key, const char *cn, const char *san, long from, long to,
    int ca, X509 *issuer, EVP_PKEY *ikey)
{
	X509 *x = X509_new();
	X509_NAME *n;
	static long serial = 1;

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), from * 86400);
	X509_gmtime_adj(X509_getm_notAfter(x), to * 86400);
	X509_set_pubkey(x, key);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(
	    n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
	add_ext(x, issuer ? issuer : x, NID_basic_constraints,
	    ca ? "critical,CA:TRUE" : "CA:FALSE");
	if (ca)
		add_ext(x, x, NID_subject_key_identifier, "hash");
	if (san)
		add_ext(x, issuer ? issuer : x, NID_subject_alt_name, san);
	if (!X509_sign(x, ikey ? ikey : key, EVP_sha256())) {
		fprintf(stderr, "sign %s\n", cn);
		exit(1);
	}
	return x;
}

static struct pem
pem_of(X509 *x, X509 *chain, EVP_PKEY *key)
{
	struct pem p;
	BIO *b = BIO_new(BIO_s_mem());
	char *d;
	long n;

	if (x)
		PEM_write_bio_X509(b, x);
	if (chain)
		PEM_write_bio_X509(b, chain);
	if (key)
		PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(b, &d);
	p.data = malloc((size_t)n);
	memcpy(p.data, d, (size_t)n);
	p.len = (size_t)n;
	BIO_free(b);
	return p;
}

static void
make_certs(void)
{
	ca_key = EVP_EC_gen("P-256");
	srv_key = EVP_EC_gen("P-256");
	ca_cert = mkcert(ca_key, "Test CA", NULL, -1, 365, 1, NULL, NULL);
	srv_cert = mkcert(srv_key, "localhost", "DNS:localhost,IP:127.0.0.1",
	    -1, 30, 0, ca_cert, ca_key);
	alt_cert = mkcert(srv_key, "mail.example.org", "DNS:mail.example.org",
	    -1, 30, 0, ca_cert, ca_key);
	expired_cert = mkcert(srv_key, "localhost",
	    "DNS:localhost,IP:127.0.0.1", -10, -1, 0, ca_cert, ca_key);
	wrong_cert = mkcert(srv_key, "wrong.example.org",
	    "DNS:wrong.example.org", -1, 30, 0, ca_cert, ca_key);
	self_cert = mkcert(srv_key, "localhost", "DNS:localhost,IP:127.0.0.1",
	    -1, 30, 0, NULL, NULL);
	multi_cert = mkcert(srv_key, "mail.example.org",
	    "DNS:mail.example.org,DNS:*.b.example,email:pm@example.org,"
	    "IP:192.0.2.1,IP:2001:0db8:0:0::1",
	    -1, 30, 0, ca_cert, ca_key);
	cnonly_cert = mkcert(
	    srv_key, "cnonly.example.org", NULL, -1, 30, 0, ca_cert, ca_key);
	auth_key = EVP_EC_gen("P-256");
	auth_cert = mkcert(
	    auth_key, "Test Proxy Authority", NULL, -1, 365, 1, NULL, NULL);
	auth_pem = pem_of(auth_cert, NULL, NULL);
	short_cert =
	    mkcert(auth_key, "Short Authority", NULL, -1, 2, 1, NULL, NULL);
	short_pem = pem_of(short_cert, NULL, NULL);
	auth_key_pem = pem_of(NULL, NULL, auth_key);
	ca_pem = pem_of(ca_cert, NULL, NULL);
	srv_chain_pem = pem_of(srv_cert, ca_cert, NULL);
	srv_key_pem = pem_of(NULL, NULL, srv_key);
	alt_pem = pem_of(alt_cert, NULL, NULL);
}

/* ---- a config as the parent would pack it for tlsd ---- */

static uint8_t *
dup_bytes(const void *p, size_t n)
{
	uint8_t *d = malloc(n);

	memcpy(d, p, n);
	return d;
}

static void
set_profile(struct cfg_tls_profile *p, const char *name, int verify, int cache)
{
	memset(p, 0, sizeof(*p));
	p->name = strdup(name);
	p->min_version = TLS1_2_VERSION;
	p->verify_peer = verify;
	p->ca_pem = dup_bytes(ca_pem.data, ca_pem.len);
	p->ca_len = ca_pem.len;
	p->session_cache = cache;
	p->session_timeout_ms = 300000;
}

/* A certificate with key (NULL: srv_key); the PEM bytes are the
 * config's own. */
static void
set_cert(struct cfg_cert *c, const char *name, const struct pem *cert,
    const struct pem *key)
{
	if (key == NULL)
		key = &srv_key_pem;
	c->name = strdup(name);
	c->cert_pem = dup_bytes(cert->data, cert->len);
	c->cert_len = cert->len;
	c->key_pem = dup_bytes(key->data, key->len);
	c->key_len = key->len;
}

static struct cfg_policy *
add_policy(
    struct config *cfg, const char *name, int cert, int profile, int authority)
{
	struct cfg_policy *pol = &cfg->policies[cfg->npolicies++];

	pol->name = strdup(name);
	pol->tls.authority_idx = authority;
	pol->tls.profileidx = profile;
	if (cert >= 0) {
		pol->tls.ncerts = 1;
		pol->tls.certidx = calloc(1, sizeof(int));
		pol->tls.certidx[0] = cert;
	}
	return pol;
}

/*
 * Certificates: main, alt (OCSP), authority (the Proxy Authority CA),
 * short (a Proxy Authority that expires in two days).
 * Policies: "imap-in" (certificates main, alt; profile default),
 * "compliant" (main; compliant_only, no session cache), "nocert" (none),
 * "proxy" (the Proxy Authority only), "proxy-cert" (authority and main),
 * "badauth" (main as its authority: not a CA), "proxy-short" (short).
 * Server pools: "verified" (default profile: verify against the CA),
 * "unverified" (verify_peer false), "plain", "original-destination:proxy"
 * (the client proxy pool of "proxy": as "verified").
 */
static struct config *
make_config(uint32_t generation)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	struct cfg_cert *c;
	struct cfg_policy *pol;

	cfg->generation = generation;
	cfg->ncerts = 4;
	cfg->certs = calloc(4, sizeof(*cfg->certs));
	set_cert(&cfg->certs[3], "short", &short_pem, &auth_key_pem);
	set_cert(&cfg->certs[0], "main", &srv_chain_pem, NULL);
	set_cert(&cfg->certs[2], "authority", &auth_pem, &auth_key_pem);
	c = &cfg->certs[1];
	set_cert(c, "alt", &alt_pem, NULL);
	c->ocsp_der = dup_bytes(OCSP_BYTES, sizeof(OCSP_BYTES) - 1);
	c->ocsp_len = sizeof(OCSP_BYTES) - 1;

	cfg->nprofiles = 3;
	cfg->profiles = calloc(3, sizeof(*cfg->profiles));
	set_profile(&cfg->profiles[0], "default", 1, 1);
	set_profile(&cfg->profiles[1], "noverify", 0, 1);
	set_profile(&cfg->profiles[2], "strict", 1, 0);
	cfg->profiles[2].compliant_only = 1;

	cfg->policies = calloc(7, sizeof(*cfg->policies));
	pol = add_policy(cfg, "imap-in", -1, 0, -1);
	pol->tls.ncerts = 2;
	pol->tls.certidx = calloc(2, sizeof(int));
	pol->tls.certidx[0] = 0;
	pol->tls.certidx[1] = 1;
	add_policy(cfg, "compliant", 0, 2, -1);
	add_policy(cfg, "nocert", -1, 0, -1);
	add_policy(cfg, "proxy", -1, 0, 2);
	add_policy(cfg, "proxy-cert", 0, 0, 2);
	add_policy(cfg, "badauth", 0, 0, 0);
	add_policy(cfg, "proxy-short", -1, 0, 3);

	cfg->nservers = 4;
	cfg->servers = calloc(4, sizeof(*cfg->servers));
	cfg->servers[0].name = strdup("verified");
	cfg->servers[0].tls = SRV_TLS_IMPLICIT;
	cfg->servers[0].profileidx = 0;
	cfg->servers[1].name = strdup("unverified");
	cfg->servers[1].tls = SRV_TLS_STARTTLS;
	cfg->servers[1].profileidx = 1;
	cfg->servers[2].name = strdup("plain");
	cfg->servers[3].name = strdup(CFG_ORIGINAL_DST ":proxy");
	cfg->servers[3].tls = SRV_TLS_IMPLICIT;
	cfg->servers[3].profileidx = 0;
	return cfg;
}

static void
free_config(struct config *cfg)
{
	size_t i;

	for (i = 0; i < cfg->ncerts; i++) {
		free(cfg->certs[i].name);
		free(cfg->certs[i].cert_pem);
		free(cfg->certs[i].key_pem);
		free(cfg->certs[i].ocsp_der);
	}
	for (i = 0; i < cfg->nprofiles; i++) {
		free(cfg->profiles[i].name);
		free(cfg->profiles[i].ca_pem);
	}
	for (i = 0; i < cfg->npolicies; i++) {
		free(cfg->policies[i].name);
		free(cfg->policies[i].tls.certidx);
	}
	for (i = 0; i < cfg->nservers; i++)
		free(cfg->servers[i].name);
	free(cfg->certs);
	free(cfg->profiles);
	free(cfg->policies);
	free(cfg->servers);
	free(cfg);
}

/* ---- tlsd in a child ---- */

struct tlsd_kid {
	pid_t pid;
	struct imsgbuf ib; /* our end: we are netd */
	int stat; /* our end of the child's status socket */
	int status;
};

static struct event_base *kid_base;
static volatile sig_atomic_t kid_sigpipes;

/* A write to a socket that is gone (tlsd ignores SIGPIPE): counted. */
static void
kid_sigpipe(int sig)
{
	kid_sigpipes++;
}

/* A byte on the status socket: tlsd's connections and the SIGPIPEs so
 * far, two uint32_t. */
static void
kid_status_cb(evutil_socket_t fd, short ev, void *arg)
{
	uint32_t st[2];
	char c;

	if (read(fd, &c, 1) != 1) {
		event_del(arg);
		return;
	}
	st[0] = tlsd_sessions();
	st[1] = (uint32_t)kid_sigpipes;
	if (write(fd, st, sizeof(st)) != sizeof(st))
		event_del(arg);
}

static void
kid_chan_closed(struct proc_chan *c)
{
	tlsd_peer_gone(c);
	proc_chan_free(c);
	event_base_loopbreak(kid_base);
}

static void
kid_run(int fd, int stat, const char *root)
{
	struct sigaction sa;
	struct proc_chan *c;
	struct config *cfg;
	struct tlsd_gen *g;
	struct event *sev;
	int sandboxed = root != NULL;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kid_sigpipe;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGPIPE, &sa, NULL);
	if ((kid_base = event_base_new()) == NULL)
		_exit(80);
	if (sandboxed &&
	    sandbox_enter_flags(ROLE_TLSD, 0, root, NOBODY, NOBODY) == -1)
		_exit(81);
	tlsd_conn_init(kid_base, 500);
	/* A new generation, built inside the sandbox as on a reload. */
	cfg = make_config(sandboxed ? 2 : 1);
	g = tlsd_gen_build(cfg);
	free_config(cfg);
	if (g == NULL)
		_exit(82);
	tlsd_set_current(g);
	tlsd_gen_unref(g);
	c = proc_chan_new(
	    kid_base, fd, 1, "netd-0", tlsd_peer_frame, kid_chan_closed, NULL);
	if (c == NULL)
		_exit(83);
	c->role = ROLE_NETD;
	c->instance = 0;
	sev = event_new(kid_base, stat, EV_READ | EV_PERSIST, kid_status_cb,
	    event_self_cbarg());
	if (sev == NULL || event_add(sev, NULL) == -1)
		_exit(84);
	event_base_dispatch(kid_base);
	event_free(sev);
	close(stat);
	tlsd_conn_free_all();
	tlsd_set_current(NULL);
	if (sandboxed)
		_exit(0); /* no leak checker here: it would need ptrace */
	/* Deferred callbacks and finalizers left in the loop. */
	event_base_loop(kid_base, EVLOOP_NONBLOCK);
	event_base_loop(kid_base, EVLOOP_NONBLOCK);
	event_base_free(kid_base);
	exit(0);
}

static const char *
mkroot(void)
{
	static char d[64];

	snprintf(d, sizeof(d), "/tmp/imapgw-tlsd.XXXXXX");
	if (mkdtemp(d) == NULL || chmod(d, 0755) == -1) {
		perror("mkroot");
		exit(1);
	}
	return d;
}

static void
kid_start(struct tlsd_kid *k, const char *root)
{
	int sp[2], st[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == -1 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, st) == -1) {
		perror("socketpair");
		exit(1);
	}
	fflush(NULL);
	if ((k->pid = fork()) == 0) {
		close(sp[0]);
		close(st[0]);
		close(listen_fd);
		kid_run(sp[1], st[1], root);
	}
	close(sp[1]);
	close(st[1]);
	k->stat = st[0];
	imsgbuf_init(&k->ib, sp[0]);
	imsgbuf_allow_fdpass(&k->ib);
}

/* Close the channel; the child ends its loop.  1 if it exited 0. */
static int
kid_end(struct tlsd_kid *k)
{
	close(k->ib.fd);
	close(k->stat);
	imsgbuf_clear(&k->ib);
	if (waitpid(k->pid, &k->status, 0) != k->pid)
		return 0;
	if (!WIFEXITED(k->status) || WEXITSTATUS(k->status) != 0)
		fprintf(stderr, "tlsd child: status 0x%x\n", k->status);
	return WIFEXITED(k->status) && WEXITSTATUS(k->status) == 0;
}

/* tlsd's connections and SIGPIPEs so far; -1 if it does not answer. */
static int
kid_status(struct tlsd_kid *k, uint32_t *sessions, uint32_t *sigpipes)
{
	struct pollfd pfd = {k->stat, POLLIN, 0};
	uint32_t st[2];

	if (write(k->stat, "?", 1) != 1 || poll(&pfd, 1, 5000) != 1 ||
	    read(k->stat, st, sizeof(st)) != sizeof(st))
		return -1;
	*sessions = st[0];
	*sigpipes = st[1];
	return 0;
}

/* Wait up to ms for tlsd to hold no connection: 1 if it came to that. */
static int
kid_idle(struct tlsd_kid *k, int ms)
{
	uint32_t n, p;
	int i;

	for (i = 0; i <= ms / 5; i++) {
		if (kid_status(k, &n, &p) == -1)
			return 0;
		if (n == 0)
			return 1;
		poll(NULL, 0, 5);
	}
	return 0;
}

/* ---- netd's side of the contract ---- */

struct done {
	uint64_t id;
	uint32_t ok, resumed;
	char *error, *version, *cipher, *sni, *subject, *names, *attest;
	int fd;
};

static void
done_clear(struct done *d)
{
	free(d->error);
	free(d->version);
	free(d->cipher);
	free(d->sni);
	free(d->subject);
	free(d->names);
	free(d->attest);
	if (d->fd != -1)
		close(d->fd);
	memset(d, 0, sizeof(*d));
	d->fd = -1;
}

static uint64_t next_id = 100;
static uint32_t start_flags; /* START's flags for the next send_start */

static int
send_start_attest(struct tlsd_kid *k, uint32_t side, const char *policy,
    const char *server, const char *name, const char *attest, int fd)
{
	struct buf b;
	int r;

	buf_init(&b, 0);
	buf_add_u64(&b, ++next_id);
	buf_add_u32(&b, side);
	buf_add_str(&b, policy);
	buf_add_str(&b, server);
	buf_add_str(&b, name);
	buf_add_str(&b, "127.0.0.1:4321");
	buf_add_str(&b, attest);
	buf_add_u32(&b, start_flags);
	r = imsg_compose(
	    &k->ib, IMSG_TLS_START, 0, fd, buf_head(&b), buf_used(&b));
	buf_free(&b);
	if (r == -1 || imsgbuf_flush(&k->ib) == -1)
		return -1;
	return 0;
}

/*
 * tlsd's attest of names for policy, as any tlsd worker with the test's
 * config makes it (the key comes from the authority's private key): made
 * here, in this process.  "" for a policy without a usable authority.
 */
static const char *
attest_of(const char *policy, const char *names, uint64_t expiry)
{
	static char out[TLS_MAX_ATTEST + 1];
	struct config *cfg = make_config(1);
	struct tlsd_gen *g = tlsd_gen_build(cfg);
	struct tlsd_policy *pol;

	free_config(cfg);
	out[0] = '\0';
	if (g != NULL && (pol = tlsd_find_policy(g, policy)) != NULL &&
	    pol->authority != NULL)
		tlsd_attest(pol, names, expiry, out);
	if (g != NULL)
		tlsd_gen_unref(g);
	return out;
}

/* START as netd sends it: names (server side) with tlsd's attest. */
static int
send_start(struct tlsd_kid *k, uint32_t side, const char *policy,
    const char *server, const char *name, int fd)
{
	return send_start_attest(k, side, policy, server, name,
	    side == TLS_SIDE_SERVER && name[0] ? attest_of(policy, name, 0)
	                                       : "",
	    fd);
}

/* Wait for TLS_DONE; -1 if the channel failed or the frame is wrong. */
static int
get_done(struct tlsd_kid *k, struct done *d)
{
	struct imsg imsg;
	struct reader rd;

	memset(d, 0, sizeof(*d));
	d->fd = -1;
	if (imsg_wait(&k->ib, &imsg, 20000) != 1)
		return -1;
	if (imsg.hdr.type != IMSG_TLS_DONE) {
		imsg_free(&imsg);
		return -1;
	}
	imsg_reader(&imsg, &rd);
	d->id = rd_u64(&rd);
	d->ok = rd_u32(&rd);
	d->error = rd_str(&rd, TLS_MAX_ERROR);
	d->version = rd_str(&rd, 64);
	d->cipher = rd_str(&rd, 128);
	d->sni = rd_str(&rd, TLS_MAX_NAME);
	d->subject = rd_str(&rd, 1024);
	d->resumed = rd_u32(&rd);
	d->names = rd_str(&rd, TLS_MAX_NAMES);
	d->attest = rd_str(&rd, TLS_MAX_ATTEST);
	d->fd = imsg.fd;
	imsg.fd = -1;
	imsg_free(&imsg);
	if (rd_end(&rd) == -1 || d->id != next_id ||
	    (d->ok != 0) != (d->fd != -1)) {
		done_clear(d);
		return -1;
	}
	return 0;
}

/* A TCP connection over loopback: *a the connecting end, *b accepted. */
static void
tcp_pair(int *a, int *b)
{
	*a = socket(AF_INET, SOCK_STREAM, 0);
	if (*a == -1 ||
	    connect(*a, (struct sockaddr *)&listen_addr, sizeof(listen_addr)) ==
	        -1 ||
	    (*b = accept(listen_fd, NULL, NULL)) == -1) {
		perror("tcp_pair");
		exit(1);
	}
}

/* ---- the TLS peer ---- */

static SSL_CTX *
client_ctx(int maxver)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	X509_STORE *st = SSL_CTX_get_cert_store(ctx);

	X509_STORE_add_cert(st, ca_cert);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (maxver) {
		SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
		SSL_CTX_set_max_proto_version(ctx, maxver);
		SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
	}
	return ctx;
}

static SSL_CTX *
server_ctx(X509 *cert)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	SSL_CTX_use_certificate(ctx, cert);
	SSL_CTX_use_PrivateKey(ctx, srv_key);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"t", 1);
	return ctx;
}

/* Server side: we are the client. */
struct srv_conn {
	SSL *ssl;
	int tcp;
	struct done d;
	int hs; /* SSL_connect succeeded */
};

static void
srv_conn_close(struct srv_conn *s)
{
	if (s->ssl) {
		SSL_free(s->ssl);
	}
	if (s->tcp != -1)
		close(s->tcp);
	done_clear(&s->d);
	s->ssl = NULL;
	s->tcp = -1;
}

/* names: START's name, with attest; host: the name (or address) we
 * verify. */
static int
server_side_attest(struct tlsd_kid *k, SSL_CTX *ctx, const char *policy,
    const char *sni, SSL_SESSION *sess, int ocsp, const char *names,
    const char *attest, const char *host, struct srv_conn *s)
{
	int acc;

	memset(s, 0, sizeof(*s));
	s->d.fd = -1;
	tcp_pair(&s->tcp, &acc);
	if (send_start_attest(
	        k, TLS_SIDE_SERVER, policy, "", names, attest, acc) == -1)
		return -1;
	s->ssl = SSL_new(ctx);
	SSL_set_fd(s->ssl, s->tcp);
	if (host && strchr(host, ':') == NULL &&
	    strspn(host, "0123456789.") != strlen(host))
		SSL_set1_host(s->ssl, host);
	else if (host)
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), host);
	if (sni)
		SSL_set_tlsext_host_name(s->ssl, sni);
	if (sess)
		SSL_set_session(s->ssl, sess);
	if (ocsp)
		SSL_set_tlsext_status_type(s->ssl, TLSEXT_STATUSTYPE_ocsp);
	s->hs = SSL_connect(s->ssl) == 1;
	ERR_clear_error();
	return get_done(k, &s->d);
}

/* The same with tlsd's own attest of the names. */
static int
server_side_names(struct tlsd_kid *k, SSL_CTX *ctx, const char *policy,
    const char *sni, SSL_SESSION *sess, int ocsp, const char *names,
    const char *host, struct srv_conn *s)
{
	char attest[TLS_MAX_ATTEST + 1];

	snprintf(attest, sizeof(attest), "%s",
	    names[0] ? attest_of(policy, names, 0) : "");
	return server_side_attest(
	    k, ctx, policy, sni, sess, ocsp, names, attest, host, s);
}

static int
server_side(struct tlsd_kid *k, SSL_CTX *ctx, const char *policy,
    const char *sni, SSL_SESSION *sess, int ocsp, struct srv_conn *s)
{
	return server_side_names(k, ctx, policy, sni, sess, ocsp, "", NULL, s);
}

/* Client side: we are the server. */
static int
client_side(struct tlsd_kid *k, SSL_CTX *ctx, const char *server,
    const char *name, struct srv_conn *s)
{
	int cli;

	memset(s, 0, sizeof(*s));
	s->d.fd = -1;
	tcp_pair(&cli, &s->tcp);
	if (send_start(k, TLS_SIDE_CLIENT, "", server, name, cli) == -1)
		return -1;
	s->ssl = SSL_new(ctx);
	SSL_set_fd(s->ssl, s->tcp);
	s->hs = SSL_accept(s->ssl) == 1;
	ERR_clear_error();
	return get_done(k, &s->d);
}

static void
nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int
ssl_retry(SSL *ssl, int r)
{
	int e = SSL_get_error(ssl, r);

	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/*
 * n bytes each way at once: a from our TLS end to the plaintext fd, b
 * from the plaintext fd to our TLS end.  1 if both arrive byte-exact.
 */
static int
pump(SSL *ssl, int tcp, int p, const uint8_t *a, const uint8_t *b, size_t n)
{
	uint8_t *ra = malloc(n), *rb = malloc(n);
	size_t aw = 0, ar = 0, bw = 0, br = 0;
	struct pollfd pfd[2];
	time_t end = time(NULL) + 60;
	ssize_t w;
	int r, progress, ok = 0;

	nonblock(tcp);
	nonblock(p);
	SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	while ((aw < n || ar < n || bw < n || br < n) && time(NULL) < end) {
		progress = 0;
		if (aw < n) {
			r = SSL_write(ssl, a + aw,
			    (int)(n - aw > 16384 ? 16384 : n - aw));
			if (r > 0)
				aw += (size_t)r, progress = 1;
			else if (!ssl_retry(ssl, r))
				goto out;
		}
		if (br < n) {
			r = SSL_read(ssl, rb + br, (int)(n - br));
			if (r > 0)
				br += (size_t)r, progress = 1;
			else if (!ssl_retry(ssl, r))
				goto out;
		}
		if (bw < n) {
			w = write(p, b + bw, n - bw);
			if (w > 0)
				bw += (size_t)w, progress = 1;
			else if (errno != EAGAIN)
				goto out;
		}
		if (ar < n) {
			w = read(p, ra + ar, n - ar);
			if (w > 0)
				ar += (size_t)w, progress = 1;
			else if (w == 0 || errno != EAGAIN)
				goto out;
		}
		if (!progress) {
			pfd[0].fd = tcp;
			pfd[0].events = POLLIN | POLLOUT;
			pfd[1].fd = p;
			pfd[1].events = POLLIN | (bw < n ? POLLOUT : 0);
			poll(pfd, 2, 5);
		}
	}
	ok = aw == n && ar == n && bw == n && br == n &&
	     memcmp(a, ra, n) == 0 && memcmp(b, rb, n) == 0;
out:
	if (!ok)
		fprintf(stderr, "pump: a %zu/%zu b %zu/%zu\n", ar, aw, br, bw);
	free(ra);
	free(rb);
	return ok;
}

/* Read from fd until EOF (0), error (-1) or 10 s; bytes in *got. */
static int
read_eof(int fd, char *buf, size_t len, size_t *got)
{
	struct pollfd pfd = {fd, POLLIN, 0};
	ssize_t n;

	*got = 0;
	for (;;) {
		if (poll(&pfd, 1, 10000) != 1)
			return -2;
		n = read(fd, buf + *got, len - *got);
		if (n == 0)
			return 0;
		if (n < 0 && errno == EAGAIN)
			continue;
		if (n < 0)
			return -1;
		*got += (size_t)n;
		if (*got == len)
			return 1;
	}
}

/* SSL_read with a deadline on a non-blocking socket: bytes, 0 for
 * close_notify, -1 on error or timeout. */
static int
ssl_read_wait(SSL *ssl, int fd, char *buf, int len)
{
	struct pollfd pfd = {fd, POLLIN, 0};
	int r, i;

	for (i = 0; i < 1000; i++) {
		r = SSL_read(ssl, buf, len);
		if (r > 0)
			return r;
		if (SSL_get_error(ssl, r) == SSL_ERROR_ZERO_RETURN)
			return 0;
		if (!ssl_retry(ssl, r))
			return -1;
		poll(&pfd, 1, 10);
	}
	return -1;
}

/* ---- the cases ---- */

static void
test_server_relay(struct tlsd_kid *k)
{
	SSL_CTX *ctx = client_ctx(0);
	struct srv_conn s;
	uint8_t *a = malloc(RELAY_BYTES), *b = malloc(RELAY_BYTES);
	char buf[64];
	size_t got;
	X509 *peer;

	RAND_bytes(a, RELAY_BYTES);
	RAND_bytes(b, RELAY_BYTES);
	CHECK(server_side(k, ctx, "imap-in", NULL, NULL, 0, &s) == 0);
	CHECK(s.hs);
	CHECK(s.d.ok == 1 && s.d.fd != -1 && s.d.error[0] == '\0');
	CHECK(strcmp(s.d.version, "TLSv1.3") == 0);
	CHECK(strcmp(s.d.cipher, SSL_get_cipher_name(s.ssl)) == 0);
	CHECK(s.d.sni[0] == '\0' && s.d.resumed == 0 && s.d.names[0] == '\0');
	/* No SNI: the default certificate, with its chain. */
	peer = SSL_get0_peer_certificate(s.ssl);
	CHECK(peer && X509_check_host(peer, "localhost", 0, 0, NULL) == 1);
	CHECK(sk_X509_num(SSL_get_peer_cert_chain(s.ssl)) == 2);
	CHECK(SSL_get_verify_result(s.ssl) == X509_V_OK);
	if (s.d.ok) {
		CHECK(pump(s.ssl, s.tcp, s.d.fd, a, b, RELAY_BYTES));
		/* netd's EOF: close_notify to us, and we may still send. */
		shutdown(s.d.fd, SHUT_WR);
		CHECK(ssl_read_wait(s.ssl, s.tcp, buf, sizeof(buf)) == 0);
		CHECK(SSL_write(s.ssl, "late", 4) == 4);
		CHECK(read_eof(s.d.fd, buf, 4, &got) == 1 &&
		      memcmp(buf, "late", 4) == 0);
		/* Our close_notify: netd reads EOF. */
		SSL_shutdown(s.ssl);
		CHECK(
		    read_eof(s.d.fd, buf, sizeof(buf), &got) == 0 && got == 0);
	}
	srv_conn_close(&s);
	free(a);
	free(b);
	SSL_CTX_free(ctx);
}

/* The peer's close_notify first: netd reads EOF, and its data still
 * goes to the peer. */
static void
test_server_peer_closes(struct tlsd_kid *k)
{
	SSL_CTX *ctx = client_ctx(0);
	struct srv_conn s;
	char buf[64];
	size_t got;

	CHECK(server_side(k, ctx, "imap-in", NULL, NULL, 0, &s) == 0);
	CHECK(s.d.ok == 1);
	if (s.d.ok) {
		CHECK(SSL_write(s.ssl, "bye", 3) == 3);
		SSL_shutdown(s.ssl);
		CHECK(read_eof(s.d.fd, buf, 3, &got) == 1 &&
		      memcmp(buf, "bye", 3) == 0);
		CHECK(read_eof(s.d.fd, buf, sizeof(buf), &got) == 0);
		CHECK(write(s.d.fd, "after", 5) == 5);
		nonblock(s.tcp);
		CHECK(ssl_read_wait(s.ssl, s.tcp, buf, sizeof(buf)) == 5 &&
		      memcmp(buf, "after", 5) == 0);
		close(s.d.fd);
		s.d.fd = -1;
		CHECK(ssl_read_wait(s.ssl, s.tcp, buf, sizeof(buf)) == 0);
	}
	srv_conn_close(&s);
	SSL_CTX_free(ctx);
}

/* CPU ticks (user + system) of process pid so far. */
static long
cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY)) == -1)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* After the command name: state is field 3, utime and stime 14, 15. */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
	        &ut, &st) != 2)
		return -1;
	return (long)(ut + st);
}

/*
 * Backpressure, each way in turn: one side writes while the other reads
 * nothing, until the writer is held up; what it got rid of is bounded
 * (tlsd's buffer, the socketpair's and TCP's socket buffers) and tlsd
 * idles meanwhile; then the reader takes it all, byte-exact.
 */
#define BP_BYTES (32 * 1024 * 1024)
#define BP_CHUNK (64 * 1024)

/* netd -> peer: bytes netd could write before it was held up. */
static size_t
bp_netd_writes(struct srv_conn *s, const uint8_t *a)
{
	struct pollfd pfd = {s->d.fd, POLLOUT, 0};
	size_t w = 0;
	ssize_t n;

	while (w < BP_BYTES) {
		n = write(s->d.fd, a + w,
		    BP_BYTES - w < BP_CHUNK ? BP_BYTES - w : BP_CHUNK);
		if (n > 0)
			w += (size_t)n;
		else if (n == -1 && errno == EAGAIN) {
			if (poll(&pfd, 1, 300) == 0)
				break; /* held up */
		} else
			break;
	}
	return w;
}

/* peer -> netd: bytes the peer's SSL_write took before it was held up
 * (*pending: the size of the one it has to retry). */
static size_t
bp_peer_writes(struct srv_conn *s, const uint8_t *b, int *pending)
{
	struct pollfd pfd = {s->tcp, POLLOUT, 0};
	size_t w = 0;
	int r;

	*pending = 0;
	while (w < BP_BYTES) {
		r = SSL_write(s->ssl, b + w, BP_CHUNK);
		if (r > 0)
			w += (size_t)r;
		else if (ssl_retry(s->ssl, r)) {
			if (poll(&pfd, 1, 300) == 0) {
				*pending = BP_CHUNK;
				break;
			}
		} else
			break;
	}
	return w;
}

static void
test_server_backpressure(struct tlsd_kid *k)
{
	SSL_CTX *ctx = client_ctx(0);
	uint8_t *a = malloc(BP_BYTES + BP_CHUNK), *r = malloc(BP_BYTES);
	struct pollfd pfd[2];
	struct srv_conn s;
	size_t w, got;
	long t0, t1;
	ssize_t n;
	int pending, i;

	RAND_bytes(a, BP_BYTES + BP_CHUNK);
	CHECK(server_side(k, ctx, "imap-in", NULL, NULL, 0, &s) == 0);
	CHECK(s.d.ok == 1);
	if (!s.d.ok)
		goto out;
	nonblock(s.tcp);
	nonblock(s.d.fd);
	SSL_set_mode(s.ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

	/* netd writes, the peer reads nothing. */
	w = bp_netd_writes(&s, a);
	CHECK(w > TLSD_RELAY_MAX && w < BP_BYTES / 2);
	t0 = cpu_ticks(k->pid);
	poll(NULL, 0, 500);
	t1 = cpu_ticks(k->pid);
	CHECK(t0 >= 0 && t1 - t0 <= 10); /* not spinning */
	for (got = 0, i = 0; got < w && i < 20000; i++) {
		n = SSL_read(s.ssl, r + got, (int)(w - got));
		if (n > 0)
			got += (size_t)n;
		else if (!ssl_retry(s.ssl, (int)n))
			break;
		else {
			pfd[0].fd = s.tcp;
			pfd[0].events = POLLIN;
			poll(pfd, 1, 10);
		}
	}
	CHECK(got == w && memcmp(a, r, w) == 0);

	/* The peer writes, netd reads nothing. */
	w = bp_peer_writes(&s, a, &pending);
	CHECK(w > TLSD_RELAY_MAX && w < BP_BYTES / 2 && pending > 0);
	t0 = cpu_ticks(k->pid);
	poll(NULL, 0, 500);
	t1 = cpu_ticks(k->pid);
	CHECK(t0 >= 0 && t1 - t0 <= 10);
	/* netd reads; the peer's pending write completes meanwhile. */
	for (got = 0, i = 0; (got < w || pending) && i < 20000; i++) {
		if (pending) {
			n = SSL_write(s.ssl, a + w, pending);
			if (n > 0) {
				w += (size_t)n;
				pending = 0;
			} else if (!ssl_retry(s.ssl, (int)n))
				break;
		}
		n = read(s.d.fd, r + got, w + (size_t)pending - got);
		if (n > 0)
			got += (size_t)n;
		else if (n == 0 || errno != EAGAIN)
			break;
		else {
			pfd[0].fd = s.d.fd;
			pfd[0].events = POLLIN;
			pfd[1].fd = s.tcp;
			pfd[1].events = pending ? POLLOUT : 0;
			poll(pfd, 2, 10);
		}
	}
	CHECK(got == w && pending == 0 && memcmp(a, r, w) == 0);
out:
	srv_conn_close(&s);
	free(a);
	free(r);
	SSL_CTX_free(ctx);
}

static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The peer's SSL_write of all n bytes of a (non-blocking socket, 10 s at
 * most), then all of it acknowledged by tlsd's host: 1 if so. */
static int
peer_sends(struct srv_conn *s, const uint8_t *a, size_t n)
{
	struct pollfd pfd = {s->tcp, POLLOUT, 0};
	long end = now_ms() + 10000;
	size_t w = 0;
	int r, outq = -1;

	while (w < n && now_ms() < end) {
		r = SSL_write(
		    s->ssl, a + w, (int)(n - w > BP_CHUNK ? BP_CHUNK : n - w));
		if (r > 0)
			w += (size_t)r;
		else if (ssl_retry(s->ssl, r))
			poll(&pfd, 1, 10);
		else
			return 0;
	}
	while (now_ms() < end &&
	       (ioctl(s->tcp, SIOCOUTQ, &outq) == -1 || outq != 0))
		poll(NULL, 0, 5);
	if (w != n || outq != 0)
		fprintf(
		    stderr, "peer_sends: %zu of %zu, %d unacked\n", w, n, outq);
	return w == n && outq == 0;
}

/*
 * The peer reads netd's greeting, sends n bytes and resets the connection
 * (SO_LINGER 0, then close).  netd gets exactly those bytes, then EOF,
 * and tlsd closes both its ends without waiting for netd's EOF; it
 * writes nothing to the reset socket (no close_notify: no SIGPIPE).
 *
 * held: netd reads nothing until after the reset, and n is more than the
 * socketpair holds, so tlsd still has some of it then (the last of it
 * maybe still in the socket, with its read event off: then the reset
 * shows when netd's write to the peer fails).  tlsd waits until netd's
 * end takes it all, then closes.
 */
static void
reset_case(struct tlsd_kid *k, size_t n, int held)
{
	SSL_CTX *ctx = client_ctx(0);
	struct linger lg = {1, 0};
	struct srv_conn s;
	uint8_t *a = malloc(n), *r = malloc(n + 1);
	uint32_t sessions = 1, pipes0 = 0, pipes = 0;
	char buf[64];
	size_t got = 0;
	long t0;
	int rc;

	RAND_bytes(a, n);
	CHECK(kid_idle(k, 5000));
	CHECK(kid_status(k, &sessions, &pipes0) == 0);
	CHECK(server_side(k, ctx, "imap-in", NULL, NULL, 0, &s) == 0);
	CHECK(s.d.ok == 1);
	if (!s.d.ok)
		goto out;
	nonblock(s.tcp);
	CHECK(write(s.d.fd, "* OK hi\r\n", 9) == 9);
	CHECK(ssl_read_wait(s.ssl, s.tcp, buf, sizeof(buf)) == 9 &&
	      memcmp(buf, "* OK hi\r\n", 9) == 0);
	CHECK(peer_sends(&s, a, n));
	CHECK(setsockopt(s.tcp, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
	close(s.tcp);
	s.tcp = -1;
	t0 = now_ms();
	if (held) {
		/* netd writes to the gone peer; tlsd keeps what netd has
		 * not read yet. */
		CHECK(write(s.d.fd, "a1 NOOP\r\n", 9) == 9);
		poll(NULL, 0, 300);
		CHECK(kid_status(k, &sessions, &pipes) == 0 && sessions == 1);
	}
	/* All of it, then EOF (not ECONNRESET: had tlsd closed its end
	 * with netd's write unread, Linux would say so). */
	rc = read_eof(s.d.fd, (char *)r, n + 1, &got);
	CHECK(rc == 0 && got == n && memcmp(a, r, n) == 0);
	/* With netd's end still open. */
	CHECK(kid_idle(k, 1000));
	if (!held)
		CHECK(now_ms() - t0 < 1000);
	/* Nothing was written to the reset socket, even once netd is gone
	 * (that was when close_notify went out). */
	close(s.d.fd);
	s.d.fd = -1;
	CHECK(kid_idle(k, 2000));
	CHECK(kid_status(k, &sessions, &pipes) == 0 && pipes == pipes0);
	if (rc != 0 || got != n)
		fprintf(
		    stderr, "reset_case %zu: netd got %zu (%d)\n", n, got, rc);
out:
	srv_conn_close(&s);
	free(a);
	free(r);
	SSL_CTX_free(ctx);
}

static void
test_server_peer_resets(struct tlsd_kid *k)
{
	int sndbuf = 0;
	socklen_t len = sizeof(sndbuf);
	int sp[2];

	reset_case(k, 14, 0);
	reset_case(k, 100000, 0);
	/* More than tlsd's end of the socketpair takes (tlsd sets its
	 * SO_SNDBUF as on this one). */
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
	sndbuf = TLSD_RELAY_MAX;
	setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	CHECK(getsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0);
	close(sp[0]);
	close(sp[1]);
	reset_case(k, (size_t)sndbuf + TLSD_RELAY_MAX, 1);
}

static long
ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)(now.tv_sec - t->tv_sec) * 1000 +
	       (now.tv_nsec - t->tv_nsec) / 1000000;
}

/* TCP_CORK of the socket tlsd holds (a dup of it: the option is the
 * socket's). */
static int
corked(int fd)
{
	int v = -1;
	socklen_t len = sizeof(v);

	return getsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, &len) == 0 ? v : -1;
}

/*
 * TLS_START_SPEAKS_FIRST (an implicit listener): the last flight of the
 * handshake (TLS 1.2 the server's Finished, 1.3 the tickets) waits in
 * the corked socket for the greeting and leaves with it; without the
 * flag (STARTTLS: the client speaks next) nothing is held.  Flags other
 * than that one, or on the client side, make START malformed.
 */
static void
test_server_speaks_first(struct tlsd_kid *k)
{
	static const int vers[] = {TLS1_3_VERSION, TLS1_2_VERSION};
	static const char greet[] = "* OK [CAPABILITY IMAP4rev1] hi\r\n";
	struct pollfd pf[2];
	struct timespec t0;
	struct done d;
	char buf[64];
	size_t vi, got;
	int flag, tcp, acc, mine, r, n, steps, hs;
	SSL_CTX *ctx;
	SSL *ssl;

	for (vi = 0; vi < 2; vi++) {
		for (flag = 0; flag < 2; flag++) {
			ctx = client_ctx(vers[vi]);
			tcp_pair(&tcp, &acc);
			mine = dup(acc);
			start_flags = flag ? TLS_START_SPEAKS_FIRST : 0;
			CHECK(send_start_attest(k, TLS_SIDE_SERVER, "imap-in",
			          "", "", "", acc) == 0);
			start_flags = 0;
			ssl = SSL_new(ctx);
			SSL_set_fd(ssl, tcp);
			fcntl(tcp, F_SETFL, fcntl(tcp, F_GETFL) | O_NONBLOCK);
			/* Our flights until tlsd's DONE says it is done
			 * (TLS 1.2 with the flag: our handshake waits for
			 * the held Finished). */
			hs = 0;
			pf[0].fd = tcp;
			pf[1].fd = k->ib.fd;
			pf[0].events = pf[1].events = POLLIN;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			for (steps = 0; steps < 200; steps++) {
				if (!hs && (r = SSL_connect(ssl)) == 1)
					hs = 1;
				else if (!hs && !ssl_retry(ssl, r))
					break;
				if (poll(pf + 1, 1, 0) == 1)
					break;
				poll(pf, 2, 50);
			}
			CHECK(get_done(k, &d) == 0 && d.ok == 1);
			/* Held: the socket is corked (flag) or not. */
			CHECK(corked(mine) == flag);
			/* TLS 1.2: our handshake waits for the Finished.  The
			 * kernel sends what is corked after 200 ms: a run
			 * that took 150 ms from our ClientHello on cannot
			 * tell. */
			if (vers[vi] == TLS1_2_VERSION && flag &&
			    ms_since(&t0) < 150)
				CHECK(!hs);
			CHECK(write(d.fd, greet, sizeof(greet) - 1) ==
			      (ssize_t)sizeof(greet) - 1);
			got = 0;
			for (steps = 0; steps < 200 && got < sizeof(greet) - 1;
			     steps++) {
				if (!hs) {
					if ((r = SSL_connect(ssl)) == 1)
						hs = 1;
					else if (!ssl_retry(ssl, r))
						break;
				}
				if (hs && (n = SSL_read(ssl, buf + got,
				               (int)(sizeof(buf) - got))) > 0)
					got += (size_t)n;
				else
					poll(pf, 1, 50);
			}
			CHECK(hs && got == sizeof(greet) - 1 &&
			      memcmp(buf, greet, got) == 0);
			/* The first data went, and the socket with it. */
			CHECK(corked(mine) == 0);
			CHECK(strcmp(d.version, vers[vi] == TLS1_3_VERSION
			                            ? "TLSv1.3"
			                            : "TLSv1.2") == 0);
			SSL_free(ssl);
			close(tcp);
			close(mine);
			done_clear(&d);
			SSL_CTX_free(ctx);
		}
	}
}

/* START with unknown flags, or with the flag on the client side, is
 * malformed: the channel closes (a kid of its own each). */
static void
test_bad_flags(struct tlsd_kid *k, uint32_t side, uint32_t flags)
{
	struct done d;
	int tcp, acc;

	tcp_pair(&tcp, &acc);
	start_flags = flags;
	CHECK(
	    send_start_attest(k, side, side == TLS_SIDE_SERVER ? "imap-in" : "",
	        side == TLS_SIDE_SERVER ? "" : "back", "", "", acc) == 0);
	start_flags = 0;
	CHECK(get_done(k, &d) == -1);
	close(tcp);
}

static void
test_server_sni_ocsp_resume(struct tlsd_kid *k)
{
	SSL_CTX *ctx = client_ctx(0);
	struct srv_conn s;
	SSL_SESSION *sess = NULL;
	const unsigned char *resp;
	char buf[8];
	long n;
	X509 *peer;

	CHECK(server_side(k, ctx, "imap-in", "mail.example.org", NULL, 1, &s) ==
	      0);
	CHECK(s.d.ok == 1 && strcmp(s.d.sni, "mail.example.org") == 0);
	peer = SSL_get0_peer_certificate(s.ssl);
	CHECK(
	    peer && X509_check_host(peer, "mail.example.org", 0, 0, NULL) == 1);
	n = SSL_get_tlsext_status_ocsp_resp(s.ssl, &resp);
	CHECK(n == (long)sizeof(OCSP_BYTES) - 1 &&
	      memcmp(resp, OCSP_BYTES, (size_t)n) == 0);
	if (s.d.ok) {
		/* Through the relay once: the session ticket is read. */
		CHECK(write(s.d.fd, "x", 1) == 1);
		CHECK(SSL_read(s.ssl, buf, 1) == 1);
		sess = SSL_get1_session(s.ssl);
		CHECK(sess && SSL_SESSION_is_resumable(sess));
		/* SSL_free without it would make sess not resumable. */
		SSL_shutdown(s.ssl);
	}
	srv_conn_close(&s);

	/* A name no certificate has: the default one, no staple. */
	CHECK(server_side(k, ctx, "other.example.org", NULL, NULL, 1, &s) == 0);
	CHECK(s.d.ok == 0 && strstr(s.d.error, "unknown policy") != NULL);
	srv_conn_close(&s);
	CHECK(server_side(
	          k, ctx, "imap-in", "other.example.org", NULL, 1, &s) == 0);
	peer = SSL_get0_peer_certificate(s.ssl);
	CHECK(s.d.ok == 1 && peer &&
	      X509_check_host(peer, "localhost", 0, 0, NULL) == 1);
	CHECK(SSL_get_tlsext_status_ocsp_resp(s.ssl, &resp) == -1);
	srv_conn_close(&s);

	if (sess) {
		CHECK(server_side(k, ctx, "imap-in", "mail.example.org", sess,
		          0, &s) == 0);
		CHECK(s.d.ok == 1 && s.d.resumed == 1);
		CHECK(SSL_session_reused(s.ssl) == 1);
		srv_conn_close(&s);
		SSL_SESSION_free(sess);
	}
	SSL_CTX_free(ctx);
}

static void
test_server_refusals(struct tlsd_kid *k)
{
	SSL_CTX *old = client_ctx(TLS1_1_VERSION);
	SSL_CTX *ctx = client_ctx(0);
	struct srv_conn s;
	char buf[8];
	size_t got;

	/* TLS 1.1 against min_version 1.2. */
	CHECK(server_side(k, old, "imap-in", NULL, NULL, 0, &s) == 0);
	CHECK(!s.hs && s.d.ok == 0 && s.d.fd == -1);
	CHECK(strstr(s.d.error, "unsupported protocol") != NULL);
	/* The failure closed the connection. */
	CHECK(read_eof(s.tcp, buf, sizeof(buf), &got) <= 0);
	srv_conn_close(&s);
	/* A policy without certificates. */
	CHECK(server_side(k, ctx, "nocert", NULL, NULL, 0, &s) == 0);
	CHECK(!s.hs && s.d.ok == 0 &&
	      strstr(s.d.error, "no TLS certificate") != NULL);
	srv_conn_close(&s);
	/* compliant_only: a client that offers no ECDHE+AEAD suite. */
	SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_cipher_list(ctx, "AES128-SHA256");
	CHECK(server_side(k, ctx, "compliant", NULL, NULL, 0, &s) == 0);
	CHECK(!s.hs && s.d.ok == 0 &&
	      strstr(s.d.error, "no shared cipher") != NULL);
	srv_conn_close(&s);
	SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256");
	CHECK(server_side(k, ctx, "compliant", NULL, NULL, 0, &s) == 0);
	CHECK(s.hs && s.d.ok == 1 &&
	      strcmp(s.d.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256") == 0);
	srv_conn_close(&s);
	/* Plaintext instead of a ClientHello. */
	{
		int tcp, acc;
		struct done d;

		tcp_pair(&tcp, &acc);
		CHECK(send_start(k, TLS_SIDE_SERVER, "imap-in", "", "", acc) ==
		      0);
		CHECK(write(tcp, "a001 CAPABILITY\r\n", 17) == 17);
		CHECK(get_done(k, &d) == 0 && d.ok == 0 && d.error[0]);
		CHECK(read_eof(tcp, buf, sizeof(buf), &got) <= 0);
		done_clear(&d);
		close(tcp);
	}
	SSL_CTX_free(old);
	SSL_CTX_free(ctx);
}

struct verify_case {
	const char *server, *name;
	X509 **cert;
	const char *error; /* NULL: accepted */
};

static void
test_client_verify(struct tlsd_kid *k)
{
	static const struct verify_case cases[] = {
	    {"verified", "localhost", &srv_cert, NULL},
	    {"verified", "", &srv_cert, NULL}, /* the address, 127.0.0.1 */
	    {"verified", "127.0.0.1", &srv_cert, NULL},
	    {"verified", "localhost", &expired_cert,
	        "certificate verify failed: certificate has expired"},
	    {"verified", "localhost", &wrong_cert,
	        "certificate verify failed: hostname mismatch"},
	    {"verified", "", &wrong_cert,
	        "certificate verify failed: IP address mismatch"},
	    {"verified", "localhost", &self_cert,
	        "certificate verify failed: self-signed certificate"},
	    {"unverified", "localhost", &expired_cert, NULL},
	    {"unverified", "localhost", &wrong_cert, NULL},
	    {"unverified", "localhost", &self_cert, NULL},
	    {"nosuchpool", "localhost", &srv_cert, "unknown server pool"},
	    {"plain", "localhost", &srv_cert, "server plain does not use TLS"},
	};
	const struct verify_case *vc;
	struct srv_conn s;
	SSL_CTX *ctx;
	size_t i;
	char buf[8];
	size_t got;
	int ok;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		vc = &cases[i];
		ctx = server_ctx(*vc->cert);
		CHECK(client_side(k, ctx, vc->server, vc->name, &s) == 0);
		if (vc->error == NULL) {
			ok = s.hs && s.d.ok == 1 &&
			     strcmp(s.d.subject, *vc->cert == wrong_cert
			                             ? "CN=wrong.example.org"
			                             : "CN=localhost") == 0;
		} else {
			ok = !s.hs && s.d.ok == 0 &&
			     strstr(s.d.error, vc->error) != NULL;
			ok = ok && read_eof(s.tcp, buf, sizeof(buf), &got) <= 0;
		}
		if (!ok)
			fprintf(stderr,
			    "verify case %zu (%s %s): ok %u '%s' "
			    "subject '%s'\n",
			    i, vc->server, vc->name, s.d.ok,
			    s.d.error ? s.d.error : "?",
			    s.d.subject ? s.d.subject : "?");
		CHECK(ok);
		srv_conn_close(&s);
		SSL_CTX_free(ctx);
	}
}

/* Client side: relay both ways and a resumed second session. */
static void
test_client_relay_resume(struct tlsd_kid *k)
{
	SSL_CTX *ctx = server_ctx(srv_cert);
	uint8_t *a = malloc(RELAY_BYTES), *b = malloc(RELAY_BYTES);
	struct srv_conn s;
	char buf[8];
	size_t got;

	RAND_bytes(a, RELAY_BYTES);
	RAND_bytes(b, RELAY_BYTES);
	CHECK(client_side(k, ctx, "verified", "localhost", &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && s.d.resumed == 0);
	if (s.d.ok) {
		CHECK(pump(s.ssl, s.tcp, s.d.fd, a, b, RELAY_BYTES));
		SSL_shutdown(s.ssl);
		CHECK(read_eof(s.d.fd, buf, sizeof(buf), &got) == 0);
		close(s.d.fd);
		s.d.fd = -1;
		CHECK(ssl_read_wait(s.ssl, s.tcp, buf, sizeof(buf)) == 0);
	}
	srv_conn_close(&s);
	CHECK(client_side(k, ctx, "verified", "localhost", &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && s.d.resumed == 1);
	CHECK(SSL_session_reused(s.ssl) == 1);
	srv_conn_close(&s);
	/* Another name: no session of another server is offered. */
	CHECK(client_side(k, ctx, "verified", "127.0.0.1", &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && s.d.resumed == 0);
	srv_conn_close(&s);
	free(a);
	free(b);
	SSL_CTX_free(ctx);
}

/* A peer that never starts: the handshake times out (0.5 s here). */
static void
test_timeout(struct tlsd_kid *k)
{
	struct done d;
	char buf[8];
	size_t got;
	int tcp, acc;

	tcp_pair(&tcp, &acc);
	CHECK(send_start(k, TLS_SIDE_SERVER, "imap-in", "", "", acc) == 0);
	CHECK(get_done(k, &d) == 0 && d.ok == 0 &&
	      strcmp(d.error, "handshake timed out") == 0);
	CHECK(read_eof(tcp, buf, sizeof(buf), &got) == 0);
	done_clear(&d);
	close(tcp);
}

/* A malformed TLS_START closes the channel (and the child exits). */
static void
test_garbage(struct tlsd_kid *k)
{
	struct imsg imsg;

	CHECK(imsg_compose(&k->ib, IMSG_TLS_START, 0, -1, "garbage", 7) == 0);
	imsgbuf_flush(&k->ib);
	CHECK(imsg_wait(&k->ib, &imsg, 10000) == -1);
}

static void
test_garbage_fd(struct tlsd_kid *k)
{
	struct imsg imsg;
	struct buf b;
	int tcp, acc;

	/* Well-formed strings, but a side that does not exist. */
	tcp_pair(&tcp, &acc);
	buf_init(&b, 0);
	buf_add_u64(&b, 1);
	buf_add_u32(&b, 7);
	buf_add_str(&b, "imap-in");
	buf_add_str(&b, "");
	buf_add_str(&b, "");
	buf_add_str(&b, "peer");
	buf_add_str(&b, "");
	buf_add_u32(&b, 0);
	CHECK(imsg_compose(&k->ib, IMSG_TLS_START, 0, acc, buf_head(&b),
	          buf_used(&b)) == 0);
	buf_free(&b);
	imsgbuf_flush(&k->ib);
	CHECK(imsg_wait(&k->ib, &imsg, 10000) == -1);
	close(tcp);
}

/* Client side: the names of the server's certificate in DONE. */
static void
test_client_names(struct tlsd_kid *k)
{
	static const struct {
		X509 **cert;
		const char *name, *names;
	} cases[] = {
	    {&srv_cert, "localhost", "DNS:localhost,IP:127.0.0.1"},
	    {&multi_cert, "mail.example.org", MULTI_NAMES},
	    {&cnonly_cert, "cnonly.example.org", "DNS:cnonly.example.org"},
	};
	struct srv_conn s;
	SSL_CTX *ctx;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ctx = server_ctx(*cases[i].cert);
		CHECK(client_side(k, ctx, "verified", cases[i].name, &s) == 0);
		CHECK(s.hs && s.d.ok == 1 && s.d.names &&
		      strcmp(s.d.names, cases[i].names) == 0);
		if (s.d.names && strcmp(s.d.names, cases[i].names) != 0)
			fprintf(stderr, "names case %zu: '%s'\n", i, s.d.names);
		srv_conn_close(&s);
		SSL_CTX_free(ctx);
	}
	/* A host name longer than TLS_MAX_NAME: refused, no channel error. */
	{
		char longname[TLS_MAX_NAME + 2];

		memset(longname, 'a', sizeof(longname) - 1);
		longname[sizeof(longname) - 1] = '\0';
		ctx = server_ctx(srv_cert);
		CHECK(client_side(k, ctx, "verified", longname, &s) == 0);
		CHECK(!s.hs && s.d.ok == 0 &&
		      strstr(s.d.error, "bad server name") != NULL);
		srv_conn_close(&s);
		SSL_CTX_free(ctx);
	}
}

/*
 * Minting needs tlsd's attest of the names (common/tls.h): none, one of
 * other names, of another policy's authority, altered, expired or
 * malformed is refused before anything is made.  A client-side
 * handshake through the client proxy pool of a policy with an authority
 * gives an attest that works; other pools give none.
 */
static void
test_server_attest(struct tlsd_kid *k, SSL_CTX *ctx)
{
	char good[TLS_MAX_ATTEST + 1], other[TLS_MAX_ATTEST + 1];
	char old[TLS_MAX_ATTEST + 1], changed[TLS_MAX_ATTEST + 1];
	const struct {
		const char *attest, *why;
	} bad[] = {
	    {"", "names not attested by tlsd: no attest"},
	    {other, "names not attested by tlsd: the attest does not match"},
	    {changed, "names not attested by tlsd: the attest does not match"},
	    {old, "names not attested by tlsd: expired"},
	    {"x:00", "names not attested by tlsd: malformed"},
	    {"12345", "names not attested by tlsd: malformed"},
	};
	struct srv_conn s;
	SSL_CTX *sctx;
	size_t i;
	char *p;

	snprintf(good, sizeof(good), "%s", attest_of("proxy", MULTI_NAMES, 0));
	snprintf(other, sizeof(other), "%s",
	    attest_of("proxy", "DNS:other.example", 0));
	snprintf(old, sizeof(old), "%s", attest_of("proxy", MULTI_NAMES, 1));
	snprintf(changed, sizeof(changed), "%s", good);
	p = strchr(changed, ':');
	CHECK(good[0] != '\0' && p != NULL && strlen(good) == strlen(other));
	if (p != NULL)
		p[1] = p[1] == '0' ? '1' : '0';
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(server_side_attest(k, ctx, "proxy", NULL, NULL, 0,
		          MULTI_NAMES, bad[i].attest, NULL, &s) == 0);
		CHECK(!s.hs && s.d.ok == 0 && s.d.error != NULL &&
		      strcmp(s.d.error, bad[i].why) == 0);
		if (s.d.error && strcmp(s.d.error, bad[i].why) != 0)
			fprintf(
			    stderr, "attest case %zu: '%s'\n", i, s.d.error);
		srv_conn_close(&s);
	}
	/* The same key in every tlsd: one made here works there. */
	CHECK(server_side_attest(k, ctx, "proxy", NULL, NULL, 0, MULTI_NAMES,
	          good, "mail.example.org", &s) == 0);
	CHECK(s.hs && s.d.ok == 1);
	srv_conn_close(&s);
	/* Another policy with the same authority: the same key. */
	CHECK(server_side_attest(k, ctx, "proxy-cert", NULL, NULL, 0,
	          MULTI_NAMES, good, "mail.example.org", &s) == 0);
	CHECK(s.hs && s.d.ok == 1);
	srv_conn_close(&s);

	/* The real server's handshake through the client proxy pool: its
	 * DONE's attest gets its names minted. */
	sctx = server_ctx(multi_cert);
	CHECK(client_side(k, sctx, CFG_ORIGINAL_DST ":proxy",
	          "mail.example.org", &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && s.d.names &&
	      strcmp(s.d.names, MULTI_NAMES) == 0 && s.d.attest &&
	      strchr(s.d.attest, ':') != NULL);
	snprintf(good, sizeof(good), "%s", s.d.attest ? s.d.attest : "");
	srv_conn_close(&s);
	CHECK(server_side_attest(k, ctx, "proxy", NULL, NULL, 0, MULTI_NAMES,
	          good, "mail.example.org", &s) == 0);
	CHECK(s.hs && s.d.ok == 1);
	srv_conn_close(&s);
	/* An ordinary pool: names, no attest. */
	CHECK(client_side(k, sctx, "verified", "mail.example.org", &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && s.d.attest && s.d.attest[0] == '\0');
	srv_conn_close(&s);
	SSL_CTX_free(sctx);
}

/* A client that trusts only the Proxy Authority. */
static SSL_CTX *
auth_client_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), auth_cert);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

/* The peer's certificate's serial (to compare), or NULL. */
static ASN1_INTEGER *
peer_serial(struct srv_conn *s)
{
	X509 *peer = SSL_get0_peer_certificate(s->ssl);

	return peer ? ASN1_INTEGER_dup(X509_get0_serialNumber(peer)) : NULL;
}

/* A names list of n items "DNS:hNNNppp.example", len bytes long (the
 * p's in labels of at most 50). */
static char *
long_names(size_t n, size_t len)
{
	char *out = calloc(1, len + 1), *q = out;
	size_t i, j, left, pad;

	for (i = 0; i < n; i++) {
		/* An equal share of what is left. */
		left = len - (size_t)(q - out) - (i ? 1 : 0);
		pad = (i == n - 1 ? left : left / (n - i)) -
		      strlen("DNS:h000.example");
		q += sprintf(q, "%sDNS:h%03zu", i ? "," : "", i);
		for (j = 0; j < pad; j++)
			*q++ = j % 50 == 49 && j + 1 < pad ? '.' : 'p';
		q += sprintf(q, ".example");
	}
	return out;
}

/* Server side with a Proxy Authority: the certificate made for names. */
static void
test_server_mint(struct tlsd_kid *k)
{
	static const char *bad[] = {
	    "DNS:",
	    "DNS:a..example",
	    "DNS:-a.example",
	    "DNS:a-.example",
	    "DNS:a_b.example",
	    "DNS:a.example.",
	    "DNS:*.example",
	    "DNS:a.*.example",
	    "DNS:*",
	    "dns:a.example",
	    "URI:https://a.example/",
	    "email:pm@example.org",
	    "DNS:a.example,",
	    ",DNS:a.example",
	    "DNS:a.example, DNS:b.example",
	    "DNS:a.example,,DNS:b.example",
	    "IP:192.0.2",
	    "IP:192.0.2.300",
	    "IP:fe80::1%eth0",
	    "IP:",
	    "a.example",
	};
	SSL_CTX *ctx = auth_client_ctx(), *plain = client_ctx(0);
	struct srv_conn s;
	ASN1_INTEGER *first = NULL, *again = NULL, *other = NULL;
	char names[TLS_MAX_NAMES + 1], subj[256], buf[8];
	X509 *peer;
	BIGNUM *bn;
	int days, secs;
	size_t i;
	char *many;

	CHECK(server_side_names(k, ctx, "proxy", "whatever.example", NULL, 0,
	          MULTI_NAMES, "x.b.example", &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && s.d.names[0] == '\0' &&
	      strcmp(s.d.sni, "whatever.example") == 0);
	CHECK(SSL_get_verify_result(s.ssl) == X509_V_OK);
	CHECK(sk_X509_num(SSL_get_peer_cert_chain(s.ssl)) == 2);
	if ((peer = SSL_get0_peer_certificate(s.ssl)) != NULL) {
		tlsd_name_text(X509_get_subject_name(peer), subj, sizeof(subj));
		CHECK(strcmp(subj, "CN=mail.example.org") == 0);
		tlsd_cert_names(peer, names, sizeof(names));
		CHECK(strcmp(names, MULTI_NAMES) == 0);
		CHECK(X509_check_ip_asc(peer, "2001:db8::1", 0) == 1);
		CHECK(
		    X509_check_host(peer, "mail.example.org", 0, 0, NULL) == 1);
		CHECK(X509_check_issued(auth_cert, peer) == X509_V_OK);
		CHECK(X509_check_ca(peer) == 0);
		CHECK(
		    X509_check_purpose(peer, X509_PURPOSE_SSL_SERVER, 0) == 1);
		CHECK(X509_get_version(peer) == X509_VERSION_3);
		CHECK(X509_get0_subject_key_id(peer) != NULL &&
		      X509_get0_authority_key_id(peer) != NULL &&
		      ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(peer),
		          X509_get0_subject_key_id(auth_cert)) == 0);
		CHECK((X509_get_key_usage(peer) & ~KU_DIGITAL_SIGNATURE) == 0);
		CHECK(X509_get_extended_key_usage(peer) == XKU_SSL_SERVER);
		CHECK(ASN1_TIME_diff(
		          &days, &secs, NULL, X509_get0_notAfter(peer)) == 1 &&
		      days * 86400 + secs > 7 * 86400 - 60 &&
		      days * 86400 + secs <= 7 * 86400);
		CHECK(ASN1_TIME_diff(
		          &days, &secs, NULL, X509_get0_notBefore(peer)) == 1 &&
		      days == 0 && secs < -3500 && secs >= -3610);
		bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(peer), NULL);
		CHECK(bn && !BN_is_negative(bn) && BN_num_bits(bn) == 127);
		BN_free(bn);
	}
	first = peer_serial(&s);
	if (s.d.ok) {
		CHECK(write(s.d.fd, "x", 1) == 1);
		CHECK(SSL_read(s.ssl, buf, 1) == 1 && buf[0] == 'x');
	}
	srv_conn_close(&s);

	/* The same names again: the certificate from the cache. */
	CHECK(server_side_names(k, ctx, "proxy", NULL, NULL, 0, MULTI_NAMES,
	          "192.0.2.1", &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && SSL_get_verify_result(s.ssl) == X509_V_OK);
	again = peer_serial(&s);
	CHECK(first && again && ASN1_INTEGER_cmp(first, again) == 0);
	srv_conn_close(&s);

	/* Other names: another certificate; an address only: CN it. */
	CHECK(server_side_names(k, ctx, "proxy-cert", NULL, NULL, 0,
	          "IP:192.0.2.7", "192.0.2.7", &s) == 0);
	CHECK(s.hs && s.d.ok == 1);
	if ((peer = SSL_get0_peer_certificate(s.ssl)) != NULL) {
		tlsd_name_text(X509_get_subject_name(peer), subj, sizeof(subj));
		CHECK(strcmp(subj, "CN=192.0.2.7") == 0);
	}
	other = peer_serial(&s);
	CHECK(first && other && ASN1_INTEGER_cmp(first, other) != 0);
	srv_conn_close(&s);

	/* No names: the policy's certificate, or none to present. */
	CHECK(server_side_names(k, plain, "proxy-cert", NULL, NULL, 0, "",
	          "localhost", &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && SSL_get_verify_result(s.ssl) == X509_V_OK);
	srv_conn_close(&s);
	CHECK(server_side_names(
	          k, ctx, "proxy", NULL, NULL, 0, "", "localhost", &s) == 0);
	CHECK(!s.hs && s.d.ok == 0 &&
	      strcmp(s.d.error, "no names for the Proxy Authority") == 0);
	srv_conn_close(&s);
	/* A policy without an authority ignores the names. */
	CHECK(server_side_names(k, plain, "imap-in", NULL, NULL, 0, MULTI_NAMES,
	          "localhost", &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && SSL_get_verify_result(s.ssl) == X509_V_OK);
	srv_conn_close(&s);
	/* An authority that is no CA: refused. */
	CHECK(server_side_names(k, ctx, "badauth", NULL, NULL, 0,
	          "DNS:a.example", NULL, &s) == 0);
	CHECK(!s.hs && s.d.ok == 0 &&
	      strstr(s.d.error, "not a CA certificate") != NULL);
	srv_conn_close(&s);

	/* Bad names lists, and one name too many. */
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(server_side_names(k, ctx, "proxy", NULL, NULL, 0, bad[i],
		          NULL, &s) == 0);
		if (!(s.d.ok == 0 && strstr(s.d.error, "bad names") != NULL))
			fprintf(stderr, "bad names case '%s': ok %u '%s'\n",
			    bad[i], s.d.ok, s.d.error ? s.d.error : "?");
		CHECK(!s.hs && s.d.ok == 0 &&
		      strstr(s.d.error, "bad names") != NULL);
		srv_conn_close(&s);
	}
	many = long_names(TLSD_MINT_NAMES + 1, 1200);
	CHECK(server_side_names(
	          k, ctx, "proxy", NULL, NULL, 0, many, NULL, &s) == 0);
	CHECK(!s.hs && s.d.ok == 0 &&
	      strcmp(s.d.error, "bad names: more than 64") == 0);
	srv_conn_close(&s);
	free(many);
	/* The most there may be: 64 names in TLS_MAX_NAMES bytes. */
	many = long_names(TLSD_MINT_NAMES, TLS_MAX_NAMES);
	CHECK(strlen(many) == TLS_MAX_NAMES);
	CHECK(server_side_names(k, ctx, "proxy", NULL, NULL, 0, many,
	          strrchr(many, ':') + 1, &s) == 0);
	CHECK(s.hs && s.d.ok == 1 && SSL_get_verify_result(s.ssl) == X509_V_OK);
	if ((peer = SSL_get0_peer_certificate(s.ssl)) != NULL) {
		tlsd_cert_names(peer, names, sizeof(names));
		CHECK(strcmp(names, many) == 0);
	}
	srv_conn_close(&s);
	free(many);

	ASN1_INTEGER_free(first);
	ASN1_INTEGER_free(again);
	ASN1_INTEGER_free(other);
	SSL_CTX_free(ctx);
	SSL_CTX_free(plain);
}

/* A START whose names are longer than TLS_MAX_NAMES is malformed. */
static void
test_names_too_long(struct tlsd_kid *k)
{
	struct imsg imsg;
	char *many = long_names(10, TLS_MAX_NAMES + 1);
	int tcp, acc;

	tcp_pair(&tcp, &acc);
	CHECK(send_start(k, TLS_SIDE_SERVER, "proxy", "", many, acc) == 0);
	CHECK(imsg_wait(&k->ib, &imsg, 10000) == -1);
	close(tcp);
	free(many);
}

/* tlsd_cert_names: whole names, at most 64 and TLS_MAX_NAMES bytes. */
static void
test_cert_names(void)
{
	char san[8192], out[TLS_MAX_NAMES + 1], *want;
	size_t i, n;
	X509 *x;

	/* 70 short names: the first 64. */
	san[0] = '\0';
	for (i = 0; i < 70; i++)
		snprintf(san + strlen(san), sizeof(san) - strlen(san),
		    "%sDNS:h%02zu.example", i ? "," : "", i);
	x = mkcert(srv_key, "x", san, -1, 1, 0, ca_cert, ca_key);
	tlsd_cert_names(x, out, sizeof(out));
	san[64 * strlen("DNS:h00.example,") - 1] = '\0';
	CHECK(strcmp(out, san) == 0);
	X509_free(x);
	/* 40 long names: cut at the last whole one that fits. */
	want = long_names(40, 40 * 100);
	x = mkcert(srv_key, "x", want, -1, 1, 0, ca_cert, ca_key);
	tlsd_cert_names(x, out, sizeof(out));
	n = strlen(out);
	CHECK(n <= TLS_MAX_NAMES && n > TLS_MAX_NAMES - 100);
	CHECK(strncmp(out, want, n) == 0 && want[n] == ',');
	X509_free(x);
	free(want);
	/* Names the parser would refuse are left out; no DNS SAN: CNs. */
	x = mkcert(srv_key, "cn.example",
	    "DNS:bad_name.example,IP:192.0.2.9,email:a@b.example", -1, 1, 0,
	    ca_cert, ca_key);
	tlsd_cert_names(x, out, sizeof(out));
	CHECK(strcmp(out, "IP:192.0.2.9,DNS:cn.example") == 0 ||
	      strcmp(out, "IP:192.0.2.9") == 0);
	X509_free(x);
	x = mkcert(srv_key, "not a host name", NULL, -1, 1, 0, ca_cert, ca_key);
	tlsd_cert_names(x, out, sizeof(out));
	CHECK(out[0] == '\0');
	X509_free(x);
}

/* Minting in this process: the cache, its bound, the authority's end of
 * validity, a new generation. */
static void
test_mint_cache(void)
{
	struct config *cfg = make_config(9);
	struct tlsd_gen *g, *g2;
	struct tlsd_policy *pol;
	char why[TLS_MAX_ERROR], name[64], *many;
	uint64_t n0;
	SSL *a, *b;
	size_t i;

	g = tlsd_gen_build(cfg);
	free_config(cfg);
	CHECK(g != NULL);
	if (g == NULL)
		return;
	pol = tlsd_find_policy(g, "proxy");
	CHECK(pol && pol->has_authority && pol->authority && pol->mint_ctx &&
	      pol->n == 0);
	CHECK(tlsd_find_policy(g, "imap-in")->has_authority == 0);
	CHECK(tlsd_find_policy(g, "badauth")->authority == NULL);
	n0 = tlsd_minted();
	a = tlsd_mint_ssl(pol, "DNS:a.example", why, sizeof(why));
	b = tlsd_mint_ssl(pol, "DNS:a.example", why, sizeof(why));
	CHECK(a && b && tlsd_minted() == n0 + 1 && g->nmints == 1);
	CHECK(a && b &&
	      X509_cmp(SSL_get_certificate(a), SSL_get_certificate(b)) == 0);
	SSL_free(a);
	SSL_free(b);
	/* The same names for another policy with the same authority. */
	a = tlsd_mint_ssl(tlsd_find_policy(g, "proxy-cert"), "DNS:a.example",
	    why, sizeof(why));
	CHECK(a && tlsd_minted() == n0 + 1);
	SSL_free(a);
	/* Never beyond the authority. */
	a = tlsd_mint_ssl(tlsd_find_policy(g, "proxy-short"), "DNS:a.example",
	    why, sizeof(why));
	CHECK(a && tlsd_minted() == n0 + 2 &&
	      ASN1_TIME_compare(X509_get0_notAfter(SSL_get_certificate(a)),
	          X509_get0_notAfter(short_cert)) == 0);
	SSL_free(a);
	/* Limits. */
	many = long_names(TLSD_MINT_NAMES, TLS_MAX_NAMES + 1);
	CHECK(tlsd_mint_ssl(pol, many, why, sizeof(why)) == NULL &&
	      strcmp(why, "bad names: longer than 2048 bytes") == 0);
	free(many);
	/* The cache is bounded: the least recently used goes. */
	for (i = 0; i < TLSD_MINT_CACHE; i++) {
		snprintf(name, sizeof(name), "DNS:h%zu.example", i);
		SSL_free(tlsd_mint_ssl(pol, name, why, sizeof(why)));
	}
	CHECK(g->nmints == TLSD_MINT_CACHE);
	CHECK(tlsd_minted() == n0 + 2 + TLSD_MINT_CACHE);
	SSL_free(tlsd_mint_ssl(pol, "DNS:h0.example", why, sizeof(why)));
	CHECK(tlsd_minted() == n0 + 2 + TLSD_MINT_CACHE);
	SSL_free(tlsd_mint_ssl(pol, "DNS:a.example", why, sizeof(why)));
	CHECK(tlsd_minted() == n0 + 3 + TLSD_MINT_CACHE);
	CHECK(g->nmints == TLSD_MINT_CACHE);

	/* A new generation starts with an empty cache; the old one's goes
	 * with it. */
	cfg = make_config(10);
	g2 = tlsd_gen_build(cfg);
	free_config(cfg);
	tlsd_gen_unref(g);
	CHECK(g2 && g2->nmints == 0);
	if (g2) {
		SSL_free(tlsd_mint_ssl(tlsd_find_policy(g2, "proxy"),
		    "DNS:a.example", why, sizeof(why)));
		CHECK(g2->nmints == 1 &&
		      tlsd_minted() == n0 + 4 + TLSD_MINT_CACHE);
	}
	tlsd_gen_unref(g2);
}

static void
test_ctx_build(void)
{
	struct config *cfg = make_config(7);
	struct tlsd_gen *g;
	size_t i, zero = 1;

	g = tlsd_gen_build(cfg);
	CHECK(g != NULL && g->generation == 7);
	/* The key bytes are wiped once parsed. */
	for (i = 0; i < cfg->certs[0].key_len; i++)
		if (cfg->certs[0].key_pem[i] != 0)
			zero = 0;
	CHECK(zero);
	CHECK(g && g->ncerts == 4 && g->certs[0].err[0] == '\0' &&
	      strcmp(g->certs[0].subject, "CN=localhost") == 0);
	CHECK(g && tlsd_find_policy(g, "imap-in") &&
	      tlsd_find_policy(g, "imap-in")->n == 2);
	CHECK(g && tlsd_find_policy(g, "nocert") &&
	      tlsd_find_policy(g, "nocert")->n == 0);
	CHECK(g && tlsd_find_pool(g, "verified") &&
	      tlsd_find_pool(g, "verified")->ctx != NULL);
	tlsd_gen_unref(g);
	free_config(cfg);

	/* A key that is not the certificate's. */
	cfg = make_config(8);
	free(cfg->certs[0].key_pem);
	{
		EVP_PKEY *other = EVP_EC_gen("P-256");
		struct pem p = pem_of(NULL, NULL, other);

		cfg->certs[0].key_pem = (uint8_t *)p.data;
		cfg->certs[0].key_len = p.len;
		EVP_PKEY_free(other);
	}
	g = tlsd_gen_build(cfg);
	CHECK(g && g->certs[0].err[0] != '\0');
	CHECK(g && tlsd_find_policy(g, "imap-in")->n == 0);
	tlsd_gen_unref(g);
	free_config(cfg);
}

static void
run_suite(const char *root)
{
	struct tlsd_kid k;

	kid_start(&k, root);
	test_server_relay(&k);
	test_server_peer_closes(&k);
	test_server_backpressure(&k);
	test_server_peer_resets(&k);
	test_server_speaks_first(&k);
	test_server_sni_ocsp_resume(&k);
	test_server_refusals(&k);
	test_client_verify(&k);
	test_client_relay_resume(&k);
	test_client_names(&k);
	test_server_mint(&k);
	{
		SSL_CTX *a = auth_client_ctx();

		test_server_attest(&k, a);
		SSL_CTX_free(a);
	}
	test_timeout(&k);
	test_garbage(&k);
	CHECK(kid_end(&k));
	kid_start(&k, root);
	test_garbage_fd(&k);
	CHECK(kid_end(&k));
	kid_start(&k, root);
	test_names_too_long(&k);
	CHECK(kid_end(&k));
	kid_start(&k, root);
	test_bad_flags(&k, TLS_SIDE_SERVER, 0x80);
	CHECK(kid_end(&k));
	kid_start(&k, root);
	test_bad_flags(&k, TLS_SIDE_CLIENT, TLS_START_SPEAKS_FIRST);
	CHECK(kid_end(&k));
}

int
main(void)
{
	socklen_t len = sizeof(listen_addr);
	const char *root;

	signal(SIGPIPE, SIG_IGN);
	log_init(LOGT_STDERR, LOGF_TEXT,
	    getenv("TLSD_DEBUG") ? LOG_DEBUG : LOG_NOTICE, "tlsd");
	CHECK(tlsd_openssl_init() == 0);
	make_certs();
	listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&listen_addr, 0, sizeof(listen_addr));
	listen_addr.sin_family = AF_INET;
	listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(listen_fd, (struct sockaddr *)&listen_addr,
	        sizeof(listen_addr)) == -1 ||
	    listen(listen_fd, 16) == -1 ||
	    getsockname(listen_fd, (struct sockaddr *)&listen_addr, &len) ==
	        -1) {
		perror("listen");
		return 1;
	}
	test_ctx_build();
	test_cert_names();
	run_suite(NULL);
	if (geteuid() == 0) {
		root = mkroot();
		run_suite(root);
		rmdir(root);
	} else
		printf("test_tlsd: not root, sandboxed run skipped\n");
	/* After the children: each makes its own key for minted
	 * certificates, the sandboxed one inside its sandbox. */
	test_mint_cache();
	close(listen_fd);
	X509_free(ca_cert);
	X509_free(srv_cert);
	X509_free(alt_cert);
	X509_free(expired_cert);
	X509_free(wrong_cert);
	X509_free(self_cert);
	X509_free(multi_cert);
	X509_free(cnonly_cert);
	X509_free(auth_cert);
	X509_free(short_cert);
	EVP_PKEY_free(auth_key);
	free(auth_pem.data);
	free(auth_key_pem.data);
	free(short_pem.data);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(srv_key);
	free(ca_pem.data);
	free(srv_chain_pem.data);
	free(srv_key_pem.data);
	free(alt_pem.data);
	return test_done("test_tlsd");
}
