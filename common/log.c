/*
 * The one logger.  See log.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

static struct {
	enum log_target target;
	enum log_format format;
	int level;
	char role[16];
	int opened;
} lg = {LOGT_STDERR, LOGF_TEXT, LOG_INFO, "imapgwd", 0};

static const char *level_names[] = {
    [LOG_EMERG] = "emerg",
    [LOG_ALERT] = "alert",
    [LOG_CRIT] = "crit",
    [LOG_ERR] = "error",
    [LOG_WARNING] = "warning",
    [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info",
    [LOG_DEBUG] = "debug",
};

void
log_init(enum log_target t, enum log_format f, int level, const char *role)
{
	lg.target = t;
	lg.format = f;
	lg.level = level;
	log_setrole(role);
	if (t == LOGT_SYSLOG && !lg.opened) {
		/* LOG_NDELAY: connect to /dev/log now, before any chroot. */
		openlog("imapgwd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
		lg.opened = 1;
	}
	tzset();
}

void
log_setrole(const char *role)
{
	snprintf(lg.role, sizeof(lg.role), "%s", role ? role : "imapgwd");
}

void
log_setlevel(int level)
{
	lg.level = level;
}

int
log_getlevel(void)
{
	return lg.level;
}

int
log_level_from_name(const char *s)
{
	int i;

	for (i = LOG_ERR; i <= LOG_DEBUG; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

static void
json_str(struct buf *b, const char *s)
{
	const unsigned char *p;

	buf_add_u8(b, '"');
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_printf(b, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			buf_printf(b, "\\u%04x", *p);
		else
			buf_add_u8(b, *p);
	}
	buf_add_u8(b, '"');
}

static int
json_reserved(const char *k)
{
	static const char *keys[] = {"time", "level", "role", "pid", "msg"};
	size_t i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcmp(k, keys[i]) == 0)
			return 1;
	return 0;
}

/* A text value is quoted when it would not read back as one token. */
static void
text_value(struct buf *b, const char *s)
{
	const unsigned char *p;

	if (*s && strcspn(s, " \t\"=\\") == strlen(s)) {
		for (p = (const unsigned char *)s; *p; p++)
			buf_add_u8(b, (*p < 0x20 || *p == 0x7f) ? '?' : *p);
		return;
	}
	buf_add_u8(b, '"');
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_add_u8(b, '\\');
		buf_add_u8(b, (*p < 0x20 || *p == 0x7f) ? '?' : *p);
	}
	buf_add_u8(b, '"');
}

static void
log_emit(int pri, struct buf *line)
{
	char ts[40];
	struct timespec tv;
	struct tm tm;

	buf_add_u8(line, '\0');
	if (lg.target == LOGT_SYSLOG) {
		syslog(pri, "%s", (char *)buf_head(line));
		return;
	}
	if (lg.format == LOGF_JSON) {
		fprintf(stderr, "%s\n", (char *)buf_head(line));
		return;
	}
	clock_gettime(CLOCK_REALTIME, &tv);
	localtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ld %s\n", ts, tv.tv_nsec / 1000000,
	    (char *)buf_head(line));
}

static void
log_begin(struct buf *line, int pri, const char *msg)
{
	char ts[40];
	struct timespec tv;
	struct tm tm;

	buf_init(line, 0);
	if (lg.format == LOGF_JSON) {
		clock_gettime(CLOCK_REALTIME, &tv);
		gmtime_r(&tv.tv_sec, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		buf_printf(line,
		    "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\","
		    "\"role\":\"%s\",\"pid\":%ld,\"msg\":",
		    ts, tv.tv_nsec / 1000000, level_names[pri & 7], lg.role,
		    (long)getpid());
		json_str(line, msg);
		return;
	}
	if (lg.target == LOGT_SYSLOG)
		buf_printf(line, "%s: %s", lg.role, msg);
	else
		buf_printf(line, "%s[%ld]: %s", lg.role, (long)getpid(), msg);
}

static void
log_vmsg(int pri, const char *fmt, va_list ap)
{
	struct buf line;
	char *msg;
	int saved = errno;

	if ((pri & 7) > lg.level)
		return;
	if (vasprintf(&msg, fmt, ap) == -1)
		return;
	log_begin(&line, pri, msg);
	if (lg.format == LOGF_JSON)
		buf_add_u8(&line, '}');
	log_emit(pri, &line);
	buf_free(&line);
	free(msg);
	errno = saved;
}

void
log_msg(int pri, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(pri, fmt, ap);
	va_end(ap);
}

void
log_event(int pri, const char *event, ...)
{
	struct buf line;
	const char *k, *v;
	va_list ap;
	int saved = errno;

	if ((pri & 7) > lg.level)
		return;
	log_begin(&line, pri, event);
	va_start(ap, event);
	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		if (v == NULL)
			v = "";
		if (lg.format == LOGF_JSON) {
			buf_add_u8(&line, ',');
			/* Keep object keys unique: an event's own role or
			 * pid (the child it is about) is not the logger's. */
			if (json_reserved(k))
				buf_printf(&line, "\"event_%s\"", k);
			else
				json_str(&line, k);
			buf_add_u8(&line, ':');
			json_str(&line, v);
		} else {
			buf_printf(&line, " %s=", k);
			text_value(&line, v);
		}
	}
	va_end(ap);
	if (lg.format == LOGF_JSON)
		buf_add_u8(&line, '}');
	log_emit(pri, &line);
	buf_free(&line);
	errno = saved;
}

static void
log_verr(int pri, int witherr, const char *fmt, va_list ap)
{
	char *msg;
	int saved = errno;

	if (vasprintf(&msg, fmt, ap) == -1)
		return;
	if (witherr)
		log_msg(pri, "%s: %s", msg, strerror(saved));
	else
		log_msg(pri, "%s", msg);
	free(msg);
	errno = saved;
}

void
log_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_verr(LOG_WARNING, 1, fmt, ap);
	va_end(ap);
}

void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_verr(LOG_WARNING, 0, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_INFO, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_DEBUG, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_verr(LOG_CRIT, 1, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_verr(LOG_CRIT, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
