/*
 * A session: one client, one backend connection, relayed both ways
 * through the IMAP framer.  Each direction has one bounded buffer; a full
 * buffer stops reading from its source, so a slow reader slows the other
 * side down instead of growing memory.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "netd.h"
#include "util.h"

#define HALF_BUF (256 * 1024) /* per direction */
#define BYE_UNAVAILABLE "* BYE [UNAVAILABLE] Server unavailable\r\n"
#define BYE_IDLE "* BYE Idle timeout, closing connection\r\n"
#define BYE_CLIENT_ERR "* BYE Protocol error: "
#define BYE_SERVER_ERR "* BYE [UNAVAILABLE] Malformed response from server\r\n"

enum { S_CONNECTING, S_RELAY };

struct session;

struct half {
	struct session *s;
	const char *name; /* where the bytes come from */
	int src, dst;
	struct buf buf;	 /* accepted bytes, then held ones at the tail */
	size_t held;	 /* read but not yet accepted by the framer */
	struct framer fr;
	struct event *rev, *wev;
	int rev_on, wev_on;
	int eof;
	uint64_t bytes;
};

struct session {
	struct session *next, *prev;
	struct netd *n;
	uint64_t id;
	struct netd_cfg *nc;
	const struct cfg_policy *pol;
	const struct cfg_server *srv;
	const struct cfg_member *mem;
	int cfd, sfd;
	char client[80];
	struct half c2s, s2c;
	struct event *connev;
	struct event *timer;
	struct timespec start;
	time_t last;
	int state;
	int logout;
	int kick; /* c2s may continue after a server continuation */
	char heldtag[64];
};

static int half_flush(struct half *);

static time_t
now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void
session_end(struct session *s, const char *reason)
{
	struct netd *n = s->n;
	struct timespec now;
	char id[24], in[24], out[24], dur[32];
	double secs;

	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = (double)(now.tv_sec - s->start.tv_sec) +
	    (double)(now.tv_nsec - s->start.tv_nsec) / 1e9;
	snprintf(id, sizeof(id), "%llu", (unsigned long long)s->id);
	snprintf(in, sizeof(in), "%llu", (unsigned long long)s->c2s.bytes);
	snprintf(out, sizeof(out), "%llu", (unsigned long long)s->s2c.bytes);
	snprintf(dur, sizeof(dur), "%.3f", secs);
	log_event(LOG_INFO, "session end", "id", id, "client", s->client,
	    "policy", s->pol->name, "server", s->srv->name, "backend",
	    s->mem->addr.text, "bytes_in", in, "bytes_out", out, "duration",
	    dur, "reason", reason, NULL);
	/* Events exist from the stage that made them; libevent's
	 * event_free() does not take NULL. */
	if (s->state == S_RELAY) {
		event_free(s->c2s.rev);
		event_free(s->c2s.wev);
		event_free(s->s2c.rev);
		event_free(s->s2c.wev);
	}
	if (s->connev)
		event_free(s->connev);
	if (s->timer)
		event_free(s->timer);
	buf_free(&s->c2s.buf);
	buf_free(&s->s2c.buf);
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
	free(s);
}

void
session_close_all(struct netd *n, const char *why)
{
	while (n->sessions)
		session_end(n->sessions, why);
}

