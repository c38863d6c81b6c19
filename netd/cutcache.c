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

/* Grow [lo, hi) by one region of the answer. */
static void
cut_span(uint64_t off, uint64_t len, uint64_t *lo, uint64_t *hi)
{
	if (len == 0)
		return;
	if (off < *lo)
		*lo = off;
	if (off + len > *hi)
		*hi = off + len;
}

void
cutcache_put(const uint8_t key[32], const struct scan_result *res)
{
	struct cut_entry *e, **slot;
	uint64_t lo = UINT64_MAX, hi = 0;
	unsigned set = cut_set(key), w, i;
	ssize_t n;

	if (res->verdict != SCAN_CHANGED || res->fd == -1)
		return;
	cut_span(res->bs_off, res->bs_len, &lo, &hi);
	cut_span(res->body_off, res->body_len, &lo, &hi);
	cut_span(res->env_off, res->env_len, &lo, &hi);
	for (i = 0; i < res->nsect && i < SCAN_MAX_SECT; i++)
		if (res->sect[i].status == SCAN_SECT_OK ||
		    res->sect[i].status == SCAN_SECT_LITERAL8)
			cut_span(res->sect[i].off, res->sect[i].len, &lo, &hi);
	if (hi == 0)
		lo = 0;
	if (hi - lo > CUT_BLOB_MAX ||
	    cut_bytes + (size_t)(hi - lo) > CUT_BYTES_MAX)
		return;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		fatal("calloc");
	memcpy(e->key, key, 32);
	e->bloblen = (size_t)(hi - lo);
	if ((e->blob = malloc(e->bloblen ? e->bloblen : 1)) == NULL)
		fatal("malloc");
	if (e->bloblen > 0) {
		n = pread(res->fd, e->blob, e->bloblen, (off_t)lo);
		if (n != (ssize_t)e->bloblen) {
			log_warnx("cut cache: answer read short: %s",
			    n == -1 ? strerror(errno) : "end of file");
			free(e->blob);
			free(e);
			return;
		}
	}
	/* Offsets into the blob; the message itself is not kept. */
	e->res = *res;
	e->res.fd = -1;
	e->res.mem = NULL;
	e->res.msg_off = 0;
	if (e->res.bs_len)
		e->res.bs_off -= lo;
	if (e->res.body_len)
		e->res.body_off -= lo;
	if (e->res.env_len)
		e->res.env_off -= lo;
	for (i = 0; i < e->res.nsect && i < SCAN_MAX_SECT; i++) {
		if ((e->res.sect[i].status == SCAN_SECT_OK ||
		        e->res.sect[i].status == SCAN_SECT_LITERAL8) &&
		    e->res.sect[i].len)
			e->res.sect[i].off -= lo;
		else
			e->res.sect[i].off = 0;
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
