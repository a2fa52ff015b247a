/*
 * test_bk_agent.c - the broker's agent registry (open addressing, FNV-1a,
 * tombstones): case-insensitive lookup, removal, growth, iteration, and
 * what 100,000 machines cost.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bk.h"
#include "tl_util.h"

#define N 100000

static int
count_fn(struct bk_agent *ag, void *arg)
{
	(*(size_t *)arg)++;
	return 0;
}

static int
stop_fn(struct bk_agent *ag, void *arg)
{
	return ++(*(size_t *)arg) == 10 ? 7 : 0;
}

START_TEST(t_basic)
{
	struct bk_agents *a = bk_agents_new();
	struct bk_agent *x, *y;
	size_t n = 0;

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_null(bk_agents_find(a, "ws-042.corp.example"));
	x = bk_agents_add(a, "WS-042.Corp.Example");
	ck_assert_ptr_nonnull(x);
	ck_assert_str_eq(x->fqdn, "ws-042.corp.example");
	ck_assert_ptr_eq(bk_agents_find(a, "ws-042.CORP.example"), x);
	ck_assert_ptr_null(bk_agents_add(a, "ws-042.corp.example"));
	y = bk_agents_add(a, "ws-043.corp.example");
	ck_assert_uint_eq(bk_agents_count(a), 2);
	bk_agents_remove(a, x);
	ck_assert_ptr_null(bk_agents_find(a, "ws-042.corp.example"));
	ck_assert_ptr_eq(bk_agents_find(a, "ws-043.corp.example"), y);
	ck_assert_uint_eq(bk_agents_count(a), 1);
	bk_agents_foreach(a, count_fn, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_ptr_null(bk_agents_find(a, NULL));
	ck_assert_ptr_null(bk_agents_find(NULL, "x"));
	bk_agents_free(a);
}
END_TEST

START_TEST(t_100k)
{
	struct bk_agents *a = bk_agents_new();
	char name[64];
	size_t n = 0, rss0 = tl_rss_bytes(), bad = 0;
	uint64_t t0 = tl_now_ms(), t1, t2, t3;

	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "ws-%06d.corp.example", i);
		bad += bk_agents_add(a, name) == NULL;
	}
	t1 = tl_now_ms();
	ck_assert_uint_eq(bk_agents_count(a), N);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "WS-%06d.corp.example", i);
		bad += bk_agents_find(a, name) == NULL;
	}
	/* (Check's assertions cost a syscall each: count, assert once.) */
	ck_assert_uint_eq(bad, 0);
	snprintf(name, sizeof(name), "ws-%06d.corp.example", N);
	ck_assert_ptr_null(bk_agents_find(a, name));
	t2 = tl_now_ms();
	/* Remove every other one, then churn: tombstones must not make the
	 * table fill up or lookups fail. */
	for (int i = 0; i < N; i += 2) {
		snprintf(name, sizeof(name), "ws-%06d.corp.example", i);
		bk_agents_remove(a, bk_agents_find(a, name));
	}
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < N; i += 2) {
			snprintf(name, sizeof(name), "ws-%06d.corp.example", i);
			if (round % 2 == 0)
				bad += bk_agents_add(a, name) == NULL;
			else
				bk_agents_remove(a, bk_agents_find(a, name));
		}
	ck_assert_uint_eq(bk_agents_count(a), N);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "ws-%06d.corp.example", i);
		bad += bk_agents_find(a, name) == NULL;
	}
	ck_assert_uint_eq(bad, 0);
	bk_agents_foreach(a, count_fn, &n);
	ck_assert_uint_eq(n, N);
	n = 0;
	ck_assert_int_eq(bk_agents_foreach(a, stop_fn, &n), 7);
	ck_assert_uint_eq(n, 10);
	t3 = tl_now_ms();
	printf("registry: %d agents: add %llu ms, find %llu ms, churn+find "
	       "%llu ms, ~%zu bytes/agent (RSS, records included)\n",
	    N, (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1),
	    (unsigned long long)(t3 - t2), (tl_rss_bytes() - rss0) / (size_t)N);
	/* Generous bounds (shared CI machines, sanitizers): the point is
	 * that nothing is quadratic. */
	ck_assert_uint_lt(t3 - t0, 20000);
	bk_agents_free(a);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("bk_agent");
	TCase *tc = tcase_create("registry");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, t_basic);
	tcase_add_test(tc, t_100k);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
