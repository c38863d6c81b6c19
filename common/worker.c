/*
 * The shared main loop of the worker roles that serve netd (scand, tlsd):
 * parent channel, peer channels, sandbox, event loop.  A role supplies
 * its own handler for frames from its peers.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proc.h"

static struct child_env worker_env;
static struct proc_peers worker_peers;
static const struct proc_worker_hooks *worker_hooks;
static int worker_started; /* past IMSG_START */

/* IMSG_STATUS_REQ: u32 request id; IMSG_STATUS as netd answers it. */
static void
worker_status(struct proc_chan *c, struct imsg *imsg)
{
	struct buf b;
	uint32_t id, sessions = 0;
	uint64_t total = 0;

	if (imsg->datalen != sizeof(id)) {
		proc_chan_fail(c, "bad STATUS_REQ frame");
		return;
	}
	memcpy(&id, imsg->data, sizeof(id));
	worker_hooks->status(&sessions, &total);
	buf_init(&b, 0);
	buf_add_u32(&b, id);
	buf_add_u32(&b, sessions);
	buf_add_u64(&b, total);
	proc_compose(c, IMSG_STATUS, 0, -1, buf_head(&b), buf_used(&b));
	buf_free(&b);
}

static void
worker_parent_frame(struct proc_chan *c, struct imsg *imsg)
{
	if (imsg->hdr.type == IMSG_STATUS_REQ && worker_hooks != NULL &&
	    worker_hooks->status != NULL) {
		worker_status(c, imsg);
		return;
	}
	if (imsg->hdr.type == IMSG_PEER) {
		proc_peer_add(&worker_env, &worker_peers, imsg);
		return;
	}
	if (proc_child_common(&worker_env, imsg)) {
		if (imsg->hdr.type == IMSG_CFG && worker_started &&
		    worker_hooks != NULL && worker_hooks->config != NULL)
			worker_hooks->config(&worker_env);
		return;
	}
	proc_chan_fail(
	    c, "unexpected %s from parent", imsg_type_name(imsg->hdr.type));
}

/* Before START: still root and unconfined. */
static void
worker_early(struct child_env *env, struct imsg *imsg)
{
	uint32_t type = imsg->hdr.type;

	worker_parent_frame(env->parent, imsg);
	if (type == IMSG_CFG && worker_hooks != NULL &&
	    worker_hooks->pre_sandbox != NULL &&
	    worker_hooks->pre_sandbox(env) == -1)
		fatalx("cannot prepare %s; exiting", role_name(env->role));
}

static void
worker_parent_closed(struct proc_chan *c)
{
	log_debug("parent channel closed; stopping");
	event_base_loopbreak(worker_env.base);
}

int
proc_worker_main(enum imapgw_role role, int instance, int debug, int verbose,
    proc_dispatch_cb peer_frame)
{
	return proc_worker_main_hooks(
	    role, instance, debug, verbose, peer_frame, NULL);
}

int
proc_worker_main_hooks(enum imapgw_role role, int instance, int debug,
    int verbose, proc_dispatch_cb peer_frame,
    const struct proc_worker_hooks *hooks)
{
	struct child_env *env = &worker_env;

	log_init(debug ? LOGT_STDERR : LOGT_SYSLOG, LOGF_TEXT,
	    verbose ? LOG_DEBUG : LOG_INFO, role_name(role));
	env->role = role;
	env->instance = instance;
	worker_peers.dispatch = peer_frame;
	if ((env->base = event_base_new()) == NULL)
		fatalx("event_base_new");
	env->parent = proc_chan_new(env->base, IMAPGW_PARENT_FD, 1, "parent",
	    worker_parent_frame, worker_parent_closed, env);
	if (env->parent == NULL)
		fatal("parent channel");
	worker_hooks = hooks;
	if (hooks != NULL)
		worker_peers.gone = hooks->peer_gone;
	proc_child_start(env, worker_early);
	worker_started = 1;
	/* Peer frames wait in their channels until the loop runs. */
	if (hooks != NULL && hooks->sandboxed != NULL &&
	    hooks->sandboxed(env) == -1)
		fatalx(
		    "%s cannot work in its sandbox; exiting", role_name(role));
	event_base_dispatch(env->base);
	return 0;
}
