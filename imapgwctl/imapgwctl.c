/*
 * imapgwctl: talk to imapgwd over its control socket.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imapgw.h"
#include "imsg.h"

#define DEFAULT_SOCKET "/run/imapgwd.sock"
#define CTL_TIMEOUT_MS 30000

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr,
	    "usage: imapgwctl [-s socket] command\n"
	    "commands:\n"
	    "  status     processes, pids, uptime and sessions\n"
	    "  audit      each child's sandbox, read from /proc and from its\n"
	    "             installed filter, against the policy\n"
	    "  reload     re-read the configuration (like SIGHUP)\n");
	exit(2);
}

static int
ctl_connect(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path) >=
	    (int)sizeof(sun.sun_path)) {
		fprintf(stderr, "imapgwctl: socket path too long\n");
		exit(2);
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		fprintf(stderr, "imapgwctl: cannot connect to %s: %s%s\n", path,
		    strerror(errno),
		    errno == ENOENT || errno == ECONNREFUSED
		        ? " (is imapgwd running? -s names another socket)"
		        : "");
		exit(2);
	}
	return fd;
}

int
main(int argc, char **argv)
{
	const char *sock = DEFAULT_SOCKET;
	struct imsgbuf ib;
	struct imsg imsg;
	struct buf arg;
	uint32_t type, code;
	int ch, r;

	while ((ch = getopt(argc, argv, "s:")) != -1) {
		switch (ch) {
		case 's':
			sock = optarg;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	buf_init(&arg, 0);
	if (strcmp(argv[0], "status") == 0 && argc == 1)
		type = IMSG_CTL_STATUS;
	else if (strcmp(argv[0], "audit") == 0 && argc == 1)
		type = IMSG_CTL_AUDIT;
	else if (strcmp(argv[0], "reload") == 0 && argc == 1)
		type = IMSG_CTL_RELOAD;
	else if (strcmp(argv[0], "test-violate") == 0 && argc == 2) {
		/* Answered only by the test build of imapgwd. */
		type = IMSG_CTL_VIOLATE;
		buf_add_str(&arg, argv[1]);
	} else
		usage();
	imsgbuf_init(&ib, ctl_connect(sock));
	if (imsg_compose(&ib, type, 0, -1, buf_head(&arg), buf_used(&arg)) ==
	        -1 ||
	    imsgbuf_flush(&ib) == -1) {
		fprintf(stderr, "imapgwctl: cannot send request: %s\n",
		    strerror(errno));
		return 2;
	}
	buf_free(&arg);
	for (;;) {
		r = imsg_wait(&ib, &imsg, CTL_TIMEOUT_MS);
		if (r != 1) {
			fprintf(stderr, "imapgwctl: %s\n",
			    r == 0 ? "no answer from imapgwd"
			    : type == IMSG_CTL_VIOLATE
			        ? "request refused (test-violate exists only "
			          "in the test build)"
			        : ib.err);
			return 2;
		}
		if (imsg.hdr.type == IMSG_CTL_TEXT) {
			fwrite(imsg.data, 1, imsg.datalen, stdout);
		} else if (imsg.hdr.type == IMSG_CTL_END &&
		           imsg.datalen == sizeof(code)) {
			memcpy(&code, imsg.data, sizeof(code));
			imsg_free(&imsg);
			return code > 125 ? 1 : (int)code;
		} else {
			fprintf(stderr, "imapgwctl: unexpected answer\n");
			return 2;
		}
		imsg_free(&imsg);
	}
}
