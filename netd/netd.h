/*
 * netd: accepts clients, applies the policy, relays to the backend.
 */
#ifndef IMAPGW_NETD_H
#define IMAPGW_NETD_H

#include <sys/socket.h>

#include <stdint.h>

#include <event2/event.h>

#include "blockaddr.h"

#include "config.h"
#include "framer.h"
#include "proc.h"
#include "vcache.h"

/* A config generation, kept while sessions still use it. */
struct netd_cfg {
	struct config *cfg;
	int refs;
	int current;
	/* servers.<pool>.connect: lazy: the greeting each pool's server
	 * gave last (NULL: none yet), by server index (session.c) */
	struct netd_greet *greet;
};

/* A server's greeting as it sent it, and the capabilities in its code
 * ("" none), compared with the next greeting. */
struct netd_greet {
	char *line;
	char *caps;
};

struct netd_listener {
	struct netd_listener *next;
	int fd;
	int policy;
	int tls; /* LISTEN_TLS_*: of the policy's listen entry */
	char addr[80];
	struct event *ev;
	struct netd_cfg *nc;
};

struct session;

/* An address on the auto-block list, as the parent sent it. */
struct netd_block {
	struct block_addr a;
	uint64_t until; /* wall-clock seconds: blocked while now < until */
};

struct netd {
	struct child_env env;
	struct netd_cfg *cur;
	struct netd_cfg *pending; /* received, waiting for its listeners */
	struct netd_listener *listeners, *newlisteners;
	struct proc_peers peers;
	struct session *sessions;
	uint32_t nsessions;
	uint64_t total;
	uint64_t nextid;
	int stopping;
	/* The auto-block list, sorted by address, at most
	 * IMAPGW_BLOCK_MAX entries. */
	struct netd_block *blocks;
	size_t nblocks, capblocks;
	/* The verdict cache, opened with the first config (before the
	 * sandbox); its size and place change only at a restart. */
	struct vcache *vc;
};

extern struct netd *netd_env;

void netd_cfg_unref(struct netd_cfg *);
/* The client address is on the auto-block list (expired entries are
 * ignored, and pruned). */
int netd_blocked(struct netd *, const struct sockaddr *);

/* session.c */
void session_accept(struct netd *, struct netd_listener *, int fd,
    const struct sockaddr *, socklen_t);
void session_close_all(struct netd *, const char *why);
/* A block action ends this session: ask the parent to put the client's
 * address on the auto-block list, and log it.  The caller then ends the
 * session. */
void session_block(struct session *, const char *reason);

#endif
