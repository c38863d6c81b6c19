/*
 * The verdict cache (vcache.h): a bounded in-memory table per process in
 * front of an LMDB environment in state_dir/verdicts.
 *
 * LMDB environment.  A directory (data.mdb, lock.mdb), two named
 * databases:
 *   "msg"  key: message key encoding (below)        value: MSGREC
 *   "sha"  key: u32 action length, action, sha[32]  value: SHAREC
 * The message key encoding is u32 length and bytes of the action, the
 * user and the mailbox, then u32 UIDVALIDITY and u32 UID, all big-endian:
 * no two keys share an encoding whatever bytes the names hold.  LMDB
 * keys are at most 511 bytes; a longer encoding is stored as 0xff and
 * its SHA-256 (a direct encoding never starts with 0xff: its first
 * field would be longer than 511 bytes).  The memory layer uses the
 * encodings themselves.
 *
 * Records are versioned and checked on every read; a record that does
 * not parse (or whose hash is not its key's) is a miss, never trusted:
 *   MSGREC  u8 version, u8 0, sha[32]
 *   SHAREC  u8 version, u8 class, u16 action, u16 reason length,
 *           u64 original size, sha[32], u64 message length, u64 judge
 *           stamp, u16 0, reason, message (CHANGED only)
 *
 * Flags: MDB_NOTLS (one read transaction is kept and reused with
 * mdb_txn_reset/renew), MDB_NORDAHEAD (random lookups), MDB_NOMETASYNC.
 * Durability: a system crash must not corrupt the map, which MDB_NOSYNC
 * would allow (the meta page may reach the disk before the pages it
 * points to); MDB_NOMETASYNC keeps one fdatasync per commit, so a crash
 * may lose the last commit but leaves a consistent map.  The fdatasync
 * cost 1.4 to 7 ms on the test machine (under the write lock every
 * worker shares), so:
 *  - a CHANGED verdict is committed (and synced) at once, before
 *    vcache_put returns: losing it after a client saw the sanitized
 *    message would break immutability;
 *  - CLEAN verdicts are batched, VC_BATCH to a commit or whatever is
 *    pending when a CHANGED one is written, when the oldest is
 *    VC_BATCH_SECS old at the next call, and at close.  A netd crash
 *    loses at most a batch of CLEAN verdicts: those messages are judged
 *    again.  Until the commit, lookups of this process find them (the
 *    memory layer, then the pending list); other processes do not.
 * Measured here (test_vcache with VCACHE_BENCH=1, 10,000 entries): a
 * CLEAN put 15 to 100 us amortized, a CHANGED put of 10 KB 3.6 to 7 ms,
 * a CLEAN get 3 us from LMDB and 0.4 us from memory.
 *
 * Memory layer: two set-associative tables of memmax slots each (by
 * message key, by action and hash), 4 slots a set, the oldest of a set
 * replaced.  CLEAN verdicts are kept; CHANGED ones with their message
 * when it is at most VC_MEM_MSGMAX bytes, or, without the persistent
 * layer, within VC_MEM_BYTES in all (a CHANGED verdict that does not fit
 * is then not remembered at all: a miss is judged again).
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <openssl/evp.h>

#include "log.h"
#include "vcache.h"

#define VC_VERSION 2
#define VC_MSGREC_LEN 34
#define VC_SHAREC_HDR 64
#define VC_KEYMAX 511 /* LMDB's default maximum key size */
#define VC_WAYS 4
#define VC_MEM_MSGMAX (64 * 1024)
#define VC_MEM_BYTES (32 * 1024 * 1024)
#define VC_FULL_WARN_SECS 60
#define VC_BATCH 64 /* CLEAN verdicts written in one transaction */
#define VC_BATCH_SECS 1 /* ... or when the oldest is this old */

struct vc_slot {
	uint8_t *key; /* encoded key, malloc'd; NULL: empty */
	size_t keylen;
	uint64_t hash;
	uint64_t stamp; /* insertion order, for replacement */
	struct vc_entry e; /* by message: only cls, sha */
	int nomsg; /* CHANGED whose message is not kept in memory */
};

/* A verdict on its way to LMDB. */
struct vc_pend {
	uint8_t *menc, *senc; /* encoded keys; menc NULL: hash only */
	size_t mlen, slen;
	struct vc_entry e; /* without a message */
	int keyonly; /* a CHANGED verdict is stored: only menc -> hash */
};

struct vc_table {
	struct vc_slot *slot;
	size_t nsets; /* slots = nsets * VC_WAYS */
};

