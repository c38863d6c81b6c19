/*
 * The sandbox and its audit, on real processes: each case forks a child
 * that enters the sandbox of a role and then does one thing.  Needs root.
 */
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <seccomp.h>

#include "../../scand/scand.h"
#include "audit.h"
#include "buf.h"
#include "config.h"
#include "imapgw.h"
#include "log.h"
#include "sandbox.h"
#include "test.h"
#include "vcache.h"

#define NOBODY 65534
#define KID_RES 5 /* child's write end: results */
#define KID_GO 6 /* child's read end: commands */

/* What a sandboxed child does; it writes results to KID_RES. */
typedef void (*kid_fn)(void);

struct kid {
	pid_t pid;
	int report; /* read end of the child's IMAPGW_REPORT_FD */
	int res; /* read end of KID_RES */
	int go; /* write end of KID_GO */
	int status;
};

/* A verdict cache the child opens before its sandbox, as netd does. */
static const char *kid_vcdir;
static struct vcache *kid_vc;

static char roots[16][64];
static pid_t test_pid; /* the test process, for tgkill from a child */
static int scand_port; /* the test's loopback listener, for scand */
static int nroots;

static const char *
mkroot(mode_t mode, uid_t owner)
{
	char *d = roots[nroots++];

	snprintf(d, sizeof(roots[0]), "/tmp/imapgw-sandbox.XXXXXX");
	if (mkdtemp(d) == NULL || chmod(d, mode) == -1 ||
	    chown(d, owner, 0) == -1) {
		perror("mkroot");
		exit(1);
	}
	return d;
}

static void
rmroots(void)
{
	char p[PATH_MAX];
	int i;

	for (i = 0; i < nroots; i++) {
		snprintf(p, sizeof(p), "%s/tmp", roots[i]);
		rmdir(p);
		rmdir(roots[i]);
	}
}

static void
put(int v)
{
	if (write(KID_RES, &v, sizeof(v)) != sizeof(v))
		_exit(91);
}

static int
get(struct kid *k)
{
	int v;

	if (read(k->res, &v, sizeof(v)) != sizeof(v))
		return INT_MIN;
	return v;
}

/* Child side: fds 4, 5, 6 in place, nothing else of ours left open. */
static void
kid_fds(int rep, int res, int go)
{
	rep = fcntl(rep, F_DUPFD, 100);
	res = fcntl(res, F_DUPFD, 100);
	go = fcntl(go, F_DUPFD, 100);
	if (dup2(rep, IMAPGW_REPORT_FD) == -1 || dup2(res, KID_RES) == -1 ||
	    dup2(go, KID_GO) == -1)
		_exit(92);
	closefrom(KID_GO + 1);
}

/* Fork a child that enters role's sandbox with flags in root, then runs
 * fn. */
static int
kid_start_flags(struct kid *k, enum imapgw_role role, unsigned int flags,
    const char *root, kid_fn fn)
{
	int rep[2], res[2], go[2];

	if (pipe(rep) == -1 || pipe(res) == -1 || pipe(go) == -1)
		return -1;
	fflush(NULL);
	if ((k->pid = fork()) == -1)
		return -1;
	if (k->pid == 0) {
		kid_fds(rep[1], res[1], go[0]);
		if (kid_vcdir != NULL)
			kid_vc = vcache_open(kid_vcdir, 64 << 20, 0);
		if (sandbox_enter_flags(role, flags, root, NOBODY, NOBODY) ==
		    -1)
			_exit(90);
		fn();
		_exit(0);
	}
	close(rep[1]);
	close(res[1]);
	close(go[0]);
	k->report = rep[0];
	k->res = res[0];
	k->go = go[1];
	return 0;
}

/* The same with every flag the role may have. */
static int
kid_start(struct kid *k, enum imapgw_role role, const char *root, kid_fn fn)
{
	return kid_start_flags(k, role, sandbox_role_flags(role), root, fn);
}

/* Wait for the child; its reported system call number, or -1. */
static int
kid_end(struct kid *k)
{
	int nr;

	close(k->go);
	if (waitpid(k->pid, &k->status, 0) != k->pid)
		k->status = -1;
	if (read(k->report, &nr, sizeof(nr)) != sizeof(nr))
		nr = -1;
	close(k->report);
	close(k->res);
	return nr;
}

static int
died_by(const struct kid *k, int sig)
{
	return WIFSIGNALED(k->status) && WTERMSIG(k->status) == sig;
}

static int
exited_ok(const struct kid *k)
{
	return WIFEXITED(k->status) && WEXITSTATUS(k->status) == 0;
}

/* Run fn sandboxed in role with flags; expect death by SIGSYS reporting
 * syscall. */
static void
expect_kill_flags(enum imapgw_role role, unsigned int flags, const char *root,
    kid_fn fn, const char *syscall)
{
	struct kid k;
	int nr;

	CHECK(kid_start_flags(&k, role, flags, root, fn) == 0);
	nr = kid_end(&k);
	CHECK(died_by(&k, SIGSYS));
	CHECK(strcmp(sandbox_syscall_name(nr), syscall) == 0);
	if (!died_by(&k, SIGSYS) || strcmp(sandbox_syscall_name(nr), syscall))
		fprintf(stderr,
		    "  %s flags 0x%x: status 0x%x, reported %s, want %s\n",
		    role_name(role), flags, k.status, sandbox_syscall_name(nr),
		    syscall);
}

static void
expect_kill(
    enum imapgw_role role, const char *root, kid_fn fn, const char *syscall)
{
	expect_kill_flags(role, sandbox_role_flags(role), root, fn, syscall);
}

/* ---- what sandboxed children do ---- */

static void
do_ptrace(void)
{
	syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
}

static void
do_ptrace_sigsys_blocked(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGSYS);
	if (sigprocmask(SIG_BLOCK, &set, NULL) == -1)
		_exit(93);
	syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
}

static void
do_mmap_exec(void)
{
	mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1,
	    0);
}

static void
do_mprotect_exec(void)
{
	void *p;

	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		_exit(94);
	mprotect(p, 4096, PROT_READ | PROT_EXEC);
}

static void
do_sigaction_sigsys(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGSYS, &sa, NULL);
}

/* The kernel reads the signal as an int: 1 << 32 | SIGSYS is SIGSYS. */
static void
do_sigaction_sigsys_hi(void)
{
	unsigned long act[4] = {(unsigned long)SIG_IGN, 0, 0, 0};

	syscall(SYS_rt_sigaction, (1UL << 32) | SIGSYS, act, NULL, 8);
}

static void
do_tgkill_other(void)
{
	/* The test process: a pid that is not our own. */
	syscall(SYS_tgkill, test_pid, test_pid, SIGSYS);
}

static void
do_tgkill_self_term(void)
{
	syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGTERM);
}

