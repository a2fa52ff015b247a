/*
 * fuzz_audit_verify.c - the audit trail verifier reads files an attacker may
 * have edited: it must never crash, leak or read out of bounds, and its
 * answers must be consistent:
 *  - verify_buf accepts a buffer only if every line ends in '\n', and then
 *    counts exactly as many lines as there are newlines;
 *  - a rejection names a line that exists (1 .. newlines + 1), and a
 *    verifier fed the same lines one by one with verify_line stops at the
 *    same line;
 *  - every single line is also checked on its own, as a trail's first line,
 *    so that the parser's deeper checks are reached even when the chain of
 *    a mutated trail is broken early.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bk_audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data, *p, *end = buf + size, *nl;
	struct bk_audit_verifier v, w, one;
	unsigned long bad = 0, newlines = 0, lineno = 0, stop = 0;
	char why[256];
	int rc;

	if (size > 4 * BK_AUDIT_LINE_MAX)
		return 0;
	for (size_t i = 0; i < size; i++)
		newlines += buf[i] == '\n';

	bk_audit_verifier_init(&v);
	rc = bk_audit_verify_buf(&v, buf, size, &bad, why, sizeof(why));
	if (rc == 0) {
		if (size > 0 && buf[size - 1] != '\n')
			abort();
		if (v.lines != newlines || bad != 0)
			abort();
	} else {
		if (rc != -1 || bad == 0 || bad > newlines + 1)
			abort();
		if (strncmp(why, "line ", 5) != 0)
			abort();
	}

	/* Line by line: the same verdict, at the same line. */
	bk_audit_verifier_init(&w);
	for (p = buf; p < end; p = nl + 1) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			break;
		lineno++;
		if (!stop &&
		    bk_audit_verify_line(
		        &w, p, (size_t)(nl - p), why, sizeof(why)) != 0)
			stop = lineno;
		bk_audit_verifier_init(&one);
		if (bk_audit_verify_line(
		        &one, p, (size_t)(nl - p), why, sizeof(why)) == 0 &&
		    (one.lines != 1 || one.seq == 0))
			abort();
	}
	if (rc == 0 && stop != 0)
		abort();
	if (rc == -1 && stop != 0 && stop != bad)
		abort();
	/* All complete lines good: the failure is the unterminated tail. */
	if (rc == -1 && stop == 0 && bad != newlines + 1)
		abort();
	return 0;
}
