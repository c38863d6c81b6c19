/*
 * tlsd: one TLS connection per IMSG_TLS_START (common/tls.h).
 *
 * The handshake runs with SSL_do_handshake on netd's non-blocking TCP
 * socket, driven by the event loop (a read or write event, whichever
 * OpenSSL asks for), bounded by TLS_HANDSHAKE_TIMEOUT_MS.  Done, tlsd
 * makes a socketpair, answers IMSG_TLS_DONE with netd's end and relays
 * between the SSL and its own end with two buffers and plain events:
 *
 *   - each direction holds at most TLSD_RELAY_MAX bytes in its buffer
 *     (allocated while the direction carries data, released when it is
 *     drained after small reads), and the socketpair's send buffers are
 *     set to as much (SO_SNDBUF): from netd one read() takes what is
 *     there, SSL_write sends it in full-size records
 *     (SSL_MODE_ENABLE_PARTIAL_WRITE); SSL_read fills the other buffer
 *     until OpenSSL wants more from the socket, and send() passes it on;
 *   - a full buffer stops reading its source (netd's end again once the
 *     buffer is down to half); events change only when a side blocks or
 *     unblocks; SSL_ERROR_WANT_READ and WANT_WRITE of either SSL call
 *     (TLS 1.3 post-handshake messages) wait for that socket event;
 *   - EOF from netd: what is queued goes out, then close_notify and
 *     shutdown(SHUT_WR) of the TCP socket; the peer's data still comes
 *     through until it closes too, for at most TLSD_LINGER_MS;
 *   - close_notify or EOF from the peer (an EOF without close_notify is
 *     logged as truncated): what is queued goes to netd, then
 *     shutdown(SHUT_WR) of the plaintext end;
 *   - the peer reset the TCP connection (an SSL call fails with
 *     ECONNRESET or EPIPE): nothing reaches the peer any more, so no
 *     close_notify and no shutdown() of the TCP socket, and what netd
 *     sent for it is dropped (netd's end is no longer read, then drained
 *     before the close); what the peer sent before (in the buffer, and
 *     what the socket still holds: SSL_read goes on to its end) goes to
 *     netd, then both are closed at once, without waiting for netd's
 *     EOF: netd reads the rest, then EOF;
 *   - both directions ended, or an error either way: both are closed.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"
#include "tlsd.h"
#include "util.h"

/* A buffer that drained after a read smaller than this is released. */
#define RELAY_KEEP_READ 16384

/* One direction of the relay: data[off..len) is read, not yet written. */
struct relay_buf {
	uint8_t *data; /* TLSD_RELAY_MAX bytes, NULL while released */
	size_t off, len;
	size_t last_read; /* bytes the last read into it brought */
};

struct conn {
	struct conn *next, *prev;
	struct tlsd_gen *gen;
	struct proc_chan *chan; /* NULL once netd's channel is gone */
	uint64_t id;
	uint32_t side;
	char *policy, *server, *name, *peer, *attest;
	struct tlsd_pool *pool; /* client side */
	SSL *ssl;
	int tlsfd, plainfd;
	struct event *tls_rev, *tls_wev, *plain_rev, *plain_wev;
	int tls_rev_on, tls_wev_on, plain_rev_on, plain_wev_on;
	struct event *timer; /* handshake timeout, then linger */
	/* What the last SSL_do_handshake or SSL_read (rd_want), SSL_write
	 * or SSL_shutdown (wr_want) waits for: SSL_ERROR_WANT_READ or
	 * SSL_ERROR_WANT_WRITE, 0 for nothing. */
	int rd_want, wr_want;
	struct relay_buf up; /* peer -> netd */
	struct relay_buf down; /* netd -> peer */
	int relaying;
	int tls_eof, plain_eof; /* that side sent EOF */
	int tls_wdone, plain_wdone; /* we ended writing to that side */
	int close_notify; /* the peer sent close_notify */
	int truncated; /* the peer's EOF came without close_notify */
	int reset; /* the peer reset the TCP connection */
	unsigned flags; /* START's TLS_START_* */
	int corked; /* TCP_CORK is on: the last flight waits for data */
	size_t dropped; /* bytes for the peer that its reset dropped */
	uint64_t from_peer, to_peer;
};

static struct event_base *conn_base;
static int hs_timeout_ms = TLS_HANDSHAKE_TIMEOUT_MS;
static struct conn *conns;
static unsigned int nconns;
static uint64_t nhandshakes;

