/*
 * common/lock.c: sealing and opening locked attachments, and the key
 * file.  Round trips (empty, binary, 5 MB), determinism, a wrong key,
 * every flipped byte and every truncation of a blob, the key file's
 * checks, and eight processes that create the key at once.
 *
 * With IMAPGW_LOCK_SAMPLE_DIR set, it only writes a sample into that
 * directory for regress/integration/test_unlock.py, and exits:
 *	lock.key       a key created by lock_key_load
 *	sample.locked  a blob sealed with it
 *	sample.orig    the original bytes
 *	sample.meta    the original file name and content type, one a line
 */
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "lock.h"
#include "test.h"

#define AUTH_FAILED "authentication failed (wrong key or altered file)"
#define NOT_LOCKED "not an imapgw locked file"
#define SAMPLE_NAME "Quarterly report.pdf"
#define SAMPLE_TYPE "application/pdf"
#define SAMPLE_LEN 100000

static uint8_t key1[LOCK_KEY_LEN], key2[LOCK_KEY_LEN];

static void
die(const char *what)
{
	perror(what);
	exit(2);
}

/* Deterministic bytes (xorshift64), NULs and line ends included. */
static void
fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed ? seed : 88172645463325252ULL;
	size_t i;

	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd == -1 || write(fd, data, len) != (ssize_t)len || close(fd))
		die(path);
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

