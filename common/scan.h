/*
 * The scan contract between netd and scand.
 *
 * netd -> scand  IMSG_SCAN_REQ, fd = memfd holding the whole message
 *	u64 reqid	netd's id, echoed back
 *	u32 kind	SCAN_FETCH (server -> client) or SCAN_APPEND (upload)
 *	u32 action	index of the proxy action in the config both hold
 *	str user	session user ("" before login)
 *	str client	client address, for logs
 *	u64 size	bytes of the message in the memfd
 *
 * scand -> netd  IMSG_SCAN_RES, fd = memfd (only when verdict is CHANGED)
 *	u64 reqid
 *	u32 verdict	SCAN_* below
 *	u32 action	ACT_* that was applied (allow, strip, deny, drop, ...)
 *	str reason	what was found and why, for logs and the client
 *			("virus Eicar-Test-Signature in part 2 (eicar.com)")
 *	u64 msg_off, msg_len	the sanitized message inside the result fd
 *	u64 bs_off, bs_len	its BODYSTRUCTURE (IMAP syntax, no "BODYSTRUCTURE")
 *	u64 body_off, body_len	its BODY (non-extensible form)
 *
 * The result fd is a sealed memfd that scand wrote; netd only reads it.
 * Every field is bounds-checked on receipt (offsets inside the fd's size);
 * a malformed result counts as SCAN_ERROR, never as clean.
 */
#ifndef IMAPGW_SCAN_H
#define IMAPGW_SCAN_H

enum scan_kind { SCAN_FETCH = 0, SCAN_APPEND };

enum scan_verdict {
	SCAN_CLEAN = 0, /* pass the original bytes unchanged */
	SCAN_CHANGED,	/* pass the sanitized message from the result fd */
	SCAN_REJECT,	/* APPEND only: refuse the upload with reason */
	SCAN_DROP,	/* end the client's session (action drop/block) */
	SCAN_ERROR	/* could not be scanned: netd applies on_error */
};

#define SCAN_MAX_REASON 1024

#endif
