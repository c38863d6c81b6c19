/*
 * scand/apt.c: the APT Blocker threat database.  Parse errors and their
 * line numbers, lookups at each level by SHA-256 and by MD5, duplicate
 * hashes, the empty database, and a million generated entries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "../../scand/scand.h"
#include "buf.h"
#include "config.h"
#include "test.h"

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
hex(const uint8_t *h, size_t n, char *out, int upper)
{
	const char *d = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = d[h[i] >> 4];
		out[2 * i + 1] = d[h[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Hex SHA-256 (65 bytes) or MD5 (33 bytes) of a string. */
static void
sha256_hex(const char *s, char *out, int upper)
{
	uint8_t md[32];
	unsigned int n;

	if (EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL) != 1)
		abort();
	hex(md, 32, out, upper);
}

static void
md5_hex(const char *s, char *out, int upper)
{
	uint8_t md[16];
	unsigned int n;

	if (EVP_Digest(s, strlen(s), md, &n, EVP_md5(), NULL) != 1)
		abort();
	hex(md, 16, out, upper);
}

static struct apt_db *
parse(const char *text, char *err, size_t errlen)
{
	return apt_db_parse(text, strlen(text), err, errlen);
}

static void
test_empty(void)
{
	struct apt_db *db;
	struct apt_hit hit;
	char err[256];

	CHECK((db = apt_db_parse("", 0, err, sizeof(err))) != NULL);
	CHECK(apt_db_count(db) == 0);
	CHECK(apt_lookup(db, "abc", 3, &hit) == 0);
	CHECK(strcmp(hit.sha256, "ba7816bf8f01cfea414140de5dae2223"
	                         "b00361a396177a9cb410ff61f20015ad") == 0);
	CHECK(strcmp(hit.md5, "900150983cd24fb0d6963f7d28e17f72") == 0);
	CHECK(hit.level == -1 && hit.name[0] == '\0');
	/* The empty input */
	CHECK(apt_lookup(db, NULL, 0, &hit) == 0);
	CHECK(strcmp(hit.sha256, "e3b0c44298fc1c149afbf4c8996fb924"
	                         "27ae41e4649b934ca495991b7852b855") == 0);
	CHECK(strcmp(hit.md5, "d41d8cd98f00b204e9800998ecf8427e") == 0);
	apt_db_free(db);

	CHECK((db = apt_db_parse(NULL, 0, err, sizeof(err))) != NULL);
	CHECK(apt_db_count(db) == 0);
	apt_db_free(db);

	/* Comments and blank lines only. */
	CHECK((db = parse("# APT Blocker feed\r\n\r\n   \n\t# indented\n#", err,
	           sizeof(err))) != NULL);
	CHECK(apt_db_count(db) == 0);
	apt_db_free(db);

	/* No database at all: hashes, no hit. */
	CHECK(apt_lookup(NULL, "abc", 3, &hit) == 0);
	CHECK(strcmp(hit.md5, "900150983cd24fb0d6963f7d28e17f72") == 0);
	apt_db_free(NULL);
	CHECK(apt_db_count(NULL) == 0);
}

static void
test_levels(void)
{
	char h1[65], m2[33], h3[65], m3[33], m4[33], h5[65], text[2048];
	struct apt_db *db;
	struct apt_hit hit;
	char err[256];

	sha256_hex("high sample", h1, 0);
	md5_hex("medium sample", m2, 1);
	sha256_hex("low sample", h3, 1);
	md5_hex("low sample", m3, 0);
	md5_hex("md5 high", m4, 0);
	sha256_hex("utf8 sample", h5, 0);
	snprintf(text, sizeof(text),
	    "# a feed\r\n"
	    "%s high Trojan.Generic.1\r\n"
	    "\r\n"
	    "  %s\tMEDIUM\tWorm Name  With Spaces \t \r\n"
	    "%s Low Adware.X\n"
	    "%s medium Adware.X\n"
	    "%s high Exploit.MD5\n"
	    "%s low Backdoor.\xc3\x9c"
	    "bersicht \xe2\x82\xac",
	    h1, m2, h3, m3, m4, h5);
	CHECK((db = parse(text, err, sizeof(err))) != NULL);
	if (db == NULL) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	CHECK(apt_db_count(db) == 6);

	CHECK(apt_lookup(db, "high sample", 11, &hit) == 1);
	CHECK(hit.level == APT_HIGH);
	CHECK(strcmp(hit.name, "Trojan.Generic.1") == 0);
	CHECK(strcmp(hit.sha256, h1) == 0);
	CHECK(strlen(hit.md5) == 32);

	/* MD5 given in upper case; name trimmed, inner blanks kept. */
	CHECK(apt_lookup(db, "medium sample", 13, &hit) == 1);
	CHECK(hit.level == APT_MEDIUM);
	CHECK(strcmp(hit.name, "Worm Name  With Spaces") == 0);
	md5_hex("medium sample", m2, 0);
	CHECK(strcmp(hit.md5, m2) == 0);

	/* SHA-256 (low) and MD5 (medium) of the same data: the higher. */
	CHECK(apt_lookup(db, "low sample", 10, &hit) == 1);
	CHECK(hit.level == APT_MEDIUM);
	CHECK(strcmp(hit.name, "Adware.X") == 0);

	CHECK(apt_lookup(db, "md5 high", 8, &hit) == 1);
	CHECK(hit.level == APT_HIGH);
	CHECK(strcmp(hit.name, "Exploit.MD5") == 0);

	CHECK(apt_lookup(db, "utf8 sample", 11, &hit) == 1);
	CHECK(hit.level == APT_LOW);
	CHECK(strcmp(hit.name, "Backdoor.\xc3\x9c"
	                       "bersicht \xe2\x82\xac") == 0);

	CHECK(apt_lookup(db, "unknown", 7, &hit) == 0);
	CHECK(hit.level == -1 && hit.name[0] == '\0');
	sha256_hex("unknown", h1, 0);
	CHECK(strcmp(hit.sha256, h1) == 0);
	apt_db_free(db);
}

