/*
 * The members of ZIP, GZIP and tar archives (tar also compressed with
 * gzip, bzip2 or xz), through libarchive, read from memory.
 *
 * What is an archive: libarchive's zip and tar readers bid on the data
 * (behind the bzip2 and xz filters when those work in this process).
 * Data that starts with the gzip magic is read through the gzip filter
 * as a tar, else as one raw member: the decompressed stream, named by
 * the gzip header's FNAME ("" if it has none).  The raw reader is never
 * used on anything else, since it takes any data at all.  A gzip stream
 * whose content starts with a tar end-of-archive block (tar finds no
 * entry) is read again as raw, so that nothing after the zeros hides.
 *
 * Each regular member is decompressed into a buffer of at most max_size
 * bytes (allocated as it fills, from the declared size when there is
 * one): a member that declares more, or that turns out to hold more, ends
 * the walk with ARC_LIMIT before anything larger is allocated.  The walk
 * also ends with ARC_LIMIT after max_files regular members in all (and
 * after max_files entries of other kinds, which are skipped), and when
 * the members' decompressed bytes add up to more than ARC_TOTAL_MAX (or
 * max_size, if larger): together these bound the memory (max_size per
 * nesting level) and the time a walk takes.
 *
 * Directories, symbolic links, hard links and devices are skipped.  A
 * member that is itself an archive is walked after the callback has seen
 * it, while the depth allows (members of the top archive are depth 1;
 * max_depth is at most ARC_DEPTH_CAP); one deeper than that is not
 * opened, and is ARC_LIMIT: what nobody looked into is never passed as
 * judged.  A nested archive that is encrypted, too large or corrupt ends
 * the whole walk likewise.
 *
 * Member names are made valid UTF-8 without control characters: valid
 * UTF-8 is kept, other bytes from 0xa0 are read as Latin-1, control
 * characters become '?'.
 */
#include <sys/types.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "scand.h"

#define ARC_DEPTH_CAP 16
#define ARC_TOTAL_MAX (1024ULL * 1024 * 1024)
#define ARC_FIRST_ALLOC (64 * 1024)
#define ARC_NAME_MAX 4096 /* gzip FNAME bytes looked at */
#define ARC_CHAIN_MAX 1024 /* member path shown in messages */

/* How to open data. */
enum arc_mode {
	MODE_PLAIN = 0, /* zip and tar, bzip2 and xz filters */
	MODE_GZIP, /* gzip filter: tar, else raw */
	MODE_GZIP_RAW /* gzip filter: raw only */
};

struct walk {
	int max_depth;
	uint64_t max_size;
	uint32_t max_files;
	uint64_t total_max;
	uint32_t nfiles; /* regular members seen */
	uint32_t nother; /* other entries skipped */
	uint64_t total; /* bytes of the members read */
	int stop; /* the callback asked to stop */
	int probe; /* beyond max_depth: any member is ARC_LIMIT */
	arc_cb cb;
	void *arg;
	char *err;
	size_t errlen;
	char chain[ARC_CHAIN_MAX]; /* "outer.zip/inner.zip/" of the level */
};

/* Filters libarchive runs in this process (1), or through an external
 * program it would have to fork (0: not used).  -1: not known yet. */
static int have_gzip = -1, have_bzip2 = -1, have_xz = -1;

static int
probe_filter(int (*support)(struct archive *))
{
	struct archive *a;
	int r;

	if ((a = archive_read_new()) == NULL)
		return -1;
	r = support(a);
	archive_read_free(a);
	return r == ARCHIVE_OK;
}

static void
probe_filters(void)
{
	if (have_gzip == -1)
		have_gzip = probe_filter(archive_read_support_filter_gzip);
	if (have_bzip2 == -1)
		have_bzip2 = probe_filter(archive_read_support_filter_bzip2);
	if (have_xz == -1)
		have_xz = probe_filter(archive_read_support_filter_xz);
}

static int
is_gzip(const uint8_t *d, size_t len)
{
	return len >= 10 && d[0] == 0x1f && d[1] == 0x8b && d[2] == 8;
}

/*
 * Could libarchive read data as a ZIP, a tar or a bzip2/xz stream?  A
 * cheap look at the signatures first, since most parts are no archive:
 * a local file header at the start or an end of central directory record
 * near the end (self-extracting archives keep the ZIP after a program),
 * "ustar" or a valid v7 header checksum, the bzip2 and xz magic.
 */
