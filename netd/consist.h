/*
 * Strict consistency (RFC 3501 2.3.1.1): every message-derived item of a
 * message comes from its sanitized form, from the first FETCH on, in
 * every session.  See consist.c.
 */
#ifndef IMAPGW_CONSIST_H
#define IMAPGW_CONSIST_H

#include <stdint.h>

struct session;
struct lineasm;
struct imap_cmd;
struct imap_resp;
struct fcmd;
struct scan_result;
struct vc_entry;

/* What the gateway knows of one message of a client FETCH. */
enum { PJ_UNKNOWN = 0, PJ_CLEAN, PJ_CHANGED, PJ_ERROR, PJ_OVERSIZE };

struct pjmsg {
	uint32_t seq, uid;
	uint8_t cls; /* PJ_* */
	uint8_t asked; /* in one of our body fetches */
	uint8_t have_sha;
	uint8_t sha[32];
	int fd; /* CHANGED: the sanitized message (a memfd), or -1 */
	uint64_t len;
	char *reason; /* ERROR */
};

/* The messages of one client FETCH, sorted by UID. */
struct pjmap {
	struct pjmsg *m;
	size_t n, cap;
};

/* Client commands: SELECT, EXAMINE, CLOSE, UNSELECT are followed. */
void consist_client(struct session *, struct lineasm *, struct imap_cmd *);
/*
 * A client FETCH held until no other FETCH of the client is in flight;
 * with judge, its messages are judged first (strict mode, derived items
 * and no whole message).  f is its entry (copied).  Returns 1 (the line
 * was taken).
 */
int consist_command(struct session *, struct lineasm *, struct imap_cmd *,
    struct fcmd *, int judge);
/* A server response: 1 if it was the gateway's own and is swallowed. */
int consist_server(struct session *, struct lineasm *, struct imap_resp *);
/* A literal in a response to our own whole-message fetch (spool it). */
int consist_own_body(struct session *);
/* The client waits while its FETCH is held; the server while verdicts
 * of our own fetches are outstanding. */
int consist_paused(struct session *, int client);
/* A client FETCH ended: a held one may start. */
void consist_kick(struct session *);
void consist_session_end(struct session *);

/* The mailbox's mark, if it covers every message the session can see:
 * f->markw and f->changed set, 1; else 0. */
int consist_mark(struct session *, struct fcmd *);
/* Whether uid is in a sorted list. */
int consist_in(const uint32_t *, size_t, uint32_t);

/* The entry of a message in a map, or NULL. */
struct pjmsg *pjmap_find(struct pjmap *, uint32_t uid);
void pjmap_free(struct pjmap *);

/* The verdict cache, keyed for this session's selected mailbox. */
struct vc_msgkey;
int consist_key(struct session *, uint32_t uid, struct vc_msgkey *);
int consist_cached(struct session *, uint32_t uid, struct vc_entry *);
int consist_cached_sha(
    struct session *, const uint8_t sha[32], struct vc_entry *);
/* Remember scand's verdict (CLEAN or CHANGED; anything else is not). */
void consist_remember(struct session *, int have_uid, uint32_t uid,
    const uint8_t sha[32], uint64_t size, const struct scan_result *);
/* SHA-256 of len bytes of fd from offset 0. */
int consist_sha(int fd, uint64_t len, uint8_t sha[32]);
/* A new memfd holding len bytes of src from off. */
int consist_fd_copy(int src, uint64_t off, uint64_t len);
/* A new memfd holding bytes. */
int consist_memfd(const uint8_t *, size_t);

#endif