static void
do_kill_self(void)
{
	kill(getpid(), SIGSYS);
}

static void
do_socket_unix(void)
{
	socket(AF_UNIX, SOCK_DGRAM, 0);
}

static void
do_socket_inet(void)
{
	socket(AF_INET, SOCK_STREAM, 0);
}

/* As scand/spam.c opens its TCP client. */
static void
do_socket_inet_nb(void)
{
	socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

static void
do_socket_inet6(void)
{
	socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
}

/* connect on a descriptor we hold (the pipe: ENOTSOCK if allowed). */
static void
do_connect(void)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(9);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	connect(KID_RES, (struct sockaddr *)&sin, sizeof(sin));
}

static void
do_socket_packet(void)
{
	socket(AF_PACKET, SOCK_RAW, 0);
}

static void
do_socket_raw(void)
{
	socket(AF_INET, SOCK_RAW, IPPROTO_TCP);
}

static void
do_socket_udp(void)
{
	socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

static void
do_memfd(void)
{
	memfd_create("x", 0);
}

static void
do_uname(void)
{
	char b[512];

	syscall(SYS_uname, b);
}

/* Allowed: results go to the parent through the pipe. */
static void
do_allowed(void)
{
	struct sigaction sa;
	struct rlimit rl;
	int n = -1;

	put(getpid());
	/* Probes are answered with an error, not a kill. */
	errno = 0;
	put(open("/etc/passwd", O_RDONLY) == -1 ? errno : 0);
	errno = 0;
	put(access("/etc/passwd", R_OK) == -1 ? errno : 0);
	errno = 0;
	put(isatty(KID_RES) ? 0 : errno);
	put(ioctl(KID_GO, FIONREAD, &n) == 0 ? n : -1);
	put(getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (int)rl.rlim_cur : -1);
	/* Handlers for other signals may still change, up to SIGRTMAX. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	put(sigaction(SIGUSR1, &sa, NULL) == 0 &&
	    sigaction(SIGRTMAX, &sa, NULL) == 0 &&
	    sigaction(SIGHUP, &sa, NULL) == 0);
}

static void
do_netd_net(void)
{
	int fd;

	fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	put(fd >= 0);
	close(fd);
	fd = memfd_create("msg", MFD_CLOEXEC);
	put(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
}

/* scand: temporary files in its private /tmp. */
static void
do_scand_files(void)
{
	char b[4];
	int fd, ok;

	fd = open("/tmp/clamtmp", O_RDWR | O_CREAT | O_EXCL, 0600);
	ok = fd >= 0 && write(fd, "abc", 3) == 3 &&
	     lseek(fd, 0, SEEK_SET) == 0 && read(fd, b, 3) == 3 &&
	     memcmp(b, "abc", 3) == 0;
	close(fd);
	put(ok && unlink("/tmp/clamtmp") == 0);
	put(mkdir("/tmp/d", 0700) == 0 && rmdir("/tmp/d") == 0);
	fd = memfd_create("msg", MFD_CLOEXEC);
	put(fd >= 0 && ftruncate(fd, 4096) == 0);
}

/* scand: a TCP client, as for spamd and rspamd (scand/spam.c). */
static void
do_scand_net(void)
{
	struct sockaddr_in sin;
	struct pollfd pfd;
	socklen_t sl = sizeof(int);
	char b[4];
	int fd, err = -1, r;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	put(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(scand_port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
	if (r == -1 && errno == EINPROGRESS) {
		pfd = (struct pollfd){fd, POLLOUT, 0};
		if (poll(&pfd, 1, 5000) == 1 &&
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0)
			r = err == 0 ? 0 : -1;
	}
	put(r == 0);
	put(send(fd, "hi", 2, MSG_NOSIGNAL) == 2);
	pfd = (struct pollfd){fd, POLLIN, 0};
	put(poll(&pfd, 1, 5000) == 1 && recv(fd, b, sizeof(b), 0) == 2 &&
	    memcmp(b, "ok", 2) == 0);
	close(fd);
	fd = socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
	put(fd >= 0);
	close(fd);
}

static void
do_abort(void)
{
	abort();
}

/* Wait for commands: 'p' ping, anything else ends.  poll with a timeout
 * resumes through restart_syscall after the audit's ptrace stop. */
static void
do_serve(void)
{
	struct pollfd pfd = {KID_GO, POLLIN, 0};
	char c;

	put('r');
	for (;;) {
		if (poll(&pfd, 1, 60000) != 1 || read(KID_GO, &c, 1) != 1 ||
		    c != 'p')
			return;
		put('p');
	}
}

/* ---- cases ---- */

static void
test_limits_table(void)
{
	struct sandbox_limits l;

	sandbox_role_limits(ROLE_NETD, &l);
	CHECK(l.nofile == 8192 && l.nproc == 0 && l.core == 0 &&
	      l.fsize == RLIM_INFINITY && l.as == RLIM_INFINITY);
	sandbox_role_limits(ROLE_SCAND, &l);
	CHECK(l.nofile == 256 && l.fsize == RLIM_INFINITY);
	sandbox_role_limits(ROLE_TLSD, &l);
	CHECK(l.nofile == 8192 && l.fsize == RLIM_INFINITY && l.core == 0);
	CHECK(strcmp(sandbox_syscall_name(SYS_ptrace), "ptrace") == 0);
	CHECK(strcmp(sandbox_syscall_name(100000), "syscall_100000") == 0);
}

static int
has_line(const struct buf *b, const char *a, const char *z)
{
	const char *s = (const char *)buf_head(b), *e = s + buf_used(b);
	const char *p, *nl;

	for (p = s; p < e; p = nl + 1) {
		if ((nl = memchr(p, '\n', e - p)) == NULL)
			nl = e;
		if (memmem(p, nl - p, a, strlen(a)) != NULL &&
		    (z == NULL || memmem(p, nl - p, z, strlen(z)) != NULL))
			return 1;
	}
	return 0;
}

static int
proc_field(pid_t pid, const char *line)
{
	char path[64], b[4096];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((fd = open(path, O_RDONLY)) == -1)
		return 0;
	n = read(fd, b, sizeof(b) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	b[n] = '\0';
	return strstr(b, line) != NULL;
}

static int
ping(struct kid *k)
{
	return write(k->go, "p", 1) == 1 && get(k) == 'p';
}

static void
test_audit_netd(void)
{
	const char *root = mkroot(0755, 0);
	char link[PATH_MAX], path[64];
	struct buf out;
	struct kid k;
	ssize_t n;
	int d;

	CHECK(kid_start(&k, ROLE_NETD, root, do_serve) == 0);
	CHECK(get(&k) == 'r');
	CHECK(proc_field(k.pid, "Uid:\t65534\t65534\t65534\t65534"));
	CHECK(proc_field(k.pid, "Gid:\t65534\t65534\t65534\t65534"));
	CHECK(proc_field(k.pid, "NoNewPrivs:\t1"));
	CHECK(proc_field(k.pid, "Seccomp:\t2"));
	snprintf(path, sizeof(path), "/proc/%d/root", (int)k.pid);
	n = readlink(path, link, sizeof(link) - 1);
	CHECK(n > 0);
	link[n > 0 ? n : 0] = '\0';
	CHECK(strcmp(link, root) == 0);

	buf_init(&out, 0);
	d = audit_child(k.pid, ROLE_NETD, 0, root, NOBODY, NOBODY, &out);
	CHECK(d == 0);
	CHECK(has_line(&out, "audit netd pid", ": 0 differences"));
	CHECK(has_line(&out, "syscall accept4 ", "policy allow"));
	CHECK(has_line(&out, "syscall openat ", "errno(EACCES)"));
	CHECK(has_line(&out, "syscall mmap ", "cond(allow|trap)"));
	CHECK(has_line(&out, "ok   rlimit_nofile", "live 8192 8192"));
	CHECK(has_line(&out, "(foreign-arch)", "kill_process"));
	CHECK(!has_line(&out, "syscall ptrace ", NULL));
	CHECK(!has_line(&out, "DIFF", NULL));
	if (d != 0)
		fwrite(buf_head(&out), 1, buf_used(&out), stderr);
	/* The child runs on after the ptrace stop, poll and all. */
	CHECK(ping(&k));

	/* The audit sees what does not match. */
	buf_reset(&out);
	d = audit_child(
	    k.pid, ROLE_SCAND, SANDBOX_NET, root, NOBODY, NOBODY, &out);
	CHECK(d > 0);
	CHECK(has_line(&out, "DIFF syscall accept4 ", "policy trap"));
	CHECK(has_line(&out, "DIFF syscall openat ", "policy allow"));
	CHECK(has_line(&out, "DIFF rlimit_nofile", "expected 256 256"));
	buf_reset(&out);
	CHECK(audit_child(k.pid, ROLE_NETD, 0, "/", 1000, NOBODY, &out) == 2);
	CHECK(has_line(&out, "DIFF uid", NULL));
	CHECK(has_line(&out, "DIFF root", NULL));
	CHECK(ping(&k));
	buf_free(&out);

	CHECK(kid_end(&k) == -1);
	CHECK(exited_ok(&k));
}

/*
 * scand's policy, with and without network clients, matches its live
 * filter when audited with the flags it was started with, and differs
 * when audited with the other.
 */
static void
test_audit_scand(void)
{
	const char *root = mkroot(0755, 0);
	struct buf out;
	struct kid k;
	int d;

	/* With SANDBOX_NET. */
	CHECK(
	    kid_start_flags(&k, ROLE_SCAND, SANDBOX_NET, root, do_serve) == 0);
	CHECK(get(&k) == 'r');
	buf_init(&out, 0);
	d = audit_child(
	    k.pid, ROLE_SCAND, SANDBOX_NET, root, NOBODY, NOBODY, &out);
	CHECK(d == 0);
	CHECK(has_line(&out, "audit scand pid", "(network)"));
	CHECK(has_line(&out, "ok   network ", "expected tcp"));
	CHECK(has_line(&out, "ok   network ", "live tcp"));
	CHECK(has_line(&out, "ok   syscall connect ", "policy allow"));
	CHECK(has_line(&out, "ok   syscall socket ", "cond(allow|trap)"));
	CHECK(has_line(&out, "ok   syscall openat ", "policy allow"));
	CHECK(!has_line(&out, "syscall accept4 ", NULL));
	CHECK(!has_line(&out, "DIFF", NULL));
	if (d != 0)
		fwrite(buf_head(&out), 1, buf_used(&out), stderr);
	CHECK(ping(&k));
	/* Audited as if started without: the difference is shown. */
	buf_reset(&out);
	d = audit_child(k.pid, ROLE_SCAND, 0, root, NOBODY, NOBODY, &out);
	CHECK(d > 0);
	CHECK(has_line(&out, "audit scand pid", "(no network)"));
	CHECK(has_line(&out, "DIFF network ", "expected none"));
	CHECK(has_line(&out, "DIFF network ", "live tcp"));
	CHECK(has_line(&out, "DIFF syscall connect ", "policy trap"));
	CHECK(has_line(&out, "DIFF syscall socket ", "policy trap"));
	CHECK(ping(&k));
	CHECK(kid_end(&k) == -1);
	CHECK(exited_ok(&k));

	/* Without: socket and connect are forbidden like any other. */
	CHECK(kid_start_flags(&k, ROLE_SCAND, 0, root, do_serve) == 0);
	CHECK(get(&k) == 'r');
	buf_reset(&out);
	d = audit_child(k.pid, ROLE_SCAND, 0, root, NOBODY, NOBODY, &out);
	CHECK(d == 0);
	CHECK(has_line(&out, "audit scand pid", "(no network)"));
	CHECK(has_line(&out, "ok   network ", "expected none"));
	CHECK(has_line(&out, "ok   network ", "live none"));
	CHECK(!has_line(&out, "syscall connect ", NULL));
	CHECK(!has_line(&out, "syscall socket ", NULL));
	CHECK(has_line(&out, "ok   syscall openat ", "policy allow"));
	CHECK(!has_line(&out, "DIFF", NULL));
	if (d != 0)
		fwrite(buf_head(&out), 1, buf_used(&out), stderr);
	CHECK(ping(&k));
	buf_reset(&out);
	d = audit_child(
	    k.pid, ROLE_SCAND, SANDBOX_NET, root, NOBODY, NOBODY, &out);
	CHECK(d > 0);
	CHECK(has_line(&out, "DIFF network ", "expected tcp"));
	CHECK(has_line(&out, "DIFF syscall connect ", "live trap"));
	CHECK(ping(&k));
	buf_free(&out);
	CHECK(kid_end(&k) == -1);
	CHECK(exited_ok(&k));
}

/*
 * A scand without network asked to use spamd: spam.c does not call
 * socket() (which would kill it) but reports the engine unavailable.
 * With SANDBOX_NET the same engine connects.
 */
static struct spam_engine *net_spamd;

static void
do_scand_spamd(void)
{
	struct spam_result r;
	static const char msg[] = "From: a@example.org\r\n"
	                          "Subject: hi\r\n\r\nhello\r\n";

	put(scand_net_allowed());
	spam_check(net_spamd, msg, sizeof(msg) - 1, &r);
	put(r.status);
	put(strstr(r.detail, "no network access") != NULL);
}

static void
test_scand_spam_nonet(void)
{
	const char *root = mkroot(0755, 0);
	struct sockaddr_in *sin;
	struct cfg_spam c;
	struct pollfd pfd;
	socklen_t sl;
	struct kid k;
	char err[256];
	int lfd, fd;

	memset(&c, 0, sizeof(c));
	c.enabled = 1;
	c.engine = SPAM_ENGINE_SPAMD;
	c.timeout_ms = 2000;
	c.max_size = 1024 * 1024;
	c.cat[SPAM_CONFIRMED].score = 15;
	c.cat[SPAM_BULK].score = 10;
	c.cat[SPAM_SUSPECT].score = 5;
	sin = (struct sockaddr_in *)&c.address.ss;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sl = sizeof(*sin);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(lfd != -1 && bind(lfd, (struct sockaddr *)sin, sl) == 0 &&
	      listen(lfd, 4) == 0 &&
	      getsockname(lfd, (struct sockaddr *)sin, &sl) == 0);
	c.address.len = sizeof(*sin);
	snprintf(c.address.text, sizeof(c.address.text), "127.0.0.1:%d",
	    ntohs(sin->sin_port));
	net_spamd = spam_engine_new(&c, err, sizeof(err));
	CHECK(net_spamd != NULL);
	if (net_spamd == NULL) {
		close(lfd);
		return;
	}
	/* Unconfined (the tests, imapgwd before its sandbox): allowed. */
	CHECK(scand_net_allowed() == 1);

	CHECK(kid_start_flags(&k, ROLE_SCAND, 0, root, do_scand_spamd) == 0);
	CHECK(get(&k) == 0);
	CHECK(get(&k) == SPAM_UNAVAILABLE);
	CHECK(get(&k) == 1);
	CHECK(kid_end(&k) == -1);
	CHECK(exited_ok(&k));
	/* No connection was even tried. */
	pfd = (struct pollfd){lfd, POLLIN, 0};
	CHECK(poll(&pfd, 1, 0) == 0);

	/* With network: it connects (the listener answers nothing and
	 * closes: unavailable too, but for another reason). */
	CHECK(kid_start_flags(
	          &k, ROLE_SCAND, SANDBOX_NET, root, do_scand_spamd) == 0);
	CHECK(get(&k) == 1);
	pfd = (struct pollfd){lfd, POLLIN, 0};
	fd = -1;
	if (poll(&pfd, 1, 5000) == 1)
		fd = accept(lfd, NULL, NULL);
	CHECK(fd != -1);
	if (fd != -1)
		close(fd);
	CHECK(get(&k) == SPAM_UNAVAILABLE);
	CHECK(get(&k) == 0);
	CHECK(kid_end(&k) == -1);
	CHECK(exited_ok(&k));
	spam_engine_free(net_spamd);
	close(lfd);
}

/* sandbox_flags() of a config: network for scand only when an action in
 * use has spamBlocker on with spamd or rspamd. */
static void
test_flags_config(void)
{
	struct cfg_action act[3];
	struct config cfg;

	memset(&cfg, 0, sizeof(cfg));
	memset(act, 0, sizeof(act));
	cfg.actions = act;
	cfg.nactions = 3;
	act[0].used = 1;
	act[0].spamblocker.enabled = 1;
	act[0].spamblocker.engine = SPAM_ENGINE_BUILTIN;
	act[1].used = 0;
	act[1].spamblocker.enabled = 1;
	act[1].spamblocker.engine = SPAM_ENGINE_SPAMD;
	act[2].used = 1;
	act[2].spamblocker.enabled = 0;
	act[2].spamblocker.engine = SPAM_ENGINE_RSPAMD;
	CHECK(sandbox_flags(ROLE_SCAND, &cfg) == 0);
	CHECK(sandbox_flags(ROLE_SCAND, NULL) == 0);
	act[1].used = 1;
	CHECK(sandbox_flags(ROLE_SCAND, &cfg) == SANDBOX_NET);
	CHECK(sandbox_flags(ROLE_NETD, &cfg) == 0);
	CHECK(sandbox_flags(ROLE_TLSD, &cfg) == 0);
	CHECK(sandbox_flags(ROLE_PARENT, &cfg) == 0);
	act[1].used = 0;
	act[2].spamblocker.enabled = 1;
	CHECK(sandbox_flags(ROLE_SCAND, &cfg) == SANDBOX_NET);
	act[2].spamblocker.engine = SPAM_ENGINE_BUILTIN;
	CHECK(sandbox_flags(ROLE_SCAND, &cfg) == 0);
	CHECK(strcmp(sandbox_flags_text(ROLE_SCAND, SANDBOX_NET), "network") ==
	      0);
	CHECK(strcmp(sandbox_flags_text(ROLE_SCAND, 0), "no network") == 0);
	CHECK(strcmp(sandbox_flags_text(ROLE_NETD, 0), "") == 0);
}

/* An unconfined process: the audit says so, and leaves it running. */
static void
test_audit_unconfined(void)
{
	struct buf out;
	int p[2], d, st;
	pid_t pid;
	char c;

	CHECK(pipe(p) == 0);
	fflush(NULL);
	if ((pid = fork()) == 0) {
		close(p[1]);
		_exit(read(p[0], &c, 1) == 1 ? 0 : 1);
	}
	close(p[0]);
	buf_init(&out, 0);
	d = audit_child(pid, ROLE_NETD, 0, "/", NOBODY, NOBODY, &out);
	CHECK(d > 0);
	CHECK(has_line(&out, "DIFF seccomp_mode", NULL));
	CHECK(has_line(&out, "DIFF seccomp_program live unreadable", NULL));
	CHECK(write(p[1], "x", 1) == 1);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	      WEXITSTATUS(st) == 0);
	buf_reset(&out);
	CHECK(audit_child(pid, ROLE_NETD, 0, "/", NOBODY, NOBODY, &out) == -1);
	buf_free(&out);
	close(p[1]);
}

/* A child that exits during or before the audit is left for its reaper. */
static void
test_audit_zombie(void)
{
	struct buf out;
	pid_t pid;
	int st, i;
	char state[64];

	fflush(NULL);
	if ((pid = fork()) == 0)
		_exit(7);
	snprintf(state, sizeof(state), "State:\tZ");
	for (i = 0; i < 1000 && !proc_field(pid, state); i++)
		usleep(1000);
	buf_init(&out, 0);
	CHECK(audit_child(pid, ROLE_NETD, 0, "/", NOBODY, NOBODY, &out) != 0);
	buf_free(&out);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	      WEXITSTATUS(st) == 7);
}

/* A child under a filter that allows more than the policy. */
static void
do_loose_filter(void)
{
	scmp_filter_ctx ctx;
	char c;

	ctx = sandbox_policy_ctx(ROLE_NETD, 0, getpid());
	if (ctx == NULL ||
	    seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
	        SCMP_A0(SCMP_CMP_EQ, AF_UNIX, 0)) < 0 ||
	    seccomp_load(ctx) < 0)
		_exit(1);
	put('r');
	_exit(read(KID_GO, &c, 1) == 0 ? 0 : 2);
}

static void
test_audit_loose(void)
{
	struct buf out;
	struct kid k;
	int res[2], go[2];

	CHECK(pipe(res) == 0 && pipe(go) == 0);
	fflush(NULL);
	if ((k.pid = fork()) == 0) {
		kid_fds(res[1], res[1], go[0]);
		do_loose_filter();
	}
	close(res[1]);
	close(go[0]);
	k.res = res[0];
	CHECK(get(&k) == 'r');
	buf_init(&out, 0);
	CHECK(audit_child(k.pid, ROLE_NETD, 0, "/", 0, 0, &out) > 0);
	CHECK(has_line(&out, "note seccomp_program", NULL));
	CHECK(has_line(&out, "DIFF syscall socket ", "live cond(allow|trap)"));
	CHECK(has_line(&out, "DIFF syscall socket ", "differs at args 0x1 "));
	CHECK(has_line(&out, "ok   syscall accept4 ", NULL));
	CHECK(has_line(&out, "ok   syscall mmap ", NULL));
	CHECK(has_line(&out, "ok   syscall tgkill ", NULL));
	buf_free(&out);
	close(go[1]);
	CHECK(waitpid(k.pid, &k.status, 0) == k.pid && exited_ok(&k));
	close(res[0]);
}

static void
test_violations(void)
{
	const char *root = mkroot(0755, 0);
	enum imapgw_role r;

	for (r = ROLE_NETD; r < ROLE_MAX; r++)
		expect_kill(r, root, do_ptrace, "ptrace");
	for (r = ROLE_NETD; r < ROLE_MAX; r++) {
		expect_kill(r, root, do_mmap_exec, "mmap");
		expect_kill(r, root, do_sigaction_sigsys, "rt_sigaction");
		expect_kill(r, root, do_uname, "uname");
	}
	expect_kill(ROLE_NETD, root, do_mprotect_exec, "mprotect");
	expect_kill(ROLE_NETD, root, do_sigaction_sigsys_hi, "rt_sigaction");
	expect_kill(ROLE_NETD, root, do_tgkill_other, "tgkill");
	expect_kill(ROLE_NETD, root, do_tgkill_self_term, "tgkill");
	expect_kill(ROLE_NETD, root, do_kill_self, "kill");
	expect_kill(ROLE_NETD, root, do_socket_unix, "socket");
	expect_kill(ROLE_TLSD, root, do_socket_inet, "socket");
	expect_kill(ROLE_TLSD, root, do_memfd, "memfd_create");
	/* scand with network: TCP clients only. */
	expect_kill_flags(
	    ROLE_SCAND, SANDBOX_NET, root, do_socket_unix, "socket");
	expect_kill_flags(
	    ROLE_SCAND, SANDBOX_NET, root, do_socket_packet, "socket");
	expect_kill_flags(
	    ROLE_SCAND, SANDBOX_NET, root, do_socket_raw, "socket");
	expect_kill_flags(
	    ROLE_SCAND, SANDBOX_NET, root, do_socket_udp, "socket");
	expect_kill_flags(ROLE_SCAND, SANDBOX_NET, root, do_uname, "uname");
	/* scand without: not even TCP. */
	expect_kill_flags(ROLE_SCAND, 0, root, do_socket_inet, "socket");
	expect_kill_flags(ROLE_SCAND, 0, root, do_socket_inet_nb, "socket");
	expect_kill_flags(ROLE_SCAND, 0, root, do_socket_inet6, "socket");
	expect_kill_flags(ROLE_SCAND, 0, root, do_connect, "connect");
	expect_kill_flags(ROLE_SCAND, 0, root, do_socket_unix, "socket");
	expect_kill_flags(ROLE_SCAND, 0, root, do_socket_udp, "socket");
	/* Every flag the role may have: still no AF_UNIX. */
	expect_kill(ROLE_SCAND, root, do_socket_unix, "socket");
}

/*
 * A blocked SIGSYS does not save the process: the kernel forces a seccomp
 * SIGSYS through and resets the handler first, so it dies unreported.
 */
static void
test_sigsys_blocked(void)
{
	struct kid k;

	CHECK(kid_start(&k, ROLE_NETD, mkroot(0755, 0),
	          do_ptrace_sigsys_blocked) == 0);
	CHECK(kid_end(&k) == -1);
	CHECK(died_by(&k, SIGSYS));
}

/* A scand child connects to a loopback listener and talks to it. */
static void
test_scand_net(const char *root)
{
	struct sockaddr_in sin;
	struct pollfd pfd;
	socklen_t sl = sizeof(sin);
	struct kid k;
	char b[4];
	int lfd, c = -1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(lfd != -1 &&
	      bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	      listen(lfd, 1) == 0 &&
	      getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0);
	scand_port = ntohs(sin.sin_port);
	CHECK(kid_start_flags(
	          &k, ROLE_SCAND, SANDBOX_NET, root, do_scand_net) == 0);
	CHECK(get(&k) == 1);
	CHECK(get(&k) == 1);
	pfd = (struct pollfd){lfd, POLLIN, 0};
	if (poll(&pfd, 1, 5000) == 1)
		c = accept(lfd, NULL, NULL);
	CHECK(c != -1);
	CHECK(c != -1 && read(c, b, 2) == 2 && memcmp(b, "hi", 2) == 0);
	CHECK(c != -1 && write(c, "ok", 2) == 2);
	CHECK(get(&k) == 1);
	CHECK(get(&k) == 1);
	CHECK(get(&k) == 1);
	CHECK(kid_end(&k) == -1);
	CHECK(exited_ok(&k));
	if (c != -1)
		close(c);
	close(lfd);
}

#define VC_BIG (1024 * 1024)

static void
vc_test_entry(struct vc_entry *e, int cls, unsigned n, struct vc_msgkey *k)
{
	memset(e, 0, sizeof(*e));
	e->cls = cls;
	memset(e->sha, (int)n, sizeof(e->sha));
	e->sha[0] = (uint8_t)(n >> 8);
	e->orig_size = n;
	k->action = "act";
	k->user = "user";
	k->mailbox = "INBOX";
	k->uidvalidity = 1;
	k->uid = n;
}

/* Sandboxed netd with the verdict cache opened before: 100 CLEAN
 * verdicts (a batch commit) and a CHANGED one of 1 MiB (a commit synced
 * at once), all read back from LMDB (no memory layer), then closed. */
static void
do_netd_vcache(void)
{
	struct vc_msgkey k;
	struct vc_entry e, g;
	unsigned i, ok = 1;

	for (i = 1; i <= 100; i++) {
		vc_test_entry(&e, VC_CLEAN, i, &k);
		vcache_put(kid_vc, &k, &e);
	}
	vc_test_entry(&e, VC_CHANGED, 1000, &k);
	snprintf(e.reason, sizeof(e.reason), "stripped");
	e.msglen = VC_BIG;
	e.msg = malloc(VC_BIG);
	memset(e.msg, 'S', VC_BIG);
	vcache_put(kid_vc, &k, &e);
	vc_entry_free(&e);
	put(1);
	for (i = 1; i <= 100; i++) {
		vc_test_entry(&e, VC_CLEAN, i, &k);
		if (vcache_get_msg(kid_vc, &k, &g) != 1 || g.cls != VC_CLEAN)
			ok = 0;
	}
	put(ok);
	vc_test_entry(&e, VC_CHANGED, 1000, &k);
	put(vcache_get_msg(kid_vc, &k, &g) == 1 && g.cls == VC_CHANGED &&
	    g.msglen == VC_BIG && g.msg[VC_BIG - 1] == 'S');
	vc_entry_free(&g);
	vcache_close(kid_vc);
	put(1);
}

static void
test_netd_vcache(void)
{
	const char *root = mkroot(0755, 0);
	const char *dir = mkroot(0700, 0);
	char p[PATH_MAX];
	struct vcache *vc;
	struct vc_msgkey k;
	struct vc_entry e, g;
	struct kid kd;

	kid_vcdir = dir;
	CHECK(kid_start(&kd, ROLE_NETD, root, do_netd_vcache) == 0);
	kid_vcdir = NULL;
	CHECK(get(&kd) == 1);
	CHECK(get(&kd) == 1);
	CHECK(get(&kd) == 1);
	CHECK(get(&kd) == 1);
	CHECK(kid_end(&kd) == -1);
	CHECK(exited_ok(&kd));
	/* What the sandboxed child wrote is there for the next process. */
	vc = vcache_open(dir, 64 << 20, 0);
	vc_test_entry(&e, VC_CLEAN, 77, &k);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && g.cls == VC_CLEAN);
	vc_entry_free(&g);
	vc_test_entry(&e, VC_CHANGED, 1000, &k);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && g.msglen == VC_BIG &&
	      strcmp(g.reason, "stripped") == 0);
	vc_entry_free(&g);
	vcache_close(vc);
	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/lock.mdb", dir);
	unlink(p);
}