static int
maybe_plain(const uint8_t *d, size_t len)
{
	size_t i, from;
	unsigned long sum = 0, want = 0;
	int digits = 0;

	if (len >= 4 && memcmp(d, "PK\3\4", 4) == 0)
		return 1;
	if (len >= 3 && memcmp(d, "BZh", 3) == 0)
		return 1;
	if (len >= 6 && memcmp(d,
	                    "\xfd"
	                    "7zXZ\0",
	                    6) == 0)
		return 1;
	if (len >= 22) {
		/* The EOCD record is 22 bytes plus a comment < 64 KiB. */
		from = len > 22 + 65535 ? len - 22 - 65535 : 0;
		for (i = len - 22 + 1; i-- > from;)
			if (d[i] == 'P' && memcmp(d + i, "PK\5\6", 4) == 0)
				return 1;
	}
	if (len >= 512) {
		if (memcmp(d + 257, "ustar", 5) == 0)
			return 1;
		/* v7: the octal checksum of the header, its own field taken
		 * as blanks. */
		for (i = 148; i < 156 && (d[i] == ' ' || d[i] == '\0'); i++)
			;
		for (; i < 156 && d[i] >= '0' && d[i] <= '7'; i++, digits++)
			want = want * 8 + (unsigned long)(d[i] - '0');
		for (i = 0; i < 512; i++)
			sum += i >= 148 && i < 156 ? ' ' : d[i];
		if (digits > 0 && sum == want && d[0] != '\0')
			return 1;
	}
	return 0;
}

/* Append c as UTF-8. */
static size_t
put_utf8(char *o, unsigned int c)
{
	if (c < 0x80) {
		o[0] = (char)c;
		return 1;
	}
	o[0] = (char)(0xc0 | c >> 6);
	o[1] = (char)(0x80 | (c & 0x3f));
	return 2;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t
utf8_seq(const unsigned char *s, size_t n, unsigned int *cp)
{
	unsigned int c, min;
	size_t len, i;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		c = s[0] & 0x1f;
		min = 0x80;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		c = s[0] & 0x0f;
		min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		c = s[0] & 0x07;
		min = 0x10000;
	} else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/* in[0, n) as UTF-8 without control characters, to free; NULL if no
 * memory. */
static char *
name_clean(const char *in, size_t n)
{
	const unsigned char *s = (const unsigned char *)in;
	unsigned int c;
	size_t i, j, k, o = 0;
	char *out;

	if ((out = malloc(n * 2 + 1)) == NULL)
		return NULL;
	for (i = 0; i < n; i += k) {
		if ((k = utf8_seq(s + i, n - i, &c)) == 0) {
			k = 1;
			c = s[i]; /* Latin-1 */
		}
		if (c < 0x20 || (c >= 0x7f && c < 0xa0))
			out[o++] = '?';
		else if (k > 1)
			for (j = 0; j < k; j++)
				out[o++] = (char)s[i + j];
		else
			o += put_utf8(out + o, c);
	}
	out[o] = '\0';
	return out;
}

/* The FNAME of a gzip header (RFC 1952), cleaned, or "": to free. */
static char *
gzip_name(const uint8_t *d, size_t len)
{
	size_t p = 10, end;
	uint8_t flg = d[3];

	if (flg & 0x04) { /* FEXTRA */
		if (len < 12)
			return name_clean("", 0);
		p = 12 + (size_t)(d[10] | d[11] << 8);
	}
	if (!(flg & 0x08) || p >= len) /* FNAME */
		return name_clean("", 0);
	for (end = p; end < len && end - p < ARC_NAME_MAX && d[end] != 0; end++)
		;
	return name_clean((const char *)d + p, end - p);
}

static void set_err(struct walk *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
set_err(struct walk *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->err, w->errlen, fmt, ap);
	va_end(ap);
}

/* Where the walk is, for a message about the archive itself: "" at the
 * top, else "member \"outer.zip/inner.zip\": ". */
static void
set_err_at(struct walk *w, const char *what, const char *msg)
{
	size_t n = strlen(w->chain);

	if (n == 0)
		set_err(w, "%s%s", what, msg);
	else
		set_err(w, "member \"%.*s\": %s%s", (int)(n - 1), w->chain,
		    what, msg);
}

static int
is_encrypted_msg(const char *s)
{
	return s != NULL &&
	       (strstr(s, "ncrypt") != NULL || strstr(s, "assphrase") != NULL);
}

/* libarchive's error for a member: encrypted, or corrupt. */
static int
member_error(struct walk *w, struct archive *a, const char *name)
{
	const char *e = archive_error_string(a);

	if (is_encrypted_msg(e)) {
		set_err(w, "member \"%s%s\" is encrypted", w->chain, name);
		return ARC_ENCRYPTED;
	}
	set_err(w, "member \"%s%s\": %s", w->chain, name,
	    e != NULL ? e : "read error");
	return ARC_ERROR;
}

/*
 * The data of the current entry into *bufp (at most w->max_size bytes).
 * ARC_OK, or the status that ends the walk.
 */
static int
read_member(struct walk *w, struct archive *a, struct archive_entry *e,
    const char *name, uint8_t **bufp, size_t *lenp)
{
	uint8_t *buf = NULL, *nb, probe;
	size_t cap, len = 0, max;
	ssize_t n;

	max = w->max_size > SIZE_MAX - 1 ? SIZE_MAX - 1 : (size_t)w->max_size;
	if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0)
		cap = (uint64_t)archive_entry_size(e) < max
		          ? (size_t)archive_entry_size(e)
		          : max;
	else
		cap = max < ARC_FIRST_ALLOC ? max : ARC_FIRST_ALLOC;
	if ((buf = malloc(cap ? cap : 1)) == NULL)
		goto nomem;
	for (;;) {
		if (len == cap) {
			if (cap == max) {
				/* Full: one more byte means too large. */
				n = archive_read_data(a, &probe, 1);
				if (n == 0)
					break;
				if (n < 0)
					goto fail;
				set_err(w,
				    "member \"%s%s\" is larger than %llu bytes",
				    w->chain, name,
				    (unsigned long long)w->max_size);
				free(buf);
				return ARC_LIMIT;
			}
			cap = cap > max / 2 ? max : cap * 2;
			if ((nb = realloc(buf, cap)) == NULL)
				goto nomem;
			buf = nb;
		}
		n = archive_read_data(a, buf + len, cap - len);
		if (n == 0)
			break;
		if (n < 0)
			goto fail;
		len += (size_t)n;
	}
	*bufp = buf;
	*lenp = len;
	return ARC_OK;
nomem:
	free(buf);
	set_err(w, "member \"%s%s\": out of memory", w->chain, name);
	return ARC_ERROR;
fail:
	free(buf);
	return member_error(w, a, name);
}

