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
 *	u32 nsect	sections wanted if the message is rewritten, 0..64
 *	nsect times:
 *	  u32 binary	0: BODY[spec], 1: BINARY[spec] (RFC 3516)
 *	  str spec	the text between the brackets as the client wrote
 *			it ("", "TEXT", "2.MIME", "HEADER.FIELDS (From To)"),
 *			at most SCAN_MAX_SECT_SPEC bytes; no partial <o.n>
 *
 *	then, optional (absent in requests that end after the sections;
 *	netd always sends them):
 *	u32 flags	SCAN_F_* below
 *	str policy	the policy name, for the log line of the verdict
 *
 * A request that ends after size is an old-format one: nsect = 0, and
 * its answer is old-format too (it ends after body_len).  More
 * than SCAN_MAX_SECT sections, a spec longer than SCAN_MAX_SECT_SPEC or
 * a binary other than 0 or 1 is refused (SCAN_ERROR, the reason says
 * why); a frame cut short or with bytes left over is malformed and
 * closes the channel.  The frame limit (IMSG_MAX_FRAME) bounds the
 * request as a whole: netd must not ask for more than fits.
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
 *			(each range 0 unless the verdict is CHANGED)
 *	u32 nsect	the request's nsect if verdict is CHANGED, else 0;
 *			absent if the request had no nsect
 *	nsect times, in the request's order:
 *	  u32 status	SCAN_SECT_* below
 *	  u64 off, len	the section's content inside the result fd
 *			(off is 0 when len is; len is 0 unless the status
 *			is OK or LITERAL8)
 *	then, only if the request had flags:
 *	u64 json_off, json_len	the report as JSON, inside the result fd
 *	u64 text_off, text_len	the report for people, inside the result fd
 *			(both 0 unless the request asked for SCAN_F_REPORT;
 *			with SCAN_F_REPORT the result fd is always there,
 *			and msg_len is 0 when the verdict is not CHANGED)
 *	u64 env_off, env_len	its ENVELOPE (IMAP syntax with its
 *			parentheses, no "ENVELOPE"), inside the result fd;
 *			both 0 unless the verdict is CHANGED; at most 1 MiB
 *
 * The report (imapgwd -S, the offline mode) is every finding of the
 * pipeline, the action taken and why.  JSON:
 *   {"verdict":"changed","action":"strip","reason":"...","size":1234,
 *    "parts":3,"time_ms":2,"findings":[{"stage":"antivirus",
 *    "part":"2","filename":"eicar.com","type":"application/x-msdos",
 *    "detected":"text/plain","rule":"...","virus":"...","sha256":"...",
 *    "md5":"...","level":"high","category":"confirmed","score":1000.0,
 *    "action":"strip","detail":"..."}, ...],"envelope":"(...)"}
 * with only the keys that apply to a finding; stage is one of header,
 * content_type, filename, antivirus, apt, spam, error, oversize.
 * "envelope" is there only when the verdict is CHANGED: the ENVELOPE of
 * the answer, its bytes from 0x80 up written as \u0080..\u00ff (Latin-1
 * code points), so that a reader gets the exact bytes back.
 *
 * The result fd holds [message][BODYSTRUCTURE][BODY][ENVELOPE] and then
 * the sections that are not byte ranges of the message.  A section that is
 * (BODY[], BODY[TEXT], BODY[2], BODY[2.MIME], ... of a message that
 * uses CRLF and has no NUL) points into the message, and sections that
 * ask for the same thing share bytes: netd must rely on nothing but
 * off + len <= the fd's size.  It slices <origin.count> partials itself.
 *
 * A section's content is what Dovecot 2.3 sends for that FETCH item of
 * the sanitized message, byte for byte (the message taken with every
 * line end as CRLF, as a stored message is served):
 *   - part numbers as in Dovecot (RFC 3501 6.4.5 and its quirks: a
 *     leaf is its own part 1, so "1.1" of a text part in a multipart is
 *     that part; "0" of a multipart is its first part; n.HEADER, n.TEXT
 *     and n.HEADER.FIELDS only for message/rfc822 parts; n.MIME of a
 *     single-part message is the message header);
 *   - HEADER.FIELDS (.NOT): the fields in message order with their
 *     continuation lines, then the empty line (always for the top-level
 *     HEADER.FIELDS; otherwise only if the header has one);
 *   - BODY: NUL becomes 0x80;
 *   - BINARY[] / BINARY[n] / BINARY[TEXT] / BINARY[n.TEXT]: every
 *     base64 and quoted-printable body below the part decoded, their
 *     Content-Transfer-Encoding field rewritten to binary where a
 *     header is included; other BINARY sections are as BODY.
 *
 * The ENVELOPE is what Dovecot 2.3 answers for FETCH ENVELOPE of the
 * message, byte for byte (as BODYSTRUCTURE and BODY are): date,
 * subject, from, sender, reply-to, to, cc, bcc, in-reply-to, message-id
 * from the raw header text (no RFC 2047 decoding; NUL as U+FFFD);
 * of a string field the last one counts (its line ends removed, the
 * subject's blanks folded), of an address field every one, their lists
 * appended; sender and reply-to with no address are from's; addresses
 * as ((name adl mailbox host) ...) parsed as Dovecot's message-address.c
 * does (MISSING_MAILBOX, MISSING_DOMAIN, SYNTAX_ERROR, INVALID_ROUTE),
 * a group as (NIL NIL "group" NIL) ... (NIL NIL NIL NIL); a string is
 * a literal when it has CR, LF, 8-bit or more than four quotes and
 * backslashes (the subject and names: any quote, backslash, NUL, 8-bit
 * byte or blank that was folded), else quoted; NIL for what is absent.
 *
 * SCAN_F_CUT: the message is one the gateway sanitized before (its
 * verdict cache).  scand does not judge it: no antivirus, no rules, no
 * spam check, no "message judged" log line (debug only).  The answer is
 * CHANGED, action ACT_ALLOW (nothing was applied now), reason "already
 * sanitized", the message as it was sent (msg range = the request's
 * bytes), its BODYSTRUCTURE, BODY, ENVELOPE and the sections asked for,
 * as for any CHANGED answer.  With SCAN_APPEND it is SCAN_ERROR: an
 * upload is never rewritten.
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
	SCAN_CHANGED, /* pass the sanitized message from the result fd */
	SCAN_REJECT, /* APPEND only: refuse the upload with reason */
	SCAN_DROP, /* end the client's session (action drop/block) */
	SCAN_ERROR /* could not be scanned: netd applies on_error */
};

