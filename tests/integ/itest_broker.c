/*
 * itest_broker.c - the real rabrokerd (a child process) against a real
 * slapd, spoken to over real TLS by scripted agents and helpers
 * (tests/lib/tl_broker.h): configuration checks (-n), the port-taken
 * message (seed 003), agent identity by certificate, replacement, the
 * policy deciding machines.list, SIGHUP and SIGTERM.
 */
#include <check.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "rp_error.h"
#include "tl_broker.h"
#include "tl_slapd.h"
#include "tl_util.h"

static struct tl_slapd slapd;
static int have_slapd;

/* alice is in CORP\helpdesk; bob is in no group. */
static const char *policy_helpdesk =
    "# test policy\n"
    "scope workstations ou=\"ou=Workstations,ou=Computers,dc=corp,"
    "dc=example\"\n"
    "allow control group \"CORP\\helpdesk\" on workstations\n";
static const char *policy_bob =
    "scope workstations ou=\"ou=Workstations,ou=Computers,dc=corp,"
    "dc=example\"\n"
    "allow view user \"CORP\\bob\" on workstations\n";

static const char *policy_kiosks =
    "scope workstations ou=\"ou=Workstations,ou=Computers,dc=corp,"
    "dc=example\"\n"
    "scope kiosks machine-group=\"CORP\\kiosks\"\n"
    "allow control group \"CORP\\helpdesk\" on workstations\n"
    "allow view user \"CORP\\bob\" on kiosks\n";

static void
slapd_up(void)
{
	have_slapd = tl_slapd_start(NULL, &slapd) == 0;
}

static void
slapd_down(void)
{
	if (have_slapd)
		tl_slapd_destroy(&slapd);
}

/* A broker configured against the test slapd, started. */
static void
broker_up(struct tl_broker *b, const char *policy, unsigned drain)
{
	struct tl_broker_opts o;

	ck_assert_msg(have_slapd, "slapd did not start");
	memset(&o, 0, sizeof(o));
	o.slapd = &slapd;
	o.policy = policy;
	o.require_computer_object = 1;
	o.drain_timeout_s = drain;
	ck_assert_int_eq(tl_broker_setup(b, &o), 0);
	ck_assert_msg(tl_broker_start(b) == 0, "rabrokerd did not start");
}

static struct tl_client *
connect_as(struct event_base *base, struct tl_broker *b, const char *cert)
{
	char why[256] = "";
	struct tl_client *c = tl_client_connect(
	    base, b->pki, b->port, cert, 5000, why, sizeof(why));
	ck_assert_msg(c != NULL, "connect as %s: %s", cert ? cert : "-", why);
	return c;
}

/* machines.list as seen by c: the array (new reference). */
static json_t *
list_machines(struct tl_client *c)
{
	json_t *res = NULL, *m;
	int rc = tl_client_call(c, "machines.list", json_object(), 5000, &res);

	ck_assert_msg(
	    rc == 0, "machines.list: %d %s", rc, tl_error_reason(res));
	m = json_incref(json_object_get(res, "machines"));
	ck_assert(json_is_array(m));
	json_decref(res);
	return m;
}

static int
lists(json_t *machines, const char *fqdn)
{
	size_t i;
	json_t *v;

	json_array_foreach(machines, i, v)
	{
		if (strcmp(json_string_value(json_object_get(v, "fqdn")),
		        fqdn) == 0)
			return 1;
	}
	return 0;
}

/* --- rabrokerd -n ---------------------------------------------------------- */

START_TEST(t_check_good)
{
	struct tl_broker b;
	struct tl_broker_opts o;
	char out[4096];
	const char *args[] = {"-n", "-f", NULL, NULL};

	memset(&o, 0, sizeof(o));
	o.slapd = have_slapd ? &slapd : NULL;
	o.policy = policy_helpdesk;
	ck_assert_int_eq(tl_broker_setup(&b, &o), 0);
	args[2] = b.conf;
	ck_assert_int_eq(tl_broker_run(args, out, sizeof(out), 10000), 0);
	ck_assert_msg(strstr(out, "configuration OK") != NULL, "%s", out);
	tl_broker_destroy(&b);
}
END_TEST

/* Appends text to a file; returns the line number of its first line. */
static int
append(const char *path, const char *text)
{
	FILE *f = fopen(path, "r+");
	int ch, lines = 0, last = '\n';

	ck_assert_ptr_nonnull(f);
	while ((ch = fgetc(f)) != EOF) {
		if (ch == '\n')
			lines++;
		last = ch;
	}
	if (last != '\n') {
		fputc('\n', f);
		lines++;
	}
	fputs(text, f);
	fclose(f);
	return lines + 1;
}

START_TEST(t_check_config_errors)
{
	struct tl_broker b;
	char out[4096], want[800];
	const char *args[] = {"-n", "-f", NULL, NULL};
	int l1, l2;

	ck_assert_int_eq(tl_broker_setup(&b, NULL), 0);
	args[2] = b.conf;
	l1 = append(b.conf, "[relay]\nidle_timout = 5s\n") + 1;
	l2 = append(b.conf, "[log]\n") + 1;
	append(b.conf, "level = loud\n");
	ck_assert_int_eq(tl_broker_run(args, out, sizeof(out), 10000), 1);
	snprintf(want, sizeof(want), "%s:%d: unknown key \"idle_timout\"",
	    b.conf, l1);
	ck_assert_msg(strstr(out, want) != NULL, "want %s in: %s", want, out);
	/* [log] appears twice: duplicate level?  No: level was set in the
	 * first [log]; this one is a duplicate key and a bad value. */
	snprintf(want, sizeof(want), "%s:%d:", b.conf, l2);
	ck_assert_msg(strstr(out, want) != NULL, "want %s in: %s", want, out);
	ck_assert(strstr(out, "configuration OK") == NULL);
	tl_broker_destroy(&b);
}
END_TEST

