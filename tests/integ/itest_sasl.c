/*
 * itest_sasl.c - helper authentication against a real slapd
 * (tests/lib/tl_slapd.h, tests/data/corp.ldif): PLAIN verified by binding
 * as the user, EXTERNAL mapped from a certificate name, the refusals that
 * must happen before any bind (checked in slapd's own log), and a
 * directory that goes away.
 *
 * slapd is started once, in the parent; every test runs in its own forked
 * process (Check's default) with its own event loop, directory pool and
 * SASL context, since threads do not survive fork.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "az_dir.h"
#include "az_sasl.h"
#include "rp_error.h"
#include "rp_log.h"
#include "tl_slapd.h"
#include "tl_util.h"

static struct tl_slapd slapd;
static int slapd_ok;

static struct event_base *base;
static struct az_dir *dir;
static struct az_sasl *sasl;

/* ---- fixtures ------------------------------------------------------------ */

static void
slapd_up(void)
{
	slapd_ok = tl_slapd_start(NULL, &slapd) == 0;
}

static void
slapd_down(void)
{
	if (slapd_ok)
		tl_slapd_destroy(&slapd);
}

static struct az_dir *
dir_for(const struct tl_slapd *s, unsigned op_timeout_ms)
{
	struct az_dir_config c;
	struct az_domain dom;
	struct az_dir *d;
	char err[256] = "";

	az_dir_config_init(&c);
	dom.netbios = strdup("CORP");
	dom.realm = strdup("corp.example");
	dom.base_dn = strdup(s->base);
	c.domains = &dom;
	c.ndomains = 1;
	c.uri = strdup(s->ldaps_uri);
	c.ca_file = strdup(s->ca);
	c.bind_dn = strdup(s->binddn);
	c.bind_pw_file = strdup(s->bindpw_file);
	c.default_domain = strdup("CORP");
	c.net_timeout_ms = 2000;
	c.op_timeout_ms = op_timeout_ms;
	c.backoff_max_ms = 200;
	c.workers = 2;
	d = az_dir_new(base, &c, err, sizeof(err));
	ck_assert_msg(d != NULL, "az_dir_new: %s", err);
	c.domains = NULL;
	c.ndomains = 0;
	az_dir_config_clear(&c);
	free(dom.netbios);
	free(dom.realm);
	free(dom.base_dn);
	return d;
}

static struct az_sasl *
sasl_for(struct az_dir *d, unsigned max_steps)
{
	struct az_sasl_config c = {.mechanisms = "PLAIN EXTERNAL",
	    .service = "rabroker",
	    .realm = "CORP.EXAMPLE",
	    .max_steps = max_steps};
	char err[256] = "";
	struct az_sasl *s = az_sasl_new(d, &c, err, sizeof(err));

	ck_assert_msg(s != NULL, "az_sasl_new: %s", err);
	return s;
}

static void
setup(void)
{
	ck_assert_msg(slapd_ok, "slapd did not start (see stderr)");
	log_init("itest_sasl", LOG_LVL_INFO, 0);
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	dir = dir_for(&slapd, 3000);
	sasl = sasl_for(dir, 8);
}

static void
teardown(void)
{
	az_sasl_free(sasl);
	az_dir_free(dir);
	event_base_free(base);
}

/* ---- running an exchange --------------------------------------------- */

struct res {
	int done;
	enum az_sasl_status st;
	int code;
	unsigned char ch[256];
	size_t chlen;
	char account[128];
	char groups[1024]; /* "|"-joined */
	char msg[256];
};

