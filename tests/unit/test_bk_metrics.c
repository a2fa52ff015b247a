/*
 * test_bk_metrics.c - the checks behind [metrics] listen and [control]
 * socket, and the audit observer that feeds the counters (a real audit
 * trail in a temporary directory; the HTTP side is itest_metrics).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bk.h"
#include "bk_audit.h"
#include "bk_control.h"
#include "bk_metrics.h"
#include "tl_util.h"

START_TEST(t_listen)
{
	char why[300];

	ck_assert_int_eq(
	    bk_metrics_check_listen("127.0.0.1:9464", 0, why, sizeof(why)), 0);
	ck_assert_int_eq(
	    bk_metrics_check_listen("127.3.2.1:1", 0, why, sizeof(why)), 0);
	ck_assert_int_eq(
	    bk_metrics_check_listen("[::1]:9464", 0, why, sizeof(why)), 0);
	ck_assert_int_eq(
	    bk_metrics_check_listen("0.0.0.0:9464", 0, why, sizeof(why)), -1);
	ck_assert_ptr_nonnull(strstr(why, "allow_remote"));
	ck_assert_int_eq(
	    bk_metrics_check_listen("0.0.0.0:9464", 1, why, sizeof(why)), 0);
	ck_assert_int_eq(
	    bk_metrics_check_listen("[::]:9464", 0, why, sizeof(why)), -1);
	ck_assert_int_eq(
	    bk_metrics_check_listen("[::]:9464", 1, why, sizeof(why)), 0);
	ck_assert_int_eq(
	    bk_metrics_check_listen("localhost:9464", 0, why, sizeof(why)), -1);
	ck_assert_ptr_nonnull(strstr(why, "numeric"));
	ck_assert_int_eq(
	    bk_metrics_check_listen("127.0.0.1", 0, why, sizeof(why)), -1);
	ck_assert_int_eq(
	    bk_metrics_check_listen("127.0.0.1:0", 0, why, sizeof(why)), -1);
	ck_assert_int_eq(
	    bk_metrics_check_listen("127.0.0.1:65536", 0, why, sizeof(why)),
	    -1);
	ck_assert_int_eq(
	    bk_metrics_check_listen("127.0.0.1:94x", 0, why, sizeof(why)), -1);
	ck_assert_int_eq(
	    bk_metrics_check_listen("[::1:9464", 0, why, sizeof(why)), -1);
	ck_assert_int_eq(
	    bk_metrics_check_listen("::1:9464", 0, why, sizeof(why)), -1);
	ck_assert_int_eq(
	    bk_metrics_check_listen(":9464", 0, why, sizeof(why)), -1);
}
END_TEST

START_TEST(t_control_path)
{
	char why[200], longp[200];

	ck_assert_int_eq(bk_control_check_path(
	                     "/run/rabroker/control.sock", why, sizeof(why)),
	    0);
	ck_assert_int_eq(
	    bk_control_check_path("control.sock", why, sizeof(why)), -1);
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	ck_assert_int_eq(bk_control_check_path(longp, why, sizeof(why)), -1);
}
END_TEST

/* Without metrics state, counting is a no-op (unit tests of other modules
 * run with a bare context). */
START_TEST(t_count_without_metrics)
{
	struct bk_ctx ctx;

	memset(&ctx, 0, sizeof(ctx));
	bk_metrics_count(&ctx, BK_M_OFFER, "offline");
	bk_metrics_count(NULL, BK_M_AUTH_FAILURE, NULL);
	ck_assert_uint_eq(bk_metrics_port(&ctx), 0);
	bk_metrics_free(&ctx);
}
END_TEST

struct seen {
	int n[BK_AE_COUNT];
	char last_reason[64];
};

static void
observe(void *arg, enum bk_audit_event ev, const json_t *f)
{
	struct seen *s = arg;
	const char *r = json_string_value(json_object_get(f, "reason"));

	s->n[ev]++;
	if (r != NULL)
		snprintf(s->last_reason, sizeof(s->last_reason), "%s", r);
}

/* The observer sees every event, also once the trail has failed. */
START_TEST(t_observer)
{
	char *dir = tl_tmpdir("test_bk_metrics");
	char path[600], err[300];
	struct bk_audit *a;
	struct seen s;

	memset(&s, 0, sizeof(s));
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	a = bk_audit_open(path, 0, err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	bk_audit_set_sync(a, 0);
	bk_audit_set_observer(a, observe, &s);
	ck_assert_int_eq(bk_audit_write(a, BK_AE_AUTH_FAILED,
	                     json_pack("{s:s, s:s, s:s, s:s}", "user", "bob",
	                         "mech", "PLAIN", "host", "127.0.0.1:1",
	                         "reason", "authentication failed")),
	    0);
	ck_assert_int_eq(s.n[BK_AE_AUTH_FAILED], 1);
	ck_assert_str_eq(s.last_reason, "authentication failed");
	ck_assert_int_eq(
	    bk_audit_write(a, BK_AE_OFFER_DECLINED,
	        json_pack("{s:s, s:s}", "ticket", "t", "machine", "m")),
	    0);
	ck_assert_int_eq(s.n[BK_AE_OFFER_DECLINED], 1);
	/* Removed: no more calls. */
	bk_audit_set_observer(a, NULL, NULL);
	bk_audit_write(a, BK_AE_OFFER_DECLINED,
	    json_pack("{s:s, s:s}", "ticket", "t", "machine", "m"));
	ck_assert_int_eq(s.n[BK_AE_OFFER_DECLINED], 1);
	bk_audit_close(a);
	tl_rmtree(dir);
	free(dir);
}
END_TEST

static Suite *
suite(void)
{
	Suite *s = suite_create("bk_metrics");
	TCase *tc = tcase_create("bk_metrics");

	tcase_add_test(tc, t_listen);
	tcase_add_test(tc, t_control_path);
	tcase_add_test(tc, t_count_without_metrics);
	tcase_add_test(tc, t_observer);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
