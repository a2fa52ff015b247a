/*
 * rp_cfg.c - what the configuration parsers share: the line reader, the
 * error list, inih's settings, the value syntax.
 *
 * inih alone forgives too much (the handler gets no line number in
 * Debian's build, and a line longer than its buffer is silently split in
 * two), so its lines come through rp_cfg_read_line, which counts them and
 * refuses over-long ones and NUL bytes.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "rp_cfg.h"

void
rp_cfg_init(struct rp_cfg *p, const char *name, FILE *f, const char *text,
    char *err, size_t errlen)
{
	memset(p, 0, sizeof(*p));
	p->name = name;
	p->f = f;
	p->s = text;
	p->err = err;
	p->errlen = errlen;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
}

void
rp_cfg_verror(char *err, size_t errlen, size_t *used, const char *name,
    unsigned line, const char *fmt, va_list ap)
{
	char msg[512];
	int n;

	if (err == NULL || *used + 1 >= errlen)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (line > 0)
		n = snprintf(err + *used, errlen - *used, "%s%s:%u: %s",
		    *used ? "\n" : "", name, line, msg);
	else
		n = snprintf(err + *used, errlen - *used, "%s%s: %s",
		    *used ? "\n" : "", name, msg);
	if (n < 0)
		return;
	if ((size_t)n >= errlen - *used)
		*used = errlen - 1;
	else
		*used += (size_t)n;
}

void
rp_cfg_error(struct rp_cfg *p, unsigned line, const char *fmt, ...)
{
	va_list ap;

	p->nerr++;
	va_start(ap, fmt);
	rp_cfg_verror(p->err, p->errlen, &p->errused, p->name, line, fmt, ap);
	va_end(ap);
}

static int
rd_getc(struct rp_cfg *p)
{
	if (p->f != NULL)
		return fgetc(p->f);
	if (p->s == NULL || *p->s == '\0')
		return EOF;
	return (unsigned char)*p->s++;
}

int
rp_cfg_open(struct rp_cfg *p, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	rp_cfg_init(p, path, f, NULL, err, errlen);
	return 0;
}

void
rp_cfg_close(struct rp_cfg *p)
{
	if (p->f != NULL)
		fclose(p->f);
	p->f = NULL;
}

enum rp_cfg_read
rp_cfg_read_line(struct rp_cfg *p, char *buf, size_t max)
{
	size_t n = 0, got = 0;
	int ch, nul = 0, toolong = 0;

	for (;;) {
		ch = rd_getc(p);
		if (ch == EOF || ch == '\n')
			break;
		got++;
		if (ch == '\0')
			nul = 1;
		else if (n < max)
			buf[n++] = (char)ch;
		else
			toolong = 1;
	}
	buf[nul || toolong ? 0 : n] = '\0';
	if (ch == EOF && got == 0)
		return RP_CFG_EOF;
	p->line++;
	if (nul)
		return RP_CFG_NUL;
	return toolong ? RP_CFG_TOO_LONG : RP_CFG_LINE;
}

/* inih's reader (ini_reader): one counted line per call. */
static char *
rd_ini_line(char *str, int num, void *stream)
{
	struct rp_cfg *p = stream;
	size_t max = RP_CFG_INI_LINE_MAX + 1; /* room for a '\r' */
	enum rp_cfg_read r;
	size_t n;

	if (num < 2)
		return NULL;
	if ((size_t)num - 1 < max)
		max = (size_t)num - 1;
	r = rp_cfg_read_line(p, str, max);
	/* The limit is on the text: a "\r\n" line end does not count. */
	if (r == RP_CFG_LINE && (n = strlen(str)) > RP_CFG_INI_LINE_MAX &&
	    !(n == RP_CFG_INI_LINE_MAX + 1 && str[n - 1] == '\r')) {
		str[0] = '\0';
		r = RP_CFG_TOO_LONG;
	}
	switch (r) {
	case RP_CFG_EOF:
		return NULL;
	case RP_CFG_NUL:
		rp_cfg_error(p, p->line, "NUL byte in line");
		break;
	case RP_CFG_TOO_LONG:
		rp_cfg_error(p, p->line, "line too long (at most %d bytes)",
		    RP_CFG_INI_LINE_MAX);
		break;
	case RP_CFG_LINE:
		if (p->check_line != NULL)
			p->check_line(p, str);
		break;
	}
	return str; /* a refused line reaches inih empty */
}

int
rp_cfg_ini_parse(struct rp_cfg *p, int multiline,
    int (*handler)(void *, const char *, const char *, const char *),
    void *user)
{
	/* Debian's inih makes these run-time settings, global to the
	 * process: set every one we rely on, each time. The line buffer is
	 * on the heap, big enough for the reader's own limit. */
	ini_use_stack = false;
	ini_allow_realloc = false;
	ini_allow_multiline = multiline != 0;
	ini_stop_on_first_error = false;
	ini_initial_alloc = RP_CFG_INI_LINE_MAX + 4;
	ini_max_line = RP_CFG_INI_LINE_MAX + 4;
	return ini_parse_stream(rd_ini_line, p, handler, user);
}

/* ---- values ------------------------------------------------------------ */

/* A decimal number; what follows it (a unit, perhaps) in *rest. */
static int
number_unit(const char *v, unsigned long long *n, const char **rest)
{
	char *end;

	if (!isdigit((unsigned char)*v))
		return -1;
	errno = 0;
	*n = strtoull(v, &end, 10);
	if (errno != 0)
		return -1;
	*rest = end;
	return 0;
}

int
rp_cfg_number(const char *v, uint64_t *out)
{
	unsigned long long n;
	const char *rest;

	if (number_unit(v, &n, &rest) < 0 || *rest != '\0')
		return -1;
	*out = n;
	return 0;
}

int
rp_cfg_duration_ms(const char *v, uint64_t *out)
{
	unsigned long long n, mul;
	const char *u;

	if (number_unit(v, &n, &u) < 0)
		return -1;
	u += strspn(u, " ");
	if (*u == '\0' || strcmp(u, "s") == 0)
		mul = 1000;
	else if (strcmp(u, "ms") == 0)
		mul = 1;
	else if (strcmp(u, "m") == 0 || strcmp(u, "min") == 0)
		mul = 60000;
	else if (strcmp(u, "h") == 0)
		mul = 3600000;
	else
		return -1;
	if (n > (unsigned long long)LLONG_MAX / mul / 2)
		return -1;
	*out = n * mul;
	return 0;
}

int
rp_cfg_size(const char *v, uint64_t *out)
{
	unsigned long long n, mul = 1;
	const char *u;

	if (number_unit(v, &n, &u) < 0)
		return -1;
	u += strspn(u, " ");
	if (*u != '\0') {
		static const char units[] = "KMGT";
		const char *k = strchr(units, toupper((unsigned char)*u));
		if (k == NULL)
			return -1;
		mul = 1ull << (10 * (k - units + 1));
		/* then nothing, "B", "b" or "iB" */
		if (u[1] != '\0' && strcmp(u + 1, "B") != 0 &&
		    strcmp(u + 1, "b") != 0 && strcmp(u + 1, "iB") != 0)
			return -1;
	}
	if (n > UINT64_MAX / mul)
		return -1;
	*out = n * mul;
	return 0;
}

int
rp_cfg_bool(const char *v, int *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}
