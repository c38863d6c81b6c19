/*
 * Sessions: accept, policy checks, backend connect, and the I/O of both
 * directions.  Bytes from each peer are framed (netd/framer.c) and
 * assembled into logical lines (netd/stream.c); the IMAP engine
 * (netd/imap.c) decides what each line becomes and queues it for the
 * other peer.  Input is bounded per direction and a full output queue
 * stops reading from its source, so a slow reader slows the other side
 * down instead of growing memory.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fcntl.h>

#include "imap_parse.h"
#include "log.h"
#include "session.h"
#include "sni.h"
#include "tlsreq.h"
#include "util.h"

#define BYE_UNAVAILABLE "* BYE [UNAVAILABLE] Server unavailable\r\n"
#define BYE_IDLE "* BYE Idle timeout, closing connection\r\n"
#define BYE_CLIENT_ERR "* BYE Protocol error: "
#define BYE_SERVER_ERR "* BYE [UNAVAILABLE] Malformed response from server\r\n"

/* S_TLS: a handshake runs in tlsd; S_PRETLS: the server's greeting and
 * our STARTTLS before TLS to the server. */
enum { S_CONNECTING, S_TLS, S_PRETLS, S_RELAY };

#define PRETLS_MAX 16384 /* what a server may say before its TLS */
#define GREET_MAX 1024 /* a longer greeting is not kept for lazy pools */

#define CLIENT_LITERAL_MIN (64ULL << 20)
#define SERVER_LITERAL_CAP (1ULL << 40)

static void sink_flush(struct sink *);
static int dir_literal(struct dir *, uint64_t);
static int dir_process(struct dir *);
static void dir_update(struct dir *);
static void dir_init(
    struct session *, struct dir *, const char *, int, enum framer_dir);
static void sink_write_cb(evutil_socket_t, short, void *);
static void sink_attach(struct sink *, int);
static int session_connect(struct session *);
static void session_backend(struct session *);
static void client_handover(struct session *);
static void session_relay(struct session *);
static int lazy_connect(struct session *);
static void session_upstream(struct session *);
static void session_timer_cb(evutil_socket_t, short, void *);
static void timer_arm(struct session *, uint64_t);

/* Milliseconds on the monotonic clock. */
static uint64_t
now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
dir_free(struct dir *d)
{
	if (d->rev)
		event_free(d->rev);
	lineasm_reset(&d->la);
	buf_free(&d->la.text);
	buf_free(&d->in);
}

static void
sink_free(struct sink *k)
{
	if (k->wev)
		event_free(k->wev);
	outq_clear(&k->q);
}

static void
session_free_cb(evutil_socket_t fd, short ev, void *arg)
{
	free(arg);
}

/*
 * End a session: log, close, release everything.  The struct itself is
 * freed from the event loop, so callers up the stack may still test
 * s->ending and unwind.
 */
void
session_end(struct session *s, const char *reason)
{
	struct timeval zero = {0, 0};
	struct netd *n = s->n;
	struct timespec now;
	char id[24], in[24], out[24], dur[32];
	double secs;

	if (s->ending)
		return;
	s->ending = 1;
	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = (double)(now.tv_sec - s->start.tv_sec) +
	       (double)(now.tv_nsec - s->start.tv_nsec) / 1e9;
	snprintf(id, sizeof(id), "%llu", (unsigned long long)s->id);
	snprintf(in, sizeof(in), "%llu", (unsigned long long)s->c.bytes);
	snprintf(out, sizeof(out), "%llu", (unsigned long long)s->to_c.bytes);
	snprintf(dur, sizeof(dur), "%.3f", secs);
	log_event(LOG_INFO, "session end", "id", id, "client", s->client,
	    "policy", s->pol->name, "server", s->srv->name, "backend",
	    s->mem->addr.text, "bytes_in", in, "bytes_out", out, "duration",
	    dur, "reason", reason, NULL);
	msg_session_end(s);
	tls_cancel(s->tlsreq);
	buf_free(&s->pre);
	free(s->lazy_caps);
	dir_free(&s->c);
	dir_free(&s->sv);
	sink_free(&s->to_c);
	sink_free(&s->to_s);
	if (s->connev)
		event_free(s->connev);
	if (s->hellev)
		event_free(s->hellev);
	if (s->timer)
		event_free(s->timer);
	if (s->kickev)
		event_free(s->kickev);
	if (s->cfd != -1)
		close(s->cfd);
	if (s->sfd != -1)
		close(s->sfd);
	if (s->prev)
		s->prev->next = s->next;
	else
		n->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	n->nsessions--;
	netd_cfg_unref(s->nc);
	if (event_base_once(
	        n->env.base, -1, EV_TIMEOUT, session_free_cb, s, &zero) == -1)
		log_warnx("session %s: leaking its memory", id);
}

void
session_close_all(struct netd *n, const char *why)
{
	while (n->sessions)
		session_end(n->sessions, why);
}

void
session_block(struct session *s, const char *reason)
{
	struct block_addr a;
	struct buf b;
	size_t len;

	if (block_addr_parse(s->client_ip, &a) == -1) {
		log_warnx(
		    "cannot block client %s: not an IP address", s->client);
		return;
	}
	buf_init(&b, 0);
	block_addr_write(&b, &a);
	/* As buf_add_str, cut to what the parent takes. */
	len = strlen(reason);
	if (len > IMAPGW_BLOCK_MAX_REASON)
		len = IMAPGW_BLOCK_MAX_REASON;
	buf_add_u32(&b, (uint32_t)len);
	buf_add(&b, reason, len);
	proc_compose(s->n->env.parent, IMSG_BLOCK_ADD, 0, -1, buf_head(&b),
	    buf_used(&b));
	buf_free(&b);
	log_event(LOG_NOTICE, "site blocked", "client", s->client, "user",
	    s->user, "reason", reason, NULL);
}

/*
 * Best effort: a last line to the client before closing.  It goes behind
 * the complete responses already queued, never inside one.
 */