static void
test_allowed(void)
{
	const char *root = mkroot(0755, 0);
	char tmp[PATH_MAX];
	struct kid k;

	CHECK(kid_start(&k, ROLE_NETD, root, do_allowed) == 0);
	CHECK(get(&k) == k.pid);
	CHECK(get(&k) == EACCES);
	CHECK(get(&k) == EACCES);
	CHECK(get(&k) == ENOTTY);
	CHECK(get(&k) == 0);
	CHECK(get(&k) == 8192);
	CHECK(get(&k) == 1);
	CHECK(kid_end(&k) == -1);
	CHECK(exited_ok(&k));

	CHECK(kid_start(&k, ROLE_NETD, root, do_netd_net) == 0);
	CHECK(get(&k) == 1);
	CHECK(get(&k) == 1);
	kid_end(&k);
	CHECK(exited_ok(&k));

	/* scand's root has a private tmp it may write. */
	root = mkroot(0755, 0);
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	CHECK(mkdir(tmp, 0700) == 0 && chown(tmp, NOBODY, NOBODY) == 0);
	CHECK(kid_start(&k, ROLE_SCAND, root, do_scand_files) == 0);
	CHECK(get(&k) == 1);
	CHECK(get(&k) == 1);
	CHECK(get(&k) == 1);
	kid_end(&k);
	CHECK(exited_ok(&k));
	test_scand_net(root);

	/* abort() still ends in SIGABRT, not in a sandbox report. */
	CHECK(kid_start(&k, ROLE_TLSD, root, do_abort) == 0);
	CHECK(kid_end(&k) == -1);
	CHECK(died_by(&k, SIGABRT));
}

