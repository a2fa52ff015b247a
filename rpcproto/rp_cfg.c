/* rp_cfg.c - the error list shared by the configuration parsers. */
#include <stdio.h>

#include "rp_cfg.h"

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
