/*
 * scand's pipeline (scand/): the MIME structure, BODYSTRUCTURE, libclamav
 * scans with a signature database the test writes (EICAR as .ndb,
 * clamav-testfiles members as .hdb), the actions and their rewrites, the
 * request checks, and a child that scans inside scand's real sandbox.
 * Needs root (the sandbox) and /usr/share/clamav-testfiles.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "../../scand/scand.h"
#include "config.h"
#include "imapgw.h"
#include "log.h"
#include "sandbox.h"
#include "test.h"

#define NOBODY 65534
#define TESTFILES "/usr/share/clamav-testfiles"
#define EICAR_NAME "Eicar-Test-Signature.UNOFFICIAL"
#define CLAMEXE_NAME "ClamAV-Test-File-exe.UNOFFICIAL"

static char top[64]; /* the test's directory */
static char dbdir[PATH_MAX]; /* signatures */
static char tmpdir[PATH_MAX]; /* libclamav's temp files */
static struct config *cfg;
static char eicar[69];

/* Actions of the test config, by index. */
enum {
	A_STRIP = 2, /* after the two built-ins */
	A_DENY,
	A_DROP,
	A_ALLOW,
	A_SMALL_DENY,
	A_SMALL_ALLOW,
	A_SMALL_DROP,
	A_SLOW_DENY,
	A_SLOW_ALLOW,
	A_SLOW_DROP,
	A_OFF,
};

/* ---- setup ---- */

static void
die(const char *what)
{
	perror(what);
	exit(2);
}

static void
write_file(const char *path, const void *data, size_t len)
{
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd == -1 || write(fd, data, len) != (ssize_t)len)
		die(path);
	close(fd);
}

static void *
read_file(const char *path, size_t *len)
{
	gchar *data;
	gsize n;

	if (!g_file_get_contents(path, &data, &n, NULL))
		die(path);
	*len = n;
	return data;
}

/* An .hdb line for a file: md5:size:name. */
static void
hdb_line(struct buf *b, const char *file, const char *name)
{
	char path[PATH_MAX];
	gchar *md5;
	size_t len;
	void *d;

	snprintf(path, sizeof(path), "%s/%s", TESTFILES, file);
	d = read_file(path, &len);
	md5 = g_compute_checksum_for_data(G_CHECKSUM_MD5, d, len);
	buf_printf(b, "%s:%zu:%s\n", md5, len, name);
	g_free(md5);
	g_free(d);
}

static void
make_db(void)
{
	struct buf b;
	size_t i;

	/* Built at run time, so that this binary is not itself EICAR. */
	snprintf(eicar, sizeof(eicar), "%s%s",
	    "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-",
	    "ANTIVIRUS-TEST-FILE!$H+H*");
	buf_init(&b, 0);
	buf_printf(&b, "Eicar-Test-Signature:0:*:");
	for (i = 0; i < strlen(eicar); i++)
		buf_printf(&b, "%02x", (unsigned char)eicar[i]);
	buf_printf(&b, "\n");
	snprintf(dbdir, sizeof(dbdir), "%s/db", top);
	if (mkdir(dbdir, 0755) == -1)
		die(dbdir);
	snprintf(tmpdir, sizeof(tmpdir), "%s/db/test.ndb", top);
	write_file(tmpdir, b.data, b.len);
	buf_reset(&b);
	/* clam.exe only: clam.zip is found by unpacking it. */
	hdb_line(&b, "clam.exe", "ClamAV-Test-File-exe");
	hdb_line(&b, "clam.pdf", "ClamAV-Test-File-pdf");
	snprintf(tmpdir, sizeof(tmpdir), "%s/db/test.hdb", top);
	write_file(tmpdir, b.data, b.len);
	buf_free(&b);
	snprintf(tmpdir, sizeof(tmpdir), "%s/tmp", top);
	if (mkdir(tmpdir, 0700) == -1)
		die(tmpdir);
}

/* Antivirus alone: the rules, APT Blocker and spamBlocker of the
 * built-ins the actions would inherit are turned off (test_pipeline()
 * turns them on). */
#define AV_ONLY                                                    \
	"content_types: { rules: [] }, filenames: { rules: [] }, " \
	"apt_blocker: { enabled: false }, spamblocker: { enabled: false }"

static const char *const action_yaml =
    "    strip: { " AV_ONLY ",\n"
    "             antivirus: { database: %s, on_error: deny } }\n"
    "    deny: { inherit: strip, antivirus: { database: %s, "
    "on_virus: deny } }\n"
    "    drop: { inherit: strip, antivirus: { database: %s, "
    "on_virus: drop } }\n"
    "    allow: { inherit: strip, antivirus: { database: %s, "
    "on_virus: allow } }\n"
    "    small-deny: { inherit: strip, general: { max_email_size: 1K } }\n"
    "    small-allow: { inherit: strip,\n"
    "                   general: { max_email_size: 1K, oversize: allow } }\n"
    "    small-drop: { inherit: strip,\n"
    "                  general: { max_email_size: 1K, oversize: drop } }\n"
    "    slow-deny: { inherit: strip,\n"
    "                 antivirus: { max_scan_time: 1ms } }\n"
    "    slow-allow: { inherit: slow-deny, antivirus: { on_error: allow } }\n"
    "    slow-drop: { inherit: slow-deny, antivirus: { on_error: drop } }\n"
    "    off: { inherit: strip, antivirus: { enabled: false } }\n";

static void
make_config(void)
{
	struct buf y, e;
	size_t i;

	buf_init(&y, 0);
	buf_init(&e, 0);
	buf_printf(&y, "servers: { s: { members: [\"127.0.0.1:143\"] } }\n");
	buf_printf(&y, "actions:\n");
	buf_printf(&y, action_yaml, dbdir, dbdir, dbdir, dbdir);
	buf_printf(&y, "policies:\n");
	for (i = A_STRIP; i <= A_OFF; i++)
		buf_printf(&y,
		    "  - { name: p%zu, listen: \"127.0.0.1:%zu\", to: s, "
		    "action: %s }\n",
		    i, 20000 + i,
		    (const char *[]){"", "", "strip", "deny", "drop", "allow",
		        "small-deny", "small-allow", "small-drop", "slow-deny",
		        "slow-allow", "slow-drop", "off"}[i]);
	cfg = config_load_mem("test.yaml", (char *)y.data, y.len, &e);
	if (cfg == NULL) {
		buf_add_u8(&e, 0);
		fprintf(stderr, "%s\n%s", (char *)y.data, (char *)e.data);
		exit(2);
	}
	buf_free(&y);
	buf_free(&e);
}

static void
cleanup(void)
{
	char cmd[PATH_MAX + 16];

	if (top[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", top);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", top);
	}
}

/* ---- messages ---- */

