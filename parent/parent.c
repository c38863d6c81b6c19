/*
 * The parent process: loads and validates the config, opens listeners,
 * starts and respawns the children, hands each only what it needs, and
 * reloads on SIGHUP.  It never parses network input.
 *
 * netd, tlsd and the scand loader are forked and executed.  The scand
 * workers are forked by the loader from its loaded engines (see
 * scand/scand.c): for each, the parent makes the channel and the report
 * pipe as for any child, sends the loader their ends with a fork order,
 * and learns the pid from its answer.  The parent is a child subreaper,
 * so the workers are its children and its SIGCHLD handling sees them.
 */
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "parent.h"
#include "sandbox.h"
#include "util.h"

#define DEFAULT_CONFIG "/etc/imapgw/imapgwd.yaml"
#define RESPAWN_QUICK 10 /* a child dying sooner than this is "quick" */
#define RESPAWN_MAX_DELAY 60

struct parent *parent_env;

static void child_spawn(struct parent *, struct child *);
static void child_reaped(struct parent *, struct child *, int);
static void child_respawn_later(struct parent *, struct child *);
static void workers_renew(struct parent *);

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr, "usage: imapgwd [-dnv] [-f file]\n");
	exit(1);
}

/* The loader's warnings (an expired certificate, a key file others can
 * read), one log line each. */
static void
log_config_warnings(const struct config *cfg)
{
	const char *p;
	size_t n;

	for (p = cfg->warnings; p != NULL && *p != '\0'; p += n) {
		n = strcspn(p, "\n");
		log_warnx("%.*s", (int)n, p);
		if (p[n] == '\n')
			n++;
	}
}

struct config *
parent_load_config(const char *path, int debug, int verbose, struct buf *errs)
{
	struct config *cfg;

	if (path)
		cfg = config_load(path, errs);
	else
		cfg = config_load_mem("<built-in>", config_default_yaml,
		    config_default_yaml_len, errs);
	if (cfg == NULL)
		return NULL;
	if (scan_config_check(cfg, errs) == -1) {
		config_free(cfg);
		return NULL;
	}
	log_config_warnings(cfg);
	/* -d: everything logs to stderr, whatever the file says. */
	if (debug)
		cfg->log_target = LOGT_STDERR;
	if (verbose)
		cfg->log_level = LOG_DEBUG;
	return cfg;
}

static void
print_errors(struct buf *errs)
{
	buf_add_u8(errs, '\0');
	fputs((char *)buf_head(errs), stderr);
}

const char *
child_root(struct parent *p, enum imapgw_role role)
{
	return role == ROLE_SCAND ? p->scand_root : p->cfg->chroot;
}

/*
 * The children's root must be root-owned and not writable by anyone else,
 * or a child could plant files in its own jail.
 */
static int
check_root_dir(const char *dir, int create)
{
	struct stat st;

	if (stat(dir, &st) == -1) {
		if (errno != ENOENT || !create) {
			log_warn("%s", dir);
			return -1;
		}
		/* Another imapgwd (-S) may create it at the same time. */
		if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
			log_warn("cannot create %s", dir);
			return -1;
		}
		if (stat(dir, &st) == -1) {
			log_warn("%s", dir);
			return -1;
		}
		log_info("created directory %s", dir);
	}
	if (!S_ISDIR(st.st_mode)) {
		log_warnx("%s is not a directory", dir);
		return -1;
	}
	if (st.st_uid != 0 || (st.st_mode & 022)) {
		log_warnx("%s must be owned by root and not writable by group "
		          "or others (chown root %s; chmod 755 %s)",
		    dir, dir, dir);
		return -1;
	}
	return 0;
}

/* scand gets its own root, state_dir/scand, with a private tmp that only
 * it (uid) may write.  The daemon and imapgwd -S prepare it alike. */
int
scand_root_prepare(
    const char *state_dir, uid_t uid, gid_t gid, char *root, size_t rootlen)
{
	char tmp[PATH_MAX];
	struct stat st;

	if (check_root_dir(state_dir, 1) == -1)
		return -1;
	if (snprintf(root, rootlen, "%s/scand", state_dir) >= (int)rootlen ||
	    snprintf(tmp, sizeof(tmp), "%s/tmp", root) >= (int)sizeof(tmp)) {
		log_warnx("state_dir path too long");
		return -1;
	}
	if (check_root_dir(root, 1) == -1)
		return -1;
	if (mkdir(tmp, 0700) == -1 && errno != EEXIST) {
		log_warn("cannot create %s", tmp);
		return -1;
	}
	if (lstat(tmp, &st) == -1 || !S_ISDIR(st.st_mode)) {
		log_warnx("%s is not a directory", tmp);
		return -1;
	}
	if (chown(tmp, uid, gid) == -1 || chmod(tmp, 0700) == -1) {
		log_warn("cannot give %s to uid %u", tmp, (unsigned)uid);
		return -1;
	}
	return 0;
}

/*
 * The verdict cache, state_dir/verdicts: root's, 0700.  Every netd
 * opens it as root before its sandbox, and no child may reach it (it is
 * outside their roots), so no child can plant a file or a link there.
 * A failure is not fatal: netd then keeps verdicts in memory only (and
 * says so).
 */
static void
verdicts_prepare(const char *state_dir, uint64_t size)
{
	char dir[PATH_MAX];
	struct stat st;

	if (size == 0)
		return;
	if (snprintf(dir, sizeof(dir), "%s/verdicts", state_dir) >=
	    (int)sizeof(dir)) {
		log_warnx("state_dir path too long for the verdict cache");
		return;
	}
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		log_warn("cannot create %s", dir);
		return;
	}
	if (lstat(dir, &st) == -1 || !S_ISDIR(st.st_mode)) {
		log_warnx("%s is not a directory", dir);
		return;
	}
	if ((st.st_uid != 0 || st.st_gid != 0 ||
	        (st.st_mode & 07777) != 0700) &&
	    (chown(dir, 0, 0) == -1 || chmod(dir, 0700) == -1))
		log_warn("cannot make %s root's with mode 0700", dir);
}

static int
prepare_dirs(struct parent *p)
{
	if (check_root_dir(p->cfg->chroot, 1) == -1)
		return -1;
	if (scand_root_prepare(p->cfg->state_dir, p->uid, p->gid, p->scand_root,
	        sizeof(p->scand_root)) == -1)
		return -1;
	verdicts_prepare(p->cfg->state_dir, p->cfg->vcache_size);
	return 0;
}

