/*
 * libFuzzer harness: client command lines (imap_parse_command), see
 * fuzz_common.h for the input layout and the checks.  The same bytes also
 * go through the response parser, which must not crash on them either.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct imap_cmd c1, c2;
	static struct imap_resp r;
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
		/* raw spool table from the input */
		for (i = 0; i < (mode & 3) && size >= 3; i++) {
			in.sp[i].at = data[0] | (size_t)data[1] << 8;
			in.sp[i].len = data[2];
			data += 3;
			size -= 3;
			in.nsp++;
		}
		in.buf = data;
		in.len = size;
		if (imap_parse_command(in.buf, in.len, in.sp, in.nsp, &c1) == 0)
			fuzz_check_cmd(&in, &c1);
		(void)imap_parse_response(in.buf, in.len, in.sp, in.nsp, &r);
		return 0;
	}
	in.buf = data;
	in.len = size;
	rc1 = imap_parse_command(in.buf, in.len, NULL, 0, &c1);
	if (rc1 == 0)
		fuzz_check_cmd(&in, &c1);
	else
		FUZZ_ASSERT(c1.err[0] != '\0');
	if (imap_parse_response(in.buf, in.len, NULL, 0, &r) == 0)
		fuzz_check_resp(&in, &r);

	/* the same line with some literals spooled parses the same way */
	if (fuzz_derive(data, size, mode, sbuf, &sp) == 0)
		return 0;
	rc2 = imap_parse_command(sp.buf, sp.len, sp.sp, sp.nsp, &c2);
	if (rc1 != rc2) {
		fprintf(stderr, "inline: %d %s\nspooled: %d %s\n", rc1, c1.err,
		    rc2, c2.err);
		abort();
	}
	if (rc2 == 0) {
		fuzz_check_cmd(&sp, &c2);
		FUZZ_ASSERT(c1.kind == c2.kind && c1.uid == c2.uid);
		FUZZ_ASSERT(c1.nlit == c2.nlit && c1.nmsg == c2.nmsg);
		FUZZ_ASSERT(c1.fetch.natt == c2.fetch.natt);
		FUZZ_ASSERT(c1.id.npair == c2.id.npair);
		FUZZ_ASSERT(c1.user.kind == c2.user.kind);
	}
	return 0;
}
