/*
 * A session and its two directions, shared by session.c (connections,
 * I/O, lifecycle) and imap.c (the IMAP engine that decides what each
 * complete line becomes).
 */
#ifndef IMAPGW_SESSION_H
#define IMAPGW_SESSION_H

#include <time.h>

#include "netd.h"
#include "stream.h"
#include "tls.h"

#define DIR_IN_MAX (256 * 1024) /* read, not yet processed */
#define SINK_HIGH (1024 * 1024) /* stop reading the source above this */

struct session;
struct pjmap;
struct prejudge;

#define FCMD_MAX 32
#define FCMD_MAX_PARTIAL 16

/* A FETCH the client sent: whether the gateway added BODY.PEEK[], and
 * the counts of its partial items (responses carry only the origin). */
struct fcmd {
	char tag[64];
	int added;
	int judged; /* its responses wait for a verdict: spool, not stream */
	int strict; /* consistency strict: answered from verdicts */
	int add_uid; /* UID added to its items: cut from the responses */
	struct pjmap *map; /* strict: its messages, judged before it went */
	/* strict, from the mailbox's mark: UIDs up to markw are judged,
	 * changed[] (sorted) are the CHANGED ones */
	uint32_t markw;
	uint32_t *changed;
	size_t nchanged;
	unsigned npartial;
	struct {
		int binary;
		char spec[64];
		uint64_t origin, count;
	} partial[FCMD_MAX_PARTIAL];
};

/* Bytes from one peer, assembled into logical lines. */
struct dir {
	struct session *s;
	const char *name; /* "client" or "server" */
	int src;
	struct buf in;
	struct framer fr;
	struct lineasm la;
	uint64_t lines_seen;
	struct event *rev;
	int rev_on;
	int eof;
	uint64_t bytes;
};

/* Bytes to one peer. */
struct sink {
	struct session *s;
	int dst;
	struct outq q;
	struct event *wev;
	int wev_on;
	int blocked; /* a streamed literal waits for the peer to take more */
	int shut;
	uint64_t bytes;
};

/*
 * servers.<pool>.connect: lazy.  LAZY_WAIT: the client was greeted with
 * the greeting the pool's server gave last; no backend yet.
 * LAZY_CONNECT: the client's first command for the server is queued and
 * the server is being met (TCP, TLS); the client waits.  LAZY_CHECK:
 * connected, the server's own greeting is awaited and checked against
 * the one the client got; nothing goes to the server before.
 */
enum { LAZY_NO = 0, LAZY_WAIT, LAZY_CONNECT, LAZY_CHECK };

struct session {
	struct session *next, *prev;
	struct netd *n;
	uint64_t id;
	struct netd_cfg *nc;
	const struct cfg_policy *pol;
	const struct cfg_action *act;
	const struct cfg_server *srv;
	const struct cfg_member *mem;
	int cfd, sfd;
	char client[80];
	struct dir c, sv; /* from the client, from the server */
	struct sink to_c, to_s; /* to the client, to the server */
	struct event *connev;
	struct event *timer;
	struct event *kickev;
	struct timespec start;
	uint64_t last; /* ms, monotonic: last byte in or out */
	int state;
	int ending; /* session_end ran: callers unwind */

	char client_ip[64], client_port[8];

	/* IMAP engine state (imap.c) */
	int wait_cont; /* client line held at a sync literal */
	char heldtag[64];
	int logout;
	int greeted; /* the server's greeting was handled */
	int authed; /* the client is authenticated */
	int srv_literalplus; /* server capabilities */
	int srv_id;
	char user[128]; /* from LOGIN/AUTHENTICATE, once known */
	char pending_user[128];
	char auth_tag[64]; /* LOGIN or AUTHENTICATE awaiting its answer */
	char sasl_mech[32]; /* AUTHENTICATE exchange in progress */
	int sasl_step;
	char idle_tag[64];
	char own_tag[32]; /* our own upstream command in flight */
	unsigned own_seq;
	int refused; /* a client command answered by the gateway */
	struct fetch_job *fjobs; /* responses waiting for verdicts */
	struct append_job *ajob; /* the upload being judged or sent */
	int append_line; /* the client line is an APPEND we took */
	int take_login; /* a LOGIN whose literals we answered */
	/* FETCH commands awaiting their tagged answer, oldest first: the
	 * responses in between belong to the first. */
	unsigned nfcmd, fcmdcap;
	struct fcmd *fcmds; /* freed when none is in flight */

