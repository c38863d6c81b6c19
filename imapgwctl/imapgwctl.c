/*
 * imapgwctl: talk to imapgwd over its control socket, and open locked
 * attachments with the gateway's key (unlock, which needs no daemon).
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "blockaddr.h"
#include "config.h"
#include "imapgw.h"
#include "imsg.h"
#include "lock.h"
#include "util.h"

#define DEFAULT_CONFIG "/etc/imapgw/imapgwd.yaml"
#define DEFAULT_SOCKET "/run/imapgwd.sock"
#define CTL_TIMEOUT_MS 30000

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr,
	    "usage: imapgwctl [-f file] [-s socket] command\n"
	    "commands:\n"
	    "  status     processes, pids, uptime and sessions\n"
	    "  audit      each child's sandbox, read from /proc and from its\n"
	    "             installed filter, against the policy\n"
	    "  reload     re-read the configuration (like SIGHUP)\n"
	    "  blocked    the auto-block list: address, time left, reason\n"
	    "  unblock address\n"
	    "             remove an address from the auto-block list\n"
	    "  unlock [-k keyfile] [-o out] file\n"
	    "             decrypt a locked attachment with the gateway's key\n"
	    "             (file: the saved attachment or its base64 text,\n"
	    "             - for stdin; no daemon needed)\n");
	exit(2);
}

/*
 * The configuration: -f file, else DEFAULT_CONFIG if it exists, else the
 * built-in default, as imapgwd chooses.  NULL (errors printed) if it
 * does not load.
 */
static struct config *
ctl_config(const char *path)
{
	struct config *cfg;
	struct buf errs;

	if (path == NULL && access(DEFAULT_CONFIG, F_OK) == 0)
		path = DEFAULT_CONFIG;
	buf_init(&errs, 0);
	if (path)
		cfg = config_load(path, &errs);
	else
		cfg = config_load_mem("<built-in>", config_default_yaml,
		    config_default_yaml_len, &errs);
	if (cfg == NULL) {
		buf_add_u8(&errs, '\0');
		fprintf(stderr, "imapgwctl: cannot load the configuration:\n%s",
		    buf_used(&errs) ? (char *)buf_head(&errs) : "");
	}
	buf_free(&errs);
	return cfg;
}

/*
 * unlock
 */

static void __attribute__((noreturn)) unlock_usage(void)
{
	fprintf(stderr, "usage: imapgwctl [-f file] unlock [-k keyfile] "
	                "[-o out] file\n");
	exit(1);
}

static int
b64_val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Base64 text, white space anywhere (the body of a MIME part as a user
 * saved it), into out.  0, or -1 with why set.
 */
static int
b64_decode(
    const uint8_t *p, size_t n, struct buf *out, char *why, size_t whylen)
{
	size_t i, nsym = 0, pad = 0;
	uint32_t acc = 0;
	uint8_t *o;
	int bits = 0, v;

	if (buf_reserve(out, n / 4 * 3 + 3) == -1) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	o = buf_tail(out);
	for (i = 0; i < n; i++) {
		if (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' ||
		    p[i] == '\n' || p[i] == '\v' || p[i] == '\f')
			continue;
		if (p[i] == '=') {
			pad++;
			continue;
		}
		if ((v = b64_val(p[i])) == -1) {
			snprintf(
			    why, whylen, "byte 0x%02x at offset %zu", p[i], i);
			return -1;
		}
		if (pad) {
			snprintf(why, whylen,
			    "data after the padding at "
			    "offset %zu",
			    i);
			return -1;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		nsym++;
		if (bits >= 8) {
			bits -= 8;
			*o++ = (uint8_t)(acc >> bits);
		}
	}
	if (nsym == 0) {
		snprintf(why, whylen, "empty");
		return -1;
	}
	/* The last quantum: 2 or 3 symbols with their padding (or none),
	 * never 1, and no padding after a whole one. */
	if (nsym % 4 == 1 || (nsym % 4 == 0 && pad) ||
	    (nsym % 4 == 2 && pad != 0 && pad != 2) ||
	    (nsym % 4 == 3 && pad > 1)) {
		snprintf(why, whylen, "truncated or badly padded");
		return -1;
	}
	buf_commit(out, (size_t)(o - buf_tail(out)));
	return 0;
}

static int
read_input(const char *path, struct buf *in)
{
	ssize_t r;
	int fd;

	if (strcmp(path, "-") == 0)
		fd = STDIN_FILENO;
	else if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		fprintf(stderr, "imapgwctl: unlock: %s: %s\n", path,
		    strerror(errno));
		return -1;
	}
	for (;;) {
		r = buf_read_fd(in, fd, 1 << 16);
		if (r == 0)
			break;
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			fprintf(stderr, "imapgwctl: unlock: %s: %s\n",
			    strcmp(path, "-") ? path : "stdin",
			    strerror(errno));
			if (fd != STDIN_FILENO)
				close(fd);
			return -1;
		}
	}
	if (fd != STDIN_FILENO)
		close(fd);
	return 0;
}

