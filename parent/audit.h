/*
 * Audit of a running child: does what /proc and the kernel say about the
 * process (ids, root, no_new_privs, limits, the seccomp filter it runs
 * under) match the policy of its role in common/sandbox.c?
 */
#ifndef IMAPGW_AUDIT_H
#define IMAPGW_AUDIT_H

#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

#include "buf.h"
#include "imapgw.h"

/*
 * Append a report to out, one check per line, each starting with "ok" or
 * "DIFF", ending with "audit <role> pid <pid>: N differences".  Returns
 * N, or -1 if the process cannot be read (gone, or no permission).
 * flags are the policy flags the child was started with (SANDBOX_NET,
 * see common/sandbox.h): the expected filter is the role's policy with
 * them.  For a role that may have SANDBOX_NET (scand) the first line
 * says "(network)" or "(no network)", and a "network" line compares
 * what the expected and the live filter do with a TCP socket and
 * connect.
 *
 * The parent calls this from its event loop for its own child, with no
 * other waitpid(-1) running at the same time: the filter is read under a
 * short ptrace stop, and waiting for that stop with waitpid(pid, __WALL)
 * must not race with a reaper that would take the stop (or the child's
 * exit) for itself.  The child is detached and running again when this
 * returns, on every path.  Needs root (CAP_SYS_ADMIN) and a parent that is
 * not under seccomp itself.
 */
int audit_child(pid_t, enum imapgw_role, unsigned int flags,
    const char *expect_root, uid_t expect_uid, gid_t expect_gid,
    struct buf *out);

/* How a filter treats a system call over all the argument values tried. */
enum audit_class {
	AUDIT_ALLOW = 0,
	AUDIT_ERRNO, /* answered with an error */
	AUDIT_TRAP, /* SIGSYS: the sandbox's "forbidden" */
	AUDIT_KILL, /* kill process or thread */
	AUDIT_OTHER, /* log, trace, user notification */
	AUDIT_COND, /* depends on the arguments */
};

/*
 * Run a classic-BPF seccomp program on one input; *action is the value it
 * returns.  -1 if the program is malformed or uses an instruction the
 * interpreter does not know.
 */
int audit_bpf_run(const struct sock_filter *, size_t n,
    const struct seccomp_data *, uint32_t *action);

/*
 * Classify system call nr of architecture arch (an AUDIT_ARCH_* value)
 * under the program: tries the argument values the program compares with
 * and describes the outcome in desc ("allow", "errno(EACCES)", "trap",
 * "cond(allow|trap)").  Returns an enum audit_class, -1 on error.
 */
int audit_bpf_classify(const struct sock_filter *, size_t n, uint32_t arch,
    int nr, char *desc, size_t desclen);

#endif
