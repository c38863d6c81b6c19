/*
 * imsg layer: framing, fd passing, and every way a peer can send garbage.
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imapgw.h"
#include "imsg.h"
#include "test.h"

static void
pair(int sp[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == -1)
		abort();
}

/* Raw header bytes, little-endian, as a hostile peer would write them. */
static void
raw_hdr(uint8_t *p, uint32_t type, uint16_t len, uint16_t flags)
{
	struct buf b;

	buf_init(&b, 0);
	buf_add_u32(&b, type);
	buf_add_u16(&b, len);
	buf_add_u16(&b, flags);
	buf_add_u32(&b, 7);
	buf_add_u32(&b, 1234);
	memcpy(p, buf_head(&b), IMSG_HEADER_SIZE);
	buf_free(&b);
}

static int
recv_one(struct imsgbuf *ib, struct imsg *m)
{
	return imsg_wait(ib, m, 1000);
}

static void
test_roundtrip(void)
{
	struct imsgbuf a, b;
	struct imsg m;
	struct reader rd;
	struct buf pl;
	char *s;
	int sp[2];

	pair(sp);
	imsgbuf_init(&a, sp[0]);
	imsgbuf_init(&b, sp[1]);
	buf_init(&pl, 0);
	buf_add_u32(&pl, 42);
	buf_add_u64(&pl, 1ULL << 40);
	buf_add_str(&pl, "hello");
	CHECK(imsg_compose_buf(&a, IMSG_STATUS, 9, -1, &pl) == 0);
	CHECK(imsg_compose(&a, IMSG_READY, 0, -1, NULL, 0) == 0);
	CHECK(imsgbuf_queuelen(&a) == 2);
	CHECK(imsgbuf_flush(&a) == 0);
	CHECK(recv_one(&b, &m) == 1);
	CHECK(m.hdr.type == IMSG_STATUS && m.hdr.peerid == 9);
	CHECK(m.hdr.pid == (uint32_t)getpid());
	CHECK(m.fd == -1);
	imsg_reader(&m, &rd);
	CHECK(rd_u32(&rd) == 42);
	CHECK(rd_u64(&rd) == 1ULL << 40);
	s = rd_str(&rd, 100);
	CHECK(s && strcmp(s, "hello") == 0);
	free(s);
	CHECK(rd_end(&rd) == 0);
	/* Reading past the end is an error that sticks. */
	CHECK(rd_u32(&rd) == 0 && rd.err == 1 && rd_end(&rd) == -1);
	imsg_free(&m);
	CHECK(recv_one(&b, &m) == 1);
	CHECK(m.hdr.type == IMSG_READY && m.datalen == 0);
	imsg_free(&m);
	buf_free(&pl);
	imsgbuf_clear(&a);
	imsgbuf_clear(&b);
	close(sp[0]);
	close(sp[1]);
}

static void
test_fdpass(void)
{
	struct imsgbuf a, b;
	struct imsg m;
	struct stat st;
	char tmpl[] = "/tmp/imsgtestXXXXXX";
	int sp[2], fd, i;

	pair(sp);
	imsgbuf_init(&a, sp[0]);
	imsgbuf_init(&b, sp[1]);
	/* Sending an fd needs the opt-in. */
	fd = mkstemp(tmpl);
	unlink(tmpl);
	CHECK(imsg_compose(&a, IMSG_CFG, 0, dup(fd), NULL, 0) == -1);
	imsgbuf_allow_fdpass(&a);
	imsgbuf_allow_fdpass(&b);
	CHECK(write(fd, "abc", 3) == 3);
	/* Several frames with fds in a row keep their order. */
	for (i = 0; i < 3; i++)
		CHECK(imsg_compose(&a, IMSG_CFG, (uint32_t)i, dup(fd), &i,
			  sizeof(i)) == 0);
	CHECK(imsgbuf_flush(&a) == 0);
	for (i = 0; i < 3; i++) {
		CHECK(recv_one(&b, &m) == 1);
		CHECK(m.hdr.peerid == (uint32_t)i && m.fd >= 0);
		CHECK(fstat(m.fd, &st) == 0 && st.st_size == 3);
		imsg_free(&m);
	}
	close(fd);
	imsgbuf_clear(&a);
	imsgbuf_clear(&b);
	close(sp[0]);
	close(sp[1]);
}

/* An fd arriving on a channel that did not opt in is fatal for it. */
static void
test_fd_not_allowed(void)
{
	struct imsgbuf a, b;
	struct imsg m;
	int sp[2];

	pair(sp);
	imsgbuf_init(&a, sp[0]);
	imsgbuf_init(&b, sp[1]);
	imsgbuf_allow_fdpass(&a);
	CHECK(imsg_compose(&a, IMSG_CFG, 0, dup(0), NULL, 0) == 0);
	CHECK(imsgbuf_flush(&a) == 0);
	CHECK(recv_one(&b, &m) == -1);
	CHECK(strstr(b.err, "without fd passing") != NULL);
	imsgbuf_clear(&a);
	imsgbuf_clear(&b);
	close(sp[0]);
	close(sp[1]);
}

static int
feed_raw(const uint8_t *p, size_t n, int fdpass, struct imsg *m,
    char *err, size_t errlen)
{
	struct imsgbuf b;
	int sp[2], r;

	pair(sp);
	imsgbuf_init(&b, sp[1]);
	if (fdpass)
		imsgbuf_allow_fdpass(&b);
	if (write(sp[0], p, n) != (ssize_t)n)
		abort();
	close(sp[0]);
	r = recv_one(&b, m);
	snprintf(err, errlen, "%s", b.err);
	if (r == 1)
		imsg_free(m);
	imsgbuf_clear(&b);
	close(sp[1]);
	return r;
}

