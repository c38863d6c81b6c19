/*
 * The shared main loop of the worker roles that serve netd (scand, tlsd):
 * parent channel, peer channels, sandbox, event loop.  A role supplies
 * its own handler for frames from its peers.
 */
#include <stdlib.h>

#include "log.h"
#include "proc.h"

static struct child_env worker_env;
static struct proc_peers worker_peers;

static void
worker_parent_frame(struct proc_chan *c, struct imsg *imsg)
{
	if (imsg->hdr.type == IMSG_PEER) {
		proc_peer_add(&worker_env, &worker_peers, imsg);
		return;
	}
	if (proc_child_common(&worker_env, imsg))
		return;
	proc_chan_fail(c, "unexpected %s from parent",
	    imsg_type_name(imsg->hdr.type));
}

static void
worker_early(struct child_env *env, struct imsg *imsg)
{
	worker_parent_frame(env->parent, imsg);
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
	proc_child_start(env, worker_early);
	event_base_dispatch(env->base);
	return 0;
}
