/*
 * APT Blocker: the threat database of attachment hashes.
 *
 * The file (apt_blocker.database, read by the parent) has one entry a
 * line:
 *
 *	<hash> <high|medium|low> <threat name>
 *
 * The hash is a SHA-256 (64 hex digits) or an MD5 (32 hex digits), in
 * either case.  Fields are separated by blanks (spaces and tabs); the
 * level is one of the three words, in any case; the name is the rest of
 * the line without the blanks around it: 1 to APT_NAME_MAX bytes of UTF-8
 * with no control character.  Lines end in LF or CRLF (the last one may
 * have no line end).  Blank lines and lines whose first non-blank
 * character is '#' are skipped.  Anything else is an error that names
 * the line, and the whole file is refused.
 *
 * A hash listed more than once is not an error (concatenated feeds
 * repeat entries): it keeps its highest level, with the name of the
 * first line that gave that level.
 *
 * In memory: one array of SHA-256 entries and one of MD5 entries, each
 * sorted by binary hash and searched with bsearch (36 and 20 bytes an
 * entry), and one pool where every distinct name is stored once.  A
 * million SHA-256 entries take about 36 MB.  The digests are fetched
 * from OpenSSL when the database is parsed, so that lookups in the
 * sandbox need no provider loading.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "scand.h"
#include "util.h"

#define APT_NAME_MAX 127 /* bytes; struct apt_hit has room for it */
#define APT_OFF_BITS 30 /* name offsets: meta keeps them in 30 bits */
#define APT_POOL_MAX ((size_t)1 << APT_OFF_BITS)

/* meta: level << APT_OFF_BITS | offset of the name in the pool.  Sorting
 * by (hash, meta) puts the highest level first, then the first name. */
struct apt_sha {
	uint8_t h[32];
	uint32_t meta;
};

struct apt_md5 {
	uint8_t h[16];
	uint32_t meta;
};

struct apt_db {
	struct apt_sha *sha;
	size_t nsha;
	struct apt_md5 *md5;
	size_t nmd5;
	char *pool; /* NUL-terminated names */
	size_t poollen;
	size_t dups; /* lines whose hash was already listed */
	EVP_MD *md_sha256;
	EVP_MD *md_md5;
};

/* Parser state. */
struct apt_parse {
	struct apt_db *db;
	size_t capsha, capmd5, cappool;
	uint32_t *tab; /* name interning: pool offset + 1, 0 = empty */
	size_t tabcap, tabn;
	char *err;
	size_t errlen;
};

static void apt_err(struct apt_parse *ap, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
apt_err(struct apt_parse *ap, size_t line, const char *fmt, ...)
{
	va_list va;
	int n = 0;

	if (ap->err == NULL || ap->errlen == 0)
		return;
	if (line)
		n = snprintf(ap->err, ap->errlen, "line %zu: ", line);
	if (n < 0 || (size_t)n >= ap->errlen)
		return;
	va_start(va, fmt);
	vsnprintf(ap->err + n, ap->errlen - (size_t)n, fmt, va);
	va_end(va);
}

static int
apt_blank(int c)
{
	return c == ' ' || c == '\t';
}

/* A word of the line for an error message: at most 32 bytes, anything
 * but printable ASCII shown as '?'. */
static void
apt_word(const char *p, size_t n, char *out, size_t outlen)
{
	size_t i, m = n < 32 ? n : 32;

	if (m >= outlen)
		m = outlen - 1;
	for (i = 0; i < m; i++)
		out[i] = (p[i] > 0x20 && p[i] < 0x7f) ? p[i] : '?';
	out[m] = '\0';
	if (m < n && m >= 3)
		memcpy(out + m - 3, "...", 3);
}

/*
 * UTF-8 without control characters (C0, DEL, C1), overlong forms,
 * surrogates or code points above U+10FFFF.  0 if valid; else -1 with
 * *ctl set when the problem is a control character.
 */
static int
apt_utf8_ok(const uint8_t *p, size_t n, int *ctl)
{
	size_t i = 0, k, len;
	uint32_t cp, min;

	*ctl = 0;
	while (i < n) {
		if (p[i] < 0x80) {
			if (p[i] < 0x20 || p[i] == 0x7f) {
				*ctl = 1;
				return -1;
			}
			i++;
			continue;
		}
		if ((p[i] & 0xe0) == 0xc0) {
			len = 2;
			cp = p[i] & 0x1f;
			min = 0x80;
		} else if ((p[i] & 0xf0) == 0xe0) {
			len = 3;
			cp = p[i] & 0x0f;
			min = 0x800;
		} else if ((p[i] & 0xf8) == 0xf0) {
			len = 4;
			cp = p[i] & 0x07;
			min = 0x10000;
		} else
			return -1;
		if (n - i < len)
			return -1;
		for (k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return -1;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return -1;
		if (cp >= 0x80 && cp <= 0x9f) {
			*ctl = 1;
			return -1;
		}
		i += len;
	}
	return 0;
}

static uint64_t
apt_strhash(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (uint8_t)p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int
apt_grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t ncap = *cap ? *cap : 1024;
	void *np;

	if (need <= *cap)
		return 0;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2 / size)
			return -1;
		ncap *= 2;
	}
	if ((np = realloc(*p, ncap * size)) == NULL)
		return -1;
	*p = np;
	*cap = ncap;
	return 0;
}

