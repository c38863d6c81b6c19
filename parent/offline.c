/*
 * The offline mode:
 *
 *	imapgwd -S message [-jv] [-a action] [-f config] [-k fetch|append]
 *	    [-o file]
 *
 * judges one message the way the daemon would, with the same scand code
 * in the same sandbox, prints the verdict (for people, or JSON with -j)
 * and, with -o, writes the message a client would get.  Operators use it
 * to try a policy before they deploy it.
 *
 * It starts one scand exactly as the parent does (fork and exec of its
 * own binary with -P scand -I 0, the channel on fd 3 and the sandbox
 * report pipe on fd 4, then IMSG_CFG, IMSG_PEER and IMSG_START) and
 * plays netd on the peer channel: one IMSG_SCAN_REQ asking for the
 * report (SCAN_F_REPORT), one IMSG_SCAN_RES, every offset of which is
 * checked against the result fd as netd checks it (common/scan.h).  It
 * blocks: a one-shot tool has nothing else to do.
 *
 * A scand that does not know the request flags closes the channel on
 * such a request; the request is then made again without them on a new
 * channel, and the answer (which has no report) is printed from its
 * verdict, action and reason.
 *
 * Exit status: 0 clean, 1 the policy acted (changed, reject, drop), 2 the
 * message could not be judged (scan error, scand died, broke the protocol
 * or violated its sandbox), 3 usage, configuration or system error.
 */
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "offline.h"
#include "parent.h"
#include "proc.h"
#include "sandbox.h"
#include "scan.h"

#define OFFLINE_DEFAULT_CONFIG "/etc/imapgw/imapgwd.yaml"
#define OFFLINE_DEFAULT_ACTION "IMAP-Server.Standard"
#define OFFLINE_STARTUP_MS (300 * 1000) /* scand loading its databases */
#define OFFLINE_GRACE_MS 30000 /* beyond max_scan_time, as netd allows */
#define OFFLINE_STOP_MS 5000 /* for scand to exit once its channels close */
#define OFFLINE_MAX_REPORT (64 * 1024 * 1024)
#define OFFLINE_REQID 1

struct offline {
	const char *cfgpath; /* NULL: the built-in default */
	const char *actname;
	const char *msgpath; /* "-": standard input */
	const char *outpath; /* NULL: none; "-": standard output */
	int json;
	int verbose;
	int kind; /* SCAN_FETCH, SCAN_APPEND */
	struct config *cfg;
	size_t act;
	uid_t uid;
	gid_t gid;
	char exe[PATH_MAX];
	char root[PATH_MAX];
	struct buf msg; /* the original bytes */
	int msgfd; /* the same, in a sealed memfd */
	pid_t pid;
	int reportfd;
	int ready;
	struct imsgbuf pch; /* to scand as its parent */
	int pch_open;
	struct imsgbuf peer; /* to scand as its netd */
	int peer_open;
};

/* IMSG_SCAN_RES, as read. */
struct answer {
	uint64_t reqid;
	uint32_t verdict;
	uint32_t action;
	char *reason;
	uint64_t msg_off, msg_len;
	uint64_t bs_off, bs_len;
	uint64_t body_off, body_len;
	uint32_t nsect;
	uint64_t json_off, json_len;
	uint64_t text_off, text_len;
	uint64_t env_off, env_len;
	int fd;
	uint64_t fdsize;
};

enum { CH_FRAME, CH_CLOSED, CH_TIMEOUT };

static struct offline *offline_env;

static void child_kill(struct offline *);

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr, "usage: imapgwd -S file [-jv] [-a action] [-f config] "
	                "[-k fetch|append] [-o file]\n");
	exit(OFFLINE_EXIT_FAIL);
}

