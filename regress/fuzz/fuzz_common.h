/*
 * Shared parts of the libFuzzer harnesses for netd/imap_parse.c.
 *
 * Input layout: the first byte selects the mode, the rest is the line.
 *
 *   mode & 0x80 == 0	"derived": every literal marker the line has
 *			("{n}", "{n+}", "~{n}" + CRLF or LF, payload in the
 *			line) whose bit is set in mode (marker k: bit k % 7)
 *			is spooled, i.e. its payload is taken out of the
 *			buffer and described in the spool table, as the
 *			engine would do.  The line is parsed both inline
 *			and spooled: the two parses must agree (result,
 *			kind, counts), since the parser never looks at
 *			payload.
 *   mode & 0x80 != 0	"raw": the next (mode & 3) * 3 bytes are spool
 *			entries (at: 2 bytes, len: 1 byte) taken as they
 *			are, mostly invalid, to exercise the table checks.
 *
 * On success every span, literal and string must lie inside the buffer
 * and be consistent with the spool table; any violation aborts.
 */
#ifndef IMAPGW_FUZZ_COMMON_H
#define IMAPGW_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_parse.h"

#define FUZZ_MAXLINE 65536
#define FUZZ_MAXSPOOL 64

#define FUZZ_ASSERT(c)                                                   \
	do {                                                             \
		if (!(c)) {                                              \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", \
			    __FILE__, __LINE__, #c);                     \
			abort();                                         \
		}                                                        \
	} while (0)

struct fuzz_line {
	const uint8_t *buf;
	size_t len;
	struct imap_spool sp[FUZZ_MAXSPOOL];
	size_t nsp;
};

/* A marker at i: its end (after LF) in *q and its size in *n. */
static inline int
fuzz_marker(const uint8_t *b, size_t len, size_t i, size_t *q, uint64_t *n)
{
	uint64_t v = 0;
	unsigned nd = 0;

	if (i < len && b[i] == '~')
		i++;
	if (i >= len || b[i] != '{')
		return 0;
	i++;
	while (i < len && b[i] >= '0' && b[i] <= '9') {
		if (++nd > 20 || v > (UINT64_MAX - (b[i] - '0')) / 10)
			return 0;
		v = v * 10 + (b[i] - '0');
		i++;
	}
	if (nd == 0)
		return 0;
	if (i < len && b[i] == '+')
		i++;
	if (i >= len || b[i] != '}')
		return 0;
	i++;
	if (i < len && b[i] == '\r')
		i++;
	if (i >= len || b[i] != '\n')
		return 0;
	*q = i + 1;
	*n = v;
	return 1;
}

/*
 * Copy in to out without the payloads of the markers selected by mask and
 * fill the spool table; returns the number spooled.
 */
static inline size_t
fuzz_derive(const uint8_t *in, size_t len, unsigned mask, uint8_t *out,
    struct fuzz_line *l)
{
	size_t i = 0, o = 0, q;
	uint64_t n;
	unsigned k = 0;

	l->nsp = 0;
	while (i < len) {
		if (fuzz_marker(in, len, i, &q, &n) && n <= len - q) {
			memcpy(out + o, in + i, q - i);
			o += q - i;
			if ((mask >> (k++ % 7)) & 1 && l->nsp < FUZZ_MAXSPOOL) {
				l->sp[l->nsp].at = o;
				l->sp[l->nsp++].len = n;
			} else {
				memcpy(out + o, in + q, (size_t)n);
				o += (size_t)n;
			}
			i = q + (size_t)n;
			continue;
		}
		out[o++] = in[i++];
	}
	l->buf = out;
	l->len = o;
	return l->nsp;
}

static inline void
fuzz_span(const struct fuzz_line *l, struct imap_span s)
{
	FUZZ_ASSERT(s.off <= l->len && s.len <= l->len - s.off);
}

static inline void
fuzz_str(const struct fuzz_line *l, const struct imap_str *s)
{
	char tmp[64];

	if (s->kind == IMAP_STR_NONE)
		return;
	fuzz_span(l, s->tok);
	if (s->kind == IMAP_STR_LITERAL && s->spool >= 0) {
		FUZZ_ASSERT((size_t)s->spool < l->nsp);
		FUZZ_ASSERT(l->sp[s->spool].at == s->data);
		FUZZ_ASSERT(l->sp[s->spool].len == s->len);
		FUZZ_ASSERT(s->tok.off + s->tok.len == s->data);
	} else {
		FUZZ_ASSERT(s->data >= s->tok.off);
		FUZZ_ASSERT(s->data <= l->len && s->len <= l->len - s->data);
		FUZZ_ASSERT(s->data + s->len <= s->tok.off + s->tok.len);
	}
	(void)imap_str_eq(l->buf, s, "INBOX");
	(void)imap_str_copy(l->buf, s, tmp, sizeof(tmp));
}

static inline void
fuzz_lits(const struct fuzz_line *l, unsigned nlit, int over,
    const struct imap_lit *lit)
{
	unsigned i, n = nlit < IMAP_MAX_LITS ? nlit : IMAP_MAX_LITS;
	size_t prev = 0;

	FUZZ_ASSERT(!over == !(nlit > IMAP_MAX_LITS));
	for (i = 0; i < n; i++) {
		FUZZ_ASSERT(lit[i].off >= prev);
		FUZZ_ASSERT(lit[i].off + lit[i].mlen <= l->len);
		if (lit[i].spool >= 0) {
			FUZZ_ASSERT((size_t)lit[i].spool < l->nsp);
			FUZZ_ASSERT(
			    l->sp[lit[i].spool].at == lit[i].off + lit[i].mlen);
			prev = lit[i].off + lit[i].mlen;
		} else {
			FUZZ_ASSERT(
			    lit[i].len <= l->len - lit[i].off - lit[i].mlen);
			prev = lit[i].off + lit[i].mlen + lit[i].len;
		}
	}
}

/*
 * Lexing a span the parser accepted cannot fail; returns the number of
 * spooled literals seen, each consistent with the table.
 */
static inline unsigned
fuzz_lex(const struct fuzz_line *l, struct imap_span w)
{
	struct imap_lexer lx;
	struct imap_tok t;
	unsigned nsp = 0;
	size_t last = w.off;
	int rc;

	imap_lex_init(&lx, l->buf, l->len, l->sp, l->nsp, w);
	while ((rc = imap_lex_next(&lx, &t)) == 1) {
		fuzz_span(l, t.span);
		FUZZ_ASSERT(t.span.off >= last && t.span.len > 0);
		FUZZ_ASSERT(t.span.off + t.span.len <= w.off + w.len);
		last = t.span.off + t.span.len;
		if (t.kind == IMAP_TOK_STRING || t.kind == IMAP_TOK_ATOM ||
		    t.kind == IMAP_TOK_NIL)
			fuzz_str(l, &t.str);
		if (t.kind == IMAP_TOK_STRING && t.str.spool >= 0)
			nsp++;
	}
	if (rc != 0) {
		fprintf(stderr, "lexer: %s\n", lx.err);
		abort();
	}
	return nsp;
}

static inline void
fuzz_section(const struct fuzz_line *l, const struct imap_fatt *a)
{
	fuzz_span(l, a->name);
	fuzz_span(l, a->args);
	if (a->has_section) {
		fuzz_span(l, a->sect.span);
		fuzz_span(l, a->sect.parts);
		fuzz_span(l, a->sect.fields);
		FUZZ_ASSERT(a->sect.npart <= IMAP_MAX_PARTS);
	}
}

static inline void
fuzz_check_cmd(const struct fuzz_line *l, const struct imap_cmd *c)
{
	unsigned i;

	fuzz_span(l, c->tag);
	fuzz_span(l, c->name);
	fuzz_span(l, c->subname);
	fuzz_span(l, c->args);
	fuzz_span(l, c->seqset);
	fuzz_span(l, c->mech);
	fuzz_span(l, c->ir);
	fuzz_str(l, &c->mailbox);
	fuzz_str(l, &c->mailbox2);
	fuzz_str(l, &c->user);
	FUZZ_ASSERT(c->id.npair <= IMAP_MAX_ID);
	for (i = 0; i < c->id.npair; i++) {
		fuzz_str(l, &c->id.pair[i].key);
		fuzz_str(l, &c->id.pair[i].val);
		fuzz_span(l, c->id.pair[i].pair);
	}
	FUZZ_ASSERT(c->nmsg <= IMAP_MAX_APPEND);
	for (i = 0; i < c->nmsg; i++) {
		fuzz_span(l, c->msg[i].msg);
		fuzz_span(l, c->msg[i].flags);
		fuzz_span(l, c->msg[i].ext);
		fuzz_str(l, &c->msg[i].date);
		fuzz_str(l, &c->msg[i].data);
		FUZZ_ASSERT(c->msg[i].catenate ||
		            c->msg[i].data.kind == IMAP_STR_LITERAL);
	}
	if (c->kind == IMAP_CMD_APPEND)
		FUZZ_ASSERT(c->nmsg >= 1);
	FUZZ_ASSERT(c->fetch.natt <= IMAP_MAX_FETCH);
	if (c->kind == IMAP_CMD_FETCH)
		FUZZ_ASSERT(c->fetch.natt >= 1);
	for (i = 0; i < c->fetch.natt; i++)
		fuzz_section(l, &c->fetch.att[i]);
	fuzz_span(l, c->fetch.atts);
	fuzz_span(l, c->fetch.modifiers);
	fuzz_lits(l, c->nlit, c->lit_overflow, c->lit);
	(void)fuzz_lex(l, c->args);
}

static inline void
fuzz_check_resp(const struct fuzz_line *l, const struct imap_resp *r)
{
	struct imap_span cut;
	size_t end = 0;
	unsigned i;

	fuzz_span(l, r->tag);
	fuzz_span(l, r->name);
	fuzz_span(l, r->args);
	fuzz_span(l, r->text);
	fuzz_span(l, r->code.span);
	fuzz_span(l, r->code.name);
	fuzz_span(l, r->code.args);
	fuzz_span(l, r->caps);
	FUZZ_ASSERT(r->ncap <= IMAP_MAX_CAPS);
	for (i = 0; i < r->ncap; i++) {
		fuzz_span(l, r->cap[i]);
		FUZZ_ASSERT(r->cap[i].len > 0);
		FUZZ_ASSERT(r->cap[i].off >= r->caps.off);
		FUZZ_ASSERT(
		    r->cap[i].off + r->cap[i].len <= r->caps.off + r->caps.len);
	}
	FUZZ_ASSERT(r->id.npair <= IMAP_MAX_ID);
	for (i = 0; i < r->id.npair; i++) {
		fuzz_str(l, &r->id.pair[i].key);
		fuzz_str(l, &r->id.pair[i].val);
	}
	FUZZ_ASSERT(r->fetch.nitem <= IMAP_MAX_FETCH);
	if (r->kind == IMAP_RESP_FETCH) {
		FUZZ_ASSERT(r->fetch.nitem >= 1);
		fuzz_span(l, r->fetch.list);
		end = r->fetch.list.off + 1;
	}
	for (i = 0; i < r->fetch.nitem; i++) {
		const struct imap_item *it = &r->fetch.item[i];

		fuzz_section(l, &it->att);
		fuzz_span(l, it->item);
		fuzz_span(l, it->val);
		fuzz_str(l, &it->str);
		/* items in order, SP separated, value at the item's end */
		FUZZ_ASSERT(it->item.off == end + (i > 0));
		FUZZ_ASSERT(it->att.name.off == it->item.off);
		FUZZ_ASSERT(
		    it->val.off == it->att.name.off + it->att.name.len + 1);
		FUZZ_ASSERT(
		    it->val.off + it->val.len == it->item.off + it->item.len);
		FUZZ_ASSERT(it->spool_first >= 0 &&
		            (size_t)it->spool_first + it->nspool <= l->nsp);
		if (it->str.kind != IMAP_STR_NONE) {
			FUZZ_ASSERT(it->str.tok.off == it->val.off);
			FUZZ_ASSERT(it->str.tok.len == it->val.len);
		}
		end = it->item.off + it->item.len;
		FUZZ_ASSERT(fuzz_lex(l, it->val) == it->nspool);
		FUZZ_ASSERT(imap_item_cut(r, i, &cut) == 0);
		fuzz_span(l, cut);
	}
	if (r->kind == IMAP_RESP_FETCH) {
		/* ")" or " )" after the last item */
		FUZZ_ASSERT(end + 1 == r->fetch.list.off + r->fetch.list.len ||
		            (end + 2 == r->fetch.list.off + r->fetch.list.len &&
		                l->buf[end] == ' '));
	}
	fuzz_lits(l, r->nlit, r->lit_overflow, r->lit);
	/* raw data arguments were validated as values */
	if (r->kind != IMAP_RESP_CONT && r->kind != IMAP_RESP_TAGGED &&
	    r->kind != IMAP_RESP_COND && r->kind != IMAP_RESP_CAPABILITY)
		(void)fuzz_lex(l, r->args);
}

/* The capability filter: bounded output, allowed atoms, idempotent. */
static inline void
fuzz_capf(const char *in, size_t len, unsigned flags)
{
	static char out[FUZZ_MAXLINE + 64], again[FUZZ_MAXLINE + 64];
	struct imap_capf pol;
	ssize_t n, m;
	size_t i, s;

	pol.flags = flags & 0x0f;
	pol.max_size = (flags & 0x10) ? 0 : (flags & 0x20) ? 5 : 1000000;
	n = imap_capability_filter(in, len, out, len + 40, &pol);
	FUZZ_ASSERT(n >= 0 && (size_t)n < len + 40);
	FUZZ_ASSERT(out[n] == '\0' && strlen(out) == (size_t)n);
	for (i = 0; i < (size_t)n;) {
		s = i;
		while (i < (size_t)n && out[i] != ' ')
			i++;
		FUZZ_ASSERT(i > s);
		FUZZ_ASSERT(imap_capability_allowed(out + s, i - s, &pol));
		i++;
	}
	m = imap_capability_filter(out, (size_t)n, again, sizeof(again), &pol);
	FUZZ_ASSERT(m == n && memcmp(out, again, (size_t)n) == 0);
	/* a too small buffer fails cleanly */
	if (n > 0)
		FUZZ_ASSERT(imap_capability_filter(
		                in, len, again, (size_t)n, &pol) == -1);
}

#endif
