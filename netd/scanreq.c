/*
 * Scan requests from netd to scand.  See scanreq.h and common/scan.h.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "netd.h"
#include "peerreq.h"
#include "scanreq.h"

/* Longest a verdict may take beyond the action's own scan time limit. */
#define SCAN_GRACE_MS 30000

struct scan_req {
	struct peer_req pr; /* first: the peer_req is the scan_req */
	scan_cb cb;
};

static void req_fail(struct peer_req *, const char *why);

static struct peer_reqs reqs = {
    .role = ROLE_SCAND, .timeout = "scan timed out", .fail = req_fail};

static void
req_finish(struct scan_req *r, struct scan_result *res)
{
	peerreq_unlink(&r->pr);
	if (r->pr.arg)
		r->cb(r->pr.arg, res);
	else if (res->fd != -1)
		close(res->fd);
	free(r);
}

static void
req_fail(struct peer_req *pr, const char *why)
{
	struct scan_result res;

	memset(&res, 0, sizeof(res));
	res.verdict = SCAN_ERROR;
	res.fd = -1;
	snprintf(res.reason, sizeof(res.reason), "%s", why);
	req_finish((struct scan_req *)pr, &res);
}

struct scan_req *
scan_submit(struct netd *n, int fd, uint64_t size, int kind, int action,
    const char *policy, const char *user, const char *client,
    const struct scan_section *secs, unsigned nsect, uint32_t flags, scan_cb cb,
    void *arg)
{
	unsigned i;
	const struct cfg_action *act = &n->cur->cfg->actions[action];
	struct scan_req *r;
	struct buf b;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		fatal("calloc");
	r->cb = cb;
	peerreq_add(&reqs, &r->pr, n, arg);
	if (r->pr.chan == NULL) {
		close(fd);
		peerreq_later(&r->pr, "no scanner available");
		return r;
	}
	buf_init(&b, 0);
	buf_add_u64(&b, r->pr.id);
	buf_add_u32(&b, (uint32_t)kind);
	buf_add_u32(&b, (uint32_t)action);
	buf_add_str(&b, user);
	buf_add_str(&b, client);
	buf_add_u64(&b, size);
	buf_add_u32(&b, nsect);
	for (i = 0; i < nsect; i++) {
		buf_add_u32(&b, (uint32_t)secs[i].binary);
		buf_add_str(&b, secs[i].spec);
	}
	buf_add_u32(&b, flags); /* never SCAN_F_REPORT here */
	buf_add_str(&b, policy);
	if (proc_compose(r->pr.chan, IMSG_SCAN_REQ, 0, fd, buf_head(&b),
	        buf_used(&b)) == -1) {
		buf_free(&b);
		r->pr.chan = NULL;
		peerreq_later(&r->pr, "cannot reach the scanner");
		return r;
	}
	buf_free(&b);
	peerreq_arm(&r->pr, act->antivirus.max_scan_time_ms + SCAN_GRACE_MS);
	return r;
}

void
scan_cancel(struct scan_req *r)
{
	if (r)
		r->pr.arg = NULL;
}

/* The result fd must hold what the frame says it holds. */
static int
result_check(struct scan_result *res, const struct imsg *imsg)
{
	struct stat st;
	uint64_t size;

	unsigned i;

	if (res->verdict != SCAN_CHANGED) {
		/* No message: no fd, no section, no ENVELOPE. */
		if (imsg->fd != -1 || res->nsect != 0 || res->env_off != 0 ||
		    res->env_len != 0)
			return -1;
		return 0;
	}
	if (imsg->fd == -1 || fstat(imsg->fd, &st) == -1 || st.st_size < 0)
		return -1;
	size = (uint64_t)st.st_size;
	if (res->msg_off > size || res->msg_len > size - res->msg_off ||
	    res->bs_off > size || res->bs_len > size - res->bs_off ||
	    res->body_off > size || res->body_len > size - res->body_off ||
	    res->env_off > size || res->env_len > size - res->env_off ||
	    res->bs_len > SCAN_MAX_STRUCT || res->body_len > SCAN_MAX_STRUCT ||
	    res->env_len > SCAN_MAX_STRUCT)
		return -1;
	for (i = 0; i < res->nsect; i++)
		if (res->sect[i].off > size ||
		    res->sect[i].len > size - res->sect[i].off)
			return -1;
	return 0;
}

void
scan_peer_frame(struct netd *n, struct proc_chan *c, struct imsg *imsg)
{
	struct scan_result res;
	struct scan_req *r;
	struct reader rd;
	uint64_t id;
	char *reason;
	unsigned i;

	if (imsg->hdr.type != IMSG_SCAN_RES || c->role != ROLE_SCAND) {
		proc_chan_fail(c, "unexpected %s from peer",
		    imsg_type_name(imsg->hdr.type));
		return;
	}
	memset(&res, 0, sizeof(res));
	res.fd = -1;
	imsg_reader(imsg, &rd);
	id = rd_u64(&rd);
	res.verdict = (int)rd_u32(&rd);
	res.action = (int)rd_u32(&rd);
	reason = rd_str(&rd, SCAN_MAX_REASON - 1);
	res.msg_off = rd_u64(&rd);
	res.msg_len = rd_u64(&rd);
	res.bs_off = rd_u64(&rd);
	res.bs_len = rd_u64(&rd);
	res.body_off = rd_u64(&rd);
	res.body_len = rd_u64(&rd);
	/* Sections, the report ranges (empty: netd asks for none), then
	 * the ENVELOPE. */
	res.nsect = rd_u32(&rd);
	if (res.nsect > SCAN_MAX_SECT)
		rd.err = 1;
	for (i = 0; !rd.err && i < res.nsect; i++) {
		res.sect[i].status = (int)rd_u32(&rd);
		res.sect[i].off = rd_u64(&rd);
		res.sect[i].len = rd_u64(&rd);
	}
	for (i = 0; i < 4; i++)
		if (rd_u64(&rd) != 0)
			rd.err = 1;
	res.env_off = rd_u64(&rd);
	res.env_len = rd_u64(&rd);
	r = (struct scan_req *)peerreq_find(&reqs, id, c);
	if (rd_end(&rd) == -1 || reason == NULL || r == NULL ||
	    res.verdict < SCAN_CLEAN || res.verdict > SCAN_ERROR ||
	    result_check(&res, imsg) == -1) {
		free(reason);
		/* A scanner that answers garbage is not trusted again. */
		proc_chan_fail(c, "malformed SCAN_RES");
		return;
	}
	snprintf(res.reason, sizeof(res.reason), "%s", reason);
	free(reason);
	res.fd = imsg->fd;
	imsg->fd = -1;
	req_finish(r, &res);
}

void
scan_peer_gone(struct netd *n, struct proc_chan *c)
{
	peerreq_gone(&reqs, c, "scanner went away");
}
