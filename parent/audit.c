/*
 * Audit of a running child against the policy of its role.
 *
 * Identity, root, no_new_privs and limits come from /proc/<pid>.  The
 * system calls are compared by behaviour, not by bytes: the filter the
 * kernel holds for the child (PTRACE_SECCOMP_GET_FILTER) and the filter
 * the role's policy compiles to (seccomp_export_bpf) both run in a small
 * classic-BPF interpreter for every system call number, with the
 * argument values either program compares against, and every outcome
 * must agree.  The policy is the role's with the flags the child was
 * started with (scand: network access or not, common/sandbox.c).
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <seccomp.h>

#include "audit.h"
#include "buf.h"
#include "imapgw.h"
#include "log.h"
#include "sandbox.h"

#ifndef PTRACE_SECCOMP_GET_FILTER
#define PTRACE_SECCOMP_GET_FILTER 0x420c
#endif

#define AUDIT_NR_MAX 512 /* system call numbers tried: 0..511 */
#define AUDIT_MAX_PROBES 256 /* argument vectors per system call */
#define AUDIT_MAX_NOTES 64 /* comparisons remembered per run */

/* A conditional jump on (argument word at off & mask) against k. */
struct bpf_note {
	uint32_t off;
	uint32_t mask;
	uint32_t k;
	uint16_t op; /* BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET */
	int taken;
};

struct bpf_trace {
	size_t n;
	struct bpf_note note[AUDIT_MAX_NOTES];
};

/* The inputs a system call is tried with. */
struct probes {
	size_t n;
	int full;
	struct seccomp_data d[AUDIT_MAX_PROBES];
};

/* A check's outcome, for the report and the count. */
struct audit {
	struct buf *out;
	int diffs;
};

#define NO_ARG UINT32_MAX

static int
bpf_alu(const struct sock_filter *in, uint32_t *a, uint32_t x)
{
	uint32_t v = BPF_SRC(in->code) == BPF_X ? x : in->k;

	switch (BPF_OP(in->code)) {
	case BPF_ADD:
		*a += v;
		break;
	case BPF_SUB:
		*a -= v;
		break;
	case BPF_MUL:
		*a *= v;
		break;
	case BPF_DIV:
	case BPF_MOD:
		if (v == 0)
			return 1; /* the kernel returns 0: kill */
		*a = BPF_OP(in->code) == BPF_DIV ? *a / v : *a % v;
		break;
	case BPF_OR:
		*a |= v;
		break;
	case BPF_AND:
		*a &= v;
		break;
	case BPF_XOR:
		*a ^= v;
		break;
	case BPF_LSH:
	case BPF_RSH:
		if (v >= 32)
			return -1;
		*a = BPF_OP(in->code) == BPF_LSH ? *a << v : *a >> v;
		break;
	case BPF_NEG:
		*a = -*a;
		break;
	default:
		return -1;
	}
	return 0;
}

static int
bpf_cond(const struct sock_filter *in, uint32_t a, uint32_t x)
{
	uint32_t v = BPF_SRC(in->code) == BPF_X ? x : in->k;

	switch (BPF_OP(in->code)) {
	case BPF_JEQ:
		return a == v;
	case BPF_JGT:
		return a > v;
	case BPF_JGE:
		return a >= v;
	case BPF_JSET:
		return (a & v) != 0;
	}
	return -1;
}

static void
bpf_note(struct bpf_trace *t, uint32_t off, uint32_t mask,
    const struct sock_filter *in, int taken)
{
	if (t == NULL || off == NO_ARG ||
	    off < offsetof(struct seccomp_data, args) ||
	    t->n == AUDIT_MAX_NOTES)
		return;
	t->note[t->n++] =
	    (struct bpf_note){off, mask, in->k, BPF_OP(in->code), taken};
}

