/* test_rfb.c - the RFB viewer -> server view-only filter (cl_rfb). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "cl_rfb.h"

/* A viewer stream builder. */
struct stream {
	unsigned char b[8192];
	size_t n;
};

static void
put(struct stream *s, const void *p, size_t n)
{
	ck_assert_uint_le(s->n + n, sizeof(s->b));
	memcpy(s->b + s->n, p, n);
	s->n += n;
}

static void
put8(struct stream *s, unsigned v)
{
	unsigned char c = (unsigned char)v;
	put(s, &c, 1);
}

static void
handshake(struct stream *s, int vnc_auth)
{
	put(s, "RFB 003.008\n", 12);
	put8(s, vnc_auth ? 2 : 1);
	if (vnc_auth)
		put(s, "0123456789abcdef", 16);
	put8(s, 1); /* ClientInit shared */
}

static void
msg_pixfmt(struct stream *s)
{
	unsigned char m[20] = {0};
	m[4] = 32;
	put(s, m, sizeof(m));
}

static void
msg_encodings(struct stream *s, unsigned n)
{
	unsigned char h[4] = {2, 0, (unsigned char)(n >> 8), (unsigned char)n};
	put(s, h, 4);
	for (unsigned i = 0; i < n; i++) {
		unsigned char e[4] = {0, 0, 0, (unsigned char)i};
		put(s, e, 4);
	}
}

static void
msg_fbur(struct stream *s)
{
	unsigned char m[10] = {3, 1, 0, 0, 0, 0, 4, 0, 3, 0};
	put(s, m, sizeof(m));
}

static void
msg_key(struct stream *s, unsigned key)
{
	unsigned char m[8] = {4, 1, 0, 0, 0, 0, 0, (unsigned char)key};
	put(s, m, sizeof(m));
}

static void
msg_pointer(struct stream *s)
{
	unsigned char m[6] = {5, 1, 0, 10, 0, 20};
	put(s, m, sizeof(m));
}

static void
msg_cut(struct stream *s, const char *text)
{
	size_t n = strlen(text);
	unsigned char h[8] = {6, 0, 0, 0, (unsigned char)(n >> 24),
	    (unsigned char)(n >> 16), (unsigned char)(n >> 8),
	    (unsigned char)n};
	put(s, h, 8);
	put(s, text, n);
}

/* Feeds s in chunks of `chunk` bytes (0: all at once); out gets what
 * passes. Returns the filter result of the last call. */
static int
feed(struct cl_rfb *f, const struct stream *s, size_t chunk, struct stream *out)
{
	size_t i = 0, k, olen;
	unsigned char o[sizeof(s->b) + CL_RFB_HOLD];
	int r = 0;

	out->n = 0;
	if (chunk == 0)
		chunk = s->n;
	while (i < s->n) {
		k = s->n - i < chunk ? s->n - i : chunk;
		r = cl_rfb_filter(f, s->b + i, k, o, &olen);
		ck_assert_uint_le(olen, k + CL_RFB_HOLD);
		put(out, o, olen);
		i += k;
		if (r != 0)
			break;
	}
	return r;
}

/* Expected output: the same builder without the input messages. */
START_TEST(t_view_drops_input)
{
	static const size_t chunks[] = {0, 1, 2, 3, 5, 7, 13, 64};
	struct stream in = {0}, want = {0}, out;

	handshake(&in, _i & 1);
	handshake(&want, _i & 1);
	msg_pixfmt(&in);
	msg_pixfmt(&want);
	msg_encodings(&in, 5);
	msg_encodings(&want, 5);
	msg_key(&in, 'a');
	msg_fbur(&in);
	msg_fbur(&want);
	msg_pointer(&in);
	msg_cut(&in, "secret clipboard");
	msg_fbur(&in);
	msg_fbur(&want);
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		struct cl_rfb *f = cl_rfb_new();
		struct cl_rfb_stats st;

		ck_assert_int_eq(feed(f, &in, chunks[c], &out), 0);
		ck_assert_uint_eq(out.n, want.n);
		ck_assert_mem_eq(out.b, want.b, want.n);
		cl_rfb_stats(f, &st);
		ck_assert_uint_eq(st.dropped_msgs, 3);
		ck_assert_uint_eq(st.dropped_bytes, 8 + 6 + 8 + 16);
		ck_assert_uint_eq(st.passed_msgs, 4);
		cl_rfb_free(f);
	}
}
END_TEST

