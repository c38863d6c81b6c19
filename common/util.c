/*
 * Small parsers shared by the config loader and the roles: sizes,
 * durations, numeric socket addresses and CIDR blocks.  See util.h.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "util.h"

/*
 * Parse the leading decimal digits of s into *v.  Returns the number of
 * digits consumed, 0 if there are none, -1 on overflow.
 */
static int
util_digits(const char *s, uint64_t *v)
{
	uint64_t n = 0;
	int i;

	for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
		if (n > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return -1;
		n = n * 10 + (uint64_t)(s[i] - '0');
	}
	*v = n;
	return i;
}

static int
util_mul(uint64_t v, uint64_t mul, uint64_t *out)
{
	if (mul != 0 && v > UINT64_MAX / mul)
		return -1;
	*out = v * mul;
	return 0;
}

int
parse_size(const char *s, uint64_t *out)
{
	uint64_t v, mul;
	int n;

	if (s == NULL || (n = util_digits(s, &v)) <= 0)
		return -1;
	s += n;
	switch (*s) {
	case '\0':
		mul = 1;
		break;
	case 'k':
	case 'K':
		mul = 1024;
		break;
	case 'm':
	case 'M':
		mul = 1024 * 1024;
		break;
	case 'g':
	case 'G':
		mul = 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*s != '\0' && s[1] != '\0')
		return -1;
	return util_mul(v, mul, out);
}

int
parse_duration(const char *s, uint64_t *out)
{
	uint64_t v, mul;
	int n;

	if (s == NULL || (n = util_digits(s, &v)) <= 0)
		return -1;
	s += n;
	if (strcmp(s, "ms") == 0)
		mul = 1;
	else if (*s == '\0' || strcmp(s, "s") == 0)
		mul = 1000;
	else if (strcmp(s, "m") == 0)
		mul = 60 * 1000;
	else if (strcmp(s, "h") == 0)
		mul = 60 * 60 * 1000;
	else if (strcmp(s, "d") == 0)
		mul = 24 * 60 * 60 * 1000;
	else
		return -1;
	return util_mul(v, mul, out);
}

/* Decimal port 1..65535, nothing else. */
static int
util_port(const char *s, uint16_t *port)
{
	uint64_t v;
	int n;

	if ((n = util_digits(s, &v)) <= 0 || s[n] != '\0' || n > 5)
		return -1;
	if (v < 1 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

int
parse_addr(const char *s, struct cfg_addr *a)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *h = s;
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
	size_t hlen;
	uint16_t port;

	if (s == NULL || (colon = strrchr(s, ':')) == NULL)
		return -1;
	hlen = (size_t)(colon - s);
	if (s[0] == '[') {
		if (hlen < 2 || s[hlen - 1] != ']')
			return -1;
		h = s + 1;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host) || util_port(colon + 1, &port))
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	memset(a, 0, sizeof(*a));
	if (s[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		a->len = sizeof(*sin6);
	} else if (s[0] != '[' &&
	           inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		a->len = sizeof(*sin);
	} else
		return -1;
	addr_text((struct sockaddr *)&a->ss, a->text, sizeof(a->text));
	return 0;
}

static void
cidr_mask(uint8_t *addr, int alen, int prefix)
{
	int i, bits;

	for (i = 0; i < alen; i++) {
		bits = prefix - i * 8;
		if (bits >= 8)
			continue;
		addr[i] &= bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
	}
}

int
parse_cidr(const char *s, struct cfg_cidr *c)
{
	char host[INET6_ADDRSTRLEN + 1], ntop[INET6_ADDRSTRLEN];
	const char *slash;
	uint64_t v;
	size_t hlen;
	int n, alen, max;

	if (s == NULL)
		return -1;
	memset(c, 0, sizeof(*c));
	if (strcmp(s, "any") == 0) {
		c->family = AF_UNSPEC;
		snprintf(c->text, sizeof(c->text), "any");
		return 0;
	}
	slash = strchr(s, '/');
	hlen = slash ? (size_t)(slash - s) : strlen(s);
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, c->addr) == 1)
		c->family = AF_INET;
	else if (inet_pton(AF_INET6, host, c->addr) == 1)
		c->family = AF_INET6;
	else
		return -1;
	alen = c->family == AF_INET ? 4 : 16;
	max = alen * 8;
	c->prefix = max;
	if (slash != NULL) {
		n = util_digits(slash + 1, &v);
		if (n <= 0 || n > 3 || slash[1 + n] != '\0' ||
		    v > (uint64_t)max)
			return -1;
		c->prefix = (int)v;
	}
	cidr_mask(c->addr, alen, c->prefix);
	inet_ntop(c->family, c->addr, ntop, sizeof(ntop));
	snprintf(c->text, sizeof(c->text), "%s/%d", ntop, c->prefix);
	return 0;
}

static int
cidr_cmp(const uint8_t *net, const uint8_t *addr, int prefix)
{
	int full = prefix / 8, rest = prefix % 8;
	uint8_t mask;

	if (memcmp(net, addr, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	mask = (uint8_t)(0xff << (8 - rest));
	return (net[full] & mask) == (addr[full] & mask);
}

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int
cidr_match(const struct cfg_cidr *c, const struct sockaddr *sa)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
	uint8_t a[16];

	if (c->family == AF_UNSPEC)
		return 1;
	if (sa == NULL)
		return 0;
	if (sa->sa_family == AF_INET) {
		memcpy(a + 12, &sin->sin_addr, 4);
		if (c->family == AF_INET)
			return cidr_cmp(c->addr, a + 12, c->prefix);
		/* An IPv4 client against an IPv6 block: as ::ffff:a.b.c.d */
		memcpy(a, v4mapped, sizeof(v4mapped));
		return c->family == AF_INET6 && cidr_cmp(c->addr, a, c->prefix);
	}
	if (sa->sa_family != AF_INET6)
		return 0;
	memcpy(a, &sin6->sin6_addr, 16);
	if (c->family == AF_INET6)
		return cidr_cmp(c->addr, a, c->prefix);
	/* An IPv4-mapped IPv6 client against an IPv4 block. */
	if (c->family == AF_INET && memcmp(a, v4mapped, sizeof(v4mapped)) == 0)
		return cidr_cmp(c->addr, a + 12, c->prefix);
	return 0;
}

void
addr_text(const struct sockaddr *sa, char *out, size_t outlen)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
	char ntop[INET6_ADDRSTRLEN];

	if (outlen == 0)
		return;
	if (sa == NULL) {
		snprintf(out, outlen, "?");
		return;
	}
	switch (sa->sa_family) {
	case AF_INET:
		inet_ntop(AF_INET, &sin->sin_addr, ntop, sizeof(ntop));
		snprintf(out, outlen, "%s:%u", ntop, ntohs(sin->sin_port));
		break;
	case AF_INET6:
		inet_ntop(AF_INET6, &sin6->sin6_addr, ntop, sizeof(ntop));
		snprintf(out, outlen, "[%s]:%u", ntop, ntohs(sin6->sin6_port));
		break;
	case AF_UNIX:
		snprintf(out, outlen, "unix");
		break;
	default:
		snprintf(out, outlen, "?");
		break;
	}
}

int
write_all(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	ssize_t r;

	while (n > 0) {
		r = write(fd, p, n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int
hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void
hex_encode(const uint8_t *h, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[h[i] >> 4];
		out[2 * i + 1] = digits[h[i] & 15];
	}
	out[2 * n] = '\0';
}

struct timeval
ms_timeval(uint64_t ms)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	return tv;
}