static int
lookup_user(struct parent *p, const char *user)
{
	struct passwd *pw;

	if ((pw = getpwnam(user)) == NULL) {
		log_warnx("user '%s' does not exist; create it, e.g. "
		          "useradd -r -s /usr/sbin/nologin -d /nonexistent %s",
		    user, user);
		return -1;
	}
	if (pw->pw_uid == 0 || pw->pw_gid == 0) {
		log_warnx("user '%s' must not have uid or gid 0", user);
		return -1;
	}
	p->uid = pw->pw_uid;
	p->gid = pw->pw_gid;
	return 0;
}

/* Listeners */

/*
 * What a listener's mode asks of its socket, set when it is opened and
 * again when a reload keeps it.  Implicit TLS: the client speaks first
 * (its ClientHello), so the kernel hands a connection over when its
 * first bytes are in (TCP_DEFER_ACCEPT): netd and tlsd are woken once
 * for the connection and its ClientHello, and a connection that sends
 * nothing is accepted only after a second, and then times out in tlsd.
 * Plain IMAP: the server speaks first, nothing is deferred.
 */
static void
listener_tune(int fd, const struct cfg_listen *l)
{
	int secs = l->tls == LISTEN_TLS_IMPLICIT ? 1 : 0;

	if (setsockopt(
	        fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)) == -1)
		log_warn("listen %s: TCP_DEFER_ACCEPT", l->addr.text);
}

static int
listener_open(const struct cfg_listen *l)
{
	int fd, on = 1;

	fd = socket(l->addr.ss.ss_family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("listen %s: socket", l->addr.text);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (l->addr.ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (const struct sockaddr *)&l->addr.ss, l->addr.len) == -1 ||
	    listen(fd, 512) == -1) {
		log_warn("listen %s", l->addr.text);
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Build the listener set for cfg, reusing the sockets of addresses that
 * are already open so a reload never drops a listening port in use.
 */
static int
listeners_update(struct parent *p, struct config *cfg)
{
	struct listener *nl, *old;
	size_t n = 0, i, j, k, total = 0;
	int fd;

	for (i = 0; i < cfg->npolicies; i++)
		total += cfg->policies[i].nlisten;
	if ((nl = calloc(total ? total : 1, sizeof(*nl))) == NULL)
		return -1;
	for (i = 0; i < cfg->npolicies; i++) {
		for (j = 0; j < cfg->policies[i].nlisten; j++) {
			const struct cfg_listen *l =
			    &cfg->policies[i].listen[j];

			fd = -1;
			for (k = 0; k < p->nlisteners; k++)
				if (strcmp(p->listeners[k].addr,
				        l->addr.text) == 0)
					fd = p->listeners[k].fd;
			if (fd == -1 && (fd = listener_open(l)) == -1)
				goto fail;
			listener_tune(fd, l);
			snprintf(
			    nl[n].addr, sizeof(nl[n].addr), "%s", l->addr.text);
			nl[n].fd = fd;
			nl[n].policy = (int)i;
			n++;
		}
	}
	old = p->listeners;
	for (k = 0; k < p->nlisteners; k++) {
		for (i = 0; i < n; i++)
			if (nl[i].fd == old[k].fd)
				break;
		if (i == n) {
			log_info("closing listener %s", old[k].addr);
			close(old[k].fd);
		}
	}
	free(old);
	p->listeners = nl;
	p->nlisteners = n;
	return 0;
fail:
	/* Close only what this attempt opened. */
	for (i = 0; i < n; i++) {
		for (k = 0; k < p->nlisteners; k++)
			if (p->listeners[k].fd == nl[i].fd)
				break;
		if (k == p->nlisteners)
			close(nl[i].fd);
	}
	free(nl);
	return -1;
}

/* A child's name in logs: "netd-0", "scand-2", "loader". */
static const char *
child_name(const struct child *c, char *buf, size_t len)
{
	if (c->is_loader)
		snprintf(buf, len, "loader");
	else
		snprintf(buf, len, "%s-%d", role_name(c->role), c->instance);
	return buf;
}

static const char *
child_role_label(const struct child *c)
{
	return c->is_loader ? "loader" : role_name(c->role);
}

/* Sending to children */

/* Running, or a scand worker whose fork is ordered: frames to it queue
 * on its channel until it reads them. */
static int
child_alive(const struct child *c)
{
	return (c->pid > 0 || c->pending) && c->chan != NULL && !c->chan->dead;
}

static int
child_send_config(struct parent *p, struct child *c)
{
	int fd;

	if ((fd = proc_config_memfd(p->cfg, c->role)) == -1) {
		log_warn("cannot pack config for %s", c->chan->name);
		return -1;
	}
	return proc_compose(c->chan, IMSG_CFG, 0, fd, NULL, 0);
}

static void
child_send_listeners(struct parent *p, struct child *c)
{
	struct buf b;
	size_t i;
	int fd;

	for (i = 0; i < p->nlisteners; i++) {
		if ((fd = fcntl(p->listeners[i].fd, F_DUPFD_CLOEXEC, 0)) ==
		    -1) {
			log_warn("dup listener");
			continue;
		}
		buf_init(&b, 0);
		buf_add_u32(&b, (uint32_t)p->listeners[i].policy);
		buf_add_str(&b, p->listeners[i].addr);
		proc_compose(
		    c->chan, IMSG_LISTENER, 0, fd, buf_head(&b), buf_used(&b));
		buf_free(&b);
	}
	proc_compose(c->chan, IMSG_LISTENERS_END, 0, -1, &p->cfg->generation,
	    sizeof(p->cfg->generation));
}

/* A socketpair between two children, one end to each. */
static void
connect_peers(struct child *a, struct child *b)
{
	uint32_t ida[2], idb[2];
	int sp[2];

	if (!child_alive(a) || !child_alive(b))
		return;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	        sp) == -1) {
		log_warn(
		    "socketpair for %s and %s", a->chan->name, b->chan->name);
		return;
	}
	ida[0] = (uint32_t)b->role;
	ida[1] = (uint32_t)b->instance;
	idb[0] = (uint32_t)a->role;
	idb[1] = (uint32_t)a->instance;
	proc_compose(a->chan, IMSG_PEER, 0, sp[0], ida, sizeof(ida));
	proc_compose(b->chan, IMSG_PEER, 0, sp[1], idb, sizeof(idb));
}

/* netd talks to every scand and every tlsd. */
static void
child_connect_peers(struct parent *p, struct child *c)
{
	int role, i;

	for (role = ROLE_NETD; role < ROLE_MAX; role++) {
		if (role == (int)c->role)
			continue;
		if (c->role != ROLE_NETD && role != ROLE_NETD)
			continue;
		for (i = 0; i < p->cfg->workers[role]; i++)
			connect_peers(c, &p->children[role][i]);
	}
}

static void
child_send_start(struct parent *p, struct child *c)
{
	struct buf b;

	buf_init(&b, 0);
	buf_add_str(&b, child_root(p, c->role));
	buf_add_u32(&b, (uint32_t)p->uid);
	buf_add_u32(&b, (uint32_t)p->gid);
	proc_compose(c->chan, IMSG_START, 0, -1, buf_head(&b), buf_used(&b));
	buf_free(&b);
}