/* A name from the locked file on the terminal: control bytes escaped. */
static void
print_safe(FILE *f, const char *s)
{
	if (*s == '\0') {
		fputs("(none)", f);
		return;
	}
	for (; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == '\\')
			fprintf(f, "\\x%02x", (unsigned char)*s);
		else
			fputc(*s, f);
	}
}

static int
cmd_unlock(int argc, char **argv, const char *cfgpath)
{
	const char *keyfile = NULL, *outpath = NULL, *inpath, *from;
	char name[LOCK_MAX_NAME + 1], type[LOCK_MAX_NAME + 1], err[512];
	char why[PATH_MAX];
	uint8_t key[LOCK_KEY_LEN];
	struct stat st;
	struct buf in, dec, data;
	struct config *cfg;
	const uint8_t *blob;
	size_t bloblen;
	int ch, fd, ret = 1, r;

	optind = 0;
	opterr = 0;
	while ((ch = getopt(argc, argv, "+k:o:")) != -1) {
		switch (ch) {
		case 'k':
			keyfile = optarg;
			break;
		case 'o':
			outpath = optarg;
			break;
		default:
			if (optopt == 'k' || optopt == 'o')
				fprintf(stderr,
				    "imapgwctl: unlock: -%c needs an "
				    "argument\n",
				    optopt);
			else
				fprintf(stderr,
				    "imapgwctl: unlock: unknown option "
				    "-%c\n",
				    optopt);
			unlock_usage();
		}
	}
	if (argc - optind != 1)
		unlock_usage();
	inpath = argv[optind];
	from = strcmp(inpath, "-") == 0 ? "stdin" : inpath;
	signal(SIGPIPE, SIG_IGN);

	/* The key: -k, else state_dir's. */
	if (keyfile != NULL)
		r = lock_key_read(keyfile, key, err, sizeof(err));
	else {
		if ((cfg = ctl_config(cfgpath)) == NULL)
			return 1;
		r = lock_key_load(cfg->state_dir, 0, key, err, sizeof(err));
		snprintf(
		    why, sizeof(why), "%s/%s", cfg->state_dir, LOCK_KEY_FILE);
		if (r == -1 && lstat(why, &st) == -1 && errno == ENOENT)
			snprintf(err + strlen(err), sizeof(err) - strlen(err),
			    " (scand creates the key the first time an "
			    "action locks; -k names another key file, -f "
			    "another configuration)");
		config_free(cfg);
	}
	if (r == -1) {
		fprintf(stderr, "imapgwctl: unlock: the key: %s\n", err);
		return 1;
	}

	buf_init(&in, 0);
	buf_init(&dec, 0);
	buf_init(&data, 0);
	if (read_input(inpath, &in) == -1)
		goto done;
	/* The saved attachment, or the base64 text of the part. */
	if (buf_used(&in) >= LOCK_MAGIC_LEN &&
	    memcmp(buf_head(&in), LOCK_MAGIC, LOCK_MAGIC_LEN) == 0) {
		blob = buf_head(&in);
		bloblen = buf_used(&in);
	} else if (b64_decode(buf_head(&in), buf_used(&in), &dec, why,
	               sizeof(why)) == 0) {
		blob = buf_head(&dec);
		bloblen = buf_used(&dec);
	} else {
		fprintf(stderr,
		    "imapgwctl: unlock: %s: not an imapgw locked file, nor "
		    "the base64 text of one (%s)\n",
		    from, why);
		goto done;
	}
	if (lock_open(key, blob, bloblen, &data, name, sizeof(name), type,
	        sizeof(type), err, sizeof(err)) == -1) {
		fprintf(stderr, "imapgwctl: unlock: %s: %s\n", from, err);
		goto done;
	}

	if (outpath != NULL) {
		fd = open(outpath,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd == -1) {
			fprintf(stderr, "imapgwctl: unlock: %s: %s\n", outpath,
			    errno == EEXIST ? "already exists; not overwriting "
			                      "it"
			                    : strerror(errno));
			goto done;
		}
		if (write_all(fd, buf_head(&data), buf_used(&data)) == -1 ||
		    fsync(fd) == -1) {
			fprintf(stderr, "imapgwctl: unlock: %s: %s\n", outpath,
			    strerror(errno));
			close(fd);
			unlink(outpath);
			goto done;
		}
		if (close(fd) == -1) {
			fprintf(stderr, "imapgwctl: unlock: %s: %s\n", outpath,
			    strerror(errno));
			unlink(outpath);
			goto done;
		}
	} else if (write_all(STDOUT_FILENO, buf_head(&data), buf_used(&data)) ==
	           -1) {
		fprintf(
		    stderr, "imapgwctl: unlock: stdout: %s\n", strerror(errno));
		goto done;
	}
	fputs("original: name=", stderr);
	print_safe(stderr, name);
	fputs(", type=", stderr);
	print_safe(stderr, type);
	fprintf(stderr, ", %zu bytes\n", buf_used(&data));
	ret = 0;
done:
	OPENSSL_cleanse(key, sizeof(key));
	if (buf_used(&data))
		OPENSSL_cleanse(buf_head(&data), buf_used(&data));
	buf_free(&in);
	buf_free(&dec);
	buf_free(&data);
	return ret;
}

