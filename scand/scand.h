/*
 * scand internals, shared by its files and regress/unit/test_scan.c.
 *
 *   mime.c           message structure (Dovecot's rules), GMime decoding
 *   bodystructure.c  IMAP BODY and BODYSTRUCTURE of a message
 *   av.c             libclamav engines, limits and scans
 *   rules.c          content type, file name and header rules (PCRE2)
 *   detect.c         content types detected by libmagic
 *   archive.c        members of ZIP, GZIP and tar archives (libarchive)
 *   apt.c            APT Blocker: attachment hash reputation
 *   spam.c           spamBlocker: builtin rules, spamd, rspamd
 *   common/lock.c    lock: the AES-256-GCM wrapper (shared with imapgwctl)
 *   scan.c           one request: validate, judge, rewrite, answer
 *   scand.c          the process: startup hooks and the peer channel
 */
#ifndef IMAPGW_SCAND_H
#define IMAPGW_SCAND_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "imsg.h"
#include "scan.h"

/*
 * mime.c: the parts of a message, their offsets and header fields.
 */

/* Dovecot's defaults (message_parser_settings): deeper or further parts
 * are not split, their bytes stay in the body of the part above. */
#define MIME_MAX_DEPTH 100
#define MIME_MAX_PARTS 10000
#define MIME_MAX_BOUNDARY 70 /* longer boundaries are cut, as Dovecot does */

struct mime_field {
	size_t off; /* first byte of the name */
	size_t end; /* after the line end of its last line */
	size_t name_len; /* without blanks before the colon */
	size_t value_off; /* after the colon and the blanks that follow */
	size_t value_end; /* before the line end of its last line */
};

enum mime_kind { MIME_LEAF = 0, MIME_MULTIPART, MIME_MESSAGE };

struct mime_part {
	struct mime_part *parent, *children, *next, *lastchild;
	int kind;
	int nchild;
	int is_mime; /* MIME-Version or Content-Type, or in a multipart */
	int digest_child; /* in multipart/digest: default message/rfc822 */
	size_t hdr_off; /* first header byte */
	size_t hdr_end; /* after the header as Dovecot counts it: the empty
	                   line included, unless a boundary cuts the header
	                   or follows it right away: then before the line
	                   end that precedes the boundary (body_off is after
	                   it, and the body is empty) */
	size_t body_off; /* first body byte, after the empty line */
	size_t body_end; /* before the line end that precedes a boundary */
	struct mime_field *fields;
	size_t nfields, capfields;
};

struct mime_msg {
	const uint8_t *data;
	size_t len;
	struct mime_part *root;
	size_t nparts;
	int limited; /* MIME_MAX_DEPTH or MIME_MAX_PARTS was reached */
	const char *eol; /* "\r\n" or "\n": what the message uses */
};

/* Parse data (not copied: it must outlive msg).  -1 only when out of
 * memory: every byte string is a message of some structure. */
int mime_parse(struct mime_msg *, const void *data, size_t len);
void mime_free(struct mime_msg *);
/* Line feeds in the body (BODYSTRUCTURE's body-fld-lines); counted
 * when asked, not at parse time: nested parts would count each byte
 * once per level. */
uint32_t mime_lines(const struct mime_msg *, const struct mime_part *);
/* The first field of that name (case-insensitive), or NULL. */
const struct mime_field *mime_field(
    const struct mime_msg *, const struct mime_part *, const char *name);
/* Its value with line ends removed, NUL-terminated; NULL if no memory. */
char *mime_field_value(const struct mime_msg *, const struct mime_field *);
/* The IMAP section number of a leaf ("1", "2.3"); of a multipart or
 * message part, the number of the part ("" for the whole message). */
void mime_section(const struct mime_part *, char *, size_t);
/* Content-Type's type and subtype, lowercase, "text"/"plain" if none. */
void mime_content_type(const struct mime_msg *, const struct mime_part *,
    char *type, size_t, char *subtype, size_t);
