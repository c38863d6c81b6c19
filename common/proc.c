/*
 * Process framework: imsg channels on libevent, child bootstrap.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "sandbox.h"

/* A packed config for scand carries the APT database (at most 256 MiB)
 * and the spam rules files (at most 16 MiB each, sent once). */
#define CFG_MAX_BLOB (320 * 1024 * 1024)

static const char *role_names[ROLE_MAX] = {
    [ROLE_PARENT] = "parent",
    [ROLE_NETD] = "netd",
    [ROLE_SCAND] = "scand",
    [ROLE_TLSD] = "tlsd",
};

const char *
role_name(enum imapgw_role r)
{
	if ((int)r < 0 || r >= ROLE_MAX)
		return "unknown";
	return role_names[r];
}

int
role_from_name(const char *s)
{
	int i;

	for (i = 0; i < ROLE_MAX; i++)
		if (strcmp(s, role_names[i]) == 0)
			return i;
	return -1;
}

const char *
imsg_type_name(uint32_t t)
{
	static const char *names[IMSG_MAX] = {
	    [IMSG_NONE] = "NONE",
	    [IMSG_CFG] = "CFG",
	    [IMSG_LISTENER] = "LISTENER",
	    [IMSG_LISTENERS_END] = "LISTENERS_END",
	    [IMSG_PEER] = "PEER",
	    [IMSG_START] = "START",
	    [IMSG_STATUS_REQ] = "STATUS_REQ",
	    [IMSG_TEST_VIOLATE] = "TEST_VIOLATE",
	    [IMSG_BLOCK_SET] = "BLOCK_SET",
	    [IMSG_READY] = "READY",
	    [IMSG_STATUS] = "STATUS",
	    [IMSG_CFG_APPLIED] = "CFG_APPLIED",
	    [IMSG_PEER_LOST] = "PEER_LOST",
	    [IMSG_BLOCK_ADD] = "BLOCK_ADD",
	    [IMSG_LOADER_FD] = "LOADER_FD",
	    [IMSG_LOADER_FORK] = "LOADER_FORK",
	    [IMSG_LOADER_FORKED] = "LOADER_FORKED",
	    [IMSG_LOADER_STALE] = "LOADER_STALE",
	    [IMSG_HELLO] = "HELLO",
	    [IMSG_SCAN_REQ] = "SCAN_REQ",
	    [IMSG_SCAN_RES] = "SCAN_RES",
	    [IMSG_TLS_START] = "TLS_START",
	    [IMSG_TLS_DONE] = "TLS_DONE",
	    [IMSG_CTL_STATUS] = "CTL_STATUS",
	    [IMSG_CTL_AUDIT] = "CTL_AUDIT",
	    [IMSG_CTL_RELOAD] = "CTL_RELOAD",
	    [IMSG_CTL_VIOLATE] = "CTL_VIOLATE",
	    [IMSG_CTL_BLOCKED] = "CTL_BLOCKED",
	    [IMSG_CTL_UNBLOCK] = "CTL_UNBLOCK",
	    [IMSG_CTL_TEXT] = "CTL_TEXT",
	    [IMSG_CTL_END] = "CTL_END",
	};

	if (t < IMSG_MAX && names[t])
		return names[t];
	switch (t) {
	case IMSG_LOADER_FD:
		return "LOADER_FD";
	case IMSG_LOADER_FORK:
		return "LOADER_FORK";
	case IMSG_LOADER_FORKED:
		return "LOADER_FORKED";
	case IMSG_LOADER_STALE:
		return "LOADER_STALE";
	}
	return "unknown";
}

static void proc_chan_event(evutil_socket_t, short, void *);

static void
proc_chan_update(struct proc_chan *c)
{
	short want = EV_READ | EV_PERSIST;

	if (c->dead)
		return;
	if (imsgbuf_queuelen(&c->ib))
		want |= EV_WRITE;
	if (want == c->events)
		return;
	event_del(c->ev);
	event_assign(
	    c->ev, event_get_base(c->ev), c->ib.fd, want, proc_chan_event, c);
	event_add(c->ev, NULL);
	c->events = want;
}

