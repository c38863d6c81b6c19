/*
 * IMAP BODY and BODYSTRUCTURE (RFC 3501 7.4.2) of a parsed message,
 * written the way Dovecot writes them: the same header parsing (RFC 822
 * tokens, RFC 2231 continuations merged but not decoded), the same
 * defaults (text/plain; charset us-ascii, 7bit), the same choice between
 * quoted strings and literals.  When scand rewrites a message, netd
 * answers BODYSTRUCTURE and BODY from here, and a client must not be
 * able to tell that they did not come from the server.
 *
 * Values are parsed from the raw header bytes, folding included (line
 * ends count as white space, as in Dovecot's rfc822 parser).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "scand.h"

/* A parameter list, in the order Dovecot emits it. */
struct bs_param {
	char *name, *value;
};

struct bs_params {
	struct bs_param *v;
	size_t n, cap;
};

/* What BODYSTRUCTURE says about one part. */
struct bs_data {
	char *type, *subtype; /* as written; NULL if no Content-Type */
	struct bs_params params;
	char *id, *desc, *enc, *md5, *location;
	char *disp;
	struct bs_params disp_params;
	char **lang;
	size_t nlang;
};

/* Cursor over a header value (Dovecot's rfc822_parser_context). */
struct rp {
	const unsigned char *p, *end;
	struct buf *comment; /* the last comment, for address names */
	char *own; /* the value it reads */
};

/*
 * Output: quoted string or literal, as Dovecot's imap-quote.c decides.
 */

#define BS_MAX_ESCAPES 4

static void
bs_literal(struct buf *o, const char *s, size_t n)
{
	buf_printf(o, "{%zu}\r\n", n);
	buf_add(o, s, n);
}

static void
bs_string(struct buf *o, const char *s)
{
	size_t i, n = strlen(s);
	int esc = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c == '"' || c == '\\') && esc++ < BS_MAX_ESCAPES)
			continue;
		if (c == '"' || c == '\\' || c == '\r' || c == '\n' ||
		    c >= 0x80) {
			bs_literal(o, s, n);
			return;
		}
	}
	buf_add_u8(o, '"');
	for (i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			buf_add_u8(o, '\\');
		buf_add_u8(o, (uint8_t)s[i]);
	}
	buf_add_u8(o, '"');
}

static void
bs_nstring(struct buf *o, const char *s)
{
	if (s == NULL)
		buf_add(o, "NIL", 3);
	else
		bs_string(o, s);
}

/* Without its line ends (folding). */
static void
bs_nstring_nolf(struct buf *o, const char *s)
{
	char *t;
	size_t i, n = 0;

	if (s == NULL || strpbrk(s, "\r\n") == NULL) {
		bs_nstring(o, s);
		return;
	}
	if ((t = malloc(strlen(s) + 1)) == NULL)
		return;
	for (i = 0; s[i] != '\0'; i++)
		if (s[i] != '\r' && s[i] != '\n')
			t[n++] = s[i];
	t[n] = '\0';
	bs_string(o, t);
	free(t);
}

/*
 * Text for humans (subject, address names): line ends removed, runs of
 * blanks folded to one space, leading and trailing blanks dropped; if
 * anything had to change it is written as a literal.
 */
static void
bs_human(struct buf *o, const unsigned char *s, size_t n)
{
	struct buf t;
	size_t i;
	int lastsp = 1, modify = 0;

	for (i = 0; i < n; i++) {
		switch (s[i]) {
		case '\t':
			modify = 1;
			/* FALLTHROUGH */
		case ' ':
			modify |= lastsp;
			lastsp = 1;
			break;
		case '\r':
		case '\n':
			modify = 1;
			break;
		default:
			if (s[i] == 0 || s[i] == '"' || s[i] == '\\' ||
			    s[i] >= 0x80)
				modify = 1;
			lastsp = 0;
			break;
		}
	}
	if (lastsp && n > 0)
		modify = 1;
	if (!modify) {
		buf_add_u8(o, '"');
		buf_add(o, s, n);
		buf_add_u8(o, '"');
		return;
	}
	buf_init(&t, 0);
	lastsp = 1;
	for (i = 0; i < n; i++) {
		if (s[i] == '\r' || s[i] == '\n')
			continue;
		if (s[i] == ' ' || s[i] == '\t') {
			if (!lastsp)
				buf_add_u8(&t, ' ');
			lastsp = 1;
			continue;
		}
		buf_add_u8(&t, s[i] == 0 ? 0x80 : s[i]);
		lastsp = 0;
	}
	if (lastsp && t.len > 0)
		t.len--;
	if (t.len == 0)
		buf_add(o, "\"\"", 2);
	else
		bs_literal(o, (const char *)t.data, t.len);
	buf_free(&t);
}

/*
 * RFC 822 tokens, as Dovecot's lib-mail/rfc822-parser.c reads them.
 * Functions return 1 if more data follows, 0 at the end, -1 on error.
 */

static int
rp_is_atext(unsigned char c)
{
	return c >= 0x80 ||
	       (c > 0x20 && c < 0x7f && strchr("()<>[]:;@\\,.\"", c) == NULL);
}

/* A MIME token: atext without the tspecials '/', '?' and '='. */
static int
rp_is_token(unsigned char c)
{
	return rp_is_atext(c) && c != '/' && c != '?' && c != '=';
}