/* Frames from children */

/*
 * A netd lost its channel to a peer that may still run: give them a new
 * one.  A peer that keeps breaking channels is killed and respawned.
 */
static void
peer_lost(struct parent *p, struct child *c, struct imsg *imsg)
{
	struct reader rd;
	struct child *peer;
	uint32_t role, inst;
	time_t now = time(NULL);

	imsg_reader(imsg, &rd);
	role = rd_u32(&rd);
	inst = rd_u32(&rd);
	if (rd_end(&rd) == -1 || c->role != ROLE_NETD ||
	    (role != ROLE_SCAND && role != ROLE_TLSD) ||
	    inst >= (uint32_t)p->cfg->workers[role]) {
		proc_chan_fail(c->chan, "bad PEER_LOST frame");
		return;
	}
	peer = &p->children[role][inst];
	if (!child_alive(peer))
		return; /* respawned and connected by the SIGCHLD path */
	if (now - peer->lost_at > 60) {
		peer->lost_at = now;
		peer->lost = 0;
	}
	if (++peer->lost > 10 && peer->pid > 0) {
		log_warnx("%s pid %ld keeps breaking its channels; killing it",
		    peer->chan->name, (long)peer->pid);
		kill(peer->pid, SIGKILL);
		return;
	}
	log_info("reconnecting %s and %s", c->chan->name, peer->chan->name);
	connect_peers(c, peer);
}

/*
 * The auto-block list.  netd reports a client whose session a block
 * action ended (IMSG_BLOCK_ADD); the parent puts it on the list for
 * auto_block.duration unless an exception matches, and tells every netd
 * (IMSG_BLOCK_SET), which then refuses the address at accept.  A netd
 * that starts gets the whole list before it accepts anything.  A timer
 * removes entries as they expire; a reload keeps the list.
 */

static void
block_send(struct child *c, const struct block_addr *a, time_t until)
{
	struct buf b;

	buf_init(&b, 0);
	block_addr_write(&b, a);
	buf_add_u64(&b, (uint64_t)until);
	proc_compose(
	    c->chan, IMSG_BLOCK_SET, 0, -1, buf_head(&b), buf_used(&b));
	buf_free(&b);
}

/* Every netd learns a's entry; until 0: a is no longer blocked. */
static void
block_broadcast(struct parent *p, const struct block_addr *a, time_t until)
{
	struct child *c;
	int i;

	for (i = 0; i < p->cfg->workers[ROLE_NETD]; i++) {
		c = &p->children[ROLE_NETD][i];
		if (child_alive(c))
			block_send(c, a, until);
	}
}

/* A netd that starts: the whole list, after its config. */
static void
block_send_all(struct parent *p, struct child *c)
{
	time_t now = time(NULL);
	size_t i;

	for (i = 0; i < p->nblocks; i++)
		if (p->blocks[i].until > now)
			block_send(c, &p->blocks[i].a, p->blocks[i].until);
}

/* The timer fires when the first entry expires. */
static void
block_schedule(struct parent *p)
{
	struct timeval tv = {0, 0};
	time_t now = time(NULL), next = 0;
	size_t i;

	evtimer_del(p->blockev);
	if (p->nblocks == 0)
		return;
	for (i = 0; i < p->nblocks; i++)
		if (i == 0 || p->blocks[i].until < next)
			next = p->blocks[i].until;
	tv.tv_sec = next > now ? next - now : 0;
	evtimer_add(p->blockev, &tv);
}

static void
block_expire_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct parent *p = arg;
	struct block_entry *e;
	char addr[INET6_ADDRSTRLEN];
	time_t now = time(NULL);
	size_t i, j;

	for (i = j = 0; i < p->nblocks; i++) {
		e = &p->blocks[i];
		if (e->until > now) {
			p->blocks[j++] = *e;
			continue;
		}
		block_addr_text(&e->a, addr, sizeof(addr));
		log_event(LOG_NOTICE, "block expired", "address", addr, NULL);
		block_broadcast(p, &e->a, 0);
		free(e->reason);
	}
	p->nblocks = j;
	block_schedule(p);
}

static void
block_free(struct parent *p)
{
	size_t i;

	for (i = 0; i < p->nblocks; i++)
		free(p->blocks[i].reason);
	free(p->blocks);
	p->blocks = NULL;
	p->nblocks = p->capblocks = 0;
	if (p->blockev != NULL)
		event_free(p->blockev);
	p->blockev = NULL;
}

static void
fmt_localtime(time_t t, char *out, size_t len)
{
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL ||
	    strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(out, len, "%lld", (long long)t);
}

static void
fmt_left(time_t secs, char *out, size_t len)
{
	long long s = secs;

	if (s >= 86400)
		snprintf(out, len, "%lldd%02lldh%02lldm", s / 86400,
		    s / 3600 % 24, s / 60 % 60);
	else if (s >= 3600)
		snprintf(out, len, "%lldh%02lldm%02llds", s / 3600, s / 60 % 60,
		    s % 60);
	else if (s >= 60)
		snprintf(out, len, "%lldm%02llds", s / 60, s % 60);
	else
		snprintf(out, len, "%llds", s);
}

