/* test_frame.c - line framing and the strict UTF-8 validator. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "rp_frame.h"

static struct evbuffer *
buf_with(const char *s)
{
	struct evbuffer *b = evbuffer_new();

	ck_assert_ptr_nonnull(b);
	evbuffer_add(b, s, strlen(s));
	return b;
}

/* Expects the next result to be a line equal to `want`. */
static void
expect_line(struct rp_frame *f, struct evbuffer *b, const char *want)
{
	char *line = NULL;
	size_t len = 0, off = 0;
	enum rp_frame_res r = rp_frame_next(f, b, &line, &len, &off);

	ck_assert_int_eq(r, RP_FRAME_LINE);
	ck_assert_ptr_nonnull(line);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert_str_eq(line, want);
	free(line);
}

static void
expect_res(struct rp_frame *f, struct evbuffer *b, enum rp_frame_res want)
{
	char *line = NULL;
	size_t len = 0, off = 0;
	enum rp_frame_res r = rp_frame_next(f, b, &line, &len, &off);

	ck_assert_int_eq(r, want);
	free(line);
}

START_TEST(test_init_default)
{
	struct rp_frame f;

	rp_frame_init(&f, 0);
	ck_assert_uint_eq(f.max, RP_LINE_MAX);
	ck_assert_uint_eq(f.scanned, 0);
	ck_assert_uint_eq(f.skipping, 0);
	rp_frame_init(&f, 100);
	ck_assert_uint_eq(f.max, 100);
}
END_TEST

START_TEST(test_lines)
{
	struct rp_frame f;
	struct evbuffer *b = buf_with("one\ntwo\r\n\n\r\n\nthree\nfour");

	rp_frame_init(&f, 0);
	expect_line(&f, b, "one");
	expect_line(&f, b, "two");
	expect_line(&f, b, "three"); /* empty lines skipped */
	expect_res(&f, b, RP_FRAME_NEED_MORE);
	ck_assert_uint_eq(evbuffer_get_length(b), 4); /* "four" kept */
	evbuffer_add(b, "\n", 1);
	expect_line(&f, b, "four");
	expect_res(&f, b, RP_FRAME_NEED_MORE);
	ck_assert_uint_eq(evbuffer_get_length(b), 0);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_only_cr_stripped_at_end)
{
	struct rp_frame f;
	struct evbuffer *b = buf_with("a\rb\r\r\n");

	rp_frame_init(&f, 0);
	expect_line(&f, b, "a\rb\r"); /* only one trailing '\r' goes */
	evbuffer_free(b);
}
END_TEST

START_TEST(test_split_crlf)
{
	struct rp_frame f;
	struct evbuffer *b = buf_with("abc\r");

	rp_frame_init(&f, 0);
	expect_res(&f, b, RP_FRAME_NEED_MORE);
	evbuffer_add(b, "\n", 1);
	expect_line(&f, b, "abc");
	evbuffer_free(b);
}
END_TEST

/* A 60 KiB line arriving 1 KiB at a time: the decoder must remember how far
 * it searched instead of starting over at 0 each time. */
