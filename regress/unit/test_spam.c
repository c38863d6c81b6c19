/*
 * spamBlocker (scand/spam.c): the builtin rules file (syntax and its
 * errors, GTUBE, header, body and fingerprint rules, negative scores),
 * exceptions, max_size and the category thresholds; the spamd and
 * rspamd clients against fake servers this test runs on 127.0.0.1
 * (good answers, garbage, a server too slow, one that closes early,
 * one that answers too much); and both inside scand's real sandbox.
 *
 * With IMAPGW_SPAMD=127.0.0.1:PORT and IMAPGW_RSPAMD=127.0.0.1:PORT it
 * also checks GTUBE and a plain message against those real servers
 * (regress/integration/test_spamd.py starts them).  Needs root.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "../../scand/scand.h"
#include "config.h"
#include "imapgw.h"
#include "log.h"
#include "sandbox.h"
#include "test.h"
#include "util.h"

#define NOBODY 65534
#define GTUBE \
	"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
#define TIMEOUT_MS 700 /* of the engines talking to fake servers */

static char top[64];

static const char ham[] = "From: Alice <alice@example.org>\r\n"
                          "To: Bob <bob@example.org>\r\n"
                          "Subject: lunch tomorrow\r\n"
                          "Date: Thu, 27 Nov 2025 10:00:00 +0000\r\n"
                          "Message-ID: <ham.1@example.org>\r\n"
                          "\r\n"
                          "Hi Bob,\r\n\r\nshall we have lunch tomorrow "
                          "at noon?\r\n\r\nAlice\r\n";

static const char gtube[] = "From: Spammer <spam@example.net>\r\n"
                            "To: Bob <bob@example.org>\r\n"
                            "Subject: test\r\n"
                            "Date: Thu, 27 Nov 2025 10:00:00 +0000\r\n"
                            "Message-ID: <gtube.1@example.net>\r\n"
                            "\r\n" GTUBE "\r\n";

/* GTUBE inside a base64 text/plain part of a multipart/alternative. */
static char gtube64[2048];

static void
die(const char *what)
{
	perror(what);
	exit(1);
}

static uint64_t
ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
base64(const char *in, char *out, size_t outlen)
{
	EVP_EncodeBlock(
	    (unsigned char *)out, (const unsigned char *)in, (int)strlen(in));
	(void)outlen;
}

static void
make_messages(void)
{
	char b64[256];

	base64(GTUBE "\r\n", b64, sizeof(b64));
	snprintf(gtube64, sizeof(gtube64),
	    "From: a@example.net\r\n"
	    "To: b@example.org\r\n"
	    "Subject: hidden\r\n"
	    "Date: Thu, 27 Nov 2025 10:00:00 +0000\r\n"
	    "Message-ID: <b64@example.net>\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/alternative; boundary=\"xx\"\r\n"
	    "\r\n"
	    "--xx\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "\r\n"
	    "%s\r\n"
	    "--xx\r\n"
	    "Content-Type: image/png\r\n"
	    "\r\n"
	    "PNG\r\n"
	    "--xx--\r\n",
	    b64);
}

static void
cfg_init(struct cfg_spam *c, int engine)
{
	memset(c, 0, sizeof(*c));
	c->enabled = 1;
	c->engine = engine;
	c->timeout_ms = TIMEOUT_MS;
	c->max_size = 1024 * 1024;
	c->cat[SPAM_CONFIRMED].score = 15;
	c->cat[SPAM_BULK].score = 10;
	c->cat[SPAM_SUSPECT].score = 5;
}

/* A builtin engine on these rules; NULL (err set) if refused. */
static struct spam_engine *
rules_engine(const char *rules, char *err, size_t errlen)
{
	struct cfg_spam c;

	cfg_init(&c, SPAM_ENGINE_BUILTIN);
	c.rules = "test.rules";
	c.rules_data = (uint8_t *)rules;
	c.rules_len = strlen(rules);
	err[0] = '\0';
	return spam_engine_new(&c, err, errlen);
}

static void
check(struct spam_engine *e, const char *msg, struct spam_result *r)
{
	spam_check(e, msg, strlen(msg), r);
}

static int
has(const char *s, const char *part)
{
	if (strstr(s, part) != NULL)
		return 1;
	fprintf(stderr, "  \"%s\" lacks \"%s\"\n", s, part);
	return 0;
}

/* ---- the rules file ---- */

static void
rule_error(const char *rules, const char *want)
{
	struct spam_engine *e;
	char err[512];

	e = rules_engine(rules, err, sizeof(err));
	CHECK(e == NULL);
	CHECK(has(err, want));
	spam_engine_free(e);
}

static void
test_rules_errors(void)
{
	char big[9000 + 32], name[80];

	rule_error("bogus X 1 foo\n", "test.rules: line 1: unknown rule type");
	rule_error("\n\nbody\n", "line 3: a rule name is missing");
	rule_error("body A\n", "line 1: a score is missing");
	rule_error("body A 1\n", "line 1: a pattern is missing");
	rule_error("body A 1   \t\n", "line 1: a pattern is missing");
	rule_error("body A x1 foo\n", "line 1: score \"x1\" is not");
	rule_error("body A 1e3 foo\n", "is not a decimal number");
	rule_error("body A inf foo\n", "is not a decimal number");
	rule_error("body A 0x10 foo\n", "is not a decimal number");
	rule_error("body A . foo\n", "is not a decimal number");
	rule_error("body A 2000000 foo\n", "out of range");
	rule_error("body A 1 (foo\n", "line 1: pattern: missing closing");
	rule_error("# c\r\n  # indented\r\nbody A 1 a\r\nbody A 2 b\r\n",
	    "line 4: rule name \"A\" is used twice");
	rule_error("header A Sub:ject 1 x\n", "is not a header field name");
	rule_error("header A\n", "a header field name is missing");
	rule_error("absent A Date 1 extra\n", "unexpected \"extra\"");
	rule_error("fingerprint A 1 abc\n", "64 hexadecimal digits, not 3");
	rule_error("fingerprint A 1 "
	           "zz00000000000000000000000000000000000000000000000000000000"
	           "000000\n",
	    "is not hexadecimal");
	rule_error("body A$ 1 x\n", "only letters, digits");
	memset(name, 'N', 64);
	name[64] = '\0';
	snprintf(big, sizeof(big), "body %s 1 x\n", name);
	rule_error(big, "longer than 63 characters");
	memcpy(big, "body L 1 ", 9);
	memset(big + 9, 'x', 9000);
	strcpy(big + 9009, "\n");
	rule_error(big, "line 1: longer than 8192 bytes");
	rule_error("body A 1 a\rb\n", "a NUL or CR byte");
}