/* IMSG_BLOCK_ADD from a netd. */
static void
block_add(struct parent *p, struct child *c, struct imsg *imsg)
{
	const struct cfg_auto_block *ab = &p->cfg->auto_block;
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	struct block_entry *e, *nb;
	struct block_addr a;
	struct reader rd;
	char addr[INET6_ADDRSTRLEN], until[32], dur[32];
	char *reason, *r;
	time_t now = time(NULL), t;
	size_t i, k, cap;
	int found;

	imsg_reader(imsg, &rd);
	block_addr_read(&rd, &a);
	reason = rd_str(&rd, IMAPGW_BLOCK_MAX_REASON);
	if (rd_end(&rd) == -1 || reason == NULL || imsg->fd != -1 ||
	    c->role != ROLE_NETD) {
		free(reason);
		proc_chan_fail(c->chan, "bad BLOCK_ADD frame");
		return;
	}
	/* Shown by imapgwctl as it is: no control bytes. */
	for (r = reason; *r; r++)
		if ((unsigned char)*r < 0x20 || *r == 0x7f)
			*r = '?';
	block_addr_text(&a, addr, sizeof(addr));
	memset(&ss, 0, sizeof(ss));
	if (a.family == 4) {
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, a.addr, 4);
	} else {
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, a.addr, 16);
	}
	for (i = 0; i < ab->nexceptions; i++) {
		if (cidr_match(&ab->exceptions[i], (struct sockaddr *)&ss)) {
			log_event(LOG_NOTICE, "site not blocked", "address",
			    addr, "exception", ab->exceptions[i].text, "reason",
			    reason, NULL);
			free(reason);
			return;
		}
	}
	t = now + (time_t)(ab->duration_ms / 1000);
	k = block_addr_find(
	    p->blocks, p->nblocks, sizeof(*p->blocks), &a, &found);
	if (found) {
		/* Again: extended, never shortened (a reload may have made
		 * the duration shorter). */
		e = &p->blocks[k];
		if (t > e->until)
			e->until = t;
		free(e->reason);
		e->reason = reason;
	} else {
		if (p->nblocks >= IMAPGW_BLOCK_MAX) {
			log_warnx("auto-block list full (%d addresses): not "
			          "blocking %s",
			    IMAPGW_BLOCK_MAX, addr);
			free(reason);
			return;
		}
		if (p->nblocks == p->capblocks) {
			cap = p->capblocks ? p->capblocks * 2 : 16;
			if (cap > IMAPGW_BLOCK_MAX)
				cap = IMAPGW_BLOCK_MAX;
			if ((nb = reallocarray(p->blocks, cap, sizeof(*nb))) ==
			    NULL) {
				log_warn(
				    "auto-block list: not blocking %s", addr);
				free(reason);
				return;
			}
			p->blocks = nb;
			p->capblocks = cap;
		}
		memmove(&p->blocks[k + 1], &p->blocks[k],
		    (p->nblocks - k) * sizeof(*p->blocks));
		p->nblocks++;
		e = &p->blocks[k];
		e->a = a;
		e->until = t;
		e->reason = reason;
	}
	fmt_localtime(e->until, until, sizeof(until));
	fmt_left(e->until - now, dur, sizeof(dur));
	log_event(LOG_NOTICE, "site blocked", "address", addr, "until", until,
	    "for", dur, "reason", e->reason, "from", c->chan->name, NULL);
	block_broadcast(p, &e->a, e->until);
	block_schedule(p);
}

int
block_remove(struct parent *p, const struct block_addr *a)
{
	char addr[INET6_ADDRSTRLEN];
	size_t k;
	int found;

	k = block_addr_find(
	    p->blocks, p->nblocks, sizeof(*p->blocks), a, &found);
	/* One that expired is gone, whether the timer ran yet or not. */
	if (!found || p->blocks[k].until <= time(NULL))
		return -1;
	block_addr_text(a, addr, sizeof(addr));
	log_event(LOG_NOTICE, "site unblocked", "address", addr, NULL);
	block_broadcast(p, a, 0);
	free(p->blocks[k].reason);
	memmove(&p->blocks[k], &p->blocks[k + 1],
	    (p->nblocks - k - 1) * sizeof(*p->blocks));
	p->nblocks--;
	block_schedule(p);
	return 0;
}

void
block_list(struct parent *p, struct buf *out)
{
	const struct block_entry *e;
	char addr[INET6_ADDRSTRLEN], until[32], left[32];
	time_t now = time(NULL);
	size_t i, n = 0;
	int w = (int)strlen("ADDRESS");

	/* The address column as wide as the longest address listed. */
	for (i = 0; i < p->nblocks; i++) {
		e = &p->blocks[i];
		if (e->until <= now)
			continue;
		block_addr_text(&e->a, addr, sizeof(addr));
		if ((int)strlen(addr) > w)
			w = (int)strlen(addr);
	}
	for (i = 0; i < p->nblocks; i++) {
		e = &p->blocks[i];
		if (e->until <= now)
			continue;
		if (n++ == 0)
			buf_printf(out, "%-*s %-10s %-19s %s\n", w, "ADDRESS",
			    "REMAINING", "UNTIL", "REASON");
		block_addr_text(&e->a, addr, sizeof(addr));
		fmt_left(e->until - now, left, sizeof(left));
		fmt_localtime(e->until, until, sizeof(until));
		buf_printf(out, "%-*s %-10s %-19s %s\n", w, addr, left, until,
		    e->reason);
	}
	if (n == 0)
		buf_printf(out, "no blocked sites\n");
}

static void
parent_dispatch_child(struct proc_chan *ch, struct imsg *imsg)
{
	struct child *c = ch->arg;
	struct parent *p = parent_env;
	struct reader rd;

	switch (imsg->hdr.type) {
	case IMSG_READY:
		if (imsg->datalen != 0) {
			proc_chan_fail(ch, "READY with payload");
			return;
		}
		c->ready = 1;
		/* A scand worker's READY may come before its pid. */
		if (c->pid > 0)
			log_debug("%s pid %ld ready", ch->name, (long)c->pid);
		else
			log_debug("%s ready", ch->name);
		if (c->role == ROLE_SCAND)
			workers_renew(p);
		break;
	case IMSG_STATUS:
		imsg_reader(imsg, &rd);
		rd_u32(&rd);
		c->sessions = rd_u32(&rd);
		c->total = rd_u64(&rd);
		if (rd_end(&rd) == -1) {
			proc_chan_fail(ch, "bad STATUS frame");
			return;
		}
		control_status_reply(p, c, imsg);
		break;
	case IMSG_PEER_LOST:
		peer_lost(p, c, imsg);
		break;
	case IMSG_BLOCK_ADD:
		block_add(p, c, imsg);
		break;
	case IMSG_CFG_APPLIED:
		if (imsg->datalen != sizeof(uint32_t)) {
			proc_chan_fail(ch, "bad CFG_APPLIED frame");
			return;
		}
		break;
	default:
		proc_chan_fail(ch, "unexpected %s from child",
		    imsg_type_name(imsg->hdr.type));
	}
}

/* The scand loader */

static int
loader_can_fork(struct parent *p)
{
	struct child *l = &p->loader;

	return child_alive(l) && l->ready && l->checks == 0 && !l->retiring;
}

/*
 * Order scand worker c from the loader (which can fork).  Its channel
 * gets the frames of any starting child at once; the worker reads them
 * when it runs.
 */
static void
worker_order(struct parent *p, struct child *c, int chanfd, int reportfd)
{
	struct child *l = &p->loader;
	struct buf b;
	char name[32];
	int r;

	child_name(c, name, sizeof(name));
	c->order = ++p->orders;
	c->order_reaps = p->reaps;
	c->gen = l->gen;
	c->pending = 1;
	buf_init(&b, 0);
	buf_add_u32(&b, (uint32_t)c->instance);
	if ((r = proc_compose(
	         l->chan, IMSG_LOADER_FD, c->order, reportfd, NULL, 0)) == -1)
		close(chanfd);
	else
		r = proc_compose(l->chan, IMSG_LOADER_FORK, c->order, chanfd,
		    buf_head(&b), buf_used(&b));
	buf_free(&b);
	if (r == -1) {
		log_warnx("cannot order %s from the loader", name);
		c->pending = 0;
		c->chan->dead = 1;
		proc_chan_free(c->chan);
		c->chan = NULL;
		close(c->reportfd);
		c->reportfd = -1;
		child_respawn_later(p, c);
		return;
	}
	log_debug("%s: fork order %u to the loader", name, c->order);
	child_send_config(p, c);
	child_connect_peers(p, c);
	child_send_start(p, c);
}

