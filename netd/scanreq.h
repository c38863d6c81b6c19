/*
 * netd's side of the scan contract (common/scan.h): send a message to a
 * scand worker, get its verdict back through a callback.  A verdict is
 * always delivered exactly once: from scand, or as SCAN_ERROR when scand
 * is unavailable, dies, answers garbage or takes too long.
 */
#ifndef IMAPGW_SCANREQ_H
#define IMAPGW_SCANREQ_H

#include <stdint.h>

#include "proc.h"
#include "scan.h"

struct netd;

#define SCAN_MAX_SECT 64
#define SCAN_MAX_SPEC 1024

/* An IMAP section of the sanitized message netd needs, if it changes. */
struct scan_section {
	int binary; /* BINARY[...]: content decoded */
	char spec[SCAN_MAX_SPEC]; /* between the brackets: "TEXT", "2.MIME" */
};

struct scan_result {
	int verdict; /* SCAN_* */
	int action; /* ACT_* applied by scand */
	char reason[SCAN_MAX_REASON];
	int fd; /* CHANGED: the result memfd (owned by the callee) */
	/* CHANGED from netd's cut cache instead (fd -1): the bytes the
	 * structure and section offsets refer to, malloc'd, owned like fd;
	 * msg_len is the message's length but its bytes are not there. */
	uint8_t *mem;
	uint64_t msg_off, msg_len;
	uint64_t bs_off, bs_len;
	uint64_t body_off, body_len;
	uint64_t env_off, env_len; /* CHANGED: its ENVELOPE */
	unsigned nsect; /* CHANGED: as many as were asked, else 0 */
	struct {
		int status; /* 0 ok, else not available (see scan.h) */
		uint64_t off, len;
	} sect[SCAN_MAX_SECT];
};

typedef void (*scan_cb)(void *arg, struct scan_result *);

struct scan_req;

/* Takes ownership of fd (the message).  The callback always runs later,
 * from the event loop.  Returns a handle for scan_cancel(). */
struct scan_req *scan_submit(struct netd *, int fd, uint64_t size, int kind,
    int action, const char *policy, const char *user, const char *client,
    const struct scan_section *, unsigned nsect, uint32_t flags, scan_cb,
    void *arg);
/* The requester went away: the verdict will be dropped. */
void scan_cancel(struct scan_req *);

/* Frames from a scand peer and its loss. */
void scan_peer_frame(struct netd *, struct proc_chan *, struct imsg *);
void scan_peer_gone(struct netd *, struct proc_chan *);

#endif
