/*
 * IMAP framer: splits the byte stream netd relays into lines and literals
 * without buffering or rewriting it, so that literal payload is never read
 * as protocol, and enforces the line and literal limits.  Memory is constant:
 * payload bytes are skipped by arithmetic, line bytes are scanned once and
 * only the first FRAMER_CAPTURE bytes of each logical line are kept.
 *
 * A line ends at LF (CRLF or bare LF).  A line segment whose last bytes
 * before the line end are a literal marker is followed by that many bytes of
 * payload, after which the same logical line continues with a new segment:
 *
 *	marker = ["~"] "{" 1*20DIGIT ["+"] "}"	("+" only from the client)
 *
 * The marker must touch the line end ("}" CRLF or "}" LF) and must be
 * outside a quoted string.  Decisions where peers could disagree fail
 * closed (the session is ended) instead of guessing:
 *   - the last brace group of a segment ends in "}" but is not exactly a
 *     marker ("{}", "{12a}", "{5-}", "{+5}", "{{5}", "{5} " + CRLF): error;
 *   - a marker inside a quoted string left open at the line end: error;
 *   - "{n+}" or "~{n+}" from the server: error;
 *   - more than 20 digits, or a value above UINT64_MAX: error.
 * RFC 7888 LITERAL- has no syntax of its own: it is "{n+}" limited to 4096
 * bytes (set max_nonsync to 4096 to enforce that), so "{n-}" is malformed.
 * A "~" before the marker (RFC 3516 literal8) does not change framing.
 *
 * The line limit applies to each segment and counts every byte except the
 * terminating LF or CRLF; the error is raised at the first byte past it.
 */
#ifndef IMAPGW_FRAMER_H
#define IMAPGW_FRAMER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FRAMER_CAPTURE 128 /* bytes of each logical line kept */

enum framer_dir {
	FRAMER_CLIENT, /* client -> server: commands */
	FRAMER_SERVER /* server -> client: responses */
};

/*
 * Called once per complete logical line.  prefix holds the first
 * FRAMER_CAPTURE bytes of the line's segments joined without their line
 * ends and without literal payload ("a LOGIN {5+} {8+}"), NUL-terminated;
 * truncated is set when the line had more.  The prefix can still contain
 * credentials ("a LOGIN user pass"): log only the tag and command word.
 */
typedef void (*framer_line_cb)(
    void *arg, const char *prefix, size_t len, int truncated);

struct framer {
	/* Set by framer_init(); the caller may change them before scanning. */
	enum framer_dir dir;
	size_t max_line; /* bytes of one line segment */
	uint64_t max_literal; /* bytes of one literal */
	uint64_t max_nonsync; /* "{n+}" literal if lower; 0: no own limit */
	int hold_sync; /* client: stop at "{n}", see framer_cont() */
	framer_line_cb on_line;
	void *arg;

	/* Counters and the error; read-only for the caller. */
	uint64_t bytes; /* accepted; after an error: its offset */
	uint64_t lines; /* complete logical lines */
	uint64_t literals; /* literals entered */
	uint64_t literal_bytes; /* payload bytes skipped */
	char err[128]; /* reason after framer_scan() returned -1 */

	/* Scanner state, private. */
	int state; /* FRAMER_S_* in framer.c */
	uint64_t left; /* payload bytes still to skip, or held size */
	size_t seglen; /* bytes of the segment so far, no LF */
	int lastcr; /* last segment byte was CR */
	int quoted; /* inside "..." */
	int escaped; /* after a backslash inside "..." */
	int brace; /* brace group state, BR_* in framer.c */
	int br_bad; /* group is not a well-formed marker */
	int br_plus; /* group has the "+" */
	unsigned br_digits;
	unsigned br_trail; /* bytes after "}" (SP, HTAB, CR only) */
	uint64_t br_val;
	size_t caplen; /* bytes in cap */
	uint64_t capdrop; /* line bytes not captured */
	char cap[FRAMER_CAPTURE + 1];
};

/* Start a direction with no data seen; limits as in struct framer. */
void framer_init(
    struct framer *, enum framer_dir, size_t max_line, uint64_t max_literal);

/*
 * Scan len bytes that are about to be forwarded; any split of the stream
 * gives the same result.  Returns the number of bytes that may be forwarded
 * (len, or less when hold_sync stops at a synchronizing literal), or -1
 * with err set on a protocol violation; after -1 every call returns -1.
 */
ssize_t framer_scan(struct framer *, const uint8_t *, size_t);

/*
 * With hold_sync set, a client segment ending in "{n}" or "~{n}" stops the
 * scan right after its line end: framer_waiting() is then true and
 * framer_scan() accepts nothing.  The relay forwards what was accepted,
 * holds the rest, and calls framer_cont() with accepted = 1 when the server
 * sends a "+" continuation (the payload follows) or 0 when it answers the
 * command with a tagged response instead (the client must not send the
 * payload; the next bytes are a new command).  Without this, a rejected
 * synchronizing literal would let the client smuggle commands past the
 * gateway as "payload".
 */
int framer_waiting(const struct framer *);
/* Between logical lines: a line injected here cannot split one. */
int framer_at_boundary(const struct framer *);
void framer_cont(struct framer *, int accepted);

/*
 * Capture of the logical line in progress, NUL-terminated, as on_line
 * would get it (for the tag of a held line, or to log where an error was).
 */
const char *framer_prefix(const struct framer *, size_t *len);

/* Payload bytes still to come of the literal being skipped, else 0. */
uint64_t framer_literal_left(const struct framer *);
/* Size of the literal a held line announced (framer_waiting()). */
uint64_t framer_held_size(const struct framer *);

#endif
