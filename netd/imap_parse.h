/*
 * IMAP command and response parser for complete logical lines.
 *
 * The engine assembles a logical line as the framer (framer.h) delimits
 * it: the bytes exactly as on the wire, including every literal marker
 * ("{n}", "{n+}", "~{n}" and its CRLF), with each literal's payload either
 * inline (the n bytes follow the marker) or spooled (the payload went to a
 * file and the buffer continues right after the marker's line end).  The
 * final CRLF (or LF) of the line may be present or not.  Spooled literals
 * are described by a table in ascending order of offset:
 *
 *	struct imap_spool { size_t at; uint64_t len; };
 *
 * "at" is the offset in the buffer where the payload would have started,
 * i.e. just after the marker's LF; "len" must equal the marker's n.  Every
 * entry must belong to a literal marker of the line, in order; otherwise
 * the parse fails.  A literal with no entry at its offset is inline and its
 * n bytes must be in the buffer.
 *
 * Both parsers fill a caller-owned result structure, never allocate, never
 * recurse (nested lists are skipped with a counter per level, at most
 * IMAP_MAX_DEPTH levels), never read outside [buf, buf + len), and return 0
 * or -1 with a message in ->err ("unexpected character ')' at offset 17").
 * Literal payload is consumed as argument data by length, never looked at.
 * Results point into the buffer (spans); nothing is copied, so a result is
 * valid as long as the buffer is.  The result structures are large (about
 * 33 KB each): keep one per worker as scratch, not one per session.  A
 * parse resets only their scalar fields: array entries are valid up to
 * their counts (nmsg, natt, nitem, npair, ncap, min(nlit, IMAP_MAX_LITS)),
 * and after a failed parse only err is meaningful.
 *
 * Span conventions (struct imap_span): off is a byte offset from the start
 * of buf, [off, off + len) is half-open and counts only bytes that are in
 * the buffer.  A spooled literal therefore contributes only its marker
 * ("{n}\r\n"): a span that ends with a spooled literal ends at the spool's
 * "at".  An empty span has len 0 (off is then where it would be).  Spans of
 * tokens never include separating SP; the line's final CRLF is never part
 * of any span.
 *
 * Strings (struct imap_str): tok is the token as on the wire (the atom,
 * NIL, "..." with its quotes, or marker plus inline payload); data/len the
 * content: the atom, the bytes between the quotes (still escaped when
 * IMAP_STR_ESCAPED is set: use imap_str_copy()), or the literal payload.
 * For a spooled literal, spool >= 0 is its index in the table, data is the
 * spool's "at" and the len payload bytes are NOT in the buffer.
 *
 * FETCH response items (struct imap_item): item covers the whole item from
 * the first byte of its name to the last byte of its value; name covers the
 * name with section and origin ("BODY[1.2]<0>"); val the value.  Items are
 * separated by exactly one SP inside the list's parentheses (fetch.list
 * covers "(" ... ")"; a server's SP before ")" is tolerated), so an item
 * is cut out with imap_item_cut(), and a value is replaced by splicing
 * over val (for a spooled literal, val is the marker; the payload comes
 * from the spool file).  Rewriting a line: copy buf up to a span, write
 * the new bytes, continue after the span; spool payloads go out where
 * their markers end.
 *
 * Syntax accepted (RFC 3501, RFC 9051, RFC 7888, RFC 3516, RFC 3502,
 * RFC 2971, RFC 4466): single SP between tokens, quoted strings with only
 * \" and \\ escapes and no CR, LF or NUL, atoms of printable US-ASCII or
 * 8-bit bytes without atom-specials, numbers of at most 20 digits within
 * their type (32-bit for message numbers and UIDs, 64-bit for sizes,
 * partial origins and MODSEQ).  Inside values that are only skipped
 * (BODYSTRUCTURE, ENVELOPE, unknown items, raw arguments) the parser is
 * lenient about extra SP and about tokens next to parentheses ("(1)(2)" in
 * THREAD, "((a)(b) c)" in BODYSTRUCTURE), but never about what decides
 * framing: quotes, literals, CR and LF.  "{n+}" is accepted only in
 * commands, "~{n}" only where literal8 is allowed (APPEND data, BINARY
 * values, skipped values).  Where the framer and the grammar could
 * disagree, the parse fails: "abc{5}" (a marker inside an atom) and text
 * that ends in "{n}" right before the line end (a literal to the framer)
 * are errors.  No decision depends on a byte of literal payload, so a line
 * parses the same with its literals inline or spooled (the fuzz harnesses
 * check exactly that).
 *
 * Limits: IMAP_MAX_DEPTH is 256, not less, because the skip keeps only a
 * counter per level (1 KB of stack) while real BODYSTRUCTUREs of nested
 * message/rfc822 and multipart reach ~2 levels per MIME level, and a
 * session must not die on a deeply nested (possibly malicious) message.
 * Raw untagged data (SEARCH, THREAD, ...) has no per-list element limit,
 * only the depth; everything else has IMAP_MAX_ITEMS per list.
 */
