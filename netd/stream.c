/*
 * Line assembly and output queues.  See stream.h.
 */
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "stream.h"

#define OQ_IOV_MAX 64 /* buffers in one writev() */

void
lineasm_init(struct lineasm *la)
{
	memset(la, 0, sizeof(*la));
	buf_init(&la->text, LINE_TEXT_CAP);
}

void
lineasm_reset(struct lineasm *la)
{
	size_t i;

	for (i = 0; i < la->nspools; i++)
		if (la->spools[i].fd != -1)
			close(la->spools[i].fd);
	free(la->spools);
	la->spools = NULL;
	la->nspools = la->spcap = 0;
	la->lit_left = 0;
	la->lit_spooled = 0;
	la->lit_stream = 0;
	la->lit_discard = 0;
	la->discarded = 0;
	la->streamed = 0;
	buf_reset(&la->text);
	/* An idle session should not keep a large buffer. */
	if (la->text.cap > 64 * 1024)
		buf_free(&la->text), buf_init(&la->text, LINE_TEXT_CAP);
}

/* Room for one more spool, at most LINE_MAX_SPOOLS. */
static struct spool *
lineasm_spool_new(struct lineasm *la)
{
	struct spool *p;
	size_t ncap;

	if (la->nspools == LINE_MAX_SPOOLS) {
		errno = E2BIG;
		return NULL;
	}
	if (la->nspools == la->spcap) {
		ncap = la->spcap ? la->spcap * 2 : 2;
		if ((p = reallocarray(la->spools, ncap, sizeof(*p))) == NULL)
			return NULL;
		la->spools = p;
		la->spcap = ncap;
	}
	return &la->spools[la->nspools++];
}

