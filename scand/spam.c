/*
 * spamBlocker: the builtin rules engine, and clients for spamd
 * (SpamAssassin, SPAMC/1.5) and rspamd (HTTP, /checkv2).
 *
 * spam_check() judges a whole message: the exceptions first (sender
 * patterns on the From addresses, recipient patterns on the To and Cc
 * addresses, rules_wildcard() semantics; an exception with both needs
 * both), then max_size (0: no limit), then the engine's score, and the
 * category is the highest one whose threshold the score reaches
 * (confirmed, bulk, suspect).  A failing engine is SPAM_UNAVAILABLE
 * with the reason in the detail; the caller applies on_unavailable.
 *
 * The builtin rules file
 * ----------------------
 * One rule a line, fields separated by blanks (spaces or tabs):
 *
 *	header      NAME FIELD SCORE PATTERN
 *	absent      NAME FIELD SCORE
 *	body        NAME SCORE PATTERN
 *	fingerprint NAME SCORE SHA256
 *
 * Empty lines, lines of blanks and lines whose first non-blank character
 * is '#' are skipped.  A line ends with LF or CRLF and has at most 8192
 * bytes; a file has at most 10000 rules.
 *
 *  NAME     1 to 63 characters of A-Z a-z 0-9 '_' '.' '-', unique in the
 *           file: it names the rule in logs and verdicts.
 *  FIELD    a header field name (printable ASCII except ':'), compared
 *           without regard to case.
 *  SCORE    a decimal number from -1000000 to 1000000, with an optional
 *           sign and fraction ("3", "-1.5", "0.25"); negative scores
 *           mark good signs.
 *  PATTERN  the rest of the line, without the blanks at its ends: a PCRE2
 *           regular expression (Perl syntax, UTF-8), searched anywhere
 *           in the subject, case-sensitive unless it starts with (?i).
 *           \w, \d and \b are ASCII unless it starts with (*UCP).
 *  SHA256   64 hexadecimal digits.
 *
 *  header       hits when the value of a FIELD field of the message
 *               header matches PATTERN.  The value is unfolded (its line
 *               breaks removed, the blank that starts a continuation
 *               line kept), its RFC 2047 encoded words are decoded to
 *               UTF-8 and the blanks at its start removed.  Every field
 *               of that name is tried.
 *  absent       hits when the message header has no FIELD field.
 *  body         hits when the text of the message matches PATTERN.  The
 *               text: every text/ part (a message without MIME is one
 *               text/plain part) decoded from its transfer encoding
 *               (base64, quoted-printable), converted to UTF-8 from its
 *               charset, text/html without its tags, comments, scripts
 *               and styles and with its character references decoded;
 *               the parts in message order, joined by a line feed,
 *               with every CRLF line end as a line feed.
 *               PATTERN is matched against the whole text: (?m) makes
 *               ^ and $ match at line ends, (?s) lets '.' match them.
 *  fingerprint  hits when SHA256 is the SHA-256 of the normalised text:
 *               the text as for body rules, ASCII letters in lower case,
 *               every digit 0-9 replaced by '0', every run of white
 *               space (space, tab, CR, LF, VT, FF) replaced by one space,
 *               and no space at the start or the end.  An empty
 *               normalised text matches no fingerprint.
 *
 * Every rule counts at most once; the score of a message is the sum of
 * the scores of the rules it hits.  Patterns are compiled once, when
 * the engine is made, and matched under a match limit, a depth limit
 * and a heap limit, without JIT (the sandbox forbids executable
 * memory): a rule that hits a limit counts as not hit and is named in
 * the detail as "NAME(limit)" (another match error: "NAME(error)").
 * The rules of one message are also bound by timeout_ms: past it the
 * message gets SPAM_UNAVAILABLE.  An error in the file refuses it as a
 * whole with "FILE: line N: why".  Without a rules file,
 * spam_rules_default below is used: GTUBE and a few conservative
 * classic rules.
 *
 * The network engines
 * -------------------
 * One TCP connection per message to the configured (numeric) address,
 * non-blocking, with one deadline (timeout_ms, 30 s if 0) for
 * connecting, sending and reading.  Answers are read up to 64 KiB; a
 * longer one, a malformed one, a timeout or a refused connection is
 * SPAM_UNAVAILABLE, never a crash or a wait past the deadline.
 *  spamd   "SYMBOLS SPAMC/1.5" with a Content-length: the status line
 *          "SPAMD/1.x 0 EX_OK", the header "Spam: True ; 7.5 / 5.0"
 *          gives the score (spamd's own threshold is not used) and the
 *          body the names of the rules hit.
 *  rspamd  "POST /checkv2 HTTP/1.0" with a Content-Length: a 200 answer
 *          whose body is a JSON object; its "score" (a number, required)
 *          is the score, the keys of "symbols" and "action" go to the
 *          detail.  The JSON is read by a small strict reader below
 *          (RFC 8259 grammar, nesting at most 32 deep).
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <gmime/gmime.h>
#include <openssl/evp.h>

#include "log.h"
#include "scand.h"
#include "util.h"

#define SPAM_NAME_MAX 63
#define SPAM_LINE_MAX 8192
#define SPAM_MAX_RULES 10000
#define SPAM_SCORE_MAX 1000000.0
#define SPAM_MATCH_LIMIT 100000
#define SPAM_DEPTH_LIMIT 10000
#define SPAM_HEAP_LIMIT 65536 /* KiB */
#define SPAM_TEXT_MAX (64 * 1024 * 1024)
#define SPAM_MAX_ADDRS 1000 /* addresses read for the exceptions */
#define SPAM_ANSWER_MAX (64 * 1024)
#define SPAM_TIMEOUT_MS 30000 /* if the config has none */
#define SPAM_JSON_DEPTH 32
#define SPAM_MAX_SYMBOLS 256 /* rspamd symbols kept for the detail */

enum spam_kind { SR_HEADER = 0, SR_ABSENT, SR_BODY, SR_FINGERPRINT };

struct spam_rule {
	int kind;
	char name[SPAM_NAME_MAX + 1];
	char *field; /* header, absent */
	double score;
	pcre2_code *re; /* header, body */
	uint8_t sha[32]; /* fingerprint */
};

struct spam_exc {
	char *sender;
	char *recipient;
};

struct spam_engine {
	int engine; /* SPAM_ENGINE_* */
	struct cfg_addr addr;
	uint64_t timeout_ms;
	uint64_t max_size; /* 0: no limit */
	double cat[SPAM_NCAT];
	struct spam_exc *exc;
	size_t nexc;
	/* builtin */
	struct spam_rule *rules;
	size_t nrules;
	int need_text;
	pcre2_match_context *mctx;
	pcre2_match_data *md; /* scand is single-threaded */
	EVP_MD *sha256;
};

/*
 * The compiled-in rules: GTUBE, and classic signs with small scores,
 * far below the default thresholds (5, 10, 15) on their own.
 */
static const char spam_rules_default[] =
    "# GTUBE, the Generic Test for Unsolicited Bulk Email.\n"
    "body GTUBE 1000 "
    "XJS\\*C4JDBQADN1\\.NSBN3\\*2IDNEN\\*GTUBE-STANDARD-ANTI-UBE-TEST-"
    "EMAIL\\*C\\.34X\n"
    "\n"
    "# Header fields that mail programs write.\n"
    "absent MISSING_FROM From 1.0\n"
    "absent MISSING_DATE Date 0.5\n"
    "absent MISSING_MESSAGE_ID Message-ID 0.5\n"
    "absent MISSING_SUBJECT Subject 0.5\n"
    "header FROM_NO_ADDRESS From 1.0 ^[^@]*$\n"
    "\n"
    "# Shouting subjects.\n"
    "header SUBJ_ALL_CAPS Subject 0.5 ^(?=[^\\p{Ll}]*$).*\\p{Lu}{3}\n"
    "header SUBJ_EXCLAIM Subject 0.5 !{3}\n"
    "header PRIORITY_HIGHEST X-Priority 0.2 ^1\\b\n"
    "header PRECEDENCE_BULK Precedence 0.5 (?i)^bulk\\s*$\n"
    "\n"
    "# Classic bodies.\n"
    "body PHARMA_NAMES 2.0 (?i)\\b(viagra|cialis|levitra)\\b\n"
    "body LOTTERY_WIN 2.0 (?is)\\byou have (won|been selected)\\b"
    ".{0,80}\\b(lottery|prize|sweepstakes?|jackpot)\\b\n"
    "body ADVANCE_FEE 2.0 (?i)\\b(next of kin|transfer the (sum|amount) "
    "of)\\b\n"
    "body MONEY_BACK 0.5 (?i)\\bmoney[ -]back guarantee\\b\n"
    "body CLICK_HERE 0.3 (?i)\\bclick (here|below)\\b\n";

/*
 * Detail: words separated by spaces, " ..." when the rest does not fit.
 */
struct detail {
	char *s;
	size_t size;
	size_t len;
	int full;
};