static int
apt_tab_grow(struct apt_parse *ap)
{
	size_t ncap = ap->tabcap ? ap->tabcap * 2 : 1024, i, j;
	uint32_t *nt;
	const char *s;

	if (ncap > SIZE_MAX / sizeof(*nt))
		return -1;
	if ((nt = calloc(ncap, sizeof(*nt))) == NULL)
		return -1;
	for (i = 0; i < ap->tabcap; i++) {
		if (ap->tab[i] == 0)
			continue;
		s = ap->db->pool + ap->tab[i] - 1;
		j = apt_strhash(s, strlen(s)) & (ncap - 1);
		while (nt[j] != 0)
			j = (j + 1) & (ncap - 1);
		nt[j] = ap->tab[i];
	}
	free(ap->tab);
	ap->tab = nt;
	ap->tabcap = ncap;
	return 0;
}

/* The pool offset of the name, added if new; -1 if no memory, -2 if the
 * pool is full. */
static long
apt_intern(struct apt_parse *ap, const char *name, size_t n)
{
	struct apt_db *db = ap->db;
	size_t j;
	uint32_t off;

	if ((ap->tabn + 1) * 2 > ap->tabcap && apt_tab_grow(ap) == -1)
		return -1;
	j = apt_strhash(name, n) & (ap->tabcap - 1);
	while (ap->tab[j] != 0) {
		off = ap->tab[j] - 1;
		if (strncmp(db->pool + off, name, n) == 0 &&
		    db->pool[off + n] == '\0')
			return off;
		j = (j + 1) & (ap->tabcap - 1);
	}
	if (db->poollen + n + 1 > APT_POOL_MAX)
		return -2;
	if (apt_grow(
	        (void **)&db->pool, &ap->cappool, db->poollen + n + 1, 1) == -1)
		return -1;
	off = (uint32_t)db->poollen;
	memcpy(db->pool + off, name, n);
	db->pool[off + n] = '\0';
	db->poollen += n + 1;
	ap->tab[j] = off + 1;
	ap->tabn++;
	return off;
}

/* One line, without its line end.  0: done (entry or nothing), -1: error
 * (set). */