static void
test_rules_ok(void)
{
	struct spam_engine *e;
	struct spam_result r;
	struct cfg_spam c;
	char err[512];

	/* Comments, blank lines, CRLF, tabs, no final line feed. */
	e = rules_engine("# spam rules\r\n"
	                 "\r\n"
	                 "   \t\r\n"
	                 "\t# indented comment\n"
	                 "header\tSUBJ_LUNCH  Subject\t1.5\t(?i)^LUNCH \n"
	                 "absent NO_LIST_ID List-Id -0.25\n"
	                 "body BOB 2 Hi Bob,\n"
	                 "body NOT_THERE 100 nothing like this",
	    err, sizeof(err));
	CHECK(e != NULL);
	if (e == NULL) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	check(e, ham, &r);
	CHECK(r.status == SPAM_OK);
	CHECK(r.score == 3.25);
	CHECK(r.category == -1);
	CHECK(
	    strcmp(r.detail, "SUBJ_LUNCH(1.5) NO_LIST_ID(-0.25) BOB(2)") == 0);
	spam_engine_free(e);

	/* An empty file (the parent read no bytes): no rules, score 0. */
	cfg_init(&c, SPAM_ENGINE_BUILTIN);
	c.rules = "/etc/imapgw/empty.rules";
	CHECK((e = spam_engine_new(&c, err, sizeof(err))) != NULL);
	check(e, gtube, &r);
	CHECK(r.status == SPAM_OK && r.score == 0 && r.category == -1);
	spam_engine_free(e);

	/* Unknown engines are refused. */
	c.engine = 7;
	CHECK(spam_engine_new(&c, err, sizeof(err)) == NULL);
	CHECK(has(err, "unknown engine 7"));
	spam_check(NULL, ham, strlen(ham), &r);
	CHECK(r.status == SPAM_UNAVAILABLE);
}

/* The example of imapgwd.yaml(5), SPAM RULES FILE. */
static void
test_rules_example(void)
{
	struct spam_engine *e;
	struct spam_result r;
	char err[512];

	e = rules_engine(
	    "# Our ticket system's mail is fine.\n"
	    "header      TICKETS   X-Ticket-System -5  ^helpdesk\\b\n"
	    "absent      NO_DATE   Date            1\n"
	    "header      SUBJ_WIN  Subject         3   "
	    "(?i)\\b(winner|you won)\\b\n"
	    "body        CRYPTO    4   (?i)\\bbitcoin (wallet|investment)\\b\n"
	    "body        UNSUB     0.5 (?im)^to unsubscribe\\b\n"
	    "fingerprint KNOWN_419 20  "
	    "696809269445dfb8a21aeda7ed442b252df00e043fd3b812a16ddf39faee6bec\n",
	    err, sizeof(err));
	CHECK(e != NULL);
	if (e == NULL) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	check(e,
	    "Subject: You WON!\r\n\r\nYour Bitcoin wallet awaits.\r\n"
	    "To unsubscribe, reply.\r\n",
	    &r);
	CHECK(r.status == SPAM_OK && r.score == 8.5);
	CHECK(r.category == SPAM_SUSPECT);
	CHECK(strcmp(r.detail, "NO_DATE(1) SUBJ_WIN(3) CRYPTO(4) UNSUB(0.5)") ==
	      0);
	/* The shell recipe's example: the same normalised text. */
	check(e,
	    "X-Ticket-System: helpdesk 4\r\nDate: x\r\n\r\n"
	    "  Dear   FRIEND,\r\n\twin 100 now!\r\nCall 5551\r\n\r\n",
	    &r);
	CHECK(r.status == SPAM_OK && r.score == 15);
	CHECK(strcmp(r.detail, "TICKETS(-5) KNOWN_419(20)") == 0);
	spam_engine_free(e);
}

/* The compiled-in rules: GTUBE, and nothing on a plain message. */
static void
test_gtube(void)
{
	struct spam_engine *e;
	struct spam_result r;
	struct cfg_spam c;
	char err[512];

	cfg_init(&c, SPAM_ENGINE_BUILTIN);
	CHECK((e = spam_engine_new(&c, err, sizeof(err))) != NULL);
	if (e == NULL) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	check(e, gtube, &r);
	CHECK(r.status == SPAM_OK);
	CHECK(r.score >= 1000);
	CHECK(r.category == SPAM_CONFIRMED);
	CHECK(has(r.detail, "GTUBE(1000)"));
	check(e, gtube64, &r);
	CHECK(r.status == SPAM_OK && r.score >= 1000);
	CHECK(r.category == SPAM_CONFIRMED);
	CHECK(has(r.detail, "GTUBE(1000)"));
	check(e, ham, &r);
	CHECK(r.status == SPAM_OK && r.score == 0 && r.category == -1);
	CHECK(strcmp(r.detail, "") == 0);
	/* No header at all: the classic signs, still below "suspect". */
	check(e, "\r\nhello\r\n", &r);
	CHECK(r.status == SPAM_OK && r.score > 0 && r.score < 5);
	CHECK(has(r.detail, "MISSING_FROM(1)"));
	CHECK(has(r.detail, "MISSING_DATE(0.5)"));
	check(e, "", &r);
	CHECK(r.status == SPAM_OK && r.category == -1);
	CHECK(strstr(r.detail, "(error)") == NULL);
	CHECK(strstr(r.detail, "(limit)") == NULL);
	check(e, "From: x@y\r\nSubject: FREE OFFER!!!\r\n\r\nviagra\r\n", &r);
	CHECK(has(r.detail, "SUBJ_ALL_CAPS(0.5) SUBJ_EXCLAIM(0.5)"));
	CHECK(has(r.detail, "PHARMA_NAMES(2)"));
	spam_engine_free(e);
}

/* The compiled-in rules on a large message and a long subject: quick,
 * and no rule runs into its limits. */
static void
test_builtin_big(void)
{
	struct spam_engine *e;
	struct spam_result r;
	struct cfg_spam c;
	char err[512], *msg, *p;
	uint64_t t0;
	size_t n = 1024 * 1024;
	int i;

	cfg_init(&c, SPAM_ENGINE_BUILTIN);
	c.max_size = 0;
	CHECK((e = spam_engine_new(&c, err, sizeof(err))) != NULL);
	if (e == NULL)
		return;
	msg = malloc(n + 16384);
	p = msg + sprintf(msg, "From: a@b.example\r\nSubject: ");
	for (i = 0; i < 8000; i++)
		*p++ = 'A';
	p += sprintf(p, "b\r\nX-Priority: 1 (Highest)\r\n\r\n");
	while ((size_t)(p - msg) < n)
		p += sprintf(p, "you have won the %d Click here\r\n", i++);
	t0 = ms_now();
	spam_check(e, msg, (size_t)(p - msg), &r);
	printf("compiled-in rules on %zu bytes: %llu ms\n", (size_t)(p - msg),
	    (unsigned long long)(ms_now() - t0));
	CHECK(ms_now() - t0 < 5000);
	CHECK(r.status == SPAM_OK);
	CHECK(strstr(r.detail, "(limit)") == NULL);
	CHECK(strstr(r.detail, "SUBJ_ALL_CAPS") == NULL);
	CHECK(has(r.detail, "PRIORITY_HIGHEST(0.2)"));
	CHECK(has(r.detail, "CLICK_HERE(0.3)"));
	free(msg);
	spam_engine_free(e);
}

