/*
 * Sandbox of the child processes: chroot, unprivileged ids, resource
 * limits, no_new_privs, and a seccomp allowlist per role in the style of
 * OpenSSH's sandbox-seccomp-filter.c.
 *
 * A forbidden system call is not answered with an error: the filter traps
 * (SECCOMP_RET_TRAP), a SIGSYS handler writes the system call number to
 * IMAPGW_REPORT_FD for the parent to log, and the process then dies by
 * SIGSYS.  See sandbox_sigsys() for why this cannot be turned into a
 * plain error return by code running in the child.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <linux/capability.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <seccomp.h>

#include "config.h"
#include "imapgw.h"
#include "log.h"
#include "sandbox.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#ifndef SYS_SECCOMP
/* si_code of a seccomp SIGSYS; the kernel header clashes with glibc's. */
#define SYS_SECCOMP 1
#endif

/*
 * Resource limits, soft = hard.
 *   core 0   a core file of a process that held messages or keys leaks them.
 *   nproc 0  children never fork or start threads.
 *   nofile   netd and tlsd hold two sockets per session; scand only a
 *            few message fds at a time.  Not 0 as in OpenSSH: every role
 *            receives fds over SCM_RIGHTS, which needs free slots.
 *   fsize    unlimited: a write past RLIMIT_FSIZE raises SIGXFSZ, and
 *            netd and scand write whole messages into memfds (the
 *            configured message size limit bounds them), and every role
 *            logs to stderr, which may be a regular file of any size (the
 *            tests do that: tlsd with 0 died on its first log line).
 *            tlsd cannot create or open files anyway (empty chroot,
 *            openat refused).
 *   as       unlimited: libclamav maps its signature databases (several
 *            hundred MB, more while reloading) and an address space cap
 *            makes it fail in ways that are hard to tell from "clean";
 *            the ASan test build also reserves terabytes of shadow.
 */
/* clang-format off */
static const struct {
	enum imapgw_role role;
	struct sandbox_limits lim;
} role_limits[] = {
	/*              nofile  nproc  core  fsize          as */
	{ ROLE_NETD,  { 8192,   0,     0,    RLIM_INFINITY, RLIM_INFINITY } },
	{ ROLE_SCAND, { 256,    0,     0,    RLIM_INFINITY, RLIM_INFINITY } },
	{ ROLE_TLSD,  { 8192,   0,     0,    RLIM_INFINITY, RLIM_INFINITY } },
};
/* clang-format on */

/*
 * Seccomp rules.  A rule allows a system call, or answers it with an
 * errno, when all of its (at most two) argument checks hold.  A call that
 * no rule matches traps (see sandbox_sigsys).
 */
enum sc_op {
	SC_NONE = 0,
	SC_EQ, /* arg == val */
	SC_MASKED_EQ, /* (arg & mask) == val */
	SC_SELF, /* arg == pid of the sandboxed process */
	SC_NOT_SIGNAL, /* arg is a signal number (0.._NSIG-1) other than val */
};

struct sc_check {
	enum sc_op op;
	unsigned int arg;
	uint64_t mask;
	uint64_t val;
};

struct sc_rule {
	const char *name;
	int nr; /* SCMP_SYS(name): negative if not on this architecture */
	uint32_t action;
	struct sc_check chk[2];
};

/* clang-format off */
#define NO_CHECK	 { .op = SC_NONE }
#define EQ(a, v)	 { .op = SC_EQ, .arg = (a), .val = (v) }
#define MASKED(a, m, v)	 { .op = SC_MASKED_EQ, .arg = (a), .mask = (m), \
			   .val = (v) }
#define NO_EXEC(a)	 MASKED(a, PROT_EXEC, 0)
#define SELF(a)		 { .op = SC_SELF, .arg = (a) }
#define NOT_SIGNAL(a, s) { .op = SC_NOT_SIGNAL, .arg = (a), .val = (s) }
/* The kernel reads an ioctl request as 32 bits: compare only those. */
#define IOCTL_REQ(r)	 MASKED(1, 0xffffffffULL, r)

