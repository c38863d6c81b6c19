/*
 * tlsd: certificate names, and the Proxy Authority's certificates.
 *
 * Names lists (common/tls.h) are "DNS:a.example,DNS:*.b.example,
 * IP:192.0.2.1,IP:2001:db8::1": comma-separated, no spaces, each item
 * DNS:<host name> (LDH labels of 1..63 bytes, at most 253 bytes, a
 * leading "*." wildcard followed by at least two labels) or IP:<an IPv4
 * or IPv6 address>, at most TLSD_MINT_NAMES items and TLS_MAX_NAMES
 * bytes.  tlsd_cert_names() makes one from a server's certificate (what
 * the parser would refuse is left out), tlsd_mint_ssl() parses one
 * strictly and presents a certificate for exactly those names.
 *
 * A minted certificate: X509 v3, a random positive 128-bit serial,
 * valid from an hour ago for TLSD_MINT_DAYS (never beyond the
 * authority's notAfter), subject CN the first DNS name (or the first
 * address), subjectAltName the names, CA:FALSE, keyUsage
 * digitalSignature, extendedKeyUsage serverAuth, subject and authority
 * key identifiers, signed by the authority's key (SHA-256).  Its key is
 * one EC P-256 key per tlsd worker, made on first use (inside the
 * sandbox: that needs getrandom only).  Certificates are cached per
 * config generation (they go with it), by authority and names, most
 * recently used first, at most TLSD_MINT_CACHE, each reused for at most
 * TLSD_MINT_REUSE_SECS.  The connection gets the policy's template
 * context (its profile, no certificate) with the minted certificate,
 * the worker key and the authority's chain set on its SSL.
 */
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"
#include "tlsd.h"

#define CN_MAX 64 /* ub-common-name */

struct tlsd_mint {
	struct tlsd_mint *next, *prev;
	const struct tlsd_cert *authority;
	char *names;
	X509 *leaf;
	time_t made;
};

static EVP_PKEY *mint_key; /* this worker's key for minted certificates */
static uint64_t nminted;

uint64_t
tlsd_minted(void)
{
	return nminted;
}

/* A DNS name as the names list allows it: LDH labels, "*." first. */
static int
host_ok(const char *s, size_t n)
{
	size_t i, label = 0, labels = 0;
	int wild = 0;

	if (n >= 2 && s[0] == '*' && s[1] == '.') {
		wild = 1;
		s += 2;
		n -= 2;
	}
	if (n == 0 || n > (size_t)(wild ? 251 : 253))
		return 0;
	for (i = 0; i <= n; i++) {
		if (i == n || s[i] == '.') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return 0;
			labels++;
			label = 0;
			continue;
		}
		if (!isascii((unsigned char)s[i]) ||
		    !(isalnum((unsigned char)s[i]) ||
		        (s[i] == '-' && label > 0)))
			return 0;
		label++;
	}
	return !wild || labels >= 2;
}

/* Append "kind:text" to out (len bytes with the NUL), unless it does not
 * fit: 0 then. */
static int
names_add(char *out, size_t len, size_t *used, const char *kind,
    const char *text, size_t tlen)
{
	size_t need = (*used ? 1 : 0) + strlen(kind) + tlen;

	if (*used + need >= len)
		return 0;
	snprintf(out + *used, len - *used, "%s%s%.*s", *used ? "," : "", kind,
	    (int)tlen, text);
	*used += need;
	return 1;
}

