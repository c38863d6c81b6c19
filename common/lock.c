/*
 * lock: the AES-256-GCM wrapper of locked attachments and its key.
 * The format is described in lock.h.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "lock.h"
#include "util.h"

#define LOCK_HDR_MAX (8 + 2 * LOCK_MAX_NAME)
#define LOCK_CHUNK (1 << 30) /* EVP takes int lengths */

static const char lock_not_locked[] = "not an imapgw locked file";
static const char lock_auth_failed[] =
    "authentication failed (wrong key or altered file)";

static void lock_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
lock_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list va;

	if (err == NULL || errlen == 0)
		return;
	va_start(va, fmt);
	vsnprintf(err, errlen, fmt, va);
	va_end(va);
}

static void
lock_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
lock_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/*
 * Crypto.
 */

static int
lock_hkdf(const uint8_t key[LOCK_KEY_LEN], const char *info, uint8_t out[32])
{
	EVP_PKEY_CTX *pc;
	size_t outlen = 32;
	int ok;

	pc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
	ok = pc != NULL && EVP_PKEY_derive_init(pc) > 0 &&
	     EVP_PKEY_CTX_set_hkdf_md(pc, EVP_sha256()) > 0 &&
	     EVP_PKEY_CTX_set1_hkdf_key(pc, key, LOCK_KEY_LEN) > 0 &&
	     EVP_PKEY_CTX_add1_hkdf_info(
	         pc, (const unsigned char *)info, (int)strlen(info)) > 0 &&
	     EVP_PKEY_derive(pc, out, &outlen) > 0 && outlen == 32;
	EVP_PKEY_CTX_free(pc);
	return ok ? 0 : -1;
}

static int
lock_subkeys(const uint8_t key[LOCK_KEY_LEN], uint8_t ek[32], uint8_t ik[32])
{
	if (lock_hkdf(key, "imapgw lock enc", ek) == -1 ||
	    lock_hkdf(key, "imapgw lock iv", ik) == -1) {
		OPENSSL_cleanse(ek, 32);
		OPENSSL_cleanse(ik, 32);
		return -1;
	}
	return 0;
}

/* The first 12 bytes of HMAC-SHA256(ik, a || b). */
static int
lock_nonce(const uint8_t ik[32], const void *a, size_t alen, const void *b,
    size_t blen, uint8_t nonce[LOCK_NONCE_LEN])
{
	char digest[] = "SHA256";
	OSSL_PARAM params[2];
	EVP_MAC *mac;
	EVP_MAC_CTX *ctx = NULL;
	uint8_t md[32];
	size_t mdlen = 0;
	int ok;

	params[0] =
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	ok = mac != NULL && (ctx = EVP_MAC_CTX_new(mac)) != NULL &&
	     EVP_MAC_init(ctx, ik, 32, params) == 1 &&
	     EVP_MAC_update(ctx, alen ? a : (const void *)"", alen) == 1 &&
	     EVP_MAC_update(ctx, blen ? b : (const void *)"", blen) == 1 &&
	     EVP_MAC_final(ctx, md, &mdlen, sizeof(md)) == 1 &&
	     mdlen == sizeof(md);
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	if (ok)
		memcpy(nonce, md, LOCK_NONCE_LEN);
	OPENSSL_cleanse(md, sizeof(md));
	return ok ? 0 : -1;
}

static int
lock_gcm_update(EVP_CIPHER_CTX *c, uint8_t *out, const uint8_t *in, size_t len)
{
	int chunk, outl;

	while (len > 0) {
		chunk = len > LOCK_CHUNK ? LOCK_CHUNK : (int)len;
		if (EVP_CipherUpdate(c, out, &outl, in, chunk) != 1 ||
		    outl != chunk)
			return -1;
		out += chunk;
		in += chunk;
		len -= (size_t)chunk;
	}
	return 0;
}

/* A GCM context for enc_key and nonce, with the magic as AAD. */
static EVP_CIPHER_CTX *
lock_gcm_new(int enc, const uint8_t ek[32], const uint8_t *nonce)
{
	EVP_CIPHER_CTX *c;
	int outl;

	if ((c = EVP_CIPHER_CTX_new()) == NULL)
		return NULL;
	if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) !=
	        1 ||
	    EVP_CIPHER_CTX_ctrl(
	        c, EVP_CTRL_GCM_SET_IVLEN, LOCK_NONCE_LEN, NULL) != 1 ||
	    EVP_CipherInit_ex(c, NULL, NULL, ek, nonce, enc) != 1 ||
	    EVP_CipherUpdate(c, NULL, &outl, (const uint8_t *)LOCK_MAGIC,
	        LOCK_MAGIC_LEN) != 1) {
		EVP_CIPHER_CTX_free(c);
		return NULL;
	}
	return c;
}