#define RULE(n, act, ...) \
	{ .name = #n, .nr = SCMP_SYS(n), .action = (act), .chk = { __VA_ARGS__ } }
#define ALLOW(n)		RULE(n, SCMP_ACT_ALLOW, NO_CHECK)
#define ALLOW_IF(n, c)		RULE(n, SCMP_ACT_ALLOW, c)
#define ALLOW_IF2(n, c1, c2)	RULE(n, SCMP_ACT_ALLOW, c1, c2)
#define DENY(n, e)		RULE(n, SCMP_ACT_ERRNO(e), NO_CHECK)
#define DENY_IF(n, e, c)	RULE(n, SCMP_ACT_ERRNO(e), c)

/* Every role.  Names that do not exist on an architecture are skipped. */
static const struct sc_rule sc_common[] = {
	/* I/O on descriptors the process already holds or is passed. */
	ALLOW(read),
	ALLOW(write),
	ALLOW(readv),
	ALLOW(writev),
	ALLOW(pread64),
	ALLOW(pwrite64),
	ALLOW(lseek),
	ALLOW(close),
	ALLOW(fcntl),
	ALLOW(fstat),
	/*
	 * glibc 2.36 implements fstat() as newfstatat(fd, "", AT_EMPTY_PATH)
	 * and libevent and the memfd code need it.  A path lookup cannot be
	 * told apart (the path is a pointer), so newfstatat is allowed as a
	 * whole; inside the empty chroot a path stat reveals nothing.
	 */
	ALLOW(newfstatat),
	ALLOW(recvmsg),
	ALLOW(sendmsg),
	ALLOW(recvfrom),
	ALLOW(sendto),
	ALLOW(shutdown),
	ALLOW(getsockopt),
	ALLOW(setsockopt),
	ALLOW(getsockname),
	ALLOW(getpeername),
	ALLOW_IF(ioctl, IOCTL_REQ(FIONREAD)),
	ALLOW_IF(ioctl, IOCTL_REQ(FIONBIO)),
	/* isatty() from stdio on a fresh stream: "not a terminal". */
	DENY_IF(ioctl, ENOTTY, IOCTL_REQ(TCGETS)),

	/* Event loop (libevent: epoll, its notify pipe or eventfd). */
	ALLOW(epoll_create1),
	ALLOW(epoll_ctl),
	ALLOW(epoll_wait),
	ALLOW(epoll_pwait),
	ALLOW(poll),
	ALLOW(ppoll),
	ALLOW(select),
	ALLOW(pselect6),
	ALLOW(eventfd2),
	ALLOW(pipe),	/* glibc's pipe() on x86_64 */
	ALLOW(pipe2),

	/* Memory, never executable: no role runs a JIT (see sc_scand). */
	ALLOW(brk),
	ALLOW_IF(mmap, NO_EXEC(2)),
	ALLOW_IF(mmap2, NO_EXEC(2)),
	ALLOW_IF(mprotect, NO_EXEC(2)),
	ALLOW(munmap),
	ALLOW(mremap),
	ALLOW(madvise),
	ALLOW(futex),

	/* Time, ids, randomness. */
	ALLOW(clock_gettime),
	ALLOW(clock_nanosleep),
	ALLOW(nanosleep),
	ALLOW(gettimeofday),
	ALLOW(time),
	ALLOW(getpid),
	ALLOW(gettid),
	ALLOW(getuid),
	ALLOW(geteuid),
	ALLOW(getgid),
	ALLOW(getegid),
	ALLOW(getrandom),
	ALLOW(sched_yield),
	/* getrlimit() is prlimit64(0, res, NULL, old): read our own only. */
	ALLOW_IF2(prlimit64, EQ(0, 0), EQ(2, 0)),

	/*
	 * Signals.  SIGSYS belongs to the sandbox: its handler may not be
	 * replaced (NOT_SIGNAL also refuses a signal number with garbage in
	 * the upper 32 bits, which the kernel would truncate to SIGSYS).
	 * Blocking SIGSYS does not help either, see sandbox_sigsys().
	 */
	ALLOW(rt_sigreturn),
	ALLOW(rt_sigprocmask),
	ALLOW(sigprocmask),
	ALLOW_IF(rt_sigaction, NOT_SIGNAL(0, SIGSYS)),
	ALLOW(sigaltstack),
	/* Signals to ourselves only: the SIGSYS reporter, and abort(). */
	ALLOW_IF2(tgkill, SELF(0), EQ(2, SIGSYS)),
	ALLOW_IF2(tgkill, SELF(0), EQ(2, SIGABRT)),
	/*
	 * A blocking call with a timeout (poll, nanosleep) that a signal or
	 * the parent's audit (a ptrace stop) interrupts resumes through
	 * restart_syscall: without it the child dies after an audit.
	 */
	ALLOW(restart_syscall),
	ALLOW(exit),
	ALLOW(exit_group),

	/*
	 * Probes libraries make after the chroot (gconv modules, locale
	 * files, /etc/localtime, OpenSSL config): an error they handle, not
	 * a kill.  openat is per role because scand may open files.
	 */
	DENY(open, EACCES),
	DENY(stat, EACCES),
	DENY(lstat, EACCES),
	DENY(access, EACCES),
	DENY(faccessat, EACCES),
	DENY(faccessat2, EACCES),
};

/* netd: accepts clients, connects to backends, passes messages as memfds. */
static const struct sc_rule sc_netd[] = {
	DENY(openat, EACCES),
	/* TCP only; the syslog socket is opened before the chroot. */
	ALLOW_IF2(socket, EQ(0, AF_INET), MASKED(1, 0xf, SOCK_STREAM)),
	ALLOW_IF2(socket, EQ(0, AF_INET6), MASKED(1, 0xf, SOCK_STREAM)),
	ALLOW(connect),
	ALLOW(accept),
	ALLOW(accept4),
	ALLOW(memfd_create),
	ALLOW(ftruncate),
	/* Spooled literals (whole messages) go out from their memfd, and
	 * a copy of it goes to scand. */
	ALLOW(sendfile),
	ALLOW(dup),
	/*
	 * The verdict cache (common/vcache.c), an LMDB environment opened
	 * before the sandbox: its commits write pages with pwrite64 and
	 * lseek+writev, take the locks of lock.mdb with fcntl and futex (all
	 * in sc_common) and flush the data file with fdatasync
	 * (MDB_NOMETASYNC: one per commit).
	 */
	ALLOW(fdatasync),
	/*
	 * glibc's qsort() asks sysinfo for the amount of physical memory
	 * before it sorts a large array (netd/consist.c sorts the messages
	 * of a FETCH by UID); it only reads the memory and load figures.
	 */
	ALLOW(sysinfo),
};

/*
 * scand: works in a chroot with a private writable /tmp that libclamav
 * uses for its temporary files and directories.  scand must disable the
 * libclamav bytecode JIT (interpreter mode): mmap/mprotect with PROT_EXEC
 * stay forbidden here as everywhere.
 */
static const struct sc_rule sc_scand[] = {
	ALLOW(openat),
	ALLOW(unlink),
	ALLOW(unlinkat),
	ALLOW(mkdir),
	ALLOW(mkdirat),
	ALLOW(rmdir),
	ALLOW(rename),
	/* libclamav removes its temporary directories with readdir(). */
	ALLOW(getdents64),
	/*
	 * libclamav's cli_rmdirs() chmods each temporary directory to 0700
	 * before emptying it.  Only scand's own /tmp is writable to it
	 * (the rest of its root is root's), so this changes nothing else.
	 */
	ALLOW(chmod),
	ALLOW(memfd_create),
	ALLOW(ftruncate),
};

/*
 * scand with SANDBOX_NET: spamBlocker's spamd and rspamd clients
 * (scand/spam.c), TCP to the numeric address of the config, no DNS.
 * Only when an action in use asks for one of those engines (see
 * sandbox_flags): a process that parses hostile mail gets no network
 * access it does not need.  send() and recv() are sendto and recvfrom;
 * poll and getsockopt (SO_ERROR) are in sc_common.
 */
static const struct sc_rule sc_scand_net[] = {
	ALLOW_IF2(socket, EQ(0, AF_INET), MASKED(1, 0xf, SOCK_STREAM)),
	ALLOW_IF2(socket, EQ(0, AF_INET6), MASKED(1, 0xf, SOCK_STREAM)),
	ALLOW(connect),
};

/*
 * tlsd: gets its TCP sockets passed by netd and opens nothing itself:
 * OpenSSL reads its config, error strings, random seed and the system
 * CA bundle before the sandbox (tlsd/ctx.c), its DRBG reseeds with
 * getrandom (sc_common).  For each connection it makes the socketpair
 * whose end it passes back to netd with the plaintext (AF_UNIX only: no
 * socket() of any family).
 */
static const struct sc_rule sc_tlsd[] = {
	DENY(openat, EACCES),
	ALLOW_IF(socketpair, EQ(0, AF_UNIX)),
};

static const struct {
	const struct sc_rule *rules;
	size_t n;
} sc_role[ROLE_MAX] = {
	[ROLE_NETD]  = { sc_netd, nitems(sc_netd) },
	[ROLE_SCAND] = { sc_scand, nitems(sc_scand) },
	[ROLE_TLSD]  = { sc_tlsd, nitems(sc_tlsd) },
};

/* The parts of a role's policy that a flag adds. */
static const struct {
	enum imapgw_role role;
	unsigned int flag;
	const struct sc_rule *rules;
	size_t n;
} sc_optional[] = {
	{ ROLE_SCAND, SANDBOX_NET, sc_scand_net, nitems(sc_scand_net) },
};
/* clang-format on */

/* The flags of the policy this process loaded; -1: none loaded. */
static int sandbox_loaded = -1;

static int
role_sandboxed(enum imapgw_role role)
{
	return role == ROLE_NETD || role == ROLE_SCAND || role == ROLE_TLSD;
}

void
sandbox_role_limits(enum imapgw_role role, struct sandbox_limits *lim)
{
	size_t i;

	/* Not a sandboxed role: the strictest limits. */
	memset(lim, 0, sizeof(*lim));
	for (i = 0; i < nitems(role_limits); i++)
		if (role_limits[i].role == role)
			*lim = role_limits[i].lim;
}

unsigned int
sandbox_role_flags(enum imapgw_role role)
{
	unsigned int flags = 0;
	size_t i;

	for (i = 0; i < nitems(sc_optional); i++)
		if (sc_optional[i].role == role)
			flags |= sc_optional[i].flag;
	return flags;
}

unsigned int
sandbox_flags(enum imapgw_role role, const struct config *cfg)
{
	const struct cfg_spam *sp;
	size_t i;

	if (role != ROLE_SCAND || cfg == NULL)
		return 0;
	for (i = 0; i < cfg->nactions; i++) {
		sp = &cfg->actions[i].spamblocker;
		if (cfg->actions[i].used && sp->enabled &&
		    (sp->engine == SPAM_ENGINE_SPAMD ||
		        sp->engine == SPAM_ENGINE_RSPAMD))
			return SANDBOX_NET;
	}
	return 0;
}

const char *
sandbox_flags_text(enum imapgw_role role, unsigned int flags)
{
	if ((sandbox_role_flags(role) & SANDBOX_NET) == 0)
		return "";
	return (flags & SANDBOX_NET) ? "network" : "no network";
}

int
sandbox_current(unsigned int *flags)
{
	if (sandbox_loaded == -1)
		return 0;
	*flags = (unsigned int)sandbox_loaded;
	return 1;
}

const char *
sandbox_syscall_name(int nr)
{
	static char name[64];
	char *s;

	s = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	if (s == NULL) {
		snprintf(name, sizeof(name), "syscall_%d", nr);
		return name;
	}
	snprintf(name, sizeof(name), "%s", s);
	free(s);
	return name;
}

/*
 * "arg is a signal number other than sig", exact on all 64 bits: arg <
 * sig, or arg in (sig, _NSIG) written as aligned blocks with a full
 * 64-bit mask.  A plain 64-bit NE would let through sig | 1 << 32, which
 * the kernel reads as the int sig.
 */
static int
sc_add_not_signal(
    scmp_filter_ctx ctx, const struct sc_rule *r, const struct sc_check *c)
{
	struct scmp_arg_cmp cmp;
	uint64_t lo, hi, size;
	int rc;

	cmp = (struct scmp_arg_cmp){c->arg, SCMP_CMP_LT, c->val, 0};
	if ((rc = seccomp_rule_add_array(ctx, r->action, r->nr, 1, &cmp)) < 0)
		return rc;
	for (lo = c->val + 1, hi = _NSIG - 1; lo <= hi; lo += size) {
		for (size = 1; lo % (size * 2) == 0 && lo + size * 2 - 1 <= hi;)
			size *= 2;
		cmp = (struct scmp_arg_cmp){
		    c->arg, SCMP_CMP_MASKED_EQ, ~(size - 1), lo};
		rc = seccomp_rule_add_array(ctx, r->action, r->nr, 1, &cmp);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int
sc_add(scmp_filter_ctx ctx, const struct sc_rule *r, pid_t self)
{
	struct scmp_arg_cmp cmp[2];
	const struct sc_check *c;
	unsigned int i, n = 0;

	for (i = 0; i < nitems(r->chk); i++) {
		c = &r->chk[i];
		switch (c->op) {
		case SC_NONE:
			break;
		case SC_EQ:
			cmp[n++] = (struct scmp_arg_cmp){
			    c->arg, SCMP_CMP_EQ, c->val, 0};
			break;
		case SC_MASKED_EQ:
			cmp[n++] = (struct scmp_arg_cmp){
			    c->arg, SCMP_CMP_MASKED_EQ, c->mask, c->val};
			break;
		case SC_SELF:
			cmp[n++] = (struct scmp_arg_cmp){
			    c->arg, SCMP_CMP_EQ, (uint64_t)self, 0};
			break;
		case SC_NOT_SIGNAL:
			/* Only as the single check of its rule. */
			return sc_add_not_signal(ctx, r, c);
		}
	}
	return seccomp_rule_add_array(ctx, r->action, r->nr, n, cmp);
}

static int
sc_add_table(
    scmp_filter_ctx ctx, const struct sc_rule *rules, size_t n, pid_t self)
{
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		if ((rc = sc_add(ctx, &rules[i], self)) < 0) {
			log_warnx("sandbox: seccomp rule for %s: %s",
			    rules[i].name, strerror(-rc));
			return -1;
		}
	}
	return 0;
}

scmp_filter_ctx
sandbox_policy_ctx(enum imapgw_role role, unsigned int flags, pid_t self)
{
	scmp_filter_ctx ctx;
	size_t i;

	if (!role_sandboxed(role)) {
		log_warnx(
		    "sandbox: no seccomp policy for role %s", role_name(role));
		return NULL;
	}
	if (flags & ~sandbox_role_flags(role)) {
		log_warnx("sandbox: policy flags 0x%x unknown to role %s",
		    flags & ~sandbox_role_flags(role), role_name(role));
		return NULL;
	}
	/* TRAP, not KILL: the parent learns which call it was. */
	if ((ctx = seccomp_init(SCMP_ACT_TRAP)) == NULL) {
		log_warnx("sandbox: seccomp_init failed");
		return NULL;
	}
	/* Another ABI (int 0x80, x32) is not a system call to report. */
	if (seccomp_attr_set(
	        ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) < 0 ||
	    sc_add_table(ctx, sc_common, nitems(sc_common), self) == -1 ||
	    sc_add_table(ctx, sc_role[role].rules, sc_role[role].n, self) == -1)
		goto fail;
	for (i = 0; i < nitems(sc_optional); i++)
		if (sc_optional[i].role == role &&
		    (flags & sc_optional[i].flag) &&
		    sc_add_table(ctx, sc_optional[i].rules, sc_optional[i].n,
		        self) == -1)
			goto fail;
	return ctx;
fail:
	log_warnx("sandbox: cannot build the seccomp policy");
	seccomp_release(ctx);
	return NULL;
}

/*
 * SIGSYS from the filter: report the system call number to the parent,
 * then die by SIGSYS.  Trapping instead of killing outright costs nothing
 * in safety:
 *  - the forbidden call is never executed, the handler runs instead;
 *  - SA_RESETHAND makes this handler run once; the tgkill below then
 *    meets the default action (terminate) and SA_NODEFER keeps SIGSYS
 *    unblocked meanwhile;
 *  - the filter refuses rt_sigaction(SIGSYS), so no other handler can
 *    take over and return;
 *  - blocking SIGSYS does not help: the kernel forces a seccomp SIGSYS
 *    through, resetting the handler to SIG_DFL (death without report).
 * If the report fd is not open the write fails and the process still
 * dies.  Only async-signal-safe raw system calls here.
 */
static void
sandbox_sigsys(int sig, siginfo_t *si, void *uctx)
{
	int nr;

	(void)uctx;
	if (si->si_code == SYS_SECCOMP) {
		nr = si->si_syscall;
		/* One 4-byte write to a pipe is atomic. */
		if (write(IMAPGW_REPORT_FD, &nr, sizeof(nr)) == -1) {
			/* Nobody to tell; die anyway. */
		}
	}
	syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), sig);
	/* Not reached: SIGSYS is at its default action now. */
	for (;;)
		syscall(SYS_exit_group, 128 + sig);
}