static int walk_data(struct walk *, const uint8_t *, size_t, int depth);

/* One regular member: read it, hand it over, walk it if it is an
 * archive.  ARC_OK to go on. */
static int
do_member(struct walk *w, struct archive *a, struct archive_entry *e,
    const char *name, int depth)
{
	struct arc_member m;
	uint8_t *buf = NULL;
	size_t len = 0, clen;
	int st;

	if (w->probe) {
		set_err(w, "archive \"%.*s\" is nested deeper than %d levels",
		    (int)(strlen(w->chain) > 0 ? strlen(w->chain) - 1 : 0),
		    w->chain, w->max_depth);
		return ARC_LIMIT;
	}
	if (archive_entry_is_encrypted(e)) {
		set_err(w, "member \"%s%s\" is encrypted", w->chain, name);
		return ARC_ENCRYPTED;
	}
	if (archive_entry_size_is_set(e) &&
	    (uint64_t)archive_entry_size(e) > w->max_size) {
		set_err(w, "member \"%s%s\" is larger than %llu bytes",
		    w->chain, name, (unsigned long long)w->max_size);
		return ARC_LIMIT;
	}
	if ((st = read_member(w, a, e, name, &buf, &len)) != ARC_OK)
		return st;
	w->total += len;
	if (w->total > w->total_max) {
		free(buf);
		set_err(w,
		    "members add up to more than %llu bytes (at \"%s%s\")",
		    (unsigned long long)w->total_max, w->chain, name);
		return ARC_LIMIT;
	}
	m.name = name;
	m.data = buf;
	m.len = len;
	m.depth = depth;
	if (w->cb(w->arg, &m) == -1) {
		w->stop = 1;
		free(buf);
		return ARC_OK;
	}
	clen = strlen(w->chain);
	snprintf(w->chain + clen, sizeof(w->chain) - clen, "%s/", name);
	/* An archive deeper than max_depth is not opened, and not passed
	 * as judged either: its first member header makes it ARC_LIMIT. */
	w->probe = depth >= w->max_depth;
	st = walk_data(w, buf, len, depth + 1);
	w->probe = 0;
	w->chain[clen] = '\0';
	if (st == ARC_NOT)
		st = ARC_OK;
	free(buf);
	return st;
}

static struct archive *
arc_open(enum arc_mode mode)
{
	struct archive *a;
	int r = ARCHIVE_OK;

	if ((a = archive_read_new()) == NULL)
		return NULL;
	switch (mode) {
	case MODE_PLAIN:
		if (have_bzip2 == 1)
			r |= archive_read_support_filter_bzip2(a);
		if (have_xz == 1)
			r |= archive_read_support_filter_xz(a);
		r |= archive_read_support_format_zip(a);
		r |= archive_read_support_format_tar(a);
		break;
	case MODE_GZIP:
		r |= archive_read_support_filter_gzip(a);
		r |= archive_read_support_format_tar(a);
		r |= archive_read_support_format_raw(a);
		break;
	case MODE_GZIP_RAW:
		r |= archive_read_support_filter_gzip(a);
		r |= archive_read_support_format_raw(a);
		break;
	}
	if (r != ARCHIVE_OK) {
		archive_read_free(a);
		return NULL;
	}
	return a;
}