static void
on_result(enum az_sasl_status st, int code, const unsigned char *ch,
    size_t chlen, const struct az_entry *user, const char *msg, void *arg)
{
	struct res *r = arg;
	size_t i;

	ck_assert_int_eq(r->done, 0); /* exactly once */
	r->done = 1;
	r->st = st;
	r->code = code;
	ck_assert_uint_le(chlen, sizeof(r->ch));
	if (chlen > 0)
		memcpy(r->ch, ch, chlen);
	r->chlen = chlen;
	if (st == AZ_SASL_CONTINUE)
		ck_assert_ptr_nonnull(ch);
	if (st == AZ_SASL_OK) {
		ck_assert_ptr_nonnull(user);
		snprintf(r->account, sizeof(r->account), "%s", user->account);
		for (i = 0; i < user->ngroups; i++) {
			strncat(r->groups, "|",
			    sizeof(r->groups) - strlen(r->groups) - 1);
			strncat(r->groups, user->groups[i],
			    sizeof(r->groups) - strlen(r->groups) - 1);
		}
		strncat(
		    r->groups, "|", sizeof(r->groups) - strlen(r->groups) - 1);
	} else
		ck_assert_ptr_null(user);
	snprintf(r->msg, sizeof(r->msg), "%s", msg != NULL ? msg : "");
}

static int
is_done(void *arg)
{
	return ((struct res *)arg)->done;
}

static void
wait_res(struct res *r)
{
	ck_assert_msg(tl_run_until(base, is_done, r, 20000),
	    "no SASL completion within 20 s");
}

/* Starts and waits; returns the synchronous code (0 = ran). */
static int
run_start(struct az_sasl_sess *ss, const char *mech, const void *in, size_t len,
    int has, struct res *r)
{
	int rc;

	memset(r, 0, sizeof(*r));
	rc = az_sasl_start(ss, mech, in, len, has, on_result, r);
	if (rc == 0)
		wait_res(r);
	else
		ck_assert_int_eq(r->done, 0);
	return rc;
}

static int
run_step(struct az_sasl_sess *ss, const void *in, size_t len, struct res *r)
{
	int rc;

	memset(r, 0, sizeof(*r));
	rc = az_sasl_step(ss, in, len, on_result, r);
	if (rc == 0)
		wait_res(r);
	else
		ck_assert_int_eq(r->done, 0);
	return rc;
}

#define PLAIN_MSG(s) (s), sizeof(s) - 1

static void
expect_ok(const struct res *r, const char *account)
{
	ck_assert_msg(r->st == AZ_SASL_OK, "status %d code %d (%s)", r->st,
	    r->code, r->msg);
	ck_assert_int_eq(r->code, 0);
	ck_assert_str_eq(r->account, account);
}

static void
expect_fail(const struct res *r, int code)
{
	ck_assert_int_eq(r->st, AZ_SASL_FAIL);
	ck_assert_msg(r->code == code, "code %s, want %s (%s)",
	    rp_err_name(r->code), rp_err_name(code), r->msg);
	ck_assert_str_eq(r->msg, rp_err_message(code));
}

/* Number of simple binds slapd logged for `uid` (its log is line-buffered
 * to a file; poll briefly so a bind in flight is counted). */
static long
binds_for(const char *uid, long at_least, unsigned wait_ms)
{
	char needle[128];
	uint64_t until = tl_now_ms() + wait_ms;
	long n;

	snprintf(needle, sizeof(needle), "BIND dn=\"uid=%s,", uid);
	for (;;) {
		n = tl_slapd_log_count(&slapd, needle);
		ck_assert_int_ge(n, 0);
		if (n >= at_least || tl_now_ms() >= until)
			return n;
		usleep(50 * 1000);
	}
}

/* ---- PLAIN ----------------------------------------------------------- */

