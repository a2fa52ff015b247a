/*
 * rp_log.c - levelled logging to stderr or syslog.
 *
 * The only global state in the library: the log sink is process-wide, like
 * stderr itself.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "rp_log.h"

static const char *log_ident = "rabroker";
static enum log_level log_lvl = LOG_LVL_INFO;
static int log_syslog;

static const char *const log_names[] = {"error", "warn", "info", "debug"};
static const int log_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

void
log_init(const char *ident, enum log_level level, int to_syslog)
{
	log_ident = ident;
	log_lvl = level;
	log_syslog = to_syslog;
	if (to_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
log_set_level(enum log_level level)
{
	log_lvl = level;
}

enum log_level
log_get_level(void)
{
	return log_lvl;
}

int
log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, log_names[i]) == 0)
			return i;
	if (strcmp(s, "warning") == 0)
		return LOG_LVL_WARN;
	return -1;
}

static void log_vwrite(enum log_level lvl, const char *fmt, va_list ap,
    const char *err) __attribute__((format(printf, 2, 0)));

static void
log_vwrite(enum log_level lvl, const char *fmt, va_list ap, const char *err)
{
	char msg[2048];

	if (lvl > log_lvl)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_syslog) {
		if (err != NULL)
			syslog(log_prio[lvl], "%s: %s", msg, err);
		else
			syslog(log_prio[lvl], "%s", msg);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char when[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s[%s] %s%s%s\n", when, ts.tv_nsec / 1000000,
	    log_ident, log_names[lvl], msg, err ? ": " : "", err ? err : "");
}

#define LOG_BODY(lvl, err)                     \
	do {                                   \
		va_list ap;                    \
		va_start(ap, fmt);             \
		log_vwrite(lvl, fmt, ap, err); \
		va_end(ap);                    \
	} while (0)

void
log_warn(const char *fmt, ...)
{
	const char *e = strerror(errno);

	LOG_BODY(LOG_LVL_WARN, e);
}

void
log_warnx(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_WARN, NULL);
}

void
log_info(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_INFO, NULL);
}

void
log_debug(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_DEBUG, NULL);
}

void
log_errx(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_ERR, NULL);
}

void
fatal(const char *fmt, ...)
{
	const char *e = strerror(errno);

	LOG_BODY(LOG_LVL_ERR, e);
	abort();
}

void
fatalx(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_ERR, NULL);
	abort();
}
