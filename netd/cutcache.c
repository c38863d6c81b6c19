/*
 * The cut cache (cutcache.h): scand's SCAN_F_CUT answers, kept in netd's
 * memory by the sanitized bytes and the sections asked for.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cutcache.h"
#include "log.h"

struct cut_entry {
	uint8_t key[32];
	uint64_t tick; /* when stored: the older way of a set goes */
	struct scan_result res; /* offsets into blob */
	uint8_t *blob;
	size_t bloblen;
};

static struct cut_entry *cut_slot[CUT_SETS][CUT_WAYS];
static uint64_t cut_tick;
static size_t cut_entries, cut_bytes;

void
cutcache_key(const uint8_t *msg, size_t len, const struct scan_section *req,
    unsigned nsect, uint8_t key[32])
{
	EVP_MD_CTX *ctx;
	unsigned i, n = 0;
	uint8_t b;

	if ((ctx = EVP_MD_CTX_new()) == NULL)
		fatalx("cut cache: out of memory");
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, msg, len) != 1)
		fatalx("cut cache: SHA-256 failed");
	/* The message, then each section as binary flag, spec, NUL: a
	 * spec has no NUL, so no two lists give the same bytes. */
	for (i = 0; i < nsect; i++) {
		b = req[i].binary ? 1 : 0;
		if (EVP_DigestUpdate(ctx, &b, 1) != 1 ||
		    EVP_DigestUpdate(ctx, req[i].spec,
		        strnlen(req[i].spec, sizeof(req[i].spec)) + 1) != 1)
			fatalx("cut cache: SHA-256 failed");
	}
	if (EVP_DigestFinal_ex(ctx, key, &n) != 1 || n != 32)
		fatalx("cut cache: SHA-256 failed");
	EVP_MD_CTX_free(ctx);
}

static unsigned
cut_set(const uint8_t key[32])
{
	uint32_t h;

	memcpy(&h, key, sizeof(h));
	return h % CUT_SETS;
}

static void
cut_free(struct cut_entry *e)
{
	if (e == NULL)
		return;
	cut_entries--;
	cut_bytes -= e->bloblen;
	free(e->blob);
	free(e);
}

int
cutcache_get(const uint8_t key[32], struct scan_result *res)
{
	struct cut_entry *e;
	unsigned set = cut_set(key), w;

	for (w = 0; w < CUT_WAYS; w++) {
		e = cut_slot[set][w];
		if (e == NULL || memcmp(e->key, key, 32) != 0)
			continue;
		*res = e->res;
		res->fd = -1;
		if ((res->mem = malloc(e->bloblen ? e->bloblen : 1)) == NULL)
			fatal("malloc");
		memcpy(res->mem, e->blob, e->bloblen);
		return 1;
	}
	return 0;
}

static int
sect_has_bytes(const struct scan_result *res, unsigned i)
{
	return (res->sect[i].status == SCAN_SECT_OK ||
	           res->sect[i].status == SCAN_SECT_LITERAL8) &&
	       res->sect[i].len > 0;
}

/* Copy one region of the answer's file to the end of the blob and point
 * its offset there; 0 ok, -1 read short. */
static int
cut_region(int fd, uint64_t *off, uint64_t len, uint8_t *blob, size_t *at)
{
	ssize_t n;

	if (len == 0) {
		*off = 0;
		return 0;
	}
	n = pread(fd, blob + *at, (size_t)len, (off_t)*off);
	if (n != (ssize_t)len) {
		log_warnx("cut cache: answer read short: %s",
		    n == -1 ? strerror(errno) : "end of file");
		return -1;
	}
	*off = *at;
	*at += (size_t)len;
	return 0;
}

void
cutcache_put(const uint8_t key[32], const struct scan_result *res)
{
	struct cut_entry *e, **slot;
	uint64_t total;
	unsigned set = cut_set(key), w, i, nsect;
	size_t at = 0;
	int bad = 0;

	if (res->verdict != SCAN_CHANGED || res->fd == -1)
		return;
	/* The structures and the sections, not the message (the rest of
	 * the file): each region copied, one after another. */
	nsect = res->nsect < SCAN_MAX_SECT ? res->nsect : SCAN_MAX_SECT;
	total = res->bs_len + res->body_len + res->env_len;
	for (i = 0; i < nsect && total <= CUT_BLOB_MAX; i++)
		if (sect_has_bytes(res, i))
			total += res->sect[i].len;
	if (total > CUT_BLOB_MAX || cut_bytes + (size_t)total > CUT_BYTES_MAX)
		return;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		fatal("calloc");
	memcpy(e->key, key, 32);
	e->res = *res;
	e->res.fd = -1;
	e->res.mem = NULL;
	e->res.msg_off = 0;
	e->bloblen = (size_t)total;
	if ((e->blob = malloc(total ? (size_t)total : 1)) == NULL)
		fatal("malloc");
	bad |= cut_region(res->fd, &e->res.bs_off, res->bs_len, e->blob, &at);
	bad |=
	    cut_region(res->fd, &e->res.body_off, res->body_len, e->blob, &at);
	bad |= cut_region(res->fd, &e->res.env_off, res->env_len, e->blob, &at);
	for (i = 0; i < nsect && !bad; i++) {
		if (sect_has_bytes(res, i))
			bad |= cut_region(res->fd, &e->res.sect[i].off,
			    res->sect[i].len, e->blob, &at);
		else
			e->res.sect[i].off = 0;
	}
	if (bad) {
		free(e->blob);
		free(e);
		return;
	}
	/* The same key again, an empty way, or the older way. */
	slot = NULL;
	for (w = 0; w < CUT_WAYS && slot == NULL; w++)
		if (cut_slot[set][w] != NULL &&
		    memcmp(cut_slot[set][w]->key, key, 32) == 0)
			slot = &cut_slot[set][w];
	for (w = 0; w < CUT_WAYS && slot == NULL; w++)
		if (cut_slot[set][w] == NULL)
			slot = &cut_slot[set][w];
	if (slot == NULL) {
		slot = &cut_slot[set][0];
		for (w = 1; w < CUT_WAYS; w++)
			if (cut_slot[set][w]->tick < (*slot)->tick)
				slot = &cut_slot[set][w];
	}
	cut_free(*slot);
	e->tick = ++cut_tick;
	*slot = e;
	cut_entries++;
	cut_bytes += e->bloblen;
}

void
cutcache_stats(size_t *entries, size_t *bytes)
{
	*entries = cut_entries;
	*bytes = cut_bytes;
}

void
cutcache_clear(void)
{
	unsigned set, w;

	for (set = 0; set < CUT_SETS; set++)
		for (w = 0; w < CUT_WAYS; w++) {
			cut_free(cut_slot[set][w]);
			cut_slot[set][w] = NULL;
		}
}
