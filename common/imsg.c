/*
 * imsg-style framing with opt-in fd passing.  See imsg.h.
 *
 * A frame that carries an fd is sent with the fd attached to its first
 * byte, one fd per sendmsg(), so by the time the receiver holds the whole
 * frame it also holds the fd.  Received fds queue in arrival order and are
 * matched to frames flagged IMSG_FLAG_FD; an fd without such a frame, or
 * such a frame without an fd, is a malformed channel.
 */
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imsg.h"

struct imsg_out {
	struct imsg_out *next;
	int fd;
	size_t off, len;
	uint8_t data[];
};

#define IMSG_READ_SIZE 65536
#define IMSG_MAX_QUEUED_FDS 16

void
imsgbuf_init(struct imsgbuf *ib, int fd)
{
	memset(ib, 0, sizeof(*ib));
	ib->fd = fd;
	ib->pid = getpid();
	ib->wqtail = &ib->wq;
	/* Never more than one frame plus one read's worth. */
	buf_init(&ib->r, IMSG_MAX_FRAME + IMSG_READ_SIZE);
}

void
imsgbuf_allow_fdpass(struct imsgbuf *ib)
{
	ib->allow_fdpass = 1;
}

void
imsgbuf_clear(struct imsgbuf *ib)
{
	struct imsg_out *o;
	size_t i;

	while ((o = ib->wq) != NULL) {
		ib->wq = o->next;
		if (o->fd != -1)
			close(o->fd);
		free(o);
	}
	ib->wqtail = &ib->wq;
	ib->wqlen = 0;
	for (i = 0; i < ib->nrfds; i++)
		close(ib->rfds[i]);
	free(ib->rfds);
	ib->rfds = NULL;
	ib->nrfds = ib->rfdcap = 0;
	buf_free(&ib->r);
}

static void
imsg_seterr(struct imsgbuf *ib, const char *why)
{
	if (ib->err[0] == '\0')
		snprintf(ib->err, sizeof(ib->err), "%s", why);
}

static int
imsg_push_fd(struct imsgbuf *ib, int fd)
{
	int *p;

	if (!ib->allow_fdpass) {
		close(fd);
		imsg_seterr(ib, "fd received on a channel without fd passing");
		return -1;
	}
	if (ib->nrfds >= IMSG_MAX_QUEUED_FDS) {
		close(fd);
		imsg_seterr(ib, "too many fds queued without frames");
		return -1;
	}
	if (ib->nrfds == ib->rfdcap) {
		p = reallocarray(ib->rfds, ib->rfdcap + 4, sizeof(int));
		if (p == NULL) {
			close(fd);
			return -1;
		}
		ib->rfds = p;
		ib->rfdcap += 4;
	}
	ib->rfds[ib->nrfds++] = fd;
	return 0;
}

ssize_t
imsgbuf_read(struct imsgbuf *ib)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} cmsgbuf;
	struct cmsghdr *cm;
	struct msghdr msg;
	struct iovec iov;
	ssize_t n;
	size_t i, nfds;
	int bad = 0, *fds;

	if (buf_reserve(&ib->r, IMSG_READ_SIZE) == -1) {
		imsg_seterr(ib, "read buffer full");
		errno = ENOBUFS;
		return -1;
	}
	iov.iov_base = buf_tail(&ib->r);
	iov.iov_len = IMSG_READ_SIZE;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cmsgbuf.buf;
	msg.msg_controllen = sizeof(cmsgbuf.buf);
	n = recvmsg(ib->fd, &msg, MSG_CMSG_CLOEXEC);
	if (n == -1)
		return -1;
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		fds = (int *)CMSG_DATA(cm);
		for (i = 0; i < nfds; i++)
			if (imsg_push_fd(ib, fds[i]) == -1)
				bad = 1;
	}
	if (msg.msg_flags & MSG_CTRUNC) {
		imsg_seterr(ib, "control message truncated");
		bad = 1;
	}
	buf_commit(&ib->r, (size_t)n);
	if (bad) {
		errno = EBADMSG;
		return -1;
	}
	return n;
}

int
imsg_get(struct imsgbuf *ib, struct imsg *imsg)
{
	struct reader rd;
	struct imsg_hdr h;
	size_t datalen;

	memset(imsg, 0, sizeof(*imsg));
	imsg->fd = -1;
	if (ib->err[0])
		return -1;
	if (buf_used(&ib->r) < IMSG_HEADER_SIZE)
		return 0;
	rd_init(&rd, buf_head(&ib->r), IMSG_HEADER_SIZE);
	h.type = rd_u32(&rd);
	h.len = rd_u16(&rd);
	h.flags = rd_u16(&rd);
	h.peerid = rd_u32(&rd);
	h.pid = rd_u32(&rd);
	if (h.len < IMSG_HEADER_SIZE || h.len > IMSG_MAX_FRAME) {
		imsg_seterr(ib, "frame length out of range");
		return -1;
	}
	if (h.flags & ~IMSG_FLAG_FD) {
		imsg_seterr(ib, "unknown frame flags");
		return -1;
	}
	if (h.type == 0) {
		imsg_seterr(ib, "frame of type 0");
		return -1;
	}
	if (buf_used(&ib->r) < h.len)
		return 0;
	if (h.flags & IMSG_FLAG_FD) {
		if (ib->nrfds == 0) {
			imsg_seterr(ib, "frame announces an fd that did not "
			                "arrive");
			return -1;
		}
		imsg->fd = ib->rfds[0];
		memmove(ib->rfds, ib->rfds + 1, --ib->nrfds * sizeof(int));
	}
	datalen = h.len - IMSG_HEADER_SIZE;
	if ((imsg->data = malloc(datalen ? datalen : 1)) == NULL) {
		if (imsg->fd != -1)
			close(imsg->fd);
		imsg->fd = -1;
		return -1;
	}
	memcpy(imsg->data, buf_head(&ib->r) + IMSG_HEADER_SIZE, datalen);
	imsg->datalen = datalen;
	imsg->hdr = h;
	buf_consume(&ib->r, h.len);
	return 1;
}

