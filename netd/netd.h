/*
 * netd: accepts clients, applies the policy, relays to the backend.
 */
#ifndef IMAPGW_NETD_H
#define IMAPGW_NETD_H

#include <sys/socket.h>

#include <event2/event.h>

#include "config.h"
#include "framer.h"
#include "proc.h"

/* A config generation, kept while sessions still use it. */
struct netd_cfg {
	struct config *cfg;
	int refs;
	int current;
};

struct netd_listener {
	struct netd_listener *next;
	int fd;
	int policy;
	char addr[80];
	struct event *ev;
	struct netd_cfg *nc;
};

struct session;

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
};

extern struct netd *netd_env;

void netd_cfg_unref(struct netd_cfg *);

/* session.c */
void session_accept(struct netd *, struct netd_listener *, int fd,
    const struct sockaddr *, socklen_t);
void session_close_all(struct netd *, const char *why);

#endif
