/*
 * Addresses on the auto-block list, as the parent, netd and imapgwctl
 * hold them and pass them in frames: u8 family (4 or 6), then 4 or 16
 * address bytes.  An IPv4-mapped IPv6 address is always its IPv4
 * address, so one client has one entry.
 */
#ifndef IMAPGW_BLOCKADDR_H
#define IMAPGW_BLOCKADDR_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct block_addr {
	uint8_t family; /* 4 or 6 */
	uint8_t addr[16]; /* IPv4: the first 4 bytes, the rest zero */
};

/* From text ("192.0.2.1", "::1") or a socket address; -1 if neither
 * IPv4 nor IPv6. */
int block_addr_parse(const char *, struct block_addr *);
int block_addr_from_sa(const struct sockaddr *, struct block_addr *);
/* The frame encoding; read sets rd->err on a bad family. */
int block_addr_write(struct buf *, const struct block_addr *);
int block_addr_read(struct reader *, struct block_addr *);
void block_addr_text(const struct block_addr *, char *out, size_t len);
int block_addr_cmp(const struct block_addr *, const struct block_addr *);
/* Binary search of a sorted array of n elements of size bytes, each
 * starting with its struct block_addr: the index of key, or where it
 * goes (*found 0). */
size_t block_addr_find(const void *base, size_t n, size_t size,
    const struct block_addr *key, int *found);

#endif
