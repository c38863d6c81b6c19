/*
 * libFuzzer harness: netd/sni.c, the server name of a ClientHello the
 * client proxy peeks at.  Checks: an answer in range; a name found is a
 * host name (lower case letters, digits, hyphens and dots, at most 253
 * bytes, NUL-terminated inside out); every shorter prefix of the input
 * gives no other name.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sni.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[256], cut[256];
	size_t i, len;
	int r;

	if (size > SNI_PEEK_MAX)
		return 0;
	r = sni_parse(data, size, out, sizeof(out));
	if (r < SNI_BAD || r > SNI_FOUND)
		abort();
	if (r != SNI_FOUND)
		return 0;
	len = strnlen(out, sizeof(out));
	if (len == 0 || len > 253 || len == sizeof(out))
		abort();
	for (i = 0; i < len; i++)
		if (!((out[i] >= 'a' && out[i] <= 'z') ||
		        (out[i] >= '0' && out[i] <= '9') || out[i] == '-' ||
		        out[i] == '.'))
			abort();
	for (i = 0; i < size; i += 1 + size / 64) {
		r = sni_parse(data, i, cut, sizeof(cut));
		if (r == SNI_FOUND && strcmp(cut, out) != 0)
			abort();
	}
	return 0;
}