START_TEST(t_check_secret_mode)
{
	struct tl_broker b;
	char out[4096], want[800];
	const char *args[] = {"-n", "-f", NULL, NULL};

	ck_assert_int_eq(tl_broker_setup(&b, NULL), 0);
	args[2] = b.conf;
	ck_assert_int_eq(chmod(b.key, 0644), 0);
	ck_assert_int_eq(tl_broker_run(args, out, sizeof(out), 10000), 1);
	snprintf(want, sizeof(want),
	    "private key %s is readable by group or others (mode 0644)", b.key);
	ck_assert_msg(strstr(out, want) != NULL, "want %s in: %s", want, out);
	ck_assert_msg(strstr(out, ":5: ") != NULL, "no line in: %s", out);
	tl_broker_destroy(&b);
}
END_TEST

START_TEST(t_check_policy_error)
{
	struct tl_broker b;
	struct tl_broker_opts o;
	char out[4096], want[800];
	const char *args[] = {"-n", "-f", NULL, NULL};

	memset(&o, 0, sizeof(o));
	o.policy = "# ok\nallow control group \"CORP\\helpdesk\" on nowhere\n";
	ck_assert_int_eq(tl_broker_setup(&b, &o), 0);
	args[2] = b.conf;
	ck_assert_int_eq(tl_broker_run(args, out, sizeof(out), 10000), 1);
	snprintf(want, sizeof(want), "%s:2:", b.policy);
	ck_assert_msg(strstr(out, want) != NULL, "want %s in: %s", want, out);
	tl_broker_destroy(&b);
}
END_TEST

/* Seed 003: the port is taken by another program. */
START_TEST(t_port_taken)
{
	struct tl_broker b;
	char out[4096], want[1200];
	const char *args[] = {"-d", "-f", NULL, NULL};
	struct sockaddr_in sa;
	int fd, one = 1;

	ck_assert_int_eq(tl_broker_setup(&b, NULL), 0);
	args[2] = b.conf;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	tl_loopback((struct sockaddr *)&sa, 0, (uint16_t)b.port);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 1), 0);
	ck_assert_int_eq(tl_broker_run(args, out, sizeof(out), 10000), 1);
	snprintf(want, sizeof(want),
	    "cannot listen on 127.0.0.1:%u: address already in use; another "
	    "program holds this port \xe2\x80\x94 change `listen` in [broker] "
	    "of %s",
	    b.port, b.conf);
	ck_assert_msg(strstr(out, want) != NULL, "want %s in: %s", want, out);
	close(fd);
	tl_broker_destroy(&b);
}
END_TEST

/* --- agents and helpers ---------------------------------------------------- */

START_TEST(t_agent_listed_by_policy)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *ag, *alice, *bob;
	json_t *m, *res = NULL;
	int rc;

	broker_up(&b, policy_helpdesk, 5);
	ag = connect_as(base, &b, "ws-042");
	ck_assert_int_eq(
	    tl_client_call(ag, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "agent"), 5000,
	        &res),
	    0);
	ck_assert_str_eq(json_string_value(json_object_get(res, "identity")),
	    "ws-042.corp.example");
	json_decref(res);
	rc = tl_client_call(ag, "agent.register",
	    json_pack("{s:s, s:[s], s:[{s:s, s:s, s:s, s:b}]}", "fqdn",
	        "WS-042.corp.example", "addresses", "192.0.2.42", "sessions",
	        "id", "2", "user", "CORP\\bob", "kind", "graphical", "locked",
	        0),
	    5000, &res);
	ck_assert_msg(rc == 0, "register: %d %s", rc, tl_error_reason(res));
	ck_assert_str_eq(json_string_value(json_object_get(res, "machine")),
	    "ws-042.corp.example");
	ck_assert_ptr_nonnull(strstr(
	    json_string_value(json_object_get(res, "dn")), "ou=Workstations"));
	ck_assert_int_eq(
	    json_integer_value(json_object_get(res, "keepalive")), 60);
	json_decref(res);

	alice = connect_as(base, &b, NULL);
	ck_assert_int_eq(tl_client_helper_login(alice, "alice", "alice-pw"), 0);
	m = list_machines(alice);
	ck_assert_msg(
	    lists(m, "ws-042.corp.example"), "alice: %s", json_dumps(m, 0));
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_array_get(m, 0), "right")),
	    "control");
	ck_assert_ptr_nonnull(strstr(
	    json_string_value(json_object_get(json_array_get(m, 0), "rule")),
	    "CORP\\helpdesk"));
	ck_assert_str_eq(
	    json_string_value(json_object_get(
	        json_array_get(
	            json_object_get(json_array_get(m, 0), "sessions"), 0),
	        "user")),
	    "CORP\\bob");
	json_decref(m);
	/* The substring filter. */
	rc = tl_client_call(alice, "machines.list",
	    json_pack("{s:s}", "filter", "srv-"), 5000, &res);
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(json_array_size(json_object_get(res, "machines")), 0);
	json_decref(res);

	bob = connect_as(base, &b, NULL);
	ck_assert_int_eq(tl_client_helper_login(bob, "bob", "bob-pw"), 0);
	m = list_machines(bob);
	ck_assert_int_eq(json_array_size(m), 0);
	json_decref(m);

	/* A rule scoped to a group of machines (ws-043 is in CORP\kiosks,
	 * learnt from the directory at hello). */
	{
		struct tl_client *k = connect_as(base, &b, "ws-043");
		ck_assert_int_eq(
		    tl_client_agent_login(k, "ws-043.corp.example", NULL), 0);
		ck_assert_int_eq(tl_broker_write_policy(&b, policy_kiosks), 0);
		ck_assert_int_eq(tl_broker_signal(&b, SIGHUP), 0);
		ck_assert(
		    tl_broker_wait_audit(&b, "\"policy_reloaded\"", 1, 3000));
		m = list_machines(bob);
		ck_assert_int_eq(json_array_size(m), 1);
		ck_assert(lists(m, "ws-043.corp.example"));
		json_decref(m);
		m = list_machines(alice);
		ck_assert_int_eq(json_array_size(m), 2);
		json_decref(m);
		tl_client_free(k);
	}

	ck_assert(tl_broker_wait_audit(&b, "\"agent_online\"", 1, 2000));
	ck_assert(tl_broker_wait_audit(&b, "\"auth_succeeded\"", 2, 2000));
	ck_assert_int_eq(tl_broker_audit_count(&b, "\"CORP\\\\alice\""), 1);

	tl_client_free(bob);
	tl_client_free(alice);
	tl_client_free(ag);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

