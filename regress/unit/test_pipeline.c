/*
 * scand's content pipeline (scand/scan.c): header rules, content types
 * (declared and detected), file names (archive members too), antivirus,
 * APT Blocker, spamBlocker, the actions strip, lock, deny, tag and the
 * report, with the real modules and a signature database, APT database
 * and lock key the test makes.  Needs zip(1).
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "../../scand/scand.h"
#include "config.h"
#include "lock.h"
#include "log.h"
#include "test.h"

static char top[64];
static char eicar[69];
static struct config *cfg;
static uint8_t key[32];
static const char pdf[] = "%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n"
                          "trailer << /Root 1 0 R >>\n%%EOF\n";
static const char apt_high[] = "a dropper the APT database rates high\n";
static const char apt_medium[] = "a tool the APT database rates medium\n";
static const char apt_low[] = "adware the APT database rates low\n";

enum { A_PIPE = 2, A_NOAV };

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

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) == -1 ||
	    write(fd, data, len) != (ssize_t)len || close(fd) == -1)
		die(path);
}

static void
sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int n = 0, i;

	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void
setup(void)
{
	char path[PATH_MAX], h[3][65], err[512];
	struct buf y, e;
	int i;

	snprintf(eicar, sizeof(eicar), "%s%s",
	    "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-",
	    "STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
	snprintf(top, sizeof(top), "/tmp/imapgw-pipe.XXXXXX");
	if (mkdtemp(top) == NULL)
		die("mkdtemp");
	snprintf(path, sizeof(path), "%s/db", top);
	if (mkdir(path, 0755) == -1)
		die(path);
	snprintf(path, sizeof(path), "%s/db/eicar.ndb", top);
	buf_init(&y, 0);
	buf_printf(&y, "Eicar-Test-Signature:0:0:");
	for (i = 0; eicar[i] != '\0'; i++)
		buf_printf(&y, "%02x", (unsigned char)eicar[i]);
	buf_printf(&y, "\n");
	write_file(path, y.data, y.len);
	buf_reset(&y);
	sha256_hex(apt_high, strlen(apt_high), h[0]);
	sha256_hex(apt_medium, strlen(apt_medium), h[1]);
	sha256_hex(apt_low, strlen(apt_low), h[2]);
	buf_printf(&y,
	    "# test threats\n%s high Trojan.Dropper\n"
	    "%s medium Hacktool.Generic\n%s low Adware.Toolbar\n",
	    h[0], h[1], h[2]);
	snprintf(path, sizeof(path), "%s/apt.db", top);
	write_file(path, y.data, y.len);
	buf_reset(&y);
	buf_init(&e, 0);
	buf_printf(&y,
	    "servers: { s: { members: [\"127.0.0.1:143\"] } }\n"
	    "actions:\n"
	    "  pipe:\n"
	    "    content_types: { auto_detect: true, rules: [\n"
	    "      { match: application/pdf, action: lock, name: pdf },\n"
	    "      { match: \"application/x-dosexec\", action: strip } ] }\n"
	    "    filenames: { rules: [ { match: \"*.exe\", action: strip,\n"
	    "                            name: exe, alarm: true } ] }\n"
	    "    headers: { rules: [ { match: \"X-Tracker: *\", action: strip,\n"
	    "                          name: tracker },\n"
	    "      { match: \"^X-Evil: yes$\", type: regex, action: deny,\n"
	    "        name: evil } ] }\n"
	    "    antivirus: { database: %s/db, on_virus: strip,\n"
	    "                 on_error: deny }\n"
	    "    apt_blocker: { enabled: true, database: %s/apt.db,\n"
	    "                   actions: { high: deny, medium: lock,\n"
	    "                              low: allow } }\n"
	    "    spamblocker: { enabled: true, engine: builtin }\n"
	    "  noav: { inherit: pipe, antivirus: { enabled: false } }\n"
	    "policies:\n"
	    "  - { name: p1, listen: \"127.0.0.1:20001\", to: s, "
	    "action: pipe }\n"
	    "  - { name: p2, listen: \"127.0.0.1:20002\", to: s, "
	    "action: noav }\n",
	    top, top);
	cfg = config_load_mem("pipe.yaml", (char *)y.data, y.len, &e);
	if (cfg == NULL) {
		buf_add_u8(&e, 0);
		fprintf(stderr, "%s\n%s", (char *)y.data, (char *)e.data);
		exit(2);
	}
	buf_free(&y);
	buf_free(&e);
	mime_init();
	if (av_init() == -1 || detect_init(err, sizeof(err)) == -1 ||
	    av_engines_load(cfg, err, sizeof(err)) == -1) {
		fprintf(stderr, "setup: %s\n", err);
		exit(2);
	}
	snprintf(path, sizeof(path), "%s/tmp", top);
	if (mkdir(path, 0700) == -1)
		die(path);
	if (av_engines_ready(path, err, sizeof(err)) == -1) {
		fprintf(stderr, "setup: %s\n", err);
		exit(2);
	}
	for (i = 0; i < 32; i++)
		key[i] = (uint8_t)(i * 7 + 1);
	scan_set_lock_key(key);
}

static void
b64(struct buf *b, const void *data, size_t len)
{
	unsigned char line[80];
	size_t off, n;

	for (off = 0; off < len; off += n) {
		n = len - off > 57 ? 57 : len - off;
		EVP_EncodeBlock(
		    line, (const unsigned char *)data + off, (int)n);
		buf_printf(b, "%s\r\n", line);
	}
}

static const char hdrs[] = "From: Ann <ann@example.org>\r\n"
                           "To: Bob <bob@example.org>\r\n"
                           "Subject: the report\r\n"
                           "Message-ID: <p1@example.org>\r\n"
                           "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n";

/* text, then an attachment of type ctype named name. */
static void
msg_att(struct buf *b, const char *extra, const char *ctype, const char *name,
    const void *data, size_t len)
{
	buf_printf(b, "%s%sMIME-Version: 1.0\r\n", hdrs, extra);
	buf_printf(b, "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
	              "--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
	              "--b1\r\n");
	buf_printf(b,
	    "Content-Type: %s; name=\"%s\"\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n",
	    ctype, name, name);
	b64(b, data, len);
	buf_printf(b, "--b1--\r\n");
}