struct vcache {
	MDB_env *env; /* NULL: memory only */
	MDB_dbi dbmsg, dbsha;
	MDB_txn *rtxn; /* reset between reads */
	struct vc_table bymsg, bysha;
	uint64_t stamp;
	uint64_t seed;
	size_t membytes; /* message bytes kept in memory */
	time_t fullwarn; /* last "verdict cache full" */
	struct vc_pend pend[VC_BATCH]; /* CLEAN verdicts not yet written */
	size_t npend;
	time_t pend_since; /* monotonic seconds of the oldest */
};

static void vc_flush_due(struct vcache *);
static const struct vc_pend *vc_pend_find(
    const struct vcache *, const uint8_t *, size_t, int bymsg);

/*
 * Encoding.
 */

struct vc_key {
	uint8_t b[VC_KEYMAX];
	size_t len;
	uint8_t *big; /* longer than VC_KEYMAX: malloc'd, else NULL */
};

/* The encoding of a key, fields as (pointer, length) pairs.  Into k->b if
 * it fits, else into k->big; returns the bytes, NULL if out of memory. */
static const uint8_t *
vc_encode(struct vc_key *k, const struct vc_msgkey *m, const char *action,
    const uint8_t sha[32])
{
	const char *s[3];
	uint8_t hdr[8], *p;
	size_t i, n, ns, l, len = 0;

	k->big = NULL;
	s[0] = m != NULL ? m->action : action;
	s[1] = m != NULL ? m->user : NULL;
	s[2] = m != NULL ? m->mailbox : NULL;
	ns = m != NULL ? 3 : 1;
	for (i = 0; i < ns; i++) {
		if (s[i] == NULL || strlen(s[i]) > UINT32_MAX)
			return NULL;
		len += 4 + strlen(s[i]);
	}
	len += m != NULL ? 8 : 32;
	if (len <= sizeof(k->b))
		p = k->b;
	else if ((p = k->big = malloc(len)) == NULL)
		return NULL;
	for (i = 0, n = 0; i < ns; i++) {
		l = strlen(s[i]);
		p[n++] = (uint8_t)(l >> 24);
		p[n++] = (uint8_t)(l >> 16);
		p[n++] = (uint8_t)(l >> 8);
		p[n++] = (uint8_t)l;
		memcpy(p + n, s[i], l);
		n += l;
	}
	if (m != NULL) {
		for (i = 0; i < 4; i++) {
			hdr[i] = (uint8_t)(m->uidvalidity >> (24 - 8 * i));
			hdr[4 + i] = (uint8_t)(m->uid >> (24 - 8 * i));
		}
		memcpy(p + n, hdr, 8);
		n += 8;
	} else {
		memcpy(p + n, sha, 32);
		n += 32;
	}
	k->len = n;
	return p;
}

static void
vc_key_free(struct vc_key *k)
{
	free(k->big);
	k->big = NULL;
}

/* The LMDB key for an encoding: itself, or 0xff and its SHA-256. */
static int
vc_dbkey(const uint8_t *enc, size_t len, uint8_t *out, MDB_val *v)
{
	unsigned int dl = 32;

	if (len <= VC_KEYMAX) {
		v->mv_data = (void *)enc;
		v->mv_size = len;
		return 0;
	}
	out[0] = 0xff;
	if (EVP_Digest(enc, len, out + 1, &dl, EVP_sha256(), NULL) != 1)
		return -1;
	v->mv_data = out;
	v->mv_size = 33;
	return 0;
}

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void
put64(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void
put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint64_t
get64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* SHAREC: NULL if out of memory. */
static uint8_t *
vc_sharec(const struct vc_entry *e, size_t *len)
{
	size_t rl = strnlen(e->reason, sizeof(e->reason) - 1);
	size_t ml = e->cls == VC_CHANGED ? e->msglen : 0;
	uint8_t *p;

	*len = VC_SHAREC_HDR + rl + ml;
	if ((p = malloc(*len)) == NULL)
		return NULL;
	p[0] = VC_VERSION;
	p[1] = (uint8_t)e->cls;
	put16(p + 2, (uint16_t)e->action);
	put16(p + 4, (uint16_t)rl);
	put64(p + 6, e->orig_size);
	memcpy(p + 14, e->sha, 32);
	put64(p + 46, ml);
	put64(p + 54, e->stamp);
	/* p[62..63] reserved */
	p[62] = p[63] = 0;
	memcpy(p + VC_SHAREC_HDR, e->reason, rl);
	if (ml > 0)
		memcpy(p + VC_SHAREC_HDR + rl, e->msg, ml);
	return p;
}

/* Parse a SHAREC into e (message copied): 1 ok, 0 bad record, -1 out of
 * memory. */
static int
vc_sharec_parse(const uint8_t *p, size_t len, const uint8_t sha[32],
    struct vc_entry *e, int withmsg)
{
	size_t rl;
	uint64_t ml;

	memset(e, 0, sizeof(*e));
	if (len < VC_SHAREC_HDR || p[0] != VC_VERSION ||
	    (p[1] != VC_CLEAN && p[1] != VC_CHANGED) ||
	    memcmp(p + 14, sha, 32) != 0)
		return 0;
	rl = get16(p + 4);
	ml = get64(p + 46);
	if (rl >= sizeof(e->reason) || (p[1] == VC_CLEAN && ml != 0) ||
	    ml > len || len - VC_SHAREC_HDR != rl + ml)
		return 0;
	e->cls = p[1];
	e->action = get16(p + 2);
	e->orig_size = get64(p + 6);
	e->stamp = get64(p + 54);
	memcpy(e->sha, sha, 32);
	memcpy(e->reason, p + VC_SHAREC_HDR, rl);
	e->reason[rl] = '\0';
	if (e->cls == VC_CHANGED && withmsg) {
		/* One byte more: malloc(0) may return NULL. */
		if ((e->msg = malloc(ml + 1)) == NULL)
			return -1;
		memcpy(e->msg, p + VC_SHAREC_HDR + rl, ml);
		e->msglen = ml;
	}
	return 1;
}

/*
 * Memory layer.
 */

static uint64_t
vc_hash(const struct vcache *vc, const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ vc->seed;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 29);
}