void
tlsd_conn_init(struct event_base *base, int timeout_ms)
{
	conn_base = base;
	hs_timeout_ms = timeout_ms;
}

unsigned int
tlsd_sessions(void)
{
	return nconns;
}

uint64_t
tlsd_total(void)
{
	return nhandshakes;
}

static const char *
side_name(const struct conn *c)
{
	return c->side == TLS_SIDE_SERVER ? "server" : "client";
}

static void
conn_free(struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nconns--;
	if (c->timer)
		event_free(c->timer);
	if (c->tls_rev)
		event_free(c->tls_rev);
	if (c->tls_wev)
		event_free(c->tls_wev);
	if (c->plain_rev)
		event_free(c->plain_rev);
	if (c->plain_wev)
		event_free(c->plain_wev);
	/*
	 * A session that ended without a close_notify both ways stays
	 * resumable (SSL_free would drop it from the cache): clients that
	 * just close are common.  A TLS protocol error has removed it
	 * already, with its fatal alert.
	 */
	if (c->relaying && c->ssl)
		SSL_set_shutdown(
		    c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	if (c->ssl)
		SSL_free(c->ssl); /* its socket BIO leaves the fd open */
	if (c->tlsfd != -1)
		close(c->tlsfd);
	if (c->plainfd != -1)
		close(c->plainfd);
	free(c->up.data);
	free(c->down.data);
	tlsd_gen_unref(c->gen);
	free(c->policy);
	free(c->server);
	free(c->name);
	free(c->peer);
	free(c->attest);
	free(c);
}

void
tlsd_conn_free_all(void)
{
	while (conns)
		conn_free(conns);
}

static const struct tlsd_policy *proxy_policy(const struct conn *);

static void
send_done(struct conn *c, int fd, const char *error, const char *version,
    const char *cipher, const char *sni, const char *subject, int resumed,
    const char *names, const char *attest)
{
	struct buf b;

	if (c->chan == NULL) {
		if (fd != -1)
			close(fd);
		return;
	}
	buf_init(&b, 0);
	buf_add_u64(&b, c->id);
	buf_add_u32(&b, fd != -1);
	buf_add_str(&b, error);
	buf_add_str(&b, version);
	buf_add_str(&b, cipher);
	buf_add_str(&b, sni);
	buf_add_str(&b, subject);
	buf_add_u32(&b, resumed != 0);
	buf_add_str(&b, names);
	buf_add_str(&b, attest);
	proc_compose(c->chan, IMSG_TLS_DONE, 0, fd, buf_head(&b), buf_used(&b));
	buf_free(&b);
}

/* The handshake failed: answer, log, close. */
static void
conn_fail(struct conn *c, const char *why)
{
	log_event(LOG_NOTICE, "tls handshake failed", "peer", c->peer, "side",
	    side_name(c), c->side == TLS_SIDE_SERVER ? "policy" : "server",
	    c->side == TLS_SIDE_SERVER ? c->policy : c->server, "name", c->name,
	    "error", why, NULL);
	send_done(c, -1, why, "", "", "", "", 0, "", "");
	conn_free(c);
}

/*
 * The relay ended (why: NULL for an end of both directions that lost
 * nothing).  A reset by the peer after all for it was out is an end like
 * an EOF without close_notify (debug); one that dropped data for it is
 * logged like an error.
 */
static void
conn_end(struct conn *c, const char *why)
{
	char in[24], out[24], reset[64];

	snprintf(in, sizeof(in), "%llu", (unsigned long long)c->from_peer);
	snprintf(out, sizeof(out), "%llu", (unsigned long long)c->to_peer);
	if (why == NULL && c->reset && c->dropped > 0) {
		snprintf(reset, sizeof(reset),
		    "reset by the peer (%zu bytes for it dropped)", c->dropped);
		why = reset;
	}
	log_event(why ? LOG_NOTICE : LOG_DEBUG, "tls end", "peer", c->peer,
	    "side", side_name(c), "bytes_in", in, "bytes_out", out, "end",
	    why            ? why
	    : c->reset     ? "reset by the peer"
	    : c->truncated ? "truncated (EOF without close_notify)"
	                   : "closed",
	    NULL);
	conn_free(c);
}

/*
 * Did an SSL call that failed with e (SSL_get_error) meet the peer's
 * EOF?  close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF, a dirty
 * shutdown) the socket's EOF or reset without an OpenSSL error.
 */
static int
ssl_eof(int e)
{
	unsigned long err = ERR_peek_error();

	if (e == SSL_ERROR_ZERO_RETURN)
		return 1;
	if (e == SSL_ERROR_SYSCALL && err == 0)
		return 1;
	return e == SSL_ERROR_SSL && ERR_GET_LIB(err) == ERR_LIB_SSL &&
	       ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

/* Did an SSL call that failed with e, errno err right after it, meet a
 * reset of the TCP connection (a write after it: EPIPE)? */
static int
ssl_reset(int e, int err)
{
	return e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 &&
	       (err == ECONNRESET || err == EPIPE);
}

/* Why an SSL call failed: the first OpenSSL error queued as text, else
 * the system error (err: errno right after the call). */
static void
ssl_why(struct conn *c, int err, char *out, size_t len)
{
	unsigned long e, first = 0;

	while ((e = ERR_get_error()) != 0)
		if (first == 0 && ERR_GET_LIB(e) != 0)
			first = e;
	if (first != 0)
		tlsd_error_text(c->ssl, first, out, len);
	else if (err != 0 && err != EAGAIN)
		snprintf(out, len, "%s", strerror(err));
	else
		snprintf(out, len, "connection failed");
}

static void
ev_set(struct event *ev, int *on, int want)
{
	if (*on == want)
		return;
	if (want)
		event_add(ev, NULL);
	else
		event_del(ev);
	*on = want;
}

/* The TCP socket's events: what the SSL calls wait for. */
static void
tls_events(struct conn *c)
{
	ev_set(c->tls_rev, &c->tls_rev_on,
	    c->rd_want == SSL_ERROR_WANT_READ ||
	        c->wr_want == SSL_ERROR_WANT_READ);
	ev_set(c->tls_wev, &c->tls_wev_on,
	    c->rd_want == SSL_ERROR_WANT_WRITE ||
	        c->wr_want == SSL_ERROR_WANT_WRITE);
}

/*
 * TLS_START_SPEAKS_FIRST: the socket is corked for the handshake; when
 * the peer's answer is awaited, what waits goes (a flight the peer
 * answers) and it is corked again, so that the last flight (TLS 1.2:
 * the server's Finished; 1.3: the session tickets) waits in it for the
 * greeting and both leave in one segment; the first write of data
 * (tls_write) or the close uncorks.  One wakeup of the client instead
 * of two or three.
 */
static void
cork(struct conn *c, int on)
{
	int v = on;

	if (on && c->corked) {
		v = 0;
		(void)setsockopt(
		    c->tlsfd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v));
		v = 1;
	} else if (on == c->corked)
		return;
	(void)setsockopt(c->tlsfd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v));
	c->corked = on;
}