#ifndef IMAPGW_IMAP_PARSE_H
#define IMAPGW_IMAP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define IMAP_MAX_DEPTH 256 /* nested parentheses in any value */
#define IMAP_MAX_ITEMS 4096 /* elements of one list in a command or FETCH */
#define IMAP_MAX_FETCH 64 /* fetch-atts in a command, items in a FETCH */
#define IMAP_MAX_PARTS 32 /* levels of a section part path "1.2.3" */
#define IMAP_MAX_APPEND 64 /* messages of one (MULTI)APPEND */
#define IMAP_MAX_ID 30 /* ID field/value pairs (RFC 2971 3.3) */
#define IMAP_MAX_CAPS 256 /* capability atoms of one response */
#define IMAP_MAX_LITS 64 /* literals recorded per line (more: overflow) */
#define IMAP_ERR_LEN 128

struct imap_spool {
	size_t at; /* offset in buf where the payload would start */
	uint64_t len; /* payload length, equal to the marker's n */
};

struct imap_span {
	size_t off;
	size_t len;
};

/* Literal flags, in imap_str.flags and imap_lit.flags. */
#define IMAP_LIT_NONSYNC 0x01 /* "{n+}" (client only) */
#define IMAP_LIT_BINARY 0x02 /* "~{n}" literal8 */
#define IMAP_STR_ESCAPED 0x04 /* quoted string contains \" or \\ */

enum imap_str_kind {
	IMAP_STR_NONE, /* absent */
	IMAP_STR_NIL,
	IMAP_STR_ATOM, /* astring as atom */
	IMAP_STR_QUOTED,
	IMAP_STR_LITERAL /* {n}, {n+} or ~{n}: see flags */
};

struct imap_str {
	enum imap_str_kind kind;
	unsigned flags; /* IMAP_LIT_*, IMAP_STR_ESCAPED */
	int spool; /* literal: index in the spool table, or -1 inline */
	struct imap_span tok; /* token in buf (spooled literal: marker only) */
	size_t data; /* first content byte (spooled: the spool's "at") */
	uint64_t len; /* content bytes (quoted: escaped, as in buf) */
};

/* Every literal of a line in order (the first IMAP_MAX_LITS of them). */
struct imap_lit {
	size_t off; /* the "~" or "{" */
	size_t mlen; /* marker bytes up to and including its LF */
	uint64_t len; /* payload bytes: at off + mlen, or in the spool */
	int spool; /* index in the spool table, or -1 inline */
	unsigned flags; /* IMAP_LIT_NONSYNC, IMAP_LIT_BINARY */
};

/*
 * Fetch attributes (command) and FETCH items (response), one enum.
 * IMAP_FA_BODY is "BODY" without section (bodystructure without
 * extensions); "BODY[...]" and "BODY.PEEK[...]" are IMAP_FA_BODY_SECTION,
 * "BINARY[...]"/"BINARY.PEEK[...]" IMAP_FA_BINARY (IMAP_FA_PEEK in flags).
 */
