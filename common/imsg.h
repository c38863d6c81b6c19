/*
 * imsg-style framing over a stream socketpair.  A frame is a 16-byte header
 * (type, len including header, flags, peer id, pid) and a payload of at most
 * IMSG_MAX_PAYLOAD bytes.  A frame may carry one fd (flag IMSG_FLAG_FD) only
 * on a channel that opted in with imsgbuf_allow_fdpass(); anything larger
 * than a frame travels as an fd.
 */
#ifndef IMAPGW_IMSG_H
#define IMAPGW_IMSG_H

#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

#define IMSG_HEADER_SIZE 16
#define IMSG_MAX_FRAME 16384
#define IMSG_MAX_PAYLOAD (IMSG_MAX_FRAME - IMSG_HEADER_SIZE)
#define IMSG_FLAG_FD 0x0001

struct imsg_hdr {
	uint32_t type;
	uint16_t len;
	uint16_t flags;
	uint32_t peerid;
	uint32_t pid;
};

struct imsg {
	struct imsg_hdr hdr;
	int fd; /* -1 if none; the receiver owns it */
	uint8_t *data;
	size_t datalen;
};

struct imsg_out; /* queued frame */

struct imsgbuf {
	int fd;
	int allow_fdpass;
	pid_t pid;
	struct buf r; /* bytes read, not yet parsed */
	int *rfds; /* fds received, in order */
	size_t nrfds, rfdcap;
	struct imsg_out *wq, **wqtail; /* write queue */
	size_t wqlen;
	char err[128]; /* why the channel failed */
};

void imsgbuf_init(struct imsgbuf *, int fd);
void imsgbuf_allow_fdpass(struct imsgbuf *);
void imsgbuf_clear(struct imsgbuf *); /* frees queues, closes held fds */
/* Read what is available.  Returns bytes read, 0 on EOF, -1 on error
 * (EAGAIN included: check errno). */
ssize_t imsgbuf_read(struct imsgbuf *);
/* Next complete frame: 1 and *imsg filled, 0 if none yet, -1 if the
 * channel sent something malformed (reason in ibuf->err). */
int imsg_get(struct imsgbuf *, struct imsg *);
void imsg_free(struct imsg *);
/* Queue a frame; fd (or -1) is closed by the layer once sent. */
int imsg_compose(struct imsgbuf *, uint32_t type, uint32_t peerid, int fd,
    const void *data, size_t len);
int imsg_compose_buf(struct imsgbuf *, uint32_t type, uint32_t peerid, int fd,
    const struct buf *);
/* Write queued frames.  1 = all written, 0 = would block, -1 = error. */
int imsgbuf_write(struct imsgbuf *);
/* Block until the queue is empty (used before exec/exit). */
int imsgbuf_flush(struct imsgbuf *);
size_t imsgbuf_queuelen(const struct imsgbuf *);
/* Blocking wait for one frame, with timeout in ms (-1 forever).
 * 1 frame, 0 timeout, -1 error/EOF/malformed. */
int imsg_wait(struct imsgbuf *, struct imsg *, int timeout_ms);

/* Payload reader over a frame. */
void imsg_reader(const struct imsg *, struct reader *);

#endif
