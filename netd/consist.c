/*
 * Strict consistency: one sanitized view of every message.
 *
 * RFC 3501 2.3.1.1: for a mailbox, UIDVALIDITY and UID, the size,
 * envelope, body structure and every section of a message never change,
 * and clients cache them.  So in strict mode (the default) the gateway
 * judges a message the first time a client asks for anything derived
 * from it, and answers every item from the sanitized message.
 *
 * A client FETCH of derived items without a whole message (RFC822.SIZE,
 * BODYSTRUCTURE, ENVELOPE, sections, partials ...) is held, and the
 * client's later commands wait behind it.  Once no earlier FETCH of the
 * client is in flight (so no response can be mistaken for ours), the
 * gateway sends its own commands upstream, on the same connection:
 *
 *   igwN.1 [UID ]FETCH <the client's set> (UID)
 *	which messages the set names.  Each is looked up in the verdict
 *	cache (common/vcache.h) by user, mailbox, UIDVALIDITY and UID.
 *   igwN.2 [UID ]FETCH <up to PJ_BATCH of the unknown ones> (UID BODY.PEEK[])
 *	the whole messages, spooled; each is looked up by its SHA-256
 *	(the same bytes judged elsewhere), else judged by scand, and
 *	remembered.  At most PJ_MAX_SCANS verdicts are outstanding: the
 *	server's next response waits in the socket meanwhile.
 *
 * Our commands use sequence numbers when the client's does: a server
 * sends no EXPUNGE while it answers a FETCH by sequence numbers, so the
 * numbers the client meant stay right.  With UID FETCH, EXPUNGEs may
 * come and go to the client in order (it expects them there).  Every
 * untagged response that is not data of our command goes to the client
 * as it arrives, once; our data never does.
 *
 * Then the client's FETCH goes upstream, for exactly the messages we
 * judged, with UID added if it lacked it; its responses are answered by
 * imap_msg.c from the map built here: the server's answer untouched for
 * a clean message, the items of the sanitized message for a changed one.
 */
#include <sys/mman.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "consist.h"
#include "imap_parse.h"
#include "log.h"
#include "scanreq.h"
#include "session.h"
#include "util.h"
#include "vcache.h"

#define PJ_BATCH 32 /* messages in one of our whole-message fetches */
#define PJ_MAX_SCANS 4 /* verdicts outstanding */
#define PJ_MAX_FDS 256 /* sanitized messages kept open per command */
#define PJ_SET_MAX (16 * 1024) /* longest set we write upstream */

enum { PJ_WAIT = 0, PJ_PROBE, PJ_BODIES };

struct pjscan;

struct prejudge {
	struct session *s;
	struct lineasm la; /* the client's FETCH, held */
	struct fcmd f; /* its entry once it goes upstream */
	int uid_mode; /* UID FETCH */
	int add_uid; /* UID added to the client's items */
	int macro; /* the items are ALL, FAST or FULL */
	size_t set_off, set_len, atts_off, atts_len;
	int phase;
	char tag[32]; /* our command in flight */
	int failed; /* the probe failed: the client's command goes as is */
	int judge; /* 0: only waits for the FETCHes before it */
	struct pjmap *map;
	size_t next; /* first map entry not yet asked for */
	unsigned nfds;
	unsigned scans; /* verdicts outstanding */
	struct pjscan *scanlist;
};

struct pjscan {
	struct pjscan *next;
	struct prejudge *pj;
	struct scan_req *req;
	uint32_t uid;
	uint64_t size;
	uint8_t sha[32];
};

static void pj_step(struct session *);

/* Map */

