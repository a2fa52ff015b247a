/* test_cfg.c - rp_cfg: the line reader, the error list, the inih parse,
 * the value syntax shared by the three configuration files. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rp_cfg.h"

START_TEST(t_errors_listed)
{
	struct rp_cfg p;
	char err[64];

	rp_cfg_init(&p, "f.conf", NULL, "", err, sizeof(err));
	rp_cfg_error(&p, 3, "bad %s", "value");
	rp_cfg_error(&p, 0, "missing");
	ck_assert_int_eq(p.nerr, 2);
	ck_assert_str_eq(err, "f.conf:3: bad value\nf.conf: missing");
	/* what does not fit is cut, still terminated, still counted */
	rp_cfg_error(&p, 12345, "%s", "a long message that cannot fit");
	ck_assert_int_eq(p.nerr, 3);
	ck_assert_uint_eq(strlen(err), sizeof(err) - 1);
	/* no list: only counted */
	rp_cfg_init(&p, "f.conf", NULL, "", NULL, 0);
	rp_cfg_error(&p, 1, "x");
	ck_assert_int_eq(p.nerr, 1);
}
END_TEST

START_TEST(t_read_lines)
{
	struct rp_cfg p;
	char buf[8];

	rp_cfg_init(&p, "f", NULL, "ab\n\n1234567\n12345678\nlast", NULL, 0);
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 7), RP_CFG_LINE);
	ck_assert_str_eq(buf, "ab");
	ck_assert_uint_eq(p.line, 1);
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 7), RP_CFG_LINE);
	ck_assert_str_eq(buf, "");
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 7), RP_CFG_LINE);
	ck_assert_str_eq(buf, "1234567");
	/* one byte more than max: refused, read to its end, counted */
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 7), RP_CFG_TOO_LONG);
	ck_assert_str_eq(buf, "");
	ck_assert_uint_eq(p.line, 4);
	/* a last line without '\n' is a line */
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 7), RP_CFG_LINE);
	ck_assert_str_eq(buf, "last");
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 7), RP_CFG_EOF);
	ck_assert_uint_eq(p.line, 5);
	/* an empty text has no line */
	rp_cfg_init(&p, "f", NULL, "", NULL, 0);
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 7), RP_CFG_EOF);
	ck_assert_uint_eq(p.line, 0);
}
END_TEST

START_TEST(t_read_nul_from_file)
{
	static const char text[] = "a\0b\nok\n\0";
	struct rp_cfg p;
	char buf[16];
	FILE *f = tmpfile();

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, sizeof(text) - 1, f), 8);
	rewind(f);
	rp_cfg_init(&p, "f", f, NULL, NULL, 0);
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 15), RP_CFG_NUL);
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 15), RP_CFG_LINE);
	ck_assert_str_eq(buf, "ok");
	/* a line of only a NUL byte, at the end */
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 15), RP_CFG_NUL);
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 15), RP_CFG_EOF);
	ck_assert_uint_eq(p.line, 3);
	fclose(f);
}
END_TEST

START_TEST(t_open)
{
	struct rp_cfg p;
	char err[256], buf[16], path[] = "/tmp/test_cfg.XXXXXX";
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "x = 1\n", 6), 6);
	close(fd);
	ck_assert_int_eq(rp_cfg_open(&p, path, err, sizeof(err)), 0);
	ck_assert_str_eq(p.name, path);
	ck_assert_int_eq(rp_cfg_read_line(&p, buf, 15), RP_CFG_LINE);
	ck_assert_str_eq(buf, "x = 1");
	rp_cfg_close(&p);
	unlink(path);
	ck_assert_int_eq(rp_cfg_open(&p, path, err, sizeof(err)), -1);
	ck_assert_str_eq(strchr(err, ':'), ": No such file or directory");
}
END_TEST

struct seen {
	char got[4096];
	size_t used;
};

static int
collect(void *user, const char *section, const char *name, const char *value)
{
	struct seen *s = user;
	int n = snprintf(s->got + s->used, sizeof(s->got) - s->used,
	    "[%s]%s=%s;", section, name, value);

	ck_assert(n > 0 && (size_t)n < sizeof(s->got) - s->used);
	s->used += (size_t)n;
	return 1;
}

static void
no_equals(struct rp_cfg *p, const char *line)
{
	if (line[0] != '\0' && line[0] != '[' && strchr(line, '=') == NULL)
		rp_cfg_error(p, p->line, "expected `key = value`");
}

START_TEST(t_ini_parse)
{
	struct rp_cfg p;
	struct seen s = {.used = 0};
	char err[512], text[3000];

	snprintf(text, sizeof(text),
	    "[a]\nk = v ; comment\nwords\n"
	    "long = %01100d\n"
	    "  more = x\n"
	    "[b]\nj=1\n",
	    0);
	rp_cfg_init(&p, "i.conf", NULL, text, err, sizeof(err));
	p.check_line = no_equals;
	ck_assert_int_ge(rp_cfg_ini_parse(&p, 0, collect, &s), 0);
	ck_assert_str_eq(s.got, "[a]k=v;[a]more=x;[b]j=1;");
	ck_assert_int_eq(p.nerr, 2);
	ck_assert_str_eq(err,
	    "i.conf:3: expected `key = value`\n"
	    "i.conf:4: line too long (at most 1022 bytes)");
	/* multiline: the indented line continues k */
	s.used = 0;
	s.got[0] = '\0';
	rp_cfg_init(&p, "i.conf", NULL, "[a]\nk = v\n  w\n", err, sizeof(err));
	ck_assert_int_eq(rp_cfg_ini_parse(&p, 1, collect, &s), 0);
	ck_assert_str_eq(s.got, "[a]k=v;[a]k=w;");
	ck_assert_int_eq(p.nerr, 0);
	ck_assert_str_eq(err, "");
}
END_TEST