/* Loads; *aoff tracks which argument word A holds, if any. */
static int
bpf_load(const struct sock_filter *in, const struct seccomp_data *d,
    uint32_t *a, uint32_t *x, uint32_t *mem, uint32_t *aoff)
{
	switch (in->code) {
	case BPF_LD | BPF_W | BPF_ABS:
		if (in->k % 4 || in->k > sizeof(*d) - 4)
			return -1;
		memcpy(a, (const char *)d + in->k, sizeof(*a));
		*aoff = in->k;
		return 0;
	case BPF_LD | BPF_W | BPF_LEN:
		*a = sizeof(*d);
		break;
	case BPF_LD | BPF_IMM:
		*a = in->k;
		break;
	case BPF_LD | BPF_MEM:
		if (in->k >= BPF_MEMWORDS)
			return -1;
		*a = mem[in->k];
		break;
	case BPF_LDX | BPF_W | BPF_LEN:
		*x = sizeof(*d);
		return 0;
	case BPF_LDX | BPF_IMM:
		*x = in->k;
		return 0;
	case BPF_LDX | BPF_MEM:
		if (in->k >= BPF_MEMWORDS)
			return -1;
		*x = mem[in->k];
		return 0;
	default:
		return -1;
	}
	*aoff = NO_ARG;
	return 0;
}

/* The interpreter proper; t, if set, collects comparisons on arguments. */
static int
bpf_exec(const struct sock_filter *f, size_t n, const struct seccomp_data *d,
    uint32_t *action, struct bpf_trace *t)
{
	uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {0};
	uint32_t aoff = NO_ARG, amask = UINT32_MAX;
	const struct sock_filter *in;
	size_t pc;
	int c;

	/* Jumps only go forward, so this ends within n steps. */
	for (pc = 0; pc < n; pc++) {
		in = &f[pc];
		switch (BPF_CLASS(in->code)) {
		case BPF_LD:
		case BPF_LDX:
			if (bpf_load(in, d, &a, &x, mem, &aoff) == -1)
				return -1;
			if (BPF_CLASS(in->code) == BPF_LD)
				amask = UINT32_MAX;
			break;
		case BPF_ST:
		case BPF_STX:
			if (in->k >= BPF_MEMWORDS)
				return -1;
			mem[in->k] = BPF_CLASS(in->code) == BPF_ST ? a : x;
			break;
		case BPF_ALU:
			if (BPF_OP(in->code) == BPF_AND &&
			    BPF_SRC(in->code) == BPF_K)
				amask &= in->k;
			else
				aoff = NO_ARG;
			if ((c = bpf_alu(in, &a, x)) != 0) {
				*action = 0;
				return c == 1 ? 0 : -1;
			}
			break;
		case BPF_JMP:
			if (BPF_OP(in->code) == BPF_JA) {
				if (in->k >= n - pc - 1)
					return -1;
				pc += in->k;
				break;
			}
			if ((c = bpf_cond(in, a, x)) == -1)
				return -1;
			if (BPF_SRC(in->code) == BPF_K)
				bpf_note(t, aoff, amask, in, c);
			if ((size_t)(c ? in->jt : in->jf) >= n - pc - 1)
				return -1;
			pc += c ? in->jt : in->jf;
			break;
		case BPF_RET:
			if (BPF_RVAL(in->code) == BPF_K)
				*action = in->k;
			else if (BPF_RVAL(in->code) == BPF_A)
				*action = a;
			else
				return -1;
			return 0;
		case BPF_MISC:
			if (BPF_MISCOP(in->code) == BPF_TAX)
				x = a;
			else if (BPF_MISCOP(in->code) == BPF_TXA) {
				a = x;
				aoff = NO_ARG;
			} else
				return -1;
			break;
		default:
			return -1;
		}
	}
	return -1; /* ran off the end */
}

int
audit_bpf_run(const struct sock_filter *f, size_t n,
    const struct seccomp_data *d, uint32_t *action)
{
	return bpf_exec(f, n, d, action, NULL);
}

static void
probes_init(struct probes *p, uint32_t arch, int nr)
{
	memset(p, 0, sizeof(*p));
	p->n = 1;
	p->d[0].nr = nr;
	p->d[0].arch = arch;
}

static void
probes_add(struct probes *p, const struct seccomp_data *d)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		if (memcmp(&p->d[i], d, sizeof(*d)) == 0)
			return;
	if (p->n == AUDIT_MAX_PROBES) {
		p->full = 1;
		return;
	}
	p->d[p->n++] = *d;
}

/*
 * The argument word w changed so that jump note takes its other branch.
 * 0 if no value can (a test on no bits, a constant outside the mask).
 */
