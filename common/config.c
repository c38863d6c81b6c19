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
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>
#include <yaml.h>

#include "config.h"
#include "log.h"
#include "util.h"

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
};

/* ClamAV's own defaults for the limits (clamd.conf(5)). */
#define CFG_AV_DATABASE "/var/lib/clamav"
static const struct cfg_antivirus cfg_antivirus_default = {
    .enabled = 1,
    .database = NULL, /* CFG_AV_DATABASE, allocated */
    .on_virus = ACT_STRIP,
    .on_error = ACT_DENY,
    .max_scan_size = 100 * 1024 * 1024,
    .max_file_size = 25 * 1024 * 1024,
    .max_recursion = 17,
    .max_files = 10000,
    .max_scan_time_ms = 120 * 1000,
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
enum { SET_MAXSIZE = 1, SET_OVERSIZE = 2, SET_MAXLINE = 4 };
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
enum { ARES_NEW = 0, ARES_ACTIVE, ARES_DONE };

struct cfg_aaux {
	struct cfg_action *act;
	unsigned set;
	struct cfg_general ov;
	unsigned avset;
	struct cfg_antivirus av; /* av.database owned here until applied */
	char *deny;
	struct cfg_pos ipos;
	int state;
	int ok;
};

/* Per policy: positions needed when resolving names after the walk. */
struct cfg_paux {
	struct cfg_pos name, to, action;
};

struct cfg_state {
	const char *file;
	struct config *cfg;
	struct cfg_error *errs;
	size_t nerrs, caperrs, dropped;
	int oom;
	struct cfg_aaux *aaux;
	struct cfg_paux *paux;
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
static const struct cfg_enum cfg_on_virus[] = {
    {"allow", ACT_ALLOW},
    {"strip", ACT_STRIP},
    {"deny", ACT_DENY},
    {"drop", ACT_DROP},
    {NULL, 0},
};
/* "lock" comes with the locking issue. */
static const struct cfg_enum cfg_on_error[] = {
    {"allow", ACT_ALLOW},
    {"deny", ACT_DENY},
    {"drop", ACT_DROP},
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
 * servers: name -> { balance, tls, connect_timeout, send_id, members }.
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
	int *tls = &((struct cfg_server *)o)->tls;

	/* Refused rather than ignored: a plaintext connection to a TLS
	 * port would fail in ways that look like a broken server. */
	if (cfg_enum(st, k, v, cfg_srv_tls, tls) == 0 && *tls != SRV_TLS_NONE)
		cfg_err(st, v->pos,
		    "tls: %s to the servers is not "
		    "implemented yet; use none",
		    v->str);
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

static const struct cfg_key cfg_server_keys[] = {
    {"balance", cfg_k_balance, 0},
    {"tls", cfg_k_srvtls, 0},
    {"connect_timeout", cfg_k_connect_timeout, 0},
    {"send_id", cfg_k_send_id, 0},
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
	s->connect_timeout_ms = 10 * 1000;
	s->send_id = 1;
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
	if ((cfg->servers = calloc(n, sizeof(*cfg->servers))) == NULL) {
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
 * actions: name -> { inherit, general, deny_message }.  Values are
 * resolved after the walk, when every action is known.
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

static const struct cfg_key cfg_general_keys[] = {
    {"max_email_size", cfg_k_max_email_size, 0},
    {"oversize", cfg_k_oversize, 0},
    {"max_line_length", cfg_k_max_line_length, 0},
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

static const struct cfg_key cfg_action_keys[] = {
    {"inherit", cfg_k_inherit, 0},
    {"general", cfg_k_general, 0},
    {"antivirus", cfg_k_antivirus, 0},
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
	int *tls = &((struct cfg_listen *)o)->tls;

	if (cfg_enum(st, k, v, cfg_listen_tls, tls) == 0 &&
	    *tls != LISTEN_TLS_NONE)
		cfg_err(st, v->pos,
		    "tls: %s listeners are not implemented "
		    "yet; use none",
		    v->str);
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

static const struct cfg_key cfg_policy_keys[] = {
    {"name", cfg_k_pname, 1},
    {"listen", cfg_k_listen, 1},
    {"from", cfg_k_from, 0},
    {"to", cfg_k_to, 1},
    {"disposition", cfg_k_disposition, 0},
    {"action", cfg_k_paction, 0},
    {"idle_timeout", cfg_k_idle_timeout, 0},
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
	if ((p->action = cfg_strdup(st, cfg_builtin_names[0])) == NULL)
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
    {"servers", cfg_k_servers, 0},
    {"actions", cfg_k_actions, 0},
    {"policies", cfg_k_policies, 0},
    {NULL, NULL, 0},
};

/*
 * Resolution, after the walk: inheritance, then policy references.
 */

static ssize_t
cfg_action_find(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->nactions; i++)
		if (cfg->actions[i].name != NULL &&
		    strcmp(cfg->actions[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

static ssize_t
cfg_server_find(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->nservers; i++)
		if (cfg->servers[i].name != NULL &&
		    strcmp(cfg->servers[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

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

static void
cfg_act_apply(struct cfg_state *st, struct cfg_action *a,
    const struct cfg_aaux *x, const struct cfg_action *base)
{
	a->general = base->general;
	if (x->set & SET_MAXSIZE)
		a->general.max_email_size = x->ov.max_email_size;
	if (x->set & SET_OVERSIZE)
		a->general.oversize = x->ov.oversize;
	if (x->set & SET_MAXLINE)
		a->general.max_line_length = x->ov.max_line_length;
	cfg_av_apply(st, &a->antivirus, x, &base->antivirus);
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
	if (p->to != NULL) {
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
}

static void
cfg_resolve(struct cfg_state *st)
{
	size_t i;

	cfg_resolve_actions(st);
	for (i = 0; i < st->cfg->npolicies; i++)
		cfg_resolve_policy(st, &st->cfg->policies[i], &st->paux[i], i);
}

/*
 * Construction and the entry points.
 */

static int
cfg_builtin(struct cfg_action *a, const char *name)
{
	a->builtin = 1;
	a->general = cfg_general_default;
	a->antivirus = cfg_antivirus_default;
	if ((a->name = strdup(name)) == NULL ||
	    (a->antivirus.database = strdup(CFG_AV_DATABASE)) == NULL ||
	    (a->deny_message = strdup(CFG_DENY_MESSAGE)) == NULL)
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
	c->actions = calloc(CFG_NBUILTIN, sizeof(*c->actions));
	if (c->actions != NULL)
		for (i = 0; i < CFG_NBUILTIN; i++, c->nactions++)
			if (cfg_builtin(&c->actions[i], cfg_builtin_names[i]))
				ok = 0;
	if (!ok || !c->file || !c->user || !c->chroot || !c->state_dir ||
	    !c->control_socket || !c->actions) {
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
cfg_state_free(struct cfg_state *st)
{
	size_t i;

	for (i = 0; st->aaux != NULL && i < st->cfg->nactions; i++) {
		free(st->aaux[i].deny);
		free(st->aaux[i].av.database);
	}
	free(st->aaux);
	free(st->paux);
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
		free(c->actions[i].deny_message);
	}
	free(c->actions);
}

static void
cfg_free_policies(struct config *c)
{
	struct cfg_policy *p;
	size_t i;

	for (i = 0; i < c->npolicies; i++) {
		p = &c->policies[i];
		free(p->name);
		free(p->listen);
		free(p->from);
		free(p->to);
		free(p->action);
	}
	free(c->policies);
}

void
config_free(struct config *c)
{
	if (c == NULL)
		return;
	cfg_free_servers(c);
	cfg_free_actions(c);
	cfg_free_policies(c);
	free(c->file);
	free(c->user);
	free(c->chroot);
	free(c->state_dir);
	free(c->control_socket);
	free(c);
}