	/* TLS (tlsreq.c, common/tls.h) */
	int ctls; /* the client side runs TLS (implicit or STARTTLS) */
	int implicit; /* the listener is implicit TLS */
	struct cfg_member orig; /* to: original-destination: the server */
	char names[TLS_MAX_NAMES + 1]; /* the real server's, to present */
	char attest[TLS_MAX_ATTEST + 1]; /* tlsd's attest of names */
	/* The client proxy: the server name of the client's ClientHello
	 * ("" none), peeked at by hellev before the real server is met. */
	char sni[TLS_MAX_NAME + 1];
	struct event *hellev;
	int stls; /* the server side runs TLS */
	int starttls; /* STARTTLS answered: hand over once it is out */
	struct tls_req *tlsreq; /* a handshake in tlsd */
	struct buf pre; /* backend STARTTLS: what the server said before */
	int pre_state;
	char greeting[1024]; /* backend STARTTLS: the server's greeting */
	/* servers.<pool>.connect: lazy: LAZY_*, the bytes queued for the
	 * server before the client's first line (session.c) */
	int lazy;
	uint64_t lazy_queued;
	char *lazy_caps; /* the capabilities the client was greeted with */

	/* The selected mailbox, for the verdict cache (consist.c). */
	int mbox_ok; /* name and UIDVALIDITY known */
	char mbox[256];
	uint32_t uidvalidity;
	char sel_tag[64]; /* SELECT or EXAMINE in flight */
	char sel_mbox[256];
	uint32_t sel_uidvalidity;
	uint32_t uidnext, sel_uidnext; /* [UIDNEXT n] of the SELECT */
	int grew; /* an EXISTS since the SELECT: uidnext may be stale */
	struct prejudge *pj; /* a client FETCH held while we judge */
};

/* session.c */
void session_end(struct session *, const char *reason);
/* Continue a held client literal: accepted (server said "+") or not. */
void session_cont(struct session *, int accepted);
void session_kick(struct session *); /* re-run processing and output */
/* End the session for the framer/parser error in d->fr.err. */
void session_protocol_error(struct session *, struct dir *);
/* The client's STARTTLS was answered: once that answer is out, the
 * connection goes to tlsd and what the client sent after is dropped. */
void session_starttls(struct session *);
struct imap_resp;
/* The server's greeting, as the engine met it: kept for lazy pools. */
void session_greeting_learn(
    struct session *, struct lineasm *, const struct imap_resp *);
/* LAZY_CHECK: the server's greeting, which the client never sees: it
 * lets the client's commands go, or ends the session (s->ending).
 * Returns 0. */
int session_greeting_check(
    struct session *, struct lineasm *, const struct imap_resp *);

/* imap_msg.c: messages that cross (FETCH scanning, APPEND). */
struct imap_resp;
struct imap_cmd;
enum lit_mode msg_literal_mode(struct session *, struct dir *, uint64_t);
int msg_append_sync(struct session *, struct dir *);
int msg_fetch(struct session *, struct lineasm *, struct imap_resp *);
int msg_append(struct session *, struct lineasm *, struct imap_cmd *);
int msg_server_answer(struct session *, struct lineasm *, struct imap_resp *);
int msg_paused(struct session *, struct dir *);
void msg_session_end(struct session *);
int msg_ready(struct session *); /* finish jobs judged meanwhile */
int line_is_append(const struct lineasm *);
void line_verb(const struct lineasm *, char *verb, size_t verblen);
int msg_fetch_command(struct session *, struct lineasm *, struct imap_cmd *);
struct fcmd *fcmd_push(struct session *); /* NULL: too many in flight */
void msg_tagged(struct session *, struct lineasm *, struct imap_resp *);

/* imap.c: the engine.  Each returns -1 when the session ended. */
int imap_line(struct session *, struct dir *);
int imap_sync_literal(struct session *, struct dir *);
int imap_paused(struct session *, struct dir *);
enum lit_mode imap_literal_mode(struct session *, struct dir *, uint64_t);
void imap_client_line_cb(void *, const char *, size_t, int);

#endif