/* The body decoded from its Content-Transfer-Encoding (base64,
 * quoted-printable, uuencode) through GMime's filters, in out; other
 * encodings are copied.  -1 if no memory. */
int mime_decode_body(
    const struct mime_msg *, const struct mime_part *, struct buf *out);
/* The part's file name (Content-Disposition filename, else Content-Type
 * name), RFC 2231 and 2047 decoded by GMime, as UTF-8 without control
 * characters; "" if none. */
void mime_filename(
    const struct mime_msg *, const struct mime_part *, char *, size_t);
/* GMime's one-time setup; converters for the common mail charsets are
 * opened now, while they can still be loaded. */
void mime_init(void);

/*
 * bodystructure.c: RFC 3501 BODY (extended 0) and BODYSTRUCTURE
 * (extended 1), written the way Dovecot writes them.
 */
int bs_write(const struct mime_msg *, int extended, struct buf *);
/* The ENVELOPE of the message (its top-level header), with its
 * parentheses, as Dovecot answers FETCH ENVELOPE: the last field of each
 * name, raw header text (no RFC 2047 decoding), Sender and Reply-To
 * from From when absent, addresses as Dovecot's message-address.c
 * parses them, groups as (NIL NIL "name" NIL) ... (NIL NIL NIL NIL). */
int bs_envelope_write(const struct mime_msg *, struct buf *);
/* A Content-Type field read as Dovecot reads it: type and subtype,
 * lowercase ("" when broken), and its boundary parameter if asked
 * (RFC 2231 pieces merged, at most MIME_MAX_BOUNDARY bytes, NULL if
 * none or empty; to free). */
void bs_ctype(const struct mime_msg *, const struct mime_field *, char *type,
    size_t, char *subtype, size_t, char **boundary);

/*
 * section.c: the content of FETCH BODY[section] and BINARY[section] of a
 * message, as Dovecot 2.3 computes it (common/scan.h says what that is).
 */
enum sect_type {
	SECT_FULL = 0, /* BODY[] */
	SECT_MIME_BODY, /* BODY[2] */
	SECT_MIME, /* BODY[2.MIME] */
	SECT_HEADER, /* BODY[HEADER], BODY[2.HEADER] */
	SECT_FIELDS, /* BODY[HEADER.FIELDS (...)] */
	SECT_FIELDS_NOT, /* BODY[HEADER.FIELDS.NOT (...)] */
	SECT_TEXT /* BODY[TEXT], BODY[2.TEXT] */
};

/* A section spec resolved against a message. */
struct sect {
	int status; /* SCAN_SECT_BAD, SCAN_SECT_NONE, or 0 */
	int binary;
	int type;
	int top; /* no section number: the message itself */
	const struct mime_part *part; /* whose header or body, or root */
	char **fields; /* HEADER.FIELDS[.NOT]: the names */
	size_t nfields;
};

/* The content: a byte range of the message, or bytes of its own. */
struct sect_content {
	uint32_t status; /* SCAN_SECT_* */
	int ref; /* 1: the content is data[off, off + len) of the message */
	size_t off, len;
	struct buf data; /* ref 0: the content */
};

/* Parse spec (BINARY[spec] if binary) and find its part in msg.  -1
 * only when out of memory; an invalid spec is s->status SCAN_SECT_BAD. */
int sect_parse(
    const struct mime_msg *, int binary, const char *spec, struct sect *);
void sect_free(struct sect *);
/* Do two resolved sections ask for the same bytes? */
int sect_same(const struct sect *, const struct sect *);
/* The content of a resolved section; -1 if no memory.  Free with
 * sect_content_free. */
int sect_get(
    const struct mime_msg *, const struct sect *, struct sect_content *);
void sect_content_free(struct sect_content *);
/* A message as a server serves it: every bare LF and bare CR becomes
 * CRLF.  1 with the result in out, 0 if nothing changes, -1 no memory. */