START_TEST(test_plain_ok)
{
	struct az_sasl_sess *ss =
	    az_sasl_sess_new(sasl, NULL, 256, "127.0.0.1;7000", "127.0.0.1;5");
	struct res r;
	json_t *j;
	char *t;

	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0alice\0alice-pw"), 1, &r), 0);
	expect_ok(&r, "CORP\\alice");
	ck_assert_ptr_nonnull(strstr(r.groups, "|CORP\\helpdesk|"));
	ck_assert_ptr_nonnull(strstr(r.groups, "|CORP\\staff|"));
	ck_assert_ptr_nonnull(az_sasl_sess_user(ss));
	ck_assert_str_eq(az_sasl_sess_user(ss)->account, "CORP\\alice");

	/* The broker's result object. */
	j = az_sasl_result_json(AZ_SASL_OK, NULL, 0, az_sasl_sess_user(ss));
	t = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	ck_assert_ptr_nonnull(strstr(t, "\"account\":\"CORP\\\\alice\""));
	ck_assert_ptr_nonnull(strstr(t, "\"status\":\"ok\""));
	free(t);
	json_decref(j);

	/* Authenticated: no second exchange on this session. */
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0alice\0alice-pw"), 1, &r),
	    RP_ERR_WRONG_STATE);
	ck_assert_int_eq(run_step(ss, "x", 1, &r), RP_ERR_WRONG_STATE);
	az_sasl_sess_free(ss);
}
END_TEST

/* DOMAIN\user, user@realm and user name the same account; nested groups. */
START_TEST(test_plain_name_forms)
{
	static const struct {
		const char *msg;
		size_t len;
		const char *account;
		const char *group;
	} cases[] = {
	    {PLAIN_MSG("\0CORP\\alice\0alice-pw"), "CORP\\alice",
	        "|CORP\\helpdesk|"},
	    {PLAIN_MSG("\0alice@corp.example\0alice-pw"), "CORP\\alice",
	        "|CORP\\staff|"},
	    {PLAIN_MSG("\0carol\0carol-pw"), "CORP\\carol",
	        "|CORP\\helpdesk-all|"},
	    {PLAIN_MSG("\0bob\0bob-pw"), "CORP\\bob", NULL},
	    /* authzid equal to authcid is not proxying */
	    {PLAIN_MSG("carol\0carol\0carol-pw"), "CORP\\carol",
	        "|CORP\\tier1|"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct az_sasl_sess *ss =
		    az_sasl_sess_new(sasl, NULL, 256, NULL, NULL);
		struct res r;

		ck_assert_int_eq(
		    run_start(ss, "PLAIN", cases[i].msg, cases[i].len, 1, &r),
		    0);
		expect_ok(&r, cases[i].account);
		if (cases[i].group != NULL)
			ck_assert_msg(strstr(r.groups, cases[i].group) != NULL,
			    "case %zu: %s not in %s", i, cases[i].group,
			    r.groups);
		else
			ck_assert_str_eq(r.groups, "|");
		az_sasl_sess_free(ss);
	}
}
END_TEST

START_TEST(test_plain_wrong_password)
{
	struct az_sasl_sess *ss = az_sasl_sess_new(sasl, NULL, 256, NULL, NULL);
	struct res r;
	long before = binds_for("alice", 0, 0);

	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0alice\0wrong-pw"), 1, &r), 0);
	expect_fail(&r, RP_ERR_AUTH_FAILED);
	ck_assert_ptr_null(az_sasl_sess_user(ss));
	/* The password really went to slapd as a bind. */
	ck_assert_int_gt(binds_for("alice", before + 1, 3000), before);

	/* Unknown user: the same generic failure. */
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0nobody\0x-pw"), 1, &r), 0);
	expect_fail(&r, RP_ERR_AUTH_FAILED);
	/* Ambiguous name (two "twin" entries): refused, not guessed. */
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0twin\0twin-pw"), 1, &r), 0);
	expect_fail(&r, RP_ERR_AUTH_FAILED);

	/* A failed exchange may be followed by a new one. */
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0alice\0alice-pw"), 1, &r), 0);
	expect_ok(&r, "CORP\\alice");
	az_sasl_sess_free(ss);
}
END_TEST

/* Empty password, NUL in the password, proxying: refused with no bind. */
START_TEST(test_plain_refused_without_bind)
{
	struct az_sasl_sess *ss = az_sasl_sess_new(sasl, NULL, 256, NULL, NULL);
	struct res r;
	long before;

	/* Positive control: a real attempt for dave is logged as a bind. */
	before = binds_for("dave", 0, 0);
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0dave\0not-it"), 1, &r), 0);
	expect_fail(&r, RP_ERR_AUTH_FAILED);
	before = binds_for("dave", before + 1, 3000);
	ck_assert_int_gt(before, 0);

	ck_assert_int_eq(run_start(ss, "PLAIN", PLAIN_MSG("\0dave\0"), 1, &r),
	    RP_ERR_AUTH_FAILED);
	ck_assert_str_eq(az_sasl_sess_errmsg(ss), "authentication failed");
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0dave\0dave-pw\0x"), 1, &r),
	    RP_ERR_AUTH_FAILED);
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("alice\0dave\0dave-pw"), 1, &r),
	    RP_ERR_AUTH_FAILED);
	ck_assert_str_eq(az_sasl_sess_errmsg(ss), "authentication failed");
	/* Also as a step after an empty challenge. */
	ck_assert_int_eq(run_start(ss, "PLAIN", NULL, 0, 0, &r), 0);
	ck_assert_int_eq(r.st, AZ_SASL_CONTINUE);
	ck_assert_int_eq(
	    run_step(ss, PLAIN_MSG("\0dave\0"), &r), RP_ERR_AUTH_FAILED);
	ck_assert_int_eq(binds_for("dave", before + 1, 1000), before);
	ck_assert_ptr_null(az_sasl_sess_user(ss));
	az_sasl_sess_free(ss);
}
END_TEST