static int
note_flip(const struct bpf_note *nt, uint32_t w, uint32_t *out)
{
	uint32_t m = nt->mask, k = nt->k, rest = w & ~m;

	switch (nt->op) {
	case BPF_JEQ:
		if (nt->taken && m != 0)
			*out = w ^ (m & -m); /* lowest bit tested */
		else if (!nt->taken && (k & ~m) == 0)
			*out = rest | k;
		else
			return 0;
		return 1;
	case BPF_JGT:
		if (nt->taken)
			*out = rest | (k & m); /* A <= k */
		else if (m > k)
			*out = rest | m; /* A at its largest */
		else
			return 0;
		return 1;
	case BPF_JGE:
		if (nt->taken && k > 0)
			*out = rest | ((k - 1) & m);
		else if (!nt->taken && m >= k)
			*out = rest | m;
		else
			return 0;
		return 1;
	case BPF_JSET:
		if (nt->taken)
			*out = w & ~(k & m);
		else if ((k & m) != 0)
			*out = w | (k & m);
		else
			return 0;
		return 1;
	}
	return 0;
}

/*
 * Find the inputs that take every path through the program: run each
 * input, and for every jump it made on an argument word add the input
 * changed to take the other branch.  Paths that need two arguments
 * (socket domain and type) are reached one jump after the other.
 */
static int
probes_explore(struct probes *p, const struct sock_filter *f, size_t n)
{
	struct bpf_trace t;
	struct seccomp_data d;
	uint32_t action, w;
	size_t i, j;

	for (i = 0; i < p->n; i++) {
		t.n = 0;
		if (bpf_exec(f, n, &p->d[i], &action, &t) == -1)
			return -1;
		for (j = 0; j < t.n; j++) {
			d = p->d[i];
			memcpy(&w, (char *)&d + t.note[j].off, sizeof(w));
			if (!note_flip(&t.note[j], w, &w))
				continue;
			memcpy((char *)&d + t.note[j].off, &w, sizeof(w));
			probes_add(p, &d);
		}
	}
	return 0;
}

static enum audit_class
action_class(uint32_t action)
{
	switch (action & SECCOMP_RET_ACTION_FULL) {
	case SECCOMP_RET_ALLOW:
		return AUDIT_ALLOW;
	case SECCOMP_RET_ERRNO:
		return AUDIT_ERRNO;
	case SECCOMP_RET_TRAP:
		return AUDIT_TRAP;
	case SECCOMP_RET_LOG:
	case SECCOMP_RET_TRACE:
	case SECCOMP_RET_USER_NOTIF:
		return AUDIT_OTHER;
	default:
		/* KILL_PROCESS, KILL_THREAD, and unknown (the kernel kills) */
		return AUDIT_KILL;
	}
}

static void
filter_action_name(uint32_t action, char *s, size_t len)
{
	uint32_t data = action & SECCOMP_RET_DATA;
	const char *e;

	switch (action & SECCOMP_RET_ACTION_FULL) {
	case SECCOMP_RET_ALLOW:
		snprintf(s, len, "allow");
		break;
	case SECCOMP_RET_ERRNO:
		if ((e = strerrorname_np((int)data)) != NULL)
			snprintf(s, len, "errno(%s)", e);
		else
			snprintf(s, len, "errno(%u)", (unsigned int)data);
		break;
	case SECCOMP_RET_TRAP:
		snprintf(s, len, "trap");
		break;
	case SECCOMP_RET_KILL_PROCESS:
		snprintf(s, len, "kill_process");
		break;
	case SECCOMP_RET_KILL_THREAD:
		snprintf(s, len, "kill_thread");
		break;
	case SECCOMP_RET_LOG:
		snprintf(s, len, "log");
		break;
	case SECCOMP_RET_TRACE:
		snprintf(s, len, "trace(%u)", (unsigned int)data);
		break;
	case SECCOMP_RET_USER_NOTIF:
		snprintf(s, len, "user_notif");
		break;
	default:
		snprintf(s, len, "unknown(0x%08x)", (unsigned int)action);
		break;
	}
}

/* Order of outcomes in "cond(...)": by class, then by value. */
static int
action_before(uint32_t a, uint32_t b)
{
	if (action_class(a) != action_class(b))
		return action_class(a) < action_class(b);
	return a < b;
}