void
tlsd_cert_names(X509 *x, char *out, size_t len)
{
	GENERAL_NAMES *gens;
	const GENERAL_NAME *gn;
	const ASN1_STRING *s;
	const X509_NAME *subj;
	char addr[INET6_ADDRSTRLEN];
	size_t used = 0, count = 0;
	int i, ndns = 0, full = 0;

	out[0] = '\0';
	if (x == NULL || len == 0)
		return;
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (i = 0; i < sk_GENERAL_NAME_num(gens) && !full; i++) {
		gn = sk_GENERAL_NAME_value(gens, i);
		if (gn->type == GEN_DNS) {
			s = gn->d.dNSName;
			ndns++;
			if (!host_ok((const char *)ASN1_STRING_get0_data(s),
			        (size_t)ASN1_STRING_length(s)))
				continue;
			full =
			    count == TLSD_MINT_NAMES ||
			    !names_add(out, len, &used,
			        "DNS:", (const char *)ASN1_STRING_get0_data(s),
			        (size_t)ASN1_STRING_length(s));
		} else if (gn->type == GEN_IPADD) {
			s = gn->d.iPAddress;
			if ((ASN1_STRING_length(s) != 4 &&
			        ASN1_STRING_length(s) != 16) ||
			    inet_ntop(
			        ASN1_STRING_length(s) == 4 ? AF_INET : AF_INET6,
			        ASN1_STRING_get0_data(s), addr,
			        sizeof(addr)) == NULL)
				continue;
			full = count == TLSD_MINT_NAMES ||
			       !names_add(
			           out, len, &used, "IP:", addr, strlen(addr));
		} else
			continue;
		if (!full)
			count++;
	}
	GENERAL_NAMES_free(gens);
	/* No DNS name: the CN stands for it, as X509_check_host() has it. */
	subj = X509_get_subject_name(x);
	for (i = -1;
	     ndns == 0 && !full &&
	     (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;) {
		s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
		if (ASN1_STRING_type(s) == V_ASN1_BMPSTRING ||
		    ASN1_STRING_type(s) == V_ASN1_UNIVERSALSTRING ||
		    !host_ok((const char *)ASN1_STRING_get0_data(s),
		        (size_t)ASN1_STRING_length(s)))
			continue;
		full = count == TLSD_MINT_NAMES ||
		       !names_add(out, len, &used,
		           "DNS:", (const char *)ASN1_STRING_get0_data(s),
		           (size_t)ASN1_STRING_length(s));
		if (!full)
			count++;
	}
}

/*
 * Parse a names list strictly into *gens and *cn (the subject's CN, or
 * "" for none).  -1 with why set.
 */
static int
names_parse(const char *names, GENERAL_NAMES **gensp, char *cn, size_t cnlen,
    char *why, size_t len)
{
	GENERAL_NAMES *gens;
	GENERAL_NAME *gn;
	ASN1_STRING *val;
	const char *p = names, *end, *v;
	char item[TLS_MAX_NAME + 1], firstip[INET6_ADDRSTRLEN] = "";
	unsigned char a[16];
	size_t n, count = 0;
	int isip;

	cn[0] = '\0';
	if (strlen(names) > TLS_MAX_NAMES) {
		snprintf(
		    why, len, "bad names: longer than %d bytes", TLS_MAX_NAMES);
		return -1;
	}
	if ((gens = sk_GENERAL_NAME_new_null()) == NULL) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	for (;;) {
		end = strchr(p, ',');
		n = end ? (size_t)(end - p) : strlen(p);
		if (++count > TLSD_MINT_NAMES) {
			snprintf(why, len, "bad names: more than %d",
			    TLSD_MINT_NAMES);
			goto fail;
		}
		isip = n > 3 && strncmp(p, "IP:", 3) == 0;
		if (!isip && !(n > 4 && strncmp(p, "DNS:", 4) == 0))
			goto bad;
		v = p + (isip ? 3 : 4);
		n -= (size_t)(v - p);
		if (n >= sizeof(item))
			goto bad;
		memcpy(item, v, n);
		item[n] = '\0';
		if (isip) {
			if (inet_pton(AF_INET, item, a) == 1)
				n = 4;
			else if (inet_pton(AF_INET6, item, a) == 1)
				n = 16;
			else
				goto bad;
			if (firstip[0] == '\0' &&
			    strlen(item) < sizeof(firstip))
				memcpy(firstip, item, strlen(item) + 1);
		} else if (!host_ok(item, n))
			goto bad;
		else if (cn[0] == '\0' && n <= CN_MAX && n < cnlen)
			memcpy(cn, item, n + 1);
		/* An iPAddress is an OCTET STRING, a dNSName an IA5String. */
		if ((gn = GENERAL_NAME_new()) == NULL ||
		    (val = ASN1_STRING_type_new(
		         isip ? V_ASN1_OCTET_STRING : V_ASN1_IA5STRING)) ==
		        NULL) {
			GENERAL_NAME_free(gn);
			goto nomem;
		}
		GENERAL_NAME_set0_value(gn, isip ? GEN_IPADD : GEN_DNS, val);
		if (!ASN1_STRING_set(val, isip ? (void *)a : item, (int)n)) {
			GENERAL_NAME_free(gn);
			goto nomem;
		}
		if (!sk_GENERAL_NAME_push(gens, gn)) {
			GENERAL_NAME_free(gn);
			goto nomem;
		}
		if (end == NULL)
			break;
		p = end + 1;
	}
	if (cn[0] == '\0' && strlen(firstip) < cnlen)
		memcpy(cn, firstip, strlen(firstip) + 1);
	*gensp = gens;
	return 0;
bad:
	snprintf(why, len,
	    "bad names: item %zu is not DNS:<host name> or "
	    "IP:<address>",
	    count);
	goto fail;
nomem:
	snprintf(why, len, "out of memory");
fail:
	GENERAL_NAMES_free(gens);
	return -1;
}

static int
add_ext(X509 *x, X509 *ca, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value)) == NULL)
		return 0;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