int sect_crlf(const void *, size_t, struct buf *out);
/* Dovecot's quoted-printable decoding (trailing white space dropped,
 * hard line breaks as CRLF), appended to out.  0, 1 if the input is not
 * valid, -1 if no memory. */
int sect_qp_decode(const uint8_t *, size_t, struct buf *out);
/* Dovecot's base64 rules (white space skipped, nothing after the
 * padding, no truncated quantum), decoded by GMime.  0, 1, -1 as above. */
int sect_base64_decode(const uint8_t *, size_t, struct buf *out);

/*
 * av.c: libclamav.
 */
struct av_limits {
	uint64_t max_scan_size;
	uint64_t max_file_size;
	uint32_t max_recursion;
	uint32_t max_files;
	uint64_t max_scan_time_ms;
};

enum av_status { AV_CLEAN = 0, AV_VIRUS, AV_ERROR };

struct av_result {
	int status;
	char virus[128]; /* AV_VIRUS */
	char error[256]; /* AV_ERROR: why the scan did not complete */
};

struct av_engine;

/* cl_init and the libclamav message hook; once, before any engine. */
int av_init(void);
/* Load the databases of dir into a new compiled engine (bytecode in the
 * interpreter: no executable memory).  NULL and err set on failure. */
struct av_engine *av_engine_load(const char *dir, char *err, size_t);
void av_engine_free(struct av_engine *);
const char *av_engine_dir(const struct av_engine *);
unsigned int av_engine_sigs(const struct av_engine *);
/* Where libclamav writes its temporary files, as seen by the process. */
int av_engine_tmpdir(struct av_engine *, const char *dir);
/* Scan a buffer under limits.  A scan that cannot complete (engine
 * error, a limit, a timeout, an error message from libclamav during the
 * scan, its temp directory unusable) is AV_ERROR, never AV_CLEAN. */
void av_scan(struct av_engine *, const struct av_limits *, const void *, size_t,
    struct av_result *);
/* Create and remove a file in dir: 0 if libclamav can work there. */
int av_tmp_check(const char *dir, char *err, size_t);
void av_limits_from(const struct cfg_antivirus *, struct av_limits *);

/* The engines of a config: one per database directory of an action that
 * has antivirus enabled and that a policy uses.  Loading is idempotent.
 * -1 with err set if one cannot be loaded. */
int av_engines_load(const struct config *, char *err, size_t);
struct av_engine *av_engines_find(const char *dir);
/* Point every engine at tmpdir, check it, and scan a test message with
 * each: -1 with err set if scanning does not work. */
int av_engines_ready(const char *tmpdir, char *err, size_t);
void av_engines_free(void);

/*
 * rules.c: a cfg_rules compiled once (patterns, exact strings, PCRE2
 * with match and depth limits, no JIT).  Pattern: '*' any run, '?' one
 * character, case-insensitive; exact: case-insensitive equality; regex:
 * PCRE2, case-sensitive unless the pattern says (?i).
 */
struct rule_set;

/* NULL with err set ("rule 3: ...") if a rule cannot be compiled. */
struct rule_set *rules_compile(const struct cfg_rules *, char *err, size_t);
void rules_free(struct rule_set *);
/* The index of the first rule that matches any of the n subjects (the
 * rules in order, each tried on every subject); -1 if none; -2 if a
 * regex hit its match limit (an error: the caller must not take it as
 * "no match"). */
int rules_match(const struct rule_set *, const char *const *subj, size_t n);
/* Wildcard match of one pattern, for exceptions and tests. */
int rules_wildcard(const char *pattern, const char *s);

/*
 * detect.c: libmagic.  detect_init() loads the magic database before
 * the sandbox; detect_type() needs no file system afterwards.
 */
int detect_init(char *err, size_t);
/* The MIME type of data ("application/pdf"), lowercase, into out;
 * "application/octet-stream" if libmagic cannot tell. */
void detect_type(const void *, size_t, char *out, size_t);
/* Is data text (no NUL, no control character but blanks and ESC, in its
 * first 4 KB)? */