/* Describe the outcomes of f over all probes: "allow", "cond(a|b)". */
static int
probes_describe(const struct probes *p, const struct sock_filter *f, size_t n,
    char *desc, size_t len)
{
	uint32_t seen[8] = {0}, action;
	size_t i, j, nseen = 0;
	char name[40];
	int class;

	for (i = 0; i < p->n; i++) {
		if (bpf_exec(f, n, &p->d[i], &action, NULL) == -1)
			return -1;
		for (j = 0; j < nseen && seen[j] != action; j++)
			;
		if (j < nseen || nseen == sizeof(seen) / sizeof(seen[0]))
			continue;
		/* Insert sorted, so the text does not depend on the order
		 * the inputs were found in. */
		for (j = nseen++; j > 0 && action_before(action, seen[j - 1]);
		     j--)
			seen[j] = seen[j - 1];
		seen[j] = action;
	}
	filter_action_name(seen[0], desc, len);
	class = action_class(seen[0]);
	if (nseen == 1)
		return class;
	snprintf(desc, len, "cond(");
	for (j = 0; j < nseen; j++) {
		filter_action_name(seen[j], name, sizeof(name));
		strncat(desc, name, len - strlen(desc) - 1);
		strncat(
		    desc, j + 1 < nseen ? "|" : ")", len - strlen(desc) - 1);
	}
	return AUDIT_COND;
}

int
audit_bpf_classify(const struct sock_filter *f, size_t n, uint32_t arch, int nr,
    char *desc, size_t desclen)
{
	struct probes *p;
	int class = -1;

	if ((p = malloc(sizeof(*p))) == NULL)
		return -1;
	probes_init(p, arch, nr);
	if (probes_explore(p, f, n) == 0)
		class = probes_describe(p, f, n, desc, desclen);
	if (class == -1)
		snprintf(desc, desclen, "error");
	free(p);
	return class;
}

/* The first input on which the two programs disagree, or -1. */
static int
probes_differ(const struct probes *p, const struct sock_filter *f1, size_t n1,
    const struct sock_filter *f2, size_t n2)
{
	uint32_t a1, a2;
	size_t i;

	for (i = 0; i < p->n; i++) {
		if (bpf_exec(f1, n1, &p->d[i], &a1, NULL) == -1 ||
		    bpf_exec(f2, n2, &p->d[i], &a2, NULL) == -1)
			return (int)i;
		if (a1 != a2)
			return (int)i;
	}
	return -1;
}

static void
audit_line(struct audit *a, int ok, const char *what, const char *expect,
    const char *live)
{
	if (!ok)
		a->diffs++;
	buf_printf(a->out, "%-4s %-22s expected %-24s live %s\n",
	    ok ? "ok" : "DIFF", what, expect, live);
}

static void
audit_str(
    struct audit *a, const char *what, const char *expect, const char *live)
{
	audit_line(a, strcmp(expect, live) == 0, what, expect, live);
}

/* Value of "Name:" in /proc/<pid>/status, tabs turned into spaces. */
static int
status_field(const char *status, const char *name, char *val, size_t len)
{
	const char *p = status, *e;
	size_t nl = strlen(name), i;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, name, nl) == 0 && p[nl] == ':') {
			p += nl + 1;
			p += strspn(p, " \t");
			e = strchr(p, '\n');
			if (e == NULL)
				e = p + strlen(p);
			while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if ((size_t)(e - p) >= len)
				return -1;
			for (i = 0; p + i < e; i++)
				val[i] = p[i] == '\t' ? ' ' : p[i];
			val[i] = '\0';
			return 0;
		}
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	}
	return -1;
}

static int
read_text(const char *path, char *out, size_t len)
{
	FILE *f;
	size_t n;

	if ((f = fopen(path, "re")) == NULL)
		return -1;
	n = fread(out, 1, len - 1, f);
	out[n] = '\0';
	fclose(f);
	return n == 0 ? -1 : 0;
}

static void
audit_status_field(struct audit *a, const char *status, const char *field,
    const char *what, const char *expect)
{
	char live[256];

	if (status_field(status, field, live, sizeof(live)) == -1)
		snprintf(live, sizeof(live), "(missing)");
	audit_str(a, what, expect, live);
}

/* How many filters the parent itself runs under: the child inherits them. */
static int
own_filters(void)
{
	char status[8192], v[32];

	if (read_text("/proc/self/status", status, sizeof(status)) == -1 ||
	    status_field(status, "Seccomp_filters", v, sizeof(v)) == -1)
		return 0;
	return atoi(v);
}

