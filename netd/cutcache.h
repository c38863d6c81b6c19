/*
 * The cut cache: what scand cut from a sanitized message (SCAN_F_CUT),
 * remembered in netd's memory, so that a later FETCH of the same items
 * of the same sanitized bytes is answered without a round trip to scand.
 *
 * The key is the SHA-256 of the sanitized message followed by the
 * sections asked for (binary flag and spec of each, in order): the answer
 * depends on nothing else.  A cut answer is the structures (BODYSTRUCTURE,
 * BODY, ENVELOPE) and the sections of one message; only answers whose
 * bytes (everything but the message itself) fit CUT_BLOB_MAX are kept.
 *
 * Bounded: CUT_SETS sets of CUT_WAYS entries (the oldest one of a full
 * set is replaced) and at most CUT_BYTES_MAX bytes of answers in all
 * (an answer that would pass it is not kept).  One per netd process.
 */
#ifndef IMAPGW_CUTCACHE_H
#define IMAPGW_CUTCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "scanreq.h"

#define CUT_SETS 1024
#define CUT_WAYS 4
#define CUT_BLOB_MAX (16 * 1024)
#define CUT_BYTES_MAX (8 * 1024 * 1024)
/* Sanitized messages larger than this, held in a file, are not read to
 * make a key: their cuts go to scand every time. */
#define CUT_KEY_MSG_MAX (1024 * 1024)

/* The key of the sections req[0..nsect) of the sanitized message msg. */
void cutcache_key(const uint8_t *msg, size_t len,
    const struct scan_section *req, unsigned nsect, uint8_t key[32]);

/* 1: res is the remembered answer (SCAN_CHANGED, fd -1, mem a malloc'd
 * copy of the bytes its offsets refer to: the caller frees it; msg_len
 * is the sanitized message's length, its bytes are not in mem).  0: not known. */
int cutcache_get(const uint8_t key[32], struct scan_result *res);

/* Remember scand's SCAN_CHANGED answer res (its bytes read from res->fd,
 * which stays the caller's).  Answers too large, or read short, are not
 * kept. */
void cutcache_put(const uint8_t key[32], const struct scan_result *res);

/* Entries and bytes held (imapgwctl status, tests). */
void cutcache_stats(size_t *entries, size_t *bytes);
/* Forget everything. */
void cutcache_clear(void);

#endif
