/*
 * itest_offer.c - offers end to end: a real slapd (tests/data/corp.ldif), a
 * real rabrokerd (tests/lib/tl_broker.h), real TLS, and scripted agents and
 * helpers. Every scenario checks the replies, the offer.update
 * notifications the helper receives, the requests the agent receives, and
 * the lines of the audit trail.
 *
 * Directory facts used here: CORP\alice is in CORP\helpdesk; CORP\carol
 * reaches CORP\helpdesk-all through tier1 -> tier2; CORP\bob is in no group;
 * ws-042 and ws-043 are in ou=Workstations, ws-043 is also in CORP\kiosks.
 *
 * slapd is started once, in the parent; each test runs in its own forked
 * process with its own broker.
 */
#include <check.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "bk_audit.h"
#include "rp_error.h"
#include "rp_log.h"
#include "tl_broker.h"
#include "tl_slapd.h"
#include "tl_util.h"

#define WS42 "ws-042.corp.example"
#define WS43 "ws-043.corp.example"
#define T_WAIT 5000

static struct tl_slapd slapd;
static int slapd_ok;

static struct event_base *base;
static struct tl_broker br;
static int br_ok;

/* The usual policy: alice (helpdesk) control on workstations with a short
 * prompt timeout; carol (helpdesk-all) view only; bob view on kiosks with
 * nobody=allow-view; dave denied everywhere. */
static const char *policy_main =
    "defaults max-ticket=30m prompt-timeout=2s nobody=decline\n"
    "scope workstations ou=\"ou=Workstations,ou=Computers,dc=corp,"
    "dc=example\"\n"
    "scope kiosks machine-group=\"CORP\\kiosks\" nobody=allow-view\n"
    "deny user \"CORP\\dave\" on all\n"
    "allow control group \"CORP\\helpdesk\" on workstations\n"
    "allow view group \"CORP\\helpdesk-all\" on workstations\n"
    "allow view user \"CORP\\bob\" on kiosks\n";

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

static void
broker_with(const char *policy, const char *extra)
{
	struct tl_broker_opts o;

	memset(&o, 0, sizeof(o));
	o.slapd = &slapd;
	o.policy = policy;
	o.require_computer_object = 1;
	o.extra = extra;
	ck_assert_int_eq(tl_broker_setup(&br, &o), 0);
	ck_assert_msg(
	    tl_broker_start(&br) == 0, "rabrokerd did not start: %s", br.log);
	br_ok = 1;
}

static void
setup(void)
{
	ck_assert_msg(slapd_ok, "slapd did not start (see stderr)");
	log_init("itest_offer", LOG_LVL_WARN, 0);
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	br_ok = 0;
}

/* Every test ends with a clean SIGTERM exit of the daemon: under ASan
 * that also means no leak and no memory error on the way. */
static void
teardown(void)
{
	int st = 0;

	if (br_ok && br.pid > 0) {
		st = tl_broker_stop(&br, SIGTERM, 15000, NULL);
		if (st != 0) {
			char cmd[700];

			fprintf(
			    stderr, "rabrokerd exited with %d; its log:\n", st);
			snprintf(
			    cmd, sizeof(cmd), "tail -n 40 '%s' >&2", br.log);
			if (system(cmd) != 0)
				fprintf(stderr, "(log unreadable)\n");
		}
	}
	if (br_ok)
		tl_broker_destroy(&br);
	event_base_free(base);
	ck_assert_msg(st == 0, "rabrokerd did not exit cleanly (%d)", st);
}

/* ---- peers --------------------------------------------------------------- */

static struct tl_client *
connect_as(const char *cert)
{
	char why[256] = "";
	struct tl_client *c = tl_client_connect(
	    base, br.pki, br.port, cert, T_WAIT, why, sizeof(why));

	ck_assert_msg(c != NULL, "connect: %s", why);
	return c;
}

static struct tl_client *
agent(const char *certname, const char *fqdn, const char *user)
{
	struct tl_client *c = connect_as(certname);

	ck_assert_int_eq(tl_client_agent_login(c, fqdn, user), 0);
	return c;
}

/* An agent with nobody logged on. */
static struct tl_client *
agent_nobody(const char *certname, const char *fqdn)
{
	struct tl_client *c = connect_as(certname);

	ck_assert_int_eq(tl_client_call(c, "hello",
	                     json_pack("{s:i, s:s, s:s}", "version", 1, "role",
	                         "agent", "software", "itest/0"),
	                     T_WAIT, NULL),
	    0);
	ck_assert_int_eq(tl_client_call(c, "agent.register",
	                     json_pack("{s:s, s:[s], s:[]}", "fqdn", fqdn,
	                         "addresses", "127.0.0.1", "sessions"),
	                     T_WAIT, NULL),
	    0);
	return c;
}

static struct tl_client *
helper(const char *user)
{
	struct tl_client *c = connect_as(NULL);
	char pw[64];

	snprintf(pw, sizeof(pw), "%s-pw", user);
	ck_assert_int_eq(tl_client_helper_login(c, user, pw), 0);
	return c;
}

/* offer.create; returns the error code; *res gets the result/error. */
static int
offer(struct tl_client *h, const char *machine, const char *mode, json_t **res)
{
	return tl_client_call(h, "offer.create",
	    json_pack("{s:s, s:s, s:[s, s]}", "machine", machine, "mode", mode,
	        "addresses", "127.0.0.1:40123", "[::1]:40123"),
	    T_WAIT, res);
}

static const char *
jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

/* The next offer.update; asserts the ticket and (if state != NULL) the
 * state. Returns params (caller decrefs). */
static json_t *
update(struct tl_client *h, const char *tid, const char *state)
{
	json_t *p = tl_client_wait_request(h, "offer.update", T_WAIT, NULL);

	ck_assert_msg(
	    p != NULL, "no offer.update (expected %s)", state ? state : "any");
	ck_assert_str_eq(jstr(p, "ticket"), tid);
	if (state != NULL)
		ck_assert_msg(strcmp(jstr(p, "state"), state) == 0,
		    "offer.update state %s, expected %s (reason %s)",
		    jstr(p, "state"), state, jstr(p, "reason"));
	return p;
}

static void
update_drop(struct tl_client *h, const char *tid, const char *state)
{
	json_decref(update(h, tid, state));
}

