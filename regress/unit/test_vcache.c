/*
 * The verdict cache (common/vcache.c): both kinds of keys, the
 * never-replace rule, memory only, persistence across a reopen, two
 * processes sharing the environment, a full map, bad records, odd names.
 * VCACHE_BENCH=1 also prints the cost of puts and gets.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <lmdb.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "vcache.h"
#include "test.h"

#define MAP (16 * 1024 * 1024)

static char dir[64];

static void
mkcache(void)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/lock.mdb", dir);
	unlink(p);
}

static void
sha_of(uint8_t sha[32], unsigned n)
{
	unsigned i;

	for (i = 0; i < 32; i++)
		sha[i] = (uint8_t)(n * 31 + i * 7 + (n >> 8));
}

static void
clean(struct vc_entry *e, unsigned n)
{
	memset(e, 0, sizeof(*e));
	e->cls = VC_CLEAN;
	sha_of(e->sha, n);
	e->orig_size = 1000 + n;
}

static void
changed(struct vc_entry *e, unsigned n, size_t len, int fill)
{
	memset(e, 0, sizeof(*e));
	e->cls = VC_CHANGED;
	sha_of(e->sha, n);
	e->orig_size = 2000 + n;
	e->action = 1;
	snprintf(e->reason, sizeof(e->reason), "virus %u", n);
	e->msg = malloc(len + 1);
	memset(e->msg, fill, len);
	e->msglen = len;
}

static struct vc_msgkey
key(const char *user, const char *mbox, uint32_t uv, uint32_t uid)
{
	struct vc_msgkey k = {"act", user, mbox, uv, uid};

	return k;
}

/* CLEAN verdicts for UIDs from..to-1 of user's INBOX, hashes base+UID. */
static void
put_clean(struct vcache *vc, const char *user, uint32_t uv, unsigned from,
    unsigned to, unsigned base)
{
	struct vc_msgkey k;
	struct vc_entry e;
	unsigned i;

	for (i = from; i < to; i++) {
		k = key(user, "INBOX", uv, i);
		clean(&e, base + i);
		vcache_put(vc, &k, &e);
	}
}

/* How many of those UIDs have a verdict. */
static unsigned
count_hits(struct vcache *vc, const char *user, uint32_t uv, unsigned from,
    unsigned to)
{
	struct vc_msgkey k;
	struct vc_entry g;
	unsigned i, hits = 0;

	for (i = from; i < to; i++) {
		k = key(user, "INBOX", uv, i);
		hits += vcache_get_msg(vc, &k, &g) == 1;
		vc_entry_free(&g);
	}
	return hits;
}

static int
same_changed(const struct vc_entry *g, size_t len, int fill, unsigned n)
{
	char r[32];
	size_t i;

	snprintf(r, sizeof(r), "virus %u", n);
	if (g->cls != VC_CHANGED || g->msglen != len || g->msg == NULL ||
	    g->action != 1 || strcmp(g->reason, r) != 0 ||
	    g->orig_size != 2000 + n)
		return 0;
	for (i = 0; i < len; i++)
		if (g->msg[i] != (uint8_t)fill)
			return 0;
	return 1;
}

/* Both kinds of keys, the never-replace rule; persist says whether the
 * cache has its LMDB layer. */