/* Best effort: a last line to the client before closing. */
static void
client_say(struct session *s, const char *msg)
{
	ssize_t r;

	/* Only at a line boundary: never inside a literal being relayed. */
	if (buf_used(&s->s2c.buf) != 0 || !framer_at_boundary(&s->s2c.fr))
		return;
	r = write(s->cfd, msg, strlen(msg));
	if (r > 0)
		s->s2c.bytes += (uint64_t)r;
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

static void
half_update(struct half *h)
{
	ev_set(h->rev, &h->rev_on,
	    !h->eof && buf_room(&h->buf) > 0 && h->s->state == S_RELAY);
	ev_set(h->wev, &h->wev_on, buf_used(&h->buf) > h->held);
}

static int
half_error(struct half *h, const char *what, int err)
{
	char reason[128];

	snprintf(reason, sizeof(reason), "%s %s: %s", h->name, what,
	    strerror(err));
	session_end(h->s, reason);
	return -1;
}

static void
protocol_error(struct half *h)
{
	struct session *s = h->s;
	char reason[200];

	snprintf(reason, sizeof(reason), "%s protocol error: %s", h->name,
	    h->fr.err);
	if (h == &s->c2s) {
		char line[200];

		snprintf(line, sizeof(line), "%s%s\r\n", BYE_CLIENT_ERR,
		    h->fr.err);
		client_say(s, line);
	} else
		client_say(s, BYE_SERVER_ERR);
	log_event(LOG_WARNING, "anomaly", "client", s->client, "policy",
	    s->pol->name, "from", h->name, "error", h->fr.err, NULL);
	session_end(s, reason);
}

/* Run the framer over the bytes not yet accepted, then send. */
static int
half_scan(struct half *h)
{
	struct session *s = h->s;
	ssize_t r;

	if (h->held > 0) {
		r = framer_scan(&h->fr, buf_head(&h->buf) + buf_used(&h->buf) -
			h->held, h->held);
		if (r < 0) {
			protocol_error(h);
			return -1;
		}
		h->held -= (size_t)r;
		if (h == &s->c2s && framer_waiting(&h->fr)) {
			size_t len;
			const char *p = framer_prefix(&h->fr, &len);
			size_t t = strcspn(p, " ");

			if (t >= sizeof(s->heldtag))
				t = sizeof(s->heldtag) - 1;
			memcpy(s->heldtag, p, t);
			s->heldtag[t] = '\0';
		}
	}
	if (half_flush(h) == -1)
		return -1;
	if (h == &s->s2c && s->kick) {
		s->kick = 0;
		return half_scan(&s->c2s);
	}
	return 0;
}

static int
half_finish(struct half *h)
{
	struct session *s = h->s;

	if (!h->eof || buf_used(&h->buf) > h->held)
		return 0;
	if (h == &s->s2c) {
		session_end(s, s->logout ? "logout" : "server closed");
		return -1;
	}
	/* Client done sending: pass the half-close on, keep the answers
	 * coming until the server closes. */
	shutdown(s->sfd, SHUT_WR);
	if (s->s2c.eof) {
		session_end(s, "client closed");
		return -1;
	}
	return 0;
}

static int
half_flush(struct half *h)
{
	size_t len = buf_used(&h->buf) - h->held;
	ssize_t r;

	if (len > 0) {
		r = write(h->dst, buf_head(&h->buf), len);
		if (r == -1 && errno != EAGAIN && errno != EINTR)
			return half_error(h, h == &h->s->c2s ?
				"data to server" : "data to client", errno);
		if (r > 0) {
			buf_consume(&h->buf, (size_t)r);
			h->s->last = now_mono();
		}
	}
	if (half_finish(h) == -1)
		return -1;
	half_update(h);
	return 0;
}

static void
half_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct half *h = arg;
	size_t want = buf_room(&h->buf);
	ssize_t r;

	if (want == 0) {
		half_update(h);
		return;
	}
	r = buf_read_fd(&h->buf, h->src, want);
	if (r == -1) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		half_error(h, "read", errno);
		return;
	}
	if (r == 0) {
		h->eof = 1;
		/* Bytes the framer still holds never complete; drop them. */
		h->buf.len -= h->held;
		h->held = 0;
		half_flush(h);
		return;
	}
	h->bytes += (uint64_t)r;
	h->held += (size_t)r;
	h->s->last = now_mono();
	half_scan(h);
}

static void
half_write_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct half *h = arg;

	if (half_flush(h) == 0 && h == &h->s->s2c && h->s->kick) {
		h->s->kick = 0;
		half_scan(&h->s->c2s);
	}
}

/* Client lines: note LOGOUT, log the command word (never arguments). */
static void
client_line(void *arg, const char *prefix, size_t len, int truncated)
{
	struct session *s = arg;
	char tag[64], cmd[32];

	if (sscanf(prefix, "%63s %31s", tag, cmd) != 2)
		return;
	if (strcasecmp(cmd, "LOGOUT") == 0)
		s->logout = 1;
	if (log_getlevel() >= LOG_DEBUG)
		log_debug("session %llu: client command %s %s",
		    (unsigned long long)s->id, tag, cmd);
}

/*
 * Server lines: the answer to a held synchronizing literal decides
 * whether the client's next bytes are payload ("+") or a new command
 * (the tagged response).
 */
static void
server_line(void *arg, const char *prefix, size_t len, int truncated)
{
	struct session *s = arg;
	size_t t;

	if (!framer_waiting(&s->c2s.fr))
		return;
	if (prefix[0] == '+') {
		framer_cont(&s->c2s.fr, 1);
		s->kick = 1;
		return;
	}
	t = strlen(s->heldtag);
	if (t && strncmp(prefix, s->heldtag, t) == 0 && prefix[t] == ' ') {
		framer_cont(&s->c2s.fr, 0);
		s->kick = 1;
	}
}