static void
vc_slot_clear(struct vcache *vc, struct vc_slot *s)
{
	if (s->e.msg != NULL)
		vc->membytes -= s->e.msglen;
	vc_entry_free(&s->e);
	free(s->key);
	memset(s, 0, sizeof(*s));
}

static struct vc_slot *
vc_mem_find(struct vcache *vc, struct vc_table *t, const uint8_t *key,
    size_t len, uint64_t h)
{
	struct vc_slot *set;
	size_t i;

	if (t->slot == NULL)
		return NULL;
	set = &t->slot[(h % t->nsets) * VC_WAYS];
	for (i = 0; i < VC_WAYS; i++)
		if (set[i].key != NULL && set[i].hash == h &&
		    set[i].keylen == len && memcmp(set[i].key, key, len) == 0)
			return &set[i];
	return NULL;
}

/* The slot for key: its own, else an empty or the oldest of its set,
 * cleared and given the key.  NULL without a table or memory. */
static struct vc_slot *
vc_mem_slot(struct vcache *vc, struct vc_table *t, const uint8_t *key,
    size_t len, uint64_t h)
{
	struct vc_slot *set, *s;
	size_t i;

	if ((s = vc_mem_find(vc, t, key, len, h)) != NULL)
		return s;
	if (t->slot == NULL)
		return NULL;
	set = &t->slot[(h % t->nsets) * VC_WAYS];
	s = &set[0];
	for (i = 0; i < VC_WAYS; i++) {
		if (set[i].key == NULL) {
			s = &set[i];
			break;
		}
		if (set[i].stamp < s->stamp)
			s = &set[i];
	}
	vc_slot_clear(vc, s);
	if ((s->key = malloc(len)) == NULL)
		return NULL;
	memcpy(s->key, key, len);
	s->keylen = len;
	s->hash = h;
	s->stamp = ++vc->stamp;
	return s;
}

static int
vc_entry_copy(struct vc_entry *dst, const struct vc_entry *src)
{
	*dst = *src;
	dst->msg = NULL;
	if (src->msg != NULL) {
		if ((dst->msg = malloc(src->msglen + 1)) == NULL)
			return -1;
		memcpy(dst->msg, src->msg, src->msglen);
	}
	return 0;
}

/* Remember the verdict of a hash in memory. */
static void
vc_mem_sha(struct vcache *vc, const uint8_t *key, size_t len, uint64_t h,
    const struct vc_entry *e)
{
	struct vc_slot *s;
	int withmsg = 0;

	if (e->cls == VC_CHANGED) {
		withmsg = e->msglen <= VC_MEM_MSGMAX ||
		          (vc->env == NULL &&
		              vc->membytes + e->msglen <= VC_MEM_BYTES);
		/* Memory only and too large: not remembered at all. */
		if (!withmsg && vc->env == NULL) {
			if ((s = vc_mem_find(vc, &vc->bysha, key, len, h)))
				vc_slot_clear(vc, s);
			return;
		}
	}
	if ((s = vc_mem_slot(vc, &vc->bysha, key, len, h)) == NULL)
		return;
	if (s->e.msg != NULL)
		vc->membytes -= s->e.msglen;
	vc_entry_free(&s->e);
	s->e = *e;
	s->e.msg = NULL;
	s->e.msglen = 0;
	s->nomsg = e->cls == VC_CHANGED;
	if (withmsg && (s->e.msg = malloc(e->msglen + 1)) != NULL) {
		memcpy(s->e.msg, e->msg, e->msglen);
		s->e.msglen = e->msglen;
		vc->membytes += e->msglen;
		s->nomsg = 0;
	}
}