static void
client_say(struct session *s, const char *msg)
{
	ssize_t r;

	if (s->cfd == -1)
		return; /* in tlsd's hands */
	/* Before the relay; lazy: the relay to the client runs while the
	 * server is met, and the line goes behind what it holds. */
	if (s->state != S_RELAY && s->to_c.wev == NULL) {
		r = write(s->cfd, msg, strlen(msg));
		if (r > 0)
			s->to_c.bytes += (uint64_t)r;
		return;
	}
	/* A response partly sent (its literal streamed) cannot be cut. */
	if (s->sv.la.streamed)
		return;
	outq_bytes(&s->to_c.q, msg, strlen(msg));
	r = outq_write(&s->to_c.q, s->cfd);
	if (r > 0)
		s->to_c.bytes += (uint64_t)r;
}

static void
ev_set(struct event *ev, int *on, int want)
{
	if (want && !*on)
		event_add(ev, NULL);
	else if (!want && *on)
		event_del(ev);
	*on = want;
}

static struct sink *
dir_sink(struct dir *d)
{
	return d == &d->s->c ? &d->s->to_s : &d->s->to_c;
}

static int
dir_paused(struct dir *d)
{
	/* Lazy: the client's next commands wait until the server it asked
	 * for was met and greeted as the client was told. */
	if (d == &d->s->c && d->s->lazy >= LAZY_CONNECT)
		return 1;
	return dir_sink(d)->q.bytes > SINK_HIGH || imap_paused(d->s, d);
}

static void
dir_update(struct dir *d)
{
	if (d->s->state != S_RELAY || d->src == -1)
		return;
	ev_set(d->rev, &d->rev_on,
	    !d->eof && buf_room(&d->in) > 0 && !dir_paused(d));
}

void
session_protocol_error(struct session *s, struct dir *d)
{
	char reason[200], line[200];

	snprintf(reason, sizeof(reason), "%s protocol error: %s", d->name,
	    d->fr.err);
	if (d == &s->c) {
		snprintf(
		    line, sizeof(line), "%s%s\r\n", BYE_CLIENT_ERR, d->fr.err);
		client_say(s, line);
	} else
		client_say(s, BYE_SERVER_ERR);
	log_event(LOG_WARNING, "anomaly", "client", s->client, "policy",
	    s->pol->name, "from", d->name, "error", d->fr.err, NULL);
	session_end(s, reason);
}

static int
session_errno(struct session *s, const char *what, int err)
{
	char reason[160];

	snprintf(reason, sizeof(reason), "%s: %s", what, strerror(err));
	session_end(s, reason);
	return -1;
}

/* The framer released a held literal; the assembly follows it. */
void
session_cont(struct session *s, int accepted)
{
	uint64_t n;

	framer_cont(&s->c.fr, accepted);
	s->wait_cont = 0;
	if (accepted && (n = framer_literal_left(&s->c.fr)) > 0)
		dir_literal(&s->c, n);
}

/* Open a literal the way the engine wants it. */
static int
dir_literal(struct dir *d, uint64_t n)
{
	enum lit_mode mode = imap_literal_mode(d->s, d, n);

	if (lineasm_literal(&d->la, n, mode) == -1)
		return session_errno(d->s, "spool", errno);
	/* Streaming: what precedes the payload goes first. */
	if (d->la.lit_stream)
		outq_line(&dir_sink(d)->q, &d->la);
	return 0;
}

/*
 * Payload of a streamed literal goes straight from the read buffer to the
 * peer, without a copy.  Returns the bytes written (the rest stays in the
 * read buffer until the peer can take more), or -1.
 */
static ssize_t
dir_stream(struct dir *d, const uint8_t *p, size_t k)
{
	struct sink *out = dir_sink(d);
	ssize_t w;

	out->blocked = 1;
	if (!outq_empty(&out->q) || out->dst == -1)
		return 0; /* what is queued goes first */
	w = write(out->dst, p, k);
	if (w == -1)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	out->bytes += (uint64_t)w;
	out->blocked = (size_t)w < k;
	return w;
}

/* Lazy: a client line queued something for the server, which is not
 * met yet. */
static int
lazy_due(const struct session *s, const struct dir *d)
{
	return d == &s->c && s->lazy == LAZY_WAIT &&
	       s->to_s.q.bytes > s->lazy_queued;
}

/*
 * Feed assembled input through the framer and the engine until it is
 * used up or the engine pauses this direction.
 */
static int
dir_process(struct dir *d)
{
	struct session *s = d->s;
	const uint8_t *p, *lf;
	uint64_t lit;
	size_t n, k;
	ssize_t r;

	while (
	    (n = buf_used(&d->in)) > 0 && !dir_paused(d) && !lazy_due(s, d)) {
		p = buf_head(&d->in);
		if (d->la.lit_left > 0) {
			k = n < d->la.lit_left ? n : (size_t)d->la.lit_left;
			if (d->la.lit_stream) {
				if ((r = dir_stream(d, p, k)) == -1)
					return session_errno(s, "write", errno);
				k = (size_t)r;
				d->la.lit_left -= k;
			} else if (lineasm_payload(&d->la, p, k) == -1)
				return session_errno(s, "literal", errno);
			if (framer_scan(&d->fr, p, k) != (ssize_t)k) {
				session_protocol_error(s, d);
				return -1;
			}
			buf_consume(&d->in, k);
			if (d->la.lit_stream && dir_sink(d)->blocked)
				break; /* the peer's turn: sink_flush resumes */
			continue;
		}
		lf = memchr(p, '\n', n);
		k = lf ? (size_t)(lf - p) + 1 : n;
		if ((r = framer_scan(&d->fr, p, k)) < 0) {
			session_protocol_error(s, d);
			return -1;
		}
		if (buf_add(&d->la.text, p, (size_t)r) == -1)
			return session_errno(s, "line too long", errno);
		buf_consume(&d->in, (size_t)r);
		if (framer_waiting(&d->fr)) {
			if (imap_sync_literal(s, d) == -1)
				return -1;
		} else if ((lit = framer_literal_left(&d->fr)) > 0) {
			if (dir_literal(d, lit) == -1)
				return -1;
		} else if (d->fr.lines != d->lines_seen) {
			d->lines_seen = d->fr.lines;
			if (imap_line(s, d) == -1)
				return -1;
		}
	}
	/* What the greeting queued for the server (our ID) does not meet
	 * it; what a client line queued does. */
	if (d == &s->sv && s->lazy == LAZY_WAIT)
		s->lazy_queued = s->to_s.q.bytes;
	else if (lazy_due(s, d))
		return lazy_connect(s);
	return 0;
}

