/* test_agent_config.c - raagent.conf: values, defaults, errors with
 * file:line. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_agent_config.h"
#include "rp_log.h"

static const char *good = "[agent]\n"
                          "broker = broker.corp.example:5500\n"
                          "ca = /etc/rabroker/ca.pem\n"
                          "cert = /etc/rabroker/machine.pem\n"
                          "key = /etc/rabroker/machine-key.pem\n"
                          "state_dir = /run/raagent\n"
                          "domain = CORP\n"
                          "backoff_base = 2\n"
                          "backoff_cap = 30\n"
                          "resolve_timeout = 4\n"
                          "nameserver = 127.0.0.1:5353\n"
                          "[sessions]\n"
                          "source = static\n"
                          "session = CORP\\bob graphical\n"
                          "session = CORP\\eve console locked\n"
                          "[prompt]\n"
                          "command = script:/usr/lib/raagent/prompt\n"
                          "timeout_margin = 3\n"
                          "unattended = view\n"
                          "[tunnel]\n"
                          "target = [::1]:5901\n"
                          "connect_timeout = 10\n"
                          "relay = no\n"
                          "[log]\n"
                          "level = debug\n";

START_TEST(t_good)
{
	char err[1024];
	struct cl_agent_config *c =
	    cl_agent_config_parse("a.conf", good, err, sizeof(err));

	ck_assert_msg(c != NULL, "%s", err);
	ck_assert_str_eq(c->broker_host, "broker.corp.example");
	ck_assert_str_eq(c->broker_port, "5500");
	ck_assert_str_eq(c->server_name, "broker.corp.example");
	ck_assert_ptr_null(c->fqdn);
	ck_assert_uint_eq(c->backoff_base_ms, 2000);
	ck_assert_uint_eq(c->backoff_cap_ms, 30000);
	ck_assert_uint_eq(c->resolve_timeout_s, 4);
	ck_assert_str_eq(c->nameserver, "127.0.0.1:5353");
	ck_assert_int_eq(c->source, CL_SESS_STATIC);
	ck_assert_uint_eq(c->nstat, 2);
	ck_assert_str_eq(c->stat[0].user, "CORP\\bob");
	ck_assert_str_eq(c->stat[1].kind, "console");
	ck_assert_int_eq(c->stat[1].locked, 1);
	ck_assert_int_eq(c->stat[0].locked, 0);
	ck_assert_int_eq(c->prompt, CL_PROMPT_SCRIPT);
	ck_assert_str_eq(c->prompt_script, "/usr/lib/raagent/prompt");
	ck_assert_uint_eq(c->prompt_margin_s, 3);
	ck_assert_int_eq(c->unattended, CL_UNATT_VIEW);
	ck_assert_str_eq(c->target_host, "::1");
	ck_assert_str_eq(c->target_port, "5901");
	ck_assert_uint_eq(c->connect_timeout_s, 10);
	ck_assert_int_eq(c->relay, 0);
	ck_assert_int_eq(c->protocol, CL_PROTO_RFB);
	ck_assert_int_eq(c->log_level, LOG_LVL_DEBUG);
	cl_agent_config_free(c);
}
END_TEST

START_TEST(t_defaults)
{
	char err[1024];
	struct cl_agent_config *c = cl_agent_config_parse("d.conf",
	    "[agent]\nbroker=10.0.0.1:5500\nca=/c\ncert=/m\nkey=/k\n"
	    "state_dir=/s\n",
	    err, sizeof(err));

	ck_assert_msg(c != NULL, "%s", err);
	ck_assert_str_eq(c->target_host, "127.0.0.1");
	ck_assert_str_eq(c->target_port, "5900");
	ck_assert_uint_eq(c->connect_timeout_s, 30);
	ck_assert_int_eq(c->relay, 1);
	ck_assert_int_eq(c->prompt, CL_PROMPT_TERMINAL);
	ck_assert_int_eq(c->source, CL_SESS_LOGIND);
	ck_assert_uint_eq(c->backoff_base_ms, 1000);
	ck_assert_uint_eq(c->backoff_cap_ms, 60000);
	ck_assert_uint_eq(c->resolve_timeout_s, 10);
	ck_assert_ptr_null(c->nameserver);
	ck_assert_int_eq(c->unattended, CL_UNATT_NO);
	cl_agent_config_free(c);
}
END_TEST

/* [prompt] unattended: no, view or control, nothing else. */
START_TEST(t_unattended)
{
	static const struct {
		const char *v;
		int want;
	} cases[] = {{"no", CL_UNATT_NO}, {"view", CL_UNATT_VIEW},
	    {"control", CL_UNATT_CONTROL}};
	char text[512], err[1024];
	struct cl_agent_config *c;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text),
		    "[agent]\nbroker=h:1\nca=/c\ncert=/m\nkey=/k\n"
		    "state_dir=/s\n[prompt]\nunattended = %s\n",
		    cases[i].v);
		c = cl_agent_config_parse("u.conf", text, err, sizeof(err));
		ck_assert_msg(c != NULL, "%s: %s", cases[i].v, err);
		ck_assert_int_eq(c->unattended, cases[i].want);
		cl_agent_config_free(c);
	}
}
END_TEST