/*
 * LMDB layer.
 */

static void
vc_mdb_err(struct vcache *vc, const char *what, int rc)
{
	time_t now;

	if (rc == MDB_MAP_FULL) {
		now = time(NULL);
		if (vc->fullwarn == 0 ||
		    now - vc->fullwarn >= VC_FULL_WARN_SECS) {
			vc->fullwarn = now;
			log_warnx("verdict cache full: new verdicts are not "
			          "remembered (raise verdict_cache.size)");
		}
		return;
	}
	log_warnx("verdict cache: %s: %s", what, mdb_strerror(rc));
}

/* Another process grew the map: adopt its size (once). */
static int
vc_resized(struct vcache *vc, int rc)
{
	if (rc != MDB_MAP_RESIZED)
		return 0;
	return mdb_env_set_mapsize(vc->env, 0) == 0;
}

static int
vc_rtxn(struct vcache *vc)
{
	int rc;

	if (vc->rtxn == NULL)
		rc = mdb_txn_begin(vc->env, NULL, MDB_RDONLY, &vc->rtxn);
	else
		rc = mdb_txn_renew(vc->rtxn);
	if (rc != 0 && vc_resized(vc, rc)) {
		if (vc->rtxn != NULL) {
			mdb_txn_abort(vc->rtxn);
			vc->rtxn = NULL;
		}
		rc = mdb_txn_begin(vc->env, NULL, MDB_RDONLY, &vc->rtxn);
	}
	if (rc != 0) {
		if (vc->rtxn != NULL) {
			mdb_txn_abort(vc->rtxn);
			vc->rtxn = NULL;
		}
		vc_mdb_err(vc, "read", rc);
		return -1;
	}
	return 0;
}

/* mdb_get in the read transaction (which the caller resets). */
static int
vc_mdb_get(struct vcache *vc, MDB_dbi dbi, MDB_val *k, MDB_val *v)
{
	int rc;

	if ((rc = mdb_get(vc->rtxn, dbi, k, v)) == 0)
		return 1;
	if (rc != MDB_NOTFOUND)
		vc_mdb_err(vc, "read", rc);
	return 0;
}

/* The verdict of a hash: memory, then LMDB.  1 hit, 0 miss. */
static int
vc_get_sha(struct vcache *vc, const char *action, const uint8_t sha[32],
    struct vc_entry *e)
{
	const struct vc_pend *q;
	struct vc_key k;
	struct vc_slot *s;
	const uint8_t *enc;
	uint8_t dk[33];
	MDB_val key, val;
	uint64_t h;
	int r = 0;

	memset(e, 0, sizeof(*e));
	if ((enc = vc_encode(&k, NULL, action, sha)) == NULL)
		return 0;
	h = vc_hash(vc, enc, k.len);
	if ((s = vc_mem_find(vc, &vc->bysha, enc, k.len, h)) != NULL &&
	    !s->nomsg) {
		r = vc_entry_copy(e, &s->e) == 0;
		vc_key_free(&k);
		return r;
	}
	if ((q = vc_pend_find(vc, enc, k.len, 0)) != NULL) {
		*e = q->e;
		vc_key_free(&k);
		return 1;
	}
	if (vc->env == NULL || vc_dbkey(enc, k.len, dk, &key) == -1 ||
	    vc_rtxn(vc) == -1) {
		vc_key_free(&k);
		return 0;
	}
	if (vc_mdb_get(vc, vc->dbsha, &key, &val)) {
		r = vc_sharec_parse(val.mv_data, val.mv_size, sha, e, 1);
		if (r == 0)
			log_warnx("verdict cache: bad record, ignored");
		r = r == 1;
	}
	mdb_txn_reset(vc->rtxn);
	if (r)
		vc_mem_sha(vc, enc, k.len, h, e);
	vc_key_free(&k);
	return r;
}

int
vcache_get_sha(struct vcache *vc, const char *action, const uint8_t sha[32],
    struct vc_entry *e)
{
	return vc_get_sha(vc, action, sha, e);
}