struct proc_chan *
proc_chan_new(struct event_base *base, int fd, int fdpass, const char *name,
    proc_dispatch_cb dispatch, proc_closed_cb closed, void *arg)
{
	struct proc_chan *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	imsgbuf_init(&c->ib, fd);
	if (fdpass)
		imsgbuf_allow_fdpass(&c->ib);
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->dispatch = dispatch;
	c->closed = closed;
	c->arg = arg;
	c->role = c->instance = -1;
	c->events = EV_READ | EV_PERSIST;
	c->ev = event_new(base, fd, c->events, proc_chan_event, c);
	if (c->ev == NULL || event_add(c->ev, NULL) == -1) {
		imsgbuf_clear(&c->ib);
		if (c->ev)
			event_free(c->ev);
		free(c);
		return NULL;
	}
	return c;
}

void
proc_chan_free(struct proc_chan *c)
{
	if (c == NULL)
		return;
	event_free(c->ev);
	close(c->ib.fd);
	imsgbuf_clear(&c->ib);
	free(c);
}

void
proc_chan_close(struct proc_chan *c)
{
	if (c->dead)
		return;
	c->dead = 1;
	event_del(c->ev);
	/* A dispatch handler failed its own channel: the owner frees it
	 * once the dispatch loop is done with it. */
	if (c->busy) {
		c->close_pending = 1;
		return;
	}
	if (c->closed)
		c->closed(c); /* owner frees */
	else
		proc_chan_free(c);
}

void
proc_chan_fail(struct proc_chan *c, const char *fmt, ...)
{
	va_list ap;
	char *why;

	va_start(ap, fmt);
	if (vasprintf(&why, fmt, ap) == -1)
		why = NULL;
	va_end(ap);
	log_warnx("channel %s: %s; closing it", c->name,
	    why ? why : "malformed frame");
	free(why);
	proc_chan_close(c);
}

int
proc_compose(struct proc_chan *c, uint32_t type, uint32_t peerid, int fd,
    const void *data, size_t len)
{
	if (c->dead) {
		if (fd != -1)
			close(fd);
		errno = EPIPE;
		return -1;
	}
	if (imsg_compose(&c->ib, type, peerid, fd, data, len) == -1) {
		log_warn("channel %s: cannot queue %s", c->name,
		    imsg_type_name(type));
		return -1;
	}
	/* Out at once if the socket takes it: no write event to arm and
	 * disarm around every frame.  What is left (or an error, which the
	 * write event meets again and closes the channel for, outside the
	 * caller) waits for the socket. */
	(void)imsgbuf_write(&c->ib);
	proc_chan_update(c);
	return 0;
}

static void
proc_chan_event(evutil_socket_t fd, short what, void *arg)
{
	struct proc_chan *c = arg;
	struct imsg imsg;
	ssize_t n;
	int r;

	if (what & EV_WRITE) {
		if (imsgbuf_write(&c->ib) == -1) {
			log_warn("channel %s: write", c->name);
			proc_chan_close(c);
			return;
		}
	}
	if (what & EV_READ) {
		n = imsgbuf_read(&c->ib);
		if (n == 0) {
			log_debug("channel %s: closed by peer", c->name);
			proc_chan_close(c);
			return;
		}
		if (n == -1 && errno != EAGAIN && errno != EINTR) {
			proc_chan_fail(c, "read: %s",
			    c->ib.err[0] ? c->ib.err : strerror(errno));
			return;
		}
		c->busy++;
		while ((r = imsg_get(&c->ib, &imsg)) == 1) {
			c->dispatch(c, &imsg);
			imsg_free(&imsg);
			if (c->dead)
				break;
		}
		c->busy--;
		if (c->dead) {
			if (c->close_pending && !c->busy) {
				c->close_pending = 0;
				c->dead = 0;
				proc_chan_close(c);
			}
			return;
		}
		if (r == -1) {
			proc_chan_fail(c, "%s", c->ib.err);
			return;
		}
	}
	proc_chan_update(c);
}

/* The packed config for tlsd holds private keys: no copy is left in
 * memory that is freed. */
static void
config_buf_wipe(struct buf *b)
{
	if (b->data != NULL)
		explicit_bzero(b->data, b->cap);
	buf_free(b);
}

