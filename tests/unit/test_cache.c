/* test_cache.c - the bounded TTL cache (az_cache). */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "az_cache.h"

static unsigned long long fake_now;

static unsigned long long
fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static struct az_cache *
mk(size_t max)
{
	struct az_cache *c = az_cache_new(max);

	ck_assert_ptr_nonnull(c);
	fake_now = 1000;
	az_cache_set_clock(c, fake_clock, NULL);
	return c;
}

static void
expect(struct az_cache *c, const char *key, const char *want)
{
	void *v = NULL;
	size_t n = 0;
	int r = az_cache_get(c, key, &v, &n);

	if (want == NULL) {
		ck_assert_msg(r == 0, "%s: expected a miss", key);
		ck_assert_ptr_null(v);
		return;
	}
	ck_assert_msg(r == 1, "%s: expected a hit", key);
	ck_assert_uint_eq(n, strlen(want));
	ck_assert_str_eq((char *)v, want);
	free(v);
}

START_TEST(test_put_get_replace)
{
	struct az_cache *c = mk(10);
	struct az_cache_stats st;

	expect(c, "a", NULL);
	ck_assert_int_eq(az_cache_put(c, "a", "one", 3, 1000), 0);
	expect(c, "a", "one");
	ck_assert_int_eq(az_cache_put(c, "a", "two", 3, 1000), 0);
	expect(c, "a", "two");
	az_cache_get_stats(c, &st);
	ck_assert_uint_eq(st.count, 1);
	ck_assert_uint_eq(st.hits, 2);
	ck_assert_uint_eq(st.misses, 1);
	az_cache_del(c, "a");
	expect(c, "a", NULL);
	az_cache_free(c);
}
END_TEST

START_TEST(test_binary_values)
{
	struct az_cache *c = mk(10);
	void *v;
	size_t n;

	ck_assert_int_eq(az_cache_put(c, "k", "a\0b\0", 4, 1000), 0);
	ck_assert_int_eq(az_cache_get(c, "k", &v, &n), 1);
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(memcmp(v, "a\0b\0", 5), 0); /* plus the extra NUL */
	free(v);
	ck_assert_int_eq(az_cache_put(c, "e", "", 0, 1000), 0);
	ck_assert_int_eq(az_cache_get(c, "e", &v, &n), 1);
	ck_assert_uint_eq(n, 0);
	free(v);
	ck_assert_int_eq(az_cache_get(c, "e", NULL, NULL), 1);
	az_cache_free(c);
}
END_TEST

START_TEST(test_ttl)
{
	struct az_cache *c = mk(10);
	struct az_cache_stats st;

	az_cache_put(c, "pos", "x", 1, 2000);
	az_cache_put(c, "neg", "N", 1, 500);
	fake_now += 499;
	expect(c, "neg", "N");
	fake_now += 1;
	expect(c, "neg", NULL); /* exactly at the TTL: stale */
	expect(c, "pos", "x");
	fake_now += 1499;
	expect(c, "pos", "x");
	fake_now += 1;
	expect(c, "pos", NULL);
	az_cache_get_stats(c, &st);
	ck_assert_uint_eq(st.expired, 2);
	ck_assert_uint_eq(st.count, 0);
	/* ttl 0 stores nothing and removes an older value */
	az_cache_put(c, "z", "1", 1, 1000);
	az_cache_put(c, "z", "2", 1, 0);
	expect(c, "z", NULL);
	az_cache_free(c);
}
END_TEST

START_TEST(test_lru_eviction)
{
	struct az_cache *c = mk(3);
	struct az_cache_stats st;

	az_cache_put(c, "a", "1", 1, 10000);
	az_cache_put(c, "b", "2", 1, 10000);
	az_cache_put(c, "c", "3", 1, 10000);
	expect(c, "a", "1"); /* a is now the most recent: b is the oldest */
	az_cache_put(c, "d", "4", 1, 10000);
	expect(c, "b", NULL);
	expect(c, "a", "1");
	expect(c, "c", "3");
	expect(c, "d", "4");
	az_cache_get_stats(c, &st);
	ck_assert_uint_eq(st.count, 3);
	ck_assert_uint_eq(st.evicted, 1);
	az_cache_free(c);
}
END_TEST

START_TEST(test_many_keys_bounded)
{
	struct az_cache *c = mk(1000);
	struct az_cache_stats st;
	char k[32];

	for (int i = 0; i < 20000; i++) {
		snprintf(k, sizeof(k), "key-%d", i);
		ck_assert_int_eq(az_cache_put(c, k, k, strlen(k), 60000), 0);
	}
	az_cache_get_stats(c, &st);
	ck_assert_uint_eq(st.count, 1000);
	ck_assert_uint_eq(st.evicted, 19000);
	expect(c, "key-18999", NULL);
	expect(c, "key-19000", "key-19000");
	expect(c, "key-0", NULL);
	az_cache_flush(c);
	az_cache_get_stats(c, &st);
	ck_assert_uint_eq(st.count, 0);
	expect(c, "key-19999", NULL);
	az_cache_free(c);
}
END_TEST

START_TEST(test_max_zero_disables)
{
	struct az_cache *c = mk(0);

	ck_assert_int_eq(az_cache_put(c, "a", "1", 1, 10000), 0);
	expect(c, "a", NULL);
	az_cache_free(c);
}
END_TEST

static void *
hammer(void *arg)
{
	struct az_cache *c = arg;
	char k[32];

	for (int i = 0; i < 20000; i++) {
		void *v = NULL;
		size_t n;

		/* puts on every third i; gets ask for the last key put */
		snprintf(k, sizeof(k), "k%d", (i / 3 * 3) % 300);
		if (i % 3 == 0)
			az_cache_put(c, k, k, strlen(k), 50);
		else if (az_cache_get(c, k, &v, &n) == 1) {
			/* a value is always the key it was stored under */
			if (n != strlen(k) || memcmp(v, k, n) != 0)
				abort();
			free(v);
		}
		if (i % 5000 == 0)
			az_cache_flush(c);
	}
	return NULL;
}

START_TEST(test_threads)
{
	struct az_cache *c = az_cache_new(100); /* the real clock */
	struct az_cache_stats st;
	pthread_t t[4];

	ck_assert_ptr_nonnull(c);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, hammer, c), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	az_cache_get_stats(c, &st);
	ck_assert_uint_le(st.count, 100);
	ck_assert_uint_gt(st.hits, 0);
	az_cache_free(c);
}
END_TEST

static Suite *
cache_suite(void)
{
	Suite *s = suite_create("cache");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_put_get_replace);
	tcase_add_test(tc, test_binary_values);
	tcase_add_test(tc, test_ttl);
	tcase_add_test(tc, test_lru_eviction);
	tcase_add_test(tc, test_many_keys_bounded);
	tcase_add_test(tc, test_max_zero_disables);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(cache_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