/* A new certificate for gens signed by pol's authority.  NULL with why. */
static X509 *
mint(const struct tlsd_policy *pol, GENERAL_NAMES *gens, const char *cn,
    char *why, size_t len)
{
	const struct tlsd_cert *auth = pol->authority;
	const EVP_MD *md = EVP_sha256();
	unsigned char rnd[16];
	time_t now = time(NULL);
	BIGNUM *bn = NULL;
	X509 *x;

	if (X509_cmp_time(X509_get0_notAfter(auth->leaf), &now) <= 0) {
		snprintf(
		    why, len, "the Proxy Authority %s has expired", auth->name);
		return NULL;
	}
	if (mint_key == NULL && (mint_key = EVP_EC_gen("P-256")) == NULL) {
		snprintf(why, len, "cannot make a key");
		return NULL;
	}
	/* Ed25519 and Ed448 sign without a separate digest. */
	if (EVP_PKEY_get_id(auth->key) == EVP_PKEY_ED25519 ||
	    EVP_PKEY_get_id(auth->key) == EVP_PKEY_ED448)
		md = NULL;
	if ((x = X509_new()) == NULL || !X509_set_version(x, X509_VERSION_3) ||
	    RAND_bytes(rnd, sizeof(rnd)) != 1)
		goto fail;
	rnd[0] = (rnd[0] & 0x7f) | 0x40; /* positive, 16 bytes */
	if ((bn = BN_bin2bn(rnd, sizeof(rnd), NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    X509_time_adj_ex(X509_getm_notBefore(x), 0, -3600, &now) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), TLSD_MINT_DAYS, 0, &now) ==
	        NULL)
		goto fail;
	if (ASN1_TIME_compare(
	        X509_get0_notAfter(x), X509_get0_notAfter(auth->leaf)) > 0 &&
	    !X509_set1_notAfter(x, X509_get0_notAfter(auth->leaf)))
		goto fail;
	if (!X509_set_issuer_name(x, X509_get_subject_name(auth->leaf)) ||
	    (cn[0] != '\0' &&
	        !X509_NAME_add_entry_by_NID(X509_get_subject_name(x),
	            NID_commonName, MBSTRING_ASC, (const unsigned char *)cn, -1,
	            -1, 0)) ||
	    !X509_set_pubkey(x, mint_key) ||
	    /* Critical when it is all there is (RFC 5280 4.2.1.6). */
	    X509_add1_ext_i2d(x, NID_subject_alt_name, gens, cn[0] == '\0',
	        X509V3_ADD_DEFAULT) != 1 ||
	    !add_ext(
	        x, auth->leaf, NID_basic_constraints, "critical,CA:FALSE") ||
	    !add_ext(
	        x, auth->leaf, NID_key_usage, "critical,digitalSignature") ||
	    !add_ext(x, auth->leaf, NID_ext_key_usage, "serverAuth") ||
	    !add_ext(x, auth->leaf, NID_subject_key_identifier, "hash") ||
	    !add_ext(
	        x, auth->leaf, NID_authority_key_identifier, "keyid,issuer") ||
	    X509_sign(x, auth->key, md) <= 0)
		goto fail;
	BN_free(bn);
	return x;
fail:
	tlsd_error_text(NULL, ERR_peek_last_error(), why, len);
	ERR_clear_error();
	BN_free(bn);
	X509_free(x);
	return NULL;
}

