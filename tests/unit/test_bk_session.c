/*
 * test_bk_session.c - the per-source keys of the broker's limits (an IPv4
 * address, an IPv6 /64) and the failed-login table (bounded, evicting the
 * oldest entry when full).
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bk.h"

static struct bk_addrkey
key6(const char *a)
{
	struct sockaddr_in6 s6;
	struct bk_addrkey k;

	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	s6.sin6_port = htons(4433);
	ck_assert_int_eq(inet_pton(AF_INET6, a, &s6.sin6_addr), 1);
	bk_addrkey_from((struct sockaddr *)&s6, &k);
	return k;
}

static struct bk_addrkey
key4(const char *a, unsigned port)
{
	struct sockaddr_in s4;
	struct bk_addrkey k;

	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	s4.sin_port = htons(port);
	ck_assert_int_eq(inet_pton(AF_INET, a, &s4.sin_addr), 1);
	bk_addrkey_from((struct sockaddr *)&s4, &k);
	return k;
}

static const char *
text(struct bk_addrkey k)
{
	static char buf[64];

	bk_addrkey_text(&k, buf, sizeof(buf));
	return buf;
}

START_TEST(t_addrkey)
{
	struct bk_addrkey a, b;

	/* One /64: one key, whatever the interface identifier. */
	a = key6("2001:db8:1:2::1");
	b = key6("2001:db8:1:2:ffff:eeee:dddd:cccc");
	ck_assert_int_eq(memcmp(&a, &b, sizeof(a)), 0);
	ck_assert_str_eq(text(a), "2001:db8:1:2::/64");
	/* Another /64 of the same /48: another key. */
	b = key6("2001:db8:1:3::1");
	ck_assert_int_ne(memcmp(&a, &b, sizeof(a)), 0);
	/* IPv4: the whole address, not the port. */
	a = key4("192.0.2.7", 1000);
	b = key4("192.0.2.7", 2000);
	ck_assert_int_eq(memcmp(&a, &b, sizeof(a)), 0);
	ck_assert_str_eq(text(a), "192.0.2.7");
	b = key4("192.0.2.8", 1000);
	ck_assert_int_ne(memcmp(&a, &b, sizeof(a)), 0);
	/* IPv4-mapped (dual-stack listener): the IPv4 address, not a /64
	 * shared by every IPv4 client. */
	b = key6("::ffff:192.0.2.7");
	ck_assert_int_eq(memcmp(&a, &b, sizeof(a)), 0);
	ck_assert_str_eq(text(key6("::ffff:192.0.2.9")), "192.0.2.9");
	ck_assert_str_eq(text(key6("::1")), "::/64");
}
END_TEST

START_TEST(t_ratelimit_window)
{
	struct bk_ratelimit *rl = bk_ratelimit_new();

	ck_assert_ptr_nonnull(rl);
	ck_assert_uint_eq(bk_ratelimit_get(rl, "192.0.2.1", 1000, 60), 0);
	ck_assert_uint_eq(bk_ratelimit_add(rl, "192.0.2.1", 1000, 60), 1);
	ck_assert_uint_eq(bk_ratelimit_add(rl, "192.0.2.1", 1010, 60), 2);
	ck_assert_uint_eq(bk_ratelimit_get(rl, "192.0.2.1", 1059, 60), 2);
	ck_assert_uint_eq(bk_ratelimit_get(rl, "192.0.2.2", 1010, 60), 0);
	/* The window counts from the first failure. */
	ck_assert_uint_eq(bk_ratelimit_get(rl, "192.0.2.1", 1060, 60), 0);
	ck_assert_uint_eq(bk_ratelimit_add(rl, "192.0.2.1", 1060, 60), 1);
	bk_ratelimit_free(rl);
}
END_TEST

/* A flood of addresses fills the table: new addresses are still counted,
 * the oldest entries are the ones dropped. */
START_TEST(t_ratelimit_full_evicts_oldest)
{
	struct bk_ratelimit *rl = bk_ratelimit_new();
	char k[48];
	unsigned lost_new = 0, kept = 0, i;
	const unsigned n = 20000; /* far more than the table holds */

	ck_assert_ptr_nonnull(rl);
	/* The first one, twice, at t = 0. */
	bk_ratelimit_add(rl, "198.51.100.1", 0, 3600);
	bk_ratelimit_add(rl, "198.51.100.1", 0, 3600);
	for (i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "10.%u.%u.%u", i >> 16, (i >> 8) & 255,
		    i & 255);
		/* Each new address counted at once, whatever the fill. */
		if (bk_ratelimit_add(rl, k, 1 + i / 100, 3600) != 1)
			lost_new++;
	}
	ck_assert_uint_eq(lost_new, 0);
	/* The newest are all there... */
	for (i = n - 100; i < n; i++) {
		snprintf(k, sizeof(k), "10.%u.%u.%u", i >> 16, (i >> 8) & 255,
		    i & 255);
		kept += bk_ratelimit_get(rl, k, 1 + n / 100, 3600) == 1;
	}
	ck_assert_uint_eq(kept, 100);
	/* ...and the oldest went first. */
	ck_assert_uint_eq(bk_ratelimit_get(rl, "198.51.100.1", 300, 3600), 0);
	bk_ratelimit_free(rl);
}
END_TEST

static Suite *
session_suite(void)
{
	Suite *s = suite_create("bk_session");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, t_addrkey);
	tcase_add_test(tc, t_ratelimit_window);
	tcase_add_test(tc, t_ratelimit_full_evicts_oldest);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(session_suite());
	int nf;

	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
