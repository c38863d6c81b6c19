/*
 * netd/peerreq.c: ids, the peer picked (fewest in flight, round robin
 * among equals, dead or missing peers skipped), find by id and channel,
 * each request answered exactly once: by the timer, at the next turn
 * (later), or when its peer goes away.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "netd.h"
#include "peerreq.h"
#include "test.h"

struct treq {
	struct peer_req pr;
	int failed;
	const char *why;
};

static int nfailed;
static const char *last_why;

static void
tfail(struct peer_req *pr, const char *why)
{
	struct treq *r = (struct treq *)pr;

	peerreq_unlink(pr);
	nfailed++;
	last_why = why;
	free(r);
}

static struct peer_reqs set = {
    .role = ROLE_SCAND, .timeout = "timed out", .fail = tfail};

static struct netd n;
static struct proc_chan chans[3];

static struct treq *
add(void)
{
	struct treq *r = calloc(1, sizeof(*r));

	peerreq_add(&set, &r->pr, &n, r);
	return r;
}

static void
turn(void)
{
	event_base_loop(n.env.base, EVLOOP_NONBLOCK);
}

int
main(void)
{
	struct treq *a, *b, *c, *d, *e;
	unsigned i;

	log_init(LOGT_STDERR, LOGF_TEXT, LOG_ERR, "test_peerreq");
	n.env.base = event_base_new();
	/* No peer at all: chan NULL. */
	a = add();
	CHECK(a->pr.chan == NULL && a->pr.id == 1);
	peerreq_later(&a->pr, "no peer");
	CHECK(nfailed == 0); /* never inside the caller */
	turn();
	CHECK(nfailed == 1 && strcmp(last_why, "no peer") == 0);

	/* Three peers, the second dead: idle ones in turn, then the one
	 * with the fewest in flight. */
	for (i = 0; i < 3; i++)
		n.peers.chan[ROLE_SCAND][i] = &chans[i];
	chans[1].dead = 1;
	a = add();
	b = add();
	c = add();
	CHECK(a->pr.chan == &chans[0] && b->pr.chan == &chans[2]);
	CHECK(c->pr.chan == &chans[0] || c->pr.chan == &chans[2]);
	CHECK(a->pr.id == 2 && b->pr.id == 3 && c->pr.id == 4);
	d = add(); /* the other one of 0 and 2: both have 2 now */
	CHECK(d->pr.chan != c->pr.chan && d->pr.chan != &chans[1]);
	/* Find by id and channel only. */
	CHECK(peerreq_find(&set, 3, &chans[2]) == &b->pr);
	CHECK(peerreq_find(&set, 3, &chans[0]) == NULL);
	CHECK(peerreq_find(&set, 99, &chans[2]) == NULL);
	/* An answer: unlinked, no longer found, its timer gone. */
	peerreq_arm(&b->pr, 60000);
	peerreq_unlink(&b->pr);
	CHECK(peerreq_find(&set, 3, &chans[2]) == NULL);
	free(b);
	/* Peer 0 goes away: its requests fail with the reason, once. */
	nfailed = 0;
	e = add();
	CHECK(e->pr.chan == &chans[2]); /* 2 has fewer now */
	/* a, and whichever of c and d went to peer 0 (one of them) */
	i = 1 + (c->pr.chan == &chans[0]) + (d->pr.chan == &chans[0]);
	peerreq_gone(&set, &chans[0], "went away");
	CHECK(i == 2 && nfailed == 2);
	CHECK(strcmp(last_why, "went away") == 0);
	CHECK(peerreq_find(&set, 2, &chans[0]) == NULL);
	/* The timer: the set's timeout, after ms. */
	nfailed = 0;
	peerreq_arm(&e->pr, 1);
	turn();
	usleep(20000);
	turn();
	CHECK(nfailed == 1 && strcmp(last_why, "timed out") == 0);
	/* What is left fails when its peer goes. */
	nfailed = 0;
	peerreq_gone(&set, &chans[2], "bye");
	CHECK(set.head == NULL);
	event_base_free(n.env.base);
	return test_done("test_peerreq");
}
