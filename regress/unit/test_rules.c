/*
 * scand's rules (wildcards, exact, PCRE2 under limits), content types by
 * libmagic and archive members by libarchive, on samples the test makes
 * with zip, gzip, bzip2, xz and tar; then the same work in a child inside
 * scand's real sandbox (chroot, user, seccomp).  Needs root (the sandbox)
 * and the zip, gzip, bzip2, xz and tar commands.
 */
#include <sys/types.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../scand/scand.h"
#include "config.h"
#include "imapgw.h"
#include "log.h"
#include "sandbox.h"
#include "test.h"

#define NOBODY 65534
#define MB (1024 * 1024)

static char top[64]; /* the test's directory */

/* ---- setup ---- */

static void
die(const char *what)
{
	perror(what);
	exit(2);
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

static void
write_file(const char *name, const void *data, size_t len)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", top, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd == -1 || write(fd, data, len) != (ssize_t)len)
		die(path);
	close(fd);
}

/* A sample the shell made: the whole file, to free. */
struct sample {
	uint8_t *data;
	size_t len;
};

static struct sample
load(const char *name)
{
	char path[PATH_MAX];
	struct sample s;
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", top, name);
	if ((fd = open(path, O_RDONLY)) == -1 || fstat(fd, &st) == -1)
		die(path);
	s.len = (size_t)st.st_size;
	if ((s.data = malloc(s.len ? s.len : 1)) == NULL)
		die("malloc");
	if (read(fd, s.data, s.len) != (ssize_t)s.len)
		die(path);
	close(fd);
	return s;
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A minimal PE: an MZ header whose e_lfanew points at "PE\0\0", a COFF
 * header (i386, one section, a 32-bit optional header) and the optional
 * header's magic 0x10b. */
static uint8_t pe[512];

static void
put16(uint8_t *p, unsigned int v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8 & 0xff;
}

static void
put32(uint8_t *p, uint32_t v)
{
	put16(p, v & 0xffff);
	put16(p + 2, v >> 16);
}

static void
make_pe(void)
{
	uint8_t *coff = pe + 0x84, *opt = pe + 0x98;

	memset(pe, 0, sizeof(pe));
	pe[0] = 'M';
	pe[1] = 'Z';
	put16(pe + 0x18, 0x40); /* e_lfarlc: not a plain DOS program */
	put32(pe + 0x3c, 0x80); /* e_lfanew */
	memcpy(pe + 0x80, "PE\0\0", 4);
	put16(coff, 0x14c); /* Machine: i386 */
	put16(coff + 2, 1); /* NumberOfSections */
	put16(coff + 16, 0xe0); /* SizeOfOptionalHeader */
	put16(coff + 18, 0x0102); /* executable, 32-bit */
	put16(opt, 0x10b); /* PE32 */
	put16(opt + 68, 2); /* Subsystem: Windows GUI */
}

static const char pdf[] = "%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
                          "trailer\n<< /Root 1 0 R >>\n%%EOF\n";
static const char text[] = "Hello, this is plain text.\nSecond line.\n";
static const char html[] = "<!DOCTYPE html>\n<html><head><title>x</title>"
                           "</head><body>hi</body></html>\n";
static const char shell[] = "#!/bin/sh\necho hello\n";

static void
make_samples(void)
{
	char cmd[8192];

	make_pe();
	write_file("pe.exe", pe, sizeof(pe));
	write_file("a.pdf", pdf, strlen(pdf));
	write_file("t.txt", text, strlen(text));
	write_file("h.html", html, strlen(html));
	write_file("s.sh", shell, strlen(shell));
	snprintf(cmd, sizeof(cmd),
	    "set -e; cd %s; exec >/dev/null 2>&1\n"
	    "zip -q a.zip t.txt pe.exe\n"
	    "mkdir sub; echo sub > sub/f.txt; ln -s t.txt link; "
	    "ln t.txt hard.txt\n"
	    "zip -q -y ds.zip sub sub/f.txt link\n"
	    "gzip -c t.txt > t.gz; gzip -n -c t.txt > n.gz\n"
	    "tar cf t.tar t.txt hard.txt pe.exe sub link\n"
	    "gzip -c t.tar > t.tgz; bzip2 -c t.tar > t.tbz; "
	    "xz -c t.tar > t.txz\n"
	    "bzip2 -c t.txt > t.bz2\n"
	    "echo deep > deep.txt; zip -q n1.zip deep.txt; "
	    "zip -q n2.zip n1.zip; zip -q n3.zip n2.zip\n"
	    "tar czf mix.tgz n1.zip t.gz\n"
	    "zip -q -P secret enc.zip t.txt\n"
	    "zip -q n2enc.zip enc.zip\n"
	    "head -c 10485760 /dev/zero > zeros; zip -q bomb.zip zeros; "
	    "gzip -c zeros > bomb.gz; rm zeros\n"
	    "head -c 104857600 /dev/zero | gzip -c > big.gz\n"
	    "head -c 40 a.zip > trunc.zip\n"
	    "head -c 100 t.tgz > trunc.tgz\n"
	    "for i in 1 2 3 4 5; do echo $i > m$i.txt; done; "
	    "zip -q many.zip m1.txt m2.txt m3.txt m4.txt m5.txt\n"
	    "printf x > \"$(printf 'caf\\303\\251.exe')\"; "
	    "printf x > \"$(printf 'tab\\tname.txt')\"; "
	    "printf x > \"$(printf 'l\\351at.txt')\"\n"
	    "LC_ALL=C zip -q names.zip caf*.exe tab*name.txt l*at.txt\n"
	    "(head -c 1024 /dev/zero; cat pe.exe) | gzip -c > hide.gz\n"
	    "cat pe.exe a.zip > sfx.exe\n"
	    "tar --format=v7 -cf v7.tar t.txt pe.exe\n",
	    top);
	if (system(cmd) != 0) {
		fprintf(stderr, "making the samples failed (zip, gzip, bzip2, "
		                "xz, tar installed?)\n");
		exit(2);
	}
}

/* ---- rules ---- */

static struct rule_set *
compile(struct cfg_rule *r, size_t n, char *err, size_t errlen)
{
	struct cfg_rules cr;

	memset(&cr, 0, sizeof(cr));
	cr.rules = r;
	cr.nrules = n;
	return rules_compile(&cr, err, errlen);
}

static int
match1(const struct rule_set *rs, const char *s)
{
	return rules_match(rs, &s, 1);
}

static void
test_wildcard(void)
{
	char *s, *p;
	double t;
	size_t i;

	CHECK(rules_wildcard("", "") == 1);
	CHECK(rules_wildcard("", "a") == 0);
	CHECK(rules_wildcard("a", "") == 0);
	CHECK(rules_wildcard("*", "") == 1);
	CHECK(rules_wildcard("*", "anything at all") == 1);
	CHECK(rules_wildcard("**", "") == 1);
	CHECK(rules_wildcard("***", "x") == 1);
	CHECK(rules_wildcard("?", "") == 0);
	CHECK(rules_wildcard("?", "a") == 1);
	CHECK(rules_wildcard("?", "ab") == 0);
	CHECK(rules_wildcard("*?", "") == 0);
	CHECK(rules_wildcard("*?", "a") == 1);
	CHECK(rules_wildcard("?*", "abc") == 1);
	CHECK(rules_wildcard("a*b*c", "abc") == 1);
	CHECK(rules_wildcard("a*b*c", "aXXbYYc") == 1);
	CHECK(rules_wildcard("a*b*c", "abcabc") == 1);
	CHECK(rules_wildcard("a*b*c", "acb") == 0);
	CHECK(rules_wildcard("a*b*c", "abcab") == 0);
	CHECK(rules_wildcard("a*b*c", "xabc") == 0);
	CHECK(rules_wildcard("*x", "xxxx") == 1);
	CHECK(rules_wildcard("*xy", "xxxxy") == 1);
	CHECK(rules_wildcard("*xy", "xxxx") == 0);
	CHECK(rules_wildcard("a?c", "abc") == 1);
	CHECK(rules_wildcard("a?c", "ac") == 0);
	/* case: ASCII letters only */
	CHECK(rules_wildcard("*.exe", "Invoice.PDF.EXE") == 1);
	CHECK(rules_wildcard("*.EXE", "setup.exe") == 1);
	CHECK(rules_wildcard("*.exe", "setup.exe.txt") == 0);
	CHECK(rules_wildcard("*.exe", "setup.exe ") == 0);
	CHECK(rules_wildcard("APPLICATION/*", "application/x-dosexec") == 1);
	CHECK(rules_wildcard("application/x-*exec", "application/x-dosexec"));
	CHECK(rules_wildcard("X-Mailer: *spam*", "x-mailer: SpamTool 2") == 1);
	CHECK(rules_wildcard("\xc3\x89t\xc3\xa9", "\xc3\xa9t\xc3\xa9") == 0);
	/* '?' is one character, also a multibyte one */
	CHECK(rules_wildcard("caf?.exe", "caf\xc3\xa9.exe") == 1);
	CHECK(rules_wildcard("caf??.exe", "caf\xc3\xa9.exe") == 0);
	CHECK(rules_wildcard("*\xc3\xa9", "caf\xc3\xa9") == 1);
	CHECK(rules_wildcard("*?", "\xe2\x82\xac") == 1);
	CHECK(rules_wildcard("??", "\xe2\x82\xac") == 0);
	/* '*' and '?' in the subject are plain characters */
	CHECK(rules_wildcard("a*", "a*") == 1);
	CHECK(rules_wildcard("a\\*", "a\\x") == 1);
	CHECK(rules_wildcard(NULL, "a") == 0);
	CHECK(rules_wildcard("*", NULL) == 0);

	/* Many stars on a long subject: polynomial, not exponential. */
	if ((s = malloc(100001)) == NULL || (p = malloc(2001)) == NULL)
		die("malloc");
	memset(s, 'a', 100000);
	s[100000] = '\0';
	for (i = 0; i < 1000; i++) {
		p[2 * i] = '*';
		p[2 * i + 1] = 'a';
	}
	p[2000] = '\0';
	t = now();
	CHECK(rules_wildcard(p, s) == 1);
	p[1999] = 'b'; /* "*a*a...*b": never matches */
	CHECK(rules_wildcard(p, s) == 0);
	memcpy(p, "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", 43);
	CHECK(rules_wildcard(p, s) == 0);
	CHECK(rules_wildcard("*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?b", s) == 0);
	CHECK(now() - t < 2.0);
	if (now() - t >= 2.0)
		fprintf(stderr, "wildcards took %.2fs\n", now() - t);
	free(s);
	free(p);
}

static void
test_rules(void)
{
	struct cfg_rule r[8];
	struct rule_set *rs;
	const char *subj[4];
	char err[256], *s;
	double t;

	memset(r, 0, sizeof(r));

	/* exact */
	r[0].match = "Application/PDF";
	r[0].type = MATCH_EXACT;
	CHECK((rs = compile(r, 1, err, sizeof(err))) != NULL);
	CHECK(match1(rs, "application/pdf") == 0);
	CHECK(match1(rs, "APPLICATION/PDF") == 0);
	CHECK(match1(rs, "application/pdf ") == -1);
	CHECK(match1(rs, "application/pd") == -1);
	CHECK(match1(rs, "") == -1);
	rules_free(rs);

	/* regex: case-sensitive unless (?i), unanchored unless anchored */
	r[0].match = "\\.EXE$";
	r[0].type = MATCH_REGEX;
	r[1].match = "(?i)\\.scr$";
	r[1].type = MATCH_REGEX;
	r[2].match = "^application/(x-)?ms";
	r[2].type = MATCH_REGEX;
	CHECK((rs = compile(r, 3, err, sizeof(err))) != NULL);
	CHECK(match1(rs, "a.exe") == -1);
	CHECK(match1(rs, "a.EXE") == 0);
	CHECK(match1(rs, "a.SCR") == 1);
	CHECK(match1(rs, "a.scr") == 1);
	CHECK(match1(rs, "a.scr.txt") == -1);
	CHECK(match1(rs, "application/x-msdownload") == 2);
	CHECK(match1(rs, "x application/msword") == -1);
	/* not UTF-8: no error, invalid sequences simply do not match */
	CHECK(match1(rs, "\xff\xfe.EXE") == 0);
	CHECK(match1(rs, "\xc3(") == -1);
	rules_free(rs);

	/* a regex that backtracks without end: an error, not "no match" */
	r[0].match = "*.txt";
	r[0].type = MATCH_PATTERN;
	r[1].match = "(a+)+$";
	r[1].type = MATCH_REGEX;
	r[2].match = "*b";
	r[2].type = MATCH_PATTERN;
	CHECK((rs = compile(r, 3, err, sizeof(err))) != NULL);
	if ((s = malloc(4002)) == NULL)
		die("malloc");
	memset(s, 'a', 4000);
	s[4000] = 'b';
	s[4001] = '\0';
	t = now();
	CHECK(match1(rs, s) == -2);
	s[30] = 'b';
	s[31] = '\0';
	CHECK(match1(rs, s) == -2);
	CHECK(now() - t < 2.0);
	CHECK(match1(rs, "notes.txt") == 0); /* before the regex */
	CHECK(match1(rs, "aaa") == 1);
	CHECK(match1(rs, "") == -1);
	free(s);
	rules_free(rs);

	/* first match wins: rules in order, each on every subject */
	r[0].match = "*.txt";
	r[0].type = MATCH_PATTERN;
	r[1].match = "evil.exe";
	r[1].type = MATCH_EXACT;
	r[2].match = "*.exe";
	r[2].type = MATCH_PATTERN;
	r[3].match = "^.*$";
	r[3].type = MATCH_REGEX;
	CHECK((rs = compile(r, 4, err, sizeof(err))) != NULL);
	subj[0] = "evil.exe";
	CHECK(rules_match(rs, subj, 1) == 1);
	subj[1] = "notes.txt";
	CHECK(rules_match(rs, subj, 2) == 0);
	subj[0] = "other.exe";
	subj[1] = NULL;
	subj[2] = "EVIL.EXE";
	CHECK(rules_match(rs, subj, 3) == 1);
	subj[0] = "photo.jpg";
	CHECK(rules_match(rs, subj, 1) == 3);
	CHECK(rules_match(rs, subj, 0) == -1);
	CHECK(rules_match(NULL, subj, 1) == -1);
	rules_free(rs);

	/* no rules */
	CHECK((rs = compile(r, 0, err, sizeof(err))) != NULL);
	CHECK(match1(rs, "x") == -1);
	rules_free(rs);
	CHECK((rs = rules_compile(NULL, err, sizeof(err))) != NULL);
	rules_free(rs);
	rules_free(NULL);

	/* errors */
	r[1].match = "(";
	r[1].type = MATCH_REGEX;
	err[0] = '\0';
	CHECK(compile(r, 2, err, sizeof(err)) == NULL);
	CHECK(strncmp(err, "rule 2: regex \"(\": missing closing", 34) == 0);
	if (strncmp(err, "rule 2: regex \"(\": missing closing", 34))
		fprintf(stderr, "err: %s\n", err);
	r[1].match = "x";
	r[1].type = 7;
	CHECK(compile(r, 2, err, sizeof(err)) == NULL);
	CHECK(strcmp(err, "rule 2: unknown match type 7") == 0);
	r[1].match = NULL;
	r[1].type = MATCH_PATTERN;
	CHECK(compile(r, 2, err, sizeof(err)) == NULL);
	CHECK(strcmp(err, "rule 2: no match text") == 0);
	/* \C is refused (it could split a UTF-8 character) */
	r[1].match = "a\\Cb";
	r[1].type = MATCH_REGEX;
	CHECK(compile(r, 2, err, sizeof(err)) == NULL);
}

/* ---- detect ---- */

static int
type_is(const void *data, size_t len, const char *want)
{
	char out[128];

	detect_type(data, len, out, sizeof(out));
	if (strcmp(out, want) != 0) {
		fprintf(
		    stderr, "detect_type: \"%s\", want \"%s\"\n", out, want);
		return 0;
	}
	return 1;
}

static int
sample_type_is(const char *name, const char *want)
{
	struct sample s = load(name);
	int ok;

	ok = type_is(s.data, s.len, want);
	free(s.data);
	return ok;
}

static void
test_detect(void)
{
	char out[128], small[16], *big;
	uint8_t dos[512];

	/* libmagic 5.44 names a PE "application/vnd.microsoft.portable-
	 * executable"; a plain DOS program (relocations below 0x40) is
	 * "application/x-dosexec". */
	CHECK(type_is(pe, sizeof(pe),
	    "application/vnd.microsoft.portable-"
	    "executable"));
	memset(dos, 0, sizeof(dos));
	memcpy(dos, "MZ\x90\0\3\0\0\0\4\0", 10);
	dos[0x18] = 0x1e;
	CHECK(type_is(dos, sizeof(dos), "application/x-dosexec"));
	/* libmagic's .COM guess (a jump first) is not taken: one random
	 * buffer in a hundred would be a "DOS program". */
	memset(dos, 0x5a, sizeof(dos));
	dos[0] = 0xeb;
	dos[1] = 0x3c;
	CHECK(type_is(dos, sizeof(dos), "application/octet-stream"));
	CHECK(type_is(pdf, strlen(pdf), "application/pdf"));
	CHECK(type_is(text, strlen(text), "text/plain"));
	CHECK(type_is(html, strlen(html), "text/html"));
	CHECK(type_is(shell, strlen(shell), "text/x-shellscript"));
	CHECK(type_is("", 0, "application/x-empty"));
	CHECK(type_is(NULL, 0, "application/x-empty"));
	CHECK(sample_type_is("a.zip", "application/zip"));
	CHECK(sample_type_is("t.gz", "application/gzip"));
	CHECK(sample_type_is("t.tgz", "application/gzip"));
	CHECK(sample_type_is("t.tar", "application/x-tar"));
	CHECK(sample_type_is("t.tbz", "application/x-bzip2"));
	CHECK(sample_type_is("t.txz", "application/x-xz"));
	CHECK(type_is(
	    "\x01\x02\x03\xff\xfe\x00\x80", 7, "application/octet-stream"));

	/* A large buffer costs what its first megabyte costs. */
	if ((big = malloc(64 * MB)) == NULL)
		die("malloc");
	memset(big, 'a', 64 * MB);
	memcpy(big, pdf, strlen(pdf));
	CHECK(type_is(big, 64 * MB, "application/pdf"));
	free(big);

	/* An answer that does not fit is not cut into another type. */
	detect_type(text, strlen(text), small, sizeof(small));
	CHECK(strcmp(small, "text/plain") == 0);
	detect_type(pdf, strlen(pdf), small, sizeof(small));
	CHECK(strcmp(small, "application/pdf") == 0); /* 15 bytes fit */
	detect_type(pe, sizeof(pe), small, sizeof(small));
	CHECK(strcmp(small, "application/oct") == 0);
	detect_type(pdf, strlen(pdf), out, 0); /* nothing written */
	CHECK(detect_init(out, sizeof(out)) == 0); /* again: no-op */
}

/* ---- archives ---- */

#define NMEMB 64

struct seen {
	int n;
	char *name[NMEMB];
	size_t len[NMEMB];
	int depth[NMEMB];
	char type[NMEMB][80];
	int stop_after; /* return -1 after that many, 0: never */
};

static int
collect(void *arg, const struct arc_member *m)
{
	struct seen *s = arg;

	if (s->n < NMEMB) {
		if ((s->name[s->n] = strdup(m->name)) == NULL)
			die("strdup");
		s->len[s->n] = m->len;
		s->depth[s->n] = m->depth;
		detect_type(m->data, m->len, s->type[s->n], sizeof(s->type[0]));
		s->n++;
	}
	if (s->stop_after && s->n >= s->stop_after)
		return -1;
	return 0;
}

static void
seen_free(struct seen *s)
{
	int i;

	for (i = 0; i < s->n && i < NMEMB; i++)
		free(s->name[i]);
	s->n = 0; /* stop_after stays */
}

/* Is member i named name, at depth, of len (-1: any) bytes? */
static int
memb(const struct seen *s, int i, const char *name, int depth, long len)
{
	if (i >= s->n || strcmp(s->name[i], name) != 0 ||
	    s->depth[i] != depth || (len != -1 && s->len[i] != (size_t)len)) {
		fprintf(stderr, "member %d: want \"%s\" depth %d len %ld; ", i,
		    name, depth, len);
		if (i < s->n)
			fprintf(stderr, "got \"%s\" depth %d len %zu\n",
			    s->name[i], s->depth[i], s->len[i]);
		else
			fprintf(stderr, "only %d members\n", s->n);
		return 0;
	}
	return 1;
}

/* Walk the sample name; the status, members in s, message in err. */
static int
walk(const char *name, int depth, uint64_t max_size, uint32_t max_files,
    struct seen *s, char *err, size_t errlen)
{
	struct sample smp = load(name);
	int st;

	seen_free(s);
	st = arc_walk(smp.data, smp.len, depth, max_size, max_files, collect, s,
	    err, errlen);
	free(smp.data);
	return st;
}

static void
test_archive_formats(void)
{
	static const char *const tars[] = {"t.tar", "t.tgz", "t.tbz", "t.txz"};
	struct seen s;
	char err[512];
	size_t i;

	memset(&s, 0, sizeof(s));
	CHECK(walk("a.zip", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 2);
	CHECK(memb(&s, 0, "t.txt", 1, (long)strlen(text)));
	CHECK(memb(&s, 1, "pe.exe", 1, sizeof(pe)));
	CHECK(strcmp(s.type[0], "text/plain") == 0);
	CHECK(strcmp(s.type[1],
	          "application/vnd.microsoft.portable-executable") == 0);

	/* a ZIP after a program (self-extracting) and a v7 tar, without
	 * signatures at the start, are still found */
	CHECK(walk("sfx.exe", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 2 && memb(&s, 1, "pe.exe", 1, sizeof(pe)));
	CHECK(walk("v7.tar", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 2 && memb(&s, 1, "pe.exe", 1, sizeof(pe)));

	/* directories and symbolic links are skipped */
	CHECK(walk("ds.zip", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 1);
	CHECK(memb(&s, 0, "sub/f.txt", 1, 4));

	/* gzip: one member, named by the header */
	CHECK(walk("t.gz", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 1);
	CHECK(memb(&s, 0, "t.txt", 1, (long)strlen(text)));
	CHECK(walk("n.gz", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 1);
	CHECK(memb(&s, 0, "", 1, (long)strlen(text)));

	/* tar, plain and compressed: hard links, directories and symbolic
	 * links skipped */
	for (i = 0; i < sizeof(tars) / sizeof(tars[0]); i++) {
		CHECK(
		    walk(tars[i], 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
		CHECK(s.n == 3);
		CHECK(memb(&s, 0, "t.txt", 1, (long)strlen(text)));
		CHECK(memb(&s, 1, "pe.exe", 1, sizeof(pe)));
		CHECK(memb(&s, 2, "sub/f.txt", 1, 4));
	}

	/* zeros first (a tar end of archive), then a program: still seen */
	CHECK(walk("hide.gz", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 1);
	CHECK(memb(&s, 0, "", 1, 1024 + sizeof(pe)));

	/* names: UTF-8 kept, control characters '?', Latin-1 converted */
	CHECK(walk("names.zip", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 3);
	CHECK(memb(&s, 0, "caf\xc3\xa9.exe", 1, 1));
	CHECK(memb(&s, 1, "tab?name.txt", 1, 1));
	CHECK(memb(&s, 2,
	    "l\xc3\xa9"
	    "at.txt",
	    1, 1));

	/* the callback stops the walk */
	s.stop_after = 1;
	CHECK(walk("many.zip", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 1);
	s.stop_after = 0;
	seen_free(&s);
}

static void
test_archive_nested(void)
{
	struct seen s;
	char err[512];

	memset(&s, 0, sizeof(s));
	/* depth 2 with max_depth 2: everything */
	CHECK(walk("n2.zip", 2, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 2);
	CHECK(memb(&s, 0, "n1.zip", 1, -1));
	CHECK(memb(&s, 1, "deep.txt", 2, 5));

	/* depth 3 with max_depth 2: n1.zip is seen, not opened, and
	 * that is a limit: what was not looked into is not judged */
	CHECK(walk("n3.zip", 2, MB, 100, &s, err, sizeof(err)) == ARC_LIMIT);
	CHECK(strcmp(err, "archive \"n2.zip/n1.zip\" is nested deeper than "
	                  "2 levels") == 0);
	CHECK(s.n == 2);
	CHECK(memb(&s, 0, "n2.zip", 1, -1));
	CHECK(memb(&s, 1, "n1.zip", 2, -1));
	CHECK(strcmp(s.type[1], "application/zip") == 0);
	CHECK(walk("n3.zip", 3, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 3);
	CHECK(memb(&s, 2, "deep.txt", 3, 5));
	CHECK(walk("n3.zip", 1, MB, 100, &s, err, sizeof(err)) == ARC_LIMIT);
	CHECK(s.n == 1);
	/* max_depth 0: nothing is opened */
	CHECK(walk("n3.zip", 0, MB, 100, &s, err, sizeof(err)) == ARC_NOT);
	CHECK(s.n == 0);

	/* across formats: a tar.gz with a zip and a gzip in it */
	CHECK(walk("mix.tgz", 2, MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 4);
	CHECK(memb(&s, 0, "n1.zip", 1, -1));
	CHECK(memb(&s, 1, "deep.txt", 2, 5));
	CHECK(memb(&s, 2, "t.gz", 1, -1));
	CHECK(memb(&s, 3, "t.txt", 2, (long)strlen(text)));

	/* max_files counts members at every level */
	CHECK(walk("n3.zip", 3, MB, 3, &s, err, sizeof(err)) == ARC_OK);
	CHECK(walk("n3.zip", 3, MB, 2, &s, err, sizeof(err)) == ARC_LIMIT);
	CHECK(strstr(err, "more than 2 members") != NULL);
	CHECK(strstr(err, "n2.zip/n1.zip/deep.txt") != NULL);
	seen_free(&s);
}

static void
test_archive_errors(void)
{
	struct seen s;
	struct sample smp;
	char err[512];
	double t;
	struct rusage ru0, ru1;

	memset(&s, 0, sizeof(s));

	/* A bomb: 100 MB of zeros gzipped, no size declared, 1 MB allowed.
	 * First, while this process has not grown yet: the memory it
	 * takes stays near max_size. */
	smp = load("big.gz");
	getrusage(RUSAGE_SELF, &ru0);
	t = now();
	CHECK(arc_walk(smp.data, smp.len, 3, MB, 100, collect, &s, err,
	          sizeof(err)) == ARC_LIMIT);
	getrusage(RUSAGE_SELF, &ru1);
	CHECK(now() - t < 2.0);
	CHECK(s.n == 0);
	CHECK(strcmp(err, "member \"\" is larger than 1048576 bytes") == 0);
	CHECK(ru1.ru_maxrss - ru0.ru_maxrss < 24 * 1024); /* KiB */
	if (ru1.ru_maxrss - ru0.ru_maxrss >= 24 * 1024)
		fprintf(stderr, "bomb: max RSS grew by %ld KiB\n",
		    ru1.ru_maxrss - ru0.ru_maxrss);
	free(smp.data);

	/* 10 MB of zeros: zip (declared size) and gzip (none) */
	t = now();
	CHECK(walk("bomb.zip", 3, MB, 100, &s, err, sizeof(err)) == ARC_LIMIT);
	CHECK(
	    strcmp(err, "member \"zeros\" is larger than 1048576 bytes") == 0);
	CHECK(walk("bomb.gz", 3, MB, 100, &s, err, sizeof(err)) == ARC_LIMIT);
	CHECK(
	    strcmp(err, "member \"zeros\" is larger than 1048576 bytes") == 0);
	CHECK(now() - t < 2.0);
	CHECK(s.n == 0);
	/* exactly max_size is allowed */
	CHECK(walk("bomb.gz", 3, 10 * MB, 100, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 1 && s.len[0] == 10 * MB);
	CHECK(walk("bomb.gz", 3, 10 * MB - 1, 100, &s, err, sizeof(err)) ==
	      ARC_LIMIT);
	CHECK(walk("t.gz", 3, 0, 100, &s, err, sizeof(err)) == ARC_LIMIT);

	/* too many members */
	CHECK(walk("many.zip", 3, MB, 5, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 5);
	CHECK(walk("many.zip", 3, MB, 3, &s, err, sizeof(err)) == ARC_LIMIT);
	CHECK(s.n == 3);
	CHECK(strcmp(err, "more than 3 members (at \"m4.txt\")") == 0);

	/* encrypted, also nested */
	CHECK(
	    walk("enc.zip", 3, MB, 100, &s, err, sizeof(err)) == ARC_ENCRYPTED);
	CHECK(strcmp(err, "member \"t.txt\" is encrypted") == 0);
	CHECK(s.n == 0);
	CHECK(walk("n2enc.zip", 3, MB, 100, &s, err, sizeof(err)) ==
	      ARC_ENCRYPTED);
	CHECK(strcmp(err, "member \"enc.zip/t.txt\" is encrypted") == 0);
	CHECK(s.n == 1);
	/* ... or too deep to be opened: a limit either way */
	CHECK(walk("n2enc.zip", 1, MB, 100, &s, err, sizeof(err)) == ARC_LIMIT);

	/* corrupt */
	CHECK(walk("trunc.zip", 3, MB, 100, &s, err, sizeof(err)) == ARC_ERROR);
	CHECK(strstr(err, "Truncated") != NULL);
	CHECK(walk("trunc.tgz", 3, MB, 100, &s, err, sizeof(err)) == ARC_ERROR);
	CHECK(strstr(err, "truncated gzip input") != NULL);

	/* not archives */
	CHECK(walk("t.txt", 3, MB, 100, &s, err, sizeof(err)) == ARC_NOT);
	CHECK(walk("a.pdf", 3, MB, 100, &s, err, sizeof(err)) == ARC_NOT);
	CHECK(walk("pe.exe", 3, MB, 100, &s, err, sizeof(err)) == ARC_NOT);
	CHECK(walk("h.html", 3, MB, 100, &s, err, sizeof(err)) == ARC_NOT);
	CHECK(walk("t.bz2", 3, MB, 100, &s, err, sizeof(err)) == ARC_NOT);
	CHECK(s.n == 0);
	CHECK(arc_walk("", 0, 3, MB, 100, collect, &s, err, sizeof(err)) ==
	      ARC_NOT);
	CHECK(arc_walk("\x1f\x8b", 2, 3, MB, 100, collect, &s, err,
	          sizeof(err)) == ARC_NOT);
	CHECK(arc_walk("PK", 2, 3, MB, 100, collect, &s, err, sizeof(err)) ==
	      ARC_NOT);
	seen_free(&s);
}

/* Random and mangled input: any status, no crash, no hang. */
static void
test_archive_fuzz(void)
{
	static const char *const names[] = {"a.zip", "t.tgz", "t.tbz", "t.txz",
	    "n3.zip", "t.tar", "enc.zip", "mix.tgz"};
	struct sample smp;
	struct seen s;
	char err[512];
	size_t i, k, n;
	double t = now();
	int st, ok = 1;

	memset(&s, 0, sizeof(s));
	srandom(42);
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		smp = load(names[i]);
		for (n = 0; n < 60; n++) {
			uint8_t *d = malloc(smp.len);

			if (d == NULL)
				die("malloc");
			memcpy(d, smp.data, smp.len);
			for (k = 0; k < 1 + n % 8; k++)
				d[random() % smp.len] = (uint8_t)random();
			st = arc_walk(d, n % 3 ? smp.len : smp.len / 2, 3, MB,
			    100, collect, &s, err, sizeof(err));
			if (st < ARC_NOT || st > ARC_ERROR)
				ok = 0;
			seen_free(&s);
			free(d);
		}
		free(smp.data);
	}
	CHECK(ok);
	CHECK(now() - t < 20.0);
}

/* ---- in scand's sandbox ---- */

static struct sample s_zip, s_tgz, s_tbz, s_txz, s_n3, s_enc, s_bomb, s_trunc;

static int
kid_walk(const struct sample *smp, int depth, struct seen *s, char *err,
    size_t errlen)
{
	seen_free(s);
	return arc_walk(
	    smp->data, smp->len, depth, MB, 100, collect, s, err, errlen);
}

/* The child: what scand does with these, under its seccomp policy. */
static void
kid_work(void)
{
	struct cfg_rule r[2];
	struct rule_set *rs;
	struct seen s;
	char err[512], *aaa;

	memset(&s, 0, sizeof(s));
	CHECK(type_is(pe, sizeof(pe),
	    "application/vnd.microsoft.portable-"
	    "executable"));
	CHECK(type_is(pdf, strlen(pdf), "application/pdf"));
	CHECK(type_is(html, strlen(html), "text/html"));
	CHECK(type_is(text, strlen(text), "text/plain"));
	CHECK(type_is(s_zip.data, s_zip.len, "application/zip"));

	CHECK(kid_walk(&s_zip, 3, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 2 && memb(&s, 1, "pe.exe", 1, sizeof(pe)));
	CHECK(s.n == 2 && strcmp(s.type[1], "application/vnd.microsoft."
	                                    "portable-executable") == 0);
	CHECK(kid_walk(&s_tgz, 3, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 3);
	CHECK(kid_walk(&s_tbz, 3, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 3);
	CHECK(kid_walk(&s_txz, 3, &s, err, sizeof(err)) == ARC_OK);
	CHECK(s.n == 3);
	CHECK(kid_walk(&s_n3, 2, &s, err, sizeof(err)) == ARC_LIMIT);
	CHECK(s.n == 2 && memb(&s, 1, "n1.zip", 2, -1));
	CHECK(kid_walk(&s_enc, 3, &s, err, sizeof(err)) == ARC_ENCRYPTED);
	CHECK(kid_walk(&s_bomb, 3, &s, err, sizeof(err)) == ARC_LIMIT);
	CHECK(kid_walk(&s_trunc, 3, &s, err, sizeof(err)) == ARC_ERROR);
	CHECK(arc_walk(text, strlen(text), 3, MB, 100, collect, &s, err,
	          sizeof(err)) == ARC_NOT);
	seen_free(&s);

	memset(r, 0, sizeof(r));
	r[0].match = "(?i)\\.(exe|scr)$";
	r[0].type = MATCH_REGEX;
	r[1].match = "(a+)+$";
	r[1].type = MATCH_REGEX;
	CHECK((rs = compile(r, 2, err, sizeof(err))) != NULL);
	if (rs == NULL)
		return;
	CHECK(match1(rs, "setup.EXE") == 0);
	CHECK(match1(rs, "notes.txt") == -1);
	if ((aaa = malloc(64)) == NULL)
		_exit(93);
	memset(aaa, 'a', 40);
	strcpy(aaa + 40, "b");
	CHECK(match1(rs, aaa) == -2);
	free(aaa);
	rules_free(rs);
}

static void
test_sandboxed(void)
{
	char root[PATH_MAX], t[PATH_MAX];
	int rep[2], status, nr, failed;
	pid_t pid;

	s_zip = load("a.zip");
	s_tgz = load("t.tgz");
	s_tbz = load("t.tbz");
	s_txz = load("t.txz");
	s_n3 = load("n3.zip");
	s_enc = load("enc.zip");
	s_bomb = load("bomb.gz");
	s_trunc = load("trunc.zip");
	snprintf(root, sizeof(root), "%s/root", top);
	snprintf(t, sizeof(t), "%s/root/tmp", top);
	if (mkdir(root, 0755) == -1 || mkdir(t, 0700) == -1 ||
	    chown(t, NOBODY, NOBODY) == -1)
		die(root);
	if (pipe(rep) == -1)
		die("pipe");
	fflush(NULL);
	if ((pid = fork()) == -1)
		die("fork");
	if (pid == 0) {
		if (rep[1] != IMAPGW_REPORT_FD &&
		    dup2(rep[1], IMAPGW_REPORT_FD) == -1)
			_exit(92);
		/* What scand loads before its sandbox. */
		if (detect_init(t, sizeof(t)) == -1) {
			fprintf(stderr, "sandboxed: %s\n", t);
			_exit(94);
		}
		if (sandbox_enter_flags(ROLE_SCAND, 0, root, NOBODY, NOBODY) == -1)
			_exit(90);
		failed = t_fail;
		kid_work();
		_exit(t_fail > failed ? 1 : 0);
	}
	close(rep[1]);
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) {
		if (read(rep[0], &nr, sizeof(nr)) == sizeof(nr))
			fprintf(stderr,
			    "FAIL: scand's sandbox killed the child for the "
			    "system call %s (%d): common/sandbox.c must "
			    "allow it for ROLE_SCAND\n",
			    sandbox_syscall_name(nr), nr);
		else
			fprintf(stderr, "FAIL: sandboxed child killed by "
			                "SIGSYS, system call not reported\n");
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fprintf(stderr, "FAIL: sandboxed child: status 0x%x%s\n",
		    status,
		    WIFEXITED(status) && WEXITSTATUS(status) == 1
		        ? " (wrong results, see above)"
		        : "");
	close(rep[0]);
	free(s_zip.data);
	free(s_tgz.data);
	free(s_tbz.data);
	free(s_txz.data);
	free(s_n3.data);
	free(s_enc.data);
	free(s_bomb.data);
	free(s_trunc.data);
}

int
main(void)
{
	char err[512];

	if (geteuid() != 0) {
		fprintf(stderr, "test_rules: must run as root\n");
		return 1;
	}
	log_init(LOGT_STDERR, LOGF_TEXT,
	    getenv("TEST_RULES_DEBUG") ? LOG_DEBUG : LOG_ERR, "test_rules");
	snprintf(top, sizeof(top), "/tmp/imapgw-rules.XXXXXX");
	if (mkdtemp(top) == NULL || chmod(top, 0755) == -1)
		die("mkdtemp");
	atexit(cleanup);
	make_samples();
	if (detect_init(err, sizeof(err)) == -1) {
		fprintf(stderr, "detect_init: %s\n", err);
		return 1;
	}

	test_archive_errors(); /* first: it measures memory growth */
	test_wildcard();
	test_rules();
	test_detect();
	test_archive_formats();
	test_archive_nested();
	test_archive_fuzz();
	test_sandboxed();
	return test_done("test_rules");
}
