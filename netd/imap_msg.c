/*
 * Messages that cross the gateway.
 *
 * FETCH: a whole-message item (BODY[], BODY.PEEK[], RFC822, BINARY[]) is
 * spooled while it arrives, the response waits in the client's queue
 * behind a hold, scand judges the message, and the response goes out
 * with the sanitized literal at its exact new length, RFC822.SIZE,
 * BODYSTRUCTURE, BODY and BINARY.SIZE[] of the same response describing
 * the sanitized message.  A clean message goes out byte for byte.
 *
 * APPEND: the gateway answers the client's continuations itself, spools
 * each message up to max_email_size, has it judged, and only then sends
 * the command upstream: with "{n+}" when the server offers LITERAL+, else
 * one literal at a time after each of the server's continuations.  A
 * rejected upload gets a tagged NO and nothing reaches the server.
 *
 * A scan that fails (no scanner, scanner died, timeout, garbage) is never
 * taken as clean: the action's on_error applies.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "imap_parse.h"
#include "log.h"
#include "consist.h"
#include "cutcache.h"
#include "scanreq.h"
#include "session.h"
#include "vcache.h"

#define FETCH_MAX_PARTS 8
#define FETCH_MAX_EDITS 32
#define SESSION_MAX_FETCH_JOBS 4 /* responses waiting for verdicts */
#define SECT_SPEC_BUDGET 12000 /* section specs in one SCAN_REQ frame */

struct fetch_job;

struct fetch_part {
	struct fetch_job *job;
	struct scan_req *req;
	int done;
	int oversize; /* discarded for its size */
	int virt; /* stands for the message: no literal of its own */
	uint64_t len; /* bytes of the literal */
	struct scan_result res;
	struct imap_span val;
};

struct fetch_job {
	struct fetch_job *next;
	struct session *s;
	struct lineasm la;
	struct oq_ent *hold;
	uint32_t msgno;
	unsigned nparts, pending;
	int has_size, has_bs, has_body, has_env;
	struct imap_span size_val, bs_val, body_val, env_val;
	int cutmode; /* answered from a message sanitized before */
	int remember; /* strict: the verdict goes to the cache */
	uint32_t uid;
	uint64_t size;
	uint8_t sha[32];
	unsigned nbinsize;
	struct imap_span binsize_val[4];
	/* Section items answered from the sanitized message if it changes:
	 * the request to scand lists them in this order. */
	unsigned nsect;
	struct jsect {
		struct imap_span val;
		int size_only; /* BINARY.SIZE[n]: the decoded length */
		int has_partial;
		uint64_t origin, count;
	} sect[SCAN_MAX_SECT];
	/* nsect of them, grown as needed: a spec is 1 KiB and most
	 * responses have one section or none */
	struct scan_section *req;
	unsigned reqcap;
	size_t specbytes; /* the request must fit one frame */
	int has_cut; /* the BODY.PEEK[] the gateway added: cut */
	struct imap_span cut;
	int ckey_ok; /* cut answers go to the cut cache under ckey */
	uint8_t ckey[32];
	/* Last and not zeroed with the rest (2.8 KiB each): a part is
	 * cleared when it is added (job_part). */
	struct fetch_part part[FETCH_MAX_PARTS];
};

struct append_msg {
	struct append_job *job;
	struct scan_req *req;
	int done;
	struct scan_result res;
	size_t mark_off, mark_len; /* "{n}\r\n" */
	int spool; /* index, or -1 inline */
	size_t data; /* inline payload offset */
	uint64_t len;
	unsigned flags;
};

struct append_job {
	struct session *s;
	struct lineasm la;
	char tag[64];
	unsigned nmsg, pending;
	struct append_msg msg[IMAP_MAX_APPEND];
	int sending; /* upstream, one literal per continuation */
	int forwarded; /* judged and handed on */
	unsigned next; /* next literal to send after "+" */
	size_t textpos; /* text sent so far */
};

static struct fcmd *fcmd_current(struct session *);

static int
av_on(const struct session *s)
{
	return s->act->antivirus.enabled;
}

/* Item names */

/* The token before " {n}" at the end of text: the FETCH item name. */
static int
item_before_literal(const struct buf *t, char *name, size_t namelen)
{
	const char *p = (const char *)buf_head(t);
	size_t n = buf_used(t), end, start;

	while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'))
		n--;
	if (n == 0 || p[n - 1] != '}')
		return -1;
	while (n > 0 && p[n - 1] != '{')
		n--;
	if (n == 0)
		return -1;
	n--; /* at '{' */
	if (n > 0 && p[n - 1] == '~')
		n--;
	if (n == 0 || p[n - 1] != ' ')
		return -1;
	end = --n;
	start = end;
	while (start > 0 && p[start - 1] != ' ' && p[start - 1] != '(')
		start--;
	if (end - start >= namelen)
		return -1;
	memcpy(name, p + start, end - start);
	name[end - start] = '\0';
	return 0;
}

static int
is_fetch_line(const struct buf *t)
{
	const char *p = (const char *)buf_head(t);
	size_t n = buf_used(t), i = 2;

	if (n < 10 || p[0] != '*' || p[1] != ' ')
		return 0;
	while (i < n && isdigit((unsigned char)p[i]))
		i++;
	return i > 2 && i + 7 <= n && strncasecmp(p + i, " FETCH (", 8) == 0;
}

/* BODY[], BODY.PEEK[] (answered as BODY[]), RFC822, BINARY[]: no
 * section, no partial. */
static int
whole_message_name(const char *name)
{
	return strcasecmp(name, "BODY[]") == 0 ||
	       strcasecmp(name, "RFC822") == 0 ||
	       strcasecmp(name, "BINARY[]") == 0;
}

static int
whole_message_item(const struct imap_item *it)
{
	const struct imap_fatt *a = &it->att;

	if (a->kind == IMAP_FA_RFC822)
		return 1;
	if (a->kind != IMAP_FA_BODY_SECTION && a->kind != IMAP_FA_BINARY)
		return 0;
	return a->has_section && a->sect.npart == 0 &&
	       a->sect.text == IMAP_SECT_NONE && !a->has_partial;
}

/* The message as stored: BODY[], BODY.PEEK[], RFC822 (not BINARY[],
 * which is decoded). */
static int
stored_whole_item(const struct imap_item *it)
{
	return whole_message_item(it) && it->att.kind != IMAP_FA_BINARY;
}

int
line_is_append(const struct lineasm *la)
{
	char verb[16];

	line_verb(la, verb, sizeof(verb));
	return strcasecmp(verb, "APPEND") == 0 ||
	       strcasecmp(verb, "REPLACE") == 0;
}

enum lit_mode
msg_literal_mode(struct session *s, struct dir *d, uint64_t n)
{
	char name[64];

	if (d == &s->c) {
		if (!s->append_line && !d->la.streamed &&
		    line_is_append(&d->la))
			s->append_line = 1;
		if (!s->append_line)
			return LIT_STREAM;
		if (n > s->act->general.max_email_size)
			return LIT_DISCARD;
		return LIT_SPOOL;
	}
	if (!is_fetch_line(&d->la.text) ||
	    item_before_literal(&d->la.text, name, sizeof(name)) == -1)
		return LIT_STREAM;
	/* The gateway's own fetch: never the client's to see. */
	if (consist_own_body(s))
		return !whole_message_name(name) ||
		               n > s->act->general.max_email_size
		           ? LIT_DISCARD
		           : LIT_SPOOL;
	if (!whole_message_name(name))
		return fcmd_current(s) && fcmd_current(s)->judged &&
		               n <= s->act->general.max_email_size
		           ? LIT_SPOOL
		           : LIT_STREAM;
	if (n > s->act->general.max_email_size) {
		if (s->act->general.oversize == ACT_ALLOW) {
			log_event(LOG_NOTICE, "oversize", "client", s->client,
			    "user", s->user, "action", "allow", "note",
			    "passed unscanned", NULL);
			return LIT_STREAM;
		}
		return LIT_DISCARD;
	}
	return av_on(s) ? LIT_SPOOL : LIT_STREAM;
}

