/*
 * The structure of a message.  Parts, part numbers and body offsets are
 * found with the rules of Dovecot's lib-mail message parser, so that the
 * part a verdict names is the part an IMAP client sees, the bytes a
 * strip replaces are exactly that part, and the BODYSTRUCTURE written
 * for a rewritten message matches what the server would say about it.
 * Nothing is copied: a part is offsets into the message.
 *
 * GMime does what it is good at: decoding bodies (base64,
 * quoted-printable, uuencode filters) and header parameters (RFC 2231
 * and RFC 2047 file names, charset conversion).
 */
#include <ctype.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>

#include "log.h"
#include "scand.h"

struct mime_bnd {
	const uint8_t *s;
	size_t len;
};

/* Where a search for a boundary line stopped. */
struct mime_hit {
	size_t line; /* start of the boundary line, or the end of the data */
	int idx; /* index into the boundary stack, -1 if none */
	int close; /* "--boundary--" */
};

struct mime_parser {
	struct mime_msg *msg;
	const uint8_t *d;
	size_t len;
	struct mime_bnd bnd[MIME_MAX_DEPTH + 1];
	int nbnd;
	int oom;
};

static int mime_parse_part(struct mime_parser *, struct mime_part *, size_t pos,
    int depth, struct mime_hit *);

/*
 * Lines.
 */

/* After the line feed of the line at pos, or the end. */
static size_t
mime_line_end(const struct mime_parser *p, size_t pos)
{
	const uint8_t *nl;

	nl = memchr(p->d + pos, '\n', p->len - pos);
	return nl == NULL ? p->len : (size_t)(nl - p->d) + 1;
}

static int
mime_blank_line(const struct mime_parser *p, size_t pos, size_t end)
{
	size_t n = end - pos;

	return (n == 1 && p->d[pos] == '\n') ||
	       (n == 2 && p->d[pos] == '\r' && p->d[pos + 1] == '\n');
}

/* Is the line at pos "--" and a boundary of the stack (innermost first,
 * a prefix match as Dovecot does)? */
static int
mime_boundary_at(const struct mime_parser *p, size_t pos, struct mime_hit *h)
{
	const struct mime_bnd *b;
	size_t left = p->len - pos;
	int i;

	if (left < 2 || p->d[pos] != '-' || p->d[pos + 1] != '-')
		return 0;
	/* The longest boundary that matches; of equal ones, the innermost. */
	h->idx = -1;
	for (i = p->nbnd - 1; i >= 0; i--) {
		b = &p->bnd[i];
		if (left - 2 < b->len || memcmp(p->d + pos + 2, b->s, b->len))
			continue;
		if (h->idx == -1 || b->len > p->bnd[h->idx].len)
			h->idx = i;
	}
	if (h->idx == -1)
		return 0;
	b = &p->bnd[h->idx];
	h->line = pos;
	h->close = left - 2 - b->len >= 2 && p->d[pos + 2 + b->len] == '-' &&
	           p->d[pos + 3 + b->len] == '-';
	return 1;
}

/* The next boundary line of the stack at or after pos (a line start). */
static void
mime_find_boundary(const struct mime_parser *p, size_t pos, struct mime_hit *h)
{
	while (pos < p->len) {
		if (mime_boundary_at(p, pos, h))
			return;
		pos = mime_line_end(p, pos);
	}
	h->line = p->len;
	h->idx = -1;
	h->close = 0;
}

/* The body ends before the line end that precedes a boundary line. */
static size_t
mime_body_end(const struct mime_parser *p, size_t body_off, size_t line)
{
	size_t end = line;

	if (line < p->len) {
		if (end > body_off && p->d[end - 1] == '\n')
			end--;
		if (end > body_off && p->d[end - 1] == '\r')
			end--;
	}
	return end < body_off ? body_off : end;
}

uint32_t
mime_lines(const struct mime_msg *msg, const struct mime_part *part)
{
	const uint8_t *p = msg->data + part->body_off;
	const uint8_t *end = msg->data + part->body_end, *nl;
	uint32_t n = 0;

	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		n++;
		p = nl + 1;
	}
	return n;
}