/*
 * The control socket.
 */

/* unblock's argument: the address as the daemon holds it (an IPv4-mapped
 * IPv6 address is its IPv4 address, as the daemon lists it). */
static void
unblock_arg(const char *s, struct buf *arg)
{
	struct block_addr a;

	if (block_addr_parse(s, &a) == -1) {
		fprintf(stderr,
		    "imapgwctl: unblock: '%s' is not an IPv4 or IPv6 "
		    "address\n",
		    s);
		exit(2);
	}
	block_addr_write(arg, &a);
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
	const char *sock = NULL, *cfgpath = NULL;
	char sockbuf[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	struct config *cfg;
	struct imsgbuf ib;
	struct imsg imsg;
	struct buf arg;
	uint32_t type, code;
	int ch, r;

	/* '+': options stop at the command, which may have its own. */
	while ((ch = getopt(argc, argv, "+f:s:")) != -1) {
		switch (ch) {
		case 'f':
			cfgpath = optarg;
			break;
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
	if (strcmp(argv[0], "unlock") == 0)
		return cmd_unlock(argc, argv, cfgpath);
	buf_init(&arg, 0);
	if (strcmp(argv[0], "status") == 0 && argc == 1)
		type = IMSG_CTL_STATUS;
	else if (strcmp(argv[0], "audit") == 0 && argc == 1)
		type = IMSG_CTL_AUDIT;
	else if (strcmp(argv[0], "reload") == 0 && argc == 1)
		type = IMSG_CTL_RELOAD;
	else if (strcmp(argv[0], "blocked") == 0 && argc == 1)
		type = IMSG_CTL_BLOCKED;
	else if (strcmp(argv[0], "unblock") == 0 && argc == 2) {
		type = IMSG_CTL_UNBLOCK;
		unblock_arg(argv[1], &arg);
	} else if (strcmp(argv[0], "test-violate") == 0 && argc == 2) {
		/* Answered only by the test build of imapgwd. */
		type = IMSG_CTL_VIOLATE;
		buf_add_str(&arg, argv[1]);
	} else
		usage();
	/* -f without -s: the configuration's control socket. */
	if (sock == NULL && cfgpath != NULL) {
		if ((cfg = ctl_config(cfgpath)) == NULL)
			return 2;
		snprintf(sockbuf, sizeof(sockbuf), "%s", cfg->control_socket);
		config_free(cfg);
		sock = sockbuf;
	}
	if (sock == NULL)
		sock = DEFAULT_SOCKET;
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