static void
audit_identity(struct audit *a, const char *status, uid_t uid, gid_t gid)
{
	char e[128];
	unsigned int u = uid, g = gid;

	snprintf(e, sizeof(e), "%u %u %u %u", u, u, u, u);
	audit_status_field(a, status, "Uid", "uid", e);
	snprintf(e, sizeof(e), "%u %u %u %u", g, g, g, g);
	audit_status_field(a, status, "Gid", "gid", e);
	snprintf(e, sizeof(e), "%u", g);
	audit_status_field(a, status, "Groups", "groups", e);
	audit_status_field(
	    a, status, "CapPrm", "cap_permitted", "0000000000000000");
	audit_status_field(
	    a, status, "CapEff", "cap_effective", "0000000000000000");
	audit_status_field(a, status, "NoNewPrivs", "no_new_privs", "1");
	audit_status_field(a, status, "Seccomp", "seccomp_mode", "2");
	snprintf(e, sizeof(e), "%d", own_filters() + 1);
	audit_status_field(a, status, "Seccomp_filters", "seccomp_filters", e);
}

static void
audit_root(struct audit *a, pid_t pid, const char *expect_root)
{
	char path[64], live[PATH_MAX], expect[PATH_MAX];
	ssize_t n;

	if (realpath(expect_root, expect) == NULL)
		snprintf(expect, sizeof(expect), "%s", expect_root);
	snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
	if ((n = readlink(path, live, sizeof(live) - 1)) == -1)
		snprintf(
		    live, sizeof(live), "(unreadable: %s)", strerror(errno));
	else
		live[n] = '\0';
	audit_str(a, "root", expect, live);
}

static void
limit_text(rlim_t v, char *s, size_t len)
{
	if (v == RLIM_INFINITY)
		snprintf(s, len, "unlimited");
	else
		snprintf(s, len, "%llu", (unsigned long long)v);
}

/* "Max open files            8192     8192     files": soft and hard. */
static void
limits_field(const char *limits, const char *name, char *val, size_t len)
{
	const char *p = limits;
	char soft[32], hard[32];

	snprintf(val, len, "(missing)");
	while (p != NULL && *p != '\0') {
		if (strncmp(p, name, strlen(name)) == 0 &&
		    p[strlen(name)] == ' ') {
			if (sscanf(p + strlen(name), "%31s %31s", soft, hard) ==
			    2)
				snprintf(val, len, "%s %s", soft, hard);
			return;
		}
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	}
}

static void
audit_limits(struct audit *a, pid_t pid, enum imapgw_role role)
{
	struct sandbox_limits lim;
	char path[64], limits[4096], live[80], expect[80], v[32];
	size_t i;

	sandbox_role_limits(role, &lim);
	const struct {
		const char *what, *proc;
		rlim_t val;
	} res[] = {
	    {"rlimit_nofile", "Max open files", lim.nofile},
	    {"rlimit_nproc", "Max processes", lim.nproc},
	    {"rlimit_core", "Max core file size", lim.core},
	    {"rlimit_fsize", "Max file size", lim.fsize},
	    {"rlimit_as", "Max address space", lim.as},
	};

	snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
	if (read_text(path, limits, sizeof(limits)) == -1)
		limits[0] = '\0';
	for (i = 0; i < sizeof(res) / sizeof(res[0]); i++) {
		limit_text(res[i].val, v, sizeof(v));
		snprintf(expect, sizeof(expect), "%s %s", v, v);
		limits_field(limits, res[i].proc, live, sizeof(live));
		audit_str(a, res[i].what, expect, live);
	}
}

/*
 * Stop pid under ptrace.  *sig is a signal caught in delivery, to be
 * handed back on detach.  An exit seen while waiting is left unreaped
 * (WNOWAIT) for the parent's own reaper.
 */
static int
audit_seize(pid_t pid, int *sig)
{
	siginfo_t si;
	int st;

	*sig = 0;
	if (ptrace(PTRACE_SEIZE, pid, 0, 0) == -1)
		return -1;
	/* Only fails if the tracee is gone, which also ends the trace. */
	if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) == -1)
		return -1;
	for (;;) {
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, pid, &si,
		        WEXITED | WSTOPPED | __WALL | WNOWAIT) == 0)
			break;
		if (errno != EINTR)
			return -1;
	}
	if (si.si_code != CLD_TRAPPED && si.si_code != CLD_STOPPED) {
		errno = ESRCH;
		return -1;
	}
	if (waitpid(pid, &st, __WALL | WNOHANG) != pid || !WIFSTOPPED(st))
		return -1;
	/* A signal-delivery stop, not our interrupt: pass it on. */
	if ((st >> 16) == 0 && WSTOPSIG(st) != SIGTRAP)
		*sig = WSTOPSIG(st);
	return 0;
}