START_TEST(t_register_wrong_fqdn)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *ag;
	json_t *res = NULL;

	broker_up(&b, policy_helpdesk, 5);
	ag = connect_as(base, &b, "ws-042");
	ck_assert_int_eq(
	    tl_client_call(ag, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "agent"), 5000,
	        NULL),
	    0);
	ck_assert_int_eq(
	    tl_client_call(ag, "agent.register",
	        json_pack("{s:s}", "fqdn", "ws-043.corp.example"), 5000, &res),
	    RP_ERR_FORBIDDEN);
	ck_assert_str_eq(tl_error_reason(res), "forbidden");
	json_decref(res);
	/* Bad params: a session without a kind. */
	ck_assert_int_eq(tl_client_call(ag, "agent.register",
	                     json_pack("{s:s, s:[{s:s}]}", "fqdn",
	                         "ws-042.corp.example", "sessions", "id", "1"),
	                     5000, NULL),
	    RP_ERR_INVALID_PARAMS);
	tl_client_free(ag);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

static void
refused_cert(struct event_base *base, struct tl_broker *b, const char *cert)
{
	char why[256] = "";
	struct tl_client *c = tl_client_connect(
	    base, b->pki, b->port, cert, 5000, why, sizeof(why));

	if (c == NULL)
		return;
	ck_assert_msg(
	    tl_client_wait_closed(c, 3000), "%s certificate accepted", cert);
	ck_assert_int_eq(
	    tl_client_call(c, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "agent"), 2000,
	        NULL),
	    RP_ERR_CLOSED);
	tl_client_free(c);
}

START_TEST(t_identity_refusals)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *c;
	json_t *res = NULL;

	broker_up(&b, policy_helpdesk, 5);
	/* A certificate from an untrusted CA, an expired one from the right
	 * CA: the broker refuses the handshake. (With TLS 1.3 the client may
	 * believe it is done before the server has checked its certificate:
	 * then the connection must close at once, unanswered.) */
	refused_cert(base, &b, "rogue");
	refused_cert(base, &b, "expired");
	ck_assert(tl_broker_wait_log(&b, "TLS connection refused", 2, 3000));

	/* No certificate: cannot be an agent. */
	c = connect_as(base, &b, NULL);
	ck_assert_int_eq(
	    tl_client_call(c, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "agent"), 5000,
	        &res),
	    RP_ERR_NOT_AUTHENTICATED);
	json_decref(res);
	/* Wrong version. */
	ck_assert_int_eq(
	    tl_client_call(c, "hello",
	        json_pack("{s:i, s:s}", "version", 2, "role", "helper"), 5000,
	        &res),
	    RP_ERR_VERSION);
	ck_assert_int_eq(
	    json_integer_value(json_array_get(
	        json_object_get(json_object_get(res, "data"), "supported"), 0)),
	    1);
	json_decref(res);
	/* Methods before authentication. */
	ck_assert_int_eq(
	    tl_client_call(c, "machines.list", json_object(), 5000, NULL),
	    RP_ERR_NOT_AUTHENTICATED);
	ck_assert_int_eq(tl_client_call(c, "agent.register",
	                     json_pack("{s:s}", "fqdn", "x"), 5000, NULL),
	    RP_ERR_NOT_AUTHENTICATED);
	ck_assert_int_eq(
	    tl_client_call(c, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "helper"), 5000,
	        NULL),
	    0);
	ck_assert_int_eq(
	    tl_client_call(c, "machines.list", json_object(), 5000, &res),
	    RP_ERR_NOT_AUTHENTICATED);
	json_decref(res);
	ck_assert_int_eq(
	    tl_client_call(c, "offer.create",
	        json_pack("{s:s, s:s, s:[s]}", "machine", "ws-042.corp.example",
	            "mode", "view", "addresses", "127.0.0.1:5500"),
	        5000, NULL),
	    RP_ERR_NOT_AUTHENTICATED);
	tl_client_free(c);

	/* A valid certificate for a machine the directory does not know
	 * (require_computer_object = yes). */
	c = connect_as(base, &b, "cn-only");
	ck_assert_int_eq(
	    tl_client_call(c, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "agent"), 5000,
	        &res),
	    RP_ERR_UNKNOWN_MACHINE);
	json_decref(res);
	tl_client_free(c);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