enum imap_fa {
	IMAP_FA_OTHER, /* unknown: name (and any "[...]", args) as spans */
	IMAP_FA_UID,
	IMAP_FA_FLAGS,
	IMAP_FA_INTERNALDATE,
	IMAP_FA_RFC822, /* == BODY[] (sets \Seen) */
	IMAP_FA_RFC822_HEADER, /* == BODY.PEEK[HEADER] */
	IMAP_FA_RFC822_TEXT, /* == BODY[TEXT] */
	IMAP_FA_RFC822_SIZE,
	IMAP_FA_ENVELOPE,
	IMAP_FA_BODY,
	IMAP_FA_BODYSTRUCTURE,
	IMAP_FA_BODY_SECTION,
	IMAP_FA_BINARY,
	IMAP_FA_BINARY_SIZE,
	IMAP_FA_MODSEQ, /* RFC 7162 */
	IMAP_FA_PREVIEW, /* RFC 8970: text taken from the message */
	IMAP_FA_SAVEDATE, /* RFC 8514 */
	IMAP_FA_EMAILID, /* RFC 8474 */
	IMAP_FA_THREADID, /* RFC 8474 */
	IMAP_FA_ALL, /* macros; only in imap_cmd.fetch.macro */
	IMAP_FA_FAST,
	IMAP_FA_FULL
};

/* imap_fatt.flags */
#define IMAP_FA_PEEK 0x01 /* BODY.PEEK / BINARY.PEEK */
#define IMAP_FA_MACRO 0x02 /* expanded from ALL/FAST/FULL */

enum imap_sect_text {
	IMAP_SECT_NONE, /* "[]" or "[1.2]": whole message or part body */
	IMAP_SECT_HEADER,
	IMAP_SECT_HEADER_FIELDS,
	IMAP_SECT_HEADER_FIELDS_NOT,
	IMAP_SECT_TEXT,
	IMAP_SECT_MIME /* only after a part path */
};

struct imap_section {
	struct imap_span span; /* "[" ... "]" */
	unsigned npart; /* 0: top level */
	uint32_t part[IMAP_MAX_PARTS]; /* "1.2.3" -> 1, 2, 3 */
	struct imap_span parts; /* "1.2.3" in buf, empty if npart == 0 */
	enum imap_sect_text text;
	struct imap_span fields; /* HEADER.FIELDS list "(" ... ")" */
	unsigned nfields; /* header field names in it (astrings) */
};

struct imap_fatt {
	enum imap_fa kind;
	unsigned flags; /* IMAP_FA_PEEK, IMAP_FA_MACRO */
	struct imap_span name; /* command: whole attribute incl. section and
				  partial; response: name incl. section and
				  origin; macro: the macro word */
	int has_section;
	struct imap_section sect;
	int has_partial;
	uint64_t origin; /* <origin.count> (response: <origin>) */
	uint64_t count; /* command only; nonzero */
	struct imap_span args; /* command: "(" ... ")" after the attribute
				  (e.g. PREVIEW (LAZY)), else empty */
};

/* One FETCH response item. */
struct imap_item {
	struct imap_fatt att; /* kind, name, section, origin */
	struct imap_span item; /* name through value */
	struct imap_span val; /* the value */
	/*
	 * nstring values (BODY[...], BINARY[...], RFC822, RFC822.HEADER,
	 * RFC822.TEXT, INTERNALDATE, PREVIEW, SAVEDATE): str.kind is NIL,
	 * QUOTED or LITERAL; for other values IMAP_STR_NONE.
	 */
	struct imap_str str;
	/* UID, RFC822.SIZE, BINARY.SIZE, MODSEQ (the number inside "()") */
	int has_num;
	uint64_t num;
	/* Spooled literals inside val (any kind of value): indices
	 * [spool_first, spool_first + nspool) of the spool table. */
	int spool_first;
	unsigned nspool;
};

