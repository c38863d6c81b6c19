/*
 * TLS requests from netd to tlsd.  See tlsreq.h and common/tls.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "netd.h"
#include "peerreq.h"
#include "tlsreq.h"

/* tlsd gives up a handshake after TLS_HANDSHAKE_TIMEOUT_MS; netd a
 * little later, in case tlsd does not answer at all. */
#define TLS_GRACE_MS 5000

struct tls_req {
	struct peer_req pr; /* first: the peer_req is the tls_req */
	tls_cb cb;
};

static void req_fail(struct peer_req *, const char *why);

static struct peer_reqs reqs = {
    .role = ROLE_TLSD, .timeout = "TLS handshake timed out", .fail = req_fail};

static void
req_finish(struct tls_req *r, struct tls_result *res)
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
	struct tls_result res;

	memset(&res, 0, sizeof(res));
	res.fd = -1;
	snprintf(res.error, sizeof(res.error), "%s", why);
	req_finish((struct tls_req *)pr, &res);
}

struct tls_req *
tls_start(struct netd *n, int fd, int side, unsigned flags, const char *policy,
    const char *server, const char *name, const char *attest, const char *peer,
    tls_cb cb, void *arg)
{
	struct tls_req *r;
	struct buf b;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		fatal("calloc");
	r->cb = cb;
	peerreq_add(&reqs, &r->pr, n, arg);
	if (r->pr.chan == NULL) {
		close(fd);
		peerreq_later(&r->pr, "no TLS worker available");
		return r;
	}
	buf_init(&b, 0);
	buf_add_u64(&b, r->pr.id);
	buf_add_u32(&b, (uint32_t)side);
	buf_add_str(&b, policy ? policy : "");
	buf_add_str(&b, server ? server : "");
	buf_add_str(&b, name ? name : "");
	buf_add_str(&b, peer ? peer : "");
	buf_add_str(&b, attest ? attest : "");
	buf_add_u32(&b, (uint32_t)flags);
	if (proc_compose(r->pr.chan, IMSG_TLS_START, 0, fd, buf_head(&b),
	        buf_used(&b)) == -1) {
		r->pr.chan = NULL;
		peerreq_later(&r->pr, "cannot reach the TLS worker");
	} else
		peerreq_arm(&r->pr, TLS_HANDSHAKE_TIMEOUT_MS + TLS_GRACE_MS);
	buf_free(&b);
	return r;
}

void
tls_cancel(struct tls_req *r)
{
	if (r)
		r->pr.arg = NULL;
}

static void
copy_str(char *dst, size_t len, char *src)
{
	snprintf(dst, len, "%s", src ? src : "");
	free(src);
}

/* DONE's strings, in frame order (resumed comes between subject and
 * names). */
enum { D_ERROR, D_VERSION, D_CIPHER, D_SNI, D_SUBJECT, D_NAMES, D_ATTEST, D_N };

void
tls_peer_frame(struct netd *n, struct proc_chan *c, struct imsg *imsg)
{
	struct tls_result res;
	struct tls_req *r;
	struct reader rd;
	char *str[D_N];
	uint64_t id;
	uint32_t ok;
	int well, i;

	if (imsg->hdr.type != IMSG_TLS_DONE || c->role != ROLE_TLSD) {
		proc_chan_fail(c, "unexpected %s from peer",
		    imsg_type_name(imsg->hdr.type));
		return;
	}
	memset(&res, 0, sizeof(res));
	imsg_reader(imsg, &rd);
	id = rd_u64(&rd);
	ok = rd_u32(&rd);
	str[D_ERROR] = rd_str(&rd, TLS_MAX_ERROR - 1);
	str[D_VERSION] = rd_str(&rd, sizeof(res.version) - 1);
	str[D_CIPHER] = rd_str(&rd, sizeof(res.cipher) - 1);
	str[D_SNI] = rd_str(&rd, TLS_MAX_NAME);
	str[D_SUBJECT] = rd_str(&rd, sizeof(res.subject) - 1);
	res.resumed = rd_u32(&rd) == 1;
	str[D_NAMES] = rd_str(&rd, TLS_MAX_NAMES);
	str[D_ATTEST] = rd_str(&rd, TLS_MAX_ATTEST);
	r = (struct tls_req *)peerreq_find(&reqs, id, c);
	well = rd_end(&rd) == 0 && ok <= 1 && (ok == 1) == (imsg->fd != -1);
	for (i = 0; i < D_N; i++)
		well = well && str[i] != NULL;
	if (!well || r == NULL) {
		for (i = 0; i < D_N; i++)
			free(str[i]);
		if (!well) {
			proc_chan_fail(c, "malformed TLS_DONE");
			return;
		}
		/* Given up on here (timed out, session gone): the answer
		 * is dropped, and with it the plaintext end. */
		log_debug("TLS_DONE for request %llu that is gone",
		    (unsigned long long)id);
		return; /* the imsg layer closes an fd left in it */
	}
	res.ok = (int)ok;
	copy_str(res.error, sizeof(res.error), str[D_ERROR]);
	copy_str(res.version, sizeof(res.version), str[D_VERSION]);
	copy_str(res.cipher, sizeof(res.cipher), str[D_CIPHER]);
	copy_str(res.sni, sizeof(res.sni), str[D_SNI]);
	copy_str(res.subject, sizeof(res.subject), str[D_SUBJECT]);
	copy_str(res.names, sizeof(res.names), str[D_NAMES]);
	copy_str(res.attest, sizeof(res.attest), str[D_ATTEST]);
	res.fd = imsg->fd;
	imsg->fd = -1;
	req_finish(r, &res);
}

void
tls_peer_gone(struct netd *n, struct proc_chan *c)
{
	peerreq_gone(&reqs, c, "TLS worker went away");
}
