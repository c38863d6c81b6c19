/*
 * tlsd: one TLS connection per IMSG_TLS_START (common/tls.h).
 *
 * The handshake runs in a bufferevent_openssl on netd's TCP socket,
 * bounded by TLS_HANDSHAKE_TIMEOUT_MS.  Done, tlsd makes a socketpair,
 * answers IMSG_TLS_DONE with netd's end and relays between the TLS
 * bufferevent and a plain one on its own end:
 *
 *   - each direction holds at most TLSD_RELAY_MAX bytes: the reading
 *     side's input is capped by its read watermark, and once the writing
 *     side's output reaches the cap reading stops until the output is
 *     down to half of it;
 *   - EOF from netd: what is queued goes out, then close_notify and
 *     shutdown(SHUT_WR) of the TCP socket; the peer's data still comes
 *     through until it closes too, for at most TLSD_LINGER_MS;
 *   - close_notify or EOF from the peer (an EOF without close_notify is
 *     logged as truncated): what is queued goes to netd, then
 *     shutdown(SHUT_WR) of the plaintext end;
 *   - both directions ended, or an error either way: both are closed.
 *
 * Both bufferevents defer their callbacks, so that a read callback runs
 * before the EOF event of the same read.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"
#include "tlsd.h"

struct conn {
	struct conn *next, *prev;
	struct tlsd_gen *gen;
	struct proc_chan *chan; /* NULL once netd's channel is gone */
	uint64_t id;
	uint32_t side;
	char *policy, *server, *name, *peer;
	struct tlsd_pool *pool; /* client side */
	SSL *ssl;
	int tlsfd;
	struct bufferevent *tls, *plain;
	struct event *timer; /* handshake timeout, then linger */
	int relaying;
	int tls_eof, plain_eof; /* that side sent EOF */
	int tls_wdone, plain_wdone; /* we ended writing to that side */
	int close_notify; /* the peer sent close_notify */
	int truncated; /* the peer's EOF came without close_notify */
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
	/*
	 * A session that ended without a close_notify both ways stays
	 * resumable (SSL_free would drop it from the cache): clients that
	 * just close are common.  A TLS protocol error has removed it
	 * already, with its fatal alert.
	 */
	if (c->relaying && c->ssl)
		SSL_set_shutdown(
		    c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	/* BEV_OPT_CLOSE_ON_FREE: the SSL and the sockets go with them. */
	if (c->tls)
		bufferevent_free(c->tls);
	else if (c->ssl)
		SSL_free(c->ssl);
	if (c->tls == NULL && c->tlsfd != -1)
		close(c->tlsfd);
	if (c->plain)
		bufferevent_free(c->plain);
	tlsd_gen_unref(c->gen);
	free(c->policy);
	free(c->server);
	free(c->name);
	free(c->peer);
	free(c);
}

void
tlsd_conn_free_all(void)
{
	while (conns)
		conn_free(conns);
}

static void
send_done(struct conn *c, int fd, const char *error, const char *version,
    const char *cipher, const char *sni, const char *subject, int resumed,
    const char *names)
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
	send_done(c, -1, why, "", "", "", "", 0, "");
	conn_free(c);
}

/* The relay ended (why: NULL for a clean end of both directions). */
static void
conn_end(struct conn *c, const char *why)
{
	char in[24], out[24];

	snprintf(in, sizeof(in), "%llu", (unsigned long long)c->from_peer);
	snprintf(out, sizeof(out), "%llu", (unsigned long long)c->to_peer);
	log_event(why ? LOG_NOTICE : LOG_DEBUG, "tls end", "peer", c->peer,
	    "side", side_name(c), "bytes_in", in, "bytes_out", out, "end",
	    why            ? why
	    : c->truncated ? "truncated (EOF without close_notify)"
	                   : "closed",
	    NULL);
	conn_free(c);
}

/* The first OpenSSL error libevent queued for bev, as text. */
static void
bev_error(struct conn *c, struct bufferevent *bev, char *out, size_t len,
    int *eof_only)
{
	unsigned long e, first = 0;

	*eof_only = 0;
	while ((e = bufferevent_get_openssl_error(bev)) != 0) {
		if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
			*eof_only = 1;
		if (first == 0 && ERR_GET_LIB(e) != 0)
			first = e;
	}
	if (first != 0)
		tlsd_error_text(c->ssl, first, out, len);
	else if (errno != 0)
		snprintf(out, len, "%s", strerror(errno));
	else
		snprintf(out, len, "connection failed");
}