static void
msg_plain(struct buf *b, const char *extra, const char *body)
{
	buf_printf(b, "%s%s\r\n%s\r\n", hdrs, extra, body);
}

struct out {
	char *msg;
	size_t len;
	char *json, *text;
};

static void
judge(int action, int kind, const struct buf *m, struct scan_res *res,
    struct out *o)
{
	struct scan_opts opt;
	uint8_t *all = NULL;
	struct stat st;

	memset(&opt, 0, sizeof(opt));
	opt.kind = kind;
	opt.flags = SCAN_F_REPORT;
	opt.user = "joe";
	opt.client = "192.0.2.1:1234";
	opt.policy = "p1";
	memset(o, 0, sizeof(*o));
	scan_message_opts(&cfg->actions[action], &opt, m->data, m->len, res);
	CHECK(res->fd != -1);
	if (res->fd == -1 || fstat(res->fd, &st) == -1)
		return;
	all = malloc((size_t)st.st_size + 1);
	if (pread(res->fd, all, (size_t)st.st_size, 0) != st.st_size) {
		free(all);
		return;
	}
	CHECK(res->json_off + res->json_len <= (uint64_t)st.st_size);
	CHECK(res->text_off + res->text_len <= (uint64_t)st.st_size);
	o->json = strndup((char *)all + res->json_off, res->json_len);
	o->text = strndup((char *)all + res->text_off, res->text_len);
	if (res->verdict == SCAN_CHANGED) {
		o->msg = malloc(res->msg_len + 1);
		memcpy(o->msg, all + res->msg_off, res->msg_len);
		o->msg[res->msg_len] = '\0';
		o->len = res->msg_len;
	}
	free(all);
}

static void
out_free(struct out *o, struct scan_res *res)
{
	free(o->msg);
	free(o->json);
	free(o->text);
	memset(o, 0, sizeof(*o));
	scan_res_clear(res);
}

