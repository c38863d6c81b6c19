/*
 * imapgwd: one binary, four roles.  The parent re-executes itself with
 * "-P role -I instance" for each child, so every child starts from a fresh
 * address space.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "offline.h"
#include "parent.h"

/*
 * A child: "-P role -I instance [-d] [-v]".  The scand loader is
 * "-P loader -I 0"; its workers, forked from it, show themselves as
 * "-P scand -I n" in the space of those arguments.
 */
static int
child_dispatch(int argc, char **argv)
{
	int role = -1, instance = -1, debug = 0, verbose = 0, loader = 0, ch;
	const char *errstr = NULL;

	optind = 1;
	while ((ch = getopt(argc, argv, "P:I:dv")) != -1) {
		switch (ch) {
		case 'P':
			loader = strcmp(optarg, "loader") == 0;
			role = role_from_name(optarg);
			break;
		case 'I':
			instance = atoi(optarg);
			if (instance < 0 || instance >= IMAPGW_MAX_INSTANCES)
				errstr = "bad instance";
			break;
		case 'd':
			debug = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			errstr = "bad option";
		}
	}
	if (errstr || instance < 0)
		errstr = errstr ? errstr : "missing -I";
	if (errstr) {
		fprintf(stderr, "imapgwd: child: %s\n", errstr);
		return 1;
	}
	if (loader)
		return scand_loader_main(debug, verbose, argv);
	switch (role) {
	case ROLE_NETD:
		return netd_main(instance, debug, verbose);
	case ROLE_SCAND:
		return scand_main(instance, debug, verbose);
	case ROLE_TLSD:
		return tlsd_main(instance, debug, verbose);
	default:
		fprintf(stderr, "imapgwd: unknown role\n");
		return 1;
	}
}

int
main(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++)
		if (strcmp(argv[i], "-P") == 0)
			return child_dispatch(argc, argv);
	if (offline_wanted(argc, argv))
		return offline_main(argc, argv);
	return parent_main(argc, argv);
}