static void
test_duplicates(void)
{
	char h[65], m[33], hu[65], text[2048];
	struct apt_db *db;
	struct apt_hit hit;
	char err[256];

	sha256_hex("dup", h, 0);
	sha256_hex("dup", hu, 1);
	md5_hex("dup2", m, 0);
	/* low, then high (upper-case hex: the same hash), then medium,
	 * then high again with another name: high with the first high
	 * name.  The MD5 twice at one level: the first name. */
	snprintf(text, sizeof(text),
	    "%s low First.Low\n"
	    "%s high First.High\n"
	    "%s medium Then.Medium\n"
	    "%s high Second.High\n"
	    "%s medium Md5.First\n"
	    "%s medium Md5.Second\n",
	    h, hu, h, h, m, m);
	CHECK((db = parse(text, err, sizeof(err))) != NULL);
	if (db == NULL)
		return;
	CHECK(apt_db_count(db) == 2);
	CHECK(apt_lookup(db, "dup", 3, &hit) == 1);
	CHECK(hit.level == APT_HIGH);
	CHECK(strcmp(hit.name, "First.High") == 0);
	CHECK(apt_lookup(db, "dup2", 4, &hit) == 1);
	CHECK(hit.level == APT_MEDIUM);
	CHECK(strcmp(hit.name, "Md5.First") == 0);
	apt_db_free(db);
}

struct bad {
	const char *text;
	const char *err; /* the whole message */
};

static void
test_errors(void)
{
	char text[1024], name[200], h[65], err[256], small[12];
	struct apt_db *db;
	size_t i;
	static const struct bad bad[] = {
	    {"zz0123 high X\n",
	        "line 1: \"zz0123\" is not a hash (64 hex digits for "
	        "SHA-256, 32 for MD5)"},
	    {"# c\n\n0123456789abcdef0123456789abcdef0123456789abcdef"
	     "0123456789abcde high X\n",
	        "line 3: a hash of 63 hex digits (SHA-256 has 64, MD5 32)"},
	    {"0123456789abcdef0123456789abcdef01234567 high SHA1\n",
	        "line 1: a hash of 40 hex digits (SHA-256 has 64, MD5 32)"},
	    {"0123456789abcdef0123456789abcdef\n",
	        "line 1: no level after the hash (high, medium or low)"},
	    {"0123456789abcdef0123456789abcdef   \r\n",
	        "line 1: no level after the hash (high, medium or low)"},
	    {"\r\n\r\n0123456789abcdef0123456789abcdef critical Foo\r\n",
	        "line 3: unknown level \"critical\" (high, medium or low)"},
	    {"0123456789abcdef0123456789abcdef high\n",
	        "line 1: no threat name after the level"},
	    {"0123456789abcdef0123456789abcdef high \t \n",
	        "line 1: no threat name after the level"},
	    {"0123456789abcdef0123456789abcdef high a\x01"
	     "b\n",
	        "line 1: threat name has a control character"},
	    {"0123456789abcdef0123456789abcdef high a\rb\n",
	        "line 1: threat name has a control character"},
	    {"0123456789abcdef0123456789abcdef high a\x7f\n",
	        "line 1: threat name has a control character"},
	    {"0123456789abcdef0123456789abcdef high a\xc2\x85\n",
	        "line 1: threat name has a control character"},
	    {"0123456789abcdef0123456789abcdef high a\xff"
	     "b\n",
	        "line 1: threat name is not valid UTF-8"},
	    {"0123456789abcdef0123456789abcdef high a\xc0\xafz\n",
	        "line 1: threat name is not valid UTF-8"},
	    {"0123456789abcdef0123456789abcdef high \xed\xa0\x80\n",
	        "line 1: threat name is not valid UTF-8"},
	    {"0123456789abcdef0123456789abcdef high caf\xc3\n",
	        "line 1: threat name is not valid UTF-8"},
	    {"0123456789abcdef0123456789abcdef high a\xe2\x82\n",
	        "line 1: threat name is not valid UTF-8"},
	    {"# ok\n0123456789abcdef0123456789abcdef high ok\n"
	     "0123456789ABCDEF0123456789abcdeg low x\n",
	        "line 3: \"0123456789ABCDEF0123456789abcdeg\" is not a hash "
	        "(64 hex digits for SHA-256, 32 for MD5)"},
	    {"high 0123456789abcdef0123456789abcdef X\n",
	        "line 1: \"high\" is not a hash (64 hex digits for "
	        "SHA-256, 32 for MD5)"},
	    {"0123456789abcdef0123456789abcdef,high,X\n",
	        "line 1: \"0123456789abcdef0123456789abc...\" is not a hash "
	        "(64 hex digits for SHA-256, 32 for MD5)"},
	};

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		db = parse(bad[i].text, err, sizeof(err));
		CHECK(db == NULL);
		if (strcmp(err, bad[i].err) != 0) {
			fprintf(stderr, "case %zu: got \"%s\"\n", i, err);
			CHECK(!"error message");
		}
		apt_db_free(db);
	}

	/* A NUL byte (strlen cannot be used). */
	memcpy(
	    text, "# one\n\n0123456789abcdef0123456789abcdef high a\0b\n", 49);
	CHECK(apt_db_parse(text, 49, err, sizeof(err)) == NULL);
	CHECK(strcmp(err, "line 3: NUL byte") == 0);

	/* Names of 127 bytes are fine, 128 are not. */
	sha256_hex("n", h, 0);
	memset(name, 'N', 127);
	name[127] = '\0';
	snprintf(text, sizeof(text), "%s low %s\n", h, name);
	CHECK((db = parse(text, err, sizeof(err))) != NULL);
	apt_db_free(db);
	memset(name, 'N', 128);
	name[128] = '\0';
	snprintf(text, sizeof(text), "#\n%s low %s\n", h, name);
	CHECK(parse(text, err, sizeof(err)) == NULL);
	CHECK(
	    strcmp(err, "line 2: threat name of 128 bytes (at most 127)") == 0);

	/* A small or absent error buffer. */
	CHECK(parse("x high y\n", small, sizeof(small)) == NULL);
	CHECK(strlen(small) < sizeof(small));
	CHECK(parse("x high y\n", NULL, 0) == NULL);
	CHECK(parse("x high y\n", small, 0) == NULL);
	CHECK(parse("x high y\n", small, 1) == NULL && small[0] == '\0');
}