/* No initial response: an empty challenge, then the credentials. */
START_TEST(test_plain_no_initial_response)
{
	struct az_sasl_sess *ss = az_sasl_sess_new(sasl, NULL, 256, NULL, NULL);
	struct res r;
	json_t *j;
	char *t;

	ck_assert_int_eq(run_start(ss, "plain", NULL, 0, 0, &r), 0);
	ck_assert_int_eq(r.st, AZ_SASL_CONTINUE);
	ck_assert_uint_eq(r.chlen, 0);
	j = az_sasl_result_json(r.st, r.ch, r.chlen, NULL);
	t = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	ck_assert_str_eq(t, "{\"challenge\":\"\",\"status\":\"continue\"}");
	free(t);
	json_decref(j);
	ck_assert_int_eq(run_step(ss, PLAIN_MSG("\0alice\0alice-pw"), &r), 0);
	expect_ok(&r, "CORP\\alice");

	/* An empty initial response is not "no initial response": for
	 * PLAIN it is a malformed message. */
	az_sasl_sess_free(ss);
	ss = az_sasl_sess_new(sasl, NULL, 256, NULL, NULL);
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", "", 0, 1, &r), RP_ERR_AUTH_FAILED);
	az_sasl_sess_free(ss);
}
END_TEST

START_TEST(test_unknown_mechanism)
{
	struct az_sasl_sess *ss =
	    az_sasl_sess_new(sasl, "alice", 256, NULL, NULL);
	struct res r;

	ck_assert_int_eq(
	    run_start(ss, "CRAM-MD5", NULL, 0, 0, &r), RP_ERR_INVALID_PARAMS);
	ck_assert_str_eq(az_sasl_sess_errmsg(ss),
	    "unknown mechanism \"CRAM-MD5\" (offered: PLAIN EXTERNAL)");
	ck_assert_int_eq(
	    run_start(ss, "ANONYMOUS", "x", 1, 1, &r), RP_ERR_INVALID_PARAMS);
	/* The session is still usable. */
	ck_assert_int_eq(run_start(ss, "EXTERNAL", "", 0, 1, &r), 0);
	expect_ok(&r, "CORP\\alice");
	az_sasl_sess_free(ss);
}
END_TEST