START_TEST(t_ini_longest_line)
{
	struct rp_cfg p;
	struct seen s = {.used = 0};
	char err[512], text[5000];

	/* The message's limit is the real one: RP_CFG_INI_LINE_MAX (1022)
	 * bytes of text pass, with "\n" or "\r\n" after them; one more byte
	 * does not, whatever the line end. */
	ck_assert_int_eq(RP_CFG_INI_LINE_MAX, 1022);
	snprintf(text, sizeof(text),
	    "[a]\nk = %0*d\nl = %0*d\nm = %0*d\r\nn = %0*d\r\n", 1018, 0, 1019,
	    0, 1018, 0, 1019, 0);
	rp_cfg_init(&p, "i.conf", NULL, text, err, sizeof(err));
	ck_assert_int_eq(rp_cfg_ini_parse(&p, 0, collect, &s), 0);
	ck_assert_int_eq(p.nerr, 2);
	ck_assert_str_eq(err,
	    "i.conf:3: line too long (at most 1022 bytes)\n"
	    "i.conf:5: line too long (at most 1022 bytes)");
	/* k and m arrive whole (1018 digits each), l and n not at all */
	ck_assert_uint_eq(strlen(s.got), strlen("[a]k=;[a]m=;") + 2 * 1018);
	ck_assert_ptr_null(strstr(s.got, "[a]l="));
	ck_assert_ptr_null(strstr(s.got, "[a]n="));
}
END_TEST

START_TEST(t_number)
{
	uint64_t v = 7;

	ck_assert_int_eq(rp_cfg_number("0", &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(rp_cfg_number("18446744073709551615", &v), 0);
	ck_assert_uint_eq(v, UINT64_MAX);
	v = 7;
	ck_assert_int_eq(rp_cfg_number("18446744073709551616", &v), -1);
	ck_assert_int_eq(rp_cfg_number("", &v), -1);
	ck_assert_int_eq(rp_cfg_number("-1", &v), -1);
	ck_assert_int_eq(rp_cfg_number("+1", &v), -1);
	ck_assert_int_eq(rp_cfg_number(" 1", &v), -1);
	ck_assert_int_eq(rp_cfg_number("1 ", &v), -1);
	ck_assert_int_eq(rp_cfg_number("0x10", &v), -1);
	ck_assert_int_eq(rp_cfg_number("5s", &v), -1);
	ck_assert_uint_eq(v, 7);
}
END_TEST

START_TEST(t_duration)
{
	static const struct {
		const char *in;
		uint64_t ms;
	} good[] = {
	    {"0", 0},
	    {"30", 30000},
	    {"30s", 30000},
	    {"500ms", 500},
	    {"5m", 300000},
	    {"5min", 300000},
	    {"5 m", 300000},
	    {"2h", 7200000},
	};
	static const char *const bad[] = {"", "s", "-5", "5d", "5 d", "5S",
	    "1.5s", "5mm", " 5", "5s ", "9999999999999999999h",
	    "99999999999999999999"};
	uint64_t ms;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_msg(
		    rp_cfg_duration_ms(good[i].in, &ms) == 0, "%s", good[i].in);
		ck_assert_uint_eq(ms, good[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(
		    rp_cfg_duration_ms(bad[i], &ms) == -1, "%s", bad[i]);
}
END_TEST

START_TEST(t_size)
{
	static const struct {
		const char *in;
		uint64_t n;
	} good[] = {
	    {"0", 0},
	    {"65536", 65536},
	    {"64K", 65536},
	    {"64k", 65536},
	    {"64KB", 65536},
	    {"64KiB", 65536},
	    {"512 M", 512ull << 20},
	    {"4G", 4ull << 30},
	    {"2T", 2ull << 40},
	    {"16777215T", 16777215ull << 40},
	};
	static const char *const bad[] = {
	    "", "K", "4X", "4Kx", "4KiBs", "4kib", "16777216T", "-1", "1.5G"};
	uint64_t n;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_msg(
		    rp_cfg_size(good[i].in, &n) == 0, "%s", good[i].in);
		ck_assert_uint_eq(n, good[i].n);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(rp_cfg_size(bad[i], &n) == -1, "%s", bad[i]);
}
END_TEST

START_TEST(t_bool)
{
	static const char *const yes[] = {"yes", "YES", "true", "On", "1"};
	static const char *const no[] = {"no", "False", "off", "0"};
	static const char *const bad[] = {"", "y", "2", "yes ", "enable"};
	int b;

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		b = 0;
		ck_assert_int_eq(rp_cfg_bool(yes[i], &b), 0);
		ck_assert_int_eq(b, 1);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		b = 1;
		ck_assert_int_eq(rp_cfg_bool(no[i], &b), 0);
		ck_assert_int_eq(b, 0);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b = 7;
		ck_assert_int_eq(rp_cfg_bool(bad[i], &b), -1);
		ck_assert_int_eq(b, 7);
	}
}
END_TEST

static Suite *
cfg_suite(void)
{
	Suite *s = suite_create("cfg");
	TCase *tc = tcase_create("cfg");

	tcase_add_test(tc, t_errors_listed);
	tcase_add_test(tc, t_read_lines);
	tcase_add_test(tc, t_read_nul_from_file);
	tcase_add_test(tc, t_open);
	tcase_add_test(tc, t_ini_parse);
	tcase_add_test(tc, t_ini_longest_line);
	tcase_add_test(tc, t_number);
	tcase_add_test(tc, t_duration);
	tcase_add_test(tc, t_size);
	tcase_add_test(tc, t_bool);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(cfg_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
