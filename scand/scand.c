/*
 * scand: the scanning processes.  The engines are loaded once, by the
 * loader, and shared by every scand worker, so N workers do not cost N
 * engines of memory.
 *
 * The loader (imapgwd -P loader) is started by the parent like any
 * child.  With the first config it gets it loads, as root and before any
 * sandbox, everything the used actions need (scan_load: one libclamav
 * engine per database directory, GMime's charset converters, libmagic,
 * the lock key).  What cannot be loaded ends the loader with an error:
 * no worker ever runs claiming to scan.  Then it only forks workers, one per order from
 * the parent, and reads nothing but frames from the parent: it enters no
 * sandbox itself, since its children must still be root to enter theirs.
 * Each worker is forked twice (the middle process exits at once), so it
 * is re-parented to the parent, a child subreaper, and is the parent's
 * child like any other.  Its pages are the loader's, copied only where
 * written: the engines stay shared.
 *
 * A worker starts where an executed child would, with its parent channel
 * on fd 3 and its sandbox report pipe on fd 4, takes its config and
 * START from the parent and enters its sandbox, in its own root
 * (state_dir/scand) with a private writable /tmp for libclamav.  Right
 * after, the engines are pointed at /tmp, the directory is checked and a
 * test message is scanned with each engine (scan_ready).  Then it serves
 * the netd workers: a message arrives as a memfd with IMSG_SCAN_REQ, the
 * verdict goes back with IMSG_SCAN_RES (common/scan.h).
 *
 * A reload that needs an engine the loader does not have (a new database
 * directory, antivirus turned on for an action) cannot be served from the
 * loaded engines: the loader says so, the parent starts a new loader that
 * loads it and replaces the workers one by one.  A worker asked to scan
 * with such a config meanwhile answers SCAN_ERROR.
 *
 * A worker's seccomp policy allows TCP clients only if its config, when
 * it entered the sandbox, used spamBlocker's spamd or rspamd engine
 * (sandbox_flags).  A reload that changes that does not change a loaded
 * filter: the parent replaces the workers whose policy differs, one by
 * one.  A worker without network asked meanwhile to use such an engine
 * does not call socket() (which would kill it): the spam check is
 * unavailable and the action's on_unavailable applies.
 *
 * imapgwd -P scand, executed directly, is one scand that loads its own
 * engines (imapgwd -S uses it to judge one message); the daemon's
 * workers always come from the loader.
 */
#include <sys/random.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "parent.h"
#include "proc.h"
#include "sandbox.h"
#include "scand.h"

struct loader {
	struct imsgbuf ib;
	struct config *cfg; /* NULL until the engines are loaded */
	int debug, verbose;
	char **argv; /* our command line, which workers rewrite */
	int reportfd; /* of the order in progress, or -1 */
	uint32_t order;
};

static struct child_env *scand_env;
static uint32_t scand_missing_gen;
static uint32_t scand_nonet_gen;

int
scand_net_allowed(void)
{
	unsigned int flags;

	return !sandbox_current(&flags) || (flags & SANDBOX_NET) != 0;
}

static int
scand_load(const struct config *cfg)
{
	char err[512];

	if (scan_load(cfg, err, sizeof(err)) == -1) {
		log_warnx("cannot prepare scanning: %s", err);
		return -1;
	}
	return 0;
}

static int
scand_pre_sandbox(struct child_env *env)
{
	scand_env = env;
	return scand_load(env->cfg);
}

static int
scand_sandboxed(struct child_env *env)
{
	char err[512];

	scand_env = env;
	if (scan_ready(err, sizeof(err)) == -1) {
		log_warnx("cannot scan in the sandbox: %s", err);
		return -1;
	}
	/* What the loader compiled from the config's files is shared: the
	 * worker's own copy of those bytes is not needed. */
	scan_config_release(env->cfg);
	return 0;
}

static void
scand_answer(struct proc_chan *c, uint32_t peerid, struct scan_res *res)
{
	struct buf b;
	int fd = res->fd;

	buf_init(&b, 0);
	res->fd = -1; /* the imsg layer closes it once sent */
	if (scan_res_write(res, &b) == -1 ||
	    proc_compose(c, IMSG_SCAN_RES, peerid, fd, b.data, b.len) == -1)
		log_warnx("cannot answer scan request %llu",
		    (unsigned long long)res->reqid);
	buf_free(&b);
}