static int
apt_line(struct apt_parse *ap, size_t line, const char *p, size_t len)
{
	static const char *const levels[APT_NLEVEL] = {"high", "medium", "low"};
	struct apt_db *db = ap->db;
	const char *e = p + len;
	const char *h, *lv, *nm;
	size_t hn, ln, nn, i;
	uint8_t bin[32];
	char word[40];
	int level, ctl, v;
	long off;

	if (memchr(p, '\0', len) != NULL) {
		apt_err(ap, line, "NUL byte");
		return -1;
	}
	while (p < e && apt_blank(*p))
		p++;
	if (p == e || *p == '#')
		return 0;

	for (h = p; p < e && !apt_blank(*p); p++)
		;
	hn = (size_t)(p - h);
	for (i = 0; i < hn; i++)
		if (hex_value((unsigned char)h[i]) == -1) {
			apt_word(h, hn, word, sizeof(word));
			apt_err(ap, line,
			    "\"%s\" is not a hash (64 hex digits for SHA-256, "
			    "32 for MD5)",
			    word);
			return -1;
		}
	if (hn != 64 && hn != 32) {
		apt_err(ap, line,
		    "a hash of %zu hex digits (SHA-256 has 64, MD5 32)", hn);
		return -1;
	}
	for (i = 0; i < hn / 2; i++) {
		v = hex_value((unsigned char)h[2 * i]) << 4 |
		    hex_value((unsigned char)h[2 * i + 1]);
		bin[i] = (uint8_t)v;
	}

	while (p < e && apt_blank(*p))
		p++;
	for (lv = p; p < e && !apt_blank(*p); p++)
		;
	ln = (size_t)(p - lv);
	if (ln == 0) {
		apt_err(ap, line,
		    "no level after the hash (high, medium or "
		    "low)");
		return -1;
	}
	for (level = 0; level < APT_NLEVEL; level++)
		if (strlen(levels[level]) == ln &&
		    strncasecmp(lv, levels[level], ln) == 0)
			break;
	if (level == APT_NLEVEL) {
		apt_word(lv, ln, word, sizeof(word));
		apt_err(ap, line, "unknown level \"%s\" (high, medium or low)",
		    word);
		return -1;
	}

	while (p < e && apt_blank(*p))
		p++;
	while (e > p && apt_blank(e[-1]))
		e--;
	nm = p;
	nn = (size_t)(e - p);
	if (nn == 0) {
		apt_err(ap, line, "no threat name after the level");
		return -1;
	}
	if (nn > APT_NAME_MAX) {
		apt_err(ap, line, "threat name of %zu bytes (at most %d)", nn,
		    APT_NAME_MAX);
		return -1;
	}
	if (apt_utf8_ok((const uint8_t *)nm, nn, &ctl) == -1) {
		apt_err(ap, line, "threat name %s",
		    ctl ? "has a control character" : "is not valid UTF-8");
		return -1;
	}

	if ((off = apt_intern(ap, nm, nn)) < 0) {
		apt_err(ap, line,
		    off == -2 ? "too many distinct threat names"
		              : "out of memory");
		return -1;
	}
	if (hn == 64) {
		if (apt_grow((void **)&db->sha, &ap->capsha, db->nsha + 1,
		        sizeof(*db->sha)) == -1) {
			apt_err(ap, line, "out of memory");
			return -1;
		}
		memcpy(db->sha[db->nsha].h, bin, 32);
		db->sha[db->nsha].meta =
		    (uint32_t)level << APT_OFF_BITS | (uint32_t)off;
		db->nsha++;
	} else {
		if (apt_grow((void **)&db->md5, &ap->capmd5, db->nmd5 + 1,
		        sizeof(*db->md5)) == -1) {
			apt_err(ap, line, "out of memory");
			return -1;
		}
		memcpy(db->md5[db->nmd5].h, bin, 16);
		db->md5[db->nmd5].meta =
		    (uint32_t)level << APT_OFF_BITS | (uint32_t)off;
		db->nmd5++;
	}
	return 0;
}

static int
apt_meta_cmp(uint32_t a, uint32_t b)
{
	return a < b ? -1 : a > b;
}

static int
apt_sha_cmp(const void *a, const void *b)
{
	const struct apt_sha *x = a, *y = b;
	int c = memcmp(x->h, y->h, sizeof(x->h));

	return c ? c : apt_meta_cmp(x->meta, y->meta);
}

static int
apt_md5_cmp(const void *a, const void *b)
{
	const struct apt_md5 *x = a, *y = b;
	int c = memcmp(x->h, y->h, sizeof(x->h));

	return c ? c : apt_meta_cmp(x->meta, y->meta);
}

static int
apt_sha_key(const void *key, const void *elem)
{
	return memcmp(key, ((const struct apt_sha *)elem)->h, 32);
}

static int
apt_md5_key(const void *key, const void *elem)
{
	return memcmp(key, ((const struct apt_md5 *)elem)->h, 16);
}

/* Sort, keep the first of each run of one hash (the highest level), and
 * give the unused memory back. */