int
lock_seal(const uint8_t key[LOCK_KEY_LEN], const char *filename,
    const char *ctype, const void *data, size_t len, struct buf *out)
{
	uint8_t ek[32], ik[32], nonce[LOCK_NONCE_LEN], hdr[LOCK_HDR_MAX];
	size_t fl, cl, hlen, total, start;
	EVP_CIPHER_CTX *c = NULL;
	uint8_t *p;
	int outl, ret = -1;

	if (filename == NULL)
		filename = "";
	if (ctype == NULL)
		ctype = "";
	fl = strlen(filename);
	cl = strlen(ctype);
	if (fl > LOCK_MAX_NAME || cl > LOCK_MAX_NAME) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (data == NULL) {
		if (len) {
			errno = EINVAL;
			return -1;
		}
		data = "";
	}
	hlen = 8 + fl + cl;
	if (len > SIZE_MAX - LOCK_MIN_BLOB - hlen) {
		errno = EOVERFLOW;
		return -1;
	}
	total = LOCK_MAGIC_LEN + LOCK_NONCE_LEN + hlen + len + LOCK_TAG_LEN;
	lock_put32(hdr, (uint32_t)fl);
	memcpy(hdr + 4, filename, fl);
	lock_put32(hdr + 4 + fl, (uint32_t)cl);
	memcpy(hdr + 8 + fl, ctype, cl);

	if (lock_subkeys(key, ek, ik) == -1 ||
	    lock_nonce(ik, hdr, hlen, data, len, nonce) == -1 ||
	    buf_reserve(out, total) == -1)
		goto done;
	start = out->len;
	p = buf_tail(out);
	memcpy(p, LOCK_MAGIC, LOCK_MAGIC_LEN);
	memcpy(p + LOCK_MAGIC_LEN, nonce, LOCK_NONCE_LEN);
	p += LOCK_MAGIC_LEN + LOCK_NONCE_LEN;
	if ((c = lock_gcm_new(1, ek, nonce)) == NULL ||
	    lock_gcm_update(c, p, hdr, hlen) == -1 ||
	    lock_gcm_update(c, p + hlen, data, len) == -1 ||
	    EVP_EncryptFinal_ex(c, p + hlen + len, &outl) != 1 || outl != 0 ||
	    EVP_CIPHER_CTX_ctrl(
	        c, EVP_CTRL_GCM_GET_TAG, LOCK_TAG_LEN, p + hlen + len) != 1) {
		OPENSSL_cleanse(out->data + start, total);
		goto done;
	}
	buf_commit(out, total);
	ret = 0;
done:
	EVP_CIPHER_CTX_free(c);
	OPENSSL_cleanse(ek, sizeof(ek));
	OPENSSL_cleanse(ik, sizeof(ik));
	OPENSSL_cleanse(hdr, sizeof(hdr));
	return ret;
}

