/*
 * rp_cfg.h - what every configuration parser of rabroker shares: a list of
 * errors, one "FILE:LINE: why" per line (or "FILE: why" for errors about
 * the whole file), collected so that one run reports every mistake.
 */
#ifndef RP_CFG_H
#define RP_CFG_H

#include <stdarg.h>
#include <stddef.h>

/*
 * Appends one error to err (errlen bytes, *used of them filled), after a
 * '\n' when it is not the first. line 0 means "the whole file". A message
 * that does not fit is cut; err always stays NUL-terminated. err NULL:
 * nothing is written.
 */
void rp_cfg_verror(char *err, size_t errlen, size_t *used, const char *name,
    unsigned line, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

#endif
