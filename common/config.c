/*
 * The config loader.  libyaml's event API builds a small node tree (with
 * 1-based positions), the walker below turns it into struct config and
 * validates every value.  Errors are collected with their position, not
 * returned one by one: the caller gets all of them, sorted by position, as
 * "file:line:column: message\n" lines.  Nothing here logs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>
#include <yaml.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "config.h"
#include "log.h"
#include "tls.h"
#include "util.h"

_Static_assert(CFG_TLS_MAX_NAME == TLS_MAX_NAME, "SNI length");

#define CFG_MAX_FILE (16 * 1024 * 1024)
#define CFG_MAX_DEPTH 32
#define CFG_MAX_ERRORS 1000
#define CFG_NBUILTIN 2

#define CFG_DENY_MESSAGE                                           \
	"This message was blocked by the IMAP security gateway.\n" \
	"Reason: %(reason)%\n"

static const char *const cfg_builtin_names[CFG_NBUILTIN] = {
    "IMAP-Server.Standard",
    "IMAP-Client.Standard",
};

static const struct cfg_general cfg_general_default = {
    .max_email_size = 50 * 1024 * 1024,
    .oversize = ACT_DENY,
    .max_line_length = 64 * 1024,
    .max_archive_depth = 3,
    .consistency = CONSIST_STRICT,
};
#define CFG_MAX_ARCHIVE_DEPTH 16

/* ClamAV's own defaults for the limits (clamd.conf(5)). */
#define CFG_AV_DATABASE "/var/lib/clamav"
static const struct cfg_antivirus cfg_antivirus_default = {
    .enabled = 1,
    .database = NULL, /* CFG_AV_DATABASE, allocated */
    .on_virus = ACT_STRIP,
    .on_error = ACT_LOCK,
    .max_scan_size = 100 * 1024 * 1024,
    .max_file_size = 25 * 1024 * 1024,
    .max_recursion = 17,
    .max_files = 10000,
    .max_scan_time_ms = 120 * 1000,
};

/* The files the parent reads for scand, and how large they may be. */
#define CFG_APT_DATABASE "/etc/imapgw/apt.db"
#define CFG_APT_MAX_FILE (256 * 1024 * 1024)
#define CFG_SPAM_MAX_FILE (16 * 1024 * 1024)

/* spamBlocker. */
#define CFG_SPAM_HEADER "X-Spam-Category"
#define CFG_SPAM_SPAMD "127.0.0.1:783"
#define CFG_SPAM_RSPAMD "127.0.0.1:11333"
#define CFG_SPAM_MAX_TIMEOUT_MS (60 * 60 * 1000)
#define CFG_SPAM_MAX_TAG 128
#define CFG_SPAM_MAX_HEADER 76

static const char *const cfg_spam_cat_names[SPAM_NCAT] = {
    [SPAM_CONFIRMED] = "confirmed",
    [SPAM_BULK] = "bulk",
    [SPAM_SUSPECT] = "suspect",
};

static const struct {
	int action;
	const char *tag;
	double score;
} cfg_spam_cat_default[SPAM_NCAT] = {
    [SPAM_CONFIRMED] = {ACT_TAG, "***SPAM*** ", 15},
    [SPAM_BULK] = {ACT_TAG, "***BULK*** ", 10},
    [SPAM_SUSPECT] = {ACT_HEADER, "***SUSPECT*** ", 5},
};

/* The rules of the built-in actions: executables and scripts stripped. */
struct cfg_builtin_rule {
	const char *name;
	const char *match;
};

static const struct cfg_builtin_rule cfg_builtin_types[] = {
    {"Windows executable", "application/x-dosexec"},
    {"Windows download", "application/x-msdownload"},
    {"DOS program", "application/x-msdos-program"},
    {"Windows PE executable", "application/vnd.microsoft.portable-executable"},
    {"executable", "application/x-executable"},
    {"Windows shortcut", "application/x-ms-shortcut"},
    {"HTML application", "application/hta"},
    {"Windows Installer package", "application/x-msi"},
    {"batch file", "application/x-bat"},
    {"shell script", "application/x-sh"},
    {NULL, NULL},
};

static const struct cfg_builtin_rule cfg_builtin_files[] = {
    {"Windows program (.exe)", "*.exe"},
    {"DOS program (.com)", "*.com"},
    {"screen saver (.scr)", "*.scr"},
    {"program information file (.pif)", "*.pif"},
    {"batch file (.bat)", "*.bat"},
    {"command script (.cmd)", "*.cmd"},
    {"VBScript (.vbs)", "*.vbs"},
    {"encoded VBScript (.vbe)", "*.vbe"},
    {"JScript (.js)", "*.js"},
    {"encoded JScript (.jse)", "*.jse"},
    {"Windows Script file (.wsf)", "*.wsf"},
    {"Windows Script Host settings (.wsh)", "*.wsh"},
    {"HTML application (.hta)", "*.hta"},
    {"Control Panel item (.cpl)", "*.cpl"},
    {"Windows Installer package (.msi)", "*.msi"},
    {"Windows Installer patch (.msp)", "*.msp"},
    {"Windows shortcut (.lnk)", "*.lnk"},
    {"PowerShell script (.ps1)", "*.ps1"},
    {"Java archive (.jar)", "*.jar"},
    {"registry file (.reg)", "*.reg"},
    {NULL, NULL},
};

/* The YAML tree: scalars, sequences, mappings (kids: key, value, ...). */
enum { YN_BAD = 0, YN_SCALAR, YN_SEQ, YN_MAP };

struct ynode {
	int type;
	int plain;
	char *str;
	struct cfg_pos pos;
	struct ynode **kids;
	size_t nkids, cap;
};

struct cfg_error {
	struct cfg_pos pos;
	size_t seq;
	char *msg;
};

/* Per action: what the file set, to apply on top of the inherited values. */
enum {
	SET_MAXSIZE = 1,
	SET_OVERSIZE = 2,
	SET_MAXLINE = 4,
	SET_ARCDEPTH = 8,
	SET_CONSIST = 16
};
enum {
	AVSET_ENABLED = 0x01,
	AVSET_DATABASE = 0x02,
	AVSET_ON_VIRUS = 0x04,
	AVSET_ON_ERROR = 0x08,
	AVSET_SCANSIZE = 0x10,
	AVSET_FILESIZE = 0x20,
	AVSET_RECURSION = 0x40,
	AVSET_FILES = 0x80,
	AVSET_TIME = 0x100,
};
/* content_types, filenames, headers: rules replaces the list whole. */
enum { RULES_CT = 0, RULES_FN, RULES_HDR, RULES_N };
enum {
	RSET_AUTO = 0x01,
	RSET_ARCHIVES = 0x02,
	RSET_NONE = 0x04,
	RSET_RULES = 0x08,
};
enum {
	APTSET_ENABLED = 0x01,
	APTSET_DATABASE = 0x02,
	APTSET_HIGH = 0x04, /* APTSET_HIGH << APT_* */
};
enum {
	SPSET_ENABLED = 0x001,
	SPSET_ENGINE = 0x002,
	SPSET_RULES = 0x004,
	SPSET_ADDRESS = 0x008,
	SPSET_TIMEOUT = 0x010,
	SPSET_MAXSIZE = 0x020,
	SPSET_UNAVAIL = 0x040,
	SPSET_HEADER = 0x080,
	SPSET_EXCEPTIONS = 0x100,
};
enum { CATSET_ACTION = 1, CATSET_TAG = 2, CATSET_SCORE = 4 };
enum { ARES_NEW = 0, ARES_ACTIVE, ARES_DONE };

struct cfg_raux {
	unsigned set;
	struct cfg_rules r; /* r.rules owned here until applied */
};

struct cfg_aaux {
	struct cfg_action *act;
	unsigned set;
	struct cfg_general ov;
	unsigned avset;
	struct cfg_antivirus av; /* av.database owned here until applied */
	struct cfg_raux rules[RULES_N];
	unsigned aptset;
	struct cfg_apt apt; /* apt.database owned here */
	struct cfg_pos aptdb; /* where this action named the database */
	unsigned spset;
	unsigned catset[SPAM_NCAT];
	struct cfg_spam sp; /* strings and exceptions owned here */
	struct cfg_pos sprules; /* where this action named the rules file */
	struct cfg_pos score[SPAM_NCAT];
	/* After resolution: where the files in effect were named (0 when
	 * a built-in default), and whether an address was given. */
	struct cfg_pos r_aptdb, r_sprules;
	int r_addr;
	char *deny;
	struct cfg_pos ipos;
	int state;
	int ok;
};

/* Per policy: positions needed when resolving names after the walk. */
struct cfg_paux {
	struct cfg_pos name, to, action;
	struct cfg_pos tls, tlsmode, tlsprofile; /* tls:, its mode, profile */
	struct cfg_pos tlsauth; /* tls.authority */
	struct cfg_pos *certpos; /* each tls.certificate name */
};

struct cfg_state {
	const char *file;
	struct config *cfg;
	struct cfg_error *errs;
	size_t nerrs, caperrs, dropped;
	int oom;
	struct cfg_aaux *aaux;
	struct cfg_paux *paux;
	struct cfg_pos *sprofile; /* per server: where tls_profile was named */
	struct buf warns; /* "file:line:col: warning: ...\n" */
	char label[96]; /* "server 'x'", "policy 'y'" */
	size_t *stack; /* inheritance path while resolving */
	size_t nstack;
};

struct cfg_key {
	const char *name;
	void (*fn)(struct cfg_state *, struct ynode *, struct ynode *, void *);
	int required;
};

struct cfg_enum {
	const char *name;
	int val;
};

static const struct cfg_enum cfg_log_targets[] = {
    {"syslog", LOGT_SYSLOG},
    {"stderr", LOGT_STDERR},
    {NULL, 0},
};
static const struct cfg_enum cfg_log_formats[] = {
    {"text", LOGF_TEXT},
    {"json", LOGF_JSON},
    {NULL, 0},
};
static const struct cfg_enum cfg_log_levels[] = {
    {"error", LOG_ERR},
    {"warning", LOG_WARNING},
    {"notice", LOG_NOTICE},
    {"info", LOG_INFO},
    {"debug", LOG_DEBUG},
    {NULL, 0},
};
static const struct cfg_enum cfg_balances[] = {
    {"round-robin", BALANCE_ROUND_ROBIN},
    {"least-connection", BALANCE_LEAST_CONN},
    {NULL, 0},
};
static const struct cfg_enum cfg_srv_tls[] = {
    {"none", SRV_TLS_NONE},
    {"starttls", SRV_TLS_STARTTLS},
    {"implicit", SRV_TLS_IMPLICIT},
    {NULL, 0},
};
static const struct cfg_enum cfg_srv_connect[] = {
    {"eager", SRV_CONNECT_EAGER},
    {"lazy", SRV_CONNECT_LAZY},
    {NULL, 0},
};
static const struct cfg_enum cfg_listen_tls[] = {
    {"none", LISTEN_TLS_NONE},
    {"implicit", LISTEN_TLS_IMPLICIT},
    {NULL, 0},
};
static const struct cfg_enum cfg_oversize[] = {
    {"allow", ACT_ALLOW},
    {"deny", ACT_DENY},
    {"drop", ACT_DROP},
    {NULL, 0},
};
static const struct cfg_enum cfg_consistency[] = {
    {"strict", CONSIST_STRICT},
    {"lazy", CONSIST_LAZY},
    {NULL, 0},
};
static const struct cfg_enum cfg_on_virus[] = {
    {"allow", ACT_ALLOW},
    {"strip", ACT_STRIP},
    {"lock", ACT_LOCK},
    {"deny", ACT_DENY},
    {"drop", ACT_DROP},
    {"block", ACT_BLOCK},
    {NULL, 0},
};
static const struct cfg_enum cfg_on_error[] = {
    {"allow", ACT_ALLOW},
    {"lock", ACT_LOCK},
    {"deny", ACT_DENY},
    {"drop", ACT_DROP},
    {NULL, 0},
};
/* content_types and filenames rules, none_matched, APT Blocker levels. */
static const struct cfg_enum cfg_rule_actions[] = {
    {"allow", ACT_ALLOW},
    {"strip", ACT_STRIP},
    {"lock", ACT_LOCK},
    {"deny", ACT_DENY},
    {"drop", ACT_DROP},
    {"block", ACT_BLOCK},
    {NULL, 0},
};
/* headers: strip removes the header field. */
static const struct cfg_enum cfg_hdr_actions[] = {
    {"allow", ACT_ALLOW},
    {"strip", ACT_STRIP},
    {"deny", ACT_DENY},
    {"drop", ACT_DROP},
    {"block", ACT_BLOCK},
    {NULL, 0},
};
static const struct cfg_enum cfg_spam_actions[] = {
    {"allow", ACT_ALLOW},
    {"tag", ACT_TAG},
    {"header", ACT_HEADER},
    {"deny", ACT_DENY},
    {"drop", ACT_DROP},
    {"block", ACT_BLOCK},
    {NULL, 0},
};
static const struct cfg_enum cfg_on_unavailable[] = {
    {"allow", ACT_ALLOW},
    {"deny", ACT_DENY},
    {NULL, 0},
};
static const struct cfg_enum cfg_spam_engines[] = {
    {"builtin", SPAM_ENGINE_BUILTIN},
    {"spamd", SPAM_ENGINE_SPAMD},
    {"rspamd", SPAM_ENGINE_RSPAMD},
    {NULL, 0},
};
static const struct cfg_enum cfg_match_types[] = {
    {"pattern", MATCH_PATTERN},
    {"exact", MATCH_EXACT},
    {"regex", MATCH_REGEX},
    {NULL, 0},
};
static const struct cfg_enum cfg_dispositions[] = {
    {"allow", DISP_ALLOW},
    {"deny", DISP_DENY},
    {"deny-reset", DISP_DENY_RESET},
    {NULL, 0},
};

static const char *const cfg_action_names[] = {
    [ACT_ALLOW] = "allow",
    [ACT_STRIP] = "strip",
    [ACT_LOCK] = "lock",
    [ACT_DENY] = "deny",
    [ACT_DROP] = "drop",
    [ACT_BLOCK] = "block",
    [ACT_TAG] = "tag",
    [ACT_HEADER] = "header",
};
#define CFG_NACTNAMES (sizeof(cfg_action_names) / sizeof(cfg_action_names[0]))