/* A million entries: 900,000 SHA-256 and 100,000 MD5 from a generator,
 * among them the hashes of 1000 known strings; 1000 distinct names. */
static void
test_million(void)
{
	enum { N = 1000000, KNOWN = 1000 };
	struct buf text;
	struct apt_db *db;
	struct apt_hit hit;
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	uint8_t h[32];
	char hx[65], s[64], err[256];
	static const char *const lv[] = {"high", "medium", "low"};
	double t0, t1, t2;
	size_t i, j, misses = 0, wrong = 0, falsehits = 0;

	buf_init(&text, 0);
	for (i = 0; i < N; i++) {
		if (i % (N / KNOWN) == 0) {
			j = i / (N / KNOWN);
			snprintf(s, sizeof(s), "known sample %zu", j);
			if (j % 2)
				md5_hex(s, hx, 0);
			else
				sha256_hex(s, hx, 0);
			buf_printf(&text, "%s %s Known.%zu\n", hx, lv[j % 3],
			    j % 1000);
			continue;
		}
		for (j = 0; j < 32; j++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			h[j] = (uint8_t)(x >> 32);
		}
		hex(h, i % 9 == 0 ? 16 : 32, hx, 0);
		if (buf_printf(&text, "%s %s Gen.Threat.%zu\n", hx, lv[i % 3],
		        i % 1000) == -1)
			abort();
	}
	t0 = now();
	db = apt_db_parse(buf_head(&text), buf_used(&text), err, sizeof(err));
	t1 = now();
	CHECK(db != NULL);
	if (db == NULL) {
		fprintf(stderr, "%s\n", err);
		buf_free(&text);
		return;
	}
	CHECK(apt_db_count(db) == N);
	for (j = 0; j < KNOWN; j++) {
		snprintf(s, sizeof(s), "known sample %zu", j);
		if (apt_lookup(db, s, strlen(s), &hit) != 1)
			misses++;
		else {
			snprintf(s, sizeof(s), "Known.%zu", j % 1000);
			if (hit.level != (int)(j % 3) || strcmp(hit.name, s))
				wrong++;
		}
		snprintf(s, sizeof(s), "unknown sample %zu", j);
		if (apt_lookup(db, s, strlen(s), &hit) != 0)
			falsehits++;
	}
	t2 = now();
	CHECK(misses == 0);
	CHECK(wrong == 0);
	CHECK(falsehits == 0);
	CHECK(t1 - t0 < 20.0);
	printf("%d entries (%zu MB of text): parsed in %.3f s; %d lookups in "
	       "%.3f s\n",
	    N, buf_used(&text) >> 20, t1 - t0, 2 * KNOWN, t2 - t1);
	apt_db_free(db);
	buf_free(&text);
}

int
main(void)
{
	test_empty();
	test_levels();
	test_duplicates();
	test_errors();
	test_million();
	return test_done("test_apt");
}
