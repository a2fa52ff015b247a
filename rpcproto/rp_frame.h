/*
 * rp_frame.h - line framing: one JSON-RPC message per '\n'-terminated line.
 *
 * The decoder works directly on a libevent evbuffer so that nothing is copied
 * until a whole line is there, and keeps only a few bytes of state per
 * connection. A line longer than RP_LINE_MAX is reported once (RP_FRAME_TOO_LONG)
 * and then skipped up to and including its '\n' without being buffered, so a
 * hostile peer cannot make us hold more than RP_LINE_MAX bytes.
 */
#ifndef RP_FRAME_H
#define RP_FRAME_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* Maximum length of one line in bytes, excluding the terminating '\n'. */
#define RP_LINE_MAX 65536

enum rp_frame_res {
	RP_FRAME_LINE =
	    0, /* *line holds one complete line (malloc'd, NUL-terminated) */
	RP_FRAME_NEED_MORE, /* no complete line yet */
	RP_FRAME_TOO_LONG, /* a line exceeded max; its bytes are being discarded */
	RP_FRAME_BAD_UTF8, /* *line was not valid UTF-8; *bad_off = first bad byte */
};

struct rp_frame {
	uint32_t max;     /* maximum line length (default RP_LINE_MAX) */
	uint32_t scanned; /* bytes already searched for '\n' */
	uint8_t skipping; /* discarding the rest of an over-long line */
};

void rp_frame_init(struct rp_frame *f, uint32_t max);

/*
 * Takes the next line out of `in`. On RP_FRAME_LINE and RP_FRAME_BAD_UTF8 the
 * caller owns *line (free()); *len excludes the '\n' and a '\r' before it.
 * Empty lines are skipped silently.
 */
enum rp_frame_res rp_frame_next(struct rp_frame *f, struct evbuffer *in,
    char **line, size_t *len, size_t *bad_off);

/* Strict UTF-8 check (no overlongs, surrogates or code points > U+10FFFF).
 * Returns 1 if valid; else 0 and *bad_off = offset of the first bad byte
 * (for a sequence cut short by the end of input: its lead byte). */
int rp_utf8_valid(const char *s, size_t len, size_t *bad_off);

/*
 * Text a peer sent that will be shown to people (a user name in a prompt
 * or on the helper's terminal, an audit field): 1 if s is 1..max bytes of
 * valid UTF-8 with no control characters -- C0, DEL, C1 (U+0080-U+009F,
 * which some terminals obey) -- and no characters that reorder or split
 * what is displayed (bidi marks, embeddings, overrides and isolates
 * U+200E-U+200F, U+202A-U+202E, U+2066-U+2069; U+2028-U+2029). Else 0.
 */
int rp_text_ok(const char *s, size_t max);

#endif
