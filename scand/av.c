/*
 * libclamav: engines, limits, scans.
 *
 * An engine is loaded, compiled and warmed up while scand is still root
 * and outside its chroot; scans run in the sandbox, with libclamav's
 * temporary files in scand's private /tmp.  Loading and the engine
 * options follow libclamav's documented sequence: cl_init,
 * cl_engine_new, options, cl_load(CL_DB_STDOPT), cl_engine_compile.
 * The limits and the temp directory are plain engine fields that may be
 * set again after compiling (they are read at scan time), which is how
 * one engine per database serves actions with different limits and why
 * the temp directory is re-pointed at "/tmp" inside the chroot.
 *
 * libclamav reports "clean" when it cannot create its temp directory
 * (it logs "Can't create temporary directory for scan" and skips the
 * scan).  So a scan is only clean if libclamav said so and printed no
 * error while scanning; everything else is an error, as are the
 * heuristic alerts that stand for limits (Heuristics.Limits.Exceeded.*)
 * and encrypted archives.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <clamav.h>
#include <openssl/crypto.h>

#include "log.h"
#include "scand.h"

struct av_engine {
	struct cl_engine *cl;
	char *dir;
	char *tmpdir; /* as set with av_engine_tmpdir, or NULL */
	unsigned int sigs;
	struct av_limits cur; /* what the engine is set to now */
	int cur_set;
	struct av_engine *next;
};

/* What libclamav said during the scan in progress. */
static struct {
	int active;
	int errors;
	char first[200];
} av_msgs;

static struct av_engine *av_engines;

static void
av_msg_cb(enum cl_msg severity, const char *fullmsg, const char *msg, void *ctx)
{
	size_t n;

	(void)fullmsg;
	(void)ctx;
	if (msg == NULL)
		msg = "";
	n = strcspn(msg, "\r\n");
	if (severity == CL_MSG_ERROR && av_msgs.active) {
		if (av_msgs.errors++ == 0)
			snprintf(av_msgs.first, sizeof(av_msgs.first), "%.*s",
			    (int)n, msg);
		return;
	}
	if (severity == CL_MSG_ERROR)
		log_warnx("libclamav: %.*s", (int)n, msg);
	else
		log_debug("libclamav: %.*s", (int)n, msg);
}

int
av_init(void)
{
	static int done;
	cl_error_t r;

	if (done)
		return 0;
	/*
	 * libclamav hashes with OpenSSL, which reads its configuration on
	 * first use: do it now, outside the chroot, so scans run with the
	 * same OpenSSL settings as clamscan would.
	 */
	if (OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL) != 1)
		log_warnx("OpenSSL: cannot load its configuration");
	cl_set_clcb_msg(av_msg_cb);
	if ((r = cl_init(CL_INIT_DEFAULT)) != CL_SUCCESS) {
		log_warnx("libclamav: cl_init: %s", cl_strerror(r));
		return -1;
	}
	done = 1;
	return 0;
}

static int
av_set(struct av_engine *e, enum cl_engine_field f, long long v)
{
	cl_error_t r;

	if ((r = cl_engine_set_num(e->cl, f, v)) != CL_SUCCESS) {
		log_warnx("libclamav: cl_engine_set_num(%d): %s", (int)f,
		    cl_strerror(r));
		return -1;
	}
	return 0;
}

/* A directory we can read, so that the error names the real problem. */
static int
av_dir_ok(const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (stat(dir, &st) == -1) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: not a directory", dir);
		return -1;
	}
	return 0;
}

struct av_engine *
av_engine_load(const char *dir, char *err, size_t errlen)
{
	struct av_engine *e;
	cl_error_t r;

	if (av_init() == -1) {
		snprintf(err, errlen, "libclamav cannot be initialised");
		return NULL;
	}
	if (av_dir_ok(dir, err, errlen) == -1)
		return NULL;
	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (e->dir = strdup(dir)) == NULL ||
	    (e->cl = cl_engine_new()) == NULL) {
		snprintf(err, errlen, "%s: out of memory", dir);
		av_engine_free(e);
		return NULL;
	}
	/* The seccomp policy refuses executable memory: no bytecode JIT. */
	if (av_set(e, CL_ENGINE_BYTECODE_MODE, CL_BYTECODE_MODE_INTERPRETER)) {
		snprintf(
		    err, errlen, "%s: cannot disable the bytecode JIT", dir);
		av_engine_free(e);
		return NULL;
	}
	r = cl_load(dir, e->cl, &e->sigs, CL_DB_STDOPT);
	if (r == CL_SUCCESS && e->sigs == 0)
		snprintf(err, errlen, "%s: no signatures found", dir);
	else if (r != CL_SUCCESS)
		snprintf(err, errlen, "%s: %s", dir, cl_strerror(r));
	else if ((r = cl_engine_compile(e->cl)) != CL_SUCCESS)
		snprintf(err, errlen, "%s: compiling the engine: %s", dir,
		    cl_strerror(r));
	else
		return e;
	av_engine_free(e);
	return NULL;
}