START_TEST(test_plain_needs_tls)
{
	struct az_sasl_sess *ss = az_sasl_sess_new(sasl, NULL, 0, NULL, NULL);
	struct res r;
	char *m = az_sasl_mechanisms(ss);
	long before = binds_for("alice", 0, 0);

	ck_assert_str_eq(m, "");
	free(m);
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0alice\0alice-pw"), 1, &r),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_str_eq(az_sasl_sess_errmsg(ss),
	    "mechanism PLAIN is only offered inside TLS");
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", NULL, 0, 0, &r), RP_ERR_INVALID_PARAMS);
	ck_assert_int_eq(binds_for("alice", before + 1, 500), before);
	az_sasl_sess_free(ss);
}
END_TEST

/* ---- EXTERNAL ---------------------------------------------------------- */

START_TEST(test_external_ok)
{
	struct az_sasl_sess *ss =
	    az_sasl_sess_new(sasl, "alice", 256, NULL, NULL);
	struct res r;
	char *m = az_sasl_mechanisms(ss);

	ck_assert_str_eq(m, "PLAIN EXTERNAL");
	free(m);
	/* Empty initial response: authorize as the certificate name. */
	ck_assert_int_eq(run_start(ss, "EXTERNAL", "", 0, 1, &r), 0);
	expect_ok(&r, "CORP\\alice");
	ck_assert_ptr_nonnull(strstr(r.groups, "|CORP\\helpdesk|"));
	az_sasl_sess_free(ss);

	/* No initial response: empty challenge, then an empty response. */
	ss = az_sasl_sess_new(sasl, "carol", 0, NULL, NULL);
	ck_assert_int_eq(run_start(ss, "EXTERNAL", NULL, 0, 0, &r), 0);
	ck_assert_int_eq(r.st, AZ_SASL_CONTINUE);
	ck_assert_uint_eq(r.chlen, 0);
	ck_assert_int_eq(run_step(ss, "", 0, &r), 0);
	expect_ok(&r, "CORP\\carol");
	az_sasl_sess_free(ss);

	/* Asking explicitly for the certificate's own name is fine. */
	ss = az_sasl_sess_new(sasl, "alice", 256, NULL, NULL);
	ck_assert_int_eq(run_start(ss, "EXTERNAL", "alice", 5, 1, &r), 0);
	expect_ok(&r, "CORP\\alice");
	az_sasl_sess_free(ss);
}
END_TEST

START_TEST(test_external_refused)
{
	struct az_sasl_sess *ss = az_sasl_sess_new(sasl, NULL, 256, NULL, NULL);
	struct res r;
	char *m = az_sasl_mechanisms(ss);

	/* No certificate: not offered. */
	ck_assert_str_eq(m, "PLAIN");
	free(m);
	ck_assert_int_eq(
	    run_start(ss, "EXTERNAL", "", 0, 1, &r), RP_ERR_INVALID_PARAMS);
	az_sasl_sess_free(ss);

	/* A certificate name the directory does not know. */
	ss = az_sasl_sess_new(sasl, "mallory", 256, NULL, NULL);
	ck_assert_int_eq(run_start(ss, "EXTERNAL", "", 0, 1, &r), 0);
	expect_fail(&r, RP_ERR_AUTH_FAILED);
	az_sasl_sess_free(ss);

	/* A machine certificate is not a helper. */
	ss = az_sasl_sess_new(sasl, "ws-042.corp.example", 256, NULL, NULL);
	ck_assert_int_eq(run_start(ss, "EXTERNAL", "", 0, 1, &r), 0);
	expect_fail(&r, RP_ERR_AUTH_FAILED);
	az_sasl_sess_free(ss);

	/* Proxying to another user. */
	ss = az_sasl_sess_new(sasl, "alice", 256, NULL, NULL);
	ck_assert_int_eq(
	    run_start(ss, "EXTERNAL", "bob", 3, 1, &r), RP_ERR_AUTH_FAILED);
	ck_assert_int_eq(run_start(ss, "EXTERNAL", NULL, 0, 0, &r), 0);
	ck_assert_int_eq(r.st, AZ_SASL_CONTINUE);
	ck_assert_int_eq(run_step(ss, "bob", 3, &r), RP_ERR_AUTH_FAILED);
	ck_assert_ptr_null(az_sasl_sess_user(ss));
	az_sasl_sess_free(ss);
}
END_TEST