static void fail(int, const char *, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* Say why, stop scand if it runs, exit with code. */
static void
fail(int code, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "imapgwd: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (offline_env != NULL)
		child_kill(offline_env);
	exit(code);
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* As scand names them (scan_verdict_name). */
static const char *
verdict_name(uint32_t v)
{
	static const char *const names[] = {
	    [SCAN_CLEAN] = "clean",
	    [SCAN_CHANGED] = "changed",
	    [SCAN_REJECT] = "reject",
	    [SCAN_DROP] = "drop",
	    [SCAN_ERROR] = "error",
	};

	return v <= SCAN_ERROR ? names[v] : "unknown";
}

static const char *
sig_name(int sig)
{
	static char buf[16];
	const char *s = sigabbrev_np(sig);

	if (s)
		snprintf(buf, sizeof(buf), "SIG%s", s);
	else
		snprintf(buf, sizeof(buf), "%d", sig);
	return buf;
}

/*
 * Command line.
 */

/* Options of either mode that take an argument. */
static int
takes_arg(int c)
{
	return c != '\0' && strchr("afkoS", c) != NULL;
}

/* -S, or an option only the offline mode has (-a, -j, -k, -o, --json,
 * which then get its usage message). */
int
offline_wanted(int argc, char **argv)
{
	const char *a;
	int i;

	for (i = 1; i < argc; i++) {
		a = argv[i];
		if (strcmp(a, "--") == 0)
			break;
		if (strcmp(a, "--json") == 0)
			return 1;
		if (a[0] != '-' || a[1] == '-' || a[1] == '\0')
			continue;
		for (a++; *a != '\0'; a++) {
			if (strchr("Sajko", *a) != NULL)
				return 1;
			if (takes_arg(*a)) {
				if (a[1] == '\0')
					i++; /* the next word is the argument */
				break;
			}
		}
	}
	return 0;
}

static void
parse_args(struct offline *o, int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int ch;

	optind = 1;
	while ((ch = getopt_long(
	            argc, argv, "a:df:hjk:o:S:v", longopts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			o->actname = optarg;
			break;
		case 'd':
			break; /* implied: logs go to standard error */
		case 'f':
			o->cfgpath = optarg;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'k':
			if (strcmp(optarg, "fetch") == 0)
				o->kind = SCAN_FETCH;
			else if (strcmp(optarg, "append") == 0)
				o->kind = SCAN_APPEND;
			else {
				fprintf(stderr,
				    "imapgwd: -k %s: the direction is fetch "
				    "or append\n",
				    optarg);
				usage();
			}
			break;
		case 'o':
			o->outpath = optarg;
			break;
		case 'S':
			o->msgpath = optarg;
			break;
		case 'v':
			o->verbose = 1;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || o->msgpath == NULL || o->msgpath[0] == '\0' ||
	    (o->outpath != NULL && o->outpath[0] == '\0'))
		usage();
}

/*
 * Configuration, as the daemon loads it.
 */

static void
load_config(struct offline *o)
{
	struct buf errs;

	if (o->cfgpath == NULL && access(OFFLINE_DEFAULT_CONFIG, F_OK) == 0)
		o->cfgpath = OFFLINE_DEFAULT_CONFIG;
	buf_init(&errs, 0);
	if (o->cfgpath != NULL)
		o->cfg = config_load(o->cfgpath, &errs);
	else
		o->cfg = config_load_mem("<built-in>", config_default_yaml,
		    config_default_yaml_len, &errs);
	if (o->cfg == NULL) {
		buf_add_u8(&errs, '\0');
		fputs((char *)buf_head(&errs), stderr);
		buf_free(&errs);
		exit(OFFLINE_EXIT_FAIL);
	}
	buf_free(&errs);
	/* scand logs to our standard error: warnings, or everything. */
	o->cfg->log_target = LOGT_STDERR;
	o->cfg->log_level = o->verbose ? LOG_DEBUG : LOG_WARNING;
	o->cfg->generation = 1;
}

/* The action to judge with, and only it marked used: scand loads the
 * engines of the used actions. */
static void
choose_action(struct offline *o)
{
	struct config *cfg = o->cfg;
	const char *name = o->actname;
	struct buf known;
	size_t i;

	if (name == NULL)
		name = cfg->npolicies > 0 ? cfg->policies[0].action
		                          : OFFLINE_DEFAULT_ACTION;
	for (i = 0; i < cfg->nactions; i++)
		if (strcmp(cfg->actions[i].name, name) == 0)
			break;
	if (i == cfg->nactions) {
		buf_init(&known, 0);
		for (i = 0; i < cfg->nactions; i++)
			buf_printf(&known, "%s%s", i ? ", " : "",
			    cfg->actions[i].name);
		buf_add_u8(&known, '\0');
		fail(OFFLINE_EXIT_FAIL,
		    "no action named '%s' in %s (actions: %s)", name, cfg->file,
		    (char *)buf_head(&known));
	}
	o->act = i;
	for (i = 0; i < cfg->nactions; i++)
		cfg->actions[i].used = i == o->act;
}

static void
lookup_user(struct offline *o)
{
	struct passwd *pw;

	if ((pw = getpwnam(o->cfg->user)) == NULL)
		fail(OFFLINE_EXIT_FAIL,
		    "user '%s' does not exist; create it, e.g. useradd -r -s "
		    "/usr/sbin/nologin -d /nonexistent %s",
		    o->cfg->user, o->cfg->user);
	if (pw->pw_uid == 0 || pw->pw_gid == 0)
		fail(OFFLINE_EXIT_FAIL, "user '%s' must not have uid or gid 0",
		    o->cfg->user);
	o->uid = pw->pw_uid;
	o->gid = pw->pw_gid;
}

/* scand's root, state_dir/scand, with its private tmp: as the daemon
 * prepares it. */
static void
prepare_root(struct offline *o)
{
	if (scand_root_prepare(o->cfg->state_dir, o->uid, o->gid, o->root,
	        sizeof(o->root)) == -1)
		fail(OFFLINE_EXIT_FAIL, "cannot prepare scand's root in %s",
		    o->cfg->state_dir);
}

/*
 * The message.
 */

static void
read_message(struct offline *o)
{
	const uint8_t *p;
	size_t off = 0;
	ssize_t n;
	int fd;

	if (strcmp(o->msgpath, "-") == 0)
		fd = STDIN_FILENO;
	else if ((fd = open(o->msgpath, O_RDONLY | O_CLOEXEC)) == -1)
		fail(OFFLINE_EXIT_FAIL, "cannot open the message %s: %s",
		    o->msgpath, strerror(errno));
	buf_init(&o->msg, 0);
	for (;;) {
		n = buf_read_fd(&o->msg, fd, 65536);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			fail(OFFLINE_EXIT_FAIL,
			    "cannot read the message %s: %s", o->msgpath,
			    strerror(errno));
		if (n == 0)
			break;
	}
	if (fd != STDIN_FILENO)
		close(fd);
	/* scand gets it as netd gives it: a memfd it cannot change under
	 * its mapping. */
	if ((o->msgfd = memfd_create(
	         "imapgw-offline", MFD_CLOEXEC | MFD_ALLOW_SEALING)) == -1)
		fail(OFFLINE_EXIT_FAIL, "memfd_create: %s", strerror(errno));
	p = buf_head(&o->msg);
	while (off < buf_used(&o->msg)) {
		n = write(o->msgfd, p + off, buf_used(&o->msg) - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			fail(OFFLINE_EXIT_FAIL, "cannot copy the message: %s",
			    n == 0 ? "short write" : strerror(errno));
		off += (size_t)n;
	}
	if (fcntl(o->msgfd, F_ADD_SEALS,
	        F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == -1)
		fail(OFFLINE_EXIT_FAIL, "cannot seal the message: %s",
		    strerror(errno));
}

/*
 * scand: started, stopped and watched as the parent does.
 */

static void
chan_close(struct imsgbuf *ib, int *open)
{
	if (!*open)
		return;
	close(ib->fd);
	imsgbuf_clear(ib);
	*open = 0;
}

static void
child_exec(struct offline *o, int chanfd, int reportfd)
{
	char *argv[8];
	sigset_t set;
	int a, b, null, n = 0;

	/* Move the two fds above 4 first, so dup2 cannot clobber them. */
	if ((a = fcntl(chanfd, F_DUPFD, 10)) == -1 ||
	    (b = fcntl(reportfd, F_DUPFD, 10)) == -1 ||
	    dup2(a, IMAPGW_PARENT_FD) == -1 || dup2(b, IMAPGW_REPORT_FD) == -1)
		_exit(127);
	close(a);
	close(b);
	/* Standard input and output are the tool's: the message may come
	 * from one, the verdict goes to the other. */
	if ((null = open("/dev/null", O_RDWR)) != -1) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&set);
	sigprocmask(SIG_SETMASK, &set, NULL);
	argv[n++] = "imapgwd";
	argv[n++] = "-P";
	argv[n++] = (char *)role_name(ROLE_SCAND);
	argv[n++] = "-I";
	argv[n++] = "0";
	argv[n++] = "-d";
	if (o->verbose)
		argv[n++] = "-v";
	argv[n] = NULL;
	execv(o->exe, argv);
	_exit(127);
}

/* Wait for scand to end, at most ms; then kill it.  Its status. */
static int
child_wait(struct offline *o, int ms)
{
	struct timespec ts = {0, 10 * 1000 * 1000};
	uint64_t end = now_ms() + (uint64_t)ms;
	pid_t r;
	int status = 0;

	while ((r = waitpid(o->pid, &status, WNOHANG)) == 0 && now_ms() < end)
		nanosleep(&ts, NULL);
	if (r == 0) {
		log_debug(
		    "scand pid %ld did not stop; killing it", (long)o->pid);
		kill(o->pid, SIGKILL);
		while (
		    (r = waitpid(o->pid, &status, 0)) == -1 && errno == EINTR)
			;
	}
	o->pid = 0;
	return status;
}

/* The system call the sandbox of a scand dead by SIGSYS reported. */
static const char *
violation(struct offline *o)
{
	static char name[64];
	int nr;

	if (read(o->reportfd, &nr, sizeof(nr)) == sizeof(nr))
		snprintf(name, sizeof(name), "%s", sandbox_syscall_name(nr));
	else
		snprintf(name, sizeof(name), "unknown");
	return name;
}

/* On a failure: scand is not trusted any more.  One that was dying of
 * a sandbox violation meanwhile is reported too. */
static void
child_kill(struct offline *o)
{
	int status;

	chan_close(&o->peer, &o->peer_open);
	chan_close(&o->pch, &o->pch_open);
	if (o->pid <= 0)
		return;
	kill(o->pid, SIGKILL);
	status = child_wait(o, OFFLINE_STOP_MS);
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
		fprintf(stderr,
		    "imapgwd: sandbox violation role=scand syscall=%s\n",
		    violation(o));
}

/* What scand's end says, when it is not a normal exit: a death is
 * reported and ends the run. */
static void
child_status(struct offline *o, int status)
{
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
		fail(OFFLINE_EXIT_SCANERR,
		    "sandbox violation role=scand syscall=%s", violation(o));
	if (WIFSIGNALED(status))
		fail(OFFLINE_EXIT_SCANERR, "scand died by %s",
		    sig_name(WTERMSIG(status)));
	if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
		if (!o->ready)
			fail(OFFLINE_EXIT_FAIL,
			    "scand could not start (status %d); see the "
			    "messages above",
			    WEXITSTATUS(status));
		fail(OFFLINE_EXIT_SCANERR, "scand exited with status %d",
		    WEXITSTATUS(status));
	}
}

/* scand's channel to us closed, or could not be written: it ended. */
static void __attribute__((noreturn)) child_gone(struct offline *o)
{
	int status;

	chan_close(&o->peer, &o->peer_open);
	chan_close(&o->pch, &o->pch_open);
	status = child_wait(o, OFFLINE_STOP_MS);
	child_status(o, status);
	fail(OFFLINE_EXIT_SCANERR, "scand ended without a verdict");
}

static void
child_spawn(struct offline *o)
{
	int sp[2], rp[2];
	ssize_t n;

	if ((n = readlink("/proc/self/exe", o->exe, sizeof(o->exe) - 1)) <= 0)
		fail(OFFLINE_EXIT_FAIL,
		    "cannot find my own binary (/proc/self/exe)");
	o->exe[n] = '\0';
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	        sp) == -1)
		fail(OFFLINE_EXIT_FAIL, "socketpair: %s", strerror(errno));
	if (pipe2(rp, O_CLOEXEC | O_NONBLOCK) == -1)
		fail(OFFLINE_EXIT_FAIL, "pipe2: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	switch ((o->pid = fork())) {
	case -1:
		fail(OFFLINE_EXIT_FAIL, "fork: %s", strerror(errno));
	case 0:
		child_exec(o, sp[1], rp[1]);
		_exit(127);
	}
	close(sp[1]);
	close(rp[1]);
	imsgbuf_init(&o->pch, sp[0]);
	imsgbuf_allow_fdpass(&o->pch);
	o->pch_open = 1;
	o->reportfd = rp[0];
	log_debug("started scand pid %ld", (long)o->pid);
}

static void
send_parent(
    struct offline *o, uint32_t type, int fd, const void *data, size_t len)
{
	if (imsg_compose(&o->pch, type, 0, fd, data, len) == -1)
		fail(OFFLINE_EXIT_FAIL, "cannot queue %s for scand",
		    imsg_type_name(type));
	if (imsgbuf_flush(&o->pch) == -1)
		child_gone(o);
}

/* A new channel to scand as netd-0, announced with IMSG_PEER; ours
 * says HELLO on it. */
static void
connect_peer(struct offline *o)
{
	uint32_t id[2];
	int sp[2];

	chan_close(&o->peer, &o->peer_open);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	        sp) == -1)
		fail(OFFLINE_EXIT_FAIL, "socketpair: %s", strerror(errno));
	imsgbuf_init(&o->peer, sp[0]);
	imsgbuf_allow_fdpass(&o->peer);
	o->peer_open = 1;
	id[0] = ROLE_NETD;
	id[1] = 0;
	send_parent(o, IMSG_PEER, sp[1], id, sizeof(id));
	if (imsg_compose(&o->peer, IMSG_HELLO, 0, -1, id, sizeof(id)) == -1)
		fail(OFFLINE_EXIT_FAIL, "cannot queue HELLO for scand");
	/* A channel scand dropped shows as a read error or end later. */
	(void)imsgbuf_flush(&o->peer);
}