/*
 * Header fields.
 */

static int
mime_add_field(struct mime_parser *p, struct mime_part *part, size_t off,
    size_t colon, size_t end)
{
	struct mime_field *f;
	size_t n, v;

	if (part->nfields == part->capfields) {
		n = part->capfields ? part->capfields * 2 : 8;
		f = reallocarray(part->fields, n, sizeof(*f));
		if (f == NULL) {
			p->oom = 1;
			return -1;
		}
		part->fields = f;
		part->capfields = n;
	}
	f = &part->fields[part->nfields++];
	f->off = off;
	f->end = end;
	for (n = colon - off;
	     n > 0 && (p->d[off + n - 1] == ' ' || p->d[off + n - 1] == '\t');)
		n--;
	f->name_len = n;
	for (v = colon + 1; v < end && (p->d[v] == ' ' || p->d[v] == '\t');)
		v++;
	f->value_off = v;
	f->value_end = end;
	return 0;
}

static void
mime_field_extend(struct mime_part *part, size_t end)
{
	struct mime_field *f = &part->fields[part->nfields - 1];

	f->end = end;
	f->value_end = end;
}

/* The value ends before the line end of its last line. */
static void
mime_fields_trim(struct mime_parser *p, struct mime_part *part)
{
	struct mime_field *f;
	size_t i;

	for (i = 0; i < part->nfields; i++) {
		f = &part->fields[i];
		if (f->value_end > f->value_off &&
		    p->d[f->value_end - 1] == '\n')
			f->value_end--;
		if (f->value_end > f->value_off &&
		    p->d[f->value_end - 1] == '\r')
			f->value_end--;
		if (f->value_off > f->value_end)
			f->value_off = f->value_end;
	}
}

/*
 * Fields up to the empty line; returns where the body starts.  A
 * boundary line of an enclosing multipart ends the header too (the part
 * then has an empty body), as in Dovecot.
 */
static size_t
mime_parse_header(struct mime_parser *p, struct mime_part *part, size_t pos)
{
	const uint8_t *colon;
	struct mime_hit h;
	size_t e;

	part->hdr_off = pos;
	while (pos < p->len) {
		e = mime_line_end(p, pos);
		if (mime_blank_line(p, pos, e)) {
			mime_fields_trim(p, part);
			part->hdr_end = e;
			return e;
		}
		if (mime_boundary_at(p, pos, &h)) {
			mime_fields_trim(p, part);
			/* The line end before a boundary is the boundary's. */
			part->hdr_end = mime_body_end(p, part->hdr_off, pos);
			return pos;
		}
		if ((p->d[pos] == ' ' || p->d[pos] == '\t') &&
		    part->nfields > 0 &&
		    part->fields[part->nfields - 1].end == pos)
			mime_field_extend(part, e);
		else if ((colon = memchr(p->d + pos, ':', e - pos)) != NULL) {
			if (mime_add_field(
			        p, part, pos, (size_t)(colon - p->d), e) == -1)
				return p->len;
		}
		pos = e;
	}
	mime_fields_trim(p, part);
	part->hdr_end = p->len;
	return p->len;
}

const struct mime_field *
mime_field(
    const struct mime_msg *msg, const struct mime_part *part, const char *name)
{
	size_t i, n = strlen(name);
	const struct mime_field *f;

	for (i = 0; i < part->nfields; i++) {
		f = &part->fields[i];
		if (f->name_len == n &&
		    strncasecmp((const char *)msg->data + f->off, name, n) == 0)
			return f;
	}
	return NULL;
}

