/*
 * One scan request: check it, judge the message under its proxy action,
 * rewrite it where the action says so, and build the answer (scan.h).
 *
 * The message is cut into parts (mime.c); every leaf part is decoded
 * and scanned on its own, so that a finding names the part a client
 * sees, then the whole message is scanned as it is, because libclamav
 * parses mail itself and a part our parser sees differently must not
 * slip through.  What was found decides the action:
 *
 *   virus found   antivirus.on_virus   allow, strip, deny, drop
 *   scan failed   antivirus.on_error   allow, deny, drop
 *   too large     general.oversize     allow, deny, drop
 *
 * and the most severe one applies (allow < strip < deny < drop).  A
 * strip that cannot be done (the infected part is the message body, or
 * the rewritten message still does not scan clean) becomes a deny.  An
 * upload (SCAN_APPEND) is never rewritten: whatever is not allowed is
 * rejected, or drops the session.
 *
 * Rewrites are deterministic and minimal.  strip replaces only the bytes
 * of the infected parts (from the first header byte to the end of the
 * body, as the parser found them) with a text/plain part carrying the
 * deny message; every other byte of the message stays as it was.  deny
 * builds a new message from the original's envelope header fields and
 * the deny message.  No date, no random boundary, nothing that changes
 * from one run to the next.
 *
 * A rewritten fetched message comes with the sections netd asked for
 * (section.c), computed on the rewritten message, so that BODY[2],
 * BINARY[1], HEADER.FIELDS and the like answer from it as the server
 * would.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "scand.h"

#define SCAN_MAX_FINDINGS 64 /* more are counted, not kept */

/* A virus in a part, or a part that could not be scanned. */
struct scan_find {
	int error;
	char what[256]; /* virus name, or why the scan failed */
	char section[64]; /* IMAP part number; "" for the whole message */
	char filename[256];
	const struct mime_part *part; /* NULL: the whole message */
};

struct scan_job {
	const struct cfg_action *act;
	int kind;
	const struct scan_sect *sect; /* wanted if rewritten */
	size_t nsect;
	const char *user, *client;
	const uint8_t *data;
	size_t len;
	struct mime_msg msg;
	struct av_engine *engine;
	struct av_limits lim;
	struct timespec deadline; /* max_scan_time for the whole message */
	int out_of_time;
	struct scan_find find[SCAN_MAX_FINDINGS];
	size_t nfind, nvirus, nerror, more;
	int oversize;
	int action; /* ACT_* decided */
	char type[16]; /* %(type)%: virus, error, oversize */
};

static const char *const scan_verdicts[] = {
    [SCAN_CLEAN] = "clean",
    [SCAN_CHANGED] = "changed",
    [SCAN_REJECT] = "reject",
    [SCAN_DROP] = "drop",
    [SCAN_ERROR] = "error",
};

const char *
scan_verdict_name(int v)
{
	if (v < 0 || v > SCAN_ERROR)
		return "unknown";
	return scan_verdicts[v];
}

static const char *
scan_kind_name(int kind)
{
	return kind == SCAN_APPEND ? "append" : "fetch";
}

static int
scan_severity(int act)
{
	switch (act) {
	case ACT_ALLOW:
		return 0;
	case ACT_STRIP:
		return 1;
	case ACT_DENY:
		return 2;
	default:
		return 3; /* drop */
	}
}

static void
scan_res_init(struct scan_res *res)
{
	memset(res, 0, sizeof(*res));
	res->verdict = SCAN_CLEAN;
	res->action = ACT_ALLOW;
	res->fd = -1;
}

void
scan_res_clear(struct scan_res *res)
{
	if (res->fd != -1)
		close(res->fd);
	res->fd = -1;
}

/* ASCII without control characters: the reason may end up in a tagged
 * NO and in logs. */