/* Header rules see the unfolded, RFC 2047-decoded value. */
static void
test_header_rules(void)
{
	struct spam_engine *e;
	struct spam_result r;
	char err[512];

	e = rules_engine("header FREE Subject 6 (?i)^free money\n"
	                 "header FOLD X-Note 1 ^hello\\s+there$\n"
	                 "header ANY_TO To 1 carol@\n"
	                 "header NOT_HERE X-None 50 .\n",
	    err, sizeof(err));
	CHECK(e != NULL);
	if (e == NULL)
		return;
	check(e,
	    "Subject: =?UTF-8?B?RnJlZSBNb25leSBub3c=?=\r\n"
	    "X-Note: hello\r\n"
	    "\tthere\r\n"
	    "To: a@example.org\r\n"
	    "To: Carol <carol@example.org>\r\n"
	    "\r\nbody\r\n",
	    &r);
	CHECK(r.status == SPAM_OK);
	CHECK(r.score == 6 + 1 + 1);
	CHECK(r.category == SPAM_SUSPECT);
	CHECK(strcmp(r.detail, "FREE(6) FOLD(1) ANY_TO(1)") == 0);
	if (strcmp(r.detail, "FREE(6) FOLD(1) ANY_TO(1)") != 0)
		fprintf(stderr, "  detail: %s\n", r.detail);
	/* The header of an attached message is not the message's. */
	check(e,
	    "Subject: hi\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: message/rfc822\r\n\r\n"
	    "Subject: free money\r\n\r\ninner\r\n",
	    &r);
	CHECK(r.status == SPAM_OK && r.score == 0);
	spam_engine_free(e);
}

/* Body rules: base64, quoted-printable, charsets, HTML without tags. */
static void
test_body_rules(void)
{
	struct spam_engine *e;
	struct spam_result r;
	char err[512], msg[4096], b64[512];

	e = rules_engine("body CHEAP 3 (?i)cheap pills\n"
	                 "body CAFE 2 caf\xc3\xa9 cr\xc3\xa8me\n"
	                 "body LINES 1 (?m)^second line$\n"
	                 "body NO_SCRIPT 100 alert\n"
	                 "body NO_TAG 100 span\n"
	                 "body AMP 0.5 Tom & Jerry\n"
	                 "body IN_IMAGE 100 notext\n",
	    err, sizeof(err));
	CHECK(e != NULL);
	if (e == NULL) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	base64("first line\r\nsecond line\r\nBuy CHEAP Pills here\r\n", b64,
	    sizeof(b64));
	snprintf(msg, sizeof(msg),
	    "From: a@example.net\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=b1\r\n"
	    "\r\n"
	    "--b1\r\n"
	    "Content-Type: text/plain\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "\r\n"
	    "%s\r\n"
	    "--b1\r\n"
	    "Content-Type: text/html; charset=iso-8859-1\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n"
	    "\r\n"
	    "<html><script>alert(1)</script><p>caf=E9 <span>cr=E8me</span>"
	    "</p>\r\n"
	    "<p>Tom &amp; Jerry</p></html>\r\n"
	    "--b1\r\n"
	    "Content-Type: application/octet-stream\r\n"
	    "\r\n"
	    "notext\r\n"
	    "--b1--\r\n",
	    b64);
	check(e, msg, &r);
	CHECK(r.status == SPAM_OK);
	CHECK(r.score == 3 + 2 + 1 + 0.5);
	CHECK(strcmp(r.detail, "CHEAP(3) CAFE(2) LINES(1) AMP(0.5)") == 0);
	if (strcmp(r.detail, "CHEAP(3) CAFE(2) LINES(1) AMP(0.5)") != 0)
		fprintf(stderr, "  detail: %s\n", r.detail);
	spam_engine_free(e);
}

static void
sha256_hex(const char *s, char *hex)
{
	unsigned char md[32];
	unsigned int n;
	int i;

	EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
}

/* Fingerprints of the normalised text. */
static void
test_fingerprint(void)
{
	struct spam_engine *e;
	struct spam_result r;
	char err[512], hex[65], rules[512];
	int i;

	sha256_hex("dear friend, win 000 now! call 0000", hex);
	/* Hex digits in either case. */
	for (i = 0; hex[i] != '\0'; i += 2)
		if (hex[i] >= 'a')
			hex[i] -= 'a' - 'A';
	snprintf(rules, sizeof(rules),
	    "fingerprint KNOWN_SPAM 20 %s\n"
	    "fingerprint EMPTY 50 "
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n",
	    hex);
	e = rules_engine(rules, err, sizeof(err));
	CHECK(e != NULL);
	if (e == NULL) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	check(e,
	    "Subject: x\r\n\r\n  Dear   FRIEND,\r\n\twin 100 now!\r\n"
	    "Call 5551\r\n\r\n",
	    &r);
	CHECK(r.status == SPAM_OK && r.score == 20);
	CHECK(r.category == SPAM_CONFIRMED);
	CHECK(strcmp(r.detail, "KNOWN_SPAM(20)") == 0);
	/* Other digits, spacing and case: the same fingerprint. */
	check(e,
	    "Subject: y\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: text/html\r\n\r\n"
	    "<p>dear friend,</p><b>WIN</b> 999 now! call 1234\r\n",
	    &r);
	CHECK(r.status == SPAM_OK && r.score == 20);
	check(e, "Subject: z\r\n\r\ndear friend, win 100 now! call\r\n", &r);
	CHECK(r.status == SPAM_OK && r.score == 0);
	/* An empty text matches no fingerprint, not even the empty one. */
	check(e, "Subject: z\r\n\r\n \r\n\t\r\n", &r);
	CHECK(r.status == SPAM_OK && r.score == 0);
	spam_engine_free(e);
}

/* Negative scores, thresholds and categories. */
static void
test_scores(void)
{
	struct spam_engine *e;
	struct spam_result r;
	struct cfg_spam c;
	char err[512];

	e = rules_engine("body GOOD -3 invoice\n"
	                 "body BAD 6 money\n"
	                 "body FIVE 5 five\n"
	                 "body TEN 10 ten\n"
	                 "body FIFTEEN 15 fifteen\n"
	                 "body ALMOST 4.99 almost\n",
	    err, sizeof(err));
	CHECK(e != NULL);
	if (e == NULL)
		return;
	check(e, "\r\nyour invoice: money\r\n", &r);
	CHECK(r.status == SPAM_OK && r.score == 3 && r.category == -1);
	CHECK(strcmp(r.detail, "GOOD(-3) BAD(6)") == 0);
	check(e, "\r\nfive\r\n", &r);
	CHECK(r.score == 5 && r.category == SPAM_SUSPECT);
	check(e, "\r\nten\r\n", &r);
	CHECK(r.score == 10 && r.category == SPAM_BULK);
	check(e, "\r\nfifteen\r\n", &r);
	CHECK(r.score == 15 && r.category == SPAM_CONFIRMED);
	check(e, "\r\nalmost\r\n", &r);
	CHECK(r.score == 4.99 && r.category == -1);
	check(e, "\r\nten fifteen invoice\r\n", &r);
	CHECK(r.score == 22 && r.category == SPAM_CONFIRMED);
	spam_engine_free(e);

	/* Other thresholds. */
	cfg_init(&c, SPAM_ENGINE_BUILTIN);
	c.rules = "t";
	c.rules_data = (uint8_t *)"body TEN 10 ten\n";
	c.rules_len = strlen("body TEN 10 ten\n");
	c.cat[SPAM_CONFIRMED].score = 30;
	c.cat[SPAM_BULK].score = 20;
	c.cat[SPAM_SUSPECT].score = 10;
	CHECK((e = spam_engine_new(&c, err, sizeof(err))) != NULL);
	check(e, "\r\nten\r\n", &r);
	CHECK(r.category == SPAM_SUSPECT);
	spam_engine_free(e);
}

