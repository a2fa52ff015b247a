/*
 * rp_frame.c - line framing on an evbuffer.
 *
 * Nothing is copied out of the evbuffer until a whole line is there. The
 * decoder remembers how many bytes it has already searched for '\n'
 * (f->scanned), so a long line arriving in many small reads is searched once
 * in total, not once per read. A line longer than the limit is reported once
 * and its remaining bytes are drained as they arrive (f->skipping), so a
 * hostile peer never makes us hold more than max + 1 bytes of one line.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "rp_frame.h"

void
rp_frame_init(struct rp_frame *f, uint32_t max)
{
	f->max = max == 0 ? RP_LINE_MAX : max;
	f->scanned = 0;
	f->skipping = 0;
}

/* Offset of the first '\n' at or after `from`, or -1. */
static ssize_t
find_nl(struct evbuffer *in, size_t from)
{
	struct evbuffer_ptr start, p;

	if (from >= evbuffer_get_length(in))
		return -1;
	if (evbuffer_ptr_set(in, &start, from, EVBUFFER_PTR_SET) != 0)
		return -1;
	p = evbuffer_search(in, "\n", 1, &start);
	return p.pos;
}

/* Is the byte at `off` a '\r'? */
static int
is_cr_at(struct evbuffer *in, size_t off)
{
	struct evbuffer_ptr p;
	char c;

	if (evbuffer_ptr_set(in, &p, off, EVBUFFER_PTR_SET) != 0)
		return 0;
	if (evbuffer_copyout_from(in, &p, &c, 1) != 1)
		return 0;
	return c == '\r';
}

enum rp_frame_res
rp_frame_next(struct rp_frame *f, struct evbuffer *in, char **line, size_t *len,
    size_t *bad_off)
{
	size_t buffered, n;
	ssize_t nl;
	char *buf;

	*line = NULL;
	*len = 0;
	if (bad_off != NULL)
		*bad_off = 0;

	for (;;) {
		buffered = evbuffer_get_length(in);
		if (f->skipping) {
			/* Rest of an over-long line: drop it unbuffered. */
			nl = find_nl(in, 0);
			if (nl < 0) {
				evbuffer_drain(in, buffered);
				return RP_FRAME_NEED_MORE;
			}
			evbuffer_drain(in, (size_t)nl + 1);
			f->skipping = 0;
			f->scanned = 0;
			continue;
		}

		nl = find_nl(in, f->scanned);
		if (nl < 0) {
			/* A '\r' may still come before the '\n': a line of
			 * max bytes plus "\r" is not over-long yet. */
			if (buffered > (size_t)f->max + 1) {
				evbuffer_drain(in, buffered);
				f->skipping = 1;
				f->scanned = 0;
				return RP_FRAME_TOO_LONG;
			}
			f->scanned = (uint32_t)buffered;
			return RP_FRAME_NEED_MORE;
		}
		f->scanned = 0;

		n = (size_t)nl;
		if (n > 0 && is_cr_at(in, n - 1))
			n--;
		if (n > f->max) {
			evbuffer_drain(in, (size_t)nl + 1);
			return RP_FRAME_TOO_LONG;
		}
		if (n == 0) {
			evbuffer_drain(in, (size_t)nl + 1);
			continue;
		}
		if ((buf = malloc(n + 1)) == NULL)
			return RP_FRAME_NEED_MORE; /* retried on next input */
		if (evbuffer_remove(in, buf, n) != (int)n) {
			free(buf);
			return RP_FRAME_NEED_MORE;
		}
		evbuffer_drain(in, (size_t)nl + 1 - n);
		buf[n] = '\0';
		*line = buf;
		*len = n;
		if (!rp_utf8_valid(buf, n, bad_off))
			return RP_FRAME_BAD_UTF8;
		return RP_FRAME_LINE;
	}
}

/*
 * Strict UTF-8 (RFC 3629): the second byte's range depends on the lead byte,
 * which rules out overlong forms (C0, C1, E0 80..9F, F0 80..8F), UTF-16
 * surrogates (ED A0..BF) and code points above U+10FFFF (F4 90.., F5..FF).
 */
int
rp_utf8_valid(const char *s, size_t len, size_t *bad_off)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, need, k;
	unsigned char c, lo, hi;

	while (i < len) {
		c = p[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		lo = 0x80;
		hi = 0xBF;
		if (c >= 0xC2 && c <= 0xDF) {
			need = 1;
		} else if (c >= 0xE0 && c <= 0xEF) {
			need = 2;
			if (c == 0xE0)
				lo = 0xA0;
			else if (c == 0xED)
				hi = 0x9F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			need = 3;
			if (c == 0xF0)
				lo = 0x90;
			else if (c == 0xF4)
				hi = 0x8F;
		} else {
			goto bad;
		}
		for (k = 1; k <= need; k++) {
			if (i + k >= len)
				goto bad; /* truncated: blame the lead byte */
			if (k == 1 ? (p[i + 1] < lo || p[i + 1] > hi)
			           : (p[i + k] & 0xC0) != 0x80) {
				i += k;
				goto bad;
			}
		}
		i += need + 1;
	}
	return 1;
bad:
	if (bad_off != NULL)
		*bad_off = i;
	return 0;
}

int
rp_text_ok(const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len, off;

	if (s == NULL || (len = strlen(s)) == 0 || len > max ||
	    !rp_utf8_valid(s, len, &off))
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			return 0;
		/* C1: U+0080-U+009F is C2 80 .. C2 9F */
		if (p[i] == 0xc2 && i + 1 < len && p[i + 1] <= 0x9f)
			return 0;
		/* U+200E-U+200F, U+2028-U+202E: E2 80 8E-8F, E2 80 A8-AE;
		 * U+2066-U+2069: E2 81 A6-A9 */
		if (p[i] == 0xe2 && i + 2 < len) {
			unsigned b = p[i + 1], c = p[i + 2];

			if (b == 0x80 &&
			    (c == 0x8e || c == 0x8f ||
			        (c >= 0xa8 && c <= 0xae)))
				return 0;
			if (b == 0x81 && c >= 0xa6 && c <= 0xa9)
				return 0;
		}
	}
	return 1;
}