/* Copy a name of the plaintext into out (NULL: not wanted). */
static int
lock_name(const uint8_t *p, uint32_t n, char *out, size_t outlen,
    const char *what, char *err, size_t errlen)
{
	if (memchr(p, '\0', n) != NULL) {
		lock_err(
		    err, errlen, "malformed locked file (NUL in the %s)", what);
		return -1;
	}
	if (out == NULL || outlen == 0)
		return 0;
	if (n >= outlen) {
		lock_err(err, errlen, "%s too long (%u bytes)", what, n);
		return -1;
	}
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

int
lock_open(const uint8_t key[LOCK_KEY_LEN], const void *blob, size_t len,
    struct buf *data, char *filename, size_t fnlen, char *ctype, size_t ctlen,
    char *err, size_t errlen)
{
	const uint8_t *b = blob, *nonce, *ct, *tag;
	uint8_t ek[32], ik[32], check[LOCK_NONCE_LEN], *pt = NULL;
	EVP_CIPHER_CTX *c = NULL;
	size_t n = 0, off;
	uint32_t fl, cl;
	int outl, ret = -1;

	if (len < LOCK_MAGIC_LEN || memcmp(b, LOCK_MAGIC, LOCK_MAGIC_LEN)) {
		lock_err(err, errlen, "%s", lock_not_locked);
		return -1;
	}
	if (len < LOCK_MIN_BLOB) {
		lock_err(err, errlen, "%s (too short)", lock_not_locked);
		return -1;
	}
	nonce = b + LOCK_MAGIC_LEN;
	ct = nonce + LOCK_NONCE_LEN;
	n = len - LOCK_MAGIC_LEN - LOCK_NONCE_LEN - LOCK_TAG_LEN;
	tag = ct + n;
	if (lock_subkeys(key, ek, ik) == -1) {
		lock_err(err, errlen, "cannot derive the keys (OpenSSL)");
		return -1;
	}
	if (buf_reserve(data, n) == -1) {
		lock_err(err, errlen, "%zu bytes: %s", n,
		    errno == ENOBUFS ? "too large" : "out of memory");
		goto done;
	}
	pt = buf_tail(data);
	if ((c = lock_gcm_new(0, ek, nonce)) == NULL ||
	    lock_gcm_update(c, pt, ct, n) == -1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, LOCK_TAG_LEN,
	        (void *)(uintptr_t)tag) != 1) {
		lock_err(err, errlen, "cannot decrypt (OpenSSL)");
		goto done;
	}
	/* The tag, then the nonce that only the key holder can compute. */
	if (EVP_DecryptFinal_ex(c, pt + n, &outl) != 1 ||
	    lock_nonce(ik, pt, n, NULL, 0, check) == -1 ||
	    CRYPTO_memcmp(check, nonce, LOCK_NONCE_LEN) != 0) {
		lock_err(err, errlen, "%s", lock_auth_failed);
		goto done;
	}
	fl = lock_get32(pt);
	if (fl > n - 8) {
		lock_err(err, errlen, "malformed locked file (name length)");
		goto done;
	}
	cl = lock_get32(pt + 4 + fl);
	if (cl > n - 8 - fl) {
		lock_err(err, errlen, "malformed locked file (type length)");
		goto done;
	}
	if (lock_name(pt + 4, fl, filename, fnlen, "file name", err, errlen) ==
	        -1 ||
	    lock_name(pt + 8 + fl, cl, ctype, ctlen, "content type", err,
	        errlen) == -1)
		goto done;
	off = 8 + (size_t)fl + cl;
	memmove(pt, pt + off, n - off);
	OPENSSL_cleanse(pt + n - off, off);
	buf_commit(data, n - off);
	pt = NULL;
	ret = 0;
done:
	if (pt != NULL)
		OPENSSL_cleanse(pt, n);
	EVP_CIPHER_CTX_free(c);
	OPENSSL_cleanse(ek, sizeof(ek));
	OPENSSL_cleanse(ik, sizeof(ik));
	return ret;
}

/*
 * The key file.
 */

/* Seal and open a few bytes: the key and the algorithms work. */
static int
lock_selftest(const uint8_t key[LOCK_KEY_LEN], char *err, size_t errlen)
{
	static const char msg[] = "imapgw lock self-test";
	struct buf blob, out;
	char name[16], type[16], e[128];
	int ok;

	buf_init(&blob, 0);
	buf_init(&out, 0);
	ok = lock_seal(key, "t.txt", "text/plain", msg, sizeof(msg), &blob) ==
	         0 &&
	     lock_open(key, buf_head(&blob), buf_used(&blob), &out, name,
	         sizeof(name), type, sizeof(type), e, sizeof(e)) == 0 &&
	     buf_used(&out) == sizeof(msg) &&
	     memcmp(buf_head(&out), msg, sizeof(msg)) == 0 &&
	     strcmp(name, "t.txt") == 0 && strcmp(type, "text/plain") == 0;
	buf_free(&blob);
	buf_free(&out);
	if (!ok) {
		lock_err(err, errlen,
		    "OpenSSL cannot seal with AES-256-GCM, HMAC and HKDF");
		return -1;
	}
	return 0;
}