/* Edits and emission */

static void
edit_add(struct edit *ed, size_t *ned, struct imap_span sp, char *bytes,
    size_t blen, int fd, uint64_t foff, uint64_t flen)
{
	if (*ned == FETCH_MAX_EDITS) {
		free(bytes);
		return;
	}
	ed[*ned].off = sp.off;
	ed[*ned].len = sp.len;
	ed[*ned].bytes = bytes;
	ed[*ned].blen = blen;
	ed[*ned].fd = fd;
	ed[*ned].foff = foff;
	ed[*ned].flen = flen;
	(*ned)++;
}

/* The response without one item (the UID the gateway added). */
static void
emit_cut(struct session *s, struct lineasm *la, struct imap_span cut)
{
	struct edit ed = {cut.off, cut.len, NULL, 0, -1, 0, 0};

	outq_line_edits(&s->to_c.q, NULL, la, &ed, 1);
}

static char *
xprintf(size_t *len, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("vasprintf");
	*len = (size_t)n;
	return s;
}

static char *
fd_string(int fd, uint64_t off, uint64_t len, size_t *outlen)
{
	char *s;

	if ((s = malloc(len + 1)) == NULL)
		fatal("malloc");
	if (len && pread(fd, s, len, (off_t)off) != (ssize_t)len) {
		free(s);
		return NULL;
	}
	s[len] = '\0';
	*outlen = len;
	return s;
}

/*
 * netd's own deny message, for when scand could not produce one (scan
 * error with on_error deny, oversize deny).  Plain, deterministic, and its
 * BODYSTRUCTURE is computed here.
 */
struct denymsg {
	char *msg;
	size_t len;
	unsigned lines;
};

static void
deny_make(struct session *s, const char *reason, struct denymsg *dm)
{
	const char *tmpl = s->act->deny_message ? s->act->deny_message : "";
	struct buf b;
	const char *p;

	buf_init(&b, 0);
	buf_printf(&b, "Subject: [imapgw] message withheld\r\n"
	               "MIME-Version: 1.0\r\n"
	               "Content-Type: text/plain; charset=utf-8\r\n"
	               "Content-Transfer-Encoding: 8bit\r\n\r\n");
	for (p = tmpl; *p; p++) {
		if (strncmp(p, "%(reason)%", 10) == 0) {
			buf_printf(&b, "%s", reason);
			p += 9;
		} else if (*p == '\n' && (p == tmpl || p[-1] != '\r'))
			buf_printf(&b, "\r\n");
		else if (strncmp(p, "%(", 2) == 0 && strstr(p, ")%")) {
			p = strstr(p, ")%") + 1; /* unknown here: empty */
		} else
			buf_add_u8(&b, (uint8_t)*p);
	}
	if (buf_used(&b) < 2 || memcmp(buf_tail(&b) - 2, "\r\n", 2) != 0)
		buf_printf(&b, "\r\n");
	dm->len = buf_used(&b);
	dm->msg = malloc(dm->len);
	if (dm->msg == NULL)
		fatal("malloc");
	memcpy(dm->msg, buf_head(&b), dm->len);
	buf_free(&b);
	dm->lines = 0;
	p = (const char *)memmem(dm->msg, dm->len, "\r\n\r\n", 4) + 4;
	for (; p < dm->msg + dm->len; p++)
		if (*p == '\n')
			dm->lines++;
}

static size_t
deny_body_octets(const struct denymsg *dm)
{
	const char *p =
	    (const char *)memmem(dm->msg, dm->len, "\r\n\r\n", 4) + 4;

	return dm->len - (size_t)(p - dm->msg);
}

/* FETCH commands */

/* The bytes between a section's brackets, or RFC822.TEXT/HEADER's. */
static void
att_spec(const uint8_t *b, const struct imap_fatt *a, char *out, size_t outlen)
{
	size_t n;

	if (a->kind == IMAP_FA_RFC822_TEXT ||
	    a->kind == IMAP_FA_RFC822_HEADER) {
		snprintf(out, outlen, "%s",
		    a->kind == IMAP_FA_RFC822_TEXT ? "TEXT" : "HEADER");
		return;
	}
	n = a->sect.span.len >= 2 ? a->sect.span.len - 2 : 0;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, b + a->sect.span.off + 1, n);
	out[n] = '\0';
}

/*
 * Message bytes reached other than as the whole message: sections
 * (headers too: a denied message has other headers than the original, and
 * a client that fetches header and text apart must get one message),
 * partial fetches, RFC822.TEXT and RFC822.HEADER.
 */
static int
content_att(const struct imap_fatt *a)
{
	switch (a->kind) {
	case IMAP_FA_RFC822_TEXT:
	case IMAP_FA_RFC822_HEADER:
		return 1;
	case IMAP_FA_BINARY:
	case IMAP_FA_BINARY_SIZE:
		return a->sect.npart > 0 || a->has_partial;
	case IMAP_FA_BODY_SECTION:
		return !(a->sect.npart == 0 && a->sect.text == IMAP_SECT_NONE &&
		         !a->has_partial);
	default:
		return 0;
	}
}

static int
whole_att(const struct imap_fatt *a)
{
	if (a->kind == IMAP_FA_RFC822)
		return 1;
	return (a->kind == IMAP_FA_BODY_SECTION || a->kind == IMAP_FA_BINARY) &&
	       a->sect.npart == 0 && a->sect.text == IMAP_SECT_NONE &&
	       !a->has_partial;
}

static struct fcmd *
fcmd_current(struct session *s)
{
	return s->nfcmd ? &s->fcmds[0] : NULL;
}

/*
 * A FETCH from the client.  When it reaches message content other than
 * through a whole-message item (BODY[TEXT], BODY[2], BINARY[1],
 * RFC822.TEXT, partial fetches), the gateway adds BODY.PEEK[] so the
 * same response brings the whole message: it is judged, the sections are
 * answered from the sanitized message, and the added item is cut before
 * the client sees the response.  Returns 1 if the command was forwarded
 * (rewritten) or refused here.
 */
struct fcmd *
fcmd_push(struct session *s)
{
	struct fcmd *f;

	if (s->nfcmd == s->fcmdcap && s->fcmdcap < FCMD_MAX) {
		struct fcmd *nf;
		unsigned ncap = s->fcmdcap ? s->fcmdcap * 2 : 2;

		if ((nf = reallocarray(s->fcmds, ncap, sizeof(*nf))) == NULL)
			fatal("reallocarray");
		s->fcmds = nf;
		s->fcmdcap = ncap;
	}
	if (s->nfcmd == s->fcmdcap)
		return NULL;
	f = &s->fcmds[s->nfcmd++];
	memset(f, 0, sizeof(*f));
	return f;
}

static int
fcmd_strict_inflight(const struct session *s)
{
	unsigned i;

	for (i = 0; i < s->nfcmd; i++)
		if (s->fcmds[i].strict)
			return 1;
	return 0;
}

/* Items derived from the message: what strict mode answers from the
 * sanitized message (INTERNALDATE, FLAGS, UID, MODSEQ are the server's). */
static int
derived_att(const struct imap_fatt *a)
{
	switch (a->kind) {
	case IMAP_FA_RFC822:
	case IMAP_FA_RFC822_HEADER:
	case IMAP_FA_RFC822_TEXT:
	case IMAP_FA_RFC822_SIZE:
	case IMAP_FA_ENVELOPE:
	case IMAP_FA_BODY:
	case IMAP_FA_BODYSTRUCTURE:
	case IMAP_FA_BODY_SECTION:
	case IMAP_FA_BINARY:
	case IMAP_FA_BINARY_SIZE:
	case IMAP_FA_PREVIEW:
		return 1;
	default:
		return 0;
	}
}