struct imap_id {
	int nil; /* "ID NIL" */
	struct imap_span list; /* "(" ... ")", empty for NIL */
	unsigned npair;
	struct {
		struct imap_str key; /* string */
		struct imap_str val; /* nstring */
		struct imap_span pair; /* key through value */
	} pair[IMAP_MAX_ID];
};

/* ------------------------------------------------------------------ */
/* Commands */

enum imap_cmd_kind {
	IMAP_CMD_OTHER, /* unknown command word: see name */
	IMAP_CMD_CAPABILITY,
	IMAP_CMD_NOOP,
	IMAP_CMD_LOGOUT,
	IMAP_CMD_STARTTLS,
	IMAP_CMD_AUTHENTICATE,
	IMAP_CMD_LOGIN,
	IMAP_CMD_ID,
	IMAP_CMD_SELECT,
	IMAP_CMD_EXAMINE,
	IMAP_CMD_CREATE,
	IMAP_CMD_DELETE,
	IMAP_CMD_RENAME,
	IMAP_CMD_SUBSCRIBE,
	IMAP_CMD_UNSUBSCRIBE,
	IMAP_CMD_LIST,
	IMAP_CMD_LSUB,
	IMAP_CMD_STATUS,
	IMAP_CMD_APPEND,
	IMAP_CMD_CHECK,
	IMAP_CMD_CLOSE,
	IMAP_CMD_EXPUNGE,
	IMAP_CMD_SEARCH,
	IMAP_CMD_FETCH,
	IMAP_CMD_STORE,
	IMAP_CMD_COPY,
	IMAP_CMD_MOVE,
	IMAP_CMD_UID, /* only for "UID <unknown>": see subname */
	IMAP_CMD_IDLE,
	IMAP_CMD_DONE, /* the untagged IDLE terminator line "DONE" */
	IMAP_CMD_ENABLE,
	IMAP_CMD_NAMESPACE,
	IMAP_CMD_UNSELECT,
	IMAP_CMD_COMPRESS,
	IMAP_CMD_GETQUOTA,
	IMAP_CMD_GETQUOTAROOT,
	IMAP_CMD_SETQUOTA,
	IMAP_CMD_SORT,
	IMAP_CMD_THREAD,
	IMAP_CMD_ESEARCH, /* RFC 6237 multi-mailbox search */
	IMAP_CMD_GETACL,
	IMAP_CMD_SETACL,
	IMAP_CMD_DELETEACL,
	IMAP_CMD_LISTRIGHTS,
	IMAP_CMD_MYRIGHTS,
	IMAP_CMD_GETMETADATA,
	IMAP_CMD_SETMETADATA,
	/* Paths to message content or uploads the gateway must police: */
	IMAP_CMD_REPLACE, /* RFC 8508: an APPEND; parsed like one */
	IMAP_CMD_NOTIFY, /* RFC 5465: unsolicited FETCH of any item */
	IMAP_CMD_URLFETCH, /* RFC 4467 */
	IMAP_CMD_GENURLAUTH,
	IMAP_CMD_RESETKEY,
	IMAP_CMD_XLIST
};

struct imap_append_msg {
	struct imap_span msg; /* flags (or date, or data) through data */
	struct imap_span flags; /* "(" ... ")", empty when absent */
	int has_flags;
	struct imap_str date; /* quoted date-time, or IMAP_STR_NONE */
	/* The message: a literal ({n}, {n+}, ~{n}), inline or spooled;
	 * IMAP_STR_NONE for CATENATE. */
	struct imap_str data;
	int catenate; /* RFC 4469 CATENATE (...): span in ext */
	int utf8; /* RFC 6855 UTF8 (~{n}) */
	struct imap_span ext; /* CATENATE/UTF8 "(" ... ")" */
};