static void
test_basic(struct vcache *vc)
{
	struct vc_msgkey k = key("alice", "INBOX", 7, 1);
	struct vc_msgkey k2 = key("alice", "INBOX", 7, 2);
	struct vc_entry e, g;
	uint8_t sha[32];

	clean(&e, 1);
	CHECK(vcache_get_msg(vc, &k, &g) == 0);
	CHECK(vcache_get_sha(vc, "act", e.sha, &g) == 0);
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && g.cls == VC_CLEAN &&
	      memcmp(g.sha, e.sha, 32) == 0 && g.orig_size == 1001 &&
	      g.msg == NULL);
	vc_entry_free(&g);
	CHECK(vcache_get_sha(vc, "act", e.sha, &g) == 1 && g.cls == VC_CLEAN);
	vc_entry_free(&g);
	/* Scoped by action. */
	CHECK(vcache_get_sha(vc, "other", e.sha, &g) == 0);
	k.action = "other";
	CHECK(vcache_get_msg(vc, &k, &g) == 0);
	k.action = "act";
	/* By UIDVALIDITY and UID. */
	k.uidvalidity = 8;
	CHECK(vcache_get_msg(vc, &k, &g) == 0);
	k.uidvalidity = 7;

	/* CLEAN -> CHANGED is allowed; CHANGED is never replaced. */
	changed(&e, 1, 100, 'x');
	vcache_put(vc, &k, &e);
	vc_entry_free(&e);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && same_changed(&g, 100, 'x', 1));
	vc_entry_free(&g);
	changed(&e, 1, 200, 'y');
	vcache_put(vc, &k2, &e);
	vc_entry_free(&e);
	CHECK(
	    vcache_get_msg(vc, &k2, &g) == 1 && same_changed(&g, 100, 'x', 1));
	vc_entry_free(&g);
	clean(&e, 1);
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_sha(vc, "act", e.sha, &g) == 1 &&
	      same_changed(&g, 100, 'x', 1));
	vc_entry_free(&g);

	/* key -> hash may be overwritten. */
	clean(&e, 2);
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && g.cls == VC_CLEAN &&
	      memcmp(g.sha, e.sha, 32) == 0);
	vc_entry_free(&g);

	/* A hash only (no user, mailbox); scan errors are not stored. */
	clean(&e, 3);
	k.user = NULL;
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_sha(vc, "act", e.sha, &g) == 1);
	vc_entry_free(&g);
	k.user = "alice";
	e.cls = 0;
	sha_of(e.sha, 4);
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_sha(vc, "act", e.sha, &g) == 0);
	vcache_put(vc, NULL, &e);
	sha_of(sha, 5);
	CHECK(vcache_get_sha(vc, "act", sha, &g) == 0);
}

/* Large CHANGED messages (not kept in memory with LMDB behind). */
static void
test_large(struct vcache *vc)
{
	struct vc_msgkey k = key("bob", "Archive", 1, 99);
	struct vc_entry e, g;

	changed(&e, 50, 1024 * 1024, 'z');
	vcache_put(vc, &k, &e);
	vc_entry_free(&e);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 &&
	      same_changed(&g, 1024 * 1024, 'z', 50));
	vc_entry_free(&g);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 &&
	      same_changed(&g, 1024 * 1024, 'z', 50));
	vc_entry_free(&g);
	/* A CLEAN verdict for that hash under another key: the key is
	 * remembered, the CHANGED verdict stays. */
	clean(&e, 50);
	k.uid = 100;
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 &&
	      same_changed(&g, 1024 * 1024, 'z', 50));
	vc_entry_free(&g);
}

/* Names that only differ in where a field ends, and every byte but NUL. */
static void
test_names(struct vcache *vc)
{
	struct vc_msgkey a = key("a", "bc", 1, 1), b = key("ab", "c", 1, 1);
	struct vc_entry e, g;
	char odd[256], lng[3000];
	uint8_t sha[32];
	int i;

	clean(&e, 10);
	vcache_put(vc, &a, &e);
	CHECK(vcache_get_msg(vc, &b, &g) == 0);
	clean(&e, 11);
	vcache_put(vc, &b, &e);
	sha_of(sha, 10);
	CHECK(vcache_get_msg(vc, &a, &g) == 1 && memcmp(g.sha, sha, 32) == 0);
	vc_entry_free(&g);
	CHECK(vcache_get_msg(vc, &b, &g) == 1 && memcmp(g.sha, e.sha, 32) == 0);
	vc_entry_free(&g);
	/* Action names are length-prefixed too. */
	a.action = "actx";
	a.user = "";
	b.action = "act";
	b.user = "x";
	b.mailbox = "bc";
	CHECK(vcache_get_msg(vc, &a, &g) == 0);

	for (i = 1; i < 256; i++)
		odd[i - 1] = (char)i;
	odd[255] = '\0';
	a = key(odd, odd, 0xffffffff, 0xfffffffe);
	clean(&e, 12);
	vcache_put(vc, &a, &e);
	CHECK(vcache_get_msg(vc, &a, &g) == 1 && memcmp(g.sha, e.sha, 32) == 0);
	vc_entry_free(&g);
	odd[100] = 'q';
	CHECK(vcache_get_msg(vc, &a, &g) == 0);
	/* Longer than an LMDB key. */
	memset(lng, 'm', sizeof(lng) - 1);
	lng[sizeof(lng) - 1] = '\0';
	a = key("u", lng, 5, 5);
	clean(&e, 13);
	vcache_put(vc, &a, &e);
	CHECK(vcache_get_msg(vc, &a, &g) == 1 && memcmp(g.sha, e.sha, 32) == 0);
	vc_entry_free(&g);
	lng[2000] = 'n';
	CHECK(vcache_get_msg(vc, &a, &g) == 0);
}