int
vcache_get_msg(struct vcache *vc, const struct vc_msgkey *m, struct vc_entry *e)
{
	const struct vc_pend *q;
	struct vc_key k;
	struct vc_slot *s;
	const uint8_t *enc, *p;
	uint8_t dk[33], sha[32];
	MDB_val key, val;
	uint64_t h;
	int found = 0;

	memset(e, 0, sizeof(*e));
	if (vc->env != NULL)
		vc_flush_due(vc);
	if ((enc = vc_encode(&k, m, NULL, NULL)) == NULL)
		return 0;
	h = vc_hash(vc, enc, k.len);
	if ((s = vc_mem_find(vc, &vc->bymsg, enc, k.len, h)) != NULL) {
		memcpy(sha, s->e.sha, 32);
		found = 1;
	} else if ((q = vc_pend_find(vc, enc, k.len, 1)) != NULL) {
		memcpy(sha, q->e.sha, 32);
		found = 1;
	} else if (vc->env != NULL && vc_dbkey(enc, k.len, dk, &key) == 0 &&
	           vc_rtxn(vc) == 0) {
		if (vc_mdb_get(vc, vc->dbmsg, &key, &val)) {
			p = val.mv_data;
			if (val.mv_size == VC_MSGREC_LEN &&
			    p[0] == VC_VERSION && p[1] == 0) {
				memcpy(sha, p + 2, 32);
				found = 1;
			} else
				log_warnx("verdict cache: bad record, ignored");
		}
		mdb_txn_reset(vc->rtxn);
		if (found &&
		    (s = vc_mem_slot(vc, &vc->bymsg, enc, k.len, h)) != NULL)
			memcpy(s->e.sha, sha, 32);
	}
	vc_key_free(&k);
	if (!found)
		return 0;
	return vc_get_sha(vc, m->action, sha, e);
}

/* In a write transaction: store e for its hash unless a CHANGED verdict
 * is there already.  0 or an LMDB error. */
