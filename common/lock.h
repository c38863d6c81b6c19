/*
 * lock: the encrypted wrapper that takes the place of a locked
 * attachment.  scand seals (action "lock"), imapgwctl unlock opens.
 *
 * The key: <state_dir>/lock.key, 32 random bytes, a regular file of mode
 * 0600 owned by root, created by the first process that needs it (see
 * lock_key_load).  Whoever holds it can open every locked file.
 *
 * Two subkeys are derived from it with HKDF-SHA256 (RFC 5869, empty
 * salt):
 *	enc_key = HKDF(key, info "imapgw lock enc", 32 bytes)
 *	iv_key  = HKDF(key, info "imapgw lock iv", 32 bytes)
 *
 * A locked file (the blob) is binary:
 *
 *	offset	size	field
 *	0	8	magic "IMAPGWL1" (format version 1)
 *	8	12	nonce = the first 12 bytes of HMAC-SHA256(iv_key, P)
 *	20	n	AES-256-GCM of P under enc_key and the nonce, with
 *			the 8 magic bytes as additional authenticated data
 *	20+n	16	the GCM tag
 *
 * P, the plaintext (n bytes, at least 8):
 *	u32 big-endian length, then the original file name (UTF-8, may
 *	be empty)
 *	u32 big-endian length, then the original content type
 *	("type/subtype", may be empty)
 *	the original bytes (decoded from their transfer encoding), to
 *	the end
 *
 * The nonce is a function of the key and of everything sealed, so
 * sealing is deterministic (a part locks to the same bytes every time,
 * as the gateway's rewrites must), and two different plaintexts do not
 * share a nonce (but for a collision of 96-bit HMAC values).  What that
 * reveals is whether two locked files hold the same thing.
 *
 * In mail, the blob is the base64 body of a part
 *	Content-Type: application/x-imapgw-locked; name="<orig>.locked"
 *	Content-Disposition: attachment; filename="<orig>.locked"
 * which a user saves and the operator opens with imapgwctl unlock.
 */
#ifndef IMAPGW_LOCK_H
#define IMAPGW_LOCK_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define LOCK_MAGIC "IMAPGWL1"
#define LOCK_MAGIC_LEN 8
#define LOCK_KEY_LEN 32
#define LOCK_NONCE_LEN 12
#define LOCK_TAG_LEN 16
/* The smallest blob: empty name, type and content. */
#define LOCK_MIN_BLOB (LOCK_MAGIC_LEN + LOCK_NONCE_LEN + 8 + LOCK_TAG_LEN)
#define LOCK_MAX_NAME 4096 /* bytes of a file name or a content type */
#define LOCK_KEY_FILE "lock.key" /* in state_dir */
#define LOCK_CTYPE "application/x-imapgw-locked"
#define LOCK_SUFFIX ".locked"

/*
 * The key of state_dir.  It must be a regular file (not a symbolic
 * link) of exactly 32 bytes, owned by root or by the caller, and neither
 * group nor others may have any access to it.  If it does not exist and
 * create is set, it is created atomically: 32 bytes from RAND_bytes in a
 * new temporary file of state_dir (O_EXCL|O_NOFOLLOW, mode 0600), synced,
 * then link()ed into place; when another process won that race, its key
 * is read instead, so concurrent starters agree on one key.  The key is
 * then tried (a test seal and open), which also has OpenSSL fetch its
 * algorithms while files can still be read.  0, or -1 with err set.
 */
int lock_key_load(const char *state_dir, int create, uint8_t key[LOCK_KEY_LEN],
    char *err, size_t);
/* A key file named by path (imapgwctl unlock -k): the same checks, but
 * a symbolic link is followed.  0, or -1 with err set. */
int lock_key_read(
    const char *path, uint8_t key[LOCK_KEY_LEN], char *err, size_t);

/* Seal data (len bytes, any) with its original file name and content
 * type (NULL is ""; each at most LOCK_MAX_NAME bytes) and append the
 * blob to out.  0, or -1 (names too long, no memory, a crypto failure)
 * with out as it was. */
int lock_seal(const uint8_t key[LOCK_KEY_LEN], const char *filename,
    const char *ctype, const void *data, size_t len, struct buf *out);

/*
 * Open a blob: append the original bytes to data, and copy the file
 * name and content type (NUL-terminated) into the buffers given (either
 * may be NULL with size 0).  -1 with err set and data as it was:
 * "not an imapgw locked file" (no magic, or too short to be one),
 * "authentication failed (wrong key or altered file)" (wrong key,
 * truncated or altered), or a name that does not fit, or no memory.
 * Nothing that fails authentication is ever given back.
 */
int lock_open(const uint8_t key[LOCK_KEY_LEN], const void *blob, size_t len,
    struct buf *data, char *filename, size_t, char *ctype, size_t, char *err,
    size_t);

#endif
