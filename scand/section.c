/*
 * FETCH sections of a message: what BODY[section] (RFC 3501 6.4.5) and
 * BINARY[section] (RFC 3516) return, computed the way Dovecot 2.3 does
 * it, quirks included, so that netd can answer for a message scand has
 * rewritten exactly as the server would answer if it held that message.
 * The rules come from Dovecot's imap-msgpart.c, index-mail-binary.c,
 * istream-header-filter.c and its base64 and quoted-printable decoders,
 * and were checked against a running Dovecot 2.3.19:
 *
 * Section numbers (imap_msgpart_find).  Each number picks a child of a
 * multipart (0 picks the first); of anything else only 1 is allowed,
 * and it is the part itself; a message/rfc822 part followed by more
 * numbers stands for the message inside it.  So "1.1" of a text part in
 * a multipart is that part, and "1.1.1" is nothing.  HEADER, TEXT and
 * HEADER.FIELDS after a number apply only to message/rfc822 parts, to
 * the message inside; MIME is the header of the numbered part itself.
 * A part that does not exist is an empty string.  The numbers wrap as
 * a 32-bit unsigned int does.
 *
 * Header and body as Dovecot counts them (message_part sizes, see
 * hdr_end in scand.h): a header ends after its empty line; where a
 * boundary cuts a header or follows its empty line right away, before
 * the line end that precedes the boundary, and the body is empty.
 *
 * HEADER.FIELDS (.NOT) (istream-header-filter): the header is read
 * line by line from the part's first header line to an empty line or
 * the end of the message; boundaries do not stop it.  A line that
 * starts with white space continues the field before it (not the first
 * line); a line without a colon is a field with an empty name.  Names
 * compare without case.  The empty line ends the result if the header
 * had one; the top-level HEADER.FIELDS (read from the mail cache) always
 * ends with it.
 *
 * BINARY of the message, of a part, or of TEXT (add_binary_part):
 * every part below is visited; its last Content-Transfer-Encoding field
 * names its encoding (7bit, 8bit, binary, base64, quoted-printable;
 * anything else, empty included, cannot be decoded: NO [UNKNOWN-CTE]).
 * Bodies in base64 or quoted-printable are decoded, and where a header
 * is part of the result, their encoding field is replaced by
 * "Content-Transfer-Encoding: binary" at the end of the header.  The
 * rest is copied.  If nothing was decoded, Dovecot sends the part as it
 * is, for as many bytes as the conversion produced.  Decoded content, or
 * content with NUL, goes as literal8.  Broken encoded data is NO
 * [PARSE].  Where Dovecot drops the connection instead (a truncated
 * base64 or quoted-printable body; nothing decoded, but a rewritten
 * header made the result longer than the part), it is NO [PARSE] here
 * too.  Other BINARY sections (HEADER, MIME, HEADER.FIELDS) are the
 * same as BODY.
 *
 * BODY content has NUL as 0x80.  The message must be in the form a
 * server serves, CRLF line ends (sect_crlf makes it so).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>

#include "scand.h"

/* Dovecot's message_cte. */
enum sect_cte { CTE_78BIT = 0, CTE_BINARY, CTE_QP, CTE_BASE64, CTE_UNKNOWN };

/*
 * Line ends.
 */

int
sect_crlf(const void *data, size_t len, struct buf *out)
{
	const uint8_t *d = data;
	size_t i, from = 0;

	for (i = 0; i < len; i++) {
		if (d[i] == '\r' && i + 1 < len && d[i + 1] == '\n')
			i++;
		else if (d[i] == '\r' || d[i] == '\n')
			break;
	}
	if (i == len)
		return 0;
	buf_reset(out);
	for (; i < len; i++) {
		if (d[i] == '\r' && i + 1 < len && d[i + 1] == '\n') {
			i++;
			continue;
		}
		if (d[i] != '\r' && d[i] != '\n')
			continue;
		/* a bare CR or LF: the bytes before it, then CRLF */
		if (buf_add(out, d + from, i - from) == -1 ||
		    buf_add(out, "\r\n", 2) == -1)
			return -1;
		from = i + 1;
	}
	if (buf_add(out, d + from, len - from) == -1)
		return -1;
	return 1;
}

static size_t
sect_line_end(const struct mime_msg *m, size_t pos)
{
	const uint8_t *nl;

	nl = memchr(m->data + pos, '\n', m->len - pos);
	return nl == NULL ? m->len : (size_t)(nl - m->data) + 1;
}