static void
rm_rf(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
mk_tmpdir(char *out, size_t outlen)
{
	snprintf(out, outlen, "/tmp/test_lock.XXXXXX");
	if (mkdtemp(out) == NULL)
		die("mkdtemp");
}

/* Number of entries of dir, besides . and .. */
static int
dir_entries(const char *dir)
{
	struct dirent *de;
	DIR *d;
	int n = 0;

	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Seal then open; 1 if everything comes back. */
static int
round_trip(const char *name, const char *type, const uint8_t *data, size_t len)
{
	struct buf blob, out;
	char fn[LOCK_MAX_NAME + 1], ct[LOCK_MAX_NAME + 1], err[256];
	size_t fl = name ? strlen(name) : 0, cl = type ? strlen(type) : 0;
	int ok;

	buf_init(&blob, 0);
	buf_init(&out, 0);
	ok = lock_seal(key1, name, type, data, len, &blob) == 0 &&
	     buf_used(&blob) == LOCK_MIN_BLOB + fl + cl + len &&
	     memcmp(buf_head(&blob), LOCK_MAGIC, LOCK_MAGIC_LEN) == 0 &&
	     lock_open(key1, buf_head(&blob), buf_used(&blob), &out, fn,
	         sizeof(fn), ct, sizeof(ct), err, sizeof(err)) == 0 &&
	     buf_used(&out) == len &&
	     (len == 0 || memcmp(buf_head(&out), data, len) == 0) &&
	     strcmp(fn, name ? name : "") == 0 &&
	     strcmp(ct, type ? type : "") == 0;
	if (!ok)
		fprintf(stderr, "round trip of %zu bytes: %s\n", len, err);
	buf_free(&blob);
	buf_free(&out);
	return ok;
}

static void
test_round_trips(void)
{
	static const uint8_t bin[] = {
	    0, 1, 0, 0, 0xff, '\r', '\n', 0, 0x80, '.', '\r', '\n', 0};
	char longname[LOCK_MAX_NAME + 1];
	uint8_t *big;
	size_t bigl = 5 * 1024 * 1024;
	struct buf blob, out;
	char fn[64], ct[64], err[256];
	double t0, t1, t2;

	CHECK(round_trip("", "", (const uint8_t *)"", 0));
	CHECK(round_trip(NULL, NULL, NULL, 0));
	CHECK(
	    round_trip("a.bin", "application/octet-stream", bin, sizeof(bin)));
	CHECK(round_trip("Bericht M\xc3\xa4rz.docx",
	    "application/vnd.openxmlformats-officedocument."
	    "wordprocessingml.document",
	    (const uint8_t *)"x", 1));
	memset(longname, 'n', LOCK_MAX_NAME);
	longname[LOCK_MAX_NAME] = '\0';
	CHECK(round_trip(longname, longname, bin, sizeof(bin)));

	if ((big = malloc(bigl)) == NULL)
		die("malloc");
	fill(big, bigl, 5);
	buf_init(&blob, 0);
	buf_init(&out, 0);
	t0 = now();
	CHECK(lock_seal(key1, "big.iso", "application/x-iso9660-image", big,
	          bigl, &blob) == 0);
	t1 = now();
	CHECK(lock_open(key1, buf_head(&blob), buf_used(&blob), &out, fn,
	          sizeof(fn), ct, sizeof(ct), err, sizeof(err)) == 0);
	t2 = now();
	CHECK(buf_used(&out) == bigl && memcmp(buf_head(&out), big, bigl) == 0);
	CHECK(strcmp(fn, "big.iso") == 0);
	printf("5 MB: sealed in %.3f s, opened in %.3f s\n", t1 - t0, t2 - t1);
	buf_free(&blob);
	buf_free(&out);
	free(big);

	/* Both append to what the buffers hold. */
	buf_init(&blob, 0);
	buf_init(&out, 0);
	buf_add(&blob, "prefix", 6);
	buf_add(&out, "old", 3);
	CHECK(lock_seal(key1, "f", "t/t", bin, sizeof(bin), &blob) == 0);
	CHECK(buf_used(&blob) == 6 + LOCK_MIN_BLOB + 1 + 3 + sizeof(bin));
	CHECK(memcmp(buf_head(&blob), "prefix", 6) == 0);
	CHECK(lock_open(key1, buf_head(&blob) + 6, buf_used(&blob) - 6, &out,
	          NULL, 0, NULL, 0, err, sizeof(err)) == 0);
	CHECK(buf_used(&out) == 3 + sizeof(bin) &&
	      memcmp(buf_head(&out), "old", 3) == 0 &&
	      memcmp(buf_head(&out) + 3, bin, sizeof(bin)) == 0);
	buf_free(&blob);
	buf_free(&out);

	/* Names longer than the format allows are refused, out untouched. */
	{
		char *toolong = malloc(LOCK_MAX_NAME + 2);

		if (toolong == NULL)
			die("malloc");
		memset(toolong, 'x', LOCK_MAX_NAME + 1);
		toolong[LOCK_MAX_NAME + 1] = '\0';
		buf_init(&blob, 0);
		CHECK(lock_seal(key1, toolong, "t/t", bin, 1, &blob) == -1);
		CHECK(lock_seal(key1, "f", toolong, bin, 1, &blob) == -1);
		CHECK(buf_used(&blob) == 0);
		buf_free(&blob);
		free(toolong);
	}
	/* A data pointer of NULL with a length is an error, not a crash. */
	buf_init(&blob, 0);
	CHECK(lock_seal(key1, "f", "t/t", NULL, 10, &blob) == -1);
	CHECK(buf_used(&blob) == 0);
	/* A capped output buffer: refused, nothing written. */
	buf_free(&blob);
	buf_init(&blob, 20);
	CHECK(lock_seal(key1, "f", "t/t", bin, sizeof(bin), &blob) == -1);
	CHECK(buf_used(&blob) == 0);
	buf_free(&blob);
}

static void
test_open_limits(void)
{
	struct buf blob, out;
	char fn[8], ct[64], err[256];

	buf_init(&blob, 0);
	CHECK(lock_seal(key1, "a-long-name.txt", "text/plain", "hello", 5,
	          &blob) == 0);
	/* The name does not fit the caller's buffer. */
	buf_init(&out, 0);
	CHECK(lock_open(key1, buf_head(&blob), buf_used(&blob), &out, fn,
	          sizeof(fn), ct, sizeof(ct), err, sizeof(err)) == -1);
	CHECK(strstr(err, "file name too long") != NULL);
	CHECK(buf_used(&out) == 0);
	/* The data does not fit a capped buffer. */
	buf_free(&out);
	buf_init(&out, 4);
	CHECK(lock_open(key1, buf_head(&blob), buf_used(&blob), &out, NULL, 0,
	          NULL, 0, err, sizeof(err)) == -1);
	CHECK(buf_used(&out) == 0);
	buf_free(&out);
	buf_free(&blob);
}

static void
test_determinism(void)
{
	struct buf a, b, c, d, e;
	uint8_t data[1000];

	fill(data, sizeof(data), 7);
	buf_init(&a, 0);
	buf_init(&b, 0);
	buf_init(&c, 0);
	buf_init(&d, 0);
	buf_init(&e, 0);
	CHECK(lock_seal(key1, "x.exe", "application/x-dosexec", data,
	          sizeof(data), &a) == 0);
	CHECK(lock_seal(key1, "x.exe", "application/x-dosexec", data,
	          sizeof(data), &b) == 0);
	CHECK(buf_used(&a) == buf_used(&b) &&
	      memcmp(buf_head(&a), buf_head(&b), buf_used(&a)) == 0);
	/* One byte of data differs: another nonce. */
	data[999] ^= 1;
	CHECK(lock_seal(key1, "x.exe", "application/x-dosexec", data,
	          sizeof(data), &c) == 0);
	CHECK(buf_used(&c) == buf_used(&a));
	CHECK(memcmp(buf_head(&c) + LOCK_MAGIC_LEN,
	          buf_head(&a) + LOCK_MAGIC_LEN, LOCK_NONCE_LEN) != 0);
	data[999] ^= 1;
	/* Another name, same data: another nonce. */
	CHECK(lock_seal(key1, "y.exe", "application/x-dosexec", data,
	          sizeof(data), &d) == 0);
	CHECK(memcmp(buf_head(&d) + LOCK_MAGIC_LEN,
	          buf_head(&a) + LOCK_MAGIC_LEN, LOCK_NONCE_LEN) != 0);
	/* Another key: everything after the magic differs. */
	CHECK(lock_seal(key2, "x.exe", "application/x-dosexec", data,
	          sizeof(data), &e) == 0);
	CHECK(memcmp(buf_head(&e) + LOCK_MAGIC_LEN,
	          buf_head(&a) + LOCK_MAGIC_LEN, LOCK_NONCE_LEN) != 0);
	CHECK(memcmp(buf_head(&e), buf_head(&a), LOCK_MAGIC_LEN) == 0);
	buf_free(&a);
	buf_free(&b);
	buf_free(&c);
	buf_free(&d);
	buf_free(&e);
}

static void
test_wrong_key(void)
{
	struct buf blob, out;
	char fn[64], ct[64], err[256];
	uint8_t k[LOCK_KEY_LEN];

	buf_init(&blob, 0);
	buf_init(&out, 0);
	CHECK(lock_seal(key1, "a.txt", "text/plain", "secret", 6, &blob) == 0);
	CHECK(lock_open(key2, buf_head(&blob), buf_used(&blob), &out, fn,
	          sizeof(fn), ct, sizeof(ct), err, sizeof(err)) == -1);
	CHECK(strcmp(err, AUTH_FAILED) == 0);
	CHECK(buf_used(&out) == 0);
	/* A key one bit away. */
	memcpy(k, key1, sizeof(k));
	k[31] ^= 0x80;
	CHECK(lock_open(k, buf_head(&blob), buf_used(&blob), &out, fn,
	          sizeof(fn), ct, sizeof(ct), err, sizeof(err)) == -1);
	CHECK(strcmp(err, AUTH_FAILED) == 0);
	CHECK(buf_used(&out) == 0);
	buf_free(&blob);
	buf_free(&out);
}

static void
test_tamper(void)
{
	static const uint8_t masks[] = {0x01, 0x80, 0xff};
	struct buf blob, out;
	uint8_t *copy;
	char err[256];
	size_t n, i, m, bad = 0, badmsg = 0, badtrunc = 0;

	buf_init(&blob, 0);
	buf_init(&out, 0);
	CHECK(lock_seal(key1, "e.com", "application/x-msdos-program",
	          "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR", 33, &blob) == 0);
	n = buf_used(&blob);
	if ((copy = malloc(n + 1)) == NULL)
		die("malloc");
	for (i = 0; i < n; i++)
		for (m = 0; m < sizeof(masks); m++) {
			memcpy(copy, buf_head(&blob), n);
			copy[i] ^= masks[m];
			err[0] = '\0';
			if (lock_open(key1, copy, n, &out, NULL, 0, NULL, 0,
			        err, sizeof(err)) != -1 ||
			    buf_used(&out) != 0)
				bad++;
			if (strcmp(err, i < LOCK_MAGIC_LEN ? NOT_LOCKED
			                                   : AUTH_FAILED) != 0)
				badmsg++;
		}
	CHECK(bad == 0);
	CHECK(badmsg == 0);
	printf("%zu single-byte changes of a %zu-byte blob: all detected\n",
	    n * sizeof(masks), n);

	/* Every truncation. */
	for (i = 0; i < n; i++) {
		memcpy(copy, buf_head(&blob), i);
		err[0] = '\0';
		if (lock_open(key1, copy, i, &out, NULL, 0, NULL, 0, err,
		        sizeof(err)) != -1 ||
		    buf_used(&out) != 0)
			badtrunc++;
		if (i < LOCK_MIN_BLOB
		        ? strncmp(err, NOT_LOCKED, strlen(NOT_LOCKED)) != 0
		        : strcmp(err, AUTH_FAILED) != 0)
			badmsg++;
	}
	CHECK(badtrunc == 0);
	CHECK(badmsg == 0);
	/* One byte more. */
	memcpy(copy, buf_head(&blob), n);
	copy[n] = 0;
	CHECK(lock_open(key1, copy, n + 1, &out, NULL, 0, NULL, 0, err,
	          sizeof(err)) == -1);
	CHECK(strcmp(err, AUTH_FAILED) == 0);
	/* Not a blob at all. */
	CHECK(lock_open(key1, "hello, world, this is text", 26, &out, NULL, 0,
	          NULL, 0, err, sizeof(err)) == -1);
	CHECK(strcmp(err, NOT_LOCKED) == 0);
	CHECK(lock_open(key1, NULL, 0, &out, NULL, 0, NULL, 0, err,
	          sizeof(err)) == -1);
	CHECK(buf_used(&out) == 0);
	free(copy);
	buf_free(&blob);
	buf_free(&out);
}

/* ---- the key file ---- */

static void
test_key_file(void)
{
	char dir[64], path[PATH_MAX], other[PATH_MAX], err[512];
	uint8_t k[LOCK_KEY_LEN], k2[LOCK_KEY_LEN], zero[LOCK_KEY_LEN];
	struct buf blob, out;
	struct stat st;

	memset(zero, 0, sizeof(zero));
	mk_tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/lock.key", dir);

	/* Absent, not created. */
	CHECK(lock_key_load(dir, 0, k, err, sizeof(err)) == -1);
	CHECK(strstr(err, "No such file") != NULL);
	CHECK(dir_entries(dir) == 0);

	/* Created: a regular file of 32 bytes, 0600, ours. */
	umask(022);
	CHECK(lock_key_load(dir, 1, k, err, sizeof(err)) == 0);
	CHECK(lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
	      (st.st_mode & 07777) == 0600 && st.st_size == LOCK_KEY_LEN &&
	      st.st_uid == geteuid() && st.st_nlink == 1);
	CHECK(memcmp(k, zero, sizeof(k)) != 0);
	CHECK(dir_entries(dir) == 1); /* no temporary file left */

	/* Loaded again, with or without create: the same key. */
	CHECK(lock_key_load(dir, 0, k2, err, sizeof(err)) == 0 &&
	      memcmp(k, k2, sizeof(k)) == 0);
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == 0 &&
	      memcmp(k, k2, sizeof(k)) == 0);
	CHECK(lock_key_read(path, k2, err, sizeof(err)) == 0 &&
	      memcmp(k, k2, sizeof(k)) == 0);

	/* It seals and opens. */
	buf_init(&blob, 0);
	buf_init(&out, 0);
	CHECK(lock_seal(k, "a", "b/c", "data", 4, &blob) == 0);
	CHECK(lock_open(k2, buf_head(&blob), buf_used(&blob), &out, NULL, 0,
	          NULL, 0, err, sizeof(err)) == 0 &&
	      buf_used(&out) == 4);
	buf_free(&blob);
	buf_free(&out);

	/* Group or other access. */
	CHECK(chmod(path, 0640) == 0);
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == -1);
	CHECK(strstr(err, "mode 0640") != NULL);
	CHECK(chmod(path, 0604) == 0);
	CHECK(lock_key_read(path, k2, err, sizeof(err)) == -1);
	CHECK(strstr(err, "mode 0604") != NULL);
	CHECK(chmod(path, 0620) == 0);
	CHECK(lock_key_load(dir, 0, k2, err, sizeof(err)) == -1);
	CHECK(chmod(path, 0400) == 0);
	CHECK(lock_key_load(dir, 0, k2, err, sizeof(err)) == 0 &&
	      memcmp(k, k2, sizeof(k)) == 0);
	CHECK(chmod(path, 0600) == 0);

	/* Another owner (we are root in the test environment). */
	if (geteuid() == 0) {
		CHECK(chown(path, 1234, 1234) == 0);
		CHECK(lock_key_load(dir, 0, k2, err, sizeof(err)) == -1);
		CHECK(strstr(err, "owned by uid 1234") != NULL);
		CHECK(chown(path, 0, 0) == 0);
	}

	/* Wrong sizes: never silently replaced, even with create. */
	CHECK(truncate(path, 31) == 0);
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == -1);
	CHECK(strstr(err, "31 bytes") != NULL);
	CHECK(truncate(path, 33) == 0);
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == -1);
	CHECK(strstr(err, "33 bytes") != NULL);
	CHECK(truncate(path, 0) == 0);
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == -1);
	CHECK(lstat(path, &st) == 0 && st.st_size == 0);
	write_file(path, k, sizeof(k), 0600);

	/* A symbolic link: refused in state_dir, followed by -k. */
	snprintf(other, sizeof(other), "%s/real.key", dir);
	CHECK(rename(path, other) == 0);
	CHECK(symlink("real.key", path) == 0);
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == -1);
	CHECK(strstr(err, "symbolic link") != NULL);
	CHECK(lock_key_read(path, k2, err, sizeof(err)) == 0 &&
	      memcmp(k, k2, sizeof(k)) == 0);
	CHECK(unlink(path) == 0);
	/* A dangling link is not "absent": create must not follow it. */
	CHECK(symlink("nowhere.key", path) == 0);
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == -1);
	snprintf(other, sizeof(other), "%s/nowhere.key", dir);
	CHECK(access(other, F_OK) == -1);
	CHECK(unlink(path) == 0);

	/* A directory, a FIFO (must not block). */
	CHECK(mkdir(path, 0700) == 0);
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == -1);
	CHECK(rmdir(path) == 0);
	CHECK(mkfifo(path, 0600) == 0);
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == -1);
	CHECK(strstr(err, "not a regular file") != NULL);
	CHECK(unlink(path) == 0);

	/* A state_dir that does not exist. */
	snprintf(other, sizeof(other), "%s/missing", dir);
	CHECK(lock_key_load(other, 1, k2, err, sizeof(err)) == -1);
	CHECK(strstr(err, "cannot create") != NULL);
	CHECK(lock_key_load("", 1, k2, err, sizeof(err)) == -1);
	CHECK(lock_key_load(NULL, 1, k2, err, sizeof(err)) == -1);
	CHECK(
	    lock_key_read("/nonexistent/lock.key", k2, err, sizeof(err)) == -1);
	CHECK(strstr(err, "No such file") != NULL);

	/* A new key after the old one is gone is another key. */
	CHECK(lock_key_load(dir, 1, k2, err, sizeof(err)) == 0);
	CHECK(memcmp(k, k2, sizeof(k)) != 0);
	rm_rf(dir);
}

