/*
 * tlsd internals, shared by its files and the unit tests.
 *
 *   ctx.c    OpenSSL setup (before the sandbox) and, per config
 *            generation, the SSL_CTXs: per policy one per certificate
 *            (SNI picks), per server pool one client context.
 *   mint.c   certificate names; the Proxy Authority's certificates,
 *            made on the fly and cached per generation.
 *   conn.c   IMSG_TLS_START: handshake under libevent, IMSG_TLS_DONE,
 *            then the relay between TLS and netd's plaintext socketpair.
 *   tlsd.c   the worker: hooks into the common worker loop.
 */
#ifndef IMAPGW_TLSD_H
#define IMAPGW_TLSD_H

#include <stdint.h>

#include <openssl/ssl.h>

#include <event2/event.h>

#include "config.h"
#include "proc.h"

/* Relay buffers: at most this many bytes wait in tlsd in each direction;
 * also the SO_SNDBUF of both socketpair ends. */
#define TLSD_RELAY_MAX (256 * 1024)
/* After netd's EOF (close_notify sent), how long the peer has to close. */
#define TLSD_LINGER_MS 60000
/* Minted certificates: names at most, validity, cache size, reuse. */
#define TLSD_MINT_NAMES 64
#define TLSD_MINT_DAYS 7
#define TLSD_MINT_CACHE 256
#define TLSD_MINT_REUSE_SECS (24 * 3600)

struct tlsd_cert {
	char *name;
	X509 *leaf;
	STACK_OF(X509) * chain;
	EVP_PKEY *key;
	uint8_t *ocsp; /* DER OCSP response to staple, or NULL */
	size_t ocsp_len;
	char subject[256];
	char notafter[32];
	char err[160]; /* why it is unusable, "" if usable */
};

struct tlsd_gen;
struct tlsd_mint;

/* A policy's server side: one context per certificate, [0] the default. */
struct tlsd_policy {
	char *name;
	struct tlsd_gen *gen;
	SSL_CTX **ctx;
	struct tlsd_cert **cert;
	size_t n;
	size_t ncerts_wanted; /* as configured */
	char err[200]; /* why it cannot serve, "" if it can */
	/* The Proxy Authority: names from netd get a minted certificate. */
	int has_authority; /* configured (usable or not) */
	struct tlsd_cert *authority; /* NULL: unusable, see mint_err */
	SSL_CTX *mint_ctx; /* the profile's settings, no certificate */
	char mint_err[200];
	/* Key of the names attests (common/tls.h), derived from the
	 * authority's private key; valid when authority is set. */
	uint8_t attest_key[32];
};

/* A server pool's client side. */
struct tlsd_pool {
	char *name;
	SSL_CTX *ctx;
	int uses_tls; /* tls: starttls or implicit */
	int session_cache;
	SSL_SESSION *last; /* the last session, for resumption */
	char *last_name; /* the name it was made for */
	char err[200];
};

/* The contexts of one config generation; connections hold a reference. */
struct tlsd_gen {
	int refs;
	uint32_t generation;
	struct tlsd_cert *certs;
	size_t ncerts;
	struct tlsd_policy *policies;
	size_t npolicies;
	struct tlsd_pool *pools;
	size_t npools;
	/* Minted certificates, most recently used first. */
	struct tlsd_mint *mints, *mints_tail;
	size_t nmints;
};

/* Once, before the sandbox: library init, config file, error strings,
 * random seed, the system CA store.  -1 if OpenSSL is unusable. */
int tlsd_openssl_init(void);
/* Build the contexts of cfg (never NULL but on memory exhaustion; what
 * cannot be loaded is logged and fails its handshakes).  Wipes the key
 * PEM bytes of cfg.  Logs one line: the certificates loaded. */
struct tlsd_gen *tlsd_gen_build(struct config *cfg);
void tlsd_gen_ref(struct tlsd_gen *);
void tlsd_gen_unref(struct tlsd_gen *);
/* The generation new handshakes use (a reference is taken). */
void tlsd_set_current(struct tlsd_gen *);
struct tlsd_gen *tlsd_current(void);
struct tlsd_policy *tlsd_find_policy(struct tlsd_gen *, const char *);
struct tlsd_pool *tlsd_find_pool(struct tlsd_gen *, const char *);
/* "certificate verify failed: hostname mismatch", ... for an SSL error
 * code (0: none) and the connection's SSL. */
void tlsd_error_text(SSL *, unsigned long err, char *, size_t);
/* X509 name as RFC 2253 text ("CN=localhost,O=x"). */
void tlsd_name_text(const X509_NAME *, char *, size_t);
/* Keep sess (a reference passed) as pool's session for name. */
void tlsd_pool_keep(struct tlsd_pool *, const char *name, SSL_SESSION *);

/* mint.c */
/* The names of a server's certificate, for DONE (common/tls.h): its
 * DNS and IP subjectAltNames, its CNs when it has no DNS one; names
 * the parser would refuse are left out; cut at a whole name to fit len
 * and TLSD_MINT_NAMES. */
void tlsd_cert_names(X509 *, char *, size_t len);
/* A new SSL of pol (with a Proxy Authority) presenting a certificate for
 * names, minted or from the cache.  NULL with why set ("bad names: ..."). */
SSL *tlsd_mint_ssl(
    struct tlsd_policy *, const char *names, char *why, size_t len);
void tlsd_mint_free_all(struct tlsd_gen *);
/* The attest key of pol from its authority's key: 0, or -1. */
int tlsd_attest_key(struct tlsd_policy *);
/* The attest of names (common/tls.h) in out (TLS_MAX_ATTEST + 1), good
 * until expiry (CLOCK_MONOTONIC seconds; 0: TLS_ATTEST_SECS from now). */
void tlsd_attest(
    const struct tlsd_policy *, const char *names, uint64_t expiry, char *out);
/* 0: attest is pol's for names and has not expired; -1 with why set. */
int tlsd_attest_check(const struct tlsd_policy *, const char *names,
    const char *attest, char *why, size_t len);
/* Certificates minted (cache misses) by this process. */
uint64_t tlsd_minted(void);

/* conn.c */
/* A frame from a netd peer: IMSG_TLS_START (anything else fails the
 * channel). */
void tlsd_peer_frame(struct proc_chan *, struct imsg *);
/* A peer channel is going away. */
void tlsd_peer_gone(struct proc_chan *);
/* The loop, and the handshake timeout (TLS_HANDSHAKE_TIMEOUT_MS). */
void tlsd_conn_init(struct event_base *, int timeout_ms);
/* A client context's new session callback: keep it for its pool. */
int tlsd_conn_new_session(SSL *, SSL_SESSION *);
/* Connections (handshaking or relaying) and handshakes done. */
unsigned int tlsd_sessions(void);
uint64_t tlsd_total(void);
/* End every connection now (tests, exit). */
void tlsd_conn_free_all(void);

#endif