/* The filter the kernel runs for pid (the last one installed). */
static int
audit_live_bpf(
    pid_t pid, struct sock_filter **f, size_t *n, char *err, size_t errlen)
{
	long count;
	int sig, rc = -1;

	*f = NULL;
	if (audit_seize(pid, &sig) == -1) {
		snprintf(err, errlen, "ptrace: %s", strerror(errno));
		return -1;
	}
	count = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0, NULL);
	if (count <= 0 || count > BPF_MAXINSNS)
		snprintf(err, errlen, "PTRACE_SECCOMP_GET_FILTER: %s",
		    count == -1 ? strerror(errno) : "bad length");
	else if ((*f = calloc(count, sizeof(**f))) == NULL)
		snprintf(err, errlen, "out of memory");
	else if (ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0, *f) != count)
		snprintf(err, errlen, "PTRACE_SECCOMP_GET_FILTER: %s",
		    strerror(errno));
	else {
		*n = count;
		rc = 0;
	}
	if (ptrace(PTRACE_DETACH, pid, 0, sig) == -1)
		log_warn("audit: ptrace detach pid %d", (int)pid);
	if (rc == -1) {
		free(*f);
		*f = NULL;
	}
	return rc;
}

/* The filter the role's policy with flags compiles to, for process pid. */
static int
audit_policy_bpf(enum imapgw_role role, unsigned int flags, pid_t pid,
    struct sock_filter **f, size_t *n)
{
	scmp_filter_ctx ctx;
	struct stat st;
	int fd = -1, rc = -1;

	*f = NULL;
	if ((ctx = sandbox_policy_ctx(role, flags, pid)) == NULL)
		return -1;
	if ((fd = memfd_create("imapgw-audit", MFD_CLOEXEC)) == -1 ||
	    seccomp_export_bpf(ctx, fd) < 0 || fstat(fd, &st) == -1 ||
	    st.st_size <= 0 || st.st_size % sizeof(**f) != 0)
		goto done;
	if ((*f = malloc(st.st_size)) == NULL ||
	    pread(fd, *f, st.st_size, 0) != st.st_size)
		goto done;
	*n = st.st_size / sizeof(**f);
	rc = 0;
done:
	if (rc == -1) {
		free(*f);
		*f = NULL;
	}
	if (fd != -1)
		close(fd);
	seccomp_release(ctx);
	return rc;
}

static void
probe_args(const struct seccomp_data *d, char *s, size_t len)
{
	snprintf(s, len, "args 0x%llx 0x%llx 0x%llx 0x%llx 0x%llx 0x%llx",
	    (unsigned long long)d->args[0], (unsigned long long)d->args[1],
	    (unsigned long long)d->args[2], (unsigned long long)d->args[3],
	    (unsigned long long)d->args[4], (unsigned long long)d->args[5]);
}

/* One system call (or foreign-ABI input) in both programs. */
static int
audit_one(struct audit *a, struct probes *p, const char *what,
    const struct sock_filter *pol, size_t pn, const struct sock_filter *live,
    size_t ln, int always)
{
	char pd[96], ld[96], args[160];
	int pc, lc, d;

	if (probes_explore(p, pol, pn) == -1 ||
	    probes_explore(p, live, ln) == -1 ||
	    (pc = probes_describe(p, pol, pn, pd, sizeof(pd))) == -1 ||
	    (lc = probes_describe(p, live, ln, ld, sizeof(ld))) == -1) {
		a->diffs++;
		buf_printf(
		    a->out, "DIFF %-22s cannot evaluate a filter\n", what);
		return -1;
	}
	d = probes_differ(p, pol, pn, live, ln);
	if (d == -1 && !always && (pc == AUDIT_TRAP || pc == AUDIT_KILL) &&
	    (lc == AUDIT_TRAP || lc == AUDIT_KILL))
		return 0; /* forbidden in both: not listed */
	buf_printf(a->out, "%-4s syscall %-16s policy %-24s live %s\n",
	    d == -1 ? "ok" : "DIFF", what, pd, ld);
	if (d != -1) {
		a->diffs++;
		probe_args(&p->d[d], args, sizeof(args));
		buf_printf(a->out, "DIFF syscall %-16s first differs at %s\n",
		    what, args);
	}
	if (p->full)
		buf_printf(a->out,
		    "note syscall %-16s argument probes "
		    "truncated\n",
		    what);
	return 0;
}

