/*
 * The two building blocks of a relay direction: the assembly of one
 * logical IMAP line (its text, small literals inline, large literals
 * spooled to memfds) and an output queue of byte buffers, file ranges and
 * holds (a place where later output must wait, e.g. for a scan verdict).
 */
#ifndef IMAPGW_STREAM_H
#define IMAPGW_STREAM_H

#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

#define LINE_INLINE_MAX (16 * 1024) /* larger literals are spooled */
#define LINE_TEXT_CAP (8 * 1024 * 1024)
#define LINE_MAX_SPOOLS 64

struct spool {
	size_t at; /* offset in text where the payload would start */
	uint64_t len; /* payload bytes */
	int fd; /* memfd holding them */
};

struct lineasm {
	struct buf text;
	struct spool *spools; /* allocated while the line has some */
	size_t nspools, spcap;
	uint64_t lit_left; /* payload still expected for the open literal */
	int lit_spooled; /* the open literal goes to the last spool */
	int lit_stream; /* the open literal is passed on as it comes */
	int lit_discard; /* the open literal is read and dropped */
	int discarded; /* some literal of this line was dropped */
	size_t lit_start; /* text offset of an inline literal's payload */
	int streamed; /* parts of this line were already sent on */
};

void lineasm_init(struct lineasm *);
void lineasm_reset(struct lineasm *); /* closes spools */
/* A literal of n bytes begins after what text holds now: kept inline,
 * spooled to a memfd, or streamed (the caller passes the payload on as it
 * comes, after sending the text so far). */
enum lit_mode { LIT_INLINE, LIT_SPOOL, LIT_STREAM, LIT_DISCARD };
int lineasm_literal(struct lineasm *, uint64_t n, enum lit_mode);
/* Payload bytes of the open literal. -1 on error (errno). */
int lineasm_payload(struct lineasm *, const uint8_t *, size_t);

/* Take src's line (text and spools) into dst; src is empty after. */
void lineasm_move(struct lineasm *dst, struct lineasm *src);
/* A new memfd holding len bytes of the text at off (an inline literal). */
int lineasm_memfd(const struct lineasm *, size_t off, uint64_t len);
/* An fd with a literal's payload: a copy of its spool's fd (spool >= 0),
 * else a new memfd of the inline bytes at data. */
int lineasm_literal_fd(
    const struct lineasm *, int spool, size_t data, uint64_t len);
/* Whether the text at [off, off + len) is exactly s (tags: case matters). */
int lineasm_is(const struct lineasm *, size_t off, size_t len, const char *);

enum oq_kind { OQ_BUF, OQ_FD, OQ_HOLD };

struct oq_ent {
	struct oq_ent *next;
	int kind;
	struct buf b;
	int fd;
	off_t off;
	uint64_t len;
};

struct outq {
	struct oq_ent *head, **tail;
	uint64_t bytes; /* queued, for backpressure */
	unsigned holds;
};

void outq_init(struct outq *);
void outq_clear(struct outq *);
int outq_empty(const struct outq *);
void outq_bytes(struct outq *, const void *, size_t);
void outq_buf(struct outq *, struct buf *); /* takes b's storage */
void outq_fd(struct outq *, int fd, off_t off, uint64_t len); /* owns fd */
struct oq_ent *outq_hold(struct outq *);
/* Turn a hold into nothing (its replacement was queued with
 * outq_insert_after) and let the queue flow again. */
void outq_release(struct outq *, struct oq_ent *);
/* Queue entries right after an entry (NULL: at the end); returns the
 * new one. */
struct oq_ent *outq_after_bytes(
    struct outq *, struct oq_ent *, const void *, size_t);
struct oq_ent *outq_after_fd(
    struct outq *, struct oq_ent *, int fd, off_t off, uint64_t len);
/* Write to dst.  Returns bytes written (>= 0), -1 on error (errno);
 * stops at a hold or when dst would block. */
ssize_t outq_write(struct outq *, int dst);
/* Queue the assembled line unchanged (text with spools spliced in). */
void outq_line(struct outq *, struct lineasm *);

/* An edit of an assembled line: [off, off + len) becomes bytes, or the
 * fd range, or both (bytes first). */
struct edit {
	size_t off, len;
	char *bytes;
	size_t blen;
	int fd; /* -1: none; not owned */
	uint64_t foff, flen;
};

/* Queue the line with edits, after "after" (NULL: at the end).  The
 * edits are sorted in place; bytes stay the caller's; fd is dup'ed. */
void outq_line_edits(struct outq *, struct oq_ent *after, struct lineasm *,
    struct edit *, size_t);

#endif