int detect_is_text(const void *, size_t);

/*
 * archive.c: the members of ZIP, GZIP, tar (and compressed tar)
 * archives, through libarchive, read from memory, nested archives
 * opened down to max_depth levels.
 */
struct arc_member {
	const char *name; /* member path in its archive, UTF-8 */
	const uint8_t *data; /* its bytes, decompressed */
	size_t len;
	int depth; /* 1: a member of the part itself */
};

enum arc_status {
	ARC_NOT = 0, /* not an archive libarchive reads */
	ARC_OK, /* every member was read and given to the callback */
	ARC_ENCRYPTED, /* a member is encrypted: it cannot be judged */
	ARC_LIMIT, /* a member larger than max_size, more than max_files
	              members, more than 1 GiB of members in all, or an
	              archive nested deeper than max_depth (at most 16:
	              it is given to the callback, then not opened) */
	ARC_ERROR /* corrupt, or out of memory */
};

/* The callback returns 0 to go on, -1 to stop (the walk then returns
 * ARC_OK with what it has seen). */
typedef int (*arc_cb)(void *arg, const struct arc_member *);
int arc_walk(const void *, size_t, int max_depth, uint64_t max_size,
    uint32_t max_files, arc_cb, void *arg, char *err, size_t);

/*
 * apt.c: the APT Blocker threat database, one entry a line:
 *	<sha256 or md5 in hex> <high|medium|low> <threat name>
 * '#' starts a comment line; blank lines are skipped.
 */
struct apt_db;

struct apt_hit {
	int level; /* APT_HIGH, APT_MEDIUM, APT_LOW */
	char name[128];
	char sha256[65]; /* hex of the data */
	char md5[33];
};

/* NULL with err set ("line 12: ...") if the file is malformed. */
struct apt_db *apt_db_parse(const void *, size_t, char *err, size_t);
void apt_db_free(struct apt_db *);
size_t apt_db_count(const struct apt_db *);
/* Hash data (SHA-256 and MD5) and look both up: 1 with hit filled (the
 * hashes always), 0 if unknown (the hashes still filled), -1 on error. */
int apt_lookup(const struct apt_db *, const void *, size_t, struct apt_hit *);

/*
 * spam.c: spamBlocker engines.
 */
struct spam_engine;

enum spam_status {
	SPAM_OK = 0, /* score and category are set */
	SPAM_EXCEPTED, /* an exception matched: not checked */
	SPAM_SKIPPED, /* larger than max_size: not checked */
	SPAM_UNAVAILABLE /* the engine could not answer (detail says why) */
};

struct spam_result {
	int status;
	double score;
	int category; /* SPAM_CONFIRMED.., or -1: not spam */
	char detail[256]; /* rules hit, or why the engine is unavailable */
};

/* Compile the builtin rules (cfg->rules_data or the compiled-in set)
 * or prepare the spamd/rspamd client.  NULL with err set. */
struct spam_engine *spam_engine_new(const struct cfg_spam *, char *err, size_t);
void spam_engine_free(struct spam_engine *);
/* Judge a whole message (exceptions, max_size, the engine, thresholds). */
void spam_check(
    struct spam_engine *, const void *, size_t, struct spam_result *);

/*
 * scand.c: 1 if this process may open a TCP connection to a spam engine:
 * it runs unconfined, or its seccomp policy has SANDBOX_NET.  0 in a
 * scand sandboxed without it (its config used no spamd or rspamd engine
 * when it started), where socket() would kill it: spam.c then reports
 * the engine unavailable instead of connecting.
 */
int scand_net_allowed(void);

/*
 * scan.c: one IMSG_SCAN_REQ.
 */
/* Before the sandbox, as root: everything the config's used actions need
 * (libclamav engines, libmagic, the lock key in state_dir).  -1 with err
 * set: scand must not run.  After the sandbox: scan_ready() checks that
 * scanning works in it (tmp directory, a test scan). */