char *
mime_field_value(const struct mime_msg *msg, const struct mime_field *f)
{
	const uint8_t *s = msg->data + f->value_off;
	size_t i, n = f->value_end - f->value_off, o = 0;
	char *v;

	if ((v = malloc(n + 1)) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		if (s[i] != '\r' && s[i] != '\n')
			v[o++] = s[i] == '\0' ? ' ' : (char)s[i];
	v[o] = '\0';
	return v;
}

/*
 * Content-Type, the way Dovecot reads it for the structure.
 */

/* A MIME token (RFC 2045: no specials, no blanks, no controls). */
static int
mime_token_char(int c)
{
	return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

static const char *
mime_skip_cfws(const char *s)
{
	int level;

	for (;;) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s != '(')
			return s;
		for (level = 0; *s != '\0'; s++) {
			if (*s == '\\' && s[1] != '\0')
				s++;
			else if (*s == '(')
				level++;
			else if (*s == ')' && --level == 0) {
				s++;
				break;
			}
		}
	}
}

void
mime_content_type(const struct mime_msg *msg, const struct mime_part *part,
    char *type, size_t tlen, char *sub, size_t slen)
{
	const struct mime_field *f;

	f = part->is_mime ? mime_field(msg, part, "Content-Type") : NULL;
	if (f == NULL) {
		snprintf(
		    type, tlen, "%s", part->digest_child ? "message" : "text");
		snprintf(
		    sub, slen, "%s", part->digest_child ? "rfc822" : "plain");
		return;
	}
	bs_ctype(msg, f, type, tlen, sub, slen, NULL);
}

/*
 * Parts.
 */

static struct mime_part *
mime_new_part(struct mime_parser *p, struct mime_part *parent)
{
	struct mime_part *part;

	if ((part = calloc(1, sizeof(*part))) == NULL) {
		p->oom = 1;
		return NULL;
	}
	p->msg->nparts++;
	part->parent = parent;
	if (parent != NULL) {
		if (parent->lastchild == NULL)
			parent->children = part;
		else
			parent->lastchild->next = part;
		parent->lastchild = part;
		parent->nchild++;
	}
	return part;
}

static int
mime_can_nest(struct mime_parser *p, int depth)
{
	if (depth >= MIME_MAX_DEPTH || p->msg->nparts >= MIME_MAX_PARTS) {
		p->msg->limited = 1;
		return 0;
	}
	return 1;
}

/*
 * Decide the kind from the first Content-Type.  A multipart without a
 * boundary is a multipart without parts, as for Dovecot.  Returns the
 * boundary (to free).
 */
static char *
mime_classify(struct mime_parser *p, struct mime_part *part, int depth)
{
	const struct mime_field *f;
	char type[32], sub[32], *b = NULL;

	f = mime_field(p->msg, part, "Content-Type");
	if (f != NULL || mime_field(p->msg, part, "MIME-Version") != NULL)
		part->is_mime = 1;
	if (f == NULL) {
		if (part->digest_child && mime_can_nest(p, depth))
			part->kind = MIME_MESSAGE;
		return NULL;
	}
	bs_ctype(p->msg, f, type, sizeof(type), sub, sizeof(sub), &b);
	if (strcmp(type, "message") == 0 && strcmp(sub, "rfc822") == 0) {
		if (mime_can_nest(p, depth))
			part->kind = MIME_MESSAGE;
	} else if (strcmp(type, "multipart") == 0 && mime_can_nest(p, depth))
		part->kind = MIME_MULTIPART;
	if (part->kind != MIME_MULTIPART) {
		free(b);
		b = NULL;
	}
	return b;
}

static int
mime_is_digest(const struct mime_parser *p, const struct mime_part *part)
{
	char type[32], sub[32];

	mime_content_type(p->msg, part, type, sizeof(type), sub, sizeof(sub));
	return strcmp(sub, "digest") == 0;
}

/*
 * The children of a multipart whose body starts at pos.  The boundary
 * is on the stack at index me.  On return h is the boundary line of an
 * enclosing part that ends this one, or the end of the data, and *floor
 * is where the body's content ends at the least: after the closing
 * boundary line (whose line end is its own), or at the end of the last
 * part.
 */
