/*
 * Addresses on the auto-block list (blockaddr.h).
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <string.h>

#include "blockaddr.h"

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An IPv4 client seen on an IPv6 socket is that IPv4 client. */
static void
block_addr_unmap(struct block_addr *a)
{
	if (a->family == 6 &&
	    memcmp(a->addr, v4mapped, sizeof(v4mapped)) == 0) {
		memmove(a->addr, a->addr + 12, 4);
		memset(a->addr + 4, 0, 12);
		a->family = 4;
	}
}

int
block_addr_parse(const char *s, struct block_addr *a)
{
	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, s, a->addr) == 1)
		a->family = 4;
	else if (inet_pton(AF_INET6, s, a->addr) == 1)
		a->family = 6;
	else
		return -1;
	block_addr_unmap(a);
	return 0;
}

int
block_addr_from_sa(const struct sockaddr *sa, struct block_addr *a)
{
	memset(a, 0, sizeof(*a));
	if (sa->sa_family == AF_INET) {
		a->family = 4;
		memcpy(a->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		a->family = 6;
		memcpy(
		    a->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	} else
		return -1;
	block_addr_unmap(a);
	return 0;
}

int
block_addr_write(struct buf *b, const struct block_addr *a)
{
	if (buf_add_u8(b, a->family) == -1 ||
	    buf_add(b, a->addr, a->family == 4 ? 4 : 16) == -1)
		return -1;
	return 0;
}

int
block_addr_read(struct reader *rd, struct block_addr *a)
{
	memset(a, 0, sizeof(*a));
	a->family = rd_u8(rd);
	if (a->family != 4 && a->family != 6) {
		rd->err = 1;
		return -1;
	}
	if (rd_data(rd, a->addr, a->family == 4 ? 4 : 16) == -1)
		return -1;
	block_addr_unmap(a);
	return 0;
}

void
block_addr_text(const struct block_addr *a, char *out, size_t len)
{
	if (inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->addr, out,
	        (socklen_t)len) == NULL)
		snprintf(out, len, "?");
}

int
block_addr_cmp(const struct block_addr *a, const struct block_addr *b)
{
	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	return memcmp(a->addr, b->addr, sizeof(a->addr));
}

size_t
block_addr_find(const void *base, size_t n, size_t size,
    const struct block_addr *key, int *found)
{
	const uint8_t *p = base;
	size_t lo = 0, hi = n, mid;
	int c;

	*found = 0;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = block_addr_cmp(
		    (const struct block_addr *)(p + mid * size), key);
		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}