/* Read and check a key file.  *absent is set when it does not exist. */
static int
lock_key_file(const char *path, int nofollow, uint8_t key[LOCK_KEY_LEN],
    int *absent, char *err, size_t errlen)
{
	struct stat st;
	size_t got = 0;
	ssize_t r;
	uint8_t extra;
	int fd;

	*absent = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
	                    (nofollow ? O_NOFOLLOW : 0));
	if (fd == -1) {
		*absent = errno == ENOENT;
		if (errno == ELOOP && nofollow)
			lock_err(err, errlen,
			    "%s: a symbolic link (the key must be a regular "
			    "file)",
			    path);
		else
			lock_err(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		lock_err(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		lock_err(err, errlen, "%s: not a regular file", path);
		goto fail;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		lock_err(err, errlen, "%s: owned by uid %u, not by root", path,
		    (unsigned)st.st_uid);
		goto fail;
	}
	if (st.st_mode & 077) {
		lock_err(err, errlen,
		    "%s: mode %04o: group and others must have no access "
		    "(chmod 600)",
		    path, (unsigned)(st.st_mode & 07777));
		goto fail;
	}
	if (st.st_size != LOCK_KEY_LEN) {
		lock_err(err, errlen, "%s: %lld bytes, a key has %d", path,
		    (long long)st.st_size, LOCK_KEY_LEN);
		goto fail;
	}
	while (got < LOCK_KEY_LEN) {
		r = read(fd, key + got, LOCK_KEY_LEN - got);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0) {
			lock_err(err, errlen, "%s: %s", path,
			    r == 0 ? "shorter than 32 bytes" : strerror(errno));
			goto fail;
		}
		got += (size_t)r;
	}
	if (read(fd, &extra, 1) != 0) {
		lock_err(err, errlen, "%s: longer than 32 bytes", path);
		goto fail;
	}
	close(fd);
	return 0;
fail:
	OPENSSL_cleanse(key, LOCK_KEY_LEN);
	close(fd);
	return -1;
}

/* Create the key of dir at path; if another process links its key
 * first, read that one. */
static int
lock_key_create(const char *dir, const char *path, uint8_t key[LOCK_KEY_LEN],
    char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	uint8_t rnd[8];
	int fd = -1, tries, absent, e, dfd;

	for (tries = 0; tries < 16; tries++) {
		if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
			lock_err(err, errlen, "no random bytes from OpenSSL");
			return -1;
		}
		if (snprintf(tmp, sizeof(tmp),
		        "%s/.%s.%02x%02x%02x%02x%02x%02x%02x%02x", dir,
		        LOCK_KEY_FILE, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
		        rnd[5], rnd[6], rnd[7]) >= (int)sizeof(tmp)) {
			lock_err(err, errlen, "%s: path too long", dir);
			return -1;
		}
		fd = open(tmp,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd != -1 || errno != EEXIST)
			break;
	}
	if (fd == -1) {
		lock_err(err, errlen, "cannot create the lock key in %s: %s",
		    dir, strerror(errno));
		return -1;
	}
	if (RAND_bytes(key, LOCK_KEY_LEN) != 1) {
		lock_err(err, errlen, "no random bytes from OpenSSL");
		goto fail;
	}
	if (fchmod(fd, 0600) == -1 || write_all(fd, key, LOCK_KEY_LEN) ||
	    fsync(fd) == -1) {
		lock_err(err, errlen, "%s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		lock_err(err, errlen, "%s: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (link(tmp, path) == -1) {
		e = errno;
		unlink(tmp);
		OPENSSL_cleanse(key, LOCK_KEY_LEN);
		if (e == EEXIST) /* another process won: its key */
			return lock_key_file(
			    path, 1, key, &absent, err, errlen);
		lock_err(
		    err, errlen, "cannot create %s: %s", path, strerror(e));
		return -1;
	}
	unlink(tmp);
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
fail:
	if (fd != -1)
		close(fd);
	unlink(tmp);
	OPENSSL_cleanse(key, LOCK_KEY_LEN);
	return -1;
}

int
lock_key_load(const char *state_dir, int create, uint8_t key[LOCK_KEY_LEN],
    char *err, size_t errlen)
{
	char path[PATH_MAX];
	int absent, r;

	if (state_dir == NULL || *state_dir == '\0') {
		lock_err(err, errlen, "no state_dir for the lock key");
		return -1;
	}
	if (snprintf(path, sizeof(path), "%s/%s", state_dir, LOCK_KEY_FILE) >=
	    (int)sizeof(path)) {
		lock_err(err, errlen, "%s: path too long", state_dir);
		return -1;
	}
	r = lock_key_file(path, 1, key, &absent, err, errlen);
	if (r == -1 && absent && create)
		r = lock_key_create(state_dir, path, key, err, errlen);
	if (r == 0 && (r = lock_selftest(key, err, errlen)) == -1)
		OPENSSL_cleanse(key, LOCK_KEY_LEN);
	return r;
}

int
lock_key_read(
    const char *path, uint8_t key[LOCK_KEY_LEN], char *err, size_t errlen)
{
	int absent, r;

	r = lock_key_file(path, 0, key, &absent, err, errlen);
	if (r == 0 && (r = lock_selftest(key, err, errlen)) == -1)
		OPENSSL_cleanse(key, LOCK_KEY_LEN);
	return r;
}