static void
test_clean(void)
{
	struct scan_res res;
	struct out o;
	struct buf b;

	buf_init(&b, 0);
	msg_plain(&b, "", "just words");
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CLEAN && res.action == ACT_ALLOW);
	CHECK(o.json && strstr(o.json, "\"verdict\":\"clean\"") != NULL);
	CHECK(o.json && strstr(o.json, "\"findings\":[]") != NULL);
	CHECK(o.json && strstr(o.json, "\"envelope\"") == NULL);
	CHECK(res.env_off == 0 && res.env_len == 0);
	CHECK(o.text && strncmp(o.text, "verdict: clean\n", 15) == 0);
	out_free(&o, &res);
	buf_free(&b);
}

/* A stripped header field: every other byte is the original's. */
static void
test_header_strip(void)
{
	struct scan_res res;
	struct out o;
	struct buf b, want;

	buf_init(&b, 0);
	buf_init(&want, 0);
	msg_plain(&b, "X-Tracker: campaign 7\r\n\tfolded\r\n", "words");
	msg_plain(&want, "", "words");
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(o.len == want.len && o.msg != NULL &&
	      memcmp(o.msg, want.data, want.len) == 0);
	CHECK(o.json && strstr(o.json, "\"stage\":\"header\"") != NULL);
	CHECK(o.json && strstr(o.json, "\"rule\":\"tracker\"") != NULL);
	CHECK(o.json && strstr(o.json, "],\"envelope\":\"(") != NULL);
	CHECK(res.env_len > 0);
	out_free(&o, &res);
	/* An upload is refused instead. */
	judge(A_PIPE, SCAN_APPEND, &b, &res, &o);
	CHECK(res.verdict == SCAN_REJECT);
	CHECK(o.json && strstr(o.json, "\"envelope\"") == NULL);
	out_free(&o, &res);
	/* The ENVELOPE in the report: its bytes from 0x80 up as
	 * \u0080..\u00ff, the literal's CRLF escaped. */
	buf_reset(&b);
	buf_printf(&b, "Subject: caf\xc3\xa9\r\nX-Tracker: 7\r\n\r\nwords\r\n");
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED);
	CHECK(o.json && strstr(o.json, "\"envelope\":\"(NIL {5}\\u000d\\u000a"
	                               "caf\\u00c3\\u00a9 NIL NIL NIL NIL NIL "
	                               "NIL NIL NIL)\"}") != NULL);
	out_free(&o, &res);
	/* A regex rule with deny. */
	buf_reset(&b);
	msg_plain(&b, "X-Evil: yes\r\n", "words");
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(o.msg && strstr(o.msg, "\r\nX-Evil: yes\r\n") == NULL);
	CHECK(o.msg && strstr(o.msg, "Subject: the report\r\n") != NULL);
	CHECK(o.msg && strstr(o.msg, "header rule evil") != NULL);
	out_free(&o, &res);
	buf_free(&b);
	buf_free(&want);
}

/* GTUBE: the subject gets the tag, nothing else changes. */
static void
test_spam_tag(void)
{
	struct scan_res res, res2;
	struct out o, o2;
	struct buf b, want;
	const char *gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-"
	                    "ANTI-UBE-TEST-EMAIL*C.34X";
	const char *s;

	buf_init(&b, 0);
	buf_init(&want, 0);
	msg_plain(&b, "", gtube);
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_TAG);
	s = strstr((const char *)b.data, "Subject: ");
	buf_add(&want, b.data, (size_t)(s - (const char *)b.data) + 9);
	buf_printf(&want, "***SPAM*** ");
	buf_add(&want, s + 9, b.len - (size_t)(s + 9 - (const char *)b.data));
	CHECK(o.len == want.len && o.msg != NULL &&
	      memcmp(o.msg, want.data, want.len) == 0);
	CHECK(o.json && strstr(o.json, "\"category\":\"confirmed\"") != NULL);
	/* The same message twice: the same bytes. */
	judge(A_PIPE, SCAN_FETCH, &b, &res2, &o2);
	CHECK(o2.len == o.len && o.msg && o2.msg &&
	      memcmp(o.msg, o2.msg, o.len) == 0);
	out_free(&o2, &res2);
	out_free(&o, &res);
	/* Uploads are not judged by spamBlocker. */
	judge(A_PIPE, SCAN_APPEND, &b, &res, &o);
	CHECK(res.verdict == SCAN_CLEAN);
	out_free(&o, &res);
	buf_free(&b);
	buf_free(&want);
}

