/*
 * IMAP framer: see framer.h for the grammar and the decisions.
 *
 * Line bytes go through a table-driven skip loop that stops only at bytes
 * that can change the state (LF, quote, backslash, brace); the brace group
 * that may become a literal marker is then followed byte by byte, which is
 * cheap because it is a few bytes at the end of a segment.  Literal payload
 * is skipped by arithmetic.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "framer.h"

enum {
	FRAMER_S_LINE, /* in a line segment */
	FRAMER_S_LITERAL, /* skipping left bytes of payload */
	FRAMER_S_WAIT, /* held at a synchronizing literal */
	FRAMER_S_ERROR
};

/* Brace group states: the candidate literal marker of a segment. */
enum {
	BR_NONE, /* no open group */
	BR_OPEN, /* after "{" */
	BR_CLOSED /* after "}", br_trail counts SP/HTAB/CR after it */
};

#define FRAMER_MAX_DIGITS 20 /* UINT64_MAX has 20 digits */

/*
 * Bytes the skip loop must stop at, outside and inside a quoted string.
 * Everything else is opaque line text while no brace group is open.
 */
static const uint8_t stop_plain[256] = {['\n'] = 1, ['"'] = 1, ['{'] = 1};
static const uint8_t stop_quoted[256] = {
    ['\n'] = 1, ['"'] = 1, ['{'] = 1, ['\\'] = 1};

static int framer_fail(struct framer *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

void
framer_init(struct framer *f, enum framer_dir dir, size_t max_line,
    uint64_t max_literal)
{
	memset(f, 0, sizeof(*f));
	f->dir = dir;
	f->max_line = max_line;
	f->max_literal = max_literal;
	f->state = FRAMER_S_LINE;
}

static int
framer_fail(struct framer *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f->err, sizeof(f->err), fmt, ap);
	va_end(ap);
	f->state = FRAMER_S_ERROR;
	return -1;
}

/* Keep the start of the logical line; later bytes are only counted. */
static void
framer_capture(struct framer *f, const uint8_t *p, size_t n)
{
	size_t room = FRAMER_CAPTURE - f->caplen;

	if (n > room) {
		f->capdrop += n - room;
		n = room;
	}
	memcpy(f->cap + f->caplen, p, n);
	f->caplen += n;
	f->cap[f->caplen] = '\0';
}

/* A new segment starts: after a line end or after literal payload. */
static void
framer_segment_reset(struct framer *f)
{
	f->seglen = 0;
	f->lastcr = 0;
	f->quoted = 0;
	f->escaped = 0;
	f->brace = BR_NONE;
}

static void
framer_line_done(struct framer *f)
{
	f->lines++;
	if (f->on_line != NULL)
		f->on_line(f->arg, f->cap, f->caplen, f->capdrop > 0);
	f->caplen = 0;
	f->capdrop = 0;
}

static void
framer_brace_open(struct framer *f)
{
	f->brace = BR_OPEN;
	f->br_bad = 0;
	f->br_plus = 0;
	f->br_digits = 0;
	f->br_trail = 0;
	f->br_val = 0;
}

/* Digits of an open group; overflow is remembered, not reported yet. */
static void
framer_brace_digit(struct framer *f, unsigned d)
{
	if (f->br_plus) {
		f->br_bad = 1;
		return;
	}
	if (++f->br_digits > FRAMER_MAX_DIGITS ||
	    f->br_val > (UINT64_MAX - d) / 10)
		f->br_digits = FRAMER_MAX_DIGITS + 1;
	else
		f->br_val = f->br_val * 10 + d;
}

/*
 * Follow the last brace group of the segment.  Only a group that is still
 * closed at the line end matters; any other byte after "}" drops it, so a
 * group in the middle of a line is just text.
 */
static void
framer_brace(struct framer *f, uint8_t c)
{
	switch (f->brace) {
	case BR_NONE:
		if (c == '{')
			framer_brace_open(f);
		break;
	case BR_OPEN:
		if (c >= '0' && c <= '9')
			framer_brace_digit(f, c - '0');
		else if (c == '+' && f->br_digits > 0 && !f->br_plus)
			f->br_plus = 1;
		else if (c == '}')
			f->brace = BR_CLOSED;
		else
			f->br_bad = 1; /* also a second "{" */
		break;
	case BR_CLOSED:
		if (c == ' ' || c == '\t' || c == '\r')
			f->br_trail++;
		else if (c == '{')
			framer_brace_open(f);
		else
			f->brace = BR_NONE;
		break;
	}
}

/* Quote tracking; a quote character also ends any brace group. */
static void
framer_quote(struct framer *f, uint8_t c)
{
	if (f->escaped) {
		f->escaped = 0;
		framer_brace(f, c);
	} else if (c == '"') {
		f->quoted = !f->quoted;
		f->brace = BR_NONE;
	} else if (c == '\\' && f->quoted) {
		f->escaped = 1;
		f->brace = BR_NONE;
	} else
		framer_brace(f, c);
}