/* A source is done when its input is used up after EOF. */
static int
dir_finish(struct dir *d)
{
	struct session *s = d->s;

	/* Lazy: the client left before it asked the server for anything
	 * (only our ID waits for it): nothing to pass on. */
	if (d == &s->c && d->eof && buf_used(&d->in) == 0 &&
	    s->lazy == LAZY_WAIT) {
		session_end(s, s->logout ? "logout" : "client closed");
		return -1;
	}
	if (!d->eof || buf_used(&d->in) > 0 || !outq_empty(&dir_sink(d)->q))
		return 0;
	if (d == &s->sv) {
		/* Who ended it: a LOGOUT, the client's close (the server
		 * only followed), or the server. */
		session_end(s, s->logout  ? "logout"
		               : s->c.eof ? "client closed"
		                          : "server closed");
		return -1;
	}
	/* Client done sending: pass the half-close on and keep the
	 * server's answers coming until it closes. */
	if (!s->to_s.shut) {
		shutdown(s->sfd, SHUT_WR);
		s->to_s.shut = 1;
	}
	if (s->sv.eof) {
		session_end(s, s->logout ? "logout" : "client closed");
		return -1;
	}
	return 0;
}

/* Run everything that may have become possible, in both directions. */
static void
session_kick_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *s = arg;

	if (s->ending || s->state != S_RELAY)
		return;
	if (msg_ready(s) == -1)
		return;
	if (dir_process(&s->c) == -1 || dir_process(&s->sv) == -1)
		return;
	sink_flush(&s->to_s);
}

/* From the event loop, never nested in the caller's processing. */
void
session_kick(struct session *s)
{
	if (!s->ending && s->kickev)
		event_active(s->kickev, EV_TIMEOUT, 0);
}

static int
set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1)
		return -1;
	/* tlsd's socket pairs come non-blocking already. */
	return (fl & O_NONBLOCK) ? 0 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void client_tls_done(void *, struct tls_result *);

static void
client_tls_start(struct session *s)
{
	int fd = s->cfd;

	s->cfd = -1;
	s->state = S_TLS;
	/* Implicit TLS: the greeting comes first, and the handshake's last
	 * flight can wait for it (not after STARTTLS: the client's turn). */
	s->tlsreq = tls_start(s->n, fd, TLS_SIDE_SERVER,
	    s->starttls == 2 ? 0 : TLS_START_SPEAKS_FIRST, s->pol->name,
	    s->srv->name, s->names, s->attest, s->client, client_tls_done, s);
}

/*
 * The client's STARTTLS was answered and the answer is out: the
 * connection goes to tlsd.  Whatever the client sent after STARTTLS
 * (read already, or still in the socket) is never taken as a command:
 * what was read is dropped here, the rest tlsd reads as TLS.
 */
static void
client_handover(struct session *s)
{
	s->starttls = 0;
	ev_set(s->c.rev, &s->c.rev_on, 0);
	ev_set(s->sv.rev, &s->sv.rev_on, 0);
	ev_set(s->to_c.wev, &s->to_c.wev_on, 0);
	event_free(s->c.rev);
	s->c.rev = NULL;
	event_free(s->to_c.wev);
	s->to_c.wev = NULL;
	buf_reset(&s->c.in);
	lineasm_reset(&s->c.la);
	s->starttls = 2; /* the relay resumes on the TLS channel */
	client_tls_start(s);
}

void
session_starttls(struct session *s)
{
	s->starttls = 1;
	log_event(LOG_INFO, "starttls", "client", s->client, "policy",
	    s->pol->name, NULL);
}

/* The relay resumes on the plaintext end from tlsd: a fresh client
 * direction (framer, buffers, events), counters kept. */
static void
client_reattach(struct session *s)
{
	uint64_t in = s->c.bytes, out = s->to_c.bytes;

	dir_free(&s->c);
	memset(&s->c, 0, sizeof(s->c));
	dir_init(s, &s->c, "client", s->cfd, FRAMER_CLIENT);
	s->c.fr.on_line = imap_client_line_cb;
	s->c.fr.hold_sync = 1;
	s->c.bytes = in;
	sink_attach(&s->to_c, s->cfd);
	s->to_c.bytes = out;
	s->state = S_RELAY;
	s->last = now_mono();
	dir_update(&s->c);
	dir_update(&s->sv);
	session_kick(s);
}

static void
client_tls_done(void *arg, struct tls_result *res)
{
	struct session *s = arg;

	s->tlsreq = NULL;
	if (!res->ok || set_nonblock(res->fd) == -1) {
		if (res->fd != -1)
			close(res->fd);
		log_event(LOG_NOTICE, "client tls failed", "client", s->client,
		    "policy", s->pol->name, "error", res->error, NULL);
		session_end(s, "client TLS failed");
		return;
	}
	s->cfd = res->fd;
	s->ctls = 1;
	log_event(LOG_INFO, "client tls", "client", s->client, "policy",
	    s->pol->name, "version", res->version, "cipher", res->cipher, "sni",
	    res->sni, "resumed", res->resumed ? "yes" : "no", NULL);
	if (s->starttls == 2) {
		s->starttls = 0;
		client_reattach(s);
		return;
	}
	if (s->sfd != -1) {
		session_relay(s); /* the client proxy: the server came first */
		return;
	}
	session_upstream(s);
}

