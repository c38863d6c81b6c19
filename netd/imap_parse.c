/*
 * IMAP command and response parser: see imap_parse.h for the model (one
 * complete logical line, literals inline or spooled) and the span
 * conventions.
 *
 * The parser is a recursive-descent reader over a cursor, without
 * recursion: the only nested syntax (parenthesized lists in BODYSTRUCTURE,
 * ENVELOPE, flags, raw arguments) is skipped by one loop with a counter
 * per level.  Every read checks the cursor against the buffer length.
 * Errors name the offset and the offending byte, except inside credentials
 * (LOGIN password, AUTHENTICATE initial response), where only the offset is
 * given.
 */
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "imap_parse.h"

/* Parser state for one line. */
struct ps {
	const uint8_t *b;
	size_t len;
	size_t pos;
	const struct imap_spool *sp;
	size_t nsp;
	size_t spnext; /* next spool entry to be matched */
	int client; /* commands: "{n+}" allowed */
	int secret; /* inside a credential: quote no bytes in errors */
	size_t lit_end; /* end of the last literal (marker or payload) */
	unsigned *nlit;
	int *litover;
	struct imap_lit *lit;
	char *err;
	int failed;
};

/* What a string argument may be. */
enum {
	S_ASTRING, /* atom / quoted / literal */
	S_STRING, /* quoted / literal */
	S_NSTRING /* quoted / literal / NIL */
};
#define S_LIT8 0x100 /* "~{n}" allowed too */

/* ------------------------------------------------------------------ */
/* Character classes (RFC 9051 section 9), 8-bit bytes allowed in atoms */

static inline int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static inline int
is_alpha(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* ATOM-CHAR: no CTL, SP, "(", ")", "{", "%", "*", DQUOTE, "\", "]". */
static inline int
is_atom_char(int c)
{
	if (c <= 0x20 || c == 0x7f)
		return 0;
	switch (c) {
	case '(':
	case ')':
	case '{':
	case '%':
	case '*':
	case '"':
	case '\\':
	case ']':
		return 0;
	}
	return 1;
}

static inline int
is_astring_char(int c)
{
	return c == ']' || is_atom_char(c);
}

static inline int
is_tag_char(int c)
{
	return c != '+' && is_astring_char(c);
}

/* A byte of an atom-like word inside skipped values: anything but CTL,
 * SP, parentheses, DQUOTE and "{" (flags "\Seen", "\*", list patterns). */
static inline int
is_word_char(int c)
{
	if (c <= 0x20 || c == 0x7f)
		return 0;
	return c != '(' && c != ')' && c != '"' && c != '{';
}

/* Fetch attribute names: atom bytes except those that follow a name. */
static inline int
is_fa_char(int c)
{
	return is_atom_char(c) && c != '[' && c != '<' && c != '>';
}

static inline int
is_b64_char(int c)
{
	return is_alpha(c) || is_digit(c) || c == '+' || c == '/' || c == '=';
}

static inline int
is_seq_char(int c)
{
	return is_digit(c) || c == ':' || c == ',' || c == '*' || c == '$';
}

static inline int
lc(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Case-insensitive comparison of n buffer bytes with a C string. */
static int
ci_eq(const uint8_t *p, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] == '\0' || lc(p[i]) != lc((uint8_t)s[i]))
			return 0;
	return s[n] == '\0';
}

/* The same with the length of s known (table lookups). */
static inline int
ci_eqn(const uint8_t *p, size_t n, const char *s, size_t sl)
{
	return n == sl && lc(p[0]) == lc((uint8_t)s[0]) && ci_eq(p, n, s);
}

/* ------------------------------------------------------------------ */
/* Cursor primitives */

static int fail(struct ps *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static int
fail(struct ps *p, const char *fmt, ...)
{
	va_list ap;

	if (!p->failed) {
		va_start(ap, fmt);
		vsnprintf(p->err, IMAP_ERR_LEN, fmt, ap);
		va_end(ap);
		p->failed = 1;
	}
	return -1;
}

/* The line ends here: end of buffer, or only its final CRLF/LF left. */
static int
at_end(const struct ps *p)
{
	size_t r = p->len - p->pos;

	return r == 0 || (r == 1 && p->b[p->pos] == '\n') ||
	       (r == 2 && p->b[p->pos] == '\r' && p->b[p->pos + 1] == '\n');
}

static int
peek(const struct ps *p)
{
	return p->pos < p->len ? p->b[p->pos] : -1;
}

static int
peek2(const struct ps *p)
{
	return p->pos + 1 < p->len ? p->b[p->pos + 1] : -1;
}

/* Error at the cursor; expect (may be NULL) names what was wanted. */
static int
unexpected(struct ps *p, const char *expect)
{
	char want[48] = "";
	int c = peek(p);

	if (expect != NULL)
		snprintf(want, sizeof(want), " (expected %s)", expect);
	if (at_end(p))
		return fail(
		    p, "unexpected end of line at offset %zu%s", p->pos, want);
	if (p->secret)
		return fail(p, "malformed credentials at offset %zu", p->pos);
	if (c > 0x20 && c < 0x7f && c != '\'')
		return fail(p, "unexpected character '%c' at offset %zu%s", c,
		    p->pos, want);
	if (c == ' ')
		return fail(p, "unexpected SP at offset %zu%s", p->pos, want);
	return fail(
	    p, "unexpected byte 0x%02x at offset %zu%s", c, p->pos, want);
}

static int
expect(struct ps *p, int c, const char *name)
{
	if (peek(p) != c)
		return unexpected(p, name);
	p->pos++;
	return 0;
}

static int
expect_sp(struct ps *p)
{
	return expect(p, ' ', "SP");
}

static int
expect_end(struct ps *p)
{
	if (!at_end(p))
		return unexpected(p, "end of line");
	return 0;
}

/* Advance over bytes of a class; returns how many.  Locals, because a
 * byte read may alias p->pos and would force a store per byte. */
#define RUN(p, pred)                                          \
	({                                                    \
		const uint8_t *b_ = (p)->b;                   \
		size_t s_ = (p)->pos, i_ = s_, l_ = (p)->len; \
		while (i_ < l_ && pred(b_[i_]))               \
			i_++;                                 \
		(p)->pos = i_;                                \
		i_ - s_;                                      \
	})

static struct imap_span
span(size_t from, size_t to)
{
	struct imap_span s = {from, to - from};

	return s;
}

/* An unsigned decimal number of at most max. */
static int
number(struct ps *p, uint64_t max, uint64_t *out, const char *what)
{
	size_t start = p->pos;
	uint64_t n = 0;
	unsigned d;

	if (!is_digit(peek(p)))
		return unexpected(p, what);
	while (p->pos < p->len && is_digit(p->b[p->pos])) {
		d = p->b[p->pos] - '0';
		if (n > (UINT64_MAX - d) / 10)
			return fail(
			    p, "%s out of range at offset %zu", what, start);
		n = n * 10 + d;
		p->pos++;
	}
	if (n > max)
		return fail(p, "%s out of range at offset %zu", what, start);
	*out = n;
	return 0;
}

/* A whole byte range as a decimal number (no sign, no SP). */
static int
parse_u64(const uint8_t *b, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 20)
		return -1;
	for (i = 0; i < n; i++) {
		if (!is_digit(b[i]) || v > (UINT64_MAX - (b[i] - '0')) / 10)
			return -1;
		v = v * 10 + (b[i] - '0');
	}
	*out = v;
	return 0;
}