/*
 * What the server answers for a section:
 *   OK           off/len is the content, sent as a literal
 *   NONE         no such part, or the section does not apply to it
 *                (2.TEXT of a text part): an empty string, len 0
 *   UNKNOWN_CTE  BINARY: a part below has an encoding that cannot be
 *                decoded: NO [UNKNOWN-CTE]
 *   LITERAL8     BINARY: off/len is the content, sent as a literal8
 *                ~{n} (it was decoded, or it has NUL)
 *   BADDATA      BINARY: broken base64 or quoted-printable below the
 *                part: NO [PARSE]
 *   BAD          not a valid section: the command is BAD
 */
enum scan_sect_status {
	SCAN_SECT_OK = 0,
	SCAN_SECT_NONE,
	SCAN_SECT_UNKNOWN_CTE,
	SCAN_SECT_LITERAL8,
	SCAN_SECT_BADDATA,
	SCAN_SECT_BAD
};

/* Request flags. */
#define SCAN_F_REPORT 0x1 /* answer with the report (offline mode) */
/* The message is one the gateway already sanitized (from the verdict
 * cache): do not scan it; answer CHANGED with the message as it is, its
 * BODYSTRUCTURE, BODY, ENVELOPE and the sections asked for. */
#define SCAN_F_CUT 0x2
#define SCAN_F_ALL 0x3

#define SCAN_MAX_REASON 1024
/* Bytes of the BODYSTRUCTURE, the BODY and the ENVELOPE of an answer:
 * netd refuses larger ones; scand answers SCAN_ERROR instead. */
#define SCAN_MAX_STRUCT (1024 * 1024)
#define SCAN_MAX_SECT 64 /* sections in one request */
#define SCAN_MAX_SECT_SPEC 1024 /* bytes of one section spec */

#endif