START_TEST(t_control_passes_everything)
{
	struct stream in = {0}, out;
	struct cl_rfb *f = cl_rfb_new();

	handshake(&in, 0);
	msg_key(&in, 'x');
	msg_pointer(&in);
	msg_cut(&in, "hello");
	msg_fbur(&in);
	cl_rfb_set_control(f, 1);
	ck_assert_int_eq(feed(f, &in, 1, &out), 0);
	ck_assert_uint_eq(out.n, in.n);
	ck_assert_mem_eq(out.b, in.b, in.n);
	cl_rfb_free(f);
}
END_TEST

/* Control granted and taken back between messages. */
START_TEST(t_toggle)
{
	struct stream hs = {0}, k1 = {0}, out;
	struct cl_rfb *f = cl_rfb_new();

	handshake(&hs, 0);
	msg_key(&k1, 'k');
	ck_assert_int_eq(feed(f, &hs, 0, &out), 0);
	ck_assert_uint_eq(out.n, hs.n);
	ck_assert_int_eq(feed(f, &k1, 0, &out), 0);
	ck_assert_uint_eq(out.n, 0);
	cl_rfb_set_control(f, 1);
	ck_assert_int_eq(feed(f, &k1, 0, &out), 0);
	ck_assert_uint_eq(out.n, 8);
	cl_rfb_set_control(f, 0);
	ck_assert_int_eq(feed(f, &k1, 3, &out), 0);
	ck_assert_uint_eq(out.n, 0);
	/* Decision taken at the type byte: toggling mid-message changes
	 * nothing for that message. */
	{
		size_t olen;
		unsigned char o[64];
		ck_assert_int_eq(cl_rfb_filter(f, k1.b, 3, o, &olen), 0);
		ck_assert_uint_eq(olen, 0);
		cl_rfb_set_control(f, 1);
		ck_assert_int_eq(cl_rfb_filter(f, k1.b + 3, 5, o, &olen), 0);
		ck_assert_uint_eq(olen, 0);
		ck_assert_int_eq(cl_rfb_filter(f, k1.b, 8, o, &olen), 0);
		ck_assert_uint_eq(olen, 8);
	}
	cl_rfb_free(f);
}
END_TEST

START_TEST(t_unknown_type)
{
	struct stream in = {0}, out;
	struct cl_rfb *f = cl_rfb_new();
	size_t olen;
	unsigned char o[64];

	handshake(&in, 0);
	msg_fbur(&in);
	put8(&in, 7); /* no such client message (FileTransfer ext.) */
	msg_fbur(&in);
	ck_assert_int_eq(feed(f, &in, 0, &out), -1);
	ck_assert_uint_eq(out.n, 14 + 10); /* everything before the bad byte */
	ck_assert_ptr_nonnull(cl_rfb_error(f));
	ck_assert_ptr_nonnull(strstr(cl_rfb_error(f), "type 7"));
	/* Stays failed. */
	ck_assert_int_eq(cl_rfb_filter(f, in.b, 1, o, &olen), -1);
	ck_assert_uint_eq(olen, 0);
	cl_rfb_free(f);
}
END_TEST