/* ---- limits, lifetime, concurrency ---------------------------------- */

START_TEST(test_max_steps)
{
	struct az_sasl *one = sasl_for(dir, 1);
	struct az_sasl_sess *ss = az_sasl_sess_new(one, NULL, 256, NULL, NULL);
	struct res r;

	ck_assert_int_eq(run_start(ss, "PLAIN", NULL, 0, 0, &r), 0);
	ck_assert_int_eq(r.st, AZ_SASL_CONTINUE);
	ck_assert_int_eq(run_step(ss, PLAIN_MSG("\0alice\0alice-pw"), &r),
	    RP_ERR_AUTH_FAILED);
	ck_assert_int_eq(run_step(ss, PLAIN_MSG("\0alice\0alice-pw"), &r),
	    RP_ERR_WRONG_STATE);
	ck_assert_ptr_null(az_sasl_sess_user(ss));
	az_sasl_sess_free(ss);
	az_sasl_free(one);
}
END_TEST

static int flight_calls;

static void
count_cb(enum az_sasl_status st, int code, const unsigned char *ch,
    size_t chlen, const struct az_entry *user, const char *msg, void *arg)
{
	flight_calls++;
}

/* Freed while a step is with a worker: the completion is dropped. */
START_TEST(test_free_in_flight)
{
	struct az_sasl_sess *ss = az_sasl_sess_new(sasl, NULL, 256, NULL, NULL);
	struct az_sasl_sess *other;
	struct res r;

	flight_calls = 0;
	ck_assert_int_eq(az_sasl_start(ss, "PLAIN",
	                     (const unsigned char *)"\0alice\0alice-pw", 15, 1,
	                     count_cb, NULL),
	    0);
	/* One job at a time per session. */
	ck_assert_int_eq(
	    az_sasl_step(ss, (const unsigned char *)"x", 1, count_cb, NULL),
	    RP_ERR_WRONG_STATE);
	ck_assert_int_eq(az_sasl_start(ss, "PLAIN", NULL, 0, 0, count_cb, NULL),
	    RP_ERR_WRONG_STATE);
	az_sasl_sess_free(ss);
	/* A later exchange completes after the dropped one. */
	other = az_sasl_sess_new(sasl, NULL, 256, NULL, NULL);
	ck_assert_int_eq(
	    run_start(other, "PLAIN", PLAIN_MSG("\0bob\0bob-pw"), 1, &r), 0);
	expect_ok(&r, "CORP\\bob");
	tl_run_until(base, NULL, NULL, 300);
	ck_assert_int_eq(flight_calls, 0);
	az_sasl_sess_free(other);
}
END_TEST

#define NPAR 24

/* Many exchanges at once on two workers: each gets its own answer. */
START_TEST(test_concurrent)
{
	static const char *const users[] = {"alice", "bob", "carol", "dave"};
	struct az_sasl_sess *ss[NPAR];
	struct res r[NPAR];
	int i, all;
	uint64_t until;

	for (i = 0; i < NPAR; i++) {
		char msg[64];
		const char *u = users[i % 4];
		int good = (i % 3) != 0;
		int n = snprintf(msg, sizeof(msg), "%c%s%c%s-%s", 0, u, 0, u,
		    good ? "pw" : "bad");

		ss[i] = az_sasl_sess_new(sasl, NULL, 256, NULL, NULL);
		memset(&r[i], 0, sizeof(r[i]));
		ck_assert_int_eq(
		    az_sasl_start(ss[i], "PLAIN", (const unsigned char *)msg,
		        (size_t)n, 1, on_result, &r[i]),
		    0);
	}
	until = tl_now_ms() + 30000;
	do {
		tl_run_until(base, NULL, NULL, 50);
		for (all = 1, i = 0; i < NPAR; i++)
			all &= r[i].done;
	} while (!all && tl_now_ms() < until);
	ck_assert_msg(all, "not every exchange completed");
	for (i = 0; i < NPAR; i++) {
		char want[32];

		if ((i % 3) != 0) {
			snprintf(want, sizeof(want), "CORP\\%s", users[i % 4]);
			expect_ok(&r[i], want);
		} else
			expect_fail(&r[i], RP_ERR_AUTH_FAILED);
		az_sasl_sess_free(ss[i]);
	}
}
END_TEST