static int
sect_blank(const struct mime_msg *m, size_t pos, size_t end)
{
	return (end - pos == 1 && m->data[pos] == '\n') ||
	       (end - pos == 2 && m->data[pos] == '\r' &&
	           m->data[pos + 1] == '\n');
}

/* Where the body ends, as Dovecot counts it. */
static size_t
sect_body_end(const struct mime_part *p)
{
	return p->hdr_end < p->body_off ? p->hdr_end : p->body_end;
}

/*
 * The spec.
 */

static int
sect_add_field(struct sect *s, const struct buf *name)
{
	char **v, *f;

	if ((f = malloc(name->len + 1)) == NULL)
		return -1;
	if (name->len > 0)
		memcpy(f, name->data, name->len);
	f[name->len] = '\0';
	v = reallocarray(s->fields, s->nfields + 1, sizeof(*v));
	if (v == NULL) {
		free(f);
		return -1;
	}
	s->fields = v;
	s->fields[s->nfields++] = f;
	return 0;
}

/* An astring at *pp (atom, quoted string, literal) into o.  1 if not
 * valid. */
static int
sect_astring(const char **pp, struct buf *o)
{
	const char *p = *pp;
	unsigned long n;
	char *e;

	buf_reset(o);
	if (*p == '"') {
		for (p++; *p != '"'; p++) {
			if (*p == '\\')
				p++;
			if (*p == '\0' || *p == '\r' || *p == '\n')
				return 1;
			if (buf_add_u8(o, (uint8_t)*p) == -1)
				return -1;
		}
		*pp = p + 1;
		return 0;
	}
	if (*p == '{') {
		if (p[1] < '0' || p[1] > '9')
			return 1;
		n = strtoul(p + 1, &e, 10);
		if (*e == '+')
			e++;
		if (e[0] != '}' || e[1] != '\r' || e[2] != '\n')
			return 1;
		e += 3;
		if (strnlen(e, n) < n)
			return 1;
		if (buf_add(o, e, n) == -1)
			return -1;
		*pp = e + n;
		return 0;
	}
	/* An atom: no specials, no controls, no 8-bit data. */
	for (; *p != '\0' && *p != ' ' && *p != ')'; p++) {
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f ||
		    strchr("(){\"\\", *p) != NULL)
			return 1;
		if (buf_add_u8(o, (uint8_t)*p) == -1)
			return -1;
	}
	if (p == *pp)
		return 1;
	*pp = p;
	return 0;
}

/* " (name name ...)" after HEADER.FIELDS[.NOT].  1 if not valid. */
static int
sect_parse_list(const char *p, struct sect *s)
{
	struct buf name;
	int r = 1;

	if (*p != ' ')
		return 1;
	while (*p == ' ')
		p++;
	if (*p++ != '(')
		return 1;
	buf_init(&name, 0);
	for (;;) {
		while (*p == ' ')
			p++;
		if (*p == ')')
			break;
		if ((r = sect_astring(&p, &name)) != 0)
			goto out;
		if ((r = sect_add_field(s, &name)) != 0)
			goto out;
		if (*p != ' ' && *p != ')') {
			r = 1;
			goto out;
		}
	}
	for (p++; *p == ' '; p++)
		;
	r = *p != '\0' || s->nfields == 0;
out:
	buf_free(&name);
	return r;
}

/* The part a section number names, or NULL. */
static const struct mime_part *
sect_find(const struct mime_msg *m, const char *num, size_t len)
{
	const struct mime_part *part = m->root;
	size_t i = 0;
	uint32_t n;
	int more;

	while (i < len && part != NULL) {
		for (n = 0; i < len && num[i] != '.'; i++)
			n = n * 10 + (uint32_t)(num[i] - '0');
		if (i < len)
			i++;
		more = i < len;
		if (part->kind == MIME_MULTIPART) {
			for (part = part->children; n > 1 && part != NULL; n--)
				part = part->next;
		} else if (n != 1 || (more && part->kind != MIME_MESSAGE))
			part = NULL;
		if (part != NULL && part->kind == MIME_MESSAGE && more)
			part = part->children;
	}
	return part;
}