static void
sink_flush(struct sink *k)
{
	struct session *s = k->s;
	struct dir *src = k == &s->to_s ? &s->c : &s->sv;
	uint64_t queued;
	ssize_t r;
	int hold;

	if (s->state != S_RELAY)
		return; /* a connection is in tlsd's hands */
	/* Lazy: nothing goes to the server before it is met and its
	 * greeting checked. */
	hold = k == &s->to_s && s->lazy != LAZY_NO;
	/* Set again below if a streamed literal still cannot go on. */
	k->blocked = 0;
	for (;;) {
		r = hold ? 0 : outq_write(&k->q, k->dst);
		if (r == -1) {
			session_errno(s,
			    k == &s->to_c ? "write to client"
			                  : "write to server",
			    errno);
			return;
		}
		if (r > 0) {
			k->bytes += (uint64_t)r;
			s->last = now_mono();
		}
		/* Room again: the source may go on, and what it queues is
		 * written in the same turn. */
		if (buf_used(&src->in) == 0 || dir_paused(src))
			break;
		queued = k->q.bytes;
		if (dir_process(src) == -1)
			return;
		if (k->q.bytes == queued)
			break;
	}
	if (!hold)
		ev_set(k->wev, &k->wev_on,
		    (k->q.head != NULL && k->q.head->kind != OQ_HOLD) ||
		        k->blocked);
	if (k == &s->to_c && s->starttls && outq_empty(&k->q)) {
		client_handover(s);
		return;
	}
	if (dir_finish(src) == -1)
		return;
	if (k == &s->to_s && !s->ending)
		sink_flush(&s->to_c);
	if (!s->ending) {
		dir_update(&s->c);
		dir_update(&s->sv);
	}
}

static void
sink_write_cb(evutil_socket_t fd, short ev, void *arg)
{
	sink_flush(arg);
}

static void
dir_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct dir *d = arg;
	struct session *s = d->s;
	size_t want = buf_room(&d->in);
	ssize_t r;

	if (s->state != S_RELAY) {
		ev_set(d->rev, &d->rev_on, 0);
		return;
	}
	if (want == 0) {
		dir_update(d);
		return;
	}
	r = buf_read_fd(&d->in, d->src, want);
	if (r == -1) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		session_errno(s,
		    d == &s->c ? "read from client" : "read from server",
		    errno);
		return;
	}
	if (r == 0) {
		d->eof = 1;
		ev_set(d->rev, &d->rev_on, 0);
	} else {
		d->bytes += (uint64_t)r;
		s->last = now_mono();
	}
	if (dir_process(d) == -1)
		return;
	if (d->eof && buf_used(&d->in) == 0) {
		/* A response cut off by the server's close is an anomaly:
		 * none of it goes out. */
		if (d == &s->sv && (buf_used(&d->la.text) > 0 ||
		                       d->la.lit_left > 0 || d->la.streamed)) {
			snprintf(d->fr.err, sizeof(d->fr.err),
			    "connection closed in the middle of a response");
			session_protocol_error(s, d);
			return;
		}
		/* A client line cut off by EOF never completes; drop it. */
		lineasm_reset(&d->la);
	}
	/* An idle session keeps no read buffer: thousands of them cost a
	 * few KB each, not 256 KB.  A bulk transfer keeps it: freeing and
	 * faulting in 256 KB per read costs more than the copy. */
	if (buf_used(&d->in) == 0 && r >= 0 && r < 16384)
		buf_release(&d->in);
	sink_flush(&s->to_s); /* and then to_c */
}

/* Largest literal a client may announce: beyond it the session ends as
 * an anomaly instead of reading (and dropping) it. */
static uint64_t
literal_cap(const struct session *s)
{
	uint64_t m = s->act->general.max_email_size;

	return m > CLIENT_LITERAL_MIN / 4 ? m * 4 : CLIENT_LITERAL_MIN;
}

/* Read from fd: its read event.  Lazy: the server's, once it is met. */
static void
dir_attach(struct dir *d, int fd)
{
	d->src = fd;
	d->rev = event_new(
	    d->s->n->env.base, fd, EV_READ | EV_PERSIST, dir_read_cb, d);
	if (d->rev == NULL)
		fatalx("event_new");
}

/* Write to fd: its write event. */
static void
sink_attach(struct sink *k, int fd)
{
	k->dst = fd;
	k->wev = event_new(
	    k->s->n->env.base, fd, EV_WRITE | EV_PERSIST, sink_write_cb, k);
	if (k->wev == NULL)
		fatalx("event_new");
}

static void
dir_init(struct session *s, struct dir *d, const char *name, int src,
    enum framer_dir fdir)
{
	d->s = s;
	d->name = name;
	d->src = src;
	buf_init(&d->in, DIR_IN_MAX);
	lineasm_init(&d->la);
	/* Oversize messages are the engine's (TOOBIG, the oversize
	 * action); the framer refuses what no message can be. */
	framer_init(&d->fr, fdir, s->act->general.max_line_length,
	    fdir == FRAMER_CLIENT ? literal_cap(s) : SERVER_LITERAL_CAP);
	d->fr.arg = s;
	if (src != -1) /* -1, lazy: the server is not met yet */
		dir_attach(d, src);
}

static void
sink_init(struct session *s, struct sink *k, int dst)
{
	k->s = s;
	k->dst = dst;
	outq_init(&k->q);
	if (dst != -1) /* -1, lazy: the server is not met yet */
		sink_attach(k, dst);
}

static void
session_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *s = arg;
	uint64_t idle;

	if (s->state != S_RELAY || s->lazy >= LAZY_CONNECT) {
		log_event(LOG_WARNING, "backend unavailable", "client",
		    s->client, "server", s->srv->name, "backend",
		    s->mem->addr.text, "error",
		    s->lazy == LAZY_CHECK ? "no greeting in time"
		    : s->state == S_CONNECTING || s->state == S_RELAY
		        ? "connection timed out" /* lazy: S_RELAY */
		        : "TLS to the server timed out",
		    NULL);
		client_say(s, BYE_UNAVAILABLE);
		session_end(s, "backend unavailable");
		return;
	}
	idle = now_mono() - s->last;
	if (idle >= s->pol->idle_timeout_ms) {
		client_say(s, BYE_IDLE);
		session_end(s, "idle timeout");
		return;
	}
	timer_arm(s, s->pol->idle_timeout_ms - idle);
}