/* ---- the relay ---- */

static size_t
rb_used(const struct relay_buf *b)
{
	return b->len - b->off;
}

/* Room at the end of b (allocated, compacted if need be); -1 without
 * memory. */
static ssize_t
rb_room(struct relay_buf *b)
{
	if (b->data == NULL && (b->data = malloc(TLSD_RELAY_MAX)) == NULL)
		return -1;
	if (b->off == b->len)
		b->off = b->len = 0;
	else if (b->off > 0 && TLSD_RELAY_MAX - b->len < TLSD_RELAY_MAX / 4) {
		/* SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: a pending SSL_write
		 * may find its bytes elsewhere. */
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	return (ssize_t)(TLSD_RELAY_MAX - b->len);
}

/* Bytes of b were written: an empty buffer starts over, and is released
 * if it is not carrying a bulk transfer. */
static void
rb_consumed(struct relay_buf *b, size_t n)
{
	b->off += n;
	if (b->off < b->len)
		return;
	b->off = b->len = 0;
	if (b->last_read < RELAY_KEEP_READ) {
		free(b->data);
		b->data = NULL;
	}
}

/*
 * The peer reset the connection: it can be sent nothing more (no
 * close_notify, no shutdown: a write would only fail, with SIGPIPE).
 * What netd had for it is dropped; what it sent still goes to netd
 * (relay_pump reads on to the socket's end: after a reset that never
 * waits), then both ends are closed.
 */
static void
conn_reset(struct conn *c)
{
	if (!c->reset)
		c->dropped = rb_used(&c->down);
	c->reset = 1;
	c->tls_wdone = 1;
	c->rd_want = c->wr_want = 0;
	evtimer_del(c->timer);
	free(c->down.data);
	c->down.data = NULL;
	c->down.off = c->down.len = 0;
	ERR_clear_error();
}

/*
 * After a reset, before the close: what netd sent for the peer since is
 * read and dropped too.  Linux ends netd's reads with ECONNRESET instead
 * of EOF when a socketpair end is closed with data unread.
 */
static void
plain_drain(struct conn *c)
{
	static uint8_t sink[65536];
	ssize_t n;
	int i;

	for (i = 0; i < 64; i++) {
		n = read(c->plainfd, sink, sizeof(sink));
		if (n > 0) {
			c->to_peer += (uint64_t)n;
			c->dropped += (size_t)n;
		} else if (n == 0 || errno != EINTR)
			break;
	}
}

static void
conn_check_done(struct conn *c)
{
	if (c->tls_eof && c->plain_eof && c->tls_wdone && c->plain_wdone)
		conn_end(c, NULL);
}

static void
linger_timeout(evutil_socket_t fd, short ev, void *arg)
{
	conn_end(arg, "peer did not close within the linger time");
}

/* Peer -> up: SSL_read until the buffer is full or OpenSSL waits for the
 * socket.  -1 if the connection ended. */
static int
tls_read(struct conn *c)
{
	struct relay_buf *b = &c->up;
	char why[TLS_MAX_ERROR];
	ssize_t room;
	int n, e, err;

	while (!c->tls_eof) {
		if ((room = rb_room(b)) == -1) {
			conn_end(c, "out of memory");
			return -1;
		}
		if (room == 0)
			return 0;
		ERR_clear_error();
		errno = 0;
		n = SSL_read(c->ssl, b->data + b->len,
		    room > INT_MAX ? INT_MAX : (int)room);
		if (n > 0) {
			b->len += (size_t)n;
			b->last_read = (size_t)n;
			c->from_peer += (uint64_t)n;
			continue;
		}
		err = errno;
		e = SSL_get_error(c->ssl, n);
		/* (A reset socket has nothing to wait for.) */
		if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
		    !c->reset) {
			c->rd_want = e;
			return 0;
		}
		if (ssl_reset(e, err))
			conn_reset(c);
		else if (!ssl_eof(e) && !c->reset) {
			ssl_why(c, err, why, sizeof(why));
			conn_end(c, why);
			return -1;
		}
		ERR_clear_error();
		c->tls_eof = 1;
		c->truncated = !c->close_notify;
		if (c->tls_wdone)
			evtimer_del(c->timer);
	}
	return 0;
}

