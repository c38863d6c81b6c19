/*
 * The one buffer type: a byte array with a read offset and a hard cap.
 * Builders append, readers consume with bounds checks; a reader that runs
 * past the end sets its error flag and every later read fails too, so a
 * caller checks once at the end.
 */
#ifndef IMAPGW_BUF_H
#define IMAPGW_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct buf {
	uint8_t *data;
	size_t off; /* first unread byte */
	size_t len; /* end of valid data */
	size_t cap; /* allocated */
	size_t max; /* hard limit on len - off; 0 = unlimited */
};

void buf_init(struct buf *, size_t max);
void buf_free(struct buf *);
void buf_reset(struct buf *);
void buf_release(struct buf *); /* free the storage, keep the cap */
size_t buf_used(const struct buf *); /* len - off */
uint8_t *buf_head(const struct buf *);
size_t buf_room(const struct buf *); /* bytes that may still be added */
int buf_reserve(struct buf *, size_t); /* ensure writable space, -1 on cap */
uint8_t *buf_tail(struct buf *);
void buf_commit(struct buf *, size_t); /* after writing at buf_tail() */
void buf_consume(struct buf *, size_t);
int buf_add(struct buf *, const void *, size_t);
int buf_add_u8(struct buf *, uint8_t);
int buf_add_u16(struct buf *, uint16_t);
int buf_add_u32(struct buf *, uint32_t);
int buf_add_u64(struct buf *, uint64_t);
int buf_add_str(struct buf *, const char *); /* u32 length + bytes */
int buf_printf(struct buf *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
ssize_t buf_read_fd(struct buf *, int fd, size_t want);
ssize_t buf_write_fd(struct buf *, int fd);
int buf_compact(struct buf *);

/* Bounds-checked reader over a byte range. */
struct reader {
	const uint8_t *p;
	size_t left;
	int err;
};

void rd_init(struct reader *, const void *, size_t);
uint8_t rd_u8(struct reader *);
uint16_t rd_u16(struct reader *);
uint32_t rd_u32(struct reader *);
uint64_t rd_u64(struct reader *);
int rd_data(struct reader *, void *, size_t);
const void *rd_ptr(struct reader *, size_t);
/* A string as written by buf_add_str: copied, NUL-terminated, at most max
 * bytes, no embedded NUL.  NULL (and err set) on any violation. */
char *rd_str(struct reader *, size_t max);
int rd_end(const struct reader *); /* 0 if all consumed and no error */

#endif