/* A pattern that backtracks without end: not a hit, and said so. */
static void
test_match_limit(void)
{
	struct spam_engine *e;
	struct spam_result r;
	char err[512], msg[256];
	uint64_t t0;

	e = rules_engine("body SLOW 50 ^(a|aa)+$\n"
	                 "body FAST 1 b\n",
	    err, sizeof(err));
	CHECK(e != NULL);
	if (e == NULL)
		return;
	snprintf(msg, sizeof(msg), "\r\n%.60s",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaab");
	t0 = ms_now();
	check(e, msg, &r);
	CHECK(ms_now() - t0 < 5000);
	CHECK(r.status == SPAM_OK && r.score == 1);
	CHECK(strcmp(r.detail, "SLOW(limit) FAST(1)") == 0);
	spam_engine_free(e);
}

/* The detail is cut with " ..." when the rules hit do not fit. */
static void
test_detail_cut(void)
{
	struct spam_engine *e;
	struct spam_result r;
	char err[512], rules[8192];
	size_t n = 0;
	int i;

	for (i = 0; i < 40; i++)
		n += snprintf(rules + n, sizeof(rules) - n,
		    "body A_RATHER_LONG_RULE_NAME_%02d 1 x\n", i);
	e = rules_engine(rules, err, sizeof(err));
	CHECK(e != NULL);
	if (e == NULL)
		return;
	check(e, "\r\nx\r\n", &r);
	CHECK(r.status == SPAM_OK && r.score == 40);
	CHECK(strlen(r.detail) < sizeof(r.detail));
	CHECK(strlen(r.detail) > 200);
	CHECK(strcmp(r.detail + strlen(r.detail) - 4, " ...") == 0);
	spam_engine_free(e);
}

/* ---- exceptions and max_size ---- */

static struct spam_engine *
exc_engine(const char *sender, const char *recipient, uint64_t max_size)
{
	static struct cfg_spam_exception x[2];
	struct cfg_spam c;
	char err[512];

	cfg_init(&c, SPAM_ENGINE_BUILTIN);
	x[0].sender = (char *)sender;
	x[0].recipient = (char *)recipient;
	x[1].sender = "nobody@nowhere.invalid";
	c.exceptions = x;
	c.nexceptions = 2;
	c.max_size = max_size;
	return spam_engine_new(&c, err, sizeof(err));
}

static int
status_of(struct spam_engine *e, const char *msg, struct spam_result *r)
{
	check(e, msg, r);
	return r->status;
}

static void
test_exceptions(void)
{
	struct spam_engine *e;
	struct spam_result r;
	char msg[2048];
	char big[4096];

	snprintf(msg, sizeof(msg),
	    "From: Boss <boss@Trusted.Example>\r\n"
	    "To: undisclosed-recipients:;\r\n"
	    "Cc: Team: dev@example.org, Postmaster <postmaster@example.org>;\r\n"
	    "Subject: x\r\n\r\n" GTUBE "\r\n");
	/* Sender: From addresses, case-insensitive. */
	CHECK((e = exc_engine("*@trusted.example", NULL, 0)) != NULL);
	CHECK(status_of(e, msg, &r) == SPAM_EXCEPTED);
	CHECK(has(r.detail, "exception 1: sender boss@Trusted.Example"));
	CHECK(status_of(e, gtube, &r) == SPAM_OK);
	CHECK(r.category == SPAM_CONFIRMED);
	spam_engine_free(e);
	/* Recipient: To and Cc, groups included. */
	CHECK((e = exc_engine(NULL, "postmaster@*", 0)) != NULL);
	CHECK(status_of(e, msg, &r) == SPAM_EXCEPTED);
	CHECK(has(r.detail, "recipient postmaster@example.org"));
	spam_engine_free(e);
	CHECK((e = exc_engine(NULL, "d?v@example.org", 0)) != NULL);
	CHECK(status_of(e, msg, &r) == SPAM_EXCEPTED);
	spam_engine_free(e);
	/* The sender is not a recipient, nor the reverse. */
	CHECK((e = exc_engine(NULL, "boss@*", 0)) != NULL);
	CHECK(status_of(e, msg, &r) == SPAM_OK);
	spam_engine_free(e);
	CHECK((e = exc_engine("postmaster@*", NULL, 0)) != NULL);
	CHECK(status_of(e, msg, &r) == SPAM_OK);
	spam_engine_free(e);
	/* Both: both must match. */
	CHECK((e = exc_engine("boss@*", "dev@example.org", 0)) != NULL);
	CHECK(status_of(e, msg, &r) == SPAM_EXCEPTED);
	CHECK(has(r.detail, "sender boss@Trusted.Example, recipient "
	                    "dev@example.org"));
	spam_engine_free(e);
	CHECK((e = exc_engine("boss@*", "bob@*", 0)) != NULL);
	CHECK(status_of(e, msg, &r) == SPAM_OK);
	spam_engine_free(e);
	/* Broken headers are no addresses, and no crash. */
	CHECK((e = exc_engine("*", NULL, 0)) != NULL);
	CHECK(status_of(e, "From: <<<@@@>>>\r\n\r\nx\r\n", &r) == SPAM_OK);
	CHECK(status_of(e, "From: a@b\r\n\r\nx\r\n", &r) == SPAM_EXCEPTED);
	CHECK(status_of(e, "\r\n\r\n", &r) == SPAM_OK);
	spam_engine_free(e);

	/* max_size: larger messages are skipped, after the exceptions. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, gtube, strlen(gtube));
	CHECK((e = exc_engine("*@trusted.example", NULL, 1000)) != NULL);
	CHECK(status_of(e, big, &r) == SPAM_SKIPPED);
	CHECK(has(r.detail, "4095 bytes, larger than max_size 1000"));
	CHECK(r.category == -1 && r.score == 0);
	CHECK(status_of(e, msg, &r) == SPAM_EXCEPTED);
	CHECK(status_of(e, gtube, &r) == SPAM_OK);
	spam_engine_free(e);
}

/* ---- fake servers ---- */

enum fake_mode {
	F_ANSWER, /* read the request, answer, close */
	F_CLOSE, /* close right after accept */
	F_SLOW, /* read the request, never answer */
	F_DRIP, /* read the request, answer a byte every 100 ms */
	F_NOREAD, /* accept, never read */
	F_EARLY /* answer before reading, then drain */
};

struct fake {
	pid_t pid;
	struct cfg_addr addr;
};

/* What the server expects (copied into the child by fork). */
static const char *fake_line; /* the request's first line */
static const char *fake_msg;
static size_t fake_msglen;

/* Read a request and check it: 0 if right. */
static int
fake_request(int c)
{
	size_t cap = fake_msglen + 4096, n = 0, hl = 0, cl = 0;
	char *b, *h = NULL, *v;
	ssize_t r;
	int rc = 0;

	if ((b = malloc(cap + 1)) == NULL)
		return 10;
	while (rc == 0 && (h == NULL || n < hl + cl)) {
		if (n == cap)
			rc = 11;
		else if ((r = read(c, b + n, cap - n)) <= 0)
			rc = 12;
		else {
			n += r;
			b[n] = '\0';
		}
		if (rc == 0 && h == NULL &&
		    (h = strstr(b, "\r\n\r\n")) != NULL) {
			hl = h - b + 4;
			if ((v = strcasestr(b, "\r\nContent-length: ")) == NULL)
				rc = 13;
			else
				cl = strtoul(v + 18, NULL, 10);
		}
	}
	if (rc == 0 && (strncmp(b, fake_line, strlen(fake_line)) != 0 ||
	                   strncmp(b + strlen(fake_line), "\r\n", 2) != 0))
		rc = 14;
	if (rc == 0 && (cl != fake_msglen || n != hl + cl ||
	                   memcmp(b + hl, fake_msg, cl) != 0))
		rc = 15;
	free(b);
	return rc;
}

static void
fake_serve(int lfd, int mode, const char *ans, size_t anslen)
{
	char b[4096];
	size_t i;
	int c, rc = 0;

	alarm(20); /* never outlive the test */
	if ((c = accept(lfd, NULL, NULL)) == -1)
		_exit(20);
	switch (mode) {
	case F_ANSWER:
		rc = fake_request(c);
		if (write(c, ans, anslen) != (ssize_t)anslen)
			rc = 21;
		break;
	case F_CLOSE:
		break;
	case F_SLOW:
		rc = fake_request(c);
		sleep(20);
		break;
	case F_DRIP:
		rc = fake_request(c);
		for (i = 0; i < anslen; i++) {
			if (write(c, ans + i, 1) != 1)
				break;
			usleep(100000);
		}
		break;
	case F_NOREAD:
		sleep(20);
		break;
	case F_EARLY:
		if (write(c, ans, anslen) != (ssize_t)anslen)
			rc = 21;
		shutdown(c, SHUT_WR);
		while (read(c, b, sizeof(b)) > 0)
			;
		break;
	}
	close(c);
	_exit(rc);
}

static void
fake_start(struct fake *f, int mode, const char *ans, size_t anslen)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	char a[64];
	int lfd;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(lfd, 4) == -1 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &sl) == -1)
		die("fake server");
	snprintf(a, sizeof(a), "127.0.0.1:%d", ntohs(sin.sin_port));
	if (parse_addr(a, &f->addr) == -1)
		die("parse_addr");
	fflush(NULL);
	if ((f->pid = fork()) == -1)
		die("fork");
	if (f->pid == 0)
		fake_serve(lfd, mode, ans, anslen);
	close(lfd);
}