/* up -> netd.  -1 if the connection ended. */
static int
plain_write(struct conn *c)
{
	struct relay_buf *b = &c->up;
	char why[TLS_MAX_ERROR];
	ssize_t n;

	while (rb_used(b) > 0) {
		n = send(
		    c->plainfd, b->data + b->off, rb_used(b), MSG_NOSIGNAL);
		if (n > 0) {
			rb_consumed(b, (size_t)n);
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return 0;
		snprintf(why, sizeof(why), "netd side: %s",
		    n == -1 ? strerror(errno) : "write failed");
		conn_end(c, why);
		return -1;
	}
	/* (After a reset, relay_pump closes it right away.) */
	if (c->tls_eof && !c->plain_wdone && !c->reset) {
		c->plain_wdone = 1;
		shutdown(c->plainfd, SHUT_WR);
	}
	return 0;
}

/* All of down is out and netd is done: close_notify, then
 * shutdown(SHUT_WR), and the peer has the linger time to close too. */
static void
tls_close(struct conn *c)
{
	struct timeval tv = ms_timeval(TLSD_LINGER_MS);
	int r, e, err;

	cork(c, 0);
	ERR_clear_error();
	errno = 0;
	if ((r = SSL_shutdown(c->ssl)) < 0) {
		err = errno;
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_WRITE) {
			c->wr_want = e; /* the alert waits in OpenSSL */
			return;
		}
		if (ssl_reset(e, err)) {
			conn_reset(c);
			return;
		}
		log_debug("tls: close_notify to %s not sent", c->peer);
	}
	ERR_clear_error();
	shutdown(c->tlsfd, SHUT_WR);
	c->tls_wdone = 1;
	if (!c->tls_eof)
		evtimer_add(c->timer, &tv);
}

/* down -> peer: SSL_write in records as large as TLS allows.  -1 if the
 * connection ended. */
