/*
 * The parent: config, listeners, children, control socket.
 */
#ifndef IMAPGW_PARENT_H
#define IMAPGW_PARENT_H

#include <limits.h>
#include <sys/types.h>
#include <time.h>

#include <event2/event.h>

#include "config.h"
#include "proc.h"

struct child {
	enum imapgw_role role;
	int instance;
	pid_t pid;
	struct proc_chan *chan;
	int reportfd; /* read end of the sandbox violation pipe */
	time_t started;
	int quickdeaths; /* consecutive deaths soon after start */
	struct event *respawn;
	int ready;
	uint32_t sessions;
	uint64_t total;
	int status_pending;
	time_t lost_at; /* peer channel reconnects asked for, per minute */
	int lost;
};

struct listener {
	char addr[80];
	int fd;
	int policy;
};

struct ctl_conn;

struct parent {
	struct event_base *base;
	struct config *cfg;
	const char *cfgpath; /* NULL: built-in default */
	int debug, verbose;
	char exe[PATH_MAX];
	uid_t uid;
	gid_t gid;
	char scand_root[PATH_MAX];
	struct child children[ROLE_MAX][IMAPGW_MAX_INSTANCES];
	struct listener *listeners;
	size_t nlisteners;
	int ctlfd;
	struct event *ctlev;
	struct ctl_conn *ctl_pending;
	time_t started;
	int stopping;
	struct event *sigev[5];
	struct event *stopev;
};

extern struct parent *parent_env;

int parent_main(int argc, char **argv);
void parent_reload(struct parent *);
const char *child_root(struct parent *, enum imapgw_role);
struct config *parent_load_config(
    const char *path, int debug, int verbose, struct buf *errs);

/* control.c */
int control_init(struct parent *);
void control_cleanup(struct parent *);
void control_status_reply(struct parent *, struct child *, struct imsg *);
void control_child_gone(struct parent *, struct child *);

/* child roles, for main.c */
int netd_main(int instance, int debug, int verbose);
int scand_main(int instance, int debug, int verbose);
int tlsd_main(int instance, int debug, int verbose);

#endif
