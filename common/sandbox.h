/*
 * The sandbox every child enters once it has loaded what it needs:
 * chroot, unprivileged user, resource limits, no_new_privs and a seccomp
 * allowlist made for its role.  The parent uses the same tables to audit
 * a running child (parent/audit.c), so the policy it prints is the one
 * the child runs under.
 */
#ifndef IMAPGW_SANDBOX_H
#define IMAPGW_SANDBOX_H

#include <sys/types.h>
#include <sys/resource.h>
#include <seccomp.h>

#include "imapgw.h"

/* Hard and soft limit alike; RLIM_INFINITY allowed. */
struct sandbox_limits {
	rlim_t nofile;
	rlim_t nproc;
	rlim_t core;
	rlim_t fsize;
	rlim_t as;
};

void sandbox_role_limits(enum imapgw_role, struct sandbox_limits *);

/*
 * Confine the calling process for good: chroot(root), become uid/gid,
 * set the role's limits and install its seccomp filter.  Must be called
 * as root by a single-threaded process.  -1 (logged, naming the step that
 * failed) on any error: the caller must exit, never run unconfined.
 */
int sandbox_enter(enum imapgw_role, const char *root, uid_t, gid_t);

/*
 * The role's seccomp policy as a libseccomp context, not loaded.  self is
 * the pid of the process that runs under it (tgkill may only signal
 * itself).  The caller releases it with seccomp_release().  NULL on error.
 */
scmp_filter_ctx sandbox_policy_ctx(enum imapgw_role, pid_t self);

/* Name of a native system call number, or "syscall_<nr>" (static). */
const char *sandbox_syscall_name(int nr);

#ifdef IMAPGW_TEST_HOOKS
/* Make a system call no role allows: the caller dies by SIGSYS. */
void sandbox_test_violate(void);
#endif

#endif
