/*
 * rp_log.h - logging for all rabroker programs.
 *
 * log_warn appends strerror(errno); log_warnx does not. fatal/fatalx are for
 * broken internal invariants only: input from the network is never fatal.
 * Secrets (passwords, ticket secrets, PSKs) must never be passed here.
 */
#ifndef RP_LOG_H
#define RP_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_ERR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* ident: program name; to_syslog: 0 = stderr, 1 = syslog (daemon facility). */
void log_init(const char *ident, enum log_level level, int to_syslog);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int log_level_parse(const char *s);

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

#endif