int
proc_config_memfd(const struct config *cfg, enum imapgw_role role)
{
	struct buf b;
	size_t off = 0;
	ssize_t n;
	int fd;

	buf_init(&b, CFG_MAX_BLOB);
	if (config_pack(cfg, role, &b) == -1) {
		config_buf_wipe(&b);
		return -1;
	}
	if ((fd = memfd_create(
	         "imapgw-config", MFD_CLOEXEC | MFD_ALLOW_SEALING)) == -1) {
		config_buf_wipe(&b);
		return -1;
	}
	while (off < buf_used(&b)) {
		n = write(fd, buf_head(&b) + off, buf_used(&b) - off);
		if (n <= 0) {
			config_buf_wipe(&b);
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	config_buf_wipe(&b);
	/* The child gets a snapshot it cannot change. */
	fcntl(fd, F_ADD_SEALS,
	    F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
	return fd;
}

int
proc_forked_child(int chanfd, int reportfd, int debug)
{
	sigset_t set;
	long fd, max;
	int a, b;

	/* Move both above the target numbers first, so dup2 cannot clobber
	 * one with the other. */
	if ((a = fcntl(chanfd, F_DUPFD, 10)) == -1 ||
	    (b = fcntl(reportfd, F_DUPFD, 10)) == -1 ||
	    dup2(a, IMAPGW_PARENT_FD) == -1 || dup2(b, IMAPGW_REPORT_FD) == -1)
		return -1;
	/* syslog's socket goes with the rest; closelog first, so that the
	 * C library does not keep a number that is closed under it. */
	closelog();
	if (close_range(IMAPGW_REPORT_FD + 1, ~0U, 0) == -1) {
		max = sysconf(_SC_OPEN_MAX);
		for (fd = IMAPGW_REPORT_FD + 1; fd < max; fd++)
			close((int)fd);
	}
	/* As log_init() does for a child started without -d: connected to
	 * /dev/log now, before the chroot. */
	if (!debug)
		openlog("imapgwd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&set);
	sigprocmask(SIG_SETMASK, &set, NULL);
	return 0;
}

void
proc_set_cmdline(char **origargv, char *const *argv)
{
	char *start, *end;
	size_t len, n;
	int i;

	/* The original strings, if they lie back to back. */
	if (origargv == NULL || origargv[0] == NULL)
		return;
	start = end = origargv[0];
	for (i = 0; origargv[i] != NULL; i++) {
		if (origargv[i] != end)
			return;
		end = origargv[i] + strlen(origargv[i]) + 1;
	}
	for (len = 0, i = 0; argv[i] != NULL; i++)
		len += strlen(argv[i]) + 1;
	if (len > (size_t)(end - start)) {
		log_debug(
		    "command line '%s ...' does not fit; left as is", argv[0]);
		return;
	}
	/* The last byte stays NUL: the kernel then shows exactly this. */
	memset(start, 0, (size_t)(end - start));
	for (i = 0; argv[i] != NULL; i++) {
		n = strlen(argv[i]) + 1;
		memcpy(start, argv[i], n);
		start += n;
	}
}

struct config *
proc_recv_config(struct imsg *imsg, enum imapgw_role role)
{
	struct config *cfg;
	struct stat st;
	uint8_t *p;
	size_t off = 0;
	ssize_t n;

	if (imsg->fd == -1 || fstat(imsg->fd, &st) == -1 || st.st_size <= 0 ||
	    st.st_size > CFG_MAX_BLOB) {
		log_warnx("config from parent: bad descriptor");
		return NULL;
	}
	if ((p = malloc((size_t)st.st_size)) == NULL)
		return NULL;
	while (off < (size_t)st.st_size) {
		n = pread(
		    imsg->fd, p + off, (size_t)st.st_size - off, (off_t)off);
		if (n <= 0) {
			explicit_bzero(p, off);
			free(p);
			log_warnx("config from parent: short read");
			return NULL;
		}
		off += (size_t)n;
	}
	cfg = config_unpack(p, off);
	explicit_bzero(p, off); /* tlsd: the keys are in cfg now */
	free(p);
	if (cfg == NULL)
		log_warnx("config from parent: malformed");
	(void)role;
	return cfg;
}

static void
proc_read_start(struct child_env *env, struct imsg *imsg)
{
	struct reader rd;

	imsg_reader(imsg, &rd);
	env->root = rd_str(&rd, 4096);
	env->uid = rd_u32(&rd);
	env->gid = rd_u32(&rd);
	if (rd_end(&rd) == -1 || env->root == NULL || env->root[0] != '/')
		fatalx("bad START frame from parent");
}

void
proc_child_start(
    struct child_env *env, void (*early_cb)(struct child_env *, struct imsg *))
{
	struct imsgbuf *ib = &env->parent->ib;
	struct imsg imsg;
	int r;

	for (;;) {
		r = imsg_wait(ib, &imsg, -1);
		if (r != 1)
			fatalx("parent channel: %s",
			    ib->err[0] ? ib->err : "closed");
		if (imsg.hdr.type == IMSG_START) {
			proc_read_start(env, &imsg);
			imsg_free(&imsg);
			break;
		}
		early_cb(env, &imsg);
		imsg_free(&imsg);
	}
	if (env->cfg == NULL)
		fatalx("no config from parent before START");
	log_init(env->cfg->log_target, env->cfg->log_format,
	    env->cfg->log_level, role_name(env->role));
	/* The config before START is the one the parent started us with:
	 * it computes the same flags from it. */
	env->sbflags = sandbox_flags(env->role, env->cfg);
	if (sandbox_enter_flags(
	        env->role, env->sbflags, env->root, env->uid, env->gid) == -1)
		fatalx("cannot enter sandbox; exiting");
	proc_compose(env->parent, IMSG_READY, 0, -1, NULL, 0);
	/* Frames that arrived behind START are already buffered. */
	event_active(env->parent->ev, EV_READ, 0);
	log_debug("instance %d sandboxed in %s as uid %u%s%s", env->instance,
	    env->root, (unsigned)env->uid,
	    *sandbox_flags_text(env->role, env->sbflags) ? ", " : "",
	    sandbox_flags_text(env->role, env->sbflags));
}

void
proc_child_set_config(struct child_env *env, struct imsg *imsg)
{
	struct config *cfg;

	if ((cfg = proc_recv_config(imsg, env->role)) == NULL)
		fatalx("unusable config from parent");
	config_free(env->cfg);
	env->cfg = cfg;
	log_init(cfg->log_target, cfg->log_format, cfg->log_level,
	    role_name(env->role));
}

int
proc_child_common(struct child_env *env, struct imsg *imsg)
{
	switch (imsg->hdr.type) {
	case IMSG_CFG:
		proc_child_set_config(env, imsg);
		return 1;
#ifdef IMAPGW_TEST_HOOKS
	case IMSG_TEST_VIOLATE:
		log_warnx("test hook: making a forbidden system call");
		sandbox_test_violate();
		return 1;
#endif
	default:
		return 0;
	}
}

static void
proc_peer_closed(struct proc_chan *c)
{
	struct proc_peers *peers = c->arg;

	if (c->role > 0 && c->role < ROLE_MAX && c->instance >= 0 &&
	    c->instance < IMAPGW_MAX_INSTANCES &&
	    peers->chan[c->role][c->instance] == c)
		peers->chan[c->role][c->instance] = NULL;
	log_debug("peer %s gone", c->name);
	if (peers->gone)
		peers->gone(c);
	proc_chan_free(c);
}

void
proc_peer_add(
    struct child_env *env, struct proc_peers *peers, struct imsg *imsg)
{
	struct proc_chan *c, *old;
	struct reader rd;
	uint32_t role, inst, hello[2];
	char name[32];

	imsg_reader(imsg, &rd);
	role = rd_u32(&rd);
	inst = rd_u32(&rd);
	if (rd_end(&rd) == -1 || imsg->fd == -1 || role == ROLE_PARENT ||
	    role >= ROLE_MAX || role == (uint32_t)env->role ||
	    inst >= IMAPGW_MAX_INSTANCES)
		fatalx("bad PEER frame from parent");
	snprintf(name, sizeof(name), "%s-%u", role_name(role), inst);
	c = proc_chan_new(env->base, imsg->fd, 1, name, peers->dispatch,
	    proc_peer_closed, peers);
	if (c == NULL)
		fatal("peer channel %s", name);
	imsg->fd = -1; /* the channel owns it now */
	c->role = (int)role;
	c->instance = (int)inst;
	if ((old = peers->chan[role][inst]) != NULL) {
		old->replaced = 1;
		if (peers->gone)
			peers->gone(old);
		old->arg = NULL;
		old->closed = NULL;
		old->dead = 1;
		proc_chan_free(old);
	}
	peers->chan[role][inst] = c;
	hello[0] = (uint32_t)env->role;
	hello[1] = (uint32_t)env->instance;
	proc_compose(c, IMSG_HELLO, 0, -1, hello, sizeof(hello));
	log_debug("peer %s connected", name);
}

int
proc_peer_common(struct proc_chan *c, struct imsg *imsg)
{
	struct reader rd;
	uint32_t role, inst;

	if (imsg->hdr.type != IMSG_HELLO)
		return 0;
	imsg_reader(imsg, &rd);
	role = rd_u32(&rd);
	inst = rd_u32(&rd);
	if (rd_end(&rd) == -1 || (int)role != c->role ||
	    (int)inst != c->instance)
		proc_chan_fail(c, "HELLO does not match the peer the parent "
		                  "announced");
	return 1;
}