/* The parent's bootstrap: config, peer, start. */
static void
child_bootstrap(struct offline *o)
{
	struct buf b;
	int fd;

	if ((fd = proc_config_memfd(o->cfg, ROLE_SCAND)) == -1)
		fail(OFFLINE_EXIT_FAIL,
		    "cannot pack the configuration for scand");
	send_parent(o, IMSG_CFG, fd, NULL, 0);
	connect_peer(o);
	buf_init(&b, 0);
	buf_add_str(&b, o->root);
	buf_add_u32(&b, (uint32_t)o->uid);
	buf_add_u32(&b, (uint32_t)o->gid);
	send_parent(o, IMSG_START, -1, buf_head(&b), buf_used(&b));
	buf_free(&b);
}

/*
 * The next frame from scand on either channel, until deadline (now_ms()).
 * CH_FRAME with *from the channel it came on; CH_CLOSED with *from the
 * channel that ended; CH_TIMEOUT.  A malformed frame ends the run.
 */
static int
next_frame(struct offline *o, uint64_t deadline, struct imsg *imsg,
    struct imsgbuf **from)
{
	struct imsgbuf *ch[2];
	int *open[2];
	struct pollfd pfd[2];
	uint64_t now;
	ssize_t n;
	int i, k, r, wait;

	for (;;) {
		k = 0;
		if (o->pch_open) {
			ch[k] = &o->pch;
			open[k++] = &o->pch_open;
		}
		if (o->peer_open) {
			ch[k] = &o->peer;
			open[k++] = &o->peer_open;
		}
		for (i = 0; i < k; i++) {
			if ((r = imsg_get(ch[i], imsg)) == 1) {
				*from = ch[i];
				return CH_FRAME;
			}
			if (r == -1)
				fail(OFFLINE_EXIT_SCANERR,
				    "malformed frame from scand: %s",
				    ch[i]->err);
		}
		if (k == 0)
			child_gone(o);
		if ((now = now_ms()) >= deadline)
			return CH_TIMEOUT;
		wait =
		    deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
		for (i = 0; i < k; i++) {
			pfd[i].fd = ch[i]->fd;
			pfd[i].events = POLLIN;
			pfd[i].revents = 0;
		}
		if ((r = poll(pfd, (nfds_t)k, wait)) == -1) {
			if (errno == EINTR)
				continue;
			fail(OFFLINE_EXIT_FAIL, "poll: %s", strerror(errno));
		}
		for (i = 0; i < k; i++) {
			if (pfd[i].revents == 0)
				continue;
			n = imsgbuf_read(ch[i]);
			if (n == -1 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (n == -1 && errno == EBADMSG)
				fail(OFFLINE_EXIT_SCANERR,
				    "malformed frame from scand: %s",
				    ch[i]->err);
			if (n <= 0) {
				*from = ch[i];
				chan_close(ch[i], open[i]);
				return CH_CLOSED;
			}
		}
	}
}

static void
check_hello(struct imsg *imsg)
{
	struct reader rd;
	uint32_t role, inst;

	imsg_reader(imsg, &rd);
	role = rd_u32(&rd);
	inst = rd_u32(&rd);
	if (rd_end(&rd) == -1 || role != ROLE_SCAND || inst != 0)
		fail(OFFLINE_EXIT_SCANERR,
		    "HELLO from scand does not match the peer announced");
}

/* Until scand is sandboxed (READY on its parent channel) and has said
 * HELLO on the peer channel. */
static void
wait_ready(struct offline *o, uint64_t deadline, int need_ready)
{
	struct imsgbuf *from;
	struct imsg imsg;
	int hello = 0;

	while ((need_ready && !o->ready) || !hello) {
		switch (next_frame(o, deadline, &imsg, &from)) {
		case CH_TIMEOUT:
			if (!o->ready)
				fail(OFFLINE_EXIT_FAIL,
				    "scand did not start within %d s",
				    OFFLINE_STARTUP_MS / 1000);
			fail(OFFLINE_EXIT_SCANERR,
			    "scand did not answer on a new channel");
		case CH_CLOSED:
			if (from == &o->pch || !o->ready)
				child_gone(o);
			fail(OFFLINE_EXIT_SCANERR,
			    "scand closed the channel it was given");
		}
		if (from == &o->pch && imsg.hdr.type == IMSG_READY &&
		    imsg.datalen == 0 && !o->ready) {
			o->ready = 1;
			log_debug("scand pid %ld ready", (long)o->pid);
		} else if (from == &o->peer && imsg.hdr.type == IMSG_HELLO &&
		           !hello) {
			check_hello(&imsg);
			hello = 1;
		} else
			fail(OFFLINE_EXIT_SCANERR, "unexpected %s from scand",
			    imsg_type_name(imsg.hdr.type));
		imsg_free(&imsg);
	}
}

/* IMSG_SCAN_REQ, asking for the report. */
static void
send_request(struct offline *o)
{
	struct buf b;
	int fd;

	if ((fd = fcntl(o->msgfd, F_DUPFD_CLOEXEC, 0)) == -1)
		fail(OFFLINE_EXIT_FAIL, "dup: %s", strerror(errno));
	buf_init(&b, 0);
	buf_add_u64(&b, OFFLINE_REQID);
	buf_add_u32(&b, (uint32_t)o->kind);
	buf_add_u32(&b, (uint32_t)o->act);
	buf_add_str(&b, "");
	buf_add_str(&b, "offline");
	buf_add_u64(&b, (uint64_t)buf_used(&o->msg));
	buf_add_u32(&b, 0); /* no sections */
	buf_add_u32(&b, SCAN_F_REPORT);
	buf_add_str(&b, "offline");
	if (imsg_compose(&o->peer, IMSG_SCAN_REQ, 0, fd, buf_head(&b),
	        buf_used(&b)) == -1)
		fail(OFFLINE_EXIT_FAIL, "cannot queue the scan request");
	buf_free(&b);
	/* A channel scand dropped shows as a read error or end next. */
	(void)imsgbuf_flush(&o->peer);
}

static int
range_ok(uint64_t off, uint64_t len, uint64_t size)
{
	return off <= size && len <= size - off;
}

/* Read and check IMSG_SCAN_RES: NULL, or why it is malformed. */
static const char *
answer_read(struct imsg *imsg, struct answer *a)
{
	struct reader rd;
	struct stat st;

	memset(a, 0, sizeof(*a));
	a->fd = -1;
	imsg_reader(imsg, &rd);
	a->reqid = rd_u64(&rd);
	a->verdict = rd_u32(&rd);
	a->action = rd_u32(&rd);
	a->reason = rd_str(&rd, SCAN_MAX_REASON - 1);
	a->msg_off = rd_u64(&rd);
	a->msg_len = rd_u64(&rd);
	a->bs_off = rd_u64(&rd);
	a->bs_len = rd_u64(&rd);
	a->body_off = rd_u64(&rd);
	a->body_len = rd_u64(&rd);
	a->nsect = rd_u32(&rd);
	a->json_off = rd_u64(&rd);
	a->json_len = rd_u64(&rd);
	a->text_off = rd_u64(&rd);
	a->text_len = rd_u64(&rd);
	a->env_off = rd_u64(&rd);
	a->env_len = rd_u64(&rd);
	a->fd = imsg->fd;
	imsg->fd = -1;
	if (rd_end(&rd) == -1 || a->reason == NULL)
		return "cut short or too long";
	if (a->reqid != OFFLINE_REQID)
		return "an answer to a request never made";
	if (a->nsect != 0)
		return "sections nobody asked for";
	if (a->verdict > SCAN_ERROR)
		return "an unknown verdict";
	if (strcmp(action_name((int)a->action), "unknown") == 0)
		return "an unknown action";
	if (a->verdict == SCAN_CHANGED && a->fd == -1)
		return "a changed message without its fd";
	if (a->fd != -1) {
		if (fstat(a->fd, &st) == -1 || !S_ISREG(st.st_mode) ||
		    st.st_size < 0)
			return "a result fd that is not a memfd";
		a->fdsize = (uint64_t)st.st_size;
	}
	if (!range_ok(a->msg_off, a->msg_len, a->fdsize) ||
	    !range_ok(a->bs_off, a->bs_len, a->fdsize) ||
	    !range_ok(a->body_off, a->body_len, a->fdsize) ||
	    !range_ok(a->json_off, a->json_len, a->fdsize) ||
	    !range_ok(a->text_off, a->text_len, a->fdsize) ||
	    !range_ok(a->env_off, a->env_len, a->fdsize))
		return "a range outside the result fd";
	if (a->json_len > OFFLINE_MAX_REPORT ||
	    a->text_len > OFFLINE_MAX_REPORT)
		return "a report too large";
	return NULL;
}

/* The request, and its answer. */
static void
judge(struct offline *o, struct answer *a)
{
	const struct cfg_action *act = &o->cfg->actions[o->act];
	struct imsgbuf *from;
	struct imsg imsg;
	uint64_t deadline, ms;
	const char *why;

	ms = act->antivirus.max_scan_time_ms + OFFLINE_GRACE_MS;
	deadline = now_ms() + ms;
	send_request(o);
	for (;;) {
		switch (next_frame(o, deadline, &imsg, &from)) {
		case CH_TIMEOUT:
			fail(OFFLINE_EXIT_SCANERR,
			    "no verdict from scand within %llu s (max_scan_time "
			    "of %s and %d s)",
			    (unsigned long long)(ms / 1000), act->name,
			    OFFLINE_GRACE_MS / 1000);
		case CH_CLOSED:
			if (from == &o->pch)
				child_gone(o);
			fail(OFFLINE_EXIT_SCANERR,
			    "scand closed the channel without a verdict");
		}
		if (from != &o->peer || imsg.hdr.type != IMSG_SCAN_RES)
			fail(OFFLINE_EXIT_SCANERR, "unexpected %s from scand",
			    imsg_type_name(imsg.hdr.type));
		why = answer_read(&imsg, a);
		imsg_free(&imsg);
		if (why != NULL)
			fail(OFFLINE_EXIT_SCANERR,
			    "malformed verdict from scand: %s", why);
		return;
	}
}

/* Stop scand: it exits once its channels close. */
static void
child_stop(struct offline *o)
{
	chan_close(&o->peer, &o->peer_open);
	chan_close(&o->pch, &o->pch_open);
	child_status(o, child_wait(o, OFFLINE_STOP_MS));
	close(o->reportfd);
}

/*
 * Output.
 */

static void
read_range(int fd, uint64_t off, uint64_t len, struct buf *out)
{
	ssize_t n;
	uint64_t done = 0;

	buf_init(out, 0);
	if (len == 0)
		return;
	if (buf_reserve(out, (size_t)len) == -1)
		fail(OFFLINE_EXIT_FAIL, "out of memory");
	while (done < len) {
		n = pread(fd, buf_tail(out), (size_t)(len - done),
		    (off_t)(off + done));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			fail(OFFLINE_EXIT_SCANERR,
			    "cannot read the result of scand: %s",
			    n == 0 ? "short read" : strerror(errno));
		buf_commit(out, (size_t)n);
		done += (uint64_t)n;
	}
}

static void
json_str(struct buf *b, const char *s)
{
	const unsigned char *p;

	buf_add_u8(b, '"');
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_printf(b, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			buf_printf(b, "\\u%04x", *p);
		else
			buf_add_u8(b, *p);
	}
	buf_add_u8(b, '"');
}

static const char *
out_name(const struct offline *o)
{
	return strcmp(o->outpath, "-") == 0 ? "standard output" : o->outpath;
}

/* -o: what a client gets: the rewritten message, the original if it
 * is clean, nothing otherwise.  Which one ("rewritten", "original",
 * "none"). */
static const char *
write_message(struct offline *o, const struct answer *a)
{
	struct buf m;
	const uint8_t *p;
	size_t len, off = 0;
	ssize_t n;
	int fd;

	buf_init(&m, 0);
	if (a->verdict == SCAN_CHANGED) {
		read_range(a->fd, a->msg_off, a->msg_len, &m);
		p = buf_head(&m);
		len = buf_used(&m);
	} else if (a->verdict == SCAN_CLEAN) {
		p = buf_head(&o->msg);
		len = buf_used(&o->msg);
	} else
		return "none";
	if (strcmp(o->outpath, "-") == 0)
		fd = STDOUT_FILENO;
	else if ((fd = open(o->outpath,
	              O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) == -1)
		fail(OFFLINE_EXIT_FAIL, "cannot create %s: %s", o->outpath,
		    strerror(errno));
	while (off < len) {
		n = write(fd, p + off, len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			fail(OFFLINE_EXIT_FAIL, "cannot write %s: %s",
			    out_name(o),
			    n == 0 ? "short write" : strerror(errno));
		off += (size_t)n;
	}
	if (fd != STDOUT_FILENO && close(fd) == -1)
		fail(OFFLINE_EXIT_FAIL, "cannot write %s: %s", o->outpath,
		    strerror(errno));
	buf_free(&m);
	return a->verdict == SCAN_CHANGED ? "rewritten" : "original";
}

/* The JSON report: scand's, or one made of the answer's fields when it
 * sent none; with -o, where the message went. */
static void
print_json(
    struct offline *o, const struct answer *a, const char *written, FILE *f)
{
	struct buf j, out;
	size_t len;
	const char *p;

	buf_init(&out, 0);
	if (a->json_len > 0) {
		read_range(a->fd, a->json_off, a->json_len, &j);
		p = (const char *)buf_head(&j);
		len = buf_used(&j);
		while (len > 0 && strchr(" \t\r\n", p[len - 1]) != NULL)
			len--;
		while (len > 0 && strchr(" \t\r\n", *p) != NULL) {
			p++;
			len--;
		}
		if (len < 2 || p[0] != '{' || p[len - 1] != '}' ||
		    memchr(p, '\0', len) != NULL)
			fail(OFFLINE_EXIT_SCANERR,
			    "the JSON report of scand is not an object");
		/* Without its closing brace: -o adds a key. */
		buf_add(&out, p, len - 1);
		buf_free(&j);
	} else {
		buf_printf(&out, "{\"verdict\":");
		json_str(&out, verdict_name(a->verdict));
		buf_printf(&out, ",\"action\":");
		json_str(&out, action_name((int)a->action));
		buf_printf(&out, ",\"reason\":");
		json_str(&out, a->reason);
		buf_printf(&out, ",\"size\":%zu", buf_used(&o->msg));
	}
	if (written != NULL) {
		/* An empty object takes no comma. */
		p = (const char *)buf_head(&out);
		len = buf_used(&out);
		while (len > 1 && strchr(" \t\r\n", p[len - 1]) != NULL)
			len--;
		if (p[len - 1] != '{')
			buf_add_u8(&out, ',');
		buf_printf(&out, "\"output\":{\"file\":");
		json_str(&out, o->outpath);
		buf_printf(&out, ",\"message\":");
		json_str(&out, written);
		buf_add_u8(&out, '}');
	}
	buf_printf(&out, "}\n");
	fwrite(buf_head(&out), 1, buf_used(&out), f);
	buf_free(&out);
}

/* The report for people: scand's text as it is, or the answer's fields
 * when it sent none; with -o, where the message went. */
static void
print_text(
    struct offline *o, const struct answer *a, const char *written, FILE *f)
{
	struct buf t;

	if (a->text_len > 0) {
		read_range(a->fd, a->text_off, a->text_len, &t);
		fwrite(buf_head(&t), 1, buf_used(&t), f);
		if (buf_head(&t)[buf_used(&t) - 1] != '\n')
			fputc('\n', f);
		buf_free(&t);
	} else {
		fprintf(f, "verdict: %s\n", verdict_name(a->verdict));
		fprintf(f, "action: %s\n", action_name((int)a->action));
		if (a->reason[0] != '\0')
			fprintf(f, "reason: %s\n", a->reason);
	}
	if (written == NULL)
		return;
	if (strcmp(written, "rewritten") == 0)
		fprintf(f, "output: the rewritten message was written to %s\n",
		    out_name(o));
	else if (strcmp(written, "original") == 0)
		fprintf(f,
		    "output: the original message was written to %s "
		    "(the verdict is clean: it passes unchanged)\n",
		    out_name(o));
	else
		fprintf(f,
		    "output: nothing was written to %s (a %s verdict "
		    "delivers no message)\n",
		    out_name(o), verdict_name(a->verdict));
}

int
offline_main(int argc, char **argv)
{
	struct offline o;
	struct answer a;
	const char *written = NULL;
	FILE *report = stdout;
	int code;

	memset(&o, 0, sizeof(o));
	o.kind = SCAN_FETCH;
	o.msgfd = o.reportfd = -1;
	parse_args(&o, argc, argv);
	log_init(LOGT_STDERR, LOGF_TEXT, o.verbose ? LOG_DEBUG : LOG_WARNING,
	    "offline");
	if (geteuid() != 0)
		fail(OFFLINE_EXIT_FAIL,
		    "-S must run as root: it starts scand in the daemon's "
		    "sandbox (chroot to state_dir/scand, the configured user, "
		    "seccomp)");
	signal(SIGPIPE, SIG_IGN);
	load_config(&o);
	choose_action(&o);
	read_message(&o);
	lookup_user(&o);
	prepare_root(&o);
	log_debug("judging %s (%zu bytes) as a %s under action %s of %s",
	    o.msgpath, buf_used(&o.msg),
	    o.kind == SCAN_APPEND ? "append" : "fetch",
	    o.cfg->actions[o.act].name, o.cfg->file);
	offline_env = &o;
	child_spawn(&o);
	child_bootstrap(&o);
	wait_ready(&o, now_ms() + OFFLINE_STARTUP_MS, 1);
	judge(&o, &a);
	/* The result fd is ours: scand may go, and must go cleanly. */
	child_stop(&o);
	offline_env = NULL;
	if (o.outpath != NULL) {
		if (strcmp(o.outpath, "-") == 0)
			report = stderr;
		written = write_message(&o, &a);
	}
	if (o.json)
		print_json(&o, &a, written, report);
	else
		print_text(&o, &a, written, report);
	if (fflush(report) == EOF || ferror(report))
		fail(OFFLINE_EXIT_FAIL, "cannot write the report: %s",
		    strerror(errno));
	switch (a.verdict) {
	case SCAN_CLEAN:
		code = OFFLINE_EXIT_CLEAN;
		break;
	case SCAN_ERROR:
		code = OFFLINE_EXIT_SCANERR;
		break;
	default:
		code = OFFLINE_EXIT_ACTED;
	}
	if (a.fd != -1)
		close(a.fd);
	free(a.reason);
	close(o.msgfd);
	buf_free(&o.msg);
	config_free(o.cfg);
	return code;
}