/* The server's exit status (0: it got the request it expected), or -1
 * if it had to be killed. */
static int
fake_end(struct fake *f, int wait)
{
	int st, i;

	for (i = 0; wait && i < 300; i++) {
		if (waitpid(f->pid, &st, WNOHANG) == f->pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -2;
		usleep(10000);
	}
	kill(f->pid, SIGKILL);
	waitpid(f->pid, &st, 0);
	return -1;
}

/* An address where nothing listens. */
static void
closed_addr(struct cfg_addr *addr)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	char a[64];
	int fd;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &sl) == -1)
		die("closed_addr");
	close(fd);
	snprintf(a, sizeof(a), "127.0.0.1:%d", ntohs(sin.sin_port));
	parse_addr(a, addr);
}

static struct spam_engine *
net_engine(int engine, const struct cfg_addr *addr, uint64_t max_size)
{
	struct spam_engine *e;
	struct cfg_spam c;
	char err[512];

	cfg_init(&c, engine);
	c.address = *addr;
	c.max_size = max_size;
	if ((e = spam_engine_new(&c, err, sizeof(err))) == NULL)
		fprintf(stderr, "  net_engine: %s\n", err);
	return e;
}

/* One check of msg against a fake server in mode answering ans; the
 * server's status (see fake_end) and the time it took. */
static int
fake_check(int engine, int mode, const char *ans, size_t anslen,
    const char *msg, size_t len, uint64_t max_size, struct spam_result *r,
    uint64_t *ms)
{
	struct spam_engine *e;
	struct fake f;
	uint64_t t0;

	fake_line = engine == SPAM_ENGINE_SPAMD ? "SYMBOLS SPAMC/1.5"
	                                        : "POST /checkv2 HTTP/1.0";
	fake_msg = msg;
	fake_msglen = len;
	fake_start(&f, mode, ans, anslen);
	e = net_engine(engine, &f.addr, max_size);
	t0 = ms_now();
	spam_check(e, msg, len, r);
	if (ms != NULL)
		*ms = ms_now() - t0;
	spam_engine_free(e);
	return fake_end(
	    &f, mode == F_ANSWER || mode == F_CLOSE || mode == F_EARLY);
}

/* A server answer: ok with the score and category, or unavailable with
 * a detail that says why. */
static void
answer_ok(
    int engine, const char *ans, double score, int cat, const char *detail)
{
	struct spam_result r;
	int st;

	st = fake_check(engine, F_ANSWER, ans, strlen(ans), ham, strlen(ham),
	    1 << 20, &r, NULL);
	CHECK(st == 0);
	CHECK(r.status == SPAM_OK);
	CHECK(r.score == score);
	CHECK(r.category == cat);
	CHECK(has(r.detail, detail));
	if (r.status != SPAM_OK || r.score != score)
		fprintf(stderr, "  status %d score %g: %s\n", r.status, r.score,
		    r.detail);
}

static void
answer_bad(int engine, int mode, const char *ans, size_t len, const char *why)
{
	struct spam_result r;
	uint64_t ms;

	fake_check(engine, mode, ans, len, ham, strlen(ham), 1 << 20, &r, &ms);
	CHECK(r.status == SPAM_UNAVAILABLE);
	CHECK(r.category == -1 && r.score == 0);
	CHECK(has(r.detail, why));
	CHECK(ms < TIMEOUT_MS + 1000);
}

static void
bad(int engine, const char *ans, const char *why)
{
	answer_bad(engine, F_ANSWER, ans, strlen(ans), why);
}