/* One archive level in one mode; members are at depth. */
static int
walk_mode(struct walk *w, const uint8_t *data, size_t len, int depth,
    enum arc_mode mode, int *was_empty_tar)
{
	struct archive *a;
	struct archive_entry *e;
	const char *p, *msg;
	char *name = NULL;
	int r, st = ARC_OK, type, nentries = 0;

	*was_empty_tar = 0;
	if ((a = arc_open(mode)) == NULL) {
		set_err(w, "libarchive: cannot set up a reader");
		return ARC_ERROR;
	}
	if (archive_read_open_memory(a, data, len) != ARCHIVE_OK) {
		/* Only bidding happens here: no reader wanted the data. */
		msg = archive_error_string(a);
		if (archive_errno(a) == EILSEQ)
			st = ARC_NOT;
		else {
			set_err_at(w, "",
			    msg != NULL ? msg : "cannot open the archive");
			st = ARC_ERROR;
		}
		archive_read_free(a);
		return st;
	}
	for (;;) {
		r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			msg = archive_error_string(a);
			if (is_encrypted_msg(msg)) {
				set_err_at(w, "encrypted archive: ", msg);
				st = ARC_ENCRYPTED;
			} else {
				set_err_at(w, "",
				    msg != NULL ? msg : "corrupt archive");
				st = ARC_ERROR;
			}
			break;
		}
		nentries++;
		type = archive_entry_filetype(e);
		if (type != AE_IFREG || archive_entry_hardlink(e) != NULL) {
			if (++w->nother > w->max_files) {
				set_err(w,
				    "more than %u entries that are not files",
				    w->max_files);
				st = ARC_LIMIT;
				break;
			}
			continue;
		}
		if (mode != MODE_PLAIN &&
		    archive_format(a) == ARCHIVE_FORMAT_RAW)
			name = gzip_name(data, len);
		else {
			if ((p = archive_entry_pathname(e)) == NULL &&
			    (p = archive_entry_pathname_utf8(e)) == NULL)
				p = "";
			name = name_clean(p, strlen(p));
		}
		if (name == NULL) {
			set_err(w, "out of memory");
			st = ARC_ERROR;
			break;
		}
		if (++w->nfiles > w->max_files) {
			set_err(w, "more than %u members (at \"%s%s\")",
			    w->max_files, w->chain, name);
			st = ARC_LIMIT;
			break;
		}
		st = do_member(w, a, e, name, depth);
		free(name);
		name = NULL;
		if (st != ARC_OK || w->stop)
			break;
	}
	if (st == ARC_OK && !w->stop && nentries == 0 && mode == MODE_GZIP &&
	    archive_format(a) != ARCHIVE_FORMAT_RAW)
		*was_empty_tar = 1;
	free(name);
	archive_read_free(a);
	return st;
}

/* The members of data, at depth. */
static int
walk_data(struct walk *w, const uint8_t *data, size_t len, int depth)
{
	int st, empty;

	if (len == 0)
		return ARC_NOT;
	if (is_gzip(data, len)) {
		if (have_gzip != 1)
			return ARC_NOT;
		st = walk_mode(w, data, len, depth, MODE_GZIP, &empty);
		if (st == ARC_OK && empty)
			st = walk_mode(
			    w, data, len, depth, MODE_GZIP_RAW, &empty);
		return st;
	}
	if (!maybe_plain(data, len))
		return ARC_NOT;
	return walk_mode(w, data, len, depth, MODE_PLAIN, &empty);
}

int
arc_walk(const void *data, size_t len, int max_depth, uint64_t max_size,
    uint32_t max_files, arc_cb cb, void *arg, char *err, size_t errlen)
{
	struct walk w;
	int st;

	if (errlen > 0)
		err[0] = '\0';
	if (data == NULL || len == 0 || max_depth < 1 || cb == NULL)
		return ARC_NOT;
	memset(&w, 0, sizeof(w));
	w.max_depth = max_depth > ARC_DEPTH_CAP ? ARC_DEPTH_CAP : max_depth;
	w.max_size = max_size;
	w.max_files = max_files;
	w.total_max = max_size > ARC_TOTAL_MAX ? max_size : ARC_TOTAL_MAX;
	w.cb = cb;
	w.arg = arg;
	w.err = err;
	w.errlen = errlen;
	probe_filters();
	st = walk_data(&w, data, len, 1);
	if (w.stop)
		return ARC_OK;
	return st;
}
