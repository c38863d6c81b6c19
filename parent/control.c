/*
 * The control socket: imapgwctl asks, the parent answers with text frames
 * and an exit code.  Only root may connect (mode 0600, peer uid checked).
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "log.h"
#include "parent.h"

#define CTL_STATUS_TIMEOUT 2 /* seconds to wait for netd counters */
#define CTL_MAX_CONNS 16

struct ctl_conn {
	struct ctl_conn *next;
	struct proc_chan *chan;
	struct event *timer;
	int waiting; /* STATUS replies still expected */
	int closing;
};

static struct ctl_conn *ctl_conns;
static int nctl_conns;

static void
ctl_send_text(struct ctl_conn *cc, struct buf *out, uint32_t code)
{
	size_t off = 0, n;

	while (off < buf_used(out)) {
		n = buf_used(out) - off;
		if (n > IMSG_MAX_PAYLOAD)
			n = IMSG_MAX_PAYLOAD;
		proc_compose(
		    cc->chan, IMSG_CTL_TEXT, 0, -1, buf_head(out) + off, n);
		off += n;
	}
	proc_compose(cc->chan, IMSG_CTL_END, 0, -1, &code, sizeof(code));
}

static void
fmt_uptime(char *s, size_t len, time_t secs)
{
	snprintf(s, len, "%ldd%02ld:%02ld:%02ld", (long)(secs / 86400),
	    (long)(secs / 3600 % 24), (long)(secs / 60 % 60),
	    (long)(secs % 60));
}

static const char *
child_state(const struct child *c)
{
	if (c->is_loader) {
		if (c->pid == 0)
			return "down";
		if (c->retiring)
			return "replaced";
		return c->ready ? "ready" : "loading";
	}
	if (c->pid == 0)
		return c->waiting   ? "waiting"
		       : c->pending ? "starting"
		                    : "down";
	return c->ready ? "ready" : "starting";
}

/* The scand loader: one row after the scand workers it forks. */
static void
ctl_status_loader(struct parent *p, struct buf *out, time_t now)
{
	struct child *l = &p->loader;
	char up[32];

	fmt_uptime(up, sizeof(up), l->pid ? now - l->started : 0);
	buf_printf(out, "%-6s %4s %8ld %14s %-8s %9s %9s\n", "loader", "-",
	    (long)l->pid, up, child_state(l), "-", "-");
}

static void
ctl_status_finish(struct parent *p, struct ctl_conn *cc)
{
	struct child *c;
	struct buf out;
	char up[32];
	uint64_t sessions = 0, total = 0;
	time_t now = time(NULL);
	int r, i;

	cc->waiting = 0;
	evtimer_del(cc->timer);
	buf_init(&out, 0);
	fmt_uptime(up, sizeof(up), now - p->started);
	buf_printf(&out, "imapgwd %s pid %ld up %s config %s generation %u\n",
	    IMAPGW_VERSION, (long)getpid(), up,
	    p->cfgpath ? p->cfgpath : "<built-in>", p->cfg->generation);
	buf_printf(&out, "%-6s %4s %8s %14s %-8s %9s %9s\n", "ROLE", "INST",
	    "PID", "UPTIME", "STATE", "SESSIONS", "TOTAL");
	for (r = ROLE_NETD; r < ROLE_MAX; r++) {
		for (i = 0; i < p->cfg->workers[r]; i++) {
			c = &p->children[r][i];
			fmt_uptime(
			    up, sizeof(up), c->pid ? now - c->started : 0);
			buf_printf(&out, "%-6s %4d %8ld %14s %-8s",
			    role_name(r), i, (long)c->pid, up, child_state(c));
			if (r == ROLE_NETD || r == ROLE_TLSD) {
				/* tlsd: its TLS connections (handshaking
				 * or relaying), not IMAP sessions. */
				buf_printf(&out, " %9u %9llu\n", c->sessions,
				    (unsigned long long)c->total);
				if (r == ROLE_NETD) {
					sessions += c->sessions;
					total += c->total;
				}
			} else
				buf_printf(&out, " %9s %9s\n", "-", "-");
		}
		if (r == ROLE_SCAND)
			ctl_status_loader(p, &out, now);
	}
	buf_printf(&out, "sessions: %llu active, %llu since start\n",
	    (unsigned long long)sessions, (unsigned long long)total);
	ctl_send_text(cc, &out, 0);
	buf_free(&out);
}

static void
ctl_status_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct ctl_conn *cc = arg;

	if (cc->waiting)
		ctl_status_finish(parent_env, cc);
}

