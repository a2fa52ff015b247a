/* test_ticket.c - expert tickets: creation, validation, state machine,
 * single use, constant-time comparison, JSON without the secret. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "bk_ticket.h"
#include "rp_error.h"

static const char *const good_addrs[] = {
    "192.0.2.7:40001", "[2001:db8::7]:40001"};

static struct bk_ticket_params
params(void)
{
	struct bk_ticket_params p = {
	    .helper = "CORP\\alice",
	    .helper_host = "192.0.2.7",
	    .addrs = good_addrs,
	    .naddrs = 2,
	    .machine = "ws-042.corp.example",
	    .mode = BK_MODE_VIEW,
	    .rule = "allow CORP\\helpdesk control ou=Workstations",
	    .duration_s = 600,
	    .max_duration_s = 3600,
	};
	return p;
}

static struct bk_ticket *
make(int64_t now)
{
	struct bk_ticket_params p = params();
	struct bk_ticket *t = NULL;
	char err[256];

	ck_assert_int_eq(
	    bk_ticket_create(&p, now, &t, err, sizeof(err)), RP_OK);
	ck_assert_ptr_nonnull(t);
	return t;
}

START_TEST(test_create_fields)
{
	struct bk_ticket *t = make(1000);
	static const uint8_t zero[BK_TICKET_SECRET_BYTES];

	ck_assert(bk_ticket_id_valid(t->id));
	ck_assert_uint_eq(strlen(t->id), 32);
	ck_assert(memcmp(t->secret, zero, sizeof(zero)) != 0);
	ck_assert_str_eq(t->helper, "CORP\\alice");
	ck_assert_str_eq(t->helper_host, "192.0.2.7");
	ck_assert_uint_eq(t->naddrs, 2);
	ck_assert_str_eq(t->addrs[1], "[2001:db8::7]:40001");
	ck_assert_str_eq(t->machine, "ws-042.corp.example");
	ck_assert_int_eq(t->state, BK_TS_OFFERED);
	ck_assert_int_eq(t->created_at, 1000);
	ck_assert_int_eq(t->expires_at, 1600);
	ck_assert_int_eq(t->connected_at, 0);
	ck_assert_int_eq(t->control_granted, 0);
	ck_assert(bk_ticket_is_open(t));
	bk_ticket_free(t);
}
END_TEST

START_TEST(test_duration_cap)
{
	struct bk_ticket_params p = params();
	struct bk_ticket *t;
	char err[256];

	p.duration_s = 999999;
	ck_assert_int_eq(bk_ticket_create(&p, 10, &t, err, sizeof(err)), RP_OK);
	ck_assert_int_eq(t->expires_at, 10 + 3600);
	bk_ticket_free(t);
	p.duration_s = 0; /* "the maximum" */
	ck_assert_int_eq(bk_ticket_create(&p, 10, &t, err, sizeof(err)), RP_OK);
	ck_assert_int_eq(t->expires_at, 10 + 3600);
	bk_ticket_free(t);
	p.max_duration_s = 0;
	ck_assert_int_eq(bk_ticket_create(&p, 10, &t, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_null(t);
}
END_TEST

static int
cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, BK_TICKET_ID_LEN + 1 + BK_TICKET_SECRET_BYTES);
}

START_TEST(test_ids_unique)
{
	enum { N = 5000, W = BK_TICKET_ID_LEN + 1 + BK_TICKET_SECRET_BYTES };
	unsigned char(*rec)[W] = calloc(N, sizeof(*rec));

	/* Sorted, neighbours must differ: ids and secrets both fresh. */
	for (int i = 0; i < N; i++) {
		struct bk_ticket *t = make(1);

		memcpy(rec[i], t->id, BK_TICKET_ID_LEN + 1);
		bk_ticket_free(t);
	}
	qsort(rec, N, W, cmp_id);
	for (int i = 1; i < N; i++)
		ck_assert(memcmp(rec[i - 1], rec[i], BK_TICKET_ID_LEN) != 0);
	for (int i = 0; i < N; i++) {
		struct bk_ticket *t = make(1);

		memset(rec[i], 0, W);
		memcpy(rec[i], t->secret, BK_TICKET_SECRET_BYTES);
		bk_ticket_free(t);
	}
	qsort(rec, N, W, cmp_id);
	for (int i = 1; i < N; i++)
		ck_assert(
		    memcmp(rec[i - 1], rec[i], BK_TICKET_SECRET_BYTES) != 0);
	free(rec);
}
END_TEST

