/*
 * imapgw: definitions shared by every process role.
 */
#ifndef IMAPGW_H
#define IMAPGW_H

#include <stddef.h>
#include <stdint.h>

#define IMAPGW_VERSION "0.1"

/* fd numbers a child finds after exec. */
#define IMAPGW_PARENT_FD 3 /* imsg channel to the parent */
#define IMAPGW_REPORT_FD 4 /* write end: sandbox violation reports */

#define IMAPGW_MAX_INSTANCES 64

/* The auto-block list of the block action: at most this many addresses
 * (the parent refuses more), and reasons of at most this many bytes. */
#define IMAPGW_BLOCK_MAX 65536
#define IMAPGW_BLOCK_MAX_REASON 1023

enum imapgw_role {
	ROLE_PARENT = 0,
	ROLE_NETD,
	ROLE_SCAND,
	ROLE_TLSD,
	ROLE_MAX
};

const char *role_name(enum imapgw_role);
int role_from_name(const char *); /* -1 if unknown */

/* imsg types.  Every receiver rejects a type it does not expect. */
enum imsg_type {
	IMSG_NONE = 0,
	/* parent -> child */
	IMSG_CFG, /* fd: memfd with the packed config part */
	IMSG_LISTENER, /* fd: listening socket; u32 policy index */
	IMSG_LISTENERS_END, /* u32 config generation: listeners complete */
	IMSG_PEER, /* fd: socketpair end; u32 role, u32 instance */
	IMSG_START, /* everything sent: drop privileges, run */
	IMSG_STATUS_REQ, /* u32 request id */
	IMSG_TEST_VIOLATE, /* test builds only: make a forbidden call */
	IMSG_BLOCK_SET, /* to netd: u8 family (4 or 6), the 4 or 16 address
	                   bytes, u64 expiry (wall-clock seconds; 0 = the
	                   address is no longer blocked) */
	/* child -> parent */
	IMSG_READY, /* sandbox entered */
	IMSG_STATUS, /* u32 request id, u32 sessions, u64 total */
	IMSG_CFG_APPLIED, /* u32 generation */
	IMSG_PEER_LOST, /* u32 role, u32 instance: reconnect us */
	IMSG_BLOCK_ADD, /* from netd: u8 family (4 or 6), the 4 or 16
	                   address bytes, str reason: a block action ended
	                   a session of this client */
	/* parent <-> scand loader: see common/proc.h */
	IMSG_LOADER_FD,
	IMSG_LOADER_FORK,
	IMSG_LOADER_FORKED,
	IMSG_LOADER_STALE,
	/* peer <-> peer */
	IMSG_HELLO, /* u32 role, u32 instance */
	/* netd <-> scand: see scan.h */
	IMSG_SCAN_REQ,
	IMSG_SCAN_RES,
	IMSG_TLS_START, /* netd -> tlsd: common/tls.h */
	IMSG_TLS_DONE, /* tlsd -> netd */
	/* imapgwctl <-> parent (control socket) */
	IMSG_CTL_STATUS,
	IMSG_CTL_AUDIT,
	IMSG_CTL_RELOAD,
	IMSG_CTL_VIOLATE, /* str role; test builds only */
	IMSG_CTL_BLOCKED, /* list the auto-block list */
	IMSG_CTL_UNBLOCK, /* u8 family (4 or 6), the 4 or 16 address bytes */
	IMSG_CTL_TEXT, /* a chunk of output text */
	IMSG_CTL_END, /* u32 exit code for imapgwctl */
	IMSG_MAX
};

const char *imsg_type_name(uint32_t);

#endif