int
lineasm_literal(struct lineasm *la, uint64_t n, enum lit_mode mode)
{
	struct spool *sp;

	la->lit_left = n;
	la->lit_spooled = 0;
	la->lit_stream = 0;
	la->lit_start = buf_used(&la->text);
	la->lit_discard = 0;
	if (mode == LIT_DISCARD) {
		/* Recorded like a spool without a file, so the line still
		 * parses; whoever asked for it replaces that literal. */
		if ((sp = lineasm_spool_new(la)) == NULL)
			return -1;
		sp->fd = -1;
		sp->at = buf_used(&la->text);
		sp->len = n;
		la->lit_discard = 1;
		la->discarded = 1;
		return 0;
	}
	/* Small literals stay inline whatever was asked: cheaper. */
	if (n <= LINE_INLINE_MAX && n <= buf_room(&la->text) &&
	    buf_used(&la->text) + n <= LINE_TEXT_CAP / 2)
		return buf_reserve(&la->text, (size_t)n);
	if (mode == LIT_STREAM) {
		la->lit_stream = 1;
		la->streamed = 1;
		return 0;
	}
	if ((sp = lineasm_spool_new(la)) == NULL)
		return -1;
	sp->fd =
	    memfd_create("imapgw-literal", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (sp->fd == -1) {
		la->nspools--;
		return -1;
	}
	sp->at = buf_used(&la->text);
	sp->len = n;
	la->lit_spooled = 1;
	return 0;
}

int
lineasm_payload(struct lineasm *la, const uint8_t *p, size_t n)
{
	struct spool *sp;
	ssize_t w;

	if (n > la->lit_left) {
		errno = EINVAL;
		return -1;
	}
	if (la->lit_discard) {
		la->lit_left -= n;
		return 0;
	}
	if (!la->lit_spooled) {
		if (buf_add(&la->text, p, n) == -1)
			return -1;
		la->lit_left -= n;
		return 0;
	}
	sp = &la->spools[la->nspools - 1];
	while (n > 0) {
		w = write(sp->fd, p, n);
		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
		la->lit_left -= (uint64_t)w;
	}
	return 0;
}

void
outq_init(struct outq *q)
{
	q->head = NULL;
	q->tail = &q->head;
	q->bytes = 0;
	q->holds = 0;
}

static void
oq_free(struct oq_ent *e)
{
	buf_free(&e->b);
	if (e->fd != -1)
		close(e->fd);
	free(e);
}

void
outq_clear(struct outq *q)
{
	struct oq_ent *e;

	while ((e = q->head) != NULL) {
		q->head = e->next;
		oq_free(e);
	}
	outq_init(q);
}

int
outq_empty(const struct outq *q)
{
	return q->head == NULL;
}

static struct oq_ent *
oq_new(int kind)
{
	struct oq_ent *e;

	if ((e = calloc(1, sizeof(*e))) == NULL)
		fatal("calloc");
	e->kind = kind;
	e->fd = -1;
	buf_init(&e->b, 0);
	return e;
}

static void
oq_append(struct outq *q, struct oq_ent *e)
{
	*q->tail = e;
	q->tail = &e->next;
}

static void
oq_insert(struct outq *q, struct oq_ent *after, struct oq_ent *e)
{
	e->next = after->next;
	after->next = e;
	if (q->tail == &after->next)
		q->tail = &e->next;
}

void
outq_bytes(struct outq *q, const void *p, size_t n)
{
	struct oq_ent *e;

	if (n == 0)
		return;
	/* Small writes join the last buffer when it is not a hold. */
	if (q->head != NULL) {
		e = (struct oq_ent *)((char *)q->tail -
		                      offsetof(struct oq_ent, next));
		if (e->kind == OQ_BUF && buf_used(&e->b) < 64 * 1024) {
			if (buf_add(&e->b, p, n) == -1)
				fatal("outq");
			q->bytes += n;
			return;
		}
	}
	e = oq_new(OQ_BUF);
	if (buf_add(&e->b, p, n) == -1)
		fatal("outq");
	q->bytes += n;
	oq_append(q, e);
}

void
outq_buf(struct outq *q, struct buf *b)
{
	struct oq_ent *e;

	if (buf_used(b) == 0)
		return;
	e = oq_new(OQ_BUF);
	e->b = *b;
	buf_init(b, b->max);
	q->bytes += buf_used(&e->b);
	oq_append(q, e);
}

void
outq_fd(struct outq *q, int fd, off_t off, uint64_t len)
{
	struct oq_ent *e = oq_new(OQ_FD);

	e->fd = fd;
	e->off = off;
	e->len = len;
	q->bytes += len;
	oq_append(q, e);
}

struct oq_ent *
outq_hold(struct outq *q)
{
	struct oq_ent *e = oq_new(OQ_HOLD);

	q->holds++;
	oq_append(q, e);
	return e;
}

/* Put e after the entry "after", or at the end when it is NULL. */
static struct oq_ent *
oq_put(struct outq *q, struct oq_ent *after, struct oq_ent *e)
{
	if (after == NULL)
		oq_append(q, e);
	else
		oq_insert(q, after, e);
	return e;
}

struct oq_ent *
outq_after_bytes(struct outq *q, struct oq_ent *after, const void *p, size_t n)
{
	struct oq_ent *e = oq_new(OQ_BUF);

	if (buf_add(&e->b, p, n) == -1)
		fatal("outq");
	q->bytes += n;
	return oq_put(q, after, e);
}

struct oq_ent *
outq_after_fd(
    struct outq *q, struct oq_ent *after, int fd, off_t off, uint64_t len)
{
	struct oq_ent *e = oq_new(OQ_FD);

	e->fd = fd;
	e->off = off;
	e->len = len;
	q->bytes += len;
	return oq_put(q, after, e);
}

void
outq_release(struct outq *q, struct oq_ent *hold)
{
	struct oq_ent **pp;

	for (pp = &q->head; *pp; pp = &(*pp)->next) {
		if (*pp != hold)
			continue;
		*pp = hold->next;
		if (q->tail == &hold->next)
			q->tail = pp;
		q->holds--;
		oq_free(hold);
		return;
	}
}

static void
oq_pop(struct outq *q)
{
	struct oq_ent *e = q->head;

	q->head = e->next;
	if (q->head == NULL)
		q->tail = &q->head;
	oq_free(e);
}

/* Consecutive buffers at the head go out in one writev(). */
static ssize_t
oq_writev(struct outq *q, int dst)
{
	struct iovec iov[OQ_IOV_MAX];
	struct oq_ent *e;
	ssize_t n, left;
	int niov = 0;

	for (e = q->head; e != NULL && e->kind == OQ_BUF && niov < OQ_IOV_MAX;
	     e = e->next) {
		if (buf_used(&e->b) == 0)
			continue;
		iov[niov].iov_base = buf_head(&e->b);
		iov[niov].iov_len = buf_used(&e->b);
		niov++;
	}
	if ((n = writev(dst, iov, niov)) <= 0)
		return n;
	for (left = n; left > 0;) {
		e = q->head;
		if ((size_t)left < buf_used(&e->b)) {
			buf_consume(&e->b, (size_t)left);
			break;
		}
		left -= (ssize_t)buf_used(&e->b);
		oq_pop(q);
	}
	q->bytes -= (uint64_t)n;
	return n;
}

ssize_t
outq_write(struct outq *q, int dst)
{
	struct oq_ent *e;
	ssize_t n, total = 0;

	while ((e = q->head) != NULL) {
		if (e->kind == OQ_HOLD)
			break;
		if (e->kind == OQ_BUF) {
			if (buf_used(&e->b) == 0) {
				oq_pop(q);
				continue;
			}
			if ((n = oq_writev(q, dst)) > 0) {
				total += n;
				continue;
			}
		} else {
			if (e->len == 0) {
				oq_pop(q);
				continue;
			}
			n = sendfile(dst, e->fd, &e->off,
			    e->len > (1 << 30) ? (1 << 30) : (size_t)e->len);
		}
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -1;
		}
		if (n == 0) {
			/* A spool shorter than promised: never send a
			 * truncated message as if it were whole. */
			errno = EIO;
			return -1;
		}
		if (e->kind == OQ_BUF)
			buf_consume(&e->b, (size_t)n);
		else
			e->len -= (uint64_t)n;
		q->bytes -= (uint64_t)n;
		total += n;
	}
	return total;
}