START_TEST(t_agent_replaced)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *a1, *a2, *alice;
	json_t *m;

	broker_up(&b, policy_helpdesk, 5);
	a1 = connect_as(base, &b, "ws-042");
	ck_assert_int_eq(
	    tl_client_agent_login(a1, "ws-042.corp.example", "CORP\\bob"), 0);
	a2 = connect_as(base, &b, "ws-042");
	ck_assert_int_eq(
	    tl_client_agent_login(a2, "ws-042.corp.example", "CORP\\carol"), 0);
	ck_assert_msg(tl_client_wait_closed(a1, 5000),
	    "the old connection was not closed");
	ck_assert(!tl_client_closed(a2));
	ck_assert(tl_broker_wait_audit(&b, "\"agent_replaced\"", 1, 2000));
	ck_assert_int_eq(tl_broker_audit_count(&b, "\"agent_offline\""), 0);

	alice = connect_as(base, &b, NULL);
	ck_assert_int_eq(tl_client_helper_login(alice, "alice", "alice-pw"), 0);
	m = list_machines(alice);
	ck_assert_int_eq(json_array_size(m), 1);
	/* The new connection's sessions. */
	ck_assert_str_eq(
	    json_string_value(json_object_get(
	        json_array_get(
	            json_object_get(json_array_get(m, 0), "sessions"), 0),
	        "user")),
	    "CORP\\carol");
	json_decref(m);
	/* The agent goes away: offline, no longer listed. */
	tl_client_free(a2);
	ck_assert(tl_broker_wait_audit(&b, "\"agent_offline\"", 1, 3000));
	m = list_machines(alice);
	ck_assert_int_eq(json_array_size(m), 0);
	json_decref(m);
	tl_client_free(alice);
	tl_client_free(a1);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

START_TEST(t_wrong_password)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *c;
	int rc, i;

	broker_up(&b, policy_helpdesk, 5);
	c = connect_as(base, &b, NULL);
	rc = tl_client_helper_login(c, "alice", "not-her-password");
	ck_assert_int_eq(rc, RP_ERR_AUTH_FAILED);
	ck_assert(tl_broker_wait_audit(&b, "\"auth_failed\"", 1, 2000));
	ck_assert_int_eq(tl_broker_audit_count(&b, "not-her-password"), 0);
	ck_assert_int_eq(tl_broker_log_count(&b, "not-her-password"), 0);
	ck_assert_int_eq(tl_broker_audit_count(&b, "\"alice\""), 1);
	/* Still not authenticated. */
	ck_assert_int_eq(
	    tl_client_call(c, "machines.list", json_object(), 5000, NULL),
	    RP_ERR_NOT_AUTHENTICATED);
	/* Four more failures from this address, then rate_limited even with
	 * the right password. */
	for (i = 0; i < 4; i++) {
		json_t *p = json_pack("{s:s, s:s}", "mechanism", "PLAIN",
		    "initial", "AGFsaWNlAHdyb25n"); /* \0alice\0wrong */
		ck_assert_int_eq(
		    tl_client_call(c, "auth.start", p, 10000, NULL),
		    RP_ERR_AUTH_FAILED);
	}
	ck_assert_int_eq(tl_client_call(c, "auth.start",
	                     json_pack("{s:s, s:s}", "mechanism", "PLAIN",
	                         "initial", "AGFsaWNlAGFsaWNlLXB3"),
	                     10000, NULL),
	    RP_ERR_RATE_LIMITED);
	ck_assert(
	    tl_broker_wait_audit(&b, "\"reason\":\"rate_limited\"", 1, 2000));
	ck_assert_int_eq(tl_broker_audit_count(&b, "alice-pw"), 0);
	tl_client_free(c);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

START_TEST(t_sighup_policy)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *ag, *alice, *bob;
	json_t *m, *res = NULL;

	broker_up(&b, policy_helpdesk, 5);
	ag = connect_as(base, &b, "ws-042");
	ck_assert_int_eq(
	    tl_client_agent_login(ag, "ws-042.corp.example", NULL), 0);
	alice = connect_as(base, &b, NULL);
	ck_assert_int_eq(tl_client_helper_login(alice, "alice", "alice-pw"), 0);
	bob = connect_as(base, &b, NULL);
	ck_assert_int_eq(tl_client_helper_login(bob, "bob", "bob-pw"), 0);
	m = list_machines(alice);
	ck_assert_int_eq(json_array_size(m), 1);
	json_decref(m);

	/* A broken policy: the old one stays. */
	ck_assert_int_eq(tl_broker_write_policy(&b, "allow nothing\n"), 0);
	ck_assert_int_eq(tl_broker_signal(&b, SIGHUP), 0);
	ck_assert(tl_broker_wait_audit(&b, "\"result\":\"error\"", 1, 3000));
	ck_assert(tl_broker_wait_log(&b, "policy.conf:1", 1, 2000));
	m = list_machines(alice);
	ck_assert_int_eq(json_array_size(m), 1);
	json_decref(m);

	/* A good one: applies to the same connections. */
	ck_assert_int_eq(tl_broker_write_policy(&b, policy_bob), 0);
	ck_assert_int_eq(tl_broker_signal(&b, SIGHUP), 0);
	ck_assert(tl_broker_wait_audit(&b, "\"result\":\"ok\"", 1, 3000));
	m = list_machines(alice);
	ck_assert_int_eq(json_array_size(m), 0);
	json_decref(m);
	m = list_machines(bob);
	ck_assert(lists(m, "ws-042.corp.example"));
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_array_get(m, 0), "right")),
	    "view");
	json_decref(m);
	/* The agent connection was not touched. */
	ck_assert(!tl_client_closed(ag));
	ck_assert_int_eq(
	    tl_client_call(ag, "ping", json_object(), 5000, &res), 0);
	ck_assert(json_integer_value(json_object_get(res, "now")) > 0);
	json_decref(res);
	ck_assert_int_eq(tl_broker_audit_count(&b, "\"agent_offline\""), 0);

	tl_client_free(bob);
	tl_client_free(alice);
	tl_client_free(ag);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