static void
half_init(struct session *s, struct half *h, const char *name, int src,
    int dst, enum framer_dir dir)
{
	const struct cfg_action *act =
	    &s->nc->cfg->actions[s->pol->actionidx];

	h->s = s;
	h->name = name;
	h->src = src;
	h->dst = dst;
	buf_init(&h->buf, HALF_BUF);
	/* Literal limits belong to the IMAP engine (scanning issue); the
	 * relay only keeps framing straight. */
	framer_init(&h->fr, dir, act->general.max_line_length, UINT64_MAX);
	h->fr.arg = s;
	h->rev = event_new(s->n->env.base, src, EV_READ | EV_PERSIST,
	    half_read_cb, h);
	h->wev = event_new(s->n->env.base, dst, EV_WRITE | EV_PERSIST,
	    half_write_cb, h);
	if (h->rev == NULL || h->wev == NULL)
		fatalx("event_new");
}

static void
session_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *s = arg;
	struct timeval tv;
	time_t idle;

	if (s->state == S_CONNECTING) {
		log_event(LOG_WARNING, "backend unavailable", "client",
		    s->client, "server", s->srv->name, "backend",
		    s->mem->addr.text, "error", "connection timed out", NULL);
		client_say(s, BYE_UNAVAILABLE);
		session_end(s, "backend unavailable");
		return;
	}
	idle = now_mono() - s->last;
	if ((uint64_t)idle * 1000 >= s->pol->idle_timeout_ms) {
		client_say(s, BYE_IDLE);
		session_end(s, "idle timeout");
		return;
	}
	tv.tv_sec = (time_t)(s->pol->idle_timeout_ms / 1000) - idle;
	if (tv.tv_sec < 1)
		tv.tv_sec = 1;
	tv.tv_usec = 0;
	evtimer_add(s->timer, &tv);
}

static void
session_relay(struct session *s)
{
	struct timeval tv;
	int on = 1;

	s->state = S_RELAY;
	setsockopt(s->sfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	half_init(s, &s->c2s, "client", s->cfd, s->sfd, FRAMER_CLIENT);
	half_init(s, &s->s2c, "server", s->sfd, s->cfd, FRAMER_SERVER);
	s->c2s.fr.on_line = client_line;
	s->c2s.fr.hold_sync = 1;
	s->s2c.fr.on_line = server_line;
	s->last = now_mono();
	evtimer_del(s->timer);
	tv.tv_sec = (time_t)(s->pol->idle_timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(s->pol->idle_timeout_ms % 1000) * 1000;
	evtimer_add(s->timer, &tv);
	half_update(&s->c2s);
	half_update(&s->s2c);
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
	session_relay(s);
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
	struct linger lg = { 1, 0 };

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
	struct timeval tv;
	int fd;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1)
		return -1;
	s->sfd = fd;
	s->connev = event_new(s->n->env.base, fd, EV_WRITE,
	    session_connected_cb, s);
	s->timer = evtimer_new(s->n->env.base, session_timer_cb, s);
	if (s->connev == NULL || s->timer == NULL)
		fatalx("event_new");
	tv.tv_sec = (time_t)(s->srv->connect_timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(s->srv->connect_timeout_ms % 1000) * 1000;
	evtimer_add(s->timer, &tv);
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
		session_relay(s);
		return 0;
	}
	if (errno != EINPROGRESS)
		return -1;
	event_add(s->connev, NULL);
	return 0;
}

void
session_accept(struct netd *n, struct netd_listener *l, int fd,
    const struct sockaddr *sa, socklen_t salen)
{
	const struct cfg_policy *pol = &l->nc->cfg->policies[l->policy];
	struct session *s;
	char client[80], id[24];
	int on = 1, err;

	addr_text(sa, client, sizeof(client));
	if (!policy_allows(pol, sa)) {
		session_refuse(fd, client, pol, "source not allowed", 0);
		return;
	}
	if (pol->disposition != DISP_ALLOW) {
		session_refuse(fd, client, pol,
		    pol->disposition == DISP_DENY ? "disposition deny" :
						    "disposition deny-reset",
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
	s->srv = &l->nc->cfg->servers[pol->server];
	s->mem = &s->srv->members[0]; /* balancing: a later issue */
	s->cfd = fd;
	s->sfd = -1;
	s->state = S_CONNECTING;
	snprintf(s->client, sizeof(s->client), "%s", client);
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
	if (session_connect(s) == -1) {
		err = errno;
		log_event(LOG_WARNING, "backend unavailable", "client", client,
		    "server", s->srv->name, "backend", s->mem->addr.text,
		    "error", strerror(err), NULL);
		client_say(s, BYE_UNAVAILABLE);
		session_end(s, "backend unavailable");
	}
}
