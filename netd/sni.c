/*
 * SNI from a ClientHello (sni.h).  RFC 8446 4.1.2 and RFC 5246 7.4.1.2
 * (the ClientHello), RFC 6066 3 (server_name).  Every length is checked
 * against what encloses it; nothing is read past n.
 */
#include <ctype.h>
#include <string.h>

#include "sni.h"

struct cur {
	const uint8_t *p;
	size_t n;
};

static int
take(struct cur *c, size_t k, struct cur *sub)
{
	if (k > c->n)
		return -1;
	if (sub != NULL) {
		sub->p = c->p;
		sub->n = k;
	}
	c->p += k;
	c->n -= k;
	return 0;
}

static int
num(struct cur *c, size_t bytes, size_t *v)
{
	size_t i;

	if (bytes > c->n)
		return -1;
	*v = 0;
	for (i = 0; i < bytes; i++)
		*v = (*v << 8) | c->p[i];
	c->p += bytes;
	c->n -= bytes;
	return 0;
}

/* A vector with a length of bytes bytes in front. */
static int
vec(struct cur *c, size_t bytes, struct cur *sub)
{
	size_t len;

	return num(c, bytes, &len) == -1 ? -1 : take(c, len, sub);
}

static int
host_name(const uint8_t *p, size_t n, char *out, size_t outlen)
{
	size_t i, label = 0;

	if (n > 0 && p[n - 1] == '.')
		n--;
	if (n == 0 || n > 253 || n >= outlen)
		return SNI_BAD;
	for (i = 0; i < n; i++) {
		if (p[i] == '.') {
			if (label == 0 || p[i - 1] == '-')
				return SNI_BAD;
			label = 0;
			out[i] = '.';
			continue;
		}
		if (!isalnum(p[i]) && !(p[i] == '-' && label > 0))
			return SNI_BAD;
		if (++label > 63)
			return SNI_BAD;
		out[i] = (char)tolower(p[i]);
	}
	if (p[n - 1] == '-')
		return SNI_BAD;
	out[n] = '\0';
	return SNI_FOUND;
}

int
sni_parse(const uint8_t *p, size_t n, char *out, size_t outlen)
{
	struct cur rec = {p, n}, hs, body, exts, ext, names, name;
	size_t type, len, hslen;

	if (outlen > 0)
		out[0] = '\0';
	/* The record: handshake (22), TLS 1.x, at most 2^14 bytes. */
	if (n >= 1 && p[0] != 22)
		return SNI_BAD;
	if (n >= 2 && p[1] != 3)
		return SNI_BAD;
	if (n < 5)
		return SNI_MORE;
	take(&rec, 3, NULL);
	num(&rec, 2, &len);
	if (len == 0 || len > 16384)
		return SNI_BAD;
	/* The handshake message: a ClientHello (1) whole in this record. */
	if (rec.n >= 1 && rec.p[0] != 1)
		return SNI_BAD;
	if (rec.n < 4)
		return rec.n >= len ? SNI_BAD : SNI_MORE;
	hs = rec;
	take(&hs, 1, NULL);
	num(&hs, 3, &hslen);
	if (hslen + 4 > len)
		return SNI_BAD; /* spread over records: not read here */
	if (hs.n < hslen)
		return SNI_MORE;
	body.p = hs.p;
	body.n = hslen;
	/* version, random, session id, cipher suites, compression */
	if (take(&body, 2 + 32, NULL) == -1 || vec(&body, 1, NULL) == -1 ||
	    vec(&body, 2, NULL) == -1 || vec(&body, 1, NULL) == -1)
		return SNI_BAD;
	if (body.n == 0)
		return SNI_NONE; /* no extensions at all */
	if (vec(&body, 2, &exts) == -1 || body.n != 0)
		return SNI_BAD;
	while (exts.n > 0) {
		if (num(&exts, 2, &type) == -1 || vec(&exts, 2, &ext) == -1)
			return SNI_BAD;
		if (type != 0)
			continue;
		/* server_name: a list; the host_name (0) entry. */
		if (vec(&ext, 2, &names) == -1 || ext.n != 0)
			return SNI_BAD;
		while (names.n > 0) {
			if (num(&names, 1, &type) == -1 ||
			    vec(&names, 2, &name) == -1)
				return SNI_BAD;
			if (type == 0)
				return host_name(name.p, name.n, out, outlen);
		}
		return SNI_NONE;
	}
	return SNI_NONE;
}