void
imsg_free(struct imsg *imsg)
{
	free(imsg->data);
	imsg->data = NULL;
	if (imsg->fd != -1)
		close(imsg->fd);
	imsg->fd = -1;
}

void
imsg_reader(const struct imsg *imsg, struct reader *rd)
{
	rd_init(rd, imsg->data, imsg->datalen);
}

int
imsg_compose(struct imsgbuf *ib, uint32_t type, uint32_t peerid, int fd,
    const void *data, size_t len)
{
	struct imsg_out *o;
	struct buf hb;

	if (len > IMSG_MAX_PAYLOAD || (fd != -1 && !ib->allow_fdpass)) {
		if (fd != -1)
			close(fd);
		errno = len > IMSG_MAX_PAYLOAD ? ERANGE : EPERM;
		return -1;
	}
	if ((o = malloc(sizeof(*o) + IMSG_HEADER_SIZE + len)) == NULL) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	o->next = NULL;
	o->fd = fd;
	o->off = 0;
	o->len = IMSG_HEADER_SIZE + len;
	buf_init(&hb, 0);
	buf_add_u32(&hb, type);
	buf_add_u16(&hb, (uint16_t)o->len);
	buf_add_u16(&hb, fd != -1 ? IMSG_FLAG_FD : 0);
	buf_add_u32(&hb, peerid);
	buf_add_u32(&hb, (uint32_t)ib->pid);
	if (buf_used(&hb) != IMSG_HEADER_SIZE) {
		buf_free(&hb);
		free(o);
		if (fd != -1)
			close(fd);
		return -1;
	}
	memcpy(o->data, buf_head(&hb), IMSG_HEADER_SIZE);
	buf_free(&hb);
	if (len)
		memcpy(o->data + IMSG_HEADER_SIZE, data, len);
	*ib->wqtail = o;
	ib->wqtail = &o->next;
	ib->wqlen++;
	return 0;
}

int
imsg_compose_buf(struct imsgbuf *ib, uint32_t type, uint32_t peerid, int fd,
    const struct buf *b)
{
	return imsg_compose(ib, type, peerid, fd, buf_head(b), buf_used(b));
}

static ssize_t
imsg_send_one(struct imsgbuf *ib, struct imsg_out *o)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} cmsgbuf;
	struct cmsghdr *cm;
	struct msghdr msg;
	struct iovec iov;

	iov.iov_base = o->data + o->off;
	iov.iov_len = o->len - o->off;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (o->fd != -1 && o->off == 0) {
		memset(&cmsgbuf, 0, sizeof(cmsgbuf));
		msg.msg_control = cmsgbuf.buf;
		msg.msg_controllen = sizeof(cmsgbuf.buf);
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		memcpy(CMSG_DATA(cm), &o->fd, sizeof(int));
	}
	return sendmsg(ib->fd, &msg, MSG_NOSIGNAL);
}

int
imsgbuf_write(struct imsgbuf *ib)
{
	struct imsg_out *o;
	ssize_t n;

	while ((o = ib->wq) != NULL) {
		n = imsg_send_one(ib, o);
		if (n == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == ENOBUFS || errno == EINTR)
				return 0;
			return -1;
		}
		/* The fd went with the first byte; drop our copy. */
		if (o->fd != -1 && n > 0) {
			close(o->fd);
			o->fd = -1;
		}
		o->off += (size_t)n;
		if (o->off < o->len)
			continue;
		ib->wq = o->next;
		if (ib->wq == NULL)
			ib->wqtail = &ib->wq;
		ib->wqlen--;
		free(o);
	}
	return 1;
}

int
imsgbuf_flush(struct imsgbuf *ib)
{
	struct pollfd pfd;
	int r;

	pfd.fd = ib->fd;
	pfd.events = POLLOUT;
	while ((r = imsgbuf_write(ib)) == 0)
		if (poll(&pfd, 1, 1000) == -1 && errno != EINTR)
			return -1;
	return r == 1 ? 0 : -1;
}

size_t
imsgbuf_queuelen(const struct imsgbuf *ib)
{
	return ib->wqlen;
}

int
imsg_wait(struct imsgbuf *ib, struct imsg *imsg, int timeout_ms)
{
	struct pollfd pfd;
	ssize_t n;
	int r;

	for (;;) {
		if ((r = imsg_get(ib, imsg)) != 0)
			return r;
		pfd.fd = ib->fd;
		pfd.events = POLLIN;
		r = poll(&pfd, 1, timeout_ms);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return -1;
		if (r == 0)
			return 0;
		n = imsgbuf_read(ib);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			imsg_seterr(
			    ib, n == 0 ? "channel closed" : "read error");
			return -1;
		}
	}
}