static void
scan_ascii(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

/*
 * Findings.
 */

static struct scan_find *
scan_add(struct scan_job *j, int error, const struct mime_part *part)
{
	struct scan_find *f;

	if (error)
		j->nerror++;
	else
		j->nvirus++;
	if (j->nfind == SCAN_MAX_FINDINGS) {
		j->more++;
		return NULL;
	}
	f = &j->find[j->nfind++];
	memset(f, 0, sizeof(*f));
	f->error = error;
	f->part = part;
	if (part != NULL) {
		mime_section(part, f->section, sizeof(f->section));
		mime_filename(&j->msg, part, f->filename, sizeof(f->filename));
	}
	return f;
}

static void
scan_add_error(
    struct scan_job *j, const struct mime_part *part, const char *why)
{
	struct scan_find *f;

	if ((f = scan_add(j, 1, part)) != NULL)
		snprintf(f->what, sizeof(f->what), "%s", why);
}

/* "virus X in part 2 (a.exe)", "scan error in the message: why" */
static void
scan_find_text(const struct scan_find *f, char *out, size_t len)
{
	char where[384];

	if (f->section[0] == '\0')
		snprintf(where, sizeof(where), "the message");
	else if (f->filename[0] != '\0')
		snprintf(where, sizeof(where), "part %s (%s)", f->section,
		    f->filename);
	else
		snprintf(where, sizeof(where), "part %s", f->section);
	if (f->error)
		snprintf(out, len, "scan error in %s: %s", where, f->what);
	else
		snprintf(out, len, "virus %s in %s", f->what, where);
}

static void
scan_reason(const struct scan_job *j, char *out, size_t len)
{
	char one[768];
	size_t i, n;

	out[0] = '\0';
	if (j->oversize) {
		snprintf(out, len,
		    "message of %zu bytes is larger than max_email_size "
		    "(%llu bytes)",
		    j->len, (unsigned long long)j->act->general.max_email_size);
		return;
	}
	for (i = 0; i < j->nfind; i++) {
		scan_find_text(&j->find[i], one, sizeof(one));
		n = strlen(out);
		snprintf(out + n, len - n, "%s%s", n ? "; " : "", one);
	}
	if (j->more) {
		n = strlen(out);
		snprintf(out + n, len - n, "; %zu more", j->more);
	}
}

/*
 * Scanning.
 */

/* Milliseconds left of the message's max_scan_time (<= 0: none). */
static long long
scan_ms_left(const struct scan_job *j)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)(j->deadline.tv_sec - now.tv_sec) * 1000 +
	       (j->deadline.tv_nsec - now.tv_nsec) / 1000000;
}

/*
 * One libclamav scan, with what is left of the time limit: the limit
 * holds for the message, not for each of its parts, so that netd's
 * timeout (max_scan_time and a grace) is never reached by a slow
 * many-part message.
 */
static void
scan_av(struct scan_job *j, const void *data, size_t len, struct av_result *r)
{
	long long left = scan_ms_left(j);

	if (j->out_of_time || left <= 0) {
		j->out_of_time = 1;
		memset(r, 0, sizeof(*r));
		r->status = AV_ERROR;
		snprintf(r->error, sizeof(r->error),
		    "max_scan_time (%llu ms) reached",
		    (unsigned long long)j->act->antivirus.max_scan_time_ms);
		return;
	}
	j->lim.max_scan_time_ms = (uint64_t)left;
	av_scan(j->engine, &j->lim, data, len, r);
}

static void
scan_leaf(struct scan_job *j, const struct mime_part *part)
{
	struct av_result r;
	struct scan_find *f;
	struct buf body;

	buf_init(&body, 0);
	if (mime_decode_body(&j->msg, part, &body) == -1) {
		scan_add_error(j, part, "cannot decode the part");
		buf_free(&body);
		return;
	}
	scan_av(j, body.data, body.len, &r);
	buf_free(&body);
	if (r.status == AV_VIRUS && (f = scan_add(j, 0, part)) != NULL)
		snprintf(f->what, sizeof(f->what), "%s", r.virus);
	else if (r.status == AV_ERROR)
		scan_add_error(j, part, r.error);
}

static void
scan_parts(struct scan_job *j, const struct mime_part *part)
{
	const struct mime_part *c;

	/* A multipart without parts (no boundary) is scanned as a leaf. */
	if (part->kind == MIME_LEAF || part->children == NULL) {
		/* Once out of time, one error says it for all parts. */
		if (!j->out_of_time)
			scan_leaf(j, part);
		return;
	}
	for (c = part->children; c != NULL; c = c->next)
		scan_parts(j, c);
}

/* The whole message as libclamav sees it.  A virus only it finds cannot
 * be tied to a part: it is the message's. */
static void
scan_whole(struct scan_job *j, const void *data, size_t len, int known)
{
	struct av_result r;
	struct scan_find *f;

	scan_av(j, data, len, &r);
	if (r.status == AV_VIRUS && !known &&
	    (f = scan_add(j, 0, NULL)) != NULL)
		snprintf(f->what, sizeof(f->what), "%s", r.virus);
	else if (r.status == AV_ERROR)
		scan_add_error(j, NULL, r.error);
}