static void
test_malformed(void)
{
	uint8_t raw[IMSG_MAX_FRAME + 64];
	struct imsg m;
	char err[128];

	memset(raw, 'x', sizeof(raw));
	/* Length below the header. */
	raw_hdr(raw, IMSG_READY, 8, 0);
	CHECK(feed_raw(raw, 16, 0, &m, err, sizeof(err)) == -1);
	CHECK(strstr(err, "length out of range") != NULL);
	/* Oversize frame. */
	raw_hdr(raw, IMSG_READY, IMSG_MAX_FRAME + 1 > 65535 ? 65535 :
	    IMSG_MAX_FRAME + 1, 0);
	CHECK(feed_raw(raw, IMSG_MAX_FRAME + 16, 0, &m, err,
		  sizeof(err)) == -1);
	CHECK(strstr(err, "length out of range") != NULL);
	/* Unknown flag bits. */
	raw_hdr(raw, IMSG_READY, 16, 0x8000);
	CHECK(feed_raw(raw, 16, 0, &m, err, sizeof(err)) == -1);
	CHECK(strstr(err, "unknown frame flags") != NULL);
	/* Type 0 is never valid. */
	raw_hdr(raw, 0, 16, 0);
	CHECK(feed_raw(raw, 16, 0, &m, err, sizeof(err)) == -1);
	/* Announces an fd that never came. */
	raw_hdr(raw, IMSG_CFG, 16, IMSG_FLAG_FD);
	CHECK(feed_raw(raw, 16, 1, &m, err, sizeof(err)) == -1);
	CHECK(strstr(err, "did not arrive") != NULL);
	/* Truncated: the peer closes mid-frame; no frame comes out. */
	raw_hdr(raw, IMSG_READY, 100, 0);
	CHECK(feed_raw(raw, 50, 0, &m, err, sizeof(err)) == -1);
	CHECK(strstr(err, "closed") != NULL);
	/* Truncated header. */
	CHECK(feed_raw(raw, 5, 0, &m, err, sizeof(err)) == -1);
	/* A well-formed frame of a type the receiver does not know still
	 * parses; refusing it is the dispatcher's job (proc_chan_fail). */
	raw_hdr(raw, 9999, 20, 0);
	CHECK(feed_raw(raw, 20, 0, &m, err, sizeof(err)) == 1);
	CHECK(strcmp(imsg_type_name(9999), "unknown") == 0);
}

static void
test_limits(void)
{
	static uint8_t big[IMSG_MAX_PAYLOAD + 1];
	struct imsgbuf a, b;
	struct imsg m;
	int sp[2];

	pair(sp);
	imsgbuf_init(&a, sp[0]);
	imsgbuf_init(&b, sp[1]);
	CHECK(imsg_compose(&a, IMSG_CFG, 0, -1, big, sizeof(big)) == -1 &&
	    errno == ERANGE);
	CHECK(imsg_compose(&a, IMSG_CFG, 0, -1, big, IMSG_MAX_PAYLOAD) == 0);
	CHECK(imsgbuf_flush(&a) == 0);
	CHECK(recv_one(&b, &m) == 1 && m.datalen == IMSG_MAX_PAYLOAD);
	imsg_free(&m);
	imsgbuf_clear(&a);
	imsgbuf_clear(&b);
	close(sp[0]);
	close(sp[1]);
}

/* Strings: bounded, no embedded NUL, no reading past the frame. */
static void
test_reader(void)
{
	struct reader rd;
	struct buf b;
	char *s;

	buf_init(&b, 0);
	buf_add_u32(&b, 5);
	buf_add(&b, "ab\0cd", 5);
	rd_init(&rd, buf_head(&b), buf_used(&b));
	CHECK(rd_str(&rd, 100) == NULL && rd.err);
	buf_reset(&b);
	buf_add_u32(&b, 1000);
	buf_add(&b, "abc", 3);
	rd_init(&rd, buf_head(&b), buf_used(&b));
	CHECK(rd_str(&rd, 2000) == NULL && rd.err);
	buf_reset(&b);
	buf_add_str(&b, "toolong");
	rd_init(&rd, buf_head(&b), buf_used(&b));
	CHECK(rd_str(&rd, 3) == NULL && rd.err);
	rd_init(&rd, buf_head(&b), buf_used(&b));
	s = rd_str(&rd, 7);
	CHECK(s && strcmp(s, "toolong") == 0 && rd_end(&rd) == 0);
	free(s);
	/* A capped buffer refuses to grow past its cap. */
	buf_free(&b);
	buf_init(&b, 4);
	CHECK(buf_add(&b, "1234", 4) == 0);
	CHECK(buf_add(&b, "5", 1) == -1);
	buf_consume(&b, 2);
	CHECK(buf_add(&b, "56", 2) == 0);
	CHECK(buf_used(&b) == 4 && memcmp(buf_head(&b), "3456", 4) == 0);
	buf_free(&b);
}

int
main(void)
{
	test_roundtrip();
	test_fdpass();
	test_fd_not_allowed();
	test_malformed();
	test_limits();
	test_reader();
	return test_done("test_imsg");
}
