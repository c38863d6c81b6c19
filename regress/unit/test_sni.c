/*
 * netd/sni.c: the host name of real ClientHellos (OpenSSL's, TLS 1.3 and
 * 1.2, with and without SNI, a trailing dot, upper case), every cut of
 * them (not all there yet: SNI_MORE, never a read past the end), every
 * length byte changed (SNI_BAD or an answer, never a crash), not TLS at
 * all, and names that are not host names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "sni.h"
#include "test.h"

/* The first flight of an OpenSSL client: its ClientHello record. */
static size_t
client_hello(const char *sni, int max_version, uint8_t *out, size_t outlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	int n;

	SSL_set_bio(ssl, rb, wb);
	if (max_version)
		SSL_set_max_proto_version(ssl, max_version);
	if (sni)
		SSL_set_tlsext_host_name(ssl, sni);
	SSL_set_connect_state(ssl);
	SSL_do_handshake(ssl);
	n = BIO_read(wb, out, (int)outlen);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return n > 0 ? (size_t)n : 0;
}

static void
test_real(void)
{
	static const struct {
		const char *sni, *want;
		int version, r;
	} cases[] = {
	    {"mail.example.org", "mail.example.org", 0, SNI_FOUND},
	    {"mail.example.org", "mail.example.org", TLS1_2_VERSION, SNI_FOUND},
	    {"IMAP.Example.ORG.", "imap.example.org", 0, SNI_FOUND},
	    {NULL, "", 0, SNI_NONE},
	    {NULL, "", TLS1_2_VERSION, SNI_NONE},
	    {"a_b.example", "", 0, SNI_BAD},
	    {"-a.example", "", 0, SNI_BAD},
	    {"a-.example", "", 0, SNI_BAD},
	    {"a..example", "", 0, SNI_BAD},
	};
	uint8_t hello[SNI_PEEK_MAX], copy[SNI_PEEK_MAX];
	char out[256];
	size_t i, n, k, b;
	int r, more, bad;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = client_hello(
		    cases[i].sni, cases[i].version, hello, sizeof(hello));
		CHECK(n > 100);
		r = sni_parse(hello, n, out, sizeof(out));
		CHECK(r == cases[i].r);
		if (r == SNI_FOUND)
			CHECK(strcmp(out, cases[i].want) == 0);
		if (r == SNI_FOUND && strcmp(out, cases[i].want) != 0)
			fprintf(stderr, "case %zu: '%s'\n", i, out);
		/* Every cut: more wanted (each copy exactly as long, so
		 * that ASan sees a read past it). */
		more = 0;
		for (k = 0; k < n; k++) {
			uint8_t *p = malloc(k ? k : 1);

			memcpy(p, hello, k);
			more += sni_parse(p, k, out, sizeof(out)) == SNI_MORE;
			free(p);
		}
		CHECK(more == (int)n);
		/* Every byte changed: an answer, never a crash. */
		bad = 0;
		for (k = 0; k < n; k++)
			for (b = 1; b < 256; b <<= 1) {
				memcpy(copy, hello, n);
				copy[k] ^= (uint8_t)b;
				r = sni_parse(copy, n, out, sizeof(out));
				bad += r == SNI_BAD;
				CHECK(r >= SNI_BAD && r <= SNI_FOUND);
			}
		CHECK(bad > 0);
	}
}

static void
test_not_tls(void)
{
	char out[256];

	CHECK(sni_parse((const uint8_t *)"a LOGIN x y\r\n", 13, out,
	          sizeof(out)) == SNI_BAD);
	CHECK(sni_parse((const uint8_t *)"\x16", 1, out, sizeof(out)) ==
	      SNI_MORE);
	CHECK(sni_parse((const uint8_t *)"\x16\x02", 2, out, sizeof(out)) ==
	      SNI_BAD);
	/* An alert record, a record of 0 or more than 2^14 bytes, another
	 * handshake message. */
	CHECK(sni_parse((const uint8_t *)"\x15\x03\x01\x00\x02\x02\x28", 7, out,
	          sizeof(out)) == SNI_BAD);
	CHECK(sni_parse((const uint8_t *)"\x16\x03\x01\x00\x00", 5, out,
	          sizeof(out)) == SNI_BAD);
	CHECK(sni_parse((const uint8_t *)"\x16\x03\x01\x40\x01", 5, out,
	          sizeof(out)) == SNI_BAD);
	CHECK(sni_parse((const uint8_t *)"\x16\x03\x01\x00\x04\x02\x00\x00\x00",
	          9, out, sizeof(out)) == SNI_BAD);
	/* A ClientHello longer than its record (spread over records). */
	CHECK(sni_parse((const uint8_t *)"\x16\x03\x01\x00\x04\x01\x00\x00\x10",
	          9, out, sizeof(out)) == SNI_BAD);
	/* A name longer than out. */
	{
		uint8_t hello[SNI_PEEK_MAX];
		size_t n = client_hello(
		    "a-rather-long-name.example.org", 0, hello, sizeof(hello));

		CHECK(sni_parse(hello, n, out, 10) == SNI_BAD);
		CHECK(sni_parse(hello, n, out, sizeof(out)) == SNI_FOUND);
	}
}

int
main(void)
{
	test_real();
	test_not_tls();
	return test_done("test_sni");
}