static void
apt_finish(struct apt_db *db)
{
	size_t i, n;
	void *p;

	if (db->nsha > 1) {
		qsort(db->sha, db->nsha, sizeof(*db->sha), apt_sha_cmp);
		for (i = 1, n = 1; i < db->nsha; i++) {
			if (memcmp(db->sha[i].h, db->sha[n - 1].h, 32) == 0)
				continue;
			db->sha[n++] = db->sha[i];
		}
		db->dups += db->nsha - n;
		db->nsha = n;
	}
	if (db->nmd5 > 1) {
		qsort(db->md5, db->nmd5, sizeof(*db->md5), apt_md5_cmp);
		for (i = 1, n = 1; i < db->nmd5; i++) {
			if (memcmp(db->md5[i].h, db->md5[n - 1].h, 16) == 0)
				continue;
			db->md5[n++] = db->md5[i];
		}
		db->dups += db->nmd5 - n;
		db->nmd5 = n;
	}
	if (db->nsha && (p = realloc(db->sha, db->nsha * sizeof(*db->sha))))
		db->sha = p;
	if (db->nmd5 && (p = realloc(db->md5, db->nmd5 * sizeof(*db->md5))))
		db->md5 = p;
	if (db->poollen && (p = realloc(db->pool, db->poollen)))
		db->pool = p;
}

struct apt_db *
apt_db_parse(const void *data, size_t len, char *err, size_t errlen)
{
	struct apt_parse ap;
	struct apt_db *db;
	const char *p = data, *end, *nl;
	size_t line = 0, n;

	memset(&ap, 0, sizeof(ap));
	ap.err = err;
	ap.errlen = errlen;
	if (err && errlen)
		err[0] = '\0';
	if ((db = calloc(1, sizeof(*db))) == NULL) {
		apt_err(&ap, 0, "out of memory");
		return NULL;
	}
	ap.db = db;
	if ((db->md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL ||
	    (db->md_md5 = EVP_MD_fetch(NULL, "MD5", NULL)) == NULL) {
		apt_err(&ap, 0, "OpenSSL has no %s digest",
		    db->md_sha256 ? "MD5" : "SHA-256");
		goto fail;
	}
	if (p == NULL) {
		p = "";
		len = 0;
	}
	end = p + len;
	while (p < end) {
		line++;
		nl = memchr(p, '\n', (size_t)(end - p));
		n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (apt_line(&ap, line, p, n) == -1)
			goto fail;
		p = nl ? nl + 1 : end;
	}
	free(ap.tab);
	apt_finish(db);
	return db;
fail:
	free(ap.tab);
	apt_db_free(db);
	return NULL;
}

void
apt_db_free(struct apt_db *db)
{
	if (db == NULL)
		return;
	free(db->sha);
	free(db->md5);
	free(db->pool);
	EVP_MD_free(db->md_sha256);
	EVP_MD_free(db->md_md5);
	free(db);
}

size_t
apt_db_count(const struct apt_db *db)
{
	return db ? db->nsha + db->nmd5 : 0;
}

int
apt_lookup(
    const struct apt_db *db, const void *data, size_t len, struct apt_hit *hit)
{
	uint8_t sha[32], md5[16];
	unsigned int n1 = 0, n2 = 0;
	const struct apt_sha *s = NULL;
	const struct apt_md5 *m = NULL;
	uint32_t meta;

	memset(hit, 0, sizeof(*hit));
	hit->level = -1;
	if (data == NULL)
		data = "";
	if (EVP_Digest(data, len, sha, &n1, db ? db->md_sha256 : EVP_sha256(),
	        NULL) != 1 ||
	    EVP_Digest(
	        data, len, md5, &n2, db ? db->md_md5 : EVP_md5(), NULL) != 1 ||
	    n1 != sizeof(sha) || n2 != sizeof(md5))
		return -1;
	hex_encode(sha, sizeof(sha), hit->sha256);
	hex_encode(md5, sizeof(md5), hit->md5);
	if (db == NULL)
		return 0;
	if (db->nsha)
		s = bsearch(sha, db->sha, db->nsha, sizeof(*s), apt_sha_key);
	if (db->nmd5)
		m = bsearch(md5, db->md5, db->nmd5, sizeof(*m), apt_md5_key);
	if (s == NULL && m == NULL)
		return 0;
	/* Both listed: the higher level; the SHA-256 entry if equal. */
	if (s && m)
		meta = apt_meta_cmp(
		           m->meta >> APT_OFF_BITS, s->meta >> APT_OFF_BITS) < 0
		           ? m->meta
		           : s->meta;
	else
		meta = s ? s->meta : m->meta;
	hit->level = (int)(meta >> APT_OFF_BITS);
	snprintf(hit->name, sizeof(hit->name), "%s",
	    db->pool + (meta & (APT_POOL_MAX - 1)));
	return 1;
}