/* The session's one timer, made at first use, (re)armed for ms from
 * now: the bound of meeting the server, else the idle timeout. */
static void
timer_arm(struct session *s, uint64_t ms)
{
	struct timeval tv = ms_timeval(ms);

	if (s->timer == NULL && (s->timer = evtimer_new(s->n->env.base,
	                             session_timer_cb, s)) == NULL)
		fatalx("event_new");
	evtimer_add(s->timer, &tv); /* replaces a pending timeout */
}

/* The idle timer: from now, the session's idle timeout. */
static void
idle_timer(struct session *s)
{
	s->last = now_mono();
	timer_arm(s, s->pol->idle_timeout_ms);
}

/*
 * Lazy: the server was met (TCP, and TLS if the pool says so) for a
 * client that is already relayed.  Its greeting is checked before
 * anything goes to it (session_greeting_check); after STARTTLS to the
 * server there is none on the TLS channel, and the one before TLS was
 * an OK (pretls_read_cb).
 */
static void
lazy_attach(struct session *s)
{
	int on = 1;

	s->state = S_RELAY;
	setsockopt(s->sfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	dir_attach(&s->sv, s->sfd);
	sink_attach(&s->to_s, s->sfd);
	if (s->srv->tls == SRV_TLS_STARTTLS) {
		s->greeting[0] = '\0';
		s->lazy = LAZY_NO;
		idle_timer(s);
	} else {
		s->lazy = LAZY_CHECK;
		timer_arm(s, s->srv->connect_timeout_ms);
	}
	dir_update(&s->c);
	dir_update(&s->sv);
	session_kick(s);
}

static void
session_relay(struct session *s)
{
	int on = 1;

	if (s->lazy >= LAZY_CONNECT) {
		lazy_attach(s);
		return;
	}
	s->state = S_RELAY;
	if (s->sfd != -1)
		setsockopt(s->sfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	dir_init(s, &s->c, "client", s->cfd, FRAMER_CLIENT);
	dir_init(s, &s->sv, "server", s->sfd, FRAMER_SERVER);
	sink_init(s, &s->to_c, s->cfd);
	sink_init(s, &s->to_s, s->sfd);
	s->kickev = event_new(s->n->env.base, -1, 0, session_kick_cb, s);
	if (s->kickev == NULL)
		fatalx("event_new");
	s->c.fr.on_line = imap_client_line_cb;
	s->c.fr.hold_sync = 1;
	idle_timer(s);
	dir_update(&s->c);
	dir_update(&s->sv);
}

static void
server_tls_done(void *arg, struct tls_result *res)
{
	struct session *s = arg;

	s->tlsreq = NULL;
	if (!res->ok || set_nonblock(res->fd) == -1) {
		if (res->fd != -1)
			close(res->fd);
		log_event(LOG_WARNING, "backend unavailable", "client",
		    s->client, "server", s->srv->name, "backend",
		    s->mem->addr.text, "error", res->error, NULL);
		client_say(s, BYE_UNAVAILABLE);
		session_end(s, "TLS to the server failed");
		return;
	}
	s->sfd = res->fd;
	s->stls = 1;
	log_event(LOG_INFO, "server tls", "client", s->client, "server",
	    s->srv->name, "backend", s->mem->addr.text, "version", res->version,
	    "cipher", res->cipher, "subject", res->subject, "resumed",
	    res->resumed ? "yes" : "no", NULL);
	if (s->implicit && !s->ctls) {
		/* The client proxy: the client's handshake now, with a
		 * certificate for the names the real server showed. */
		snprintf(s->names, sizeof(s->names), "%s", res->names);
		snprintf(s->attest, sizeof(s->attest), "%s", res->attest);
		if (s->names[0] == '\0') {
			log_event(LOG_WARNING, "backend unavailable", "client",
			    s->client, "server", s->srv->name, "backend",
			    s->mem->addr.text, "error",
			    "the server's certificate has no names", NULL);
			session_end(s, "TLS to the server failed");
			return;
		}
		client_tls_start(s);
		return;
	}
	session_relay(s);
	/* The greeting the server gave before TLS is the client's: it goes
	 * through the engine as if it came now, without its response code
	 * (capabilities before TLS are not those after). */
	if (s->greeting[0]) {
		buf_add(&s->sv.in, s->greeting, strlen(s->greeting));
		s->greeting[0] = '\0';
		session_kick(s);
	}
}

/* The name the server's certificate must carry (and SNI). */
static const char *
server_tls_name(struct session *s, char *buf, size_t len)
{
	const char *h = s->mem->host, *colon;
	struct in6_addr a6;
	struct in_addr a4;

	/* The client proxy: the name the client asked for, else the
	 * address. */
	if (s->pol->original)
		return s->sni;
	if (s->srv->server_name != NULL)
		return s->srv->server_name;
	if (h == NULL || h[0] == '[')
		return "";
	colon = strrchr(h, ':');
	snprintf(
	    buf, len, "%.*s", colon ? (int)(colon - h) : (int)strlen(h), h);
	if (inet_pton(AF_INET, buf, &a4) == 1 ||
	    inet_pton(AF_INET6, buf, &a6) == 1)
		return ""; /* an address: tlsd checks the address */
	return buf;
}

static void
server_tls_start(struct session *s)
{
	char name[TLS_MAX_NAME + 1];
	int fd = s->sfd;

	s->state = S_TLS;
	s->sfd = -1;
	if (s->connev) {
		event_free(s->connev);
		s->connev = NULL;
	}
	s->tlsreq = tls_start(s->n, fd, TLS_SIDE_CLIENT, 0, s->pol->name,
	    s->srv->name, server_tls_name(s, name, sizeof(name)), NULL,
	    s->mem->addr.text, server_tls_done, s);
}

static void
pretls_fail(struct session *s, const char *why)
{
	log_event(LOG_WARNING, "backend unavailable", "client", s->client,
	    "server", s->srv->name, "backend", s->mem->addr.text, "error", why,
	    NULL);
	client_say(s, BYE_UNAVAILABLE);
	session_end(s, "STARTTLS to the server failed");
}

/* The greeting without its response code, kept for the client. */
static void
pretls_greeting(struct session *s, const char *line, size_t len)
{
	const char *p = line + 5, *end = line + len, *rb; /* after "* OK " */

	if (p < end && *p == '[' && (rb = memchr(p, ']', end - p)) != NULL) {
		p = rb + 1;
		while (p < end && *p == ' ')
			p++;
	}
	snprintf(s->greeting, sizeof(s->greeting), "* OK %.*s\r\n",
	    (int)(end - p > 900 ? 900 : end - p), p);
}

/*
 * Before TLS to a tls: starttls server: its greeting (kept for the
 * client), our STARTTLS, its OK.  Nothing the server says before TLS
 * reaches the client but the greeting's text; a PREAUTH greeting (no
 * STARTTLS possible), a refusal, or bytes after the OK end the session.
 */
static void
pretls_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	static const char cmd[] = "igw0 STARTTLS\r\n";
	struct session *s = arg;
	const char *p, *lf;
	size_t n, len;
	ssize_t r;

	r = buf_read_fd(&s->pre, s->sfd, buf_room(&s->pre));
	if (r == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		pretls_fail(
		    s, r == 0 ? "server closed before TLS" : strerror(errno));
		return;
	}
	for (;;) {
		p = (const char *)buf_head(&s->pre);
		n = buf_used(&s->pre);
		if ((lf = memchr(p, '\n', n)) == NULL) {
			if (buf_room(&s->pre) == 0)
				pretls_fail(
				    s, "server line too long before TLS");
			return;
		}
		len = (size_t)(lf - p) + 1;
		while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
			len--;
		if (s->pre_state == 0) {
			if (len < 5 || strncasecmp(p, "* OK ", 5) != 0) {
				pretls_fail(
				    s, len >= 10 && strncasecmp(p, "* PREAUTH ",
				                        10) == 0
				           ? "server greeted PREAUTH before TLS"
				           : "server refused the connection");
				return;
			}
			pretls_greeting(s, p, len);
			if (write(s->sfd, cmd, sizeof(cmd) - 1) !=
			    (ssize_t)sizeof(cmd) - 1) {
				pretls_fail(s, "cannot send STARTTLS");
				return;
			}
			s->pre_state = 1;
		} else if (len >= 5 && strncmp(p, "igw0 ", 5) == 0) {
			if (len < 7 || strncasecmp(p + 5, "OK", 2) != 0) {
				pretls_fail(s, "server refused STARTTLS");
				return;
			}
			if (n > (size_t)(lf - p) + 1) {
				pretls_fail(s, "server sent data after its "
				               "STARTTLS answer");
				return;
			}
			event_free(s->connev);
			s->connev = NULL;
			buf_free(&s->pre);
			server_tls_start(s);
			return;
		}
		buf_consume(&s->pre, (size_t)(lf - p) + 1);
	}
}

/* Connected to the server: TLS first if the pool says so. */
static void
backend_ready(struct session *s)
{
	if (s->srv->tls == SRV_TLS_IMPLICIT) {
		server_tls_start(s);
		return;
	}
	if (s->srv->tls == SRV_TLS_STARTTLS) {
		s->state = S_PRETLS;
		buf_init(&s->pre, PRETLS_MAX);
		if (s->connev)
			event_free(s->connev);
		s->connev = event_new(s->n->env.base, s->sfd,
		    EV_READ | EV_PERSIST, pretls_read_cb, s);
		if (s->connev == NULL)
			fatalx("event_new");
		event_add(s->connev, NULL);
		return;
	}
	session_relay(s);
}

static void
session_connected_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *s = arg;
	socklen_t len = sizeof(int);
	int err = 0;

	if (getsockopt(s->sfd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err) {
		log_event(LOG_WARNING, "backend unavailable", "client",
		    s->client, "server", s->srv->name, "backend",
		    s->mem->addr.text, "error", strerror(err), NULL);
		client_say(s, BYE_UNAVAILABLE);
		session_end(s, "backend unavailable");
		return;
	}
	backend_ready(s);
}

/* Address and port apart, for the upstream ID; v4-mapped shown as v4. */
static void
addr_split(const struct sockaddr *sa, char *ip, size_t iplen, char *port,
    size_t portlen)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)iplen);
		snprintf(port, portlen, "%u", ntohs(s4->sin_port));
	} else if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		inet_ntop(
		    AF_INET, &s6->sin6_addr.s6_addr[12], ip, (socklen_t)iplen);
		snprintf(port, portlen, "%u", ntohs(s6->sin6_port));
	} else {
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)iplen);
		snprintf(port, portlen, "%u", ntohs(s6->sin6_port));
	}
}