static void
refuse_fetch(struct session *s, const char *tag, const char *text)
{
	outq_bytes(&s->to_c.q, tag, strlen(tag));
	outq_bytes(&s->to_c.q, text, strlen(text));
}

/*
 * The client's FETCH upstream with items added: " BODY.PEEK[]" (lazy) or
 * " UID" (strict) inside the list; ALL, FAST and FULL are spelled out, as
 * a macro cannot be part of a list.
 */
static void
fetch_forward_adding(
    struct session *s, struct lineasm *la, struct imap_cmd *c, const char *add)
{
	const uint8_t *b = buf_head(&la->text);
	size_t end = c->fetch.atts.off + c->fetch.atts.len;
	struct buf out;

	buf_init(&out, 0);
	buf_add(&out, b, c->fetch.atts.off);
	if (c->fetch.macro != IMAP_FA_OTHER)
		buf_printf(&out, "(FLAGS INTERNALDATE RFC822.SIZE%s%s %s)",
		    c->fetch.macro != IMAP_FA_FAST ? " ENVELOPE" : "",
		    c->fetch.macro == IMAP_FA_FULL ? " BODY" : "", add);
	else if (b[c->fetch.atts.off] == '(')
		buf_printf(&out, "%.*s %s)", (int)c->fetch.atts.len - 1,
		    b + c->fetch.atts.off, add);
	else
		buf_printf(&out, "(%.*s %s)", (int)c->fetch.atts.len,
		    b + c->fetch.atts.off, add);
	buf_add(&out, b + end, buf_used(&la->text) - end);
	outq_buf(&s->to_s.q, &out);
	buf_free(&out);
	buf_reset(&la->text);
}

/*
 * A FETCH from the client.
 *
 * strict (the default): a FETCH of derived items is answered from the
 * sanitized message.  With a whole-message item the response itself
 * brings the message to judge (or the verdict cache knows it); without
 * one, the gateway judges the messages first (consist.c).  UID is added
 * when the client did not ask for it: verdicts are remembered by UID.
 *
 * lazy: when a FETCH reaches message content other than through a
 * whole-message item (BODY[TEXT], BODY[2], BINARY[1], RFC822.TEXT,
 * partial fetches), the gateway adds BODY.PEEK[] so the same response
 * brings the whole message: it is judged, the sections are answered
 * from the sanitized message, and the added item is cut before the
 * client sees the response.
 *
 * Returns 1 if the command was forwarded (rewritten), held or refused
 * here.
 */
int
msg_fetch_command(struct session *s, struct lineasm *la, struct imap_cmd *c)
{
	const uint8_t *b = buf_head(&la->text);
	struct fcmd *f;
	unsigned i, content = 0, whole = 0, stored = 0, derived = 0;
	unsigned uid = c->uid;
	char tag[64];
	int strict, judge;

	snprintf(tag, sizeof(tag), "%.*s", (int)c->tag.len, b + c->tag.off);
	if ((f = fcmd_push(s)) == NULL) {
		refuse_fetch(s, tag,
		    " NO [LIMIT] Too many FETCH commands in flight\r\n");
		return 1;
	}
	snprintf(f->tag, sizeof(f->tag), "%s", tag);
	for (i = 0; i < c->fetch.natt; i++) {
		const struct imap_fatt *a = &c->fetch.att[i];

		whole += whole_att(a);
		stored += whole_att(a) && a->kind != IMAP_FA_BINARY;
		content += content_att(a);
		derived += derived_att(a);
		uid |= a->kind == IMAP_FA_UID;
		if (a->has_partial && f->npartial < FCMD_MAX_PARTIAL) {
			f->partial[f->npartial].binary =
			    a->kind == IMAP_FA_BINARY;
			att_spec(b, a, f->partial[f->npartial].spec,
			    sizeof(f->partial[0].spec));
			f->partial[f->npartial].origin = a->origin;
			f->partial[f->npartial].count = a->count;
			f->npartial++;
		}
	}
	strict = av_on(s) && derived > 0 &&
	         s->act->general.consistency == CONSIST_STRICT;
	/* Sections answered beside a whole message come from its verdict
	 * too, so none of them may pass before it. */
	f->judged = av_on(s) && (content > 0 || strict);
	if ((strict || (av_on(s) && content > 0 && whole == 0)) &&
	    (la->nspools > 0 || c->fetch.atts.len == 0)) {
		s->nfcmd--;
		refuse_fetch(
		    s, tag, " BAD Command not supported by the gateway\r\n");
		return 1;
	}
	if (strict) {
		f->strict = 1;
		f->add_uid = !uid;
	}
	/*
	 * Responses to pipelined FETCHes may interleave (Dovecot runs them
	 * side by side), and only the command's own responses may be
	 * answered from its verdicts: a strict FETCH runs alone.  Without
	 * a whole message, its messages are judged first.
	 */
	/* A mailbox judged whole (its mark) needs no probe. */
	judge = strict && stored == 0 && !consist_mark(s, f);
	if (s->pj != NULL || (strict && s->nfcmd > 1) ||
	    (!strict && fcmd_strict_inflight(s)) || judge) {
		struct fcmd held = *f;

		s->nfcmd--;
		return consist_command(s, la, c, &held, judge);
	}
	if (strict) {
		if (!f->add_uid)
			return 0;
		fetch_forward_adding(s, la, c, "UID");
		return 1;
	}
	if (!av_on(s) || content == 0 || whole > 0)
		return 0;
	f->added = 1;
	fetch_forward_adding(s, la, c, "BODY.PEEK[]");
	return 1;
}

/* A tagged response ends the FETCH command it answers. */
void
msg_tagged(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	unsigned i;

	for (i = 0; i < s->nfcmd; i++) {
		if (!lineasm_is(la, r->tag.off, r->tag.len, s->fcmds[i].tag))
			continue;
		pjmap_free(s->fcmds[i].map);
		free(s->fcmds[i].changed);
		memmove(&s->fcmds[i], &s->fcmds[i + 1],
		    (s->nfcmd - i - 1) * sizeof(*s->fcmds));
		/* An idle session keeps nothing allocated. */
		if (--s->nfcmd == 0) {
			free(s->fcmds);
			s->fcmds = NULL;
			s->fcmdcap = 0;
		}
		return;
	}
}

/* The count a partial item of the current command asked for. */
static uint64_t
partial_count(struct session *s, int binary, const char *spec, uint64_t origin)
{
	struct fcmd *f = fcmd_current(s);
	unsigned i;

	if (f == NULL)
		return UINT64_MAX;
	for (i = 0; i < f->npartial; i++)
		if (f->partial[i].binary == binary &&
		    f->partial[i].origin == origin &&
		    strcasecmp(f->partial[i].spec, spec) == 0)
			return f->partial[i].count;
	return UINT64_MAX;
}

/* FETCH responses */