static void
mint_unlink(struct tlsd_gen *g, struct tlsd_mint *m)
{
	if (m->prev)
		m->prev->next = m->next;
	else
		g->mints = m->next;
	if (m->next)
		m->next->prev = m->prev;
	else
		g->mints_tail = m->prev;
	m->next = m->prev = NULL;
	g->nmints--;
}

static void
mint_free(struct tlsd_mint *m)
{
	free(m->names);
	X509_free(m->leaf);
	free(m);
}

void
tlsd_mint_free_all(struct tlsd_gen *g)
{
	struct tlsd_mint *m;

	while ((m = g->mints) != NULL) {
		mint_unlink(g, m);
		mint_free(m);
	}
}

/* The cached certificate for names, or a new one (cached). */
static X509 *
mint_get(struct tlsd_policy *pol, const char *names, GENERAL_NAMES *gens,
    const char *cn, char *why, size_t len)
{
	struct tlsd_gen *g = pol->gen;
	struct tlsd_mint *m;
	time_t now = time(NULL);
	X509 *x;

	for (m = g->mints; m; m = m->next)
		if (m->authority == pol->authority &&
		    strcmp(m->names, names) == 0)
			break;
	if (m != NULL) {
		mint_unlink(g, m);
		if (now - m->made < TLSD_MINT_REUSE_SECS && now >= m->made &&
		    X509_cmp_time(X509_get0_notAfter(m->leaf), &now) > 0)
			goto found;
		mint_free(m);
	}
	if ((x = mint(pol, gens, cn, why, len)) == NULL)
		return NULL;
	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->names = strdup(names)) == NULL) {
		free(m);
		X509_free(x);
		snprintf(why, len, "out of memory");
		return NULL;
	}
	m->authority = pol->authority;
	m->leaf = x;
	m->made = now;
	nminted++;
	log_event(LOG_INFO, "tls minted", "policy", pol->name, "authority",
	    pol->authority->name, "names", names, NULL);
	while (g->nmints >= TLSD_MINT_CACHE) {
		struct tlsd_mint *old = g->mints_tail;

		mint_unlink(g, old);
		mint_free(old);
	}
found:
	if ((m->next = g->mints) != NULL)
		g->mints->prev = m;
	else
		g->mints_tail = m;
	g->mints = m;
	g->nmints++;
	return m->leaf;
}

SSL *
tlsd_mint_ssl(struct tlsd_policy *pol, const char *names, char *why, size_t len)
{
	GENERAL_NAMES *gens = NULL;
	unsigned char sid[EVP_MAX_MD_SIZE];
	unsigned int sidlen = 0;
	EVP_MD_CTX *md = NULL;
	char cn[CN_MAX + 1];
	SSL *ssl = NULL;
	X509 *leaf;
	int i;

	if (names_parse(names, &gens, cn, sizeof(cn), why, len) == -1)
		return NULL;
	if (pol->mint_ctx == NULL) {
		snprintf(why, len, "%s",
		    pol->mint_err[0] ? pol->mint_err : "no Proxy Authority");
		goto out;
	}
	if ((leaf = mint_get(pol, names, gens, cn, why, len)) == NULL)
		goto out;
	/* Sessions belong to the policy and the names. */
	if ((ssl = SSL_new(pol->mint_ctx)) == NULL ||
	    (md = EVP_MD_CTX_new()) == NULL ||
	    !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(md, pol->name, strlen(pol->name) + 1) ||
	    !EVP_DigestUpdate(md, names, strlen(names)) ||
	    !EVP_DigestFinal_ex(md, sid, &sidlen) ||
	    !SSL_set_session_id_context(ssl, sid,
	        sidlen < SSL_MAX_SID_CTX_LENGTH ? sidlen
	                                        : SSL_MAX_SID_CTX_LENGTH) ||
	    SSL_use_certificate(ssl, leaf) != 1 ||
	    SSL_use_PrivateKey(ssl, mint_key) != 1 ||
	    SSL_add1_chain_cert(ssl, pol->authority->leaf) != 1)
		goto fail;
	for (i = 0; i < sk_X509_num(pol->authority->chain); i++)
		if (SSL_add1_chain_cert(
		        ssl, sk_X509_value(pol->authority->chain, i)) != 1)
			goto fail;
	goto out;
fail:
	tlsd_error_text(NULL, ERR_peek_last_error(), why, len);
	SSL_free(ssl);
	ssl = NULL;
out:
	ERR_clear_error();
	EVP_MD_CTX_free(md);
	GENERAL_NAMES_free(gens);
	return ssl;
}

