/*
 * tlsd: OpenSSL setup and the contexts of a config generation.
 *
 * Everything OpenSSL reads from files (its config, error strings, the
 * random seed, the system CA bundle) is read by tlsd_openssl_init(),
 * before the sandbox: tlsd is chrooted to an empty directory and may not
 * open anything afterwards.  Certificates, keys, CA bundles and OCSP
 * responses come as bytes in the config.
 *
 * Per generation: each certificate is parsed once (leaf, chain, key; the
 * key's PEM bytes are wiped right after), each policy gets one server
 * SSL_CTX per certificate it lists (the first is the default, a
 * servername callback switches to the one whose certificate matches the
 * client's SNI), each server pool one client SSL_CTX.  A policy with a
 * Proxy Authority also gets a template context (its profile, no
 * certificate) that mint.c's certificates are used with; the generation
 * holds the cache of those.  A generation is reference counted:
 * handshakes and relays in progress keep theirs.
 */
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tlsd.h"

/* compliant_only below TLS 1.3: ECDHE key exchange, AEAD ciphers. */
#define TLSD_COMPLIANT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"
#define TLSD_COMPLIANT_SUITES                                  \
	"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:" \
	"TLS_AES_128_GCM_SHA256"

static struct tlsd_gen *current;
static X509_STORE *system_store; /* the system bundle, read at init */
static int openssl_ready;

static int
no_password(char *buf, int size, int rwflag, void *u)
{
	return -1; /* an encrypted key cannot be used: nobody to ask */
}

int
tlsd_openssl_init(void)
{
	unsigned char seed[32];
	const char *file;

	if (openssl_ready)
		return 0;
	if (!OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS |
	                          OPENSSL_INIT_LOAD_CRYPTO_STRINGS |
	                          OPENSSL_INIT_LOAD_CONFIG,
	        NULL)) {
		log_warnx("tls: cannot initialize OpenSSL");
		return -1;
	}
	/* Seeds the DRBG now (getrandom) and proves it works. */
	if (RAND_bytes(seed, sizeof(seed)) != 1) {
		log_warnx("tls: no random numbers");
		return -1;
	}
	OPENSSL_cleanse(seed, sizeof(seed));
	/* A profile without ca_file verifies against the system store. */
	if ((file = getenv(X509_get_default_cert_file_env())) == NULL)
		file = X509_get_default_cert_file();
	if ((system_store = X509_STORE_new()) != NULL &&
	    X509_STORE_load_file(system_store, file) != 1) {
		log_msg(LOG_NOTICE,
		    "tls: cannot load the system CA bundle %s: servers "
		    "verified against it fail",
		    file);
		X509_STORE_free(system_store);
		system_store = NULL;
	}
	ERR_clear_error();
	openssl_ready = 1;
	return 0;
}

void
tlsd_name_text(const X509_NAME *name, char *out, size_t len)
{
	BIO *b;
	int n;

	out[0] = '\0';
	if (name == NULL || (b = BIO_new(BIO_s_mem())) == NULL)
		return;
	if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0 &&
	    (n = BIO_read(b, out, (int)len - 1)) > 0)
		out[n] = '\0';
	BIO_free(b);
}

void
tlsd_error_text(SSL *ssl, unsigned long e, char *out, size_t len)
{
	const char *r;
	long v;

	if (e == 0) {
		snprintf(out, len, "handshake failed");
		return;
	}
	if (ERR_SYSTEM_ERROR(e)) {
		snprintf(out, len, "%s", strerror(ERR_GET_REASON(e)));
		return;
	}
	if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && ssl &&
	    (v = SSL_get_verify_result(ssl)) != X509_V_OK) {
		snprintf(out, len, "certificate verify failed: %s",
		    X509_verify_cert_error_string(v));
		return;
	}
	if ((r = ERR_reason_error_string(e)) != NULL)
		snprintf(out, len, "%s", r);
	else
		snprintf(out, len, "TLS error %lx", e);
}