struct imap_cmd {
	enum imap_cmd_kind kind;
	int uid; /* "UID" prefix */
	struct imap_span tag; /* empty for DONE */
	struct imap_span name; /* command word as sent ("uid" for UID ...) */
	struct imap_span subname; /* UID sub-command word, else empty */
	/* after name (subname) and SP to line end; for LOGIN and
	 * AUTHENTICATE it covers the credentials: never log it */
	struct imap_span args;

	/* SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE STATUS
	 * APPEND REPLACE COPY MOVE: the mailbox; RENAME: mailbox2 too. */
	struct imap_str mailbox;
	struct imap_str mailbox2;
	/* FETCH STORE COPY MOVE, UID EXPUNGE, REPLACE: sequence set span */
	struct imap_span seqset;

	/* LOGIN: the user.  The password is parsed but not recorded
	 * (error messages never quote it); a literal password still
	 * appears in lit[] so a forwarder can re-encode it. */
	struct imap_str user;

	/* AUTHENTICATE: mechanism atom; the initial response (RFC 4959,
	 * "=" for empty) is a credential: has_ir and its span only. */
	struct imap_span mech;
	int has_ir;
	struct imap_span ir;

	struct imap_id id; /* ID */

	/* APPEND (MULTIAPPEND), REPLACE (one message) */
	unsigned nmsg;
	int catenate; /* some message uses CATENATE (unsupported) */
	struct imap_append_msg msg[IMAP_MAX_APPEND];

	/* FETCH, UID FETCH */
	struct {
		enum imap_fa macro; /* ALL/FAST/FULL, else IMAP_FA_OTHER */
		struct imap_span atts; /* "(...)", a single att, or macro */
		unsigned natt; /* macros expanded, IMAP_FA_MACRO set */
		struct imap_fatt att[IMAP_MAX_FETCH];
		struct imap_span modifiers; /* RFC 4466 "(CHANGEDSINCE 1)" */
	} fetch;

	unsigned nlit; /* literals of the line (may exceed IMAP_MAX_LITS) */
	int lit_overflow; /* nlit > IMAP_MAX_LITS: lit[] holds the first */
	struct imap_lit lit[IMAP_MAX_LITS];

	char err[IMAP_ERR_LEN];
};

int imap_parse_command(const uint8_t *buf, size_t len,
    const struct imap_spool *spools, size_t nspools, struct imap_cmd *cmd);

/* ------------------------------------------------------------------ */
/* Responses */

enum imap_resp_kind {
	IMAP_RESP_CONT, /* "+ ...": code (if "[...]") and text */
	IMAP_RESP_TAGGED, /* tag OK/NO/BAD [code] text */
	IMAP_RESP_COND, /* * OK/NO/BAD/BYE/PREAUTH [code] text */
	IMAP_RESP_CAPABILITY, /* * CAPABILITY atoms */
	IMAP_RESP_ID, /* * ID (...) / NIL */
	IMAP_RESP_EXISTS, /* * n EXISTS */
	IMAP_RESP_RECENT, /* * n RECENT */
	IMAP_RESP_EXPUNGE, /* * n EXPUNGE */
	IMAP_RESP_FETCH, /* * n FETCH (...) */
	IMAP_RESP_FLAGS, /* the rest: name and raw args */
	IMAP_RESP_LIST,
	IMAP_RESP_LSUB,
	IMAP_RESP_STATUS,
	IMAP_RESP_SEARCH,
	IMAP_RESP_ESEARCH,
	IMAP_RESP_ENABLED,
	IMAP_RESP_NAMESPACE,
	IMAP_RESP_VANISHED,
	IMAP_RESP_OTHER /* unknown "* word ..." or "* n word ..." */
};

enum imap_status {
	IMAP_ST_NONE,
	IMAP_ST_OK,
	IMAP_ST_NO,
	IMAP_ST_BAD,
	IMAP_ST_BYE,
	IMAP_ST_PREAUTH
};