static void
test_memory_only(void)
{
	struct vcache *vc = vcache_open(NULL, 0, 64);
	struct vc_msgkey k;
	struct vc_entry e, g;
	unsigned hits;

	test_basic(vc);
	test_large(vc);
	test_names(vc);
	/* Bounded: older entries go. */
	put_clean(vc, "many", 1, 0, 1000, 1000);
	hits = count_hits(vc, "many", 1, 0, 1000);
	CHECK(hits > 0 && hits <= 64);
	vcache_close(vc);
	/* memmax 0: nothing kept, nothing breaks. */
	vc = vcache_open(NULL, 0, 0);
	clean(&e, 1);
	k = key("a", "b", 1, 1);
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_msg(vc, &k, &g) == 0);
	vcache_close(vc);
}

static void
test_persist(void)
{
	struct vcache *vc;
	struct vc_msgkey k = key("alice", "INBOX", 7, 1);
	struct vc_entry g;
	uint8_t sha[32];

	mkcache();
	vc = vcache_open(dir, MAP, 64);
	test_basic(vc);
	test_large(vc);
	test_names(vc);
	vcache_close(vc);
	/* Reopened, memory empty: all from LMDB. */
	vc = vcache_open(dir, MAP, 0);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && g.cls == VC_CLEAN);
	vc_entry_free(&g);
	k.uid = 2;
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && same_changed(&g, 100, 'x', 1));
	vc_entry_free(&g);
	k = key("bob", "Archive", 1, 99);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 &&
	      same_changed(&g, 1024 * 1024, 'z', 50));
	vc_entry_free(&g);
	k.uid = 100;
	CHECK(vcache_get_msg(vc, &k, &g) == 1 &&
	      same_changed(&g, 1024 * 1024, 'z', 50));
	vc_entry_free(&g);
	k = key("a", "bc", 1, 1);
	sha_of(sha, 10);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && memcmp(g.sha, sha, 32) == 0);
	vc_entry_free(&g);
	k = key("ab", "c", 1, 1);
	sha_of(sha, 11);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && memcmp(g.sha, sha, 32) == 0);
	vc_entry_free(&g);
	vcache_close(vc);
}

/* Mailbox marks: round trip, per mailbox, persistent only, bounded. */
static void
test_marks(void)
{
	struct vcache *vc;
	struct vc_msgkey k = key("carol", "INBOX", 9, 5), o;
	uint32_t changed[3] = {2, 7, 40}, upto, *got;
	uint32_t *many;
	uint64_t stamp;
	size_t n;

	mkcache();
	vc = vcache_open(NULL, 0, 64);
	vcache_put_mark(vc, &k, 50, 77, changed, 3);
	CHECK(vcache_get_mark(vc, &k, &upto, &stamp, &got, &n) == 0);
	vcache_close(vc);

	vc = vcache_open(dir, MAP, 64);
	CHECK(vcache_get_mark(vc, &k, &upto, &stamp, &got, &n) == 0);
	vcache_put_mark(vc, &k, 50, 77, changed, 3);
	k.uid = 123; /* the uid of the key does not matter */
	CHECK(vcache_get_mark(vc, &k, &upto, &stamp, &got, &n) == 1);
	CHECK(upto == 50 && stamp == 77 && n == 3 && got[0] == 2 &&
	      got[1] == 7 && got[2] == 40);
	free(got);
	/* Another mailbox, another UIDVALIDITY: none. */
	o = key("carol", "Sent", 9, 1);
	CHECK(vcache_get_mark(vc, &o, &upto, &stamp, &got, &n) == 0);
	o = key("carol", "INBOX", 10, 1);
	CHECK(vcache_get_mark(vc, &o, &upto, &stamp, &got, &n) == 0);
	/* A mark does not read as a message verdict. */
	{
		struct vc_entry g;

		k.uid = 1;
		CHECK(vcache_get_msg(vc, &k, &g) == 0);
	}
	/* Too many changed messages: not written (the old one stays). */
	many = calloc(VC_MARK_MAX + 1, sizeof(*many));
	CHECK(many != NULL);
	vcache_put_mark(vc, &k, 60, 78, many, VC_MARK_MAX + 1);
	CHECK(vcache_get_mark(vc, &k, &upto, &stamp, &got, &n) == 1 &&
	      upto == 50 && stamp == 77);
	free(got);
	free(many);
	/* Replaced, and kept across a reopen. */
	vcache_put_mark(vc, &k, 70, 79, NULL, 0);
	vcache_close(vc);
	vc = vcache_open(dir, MAP, 0);
	CHECK(vcache_get_mark(vc, &k, &upto, &stamp, &got, &n) == 1 &&
	      upto == 70 && stamp == 79 && n == 0);
	free(got);
	vcache_close(vc);
}

