/*
 * netd's side of the TLS contract (common/tls.h): hand a TCP socket to a
 * tlsd worker, get the plaintext end of a socketpair back through a
 * callback.  The callback always runs exactly once, later, from the
 * event loop: with the result from tlsd, or as a failure when no tlsd is
 * available, it goes away, answers garbage or takes too long.
 */
#ifndef IMAPGW_TLSREQ_H
#define IMAPGW_TLSREQ_H

#include <stdint.h>

#include "proc.h"
#include "tls.h"

struct netd;

struct tls_result {
	int ok;
	int fd; /* ok: the plaintext end (owned by the callee), else -1 */
	char error[TLS_MAX_ERROR];
	char version[32];
	char cipher[128];
	char sni[TLS_MAX_NAME + 1];
	char subject[512];
	int resumed;
	char names[TLS_MAX_NAMES + 1]; /* client side: the server's names */
	char attest[TLS_MAX_ATTEST + 1]; /* and tlsd's attest of them */
};

typedef void (*tls_cb)(void *arg, struct tls_result *);

struct tls_req;

/* Takes ownership of fd (the TCP socket).  flags: TLS_START_*.  attest:
 * with names on the server side, the attest DONE gave with them (else
 * NULL). */
struct tls_req *tls_start(struct netd *, int fd, int side, unsigned flags,
    const char *policy, const char *server, const char *name,
    const char *attest, const char *peer, tls_cb, void *arg);
/* The requester went away: the result is dropped (its fd closed). */
void tls_cancel(struct tls_req *);

void tls_peer_frame(struct netd *, struct proc_chan *, struct imsg *);
void tls_peer_gone(struct netd *, struct proc_chan *);

#endif