/* In a child: sandbox_enter_flags must fail and leave the process unconfined. */
static int
refused(enum imapgw_role role, const char *root, uid_t uid, int drop_first)
{
	pid_t pid;
	int st;

	fflush(NULL);
	if ((pid = fork()) == 0) {
		if (drop_first && setresuid(NOBODY, NOBODY, NOBODY) == -1)
			_exit(2);
		if (sandbox_enter_flags(role, 0, root, uid, NOBODY) != -1)
			_exit(3);
		if (prctl(PR_GET_SECCOMP) != 0 ||
		    prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0)
			_exit(4);
		_exit(getuid() == (drop_first ? NOBODY : 0) ? 0 : 5);
	}
	return waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	       WEXITSTATUS(st) == 0;
}

static void
test_refusals(void)
{
	const char *ok = mkroot(0755, 0);
	char file[PATH_MAX];
	int fd;

	CHECK(refused(ROLE_NETD, mkroot(0775, 0), NOBODY, 0));
	CHECK(refused(ROLE_NETD, mkroot(0757, 0), NOBODY, 0));
	CHECK(refused(ROLE_NETD, mkroot(0755, NOBODY), NOBODY, 0));
	CHECK(refused(ROLE_NETD, "/nonexistent/imapgw", NOBODY, 0));
	CHECK(refused(ROLE_NETD, "tmp", NOBODY, 0));
	snprintf(file, sizeof(file), "%s/file", ok);
	CHECK((fd = open(file, O_CREAT | O_WRONLY, 0644)) != -1);
	close(fd);
	CHECK(refused(ROLE_NETD, file, NOBODY, 0));
	unlink(file);
	CHECK(refused(ROLE_NETD, ok, NOBODY, 1));
	CHECK(refused(ROLE_NETD, ok, 0, 0));
	CHECK(refused(ROLE_PARENT, ok, NOBODY, 0));
}