/*
 * Deciding.
 */

static void
scan_decide(struct scan_job *j, int can_strip)
{
	const struct cfg_antivirus *av = &j->act->antivirus;
	int a = ACT_ALLOW;
	size_t i;

	if (j->nvirus > 0)
		a = av->on_virus;
	if (j->nerror > 0 && scan_severity(av->on_error) > scan_severity(a))
		a = av->on_error;
	if (a == ACT_STRIP) {
		/* Every infected part must be one we can cut out. */
		for (i = 0; i < j->nfind; i++)
			if (!j->find[i].error && j->find[i].part == NULL)
				can_strip = 0;
		if (j->more || !can_strip)
			a = ACT_DENY;
	}
	j->action = a;
	if (j->nvirus > 0)
		snprintf(j->type, sizeof(j->type), "virus");
	else if (j->nerror > 0)
		snprintf(j->type, sizeof(j->type), "error");
}

/*
 * The deny message text, with its variables.
 */

static void
scan_var(struct buf *o, const char *name, size_t nlen, const char *reason,
    const struct scan_find *f, const struct scan_job *j)
{
	const char *v = NULL;

#define IS(s) (nlen == strlen(s) && strncmp(name, s, nlen) == 0)
	if (IS("reason"))
		v = reason;
	else if (IS("virus"))
		v = f != NULL && !f->error ? f->what : "";
	else if (IS("filename"))
		v = f != NULL ? f->filename : "";
	else if (IS("action"))
		v = action_name(j->action);
	else if (IS("type"))
		v = j->type;
	else if (IS("recovery"))
		v = "";
#undef IS
	if (v != NULL)
		buf_add(o, v, strlen(v));
	else {
		buf_add(o, "%(", 2);
		buf_add(o, name, nlen);
		buf_add(o, ")%", 2);
	}
}

/* The action's deny message with variables filled in and the message's
 * own line ends, ending with a line end. */
static void
scan_deny_text(struct buf *o, const struct scan_job *j, const char *reason,
    const struct scan_find *f)
{
	const char *t = j->act->deny_message, *end, *eol = j->msg.eol;
	size_t start = o->len;

	if (eol == NULL)
		eol = "\r\n";
	for (; *t != '\0'; t++) {
		if (t[0] == '%' && t[1] == '(' &&
		    (end = strstr(t + 2, ")%")) != NULL &&
		    memchr(t + 2, '\n', (size_t)(end - t - 2)) == NULL) {
			scan_var(o, t + 2, (size_t)(end - t - 2), reason, f, j);
			t = end + 1;
		} else if (*t == '\n' &&
		           (t == j->act->deny_message || t[-1] != '\r'))
			buf_add(o, eol, strlen(eol));
		else if (*t == '\r' && t[1] != '\n')
			continue;
		else
			buf_add_u8(o, (uint8_t)*t);
	}
	if (o->len == start || o->data[o->len - 1] != '\n')
		buf_add(o, eol, strlen(eol));
}

static int
scan_is_8bit(const struct buf *b, size_t from)
{
	size_t i;

	for (i = from; i < b->len; i++)
		if (b->data[i] >= 0x80)
			return 1;
	return 0;
}

/* Content-Type and Content-Transfer-Encoding of a deny text, then the
 * empty line and the text. */
static void
scan_text_part(struct buf *o, const struct scan_job *j, const char *reason,
    const struct scan_find *f)
{
	const char *eol = j->msg.eol;
	struct buf text;

	buf_init(&text, 0);
	scan_deny_text(&text, j, reason, f);
	buf_printf(o, "Content-Type: text/plain; charset=utf-8%s", eol);
	buf_printf(o, "Content-Transfer-Encoding: %s%s%s",
	    scan_is_8bit(&text, 0) ? "8bit" : "7bit", eol, eol);
	buf_add(o, text.data, text.len);
	buf_free(&text);
}

/*
 * Rewriting.
 */

/* The fields a deny message keeps: the envelope, and the threading. */
static int
scan_keep_field(const struct mime_msg *m, const struct mime_field *f)
{
	static const char *const keep[] = {"Date", "From", "Sender", "Reply-To",
	    "To", "Cc", "Bcc", "Subject", "Message-ID", "In-Reply-To",
	    "References", NULL};
	size_t i;

	for (i = 0; keep[i] != NULL; i++)
		if (f->name_len == strlen(keep[i]) &&
		    strncasecmp((const char *)m->data + f->off, keep[i],
		        f->name_len) == 0)
			return 1;
	return 0;
}

