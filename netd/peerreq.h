/*
 * Requests from netd to a worker peer (scand, tlsd): the bookkeeping
 * scanreq.c and tlsreq.c share.  A request has an id the answer echoes,
 * the channel it went on (the peer of its role with the fewest requests
 * in flight, round robin among equals) and a timer; it is answered
 * exactly once: by the peer's frame, or by an error when the timer
 * fires, when its peer goes away, or at the next turn of the loop when
 * it could not be sent.  The typed layer embeds a struct peer_req first
 * in its own request and gives the set a fail() that delivers an error
 * answer to the requester (or drops it if cancelled) and frees the
 * request.
 */
#ifndef IMAPGW_PEERREQ_H
#define IMAPGW_PEERREQ_H

#include <stdint.h>

#include <event2/event.h>

#include "proc.h"

struct netd;
struct peer_req;

struct peer_reqs {
	int role; /* ROLE_SCAND, ROLE_TLSD */
	const char *timeout; /* the error when the timer fires */
	void (*fail)(struct peer_req *, const char *why);
	struct peer_req *head;
	uint64_t nextid;
	unsigned rr; /* where the round robin starts */
};

struct peer_req {
	struct peer_req *next, *prev;
	struct peer_reqs *set;
	uint64_t id;
	struct proc_chan *chan; /* NULL: no peer (fails at the next turn) */
	struct event *timer;
	const char *why; /* set: the timer fails it with this */
	void *arg; /* the requester's; NULL once cancelled */
};

/* Into set with a new id, a timer (not armed) and a peer picked; arg is
 * the requester's. */
void peerreq_add(
    struct peer_reqs *, struct peer_req *, struct netd *, void *arg);
/* Arm the timer: the request fails after ms. */
void peerreq_arm(struct peer_req *, uint64_t ms);
/* Fail with why at the next turn of the loop, never inside the caller:
 * requesters need not be reentrant. */
void peerreq_later(struct peer_req *, const char *why);
/* Off the list, its timer freed (before the answer is delivered). */
void peerreq_unlink(struct peer_req *);
/* The request id of channel c is waiting for, or NULL. */
struct peer_req *peerreq_find(
    struct peer_reqs *, uint64_t id, const struct proc_chan *c);
/* Channel c is going away: each of its requests fails with why. */
void peerreq_gone(
    struct peer_reqs *, const struct proc_chan *c, const char *why);

#endif