/* 8 processes create the key of one directory at once, 20 times. */
static void
test_key_race(void)
{
	enum { NPROC = 8, ROUNDS = 20 };
	char dir[64], err[256];
	uint8_t keys[NPROC][LOCK_KEY_LEN + 1], file[LOCK_KEY_LEN];
	int go[2], res[2], round, i, st, bad = 0, disagree = 0, extra = 0;
	pid_t pids[NPROC];
	uint8_t rec[LOCK_KEY_LEN + 1], c;
	ssize_t r;

	for (round = 0; round < ROUNDS; round++) {
		mk_tmpdir(dir, sizeof(dir));
		if (pipe(go) == -1 || pipe(res) == -1)
			die("pipe");
		for (i = 0; i < NPROC; i++) {
			if ((pids[i] = fork()) == -1)
				die("fork");
			if (pids[i] == 0) {
				close(go[1]);
				close(res[0]);
				/* Wait until every process is ready. */
				if (read(go[0], &c, 1) != 0)
					_exit(3);
				memset(rec, 0, sizeof(rec));
				rec[LOCK_KEY_LEN] = lock_key_load(dir, 1, rec,
				                        err, sizeof(err)) == 0;
				if (!rec[LOCK_KEY_LEN])
					fprintf(stderr, "child: %s\n", err);
				_exit(write(res[1], rec, sizeof(rec)) ==
				              (ssize_t)sizeof(rec)
				          ? 0
				          : 4);
			}
		}
		close(go[0]);
		close(res[1]);
		close(go[1]); /* go */
		for (i = 0; i < NPROC; i++) {
			r = read(res[0], keys[i], sizeof(keys[i]));
			if (r != (ssize_t)sizeof(keys[i]) ||
			    !keys[i][LOCK_KEY_LEN])
				bad++;
		}
		close(res[0]);
		for (i = 0; i < NPROC; i++)
			if (waitpid(pids[i], &st, 0) == -1 || !WIFEXITED(st) ||
			    WEXITSTATUS(st) != 0)
				bad++;
		if (lock_key_load(dir, 0, file, err, sizeof(err)) == -1)
			bad++;
		for (i = 0; i < NPROC; i++)
			if (memcmp(keys[i], file, LOCK_KEY_LEN) != 0)
				disagree++;
		if (dir_entries(dir) != 1)
			extra++;
		rm_rf(dir);
	}
	CHECK(bad == 0);
	CHECK(disagree == 0);
	CHECK(extra == 0);
	printf("%d rounds of %d processes creating one key: %s\n", ROUNDS,
	    NPROC, bad || disagree || extra ? "FAILED" : "one key each time");
}