START_TEST(test_addr_valid)
{
	static const char *const good[] = {"10.0.0.5:3389", "1.2.3.4:1",
	    "255.255.255.255:65535", "[::1]:5900", "[2001:db8::1]:443",
	    "[::ffff:192.0.2.1]:80"};
	static const char *const bad[] = {"", "10.0.0.5",
	    "10.0.0.5:", "10.0.0.5:0", "10.0.0.5:65536", "10.0.0.5:99999",
	    "10.0.0.5:-1", "10.0.0.5:+80", "10.0.0.5:080", "10.0.0.5:80x",
	    "10.0.0.5:80 ", " 10.0.0.5:80", "10.0.0.256:80", "10.0.0:80",
	    "::1:5900", "[::1]", "[::1]5900", "[::1]:", "[::1]:0",
	    "[fe80::1%eth0]:22", "[10.0.0.5]:80", "kim.redmond.example:3389",
	    "1.2.3.4:80:80", "[::1]:80]", "1.2.3.4:123456",
	    "[1111:2222:3333:4444:5555:6666:7777:8888:9999]:1"};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(bk_ticket_addr_valid(good[i]), "%s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!bk_ticket_addr_valid(bad[i]), "%s", bad[i]);
	ck_assert(!bk_ticket_addr_valid(NULL));
}
END_TEST

START_TEST(test_create_refuses)
{
	static const char *const one_bad[] = {
	    "192.0.2.7:40001", "example.org:1"};
	const char *many[BK_TICKET_MAX_ADDRS + 1];
	struct bk_ticket_params p;
	struct bk_ticket *t = NULL;
	char err[256];

	for (int i = 0; i <= BK_TICKET_MAX_ADDRS; i++)
		many[i] = "10.1.1.1:4000";
	p = params();
	p.addrs = one_bad;
	ck_assert_int_eq(bk_ticket_create(&p, 1, &t, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(strstr(err, "addresses[1]"));

	p = params();
	p.addrs = many;
	p.naddrs = BK_TICKET_MAX_ADDRS;
	ck_assert_int_eq(bk_ticket_create(&p, 1, &t, err, sizeof(err)), RP_OK);
	bk_ticket_free(t);
	p.naddrs = BK_TICKET_MAX_ADDRS + 1;
	ck_assert_int_eq(bk_ticket_create(&p, 1, &t, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	p.naddrs = 0;
	ck_assert_int_eq(bk_ticket_create(&p, 1, &t, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);

	p = params();
	p.helper = "";
	ck_assert_int_eq(bk_ticket_create(&p, 1, &t, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(err, "helper"));
	p = params();
	p.machine = "ws-042\nforged audit line";
	ck_assert_int_eq(bk_ticket_create(&p, 1, &t, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	p = params();
	p.rule = NULL;
	ck_assert_int_eq(bk_ticket_create(&p, 1, &t, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	p = params();
	p.mode = (enum bk_ticket_mode)7;
	ck_assert_int_eq(bk_ticket_create(&p, 1, &t, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
}
END_TEST

/* The expected machine, written out edge by edge, independently of the
 * table in bk_ticket.c. */
static int
expected_edge(enum bk_ticket_state f, enum bk_ticket_state t)
{
	static const int edges[][2] = {
	    {BK_TS_OFFERED, BK_TS_PROMPTING},
	    {BK_TS_PROMPTING, BK_TS_ACCEPTED},
	    {BK_TS_PROMPTING, BK_TS_DECLINED},
	    {BK_TS_PROMPTING, BK_TS_TIMED_OUT},
	    {BK_TS_ACCEPTED, BK_TS_CONNECTED},
	    {BK_TS_CONNECTED, BK_TS_ENDED},
	};
	static const int open[] = {
	    BK_TS_OFFERED, BK_TS_PROMPTING, BK_TS_ACCEPTED, BK_TS_CONNECTED};

	for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
		if (edges[i][0] == (int)f && edges[i][1] == (int)t)
			return 1;
	if (t == BK_TS_EXPIRED || t == BK_TS_CANCELLED || t == BK_TS_REVOKED)
		for (size_t i = 0; i < 4; i++)
			if (open[i] == (int)f)
				return 1;
	return 0;
}

START_TEST(test_transition_table)
{
	int legal = 0;

	for (int f = 0; f < BK_TS_COUNT; f++)
		for (int to = 0; to < BK_TS_COUNT; to++) {
			struct bk_ticket *t = make(100);
			int want = expected_edge(f, to);
			int rc;

			t->state = (enum bk_ticket_state)f;
			rc = bk_ticket_transition(t, to, 200);
			ck_assert_msg(rc == (want ? RP_OK : RP_ERR_WRONG_STATE),
			    "%s -> %s: rc %d", bk_ticket_state_name(f),
			    bk_ticket_state_name(to), rc);
			ck_assert_int_eq(bk_ticket_can_transition(f, to), want);
			ck_assert_int_eq(t->state, want ? to : f);
			legal += want;
			bk_ticket_free(t);
		}
	ck_assert_int_eq(legal, 6 + 4 * 3);
	ck_assert_int_eq(bk_ticket_can_transition(BK_TS_COUNT, 0), 0);
}
END_TEST

START_TEST(test_transition_times)
{
	struct bk_ticket *t = make(100);

	ck_assert_int_eq(bk_ticket_transition(t, BK_TS_PROMPTING, 101), RP_OK);
	ck_assert_int_eq(bk_ticket_transition(t, BK_TS_ACCEPTED, 102), RP_OK);
	ck_assert_int_eq(t->accepted_at, 102);
	ck_assert_int_eq(bk_ticket_transition(t, BK_TS_CONNECTED, 103), RP_OK);
	ck_assert_int_eq(t->connected_at, 103);
	ck_assert_int_eq(t->ended_at, 0);
	ck_assert(bk_ticket_is_open(t));
	ck_assert_int_eq(bk_ticket_transition(t, BK_TS_ENDED, 104), RP_OK);
	ck_assert_int_eq(t->ended_at, 104);
	ck_assert(!bk_ticket_is_open(t));
	/* Final: nothing moves any more. */
	ck_assert_int_eq(
	    bk_ticket_transition(t, BK_TS_EXPIRED, 105), RP_ERR_WRONG_STATE);
	ck_assert_int_eq(t->ended_at, 104);
	bk_ticket_free(t);
}
END_TEST

START_TEST(test_use_once)
{
	struct bk_ticket *t = make(100); /* expires at 700 */

	ck_assert_int_eq(bk_ticket_use(t, 150), RP_ERR_WRONG_STATE);
	bk_ticket_transition(t, BK_TS_PROMPTING, 101);
	ck_assert_int_eq(bk_ticket_use(t, 150), RP_ERR_WRONG_STATE);
	bk_ticket_transition(t, BK_TS_ACCEPTED, 102);
	ck_assert_int_eq(bk_ticket_use(t, 150), RP_OK);
	ck_assert_int_eq(t->state, BK_TS_CONNECTED);
	ck_assert_int_eq(t->connected_at, 150);
	ck_assert_int_eq(bk_ticket_use(t, 151), RP_ERR_TICKET_USED);
	ck_assert_int_eq(t->connected_at, 150);
	bk_ticket_transition(t, BK_TS_ENDED, 160);
	ck_assert_int_eq(bk_ticket_use(t, 161), RP_ERR_TICKET_USED);
	bk_ticket_free(t);
}
END_TEST

START_TEST(test_use_expired)
{
	struct bk_ticket *t = make(100); /* expires at 700 */

	bk_ticket_transition(t, BK_TS_PROMPTING, 101);
	bk_ticket_transition(t, BK_TS_ACCEPTED, 102);
	/* The broker's clock decides: at expires_at the ticket is dead. */
	ck_assert_int_eq(bk_ticket_use(t, 700), RP_ERR_TICKET_EXPIRED);
	ck_assert_int_eq(t->state, BK_TS_EXPIRED);
	ck_assert_int_eq(t->ended_at, 700);
	ck_assert_int_eq(bk_ticket_use(t, 701), RP_ERR_TICKET_EXPIRED);
	bk_ticket_free(t);

	t = make(100);
	bk_ticket_transition(t, BK_TS_PROMPTING, 101);
	bk_ticket_transition(t, BK_TS_ACCEPTED, 102);
	ck_assert_int_eq(bk_ticket_transition(t, BK_TS_REVOKED, 103), RP_OK);
	ck_assert_int_eq(bk_ticket_use(t, 104), RP_ERR_TICKET_EXPIRED);
	bk_ticket_free(t);

	t = make(100);
	bk_ticket_transition(t, BK_TS_CANCELLED, 101);
	ck_assert_int_eq(bk_ticket_use(t, 104), RP_ERR_TICKET_EXPIRED);
	bk_ticket_free(t);

	t = make(100);
	bk_ticket_transition(t, BK_TS_PROMPTING, 101);
	bk_ticket_transition(t, BK_TS_DECLINED, 102);
	ck_assert_int_eq(bk_ticket_use(t, 104), RP_ERR_DECLINED);
	bk_ticket_free(t);
}
END_TEST

START_TEST(test_expire_if_due)
{
	struct bk_ticket *t = make(100); /* expires at 700 */

	ck_assert_int_eq(bk_ticket_expire_if_due(t, 699), 0);
	ck_assert_int_eq(t->state, BK_TS_OFFERED);
	ck_assert_int_eq(bk_ticket_expire_if_due(t, 700), 1);
	ck_assert_int_eq(t->state, BK_TS_EXPIRED);
	ck_assert_int_eq(bk_ticket_expire_if_due(t, 800), 0);
	ck_assert_int_eq(t->ended_at, 700);
	bk_ticket_free(t);
}
END_TEST

START_TEST(test_ct_equal)
{
	struct bk_ticket *t = make(1);
	uint8_t copy[BK_TICKET_SECRET_BYTES];

	ck_assert(bk_ct_equal("abc", 3, "abc", 3));
	ck_assert(!bk_ct_equal("abc", 3, "abd", 3));
	ck_assert(!bk_ct_equal("abc", 3, "abcd", 4));
	ck_assert(bk_ct_equal("", 0, "", 0));
	memcpy(copy, t->secret, sizeof(copy));
	ck_assert(bk_ticket_secret_matches(t, copy, sizeof(copy)));
	copy[0] ^= 1;
	ck_assert(!bk_ticket_secret_matches(t, copy, sizeof(copy)));
	copy[0] ^= 1;
	copy[31] ^= 0x80;
	ck_assert(!bk_ticket_secret_matches(t, copy, sizeof(copy)));
	ck_assert(!bk_ticket_secret_matches(t, copy, 16));
	bk_ticket_free(t);
}
END_TEST

START_TEST(test_json_hides_secret)
{
	struct bk_ticket *t = make(100);
	char hex[2 * BK_TICKET_SECRET_BYTES + 1];
	json_t *j;
	char *s;

	bk_ticket_secret_hex(t, hex);
	ck_assert_uint_eq(strlen(hex), 64);
	j = bk_ticket_to_json(t, 0);
	ck_assert_ptr_nonnull(j);
	s = json_dumps(j, JSON_COMPACT);
	ck_assert_ptr_null(strstr(s, hex));
	ck_assert_ptr_null(strstr(s, "secret"));
	ck_assert_str_eq(json_string_value(json_object_get(j, "id")), t->id);
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "state")), "offered");
	ck_assert_str_eq(json_string_value(json_object_get(j, "mode")), "view");
	ck_assert_int_eq(json_array_size(json_object_get(j, "addresses")), 2);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(j, "expires_at")), 700);
	ck_assert_ptr_null(json_object_get(j, "connected_at"));
	free(s);
	json_decref(j);

	j = bk_ticket_to_json(t, 1);
	ck_assert_str_eq(json_string_value(json_object_get(j, "secret")), hex);
	json_decref(j);
	bk_ticket_free(t);
}
END_TEST

START_TEST(test_names)
{
	for (int i = 0; i < BK_TS_COUNT; i++)
		ck_assert_int_eq(
		    bk_ticket_state_parse(bk_ticket_state_name(i)), i);
	ck_assert_int_eq(bk_ticket_state_parse("bogus"), -1);
	ck_assert_int_eq(bk_ticket_state_parse(NULL), -1);
	ck_assert_str_eq(bk_ticket_state_name(BK_TS_COUNT), "unknown");
	ck_assert_str_eq(bk_ticket_state_name(BK_TS_TIMED_OUT), "timed_out");
	ck_assert_int_eq(bk_ticket_mode_parse("control"), BK_MODE_CONTROL);
	ck_assert_int_eq(bk_ticket_mode_parse("View"), -1);
	ck_assert(!bk_ticket_id_valid("0123456789abcdef0123456789ABCDEF"));
	ck_assert(!bk_ticket_id_valid("0123456789abcdef0123456789abcde"));
	ck_assert(!bk_ticket_id_valid("0123456789abcdef0123456789abcdef0"));
	ck_assert(bk_ticket_id_valid("0123456789abcdef0123456789abcdef"));
}
END_TEST

START_TEST(test_dup)
{
	struct bk_ticket *t = make(5), *c;

	t->control_granted = 1;
	c = bk_ticket_dup(t);
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->id, t->id);
	ck_assert(memcmp(c->secret, t->secret, sizeof(t->secret)) == 0);
	ck_assert_ptr_ne(c->helper, t->helper);
	ck_assert_str_eq(c->helper, t->helper);
	ck_assert_str_eq(c->addrs[0], t->addrs[0]);
	ck_assert_ptr_ne(c->addrs[0], t->addrs[0]);
	ck_assert_int_eq(c->naddrs, t->naddrs);
	ck_assert_int_eq(c->control_granted, 1);
	bk_ticket_free(t);
	ck_assert_str_eq(
	    c->rule, "allow CORP\\helpdesk control ou=Workstations");
	bk_ticket_free(c);
	bk_ticket_free(NULL);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("ticket");
	TCase *tc = tcase_create("ticket");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_create_fields);
	tcase_add_test(tc, test_duration_cap);
	tcase_add_test(tc, test_ids_unique);
	tcase_add_test(tc, test_addr_valid);
	tcase_add_test(tc, test_create_refuses);
	tcase_add_test(tc, test_transition_table);
	tcase_add_test(tc, test_transition_times);
	tcase_add_test(tc, test_use_once);
	tcase_add_test(tc, test_use_expired);
	tcase_add_test(tc, test_expire_if_due);
	tcase_add_test(tc, test_ct_equal);
	tcase_add_test(tc, test_json_hides_secret);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_dup);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
