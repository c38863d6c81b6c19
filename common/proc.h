/*
 * The process framework every role uses the same way: libevent-driven imsg
 * channels, the child bootstrap (receive config and fds from the parent,
 * then enter the sandbox), and role/type names.
 */
#ifndef IMAPGW_PROC_H
#define IMAPGW_PROC_H

#include <sys/types.h>

#include <event2/event.h>

#include "config.h"
#include "imsg.h"

struct proc_chan;
typedef void (*proc_dispatch_cb)(struct proc_chan *, struct imsg *);
typedef void (*proc_closed_cb)(struct proc_chan *);

struct proc_chan {
	struct imsgbuf ib;
	struct event *ev;
	short events;
	char name[32]; /* "parent", "scand-1", ... for logs */
	int role, instance;
	proc_dispatch_cb dispatch;
	proc_closed_cb closed;
	void *arg;
	int dead;
	int busy; /* inside a dispatch: closing waits for it */
	int replaced; /* a newer channel to the same peer took over */
	int close_pending;
};

struct proc_chan *proc_chan_new(struct event_base *, int fd, int fdpass,
    const char *name, proc_dispatch_cb, proc_closed_cb, void *arg);
void proc_chan_free(struct proc_chan *);
int proc_compose(struct proc_chan *, uint32_t type, uint32_t peerid, int fd,
    const void *data, size_t len);
/* Close the channel from this side: its closed callback runs as when the
 * peer closes it (after the dispatch in progress, if any). */
void proc_chan_close(struct proc_chan *);
/* Log why a frame is rejected and close the channel. */
void proc_chan_fail(struct proc_chan *, const char *why, ...)
    __attribute__((format(printf, 2, 3)));

/* Child side. */
struct child_env {
	enum imapgw_role role;
	int instance;
	struct event_base *base;
	struct proc_chan *parent;
	struct config *cfg;
	char *root;
	uid_t uid;
	gid_t gid;
	unsigned int sbflags; /* of its sandbox: sandbox_flags(role, cfg)
	                         of the config it had at IMSG_START */
};

/*
 * The scand loader (scand/scand.c) loads the scanning engines once and
 * forks every scand worker from them, so the workers share the engines'
 * memory.  Its frames with the parent, besides IMSG_CFG (as to any child)
 * and IMSG_READY (the first config is loaded):
 *  parent -> loader, an order to fork scand worker <instance>, peer id
 *  the order number, in two frames since a frame carries one fd:
 *   IMSG_LOADER_FD      fd: write end of the worker's sandbox report pipe
 *   IMSG_LOADER_FORK    fd: the worker's end of its parent channel;
 *                       u32 instance
 *  loader -> parent:
 *   IMSG_LOADER_FORKED  peer id the order; u32 instance, u32 pid (0: the
 *                       fork failed)
 *   IMSG_CFG_APPLIED    u32 generation: the loaded engines serve this
 *                       later config
 *   IMSG_LOADER_STALE   str: what a later config needs that the loader
 *                       has not loaded; the parent replaces the loader
 * The loader answers every IMSG_CFG after the first with one of the last
 * two, in order.  Only the parent and the loader use these types.
 */

/* Read a packed config from the memfd of an IMSG_CFG frame. */
struct config *proc_recv_config(struct imsg *, enum imapgw_role);
/* Blocking startup: hand frames from the parent to early_cb until
 * IMSG_START, then enter the sandbox, with the policy flags
 * sandbox_flags() gives for env->cfg (the parent computes the same from
 * the config it sent before START, to audit the child).  env->cfg must
 * be set by then.  Exits the process on any failure: a child never runs
 * unsandboxed. */
void proc_child_start(
    struct child_env *, void (*early_cb)(struct child_env *, struct imsg *));
/* IMSG_CFG: replace env->cfg (fatal if unusable). */
void proc_child_set_config(struct child_env *, struct imsg *);
/* Frames any child may get from the parent at any time (IMSG_CFG through
 * proc_child_set_config, test hooks); 1 if handled. */
int proc_child_common(struct child_env *, struct imsg *);

/* Build the memfd the parent sends with IMSG_CFG. -1 on failure. */
int proc_config_memfd(const struct config *, enum imapgw_role);

/*
 * In a child forked, not executed, from a loader: put chanfd and reportfd
 * at IMAPGW_PARENT_FD and IMAPGW_REPORT_FD, close every other descriptor
 * but the standard ones (the loader's channel and the fds of other orders
 * among them), reconnect to syslog unless logging to stderr, and set the
 * signal state a child has after exec.  The caller then starts as if
 * executed.  -1 if the descriptors cannot be moved: the child must exit.
 */
int proc_forked_child(int chanfd, int reportfd, int debug);
/* Show argv as the command line (ps, /proc/PID/cmdline), within the
 * space of the process's original arguments; NULL-terminated. */
void proc_set_cmdline(char **origargv, char *const *argv);

/* Peer channels (netd <-> scand, netd <-> tlsd), handed out by the
 * parent with IMSG_PEER.  A newer channel to the same peer replaces the
 * older one (the peer was respawned). */
struct proc_peers {
	struct proc_chan *chan[ROLE_MAX][IMAPGW_MAX_INSTANCES];
	proc_dispatch_cb dispatch; /* frames other than HELLO */
	proc_closed_cb gone; /* optional: a peer channel closed */
};

void proc_peer_add(struct child_env *, struct proc_peers *, struct imsg *);
/* HELLO handling shared by all roles; 1 if the frame was consumed. */
int proc_peer_common(struct proc_chan *, struct imsg *);

/* worker.c: main loop of scand and tlsd. */
int proc_worker_main(enum imapgw_role, int instance, int debug, int verbose,
    proc_dispatch_cb peer_frame);

/*
 * The same, with hooks for a role that must load things before it is
 * sandboxed (scand: signature databases, charset converters).
 *  pre_sandbox  runs unsandboxed, as root, each time a config arrives
 *               before IMSG_START (normally once); env->cfg is the new
 *               config.  It must be idempotent.
 *  sandboxed    runs once, right after the sandbox is entered, before
 *               the first frame from a peer is read.
 *  config       runs each time a config arrives after IMSG_START
 *               (a reload), in the sandbox; env->cfg is the new config.
 *  peer_gone    a peer channel closed or was replaced by a newer one;
 *               the channel is freed right after (tlsd: a handshake in
 *               progress has nobody to answer any more).
 *  status       fills in the counts of an IMSG_STATUS answer to the
 *               parent's IMSG_STATUS_REQ; without it the request is
 *               refused as unexpected.
 * Any may be NULL.  A hook that returns -1 has logged why; the worker
 * then exits with status 1 and never serves a peer.
 */
struct proc_worker_hooks {
	int (*pre_sandbox)(struct child_env *);
	int (*sandboxed)(struct child_env *);
	void (*config)(struct child_env *);
	void (*peer_gone)(struct proc_chan *);
	void (*status)(uint32_t *sessions, uint64_t *total);
};

int proc_worker_main_hooks(enum imapgw_role, int instance, int debug,
    int verbose, proc_dispatch_cb peer_frame, const struct proc_worker_hooks *);

#endif