static int
sandbox_sigsys_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sandbox_sigsys;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) == -1) {
		log_warn("sandbox: sigaction SIGSYS");
		return -1;
	}
	return 0;
}

/*
 * Open the chroot directory and check that only root can change it.  The
 * checks are made on the open descriptor, which is also what we chroot
 * into, so the directory cannot be swapped in between.
 */
static int
sandbox_open_root(const char *root)
{
	struct stat st;
	int fd;

	if (root == NULL || root[0] != '/') {
		log_warnx("sandbox: chroot directory must be an absolute path");
		return -1;
	}
	fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1 && errno == ENOENT) {
		log_warnx("sandbox: chroot directory %s does not exist: "
		          "create it, owned by root, mode 0755",
		    root);
		return -1;
	}
	if (fd == -1) {
		log_warn("sandbox: chroot directory %s", root);
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		log_warn("sandbox: fstat %s", root);
		close(fd);
		return -1;
	}
	if (st.st_uid != 0) {
		log_warnx("sandbox: chroot directory %s is owned by uid %u, "
		          "not root: chown root %s",
		    root, (unsigned int)st.st_uid, root);
		close(fd);
		return -1;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		log_warnx("sandbox: chroot directory %s is writable by group "
		          "or others (mode %04o): chmod go-w %s",
		    root, (unsigned int)(st.st_mode & 07777), root);
		close(fd);
		return -1;
	}
	return fd;
}

