/* Small parsers and helpers shared by the config loader and the roles. */
#ifndef IMAPGW_UTIL_H
#define IMAPGW_UTIL_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "config.h"

/* "50M", "64K", "1G", "1024": bytes.  -1 on syntax or overflow. */
int parse_size(const char *, uint64_t *);
/* "30m", "10s", "2h", "1d", "500ms": milliseconds.  A bare number is
 * seconds.  -1 on error. */
int parse_duration(const char *, uint64_t *);
/* "127.0.0.1:143", "[::1]:143": numeric only.  -1 on error. */
int parse_addr(const char *, struct cfg_addr *);
/* "10.0.0.0/8", "::1", "192.0.2.1", "any".  -1 on error. */
int parse_cidr(const char *, struct cfg_cidr *);
int cidr_match(const struct cfg_cidr *, const struct sockaddr *);
/* Text form of a socket address into out ("[::1]:143"). */
void addr_text(const struct sockaddr *, char *out, size_t outlen);
/* Write all of p to fd, going on after EINTR.  -1 on error. */
int write_all(int fd, const void *p, size_t n);
/* The value of a hex digit, either case; -1 if c is none. */
int hex_value(int c);
/* n bytes as 2n lowercase hex digits and a NUL, into out. */
void hex_encode(const uint8_t *, size_t n, char *out);
/* ms milliseconds as a timeval (libevent timers). */
struct timeval ms_timeval(uint64_t ms);

#endif