static int
tls_write(struct conn *c)
{
	struct relay_buf *b = &c->down;
	char why[TLS_MAX_ERROR];
	size_t left;
	int n, e, err;

	while ((left = rb_used(b)) > 0) {
		ERR_clear_error();
		errno = 0;
		n = SSL_write(c->ssl, b->data + b->off,
		    left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0) {
			rb_consumed(b, (size_t)n);
			/* The first data: it and the last flight go. */
			cork(c, 0);
			continue;
		}
		err = errno;
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			c->wr_want = e;
			return 0;
		}
		if (ssl_reset(e, err)) {
			conn_reset(c);
			return 0;
		}
		ssl_why(c, err, why, sizeof(why));
		conn_end(c, why);
		return -1;
	}
	/* A write that SSL_read started (a KeyUpdate answer) goes first. */
	if (c->plain_eof && !c->tls_wdone && c->rd_want != SSL_ERROR_WANT_WRITE)
		tls_close(c);
	return 0;
}

/*
 * Move what can be moved without waiting, then set the events to what
 * is waited for.  The caller has cleared the wants its event satisfied.
 */
static void
relay_pump(struct conn *c)
{
	size_t used;

again:
	/* Peer -> netd; as long as netd takes it all, read on (OpenSSL
	 * may hold records that no socket event announces). */
	for (;;) {
		if (c->rd_want == 0 && tls_read(c) == -1)
			return;
		used = rb_used(&c->up);
		if (plain_write(c) == -1)
			return;
		if (c->tls_eof || c->rd_want != 0 || rb_used(&c->up) == used)
			break;
	}
	/* netd -> peer. */
	if (c->wr_want == 0 && !c->tls_wdone && tls_write(c) == -1)
		return;
	if (c->reset) {
		/* Seen writing: read what the socket still holds. */
		if (!c->tls_eof && rb_used(&c->up) == 0)
			goto again;
		/* netd has it all, or waits for netd's end to take it. */
		if (rb_used(&c->up) == 0) {
			plain_drain(c);
			conn_end(c, NULL);
			return;
		}
	}
	tls_events(c);
	used = rb_used(&c->down);
	ev_set(c->plain_rev, &c->plain_rev_on,
	    !c->plain_eof && !c->reset && used <= TLSD_RELAY_MAX / 2);
	ev_set(c->plain_wev, &c->plain_wev_on, rb_used(&c->up) > 0);
	conn_check_done(c);
}

/* netd -> down: one read of what is there, then on to the peer. */
static void
plain_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *c = arg;
	struct relay_buf *b = &c->down;
	char why[TLS_MAX_ERROR];
	ssize_t room, n;

	if ((room = rb_room(b)) == -1) {
		conn_end(c, "out of memory");
		return;
	}
	n = room == 0 ? -2 : read(c->plainfd, b->data + b->len, (size_t)room);
	if (n > 0) {
		b->len += (size_t)n;
		b->last_read = (size_t)n;
		c->to_peer += (uint64_t)n;
	} else if (n == 0)
		c->plain_eof = 1;
	else if (n == -1 && errno != EAGAIN && errno != EINTR) {
		snprintf(why, sizeof(why), "netd side: %s", strerror(errno));
		conn_end(c, why);
		return;
	}
	relay_pump(c);
}

static void
plain_write_cb(evutil_socket_t fd, short ev, void *arg)
{
	relay_pump(arg);
}

/* ---- the handshake ---- */

static void
hs_timeout(evutil_socket_t fd, short ev, void *arg)
{
	conn_fail(arg, "handshake timed out");
}