/* For test_unlock.py: a key, a sample blob and what it holds. */
static int
write_sample(const char *dir)
{
	uint8_t key[LOCK_KEY_LEN], *orig;
	char path[PATH_MAX], err[256];
	struct buf blob, meta;

	if (lock_key_load(dir, 1, key, err, sizeof(err)) == -1) {
		fprintf(stderr, "test_lock: %s\n", err);
		return 1;
	}
	if ((orig = malloc(SAMPLE_LEN)) == NULL)
		die("malloc");
	fill(orig, SAMPLE_LEN, 42);
	buf_init(&blob, 0);
	buf_init(&meta, 0);
	if (lock_seal(key, SAMPLE_NAME, SAMPLE_TYPE, orig, SAMPLE_LEN, &blob) ==
	        -1 ||
	    buf_printf(&meta, "%s\n%s\n", SAMPLE_NAME, SAMPLE_TYPE) == -1) {
		fprintf(stderr, "test_lock: cannot seal the sample\n");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/sample.locked", dir);
	write_file(path, buf_head(&blob), buf_used(&blob), 0644);
	snprintf(path, sizeof(path), "%s/sample.orig", dir);
	write_file(path, orig, SAMPLE_LEN, 0644);
	snprintf(path, sizeof(path), "%s/sample.meta", dir);
	write_file(path, buf_head(&meta), buf_used(&meta), 0644);
	printf("test_lock: sample written to %s\n", dir);
	buf_free(&blob);
	buf_free(&meta);
	free(orig);
	return 0;
}

int
main(void)
{
	const char *sample = getenv("IMAPGW_LOCK_SAMPLE_DIR");
	size_t i;

	if (sample != NULL && *sample != '\0')
		return write_sample(sample);
	for (i = 0; i < LOCK_KEY_LEN; i++) {
		key1[i] = (uint8_t)i;
		key2[i] = (uint8_t)(0xa5 ^ i);
	}
	test_round_trips();
	test_open_limits();
	test_determinism();
	test_wrong_key();
	test_tamper();
	test_key_file();
	test_key_race();
	return test_done("test_lock");
}