static void
scan_build_deny(struct scan_job *j, const char *reason, struct buf *o)
{
	const struct mime_part *root = j->msg.root;
	const struct mime_field *f;
	const char *eol = j->msg.eol;
	size_t i;

	for (i = 0; root != NULL && i < root->nfields; i++) {
		f = &root->fields[i];
		if (!scan_keep_field(&j->msg, f))
			continue;
		buf_add(o, j->data + f->off, f->end - f->off);
		if (j->data[f->end - 1] != '\n')
			buf_add(o, eol, strlen(eol));
	}
	buf_printf(o, "MIME-Version: 1.0%s", eol);
	scan_text_part(o, j, reason, j->nfind ? &j->find[0] : NULL);
}

/* The part a strip replaces: a leaf in a multipart, or the
 * message/rfc822 part around an infected message body.  NULL if the
 * infected bytes are the body of the message itself. */
static const struct mime_part *
scan_strip_target(const struct mime_part *p)
{
	while (p->parent != NULL && p->parent->kind == MIME_MESSAGE)
		p = p->parent;
	if (p->parent == NULL || p->parent->kind != MIME_MULTIPART)
		return NULL;
	return p;
}

static int
scan_target_cmp(const void *a, const void *b)
{
	const struct scan_find *const *x = a, *const *y = b;
	size_t ox = scan_strip_target((*x)->part)->hdr_off;
	size_t oy = scan_strip_target((*y)->part)->hdr_off;

	return ox < oy ? -1 : ox > oy;
}

/* Splice a deny text part in place of each infected part.  -1 if a part
 * cannot be cut out. */
static int
scan_build_strip(struct scan_job *j, struct buf *o)
{
	const struct scan_find *t[SCAN_MAX_FINDINGS];
	const struct mime_part *p;
	char reason[768];
	size_t i, n = 0, pos = 0;

	for (i = 0; i < j->nfind; i++) {
		if (j->find[i].error)
			continue;
		if (j->find[i].part == NULL ||
		    scan_strip_target(j->find[i].part) == NULL)
			return -1;
		t[n++] = &j->find[i];
	}
	qsort(t, n, sizeof(t[0]), scan_target_cmp);
	for (i = 0; i < n; i++) {
		p = scan_strip_target(t[i]->part);
		if (p->hdr_off < pos)
			continue; /* inside a part already replaced */
		buf_add(o, j->data + pos, p->hdr_off - pos);
		scan_find_text(t[i], reason, sizeof(reason));
		scan_text_part(o, j, reason, t[i]);
		pos = p->body_end;
	}
	buf_add(o, j->data + pos, j->len - pos);
	return 0;
}

/*
 * The result: a sealed memfd with the message, its BODYSTRUCTURE and
 * its BODY, one after the other, then the sections that are not byte
 * ranges of the message.
 */