int scan_load(const struct config *, char *err, size_t);
int scan_ready(char *err, size_t);
/* A scand worker's copy of the config it was forked with: the file bytes
 * the loader compiled (APT database, spam rules) are freed, so that they
 * are not held once per worker.  Nothing if they were not compiled for
 * this generation. */
void scan_config_release(struct config *);
/* After a reload: what the new config needs that scan_load() did not
 * load (NULL if nothing): scand restarts to load it. */
const char *scan_missing(const struct config *);
/* A section netd wants of a rewritten message. */
struct scan_sect {
	uint32_t binary;
	char *spec;
};

/* Where it is in the result fd. */
struct scan_sect_res {
	uint32_t status; /* SCAN_SECT_* */
	uint64_t off, len;
};

struct scan_req {
	uint64_t reqid;
	uint32_t kind;
	uint32_t action;
	char *user;
	char *client;
	uint64_t size;
	int has_sect; /* the request had a section count (maybe 0) */
	uint32_t nsect;
	struct scan_sect sect[SCAN_MAX_SECT];
	int has_flags; /* the request had flags and policy */
	uint32_t flags; /* SCAN_F_* */
	char *policy; /* "" if none */
	int fd;
};

struct scan_res {
	uint64_t reqid;
	uint32_t verdict;
	uint32_t action;
	char reason[SCAN_MAX_REASON];
	int fd; /* sealed memfd when verdict is SCAN_CHANGED, else -1 */
	uint64_t msg_off, msg_len;
	uint64_t bs_off, bs_len;
	uint64_t body_off, body_len;
	uint64_t env_off, env_len; /* its ENVELOPE (CHANGED) */
	int has_sect; /* answer with a section count: the request had one */
	uint32_t nsect; /* the request's, when CHANGED; else 0 */
	struct scan_sect_res sect[SCAN_MAX_SECT];
	int has_flags; /* answer with the report and ENVELOPE ranges */
	uint64_t json_off, json_len;
	uint64_t text_off, text_len;
};

/* How a message is judged. */
struct scan_opts {
	int kind; /* SCAN_FETCH, SCAN_APPEND */
	uint32_t flags; /* SCAN_F_* */
	const char *user, *client, *policy;
	const struct scan_sect *sect; /* wanted if rewritten */
	size_t nsect;
};

/* The lock key (NULL: none; lock then falls back to deny). */
void scan_set_lock_key(const uint8_t *key);
/* Check what scand will compile of the used actions of cfg (rules,
 * APT database, spam rules): -1 with one line per error in errs. */
int scan_config_check(const struct config *, struct buf *errs);

/* Read a request frame.  0: valid.  1: readable but refused (res is
 * a SCAN_ERROR answer with the reason).  -1: malformed, the channel
 * must be closed.  The request owns imsg->fd from then on. */
int scan_req_read(
    struct imsg *, const struct config *, struct scan_req *, struct scan_res *);
void scan_req_clear(struct scan_req *);
/* Judge the request's message under its action and fill res. */
void scan_request(
    const struct config *, const struct scan_req *, struct scan_res *);
/* The same on a message in memory (the tests, and scan_request). */
void scan_message(const struct cfg_action *, int kind, const char *user,
    const char *client, const void *, size_t, struct scan_res *);
/* ... and with the sections wanted if the message is rewritten. */
void scan_message_sect(const struct cfg_action *, int kind, const char *user,
    const char *client, const void *, size_t, const struct scan_sect *,
    size_t nsect, struct scan_res *);
/* The same with every option; the action's rules are compiled for this
 * one message (scand itself keeps them compiled per configuration). */
void scan_message_opts(const struct cfg_action *, const struct scan_opts *,
    const void *, size_t, struct scan_res *);
/* The IMSG_SCAN_RES payload. */
int scan_res_write(const struct scan_res *, struct buf *);
void scan_res_clear(struct scan_res *);
const char *scan_verdict_name(int);

#endif