static int
conn_relay(struct conn *c, int *netdfd)
{
	int sp[2], i, sz = TLSD_RELAY_MAX;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	        sp) == -1)
		return -1;
	c->plainfd = sp[0];
	/*
	 * A whole relay buffer (and netd's 256 KB reads) fits in either
	 * end's send buffer: with the default (~208 KB) netd's writes and
	 * tlsd's reads came in pieces, with a wakeup each way for every
	 * piece (tlsd ~25% more CPU for a bulk fetch).  Best effort: the
	 * kernel caps it at net.core.wmem_max.
	 */
	for (i = 0; i < 2; i++)
		(void)setsockopt(sp[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	c->plain_rev =
	    event_new(conn_base, sp[0], EV_READ | EV_PERSIST, plain_read_cb, c);
	c->plain_wev = event_new(
	    conn_base, sp[0], EV_WRITE | EV_PERSIST, plain_write_cb, c);
	if (c->plain_rev == NULL || c->plain_wev == NULL) {
		close(sp[1]);
		return -1;
	}
	*netdfd = sp[1];
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                         SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	evtimer_del(c->timer);
	evtimer_assign(c->timer, conn_base, linger_timeout, c);
	c->relaying = 1;
	c->rd_want = 0;
	return 0;
}

static void
hs_done(struct conn *c)
{
	char subject[256] = "", resumed[2], names[TLS_MAX_NAMES + 1] = "";
	char attest[TLS_MAX_ATTEST + 1] = "";
	const char *version, *cipher, *sni = NULL;
	const struct tlsd_policy *pol;
	X509 *x;
	int fd = -1;

	evtimer_del(c->timer);
	if (c->chan == NULL) {
		conn_end(c, "netd went away during the handshake");
		return;
	}
	if (conn_relay(c, &fd) == -1) {
		conn_fail(c, strerror(errno));
		return;
	}
	version = SSL_get_version(c->ssl);
	cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
	if (c->side == TLS_SIDE_SERVER)
		sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
	else if ((x = SSL_get0_peer_certificate(c->ssl)) != NULL) {
		tlsd_name_text(
		    X509_get_subject_name(x), subject, sizeof(subject));
		tlsd_cert_names(x, names, sizeof(names));
		/* The real server of a client proxy with an authority:
		 * these names may be minted for. */
		if (names[0] != '\0' && (pol = proxy_policy(c)) != NULL)
			tlsd_attest(pol, names, 0, attest);
	}
	snprintf(resumed, sizeof(resumed), "%d", SSL_session_reused(c->ssl));
	nhandshakes++;
	send_done(c, fd, "", version, cipher, sni ? sni : "", subject,
	    SSL_session_reused(c->ssl), names, attest);
	/* netd logs each handshake with its session ("client tls",
	 * "server tls"); this one is for debugging tlsd. */
	log_event(LOG_DEBUG, "tls handshake", "peer", c->peer, "side",
	    side_name(c), c->side == TLS_SIDE_SERVER ? "policy" : "server",
	    c->side == TLS_SIDE_SERVER ? c->policy : c->server, "version",
	    version, "cipher", cipher, "sni",
	    c->side == TLS_SIDE_CLIENT ? c->name
	    : sni                      ? sni
	                               : "",
	    "subject", subject, "resumed", resumed, NULL);
	/* Application data that came with the handshake. */
	relay_pump(c);
}

static void
hs_step(struct conn *c)
{
	char why[TLS_MAX_ERROR];
	int r, e, err;

	/* Corked from the first flight on: a flight goes only when the
	 * peer's answer is awaited, so the handshake never ends in one call
	 * with its last flight sent. */
	if ((c->flags & TLS_START_SPEAKS_FIRST) && !c->corked)
		cork(c, 1);
	ERR_clear_error();
	errno = 0;
	if ((r = SSL_do_handshake(c->ssl)) == 1) {
		hs_done(c);
		return;
	}
	err = errno;
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		if (e == SSL_ERROR_WANT_READ &&
		    (c->flags & TLS_START_SPEAKS_FIRST))
			cork(c, 1);
		c->rd_want = e;
		tls_events(c);
		return;
	}
	if (ssl_eof(e) && e != SSL_ERROR_SSL)
		snprintf(
		    why, sizeof(why), "connection closed during the handshake");
	else
		ssl_why(c, err, why, sizeof(why));
	ERR_clear_error();
	conn_fail(c, why);
}

/* The TCP socket is readable (rd) or writable: whoever waited for it. */
static void
tls_ready(struct conn *c, int want)
{
	if (c->rd_want == want)
		c->rd_want = 0;
	if (c->wr_want == want)
		c->wr_want = 0;
	if (!c->relaying) {
		hs_step(c);
		return;
	}
	relay_pump(c);
}

static void
tls_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	tls_ready(arg, SSL_ERROR_WANT_READ);
}

static void
tls_write_cb(evutil_socket_t fd, short ev, void *arg)
{
	tls_ready(arg, SSL_ERROR_WANT_WRITE);
}

int
tlsd_conn_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct conn *c = SSL_get_app_data(ssl);

	if (c == NULL || c->pool == NULL || !c->pool->session_cache)
		return 0;
	tlsd_pool_keep(c->pool, c->name, sess);
	return 1; /* we keep the reference */
}

/* Alerts from the peer: was its EOF announced (SSL_OP_IGNORE_UNEXPECTED_EOF
 * makes both look the same to SSL_read)? */