int
action_from_name(const char *s)
{
	size_t i;

	for (i = 0; s != NULL && i < CFG_NACTNAMES; i++)
		if (strcmp(s, cfg_action_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *
action_name(int a)
{
	if (a < 0 || (size_t)a >= CFG_NACTNAMES)
		return "unknown";
	return cfg_action_names[a];
}

/*
 * Errors.
 */

static void
cfg_oom(struct cfg_state *st)
{
	st->oom = 1;
}

static void cfg_err(struct cfg_state *st, struct cfg_pos pos, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

static void
cfg_err(struct cfg_state *st, struct cfg_pos pos, const char *fmt, ...)
{
	struct cfg_error *e;
	va_list ap;
	char *msg, *p;
	int n;

	if (st->nerrs >= CFG_MAX_ERRORS) {
		st->dropped++;
		return;
	}
	if (st->nerrs == st->caperrs) {
		n = st->caperrs ? (int)st->caperrs * 2 : 16;
		e = reallocarray(st->errs, (size_t)n, sizeof(*e));
		if (e == NULL) {
			cfg_oom(st);
			return;
		}
		st->errs = e;
		st->caperrs = (size_t)n;
	}
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n == -1) {
		cfg_oom(st);
		return;
	}
	/* One error, one line: no control characters from the file. */
	for (p = msg; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	e = &st->errs[st->nerrs];
	e->pos = pos;
	e->seq = st->nerrs++;
	e->msg = msg;
}

static int
cfg_err_cmp(const void *a, const void *b)
{
	const struct cfg_error *x = a, *y = b;

	if (x->pos.line != y->pos.line)
		return x->pos.line < y->pos.line ? -1 : 1;
	if (x->pos.col != y->pos.col)
		return x->pos.col < y->pos.col ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void
cfg_err_flush(struct cfg_state *st, struct buf *errs)
{
	struct cfg_error *e;
	size_t i;

	if (st->nerrs > 1)
		qsort(st->errs, st->nerrs, sizeof(*st->errs), cfg_err_cmp);
	for (i = 0; i < st->nerrs; i++) {
		e = &st->errs[i];
		if (errs != NULL)
			buf_printf(errs, "%s:%d:%d: %s\n", st->file,
			    e->pos.line, e->pos.col, e->msg);
		free(e->msg);
	}
	if (errs != NULL && st->dropped)
		buf_printf(errs,
		    "%s:0:0: too many errors, %zu more not shown\n", st->file,
		    st->dropped);
	if (errs != NULL && st->oom)
		buf_printf(errs, "%s:0:0: out of memory\n", st->file);
	free(st->errs);
	st->errs = NULL;
}

/* A warning: the configuration loads, the parent logs the line. */
static void cfg_warn(struct cfg_state *st, struct cfg_pos pos, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

static void
cfg_warn(struct cfg_state *st, struct cfg_pos pos, const char *fmt, ...)
{
	va_list ap;
	char *msg, *p;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1) {
		va_end(ap);
		cfg_oom(st);
		return;
	}
	va_end(ap);
	for (p = msg; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (buf_printf(&st->warns, "%s:%d:%d: warning: %s\n", st->file,
	        pos.line, pos.col, msg) == -1)
		cfg_oom(st);
	free(msg);
}

/*
 * The YAML tree.
 */

static struct ynode *
yn_new(struct cfg_state *st, int type, const yaml_mark_t *m)
{
	struct ynode *n;

	if ((n = calloc(1, sizeof(*n))) == NULL) {
		cfg_oom(st);
		return NULL;
	}
	n->type = type;
	n->pos.line = (int)m->line + 1;
	n->pos.col = (int)m->column + 1;
	return n;
}

static void
yn_free(struct ynode *n)
{
	size_t i;

	if (n == NULL)
		return;
	for (i = 0; i < n->nkids; i++)
		yn_free(n->kids[i]);
	free(n->kids);
	free(n->str);
	free(n);
}

static int
yn_add(struct cfg_state *st, struct ynode *parent, struct ynode *kid)
{
	struct ynode **k;
	size_t cap;

	if (parent->nkids == parent->cap) {
		cap = parent->cap ? parent->cap * 2 : 8;
		if ((k = reallocarray(parent->kids, cap, sizeof(*k))) == NULL) {
			cfg_oom(st);
			return -1;
		}
		parent->kids = k;
		parent->cap = cap;
	}
	parent->kids[parent->nkids++] = kid;
	return 0;
}

/* A plain scalar that YAML reads as null: empty, ~, null. */
static int
yn_null(const struct ynode *n)
{
	if (n->type != YN_SCALAR || !n->plain)
		return 0;
	return n->str[0] == '\0' || strcmp(n->str, "~") == 0 ||
	       strcmp(n->str, "null") == 0 || strcmp(n->str, "Null") == 0 ||
	       strcmp(n->str, "NULL") == 0;
}

struct ybuild {
	struct ynode *root;
	struct ynode *stack[CFG_MAX_DEPTH];
	int depth;
	int ndocs;
};

static int
yb_attach(struct cfg_state *st, struct ybuild *b, struct ynode *n)
{
	if (n == NULL)
		return -1;
	if (b->depth == 0) {
		b->root = n;
		return 0;
	}
	if (yn_add(st, b->stack[b->depth - 1], n) == -1) {
		yn_free(n);
		return -1;
	}
	return 0;
}

static int
yb_scalar(struct cfg_state *st, struct ybuild *b, yaml_event_t *ev)
{
	const char *v = (const char *)ev->data.scalar.value;
	size_t len = ev->data.scalar.length;
	struct ynode *n;

	if ((n = yn_new(st, YN_SCALAR, &ev->start_mark)) == NULL)
		return -1;
	n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	if (len > CONFIG_MAX_STR) {
		cfg_err(st, n->pos, "value too long (at most %d bytes)",
		    CONFIG_MAX_STR);
		n->type = YN_BAD;
	} else if (memchr(v, '\0', len) != NULL) {
		cfg_err(st, n->pos, "value contains a NUL byte");
		n->type = YN_BAD;
	} else if ((n->str = strndup(v, len)) == NULL) {
		cfg_oom(st);
		yn_free(n);
		return -1;
	}
	return yb_attach(st, b, n);
}

static int
yb_open(struct cfg_state *st, struct ybuild *b, yaml_event_t *ev, int type)
{
	struct ynode *n;
	struct cfg_pos pos;

	if (b->depth == CFG_MAX_DEPTH) {
		pos.line = (int)ev->start_mark.line + 1;
		pos.col = (int)ev->start_mark.column + 1;
		cfg_err(st, pos, "nesting too deep (at most %d levels)",
		    CFG_MAX_DEPTH);
		return -1;
	}
	n = yn_new(st, type, &ev->start_mark);
	if (yb_attach(st, b, n) == -1)
		return -1;
	b->stack[b->depth++] = n;
	return 0;
}

static int
yb_alias(struct cfg_state *st, struct ybuild *b, yaml_event_t *ev)
{
	struct ynode *n;

	if ((n = yn_new(st, YN_BAD, &ev->start_mark)) == NULL)
		return -1;
	cfg_err(st, n->pos, "aliases are not supported");
	return yb_attach(st, b, n);
}

/* 0: go on, 1: done, -1: error (reported). */
static int
yb_event(struct cfg_state *st, struct ybuild *b, yaml_event_t *ev)
{
	struct cfg_pos pos;

	switch (ev->type) {
	case YAML_DOCUMENT_START_EVENT:
		if (++b->ndocs == 1)
			return 0;
		pos.line = (int)ev->start_mark.line + 1;
		pos.col = (int)ev->start_mark.column + 1;
		cfg_err(st, pos, "only one YAML document is allowed");
		return -1;
	case YAML_MAPPING_START_EVENT:
		return yb_open(st, b, ev, YN_MAP);
	case YAML_SEQUENCE_START_EVENT:
		return yb_open(st, b, ev, YN_SEQ);
	case YAML_MAPPING_END_EVENT:
	case YAML_SEQUENCE_END_EVENT:
		b->depth--;
		return 0;
	case YAML_SCALAR_EVENT:
		return yb_scalar(st, b, ev);
	case YAML_ALIAS_EVENT:
		return yb_alias(st, b, ev);
	case YAML_STREAM_END_EVENT:
		return 1;
	default:
		return 0;
	}
}

/* Position of a byte offset (reader errors carry only that). */
static struct cfg_pos
cfg_offset_pos(const char *text, size_t len, size_t off)
{
	struct cfg_pos pos = {1, 1};
	size_t i;

	for (i = 0; i < off && i < len; i++) {
		if (text[i] == '\n') {
			pos.line++;
			pos.col = 1;
		} else
			pos.col++;
	}
	return pos;
}

static void
cfg_syntax(struct cfg_state *st, yaml_parser_t *p, const char *text, size_t len)
{
	struct cfg_pos pos;

	if (p->error == YAML_MEMORY_ERROR) {
		cfg_oom(st);
		return;
	}
	if (p->error == YAML_READER_ERROR)
		pos = cfg_offset_pos(text, len, p->problem_offset);
	else {
		pos.line = (int)p->problem_mark.line + 1;
		pos.col = (int)p->problem_mark.column + 1;
	}
	if (p->context != NULL)
		cfg_err(st, pos, "syntax error: %s (%s at line %zu)",
		    p->problem ? p->problem : "?", p->context,
		    p->context_mark.line + 1);
	else
		cfg_err(
		    st, pos, "syntax error: %s", p->problem ? p->problem : "?");
}

/* Parse text into a tree.  NULL if there is nothing to walk. */
static struct ynode *
cfg_parse(struct cfg_state *st, const char *text, size_t len)
{
	yaml_parser_t p;
	yaml_event_t ev;
	struct ybuild b;
	int r = 0;

	memset(&b, 0, sizeof(b));
	if (!yaml_parser_initialize(&p)) {
		cfg_oom(st);
		return NULL;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
	while (r == 0) {
		if (!yaml_parser_parse(&p, &ev)) {
			cfg_syntax(st, &p, text, len);
			r = -1;
			break;
		}
		r = yb_event(st, &b, &ev);
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	if (r == -1) {
		yn_free(b.root);
		return NULL;
	}
	return b.root;
}

/*
 * Walking mappings and typed values.
 */

static char *
cfg_strdup(struct cfg_state *st, const char *s)
{
	char *d;

	if ((d = strdup(s)) == NULL)
		cfg_oom(st);
	return d;
}

/* Key i of a mapping: a non-empty string, not seen before in it. */
static int
cfg_key_ok(struct cfg_state *st, struct ynode *map, size_t i, const char *sect)
{
	struct ynode *k = map->kids[i], *o;
	size_t j;

	if (k->type == YN_BAD)
		return 0;
	if (k->type != YN_SCALAR) {
		cfg_err(st, k->pos, "keys in %s must be strings", sect);
		return 0;
	}
	if (k->str[0] == '\0') {
		cfg_err(st, k->pos, "empty key in %s", sect);
		return 0;
	}
	for (j = 0; j < i; j += 2) {
		o = map->kids[j];
		if (o->type == YN_SCALAR && strcmp(o->str, k->str) == 0) {
			cfg_err(st, k->pos,
			    "duplicate key '%.64s' in %s (first at line %d)",
			    k->str, sect, o->pos.line);
			return 0;
		}
	}
	return 1;
}

/*
 * Walk a mapping (or a null, as an empty one) with a key table: unknown,
 * duplicate and missing required keys are errors.
 */
static void
cfg_walk(struct cfg_state *st, struct ynode *map, const char *sect,
    const struct cfg_key *keys, void *obj)
{
	struct ynode *k, *v;
	unsigned seen = 0;
	size_t i, j;

	if (map->nkids / 2 > CONFIG_MAX_ITEMS) {
		cfg_err(st, map->pos, "too many keys in %s (at most %d)", sect,
		    CONFIG_MAX_ITEMS);
		return;
	}
	for (i = 0; map->type == YN_MAP && i + 1 < map->nkids; i += 2) {
		k = map->kids[i];
		v = map->kids[i + 1];
		if (!cfg_key_ok(st, map, i, sect))
			continue;
		for (j = 0; keys[j].name != NULL; j++)
			if (strcmp(keys[j].name, k->str) == 0)
				break;
		if (keys[j].name == NULL) {
			cfg_err(st, k->pos, "unknown key '%.64s' in %s", k->str,
			    sect);
			continue;
		}
		seen |= 1u << j;
		if (v->type != YN_BAD)
			keys[j].fn(st, k, v, obj);
	}
	for (j = 0; keys[j].name != NULL; j++)
		if (keys[j].required && !(seen & (1u << j)))
			cfg_err(st, map->pos, "missing required key '%s' in %s",
			    keys[j].name, sect);
}

/* A mapping, or a null taken as an empty mapping. */
static int
cfg_want_map(struct cfg_state *st, struct ynode *k, struct ynode *v)
{
	if (v->type == YN_MAP || yn_null(v))
		return 1;
	cfg_err(st, v->pos, "'%.64s' must be a mapping", k->str);
	return 0;
}

static const char *
cfg_str(struct cfg_state *st, struct ynode *k, struct ynode *v)
{
	if (v->type != YN_SCALAR) {
		cfg_err(st, v->pos, "'%.64s' must be a string", k->str);
		return NULL;
	}
	if (yn_null(v) || v->str[0] == '\0') {
		cfg_err(st, v->pos, "'%.64s' must not be empty", k->str);
		return NULL;
	}
	return v->str;
}

static void
cfg_set_str(struct cfg_state *st, struct ynode *k, struct ynode *v, char **dst)
{
	const char *s;
	char *d;

	if ((s = cfg_str(st, k, v)) == NULL || (d = cfg_strdup(st, s)) == NULL)
		return;
	free(*dst);
	*dst = d;
}

static void
cfg_set_path(struct cfg_state *st, struct ynode *k, struct ynode *v, char **dst)
{
	const char *s;

	if ((s = cfg_str(st, k, v)) == NULL)
		return;
	if (s[0] != '/') {
		cfg_err(st, v->pos, "'%.64s' must be an absolute path", k->str);
		return;
	}
	cfg_set_str(st, k, v, dst);
}

static void
cfg_enum_list(const struct cfg_enum *e, char *out, size_t outlen)
{
	size_t i, n;

	for (n = 0; e[n].name != NULL; n++)
		;
	out[0] = '\0';
	for (i = 0; i < n; i++) {
		if (i > 0)
			strncat(out, i + 1 == n ? " or " : ", ",
			    outlen - strlen(out) - 1);
		strncat(out, e[i].name, outlen - strlen(out) - 1);
	}
}

static int
cfg_enum(struct cfg_state *st, struct ynode *k, struct ynode *v,
    const struct cfg_enum *e, int *out)
{
	char list[160];
	size_t i;

	if (v->type != YN_SCALAR) {
		cfg_err(st, v->pos, "'%.64s' must be a string", k->str);
		return -1;
	}
	for (i = 0; e[i].name != NULL; i++) {
		if (strcmp(e[i].name, v->str) == 0) {
			*out = e[i].val;
			return 0;
		}
	}
	cfg_enum_list(e, list, sizeof(list));
	cfg_err(st, v->pos, "%s must be %s", k->str, list);
	return -1;
}

static int
cfg_size(struct cfg_state *st, struct ynode *k, struct ynode *v, uint64_t *out)
{
	if (v->type != YN_SCALAR) {
		cfg_err(st, v->pos, "'%.64s' must be a size", k->str);
		return -1;
	}
	if (parse_size(v->str, out) == -1) {
		cfg_err(st, v->pos,
		    "bad size '%.64s' (use a number with K, M or G)", v->str);
		return -1;
	}
	return 0;
}

static int
cfg_duration(
    struct cfg_state *st, struct ynode *k, struct ynode *v, uint64_t *out)
{
	if (v->type != YN_SCALAR) {
		cfg_err(st, v->pos, "'%.64s' must be a duration", k->str);
		return -1;
	}
	if (parse_duration(v->str, out) == -1) {
		cfg_err(st, v->pos,
		    "bad duration '%.64s' (use a number with s, m, h or d)",
		    v->str);
		return -1;
	}
	return 0;
}

/* Decimal digits only, at most 9 of them. */
static int
cfg_uint(const char *s, long *out)
{
	long v = 0;
	size_t i;

	for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
		if (i == 9)
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (i == 0 || s[i] != '\0')
		return -1;
	*out = v;
	return 0;
}

static int
cfg_int(struct cfg_state *st, struct ynode *k, struct ynode *v, long min,
    long max, long *out)
{
	if (v->type != YN_SCALAR || cfg_uint(v->str, out) == -1 || *out < min ||
	    *out > max) {
		cfg_err(st, v->pos,
		    "'%.64s' must be an integer from %ld to %ld", k->str, min,
		    max);
		return -1;
	}
	return 0;
}

/* YAML 1.1 and 1.2 spellings of a boolean. */
static int
cfg_bool(struct cfg_state *st, struct ynode *k, struct ynode *v, int *out)
{
	static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
	    "YES", "on", "On", "ON", NULL};
	static const char *const no[] = {"false", "False", "FALSE", "no", "No",
	    "NO", "off", "Off", "OFF", NULL};
	size_t i;

	for (i = 0; v->type == YN_SCALAR && yes[i] != NULL; i++) {
		if (strcmp(v->str, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcmp(v->str, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	cfg_err(st, v->pos, "'%.64s' must be true or false", k->str);
	return -1;
}

/* A sequence, or one item standing for a sequence of one. */
static size_t
cfg_items(struct ynode *v, struct ynode ***items)
{
	if (v->type == YN_SEQ) {
		*items = v->kids;
		return v->nkids;
	}
	if (yn_null(v))
		return 0;
	*items = NULL;
	return 1;
}

/*
 * Top level: user, chroot, state_dir, workers, log, control.
 */

static void
cfg_k_user(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_set_str(st, k, v, &((struct config *)o)->user);
}

static void
cfg_k_chroot(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_set_path(st, k, v, &((struct config *)o)->chroot);
}

static void
cfg_k_state_dir(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_set_path(st, k, v, &((struct config *)o)->state_dir);
}

static int
cfg_ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > IMAPGW_MAX_INSTANCES ? IMAPGW_MAX_INSTANCES : (int)n;
}

static void
cfg_worker(struct cfg_state *st, struct ynode *k, struct ynode *v,
    struct config *cfg, int role)
{
	long n;

	if (v->type == YN_SCALAR && strcmp(v->str, "auto") == 0) {
		cfg->workers[role] = cfg_ncpu();
		return;
	}
	if (v->type != YN_SCALAR || cfg_uint(v->str, &n) == -1 || n < 1 ||
	    n > IMAPGW_MAX_INSTANCES) {
		cfg_err(st, v->pos,
		    "'%s' must be an integer from 1 to %d or auto", k->str,
		    IMAPGW_MAX_INSTANCES);
		return;
	}
	cfg->workers[role] = (int)n;
}

static void
cfg_k_netd(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_worker(st, k, v, o, ROLE_NETD);
}

static void
cfg_k_scand(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_worker(st, k, v, o, ROLE_SCAND);
}

static void
cfg_k_tlsd(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_worker(st, k, v, o, ROLE_TLSD);
}

static const struct cfg_key cfg_workers_keys[] = {
    {"netd", cfg_k_netd, 0},
    {"scand", cfg_k_scand, 0},
    {"tlsd", cfg_k_tlsd, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_workers(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	if (cfg_want_map(st, k, v))
		cfg_walk(st, v, "workers", cfg_workers_keys, o);
}

static void
cfg_k_target(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_enum(st, k, v, cfg_log_targets, &((struct config *)o)->log_target);
}

static void
cfg_k_format(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_enum(st, k, v, cfg_log_formats, &((struct config *)o)->log_format);
}

static void
cfg_k_level(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_enum(st, k, v, cfg_log_levels, &((struct config *)o)->log_level);
}

static const struct cfg_key cfg_log_keys[] = {
    {"target", cfg_k_target, 0},
    {"format", cfg_k_format, 0},
    {"level", cfg_k_level, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_log(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	if (cfg_want_map(st, k, v))
		cfg_walk(st, v, "log", cfg_log_keys, o);
}

static void
cfg_k_socket(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct sockaddr_un sun;

	if (v->type == YN_SCALAR && strlen(v->str) >= sizeof(sun.sun_path)) {
		cfg_err(st, v->pos, "'socket' is too long (at most %zu bytes)",
		    sizeof(sun.sun_path) - 1);
		return;
	}
	cfg_set_path(st, k, v, &((struct config *)o)->control_socket);
}

static const struct cfg_key cfg_control_keys[] = {
    {"socket", cfg_k_socket, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_control(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	if (cfg_want_map(st, k, v))
		cfg_walk(st, v, "control", cfg_control_keys, o);
}

/*
 * auto_block: { duration, exceptions }.
 */

static void
cfg_k_ab_duration(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_auto_block *ab = o;
	uint64_t ms;

	if (cfg_duration(st, k, v, &ms) == -1)
		return;
	if (ms < CFG_BLOCK_MIN_MS || ms > CFG_BLOCK_MAX_MS || ms % 1000 != 0) {
		cfg_err(st, v->pos,
		    "duration must be from 1s to 30d, in whole seconds");
		return;
	}
	ab->duration_ms = ms;
}

static void
cfg_ab_exception(
    struct cfg_state *st, struct ynode *item, struct cfg_auto_block *ab)
{
	if (item->type == YN_BAD)
		return;
	if (item->type != YN_SCALAR) {
		cfg_err(st, item->pos, "'exceptions' entries must be strings");
		return;
	}
	if (parse_cidr(item->str, &ab->exceptions[ab->nexceptions]) == -1) {
		cfg_err(st, item->pos,
		    "bad CIDR '%.80s' (use any, an address or address/prefix)",
		    item->str);
		return;
	}
	ab->nexceptions++;
}

static void
cfg_k_ab_exceptions(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_auto_block *ab = o;
	struct ynode **items;
	size_t i, n;

	(void)k;
	if (v->type == YN_MAP) {
		cfg_err(st, v->pos, "'exceptions' must be a sequence");
		return;
	}
	if ((n = cfg_items(v, &items)) == 0)
		return;
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos,
		    "too many 'exceptions' entries (at most %d)",
		    CONFIG_MAX_ITEMS);
		return;
	}
	if ((ab->exceptions = calloc(n, sizeof(*ab->exceptions))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < n; i++)
		cfg_ab_exception(st, items ? items[i] : v, ab);
}

static const struct cfg_key cfg_auto_block_keys[] = {
    {"duration", cfg_k_ab_duration, 0},
    {"exceptions", cfg_k_ab_exceptions, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_auto_block(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	if (cfg_want_map(st, k, v))
		cfg_walk(st, v, "auto_block", cfg_auto_block_keys,
		    &((struct config *)o)->auto_block);
}

/*
 * verdict_cache: { size }.  The LMDB map size of state_dir/verdicts; 0
 * keeps verdicts in memory only.
 */

static void
cfg_k_vc_size(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	uint64_t n;

	if (cfg_size(st, k, v, &n) == -1)
		return;
	if (n != 0 && (n < CFG_VCACHE_MIN || n > CFG_VCACHE_MAX)) {
		cfg_err(st, v->pos, "size must be 0 or from 1M to 64G");
		return;
	}
	((struct config *)o)->vcache_size = n;
}

static const struct cfg_key cfg_vcache_keys[] = {
    {"size", cfg_k_vc_size, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_verdict_cache(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	if (cfg_want_map(st, k, v))
		cfg_walk(st, v, "verdict_cache", cfg_vcache_keys, o);
}

/*
 * certificates: name -> { cert, key, ocsp }.  The parent checks the files
 * at load (the certificate and its chain parse, the key parses and
 * matches, the OCSP response parses) and then forgets them: the key is
 * wiped as soon as it is checked.  It reads them again when it packs the
 * configuration for tlsd (config_cert_read).
 */

static int cfg_slurp(const char *, size_t, uint8_t **, size_t *);

static const struct cfg_enum cfg_tls_versions[] = {
    {"1.0", TLS1_VERSION},
    {"1.1", TLS1_1_VERSION},
    {"1.2", TLS1_2_VERSION},
    {"1.3", TLS1_3_VERSION},
    {NULL, 0},
};
static const struct cfg_enum cfg_tls_modes[] = {
    {"disabled", TLS_MODE_DISABLED},
    {"enabled", TLS_MODE_ENABLED},
    {"required", TLS_MODE_REQUIRED},
    {NULL, 0},
};

void
config_cert_wipe(struct cfg_cert *c)
{
	if (c->cert_pem != NULL)
		explicit_bzero(c->cert_pem, c->cert_len);
	if (c->key_pem != NULL)
		explicit_bzero(c->key_pem, c->key_len);
	if (c->ocsp_der != NULL)
		explicit_bzero(c->ocsp_der, c->ocsp_len);
	free(c->cert_pem);
	free(c->key_pem);
	free(c->ocsp_der);
	c->cert_pem = c->key_pem = c->ocsp_der = NULL;
	c->cert_len = c->key_len = c->ocsp_len = 0;
}

int
config_cert_read(const struct cfg_cert *src, struct cfg_cert *dst)
{
	int e;

	dst->cert_pem = dst->key_pem = dst->ocsp_der = NULL;
	dst->cert_len = dst->key_len = dst->ocsp_len = 0;
	if (cfg_slurp(src->cert, CFG_TLS_MAX_FILE, &dst->cert_pem,
	        &dst->cert_len) == -1 ||
	    cfg_slurp(src->key, CFG_TLS_MAX_FILE, &dst->key_pem,
	        &dst->key_len) == -1 ||
	    (src->ocsp != NULL && cfg_slurp(src->ocsp, CFG_TLS_MAX_FILE,
	                              &dst->ocsp_der, &dst->ocsp_len) == -1)) {
		e = errno;
		config_cert_wipe(dst);
		errno = e;
		return -1;
	}
	return 0;
}

int
config_host_name_ok(const char *s)
{
	struct in6_addr a6;
	struct in_addr a4;
	size_t i, n = strlen(s);

	if (n == 0 || n > CFG_TLS_MAX_NAME || s[0] == '.' || s[0] == '-' ||
	    inet_pton(AF_INET, s, &a4) == 1 || inet_pton(AF_INET6, s, &a6) == 1)
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		        (s[i] >= 'A' && s[i] <= 'Z') ||
		        (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
		        s[i] == '.'))
			return 0;
	return 1;
}

/* Never ask for a pass phrase (on the terminal): encrypted keys fail. */
static int
cfg_no_pass(char *buf, int size, int rw, void *u)
{
	(void)buf;
	(void)size;
	(void)rw;
	(void)u;
	return 0;
}

/* The PEM certificates in data: their number, -1 if a block is bad. */
static int
cfg_pem_certs(const uint8_t *data, size_t len, X509 **first)
{
	unsigned long e;
	X509 *x;
	BIO *bio;
	int n = 0;

	if (first != NULL)
		*first = NULL;
	if (len > INT32_MAX || (bio = BIO_new_mem_buf(data, (int)len)) == NULL)
		return -1;
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(bio, NULL, cfg_no_pass, NULL)) != NULL) {
		if (n++ == 0 && first != NULL)
			*first = x;
		else
			X509_free(x);
	}
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) != ERR_LIB_PEM ||
	    ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
		n = -1;
	ERR_clear_error();
	BIO_free(bio);
	if (n == -1 && first != NULL) {
		X509_free(*first);
		*first = NULL;
	}
	return n;
}

/* Read a file named at pos, with the error "<what>: cannot read ...". */
static int
cfg_tls_slurp(struct cfg_state *st, struct cfg_pos pos, const char *what,
    const char *path, size_t max, uint8_t **data, size_t *len)
{
	if (cfg_slurp(path, max, data, len) == 0)
		return 0;
	if (errno == ENOMEM)
		cfg_oom(st);
	else if (errno == EFBIG)
		cfg_err(st, pos, "%s: %.200s is larger than %zuK", what, path,
		    max / 1024);
	else if (errno == EINVAL)
		cfg_err(st, pos, "%s: cannot read %.200s: not a regular file",
		    what, path);
	else
		cfg_err(st, pos, "%s: cannot read %.200s: %s", what, path,
		    strerror(errno));
	return -1;
}

struct cfg_certx {
	struct cfg_cert *c;
	struct cfg_pos cert, key, ocsp;
};

static void
cfg_k_ccert(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_certx *x = o;

	cfg_set_path(st, k, v, &x->c->cert);
	x->cert = v->pos;
}

static void
cfg_k_ckey(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_certx *x = o;

	cfg_set_path(st, k, v, &x->c->key);
	x->key = v->pos;
}

static void
cfg_k_cocsp(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_certx *x = o;

	cfg_set_path(st, k, v, &x->c->ocsp);
	x->ocsp = v->pos;
}

static const struct cfg_key cfg_cert_keys[] = {
    {"cert", cfg_k_ccert, 1},
    {"key", cfg_k_ckey, 1},
    {"ocsp", cfg_k_cocsp, 0},
    {NULL, NULL, 0},
};

/* "Jan  2 15:04:05 2027 GMT" */
static void
cfg_asn1_time(const ASN1_TIME *t, char *out, size_t len)
{
	BIO *bio;
	int n;

	out[0] = '\0';
	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return;
	if (ASN1_TIME_print(bio, t) == 1 &&
	    (n = BIO_read(bio, out, (int)len - 1)) > 0)
		out[n] = '\0';
	BIO_free(bio);
}

/* Subject and fingerprint, for imapgwctl audit; validity warnings. */
static void
cfg_cert_info(struct cfg_state *st, struct cfg_certx *x, X509 *crt)
{
	struct cfg_cert *c = x->c;
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned i, mdlen = 0;
	char when[64], *p;
	BIO *bio;
	long n;

	if (X509_cmp_current_time(X509_get0_notAfter(crt)) < 0) {
		cfg_asn1_time(X509_get0_notAfter(crt), when, sizeof(when));
		cfg_warn(st, x->cert,
		    "certificate '%.64s': %.200s expired on %s", c->name,
		    c->cert, when);
	}
	if (X509_cmp_current_time(X509_get0_notBefore(crt)) > 0) {
		cfg_asn1_time(X509_get0_notBefore(crt), when, sizeof(when));
		cfg_warn(st, x->cert,
		    "certificate '%.64s': %.200s is not valid before %s",
		    c->name, c->cert, when);
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL) {
		cfg_oom(st);
		return;
	}
	X509_NAME_print_ex(bio, X509_get_subject_name(crt), 0, XN_FLAG_RFC2253);
	n = BIO_get_mem_data(bio, &p);
	if ((c->subject = strndup(n > 0 ? p : "", n > 0 ? (size_t)n : 0)) ==
	    NULL)
		cfg_oom(st);
	BIO_free(bio);
	if (X509_digest(crt, EVP_sha256(), md, &mdlen) != 1 ||
	    (c->fingerprint = malloc(mdlen * 3 + 1)) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < mdlen; i++)
		snprintf(c->fingerprint + i * 3, 4,
		    i + 1 < mdlen ? "%02X:" : "%02X", md[i]);
}

static void
cfg_cert_ocsp(
    struct cfg_state *st, struct cfg_certx *x, const struct cfg_cert *f)
{
	const unsigned char *p = f->ocsp_der;
	OCSP_RESPONSE *resp;
	int status;

	resp = d2i_OCSP_RESPONSE(NULL, &p, (long)f->ocsp_len);
	if (resp == NULL || p != f->ocsp_der + f->ocsp_len) {
		cfg_err(st, x->ocsp,
		    "certificate '%.64s': %.200s is not a DER OCSP response",
		    x->c->name, x->c->ocsp);
	} else if ((status = OCSP_response_status(resp)) !=
	           OCSP_RESPONSE_STATUS_SUCCESSFUL)
		cfg_err(st, x->ocsp,
		    "certificate '%.64s': the OCSP response %.200s is not "
		    "successful (%s)",
		    x->c->name, x->c->ocsp, OCSP_response_status_str(status));
	OCSP_RESPONSE_free(resp);
	ERR_clear_error();
}

/* The files of one certificate, read and checked; the key wiped. */
static void
cfg_cert_check(struct cfg_state *st, struct cfg_certx *x)
{
	struct cfg_cert *c = x->c, f;
	char what[96];
	EVP_PKEY *pkey = NULL;
	X509 *crt = NULL;
	struct stat sb;
	BIO *bio;

	memset(&f, 0, sizeof(f));
	snprintf(what, sizeof(what), "certificate '%.64s'", c->name);
	if (cfg_tls_slurp(st, x->cert, what, c->cert, CFG_TLS_MAX_FILE,
	        &f.cert_pem, &f.cert_len) == -1 ||
	    cfg_tls_slurp(st, x->key, what, c->key, CFG_TLS_MAX_FILE,
	        &f.key_pem, &f.key_len) == -1 ||
	    (c->ocsp != NULL &&
	        cfg_tls_slurp(st, x->ocsp, what, c->ocsp, CFG_TLS_MAX_FILE,
	            &f.ocsp_der, &f.ocsp_len) == -1))
		goto done;
	if (stat(c->key, &sb) == 0 && (sb.st_mode & (S_IRWXG | S_IRWXO)))
		cfg_warn(st, x->key,
		    "%s: the key file %.200s can be read by others "
		    "(mode %04o); make it 0600",
		    what, c->key, (unsigned)(sb.st_mode & 07777));
	if (cfg_pem_certs(f.cert_pem, f.cert_len, &crt) < 1) {
		cfg_err(st, x->cert,
		    "%s: %.200s is not a PEM certificate (and chain)", what,
		    c->cert);
		goto done;
	}
	cfg_cert_info(st, x, crt);
	if ((bio = BIO_new_mem_buf(f.key_pem, (int)f.key_len)) == NULL) {
		cfg_oom(st);
		goto done;
	}
	pkey = PEM_read_bio_PrivateKey(bio, NULL, cfg_no_pass, NULL);
	BIO_free(bio);
	if (pkey == NULL)
		cfg_err(st, x->key,
		    "%s: %.200s is not a PEM private key (encrypted keys are "
		    "not supported)",
		    what, c->key);
	else if (X509_check_private_key(crt, pkey) != 1)
		cfg_err(st, x->key,
		    "%s: key %.200s does not match the "
		    "certificate %.200s",
		    what, c->key, c->cert);
	if (f.ocsp_der != NULL)
		cfg_cert_ocsp(st, x, &f);
done:
	ERR_clear_error();
	EVP_PKEY_free(pkey);
	X509_free(crt);
	config_cert_wipe(&f);
}

static void
cfg_cert(
    struct cfg_state *st, struct ynode *k, struct ynode *v, struct cfg_cert *c)
{
	struct cfg_certx x;
	char sect[96];
	size_t nerrs = st->nerrs;

	memset(&x, 0, sizeof(x));
	x.c = c;
	c->name = cfg_strdup(st, k->str);
	c->pos = k->pos;
	if (v->type == YN_BAD || !cfg_want_map(st, k, v) || c->name == NULL)
		return;
	snprintf(sect, sizeof(sect), "certificate '%.64s'", k->str);
	cfg_walk(st, v, sect, cfg_cert_keys, &x);
	if (st->nerrs == nerrs && !st->oom && c->cert != NULL && c->key != NULL)
		cfg_cert_check(st, &x);
}

static void
cfg_k_certificates(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct config *cfg = o;
	size_t i, n;

	if (!cfg_want_map(st, k, v) || (n = v->nkids / 2) == 0)
		return;
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many certificates (at most %d)",
		    CONFIG_MAX_ITEMS);
		return;
	}
	if ((cfg->certs = calloc(n, sizeof(*cfg->certs))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < v->nkids; i += 2)
		if (cfg_key_ok(st, v, i, "certificates"))
			cfg_cert(st, v->kids[i], v->kids[i + 1],
			    &cfg->certs[cfg->ncerts++]);
}

/*
 * tls_profiles: name -> { min_version, ciphers, ciphersuites,
 * compliant_only, verify_peer, ca_file, session_cache, session_timeout }.
 * "default" is built in (index 0); a profile named default in the file
 * sets its values (over the built-in defaults).
 */

static void
cfg_profile_defaults(struct cfg_tls_profile *p)
{
	p->min_version = TLS1_2_VERSION;
	p->compliant_only = 0;
	p->verify_peer = 1;
	p->session_cache = 1;
	p->session_timeout_ms = 5 * 60 * 1000;
}

static void
cfg_k_min_version(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_enum(st, k, v, cfg_tls_versions,
	    &((struct cfg_tls_profile *)o)->min_version);
}

/* ciphers (TLS 1.2 and below) or ciphersuites (TLS 1.3): OpenSSL must
 * select at least one from the string. */
static void
cfg_cipher_str(struct cfg_state *st, struct ynode *k, struct ynode *v,
    char **dst, int tls13)
{
	const char *s;
	SSL_CTX *ctx;
	int ok;

	if ((s = cfg_str(st, k, v)) == NULL)
		return;
	if ((ctx = SSL_CTX_new(TLS_method())) == NULL) {
		cfg_oom(st);
		return;
	}
	ok = tls13 ? SSL_CTX_set_ciphersuites(ctx, s)
	           : SSL_CTX_set_cipher_list(ctx, s);
	if (ok == 1 && !tls13) {
		/* Also refused: a list of TLS 1.3 suites only. */
		STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);
		int i, n = 0;

		for (i = 0; sk != NULL && i < sk_SSL_CIPHER_num(sk); i++)
			if (strcmp(SSL_CIPHER_get_version(
			               sk_SSL_CIPHER_value(sk, i)),
			        "TLSv1.3") != 0)
				n++;
		ok = n > 0;
	}
	SSL_CTX_free(ctx);
	ERR_clear_error();
	if (ok != 1) {
		cfg_err(st, v->pos, "%s: %s '%.200s' selects no cipher%s",
		    st->label, k->str, s, tls13 ? " suite" : "");
		return;
	}
	cfg_set_str(st, k, v, dst);
}

static void
cfg_k_ciphers(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_cipher_str(st, k, v, &((struct cfg_tls_profile *)o)->ciphers, 0);
}

static void
cfg_k_ciphersuites(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_cipher_str(
	    st, k, v, &((struct cfg_tls_profile *)o)->ciphersuites, 1);
}

static void
cfg_k_compliant_only(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_bool(st, k, v, &((struct cfg_tls_profile *)o)->compliant_only);
}

static void
cfg_k_verify_peer(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_bool(st, k, v, &((struct cfg_tls_profile *)o)->verify_peer);
}

static void
cfg_k_session_cache(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_bool(st, k, v, &((struct cfg_tls_profile *)o)->session_cache);
}

static void
cfg_k_session_timeout(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	uint64_t ms;

	if (cfg_duration(st, k, v, &ms) == -1)
		return;
	if (ms < 1000 || ms > CFG_TLS_MAX_SESSION_TIMEOUT_MS) {
		cfg_err(st, v->pos, "session_timeout must be from 1s to 24h");
		return;
	}
	((struct cfg_tls_profile *)o)->session_timeout_ms = ms;
}

/* A CA bundle: read now (tlsd is chrooted), at least one certificate. */
static int
cfg_read_ca(struct cfg_state *st, struct cfg_pos pos, const char *what,
    struct cfg_tls_profile *p, const char *path)
{
	uint8_t *data;
	size_t len;

	if (cfg_tls_slurp(st, pos, what, path, CFG_TLS_MAX_CA, &data, &len) ==
	    -1)
		return -1;
	if (cfg_pem_certs(data, len, NULL) < 1) {
		cfg_err(st, pos,
		    "%s: the CA file %.200s has no PEM certificate", what,
		    path);
		free(data);
		return -1;
	}
	free(p->ca_pem);
	p->ca_pem = data;
	p->ca_len = len;
	return 0;
}

static void
cfg_k_ca_file(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_tls_profile *p = o;
	size_t nerrs = st->nerrs;

	cfg_set_path(st, k, v, &p->ca_file);
	if (st->nerrs == nerrs && p->ca_file != NULL)
		cfg_read_ca(st, v->pos, st->label, p, p->ca_file);
}

static const struct cfg_key cfg_profile_keys[] = {
    {"min_version", cfg_k_min_version, 0},
    {"ciphers", cfg_k_ciphers, 0},
    {"ciphersuites", cfg_k_ciphersuites, 0},
    {"compliant_only", cfg_k_compliant_only, 0},
    {"verify_peer", cfg_k_verify_peer, 0},
    {"ca_file", cfg_k_ca_file, 0},
    {"session_cache", cfg_k_session_cache, 0},
    {"session_timeout", cfg_k_session_timeout, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_tls_profiles(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct config *cfg = o;
	struct cfg_tls_profile *p;
	struct ynode *pk;
	size_t i, n;

	if (!cfg_want_map(st, k, v) || (n = v->nkids / 2) == 0)
		return;
	if (n >= CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many tls_profiles (at most %d)",
		    CONFIG_MAX_ITEMS - 1);
		return;
	}
	p = reallocarray(cfg->profiles, cfg->nprofiles + n, sizeof(*p));
	if (p == NULL) {
		cfg_oom(st);
		return;
	}
	cfg->profiles = p;
	memset(p + cfg->nprofiles, 0, n * sizeof(*p));
	for (i = 0; i < v->nkids; i += 2) {
		pk = v->kids[i];
		if (!cfg_key_ok(st, v, i, "tls_profiles"))
			continue;
		if (strcmp(pk->str, "default") == 0)
			p = &cfg->profiles[0];
		else {
			p = &cfg->profiles[cfg->nprofiles++];
			cfg_profile_defaults(p);
			if ((p->name = cfg_strdup(st, pk->str)) == NULL)
				return;
		}
		p->pos = pk->pos;
		if (v->kids[i + 1]->type == YN_BAD ||
		    !cfg_want_map(st, pk, v->kids[i + 1]))
			continue;
		snprintf(st->label, sizeof(st->label), "tls_profile '%.64s'",
		    pk->str);
		cfg_walk(st, v->kids[i + 1], st->label, cfg_profile_keys, p);
	}
}

/*
 * servers: name -> { balance, tls, connect_timeout, send_id, connect,
 * members, tls_profile, server_name }.
 */

static void
cfg_bad_member(struct cfg_state *st, struct ynode *v)
{
	cfg_err(st, v->pos,
	    "bad address '%.80s' (use host:port or [ipv6]:port)", v->str);
}

/* Decimal port 1..65535. */
static int
cfg_port(const char *s, uint16_t *port)
{
	long n;

	if (cfg_uint(s, &n) == -1 || n < 1 || n > 65535)
		return -1;
	*port = (uint16_t)n;
	return 0;
}

static void
cfg_set_port(struct cfg_addr *a, uint16_t port)
{
	if (a->ss.ss_family == AF_INET)
		((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
	else if (a->ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
}

/* "host:port" with a host name: resolved now, first result. */
static void
cfg_resolve_host(struct cfg_state *st, struct ynode *v, struct cfg_addr *a)
{
	struct addrinfo hints, *res;
	char *colon, host[NI_MAXHOST];
	uint16_t port;
	size_t hlen;
	int e;

	colon = strrchr(v->str, ':');
	hlen = colon ? (size_t)(colon - v->str) : 0;
	if (v->str[0] == '[' || hlen == 0 || hlen >= sizeof(host) ||
	    memchr(v->str, ':', hlen) != NULL ||
	    cfg_port(colon + 1, &port) == -1) {
		cfg_bad_member(st, v);
		return;
	}
	memcpy(host, v->str, hlen);
	host[hlen] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((e = getaddrinfo(host, NULL, &hints, &res)) != 0) {
		cfg_err(st, v->pos, "cannot resolve host '%.80s': %s", host,
		    gai_strerror(e));
		return;
	}
	memset(a, 0, sizeof(*a));
	if (res->ai_addrlen <= sizeof(a->ss)) {
		memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
		a->len = res->ai_addrlen;
	}
	freeaddrinfo(res);
	cfg_set_port(a, port);
	addr_text((struct sockaddr *)&a->ss, a->text, sizeof(a->text));
}

static void
cfg_k_maddress(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_member *m = o;

	if (cfg_str(st, k, v) == NULL)
		return;
	free(m->host);
	if ((m->host = cfg_strdup(st, v->str)) == NULL)
		return;
	if (parse_addr(v->str, &m->addr) == -1)
		cfg_resolve_host(st, v, &m->addr);
}

static void
cfg_k_weight(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	long n;

	if (cfg_int(st, k, v, 1, 100, &n) == 0)
		((struct cfg_member *)o)->weight = (uint32_t)n;
}

static const struct cfg_key cfg_member_keys[] = {
    {"address", cfg_k_maddress, 1},
    {"weight", cfg_k_weight, 0},
    {NULL, NULL, 0},
};

static void
cfg_member(struct cfg_state *st, struct ynode *k, struct ynode *item,
    struct cfg_member *m)
{
	char sect[128];

	m->weight = 1;
	m->pos = item->pos;
	if (item->type == YN_BAD)
		return;
	if (item->type == YN_SCALAR) {
		cfg_k_maddress(st, k, item, m);
		return;
	}
	if (item->type != YN_MAP) {
		cfg_err(
		    st, item->pos, "a member must be a string or a mapping");
		return;
	}
	snprintf(sect, sizeof(sect), "member of %s", st->label);
	cfg_walk(st, item, sect, cfg_member_keys, m);
}

static void
cfg_k_members(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_server *s = o;
	struct ynode **items;
	size_t i, n;

	if (v->type != YN_SEQ && !yn_null(v)) {
		cfg_err(st, v->pos, "'members' must be a sequence");
		return;
	}
	if ((n = v->nkids) == 0) {
		cfg_err(st, v->pos, "'members' must not be empty");
		return;
	}
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many members (at most %d)",
		    CONFIG_MAX_ITEMS);
		return;
	}
	if ((s->members = calloc(n, sizeof(*s->members))) == NULL) {
		cfg_oom(st);
		return;
	}
	items = v->kids;
	for (i = 0; i < n; i++)
		cfg_member(st, k, items[i], &s->members[s->nmembers++]);
}

static void
cfg_k_balance(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_enum(st, k, v, cfg_balances, &((struct cfg_server *)o)->balance);
}

static void
cfg_k_srvtls(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_enum(st, k, v, cfg_srv_tls, &((struct cfg_server *)o)->tls);
}

static void
cfg_k_srvprofile(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_server *s = o;

	cfg_set_str(st, k, v, &s->tls_profile);
	st->sprofile[s - st->cfg->servers] = v->pos;
}

static void
cfg_k_server_name(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	if (cfg_str(st, k, v) == NULL)
		return;
	if (!config_host_name_ok(v->str)) {
		cfg_err(st, v->pos,
		    "server_name '%.64s' must be a DNS host name (letters, "
		    "digits, '-' and '.', at most %d bytes)",
		    v->str, CFG_TLS_MAX_NAME);
		return;
	}
	cfg_set_str(st, k, v, &((struct cfg_server *)o)->server_name);
}

static void
cfg_k_connect_timeout(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	uint64_t ms;

	if (cfg_duration(st, k, v, &ms) == -1)
		return;
	if (ms == 0) {
		cfg_err(st, v->pos, "connect_timeout must not be 0");
		return;
	}
	((struct cfg_server *)o)->connect_timeout_ms = ms;
}

static void
cfg_k_send_id(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_bool(st, k, v, &((struct cfg_server *)o)->send_id);
}

static void
cfg_k_connect(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_enum(st, k, v, cfg_srv_connect, &((struct cfg_server *)o)->connect);
}

static const struct cfg_key cfg_server_keys[] = {
    {"balance", cfg_k_balance, 0},
    {"tls", cfg_k_srvtls, 0},
    {"tls_profile", cfg_k_srvprofile, 0},
    {"server_name", cfg_k_server_name, 0},
    {"connect_timeout", cfg_k_connect_timeout, 0},
    {"send_id", cfg_k_send_id, 0},
    {"connect", cfg_k_connect, 0},
    {"members", cfg_k_members, 1},
    {NULL, NULL, 0},
};

static void
cfg_server(struct cfg_state *st, struct ynode *k, struct ynode *v,
    struct cfg_server *s)
{
	s->name = cfg_strdup(st, k->str);
	s->pos = k->pos;
	s->balance = BALANCE_ROUND_ROBIN;
	s->tls = SRV_TLS_NONE;
	s->tls_profile = cfg_strdup(st, "default");
	s->profileidx = 0;
	s->connect_timeout_ms = 10 * 1000;
	s->send_id = 1;
	s->connect = SRV_CONNECT_LAZY;
	if (v->type == YN_BAD || !cfg_want_map(st, k, v))
		return;
	snprintf(st->label, sizeof(st->label), "server '%.64s'", k->str);
	cfg_walk(st, v, st->label, cfg_server_keys, s);
}

static void
cfg_k_servers(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct config *cfg = o;
	size_t i, n;

	if (!cfg_want_map(st, k, v) || (n = v->nkids / 2) == 0)
		return;
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many servers (at most %d)",
		    CONFIG_MAX_ITEMS);
		return;
	}
	if ((cfg->servers = calloc(n, sizeof(*cfg->servers))) == NULL ||
	    (st->sprofile = calloc(n, sizeof(*st->sprofile))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < v->nkids; i += 2) {
		if (cfg_key_ok(st, v, i, "servers"))
			cfg_server(st, v->kids[i], v->kids[i + 1],
			    &cfg->servers[cfg->nservers++]);
	}
}

/*
 * actions: name -> { inherit, general, content_types, filenames, headers,
 * antivirus, apt_blocker, spamblocker, deny_message }.  The walk records
 * what the file sets (the SET bits of cfg_aaux); values are resolved
 * after it, when every action is known, key by key over the inherited
 * ones.  Then the parent reads the files of the actions policies use.
 */

static void
cfg_k_inherit(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	cfg_set_str(st, k, v, &x->act->inherit);
	x->ipos = v->pos;
}

static void
cfg_k_max_email_size(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;
	uint64_t n;

	if (cfg_size(st, k, v, &n) == -1)
		return;
	if (n < 1024) {
		cfg_err(st, v->pos, "max_email_size must be at least 1K");
		return;
	}
	x->ov.max_email_size = n;
	x->set |= SET_MAXSIZE;
}

static void
cfg_k_oversize(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_enum(st, k, v, cfg_oversize, &x->ov.oversize) == 0)
		x->set |= SET_OVERSIZE;
}

static void
cfg_k_max_line_length(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;
	uint64_t n;

	if (cfg_size(st, k, v, &n) == -1)
		return;
	if (n < 1024 || n > 16 * 1024 * 1024) {
		cfg_err(
		    st, v->pos, "max_line_length must be between 1K and 16M");
		return;
	}
	x->ov.max_line_length = n;
	x->set |= SET_MAXLINE;
}

static void
cfg_k_max_archive_depth(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;
	long n;

	if (cfg_int(st, k, v, 0, CFG_MAX_ARCHIVE_DEPTH, &n) == 0) {
		x->ov.max_archive_depth = (uint32_t)n;
		x->set |= SET_ARCDEPTH;
	}
}

static void
cfg_k_consistency(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_enum(st, k, v, cfg_consistency, &x->ov.consistency) == 0)
		x->set |= SET_CONSIST;
}

static const struct cfg_key cfg_general_keys[] = {
    {"max_email_size", cfg_k_max_email_size, 0},
    {"oversize", cfg_k_oversize, 0},
    {"max_line_length", cfg_k_max_line_length, 0},
    {"max_archive_depth", cfg_k_max_archive_depth, 0},
    {"consistency", cfg_k_consistency, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_general(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	char sect[128];

	if (!cfg_want_map(st, k, v))
		return;
	snprintf(sect, sizeof(sect), "general of %s", st->label);
	cfg_walk(st, v, sect, cfg_general_keys, o);
}

static void
cfg_k_deny_message(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_set_str(st, k, v, &((struct cfg_aaux *)o)->deny);
}

/*
 * antivirus: { enabled, database, on_virus, on_error, max_scan_size,
 * max_file_size, max_recursion, max_files, max_scan_time }.
 */

static void
cfg_k_av_enabled(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_bool(st, k, v, &x->av.enabled) == 0)
		x->avset |= AVSET_ENABLED;
}

static void
cfg_k_av_database(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	cfg_set_path(st, k, v, &x->av.database);
	if (x->av.database != NULL)
		x->avset |= AVSET_DATABASE;
}

static void
cfg_k_av_on_virus(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_enum(st, k, v, cfg_on_virus, &x->av.on_virus) == 0)
		x->avset |= AVSET_ON_VIRUS;
}

static void
cfg_k_av_on_error(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_enum(st, k, v, cfg_on_error, &x->av.on_error) == 0)
		x->avset |= AVSET_ON_ERROR;
}

/* A size limit of libclamav: 1K to 4000M (it counts in 32 bits). */
static int
cfg_av_size(
    struct cfg_state *st, struct ynode *k, struct ynode *v, uint64_t *out)
{
	uint64_t n;

	if (cfg_size(st, k, v, &n) == -1)
		return -1;
	if (n < 1024 || n > CFG_AV_MAX_SIZE) {
		cfg_err(st, v->pos, "%s must be between 1K and 4000M", k->str);
		return -1;
	}
	*out = n;
	return 0;
}

static void
cfg_k_av_scan_size(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_av_size(st, k, v, &x->av.max_scan_size) == 0)
		x->avset |= AVSET_SCANSIZE;
}

static void
cfg_k_av_file_size(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_av_size(st, k, v, &x->av.max_file_size) == 0)
		x->avset |= AVSET_FILESIZE;
}

static void
cfg_k_av_recursion(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;
	long n;

	if (cfg_int(st, k, v, 1, CFG_AV_MAX_RECURSION, &n) == 0) {
		x->av.max_recursion = (uint32_t)n;
		x->avset |= AVSET_RECURSION;
	}
}

static void
cfg_k_av_files(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;
	long n;

	if (cfg_int(st, k, v, 1, CFG_AV_MAX_FILES, &n) == 0) {
		x->av.max_files = (uint32_t)n;
		x->avset |= AVSET_FILES;
	}
}

static void
cfg_k_av_scan_time(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;
	uint64_t ms;

	if (cfg_duration(st, k, v, &ms) == -1)
		return;
	if (ms == 0 || ms > CFG_AV_MAX_TIME_MS) {
		cfg_err(
		    st, v->pos, "max_scan_time must be between 1ms and 24h");
		return;
	}
	x->av.max_scan_time_ms = ms;
	x->avset |= AVSET_TIME;
}

static const struct cfg_key cfg_antivirus_keys[] = {
    {"enabled", cfg_k_av_enabled, 0},
    {"database", cfg_k_av_database, 0},
    {"on_virus", cfg_k_av_on_virus, 0},
    {"on_error", cfg_k_av_on_error, 0},
    {"max_scan_size", cfg_k_av_scan_size, 0},
    {"max_file_size", cfg_k_av_file_size, 0},
    {"max_recursion", cfg_k_av_recursion, 0},
    {"max_files", cfg_k_av_files, 0},
    {"max_scan_time", cfg_k_av_scan_time, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_antivirus(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	char sect[128];

	if (!cfg_want_map(st, k, v))
		return;
	snprintf(sect, sizeof(sect), "antivirus of %s", st->label);
	cfg_walk(st, v, sect, cfg_antivirus_keys, o);
}

/*
 * content_types, filenames, headers: { auto_detect, archives,
 * none_matched, rules }, where rules is a sequence of { name, match,
 * type, action, alarm, log }.
 */

struct cfg_rsec {
	struct cfg_raux *x;
	const struct cfg_enum *acts; /* what rules and none_matched may do */
	char sect[192]; /* "content_types of action 'a'" */
};

struct cfg_rctx {
	struct cfg_rule *r;
	const struct cfg_enum *acts;
	struct cfg_pos mpos; /* of the match value */
};

static void
cfg_k_rname(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_set_str(st, k, v, &((struct cfg_rctx *)o)->r->name);
}

static void
cfg_k_rmatch(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_rctx *c = o;

	cfg_set_str(st, k, v, &c->r->match);
	c->mpos = v->pos;
}

static void
cfg_k_rtype(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_enum(st, k, v, cfg_match_types, &((struct cfg_rctx *)o)->r->type);
}

static void
cfg_k_raction(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_rctx *c = o;

	cfg_enum(st, k, v, c->acts, &c->r->action);
}

static void
cfg_k_ralarm(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_bool(st, k, v, &((struct cfg_rctx *)o)->r->alarm);
}

static void
cfg_k_rlog(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_bool(st, k, v, &((struct cfg_rctx *)o)->r->log);
}

static const struct cfg_key cfg_rule_keys[] = {
    {"name", cfg_k_rname, 0},
    {"match", cfg_k_rmatch, 1},
    {"type", cfg_k_rtype, 0},
    {"action", cfg_k_raction, 1},
    {"alarm", cfg_k_ralarm, 0},
    {"log", cfg_k_rlog, 0},
    {NULL, NULL, 0},
};

/* A regular expression must compile, with the options scand/rules.c
 * compiles it with again. */
static void
cfg_regex(struct cfg_state *st, struct cfg_pos pos, const char *re)
{
	PCRE2_UCHAR msg[256];
	PCRE2_SIZE off;
	pcre2_code *code;
	int e;

	code = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED,
	    PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C, &e,
	    &off, NULL);
	if (code != NULL) {
		pcre2_code_free(code);
		return;
	}
	if (pcre2_get_error_message(e, msg, sizeof(msg)) < 0)
		snprintf((char *)msg, sizeof(msg), "error %d", e);
	cfg_err(st, pos, "bad regular expression: %s at offset %zu",
	    (char *)msg, (size_t)off);
}

static void
cfg_rule(struct cfg_state *st, struct cfg_rsec *sec, struct ynode *item,
    size_t idx, struct cfg_rule *r)
{
	struct cfg_rctx c;
	char sect[256];

	r->type = MATCH_PATTERN;
	r->action = ACT_ALLOW;
	r->alarm = 0;
	r->log = 1;
	r->pos = item->pos;
	if (item->type == YN_BAD)
		return;
	if (item->type != YN_MAP && !yn_null(item)) {
		cfg_err(st, item->pos, "a rule must be a mapping");
		return;
	}
	memset(&c, 0, sizeof(c));
	c.r = r;
	c.acts = sec->acts;
	snprintf(sect, sizeof(sect), "rule %zu of %s", idx + 1, sec->sect);
	cfg_walk(st, item, sect, cfg_rule_keys, &c);
	if (r->match == NULL)
		return;
	if (r->type == MATCH_REGEX)
		cfg_regex(st, c.mpos, r->match);
	if (r->name == NULL)
		r->name = cfg_strdup(st, r->match);
}

static void
cfg_k_rrules(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_rsec *sec = o;
	struct cfg_rules *rs = &sec->x->r;
	size_t i, n;

	if (v->type != YN_SEQ && !yn_null(v)) {
		cfg_err(st, v->pos, "'%s' must be a sequence", k->str);
		return;
	}
	n = v->type == YN_SEQ ? v->nkids : 0;
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many rules in %s (at most %d)",
		    sec->sect, CONFIG_MAX_ITEMS);
		return;
	}
	sec->x->set |= RSET_RULES;
	if (n == 0)
		return;
	if ((rs->rules = calloc(n, sizeof(*rs->rules))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < n; i++) {
		rs->nrules++;
		cfg_rule(st, sec, v->kids[i], i, &rs->rules[i]);
	}
}

static void
cfg_k_auto_detect(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_raux *x = ((struct cfg_rsec *)o)->x;

	if (cfg_bool(st, k, v, &x->r.auto_detect) == 0)
		x->set |= RSET_AUTO;
}

static void
cfg_k_archives(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_raux *x = ((struct cfg_rsec *)o)->x;

	if (cfg_bool(st, k, v, &x->r.archives) == 0)
		x->set |= RSET_ARCHIVES;
}

static void
cfg_k_none_matched(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_rsec *sec = o;

	if (cfg_enum(st, k, v, sec->acts, &sec->x->r.none_matched) == 0)
		sec->x->set |= RSET_NONE;
}

static const struct cfg_key cfg_ct_keys[] = {
    {"auto_detect", cfg_k_auto_detect, 0},
    {"archives", cfg_k_archives, 0},
    {"none_matched", cfg_k_none_matched, 0},
    {"rules", cfg_k_rrules, 0},
    {NULL, NULL, 0},
};

static const struct cfg_key cfg_fn_keys[] = {
    {"archives", cfg_k_archives, 0},
    {"none_matched", cfg_k_none_matched, 0},
    {"rules", cfg_k_rrules, 0},
    {NULL, NULL, 0},
};

static const struct cfg_key cfg_hdr_keys[] = {
    {"none_matched", cfg_k_none_matched, 0},
    {"rules", cfg_k_rrules, 0},
    {NULL, NULL, 0},
};

static void
cfg_rules_section(struct cfg_state *st, struct ynode *k, struct ynode *v,
    struct cfg_aaux *x, int kind)
{
	static const struct cfg_key *const keys[RULES_N] = {
	    [RULES_CT] = cfg_ct_keys,
	    [RULES_FN] = cfg_fn_keys,
	    [RULES_HDR] = cfg_hdr_keys,
	};
	struct cfg_rsec sec;

	if (!cfg_want_map(st, k, v))
		return;
	sec.x = &x->rules[kind];
	sec.acts = kind == RULES_HDR ? cfg_hdr_actions : cfg_rule_actions;
	snprintf(sec.sect, sizeof(sec.sect), "%s of %s", k->str, st->label);
	cfg_walk(st, v, sec.sect, keys[kind], &sec);
}

static void
cfg_k_content_types(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_rules_section(st, k, v, o, RULES_CT);
}

static void
cfg_k_filenames(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_rules_section(st, k, v, o, RULES_FN);
}

static void
cfg_k_headers(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_rules_section(st, k, v, o, RULES_HDR);
}

/*
 * apt_blocker: { enabled, database, actions: { high, medium, low } }.
 */

static void
cfg_k_apt_enabled(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_bool(st, k, v, &x->apt.enabled) == 0)
		x->aptset |= APTSET_ENABLED;
}

static void
cfg_k_apt_database(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	cfg_set_path(st, k, v, &x->apt.database);
	if (x->apt.database != NULL) {
		x->aptset |= APTSET_DATABASE;
		x->aptdb = v->pos;
	}
}

static void
cfg_apt_level(struct cfg_state *st, struct ynode *k, struct ynode *v,
    struct cfg_aaux *x, int level)
{
	if (cfg_enum(st, k, v, cfg_rule_actions, &x->apt.actions[level]) == 0)
		x->aptset |= APTSET_HIGH << level;
}

static void
cfg_k_apt_high(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_apt_level(st, k, v, o, APT_HIGH);
}

static void
cfg_k_apt_medium(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_apt_level(st, k, v, o, APT_MEDIUM);
}

static void
cfg_k_apt_low(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_apt_level(st, k, v, o, APT_LOW);
}

static const struct cfg_key cfg_apt_action_keys[] = {
    {"high", cfg_k_apt_high, 0},
    {"medium", cfg_k_apt_medium, 0},
    {"low", cfg_k_apt_low, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_apt_actions(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	char sect[192];

	if (!cfg_want_map(st, k, v))
		return;
	snprintf(sect, sizeof(sect), "actions of apt_blocker of %s", st->label);
	cfg_walk(st, v, sect, cfg_apt_action_keys, o);
}

static const struct cfg_key cfg_apt_keys[] = {
    {"enabled", cfg_k_apt_enabled, 0},
    {"database", cfg_k_apt_database, 0},
    {"actions", cfg_k_apt_actions, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_apt_blocker(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	char sect[192];

	if (!cfg_want_map(st, k, v))
		return;
	snprintf(sect, sizeof(sect), "apt_blocker of %s", st->label);
	cfg_walk(st, v, sect, cfg_apt_keys, o);
}

/*
 * spamblocker: { enabled, engine, rules, address, timeout, max_size,
 * on_unavailable, header, categories: { confirmed, bulk, suspect:
 * { action, tag, score } }, exceptions: [ { sender, recipient } ] }.
 */

static void
cfg_k_sp_enabled(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_bool(st, k, v, &x->sp.enabled) == 0)
		x->spset |= SPSET_ENABLED;
}

static void
cfg_k_sp_engine(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_enum(st, k, v, cfg_spam_engines, &x->sp.engine) == 0)
		x->spset |= SPSET_ENGINE;
}

static void
cfg_k_sp_rules(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	cfg_set_path(st, k, v, &x->sp.rules);
	if (x->sp.rules != NULL) {
		x->spset |= SPSET_RULES;
		x->sprules = v->pos;
	}
}

static void
cfg_k_sp_address(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;
	struct cfg_addr a;

	if (cfg_str(st, k, v) == NULL)
		return;
	if (parse_addr(v->str, &a) == -1) {
		cfg_err(st, v->pos,
		    "bad address '%.80s' (use a.b.c.d:port or [ipv6]:port)",
		    v->str);
		return;
	}
	x->sp.address = a;
	x->spset |= SPSET_ADDRESS;
}

static void
cfg_k_sp_timeout(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;
	uint64_t ms;

	if (cfg_duration(st, k, v, &ms) == -1)
		return;
	if (ms == 0 || ms > CFG_SPAM_MAX_TIMEOUT_MS) {
		cfg_err(st, v->pos, "timeout must be between 1ms and 1h");
		return;
	}
	x->sp.timeout_ms = ms;
	x->spset |= SPSET_TIMEOUT;
}

static void
cfg_k_sp_max_size(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_av_size(st, k, v, &x->sp.max_size) == 0)
		x->spset |= SPSET_MAXSIZE;
}

static void
cfg_k_sp_unavailable(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_enum(st, k, v, cfg_on_unavailable, &x->sp.on_unavailable) == 0)
		x->spset |= SPSET_UNAVAIL;
}

/* A header field name: RFC 5322 ftext (printable ASCII but the colon). */
static int
cfg_field_name(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126 ||
		    s[i] == ':')
			return -1;
	return i > 0 && i <= CFG_SPAM_MAX_HEADER ? 0 : -1;
}

static void
cfg_k_sp_header(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;

	if (cfg_str(st, k, v) == NULL)
		return;
	if (cfg_field_name(v->str) == -1) {
		cfg_err(st, v->pos,
		    "'%s' must be a header field name (at most %d printable "
		    "ASCII characters, no space or colon)",
		    k->str, CFG_SPAM_MAX_HEADER);
		return;
	}
	cfg_set_str(st, k, v, &x->sp.header);
	if (x->sp.header != NULL)
		x->spset |= SPSET_HEADER;
}

struct cfg_cctx {
	struct cfg_aaux *x;
	int cat;
};

static void
cfg_k_cat_action(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_cctx *c = o;

	if (cfg_enum(
	        st, k, v, cfg_spam_actions, &c->x->sp.cat[c->cat].action) == 0)
		c->x->catset[c->cat] |= CATSET_ACTION;
}

static void
cfg_k_cat_tag(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_cctx *c = o;
	const char *s;

	if ((s = cfg_str(st, k, v)) == NULL)
		return;
	if (strlen(s) > CFG_SPAM_MAX_TAG) {
		cfg_err(st, v->pos, "'%s' is too long (at most %d bytes)",
		    k->str, CFG_SPAM_MAX_TAG);
		return;
	}
	if (strpbrk(s, "\r\n") != NULL) {
		cfg_err(
		    st, v->pos, "'%s' must not contain a line break", k->str);
		return;
	}
	cfg_set_str(st, k, v, &c->x->sp.cat[c->cat].tag);
	if (c->x->sp.cat[c->cat].tag != NULL)
		c->x->catset[c->cat] |= CATSET_TAG;
}

/* A decimal number (sign, fraction, exponent), finite, not negative. */
static int
cfg_score(const char *s, double *out)
{
	char *end;
	double d;

	if (s[0] == '\0' || strspn(s, "0123456789.eE+-") != strlen(s))
		return -1;
	d = strtod(s, &end);
	if (*end != '\0' || !isfinite(d) || d < 0)
		return -1;
	*out = d == 0 ? 0 : d; /* no -0 */
	return 0;
}

static void
cfg_k_cat_score(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_cctx *c = o;

	if (v->type != YN_SCALAR ||
	    cfg_score(v->str, &c->x->sp.cat[c->cat].score) == -1) {
		cfg_err(
		    st, v->pos, "'%s' must be a number, at least 0", k->str);
		return;
	}
	c->x->catset[c->cat] |= CATSET_SCORE;
	c->x->score[c->cat] = v->pos;
}

static const struct cfg_key cfg_cat_keys[] = {
    {"action", cfg_k_cat_action, 0},
    {"tag", cfg_k_cat_tag, 0},
    {"score", cfg_k_cat_score, 0},
    {NULL, NULL, 0},
};

static void
cfg_category(struct cfg_state *st, struct ynode *k, struct ynode *v,
    struct cfg_aaux *x, int cat)
{
	struct cfg_cctx c;
	char sect[192];

	if (!cfg_want_map(st, k, v))
		return;
	c.x = x;
	c.cat = cat;
	snprintf(sect, sizeof(sect), "category %s of spamblocker of %s",
	    cfg_spam_cat_names[cat], st->label);
	cfg_walk(st, v, sect, cfg_cat_keys, &c);
}

static void
cfg_k_cat_confirmed(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_category(st, k, v, o, SPAM_CONFIRMED);
}

static void
cfg_k_cat_bulk(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_category(st, k, v, o, SPAM_BULK);
}

static void
cfg_k_cat_suspect(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_category(st, k, v, o, SPAM_SUSPECT);
}

static const struct cfg_key cfg_categories_keys[] = {
    {"confirmed", cfg_k_cat_confirmed, 0},
    {"bulk", cfg_k_cat_bulk, 0},
    {"suspect", cfg_k_cat_suspect, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_sp_categories(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	char sect[192];

	if (!cfg_want_map(st, k, v))
		return;
	snprintf(
	    sect, sizeof(sect), "categories of spamblocker of %s", st->label);
	cfg_walk(st, v, sect, cfg_categories_keys, o);
}

static void
cfg_k_exc_sender(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_set_str(st, k, v, &((struct cfg_spam_exception *)o)->sender);
}

static void
cfg_k_exc_recipient(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_set_str(st, k, v, &((struct cfg_spam_exception *)o)->recipient);
}

static const struct cfg_key cfg_exception_keys[] = {
    {"sender", cfg_k_exc_sender, 0},
    {"recipient", cfg_k_exc_recipient, 0},
    {NULL, NULL, 0},
};

static void
cfg_exception(struct cfg_state *st, struct ynode *item, size_t idx,
    struct cfg_spam_exception *e)
{
	char sect[192];
	size_t nerrs = st->nerrs;

	e->pos = item->pos;
	if (item->type == YN_BAD)
		return;
	if (item->type != YN_MAP && !yn_null(item)) {
		cfg_err(st, item->pos, "an exception must be a mapping");
		return;
	}
	snprintf(sect, sizeof(sect), "exception %zu of spamblocker of %s",
	    idx + 1, st->label);
	cfg_walk(st, item, sect, cfg_exception_keys, e);
	if (e->sender == NULL && e->recipient == NULL && st->nerrs == nerrs)
		cfg_err(
		    st, item->pos, "%s needs a sender or a recipient", sect);
}

static void
cfg_k_sp_exceptions(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_aaux *x = o;
	size_t i, n;

	if (v->type != YN_SEQ && !yn_null(v)) {
		cfg_err(st, v->pos, "'%s' must be a sequence", k->str);
		return;
	}
	n = v->type == YN_SEQ ? v->nkids : 0;
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos,
		    "too many exceptions in spamblocker of %s (at most %d)",
		    st->label, CONFIG_MAX_ITEMS);
		return;
	}
	x->spset |= SPSET_EXCEPTIONS;
	if (n == 0)
		return;
	if ((x->sp.exceptions = calloc(n, sizeof(*x->sp.exceptions))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < n; i++) {
		x->sp.nexceptions++;
		cfg_exception(st, v->kids[i], i, &x->sp.exceptions[i]);
	}
}

static const struct cfg_key cfg_spam_keys[] = {
    {"enabled", cfg_k_sp_enabled, 0},
    {"engine", cfg_k_sp_engine, 0},
    {"rules", cfg_k_sp_rules, 0},
    {"address", cfg_k_sp_address, 0},
    {"timeout", cfg_k_sp_timeout, 0},
    {"max_size", cfg_k_sp_max_size, 0},
    {"on_unavailable", cfg_k_sp_unavailable, 0},
    {"header", cfg_k_sp_header, 0},
    {"categories", cfg_k_sp_categories, 0},
    {"exceptions", cfg_k_sp_exceptions, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_spamblocker(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	char sect[192];

	if (!cfg_want_map(st, k, v))
		return;
	snprintf(sect, sizeof(sect), "spamblocker of %s", st->label);
	cfg_walk(st, v, sect, cfg_spam_keys, o);
}

static const struct cfg_key cfg_action_keys[] = {
    {"inherit", cfg_k_inherit, 0},
    {"general", cfg_k_general, 0},
    {"content_types", cfg_k_content_types, 0},
    {"filenames", cfg_k_filenames, 0},
    {"headers", cfg_k_headers, 0},
    {"antivirus", cfg_k_antivirus, 0},
    {"apt_blocker", cfg_k_apt_blocker, 0},
    {"spamblocker", cfg_k_spamblocker, 0},
    {"deny_message", cfg_k_deny_message, 0},
    {NULL, NULL, 0},
};

static int
cfg_builtin_name(const char *s)
{
	size_t i;

	for (i = 0; i < CFG_NBUILTIN; i++)
		if (strcmp(s, cfg_builtin_names[i]) == 0)
			return 1;
	return 0;
}

static void
cfg_action(struct cfg_state *st, struct ynode *k, struct ynode *v)
{
	struct config *cfg = st->cfg;
	struct cfg_action *a;
	struct cfg_aaux *x;

	if (cfg_builtin_name(k->str)) {
		cfg_err(st, k->pos,
		    "duplicate action '%s' (a built-in action has that name)",
		    k->str);
		return;
	}
	x = &st->aaux[cfg->nactions];
	a = &cfg->actions[cfg->nactions++];
	x->act = a;
	a->name = cfg_strdup(st, k->str);
	a->pos = k->pos;
	if (v->type == YN_BAD || !cfg_want_map(st, k, v))
		return;
	snprintf(st->label, sizeof(st->label), "action '%.64s'", k->str);
	cfg_walk(st, v, st->label, cfg_action_keys, x);
}

static void
cfg_k_actions(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct config *cfg = o;
	struct cfg_action *a;
	size_t i, n;

	if (!cfg_want_map(st, k, v) || (n = v->nkids / 2) == 0)
		return;
	if (n + CFG_NBUILTIN > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many actions (at most %d)",
		    CONFIG_MAX_ITEMS - CFG_NBUILTIN);
		return;
	}
	n += CFG_NBUILTIN;
	if ((a = reallocarray(cfg->actions, n, sizeof(*a))) == NULL ||
	    (st->aaux = calloc(n, sizeof(*st->aaux))) == NULL) {
		if (a != NULL)
			cfg->actions = a;
		cfg_oom(st);
		return;
	}
	cfg->actions = a;
	memset(a + cfg->nactions, 0, (n - cfg->nactions) * sizeof(*a));
	for (i = 0; i < v->nkids; i += 2)
		if (cfg_key_ok(st, v, i, "actions"))
			cfg_action(st, v->kids[i], v->kids[i + 1]);
}

/*
 * policies: a sequence of { name, listen, from, to, disposition, action,
 * idle_timeout }.
 */

struct cfg_pctx {
	struct cfg_policy *p;
	struct cfg_paux *x;
	size_t idx;
};

static void
cfg_k_pname(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_pctx *c = o;
	size_t i;

	if (cfg_str(st, k, v) == NULL)
		return;
	for (i = 0; i < c->idx; i++) {
		if (st->cfg->policies[i].name != NULL &&
		    strcmp(st->cfg->policies[i].name, v->str) == 0) {
			cfg_err(st, v->pos,
			    "duplicate policy name '%.64s' (first at line %d)",
			    v->str, st->paux[i].name.line);
			break;
		}
	}
	/* Kept even when a duplicate: later messages name it the same. */
	c->p->name = cfg_strdup(st, v->str);
	if (i == c->idx)
		c->x->name = v->pos;
}

/* The first listen entry with the same address, or NULL. */
static const struct cfg_listen *
cfg_listen_find(struct cfg_state *st, const struct cfg_listen *l)
{
	const struct cfg_policy *p;
	size_t i, j;

	for (i = 0; i < st->cfg->npolicies; i++) {
		p = &st->cfg->policies[i];
		for (j = 0; j < p->nlisten; j++) {
			if (&p->listen[j] == l)
				return NULL;
			if (p->listen[j].addr.len != 0 &&
			    strcmp(p->listen[j].addr.text, l->addr.text) == 0)
				return &p->listen[j];
		}
	}
	return NULL;
}

static void
cfg_k_laddress(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_listen *l = o;
	const struct cfg_listen *first;

	if (cfg_str(st, k, v) == NULL)
		return;
	l->pos = v->pos;
	if (parse_addr(v->str, &l->addr) == -1) {
		cfg_err(st, v->pos,
		    "bad address '%.80s' (use a.b.c.d:port or [ipv6]:port)",
		    v->str);
		return;
	}
	if ((first = cfg_listen_find(st, l)) != NULL) {
		cfg_err(st, v->pos,
		    "duplicate listen address '%s' (first at line %d)",
		    l->addr.text, first->pos.line);
		l->addr.len = 0;
	}
}

static void
cfg_k_ltls(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	cfg_enum(st, k, v, cfg_listen_tls, &((struct cfg_listen *)o)->tls);
}

static const struct cfg_key cfg_listen_keys[] = {
    {"address", cfg_k_laddress, 1},
    {"tls", cfg_k_ltls, 0},
    {NULL, NULL, 0},
};

static void
cfg_listen(struct cfg_state *st, struct ynode *k, struct ynode *item,
    struct cfg_listen *l)
{
	char sect[128];

	l->pos = item->pos;
	l->tls = LISTEN_TLS_NONE;
	if (item->type == YN_SCALAR)
		cfg_k_laddress(st, k, item, l);
	else if (item->type == YN_MAP) {
		snprintf(sect, sizeof(sect), "listen of %s", st->label);
		cfg_walk(st, item, sect, cfg_listen_keys, l);
	} else if (item->type != YN_BAD)
		cfg_err(st, item->pos,
		    "a listen entry must be a string or a mapping");
}

static void
cfg_k_listen(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_policy *p = ((struct cfg_pctx *)o)->p;
	struct ynode **items;
	size_t i, n;

	if ((n = cfg_items(v, &items)) == 0) {
		cfg_err(st, v->pos, "'listen' must not be empty");
		return;
	}
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many listen addresses (at most %d)",
		    CONFIG_MAX_ITEMS);
		return;
	}
	if ((p->listen = calloc(n, sizeof(*p->listen))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < n; i++) {
		p->nlisten++;
		cfg_listen(st, k, items ? items[i] : v, &p->listen[i]);
	}
}

static void
cfg_from(struct cfg_state *st, struct ynode *item, struct cfg_policy *p)
{
	if (item->type == YN_BAD)
		return;
	if (item->type != YN_SCALAR) {
		cfg_err(st, item->pos, "'from' entries must be strings");
		return;
	}
	if (parse_cidr(item->str, &p->from[p->nfrom]) == -1) {
		cfg_err(st, item->pos,
		    "bad CIDR '%.80s' (use any, an address or address/prefix)",
		    item->str);
		return;
	}
	p->nfrom++;
}

static void
cfg_k_from(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_policy *p = ((struct cfg_pctx *)o)->p;
	struct ynode **items;
	size_t i, n;

	(void)k;
	if (v->type == YN_MAP) {
		cfg_err(st, v->pos, "'from' must be a sequence");
		return;
	}
	if ((n = cfg_items(v, &items)) == 0) {
		cfg_err(st, v->pos, "'from' must not be empty");
		return;
	}
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many 'from' entries (at most %d)",
		    CONFIG_MAX_ITEMS);
		return;
	}
	free(p->from);
	p->nfrom = 0;
	if ((p->from = calloc(n, sizeof(*p->from))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < n; i++)
		cfg_from(st, items ? items[i] : v, p);
}

static void
cfg_k_to(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_pctx *c = o;

	cfg_set_str(st, k, v, &c->p->to);
	c->x->to = v->pos;
}

static void
cfg_k_disposition(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_pctx *c = o;

	cfg_enum(st, k, v, cfg_dispositions, &c->p->disposition);
}

static void
cfg_k_paction(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_pctx *c = o;

	cfg_set_str(st, k, v, &c->p->action);
	c->x->action = v->pos;
}

static void
cfg_k_idle_timeout(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_pctx *c = o;
	uint64_t ms;

	if (cfg_duration(st, k, v, &ms) == -1)
		return;
	if (ms < 1000) {
		cfg_err(st, v->pos, "idle_timeout must be at least 1s");
		return;
	}
	c->p->idle_timeout_ms = ms;
}

/* tls: { mode, certificate, profile }. */
static void
cfg_k_tls_mode(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_pctx *c = o;

	cfg_enum(st, k, v, cfg_tls_modes, &c->p->tls.mode);
	c->x->tlsmode = v->pos;
}

static void
cfg_k_tls_cert(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_policy_tls *t = &((struct cfg_pctx *)o)->p->tls;
	struct cfg_paux *x = ((struct cfg_pctx *)o)->x;
	struct ynode **items, *item;
	size_t i, n;

	if (v->type == YN_MAP) {
		cfg_err(st, v->pos,
		    "'certificate' must be a name or a sequence of names");
		return;
	}
	if ((n = cfg_items(v, &items)) == 0) {
		cfg_err(st, v->pos, "'certificate' must not be empty");
		return;
	}
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many certificates (at most %d)",
		    CONFIG_MAX_ITEMS);
		return;
	}
	if ((t->certs = calloc(n, sizeof(*t->certs))) == NULL ||
	    (t->certidx = calloc(n, sizeof(*t->certidx))) == NULL ||
	    (x->certpos = calloc(n, sizeof(*x->certpos))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < n; i++) {
		item = items ? items[i] : v;
		if (item->type == YN_BAD || cfg_str(st, k, item) == NULL)
			continue;
		x->certpos[t->ncerts] = item->pos;
		t->certidx[t->ncerts] = -1;
		if ((t->certs[t->ncerts] = cfg_strdup(st, item->str)) == NULL)
			return;
		t->ncerts++;
	}
}

static void
cfg_k_tls_profile(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_pctx *c = o;

	cfg_set_str(st, k, v, &c->p->tls.profile);
	c->x->tlsprofile = v->pos;
}

static void
cfg_k_tls_authority(
    struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_pctx *c = o;

	cfg_set_str(st, k, v, &c->p->tls.authority);
	c->x->tlsauth = v->pos;
}

static const struct cfg_key cfg_ptls_keys[] = {
    {"mode", cfg_k_tls_mode, 0},
    {"certificate", cfg_k_tls_cert, 0},
    {"profile", cfg_k_tls_profile, 0},
    {"authority", cfg_k_tls_authority, 0},
    {NULL, NULL, 0},
};

static void
cfg_k_ptls(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct cfg_pctx *c = o;
	char sect[128];

	c->x->tls = k->pos;
	if (!cfg_want_map(st, k, v))
		return;
	snprintf(sect, sizeof(sect), "tls of %s", st->label);
	cfg_walk(st, v, sect, cfg_ptls_keys, c);
}

static const struct cfg_key cfg_policy_keys[] = {
    {"name", cfg_k_pname, 1},
    {"listen", cfg_k_listen, 1},
    {"from", cfg_k_from, 0},
    {"to", cfg_k_to, 1},
    {"disposition", cfg_k_disposition, 0},
    {"action", cfg_k_paction, 0},
    {"idle_timeout", cfg_k_idle_timeout, 0},
    {"tls", cfg_k_ptls, 0},
    {NULL, NULL, 0},
};

/* "policy 'name'" if the mapping has a usable name, else "policy #n". */
static void
cfg_policy_label(struct cfg_state *st, struct ynode *item, size_t idx)
{
	struct ynode *k, *v;
	size_t i;

	for (i = 0; item->type == YN_MAP && i + 1 < item->nkids; i += 2) {
		k = item->kids[i];
		v = item->kids[i + 1];
		if (k->type == YN_SCALAR && strcmp(k->str, "name") == 0 &&
		    v->type == YN_SCALAR && v->str[0] != '\0') {
			snprintf(st->label, sizeof(st->label), "policy '%.64s'",
			    v->str);
			return;
		}
	}
	snprintf(st->label, sizeof(st->label), "policy #%zu", idx + 1);
}

static int
cfg_policy_defaults(struct cfg_state *st, struct cfg_policy *p)
{
	p->server = -1;
	p->actionidx = -1;
	p->disposition = DISP_ALLOW;
	p->idle_timeout_ms = 30 * 60 * 1000;
	p->tls.mode = TLS_MODE_DISABLED;
	p->tls.profileidx = 0;
	if ((p->action = cfg_strdup(st, cfg_builtin_names[0])) == NULL ||
	    (p->tls.profile = cfg_strdup(st, "default")) == NULL)
		return -1;
	if ((p->from = calloc(1, sizeof(*p->from))) == NULL) {
		cfg_oom(st);
		return -1;
	}
	parse_cidr("any", p->from);
	p->nfrom = 1;
	return 0;
}

static void
cfg_policy(struct cfg_state *st, struct ynode *item, size_t idx)
{
	struct cfg_pctx c;

	c.p = &st->cfg->policies[idx];
	c.x = &st->paux[idx];
	c.idx = idx;
	c.p->pos = item->pos;
	if (cfg_policy_defaults(st, c.p) == -1 || item->type == YN_BAD)
		return;
	cfg_policy_label(st, item, idx);
	if (item->type != YN_MAP && !yn_null(item)) {
		cfg_err(st, item->pos, "%s must be a mapping", st->label);
		return;
	}
	cfg_walk(st, item, st->label, cfg_policy_keys, &c);
}

static void
cfg_k_policies(struct cfg_state *st, struct ynode *k, struct ynode *v, void *o)
{
	struct config *cfg = o;
	size_t i, n;

	(void)k;
	if (yn_null(v))
		return;
	if (v->type != YN_SEQ) {
		cfg_err(st, v->pos, "'policies' must be a sequence");
		return;
	}
	if ((n = v->nkids) == 0)
		return;
	if (n > CONFIG_MAX_ITEMS) {
		cfg_err(st, v->pos, "too many policies (at most %d)",
		    CONFIG_MAX_ITEMS);
		return;
	}
	if ((cfg->policies = calloc(n, sizeof(*cfg->policies))) == NULL ||
	    (st->paux = calloc(n, sizeof(*st->paux))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < n; i++) {
		cfg->npolicies++;
		cfg_policy(st, v->kids[i], i);
	}
}

static const struct cfg_key cfg_top_keys[] = {
    {"user", cfg_k_user, 0},
    {"chroot", cfg_k_chroot, 0},
    {"state_dir", cfg_k_state_dir, 0},
    {"workers", cfg_k_workers, 0},
    {"log", cfg_k_log, 0},
    {"control", cfg_k_control, 0},
    {"auto_block", cfg_k_auto_block, 0},
    {"verdict_cache", cfg_k_verdict_cache, 0},
    {"certificates", cfg_k_certificates, 0},
    {"tls_profiles", cfg_k_tls_profiles, 0},
    {"servers", cfg_k_servers, 0},
    {"actions", cfg_k_actions, 0},
    {"policies", cfg_k_policies, 0},
    {NULL, NULL, 0},
};

/*
 * Resolution, after the walk: inheritance, then policy references.
 */

/*
 * The index of the item called name in an array of n structures of the
 * given size whose first member is their name (char *), or -1: actions,
 * servers, certificates, TLS profiles.
 */
static ssize_t
cfg_find(const void *items, size_t n, size_t size, const char *name)
{
	const char *p = items, *s;
	size_t i;

	for (i = 0; i < n; i++, p += size) {
		memcpy(&s, p, sizeof(s));
		if (s != NULL && strcmp(s, name) == 0)
			return (ssize_t)i;
	}
	return -1;
}

_Static_assert(offsetof(struct cfg_action, name) == 0, "name first");
_Static_assert(offsetof(struct cfg_server, name) == 0, "name first");
_Static_assert(offsetof(struct cfg_cert, name) == 0, "name first");
_Static_assert(offsetof(struct cfg_tls_profile, name) == 0, "name first");
#define CFG_FIND(a, n, name) cfg_find((a), (n), sizeof(*(a)), (name))
#define cfg_action_find(c, name) CFG_FIND((c)->actions, (c)->nactions, name)
#define cfg_server_find(c, name) CFG_FIND((c)->servers, (c)->nservers, name)
#define cfg_cert_find(c, name) CFG_FIND((c)->certs, (c)->ncerts, name)
#define cfg_profile_find(c, name) CFG_FIND((c)->profiles, (c)->nprofiles, name)

/* j is on the stack: the cycle is stack[j's place..] -> j. */
static void
cfg_cycle(struct cfg_state *st, size_t j)
{
	char msg[512];
	size_t i, off;

	for (i = 0; i < st->nstack && st->stack[i] != j; i++)
		;
	msg[0] = '\0';
	for (; i < st->nstack; i++) {
		off = strlen(msg);
		snprintf(msg + off, sizeof(msg) - off, "%.64s -> ",
		    st->cfg->actions[st->stack[i]].name);
	}
	off = strlen(msg);
	snprintf(
	    msg + off, sizeof(msg) - off, "%.64s", st->cfg->actions[j].name);
	cfg_err(st, st->aaux[j].ipos, "inheritance cycle: %s", msg);
}

static int cfg_act_resolve(struct cfg_state *, size_t);

/* The values an action starts from: its parent's, or the defaults. */
static const struct cfg_action *
cfg_act_base(struct cfg_state *st, size_t i)
{
	struct cfg_action *a = &st->cfg->actions[i];
	ssize_t j;

	if (a->inherit == NULL)
		return &st->cfg->actions[0];
	if ((j = cfg_action_find(st->cfg, a->inherit)) == -1) {
		cfg_err(st, st->aaux[i].ipos,
		    "action '%.64s': no action named '%.64s' to inherit from",
		    a->name, a->inherit);
		return NULL;
	}
	if (cfg_act_resolve(st, (size_t)j) == -1)
		return NULL;
	return &st->cfg->actions[j];
}

static void
cfg_av_apply(struct cfg_state *st, struct cfg_antivirus *av,
    const struct cfg_aaux *x, const struct cfg_antivirus *base)
{
	const struct cfg_antivirus *o = &x->av;

	*av = *base;
	if (x->avset & AVSET_ENABLED)
		av->enabled = o->enabled;
	if (x->avset & AVSET_ON_VIRUS)
		av->on_virus = o->on_virus;
	if (x->avset & AVSET_ON_ERROR)
		av->on_error = o->on_error;
	if (x->avset & AVSET_SCANSIZE)
		av->max_scan_size = o->max_scan_size;
	if (x->avset & AVSET_FILESIZE)
		av->max_file_size = o->max_file_size;
	if (x->avset & AVSET_RECURSION)
		av->max_recursion = o->max_recursion;
	if (x->avset & AVSET_FILES)
		av->max_files = o->max_files;
	if (x->avset & AVSET_TIME)
		av->max_scan_time_ms = o->max_scan_time_ms;
	av->database = cfg_strdup(
	    st, x->avset & AVSET_DATABASE ? o->database : base->database);
}

/* NULL stays NULL: an action with errors may lack a value. */
static char *
cfg_dup(struct cfg_state *st, const char *s)
{
	return s == NULL ? NULL : cfg_strdup(st, s);
}

static void
cfg_rules_free(struct cfg_rules *rs)
{
	size_t i;

	for (i = 0; i < rs->nrules; i++) {
		free(rs->rules[i].name);
		free(rs->rules[i].match);
	}
	free(rs->rules);
	rs->rules = NULL;
	rs->nrules = 0;
}

static void
cfg_rules_copy(
    struct cfg_state *st, struct cfg_rules *dst, const struct cfg_rules *src)
{
	struct cfg_rule *r;
	size_t i;

	dst->rules = NULL;
	dst->nrules = 0;
	if (src->nrules == 0)
		return;
	if ((dst->rules = calloc(src->nrules, sizeof(*dst->rules))) == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < src->nrules; i++) {
		r = &dst->rules[dst->nrules++];
		*r = src->rules[i];
		r->name = cfg_dup(st, src->rules[i].name);
		r->match = cfg_dup(st, src->rules[i].match);
	}
}

/* The rules list of the file replaces the inherited one as a whole. */
static void
cfg_rules_apply(struct cfg_state *st, struct cfg_rules *dst, struct cfg_raux *x,
    const struct cfg_rules *base)
{
	const struct cfg_rules *o = &x->r;

	dst->auto_detect =
	    x->set & RSET_AUTO ? o->auto_detect : base->auto_detect;
	dst->archives = x->set & RSET_ARCHIVES ? o->archives : base->archives;
	dst->none_matched =
	    x->set & RSET_NONE ? o->none_matched : base->none_matched;
	if (x->set & RSET_RULES) {
		dst->rules = x->r.rules;
		dst->nrules = x->r.nrules;
		x->r.rules = NULL;
		x->r.nrules = 0;
	} else
		cfg_rules_copy(st, dst, base);
}

static struct cfg_rules *
cfg_act_rules(struct cfg_action *a, int kind)
{
	switch (kind) {
	case RULES_CT:
		return &a->content_types;
	case RULES_FN:
		return &a->filenames;
	default:
		return &a->headers;
	}
}

static void
cfg_apt_apply(struct cfg_state *st, struct cfg_apt *apt, struct cfg_aaux *x,
    const struct cfg_apt *base, const struct cfg_aaux *bx)
{
	const struct cfg_apt *o = &x->apt;
	int i;

	apt->enabled = x->aptset & APTSET_ENABLED ? o->enabled : base->enabled;
	for (i = 0; i < APT_NLEVEL; i++)
		apt->actions[i] = x->aptset & (APTSET_HIGH << i)
		                      ? o->actions[i]
		                      : base->actions[i];
	apt->data = NULL;
	apt->len = 0;
	apt->missing = 0;
	if (x->aptset & APTSET_DATABASE) {
		apt->database = cfg_dup(st, o->database);
		x->r_aptdb = x->aptdb;
	} else {
		apt->database = cfg_dup(st, base->database);
		if (bx != NULL)
			x->r_aptdb = bx->r_aptdb;
	}
}

static void
cfg_exceptions_copy(
    struct cfg_state *st, struct cfg_spam *dst, const struct cfg_spam *src)
{
	struct cfg_spam_exception *e;
	size_t i;

	dst->exceptions = NULL;
	dst->nexceptions = 0;
	if (src->nexceptions == 0)
		return;
	dst->exceptions = calloc(src->nexceptions, sizeof(*dst->exceptions));
	if (dst->exceptions == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = 0; i < src->nexceptions; i++) {
		e = &dst->exceptions[dst->nexceptions++];
		*e = src->exceptions[i];
		e->sender = cfg_dup(st, src->exceptions[i].sender);
		e->recipient = cfg_dup(st, src->exceptions[i].recipient);
	}
}

static void
cfg_spam_address_default(struct cfg_spam *sp)
{
	parse_addr(
	    sp->engine == SPAM_ENGINE_RSPAMD ? CFG_SPAM_RSPAMD : CFG_SPAM_SPAMD,
	    &sp->address);
}

static void
cfg_spam_apply(struct cfg_state *st, struct cfg_spam *sp, struct cfg_aaux *x,
    const struct cfg_spam *base, const struct cfg_aaux *bx)
{
	const struct cfg_spam *o = &x->sp;
	unsigned set = x->spset;
	int i;

	sp->enabled = set & SPSET_ENABLED ? o->enabled : base->enabled;
	sp->engine = set & SPSET_ENGINE ? o->engine : base->engine;
	sp->timeout_ms = set & SPSET_TIMEOUT ? o->timeout_ms : base->timeout_ms;
	sp->max_size = set & SPSET_MAXSIZE ? o->max_size : base->max_size;
	sp->on_unavailable =
	    set & SPSET_UNAVAIL ? o->on_unavailable : base->on_unavailable;
	sp->header = cfg_dup(st, set & SPSET_HEADER ? o->header : base->header);
	sp->rules_data = NULL;
	sp->rules_len = 0;
	if (set & SPSET_RULES) {
		sp->rules = cfg_dup(st, o->rules);
		x->r_sprules = x->sprules;
	} else {
		sp->rules = cfg_dup(st, base->rules);
		if (bx != NULL)
			x->r_sprules = bx->r_sprules;
	}
	/* An address given here or above; else the engine's default. */
	x->r_addr = (set & SPSET_ADDRESS) || (bx != NULL && bx->r_addr);
	if (set & SPSET_ADDRESS)
		sp->address = o->address;
	else if (x->r_addr)
		sp->address = base->address;
	else
		cfg_spam_address_default(sp);
	for (i = 0; i < SPAM_NCAT; i++) {
		sp->cat[i].action = x->catset[i] & CATSET_ACTION
		                        ? o->cat[i].action
		                        : base->cat[i].action;
		sp->cat[i].score = x->catset[i] & CATSET_SCORE
		                       ? o->cat[i].score
		                       : base->cat[i].score;
		sp->cat[i].tag =
		    cfg_dup(st, x->catset[i] & CATSET_TAG ? o->cat[i].tag
		                                          : base->cat[i].tag);
	}
	if (set & SPSET_EXCEPTIONS) {
		sp->exceptions = x->sp.exceptions;
		sp->nexceptions = x->sp.nexceptions;
		x->sp.exceptions = NULL;
		x->sp.nexceptions = 0;
	} else
		cfg_exceptions_copy(st, sp, base);
}

/* Scores set here must keep confirmed >= bulk >= suspect with the
 * inherited ones (scores not set here were checked where they were). */
static void
cfg_spam_scores(
    struct cfg_state *st, const struct cfg_action *a, const struct cfg_aaux *x)
{
	const struct cfg_spam_cat *c = a->spamblocker.cat;
	int i;

	for (i = 0; i < SPAM_NCAT; i++)
		if (x->catset[i] & CATSET_SCORE)
			break;
	if (i == SPAM_NCAT)
		return;
	if (c[SPAM_CONFIRMED].score >= c[SPAM_BULK].score &&
	    c[SPAM_BULK].score >= c[SPAM_SUSPECT].score)
		return;
	cfg_err(st, x->score[i],
	    "action '%.64s': spamblocker scores must be confirmed >= bulk >= "
	    "suspect (they are %g, %g and %g)",
	    a->name, c[SPAM_CONFIRMED].score, c[SPAM_BULK].score,
	    c[SPAM_SUSPECT].score);
}

static void
cfg_act_apply(struct cfg_state *st, struct cfg_action *a, struct cfg_aaux *x,
    const struct cfg_action *base)
{
	size_t bi = (size_t)(base - st->cfg->actions);
	const struct cfg_aaux *bx;
	int k;

	/* The built-ins have no aaux: their files come from the defaults. */
	bx = bi < CFG_NBUILTIN ? NULL : &st->aaux[bi];
	a->general = base->general;
	if (x->set & SET_MAXSIZE)
		a->general.max_email_size = x->ov.max_email_size;
	if (x->set & SET_OVERSIZE)
		a->general.oversize = x->ov.oversize;
	if (x->set & SET_MAXLINE)
		a->general.max_line_length = x->ov.max_line_length;
	if (x->set & SET_ARCDEPTH)
		a->general.max_archive_depth = x->ov.max_archive_depth;
	if (x->set & SET_CONSIST)
		a->general.consistency = x->ov.consistency;
	for (k = 0; k < RULES_N; k++)
		cfg_rules_apply(st, cfg_act_rules(a, k), &x->rules[k],
		    cfg_act_rules(&st->cfg->actions[bi], k));
	cfg_av_apply(st, &a->antivirus, x, &base->antivirus);
	cfg_apt_apply(st, &a->apt_blocker, x, &base->apt_blocker, bx);
	cfg_spam_apply(st, &a->spamblocker, x, &base->spamblocker, bx);
	cfg_spam_scores(st, a, x);
	a->deny_message =
	    cfg_strdup(st, x->deny ? x->deny : base->deny_message);
}

static int
cfg_act_resolve(struct cfg_state *st, size_t i)
{
	struct cfg_aaux *x;
	const struct cfg_action *base;

	if (i < CFG_NBUILTIN)
		return 0;
	x = &st->aaux[i];
	if (x->state == ARES_DONE)
		return x->ok;
	if (x->state == ARES_ACTIVE) {
		cfg_cycle(st, i);
		return -1;
	}
	x->state = ARES_ACTIVE;
	st->stack[st->nstack++] = i;
	if ((base = cfg_act_base(st, i)) != NULL) {
		cfg_act_apply(st, x->act, x, base);
		x->ok = 0;
	} else
		x->ok = -1;
	st->nstack--;
	x->state = ARES_DONE;
	return x->ok;
}

static void
cfg_resolve_actions(struct cfg_state *st)
{
	size_t i;

	if (st->cfg->nactions <= CFG_NBUILTIN)
		return;
	st->stack = calloc(st->cfg->nactions, sizeof(*st->stack));
	if (st->stack == NULL) {
		cfg_oom(st);
		return;
	}
	for (i = CFG_NBUILTIN; i < st->cfg->nactions; i++)
		cfg_act_resolve(st, i);
}

/* tls: certificate and profile names; a certificate if TLS is used. */
static void
cfg_resolve_policy_tls(struct cfg_state *st, struct cfg_policy *p,
    struct cfg_paux *x, const char *label)
{
	struct cfg_policy_tls *t = &p->tls;
	ssize_t j;
	size_t i, k;

	for (i = 0; i < t->ncerts; i++) {
		if ((j = cfg_cert_find(st->cfg, t->certs[i])) == -1)
			cfg_err(st, x->certpos[i],
			    "%s: no certificate named '%.64s'", label,
			    t->certs[i]);
		t->certidx[i] = (int)j;
		for (k = 0; k < i; k++)
			if (strcmp(t->certs[k], t->certs[i]) == 0) {
				cfg_err(st, x->certpos[i],
				    "%s: certificate '%.64s' is named twice",
				    label, t->certs[i]);
				break;
			}
	}
	if (t->profile != NULL) {
		if ((j = cfg_profile_find(st->cfg, t->profile)) == -1)
			cfg_err(st, x->tlsprofile,
			    "%s: no tls_profile named '%.64s'", label,
			    t->profile);
		t->profileidx = (int)j;
	}
	t->authority_idx = -1;
	if (t->authority != NULL) {
		if ((j = cfg_cert_find(st->cfg, t->authority)) == -1)
			cfg_err(st, x->tlsauth,
			    "%s: no certificate named '%.64s'", label,
			    t->authority);
		else if (!p->original)
			cfg_err(st, x->tlsauth,
			    "%s: a Proxy Authority is for to: %s only", label,
			    CFG_ORIGINAL_DST);
		t->authority_idx = (int)j;
	}
	if (t->ncerts > 0)
		return;
	if (t->mode != TLS_MODE_DISABLED)
		cfg_err(st, x->tlsmode,
		    "%s: tls mode %s needs a certificate (tls: { certificate: "
		    "NAME })",
		    label,
		    t->mode == TLS_MODE_ENABLED ? "enabled" : "required");
	for (i = 0; i < p->nlisten && t->authority == NULL; i++)
		if (p->listen[i].tls == LISTEN_TLS_IMPLICIT)
			cfg_err(st, p->listen[i].pos,
			    "%s: the implicit TLS listener %s needs a "
			    "certificate (tls: { certificate: NAME })",
			    label, p->listen[i].addr.text);
}

/* Server pools: their tls_profile; the system CA store read if a
 * profile without ca_file verifies a server. */
static void
cfg_resolve_servers(struct cfg_state *st)
{
	struct cfg_server *s;
	struct cfg_tls_profile *tp;
	char what[192];
	ssize_t j;
	size_t i;

	for (i = 0; i < st->cfg->nservers; i++) {
		s = &st->cfg->servers[i];
		if (s->tls_profile == NULL || s->name == NULL)
			continue;
		if ((j = cfg_profile_find(st->cfg, s->tls_profile)) == -1) {
			cfg_err(st,
			    st->sprofile[i].line ? st->sprofile[i] : s->pos,
			    "server '%.64s': no tls_profile named '%.64s'",
			    s->name, s->tls_profile);
			s->profileidx = -1;
			continue;
		}
		s->profileidx = (int)j;
		tp = &st->cfg->profiles[j];
		if (s->tls == SRV_TLS_NONE || !tp->verify_peer ||
		    tp->ca_file != NULL || tp->ca_pem != NULL)
			continue;
		snprintf(what, sizeof(what),
		    "server '%.64s' (tls_profile '%.64s', no ca_file)", s->name,
		    tp->name);
		cfg_read_ca(st, s->pos, what, tp, CFG_TLS_SYSTEM_CA);
	}
}

/*
 * to: original-destination.  The policy gets a server pool of its own,
 * "original-destination:POLICY": TLS to the server as its listeners take
 * it from the client (all implicit, or all plain), verified with the
 * policy's tls profile, one member that netd replaces per session by the
 * address the client was going to.
 */
static void
cfg_original_pool(struct cfg_state *st, struct cfg_policy *p,
    struct cfg_paux *x, const char *label)
{
	struct config *cfg = st->cfg;
	struct cfg_tls_profile *tp;
	struct cfg_server *s, *ns;
	size_t i, implicit = 0;
	ssize_t j;
	char name[160];

	p->original = 1;
	for (i = 0; i < p->nlisten; i++)
		implicit += p->listen[i].tls == LISTEN_TLS_IMPLICIT;
	if (implicit != 0 && implicit != p->nlisten) {
		cfg_err(st, x->to,
		    "%s: to: %s needs its listeners all implicit TLS or all "
		    "plain (the server is reached the same way)",
		    label, CFG_ORIGINAL_DST);
		return;
	}
	if (cfg_server_find(cfg, CFG_ORIGINAL_DST) != -1) {
		cfg_err(st, x->to, "%s: a server pool may not be named '%s'",
		    label, CFG_ORIGINAL_DST);
		return;
	}
	snprintf(name, sizeof(name), "%s:%.64s", CFG_ORIGINAL_DST,
	    p->name ? p->name : "?");
	ns = reallocarray(cfg->servers, cfg->nservers + 1, sizeof(*ns));
	if (ns == NULL) {
		cfg_oom(st);
		return;
	}
	cfg->servers = ns;
	s = &cfg->servers[cfg->nservers];
	memset(s, 0, sizeof(*s));
	s->balance = BALANCE_ROUND_ROBIN;
	s->tls = implicit ? SRV_TLS_IMPLICIT : SRV_TLS_NONE;
	s->connect_timeout_ms = 10000;
	s->send_id = 0; /* not our server: it learns nothing of ours */
	s->connect = SRV_CONNECT_EAGER; /* its certificate comes first */
	s->profileidx = -1;
	s->pos = x->to;
	if ((s->name = cfg_strdup(st, name)) == NULL ||
	    (s->tls_profile = cfg_strdup(
	         st, p->tls.profile ? p->tls.profile : "default")) == NULL ||
	    (s->members = calloc(1, sizeof(*s->members))) == NULL) {
		free(s->name);
		free(s->tls_profile);
		cfg_oom(st);
		return;
	}
	s->nmembers = 1;
	s->members[0].weight = 1;
	s->members[0].pos = x->to;
	/* A placeholder netd never connects to: each session has its own
	 * member, the client's original destination. */
	s->members[0].addr.ss.ss_family = AF_INET;
	((struct sockaddr_in *)&s->members[0].addr.ss)->sin_port = htons(1);
	s->members[0].addr.len = sizeof(struct sockaddr_in);
	snprintf(s->members[0].addr.text, sizeof(s->members[0].addr.text), "%s",
	    CFG_ORIGINAL_DST);
	if ((s->members[0].host = cfg_strdup(st, CFG_ORIGINAL_DST)) == NULL)
		return;
	p->server = (int)cfg->nservers++;
	free(p->to);
	p->to = cfg_strdup(st, name);
	if ((j = cfg_profile_find(cfg, s->tls_profile)) == -1)
		return; /* reported with the policy's tls */
	s->profileidx = (int)j;
	tp = &cfg->profiles[j];
	if (s->tls != SRV_TLS_NONE && tp->verify_peer && tp->ca_file == NULL &&
	    tp->ca_pem == NULL)
		cfg_read_ca(st, s->pos, name, tp, CFG_TLS_SYSTEM_CA);
}

static void
cfg_resolve_policy(
    struct cfg_state *st, struct cfg_policy *p, struct cfg_paux *x, size_t idx)
{
	char label[96];
	ssize_t j;

	if (p->name != NULL)
		snprintf(label, sizeof(label), "policy '%.64s'", p->name);
	else
		snprintf(label, sizeof(label), "policy #%zu", idx + 1);
	if (p->to != NULL && strcmp(p->to, CFG_ORIGINAL_DST) == 0)
		cfg_original_pool(st, p, x, label);
	else if (p->to != NULL) {
		if ((j = cfg_server_find(st->cfg, p->to)) == -1)
			cfg_err(st, x->to, "%s: no server pool named '%.64s'",
			    label, p->to);
		p->server = (int)j;
	}
	if (p->action != NULL) {
		if ((j = cfg_action_find(st->cfg, p->action)) == -1)
			cfg_err(st, x->action, "%s: no action named '%.64s'",
			    label, p->action);
		else
			st->cfg->actions[j].used = 1;
		p->actionidx = (int)j;
	}
	cfg_resolve_policy_tls(st, p, x, label);
}

/*
 * The files scand needs but cannot open itself: read now, by the parent,
 * for the actions a policy uses.
 */

/* The whole of a regular file, at most max bytes, NUL-terminated (the
 * terminator not counted).  -1 with errno set: EFBIG if it is larger. */
static int
cfg_slurp(const char *path, size_t max, uint8_t **data, size_t *len)
{
	struct stat sb;
	size_t cap, n = 0;
	ssize_t r;
	uint8_t *p = NULL, *q, c;
	int fd, e;

	*data = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd == -1)
		return -1;
	if (fstat(fd, &sb) == -1)
		goto fail;
	if (!S_ISREG(sb.st_mode)) {
		errno = S_ISDIR(sb.st_mode) ? EISDIR : EINVAL;
		goto fail;
	}
	if ((uint64_t)sb.st_size > max) {
		errno = EFBIG;
		goto fail;
	}
	/* The size is a hint: the file may change while it is read. */
	cap = (size_t)sb.st_size + 1;
	if ((p = malloc(cap)) == NULL)
		goto fail;
	for (;;) {
		if (n + 1 < cap)
			r = read(fd, p + n, cap - n - 1);
		else
			r = read(fd, &c, 1); /* full: the end, or more? */
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			goto fail;
		if (r == 0)
			break;
		if (n + 1 < cap) {
			n += (size_t)r;
			continue;
		}
		if (n + 1 > max) {
			errno = EFBIG;
			goto fail;
		}
		cap = cap > max / 2 ? max + 1 : cap * 2;
		if ((q = realloc(p, cap)) == NULL)
			goto fail;
		p = q;
		p[n++] = c;
	}
	close(fd);
	p[n] = '\0';
	*data = p;
	*len = n;
	return 0;
fail:
	e = errno;
	free(p);
	close(fd);
	errno = e;
	return -1;
}

/* Where the file of action i was named: its key, else the action's name,
 * else (a built-in's default) the first policy that uses it. */
static struct cfg_pos
cfg_file_pos(struct cfg_state *st, size_t i, struct cfg_pos named)
{
	const struct cfg_policy *p;
	size_t j;

	if (named.line != 0)
		return named;
	if (i >= CFG_NBUILTIN)
		return st->cfg->actions[i].pos;
	for (j = 0; j < st->cfg->npolicies; j++) {
		p = &st->cfg->policies[j];
		if (p->actionidx == (int)i)
			return st->paux[j].action.line != 0 ? st->paux[j].action
			                                    : p->pos;
	}
	return (struct cfg_pos){0, 0};
}

static void
cfg_read_err(struct cfg_state *st, size_t i, struct cfg_pos named,
    const char *what, const char *path, size_t max)
{
	const char *name = st->cfg->actions[i].name;
	struct cfg_pos pos = cfg_file_pos(st, i, named);

	if (errno == EFBIG)
		cfg_err(st, pos,
		    "action '%.64s': the %s %.200s is larger than %zuM", name,
		    what, path, max / (1024 * 1024));
	else if (errno == EINVAL)
		cfg_err(st, pos,
		    "action '%.64s': cannot read the %s %.200s: not a "
		    "regular file",
		    name, what, path);
	else
		cfg_err(st, pos,
		    "action '%.64s': cannot read the %s %.200s: %s", name, what,
		    path, strerror(errno));
}

static int
cfg_memdup(struct cfg_state *st, const uint8_t *src, size_t len, uint8_t **data,
    size_t *dlen)
{
	if ((*data = malloc(len + 1)) == NULL) {
		cfg_oom(st);
		return -1;
	}
	memcpy(*data, src, len);
	(*data)[len] = '\0';
	*dlen = len;
	return 0;
}

static void
cfg_read_apt(struct cfg_state *st, size_t i, struct cfg_pos named)
{
	struct cfg_apt *apt = &st->cfg->actions[i].apt_blocker;
	const struct cfg_apt *o;
	size_t j;

	/* Read once: an action before this one may have the same file. */
	for (j = 0; j < i; j++) {
		o = &st->cfg->actions[j].apt_blocker;
		if ((o->data != NULL || o->missing) &&
		    strcmp(o->database, apt->database) == 0) {
			apt->missing = o->missing;
			if (o->data != NULL)
				cfg_memdup(
				    st, o->data, o->len, &apt->data, &apt->len);
			return;
		}
	}
	if (cfg_slurp(apt->database, CFG_APT_MAX_FILE, &apt->data, &apt->len) ==
	    0)
		return;
	if (errno == ENOENT) {
		/* Not an error: scand warns that it knows no hashes. */
		apt->missing = 1;
		return;
	}
	if (errno == ENOMEM)
		cfg_oom(st);
	else
		cfg_read_err(st, i, named, "apt_blocker database",
		    apt->database, CFG_APT_MAX_FILE);
}

static void
cfg_read_spam(struct cfg_state *st, size_t i, struct cfg_pos named)
{
	struct cfg_spam *sp = &st->cfg->actions[i].spamblocker;
	const struct cfg_spam *o;
	size_t j;

	for (j = 0; j < i; j++) {
		o = &st->cfg->actions[j].spamblocker;
		if (o->rules_data != NULL && strcmp(o->rules, sp->rules) == 0) {
			cfg_memdup(st, o->rules_data, o->rules_len,
			    &sp->rules_data, &sp->rules_len);
			return;
		}
	}
	if (cfg_slurp(sp->rules, CFG_SPAM_MAX_FILE, &sp->rules_data,
	        &sp->rules_len) == 0)
		return;
	if (errno == ENOMEM)
		cfg_oom(st);
	else
		cfg_read_err(st, i, named, "spamblocker rules", sp->rules,
		    CFG_SPAM_MAX_FILE);
}

static void
cfg_read_files(struct cfg_state *st)
{
	struct cfg_pos none = {0, 0}, apt, spam;
	struct cfg_action *a;
	size_t i;

	for (i = 0; i < st->cfg->nactions && !st->oom; i++) {
		a = &st->cfg->actions[i];
		if (!a->used)
			continue;
		apt = spam = none;
		if (i >= CFG_NBUILTIN) {
			/* Not resolved: it has errors already. */
			if (st->aaux[i].state != ARES_DONE ||
			    st->aaux[i].ok != 0)
				continue;
			apt = st->aaux[i].r_aptdb;
			spam = st->aaux[i].r_sprules;
		}
		if (a->apt_blocker.enabled && a->apt_blocker.database != NULL)
			cfg_read_apt(st, i, apt);
		if (a->spamblocker.enabled &&
		    a->spamblocker.engine == SPAM_ENGINE_BUILTIN &&
		    a->spamblocker.rules != NULL)
			cfg_read_spam(st, i, spam);
	}
}

static void
cfg_resolve(struct cfg_state *st)
{
	size_t i;

	cfg_resolve_actions(st);
	cfg_resolve_servers(st);
	for (i = 0; i < st->cfg->npolicies; i++)
		cfg_resolve_policy(st, &st->cfg->policies[i], &st->paux[i], i);
	cfg_read_files(st);
}

/*
 * Construction and the entry points.
 */

static int
cfg_builtin_rules(
    struct cfg_rules *rs, const struct cfg_builtin_rule *t, int type)
{
	struct cfg_rule *r;
	size_t i, n;

	rs->auto_detect = 1;
	rs->archives = 1;
	rs->none_matched = ACT_ALLOW;
	for (n = 0; t != NULL && t[n].match != NULL; n++)
		;
	if (n == 0)
		return 0;
	if ((rs->rules = calloc(n, sizeof(*rs->rules))) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		r = &rs->rules[rs->nrules++];
		r->type = type;
		r->action = ACT_STRIP;
		r->alarm = 0;
		r->log = 1;
		if ((r->name = strdup(t[i].name)) == NULL ||
		    (r->match = strdup(t[i].match)) == NULL)
			return -1;
	}
	return 0;
}

static int
cfg_builtin_spam(struct cfg_spam *sp)
{
	int i;

	sp->enabled = 1;
	sp->engine = SPAM_ENGINE_BUILTIN;
	sp->rules = NULL; /* the compiled-in rules */
	cfg_spam_address_default(sp);
	sp->timeout_ms = 30 * 1000;
	sp->max_size = 1024 * 1024;
	sp->on_unavailable = ACT_ALLOW;
	if ((sp->header = strdup(CFG_SPAM_HEADER)) == NULL)
		return -1;
	for (i = 0; i < SPAM_NCAT; i++) {
		sp->cat[i].action = cfg_spam_cat_default[i].action;
		sp->cat[i].score = cfg_spam_cat_default[i].score;
		if ((sp->cat[i].tag = strdup(cfg_spam_cat_default[i].tag)) ==
		    NULL)
			return -1;
	}
	return 0;
}

/* IMAP-Server.Standard strips what is dangerous; IMAP-Client.Standard
 * locks viruses, so that the user's own mail can be recovered. */
static int
cfg_builtin(struct cfg_action *a, const char *name, int client)
{
	a->builtin = 1;
	a->general = cfg_general_default;
	a->antivirus = cfg_antivirus_default;
	a->antivirus.on_virus = client ? ACT_LOCK : ACT_STRIP;
	a->antivirus.on_error = ACT_LOCK;
	a->apt_blocker.enabled = 1;
	a->apt_blocker.actions[APT_HIGH] = ACT_STRIP;
	a->apt_blocker.actions[APT_MEDIUM] = ACT_STRIP;
	a->apt_blocker.actions[APT_LOW] = ACT_ALLOW;
	if ((a->name = strdup(name)) == NULL ||
	    (a->antivirus.database = strdup(CFG_AV_DATABASE)) == NULL ||
	    (a->apt_blocker.database = strdup(CFG_APT_DATABASE)) == NULL ||
	    (a->deny_message = strdup(CFG_DENY_MESSAGE)) == NULL ||
	    cfg_builtin_rules(
	        &a->content_types, cfg_builtin_types, MATCH_EXACT) == -1 ||
	    cfg_builtin_rules(
	        &a->filenames, cfg_builtin_files, MATCH_PATTERN) == -1 ||
	    cfg_builtin_rules(&a->headers, NULL, MATCH_PATTERN) == -1 ||
	    cfg_builtin_spam(&a->spamblocker) == -1)
		return -1;
	return 0;
}

static struct config *
cfg_new(const char *file)
{
	struct config *c;
	int i, ok = 1;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->role = ROLE_PARENT;
	c->workers[ROLE_PARENT] = 1;
	for (i = ROLE_NETD; i < ROLE_MAX; i++)
		c->workers[i] = cfg_ncpu();
	c->log_target = LOGT_SYSLOG;
	c->log_format = LOGF_TEXT;
	c->log_level = LOG_INFO;
	c->file = strdup(file);
	c->user = strdup("_imapgw");
	c->chroot = strdup("/var/empty");
	c->state_dir = strdup("/var/lib/imapgw");
	c->control_socket = strdup("/run/imapgwd.sock");
	c->auto_block.duration_ms = CFG_BLOCK_DEFAULT_MS;
	c->vcache_size = CFG_VCACHE_DEFAULT;
	if ((c->profiles = calloc(1, sizeof(*c->profiles))) != NULL) {
		c->nprofiles = 1;
		cfg_profile_defaults(&c->profiles[0]);
		if ((c->profiles[0].name = strdup("default")) == NULL)
			ok = 0;
	}
	c->actions = calloc(CFG_NBUILTIN, sizeof(*c->actions));
	if (c->actions != NULL)
		for (i = 0; i < CFG_NBUILTIN; i++, c->nactions++)
			if (cfg_builtin(
			        &c->actions[i], cfg_builtin_names[i], i == 1))
				ok = 0;
	if (!ok || !c->file || !c->user || !c->chroot || !c->state_dir ||
	    !c->control_socket || !c->actions || !c->profiles) {
		config_free(c);
		return NULL;
	}
	return c;
}

static void
cfg_top(struct cfg_state *st, struct ynode *root)
{
	if (root == NULL || yn_null(root)) {
		cfg_err(st, root ? root->pos : (struct cfg_pos){1, 1},
		    "empty configuration");
		return;
	}
	if (root->type == YN_BAD)
		return;
	if (root->type != YN_MAP) {
		cfg_err(st, root->pos, "the top level must be a mapping");
		return;
	}
	cfg_walk(st, root, "top level", cfg_top_keys, st->cfg);
	cfg_resolve(st);
}

static void
cfg_spam_free(struct cfg_spam *sp)
{
	size_t i;

	free(sp->rules);
	free(sp->rules_data);
	free(sp->header);
	for (i = 0; i < SPAM_NCAT; i++)
		free(sp->cat[i].tag);
	for (i = 0; i < sp->nexceptions; i++) {
		free(sp->exceptions[i].sender);
		free(sp->exceptions[i].recipient);
	}
	free(sp->exceptions);
}

static void
cfg_aaux_free(struct cfg_aaux *x)
{
	int k;

	free(x->deny);
	free(x->av.database);
	for (k = 0; k < RULES_N; k++)
		cfg_rules_free(&x->rules[k].r);
	free(x->apt.database);
	cfg_spam_free(&x->sp);
}

static void
cfg_state_free(struct cfg_state *st)
{
	size_t i;

	for (i = 0; st->aaux != NULL && i < st->cfg->nactions; i++)
		cfg_aaux_free(&st->aaux[i]);
	free(st->aaux);
	for (i = 0; st->paux != NULL && i < st->cfg->npolicies; i++)
		free(st->paux[i].certpos);
	free(st->paux);
	free(st->sprofile);
	buf_free(&st->warns);
	free(st->stack);
}

struct config *
config_load_mem(
    const char *name, const char *text, size_t len, struct buf *errs)
{
	struct cfg_state st;
	struct ynode *root;
	struct config *cfg;

	memset(&st, 0, sizeof(st));
	buf_init(&st.warns, 0);
	st.file = name;
	if (text == NULL)
		text = "";
	if ((st.cfg = cfg_new(name)) == NULL)
		cfg_oom(&st);
	else if (len > CFG_MAX_FILE)
		cfg_err(&st, (struct cfg_pos){0, 0},
		    "file too large (at most %d bytes)", CFG_MAX_FILE);
	else {
		root = cfg_parse(&st, text, len);
		if (root != NULL || (st.nerrs == 0 && !st.oom))
			cfg_top(&st, root);
		yn_free(root);
	}
	if (st.cfg != NULL && buf_used(&st.warns) > 0 &&
	    (buf_add_u8(&st.warns, '\0') == -1 ||
	        (st.cfg->warnings = strdup((char *)buf_head(&st.warns))) ==
	            NULL))
		cfg_oom(&st);
	cfg_state_free(&st);
	cfg = st.cfg;
	if (st.nerrs || st.oom || st.dropped) {
		config_free(cfg);
		cfg = NULL;
	}
	cfg_err_flush(&st, errs);
	return cfg;
}

static void
cfg_file_err(const char *path, const char *what, struct buf *errs)
{
	if (errs != NULL)
		buf_printf(errs, "%s:0:0: cannot %s: %s\n", path, what,
		    strerror(errno));
}

/* The whole file, at most one byte more than allowed. */
static int
cfg_read(int fd, char **text, size_t *len)
{
	size_t cap = 0;
	ssize_t n;
	char *p;

	*text = NULL;
	*len = 0;
	for (;;) {
		if (*len == cap) {
			cap = cap ? cap * 2 : 64 * 1024;
			if (cap > CFG_MAX_FILE + 1)
				cap = CFG_MAX_FILE + 1;
			if (*len == cap)
				return 0;
			if ((p = realloc(*text, cap)) == NULL)
				return -1;
			*text = p;
		}
		n = read(fd, *text + *len, cap - *len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return (int)n;
		*len += (size_t)n;
	}
}

struct config *
config_load(const char *path, struct buf *errs)
{
	struct config *cfg = NULL;
	char *text;
	size_t len;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		cfg_file_err(path, "open", errs);
		return NULL;
	}
	if (cfg_read(fd, &text, &len) == -1)
		cfg_file_err(path, "read", errs);
	else
		cfg = config_load_mem(path, text ? text : "", len, errs);
	close(fd);
	free(text);
	return cfg;
}

static void
cfg_free_servers(struct config *c)
{
	size_t i, j;

	for (i = 0; i < c->nservers; i++) {
		for (j = 0; j < c->servers[i].nmembers; j++)
			free(c->servers[i].members[j].host);
		free(c->servers[i].members);
		free(c->servers[i].name);
		free(c->servers[i].tls_profile);
		free(c->servers[i].server_name);
	}
	free(c->servers);
}

static void
cfg_free_actions(struct config *c)
{
	size_t i;

	for (i = 0; i < c->nactions; i++) {
		free(c->actions[i].name);
		free(c->actions[i].inherit);
		free(c->actions[i].antivirus.database);
		cfg_rules_free(&c->actions[i].content_types);
		cfg_rules_free(&c->actions[i].filenames);
		cfg_rules_free(&c->actions[i].headers);
		free(c->actions[i].apt_blocker.database);
		free(c->actions[i].apt_blocker.data);
		cfg_spam_free(&c->actions[i].spamblocker);
		free(c->actions[i].deny_message);
	}
	free(c->actions);
}

static void
cfg_free_policies(struct config *c)
{
	struct cfg_policy *p;
	size_t i, j;

	for (i = 0; i < c->npolicies; i++) {
		p = &c->policies[i];
		free(p->name);
		free(p->listen);
		free(p->from);
		free(p->to);
		free(p->action);
		for (j = 0; j < p->tls.ncerts; j++)
			free(p->tls.certs[j]);
		free(p->tls.certs);
		free(p->tls.certidx);
		free(p->tls.profile);
		free(p->tls.authority);
	}
	free(c->policies);
}

static void
cfg_free_tls(struct config *c)
{
	struct cfg_tls_profile *p;
	struct cfg_cert *crt;
	size_t i;

	for (i = 0; i < c->ncerts; i++) {
		crt = &c->certs[i];
		config_cert_wipe(crt); /* tlsd's copy of the key */
		free(crt->name);
		free(crt->cert);
		free(crt->key);
		free(crt->ocsp);
		free(crt->subject);
		free(crt->fingerprint);
	}
	free(c->certs);
	for (i = 0; i < c->nprofiles; i++) {
		p = &c->profiles[i];
		free(p->name);
		free(p->ciphers);
		free(p->ciphersuites);
		free(p->ca_file);
		free(p->ca_pem);
	}
	free(c->profiles);
}

void
config_free(struct config *c)
{
	if (c == NULL)
		return;
	cfg_free_tls(c);
	cfg_free_servers(c);
	cfg_free_actions(c);
	cfg_free_policies(c);
	free(c->file);
	free(c->user);
	free(c->chroot);
	free(c->state_dir);
	free(c->control_socket);
	free(c->auto_block.exceptions);
	free(c->warnings);
	free(c);
}