static int
mime_parse_children(struct mime_parser *p, struct mime_part *part, size_t pos,
    int depth, struct mime_hit *h, size_t *floor)
{
	struct mime_part *child;
	int me = p->nbnd - 1, digest = mime_is_digest(p, part);

	mime_find_boundary(p, pos, h);
	while (h->idx == me && !h->close) {
		if ((child = mime_new_part(p, part)) == NULL)
			return -1;
		child->is_mime = 1;
		child->digest_child = digest;
		pos = mime_line_end(p, h->line);
		if (mime_parse_part(p, child, pos, depth + 1, h) == -1)
			return -1;
		*floor = child->body_end;
		if (p->msg->nparts >= MIME_MAX_PARTS && h->idx == me &&
		    !h->close) {
			/* Too many parts: the rest is epilogue. */
			p->msg->limited = 1;
			break;
		}
	}
	if (h->idx == me) {
		/* The epilogue runs to a boundary of an enclosing part. */
		*floor = mime_line_end(p, h->line);
		p->nbnd--;
		mime_find_boundary(p, *floor, h);
		p->nbnd++;
	}
	return 0;
}

static int
mime_parse_part(struct mime_parser *p, struct mime_part *part, size_t pos,
    int depth, struct mime_hit *h)
{
	struct mime_part *child = NULL;
	size_t floor;
	char *boundary;
	int r = 0;

	part->body_off = mime_parse_header(p, part, pos);
	floor = part->body_off;
	if (p->oom)
		return -1;
	boundary = mime_classify(p, part, depth);
	if (p->oom) {
		free(boundary);
		return -1;
	}
	if (part->kind == MIME_MULTIPART && boundary == NULL)
		mime_find_boundary(p, part->body_off, h);
	else if (part->kind == MIME_MULTIPART) {
		p->bnd[p->nbnd].s = (const uint8_t *)boundary;
		p->bnd[p->nbnd].len = strlen(boundary);
		p->nbnd++;
		r = mime_parse_children(
		    p, part, part->body_off, depth, h, &floor);
		p->nbnd--;
	} else if (part->kind == MIME_MESSAGE) {
		if ((child = mime_new_part(p, part)) == NULL)
			r = -1;
		else
			r = mime_parse_part(
			    p, child, part->body_off, depth + 1, h);
	} else
		mime_find_boundary(p, part->body_off, h);
	free(boundary);
	/* A message ends where its message does: its header may have been
	 * cut by a boundary, and a header keeps its last line end. */
	if (child != NULL && r == 0) {
		part->body_end = child->body_end;
		/* Nothing inside, a boundary right after the header: the
		 * empty message starts at the line end the boundary takes. */
		if (child->body_end == part->body_off &&
		    h->line == part->body_off) {
			part->hdr_end =
			    mime_body_end(p, part->hdr_off, h->line);
			child->hdr_off = child->hdr_end = part->hdr_end;
		}
	} else {
		part->body_end = mime_body_end(p, part->body_off, h->line);
		if (part->body_end < floor)
			part->body_end = floor;
		/* An empty body right before a boundary: the line end before
		 * the boundary is the boundary's, even when it is the empty
		 * line that ends the header. */
		if (part->body_end == part->body_off &&
		    h->line == part->body_off)
			part->hdr_end =
			    mime_body_end(p, part->hdr_off, h->line);
	}
	return r;
}

int
mime_parse(struct mime_msg *msg, const void *data, size_t len)
{
	struct mime_parser p;
	struct mime_hit h;
	const uint8_t *nl;

	memset(msg, 0, sizeof(*msg));
	memset(&p, 0, sizeof(p));
	msg->data = data;
	msg->len = len;
	nl = len ? memchr(data, '\n', len) : NULL;
	msg->eol =
	    nl != NULL && nl > msg->data && nl[-1] != '\r' ? "\n" : "\r\n";
	p.msg = msg;
	p.d = data;
	p.len = len;
	if ((msg->root = mime_new_part(&p, NULL)) == NULL ||
	    mime_parse_part(&p, msg->root, 0, 0, &h) == -1 || p.oom) {
		mime_free(msg);
		return -1;
	}
	return 0;
}