static void
msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
    SSL *ssl, void *arg)
{
	struct conn *c = SSL_get_app_data(ssl);
	const unsigned char *p = buf;

	if (!write_p && content_type == SSL3_RT_ALERT && len == 2 &&
	    p[1] == SSL_AD_CLOSE_NOTIFY && c != NULL)
		c->close_notify = 1;
}

/* The policy with a Proxy Authority whose client proxy pool c connects
 * through ("original-destination:POLICY"), or NULL. */
static const struct tlsd_policy *
proxy_policy(const struct conn *c)
{
	static const char pre[] = CFG_ORIGINAL_DST ":";
	struct tlsd_policy *pol;

	if (c->side != TLS_SIDE_CLIENT ||
	    strncmp(c->server, pre, sizeof(pre) - 1) != 0 ||
	    (pol = tlsd_find_policy(c->gen, c->server + sizeof(pre) - 1)) ==
	        NULL ||
	    pol->authority == NULL)
		return NULL;
	return pol;
}

static int
is_address(const char *s)
{
	struct in6_addr a;

	return inet_pton(AF_INET, s, &a) == 1 ||
	       inet_pton(AF_INET6, s, &a) == 1;
}

/* Client side: SNI, the name or address to check, a session to resume.
 * -1 with why set. */
static int
client_setup(struct conn *c, char *why, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char addr[INET6_ADDRSTRLEN];
	struct tlsd_pool *pl = c->pool;
	const void *ap;

	if (c->name[0] != '\0' && !is_address(c->name)) {
		if (!SSL_set_tlsext_host_name(c->ssl, c->name) ||
		    !SSL_set1_host(c->ssl, c->name)) {
			snprintf(why, len, "bad server name %s", c->name);
			return -1;
		}
	} else {
		if (c->name[0] != '\0')
			snprintf(addr, sizeof(addr), "%s", c->name);
		else {
			if (getpeername(
			        c->tlsfd, (struct sockaddr *)&ss, &sl) == -1) {
				snprintf(why, len, "%s", strerror(errno));
				return -1;
			}
			ap = ss.ss_family == AF_INET6
			         ? (const void *)&((struct sockaddr_in6 *)&ss)
			               ->sin6_addr
			         : (const void *)&((struct sockaddr_in *)&ss)
			               ->sin_addr;
			if (inet_ntop(ss.ss_family, ap, addr, sizeof(addr)) ==
			    NULL) {
				snprintf(why, len, "peer is not an address");
				return -1;
			}
		}
		if (!X509_VERIFY_PARAM_set1_ip_asc(
		        SSL_get0_param(c->ssl), addr)) {
			snprintf(why, len, "bad server address %s", addr);
			return -1;
		}
	}
	if (pl->session_cache && pl->last != NULL &&
	    strcmp(pl->last_name, c->name) == 0 &&
	    SSL_SESSION_is_resumable(pl->last))
		SSL_set_session(c->ssl, pl->last);
	return 0;
}

