/*
 * The server name (SNI, RFC 6066 3) of a TLS ClientHello, read by netd
 * without taking part in TLS: the client proxy peeks at what the client
 * sent, so that it can meet the real server under the name the client
 * asked for (and verify it by that name) before the client's handshake.
 */
#ifndef IMAPGW_SNI_H
#define IMAPGW_SNI_H

#include <stddef.h>
#include <stdint.h>

/* The most a ClientHello may take to be read: one TLS record. */
#define SNI_PEEK_MAX (5 + 16384)

enum {
	SNI_FOUND =
	    1, /* out holds the host name (lower case, no dot at the end) */
	SNI_NONE = 0, /* a whole ClientHello without a host name */
	SNI_MORE = -1, /* not all of it yet */
	SNI_BAD = -2, /* not a TLS ClientHello, or a malformed one */
};

/*
 * p[0..n) is what the client sent so far.  A host name that is not one
 * (RFC 1123 labels: letters, digits, hyphens; at most 253 bytes) is
 * SNI_BAD; so is a ClientHello spread over more than one record.
 */
int sni_parse(const uint8_t *p, size_t n, char *out, size_t outlen);

#endif
