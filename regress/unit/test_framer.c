/*
 * Unit tests for the IMAP framer (netd/framer.c).  Every sample is scanned
 * whole, one byte at a time, split in two at every position and in three
 * pieces, and all runs must agree on counters, error and line prefixes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framer.h"
#include "test.h"

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

/* Everything a run produced, to compare runs with different splits. */
struct res {
	int rc;
	char err[128];
	uint64_t bytes, lines, literals, literal_bytes;
	int waits;
	char log[4096]; /* prefixes joined by '|', '~' marks truncated */
};

struct opts {
	enum framer_dir dir;
	size_t max_line;
	uint64_t max_literal;
	uint64_t max_nonsync; /* 0: default */
	int hold; /* hold_sync; the run accepts every hold */
};

static void
log_line(void *arg, const char *prefix, size_t len, int truncated)
{
	struct res *r = arg;
	size_t used = strlen(r->log);

	if (strlen(prefix) != len)
		len = strlen(prefix); /* NUL in a prefix: keep the log sane */
	snprintf(r->log + used, sizeof(r->log) - used, "%.*s%s|", (int)len,
	    prefix, truncated ? "~" : "");
}

static void
setup(struct framer *f, const struct opts *o, struct res *r)
{
	memset(r, 0, sizeof(*r));
	framer_init(f, o->dir, o->max_line, o->max_literal);
	if (o->max_nonsync)
		f->max_nonsync = o->max_nonsync;
	f->hold_sync = o->hold;
	f->on_line = log_line;
	f->arg = r;
}

/* Feed one piece; a hold is accepted at once, as a "+" would do. */
static int
feed(struct framer *f, struct res *r, const uint8_t *p, size_t n)
{
	ssize_t k;

	for (;;) {
		k = framer_scan(f, p, n);
		if (k < 0)
			return -1;
		if ((size_t)k > n)
			return -2;
		p += k;
		n -= k;
		if (!framer_waiting(f))
			return n == 0 ? 0 : -2;
		r->waits++;
		if (framer_scan(f, p, n) != 0)
			return -2; /* must accept nothing while held */
		framer_cont(f, 1);
		if (n == 0)
			return 0;
	}
}

static void
finish(struct framer *f, struct res *r, int rc)
{
	r->rc = rc;
	snprintf(r->err, sizeof(r->err), "%s", rc ? f->err : "");
	r->bytes = f->bytes;
	r->lines = f->lines;
	r->literals = f->literals;
	r->literal_bytes = f->literal_bytes;
}

/* Scan in pieces ending at cut1 and cut2 (0 = no cut), or step bytes. */
static void
run_cuts(const struct opts *o, const uint8_t *in, size_t len, size_t cut1,
    size_t cut2, struct res *r)
{
	struct framer f;
	size_t cuts[3] = {cut1, cut2, len}, at = 0;
	int rc = 0;

	setup(&f, o, r);
	for (int i = 0; i < 3 && rc == 0; i++) {
		if (cuts[i] < at || cuts[i] > len)
			continue;
		rc = feed(&f, r, in + at, cuts[i] - at);
		at = cuts[i];
	}
	finish(&f, r, rc);
}

static void
run_step(const struct opts *o, const uint8_t *in, size_t len, size_t step,
    struct res *r)
{
	struct framer f;
	size_t at, n;
	int rc = 0;

	setup(&f, o, r);
	for (at = 0; at < len && rc == 0; at += n) {
		n = len - at < step ? len - at : step;
		rc = feed(&f, r, in + at, n);
	}
	finish(&f, r, rc);
}

static int
same(const struct res *a, const struct res *b)
{
	return a->rc == b->rc && strcmp(a->err, b->err) == 0 &&
	       a->bytes == b->bytes && a->lines == b->lines &&
	       a->literals == b->literals &&
	       a->literal_bytes == b->literal_bytes && a->waits == b->waits &&
	       strcmp(a->log, b->log) == 0;
}

static void
show(const char *what, const struct res *r)
{
	fprintf(stderr,
	    "  %s: rc %d err \"%s\" bytes %llu lines %llu "
	    "literals %llu litbytes %llu waits %d log \"%s\"\n",
	    what, r->rc, r->err, (unsigned long long)r->bytes,
	    (unsigned long long)r->lines, (unsigned long long)r->literals,
	    (unsigned long long)r->literal_bytes, r->waits, r->log);
}

