/*
 * Requests from netd to a worker peer: ids, timers, the peer picked.
 * See peerreq.h.
 */
#include <stdlib.h>

#include "log.h"
#include "netd.h"
#include "peerreq.h"
#include "util.h"

static void
peerreq_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct peer_req *r = arg;

	r->set->fail(r, r->why ? r->why : r->set->timeout);
}

/* The peer of the set's role with the fewest requests in flight; round
 * robin among equals, so that idle peers share the work. */
static struct proc_chan *
peerreq_pick(struct peer_reqs *set, struct netd *n)
{
	unsigned i, k, load, best_load = 0, best_k = 0;
	struct proc_chan *c, *best = NULL;
	struct peer_req *r;

	for (i = 0; i < IMAPGW_MAX_INSTANCES; i++) {
		k = (set->rr + i) % IMAPGW_MAX_INSTANCES;
		c = n->peers.chan[set->role][k];
		if (c == NULL || c->dead)
			continue;
		load = 0;
		for (r = set->head; r != NULL; r = r->next)
			load += r->chan == c;
		if (best == NULL || load < best_load) {
			best = c;
			best_load = load;
			best_k = k;
			if (load == 0)
				break;
		}
	}
	if (best != NULL)
		set->rr = best_k + 1;
	return best;
}

void
peerreq_add(
    struct peer_reqs *set, struct peer_req *r, struct netd *n, void *arg)
{
	r->set = set;
	r->id = ++set->nextid;
	r->arg = arg;
	r->why = NULL;
	r->prev = NULL;
	if ((r->next = set->head) != NULL)
		set->head->prev = r;
	set->head = r;
	if ((r->timer = evtimer_new(n->env.base, peerreq_timeout, r)) == NULL)
		fatalx("evtimer_new");
	r->chan = peerreq_pick(set, n);
}

void
peerreq_arm(struct peer_req *r, uint64_t ms)
{
	struct timeval tv = ms_timeval(ms);

	evtimer_add(r->timer, &tv);
}

void
peerreq_later(struct peer_req *r, const char *why)
{
	r->why = why;
	peerreq_arm(r, 0);
}

void
peerreq_unlink(struct peer_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		r->set->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->next = r->prev = NULL;
	if (r->timer) {
		event_free(r->timer);
		r->timer = NULL;
	}
}

struct peer_req *
peerreq_find(struct peer_reqs *set, uint64_t id, const struct proc_chan *c)
{
	struct peer_req *r;

	for (r = set->head; r != NULL; r = r->next)
		if (r->id == id && r->chan == c)
			return r;
	return NULL;
}

void
peerreq_gone(struct peer_reqs *set, const struct proc_chan *c, const char *why)
{
	struct peer_req *r, *next;

	for (r = set->head; r != NULL; r = next) {
		next = r->next;
		if (r->chan == c)
			set->fail(r, why);
	}
}