START_TEST(t_sigterm_drains)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *ag;
	unsigned ms = 0;
	int st;

	broker_up(&b, policy_helpdesk, 3);
	ag = connect_as(base, &b, "ws-042");
	ck_assert_int_eq(
	    tl_client_agent_login(ag, "ws-042.corp.example", NULL), 0);
	/* A helper that leaves in the middle of its SASL exchange (the
	 * broker must not keep what it owed it: under ASan a leak would
	 * change the exit status below). */
	{
		struct tl_client *h = connect_as(base, &b, NULL);
		ck_assert_int_eq(
		    tl_client_call(h, "hello",
		        json_pack("{s:i, s:s}", "version", 1, "role", "helper"),
		        5000, NULL),
		    0);
		tl_client_call(h, "auth.start",
		    json_pack("{s:s, s:s}", "mechanism", "PLAIN", "initial",
		        "AGFsaWNlAGFsaWNlLXB3"),
		    1, NULL);
		tl_client_free(h);
		tl_run_until(base, NULL, NULL, 300);
	}
	ck_assert_int_eq(tl_broker_signal(&b, SIGTERM), 0);
	/* The broker closes us gracefully... */
	ck_assert_msg(tl_client_wait_closed(ag, 3000), "agent not told to go");
	/* ...and exits 0 within drain_timeout. */
	st = tl_broker_stop(&b, 0, 4000, &ms);
	ck_assert_msg(st == 0, "exit status %d after %u ms", st, ms);
	ck_assert(tl_broker_audit_count(&b, "\"broker_stopped\"") == 1);
	ck_assert(tl_broker_audit_count(&b, "\"broker_started\"") == 1);
	tl_client_free(ag);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

/*
 * SIGTERM while handshakes sit on the handshake threads (clients that
 * connected and then stalled, one in the middle of its ClientHello): the
 * drain waits for them until drain_timeout, then the threads are stopped
 * and joined and the stalled connections closed. Under ASan a leak or a
 * crash would change the exit status. A real agent meanwhile completes
 * its handshake on a thread and logs in on the loop.
 */
START_TEST(t_sigterm_handshakes_in_flight)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *ag;
	struct sockaddr_in sin;
	static const unsigned char partial[] = {
	    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
	unsigned ms = 0;
	int fd[4], st;

	broker_up(&b, policy_helpdesk, 1);
	ck_assert(tl_broker_wait_log(&b, "TLS handshakes on", 1, 1000));
	tl_loopback((struct sockaddr *)&sin, 0, (uint16_t)b.port);
	for (int i = 0; i < 4; i++) {
		fd[i] = socket(AF_INET, SOCK_STREAM, 0);
		ck_assert_int_ge(fd[i], 0);
		ck_assert_int_eq(
		    connect(fd[i], (struct sockaddr *)&sin, sizeof(sin)), 0);
	}
	ck_assert_int_eq(
	    write(fd[0], partial, sizeof(partial)), (ssize_t)sizeof(partial));
	ag = connect_as(base, &b, "ws-042");
	ck_assert_int_eq(
	    tl_client_agent_login(ag, "ws-042.corp.example", NULL), 0);
	ck_assert_int_eq(tl_broker_signal(&b, SIGTERM), 0);
	ck_assert_msg(tl_client_wait_closed(ag, 3000), "agent not told to go");
	st = tl_broker_stop(&b, 0, 6000, &ms);
	ck_assert_msg(st == 0, "exit status %d after %u ms", st, ms);
	ck_assert(tl_broker_wait_log(&b, "drain_timeout (1 s) passed", 1, 10));
	for (int i = 0; i < 4; i++)
		close(fd[i]);
	tl_client_free(ag);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

/* One sweep closes silent agents and connections that never log in. */
START_TEST(t_keepalive_and_login_timeout)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_broker_opts o;
	struct tl_client *a1, *a2, *idle;
	json_t *res = NULL;
	uint64_t end;

	ck_assert(have_slapd);
	memset(&o, 0, sizeof(o));
	o.slapd = &slapd;
	o.policy = policy_helpdesk;
	o.keepalive_s = 2; /* silent for 6 s = gone */
	o.extra = "[broker]\nlogin_timeout = 2s\n";
	ck_assert_int_eq(tl_broker_setup(&b, &o), 0);
	ck_assert(tl_broker_start(&b) == 0);

	idle = connect_as(base, &b, NULL);
	a1 = connect_as(base, &b, "ws-042");
	ck_assert_int_eq(
	    tl_client_call(a1, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "agent"), 5000,
	        NULL),
	    0);
	ck_assert_int_eq(
	    tl_client_call(a1, "agent.register",
	        json_pack("{s:s}", "fqdn", "ws-042.corp.example"), 5000, &res),
	    0);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(res, "keepalive")), 2);
	json_decref(res);
	a2 = connect_as(base, &b, "ws-043");
	ck_assert_int_eq(
	    tl_client_agent_login(a2, "ws-043.corp.example", NULL), 0);
	/* a1 pings every 400 ms, a2 says nothing. */
	end = tl_now_ms() + 9500;
	while (tl_now_ms() < end && !tl_client_closed(a1)) {
		ck_assert_int_eq(
		    tl_client_call(a1, "ping", json_object(), 2000, NULL), 0);
		tl_run_until(base, NULL, NULL, 400);
	}
	ck_assert_msg(!tl_client_closed(a1), "a pinging agent was closed");
	ck_assert_msg(tl_client_closed(a2), "a silent agent stayed");
	ck_assert_msg(tl_client_closed(idle), "no login, still connected");
	ck_assert(tl_broker_wait_audit(&b, "keepalive timeout", 1, 1000));
	ck_assert_int_eq(
	    tl_broker_audit_count(&b, "ws-042.corp.example\",\"reason"), 0);
	ck_assert(tl_broker_wait_log(&b, "no login within 2 s", 1, 1000));
	tl_client_free(idle);
	tl_client_free(a2);
	tl_client_free(a1);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