/* One process writes, the other reads, each with its own environment. */
static void
test_two_processes(void)
{
	struct vcache *vc;
	struct vc_msgkey k;
	struct vc_entry e, g;
	int p[2], q[2], st, ok = 1;
	unsigned i;
	pid_t pid;
	char c;

	mkcache();
	if (pipe(p) == -1 || pipe(q) == -1)
		exit(1);
	fflush(NULL);
	if ((pid = fork()) == 0) {
		vc = vcache_open(dir, MAP, 16);
		/* Opened before the writer writes: reads see later commits. */
		if (write(q[1], "r", 1) != 1 || read(p[0], &c, 1) != 1)
			_exit(2);
		for (i = 0; i < 100; i++) {
			k = key("shared", "INBOX", 3, i);
			if (vcache_get_msg(vc, &k, &g) != 1 ||
			    (i % 10 == 0 ? !same_changed(&g, 70000, 'c', i)
			                 : g.cls != VC_CLEAN))
				ok = 0;
			vc_entry_free(&g);
		}
		/* The child writes, the parent reads. */
		changed(&e, 500, 10, 'd');
		k = key("shared", "Sent", 3, 1);
		vcache_put(vc, &k, &e);
		vc_entry_free(&e);
		vcache_close(vc);
		_exit(ok ? 0 : 1);
	}
	vc = vcache_open(dir, MAP, 16);
	CHECK(read(q[0], &c, 1) == 1);
	for (i = 0; i < 100; i++) {
		k = key("shared", "INBOX", 3, i);
		if (i % 10 == 0)
			changed(&e, i, 70000, 'c');
		else
			clean(&e, i);
		vcache_put(vc, &k, &e);
		vc_entry_free(&e);
	}
	/* CLEAN verdicts are batched: closing writes them. */
	vcache_close(vc);
	CHECK(write(p[1], "w", 1) == 1);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	      WEXITSTATUS(st) == 0);
	vc = vcache_open(dir, MAP, 16);
	k = key("shared", "Sent", 3, 1);
	CHECK(
	    vcache_get_msg(vc, &k, &g) == 1 && same_changed(&g, 10, 'd', 500));
	vc_entry_free(&g);
	vcache_close(vc);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
}

/* A tiny map: writes are dropped, nothing crashes, what fit stays. */
static void
test_full(void)
{
	struct vcache *vc;
	struct vc_msgkey k;
	struct vc_entry e, g;
	unsigned i;

	mkcache();
	vc = vcache_open(dir, 64 * 1024, 0);
	k = key("full", "INBOX", 1, 0);
	clean(&e, 0);
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_msg(vc, &k, &g) == 1);
	vc_entry_free(&g);
	for (i = 1; i < 50; i++) {
		k = key("full", "INBOX", 1, i);
		changed(&e, 3000 + i, 64 * 1024, 'f');
		vcache_put(vc, &k, &e);
		vc_entry_free(&e);
	}
	put_clean(vc, "full", 2, 1, 2000, 5000);
	CHECK(count_hits(vc, "full", 2, 1, 2000) < 1999);
	k = key("full", "INBOX", 1, 0);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && g.cls == VC_CLEAN);
	vc_entry_free(&g);
	vcache_close(vc);
}

/* Overwrite every record of db with the n bytes at v; how many. */
static int
junk_db(const char *db, const void *v, size_t n)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val mk, mv;
	int count = 0;

	if (mdb_env_create(&env) != 0)
		return -1;
	if (mdb_env_set_maxdbs(env, 2) != 0 ||
	    mdb_env_set_mapsize(env, MAP) != 0 ||
	    mdb_env_open(env, dir, 0, 0600) != 0 ||
	    mdb_txn_begin(env, NULL, 0, &txn) != 0) {
		mdb_env_close(env);
		return -1;
	}
	if (mdb_dbi_open(txn, db, 0, &dbi) == 0 &&
	    mdb_cursor_open(txn, dbi, &cur) == 0) {
		while (mdb_cursor_get(cur, &mk, &mv, MDB_NEXT) == 0) {
			mv.mv_data = (void *)v;
			mv.mv_size = n;
			if (mdb_cursor_put(cur, &mk, &mv, MDB_CURRENT) == 0)
				count++;
		}
		mdb_cursor_close(cur);
	}
	if (mdb_txn_commit(txn) != 0)
		count = -1;
	mdb_env_close(env);
	return count;
}

/* Records written behind the cache's back: garbage is a miss, and a put
 * over it repairs it. */
