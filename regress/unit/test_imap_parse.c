/*
 * Unit tests for the IMAP line parser (netd/imap_parse.c): every command
 * and response form the engine relies on, literals of each kind inline and
 * spooled in every position, spans, the capability allow-list, and
 * malformed input with its error message.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imap_parse.h"
#include "test.h"

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

static struct imap_cmd C;
static struct imap_resp R;
static const uint8_t *B; /* buffer of the last parse */
static size_t BL;

static int
pc(const uint8_t *b, size_t n)
{
	B = b;
	BL = n;
	return imap_parse_command(b, n, NULL, 0, &C);
}

static int
pr(const uint8_t *b, size_t n)
{
	B = b;
	BL = n;
	return imap_parse_response(b, n, NULL, 0, &R);
}

#define PC(lit) pc(S(lit))
#define PR(lit) pr(S(lit))

static int
speq(struct imap_span s, const char *t)
{
	return s.off + s.len <= BL && s.len == strlen(t) &&
	       memcmp(B + s.off, t, s.len) == 0;
}

static int
streq(const struct imap_str *s, const char *t)
{
	return imap_str_eq(B, s, t);
}

/* The error of a failed command/response parse mentions t. */
static int
cerr(const char *t)
{
	if (strstr(C.err, t) == NULL) {
		fprintf(
		    stderr, "  command error \"%s\" lacks \"%s\"\n", C.err, t);
		return 0;
	}
	return 1;
}