static void
test_spamd_fake(void)
{
	const int S = SPAM_ENGINE_SPAMD;
	const char *drip = "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\n";
	const char *early = "SPAMD/1.0 76 Bad header line: x\r\n";
	const char *five = "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 5 / 5\r\n\r\n";
	struct spam_result r;
	char *big;
	size_t n;
	uint64_t ms;

	answer_ok(S,
	    "SPAMD/1.1 0 EX_OK\r\nContent-length: 29\r\n"
	    "Spam: True ; 1000.0 / 5.0\r\n\r\n"
	    "GTUBE,NO_RECEIVED,NO_RELAYS\r\nJUNK",
	    1000, SPAM_CONFIRMED, "GTUBE NO_RECEIVED NO_RELAYS");
	answer_ok(S, "SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.5 / 5.0\r\n\r\n",
	    -0.5, -1, "");
	answer_ok(S, "SPAMD/1.5 0 EX_OK\nspam:   yes ; 7.5 / 5.0\n\nA, B\n",
	    7.5, SPAM_SUSPECT, "A B");
	answer_ok(S,
	    "SPAMD/1.1 0 EX_OK\r\nX-Other: 1\r\n"
	    "Spam: No ; 10 / 20\r\n\r\nBAD\x01NAME",
	    10, SPAM_BULK, "BAD?NAME");

	bad(S, "SPAMD/1.0 76 Bad header line: (Content-length)\r\n",
	    "spamd: SPAMD/1.0 76 Bad header line");
	bad(S, "SPAMD/1.0 EX_OK 0\r\n\r\n", "spamd: SPAMD/1.0 EX_OK");
	bad(S, "HTTP/1.1 200 OK\r\n\r\n", "not a SPAMD answer");
	bad(S, "\x80\x81garbage\x00\xff", "not a SPAMD answer");
	bad(S, "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n",
	    "without a Spam header");
	bad(S, "SPAMD/1.1 0 EX_OK\r\nSpam: True ; nan / 5.0\r\n\r\n",
	    "bad Spam header");
	bad(S, "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1e999 / 5.0\r\n\r\n",
	    "bad Spam header");
	bad(S, "SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1 / 5.0\r\n\r\n",
	    "bad Spam header");
	bad(S, "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 5.0\r\n\r\n",
	    "bad Spam header");
	bad(S,
	    "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n"
	    "Spam: False ; 0 / 5\r\n\r\n",
	    "bad Spam header");
	bad(S,
	    "SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\n"
	    "Spam: True ; 1.0 / 5.0\r\n\r\nGTUBE",
	    "answer cut: 5 of 50 body bytes");
	bad(S,
	    "SPAMD/1.1 0 EX_OK\r\nContent-length: x\r\n"
	    "Spam: True ; 1.0 / 5.0\r\n\r\n",
	    "bad Content-length");
	bad(S, "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1", "cut in its header");
	bad(S, "", "closed without an answer");
	answer_bad(S, F_CLOSE, "", 0, "spamd 127.0.0.1:");
	answer_bad(S, F_SLOW, "", 0, "no answer within 700 ms");
	answer_bad(
	    S, F_DRIP, drip, strlen(drip), "no whole answer within 700 ms");
	answer_bad(S, F_EARLY, early, strlen(early), "76 Bad header line");

	/* Over 64 KiB. */
	n = 70 * 1024;
	big = malloc(n);
	memset(big, 'A', n);
	memcpy(big, "SPAMD/1.1 0 EX_OK\r\n", 19);
	answer_bad(S, F_ANSWER, big, n, "answer longer than 64 KiB");
	free(big);

	/* A server that takes nothing: sending a large message times out. */
	n = 32 * 1024 * 1024;
	big = malloc(n);
	memset(big, 'x', n);
	memcpy(big, "Subject: big\r\n\r\n", 16);
	fake_line = "SYMBOLS SPAMC/1.5";
	fake_check(S, F_NOREAD, "", 0, big, n, 0, &r, &ms);
	CHECK(r.status == SPAM_UNAVAILABLE);
	CHECK(has(r.detail, "within 700 ms"));
	CHECK(ms >= 600 && ms < TIMEOUT_MS + 1000);
	/* ... and a large message to a server that reads it all. */
	CHECK(fake_check(S, F_ANSWER, five, strlen(five), big, 4 * 1024 * 1024,
	          0, &r, &ms) == 0);
	CHECK(r.status == SPAM_OK && r.score == 5);
	free(big);
}

static void
test_net_errors(void)
{
	struct spam_engine *e;
	struct spam_result r;
	struct cfg_addr addr;
	struct cfg_spam c;
	char err[512];

	closed_addr(&addr);
	CHECK((e = net_engine(SPAM_ENGINE_SPAMD, &addr, 0)) != NULL);
	spam_check(e, ham, strlen(ham), &r);
	CHECK(r.status == SPAM_UNAVAILABLE);
	CHECK(has(r.detail, "connect: Connection refused"));
	spam_engine_free(e);
	CHECK((e = net_engine(SPAM_ENGINE_RSPAMD, &addr, 0)) != NULL);
	spam_check(e, ham, strlen(ham), &r);
	CHECK(r.status == SPAM_UNAVAILABLE);
	CHECK(has(r.detail, "rspamd 127.0.0.1:"));
	spam_engine_free(e);
	/* An engine without an address gets the default one. */
	cfg_init(&c, SPAM_ENGINE_RSPAMD);
	CHECK((e = spam_engine_new(&c, err, sizeof(err))) != NULL);
	spam_engine_free(e);
	/* Exceptions and max_size come before the server. */
	CHECK((e = net_engine(SPAM_ENGINE_SPAMD, &addr, 10)) != NULL);
	spam_check(e, ham, strlen(ham), &r);
	CHECK(r.status == SPAM_SKIPPED);
	spam_engine_free(e);
}

static const char rspamd_gtube[] =
    "{\"is_skipped\":true,\"score\":15.0,\"required_score\":15.0,"
    "\"action\":\"reject\",\"symbols\":{\"GTUBE\":{\"name\":\"GTUBE\","
    "\"score\":0.0,\"metric_score\":0.0}},\"messages\":{\"smtp_message\":"
    "\"Gtube pattern\"},\"message-id\":\"1@example.org\","
    "\"time_real\":0.132613}";

static const char rspamd_ham[] =
    "{\"is_skipped\":false,\"score\":3.400000,\"required_score\":15.0,"
    "\"action\":\"no action\",\"symbols\":{\"ARC_NA\":{\"name\":\"ARC_NA\","
    "\"score\":0.0,\"metric_score\":0.0,\"description\":\"ARC signature "
    "absent\"},\"MIME_GOOD\":{\"name\":\"MIME_GOOD\",\"score\":-0.100000,"
    "\"metric_score\":-0.100000,\"description\":\"Known content-type\","
    "\"options\":[\"text/plain\"]},\"DATE_IN_PAST\":{\"name\":"
    "\"DATE_IN_PAST\",\"score\":1.0,\"metric_score\":1.0,\"options\":"
    "[\"8776\"]},\"HFILTER_HOSTNAME_UNKNOWN\":{\"name\":"
    "\"HFILTER_HOSTNAME_UNKNOWN\",\"score\":2.500000,\"metric_score\":"
    "2.500000}},\"messages\":{},\"message-id\":\"2@example.org\","
    "\"time_real\":0.014085,\"milter\":{\"remove_headers\":{\"X-Spam\":0}}}";

static char *
http(const char *status, const char *extra, const char *body)
{
	static char b[16384];

	snprintf(b, sizeof(b),
	    "HTTP/1.1 %s\r\nConnection: close\r\nServer: rspamd/3.4\r\n%s"
	    "Content-Length: %zu\r\nContent-Type: application/json\r\n\r\n%s",
	    status, extra, strlen(body), body);
	return b;
}

static void
json_bad(const char *body, const char *why)
{
	bad(SPAM_ENGINE_RSPAMD, http("200 OK", "", body), why);
}

