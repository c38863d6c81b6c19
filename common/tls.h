/*
 * The TLS contract between netd and tlsd.
 *
 * netd never holds key material and never runs TLS: for a TLS
 * connection (an implicit TLS listener, a client's STARTTLS, a backend
 * with tls: implicit or starttls) it hands the TCP socket to a tlsd
 * worker and gets back one end of a socketpair that carries the
 * plaintext.  tlsd runs the handshake, then relays between the TLS
 * socket and its end of the socketpair until either side ends:
 *   - plaintext EOF from netd: close_notify to the peer, shutdown(WR);
 *   - close_notify or EOF from the peer: shutdown(WR) of the plaintext
 *     end, so netd reads EOF (a TCP EOF without close_notify is logged as
 *     a truncation, and treated the same);
 *   - a reset from the peer: what it sent before reaches netd, what netd
 *     had for it is dropped, then both are closed (netd reads EOF);
 *   - an error either way: both are closed.
 *
 * netd -> tlsd  IMSG_TLS_START, fd = the TCP socket (tlsd owns it)
 *	u64 id		netd's id, echoed back
 *	u32 side	TLS_SIDE_SERVER (we answer a client) or
 *			TLS_SIDE_CLIENT (we connect to a backend)
 *	str policy	policy name (server side: its certificates and
 *			profile; logs)
 *	str server	server pool name (client side: its CA, profile,
 *			verification; logs)
 *	str name	client side: the host name sent as SNI and checked
 *			against the certificate ("" for none: the address
 *			is checked instead); server side: "" or, for a
 *			policy with a Proxy Authority (tls.authority), the
 *			names to present: the "names" of the DONE of the
 *			connection to the real server; tlsd presents a
 *			certificate for them that it signs with the
 *			authority (made on the fly, cached)
 *	str peer	the peer's address, for logs ("127.0.0.1:4321")
 *	str attest	server side with names: the "attest" of that same
 *			DONE; tlsd mints only for names a tlsd attested
 *			(below), so that netd cannot have a certificate
 *			signed for names no real server showed; else ""
 *	u32 flags	TLS_START_*: 0, or server side
 *			TLS_START_SPEAKS_FIRST: the gateway speaks first once
 *			TLS is up (the greeting of an implicit listener), so
 *			tlsd holds its last handshake flight in the socket
 *			(TCP_CORK) until that first data, and both leave
 *			together; the kernel sends what is held after 200 ms
 *			in any case.  Not for STARTTLS: there the client
 *			speaks first.  Other bits: malformed
 *
 * tlsd -> netd  IMSG_TLS_DONE, fd = netd's plaintext end (ok only)
 *	u64 id
 *	u32 ok		1: handshake done, the fd carries the plaintext;
 *			0: failed, the TCP socket is closed
 *	str error	why it failed ("" when ok), one line for the log:
 *			"certificate verify failed: hostname mismatch"
 *	str version	"TLSv1.3"
 *	str cipher	"TLS_AES_256_GCM_SHA384"
 *	str sni		server side: the name the client asked for ("" none)
 *	str subject	client side: the server certificate's subject
 *	u32 resumed	1 if the session was resumed
 *	str names	client side: the server certificate's names, for a
 *			certificate that stands for it: "DNS:a.example,
 *			DNS:*.b.example,IP:192.0.2.1" (its subjectAltNames;
 *			its CN as DNS: when it has no DNS one), at most
 *			TLS_MAX_NAMES bytes, cut at a whole name; server
 *			side ""
 *	str attest	client side, a pool of a policy with to:
 *			original-destination and a Proxy Authority:
 *			"EXPIRY:MAC", at most TLS_MAX_ATTEST bytes.  MAC is
 *			HMAC-SHA256 (hex) of "EXPIRY:" and names, keyed
 *			with a key derived from the authority's private
 *			key (which only tlsd holds, so every tlsd worker
 *			has the same key); EXPIRY is CLOCK_MONOTONIC
 *			seconds, TLS_ATTEST_SECS after the handshake;
 *			else ""
 *
 * A malformed frame closes the channel (the receiver logs why).  tlsd
 * answers every START exactly once; netd gives a handshake the policy's
 * connect timeout and then drops the session (tlsd's own handshake
 * timeout ends it there too).
 *
 * Details as tlsd implements them (tlsd/conn.c):
 *   - START is malformed (channel closed) without an fd, with a side
 *     other than the two, or with a string longer than TLS_MAX_NAME
 *     (name: TLS_MAX_NAMES; client side, a name longer than
 *     TLS_MAX_NAME gets DONE ok=0 "bad server name: ...");
 *     the header's peer id is not used (DONE carries 0; match on id);
 *   - an unknown policy or server pool, a policy without a usable
 *     certificate, a config not received yet: DONE ok=0 with the reason
 *     ("unknown policy imap-in", ...), not a channel error;
 *   - names lists (tlsd/mint.c): comma-separated, no spaces, each item
 *     DNS:<host name> (LDH labels of 1..63 bytes, at most 253 bytes, a
 *     leading "*." followed by two labels or more) or IP:<IPv4 or IPv6
 *     address> (DONE writes IPv6 compressed), at most 64 items; DONE's
 *     names are the SAN DNS and IP entries in order, the CNs as DNS:
 *     when there is no DNS entry (as X509_check_host() has it), what
 *     the parser would refuse left out, cut at a whole name at 64 items
 *     or TLS_MAX_NAMES bytes;
 *   - server side with names, a policy with a Proxy Authority: a list
 *     the parser refuses gets DONE ok=0 "bad names: ..."; the minted
 *     certificate is made for exactly those names (CN the first DNS
 *     name of at most 64 bytes, else the first address), valid 7 days
 *     (never beyond the authority), with the chain [leaf, authority,
 *     the authority's own chain]; without names, the policy's own
 *     certificate, or DONE ok=0 "no names for the Proxy Authority"; a
 *     policy without an authority ignores names; names whose attest
 *     is missing, does not match them or has expired get DONE ok=0
 *     "names not attested by tlsd: ..." (before they are parsed);
 *   - client side, name "": the address getpeername() gives is checked
 *     (IP SAN), no SNI; a name that is an IP literal: the same, no SNI;
 *   - DONE strings: error at most TLS_MAX_ERROR bytes, sni and
 *     subject (RFC 2253, cut there) at most TLS_MAX_NAME, version and
 *     cipher short; sni is "" on the client side, subject "" on the
 *     server side;
 *   - after netd's EOF (shutdown(SHUT_WR) or close) tlsd still relays
 *     the peer's data to netd until the peer closes, for at most a
 *     minute; netd that wants no more just closes its end;
 *   - when netd's channel to tlsd closes, handshakes in progress are
 *     dropped (their TCP sockets closed); relays go on until their
 *     plaintext ends close.
 */
#ifndef IMAPGW_TLS_H
#define IMAPGW_TLS_H

enum tls_side { TLS_SIDE_SERVER = 0, TLS_SIDE_CLIENT = 1 };

#define TLS_MAX_NAME 255 /* SNI, host names */
#define TLS_MAX_ERROR 512
#define TLS_MAX_NAMES 2048 /* the names field of DONE, START's name */
#define TLS_HANDSHAKE_TIMEOUT_MS 30000
#define TLS_MAX_ATTEST 96 /* DONE's and START's attest */
#define TLS_START_SPEAKS_FIRST 0x1 /* START's flags */
#define TLS_ATTEST_SECS 120 /* an attest is good for as long */

#endif
