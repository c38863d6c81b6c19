/*
 * libFuzzer harness: server response lines (imap_parse_response) and the
 * capability allow-list, see fuzz_common.h for the input layout and the
 * checks.  The same bytes also go through the command parser.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct imap_resp r1, r2;
	static struct imap_cmd c;
	static uint8_t sbuf[FUZZ_MAXLINE];
	struct fuzz_line in, sp;
	unsigned mode, i;
	int rc1, rc2;

	if (size < 1 || size > FUZZ_MAXLINE)
		return 0;
	mode = data[0];
	data++;
	size--;
	memset(&in, 0, sizeof(in));
	if (mode & 0x80) {
		for (i = 0; i < (mode & 3) && size >= 3; i++) {
			in.sp[i].at = data[0] | (size_t)data[1] << 8;
			in.sp[i].len = data[2];
			data += 3;
			size -= 3;
			in.nsp++;
		}
		in.buf = data;
		in.len = size;
		if (imap_parse_response(in.buf, in.len, in.sp, in.nsp, &r1) ==
		    0)
			fuzz_check_resp(&in, &r1);
		(void)imap_parse_command(in.buf, in.len, in.sp, in.nsp, &c);
		return 0;
	}
	in.buf = data;
	in.len = size;
	rc1 = imap_parse_response(in.buf, in.len, NULL, 0, &r1);
	if (rc1 == 0) {
		fuzz_check_resp(&in, &r1);
		/* what the engine does with capabilities */
		if (r1.ncap > 0)
			fuzz_capf((const char *)in.buf + r1.caps.off,
			    r1.caps.len, mode);
	} else
		FUZZ_ASSERT(r1.err[0] != '\0');
	if (imap_parse_command(in.buf, in.len, NULL, 0, &c) == 0)
		fuzz_check_cmd(&in, &c);
	/* arbitrary bytes as a capability list */
	fuzz_capf((const char *)data, size, mode);

	if (fuzz_derive(data, size, mode, sbuf, &sp) == 0)
		return 0;
	rc2 = imap_parse_response(sp.buf, sp.len, sp.sp, sp.nsp, &r2);
	if (rc1 != rc2) {
		fprintf(stderr, "inline: %d %s\nspooled: %d %s\n", rc1, r1.err,
		    rc2, r2.err);
		abort();
	}
	if (rc2 == 0) {
		fuzz_check_resp(&sp, &r2);
		FUZZ_ASSERT(r1.kind == r2.kind && r1.status == r2.status);
		FUZZ_ASSERT(r1.nlit == r2.nlit && r1.ncap == r2.ncap);
		FUZZ_ASSERT(r1.fetch.nitem == r2.fetch.nitem);
		for (i = 0; i < r1.fetch.nitem; i++) {
			FUZZ_ASSERT(r1.fetch.item[i].att.kind ==
			            r2.fetch.item[i].att.kind);
			FUZZ_ASSERT(
			    r1.fetch.item[i].num == r2.fetch.item[i].num);
			FUZZ_ASSERT(r1.fetch.item[i].str.len ==
			            r2.fetch.item[i].str.len);
		}
	}
	return 0;
}
