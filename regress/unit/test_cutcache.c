/*
 * netd/cutcache.c: scand's cut answers kept by (sanitized bytes,
 * sections): round trip with offsets rebased to the kept bytes, keys
 * that differ by bytes, section or binary flag, what is not kept (too
 * large, not CHANGED, read short), replacement within a set, the bounds.
 */
#include <sys/mman.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cutcache.h"
#include "log.h"
#include "test.h"

static struct scan_section sect[3];

/* A result memfd as scand sends one: the message, then the structures
 * and the sections. */
static int
answer(const char *msg, struct scan_result *res, size_t pad)
{
	char tail[256];
	int fd, n;
	size_t i, at;

	memset(res, 0, sizeof(*res));
	res->verdict = SCAN_CHANGED;
	res->action = ACT_STRIP;
	snprintf(res->reason, sizeof(res->reason), "already sanitized");
	fd = memfd_create("t", 0);
	if (fd == -1 || write(fd, msg, strlen(msg)) != (ssize_t)strlen(msg))
		return -1;
	res->fd = fd;
	res->msg_off = 0;
	res->msg_len = strlen(msg);
	for (i = 0; i < pad; i++)
		if (write(fd, "x", 1) != 1)
			return -1;
	at = strlen(msg) + pad;
	n = snprintf(tail, sizeof(tail), "(BS)(BODY)(ENV)Subject: hi\r\n\r\n");
	if (write(fd, tail, (size_t)n) != n)
		return -1;
	res->bs_off = at;
	res->bs_len = 4;
	res->body_off = at + 4;
	res->body_len = 6;
	res->env_off = at + 10;
	res->env_len = 5;
	res->nsect = 2;
	res->sect[0].status = SCAN_SECT_OK;
	res->sect[0].off = at + 15;
	res->sect[0].len = 15;
	res->sect[1].status = SCAN_SECT_NONE;
	res->sect[1].off = 12345;
	res->sect[1].len = 0;
	return 0;
}

static int
same(const struct scan_result *r, uint64_t off, uint64_t len, const char *s)
{
	return r->mem != NULL && len == strlen(s) &&
	       memcmp(r->mem + off, s, len) == 0;
}

static void
test_round_trip(void)
{
	const char *msg = "Subject: hi\r\n\r\nsanitized\r\n";
	struct scan_result res, got;
	uint8_t k1[32], k2[32], k3[32], k4[32];
	size_t n, b;

	cutcache_clear();
	strcpy(sect[0].spec, "HEADER.FIELDS (SUBJECT)");
	strcpy(sect[1].spec, "3");
	cutcache_key((const uint8_t *)msg, strlen(msg), sect, 2, k1);
	CHECK(cutcache_get(k1, &got) == 0);
	CHECK(answer(msg, &res, 0) == 0);
	cutcache_put(k1, &res);
	cutcache_stats(&n, &b);
	CHECK(n == 1 && b == 30);
	memset(&got, 0, sizeof(got));
	CHECK(cutcache_get(k1, &got) == 1);
	CHECK(got.verdict == SCAN_CHANGED && got.fd == -1);
	CHECK(got.action == ACT_STRIP);
	CHECK(strcmp(got.reason, "already sanitized") == 0);
	CHECK(got.msg_len == strlen(msg));
	CHECK(same(&got, got.bs_off, got.bs_len, "(BS)"));
	CHECK(same(&got, got.body_off, got.body_len, "(BODY)"));
	CHECK(same(&got, got.env_off, got.env_len, "(ENV)"));
	CHECK(got.nsect == 2 && got.sect[0].status == SCAN_SECT_OK);
	CHECK(same(
	    &got, got.sect[0].off, got.sect[0].len, "Subject: hi\r\n\r\n"));
	CHECK(got.sect[1].status == SCAN_SECT_NONE && got.sect[1].len == 0);
	free(got.mem);
	/* The caller's copy is its own. */
	CHECK(cutcache_get(k1, &got) == 1);
	got.mem[0] = 'X';
	free(got.mem);
	CHECK(cutcache_get(k1, &got) == 1 &&
	      same(&got, got.bs_off, got.bs_len, "(BS)"));
	free(got.mem);

	/* Other bytes, another section, the binary flag, fewer sections:
	 * other keys. */
	cutcache_key((const uint8_t *)msg, strlen(msg) - 1, sect, 2, k2);
	CHECK(memcmp(k1, k2, 32) != 0 && cutcache_get(k2, &got) == 0);
	strcpy(sect[1].spec, "2");
	cutcache_key((const uint8_t *)msg, strlen(msg), sect, 2, k3);
	CHECK(memcmp(k1, k3, 32) != 0 && cutcache_get(k3, &got) == 0);
	strcpy(sect[1].spec, "3");
	sect[1].binary = 1;
	cutcache_key((const uint8_t *)msg, strlen(msg), sect, 2, k4);
	CHECK(memcmp(k1, k4, 32) != 0 && cutcache_get(k4, &got) == 0);
	sect[1].binary = 0;
	cutcache_key((const uint8_t *)msg, strlen(msg), sect, 1, k4);
	CHECK(memcmp(k1, k4, 32) != 0);
	/* "A" + "BC" is not "AB" + "C". */
	strcpy(sect[0].spec, "A");
	strcpy(sect[1].spec, "BC");
	cutcache_key((const uint8_t *)"m", 1, sect, 2, k2);
	strcpy(sect[0].spec, "AB");
	strcpy(sect[1].spec, "C");
	cutcache_key((const uint8_t *)"m", 1, sect, 2, k3);
	CHECK(memcmp(k2, k3, 32) != 0);
	/* The same key again replaces, not adds. */
	cutcache_put(k1, &res);
	cutcache_stats(&n, &b);
	CHECK(n == 1 && b == 30);
	close(res.fd);
}