/* Each bad line is reported with its line number. */
static const struct {
	const char *text;
	const char *want;
} bad[] = {
    {"[agent]\nbroker = nohostport\n", "x.conf:2: broker"},
    {"[agent]\n\nfrobnicate = 1\n", "x.conf:3: unknown key frobnicate"},
    {"[agnet]\n", "x.conf:1: unknown section [agnet]"},
    {"[tunnel]\nconnect_timeout = 0\n", "x.conf:2: connect_timeout"},
    {"[agent]\nresolve_timeout = 0\n", "x.conf:2: resolve_timeout"},
    {"[agent]\nnameserver = dns.corp.example\n", "x.conf:2: nameserver"},
    {"[agent]\nnameserver = 127.0.0.1:99999\n", "x.conf:2: nameserver"},
    {"[tunnel]\nconnect_timeout = 30s\n", "x.conf:2: connect_timeout"},
    {"[tunnel]\nrelay = maybe\n", "x.conf:2: relay"},
    {"[tunnel]\nprotocol = rdp\n", "x.conf:2: protocol"},
    {"[tunnel]\ntarget = 127.0.0.1:70000\n", "x.conf:2: target"},
    {"[prompt]\ncommand = script:relative\n", "x.conf:2: command"},
    {"[sessions]\nsession = bob tablet\n", "x.conf:2: session"},
    {"[sessions]\nsource = utmp\n", "x.conf:2: source"},
    {"[log]\nlevel = loud\n", "x.conf:2: level"},
    {"[prompt]\n\nunattended = yes\n",
        "x.conf:3: unattended: no, view or control, got \"yes\""},
    {"[prompt]\nunattended = View\n", "x.conf:2: unattended"},
    {"[prompt]\nunattended = no\nunattended = view\n",
        "x.conf:3: unattended given twice"},
    {"[agent]\nunattended = view\n", "x.conf:2: unknown key unattended"},
    {"[agent]\nca = /a\nca = /b\n", "x.conf:3: ca given twice"},
    {"[agent]\nthis is not ini\n", "x.conf:2"},
    {"[agent]\nbroker=h:1\nca=/c\ncert=/m\nkey=/k\n",
        "x.conf: [agent] state_dir is required"},
    {"[agent]\nbroker=h:1\nca=/c\ncert=/m\nkey=/k\nstate_dir=/s\n"
     "[tunnel]\nprotocol=raw\n",
        "start_command"},
};

START_TEST(t_errors)
{
	char err[2048];
	struct cl_agent_config *c =
	    cl_agent_config_parse("x.conf", bad[_i].text, err, sizeof(err));

	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(err, bad[_i].want) != NULL,
	    "case %d: wanted \"%s\" in \"%s\"", _i, bad[_i].want, err);
}
END_TEST

START_TEST(t_long_line_and_all_errors)
{
	char text[4096], err[2048];
	struct cl_agent_config *c;

	snprintf(text, sizeof(text), "[agent]\nca = /%01500d\nfoo = 1\n", 0);
	c = cl_agent_config_parse("y.conf", text, err, sizeof(err));
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(err, "y.conf:2: line too long"));
	ck_assert_ptr_nonnull(strstr(err, "y.conf:3: unknown key foo"));
}
END_TEST

START_TEST(t_missing_file)
{
	char err[512];

	ck_assert_ptr_null(cl_agent_config_load(
	    "/nonexistent/raagent.conf", err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent/raagent.conf"));
}
END_TEST

START_TEST(t_hostport)
{
	char *h, *p;

	ck_assert_int_eq(cl_split_hostport("[2001:db8::1]:443", &h, &p), 0);
	ck_assert_str_eq(h, "2001:db8::1");
	ck_assert_str_eq(p, "443");
	free(h);
	free(p);
	ck_assert_int_eq(cl_split_hostport("2001:db8::1:443", &h, &p), -1);
	ck_assert_int_eq(cl_split_hostport("host:", &h, &p), -1);
	ck_assert_int_eq(cl_split_hostport(":5", &h, &p), -1);
	ck_assert_int_eq(cl_split_hostport("h:0", &h, &p), -1);
}
END_TEST

static Suite *
config_suite(void)
{
	Suite *s = suite_create("agent_config");
	TCase *tc = tcase_create("config");

	tcase_add_test(tc, t_good);
	tcase_add_test(tc, t_defaults);
	tcase_add_test(tc, t_unattended);
	tcase_add_loop_test(
	    tc, t_errors, 0, (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_test(tc, t_long_line_and_all_errors);
	tcase_add_test(tc, t_missing_file);
	tcase_add_test(tc, t_hostport);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	log_init("test_agent_config", LOG_LVL_ERR, 0);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