/*
 * Scan whole, then byte by byte, split in two at every position and in
 * three at many; returns a mask of the kinds of split that disagreed with
 * the whole-buffer result, which is left in *out.
 */
static int
agree(const struct opts *o, const uint8_t *in, size_t len, struct res *out)
{
	static struct res r;
	int bad = 0;

	run_cuts(o, in, len, 0, 0, out);

	run_step(o, in, len, 1, &r);
	if (!same(out, &r)) {
		show("whole", out);
		show("bytewise", &r);
		bad |= 1;
	}
	for (size_t i = 1; i < len && !(bad & 2); i++) {
		run_cuts(o, in, len, i, 0, &r);
		if (!same(out, &r)) {
			fprintf(stderr, "  split at %zu differs\n", i);
			show("whole", out);
			show("split", &r);
			bad |= 2;
		}
	}
	for (size_t i = 1; i < len && !(bad & 4); i += 3)
		for (size_t j = i + 1; j < len && !(bad & 4); j += 5) {
			run_cuts(o, in, len, i, j, &r);
			if (!same(out, &r)) {
				fprintf(stderr, "  split at %zu,%zu differs\n",
				    i, j);
				show("whole", out);
				show("split", &r);
				bad |= 4;
			}
		}
	return bad;
}

/* One check per kind of split keeps the totals readable. */
static void
scan_all(const struct opts *o, const uint8_t *in, size_t len, struct res *out)
{
	int bad = agree(o, in, len, out);

	CHECK(!(bad & 1));
	CHECK(!(bad & 2));
	CHECK(!(bad & 4));
}

static const struct opts client = {FRAMER_CLIENT, 1024, 1 << 20, 0, 0};
static const struct opts server = {FRAMER_SERVER, 1024, 1 << 20, 0, 0};

static void
expect(const struct opts *o, const uint8_t *in, size_t len, int rc,
    const char *err, uint64_t lines, uint64_t literals, uint64_t litbytes,
    const char *log)
{
	struct res r;
	int ok;

	scan_all(o, in, len, &r);
	ok = r.rc == rc && strcmp(r.err, err) == 0 && r.lines == lines &&
	     r.literals == literals && r.literal_bytes == litbytes &&
	     (log == NULL || strcmp(r.log, log) == 0) &&
	     (rc != 0 || r.bytes == len);
	if (!ok) {
		fprintf(stderr, "  input \"%.*s\"\n", (int)len, in);
		show("got", &r);
	}
	CHECK(ok);
}

#define OK(o, in, lines, lits, lbytes, log) \
	expect(o, S(in), 0, "", lines, lits, lbytes, log)
#define BAD(o, in, err, lines) expect(o, S(in), -1, err, lines, 0, 0, NULL)

static void
test_sessions(void)
{
	OK(&client,
	    "a1 CAPABILITY\r\na2 LOGIN user pass\r\na3 SELECT INBOX\r\n", 3, 0,
	    0, "a1 CAPABILITY|a2 LOGIN user pass|a3 SELECT INBOX|");

	/* Pre-auth LOGIN whose payload looks like commands. */
	OK(&client,
	    "a LOGIN {29+}\r\nb DELETE INBOX\r\nc LOGOUT\r\nx\r\n pw\r\n"
	    "d NOOP\r\n",
	    2, 1, 29, "a LOGIN {29+} pw|d NOOP|");

	OK(&client, "a ID (\"name\" {23+}\r\nxyz\r\nb LOGOUT\r\nc LOGOUT)\r\n",
	    1, 1, 23, "a ID (\"name\" {23+})|");

	/* Literal with CRLF, "{5}\r\n" text, a {0} and a following item. */
	OK(&server,
	    "* 1 FETCH (UID 5 BODY[] {23}\r\nA: b\r\n\r\nx {5}\r\nend{9}\r\n"
	    " FLAGS (\\Seen))\r\n* 2 FETCH (BODY[] {0}\r\n)\r\nA OK done\r\n",
	    3, 2, 23,
	    "* 1 FETCH (UID 5 BODY[] {23} FLAGS (\\Seen))|"
	    "* 2 FETCH (BODY[] {0})|A OK done|");

	/* A segment that is only the next marker, right after payload. */
	OK(&client, "a APPEND x {3+}\r\nabc{4+}\r\ndefg ~{2+}\r\n\r\n\r\n", 1,
	    3, 9, "a APPEND x {3+}{4+} ~{2+}|");

	OK(&client, "a APPEND x ~{5}\r\n\0\1\2\3\4\r\nb NOOP\r\n", 2, 1, 5,
	    "a APPEND x ~{5}|b NOOP|");
	OK(&server, "* 3 FETCH (BINARY[] ~{3}\r\n\0\n\0)\r\n", 1, 1, 3,
	    "* 3 FETCH (BINARY[] ~{3})|");

	OK(&client, "a LOGIN {0}\r\n {0+}\r\n\r\n", 1, 2, 0,
	    "a LOGIN {0} {0+}|");
	OK(&client, "a NOOP\nb LOGIN {3+}\nabc {2+}\nxy\nc X\n", 3, 2, 5,
	    "a NOOP|b LOGIN {3+} {2+}|c X|");
	OK(&server, "+ idling\r\n+\r\n* 4 EXISTS\r\n", 3, 0, 0,
	    "+ idling|+|* 4 EXISTS|");
	OK(&server, "* OK [ALERT] {maint} at 5\r\n* OK x}\r\n", 2, 0, 0, NULL);
}