static void
test_rspamd_fake(void)
{
	const int R = SPAM_ENGINE_RSPAMD;
	char *body, *p;
	int i;

	answer_ok(R, http("200 OK", "", rspamd_gtube), 15, SPAM_CONFIRMED,
	    "[reject] GTUBE");
	answer_ok(R, http("200 OK", "", rspamd_ham), 3.4, -1,
	    "[no action] HFILTER_HOSTNAME_UNKNOWN(2.5) DATE_IN_PAST(1) "
	    "MIME_GOOD(-0.1) ARC_NA");
	/* HTTP/1.0, no Content-Length: up to the close. */
	answer_ok(R, "HTTP/1.0 200 OK\r\n\r\n {\"score\": -2.5e0 } \r\n", -2.5,
	    -1, "");
	answer_ok(R,
	    http("200 OK", "",
	        "{\"symbols\":{\"A\\u00e9\\ud83d\\ude00\":{\"score\":1e1},"
	        "\"B\":{}, \"C\":[1,{\"x\":null}],\"D\":true},\"score\":10,"
	        "\"action\":\"add header\",\"x\":[[[]]],\"y\":\"\\\"\\\\\\/"
	        "\\b\\f\\n\\r\\t\"}"),
	    10, SPAM_BULK,
	    "[add header] A?????"
	    "?(10) B C D");
	answer_ok(R, http("200 OK", "", "{\"score\":6,\"action\":7}"), 6,
	    SPAM_SUSPECT, "");

	bad(R, http("500 Internal Server Error", "", "{\"error\":\"x\"}"),
	    "rspamd: HTTP/1.1 500 Internal Server Error");
	bad(R, http("200 OK", "Transfer-Encoding: chunked\r\n", "{}"),
	    "unexpected Transfer-Encoding");
	bad(R, http("200 OK", "Content-Encoding: gzip\r\n", "{}"),
	    "unexpected Content-Encoding");
	bad(R, "SPAMD/1.1 0 EX_OK\r\n\r\n", "not an HTTP answer");
	bad(R, "HTTP/1.1 2000 OK\r\n\r\n", "rspamd: HTTP/1.1 2000");
	bad(R,
	    "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
	    "{\"score\":1}",
	    "answer cut: 11 of 100 body bytes");
	bad(R, "HTTP/1.1 200 OK\r\nContent-Len", "cut in its header");
	json_bad("", "not a JSON object");
	json_bad("[]", "not a JSON object");
	json_bad("{", "bad JSON answer");
	json_bad("{\"score\":\"high\"}", "\"score\" is not a number");
	json_bad("{\"score\":1,}", "bad JSON answer");
	json_bad("{\"score\":01}", "bad JSON answer");
	json_bad("{\"score\":1.}", "bad number");
	json_bad("{\"score\":-}", "bad number");
	json_bad("{\"score\":1} x", "data after the JSON object");
	json_bad("{\"score\":1}{}", "data after the JSON object");
	json_bad("{\"score\":1e999}", "number out of range");
	json_bad("{\"score\":NaN}", "\"score\" is not a number");
	json_bad("{\"symbols\":{}}", "answer without a score");
	json_bad(
	    "{\"score\":1,\"symbols\":[]}", "\"symbols\" is not an object");
	json_bad("{\"score\":1,\"a\":\"\x01\"}", "control character");
	json_bad("{\"score\":1,\"a\":\"\\q\"}", "bad escape");
	json_bad("{\"score\":1,\"a\":\"\\u12\"}", "bad \\u escape");
	json_bad("{\"score\":1,\"a\":tru}", "bad literal");
	json_bad("{\"score\":1,\"a\":\"open}", "unterminated string");
	json_bad("{\"score\":1 \"a\":2}", "',' or '}' expected");
	json_bad("{\"score\" 1}", "':' expected");
	json_bad("{\"score\":1,\"a\":[1 2]}", "',' or ']' expected");
	json_bad("{score:1}", "string expected");

	/* Nesting: 32 levels are fine, 40 are not. */
	body = malloc(1024);
	p = body + sprintf(body, "{\"score\":1,\"a\":");
	for (i = 0; i < 30; i++)
		*p++ = '[';
	for (i = 0; i < 30; i++)
		*p++ = ']';
	strcpy(p, "}");
	answer_ok(R, http("200 OK", "", body), 1, -1, "");
	p = body + sprintf(body, "{\"score\":1,\"a\":");
	for (i = 0; i < 40; i++)
		*p++ = '[';
	for (i = 0; i < 40; i++)
		*p++ = ']';
	strcpy(p, "}");
	json_bad(body, "nested too deep");
	free(body);

	/* More symbols than kept: counted, and the detail is cut. */
	body = malloc(16384);
	p = body + sprintf(body, "{\"score\":2,\"symbols\":{");
	for (i = 0; i < 300; i++)
		p += sprintf(
		    p, "%s\"S%03d\":{\"score\":%d}", i ? "," : "", i, i % 7);
	strcpy(p, "}}");
	answer_ok(R, http("200 OK", "", body), 2, -1, " ...");
	free(body);

	answer_bad(R, F_CLOSE, "", 0, "rspamd 127.0.0.1:");
	answer_bad(R, F_SLOW, "", 0, "no answer within 700 ms");
}

/* ---- inside scand's sandbox ---- */

static void
put(int fd, int v)
{
	if (write(fd, &v, sizeof(v)) != sizeof(v))
		_exit(91);
}

static int
get(int fd)
{
	int v;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return INT_MIN;
	return v;
}

static void
put_res(int fd, const struct spam_result *r)
{
	put(fd, r->status);
	put(fd, r->category);
	put(fd, (int)r->score);
}

/* The engines are made before the sandbox, used inside it. */
struct boxed {
	struct spam_engine *builtin, *spamd, *rspamd, *refused, *slow;
};

static void
kid_checks(int out, struct boxed *b, const char *msg8)
{
	struct spam_result r;

	spam_check(b->builtin, gtube64, strlen(gtube64), &r);
	put_res(out, &r);
	spam_check(b->builtin, msg8, strlen(msg8), &r);
	put_res(out, &r);
	spam_check(b->spamd, ham, strlen(ham), &r);
	put_res(out, &r);
	spam_check(b->rspamd, ham, strlen(ham), &r);
	put_res(out, &r);
	spam_check(b->refused, ham, strlen(ham), &r);
	put_res(out, &r);
	spam_check(b->slow, ham, strlen(ham), &r);
	put_res(out, &r);
}