/* ---- the interpreter on hand-written programs ---- */

#define LD(off) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, off)
#define RET(v) BPF_STMT(BPF_RET | BPF_K, v)
#define ARG0_LO offsetof(struct seccomp_data, args[0])

/* clang-format off */
static const struct sock_filter tiny[] = {
	/* 0 */ LD(offsetof(struct seccomp_data, arch)),
	/* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	/* 2 */ RET(SECCOMP_RET_KILL_PROCESS),
	/* 3 */ LD(offsetof(struct seccomp_data, nr)),
	/* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 39, 0, 1),
	/* 5 */ RET(SECCOMP_RET_ALLOW),
	/* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 5),
	/* 7 */ LD(ARG0_LO),
	/* 8 */ BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x3),
	/* 9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
	/* 10 */ RET(SECCOMP_RET_ERRNO | EACCES),
	/* 11 */ RET(SECCOMP_RET_ALLOW),
	/* 12 */ RET(SECCOMP_RET_TRAP),
};

/* Scratch memory, X, JGT, JA and JSET on X. */
static const struct sock_filter misc[] = {
	/* 0 */ LD(offsetof(struct seccomp_data, nr)),
	/* 1 */ BPF_STMT(BPF_ST, 3),
	/* 2 */ BPF_STMT(BPF_LDX | BPF_MEM, 3),
	/* 3 */ BPF_STMT(BPF_MISC | BPF_TXA, 0),
	/* 4 */ BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 1),
	/* 5 */ BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 100, 0, 1),
	/* 6 */ BPF_STMT(BPF_JMP | BPF_JA, 2),
	/* 7 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_X, 0, 1, 0),
	/* 8 */ RET(SECCOMP_RET_ALLOW),
	/* 9 */ RET(SECCOMP_RET_KILL_THREAD),
};
/* clang-format on */

