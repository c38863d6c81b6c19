/*
 * netd: the network process.  It receives its config and listening
 * sockets from the parent, enters its sandbox, and runs the sessions.
 */
#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "netd.h"
#include "parent.h"
#include "scanreq.h"
#include "tlsreq.h"

struct netd *netd_env;

void
netd_cfg_unref(struct netd_cfg *nc)
{
	size_t i;

	if (nc == NULL || --nc->refs > 0)
		return;
	for (i = 0; nc->greet != NULL && i < nc->cfg->nservers; i++) {
		free(nc->greet[i].line);
		free(nc->greet[i].caps);
	}
	free(nc->greet);
	config_free(nc->cfg);
	free(nc);
}

static struct netd_cfg *
netd_cfg_new(struct config *cfg)
{
	struct netd_cfg *nc;

	if ((nc = calloc(1, sizeof(*nc))) == NULL)
		fatal("calloc");
	nc->cfg = cfg;
	nc->refs = 1;
	return nc;
}

/*
 * The auto-block list: the parent sends every change (IMSG_BLOCK_SET),
 * and a netd that starts gets the whole list before START.  Sorted by
 * address; an entry past its expiry counts for nothing and goes at the
 * next look at it.
 */

static uint64_t
wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec > 0 ? (uint64_t)ts.tv_sec : 0;
}

/* The index of a in the list, or where it goes (*found 0). */
static size_t
block_find(const struct netd *n, const struct block_addr *a, int *found)
{
	return block_addr_find(
	    n->blocks, n->nblocks, sizeof(*n->blocks), a, found);
}

static void
block_remove_at(struct netd *n, size_t k)
{
	memmove(&n->blocks[k], &n->blocks[k + 1],
	    (n->nblocks - k - 1) * sizeof(*n->blocks));
	n->nblocks--;
}

static void
block_prune(struct netd *n, uint64_t now)
{
	size_t i, j;

	for (i = j = 0; i < n->nblocks; i++)
		if (n->blocks[i].until > now)
			n->blocks[j++] = n->blocks[i];
	n->nblocks = j;
}

static void
netd_block_set(struct netd *n, struct imsg *imsg)
{
	struct netd_block *nb;
	struct block_addr a;
	struct reader rd;
	uint64_t until, now;
	size_t k, cap;
	int found;

	imsg_reader(imsg, &rd);
	block_addr_read(&rd, &a);
	until = rd_u64(&rd);
	if (rd_end(&rd) == -1 || imsg->fd != -1)
		fatalx("bad BLOCK_SET frame from parent");
	now = wall_now();
	k = block_find(n, &a, &found);
	if (until <= now) {
		if (found)
			block_remove_at(n, k);
		return;
	}
	if (found) {
		n->blocks[k].until = until;
		return;
	}
	if (n->nblocks >= IMAPGW_BLOCK_MAX) {
		block_prune(n, now);
		k = block_find(n, &a, &found);
	}
	if (n->nblocks >= IMAPGW_BLOCK_MAX) {
		log_warnx("auto-block list full (%d addresses): an address "
		          "the parent blocked is not refused",
		    IMAPGW_BLOCK_MAX);
		return;
	}
	if (n->nblocks == n->capblocks) {
		cap = n->capblocks ? n->capblocks * 2 : 16;
		if (cap > IMAPGW_BLOCK_MAX)
			cap = IMAPGW_BLOCK_MAX;
		if ((nb = reallocarray(n->blocks, cap, sizeof(*nb))) == NULL) {
			log_warn("auto-block list: an address the parent "
			         "blocked is not refused");
			return;
		}
		n->blocks = nb;
		n->capblocks = cap;
	}
	memmove(&n->blocks[k + 1], &n->blocks[k],
	    (n->nblocks - k) * sizeof(*n->blocks));
	n->nblocks++;
	n->blocks[k].a = a;
	n->blocks[k].until = until;
}

int
netd_blocked(struct netd *n, const struct sockaddr *sa)
{
	struct block_addr a;
	size_t k;
	int found;

	if (n->nblocks == 0 || block_addr_from_sa(sa, &a) == -1)
		return 0;
	k = block_find(n, &a, &found);
	if (!found)
		return 0;
	if (n->blocks[k].until <= wall_now()) {
		block_remove_at(n, k);
		return 0;
	}
	return 1;
}

