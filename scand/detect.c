/*
 * Content types detected by libmagic.
 *
 * detect_init() opens one cookie and loads the default compiled database
 * (magic.mgc) while scand can still read it; detect_type() then works on
 * buffers only, with no file system access, inside the sandbox.
 *
 * Flags: the MIME type only; no looking into compressed data (a gzip is
 * application/gzip, never the type of what it holds, and libmagic never
 * forks a decompressor); no OS/2 application type check.  Text checks
 * stay on: without the encoding check, text/html and the scripts would
 * all be text/plain.
 *
 * Cost: libmagic looks at no more than DETECT_BYTES of a buffer (the
 * formats it knows are told by their first bytes; a tar header is at
 * 257, an ISO 9660 volume descriptor at 32769), its encoding check
 * converts at most DETECT_ENCODING_MAX bytes, and the regular expressions
 * of its text tests read at most DETECT_REGEX_MAX bytes: they dominated
 * the time of a part (measured with perf on mixed mail).
 */
#include <stdio.h>
#include <string.h>

#include <magic.h>

#include "log.h"
#include "scand.h"

#define DETECT_BYTES (64 * 1024)
#define DETECT_ENCODING_MAX (16 * 1024)
#define DETECT_REGEX_MAX 1024 /* bytes a text test's regex reads */
#define DETECT_PEEK 4096 /* what tells text from the rest */
#define DETECT_TEXT_BYTES 8192 /* of a text, what libmagic reads */
#define DETECT_DEFAULT "application/octet-stream"

static magic_t detect_cookie;

static int
set_param(magic_t m, int param, size_t val, const char *name, char *err,
    size_t errlen)
{
	if (magic_setparam(m, param, &val) == -1) {
		snprintf(err, errlen, "libmagic: cannot set %s: %s", name,
		    magic_error(m) ? magic_error(m) : "unknown error");
		return -1;
	}
	return 0;
}

int
detect_init(char *err, size_t errlen)
{
	magic_t m;
	int flags;

	if (detect_cookie != NULL)
		return 0;
	/* CSV, JSON and the text tokens read a whole text to say
	 * text/csv, application/json or which language: no rule needs
	 * them, and they cost more than every other test together. */
	flags = MAGIC_MIME_TYPE | MAGIC_NO_CHECK_COMPRESS |
	        MAGIC_NO_COMPRESS_FORK | MAGIC_NO_CHECK_APPTYPE |
	        MAGIC_NO_CHECK_CSV | MAGIC_NO_CHECK_JSON |
	        MAGIC_NO_CHECK_TOKENS;
	if ((m = magic_open(flags)) == NULL) {
		snprintf(err, errlen, "libmagic: magic_open failed");
		return -1;
	}
	if (set_param(m, MAGIC_PARAM_BYTES_MAX, DETECT_BYTES, "bytes_max", err,
	        errlen) == -1 ||
	    set_param(m, MAGIC_PARAM_ENCODING_MAX, DETECT_ENCODING_MAX,
	        "encoding_max", err, errlen) == -1 ||
	    set_param(m, MAGIC_PARAM_REGEX_MAX, DETECT_REGEX_MAX, "regex_max",
	        err, errlen) == -1)
		goto fail;
	if (magic_load(m, NULL) == -1) {
		snprintf(err, errlen, "libmagic: cannot load the database: %s",
		    magic_error(m) ? magic_error(m) : "unknown error");
		goto fail;
	}
	detect_cookie = m;
	log_debug("libmagic %d: database loaded", magic_version());
	return 0;
fail:
	magic_close(m);
	return -1;
}

/* A MIME type as libmagic writes one: type "/" subtype, token bytes. */
static int
mime_ok(const char *s)
{
	size_t i, slash = 0;

	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] == '/') {
			if (slash++ || i == 0)
				return 0;
			continue;
		}
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		        (s[i] >= 'A' && s[i] <= 'Z') ||
		        (s[i] >= '0' && s[i] <= '9') ||
		        strchr("!#$&^_.+-", s[i]) != NULL))
			return 0;
	}
	return slash == 1 && s[i - 1] != '/';
}

/*
 * No NUL and no control character but the blanks and ESC in the first n
 * bytes: text, for which libmagic's text tests (search and regex
 * directives, the encoding check) cost a millisecond per 30 KB, and whose
 * type its first bytes tell.  Formats told by magic at larger offsets
 * (tar at 257, ISO 9660 at 32769) have NULs near the start.
 */
int
detect_is_text(const void *data, size_t n)
{
	const uint8_t *p = data;
	size_t i;

	if (n > DETECT_PEEK)
		n = DETECT_PEEK;

	for (i = 0; i < n; i++)
		if (p[i] < 0x20 && p[i] != '\t' && p[i] != '\n' &&
		    p[i] != '\r' && p[i] != '\f' && p[i] != 0x1b)
			return 0;
	return 1;
}

static void
put_type(const char *t, char *out, size_t outlen)
{
	size_t i, n;

	if (outlen == 0)
		return;
	n = strlen(t);
	if (n >= outlen) {
		/* A cut type would be another type: say nothing known. */
		t = DETECT_DEFAULT;
		if ((n = strlen(t)) >= outlen)
			n = outlen - 1;
	}
	for (i = 0; i < n; i++)
		out[i] = t[i] >= 'A' && t[i] <= 'Z' ? t[i] - 'A' + 'a' : t[i];
	out[n] = '\0';
}

void
detect_type(const void *data, size_t len, char *out, size_t outlen)
{
	const char *t;

	if (detect_cookie == NULL) {
		put_type(DETECT_DEFAULT, out, outlen);
		return;
	}
	if (data == NULL)
		len = 0;
	if (len > DETECT_BYTES)
		len = DETECT_BYTES;
	if (len > DETECT_TEXT_BYTES && detect_is_text(data, len))
		len = DETECT_TEXT_BYTES;
	t = magic_buffer(detect_cookie, len ? data : "", len);
	if (t == NULL) {
		log_debug("libmagic: %s", magic_error(detect_cookie)
		                              ? magic_error(detect_cookie)
		                              : "unknown error");
		t = DETECT_DEFAULT;
	} else if (!mime_ok(t)) {
		log_debug("libmagic: unexpected answer \"%s\"", t);
		t = DETECT_DEFAULT;
	} else if (strcmp(t, "application/x-dosexec") == 0 &&
	           (len < 2 || (memcmp(data, "MZ", 2) != 0 &&
	                           memcmp(data, "ZM", 2) != 0))) {
		/* libmagic's DOS .COM guess (a jump as the first byte)
		 * fires on one random or encrypted buffer in a hundred:
		 * only an MZ header makes a DOS program here.  A .com
		 * file is still caught by its name. */
		t = DETECT_DEFAULT;
	}
	put_type(t, out, outlen);
}