/* A file name rule and a content type rule on the detected type. */
static void
test_rules(void)
{
	struct scan_res res;
	struct out o;
	struct buf b;

	buf_init(&b, 0);
	msg_att(&b, "", "application/octet-stream", "setup.exe", "MZ", 2);
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(o.msg && strstr(o.msg, "setup.exe") != NULL); /* deny text */
	CHECK(o.msg && strstr(o.msg, "TVo=") == NULL); /* part gone */
	CHECK(o.msg && strstr(o.msg, "hello\r\n") != NULL);
	CHECK(o.json && strstr(o.json, "\"stage\":\"filename\"") != NULL);
	CHECK(o.json && strstr(o.json, "\"alarm\":true") != NULL);
	out_free(&o, &res);

	/* A PDF declared as octet-stream: found by its detected type,
	 * locked; the locked part opens to the original. */
	buf_reset(&b);
	msg_att(
	    &b, "", "application/octet-stream", "report.bin", pdf, strlen(pdf));
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_LOCK);
	CHECK(o.json && strstr(o.json, "\"detected\":\"application/pdf\""));
	CHECK(o.msg && strstr(o.msg, "Content-Type: " LOCK_CTYPE
	                             "; name=\"report.bin.locked\"") != NULL);
	if (o.msg != NULL) {
		struct mime_msg m;
		const struct mime_part *p;
		struct buf body, orig;
		char name[256], ctype[128], err[256];

		CHECK(mime_parse(&m, o.msg, o.len) == 0);
		p = m.root->children ? m.root->children->next : NULL;
		CHECK(p != NULL);
		buf_init(&body, 0);
		buf_init(&orig, 0);
		if (p != NULL && mime_decode_body(&m, p, &body) == 0) {
			CHECK(lock_open(key, body.data, body.len, &orig, name,
			          sizeof(name), ctype, sizeof(ctype), err,
			          sizeof(err)) == 0);
			CHECK(orig.len == strlen(pdf) &&
			      memcmp(orig.data, pdf, orig.len) == 0);
			CHECK(strcmp(name, "report.bin") == 0);
		}
		buf_free(&body);
		buf_free(&orig);
		mime_free(&m);
	}
	out_free(&o, &res);

	/* Declared text: libmagic is asked only when the bytes are not
	 * text (a NUL here), and then its type counts. */
	{
		char bin[sizeof(pdf) + 1];

		memcpy(bin, pdf, sizeof(pdf));
		bin[12] = '\0';
		buf_reset(&b);
		msg_att(&b, "", "text/plain", "notes.txt", bin, sizeof(bin));
		judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
		CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_LOCK);
		CHECK(o.json && strstr(o.json, "\"detected\":\"application/"
		                               "pdf\"") != NULL);
		out_free(&o, &res);
		buf_reset(&b);
		msg_att(&b, "", "text/plain", "notes.txt", "just text\r\n", 11);
		judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
		CHECK(res.verdict == SCAN_CLEAN);
		CHECK(o.json && strstr(o.json, "\"detected\"") == NULL);
		out_free(&o, &res);
	}
	buf_free(&b);
}

/* A member of a ZIP attachment. */
static void
test_archive(void)
{
	char cmd[512], path[PATH_MAX];
	struct scan_res res;
	struct out o;
	struct buf b;
	uint8_t zip[4096];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/evil.exe", top);
	write_file(path, "not really", 10);
	snprintf(cmd, sizeof(cmd), "cd %s && zip -q -X pack.zip evil.exe", top);
	if (system(cmd) != 0) {
		CHECK(!"zip(1) works");
		return;
	}
	snprintf(path, sizeof(path), "%s/pack.zip", top);
	if ((fd = open(path, O_RDONLY)) == -1 ||
	    (n = read(fd, zip, sizeof(zip))) <= 0)
		die(path);
	close(fd);
	buf_init(&b, 0);
	msg_att(&b, "", "application/zip", "pack.zip", zip, (size_t)n);
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(o.json && strstr(o.json, "\"member\":\"evil.exe\"") != NULL);
	CHECK(o.msg && strstr(o.msg, "member evil.exe of part 2") != NULL);
	out_free(&o, &res);
	buf_free(&b);
}

