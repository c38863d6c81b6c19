/*
 * tlsd: the TLS process, the only one that holds private keys.  It
 * terminates TLS for netd (implicit TLS listeners, STARTTLS) and
 * originates it to backends: netd passes a TCP socket with
 * IMSG_TLS_START and gets a plaintext socketpair end back with
 * IMSG_TLS_DONE (common/tls.h; the connections are in conn.c, the
 * contexts in ctx.c).
 *
 * OpenSSL is initialized before the sandbox, with the first config, so
 * that it reads its config file, the system CA bundle and its random
 * seed while it still may.  Each config (the first one, and each reload)
 * builds a new generation of contexts; connections in progress keep
 * the generation they started with.
 */
#include <malloc.h>
#include <signal.h>

#include "log.h"
#include "parent.h"
#include "proc.h"
#include "tls.h"
#include "tlsd.h"

static int
tlsd_load(struct child_env *env)
{
	struct tlsd_gen *g;

	if ((g = tlsd_gen_build(env->cfg)) == NULL)
		return -1;
	tlsd_set_current(g);
	tlsd_gen_unref(g);
	return 0;
}

static int
tlsd_pre_sandbox(struct child_env *env)
{
	if (tlsd_openssl_init() == -1)
		return -1;
	tlsd_conn_init(env->base, TLS_HANDSHAKE_TIMEOUT_MS);
	return tlsd_load(env);
}

static void
tlsd_config(struct child_env *env)
{
	uint32_t gen = env->cfg->generation;

	if (tlsd_load(env) == -1) {
		log_warnx("tls: config generation %u not applied", gen);
		return;
	}
	proc_compose(env->parent, IMSG_CFG_APPLIED, 0, -1, &gen, sizeof(gen));
}

static void
tlsd_status(uint32_t *sessions, uint64_t *total)
{
	*sessions = tlsd_sessions();
	*total = tlsd_total();
}

int
tlsd_main(int instance, int debug, int verbose)
{
	static const struct proc_worker_hooks hooks = {
	    .pre_sandbox = tlsd_pre_sandbox,
	    .config = tlsd_config,
	    .peer_gone = tlsd_peer_gone,
	    .status = tlsd_status,
	};

	/* A write to a socket netd or the peer closed is an error, not
	 * the end of the process. */
	signal(SIGPIPE, SIG_IGN);
	/* Every handshake allocates and frees OpenSSL's record buffers:
	 * keep the heap's top instead of a brk() up and down for each. */
	mallopt(M_TOP_PAD, 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
	/* and the relay buffers (TLSD_RELAY_MAX) from the heap too, not
	 * an mmap() and munmap() per connection */
	mallopt(M_MMAP_THRESHOLD, 2 * TLSD_RELAY_MAX);
	return proc_worker_main_hooks(
	    ROLE_TLSD, instance, debug, verbose, tlsd_peer_frame, &hooks);
}