/* The loader can fork (again): the workers waiting get their orders. */
static void
loader_go(struct parent *p)
{
	struct child *c;
	int i;

	if (p->stopping || !loader_can_fork(p))
		return;
	for (i = 0; i < p->cfg->workers[ROLE_SCAND]; i++) {
		c = &p->children[ROLE_SCAND][i];
		if (c->waiting)
			child_spawn(p, c);
	}
	workers_renew(p);
}

/*
 * The loader's channel is gone: what it has not answered never will be.
 * A worker it forked meanwhile gets no frames and exits.  A config it
 * did not judge may need more than the running workers have: the next
 * loader loads it and they are replaced.
 */
static void
loader_gone(struct parent *p)
{
	struct child *c;
	int i;

	if (p->loader.checks > 0) {
		p->loader.checks = 0;
		p->need_gen = p->loader_gen + 1;
	}
	for (i = 0; i < IMAPGW_MAX_INSTANCES; i++) {
		c = &p->children[ROLE_SCAND][i];
		if (!c->pending)
			continue;
		c->pending = 0;
		if (c->chan != NULL)
			proc_chan_close(c->chan);
		if (c->reportfd != -1)
			close(c->reportfd);
		c->reportfd = -1;
		c->ready = 0;
		c->waiting = !p->stopping;
	}
}

/*
 * Replace, one at a time so that the others keep scanning meanwhile, the
 * scand workers that no longer fit the configuration: those a replaced
 * loader forked (a reload needed engines the old one had not loaded),
 * and those whose sandbox policy differs from the one the configuration
 * needs (network access for spamBlocker's spamd or rspamd, given or no
 * longer needed): a loaded seccomp filter cannot change.  The loader has
 * answered the config by then (loader_can_fork), so a new worker is
 * forked from engines that serve it.  A worker stops when the parent
 * closes its channel, and is respawned at once.
 */
static void
workers_renew(struct parent *p)
{
	struct child *c, *next = NULL;
	unsigned int want = sandbox_flags(ROLE_SCAND, p->cfg);
	char name[32];
	int i;

	if (p->stopping || !loader_can_fork(p))
		return;
	for (i = 0; i < p->cfg->workers[ROLE_SCAND]; i++) {
		c = &p->children[ROLE_SCAND][i];
		if (c->retiring || c->pending || c->waiting ||
		    (c->pid > 0 && !c->ready))
			return;
		if (next == NULL && c->pid > 0 && c->chan != NULL &&
		    (c->gen < p->need_gen || c->sbflags != want))
			next = c;
	}
	if (next == NULL)
		return;
	child_name(next, name, sizeof(name));
	if (next->gen < p->need_gen)
		log_info("replacing %s pid %ld: its engines are those of a "
		         "replaced loader",
		    name, (long)next->pid);
	else if (want & SANDBOX_NET)
		log_info("replacing %s pid %ld: the configuration uses "
		         "spamBlocker's spamd or rspamd engine, and its "
		         "sandbox allows no network access",
		    name, (long)next->pid);
	else
		log_info("replacing %s pid %ld: its sandbox allows network "
		         "access the configuration no longer needs",
		    name, (long)next->pid);
	next->retiring = 1;
	proc_chan_close(next->chan);
}

/* A child reaped before the loader told its pid. */
static int
reaped_take(struct parent *p, pid_t pid, uint64_t since, int *status)
{
	struct reaped *r;
	size_t i;

	for (i = 0; i < PARENT_REAPED; i++) {
		r = &p->reaped[i];
		if (r->pid == pid && r->seq > since) {
			*status = r->status;
			r->pid = 0;
			return 0;
		}
	}
	return -1;
}

static void
loader_forked(struct parent *p, struct proc_chan *ch, struct imsg *imsg)
{
	struct child *c;
	struct reader rd;
	uint32_t inst, pid;
	char name[32];
	int status;

	imsg_reader(imsg, &rd);
	inst = rd_u32(&rd);
	pid = rd_u32(&rd);
	if (rd_end(&rd) == -1 || inst >= IMAPGW_MAX_INSTANCES ||
	    pid > INT32_MAX) {
		proc_chan_fail(ch, "bad LOADER_FORKED frame");
		return;
	}
	c = &p->children[ROLE_SCAND][inst];
	child_name(c, name, sizeof(name));
	if (!c->pending || c->order != imsg->hdr.peerid) {
		log_debug(
		    "loader: %s pid %u from an order withdrawn", name, pid);
		return;
	}
	c->pending = 0;
	if (pid == 0) {
		log_warnx("the loader could not fork %s", name);
		if (c->chan != NULL) {
			c->chan->dead = 1;
			control_child_gone(p, c);
			proc_chan_free(c->chan);
			c->chan = NULL;
		}
		if (c->reportfd != -1)
			close(c->reportfd);
		c->reportfd = -1;
		child_respawn_later(p, c);
		return;
	}
	c->pid = (pid_t)pid;
	c->started = time(NULL);
	log_info("started %s pid %ld", name, (long)c->pid);
	if (reaped_take(p, c->pid, c->order_reaps, &status) == 0)
		child_reaped(p, c, status);
	else if (c->chan == NULL && !p->stopping) {
		log_debug("%s pid %ld: channel closed; terminating it", name,
		    (long)c->pid);
		kill(c->pid, SIGKILL);
	}
	/* Its READY may have come first. */
	workers_renew(p);
}

/*
 * A new config: the loader answers whether its engines serve it, and
 * until then forks no worker.  With no loader to ask, the next one loads
 * it and the workers of the older ones are replaced, to be safe.
 */
static void
loader_reload(struct parent *p)
{
	struct child *l = &p->loader;

	if (l->retiring)
		return; /* being replaced already */
	if (child_alive(l) && child_send_config(p, l) == 0) {
		l->checks++;
		return;
	}
	p->need_gen = p->loader_gen + 1;
	if (child_alive(l)) {
		l->retiring = 1;
		l->ready = 0;
		proc_chan_close(l->chan);
	}
}