void
av_engine_free(struct av_engine *e)
{
	if (e == NULL)
		return;
	if (e->cl != NULL)
		cl_engine_free(e->cl);
	free(e->dir);
	free(e->tmpdir);
	free(e);
}

const char *
av_engine_dir(const struct av_engine *e)
{
	return e->dir;
}

unsigned int
av_engine_sigs(const struct av_engine *e)
{
	return e->sigs;
}

int
av_engine_tmpdir(struct av_engine *e, const char *dir)
{
	cl_error_t r;
	char *d;

	if ((d = strdup(dir)) == NULL)
		return -1;
	if ((r = cl_engine_set_str(e->cl, CL_ENGINE_TMPDIR, dir)) !=
	    CL_SUCCESS) {
		log_warnx(
		    "libclamav: temp directory %s: %s", dir, cl_strerror(r));
		free(d);
		return -1;
	}
	free(e->tmpdir);
	e->tmpdir = d;
	return 0;
}

void
av_limits_from(const struct cfg_antivirus *av, struct av_limits *l)
{
	l->max_scan_size = av->max_scan_size;
	l->max_file_size = av->max_file_size;
	l->max_recursion = av->max_recursion;
	l->max_files = av->max_files;
	l->max_scan_time_ms = av->max_scan_time_ms;
}

static int
av_apply_limits(struct av_engine *e, const struct av_limits *l)
{
	if (e->cur_set && memcmp(&e->cur, l, sizeof(*l)) == 0)
		return 0;
	if (av_set(e, CL_ENGINE_MAX_SCANSIZE, (long long)l->max_scan_size) ||
	    av_set(e, CL_ENGINE_MAX_FILESIZE, (long long)l->max_file_size) ||
	    av_set(e, CL_ENGINE_MAX_RECURSION, l->max_recursion) ||
	    av_set(e, CL_ENGINE_MAX_FILES, l->max_files) ||
	    av_set(e, CL_ENGINE_MAX_SCANTIME, (long long)l->max_scan_time_ms)) {
		e->cur_set = 0;
		return -1;
	}
	e->cur = *l;
	e->cur_set = 1;
	return 0;
}

