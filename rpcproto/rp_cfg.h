/*
 * rp_cfg.h - what the configuration parsers of rabroker share (rabrokerd,
 * raagent, raoffer): the text being read with its line count, a list of
 * errors, one "FILE:LINE: why" per line (or "FILE: why" for errors about
 * the whole file), collected so that one run reports every mistake, and
 * the value syntax common to the three files (numbers, durations, sizes,
 * yes/no).
 *
 * A parser embeds one struct rp_cfg, reads lines with rp_cfg_read_line
 * (or lets inih read them through rp_cfg_ini_parse) and reports with
 * rp_cfg_error. What a section or key means stays in the parser.
 */
#ifndef RP_CFG_H
#define RP_CFG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One configuration text being read. */
struct rp_cfg {
	const char *name; /* the file, as named in messages */
	FILE *f;          /* read from f if set, else from s */
	const char *s;
	unsigned line; /* number of the line last read; 0 before the first */
	int nerr;      /* errors reported so far */
	char *err;     /* the error list, "\n"-separated; may be NULL */
	size_t errlen, errused;
	/* rp_cfg_ini_parse only: sees each line before inih does (not a
	 * refused one), to report what inih would forgive. May be NULL. */
	void (*check_line)(struct rp_cfg *p, const char *line);
};

/*
 * Starts reading `text` (f NULL) or f (text NULL), named `name` in
 * messages. Empties err (errlen bytes, may be NULL). Clears everything
 * else in p.
 */
void rp_cfg_init(struct rp_cfg *p, const char *name, FILE *f, const char *text,
    char *err, size_t errlen);

/*
 * Opens the file `path` and starts reading it (rp_cfg_init). Returns 0,
 * or -1 with "PATH: why" in err. rp_cfg_close closes it.
 */
int rp_cfg_open(struct rp_cfg *p, const char *path, char *err, size_t errlen);
void rp_cfg_close(struct rp_cfg *p);

/* Reports one error at `line` (0: about the whole file); p->nerr grows. */
void rp_cfg_error(struct rp_cfg *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Appends one error to err (errlen bytes, *used of them filled), after a
 * '\n' when it is not the first. line 0 means "the whole file". A message
 * that does not fit is cut; err always stays NUL-terminated. err NULL:
 * nothing is written.
 */
void rp_cfg_verror(char *err, size_t errlen, size_t *used, const char *name,
    unsigned line, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

enum rp_cfg_read {
	RP_CFG_EOF = 0,  /* nothing more; buf is "" */
	RP_CFG_LINE,     /* one line in buf, without its '\n' */
	RP_CFG_TOO_LONG, /* more than max bytes before the '\n'; buf is "" */
	RP_CFG_NUL,      /* a NUL byte in the line; buf is "" */
};

/*
 * Reads the next line into buf (max + 1 bytes at least) and counts it in
 * p->line. A refused line (too long, NUL byte) is read to its end and
 * not reported here: the caller words the error. A last line without
 * '\n' is a line; an empty text has no line.
 */
enum rp_cfg_read rp_cfg_read_line(struct rp_cfg *p, char *buf, size_t max);

/*
 * Lets inih parse p, one line at a time through rp_cfg_read_line with
 * p->check_line: a line of more than RP_CFG_INI_LINE_MAX bytes, not
 * counting its end ("\n" or "\r\n"), or with a NUL byte is reported
 * ("line too long (at most 1022 bytes)", "NUL byte
 * in line") and reaches inih empty. multiline: whether an indented line
 * continues the previous value (inih then calls the handler again with
 * the same key). Returns what ini_parse_stream returns (0, the first
 * line inih found wrong, or -2 when out of memory).
 */
#define RP_CFG_INI_LINE_MAX 1022
int rp_cfg_ini_parse(struct rp_cfg *p, int multiline,
    int (*handler)(
        void *user, const char *section, const char *name, const char *value),
    void *user);

/* ---- values ------------------------------------------------------------
 * Each returns 0, or -1 and leaves *out alone. Values arrive trimmed. */

/* A decimal number, digits only ("0", "42"), up to UINT64_MAX. */
int rp_cfg_number(const char *v, uint64_t *out);

/*
 * A duration in milliseconds: a number with an optional unit, "ms", "s"
 * (the default), "m" or "min", "h", with spaces allowed before the unit:
 * "30" "30s" "500ms" "5m" "2h". At most LLONG_MAX / 2 ms.
 */
int rp_cfg_duration_ms(const char *v, uint64_t *out);

/*
 * A size in bytes: a number with an optional binary unit K, M, G, T (any
 * case, then optionally "B" or "iB"): "65536" "64K" "512MB" "4GiB".
 */
int rp_cfg_size(const char *v, uint64_t *out);

/* yes/true/on/1 -> 1, no/false/off/0 -> 0, in any case. */
int rp_cfg_bool(const char *v, int *out);

#endif