START_TEST(test_incremental_scan)
{
	struct rp_frame f;
	struct evbuffer *b = evbuffer_new();
	char chunk[1024];
	char *line = NULL;
	size_t len = 0;

	memset(chunk, 'x', sizeof(chunk));
	rp_frame_init(&f, 0);
	for (int i = 1; i <= 60; i++) {
		evbuffer_add(b, chunk, sizeof(chunk));
		expect_res(&f, b, RP_FRAME_NEED_MORE);
		ck_assert_uint_eq(f.scanned, (uint32_t)i * sizeof(chunk));
		ck_assert_uint_eq(evbuffer_get_length(b), i * sizeof(chunk));
	}
	evbuffer_add(b, "\nnext", 5);
	ck_assert_int_eq(
	    rp_frame_next(&f, b, &line, &len, NULL), RP_FRAME_LINE);
	ck_assert_uint_eq(len, 60 * 1024);
	ck_assert_uint_eq(strspn(line, "x"), 60 * 1024);
	free(line);
	/* Scan position restarts for the next line. */
	ck_assert_uint_eq(f.scanned, 0);
	expect_res(&f, b, RP_FRAME_NEED_MORE);
	ck_assert_uint_eq(f.scanned, 4);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_limits_exact)
{
	struct rp_frame f;
	struct evbuffer *b = evbuffer_new();
	char s[20];

	rp_frame_init(&f, 16);
	memset(s, 'a', 16);
	evbuffer_add(b, s, 16);
	evbuffer_add(b, "\n", 1);
	expect_line(&f, b, "aaaaaaaaaaaaaaaa"); /* exactly max: fine */

	evbuffer_add(b, s, 16);
	evbuffer_add(b, "\r", 1); /* max + '\r' still pending */
	expect_res(&f, b, RP_FRAME_NEED_MORE);
	evbuffer_add(b, "\n", 1);
	expect_line(&f, b, "aaaaaaaaaaaaaaaa");

	evbuffer_add(b, s, 17);
	evbuffer_add(b, "\n", 1);
	expect_res(&f, b, RP_FRAME_TOO_LONG); /* max + 1 */
	ck_assert_uint_eq(evbuffer_get_length(b), 0);
	ck_assert_uint_eq(f.skipping, 0);
	evbuffer_free(b);
}
END_TEST

/* Over-long line in one piece followed by a good line. */
START_TEST(test_too_long_then_good)
{
	struct rp_frame f;
	struct evbuffer *b = evbuffer_new();
	char *big = malloc(RP_LINE_MAX + 100);

	memset(big, 'z', RP_LINE_MAX + 100);
	rp_frame_init(&f, 0);
	evbuffer_add(b, big, RP_LINE_MAX + 100);
	evbuffer_add(b, "\n{\"ok\":1}\n", 10);
	expect_res(&f, b, RP_FRAME_TOO_LONG);
	expect_line(&f, b, "{\"ok\":1}");
	expect_res(&f, b, RP_FRAME_NEED_MORE);
	free(big);
	evbuffer_free(b);
}
END_TEST

/* Over-long line arriving in pieces: reported once, never buffered beyond
 * the limit, and the line after it still works. */
START_TEST(test_too_long_streamed)
{
	struct rp_frame f;
	struct evbuffer *b = evbuffer_new();
	char chunk[4096];
	int too_long = 0;

	memset(chunk, 'y', sizeof(chunk));
	rp_frame_init(&f, 0);
	for (int i = 0; i < 64; i++) { /* 256 KiB, no '\n' */
		char *line = NULL;
		size_t len = 0;
		enum rp_frame_res r;

		evbuffer_add(b, chunk, sizeof(chunk));
		r = rp_frame_next(&f, b, &line, &len, NULL);
		ck_assert_ptr_null(line);
		if (r == RP_FRAME_TOO_LONG)
			too_long++;
		else
			ck_assert_int_eq(r, RP_FRAME_NEED_MORE);
		ck_assert_uint_le(evbuffer_get_length(b), RP_LINE_MAX + 1);
	}
	ck_assert_int_eq(too_long, 1);
	ck_assert_uint_eq(f.skipping, 1);
	ck_assert_uint_eq(evbuffer_get_length(b), 0);
	evbuffer_add(b, "tail\nnext\n", 10);
	expect_line(&f, b, "next");
	ck_assert_uint_eq(f.skipping, 0);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_frame_bad_utf8)
{
	struct rp_frame f;
	struct evbuffer *b = buf_with("ab\xC0\x80\ngood\n");
	char *line = NULL;
	size_t len = 0, off = 99;

	rp_frame_init(&f, 0);
	ck_assert_int_eq(
	    rp_frame_next(&f, b, &line, &len, &off), RP_FRAME_BAD_UTF8);
	ck_assert_ptr_nonnull(line);
	ck_assert_uint_eq(len, 4);
	ck_assert_uint_eq(off, 2);
	free(line);
	expect_line(&f, b, "good");
	evbuffer_free(b);
}
END_TEST