/* Check the marker that ends a segment and enter its literal. */
static int
framer_marker(struct framer *f)
{
	uint64_t n = f->br_val, max;

	if (f->quoted)
		return framer_fail(
		    f, "literal size inside unterminated quoted string");
	if (f->br_bad || f->br_digits == 0 || f->br_trail > (unsigned)f->lastcr)
		return framer_fail(f, "malformed literal size");
	if (f->br_digits > FRAMER_MAX_DIGITS)
		return framer_fail(f, "literal size out of range");
	if (f->br_plus && f->dir == FRAMER_SERVER)
		return framer_fail(f, "non-synchronizing literal from server");
	max = f->max_literal;
	if (f->br_plus && f->max_nonsync != 0 && f->max_nonsync < max)
		max = f->max_nonsync;
	if (n > max)
		return framer_fail(f,
		    "%sliteral of %" PRIu64 " bytes exceeds limit of %" PRIu64,
		    max < f->max_literal ? "non-synchronizing " : "", n, max);
	f->left = n;
	if (f->hold_sync && !f->br_plus && f->dir == FRAMER_CLIENT) {
		f->state = FRAMER_S_WAIT;
		return 0;
	}
	f->literals++;
	if (n > 0)
		f->state = FRAMER_S_LITERAL;
	return 0;
}

/* LF: the segment ends, with a literal marker or as the logical line end. */
static int
framer_segment_end(struct framer *f)
{
	int marker = f->brace == BR_CLOSED;

	/* The CR of CRLF is not part of the line. */
	if (f->lastcr && f->capdrop > 0)
		f->capdrop--;
	else if (f->lastcr)
		f->cap[--f->caplen] = '\0';
	if (marker && framer_marker(f) == -1)
		return -1;
	if (!marker)
		framer_line_done(f);
	framer_segment_reset(f);
	return 0;
}

/*
 * One line byte that the skip loop stopped at, or any byte at the length
 * limit.  A CR one past the limit is allowed in case LF follows.
 */
static int
framer_line_byte(struct framer *f, uint8_t c)
{
	if (c == '\n')
		return framer_segment_end(f);
	f->seglen++;
	if (f->seglen > f->max_line &&
	    (f->seglen > f->max_line + 1 || c != '\r'))
		return framer_fail(
		    f, "line longer than %zu bytes", f->max_line);
	f->lastcr = c == '\r';
	framer_capture(f, &c, 1);
	framer_quote(f, c);
	return 0;
}

/*
 * Skip bytes that cannot change the state: no brace group is open and the
 * segment is below the length limit.  Returns the first byte not skipped.
 */
static const uint8_t *
framer_skip(struct framer *f, const uint8_t *p, const uint8_t *end)
{
	const uint8_t *stop = f->quoted ? stop_quoted : stop_plain;
	const uint8_t *s = p, *lim = end;
	size_t room = f->max_line - f->seglen;

	if ((size_t)(end - p) > room)
		lim = p + room;
	while (s < lim && !stop[*s])
		s++;
	if (s > p) {
		framer_capture(f, p, s - p);
		f->seglen += s - p;
		f->lastcr = s[-1] == '\r';
		/* A byte after "}" other than SP/HTAB/CR ends the group. */
		if (f->brace == BR_CLOSED)
			f->brace = BR_NONE;
	}
	return s;
}

/* Whether the skip loop may start at byte c: no group byte to follow. */
static int
framer_skippable(const struct framer *f, uint8_t c)
{
	if (f->brace == BR_OPEN || f->escaped || f->seglen >= f->max_line)
		return 0;
	return f->brace != BR_CLOSED || (c != ' ' && c != '\t' && c != '\r');
}

/*
 * Scan line bytes until the end of the buffer or a state change (literal,
 * hold, error).  Returns the first byte not consumed.
 */
static const uint8_t *
framer_line(struct framer *f, const uint8_t *p, const uint8_t *end)
{
	while (p < end && f->state == FRAMER_S_LINE) {
		if (framer_skippable(f, *p)) {
			p = framer_skip(f, p, end);
			if (p == end)
				break;
		}
		if (framer_line_byte(f, *p) == -1)
			break; /* p stays at the offending byte */
		p++;
	}
	return p;
}

ssize_t
framer_scan(struct framer *f, const uint8_t *buf, size_t len)
{
	const uint8_t *p = buf, *end = buf + len;
	size_t n;

	while (p < end) {
		switch (f->state) {
		case FRAMER_S_LINE:
			p = framer_line(f, p, end);
			break;
		case FRAMER_S_LITERAL:
			n = end - p;
			if (f->left < n)
				n = f->left;
			p += n;
			f->left -= n;
			f->literal_bytes += n;
			if (f->left == 0)
				f->state = FRAMER_S_LINE;
			break;
		case FRAMER_S_WAIT:
			f->bytes += p - buf;
			return p - buf;
		default:
			/* Count up to the offending byte, for the log. */
			f->bytes += p - buf;
			return -1;
		}
	}
	if (f->state == FRAMER_S_ERROR)
		return -1;
	f->bytes += len;
	return len;
}

int
framer_at_boundary(const struct framer *f)
{
	return f->state == FRAMER_S_LINE && f->seglen == 0 && f->caplen == 0 &&
	       f->capdrop == 0;
}

int
framer_waiting(const struct framer *f)
{
	return f->state == FRAMER_S_WAIT;
}

void
framer_cont(struct framer *f, int accepted)
{
	if (f->state != FRAMER_S_WAIT)
		return;
	if (!accepted) {
		/* The command ended at the held line end. */
		framer_line_done(f);
		f->state = FRAMER_S_LINE;
		return;
	}
	f->literals++;
	f->state = f->left > 0 ? FRAMER_S_LITERAL : FRAMER_S_LINE;
}

uint64_t
framer_held_size(const struct framer *f)
{
	return f->state == FRAMER_S_WAIT ? f->left : 0;
}

uint64_t
framer_literal_left(const struct framer *f)
{
	return f->state == FRAMER_S_LITERAL ? f->left : 0;
}

const char *
framer_prefix(const struct framer *f, size_t *len)
{
	if (len != NULL)
		*len = f->caplen;
	return f->cap;
}
