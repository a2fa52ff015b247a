/*
 * test_bk_agent.c - the broker's agent registry (open addressing, FNV-1a,
 * tombstones): case-insensitive lookup, removal, growth, iteration, and
 * what 100,000 machines cost.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "az_dir.h"
#include "az_policy.h"
#include "bk.h"
#include "bk_config.h"
#include "bk_methods.h"
#include "rp_conn.h"
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

/* machines.list over a registry of 100,000 machines, through the real
 * method table on an in-memory connection: how long it takes, and that a
 * listing too long for one line is cut, sorted, under the line limit. */
static int
mem_write(void *io, struct evbuffer *buf)
{
	return evbuffer_add_buffer(io, buf);
}

static size_t
mem_pending(void *io)
{
	return 0;
}

static void
mem_reading(void *io, int on)
{
}

static void
mem_close(void *io)
{
}

static const struct rp_io_ops mem_ops = {
    .write = mem_write,
    .out_pending = mem_pending,
    .set_reading = mem_reading,
    .close = mem_close,
};

static json_t *
call_list(struct rp_conn *c, struct evbuffer *sent, const char *filter)
{
	struct evbuffer *in = evbuffer_new();
	json_t *res;
	char *line;
	size_t n;

	if (filter)
		evbuffer_add_printf(in,
		    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
		    "\"machines.list\",\"params\":{\"filter\":\"%s\"}}\n",
		    filter);
	else
		evbuffer_add_printf(in,
		    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
		    "\"machines.list\"}\n");
	rp_conn_input(c, in);
	evbuffer_free(in);
	line = evbuffer_readln(sent, &n, EVBUFFER_EOL_LF);
	ck_assert_ptr_nonnull(line);
	ck_assert_uint_lt(n, 65536);
	res = json_loads(line, 0, NULL);
	free(line);
	ck_assert_ptr_nonnull(res);
	return res;
}

START_TEST(t_list_100k)
{
	static const char pol[] =
	    "scope ws ou=\"ou=Workstations,dc=corp,dc=example\"\n"
	    "allow control group \"CORP\\helpdesk\" on ws\n";
	struct bk_ctx ctx;
	struct bk_config cfg;
	struct evbuffer *sent = evbuffer_new();
	struct rp_conn_opts o;
	struct rp_conn *c;
	struct bk_peer *p;
	struct az_entry e = {0};
	char *groups[] = {"CORP\\helpdesk"}, name[64], dn[128], err[256];
	json_t *res, *m;
	uint64_t t0, t1;

	memset(&ctx, 0, sizeof(ctx));
	memset(&cfg, 0, sizeof(cfg));
	cfg.keepalive_s = 60;
	ctx.cfg = &cfg;
	ctx.base = event_base_new();
	ctx.agents = bk_agents_new();
	ctx.policy =
	    az_policy_load_buffer("t", pol, strlen(pol), err, sizeof(err));
	ck_assert_msg(ctx.policy != NULL, "%s", err);
	for (int i = 0; i < N; i++) {
		struct bk_agent *ag;
		snprintf(name, sizeof(name), "ws-%06d.corp.example", i);
		ag = bk_agents_add(ctx.agents, name);
		if (ag == NULL)
			ck_abort_msg("add %d", i);
		/* every other machine in the scoped OU */
		snprintf(dn, sizeof(dn), "cn=%s,ou=%s,dc=corp,dc=example", name,
		    i % 2 ? "Servers" : "Workstations");
		ag->dn = strdup(dn);
	}
	memset(&o, 0, sizeof(o));
	o.methods = bk_methods;
	o.nmethods = bk_nmethods;
	o.ctx = &ctx;
	c = rp_conn_new(ctx.base, &mem_ops, sent, &o);
	p = calloc(1, sizeof(*p));
	e.dn = "uid=alice,dc=corp,dc=example";
	e.account = "CORP\\alice";
	e.groups = groups;
	e.ngroups = 1;
	p->ctx = &ctx;
	p->conn = c;
	p->role = BK_ROLE_HELPER;
	p->user = az_entry_dup(&e);
	rp_conn_set_data(c, p);
	rp_conn_set_state(c, RP_ST_HELPER);

	t0 = tl_now_ms();
	res = call_list(c, sent, NULL);
	t1 = tl_now_ms();
	m = json_object_get(json_object_get(res, "result"), "machines");
	ck_assert(json_is_true(
	    json_object_get(json_object_get(res, "result"), "truncated")));
	ck_assert_uint_gt(json_array_size(m), 100);
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_array_get(m, 0), "fqdn")),
	    "ws-000000.corp.example");
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_array_get(m, 1), "fqdn")),
	    "ws-000002.corp.example");
	printf("machines.list over %d agents (%d allowed): %llu ms, %zu "
	       "returned (truncated)\n",
	    N, N / 2, (unsigned long long)(t1 - t0), json_array_size(m));
	json_decref(res);
	/* With a filter the listing is whole. */
	res = call_list(c, sent, "ws-0999");
	m = json_object_get(json_object_get(res, "result"), "machines");
	ck_assert(json_is_false(
	    json_object_get(json_object_get(res, "result"), "truncated")));
	ck_assert_uint_eq(json_array_size(m), 50);
	json_decref(res);
	ck_assert_uint_lt(t1 - t0, 20000);

	rp_conn_set_data(c, NULL);
	rp_conn_closed(c, "done");
	rp_conn_unref(c);
	az_entry_free(p->user);
	free(p);
	bk_agents_free(ctx.agents);
	az_policy_free(ctx.policy);
	event_base_free(ctx.base);
	evbuffer_free(sent);
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
	tcase_add_test(tc, t_list_100k);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