static int
conn_begin(struct conn *c, char *why, size_t len)
{
	struct timeval tv = ms_timeval(hs_timeout_ms);
	struct tlsd_policy *pol;
	SSL_CTX *ctx = NULL;
	int fd;

	if (c->gen == NULL) {
		snprintf(why, len, "no TLS configuration");
		return -1;
	}
	if (c->side == TLS_SIDE_SERVER) {
		if ((pol = tlsd_find_policy(c->gen, c->policy)) == NULL) {
			snprintf(why, len, "unknown policy %s", c->policy);
			return -1;
		}
		if (pol->has_authority && c->name[0] != '\0') {
			/* The real server's names, as a tlsd saw them: a
			 * minted certificate. */
			if (pol->authority != NULL &&
			    tlsd_attest_check(
			        pol, c->name, c->attest, why, len) == -1)
				return -1;
			if ((c->ssl = tlsd_mint_ssl(pol, c->name, why, len)) ==
			    NULL)
				return -1;
		} else if (pol->has_authority && pol->n == 0) {
			snprintf(why, len, "no names for the Proxy Authority");
			return -1;
		} else if (pol->n == 0) {
			snprintf(why, len, "%s",
			    pol->err[0] ? pol->err : "no certificate");
			return -1;
		} else
			ctx = pol->ctx[0];
	} else {
		if (strlen(c->name) > TLS_MAX_NAME) {
			snprintf(why, len, "bad server name: longer than %d",
			    TLS_MAX_NAME);
			return -1;
		}
		if ((c->pool = tlsd_find_pool(c->gen, c->server)) == NULL) {
			snprintf(why, len, "unknown server pool %s", c->server);
			return -1;
		}
		if ((ctx = c->pool->ctx) == NULL) {
			snprintf(why, len, "%s", c->pool->err);
			return -1;
		}
	}
	if (evutil_make_socket_nonblocking(c->tlsfd) == -1 ||
	    (c->timer = evtimer_new(conn_base, hs_timeout, c)) == NULL ||
	    (c->ssl == NULL && (c->ssl = SSL_new(ctx)) == NULL)) {
		snprintf(why, len, "cannot start: %s", strerror(errno));
		return -1;
	}
	SSL_set_app_data(c->ssl, c);
	SSL_set_msg_callback(c->ssl, msg_cb);
	if (c->side == TLS_SIDE_CLIENT && client_setup(c, why, len) == -1)
		return -1;
	fd = c->tlsfd;
	c->tls_rev =
	    event_new(conn_base, fd, EV_READ | EV_PERSIST, tls_read_cb, c);
	c->tls_wev =
	    event_new(conn_base, fd, EV_WRITE | EV_PERSIST, tls_write_cb, c);
	if (c->tls_rev == NULL || c->tls_wev == NULL ||
	    !SSL_set_fd(c->ssl, fd)) {
		snprintf(why, len, "cannot start the handshake");
		return -1;
	}
	/* The server waits for the ClientHello, the client sends its own. */
	if (c->side == TLS_SIDE_SERVER) {
		SSL_set_accept_state(c->ssl);
		c->rd_want = SSL_ERROR_WANT_READ;
	} else {
		SSL_set_connect_state(c->ssl);
		c->rd_want = SSL_ERROR_WANT_WRITE;
	}
	tls_events(c);
	evtimer_add(c->timer, &tv);
	return 0;
}

static void
conn_start(struct proc_chan *ch, struct imsg *imsg)
{
	struct reader rd;
	struct conn *c;
	char why[TLS_MAX_ERROR];

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		proc_chan_fail(ch, "out of memory");
		return;
	}
	c->tlsfd = -1;
	c->plainfd = -1;
	if ((c->next = conns) != NULL)
		conns->prev = c;
	conns = c;
	nconns++;
	imsg_reader(imsg, &rd);
	c->id = rd_u64(&rd);
	c->side = rd_u32(&rd);
	c->policy = rd_str(&rd, TLS_MAX_NAME);
	c->server = rd_str(&rd, TLS_MAX_NAME);
	c->name = rd_str(&rd, TLS_MAX_NAMES);
	c->peer = rd_str(&rd, TLS_MAX_NAME);
	c->attest = rd_str(&rd, TLS_MAX_ATTEST);
	c->flags = rd_u32(&rd);
	if (rd_end(&rd) == -1 || imsg->fd == -1 ||
	    (c->side != TLS_SIDE_SERVER && c->side != TLS_SIDE_CLIENT) ||
	    (c->flags & ~(unsigned)TLS_START_SPEAKS_FIRST) != 0 ||
	    (c->flags != 0 && c->side != TLS_SIDE_SERVER)) {
		conn_free(c);
		proc_chan_fail(ch, "malformed TLS_START");
		return;
	}
	c->tlsfd = imsg->fd;
	imsg->fd = -1;
	c->chan = ch;
	if ((c->gen = tlsd_current()) != NULL)
		tlsd_gen_ref(c->gen);
	if (conn_begin(c, why, sizeof(why)) == -1)
		conn_fail(c, why);
}

void
tlsd_peer_frame(struct proc_chan *ch, struct imsg *imsg)
{
	if (proc_peer_common(ch, imsg))
		return;
	if (imsg->hdr.type == IMSG_TLS_START && ch->role == ROLE_NETD) {
		conn_start(ch, imsg);
		return;
	}
	proc_chan_fail(
	    ch, "unexpected %s from peer", imsg_type_name(imsg->hdr.type));
}

void
tlsd_peer_gone(struct proc_chan *ch)
{
	struct conn *c, *next;

	for (c = conns; c; c = next) {
		next = c->next;
		if (c->chan != ch)
			continue;
		c->chan = NULL;
		/* Nobody to hand the plaintext to; a relay goes on until
		 * netd's end of it closes. */
		if (!c->relaying)
			conn_end(c, "netd went away during the handshake");
	}
}