/* A reload needs what this loader has not loaded: a new one loads it. */
static void
loader_stale(struct parent *p, struct proc_chan *ch, struct imsg *imsg)
{
	struct child *l = ch->arg;
	struct reader rd;
	char *what;

	imsg_reader(imsg, &rd);
	what = rd_str(&rd, 2048);
	if (rd_end(&rd) == -1 || l->checks == 0) {
		free(what);
		proc_chan_fail(ch, "bad LOADER_STALE frame");
		return;
	}
	log_info("the configuration needs %s, which the loader pid %ld has "
	         "not loaded: starting a new loader, then replacing the scand "
	         "workers one by one",
	    what, (long)l->pid);
	free(what);
	/* The next loader's generation; the old one ends when its
	 * channel closes and is respawned at once. */
	p->need_gen = p->loader_gen + 1;
	l->retiring = 1;
	l->ready = 0;
	proc_chan_close(ch);
}

static void
parent_dispatch_loader(struct proc_chan *ch, struct imsg *imsg)
{
	struct child *l = ch->arg;
	struct parent *p = parent_env;

	switch (imsg->hdr.type) {
	case IMSG_READY:
		if (imsg->datalen != 0 || l->ready) {
			proc_chan_fail(ch, "unexpected READY");
			return;
		}
		l->ready = 1;
		log_info(
		    "loader pid %ld ready: scand engines loaded", (long)l->pid);
		loader_go(p);
		break;
	case IMSG_CFG_APPLIED:
		if (imsg->datalen != sizeof(uint32_t) || l->checks == 0) {
			proc_chan_fail(ch, "bad CFG_APPLIED frame");
			return;
		}
		l->checks--;
		loader_go(p);
		break;
	case IMSG_LOADER_STALE:
		loader_stale(p, ch, imsg);
		break;
	case IMSG_LOADER_FORKED:
		loader_forked(p, ch, imsg);
		break;
	default:
		proc_chan_fail(ch, "unexpected %s from the loader",
		    imsg_type_name(imsg->hdr.type));
	}
}

static void
parent_child_closed(struct proc_chan *ch)
{
	struct child *c = ch->arg;

	/* A child whose channel is gone is of no use; the SIGCHLD path
	 * logs and respawns it.  One retiring stops by itself. */
	if (c->pid > 0 && !parent_env->stopping && !c->retiring) {
		log_debug("%s pid %ld: channel closed; terminating it",
		    ch->name, (long)c->pid);
		kill(c->pid, SIGKILL);
	}
	control_child_gone(parent_env, c);
	proc_chan_free(ch);
	c->chan = NULL;
	if (c->is_loader) {
		c->ready = 0;
		loader_gone(parent_env);
	}
}

static void
child_exec(struct parent *p, struct child *c, int chanfd, int reportfd)
{
	char inst[16];
	char *argv[8];
	int a, b, n = 0;
	sigset_t set;

	/* Move the two fds above 4 first, so dup2 cannot clobber them. */
	if ((a = fcntl(chanfd, F_DUPFD, 10)) == -1 ||
	    (b = fcntl(reportfd, F_DUPFD, 10)) == -1 ||
	    dup2(a, IMAPGW_PARENT_FD) == -1 || dup2(b, IMAPGW_REPORT_FD) == -1)
		_exit(1);
	close(a);
	close(b);
	/* Children stop when the parent closes their channel; terminal
	 * signals are the parent's to handle. */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&set);
	sigprocmask(SIG_SETMASK, &set, NULL);
	snprintf(inst, sizeof(inst), "%d", c->instance);
	argv[n++] = "imapgwd";
	argv[n++] = "-P";
	/* The loader's arguments leave room for its workers' "-P scand
	 * -I 63": they show themselves in the same space. */
	argv[n++] = c->is_loader ? "loader" : (char *)role_name(c->role);
	argv[n++] = "-I";
	argv[n++] = inst;
	if (p->cfg->log_target == LOGT_STDERR)
		argv[n++] = "-d";
	if (p->verbose)
		argv[n++] = "-v";
	argv[n] = NULL;
	execv(p->exe, argv);
	_exit(127);
}

/*
 * Start child c: its channel and report pipe, then fork and exec, or for
 * a scand worker an order to the loader.  The frames every child needs
 * at start (config, peers, listeners, START) queue on its channel.
 */
static void
child_spawn(struct parent *p, struct child *c)
{
	char name[32];
	int sp[2], rp[2];
	pid_t pid = 0;

	child_name(c, name, sizeof(name));
	if (c->role == ROLE_SCAND && !c->is_loader && !loader_can_fork(p)) {
		if (!c->waiting)
			log_info("%s waits for the loader", name);
		c->waiting = 1;
		return;
	}
	c->waiting = 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	        sp) == -1)
		fatal("socketpair");
	if (pipe2(rp, O_CLOEXEC | O_NONBLOCK) == -1)
		fatal("pipe2");
	c->chan = proc_chan_new(p->base, sp[0], 1, name,
	    c->is_loader ? parent_dispatch_loader : parent_dispatch_child,
	    parent_child_closed, c);
	if (c->chan == NULL)
		fatal("channel for %s", name);
	c->chan->role = c->role;
	c->chan->instance = c->instance;
	c->reportfd = rp[0];
	c->started = time(NULL);
	c->ready = 0;
	c->sessions = 0;
	c->total = 0;
	c->retiring = 0;
	/* The child enters its sandbox with the config sent below, the
	 * last before its START: it computes the same flags. */
	c->sbflags = c->is_loader ? 0 : sandbox_flags(c->role, p->cfg);
	if (c->role == ROLE_SCAND && !c->is_loader) {
		worker_order(p, c, sp[1], rp[1]);
		return;
	}
	switch ((pid = fork())) {
	case -1:
		fatal("fork");
	case 0:
		child_exec(p, c, sp[1], rp[1]);
		_exit(127);
	}
	close(sp[1]);
	close(rp[1]);
	c->pid = pid;
	log_info("started %s pid %ld", name, (long)pid);
	child_send_config(p, c);
	if (c->is_loader) {
		c->gen = ++p->loader_gen;
		c->checks = 0;
		return;
	}
	child_connect_peers(p, c);
	if (c->role == ROLE_NETD) {
		child_send_listeners(p, c);
		block_send_all(p, c);
	}
	child_send_start(p, c);
}

static void
respawn_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct child *c = arg;

	if (!parent_env->stopping && c->pid == 0 && !c->pending &&
	    c->instance < parent_env->cfg->workers[c->role])
		child_spawn(parent_env, c);
}

static const char *
signal_name(int sig)
{
	static char buf[16];
	const char *s = sigabbrev_np(sig);

	if (s) {
		snprintf(buf, sizeof(buf), "SIG%s", s);
		return buf;
	}
	snprintf(buf, sizeof(buf), "%d", sig);
	return buf;
}

/* Respawn c after a delay that grows while it keeps dying right after
 * its start. */