int
sect_parse(
    const struct mime_msg *m, int binary, const char *spec, struct sect *s)
{
	const struct mime_part *part;
	const char *rest;
	size_t i, nlen;
	int next_digit = 1, r = 0;

	memset(s, 0, sizeof(*s));
	s->binary = binary;
	s->status = SCAN_SECT_BAD;
	for (i = 0; spec[i] != '\0'; i++) {
		if (spec[i] >= '0' && spec[i] <= '9')
			next_digit = 0;
		else if (!next_digit && spec[i] == '.')
			next_digit = 1;
		else
			break;
	}
	if (i > 0 && spec[i - 1] != '.' && spec[i] != '\0')
		return 0; /* "1X" */
	if (i > 0 && spec[i - 1] == '.' && spec[i] == '\0')
		return 0; /* "1." */
	nlen = i > 0 && spec[i] != '\0' ? i - 1 : i;
	rest = spec + i;
	if (*rest == '\0')
		s->type = nlen > 0 ? SECT_MIME_BODY : SECT_FULL;
	else if (strcasecmp(rest, "MIME") == 0 && nlen > 0)
		s->type = SECT_MIME;
	else if (strcasecmp(rest, "TEXT") == 0)
		s->type = SECT_TEXT;
	else if (strcasecmp(rest, "HEADER") == 0)
		s->type = SECT_HEADER;
	else if (strncasecmp(rest, "HEADER.FIELDS.NOT ", 18) == 0) {
		s->type = SECT_FIELDS_NOT;
		r = sect_parse_list(rest + 17, s);
	} else if (strncasecmp(rest, "HEADER.FIELDS ", 14) == 0) {
		s->type = SECT_FIELDS;
		r = sect_parse_list(rest + 13, s);
	} else
		return 0;
	if (r != 0)
		return r == -1 ? -1 : 0;
	s->status = 0;
	s->top = nlen == 0;
	if (s->top) {
		s->part = m->root;
		return 0;
	}
	part = sect_find(m, spec, nlen);
	if (part != NULL && s->type != SECT_MIME_BODY && s->type != SECT_MIME)
		part = part->kind == MIME_MESSAGE ? part->children : NULL;
	if ((s->part = part) == NULL)
		s->status = SCAN_SECT_NONE;
	return 0;
}

void
sect_free(struct sect *s)
{
	size_t i;

	for (i = 0; i < s->nfields; i++)
		free(s->fields[i]);
	free(s->fields);
	s->fields = NULL;
	s->nfields = 0;
}

int
sect_same(const struct sect *a, const struct sect *b)
{
	size_t i;

	if (a->status != b->status)
		return 0;
	if (a->status != 0)
		return 1;
	if (a->binary != b->binary || a->type != b->type ||
	    a->part != b->part || a->top != b->top || a->nfields != b->nfields)
		return 0;
	for (i = 0; i < a->nfields; i++)
		if (strcasecmp(a->fields[i], b->fields[i]) != 0)
			return 0;
	return 1;
}

/*
 * BODY content.
 */

/* Bytes of the message as BODY sends them: NUL as 0x80. */
static int
sect_add_body(struct buf *o, const uint8_t *p, size_t n)
{
	size_t start = o->len, i;

	if (buf_add(o, p, n) == -1)
		return -1;
	for (i = start; i < o->len; i++)
		if (o->data[i] == '\0')
			o->data[i] = 0x80;
	return 0;
}

static int
sect_range(
    const struct mime_msg *m, size_t from, size_t to, struct sect_content *c)
{
	if (to < from)
		to = from;
	c->off = from;
	c->len = to - from;
	if (memchr(m->data + from, '\0', c->len) == NULL) {
		c->ref = 1;
		return 0;
	}
	return sect_add_body(&c->data, m->data + from, c->len);
}

static int
sect_name_is(const char *name, const uint8_t *p, size_t n)
{
	return strlen(name) == n && strncasecmp(name, (const char *)p, n) == 0;
}

/* The name of the field whose first line is [pos, end): up to the
 * colon without the blanks before it, empty if there is no colon. */
static size_t
sect_field_name(const struct mime_msg *m, size_t pos, size_t end)
{
	const uint8_t *colon;
	size_t n;

	colon = memchr(m->data + pos, ':', end - pos);
	if (colon == NULL)
		return 0;
	n = (size_t)(colon - (m->data + pos));
	while (n > 0 &&
	       (m->data[pos + n - 1] == ' ' || m->data[pos + n - 1] == '\t'))
		n--;
	return n;
}