static void
detail_init(struct detail *d, char *s, size_t size)
{
	d->s = s;
	d->size = size;
	d->len = 0;
	d->full = 0;
	s[0] = '\0';
}

static void
detail_word(struct detail *d, const char *w)
{
	size_t n = strlen(w), sep = d->len > 0;

	if (d->full || n == 0)
		return;
	/* Keep room for " ..." after any word. */
	if (d->len + sep + n + 4 >= d->size) {
		if (d->len + 4 < d->size) {
			memcpy(d->s + d->len, sep ? " ..." : "...", 4);
			d->len += sep ? 4 : 3;
			d->s[d->len] = '\0';
		}
		d->full = 1;
		return;
	}
	if (sep)
		d->s[d->len++] = ' ';
	memcpy(d->s + d->len, w, n);
	d->len += n;
	d->s[d->len] = '\0';
}

/* A word from a server: printable ASCII, at most 64 bytes; with
 * spaces, if space, as they are. */
static void
clean_text(const char *s, size_t n, int space, char *out, size_t outlen)
{
	size_t i, o = 0;

	for (i = 0; i < n && o + 1 < outlen && o < 64; i++)
		out[o++] =
		    (s[i] > 0x20 || (space && s[i] == 0x20)) && s[i] < 0x7f
		        ? s[i]
		        : '?';
	out[o] = '\0';
}

static void
clean_word(const char *s, size_t n, char *out, size_t outlen)
{
	clean_text(s, n, 0, out, outlen);
}