static int
rp_skip_comment(struct rp *r)
{
	const unsigned char *start;
	int level = 1;

	if (r->comment != NULL)
		buf_reset(r->comment);
	start = ++r->p;
	for (; r->p < r->end; r->p++) {
		if (*r->p == '(')
			level++;
		else if (*r->p == ')' && --level == 0) {
			if (r->comment != NULL)
				buf_add(
				    r->comment, start, (size_t)(r->p - start));
			r->p++;
			return r->p < r->end;
		} else if (*r->p == '\\') {
			if (r->comment != NULL)
				buf_add(
				    r->comment, start, (size_t)(r->p - start));
			start = r->p + 1;
			if (++r->p == r->end)
				return -1;
		}
	}
	return -1;
}

static int
rp_skip_lwsp(struct rp *r)
{
	while (r->p < r->end) {
		if (*r->p == ' ' || *r->p == '\t' || *r->p == '\r' ||
		    *r->p == '\n') {
			r->p++;
			continue;
		}
		if (*r->p != '(')
			break;
		if (rp_skip_comment(r) < 0)
			return -1;
	}
	return r->p < r->end;
}

static int
rp_token(struct rp *r, struct buf *s)
{
	const unsigned char *start = r->p;

	while (r->p < r->end && (rp_is_token(*r->p) || *r->p == '.'))
		r->p++;
	buf_add(s, start, (size_t)(r->p - start));
	return r->p < r->end ? rp_skip_lwsp(r) : 0;
}

static int
rp_quoted(struct rp *r, struct buf *s)
{
	const unsigned char *start;
	size_t n;

	start = ++r->p;
	for (; r->p < r->end; r->p++) {
		switch (*r->p) {
		case '"':
			buf_add(s, start, (size_t)(r->p - start));
			r->p++;
			return rp_skip_lwsp(r);
		case '\n':
			/* folding: drop the line end */
			n = (size_t)(r->p - start);
			if (n > 0 && start[n - 1] == '\r')
				n--;
			buf_add(s, start, n);
			start = r->p + 1;
			break;
		case '\\':
			if (++r->p == r->end)
				return -1;
			buf_add(s, start, (size_t)(r->p - start - 1));
			start = r->p;
			break;
		}
	}
	return -1;
}

static int
rp_atom(struct rp *r, struct buf *s)
{
	const unsigned char *start = r->p;

	if (r->p == r->end || !rp_is_atext(*r->p))
		return -1;
	while (r->p < r->end && rp_is_atext(*r->p))
		r->p++;
	buf_add(s, start, (size_t)(r->p - start));
	return r->p < r->end ? rp_skip_lwsp(r) : 0;
}

/* dot-atom, with blanks allowed around the dots (RFC 822). */
static int
rp_dot_atom(struct rp *r, struct buf *s)
{
	const unsigned char *start;
	int ret;

	if (r->p == r->end || !rp_is_atext(*r->p))
		return -1;
	for (start = r->p++;;) {
		while (r->p < r->end && rp_is_atext(*r->p))
			r->p++;
		buf_add(s, start, (size_t)(r->p - start));
		if (r->p == r->end)
			return 0;
		if ((ret = rp_skip_lwsp(r)) <= 0)
			return ret;
		if (*r->p != '.')
			return 1;
		r->p++;
		buf_add_u8(s, '.');
		if ((ret = rp_skip_lwsp(r)) <= 0)
			return ret;
		start = r->p;
	}
}

static int
rp_atom_or_dot(struct rp *r, struct buf *s)
{
	const unsigned char *start = r->p;

	while (r->p < r->end && (rp_is_atext(*r->p) || *r->p == '.'))
		r->p++;
	buf_add(s, start, (size_t)(r->p - start));
	return r->p < r->end ? rp_skip_lwsp(r) : 0;
}

static int
rp_phrase(struct rp *r, struct buf *s)
{
	int ret;

	if (r->p == r->end)
		return 0;
	if (*r->p == '.')
		return -1;
	for (;;) {
		if (*r->p == '"')
			ret = rp_quoted(r, s);
		else
			ret = rp_atom_or_dot(r, s);
		if (ret <= 0)
			return ret;
		if (!rp_is_atext(*r->p) && *r->p != '"' && *r->p != '.')
			break;
		buf_add_u8(s, ' ');
	}
	return rp_skip_lwsp(r);
}

static int
rp_domain_literal(struct rp *r, struct buf *s)
{
	const unsigned char *start = r->p;

	for (; r->p < r->end; r->p++) {
		if (*r->p == '\\') {
			if (++r->p == r->end)
				break;
		} else if (*r->p == ']') {
			r->p++;
			buf_add(s, start, (size_t)(r->p - start));
			return rp_skip_lwsp(r);
		}
	}
	return -1;
}

/* At '@': the domain after it. */
static int
rp_domain(struct rp *r, struct buf *s)
{
	r->p++;
	if (rp_skip_lwsp(r) <= 0)
		return -1;
	if (*r->p == '[')
		return rp_domain_literal(r, s);
	return rp_dot_atom(r, s);
}

/*
 * Strings built in a struct buf, NUL-terminated and handed out.
 */

static char *
bs_take(struct buf *s)
{
	char *v;

	if ((v = malloc(s->len + 1)) == NULL)
		return NULL;
	if (s->len > 0) /* never allocated if nothing was added */
		memcpy(v, s->data, s->len);
	v[s->len] = '\0';
	buf_reset(s);
	return v;
}

/*
 * A header value as Dovecot's header parser hands it over: NUL bytes
 * replaced by U+FFFD.  NUL-terminated; *len without the terminator.
 */