START_TEST(t_bounds)
{
	struct stream in = {0}, out;
	struct cl_rfb *f = cl_rfb_new();
	unsigned char cut[8] = {6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff};
	unsigned char neg[8] = {6, 0, 0, 0, 0xff, 0xff, 0xff, 0xf0};
	unsigned char enc[4] = {2, 0, 0xff, 0xff};

	handshake(&in, 0);
	put(&in, cut, 8);
	ck_assert_int_eq(feed(f, &in, 0, &out), -1);
	ck_assert_ptr_nonnull(strstr(cl_rfb_error(f), "ClientCutText"));
	cl_rfb_free(f);

	f = cl_rfb_new();
	in.n = 0;
	handshake(&in, 0);
	put(&in, neg, 8); /* extended clipboard (negative length) */
	ck_assert_int_eq(feed(f, &in, 0, &out), -1);
	cl_rfb_free(f);

	f = cl_rfb_new();
	in.n = 0;
	handshake(&in, 0);
	put(&in, enc, 4);
	ck_assert_int_eq(feed(f, &in, 1, &out), -1);
	ck_assert_ptr_nonnull(strstr(cl_rfb_error(f), "SetEncodings"));
	cl_rfb_free(f);

	/* The largest allowed values pass. */
	f = cl_rfb_new();
	in.n = 0;
	handshake(&in, 0);
	msg_encodings(&in, CL_RFB_MAX_ENCODINGS);
	ck_assert_int_eq(feed(f, &in, 100, &out), 0);
	ck_assert_uint_eq(out.n, in.n);
	cl_rfb_free(f);
}
END_TEST

START_TEST(t_handshake_refusals)
{
	static const char *bad[] = {"RFB 003.003\n", "RFB 004.000\n",
	    "GET / HTTP/1.\n", "RFB 003.008X"};
	struct stream in, out;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cl_rfb *f = cl_rfb_new();
		in.n = 0;
		put(&in, bad[i], 12);
		ck_assert_int_eq(feed(f, &in, 1, &out), -1);
		ck_assert_uint_eq(out.n, 0); /* nothing leaks before checking */
		cl_rfb_free(f);
	}
	{
		/* 3.7 is fine; security type 16 (Tight) is not. */
		struct cl_rfb *f = cl_rfb_new();
		in.n = 0;
		put(&in, "RFB 003.007\n", 12);
		put8(&in, 16);
		ck_assert_int_eq(feed(f, &in, 0, &out), -1);
		ck_assert_uint_eq(out.n, 12);
		ck_assert_ptr_nonnull(strstr(cl_rfb_error(f), "security"));
		cl_rfb_free(f);
	}
}
END_TEST

/* A big clipboard streams through without being held back. */
START_TEST(t_big_cut_streams)
{
	struct cl_rfb *f = cl_rfb_new();
	struct stream in = {0};
	unsigned char h[8] = {6, 0, 0, 0, 0, 0x10, 0, 0}; /* 1 MiB */
	unsigned char body[4096], o[sizeof(body) + CL_RFB_HOLD];
	size_t olen, total = 0;

	memset(body, 'x', sizeof(body));
	handshake(&in, 0);
	put(&in, h, 8);
	cl_rfb_set_control(f, 1);
	ck_assert_int_eq(cl_rfb_filter(f, in.b, in.n, o, &olen), 0);
	ck_assert_uint_eq(olen, in.n);
	for (int i = 0; i < 256; i++) {
		ck_assert_int_eq(
		    cl_rfb_filter(f, body, sizeof(body), o, &olen), 0);
		ck_assert_uint_eq(olen, sizeof(body));
		total += olen;
	}
	ck_assert_uint_eq(total, 1u << 20);
	/* Back to message parsing. */
	ck_assert_int_eq(
	    cl_rfb_filter(f, (const unsigned char *)"\x03", 1, o, &olen), 0);
	cl_rfb_free(f);
}
END_TEST

static Suite *
rfb_suite(void)
{
	Suite *s = suite_create("rfb");
	TCase *tc = tcase_create("filter");

	tcase_add_loop_test(tc, t_view_drops_input, 0, 2);
	tcase_add_test(tc, t_control_passes_everything);
	tcase_add_test(tc, t_toggle);
	tcase_add_test(tc, t_unknown_type);
	tcase_add_test(tc, t_bounds);
	tcase_add_test(tc, t_handshake_refusals);
	tcase_add_test(tc, t_big_cut_streams);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(rfb_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