/* ---- the directory goes away -------------------------------------------- */

START_TEST(test_directory_down)
{
	struct tl_slapd own;
	struct az_dir *d;
	struct az_sasl *s;
	struct az_sasl_sess *ss;
	struct res r;

	/* Its own slapd: stopping the shared one would affect other tests. */
	ck_assert_int_eq(tl_slapd_start(NULL, &own), 0);
	d = dir_for(&own, 2000);
	s = sasl_for(d, 8);

	ss = az_sasl_sess_new(s, "alice", 256, NULL, NULL);
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0alice\0alice-pw"), 1, &r), 0);
	expect_ok(&r, "CORP\\alice");
	az_sasl_sess_free(ss);

	ck_assert_int_eq(tl_slapd_stop(&own), 0);
	az_dir_cache_flush(d);

	ss = az_sasl_sess_new(s, "alice", 256, NULL, NULL);
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0alice\0alice-pw"), 1, &r), 0);
	expect_fail(&r, RP_ERR_DIRECTORY_UNAVAILABLE);
	/* A wrong password is not told apart when nobody can check it. */
	ck_assert_int_eq(
	    run_start(ss, "PLAIN", PLAIN_MSG("\0alice\0wrong"), 1, &r), 0);
	expect_fail(&r, RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_int_eq(run_start(ss, "EXTERNAL", "", 0, 1, &r), 0);
	expect_fail(&r, RP_ERR_DIRECTORY_UNAVAILABLE);

	/* Back: the same session authenticates. */
	ck_assert_int_eq(tl_slapd_restart(&own), 0);
	{
		uint64_t until = tl_now_ms() + 15000;

		do {
			ck_assert_int_eq(
			    run_start(ss, "PLAIN",
			        PLAIN_MSG("\0alice\0alice-pw"), 1, &r),
			    0);
			if (r.st == AZ_SASL_OK)
				break;
			expect_fail(&r, RP_ERR_DIRECTORY_UNAVAILABLE);
			tl_run_until(base, NULL, NULL, 250);
		} while (tl_now_ms() < until);
	}
	expect_ok(&r, "CORP\\alice");
	az_sasl_sess_free(ss);
	az_sasl_free(s);
	az_dir_free(d);
	tl_slapd_destroy(&own);
}
END_TEST

static Suite *
itest_suite(void)
{
	Suite *s = suite_create("itest_sasl");
	TCase *tc = tcase_create("slapd");

	tcase_add_unchecked_fixture(tc, slapd_up, slapd_down);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_plain_ok);
	tcase_add_test(tc, test_plain_name_forms);
	tcase_add_test(tc, test_plain_wrong_password);
	tcase_add_test(tc, test_plain_refused_without_bind);
	tcase_add_test(tc, test_plain_no_initial_response);
	tcase_add_test(tc, test_unknown_mechanism);
	tcase_add_test(tc, test_plain_needs_tls);
	tcase_add_test(tc, test_external_ok);
	tcase_add_test(tc, test_external_refused);
	tcase_add_test(tc, test_max_steps);
	tcase_add_test(tc, test_free_in_flight);
	tcase_add_test(tc, test_concurrent);
	tcase_add_test(tc, test_directory_down);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(itest_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
