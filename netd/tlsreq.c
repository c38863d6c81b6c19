/*
 * TLS requests from netd to tlsd.  See tlsreq.h and common/tls.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "netd.h"
#include "tlsreq.h"

/* tlsd gives up a handshake after TLS_HANDSHAKE_TIMEOUT_MS; netd a
 * little later, in case tlsd does not answer at all. */
#define TLS_GRACE_MS 5000

struct tls_req {
	struct tls_req *next, *prev;
	uint64_t id;
	struct proc_chan *chan;
	struct event *timer;
	tls_cb cb;
	void *arg; /* NULL once cancelled */
	const char *why; /* set: fail with this at the next turn */
};

static struct tls_req *reqs;
static uint64_t nextid;

static void
req_finish(struct tls_req *r, struct tls_result *res)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	event_free(r->timer);
	if (r->arg)
		r->cb(r->arg, res);
	else if (res->fd != -1)
		close(res->fd);
	free(r);
}

static void
req_error(struct tls_req *r, const char *why)
{
	struct tls_result res;

	memset(&res, 0, sizeof(res));
	res.fd = -1;
	snprintf(res.error, sizeof(res.error), "%s", why);
	req_finish(r, &res);
}

static void
req_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct tls_req *r = arg;

	req_error(r, r->why ? r->why : "TLS handshake timed out");
}

/* The tlsd worker with the fewest handshakes in flight. */
static struct proc_chan *
pick_tlsd(struct netd *n)
{
	struct proc_chan *c, *best = NULL;
	unsigned i, load, best_load = 0;
	struct tls_req *r;

	for (i = 0; i < IMAPGW_MAX_INSTANCES; i++) {
		c = n->peers.chan[ROLE_TLSD][i];
		if (c == NULL || c->dead)
			continue;
		load = 0;
		for (r = reqs; r != NULL; r = r->next)
			load += r->chan == c;
		if (best == NULL || load < best_load) {
			best = c;
			best_load = load;
		}
	}
	return best;
}

struct tls_req *
tls_start(struct netd *n, int fd, int side, const char *policy,
    const char *server, const char *name, const char *attest, const char *peer,
    tls_cb cb, void *arg)
{
	struct timeval tv, zero = {0, 0};
	struct tls_req *r;
	struct buf b;
	uint64_t ms = TLS_HANDSHAKE_TIMEOUT_MS + TLS_GRACE_MS;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		fatal("calloc");
	r->id = ++nextid;
	r->cb = cb;
	r->arg = arg;
	r->next = reqs;
	if (reqs)
		reqs->prev = r;
	reqs = r;
	if ((r->timer = evtimer_new(n->env.base, req_timeout, r)) == NULL)
		fatalx("evtimer_new");
	if ((r->chan = pick_tlsd(n)) == NULL) {
		close(fd);
		r->why = "no TLS worker available";
		evtimer_add(r->timer, &zero);
		return r;
	}
	buf_init(&b, 0);
	buf_add_u64(&b, r->id);
	buf_add_u32(&b, (uint32_t)side);
	buf_add_str(&b, policy ? policy : "");
	buf_add_str(&b, server ? server : "");
	buf_add_str(&b, name ? name : "");
	buf_add_str(&b, peer ? peer : "");
	buf_add_str(&b, attest ? attest : "");
	if (proc_compose(r->chan, IMSG_TLS_START, 0, fd, buf_head(&b),
	        buf_used(&b)) == -1) {
		r->chan = NULL;
		r->why = "cannot reach the TLS worker";
		ms = 0;
	}
	buf_free(&b);
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(r->timer, &tv);
	return r;
}

void
tls_cancel(struct tls_req *r)
{
	if (r)
		r->arg = NULL;
}

static void
copy_str(char *dst, size_t len, char *src)
{
	snprintf(dst, len, "%s", src ? src : "");
	free(src);
}

void
tls_peer_frame(struct netd *n, struct proc_chan *c, struct imsg *imsg)
{
	struct tls_result res;
	struct tls_req *r;
	struct reader rd;
	char *error, *version, *cipher, *sni, *subject, *names, *attest;
	uint64_t id;
	uint32_t ok;

	if (imsg->hdr.type != IMSG_TLS_DONE || c->role != ROLE_TLSD) {
		proc_chan_fail(c, "unexpected %s from peer",
		    imsg_type_name(imsg->hdr.type));
		return;
	}
	memset(&res, 0, sizeof(res));
	imsg_reader(imsg, &rd);
	id = rd_u64(&rd);
	ok = rd_u32(&rd);
	error = rd_str(&rd, TLS_MAX_ERROR - 1);
	version = rd_str(&rd, sizeof(res.version) - 1);
	cipher = rd_str(&rd, sizeof(res.cipher) - 1);
	sni = rd_str(&rd, TLS_MAX_NAME);
	subject = rd_str(&rd, sizeof(res.subject) - 1);
	res.resumed = rd_u32(&rd) == 1;
	names = rd_str(&rd, TLS_MAX_NAMES);
	attest = rd_str(&rd, TLS_MAX_ATTEST);
	for (r = reqs; r; r = r->next)
		if (r->id == id && r->chan == c)
			break;
	if (rd_end(&rd) == 0 && r == NULL && ok <= 1 &&
	    (ok == 1) == (imsg->fd != -1)) {
		/* Given up on here (timed out, session gone): the answer
		 * is dropped, and with it the plaintext end. */
		log_debug("TLS_DONE for request %llu that is gone",
		    (unsigned long long)id);
		free(error);
		free(version);
		free(cipher);
		free(sni);
		free(subject);
		free(names);
		free(attest);
		return; /* the imsg layer closes an fd left in it */
	}
	if (rd_end(&rd) == -1 || error == NULL || version == NULL ||
	    cipher == NULL || sni == NULL || subject == NULL || names == NULL ||
	    attest == NULL || ok > 1 || r == NULL ||
	    (ok == 1) != (imsg->fd != -1)) {
		free(error);
		free(version);
		free(cipher);
		free(sni);
		free(subject);
		free(names);
		free(attest);
		proc_chan_fail(c, "malformed TLS_DONE");
		return;
	}
	res.ok = (int)ok;
	copy_str(res.error, sizeof(res.error), error);
	copy_str(res.version, sizeof(res.version), version);
	copy_str(res.cipher, sizeof(res.cipher), cipher);
	copy_str(res.sni, sizeof(res.sni), sni);
	copy_str(res.subject, sizeof(res.subject), subject);
	copy_str(res.names, sizeof(res.names), names);
	copy_str(res.attest, sizeof(res.attest), attest);
	res.fd = imsg->fd;
	imsg->fd = -1;
	req_finish(r, &res);
}

void
tls_peer_gone(struct netd *n, struct proc_chan *c)
{
	struct tls_req *r, *next;

	for (r = reqs; r; r = next) {
		next = r->next;
		if (r->chan == c)
			req_error(r, "TLS worker went away");
	}
}
