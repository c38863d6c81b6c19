/*
 * The parent: config, listeners, children, control socket.
 */
#ifndef IMAPGW_PARENT_H
#define IMAPGW_PARENT_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <event2/event.h>

#include "blockaddr.h"
#include "config.h"
#include "proc.h"

struct child {
	enum imapgw_role role; /* the loader: ROLE_SCAND, is_loader set */
	int instance;
	int is_loader;
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
	/*
	 * scand workers come from the loader: a worker waits until the
	 * loader can fork it, then an order is out until the loader
	 * answers with its pid.  gen: the loader's generation (a loader:
	 * its own).
	 */
	int waiting;
	int pending;
	uint32_t order;
	uint64_t order_reaps; /* p->reaps when the order went out */
	uint32_t gen;
	int retiring; /* stopped on purpose, to be replaced at once */
	int checks; /* loader: configs sent, not answered yet */
	/*
	 * The flags of its sandbox policy (SANDBOX_NET): sandbox_flags()
	 * of the config it was started with, which it computes the same
	 * way.  A reload does not change them: the audit compares with
	 * them, and scand workers whose flags differ from what a new
	 * config needs are replaced.
	 */
	unsigned int sbflags;
};

/* A child process reaped that was no known child (yet). */
struct reaped {
	pid_t pid;
	int status;
	uint64_t seq;
};

#define PARENT_REAPED 32

struct listener {
	char addr[80];
	int fd;
	int policy;
};

struct ctl_conn;

/*
 * The auto-block list: the addresses the block action put on it, sorted
 * by address, at most IMAPGW_BLOCK_MAX.  An IPv4 client that reached an
 * IPv6 socket (::ffff:a.b.c.d) is its IPv4 address.
 */
struct block_entry {
	struct block_addr a;
	time_t until; /* blocked while now < until */
	char *reason;
};

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
	struct child loader; /* loads the scand engines, forks the workers */
	uint32_t loader_gen; /* of the newest loader started */
	uint32_t need_gen; /* workers of older loaders are replaced */
	uint32_t orders; /* fork orders sent */
	uint64_t reaps; /* children reaped */
	struct reaped reaped[PARENT_REAPED]; /* ring of unknown ones */
	struct listener *listeners;
	size_t nlisteners;
	int ctlfd;
	struct event *ctlev;
	struct ctl_conn *ctl_pending;
	time_t started;
	int stopping;
	struct event *sigev[5];
	struct event *stopev;
	struct block_entry *blocks;
	size_t nblocks, capblocks;
	struct event *blockev; /* removes entries as they expire */
};

extern struct parent *parent_env;

int parent_main(int argc, char **argv);
void parent_reload(struct parent *);
const char *child_root(struct parent *, enum imapgw_role);
struct config *parent_load_config(
    const char *path, int debug, int verbose, struct buf *errs);

/* The auto-block list, for the control socket: the entries as text
 * (address, time left, reason); remove one address (-1 if not listed). */
void block_list(struct parent *, struct buf *out);
/* Read u8 family (4 or 6) and the address bytes; ::ffff:a.b.c.d is
 * taken as a.b.c.d.  -1 (rd's error set) if malformed. */
int block_remove(struct parent *, const struct block_addr *);

/* control.c */
int control_init(struct parent *);
void control_cleanup(struct parent *);
void control_status_reply(struct parent *, struct child *, struct imsg *);
void control_child_gone(struct parent *, struct child *);

/* child roles, for main.c */
int netd_main(int instance, int debug, int verbose);
/* scand/scan.c: what scand will compile of the used actions (rules,
 * APT database, spam rules), checked when the parent loads a config. */
int scan_config_check(const struct config *, struct buf *errs);
/* state_dir and scand's root in it (state_dir/scand, root-owned, with a
 * tmp only uid may write), as the daemon and imapgwd -S need them; the
 * root's path in root.  -1 with the reason logged. */
int scand_root_prepare(
    const char *state_dir, uid_t, gid_t, char *root, size_t rootlen);
int scand_main(int instance, int debug, int verbose);
int scand_loader_main(int debug, int verbose, char **argv);
int tlsd_main(int instance, int debug, int verbose);

#endif