static void
listener_accept(evutil_socket_t lfd, short ev, void *arg)
{
	struct netd_listener *l = arg;
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, i;

	/* Bounded, so one busy listener cannot starve the rest. */
	for (i = 0; i < 64; i++) {
		len = sizeof(ss);
		fd = accept4(lfd, (struct sockaddr *)&ss, &len,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != ECONNABORTED && errno != EINTR)
				log_warn("accept on %s", l->addr);
			return;
		}
		session_accept(netd_env, l, fd, (struct sockaddr *)&ss, len);
	}
}

static void
listeners_free(struct netd_listener *l)
{
	struct netd_listener *next;

	for (; l; l = next) {
		next = l->next;
		if (l->ev)
			event_free(l->ev);
		close(l->fd);
		netd_cfg_unref(l->nc);
		free(l);
	}
}

static void
listener_add(struct netd *n, struct imsg *imsg)
{
	struct netd_listener *l;
	struct reader rd;
	char *addr;
	uint32_t policy;

	imsg_reader(imsg, &rd);
	policy = rd_u32(&rd);
	addr = rd_str(&rd, 79);
	if (rd_end(&rd) == -1 || imsg->fd == -1 || n->pending == NULL ||
	    policy >= n->pending->cfg->npolicies)
		fatalx("bad LISTENER frame from parent");
	if ((l = calloc(1, sizeof(*l))) == NULL)
		fatal("calloc");
	l->fd = imsg->fd;
	imsg->fd = -1;
	l->policy = (int)policy;
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	{
		const struct cfg_policy *p = &n->pending->cfg->policies[policy];
		size_t i;

		for (i = 0; i < p->nlisten; i++)
			if (strcmp(p->listen[i].addr.text, addr) == 0)
				l->tls = p->listen[i].tls;
	}
	free(addr);
	l->nc = n->pending;
	l->nc->refs++;
	l->next = n->newlisteners;
	n->newlisteners = l;
}

/* The new generation is complete: new sessions use it from now on. */
static void
listeners_switch(struct netd *n, struct imsg *imsg)
{
	struct netd_listener *l;
	uint32_t gen;

	if (imsg->datalen != sizeof(gen) || n->pending == NULL)
		fatalx("bad LISTENERS_END frame from parent");
	memcpy(&gen, imsg->data, sizeof(gen));
	listeners_free(n->listeners);
	n->listeners = n->newlisteners;
	n->newlisteners = NULL;
	for (l = n->listeners; l; l = l->next) {
		l->ev = event_new(n->env.base, l->fd, EV_READ | EV_PERSIST,
		    listener_accept, l);
		if (l->ev == NULL || event_add(l->ev, NULL) == -1)
			fatalx("cannot watch listener %s", l->addr);
	}
	if (n->cur) {
		n->cur->current = 0;
		netd_cfg_unref(n->cur);
	}
	n->cur = n->pending;
	n->cur->current = 1;
	n->env.cfg = n->cur->cfg; /* borrowed */
	n->pending = NULL;
	log_debug("using config generation %u", gen);
	proc_compose(n->env.parent, IMSG_CFG_APPLIED, 0, -1, &gen, sizeof(gen));
}

/* Entries of the verdict cache kept in memory, per kind of key. */
#define NETD_VCACHE_MEM 16384

/* The first config opens the verdict cache, as root, unsandboxed. */
static void
netd_open_vcache(struct netd *n, const struct config *cfg)
{
	char dir[4096];

	if (n->vc != NULL)
		return;
	if (cfg->state_dir == NULL || snprintf(dir, sizeof(dir), "%s/verdicts",
	                                  cfg->state_dir) >= (int)sizeof(dir)) {
		log_warnx("state_dir path too long; verdicts kept in memory");
		n->vc = vcache_open(NULL, 0, NETD_VCACHE_MEM);
		return;
	}
	n->vc = vcache_open(dir, cfg->vcache_size, NETD_VCACHE_MEM);
}

static void
netd_new_config(struct netd *n, struct imsg *imsg)
{
	struct config *cfg;

	if ((cfg = proc_recv_config(imsg, ROLE_NETD)) == NULL)
		fatalx("unusable config from parent");
	if (n->pending)
		netd_cfg_unref(n->pending);
	listeners_free(n->newlisteners);
	n->newlisteners = NULL;
	n->pending = netd_cfg_new(cfg);
	if (n->env.cfg == NULL)
		n->env.cfg = cfg; /* borrowed, for the startup checks */
	log_init(cfg->log_target, cfg->log_format, cfg->log_level, "netd");
	netd_open_vcache(n, cfg);
}