void
outq_line(struct outq *q, struct lineasm *la)
{
	size_t i, from = 0;
	struct spool *sp;

	if (la->nspools == 0) {
		/* Small lines join the queue's last buffer: fewer writes. */
		if (buf_used(&la->text) < 4096) {
			outq_bytes(q, buf_head(&la->text), buf_used(&la->text));
			buf_reset(&la->text);
		} else
			outq_buf(q, &la->text);
		return;
	}
	for (i = 0; i < la->nspools; i++) {
		sp = &la->spools[i];
		outq_bytes(q, buf_head(&la->text) + from, sp->at - from);
		outq_fd(q, sp->fd, 0, sp->len);
		sp->fd = -1;
		from = sp->at;
	}
	outq_bytes(q, buf_head(&la->text) + from, buf_used(&la->text) - from);
	la->nspools = 0;
	buf_reset(&la->text);
}

void
lineasm_move(struct lineasm *dst, struct lineasm *src)
{
	*dst = *src;
	memset(src, 0, sizeof(*src));
	buf_init(&src->text, LINE_TEXT_CAP);
}

int
lineasm_memfd(const struct lineasm *la, size_t off, uint64_t len)
{
	int fd;

	if (off > buf_used(&la->text) || len > buf_used(&la->text) - off)
		return -1;
	fd = memfd_create("imapgw-message", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd == -1)
		return -1;
	if (len > 0 &&
	    write(fd, buf_head(&la->text) + off, (size_t)len) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
edit_cmp(const void *a, const void *b)
{
	const struct edit *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

static struct oq_ent *
line_text(struct outq *q, struct oq_ent *after, const struct lineasm *la,
    size_t from, size_t to)
{
	if (to > from)
		after = outq_after_bytes(
		    q, after, buf_head(&la->text) + from, to - from);
	return after;
}

/*
 * Queue the line with its edits (after the entry "after", or at the end
 * when it is NULL), spooled literals spliced in where they belong; a
 * spool whose marker an edit replaces is dropped.
 */
void
outq_line_edits(struct outq *q, struct oq_ent *after, struct lineasm *la,
    struct edit *ed, size_t ned)
{
	size_t pos = 0, i = 0, k = 0, end = buf_used(&la->text);
	struct spool *sp;

	qsort(ed, ned, sizeof(*ed), edit_cmp);
	for (;;) {
		sp = k < la->nspools ? &la->spools[k] : NULL;
		if (sp && (i == ned || sp->at <= ed[i].off)) {
			after = line_text(q, after, la, pos, sp->at);
			pos = sp->at;
			if (sp->fd != -1) {
				after =
				    outq_after_fd(q, after, sp->fd, 0, sp->len);
				sp->fd = -1;
			}
			k++;
			continue;
		}
		if (i == ned)
			break;
		after = line_text(q, after, la, pos, ed[i].off);
		if (ed[i].blen)
			after =
			    outq_after_bytes(q, after, ed[i].bytes, ed[i].blen);
		if (ed[i].fd != -1 && ed[i].flen)
			after = outq_after_fd(q, after, dup(ed[i].fd),
			    (off_t)ed[i].foff, ed[i].flen);
		pos = ed[i].off + ed[i].len;
		/* Spools inside the replaced span belong to it. */
		while (k < la->nspools && la->spools[k].at <= pos)
			k++;
		i++;
	}
	line_text(q, after, la, pos, end);
}

int
lineasm_is(const struct lineasm *la, size_t off, size_t len, const char *s)
{
	return off <= buf_used(&la->text) && len <= buf_used(&la->text) - off &&
	       strlen(s) == len &&
	       memcmp(buf_head(&la->text) + off, s, len) == 0;
}

int
lineasm_literal_fd(
    const struct lineasm *la, int spool, size_t data, uint64_t len)
{
	if (spool >= 0)
		return dup(la->spools[spool].fd);
	return lineasm_memfd(la, data, len);
}