START_TEST(test_frame_nul_inside)
{
	struct rp_frame f;
	struct evbuffer *b = evbuffer_new();
	char *line = NULL;
	size_t len = 0;

	evbuffer_add(b, "a\0b\n", 4);
	rp_frame_init(&f, 0);
	ck_assert_int_eq(
	    rp_frame_next(&f, b, &line, &len, NULL), RP_FRAME_LINE);
	ck_assert_uint_eq(len, 3); /* length is authoritative, not strlen */
	ck_assert_int_eq(memcmp(line, "a\0b", 3), 0);
	free(line);
	evbuffer_free(b);
}
END_TEST

static const struct {
	const char *s;
	size_t len;
	int ok;
	size_t off;
} utf8_cases[] = {
    {"", 0, 1, 0}, {"plain ascii", 11, 1, 0},
    {"\xC3\xA9t\xC3\xA9", 5, 1, 0},          /* été */
    {"\xE2\x82\xAC", 3, 1, 0},               /* U+20AC */
    {"\xF0\x9F\x98\x80", 4, 1, 0},           /* U+1F600 */
    {"\xF4\x8F\xBF\xBF", 4, 1, 0},           /* U+10FFFF */
    {"\xED\x9F\xBF", 3, 1, 0},               /* U+D7FF */
    {"\xEE\x80\x80", 3, 1, 0},               /* U+E000 */
    {"a\xC0\x80", 3, 0, 1},                  /* overlong NUL */
    {"a\xC1\xBF", 3, 0, 1},                  /* overlong */
    {"\xE0\x80\xAF", 3, 0, 1},               /* overlong '/' */
    {"\xE0\x9F\xBF", 3, 0, 1},               /* overlong */
    {"\xF0\x8F\xBF\xBF", 4, 0, 1},           /* overlong */
    {"ab\xED\xA0\x80", 5, 0, 3},             /* surrogate D800 */
    {"\xED\xBF\xBF", 3, 0, 1},               /* surrogate DFFF */
    {"\xF4\x90\x80\x80", 4, 0, 1},           /* U+110000 */
    {"\xF5\x80\x80\x80", 4, 0, 0},           /* lead > F4 */
    {"\xFF", 1, 0, 0},                       /* never valid */
    {"x\x80", 2, 0, 1},                      /* lone continuation */
    {"xy\xE2\x82", 4, 0, 2},                 /* truncated at end */
    {"\xF0\x9F\x98", 3, 0, 0},               /* truncated at end */
    {"\xC3", 1, 0, 0},                       /* truncated at end */
    {"\xE2\x82(", 3, 0, 2},                  /* cut short by ASCII */
    {"\xF0\x9F\x98\x80\xF0\x9F(x", 8, 0, 6}, /* good, then cut */
};