/* Waits for an agent request, checks its ticket, answers it. */
static json_t *
agent_answer(
    struct tl_client *a, const char *method, const char *tid, json_t *answer)
{
	json_t *id = NULL;
	json_t *p = tl_client_wait_request(a, method, T_WAIT, &id);

	ck_assert_msg(p != NULL, "agent got no %s", method);
	ck_assert_str_eq(jstr(p, "ticket"), tid);
	if (answer != NULL) {
		ck_assert_ptr_nonnull(id);
		ck_assert_int_eq(tl_client_reply(a, id, answer), 0);
		json_decref(id);
	} else
		json_decref(id);
	return p;
}

static json_t *
accept_ans(void)
{
	return json_pack("{s:s, s:s, s:s}", "answer", "accept", "user",
	    "CORP\\bob", "session", "1");
}

static long
audit_n(const char *event)
{
	char needle[96];

	snprintf(needle, sizeof(needle), "\"event\":\"%s\"", event);
	return tl_broker_audit_count(&br, needle);
}

static int
audit_wait(const char *event, long n)
{
	char needle[96];

	snprintf(needle, sizeof(needle), "\"event\":\"%s\"", event);
	return tl_broker_wait_audit(&br, needle, n, T_WAIT);
}

/* The audit line of `event` mentioning `tid` contains `needle`. */
static int
audit_has(const char *event, const char *tid, const char *needle)
{
	FILE *f = fopen(br.audit, "r");
	char line[8192], ev[96];
	int found = 0;

	if (f == NULL)
		return 0;
	snprintf(ev, sizeof(ev), "\"event\":\"%s\"", event);
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, ev) && (tid == NULL || strstr(line, tid)) &&
		    strstr(line, needle))
			found = 1;
	fclose(f);
	return found;
}

/* The integer member `key` of the last `event` line of `tid`; -1 if none. */
static long long
audit_int(const char *event, const char *tid, const char *key)
{
	FILE *f = fopen(br.audit, "r");
	char line[8192], ev[96], k[64];
	long long v = -1;
	const char *p;

	if (f == NULL)
		return -1;
	snprintf(ev, sizeof(ev), "\"event\":\"%s\"", event);
	snprintf(k, sizeof(k), "\"%s\":", key);
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, ev) && strstr(line, tid) &&
		    (p = strstr(line, k)) != NULL)
			v = strtoll(p + strlen(k), NULL, 10);
	fclose(f);
	return v;
}

static void
audit_no_secret(const char *psk)
{
	FILE *f = fopen(br.audit, "r");
	char line[8192];

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f) != NULL)
		ck_assert_msg(strstr(line, psk) == NULL,
		    "the ticket secret is in the audit trail");
	fclose(f);
	ck_assert_int_eq(tl_broker_log_count(&br, psk), 0);
}

/* A full accept: offer, prompt, accept, ticket.connect. */
static void
accepted_ticket(struct tl_client *h, struct tl_client *a, const char *mode,
    char *tid, char *psk, size_t psklen)
{
	json_t *res = NULL, *p;
	int rc = offer(h, WS42, mode, &res);

	ck_assert_msg(rc == 0, "offer.create: %d %s", rc, tl_error_reason(res));
	snprintf(tid, 33, "%s", jstr(res, "ticket"));
	if (psk != NULL)
		snprintf(psk, psklen, "%s", jstr(res, "psk"));
	ck_assert_str_eq(jstr(res, "state"), "prompting");
	json_decref(res);
	update_drop(h, tid, "prompting");
	p = agent_answer(a, "novice.prompt", tid, accept_ans());
	ck_assert_str_eq(jstr(p, "helper"), "CORP\\alice");
	json_decref(p);
	p = update(h, tid, "accepted");
	ck_assert_str_eq(jstr(p, "user"), "CORP\\bob");
	json_decref(p);
	p = agent_answer(a, "ticket.connect", tid, json_object());
	if (psk != NULL)
		ck_assert_str_eq(jstr(p, "psk"), psk);
	ck_assert_int_eq(json_array_size(json_object_get(p, "addresses")), 2);
	ck_assert_str_eq(json_string_value(json_array_get(
	                     json_object_get(p, "addresses"), 0)),
	    "127.0.0.1:40123");
	json_decref(p);
}

static int
event(struct tl_client *a, const char *tid, const char *ev, json_t **res)
{
	return tl_client_call(a, "session.event",
	    json_pack("{s:s, s:s, s:s, s:s, s:[s], s:s}", "ticket", tid,
	        "event", ev, "via", "direct", "address", "127.0.0.1:40123",
	        "tried", "127.0.0.1:40123", "user", "CORP\\bob"),
	    T_WAIT, res);
}