/* SASL EXTERNAL: alice's client certificate maps to CORP\alice. */
START_TEST(t_helper_external)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *c;
	json_t *res = NULL;
	int rc;

	broker_up(&b, policy_helpdesk, 5);
	c = connect_as(base, &b, "helper-alice");
	ck_assert_int_eq(
	    tl_client_call(c, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "helper"), 5000,
	        &res),
	    0);
	ck_assert_str_eq(json_string_value(json_array_get(
	                     json_object_get(res, "mechanisms"), 1)),
	    "EXTERNAL");
	json_decref(res);
	rc = tl_client_call(c, "auth.start",
	    json_pack("{s:s, s:s}", "mechanism", "EXTERNAL", "initial", ""),
	    10000, &res);
	ck_assert_msg(rc == 0, "EXTERNAL: %d %s", rc, json_dumps(res, 0));
	ck_assert_str_eq(
	    json_string_value(json_object_get(res, "status")), "ok");
	ck_assert_str_eq(
	    json_string_value(json_object_get(res, "account")), "CORP\\alice");
	json_decref(res);
	ck_assert(tl_broker_wait_audit(&b, "\"mech\":\"EXTERNAL\"", 1, 2000));
	tl_client_free(c);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

/* Out of descriptors: accept pauses (no busy loop) and resumes. */
START_TEST(t_emfile_pause)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_broker_opts o;
	struct tl_client *c[64], *late;
	int n = 0, i, fd[64], nfd = 0;
	long cpu0, cpu1;
	struct sockaddr_storage ss;
	int sl;

	memset(&o, 0, sizeof(o));
	o.policy = policy_helpdesk;
	o.nofile = 48;
	ck_assert_int_eq(tl_broker_setup(&b, &o), 0);
	ck_assert(tl_broker_start(&b) == 0);
	ck_assert(tl_broker_wait_log(&b, "descriptor limit 48", 1, 1000));
	/* Fill the broker's descriptor table with TLS clients... */
	for (i = 0; i < 64; i++) {
		c[n] =
		    tl_client_connect(base, b.pki, b.port, NULL, 1500, NULL, 0);
		if (c[n] == NULL)
			break;
		n++;
	}
	ck_assert_msg(n > 10 && n < 48, "%d connections accepted", n);
	/* ...and the backlog with raw ones that stay pending. */
	sl = tl_loopback((struct sockaddr *)&ss, 0, (uint16_t)b.port);
	for (i = 0; i < 8; i++) {
		fd[nfd] = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd[nfd], (struct sockaddr *)&ss, (socklen_t)sl) ==
		    0)
			nfd++;
		else
			close(fd[nfd]);
	}
	ck_assert(tl_broker_wait_log(&b, "pausing accept for 1 s", 1, 3000));
	/* Paused, not spinning: under 300 ms of CPU in 2 s. */
	cpu0 = tl_broker_cpu_ms(&b);
	tl_run_until(base, NULL, NULL, 2000);
	cpu1 = tl_broker_cpu_ms(&b);
	ck_assert_msg(cpu1 - cpu0 < 300,
	    "broker used %ld ms of CPU while "
	    "out of descriptors",
	    cpu1 - cpu0);
	/* Free some: the broker accepts again. */
	for (i = 0; i < nfd; i++)
		close(fd[i]);
	for (i = 0; i < n / 2; i++)
		tl_client_free(c[i]);
	tl_run_until(base, NULL, NULL, 1500);
	late = tl_client_connect(base, b.pki, b.port, NULL, 4000, NULL, 0);
	ck_assert_msg(late != NULL, "not accepting after descriptors freed");
	ck_assert_int_eq(
	    tl_client_call(late, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "helper"), 5000,
	        NULL),
	    0);
	tl_client_free(late);
	for (i = n / 2; i < n; i++)
		tl_client_free(c[i]);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

/* max_connections: the next one waits in the backlog until one closes. */
START_TEST(t_max_connections)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_broker_opts o;
	struct tl_client *c[3], *x;

	memset(&o, 0, sizeof(o));
	o.policy = policy_helpdesk;
	o.extra = "[broker]\nmax_connections = 3\n";
	ck_assert_int_eq(tl_broker_setup(&b, &o), 0);
	ck_assert(tl_broker_start(&b) == 0);
	for (int i = 0; i < 3; i++)
		c[i] = connect_as(base, &b, NULL);
	x = tl_client_connect(base, b.pki, b.port, NULL, 1000, NULL, 0);
	ck_assert_msg(x == NULL, "a 4th connection was served");
	ck_assert(
	    tl_broker_wait_log(&b, "max_connections (3) reached", 1, 1000));
	tl_client_free(c[0]);
	x = tl_client_connect(base, b.pki, b.port, NULL, 3000, NULL, 0);
	ck_assert_msg(x != NULL, "not accepting after a close");
	tl_client_free(x);
	tl_client_free(c[1]);
	tl_client_free(c[2]);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

/* Connections not logged in yet are capped per source address: one host
 * cannot hold every slot, others still get in, and closing (or logging
 * in) frees the slots. */