struct pjmsg *
pjmap_find(struct pjmap *map, uint32_t uid)
{
	size_t lo = 0, hi, mid;

	if (map == NULL)
		return NULL;
	hi = map->n;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (map->m[mid].uid == uid)
			return &map->m[mid];
		if (map->m[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

void
pjmap_free(struct pjmap *map)
{
	size_t i;

	if (map == NULL)
		return;
	for (i = 0; i < map->n; i++) {
		if (map->m[i].fd != -1)
			close(map->m[i].fd);
		free(map->m[i].reason);
	}
	free(map->m);
	free(map);
}

static void
pjmap_add(struct pjmap *map, uint32_t seq, uint32_t uid)
{
	struct pjmsg *m;

	if (map->n == map->cap) {
		size_t ncap = map->cap ? map->cap * 2 : 64;

		if ((m = reallocarray(map->m, ncap, sizeof(*m))) == NULL)
			fatal("reallocarray");
		map->m = m;
		map->cap = ncap;
	}
	m = &map->m[map->n++];
	memset(m, 0, sizeof(*m));
	m->seq = seq;
	m->uid = uid;
	m->fd = -1;
}

static int
pjmsg_cmp(const void *a, const void *b)
{
	const struct pjmsg *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Sorted by UID, each once (a server may repeat a message). */
static void
pjmap_sort(struct pjmap *map)
{
	size_t i, o = 0;

	qsort(map->m, map->n, sizeof(*map->m), pjmsg_cmp);
	for (i = 0; i < map->n; i++)
		if (o == 0 || map->m[o - 1].uid != map->m[i].uid)
			map->m[o++] = map->m[i];
	map->n = o;
}

/* Verdict cache */

int
consist_key(struct session *s, uint32_t uid, struct vc_msgkey *k)
{
	if (!s->mbox_ok || uid == 0)
		return 0;
	k->action = s->act->name;
	k->user = s->user;
	k->mailbox = s->mbox;
	k->uidvalidity = s->uidvalidity;
	k->uid = uid;
	return 1;
}

/* A clean verdict of other rules, signatures or databases than the
 * action's now is stale: the message is judged again.  A changed one
 * stays (it never turns back into the original). */
static int
fresh(struct session *s, int hit, struct vc_entry *e)
{
	if (!hit)
		return 0;
	if (e->cls == VC_CLEAN && e->stamp != s->act->judge_stamp) {
		vc_entry_free(e);
		return 0;
	}
	return 1;
}

int
consist_cached(struct session *s, uint32_t uid, struct vc_entry *e)
{
	struct vc_msgkey k;

	if (s->n->vc == NULL || !consist_key(s, uid, &k))
		return 0;
	return fresh(s, vcache_get_msg(s->n->vc, &k, e) == 1, e);
}

int
consist_cached_sha(struct session *s, const uint8_t sha[32], struct vc_entry *e)
{
	if (s->n->vc == NULL)
		return 0;
	return fresh(s, vcache_get_sha(s->n->vc, s->act->name, sha, e) == 1, e);
}

void
consist_remember(struct session *s, int have_uid, uint32_t uid,
    const uint8_t sha[32], uint64_t size, const struct scan_result *res)
{
	struct vc_msgkey k;
	struct vc_entry e;
	uint8_t *msg = NULL;

	if (s->n->vc == NULL ||
	    (res->verdict != SCAN_CLEAN && res->verdict != SCAN_CHANGED))
		return;
	memset(&e, 0, sizeof(e));
	e.cls = res->verdict == SCAN_CLEAN ? VC_CLEAN : VC_CHANGED;
	memcpy(e.sha, sha, 32);
	e.orig_size = size;
	e.stamp = s->act->judge_stamp;
	e.action = res->action;
	snprintf(e.reason, sizeof(e.reason), "%.255s", res->reason);
	if (e.cls == VC_CHANGED) {
		if ((msg = malloc(res->msg_len ? res->msg_len : 1)) == NULL)
			fatal("malloc");
		if (res->msg_len &&
		    pread(res->fd, msg, res->msg_len, (off_t)res->msg_off) !=
		        (ssize_t)res->msg_len) {
			log_warn("verdict cache: cannot read the sanitized "
			         "message");
			free(msg);
			return;
		}
		e.msg = msg;
		e.msglen = res->msg_len;
	}
	if (!have_uid || !consist_key(s, uid, &k)) {
		/* The verdict of the bytes only. */
		memset(&k, 0, sizeof(k));
		k.action = s->act->name;
	}
	vcache_put(s->n->vc, &k, &e);
	free(msg);
}

int
consist_sha(int fd, uint64_t len, uint8_t sha[32])
{
	EVP_MD_CTX *ctx;
	uint8_t buf[65536];
	uint64_t off = 0;
	unsigned mdlen;
	ssize_t n;
	int rc = -1;

	if ((ctx = EVP_MD_CTX_new()) == NULL)
		fatalx("EVP_MD_CTX_new");
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto out;
	while (off < len) {
		n = pread(fd, buf,
		    len - off < sizeof(buf) ? (size_t)(len - off) : sizeof(buf),
		    (off_t)off);
		if (n <= 0)
			goto out;
		if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			goto out;
		off += (uint64_t)n;
	}
	if (EVP_DigestFinal_ex(ctx, sha, &mdlen) == 1 && mdlen == 32)
		rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

int
consist_memfd(const uint8_t *p, size_t len)
{
	int fd;

	fd = memfd_create("imapgw-sanitized", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd != -1 && len > 0 && write_all(fd, p, len) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

int
consist_fd_copy(int src, uint64_t off, uint64_t len)
{
	uint8_t buf[65536];
	uint64_t done = 0;
	ssize_t n;
	int fd;

	if ((fd = consist_memfd(NULL, 0)) == -1)
		return -1;
	while (done < len) {
		n = pread(src, buf,
		    len - done < sizeof(buf) ? (size_t)(len - done)
		                             : sizeof(buf),
		    (off_t)(off + done));
		if (n <= 0 || write_all(fd, buf, (size_t)n) == -1) {
			close(fd);
			return -1;
		}
		done += (uint64_t)n;
	}
	return fd;
}

/* Mailbox */

void
consist_client(struct session *s, struct lineasm *la, struct imap_cmd *c)
{
	const uint8_t *b = buf_head(&la->text);

	switch (c->kind) {
	case IMAP_CMD_SELECT:
	case IMAP_CMD_EXAMINE:
		s->mbox_ok = 0;
		snprintf(s->sel_tag, sizeof(s->sel_tag), "%.*s",
		    (int)c->tag.len, b + c->tag.off);
		s->sel_uidvalidity = 0;
		s->sel_uidnext = 0;
		if (imap_str_copy(
		        b, &c->mailbox, s->sel_mbox, sizeof(s->sel_mbox)) < 0)
			s->sel_mbox[0] = '\0'; /* a literal: not keyed */
		else if (strcasecmp(s->sel_mbox, "INBOX") == 0)
			snprintf(s->sel_mbox, sizeof(s->sel_mbox), "INBOX");
		break;
	case IMAP_CMD_CLOSE:
	case IMAP_CMD_UNSELECT:
		s->mbox_ok = 0;
		break;
	default:
		break;
	}
}

static void
mailbox_note(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	if (s->sel_tag[0] == '\0') {
		if (r->kind == IMAP_RESP_EXISTS)
			s->grew = 1;
		return;
	}
	if (r->kind == IMAP_RESP_COND &&
	    r->code.kind == IMAP_CODE_UIDVALIDITY && r->code.has_num &&
	    r->code.num > 0 && r->code.num <= UINT32_MAX)
		s->sel_uidvalidity = (uint32_t)r->code.num;
	if (r->kind == IMAP_RESP_COND && r->code.kind == IMAP_CODE_UIDNEXT &&
	    r->code.has_num && r->code.num > 0 && r->code.num <= UINT32_MAX)
		s->sel_uidnext = (uint32_t)r->code.num;
	if (r->kind != IMAP_RESP_TAGGED ||
	    !lineasm_is(la, r->tag.off, r->tag.len, s->sel_tag))
		return;
	s->sel_tag[0] = '\0';
	if (r->status == IMAP_ST_OK && s->sel_mbox[0] && s->sel_uidvalidity) {
		snprintf(s->mbox, sizeof(s->mbox), "%s", s->sel_mbox);
		s->uidvalidity = s->sel_uidvalidity;
		s->uidnext = s->sel_uidnext;
		s->grew = 0;
		s->mbox_ok = 1;
	}
}

/* Commands */

static void
own_fetch(struct prejudge *pj, const char *set, const char *items)
{
	struct session *s = pj->s;
	struct buf b;

	snprintf(pj->tag, sizeof(pj->tag), "igw%llu.%u",
	    (unsigned long long)s->id, ++s->own_seq);
	buf_init(&b, 0);
	buf_printf(&b, "%s %sFETCH %s %s\r\n", pj->tag,
	    pj->uid_mode ? "UID " : "", set, items);
	outq_buf(&s->to_s.q, &b);
	buf_free(&b);
	session_kick(s);
}

/* A sorted list of numbers as an IMAP set ("1:5,7,9:10"). */
static void
set_write(struct buf *b, const uint32_t *v, size_t n)
{
	size_t i = 0, j;

	while (i < n) {
		j = i;
		while (j + 1 < n && v[j + 1] == v[j] + 1)
			j++;
		if (buf_used(b))
			buf_add_u8(b, ',');
		if (j == i)
			buf_printf(b, "%u", v[i]);
		else
			buf_printf(b, "%u:%u", v[i], v[j]);
		i = j + 1;
	}
}

/* The numbers our commands name the map's entries by. */
static uint32_t
pj_num(const struct prejudge *pj, const struct pjmsg *m)
{
	return pj->uid_mode ? m->uid : m->seq;
}

static int
u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int
pj_set(const struct prejudge *pj, struct buf *out, int only_unknown,
    size_t from, size_t max, size_t *upto)
{
	uint32_t *v;
	size_t i, n = 0;

	if ((v = calloc(pj->map->n ? pj->map->n : 1, sizeof(*v))) == NULL)
		fatal("calloc");
	for (i = from; i < pj->map->n && n < max; i++) {
		if (only_unknown &&
		    (pj->map->m[i].cls != PJ_UNKNOWN || pj->map->m[i].asked))
			continue;
		v[n++] = pj_num(pj, &pj->map->m[i]);
	}
	if (upto)
		*upto = i;
	qsort(v, n, sizeof(*v), u32_cmp);
	set_write(out, v, n);
	free(v);
	return (int)n;
}

static const char *
macro_items(int macro)
{
	switch (macro) {
	case IMAP_FA_ALL:
		return "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE";
	case IMAP_FA_FAST:
		return "FLAGS INTERNALDATE RFC822.SIZE";
	default:
		return "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY";
	}
}

/*
 * The client's FETCH as it goes upstream: for the messages judged, with
 * UID added.  A set that would be too long stays the client's (messages
 * it names that were not judged are answered as scan errors).
 */
static void
pj_forward(struct prejudge *pj)
{
	struct session *s = pj->s;
	const uint8_t *b = buf_head(&pj->la.text);
	size_t len = buf_used(&pj->la.text);
	size_t aend = pj->atts_off + pj->atts_len;
	struct buf set, out;
	struct fcmd *f;

	buf_init(&set, 0);
	if (pj->judge && !pj->failed && pj->map->n > 0)
		pj_set(pj, &set, 0, 0, SIZE_MAX, NULL);
	if (buf_used(&set) == 0 || buf_used(&set) > PJ_SET_MAX) {
		buf_reset(&set);
		buf_add(&set, b + pj->set_off, pj->set_len);
	}
	buf_init(&out, 0);
	buf_add(&out, b, pj->set_off);
	buf_add(&out, buf_head(&set), buf_used(&set));
	buf_add(&out, b + pj->set_off + pj->set_len,
	    pj->atts_off - (pj->set_off + pj->set_len));
	if (!pj->add_uid)
		buf_add(&out, b + pj->atts_off, pj->atts_len);
	else if (pj->macro)
		buf_printf(&out, "(%s UID)", macro_items(pj->macro));
	else if (b[pj->atts_off] == '(')
		buf_printf(
		    &out, "%.*s UID)", (int)pj->atts_len - 1, b + pj->atts_off);
	else
		buf_printf(
		    &out, "(%.*s UID)", (int)pj->atts_len, b + pj->atts_off);
	buf_add(&out, b + aend, len - aend);
	buf_free(&set);

	/* Nothing else of the client is in flight: there is room. */
	if ((f = fcmd_push(s)) == NULL)
		fatalx("consist: no FETCH slot");
	*f = pj->f;
	f->map = pj->map;
	pj->map = NULL;
	outq_buf(&s->to_s.q, &out);
	buf_free(&out);
}

static void
pj_free(struct prejudge *pj)
{
	struct pjscan *sc, *next;

	for (sc = pj->scanlist; sc; sc = next) {
		next = sc->next;
		scan_cancel(sc->req);
		free(sc);
	}
	pjmap_free(pj->map);
	lineasm_reset(&pj->la);
	buf_free(&pj->la.text);
	free(pj);
}

int
consist_in(const uint32_t *v, size_t n, uint32_t x)
{
	size_t lo = 0, hi = n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (v[mid] == x)
			return 1;
		if (v[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/*
 * The mailbox's mark covers the session when the SELECT's UIDNEXT says no
 * UID above the mark can exist (and no EXISTS came since): every message
 * the session can see was judged under the action's stamp now, and the
 * client's FETCH needs no probe.
 */
int
consist_mark(struct session *s, struct fcmd *f)
{
	struct vc_msgkey k;
	uint32_t upto, *changed;
	uint64_t stamp;
	size_t n;

	if (s->n->vc == NULL || !s->mbox_ok || s->grew || s->uidnext == 0 ||
	    !consist_key(s, 1, &k))
		return 0;
	if (!vcache_get_mark(s->n->vc, &k, &upto, &stamp, &changed, &n))
		return 0;
	if (stamp != s->act->judge_stamp || upto == 0 ||
	    upto < s->uidnext - 1) {
		free(changed);
		return 0;
	}
	f->markw = upto;
	f->changed = changed;
	f->nchanged = n;
	return 1;
}

/* A probe of the whole mailbox ("1:*") whose every message got a
 * verdict: the mailbox's mark. */
static void
pj_mark(struct session *s, struct prejudge *pj)
{
	struct vc_msgkey k;
	uint32_t *changed;
	size_t i, n = 0;

	if (!pj->judge || pj->failed || pj->map == NULL || pj->map->n == 0 ||
	    s->n->vc == NULL || pj->set_len != 3 ||
	    memcmp(buf_head(&pj->la.text) + pj->set_off, "1:*", 3) != 0 ||
	    !consist_key(s, 1, &k))
		return;
	if ((changed = calloc(pj->map->n, sizeof(*changed))) == NULL)
		fatal("calloc");
	for (i = 0; i < pj->map->n; i++) {
		if (pj->map->m[i].cls == PJ_CHANGED)
			changed[n++] = pj->map->m[i].uid;
		else if (pj->map->m[i].cls != PJ_CLEAN)
			break;
	}
	if (i == pj->map->n && n <= VC_MARK_MAX)
		vcache_put_mark(s->n->vc, &k, pj->map->m[pj->map->n - 1].uid,
		    s->act->judge_stamp, changed, n);
	free(changed);
}

/* Done judging: the client's command goes, and the client may go on. */
static void
pj_finish(struct session *s)
{
	struct prejudge *pj = s->pj;

	pj_mark(s, pj);
	pj_forward(pj);
	s->pj = NULL;
	pj_free(pj);
	session_kick(s);
}

/* Ask for the next batch of unknown messages, or finish. */
static void
pj_step(struct session *s)
{
	struct prejudge *pj = s->pj;
	struct buf set;
	size_t i, upto;
	int n;

	if (pj->tag[0])
		return; /* a command of ours is in flight */
	buf_init(&set, 0);
	n = pj_set(pj, &set, 1, pj->next, PJ_BATCH, &upto);
	if (n > 0) {
		for (i = pj->next; i < upto; i++)
			if (pj->map->m[i].cls == PJ_UNKNOWN)
				pj->map->m[i].asked = 1;
		pj->next = upto;
		buf_add_u8(&set, '\0');
		own_fetch(
		    pj, (const char *)buf_head(&set), "(UID BODY.PEEK[])");
		buf_free(&set);
		return;
	}
	buf_free(&set);
	if (pj->scans == 0)
		pj_finish(s);
}

/* Start when nothing of the client that could answer FETCH data is in
 * flight: its responses could not be told from ours. */
void
consist_kick(struct session *s)
{
	struct prejudge *pj = s->pj;

	if (pj == NULL || pj->phase != PJ_WAIT || s->nfcmd > 0 ||
	    s->ajob != NULL || s->own_tag[0])
		return;
	if (!pj->judge) {
		pj_finish(s);
		return;
	}
	pj->phase = PJ_PROBE;
	pj->map = calloc(1, sizeof(*pj->map));
	if (pj->map == NULL)
		fatal("calloc");
	{
		char set[PJ_SET_MAX + 1];
		size_t n = pj->set_len < PJ_SET_MAX ? pj->set_len : PJ_SET_MAX;

		memcpy(set, buf_head(&pj->la.text) + pj->set_off, n);
		set[n] = '\0';
		own_fetch(pj, set, "(UID)");
	}
}

int
consist_command(struct session *s, struct lineasm *la, struct imap_cmd *c,
    struct fcmd *f, int judge)
{
	struct prejudge *pj;

	if ((pj = calloc(1, sizeof(*pj))) == NULL)
		fatal("calloc");
	pj->s = s;
	pj->f = *f;
	pj->judge = judge;
	pj->uid_mode = c->uid;
	pj->add_uid = f->add_uid;
	pj->macro = c->fetch.macro != IMAP_FA_OTHER ? (int)c->fetch.macro : 0;
	pj->set_off = c->seqset.off;
	pj->set_len = c->seqset.len;
	pj->atts_off = c->fetch.atts.off;
	pj->atts_len = c->fetch.atts.len;
	lineasm_move(&pj->la, la);
	s->pj = pj;
	consist_kick(s);
	return 1;
}

/* Responses */

static int
fetch_only_uid(const struct imap_resp *r, uint32_t *uid)
{
	unsigned i, n = 0;

	*uid = 0;
	for (i = 0; i < r->fetch.nitem; i++) {
		const struct imap_item *it = &r->fetch.item[i];

		if (it->att.kind == IMAP_FA_UID && it->has_num && it->num > 0 &&
		    it->num <= UINT32_MAX) {
			*uid = (uint32_t)it->num;
			n++;
		} else if (it->att.kind != IMAP_FA_MODSEQ)
			return 0;
	}
	return n == 1;
}

static void
pj_verdict(void *arg, struct scan_result *res)
{
	struct pjscan *sc = arg, **pp;
	struct prejudge *pj = sc->pj;
	struct session *s = pj->s;
	struct pjmsg *m = pjmap_find(pj->map, sc->uid);

	for (pp = &pj->scanlist; *pp; pp = &(*pp)->next)
		if (*pp == sc) {
			*pp = sc->next;
			break;
		}
	pj->scans--;
	if (res->verdict == SCAN_DROP) {
		log_event(LOG_NOTICE, "message dropped", "client", s->client,
		    "user", s->user, "reason", res->reason, NULL);
		if (res->fd != -1)
			close(res->fd);
		free(sc);
		if (res->action == ACT_BLOCK) {
			session_block(s, res->reason);
			session_end(s, "blocked by policy");
		} else
			session_end(s, "dropped by policy");
		return;
	}
	consist_remember(s, 1, sc->uid, sc->sha, sc->size, res);
	if (m != NULL) {
		memcpy(m->sha, sc->sha, 32);
		m->have_sha = 1;
		switch (res->verdict) {
		case SCAN_CLEAN:
			m->cls = PJ_CLEAN;
			break;
		case SCAN_CHANGED:
			m->cls = PJ_CHANGED;
			if (pj->nfds < PJ_MAX_FDS &&
			    (m->fd = consist_fd_copy(
			         res->fd, res->msg_off, res->msg_len)) != -1) {
				m->len = res->msg_len;
				pj->nfds++;
			}
			break;
		default:
			m->cls = PJ_ERROR;
			free(m->reason);
			m->reason = strdup(res->reason);
			break;
		}
	}
	if (res->fd != -1)
		close(res->fd);
	free(sc);
	pj_step(s);
	if (s->pj != NULL)
		session_kick(s); /* the server's next response may come in */
}

/* A whole message of ours: known by its content, or judged. */
static void
pj_body(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	struct prejudge *pj = s->pj;
	const struct imap_item *it, *body = NULL;
	struct vc_entry e;
	struct pjscan *sc;
	struct pjmsg *m;
	uint32_t uid = 0;
	unsigned i;
	int fd;

	for (i = 0; i < r->fetch.nitem; i++) {
		it = &r->fetch.item[i];
		if (it->att.kind == IMAP_FA_UID && it->has_num &&
		    it->num <= UINT32_MAX)
			uid = (uint32_t)it->num;
		else if (it->att.kind == IMAP_FA_BODY_SECTION &&
		         it->att.sect.npart == 0 &&
		         it->att.sect.text == IMAP_SECT_NONE &&
		         !it->att.has_partial)
			body = it;
	}
	if ((m = pjmap_find(pj->map, uid)) == NULL || m->cls != PJ_UNKNOWN ||
	    body == NULL)
		return;
	if (body->str.kind != IMAP_STR_LITERAL &&
	    body->str.kind != IMAP_STR_QUOTED) {
		m->cls = PJ_ERROR;
		m->reason = strdup("the server sent no message");
		return;
	}
	if (body->str.spool >= 0 && la->spools[body->str.spool].fd == -1) {
		m->cls = PJ_OVERSIZE;
		return;
	}
	fd = lineasm_literal_fd(
	    la, body->str.spool, body->str.data, body->str.len);
	if ((sc = calloc(1, sizeof(*sc))) == NULL)
		fatal("calloc");
	sc->pj = pj;
	sc->uid = uid;
	sc->size = body->str.len;
	if (fd == -1 || consist_sha(fd, body->str.len, sc->sha) == -1) {
		if (fd != -1)
			close(fd);
		free(sc);
		m->cls = PJ_ERROR;
		m->reason = strdup("cannot pass the message to the scanner");
		return;
	}
	memcpy(m->sha, sc->sha, 32);
	m->have_sha = 1;
	if (consist_cached_sha(s, sc->sha, &e)) {
		/* The same bytes were judged before: remember them here
		 * too, so the next session finds them by UID. */
		struct vc_msgkey k;

		m->cls = e.cls == VC_CLEAN ? PJ_CLEAN : PJ_CHANGED;
		if (consist_key(s, uid, &k))
			vcache_put(s->n->vc, &k, &e);
		vc_entry_free(&e);
		close(fd);
		free(sc);
		return;
	}
	sc->pj = pj;
	sc->next = pj->scanlist;
	pj->scanlist = sc;
	pj->scans++;
	sc->req =
	    scan_submit(s->n, fd, body->str.len, SCAN_FETCH, s->pol->actionidx,
	        s->pol->name, s->user, s->client, NULL, 0, 0, pj_verdict, sc);
}

/* EXPUNGE while we judge (an earlier command of the client, or our UID
 * FETCH): the sequence numbers we hold move down. */
static void
pj_expunge(struct prejudge *pj, uint32_t seq)
{
	size_t i, o = 0;

	if (pj->map == NULL)
		return;
	for (i = 0; i < pj->map->n; i++) {
		struct pjmsg *m = &pj->map->m[i];

		if (m->seq == seq && !pj->uid_mode) {
			if (m->fd != -1)
				close(m->fd);
			free(m->reason);
			if (i < pj->next)
				pj->next--;
			continue;
		}
		if (m->seq > seq)
			m->seq--;
		pj->map->m[o++] = *m;
	}
	pj->map->n = o;
}

int
consist_server(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	struct prejudge *pj = s->pj;
	uint32_t uid;

	mailbox_note(s, la, r);
	if (pj == NULL || pj->phase == PJ_WAIT)
		return 0;
	switch (r->kind) {
	case IMAP_RESP_EXPUNGE:
		pj_expunge(pj, r->num);
		return 0;
	case IMAP_RESP_FETCH:
		if (pj->phase == PJ_PROBE && pj->tag[0] &&
		    fetch_only_uid(r, &uid)) {
			pjmap_add(pj->map, r->num, uid);
			return 1;
		}
		if (pj->phase == PJ_BODIES && pj->tag[0] &&
		    consist_own_body(s)) {
			unsigned i;

			for (i = 0; i < r->fetch.nitem; i++)
				if (r->fetch.item[i].att.kind ==
				        IMAP_FA_BODY_SECTION &&
				    r->fetch.item[i].att.sect.npart == 0 &&
				    r->fetch.item[i].att.sect.text ==
				        IMAP_SECT_NONE)
					break;
			if (i == r->fetch.nitem)
				return 0; /* not ours: FLAGS of another */
			pj_body(s, la, r);
			return 1;
		}
		return 0;
	case IMAP_RESP_TAGGED:
		break;
	default:
		return 0;
	}
	if (!pj->tag[0] || !lineasm_is(la, r->tag.off, r->tag.len, pj->tag))
		return 0;
	pj->tag[0] = '\0';
	if (r->status != IMAP_ST_OK)
		log_event(LOG_NOTICE, "own fetch failed", "client", s->client,
		    "user", s->user, "phase",
		    pj->phase == PJ_PROBE ? "messages" : "bodies", NULL);
	if (pj->phase == PJ_PROBE) {
		if (r->status != IMAP_ST_OK)
			pj->failed = 1;
		pjmap_sort(pj->map);
		{
			struct vc_entry e;
			size_t i;

			for (i = 0; !pj->failed && i < pj->map->n; i++)
				if (consist_cached(s, pj->map->m[i].uid, &e)) {
					pj->map->m[i].cls = e.cls == VC_CLEAN
					                        ? PJ_CLEAN
					                        : PJ_CHANGED;
					memcpy(pj->map->m[i].sha, e.sha, 32);
					pj->map->m[i].have_sha = 1;
					vc_entry_free(&e);
				}
		}
		pj->phase = PJ_BODIES;
		if (pj->failed) {
			pj_finish(s);
			return 1;
		}
	}
	pj_step(s);
	return 1;
}

int
consist_own_body(struct session *s)
{
	return s->pj != NULL && s->pj->phase == PJ_BODIES && s->pj->tag[0];
}

int
consist_paused(struct session *s, int client)
{
	if (client)
		return s->pj != NULL;
	return s->pj != NULL && s->pj->scans >= PJ_MAX_SCANS;
}

void
consist_session_end(struct session *s)
{
	if (s->pj) {
		pj_free(s->pj);
		s->pj = NULL;
	}
}