static void
test_quotes(void)
{
	OK(&client, "a SELECT \"foo {5}\"\r\nb NOOP\r\n", 2, 0, 0,
	    "a SELECT \"foo {5}\"|b NOOP|");
	OK(&client, "a LOGIN \"u\" \"p\\\"{5}\"\r\n", 1, 0, 0, NULL);
	/* An escaped backslash closes the quote: the marker is real. */
	OK(&client, "a LOGIN \"a\\\\\" {3+}\r\nxyz\r\n", 1, 1, 3,
	    "a LOGIN \"a\\\\\" {3+}|");
	OK(&client, "a LOGIN \"{\" {2+}\r\n\"}\r\n", 1, 1, 2, NULL);
	/* A quote does not span lines: the next line is unquoted. */
	OK(&client, "a X \"open\r\nb LOGIN {1+}\r\nz\r\n", 2, 1, 1,
	    "a X \"open|b LOGIN {1+}|");
	BAD(&client, "a LOGIN \"u {5+}\r\nhello\r\n",
	    "literal size inside unterminated quoted string", 0);
	BAD(&client, "a LOGIN \"u\\\" {5}\r\n",
	    "literal size inside unterminated quoted string", 0);
}

static void
test_markers(void)
{
	/* A brace group not at the line end is text. */
	OK(&client, "a X {5}x\r\na Y {5} z\r\na Z {abc\r\n", 3, 0, 0, NULL);

	BAD(&client, "a NOOP\r\nb LOGIN {}\r\n", "malformed literal size", 1);
	BAD(&client, "a LOGIN {12a}\r\n", "malformed literal size", 0);
	BAD(&client, "a LOGIN {5-}\r\nhello\r\n", "malformed literal size", 0);
	BAD(&client, "a LOGIN {+5}\r\n", "malformed literal size", 0);
	BAD(&client, "a LOGIN {5+5}\r\n", "malformed literal size", 0);
	BAD(&client, "a LOGIN {5++}\r\n", "malformed literal size", 0);
	BAD(&client, "a LOGIN {{5}\r\n", "malformed literal size", 0);
	BAD(&client, "a LOGIN { 5}\r\n", "malformed literal size", 0);
	BAD(&client, "a LOGIN {5} \r\n", "malformed literal size", 0);
	BAD(&client, "a LOGIN {5}\r\r\n", "malformed literal size", 0);
	BAD(&server, "* OK hello {world}\r\n", "malformed literal size", 0);
	BAD(&server, "* 1 FETCH (BODY[] {5+}\r\nhello)\r\n",
	    "non-synchronizing literal from server", 0);
	BAD(&server, "* 1 FETCH (BINARY[] ~{5+}\r\nhello)\r\n",
	    "non-synchronizing literal from server", 0);

	/* 20 digits fit; 21 digits or 2^64 do not. */
	BAD(&client, "a APPEND x {000000000000000000005}\r\n",
	    "literal size out of range", 0);
	BAD(&client, "a APPEND x {18446744073709551616}\r\n",
	    "literal size out of range", 0);
	BAD(&client, "a APPEND x {99999999999999999999999999999999}\r\n",
	    "literal size out of range", 0);
	OK(&client, "a APPEND x {00000000000000000005}\r\nhello\r\n", 1, 1, 5,
	    NULL);

	{
		struct opts big = client;
		struct res r;
		const char *in = "a APPEND x {18446744073709551615}\r\nabc";

		big.max_literal = UINT64_MAX;
		scan_all(&big, (const uint8_t *)in, strlen(in), &r);
		CHECK(r.rc == 0 && r.literals == 1 && r.literal_bytes == 3);
	}
}