static int
scan_write_all(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		if ((w = write(fd, p, n)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Write the content of a section at *end, or point into the message. */
static int
scan_sect_put(int fd, uint64_t *end, const struct sect_content *c,
    const uint8_t *data, int in_fd, struct scan_sect_res *sr)
{
	sr->status = c->status;
	sr->off = 0;
	sr->len = c->len;
	if (c->len == 0)
		return 0;
	if (c->ref && in_fd) {
		sr->off = c->off;
		return 0;
	}
	sr->off = *end;
	*end += c->len;
	return scan_write_all(
	    fd, c->ref ? data + c->off : c->data.data, c->len);
}

/*
 * The sections wanted, of the message m (parsed: pm) that is at offset 0
 * of fd, from *end on.  A section that asks for what an earlier one did
 * shares its bytes: the same part decoded twice is not written twice.
 */
static int
scan_sections(const struct scan_job *j, const struct buf *m,
    const struct mime_msg *pm, int fd, uint64_t *end, struct scan_res *res)
{
	struct sect s[SCAN_MAX_SECT];
	struct sect_content c;
	struct mime_msg own;
	const struct mime_msg *msg = pm;
	struct buf crlf;
	size_t i, k, n = j->nsect;
	int r, ok = 0;

	if (n == 0)
		return 0;
	memset(s, 0, sizeof(s));
	memset(&own, 0, sizeof(own));
	buf_init(&crlf, 0);
	/* Of the message as the server would serve it: CRLF. */
	if ((r = sect_crlf(m->data, m->len, &crlf)) == -1)
		goto out;
	if (r == 1) {
		if (mime_parse(&own, crlf.data, crlf.len) == -1)
			goto out;
		msg = &own;
	}
	for (i = 0; i < n; i++) {
		if (sect_parse(msg, (int)j->sect[i].binary, j->sect[i].spec,
		        &s[i]) == -1)
			goto out;
		for (k = 0; k < i && !sect_same(&s[k], &s[i]); k++)
			;
		if (k < i) {
			res->sect[i] = res->sect[k];
			continue;
		}
		if (sect_get(msg, &s[i], &c) == -1)
			goto out;
		r = scan_sect_put(
		    fd, end, &c, msg->data, msg == pm, &res->sect[i]);
		sect_content_free(&c);
		if (r == -1)
			goto out;
	}
	res->nsect = (uint32_t)n;
	ok = 1;
out:
	for (i = 0; i < n; i++)
		sect_free(&s[i]);
	mime_free(&own);
	buf_free(&crlf);
	return ok ? 0 : -1;
}

static int
scan_result_fd(
    const struct scan_job *j, const struct buf *m, struct scan_res *res)
{
	struct mime_msg msg;
	struct buf bs, body;
	uint64_t end;
	int fd = -1, ok = 0;

	buf_init(&bs, 0);
	buf_init(&body, 0);
	if (mime_parse(&msg, m->data, m->len) == -1)
		goto out;
	if (bs_write(&msg, 1, &bs) == -1 || bs_write(&msg, 0, &body) == -1) {
		mime_free(&msg);
		goto out;
	}
	fd = memfd_create("imapgw-scan", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	end = m->len + bs.len + body.len;
	if (fd == -1 || scan_write_all(fd, m->data, m->len) == -1 ||
	    scan_write_all(fd, bs.data, bs.len) == -1 ||
	    scan_write_all(fd, body.data, body.len) == -1 ||
	    scan_sections(j, m, &msg, fd, &end, res) == -1 ||
	    fcntl(fd, F_ADD_SEALS,
	        F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) ==
	        -1 ||
	    lseek(fd, 0, SEEK_SET) == -1) {
		log_warn("scan: result memfd");
		mime_free(&msg);
		goto out;
	}
	mime_free(&msg);
	res->fd = fd;
	fd = -1;
	res->msg_off = 0;
	res->msg_len = m->len;
	res->bs_off = m->len;
	res->bs_len = bs.len;
	res->body_off = m->len + bs.len;
	res->body_len = body.len;
	ok = 1;
out:
	if (fd != -1)
		close(fd);
	buf_free(&bs);
	buf_free(&body);
	return ok ? 0 : -1;
}

/*
 * Logging: one event per finding.
 */

static void
scan_log_find(const struct scan_job *j, const struct scan_find *f)
{
	char text[768];

	scan_find_text(f, text, sizeof(text));
	log_event(LOG_NOTICE, f->error ? "scan error" : "virus found", "client",
	    j->client, "user", j->user, "kind", scan_kind_name(j->kind),
	    "action", action_name(j->action), "reason", text, "virus",
	    f->error ? "" : f->what, "part",
	    f->section[0] ? f->section : "message", "filename", f->filename,
	    NULL);
}

static void
scan_log(const struct scan_job *j, const struct scan_res *res)
{
	size_t i;

	for (i = 0; i < j->nfind; i++)
		scan_log_find(j, &j->find[i]);
	if (j->oversize)
		log_event(LOG_NOTICE,
		    j->action == ACT_ALLOW ? "not scanned" : "oversize",
		    "client", j->client, "user", j->user, "kind",
		    scan_kind_name(j->kind), "action", action_name(j->action),
		    "reason", res->reason, NULL);
	else if (j->nerror > 0 && j->action == ACT_ALLOW)
		log_event(LOG_WARNING, "delivered unscanned", "client",
		    j->client, "user", j->user, "kind", scan_kind_name(j->kind),
		    "action", "allow", "reason", res->reason, NULL);
}

/*
 * Applying the decision.
 */

static void
scan_error_res(struct scan_res *res, const char *why)
{
	scan_res_clear(res);
	res->nsect = 0;
	res->verdict = SCAN_ERROR;
	res->action = ACT_ALLOW;
	snprintf(res->reason, sizeof(res->reason), "%s", why);
}

static void
scan_changed(struct scan_job *j, struct buf *m, struct scan_res *res)
{
	if (scan_result_fd(j, m, res) == -1) {
		scan_error_res(res, "cannot build the rewritten message");
		return;
	}
	res->verdict = SCAN_CHANGED;
	res->action = (uint32_t)j->action;
}

/* strip: rewrite, then scan the result; if it is not clean, deny. */
static int
scan_strip(struct scan_job *j, struct scan_res *res)
{
	struct buf m;
	size_t nv = j->nvirus, ne = j->nerror;

	buf_init(&m, 0);
	if (scan_build_strip(j, &m) == -1) {
		buf_free(&m);
		return -1;
	}
	scan_whole(j, m.data, m.len, 0);
	/* A new virus: strip did not clean it.  A new error counts unless
	 * on_error allows unscanned content anyway. */
	if (j->nvirus != nv ||
	    (j->nerror != ne && j->act->antivirus.on_error != ACT_ALLOW)) {
		buf_free(&m);
		return -1;
	}
	scan_changed(j, &m, res);
	buf_free(&m);
	return 0;
}

static void
scan_apply(struct scan_job *j, struct scan_res *res)
{
	struct buf m;

	scan_reason(j, res->reason, sizeof(res->reason));
	if (j->action == ACT_ALLOW) {
		res->verdict = SCAN_CLEAN;
		res->action = ACT_ALLOW;
		return;
	}
	if (j->action == ACT_DROP) {
		res->verdict = SCAN_DROP;
		res->action = ACT_DROP;
		return;
	}
	if (j->kind == SCAN_APPEND) {
		/* An upload is refused, never rewritten. */
		res->verdict = SCAN_REJECT;
		res->action = (uint32_t)j->action;
		return;
	}
	if (j->action == ACT_STRIP && scan_strip(j, res) == 0)
		return;
	if (j->action == ACT_STRIP) {
		/* What strip could not clean, deny does. */
		scan_decide(j, 0);
		scan_reason(j, res->reason, sizeof(res->reason));
		if (j->action != ACT_DENY) {
			scan_apply(j, res);
			return;
		}
	}
	buf_init(&m, 0);
	scan_build_deny(j, res->reason, &m);
	scan_changed(j, &m, res);
	buf_free(&m);
}

static void
scan_oversize(struct scan_job *j)
{
	j->oversize = 1;
	j->action = j->act->general.oversize;
	snprintf(j->type, sizeof(j->type), "oversize");
}

static void
scan_set_deadline(struct scan_job *j, uint64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, &j->deadline);
	j->deadline.tv_sec += (time_t)(ms / 1000);
	j->deadline.tv_nsec += (long)(ms % 1000) * 1000000;
	if (j->deadline.tv_nsec >= 1000000000) {
		j->deadline.tv_sec++;
		j->deadline.tv_nsec -= 1000000000;
	}
}

static void
scan_run(struct scan_job *j)
{
	const struct cfg_antivirus *av = &j->act->antivirus;

	if ((uint64_t)j->len > j->act->general.max_email_size) {
		scan_oversize(j);
		return;
	}
	if (!av->enabled) {
		j->action = ACT_ALLOW;
		return;
	}
	av_limits_from(av, &j->lim);
	scan_set_deadline(j, av->max_scan_time_ms);
	if ((j->engine = av_engines_find(av->database)) == NULL)
		scan_add_error(j, NULL, "no antivirus engine is loaded");
	else {
		scan_parts(j, j->msg.root);
		scan_whole(j, j->data, j->len, j->nvirus > 0);
	}
	scan_decide(j, 1);
}

void
scan_message(const struct cfg_action *act, int kind, const char *user,
    const char *client, const void *data, size_t len, struct scan_res *res)
{
	scan_message_sect(act, kind, user, client, data, len, NULL, 0, res);
}

void
scan_message_sect(const struct cfg_action *act, int kind, const char *user,
    const char *client, const void *data, size_t len,
    const struct scan_sect *sect, size_t nsect, struct scan_res *res)
{
	struct scan_job *j;
	struct timespec t0, t1;

	scan_res_init(res);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		scan_error_res(res, "out of memory");
		return;
	}
	j->act = act;
	j->kind = kind;
	j->sect = sect;
	j->nsect = nsect > SCAN_MAX_SECT ? SCAN_MAX_SECT : nsect;
	j->user = user;
	j->client = client;
	j->data = data;
	j->len = len;
	if (mime_parse(&j->msg, data, len) == -1) {
		scan_error_res(res, "out of memory parsing the message");
		free(j);
		return;
	}
	scan_run(j);
	scan_apply(j, res);
	scan_ascii(res->reason);
	scan_log(j, res);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	log_debug("scan: %s %zu bytes, %zu parts, %s, action %s, %u "
	          "sections, %ld ms",
	    scan_kind_name(kind), len, j->msg.nparts,
	    scan_verdict_name((int)res->verdict), action_name(j->action),
	    res->nsect,
	    (long)((t1.tv_sec - t0.tv_sec) * 1000 +
	           (t1.tv_nsec - t0.tv_nsec) / 1000000));
	mime_free(&j->msg);
	free(j);
}

/*
 * Loading, before the sandbox.
 */

int
scan_load(const struct config *cfg, char *err, size_t len)
{
	mime_init();
	if (av_init() == -1) {
		snprintf(err, len, "libclamav cannot be initialised");
		return -1;
	}
	if (av_engines_load(cfg, err, len) == -1)
		return -1;
	return 0;
}

int
scan_ready(char *err, size_t len)
{
	/* Inside the chroot, state_dir/scand/tmp is /tmp. */
	return av_engines_ready("/tmp", err, len);
}

const char *
scan_missing(const struct config *cfg)
{
	static char what[1100];
	size_t i;

	for (i = 0; i < cfg->nactions; i++) {
		if (cfg->actions[i].antivirus.enabled && cfg->actions[i].used &&
		    av_engines_find(cfg->actions[i].antivirus.database) ==
		        NULL) {
			snprintf(what, sizeof(what), "the antivirus database %s",
			    cfg->actions[i].antivirus.database);
			return what;
		}
	}
	return NULL;
}

/*
 * Requests and answers.
 */

static int scan_refuse(struct scan_res *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
scan_refuse(struct scan_res *res, const char *fmt, ...)
{
	va_list ap;

	res->verdict = SCAN_ERROR;
	res->action = ACT_ALLOW;
	va_start(ap, fmt);
	vsnprintf(res->reason, sizeof(res->reason), fmt, ap);
	va_end(ap);
	log_warnx("scan request %llu refused: %s",
	    (unsigned long long)res->reqid, res->reason);
	return 1;
}

/*
 * The sections of a request, after its size; none in an old-format one.
 * More than SCAN_MAX_SECT are read (the frame bounds them) and dropped:
 * the request is refused.  Returns the count announced.
 */
static uint32_t
scan_req_sections(struct reader *r, struct scan_req *req, uint32_t *badbin,
    uint32_t *longspec)
{
	uint32_t i, n, bin;
	char *spec;

	*badbin = *longspec = UINT32_MAX;
	if (r->err || r->left == 0)
		return 0;
	req->has_sect = 1;
	n = rd_u32(r);
	for (i = 0; i < n && !r->err; i++) {
		bin = rd_u32(r);
		if ((spec = rd_str(r, IMSG_MAX_PAYLOAD)) == NULL)
			break;
		if (bin > 1 && *badbin == UINT32_MAX)
			*badbin = i;
		if (strlen(spec) > SCAN_MAX_SECT_SPEC &&
		    *longspec == UINT32_MAX)
			*longspec = i;
		if (i >= SCAN_MAX_SECT) {
			free(spec);
			continue;
		}
		req->sect[i].binary = bin;
		req->sect[i].spec = spec;
		req->nsect = i + 1;
	}
	return n;
}

int
scan_req_read(struct imsg *imsg, const struct config *cfg, struct scan_req *req,
    struct scan_res *res)
{
	struct reader r;
	struct stat st;
	uint32_t nsect, badbin, longspec;

	memset(req, 0, sizeof(*req));
	req->fd = imsg->fd;
	imsg->fd = -1;
	scan_res_init(res);
	imsg_reader(imsg, &r);
	req->reqid = rd_u64(&r);
	req->kind = rd_u32(&r);
	req->action = rd_u32(&r);
	req->user = rd_str(&r, 1024);
	req->client = rd_str(&r, 256);
	req->size = rd_u64(&r);
	nsect = scan_req_sections(&r, req, &badbin, &longspec);
	if (rd_end(&r) != 0 || req->user == NULL || req->client == NULL)
		return -1;
	res->reqid = req->reqid;
	res->has_sect = req->has_sect;
	if (req->kind != SCAN_FETCH && req->kind != SCAN_APPEND)
		return scan_refuse(res, "unknown kind %u", req->kind);
	if (req->action >= cfg->nactions)
		return scan_refuse(res, "no action %u (the config has %zu)",
		    req->action, cfg->nactions);
	if (req->fd == -1)
		return scan_refuse(res, "no message fd");
	if (fstat(req->fd, &st) == -1 || !S_ISREG(st.st_mode))
		return scan_refuse(res, "the message fd is not a memfd");
	if ((uint64_t)st.st_size != req->size)
		return scan_refuse(res,
		    "size %llu does not match the message fd (%lld bytes)",
		    (unsigned long long)req->size, (long long)st.st_size);
	if (req->size > SIZE_MAX / 2)
		return scan_refuse(res, "message too large");
	if (nsect > SCAN_MAX_SECT)
		return scan_refuse(
		    res, "%u sections (at most %d)", nsect, SCAN_MAX_SECT);
	if (badbin != UINT32_MAX)
		return scan_refuse(res, "section %u: binary is %u", badbin,
		    req->sect[badbin].binary);
	if (longspec != UINT32_MAX)
		return scan_refuse(res, "section %u: spec longer than %d bytes",
		    longspec, SCAN_MAX_SECT_SPEC);
	return 0;
}

void
scan_req_clear(struct scan_req *req)
{
	uint32_t i;

	for (i = 0; i < req->nsect; i++)
		free(req->sect[i].spec);
	free(req->user);
	free(req->client);
	if (req->fd != -1)
		close(req->fd);
	memset(req, 0, sizeof(*req));
	req->fd = -1;
}

/*
 * The message bytes.  A memfd sealed against shrinking is mapped; any
 * other is read into memory, because the sender could truncate it
 * under our mapping (SIGBUS).
 */
static void *
scan_map(int fd, size_t len, int *mapped)
{
	uint8_t *p;
	ssize_t n;
	size_t off = 0;
	int seals;

	seals = fcntl(fd, F_GET_SEALS);
	if (seals != -1 && (seals & F_SEAL_SHRINK)) {
		p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
		*mapped = 1;
		return p == MAP_FAILED ? NULL : p;
	}
	*mapped = 0;
	if ((p = malloc(len)) == NULL)
		return NULL;
	while (off < len) {
		n = pread(fd, p + off, len - off, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(p);
			return NULL;
		}
		off += (size_t)n;
	}
	return p;
}

void
scan_request(
    const struct config *cfg, const struct scan_req *req, struct scan_res *res)
{
	const struct cfg_action *act = &cfg->actions[req->action];
	size_t len = (size_t)req->size;
	int mapped = 0;
	void *p = NULL;

	if (len > 0 && (p = scan_map(req->fd, len, &mapped)) == NULL) {
		scan_res_init(res);
		res->reqid = req->reqid;
		res->has_sect = req->has_sect;
		scan_error_res(res, "cannot read the message");
		log_warn("scan request %llu: reading the message",
		    (unsigned long long)req->reqid);
		return;
	}
	scan_message_sect(act, (int)req->kind, req->user, req->client,
	    p != NULL ? p : "", len, req->sect, req->nsect, res);
	res->reqid = req->reqid;
	res->has_sect = req->has_sect;
	if (mapped)
		munmap(p, len);
	else
		free(p);
}

int
scan_res_write(const struct scan_res *res, struct buf *b)
{
	uint32_t i, nsect;

	if (buf_add_u64(b, res->reqid) == -1 ||
	    buf_add_u32(b, res->verdict) == -1 ||
	    buf_add_u32(b, res->action) == -1 ||
	    buf_add_str(b, res->reason) == -1 ||
	    buf_add_u64(b, res->msg_off) == -1 ||
	    buf_add_u64(b, res->msg_len) == -1 ||
	    buf_add_u64(b, res->bs_off) == -1 ||
	    buf_add_u64(b, res->bs_len) == -1 ||
	    buf_add_u64(b, res->body_off) == -1 ||
	    buf_add_u64(b, res->body_len) == -1)
		return -1;
	/* An old-format request gets an old-format answer. */
	if (!res->has_sect)
		return 0;
	nsect = res->verdict == SCAN_CHANGED ? res->nsect : 0;
	if (buf_add_u32(b, nsect) == -1)
		return -1;
	for (i = 0; i < nsect; i++)
		if (buf_add_u32(b, res->sect[i].status) == -1 ||
		    buf_add_u64(b, res->sect[i].off) == -1 ||
		    buf_add_u64(b, res->sect[i].len) == -1)
			return -1;
	return 0;
}