static char *
bs_value(const struct mime_msg *m, const struct mime_field *f, size_t *len)
{
	const uint8_t *s = m->data + f->value_off;
	size_t i, n = f->value_end - f->value_off, o = 0;
	char *v;

	if ((v = malloc(n * 3 + 1)) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if (s[i] == '\0') {
			memcpy(v + o, "\xef\xbf\xbd", 3);
			o += 3;
		} else
			v[o++] = (char)s[i];
	}
	v[o] = '\0';
	if (len != NULL)
		*len = o;
	return v;
}

static char *
bs_raw(const struct mime_msg *m, const struct mime_field *f)
{
	return bs_value(m, f, NULL);
}

static void
rp_init(struct rp *r, const struct mime_msg *m, const struct mime_field *f)
{
	size_t n = 0;

	r->comment = NULL;
	if ((r->own = bs_value(m, f, &n)) == NULL)
		n = 0;
	r->p = (const unsigned char *)(r->own != NULL ? r->own : "");
	r->end = r->p + n;
}

static void
rp_done(struct rp *r)
{
	free(r->own);
	r->own = NULL;
}

/*
 * Parameters: "; name=value" pairs, then RFC 2231 "name*0*=..." pieces
 * merged into "name" or "name*" (still encoded) and appended sorted by
 * name, as Dovecot's rfc2231-parser.c does.
 */

struct bs_piece {
	char *key; /* name without the "*n*" */
	char *value;
	unsigned int idx;
	int extended;
};

static void
bs_params_add(struct bs_params *ps, char *name, char *value)
{
	struct bs_param *v;
	size_t cap;

	if (name == NULL || value == NULL)
		goto fail;
	if (ps->n == ps->cap) {
		cap = ps->cap ? ps->cap * 2 : 4;
		if ((v = reallocarray(ps->v, cap, sizeof(*v))) == NULL)
			goto fail;
		ps->v = v;
		ps->cap = cap;
	}
	ps->v[ps->n].name = name;
	ps->v[ps->n].value = value;
	ps->n++;
	return;
fail:
	free(name);
	free(value);
}

static void
bs_params_free(struct bs_params *ps)
{
	size_t i;

	for (i = 0; i < ps->n; i++) {
		free(ps->v[i].name);
		free(ps->v[i].value);
	}
	free(ps->v);
	memset(ps, 0, sizeof(*ps));
}

/* One "; key=value".  1 ok, 0 at the end, -1 broken. */
static int
rp_param(struct rp *r, struct buf *k, struct buf *v)
{
	int ret;

	buf_reset(k);
	buf_reset(v);
	if (r->p == r->end)
		return 0;
	if (*r->p != ';')
		return -1;
	r->p++;
	if (rp_skip_lwsp(r) <= 0)
		return -1;
	if (rp_token(r, k) <= 0 || *r->p != '=')
		return -1;
	r->p++;
	if ((ret = rp_skip_lwsp(r)) <= 0) {
		/* no value */
	} else if (*r->p == '"')
		ret = rp_quoted(r, v);
	else if (*r->p == '=') {
		/* broken name==?utf-8?b?...?= */
		while (r->p < r->end && *r->p != ';' && *r->p != ' ' &&
		       *r->p != '\t' && *r->p != '\r' && *r->p != '\n')
			buf_add_u8(v, *r->p++);
	} else
		ret = rp_token(r, v);
	return ret < 0 ? -1 : 1;
}

/* "name*3*" -> key "name", idx 3, extended.  0 if not RFC 2231. */
static int
bs_piece_of(const char *key, struct bs_piece *pc)
{
	const char *star = strchr(key, '*'), *p;

	if (star == NULL)
		return 0;
	p = star;
	pc->idx = 0;
	if (p[1] != '\0') {
		for (p++; *p >= '0' && *p <= '9'; p++)
			pc->idx = pc->idx * 10 + (unsigned int)(*p - '0');
	}
	pc->extended = *p == '*';
	if (pc->extended)
		p++;
	if (*p != '\0')
		return 0;
	pc->key = strndup(key, (size_t)(star - key));
	return 1;
}

