/*
 * The one buffer type.  See buf.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"

void
buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void
buf_free(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

void
buf_release(struct buf *b)
{
	size_t max = b->max;

	buf_free(b);
	b->max = max;
}

void
buf_reset(struct buf *b)
{
	b->off = b->len = 0;
}

size_t
buf_used(const struct buf *b)
{
	return b->len - b->off;
}

uint8_t *
buf_head(const struct buf *b)
{
	return b->data + b->off;
}

size_t
buf_room(const struct buf *b)
{
	if (b->max == 0)
		return SIZE_MAX / 2;
	return b->max > buf_used(b) ? b->max - buf_used(b) : 0;
}

int
buf_compact(struct buf *b)
{
	if (b->off == 0)
		return 0;
	if (b->len > b->off)
		memmove(b->data, b->data + b->off, b->len - b->off);
	b->len -= b->off;
	b->off = 0;
	return 0;
}

int
buf_reserve(struct buf *b, size_t n)
{
	size_t need, ncap;
	uint8_t *p;

	if (n > buf_room(b)) {
		errno = ENOBUFS;
		return -1;
	}
	if (b->cap - b->len >= n)
		return 0;
	/* Reuse consumed space before growing. */
	if (b->off > 0 && b->cap - buf_used(b) >= n) {
		buf_compact(b);
		return 0;
	}
	buf_compact(b);
	need = b->len + n;
	ncap = b->cap ? b->cap : 256;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2) {
			errno = ENOMEM;
			return -1;
		}
		ncap *= 2;
	}
	if (b->max && ncap > b->max && need <= b->max)
		ncap = b->max;
	if ((p = realloc(b->data, ncap)) == NULL)
		return -1;
	b->data = p;
	b->cap = ncap;
	return 0;
}

uint8_t *
buf_tail(struct buf *b)
{
	return b->data + b->len;
}

void
buf_commit(struct buf *b, size_t n)
{
	b->len += n;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n > buf_used(b))
		n = buf_used(b);
	b->off += n;
	if (b->off == b->len)
		b->off = b->len = 0;
}

int
buf_add(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (buf_reserve(b, n) == -1)
		return -1;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int
buf_add_u8(struct buf *b, uint8_t v)
{
	return buf_add(b, &v, 1);
}

/* Integers travel little-endian, whatever the host. */
static int
buf_add_le(struct buf *b, uint64_t v, size_t n)
{
	uint8_t tmp[8];
	size_t i;

	for (i = 0; i < n; i++)
		tmp[i] = (uint8_t)(v >> (8 * i));
	return buf_add(b, tmp, n);
}

int
buf_add_u16(struct buf *b, uint16_t v)
{
	return buf_add_le(b, v, 2);
}

int
buf_add_u32(struct buf *b, uint32_t v)
{
	return buf_add_le(b, v, 4);
}

int
buf_add_u64(struct buf *b, uint64_t v)
{
	return buf_add_le(b, v, 8);
}

int
buf_add_str(struct buf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n > UINT32_MAX) {
		errno = EOVERFLOW;
		return -1;
	}
	if (buf_add_u32(b, (uint32_t)n) == -1)
		return -1;
	return buf_add(b, s, n);
}

int
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if (buf_reserve(b, (size_t)n + 1) == -1)
		return -1;
	va_start(ap, fmt);
	vsnprintf((char *)buf_tail(b), (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

ssize_t
buf_read_fd(struct buf *b, int fd, size_t want)
{
	ssize_t n;

	if (want > buf_room(b))
		want = buf_room(b);
	if (want == 0) {
		errno = ENOBUFS;
		return -1;
	}
	if (buf_reserve(b, want) == -1)
		return -1;
	n = read(fd, buf_tail(b), want);
	if (n > 0)
		b->len += (size_t)n;
	return n;
}

ssize_t
buf_write_fd(struct buf *b, int fd)
{
	ssize_t n;

	if (buf_used(b) == 0)
		return 0;
	n = write(fd, buf_head(b), buf_used(b));
	if (n > 0)
		buf_consume(b, (size_t)n);
	return n;
}

void
rd_init(struct reader *r, const void *p, size_t n)
{
	r->p = p;
	r->left = n;
	r->err = 0;
}

const void *
rd_ptr(struct reader *r, size_t n)
{
	const void *p;

	if (r->err || n > r->left) {
		r->err = 1;
		return NULL;
	}
	p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

int
rd_data(struct reader *r, void *out, size_t n)
{
	const void *p = rd_ptr(r, n);

	if (p == NULL)
		return -1;
	if (n)
		memcpy(out, p, n);
	return 0;
}

static uint64_t
rd_le(struct reader *r, size_t n)
{
	const uint8_t *p = rd_ptr(r, n);
	uint64_t v = 0;
	size_t i;

	if (p == NULL)
		return 0;
	for (i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

uint8_t
rd_u8(struct reader *r)
{
	return (uint8_t)rd_le(r, 1);
}

uint16_t
rd_u16(struct reader *r)
{
	return (uint16_t)rd_le(r, 2);
}

uint32_t
rd_u32(struct reader *r)
{
	return (uint32_t)rd_le(r, 4);
}

uint64_t
rd_u64(struct reader *r)
{
	return rd_le(r, 8);
}

char *
rd_str(struct reader *r, size_t max)
{
	uint32_t n = rd_u32(r);
	const char *p;
	char *s;

	if (r->err)
		return NULL;
	if (n > max) {
		r->err = 1;
		return NULL;
	}
	if ((p = rd_ptr(r, n)) == NULL)
		return NULL;
	if (memchr(p, '\0', n) != NULL) {
		r->err = 1;
		return NULL;
	}
	if ((s = malloc((size_t)n + 1)) == NULL) {
		r->err = 1;
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

int
rd_end(const struct reader *r)
{
	return (r->err || r->left) ? -1 : 0;
}