static void
mime_free_part(struct mime_part *part)
{
	struct mime_part *c, *next;

	/* Siblings iteratively; depth is bounded by MIME_MAX_DEPTH. */
	for (c = part->children; c != NULL; c = next) {
		next = c->next;
		mime_free_part(c);
	}
	free(part->fields);
	free(part);
}

void
mime_free(struct mime_msg *msg)
{
	if (msg->root != NULL)
		mime_free_part(msg->root);
	msg->root = NULL;
	msg->nparts = 0;
}

/*
 * Section numbers (RFC 3501 6.4.5).
 */

static int
mime_index(const struct mime_part *part)
{
	const struct mime_part *c;
	int i = 1;

	for (c = part->parent->children; c != NULL && c != part; c = c->next)
		i++;
	return i;
}

/* The number of a part as a prefix for its children. */
static void
mime_number(const struct mime_part *part, char *out, size_t len)
{
	size_t n;

	if (part->parent == NULL) {
		out[0] = '\0';
		return;
	}
	mime_number(part->parent, out, len);
	if (part->parent->kind == MIME_MESSAGE)
		return;
	n = strlen(out);
	snprintf(out + n, len - n, "%s%d", n ? "." : "", mime_index(part));
}

void
mime_section(const struct mime_part *part, char *out, size_t len)
{
	size_t n;

	mime_number(part, out, len);
	if (part->kind != MIME_LEAF)
		return;
	/* The body of a message is its part 1. */
	if (part->parent == NULL || part->parent->kind == MIME_MESSAGE) {
		n = strlen(out);
		snprintf(out + n, len - n, "%s1", n ? "." : "");
	}
}

/*
 * Decoding through GMime.
 */

#define MIME_NCHARSETS 40
static iconv_t mime_iconv[MIME_NCHARSETS];

/*
 * glibc loads a converter module on its first iconv_open and unloads it
 * when the last user closes it.  In scand's chroot the modules cannot be
 * loaded, so one converter per common mail charset is opened now and
 * never closed: GMime's own iconv_open calls then find them loaded.
 */
static void
mime_iconv_preload(void)
{
	static const char *const cs[] = {"ISO-8859-2", "ISO-8859-3",
	    "ISO-8859-4", "ISO-8859-5", "ISO-8859-6", "ISO-8859-7",
	    "ISO-8859-8", "ISO-8859-9", "ISO-8859-10", "ISO-8859-13",
	    "ISO-8859-14", "ISO-8859-15", "ISO-8859-16", "CP1250", "CP1251",
	    "CP1252", "CP1253", "CP1254", "CP1255", "CP1256", "CP1257",
	    "CP1258", "KOI8-R", "KOI8-U", "SHIFT_JIS", "EUC-JP", "ISO-2022-JP",
	    "GB2312", "GBK", "GB18030", "BIG5", "EUC-KR", "UTF-16", "UTF-7",
	    "CP850", "CP866", "TIS-620", "CP437", "ISO-2022-KR", "BIG5-HKSCS"};
	size_t i, n = 0;

	for (i = 0; i < sizeof(cs) / sizeof(cs[0]) && n < MIME_NCHARSETS; i++) {
		mime_iconv[n] = iconv_open("UTF-8", cs[i]);
		if (mime_iconv[n] == (iconv_t)-1)
			log_debug("mime: no converter from %s", cs[i]);
		else
			n++;
	}
	log_debug("mime: %zu charset converters loaded", n);
}

void
mime_init(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	g_mime_init();
	mime_iconv_preload();
}