static void
test_garbage(void)
{
	struct vcache *vc;
	struct vc_msgkey k = key("g", "INBOX", 1, 1);
	struct vc_entry e, g;
	uint8_t junk[64];

	mkcache();
	vc = vcache_open(dir, MAP, 0);
	clean(&e, 77);
	vcache_put(vc, &k, &e);
	vcache_close(vc);

	memset(junk, 0xa5, sizeof(junk));
	CHECK(junk_db("sha", junk, 60) == 1);
	vc = vcache_open(dir, MAP, 0);
	CHECK(vcache_get_msg(vc, &k, &g) == 0);
	CHECK(vcache_get_sha(vc, "act", e.sha, &g) == 0);
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_msg(vc, &k, &g) == 1 && g.cls == VC_CLEAN);
	vc_entry_free(&g);
	vcache_close(vc);

	/* Version, class and hash right, a message length past the end. */
	memset(junk, 0, sizeof(junk));
	junk[0] = 1;
	junk[1] = VC_CHANGED;
	memcpy(junk + 14, e.sha, 32);
	memset(junk + 46, 0xff, 8);
	CHECK(junk_db("sha", junk, 60) == 1);
	vc = vcache_open(dir, MAP, 0);
	CHECK(vcache_get_sha(vc, "act", e.sha, &g) == 0);
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_sha(vc, "act", e.sha, &g) == 1 && g.cls == VC_CLEAN);
	vc_entry_free(&g);
	vcache_close(vc);

	CHECK(junk_db("msg", junk, 3) == 1);
	vc = vcache_open(dir, MAP, 0);
	CHECK(vcache_get_msg(vc, &k, &g) == 0);
	CHECK(vcache_get_sha(vc, "act", e.sha, &g) == 1);
	vc_entry_free(&g);
	vcache_close(vc);
}

/* An environment that cannot be opened: memory only, still working. */
static void
test_open_fails(void)
{
	struct vcache *vc;
	struct vc_msgkey k = key("a", "b", 1, 1);
	struct vc_entry e, g;

	vc = vcache_open("/nonexistent/imapgw-verdicts", MAP, 16);
	CHECK(vc != NULL);
	clean(&e, 1);
	vcache_put(vc, &k, &e);
	CHECK(vcache_get_msg(vc, &k, &g) == 1);
	vc_entry_free(&g);
	vcache_close(vc);
}

static double
usec(const struct timespec *a, const struct timespec *b, unsigned n)
{
	return ((b->tv_sec - a->tv_sec) * 1e9 + (b->tv_nsec - a->tv_nsec)) /
	       1e3 / n;
}

static void
bench(void)
{
	struct vcache *vc;
	struct vc_msgkey k;
	struct vc_entry e;
	struct timespec t0, t1, t2, t3, t4;
	unsigned i, n = 10000, nc = 200, hits;

	mkcache();
	vc = vcache_open(dir, 256 * 1024 * 1024, 4096);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	put_clean(vc, "bench", 1, 0, n, 100000);
	vcache_close(vc); /* the last batch */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	vc = vcache_open(dir, 256 * 1024 * 1024, 16384);
	for (i = 0; i < nc; i++) {
		k = key("bench", "Sent", 1, i);
		changed(&e, 200000 + i, 10000, 'b');
		vcache_put(vc, &k, &e);
		vc_entry_free(&e);
	}
	clock_gettime(CLOCK_MONOTONIC, &t2);
	hits = count_hits(vc, "bench", 1, 0, n);
	clock_gettime(CLOCK_MONOTONIC, &t3);
	hits += count_hits(vc, "bench", 1, 0, n);
	clock_gettime(CLOCK_MONOTONIC, &t4);
	printf("vcache bench: %u CLEAN puts %.2f us each, %u CHANGED puts "
	       "(10000 bytes) %.2f us each; %u CLEAN gets from LMDB %.2f us, "
	       "from memory %.2f us (%u hits)\n",
	    n, usec(&t0, &t1, n), nc, usec(&t1, &t2, nc), n, usec(&t2, &t3, n),
	    usec(&t3, &t4, n), hits);
	vcache_close(vc);
}

int
main(void)
{
	char p[128];

	log_init(LOGT_STDERR, LOGF_TEXT, LOG_ERR, "test_vcache");
	snprintf(dir, sizeof(dir), "/tmp/imapgw-vcache.XXXXXX");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_memory_only();
	test_persist();
	test_two_processes();
	test_full();
	test_garbage();
	test_open_fails();
	test_marks();
	if (getenv("VCACHE_BENCH") != NULL)
		bench();
	mkcache();
	snprintf(p, sizeof(p), "%s", dir);
	rmdir(p);
	return test_done("test_vcache");
}