/*
 * Names attests (common/tls.h).  tlsd mints only for names that a tlsd
 * worker took from a real server's certificate in a handshake of its
 * own: the client-side DONE carries an attest of them, netd hands it
 * back with the server-side START.  The key is derived from the
 * authority's private key: every tlsd worker has it, netd never does.
 */
int
tlsd_attest_key(struct tlsd_policy *pol)
{
	static const char label[] = "imapgw names attest v1";
	unsigned char *der = NULL;
	unsigned int n = 0;
	int len, rv = -1;

	if (pol->authority == NULL || pol->authority->key == NULL ||
	    (len = i2d_PrivateKey(pol->authority->key, &der)) <= 0)
		return -1;
	if (HMAC(EVP_sha256(), der, len, (const unsigned char *)label,
	        sizeof(label) - 1, pol->attest_key, &n) != NULL &&
	    n == sizeof(pol->attest_key))
		rv = 0;
	OPENSSL_clear_free(der, (size_t)len);
	return rv;
}

static uint64_t
attest_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

/* "EXPIRY:MAC" for names and expiry; "" if it cannot be made. */
static void
attest_make(const struct tlsd_policy *pol, const char *names, uint64_t expiry,
    char *out)
{
	char msg[24 + TLS_MAX_NAMES + 1];
	unsigned char mac[32];
	unsigned int n = 0;
	int k, i;

	out[0] = '\0';
	k = snprintf(
	    msg, sizeof(msg), "%llu:%s", (unsigned long long)expiry, names);
	if (k < 0 || (size_t)k >= sizeof(msg) ||
	    HMAC(EVP_sha256(), pol->attest_key, sizeof(pol->attest_key),
	        (const unsigned char *)msg, (size_t)k, mac, &n) == NULL ||
	    n != sizeof(mac))
		return;
	k = (int)(strchr(msg, ':') - msg) + 1;
	memcpy(out, msg, (size_t)k);
	for (i = 0; i < 32; i++)
		snprintf(out + k + 2 * i, 3, "%02x", mac[i]);
}

void
tlsd_attest(const struct tlsd_policy *pol, const char *names, uint64_t expiry,
    char *out)
{
	attest_make(pol, names,
	    expiry != 0 ? expiry : attest_now() + TLS_ATTEST_SECS, out);
}

int
tlsd_attest_check(const struct tlsd_policy *pol, const char *names,
    const char *attest, char *why, size_t len)
{
	char want[TLS_MAX_ATTEST + 1], *end;
	unsigned long long expiry;

	if (attest[0] == '\0') {
		snprintf(why, len, "names not attested by tlsd: no attest");
		return -1;
	}
	errno = 0;
	expiry = strtoull(attest, &end, 10);
	if (errno != 0 || end == attest || *end != ':' ||
	    !isdigit((unsigned char)attest[0])) {
		snprintf(why, len, "names not attested by tlsd: malformed");
		return -1;
	}
	attest_make(pol, names, (uint64_t)expiry, want);
	if (want[0] == '\0' || strlen(want) != strlen(attest) ||
	    CRYPTO_memcmp(want, attest, strlen(want)) != 0) {
		snprintf(why, len,
		    "names not attested by tlsd: the attest does not match");
		return -1;
	}
	if ((uint64_t)expiry < attest_now()) {
		snprintf(why, len, "names not attested by tlsd: expired");
		return -1;
	}
	return 0;
}