static void spam_fail(struct spam_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
spam_fail(struct spam_result *res, const char *fmt, ...)
{
	va_list ap;

	res->status = SPAM_UNAVAILABLE;
	res->score = 0;
	res->category = -1;
	va_start(ap, fmt);
	vsnprintf(res->detail, sizeof(res->detail), fmt, ap);
	va_end(ap);
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * The rules file.
 */

struct spam_parse {
	struct spam_engine *e;
	size_t line;
	char *err;
	size_t errlen;
	const char *file; /* for messages */
};

static void parse_err(struct spam_parse *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
parse_err(struct spam_parse *p, const char *fmt, ...)
{
	char msg[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(p->err, p->errlen, "%s: line %zu: %s", p->file, p->line, msg);
}

static int
is_blank(int c)
{
	return c == ' ' || c == '\t';
}

/* The next blank-separated word of [*s, end): its start and length. */
static size_t
next_word(const char **s, const char *end, const char **w)
{
	const char *p = *s;

	while (p < end && is_blank((unsigned char)*p))
		p++;
	*w = p;
	while (p < end && !is_blank((unsigned char)*p))
		p++;
	*s = p;
	return (size_t)(p - *w);
}

static int
parse_name(struct spam_parse *p, const char *w, size_t n, char *out)
{
	size_t i;

	if (n == 0) {
		parse_err(p, "a rule name is missing");
		return -1;
	}
	if (n > SPAM_NAME_MAX) {
		parse_err(p,
		    "rule name \"%.*s...\" is longer than %d characters", 20, w,
		    SPAM_NAME_MAX);
		return -1;
	}
	for (i = 0; i < n; i++)
		if (!(w[i] >= 'A' && w[i] <= 'Z') &&
		    !(w[i] >= 'a' && w[i] <= 'z') &&
		    !(w[i] >= '0' && w[i] <= '9') && w[i] != '_' &&
		    w[i] != '.' && w[i] != '-') {
			parse_err(p,
			    "rule name \"%.*s\": only letters, digits, '_', "
			    "'.' and '-' are allowed",
			    (int)n, w);
			return -1;
		}
	memcpy(out, w, n);
	out[n] = '\0';
	for (i = 0; i < p->e->nrules; i++)
		if (strcmp(p->e->rules[i].name, out) == 0) {
			parse_err(p, "rule name \"%s\" is used twice", out);
			return -1;
		}
	return 0;
}

static int
parse_field(struct spam_parse *p, const char *w, size_t n, char **out)
{
	size_t i;

	if (n == 0) {
		parse_err(p, "a header field name is missing");
		return -1;
	}
	for (i = 0; i < n; i++)
		if (w[i] <= 0x20 || w[i] >= 0x7f || w[i] == ':') {
			parse_err(p, "\"%.*s\" is not a header field name",
			    (int)(n > 64 ? 64 : n), w);
			return -1;
		}
	if ((*out = strndup(w, n)) == NULL) {
		parse_err(p, "out of memory");
		return -1;
	}
	return 0;
}

static int
parse_score(struct spam_parse *p, const char *w, size_t n, double *out)
{
	char s[48], *end;
	size_t i = 0, digits = 0;

	if (n == 0) {
		parse_err(p, "a score is missing");
		return -1;
	}
	/* [+-]digits[.digits]: strtod alone would take "inf" and hex. */
	if (n < sizeof(s)) {
		if (w[i] == '+' || w[i] == '-')
			i++;
		for (; i < n && w[i] >= '0' && w[i] <= '9'; i++)
			digits++;
		if (i < n && w[i] == '.')
			for (i++; i < n && w[i] >= '0' && w[i] <= '9'; i++)
				digits++;
	}
	if (n >= sizeof(s) || i != n || digits == 0) {
		parse_err(p, "score \"%.*s\" is not a decimal number",
		    (int)(n > 32 ? 32 : n), w);
		return -1;
	}
	memcpy(s, w, n);
	s[n] = '\0';
	*out = strtod(s, &end);
	if (*end != '\0' || !isfinite(*out) || fabs(*out) > SPAM_SCORE_MAX) {
		parse_err(
		    p, "score %s is out of range (-1000000 to 1000000)", s);
		return -1;
	}
	return 0;
}

static int
parse_pattern(struct spam_parse *p, const char *w, size_t n, pcre2_code **re)
{
	PCRE2_UCHAR msg[256];
	PCRE2_SIZE off;
	int code;

	if (n == 0) {
		parse_err(p, "a pattern is missing");
		return -1;
	}
	*re = pcre2_compile((PCRE2_SPTR)w, n,
	    PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C,
	    &code, &off, NULL);
	if (*re == NULL) {
		if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
			snprintf((char *)msg, sizeof(msg), "error %d", code);
		parse_err(
		    p, "pattern: %s at offset %zu", (char *)msg, (size_t)off);
		return -1;
	}
	return 0;
}

static int
parse_sha(struct spam_parse *p, const char *w, size_t n, uint8_t *sha)
{
	size_t i;
	int hi, lo;

	if (n != 64) {
		parse_err(
		    p, "a fingerprint is 64 hexadecimal digits, not %zu", n);
		return -1;
	}
	for (i = 0; i < 32; i++) {
		hi = hex_value((unsigned char)w[2 * i]);
		lo = hex_value((unsigned char)w[2 * i + 1]);
		if (hi == -1 || lo == -1) {
			parse_err(
			    p, "fingerprint \"%.64s\" is not hexadecimal", w);
			return -1;
		}
		sha[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static void
rule_clear(struct spam_rule *r)
{
	free(r->field);
	pcre2_code_free(r->re);
	memset(r, 0, sizeof(*r));
}

/* One non-comment line [s, end): a rule, or -1 with the error set. */
static int
parse_rule(struct spam_parse *p, const char *s, const char *end)
{
	struct spam_rule r;
	const char *w;
	size_t n;

	memset(&r, 0, sizeof(r));
	n = next_word(&s, end, &w);
	if (n == 6 && memcmp(w, "header", 6) == 0)
		r.kind = SR_HEADER;
	else if (n == 6 && memcmp(w, "absent", 6) == 0)
		r.kind = SR_ABSENT;
	else if (n == 4 && memcmp(w, "body", 4) == 0)
		r.kind = SR_BODY;
	else if (n == 11 && memcmp(w, "fingerprint", 11) == 0)
		r.kind = SR_FINGERPRINT;
	else {
		parse_err(p,
		    "unknown rule type \"%.*s\" (header, absent, body or "
		    "fingerprint)",
		    (int)(n > 32 ? 32 : n), w);
		return -1;
	}
	n = next_word(&s, end, &w);
	if (parse_name(p, w, n, r.name) == -1)
		return -1;
	if (r.kind == SR_HEADER || r.kind == SR_ABSENT) {
		n = next_word(&s, end, &w);
		if (parse_field(p, w, n, &r.field) == -1)
			goto fail;
	}
	n = next_word(&s, end, &w);
	if (parse_score(p, w, n, &r.score) == -1)
		goto fail;
	/* The rest of the line, blanks at both ends removed. */
	while (s < end && is_blank((unsigned char)*s))
		s++;
	while (end > s && is_blank((unsigned char)end[-1]))
		end--;
	n = (size_t)(end - s);
	switch (r.kind) {
	case SR_HEADER:
	case SR_BODY:
		if (parse_pattern(p, s, n, &r.re) == -1)
			goto fail;
		break;
	case SR_ABSENT:
		if (n > 0) {
			parse_err(p, "unexpected \"%.*s\" after the score",
			    (int)(n > 32 ? 32 : n), s);
			goto fail;
		}
		break;
	case SR_FINGERPRINT:
		if (parse_sha(p, s, n, r.sha) == -1)
			goto fail;
		break;
	}
	if (p->e->nrules == SPAM_MAX_RULES) {
		parse_err(p, "more than %d rules", SPAM_MAX_RULES);
		goto fail;
	}
	p->e->rules[p->e->nrules++] = r;
	if (r.kind == SR_BODY || r.kind == SR_FINGERPRINT)
		p->e->need_text = 1;
	return 0;
fail:
	rule_clear(&r);
	return -1;
}

static int
parse_rules(struct spam_engine *e, const char *file, const char *data,
    size_t len, char *err, size_t errlen)
{
	struct spam_parse p = {e, 0, err, errlen, file};
	const char *s = data, *end = data + len, *nl, *le, *t;
	size_t cap = 1;

	/* At most one rule a line: count the lines for the array. */
	for (t = data; t < end && (t = memchr(t, '\n', end - t)) != NULL; t++)
		if (++cap > SPAM_MAX_RULES)
			break;
	if ((e->rules = calloc(cap, sizeof(*e->rules))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", file);
		return -1;
	}
	while (s < end) {
		p.line++;
		nl = memchr(s, '\n', end - s);
		le = nl != NULL ? nl : end;
		if (le > s && le[-1] == '\r')
			le--;
		if ((size_t)(le - s) > SPAM_LINE_MAX) {
			parse_err(&p, "longer than %d bytes", SPAM_LINE_MAX);
			return -1;
		}
		if (memchr(s, '\0', le - s) != NULL ||
		    memchr(s, '\r', le - s) != NULL) {
			parse_err(&p, "a NUL or CR byte in the line");
			return -1;
		}
		for (t = s; t < le && is_blank((unsigned char)*t); t++)
			;
		if (t < le && *t != '#' && parse_rule(&p, t, le) == -1)
			return -1;
		s = nl != NULL ? nl + 1 : end;
	}
	return 0;
}

/*
 * The text of a message, for body and fingerprint rules.
 */

static int
is_text_blocktag(const char *name)
{
	static const char *const tags[] = {"br", "p", "div", "tr", "td", "th",
	    "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
	    "blockquote", "pre", "title", "body", "html", "head"};
	size_t i;

	for (i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
		if (strcasecmp(name, tags[i]) == 0)
			return 1;
	return 0;
}

/* c as UTF-8 into u: its length.  What is not a character is '?'. */
static size_t
utf8_encode(uint32_t c, uint8_t *u)
{
	if (c == 0 || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		c = '?';
	if (c < 0x80) {
		u[0] = (uint8_t)c;
		return 1;
	}
	if (c < 0x800) {
		u[0] = (uint8_t)(0xc0 | c >> 6);
		u[1] = (uint8_t)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		u[0] = (uint8_t)(0xe0 | c >> 12);
		u[1] = (uint8_t)(0x80 | (c >> 6 & 0x3f));
		u[2] = (uint8_t)(0x80 | (c & 0x3f));
		return 3;
	}
	u[0] = (uint8_t)(0xf0 | c >> 18);
	u[1] = (uint8_t)(0x80 | (c >> 12 & 0x3f));
	u[2] = (uint8_t)(0x80 | (c >> 6 & 0x3f));
	u[3] = (uint8_t)(0x80 | (c & 0x3f));
	return 4;
}

static int
add_utf8(struct buf *out, uint32_t c)
{
	uint8_t u[4];

	return buf_add(out, u, utf8_encode(c, u));
}

/* A character reference at s ("&amp;", "&#65;", "&#x41;"): its length,
 * or 0 if it is not one (the '&' is then text). */
static size_t
html_entity(const uint8_t *s, size_t n, struct buf *out, int *r)
{
	static const struct {
		const char *name;
		uint32_t c;
	} ent[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'},
	    {"apos", '\''}, {"nbsp", ' '}};
	uint32_t c = 0;
	size_t i = 1, k, start;
	int base = 10, d;

	if (i < n && s[i] == '#') {
		i++;
		if (i < n && (s[i] == 'x' || s[i] == 'X')) {
			base = 16;
			i++;
		}
		for (start = i; i < n && i - start < 8; i++) {
			d = hex_value(s[i]);
			if (d == -1 || d >= base)
				break;
			c = c * base + (uint32_t)d;
		}
		if (i == start || i >= n || s[i] != ';')
			return 0;
		*r = add_utf8(out, c);
		return i + 1;
	}
	for (k = 0; k < sizeof(ent) / sizeof(ent[0]); k++) {
		i = strlen(ent[k].name);
		if (n > i + 1 &&
		    strncasecmp((const char *)s + 1, ent[k].name, i) == 0 &&
		    s[i + 1] == ';') {
			*r = add_utf8(out, ent[k].c);
			return i + 2;
		}
	}
	return 0;
}

/* Skip to after the end of the element whose content is not text. */
static size_t
html_skip_element(const uint8_t *s, size_t n, size_t i, const char *name)
{
	size_t k = strlen(name);

	for (; i + k + 2 <= n; i++)
		if (s[i] == '<' && s[i + 1] == '/' &&
		    strncasecmp((const char *)s + i + 2, name, k) == 0) {
			for (i += k + 2; i < n && s[i] != '>'; i++)
				;
			return i < n ? i + 1 : n;
		}
	return n;
}

/* A tag at s[i] == '<': where it ends; a line feed for block tags. */
static size_t
html_tag(const uint8_t *s, size_t n, size_t i, struct buf *out, int *r)
{
	char name[16];
	size_t k = 0, j = i + 1;
	uint8_t q = 0;

	if (n - i >= 4 && memcmp(s + i, "<!--", 4) == 0) {
		for (j = i + 4; j + 3 <= n; j++)
			if (memcmp(s + j, "-->", 3) == 0)
				return j + 3;
		return n;
	}
	if (j < n && s[j] == '/')
		j++;
	while (j < n && k + 1 < sizeof(name) &&
	       ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z') ||
	           (s[j] >= '0' && s[j] <= '9')))
		name[k++] = (char)s[j++];
	name[k] = '\0';
	if (k == 0 && !(j < n && (s[j] == '!' || s[j] == '?')))
		return 0; /* "a < b": text */
	for (; j < n; j++) {
		if (q != 0 && s[j] == q)
			q = 0;
		else if (q == 0 && (s[j] == '"' || s[j] == '\''))
			q = s[j];
		else if (q == 0 && s[j] == '>')
			break;
	}
	j = j < n ? j + 1 : n;
	if (s[i + 1] != '/' &&
	    (strcasecmp(name, "script") == 0 || strcasecmp(name, "style") == 0))
		return html_skip_element(s, n, j, name);
	if (is_text_blocktag(name))
		*r = buf_add_u8(out, '\n');
	return j;
}

static int
html_strip(const uint8_t *s, size_t n, struct buf *out)
{
	size_t i = 0, k;
	int r = 0;

	while (i < n && r == 0) {
		if (s[i] == '<' && (k = html_tag(s, n, i, out, &r)) != 0)
			i = k;
		else if (s[i] == '&' &&
		         (k = html_entity(s + i, n - i, out, &r)) != 0)
			i += k;
		else
			r = buf_add_u8(out, s[i++]);
	}
	return r;
}

/* The charset parameter of a part's Content-Type, or NULL; to free. */
static char *
part_charset(const struct mime_msg *m, const struct mime_part *part)
{
	const struct mime_field *f;
	GMimeContentType *ct;
	const char *cs;
	char *v, *r = NULL;

	if ((f = mime_field(m, part, "Content-Type")) == NULL ||
	    (v = mime_field_value(m, f)) == NULL)
		return NULL;
	if ((ct = g_mime_content_type_parse(NULL, v)) != NULL) {
		cs = g_mime_content_type_get_parameter(ct, "charset");
		if (cs != NULL && *cs != '\0')
			r = strdup(cs);
		g_object_unref(ct);
	}
	free(v);
	return r;
}

/* in converted to UTF-8 from charset into out; 1 if there is no
 * converter (out untouched), -1 if no memory. */
static int
to_utf8(const char *charset, const uint8_t *in, size_t n, struct buf *out)
{
	GMimeStream *mem, *filt;
	GMimeFilter *f;
	GByteArray *ba;
	int r = 0;

	if ((f = g_mime_filter_charset_new(charset, "UTF-8")) == NULL)
		return 1;
	mem = g_mime_stream_mem_new();
	filt = g_mime_stream_filter_new(mem);
	g_mime_stream_filter_add(GMIME_STREAM_FILTER(filt), f);
	g_object_unref(f);
	if (n > 0 && g_mime_stream_write(filt, (const char *)in, n) < 0)
		r = 1;
	if (g_mime_stream_flush(filt) < 0)
		r = 1;
	ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
	if (r == 0 && buf_add(out, ba->data, ba->len) == -1)
		r = -1;
	g_object_unref(filt);
	g_object_unref(mem);
	return r;
}

static int
is_plain_charset(const char *cs)
{
	return cs == NULL || strcasecmp(cs, "utf-8") == 0 ||
	       strcasecmp(cs, "utf8") == 0 || strcasecmp(cs, "us-ascii") == 0 ||
	       strcasecmp(cs, "ascii") == 0;
}

/* The bytes of a buffer; an empty one may have no storage at all. */
static uint8_t *
head(const struct buf *b)
{
	static uint8_t none[1];

	return buf_used(b) > 0 ? buf_head(b) : none;
}

/* Append what fits under the text's cap; -1 only if no memory. */
static int
text_add(struct buf *text, const void *p, size_t n)
{
	if (n > buf_room(text))
		n = buf_room(text);
	return buf_add(text, p, n);
}

/* The same with CRLF line ends as LF. */
static int
text_add_lines(struct buf *text, const uint8_t *p, size_t n)
{
	const uint8_t *cr;
	size_t k;

	while (n > 0) {
		if ((cr = memchr(p, '\r', n)) == NULL)
			return text_add(text, p, n);
		k = (size_t)(cr - p);
		if (k + 1 < n && cr[1] == '\n') {
			if (text_add(text, p, k) == -1)
				return -1;
			k++; /* the CR dropped, the LF kept */
		} else if (text_add(text, p, ++k) == -1)
			return -1;
		p += k;
		n -= k;
	}
	return 0;
}

/* Append the text of a text/ leaf to text.  -1 if no memory. */
static int
part_text(const struct mime_msg *m, const struct mime_part *part,
    const char *subtype, struct buf *text)
{
	struct buf raw, utf, html;
	const struct buf *src = &raw;
	char *cs;
	int r = -1;

	buf_init(&raw, 0);
	buf_init(&utf, 0);
	buf_init(&html, 0);
	if (mime_decode_body(m, part, &raw) == -1)
		goto done;
	cs = part_charset(m, part);
	if (!is_plain_charset(cs)) {
		switch (to_utf8(cs, head(&raw), buf_used(&raw), &utf)) {
		case -1:
			free(cs);
			goto done;
		case 0:
			src = &utf;
			break;
		}
	}
	free(cs);
	/* Stripping never makes the text longer. */
	if (strcmp(subtype, "html") == 0) {
		if (html_strip(head(src), buf_used(src), &html) == -1)
			goto done;
		src = &html;
	}
	if (buf_used(text) > 0 && text_add(text, "\n", 1) == -1)
		goto done;
	r = text_add_lines(text, head(src), buf_used(src));
done:
	buf_free(&raw);
	buf_free(&utf);
	buf_free(&html);
	return r;
}

static int
walk_text(
    const struct mime_msg *m, const struct mime_part *part, struct buf *text)
{
	const struct mime_part *c;
	char type[64], subtype[64];

	if (part->kind == MIME_LEAF || part->children == NULL) {
		if (part->kind != MIME_LEAF)
			return 0;
		mime_content_type(
		    m, part, type, sizeof(type), subtype, sizeof(subtype));
		if (strcmp(type, "text") != 0)
			return 0;
		return part_text(m, part, subtype, text);
	}
	for (c = part->children; c != NULL; c = c->next)
		if (walk_text(m, c, text) == -1)
			return -1;
	return 0;
}

/* The normalised text of a fingerprint, in place: its new length. */
static size_t
normalise(uint8_t *s, size_t n)
{
	size_t i, o = 0;
	int space = 0;

	for (i = 0; i < n; i++) {
		uint8_t c = s[i];

		if (c == ' ' || (c >= '\t' && c <= '\r')) {
			space = 1;
			continue;
		}
		if (space && o > 0)
			s[o++] = ' ';
		space = 0;
		if (c >= 'A' && c <= 'Z')
			c = c - 'A' + 'a';
		else if (c >= '0' && c <= '9')
			c = '0';
		s[o++] = c;
	}
	return o;
}

/*
 * The builtin engine.
 */

/* 1 hit, 0 not, -1 a limit, -2 another match error. */
static int
rule_match(
    struct spam_engine *e, const struct spam_rule *r, const void *s, size_t n)
{
	int rc;

	if (n == 0)
		s = ""; /* an empty buffer may have no storage */
	rc = pcre2_match(r->re, (PCRE2_SPTR)s, n, 0, 0, e->md, e->mctx);
	if (rc >= 0)
		return 1;
	switch (rc) {
	case PCRE2_ERROR_NOMATCH:
		return 0;
	case PCRE2_ERROR_MATCHLIMIT:
	case PCRE2_ERROR_DEPTHLIMIT:
	case PCRE2_ERROR_HEAPLIMIT:
		return -1;
	default:
		return -2;
	}
}

static int
header_rule(
    struct spam_engine *e, const struct spam_rule *r, const struct mime_msg *m)
{
	const struct mime_part *root = m->root;
	const struct mime_field *f;
	const char *v;
	char *raw, *dec;
	size_t i, n = strlen(r->field);
	int hit = 0, rc;

	/* A hit in any field; else the error of one, if any. */
	for (i = 0; i < root->nfields && hit != 1; i++) {
		f = &root->fields[i];
		if (f->name_len != n ||
		    strncasecmp((const char *)m->data + f->off, r->field, n) !=
		        0)
			continue;
		if ((raw = mime_field_value(m, f)) == NULL) {
			hit = -2;
			continue;
		}
		dec = g_mime_utils_header_decode_text(NULL, raw);
		for (v = dec != NULL ? dec : raw; is_blank((unsigned char)*v);)
			v++;
		if ((rc = rule_match(e, r, v, strlen(v))) == 1 ||
		    (rc < 0 && hit == 0))
			hit = rc;
		g_free(dec);
		free(raw);
	}
	return hit;
}

static void
add_hit(struct detail *d, const struct spam_rule *r, const char *note)
{
	char w[SPAM_NAME_MAX + 40];

	if (note != NULL)
		snprintf(w, sizeof(w), "%s(%s)", r->name, note);
	else
		snprintf(w, sizeof(w), "%s(%g)", r->name, r->score);
	detail_word(d, w);
}

static void
spam_builtin(
    struct spam_engine *e, const struct mime_msg *m, struct spam_result *res)
{
	const struct spam_rule *r;
	struct detail d;
	struct buf text, norm;
	uint8_t sha[EVP_MAX_MD_SIZE];
	unsigned int shalen = 0;
	uint64_t start = now_ms();
	size_t i, max;
	int hit;

	buf_init(&text, 0);
	buf_init(&norm, 0);
	detail_init(&d, res->detail, sizeof(res->detail));
	if (e->need_text) {
		max = m->len > (SPAM_TEXT_MAX - 4096) / 4 ? SPAM_TEXT_MAX
		                                          : m->len * 4 + 4096;
		buf_init(&text, max);
		/* Past the cap, the text so far is judged. */
		if (walk_text(m, m->root, &text) == -1) {
			spam_fail(res, "builtin: out of memory");
			goto done;
		}
		if (buf_add(&norm, head(&text), buf_used(&text)) == -1) {
			spam_fail(res, "builtin: out of memory");
			goto done;
		}
		norm.len = norm.off + normalise(head(&norm), buf_used(&norm));
		if (buf_used(&norm) > 0 &&
		    EVP_Digest(head(&norm), buf_used(&norm), sha, &shalen,
		        e->sha256, NULL) != 1) {
			spam_fail(res, "builtin: SHA-256 failed");
			goto done;
		}
	}
	res->score = 0;
	for (i = 0; i < e->nrules; i++) {
		r = &e->rules[i];
		switch (r->kind) {
		case SR_HEADER:
			hit = header_rule(e, r, m);
			break;
		case SR_ABSENT:
			hit = mime_field(m, m->root, r->field) == NULL;
			break;
		case SR_BODY:
			hit = rule_match(e, r, head(&text), buf_used(&text));
			break;
		default:
			hit = shalen == 32 && memcmp(sha, r->sha, 32) == 0;
			break;
		}
		if (hit == 1) {
			res->score += r->score;
			add_hit(&d, r, NULL);
		} else if (hit < 0)
			add_hit(&d, r, hit == -1 ? "limit" : "error");
		if (now_ms() - start > e->timeout_ms) {
			spam_fail(res,
			    "builtin: rules took longer than %llu ms",
			    (unsigned long long)e->timeout_ms);
			goto done;
		}
	}
	res->status = SPAM_OK;
done:
	buf_free(&text);
	buf_free(&norm);
}

/*
 * The network: one exchange under one deadline.
 */

struct exchange {
	const struct spam_engine *e;
	uint64_t deadline;
	char *ans; /* SPAM_ANSWER_MAX + 1 bytes */
	size_t len;
	/* 1 when ans holds a whole answer (no need to wait for EOF). */
	int (*complete)(const char *, size_t);
	char err[160];
};

/* Wait for events on fd until the deadline: revents, or 0 on timeout,
 * -1 on error. */
static int
wait_fd(struct exchange *x, int fd, short events)
{
	struct pollfd pfd;
	uint64_t now;
	int r;

	for (;;) {
		if ((now = now_ms()) >= x->deadline)
			return 0;
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		r = poll(&pfd, 1,
		    x->deadline - now > INT_MAX ? INT_MAX
		                                : (int)(x->deadline - now));
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			snprintf(x->err, sizeof(x->err), "poll: %s",
			    strerror(errno));
			return -1;
		}
		if (r == 1)
			return pfd.revents;
	}
}

static int
timed_out(struct exchange *x, const char *what)
{
	snprintf(x->err, sizeof(x->err), "no %s within %llu ms", what,
	    (unsigned long long)x->e->timeout_ms);
	return -1;
}

static int
x_connect(struct exchange *x, int fd)
{
	const struct cfg_addr *a = &x->e->addr;
	socklen_t sl;
	int r, soerr;

	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR) {
		snprintf(
		    x->err, sizeof(x->err), "connect: %s", strerror(errno));
		return -1;
	}
	if ((r = wait_fd(x, fd, POLLOUT)) == 0)
		return timed_out(x, "connection");
	if (r == -1)
		return -1;
	sl = sizeof(soerr);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1)
		soerr = errno;
	if (soerr != 0) {
		snprintf(
		    x->err, sizeof(x->err), "connect: %s", strerror(soerr));
		return -1;
	}
	return 0;
}

/* Send the request; stop early (0) if the server answers or hangs up
 * before taking all of it: its answer tells more than our error. */
static int
x_send(struct exchange *x, int fd, const char *hdr, const void *msg, size_t len)
{
	const uint8_t *p[2] = {(const uint8_t *)hdr, msg};
	size_t n[2] = {strlen(hdr), len}, i, off;
	ssize_t w;
	int r;

	for (i = 0; i < 2; i++) {
		for (off = 0; off < n[i];) {
			w = send(fd, p[i] + off, n[i] - off, MSG_NOSIGNAL);
			if (w > 0) {
				off += (size_t)w;
				continue;
			}
			if (w == -1 && errno == EINTR)
				continue;
			if (w == -1 && errno != EAGAIN && errno != EWOULDBLOCK)
				return 0;
			if ((r = wait_fd(x, fd, POLLOUT | POLLIN)) == 0)
				return timed_out(x, "room to send the message");
			if (r == -1)
				return -1;
			if (r & POLLIN)
				return 0;
		}
	}
	return 0;
}

static int
x_recv(struct exchange *x, int fd)
{
	ssize_t n;
	int r;

	while (x->complete == NULL || !x->complete(x->ans, x->len)) {
		n = recv(fd, x->ans + x->len, SPAM_ANSWER_MAX + 1 - x->len, 0);
		if (n == 0)
			break;
		if (n > 0) {
			x->len += (size_t)n;
			if (x->len > SPAM_ANSWER_MAX) {
				snprintf(x->err, sizeof(x->err),
				    "answer longer than %d KiB",
				    SPAM_ANSWER_MAX / 1024);
				return -1;
			}
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			snprintf(x->err, sizeof(x->err), "%s: %s",
			    x->len ? "answer cut" : "no answer",
			    strerror(errno));
			return -1;
		}
		if ((r = wait_fd(x, fd, POLLIN)) == 0)
			return timed_out(x, x->len ? "whole answer" : "answer");
		if (r == -1)
			return -1;
	}
	x->ans[x->len] = '\0';
	if (x->len == 0) {
		snprintf(x->err, sizeof(x->err), "closed without an answer");
		return -1;
	}
	return 0;
}

static int
exchange(struct exchange *x, const char *hdr, const void *msg, size_t len)
{
	int fd, r = -1;

	x->deadline = now_ms() + x->e->timeout_ms;
	x->len = 0;
	x->err[0] = '\0';
	/* A scand started without network access: socket() would trap. */
	if (!scand_net_allowed()) {
		snprintf(x->err, sizeof(x->err),
		    "this scand has no network access (started under a "
		    "configuration without spamd or rspamd; it is replaced)");
		return -1;
	}
	fd = socket(x->e->addr.ss.ss_family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(x->err, sizeof(x->err), "socket: %s", strerror(errno));
		return -1;
	}
	if (x_connect(x, fd) == 0 && x_send(x, fd, hdr, msg, len) == 0 &&
	    x_recv(x, fd) == 0)
		r = 0;
	close(fd);
	return r;
}

/*
 * Answers: lines and header fields.
 */

/* The line at *s (up to LF, CR before it dropped); *s moves past it.
 * -1 if there is no line feed before end. */
static int
next_line(const char **s, const char *end, const char **l, size_t *n)
{
	const char *nl;

	if (*s >= end || (nl = memchr(*s, '\n', end - *s)) == NULL)
		return -1;
	*l = *s;
	*n = (size_t)(nl - *s);
	if (*n > 0 && nl[-1] == '\r')
		(*n)--;
	*s = nl + 1;
	return 0;
}

/* The end of the header of an answer (after its empty line), or NULL. */
static const char *
header_end(const char *s, size_t len)
{
	const char *end = s + len, *l;
	size_t n;

	while (next_line(&s, end, &l, &n) == 0)
		if (n == 0)
			return s;
	return NULL;
}

/* Is the header line l a field name (case-insensitive)?  Its value. */
static const char *
field_is(const char *l, size_t n, const char *name, size_t *vlen)
{
	size_t k = strlen(name), i;

	if (n <= k || strncasecmp(l, name, k) != 0 || l[k] != ':')
		return NULL;
	for (i = k + 1; i < n && is_blank((unsigned char)l[i]); i++)
		;
	*vlen = n - i;
	while (*vlen > 0 && is_blank((unsigned char)l[i + *vlen - 1]))
		(*vlen)--;
	return l + i;
}

/* A decimal number field: [+-]digits[.digits][e[+-]digits], finite. */
static int
number(const char *s, size_t n, double *v)
{
	char b[48], *end;
	size_t i;

	if (n == 0 || n >= sizeof(b))
		return -1;
	for (i = 0; i < n; i++)
		if (strchr("0123456789+-.eE", s[i]) == NULL)
			return -1;
	memcpy(b, s, n);
	b[n] = '\0';
	*v = strtod(b, &end);
	return *end == '\0' && isfinite(*v) ? 0 : -1;
}

static int
content_length(const char *v, size_t n, size_t *len)
{
	size_t i, x = 0;

	if (n == 0 || n > 9)
		return -1;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (size_t)(v[i] - '0');
	}
	*len = x;
	return 0;
}

/* Complete when the header is in and the body has Content-length bytes
 * (both spamd and HTTP name it so, case aside). */
static int
answer_complete(const char *s, size_t len)
{
	const char *b, *l, *v, *p = s;
	size_t n, vn, cl;

	if ((b = header_end(s, len)) == NULL)
		return 0;
	next_line(&p, b, &l, &n); /* the status line */
	while (next_line(&p, b, &l, &n) == 0 && n > 0)
		if ((v = field_is(l, n, "Content-length", &vn)) != NULL)
			return content_length(v, vn, &cl) == 0 &&
			       (size_t)(s + len - b) >= cl;
	return 0;
}

/* The body of an answer after its header, checked against its
 * Content-length if it has one. */
static int
answer_body(const char *s, size_t len, const char *b, const char **body,
    size_t *blen, char *err, size_t errlen)
{
	const char *l, *v, *p = s;
	size_t n, vn, cl;

	*body = b;
	*blen = (size_t)(s + len - b);
	next_line(&p, b, &l, &n);
	while (next_line(&p, b, &l, &n) == 0 && n > 0) {
		if ((v = field_is(l, n, "Content-length", &vn)) == NULL)
			continue;
		if (content_length(v, vn, &cl) == -1) {
			snprintf(err, errlen, "bad Content-length");
			return -1;
		}
		if (cl > *blen) {
			snprintf(err, errlen,
			    "answer cut: %zu of %zu body bytes", *blen, cl);
			return -1;
		}
		*blen = cl;
	}
	return 0;
}

/*
 * spamd.
 */

/* "True ; 7.5 / 5.0": the score. */
static int
spamd_score(const char *v, size_t n, double *score)
{
	const char *end = v + n, *semi, *slash, *a, *z;
	double thr;

	if ((semi = memchr(v, ';', n)) == NULL ||
	    (slash = memchr(semi, '/', end - semi)) == NULL)
		return -1;
	for (z = semi; z > v && is_blank((unsigned char)z[-1]); z--)
		;
	if (!((z - v == 4 && strncasecmp(v, "True", 4) == 0) ||
	        (z - v == 5 && strncasecmp(v, "False", 5) == 0) ||
	        (z - v == 3 && strncasecmp(v, "Yes", 3) == 0) ||
	        (z - v == 2 && strncasecmp(v, "No", 2) == 0)))
		return -1;
	for (a = semi + 1; a < slash && is_blank((unsigned char)*a); a++)
		;
	for (z = slash; z > a && is_blank((unsigned char)z[-1]); z--)
		;
	if (number(a, (size_t)(z - a), score) == -1)
		return -1;
	for (a = slash + 1; a < end && is_blank((unsigned char)*a); a++)
		;
	return number(a, (size_t)(end - a), &thr);
}

static void
spamd_parse(const char *s, size_t len, struct spam_result *res)
{
	const char *end = s + len, *b, *l, *v, *p = s, *body;
	char word[72], why[160];
	struct detail d;
	size_t n, vn, blen, i, j;
	int code = -1, have = 0;
	double score = 0;

	if (next_line(&p, end, &l, &n) == -1 || n < 8 ||
	    strncmp(l, "SPAMD/1.", 8) != 0) {
		clean_word(s, len < 40 ? len : 40, word, sizeof(word));
		spam_fail(res, "spamd: not a SPAMD answer: \"%s\"", word);
		return;
	}
	for (i = 8; i < n && l[i] >= '0' && l[i] <= '9'; i++)
		;
	if (i > 8 && i < n && l[i] == ' ') {
		for (code = 0, j = ++i;
		     i < n && l[i] >= '0' && l[i] <= '9' && i - j < 4; i++)
			code = code * 10 + (l[i] - '0');
		if (i == j || (i < n && l[i] != ' '))
			code = -1;
	}
	if (code != 0) {
		for (j = 0; j < sizeof(why) - 1 && j < n; j++)
			why[j] = l[j] >= 0x20 && l[j] < 0x7f ? l[j] : '?';
		why[j] = '\0';
		spam_fail(res, "spamd: %s", why);
		return;
	}
	if ((b = header_end(s, len)) == NULL) {
		spam_fail(res, "spamd: answer cut in its header");
		return;
	}
	while (next_line(&p, b, &l, &n) == 0 && n > 0) {
		if ((v = field_is(l, n, "Spam", &vn)) == NULL)
			continue;
		if (have || spamd_score(v, vn, &score) == -1) {
			clean_word(l, n, word, sizeof(word));
			spam_fail(res, "spamd: bad Spam header \"%s\"", word);
			return;
		}
		have = 1;
	}
	if (!have) {
		spam_fail(res, "spamd: answer without a Spam header");
		return;
	}
	if (answer_body(s, len, b, &body, &blen, why, sizeof(why)) == -1) {
		spam_fail(res, "spamd: %s", why);
		return;
	}
	detail_init(&d, res->detail, sizeof(res->detail));
	/* SYMBOLS: the rule names, separated by commas. */
	for (i = 0; i < blen; i = j + 1) {
		for (j = i; j < blen && body[j] != ','; j++)
			;
		for (n = i; n < j && (body[n] == ' ' || body[n] == '\r' ||
		                         body[n] == '\n' || body[n] == '\t');)
			n++;
		for (vn = j; vn > n &&
		             (body[vn - 1] == ' ' || body[vn - 1] == '\r' ||
		                 body[vn - 1] == '\n' || body[vn - 1] == '\t');)
			vn--;
		clean_word(body + n, vn - n, word, sizeof(word));
		detail_word(&d, word);
	}
	res->status = SPAM_OK;
	res->score = score;
}

/*
 * rspamd: HTTP and a strict, bounded JSON reader for its answer.
 */

struct json {
	const char *p, *end;
	const char *err;
};

struct rsym {
	char name[72];
	double score;
};

struct rspamd_ans {
	int have_score;
	double score;
	char action[48];
	struct rsym *sym; /* SPAM_MAX_SYMBOLS */
	size_t nsym, more;
};

static void
json_ws(struct json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
	                            *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int
json_fail(struct json *j, const char *why)
{
	if (j->err == NULL)
		j->err = why;
	return -1;
}

static int
json_lit(struct json *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return json_fail(j, "bad literal");
	j->p += n;
	return 0;
}

/* A string, decoded into out (cut to outlen - 1 bytes; out may be NULL
 * to skip it). */
static int
json_string(struct json *j, char *out, size_t outlen)
{
	size_t o = 0, un;
	uint32_t c, lo;
	uint8_t u[4];
	int i, d, esc_u;

	if (j->p >= j->end || *j->p != '"')
		return json_fail(j, "string expected");
	for (j->p++;;) {
		if (j->p >= j->end)
			return json_fail(j, "unterminated string");
		c = (uint8_t)*j->p++;
		esc_u = 0;
		if (c == '"')
			break;
		if (c < 0x20)
			return json_fail(j, "control character in a string");
		if (c == '\\') {
			if (j->p >= j->end)
				return json_fail(j, "unterminated string");
			c = (uint8_t)*j->p++;
			switch (c) {
			case '"':
			case '\\':
			case '/':
				break;
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case 'n':
				c = '\n';
				break;
			case 'r':
				c = '\r';
				break;
			case 't':
				c = '\t';
				break;
			case 'u':
				esc_u = 1;
				for (c = 0, i = 0; i < 4; i++) {
					if (j->p >= j->end ||
					    (d = hex_value((uint8_t)*j->p)) ==
					        -1)
						return json_fail(
						    j, "bad \\u escape");
					c = c << 4 | (uint32_t)d;
					j->p++;
				}
				/* A surrogate pair is one character. */
				if (c >= 0xd800 && c <= 0xdbff &&
				    j->end - j->p >= 6 && j->p[0] == '\\' &&
				    j->p[1] == 'u') {
					for (lo = 0, i = 2; i < 6; i++) {
						if ((d = hex_value(
						         (uint8_t)j->p[i])) ==
						    -1)
							break;
						lo = lo << 4 | (uint32_t)d;
					}
					if (i == 6 && lo >= 0xdc00 &&
					    lo <= 0xdfff) {
						c = 0x10000 +
						    ((c - 0xd800) << 10) +
						    (lo - 0xdc00);
						j->p += 6;
					}
				}
				break;
			default:
				return json_fail(j, "bad escape in a string");
			}
		}
		if (out == NULL)
			continue;
		/* A \u escape as UTF-8; other bytes as they are. */
		if (esc_u)
			un = utf8_encode(c, u);
		else {
			u[0] = (uint8_t)c;
			un = 1;
		}
		if (o + un < outlen) {
			memcpy(out + o, u, un);
			o += un;
		}
	}
	if (out != NULL && outlen > 0)
		out[o] = '\0';
	return 0;
}

static int
json_number(struct json *j, double *v)
{
	const char *s = j->p;
	double x;

	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (j->p < j->end && *j->p >= '1' && *j->p <= '9')
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	else
		return json_fail(j, "bad number");
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return json_fail(j, "bad number");
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return json_fail(j, "bad number");
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	if (number(s, (size_t)(j->p - s), &x) == -1)
		return json_fail(j, "number out of range");
	if (v != NULL)
		*v = x;
	return 0;
}

static int json_value(struct json *, int depth, double *num);

/* An object; each member's key goes to cb, which reads the value. */
static int
json_object(struct json *j, int depth,
    int (*cb)(struct json *, int, const char *, void *), void *arg)
{
	char key[72];

	if (depth > SPAM_JSON_DEPTH)
		return json_fail(j, "nested too deep");
	j->p++; /* '{' */
	json_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		json_ws(j);
		if (json_string(j, key, sizeof(key)) == -1)
			return -1;
		json_ws(j);
		if (j->p >= j->end || *j->p != ':')
			return json_fail(j, "':' expected");
		j->p++;
		json_ws(j);
		if (cb != NULL ? cb(j, depth, key, arg) == -1
		               : json_value(j, depth + 1, NULL) == -1)
			return -1;
		json_ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == '}') {
			j->p++;
			return 0;
		}
		return json_fail(j, "',' or '}' expected");
	}
}

static int
json_array(struct json *j, int depth)
{
	if (depth > SPAM_JSON_DEPTH)
		return json_fail(j, "nested too deep");
	j->p++; /* '[' */
	json_ws(j);
	if (j->p < j->end && *j->p == ']') {
		j->p++;
		return 0;
	}
	for (;;) {
		json_ws(j);
		if (json_value(j, depth + 1, NULL) == -1)
			return -1;
		json_ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == ']') {
			j->p++;
			return 0;
		}
		return json_fail(j, "',' or ']' expected");
	}
}

/* Any value, checked and skipped; a number's value into *num if not
 * NULL (*num untouched for other types). */
static int
json_value(struct json *j, int depth, double *num)
{
	if (j->p >= j->end)
		return json_fail(j, "value expected");
	switch (*j->p) {
	case '{':
		return json_object(j, depth, NULL, NULL);
	case '[':
		return json_array(j, depth);
	case '"':
		return json_string(j, NULL, 0);
	case 't':
		return json_lit(j, "true");
	case 'f':
		return json_lit(j, "false");
	case 'n':
		return json_lit(j, "null");
	default:
		return json_number(j, num);
	}
}

/* A member of a symbol: its "score". */
static int
rspamd_symbol_member(struct json *j, int depth, const char *key, void *arg)
{
	struct rsym *s = arg;

	if (strcmp(key, "score") == 0 && j->p < j->end &&
	    (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')))
		return json_number(j, s != NULL ? &s->score : NULL);
	return json_value(j, depth + 1, NULL);
}

/* A member of "symbols": a symbol by name. */
static int
rspamd_symbol(struct json *j, int depth, const char *key, void *arg)
{
	struct rspamd_ans *a = arg;
	struct rsym *s = NULL;

	if (a->nsym < SPAM_MAX_SYMBOLS) {
		s = &a->sym[a->nsym++];
		clean_word(key, strlen(key), s->name, sizeof(s->name));
		s->score = 0;
	} else
		a->more++;
	if (j->p < j->end && *j->p == '{')
		return json_object(j, depth + 1, rspamd_symbol_member, s);
	return json_value(j, depth + 1, NULL);
}

/* A member of the answer. */
static int
rspamd_member(struct json *j, int depth, const char *key, void *arg)
{
	struct rspamd_ans *a = arg;
	char action[48];

	if (strcmp(key, "score") == 0) {
		if (j->p >= j->end ||
		    !(*j->p == '-' || (*j->p >= '0' && *j->p <= '9')))
			return json_fail(j, "\"score\" is not a number");
		a->have_score = 1;
		return json_number(j, &a->score);
	}
	if (strcmp(key, "action") == 0 && j->p < j->end && *j->p == '"') {
		if (json_string(j, action, sizeof(action)) == -1)
			return -1;
		clean_text(
		    action, strlen(action), 1, a->action, sizeof(a->action));
		return 0;
	}
	if (strcmp(key, "symbols") == 0) {
		if (j->p >= j->end || *j->p != '{')
			return json_fail(j, "\"symbols\" is not an object");
		return json_object(j, depth + 1, rspamd_symbol, a);
	}
	return json_value(j, depth + 1, NULL);
}

static int
rsym_cmp(const void *x, const void *y)
{
	const struct rsym *a = x, *b = y;

	/* Strongest signs first, positive before negative, then by name. */
	if (fabs(a->score) != fabs(b->score))
		return fabs(a->score) > fabs(b->score) ? -1 : 1;
	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	return strcmp(a->name, b->name);
}

static void
rspamd_json(const char *s, size_t n, struct spam_result *res)
{
	struct json j = {s, s + n, NULL};
	struct rspamd_ans a;
	struct detail d;
	char w[128];
	size_t i;

	memset(&a, 0, sizeof(a));
	if ((a.sym = calloc(SPAM_MAX_SYMBOLS, sizeof(*a.sym))) == NULL) {
		spam_fail(res, "rspamd: out of memory");
		return;
	}
	json_ws(&j);
	if (j.p >= j.end || *j.p != '{')
		json_fail(&j, "not a JSON object");
	else if (json_object(&j, 1, rspamd_member, &a) == 0) {
		json_ws(&j);
		if (j.p != j.end)
			json_fail(&j, "data after the JSON object");
	}
	if (j.err != NULL) {
		spam_fail(res, "rspamd: bad JSON answer: %s at byte %zu", j.err,
		    (size_t)(j.p - s));
		goto done;
	}
	if (!a.have_score) {
		spam_fail(res, "rspamd: answer without a score");
		goto done;
	}
	detail_init(&d, res->detail, sizeof(res->detail));
	if (a.action[0] != '\0') {
		snprintf(w, sizeof(w), "[%s]", a.action);
		detail_word(&d, w);
	}
	qsort(a.sym, a.nsym, sizeof(*a.sym), rsym_cmp);
	for (i = 0; i < a.nsym; i++) {
		if (a.sym[i].score != 0)
			snprintf(w, sizeof(w), "%s(%g)", a.sym[i].name,
			    a.sym[i].score);
		else
			snprintf(w, sizeof(w), "%s", a.sym[i].name);
		detail_word(&d, w);
	}
	if (a.more > 0) {
		snprintf(w, sizeof(w), "+%zu", a.more);
		detail_word(&d, w);
	}
	res->status = SPAM_OK;
	res->score = a.score;
done:
	free(a.sym);
}

static void
rspamd_parse(const char *s, size_t len, struct spam_result *res)
{
	const char *end = s + len, *b, *l, *v, *p = s, *body;
	char why[160];
	size_t n, vn, blen, i;
	int code = 0;

	if (next_line(&p, end, &l, &n) == -1 || n < 12 ||
	    (strncmp(l, "HTTP/1.0 ", 9) != 0 &&
	        strncmp(l, "HTTP/1.1 ", 9) != 0)) {
		clean_word(s, len < 40 ? len : 40, why, sizeof(why));
		spam_fail(res, "rspamd: not an HTTP answer: \"%s\"", why);
		return;
	}
	for (i = 9; i < 12; i++) {
		if (l[i] < '0' || l[i] > '9') {
			code = -1;
			break;
		}
		code = code * 10 + (l[i] - '0');
	}
	if (code != 200 || (n > 12 && l[12] != ' ')) {
		for (i = 0; i < sizeof(why) - 1 && i < n; i++)
			why[i] = l[i] >= 0x20 && l[i] < 0x7f ? l[i] : '?';
		why[i] = '\0';
		spam_fail(res, "rspamd: %s", why);
		return;
	}
	if ((b = header_end(s, len)) == NULL) {
		spam_fail(res, "rspamd: answer cut in its header");
		return;
	}
	while (next_line(&p, b, &l, &n) == 0 && n > 0) {
		if ((v = field_is(l, n, "Transfer-Encoding", &vn)) != NULL &&
		    !(vn == 8 && strncasecmp(v, "identity", 8) == 0)) {
			spam_fail(res, "rspamd: unexpected Transfer-Encoding");
			return;
		}
		if ((v = field_is(l, n, "Content-Encoding", &vn)) != NULL &&
		    !(vn == 8 && strncasecmp(v, "identity", 8) == 0)) {
			spam_fail(res, "rspamd: unexpected Content-Encoding");
			return;
		}
	}
	if (answer_body(s, len, b, &body, &blen, why, sizeof(why)) == -1) {
		spam_fail(res, "rspamd: %s", why);
		return;
	}
	rspamd_json(body, blen, res);
}

/*
 * One request to spamd or rspamd: the protocol's header, the message, the
 * answer read within the deadline and handed to the engine's parser.
 */
static void
spam_remote(const struct spam_engine *e, const void *msg, size_t len,
    struct spam_result *res)
{
	const int spamd = e->engine == SPAM_ENGINE_SPAMD;
	const char *name = spamd ? "spamd" : "rspamd";
	struct exchange x;
	char hdr[96];

	memset(&x, 0, sizeof(x));
	x.e = e;
	x.complete = answer_complete;
	if ((x.ans = malloc(SPAM_ANSWER_MAX + 1)) == NULL) {
		spam_fail(res, "%s: out of memory", name);
		return;
	}
	if (spamd)
		snprintf(hdr, sizeof(hdr),
		    "SYMBOLS SPAMC/1.5\r\nContent-length: %zu\r\n\r\n", len);
	else
		snprintf(hdr, sizeof(hdr),
		    "POST /checkv2 HTTP/1.0\r\nContent-Length: %zu\r\n\r\n",
		    len);
	if (exchange(&x, hdr, msg, len) == -1)
		spam_fail(res, "%s %s: %s", name, e->addr.text, x.err);
	else if (spamd)
		spamd_parse(x.ans, x.len, res);
	else
		rspamd_parse(x.ans, x.len, res);
	free(x.ans);
}

/*
 * Exceptions.
 */

struct addrs {
	char **a;
	size_t n;
	int oom;
};

static void
addrs_add_list(struct addrs *as, InternetAddressList *list, int depth)
{
	InternetAddress *ia;
	const char *addr;
	int i, n;

	n = internet_address_list_length(list);
	for (i = 0; i < n && as->n < SPAM_MAX_ADDRS; i++) {
		ia = internet_address_list_get_address(list, i);
		if (INTERNET_ADDRESS_IS_GROUP(ia) && depth < 4) {
			addrs_add_list(as,
			    internet_address_group_get_members(
			        INTERNET_ADDRESS_GROUP(ia)),
			    depth + 1);
			continue;
		}
		if (!INTERNET_ADDRESS_IS_MAILBOX(ia))
			continue;
		addr = internet_address_mailbox_get_addr(
		    INTERNET_ADDRESS_MAILBOX(ia));
		if (addr == NULL || *addr == '\0')
			continue;
		if ((as->a[as->n] = strdup(addr)) == NULL) {
			as->oom = 1;
			return;
		}
		as->n++;
	}
}

/* The addresses of the message header's fields of these names. */
static void
addrs_get(const struct mime_msg *m, const char *const *names, struct addrs *as)
{
	const struct mime_part *root = m->root;
	const struct mime_field *f;
	InternetAddressList *list;
	const char *const *nm;
	size_t i;
	char *v;

	memset(as, 0, sizeof(*as));
	if ((as->a = calloc(SPAM_MAX_ADDRS, sizeof(*as->a))) == NULL) {
		as->oom = 1;
		return;
	}
	for (i = 0; i < root->nfields; i++) {
		f = &root->fields[i];
		for (nm = names; *nm != NULL; nm++)
			if (f->name_len == strlen(*nm) &&
			    strncasecmp((const char *)m->data + f->off, *nm,
			        f->name_len) == 0)
				break;
		if (*nm == NULL)
			continue;
		if ((v = mime_field_value(m, f)) == NULL) {
			as->oom = 1;
			return;
		}
		if ((list = internet_address_list_parse(NULL, v)) != NULL) {
			addrs_add_list(as, list, 0);
			g_object_unref(list);
		}
		free(v);
	}
}

static void
addrs_free(struct addrs *as)
{
	size_t i;

	for (i = 0; i < as->n; i++)
		free(as->a[i]);
	free(as->a);
}

static const char *
addrs_match(const struct addrs *as, const char *pattern)
{
	size_t i;

	for (i = 0; i < as->n; i++)
		if (rules_wildcard(pattern, as->a[i]))
			return as->a[i];
	return NULL;
}

/* 1 if an exception matches (detail says which), 0 if none, -1 no
 * memory. */
static int
spam_excepted(const struct spam_engine *e, const struct mime_msg *m,
    struct spam_result *res)
{
	static const char *const from[] = {"From", NULL};
	static const char *const rcpt[] = {"To", "Cc", NULL};
	struct addrs fa, ra;
	const struct spam_exc *x;
	const char *s, *r;
	size_t i;
	int rc = 0;

	if (e->nexc == 0)
		return 0;
	addrs_get(m, from, &fa);
	addrs_get(m, rcpt, &ra);
	if (fa.oom || ra.oom) {
		rc = -1;
		goto done;
	}
	for (i = 0; i < e->nexc && rc == 0; i++) {
		x = &e->exc[i];
		s = r = NULL;
		if (x->sender != NULL &&
		    (s = addrs_match(&fa, x->sender)) == NULL)
			continue;
		if (x->recipient != NULL &&
		    (r = addrs_match(&ra, x->recipient)) == NULL)
			continue;
		if (s != NULL && r != NULL)
			snprintf(res->detail, sizeof(res->detail),
			    "exception %zu: sender %.100s, recipient %.100s",
			    i + 1, s, r);
		else
			snprintf(res->detail, sizeof(res->detail),
			    "exception %zu: %s %.200s", i + 1,
			    s != NULL ? "sender" : "recipient",
			    s != NULL ? s : r);
		rc = 1;
	}
done:
	addrs_free(&fa);
	addrs_free(&ra);
	return rc;
}

/*
 * The engine.
 */

void
spam_engine_free(struct spam_engine *e)
{
	size_t i;

	if (e == NULL)
		return;
	for (i = 0; i < e->nexc; i++) {
		free(e->exc[i].sender);
		free(e->exc[i].recipient);
	}
	free(e->exc);
	for (i = 0; i < e->nrules; i++)
		rule_clear(&e->rules[i]);
	free(e->rules);
	pcre2_match_data_free(e->md);
	pcre2_match_context_free(e->mctx);
	EVP_MD_free(e->sha256);
	free(e);
}

static int
copy_exceptions(struct spam_engine *e, const struct cfg_spam *cfg)
{
	const struct cfg_spam_exception *c;
	struct spam_exc *x;
	size_t i;

	if (cfg->nexceptions == 0)
		return 0;
	if ((e->exc = calloc(cfg->nexceptions, sizeof(*e->exc))) == NULL)
		return -1;
	for (i = 0; i < cfg->nexceptions; i++, e->nexc++) {
		c = &cfg->exceptions[i];
		x = &e->exc[i];
		if ((c->sender != NULL &&
		        (x->sender = strdup(c->sender)) == NULL) ||
		    (c->recipient != NULL &&
		        (x->recipient = strdup(c->recipient)) == NULL)) {
			e->nexc++;
			return -1;
		}
	}
	return 0;
}

static int
builtin_new(
    struct spam_engine *e, const struct cfg_spam *cfg, char *err, size_t errlen)
{
	const char *data = spam_rules_default, *file = "compiled-in rules";
	size_t len = sizeof(spam_rules_default) - 1;

	if (cfg->rules != NULL) {
		/* The parent read the file; no bytes: an empty file. */
		file = cfg->rules;
		data = cfg->rules_data != NULL ? (const char *)cfg->rules_data
		                               : "";
		len = cfg->rules_data != NULL ? cfg->rules_len : 0;
	}
	if ((e->mctx = pcre2_match_context_create(NULL)) == NULL ||
	    pcre2_set_match_limit(e->mctx, SPAM_MATCH_LIMIT) != 0 ||
	    pcre2_set_depth_limit(e->mctx, SPAM_DEPTH_LIMIT) != 0 ||
	    pcre2_set_heap_limit(e->mctx, SPAM_HEAP_LIMIT) != 0 ||
	    (e->md = pcre2_match_data_create(1, NULL)) == NULL) {
		snprintf(err, errlen, "spam rules: out of memory");
		return -1;
	}
	/* Fetched now: the sandbox cannot load a provider later. */
	if ((e->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL) {
		snprintf(err, errlen, "spam rules: OpenSSL has no SHA-256");
		return -1;
	}
	if (parse_rules(e, file, data, len, err, errlen) == -1)
		return -1;
	log_debug("spam: %zu rules from %s", e->nrules, file);
	return 0;
}

struct spam_engine *
spam_engine_new(const struct cfg_spam *cfg, char *err, size_t errlen)
{
	struct spam_engine *e;
	const char *dflt;
	int c;

	mime_init();
	if ((e = calloc(1, sizeof(*e))) == NULL) {
		snprintf(err, errlen, "spam engine: out of memory");
		return NULL;
	}
	e->engine = cfg->engine;
	e->addr = cfg->address;
	e->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : SPAM_TIMEOUT_MS;
	e->max_size = cfg->max_size;
	for (c = 0; c < SPAM_NCAT; c++) {
		e->cat[c] = cfg->cat[c].score;
		if (!isfinite(e->cat[c])) {
			snprintf(err, errlen, "spam engine: bad threshold");
			goto fail;
		}
	}
	if (copy_exceptions(e, cfg) == -1) {
		snprintf(err, errlen, "spam engine: out of memory");
		goto fail;
	}
	switch (cfg->engine) {
	case SPAM_ENGINE_BUILTIN:
		if (builtin_new(e, cfg, err, errlen) == -1)
			goto fail;
		return e;
	case SPAM_ENGINE_SPAMD:
	case SPAM_ENGINE_RSPAMD:
		dflt = cfg->engine == SPAM_ENGINE_SPAMD ? "127.0.0.1:783"
		                                        : "127.0.0.1:11333";
		if (e->addr.len == 0 && parse_addr(dflt, &e->addr) == -1) {
			snprintf(err, errlen, "spam engine: bad address");
			goto fail;
		}
		if (e->addr.ss.ss_family != AF_INET &&
		    e->addr.ss.ss_family != AF_INET6) {
			snprintf(err, errlen,
			    "spam engine: address %s is not IPv4 or IPv6",
			    e->addr.text);
			goto fail;
		}
		return e;
	default:
		snprintf(
		    err, errlen, "spam engine: unknown engine %d", cfg->engine);
		goto fail;
	}
fail:
	spam_engine_free(e);
	return NULL;
}

static int
spam_category(const struct spam_engine *e, double score)
{
	int c;

	/* confirmed, bulk, suspect: the first threshold reached. */
	for (c = SPAM_CONFIRMED; c < SPAM_NCAT; c++)
		if (score >= e->cat[c])
			return c;
	return -1;
}

void
spam_check(struct spam_engine *e, const void *data, size_t len,
    struct spam_result *res)
{
	struct mime_msg m;
	int r, parsed = 0;

	memset(res, 0, sizeof(*res));
	res->status = SPAM_OK;
	res->category = -1;
	if (e == NULL) {
		spam_fail(res, "no spam engine");
		return;
	}
	if (data == NULL)
		data = "";
	/* The structure only for exceptions and the builtin rules. */
	if (e->nexc > 0 || (e->engine == SPAM_ENGINE_BUILTIN &&
	                       (e->max_size == 0 || len <= e->max_size))) {
		if (mime_parse(&m, data, len) == -1) {
			spam_fail(res, "out of memory");
			return;
		}
		parsed = 1;
	}
	if (parsed && (r = spam_excepted(e, &m, res)) != 0) {
		if (r == 1)
			res->status = SPAM_EXCEPTED;
		else
			spam_fail(res, "exceptions: out of memory");
		goto done;
	}
	if (e->max_size > 0 && len > e->max_size) {
		res->status = SPAM_SKIPPED;
		snprintf(res->detail, sizeof(res->detail),
		    "%zu bytes, larger than max_size %llu", len,
		    (unsigned long long)e->max_size);
		goto done;
	}
	switch (e->engine) {
	case SPAM_ENGINE_BUILTIN:
		spam_builtin(e, &m, res);
		break;
	default:
		spam_remote(e, data, len, res);
		break;
	}
	if (res->status == SPAM_OK) {
		if (!isfinite(res->score))
			spam_fail(res, "the score is not a number");
		else
			res->category = spam_category(e, res->score);
	}
done:
	if (parsed)
		mime_free(&m);
}