static void
audit_syscalls(struct audit *a, const struct sock_filter *pol, size_t pn,
    const struct sock_filter *live, size_t ln)
{
	struct probes *p;
	uint32_t arch = seccomp_arch_native();
	int nr;

	buf_printf(a->out, "%-4s %-22s policy %u insns, live %u insns\n",
	    pn == ln && memcmp(pol, live, pn * sizeof(*pol)) == 0 ? "ok"
	                                                          : "note",
	    "seccomp_program", (unsigned int)pn, (unsigned int)ln);
	if ((p = malloc(sizeof(*p))) == NULL) {
		a->diffs++;
		buf_printf(a->out, "DIFF out of memory\n");
		return;
	}
	for (nr = 0; nr < AUDIT_NR_MAX; nr++) {
		probes_init(p, arch, nr);
		if (audit_one(a, p, sandbox_syscall_name(nr), pol, pn, live, ln,
		        0) == -1)
			break;
	}
	/* Other ABIs: the policy kills them outright. */
	probes_init(p, 0, 0);
	audit_one(a, p, "(foreign-arch)", pol, pn, live, ln, 1);
#ifdef __x86_64__
	probes_init(p, arch, 0x40000000); /* x32 read */
	audit_one(a, p, "(x32)", pol, pn, live, ln, 1);
#endif
	free(p);
}

/*
 * What a filter does with a TCP client as spam.c makes one: socket(
 * AF_INET and AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC) and
 * connect.  "tcp" if it allows all three, "none" if none.
 */
static const char *
filter_net(const struct sock_filter *f, size_t n)
{
	static const int domain[] = {AF_INET, AF_INET6, -1};
	struct seccomp_data d;
	uint32_t action;
	size_t i, allowed = 0;

	for (i = 0; i < sizeof(domain) / sizeof(domain[0]); i++) {
		memset(&d, 0, sizeof(d));
		d.arch = seccomp_arch_native();
		if (domain[i] != -1) {
			d.nr = SCMP_SYS(socket);
			d.args[0] = (uint64_t)domain[i];
			d.args[1] = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC;
		} else
			d.nr = SCMP_SYS(connect);
		if (bpf_exec(f, n, &d, &action, NULL) == -1)
			return "error";
		if (action_class(action) == AUDIT_ALLOW)
			allowed++;
	}
	if (allowed == i)
		return "tcp";
	return allowed == 0 ? "none" : "partial";
}

static void
audit_filter(
    struct audit *a, pid_t pid, enum imapgw_role role, unsigned int flags)
{
	struct sock_filter *pol = NULL, *live = NULL;
	size_t pn = 0, ln = 0;
	char err[160];

	if (audit_policy_bpf(role, flags, pid, &pol, &pn) == -1) {
		a->diffs++;
		buf_printf(a->out, "DIFF seccomp_program policy cannot be "
		                   "compiled\n");
	} else if (audit_live_bpf(pid, &live, &ln, err, sizeof(err)) == -1) {
		a->diffs++;
		buf_printf(
		    a->out, "DIFF seccomp_program live unreadable: %s\n", err);
	} else {
		/* scand: network access is a matter of configuration. */
		if (sandbox_role_flags(role) & SANDBOX_NET)
			audit_str(a, "network", filter_net(pol, pn),
			    filter_net(live, ln));
		audit_syscalls(a, pol, pn, live, ln);
	}
	free(pol);
	free(live);
}

int
audit_child(pid_t pid, enum imapgw_role role, unsigned int flags,
    const char *expect_root, uid_t expect_uid, gid_t expect_gid,
    struct buf *out)
{
	struct audit a = {out, 0};
	const char *what = sandbox_flags_text(role, flags);
	char path[64], status[8192];

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (pid <= 0 || read_text(path, status, sizeof(status)) == -1) {
		buf_printf(out, "audit %s pid %d: cannot read %s\n",
		    role_name(role), (int)pid, path);
		return -1;
	}
	buf_printf(out, "audit %s pid %d%s%s%s\n", role_name(role), (int)pid,
	    *what ? " (" : "", what, *what ? ")" : "");
	audit_identity(&a, status, expect_uid, expect_gid);
	audit_root(&a, pid, expect_root);
	audit_limits(&a, pid, role);
	audit_filter(&a, pid, role, flags);
	buf_printf(out, "audit %s pid %d: %d differences\n", role_name(role),
	    (int)pid, a.diffs);
	return a.diffs;
}