static void
scand_scan(struct proc_chan *c, struct imsg *imsg)
{
	const struct config *cfg = scand_env->cfg;
	struct scan_req req;
	struct scan_res res;
	const char *missing;
	int r;

	r = scan_req_read(imsg, cfg, &req, &res);
	if (r == -1) {
		scan_req_clear(&req);
		proc_chan_fail(c, "malformed SCAN_REQ");
		return;
	}
	/* The parent is replacing the loader and then this worker. */
	if (r == 0 && (missing = scan_missing(cfg)) != NULL) {
		if (scand_missing_gen != cfg->generation)
			log_warnx("the configuration needs %s, which this "
			          "scand has not loaded; scans fail until a "
			          "new scand replaces it",
			    missing);
		scand_missing_gen = cfg->generation;
		scan_res_clear(&res);
		res.verdict = SCAN_ERROR;
		snprintf(res.reason, sizeof(res.reason),
		    "scand is being replaced to load %s", missing);
		r = 1;
	}
	/* The parent is replacing this worker by one with network. */
	if (r == 0 && !scand_net_allowed() &&
	    (sandbox_flags(ROLE_SCAND, cfg) & SANDBOX_NET) &&
	    scand_nonet_gen != cfg->generation) {
		log_warnx("the configuration uses spamBlocker's spamd or "
		          "rspamd engine, but this scand's sandbox allows no "
		          "network access; spam checks are unavailable until "
		          "a new scand replaces it");
		scand_nonet_gen = cfg->generation;
	}
	if (r == 0)
		scan_request(cfg, &req, &res);
	scand_answer(c, imsg->hdr.peerid, &res);
	scan_res_clear(&res);
	scan_req_clear(&req);
}

static void
scand_peer_frame(struct proc_chan *c, struct imsg *imsg)
{
	if (proc_peer_common(c, imsg))
		return;
	if (imsg->hdr.type == IMSG_SCAN_REQ && c->role == ROLE_NETD) {
		scand_scan(c, imsg);
		return;
	}
	proc_chan_fail(
	    c, "unexpected %s from peer", imsg_type_name(imsg->hdr.type));
}

/* One scand that loads its own engines (imapgwd -S). */
int
scand_main(int instance, int debug, int verbose)
{
	static const struct proc_worker_hooks hooks = {
	    .pre_sandbox = scand_pre_sandbox,
	    .sandboxed = scand_sandboxed,
	};

	return proc_worker_main_hooks(
	    ROLE_SCAND, instance, debug, verbose, scand_peer_frame, &hooks);
}

/* A worker forked by the loader: the engines are in memory already. */
static int
scand_worker_main(int instance, int debug, int verbose)
{
	static const struct proc_worker_hooks hooks = {
	    .pre_sandbox = NULL,
	    .sandboxed = scand_sandboxed,
	};

	return proc_worker_main_hooks(
	    ROLE_SCAND, instance, debug, verbose, scand_peer_frame, &hooks);
}

/*
 * The loader.
 */

static void
loader_send(
    struct loader *ld, uint32_t type, uint32_t peerid, const struct buf *b)
{
	if (imsg_compose(&ld->ib, type, peerid, -1, b ? buf_head(b) : NULL,
	        b ? buf_used(b) : 0) == -1 ||
	    imsgbuf_flush(&ld->ib) == -1)
		fatal("parent channel: cannot send %s", imsg_type_name(type));
}

/* The next frame from the parent: 1, or 0 when the parent closed the
 * channel.  Anything else is fatal. */
static int
loader_next(struct loader *ld, struct imsg *imsg)
{
	struct pollfd pfd;
	ssize_t n;
	int r;

	for (;;) {
		if ((r = imsg_get(&ld->ib, imsg)) == 1)
			return 1;
		if (r == -1)
			fatalx("parent channel: %s", ld->ib.err);
		pfd.fd = ld->ib.fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, -1) == -1 && errno != EINTR)
			fatal("poll");
		n = imsgbuf_read(&ld->ib);
		if (n == 0)
			return 0;
		if (n == -1 && errno != EAGAIN && errno != EINTR)
			fatalx("parent channel: %s",
			    ld->ib.err[0] ? ld->ib.err : strerror(errno));
	}
}

/* In the new worker: become scand-<instance> as if executed. */
static void __attribute__((noreturn))
loader_worker(struct loader *ld, int instance, int chanfd, int reportfd)
{
	char inst[16];
	char *argv[8];
	unsigned int seed;
	int n = 0;

	log_setrole("scand");
	if (proc_forked_child(chanfd, reportfd, ld->debug) == -1) {
		log_warn("scand-%d: cannot set up its descriptors", instance);
		_exit(1);
	}
	/* libclamav names its temporary files with rand(): a state of its
	 * own, or the workers would pick the same names in their shared
	 * /tmp. */
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = (unsigned int)getpid() ^ (unsigned int)time(NULL);
	srand(seed);
	snprintf(inst, sizeof(inst), "%d", instance);
	argv[n++] = "imapgwd";
	argv[n++] = "-P";
	argv[n++] = "scand";
	argv[n++] = "-I";
	argv[n++] = inst;
	if (ld->debug)
		argv[n++] = "-d";
	if (ld->verbose)
		argv[n++] = "-v";
	argv[n] = NULL;
	proc_set_cmdline(ld->argv, argv);
	exit(scand_worker_main(instance, ld->debug, ld->verbose));
}

/*
 * Fork worker <instance> twice: the middle process exits at once, so
 * the worker is re-parented to the parent (a child subreaper).  Its pid,
 * or 0 if it could not be forked.
 */
