/*
 * scand: the scanning process.  It runs in its own root (state_dir/scand)
 * with a private writable /tmp for libclamav, and serves the netd
 * workers: a message arrives as a memfd with IMSG_SCAN_REQ, the verdict
 * goes back with IMSG_SCAN_RES (common/scan.h).
 *
 * Startup, before the sandbox (proc_worker_main_hooks): GMime and its
 * charset converters, then one libclamav engine per database directory
 * of the actions the policies use.  A database that cannot be loaded
 * ends scand with an error: it never runs claiming to scan.  Right after
 * entering the sandbox, the engines are pointed at /tmp, the directory
 * is checked and a test message is scanned with each engine.
 *
 * A reload that needs an engine scand does not have (a new database
 * directory, antivirus turned on for an action) cannot be served from
 * inside the chroot: scand answers the request that finds out with
 * SCAN_ERROR and exits, and the parent starts a new scand that loads it.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "parent.h"
#include "proc.h"
#include "scand.h"

static struct child_env *scand_env;

static int
scand_pre_sandbox(struct child_env *env)
{
	char err[512];

	scand_env = env;
	if (scan_load(env->cfg, err, sizeof(err)) == -1) {
		log_warnx("cannot prepare scanning: %s", err);
		return -1;
	}
	return 0;
}

static int
scand_sandboxed(struct child_env *env)
{
	char err[512];

	(void)env;
	if (scan_ready(err, sizeof(err)) == -1) {
		log_warnx("cannot scan in the sandbox: %s", err);
		return -1;
	}
	return 0;
}

static void
scand_answer(struct proc_chan *c, uint32_t peerid, struct scan_res *res)
{
	struct buf b;
	int fd = res->fd;

	buf_init(&b, 0);
	res->fd = -1; /* the imsg layer closes it once sent */
	if (scan_res_write(res, &b) == -1 ||
	    proc_compose(c, IMSG_SCAN_RES, peerid, fd, b.data, b.len) == -1)
		log_warnx("cannot answer scan request %llu",
		    (unsigned long long)res->reqid);
	buf_free(&b);
}

static void
scand_scan(struct proc_chan *c, struct imsg *imsg)
{
	const struct config *cfg = scand_env->cfg;
	struct scan_req req;
	struct scan_res res;
	const char *missing;
	int r;

	r = scan_req_read(imsg, cfg, &req, &res);
	if (r == -1) {
		scan_req_clear(&req);
		proc_chan_fail(c, "malformed SCAN_REQ");
		return;
	}
	if (r == 0 && (missing = scan_missing(cfg)) != NULL) {
		log_warnx("the configuration needs %s, which this scand has "
		          "not loaded; restarting",
		    missing);
		scan_res_clear(&res);
		res.verdict = SCAN_ERROR;
		snprintf(res.reason, sizeof(res.reason),
		    "scand is restarting to load %s", missing);
		scand_answer(c, imsg->hdr.peerid, &res);
		imsgbuf_flush(&c->ib);
		scan_req_clear(&req);
		exit(0);
	}
	if (r == 0)
		scan_request(cfg, &req, &res);
	scand_answer(c, imsg->hdr.peerid, &res);
	scan_res_clear(&res);
	scan_req_clear(&req);
}

static void
scand_peer_frame(struct proc_chan *c, struct imsg *imsg)
{
	if (proc_peer_common(c, imsg))
		return;
	if (imsg->hdr.type == IMSG_SCAN_REQ && c->role == ROLE_NETD) {
		scand_scan(c, imsg);
		return;
	}
	proc_chan_fail(
	    c, "unexpected %s from peer", imsg_type_name(imsg->hdr.type));
}

int
scand_main(int instance, int debug, int verbose)
{
	static const struct proc_worker_hooks hooks = {
	    .pre_sandbox = scand_pre_sandbox,
	    .sandboxed = scand_sandboxed,
	};

	return proc_worker_main_hooks(
	    ROLE_SCAND, instance, debug, verbose, scand_peer_frame, &hooks);
}