static void
fetch_job_free(struct fetch_job *j)
{
	struct fetch_job **pp;
	unsigned i;

	for (pp = &j->s->fjobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	for (i = 0; i < j->nparts; i++) {
		scan_cancel(j->part[i].req);
		if (j->part[i].res.fd != -1)
			close(j->part[i].res.fd);
		free(j->part[i].res.mem);
	}
	lineasm_reset(&j->la);
	buf_free(&j->la.text);
	free(j->req);
	free(j);
}

/* The verdict for one part, after on_error and oversize are applied:
 * CLEAN, CHANGED (res.fd) or DENY (netd's own deny message) or DROP. */
enum { PV_CLEAN, PV_CHANGED, PV_DENY, PV_DROP };

static int
part_verdict(struct session *s, struct fetch_part *p, char *why, size_t whylen)
{
	const struct cfg_antivirus *av = &s->act->antivirus;
	int act;

	if (p->oversize) {
		snprintf(why, whylen, "message larger than %llu bytes",
		    (unsigned long long)s->act->general.max_email_size);
		if (s->act->general.oversize == ACT_ALLOW)
			return PV_CLEAN; /* strict: passed unscanned */
		return s->act->general.oversize == ACT_DROP ? PV_DROP : PV_DENY;
	}
	/* A message sanitized before never turns back into the original:
	 * if its items cannot be cut, it is withheld. */
	if (p->job->cutmode && p->res.verdict != SCAN_CHANGED) {
		snprintf(why, whylen, "could not be shown: %s",
		    p->res.reason[0] ? p->res.reason : "scanner answer");
		log_event(LOG_WARNING, "scan error", "client", s->client,
		    "user", s->user, "error", why, "action", "deny", NULL);
		return PV_DENY;
	}
	switch (p->res.verdict) {
	case SCAN_CLEAN:
		return PV_CLEAN;
	case SCAN_CHANGED:
		return PV_CHANGED;
	case SCAN_DROP:
		snprintf(why, whylen, "%s", p->res.reason);
		return PV_DROP;
	default:
		break;
	}
	act = av->on_error;
	snprintf(why, whylen, "could not be scanned: %s", p->res.reason);
	log_event(LOG_WARNING, "scan error", "client", s->client, "user",
	    s->user, "error", p->res.reason, "action", action_name(act), NULL);
	if (act == ACT_ALLOW)
		return PV_CLEAN;
	return act == ACT_DROP ? PV_DROP : PV_DENY;
}

enum { DENY_BODYSTRUCTURE, DENY_BODY, DENY_ENVELOPE };

/* A structure item of netd's own deny message (one text/plain part),
 * malloc'd. */
static char *
deny_struct(const struct denymsg *dm, int which)
{
	size_t blen;

	if (which == DENY_ENVELOPE)
		return xprintf(&blen, "(NIL \"[imapgw] message withheld\" NIL "
		                      "NIL NIL NIL NIL NIL NIL NIL)");
	return xprintf(&blen,
	    "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"8BIT\" %zu "
	    "%u%s)",
	    deny_body_octets(dm), dm->lines,
	    which == DENY_BODYSTRUCTURE ? " NIL NIL NIL NIL" : "");
}

/* The content of one section of netd's own deny message. */
static void
deny_section(const struct denymsg *dm, const struct scan_section *q,
    const char **p, size_t *len)
{
	const char *body =
	    (const char *)memmem(dm->msg, dm->len, "\r\n\r\n", 4) + 4;

	if (strcasecmp(q->spec, "TEXT") == 0 || strcmp(q->spec, "1") == 0) {
		*p = body;
		*len = dm->len - (size_t)(body - dm->msg);
	} else if (strncasecmp(q->spec, "HEADER", 6) == 0 ||
	           strcasecmp(q->spec, "1.MIME") == 0) {
		*p = dm->msg;
		*len = (size_t)(body - dm->msg);
	} else {
		*p = "";
		*len = 0;
	}
}

/*
 * Section items of a changed message: their values come from the
 * sanitized message, sliced as the client's partial asked.  A section
 * scand could not give is answered empty.
 */
static void
sect_edits(struct fetch_job *j, struct fetch_part *first, int v,
    const struct denymsg *dm, struct edit *ed, size_t *ned)
{
	const struct scan_result *res = &first->res;
	struct jsect *x;
	uint64_t off = 0, len = 0;
	const char *dp = NULL;
	size_t dlen = 0, blen;
	unsigned i;
	int st, lit8;
	char *b;

	for (i = 0; i < j->nsect; i++) {
		x = &j->sect[i];
		lit8 = 0;
		if (v == PV_CHANGED) {
			/* ok (0) and literal8 (3) carry content; a part that
			 * does not exist is empty, as the server answers;
			 * what the server would refuse becomes empty too. */
			st = i < res->nsect ? res->sect[i].status : -1;
			if (st == SCAN_SECT_OK || st == SCAN_SECT_LITERAL8) {
				off = res->sect[i].off;
				len = res->sect[i].len;
				lit8 = st == SCAN_SECT_LITERAL8;
			} else
				off = len = 0;
		} else {
			deny_section(dm, &j->req[i], &dp, &dlen);
			len = dlen;
		}
		if (x->size_only) {
			b = xprintf(&blen, "%llu", (unsigned long long)len);
			edit_add(ed, ned, x->val, b, blen, -1, 0, 0);
			continue;
		}
		if (x->has_partial) {
			uint64_t o = x->origin < len ? x->origin : len;

			off += o;
			if (dp)
				dp += o;
			len -= o;
			if (len > x->count)
				len = x->count;
		}
		b = xprintf(&blen, "%s{%llu}\r\n", lit8 ? "~" : "",
		    (unsigned long long)len);
		if (v == PV_CHANGED && res->mem == NULL)
			edit_add(
			    ed, ned, x->val, b, blen, first->res.fd, off, len);
		else {
			if (v == PV_CHANGED)
				dp = (const char *)res->mem + off;
			b = realloc(b, blen + len + 1);
			memcpy(b + blen, dp, len);
			edit_add(ed, ned, x->val, b, blen + len, -1, 0, 0);
		}
	}
}

/* A structure item (BODYSTRUCTURE, BODY, ENVELOPE) of a job's response:
 * from scand's result when the message changed, else deny (taken; NULL
 * when it changed). */
static void
struct_edit(struct edit *ed, size_t *ned, int has, struct imap_span val, int v,
    const struct fetch_part *first, uint64_t off, uint64_t len, char *deny)
{
	size_t blen = deny ? strlen(deny) : 0;
	char *b = deny;

	if (!has) {
		free(deny);
		return;
	}
	if (v == PV_CHANGED && first->res.mem != NULL) {
		if ((b = malloc(len + 1)) == NULL)
			fatal("malloc");
		memcpy(b, first->res.mem + off, len);
		b[len] = '\0';
		blen = len;
	} else if (v == PV_CHANGED)
		b = fd_string(first->res.fd, off, len, &blen);
	if (b != NULL && blen > 0)
		edit_add(ed, ned, val, b, blen, -1, 0, 0);
	else
		free(b);
}

static void
fetch_emit(struct fetch_job *j)
{
	struct session *s = j->s;
	struct edit ed[FETCH_MAX_EDITS];
	struct denymsg dm = {NULL, 0, 0};
	struct fetch_part *p, *first = NULL;
	char why[SCAN_MAX_REASON + 64];
	size_t ned = 0, blen;
	uint64_t newsize = 0;
	unsigned i;
	int v, firstv = PV_CLEAN, changed;
	char *b;

	for (i = 0; i < j->nparts; i++) {
		p = &j->part[i];
		v = part_verdict(s, p, why, sizeof(why));
		if (v == PV_DROP) {
			log_event(LOG_NOTICE, "message dropped", "client",
			    s->client, "user", s->user, "reason", why, NULL);
			/* block: drop, and the client on the auto-block
			 * list (not for oversize or on_error drops). */
			if (!p->oversize && p->res.verdict == SCAN_DROP &&
			    p->res.action == ACT_BLOCK) {
				session_block(s, why);
				session_end(s, "blocked by policy");
			} else
				session_end(s, "dropped by policy");
			return;
		}
		if (v == PV_CLEAN)
			continue;
		if (v == PV_DENY && dm.msg == NULL)
			deny_make(s, why, &dm);
		if (v == PV_CHANGED)
			newsize = p->res.msg_len;
		else
			newsize = dm.len;
		if (p->virt)
			; /* no literal of its own */
		else if (v == PV_CHANGED) {
			b = xprintf(
			    &blen, "{%llu}\r\n", (unsigned long long)newsize);
			edit_add(ed, &ned, p->val, b, blen, p->res.fd,
			    p->res.msg_off, p->res.msg_len);
		} else {
			b = xprintf(&blen, "{%llu}\r\n%.*s",
			    (unsigned long long)newsize, (int)dm.len, dm.msg);
			edit_add(ed, &ned, p->val, b, blen, -1, 0, 0);
		}
		if (first == NULL) {
			first = p;
			firstv = v;
		}
	}
	if (first != NULL) {
		if (j->has_size) {
			b = xprintf(&blen, "%llu", (unsigned long long)newsize);
			edit_add(ed, &ned, j->size_val, b, blen, -1, 0, 0);
		}
		for (i = 0; i < j->nbinsize; i++) {
			b = xprintf(&blen, "%llu", (unsigned long long)newsize);
			edit_add(
			    ed, &ned, j->binsize_val[i], b, blen, -1, 0, 0);
		}
		/* BODYSTRUCTURE, BODY, ENVELOPE: of the sanitized message,
		 * or of netd's own deny message. */
		changed = firstv == PV_CHANGED;
		struct_edit(ed, &ned, j->has_bs, j->bs_val, firstv, first,
		    first->res.bs_off, first->res.bs_len,
		    changed ? NULL : deny_struct(&dm, DENY_BODYSTRUCTURE));
		struct_edit(ed, &ned, j->has_body, j->body_val, firstv, first,
		    first->res.body_off, first->res.body_len,
		    changed ? NULL : deny_struct(&dm, DENY_BODY));
		struct_edit(ed, &ned, j->has_env, j->env_val, firstv, first,
		    first->res.env_off, first->res.env_len,
		    changed ? NULL : deny_struct(&dm, DENY_ENVELOPE));
	}
	if (first != NULL)
		sect_edits(j, first, firstv, &dm, ed, &ned);
	if (j->has_cut)
		edit_add(ed, &ned, j->cut, NULL, 0, -1, 0, 0);
	outq_line_edits(&s->to_c.q, j->hold, &j->la, ed, ned);
	for (i = 0; i < ned; i++)
		free(ed[i].bytes);
	free(dm.msg);
	outq_release(&s->to_c.q, j->hold);
	fetch_job_free(j);
	session_kick(s);
}

static void
fetch_verdict(void *arg, struct scan_result *res)
{
	struct fetch_part *p = arg;
	struct fetch_job *j = p->job;

	p->req = NULL;
	p->res = *res;
	p->done = 1;
	if (j->cutmode && j->ckey_ok)
		cutcache_put(j->ckey, res);
	if (j->remember && p == &j->part[0])
		consist_remember(j->s, 1, j->uid, j->sha, j->size, res);
	if (--j->pending == 0)
		fetch_emit(j);
}

/* A section item of a response judged as a whole. */
static void
job_sect(struct session *s, struct fetch_job *j, const struct lineasm *la,
    const struct imap_item *it, int size_only)
{
	struct jsect *x;

	if (j->nsect == SCAN_MAX_SECT || j->specbytes > SECT_SPEC_BUDGET)
		return;
	if (j->nsect == j->reqcap) {
		j->reqcap = j->reqcap ? 2 * j->reqcap : 2;
		if (j->reqcap > SCAN_MAX_SECT)
			j->reqcap = SCAN_MAX_SECT;
		j->req = reallocarray(j->req, j->reqcap, sizeof(*j->req));
		if (j->req == NULL)
			fatal("reallocarray");
	}
	memset(&j->req[j->nsect], 0, sizeof(j->req[0]));
	x = &j->sect[j->nsect];
	x->val = it->val;
	x->size_only = size_only;
	j->req[j->nsect].binary = it->att.kind == IMAP_FA_BINARY ||
	                          it->att.kind == IMAP_FA_BINARY_SIZE;
	att_spec(buf_head(&la->text), &it->att, j->req[j->nsect].spec,
	    sizeof(j->req[0].spec));
	x->has_partial = it->att.has_partial;
	x->origin = it->att.origin;
	x->count = x->has_partial ? partial_count(s, j->req[j->nsect].binary,
	                                j->req[j->nsect].spec, x->origin)
	                          : UINT64_MAX;
	j->specbytes += strlen(j->req[j->nsect].spec) + 8;
	j->nsect++;
}

/* A new part of job j (nparts < FETCH_MAX_PARTS), cleared. */
static struct fetch_part *
job_part(struct fetch_job *j)
{
	struct fetch_part *p = &j->part[j->nparts++];

	memset(p, 0, sizeof(*p));
	p->job = j;
	p->res.fd = -1;
	return p;
}

/* A job for a FETCH response: the items answered from its verdict. */
static struct fetch_job *
job_new(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	int strict = fcmd_current(s) && fcmd_current(s)->strict;
	struct fetch_job *j;
	struct fetch_part *p;
	const struct imap_item *it;
	unsigned i;

	if ((j = malloc(sizeof(*j))) == NULL)
		fatal("malloc");
	memset(j, 0, offsetof(struct fetch_job, part));
	j->s = s;
	j->msgno = r->num;
	for (i = 0; i < r->fetch.nitem; i++) {
		it = &r->fetch.item[i];
		switch (it->att.kind) {
		case IMAP_FA_RFC822_SIZE:
			j->has_size = 1;
			j->size_val = it->val;
			continue;
		case IMAP_FA_BODYSTRUCTURE:
			j->has_bs = 1;
			j->bs_val = it->val;
			continue;
		case IMAP_FA_BODY:
			j->has_body = 1;
			j->body_val = it->val;
			continue;
		case IMAP_FA_ENVELOPE:
			j->has_env = 1;
			j->env_val = it->val;
			continue;
		case IMAP_FA_BINARY_SIZE:
			/* strict judges the message as stored (BODY[]): its
			 * BINARY[] is the decoded form, a section of it. */
			if (it->att.sect.npart == 0 && j->nbinsize < 4 &&
			    !strict)
				j->binsize_val[j->nbinsize++] = it->val;
			else
				job_sect(s, j, la, it, 1);
			continue;
		case IMAP_FA_RFC822_TEXT:
		case IMAP_FA_RFC822_HEADER:
			job_sect(s, j, la, it, 0);
			continue;
		case IMAP_FA_BODY_SECTION:
		case IMAP_FA_BINARY:
			if (!whole_message_item(it) ||
			    (strict && it->att.kind == IMAP_FA_BINARY)) {
				job_sect(s, j, la, it, 0);
				continue;
			}
			break;
		default:
			break;
		}
		if (!whole_message_item(it) ||
		    it->str.kind != IMAP_STR_LITERAL ||
		    j->nparts == FETCH_MAX_PARTS)
			continue;
		p = job_part(j);
		p->val = it->val;
		p->len = it->str.len;
		p->oversize =
		    it->str.spool >= 0 && la->spools[it->str.spool].fd == -1;
	}
	return j;
}

/* The job takes the line and holds the client's output behind it. */
static void
job_start(struct fetch_job *j, struct lineasm *la)
{
	struct session *s = j->s;

	lineasm_move(&j->la, la);
	j->next = s->fjobs;
	s->fjobs = j;
	j->hold = outq_hold(&s->to_c.q);
}

static void
part_preset(struct fetch_part *p, int verdict, const char *reason)
{
	p->done = 1;
	p->res.verdict = verdict;
	snprintf(p->res.reason, sizeof(p->res.reason), "%s", reason);
	p->job->pending--;
}

/* The literal of a whole-message item of the job's line. */
static int
part_literal_fd(struct fetch_job *j, struct imap_resp *r, struct fetch_part *p)
{
	const struct imap_item *it;
	unsigned n;

	for (n = 0; n < r->fetch.nitem; n++) {
		it = &r->fetch.item[n];
		if (it->val.off == p->val.off)
			return lineasm_literal_fd(
			    &j->la, it->str.spool, it->str.data, it->str.len);
	}
	errno = ENOENT;
	return -1;
}

/* Submit every part of a started job: its literal, judged. */
static void
job_judge(struct fetch_job *j, struct imap_resp *r)
{
	struct session *s = j->s;
	struct fetch_part *p;
	char why[128];
	unsigned i;
	int fd;

	/* Count first: a verdict may arrive inside scan_submit(). */
	j->pending = j->nparts + 1;
	for (i = 0; i < j->nparts; i++) {
		p = &j->part[i];
		if (p->oversize || !av_on(s)) {
			part_preset(p, SCAN_CLEAN, "");
			continue;
		}
		if ((fd = part_literal_fd(j, r, p)) == -1) {
			snprintf(why, sizeof(why),
			    "cannot pass the message to the scanner: %s",
			    strerror(errno));
			part_preset(p, SCAN_ERROR, why);
			continue;
		}
		p->req = scan_submit(s->n, fd, p->len, SCAN_FETCH,
		    s->pol->actionidx, s->pol->name, s->user, s->client, j->req,
		    j->nsect, 0, fetch_verdict, p);
	}
	/* Judged already (nothing to scan): finish from the event loop. */
	if (--j->pending == 0)
		session_kick(s);
}

/*
 * A message the gateway sanitized before (from the verdict cache or our
 * own fetch): scand cuts the items from those bytes without scanning
 * them again.  Without the bytes, or if the cut fails, the message is
 * withheld: the original never goes in its place.
 */
static void
job_cut(struct fetch_job *j, int fd, uint64_t len)
{
	struct session *s = j->s;
	struct fetch_part *p;
	unsigned i;
	int pfd;

	j->cutmode = 1;
	j->pending = j->nparts + 1;
	for (i = 0; i < j->nparts; i++) {
		p = &j->part[i];
		if (fd == -1 || (pfd = dup(fd)) == -1) {
			part_preset(p, SCAN_ERROR,
			    "the sanitized message is not available");
			continue;
		}
		p->req = scan_submit(s->n, pfd, len, SCAN_FETCH,
		    s->pol->actionidx, s->pol->name, s->user, s->client, j->req,
		    j->nsect, SCAN_F_CUT, fetch_verdict, p);
	}
	if (fd != -1)
		close(fd);
	if (--j->pending == 0)
		session_kick(s);
}

/*
 * A job of derived items only (no literal of the message) is answered
 * from the cut cache when it holds the same sections of the same
 * sanitized bytes (1); else scand's answer will go there (0).
 */
static int
job_cut_cached(struct fetch_job *j, const uint8_t *msg, size_t len)
{
	struct fetch_part *p = &j->part[0];

	if (!(j->nparts == 1 && p->virt))
		return 0;
	cutcache_key(msg, len, j->req, j->nsect, j->ckey);
	j->ckey_ok = 1;
	if (!cutcache_get(j->ckey, &p->res))
		return 0;
	j->cutmode = 1;
	p->done = 1;
	j->pending = 0;
	/* Out now, in its place: a job left for the event loop would hold
	 * the output and, with enough of them, pause reading. */
	fetch_emit(j);
	return 1;
}

/* job_cut() from the sanitized bytes in memory. */
static void
job_cut_msg(struct fetch_job *j, const uint8_t *msg, size_t len)
{
	if (!job_cut_cached(j, msg, len))
		job_cut(j, consist_memfd(msg, len), len);
}

/* job_cut() from the sanitized message in fd (taken), through the cut
 * cache when it is small enough to read. */
static void
job_cut_fd(struct fetch_job *j, int fd, uint64_t len)
{
	uint8_t *msg;

	if (fd != -1 && j->nparts == 1 && j->part[0].virt &&
	    len <= CUT_KEY_MSG_MAX) {
		if ((msg = malloc(len ? (size_t)len : 1)) == NULL)
			fatal("malloc");
		if (pread(fd, msg, (size_t)len, 0) == (ssize_t)len &&
		    job_cut_cached(j, msg, (size_t)len)) {
			free(msg);
			close(fd);
			return;
		}
		free(msg);
	}
	job_cut(j, fd, len);
}

/* A job whose message has a verdict already (scan error, oversize,
 * not judged): every part gets it. */
static void
job_preset(struct fetch_job *j, int oversize, const char *reason)
{
	unsigned i;

	j->pending = j->nparts + 1;
	for (i = 0; i < j->nparts; i++) {
		j->part[i].oversize |= oversize;
		part_preset(&j->part[i], SCAN_ERROR, reason);
	}
	if (--j->pending == 0)
		session_kick(j->s);
}

/* Strict answers with no whole-message item: the items come from one
 * part that stands for the message. */
static void
job_virtual_part(struct fetch_job *j)
{
	struct fetch_part *p;

	if (j->nparts > 0)
		return;
	p = job_part(j);
	p->virt = 1;
}

static int
uid_cut(
    struct fcmd *f, struct imap_resp *r, int uid_item, struct imap_span *cut)
{
	return f->add_uid && uid_item >= 0 && r->fetch.nitem > 1 &&
	       imap_item_cut(r, (unsigned)uid_item, cut) == 0;
}

/*
 * A strict response that brings its message whole, which the gateway
 * does not know by UID: known by its bytes (judged in another mailbox,
 * session or worker), or judged now, and remembered.
 */
static int
strict_whole(struct session *s, struct lineasm *la, struct imap_resp *r,
    struct fcmd *f, uint32_t uid, int uid_item)
{
	const struct imap_item *it = NULL;
	struct fetch_job *j;
	struct vc_msgkey k;
	struct vc_entry e;
	struct imap_span cut;
	uint8_t sha[32];
	unsigned i;
	int fd, sha_ok = 0;

	for (i = 0; i < r->fetch.nitem && it == NULL; i++)
		if (stored_whole_item(&r->fetch.item[i]) &&
		    r->fetch.item[i].str.kind == IMAP_STR_LITERAL)
			it = &r->fetch.item[i];
	if (!(it->str.spool >= 0 && la->spools[it->str.spool].fd == -1) &&
	    (fd = lineasm_literal_fd(
	         la, it->str.spool, it->str.data, it->str.len)) != -1) {
		sha_ok = consist_sha(fd, it->str.len, sha) == 0;
		close(fd);
	}
	if (sha_ok && consist_cached_sha(s, sha, &e)) {
		if (consist_key(s, uid, &k))
			vcache_put(s->n->vc, &k, &e);
		if (e.cls == VC_CLEAN) {
			vc_entry_free(&e);
			if (uid_cut(f, r, uid_item, &cut))
				emit_cut(s, la, cut);
			else
				outq_line(&s->to_c.q, la);
			return 1;
		}
		j = job_new(s, la, r);
		if (uid_cut(f, r, uid_item, &j->cut))
			j->has_cut = 1;
		job_start(j, la);
		job_cut_msg(j, e.msg, e.msglen);
		vc_entry_free(&e);
		return 1;
	}
	j = job_new(s, la, r);
	j->remember = sha_ok;
	j->uid = uid;
	j->size = it->str.len;
	memcpy(j->sha, sha, sizeof(sha));
	if (uid_cut(f, r, uid_item, &j->cut))
		j->has_cut = 1;
	job_start(j, la);
	job_judge(j, r);
	return 1;
}

/*
 * A response to a FETCH in strict mode.  Its message was judged before
 * the command went (the map), or is known to the verdict cache, or the
 * response brings it whole: judged now and remembered.  A clean message
 * goes out as the server sent it; a changed one with every derived item
 * from its sanitized form.
 */
static int
strict_fetch(
    struct session *s, struct lineasm *la, struct imap_resp *r, struct fcmd *f)
{
	const struct imap_item *it;
	struct fetch_job *j;
	struct pjmsg *m = NULL;
	struct vc_entry e;
	struct imap_span cut;
	uint32_t uid = 0;
	unsigned i, derived = 0, wholelit = 0;
	int uid_item = -1, cls = PJ_UNKNOWN, have_e = 0, fd = -1;
	uint64_t len = 0;
	const char *reason = "the message was not judged";

	for (i = 0; i < r->fetch.nitem; i++) {
		it = &r->fetch.item[i];
		if (it->att.kind == IMAP_FA_UID && it->has_num &&
		    it->num <= UINT32_MAX) {
			uid = (uint32_t)it->num;
			uid_item = (int)i;
		}
		derived += derived_att(&it->att);
		if (stored_whole_item(it) && it->str.kind == IMAP_STR_LITERAL)
			wholelit++;
	}
	if (derived == 0) {
		/* FLAGS of another client's change, or our UID alone. */
		if (uid_cut(f, r, uid_item, &cut)) {
			emit_cut(s, la, cut);
			return 1;
		}
		return 0;
	}
	memset(&e, 0, sizeof(e));
	if (f->map == NULL && f->markw != 0 && uid != 0 && uid <= f->markw) {
		/* The mailbox's mark: clean unless listed. */
		cls = consist_in(f->changed, f->nchanged, uid) ? PJ_CHANGED
		                                               : PJ_CLEAN;
		if (cls == PJ_CHANGED)
			have_e = consist_cached(s, uid, &e);
		if (cls == PJ_CHANGED && !have_e)
			reason = "the sanitized message is not available";
	} else if ((m = pjmap_find(f->map, uid)) != NULL) {
		cls = m->cls;
		if (m->reason)
			reason = m->reason;
		if (cls == PJ_CHANGED && m->fd != -1) {
			fd = dup(m->fd);
			len = m->len;
		} else if (cls == PJ_CHANGED)
			have_e =
			    consist_cached(s, uid, &e) ||
			    (m->have_sha && consist_cached_sha(s, m->sha, &e));
	} else if (uid != 0 && (have_e = consist_cached(s, uid, &e)))
		cls = e.cls == VC_CLEAN ? PJ_CLEAN : PJ_CHANGED;
	/* A changed message's sanitized bytes from the cache: kept for
	 * job_cut_msg() below. */
	if (have_e && !(cls == PJ_CHANGED && e.cls == VC_CHANGED)) {
		vc_entry_free(&e);
		have_e = 0;
	}
	if (cls == PJ_UNKNOWN && f->map == NULL && wholelit > 0)
		return strict_whole(s, la, r, f, uid, uid_item);
	if (cls == PJ_CLEAN) {
		if (fd != -1)
			close(fd);
		if (uid_cut(f, r, uid_item, &cut))
			emit_cut(s, la, cut);
		else
			outq_line(&s->to_c.q, la);
		return 1;
	}
	j = job_new(s, la, r);
	job_virtual_part(j);
	if (uid_cut(f, r, uid_item, &j->cut))
		j->has_cut = 1;
	job_start(j, la);
	if (cls == PJ_CHANGED && have_e) {
		job_cut_msg(j, e.msg, e.msglen);
		vc_entry_free(&e);
	} else if (cls == PJ_CHANGED)
		job_cut_fd(j, fd, len);
	else
		job_preset(j, cls == PJ_OVERSIZE, reason);
	return 1;
}

/*
 * A complete FETCH response.  Returns 1 if it was taken for judging, 0 if
 * it goes out as it is.
 */
int
msg_fetch(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	struct fetch_job *j;
	const struct imap_item *it;
	unsigned i, n = 0;
	int discarded;

	if (fcmd_current(s) && fcmd_current(s)->strict && av_on(s))
		return strict_fetch(s, la, r, fcmd_current(s));
	for (i = 0; i < r->fetch.nitem; i++) {
		it = &r->fetch.item[i];
		if (!whole_message_item(it) || it->str.kind != IMAP_STR_LITERAL)
			continue;
		discarded =
		    it->str.spool >= 0 && la->spools[it->str.spool].fd == -1;
		if (discarded || (av_on(s) && it->str.spool >= 0) ||
		    (av_on(s) && it->str.len > 0))
			n++;
	}
	if (n == 0)
		return 0;
	j = job_new(s, la, r);
	/* The whole message the gateway asked for on its own is not the
	 * client's to see. */
	if (fcmd_current(s) && fcmd_current(s)->added)
		for (i = 0; i < r->fetch.nitem; i++)
			if (whole_message_item(&r->fetch.item[i]) &&
			    imap_item_cut(r, i, &j->cut) == 0) {
				j->has_cut = 1;
				break;
			}
	job_start(j, la);
	job_judge(j, r);
	return 1;
}

/* APPEND */

static void
append_job_free(struct session *s)
{
	struct append_job *j = s->ajob;
	unsigned i;

	if (j == NULL)
		return;
	for (i = 0; i < j->nmsg; i++) {
		scan_cancel(j->msg[i].req);
		if (j->msg[i].res.fd != -1)
			close(j->msg[i].res.fd);
	}
	lineasm_reset(&j->la);
	buf_free(&j->la.text);
	free(j);
	s->ajob = NULL;
}

static void
append_refuse(
    struct session *s, const char *tag, const char *code, const char *why)
{
	char *line;
	size_t len;

	line = xprintf(&len, "%s NO %s%s\r\n", tag, code, why);
	outq_bytes(&s->to_c.q, line, len);
	free(line);
}

/* Send text up to and including the next literal's marker, in the form
 * the server takes. */
static void
append_send_marker(struct append_job *j, struct append_msg *m, int plus)
{
	struct session *s = j->s;
	char mark[48];
	int n;

	outq_bytes(&s->to_s.q, buf_head(&j->la.text) + j->textpos,
	    m->mark_off - j->textpos);
	n = snprintf(mark, sizeof(mark), "%s{%llu%s}\r\n",
	    (m->flags & IMAP_LIT_BINARY) ? "~" : "", (unsigned long long)m->len,
	    plus ? "+" : "");
	outq_bytes(&s->to_s.q, mark, (size_t)n);
	j->textpos = m->mark_off + m->mark_len;
}

static void
append_send_payload(struct append_job *j, struct append_msg *m)
{
	struct session *s = j->s;

	if (m->spool >= 0) {
		outq_fd(&s->to_s.q, j->la.spools[m->spool].fd, 0, m->len);
		j->la.spools[m->spool].fd = -1;
		return;
	}
	outq_bytes(&s->to_s.q, buf_head(&j->la.text) + m->data, m->len);
	j->textpos = m->data + m->len;
}

static void
append_send_rest(struct append_job *j)
{
	struct session *s = j->s;

	outq_bytes(&s->to_s.q, buf_head(&j->la.text) + j->textpos,
	    buf_used(&j->la.text) - j->textpos);
	append_job_free(s);
}

/*
 * Everything judged clean: upstream it goes.  With LITERAL+ in one piece;
 * without, the first marker now and each payload after a "+".
 */
static void
append_forward(struct append_job *j)
{
	struct session *s = j->s;
	unsigned i;

	j->textpos = 0;
	if (s->srv_literalplus) {
		for (i = 0; i < j->nmsg; i++) {
			append_send_marker(j, &j->msg[i], 1);
			append_send_payload(j, &j->msg[i]);
		}
		append_send_rest(j);
		return;
	}
	j->sending = 1;
	j->next = 0;
	append_send_marker(j, &j->msg[0], 0);
}

static void
append_done(struct append_job *j)
{
	struct session *s = j->s;
	const struct cfg_antivirus *av = &s->act->antivirus;
	struct append_msg *m;
	char why[SCAN_MAX_REASON + 64];
	unsigned i;

	j->forwarded = 1;
	for (i = 0; i < j->nmsg; i++) {
		m = &j->msg[i];
		switch (m->res.verdict) {
		case SCAN_CLEAN:
			continue;
		case SCAN_ERROR:
			log_event(LOG_WARNING, "scan error", "client",
			    s->client, "user", s->user, "error", m->res.reason,
			    "action", action_name(av->on_error), NULL);
			if (av->on_error == ACT_ALLOW)
				continue;
			snprintf(why, sizeof(why),
			    "Message could not be scanned (%s)", m->res.reason);
			if (av->on_error == ACT_DROP)
				goto drop;
			break;
		case SCAN_DROP:
			snprintf(why, sizeof(why), "%s", m->res.reason);
			goto drop;
		default: /* REJECT; CHANGED is not an answer to uploads */
			snprintf(why, sizeof(why), "Message rejected: %s",
			    m->res.reason[0] ? m->res.reason : "by policy");
			break;
		}
		log_event(LOG_NOTICE, "upload rejected", "client", s->client,
		    "user", s->user, "reason", why, NULL);
		append_refuse(s, j->tag, "", why);
		append_job_free(s);
		session_kick(s);
		return;
	}
	append_forward(j);
	session_kick(s);
	return;
drop:
	log_event(LOG_NOTICE, "upload dropped", "client", s->client, "user",
	    s->user, "reason", why, NULL);
	if (m->res.verdict == SCAN_DROP && m->res.action == ACT_BLOCK) {
		session_block(s, why);
		session_end(s, "blocked by policy");
	} else
		session_end(s, "dropped by policy");
}

static void
append_verdict(void *arg, struct scan_result *res)
{
	struct append_msg *m = arg;
	struct append_job *j = m->job;

	m->req = NULL;
	m->res = *res;
	m->done = 1;
	if (--j->pending == 0)
		append_done(j);
}

/*
 * A complete APPEND whose literals the gateway took.  Returns 1 when the
 * line was handled (judged, refused), 0 to forward it as it is.
 */
int
msg_append(struct session *s, struct lineasm *la, struct imap_cmd *c)
{
	struct append_job *j;
	struct append_msg *m;
	const struct imap_str *d;
	char tag[64];
	unsigned i;
	int fd;

	if (!s->append_line)
		return 0;
	s->append_line = 0;
	snprintf(tag, sizeof(tag), "%.*s", (int)c->tag.len,
	    (const char *)buf_head(&la->text) + c->tag.off);
	if (la->discarded) {
		append_refuse(s, tag, "[TOOBIG] ", "Message too large");
		log_event(LOG_NOTICE, "upload rejected", "client", s->client,
		    "user", s->user, "reason", "too large", NULL);
		return 1;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL)
		fatal("calloc");
	j->s = s;
	snprintf(j->tag, sizeof(j->tag), "%s", tag);
	for (i = 0; i < c->nmsg; i++) {
		d = &c->msg[i].data;
		m = &j->msg[j->nmsg++];
		m->job = j;
		m->res.fd = -1;
		m->spool = d->spool;
		m->len = d->len;
		m->flags = d->flags;
		m->mark_off = d->tok.off;
		m->mark_len = d->spool >= 0 ? d->tok.len : d->data - d->tok.off;
		m->data = d->data;
	}
	lineasm_move(&j->la, la);
	s->ajob = j;
	j->pending = j->nmsg + 1;
	for (i = 0; i < j->nmsg; i++) {
		m = &j->msg[i];
		if (!av_on(s)) {
			m->res.verdict = SCAN_CLEAN;
			j->pending--;
			continue;
		}
		fd = lineasm_literal_fd(&j->la, m->spool, m->data, m->len);
		if (fd == -1) {
			m->res.verdict = SCAN_ERROR;
			snprintf(m->res.reason, sizeof(m->res.reason),
			    "cannot pass the message to the scanner");
			j->pending--;
			continue;
		}
		m->req = scan_submit(s->n, fd, m->len, SCAN_APPEND,
		    s->pol->actionidx, s->pol->name, s->user, s->client, NULL,
		    0, 0, append_verdict, m);
	}
	if (--j->pending == 0)
		session_kick(s);
	return 1;
}

/*
 * A client APPEND line ends in a synchronizing literal: the gateway
 * answers the continuation itself, or refuses a message that is too
 * large before the client sends it.  Returns 1 if handled.
 */
int
msg_append_sync(struct session *s, struct dir *d)
{
	uint64_t n = framer_held_size(&d->fr);
	char tag[64];

	if (!d->la.streamed && !s->append_line && !line_is_append(&d->la))
		return 0;
	s->append_line = 1;
	if (n > s->act->general.max_email_size) {
		sscanf((const char *)buf_head(&d->la.text), "%63s", tag);
		append_refuse(s, tag, "[TOOBIG] ", "Message too large");
		log_event(LOG_NOTICE, "upload rejected", "client", s->client,
		    "user", s->user, "reason", "too large", NULL);
		/* The client sends no payload: the command ends here. */
		framer_cont(&d->fr, 0);
		d->lines_seen = d->fr.lines;
		lineasm_reset(&d->la);
		s->append_line = 0;
		return 1;
	}
	outq_bytes(&s->to_c.q, "+ Ready for literal data\r\n", 26);
	session_cont(s, 1);
	return 1;
}

/*
 * Server answers that belong to the gateway's own upstream APPEND: a "+"
 * for the next literal, or the tagged answer that ends it early.
 * Returns 1 if the line was swallowed.
 */
int
msg_server_answer(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	struct append_job *j = s->ajob;
	struct append_msg *m;

	if (j == NULL || !j->sending)
		return 0;
	if (r->kind == IMAP_RESP_CONT) {
		m = &j->msg[j->next++];
		append_send_payload(j, m);
		if (j->next == j->nmsg)
			append_send_rest(j);
		else
			append_send_marker(j, &j->msg[j->next], 0);
		session_kick(s);
		return 1;
	}
	if (r->kind == IMAP_RESP_TAGGED &&
	    lineasm_is(la, r->tag.off, r->tag.len, j->tag)) {
		/* Refused before all literals went: the client hears it. */
		append_job_free(s);
		session_kick(s);
	}
	return 0;
}

/* Jobs whose verdicts were all known at submission. */
int
msg_ready(struct session *s)
{
	struct fetch_job *j, *next;

	for (j = s->fjobs; j; j = next) {
		next = j->next;
		if (j->pending == 0) {
			fetch_emit(j);
			if (s->ending)
				return -1;
		}
	}
	if (s->ajob && s->ajob->pending == 0 && !s->ajob->sending &&
	    !s->ajob->forwarded) {
		append_done(s->ajob);
		if (s->ending)
			return -1;
	}
	return 0;
}

int
msg_paused(struct session *s, struct dir *d)
{
	if (d == &s->c)
		return s->ajob != NULL;
	/* Judge a few responses at a time; later ones wait in the
	 * socket, so memory stays bounded. */
	return s->to_c.q.holds >= SESSION_MAX_FETCH_JOBS;
}

void
msg_session_end(struct session *s)
{
	consist_session_end(s);
	while (s->fjobs)
		fetch_job_free(s->fjobs);
	append_job_free(s);
	while (s->nfcmd > 0) {
		pjmap_free(s->fcmds[--s->nfcmd].map);
		free(s->fcmds[s->nfcmd].changed);
	}
	free(s->fcmds);
	s->fcmds = NULL;
	s->nfcmd = s->fcmdcap = 0;
}