static pid_t
loader_fork(struct loader *ld, int instance, int chanfd, int reportfd)
{
	pid_t mid, pid = 0;
	ssize_t n;
	int pp[2], status;

	if (pipe2(pp, O_CLOEXEC) == -1) {
		log_warn("pipe2");
		return 0;
	}
	switch ((mid = fork())) {
	case -1:
		log_warn("fork");
		close(pp[0]);
		close(pp[1]);
		return 0;
	case 0:
		close(pp[0]);
		if ((pid = fork()) == 0)
			loader_worker(ld, instance, chanfd, reportfd);
		if (pid == -1) {
			log_warn("fork");
			pid = 0;
		}
		if (write(pp[1], &pid, sizeof(pid)) != sizeof(pid))
			_exit(1);
		_exit(0);
	}
	close(pp[1]);
	do
		n = read(pp[0], &pid, sizeof(pid));
	while (n == -1 && errno == EINTR);
	if (n != sizeof(pid))
		pid = 0;
	close(pp[0]);
	while (waitpid(mid, &status, 0) == -1 && errno == EINTR)
		;
	return pid;
}

static void
loader_order(struct loader *ld, struct imsg *imsg)
{
	struct reader rd;
	struct buf b;
	uint32_t inst;
	pid_t pid;

	imsg_reader(imsg, &rd);
	inst = rd_u32(&rd);
	if (rd_end(&rd) == -1 || imsg->fd == -1 || ld->reportfd == -1 ||
	    imsg->hdr.peerid != ld->order || inst >= IMAPGW_MAX_INSTANCES ||
	    ld->cfg == NULL)
		fatalx("bad LOADER_FORK frame from parent");
	pid = loader_fork(ld, (int)inst, imsg->fd, ld->reportfd);
	close(ld->reportfd);
	ld->reportfd = -1;
	if (pid > 0)
		log_debug("forked scand-%u pid %ld", inst, (long)pid);
	buf_init(&b, 0);
	buf_add_u32(&b, inst);
	buf_add_u32(&b, (uint32_t)pid);
	loader_send(ld, IMSG_LOADER_FORKED, imsg->hdr.peerid, &b);
	buf_free(&b);
}

static void
loader_config(struct loader *ld, struct imsg *imsg)
{
	struct config *cfg;
	const char *missing;
	struct buf b;

	if ((cfg = proc_recv_config(imsg, ROLE_SCAND)) == NULL)
		fatalx("unusable config from parent");
	log_init(cfg->log_target, cfg->log_format, cfg->log_level, "loader");
	buf_init(&b, 0);
	if (ld->cfg == NULL) {
		if (scand_load(cfg) == -1)
			exit(1);
		log_info("engines loaded; scand workers are forked from them");
		ld->cfg = cfg;
		loader_send(ld, IMSG_READY, 0, NULL);
	} else if ((missing = scan_missing(cfg)) != NULL) {
		log_info("configuration generation %u needs %s, which this "
		         "loader has not loaded",
		    cfg->generation, missing);
		buf_add_str(&b, missing);
		loader_send(ld, IMSG_LOADER_STALE, 0, &b);
		config_free(cfg);
	} else {
		buf_add_u32(&b, cfg->generation);
		loader_send(ld, IMSG_CFG_APPLIED, 0, &b);
		config_free(ld->cfg);
		ld->cfg = cfg;
	}
	buf_free(&b);
}

static void
loader_frame(struct loader *ld, struct imsg *imsg)
{
	switch (imsg->hdr.type) {
	case IMSG_CFG:
		loader_config(ld, imsg);
		break;
	case IMSG_LOADER_FD:
		if (imsg->datalen != 0 || imsg->fd == -1 || ld->reportfd != -1)
			fatalx("bad LOADER_FD frame from parent");
		ld->reportfd = imsg->fd;
		imsg->fd = -1;
		ld->order = imsg->hdr.peerid;
		break;
	case IMSG_LOADER_FORK:
		loader_order(ld, imsg);
		break;
	default:
		fatalx("unexpected %s from parent",
		    imsg_type_name(imsg->hdr.type));
	}
}

int
scand_loader_main(int debug, int verbose, char **argv)
{
	static struct loader ld;
	struct imsg imsg;

	log_init(debug ? LOGT_STDERR : LOGT_SYSLOG, LOGF_TEXT,
	    verbose ? LOG_DEBUG : LOG_INFO, "loader");
	ld.debug = debug;
	ld.verbose = verbose;
	ld.argv = argv;
	ld.reportfd = -1;
	imsgbuf_init(&ld.ib, IMAPGW_PARENT_FD);
	imsgbuf_allow_fdpass(&ld.ib);
	while (loader_next(&ld, &imsg) == 1) {
		loader_frame(&ld, &imsg);
		imsg_free(&imsg);
	}
	log_debug("parent channel closed; stopping");
	return 0;
}