static void
test_limits(void)
{
	struct opts o = client;

	o.max_line = 16;
	/* 16 bytes plus CRLF, bare LF, or a literal's payload all fit. */
	OK(&o, "0123456789abcdef\r\n0123456789abcdef\n", 2, 0, 0, NULL);
	OK(&o, "a LOGIN {20+}\r\n01234567890123456789 x\r\n", 1, 1, 20, NULL);
	BAD(&o, "0123456789abcdefg\r\n", "line longer than 16 bytes", 0);
	BAD(&o, "a\r\n0123456789abcdef\rx\n", "line longer than 16 bytes", 1);
	BAD(&o, "a\r\n0123456789abcdef\r\r\n", "line longer than 16 bytes", 1);
	/* Each segment is limited, and the error comes before the LF. */
	expect(&o, S("a LOGIN {1+}\r\nx 0123456789abcdef\r\n"), -1,
	    "line longer than 16 bytes", 0, 1, 1, NULL);
	{
		struct res r;
		const char *in = "a\r\n0123456789abcdefghijklmnop";

		scan_all(&o, (const uint8_t *)in, strlen(in), &r);
		CHECK(r.rc == -1 && r.bytes == 3 + 16 && r.lines == 1);
	}

	o = client;
	o.max_literal = 100;
	OK(&o, "a APPEND x {100}\r\n", 0, 1, 0, NULL);
	BAD(&o, "a APPEND x {101}\r\n",
	    "literal of 101 bytes exceeds limit of 100", 0);
	o.max_literal = 8192;
	o.max_nonsync = 4096;
	OK(&o, "a APPEND x {4096+}\r\n", 0, 1, 0, NULL);
	OK(&o, "a APPEND x {4097}\r\n", 0, 1, 0, NULL);
	BAD(&o, "a APPEND x {4097+}\r\n",
	    "non-synchronizing literal of 4097 bytes exceeds limit of 4096", 0);
}

static void
test_prefix(void)
{
	char in[400], want[200];
	struct res r;

	/* 128 bytes plus CRLF is whole; one more is truncated. */
	memset(in, 'x', 128);
	memcpy(in + 128, "\r\n", 3);
	memset(want, 'x', 128);
	memcpy(want + 128, "|", 2);
	scan_all(&client, (const uint8_t *)in, strlen(in), &r);
	CHECK(r.rc == 0 && strcmp(r.log, want) == 0);

	memcpy(in + 128, "y\r\n", 4);
	memcpy(want + 128, "~|", 3);
	scan_all(&client, (const uint8_t *)in, strlen(in), &r);
	CHECK(r.rc == 0 && strcmp(r.log, want) == 0);

	/* Payload never reaches the prefix, even past the capture. */
	snprintf(in, sizeof(in), "a LOGIN {200+}\r\n%0200d\r\n", 7);
	scan_all(&client, (const uint8_t *)in, strlen(in), &r);
	CHECK(r.rc == 0 && strcmp(r.log, "a LOGIN {200+}|") == 0);
}