START_TEST(t_pending_per_address)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_broker_opts o;
	struct tl_client *c[4], *x = NULL, *a, *h;
	const char *line = "127.0.0.1: 4 connections not logged in yet";
	char why[256] = "";
	uint64_t t0;
	int i;

	ck_assert(have_slapd);
	memset(&o, 0, sizeof(o));
	o.slapd = &slapd;
	o.policy = policy_helpdesk;
	o.require_computer_object = 1;
	o.extra = "[broker]\nmax_pending_per_address = 4\n";
	ck_assert_int_eq(tl_broker_setup(&b, &o), 0);
	ck_assert(tl_broker_start(&b) == 0);
	for (i = 0; i < 4; i++)
		c[i] = connect_as(base, &b, NULL);
	/* The fifth is closed at accept: no TLS, no waiting. */
	t0 = tl_now_ms();
	x = tl_client_connect(
	    base, b.pki, b.port, NULL, 5000, why, sizeof(why));
	ck_assert_msg(x == NULL, "a 5th pending connection was served");
	ck_assert_msg(tl_now_ms() - t0 < 2000, "refused after %llu ms",
	    (unsigned long long)(tl_now_ms() - t0));
	ck_assert(tl_broker_wait_log(&b, line, 1, 2000));
	/* Refused again, but logged once a minute at most. */
	x = tl_client_connect(base, b.pki, b.port, NULL, 5000, NULL, 0);
	ck_assert(x == NULL);
	tl_run_until(base, NULL, NULL, 200);
	ck_assert_int_eq(tl_broker_log_count(&b, "max_pending_per_address"), 1);
	/* Another address is not affected. */
	a = tl_client_connect_from(
	    base, b.pki, b.port, "ws-042", "127.0.0.2", 5000, why, sizeof(why));
	ck_assert_msg(a != NULL, "from 127.0.0.2: %s", why);
	ck_assert_int_eq(
	    tl_client_agent_login(a, "ws-042.corp.example", NULL), 0);
	/* Two pending ones close: 127.0.0.1 gets in again, and a helper
	 * that logged in no longer counts. */
	tl_client_free(c[0]);
	tl_client_free(c[1]);
	h = NULL;
	for (i = 0; i < 30 && h == NULL; i++) {
		tl_run_until(base, NULL, NULL, 100);
		h = tl_client_connect(base, b.pki, b.port, NULL, 3000, NULL, 0);
	}
	ck_assert_msg(h != NULL, "127.0.0.1 still refused after closes");
	ck_assert_int_eq(tl_client_helper_login(h, "alice", "alice-pw"), 0);
	c[0] = connect_as(base, &b, NULL);
	c[1] = connect_as(base, &b, NULL);
	/* c[0..3] pending again (4): the next is refused. */
	x = tl_client_connect(base, b.pki, b.port, NULL, 3000, NULL, 0);
	ck_assert_msg(x == NULL, "over the cap after a helper login");
	tl_client_free(h);
	tl_client_free(a);
	for (i = 0; i < 4; i++)
		tl_client_free(c[i]);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

/* The fake agent accepts every prompt and acknowledges ticket.connect. */
static json_t *
agent_accepts(
    struct tl_client *c, const char *method, json_t *params, void *arg)
{
	int *seen = arg;

	if (strcmp(method, "novice.prompt") == 0) {
		(*seen)++;
		return json_pack("{s:s, s:s, s:s}", "answer", "accept", "user",
		    "CORP\\bob", "session", "1");
	}
	if (strcmp(method, "ticket.connect") == 0) {
		(*seen)++;
		return json_object();
	}
	return NULL;
}

/* The core wired to the offer engine: one offer through the table. */
START_TEST(t_offer_through_core)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *ag, *alice;
	json_t *res = NULL, *up;
	int rc, seen = 0;
	const char *tid;
	char tidbuf[64];

	broker_up(&b, policy_helpdesk, 5);
	ag = connect_as(base, &b, "ws-042");
	tl_client_on_request(ag, agent_accepts, &seen);
	ck_assert_int_eq(
	    tl_client_agent_login(ag, "ws-042.corp.example", "CORP\\bob"), 0);
	alice = connect_as(base, &b, NULL);
	ck_assert_int_eq(tl_client_helper_login(alice, "alice", "alice-pw"), 0);
	rc = tl_client_call(alice, "offer.create",
	    json_pack("{s:s, s:s, s:[s]}", "machine", "WS-042.corp.example",
	        "mode", "view", "addresses", "127.0.0.1:40000"),
	    10000, &res);
	ck_assert_msg(rc == 0, "offer.create: %d %s", rc, tl_error_reason(res));
	tid = json_string_value(json_object_get(res, "ticket"));
	ck_assert_ptr_nonnull(tid);
	snprintf(tidbuf, sizeof(tidbuf), "%s", tid);
	ck_assert_ptr_nonnull(json_object_get(res, "psk"));
	json_decref(res);
	/* The agent is prompted (from inside the loop) and accepts. */
	up = NULL;
	for (int i = 0; i < 5 && up == NULL; i++) {
		json_t *u =
		    tl_client_wait_request(alice, "offer.update", 3000, NULL);
		if (u != NULL &&
		    strcmp(json_string_value(json_object_get(u, "state")),
		        "accepted") == 0)
			up = u;
		else
			json_decref(u);
	}
	ck_assert_msg(up != NULL, "no offer.update accepted");
	ck_assert_str_eq(
	    json_string_value(json_object_get(up, "ticket")), tidbuf);
	json_decref(up);
	ck_assert_int_ge(seen, 1);
	/* Both see the ticket; never its secret. */
	ck_assert_int_eq(
	    tl_client_call(ag, "ticket.list", json_object(), 5000, &res), 0);
	ck_assert_int_eq(json_array_size(json_object_get(res, "tickets")), 1);
	{
		char *text = json_dumps(res, 0);
		ck_assert_ptr_null(strstr(text, "psk"));
		ck_assert_ptr_null(strstr(text, "secret"));
		free(text);
	}
	json_decref(res);
	/* An agent that is not online: machine_offline. */
	ck_assert_int_eq(
	    tl_client_call(alice, "offer.create",
	        json_pack("{s:s, s:s, s:[s]}", "machine", "ws-043.corp.example",
	            "mode", "view", "addresses", "127.0.0.1:40000"),
	        10000, &res),
	    RP_ERR_MACHINE_OFFLINE);
	json_decref(res);
	ck_assert(tl_broker_wait_audit(&b, "\"ticket_created\"", 1, 2000));
	tl_client_free(alice);
	tl_client_free(ag);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

/* The directory goes away: agents (with require_computer_object) and
 * helpers get directory_unavailable, promptly; when it is back, both work
 * again. (Own tcase: it stops the tcase's slapd.) */