static int
sandbox_chroot(const char *root)
{
	int fd;

	if ((fd = sandbox_open_root(root)) == -1)
		return -1;
	if (fchdir(fd) == -1 || chroot(".") == -1 || chdir("/") == -1) {
		log_warn("sandbox: chroot %s", root);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int
sandbox_drop_ids(uid_t uid, gid_t gid)
{
	if (setgroups(1, &gid) == -1) {
		log_warn("sandbox: setgroups %u", (unsigned int)gid);
		return -1;
	}
	if (setresgid(gid, gid, gid) == -1) {
		log_warn("sandbox: setresgid %u", (unsigned int)gid);
		return -1;
	}
	if (setresuid(uid, uid, uid) == -1) {
		log_warn("sandbox: setresuid %u", (unsigned int)uid);
		return -1;
	}
	return 0;
}

static int
sandbox_no_caps(void)
{
	struct __user_cap_header_struct hdr;
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	size_t i;

	memset(&hdr, 0, sizeof(hdr));
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	if (syscall(SYS_capget, &hdr, data) == -1)
		return 0;
	for (i = 0; i < nitems(data); i++)
		if (data[i].effective || data[i].permitted ||
		    data[i].inheritable)
			return 0;
	return 1;
}

/* Trust nothing: check that the drop took and cannot be undone. */
static int
sandbox_verify_ids(uid_t uid, gid_t gid)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg, groups[2];

	if (getresuid(&ru, &eu, &su) == -1 || ru != uid || eu != uid ||
	    su != uid || getresgid(&rg, &eg, &sg) == -1 || rg != gid ||
	    eg != gid || sg != gid) {
		log_warnx("sandbox: user/group ids did not change to %u/%u",
		    (unsigned int)uid, (unsigned int)gid);
		return -1;
	}
	if (getgroups(2, groups) != 1 || groups[0] != gid) {
		log_warnx("sandbox: supplementary groups not dropped");
		return -1;
	}
	if (setuid(0) != -1 || setgid(0) != -1) {
		log_warnx("sandbox: could regain root after dropping it");
		return -1;
	}
	if (!sandbox_no_caps()) {
		log_warnx("sandbox: capabilities remain after dropping root");
		return -1;
	}
	return 0;
}

static int
sandbox_set_limits(enum imapgw_role role)
{
	struct sandbox_limits lim;
	struct rlimit rl;
	size_t i;

	sandbox_role_limits(role, &lim);
	const struct {
		int res;
		const char *name;
		rlim_t val;
	} res[] = {
	    {RLIMIT_NOFILE, "RLIMIT_NOFILE", lim.nofile},
	    {RLIMIT_NPROC, "RLIMIT_NPROC", lim.nproc},
	    {RLIMIT_CORE, "RLIMIT_CORE", lim.core},
	    {RLIMIT_FSIZE, "RLIMIT_FSIZE", lim.fsize},
	    {RLIMIT_AS, "RLIMIT_AS", lim.as},
	};

	for (i = 0; i < nitems(res); i++) {
		rl.rlim_cur = rl.rlim_max = res[i].val;
		if (setrlimit(res[i].res, &rl) == -1) {
			/* Typically a lower hard limit set by the service
			 * manager, which we can no longer raise. */
			log_warn("sandbox: setrlimit %s %llu (is the hard "
			         "limit of imapgwd lower?)",
			    res[i].name, (unsigned long long)rl.rlim_max);
			return -1;
		}
	}
	return 0;
}

static int
sandbox_seccomp(enum imapgw_role role, unsigned int flags)
{
	scmp_filter_ctx ctx;
	int rc;

	if ((ctx = sandbox_policy_ctx(role, flags, getpid())) == NULL)
		return -1;
	/* Cover every thread, should a library have started one. */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) < 0 ||
	    (rc = seccomp_load(ctx)) < 0) {
		log_warnx("sandbox: seccomp_load: %s", strerror(-rc));
		seccomp_release(ctx);
		return -1;
	}
	seccomp_release(ctx);
	sandbox_loaded = (int)flags;
	return 0;
}