enum imap_code_kind {
	IMAP_CODE_NONE, /* no "[...]" */
	IMAP_CODE_OTHER,
	IMAP_CODE_ALERT,
	IMAP_CODE_BADCHARSET,
	IMAP_CODE_CAPABILITY, /* atoms in imap_resp.cap[] */
	IMAP_CODE_PARSE,
	IMAP_CODE_PERMANENTFLAGS,
	IMAP_CODE_READ_ONLY,
	IMAP_CODE_READ_WRITE,
	IMAP_CODE_TRYCREATE,
	IMAP_CODE_UIDNEXT,
	IMAP_CODE_UIDVALIDITY,
	IMAP_CODE_UNSEEN,
	IMAP_CODE_APPENDUID,
	IMAP_CODE_COPYUID,
	IMAP_CODE_UIDNOTSTICKY,
	IMAP_CODE_HIGHESTMODSEQ,
	IMAP_CODE_NOMODSEQ,
	IMAP_CODE_MODIFIED,
	IMAP_CODE_CLOSED,
	IMAP_CODE_TOOBIG,
	IMAP_CODE_REFERRAL, /* RFC 2221: points the client elsewhere */
	IMAP_CODE_COMPRESSIONACTIVE,
	IMAP_CODE_OVERQUOTA,
	IMAP_CODE_LIMIT
};

struct imap_code {
	enum imap_code_kind kind;
	struct imap_span span; /* "[" ... "]" */
	struct imap_span name; /* "UIDVALIDITY" */
	struct imap_span args; /* after name and SP up to "]", or empty */
	int has_num; /* args is one number (UIDNEXT, UIDVALIDITY...) */
	uint64_t num;
};

struct imap_resp {
	enum imap_resp_kind kind;
	enum imap_status status; /* TAGGED, COND */
	struct imap_span tag; /* TAGGED */
	uint32_t num; /* EXISTS RECENT EXPUNGE FETCH; "* n word" OTHER */
	int has_num;
	struct imap_span name; /* status or data word ("OK", "FETCH") */
	struct imap_span args; /* after name and SP to line end */
	struct imap_code code; /* CONT TAGGED COND */
	struct imap_span text; /* CONT TAGGED COND: text after the code */

	/* CAPABILITY data or [CAPABILITY ...] code: the atoms, and the span
	 * from the first to the last atom (input of imap_capability_filter) */
	struct imap_span caps;
	unsigned ncap;
	struct imap_span cap[IMAP_MAX_CAPS];

	struct imap_id id; /* ID */

	struct {
		struct imap_span list; /* "(" ... ")" */
		unsigned nitem;
		struct imap_item item[IMAP_MAX_FETCH];
	} fetch;

	unsigned nlit;
	int lit_overflow;
	struct imap_lit lit[IMAP_MAX_LITS];

	char err[IMAP_ERR_LEN];
};

int imap_parse_response(const uint8_t *buf, size_t len,
    const struct imap_spool *spools, size_t nspools, struct imap_resp *resp);

/* ------------------------------------------------------------------ */
/* Helpers */

/*
 * The span to delete to remove FETCH item i from resp (which must be a
 * parsed IMAP_RESP_FETCH): the item and one adjacent SP (the one before it,
 * or after it for the first item).  Removing the only item leaves "()",
 * which is not valid IMAP: the caller must not do that.  -1 if i is out of
 * range.
 */
int imap_item_cut(
    const struct imap_resp *resp, unsigned i, struct imap_span *cut);

/* Case-insensitive comparison of an inline string's content (quoted:
 * unescaped) with a NUL-terminated string.  Spooled, NIL, NONE: 0. */
int imap_str_eq(const uint8_t *buf, const struct imap_str *s, const char *);

/*
 * Copy the content of an inline string (atom, quoted unescaped, inline
 * literal) to out and NUL-terminate it.  Returns its length, or -1 if it
 * does not fit in outlen - 1 bytes, is spooled, NIL or absent.
 */