/* The relay's view of a held synchronizing literal. */
static void
test_hold(void)
{
	struct framer f;
	struct res r;
	const char *in = "a APPEND x {5}\r\nhello\r\nb NOOP\r\n";
	const char *rej = "a FOO {5}\r\nb NOOP\r\n";
	size_t len = strlen(in), p;
	const char *pre;
	size_t plen;

	setup(&f, &client, &r);
	f.hold_sync = 1;
	CHECK(framer_scan(&f, (const uint8_t *)in, len) == 16);
	CHECK(framer_waiting(&f));
	pre = framer_prefix(&f, &plen);
	CHECK(plen == 14 && strcmp(pre, "a APPEND x {5}") == 0);
	CHECK(framer_scan(&f, (const uint8_t *)in + 16, len - 16) == 0);
	framer_cont(&f, 1);
	CHECK(!framer_waiting(&f));
	CHECK(framer_scan(&f, (const uint8_t *)in + 16, len - 16) ==
	      (ssize_t)(len - 16));
	CHECK(f.lines == 2 && f.literals == 1 && f.literal_bytes == 5);

	/* Rejected: the next bytes are a command again. */
	setup(&f, &client, &r);
	f.hold_sync = 1;
	p = framer_scan(&f, (const uint8_t *)rej, strlen(rej));
	CHECK(p == 11 && framer_waiting(&f));
	framer_cont(&f, 0);
	CHECK(framer_scan(&f, (const uint8_t *)rej + p, strlen(rej) - p) ==
	      (ssize_t)(strlen(rej) - p));
	CHECK(f.lines == 2 && f.literals == 0 &&
	      strcmp(r.log, "a FOO {5}|b NOOP|") == 0);

	/* Non-synchronizing literals and the server are never held. */
	{
		struct opts o = client;

		o.hold = 1;
		expect(&o, S("a LOGIN {1+}\r\nx {2}\r\nyz\r\n"), 0, "", 1, 2, 3,
		    "a LOGIN {1+} {2}|");
		scan_all(&o, S("a LOGIN {1}\r\nx {0}\r\n\r\n"), &r);
		CHECK(r.rc == 0 && r.waits == 2 && r.literals == 2);
		o = server;
		o.hold = 1;
		scan_all(&o, S("* 1 FETCH (BODY[] {1}\r\nx)\r\n"), &r);
		CHECK(r.rc == 0 && r.waits == 0 && r.literals == 1);
	}
}

static void
test_errors_sticky(void)
{
	struct framer f;

	framer_init(&f, FRAMER_CLIENT, 1024, 100);
	CHECK(framer_scan(&f, S("a X {}\r\n")) == -1);
	CHECK(f.bytes == 7); /* offset of the LF that ended the segment */
	CHECK(framer_scan(&f, S("b NOOP\r\n")) == -1);
	CHECK(framer_scan(&f, (const uint8_t *)"", 0) == -1);
	CHECK(strcmp(f.err, "malformed literal size") == 0);

	framer_init(&f, FRAMER_CLIENT, 1024, 100);
	CHECK(framer_scan(&f, (const uint8_t *)"", 0) == 0);
	CHECK(f.lines == 0 && f.bytes == 0);
}

/*
 * Naive model of framer.h's grammar: byte by byte over the whole input, no
 * skip loop, no tables.  Random sessions are checked against it.
 */
struct model {
	int quoted, escaped, brace, bad, plus, lastcr;
	unsigned digits, trail;
	uint64_t val;
	size_t seglen;
};

static void
model_brace(struct model *m, uint8_t c)
{
	if (m->brace == 1) {
		if (c >= '0' && c <= '9' && !m->plus) {
			if (++m->digits > 20 ||
			    m->val > (UINT64_MAX - (c - '0')) / 10)
				m->digits = 21;
			else
				m->val = m->val * 10 + (c - '0');
		} else if (c == '+' && m->digits && !m->plus)
			m->plus = 1;
		else if (c == '}')
			m->brace = 2;
		else
			m->bad = 1;
		return;
	}
	if (m->brace == 2 && (c == ' ' || c == '\t' || c == '\r')) {
		m->trail++;
		return;
	}
	m->brace = 0;
	if (c == '{') {
		m->bad = m->plus = 0;
		m->digits = m->trail = 0;
		m->val = 0;
		m->brace = 1;
	}
}

/* Returns the literal size at a marker, -1 if none, -2 on error. */
static int64_t
model_marker(const struct opts *o, struct model *m, struct res *r)
{
	uint64_t max = o->max_literal;

	if (m->brace != 2)
		return -1;
	if (m->plus && o->max_nonsync && o->max_nonsync < max)
		max = o->max_nonsync;
	if (m->quoted)
		snprintf(r->err, sizeof(r->err),
		    "literal size inside "
		    "unterminated quoted string");
	else if (m->bad || !m->digits || m->trail > (unsigned)m->lastcr)
		snprintf(r->err, sizeof(r->err), "malformed literal size");
	else if (m->digits > 20)
		snprintf(r->err, sizeof(r->err), "literal size out of range");
	else if (m->plus && o->dir == FRAMER_SERVER)
		snprintf(r->err, sizeof(r->err),
		    "non-synchronizing literal from server");
	else if (m->val > max)
		snprintf(r->err, sizeof(r->err),
		    "%sliteral of %llu bytes "
		    "exceeds limit of %llu",
		    max == o->max_literal ? "" : "non-synchronizing ",
		    (unsigned long long)m->val, (unsigned long long)max);
	else
		return (int64_t)m->val; /* the models use small sizes */
	return -2;
}