static void
netd_status(struct netd *n, struct imsg *imsg)
{
	struct buf b;
	uint32_t id;

	if (imsg->datalen != sizeof(id))
		fatalx("bad STATUS_REQ frame from parent");
	memcpy(&id, imsg->data, sizeof(id));
	buf_init(&b, 0);
	buf_add_u32(&b, id);
	buf_add_u32(&b, n->nsessions);
	buf_add_u64(&b, n->total);
	proc_compose(
	    n->env.parent, IMSG_STATUS, 0, -1, buf_head(&b), buf_used(&b));
	buf_free(&b);
}

/* Frames from the parent, before and after START. */
static int
netd_parent_frame(struct netd *n, struct imsg *imsg)
{
	switch (imsg->hdr.type) {
	case IMSG_CFG:
		netd_new_config(n, imsg);
		return 1;
	case IMSG_LISTENER:
		listener_add(n, imsg);
		return 1;
	case IMSG_LISTENERS_END:
		listeners_switch(n, imsg);
		return 1;
	case IMSG_PEER:
		proc_peer_add(&n->env, &n->peers, imsg);
		return 1;
	case IMSG_BLOCK_SET:
		netd_block_set(n, imsg);
		return 1;
	}
	return 0;
}

static void
netd_early(struct child_env *env, struct imsg *imsg)
{
	if (!netd_parent_frame(netd_env, imsg))
		fatalx("unexpected %s from parent during startup",
		    imsg_type_name(imsg->hdr.type));
}

static void
netd_dispatch_parent(struct proc_chan *c, struct imsg *imsg)
{
	struct netd *n = netd_env;

	if (netd_parent_frame(n, imsg))
		return;
	if (imsg->hdr.type == IMSG_STATUS_REQ) {
		netd_status(n, imsg);
		return;
	}
	if (proc_child_common(&n->env, imsg))
		return;
	proc_chan_fail(
	    c, "unexpected %s from parent", imsg_type_name(imsg->hdr.type));
}

static void
netd_parent_closed(struct proc_chan *c)
{
	netd_env->stopping = 1;
	log_debug("parent channel closed; stopping");
	event_base_loopbreak(netd_env->env.base);
}

static void
netd_dispatch_peer(struct proc_chan *c, struct imsg *imsg)
{
	if (proc_peer_common(c, imsg))
		return;
	if (c->role == ROLE_SCAND) {
		scan_peer_frame(netd_env, c, imsg);
		return;
	}
	if (c->role == ROLE_TLSD) {
		tls_peer_frame(netd_env, c, imsg);
		return;
	}
	proc_chan_fail(
	    c, "unexpected %s from peer", imsg_type_name(imsg->hdr.type));
}

/* Scans pending on a scanner that went away fail (never pass). */
static void
netd_peer_gone(struct proc_chan *c)
{
	uint32_t id[2];

	if (c->role == ROLE_SCAND)
		scan_peer_gone(netd_env, c);
	if (c->role == ROLE_TLSD)
		tls_peer_gone(netd_env, c);
	/* The peer may live on (it closed a channel it found broken):
	 * ask the parent for a new one.  A dead peer is respawned and
	 * connected anyway. */
	id[0] = (uint32_t)c->role;
	id[1] = (uint32_t)c->instance;
	if (!netd_env->stopping && !c->replaced)
		proc_compose(netd_env->env.parent, IMSG_PEER_LOST, 0, -1, id,
		    sizeof(id));
}

int
netd_main(int instance, int debug, int verbose)
{
	static struct netd n;

	log_init(debug ? LOGT_STDERR : LOGT_SYSLOG, LOGF_TEXT,
	    verbose ? LOG_DEBUG : LOG_INFO, "netd");
	netd_env = &n;
	n.env.role = ROLE_NETD;
	n.env.instance = instance;
	n.peers.dispatch = netd_dispatch_peer;
	n.peers.gone = netd_peer_gone;
	if ((n.env.base = event_base_new()) == NULL)
		fatalx("event_base_new");
	n.env.parent = proc_chan_new(n.env.base, IMAPGW_PARENT_FD, 1, "parent",
	    netd_dispatch_parent, netd_parent_closed, &n);
	if (n.env.parent == NULL)
		fatal("parent channel");
	proc_child_start(&n.env, netd_early);
	if (n.cur == NULL)
		fatalx("no listeners from parent before START");
	event_base_dispatch(n.env.base);
	session_close_all(&n, "shutdown");
	vcache_close(n.vc);
	n.vc = NULL;
	free(n.blocks);
	return 0;
}