static void
b64(struct buf *b, const void *data, size_t len)
{
	static const char t[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const uint8_t *p = data;
	size_t i, col = 0;
	uint32_t v;

	for (i = 0; i < len; i += 3) {
		v = (uint32_t)p[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		buf_add_u8(b, (uint8_t)t[v >> 18 & 63]);
		buf_add_u8(b, (uint8_t)t[v >> 12 & 63]);
		buf_add_u8(b, i + 1 < len ? (uint8_t)t[v >> 6 & 63] : '=');
		buf_add_u8(b, i + 2 < len ? (uint8_t)t[v & 63] : '=');
		if ((col += 4) == 76) {
			buf_add(b, "\r\n", 2);
			col = 0;
		}
	}
	if (col)
		buf_add(b, "\r\n", 2);
}

static const char hdrs[] =
    "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    "From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    "Subject: afternoon meeting\r\n"
    "To: mooch@owatagu.siam.edu.example\r\n"
    "Cc: \"Some One\" <one@example.org>,\r\n"
    " two@example.org\r\n"
    "Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    "In-Reply-To: <prev@example.org>\r\n"
    "References: <first@example.org> <prev@example.org>\r\n"
    "X-Mailer: test\r\n"
    "Received: from somewhere\r\n";

/* A multipart/mixed with a text part and an attachment. */
static void
msg_attach(struct buf *b, const char *name, const void *data, size_t len)
{
	buf_printf(b, "%sMIME-Version: 1.0\r\n", hdrs);
	buf_printf(b, "Content-Type: multipart/mixed; boundary=\"=-b1\"\r\n"
	              "\r\n"
	              "This is a multi-part message in MIME format.\r\n"
	              "--=-b1\r\n"
	              "Content-Type: text/plain; charset=us-ascii\r\n"
	              "\r\n"
	              "Hello Joe, do you think we can meet at 3:30?\r\n"
	              "--=-b1\r\n");
	buf_printf(b,
	    "Content-Type: application/octet-stream; name=\"%s\"\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n",
	    name, name);
	b64(b, data, len);
	buf_printf(b, "--=-b1\r\n"
	              "Content-Type: text/html; charset=utf-8\r\n"
	              "Content-Transfer-Encoding: quoted-printable\r\n"
	              "\r\n"
	              "<p>caf=C3=A9</p>\r\n"
	              "--=-b1--\r\n"
	              "epilogue\r\n");
}

static void
msg_plain(struct buf *b, const char *body)
{
	buf_printf(b, "%s\r\n%s\r\n", hdrs, body);
}

/* ---- checks on results ---- */

/* A well-formed IMAP body: balanced lists of NIL, numbers, strings and
 * literals, nothing after the outer list. */
static int
imap_wellformed(const char *s, size_t len)
{
	size_t i = 0, n;
	int depth = 0;
	char *e;

	while (i < len) {
		char c = s[i];

		if (c == '(') {
			depth++;
			i++;
		} else if (c == ')') {
			if (--depth < 0)
				return 0;
			i++;
			if (depth == 0 && i != len)
				return 0;
		} else if (c == ' ')
			i++;
		else if (c == '"') {
			for (i++; i < len && s[i] != '"'; i++)
				if (s[i] == '\\')
					i++;
			if (i++ >= len)
				return 0;
		} else if (c == '{') {
			n = strtoul(s + i + 1, &e, 10);
			if (e[0] != '}' || e[1] != '\r' || e[2] != '\n')
				return 0;
			i = (size_t)(e + 3 - s) + n;
		} else if (strncmp(s + i, "NIL", 3) == 0)
			i += 3;
		else if (c >= '0' && c <= '9')
			while (i < len && s[i] >= '0' && s[i] <= '9')
				i++;
		else
			return 0;
	}
	return depth == 0 && len > 0;
}

struct result {
	uint8_t *all;
	size_t size;
	char *msg, *bs, *body, *env;
	size_t msg_len;
};

/* Read and check a CHANGED result fd: sealed, offsets in range. */
static int
result_read(const struct scan_res *res, struct result *r)
{
	struct stat st;
	int seals;

	memset(r, 0, sizeof(*r));
	if (res->fd == -1 || fstat(res->fd, &st) == -1)
		return -1;
	seals = fcntl(res->fd, F_GET_SEALS);
	if ((seals &
	        (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) !=
	    (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		return -1;
	r->size = (size_t)st.st_size;
	/* sections that are not in the message follow the ENVELOPE */
	if (res->msg_off != 0 || res->bs_off != res->msg_len ||
	    res->body_off != res->bs_off + res->bs_len ||
	    res->env_off != res->body_off + res->body_len ||
	    res->env_off + res->env_len > r->size ||
	    (res->nsect == 0 && res->env_off + res->env_len != r->size))
		return -1;
	r->all = malloc(r->size + 1);
	if (pread(res->fd, r->all, r->size, 0) != (ssize_t)r->size)
		return -1;
	r->msg = strndup((char *)r->all, res->msg_len);
	r->msg_len = res->msg_len;
	r->bs = strndup((char *)r->all + res->bs_off, res->bs_len);
	r->body = strndup((char *)r->all + res->body_off, res->body_len);
	r->env = strndup((char *)r->all + res->env_off, res->env_len);
	return 0;
}

static void
result_free(struct result *r)
{
	free(r->all);
	free(r->msg);
	free(r->bs);
	free(r->body);
	free(r->env);
}

static void
scan(int action, int kind, const struct buf *m, struct scan_res *res)
{
	scan_message(&cfg->actions[action], kind, "joe", "192.0.2.1:1234",
	    m->data, m->len, res);
}

/* ---- cases ---- */

static void
test_structure(void)
{
	struct mime_msg m;
	struct buf b;
	char sec[64], fn[256];
	const struct mime_part *p;

	buf_init(&b, 0);
	msg_attach(&b, "a.bin", "hello", 5);
	CHECK(mime_parse(&m, b.data, b.len) == 0);
	CHECK(m.root->kind == MIME_MULTIPART && m.root->nchild == 3);
	CHECK(strcmp(m.eol, "\r\n") == 0);
	p = m.root->children->next;
	mime_section(p, sec, sizeof(sec));
	CHECK(strcmp(sec, "2") == 0);
	mime_filename(&m, p, fn, sizeof(fn));
	CHECK(strcmp(fn, "a.bin") == 0);
	/* The part runs from its first header to the CRLF before the
	 * boundary. */
	CHECK(
	    strncmp((char *)b.data + p->hdr_off, "Content-Type: app", 17) == 0);
	CHECK(strncmp((char *)b.data + p->body_end, "\r\n--=-b1\r\n", 10) == 0);
	p = m.root->children;
	CHECK(p->body_end - p->body_off == 44 && mime_lines(&m, p) == 0);
	mime_free(&m);

	/* A single part: its body is part 1. */
	buf_reset(&b);
	msg_plain(&b, "hi");
	CHECK(mime_parse(&m, b.data, b.len) == 0);
	CHECK(m.root->kind == MIME_LEAF && m.nparts == 1);
	mime_section(m.root, sec, sizeof(sec));
	CHECK(strcmp(sec, "1") == 0);
	mime_free(&m);

	/* RFC 2047 and RFC 2231 file names, decoded by GMime. */
	buf_reset(&b);
	buf_printf(&b, "Content-Type: application/x; name=\"=?UTF-8?B?"
	               "w6l0w6kuZXhl?=\"\r\n\r\nx\r\n");
	CHECK(mime_parse(&m, b.data, b.len) == 0);
	mime_filename(&m, m.root, fn, sizeof(fn));
	CHECK(strcmp(fn, "\xc3\xa9t\xc3\xa9.exe") == 0);
	mime_free(&m);
	buf_reset(&b);
	buf_printf(&b, "Content-Disposition: attachment;\r\n"
	               " filename*=iso-8859-1''%%E9t%%E9%%0D.exe\r\n"
	               "\r\nx\r\n");
	CHECK(mime_parse(&m, b.data, b.len) == 0);
	mime_filename(&m, m.root, fn, sizeof(fn));
	CHECK(strcmp(fn, "\xc3\xa9t\xc3\xa9?.exe") == 0);
	mime_free(&m);
	buf_free(&b);
}

static void
test_bodystructure(void)
{
	struct mime_msg m;
	struct buf b, o;

	buf_init(&b, 0);
	buf_init(&o, 0);
	msg_attach(&b, "a.bin", "hello", 5);
	CHECK(mime_parse(&m, b.data, b.len) == 0);
	CHECK(bs_write(&m, 1, &o) == 0);
	buf_add_u8(&o, 0);
	/* As Dovecot 2.3 answers for this message. */
	CHECK(strcmp((char *)o.data,
	          "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
	          "\"7bit\" 44 0 NIL NIL NIL NIL)(\"application\" "
	          "\"octet-stream\" (\"name\" \"a.bin\") NIL NIL \"base64\" 8 "
	          "NIL (\"attachment\" (\"filename\" \"a.bin\")) NIL NIL)"
	          "(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL "
	          "\"quoted-printable\" 16 0 NIL NIL NIL NIL) \"mixed\" "
	          "(\"boundary\" \"=-b1\") NIL NIL NIL)") == 0);
	buf_reset(&o);
	CHECK(bs_write(&m, 0, &o) == 0);
	buf_add_u8(&o, 0);
	CHECK(strcmp((char *)o.data,
	          "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
	          "\"7bit\" 44 0)(\"application\" \"octet-stream\" (\"name\" "
	          "\"a.bin\") NIL NIL \"base64\" 8)(\"text\" \"html\" "
	          "(\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 16 0) "
	          "\"mixed\")") == 0);
	mime_free(&m);
	buf_free(&b);
	buf_free(&o);
}

/* Messages and what Dovecot 2.3.19 answers for their BODYSTRUCTURE
 * (captured by appending them to a real Dovecot; \n is CRLF). */
static const struct {
	const char *msg, *bs;
} bs_cases[] = {
    /* 05-rfc822-single.eml */
    {"Date: Mon, 7 Feb 1994 21:52:25 -0800\n"
     "From: Fred Foobar <foobar@Blurdybloop.example>\n"
     "Subject: afternoon meeting\n"
     "To: mooch@owatagu.siam.edu.example\n"
     "Message-Id: <B27397-0100000@Blurdybloop.example>\n"
     "MIME-Version: 1.0\n"
     "Content-Type: multipart/mixed; boundary=\"b\"\n"
     "\n"
     "--b\n"
     "Content-Type: message/rfc822\n"
     "Content-Disposition: attachment; filename=\"fwd.eml\"\n"
     "\n"
     "From: Pete(A nice \\) chap) <pete(his account)@silly.test(his "
     "host)>\n"
     "To:A Group(Some people)\n"
     "     :Chris Jones <c@(Chris's host.)public.example>,\n"
     "         joe@example.org,\n"
     "  John <jdoe@one.test> (my dear friend); (the end of the group)\n"
     "Cc:(Empty list)(start)Hidden recipients  :(nobody(that I know)) "
     " ;\n"
     "Date: Thu,\n"
     "      13\n"
     "        Feb\n"
     "          1969\n"
     "      23:32\n"
     "               -0330 (Newfoundland Time)\n"
     "Message-ID:              <testabcd.1234@silly.test>\n"
     "Subject: folded\n"
     "\tsubject  with   spaces\n"
     "\n"
     "Testing.\n"
     "--b--\n",
        "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 519 (\"Thu,  "
        "    13        Feb          1969      23:32               -0330 "
        "(Newfoundland Time)\" {26}\r\nfolded subject with spaces ((\"Pete\" "
        "NIL \"pete\" \"silly.test\")) ((\"Pete\" NIL \"pete\" \"silly.test"
        "\")) "
        "((\"Pete\" NIL \"pete\" \"silly.test\")) ((NIL NIL \"A Group\" "
        "NIL)(\"Chris Jones\" NIL \"c\" \"public.example\")(NIL NIL "
        "\"joe\" \"example.org\")(\"John\" NIL \"jdoe\" \"one.test\")(NIL "
        "NIL NIL NIL)) ((NIL NIL \"Hidden recipients\" NIL)(NIL NIL "
        "NIL NIL)) NIL NIL \"<testabcd.1234@silly.test>\") (\"text\" "
        "\"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 8 0 NIL "
        "NIL NIL NIL) 16 NIL (\"attachment\" (\"filename\" \"fwd.eml\")) "
        "NIL NIL) \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)"},
    /* 06-digest.eml */
    {"Date: Mon, 7 Feb 1994 21:52:25 -0800\n"
     "From: Fred Foobar <foobar@Blurdybloop.example>\n"
     "Subject: afternoon meeting\n"
     "To: mooch@owatagu.siam.edu.example\n"
     "Message-Id: <B27397-0100000@Blurdybloop.example>\n"
     "MIME-Version: 1.0\n"
     "Content-Type: multipart/digest; boundary=\"d\"\n"
     "\n"
     "--d\n"
     "\n"
     "From: a@b.test\n"
     "Subject: one\n"
     "\n"
     "first\n"
     "--d\n"
     "\n"
     "From: c@d.test\n"
     "Subject: two\n"
     "\n"
     "second\n"
     "--d\n"
     "Content-Type: text/plain\n"
     "\n"
     "not a message\n"
     "--d--\n",
        "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 37 (NIL \"one\" "
        "((NIL NIL \"a\" \"b.test\")) ((NIL NIL \"a\" \"b.test\")) ((NIL "
        "NIL \"a\" \"b.test\")) NIL NIL NIL NIL NIL) (\"text\" \"plain\" "
        "(\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0 NIL NIL NIL "
        "NIL) 3 NIL NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL "
        "\"7bit\" 38 (NIL \"two\" ((NIL NIL \"c\" \"d.test\")) ((NIL "
        "NIL \"c\" \"d.test\")) ((NIL NIL \"c\" \"d.test\")) NIL NIL "
        "NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") "
        "NIL NIL \"7bit\" 6 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)(\"text\" "
        "\"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 13 0 "
        "NIL NIL NIL NIL) \"digest\" (\"boundary\" \"d\") NIL NIL NIL)"},
    /* 07-rfc2231.eml */
    {"Date: Mon, 7 Feb 1994 21:52:25 -0800\n"
     "From: Fred Foobar <foobar@Blurdybloop.example>\n"
     "Subject: afternoon meeting\n"
     "To: mooch@owatagu.siam.edu.example\n"
     "Message-Id: <B27397-0100000@Blurdybloop.example>\n"
     "MIME-Version: 1.0\n"
     "Content-Type: multipart/mixed; boundary=\"b\"\n"
     "\n"
     "--b\n"
     "Content-Type: application/octet-stream;\n"
     " name*0*=utf-8''%E2%82%AC%20rates;\n"
     " name*1=\".txt\"\n"
     "Content-Disposition: attachment;\n"
     " filename*0*=utf-8''%E2%82%AC%20rates;\n"
     " filename*1=\".txt\"\n"
     "\n"
     "x\n"
     "--b\n"
     "Content-Type: application/octet-stream; name=\"=?UTF-8?B?w6l0w6kuZXhl"
     "?=\"\n"
     "Content-Disposition: attachment; filename*=iso-8859-1''%E9t%E9.exe\n"
     "\n"
     "y\n"
     "--b\n"
     "Content-Type: application/octet-stream; name*1=\"b\"; name*3=\"d\"; "
     "name*0=\"a\"\n"
     "\n"
     "z\n"
     "--b--\n",
        "((\"application\" \"octet-stream\" (\"name*\" \"utf-8''%E2%82%AC%2"
        "0rates.txt\") "
        "NIL NIL \"7bit\" 1 NIL (\"attachment\" (\"filename*\" \"utf-8''%E2"
        "%82%AC%20rates.txt\")) "
        "NIL NIL)(\"application\" \"octet-stream\" (\"name\" \"=?UTF-8?B?w6"
        "l0w6kuZXhl?=\") "
        "NIL NIL \"7bit\" 1 NIL (\"attachment\" (\"filename*\" \"iso-8859-1"
        "''%E9t%E9.exe\")) "
        "NIL NIL)(\"application\" \"octet-stream\" (\"name*0\" \"a\" "
        "\"name*1\" \"b\" \"name*3\" \"d\") NIL NIL \"7bit\" 1 NIL NIL "
        "NIL NIL) \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)"},
    /* 15-prefix.eml */
    {"Date: Mon, 7 Feb 1994 21:52:25 -0800\n"
     "From: Fred Foobar <foobar@Blurdybloop.example>\n"
     "Subject: afternoon meeting\n"
     "To: mooch@owatagu.siam.edu.example\n"
     "Message-Id: <B27397-0100000@Blurdybloop.example>\n"
     "MIME-Version: 1.0\n"
     "Content-Type: multipart/mixed; boundary=\"b\"\n"
     "\n"
     "--b\n"
     "Content-Type: text/plain\n"
     "\n"
     "one\n"
     "--bx\n"
     "not a boundary?\n"
     "--b\n"
     "Content-Type: multipart/mixed; boundary=\"bb\"\n"
     "\n"
     "--bb\n"
     "Content-Type: text/plain\n"
     "\n"
     "inner\n"
     "--bb--\n"
     "--b--\n",
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" "
        "3 0 NIL NIL NIL NIL)(\"text\" \"plain\" (\"charset\" \"us-ascii\") "
        "NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)((\"text\" \"plain\" (\"chars"
        "et\" "
        "\"us-ascii\") NIL NIL \"7bit\" 5 0 NIL NIL NIL NIL) \"mixed\" "
        "(\"boundary\" \"bb\") NIL NIL NIL) \"mixed\" (\"boundary\" "
        "\"b\") NIL NIL NIL)"},
    /* 23-rfc822-b64.eml */
    {"Date: Mon, 7 Feb 1994 21:52:25 -0800\n"
     "From: Fred Foobar <foobar@Blurdybloop.example>\n"
     "Subject: afternoon meeting\n"
     "To: mooch@owatagu.siam.edu.example\n"
     "Message-Id: <B27397-0100000@Blurdybloop.example>\n"
     "MIME-Version: 1.0\n"
     "Content-Type: multipart/mixed; boundary=\"b\"\n"
     "\n"
     "--b\n"
     "Content-Type: message/rfc822\n"
     "Content-Transfer-Encoding: base64\n"
     "\n"
     "RnJvbTogYUBiLmMKClRleHQK\n"
     "--b--\n",
        "((\"message\" \"rfc822\" NIL NIL NIL \"base64\" 26 (NIL NIL "
        "NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" "
        "\"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) 1 NIL NIL "
        "NIL NIL) \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)"},
    /* a06-prefix-nest.eml */
    {"From: a@b.test\n"
     "Subject: x\n"
     "MIME-Version: 1.0\n"
     "Content-Type: multipart/mixed; boundary=\"bb\"\n"
     "\n"
     "--bb\n"
     "Content-Type: multipart/alternative; boundary=\"b\"\n"
     "\n"
     "--b\n"
     "Content-Type: text/plain\n"
     "\n"
     "inner\n"
     "--bb\n"
     "Content-Type: text/plain\n"
     "\n"
     "outer2\n"
     "--bb--\n",
        "(((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" "
        "5 0 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"b\") NIL "
        "NIL NIL)(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
        "NIL \"7bit\" 6 0 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"bb\") "
        "NIL NIL NIL)"},
    /* a14-mp-no-bnd.eml */
    {"From: a@b.test\n"
     "Subject: x\n"
     "MIME-Version: 1.0\n"
     "Content-Type: multipart/mixed\n"
     "\n"
     "--b\n"
     "Content-Type: text/plain\n"
     "\n"
     "x\n"
     "--b--\n",
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" "
        "0 0 NIL NIL NIL NIL) \"mixed\" NIL NIL NIL NIL)"},
    /* c05.eml */
    {"From: a@b.test\n"
     "MIME-Version: 1.0\n"
     "Content-Type: text/plain garbage\n"
     "\n"
     "x\n",
        "(\"\" \"\" NIL NIL NIL \"7bit\" 3 NIL NIL NIL NIL)"},
    /* a09-addrs.eml */
    {"From: \"John Q. Public\" <jqp@x.test>\n"
     "To: Undisclosed recipients: ;\n"
     "Cc: a@b.test, , c@d.test\n"
     "Bcc: <>\n"
     "Reply-To: x@y.test (comment) , z@w.test\n"
     "Sender: John Q. Public <j@x.test>\n"
     "Subject: =?utf-8?q?caf=C3=A9?=\ttab  and trailing  \n"
     "Message-ID:\n"
     " <folded@x.test>\n"
     "In-Reply-To: <a@x.test> <b@x.test>\n"
     "Date: Tue, 1 Jul 2003 10:52:37 +0200 (CEST)\n"
     "MIME-Version: 1.0\n"
     "Content-Type: multipart/mixed; boundary=b\n"
     "\n"
     "--b\n"
     "Content-Type: message/rfc822\n"
     "\n"
     "From: \"John Q. Public\" <jqp@x.test>\n"
     "To: Undisclosed recipients: ;\n"
     "Cc: a@b.test, , c@d.test\n"
     "Bcc: <>\n"
     "Reply-To: x@y.test (comment) , z@w.test\n"
     "Sender: John Q. Public <j@x.test>\n"
     "Subject: =?utf-8?q?caf=C3=A9?=\ttab  and trailing  \n"
     "Message-ID:\n"
     " <folded@x.test>\n"
     "In-Reply-To: <a@x.test> <b@x.test>\n"
     "Date: Tue, 1 Jul 2003 10:52:37 +0200 (CEST)\n"
     "\n"
     "x\n"
     "--b\n"
     "Content-Type: message/rfc822\n"
     "\n"
     "From: =?iso-8859-1?q?J=F6rg?= <j@x.test>, \"quoted \\\"esc\\\"\" "
     "<q@x.test>\n"
     "To: group: a@b.test, \"n\" <c@d.test>; , after@x.test\n"
     "Cc: @r1,@r2:x@y.test, <@r3:z@w.test>\n"
     "Subject: \"quoted subject\"\n"
     "Message-ID: no angle\n"
     "Date: garbage\n"
     "\n"
     "y\n"
     "--b--\n",
        "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 346 (\"Tue, 1 "
        "Jul 2003 10:52:37 +0200 (CEST)\" {38}\r\n=?utf-8?q?caf=C3=A9?= "
        "tab and trailing ((\"John Q. Public\" NIL \"jqp\" \"x.test\")) "
        "((\"John Q. Public\" NIL \"j\" \"x.test\")) ((\"comment\" NIL "
        "\"x\" \"y.test\")(NIL NIL \"z\" \"w.test\")) ((NIL NIL \"Undisclosed "
        "recipients\" NIL)(NIL NIL NIL NIL)) ((NIL NIL \"a\" \"b.test\")(NIL "
        "NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")(NIL NIL \"c\" \"d.test"
        "\")) "
        "((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) \"<a@x.test> "
        "<b@x.test>\" \" <folded@x.test>\") (\"text\" \"plain\" (\"charset\" "
        "\"us-ascii\") NIL NIL \"7bit\" 1 0 NIL NIL NIL NIL) 12 NIL "
        "NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 229 "
        "(\"garbage\" {16}\r\n\"quoted subject\" ((\"=?iso-8859-1?q?J=F6rg?=\" "
        "NIL \"j\" \"x.test\")({12}\r\nquoted \"esc\" NIL \"q\" \"x.test\")) "
        "((\"=?iso-8859-1?q?J=F6rg?=\" NIL \"j\" \"x.test\")({12}\r\nquoted "
        "\"esc\" NIL \"q\" \"x.test\")) ((\"=?iso-8859-1?q?J=F6rg?=\" "
        "NIL \"j\" \"x.test\")({12}\r\nquoted \"esc\" NIL \"q\" \"x.test\")) "
        "((NIL NIL \"group\" NIL)(NIL NIL \"a\" \"b.test\")(\"n\" NIL "
        "\"c\" \"d.test\")(NIL NIL NIL NIL)(NIL NIL \"after\" \"x.test\")) "
        "((NIL NIL \"MISSING_MAILBOX\" \"r1\")(NIL NIL \"MISSING_MAILBOX\" "
        "\"r2\")) NIL NIL \"no angle\") (\"text\" \"plain\" (\"charset\" "
        "\"us-ascii\") NIL NIL \"7bit\" 1 0 NIL NIL NIL NIL) 7 NIL NIL "
        "NIL NIL) \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)"},
    /* 20-8bit-hdr.eml */
    {"From: J\xc3"
     "\xb6"
     "rg M\xc3"
     "\xbc"
     "ller <jm@example.de>\n"
     "Subject: Gr\xc3"
     "\xbc"
     "\xc3"
     "\x9f"
     "e aus K\xc3"
     "\xb6"
     "ln\n"
     "To: \"\xc3"
     "\x9c"
     "n\xc3"
     "\xaf"
     "code\" <u@example.org>\n"
     "MIME-Version: 1.0\n"
     "Content-Type: text/plain; charset=utf-8; name=\"na\xc3"
     "\xaf"
     "ve.txt\"\n"
     "Content-Description: \xc3"
     "\xa4"
     "\xc3"
     "\xb6"
     "\xc3"
     "\xbc"
     "\n"
     "\n"
     "x\n",
        "(\"text\" \"plain\" (\"charset\" \"utf-8\" \"name\" {10}\r\nna\xc3"
        "\xaf"
        "ve.txt) "
        "NIL {6}\r\n\xc3"
        "\xa4"
        "\xc3"
        "\xb6"
        "\xc3"
        "\xbc"
        " \"7bit\" "
        "3 1 NIL NIL NIL NIL)"},
};

static void
test_dovecot_cases(void)
{
	static const char nul[] = "MIME-Version: 1.0\r\nContent-Description: "
	                          "d\0e\r\n\r\nx\r\n";
	struct mime_msg m;
	struct buf b, o;
	const char *s;
	size_t i;

	buf_init(&b, 0);
	buf_init(&o, 0);
	for (i = 0; i < sizeof(bs_cases) / sizeof(bs_cases[0]); i++) {
		buf_reset(&b);
		buf_reset(&o);
		for (s = bs_cases[i].msg; *s != '\0'; s++)
			if (*s == '\n')
				buf_add(&b, "\r\n", 2);
			else
				buf_add_u8(&b, (uint8_t)*s);
		CHECK(mime_parse(&m, b.data, b.len) == 0);
		CHECK(bs_write(&m, 1, &o) == 0);
		buf_add_u8(&o, 0);
		CHECK(strcmp((char *)o.data, bs_cases[i].bs) == 0);
		if (strcmp((char *)o.data, bs_cases[i].bs) != 0)
			fprintf(stderr, "case %zu:\n got %s\nwant %s\n", i,
			    (char *)o.data, bs_cases[i].bs);
		mime_free(&m);
	}
	/* A NUL in a header value is U+FFFD, as Dovecot has it. */
	buf_reset(&o);
	CHECK(mime_parse(&m, nul, sizeof(nul) - 1) == 0);
	CHECK(bs_write(&m, 0, &o) == 0);
	buf_add_u8(&o, 0);
	CHECK(strcmp((char *)o.data,
	          "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
	          "{5}\r\nd\xef\xbf\xbd"
	          "e \"7bit\" 3 1)") == 0);
	mime_free(&m);
	buf_free(&b);
	buf_free(&o);
}

/* Header fields and what Dovecot 2.3.19 answers for FETCH ENVELOPE of a
 * message with them (captured from a real Dovecot, the comparison of
 * regress/integration/test_envelope.py; \n is CRLF). */
static const struct {
	const char *hdr, *env;
} env_cases[] = {
    /* full */
    {"Date: Thu, 15 Feb 2007 01:02:03 +0200\n"
     "Subject: subject header\n"
     "From: From Real <fromuser@fromdomain.org>\n"
     "Sender: Sender Real <senderuser@senderdomain.org>\n"
     "Reply-To: Reply Real <replyuser@replydomain.org>\n"
     "To: To Real <touser@todomain.org>\n"
     "Cc: Cc Real <ccuser@ccdomain.org>\n"
     "Bcc: Bcc Real <bccuser@bccdomain.org>\n"
     "In-Reply-To: <reply@to.id>\n"
     "Message-ID: <msg@id>\n",
        "(\"Thu, 15 Feb 2007 01:02:03 +0200\" \"subject header\" ((\"From R"
        "eal\" NIL \"fromuser\" \"fromdomain.org\")) ((\"Sender Real\" NIL "
        "\"senderuser\" \"senderdomain.org\")) ((\"Reply Real\" NIL \"reply"
        "user\" \"replydomain.org\")) ((\"To Real\" NIL \"touser\" \"todoma"
        "in.org\")) ((\"Cc Real\" NIL \"ccuser\" \"ccdomain.org\")) ((\"Bcc"
        " Real\" NIL \"bccuser\" \"bccdomain.org\")) \"<reply@to.id>\" \"<m"
        "sg@id>\")"},
    /* none */
    {"", "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"},
    /* sender-empty */
    {"From: Joe <joe@example.com>\n"
     "Sender:\nReply-To: \n",
        "(NIL NIL ((\"Joe\" NIL \"joe\" \"example.com\")) ((\"Joe\" NIL \"j"
        "oe\" \"example.com\")) ((\"Joe\" NIL \"joe\" \"example.com\")) NIL"
        " NIL NIL NIL NIL)"},
    /* groups */
    {"From: a@b.c\nTo: undisclosed-recipients:;\n"
     "Cc: team: x@y.z, \"Some One\" <s@o.ne>;, after@x.y\n"
     "Bcc: g1: a@a.a;, g2:;\n",
        "(NIL NIL ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) ((NIL"
        " NIL \"a\" \"b.c\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL"
        " NIL NIL NIL)) ((NIL NIL \"team\" NIL)(NIL NIL \"x\" \"y.z\")(\"So"
        "me One\" NIL \"s\" \"o.ne\")(NIL NIL NIL NIL)(NIL NIL \"after\" \""
        "x.y\")) ((NIL NIL \"g1\" NIL)(NIL NIL \"a\" \"a.a\")(NIL NIL NIL N"
        "IL)(NIL NIL \"g2\" NIL)(NIL NIL NIL NIL)) NIL NIL)"},
    /* group-open */
    {"From: a@b.c\nTo: open: x@y.z, w@v.u\n",
        "(NIL NIL ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) ((NIL"
        " NIL \"a\" \"b.c\")) ((NIL NIL \"open\" NIL)(NIL NIL \"x\" \"y.z\""
        ")(NIL NIL \"w\" \"v.u\")(NIL NIL NIL NIL)) NIL NIL NIL NIL)"},
    /* 8bit */
    {"Subject: Gr\xc3\xbc\xc3\x9f"
     "e aus K\xc3\xb6ln\nFrom: J\xc3\xb6rg M\xc3\xbcller <jm@example.de>"
     "\nTo: \"Ren\xe9 Latin1\" <rene@example.fr>\n"
     "Cc: j\xc3\xb6rg@ex\xc3\xa4mple.de\n"
     "Message-ID: <\xc3\xa9t\xc3\xa9@example.com>\n",
        "(NIL {17}\r\nGr\xc3\xbc\xc3\x9f"
        "e aus K\xc3\xb6ln (({13}\r\n"
        "J\xc3\xb6rg M\xc3\xbcller NIL \"jm\" \"example.de\")) (({13}\r\n"
        "J\xc3\xb6rg M\xc3\xbcller NIL \"jm\" \"example.de\")) (({13}\r\n"
        "J\xc3\xb6rg M\xc3\xbcller NIL \"jm\" \"example.de\")) (({11}\r\n"
        "Ren\xe9 Latin1 NIL \"rene\" \"example.fr\")) ((NIL NIL {5}\r\n"
        "j\xc3\xb6rg {11}\r\nex\xc3\xa4mple.de)) NIL NIL {19}\r\n"
        "<\xc3\xa9t\xc3\xa9@example.com>)"},
    /* quotes */
    {"Subject: he said \"hi\" and \\ left\n"
     "From: \"a \\\"q\\\" b\" <q@x.org>\n"
     "To: \"back\\\\slash\" <b@x.org>\n"
     "Cc: \"five\"\"\"\"\"quotes\" <f@x.org>\n"
     "Date: \"quoted\" \\date\n",
        "(\"\\\"quoted\\\" \\\\date\" {23}\r\n"
        "he said \"hi\" and \\ left (({7}\r\n"
        "a \"q\" b NIL \"q\" \"x.org\")) (({7}\r\n"
        "a \"q\" b NIL \"q\" \"x.org\")) (({7}\r\n"
        "a \"q\" b NIL \"q\" \"x.org\")) (({10}\r\n"
        "back\\slash NIL \"b\" \"x.org\")) (({11}\r\n"
        "five quotes NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) NIL NIL N"
        "IL)"},
    /* folded */
    {"Subject: a folded\n\tsubject with a tab\n"
     "  and spaces\nFrom: Folded\n"
     " Name <f@x.org>\nTo: one@x.org,\n"
     " two@x.org,\n\tThree <three@x.org>\n"
     "Date: Thu, 15 Feb 2007\n"
     " 01:02:03 +0200\nMessage-ID:\n"
     " <folded@id>\n",
        "(\"Thu, 15 Feb 2007 01:02:03 +0200\" {38}\r\n"
        "a folded subject with a tab and spaces ((\"Folded Name\" NIL \"f\""
        " \"x.org\")) ((\"Folded Name\" NIL \"f\" \"x.org\")) ((\"Folded Na"
        "me\" NIL \"f\" \"x.org\")) ((NIL NIL \"one\" \"x.org\")(NIL NIL \""
        "two\" \"x.org\")(\"Three\" NIL \"three\" \"x.org\")) NIL NIL NIL \""
        " <folded@id>\")"},
    /* multiple-from */
    {"From: First <first@x.org>\n"
     "Subject: first subject\n"
     "From: Second <second@x.org>, Third <third@x.org>\n"
     "Subject: second subject\n"
     "Date: one\nDate: two\n",
        "(\"two\" \"second subject\" ((\"First\" NIL \"first\" \"x.org\")(\""
        "Second\" NIL \"second\" \"x.org\")(\"Third\" NIL \"third\" \"x.org"
        "\")) ((\"First\" NIL \"first\" \"x.org\")(\"Second\" NIL \"second\""
        " \"x.org\")(\"Third\" NIL \"third\" \"x.org\")) ((\"First\" NIL \""
        "first\" \"x.org\")(\"Second\" NIL \"second\" \"x.org\")(\"Third\" "
        "NIL \"third\" \"x.org\")) NIL NIL NIL NIL NIL)"},
    /* empty-subject */
    {"Subject:\nFrom: a@b.c\n"
     "To:\nCc: \n",
        "(NIL \"\" ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) ((NI"
        "L NIL \"a\" \"b.c\")) NIL NIL NIL NIL NIL)"},
    /* blank-subject */
    {"Subject:    \nFrom: a@b.c\n",
        "(NIL \"\" ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) ((NI"
        "L NIL \"a\" \"b.c\")) NIL NIL NIL NIL NIL)"},
    /* spaces-subject */
    {"Subject:   lots   of \t  blanks   \n"
     "From: a@b.c\n",
        "(NIL {14}\r\nlots of blanks ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \""
        "a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) NIL NIL NIL NIL NIL)"},
    /* rfc2047 */
    {"Subject: =?UTF-8?B?R3LDvMOfZQ==?= and =?ISO-8859-1?Q?J=F6rg?=\n"
     "From: =?ISO-8859-1?Q?J=F6rg?= <j@x.de>\n"
     "To: \"=?UTF-8?Q?Z=C3=BC?=\" <z@x.de>\n",
        "(NIL \"=?UTF-8?B?R3LDvMOfZQ==?= and =?ISO-8859-1?Q?J=F6rg?=\" ((\""
        "=?ISO-8859-1?Q?J=F6rg?=\" NIL \"j\" \"x.de\")) ((\"=?ISO-8859-1?Q?"
        "J=F6rg?=\" NIL \"j\" \"x.de\")) ((\"=?ISO-8859-1?Q?J=F6rg?=\" NIL "
        "\"j\" \"x.de\")) ((\"=?UTF-8?Q?Z=C3=BC?=\" NIL \"z\" \"x.de\")) NI"
        "L NIL NIL NIL)"},
    /* syntax */
    {"From: joe@\nTo: <a@b\n"
     "Cc: a@b c@d, , e@f\nBcc: Name <>\n"
     "Reply-To: @only.domain\n",
        "(NIL NIL ((NIL NIL \"joe\" \"MISSING_DOMAIN\")) ((NIL NIL \"joe\" "
        "\"MISSING_DOMAIN\")) ((NIL NIL \"MISSING_MAILBOX\" \"only.domain\""
        ")) ((NIL NIL \"a\" \"SYNTAX_ERROR\")) ((NIL NIL \"a\" \"b\")) ((\""
        "Name\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) NIL NIL)"},
    /* route */
    {"From: <@r1.example,@r2.example:u@d.example>\n"
     "To: Name <@r.example:u@d.example>\n"
     "Cc: <@bad:>\n",
        "(NIL NIL ((NIL \"@r1.example,@r2.example\" \"u\" \"d.example\")) ("
        "(NIL \"@r1.example,@r2.example\" \"u\" \"d.example\")) ((NIL \"@r1"
        ".example,@r2.example\" \"u\" \"d.example\")) ((\"Name\" \"@r.examp"
        "le\" \"u\" \"d.example\")) ((NIL \"@bad\" \"MISSING_MAILBOX\" \"MI"
        "SSING_DOMAIN\")) NIL NIL NIL)"},
    /* comments */
    {"From: joe@example.com (Joe Bloggs)\n"
     "To: (lead) x@y.z (trail), Name (c) <n@m.o>\n"
     "Subject: (not a comment)\n",
        "(NIL \"(not a comment)\" ((\"Joe Bloggs\" NIL \"joe\" \"example.co"
        "m\")) ((\"Joe Bloggs\" NIL \"joe\" \"example.com\")) ((\"Joe Blogg"
        "s\" NIL \"joe\" \"example.com\")) ((\"trail\" NIL \"x\" \"y.z\")(\""
        "Name\" NIL \"n\" \"m.o\")) NIL NIL NIL NIL)"},
    /* words */
    {"From: user\nTo: Undisclosed recipients\n"
     "Cc: \"john doe\"\nBcc: \"quoted\" and words\n"
     "Reply-To: a b c, d@e.f\n"
     "Sender: word (comment)\n",
        "(NIL NIL ((NIL NIL \"user\" \"MISSING_DOMAIN\")) ((\"comment\" NIL"
        " \"word\" \"MISSING_DOMAIN\")) ((\"a b c\" NIL \"MISSING_MAILBOX\""
        " \"MISSING_DOMAIN\")(NIL NIL \"d\" \"e.f\")) ((\"Undisclosed recip"
        "ients\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) ((\"john doe\""
        " NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) ((\"quoted and words"
        "\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) NIL NIL)"},
    /* group-broken */
    {"From: a@b.c\nTo: g: bad@, ok@x.y, <z;\n"
     "Cc: h: \"q\";, tail@x.y\n"
     "Bcc: :;\n",
        "(NIL NIL ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) ((NIL"
        " NIL \"a\" \"b.c\")) ((NIL NIL \"g\" NIL)(NIL NIL \"bad\" \"MISSIN"
        "G_DOMAIN\")(NIL NIL \"ok\" \"x.y\")(NIL NIL \"z\" \"SYNTAX_ERROR\""
        ")(NIL NIL NIL NIL)) ((NIL NIL \"h\" NIL)(\"q\" NIL \"MISSING_MAILB"
        "OX\" \"MISSING_DOMAIN\")(NIL NIL NIL NIL)(NIL NIL \"tail\" \"x.y\""
        ")) ((NIL NIL \"\" NIL)(NIL NIL NIL NIL)) NIL NIL)"},
    /* routes-broken */
    {"From: <@r1.example x@y.z>\n"
     "To: <@:u@d.example>\n"
     "Cc: <@r.example,u@d.example>\n"
     "Bcc: <@r.example:>\n",
        "(NIL NIL ((NIL \"INVALID_ROUTE\" \"x\" \"y.z\")) ((NIL \"INVALID_R"
        "OUTE\" \"x\" \"y.z\")) ((NIL \"INVALID_ROUTE\" \"x\" \"y.z\")) ((N"
        "IL \"INVALID_ROUTE\" \"MISSING_MAILBOX\" \"SYNTAX_ERROR\")) ((NIL "
        "\"INVALID_ROUTE\" \"u\" \"d.example\")) ((NIL \"@r.example\" \"MIS"
        "SING_MAILBOX\" \"MISSING_DOMAIN\")) NIL NIL)"},
    /* empty-group-sender */
    {"From: a@b.c\nSender: empty:;\n"
     "Reply-To: (only a comment)\n",
        "(NIL NIL ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"empty\" NIL)(NIL NI"
        "L NIL NIL)) ((NIL NIL \"a\" \"b.c\")) NIL NIL NIL NIL NIL)"},
    /* specials */
    {"Subject: {5}\n braces\n"
     "From: \"paren ( and )\" <p@x.org>\n"
     "To: \"NIL\" <nil@x.org>\n",
        "(NIL {10}\r\n{5} braces ((\"paren ( and )\" NIL \"p\" \"x.org\")) "
        "((\"paren ( and )\" NIL \"p\" \"x.org\")) ((\"paren ( and )\" NIL "
        "\"p\" \"x.org\")) ((\"NIL\" NIL \"nil\" \"x.org\")) NIL NIL NIL NI"
        "L)"},
    /* ids */
    {"From: a@b.c\nIn-Reply-To: <a@b> <c@d>  (comment)\n"
     "Message-ID:   <spaced@id>   \n",
        "(NIL NIL ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) ((NIL"
        " NIL \"a\" \"b.c\")) NIL NIL NIL \"<a@b> <c@d>  (comment)\" \"<spa"
        "ced@id>   \")"},
    /* case */
    {"SUBJECT: upper\nfrom: lower@x.org\n"
     "TO: UP@X.ORG\nmessage-id: <case@id>\n"
     "REPLY-to: r@x.org\n",
        "(NIL \"upper\" ((NIL NIL \"lower\" \"x.org\")) ((NIL NIL \"lower\""
        " \"x.org\")) ((NIL NIL \"r\" \"x.org\")) ((NIL NIL \"UP\" \"X.ORG\""
        ")) NIL NIL NIL \"<case@id>\")"},
    /* literal-domain */
    {"From: user@[192.168.1.1]\n"
     "To: \"john doe\"@example.com\n"
     "Cc: john.q.public@example.com\n",
        "(NIL NIL ((NIL NIL \"user\" \"[192.168.1.1]\")) ((NIL NIL \"user\""
        " \"[192.168.1.1]\")) ((NIL NIL \"user\" \"[192.168.1.1]\")) ((NIL "
        "NIL \"john doe\" \"example.com\")) ((NIL NIL \"john.q.public\" \"e"
        "xample.com\")) NIL NIL NIL)"},
    /* ctl */
    {"Subject: tab\there and \x01"
     "ctl\nFrom: a@b.c\n",
        "(NIL {17}\r\ntab here and \x01"
        "ctl ((NIL NIL \"a\" \"b.c\")) ((NIL NIL \"a\" \"b.c\")) ((NIL NIL "
        "\"a\" \"b.c\")) NIL NIL NIL NIL NIL)"},
};

/* A message of a case's header: CRLF or bare LF line ends. */
static void
env_msg(struct buf *b, const char *hdr, const char *eol)
{
	const char *s;

	buf_reset(b);
	for (s = hdr; *s != '\0'; s++)
		if (*s == '\n')
			buf_add(b, eol, strlen(eol));
		else
			buf_add_u8(b, (uint8_t)*s);
	buf_printf(b, "%sbody%s", eol, eol);
}

/* Is the ENVELOPE of msg want? */
static int
env_is(const void *msg, size_t len, const char *want, size_t wlen)
{
	struct mime_msg m;
	struct buf o;
	int ok;

	if (mime_parse(&m, msg, len) == -1)
		return 0;
	buf_init(&o, 0);
	ok = bs_envelope_write(&m, &o) == 0 && o.len == wlen &&
	     memcmp(o.data, want, wlen) == 0;
	if (!ok)
		fprintf(stderr, "envelope:\n got %.*s\nwant %s\n", (int)o.len,
		    (char *)o.data, want);
	mime_free(&m);
	buf_free(&o);
	return ok;
}

static void
test_envelope(void)
{
	static const char nul[] = "Subject: a\0b\r\n"
	                          "From: \"n\0l\" <n@x.org>\r\n\r\nx\r\n";
	static const char nul_env[] =
	    "(NIL {5}\r\na\xef\xbf\xbd"
	    "b (({5}\r\nn\xef\xbf\xbd"
	    "l NIL \"n\" \"x.org\")) (({5}\r\nn\xef\xbf\xbd"
	    "l NIL \"n\" \"x.org\")) (({5}\r\nn\xef\xbf\xbd"
	    "l NIL \"n\" \"x.org\")) NIL NIL NIL NIL NIL)";
	struct mime_msg m;
	struct buf b, o;
	size_t i, n = sizeof(env_cases) / sizeof(env_cases[0]);

	buf_init(&b, 0);
	buf_init(&o, 0);
	for (i = 0; i < n; i++) {
		env_msg(&b, env_cases[i].hdr, "\r\n");
		CHECK(env_is(
		    b.data, b.len, env_cases[i].env, strlen(env_cases[i].env)));
		/* Line ends do not matter: folding is removed. */
		env_msg(&b, env_cases[i].hdr, "\n");
		CHECK(env_is(
		    b.data, b.len, env_cases[i].env, strlen(env_cases[i].env)));
	}
	/* A NUL in a header is U+FFFD, as Dovecot has it. */
	CHECK(env_is(nul, sizeof(nul) - 1, nul_env, sizeof(nul_env) - 1));
	/* A message/rfc822 part's BODYSTRUCTURE has the same ENVELOPE. */
	for (i = 0; i < n; i++) {
		buf_reset(&b);
		buf_printf(&b, "Content-Type: message/rfc822\r\n\r\n");
		env_msg(&o, env_cases[i].hdr, "\r\n");
		buf_add(&b, o.data, o.len);
		buf_reset(&o);
		CHECK(mime_parse(&m, b.data, b.len) == 0);
		CHECK(bs_write(&m, 1, &o) == 0);
		buf_add_u8(&o, 0);
		CHECK(strstr((char *)o.data, env_cases[i].env) != NULL);
		mime_free(&m);
	}
	buf_free(&b);
	buf_free(&o);
}

/* Databases that cannot be loaded: a clear error, never an engine. */
static void
test_load_errors(void)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], err[512];
	struct av_engine *e;

	e = av_engine_load("/nonexistent/clamav", err, sizeof(err));
	CHECK(e == NULL);
	CHECK(
	    strcmp(err, "/nonexistent/clamav: No such file or directory") == 0);
	snprintf(dir, sizeof(dir), "%s/empty", top);
	CHECK(mkdir(dir, 0755) == 0);
	e = av_engine_load(dir, err, sizeof(err));
	CHECK(e == NULL && strstr(err, dir) != NULL);
	snprintf(path, sizeof(path), "%s/bad.ndb", dir);
	write_file(path, "Broken:0:*:zz\n", 14);
	e = av_engine_load(dir, err, sizeof(err));
	CHECK(e == NULL && strstr(err, "Malformed database") != NULL);
	if (e == NULL && strstr(err, "Malformed database") == NULL)
		fprintf(stderr, "bad.ndb: %s\n", err);
	snprintf(path, sizeof(path), "%s/test.ndb", dbdir);
	e = av_engine_load(path, err, sizeof(err));
	CHECK(e == NULL && strstr(err, "not a directory") != NULL);
}

static void
test_clean(void)
{
	struct scan_res res;
	struct buf b;

	buf_init(&b, 0);
	msg_attach(&b, "notes.txt", "just some notes", 15);
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CLEAN && res.action == ACT_ALLOW);
	CHECK(res.fd == -1 && res.reason[0] == '\0');
	scan(A_STRIP, SCAN_APPEND, &b, &res);
	CHECK(res.verdict == SCAN_CLEAN && res.fd == -1);
	/* An empty message is a message too. */
	scan_message(&cfg->actions[A_STRIP], SCAN_FETCH, "", "", "", 0, &res);
	CHECK(res.verdict == SCAN_CLEAN);
	buf_free(&b);
}

/* EICAR as a base64 attachment, stripped. */
static void
test_strip(void)
{
	struct scan_res res, res2;
	struct result r, r2;
	struct mime_msg m;
	struct buf b;
	const struct mime_part *p;
	size_t head, tail;
	char *deny;

	buf_init(&b, 0);
	msg_attach(&b, "eicar.com", eicar, strlen(eicar));
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(strcmp(res.reason,
	          "virus " EICAR_NAME " in part 2 (eicar.com)") == 0);
	CHECK(result_read(&res, &r) == 0);
	if (r.msg == NULL) {
		scan_res_clear(&res);
		buf_free(&b);
		return;
	}
	/* Everything but part 2 is byte for byte the original. */
	CHECK(mime_parse(&m, b.data, b.len) == 0);
	p = m.root->children->next;
	head = p->hdr_off;
	tail = b.len - p->body_end;
	CHECK(r.msg_len > head + tail);
	CHECK(memcmp(r.msg, b.data, head) == 0);
	CHECK(
	    memcmp(r.msg + r.msg_len - tail, b.data + p->body_end, tail) == 0);
	mime_free(&m);
	/* Part 2 is the deny message, naming the virus and the file. */
	deny = strndup(r.msg + head, r.msg_len - head - tail);
	CHECK(strncmp(deny,
	          "Content-Type: text/plain; charset=utf-8\r\n"
	          "Content-Transfer-Encoding: 7bit\r\n\r\n",
	          76) == 0);
	CHECK(strstr(deny, EICAR_NAME) != NULL);
	CHECK(strstr(deny, "eicar.com") != NULL);
	CHECK(strstr(deny, "\r\n") != NULL && strstr(deny, "\n\n") == NULL);
	free(deny);
	CHECK(strstr(r.msg, "EICAR") == NULL);
	/* BODYSTRUCTURE and BODY describe the result. */
	CHECK(imap_wellformed(r.bs, strlen(r.bs)));
	CHECK(imap_wellformed(r.body, strlen(r.body)));
	CHECK(strstr(r.bs, "\"text\" \"plain\" (\"charset\" \"utf-8\") NIL "
	                   "NIL \"7bit\"") != NULL);
	CHECK(strstr(r.bs, "\"boundary\" \"=-b1\"") != NULL);
	CHECK(strstr(r.body, "\"boundary\"") == NULL);
	/* Deterministic: the same bytes again. */
	scan(A_STRIP, SCAN_FETCH, &b, &res2);
	CHECK(result_read(&res2, &r2) == 0);
	CHECK(r2.size == r.size && memcmp(r.all, r2.all, r.size) == 0);
	result_free(&r);
	result_free(&r2);
	scan_res_clear(&res);
	scan_res_clear(&res2);
	buf_free(&b);
}

/* Some header field of the original, raw, is in s. */
static int
has_field(const char *s, const char *field)
{
	const char *p = strstr(hdrs, field), *e;
	char line[512];

	if (p == NULL)
		return 0;
	/* up to the end of its last line */
	for (e = strstr(p, "\r\n"); e != NULL && (e[2] == ' ' || e[2] == '\t');
	     e = strstr(e + 2, "\r\n"))
		;
	snprintf(line, sizeof(line), "%.*s", (int)(e - p + 2), p);
	return strstr(s, line) != NULL;
}

static void
check_deny_message(const struct result *r, const char *what)
{
	static const char *const kept[] = {"Date:", "From:", "Subject:", "To:",
	    "Cc:", "Message-Id:", "In-Reply-To:", "References:", NULL};
	size_t i;

	for (i = 0; kept[i] != NULL; i++) {
		CHECK(has_field(r->msg, kept[i]));
		if (!has_field(r->msg, kept[i]))
			fprintf(stderr, "deny message lost %s\n", kept[i]);
	}
	CHECK(strstr(r->msg, "X-Mailer:") == NULL);
	CHECK(strstr(r->msg, "Received:") == NULL);
	CHECK(strstr(r->msg, "MIME-Version: 1.0\r\nContent-Type: text/plain; "
	                     "charset=utf-8\r\n") != NULL);
	CHECK(strstr(r->msg, what) != NULL);
	CHECK(strstr(r->msg, "EICAR") == NULL);
	CHECK(imap_wellformed(r->bs, strlen(r->bs)));
	CHECK(strncmp(r->bs, "(\"text\" \"plain\" (\"charset\" \"utf-8\")",
	          35) == 0);
}

/* EICAR as the body of a single-part message: strip cannot cut it out,
 * so the message is denied. */
static void
test_body_deny(void)
{
	struct scan_res res;
	struct result r;
	struct buf b;

	buf_init(&b, 0);
	msg_plain(&b, eicar);
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(strcmp(res.reason, "virus " EICAR_NAME " in part 1") == 0);
	CHECK(result_read(&res, &r) == 0);
	if (r.msg != NULL)
		check_deny_message(&r, "virus " EICAR_NAME " in part 1");
	result_free(&r);
	scan_res_clear(&res);
	buf_free(&b);
}

static void
test_actions(void)
{
	struct scan_res res;
	struct result r;
	struct buf b;

	buf_init(&b, 0);
	msg_attach(&b, "eicar.com", eicar, strlen(eicar));
	scan(A_DENY, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(result_read(&res, &r) == 0);
	if (r.msg != NULL)
		check_deny_message(&r, "in part 2 (eicar.com)");
	result_free(&r);
	scan_res_clear(&res);

	scan(A_DROP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_DROP && res.action == ACT_DROP);
	CHECK(res.fd == -1 && strstr(res.reason, EICAR_NAME) != NULL);
	scan(A_ALLOW, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CLEAN && res.action == ACT_ALLOW);
	CHECK(strstr(res.reason, EICAR_NAME) != NULL);

	/* Uploads are refused, never rewritten. */
	scan(A_STRIP, SCAN_APPEND, &b, &res);
	CHECK(res.verdict == SCAN_REJECT && res.action == ACT_STRIP);
	CHECK(res.fd == -1);
	CHECK(strcmp(res.reason,
	          "virus " EICAR_NAME " in part 2 (eicar.com)") == 0);
	scan(A_DENY, SCAN_APPEND, &b, &res);
	CHECK(res.verdict == SCAN_REJECT && res.action == ACT_DENY);
	scan(A_DROP, SCAN_APPEND, &b, &res);
	CHECK(res.verdict == SCAN_DROP);
	scan(A_ALLOW, SCAN_APPEND, &b, &res);
	CHECK(res.verdict == SCAN_CLEAN);
	/* Antivirus off: nothing to find. */
	scan(A_OFF, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CLEAN && res.reason[0] == '\0');
	buf_free(&b);
}

static void
test_oversize(void)
{
	struct scan_res res;
	struct result r;
	struct buf b;
	char big[1200];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	buf_init(&b, 0);
	msg_plain(&b, big);
	scan(A_SMALL_DENY, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(strstr(res.reason, "larger than max_email_size (1024 bytes)") !=
	      NULL);
	CHECK(result_read(&res, &r) == 0);
	if (r.msg != NULL) {
		CHECK(has_field(r.msg, "Subject:"));
		CHECK(strstr(r.msg, "aaaa") == NULL);
	}
	result_free(&r);
	scan_res_clear(&res);
	scan(A_SMALL_DENY, SCAN_APPEND, &b, &res);
	CHECK(res.verdict == SCAN_REJECT && res.action == ACT_DENY);
	scan(A_SMALL_ALLOW, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CLEAN && res.fd == -1);
	CHECK(strstr(res.reason, "larger") != NULL);
	scan(A_SMALL_DROP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_DROP);
	scan(A_SMALL_DROP, SCAN_APPEND, &b, &res);
	CHECK(res.verdict == SCAN_DROP);
	/* Exactly the limit is not over it. */
	buf_reset(&b);
	buf_printf(&b, "Subject: x\r\n\r\n");
	while (b.len < 1024)
		buf_add_u8(&b, 'b');
	scan(A_SMALL_DENY, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CLEAN);
	buf_free(&b);
}

/* A scan that cannot complete is never clean. */
static void
test_errors(void)
{
	struct scan_res res;
	struct result r;
	struct buf b;
	uint8_t *data;
	size_t i, n = 4 * 1024 * 1024;
	uint32_t x = 1;

	/* Scan time: 1ms on a large attachment. */
	data = malloc(n);
	for (i = 0; i < n; i++) {
		x = x * 1103515245 + 12345;
		data[i] = (uint8_t)(x >> 16);
	}
	buf_init(&b, 0);
	msg_attach(&b, "big.bin", data, n);
	free(data);
	scan(A_SLOW_DENY, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(strstr(res.reason, "scan error") != NULL);
	CHECK(strstr(res.reason, "MaxScanTime") != NULL ||
	      strstr(res.reason, "max_scan_time (1 ms) reached") != NULL);
	CHECK(result_read(&res, &r) == 0);
	result_free(&r);
	scan_res_clear(&res);
	scan(A_SLOW_DENY, SCAN_APPEND, &b, &res);
	CHECK(res.verdict == SCAN_REJECT);
	scan(A_SLOW_DROP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_DROP);
	/* on_error allow: delivered, and the reason says it was not. */
	scan(A_SLOW_ALLOW, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CLEAN && strstr(res.reason, "scan error"));

	/* A temp directory libclamav cannot use: it would say "clean". */
	buf_reset(&b);
	msg_attach(&b, "eicar.com", eicar, strlen(eicar));
	CHECK(
	    av_engine_tmpdir(av_engines_find(dbdir), "/nonexistent/tmp") == 0);
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict != SCAN_CLEAN);
	CHECK(strstr(res.reason, "not writable") != NULL);
	scan_res_clear(&res);
	buf_reset(&b);
	msg_plain(&b, "nothing to see");
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(strstr(res.reason, "/nonexistent/tmp") != NULL);
	scan_res_clear(&res);
	CHECK(av_engine_tmpdir(av_engines_find(dbdir), tmpdir) == 0);
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CLEAN);

	/* No engine for the action (no policy used it at load). */
	scan(0, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(strstr(res.reason, "no antivirus engine") != NULL);
	scan_res_clear(&res);
	buf_free(&b);
}

/* clam.zip holds clam.exe; only clam.exe has a signature. */
static void
test_testfiles(void)
{
	static const char *const files[] = {
	    "clam.zip", "clam.exe", "clam.tar.gz", "clam.7z", NULL};
	struct scan_res res;
	struct buf b;
	size_t i, len;
	char path[PATH_MAX];
	void *d;

	buf_init(&b, 0);
	for (i = 0; files[i] != NULL; i++) {
		snprintf(path, sizeof(path), "%s/%s", TESTFILES, files[i]);
		d = read_file(path, &len);
		buf_reset(&b);
		msg_attach(&b, files[i], d, len);
		g_free(d);
		scan(A_STRIP, SCAN_FETCH, &b, &res);
		CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
		CHECK(strstr(res.reason, CLAMEXE_NAME) != NULL);
		CHECK(strstr(res.reason, files[i]) != NULL);
		if (strstr(res.reason, CLAMEXE_NAME) == NULL)
			fprintf(stderr, "%s: %s %s\n", files[i],
			    scan_verdict_name((int)res.verdict), res.reason);
		scan_res_clear(&res);
	}
	buf_free(&b);
}

/* EICAR in a message/rfc822 inside a multipart: the whole attached
 * message is replaced. */
static void
test_nested(void)
{
	struct scan_res res;
	struct result r;
	struct buf b;

	buf_init(&b, 0);
	buf_printf(&b,
	    "%sMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
	    "--outer\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
	    "--outer\r\nContent-Type: message/rfc822\r\n\r\n"
	    "From: x@example.org\r\nSubject: inner\r\n\r\n%s\r\n"
	    "--outer--\r\n",
	    hdrs, eicar);
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(strstr(res.reason, "in part 2.1") != NULL);
	CHECK(result_read(&res, &r) == 0);
	if (r.msg != NULL) {
		CHECK(strstr(r.msg, "see below") != NULL);
		CHECK(strstr(r.msg, "Subject: inner") == NULL);
		CHECK(strstr(r.bs, "rfc822") == NULL);
	}
	result_free(&r);
	scan_res_clear(&res);
	buf_free(&b);
}

/* ---- sections (BODY[...] and BINARY[...] of a rewritten message) ---- */

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
/* A string literal in n bytes at p. */
#define HAS(p, n, lit) (memmem((p), (n), (lit), sizeof(lit) - 1) != NULL)

struct sect_case {
	int binary;
	const char *spec;
	uint32_t status;
	size_t len;
	const char *want;
};

/* The sanitized nested message (strip of part 4): what Dovecot 2.3.19
 * answers for these sections of it. */
static const struct sect_case sect_pipe_cases[] = {
    {0, "HEADER", SCAN_SECT_OK, 384,
        "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
        "From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
        "Subject: afternoon\r\n"
        " meeting\r\n"
        "To: mooch@owatagu.siam.edu.example\r\n"
        "Cc: \"Some One\" <one@example.org>,\r\n"
        "\ttwo@example.org\r\n"
        "Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
        "X-Mailer: test\r\n"
        "Received: from a\r\n"
        " by b\r\n"
        "Received: from c\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
        "\r\n"},
    {0, "HEADER.FIELDS (From Subject)", SCAN_SECT_OK, 80,
        "From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
        "Subject: afternoon\r\n"
        " meeting\r\n"
        "\r\n"},
    {0, "HEADER.FIELDS (SUBJECT CC)", SCAN_SECT_OK, 85,
        "Subject: afternoon\r\n"
        " meeting\r\n"
        "Cc: \"Some One\" <one@example.org>,\r\n"
        "\ttwo@example.org\r\n"
        "\r\n"},
    {0, "HEADER.FIELDS.NOT (Received Subject)", SCAN_SECT_OK, 311,
        "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
        "From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
        "To: mooch@owatagu.siam.edu.example\r\n"
        "Cc: \"Some One\" <one@example.org>,\r\n"
        "\ttwo@example.org\r\n"
        "Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
        "X-Mailer: test\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
        "\r\n"},
    {0, "header.fields (\"To\" NIL)", SCAN_SECT_OK, 38,
        "To: mooch@owatagu.siam.edu.example\r\n"
        "\r\n"},
    {0,
        "HEADER.FIELDS ({7+}\r\n"
        "Subject)",
        SCAN_SECT_OK, 32,
        "Subject: afternoon\r\n"
        " meeting\r\n"
        "\r\n"},
    {0, "HEADER.FIELDS (\"\")", SCAN_SECT_OK, 2, "\r\n"},
    {0, "1", SCAN_SECT_OK, 12,
        "Hello\r\n"
        "there"},
    {0, "1.MIME", SCAN_SECT_OK, 46,
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"},
    {0, "1.1", SCAN_SECT_OK, 12,
        "Hello\r\n"
        "there"},
    {0, "0", SCAN_SECT_OK, 12,
        "Hello\r\n"
        "there"},
    {0, "2.1", SCAN_SECT_OK, 41,
        "caf=C3=A9 au lait  \r\n"
        "soft=\r\n"
        "break =3D end"},
    {0, "2.1.MIME", SCAN_SECT_OK, 88,
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"},
    {0, "2.2", SCAN_SECT_OK, 20, "PHA+Y2Fmw6k8L3A+DQo="},
    {0, "2.0", SCAN_SECT_OK, 41,
        "caf=C3=A9 au lait  \r\n"
        "soft=\r\n"
        "break =3D end"},
    {0, "3.MIME", SCAN_SECT_OK, 64,
        "Content-Type: message/rfc822\r\n"
        "Content-Description: forwarded\r\n"
        "\r\n"},
    {0, "3.HEADER", SCAN_SECT_OK, 142,
        "From: inner@example.org\r\n"
        "To: x@example.org,\r\n"
        " y@example.org\r\n"
        "Subject: inner\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=in\r\n"
        "\r\n"},
    {0, "3.HEADER.FIELDS (X-A to)", SCAN_SECT_OK, 38,
        "To: x@example.org,\r\n"
        " y@example.org\r\n"
        "\r\n"},
    {0, "3.1", SCAN_SECT_OK, 10, "inner text"},
    {0, "3.1.1", SCAN_SECT_OK, 10, "inner text"},
    {0, "3.1.2", SCAN_SECT_NONE, 0, ""},
    {0, "3.1.2.MIME", SCAN_SECT_NONE, 0, ""},
    {0, "4.MIME", SCAN_SECT_OK, 76,
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"},
    {0, "4", SCAN_SECT_OK, 121,
        "This message was blocked by the IMAP security gateway.\r\n"
        "Reason: virus Eicar-Test-Signature.UNOFFICIAL in part 4 (x.pd"
        "f)\r\n"},
    {0, "99", SCAN_SECT_NONE, 0, ""},
    {0, "1.HEADER", SCAN_SECT_NONE, 0, ""},
    {0, "2.TEXT", SCAN_SECT_NONE, 0, ""},
    {0, "3.1.TEXT", SCAN_SECT_NONE, 0, ""},
    {0, "MIME", SCAN_SECT_BAD, 0, ""},
    {0, "1.", SCAN_SECT_BAD, 0, ""},
    {0, "HEADER.FIELDS ()", SCAN_SECT_BAD, 0, ""},
    {0, "HEADER.FIELDS(From)", SCAN_SECT_BAD, 0, ""},
    {1, "1", SCAN_SECT_OK, 12,
        "Hello\r\n"
        "there"},
    {1, "2.1", SCAN_SECT_LITERAL8, 30,
        "caf\xc3\xa9 au lait\r\n"
        "softbreak = end"},
    {1, "2.2", SCAN_SECT_LITERAL8, 14, "<p>caf\xc3\xa9</p>\r\n"},
    {1, "3.1.1", SCAN_SECT_OK, 10, "inner text"},
    {1, "3.1.2", SCAN_SECT_NONE, 0, ""},
    {1, "3.TEXT", SCAN_SECT_LITERAL8, 161,
        "--in\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "inner text\r\n"
        "--in\r\n"
        "Content-Type: application/octet-stream; name=a.bin\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n"
        "\x00\x01"
        "binary\xfe\xff\r\n"
        "--in--\r\n"},
    {1, "4", SCAN_SECT_OK, 121,
        "This message was blocked by the IMAP security gateway.\r\n"
        "Reason: virus Eicar-Test-Signature.UNOFFICIAL in part 4 (x.pd"
        "f)\r\n"},
    {1, "HEADER", SCAN_SECT_OK, 384,
        "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
        "From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
        "Subject: afternoon\r\n"
        " meeting\r\n"
        "To: mooch@owatagu.siam.edu.example\r\n"
        "Cc: \"Some One\" <one@example.org>,\r\n"
        "\ttwo@example.org\r\n"
        "Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
        "X-Mailer: test\r\n"
        "Received: from a\r\n"
        " by b\r\n"
        "Received: from c\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
        "\r\n"},
    {1, "99", SCAN_SECT_NONE, 0, ""},
    {1, "3.1.2.MIME", SCAN_SECT_NONE, 0, ""},
    {1, "2.HEADER", SCAN_SECT_NONE, 0, ""},
};

/* Messages as they are, and what Dovecot 2.3.19 answers for them. */
static const struct sect_case sect_cut_cases[] = {
    {0, "3.HEADER", SCAN_SECT_OK, 25,
        "Subject: nohdrend\r\n"
        "X-A: z"},
    {0, "3.HEADER.FIELDS (X-A to)", SCAN_SECT_OK, 21,
        "X-A: z\r\n"
        "X-A: next\r\n"
        "\r\n"},
    {0, "3.HEADER.FIELDS.NOT (Subject)", SCAN_SECT_OK, 118,
        "X-A: z\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "X-A: next\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"},
    {0, "4.MIME", SCAN_SECT_OK, 35,
        "Content-Type: text/plain\r\n"
        "X-A: next"},
    {0, "3", SCAN_SECT_OK, 27,
        "Subject: nohdrend\r\n"
        "X-A: z\r\n"},
    {0, "2.HEADER.FIELDS (X-A)", SCAN_SECT_OK, 19,
        "X-A: 1\r\n"
        " folded\r\n"
        "\r\n"},
    {1, "3", SCAN_SECT_OK, 139,
        "Subject: nohdrend\r\n"
        "X-A: z\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "X-A: next\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "aG"},
    {1, "5", SCAN_SECT_LITERAL8, 2, "hi"},
    {1, "", SCAN_SECT_LITERAL8, 644,
        "Subject: s\r\n"
        "X-B: first\r\n"
        "From: f\r\n"
        "X-A: a\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "X-A: part\r\n"
        "\r\n"
        "p1\r\n"
        "--b\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"
        "Subject: in\r\n"
        "X-A: 1\r\n"
        " folded\r\n"
        "NoColonLine\r\n"
        " cont\r\n"
        "subject : two\r\n"
        "X-B: b\r\n"
        "\r\n"
        "inner body\r\n"
        "--b\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"
        "Subject: nohdrend\r\n"
        "X-A: z\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "X-A: next\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "X-A: next\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n"
        "hi\r\n"
        "--b--\r\n"},
};
static const struct sect_case sect_broken_cases[] = {
    {1, "1", SCAN_SECT_BADDATA, 0, ""},
    {1, "2", SCAN_SECT_UNKNOWN_CTE, 0, ""},
    {1, "3", SCAN_SECT_BADDATA, 0, ""},
    {1, "4", SCAN_SECT_OK, 13, "plain 8bit \xc3\xa9"},
    {1, "5", SCAN_SECT_OK, 11, "not decoded"},
    {1, "6", SCAN_SECT_OK, 0, ""},
    {1, "", SCAN_SECT_UNKNOWN_CTE, 0, ""},
    {0, "5.MIME", SCAN_SECT_OK, 70,
        "Content-Transfer-Encoding: base64\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"},
};
static const struct sect_case sect_qpedge_cases[] = {
    {1, "1", SCAN_SECT_LITERAL8, 34,
        "a\r\n"
        "b \r\n"
        "cd==\r\n"
        "tail    next\r\n"
        "\r\n"
        "\xe2\x82\xac\r\n"},
    {1, "TEXT", SCAN_SECT_LITERAL8, 34,
        "a\r\n"
        "b \r\n"
        "cd==\r\n"
        "tail    next\r\n"
        "\r\n"
        "\xe2\x82\xac\r\n"},
};
static const struct sect_case sect_root822_cases[] = {
    {0, "1", SCAN_SECT_OK, 131,
        "From: b@example.org\r\n"
        "Subject: wrapped\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "wrapped=20body=\r\n"
        "\r\n"},
    {0, "1.1", SCAN_SECT_OK, 19,
        "wrapped=20body=\r\n"
        "\r\n"},
    {0, "1.MIME", SCAN_SECT_OK, 72,
        "From: a@example.org\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"},
    {0, "1.HEADER.FIELDS (From)", SCAN_SECT_OK, 23,
        "From: b@example.org\r\n"
        "\r\n"},
    {1, "1", SCAN_SECT_LITERAL8, 116,
        "From: b@example.org\r\n"
        "Subject: wrapped\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n"
        "wrapped body\r\n"},
    {1, "1.1", SCAN_SECT_LITERAL8, 14, "wrapped body\r\n"},
    {1, "TEXT", SCAN_SECT_LITERAL8, 116,
        "From: b@example.org\r\n"
        "Subject: wrapped\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n"
        "wrapped body\r\n"},
};
static const struct sect_case sect_lfonly_cases[] = {
    {0, "", SCAN_SECT_OK, 64,
        "Subject: lf\r\n"
        "From: x\r\n"
        "X-A: 1\r\n"
        " 2\r\n"
        "\r\n"
        "line1\r\n"
        "line2\r\n"
        "line3\r\n"
        "line4\r\n"},
    {0, "HEADER.FIELDS (x-a)", SCAN_SECT_OK, 14,
        "X-A: 1\r\n"
        " 2\r\n"
        "\r\n"},
    {0, "TEXT", SCAN_SECT_OK, 28,
        "line1\r\n"
        "line2\r\n"
        "line3\r\n"
        "line4\r\n"},
};
static const struct sect_case sect_nuls_cases[] = {
    {0, "", SCAN_SECT_OK, 58,
        "Subject: nul\x80x\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "bo\x80"
        "dy\r\n"},
    {1, "", SCAN_SECT_LITERAL8, 58,
        "Subject: nul\x00x\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "bo\x00"
        "dy\r\n"},
    {1, "1", SCAN_SECT_LITERAL8, 7,
        "bo\x00"
        "dy\r\n"},
    {1, "HEADER", SCAN_SECT_OK, 51,
        "Subject: nul\x80x\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"},
};
static const struct sect_case sect_nobody_cases[] = {
    {0, "HEADER.FIELDS (From Subject)", SCAN_SECT_OK, 28,
        "Subject: nobody\r\n"
        "From: x\r\n"
        "\r\n"},
    {0, "HEADER.FIELDS.NOT (Received Subject)", SCAN_SECT_OK, 9, "From: x\r\n"},
    {0, "TEXT", SCAN_SECT_OK, 0, ""},
    {0, "HEADER", SCAN_SECT_OK, 26,
        "Subject: nobody\r\n"
        "From: x\r\n"},
};
static const struct sect_case sect_emptyqp_cases[] = {
    {0, "1.MIME", SCAN_SECT_OK, 71,
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"},
    {1, "", SCAN_SECT_OK, 193,
        "Subject: e\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "plain\r"},
    {1, "1", SCAN_SECT_OK, 0, ""},
};
static const struct sect_case sect_trunc_cases[] = {
    {1, "1", SCAN_SECT_BADDATA, 0, ""},
    {1, "2", SCAN_SECT_BADDATA, 0, ""},
    {1, "3", SCAN_SECT_BADDATA, 0, ""},
};
static const struct sect_case sect_digest_cases[] = {
    {0, "1", SCAN_SECT_OK, 37,
        "From: a@b.test\r\n"
        "Subject: one\r\n"
        "\r\n"
        "first"},
    {0, "1.1", SCAN_SECT_OK, 5, "first"},
    {0, "2.MIME", SCAN_SECT_OK, 28,
        "Content-Type: text/plain\r\n"
        "\r\n"},
    {0, "1.HEADER", SCAN_SECT_OK, 32,
        "From: a@b.test\r\n"
        "Subject: one\r\n"
        "\r\n"},
    {0, "1.MIME", SCAN_SECT_OK, 2, "\r\n"},
};

static const struct {
	const char *msg;
	size_t len;
	const struct sect_case *cases;
	size_t ncases;
} sect_msgs[] = {
    /* cut */
    {"Subject: s\r\n"
     "X-B: first\r\n"
     "From: f\r\n"
     "X-A: a\r\n"
     "MIME-Version: 1.0\r\n"
     "Content-Type: multipart/mixed; boundary=b\r\n"
     "\r\n"
     "--b\r\n"
     "Content-Type: text/plain\r\n"
     "X-A: part\r\n"
     "\r\n"
     "p1\r\n"
     "--b\r\n"
     "Content-Type: message/rfc822\r\n"
     "\r\n"
     "Subject: in\r\n"
     "X-A: 1\r\n"
     " folded\r\n"
     "NoColonLine\r\n"
     " cont\r\n"
     "subject : two\r\n"
     "X-B: b\r\n"
     "\r\n"
     "inner body\r\n"
     "--b\r\n"
     "Content-Type: message/rfc822\r\n"
     "\r\n"
     "Subject: nohdrend\r\n"
     "X-A: z\r\n"
     "--b\r\n"
     "Content-Type: text/plain\r\n"
     "X-A: next\r\n"
     "--b\r\n"
     "Content-Type: text/plain\r\n"
     "Content-Transfer-Encoding: base64\r\n"
     "\r\n"
     "aGk=\r\n"
     "--b--\r\n",
        464, sect_cut_cases, NELEM(sect_cut_cases)},
    /* broken */
    {"Subject: broken\r\n"
     "MIME-Version: 1.0\r\n"
     "Content-Type: multipart/mixed; boundary=b\r\n"
     "\r\n"
     "--b\r\n"
     "Content-Transfer-Encoding: base64\r\n"
     "\r\n"
     "aGk=aGk=\r\n"
     "--b\r\n"
     "Content-Transfer-Encoding: x-uuencode\r\n"
     "\r\n"
     "begin 644 a\r\n"
     "end\r\n"
     "--b\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n"
     "\r\n"
     "bad =ZZ\r\n"
     "--b\r\n"
     "Content-Transfer-Encoding: 8bit\r\n"
     "\r\n"
     "plain 8bit \xc3\xa9\r\n"
     "--b\r\n"
     "Content-Transfer-Encoding: base64\r\n"
     "Content-Transfer-Encoding: 7bit\r\n"
     "\r\n"
     "not decoded\r\n"
     "--b\r\n"
     "Content-Type: text/plain\r\n"
     "Content-Transfer-Encoding: base64\r\n"
     "\r\n"
     "--b--\r\n",
        476, sect_broken_cases, NELEM(sect_broken_cases)},
    /* qpedge */
    {"Subject: qp\r\n"
     "MIME-Version: 1.0\r\n"
     "Content-Transfer-Encoding: Quoted-Printable (yes)\r\n"
     "\r\n"
     "a  \r\n"
     "b=20 \r\n"
     "c=\t\r\n"
     "d=3d=3D\r\n"
     "tail  =\r\n"
     "  next\r\n"
     "\r\n"
     "=E2=82=AC\r\n",
        141, sect_qpedge_cases, NELEM(sect_qpedge_cases)},
    /* root822 */
    {"From: a@example.org\r\n"
     "MIME-Version: 1.0\r\n"
     "Content-Type: message/rfc822\r\n"
     "\r\n"
     "From: b@example.org\r\n"
     "Subject: wrapped\r\n"
     "Content-Type: text/plain\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n"
     "\r\n"
     "wrapped=20body=\r\n"
     "\r\n",
        203, sect_root822_cases, NELEM(sect_root822_cases)},
    /* lfonly */
    {"Subject: lf\n"
     "From: x\n"
     "X-A: 1\n"
     " 2\n"
     "\n"
     "line1\n"
     "line2\r\n"
     "line3\rline4\n",
        56, sect_lfonly_cases, NELEM(sect_lfonly_cases)},
    /* nuls */
    {"Subject: nul\x00x\r\n"
     "Content-Transfer-Encoding: 8bit\r\n"
     "\r\n"
     "bo\x00"
     "dy\r\n",
        58, sect_nuls_cases, NELEM(sect_nuls_cases)},
    /* nobody */
    {"Subject: nobody\r\n"
     "From: x\r\n",
        26, sect_nobody_cases, NELEM(sect_nobody_cases)},
    /* emptyqp */
    {"Subject: e\r\n"
     "MIME-Version: 1.0\r\n"
     "Content-Type: multipart/mixed; boundary=b\r\n"
     "\r\n"
     "--b\r\n"
     "Content-Type: text/plain\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n"
     "\r\n"
     "--b\r\n"
     "Content-Type: text/plain\r\n"
     "\r\n"
     "plain\r\n"
     "--b--\r\n",
        201, sect_emptyqp_cases, NELEM(sect_emptyqp_cases)},
    /* trunc */
    {"Subject: t\r\n"
     "MIME-Version: 1.0\r\n"
     "Content-Type: multipart/mixed; boundary=b\r\n"
     "\r\n"
     "--b\r\n"
     "Content-Transfer-Encoding: base64\r\n"
     "\r\n"
     "aGVsbG8gd29ybGQ\r\n"
     "--b\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n"
     "\r\n"
     "ends in =\r\n"
     "--b\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n"
     "\r\n"
     "x=4\r\n"
     "--b--\r\n",
        262, sect_trunc_cases, NELEM(sect_trunc_cases)},
    /* digest */
    {"From: a@b.test\r\n"
     "MIME-Version: 1.0\r\n"
     "Content-Type: multipart/digest; boundary=d\r\n"
     "\r\n"
     "--d\r\n"
     "\r\n"
     "From: a@b.test\r\n"
     "Subject: one\r\n"
     "\r\n"
     "first\r\n"
     "--d\r\n"
     "Content-Type: text/plain\r\n"
     "\r\n"
     "not a message\r\n"
     "--d--\r\n",
        182, sect_digest_cases, NELEM(sect_digest_cases)},
};

static const char sect_hdrs[] =
    "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    "From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    "Subject: afternoon\r\n meeting\r\n"
    "To: mooch@owatagu.siam.edu.example\r\n"
    "Cc: \"Some One\" <one@example.org>,\r\n\ttwo@example.org\r\n"
    "Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    "X-Mailer: test\r\n"
    "Received: from a\r\n by b\r\n"
    "Received: from c\r\n";

/*
 * The message of the Dovecot comparison: a multipart/alternative with a
 * quoted-printable and a base64 part, a message/rfc822 with a multipart
 * inside, folded header fields; att is part 4 (base64).
 */
static void
msg_nested(struct buf *b, const void *att, size_t attlen)
{
	buf_printf(b,
	    "%sMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
	    "preamble\r\n"
	    "--outer\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
	    "Hello\r\nthere\r\n"
	    "--outer\r\nContent-Type: multipart/alternative; boundary=alt\r\n"
	    "\r\n"
	    "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "caf=C3=A9 au lait  \r\nsoft=\r\nbreak =3D end\r\n"
	    "--alt\r\nContent-Type: text/html; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: base64\r\n\r\n",
	    sect_hdrs);
	b64(b, "<p>caf\xc3\xa9</p>\r\n", 14);
	buf_printf(b,
	    "--alt--\r\n"
	    "--outer\r\nContent-Type: message/rfc822\r\n"
	    "Content-Description: forwarded\r\n\r\n"
	    "From: inner@example.org\r\nTo: x@example.org,\r\n"
	    " y@example.org\r\nSubject: inner\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=in\r\n\r\n"
	    "--in\r\nContent-Type: text/plain\r\n\r\ninner text\r\n"
	    "--in\r\nContent-Type: application/octet-stream; "
	    "name=a.bin\r\n"
	    "Content-Transfer-Encoding: base64\r\n\r\n");
	b64(b,
	    "\x00\x01"
	    "binary\xfe\xff",
	    10);
	buf_printf(b, "--in--\r\n"
	              "--outer\r\nContent-Type: application/pdf; "
	              "name=\"x.pdf\"\r\n"
	              "Content-Transfer-Encoding: base64\r\n"
	              "Content-Disposition: attachment; "
	              "filename=\"x.pdf\"\r\n\r\n");
	b64(b, att, attlen);
	buf_printf(b, "--outer--\r\nepilogue\r\n");
}

static int
sect_match(const struct sect_case *c, uint32_t status, const void *data,
    size_t len, const char *what)
{
	if (status == c->status && len == c->len &&
	    (len == 0 || memcmp(data, c->want, len) == 0))
		return 1;
	fprintf(stderr, "%s: %s[%s]: status %u, %zu bytes; want %u, %zu\n",
	    what, c->binary ? "BINARY" : "BODY", c->spec, status, len,
	    c->status, c->len);
	return 0;
}

/* One section of a message as scand computes it for a result. */
static void
sect_of(const void *msg, size_t len, const struct sect_case *c,
    uint32_t *status, struct buf *out)
{
	struct mime_msg m;
	struct sect s;
	struct sect_content sc;
	struct buf crlf;

	buf_init(&crlf, 0);
	buf_reset(out);
	if (sect_crlf(msg, len, &crlf) == 1) {
		msg = crlf.data;
		len = crlf.len;
	}
	CHECK(mime_parse(&m, msg, len) == 0);
	CHECK(sect_parse(&m, c->binary, c->spec, &s) == 0);
	CHECK(sect_get(&m, &s, &sc) == 0);
	*status = sc.status;
	buf_add(out, sc.ref ? m.data + sc.off : sc.data.data, sc.len);
	sect_content_free(&sc);
	sect_free(&s);
	mime_free(&m);
	buf_free(&crlf);
}

/* Messages as they are: the section code against Dovecot's answers. */
static void
test_sect_dovecot(void)
{
	struct buf out;
	uint32_t st;
	size_t i, k, n = 0;

	buf_init(&out, 0);
	for (i = 0; i < NELEM(sect_msgs); i++)
		for (k = 0; k < sect_msgs[i].ncases; k++, n++) {
			sect_of(sect_msgs[i].msg, sect_msgs[i].len,
			    &sect_msgs[i].cases[k], &st, &out);
			CHECK(sect_match(&sect_msgs[i].cases[k], st, out.data,
			    out.len, "message as is"));
		}
	CHECK(n >= 40);
	buf_free(&out);
}

/* The sections of a result fd: each in it, as Dovecot answers. */
static void
sect_check_result(const struct scan_res *res, const struct result *r,
    const struct sect_case *c, size_t n, const char *what)
{
	size_t i;

	CHECK(res->nsect == n);
	for (i = 0; i < n && i < res->nsect; i++) {
		CHECK(res->sect[i].off <= r->size &&
		      res->sect[i].len <= r->size - res->sect[i].off);
		CHECK(res->sect[i].len > 0 || res->sect[i].off == 0);
		CHECK(sect_match(&c[i], res->sect[i].status,
		    r->all + res->sect[i].off, (size_t)res->sect[i].len, what));
	}
}

/*
 * Through the whole pipeline: strip EICAR from the nested message and
 * ask for sections; the result fd holds what Dovecot answers for the
 * stripped message (captured by appending it to a real Dovecot).
 */
static void
test_sect_pipeline(void)
{
	struct scan_sect sect[SCAN_MAX_SECT];
	struct scan_res res;
	struct result r;
	struct buf b;
	size_t i, n = NELEM(sect_pipe_cases);

	buf_init(&b, 0);
	msg_nested(&b, eicar, strlen(eicar));
	for (i = 0; i < n; i++) {
		sect[i].binary = (uint32_t)sect_pipe_cases[i].binary;
		sect[i].spec = (char *)sect_pipe_cases[i].spec;
	}
	/* then the whole message twice, its decoded form, and aliases */
	sect[n].binary = 0;
	sect[n].spec = "";
	sect[n + 1] = sect[n];
	sect[n + 2].binary = 1;
	sect[n + 2].spec = "";
	sect[n + 3].binary = 1;
	sect[n + 3].spec = "3.2";
	sect[n + 4].binary = 1;
	sect[n + 4].spec = "03.02";
	sect[n + 5].binary = 0;
	sect[n + 5].spec = "TEXT";
	scan_message_sect(&cfg->actions[A_STRIP], SCAN_FETCH, "joe",
	    "192.0.2.1:1234", b.data, b.len, sect, n + 6, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(strstr(res.reason, "in part 4 (x.pdf)") != NULL);
	CHECK(result_read(&res, &r) == 0);
	if (r.all == NULL || res.nsect != n + 6) {
		result_free(&r);
		scan_res_clear(&res);
		buf_free(&b);
		return;
	}
	res.nsect = (uint32_t)n;
	sect_check_result(&res, &r, sect_pipe_cases, n, "stripped");
	/* BODY[] and BODY[TEXT] are the message's own bytes. */
	CHECK(res.sect[n].status == SCAN_SECT_OK && res.sect[n].off == 0 &&
	      res.sect[n].len == res.msg_len);
	CHECK(res.sect[n + 1].off == 0 && res.sect[n + 1].len == res.msg_len);
	CHECK(res.sect[n + 5].off + res.sect[n + 5].len == res.msg_len);
	CHECK(memcmp(r.all + res.sect[n + 5].off, "preamble\r\n", 10) == 0);
	/* BINARY[]: decoded, literal8, written after BODY */
	CHECK(res.sect[n + 2].status == SCAN_SECT_LITERAL8);
	CHECK(res.sect[n + 2].off >= res.body_off + res.body_len);
	CHECK(HAS(r.all + res.sect[n + 2].off, res.sect[n + 2].len,
	    "caf\xc3\xa9 au lait\r\nsoftbreak = end\r\n"));
	CHECK(HAS(r.all + res.sect[n + 2].off, res.sect[n + 2].len,
	    "\r\nContent-Transfer-Encoding: binary\r\n\r\n<p>caf"));
	CHECK(!HAS(r.all + res.sect[n + 2].off, res.sect[n + 2].len, "EICAR"));
	/* the same part asked for twice is written once */
	CHECK(res.sect[n + 3].status == SCAN_SECT_LITERAL8 &&
	      res.sect[n + 3].len == 10);
	CHECK(res.sect[n + 4].off == res.sect[n + 3].off &&
	      res.sect[n + 4].len == 10);
	CHECK(memcmp(r.all + res.sect[n + 3].off,
	          "\x00\x01"
	          "binary\xfe\xff",
	          10) == 0);
	result_free(&r);
	scan_res_clear(&res);

	/* A clean message is not rewritten: no sections. */
	buf_reset(&b);
	msg_nested(&b, "clean", 5);
	scan_message_sect(&cfg->actions[A_STRIP], SCAN_FETCH, "joe",
	    "192.0.2.1:1234", b.data, b.len, sect, n, &res);
	CHECK(res.verdict == SCAN_CLEAN && res.nsect == 0 && res.fd == -1);
	/* Nor is an upload. */
	buf_reset(&b);
	msg_nested(&b, eicar, strlen(eicar));
	scan_message_sect(&cfg->actions[A_STRIP], SCAN_APPEND, "joe",
	    "192.0.2.1:1234", b.data, b.len, sect, n, &res);
	CHECK(res.verdict == SCAN_REJECT && res.nsect == 0);
	buf_free(&b);
}

/*
 * A message with bare LF line ends: sections are of it as a server
 * serves it (CRLF), so none can point into the message in the fd.
 */
static void
test_sect_lf(void)
{
	static const struct sect_case c[] = {
	    {0, "1", SCAN_SECT_OK, 8, "ok\r\nok\r\n"},
	    {0, "HEADER.FIELDS (Subject)", SCAN_SECT_OK, 14,
	        "Subject: x\r\n\r\n"},
	    {0, "3", SCAN_SECT_NONE, 0, ""},
	    {1, "1", SCAN_SECT_OK, 8, "ok\r\nok\r\n"},
	    {1, "9", SCAN_SECT_NONE, 0, ""},
	};
	struct scan_sect sect[NELEM(c) + 1];
	struct scan_res res;
	struct result r;
	struct buf b;
	size_t i;

	buf_init(&b, 0);
	buf_printf(&b,
	    "Subject: x\nMIME-Version: 1.0\n"
	    "Content-Type: multipart/mixed; boundary=b\n\n"
	    "--b\nContent-Type: text/plain\n\nok\nok\n\n"
	    "--b\nContent-Type: application/octet-stream\n\n%s\n"
	    "--b--\n",
	    eicar);
	for (i = 0; i < NELEM(c); i++) {
		sect[i].binary = (uint32_t)c[i].binary;
		sect[i].spec = (char *)c[i].spec;
	}
	sect[i].binary = 0;
	sect[i].spec = "";
	scan_message_sect(&cfg->actions[A_STRIP], SCAN_FETCH, "joe",
	    "192.0.2.1:1234", b.data, b.len, sect, NELEM(c) + 1, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(result_read(&res, &r) == 0);
	if (r.all != NULL && res.nsect == NELEM(c) + 1) {
		res.nsect = NELEM(c);
		sect_check_result(&res, &r, c, NELEM(c), "bare LF");
		/* BODY[]: the message with CRLF, after BODY in the fd */
		CHECK(res.sect[i].off >= res.body_off + res.body_len);
		CHECK(res.sect[i].len > r.msg_len);
		CHECK(HAS(r.all + res.sect[i].off, res.sect[i].len,
		    "\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n"));
	}
	result_free(&r);
	scan_res_clear(&res);
	buf_free(&b);
}

/* Dovecot's decoders, on what GMime's would let through. */
static void
test_sect_decoders(void)
{
	struct buf o;

	buf_init(&o, 0);
	CHECK(sect_base64_decode((const uint8_t *)"aG\r\nk=", 6, &o) == 0);
	CHECK(o.len == 2 && memcmp(o.data, "hi", 2) == 0);
	buf_reset(&o);
	CHECK(sect_base64_decode((const uint8_t *)"aG=\r\n=", 6, &o) == 0);
	CHECK(o.len == 1 && o.data[0] == 'h');
	CHECK(sect_base64_decode((const uint8_t *)"aGk=aGk=", 8, &o) == 1);
	CHECK(sect_base64_decode((const uint8_t *)"aGk==", 5, &o) == 1);
	CHECK(sect_base64_decode((const uint8_t *)"a===", 4, &o) == 1);
	CHECK(sect_base64_decode((const uint8_t *)"aGVsbG8", 7, &o) == 1);
	CHECK(sect_base64_decode((const uint8_t *)"\vaGk=", 5, &o) == 1);
	CHECK(sect_base64_decode((const uint8_t *)"aG-k", 4, &o) == 1);
	buf_reset(&o);
	CHECK(sect_qp_decode(
	          (const uint8_t *)"a  \r\nb=20 \r\nc=\t\r\nd", 18, &o) == 0);
	CHECK(o.len == 9 && memcmp(o.data, "a\r\nb \r\ncd", 9) == 0);
	buf_reset(&o);
	CHECK(sect_qp_decode((const uint8_t *)"x  =\r\n  y=3d  ", 14, &o) == 0);
	CHECK(o.len == 7 && memcmp(o.data, "x    y=", 7) == 0);
	CHECK(sect_qp_decode((const uint8_t *)"bad =ZZ", 7, &o) == 1);
	CHECK(sect_qp_decode((const uint8_t *)"x= y", 4, &o) == 1);
	CHECK(sect_qp_decode((const uint8_t *)"end=", 4, &o) == 1);
	CHECK(sect_qp_decode((const uint8_t *)"x=4", 3, &o) == 1);
	buf_free(&o);
}

/* ---- requests ---- */

static int
memfd_with(const void *data, size_t len)
{
	int fd = memfd_create("req", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd == -1 || write(fd, data, len) != (ssize_t)len)
		die("memfd");
	return fd;
}

static void
req_frame(struct imsg *im, struct buf *p, uint64_t id, uint32_t kind,
    uint32_t action, uint64_t size, int fd)
{
	buf_reset(p);
	buf_add_u64(p, id);
	buf_add_u32(p, kind);
	buf_add_u32(p, action);
	buf_add_str(p, "joe");
	buf_add_str(p, "192.0.2.1:1234");
	buf_add_u64(p, size);
	memset(im, 0, sizeof(*im));
	im->hdr.type = IMSG_SCAN_REQ;
	im->data = p->data;
	im->datalen = p->len;
	im->fd = fd;
}

/* The head of an answer frame in out, read into rd: 1 if it answers id
 * with that verdict and action; its reason (to free) in *reason. */
static int
ans_head(struct reader *rd, const struct buf *out, uint64_t id,
    uint32_t verdict, uint32_t action, char **reason)
{
	int ok;

	imsg_reader(&(struct imsg){.data = out->data, .datalen = out->len}, rd);
	ok = rd_u64(rd) == id;
	ok = rd_u32(rd) == verdict && ok;
	ok = rd_u32(rd) == action && ok;
	*reason = rd_str(rd, SCAN_MAX_REASON);
	return ok && *reason != NULL;
}

static void
test_requests(void)
{
	struct scan_req req;
	struct scan_res res;
	struct imsg im;
	struct buf p, b, out;
	struct reader rd;
	char *reason;

	buf_init(&p, 0);
	buf_init(&b, 0);
	buf_init(&out, 0);
	msg_attach(&b, "eicar.com", eicar, strlen(eicar));

	/* A good one, through to the answer frame. */
	req_frame(
	    &im, &p, 7, SCAN_FETCH, A_STRIP, b.len, memfd_with(b.data, b.len));
	CHECK(scan_req_read(&im, cfg, &req, &res) == 0);
	CHECK(im.fd == -1 && req.fd != -1 && req.reqid == 7);
	scan_request(cfg, &req, &res);
	CHECK(res.reqid == 7 && res.verdict == SCAN_CHANGED);
	CHECK(scan_res_write(&res, &out) == 0);
	CHECK(ans_head(&rd, &out, 7, SCAN_CHANGED, ACT_STRIP, &reason));
	CHECK(reason != NULL && strstr(reason, EICAR_NAME) != NULL);
	free(reason);
	CHECK(rd_u64(&rd) == 0 && rd_u64(&rd) == res.msg_len);
	rd_u64(&rd);
	rd_u64(&rd);
	rd_u64(&rd);
	rd_u64(&rd);
	/* an old-format request: an old-format answer */
	CHECK(rd_end(&rd) == 0);
	scan_res_clear(&res);
	scan_req_clear(&req);

	/* A sealed memfd is mapped rather than copied: same verdict. */
	req_frame(
	    &im, &p, 8, SCAN_APPEND, A_STRIP, b.len, memfd_with(b.data, b.len));
	CHECK(fcntl(im.fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_WRITE) == 0);
	CHECK(scan_req_read(&im, cfg, &req, &res) == 0);
	scan_request(cfg, &req, &res);
	CHECK(res.reqid == 8 && res.verdict == SCAN_REJECT);
	scan_req_clear(&req);

	/* Refused: answered with SCAN_ERROR, never scanned. */
	req_frame(&im, &p, 9, SCAN_FETCH, (uint32_t)cfg->nactions, b.len,
	    memfd_with(b.data, b.len));
	CHECK(scan_req_read(&im, cfg, &req, &res) == 1);
	CHECK(res.reqid == 9 && res.verdict == SCAN_ERROR);
	CHECK(strstr(res.reason, "no action") != NULL);
	scan_req_clear(&req);
	req_frame(&im, &p, 10, SCAN_FETCH, A_STRIP, b.len + 1,
	    memfd_with(b.data, b.len));
	CHECK(scan_req_read(&im, cfg, &req, &res) == 1);
	CHECK(res.verdict == SCAN_ERROR && strstr(res.reason, "size"));
	scan_req_clear(&req);
	req_frame(&im, &p, 11, SCAN_FETCH, A_STRIP, b.len, -1);
	CHECK(scan_req_read(&im, cfg, &req, &res) == 1);
	CHECK(res.verdict == SCAN_ERROR && strstr(res.reason, "no message"));
	scan_req_clear(&req);
	req_frame(&im, &p, 12, 7, A_STRIP, b.len, memfd_with(b.data, b.len));
	CHECK(scan_req_read(&im, cfg, &req, &res) == 1);
	CHECK(res.verdict == SCAN_ERROR && strstr(res.reason, "kind"));
	scan_req_clear(&req);
	/* A pipe is not a memfd. */
	{
		int pp[2];

		CHECK(pipe(pp) == 0);
		close(pp[1]);
		req_frame(&im, &p, 13, SCAN_FETCH, A_STRIP, 0, pp[0]);
		CHECK(scan_req_read(&im, cfg, &req, &res) == 1);
		CHECK(strstr(res.reason, "memfd") != NULL);
		scan_req_clear(&req);
	}
	/* Malformed: the channel is closed. */
	req_frame(&im, &p, 14, SCAN_FETCH, A_STRIP, b.len, -1);
	im.datalen -= 1;
	CHECK(scan_req_read(&im, cfg, &req, &res) == -1);
	scan_req_clear(&req);
	req_frame(&im, &p, 15, SCAN_FETCH, A_STRIP, b.len, -1);
	buf_add_u8(&p, 0);
	im.data = p.data;
	im.datalen = p.len;
	CHECK(scan_req_read(&im, cfg, &req, &res) == -1);
	scan_req_clear(&req);
	buf_free(&p);
	buf_free(&b);
	buf_free(&out);
}

/* Append a section list to a request frame: n sections, all binary/spec
 * but the first (first_bin, first_spec) when that is not NULL. */
static void
req_sect(struct imsg *im, struct buf *p, uint32_t n, uint32_t binary,
    const char *spec, uint32_t first_bin, const char *first_spec)
{
	uint32_t i;

	buf_add_u32(p, n);
	for (i = 0; i < n; i++) {
		buf_add_u32(p, i == 0 && first_spec ? first_bin : binary);
		buf_add_str(p, i == 0 && first_spec ? first_spec : spec);
	}
	im->data = p->data;
	im->datalen = p->len;
}

/* Is section i of a result this status and text? */
static int
sect_is(const struct scan_res *res, size_t i, uint32_t status, const char *s)
{
	size_t n = strlen(s);
	char *d;
	int ok;

	if (res->sect[i].status != status || res->sect[i].len != n)
		return 0;
	if ((d = malloc(n + 1)) == NULL)
		return 0;
	ok = pread(res->fd, d, n, (off_t)res->sect[i].off) == (ssize_t)n &&
	     memcmp(d, s, n) == 0;
	free(d);
	return ok;
}

/* The sections of a request, and of its answer frame. */
static void
test_requests_sect(void)
{
	static const char *const specs[] = {
	    "1", "2", "HEADER.FIELDS (Subject)", "3.MIME", "TEXT"};
	static const uint32_t bins[] = {0, 1, 0, 0, 1};
	struct scan_req req;
	struct scan_res res;
	struct imsg im;
	struct buf p, b, out, big;
	struct reader rd;
	struct stat st;
	uint64_t off, len;
	uint32_t i, status;
	char *reason;

	buf_init(&p, 0);
	buf_init(&b, 0);
	buf_init(&out, 0);
	buf_init(&big, 0);
	msg_attach(&b, "eicar.com", eicar, strlen(eicar));

	/* Five sections, through to the answer frame. */
	req_frame(
	    &im, &p, 20, SCAN_FETCH, A_STRIP, b.len, memfd_with(b.data, b.len));
	buf_add_u32(&p, 5);
	for (i = 0; i < 5; i++) {
		buf_add_u32(&p, bins[i]);
		buf_add_str(&p, specs[i]);
	}
	im.data = p.data;
	im.datalen = p.len;
	CHECK(scan_req_read(&im, cfg, &req, &res) == 0);
	CHECK(req.nsect == 5 && req.sect[1].binary == 1 &&
	      strcmp(req.sect[2].spec, specs[2]) == 0);
	scan_request(cfg, &req, &res);
	CHECK(res.reqid == 20 && res.verdict == SCAN_CHANGED && res.nsect == 5);
	CHECK(scan_res_write(&res, &out) == 0);
	CHECK(fstat(res.fd, &st) == 0);
	CHECK(ans_head(&rd, &out, 20, SCAN_CHANGED, ACT_STRIP, &reason));
	free(reason);
	for (i = 0; i < 6; i++)
		rd_u64(&rd);
	CHECK(rd_u32(&rd) == 5);
	for (i = 0; i < 5; i++) {
		status = rd_u32(&rd);
		off = rd_u64(&rd);
		len = rd_u64(&rd);
		CHECK(status == res.sect[i].status && off == res.sect[i].off &&
		      len == res.sect[i].len);
		CHECK(off + len <= (uint64_t)st.st_size);
	}
	CHECK(rd_end(&rd) == 0);
	/* part 2 is the deny text now; part 3 the HTML part */
	CHECK(sect_is(&res, 0, SCAN_SECT_OK,
	    "Hello Joe, do you think we can meet at 3:30?"));
	CHECK(res.sect[1].status == SCAN_SECT_OK && res.sect[1].len > 0);
	CHECK(sect_is(
	    &res, 2, SCAN_SECT_OK, "Subject: afternoon meeting\r\n\r\n"));
	CHECK(sect_is(&res, 3, SCAN_SECT_OK,
	    "Content-Type: text/html; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"));
	CHECK(res.sect[4].status == SCAN_SECT_LITERAL8);
	scan_res_clear(&res);
	scan_req_clear(&req);

	/* A count of 0: the answer has one too. */
	req_frame(
	    &im, &p, 32, SCAN_FETCH, A_STRIP, b.len, memfd_with(b.data, b.len));
	req_sect(&im, &p, 0, 0, "", 0, NULL);
	CHECK(scan_req_read(&im, cfg, &req, &res) == 0 && req.has_sect);
	scan_request(cfg, &req, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.nsect == 0 && res.has_sect);
	buf_reset(&out);
	CHECK(scan_res_write(&res, &out) == 0);
	CHECK(
	    out.len >= 4 && memcmp(out.data + out.len - 4, "\0\0\0\0", 4) == 0);
	scan_res_clear(&res);
	scan_req_clear(&req);

	/* A clean message: no sections in the answer, but the count. */
	buf_reset(&b);
	msg_attach(&b, "notes.txt", "notes", 5);
	req_frame(
	    &im, &p, 21, SCAN_FETCH, A_STRIP, b.len, memfd_with(b.data, b.len));
	req_sect(&im, &p, 3, 0, "1", 0, NULL);
	CHECK(scan_req_read(&im, cfg, &req, &res) == 0 && req.nsect == 3);
	scan_request(cfg, &req, &res);
	CHECK(res.verdict == SCAN_CLEAN && res.nsect == 0);
	buf_reset(&out);
	CHECK(scan_res_write(&res, &out) == 0);
	CHECK(
	    out.len >= 4 && memcmp(out.data + out.len - 4, "\0\0\0\0", 4) == 0);
	scan_req_clear(&req);

	/* Bounds: 64 sections and a spec of 1024 bytes are fine... */
	buf_add(&big, "HEADER.FIELDS (", 15);
	while (big.len < SCAN_MAX_SECT_SPEC - 1)
		buf_add_u8(&big, 'X');
	buf_add(&big, ")", 1);
	buf_add_u8(&big, 0);
	req_frame(&im, &p, 22, SCAN_FETCH, A_STRIP, b.len, -1);
	req_sect(&im, &p, SCAN_MAX_SECT, 1, "1", 0, (char *)big.data);
	CHECK(scan_req_read(&im, cfg, &req, &res) == 1);
	CHECK(strstr(res.reason, "no message fd") != NULL);
	CHECK(req.nsect == SCAN_MAX_SECT);
	CHECK(strlen(req.sect[0].spec) == SCAN_MAX_SECT_SPEC);
	scan_req_clear(&req);
	/* ... one more of either is refused, the channel kept. */
	req_frame(
	    &im, &p, 23, SCAN_FETCH, A_STRIP, b.len, memfd_with(b.data, b.len));
	req_sect(&im, &p, SCAN_MAX_SECT + 1, 0, "1", 0, NULL);
	CHECK(scan_req_read(&im, cfg, &req, &res) == 1);
	CHECK(res.reqid == 23 && res.verdict == SCAN_ERROR);
	CHECK(strstr(res.reason, "65 sections (at most 64)") != NULL);
	scan_req_clear(&req);
	big.len--;
	buf_add(&big, "X", 2);
	req_frame(
	    &im, &p, 24, SCAN_FETCH, A_STRIP, b.len, memfd_with(b.data, b.len));
	req_sect(&im, &p, 2, 0, (char *)big.data, 0, "1");
	CHECK(scan_req_read(&im, cfg, &req, &res) == 1);
	CHECK(strstr(res.reason, "section 1: spec longer than 1024") != NULL);
	scan_req_clear(&req);
	req_frame(
	    &im, &p, 25, SCAN_FETCH, A_STRIP, b.len, memfd_with(b.data, b.len));
	req_sect(&im, &p, 1, 2, "1", 0, NULL);
	CHECK(scan_req_read(&im, cfg, &req, &res) == 1);
	CHECK(strstr(res.reason, "section 0: binary is 2") != NULL);
	scan_req_clear(&req);
	/* A section that is not one is the section's answer, not the
	 * request's. */
	req_frame(
	    &im, &p, 26, SCAN_FETCH, A_STRIP, b.len, memfd_with(b.data, b.len));
	req_sect(&im, &p, 1, 0, "1.2.MIME.TEXT", 0, NULL);
	CHECK(scan_req_read(&im, cfg, &req, &res) == 0);
	scan_req_clear(&req);

	/* Malformed: cut short, bytes left over, a NUL in a spec. */
	req_frame(&im, &p, 27, SCAN_FETCH, A_STRIP, b.len, -1);
	req_sect(&im, &p, 2, 0, "1", 0, NULL);
	im.datalen -= 1;
	CHECK(scan_req_read(&im, cfg, &req, &res) == -1);
	scan_req_clear(&req);
	req_frame(&im, &p, 28, SCAN_FETCH, A_STRIP, b.len, -1);
	req_sect(&im, &p, 1, 0, "1", 0, NULL);
	buf_add_u8(&p, 0);
	im.data = p.data;
	im.datalen = p.len;
	CHECK(scan_req_read(&im, cfg, &req, &res) == -1);
	scan_req_clear(&req);
	req_frame(&im, &p, 29, SCAN_FETCH, A_STRIP, b.len, -1);
	buf_add(&p, "\1\0", 2); /* half a count */
	im.data = p.data;
	im.datalen = p.len;
	CHECK(scan_req_read(&im, cfg, &req, &res) == -1);
	scan_req_clear(&req);
	req_frame(&im, &p, 30, SCAN_FETCH, A_STRIP, b.len, -1);
	buf_add_u32(&p, 1);
	buf_add_u32(&p, 0);
	buf_add_u32(&p, 3);
	buf_add(&p,
	    "1\0"
	    "2",
	    3);
	im.data = p.data;
	im.datalen = p.len;
	CHECK(scan_req_read(&im, cfg, &req, &res) == -1);
	scan_req_clear(&req);
	/* A count far beyond the frame: cut short, not a long loop. */
	req_frame(&im, &p, 31, SCAN_FETCH, A_STRIP, b.len, -1);
	buf_add_u32(&p, UINT32_MAX);
	buf_add_u32(&p, 0);
	buf_add_str(&p, "1");
	im.data = p.data;
	im.datalen = p.len;
	CHECK(scan_req_read(&im, cfg, &req, &res) == -1);
	CHECK(req.nsect == 1);
	scan_req_clear(&req);
	buf_free(&p);
	buf_free(&b);
	buf_free(&out);
	buf_free(&big);
}

/* A SCAN_F_CUT request frame with sections (BINARY[2], BODY[2],
 * HEADER.FIELDS (Subject)), flags and a policy. */
static void
req_cut(struct imsg *im, struct buf *p, uint64_t id, uint32_t kind,
    const struct buf *m)
{
	req_frame(
	    im, p, id, kind, A_STRIP, m->len, memfd_with(m->data, m->len));
	buf_add_u32(p, 3);
	buf_add_u32(p, 1);
	buf_add_str(p, "2");
	buf_add_u32(p, 0);
	buf_add_str(p, "2");
	buf_add_u32(p, 0);
	buf_add_str(p, "HEADER.FIELDS (Subject)");
	buf_add_u32(p, SCAN_F_CUT);
	buf_add_str(p, "p1");
	im->data = p->data;
	im->datalen = p->len;
}

/* The answer to req_cut() for m: the message as it is, its structure
 * and ENVELOPE as for any changed message, the sections of m. */
static int
cut_answer_ok(const struct scan_res *res, const struct buf *m)
{
	struct result r;
	struct mime_msg pm;
	struct buf bs, body, env, b64m;
	int ok;

	if (res->verdict != SCAN_CHANGED || res->action != ACT_ALLOW ||
	    res->nsect != 3 || result_read(res, &r) == -1)
		return 0;
	buf_init(&bs, 0);
	buf_init(&body, 0);
	buf_init(&env, 0);
	buf_init(&b64m, 0);
	b64(&b64m, eicar, strlen(eicar));
	b64m.len -= 2; /* the line end before the boundary */
	buf_add_u8(&b64m, 0);
	ok = mime_parse(&pm, m->data, m->len) == 0;
	ok = ok && bs_write(&pm, 1, &bs) == 0 && bs_write(&pm, 0, &body) == 0 &&
	     bs_envelope_write(&pm, &env) == 0;
	buf_add_u8(&bs, 0);
	buf_add_u8(&body, 0);
	buf_add_u8(&env, 0);
	ok =
	    ok && r.msg_len == m->len && memcmp(r.msg, m->data, m->len) == 0 &&
	    strcmp(r.bs, (char *)bs.data) == 0 &&
	    strcmp(r.body, (char *)body.data) == 0 &&
	    strcmp(r.env, (char *)env.data) == 0 &&
	    sect_is(res, 0, SCAN_SECT_LITERAL8, eicar) &&
	    sect_is(res, 1, SCAN_SECT_OK, (char *)b64m.data) &&
	    sect_is(res, 2, SCAN_SECT_OK, "Subject: afternoon meeting\r\n\r\n");
	mime_free(&pm);
	buf_free(&bs);
	buf_free(&body);
	buf_free(&env);
	buf_free(&b64m);
	result_free(&r);
	return ok;
}

/* SCAN_F_CUT: a message the gateway sanitized before is not judged
 * again (an EICAR attachment comes back byte for byte) and is answered
 * as a changed one, through to the answer frame. */
static void
test_cut(void)
{
	struct scan_sect sect[1] = {{0, (char *)"TEXT"}};
	struct scan_opts o;
	struct scan_req req;
	struct scan_res res;
	struct result r;
	struct imsg im;
	struct buf p, b, out;
	struct reader rd;
	struct stat st;
	uint32_t i;
	char *reason;

	buf_init(&p, 0);
	buf_init(&b, 0);
	buf_init(&out, 0);
	msg_attach(&b, "eicar.com", eicar, strlen(eicar));

	/* Judged, it is stripped... */
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	scan_res_clear(&res);
	/* ... with SCAN_F_CUT it is not: the request path, the frame. */
	req_cut(&im, &p, 40, SCAN_FETCH, &b);
	CHECK(scan_req_read(&im, cfg, &req, &res) == 0);
	CHECK(req.has_flags && req.flags == SCAN_F_CUT && req.nsect == 3);
	scan_request(cfg, &req, &res);
	CHECK(cut_answer_ok(&res, &b));
	CHECK(strcmp(res.reason, "already sanitized") == 0);
	CHECK(scan_res_write(&res, &out) == 0);
	CHECK(fstat(res.fd, &st) == 0);
	CHECK(ans_head(&rd, &out, 40, SCAN_CHANGED, ACT_ALLOW, &reason));
	free(reason);
	CHECK(rd_u64(&rd) == 0 && rd_u64(&rd) == b.len);
	for (i = 0; i < 4; i++)
		rd_u64(&rd);
	CHECK(rd_u32(&rd) == 3);
	for (i = 0; i < 3 * 5; i++)
		rd_u32(&rd); /* status, off, len */
	for (i = 0; i < 4; i++)
		CHECK(rd_u64(&rd) == 0); /* no report */
	CHECK(rd_u64(&rd) == res.env_off && rd_u64(&rd) == res.env_len);
	CHECK(rd_end(&rd) == 0);
	CHECK(res.env_len > 0 &&
	      res.env_off + res.env_len <= (uint64_t)st.st_size);
	scan_res_clear(&res);
	scan_req_clear(&req);

	/* A request with flags but no CUT: the ENVELOPE of the rewrite at
	 * the end of the frame too; no ENVELOPE without a changed message. */
	req_cut(&im, &p, 41, SCAN_FETCH, &b);
	memset(p.data + p.len - 4 - 4 - 2, 0, 4); /* flags 0 */
	CHECK(scan_req_read(&im, cfg, &req, &res) == 0 && req.flags == 0);
	scan_request(cfg, &req, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(result_read(&res, &r) == 0);
	CHECK(r.env != NULL && strncmp(r.env, "(\"Mon, 7 Feb 1994", 17) == 0);
	result_free(&r);
	buf_reset(&out);
	CHECK(scan_res_write(&res, &out) == 0);
	CHECK(out.len >= 16 &&
	      memcmp(out.data + out.len - 16, &res.env_off, 8) == 0 &&
	      memcmp(out.data + out.len - 8, &res.env_len, 8) == 0);
	scan_res_clear(&res);
	scan_req_clear(&req);
	buf_reset(&b);
	msg_attach(&b, "notes.txt", "notes", 5);
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	CHECK(
	    res.verdict == SCAN_CLEAN && res.env_off == 0 && res.env_len == 0);

	/* Any message, any action: as it is, even one deny would refuse
	 * whole; no scan, no report finding. */
	memset(&o, 0, sizeof(o));
	o.kind = SCAN_FETCH;
	o.flags = SCAN_F_CUT | SCAN_F_REPORT;
	o.sect = sect;
	o.nsect = 1;
	buf_reset(&b);
	msg_plain(&b, eicar);
	scan_message_opts(&cfg->actions[A_DENY], &o, b.data, b.len, &res);
	CHECK(res.verdict == SCAN_CHANGED && res.nsect == 1);
	CHECK(result_read(&res, &r) == 0 && r.msg_len == b.len &&
	      memcmp(r.msg, b.data, b.len) == 0);
	CHECK(strstr((char *)r.all + res.json_off,
	          "\"findings\":[],\"envelope\":\"(\\\"Mon, 7 Feb") != NULL);
	CHECK(res.sect[0].status == SCAN_SECT_OK &&
	      res.sect[0].len == strlen(eicar) + 2);
	result_free(&r);
	scan_res_clear(&res);
	/* An upload is never rewritten: it cannot be one. */
	o.kind = SCAN_APPEND;
	o.flags = SCAN_F_CUT;
	scan_message_opts(&cfg->actions[A_STRIP], &o, b.data, b.len, &res);
	CHECK(res.verdict == SCAN_ERROR && res.fd == -1 &&
	      strstr(res.reason, "SCAN_F_CUT") != NULL);
	/* An ENVELOPE larger than netd takes: an error, not an answer that
	 * would make netd drop the scanner. */
	buf_reset(&b);
	buf_add(&b, "To: ", 4);
	while (b.len < SCAN_MAX_STRUCT / 2)
		buf_add(&b, "a@b.c, ", 7);
	buf_printf(&b, "a@b.c\r\n\r\nx\r\n");
	o.kind = SCAN_FETCH;
	o.nsect = 0;
	scan_message_opts(&cfg->actions[A_STRIP], &o, b.data, b.len, &res);
	CHECK(res.verdict == SCAN_ERROR && res.fd == -1 && res.env_len == 0);
	buf_free(&p);
	buf_free(&b);
	buf_free(&out);
}

/* ---- in scand's sandbox ---- */

static void
put(int fd, int v)
{
	if (write(fd, &v, sizeof(v)) != sizeof(v))
		_exit(91);
}

/* The child: the whole request path under scand's seccomp policy. */
static void
kid_scan(int out)
{
	struct scan_req req;
	struct scan_res res;
	struct imsg im;
	struct buf p, b;
	char err[256], fn[256];
	struct mime_msg m;

	if (av_engines_ready("/tmp", err, sizeof(err)) == -1) {
		fprintf(stderr, "sandboxed: %s\n", err);
		put(out, -1);
		return;
	}
	put(out, 1);
	buf_init(&p, 0);
	buf_init(&b, 0);
	msg_attach(&b, "eicar.com", eicar, strlen(eicar));
	req_frame(
	    &im, &p, 1, SCAN_FETCH, A_STRIP, b.len, memfd_with(b.data, b.len));
	buf_add_u32(&p, 3); /* with sections */
	buf_add_u32(&p, 1);
	buf_add_str(&p, "3");
	buf_add_u32(&p, 0);
	buf_add_str(&p, "HEADER.FIELDS (Subject)");
	buf_add_u32(&p, 1);
	buf_add_str(&p, "");
	im.data = p.data;
	im.datalen = p.len;
	if (scan_req_read(&im, cfg, &req, &res) != 0)
		_exit(95);
	scan_request(cfg, &req, &res);
	put(out, (int)res.verdict);
	put(out, res.fd != -1 && strstr(res.reason, EICAR_NAME) != NULL);
	put(out,
	    res.nsect == 3 &&
	        sect_is(&res, 0, SCAN_SECT_LITERAL8, "<p>caf\xc3\xa9</p>") &&
	        sect_is(&res, 1, SCAN_SECT_OK,
	            "Subject: afternoon meeting\r\n\r\n") &&
	        res.sect[2].status == SCAN_SECT_LITERAL8);
	scan_res_clear(&res);
	scan_req_clear(&req);

	/* The same, already sanitized: answered as it is. */
	req_cut(&im, &p, 2, SCAN_FETCH, &b);
	if (scan_req_read(&im, cfg, &req, &res) != 0)
		_exit(98);
	scan_request(cfg, &req, &res);
	put(out, cut_answer_ok(&res, &b));
	scan_res_clear(&res);
	scan_req_clear(&req);

	buf_reset(&b);
	msg_attach(&b, "notes.txt", "notes", 5);
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	put(out, (int)res.verdict);

	/* a charset GMime converts with a glibc module (CP1252) */
	buf_reset(&b);
	buf_printf(&b, "Content-Type: application/x; name=\"=?windows-1252?Q?"
	               "=80uro.exe?=\"\r\n\r\nx\r\n");
	mime_parse(&m, b.data, b.len);
	mime_filename(&m, m.root, fn, sizeof(fn));
	put(out, strcmp(fn, "\xe2\x82\xac"
	                    "uro.exe") == 0);
	mime_free(&m);

	/* Its /tmp made read-only: every scan fails, none is clean. */
	buf_reset(&b);
	msg_attach(&b, "notes.txt", "notes", 5);
	if (chmod("/tmp", 0500) == -1)
		_exit(96);
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	put(out, (int)res.verdict);
	put(out, strstr(res.reason, "not writable") != NULL);
	scan_res_clear(&res);
	if (chmod("/tmp", 0700) == -1)
		_exit(97);
	buf_free(&p);
	buf_free(&b);
}

static void
kid_zip(int out, const void *zip, size_t len)
{
	struct scan_res res;
	struct buf b;

	buf_init(&b, 0);
	msg_attach(&b, "clam.zip", zip, len);
	scan(A_STRIP, SCAN_FETCH, &b, &res);
	put(out, (int)res.verdict);
	put(out, strstr(res.reason, CLAMEXE_NAME) != NULL);
	buf_free(&b);
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
test_sandboxed(void)
{
	char root[PATH_MAX], t[PATH_MAX], path[PATH_MAX + 32];
	int res[2], rep[2], status, nr, out;
	size_t ziplen;
	void *zip;
	pid_t pid;

	snprintf(root, sizeof(root), "%s/root", top);
	snprintf(t, sizeof(t), "%s/root/tmp", top);
	if (mkdir(root, 0755) == -1 || mkdir(t, 0700) == -1 ||
	    chown(t, NOBODY, NOBODY) == -1)
		die(root);
	snprintf(path, sizeof(path), "%s/clam.zip", TESTFILES);
	zip = read_file(path, &ziplen);
	if (pipe(res) == -1 || pipe(rep) == -1)
		die("pipe");
	fflush(NULL);
	if ((pid = fork()) == -1)
		die("fork");
	if (pid == 0) {
		/* Out of the way of IMAPGW_REPORT_FD first. */
		out = fcntl(res[1], F_DUPFD, 100);
		if (out == -1 || dup2(rep[1], IMAPGW_REPORT_FD) == -1)
			_exit(92);
		if (sandbox_enter_flags(ROLE_SCAND, 0, root, NOBODY, NOBODY) ==
		    -1)
			_exit(90);
		kid_scan(out);
		kid_zip(out, zip, ziplen);
		_exit(0);
	}
	close(res[1]);
	close(rep[1]);
	CHECK(get(res[0]) == 1);
	CHECK(get(res[0]) == SCAN_CHANGED);
	CHECK(get(res[0]) == 1);
	CHECK(get(res[0]) == 1); /* sections */
	CHECK(get(res[0]) == 1); /* SCAN_F_CUT */
	CHECK(get(res[0]) == SCAN_CLEAN);
	CHECK(get(res[0]) == 1);
	CHECK(get(res[0]) == SCAN_CHANGED); /* deny: on_error */
	CHECK(get(res[0]) == 1);
	CHECK(get(res[0]) == SCAN_CHANGED); /* clam.zip */
	CHECK(get(res[0]) == 1);
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		if (read(rep[0], &nr, sizeof(nr)) == sizeof(nr))
			fprintf(stderr,
			    "sandboxed scand killed by system "
			    "call %s\n",
			    sandbox_syscall_name(nr));
		else
			fprintf(
			    stderr, "sandboxed child: status 0x%x\n", status);
	}
	close(res[0]);
	close(rep[0]);
	g_free(zip);
	/* libclamav cleaned up after itself. */
	snprintf(path, sizeof(path), "rmdir %s 2>/dev/null", t);
	CHECK(system(path) == 0);
}

int
main(void)
{
	char err[512];

	if (geteuid() != 0) {
		fprintf(stderr, "test_scan: must run as root\n");
		return 1;
	}
	log_init(LOGT_STDERR, LOGF_TEXT,
	    getenv("TEST_SCAN_DEBUG") ? LOG_DEBUG : LOG_ERR, "test_scan");
	snprintf(top, sizeof(top), "/tmp/imapgw-scan.XXXXXX");
	if (mkdtemp(top) == NULL || chmod(top, 0755) == -1)
		die("mkdtemp");
	atexit(cleanup);
	make_db();
	make_config();
	mime_init();
	CHECK(av_init() == 0);
	CHECK(av_engines_load(cfg, err, sizeof(err)) == 0);
	CHECK(av_engines_find(dbdir) != NULL);
	CHECK(av_engines_find("/var/lib/clamav") == NULL);
	CHECK(av_engines_ready(tmpdir, err, sizeof(err)) == 0);

	test_structure();
	test_bodystructure();
	test_dovecot_cases();
	test_envelope();
	test_load_errors();
	test_clean();
	test_strip();
	test_body_deny();
	test_actions();
	test_oversize();
	test_errors();
	test_testfiles();
	test_nested();
	test_sect_decoders();
	test_sect_dovecot();
	test_sect_pipeline();
	test_sect_lf();
	test_requests();
	test_requests_sect();
	test_cut();
	test_sandboxed();
	config_free(cfg);
	av_engines_free();
	return test_done("test_scan");
}