/* Display-safe text: what a peer sends that people will read. */
START_TEST(test_text_ok)
{
	ck_assert_int_eq(rp_text_ok("CORP\\alice", 64), 1);
	ck_assert_int_eq(
	    rp_text_ok("J\xC3\xA9r\xC3\xB4me \xE6\x97\xA5\xE6\x9C\xAC", 64), 1);
	ck_assert_int_eq(
	    rp_text_ok("\xC2\xA0nbsp \xC2\xBF", 64), 1); /* U+00A0, U+00BF */
	ck_assert_int_eq(
	    rp_text_ok("\xE2\x80\x8D zwj, \xE2\x80\x94 dash", 64), 1);
	ck_assert_int_eq(rp_text_ok("abc", 3), 1);
	ck_assert_int_eq(rp_text_ok("abcd", 3), 0);
	ck_assert_int_eq(rp_text_ok("", 3), 0);
	ck_assert_int_eq(rp_text_ok(NULL, 3), 0);
	ck_assert_int_eq(rp_text_ok("a\tb", 64), 0);
	ck_assert_int_eq(rp_text_ok("a\x1b[2Jb", 64), 0);
	ck_assert_int_eq(rp_text_ok("a\x7f", 64), 0);
	ck_assert_int_eq(rp_text_ok("a\xC2\x9B"
	                            "2J",
	                     64),
	    0); /* C1 CSI */
	ck_assert_int_eq(rp_text_ok("a\xC2\x80", 64), 0);
	ck_assert_int_eq(rp_text_ok("a\xC2\x9F", 64), 0);
	ck_assert_int_eq(rp_text_ok("alice\xE2\x80\xAEnimda", 64), 0); /* RLO */
	ck_assert_int_eq(rp_text_ok("\xE2\x80\x8F", 64), 0);           /* RLM */
	ck_assert_int_eq(rp_text_ok("\xE2\x80\xA8", 64), 0);           /* LS */
	ck_assert_int_eq(
	    rp_text_ok("\xE2\x81\xA6x\xE2\x81\xA9", 64), 0); /* LRI..PDI */
	ck_assert_int_eq(rp_text_ok("\xC3\x28", 64), 0);     /* not UTF-8 */
}
END_TEST

START_TEST(test_utf8_cases)
{
	size_t off = 12345;
	int ok = rp_utf8_valid(utf8_cases[_i].s, utf8_cases[_i].len, &off);

	ck_assert_msg(ok == utf8_cases[_i].ok, "case %d: ok=%d", _i, ok);
	if (!ok)
		ck_assert_msg(off == utf8_cases[_i].off,
		    "case %d: off=%zu want %zu", _i, off, utf8_cases[_i].off);
}
END_TEST

/* Every 2-byte and 3-byte sequence against an independent definition. */
START_TEST(test_utf8_exhaustive)
{
	unsigned char s[3];
	size_t off;

	for (unsigned a = 0x80; a < 0x100; a++)
		for (unsigned b = 0; b < 0x100; b++) {
			s[0] = (unsigned char)a;
			s[1] = (unsigned char)b;
			int want = a >= 0xC2 && a <= 0xDF && (b & 0xC0) == 0x80;
			ck_assert_int_eq(
			    rp_utf8_valid((char *)s, 2, &off), want);
		}
	for (unsigned a = 0xE0; a < 0xF0; a++)
		for (unsigned b = 0x80; b < 0xC0; b++)
			for (unsigned c = 0; c < 0x100; c++) {
				unsigned cp = ((a & 0x0F) << 12) |
				    ((b & 0x3F) << 6) | (c & 0x3F);
				int want = (c & 0xC0) == 0x80 && cp >= 0x800 &&
				    !(cp >= 0xD800 && cp <= 0xDFFF);
				s[0] = (unsigned char)a;
				s[1] = (unsigned char)b;
				s[2] = (unsigned char)c;
				ck_assert_int_eq(
				    rp_utf8_valid((char *)s, 3, &off), want);
			}
}
END_TEST

static Suite *
frame_suite(void)
{
	Suite *s = suite_create("frame");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_init_default);
	tcase_add_test(tc, test_lines);
	tcase_add_test(tc, test_only_cr_stripped_at_end);
	tcase_add_test(tc, test_split_crlf);
	tcase_add_test(tc, test_incremental_scan);
	tcase_add_test(tc, test_limits_exact);
	tcase_add_test(tc, test_too_long_then_good);
	tcase_add_test(tc, test_too_long_streamed);
	tcase_add_test(tc, test_frame_bad_utf8);
	tcase_add_test(tc, test_frame_nul_inside);
	tcase_add_loop_test(tc, test_utf8_cases, 0,
	    (int)(sizeof(utf8_cases) / sizeof(utf8_cases[0])));
	tcase_add_test(tc, test_utf8_exhaustive);
	tcase_add_test(tc, test_text_ok);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(frame_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