static void
model_scan(const struct opts *o, const uint8_t *in, size_t len, struct res *r)
{
	struct model m = {0};
	size_t i = 0;
	int64_t lit;

	memset(r, 0, sizeof(*r));
	while (i < len) {
		uint8_t c = in[i];

		if (c == '\n') {
			lit = model_marker(o, &m, r);
			if (lit == -2)
				break;
			if (lit == -1)
				r->lines++;
			memset(&m, 0, sizeof(m));
			i++;
			if (lit >= 0) {
				r->literals++;
				if ((uint64_t)lit > len - i)
					lit = len - i;
				r->literal_bytes += lit;
				i += lit;
			}
			continue;
		}
		if (++m.seglen > o->max_line &&
		    (m.seglen > o->max_line + 1 || c != '\r')) {
			snprintf(r->err, sizeof(r->err),
			    "line longer than %zu bytes", o->max_line);
			break;
		}
		m.lastcr = c == '\r';
		if (m.escaped) {
			m.escaped = 0;
			model_brace(&m, c);
		} else if (c == '"') {
			m.quoted = !m.quoted;
			m.brace = 0;
		} else if (c == '\\' && m.quoted) {
			m.escaped = 1;
			m.brace = 0;
		} else
			model_brace(&m, c);
		i++;
	}
	r->rc = r->err[0] ? -1 : 0;
	r->bytes = i;
}

static int
model_same(const struct res *a, const struct res *m)
{
	return a->rc == m->rc && strcmp(a->err, m->err) == 0 &&
	       a->bytes == m->bytes && a->lines == m->lines &&
	       a->literals == m->literals &&
	       a->literal_bytes == m->literal_bytes;
}

/* Random sessions: framing must not depend on where reads split. */
static void
test_random(void)
{
	/* Mostly well-formed pieces, a few that break the framing. */
	static const char *parts[] = {"a LOGIN ", "{3+}\r\n", "abc",
	    "\"q{5}\" ", " ", "{0}\r\n", "x\r\n", "\n", "\\", "~{2}\r\n",
	    "{1}\r\n", "y", "\r", "* 1 FETCH (BODY[] {4}\r\n", "b NOOP\r\n",
	    "\"a\\\"{1}\" ", "x {1}\r\n", "c LOGIN \"u\" ", "abc\r\n",
	    "{2}\r\n", "\"", "{", "}", "9", "{18446744073709551616}"};
	size_t nparts = sizeof(parts) / sizeof(parts[0]);
	uint8_t in[160];
	struct res r, m;
	struct opts o = client;
	int bad = 0, errors = 0;

	o.max_line = 60;
	srandom(3501);
	for (int t = 0; t < 500 && !bad; t++) {
		size_t len = 0;

		while (len < sizeof(in) - 40) {
			const char *s = parts[random() % nparts];

			memcpy(in + len, s, strlen(s));
			len += strlen(s);
		}
		o.dir = t % 2 ? FRAMER_SERVER : FRAMER_CLIENT;
		o.hold = t % 3 == 0;
		bad = agree(&o, in, len, &r);
		model_scan(&o, in, len, &m);
		if (!model_same(&r, &m)) {
			fprintf(stderr, "  input \"%.*s\"\n", (int)len, in);
			show("framer", &r);
			show("model", &m);
			bad |= 8;
		}
		errors += r.rc != 0;
	}
	CHECK(!(bad & 7));
	CHECK(!(bad & 8));
	/* Both outcomes must be exercised for the check to mean much. */
	if (errors < 50 || errors > 450)
		fprintf(stderr, "  %d of 500 random sessions failed\n", errors);
	CHECK(errors >= 50 && errors <= 450);
}

int
main(void)
{
	test_sessions();
	test_quotes();
	test_markers();
	test_limits();
	test_prefix();
	test_hold();
	test_errors_sticky();
	test_random();
	return test_done("test_framer");
}