static void
test_sandboxed(void)
{
	static const char spamd_ans[] =
	    "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 12.5 / 5.0\r\n\r\nX,Y";
	/* ISO-8859-2, quoted-printable: the converter must be loaded. */
	static const char msg8[] =
	    "From: a@example.org\r\nSubject: x\r\nDate: x\r\nMessage-ID: x\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: text/plain; charset=iso-8859-2\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "=A3=F3d=BC\r\n";
	char root[PATH_MAX], t[PATH_MAX], err[512];
	struct fake fs, fr, fslow;
	struct cfg_addr closed;
	struct boxed b;
	int res[2], rep[2], status, nr, out;
	pid_t pid;

	snprintf(root, sizeof(root), "%s/root", top);
	snprintf(t, sizeof(t), "%s/root/tmp", top);
	if (mkdir(root, 0755) == -1 || mkdir(t, 0700) == -1 ||
	    chown(t, NOBODY, NOBODY) == -1)
		die(root);
	b.builtin =
	    rules_engine("body GTUBE 1000 GTUBE-STANDARD\n"
	                 "body POLISH 20 \xc5\x81\xc3\xb3\x64\xc5\xba\n",
	        err, sizeof(err));
	CHECK(b.builtin != NULL);
	fake_line = "SYMBOLS SPAMC/1.5";
	fake_msg = ham;
	fake_msglen = strlen(ham);
	fake_start(&fs, F_ANSWER, spamd_ans, strlen(spamd_ans));
	fake_line = "POST /checkv2 HTTP/1.0";
	fake_start(&fr, F_ANSWER, http("200 OK", "", rspamd_ham),
	    strlen(http("200 OK", "", rspamd_ham)));
	fake_start(&fslow, F_SLOW, "", 0);
	closed_addr(&closed);
	b.spamd = net_engine(SPAM_ENGINE_SPAMD, &fs.addr, 0);
	b.rspamd = net_engine(SPAM_ENGINE_RSPAMD, &fr.addr, 0);
	b.refused = net_engine(SPAM_ENGINE_RSPAMD, &closed, 0);
	b.slow = net_engine(SPAM_ENGINE_RSPAMD, &fslow.addr, 0);
	if (pipe(res) == -1 || pipe(rep) == -1)
		die("pipe");
	fflush(NULL);
	if ((pid = fork()) == -1)
		die("fork");
	if (pid == 0) {
		out = fcntl(res[1], F_DUPFD, 100);
		if (out == -1 || dup2(rep[1], IMAPGW_REPORT_FD) == -1)
			_exit(92);
		if (sandbox_enter_flags(ROLE_SCAND, SANDBOX_NET, root, NOBODY, NOBODY) == -1)
			_exit(90);
		kid_checks(out, &b, msg8);
		_exit(0);
	}
	close(res[1]);
	close(rep[1]);
	/* builtin: GTUBE in base64, ISO-8859-2 text converted. */
	CHECK(get(res[0]) == SPAM_OK);
	CHECK(get(res[0]) == SPAM_CONFIRMED);
	CHECK(get(res[0]) == 1000);
	CHECK(get(res[0]) == SPAM_OK);
	CHECK(get(res[0]) == SPAM_CONFIRMED);
	CHECK(get(res[0]) == 20);
	/* spamd and rspamd over TCP. */
	CHECK(get(res[0]) == SPAM_OK);
	CHECK(get(res[0]) == SPAM_BULK);
	CHECK(get(res[0]) == 12);
	CHECK(get(res[0]) == SPAM_OK);
	CHECK(get(res[0]) == -1);
	CHECK(get(res[0]) == 3);
	/* Refused, and a timeout: unavailable, the process lives on. */
	CHECK(get(res[0]) == SPAM_UNAVAILABLE);
	CHECK(get(res[0]) == -1);
	CHECK(get(res[0]) == 0);
	CHECK(get(res[0]) == SPAM_UNAVAILABLE);
	CHECK(get(res[0]) == -1);
	CHECK(get(res[0]) == 0);
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		if (read(rep[0], &nr, sizeof(nr)) == sizeof(nr))
			fprintf(stderr,
			    "sandboxed child killed by system "
			    "call %s\n",
			    sandbox_syscall_name(nr));
		else
			fprintf(
			    stderr, "sandboxed child: status 0x%x\n", status);
	}
	close(res[0]);
	close(rep[0]);
	CHECK(fake_end(&fs, 1) == 0);
	CHECK(fake_end(&fr, 1) == 0);
	fake_end(&fslow, 0);
	spam_engine_free(b.builtin);
	spam_engine_free(b.spamd);
	spam_engine_free(b.rspamd);
	spam_engine_free(b.refused);
	spam_engine_free(b.slow);
	rmdir(t);
	rmdir(root);
}

/* ---- real servers, when the environment names them ---- */

static void
real_check(const char *name, int engine, struct spam_engine *e)
{
	struct spam_result r;
	uint64_t t0, t1, t2;

	t0 = ms_now();
	spam_check(e, gtube, strlen(gtube), &r);
	t1 = ms_now();
	CHECK(r.status == SPAM_OK);
	CHECK(r.category == SPAM_CONFIRMED);
	CHECK(has(r.detail, "GTUBE"));
	printf("real %s: GTUBE score %g category %d in %llu ms: %s\n", name,
	    r.score, r.category, (unsigned long long)(t1 - t0), r.detail);
	spam_check(e, ham, strlen(ham), &r);
	t2 = ms_now();
	CHECK(r.status == SPAM_OK);
	CHECK(r.category == -1);
	CHECK(r.score < 5);
	printf("real %s: ham score %g category %d in %llu ms: %s\n", name,
	    r.score, r.category, (unsigned long long)(t2 - t1), r.detail);
	(void)engine;
}

/* GTUBE and ham against a real server, also from inside the sandbox. */
static void
test_real(const char *name, const char *env, int engine)
{
	struct spam_engine *e;
	struct spam_result r;
	struct cfg_addr addr;
	struct cfg_spam c;
	char err[512], root[PATH_MAX];
	int res[2], st;
	pid_t pid;

	if (parse_addr(env, &addr) == -1) {
		fprintf(stderr, "test_spam: bad address %s\n", env);
		t_fail++;
		return;
	}
	cfg_init(&c, engine);
	c.address = addr;
	c.timeout_ms = 60000;
	CHECK((e = spam_engine_new(&c, err, sizeof(err))) != NULL);
	if (e == NULL)
		return;
	real_check(name, engine, e);
	snprintf(root, sizeof(root), "%s/root-%s", top, name);
	if (mkdir(root, 0755) == -1 || pipe(res) == -1)
		die(root);
	fflush(NULL);
	if ((pid = fork()) == 0) {
		if (dup2(res[1], 100) == -1 ||
		    sandbox_enter_flags(ROLE_SCAND, SANDBOX_NET, root, NOBODY, NOBODY) == -1)
			_exit(90);
		spam_check(e, gtube, strlen(gtube), &r);
		put_res(100, &r);
		_exit(0);
	}
	close(res[1]);
	CHECK(get(res[0]) == SPAM_OK);
	CHECK(get(res[0]) == SPAM_CONFIRMED);
	get(res[0]);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	      WEXITSTATUS(st) == 0);
	close(res[0]);
	rmdir(root);
	spam_engine_free(e);
}

int
main(void)
{
	const char *env;

	if (geteuid() != 0) {
		fprintf(stderr, "test_spam: must run as root\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	log_init(LOGT_STDERR, LOGF_TEXT,
	    getenv("TEST_SPAM_DEBUG") ? LOG_DEBUG : LOG_ERR, "test_spam");
	snprintf(top, sizeof(top), "/tmp/imapgw-spam.XXXXXX");
	if (mkdtemp(top) == NULL || chmod(top, 0755) == -1)
		die("mkdtemp");
	mime_init();
	make_messages();

	test_rules_errors();
	test_rules_ok();
	test_rules_example();
	test_gtube();
	test_builtin_big();
	test_header_rules();
	test_body_rules();
	test_fingerprint();
	test_scores();
	test_match_limit();
	test_detail_cut();
	test_exceptions();
	test_spamd_fake();
	test_net_errors();
	test_rspamd_fake();
	test_sandboxed();
	if ((env = getenv("IMAPGW_SPAMD")) != NULL && *env != '\0')
		test_real("spamd", env, SPAM_ENGINE_SPAMD);
	if ((env = getenv("IMAPGW_RSPAMD")) != NULL && *env != '\0')
		test_real("rspamd", env, SPAM_ENGINE_RSPAMD);
	rmdir(top);
	return test_done("test_spam");
}