static void
test_not_kept(void)
{
	struct scan_result res, got;
	uint8_t k[32];
	size_t n, b;

	cutcache_clear();
	memset(k, 7, sizeof(k));
	/* Structures and sections of more than CUT_BLOB_MAX bytes. */
	CHECK(answer("m\r\n\r\nx", &res, 0) == 0);
	res.sect[1].status = SCAN_SECT_OK;
	res.sect[1].off = res.bs_off + 30;
	res.sect[1].len = CUT_BLOB_MAX - 29;
	if (ftruncate(res.fd, (off_t)(res.bs_off + 30 + CUT_BLOB_MAX)) != 0)
		CHECK(0);
	cutcache_put(k, &res);
	CHECK(cutcache_get(k, &got) == 0);
	/* Regions far apart are kept, each copied: only their bytes
	 * count. */
	res.sect[1].off = res.bs_off + CUT_BLOB_MAX;
	res.sect[1].len = 3;
	cutcache_put(k, &res);
	CHECK(cutcache_get(k, &got) == 1);
	CHECK(got.sect[1].status == SCAN_SECT_OK && got.sect[1].len == 3);
	CHECK(got.mem != NULL &&
	      memcmp(got.mem + got.sect[1].off, "\0\0\0", 3) == 0);
	CHECK(same(
	    &got, got.sect[0].off, got.sect[0].len, "Subject: hi\r\n\r\n"));
	free(got.mem);
	cutcache_clear();
	close(res.fd);
	/* Offsets past the end: read short, not kept. */
	CHECK(answer("m\r\n\r\nx", &res, 0) == 0);
	res.sect[1].status = SCAN_SECT_OK;
	res.sect[1].off = res.bs_off + 100;
	res.sect[1].len = 1;
	cutcache_put(k, &res);
	CHECK(cutcache_get(k, &got) == 0);
	close(res.fd);
	/* Not CHANGED, or no bytes. */
	CHECK(answer("m\r\n\r\nx", &res, 0) == 0);
	res.verdict = SCAN_CLEAN;
	cutcache_put(k, &res);
	CHECK(cutcache_get(k, &got) == 0);
	res.verdict = SCAN_CHANGED;
	close(res.fd);
	res.fd = -1;
	cutcache_put(k, &res);
	CHECK(cutcache_get(k, &got) == 0);
	cutcache_stats(&n, &b);
	CHECK(n == 0 && b == 0);
	/* The message itself is not kept: a large one with small
	 * structures is. */
	CHECK(answer("m\r\n\r\nx", &res, 2 * CUT_BLOB_MAX) == 0);
	cutcache_put(k, &res);
	CHECK(cutcache_get(k, &got) == 1);
	CHECK(same(&got, got.env_off, got.env_len, "(ENV)"));
	free(got.mem);
	close(res.fd);
}

static void
test_bounds(void)
{
	struct scan_result res, got;
	uint8_t k[32];
	size_t n, b;
	unsigned i, hits = 0;

	cutcache_clear();
	CHECK(answer("m\r\n\r\nx", &res, 0) == 0);
	/* One key more than a set has ways: the oldest goes. */
	memset(k, 0, sizeof(k));
	for (i = 0; i <= CUT_WAYS; i++) {
		k[31] = (uint8_t)i;
		cutcache_put(k, &res);
	}
	k[31] = 0;
	CHECK(cutcache_get(k, &got) == 0);
	for (i = 1; i <= CUT_WAYS; i++) {
		k[31] = (uint8_t)i;
		CHECK(cutcache_get(k, &got) == 1);
		free(got.mem);
	}
	/* Many keys: never more than the slots, and the bytes bounded. */
	for (i = 0; i < 3 * CUT_SETS * CUT_WAYS; i++) {
		memset(k, 0, sizeof(k));
		memcpy(k, &i, sizeof(i));
		k[20] = 1;
		cutcache_put(k, &res);
	}
	cutcache_stats(&n, &b);
	CHECK(n <= CUT_SETS * CUT_WAYS && n > CUT_SETS);
	CHECK(b == n * 30 && b <= CUT_BYTES_MAX);
	for (i = 3 * CUT_SETS * CUT_WAYS - CUT_SETS;
	     i < 3 * CUT_SETS * CUT_WAYS; i++) {
		memset(k, 0, sizeof(k));
		memcpy(k, &i, sizeof(i));
		k[20] = 1;
		if (cutcache_get(k, &got) == 1) {
			hits++;
			free(got.mem);
		}
	}
	CHECK(hits == CUT_SETS); /* the newest ones of each set */
	cutcache_clear();
	cutcache_stats(&n, &b);
	CHECK(n == 0 && b == 0);
	close(res.fd);
}

int
main(void)
{
	log_init(LOGT_STDERR, LOGF_TEXT, LOG_ERR, "test_cutcache");
	test_round_trip();
	test_not_kept();
	test_bounds();
	cutcache_clear();
	return test_done("test_cutcache");
}