static int
policy_allows(const struct cfg_policy *pol, const struct sockaddr *sa)
{
	size_t i;

	for (i = 0; i < pol->nfrom; i++)
		if (cidr_match(&pol->from[i], sa))
			return 1;
	return 0;
}

static void
session_refuse(int fd, const char *client, const struct cfg_policy *pol,
    const char *reason, int reset)
{
	struct linger lg = {1, 0};

	log_event(LOG_NOTICE, "session denied", "client", client, "policy",
	    pol->name, "reason", reason, NULL);
	/* A zero linger makes close() send RST instead of FIN. */
	if (reset)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static int
session_connect(struct session *s)
{
	const struct cfg_addr *a = &s->mem->addr;
	int fd, r;

	fd = socket(
	    a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	s->sfd = fd;
	s->connev =
	    event_new(s->n->env.base, fd, EV_WRITE, session_connected_cb, s);
	if (s->connev == NULL)
		fatalx("event_new");
	timer_arm(s, s->srv->connect_timeout_ms);
	r = connect(fd, (const struct sockaddr *)&a->ss, a->len);
	if (r == -1 && errno != EINPROGRESS)
		return -1;
	/* Lazy: from the event loop, not inside the client's processing. */
	if (r == 0 && s->lazy == LAZY_NO) {
		backend_ready(s);
		return 0;
	}
	event_add(s->connev, NULL);
	return 0;
}

/* Connect to the backend; a failure ends the session with a BYE. */
static void
session_backend(struct session *s)
{
	int err;

	if (session_connect(s) == -1) {
		err = errno;
		log_event(LOG_WARNING, "backend unavailable", "client",
		    s->client, "server", s->srv->name, "backend",
		    s->mem->addr.text, "error", strerror(err), NULL);
		client_say(s, BYE_UNAVAILABLE);
		session_end(s, "backend unavailable");
	}
}

/*
 * servers.<pool>.connect: lazy.  The greeting the pool's server gave
 * last (this netd, this configuration), kept as it came with the
 * capabilities of its code apart; NULL before the first one.
 */
static struct netd_greet *
greet_slot(struct session *s, int create)
{
	struct netd_cfg *nc = s->nc;

	if (s->pol->original)
		return NULL; /* the client proxy's server is not a pool */
	if (nc->greet == NULL && create &&
	    (nc->greet = calloc(nc->cfg->nservers, sizeof(*nc->greet))) == NULL)
		return NULL;
	return nc->greet ? &nc->greet[s->srv - nc->cfg->servers] : NULL;
}

static char *
greet_caps(struct lineasm *la, const struct imap_resp *r)
{
	if (r->code.kind != IMAP_CODE_CAPABILITY)
		return strdup("");
	return strndup(
	    (const char *)buf_head(&la->text) + r->caps.off, r->caps.len);
}

void
session_greeting_learn(
    struct session *s, struct lineasm *la, const struct imap_resp *r)
{
	struct netd_greet *g;
	char *line, *caps;

	if (s->srv->connect != SRV_CONNECT_LAZY || s->lazy == LAZY_WAIT ||
	    r->kind != IMAP_RESP_COND || r->status != IMAP_ST_OK ||
	    la->nspools > 0 || buf_used(&la->text) > GREET_MAX ||
	    memchr(buf_head(&la->text), '\0', buf_used(&la->text)) != NULL ||
	    (g = greet_slot(s, 1)) == NULL)
		return;
	line = strndup((const char *)buf_head(&la->text), buf_used(&la->text));
	caps = greet_caps(la, r);
	if (line == NULL || caps == NULL) {
		free(line);
		free(caps);
		return; /* the next session connects eagerly */
	}
	free(g->line);
	free(g->caps);
	g->line = line;
	g->caps = caps;
}

/*
 * LAZY_CHECK: the server's own greeting.  The client was greeted with
 * the one before, its capabilities included: an OK with the same
 * capabilities lets the client's commands go; anything else ends the
 * session (a server that now refuses, or greets PREAUTH, or offers other
 * capabilities than the client was told), and a changed OK is kept for
 * the next client.
 */
int
session_greeting_check(
    struct session *s, struct lineasm *la, const struct imap_resp *r)
{
	char *caps = NULL;
	const char *why = NULL;

	if (r->kind != IMAP_RESP_COND)
		why = "server sent no greeting";
	else if (r->status == IMAP_ST_PREAUTH)
		why = "server greeted PREAUTH";
	else if (r->status != IMAP_ST_OK)
		why = "server refused the connection";
	else if ((caps = greet_caps(la, r)) == NULL)
		why = "out of memory";
	else if (s->lazy_caps == NULL || strcmp(s->lazy_caps, caps) != 0)
		why =
		    "server capabilities changed since the client was greeted";
	free(caps);
	free(s->lazy_caps);
	s->lazy_caps = NULL;
	if (why == NULL) {
		session_greeting_learn(s, la, r);
		s->lazy = LAZY_NO;
		idle_timer(s);
		session_kick(s);
		return 0;
	}
	if (r->kind == IMAP_RESP_COND && r->status == IMAP_ST_OK)
		session_greeting_learn(s, la, r);
	log_event(LOG_WARNING, "backend unavailable", "client", s->client,
	    "server", s->srv->name, "backend", s->mem->addr.text, "error", why,
	    NULL);
	client_say(s, BYE_UNAVAILABLE);
	session_end(s, "backend unavailable");
	return 0;
}

/* Lazy: the client's first command for the server is queued: meet it.
 * -1 if the session ended. */
static int
lazy_connect(struct session *s)
{
	s->lazy = LAZY_CONNECT;
	log_debug("session %llu: client's first command: meeting the server",
	    (unsigned long long)s->id);
	session_backend(s);
	return s->ending ? -1 : 0;
}

/*
 * After the client's TLS (or at once): the server.  A lazy pool whose
 * server greeted this netd before: the client gets that greeting now,
 * through the engine as if the server had sent it, and the server is
 * met at the client's first command for it.
 */
static void
session_upstream(struct session *s)
{
	struct netd_greet *g;

	if (s->srv->connect != SRV_CONNECT_LAZY ||
	    (g = greet_slot(s, 0)) == NULL || g->line == NULL ||
	    (s->lazy_caps = strdup(g->caps)) == NULL) {
		session_backend(s);
		return;
	}
	s->lazy = LAZY_WAIT;
	session_relay(s);
	if (buf_add(&s->sv.in, g->line, strlen(g->line)) == -1) {
		session_errno(s, "greeting", errno);
		return;
	}
	session_kick(s);
}

/*
 * The client proxy with implicit TLS: the server name (SNI) of the
 * client's ClientHello, peeked at (the bytes stay in the socket for
 * tlsd), so that the real server is met and verified under the name the
 * client asks for; a ClientHello without one: verified by its address.
 * What is not a ClientHello ends the session.  Edge-triggered: each
 * arrival is looked at once; bounded by twice the server's connect
 * timeout however slowly it comes.
 */
static void
hello_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *s = arg;
	uint8_t buf[SNI_PEEK_MAX];
	struct timespec now;
	const char *why = NULL;
	ssize_t n;
	int r = SNI_MORE;

	clock_gettime(CLOCK_MONOTONIC, &now);
	n = recv(s->cfd, buf, sizeof(buf), MSG_PEEK);
	if (n > 0)
		r = sni_parse(buf, (size_t)n, s->sni, sizeof(s->sni));
	if (n == 0)
		why = "client closed";
	else if (n == -1 && errno != EAGAIN && errno != EINTR)
		why = "client read error";
	else if (r == SNI_BAD || (r == SNI_MORE && n == (ssize_t)sizeof(buf)))
		why = "not a TLS ClientHello with a usable server name";
	else if (r == SNI_MORE &&
	         ((ev & EV_TIMEOUT) ||
	             (uint64_t)(now.tv_sec - s->start.tv_sec) * 1000 >
	                 2 * s->srv->connect_timeout_ms))
		why = "no ClientHello in time";
	if (why != NULL) {
		log_event(LOG_NOTICE, "anomaly", "client", s->client, "policy",
		    s->pol->name, "from", "client", "error", why, NULL);
		session_end(s, why);
		return;
	}
	if (r == SNI_MORE)
		return;
	event_free(s->hellev);
	s->hellev = NULL;
	session_backend(s);
}

static void
hello_wait(struct session *s)
{
	struct timeval tv = ms_timeval(s->srv->connect_timeout_ms);

	s->hellev = event_new(
	    s->n->env.base, s->cfd, EV_READ | EV_PERSIST | EV_ET, hello_cb, s);
	if (s->hellev == NULL)
		fatalx("event_new");
	event_add(s->hellev, &tv);
}

/*
 * to: original-destination: the address the client was going to, before
 * the firewall redirected it here (SO_ORIGINAL_DST).  A connection that
 * was not redirected (its original destination is this listener) has no
 * server: refused, or it would loop.
 */
static int
original_dst(struct session *s, int fd)
{
	struct sockaddr_storage ss, self;
	socklen_t len = sizeof(ss), slen = sizeof(self);
	int r;

	memset(&ss, 0, sizeof(ss));
	memset(&s->orig, 0, sizeof(s->orig));
	if (getsockname(fd, (struct sockaddr *)&self, &slen) == -1)
		r = -1;
	else if (self.ss_family == AF_INET6)
		r = getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len);
	else
		r = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
	if (r == -1 || (len == slen && memcmp(&ss, &self, len) == 0)) {
		log_event(LOG_NOTICE, "session denied", "client", s->client,
		    "policy", s->pol->name, "reason",
		    r == -1 ? "no original destination"
		            : "not redirected: no original destination",
		    NULL);
		session_end(s, "no original destination");
		return -1;
	}
	memcpy(&s->orig.addr.ss, &ss, len);
	s->orig.addr.len = len;
	addr_text((struct sockaddr *)&ss, s->orig.addr.text,
	    sizeof(s->orig.addr.text));
	s->orig.weight = 1;
	s->mem = &s->orig;
	return 0;
}