/* APT Blocker: one action per level; AV-infected parts are not looked
 * up. */
static void
test_apt(void)
{
	struct scan_res res;
	struct out o;
	struct buf b;

	buf_init(&b, 0);
	msg_att(&b, "", "application/octet-stream", "a.dat", apt_high,
	    strlen(apt_high));
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(o.json && strstr(o.json, "\"threat\":\"Trojan.Dropper\""));
	CHECK(o.json && strstr(o.json, "\"level\":\"high\""));
	CHECK(o.msg && strstr(o.msg, "Trojan.Dropper") != NULL);
	out_free(&o, &res);

	buf_reset(&b);
	msg_att(&b, "", "application/octet-stream", "b.dat", apt_medium,
	    strlen(apt_medium));
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_LOCK);
	CHECK(o.msg && strstr(o.msg, "b.dat.locked") != NULL);
	out_free(&o, &res);

	buf_reset(&b);
	msg_att(&b, "", "application/octet-stream", "c.dat", apt_low,
	    strlen(apt_low));
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CLEAN && res.action == ACT_ALLOW);
	CHECK(o.json && strstr(o.json, "\"level\":\"low\""));
	out_free(&o, &res);

	/* EICAR: antivirus, not APT (it is not in the APT database
	 * anyway; the order is what is checked: one finding). */
	buf_reset(&b);
	msg_att(
	    &b, "", "application/octet-stream", "e.com", eicar, strlen(eicar));
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(o.json && strstr(o.json, "\"stage\":\"antivirus\"") &&
	      !strstr(o.json, "\"stage\":\"apt\""));
	out_free(&o, &res);
	/* Without antivirus, the same part is not infected for us. */
	judge(A_NOAV, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CLEAN);
	out_free(&o, &res);
	buf_free(&b);
}

/* Several findings combine: tag and strip; deny wins over both. */
static void
test_combined(void)
{
	struct scan_res res;
	struct out o;
	struct buf b;

	buf_init(&b, 0);
	msg_att(&b, "X-Tracker: x\r\n", "application/octet-stream", "run.exe",
	    "MZ", 2);
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_STRIP);
	CHECK(o.msg && strstr(o.msg, "X-Tracker") == NULL);
	CHECK(o.msg && strstr(o.msg, "run.exe") != NULL);
	out_free(&o, &res);

	buf_reset(&b);
	msg_att(&b, "X-Evil: yes\r\n", "application/octet-stream", "run.exe",
	    "MZ", 2);
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(o.msg && strstr(o.msg, "multipart") == NULL);
	CHECK(o.text && strstr(o.text, "finding: filename:") != NULL);
	CHECK(o.text && strstr(o.text, "finding: header:") != NULL);
	out_free(&o, &res);
	buf_free(&b);
}

/* Without a lock key, lock falls back to deny: never the original. */
static void
test_no_key(void)
{
	struct scan_res res;
	struct out o;
	struct buf b;

	scan_set_lock_key(NULL);
	buf_init(&b, 0);
	msg_att(
	    &b, "", "application/octet-stream", "report.bin", pdf, strlen(pdf));
	judge(A_PIPE, SCAN_FETCH, &b, &res, &o);
	CHECK(res.verdict == SCAN_CHANGED && res.action == ACT_DENY);
	CHECK(o.msg && strstr(o.msg, "JVBERi0x") == NULL);
	out_free(&o, &res);
	buf_free(&b);
	scan_set_lock_key(key);
}

int
main(void)
{
	char cmd[128];

	log_init(LOGT_STDERR, LOGF_TEXT, LOG_WARNING, "test");
	setup();
	test_clean();
	test_header_strip();
	test_spam_tag();
	test_rules();
	test_archive();
	test_apt();
	test_combined();
	test_no_key();
	config_free(cfg);
	av_engines_free();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", top);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", top);
	return test_done("test_pipeline");
}