static int
nz_number32(struct ps *p, uint32_t *out, const char *what)
{
	uint64_t v;
	size_t start = p->pos;

	if (number(p, UINT32_MAX, &v, what) == -1)
		return -1;
	if (v == 0)
		return fail(p, "%s is zero at offset %zu", what, start);
	*out = (uint32_t)v;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Strings and literals */

static void
str_clear(struct imap_str *s)
{
	memset(s, 0, sizeof(*s));
	s->spool = -1;
}

/*
 * A literal at the cursor ("{" or "~{"): the marker, its line end, and
 * the payload, which is inline (skipped by length) or spooled (the next
 * spool entry starts exactly here).
 */
static int
literal(struct ps *p, struct imap_str *s, int allow8)
{
	size_t start = p->pos, q;
	const struct imap_spool *e;
	struct imap_lit *l;
	uint64_t n = 0;
	unsigned flags = 0, nd = 0, d;
	int spool = -1;

	if (peek(p) == '~') {
		if (!allow8)
			return fail(
			    p, "literal8 not allowed at offset %zu", start);
		flags |= IMAP_LIT_BINARY;
		p->pos++;
	}
	if (expect(p, '{', "'{'") == -1)
		return -1;
	while (p->pos < p->len && is_digit(p->b[p->pos])) {
		d = p->b[p->pos] - '0';
		if (++nd > 20 || n > (UINT64_MAX - d) / 10)
			return fail(p,
			    "literal size out of range at offset %zu", start);
		n = n * 10 + d;
		p->pos++;
	}
	if (nd == 0)
		return unexpected(p, "literal size");
	if (peek(p) == '+') {
		if (!p->client)
			return fail(p,
			    "non-synchronizing literal from server at "
			    "offset %zu",
			    start);
		flags |= IMAP_LIT_NONSYNC;
		p->pos++;
	}
	if (expect(p, '}', "'}'") == -1)
		return -1;
	if (peek(p) == '\r')
		p->pos++;
	if (peek(p) != '\n')
		return fail(p,
		    "literal marker at offset %zu not followed by CRLF", start);
	p->pos++;
	q = p->pos;
	if (p->spnext < p->nsp && p->sp[p->spnext].at <= q) {
		e = &p->sp[p->spnext];
		if (e->at < q)
			return fail(p,
			    "spool entry %zu (offset %zu) is not at a literal",
			    p->spnext, e->at);
		if (e->len != n)
			return fail(p,
			    "spool entry %zu has %" PRIu64
			    " bytes, literal at offset %zu says %" PRIu64,
			    p->spnext, e->len, start, n);
		spool = (int)p->spnext++;
	} else {
		if (n > p->len - q)
			return fail(p,
			    "literal of %" PRIu64 " bytes at offset %zu runs "
			    "past the end of the line",
			    n, start);
		p->pos = q + (size_t)n;
	}
	p->lit_end = p->pos;
	if (*p->nlit < IMAP_MAX_LITS) {
		l = &p->lit[*p->nlit];
		l->off = start;
		l->mlen = q - start;
		l->len = n;
		l->spool = spool;
		l->flags = flags;
	} else
		*p->litover = 1;
	if (*p->nlit < UINT_MAX)
		(*p->nlit)++;
	if (s != NULL) {
		s->kind = IMAP_STR_LITERAL;
		s->flags = flags;
		s->spool = spool;
		s->tok = span(start, p->pos);
		s->data = q;
		s->len = n;
	}
	return 0;
}

/* DQUOTE *QUOTED-CHAR DQUOTE; only \" and \\ are escapes. */
static int
quoted(struct ps *p, struct imap_str *s)
{
	size_t start = p->pos;
	unsigned flags = 0;
	int c;

	p->pos++;
	for (;;) {
		/* plain bytes in a local loop, then the special one */
		const uint8_t *b = p->b;
		size_t i = p->pos, l = p->len;

		while (i < l && b[i] != '"' && b[i] != '\\' && b[i] >= 0x0e)
			i++;
		p->pos = i;
		if (p->pos >= p->len)
			return fail(p,
			    "unterminated quoted string at offset %zu", start);
		c = p->b[p->pos];
		if (c == '"')
			break;
		if (c == '\r' || c == '\n')
			return fail(p,
			    "unterminated quoted string at offset %zu", start);
		if (c == '\0')
			return fail(
			    p, "NUL in quoted string at offset %zu", p->pos);
		if (c == '\\') {
			p->pos++;
			c = peek(p);
			if (c != '"' && c != '\\') {
				if (p->secret || c < 0x21 || c > 0x7e)
					return fail(p,
					    "bad escape in quoted string at "
					    "offset %zu",
					    p->pos - 1);
				return fail(p,
				    "bad escape '\\%c' in quoted string at "
				    "offset %zu",
				    c, p->pos - 1);
			}
			flags |= IMAP_STR_ESCAPED;
		}
		p->pos++;
	}
	p->pos++;
	if (s != NULL) {
		s->kind = IMAP_STR_QUOTED;
		s->flags = flags;
		s->spool = -1;
		s->tok = span(start, p->pos);
		s->data = start + 1;
		s->len = p->pos - 1 - (start + 1);
	}
	return 0;
}

/* astring, string or nstring (what), optionally literal8. */
static int
string(struct ps *p, struct imap_str *s, int what, const char *name)
{
	struct imap_str tmp;
	size_t start = p->pos, n;
	int c = peek(p), allow8 = what & S_LIT8;

	what &= ~S_LIT8;
	if (s == NULL)
		s = &tmp;
	str_clear(s);
	if (c == '"')
		return quoted(p, s);
	if (c == '{' || (c == '~' && peek2(p) == '{' && allow8))
		return literal(p, s, allow8);
	if (what == S_NSTRING) {
		if (p->len - p->pos >= 3 && ci_eq(p->b + p->pos, 3, "NIL") &&
		    !(p->len - p->pos > 3 &&
		        is_astring_char(p->b[p->pos + 3]))) {
			p->pos += 3;
			s->kind = IMAP_STR_NIL;
			s->tok = span(start, p->pos);
			s->data = start;
			s->len = 3;
			return 0;
		}
		return unexpected(p, name);
	}
	if (what == S_STRING)
		return unexpected(p, name);
	n = RUN(p, is_astring_char);
	if (n == 0)
		return unexpected(p, name);
	if (peek(p) == '{' || peek(p) == '"')
		return unexpected(p, "SP");
	s->kind = IMAP_STR_ATOM;
	s->tok = span(start, p->pos);
	s->data = start;
	s->len = n;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Skipped values */

/*
 * One value: a word, a quoted string, a literal or a parenthesized list of
 * values, nested at most IMAP_MAX_DEPTH deep, each list holding at most
 * limit elements.  Inside lists, SP may repeat and tokens may touch
 * parentheses; a word or string followed directly by a quote or literal
 * marker is an error, which keeps "abc{5}" from being taken as an atom.
 */
static int
skip_value(struct ps *p, size_t limit, struct imap_span *out)
{
	uint32_t cnt[IMAP_MAX_DEPTH];
	size_t start = p->pos;
	unsigned depth = 0;
	int c, need_sep = 0;

	for (;;) {
		c = peek(p);
		if (depth > 0) {
			if (c == ' ') {
				p->pos++;
				need_sep = 0;
				continue;
			}
			if (c == ')') {
				p->pos++;
				need_sep = 0;
				if (--depth == 0)
					break;
				continue;
			}
			if (at_end(p))
				return fail(p,
				    "unterminated list at offset %zu", start);
			if (++cnt[depth - 1] > limit)
				return fail(p,
				    "too many items in a list (max %zu) at "
				    "offset %zu",
				    limit, p->pos);
		} else if (at_end(p))
			return unexpected(p, "a value");
		if (need_sep && c != '(')
			return unexpected(p, "SP");
		if (c == '(') {
			if (depth == IMAP_MAX_DEPTH)
				return fail(p,
				    "nesting deeper than %d at offset %zu",
				    IMAP_MAX_DEPTH, p->pos);
			cnt[depth++] = 0;
			p->pos++;
			need_sep = 0;
			continue;
		}
		if (c == '"') {
			if (quoted(p, NULL) == -1)
				return -1;
		} else if (c == '{' || (c == '~' && peek2(p) == '{')) {
			if (literal(p, NULL, 1) == -1)
				return -1;
		} else if (RUN(p, is_word_char) == 0)
			return unexpected(p, "a value");
		need_sep = 1;
		if (depth == 0)
			break;
	}
	if (out != NULL)
		*out = span(start, p->pos);
	return 0;
}

/* Values separated by SP up to the end of the line (may be none). */
static int
skip_rest(struct ps *p, size_t limit, struct imap_span *out)
{
	size_t start = p->pos, end = p->pos, v;

	while (!at_end(p)) {
		v = p->pos;
		if (skip_value(p, limit, NULL) == -1)
			return -1;
		end = p->pos;
		if (at_end(p))
			break;
		/*
		 * THREAD: "(1 2)(3 4)".  Decided on the value's first byte,
		 * never on its last, which may be literal payload.
		 */
		if (p->b[v] == '(' && peek(p) == '(')
			continue;
		if (expect_sp(p) == -1)
			return -1;
		while (peek(p) == ' ')
			p->pos++;
	}
	if (out != NULL)
		*out = span(start, end);
	return 0;
}

/* A parenthesized list (skipped). */
static int
skip_list(struct ps *p, size_t limit, struct imap_span *out)
{
	if (peek(p) != '(')
		return unexpected(p, "'('");
	return skip_value(p, limit, out);
}

/* Every spool entry must have been matched by a literal. */
static int
spools_done(struct ps *p)
{
	if (p->spnext < p->nsp)
		return fail(p,
		    "spool entry %zu (offset %zu) is not at a literal",
		    p->spnext, p->sp[p->spnext].at);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Sequence sets */

/* sequence-set / "$", kept as a span; numbers nonzero and 32-bit. */
static int
seqset(struct ps *p, struct imap_span *out)
{
	size_t start = p->pos;
	uint32_t v;

	if (peek(p) == '$') {
		p->pos++;
	} else {
		for (;;) {
			if (peek(p) == '*')
				p->pos++;
			else if (nz_number32(p, &v, "sequence number") == -1)
				return -1;
			if (peek(p) == ':') {
				p->pos++;
				if (peek(p) == '*')
					p->pos++;
				else if (nz_number32(
				             p, &v, "sequence number") == -1)
					return -1;
			}
			if (peek(p) != ',')
				break;
			p->pos++;
		}
	}
	if (p->pos < p->len && is_seq_char(p->b[p->pos]))
		return unexpected(p, "SP");
	*out = span(start, p->pos);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Fetch attributes and sections */

enum { SEC_NONE, SEC_OPT, SEC_REQ, SEC_BIN };

static const struct fa_def {
	const char *name;
	size_t len;
	enum imap_fa kind;
	unsigned flags;
	int sec; /* SEC_*: section allowed/required/binary section */
} fa_defs[] = {
    {"UID", 3, IMAP_FA_UID, 0, SEC_NONE},
    {"FLAGS", 5, IMAP_FA_FLAGS, 0, SEC_NONE},
    {"INTERNALDATE", 12, IMAP_FA_INTERNALDATE, 0, SEC_NONE},
    {"RFC822", 6, IMAP_FA_RFC822, 0, SEC_NONE},
    {"RFC822.HEADER", 13, IMAP_FA_RFC822_HEADER, 0, SEC_NONE},
    {"RFC822.TEXT", 11, IMAP_FA_RFC822_TEXT, 0, SEC_NONE},
    {"RFC822.SIZE", 11, IMAP_FA_RFC822_SIZE, 0, SEC_NONE},
    {"ENVELOPE", 8, IMAP_FA_ENVELOPE, 0, SEC_NONE},
    {"BODY", 4, IMAP_FA_BODY, 0, SEC_OPT},
    {"BODYSTRUCTURE", 13, IMAP_FA_BODYSTRUCTURE, 0, SEC_NONE},
    {"BODY.PEEK", 9, IMAP_FA_BODY_SECTION, IMAP_FA_PEEK, SEC_REQ},
    {"BINARY", 6, IMAP_FA_BINARY, 0, SEC_BIN},
    {"BINARY.PEEK", 11, IMAP_FA_BINARY, IMAP_FA_PEEK, SEC_BIN},
    {"BINARY.SIZE", 11, IMAP_FA_BINARY_SIZE, 0, SEC_BIN},
    {"MODSEQ", 6, IMAP_FA_MODSEQ, 0, SEC_NONE},
    {"PREVIEW", 7, IMAP_FA_PREVIEW, 0, SEC_NONE},
    {"SAVEDATE", 8, IMAP_FA_SAVEDATE, 0, SEC_NONE},
    {"EMAILID", 7, IMAP_FA_EMAILID, 0, SEC_NONE},
    {"THREADID", 8, IMAP_FA_THREADID, 0, SEC_NONE},
    {"ALL", 3, IMAP_FA_ALL, 0, SEC_NONE},
    {"FAST", 4, IMAP_FA_FAST, 0, SEC_NONE},
    {"FULL", 4, IMAP_FA_FULL, 0, SEC_NONE},
};

const char *
imap_fa_name(enum imap_fa k)
{
	size_t i;

	if (k == IMAP_FA_BODY_SECTION)
		return "BODY[]";
	for (i = 0; i < sizeof(fa_defs) / sizeof(fa_defs[0]); i++)
		if (fa_defs[i].kind == k)
			return fa_defs[i].name;
	return "OTHER";
}

/* Everything but the part[] array, valid up to npart. */
static void
sect_clear(struct imap_section *s)
{
	memset(&s->span, 0, sizeof(s->span));
	s->npart = 0;
	memset(&s->parts, 0, sizeof(s->parts));
	s->text = IMAP_SECT_NONE;
	memset(&s->fields, 0, sizeof(s->fields));
	s->nfields = 0;
}

/* header-list: "(" astring *(SP astring) ")" */
static int
header_list(struct ps *p, struct imap_section *s)
{
	size_t start = p->pos;

	if (expect(p, '(', "'('") == -1)
		return -1;
	s->nfields = 0;
	for (;;) {
		if (s->nfields >= IMAP_MAX_ITEMS)
			return fail(p,
			    "too many header fields (max %d) at offset %zu",
			    IMAP_MAX_ITEMS, p->pos);
		if (string(p, NULL, S_ASTRING, "header field name") == -1)
			return -1;
		s->nfields++;
		if (peek(p) == ')')
			break;
		if (expect_sp(p) == -1)
			return -1;
	}
	p->pos++;
	s->fields = span(start, p->pos);
	return 0;
}

/* section / section-binary, the cursor at "[". */
static int
section(struct ps *p, struct imap_section *s, int binary)
{
	size_t start = p->pos, kw;
	uint32_t v = 0;

	sect_clear(s);
	p->pos++;
	if (peek(p) == ']')
		goto done;
	if (is_digit(peek(p))) {
		s->parts.off = p->pos;
		for (;;) {
			if (peek(p) == '0')
				return unexpected(p, "part number");
			if (nz_number32(p, &v, "part number") == -1)
				return -1;
			if (s->npart >= IMAP_MAX_PARTS)
				return fail(p,
				    "section part path deeper than %d at "
				    "offset %zu",
				    IMAP_MAX_PARTS, start);
			s->part[s->npart++] = v;
			if (peek(p) != '.' || !is_digit(peek2(p)))
				break;
			p->pos++;
		}
		s->parts.len = p->pos - s->parts.off;
		if (binary || peek(p) == ']')
			goto done;
		if (expect(p, '.', "'.' or ']'") == -1)
			return -1;
	} else if (binary)
		return unexpected(p, "part number or ']'");
	kw = p->pos;
	while (
	    p->pos < p->len && (is_alpha(p->b[p->pos]) || p->b[p->pos] == '.'))
		p->pos++;
	if (ci_eq(p->b + kw, p->pos - kw, "HEADER"))
		s->text = IMAP_SECT_HEADER;
	else if (ci_eq(p->b + kw, p->pos - kw, "HEADER.FIELDS"))
		s->text = IMAP_SECT_HEADER_FIELDS;
	else if (ci_eq(p->b + kw, p->pos - kw, "HEADER.FIELDS.NOT"))
		s->text = IMAP_SECT_HEADER_FIELDS_NOT;
	else if (ci_eq(p->b + kw, p->pos - kw, "TEXT"))
		s->text = IMAP_SECT_TEXT;
	else if (ci_eq(p->b + kw, p->pos - kw, "MIME") && s->npart > 0)
		s->text = IMAP_SECT_MIME;
	else {
		p->pos = kw;
		if (!p->secret && p->pos < p->len &&
		    (is_alpha(p->b[p->pos]) || p->b[p->pos] == '.'))
			return fail(
			    p, "unknown section text at offset %zu", kw);
		return unexpected(p, "section text");
	}
	if (s->text == IMAP_SECT_HEADER_FIELDS ||
	    s->text == IMAP_SECT_HEADER_FIELDS_NOT) {
		if (expect_sp(p) == -1 || header_list(p, s) == -1)
			return -1;
	}
done:
	if (expect(p, ']', "']'") == -1)
		return -1;
	s->span = span(start, p->pos);
	return 0;
}

/*
 * A fetch attribute (command, resp = 0) or the name of a FETCH item
 * (response, resp = 1) with its section and partial.
 */
static int
fetch_att(struct ps *p, struct imap_fatt *a, int resp)
{
	const struct fa_def *d = NULL;
	size_t start = p->pos, n, i;
	uint64_t v;

	a->kind = IMAP_FA_OTHER;
	a->flags = 0;
	memset(&a->name, 0, sizeof(a->name));
	a->has_section = 0;
	sect_clear(&a->sect);
	a->has_partial = 0;
	a->origin = 0;
	a->count = 0;
	memset(&a->args, 0, sizeof(a->args));
	n = RUN(p, is_fa_char);
	if (n == 0)
		return unexpected(p, "fetch attribute");
	for (i = 0; i < sizeof(fa_defs) / sizeof(fa_defs[0]); i++)
		if (ci_eqn(p->b + start, n, fa_defs[i].name, fa_defs[i].len)) {
			d = &fa_defs[i];
			break;
		}
	a->kind = d != NULL ? d->kind : IMAP_FA_OTHER;
	a->flags = d != NULL ? d->flags : 0;
	if (a->kind == IMAP_FA_ALL || a->kind == IMAP_FA_FAST ||
	    a->kind == IMAP_FA_FULL) {
		/* Only valid alone; the caller handles that form. */
		return fail(p, "fetch macro %.*s not allowed at offset %zu",
		    (int)n, (const char *)p->b + start, start);
	}
	if (peek(p) == '[') {
		if (d == NULL) {
			/* Unknown attribute with a bracket argument: words
			 * and SP, no strings, literals or CTLs. */
			p->pos++;
			while (
			    p->pos < p->len && p->b[p->pos] != ']' &&
			    (p->b[p->pos] == ' ' || is_word_char(p->b[p->pos])))
				p->pos++;
			if (expect(p, ']', "']'") == -1)
				return -1;
		} else if (d->sec == SEC_NONE)
			return unexpected(p, "SP");
		else {
			if (section(p, &a->sect, d->sec == SEC_BIN) == -1)
				return -1;
			a->has_section = 1;
			if (a->kind == IMAP_FA_BODY)
				a->kind = IMAP_FA_BODY_SECTION;
		}
	} else if (d != NULL && (d->sec == SEC_REQ || d->sec == SEC_BIN))
		return unexpected(p, "'['");
	if (peek(p) == '<' &&
	    (a->kind == IMAP_FA_BODY_SECTION || a->kind == IMAP_FA_BINARY)) {
		p->pos++;
		if (number(p, UINT64_MAX, &a->origin, "partial origin") == -1)
			return -1;
		if (!resp) {
			if (expect(p, '.', "'.'") == -1)
				return -1;
			if (number(p, UINT64_MAX, &v, "partial count") == -1)
				return -1;
			if (v == 0)
				return fail(p,
				    "partial count is zero at offset %zu",
				    p->pos - 1);
			a->count = v;
		}
		if (expect(p, '>', "'>'") == -1)
			return -1;
		a->has_partial = 1;
	}
	a->name = span(start, p->pos);
	return 0;
}

/* The expansion of the fetch macros (RFC 3501 6.4.5). */
static void
fetch_macro(struct imap_cmd *c, enum imap_fa m, struct imap_span word)
{
	static const enum imap_fa all[] = {IMAP_FA_FLAGS, IMAP_FA_INTERNALDATE,
	    IMAP_FA_RFC822_SIZE, IMAP_FA_ENVELOPE, IMAP_FA_BODY};
	unsigned n = m == IMAP_FA_FAST ? 3 : m == IMAP_FA_ALL ? 4 : 5, i;

	c->fetch.macro = m;
	c->fetch.atts = word;
	for (i = 0; i < n; i++) {
		memset(&c->fetch.att[i], 0, offsetof(struct imap_fatt, sect));
		sect_clear(&c->fetch.att[i].sect);
		c->fetch.att[i].has_partial = 0;
		c->fetch.att[i].origin = 0;
		c->fetch.att[i].count = 0;
		memset(&c->fetch.att[i].args, 0, sizeof(struct imap_span));
		c->fetch.att[i].kind = all[i];
		c->fetch.att[i].flags = IMAP_FA_MACRO;
		c->fetch.att[i].name = word;
	}
	c->fetch.natt = n;
}

/* sequence-set SP ("ALL" / "FAST" / "FULL" / fetch-att / "(" ... ")")
 * [SP fetch-modifiers] */
static int
fetch_cmd(struct ps *p, struct imap_cmd *c)
{
	struct imap_fatt *a;
	size_t start, n;

	if (seqset(p, &c->seqset) == -1 || expect_sp(p) == -1)
		return -1;
	start = p->pos;
	c->fetch.macro = IMAP_FA_OTHER;
	if (peek(p) == '(') {
		p->pos++;
		for (;;) {
			if (c->fetch.natt >= IMAP_MAX_FETCH)
				return fail(p,
				    "too many fetch attributes (max %d) at "
				    "offset %zu",
				    IMAP_MAX_FETCH, p->pos);
			a = &c->fetch.att[c->fetch.natt];
			if (fetch_att(p, a, 0) == -1)
				return -1;
			c->fetch.natt++;
			if (peek(p) == ' ' && peek2(p) == '(') {
				/* attribute parameters: PREVIEW (LAZY) */
				p->pos++;
				if (skip_list(p, IMAP_MAX_ITEMS, &a->args) ==
				    -1)
					return -1;
			}
			if (peek(p) == ')')
				break;
			if (expect_sp(p) == -1)
				return -1;
		}
		p->pos++;
		c->fetch.atts = span(start, p->pos);
	} else {
		n = RUN(p, is_fa_char);
		p->pos = start;
		if (n > 0 && ci_eq(p->b + start, n, "ALL"))
			fetch_macro(c, IMAP_FA_ALL, span(start, start + n));
		else if (n > 0 && ci_eq(p->b + start, n, "FAST"))
			fetch_macro(c, IMAP_FA_FAST, span(start, start + n));
		else if (n > 0 && ci_eq(p->b + start, n, "FULL"))
			fetch_macro(c, IMAP_FA_FULL, span(start, start + n));
		if (c->fetch.macro != IMAP_FA_OTHER)
			p->pos = start + n;
		else {
			if (fetch_att(p, &c->fetch.att[0], 0) == -1)
				return -1;
			c->fetch.natt = 1;
			c->fetch.atts = c->fetch.att[0].name;
		}
	}
	if (!at_end(p)) {
		if (expect_sp(p) == -1 ||
		    skip_list(p, IMAP_MAX_ITEMS, &c->fetch.modifiers) == -1)
			return -1;
	}
	return expect_end(p);
}

/* ------------------------------------------------------------------ */
/* ID (RFC 2971): "(" *(string SP nstring) ")" / NIL */

static int
id_list(struct ps *p, struct imap_id *id)
{
	size_t start = p->pos, ps;

	memset(id, 0, sizeof(*id));
	if (p->len - p->pos >= 3 && ci_eq(p->b + p->pos, 3, "NIL")) {
		p->pos += 3;
		id->nil = 1;
		id->list.off = start;
		return 0;
	}
	if (expect(p, '(', "'(' or NIL") == -1)
		return -1;
	if (peek(p) != ')') {
		for (;;) {
			if (id->npair >= IMAP_MAX_ID)
				return fail(p,
				    "too many ID pairs (max %d) at offset %zu",
				    IMAP_MAX_ID, p->pos);
			ps = p->pos;
			if (string(p, &id->pair[id->npair].key, S_STRING,
			        "ID field") == -1 ||
			    expect_sp(p) == -1 ||
			    string(p, &id->pair[id->npair].val, S_NSTRING,
			        "ID value") == -1)
				return -1;
			id->pair[id->npair].pair = span(ps, p->pos);
			id->npair++;
			if (peek(p) == ')')
				break;
			if (expect_sp(p) == -1)
				return -1;
		}
	}
	p->pos++;
	id->list = span(start, p->pos);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Commands */

enum { A_NONE, A_RAW, A_OWN }; /* no arguments, skipped, own parser */

static const struct cmd_def {
	const char *name;
	size_t len;
	enum imap_cmd_kind kind;
	int args;
	int uid; /* valid after UID */
} cmd_defs[] = {
    {"CAPABILITY", 10, IMAP_CMD_CAPABILITY, A_NONE, 0},
    {"NOOP", 4, IMAP_CMD_NOOP, A_NONE, 0},
    {"LOGOUT", 6, IMAP_CMD_LOGOUT, A_NONE, 0},
    {"STARTTLS", 8, IMAP_CMD_STARTTLS, A_NONE, 0},
    {"AUTHENTICATE", 12, IMAP_CMD_AUTHENTICATE, A_OWN, 0},
    {"LOGIN", 5, IMAP_CMD_LOGIN, A_OWN, 0},
    {"ID", 2, IMAP_CMD_ID, A_OWN, 0},
    {"SELECT", 6, IMAP_CMD_SELECT, A_OWN, 0},
    {"EXAMINE", 7, IMAP_CMD_EXAMINE, A_OWN, 0},
    {"CREATE", 6, IMAP_CMD_CREATE, A_OWN, 0},
    {"DELETE", 6, IMAP_CMD_DELETE, A_OWN, 0},
    {"RENAME", 6, IMAP_CMD_RENAME, A_OWN, 0},
    {"SUBSCRIBE", 9, IMAP_CMD_SUBSCRIBE, A_OWN, 0},
    {"UNSUBSCRIBE", 11, IMAP_CMD_UNSUBSCRIBE, A_OWN, 0},
    {"LIST", 4, IMAP_CMD_LIST, A_RAW, 0},
    {"LSUB", 4, IMAP_CMD_LSUB, A_RAW, 0},
    {"STATUS", 6, IMAP_CMD_STATUS, A_OWN, 0},
    {"APPEND", 6, IMAP_CMD_APPEND, A_OWN, 0},
    {"CHECK", 5, IMAP_CMD_CHECK, A_NONE, 0},
    {"CLOSE", 5, IMAP_CMD_CLOSE, A_NONE, 0},
    {"EXPUNGE", 7, IMAP_CMD_EXPUNGE, A_OWN, 1},
    {"SEARCH", 6, IMAP_CMD_SEARCH, A_RAW, 1},
    {"FETCH", 5, IMAP_CMD_FETCH, A_OWN, 1},
    {"STORE", 5, IMAP_CMD_STORE, A_OWN, 1},
    {"COPY", 4, IMAP_CMD_COPY, A_OWN, 1},
    {"MOVE", 4, IMAP_CMD_MOVE, A_OWN, 1},
    {"UID", 3, IMAP_CMD_UID, A_OWN, 0},
    {"IDLE", 4, IMAP_CMD_IDLE, A_NONE, 0},
    {"ENABLE", 6, IMAP_CMD_ENABLE, A_RAW, 0},
    {"NAMESPACE", 9, IMAP_CMD_NAMESPACE, A_NONE, 0},
    {"UNSELECT", 8, IMAP_CMD_UNSELECT, A_NONE, 0},
    {"COMPRESS", 8, IMAP_CMD_COMPRESS, A_RAW, 0},
    {"GETQUOTA", 8, IMAP_CMD_GETQUOTA, A_RAW, 0},
    {"GETQUOTAROOT", 12, IMAP_CMD_GETQUOTAROOT, A_RAW, 0},
    {"SETQUOTA", 8, IMAP_CMD_SETQUOTA, A_RAW, 0},
    {"SORT", 4, IMAP_CMD_SORT, A_RAW, 1},
    {"THREAD", 6, IMAP_CMD_THREAD, A_RAW, 1},
    {"ESEARCH", 7, IMAP_CMD_ESEARCH, A_RAW, 0},
    {"GETACL", 6, IMAP_CMD_GETACL, A_RAW, 0},
    {"SETACL", 6, IMAP_CMD_SETACL, A_RAW, 0},
    {"DELETEACL", 9, IMAP_CMD_DELETEACL, A_RAW, 0},
    {"LISTRIGHTS", 10, IMAP_CMD_LISTRIGHTS, A_RAW, 0},
    {"MYRIGHTS", 8, IMAP_CMD_MYRIGHTS, A_RAW, 0},
    {"GETMETADATA", 11, IMAP_CMD_GETMETADATA, A_RAW, 0},
    {"SETMETADATA", 11, IMAP_CMD_SETMETADATA, A_RAW, 0},
    {"REPLACE", 7, IMAP_CMD_REPLACE, A_OWN, 1},
    {"NOTIFY", 6, IMAP_CMD_NOTIFY, A_RAW, 0},
    {"URLFETCH", 8, IMAP_CMD_URLFETCH, A_RAW, 0},
    {"GENURLAUTH", 10, IMAP_CMD_GENURLAUTH, A_RAW, 0},
    {"RESETKEY", 8, IMAP_CMD_RESETKEY, A_RAW, 0},
    {"XLIST", 5, IMAP_CMD_XLIST, A_RAW, 0},
    {"DONE", 4, IMAP_CMD_DONE, A_NONE, 0},
};
#define NCMD (sizeof(cmd_defs) / sizeof(cmd_defs[0]))

const char *
imap_cmd_name(enum imap_cmd_kind k)
{
	size_t i;

	for (i = 0; i < NCMD; i++)
		if (cmd_defs[i].kind == k)
			return cmd_defs[i].name;
	return "OTHER";
}

static const struct cmd_def *
cmd_lookup(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < NCMD; i++)
		if (ci_eqn(p, n, cmd_defs[i].name, cmd_defs[i].len))
			return &cmd_defs[i];
	return NULL;
}

/* One append-message: [flag-list SP] [date-time SP] append-data. */
static int
append_msg(struct ps *p, struct imap_cmd *c)
{
	struct imap_append_msg *m;
	size_t start = p->pos;

	if (c->nmsg >= IMAP_MAX_APPEND)
		return fail(p,
		    "too many APPEND messages (max %d) at offset %zu",
		    IMAP_MAX_APPEND, p->pos);
	m = &c->msg[c->nmsg];
	memset(m, 0, sizeof(*m));
	str_clear(&m->date);
	str_clear(&m->data);
	if (peek(p) == '(') {
		if (skip_list(p, IMAP_MAX_ITEMS, &m->flags) == -1 ||
		    expect_sp(p) == -1)
			return -1;
		m->has_flags = 1;
	}
	if (peek(p) == '"') {
		if (quoted(p, &m->date) == -1 || expect_sp(p) == -1)
			return -1;
	}
	if (peek(p) == '{' || (peek(p) == '~' && peek2(p) == '{')) {
		if (literal(p, &m->data, 1) == -1)
			return -1;
	} else if (p->len - p->pos >= 8 &&
	           ci_eq(p->b + p->pos, 8, "CATENATE")) {
		/* RFC 4469: parts are TEXT literals and URLs; unsupported,
		 * but consumed so that the command can be answered. */
		p->pos += 8;
		if (expect_sp(p) == -1 ||
		    skip_list(p, IMAP_MAX_ITEMS, &m->ext) == -1)
			return -1;
		m->catenate = 1;
		c->catenate = 1;
	} else if (p->len - p->pos >= 4 && ci_eq(p->b + p->pos, 4, "UTF8")) {
		/* RFC 6855: UTF8 SP "(" literal8 ")" */
		size_t xs;

		p->pos += 4;
		if (expect_sp(p) == -1)
			return -1;
		xs = p->pos;
		if (expect(p, '(', "'('") == -1)
			return -1;
		if (peek(p) != '~')
			return unexpected(p, "literal8");
		if (literal(p, &m->data, 1) == -1 ||
		    expect(p, ')', "')'") == -1)
			return -1;
		m->ext = span(xs, p->pos);
		m->utf8 = 1;
	} else
		return unexpected(p, "APPEND literal");
	m->msg = span(start, p->pos);
	c->nmsg++;
	return 0;
}

/* APPEND: mailbox 1*(SP append-message); REPLACE: one message. */
static int
append_cmd(struct ps *p, struct imap_cmd *c, int multi)
{
	if (string(p, &c->mailbox, S_ASTRING, "mailbox") == -1)
		return -1;
	do {
		if (expect_sp(p) == -1 || append_msg(p, c) == -1)
			return -1;
	} while (multi && !at_end(p));
	return expect_end(p);
}

/* Arguments of a known command. */
static int
cmd_args(struct ps *p, struct imap_cmd *c)
{
	uint32_t v;
	size_t n;

	switch (c->kind) {
	case IMAP_CMD_LOGIN:
		if (string(p, &c->user, S_ASTRING, "user name") == -1 ||
		    expect_sp(p) == -1)
			return -1;
		/* secret to the line end: a stray byte there is part of
		 * what the client meant as its password */
		p->secret = 1;
		if (string(p, NULL, S_ASTRING, "password") == -1 ||
		    expect_end(p) == -1)
			return -1;
		p->secret = 0;
		return 0;
	case IMAP_CMD_AUTHENTICATE:
		c->mech.off = p->pos;
		n = RUN(p, is_atom_char);
		if (n == 0)
			return unexpected(p, "SASL mechanism");
		c->mech.len = n;
		if (!at_end(p)) {
			if (expect_sp(p) == -1)
				return -1;
			p->secret = 1;
			c->ir.off = p->pos;
			c->ir.len = RUN(p, is_b64_char);
			if (c->ir.len == 0 || !at_end(p))
				return unexpected(p, NULL);
			p->secret = 0;
			c->has_ir = 1;
		}
		return 0;
	case IMAP_CMD_ID:
		if (id_list(p, &c->id) == -1)
			return -1;
		return expect_end(p);
	case IMAP_CMD_SELECT:
	case IMAP_CMD_EXAMINE:
	case IMAP_CMD_CREATE:
		/* RFC 4466 select/create parameters are skipped. */
		if (string(p, &c->mailbox, S_ASTRING, "mailbox") == -1)
			return -1;
		if (!at_end(p) && (expect_sp(p) == -1 ||
		                      skip_list(p, IMAP_MAX_ITEMS, NULL) == -1))
			return -1;
		return expect_end(p);
	case IMAP_CMD_DELETE:
	case IMAP_CMD_SUBSCRIBE:
	case IMAP_CMD_UNSUBSCRIBE:
		if (string(p, &c->mailbox, S_ASTRING, "mailbox") == -1)
			return -1;
		return expect_end(p);
	case IMAP_CMD_RENAME:
		if (string(p, &c->mailbox, S_ASTRING, "mailbox") == -1 ||
		    expect_sp(p) == -1 ||
		    string(p, &c->mailbox2, S_ASTRING, "mailbox") == -1)
			return -1;
		if (!at_end(p) && (expect_sp(p) == -1 ||
		                      skip_list(p, IMAP_MAX_ITEMS, NULL) == -1))
			return -1;
		return expect_end(p);
	case IMAP_CMD_STATUS:
		if (string(p, &c->mailbox, S_ASTRING, "mailbox") == -1 ||
		    expect_sp(p) == -1 ||
		    skip_list(p, IMAP_MAX_ITEMS, NULL) == -1)
			return -1;
		return expect_end(p);
	case IMAP_CMD_APPEND:
		return append_cmd(p, c, 1);
	case IMAP_CMD_REPLACE:
		c->seqset.off = p->pos;
		if (nz_number32(p, &v, "message number") == -1)
			return -1;
		c->seqset.len = p->pos - c->seqset.off;
		if (expect_sp(p) == -1)
			return -1;
		return append_cmd(p, c, 0);
	case IMAP_CMD_FETCH:
		return fetch_cmd(p, c);
	case IMAP_CMD_STORE:
		if (seqset(p, &c->seqset) == -1 || expect_sp(p) == -1)
			return -1;
		return skip_rest(p, IMAP_MAX_ITEMS, NULL);
	case IMAP_CMD_COPY:
	case IMAP_CMD_MOVE:
		if (seqset(p, &c->seqset) == -1 || expect_sp(p) == -1 ||
		    string(p, &c->mailbox, S_ASTRING, "mailbox") == -1)
			return -1;
		return expect_end(p);
	case IMAP_CMD_EXPUNGE:
		/* only UID EXPUNGE has arguments */
		if (seqset(p, &c->seqset) == -1)
			return -1;
		return expect_end(p);
	default:
		return skip_rest(p, IMAP_MAX_ITEMS, NULL);
	}
}

int
imap_parse_command(const uint8_t *buf, size_t len,
    const struct imap_spool *spools, size_t nspools, struct imap_cmd *c)
{
	const struct cmd_def *d;
	struct ps p;
	size_t n, w;

	/* Only the scalars: arrays are valid up to their counts. */
	memset(c, 0, offsetof(struct imap_cmd, id));
	memset(&c->id, 0, offsetof(struct imap_id, pair));
	c->nmsg = 0;
	c->catenate = 0;
	c->fetch.macro = IMAP_FA_OTHER;
	memset(&c->fetch.atts, 0, sizeof(c->fetch.atts));
	c->fetch.natt = 0;
	memset(&c->fetch.modifiers, 0, sizeof(c->fetch.modifiers));
	c->nlit = 0;
	c->lit_overflow = 0;
	c->err[0] = '\0';
	str_clear(&c->mailbox);
	str_clear(&c->mailbox2);
	str_clear(&c->user);
	memset(&p, 0, sizeof(p));
	p.b = buf;
	p.len = buf != NULL ? len : 0;
	p.sp = spools;
	p.nsp = spools != NULL ? nspools : 0;
	p.client = 1;
	p.nlit = &c->nlit;
	p.litover = &c->lit_overflow;
	p.lit = c->lit;
	p.err = c->err;
	if (p.nsp > INT_MAX)
		return fail(&p, "too many spool entries");

	n = RUN(&p, is_tag_char);
	if (n == 0)
		return at_end(&p) ? fail(&p, "empty line")
		                  : unexpected(&p, "tag");
	if (n == 4 && ci_eq(buf, 4, "DONE") && at_end(&p)) {
		c->kind = IMAP_CMD_DONE;
		c->name = span(0, 4);
		c->tag.off = 0;
		return spools_done(&p);
	}
	c->tag = span(0, n);
	if (expect_sp(&p) == -1)
		return -1;
	w = p.pos;
	n = RUN(&p, is_atom_char);
	if (n == 0)
		return unexpected(&p, "command name");
	c->name = span(w, p.pos);
	d = cmd_lookup(buf + w, n);
	if (d != NULL && d->kind == IMAP_CMD_DONE)
		d = NULL; /* "tag DONE" is no IDLE terminator */
	c->kind = d != NULL ? d->kind : IMAP_CMD_OTHER;
	if (c->kind == IMAP_CMD_UID) {
		c->uid = 1;
		if (expect_sp(&p) == -1)
			return -1;
		w = p.pos;
		n = RUN(&p, is_atom_char);
		if (n == 0)
			return unexpected(&p, "UID command");
		c->subname = span(w, p.pos);
		d = cmd_lookup(buf + w, n);
		if (d != NULL && !d->uid)
			return fail(&p, "UID %.*s is not a UID command", (int)n,
			    (const char *)buf + w);
		c->kind = d != NULL ? d->kind : IMAP_CMD_UID;
	}
	if (at_end(&p)) {
		c->args.off = p.pos;
		if (d != NULL && d->args == A_OWN &&
		    !(c->kind == IMAP_CMD_EXPUNGE && !c->uid))
			return unexpected(&p, "arguments");
		if (d == NULL && c->uid)
			return unexpected(&p, "arguments");
		return spools_done(&p);
	}
	if (d != NULL &&
	    (d->args == A_NONE || (c->kind == IMAP_CMD_EXPUNGE && !c->uid)))
		return unexpected(&p, "end of line");
	if (expect_sp(&p) == -1)
		return -1;
	c->args.off = p.pos;
	if (d == NULL) {
		if (skip_rest(&p, IMAP_MAX_ITEMS, NULL) == -1)
			return -1;
	} else if (cmd_args(&p, c) == -1)
		return -1;
	if (expect_end(&p) == -1)
		return -1;
	/* args ends before a trailing SP that skip_rest() tolerated, which
	 * is never part of a literal */
	c->args.len = p.pos - c->args.off;
	while (c->args.len > 0 && c->args.off + c->args.len > p.lit_end &&
	       buf[c->args.off + c->args.len - 1] == ' ')
		c->args.len--;
	return spools_done(&p);
}

/* ------------------------------------------------------------------ */
/* Responses */

static const struct {
	const char *name;
	enum imap_code_kind kind;
} code_defs[] = {
    {"ALERT", IMAP_CODE_ALERT},
    {"BADCHARSET", IMAP_CODE_BADCHARSET},
    {"CAPABILITY", IMAP_CODE_CAPABILITY},
    {"PARSE", IMAP_CODE_PARSE},
    {"PERMANENTFLAGS", IMAP_CODE_PERMANENTFLAGS},
    {"READ-ONLY", IMAP_CODE_READ_ONLY},
    {"READ-WRITE", IMAP_CODE_READ_WRITE},
    {"TRYCREATE", IMAP_CODE_TRYCREATE},
    {"UIDNEXT", IMAP_CODE_UIDNEXT},
    {"UIDVALIDITY", IMAP_CODE_UIDVALIDITY},
    {"UNSEEN", IMAP_CODE_UNSEEN},
    {"APPENDUID", IMAP_CODE_APPENDUID},
    {"COPYUID", IMAP_CODE_COPYUID},
    {"UIDNOTSTICKY", IMAP_CODE_UIDNOTSTICKY},
    {"HIGHESTMODSEQ", IMAP_CODE_HIGHESTMODSEQ},
    {"NOMODSEQ", IMAP_CODE_NOMODSEQ},
    {"MODIFIED", IMAP_CODE_MODIFIED},
    {"CLOSED", IMAP_CODE_CLOSED},
    {"TOOBIG", IMAP_CODE_TOOBIG},
    {"REFERRAL", IMAP_CODE_REFERRAL},
    {"COMPRESSIONACTIVE", IMAP_CODE_COMPRESSIONACTIVE},
    {"OVERQUOTA", IMAP_CODE_OVERQUOTA},
    {"LIMIT", IMAP_CODE_LIMIT},
};

/* Capability atoms up to the end of the line or "]". */
static int
cap_atoms(struct ps *p, struct imap_resp *r)
{
	size_t n, first = p->pos, last = p->pos;

	r->ncap = 0;
	for (;;) {
		n = RUN(p, is_atom_char);
		if (n == 0)
			return unexpected(p, "capability");
		if (r->ncap >= IMAP_MAX_CAPS)
			return fail(p,
			    "too many capabilities (max %d) at offset %zu",
			    IMAP_MAX_CAPS, p->pos - n);
		r->cap[r->ncap++] = span(p->pos - n, p->pos);
		last = p->pos;
		if (peek(p) != ' ')
			break;
		p->pos++;
		/* tolerate a trailing SP before the line end */
		if (at_end(p))
			break;
	}
	r->caps = span(first, last);
	return 0;
}

/* The first CR, LF or NUL from the cursor (TEXT-CHAR ends there). */
static size_t
text_end(const struct ps *p)
{
	const uint8_t *b = p->b;
	size_t i = p->pos, l = p->len;

	while (i < l && b[i] != '\r' && b[i] != '\n' && b[i] != '\0')
		i++;
	return i;
}

/* b[from..to) ends with "{" 1*DIGIT ["+"] "}". */
static int
ends_with_marker(const uint8_t *b, size_t from, size_t to)
{
	size_t i = to, nd = 0;

	if (i == from || b[--i] != '}')
		return 0;
	if (i > from && b[i - 1] == '+')
		i--;
	while (i > from && is_digit(b[i - 1])) {
		i--;
		nd++;
	}
	return nd > 0 && i > from && b[i - 1] == '{';
}

/* "[" resp-text-code "]" */
static int
resp_code(struct ps *p, struct imap_resp *r)
{
	struct imap_code *k = &r->code;
	size_t start = p->pos, n, i;
	int c;

	p->pos++;
	k->name.off = p->pos;
	n = RUN(p, is_atom_char);
	if (n == 0)
		return unexpected(p, "response code");
	k->name.len = n;
	k->kind = IMAP_CODE_OTHER;
	for (i = 0; i < sizeof(code_defs) / sizeof(code_defs[0]); i++)
		if (ci_eq(p->b + k->name.off, n, code_defs[i].name)) {
			k->kind = code_defs[i].kind;
			break;
		}
	k->args.off = p->pos;
	if (k->kind == IMAP_CODE_CAPABILITY) {
		if (expect_sp(p) == -1)
			return -1;
		k->args.off = p->pos;
		if (cap_atoms(p, r) == -1)
			return -1;
		k->args.len = p->pos - k->args.off;
	} else if (peek(p) == ' ') {
		p->pos++;
		k->args.off = p->pos;
		while ((c = peek(p)) != -1 && c != ']' && c != '\r' &&
		       c != '\n' && c != '\0')
			p->pos++;
		k->args.len = p->pos - k->args.off;
		/* a single number (UIDNEXT, UIDVALIDITY, UNSEEN, ...) */
		k->has_num =
		    parse_u64(p->b + k->args.off, k->args.len, &k->num) == 0;
	}
	if (expect(p, ']', "']'") == -1)
		return -1;
	k->span = span(start, p->pos);
	return 0;
}

/* resp-text: ["[" resp-text-code "]" [SP]] text, to the line end */
static int
resp_text(struct ps *p, struct imap_resp *r)
{
	if (peek(p) == '[') {
		if (resp_code(p, r) == -1)
			return -1;
		if (at_end(p)) {
			r->text.off = p->pos;
			return 0;
		}
		if (expect_sp(p) == -1)
			return -1;
	}
	r->text.off = p->pos;
	p->pos = text_end(p);
	if (!at_end(p))
		return unexpected(p, "text");
	/*
	 * "{n}" right before the line end is a literal marker to the
	 * framer, whatever the grammar says: fail closed rather than
	 * read it as text.
	 */
	if (p->pos < p->len && ends_with_marker(p->b, r->text.off, p->pos))
		return fail(p,
		    "literal marker at the end of text at offset %zu", p->pos);
	r->text.len = p->pos - r->text.off;
	return 0;
}

/* The value of FETCH item it, by kind. */
static int
item_value(struct ps *p, struct imap_item *it)
{
	size_t start = p->pos;

	str_clear(&it->str);
	switch (it->att.kind) {
	case IMAP_FA_UID:
		if (number(p, UINT32_MAX, &it->num, "UID") == -1)
			return -1;
		if (it->num == 0)
			return fail(p, "UID is zero at offset %zu", start);
		it->has_num = 1;
		break;
	case IMAP_FA_RFC822_SIZE:
	case IMAP_FA_BINARY_SIZE:
		if (number(p, UINT64_MAX, &it->num, "size") == -1)
			return -1;
		it->has_num = 1;
		break;
	case IMAP_FA_MODSEQ:
		if (expect(p, '(', "'('") == -1 ||
		    number(p, UINT64_MAX, &it->num, "mod-sequence") == -1 ||
		    expect(p, ')', "')'") == -1)
			return -1;
		it->has_num = 1;
		break;
	case IMAP_FA_FLAGS:
	case IMAP_FA_ENVELOPE:
	case IMAP_FA_BODY:
	case IMAP_FA_BODYSTRUCTURE:
		if (skip_list(p, IMAP_MAX_ITEMS, NULL) == -1)
			return -1;
		break;
	case IMAP_FA_BODY_SECTION:
	case IMAP_FA_RFC822:
	case IMAP_FA_RFC822_HEADER:
	case IMAP_FA_RFC822_TEXT:
	case IMAP_FA_PREVIEW:
	case IMAP_FA_INTERNALDATE:
	case IMAP_FA_SAVEDATE:
		if (string(p, &it->str, S_NSTRING, "nstring") == -1)
			return -1;
		break;
	case IMAP_FA_BINARY:
		if (string(p, &it->str, S_NSTRING | S_LIT8, "nstring") == -1)
			return -1;
		break;
	default:
		if (skip_value(p, IMAP_MAX_ITEMS, NULL) == -1)
			return -1;
		break;
	}
	it->val = span(start, p->pos);
	return 0;
}

/* "(" msg-att *(SP msg-att) ")" */
static int
fetch_resp(struct ps *p, struct imap_resp *r)
{
	struct imap_item *it;
	size_t start = p->pos, sp0;

	if (expect(p, '(', "'('") == -1)
		return -1;
	for (;;) {
		if (r->fetch.nitem >= IMAP_MAX_FETCH)
			return fail(p,
			    "too many FETCH items (max %d) at offset %zu",
			    IMAP_MAX_FETCH, p->pos);
		it = &r->fetch.item[r->fetch.nitem];
		it->has_num = 0;
		it->num = 0;
		if (fetch_att(p, &it->att, 1) == -1 || expect_sp(p) == -1)
			return -1;
		/* spools of the value only (a HEADER.FIELDS list in the
		 * name could hold a literal too) */
		sp0 = p->spnext;
		if (item_value(p, it) == -1)
			return -1;
		it->item = span(it->att.name.off, p->pos);
		it->spool_first = (int)sp0;
		it->nspool = (unsigned)(p->spnext - sp0);
		r->fetch.nitem++;
		if (peek(p) == ')')
			break;
		if (expect_sp(p) == -1)
			return -1;
		/* tolerated: "(UID 1 )" */
		if (peek(p) == ')')
			break;
	}
	p->pos++;
	r->fetch.list = span(start, p->pos);
	return expect_end(p);
}

static const struct {
	const char *name;
	enum imap_resp_kind kind;
} data_defs[] = {
    {"FLAGS", IMAP_RESP_FLAGS},
    {"LIST", IMAP_RESP_LIST},
    {"LSUB", IMAP_RESP_LSUB},
    {"STATUS", IMAP_RESP_STATUS},
    {"SEARCH", IMAP_RESP_SEARCH},
    {"ESEARCH", IMAP_RESP_ESEARCH},
    {"ENABLED", IMAP_RESP_ENABLED},
    {"NAMESPACE", IMAP_RESP_NAMESPACE},
    {"VANISHED", IMAP_RESP_VANISHED},
};

static enum imap_status
status_word(const uint8_t *b, size_t n)
{
	if (ci_eq(b, n, "OK"))
		return IMAP_ST_OK;
	if (ci_eq(b, n, "NO"))
		return IMAP_ST_NO;
	if (ci_eq(b, n, "BAD"))
		return IMAP_ST_BAD;
	if (ci_eq(b, n, "BYE"))
		return IMAP_ST_BYE;
	if (ci_eq(b, n, "PREAUTH"))
		return IMAP_ST_PREAUTH;
	return IMAP_ST_NONE;
}

/* SP resp-text, or nothing (tolerated: "a OK" with no text) */
static int
cond_text(struct ps *p, struct imap_resp *r)
{
	if (at_end(p)) {
		r->text.off = p->pos;
		return 0;
	}
	if (expect_sp(p) == -1)
		return -1;
	r->args.off = p->pos;
	if (resp_text(p, r) == -1)
		return -1;
	r->args.len = p->pos - r->args.off;
	return 0;
}

/* Untagged: "* " already consumed. */
static int
untagged(struct ps *p, struct imap_resp *r)
{
	const uint8_t *b = p->b;
	uint64_t v;
	size_t w, n, i;

	if (is_digit(peek(p))) {
		if (number(p, UINT32_MAX, &v, "message number") == -1 ||
		    expect_sp(p) == -1)
			return -1;
		r->num = (uint32_t)v;
		r->has_num = 1;
		w = p->pos;
		n = RUN(p, is_atom_char);
		if (n == 0)
			return unexpected(p, "data name");
		r->name = span(w, p->pos);
		if (ci_eq(b + w, n, "EXISTS"))
			r->kind = IMAP_RESP_EXISTS;
		else if (ci_eq(b + w, n, "RECENT"))
			r->kind = IMAP_RESP_RECENT;
		else if (ci_eq(b + w, n, "EXPUNGE"))
			r->kind = IMAP_RESP_EXPUNGE;
		else if (ci_eq(b + w, n, "FETCH"))
			r->kind = IMAP_RESP_FETCH;
		else
			r->kind = IMAP_RESP_OTHER;
		if ((r->kind == IMAP_RESP_EXPUNGE ||
		        r->kind == IMAP_RESP_FETCH) &&
		    v == 0)
			return fail(p, "message number is zero at offset 2");
		if (r->kind == IMAP_RESP_FETCH) {
			if (expect_sp(p) == -1)
				return -1;
			r->args.off = p->pos;
			if (fetch_resp(p, r) == -1)
				return -1;
			r->args.len = p->pos - r->args.off;
			return 0;
		}
		if (r->kind != IMAP_RESP_OTHER)
			return expect_end(p);
		goto raw;
	}
	w = p->pos;
	n = RUN(p, is_atom_char);
	if (n == 0)
		return unexpected(p, "response name");
	r->name = span(w, p->pos);
	r->status = status_word(b + w, n);
	if (r->status != IMAP_ST_NONE) {
		r->kind = IMAP_RESP_COND;
		return cond_text(p, r);
	}
	if (ci_eq(b + w, n, "CAPABILITY")) {
		r->kind = IMAP_RESP_CAPABILITY;
		if (expect_sp(p) == -1)
			return -1;
		r->args.off = p->pos;
		if (cap_atoms(p, r) == -1)
			return -1;
		r->args.len = r->caps.off + r->caps.len - r->args.off;
		return expect_end(p);
	}
	if (ci_eq(b + w, n, "ID")) {
		r->kind = IMAP_RESP_ID;
		if (expect_sp(p) == -1)
			return -1;
		r->args.off = p->pos;
		if (id_list(p, &r->id) == -1)
			return -1;
		r->args.len = p->pos - r->args.off;
		return expect_end(p);
	}
	r->kind = IMAP_RESP_OTHER;
	for (i = 0; i < sizeof(data_defs) / sizeof(data_defs[0]); i++)
		if (ci_eq(b + w, n, data_defs[i].name)) {
			r->kind = data_defs[i].kind;
			break;
		}
raw:
	r->args.off = p->pos;
	if (at_end(p))
		return 0;
	if (expect_sp(p) == -1)
		return -1;
	r->args.off = p->pos;
	return skip_rest(p, SIZE_MAX, &r->args);
}

int
imap_parse_response(const uint8_t *buf, size_t len,
    const struct imap_spool *spools, size_t nspools, struct imap_resp *r)
{
	struct ps p;
	size_t n;
	int rc;

	memset(r, 0, offsetof(struct imap_resp, cap));
	memset(&r->id, 0, offsetof(struct imap_id, pair));
	memset(&r->fetch.list, 0, sizeof(r->fetch.list));
	r->fetch.nitem = 0;
	r->nlit = 0;
	r->lit_overflow = 0;
	r->err[0] = '\0';
	memset(&p, 0, sizeof(p));
	p.b = buf;
	p.len = buf != NULL ? len : 0;
	p.sp = spools;
	p.nsp = spools != NULL ? nspools : 0;
	p.client = 0;
	p.nlit = &r->nlit;
	p.litover = &r->lit_overflow;
	p.lit = r->lit;
	p.err = r->err;
	if (p.nsp > INT_MAX)
		return fail(&p, "too many spool entries");

	if (peek(&p) == '+') {
		r->kind = IMAP_RESP_CONT;
		r->name = span(0, 1);
		p.pos = 1;
		rc = cond_text(&p, r);
	} else if (peek(&p) == '*') {
		p.pos = 1;
		if (expect_sp(&p) == -1)
			return -1;
		rc = untagged(&p, r);
	} else {
		n = RUN(&p, is_tag_char);
		if (n == 0)
			return at_end(&p) ? fail(&p, "empty line")
			                  : unexpected(&p, "tag");
		r->tag = span(0, n);
		r->kind = IMAP_RESP_TAGGED;
		if (expect_sp(&p) == -1)
			return -1;
		n = RUN(&p, is_atom_char);
		r->name = span(p.pos - n, p.pos);
		r->status = status_word(buf + r->name.off, n);
		if (r->status != IMAP_ST_OK && r->status != IMAP_ST_NO &&
		    r->status != IMAP_ST_BAD) {
			p.pos -= n;
			return unexpected(&p, "OK, NO or BAD");
		}
		rc = cond_text(&p, r);
	}
	if (rc == -1 || expect_end(&p) == -1)
		return -1;
	return spools_done(&p);
}

/* ------------------------------------------------------------------ */
/* Helpers */

int
imap_item_cut(const struct imap_resp *r, unsigned i, struct imap_span *cut)
{
	const struct imap_span *a;

	if (r->kind != IMAP_RESP_FETCH || i >= r->fetch.nitem)
		return -1;
	a = &r->fetch.item[i].item;
	if (i > 0) {
		const struct imap_span *prev = &r->fetch.item[i - 1].item;

		*cut = span(prev->off + prev->len, a->off + a->len);
	} else if (r->fetch.nitem > 1)
		*cut = span(a->off, r->fetch.item[1].item.off);
	else
		*cut = *a;
	return 0;
}

/* Next content byte of an inline string; quoted escapes undone. */
static int
str_next(const uint8_t *buf, const struct imap_str *s, uint64_t *i)
{
	int c;

	if (*i >= s->len)
		return -1;
	c = buf[s->data + *i];
	(*i)++;
	if (c == '\\' && s->kind == IMAP_STR_QUOTED && *i < s->len) {
		c = buf[s->data + *i];
		(*i)++;
	}
	return c;
}

static int
str_inline(const struct imap_str *s)
{
	return (s->kind == IMAP_STR_ATOM || s->kind == IMAP_STR_QUOTED ||
	           s->kind == IMAP_STR_LITERAL) &&
	       s->spool < 0;
}

int
imap_str_eq(const uint8_t *buf, const struct imap_str *s, const char *t)
{
	uint64_t i = 0;
	int c;

	if (!str_inline(s))
		return 0;
	while ((c = str_next(buf, s, &i)) != -1) {
		if (*t == '\0' || lc(c) != lc((uint8_t)*t))
			return 0;
		t++;
	}
	return *t == '\0';
}

ssize_t
imap_str_copy(
    const uint8_t *buf, const struct imap_str *s, char *out, size_t outlen)
{
	uint64_t i = 0;
	size_t n = 0;
	int c;

	if (!str_inline(s) || outlen == 0)
		return -1;
	while ((c = str_next(buf, s, &i)) != -1) {
		if (n + 1 >= outlen)
			return -1;
		out[n++] = (char)c;
	}
	out[n] = '\0';
	return (ssize_t)n;
}

/* ------------------------------------------------------------------ */
/* Tokens of a span */

void
imap_lex_init(struct imap_lexer *lx, const uint8_t *buf, size_t len,
    const struct imap_spool *sp, size_t nsp, struct imap_span w)
{
	memset(lx, 0, sizeof(*lx));
	lx->buf = buf;
	lx->pos = w.off < len ? w.off : len;
	lx->end = w.len <= len - lx->pos ? lx->pos + w.len : len;
	lx->sp = sp;
	lx->nsp = sp != NULL ? nsp : 0;
	/* spooled literals before the span belong to earlier tokens */
	while (lx->spnext < lx->nsp && lx->sp[lx->spnext].at <= lx->pos)
		lx->spnext++;
}

int
imap_lex_next(struct imap_lexer *lx, struct imap_tok *t)
{
	unsigned nlit = IMAP_MAX_LITS; /* record no literals */
	int over = 0, c, rc = 0;
	size_t start;
	struct ps p;

	memset(&p, 0, sizeof(p));
	p.b = lx->buf;
	p.len = lx->end; /* a token must end within the span */
	p.pos = lx->pos;
	p.sp = lx->sp;
	p.nsp = lx->nsp;
	p.spnext = lx->spnext;
	p.client = 1;
	p.nlit = &nlit;
	p.litover = &over;
	p.err = lx->err;
	while (p.pos < p.len && p.b[p.pos] == ' ')
		p.pos++;
	lx->pos = start = p.pos;
	if (p.pos >= p.len)
		return 0;
	str_clear(&t->str);
	c = p.b[p.pos];
	if (c == '(' || c == ')') {
		t->kind = c == '(' ? IMAP_TOK_LPAREN : IMAP_TOK_RPAREN;
		p.pos++;
	} else if (c == '"' || c == '{' || (c == '~' && peek2(&p) == '{')) {
		t->kind = IMAP_TOK_STRING;
		rc = c == '"' ? quoted(&p, &t->str) : literal(&p, &t->str, 1);
	} else if (RUN(&p, is_word_char) > 0) {
		t->kind = IMAP_TOK_ATOM;
		t->str.kind = IMAP_STR_ATOM;
		if (ci_eq(p.b + start, p.pos - start, "NIL")) {
			t->kind = IMAP_TOK_NIL;
			t->str.kind = IMAP_STR_NIL;
		}
		t->str.tok = span(start, p.pos);
		t->str.data = start;
		t->str.len = p.pos - start;
	} else
		rc = unexpected(&p, "a token");
	if (rc == -1)
		return -1;
	t->span = span(start, p.pos);
	lx->pos = p.pos;
	lx->spnext = p.spnext;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Capability allow-list */

/*
 * Kept (case-insensitive; "*" ends a prefix match):
 *
 *   IMAP4rev1 IMAP4rev2 LITERAL+ LITERAL- SASL-IR LOGIN-REFERRALS ID ENABLE
 *   IDLE NAMESPACE UIDPLUS UNSELECT CHILDREN MOVE SPECIAL-USE
 *   CREATE-SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH ESORT SEARCHRES
 *   SORT SORT=DISPLAY THREAD=* CONDSTORE QRESYNC QUOTA QUOTA=* QUOTASET ACL
 *   RIGHTS=* BINARY WITHIN CONTEXT=SEARCH CONTEXT=SORT I18NLEVEL=*
 *   MULTIAPPEND LOGINDISABLED METADATA METADATA-SERVER SAVEDATE OBJECTID
 *   STATUS=SIZE UTF8=ACCEPT
 *   AUTH=<mech>            unless <mech> ends in -PLUS (channel binding:
 *                          the gateway terminates TLS, the binding
 *                          would never match)
 *   APPENDLIMIT            (per-mailbox limits) as is
 *   APPENDLIMIT=<n>        as APPENDLIMIT=min(n, max_size)
 *   STARTTLS               only with IMAP_CAPF_STARTTLS
 *   PREVIEW                only with IMAP_CAPF_PREVIEW
 *
 * Everything else is dropped, in particular:
 *
 *   COMPRESS=*             the relay inspects plaintext
 *   CATENATE URLAUTH URLAUTH=* URL-PARTIAL
 *                          uploads and fetches built from server-side
 *                          URLs the gateway cannot scan
 *   REPLACE                an upload path besides APPEND (RFC 8508)
 *   NOTIFY                 makes the server send FETCH data (any body
 *                          section) that no FETCH command asked for
 *   PREVIEW                text of the message as the server has it,
 *                          not as the gateway rewrote it
 *   UIDONLY UTF8=ONLY      change the syntax of responses / commands
 *   X-* and any unknown atom (an allow-list)
 *
 * With IMAP_CAPF_PRETLS only IMAP4rev1, IMAP4rev2, LOGINDISABLED and
 * STARTTLS (if allowed) pass: nothing else is advertised before TLS.
 */
static const char *const cap_allow[] = {
    "IMAP4rev1",
    "IMAP4rev2",
    "LITERAL+",
    "LITERAL-",
    "SASL-IR",
    "LOGIN-REFERRALS",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "UNSELECT",
    "CHILDREN",
    "MOVE",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "ESEARCH",
    "ESORT",
    "SEARCHRES",
    "SORT",
    "SORT=DISPLAY",
    "THREAD=*",
    "CONDSTORE",
    "QRESYNC",
    "QUOTA",
    "QUOTA=*",
    "QUOTASET",
    "ACL",
    "RIGHTS=*",
    "BINARY",
    "WITHIN",
    "CONTEXT=SEARCH",
    "CONTEXT=SORT",
    "I18NLEVEL=*",
    "MULTIAPPEND",
    "LOGINDISABLED",
    "METADATA",
    "METADATA-SERVER",
    "SAVEDATE",
    "OBJECTID",
    "STATUS=SIZE",
    "UTF8=ACCEPT",
    "APPENDLIMIT",
};

static int
cap_match(const char *a, size_t n, const char *pat)
{
	size_t pl = strlen(pat);

	if (pl > 0 && pat[pl - 1] == '*')
		return n > pl - 1 && strncasecmp(a, pat, pl - 1) == 0;
	return ci_eq((const uint8_t *)a, n, pat);
}

int
imap_capability_allowed(const char *a, size_t n, const struct imap_capf *pol)
{
	unsigned flags = pol != NULL ? pol->flags : 0;
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++)
		if (!is_atom_char((uint8_t)a[i]))
			return 0;
	if (ci_eq((const uint8_t *)a, n, "STARTTLS"))
		return (flags & IMAP_CAPF_STARTTLS) != 0;
	if (flags & IMAP_CAPF_PRETLS)
		return ci_eq((const uint8_t *)a, n, "IMAP4rev1") ||
		       ci_eq((const uint8_t *)a, n, "IMAP4rev2") ||
		       ci_eq((const uint8_t *)a, n, "LOGINDISABLED");
	if (ci_eq((const uint8_t *)a, n, "PREVIEW"))
		return (flags & IMAP_CAPF_PREVIEW) != 0;
	if (n > 5 && strncasecmp(a, "AUTH=", 5) == 0)
		return !(n >= 5 + 5 && strncasecmp(a + n - 5, "-PLUS", 5) == 0);
	if (n > 12 && strncasecmp(a, "APPENDLIMIT=", 12) == 0) {
		for (i = 12; i < n; i++)
			if (!is_digit((uint8_t)a[i]))
				return 0;
		return 1;
	}
	for (i = 0; i < sizeof(cap_allow) / sizeof(cap_allow[0]); i++)
		if (cap_match(a, n, cap_allow[i]))
			return 1;
	return 0;
}

/* Append n bytes (and a SP before all but the first word). */
static int
cap_out(char *out, size_t outlen, size_t *o, const char *s, size_t n)
{
	size_t need = n + (*o > 0) + 1;

	if (need > outlen - *o)
		return -1;
	if (*o > 0)
		out[(*o)++] = ' ';
	memcpy(out + *o, s, n);
	*o += n;
	out[*o] = '\0';
	return 0;
}

ssize_t
imap_capability_filter(const char *in, size_t len, char *out, size_t outlen,
    const struct imap_capf *pol)
{
	char num[40];
	size_t i = 0, o = 0, s, n, k;
	uint64_t v, max = pol != NULL ? pol->max_size : 0;
	unsigned flags = pol != NULL ? pol->flags : 0;
	int seen_limit = 0, big;

	if (outlen == 0)
		return -1;
	out[0] = '\0';
	while (i < len) {
		while (i < len && (uint8_t)in[i] <= 0x20)
			i++;
		s = i;
		while (i < len && (uint8_t)in[i] > 0x20)
			i++;
		n = i - s;
		if (n == 0 || !imap_capability_allowed(in + s, n, pol))
			continue;
		if (n >= 11 && strncasecmp(in + s, "APPENDLIMIT", 11) == 0)
			seen_limit = 1;
		if (n > 12 && strncasecmp(in + s, "APPENDLIMIT=", 12) == 0 &&
		    max > 0) {
			v = 0;
			big = 0;
			for (k = s + 12; k < s + n; k++) {
				if (v > (UINT64_MAX - 9) / 10)
					big = 1;
				else
					v = v * 10 + (in[k] - '0');
			}
			if (big || v > max) {
				int w = snprintf(num, sizeof(num),
				    "%.12s%" PRIu64, in + s, max);

				if (cap_out(out, outlen, &o, num, (size_t)w) ==
				    -1)
					return -1;
				continue;
			}
		}
		if (cap_out(out, outlen, &o, in + s, n) == -1)
			return -1;
	}
	if (!seen_limit && max > 0 && (flags & IMAP_CAPF_ADD_APPENDLIMIT) &&
	    !(flags & IMAP_CAPF_PRETLS)) {
		int w = snprintf(num, sizeof(num), "APPENDLIMIT=%" PRIu64, max);

		if (cap_out(out, outlen, &o, num, (size_t)w) == -1)
			return -1;
	}
	return (ssize_t)o;
}