static int
rerr(const char *t)
{
	if (strstr(R.err, t) == NULL) {
		fprintf(
		    stderr, "  response error \"%s\" lacks \"%s\"\n", R.err, t);
		return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* Line builder: "\x01" = next payload as {n}, "\x02" {n+}, "\x03" ~{n}.
 * Records where each payload went, so that spool() can take it out. */

static uint8_t L[1 << 20];
static size_t LL;
static size_t lit_at[64], lit_len[64];
static unsigned nlits;

static const uint8_t *
build(const char *tpl, ...)
{
	va_list ap;
	const char *pl;
	size_t n;
	int m;

	va_start(ap, tpl);
	LL = 0;
	nlits = 0;
	for (; *tpl != '\0'; tpl++) {
		if (*tpl < 1 || *tpl > 3) {
			L[LL++] = (uint8_t)*tpl;
			continue;
		}
		pl = va_arg(ap, const char *);
		n = va_arg(ap, size_t);
		m = snprintf((char *)L + LL, 64, "%s{%zu%s}\r\n",
		    *tpl == 3 ? "~" : "", n, *tpl == 2 ? "+" : "");
		LL += m;
		lit_at[nlits] = LL;
		lit_len[nlits++] = n;
		memcpy(L + LL, pl, n);
		LL += n;
	}
	va_end(ap);
	return L;
}

#define P(s) (s), sizeof(s) - 1

/* Spool the payloads in mask out of L into SB / SP. */
static uint8_t SB[1 << 20];
static size_t SBL;
static struct imap_spool SP[64];
static size_t NSP;

static void
spool(unsigned mask)
{
	size_t i = 0, o = 0;
	unsigned k;

	NSP = 0;
	for (k = 0; k < nlits; k++) {
		memcpy(SB + o, L + i, lit_at[k] - i);
		o += lit_at[k] - i;
		i = lit_at[k];
		if (mask & (1u << k)) {
			SP[NSP].at = o;
			SP[NSP++].len = lit_len[k];
		} else {
			memcpy(SB + o, L + i, lit_len[k]);
			o += lit_len[k];
		}
		i += lit_len[k];
	}
	memcpy(SB + o, L + i, LL - i);
	SBL = o + LL - i;
}

static int
pcs(unsigned mask)
{
	spool(mask);
	B = SB;
	BL = SBL;
	return imap_parse_command(SB, SBL, SP, NSP, &C);
}

static int
prs(unsigned mask)
{
	spool(mask);
	B = SB;
	BL = SBL;
	return imap_parse_response(SB, SBL, SP, NSP, &R);
}

/* ------------------------------------------------------------------ */

static void
test_simple_commands(void)
{
	CHECK(PC("a1 CAPABILITY\r\n") == 0);
	CHECK(C.kind == IMAP_CMD_CAPABILITY && speq(C.tag, "a1"));
	CHECK(speq(C.name, "CAPABILITY") && C.args.len == 0);
	CHECK(PC("x.2 noop") == 0 && C.kind == IMAP_CMD_NOOP);
	CHECK(PC("A3 LoGoUt\n") == 0 && C.kind == IMAP_CMD_LOGOUT);
	CHECK(PC("t STARTTLS\r\n") == 0 && C.kind == IMAP_CMD_STARTTLS);
	CHECK(PC("t CHECK\r\n") == 0 && C.kind == IMAP_CMD_CHECK);
	CHECK(PC("t CLOSE\r\n") == 0 && C.kind == IMAP_CMD_CLOSE);
	CHECK(PC("t IDLE\r\n") == 0 && C.kind == IMAP_CMD_IDLE);
	CHECK(PC("t NAMESPACE\r\n") == 0 && C.kind == IMAP_CMD_NAMESPACE);
	CHECK(PC("t UNSELECT\r\n") == 0 && C.kind == IMAP_CMD_UNSELECT);
	CHECK(PC("t EXPUNGE\r\n") == 0 && C.kind == IMAP_CMD_EXPUNGE && !C.uid);
	CHECK(PC("DONE\r\n") == 0 && C.kind == IMAP_CMD_DONE && C.tag.len == 0);
	CHECK(PC("done") == 0 && C.kind == IMAP_CMD_DONE);
	CHECK(PC("DONE NOOP\r\n") == 0 && C.kind == IMAP_CMD_NOOP &&
	      speq(C.tag, "DONE"));
	CHECK(PC("t DONE\r\n") == 0 && C.kind == IMAP_CMD_OTHER);
	CHECK(PC("t ENABLE CONDSTORE UTF8=ACCEPT\r\n") == 0 &&
	      C.kind == IMAP_CMD_ENABLE &&
	      speq(C.args, "CONDSTORE UTF8=ACCEPT"));
	CHECK(PC("t COMPRESS DEFLATE\r\n") == 0 &&
	      C.kind == IMAP_CMD_COMPRESS && speq(C.args, "DEFLATE"));
	CHECK(PC("t GETQUOTAROOT INBOX\r\n") == 0 &&
	      C.kind == IMAP_CMD_GETQUOTAROOT);
	CHECK(PC("t GETQUOTA \"\"\r\n") == 0 && C.kind == IMAP_CMD_GETQUOTA);
	CHECK(PC("t XYZZY foo (bar \"baz\") {3}\r\nabc\r\n") == 0 &&
	      C.kind == IMAP_CMD_OTHER && speq(C.name, "XYZZY") && C.nlit == 1);
	CHECK(PC("t NOTIFY SET (selected (MessageNew (UID "
	         "BODY.PEEK[HEADER.FIELDS (From)])))\r\n") == 0 &&
	      C.kind == IMAP_CMD_NOTIFY);
	CHECK(strcmp(imap_cmd_name(IMAP_CMD_FETCH), "FETCH") == 0);
	CHECK(strcmp(imap_cmd_name(IMAP_CMD_OTHER), "OTHER") == 0);
}

static void
test_login(void)
{
	CHECK(PC("a LOGIN joe secret\r\n") == 0 && C.kind == IMAP_CMD_LOGIN);
	CHECK(C.user.kind == IMAP_STR_ATOM && streq(&C.user, "joe"));
	CHECK(PC("a login \"j\\\"oe\" \"se\\\\cr et\"\r\n") == 0);
	CHECK(C.user.kind == IMAP_STR_QUOTED &&
	      (C.user.flags & IMAP_STR_ESCAPED) && streq(&C.user, "j\"oe"));
	{
		char out[16];

		CHECK(imap_str_copy(B, &C.user, out, sizeof(out)) == 4 &&
		      strcmp(out, "j\"oe") == 0);
		CHECK(imap_str_copy(B, &C.user, out, 4) == -1);
	}
	/* The pre-auth literal case: the payload looks like commands. */
	build("a LOGIN \x02 \x02\r\n", P("b LOGOUT\r\nc SELECT xyz\r\nd1234"),
	    P("e NOOP\r\n"));
	CHECK(lit_len[0] == 29);
	CHECK(pc(L, LL) == 0 && C.kind == IMAP_CMD_LOGIN);
	CHECK(C.user.kind == IMAP_STR_LITERAL &&
	      (C.user.flags & IMAP_LIT_NONSYNC) && C.user.len == 29 &&
	      C.user.spool == -1 && C.user.data == lit_at[0]);
	CHECK(C.nlit == 2 && C.lit[1].len == 8 &&
	      (C.lit[1].flags & IMAP_LIT_NONSYNC) &&
	      C.lit[1].off + C.lit[1].mlen == lit_at[1]);
	CHECK(speq(C.user.tok, "{29+}\r\nb LOGOUT\r\nc SELECT xyz\r\nd1234"));
	/* sync literals, spooled user */
	build("a LOGIN \x01 \x01\r\n", P("joe"), P("pw"));
	CHECK(pcs(1) == 0 && C.user.spool == 0 && C.user.len == 3 &&
	      speq(C.user.tok, "{3}\r\n"));
	CHECK(!streq(&C.user, "joe")); /* spooled: not comparable */
	/* errors never quote the password */
	CHECK(PC("a LOGIN joe pa)ss\r\n") == -1 &&
	      cerr("malformed credentials") && strchr(C.err, ')') == NULL);
	CHECK(PC("a LOGIN joe \"pa\\ss\"\r\n") == -1 &&
	      cerr("bad escape in quoted string") &&
	      strstr(C.err, "\\s") == NULL);
	CHECK(PC("a LOGIN joe\r\n") == -1 && cerr("unexpected end of line"));
	CHECK(PC("a LOGIN joe pw extra\r\n") == -1 &&
	      cerr("malformed credentials"));
	CHECK(PC("a LOGIN\r\n") == -1 && cerr("expected arguments"));
}

static void
test_authenticate(void)
{
	CHECK(PC("a AUTHENTICATE PLAIN\r\n") == 0 &&
	      C.kind == IMAP_CMD_AUTHENTICATE && speq(C.mech, "PLAIN") &&
	      !C.has_ir);
	CHECK(PC("a AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n") == 0 &&
	      C.has_ir && speq(C.ir, "dGVzdAB0ZXN0AHRlc3Q="));
	CHECK(PC("a AUTHENTICATE XOAUTH2 =\r\n") == 0 && C.has_ir &&
	      speq(C.ir, "="));
	CHECK(PC("a AUTHENTICATE PLAIN dGV*zdA==\r\n") == -1 &&
	      cerr("malformed credentials") && strchr(C.err, '*') == NULL);
	CHECK(PC("a AUTHENTICATE\r\n") == -1);
}

static void
test_id(void)
{
	CHECK(PC("a ID (\"name\" \"Thunderbird\" \"version\" NIL)\r\n") == 0);
	CHECK(C.kind == IMAP_CMD_ID && C.id.npair == 2 && !C.id.nil);
	CHECK(streq(&C.id.pair[0].key, "NAME") &&
	      streq(&C.id.pair[0].val, "Thunderbird"));
	CHECK(C.id.pair[1].val.kind == IMAP_STR_NIL);
	CHECK(speq(C.id.pair[1].pair, "\"version\" NIL"));
	CHECK(speq(C.id.list, "(\"name\" \"Thunderbird\" \"version\" NIL)"));
	CHECK(PC("a ID NIL\r\n") == 0 && C.id.nil && C.id.npair == 0);
	CHECK(PC("a ID ()\r\n") == 0 && !C.id.nil && C.id.npair == 0);
	/* pre-auth ID with a non-sync literal value holding a command */
	build("a ID (\"name\" \x02 \"x-originating-ip\" \"1.2.3.4\")\r\n",
	    P("x\r\nb LOGIN evil pw\r\nzzz"));
	CHECK(lit_len[0] == 23);
	CHECK(pc(L, LL) == 0 && C.id.npair == 2 &&
	      C.id.pair[0].val.kind == IMAP_STR_LITERAL &&
	      C.id.pair[0].val.len == 23 &&
	      streq(&C.id.pair[1].key, "x-originating-ip") &&
	      streq(&C.id.pair[1].val, "1.2.3.4"));
	CHECK(pcs(1) == 0 && C.id.pair[0].val.spool == 0 &&
	      streq(&C.id.pair[1].val, "1.2.3.4"));
	{
		char big[2048];
		int i, o = snprintf(big, sizeof(big), "a ID (");

		for (i = 0; i < 31; i++)
			o += snprintf(big + o, sizeof(big) - o,
			    "%s\"k%d\" \"v\"", i ? " " : "", i);
		o += snprintf(big + o, sizeof(big) - o, ")\r\n");
		CHECK(pc((const uint8_t *)big, o) == -1 &&
		      cerr("too many ID pairs"));
	}
	CHECK(PC("a ID (name \"x\")\r\n") == -1 && cerr("expected ID field"));
	CHECK(PC("a ID (\"name\")\r\n") == -1 && cerr("expected SP"));
	CHECK(PC("a ID (\"name\" \"x\"\r\n") == -1 &&
	      cerr("unexpected end of line"));
}

static void
test_mailbox_commands(void)
{
	CHECK(PC("a SELECT INBOX\r\n") == 0 && C.kind == IMAP_CMD_SELECT &&
	      streq(&C.mailbox, "inbox"));
	CHECK(PC("a SELECT \"Sent Items\" (CONDSTORE)\r\n") == 0 &&
	      streq(&C.mailbox, "Sent Items"));
	CHECK(PC("a EXAMINE {5+}\r\nDraft\r\n") == 0 &&
	      C.kind == IMAP_CMD_EXAMINE && streq(&C.mailbox, "Draft"));
	CHECK(PC("a CREATE foo (USE (\\Drafts))\r\n") == 0 &&
	      C.kind == IMAP_CMD_CREATE);
	CHECK(PC("a DELETE foo\r\n") == 0 && C.kind == IMAP_CMD_DELETE);
	CHECK(PC("a RENAME foo \"bar baz\"\r\n") == 0 &&
	      C.kind == IMAP_CMD_RENAME && streq(&C.mailbox, "foo") &&
	      streq(&C.mailbox2, "bar baz"));
	CHECK(
	    PC("a SUBSCRIBE ~user/x\r\n") == 0 && streq(&C.mailbox, "~user/x"));
	CHECK(
	    PC("a UNSUBSCRIBE x]y\r\n") == 0 && C.kind == IMAP_CMD_UNSUBSCRIBE);
	CHECK(PC("a LIST \"\" *\r\n") == 0 && C.kind == IMAP_CMD_LIST &&
	      speq(C.args, "\"\" *"));
	CHECK(PC("a LIST (SPECIAL-USE) \"\" % RETURN (CHILDREN)\r\n") == 0);
	CHECK(PC("a LSUB \"\" %\r\n") == 0 && C.kind == IMAP_CMD_LSUB);
	CHECK(PC("a STATUS INBOX (MESSAGES UNSEEN UIDNEXT)\r\n") == 0 &&
	      C.kind == IMAP_CMD_STATUS && streq(&C.mailbox, "INBOX"));
	CHECK(PC("a STATUS INBOX MESSAGES\r\n") == -1 && cerr("expected '('"));
	CHECK(PC("a SELECT\r\n") == -1);
	CHECK(PC("a SELECT abc{5}\r\nhello\r\n") == -1 &&
	      cerr("unexpected character '{' at offset 12 (expected SP)"));
	CHECK(PC("a DELETE a b\r\n") == -1 && cerr("expected end of line"));
	CHECK(
	    PC("a SEARCH CHARSET UTF-8 TEXT {4}\r\n\xc5\xbc\xc3\xb3\r\n") == 0);
	CHECK(C.kind == IMAP_CMD_SEARCH && C.nlit == 1 && C.lit[0].len == 4);
	CHECK(PC("a SEARCH OR (FROM x) (TO y) 1:* \r\n") == 0 &&
	      speq(C.args, "OR (FROM x) (TO y) 1:*"));
	/* fuzz finding: an empty argument list after SP */
	CHECK(PC("a I ") == 0 && C.kind == IMAP_CMD_OTHER && C.args.off == 4 &&
	      C.args.len == 0);
	CHECK(PC("a SEARCH \r\n") == 0 && C.args.len == 0);
	CHECK(PC("a SEARCH TEXT {3}\r\nab \r\n") == 0 &&
	      speq(C.args, "TEXT {3}\r\nab "));
	CHECK(PC("a SEARCH TEXT {3}\r\nab  \r\n") == 0 &&
	      speq(C.args, "TEXT {3}\r\nab "));
}

static void
test_seq_store_copy(void)
{
	CHECK(PC("a STORE 1:3,5 +FLAGS.SILENT (\\Seen \\Deleted)\r\n") == 0);
	CHECK(C.kind == IMAP_CMD_STORE && speq(C.seqset, "1:3,5"));
	CHECK(PC("a COPY 2:* Trash\r\n") == 0 && C.kind == IMAP_CMD_COPY &&
	      speq(C.seqset, "2:*") && streq(&C.mailbox, "Trash"));
	CHECK(PC("a UID MOVE 10:20 \"Archive/2024\"\r\n") == 0 &&
	      C.kind == IMAP_CMD_MOVE && C.uid && speq(C.name, "UID") &&
	      speq(C.subname, "MOVE") && speq(C.seqset, "10:20"));
	CHECK(PC("a UID EXPUNGE 1:5\r\n") == 0 && C.kind == IMAP_CMD_EXPUNGE &&
	      C.uid && speq(C.seqset, "1:5"));
	CHECK(PC("a UID SEARCH UID 1:* NOT DELETED\r\n") == 0 &&
	      C.kind == IMAP_CMD_SEARCH && C.uid);
	CHECK(PC("a UID XFOO 1\r\n") == 0 && C.kind == IMAP_CMD_UID &&
	      speq(C.subname, "XFOO"));
	CHECK(PC("a COPY $ Trash\r\n") == 0 && speq(C.seqset, "$"));
	CHECK(PC("a UID LOGIN a b\r\n") == -1 &&
	      cerr("UID LOGIN is not a UID command"));
	CHECK(PC("a EXPUNGE 1\r\n") == -1 && cerr("expected end of line"));
	CHECK(
	    PC("a COPY 0 Trash\r\n") == -1 && cerr("sequence number is zero"));
	CHECK(PC("a COPY 1: Trash\r\n") == -1 && cerr("offset 9"));
	CHECK(PC("a COPY 4294967296 Trash\r\n") == -1 &&
	      cerr("sequence number out of range"));
	CHECK(PC("a STORE 1a +FLAGS x\r\n") == -1);
}

static void
test_append(void)
{
	struct imap_append_msg *m;
	unsigned mask;
	int ok;

	CHECK(PC("a APPEND INBOX {5}\r\nhello\r\n") == 0);
	CHECK(C.kind == IMAP_CMD_APPEND && C.nmsg == 1 &&
	      streq(&C.mailbox, "INBOX"));
	m = &C.msg[0];
	CHECK(m->data.kind == IMAP_STR_LITERAL && m->data.len == 5 &&
	      m->data.flags == 0 && m->data.spool == -1 &&
	      memcmp(B + m->data.data, "hello", 5) == 0 && !m->has_flags &&
	      m->date.kind == IMAP_STR_NONE);
	/* the payload ends with CRLF and the buffer has no line end */
	CHECK(PC("a APPEND INBOX {7}\r\nhello\r\n") == 0 &&
	      C.msg[0].data.len == 7);
	CHECK(PC("a APPEND Sent (\\Seen \\Draft) \"05-Jan-2024 10:00:00 "
	         "+0100\" {5+}\r\nhello\r\n") == 0);
	m = &C.msg[0];
	CHECK(m->has_flags && speq(m->flags, "(\\Seen \\Draft)") &&
	      speq(m->date.tok, "\"05-Jan-2024 10:00:00 +0100\"") &&
	      (m->data.flags & IMAP_LIT_NONSYNC));
	CHECK(PC("a APPEND Sent () ~{4}\r\n\x00\x01\r\n\r\n") == 0 &&
	      (C.msg[0].data.flags & IMAP_LIT_BINARY) && C.msg[0].has_flags);
	/* MULTIAPPEND, mixed literal kinds, every spool combination */
	build("a APPEND Archive (\\Seen) \x01 \"01-Feb-2024 00:00:00 +0000\" "
	      "\x02 (\\Flagged) \x03\r\n",
	    P("Subject: one\r\n\r\nbody one\r\n"), P("Subject: two\r\n\r\nx"),
	    P("Subject: three\r\n\r\n\x00\x7f"));
	ok = 1;
	for (mask = 0; mask < 8; mask++) {
		if (pcs(mask) != 0 || C.nmsg != 3 || C.nlit != 3 ||
		    (C.msg[0].data.spool >= 0) != !!(mask & 1) ||
		    (C.msg[1].data.spool >= 0) != !!(mask & 2) ||
		    (C.msg[2].data.spool >= 0) != !!(mask & 4) ||
		    !(C.msg[1].data.flags & IMAP_LIT_NONSYNC) ||
		    !(C.msg[2].data.flags & IMAP_LIT_BINARY) ||
		    !C.msg[0].has_flags || C.msg[1].has_flags ||
		    C.msg[1].date.kind != IMAP_STR_QUOTED ||
		    C.msg[2].data.len != 20)
			ok = 0;
	}
	CHECK(ok);
	CHECK(pcs(7) == 0 && C.msg[2].data.spool == 2 &&
	      speq(C.msg[2].msg, "(\\Flagged) ~{20}\r\n") &&
	      C.lit[2].off + C.lit[2].mlen == SP[2].at);
	/* a mailbox literal before the message */
	CHECK(PC("a APPEND {5}\r\nINBOX {2}\r\nhi\r\n") == 0 &&
	      streq(&C.mailbox, "INBOX") && C.nmsg == 1 &&
	      C.msg[0].data.len == 2);
	/* CATENATE: detected, consumed, reported */
	CHECK(PC("a APPEND Drafts CATENATE (URL \"/Drafts;UIDVALIDITY=1/;"
	         "UID=2\" TEXT {3}\r\nabc)\r\n") == 0 &&
	      C.catenate && C.msg[0].catenate &&
	      C.msg[0].data.kind == IMAP_STR_NONE && C.nlit == 1);
	CHECK(PC("a APPEND INBOX UTF8 (~{3}\r\nabc)\r\n") == 0 &&
	      C.msg[0].utf8 && C.msg[0].data.len == 3 &&
	      speq(C.msg[0].ext, "(~{3}\r\nabc)"));
	CHECK(PC("a REPLACE 4 INBOX {2+}\r\nhi\r\n") == 0 &&
	      C.kind == IMAP_CMD_REPLACE && speq(C.seqset, "4") && C.nmsg == 1);
	CHECK(PC("a APPEND INBOX\r\n") == -1 && cerr("unexpected end"));
	CHECK(PC("a APPEND INBOX (\\Seen)\r\n") == -1);
	CHECK(PC("a APPEND INBOX hello\r\n") == -1 &&
	      cerr("expected APPEND literal"));
	CHECK(PC("a APPEND INBOX {10}\r\nhello\r\n") == -1 &&
	      cerr("literal of 10 bytes at offset 15 runs past the end"));
	CHECK(PC("a APPEND INBOX {5}\r\nhello extra\r\n") == -1 &&
	      cerr("expected APPEND literal"));
	CHECK(PC("a APPEND INBOX {5}\r\nhello{3}\r\nabc\r\n") == -1);
}

static void
test_fetch_command(void)
{
	struct imap_fatt *a;

	CHECK(PC("a FETCH 1:* (FLAGS UID RFC822.SIZE)\r\n") == 0);
	CHECK(C.kind == IMAP_CMD_FETCH && !C.uid && C.fetch.natt == 3 &&
	      C.fetch.macro == IMAP_FA_OTHER);
	CHECK(C.fetch.att[0].kind == IMAP_FA_FLAGS &&
	      C.fetch.att[1].kind == IMAP_FA_UID &&
	      C.fetch.att[2].kind == IMAP_FA_RFC822_SIZE &&
	      speq(C.fetch.att[2].name, "RFC822.SIZE"));
	CHECK(speq(C.fetch.atts, "(FLAGS UID RFC822.SIZE)"));
	CHECK(PC("a UID FETCH 1:100 (UID BODY.PEEK[HEADER.FIELDS (From To "
	         "Subject)] BODYSTRUCTURE)\r\n") == 0);
	a = &C.fetch.att[1];
	CHECK(C.uid && C.fetch.natt == 3 && a->kind == IMAP_FA_BODY_SECTION &&
	      (a->flags & IMAP_FA_PEEK) && a->has_section &&
	      a->sect.npart == 0 && a->sect.text == IMAP_SECT_HEADER_FIELDS &&
	      a->sect.nfields == 3 &&
	      speq(a->sect.fields, "(From To Subject)") &&
	      speq(a->name, "BODY.PEEK[HEADER.FIELDS (From To Subject)]"));
	CHECK(C.fetch.att[2].kind == IMAP_FA_BODYSTRUCTURE);
	CHECK(PC("a FETCH 5 BODY[]<0.1024>\r\n") == 0);
	a = &C.fetch.att[0];
	CHECK(C.fetch.natt == 1 && a->kind == IMAP_FA_BODY_SECTION &&
	      !(a->flags & IMAP_FA_PEEK) && a->has_partial && a->origin == 0 &&
	      a->count == 1024 && a->sect.text == IMAP_SECT_NONE &&
	      speq(a->sect.span, "[]") && speq(a->name, "BODY[]<0.1024>"));
	CHECK(PC("a FETCH 5 (BINARY.PEEK[1.2]<100.200> BINARY.SIZE[1] "
	         "BINARY[])\r\n") == 0);
	a = &C.fetch.att[0];
	CHECK(a->kind == IMAP_FA_BINARY && (a->flags & IMAP_FA_PEEK) &&
	      a->sect.npart == 2 && a->sect.part[0] == 1 &&
	      a->sect.part[1] == 2 && speq(a->sect.parts, "1.2") &&
	      a->origin == 100 && a->count == 200);
	CHECK(C.fetch.att[1].kind == IMAP_FA_BINARY_SIZE &&
	      C.fetch.att[1].sect.npart == 1 &&
	      C.fetch.att[2].kind == IMAP_FA_BINARY &&
	      C.fetch.att[2].sect.npart == 0);
	CHECK(PC("a FETCH 1 (BODY[1.2.MIME] BODY[2.HEADER] BODY.PEEK[TEXT] "
	         "body[3.1.text] BODY[HEADER.FIELDS.NOT (Received "
	         "\"X-Spam\")] BODY[4.2])\r\n") == 0 &&
	      C.fetch.natt == 6);
	CHECK(C.fetch.att[0].sect.text == IMAP_SECT_MIME &&
	      C.fetch.att[0].sect.npart == 2);
	CHECK(C.fetch.att[1].sect.text == IMAP_SECT_HEADER &&
	      C.fetch.att[1].sect.part[0] == 2);
	CHECK(C.fetch.att[2].sect.text == IMAP_SECT_TEXT &&
	      (C.fetch.att[2].flags & IMAP_FA_PEEK));
	CHECK(C.fetch.att[3].sect.text == IMAP_SECT_TEXT &&
	      C.fetch.att[3].sect.npart == 2);
	CHECK(C.fetch.att[4].sect.text == IMAP_SECT_HEADER_FIELDS_NOT &&
	      C.fetch.att[4].sect.nfields == 2);
	CHECK(C.fetch.att[5].sect.text == IMAP_SECT_NONE &&
	      C.fetch.att[5].sect.npart == 2);
	CHECK(PC("a FETCH 1 ALL\r\n") == 0 && C.fetch.macro == IMAP_FA_ALL &&
	      C.fetch.natt == 4 && C.fetch.att[3].kind == IMAP_FA_ENVELOPE &&
	      (C.fetch.att[0].flags & IMAP_FA_MACRO) &&
	      speq(C.fetch.att[0].name, "ALL"));
	CHECK(PC("a FETCH 1 fast\r\n") == 0 && C.fetch.macro == IMAP_FA_FAST &&
	      C.fetch.natt == 3);
	CHECK(PC("a FETCH 1 FULL (CHANGEDSINCE 5)\r\n") == 0 &&
	      C.fetch.macro == IMAP_FA_FULL && C.fetch.natt == 5 &&
	      C.fetch.att[4].kind == IMAP_FA_BODY &&
	      speq(C.fetch.modifiers, "(CHANGEDSINCE 5)"));
	CHECK(PC("a UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 12345 "
	         "VANISHED)\r\n") == 0 &&
	      speq(C.fetch.modifiers, "(CHANGEDSINCE 12345 VANISHED)"));
	CHECK(
	    PC("a FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT ENVELOPE "
	       "INTERNALDATE MODSEQ BODY SAVEDATE EMAILID THREADID)\r\n") == 0);
	CHECK(C.fetch.natt == 10 && C.fetch.att[0].kind == IMAP_FA_RFC822 &&
	      C.fetch.att[1].kind == IMAP_FA_RFC822_HEADER &&
	      C.fetch.att[2].kind == IMAP_FA_RFC822_TEXT &&
	      C.fetch.att[5].kind == IMAP_FA_MODSEQ &&
	      C.fetch.att[6].kind == IMAP_FA_BODY &&
	      C.fetch.att[9].kind == IMAP_FA_THREADID);
	CHECK(PC("a FETCH 1 (UID PREVIEW (LAZY) X-GM-LABELS)\r\n") == 0 &&
	      C.fetch.natt == 3 && C.fetch.att[1].kind == IMAP_FA_PREVIEW &&
	      speq(C.fetch.att[1].args, "(LAZY)") &&
	      C.fetch.att[2].kind == IMAP_FA_OTHER &&
	      speq(C.fetch.att[2].name, "X-GM-LABELS"));
	CHECK(strcmp(imap_fa_name(IMAP_FA_BINARY_SIZE), "BINARY.SIZE") == 0);
	CHECK(PC("a FETCH 1 (X-FOO[a b.c] UID)\r\n") == 0 &&
	      C.fetch.att[0].kind == IMAP_FA_OTHER &&
	      speq(C.fetch.att[0].name, "X-FOO[a b.c]"));
	/* fuzz finding: CTLs inside an unknown attribute's brackets */
	CHECK(PC("a FETCH 1 (X[HEADER\0])\r\n") == -1 && cerr("byte 0x00"));
	CHECK(PC("a FETCH 1 (X[\"a\"])\r\n") == -1);
	/* malformed */
	CHECK(PC("a FETCH 1 BODY.PEEK\r\n") == -1 && cerr("expected '['"));
	CHECK(PC("a FETCH 1 BODY[0]\r\n") == -1 &&
	      cerr("unexpected character '0' at offset 15"));
	CHECK(PC("a FETCH 1 BODY[1.MIMEX]\r\n") == -1 &&
	      cerr("unknown section text"));
	CHECK(PC("a FETCH 1 BODY[MIME]\r\n") == -1 &&
	      cerr("unknown section text"));
	CHECK(PC("a FETCH 1 BODY[]<0.0>\r\n") == -1 &&
	      cerr("partial count is zero"));
	CHECK(PC("a FETCH 1 BODY[]<5>\r\n") == -1 && cerr("expected '.'"));
	CHECK(PC("a FETCH 1 BINARY[TEXT]\r\n") == -1 &&
	      cerr("expected part number"));
	CHECK(PC("a FETCH 1 BINARY[1.MIME]\r\n") == -1 && cerr("expected ']'"));
	CHECK(PC("a FETCH 1 UID[1]\r\n") == -1);
	CHECK(PC("a FETCH 1 (ALL)\r\n") == -1 &&
	      cerr("fetch macro ALL not allowed"));
	CHECK(PC("a FETCH 1 (UID FLAGS\r\n") == -1 &&
	      cerr("unexpected end of line"));
	CHECK(PC("a FETCH 1 (UID  FLAGS)\r\n") == -1 && cerr("unexpected SP"));
	CHECK(PC("a FETCH 1 BODY[HEADER.FIELDS ()]\r\n") == -1);
	CHECK(PC("a FETCH 1 BODY[HEADER.FIELDS (From]\r\n") == -1);
	CHECK(PC("a FETCH 1 RFC822.SIZE<0.5>\r\n") == -1);
	CHECK(
	    PC("a FETCH 1 BODY[1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17."
	       "18.19.20.21.22.23.24.25.26.27.28.29.30.31.32.33]\r\n") == -1 &&
	    cerr("section part path deeper than 32"));
	CHECK(PC("a FETCH 1 (UID) CHANGEDSINCE\r\n") == -1);
	{
		char big[4096];
		int i, o = snprintf(big, sizeof(big), "a FETCH 1 (");

		for (i = 0; i < 65; i++)
			o += snprintf(big + o, sizeof(big) - o, "%sBODY[%d]",
			    i ? " " : "", i + 1);
		o += snprintf(big + o, sizeof(big) - o, ")\r\n");
		CHECK(pc((const uint8_t *)big, o) == -1 &&
		      cerr("too many fetch attributes (max 64)"));
	}
}

static void
test_command_errors(void)
{
	char *big;
	int i, o;

	CHECK(PC("\r\n") == -1 && cerr("empty line"));
	CHECK(PC("") == -1 && cerr("empty line"));
	CHECK(PC("a\r\n") == -1 && cerr("unexpected end of line at offset 1"));
	CHECK(PC("+ NOOP\r\n") == -1 && cerr("expected tag"));
	CHECK(PC("a  NOOP\r\n") == -1 && cerr("expected command name"));
	CHECK(PC("a NOOP x\r\n") == -1 && cerr("expected end of line"));
	CHECK(PC("a NOOP\r\nb NOOP\r\n") == -1);
	CHECK(PC("a NO\rOP\r\n") == -1 && cerr("byte 0x0d"));
	CHECK(PC("a SELECT \"abc\r\n") == -1 &&
	      cerr("unterminated quoted string at offset 9"));
	CHECK(PC("a SELECT \"a\\bc\"\r\n") == -1 && cerr("bad escape '\\b'"));
	CHECK(PC("a SELECT \"a\0c\"\r\n") == -1 && cerr("NUL in quoted"));
	CHECK(PC("a STORE 1 FLAGS (\\Seen\r\n") == -1 &&
	      cerr("unterminated list at offset 16"));
	CHECK(PC("a STORE 1 FLAGS \\Seen)\r\n") == -1 &&
	      cerr("unexpected character ')'"));
	CHECK(PC("a SEARCH \"a\"\"b\"\r\n") == -1 && cerr("expected SP"));
	CHECK(PC("a SEARCH \"a\"{1}\r\nb\r\n") == -1 && cerr("expected SP"));
	CHECK(PC("a LOGIN {5\r\n") == -1);
	CHECK(PC("a SELECT {5\r\n") == -1 && cerr("expected '}'"));
	CHECK(PC("a SELECT {}\r\n") == -1 && cerr("expected literal size"));
	CHECK(PC("a SELECT {5}x\r\n") == -1 &&
	      cerr("literal marker at offset 9 not followed by CRLF"));
	CHECK(PC("a SELECT {5} \r\nhello\r\n") == -1);
	CHECK(PC("a SELECT {-5}\r\n") == -1);
	CHECK(PC("a SELECT {5++}\r\nhello\r\n") == -1);
	CHECK(PC("a SELECT {123456789012345678901}\r\n") == -1 &&
	      cerr("literal size out of range"));
	CHECK(PC("a SELECT {18446744073709551616}\r\n") == -1 &&
	      cerr("literal size out of range"));
	CHECK(PC("a SELECT {18446744073709551615}\r\nx\r\n") == -1 &&
	      cerr("runs past the end"));
	CHECK(PC("a SELECT ~{3}\r\nabc\r\n") == -1 &&
	      cerr("unexpected character '{'"));
	/* bare LF after a marker is what the framer accepts too */
	CHECK(PC("a SELECT {3}\nabc\r\n") == 0 && streq(&C.mailbox, "abc"));
	/* over-deep nesting and too many items */
	big = malloc(1 << 16);
	o = snprintf(big, 64, "a SEARCH ");
	for (i = 0; i < IMAP_MAX_DEPTH + 1; i++)
		big[o++] = '(';
	for (i = 0; i < IMAP_MAX_DEPTH + 1; i++)
		big[o++] = ')';
	CHECK(pc((uint8_t *)big, o) == -1 && cerr("nesting deeper than 256"));
	o = snprintf(big, 64, "a SEARCH ");
	for (i = 0; i < IMAP_MAX_DEPTH; i++)
		big[o++] = '(';
	big[o++] = 'x';
	for (i = 0; i < IMAP_MAX_DEPTH; i++)
		big[o++] = ')';
	CHECK(pc((uint8_t *)big, o) == 0);
	o = snprintf(big, 64, "a STORE 1 FLAGS (");
	for (i = 0; i < IMAP_MAX_ITEMS + 1; i++)
		o += snprintf(big + o, 8, "%sx", i ? " " : "");
	big[o++] = ')';
	CHECK(pc((uint8_t *)big, o) == -1 &&
	      cerr("too many items in a list (max 4096)"));
	o = snprintf(big, 64, "a STORE 1 FLAGS (");
	for (i = 0; i < IMAP_MAX_ITEMS; i++)
		o += snprintf(big + o, 8, "%sx", i ? " " : "");
	big[o++] = ')';
	CHECK(pc((uint8_t *)big, o) == 0);
	free(big);
}

static void
test_spool_table(void)
{
	struct imap_spool sp[2];
	static const char line[] = "a LOGIN {3}\r\n {2}\r\n\r\n";
	static const char two[] = "a LOGIN {3}\r\n {2}\r\n";

	/* both spooled: the buffer continues after each marker */
	sp[0].at = 13;
	sp[0].len = 3;
	sp[1].at = 19;
	sp[1].len = 2;
	B = (const uint8_t *)line;
	BL = sizeof(line) - 1;
	CHECK(imap_parse_command(S(line), sp, 2, &C) == 0 &&
	      C.user.spool == 0 && C.nlit == 2 && C.lit[1].spool == 1);
	CHECK(imap_parse_command(S(two), sp, 2, &C) == 0);
	/* length mismatch */
	sp[1].len = 3;
	CHECK(imap_parse_command(S(line), sp, 2, &C) == -1 &&
	      cerr("spool entry 1 has 3 bytes, literal at offset 14 says 2"));
	/* not at a literal */
	sp[1].len = 2;
	sp[1].at = 18;
	CHECK(imap_parse_command(S(line), sp, 2, &C) == -1 &&
	      cerr("spool entry 1 (offset 18) is not at a literal"));
	/* out of order */
	sp[0].at = 19;
	sp[0].len = 2;
	sp[1].at = 13;
	sp[1].len = 3;
	CHECK(imap_parse_command(S(line), sp, 2, &C) == -1);
	/* left over: the line has no literal there */
	sp[0].at = 5;
	sp[0].len = 1;
	CHECK(imap_parse_command(S("a NOOP\r\n"), sp, 1, &C) == -1 &&
	      cerr("spool entry 0 (offset 5) is not at a literal"));
	/* left over after all literals */
	sp[0].at = 13;
	sp[0].len = 3;
	sp[1].at = 40;
	sp[1].len = 1;
	CHECK(imap_parse_command(S(line), sp, 2, &C) == -1);
	/* the second literal inline: its payload is the final CRLF, so
	 * the line has no line end of its own (allowed) */
	sp[0].at = 13;
	sp[0].len = 3;
	CHECK(imap_parse_command(S(line), sp, 1, &C) == 0 &&
	      C.lit[1].spool == -1 && C.lit[1].len == 2);
	/* without it, the inline literal runs past the end */
	CHECK(imap_parse_command(S(two), sp, 1, &C) == -1 &&
	      cerr("runs past the end"));
}

/* ------------------------------------------------------------------ */
/* Responses */

static void
test_status_responses(void)
{
	CHECK(PR("+ idling\r\n") == 0 && R.kind == IMAP_RESP_CONT &&
	      speq(R.text, "idling"));
	CHECK(PR("+\r\n") == 0 && R.kind == IMAP_RESP_CONT && R.text.len == 0);
	CHECK(PR("+ \r\n") == 0 && R.kind == IMAP_RESP_CONT);
	CHECK(PR("+ dGVzdA==\r\n") == 0 && speq(R.text, "dGVzdA=="));
	CHECK(PR("+ [ALERT] go ahead\r\n") == 0 &&
	      R.code.kind == IMAP_CODE_ALERT && speq(R.text, "go ahead"));
	CHECK(PR("a1 OK [CAPABILITY IMAP4rev1 SASL-IR ID] Logged in\r\n") == 0);
	CHECK(R.kind == IMAP_RESP_TAGGED && R.status == IMAP_ST_OK &&
	      speq(R.tag, "a1") && R.code.kind == IMAP_CODE_CAPABILITY &&
	      R.ncap == 3 && speq(R.cap[1], "SASL-IR") &&
	      speq(R.caps, "IMAP4rev1 SASL-IR ID") &&
	      speq(R.code.span, "[CAPABILITY IMAP4rev1 SASL-IR ID]") &&
	      speq(R.text, "Logged in"));
	CHECK(PR("a2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n") ==
	          0 &&
	      R.status == IMAP_ST_NO && R.code.kind == IMAP_CODE_OTHER &&
	      speq(R.code.name, "AUTHENTICATIONFAILED"));
	CHECK(PR("a3 BAD Error in IMAP command: Unknown\r\n") == 0 &&
	      R.status == IMAP_ST_BAD && R.code.kind == IMAP_CODE_NONE);
	CHECK(PR("a4 ok done\r\n") == 0 && R.status == IMAP_ST_OK);
	CHECK(PR("a5 OK\r\n") == 0 && R.text.len == 0);
	CHECK(PR("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID "
	         "ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) "
	         "ready.\r\n") == 0);
	CHECK(R.kind == IMAP_RESP_COND && R.status == IMAP_ST_OK &&
	      R.ncap == 9 && speq(R.cap[8], "AUTH=PLAIN") &&
	      speq(R.text, "Dovecot (Debian) ready."));
	CHECK(PR("* PREAUTH [ALERT] hi\r\n") == 0 &&
	      R.status == IMAP_ST_PREAUTH && R.code.kind == IMAP_CODE_ALERT);
	CHECK(PR("* BYE Logging out\r\n") == 0 && R.status == IMAP_ST_BYE);
	CHECK(PR("* OK [UIDVALIDITY 1700000000] UIDs valid\r\n") == 0 &&
	      R.code.kind == IMAP_CODE_UIDVALIDITY && R.code.has_num &&
	      R.code.num == 1700000000);
	CHECK(PR("* OK [UIDNEXT 5] Predicted next UID\r\n") == 0 &&
	      R.code.num == 5);
	CHECK(PR("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\*)] Flags "
	         "permitted.\r\n") == 0 &&
	      R.code.kind == IMAP_CODE_PERMANENTFLAGS && !R.code.has_num &&
	      speq(R.code.args, "(\\Answered \\Flagged \\*)"));
	CHECK(PR("* OK [HIGHESTMODSEQ 18446744073709551615] x\r\n") == 0 &&
	      R.code.has_num && R.code.num == UINT64_MAX);
	CHECK(PR("* OK [UIDNEXT 99999999999999999999] x\r\n") == 0 &&
	      !R.code.has_num);
	CHECK(PR("* OK [READ-WRITE] Select completed\r\n") == 0 &&
	      R.code.kind == IMAP_CODE_READ_WRITE);
	CHECK(PR("* NO [TRYCREATE] Mailbox doesn't exist\r\n") == 0 &&
	      R.code.kind == IMAP_CODE_TRYCREATE);
	CHECK(PR("a NO [TOOBIG] too big\r\n") == 0 &&
	      R.code.kind == IMAP_CODE_TOOBIG);
	CHECK(PR("a NO [REFERRAL imap://u@h/] go\r\n") == 0 &&
	      R.code.kind == IMAP_CODE_REFERRAL);
	CHECK(PR("a OK [APPENDUID 38505 3955] APPEND completed\r\n") == 0 &&
	      R.code.kind == IMAP_CODE_APPENDUID &&
	      speq(R.code.args, "38505 3955") && !R.code.has_num);
	/* malformed */
	CHECK(PR("a1 BYE x\r\n") == -1 && rerr("expected OK, NO or BAD"));
	CHECK(PR("a1 FOO x\r\n") == -1);
	CHECK(PR("* OK [ALERT\r\n") == -1 && rerr("expected ']'"));
	CHECK(PR("* OK [] x\r\n") == -1 && rerr("expected response code"));
	CHECK(PR("* OK [ALERT]x\r\n") == -1 && rerr("expected SP"));
	CHECK(PR("* OK hello\rworld\r\n") == -1 && rerr("byte 0x0d"));
	CHECK(PR("* OK hello {5}\r\nworld\r\n") == -1);
	/* fuzz finding: "{0}" before the line end is a marker, not text */
	CHECK(PR("+ CE{0}\n") == -1 && rerr("literal marker at the end"));
	CHECK(PR("a OK done {12+}\r\n") == -1);
	CHECK(PR("a OK done {12} \r\n") == 0);
	CHECK(PR("a OK {x}\r\n") == 0 && PR("a OK }\r\n") == 0 &&
	      PR("a OK {}\r\n") == 0);
	CHECK(PR("*OK\r\n") == -1 && rerr("expected SP"));
	CHECK(PR("* \r\n") == -1);
	CHECK(PR("\r\n") == -1 && rerr("empty line"));
}

static void
test_data_responses(void)
{
	CHECK(PR("* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID "
	         "ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
	         "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE "
	         "UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED "
	         "I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
	         "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY "
	         "PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE COMPRESS=DEFLATE "
	         "NOTIFY SPECIAL-USE QUOTA\r\n") == 0);
	CHECK(R.kind == IMAP_RESP_CAPABILITY && R.ncap == 40 &&
	      speq(R.cap[0], "IMAP4rev1") && speq(R.cap[39], "QUOTA") &&
	      R.caps.off == 13 &&
	      speq(R.args, "IMAP4rev1 LITERAL+ SASL-IR "
	                   "LOGIN-REFERRALS ID ENABLE IDLE SORT "
	                   "SORT=DISPLAY THREAD=REFERENCES "
	                   "THREAD=REFS THREAD=ORDEREDSUBJECT "
	                   "MULTIAPPEND URL-PARTIAL CATENATE "
	                   "UNSELECT CHILDREN NAMESPACE UIDPLUS "
	                   "LIST-EXTENDED I18NLEVEL=1 CONDSTORE "
	                   "QRESYNC ESEARCH ESORT SEARCHRES "
	                   "WITHIN CONTEXT=SEARCH LIST-STATUS "
	                   "BINARY MOVE SNIPPET=FUZZY "
	                   "PREVIEW=FUZZY PREVIEW STATUS=SIZE "
	                   "SAVEDATE COMPRESS=DEFLATE NOTIFY "
	                   "SPECIAL-USE QUOTA"));
	CHECK(PR("* CAPABILITY IMAP4 IMAP4rev1 \r\n") == 0 && R.ncap == 2 &&
	      speq(R.caps, "IMAP4 IMAP4rev1"));
	CHECK(PR("* CAPABILITY\r\n") == -1);
	CHECK(PR("* CAPABILITY IMAP4rev1 (x)\r\n") == -1);
	CHECK(PR("* ID (\"name\" \"Dovecot\" \"version\" {5}\r\n2.3.x)\r\n") ==
	          0 &&
	      R.kind == IMAP_RESP_ID && R.id.npair == 2 &&
	      R.id.pair[1].val.kind == IMAP_STR_LITERAL);
	CHECK(PR("* ID NIL\r\n") == 0 && R.id.nil);
	CHECK(PR("* 23 EXISTS\r\n") == 0 && R.kind == IMAP_RESP_EXISTS &&
	      R.num == 23 && R.has_num);
	CHECK(PR("* 0 RECENT\r\n") == 0 && R.kind == IMAP_RESP_RECENT &&
	      R.num == 0);
	CHECK(PR("* 3 expunge\r\n") == 0 && R.kind == IMAP_RESP_EXPUNGE &&
	      R.num == 3);
	CHECK(PR("* 0 EXPUNGE\r\n") == -1 && rerr("message number is zero"));
	CHECK(PR("* 4294967296 EXISTS\r\n") == -1 &&
	      rerr("message number out of range"));
	CHECK(PR("* 5 EXISTS x\r\n") == -1);
	CHECK(PR("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft "
	         "$Forwarded)\r\n") == 0 &&
	      R.kind == IMAP_RESP_FLAGS);
	CHECK(PR("* LIST (\\HasNoChildren) \"/\" INBOX\r\n") == 0 &&
	      R.kind == IMAP_RESP_LIST &&
	      speq(R.args, "(\\HasNoChildren) \"/\" INBOX"));
	CHECK(PR("* LIST () \"/\" {5}\r\nA  CD\r\n") == 0 && R.nlit == 1);
	CHECK(PR("* LSUB () \".\" foo\r\n") == 0 && R.kind == IMAP_RESP_LSUB);
	CHECK(PR("* STATUS INBOX (MESSAGES 3 UNSEEN 1)\r\n") == 0 &&
	      R.kind == IMAP_RESP_STATUS);
	CHECK(PR("* SEARCH 1 2 3 5 8 13\r\n") == 0 &&
	      R.kind == IMAP_RESP_SEARCH && speq(R.args, "1 2 3 5 8 13"));
	CHECK(PR("* SEARCH\r\n") == 0 && R.kind == IMAP_RESP_SEARCH &&
	      R.args.len == 0);
	CHECK(PR("* ESEARCH (TAG \"a\") UID ALL 1:3,5\r\n") == 0 &&
	      R.kind == IMAP_RESP_ESEARCH);
	CHECK(
	    PR("* ENABLED CONDSTORE\r\n") == 0 && R.kind == IMAP_RESP_ENABLED);
	CHECK(PR("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n") == 0 &&
	      R.kind == IMAP_RESP_NAMESPACE);
	CHECK(PR("* VANISHED (EARLIER) 1:3\r\n") == 0 &&
	      R.kind == IMAP_RESP_VANISHED);
	CHECK(PR("* THREAD (1 2)(3 (4)(5))\r\n") == 0 &&
	      R.kind == IMAP_RESP_OTHER && speq(R.name, "THREAD"));
	/* fuzz finding: a literal's last payload byte is no ')' */
	CHECK(PR("* THREAD {1}\r\n)(1)\r\n") == -1 && rerr("expected SP"));
	CHECK(PC("c XAUTH {1}\n)(\\Seen)") == -1 && cerr("expected SP"));
	CHECK(PC("c XAUTH (a)(\\Seen) {1}\n) (x)") == 0);
	CHECK(PR("* 3 XFOO bar\r\n") == 0 && R.kind == IMAP_RESP_OTHER &&
	      R.num == 3 && speq(R.name, "XFOO") && speq(R.args, "bar"));
	CHECK(PR("* QUOTA \"\" (STORAGE 10 512)\r\n") == 0);
	CHECK(PR("* LIST (\\Noselect) \"/\" \"a\r\n") == -1 &&
	      rerr("unterminated quoted string"));
	CHECK(PR("* LIST (\\Noselect \"/\" a\r\n") == -1 &&
	      rerr("unterminated list"));
	CHECK(PR("* LIST () \"/\" {5+}\r\nhello\r\n") == -1 &&
	      rerr("non-synchronizing literal from server"));
}

/* A Dovecot FETCH with literals inside ENVELOPE of an attached
 * message/rfc822 and the body itself; "\x01" marks literals. */
static const char dovecot_tpl[] =
    "* 2 FETCH (UID 12 RFC822.SIZE 3021 FLAGS (\\Seen $Junk) "
    "BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
    "NIL \"7bit\" 35 2 NIL NIL NIL NIL)(\"message\" \"rfc822\" (\"name\" "
    "\"fwd.eml\") NIL NIL \"7bit\" 1822 (\"Tue, 2 Jan 2024 10:00:00 "
    "+0100\" \x01 ((\x01 NIL \"joerg\" \"example.org\")) ((\x01 NIL "
    "\"joerg\" \"example.org\")) ((\x01 NIL \"joerg\" \"example.org\")) "
    "((NIL NIL \"anna\" \"example.com\")) NIL NIL NIL "
    "\"<abc@example.org>\") (\"text\" \"plain\" (\"charset\" \"utf-8\") "
    "NIL NIL \"8bit\" 20 1 NIL NIL NIL NIL) 40 NIL (\"attachment\" "
    "(\"filename\" \"fwd.eml\")) NIL NIL) \"mixed\" (\"boundary\" "
    "\"xyz\") NIL NIL NIL) BODY[] \x01)\r\n";

static void
dovecot_build(void)
{
	static const char subj[] = "Gr\xc3\xbc\xc3\x9f"
	                           "e aus K\xc3\xb6"
	                           "ln";
	static const char name[] = "J\xc3\xb6"
	                           "rg";
	static const char msg[] = "From: a@b.c\r\nSubject: x\r\n\r\n"
	                          "* 3 FETCH (BODY[] {5}\r\nevil)\r\n"
	                          "a1 OK done\r\n";

	build(dovecot_tpl, P(subj), P(name), P(name), P(name), P(msg));
}

static void
test_fetch_dovecot(void)
{
	struct imap_item *it;
	struct imap_span cut;
	unsigned mask;
	int ok;

	dovecot_build();
	CHECK(lit_len[0] == 17 && lit_len[1] == 5);
	CHECK(pr(L, LL) == 0);
	CHECK(R.kind == IMAP_RESP_FETCH && R.num == 2 && R.fetch.nitem == 5);
	it = R.fetch.item;
	CHECK(it[0].att.kind == IMAP_FA_UID && it[0].has_num &&
	      it[0].num == 12 && speq(it[0].item, "UID 12") &&
	      speq(it[0].att.name, "UID") && speq(it[0].val, "12"));
	CHECK(it[1].att.kind == IMAP_FA_RFC822_SIZE && it[1].num == 3021);
	CHECK(it[2].att.kind == IMAP_FA_FLAGS &&
	      speq(it[2].val, "(\\Seen $Junk)"));
	CHECK(it[3].att.kind == IMAP_FA_BODYSTRUCTURE &&
	      B[it[3].val.off] == '(' && it[3].val.len > 39 &&
	      memcmp(B + it[3].val.off + it[3].val.len - 39,
	          "\"mixed\" (\"boundary\" \"xyz\") NIL NIL NIL)", 39) == 0 &&
	      it[3].item.off == it[3].att.name.off &&
	      it[3].val.off == it[3].item.off + 14);
	CHECK(it[3].nspool == 0 && it[3].str.kind == IMAP_STR_NONE);
	CHECK(it[4].att.kind == IMAP_FA_BODY_SECTION && it[4].att.has_section &&
	      it[4].att.sect.npart == 0 && !it[4].att.has_partial &&
	      speq(it[4].att.name, "BODY[]"));
	CHECK(it[4].str.kind == IMAP_STR_LITERAL && it[4].str.spool == -1 &&
	      it[4].str.len == lit_len[4] && it[4].str.data == lit_at[4] &&
	      it[4].item.off + it[4].item.len == lit_at[4] + lit_len[4]);
	CHECK(R.fetch.list.off == 10 &&
	      R.fetch.list.off + R.fetch.list.len == LL - 2 &&
	      speq(R.name, "FETCH") && R.args.off == 10);
	CHECK(R.nlit == 5 && !R.lit_overflow);
	/* every combination of spooled literals parses the same way */
	ok = 1;
	for (mask = 0; mask < 32; mask++) {
		if (prs(mask) != 0 || R.fetch.nitem != 5 ||
		    R.fetch.item[3].nspool !=
		        (unsigned)__builtin_popcount(mask & 15) ||
		    (R.fetch.item[4].str.spool >= 0) != !!(mask & 16) ||
		    R.fetch.item[4].nspool != !!(mask & 16) ||
		    R.fetch.item[1].num != 3021) {
			ok = 0;
			fprintf(stderr, "mask %u: %s\n", mask, R.err);
		}
	}
	CHECK(ok);
	CHECK(prs(16) == 0 && R.fetch.item[4].str.spool == 0 &&
	      R.fetch.item[4].spool_first == 0 &&
	      speq(R.fetch.item[4].val, "{69}\r\n") &&
	      speq(R.fetch.item[4].item, "BODY[] {69}\r\n"));
	CHECK(prs(2 | 16) == 0 && R.fetch.item[3].spool_first == 0 &&
	      R.fetch.item[3].nspool == 1 && R.fetch.item[4].spool_first == 1);
	/* cutting items leaves a well-formed line */
	{
		static uint8_t out[4096];
		struct imap_spool sp1;
		unsigned i;
		size_t n;

		prs(16);
		ok = 1;
		for (i = 0; i < 5; i++) {
			prs(16);
			if (imap_item_cut(&R, i, &cut) != 0) {
				ok = 0;
				continue;
			}
			n = 0;
			memcpy(out, SB, cut.off);
			n = cut.off;
			memcpy(out + n, SB + cut.off + cut.len,
			    SBL - cut.off - cut.len);
			n += SBL - cut.off - cut.len;
			/* the spooled BODY[] moves left, or goes */
			sp1 = SP[0];
			sp1.at -= cut.len;
			B = out;
			BL = n;
			if (imap_parse_response(
			        out, n, &sp1, i == 4 ? 0 : 1, &R) != 0 ||
			    R.fetch.nitem != 4) {
				ok = 0;
				fprintf(stderr, "cut %u: %s\n", i, R.err);
			}
		}
		CHECK(ok);
		prs(0);
		CHECK(imap_item_cut(&R, 0, &cut) == 0 && speq(cut, "UID 12 "));
		CHECK(imap_item_cut(&R, 1, &cut) == 0 &&
		      speq(cut, " RFC822.SIZE 3021"));
		CHECK(imap_item_cut(&R, 5, &cut) == -1);
	}
}

static void
test_fetch_items(void)
{
	struct imap_item *it;

	CHECK(PR("* 1 FETCH (UID 5 FLAGS (\\Seen) INTERNALDATE "
	         "\"17-Jul-1996 02:44:25 -0700\" MODSEQ (12345))\r\n") == 0);
	it = R.fetch.item;
	CHECK(R.fetch.nitem == 4 && it[2].att.kind == IMAP_FA_INTERNALDATE &&
	      it[2].str.kind == IMAP_STR_QUOTED &&
	      streq(&it[2].str, "17-Jul-1996 02:44:25 -0700") &&
	      it[3].att.kind == IMAP_FA_MODSEQ && it[3].num == 12345 &&
	      speq(it[3].val, "(12345)"));
	CHECK(PR("* 4 FETCH (UID 14 BODY[]<0> {10}\r\n0123456789)\r\n") == 0);
	it = &R.fetch.item[1];
	CHECK(it->att.has_partial && it->att.origin == 0 &&
	      speq(it->att.name, "BODY[]<0>") && it->str.len == 10 &&
	      speq(it->val, "{10}\r\n0123456789"));
	CHECK(PR("* 4 FETCH (BODY[]<1048576> \"\")\r\n") == 0 &&
	      R.fetch.item[0].att.origin == 1048576 &&
	      R.fetch.item[0].str.len == 0);
	CHECK(PR("* 3 FETCH (UID 13 BINARY[2] ~{6}\r\n\x00\x01\r\n\xff\x7f "
	         "BINARY.SIZE[2] 6)\r\n") == 0);
	it = R.fetch.item;
	CHECK(R.fetch.nitem == 3 && it[1].att.kind == IMAP_FA_BINARY &&
	      it[1].att.sect.npart == 1 && it[1].att.sect.part[0] == 2 &&
	      (it[1].str.flags & IMAP_LIT_BINARY) && it[1].str.len == 6 &&
	      it[2].att.kind == IMAP_FA_BINARY_SIZE && it[2].num == 6);
	CHECK(PR("* 3 FETCH (BINARY[1]<0> ~{1}\r\nx)\r\n") == 0 &&
	      R.fetch.item[0].att.has_partial);
	CHECK(PR("* 3 FETCH (BINARY[1] NIL)\r\n") == 0 &&
	      R.fetch.item[0].str.kind == IMAP_STR_NIL);
	CHECK(PR("* 5 FETCH (UID 15 BODY[HEADER.FIELDS (FROM TO)] {26}\r\n"
	         "From: a@b.c\r\nTo: d@e.f\r\n\r\n)\r\n") == 0);
	it = &R.fetch.item[1];
	CHECK(it->att.sect.text == IMAP_SECT_HEADER_FIELDS &&
	      it->att.sect.nfields == 2 &&
	      speq(it->att.name, "BODY[HEADER.FIELDS (FROM TO)]") &&
	      it->str.len == 26);
	CHECK(PR("* 6 FETCH (BODY[1] NIL BODY[1.MIME] \"Content-Type: "
	         "text/plain\r\n\r\n\")\r\n") == -1);
	CHECK(PR("* 6 FETCH (BODY[1] NIL BODY[2.MIME] {4}\r\nab\r\n BODY[2] "
	         "\"x\\\"y\")\r\n") == 0 &&
	      R.fetch.nitem == 3 && R.fetch.item[0].str.kind == IMAP_STR_NIL &&
	      R.fetch.item[1].att.sect.text == IMAP_SECT_MIME &&
	      streq(&R.fetch.item[2].str, "x\"y"));
	CHECK(PR("* 7 FETCH (RFC822 {3}\r\nabc RFC822.HEADER {1}\r\na "
	         "RFC822.TEXT NIL)\r\n") == 0 &&
	      R.fetch.item[0].att.kind == IMAP_FA_RFC822 &&
	      R.fetch.item[1].att.kind == IMAP_FA_RFC822_HEADER &&
	      R.fetch.item[2].att.kind == IMAP_FA_RFC822_TEXT);
	CHECK(PR("* 8 FETCH (ENVELOPE (\"date\" \"subj\" NIL NIL NIL NIL NIL "
	         "NIL NIL NIL) BODY (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 "
	         "1))\r\n") == 0 &&
	      R.fetch.item[0].att.kind == IMAP_FA_ENVELOPE &&
	      R.fetch.item[1].att.kind == IMAP_FA_BODY);
	CHECK(PR("* 9 FETCH (X-GM-MSGID 1278455344230334865 X-GM-LABELS "
	         "(\\Inbox \"x y\") EMAILID (M6d99ac3275bb4e) PREVIEW "
	         "\"hello\" SAVEDATE NIL)\r\n") == 0 &&
	      R.fetch.nitem == 5 && R.fetch.item[0].att.kind == IMAP_FA_OTHER &&
	      speq(R.fetch.item[1].val, "(\\Inbox \"x y\")") &&
	      R.fetch.item[2].att.kind == IMAP_FA_EMAILID &&
	      R.fetch.item[3].att.kind == IMAP_FA_PREVIEW &&
	      R.fetch.item[4].str.kind == IMAP_STR_NIL);
	CHECK(PR("* 1 FETCH (FLAGS ())\r\n") == 0);
	CHECK(PR("* 1 FETCH (UID 1 FLAGS () )\r\n") == 0 &&
	      R.fetch.nitem == 2 && speq(R.fetch.list, "(UID 1 FLAGS () )"));
	CHECK(PR("* 1 FETCH ( UID 1)\r\n") == -1);
	CHECK(PR("* 1 FETCH (UID 1  )\r\n") == -1);
	CHECK(PR("* 1 fetch (uid 1 body[text] nil)\r\n") == 0 &&
	      R.fetch.item[1].att.sect.text == IMAP_SECT_TEXT);
	/* two spooled sections in one response */
	build("* 10 FETCH (UID 20 BODY[HEADER] \x01 BODY[TEXT] \x01 "
	      "RFC822.SIZE 7)\r\n",
	    P("H: v\r\n\r\n"), P("text\r\n"));
	CHECK(prs(3) == 0 && R.fetch.nitem == 4 &&
	      R.fetch.item[1].str.spool == 0 &&
	      R.fetch.item[2].str.spool == 1 && R.fetch.item[3].num == 7 &&
	      speq(R.fetch.item[2].item, "BODY[TEXT] {6}\r\n"));
	CHECK(prs(2) == 0 && R.fetch.item[1].str.spool == -1 &&
	      R.fetch.item[2].str.spool == 0);
	/* fuzz finding: a spooled literal in the item name is not the
	 * value's */
	build("* 5 FETCH (BODY[HEADER.FIELDS (\x01 TO)] \x01)\r\n", P("FROM"),
	    P("From: x\r\n\r\n"));
	CHECK(prs(3) == 0 && R.fetch.item[0].spool_first == 1 &&
	      R.fetch.item[0].nspool == 1 && R.fetch.item[0].str.spool == 1 &&
	      R.fetch.item[0].att.sect.nfields == 2);
}

static void
test_fetch_errors(void)
{
	char *big;
	int i, o;

	CHECK(PR("* 1 FETCH (UID)\r\n") == -1 && rerr("expected SP"));
	CHECK(
	    PR("* 1 FETCH (UID 5\r\n") == -1 && rerr("unexpected end of line"));
	CHECK(PR("* 1 FETCH UID 5\r\n") == -1 && rerr("expected '('"));
	CHECK(PR("* 1 FETCH ()\r\n") == -1 && rerr("expected fetch attribute"));
	CHECK(
	    PR("* 1 FETCH (UID 5))\r\n") == -1 && rerr("expected end of line"));
	CHECK(PR("* 0 FETCH (UID 5)\r\n") == -1);
	CHECK(PR("* 1 FETCH (BODY[] {5+}\r\nhello)\r\n") == -1 &&
	      rerr("non-synchronizing literal from server"));
	CHECK(PR("* 1 FETCH (BODY[] {10}\r\nhello)\r\n") == -1 &&
	      rerr("runs past the end of the line"));
	CHECK(PR("* 1 FETCH (BODY[] ~{5}\r\nhello)\r\n") == -1);
	CHECK(PR("* 1 FETCH (BODY[] hello)\r\n") == -1 &&
	      rerr("expected nstring"));
	CHECK(PR("* 1 FETCH (RFC822.SIZE 99999999999999999999999)\r\n") == -1 &&
	      rerr("size out of range"));
	CHECK(PR("* 1 FETCH (UID 4294967296)\r\n") == -1 &&
	      rerr("UID out of range"));
	CHECK(PR("* 1 FETCH (UID 0)\r\n") == -1 && rerr("UID is zero"));
	CHECK(PR("* 1 FETCH (UID -1)\r\n") == -1);
	CHECK(PR("* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\"\r\n") == -1 &&
	      rerr("unterminated list"));
	CHECK(PR("* 1 FETCH (BODYSTRUCTURE NIL)\r\n") == -1 &&
	      rerr("expected '('"));
	CHECK(PR("* 1 FETCH (MODSEQ 5)\r\n") == -1);
	CHECK(PR("* 1 FETCH (BODY[]<0.5> \"x\")\r\n") == -1 &&
	      rerr("expected '>'"));
	CHECK(PR("* 1 FETCH (FLAGS (\\Seen)UID 5)\r\n") == -1);
	CHECK(PR("* 1 FETCH (ENVELOPE (\"a\"\"b\"))\r\n") == -1 &&
	      rerr("expected SP"));
	CHECK(PR("* 1 FETCH (ENVELOPE (abc{3}\r\nxyz))\r\n") == -1);
	big = malloc(1 << 16);
	o = snprintf(big, 64, "* 1 FETCH (BODYSTRUCTURE ");
	for (i = 0; i < IMAP_MAX_DEPTH + 1; i++)
		big[o++] = '(';
	for (i = 0; i < IMAP_MAX_DEPTH + 1; i++)
		big[o++] = ')';
	o += snprintf(big + o, 8, ")\r\n");
	CHECK(pr((uint8_t *)big, o) == -1 && rerr("nesting deeper than 256"));
	o = snprintf(big, 64, "* 1 FETCH (");
	for (i = 0; i < IMAP_MAX_FETCH + 1; i++)
		o += snprintf(big + o, 32, "%sUID %d", i ? " " : "", i + 1);
	o += snprintf(big + o, 8, ")\r\n");
	CHECK(pr((uint8_t *)big, o) == -1 &&
	      rerr("too many FETCH items (max 64)"));
	o = snprintf(big, 64, "* 1 FETCH (FLAGS (");
	for (i = 0; i < IMAP_MAX_ITEMS + 1; i++)
		o += snprintf(big + o, 8, "%sx", i ? " " : "");
	o += snprintf(big + o, 8, "))\r\n");
	CHECK(pr((uint8_t *)big, o) == -1 && rerr("too many items in a list"));
	/* raw untagged data has no per-list limit, only the depth */
	o = snprintf(big, 64, "* THREAD (");
	for (i = 0; i < IMAP_MAX_ITEMS + 1; i++)
		o += snprintf(big + o, 8, "%s%d", i ? " " : "", i + 1);
	o += snprintf(big + o, 8, ")\r\n");
	CHECK(pr((uint8_t *)big, o) == 0);
	free(big);
}

/* Nested message/rfc822 parts, 40 levels deep, each with a literal. */
static void
test_nested_rfc822(void)
{
	static char tpl[32768];
	const char *payload = "Sub\r\nj";
	size_t o = 0;
	int i, lv = 40;

	o += snprintf(
	    tpl + o, sizeof(tpl) - o, "* 1 FETCH (UID 1 BODYSTRUCTURE ");
	for (i = 0; i < lv; i++)
		o += snprintf(tpl + o, sizeof(tpl) - o,
		    "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 100 "
		    "(NIL \"{6}\r\nSub\r\nj\" NIL NIL NIL NIL NIL NIL NIL NIL) ");
	o += snprintf(tpl + o, sizeof(tpl) - o,
	    "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 1 1)");
	for (i = 0; i < lv; i++)
		o += snprintf(tpl + o, sizeof(tpl) - o, " 5)");
	o += snprintf(tpl + o, sizeof(tpl) - o, ")\r\n");
	/* the quoted "{6}..." is not a literal: the quote keeps the CR out */
	CHECK(
	    pr((uint8_t *)tpl, o) == -1 && rerr("unterminated quoted string"));
	/* now with real literals where the subject is */
	{
		char *p;

		while ((p = strstr(tpl, "\"{6}\r\nSub\r\nj\"")) != NULL) {
			memcpy(p, "{6}\r\nSub\r\nj  ", 13);
			memmove(p + 11, p + 13, strlen(p + 13) + 1);
		}
		o = strlen(tpl);
		(void)payload;
		CHECK(pr((uint8_t *)tpl, o) == 0 && R.fetch.nitem == 2 &&
		      R.nlit == (unsigned)lv && !R.lit_overflow);
	}
}

static void
test_capability_filter(void)
{
	static const struct {
		const char *in;
		unsigned flags;
		uint64_t max;
		const char *out;
	} t[] = {
	    {"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT "
	     "SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
	     "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT "
	     "CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE "
	     "QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH "
	     "LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
	     "STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE",
	        0, 0,
	        "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT "
	        "SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
	        "THREAD=ORDEREDSUBJECT MULTIAPPEND UNSELECT CHILDREN NAMESPACE "
	        "UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH "
	        "ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE "
	        "STATUS=SIZE SAVEDATE LITERAL+ SPECIAL-USE"},
	    {"IMAP4rev1 STARTTLS AUTH=PLAIN LOGINDISABLED", 0, 0,
	        "IMAP4rev1 AUTH=PLAIN LOGINDISABLED"},
	    {"IMAP4rev1 STARTTLS AUTH=PLAIN LOGINDISABLED", IMAP_CAPF_STARTTLS,
	        0, "IMAP4rev1 STARTTLS AUTH=PLAIN LOGINDISABLED"},
	    {"IMAP4rev1 STARTTLS AUTH=PLAIN LOGINDISABLED ID IDLE",
	        IMAP_CAPF_STARTTLS | IMAP_CAPF_PRETLS, 1000,
	        "IMAP4rev1 STARTTLS LOGINDISABLED"},
	    {"IMAP4rev2 AUTH=PLAIN ID", IMAP_CAPF_PRETLS, 0, "IMAP4rev2"},
	    {"COMPRESS=DEFLATE IMAP4rev1 compress=x CATENATE URLAUTH "
	     "URLAUTH=BINARY X-GM-EXT-1 XLIST REPLACE UIDONLY UTF8=ONLY "
	     "UTF8=ACCEPT",
	        0, 0, "IMAP4rev1 UTF8=ACCEPT"},
	    {"AUTH=SCRAM-SHA-256 AUTH=SCRAM-SHA-256-PLUS AUTH=SCRAM-SHA-1-plus "
	     "AUTH=GSSAPI AUTH=XOAUTH2 AUTH=OAUTHBEARER AUTH=LOGIN AUTH= "
	     "AUTH=-PLUS",
	        0, 0,
	        "AUTH=SCRAM-SHA-256 AUTH=GSSAPI AUTH=XOAUTH2 AUTH=OAUTHBEARER "
	        "AUTH=LOGIN"},
	    {"IMAP4rev1 APPENDLIMIT=104857600", 0, 52428800,
	        "IMAP4rev1 APPENDLIMIT=52428800"},
	    {"IMAP4rev1 AppendLimit=1000", 0, 52428800,
	        "IMAP4rev1 AppendLimit=1000"},
	    {"IMAP4rev1 APPENDLIMIT=99999999999999999999999", 0, 5,
	        "IMAP4rev1 APPENDLIMIT=5"},
	    {"IMAP4rev1 APPENDLIMIT=104857600", 0, 0,
	        "IMAP4rev1 APPENDLIMIT=104857600"},
	    {"IMAP4rev1 APPENDLIMIT", IMAP_CAPF_ADD_APPENDLIMIT, 100,
	        "IMAP4rev1 APPENDLIMIT"},
	    {"IMAP4rev1 IDLE", IMAP_CAPF_ADD_APPENDLIMIT, 100,
	        "IMAP4rev1 IDLE APPENDLIMIT=100"},
	    {"IMAP4rev1 IDLE", 0, 100, "IMAP4rev1 IDLE"},
	    {"IMAP4rev1 APPENDLIMIT= APPENDLIMIT=12x", 0, 100, "IMAP4rev1"},
	    {"  imap4rev1   idle\t literal-  ", 0, 0,
	        "imap4rev1 idle literal-"},
	    {"PREVIEW IMAP4rev1", IMAP_CAPF_PREVIEW, 0, "PREVIEW IMAP4rev1"},
	    {"QUOTA QUOTA=RES-STORAGE QUOTASET ACL RIGHTS=texk METADATA "
	     "METADATA-SERVER OBJECTID CREATE-SPECIAL-USE THREAD= RIGHTS=",
	        0, 0,
	        "QUOTA QUOTA=RES-STORAGE QUOTASET ACL RIGHTS=texk METADATA "
	        "METADATA-SERVER OBJECTID CREATE-SPECIAL-USE"},
	    {"", 0, 0, ""},
	    {"IMAP4rev1 I\x80 ID(x) \"ID\" ID", 0, 0, "IMAP4rev1 ID"},
	};
	struct imap_capf pol;
	char out[1024];
	size_t i;
	ssize_t n;
	int ok = 1;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		pol.flags = t[i].flags;
		pol.max_size = t[i].max;
		n = imap_capability_filter(
		    t[i].in, strlen(t[i].in), out, sizeof(out), &pol);
		if (n < 0 || (size_t)n != strlen(t[i].out) ||
		    strcmp(out, t[i].out) != 0) {
			fprintf(stderr, "capability case %zu: got \"%s\"\n", i,
			    n < 0 ? "(-1)" : out);
			ok = 0;
		}
		CHECK(n >= 0 && strcmp(out, t[i].out) == 0);
	}
	CHECK(ok);
	pol.flags = 0;
	pol.max_size = 0;
	CHECK(
	    imap_capability_filter("IMAP4rev1 IDLE", 14, out, 10, &pol) == -1);
	CHECK(
	    imap_capability_filter("IMAP4rev1 IDLE", 14, out, 15, &pol) == 14);
	CHECK(imap_capability_filter("IMAP4rev1", 9, out, 0, &pol) == -1);
	CHECK(imap_capability_filter("IMAP4rev1", 9, out, 10, NULL) == 9);
	CHECK(imap_capability_allowed("IDLE", 4, NULL));
	CHECK(!imap_capability_allowed("STARTTLS", 8, NULL));
	CHECK(!imap_capability_allowed("", 0, NULL));
	/* filter a parsed greeting code in place */
	CHECK(PR("* OK [CAPABILITY IMAP4rev1 STARTTLS COMPRESS=DEFLATE ID] "
	         "ready\r\n") == 0);
	n = imap_capability_filter(
	    (const char *)B + R.caps.off, R.caps.len, out, sizeof(out), &pol);
	CHECK(n == 12 && strcmp(out, "IMAP4rev1 ID") == 0);
}

static void
test_str_helpers(void)
{
	char out[64];

	CHECK(PC("a LOGIN \"a\\\\b\" x\r\n") == 0);
	CHECK(streq(&C.user, "a\\b") && !streq(&C.user, "a\\\\b") &&
	      !streq(&C.user, "a\\") && !streq(&C.user, "a\\bc"));
	CHECK(imap_str_copy(B, &C.user, out, sizeof(out)) == 3);
	CHECK(PC("a LOGIN {2}\r\nab x\r\n") == 0 && streq(&C.user, "AB"));
	CHECK(imap_str_copy(B, &C.user, out, sizeof(out)) == 2 &&
	      strcmp(out, "ab") == 0);
	CHECK(PC("a ID (\"k\" NIL)\r\n") == 0 &&
	      !streq(&C.id.pair[0].val, "NIL") &&
	      imap_str_copy(B, &C.id.pair[0].val, out, sizeof(out)) == -1);
}

static void
test_lexer(void)
{
	struct imap_lexer lx;
	struct imap_tok t;
	struct imap_span all;
	char out[32];
	int n, ok;

	/* the header names of a HEADER.FIELDS section */
	CHECK(PC("a FETCH 1 BODY.PEEK[HEADER.FIELDS (From \"To\" {2}\r\nCc)]"
	         "\r\n") == 0);
	imap_lex_init(&lx, B, BL, NULL, 0, C.fetch.att[0].sect.fields);
	CHECK(imap_lex_next(&lx, &t) == 1 && t.kind == IMAP_TOK_LPAREN);
	CHECK(imap_lex_next(&lx, &t) == 1 && t.kind == IMAP_TOK_ATOM &&
	      streq(&t.str, "from") && speq(t.span, "From"));
	CHECK(imap_lex_next(&lx, &t) == 1 && t.kind == IMAP_TOK_STRING &&
	      t.str.kind == IMAP_STR_QUOTED && streq(&t.str, "To") &&
	      speq(t.span, "\"To\""));
	CHECK(imap_lex_next(&lx, &t) == 1 && t.kind == IMAP_TOK_STRING &&
	      t.str.kind == IMAP_STR_LITERAL &&
	      imap_str_copy(B, &t.str, out, sizeof(out)) == 2 &&
	      strcmp(out, "Cc") == 0);
	CHECK(imap_lex_next(&lx, &t) == 1 && t.kind == IMAP_TOK_RPAREN);
	CHECK(imap_lex_next(&lx, &t) == 0 && imap_lex_next(&lx, &t) == 0);
	/* a BODYSTRUCTURE with spooled literals: indices as in the table */
	dovecot_build();
	CHECK(prs(2 | 4 | 16) == 0);
	imap_lex_init(&lx, SB, SBL, SP, NSP, R.fetch.item[3].val);
	n = 0;
	ok = 1;
	while (imap_lex_next(&lx, &t) == 1) {
		n++;
		if (t.kind == IMAP_TOK_STRING && t.str.spool >= 0 &&
		    (SP[t.str.spool].at != t.str.data ||
		        SP[t.str.spool].len != t.str.len))
			ok = 0;
	}
	CHECK(ok && n > 80 && lx.spnext == 2 && lx.err[0] == '\0');
	/* the BODY[] value alone starts after the first two spools */
	imap_lex_init(&lx, SB, SBL, SP, NSP, R.fetch.item[4].val);
	CHECK(imap_lex_next(&lx, &t) == 1 && t.str.spool == 2 &&
	      t.str.len == 69 && imap_lex_next(&lx, &t) == 0);
	/* errors and odd spans */
	all.off = 0;
	all.len = 12;
	imap_lex_init(
	    &lx, (const uint8_t *)"(a \"b) {9}\r\n", 12, NULL, 0, all);
	CHECK(imap_lex_next(&lx, &t) == 1 && imap_lex_next(&lx, &t) == 1 &&
	      imap_lex_next(&lx, &t) == -1 &&
	      strstr(lx.err, "unterminated quoted") != NULL);
	all.off = 7;
	all.len = 5;
	imap_lex_init(
	    &lx, (const uint8_t *)"(a \"b) {9}\r\n", 12, NULL, 0, all);
	CHECK(imap_lex_next(&lx, &t) == -1 && strstr(lx.err, "runs past"));
	all.off = 100;
	all.len = 5;
	imap_lex_init(&lx, (const uint8_t *)"abc", 3, NULL, 0, all);
	CHECK(imap_lex_next(&lx, &t) == 0);
}

/* Limits of the fixed arrays, and small helpers. */
static void
test_limits(void)
{
	static char big[65536];
	struct imap_span cut;
	int i, o;

	o = snprintf(big, sizeof(big), "* CAPABILITY");
	for (i = 0; i < IMAP_MAX_CAPS; i++)
		o += snprintf(big + o, sizeof(big) - o, " X%d", i);
	CHECK(pr((uint8_t *)big, o) == 0 && R.ncap == IMAP_MAX_CAPS);
	o += snprintf(big + o, sizeof(big) - o, " ONEMORE\r\n");
	CHECK(pr((uint8_t *)big, o) == -1 &&
	      rerr("too many capabilities (max 256)"));
	o = snprintf(big, sizeof(big), "a APPEND INBOX");
	for (i = 0; i < IMAP_MAX_APPEND; i++)
		o += snprintf(
		    big + o, sizeof(big) - o, " {1+}\r\n%c", 'a' + i % 26);
	CHECK(pc((uint8_t *)big, o) == 0 && C.nmsg == IMAP_MAX_APPEND &&
	      C.nlit == IMAP_MAX_LITS && !C.lit_overflow);
	o += snprintf(big + o, sizeof(big) - o, " {1+}\r\nz\r\n");
	CHECK(pc((uint8_t *)big, o) == -1 &&
	      cerr("too many APPEND messages (max 64)"));
	CHECK(PC("a APPEND INBOX UTF8 ({3}\r\nabc)\r\n") == -1 &&
	      cerr("expected literal8"));
	CHECK(PC("a APPEND INBOX UTF8 (~{3}\r\nabc\r\n") == -1 &&
	      cerr("expected ')'"));
	CHECK(PC("a AUTHENTICATE (x)\r\n") == -1 &&
	      cerr("expected SASL mechanism"));
	CHECK(PR("* 1 FETCH (UID 7)\r\n") == 0 &&
	      imap_item_cut(&R, 0, &cut) == 0 && speq(cut, "UID 7"));
	CHECK(PR("* 1 EXISTS\r\n") == 0 && imap_item_cut(&R, 0, &cut) == -1);
	CHECK(strcmp(imap_fa_name(IMAP_FA_BODY_SECTION), "BODY[]") == 0 &&
	      strcmp(imap_fa_name(IMAP_FA_OTHER), "OTHER") == 0);
	CHECK(imap_parse_command(NULL, 5, NULL, 0, &C) == -1 &&
	      imap_parse_response(NULL, 5, NULL, 3, &R) == -1);
}

/* Literal bookkeeping beyond IMAP_MAX_LITS. */
static void
test_lit_overflow(void)
{
	static char line[8192];
	int i, o = snprintf(line, sizeof(line), "* 1 FETCH (ENVELOPE (");

	for (i = 0; i < IMAP_MAX_LITS + 6; i++)
		o += snprintf(
		    line + o, sizeof(line) - o, "%s{1}\r\nx", i ? " " : "");
	o += snprintf(line + o, sizeof(line) - o, "))\r\n");
	CHECK(pr((uint8_t *)line, o) == 0 && R.nlit == IMAP_MAX_LITS + 6 &&
	      R.lit_overflow && R.lit[IMAP_MAX_LITS - 1].len == 1);
}

/* Robustness: every prefix and every single-byte change of some lines. */
static void
test_mutations(void)
{
	static const char *lines[] = {
	    "a UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (From)]<0.10>)\r\n",
	    "a APPEND INBOX (\\Seen) {5+}\r\nhello ~{2}\r\nhi\r\n",
	    "a LOGIN {3}\r\nabc \"pw\"\r\n",
	    "* 1 FETCH (UID 1 BODY[1.MIME] {3}\r\nabc BINARY[2] ~{1}\r\nx)\r\n",
	    "* OK [CAPABILITY IMAP4rev1 ID] hi\r\n",
	};
	static uint8_t buf[256];
	size_t i, n, k;
	unsigned runs = 0;

	for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		n = strlen(lines[i]);
		for (k = 0; k <= n; k++) {
			memcpy(buf, lines[i], k);
			imap_parse_command(buf, k, NULL, 0, &C);
			imap_parse_response(buf, k, NULL, 0, &R);
			runs++;
		}
		for (k = 0; k < n; k++) {
			static const uint8_t subst[] = {'(', ')', '{', '}', '"',
			    '\\', ' ', '\r', '\n', '~', '+', '0', '9', 0, 0xff,
			    '[', ']', '<', '.'};
			size_t j;

			for (j = 0; j < sizeof(subst); j++) {
				memcpy(buf, lines[i], n);
				buf[k] = subst[j];
				imap_parse_command(buf, n, NULL, 0, &C);
				imap_parse_response(buf, n, NULL, 0, &R);
				runs++;
			}
		}
	}
	CHECK(runs > 1000); /* and no crash, no sanitizer report */
}

static void
test_speed(void)
{
	struct timespec t0, t1;
	double ns;
	int i, n = 20000, ok = 1;

	dovecot_build();
	spool(16);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < n; i++)
		if (imap_parse_response(SB, SBL, SP, NSP, &R) != 0)
			ok = 0;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n;
	printf("test_imap_parse: %zu-byte FETCH header with BODYSTRUCTURE: "
	       "%.0f ns per parse\n",
	    SBL, ns);
	CHECK(ok);
}

int
main(void)
{
	test_simple_commands();
	test_login();
	test_authenticate();
	test_id();
	test_mailbox_commands();
	test_seq_store_copy();
	test_append();
	test_fetch_command();
	test_command_errors();
	test_spool_table();
	test_status_responses();
	test_data_responses();
	test_fetch_dovecot();
	test_fetch_items();
	test_fetch_errors();
	test_nested_rfc822();
	test_capability_filter();
	test_str_helpers();
	test_lexer();
	test_limits();
	test_lit_overflow();
	test_mutations();
	test_speed();
	return test_done("test_imap_parse");
}