static struct bufferevent *
other(struct conn *c, struct bufferevent *bev)
{
	return bev == c->tls ? c->plain : c->tls;
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

/* Everything for to is written: end writing to it. */
static void
close_write(struct conn *c, struct bufferevent *to)
{
	struct timeval tv = {TLSD_LINGER_MS / 1000, 0};

	if (to == c->tls) {
		if (c->tls_wdone)
			return;
		c->tls_wdone = 1;
		ERR_clear_error();
		if (SSL_shutdown(c->ssl) < 0)
			log_debug("tls: close_notify to %s not sent", c->peer);
		ERR_clear_error();
		shutdown(c->tlsfd, SHUT_WR);
		if (!c->tls_eof)
			evtimer_add(c->timer, &tv);
	} else {
		if (c->plain_wdone)
			return;
		c->plain_wdone = 1;
		shutdown(bufferevent_getfd(c->plain), SHUT_WR);
	}
	conn_check_done(c);
}

static void
relay_read(struct bufferevent *from, void *arg)
{
	struct conn *c = arg;
	struct bufferevent *to = other(c, from);
	struct evbuffer *in = bufferevent_get_input(from);
	struct evbuffer *out = bufferevent_get_output(to);
	size_t n = evbuffer_get_length(in);

	if (n == 0)
		return;
	if (from == c->tls)
		c->from_peer += n;
	else
		c->to_peer += n;
	evbuffer_add_buffer(out, in);
	if (evbuffer_get_length(out) >= TLSD_RELAY_MAX) {
		bufferevent_disable(from, EV_READ);
		bufferevent_setwatermark(to, EV_WRITE, TLSD_RELAY_MAX / 2, 0);
	}
}

static void
relay_write(struct bufferevent *to, void *arg)
{
	struct conn *c = arg;
	struct bufferevent *from = other(c, to);
	int from_eof = from == c->tls ? c->tls_eof : c->plain_eof;
	size_t left = evbuffer_get_length(bufferevent_get_output(to));

	if (left < TLSD_RELAY_MAX) {
		/* Below the low watermark: read more, and hear of the
		 * output only once it is empty. */
		bufferevent_setwatermark(to, EV_WRITE, 0, 0);
		if (!from_eof)
			bufferevent_enable(from, EV_READ);
	}
	if (left == 0 && from_eof)
		close_write(c, to);
}

static void
relay_eof(struct conn *c, struct bufferevent *from)
{
	struct bufferevent *to = other(c, from);

	if (from == c->tls) {
		c->tls_eof = 1;
		c->truncated = !c->close_notify;
		if (c->tls_wdone)
			evtimer_del(c->timer);
	} else
		c->plain_eof = 1;
	bufferevent_disable(from, EV_READ);
	/* Whatever came with the EOF goes along, beyond the cap. */
	relay_read(from, c);
	if (evbuffer_get_length(bufferevent_get_output(to)) == 0)
		close_write(c, to);
	else
		bufferevent_setwatermark(to, EV_WRITE, 0, 0);
}

static void
relay_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	char why[TLS_MAX_ERROR];
	int eof_only = 0;

	if (what & BEV_EVENT_EOF) {
		relay_eof(c, bev);
		return;
	}
	if (bev == c->tls) {
		bev_error(c, bev, why, sizeof(why), &eof_only);
		if (eof_only && (what & BEV_EVENT_READING)) {
			relay_eof(c, bev);
			return;
		}
	} else
		snprintf(why, sizeof(why), "netd side: %s",
		    errno ? strerror(errno) : "error");
	conn_end(c, why);
}

static void
hs_timeout(evutil_socket_t fd, short ev, void *arg)
{
	conn_fail(arg, "handshake timed out");
}

static int
conn_relay(struct conn *c, int *netdfd)
{
	int sp[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	        sp) == -1)
		return -1;
	c->plain = bufferevent_socket_new(
	    conn_base, sp[0], BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c->plain == NULL) {
		close(sp[0]);
		close(sp[1]);
		return -1;
	}
	*netdfd = sp[1];
	bufferevent_setcb(c->tls, relay_read, relay_write, relay_event, c);
	bufferevent_setcb(c->plain, relay_read, relay_write, relay_event, c);
	bufferevent_setwatermark(c->tls, EV_READ, 0, TLSD_RELAY_MAX);
	bufferevent_setwatermark(c->plain, EV_READ, 0, TLSD_RELAY_MAX);
	evtimer_del(c->timer);
	evtimer_assign(c->timer, conn_base, linger_timeout, c);
	c->relaying = 1;
	if (bufferevent_enable(c->tls, EV_READ | EV_WRITE) == -1 ||
	    bufferevent_enable(c->plain, EV_READ | EV_WRITE) == -1)
		return -1;
	/* Application data that came with the handshake. */
	relay_read(c->tls, c);
	return 0;
}

static void
hs_done(struct conn *c)
{
	char subject[256] = "", resumed[2], names[TLS_MAX_NAMES + 1] = "";
	const char *version, *cipher, *sni = NULL;
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
	}
	snprintf(resumed, sizeof(resumed), "%d", SSL_session_reused(c->ssl));
	nhandshakes++;
	send_done(c, fd, "", version, cipher, sni ? sni : "", subject,
	    SSL_session_reused(c->ssl), names);
	log_event(LOG_INFO, "tls handshake", "peer", c->peer, "side",
	    side_name(c), c->side == TLS_SIDE_SERVER ? "policy" : "server",
	    c->side == TLS_SIDE_SERVER ? c->policy : c->server, "version",
	    version, "cipher", cipher, "sni",
	    c->side == TLS_SIDE_CLIENT ? c->name
	    : sni                      ? sni
	                               : "",
	    "subject", subject, "resumed", resumed, NULL);
}

static void
hs_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	char why[TLS_MAX_ERROR];
	int eof_only;

	if (what & BEV_EVENT_CONNECTED) {
		hs_done(c);
		return;
	}
	bev_error(c, bev, why, sizeof(why), &eof_only);
	if (what & BEV_EVENT_TIMEOUT)
		snprintf(why, sizeof(why), "handshake timed out");
	else if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR))
		snprintf(
		    why, sizeof(why), "connection closed during the handshake");
	conn_fail(c, why);
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
	struct timeval tv = {
	    hs_timeout_ms / 1000, (hs_timeout_ms % 1000) * 1000};
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
			/* The real server's names: a minted certificate. */
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
	c->tls = bufferevent_openssl_socket_new(conn_base, fd, c->ssl,
	    c->side == TLS_SIDE_SERVER ? BUFFEREVENT_SSL_ACCEPTING
	                               : BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c->tls == NULL) {
		snprintf(why, len, "cannot start the handshake");
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(c->tls, 1);
	bufferevent_setcb(c->tls, NULL, NULL, hs_event, c);
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
	if (rd_end(&rd) == -1 || imsg->fd == -1 ||
	    (c->side != TLS_SIDE_SERVER && c->side != TLS_SIDE_CLIENT)) {
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