static void
ctl_status(struct parent *p, struct ctl_conn *cc)
{
	struct timeval tv = {CTL_STATUS_TIMEOUT, 0};
	struct child *c;
	uint32_t id = 0;
	int i, k, r;

	cc->waiting = 0;
	/* netd counts IMAP sessions, tlsd TLS connections. */
	for (k = 0; k < 2; k++) {
		r = k == 0 ? ROLE_NETD : ROLE_TLSD;
		for (i = 0; i < p->cfg->workers[r]; i++) {
			c = &p->children[r][i];
			if (c->chan == NULL || !c->ready)
				continue;
			if (proc_compose(c->chan, IMSG_STATUS_REQ, 0, -1, &id,
			        sizeof(id)) == 0) {
				c->status_pending = 1;
				cc->waiting++;
			}
		}
	}
	if (cc->waiting == 0) {
		ctl_status_finish(p, cc);
		return;
	}
	evtimer_add(cc->timer, &tv);
}

/* A netd answered: count it against every status request waiting. */
void
control_status_reply(struct parent *p, struct child *c, struct imsg *imsg)
{
	struct ctl_conn *cc, *next;

	if (!c->status_pending)
		return;
	c->status_pending = 0;
	for (cc = ctl_conns; cc; cc = next) {
		next = cc->next;
		if (cc->waiting > 0 && --cc->waiting == 0)
			ctl_status_finish(p, cc);
	}
}

void
control_child_gone(struct parent *p, struct child *c)
{
	control_status_reply(p, c, NULL);
}

/* Which process holds which key: tlsd every certificate of the running
 * configuration (subject and fingerprint as the parent read them at
 * load), the others none. */
static void
ctl_audit_keys(struct parent *p, const struct child *c, struct buf *out)
{
	const struct cfg_cert *crt;
	size_t i;

	if (c->role != ROLE_TLSD) {
		buf_printf(out, "audit %s pid %d: no key material\n",
		    role_name(c->role), (int)c->pid);
		return;
	}
	if (p->cfg->ncerts == 0)
		buf_printf(out,
		    "audit tlsd pid %d: holds certificates: none (no key "
		    "material)\n",
		    (int)c->pid);
	for (i = 0; i < p->cfg->ncerts; i++) {
		crt = &p->cfg->certs[i];
		buf_printf(out,
		    "audit tlsd pid %d: holds certificates: %s (subject %s, "
		    "SHA-256 fingerprint %s) with its key\n",
		    (int)c->pid, crt->name,
		    crt->subject ? crt->subject : "unknown",
		    crt->fingerprint ? crt->fingerprint : "unknown");
	}
}

static void
ctl_audit(struct parent *p, struct ctl_conn *cc)
{
	struct child *c;
	struct buf out;
	int r, i, d, diffs = 0, failed = 0;

	buf_init(&out, 0);
	for (r = ROLE_NETD; r < ROLE_MAX; r++) {
		for (i = 0; i < p->cfg->workers[r]; i++) {
			c = &p->children[r][i];
			if (c->pid <= 0 || !c->ready) {
				buf_printf(&out, "%s-%d: not running\n\n",
				    role_name(r), i);
				failed++;
				continue;
			}
			d = audit_child(c->pid, c->role, c->sbflags,
			    child_root(p, c->role), p->uid, p->gid, &out);
			if (d < 0)
				failed++;
			else
				diffs += d;
			ctl_audit_keys(p, c, &out);
			buf_printf(&out, "\n");
		}
	}
	/* Nothing to compare: the loader has no sandbox, by design. */
	if (p->loader.pid > 0)
		buf_printf(&out,
		    "loader pid %ld: unconfined by design: root, no chroot, "
		    "no seccomp filter; it loads the scand engines and only "
		    "forks the scand workers, which sandbox themselves "
		    "(audited above)\n\n",
		    (long)p->loader.pid);
	else
		buf_printf(&out, "loader: not running\n\n");
	buf_printf(&out, "audit: %d differences, %d processes not audited\n",
	    diffs, failed);
	ctl_send_text(cc, &out, (diffs || failed) ? 1 : 0);
	buf_free(&out);
}

/* imapgwctl unblock: u8 family and the address bytes. */
static void
ctl_unblock(struct parent *p, struct ctl_conn *cc, struct imsg *imsg)
{
	struct block_addr a;
	struct reader rd;
	struct buf out;
	char addr[64];

	imsg_reader(imsg, &rd);
	if (block_addr_read(&rd, &a) == -1 || rd_end(&rd) == -1) {
		proc_chan_fail(cc->chan, "bad CTL_UNBLOCK frame");
		return;
	}
	block_addr_text(&a, addr, sizeof(addr));
	buf_init(&out, 0);
	if (block_remove(p, &a) == 0) {
		buf_printf(&out, "%s unblocked\n", addr);
		ctl_send_text(cc, &out, 0);
	} else {
		buf_printf(&out, "%s is not on the auto-block list\n", addr);
		ctl_send_text(cc, &out, 1);
	}
	buf_free(&out);
}