static void
child_respawn_later(struct parent *p, struct child *c)
{
	struct timeval tv = {0, 0};
	time_t lived = time(NULL) - c->started;
	char name[32];
	int delay;

	if (p->stopping)
		return;
	if (c->retiring) {
		/* Replaced on purpose: at once, no penalty. */
		c->retiring = 0;
		c->quickdeaths = 0;
	} else if (lived < RESPAWN_QUICK)
		c->quickdeaths++;
	else
		c->quickdeaths = 0;
	delay = c->quickdeaths ? 1 << (c->quickdeaths - 1) : 0;
	if (delay > RESPAWN_MAX_DELAY)
		delay = RESPAWN_MAX_DELAY;
	tv.tv_sec = delay;
	log_info(
	    "respawning %s in %d s", child_name(c, name, sizeof(name)), delay);
	evtimer_add(c->respawn, &tv);
}

static void
child_reaped(struct parent *p, struct child *c, int status)
{
	char pid[16], name[32], sysname[64] = "unknown";
	const char *role = child_role_label(c);
	int nr;

	snprintf(pid, sizeof(pid), "%ld", (long)c->pid);
	child_name(c, name, sizeof(name));
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) {
		if (c->reportfd != -1 &&
		    read(c->reportfd, &nr, sizeof(nr)) == sizeof(nr))
			snprintf(sysname, sizeof(sysname), "%s",
			    sandbox_syscall_name(nr));
		log_event(LOG_ERR, "sandbox violation", "role", role,
		    "instance", name, "pid", pid, "syscall", sysname, NULL);
	}
	if (WIFSIGNALED(status))
		log_event(p->stopping ? LOG_INFO : LOG_WARNING, "child died",
		    "role", role, "instance", name, "pid", pid, "signal",
		    signal_name(WTERMSIG(status)), NULL);
	else if (c->retiring && WEXITSTATUS(status) == 0)
		log_info("%s pid %s stopped: replaced", name, pid);
	else if (!p->stopping || WEXITSTATUS(status) != 0) {
		char code[16];

		snprintf(code, sizeof(code), "%d", WEXITSTATUS(status));
		log_event(p->stopping ? LOG_INFO : LOG_WARNING, "child exited",
		    "role", role, "instance", name, "pid", pid, "status", code,
		    NULL);
	}
	if (c->reportfd != -1)
		close(c->reportfd);
	c->reportfd = -1;
	c->pid = 0;
	c->ready = 0;
	if (c->chan) {
		c->chan->dead = 1;
		control_child_gone(p, c);
		proc_chan_free(c->chan);
		c->chan = NULL;
	}
	if (c->is_loader)
		loader_gone(p);
	child_respawn_later(p, c);
}

static struct child *
child_by_pid(struct parent *p, pid_t pid)
{
	int r, i;

	if (pid <= 0)
		return NULL;
	if (p->loader.pid == pid)
		return &p->loader;
	for (r = ROLE_NETD; r < ROLE_MAX; r++)
		for (i = 0; i < IMAPGW_MAX_INSTANCES; i++)
			if (p->children[r][i].pid == pid)
				return &p->children[r][i];
	return NULL;
}

/*
 * Every child, and as a subreaper every orphan below us: a scand worker
 * whose pid the loader has not told yet is remembered for when it does.
 */
static void
reap_children(struct parent *p)
{
	struct reaped *r;
	struct child *c;
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (!WIFEXITED(status) && !WIFSIGNALED(status))
			continue;
		p->reaps++;
		if ((c = child_by_pid(p, pid)) != NULL) {
			child_reaped(p, c, status);
			continue;
		}
		r = &p->reaped[p->reaps % PARENT_REAPED];
		r->pid = pid;
		r->status = status;
		r->seq = p->reaps;
	}
}

static int
children_running(struct parent *p)
{
	int r, i, n = 0;

	for (r = ROLE_NETD; r < ROLE_MAX; r++)
		for (i = 0; i < IMAPGW_MAX_INSTANCES; i++)
			if (p->children[r][i].pid > 0)
				n++;
	if (p->loader.pid > 0)
		n++;
	return n;
}

/* Shutdown: close every channel (children exit on EOF), wait a little,
 * then kill what is left. */
static void
stop_timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct parent *p = arg;
	int r, i;

	reap_children(p);
	for (r = ROLE_NETD; r < ROLE_MAX; r++)
		for (i = 0; i < IMAPGW_MAX_INSTANCES; i++)
			if (p->children[r][i].pid > 0) {
				log_warnx("%s-%d pid %ld did not stop; killing",
				    role_name(r), i,
				    (long)p->children[r][i].pid);
				kill(p->children[r][i].pid, SIGKILL);
			}
	if (p->loader.pid > 0) {
		log_warnx("loader pid %ld did not stop; killing",
		    (long)p->loader.pid);
		kill(p->loader.pid, SIGKILL);
	}
	event_base_loopexit(p->base, NULL);
}

static void
parent_stop(struct parent *p, int sig)
{
	struct timeval tv = {5, 0};
	struct child *c;
	int r, i;

	if (p->stopping)
		return;
	p->stopping = 1;
	log_info("%s: stopping", signal_name(sig));
	for (r = ROLE_NETD; r < ROLE_MAX; r++) {
		for (i = 0; i < IMAPGW_MAX_INSTANCES; i++) {
			c = &p->children[r][i];
			evtimer_del(c->respawn);
			c->waiting = 0;
			c->pending = 0;
			if (c->chan) {
				c->chan->dead = 1;
				control_child_gone(p, c);
				proc_chan_free(c->chan);
				c->chan = NULL;
			}
		}
	}
	/* The loader reads no frame while it loads: stop it now. */
	c = &p->loader;
	evtimer_del(c->respawn);
	if (c->pid > 0 && !c->ready)
		kill(c->pid, SIGTERM);
	if (c->chan) {
		c->chan->dead = 1;
		proc_chan_free(c->chan);
		c->chan = NULL;
	}
	control_cleanup(p);
	if (children_running(p) == 0) {
		event_base_loopexit(p->base, NULL);
		return;
	}
	p->stopev = evtimer_new(p->base, stop_timeout_cb, p);
	evtimer_add(p->stopev, &tv);
}

/* Settings that shape the processes themselves need a restart. */
static void
reload_keep(struct config *old, struct config *new)
{
	int r;

#define KEEP_STR(f)                                                     \
	if (strcmp(old->f, new->f) != 0) {                              \
		log_warnx("reload: changing '" #f "' needs a restart; " \
		          "keeping '%s'",                               \
		    old->f);                                            \
		free(new->f);                                           \
		new->f = strdup(old->f);                                \
	}
	KEEP_STR(user)
	KEEP_STR(chroot)
	KEEP_STR(state_dir)
	KEEP_STR(control_socket)
#undef KEEP_STR
	for (r = ROLE_NETD; r < ROLE_MAX; r++) {
		if (old->workers[r] != new->workers[r]) {
			log_warnx("reload: changing workers.%s needs a "
			          "restart; keeping %d",
			    role_name(r), old->workers[r]);
			new->workers[r] = old->workers[r];
		}
	}
}

