/*
 * The one logger.  Text lines ("netd[123]: session end client=...") or JSON
 * objects, to syslog or stderr.  Structured events go through log_event()
 * with key/value pairs so both formats carry the same fields.
 */
#ifndef IMAPGW_LOG_H
#define IMAPGW_LOG_H

#include <stdarg.h>
#include <syslog.h>

enum log_target { LOGT_SYSLOG = 0, LOGT_STDERR };
enum log_format { LOGF_TEXT = 0, LOGF_JSON };

/* level: LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG */
void log_init(enum log_target, enum log_format, int level, const char *role);
void log_setrole(const char *role);
void log_setlevel(int level);
int log_getlevel(void);
int log_level_from_name(const char *); /* -1 if unknown */

void log_msg(int pri, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* fatal appends strerror(errno); both exit(1). */
void fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* log_event(LOG_INFO, "session end", "client", addr, "bytes_in", n, NULL):
 * pairs of key and already-formatted string value, NULL-terminated. */
void log_event(int pri, const char *event, ...) __attribute__((sentinel));

#endif