/* The last OpenSSL error queued, as text, for config messages. */
static void
ssl_err(char *out, size_t len, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	int n;

	n = snprintf(out, len, "%s: ", what);
	if (n > 0 && (size_t)n < len) {
		if (e != 0)
			tlsd_error_text(NULL, e, out + n, len - (size_t)n);
		else
			snprintf(out + n, len - (size_t)n, "failed");
	}
	ERR_clear_error();
}

static void
cert_clear(struct tlsd_cert *c)
{
	free(c->name);
	X509_free(c->leaf);
	sk_X509_pop_free(c->chain, X509_free);
	EVP_PKEY_free(c->key);
	free(c->ocsp);
}

static void
time_text(const ASN1_TIME *t, char *out, size_t len)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, len, "?");
}

static int
cert_load(struct tlsd_cert *c, struct cfg_cert *cc)
{
	BIO *b;
	X509 *x;

	if ((c->name = strdup(cc->name ? cc->name : "")) == NULL)
		return -1;
	if (cc->cert_pem == NULL || cc->key_pem == NULL) {
		snprintf(c->err, sizeof(c->err), "no certificate or key");
		return 0;
	}
	if ((b = BIO_new_mem_buf(cc->cert_pem, (int)cc->cert_len)) == NULL)
		return -1;
	c->leaf = PEM_read_bio_X509(b, NULL, no_password, NULL);
	if ((c->chain = sk_X509_new_null()) == NULL) {
		BIO_free(b);
		return -1;
	}
	while ((x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL)
		if (!sk_X509_push(c->chain, x)) {
			X509_free(x);
			BIO_free(b);
			return -1;
		}
	BIO_free(b);
	ERR_clear_error(); /* the end of the PEM data */
	if (c->leaf == NULL) {
		snprintf(c->err, sizeof(c->err), "no certificate in %s",
		    cc->cert ? cc->cert : "its PEM");
		return 0;
	}
	tlsd_name_text(
	    X509_get_subject_name(c->leaf), c->subject, sizeof(c->subject));
	time_text(
	    X509_get0_notAfter(c->leaf), c->notafter, sizeof(c->notafter));
	if ((b = BIO_new_mem_buf(cc->key_pem, (int)cc->key_len)) == NULL)
		return -1;
	c->key = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
	BIO_free(b);
	if (c->key == NULL) {
		ssl_err(c->err, sizeof(c->err), "private key");
		return 0;
	}
	if (X509_check_private_key(c->leaf, c->key) != 1) {
		ssl_err(c->err, sizeof(c->err),
		    "private key does not match the certificate");
		return 0;
	}
	if (cc->ocsp_der != NULL && cc->ocsp_len > 0) {
		if ((c->ocsp = malloc(cc->ocsp_len)) == NULL)
			return -1;
		memcpy(c->ocsp, cc->ocsp_der, cc->ocsp_len);
		c->ocsp_len = cc->ocsp_len;
	}
	return 0;
}

/* The profile's settings common to both sides. -1 with err set. */
static int
ctx_profile(SSL_CTX *ctx, const struct cfg_tls_profile *p, int server,
    char *err, size_t errlen)
{
	int minv = p->min_version ? p->min_version : TLS1_2_VERSION;
	long secs;

	if (p->compliant_only && minv < TLS1_2_VERSION)
		minv = TLS1_2_VERSION;
	if (!SSL_CTX_set_min_proto_version(ctx, minv)) {
		ssl_err(err, errlen, "min_version");
		return -1;
	}
	if (p->compliant_only) {
		if (!SSL_CTX_set_cipher_list(ctx, TLSD_COMPLIANT_CIPHERS) ||
		    !SSL_CTX_set_ciphersuites(
		        ctx, p->ciphersuites ? p->ciphersuites
		                             : TLSD_COMPLIANT_SUITES)) {
			ssl_err(err, errlen, "compliant ciphers");
			return -1;
		}
		SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
		if (server)
			SSL_CTX_set_options(
			    ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	} else {
		if (p->ciphers && !SSL_CTX_set_cipher_list(ctx, p->ciphers)) {
			ssl_err(err, errlen, "ciphers");
			return -1;
		}
		if (p->ciphersuites &&
		    !SSL_CTX_set_ciphersuites(ctx, p->ciphersuites)) {
			ssl_err(err, errlen, "ciphersuites");
			return -1;
		}
	}
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* One read() takes what the peer sent (the records of a flight
	 * together), not a header and then a body for each record. */
	SSL_CTX_set_read_ahead(ctx, 1);
	/*
	 * A TCP EOF without close_notify is a plain EOF: many IMAP clients
	 * end that way, and as a fatal error it would also drop the
	 * session from the cache (no resumption).  conn.c still logs it as
	 * a truncation, from the alerts it saw.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	secs = (long)(p->session_timeout_ms / 1000);
	if (p->session_cache) {
		SSL_CTX_set_session_cache_mode(
		    ctx, server ? SSL_SESS_CACHE_SERVER
		                : SSL_SESS_CACHE_CLIENT |
		                      SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_set_timeout(ctx, secs > 0 ? secs : 300);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		if (server)
			SSL_CTX_set_num_tickets(ctx, 0);
	}
	return 0;
}

/* Servername callback: the context whose certificate has the name. */
static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct tlsd_policy *pol = arg;
	const char *name;
	size_t i;

	name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (name == NULL || *name == '\0')
		return SSL_TLSEXT_ERR_OK;
	for (i = 0; i < pol->n; i++) {
		if (X509_check_host(pol->cert[i]->leaf, name, 0, 0, NULL) != 1)
			continue;
		if (i > 0 && SSL_set_SSL_CTX(ssl, pol->ctx[i]) == NULL)
			return SSL_TLSEXT_ERR_ALERT_FATAL;
		return SSL_TLSEXT_ERR_OK;
	}
	return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

/* OCSP stapling: the context's certificate's response, if it has one. */
static int
status_cb(SSL *ssl, void *arg)
{
	struct tlsd_cert *c = arg;
	unsigned char *copy;

	if (c == NULL || c->ocsp == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	if ((copy = OPENSSL_memdup(c->ocsp, c->ocsp_len)) == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	if (!SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)c->ocsp_len)) {
		OPENSSL_free(copy);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* A policy's server context with its profile: no certificate yet. */
static SSL_CTX *
server_ctx_base(struct tlsd_policy *pol, const struct cfg_tls_profile *p,
    char *err, size_t errlen)
{
	SSL_CTX *ctx;
	size_t idlen;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		ssl_err(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	if (ctx_profile(ctx, p, 1, err, errlen) == -1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* Sessions belong to the policy: its contexts share the id. */
	idlen = strlen(pol->name);
	if (idlen > SSL_MAX_SID_CTX_LENGTH)
		idlen = SSL_MAX_SID_CTX_LENGTH;
	SSL_CTX_set_session_id_context(
	    ctx, (const unsigned char *)pol->name, (unsigned int)idlen);
	return ctx;
}

static SSL_CTX *
server_ctx(struct tlsd_policy *pol, struct tlsd_cert *c,
    const struct cfg_tls_profile *p)
{
	SSL_CTX *ctx;
	size_t i;

	if ((ctx = server_ctx_base(pol, p, pol->err, sizeof(pol->err))) == NULL)
		return NULL;
	if (SSL_CTX_use_certificate(ctx, c->leaf) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, c->key) != 1) {
		ssl_err(pol->err, sizeof(pol->err), c->name);
		goto fail;
	}
	for (i = 0; i < (size_t)sk_X509_num(c->chain); i++)
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(c->chain, i)) !=
		    1) {
			ssl_err(pol->err, sizeof(pol->err), "chain");
			goto fail;
		}
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, pol);
	SSL_CTX_set_tlsext_status_cb(ctx, status_cb);
	SSL_CTX_set_tlsext_status_arg(ctx, c);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* The Proxy Authority of a policy: its certificate and the template
 * context minted certificates are used with (mint.c). */
static void
authority_build(struct tlsd_gen *g, struct tlsd_policy *pol, int idx,
    const struct cfg_tls_profile *p)
{
	struct tlsd_cert *c;

	pol->has_authority = 1;
	if (idx < 0 || (size_t)idx >= g->ncerts) {
		snprintf(pol->mint_err, sizeof(pol->mint_err),
		    "policy %s: no Proxy Authority certificate", pol->name);
		return;
	}
	c = &g->certs[idx];
	if (c->err[0]) {
		snprintf(pol->mint_err, sizeof(pol->mint_err),
		    "policy %s: Proxy Authority %s: %s", pol->name, c->name,
		    c->err);
		return;
	}
	if (X509_check_ca(c->leaf) == 0) {
		snprintf(pol->mint_err, sizeof(pol->mint_err),
		    "policy %s: Proxy Authority %s is not a CA certificate",
		    pol->name, c->name);
		return;
	}
	if ((pol->mint_ctx = server_ctx_base(
	         pol, p, pol->mint_err, sizeof(pol->mint_err))) == NULL)
		return;
	pol->authority = c;
	if (tlsd_attest_key(pol) == -1) {
		snprintf(pol->mint_err, sizeof(pol->mint_err),
		    "policy %s: Proxy Authority %s: cannot derive the attest "
		    "key",
		    pol->name, c->name);
		pol->authority = NULL;
	}
}

static int
policy_build(struct tlsd_gen *g, struct tlsd_policy *pol,
    const struct config *cfg, const struct cfg_policy *cp)
{
	const struct cfg_tls_profile *p;
	struct tlsd_cert *c;
	size_t i;
	int idx;

	pol->gen = g;
	if ((pol->name = strdup(cp->name ? cp->name : "")) == NULL)
		return -1;
	if (cp->tls.ncerts == 0 && cp->tls.authority_idx < 0) {
		snprintf(pol->err, sizeof(pol->err),
		    "policy %s has no TLS certificate", pol->name);
		return 0;
	}
	if (cp->tls.profileidx < 0 ||
	    (size_t)cp->tls.profileidx >= cfg->nprofiles) {
		snprintf(pol->err, sizeof(pol->err), "policy %s: no profile",
		    pol->name);
		if (cp->tls.authority_idx >= 0) {
			pol->has_authority = 1;
			snprintf(pol->mint_err, sizeof(pol->mint_err), "%s",
			    pol->err);
		}
		return 0;
	}
	p = &cfg->profiles[cp->tls.profileidx];
	if (cp->tls.authority_idx >= 0)
		authority_build(g, pol, cp->tls.authority_idx, p);
	if (cp->tls.ncerts == 0) {
		snprintf(pol->err, sizeof(pol->err),
		    "policy %s has no TLS certificate", pol->name);
		return 0;
	}
	if ((pol->ctx = calloc(cp->tls.ncerts, sizeof(*pol->ctx))) == NULL ||
	    (pol->cert = calloc(cp->tls.ncerts, sizeof(*pol->cert))) == NULL)
		return -1;
	for (i = 0; i < cp->tls.ncerts; i++) {
		idx = cp->tls.certidx[i];
		if (idx < 0 || (size_t)idx >= g->ncerts) {
			snprintf(pol->err, sizeof(pol->err),
			    "policy %s: no certificate %zu", pol->name, i);
			return 0;
		}
		c = &g->certs[idx];
		if (c->err[0]) {
			snprintf(pol->err, sizeof(pol->err),
			    "policy %s: certificate %s: %s", pol->name, c->name,
			    c->err);
			return 0;
		}
		pol->cert[pol->n] = c;
		if ((pol->ctx[pol->n] = server_ctx(pol, c, p)) == NULL)
			return 0;
		pol->n++;
	}
	return 0;
}

static X509_STORE *
store_from_pem(const uint8_t *pem, size_t len, char *err, size_t errlen)
{
	X509_STORE *st;
	X509 *x;
	BIO *b;
	int n = 0;

	if ((st = X509_STORE_new()) == NULL)
		return NULL;
	if ((b = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		X509_STORE_free(st);
		return NULL;
	}
	while ((x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL) {
		if (X509_STORE_add_cert(st, x) == 1)
			n++;
		X509_free(x);
	}
	BIO_free(b);
	ERR_clear_error();
	if (n == 0) {
		snprintf(err, errlen, "no CA certificate in ca_file");
		X509_STORE_free(st);
		return NULL;
	}
	return st;
}

static int
pool_build(
    struct tlsd_pool *pl, const struct config *cfg, const struct cfg_server *cs)
{
	const struct cfg_tls_profile *p;
	X509_STORE *st;

	if ((pl->name = strdup(cs->name ? cs->name : "")) == NULL)
		return -1;
	if (cs->tls == SRV_TLS_NONE) {
		/* Not logged: nothing asks for TLS to it. */
		snprintf(pl->err, sizeof(pl->err), "server %s does not use TLS",
		    pl->name);
		return 0;
	}
	if (cs->profileidx < 0 || (size_t)cs->profileidx >= cfg->nprofiles) {
		snprintf(pl->err, sizeof(pl->err), "server %s: no profile",
		    pl->name);
		return 0;
	}
	p = &cfg->profiles[cs->profileidx];
	if ((pl->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		ssl_err(pl->err, sizeof(pl->err), "SSL_CTX_new");
		return 0;
	}
	if (ctx_profile(pl->ctx, p, 0, pl->err, sizeof(pl->err)) == -1)
		goto fail;
	pl->session_cache = p->session_cache;
	if (p->session_cache)
		SSL_CTX_sess_set_new_cb(pl->ctx, tlsd_conn_new_session);
	if (!p->verify_peer) {
		SSL_CTX_set_verify(pl->ctx, SSL_VERIFY_NONE, NULL);
		return 0;
	}
	SSL_CTX_set_verify(pl->ctx, SSL_VERIFY_PEER, NULL);
	if (p->ca_pem != NULL && p->ca_len > 0)
		st = store_from_pem(
		    p->ca_pem, p->ca_len, pl->err, sizeof(pl->err));
	else if ((st = system_store) != NULL)
		X509_STORE_up_ref(st);
	else
		snprintf(pl->err, sizeof(pl->err),
		    "no CA certificates to verify server %s", pl->name);
	if (st == NULL)
		goto fail;
	SSL_CTX_set_cert_store(pl->ctx, st);
	return 0;
fail:
	SSL_CTX_free(pl->ctx);
	pl->ctx = NULL;
	if (pl->err[0] == '\0')
		snprintf(pl->err, sizeof(pl->err), "server %s: no context",
		    pl->name);
	return 0;
}

static void
gen_free(struct tlsd_gen *g)
{
	size_t i, j;

	tlsd_mint_free_all(g);
	for (i = 0; i < g->npolicies; i++) {
		for (j = 0; j < g->policies[i].n; j++)
			SSL_CTX_free(g->policies[i].ctx[j]);
		SSL_CTX_free(g->policies[i].mint_ctx);
		free(g->policies[i].ctx);
		free(g->policies[i].cert);
		free(g->policies[i].name);
	}
	for (i = 0; i < g->npools; i++) {
		SSL_CTX_free(g->pools[i].ctx);
		SSL_SESSION_free(g->pools[i].last);
		free(g->pools[i].last_name);
		free(g->pools[i].name);
	}
	for (i = 0; i < g->ncerts; i++)
		cert_clear(&g->certs[i]);
	free(g->policies);
	free(g->pools);
	free(g->certs);
	free(g);
}

static void
gen_log(const struct tlsd_gen *g)
{
	struct buf b;
	char gen[16];
	size_t i;

	buf_init(&b, 0);
	for (i = 0; i < g->ncerts; i++) {
		if (g->certs[i].err[0])
			buf_printf(&b, "%s%s (unusable: %s)", i ? "; " : "",
			    g->certs[i].name, g->certs[i].err);
		else
			buf_printf(&b, "%s%s (subject %s, not after %s%s)",
			    i ? "; " : "", g->certs[i].name,
			    g->certs[i].subject, g->certs[i].notafter,
			    g->certs[i].ocsp ? ", OCSP staple" : "");
	}
	buf_add(&b, "", 1);
	snprintf(gen, sizeof(gen), "%u", g->generation);
	log_event(LOG_INFO, "tls config", "generation", gen, "certificates",
	    g->ncerts ? (char *)buf_head(&b) : "none", NULL);
	buf_free(&b);
	for (i = 0; i < g->npolicies; i++)
		if (g->policies[i].err[0] && g->policies[i].ncerts_wanted)
			log_warnx("tls: %s", g->policies[i].err);
	for (i = 0; i < g->npolicies; i++)
		if (g->policies[i].mint_err[0])
			log_warnx("tls: %s", g->policies[i].mint_err);
	for (i = 0; i < g->npools; i++)
		if (g->pools[i].err[0] && g->pools[i].uses_tls)
			log_warnx("tls: %s", g->pools[i].err);
}

struct tlsd_gen *
tlsd_gen_build(struct config *cfg)
{
	struct tlsd_gen *g;
	struct cfg_cert *cc;
	size_t i;

	if ((g = calloc(1, sizeof(*g))) == NULL)
		return NULL;
	g->refs = 1;
	g->generation = cfg->generation;
	if ((cfg->ncerts &&
	        (g->certs = calloc(cfg->ncerts, sizeof(*g->certs))) == NULL) ||
	    (cfg->npolicies && (g->policies = calloc(cfg->npolicies,
	                            sizeof(*g->policies))) == NULL) ||
	    (cfg->nservers &&
	        (g->pools = calloc(cfg->nservers, sizeof(*g->pools))) == NULL))
		goto fail;
	for (i = 0; i < cfg->ncerts; i++) {
		cc = &cfg->certs[i];
		g->ncerts++;
		if (cert_load(&g->certs[i], cc) == -1)
			goto fail;
		/* Parsed: the key lives in the EVP_PKEY only. */
		if (cc->key_pem != NULL)
			explicit_bzero(cc->key_pem, cc->key_len);
	}
	for (i = 0; i < cfg->npolicies; i++) {
		g->npolicies++;
		g->policies[i].ncerts_wanted = cfg->policies[i].tls.ncerts;
		if (policy_build(g, &g->policies[i], cfg, &cfg->policies[i]) ==
		    -1)
			goto fail;
	}
	for (i = 0; i < cfg->nservers; i++) {
		g->npools++;
		g->pools[i].uses_tls = cfg->servers[i].tls != SRV_TLS_NONE;
		if (pool_build(&g->pools[i], cfg, &cfg->servers[i]) == -1)
			goto fail;
	}
	ERR_clear_error();
	gen_log(g);
	return g;
fail:
	log_warnx("tls: out of memory building the contexts");
	for (i = 0; i < cfg->ncerts; i++)
		if (cfg->certs[i].key_pem != NULL)
			explicit_bzero(
			    cfg->certs[i].key_pem, cfg->certs[i].key_len);
	gen_free(g);
	return NULL;
}

void
tlsd_gen_ref(struct tlsd_gen *g)
{
	g->refs++;
}

void
tlsd_gen_unref(struct tlsd_gen *g)
{
	if (g != NULL && --g->refs == 0)
		gen_free(g);
}

void
tlsd_set_current(struct tlsd_gen *g)
{
	if (g != NULL)
		tlsd_gen_ref(g);
	tlsd_gen_unref(current);
	current = g;
}

struct tlsd_gen *
tlsd_current(void)
{
	return current;
}

struct tlsd_policy *
tlsd_find_policy(struct tlsd_gen *g, const char *name)
{
	size_t i;

	for (i = 0; g && i < g->npolicies; i++)
		if (strcmp(g->policies[i].name, name) == 0)
			return &g->policies[i];
	return NULL;
}

struct tlsd_pool *
tlsd_find_pool(struct tlsd_gen *g, const char *name)
{
	size_t i;

	for (i = 0; g && i < g->npools; i++)
		if (strcmp(g->pools[i].name, name) == 0)
			return &g->pools[i];
	return NULL;
}

void
tlsd_pool_keep(struct tlsd_pool *pl, const char *name, SSL_SESSION *sess)
{
	char *n;

	if ((n = strdup(name)) == NULL) {
		SSL_SESSION_free(sess);
		return;
	}
	SSL_SESSION_free(pl->last);
	free(pl->last_name);
	pl->last = sess;
	pl->last_name = n;
}