int
av_tmp_check(const char *dir, char *err, size_t errlen)
{
	char path[4096];
	int fd;

	if (snprintf(path, sizeof(path), "%s/.imapgw-check.%ld", dir,
	        (long)getpid()) >= (int)sizeof(path)) {
		snprintf(err, errlen, "temp directory path too long");
		return -1;
	}
	fd = open(
	    path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1 && errno == EEXIST) {
		unlink(path);
		fd = open(path,
		    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	}
	if (fd == -1) {
		snprintf(err, errlen, "temp directory %s is not writable: %s",
		    dir, strerror(errno));
		return -1;
	}
	close(fd);
	if (unlink(path) == -1) {
		snprintf(err, errlen,
		    "temp directory %s: cannot remove "
		    "files: %s",
		    dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* After a failed scan: a broken temp directory is the likely cause and
 * breaks every later scan, so name it. */
static void
av_check_after_error(const struct av_engine *e, struct av_result *res)
{
	char err[200];

	if (e->tmpdir == NULL || av_tmp_check(e->tmpdir, err, sizeof(err)) == 0)
		return;
	log_warnx("scan failed: %s", err);
	snprintf(res->error, sizeof(res->error), "%s", err);
}

static int
av_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* libclamav said CL_VIRUS: a finding, or a limit that stopped the scan. */
static void
av_virus(const char *name, struct av_result *res)
{
	if (name == NULL || name[0] == '\0') {
		/* A limit alert on the outermost object has no name. */
		res->status = AV_ERROR;
		snprintf(res->error, sizeof(res->error),
		    "scan limit reached (unnamed heuristic alert)");
	} else if (av_prefix(name, "Heuristics.Limits.Exceeded")) {
		res->status = AV_ERROR;
		snprintf(
		    res->error, sizeof(res->error), "scan limit: %s", name);
	} else if (av_prefix(name, "Heuristics.Encrypted")) {
		res->status = AV_ERROR;
		snprintf(res->error, sizeof(res->error),
		    "encrypted content: %s", name);
	} else {
		res->status = AV_VIRUS;
		snprintf(res->virus, sizeof(res->virus), "%s", name);
	}
}

void
av_scan(struct av_engine *e, const struct av_limits *l, const void *data,
    size_t len, struct av_result *res)
{
	struct cl_scan_options opt;
	const char *name = NULL;
	unsigned long scanned = 0;
	cl_fmap_t *map;
	cl_error_t r;

	memset(res, 0, sizeof(*res));
	res->status = AV_ERROR;
	if (av_apply_limits(e, l) == -1) {
		snprintf(res->error, sizeof(res->error),
		    "cannot set the scan limits");
		return;
	}
	/* An fmap of no bytes is refused; an empty body is clean. */
	if (len == 0) {
		res->status = AV_CLEAN;
		return;
	}
	if ((map = cl_fmap_open_memory(data, len)) == NULL) {
		snprintf(res->error, sizeof(res->error), "cl_fmap: no memory");
		return;
	}
	memset(&opt, 0, sizeof(opt));
	opt.parse = ~0u;
	opt.general = CL_SCAN_GENERAL_HEURISTICS;
	opt.heuristic =
	    CL_SCAN_HEURISTIC_EXCEEDS_MAX | CL_SCAN_HEURISTIC_ENCRYPTED_ARCHIVE;
	memset(&av_msgs, 0, sizeof(av_msgs));
	av_msgs.active = 1;
	r = cl_scanmap_callback(map, NULL, &name, &scanned, e->cl, &opt, NULL);
	av_msgs.active = 0;
	cl_fmap_close(map);
	if (r == CL_VIRUS)
		av_virus(name, res);
	else if (r != CL_CLEAN)
		snprintf(res->error, sizeof(res->error), "libclamav: %s",
		    cl_strerror(r));
	else if (av_msgs.errors > 0)
		snprintf(res->error, sizeof(res->error), "libclamav: %s",
		    av_msgs.first);
	else
		res->status = AV_CLEAN;
	if (res->status == AV_ERROR)
		av_check_after_error(e, res);
}

/*
 * The engines of a config.
 */

struct av_engine *
av_engines_find(const char *dir)
{
	struct av_engine *e;

	for (e = av_engines; e != NULL; e = e->next)
		if (strcmp(e->dir, dir) == 0)
			return e;
	return NULL;
}

int
av_engines_load(const struct config *cfg, char *err, size_t errlen)
{
	const struct cfg_antivirus *av;
	struct av_engine *e;
	size_t i;

	for (i = 0; i < cfg->nactions; i++) {
		av = &cfg->actions[i].antivirus;
		if (!av->enabled || !cfg->actions[i].used ||
		    av_engines_find(av->database) != NULL)
			continue;
		log_info("loading ClamAV databases from %s for action %s",
		    av->database, cfg->actions[i].name);
		if ((e = av_engine_load(av->database, err, errlen)) == NULL)
			return -1;
		log_info("loaded %u signatures from %s", e->sigs, e->dir);
		e->next = av_engines;
		av_engines = e;
	}
	return 0;
}

/* A test message that makes libclamav use its temp directory. */
static const char av_probe[] =
    "From: imapgw <probe@invalid>\r\n"
    "Subject: probe\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"b\"\r\n"
    "\r\n"
    "--b\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "probe\r\n"
    "--b\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "cHJvYmU=\r\n"
    "--b--\r\n";

int
av_engines_ready(const char *tmpdir, char *err, size_t errlen)
{
	static const struct av_limits l = {
	    1024 * 1024, 1024 * 1024, 17, 100, 60 * 1000};
	struct av_result res;
	struct av_engine *e;

	if (av_engines != NULL && av_tmp_check(tmpdir, err, errlen) == -1)
		return -1;
	for (e = av_engines; e != NULL; e = e->next) {
		if (av_engine_tmpdir(e, tmpdir) == -1) {
			snprintf(err, errlen, "cannot set the temp directory");
			return -1;
		}
		av_scan(e, &l, av_probe, sizeof(av_probe) - 1, &res);
		if (res.status != AV_CLEAN) {
			snprintf(err, errlen, "test scan with %s failed: %s",
			    e->dir,
			    res.status == AV_VIRUS ? res.virus : res.error);
			return -1;
		}
	}
	return 0;
}

void
av_engines_free(void)
{
	struct av_engine *e, *next;

	for (e = av_engines; e != NULL; e = next) {
		next = e->next;
		av_engine_free(e);
	}
	av_engines = NULL;
}