static GMimeContentEncoding
mime_encoding(const struct mime_msg *msg, const struct mime_part *part)
{
	const struct mime_field *f;
	GMimeContentEncoding enc;
	char *v, *s, *e;

	f = part->is_mime ? mime_field(msg, part, "Content-Transfer-Encoding")
	                  : NULL;
	if (f == NULL || (v = mime_field_value(msg, f)) == NULL)
		return GMIME_CONTENT_ENCODING_DEFAULT;
	s = (char *)mime_skip_cfws(v);
	for (e = s; mime_token_char((unsigned char)*e) || *e == '.'; e++)
		;
	*e = '\0';
	enc = g_mime_content_encoding_from_string(s);
	free(v);
	return enc;
}

int
mime_decode_body(
    const struct mime_msg *msg, const struct mime_part *part, struct buf *out)
{
	const uint8_t *body = msg->data + part->body_off;
	size_t len = part->body_end - part->body_off;
	GMimeContentEncoding enc = mime_encoding(msg, part);
	GMimeStream *mem, *filt;
	GMimeFilter *f;
	GByteArray *ba;
	int r;

	if (enc != GMIME_CONTENT_ENCODING_BASE64 &&
	    enc != GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE &&
	    enc != GMIME_CONTENT_ENCODING_UUENCODE)
		return buf_add(out, body, len);
	mem = g_mime_stream_mem_new();
	filt = g_mime_stream_filter_new(mem);
	f = g_mime_filter_basic_new(enc, FALSE);
	g_mime_stream_filter_add(GMIME_STREAM_FILTER(filt), f);
	g_object_unref(f);
	r = 0;
	if (len > 0 && g_mime_stream_write(filt, (const char *)body, len) < 0)
		r = -1;
	if (g_mime_stream_flush(filt) < 0)
		r = -1;
	ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
	if (r == 0)
		r = buf_add(out, ba->data, ba->len);
	g_object_unref(filt);
	g_object_unref(mem);
	return r;
}

/* UTF-8 without control characters; anything else becomes '?'. */
static void
mime_clean_text(const char *in, char *out, size_t outlen)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0, n, i;

	while (*s != '\0' && o + 1 < outlen) {
		n = *s < 0x80             ? 1
		    : (*s & 0xe0) == 0xc0 ? 2
		    : (*s & 0xf0) == 0xe0 ? 3
		    : (*s & 0xf8) == 0xf0 ? 4
		                          : 0;
		for (i = 1; i < n; i++)
			if ((s[i] & 0xc0) != 0x80)
				n = 0;
		if (n == 0 || (n == 1 && (*s < 0x20 || *s == 0x7f))) {
			out[o++] = '?';
			s++;
			continue;
		}
		if (o + n >= outlen)
			break;
		memcpy(out + o, s, n);
		o += n;
		s += n;
	}
	out[o] = '\0';
}

static char *
mime_param(const struct mime_msg *msg, const struct mime_part *part,
    const char *field, const char *name)
{
	const struct mime_field *f;
	GMimeContentDisposition *cd;
	GMimeContentType *ct;
	const char *val = NULL;
	char *v, *r = NULL;

	if ((f = mime_field(msg, part, field)) == NULL ||
	    (v = mime_field_value(msg, f)) == NULL)
		return NULL;
	if (strcasecmp(field, "Content-Disposition") == 0) {
		if ((cd = g_mime_content_disposition_parse(NULL, v)) != NULL) {
			val =
			    g_mime_content_disposition_get_parameter(cd, name);
			r = val != NULL && *val != '\0' ? strdup(val) : NULL;
			g_object_unref(cd);
		}
	} else if ((ct = g_mime_content_type_parse(NULL, v)) != NULL) {
		val = g_mime_content_type_get_parameter(ct, name);
		r = val != NULL && *val != '\0' ? strdup(val) : NULL;
		g_object_unref(ct);
	}
	free(v);
	return r;
}

void
mime_filename(const struct mime_msg *msg, const struct mime_part *part,
    char *out, size_t len)
{
	char *name;

	out[0] = '\0';
	if ((name = mime_param(msg, part, "Content-Disposition", "filename")) ==
	    NULL)
		name = mime_param(msg, part, "Content-Type", "name");
	if (name == NULL)
		return;
	mime_clean_text(name, out, len);
	free(name);
}
