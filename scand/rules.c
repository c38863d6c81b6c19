/*
 * Content type, file name and header rules: a cfg_rules compiled once.
 *
 * pattern  '*' matches any run of characters (also none), '?' exactly one
 *          character (one UTF-8 sequence), everything else itself, ASCII
 *          letters without regard to case.  Matched iteratively with one
 *          backtrack point (the last star): O(pattern * subject) at worst,
 *          never exponential.
 * exact    equality, ASCII letters without regard to case.
 * regex    PCRE2, 8-bit, UTF with invalid UTF-8 subjects allowed (an
 *          invalid sequence never matches), searched anywhere in the
 *          subject unless anchored.  Interpreted only (the sandbox forbids
 *          executable memory, so no JIT), under a match limit, a depth
 *          limit and a heap limit: a regex that hits one is an error,
 *          never "no match".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "scand.h"

#define RULES_MATCH_LIMIT 100000
#define RULES_DEPTH_LIMIT 10000
#define RULES_HEAP_LIMIT 65536 /* KiB */

struct rule_c {
	int type; /* MATCH_* */
	char *text; /* pattern and exact */
	pcre2_code *re; /* regex */
};

struct rule_set {
	struct rule_c *r;
	size_t n;
	pcre2_match_context *mctx;
	pcre2_match_data *md; /* shared: scand is single-threaded */
};

static int
lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Bytes of the character at s: a UTF-8 lead byte and its continuation
 * bytes (at most 4 in all), or a single byte. */
static size_t
char_len(const unsigned char *s)
{
	size_t n = 1;

	if (s[0] >= 0xc0)
		while (n < 4 && (s[n] & 0xc0) == 0x80)
			n++;
	return n;
}

int
rules_wildcard(const char *pattern, const char *s)
{
	const unsigned char *p = (const unsigned char *)pattern;
	const unsigned char *t = (const unsigned char *)s;
	const unsigned char *star = NULL, *mark = NULL;

	if (p == NULL || t == NULL)
		return 0;
	while (*t != '\0') {
		if (*p == '*') {
			/* Collapse a run of stars; remember where to resume. */
			while (*p == '*')
				p++;
			if (*p == '\0')
				return 1;
			star = p;
			mark = t;
		} else if (*p == '?') {
			p++;
			t += char_len(t);
		} else if (*p != '\0' && lower(*p) == lower(*t)) {
			p++;
			t++;
		} else if (star != NULL) {
			/* Let the last star take one more character. */
			mark += char_len(mark);
			p = star;
			t = mark;
		} else
			return 0;
	}
	while (*p == '*')
		p++;
	return *p == '\0';
}

static int
exact_match(const char *a, const char *b)
{
	for (; *a != '\0' && *b != '\0'; a++, b++)
		if (lower((unsigned char)*a) != lower((unsigned char)*b))
			return 0;
	return *a == *b;
}

void
rules_free(struct rule_set *rs)
{
	size_t i;

	if (rs == NULL)
		return;
	for (i = 0; i < rs->n; i++) {
		free(rs->r[i].text);
		pcre2_code_free(rs->r[i].re);
	}
	free(rs->r);
	pcre2_match_data_free(rs->md);
	pcre2_match_context_free(rs->mctx);
	free(rs);
}

static int
compile_regex(
    struct rule_c *rc, const char *pat, size_t idx, char *err, size_t errlen)
{
	PCRE2_UCHAR msg[256];
	PCRE2_SIZE off;
	int code;

	rc->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
	    PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C,
	    &code, &off, NULL);
	if (rc->re == NULL) {
		if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
			snprintf((char *)msg, sizeof(msg), "error %d", code);
		snprintf(err, errlen,
		    "rule %zu: regex \"%s\": %s at offset %zu", idx + 1, pat,
		    (char *)msg, (size_t)off);
		return -1;
	}
	return 0;
}

struct rule_set *
rules_compile(const struct cfg_rules *cr, char *err, size_t errlen)
{
	struct rule_set *rs;
	const struct cfg_rule *cf;
	struct rule_c *rc;
	size_t i;

	if ((rs = calloc(1, sizeof(*rs))) == NULL)
		goto nomem;
	if (cr == NULL || cr->nrules == 0)
		return rs;
	if ((rs->r = calloc(cr->nrules, sizeof(*rs->r))) == NULL)
		goto nomem;
	for (i = 0; i < cr->nrules; i++, rs->n++) {
		cf = &cr->rules[i];
		rc = &rs->r[i];
		rc->type = cf->type;
		if (cf->match == NULL) {
			snprintf(err, errlen, "rule %zu: no match text", i + 1);
			goto fail;
		}
		switch (cf->type) {
		case MATCH_PATTERN:
		case MATCH_EXACT:
			if ((rc->text = strdup(cf->match)) == NULL)
				goto nomem;
			break;
		case MATCH_REGEX:
			if (compile_regex(rc, cf->match, i, err, errlen) == -1)
				goto fail;
			break;
		default:
			snprintf(err, errlen, "rule %zu: unknown match type %d",
			    i + 1, cf->type);
			goto fail;
		}
	}
	if ((rs->mctx = pcre2_match_context_create(NULL)) == NULL ||
	    pcre2_set_match_limit(rs->mctx, RULES_MATCH_LIMIT) != 0 ||
	    pcre2_set_depth_limit(rs->mctx, RULES_DEPTH_LIMIT) != 0 ||
	    pcre2_set_heap_limit(rs->mctx, RULES_HEAP_LIMIT) != 0)
		goto nomem;
	/* Whether a regex matches, not where: one pair is enough. */
	if ((rs->md = pcre2_match_data_create(1, NULL)) == NULL)
		goto nomem;
	return rs;
nomem:
	snprintf(err, errlen, "rules: out of memory");
fail:
	rules_free(rs);
	return NULL;
}

/* 1 match, 0 none, -1 a regex error (match limit and the like). */
static int
rule_try(const struct rule_set *rs, const struct rule_c *rc, const char *s)
{
	int r;

	switch (rc->type) {
	case MATCH_PATTERN:
		return rules_wildcard(rc->text, s);
	case MATCH_EXACT:
		return exact_match(rc->text, s);
	case MATCH_REGEX:
		r = pcre2_match(
		    rc->re, (PCRE2_SPTR)s, strlen(s), 0, 0, rs->md, rs->mctx);
		if (r >= 0)
			return 1;
		return r == PCRE2_ERROR_NOMATCH ? 0 : -1;
	}
	return 0;
}

int
rules_match(const struct rule_set *rs, const char *const *subj, size_t n)
{
	size_t i, j;
	int r;

	if (rs == NULL)
		return -1;
	for (i = 0; i < rs->n; i++)
		for (j = 0; j < n; j++) {
			if (subj[j] == NULL)
				continue;
			if ((r = rule_try(rs, &rs->r[i], subj[j])) == -1)
				return -2;
			if (r == 1)
				return (int)i;
		}
	return -1;
}