static int
vc_mdb_put_sha(struct vcache *vc, MDB_txn *txn, MDB_val *key,
    const struct vc_entry *e, int *kept)
{
	struct vc_entry old;
	MDB_val val;
	uint8_t *rec;
	size_t len;
	int rc;

	*kept = 0;
	rc = mdb_get(txn, vc->dbsha, key, &val);
	if (rc == 0 &&
	    vc_sharec_parse(val.mv_data, val.mv_size, e->sha, &old, 0) == 1 &&
	    old.cls == VC_CHANGED) {
		*kept = 1;
		return 0;
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	if ((rec = vc_sharec(e, &len)) == NULL)
		return ENOMEM;
	val.mv_data = rec;
	val.mv_size = len;
	rc = mdb_put(txn, vc->dbsha, key, &val, 0);
	free(rec);
	return rc;
}

/* In a write transaction: the verdict of a hash and, with menc, the
 * message key -> hash.  0 or an LMDB error. */
static int
vc_txn_put(struct vcache *vc, MDB_txn *txn, const struct vc_pend *p, int *kept)
{
	MDB_val mk, sk, val;
	uint8_t mdk[33], sdk[33], rec[VC_MSGREC_LEN];
	int rc;

	if (vc_dbkey(p->senc, p->slen, sdk, &sk) == -1 ||
	    (p->menc != NULL && vc_dbkey(p->menc, p->mlen, mdk, &mk) == -1))
		return ENOMEM;
	if (!p->keyonly &&
	    ((rc = vc_mdb_put_sha(vc, txn, &sk, &p->e, kept)) != 0 ||
	        p->menc == NULL))
		return rc;
	rec[0] = VC_VERSION;
	rec[1] = 0;
	memcpy(rec + 2, p->e.sha, 32);
	val.mv_data = rec;
	val.mv_size = sizeof(rec);
	return mdb_put(txn, vc->dbmsg, &mk, &val, 0);
}

static void
vc_pend_free(struct vc_pend *p)
{
	free(p->menc);
	free(p->senc);
	p->menc = p->senc = NULL;
}

static time_t
vc_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* One transaction: the pending CLEAN verdicts, then p (if not NULL);
 * *kept: p's hash had a CHANGED verdict, which stays. */
static int
vc_commit(struct vcache *vc, const struct vc_pend *p, int *kept)
{
	MDB_txn *txn = NULL;
	size_t i;
	int rc, k;

	rc = mdb_txn_begin(vc->env, NULL, 0, &txn);
	if (rc != 0 && vc_resized(vc, rc))
		rc = mdb_txn_begin(vc->env, NULL, 0, &txn);
	if (rc != 0)
		return rc;
	for (i = 0; rc == 0 && i < vc->npend; i++)
		rc = vc_txn_put(vc, txn, &vc->pend[i], &k);
	if (rc == 0 && p != NULL)
		rc = vc_txn_put(vc, txn, p, kept);
	if (rc == 0)
		return mdb_txn_commit(txn);
	mdb_txn_abort(txn);
	return rc;
}

static void
vc_flush(struct vcache *vc, const struct vc_pend *p, int *kept)
{
	size_t i;
	int rc;

	if (vc->npend == 0 && p == NULL)
		return;
	rc = vc_commit(vc, p, kept);
	/* No room for p: the pending ones may still fit. */
	if (rc == MDB_MAP_FULL && p != NULL && vc->npend > 0)
		vc_commit(vc, NULL, NULL);
	if (rc != 0)
		vc_mdb_err(vc, "write", rc);
	for (i = 0; i < vc->npend; i++)
		vc_pend_free(&vc->pend[i]);
	vc->npend = 0;
}

/* A pending verdict by its encoded message key (bymsg) or hash key; the
 * newest if there are several. */
static const struct vc_pend *
vc_pend_find(const struct vcache *vc, const uint8_t *enc, size_t len, int bymsg)
{
	const struct vc_pend *p;
	size_t i;

	for (i = vc->npend; i-- > 0;) {
		p = &vc->pend[i];
		if (bymsg ? p->menc != NULL && p->mlen == len &&
		                memcmp(p->menc, enc, len) == 0
		          : !p->keyonly && p->slen == len &&
		                memcmp(p->senc, enc, len) == 0)
			return p;
	}
	return NULL;
}

/* Pending verdicts older than VC_BATCH_SECS go now. */
static void
vc_flush_due(struct vcache *vc)
{
	if (vc->npend > 0 && vc_now() - vc->pend_since >= VC_BATCH_SECS)
		vc_flush(vc, NULL, NULL);
}

/* A CHANGED verdict stored for the hash (read transaction). */
static int
vc_mdb_changed(
    struct vcache *vc, const uint8_t *senc, size_t slen, const uint8_t sha[32])
{
	struct vc_entry old;
	MDB_val key, val;
	uint8_t dk[33];
	int r = 0;

	if (vc_dbkey(senc, slen, dk, &key) == -1 || vc_rtxn(vc) == -1)
		return 0;
	if (vc_mdb_get(vc, vc->dbsha, &key, &val))
		r = vc_sharec_parse(val.mv_data, val.mv_size, sha, &old, 0) ==
		        1 &&
		    old.cls == VC_CHANGED;
	mdb_txn_reset(vc->rtxn);
	return r;
}

static uint8_t *
vc_dup(const uint8_t *p, size_t n)
{
	uint8_t *d;

	if ((d = malloc(n)) != NULL)
		memcpy(d, p, n);
	return d;
}

/* Store in LMDB: CLEAN verdicts batched, CHANGED ones (with the batch)
 * at once. */
static void
vc_mdb_put(struct vcache *vc, const uint8_t *menc, size_t mlen,
    const uint8_t *senc, size_t slen, const struct vc_entry *e, int *kept)
{
	struct vc_pend p, *q;

	memset(&p, 0, sizeof(p));
	p.menc = (uint8_t *)menc;
	p.mlen = mlen;
	p.senc = (uint8_t *)senc;
	p.slen = slen;
	p.e = *e;
	if (e->cls == VC_CHANGED) {
		vc_flush(vc, &p, kept);
		return;
	}
	/* A CHANGED verdict stays (the commit checks again); the message
	 * key -> hash is written all the same. */
	*kept = vc_mdb_changed(vc, senc, slen, e->sha);
	if (*kept && menc == NULL)
		return;
	q = &vc->pend[vc->npend];
	q->keyonly = *kept;
	q->e = *e;
	q->e.msg = NULL;
	q->e.msglen = 0;
	q->mlen = mlen;
	q->slen = slen;
	if ((q->senc = vc_dup(senc, slen)) == NULL ||
	    (menc != NULL && (q->menc = vc_dup(menc, mlen)) == NULL)) {
		vc_pend_free(q);
		return;
	}
	if (vc->npend++ == 0)
		vc->pend_since = vc_now();
	if (vc->npend == VC_BATCH)
		vc_flush(vc, NULL, NULL);
	else
		vc_flush_due(vc);
}

void
vcache_put(
    struct vcache *vc, const struct vc_msgkey *m, const struct vc_entry *e)
{
	struct vc_key mk, sk;
	struct vc_slot *ms, *ss;
	const uint8_t *menc = NULL, *senc;
	uint64_t mh = 0, sh;
	int kept = 0;

	if (e->cls != VC_CLEAN && e->cls != VC_CHANGED)
		return;
	mk.big = NULL;
	mk.len = 0;
	if (m == NULL ||
	    (senc = vc_encode(&sk, NULL, m->action, e->sha)) == NULL)
		return;
	/* No user or mailbox: the verdict of the hash only. */
	if (m->user != NULL && m->mailbox != NULL &&
	    (menc = vc_encode(&mk, m, NULL, NULL)) == NULL) {
		vc_key_free(&sk);
		return;
	}
	sh = vc_hash(vc, senc, sk.len);
	if (menc != NULL)
		mh = vc_hash(vc, menc, mk.len);
	ss = vc_mem_find(vc, &vc->bysha, senc, sk.len, sh);
	ms =
	    menc != NULL ? vc_mem_find(vc, &vc->bymsg, menc, mk.len, mh) : NULL;
	/* Nothing new: the same verdict (or a CHANGED one, which stays)
	 * and the same hash for the message. */
	if (ss != NULL &&
	    (ss->e.cls == VC_CHANGED ||
	        (ss->e.cls == e->cls && ss->e.stamp == e->stamp)) &&
	    (menc == NULL ||
	        (ms != NULL && memcmp(ms->e.sha, e->sha, 32) == 0)))
		goto done;
	if (vc->env != NULL)
		vc_mdb_put(vc, menc, mk.len, senc, sk.len, e, &kept);
	else
		kept = ss != NULL && ss->e.cls == VC_CHANGED;
	if (!kept)
		vc_mem_sha(vc, senc, sk.len, sh, e);
	if (menc != NULL &&
	    (ms = vc_mem_slot(vc, &vc->bymsg, menc, mk.len, mh)) != NULL) {
		ms->e.cls = e->cls;
		memcpy(ms->e.sha, e->sha, 32);
	}
done:
	vc_key_free(&sk);
	vc_key_free(&mk);
}

/*
 * Open and close.
 */

static int
vc_table_init(struct vc_table *t, unsigned memmax)
{
	t->nsets = (memmax + VC_WAYS - 1) / VC_WAYS;
	if (t->nsets == 0)
		return 0;
	if ((t->slot = calloc(t->nsets * VC_WAYS, sizeof(*t->slot))) == NULL)
		return -1;
	return 0;
}

static int
vc_env_open(struct vcache *vc, const char *dir, uint64_t mapsize)
{
	MDB_txn *txn = NULL;
	int rc, dead;

	if ((rc = mdb_env_create(&vc->env)) != 0)
		goto fail;
	if ((rc = mdb_env_set_maxdbs(vc->env, 2)) != 0 ||
	    (rc = mdb_env_set_mapsize(vc->env, (size_t)mapsize)) != 0 ||
	    (rc = mdb_env_open(vc->env, dir,
	         MDB_NOTLS | MDB_NORDAHEAD | MDB_NOMETASYNC, 0600)) != 0)
		goto fail;
	/* Reader slots of workers that died would pin old pages. */
	mdb_reader_check(vc->env, &dead);
	if ((rc = mdb_txn_begin(vc->env, NULL, 0, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, "msg", MDB_CREATE, &vc->dbmsg)) != 0 ||
	    (rc = mdb_dbi_open(txn, "sha", MDB_CREATE, &vc->dbsha)) != 0) {
		if (txn != NULL)
			mdb_txn_abort(txn);
		goto fail;
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		goto fail;
	return 0;
fail:
	log_warnx("verdict cache %s: %s; verdicts are kept in memory only", dir,
	    mdb_strerror(rc));
	if (vc->env != NULL)
		mdb_env_close(vc->env);
	vc->env = NULL;
	return -1;
}

struct vcache *
vcache_open(const char *dir, uint64_t mapsize, unsigned memmax)
{
	struct vcache *vc;
	struct timespec ts;

	if ((vc = calloc(1, sizeof(*vc))) == NULL ||
	    vc_table_init(&vc->bymsg, memmax) == -1 ||
	    vc_table_init(&vc->bysha, memmax) == -1)
		fatal("vcache_open");
	clock_gettime(CLOCK_MONOTONIC, &ts);
	vc->seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^
	           (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)vc;
	if (mapsize != 0 && dir != NULL)
		vc_env_open(vc, dir, mapsize);
	return vc;
}

static void
vc_table_free(struct vcache *vc, struct vc_table *t)
{
	size_t i;

	for (i = 0; t->slot != NULL && i < t->nsets * VC_WAYS; i++)
		vc_slot_clear(vc, &t->slot[i]);
	free(t->slot);
	t->slot = NULL;
}

void
vcache_close(struct vcache *vc)
{
	if (vc == NULL)
		return;
	if (vc->env != NULL)
		vc_flush(vc, NULL, NULL);
	if (vc->rtxn != NULL)
		mdb_txn_abort(vc->rtxn);
	if (vc->env != NULL)
		mdb_env_close(vc->env);
	vc_table_free(vc, &vc->bymsg);
	vc_table_free(vc, &vc->bysha);
	free(vc);
}

void
vc_entry_free(struct vc_entry *e)
{
	free(e->msg);
	e->msg = NULL;
	e->msglen = 0;
}

/*
 * Marks: "every message of this mailbox (action, user, mailbox,
 * UIDVALIDITY) with a UID up to upto has a verdict under this judge
 * stamp; these are the CHANGED ones".  Stored in the msg database under
 * the message key with UID 0 (UIDs start at 1), LMDB only:
 *   MARKREC  u8 version, u8 0xff, u32 upto, u64 stamp, u32 n, n x u32
 */
#define VC_MARK_HDR 18

void
vcache_put_mark(struct vcache *vc, const struct vc_msgkey *m, uint32_t upto,
    uint64_t stamp, const uint32_t *changed, size_t n)
{
	struct vc_msgkey k = *m;
	struct vc_key mk;
	const uint8_t *enc;
	uint8_t dk[33], *rec;
	MDB_val key, val;
	MDB_txn *txn;
	size_t i, len;
	int rc;

	if (vc->env == NULL || n > VC_MARK_MAX)
		return;
	k.uid = 0;
	if ((enc = vc_encode(&mk, &k, NULL, NULL)) == NULL)
		return;
	len = VC_MARK_HDR + 4 * n;
	if ((rec = malloc(len)) == NULL || vc_dbkey(enc, mk.len, dk, &key)) {
		free(rec);
		vc_key_free(&mk);
		return;
	}
	rec[0] = VC_VERSION;
	rec[1] = 0xff;
	put32(rec + 2, upto);
	put64(rec + 6, stamp);
	put32(rec + 14, (uint32_t)n);
	for (i = 0; i < n; i++)
		put32(rec + VC_MARK_HDR + 4 * i, changed[i]);
	val.mv_data = rec;
	val.mv_size = len;
	/* The verdicts it speaks for go first. */
	vc_flush(vc, NULL, NULL);
	if ((rc = mdb_txn_begin(vc->env, NULL, 0, &txn)) == 0) {
		if ((rc = mdb_put(txn, vc->dbmsg, &key, &val, 0)) == 0)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
	}
	if (rc != 0)
		vc_mdb_err(vc, "write", rc);
	free(rec);
	vc_key_free(&mk);
}

int
vcache_get_mark(struct vcache *vc, const struct vc_msgkey *m, uint32_t *upto,
    uint64_t *stamp, uint32_t **changed, size_t *n)
{
	struct vc_msgkey k = *m;
	struct vc_key mk;
	const uint8_t *enc, *p;
	uint8_t dk[33];
	MDB_val key, val;
	size_t i, cnt;
	int r = 0;

	*changed = NULL;
	*n = 0;
	if (vc->env == NULL)
		return 0;
	k.uid = 0;
	if ((enc = vc_encode(&mk, &k, NULL, NULL)) == NULL)
		return 0;
	if (vc_dbkey(enc, mk.len, dk, &key) == 0 && vc_rtxn(vc) == 0) {
		if (vc_mdb_get(vc, vc->dbmsg, &key, &val) &&
		    val.mv_size >= VC_MARK_HDR) {
			p = val.mv_data;
			cnt = get32(p + 14);
			if (p[0] == VC_VERSION && p[1] == 0xff &&
			    cnt <= VC_MARK_MAX &&
			    val.mv_size == VC_MARK_HDR + 4 * cnt &&
			    (*changed = calloc(cnt + 1, sizeof(**changed))) !=
			        NULL) {
				*upto = get32(p + 2);
				*stamp = get64(p + 6);
				for (i = 0; i < cnt; i++)
					(*changed)[i] =
					    get32(p + VC_MARK_HDR + 4 * i);
				*n = cnt;
				r = 1;
			}
		}
		mdb_txn_reset(vc->rtxn);
	}
	vc_key_free(&mk);
	return r;
}