void
parent_reload(struct parent *p)
{
	struct config *cfg, *old = p->cfg;
	struct child *c;
	struct buf errs;
	char *line, *save = NULL;
	int r, i;

	log_info("reloading configuration from %s",
	    p->cfgpath ? p->cfgpath : "<built-in>");
	buf_init(&errs, 0);
	cfg = parent_load_config(p->cfgpath, p->debug, p->verbose, &errs);
	if (cfg == NULL) {
		buf_add_u8(&errs, '\0');
		for (line = strtok_r((char *)buf_head(&errs), "\n", &save);
		     line; line = strtok_r(NULL, "\n", &save))
			log_warnx("reload: %s", line);
		log_warnx("reload failed; keeping the running configuration "
		          "(generation %u)",
		    old->generation);
		buf_free(&errs);
		return;
	}
	buf_free(&errs);
	reload_keep(old, cfg);
	if (listeners_update(p, cfg) == -1) {
		log_warnx("reload failed: cannot open listeners; keeping the "
		          "running configuration");
		config_free(cfg);
		return;
	}
	cfg->generation = old->generation + 1;
	p->cfg = cfg;
	log_init(cfg->log_target, cfg->log_format, cfg->log_level, "parent");
	loader_reload(p);
	for (r = ROLE_NETD; r < ROLE_MAX; r++) {
		for (i = 0; i < cfg->workers[r]; i++) {
			c = &p->children[r][i];
			if (!child_alive(c))
				continue;
			child_send_config(p, c);
			if (r == ROLE_NETD)
				child_send_listeners(p, c);
		}
	}
	config_free(old);
	log_info("configuration reloaded (generation %u)", cfg->generation);
}

static void
signal_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct parent *p = arg;

	switch (sig) {
	case SIGTERM:
	case SIGINT:
		parent_stop(p, (int)sig);
		break;
	case SIGHUP:
		if (!p->stopping)
			parent_reload(p);
		break;
	case SIGCHLD:
		reap_children(p);
		if (p->stopping && children_running(p) == 0)
			event_base_loopexit(p->base, NULL);
		break;
	}
}

static void
start_children(struct parent *p)
{
	/* scand and tlsd first, so each netd gets its peers at start. */
	static const int order[] = {ROLE_SCAND, ROLE_TLSD, ROLE_NETD};
	struct child *c;
	size_t k;
	int i;

	/* The loader before all: the scand workers wait for it. */
	c = &p->loader;
	c->role = ROLE_SCAND;
	c->instance = 0;
	c->is_loader = 1;
	c->reportfd = -1;
	c->respawn = evtimer_new(p->base, respawn_cb, c);
	child_spawn(p, c);
	for (k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
		for (i = 0; i < IMAPGW_MAX_INSTANCES; i++) {
			c = &p->children[order[k]][i];
			c->role = order[k];
			c->instance = i;
			c->reportfd = -1;
			c->respawn = evtimer_new(p->base, respawn_cb, c);
			if (i < p->cfg->workers[order[k]])
				child_spawn(p, c);
		}
	}
}

static int
parent_setup(struct parent *p)
{
	ssize_t n;

	if ((n = readlink("/proc/self/exe", p->exe, sizeof(p->exe) - 1)) <= 0)
		fatal("cannot find my own binary (/proc/self/exe)");
	p->exe[n] = '\0';
	/* scand workers are forked by the loader and re-parented to us. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == -1)
		fatal("prctl PR_SET_CHILD_SUBREAPER");
	if (lookup_user(p, p->cfg->user) == -1 || prepare_dirs(p) == -1)
		return -1;
	if (listeners_update(p, p->cfg) == -1)
		return -1;
	if (control_init(p) == -1)
		return -1;
	return 0;
}

int
parent_main(int argc, char **argv)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD};
	struct parent p;
	struct buf errs;
	int ch, checkonly = 0;
	size_t i;

	memset(&p, 0, sizeof(p));
	parent_env = &p;
	while ((ch = getopt(argc, argv, "df:nv")) != -1) {
		switch (ch) {
		case 'd':
			p.debug = 1;
			break;
		case 'f':
			p.cfgpath = optarg;
			break;
		case 'n':
			checkonly = 1;
			break;
		case 'v':
			p.verbose = 1;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	log_init(
	    LOGT_STDERR, LOGF_TEXT, p.verbose ? LOG_DEBUG : LOG_INFO, "parent");
	if (p.cfgpath == NULL && access(DEFAULT_CONFIG, F_OK) == 0)
		p.cfgpath = DEFAULT_CONFIG;
	buf_init(&errs, 0);
	p.cfg = parent_load_config(p.cfgpath, p.debug, p.verbose, &errs);
	if (p.cfg == NULL) {
		print_errors(&errs);
		buf_free(&errs);
		return 1;
	}
	buf_free(&errs);
	if (checkonly) {
		printf("configuration OK\n");
		config_free(p.cfg);
		return 0;
	}
	if (geteuid() != 0) {
		fprintf(stderr,
		    "imapgwd: must be started as root: it opens "
		    "listeners and then runs its children as user "
		    "'%s' in %s\n",
		    p.cfg->user, p.cfg->chroot);
		return 1;
	}
	if (!p.debug && daemon(0, 0) == -1)
		fatal("daemon");
	log_init(
	    p.cfg->log_target, p.cfg->log_format, p.cfg->log_level, "parent");
	if (p.cfgpath == NULL)
		log_info("no %s: using the built-in default configuration",
		    DEFAULT_CONFIG);
	signal(SIGPIPE, SIG_IGN);
	p.started = time(NULL);
	p.cfg->generation = 1;
	if ((p.base = event_base_new()) == NULL)
		fatalx("event_base_new");
	if ((p.blockev = evtimer_new(p.base, block_expire_cb, &p)) == NULL)
		fatalx("evtimer_new");
	if (parent_setup(&p) == -1)
		fatalx("cannot start; see the messages above");
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		p.sigev[i] = evsignal_new(p.base, sigs[i], signal_cb, &p);
		evsignal_add(p.sigev[i], NULL);
	}
	log_info("imapgwd %s starting: config %s, %d netd, %d scand, %d tlsd",
	    IMAPGW_VERSION, p.cfgpath ? p.cfgpath : "<built-in>",
	    p.cfg->workers[ROLE_NETD], p.cfg->workers[ROLE_SCAND],
	    p.cfg->workers[ROLE_TLSD]);
	start_children(&p);
	event_base_dispatch(p.base);
	block_free(&p);
	log_info("stopped");
	return 0;
}
