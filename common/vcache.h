/*
 * The verdict cache: what the gateway answered for a message, so that a
 * message looks the same in every session, netd worker and restart (RFC
 * 3501 2.3.1.1: for a mailbox, UIDVALIDITY and UID, size, envelope, body
 * structure and every section never change).
 *
 * Two kinds of keys, both scoped by the proxy action's name (two
 * actions judge the same bytes differently):
 *   by message:  action, user, mailbox, UIDVALIDITY, UID -> content hash
 *   by content:  action, SHA-256 of the original message -> verdict
 * A verdict is CLEAN (the original passes) or CHANGED (the sanitized
 * message is stored with it: a later signature or rule update never
 * turns a sanitized message back into the original, and the bytes need
 * not be re-derived).  Scan errors are never stored.
 *
 * Layers: a bounded in-memory table per process in front of a persistent
 * LMDB environment in state_dir/verdicts shared by every netd worker.
 * vcache_open() runs before the sandbox; afterwards only reads of the
 * map and writes of the already open files are needed.  Without the
 * persistent layer (size 0, or it failed to open) the memory layer still
 * works.  Any LMDB error is logged and turns into a miss (get) or a
 * dropped write (put); it never fails the caller's session.
 */
#ifndef IMAPGW_VCACHE_H
#define IMAPGW_VCACHE_H

#include <stddef.h>
#include <stdint.h>

enum vc_class { VC_CLEAN = 1, VC_CHANGED = 2 };

struct vc_msgkey {
	const char *action; /* proxy action name */
	const char *user;
	const char *mailbox; /* as the client named it; "INBOX" normalized */
	uint32_t uidvalidity;
	uint32_t uid;
};

struct vc_entry {
	int cls; /* VC_CLEAN, VC_CHANGED */
	uint8_t sha[32]; /* SHA-256 of the original message */
	uint64_t orig_size;
	int action; /* ACT_* scand applied (CHANGED) */
	/* What judged it: the action's judge stamp (config.h).  A CLEAN
	 * verdict under another stamp is stale (the caller judges again);
	 * a CHANGED one stays whatever judges now. */
	uint64_t stamp;
	char reason[256]; /* scand's reason (CHANGED), for logs */
	/* CHANGED: the sanitized message, malloc'd, owned by the entry */
	uint8_t *msg;
	size_t msglen;
};

struct vcache;

/* dir is created by the parent (0700, owned by root: the cache is
 * opened as root, before the sandbox, and no child may plant files in
 * it).  mapsize 0: memory only.  memmax: entries kept in memory, per
 * kind of key.  Never NULL (fatal if out of memory): if the LMDB
 * environment cannot be opened, a warning names dir and the error and
 * the cache works in memory only. */
struct vcache *vcache_open(const char *dir, uint64_t mapsize, unsigned memmax);
void vcache_close(struct vcache *);

/* 1 hit (e filled: free with vc_entry_free), 0 miss. */
int vcache_get_msg(
    struct vcache *, const struct vc_msgkey *, struct vc_entry *);
int vcache_get_sha(struct vcache *, const char *action, const uint8_t sha[32],
    struct vc_entry *);

/*
 * Remember a verdict for its content hash and, if k->user and
 * k->mailbox are not NULL, the message key -> hash (overwriting an older
 * hash for the key).  k->action scopes both and is required: k NULL
 * stores nothing.  A CHANGED verdict already stored for the hash is never
 * replaced, by a CLEAN one or another CHANGED one: the first sanitized
 * form stays.
 */
void vcache_put(
    struct vcache *, const struct vc_msgkey *k, const struct vc_entry *e);

void vc_entry_free(struct vc_entry *);

/*
 * A mailbox mark (persistent layer only; the key's uid is ignored):
 * every message with a UID up to upto has a verdict under this judge
 * stamp, and changed (sorted) lists those that are CHANGED.  It lets a
 * session that knows the mailbox holds no UID above upto answer a FETCH
 * without asking the server which messages a set names.  get: 1 found
 * (free *changed), 0 none.
 */
#define VC_MARK_MAX 4096
void vcache_put_mark(struct vcache *, const struct vc_msgkey *, uint32_t upto,
    uint64_t stamp, const uint32_t *changed, size_t n);
int vcache_get_mark(struct vcache *, const struct vc_msgkey *, uint32_t *upto,
    uint64_t *stamp, uint32_t **changed, size_t *n);

#endif