int
sandbox_enter_flags(enum imapgw_role role, unsigned int flags, const char *root,
    uid_t uid, gid_t gid)
{
	if (!role_sandboxed(role)) {
		log_warnx("sandbox: role %s has no sandbox", role_name(role));
		return -1;
	}
	if (flags & ~sandbox_role_flags(role)) {
		log_warnx("sandbox: policy flags 0x%x unknown to role %s",
		    flags & ~sandbox_role_flags(role), role_name(role));
		return -1;
	}
	if (geteuid() != 0) {
		log_warnx("sandbox: must start as root to chroot and drop "
		          "privileges");
		return -1;
	}
	if (uid == 0 || gid == 0) {
		log_warnx("sandbox: refusing to run a child as uid/gid 0");
		return -1;
	}
	if (sandbox_chroot(root) == -1 || sandbox_drop_ids(uid, gid) == -1 ||
	    sandbox_verify_ids(uid, gid) == -1 ||
	    sandbox_set_limits(role) == -1)
		return -1;
	/*
	 * Dumpable is left as the kernel set it on the uid change: the
	 * parent (root, CAP_SYS_PTRACE) must still be able to audit us.
	 */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
		log_warn("sandbox: prctl PR_SET_NO_NEW_PRIVS");
		return -1;
	}
	if (sandbox_sigsys_install() == -1 ||
	    sandbox_seccomp(role, flags) == -1)
		return -1;
	return 0;
}

#ifdef IMAPGW_TEST_HOOKS
void
sandbox_test_violate(void)
{
	/* No role allows ptrace. */
	syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0);
}
#endif