static uint32_t
sigaction_action(const struct sock_filter *f, size_t n, uint64_t sig)
{
	struct seccomp_data d;
	uint32_t action;

	memset(&d, 0, sizeof(d));
	d.arch = AUDIT_ARCH_X86_64;
	d.nr = SYS_rt_sigaction;
	d.args[0] = sig;
	if (audit_bpf_run(f, n, &d, &action) == -1)
		return UINT32_MAX;
	return action;
}

/* The program role's policy with flags compiles to; *n instructions. */
static struct sock_filter *
policy_bpf(enum imapgw_role role, unsigned int flags, size_t *n)
{
	struct sock_filter *pol = NULL;
	scmp_filter_ctx ctx;
	FILE *f;

	*n = 0;
	if ((ctx = sandbox_policy_ctx(role, flags, 4242)) == NULL)
		return NULL;
	if ((f = tmpfile()) != NULL &&
	    seccomp_export_bpf(ctx, fileno(f)) == 0 &&
	    (*n = lseek(fileno(f), 0, SEEK_END) / sizeof(*pol)) > 0 &&
	    (pol = calloc(*n, sizeof(*pol))) != NULL &&
	    pread(fileno(f), pol, *n * sizeof(*pol), 0) !=
	        (ssize_t)(*n * sizeof(*pol))) {
		free(pol);
		pol = NULL;
	}
	if (f != NULL)
		fclose(f);
	seccomp_release(ctx);
	return pol;
}

