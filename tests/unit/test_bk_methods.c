/*
 * test_bk_methods.c - the broker's method table: every params spec is one
 * rp_conn can check, every method of docs/PROTOCOL.md (Methods) served by the broker
 * is in it with the states the contract gives, and nothing else is.
 */
#include <check.h>
#include <string.h>

#include "bk_methods.h"
#include "rp_conn.h"

static const struct {
	const char *name;
	unsigned states;
	int notify_ok;
} contract[] = {
    {"hello", RP_ST_NEW, 0},
    {"ping", RP_ST_AGENT | RP_ST_HELPER, 1},
    {"auth.start", RP_ST_HELLO, 0},
    {"auth.step", RP_ST_AUTHING, 0},
    {"machines.list", RP_ST_HELPER, 0},
    {"offer.create", RP_ST_HELPER, 0},
    {"offer.cancel", RP_ST_HELPER, 0},
    {"control.request", RP_ST_HELPER, 0},
    {"ticket.list", RP_ST_HELPER | RP_ST_AGENT, 0},
    {"agent.register", RP_ST_AGENT, 0},
    {"agent.sessions", RP_ST_AGENT, 1},
    {"ticket.expire", RP_ST_AGENT, 0},
    {"session.event", RP_ST_AGENT, 1},
    {"relay.join", RP_ST_AGENT | RP_ST_HELPER, 0},
};
#define NCONTRACT (sizeof(contract) / sizeof(contract[0]))

START_TEST(t_table_checks)
{
	char err[256] = "";

	ck_assert_msg(
	    rp_methods_check(bk_methods, bk_nmethods, err, sizeof(err)) == 0,
	    "%s", err);
}
END_TEST

START_TEST(t_contract)
{
	ck_assert_uint_eq(bk_nmethods, NCONTRACT);
	for (size_t i = 0; i < NCONTRACT; i++) {
		const struct rp_method *m = NULL;
		for (size_t j = 0; j < bk_nmethods; j++)
			if (strcmp(bk_methods[j].name, contract[i].name) == 0)
				m = &bk_methods[j];
		ck_assert_msg(m != NULL, "%s missing", contract[i].name);
		ck_assert_msg(m->states == contract[i].states,
		    "%s: states %#x, contract %#x", m->name, m->states,
		    contract[i].states);
		ck_assert_msg(
		    !!(m->flags & RP_M_NOTIFY_OK) == contract[i].notify_ok,
		    "%s: notification flag", m->name);
		ck_assert_ptr_nonnull(m->handler);
		ck_assert_ptr_nonnull(m->params);
	}
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("bk_methods");
	TCase *tc = tcase_create("table");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, t_table_checks);
	tcase_add_test(tc, t_contract);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
