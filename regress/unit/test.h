/* Minimal unit-test helpers: CHECK counts, test_done() prints the line
 * "N passed, N failed" and gives the exit code. */
#ifndef IMAPGW_TEST_H
#define IMAPGW_TEST_H

#include <stdio.h>

static int t_pass, t_fail;

#define CHECK(c)                                                       \
	do {                                                           \
		if (c)                                                 \
			t_pass++;                                      \
		else {                                                 \
			t_fail++;                                      \
			fprintf(stderr, "%s:%d: FAIL: %s\n", __FILE__, \
			    __LINE__, #c);                             \
		}                                                      \
	} while (0)

static inline int
test_done(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, t_pass, t_fail);
	return t_fail ? 1 : 0;
}

#endif