static uint32_t
socket_action(const struct sock_filter *f, size_t n, int nr, uint64_t domain,
    uint64_t type)
{
	struct seccomp_data d;
	uint32_t action;

	memset(&d, 0, sizeof(d));
	d.arch = AUDIT_ARCH_X86_64;
	d.nr = nr;
	d.args[0] = domain;
	d.args[1] = type;
	if (audit_bpf_run(f, n, &d, &action) == -1)
		return UINT32_MAX;
	return action;
}

/* scand's policy: TCP clients with SANDBOX_NET only. */
static void
test_bpf_scand_net(void)
{
	const int nb = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC;
	struct sock_filter *net, *nonet;
	size_t nn, n0;
	char desc[96];

	net = policy_bpf(ROLE_SCAND, SANDBOX_NET, &nn);
	nonet = policy_bpf(ROLE_SCAND, 0, &n0);
	CHECK(net != NULL && nonet != NULL);
	if (net == NULL || nonet == NULL) {
		free(net);
		free(nonet);
		return;
	}
	CHECK(socket_action(net, nn, SYS_socket, AF_INET, nb) ==
	      SECCOMP_RET_ALLOW);
	CHECK(socket_action(net, nn, SYS_socket, AF_INET6, SOCK_STREAM) ==
	      SECCOMP_RET_ALLOW);
	CHECK(socket_action(net, nn, SYS_connect, 7, 0) == SECCOMP_RET_ALLOW);
	CHECK(socket_action(net, nn, SYS_socket, AF_UNIX, SOCK_STREAM) ==
	      SECCOMP_RET_TRAP);
	CHECK(socket_action(net, nn, SYS_socket, AF_PACKET, SOCK_RAW) ==
	      SECCOMP_RET_TRAP);
	CHECK(socket_action(net, nn, SYS_socket, AF_INET, SOCK_DGRAM) ==
	      SECCOMP_RET_TRAP);
	CHECK(socket_action(net, nn, SYS_socket, AF_INET6, SOCK_RAW) ==
	      SECCOMP_RET_TRAP);
	CHECK(audit_bpf_classify(net, nn, AUDIT_ARCH_X86_64, SYS_socket, desc,
	          sizeof(desc)) == AUDIT_COND);
	CHECK(socket_action(nonet, n0, SYS_socket, AF_INET, nb) ==
	      SECCOMP_RET_TRAP);
	CHECK(socket_action(nonet, n0, SYS_socket, AF_INET6, SOCK_STREAM) ==
	      SECCOMP_RET_TRAP);
	CHECK(socket_action(nonet, n0, SYS_connect, 7, 0) == SECCOMP_RET_TRAP);
	CHECK(socket_action(nonet, n0, SYS_socket, AF_UNIX, SOCK_STREAM) ==
	      SECCOMP_RET_TRAP);
	CHECK(audit_bpf_classify(nonet, n0, AUDIT_ARCH_X86_64, SYS_socket, desc,
	          sizeof(desc)) == AUDIT_TRAP);
	CHECK(audit_bpf_classify(nonet, n0, AUDIT_ARCH_X86_64, SYS_connect,
	          desc, sizeof(desc)) == AUDIT_TRAP);
	/* The rest of scand's policy is the same. */
	CHECK(audit_bpf_classify(nonet, n0, AUDIT_ARCH_X86_64, SYS_openat, desc,
	          sizeof(desc)) == AUDIT_ALLOW);
	CHECK(audit_bpf_classify(nonet, n0, AUDIT_ARCH_X86_64, SYS_ptrace, desc,
	          sizeof(desc)) == AUDIT_TRAP);
	free(net);
	free(nonet);
}