ssize_t imap_str_copy(
    const uint8_t *buf, const struct imap_str *s, char *out, size_t outlen);

/*
 * Tokens of a span of a parsed line (a HEADER.FIELDS list, a BODYSTRUCTURE
 * value, raw arguments), with the same spool table as the parse:
 *
 *	struct imap_lexer lx;
 *	struct imap_tok t;
 *
 *	imap_lex_init(&lx, buf, len, spools, nspools, it->val);
 *	while (imap_lex_next(&lx, &t) == 1)
 *		...
 *
 * imap_lex_next() returns 1 with a token, 0 at the end of the span, -1 on
 * a syntax error (lx.err).  SP between tokens is skipped.  ATOM covers any
 * word of the skipped-value syntax ("\Seen", "1:*", "BODY[1]"), NIL is an
 * ATOM that reads "NIL"; strings come with their imap_str.
 */
enum imap_tok_kind {
	IMAP_TOK_ATOM,
	IMAP_TOK_NIL,
	IMAP_TOK_STRING, /* quoted or literal: see str */
	IMAP_TOK_LPAREN,
	IMAP_TOK_RPAREN
};

struct imap_tok {
	enum imap_tok_kind kind;
	struct imap_span span; /* the token in buf */
	struct imap_str str; /* ATOM, NIL, STRING */
};

struct imap_lexer {
	const uint8_t *buf;
	size_t pos, end;
	const struct imap_spool *sp;
	size_t nsp, spnext;
	char err[IMAP_ERR_LEN];
};

void imap_lex_init(struct imap_lexer *, const uint8_t *buf, size_t len,
    const struct imap_spool *spools, size_t nspools, struct imap_span within);
int imap_lex_next(struct imap_lexer *, struct imap_tok *);

/* Name of a kind, for logs ("FETCH", "BODY.PEEK", "ALERT"). */
const char *imap_cmd_name(enum imap_cmd_kind);
const char *imap_fa_name(enum imap_fa);

/* ------------------------------------------------------------------ */
/* Capability allow-list */

/*
 * Policy flags:
 *   IMAP_CAPF_STARTTLS		keep STARTTLS
 *   IMAP_CAPF_PRETLS		before TLS: keep only IMAP4rev1, IMAP4rev2,
 *				LOGINDISABLED and STARTTLS (as
 *				IMAP_CAPF_STARTTLS says)
 *   IMAP_CAPF_ADD_APPENDLIMIT	append APPENDLIMIT=max_size when the server
 *				advertises no APPENDLIMIT at all
 *   IMAP_CAPF_PREVIEW		keep PREVIEW (off by default: it shows text of
 *				the message as stored, not as rewritten)
 */
#define IMAP_CAPF_STARTTLS 0x01
#define IMAP_CAPF_PRETLS 0x02
#define IMAP_CAPF_ADD_APPENDLIMIT 0x04
#define IMAP_CAPF_PREVIEW 0x08

struct imap_capf {
	unsigned flags; /* IMAP_CAPF_* */
	uint64_t max_size; /* max_email_size; 0: no APPENDLIMIT rewrite */
};

/*
 * Filter the SP-separated capability atoms in in[0..len) (e.g. the caps
 * span of a parsed response) through the allow-list documented in
 * imap_parse.c, keeping their order and spelling, single-SP separated,
 * into out (NUL-terminated).  APPENDLIMIT=n becomes APPENDLIMIT=min(n,
 * max_size).  Returns the output length (without the NUL), or -1 if out is
 * too small; outlen >= len + 40 is always enough.
 */
ssize_t imap_capability_filter(const char *in, size_t len, char *out,
    size_t outlen, const struct imap_capf *policy);

/* Whether one capability atom passes the allow-list (as above). */
int imap_capability_allowed(
    const char *atom, size_t len, const struct imap_capf *policy);

#endif