static void
connected(struct tl_client *h, struct tl_client *a, const char *tid)
{
	json_t *res = NULL;

	ck_assert_int_eq(event(a, tid, "connected", &res), 0);
	json_decref(res);
	update_drop(h, tid, "connected");
	ck_assert(audit_wait("session_connected", 1));
	ck_assert(
	    audit_has("session_connected", tid, "\"to_fqdn\":\"" WS42 "\""));
	ck_assert(audit_has(
	    "session_connected", tid, "\"addresses\":[\"127.0.0.1:40123\"]"));
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(t_accept)
{
	struct tl_client *a, *h;
	char tid[33], psk[64];
	json_t *res = NULL, *t;

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	accepted_ticket(h, a, "control", tid, psk, sizeof(psk));
	ck_assert_int_eq(strlen(psk), 44); /* base64 of 32 bytes */

	/* Audit: the policy decision with the rule, the ticket, the
	 * acceptance; never the secret. */
	ck_assert(audit_has(
	    "policy_decision", NULL, "\"rule\":\"allow control group"));
	ck_assert(audit_has("ticket_created", tid, "\"reverse_connect\":true"));
	ck_assert(audit_has("ticket_created", tid, "\"duration_s\":1800"));
	ck_assert(
	    audit_has("session_accepted", tid, "\"user\":\"CORP\\\\bob\""));
	audit_no_secret(psk);

	/* Both sides list it, without the secret. */
	ck_assert_int_eq(
	    tl_client_call(h, "ticket.list", json_object(), T_WAIT, &res), 0);
	t = json_array_get(json_object_get(res, "tickets"), 0);
	ck_assert_str_eq(jstr(t, "id"), tid);
	ck_assert_str_eq(jstr(t, "state"), "accepted");
	{
		char *dump = json_dumps(res, 0);

		ck_assert_ptr_null(strstr(dump, psk));
		free(dump);
	}
	json_decref(res);
	ck_assert_int_eq(
	    tl_client_call(a, "ticket.list", json_object(), T_WAIT, &res), 0);
	ck_assert_int_eq(json_array_size(json_object_get(res, "tickets")), 1);
	json_decref(res);

	/* Session: connected, file transfer, disconnected. */
	connected(h, a, tid);
	ck_assert_int_eq(
	    tl_client_call(a, "session.event",
	        json_pack("{s:s, s:s, s:{s:s, s:i, s:s, s:i, s:i}}", "ticket",
	            tid, "event", "file_transfer", "file", "name", "report.txt",
	            "size", 1234, "result", "ok", "start", 1795000000, "end",
	            1795000002),
	        T_WAIT, NULL),
	    0);
	ck_assert(audit_has("file_transfer", tid, "\"name\":\"report.txt\""));
	ck_assert_int_eq(event(a, tid, "disconnected", NULL), 0);
	update_drop(h, tid, "ended");
	ck_assert(
	    audit_has("session_disconnected", tid, "\"session_seconds\""));
	ck_assert_int_eq(
	    tl_client_call(h, "ticket.list", json_object(), T_WAIT, &res), 0);
	ck_assert_int_eq(json_array_size(json_object_get(res, "tickets")), 0);
	json_decref(res);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_decline)
{
	struct tl_client *a, *h;
	json_t *res = NULL, *p;
	char tid[33];

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	ck_assert_int_eq(offer(h, WS42, "view", &res), 0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	json_decref(res);
	update_drop(h, tid, "prompting");
	json_decref(agent_answer(a, "novice.prompt", tid,
	    json_pack("{s:s, s:s}", "answer", "decline", "user", "CORP\\bob")));
	p = update(h, tid, "declined");
	ck_assert_str_eq(jstr(p, "user"), "CORP\\bob");
	json_decref(p);
	ck_assert(audit_wait("offer_declined", 1));
	ck_assert(audit_has("offer_declined", tid, "\"reason\":\"declined\""));
	/* No ticket.connect was sent. */
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "ticket.connect", 300, NULL));
	/* A declined ticket cannot be used. */
	ck_assert_int_eq(event(a, tid, "connected", &res), RP_ERR_DECLINED);
	json_decref(res);
	ck_assert(audit_has("ticket_refused", tid, "\"reason\":\"declined\""));
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

/* Anything but exactly "accept" declines. */
START_TEST(t_odd_answer)
{
	struct tl_client *a, *h;
	json_t *res = NULL;
	char tid[33];

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	ck_assert_int_eq(offer(h, WS42, "view", &res), 0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	json_decref(res);
	update_drop(h, tid, "prompting");
	json_decref(agent_answer(
	    a, "novice.prompt", tid, json_pack("{s:s}", "answer", "Accept")));
	update_drop(h, tid, "declined");
	ck_assert(audit_has("offer_declined", tid, "bad_answer"));
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_prompt_timeout)
{
	struct tl_client *a, *h;
	json_t *res = NULL, *p;
	char tid[33];
	uint64_t t0;

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	ck_assert_int_eq(offer(h, WS42, "view", &res), 0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	json_decref(res);
	t0 = tl_now_ms();
	update_drop(h, tid, "prompting");
	/* The agent sees the prompt (timeout 2 s from the policy) and never
	 * answers. */
	p = agent_answer(a, "novice.prompt", tid, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(p, "timeout")), 2);
	json_decref(p);
	update_drop(h, tid, "timed_out");
	ck_assert_uint_ge(tl_now_ms() - t0, 1500);
	ck_assert(audit_wait("offer_timed_out", 1));
	ck_assert_int_eq(audit_n("session_accepted"), 0);
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "ticket.connect", 300, NULL));
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_nobody)
{
	struct tl_client *a, *h, *k, *hb;
	json_t *res = NULL, *p;
	char tid[33];

	broker_with(policy_main, NULL);
	/* ws-042, workstations scope: nobody=decline. */
	a = agent_nobody("ws-042", WS42);
	h = helper("alice");
	ck_assert_int_eq(offer(h, WS42, "control", &res), 0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	ck_assert_str_eq(jstr(res, "state"), "declined");
	json_decref(res);
	p = update(h, tid, "declined");
	ck_assert_str_eq(jstr(p, "reason"), "nobody_logged_on");
	json_decref(p);
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "novice.prompt", 300, NULL));
	ck_assert(audit_has("offer_declined", tid, "nobody_logged_on"));

	/* ws-043 for bob, kiosks scope: nobody=allow-view. Accepted without a
	 * prompt, view only. */
	k = agent_nobody("ws-043", WS43);
	hb = helper("bob");
	ck_assert_int_eq(offer(hb, WS43, "control", &res), 0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	ck_assert_str_eq(jstr(res, "state"), "accepted");
	ck_assert_str_eq(jstr(res, "mode"), "view");
	json_decref(res);
	update_drop(hb, tid, "prompting");
	update_drop(hb, tid, "accepted");
	ck_assert_ptr_null(
	    tl_client_wait_request(k, "novice.prompt", 300, NULL));
	p = agent_answer(k, "ticket.connect", tid, json_object());
	ck_assert_str_eq(jstr(p, "mode"), "view");
	json_decref(p);
	ck_assert(audit_has("session_accepted", tid, "\"unattended\":true"));
	tl_client_free(hb);
	tl_client_free(k);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_refusals)
{
	struct tl_client *a, *h, *hd, *hb;
	json_t *res = NULL;
	const char *bad[] = {"127.0.0.1:0", "localhost:5000", "127.0.0.1",
	    "1.2.3.4:65536", "[::1]:", "garbage", "127.0.0.1: 80",
	    "127.0.0.1:+80", "[fe80::1%eth0]:80", ""};
	size_t i;

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	/* Machine offline. */
	ck_assert_int_eq(offer(h, WS43, "view", &res), RP_ERR_MACHINE_OFFLINE);
	json_decref(res);
	/* Bad addresses, bad mode, too many addresses. */
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(
		    tl_client_call(h, "offer.create",
		        json_pack("{s:s, s:s, s:[s]}", "machine", WS42, "mode",
		            "view", "addresses", bad[i]),
		        T_WAIT, &res),
		    RP_ERR_INVALID_PARAMS);
		json_decref(res);
	}
	ck_assert_int_eq(tl_client_call(h, "offer.create",
	                     json_pack("{s:s, s:s, s:[s]}", "machine", WS42,
	                         "mode", "admin", "addresses", "127.0.0.1:1"),
	                     T_WAIT, &res),
	    RP_ERR_INVALID_PARAMS);
	json_decref(res);
	{
		json_t *many = json_array();

		for (i = 0; i < 17; i++)
			json_array_append_new(many, json_string("10.0.0.1:9"));
		ck_assert_int_eq(
		    tl_client_call(h, "offer.create",
		        json_pack("{s:s, s:s, s:o}", "machine", WS42, "mode",
		            "view", "addresses", many),
		        T_WAIT, &res),
		    RP_ERR_INVALID_PARAMS);
		json_decref(res);
	}
	/* No address at all, and not an array: the handler says what is
	 * wrong (not the params checker's "Array index 0 out of range"). */
	ck_assert_int_eq(tl_client_call(h, "offer.create",
	                     json_pack("{s:s, s:s, s:[]}", "machine", WS42,
	                         "mode", "view", "addresses"),
	                     T_WAIT, &res),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_str_eq(jstr(res, "message"),
	    "addresses: at least one \"ip:port\" is needed");
	json_decref(res);
	ck_assert_int_eq(tl_client_call(h, "offer.create",
	                     json_pack("{s:s, s:s, s:s}", "machine", WS42,
	                         "mode", "view", "addresses", "127.0.0.1:1"),
	                     T_WAIT, &res),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_str_eq(jstr(res, "message"),
	    "addresses: expected an array of \"ip:port\" strings");
	json_decref(res);
	ck_assert_int_eq(audit_n("ticket_created"), 0);

	/* Policy deny: the deny rule is named. */
	hd = helper("dave");
	ck_assert_int_eq(offer(hd, WS42, "view", &res), RP_ERR_FORBIDDEN);
	ck_assert_ptr_nonnull(
	    strstr(jstr(json_object_get(res, "data"), "rule"), "deny user"));
	json_decref(res);
	ck_assert(audit_has("policy_decision", NULL, "\"right\":\"none\""));

	/* Outside the helper's scope: bob may help kiosks only. */
	hb = helper("bob");
	ck_assert_int_eq(offer(hb, WS42, "view", &res), RP_ERR_FORBIDDEN);
	ck_assert_str_eq(
	    jstr(json_object_get(res, "data"), "rule"), "default deny");
	json_decref(res);
	ck_assert_int_eq(audit_n("ticket_created"), 0);
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "novice.prompt", 200, NULL));

	/* An agent may not create offers; a helper may not expire. */
	ck_assert_int_ne(offer(a, WS42, "view", &res), 0);
	json_decref(res);
	tl_client_free(hb);
	tl_client_free(hd);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_control)
{
	struct tl_client *a, *h, *hc;
	json_t *res = NULL, *p;
	char tid[33], tid2[33];

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	accepted_ticket(h, a, "control", tid, NULL, 0);
	/* Not connected yet: wrong_state. */
	ck_assert_int_eq(tl_client_call(h, "control.request",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    RP_ERR_WRONG_STATE);
	json_decref(res);
	connected(h, a, tid);

	/* Declined first. */
	ck_assert_int_eq(tl_client_call(h, "control.request",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    0);
	ck_assert_str_eq(jstr(res, "state"), "prompting");
	json_decref(res);
	json_decref(agent_answer(a, "control.prompt", tid,
	    json_pack("{s:s, s:s}", "answer", "decline", "user", "CORP\\bob")));
	p = update(h, tid, "connected");
	ck_assert_str_eq(jstr(p, "control"), "declined");
	json_decref(p);
	ck_assert(audit_wait("control_declined", 1));

	/* Then granted, then the user takes it back. */
	ck_assert_int_eq(tl_client_call(h, "control.request",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    0);
	json_decref(res);
	json_decref(agent_answer(a, "control.prompt", tid,
	    json_pack("{s:s, s:s}", "answer", "accept", "user", "CORP\\bob")));
	p = update(h, tid, "connected");
	ck_assert_str_eq(jstr(p, "control"), "granted");
	json_decref(p);
	ck_assert(audit_has("control_accepted", tid, "\"start\":"));
	ck_assert_int_eq(
	    tl_client_call(h, "ticket.list", json_object(), T_WAIT, &res), 0);
	ck_assert_str_eq(
	    jstr(json_array_get(json_object_get(res, "tickets"), 0), "control"),
	    "granted");
	json_decref(res);
	ck_assert_int_eq(event(a, tid, "control_started", NULL), 0);
	ck_assert_int_eq(event(a, tid, "control_ended", NULL), 0);
	p = update(h, tid, "connected");
	ck_assert_str_eq(jstr(p, "control"), "ended");
	json_decref(p);
	ck_assert(audit_has("control_ended", tid, "\"duration_s\":"));

	/* No answer within the prompt timeout (2 s): declined. */
	ck_assert_int_eq(tl_client_call(h, "control.request",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    0);
	json_decref(res);
	json_decref(agent_answer(a, "control.prompt", tid, NULL));
	p = update(h, tid, "connected");
	ck_assert_str_eq(jstr(p, "control"), "declined");
	ck_assert_str_eq(jstr(p, "reason"), "timeout");
	json_decref(p);
	ck_assert(audit_has("control_declined", tid, "\"reason\":\"timeout\""));

	/* carol: view only by policy, even with a control ticket asked. */
	hc = helper("carol");
	ck_assert_int_eq(offer(hc, WS42, "control", &res), 0);
	snprintf(tid2, sizeof(tid2), "%s", jstr(res, "ticket"));
	ck_assert_str_eq(jstr(res, "mode"), "view");
	json_decref(res);
	update_drop(hc, tid2, "prompting");
	json_decref(agent_answer(a, "novice.prompt", tid2, accept_ans()));
	update_drop(hc, tid2, "accepted");
	json_decref(agent_answer(a, "ticket.connect", tid2, json_object()));
	ck_assert_int_eq(event(a, tid2, "connected", NULL), 0);
	update_drop(hc, tid2, "connected");
	ck_assert_int_eq(tl_client_call(hc, "control.request",
	                     json_pack("{s:s}", "ticket", tid2), T_WAIT, &res),
	    RP_ERR_FORBIDDEN);
	json_decref(res);
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "control.prompt", 300, NULL));
	/* Another helper's ticket is not found. */
	ck_assert_int_eq(tl_client_call(hc, "control.request",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    RP_ERR_NOT_FOUND);
	json_decref(res);
	tl_client_free(hc);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

/* control.request asks the policy again: after a reload that leaves alice
 * view only, her connected control ticket cannot be escalated. */
START_TEST(t_control_policy_reload)
{
	struct tl_client *a, *h;
	json_t *res = NULL;
	char tid[33];

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	accepted_ticket(h, a, "control", tid, NULL, 0);
	connected(h, a, tid);
	ck_assert_int_eq(tl_broker_write_policy(&br,
	                     "scope workstations ou=\"ou=Workstations,"
	                     "ou=Computers,dc=corp,dc=example\"\n"
	                     "allow view group \"CORP\\helpdesk\" on "
	                     "workstations\n"),
	    0);
	ck_assert_int_eq(tl_broker_signal(&br, SIGHUP), 0);
	ck_assert(audit_wait("policy_reloaded", 1));
	ck_assert_int_eq(tl_client_call(h, "control.request",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    RP_ERR_FORBIDDEN);
	ck_assert_ptr_nonnull(
	    strstr(jstr(json_object_get(res, "data"), "rule"), "allow view"));
	json_decref(res);
	/* The decision is audited with its rule, and so is the refusal. */
	ck_assert(audit_has("policy_decision", tid, "\"request\":\"control\""));
	ck_assert(audit_has("policy_decision", tid, "\"right\":\"view\""));
	ck_assert(
	    audit_has("control_declined", tid, "\"reason\":\"forbidden\""));
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "control.prompt", 300, NULL));
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

/* At most 16 offers await consent on one machine (no prompt flooding);
 * other machines are not affected. */
START_TEST(t_rate_limited)
{
	struct tl_client *a, *a3, *h;
	json_t *res = NULL;
	int i, rc;

	broker_with("defaults prompt-timeout=60s\n"
	            "allow view group \"CORP\\helpdesk\" on all\n",
	    NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	a3 = agent("ws-043", WS43, "CORP\\erin");
	h = helper("alice");
	for (i = 0; i < 16; i++) {
		rc = offer(h, WS42, "view", &res);
		ck_assert_msg(rc == 0, "offer %d: %d", i, rc);
		json_decref(res);
	}
	ck_assert_int_eq(offer(h, WS42, "view", &res), RP_ERR_RATE_LIMITED);
	json_decref(res);
	ck_assert_int_eq(offer(h, WS43, "view", &res), 0);
	json_decref(res);
	ck_assert_int_eq(audit_n("ticket_created"), 17);
	tl_client_free(h);
	tl_client_free(a3);
	tl_client_free(a);
}
END_TEST

/* The novice ends the session from the agent at any time. */
START_TEST(t_novice_expire)
{
	struct tl_client *a, *h;
	json_t *res = NULL, *p;
	char tid[33];

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	accepted_ticket(h, a, "view", tid, NULL, 0);
	connected(h, a, tid);
	ck_assert_int_eq(
	    tl_client_call(a, "ticket.expire",
	        json_pack("{s:s, s:s}", "ticket", tid, "user", "CORP\\bob"),
	        T_WAIT, &res),
	    0);
	ck_assert_str_eq(jstr(res, "state"), "revoked");
	json_decref(res);
	p = update(h, tid, "revoked");
	ck_assert_str_eq(jstr(p, "user"), "CORP\\bob");
	json_decref(p);
	ck_assert(audit_has("ticket_revoked", tid, "\"user\":\"CORP\\\\bob\""));
	ck_assert(audit_has("session_disconnected", tid, "revoked"));
	/* Gone: a second expire and a helper cancel find nothing. */
	ck_assert_int_eq(tl_client_call(a, "ticket.expire",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    RP_ERR_NOT_FOUND);
	json_decref(res);
	ck_assert_int_eq(tl_client_call(h, "offer.cancel",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    RP_ERR_NOT_FOUND);
	json_decref(res);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_cancel_and_helper_gone)
{
	struct tl_client *a, *h;
	json_t *res = NULL, *p;
	char tid[33];

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	/* Cancel while prompting: the agent is told. */
	ck_assert_int_eq(offer(h, WS42, "view", &res), 0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	json_decref(res);
	update_drop(h, tid, "prompting");
	json_decref(agent_answer(a, "novice.prompt", tid, NULL));
	/* The agent reports a connection before anyone consented: refused
	 * with a message about the ticket, not the connection state. */
	ck_assert_int_eq(event(a, tid, "connected", &res), RP_ERR_WRONG_STATE);
	ck_assert_str_eq(jstr(res, "message"),
	    "ticket not accepted yet: connected before consent");
	json_decref(res);
	ck_assert(
	    audit_has("ticket_refused", tid, "\"reason\":\"wrong_state\""));
	ck_assert_int_eq(tl_client_call(h, "offer.cancel",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    0);
	ck_assert_str_eq(jstr(res, "state"), "cancelled");
	json_decref(res);
	update_drop(h, tid, "cancelled");
	p = agent_answer(a, "ticket.revoked", tid, NULL);
	ck_assert_str_eq(jstr(p, "reason"), "cancelled");
	json_decref(p);
	ck_assert(audit_has("offer_cancelled", tid, "\"reason\":\"helper\""));

	/* Helper disconnects with an accepted ticket: cancelled. */
	accepted_ticket(h, a, "view", tid, NULL, 0);
	tl_client_free(h);
	p = agent_answer(a, "ticket.revoked", tid, NULL);
	json_decref(p);
	ck_assert(audit_has("offer_cancelled", tid, "helper_gone"));
	ck_assert_int_eq(
	    event(a, tid, "connected", &res), RP_ERR_TICKET_EXPIRED);
	json_decref(res);
	tl_client_free(a);
}
END_TEST

/* A late "disconnected": the session ended while the agent could not
 * report it, and the ticket was closed meanwhile (here: the helper's
 * cancel). The agent's figures are audited, marked late; the ticket stays
 * as it was (cancelled, not ended, not reopened); the line is written
 * once; another machine's agent and a ticket that never connected get
 * not_found. */
START_TEST(t_late_disconnected)
{
	struct tl_client *a, *h, *other;
	json_t *res = NULL, *p, *ev;
	char tid[33], never[33];
	long before;

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	accepted_ticket(h, a, "view", tid, NULL, 0);
	connected(h, a, tid);
	ck_assert_int_eq(tl_client_call(h, "offer.cancel",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    0);
	json_decref(res);
	update_drop(h, tid, "cancelled");
	json_decref(agent_answer(a, "ticket.revoked", tid, NULL));
	ck_assert(audit_has("session_disconnected", tid, "cancelled"));
	before = audit_n("session_disconnected");

	/* Another machine's agent cannot report for it. */
	other = agent("ws-043", WS43, "CORP\\bob");
	ev = json_pack("{s:s, s:s, s:i, s:i, s:s, s:i}", "ticket", tid, "event",
	    "disconnected", "session_seconds", 42, "bytes", 4096, "user",
	    "CORP\\bob", "at", 1795000042);
	ck_assert_int_eq(tl_client_call(other, "session.event",
	                     json_deep_copy(ev), T_WAIT, &res),
	    RP_ERR_NOT_FOUND);
	json_decref(res);
	ck_assert_int_eq(audit_n("session_disconnected"), before);

	/* Its own agent can, once. */
	ck_assert_int_eq(tl_client_call(a, "session.event", json_deep_copy(ev),
	                     T_WAIT, &res),
	    0);
	json_decref(res);
	ck_assert_int_eq(audit_n("session_disconnected"), before + 1);
	ck_assert(audit_has("session_disconnected", tid, "\"late\":true"));
	ck_assert_int_eq(
	    audit_int("session_disconnected", tid, "agent_session_seconds"),
	    42);
	ck_assert_int_eq(
	    audit_int("session_disconnected", tid, "session_seconds"), 42);
	ck_assert_int_eq(
	    audit_int("session_disconnected", tid, "agent_bytes"), 4096);
	ck_assert_int_eq(
	    audit_int("session_disconnected", tid, "at"), 1795000042);
	ck_assert(
	    audit_has("session_disconnected", tid, "\"state\":\"cancelled\""));
	ck_assert_int_eq(tl_client_call(a, "session.event", json_deep_copy(ev),
	                     T_WAIT, &res),
	    RP_ERR_NOT_FOUND);
	json_decref(res);
	ck_assert_int_eq(audit_n("session_disconnected"), before + 1);
	json_decref(ev);

	/* The ticket did not change: still cancelled (a "connected" says
	 * expired, not ticket_used as for an ended one), not listed, and
	 * the helper heard nothing more. */
	ck_assert_int_eq(
	    event(a, tid, "connected", &res), RP_ERR_TICKET_EXPIRED);
	json_decref(res);
	ck_assert_int_eq(
	    tl_client_call(h, "ticket.list", json_object(), T_WAIT, &res), 0);
	ck_assert_int_eq(json_array_size(json_object_get(res, "tickets")), 0);
	json_decref(res);
	p = tl_client_wait_request(h, "offer.update", 300, NULL);
	ck_assert_msg(p == NULL, "offer.update after a late event");

	/* A ticket that never connected had no session to end. */
	accepted_ticket(h, a, "view", never, NULL, 0);
	ck_assert_int_eq(tl_client_call(h, "offer.cancel",
	                     json_pack("{s:s}", "ticket", never), T_WAIT, &res),
	    0);
	json_decref(res);
	ck_assert_int_eq(tl_client_call(a, "session.event",
	                     json_pack("{s:s, s:s, s:i}", "ticket", never,
	                         "event", "disconnected", "session_seconds", 1),
	                     T_WAIT, &res),
	    RP_ERR_NOT_FOUND);
	json_decref(res);
	ck_assert_int_eq(audit_n("session_disconnected"), before + 1);
	tl_client_free(other);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_expiry)
{
	struct tl_client *a, *h;
	json_t *res = NULL, *p;
	char tid[33];

	/* The deciding rule's scope caps tickets at 3 s. */
	broker_with("scope shortlived machine-group=\"CORP\\kiosks\" "
	            "max-ticket=3s prompt-timeout=5s\n"
	            "allow view user \"CORP\\bob\" on shortlived\n",
	    NULL);
	a = agent("ws-043", WS43, "CORP\\erin");
	h = helper("bob");
	ck_assert_int_eq(
	    tl_client_call(h, "offer.create",
	        json_pack("{s:s, s:s, s:[s]}", "machine", WS43, "mode", "view",
	            "addresses", "127.0.0.1:40123"),
	        T_WAIT, &res),
	    0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	ck_assert_int_le(
	    json_integer_value(json_object_get(res, "expires")) - time(NULL),
	    3);
	json_decref(res);
	update_drop(h, tid, "prompting");
	json_decref(agent_answer(a, "novice.prompt", tid, accept_ans()));
	update_drop(h, tid, "accepted");
	json_decref(agent_answer(a, "ticket.connect", tid, json_object()));
	/* Wait past the expiry: the sweep expires it, both sides told. */
	p = update(h, tid, "expired");
	json_decref(p);
	p = agent_answer(a, "ticket.revoked", tid, NULL);
	ck_assert_str_eq(jstr(p, "reason"), "expired");
	json_decref(p);
	ck_assert(audit_wait("ticket_expired", 1));
	/* Too late to connect: refused and audited. */
	ck_assert_int_eq(
	    event(a, tid, "connected", &res), RP_ERR_TICKET_EXPIRED);
	json_decref(res);
	ck_assert(audit_has("ticket_refused", tid, "ticket_expired"));
	ck_assert_int_eq(tl_client_call(h, "offer.cancel",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    RP_ERR_TICKET_EXPIRED);
	json_decref(res);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_reuse)
{
	struct tl_client *a, *h;
	json_t *res = NULL;
	char tid[33];

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	accepted_ticket(h, a, "view", tid, NULL, 0);
	connected(h, a, tid);
	ck_assert_int_eq(event(a, tid, "connected", &res), RP_ERR_TICKET_USED);
	ck_assert_str_eq(tl_error_reason(res), "ticket_used");
	json_decref(res);
	ck_assert(
	    audit_has("ticket_refused", tid, "\"reason\":\"ticket_used\""));
	/* After the end, still used. */
	ck_assert_int_eq(event(a, tid, "disconnected", NULL), 0);
	ck_assert_int_eq(event(a, tid, "connected", &res), RP_ERR_TICKET_USED);
	json_decref(res);
	ck_assert_int_eq(audit_n("ticket_refused"), 2);
	/* Another machine cannot use it. */
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

/* The agent goes away while its user is being asked: declined. */
START_TEST(t_agent_offline)
{
	struct tl_client *a, *h;
	json_t *res = NULL, *p;
	char tid[33];

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	ck_assert_int_eq(offer(h, WS42, "view", &res), 0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	json_decref(res);
	update_drop(h, tid, "prompting");
	json_decref(agent_answer(a, "novice.prompt", tid, NULL));
	tl_client_free(a);
	p = update(h, tid, "declined");
	ck_assert_str_eq(jstr(p, "reason"), "agent_offline");
	json_decref(p);
	ck_assert(audit_has("offer_declined", tid, "agent_offline"));
	ck_assert_int_eq(offer(h, WS42, "view", &res), RP_ERR_MACHINE_OFFLINE);
	json_decref(res);
	tl_client_free(h);
}
END_TEST

/* An agent's connection is replaced while a ticket is open: a pending
 * prompt is declined; an accepted ticket gets ticket.connect again on the
 * new connection and can be used there. */
START_TEST(t_agent_replaced)
{
	struct tl_client *a, *a2, *h;
	json_t *res = NULL, *p;
	char tid[33], tid2[33];

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	accepted_ticket(h, a, "view", tid, NULL, 0);
	ck_assert_int_eq(offer(h, WS42, "view", &res), 0);
	snprintf(tid2, sizeof(tid2), "%s", jstr(res, "ticket"));
	json_decref(res);
	update_drop(h, tid2, "prompting");
	json_decref(agent_answer(a, "novice.prompt", tid2, NULL));

	a2 = agent("ws-042", WS42, "CORP\\bob");
	p = update(h, tid2, "declined");
	ck_assert_str_eq(jstr(p, "reason"), "agent_offline");
	json_decref(p);
	ck_assert(tl_client_wait_closed(a, T_WAIT));
	json_decref(agent_answer(a2, "ticket.connect", tid, json_object()));
	connected(h, a2, tid);
	ck_assert_int_eq(event(a2, tid, "disconnected", NULL), 0);
	update_drop(h, tid, "ended");
	tl_client_free(h);
	tl_client_free(a);
	tl_client_free(a2);
}
END_TEST

/* The broker restarts (graceful, SIGTERM) with an accepted ticket: it is
 * listed and usable afterwards. A crash (SIGKILL) loses the answer of a
 * prompt in flight: that ticket is timed out at the next start. */
static void
restart_case(int sig)
{
	struct tl_client *a, *h;
	json_t *res = NULL, *t;
	char tid[33], tid2[33];
	size_t i;
	int seen = 0;

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	accepted_ticket(h, a, "control", tid, NULL, 0);
	ck_assert_int_eq(offer(h, WS42, "view", &res), 0);
	snprintf(tid2, sizeof(tid2), "%s", jstr(res, "ticket"));
	json_decref(res);
	json_decref(agent_answer(a, "novice.prompt", tid2, NULL));

	ck_assert_int_eq(
	    tl_broker_stop(&br, sig, 8000, NULL), sig == SIGKILL ? -2 : 0);
	tl_client_free(h);
	tl_client_free(a);
	ck_assert_int_eq(tl_broker_start(&br), 0);
	if (sig == SIGKILL)
		ck_assert(audit_has("offer_timed_out", tid2, "broker_restart"));
	else
		ck_assert(audit_has("offer_declined", tid2, "agent_offline"));

	h = helper("alice");
	ck_assert_int_eq(
	    tl_client_call(h, "ticket.list", json_object(), T_WAIT, &res), 0);
	json_array_foreach(json_object_get(res, "tickets"), i, t)
	{
		ck_assert_str_ne(jstr(t, "id"), tid2);
		if (strcmp(jstr(t, "id"), tid) == 0) {
			ck_assert_str_eq(jstr(t, "state"), "accepted");
			seen = 1;
		}
	}
	ck_assert_msg(seen, "accepted ticket lost in the restart");
	json_decref(res);
	/* The agent comes back: ticket.connect again, then it connects and
	 * the helper (re-bound by ticket.list) hears of it. */
	a = agent("ws-042", WS42, "CORP\\bob");
	json_decref(agent_answer(a, "ticket.connect", tid, json_object()));
	connected(h, a, tid);
	tl_client_free(h);
	tl_client_free(a);
}

/* A connected session with control survives a broker restart: listed as
 * connected with control granted, and its end is still recorded. */
/* The trail cannot be written (the audit file turns into a full disk at
 * the next reopen): new offers are refused with audit_unavailable and
 * reach nobody; once the trail can be written again (SIGHUP), offers work
 * again and the chain goes on unbroken. */
START_TEST(t_audit_unavailable)
{
	struct tl_client *a, *h;
	json_t *res = NULL;
	char real[700], why[256], tid[33];
	unsigned long lines = 0, bad = 0;

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	snprintf(real, sizeof(real), "%s.real", br.audit);
	ck_assert_int_eq(rename(br.audit, real), 0);
	ck_assert_int_eq(symlink("/dev/full", br.audit), 0);
	ck_assert_int_eq(tl_broker_signal(&br, SIGHUP), 0);
	ck_assert(tl_broker_wait_log(
	    &br, "audit trail could not be reopened", 1, T_WAIT));
	ck_assert_int_eq(
	    offer(h, WS42, "view", &res), RP_ERR_AUDIT_UNAVAILABLE);
	json_decref(res);
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "novice.prompt", 300, NULL));

	/* The disk has room again. */
	ck_assert_int_eq(unlink(br.audit), 0);
	ck_assert_int_eq(rename(real, br.audit), 0);
	ck_assert_int_eq(tl_broker_signal(&br, SIGHUP), 0);
	ck_assert(tl_broker_wait_log(&br, "policy reloaded", 2, T_WAIT));
	ck_assert_int_eq(offer(h, WS42, "view", &res), 0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	json_decref(res);
	json_decref(agent_answer(a, "novice.prompt", tid,
	    json_pack("{s:s, s:s}", "answer", "decline", "user", "CORP\\bob")));
	update_drop(h, tid, "prompting");
	update_drop(h, tid, "declined");
	tl_client_free(h);
	tl_client_free(a);
	ck_assert(audit_wait("ticket_created", 1));
	ck_assert_int_eq(
	    bk_audit_verify_file(br.audit, &lines, &bad, why, sizeof(why)), 0);
	ck_assert_uint_gt(lines, 0);
}
END_TEST

/*
 * The ticket store cannot write "accepted" (another process holds the
 * file's write lock until the broker's busy timeout runs out): the helper
 * is never told "accepted", the agent never gets ticket.connect; the
 * ticket is cancelled (store_failed), both sides are told, it is audited.
 * With the lock gone, offers work again.
 */
START_TEST(t_store_failure)
{
	struct tl_client *a, *h;
	json_t *res = NULL, *p, *id = NULL;
	char tid[33];
	sqlite3 *db;

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	ck_assert_int_eq(offer(h, WS42, "view", &res), 0);
	snprintf(tid, sizeof(tid), "%s", jstr(res, "ticket"));
	json_decref(res);
	update_drop(h, tid, "prompting");
	p = tl_client_wait_request(a, "novice.prompt", T_WAIT, &id);
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(id);
	json_decref(p);

	/* The user accepts while the store cannot be written. */
	ck_assert_int_eq(sqlite3_open(br.store, &db), SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(tl_client_reply(a, id, accept_ans()), 0);
	json_decref(id);
	p = tl_client_wait_request(h, "offer.update", 3 * T_WAIT, NULL);
	ck_assert_ptr_nonnull(p);
	ck_assert_msg(strcmp(jstr(p, "state"), "cancelled") == 0,
	    "offer.update %s (reason %s), expected cancelled", jstr(p, "state"),
	    jstr(p, "reason"));
	ck_assert_str_eq(jstr(p, "reason"), "store_failed");
	json_decref(p);
	p = tl_client_wait_request(a, "ticket.revoked", T_WAIT, NULL);
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(jstr(p, "reason"), "store_failed");
	json_decref(p);
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "ticket.connect", 300, NULL));
	ck_assert_ptr_null(
	    tl_client_wait_request(h, "offer.update", 300, NULL));
	ck_assert(
	    audit_has("offer_cancelled", tid, "\"reason\":\"store_failed\""));
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);

	/* The lock is gone: the next offer is accepted as usual. */
	accepted_ticket(h, a, "view", tid, NULL, 0);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_restart_connected)
{
	struct tl_client *a, *h;
	json_t *res = NULL, *t, *p;
	char tid[33];
	long long start;

	broker_with(policy_main, NULL);
	a = agent("ws-042", WS42, "CORP\\bob");
	h = helper("alice");
	accepted_ticket(h, a, "control", tid, NULL, 0);
	connected(h, a, tid);
	ck_assert_int_eq(tl_client_call(h, "control.request",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    0);
	json_decref(res);
	json_decref(agent_answer(a, "control.prompt", tid,
	    json_pack("{s:s, s:s}", "answer", "accept", "user", "CORP\\bob")));
	json_decref(update(h, tid, "connected"));
	ck_assert(audit_wait("control_accepted", 1));
	start = audit_int("control_accepted", tid, "start");
	ck_assert_int_gt(start, 0);
	/* Let the clock move on, so that a start taken at the restart would
	 * differ from the real one. */
	for (int i = 0; i < 30 && time(NULL) < start + 2; i++)
		usleep(100000);

	ck_assert_int_eq(tl_broker_stop(&br, SIGTERM, 8000, NULL), 0);
	tl_client_free(h);
	tl_client_free(a);
	ck_assert_int_eq(tl_broker_start(&br), 0);
	h = helper("alice");
	a = agent("ws-042", WS42, "CORP\\bob");
	ck_assert_int_eq(
	    tl_client_call(h, "ticket.list", json_object(), T_WAIT, &res), 0);
	t = json_array_get(json_object_get(res, "tickets"), 0);
	ck_assert_str_eq(jstr(t, "id"), tid);
	ck_assert_str_eq(jstr(t, "state"), "connected");
	ck_assert_str_eq(jstr(t, "control"), "granted");
	json_decref(res);
	/* No second ticket.connect for a connected ticket. */
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "ticket.connect", 300, NULL));
	ck_assert_int_eq(event(a, tid, "control_ended", NULL), 0);
	p = update(h, tid, "connected");
	ck_assert_str_eq(jstr(p, "control"), "ended");
	json_decref(p);
	ck_assert(audit_has("control_ended", tid, "\"duration_s\":"));
	/* Control still counts from when the user granted it, not from the
	 * restart. */
	ck_assert_int_eq(audit_int("control_ended", tid, "start"), start);
	ck_assert_int_ge(audit_int("control_ended", tid, "duration_s"), 2);
	ck_assert_int_eq(event(a, tid, "disconnected", NULL), 0);
	update_drop(h, tid, "ended");
	ck_assert(audit_has("session_disconnected", tid, "\"disconnected\""));
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_restart)
{
	restart_case(SIGTERM);
}
END_TEST

START_TEST(t_crash)
{
	restart_case(SIGKILL);
}
END_TEST

static Suite *
suite(void)
{
	Suite *s = suite_create("offer");
	TCase *tc = tcase_create("offer");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, t_accept);
	tcase_add_test(tc, t_decline);
	tcase_add_test(tc, t_odd_answer);
	tcase_add_test(tc, t_prompt_timeout);
	tcase_add_test(tc, t_nobody);
	tcase_add_test(tc, t_refusals);
	tcase_add_test(tc, t_control);
	tcase_add_test(tc, t_control_policy_reload);
	tcase_add_test(tc, t_rate_limited);
	tcase_add_test(tc, t_novice_expire);
	tcase_add_test(tc, t_cancel_and_helper_gone);
	tcase_add_test(tc, t_late_disconnected);
	tcase_add_test(tc, t_expiry);
	tcase_add_test(tc, t_reuse);
	tcase_add_test(tc, t_agent_offline);
	tcase_add_test(tc, t_agent_replaced);
	tcase_add_test(tc, t_restart);
	tcase_add_test(tc, t_crash);
	tcase_add_test(tc, t_restart_connected);
	tcase_add_test(tc, t_audit_unavailable);
	tcase_add_test(tc, t_store_failure);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	slapd_up();
	sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	slapd_down();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