static void
test_bpf(void)
{
	struct seccomp_data d;
	struct sock_filter bad[2] = {LD(0), {0x07ff, 0, 0, 0}};
	struct sock_filter *pol = NULL;
	enum imapgw_role r;
	scmp_filter_ctx ctx;
	uint32_t action;
	char desc[96];
	size_t n;
	FILE *f;

	memset(&d, 0, sizeof(d));
	d.arch = AUDIT_ARCH_X86_64;
	d.nr = 39;
	CHECK(audit_bpf_run(tiny, 13, &d, &action) == 0 &&
	      action == SECCOMP_RET_ALLOW);
	d.nr = 2;
	d.args[0] = 5;
	CHECK(audit_bpf_run(tiny, 13, &d, &action) == 0 &&
	      action == (SECCOMP_RET_ERRNO | EACCES));
	CHECK(audit_bpf_classify(tiny, 13, AUDIT_ARCH_X86_64, 39, desc,
	          sizeof(desc)) == AUDIT_ALLOW &&
	      strcmp(desc, "allow") == 0);
	CHECK(audit_bpf_classify(tiny, 13, AUDIT_ARCH_X86_64, 2, desc,
	          sizeof(desc)) == AUDIT_COND &&
	      strcmp(desc, "cond(allow|errno(EACCES))") == 0);
	CHECK(audit_bpf_classify(tiny, 13, AUDIT_ARCH_X86_64, 3, desc,
	          sizeof(desc)) == AUDIT_TRAP);
	CHECK(audit_bpf_classify(tiny, 13, AUDIT_ARCH_I386, 39, desc,
	          sizeof(desc)) == AUDIT_KILL &&
	      strcmp(desc, "kill_process") == 0);
	/* Truncated program, unknown opcode: errors, not verdicts. */
	CHECK(audit_bpf_classify(
	          tiny, 12, AUDIT_ARCH_X86_64, 3, desc, sizeof(desc)) == -1);
	CHECK(audit_bpf_run(bad, 2, &d, &action) == -1);
	d.nr = 200; /* 201 > 100: JA to the kill */
	CHECK(audit_bpf_run(misc, 10, &d, &action) == 0 &&
	      action == SECCOMP_RET_KILL_THREAD);
	d.nr = 7; /* 8 & 7 == 0 */
	CHECK(audit_bpf_run(misc, 10, &d, &action) == 0 &&
	      action == SECCOMP_RET_ALLOW);
	d.nr = 5; /* 6 & 5 != 0 */
	CHECK(audit_bpf_run(misc, 10, &d, &action) == 0 &&
	      action == SECCOMP_RET_KILL_THREAD);

	/* libseccomp's output for the real policy. */
	CHECK((ctx = sandbox_policy_ctx(ROLE_NETD, 0, 4242)) != NULL);
	CHECK((f = tmpfile()) != NULL);
	CHECK(seccomp_export_bpf(ctx, fileno(f)) == 0);
	n = lseek(fileno(f), 0, SEEK_END) / sizeof(*pol);
	CHECK(n > 0 && (pol = calloc(n, sizeof(*pol))) != NULL);
	CHECK(pread(fileno(f), pol, n * sizeof(*pol), 0) ==
	      (ssize_t)(n * sizeof(*pol)));
	CHECK(audit_bpf_classify(pol, n, AUDIT_ARCH_X86_64, SYS_read, desc,
	          sizeof(desc)) == AUDIT_ALLOW);
	CHECK(audit_bpf_classify(pol, n, AUDIT_ARCH_X86_64, SYS_ptrace, desc,
	          sizeof(desc)) == AUDIT_TRAP);
	CHECK(audit_bpf_classify(pol, n, AUDIT_ARCH_X86_64, SYS_socket, desc,
	          sizeof(desc)) == AUDIT_COND);
	CHECK(audit_bpf_classify(pol, n, AUDIT_ARCH_X86_64, SYS_tgkill, desc,
	          sizeof(desc)) == AUDIT_COND);
	/* socket(AF_INET6, SOCK_STREAM|SOCK_NONBLOCK) is allowed. */
	memset(&d, 0, sizeof(d));
	d.arch = AUDIT_ARCH_X86_64;
	d.nr = SYS_socket;
	d.args[0] = AF_INET6;
	d.args[1] = SOCK_STREAM | SOCK_NONBLOCK;
	CHECK(audit_bpf_run(pol, n, &d, &action) == 0 &&
	      action == SECCOMP_RET_ALLOW);
	d.args[0] = AF_UNIX;
	CHECK(audit_bpf_run(pol, n, &d, &action) == 0 &&
	      action == SECCOMP_RET_TRAP);
	/* rt_sigaction: every signal but SIGSYS, on all 64 bits. */
	CHECK(sigaction_action(pol, n, SIGSYS) == SECCOMP_RET_TRAP);
	CHECK(
	    sigaction_action(pol, n, 1ULL << 32 | SIGSYS) == SECCOMP_RET_TRAP);
	CHECK(sigaction_action(pol, n, SIGSYS - 1) == SECCOMP_RET_ALLOW);
	CHECK(sigaction_action(pol, n, SIGSYS + 1) == SECCOMP_RET_ALLOW);
	CHECK(sigaction_action(pol, n, 64) == SECCOMP_RET_ALLOW);
	CHECK(sigaction_action(pol, n, 65) == SECCOMP_RET_TRAP);
	CHECK(
	    sigaction_action(pol, n, 1ULL << 32 | SIGUSR1) == SECCOMP_RET_TRAP);
	free(pol);
	fclose(f);
	seccomp_release(ctx);
	for (r = ROLE_NETD; r < ROLE_MAX; r++) {
		CHECK((ctx = sandbox_policy_ctx(r, 0, 1)) != NULL);
		seccomp_release(ctx);
		CHECK((ctx = sandbox_policy_ctx(r, sandbox_role_flags(r), 1)) !=
		      NULL);
		seccomp_release(ctx);
	}
	CHECK(sandbox_policy_ctx(ROLE_PARENT, 0, 1) == NULL);
	/* A flag the role does not have is refused, not ignored. */
	CHECK(sandbox_role_flags(ROLE_SCAND) == SANDBOX_NET);
	CHECK(sandbox_role_flags(ROLE_NETD) == 0);
	CHECK(sandbox_role_flags(ROLE_TLSD) == 0);
	CHECK(sandbox_policy_ctx(ROLE_NETD, SANDBOX_NET, 1) == NULL);
	CHECK(sandbox_policy_ctx(ROLE_TLSD, SANDBOX_NET, 1) == NULL);
	CHECK(sandbox_policy_ctx(ROLE_SCAND, 0x80, 1) == NULL);
	test_bpf_scand_net();
}

int
main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_sandbox: must run as root\n");
		t_fail++;
		return test_done("test_sandbox");
	}
	test_pid = getpid();
	/* A child that died early shows up as a failed CHECK, not SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	log_init(LOGT_STDERR, LOGF_TEXT, LOG_WARNING, "test_sandbox");
	test_limits_table();
	test_flags_config();
	test_bpf();
	test_refusals();
	test_violations();
	test_sigsys_blocked();
	test_allowed();
	test_netd_vcache();
	test_audit_netd();
	test_audit_scand();
	test_scand_spam_nonet();
	test_audit_unconfined();
	test_audit_zombie();
	test_audit_loose();
	rmroots();
	return test_done("test_sandbox");
}