static int
bs_piece_cmp(const void *a, const void *b)
{
	const struct bs_piece *x = a, *y = b;
	int r = strcmp(x->key, y->key);

	if (r != 0)
		return r;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* "key*3", "key*3*", "key*" or "key". */
static char *
bs_key(const char *key, int with_idx, unsigned int idx, int star)
{
	char *r;
	int n;

	if (with_idx)
		n = asprintf(&r, "%s*%u%s", key, idx, star ? "*" : "");
	else
		n = asprintf(&r, "%s%s", key, star ? "*" : "");
	return n == -1 ? NULL : r;
}

/* Merge the pieces [i, j) of one key. */
static void
bs_merge(struct bs_params *ps, struct bs_piece *pc, size_t i, size_t j)
{
	struct buf v;
	size_t k;
	int ok = 1, ext = 0;
	const char *s;

	for (k = i; k < j; k++) {
		if (pc[k].idx != k - i)
			ok = 0;
		ext |= pc[k].extended;
	}
	if (!ok) {
		for (k = i; k < j; k++)
			bs_params_add(ps,
			    bs_key(pc[k].key, 1, pc[k].idx, pc[k].extended),
			    strdup(pc[k].value));
		return;
	}
	buf_init(&v, 0);
	if (!pc[i].extended && ext)
		buf_add(&v, "''", 2);
	for (k = i; k < j; k++) {
		if (!pc[k].extended && ext) {
			for (s = pc[k].value; *s != '\0'; s++)
				if (*s == '%')
					buf_add(&v, "%25", 3);
				else
					buf_add_u8(&v, (uint8_t)*s);
		} else
			buf_add(&v, pc[k].value, strlen(pc[k].value));
	}
	bs_params_add(ps, bs_key(pc[i].key, 0, 0, ext), bs_take(&v));
	buf_free(&v);
}

static void
bs_parse_params(struct rp *r, struct bs_params *ps)
{
	struct bs_piece *pc = NULL, *npc, one;
	size_t npcs = 0, i, j;
	struct buf k, v;
	int ret;

	buf_init(&k, 0);
	buf_init(&v, 0);
	while ((ret = rp_param(r, &k, &v)) != 0) {
		if (ret < 0) {
			/* try to go on after the broken part */
			if (r->p == r->end)
				break;
			r->p++;
			continue;
		}
		buf_add_u8(&k, 0);
		if (bs_piece_of((char *)k.data, &one)) {
			npc = reallocarray(pc, npcs + 1, sizeof(*pc));
			if (npc == NULL || one.key == NULL) {
				free(one.key);
				continue;
			}
			pc = npc;
			one.value = bs_take(&v);
			pc[npcs++] = one;
			continue;
		}
		k.len--;
		bs_params_add(ps, bs_take(&k), bs_take(&v));
	}
	if (npcs > 0)
		qsort(pc, npcs, sizeof(*pc), bs_piece_cmp);
	for (i = 0; i < npcs; i = j) {
		for (j = i; j < npcs && strcasecmp(pc[i].key, pc[j].key) == 0;)
			j++;
		bs_merge(ps, pc, i, j);
	}
	for (i = 0; i < npcs; i++) {
		free(pc[i].key);
		free(pc[i].value);
	}
	free(pc);
	buf_free(&k);
	buf_free(&v);
}

/*
 * Content-* header fields.
 */

/*
 * "type/subtype", then the end or ';' (Dovecot's
 * rfc822_parse_content_type).  A value that ends right after the type
 * keeps the type; any other breakage leaves both empty.  -1 if broken:
 * the parameters are not read then.
 */
static int
bs_ctype_parse(struct rp *r, struct buf *type, struct buf *sub)
{
	int ret;

	if (rp_skip_lwsp(r) <= 0)
		return -1;
	if (rp_token(r, type) <= 0)
		return -1;
	if (type->len == 0 || *r->p != '/')
		goto bad;
	r->p++;
	if (rp_skip_lwsp(r) <= 0)
		goto bad;
	ret = rp_token(r, sub);
	if (ret < 0 || sub->len == 0 || (ret > 0 && *r->p != ';'))
		goto bad;
	return 0;
bad:
	buf_reset(type);
	buf_reset(sub);
	return -1;
}

static void
bs_content_type(
    const struct mime_msg *m, const struct mime_field *f, struct bs_data *d)
{
	struct buf t, st;
	struct rp r;
	int ret;

	rp_init(&r, m, f);
	buf_init(&t, 0);
	buf_init(&st, 0);
	ret = bs_ctype_parse(&r, &t, &st);
	d->type = bs_take(&t);
	d->subtype = bs_take(&st);
	if (ret == 0)
		bs_parse_params(&r, &d->params);
	buf_free(&t);
	buf_free(&st);
	rp_done(&r);
}

static void
bs_lower(const struct buf *b, char *out, size_t len)
{
	size_t i;

	for (i = 0; i < b->len && i + 1 < len; i++)
		out[i] = (char)tolower(b->data[i]);
	out[i] = '\0';
}

void
bs_ctype(const struct mime_msg *m, const struct mime_field *f, char *type,
    size_t tlen, char *sub, size_t slen, char **boundary)
{
	struct bs_params ps;
	struct buf t, st;
	struct rp r;
	size_t i;

	memset(&ps, 0, sizeof(ps));
	rp_init(&r, m, f);
	buf_init(&t, 0);
	buf_init(&st, 0);
	if (boundary != NULL)
		*boundary = NULL;
	if (bs_ctype_parse(&r, &t, &st) == 0 && boundary != NULL) {
		bs_parse_params(&r, &ps);
		for (i = 0; i < ps.n; i++) {
			if (strcasecmp(ps.v[i].name, "boundary") != 0)
				continue;
			if (ps.v[i].value[0] != '\0')
				*boundary =
				    strndup(ps.v[i].value, MIME_MAX_BOUNDARY);
			break;
		}
	}
	bs_lower(&t, type, tlen);
	bs_lower(&st, sub, slen);
	bs_params_free(&ps);
	buf_free(&t);
	buf_free(&st);
	rp_done(&r);
}

/* A single MIME token filling the value (Content-Transfer-Encoding). */
static char *
bs_encoding(const struct mime_msg *m, const struct mime_field *f)
{
	struct buf s;
	struct rp r;
	char *v = NULL;

	rp_init(&r, m, f);
	buf_init(&s, 0);
	rp_skip_lwsp(&r);
	if (rp_token(&r, &s) >= 0 && rp_skip_lwsp(&r) == 0 && s.len > 0)
		v = bs_take(&s);
	buf_free(&s);
	rp_done(&r);
	return v;
}

static void
bs_disposition(
    const struct mime_msg *m, const struct mime_field *f, struct bs_data *d)
{
	struct buf s;
	struct rp r;

	rp_init(&r, m, f);
	buf_init(&s, 0);
	rp_skip_lwsp(&r);
	if (rp_token(&r, &s) >= 0) {
		d->disp = bs_take(&s);
		bs_parse_params(&r, &d->disp_params);
	}
	buf_free(&s);
	rp_done(&r);
}

static void
bs_language(
    const struct mime_msg *m, const struct mime_field *f, struct bs_data *d)
{
	struct buf s;
	struct rp r;
	char **l;

	rp_init(&r, m, f);
	buf_init(&s, 0);
	rp_skip_lwsp(&r);
	while (rp_atom(&r, &s) >= 0) {
		if ((l = reallocarray(d->lang, d->nlang + 1, sizeof(*l))) ==
		    NULL)
			break;
		d->lang = l;
		d->lang[d->nlang++] = bs_take(&s);
		if (r.p == r.end || *r.p != ',')
			break;
		r.p++;
		rp_skip_lwsp(&r);
	}
	buf_free(&s);
	rp_done(&r);
}

/* The first of each Content-* field counts, and only in a MIME part. */
static void
bs_data_read(
    const struct mime_msg *m, const struct mime_part *part, struct bs_data *d)
{
	const struct mime_field *f;

	memset(d, 0, sizeof(*d));
	if (!part->is_mime)
		return;
	if ((f = mime_field(m, part, "Content-Type")) != NULL)
		bs_content_type(m, f, d);
	if ((f = mime_field(m, part, "Content-Transfer-Encoding")) != NULL)
		d->enc = bs_encoding(m, f);
	if ((f = mime_field(m, part, "Content-ID")) != NULL)
		d->id = bs_raw(m, f);
	if ((f = mime_field(m, part, "Content-Description")) != NULL)
		d->desc = bs_raw(m, f);
	if ((f = mime_field(m, part, "Content-MD5")) != NULL)
		d->md5 = bs_raw(m, f);
	if ((f = mime_field(m, part, "Content-Location")) != NULL)
		d->location = bs_raw(m, f);
	if ((f = mime_field(m, part, "Content-Disposition")) != NULL)
		bs_disposition(m, f, d);
	if ((f = mime_field(m, part, "Content-Language")) != NULL)
		bs_language(m, f, d);
}

static void
bs_data_free(struct bs_data *d)
{
	size_t i;

	free(d->type);
	free(d->subtype);
	bs_params_free(&d->params);
	free(d->id);
	free(d->desc);
	free(d->enc);
	free(d->md5);
	free(d->location);
	free(d->disp);
	bs_params_free(&d->disp_params);
	for (i = 0; i < d->nlang; i++)
		free(d->lang[i]);
	free(d->lang);
}

/*
 * ENVELOPE of an encapsulated message.
 */

struct bs_addr {
	char *name, *route, *mailbox, *domain;
	struct bs_addr *next;
};

struct bs_alist {
	struct bs_addr *first, *last;
	struct bs_addr cur; /* being parsed */
	struct buf s, comment;
	struct rp r;
};

static void
bs_addr_push(struct bs_alist *al)
{
	struct bs_addr *a;

	if ((a = malloc(sizeof(*a))) == NULL) {
		free(al->cur.name);
		free(al->cur.route);
		free(al->cur.mailbox);
		free(al->cur.domain);
	} else {
		*a = al->cur;
		a->next = NULL;
		if (al->last == NULL)
			al->first = a;
		else
			al->last->next = a;
		al->last = a;
	}
	memset(&al->cur, 0, sizeof(al->cur));
}

static void
bs_set(char **dst, char *v)
{
	free(*dst);
	*dst = v;
}

static int
bs_local_part(struct bs_alist *al)
{
	int ret;

	buf_reset(&al->s);
	if (*al->r.p == '"')
		ret = rp_quoted(&al->r, &al->s);
	else
		ret = rp_dot_atom(&al->r, &al->s);
	if (ret < 0)
		return -1;
	bs_set(&al->cur.mailbox, bs_take(&al->s));
	return ret;
}

static int
bs_addr_domain(struct bs_alist *al)
{
	int ret;

	buf_reset(&al->s);
	if ((ret = rp_domain(&al->r, &al->s)) < 0)
		return -1;
	bs_set(&al->cur.domain, bs_take(&al->s));
	return ret;
}

/* "@a,@b" before the ':' of a route. */
static int
bs_route(struct bs_alist *al)
{
	int ret;

	buf_reset(&al->s);
	for (;;) {
		if (al->r.p == al->r.end)
			return 0;
		if (*al->r.p != '@')
			break;
		if (al->s.len > 0)
			buf_add_u8(&al->s, ',');
		buf_add_u8(&al->s, '@');
		if ((ret = rp_domain(&al->r, &al->s)) <= 0)
			return ret;
		while (rp_skip_lwsp(&al->r) > 0 && *al->r.p == ',')
			al->r.p++;
	}
	bs_set(&al->cur.route, bs_take(&al->s));
	return 1;
}

static int
bs_angle_addr(struct bs_alist *al)
{
	/* Anything short of the closing '>' is a syntax error. */
	al->r.p++; /* '<' */
	if (rp_skip_lwsp(&al->r) <= 0)
		return -1;
	if (*al->r.p == '@') {
		if (bs_route(al) > 0 && *al->r.p == ':')
			al->r.p++;
		else {
			/* Dovecot goes on after a broken route. */
			bs_set(&al->cur.route, strdup("INVALID_ROUTE"));
			if (al->r.p == al->r.end)
				return -1;
		}
		if (rp_skip_lwsp(&al->r) <= 0)
			return -1;
	}
	/* "<>" (after a route too): no address, not a syntax error. */
	if (*al->r.p != '>') {
		if (bs_local_part(al) <= 0)
			return -1;
		if (*al->r.p == '@' && bs_addr_domain(al) <= 0)
			return -1;
	}
	if (*al->r.p != '>')
		return -1;
	al->r.p++;
	return rp_skip_lwsp(&al->r);
}

static int
bs_name_addr(struct bs_alist *al)
{
	buf_reset(&al->s);
	if (rp_phrase(&al->r, &al->s) <= 0 || *al->r.p != '<')
		return -1;
	bs_set(&al->cur.name, al->s.len ? bs_take(&al->s) : NULL);
	if (bs_angle_addr(al) < 0)
		bs_set(&al->cur.domain, strdup("SYNTAX_ERROR"));
	return al->r.p < al->r.end;
}

static int
bs_addr_spec(struct bs_alist *al)
{
	int ret, ret2 = -2, quoted = *al->r.p == '"', invalid = 0;
	size_t n;

	buf_reset(&al->comment);
	if ((ret = bs_local_part(al)) <= 0)
		invalid = 1;
	if (ret != 0 && al->r.p < al->r.end && *al->r.p == '@') {
		ret2 = bs_addr_domain(al);
		if (ret2 <= 0)
			ret = ret2;
	}
	if (al->comment.len > 0) {
		buf_add_u8(&al->comment, 0);
		bs_set(&al->cur.name, strdup((char *)al->comment.data));
	} else if (ret2 == -2) {
		/* A "user" without @domain and without a (comment) is a
		 * mailbox if nothing follows, else the start of a display
		 * name (Dovecot 2.3): the words that follow are appended to
		 * it (al->s holds what a failed local part read). */
		if (al->cur.mailbox != NULL) {
			buf_reset(&al->s);
			buf_add(
			    &al->s, al->cur.mailbox, strlen(al->cur.mailbox));
		}
		buf_add_u8(&al->s, ' ');
		n = al->s.len;
		(void)rp_phrase(&al->r, &al->s);
		if (al->s.len != n) {
			bs_set(&al->cur.mailbox, NULL);
			bs_set(&al->cur.name, bs_take(&al->s));
		} else if (!quoted)
			bs_set(&al->cur.domain, strdup(""));
		invalid = 1;
		ret = -1;
	}
	/* A broken lone word: a name, not a mailbox. */
	if (invalid && al->cur.name == NULL && al->cur.mailbox != NULL &&
	    al->cur.domain == NULL) {
		al->cur.name = al->cur.mailbox;
		al->cur.mailbox = NULL;
	}
	return ret;
}

static void
bs_addr_fixed(struct bs_alist *al)
{
	if (al->cur.mailbox == NULL)
		al->cur.mailbox = strdup("MISSING_MAILBOX");
	if (al->cur.domain == NULL || al->cur.domain[0] == '\0')
		bs_set(&al->cur.domain, strdup("MISSING_DOMAIN"));
	bs_addr_push(al);
}

static int
bs_mailbox(struct bs_alist *al)
{
	const unsigned char *start = al->r.p;
	int ret;

	if ((ret = bs_name_addr(al)) < 0) {
		al->r.p = start;
		bs_set(&al->cur.name, NULL);
		bs_set(&al->cur.route, NULL);
		bs_set(&al->cur.domain, NULL);
		ret = bs_addr_spec(al);
	}
	bs_addr_fixed(al);
	return ret;
}

static int
bs_group(struct bs_alist *al)
{
	int ret;

	buf_reset(&al->s);
	if (rp_phrase(&al->r, &al->s) <= 0 || *al->r.p != ':')
		return -1;
	/* A group from here on, whatever follows. */
	al->r.p++;
	ret = rp_skip_lwsp(&al->r);
	al->cur.mailbox = bs_take(&al->s);
	bs_addr_push(al);
	if (ret > 0 && *al->r.p != ';') {
		for (;;) {
			/* A broken mailbox: Dovecot goes on. */
			(void)bs_mailbox(al);
			if (al->r.p == al->r.end || *al->r.p != ',')
				break;
			al->r.p++;
			if (rp_skip_lwsp(&al->r) <= 0) {
				ret = -1;
				break;
			}
		}
	}
	if (ret >= 0) {
		if (al->r.p == al->r.end || *al->r.p != ';')
			ret = -1;
		else {
			al->r.p++;
			ret = rp_skip_lwsp(&al->r);
		}
	}
	bs_addr_push(al); /* end of group: all NIL */
	return ret == 0 ? 0 : 1;
}

static int
bs_address(struct bs_alist *al)
{
	const unsigned char *start = al->r.p;
	int ret;

	if ((ret = bs_group(al)) < 0) {
		al->r.p = start;
		buf_reset(&al->s);
		ret = bs_mailbox(al);
	}
	return ret;
}

static struct bs_addr *
bs_addresses(const struct mime_msg *m, const struct mime_field *f)
{
	struct bs_alist al;
	int ret;

	memset(&al, 0, sizeof(al));
	rp_init(&al.r, m, f);
	buf_init(&al.s, 0);
	buf_init(&al.comment, 0);
	al.r.comment = &al.comment;
	if (rp_skip_lwsp(&al.r) > 0) {
		for (;;) {
			if ((ret = bs_address(&al)) == 0)
				break;
			if (al.r.p == al.r.end || *al.r.p != ',')
				break;
			al.r.p++;
			if ((ret = rp_skip_lwsp(&al.r)) <= 0) {
				if (ret < 0)
					bs_addr_fixed(&al);
				break;
			}
		}
	}
	buf_free(&al.s);
	buf_free(&al.comment);
	rp_done(&al.r);
	return al.first;
}

static void
bs_addrs_free(struct bs_addr *a)
{
	struct bs_addr *next;

	for (; a != NULL; a = next) {
		next = a->next;
		free(a->name);
		free(a->route);
		free(a->mailbox);
		free(a->domain);
		free(a);
	}
}

static void
bs_write_addrs(struct buf *o, const struct bs_addr *a)
{
	if (a == NULL) {
		buf_add(o, "NIL", 3);
		return;
	}
	buf_add_u8(o, '(');
	for (; a != NULL; a = a->next) {
		buf_add_u8(o, '(');
		if (a->name == NULL)
			buf_add(o, "NIL", 3);
		else
			bs_human(
			    o, (const unsigned char *)a->name, strlen(a->name));
		buf_add_u8(o, ' ');
		bs_nstring(o, a->route);
		buf_add_u8(o, ' ');
		bs_nstring(o, a->mailbox);
		buf_add_u8(o, ' ');
		bs_nstring(o, a->domain);
		buf_add_u8(o, ')');
	}
	buf_add_u8(o, ')');
}

static int
bs_field_is(const struct mime_msg *m, const struct mime_field *f,
    const char *name, size_t n)
{
	return f->name_len == n &&
	       strncasecmp((const char *)m->data + f->off, name, n) == 0;
}

/* Of a string, the last field of that name wins, as in Dovecot's
 * envelope parser. */
static const struct mime_field *
bs_last_field(
    const struct mime_msg *m, const struct mime_part *part, const char *name)
{
	const struct mime_field *found = NULL;
	size_t i, n = strlen(name);

	for (i = 0; i < part->nfields; i++)
		if (bs_field_is(m, &part->fields[i], name, n))
			found = &part->fields[i];
	return found;
}

/* Of addresses, every field of that name counts: their lists are
 * appended, in message order (Dovecot 2.3). */
static struct bs_addr *
bs_env_alist(
    const struct mime_msg *m, const struct mime_part *part, const char *name)
{
	struct bs_addr *first = NULL, **tail = &first;
	size_t i, n = strlen(name);

	for (i = 0; i < part->nfields; i++) {
		if (!bs_field_is(m, &part->fields[i], name, n))
			continue;
		*tail = bs_addresses(m, &part->fields[i]);
		while (*tail != NULL)
			tail = &(*tail)->next;
	}
	return first;
}

static void
bs_env_string(struct buf *o, const struct mime_msg *m,
    const struct mime_part *part, const char *name)
{
	const struct mime_field *f = bs_last_field(m, part, name);
	char *v;

	if (f == NULL || (v = bs_raw(m, f)) == NULL) {
		buf_add(o, "NIL", 3);
		return;
	}
	bs_nstring_nolf(o, v);
	free(v);
}

/* Sender and Reply-To with no address (absent, or empty) are From. */
static void
bs_env_addrs(struct buf *o, const struct mime_msg *m,
    const struct mime_part *part, const char *name, const char *dflt)
{
	struct bs_addr *a = bs_env_alist(m, part, name);

	if (a == NULL && dflt != NULL)
		a = bs_env_alist(m, part, dflt);
	bs_write_addrs(o, a);
	bs_addrs_free(a);
}

static void
bs_envelope(
    struct buf *o, const struct mime_msg *m, const struct mime_part *msgpart)
{
	const struct mime_field *subj;
	size_t n;
	char *v;

	buf_add_u8(o, '(');
	bs_env_string(o, m, msgpart, "Date");
	buf_add_u8(o, ' ');
	subj = bs_last_field(m, msgpart, "Subject");
	if (subj == NULL || (v = bs_value(m, subj, &n)) == NULL)
		buf_add(o, "NIL", 3);
	else {
		bs_human(o, (const unsigned char *)v, n);
		free(v);
	}
	buf_add_u8(o, ' ');
	bs_env_addrs(o, m, msgpart, "From", NULL);
	buf_add_u8(o, ' ');
	bs_env_addrs(o, m, msgpart, "Sender", "From");
	buf_add_u8(o, ' ');
	bs_env_addrs(o, m, msgpart, "Reply-To", "From");
	buf_add_u8(o, ' ');
	bs_env_addrs(o, m, msgpart, "To", NULL);
	buf_add_u8(o, ' ');
	bs_env_addrs(o, m, msgpart, "Cc", NULL);
	buf_add_u8(o, ' ');
	bs_env_addrs(o, m, msgpart, "Bcc", NULL);
	buf_add_u8(o, ' ');
	bs_env_string(o, m, msgpart, "In-Reply-To");
	buf_add_u8(o, ' ');
	bs_env_string(o, m, msgpart, "Message-ID");
	buf_add_u8(o, ')');
}

/*
 * The structure.
 */

#define BS_EMPTY_BODY \
	"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0"
#define BS_CHARSET "\"charset\" \"us-ascii\""

static void bs_part(
    struct buf *, const struct mime_msg *, const struct mime_part *, int ext);

static void
bs_params_write(struct buf *o, const struct bs_params *ps, int charset)
{
	size_t i;
	int seen = 0;

	if (!charset && ps->n == 0) {
		buf_add(o, "NIL", 3);
		return;
	}
	buf_add_u8(o, '(');
	for (i = 0; i < ps->n; i++) {
		if (i > 0)
			buf_add_u8(o, ' ');
		if (strcasecmp(ps->v[i].name, "charset") == 0)
			seen = 1;
		bs_string(o, ps->v[i].name);
		buf_add_u8(o, ' ');
		bs_string(o, ps->v[i].value);
	}
	if (charset && !seen) {
		if (i > 0)
			buf_add_u8(o, ' ');
		buf_add(o, BS_CHARSET, strlen(BS_CHARSET));
	}
	buf_add_u8(o, ')');
}

/* disposition, language, location */
static void
bs_ext_common(struct buf *o, const struct bs_data *d)
{
	size_t i;

	buf_add_u8(o, ' ');
	if (d->disp == NULL)
		buf_add(o, "NIL", 3);
	else {
		buf_add_u8(o, '(');
		bs_string(o, d->disp);
		buf_add_u8(o, ' ');
		bs_params_write(o, &d->disp_params, 0);
		buf_add_u8(o, ')');
	}
	buf_add_u8(o, ' ');
	if (d->nlang == 0)
		buf_add(o, "NIL", 3);
	else {
		buf_add_u8(o, '(');
		for (i = 0; i < d->nlang; i++) {
			if (i > 0)
				buf_add_u8(o, ' ');
			bs_string(o, d->lang[i]);
		}
		buf_add_u8(o, ')');
	}
	buf_add_u8(o, ' ');
	bs_nstring_nolf(o, d->location);
}

static void
bs_multipart(struct buf *o, const struct mime_msg *m,
    const struct mime_part *part, const struct bs_data *d, int ext)
{
	const struct mime_part *c;

	for (c = part->children; c != NULL; c = c->next) {
		buf_add_u8(o, '(');
		bs_part(o, m, c, ext);
		buf_add_u8(o, ')');
	}
	if (part->children == NULL) {
		/* A multipart without parts: one empty text part. */
		buf_add(o, BS_EMPTY_BODY, strlen(BS_EMPTY_BODY));
		if (ext)
			buf_add(o, " NIL NIL NIL NIL", 16);
		buf_add_u8(o, ')');
	}
	buf_add_u8(o, ' ');
	bs_string(o, d->subtype != NULL ? d->subtype : "");
	if (!ext)
		return;
	buf_add_u8(o, ' ');
	bs_params_write(o, &d->params, 0);
	bs_ext_common(o, d);
}

static void
bs_single(struct buf *o, const struct mime_msg *m, const struct mime_part *part,
    const struct bs_data *d, int ext)
{
	int text;

	if (part->kind == MIME_MESSAGE) {
		buf_add(o, "\"message\" \"rfc822\"", 18);
		text = 0;
	} else if (d->type == NULL) {
		buf_add(o, "\"text\" \"plain\"", 14);
		text = 1;
	} else {
		text = strcasecmp(d->type, "text") == 0;
		bs_string(o, d->type);
		buf_add_u8(o, ' ');
		bs_string(o, d->subtype != NULL ? d->subtype : "");
	}
	buf_add_u8(o, ' ');
	bs_params_write(o, &d->params, text);
	buf_add_u8(o, ' ');
	bs_nstring_nolf(o, d->id);
	buf_add_u8(o, ' ');
	bs_nstring_nolf(o, d->desc);
	buf_add_u8(o, ' ');
	if (d->enc != NULL)
		bs_string(o, d->enc);
	else
		buf_add(o, "\"7bit\"", 6);
	buf_printf(o, " %zu", part->body_end - part->body_off);
	if (text)
		buf_printf(o, " %u", mime_lines(m, part));
	else if (part->kind == MIME_MESSAGE && part->children != NULL) {
		buf_add_u8(o, ' ');
		bs_envelope(o, m, part->children);
		buf_add(o, " (", 2);
		bs_part(o, m, part->children, ext);
		buf_printf(o, ") %u", mime_lines(m, part));
	}
	if (!ext)
		return;
	buf_add_u8(o, ' ');
	bs_nstring_nolf(o, d->md5);
	bs_ext_common(o, d);
}

static void
bs_part(struct buf *o, const struct mime_msg *m, const struct mime_part *part,
    int ext)
{
	struct bs_data d;

	bs_data_read(m, part, &d);
	if (part->kind == MIME_MULTIPART)
		bs_multipart(o, m, part, &d, ext);
	else
		bs_single(o, m, part, &d, ext);
	bs_data_free(&d);
}

int
bs_write(const struct mime_msg *m, int ext, struct buf *o)
{
	size_t start = o->len;

	if (m->root == NULL)
		return -1;
	buf_add_u8(o, '(');
	bs_part(o, m, m->root, ext);
	if (buf_add_u8(o, ')') == -1) {
		o->len = start;
		return -1;
	}
	return 0;
}

int
bs_envelope_write(const struct mime_msg *m, struct buf *o)
{
	size_t start = o->len;

	if (m->root == NULL)
		return -1;
	bs_envelope(o, m, m->root);
	/* Its closing parenthesis is the last byte written. */
	if (o->len == start || o->data[o->len - 1] != ')') {
		o->len = start;
		return -1;
	}
	return 0;
}