/*
 * The header lines from pos to the empty line or the end, filtered by
 * keep(name): the lines of the fields kept, and 1 in *eoh if the empty
 * line was found (it is not added).
 */
typedef int (*sect_keep_fn)(
    const struct mime_msg *, size_t, size_t, const void *);

static int
sect_filter(const struct mime_msg *m, size_t pos, sect_keep_fn keep,
    const void *arg, int body, struct buf *o, int *eoh)
{
	size_t e, n;
	int first = 1, k = 0, r;

	*eoh = 0;
	for (; pos < m->len; pos = e) {
		e = sect_line_end(m, pos);
		if (sect_blank(m, pos, e)) {
			*eoh = 1;
			break;
		}
		if (first || (m->data[pos] != ' ' && m->data[pos] != '\t')) {
			n = sect_field_name(m, pos, e);
			k = keep(m, pos, n, arg);
		}
		first = 0;
		if (!k)
			continue;
		r = body ? sect_add_body(o, m->data + pos, e - pos)
		         : buf_add(o, m->data + pos, e - pos);
		if (r == -1)
			return -1;
	}
	return 0;
}

static int
sect_keep_listed(
    const struct mime_msg *m, size_t pos, size_t n, const void *arg)
{
	const struct sect *s = arg;
	size_t i;
	int match = 0;

	for (i = 0; i < s->nfields && !match; i++)
		match = sect_name_is(s->fields[i], m->data + pos, n);
	return s->type == SECT_FIELDS ? match : !match;
}

static int
sect_fields(
    const struct mime_msg *m, const struct sect *s, struct sect_content *c)
{
	int eoh;

	if (sect_filter(m, s->part->hdr_off, sect_keep_listed, s, 1, &c->data,
	        &eoh) == -1)
		return -1;
	if (eoh || (s->top && s->type == SECT_FIELDS))
		return buf_add(&c->data, "\r\n", 2);
	return 0;
}

/*
 * BINARY content.
 */

int
sect_qp_decode(const uint8_t *s, size_t n, struct buf *o)
{
	enum { TEXT, EQUALS, SOFTWS, HEX2 } state = TEXT;
	size_t i, ws = o->len; /* after the last byte that is not blank */
	int hi = 0, v;
	uint8_t c;

	for (i = 0; i < n; i++) {
		c = s[i];
		if (c == '\r' && i + 1 < n && s[i + 1] == '\n')
			continue; /* the LF ends the line */
		v = c >= '0' && c <= '9'   ? c - '0'
		    : c >= 'A' && c <= 'F' ? c - 'A' + 10
		    : c >= 'a' && c <= 'f' ? c - 'a' + 10
		                           : -1;
		switch (state) {
		case TEXT:
			if (c == '=')
				state = EQUALS;
			else if (c == '\n') {
				/* a hard line break: blanks before it go */
				o->len = ws;
				if (buf_add(o, "\r\n", 2) == -1)
					return -1;
				ws = o->len;
			} else {
				if (buf_add_u8(o, c) == -1)
					return -1;
				if (c != ' ' && c != '\t')
					ws = o->len;
			}
			break;
		case EQUALS:
		case SOFTWS:
			if (state == EQUALS && v >= 0) {
				hi = v;
				state = HEX2;
			} else if (c == ' ' || c == '\t')
				state = SOFTWS;
			else if (c == '\n') {
				/* a soft line break keeps the blanks */
				ws = o->len;
				state = TEXT;
			} else
				return 1;
			break;
		case HEX2:
			if (v < 0)
				return 1;
			if (buf_add_u8(o, (uint8_t)(hi << 4 | v)) == -1)
				return -1;
			ws = o->len;
			state = TEXT;
			break;
		}
	}
	if (state != TEXT)
		return 1; /* ends inside an escape */
	o->len = ws;
	return 0;
}