START_TEST(t_directory_down)
{
	struct event_base *base = event_base_new();
	struct tl_broker b;
	struct tl_client *ag, *h;
	uint64_t t0;
	int rc;

	broker_up(&b, policy_helpdesk, 5);
	ck_assert_int_eq(tl_slapd_stop(&slapd), 0);
	ag = connect_as(base, &b, "ws-042");
	t0 = tl_now_ms();
	ck_assert_int_eq(
	    tl_client_call(ag, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "agent"), 15000,
	        NULL),
	    RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_msg(tl_now_ms() - t0 < 8000, "took %llu ms",
	    (unsigned long long)(tl_now_ms() - t0));
	h = connect_as(base, &b, NULL);
	rc = tl_client_helper_login(h, "alice", "alice-pw");
	ck_assert_int_eq(rc, RP_ERR_DIRECTORY_UNAVAILABLE);
	/* Not counted as a wrong password. */
	ck_assert_int_eq(tl_broker_audit_count(&b, "\"auth_failed\""), 0);
	tl_client_free(h);
	tl_client_free(ag);

	ck_assert_int_eq(tl_slapd_restart(&slapd), 0);
	/* The directory layer backs off after failures: retry, bounded. */
	t0 = tl_now_ms();
	do {
		ag = connect_as(base, &b, "ws-042");
		rc = tl_client_agent_login(ag, "ws-042.corp.example", NULL);
		tl_client_free(ag);
		if (rc != 0)
			tl_run_until(base, NULL, NULL, 500);
	} while (rc != 0 && tl_now_ms() - t0 < 40000);
	ck_assert_msg(
	    rc == 0, "agent hello after the directory came back: %d", rc);
	h = connect_as(base, &b, NULL);
	ck_assert_int_eq(tl_client_helper_login(h, "alice", "alice-pw"), 0);
	tl_client_free(h);
	tl_broker_destroy(&b);
	event_base_free(base);
}
END_TEST

#ifdef HAVE_SYSTEMD
#include <sys/un.h>

/* sd_notify: READY=1 once listening, STOPPING=1 on SIGTERM. */
START_TEST(t_sd_notify)
{
	struct tl_broker b;
	struct tl_broker_opts o;
	struct sockaddr_un sun;
	char buf[512], all[2048] = "";
	int fd;
	uint64_t end;

	memset(&o, 0, sizeof(o));
	o.policy = policy_helpdesk;
	ck_assert_int_eq(tl_broker_setup(&b, &o), 0);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ck_assert_uint_lt(strlen(b.dir) + 8, sizeof(sun.sun_path));
	memcpy(sun.sun_path, b.dir, strlen(b.dir));
	memcpy(sun.sun_path + strlen(b.dir), "/notify", 8);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	setenv("NOTIFY_SOCKET", sun.sun_path, 1);
	ck_assert(tl_broker_start(&b) == 0);
	unsetenv("NOTIFY_SOCKET");
	ck_assert_int_eq(tl_broker_signal(&b, SIGTERM), 0);
	end = tl_now_ms() + 5000;
	while (tl_now_ms() < end && strstr(all, "STOPPING=1") == NULL) {
		ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
		if (n > 0) {
			buf[n] = '\0';
			strncat(all, buf, sizeof(all) - strlen(all) - 2);
			strcat(all, "|");
		} else
			usleep(20000);
	}
	ck_assert_msg(strstr(all, "READY=1") != NULL, "got: %s", all);
	ck_assert_msg(strstr(all, "STOPPING=1") != NULL, "got: %s", all);
	ck_assert_msg(
	    strstr(all, "READY=1") < strstr(all, "STOPPING=1"), "got: %s", all);
	ck_assert_int_eq(tl_broker_stop(&b, 0, 8000, NULL), 0);
	close(fd);
	tl_broker_destroy(&b);
}
END_TEST
#endif

static Suite *
broker_suite(void)
{
	Suite *s = suite_create("broker");
	TCase *tc = tcase_create("check");
	TCase *tl = tcase_create("live");
	TCase *td;

	tcase_add_unchecked_fixture(tc, slapd_up, slapd_down);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t_check_good);
	tcase_add_test(tc, t_check_config_errors);
	tcase_add_test(tc, t_check_secret_mode);
	tcase_add_test(tc, t_check_policy_error);
	tcase_add_test(tc, t_port_taken);
#ifdef HAVE_SYSTEMD
	tcase_add_test(tc, t_sd_notify);
#endif
	suite_add_tcase(s, tc);

	tcase_add_unchecked_fixture(tl, slapd_up, slapd_down);
	tcase_set_timeout(tl, 90);
	tcase_add_test(tl, t_agent_listed_by_policy);
	tcase_add_test(tl, t_register_wrong_fqdn);
	tcase_add_test(tl, t_identity_refusals);
	tcase_add_test(tl, t_agent_replaced);
	tcase_add_test(tl, t_wrong_password);
	tcase_add_test(tl, t_sighup_policy);
	tcase_add_test(tl, t_sigterm_drains);
	tcase_add_test(tl, t_sigterm_handshakes_in_flight);
	tcase_add_test(tl, t_keepalive_and_login_timeout);
	tcase_add_test(tl, t_helper_external);
	tcase_add_test(tl, t_emfile_pause);
	tcase_add_test(tl, t_max_connections);
	tcase_add_test(tl, t_pending_per_address);
	tcase_add_test(tl, t_offer_through_core);
	suite_add_tcase(s, tl);

	td = tcase_create("directory");
	tcase_add_unchecked_fixture(td, slapd_up, slapd_down);
	tcase_set_timeout(td, 120);
	tcase_add_test(td, t_directory_down);
	suite_add_tcase(s, td);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(broker_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
