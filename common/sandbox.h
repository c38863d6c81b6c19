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

struct config;

/*
 * Parts of a role's seccomp policy that the configuration decides.
 *  SANDBOX_NET  scand: TCP clients, socket(AF_INET/AF_INET6, SOCK_STREAM)
 *               and connect, for spamBlocker's spamd and rspamd engines.
 * A child computes its flags with sandbox_flags() from the config it has
 * when it enters its sandbox; the parent computes them from the same
 * config when it starts the child, keeps them for as long as the child
 * runs (a reload does not change a loaded filter) and audits the child
 * against the policy of those flags.
 */
#define SANDBOX_NET 0x01

/* The flags role's policy needs for cfg: SANDBOX_NET for scand when an
 * action in use (used) has spamBlocker enabled with engine spamd or
 * rspamd; 0 for every other role. */
unsigned int sandbox_flags(enum imapgw_role, const struct config *);
/* The flags role's policy may have at all (scand: SANDBOX_NET). */
unsigned int sandbox_role_flags(enum imapgw_role);
/* "network" or "no network" for a role that may have SANDBOX_NET, ""
 * for the others (static). */
const char *sandbox_flags_text(enum imapgw_role, unsigned int flags);

/*
 * Confine the calling process for good: chroot(root), become uid/gid,
 * set the role's limits and install its seccomp filter with flags.  Must
 * be called as root by a single-threaded process.  -1 (logged, naming the
 * step that failed) on any error: the caller must exit, never run
 * unconfined.
 */
int sandbox_enter_flags(
    enum imapgw_role, unsigned int flags, const char *root, uid_t, gid_t);

/*
 * 1 and *flags the flags of the policy this process loaded, if it entered
 * a sandbox; 0 if it runs unconfined.
 */
int sandbox_current(unsigned int *flags);

/*
 * The role's seccomp policy with flags as a libseccomp context, not
 * loaded.  self is the pid of the process that runs under it (tgkill may
 * only signal itself).  The caller releases it with seccomp_release().
 * NULL on error, or if flags has a bit the role does not know.
 */
scmp_filter_ctx sandbox_policy_ctx(
    enum imapgw_role, unsigned int flags, pid_t self);

/* Name of a native system call number, or "syscall_<nr>" (static). */
const char *sandbox_syscall_name(int nr);

#ifdef IMAPGW_TEST_HOOKS
/* Make a system call no role allows: the caller dies by SIGSYS. */
void sandbox_test_violate(void);
#endif

#endif