#ifdef IMAPGW_TEST_HOOKS
static void
ctl_violate(struct parent *p, struct ctl_conn *cc, struct imsg *imsg)
{
	struct reader rd;
	struct buf out;
	char *name;
	int role;

	imsg_reader(imsg, &rd);
	name = rd_str(&rd, 16);
	buf_init(&out, 0);
	if (rd_end(&rd) == -1 || (role = role_from_name(name)) <= 0 ||
	    p->children[role][0].chan == NULL) {
		buf_printf(&out, "no such running role\n");
		ctl_send_text(cc, &out, 1);
	} else {
		proc_compose(p->children[role][0].chan, IMSG_TEST_VIOLATE, 0,
		    -1, NULL, 0);
		buf_printf(&out, "%s-0 pid %ld told to make a forbidden call\n",
		    name, (long)p->children[role][0].pid);
		ctl_send_text(cc, &out, 0);
	}
	free(name);
	buf_free(&out);
}
#endif

static void
ctl_dispatch(struct proc_chan *ch, struct imsg *imsg)
{
	struct ctl_conn *cc = ch->arg;
	struct parent *p = parent_env;
	struct buf out;

	switch (imsg->hdr.type) {
	case IMSG_CTL_STATUS:
		ctl_status(p, cc);
		break;
	case IMSG_CTL_AUDIT:
		ctl_audit(p, cc);
		break;
	case IMSG_CTL_RELOAD:
		parent_reload(p);
		buf_init(&out, 0);
		buf_printf(&out,
		    "reload requested; generation now %u (see "
		    "the log for errors)\n",
		    p->cfg->generation);
		ctl_send_text(cc, &out, 0);
		buf_free(&out);
		break;
	case IMSG_CTL_BLOCKED:
		if (imsg->datalen != 0) {
			proc_chan_fail(ch, "bad CTL_BLOCKED frame");
			return;
		}
		buf_init(&out, 0);
		block_list(p, &out);
		ctl_send_text(cc, &out, 0);
		buf_free(&out);
		break;
	case IMSG_CTL_UNBLOCK:
		ctl_unblock(p, cc, imsg);
		break;
#ifdef IMAPGW_TEST_HOOKS
	case IMSG_CTL_VIOLATE:
		ctl_violate(p, cc, imsg);
		break;
#endif
	default:
		proc_chan_fail(ch, "unexpected %s on control socket",
		    imsg_type_name(imsg->hdr.type));
	}
}

static void
ctl_closed(struct proc_chan *ch)
{
	struct ctl_conn *cc = ch->arg, **pp;

	for (pp = &ctl_conns; *pp; pp = &(*pp)->next)
		if (*pp == cc) {
			*pp = cc->next;
			break;
		}
	nctl_conns--;
	event_free(cc->timer);
	proc_chan_free(ch);
	free(cc);
}

static void
ctl_accept(evutil_socket_t lfd, short ev, void *arg)
{
	struct parent *p = arg;
	struct ctl_conn *cc;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int fd;

	fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd == -1)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1 ||
	    cred.uid != 0) {
		log_warnx(
		    "control: refused connection from uid %ld", (long)cred.uid);
		close(fd);
		return;
	}
	if (nctl_conns >= CTL_MAX_CONNS ||
	    (cc = calloc(1, sizeof(*cc))) == NULL) {
		close(fd);
		return;
	}
	cc->chan = proc_chan_new(
	    p->base, fd, 0, "control", ctl_dispatch, ctl_closed, cc);
	cc->timer = evtimer_new(p->base, ctl_status_timeout, cc);
	if (cc->chan == NULL || cc->timer == NULL) {
		if (cc->timer)
			event_free(cc->timer);
		close(fd);
		free(cc);
		return;
	}
	cc->next = ctl_conns;
	ctl_conns = cc;
	nctl_conns++;
}

int
control_init(struct parent *p)
{
	struct sockaddr_un sun;
	mode_t old;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s",
	        p->cfg->control_socket) >= (int)sizeof(sun.sun_path)) {
		log_warnx(
		    "control socket path too long: %s", p->cfg->control_socket);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	/* A live daemon answers on it; a stale socket file does not. */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		log_warnx("control socket %s is in use: is imapgwd already "
		          "running?",
		    sun.sun_path);
		close(fd);
		return -1;
	}
	unlink(sun.sun_path);
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		umask(old);
		log_warn("control socket %s", sun.sun_path);
		close(fd);
		return -1;
	}
	umask(old);
	chmod(sun.sun_path, 0600);
	if (listen(fd, 16) == -1) {
		close(fd);
		return -1;
	}
	p->ctlfd = fd;
	p->ctlev = event_new(p->base, fd, EV_READ | EV_PERSIST, ctl_accept, p);
	event_add(p->ctlev, NULL);
	return 0;
}

void
control_cleanup(struct parent *p)
{
	if (p->ctlev == NULL)
		return;
	event_free(p->ctlev);
	p->ctlev = NULL;
	close(p->ctlfd);
	unlink(p->cfg->control_socket);
}