void
session_accept(struct netd *n, struct netd_listener *l, int fd,
    const struct sockaddr *sa, socklen_t salen)
{
	const struct cfg_policy *pol = &l->nc->cfg->policies[l->policy];
	struct session *s;
	char client[80], id[24];
	int on = 1;

	addr_text(sa, client, sizeof(client));
	/* Before anything else: a blocked site gets not even a greeting. */
	if (netd_blocked(n, sa)) {
		session_refuse(fd, client, pol, "blocked site", 0);
		return;
	}
	if (!policy_allows(pol, sa)) {
		session_refuse(fd, client, pol, "source not allowed", 0);
		return;
	}
	if (pol->disposition != DISP_ALLOW) {
		session_refuse(fd, client, pol,
		    pol->disposition == DISP_DENY ? "disposition deny"
		                                  : "disposition deny-reset",
		    pol->disposition == DISP_DENY_RESET);
		return;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		log_warn("session");
		close(fd);
		return;
	}
	s->n = n;
	s->id = ++n->nextid;
	s->nc = l->nc;
	s->nc->refs++;
	s->pol = pol;
	s->act = &l->nc->cfg->actions[pol->actionidx];
	s->srv = &l->nc->cfg->servers[pol->server];
	s->mem = &s->srv->members[0]; /* balancing: a later issue */
	s->cfd = fd;
	s->sfd = -1;
	s->state = S_CONNECTING;
	snprintf(s->client, sizeof(s->client), "%s", client);
	addr_split(sa, s->client_ip, sizeof(s->client_ip), s->client_port,
	    sizeof(s->client_port));
	clock_gettime(CLOCK_MONOTONIC, &s->start);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	s->next = n->sessions;
	if (n->sessions)
		n->sessions->prev = s;
	n->sessions = s;
	n->nsessions++;
	n->total++;
	snprintf(id, sizeof(id), "%llu", (unsigned long long)s->id);
	log_event(LOG_INFO, "session start", "id", id, "client", client,
	    "policy", pol->name, "listen", l->addr, "server", s->srv->name,
	    "backend", s->mem->addr.text, NULL);
	s->implicit = l->tls == LISTEN_TLS_IMPLICIT;
	if (pol->original && original_dst(s, fd) == -1)
		return;
	/* The client proxy meets the real server first (its certificate's
	 * names make the one the client sees), under the name the client
	 * asks for; otherwise the client's handshake first, then the
	 * backend. */
	if (s->implicit && pol->original) {
		hello_wait(s);
		return;
	}
	if (s->implicit) {
		client_tls_start(s);
		return;
	}
	session_upstream(s);
}