int
sect_base64_decode(const uint8_t *s, size_t n, struct buf *o)
{
	static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                            "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i, q = 0, w;
	int pad = 0, done = 0, state = 0;
	guint32 save = 0;
	uint8_t c;

	/* Dovecot's rules first: GMime skips what it does not know. */
	for (i = 0; i < n; i++) {
		c = s[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			if (done || (q < 2 && !pad))
				return 1;
			pad = 1;
		} else if (c == '\0' || strchr(alpha, c) == NULL || pad)
			return 1;
		if (++q == 4) {
			q = 0;
			done = pad;
		}
	}
	if (q != 0)
		return 1; /* truncated */
	if (buf_reserve(o, n / 4 * 3 + 4) == -1)
		return -1;
	w = g_mime_encoding_base64_decode_step(
	    s, n, buf_tail(o), &state, &save);
	buf_commit(o, w);
	return 0;
}

/* Dovecot's message_decoder_parse_cte on a field value. */
static int
sect_parse_cte(const uint8_t *p, const uint8_t *end)
{
	static const struct {
		const char *name;
		int cte;
	} ctes[] = {{"7bit", CTE_78BIT}, {"8bit", CTE_78BIT},
	    {"binary", CTE_BINARY}, {"base64", CTE_BASE64},
	    {"quoted-printable", CTE_QP}};
	const uint8_t *t;
	size_t i;
	int level;

	/* white space and comments */
	for (;;) {
		while (p < end &&
		       (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
			p++;
		if (p == end || *p != '(')
			break;
		for (level = 0; p < end; p++) {
			if (*p == '\\' && p + 1 < end)
				p++;
			else if (*p == '(')
				level++;
			else if (*p == ')' && --level == 0) {
				p++;
				break;
			}
		}
	}
	for (t = p; t<end && * t> ' ' && *t != 0x7f &&
	            strchr("()<>@,;:\\\"/[]?=", *t) == NULL;
	     t++)
		;
	for (i = 0; i < sizeof(ctes) / sizeof(ctes[0]); i++)
		if (sect_name_is(ctes[i].name, p, (size_t)(t - p)))
			return ctes[i].cte;
	return CTE_UNKNOWN;
}

/*
 * The encoding of the part whose header starts at pos, and whether the
 * header has NUL.  Dovecot reads the header as HEADER.FIELDS does (to
 * the empty line, past a boundary that cuts it), MIME or not, and the
 * last Content-Transfer-Encoding field decides.
 */
static int
sect_cte(const struct mime_msg *m, size_t pos, int *nuls)
{
	const uint8_t *d = m->data, *colon = NULL;
	size_t e, end = pos;
	int cte = CTE_78BIT, first = 1;

	for (; pos < m->len; pos = e) {
		e = sect_line_end(m, pos);
		if (sect_blank(m, pos, e))
			break;
		if (memchr(d + pos, '\0', e - pos) != NULL)
			*nuls = 1;
		if (!first && (d[pos] == ' ' || d[pos] == '\t')) {
			end = e;
			continue;
		}
		first = 0;
		if (colon != NULL)
			cte = sect_parse_cte(colon + 1, d + end);
		colon = NULL;
		if (sect_name_is("Content-Transfer-Encoding", d + pos,
		        sect_field_name(m, pos, e)))
			colon = memchr(d + pos, ':', e - pos);
		end = e;
	}
	if (colon != NULL)
		cte = sect_parse_cte(colon + 1, d + end);
	return cte;
}

struct sect_bin {
	const struct mime_msg *m;
	struct buf *o;
	size_t copy; /* Dovecot's copy_start_offset */
	int converted, nuls, unknown, bad;
};

static int
sect_bin_copy(struct sect_bin *b, size_t end)
{
	if (end <= b->copy)
		return 0;
	return buf_add(b->o, b->m->data + b->copy, end - b->copy);
}

static int
sect_keep_not_cte(
    const struct mime_msg *m, size_t pos, size_t n, const void *arg)
{
	(void)arg;
	return !sect_name_is("Content-Transfer-Encoding", m->data + pos, n);
}

/* The header of a part whose body is decoded (read like HEADER.FIELDS). */
static int
sect_bin_header(struct sect_bin *b, const struct mime_part *p)
{
	static const char cte[] = "Content-Transfer-Encoding: binary\r\n";
	int eoh;

	if (sect_filter(
	        b->m, p->hdr_off, sect_keep_not_cte, NULL, 0, b->o, &eoh) == -1)
		return -1;
	if (eoh && (buf_add(b->o, cte, sizeof(cte) - 1) == -1 ||
	               buf_add(b->o, "\r\n", 2) == -1))
		return -1;
	return 0;
}

static int
sect_bin_part(struct sect_bin *b, const struct mime_part *p, int hdr)
{
	const uint8_t *d = b->m->data;
	const struct mime_part *c;
	size_t end = sect_body_end(p);
	int cte = sect_cte(b->m, p->hdr_off, &b->nuls), r = 0;

	if (cte == CTE_UNKNOWN) {
		b->unknown = 1;
		return 0;
	}
	if (hdr && (cte == CTE_QP || cte == CTE_BASE64)) {
		if ((b->copy != 0 && sect_bin_copy(b, p->hdr_off) == -1) ||
		    sect_bin_header(b, p) == -1)
			return -1;
	} else if (hdr && sect_bin_copy(b, p->hdr_end) == -1)
		return -1;
	b->copy = p->hdr_end;
	if (p->children != NULL) {
		for (c = p->children; c != NULL && !b->unknown; c = c->next)
			if (sect_bin_part(b, c, 1) == -1)
				return -1;
		if (!b->unknown && sect_bin_copy(b, end) == -1)
			return -1;
		b->copy = end;
		return 0;
	}
	if (end > p->hdr_end) {
		switch (cte) {
		case CTE_QP:
			b->converted = 1;
			r = sect_qp_decode(
			    d + p->hdr_end, end - p->hdr_end, b->o);
			break;
		case CTE_BASE64:
			b->converted = 1;
			r = sect_base64_decode(
			    d + p->hdr_end, end - p->hdr_end, b->o);
			break;
		default:
			if (memchr(d + p->hdr_end, '\0', end - p->hdr_end))
				b->nuls = 1;
			if (buf_add(b->o, d + p->hdr_end, end - p->hdr_end) ==
			    -1)
				return -1;
		}
	}
	if (r == -1)
		return -1;
	if (r == 1)
		b->bad = 1;
	b->copy = end;
	return 0;
}

static int
sect_binary(const struct mime_msg *m, const struct mime_part *p, int hdr,
    struct sect_content *c)
{
	struct sect_bin b;
	size_t start = hdr ? p->hdr_off : p->hdr_end;

	memset(&b, 0, sizeof(b));
	b.m = m;
	b.o = &c->data;
	if (sect_bin_part(&b, p, hdr) == -1)
		return -1;
	if (b.unknown || b.bad) {
		c->status =
		    b.unknown ? SCAN_SECT_UNKNOWN_CTE : SCAN_SECT_BADDATA;
		buf_reset(&c->data);
		return 0;
	}
	c->status = b.converted || b.nuls ? SCAN_SECT_LITERAL8 : SCAN_SECT_OK;
	if (b.converted) {
		c->len = c->data.len;
		return 0;
	}
	/* Nothing decoded: the part as it is, as long as the result.  If
	 * that runs past the message, Dovecot drops the connection. */
	if (c->data.len > m->len - start) {
		c->status = SCAN_SECT_BADDATA;
		buf_reset(&c->data);
		return 0;
	}
	c->ref = 1;
	c->off = start;
	c->len = c->data.len;
	buf_reset(&c->data);
	return 0;
}

int
sect_get(const struct mime_msg *m, const struct sect *s, struct sect_content *c)
{
	const struct mime_part *p = s->part;
	int r = 0;

	memset(c, 0, sizeof(*c));
	buf_init(&c->data, 0);
	c->status = s->status != 0 ? (uint32_t)s->status : SCAN_SECT_OK;
	if (s->status != 0)
		return 0;
	if (s->binary && (s->type == SECT_FULL || s->type == SECT_MIME_BODY ||
	                     s->type == SECT_TEXT))
		r = sect_binary(m, p, s->type == SECT_FULL, c);
	else
		switch (s->type) {
		case SECT_FULL:
			r = sect_range(m, 0, m->len, c);
			break;
		case SECT_MIME_BODY:
		case SECT_TEXT:
			r = sect_range(m, p->hdr_end, sect_body_end(p), c);
			break;
		case SECT_MIME:
		case SECT_HEADER:
			r = sect_range(m, p->hdr_off, p->hdr_end, c);
			break;
		default:
			r = sect_fields(m, s, c);
		}
	if (r == -1)
		sect_content_free(c);
	else if (!c->ref)
		c->len = c->data.len;
	return r;
}

void
sect_content_free(struct sect_content *c)
{
	buf_free(&c->data);
	memset(c, 0, sizeof(*c));
	buf_init(&c->data, 0);
}
