/*
 * itest_metrics.c - the operator's view of a real rabrokerd: the metrics
 * and health endpoint (bk_metrics.c) read with a tiny HTTP client, and the
 * control socket (bk_control.c) through the real rabrokerctl program.
 *
 * A real slapd (tests/data/corp.ldif) and real TLS agents and helpers drive
 * the numbers: an agent connects (agents_online 1), alice logs in
 * (helpers_connected 1), a wrong password (auth failure), an offer is
 * declined, another accepted (tickets_open 1), the operator revokes it with
 * `rabrokerctl expire` (audited as ticket_revoked by "operator", the
 * helper and the agent told), dave is forbidden. Separate cases: a
 * non-loopback listen is refused by -n, a taken metrics port does not stop
 * the broker, a failed audit trail and a stopped directory turn /health to
 * 503.
 */
#include <arpa/inet.h>
#include <check.h>
#include <ctype.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "rp_error.h"
#include "rp_log.h"
#include "tl_broker.h"
#include "tl_slapd.h"
#include "tl_util.h"

#define WS42 "ws-042.corp.example"
#define T_WAIT 5000

static struct tl_slapd slapd;
static int slapd_ok;
static struct event_base *base;
static struct tl_broker br;
static int br_ok;
static unsigned mport;
static char sock[700];

static const char *policy =
    "defaults max-ticket=30m prompt-timeout=5s nobody=decline\n"
    "scope workstations ou=\"ou=Workstations,ou=Computers,dc=corp,"
    "dc=example\"\n"
    "deny user \"CORP\\dave\" on all\n"
    "allow control group \"CORP\\helpdesk\" on workstations\n";

/* ---- a tiny HTTP/1.0 client ---------------------------------------------- */

/* GET path from 127.0.0.1:port. Returns the status code (-1 on failure);
 * body gets the body (NUL-terminated, truncated to len). */
static int
http_get(unsigned port, const char *path, char *body, size_t len)
{
	struct sockaddr_in sin;
	char buf[65536], req[256];
	size_t used = 0;
	int fd, code = -1;
	char *p;

	body[0] = '\0';
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		close(fd);
		return -1;
	}
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n",
	    path);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return -1;
	}
	for (int i = 0; i < 100 && used < sizeof(buf) - 1; i++) {
		struct pollfd pfd = {fd, POLLIN, 0};
		ssize_t n;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if ((n = read(fd, buf + used, sizeof(buf) - 1 - used)) <= 0)
			break;
		used += (size_t)n;
	}
	close(fd);
	buf[used] = '\0';
	if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
		return -1;
	if ((p = strstr(buf, "\r\n\r\n")) != NULL)
		snprintf(body, len, "%s", p + 4);
	return code;
}

/* The value of the sample line starting with `name` ("rabroker_x" or
 * "rabroker_x{outcome=\"declined\"}"); -1 if absent. */
static long long
metric(const char *name)
{
	static char body[65536];
	size_t nl = strlen(name);
	char *l;

	if (http_get(mport, "/metrics", body, sizeof(body)) != 200)
		return -2;
	for (l = body; l != NULL && *l; l = strchr(l, '\n'), l = l ? l + 1 : l)
		if (strncmp(l, name, nl) == 0 && l[nl] == ' ')
			return strtoll(l + nl + 1, NULL, 10);
	return -1;
}

/* Checks /metrics against the Prometheus text format 0.0.4, the parts
 * we use: "# HELP name text", "# TYPE name type" before the family's
 * samples, samples "name[{label="value",...}] value" with a float value,
 * a final newline; for a histogram, cumulative buckets ending in +Inf
 * equal to _count, and a _sum. NULL if fine, else what is wrong (static). */
static const char *
check_exposition(char *body)
{
	static char why[600];
	char family[128] = "", type[16] = "", *line, *save = NULL;
	double last_bucket = -1, inf_bucket = -1;
	int have_sum = 0, have_count = 0;
	size_t len = strlen(body);

	if (len == 0 || body[len - 1] != '\n')
		return "empty or no final newline";
	for (line = strtok_r(body, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char name[128], *p = line, *end;
		size_t n = 0;
		double v;

		if (!strncmp(line, "# HELP ", 7))
			continue;
		if (!strncmp(line, "# TYPE ", 7)) {
			if (!strcmp(type, "histogram") &&
			    (!have_sum || !have_count || inf_bucket < 0)) {
				snprintf(why, sizeof(why),
				    "histogram %s: no _sum, _count or +Inf",
				    family);
				return why;
			}
			if (sscanf(line + 7, "%127s %15s", family, type) != 2 ||
			    (strcmp(type, "counter") && strcmp(type, "gauge") &&
			        strcmp(type, "histogram") &&
			        strcmp(type, "summary") &&
			        strcmp(type, "untyped"))) {
				snprintf(
				    why, sizeof(why), "bad TYPE: %s", line);
				return why;
			}
			last_bucket = inf_bucket = -1;
			have_sum = have_count = 0;
			continue;
		}
		if (line[0] == '#')
			continue; /* a comment */
		while ((isalnum((unsigned char)*p) || *p == '_' || *p == ':') &&
		    n < sizeof(name) - 1)
			name[n++] = *p++;
		name[n] = '\0';
		if (n == 0 || isdigit((unsigned char)name[0])) {
			snprintf(why, sizeof(why), "bad metric name: %s", line);
			return why;
		}
		if (strncmp(name, family, strlen(family)) != 0 ||
		    (name[strlen(family)] != '\0' &&
		        strcmp(type, "histogram") != 0)) {
			snprintf(
			    why, sizeof(why), "sample without TYPE: %s", line);
			return why;
		}
		if (*p == '{') {
			/* label="value" pairs, values with \\ \" \n escapes */
			p++;
			while (*p != '}') {
				if (!isalpha((unsigned char)*p) && *p != '_')
					break;
				while (isalnum((unsigned char)*p) || *p == '_')
					p++;
				if (p[0] != '=' || p[1] != '"')
					break;
				for (p += 2; *p != '"' && *p != '\0'; p++)
					if (*p == '\\' && p[1] != '\0')
						p++;
				if (*p != '"')
					break;
				p++;
				if (*p == ',')
					p++;
			}
			if (*p != '}') {
				snprintf(
				    why, sizeof(why), "bad labels: %s", line);
				return why;
			}
			p++;
		}
		if (*p != ' ') {
			snprintf(why, sizeof(why), "no value: %s", line);
			return why;
		}
		v = strtod(p + 1, &end);
		if (end == p + 1 || (*end != '\0' && *end != ' ')) {
			snprintf(why, sizeof(why), "bad value: %s", line);
			return why;
		}
		if (strcmp(type, "histogram") != 0)
			continue;
		if (!strcmp(name + strlen(family), "_bucket")) {
			if (v < last_bucket) {
				snprintf(why, sizeof(why),
				    "buckets not cumulative: %s", line);
				return why;
			}
			last_bucket = v;
			if (strstr(line, "le=\"+Inf\"") != NULL)
				inf_bucket = v;
		} else if (!strcmp(name + strlen(family), "_sum"))
			have_sum = 1;
		else if (!strcmp(name + strlen(family), "_count")) {
			have_count = 1;
			if (v != inf_bucket) {
				snprintf(why, sizeof(why), "_count != +Inf: %s",
				    line);
				return why;
			}
		} else {
			snprintf(
			    why, sizeof(why), "histogram sample: %s", line);
			return why;
		}
	}
	if (!strcmp(type, "histogram") &&
	    (!have_sum || !have_count || inf_bucket < 0))
		return "last histogram: no _sum, _count or +Inf";
	return NULL;
}

/* The directory latency histogram: _sum in seconds, > 0 once there were
 * operations, and within what the buckets allow (each operation in
 * bucket (a, b] took more than a and at most b seconds). */
static void
check_dir_histogram(void)
{
	static const double le[12] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
	    0.05, 0.1, 0.2, 0.5, 1, -1};
	static const char *const les[12] = {"0.0005", "0.001", "0.002", "0.005",
	    "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "+Inf"};
	static char body[65536];
	const char *name = "rabroker_directory_latency_seconds";
	double lo = 0, hi = 0, sum = -1, prev = 0, count = -1;
	const char *err;
	char want[160], *l;

	ck_assert_int_eq(http_get(mport, "/metrics", body, sizeof(body)), 200);
	for (int i = 0; i < 12; i++) {
		double cum;
		snprintf(want, sizeof(want), "\n%s_bucket{le=\"%s\"} ", name,
		    les[i]);
		l = strstr(body, want);
		ck_assert_msg(l != NULL, "no %s", want + 1);
		cum = strtod(l + strlen(want), NULL);
		if (i > 0)
			lo += (cum - prev) * le[i - 1];
		if (le[i] > 0)
			hi += (cum - prev) * le[i];
		else if (cum > prev)
			hi = 1e9; /* something slower than 1 s: no bound */
		prev = cum;
	}
	snprintf(want, sizeof(want), "\n%s_sum ", name);
	ck_assert_msg((l = strstr(body, want)) != NULL, "no %s_sum", name);
	sum = strtod(l + strlen(want), NULL);
	snprintf(want, sizeof(want), "\n%s_count ", name);
	ck_assert_msg((l = strstr(body, want)) != NULL, "no %s_count", name);
	count = strtod(l + strlen(want), NULL);
	ck_assert_msg(
	    count >= 1 && count == prev, "count %g, +Inf %g", count, prev);
	ck_assert_msg(
	    sum > 0, "%s_sum %g after %g operations", name, sum, count);
	/* 1 µs of slack for the microsecond rounding of each operation */
	ck_assert_msg(sum >= lo && sum <= hi + count * 1e-6,
	    "%s_sum %g outside [%g, %g] given the buckets", name, sum, lo, hi);
	err = check_exposition(body);
	ck_assert_msg(err == NULL, "/metrics: %s", err ? err : "");
}

/* Waits until metric(name) == want (bounded). */
static int
metric_is(const char *name, long long want)
{
	for (int i = 0; i < 50; i++) {
		if (metric(name) == want)
			return 1;
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(100000);
	}
	fprintf(stderr, "%s = %lld, expected %lld\n", name, metric(name), want);
	return 0;
}

/* ---- rabrokerctl ---------------------------------------------------------- */

/* Runs rabrokerctl with args (NULL-terminated); out gets stdout+stderr.
 * Returns its exit status or -1. */
static int
ctl(char *out, size_t len, ...)
{
	const char *argv[16];
	char bin[600];
	int pfd[2], st, n = 0;
	size_t used = 0;
	va_list ap;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/broker/rabrokerctl", RABROKER_BUILD_DIR);
	argv[n++] = bin;
	va_start(ap, len);
	while (n < 15 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	if (pipe(pfd) < 0)
		return -1;
	if ((pid = fork()) == 0) {
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		close(pfd[0]);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		ssize_t r = read(pfd[0], out + used, len - 1 - used);
		if (r <= 0 || (used += (size_t)r) >= len - 1)
			break;
	}
	out[used] = '\0';
	close(pfd[0]);
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* ---- fixtures ------------------------------------------------------------ */

/* Replaces the first `from` in the broker's configuration by `to`, or
 * appends `to` when `from` is absent. */
static void
conf_replace(struct tl_broker *b, const char *from, const char *to)
{
	char conf[16384], *p;
	FILE *f = fopen(b->conf, "r");
	size_t n;

	ck_assert_ptr_nonnull(f);
	n = fread(conf, 1, sizeof(conf) - 1, f);
	fclose(f);
	conf[n] = '\0';
	p = strstr(conf, from);
	f = fopen(b->conf, "w");
	ck_assert_ptr_nonnull(f);
	if (p != NULL)
		fprintf(
		    f, "%.*s%s%s", (int)(p - conf), conf, to, p + strlen(from));
	else
		fprintf(f, "%s\n%s", conf, to);
	fclose(f);
}

/* Points [metrics] listen at port (tl_broker writes it empty). */
static void
enable_metrics(struct tl_broker *b, unsigned port)
{
	char to[96];

	snprintf(to, sizeof(to), "\n[metrics]\nlisten = 127.0.0.1:%u\n", port);
	conf_replace(b, "\n[metrics]\nlisten =\n", to);
}

/* Starts a broker; audit_path replaces the trail's path when not NULL. */
static void
broker_up(const char *audit_path, int with_metrics)
{
	struct tl_broker_opts o;
	char from[700], to[700];

	memset(&o, 0, sizeof(o));
	o.slapd = &slapd;
	o.policy = policy;
	o.require_computer_object = 1;
	ck_assert_int_eq(tl_broker_setup(&br, &o), 0);
	mport = tl_free_port();
	if (with_metrics)
		enable_metrics(&br, mport);
	if (audit_path != NULL) {
		snprintf(from, sizeof(from), "path = %s\n", br.audit);
		snprintf(to, sizeof(to), "path = %s\n", audit_path);
		conf_replace(&br, from, to);
	}
	snprintf(sock, sizeof(sock), "%s/control.sock", br.dir);
	ck_assert_msg(
	    tl_broker_start(&br) == 0, "rabrokerd did not start: %s", br.log);
	br_ok = 1;
}

static void
setup(void)
{
	ck_assert_msg(slapd_ok, "slapd did not start (see stderr)");
	log_init("itest_metrics", LOG_LVL_WARN, 0);
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	br_ok = 0;
}

static void
teardown(void)
{
	if (br_ok)
		tl_broker_destroy(&br);
	event_base_free(base);
}

static struct tl_client *
connect_as(const char *cert)
{
	char why[256] = "";
	struct tl_client *c = tl_client_connect(
	    base, br.pki, br.port, cert, T_WAIT, why, sizeof(why));

	ck_assert_msg(c != NULL, "connect: %s", why);
	return c;
}

static const char *
jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "";
}

/* offer.create for ws-042; returns the ticket id in tid. */
static int
offer(struct tl_client *h, char *tid)
{
	json_t *res = NULL;
	int rc = tl_client_call(h, "offer.create",
	    json_pack("{s:s, s:s, s:[s]}", "machine", WS42, "mode", "view",
	        "addresses", "127.0.0.1:40123"),
	    T_WAIT, &res);

	if (rc == 0)
		snprintf(tid, 33, "%s", jstr(res, "ticket"));
	json_decref(res);
	return rc;
}

static void
answer_prompt(struct tl_client *a, const char *answer)
{
	json_t *id = NULL;
	json_t *p = tl_client_wait_request(a, "novice.prompt", T_WAIT, &id);

	ck_assert_ptr_nonnull(p);
	json_decref(p);
	ck_assert_int_eq(tl_client_reply(a, id,
	                     json_pack("{s:s, s:s, s:s}", "answer", answer,
	                         "user", "CORP\\bob", "session", "1")),
	    0);
	json_decref(id); /* rp_conn_reply does not take the id */
}

/* Waits for an offer.update of tid in `state` (skipping others). */
static int
wait_update(struct tl_client *h, const char *tid, const char *state)
{
	for (int i = 0; i < 10; i++) {
		json_t *p =
		    tl_client_wait_request(h, "offer.update", T_WAIT, NULL);
		int ok;

		if (p == NULL)
			return 0;
		ok = strcmp(jstr(p, "ticket"), tid) == 0 &&
		    strcmp(jstr(p, "state"), state) == 0;
		json_decref(p);
		if (ok)
			return 1;
	}
	return 0;
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(t_metrics_and_control)
{
	struct tl_client *a, *h, *bad, *d;
	char body[8192], out[16384], tid[33], tid2[33], num[32];
	json_t *p, *res = NULL;
	long lines;
	int rc;

	broker_up(NULL, 1);

	/* Health before anything happened: the directory is not used yet. */
	ck_assert_int_eq(http_get(mport, "/health", body, sizeof(body)), 200);
	ck_assert_msg(strstr(body, "\"status\":\"ok\"") &&
	        strstr(body, "\"audit\":\"ok\""),
	    "health: %s", body);
	ck_assert_int_eq(http_get(mport, "/nope", body, sizeof(body)), 404);
	ck_assert_int_eq(metric("rabroker_agents_online"), 0);
	ck_assert_int_eq(metric("rabroker_helpers_connected"), 0);
	ck_assert_int_ge(metric("process_start_time_seconds"), 1700000000);
	ck_assert_int_eq(
	    metric("rabroker_offers_total{outcome=\"accepted\"}"), 0);

	/* An agent comes online: the gauge and the control socket see it. */
	a = connect_as("ws-042");
	ck_assert_int_eq(tl_client_agent_login(a, WS42, "CORP\\bob"), 0);
	ck_assert(metric_is("rabroker_agents_online", 1));
	ck_assert_int_eq(http_get(mport, "/health", body, sizeof(body)), 200);
	ck_assert_msg(strstr(body, "\"directory\":\"up\""), "health: %s", body);
	ck_assert_int_ge(
	    metric("rabroker_directory_latency_seconds_bucket{le=\"+Inf\"}"),
	    1);
	check_dir_histogram();
	rc = ctl(out, sizeof(out), "-s", sock, "agents", NULL);
	ck_assert_msg(rc == 0, "rabrokerctl agents: %d %s", rc, out);
	ck_assert_msg(strstr(out, WS42) && strstr(out, "CORP\\bob") &&
	        strstr(out, "1 machine(s) online"),
	    "agents: %s", out);
	rc = ctl(out, sizeof(out), "-j", "status", "-s", sock, NULL);
	ck_assert_msg(rc == 0 && strstr(out, "\"agents\":1") &&
	        strstr(out, "\"directory\":\"up\""),
	    "status: %s", out);

	/* A wrong password, then alice. */
	bad = connect_as(NULL);
	ck_assert_int_ne(tl_client_helper_login(bad, "bob", "wrong"), 0);
	tl_client_free(bad);
	h = connect_as(NULL);
	ck_assert_int_eq(tl_client_helper_login(h, "alice", "alice-pw"), 0);
	ck_assert(metric_is("rabroker_helpers_connected", 1));
	/* A wrong password is "auth_failed" (the SASL layer does not tell
	 * it from an unknown user, on purpose). */
	ck_assert(metric_is(
	    "rabroker_auth_failures_total{reason=\"auth_failed\"}", 1));
	ck_assert_int_eq(
	    metric("rabroker_auth_failures_total{reason=\"other\"}"), 0);

	/* Declined, then accepted. */
	ck_assert_int_eq(offer(h, tid), 0);
	answer_prompt(a, "decline");
	ck_assert(wait_update(h, tid, "declined"));
	ck_assert(metric_is("rabroker_offers_total{outcome=\"declined\"}", 1));
	ck_assert_int_eq(offer(h, tid2), 0);
	answer_prompt(a, "accept");
	ck_assert(wait_update(h, tid2, "accepted"));
	ck_assert(metric_is("rabroker_offers_total{outcome=\"accepted\"}", 1));
	ck_assert(metric_is("rabroker_tickets_open", 1));

	/* The operator lists it (never its secret) and revokes it. */
	rc = ctl(out, sizeof(out), "-s", sock, "-j", "tickets", NULL);
	ck_assert_msg(rc == 0 && strstr(out, tid2) &&
	        strstr(out, "\"state\":\"accepted\"") && !strstr(out, "psk") &&
	        !strstr(out, "secret"),
	    "tickets: %s", out);
	rc = ctl(out, sizeof(out), "-s", sock, "expire", tid2, NULL);
	ck_assert_msg(
	    rc == 0 && strstr(out, "revoked"), "expire: %d %s", rc, out);
	ck_assert(wait_update(h, tid2, "revoked"));
	p = tl_client_wait_request(a, "ticket.revoked", T_WAIT, NULL);
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(jstr(p, "ticket"), tid2);
	json_decref(p);
	ck_assert(
	    tl_broker_wait_audit(&br, "\"user\":\"operator\"", 1, T_WAIT));
	ck_assert_int_eq(
	    tl_broker_audit_count(&br, "\"event\":\"ticket_revoked\""), 1);
	ck_assert(metric_is("rabroker_offers_total{outcome=\"revoked\"}", 1));
	ck_assert(metric_is("rabroker_tickets_open", 0));
	rc = ctl(out, sizeof(out), "-s", sock, "expire", tid2, NULL);
	ck_assert_msg(
	    rc == 1 && strstr(out, "not_found"), "expire again: %s", out);
	rc = ctl(out, sizeof(out), "-s", sock, "expire", "nonsense", NULL);
	ck_assert_msg(
	    rc == 1 && strstr(out, "invalid_params"), "bad id: %s", out);

	/* Policy says no. */
	d = connect_as(NULL);
	ck_assert_int_eq(tl_client_helper_login(d, "dave", "dave-pw"), 0);
	ck_assert_int_ne(offer(d, tid), 0);
	ck_assert(metric_is("rabroker_offers_total{outcome=\"forbidden\"}", 1));
	tl_client_free(d);

	/* Every audit line written is counted. */
	lines = tl_broker_audit_count(&br, "\"seq\":");
	snprintf(num, sizeof(num), "%ld", lines);
	ck_assert_msg(metric_is("rabroker_audit_lines_total", lines),
	    "audit lines %s", num);

	/* The agent leaves. */
	tl_client_free(a);
	ck_assert(metric_is("rabroker_agents_online", 0));
	tl_client_free(h);
	ck_assert(metric_is("rabroker_helpers_connected", 0));
	(void)res;
}
END_TEST

/*
 * The operator ends a connected session whose machine has gone offline
 * (rabrokerctl expire works whatever the agent's state): the helper is
 * told, the ticket is no longer open anywhere, the trail has the revocation
 * and the session's end and still verifies; the agent, back, cannot use it.
 */
START_TEST(t_expire_offline)
{
	struct tl_client *a, *h;
	char out[16384], tid[33], path[700];
	json_t *p, *id = NULL, *res = NULL;
	int rc;

	broker_up(NULL, 0);
	a = connect_as("ws-042");
	ck_assert_int_eq(tl_client_agent_login(a, WS42, "CORP\\bob"), 0);
	h = connect_as(NULL);
	ck_assert_int_eq(tl_client_helper_login(h, "alice", "alice-pw"), 0);
	ck_assert_int_eq(offer(h, tid), 0);
	answer_prompt(a, "accept");
	ck_assert(wait_update(h, tid, "accepted"));
	p = tl_client_wait_request(a, "ticket.connect", T_WAIT, &id);
	ck_assert_ptr_nonnull(p);
	json_decref(p);
	ck_assert_int_eq(tl_client_reply(a, id, json_object()), 0);
	json_decref(id);
	ck_assert_int_eq(tl_client_call(a, "session.event",
	                     json_pack("{s:s, s:s, s:s}", "ticket", tid,
	                         "event", "connected", "via", "direct"),
	                     T_WAIT, NULL),
	    0);
	ck_assert(wait_update(h, tid, "connected"));

	/* The machine goes offline; the session is still open. */
	tl_client_free(a);
	ck_assert(tl_broker_wait_audit(
	    &br, "\"event\":\"agent_offline\"", 1, T_WAIT));
	rc = ctl(out, sizeof(out), "-s", sock, "-j", "tickets", NULL);
	ck_assert_msg(rc == 0 && strstr(out, tid) &&
	        strstr(out, "\"state\":\"connected\""),
	    "tickets: %s", out);

	rc = ctl(out, sizeof(out), "-s", sock, "expire", tid, NULL);
	ck_assert_msg(
	    rc == 0 && strstr(out, "revoked"), "expire: %d %s", rc, out);
	p = tl_client_wait_request(h, "offer.update", T_WAIT, NULL);
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(jstr(p, "ticket"), tid);
	ck_assert_str_eq(jstr(p, "state"), "revoked");
	ck_assert_str_eq(jstr(p, "reason"), "revoked");
	ck_assert_str_eq(jstr(p, "user"), "operator");
	json_decref(p);
	rc = ctl(out, sizeof(out), "-s", sock, "-j", "tickets", NULL);
	ck_assert_msg(rc == 0 && !strstr(out, tid), "tickets: %s", out);
	rc = ctl(out, sizeof(out), "-s", sock, "expire", tid, NULL);
	ck_assert_msg(
	    rc == 1 && strstr(out, "not_found"), "expire again: %s", out);
	ck_assert_int_eq(tl_client_call(h, "offer.cancel",
	                     json_pack("{s:s}", "ticket", tid), T_WAIT, &res),
	    RP_ERR_NOT_FOUND);
	json_decref(res);

	/* The trail: who, why, the state it had, the session's end. */
	ck_assert_int_eq(
	    tl_broker_audit_count(&br, "\"event\":\"ticket_revoked\""), 1);
	ck_assert_int_eq(tl_broker_audit_count(&br,
	                     "\"user\":\"operator\",\"state\":\"connected\","
	                     "\"reason\":\"operator\""),
	    1);
	/* and which local account ran rabrokerctl (SO_PEERCRED) */
	snprintf(path, sizeof(path), "\"uid\":%ld,\"user\":\"operator\"",
	    (long)getuid());
	ck_assert_int_eq(tl_broker_audit_count(&br, path), 1);
	ck_assert_int_eq(tl_broker_audit_count(&br, "\"reason\":\"revoked\""),
	    1); /* session_disconnected */
	snprintf(path, sizeof(path), "%s", br.audit);
	rc = ctl(out, sizeof(out), "verify-audit", path, NULL);
	ck_assert_msg(rc == 0 && strstr(out, "ok:"), "verify-audit: %s", out);

	/* The agent comes back naming the tickets it holds (the revoked one
	 * and one this broker never issued): it is told both are closed, it
	 * gets no ticket.connect, and the ticket is dead. */
	a = connect_as("ws-042");
	ck_assert_int_eq(
	    tl_client_call(a, "hello",
	        json_pack("{s:i, s:s}", "version", 1, "role", "agent"), T_WAIT,
	        NULL),
	    0);
	ck_assert_int_eq(tl_client_call(a, "agent.register",
	                     json_pack("{s:s, s:[s], s:[s, s]}", "fqdn", WS42,
	                         "addresses", "127.0.0.1", "tickets", tid,
	                         "00000000000000000000000000000001"),
	                     T_WAIT, NULL),
	    0);
	for (int i = 0; i < 2; i++) {
		p = tl_client_wait_request(a, "ticket.revoked", T_WAIT, NULL);
		ck_assert_ptr_nonnull(p);
		ck_assert_str_eq(jstr(p, "ticket"),
		    i == 0 ? tid : "00000000000000000000000000000001");
		ck_assert_str_eq(jstr(p, "reason"), "closed");
		json_decref(p);
	}
	ck_assert_ptr_null(
	    tl_client_wait_request(a, "ticket.connect", 300, NULL));
	ck_assert_int_eq(
	    tl_client_call(a, "session.event",
	        json_pack("{s:s, s:s}", "ticket", tid, "event", "connected"),
	        T_WAIT, &res),
	    RP_ERR_TICKET_EXPIRED);
	json_decref(res);
	tl_client_free(a);
	tl_client_free(h);
}
END_TEST

/* The agent goes away while its user is being asked: "offline", not
 * "declined". Too many failed logins: "rate_limited". */
START_TEST(t_offline_and_rate_limited)
{
	struct tl_client *a, *h, *bad;
	json_t *p;
	char tid[33];
	int i;

	broker_up(NULL, 1);
	a = connect_as("ws-042");
	ck_assert_int_eq(tl_client_agent_login(a, WS42, "CORP\\bob"), 0);
	h = connect_as(NULL);
	ck_assert_int_eq(tl_client_helper_login(h, "alice", "alice-pw"), 0);
	ck_assert_int_eq(offer(h, tid), 0);
	p = tl_client_wait_request(a, "novice.prompt", T_WAIT, NULL);
	ck_assert_ptr_nonnull(p);
	json_decref(p);
	tl_client_free(a);
	ck_assert(wait_update(h, tid, "declined"));
	ck_assert(metric_is("rabroker_offers_total{outcome=\"offline\"}", 1));
	ck_assert_int_eq(
	    metric("rabroker_offers_total{outcome=\"declined\"}"), 0);
	/* Now the machine is not online at all: refused, counted too. */
	ck_assert_int_ne(offer(h, tid), 0);
	ck_assert(metric_is("rabroker_offers_total{outcome=\"offline\"}", 2));
	tl_client_free(h);

	/* max_failures = 5 by default: the sixth attempt is refused. */
	for (i = 0; i < 6; i++) {
		bad = connect_as(NULL);
		ck_assert_int_ne(
		    tl_client_helper_login(bad, "bob", "wrong"), 0);
		tl_client_free(bad);
	}
	ck_assert(metric_is(
	    "rabroker_auth_failures_total{reason=\"auth_failed\"}", 5));
	ck_assert(metric_is(
	    "rabroker_auth_failures_total{reason=\"rate_limited\"}", 1));
}
END_TEST

START_TEST(t_ctl_errors)
{
	char out[4096];
	int rc;

	broker_up(NULL, 0);
	/* Metrics off: nothing listens; the control socket still works. */
	ck_assert_int_eq(http_get(mport, "/health", out, sizeof(out)), -1);
	ck_assert(tl_broker_log_count(&br, "metrics: off") >= 1);
	rc = ctl(
	    out, sizeof(out), "-s", "/nonexistent/ctl.sock", "status", NULL);
	ck_assert_msg(rc == 2 && strstr(out, "cannot connect"), "%s", out);
	rc = ctl(out, sizeof(out), "frobnicate", NULL);
	ck_assert_int_eq(rc, 2);
	rc = ctl(out, sizeof(out), "-s", sock, "status", NULL);
	ck_assert_msg(rc == 0 && strstr(out, "agents") &&
	        strstr(out, "audit          ok"),
	    "%s", out);
	/* check-config is rabrokerd -n. */
	rc = ctl(out, sizeof(out), "check-config", "-f", br.conf, NULL);
	ck_assert_msg(rc == 0 && strstr(out, "configuration OK"), "%s", out);
	rc = ctl(
	    out, sizeof(out), "check-config", "-f", "/nonexistent.conf", NULL);
	ck_assert_msg(rc == 1 && strstr(out, "/nonexistent.conf"), "%s", out);
}
END_TEST

/* -n refuses a non-loopback metrics address unless allow_remote. */
START_TEST(t_listen_checks)
{
	char out[4096];
	const char *args[] = {"-n", "-f", br.conf, NULL};
	int rc;

	broker_up(NULL, 0);
	tl_broker_stop(&br, SIGTERM, 5000, NULL);
	enable_metrics(&br, 9464);
	conf_replace(&br, "listen = 127.0.0.1:9464", "listen = 0.0.0.0:9464");
	rc = tl_broker_run(args, out, sizeof(out), 10000);
	ck_assert_msg(
	    rc == 1 && strstr(out, "not a loopback address"), "%s", out);
	conf_replace(&br, "listen = 0.0.0.0:9464",
	    "listen = 0.0.0.0:9464\nallow_remote = yes");
	rc = tl_broker_run(args, out, sizeof(out), 10000);
	ck_assert_msg(rc == 0 && strstr(out, "configuration OK"), "%s", out);
}
END_TEST

/* The metrics port is taken: the broker starts anyway and says so. */
START_TEST(t_port_taken)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	char out[4096];
	unsigned port;

	ck_assert_int_ge(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 1), 0);
	{
		socklen_t sl = sizeof(sin);
		getsockname(fd, (struct sockaddr *)&sin, &sl);
		port = ntohs(sin.sin_port);
	}
	{
		struct tl_broker_opts o;

		memset(&o, 0, sizeof(o));
		o.slapd = &slapd;
		o.policy = policy;
		ck_assert_int_eq(tl_broker_setup(&br, &o), 0);
		enable_metrics(&br, port);
		snprintf(sock, sizeof(sock), "%s/control.sock", br.dir);
		ck_assert_int_eq(tl_broker_start(&br), 0);
		br_ok = 1;
	}
	ck_assert(tl_broker_log_count(&br, "metrics and health are off") >= 1);
	ck_assert_int_eq(ctl(out, sizeof(out), "-s", sock, "status", NULL), 0);
	close(fd);
}
END_TEST

/* A trail that cannot be written turns /health to 503. */
START_TEST(t_health_audit_failed)
{
	char body[4096], out[4096];

	broker_up("/dev/full", 1);
	(void)out;
	ck_assert_int_eq(http_get(mport, "/health", body, sizeof(body)), 503);
	ck_assert_msg(strstr(body, "\"audit\":\"failed\""), "%s", body);
	ck_assert_int_eq(metric("rabroker_audit_ok"), 0);
}
END_TEST

/* Directory down: 503 once an operation failed; back up: 200. Runs last:
 * it stops the shared slapd. */
START_TEST(t_health_directory_down)
{
	struct tl_client *a;
	char body[4096];
	int code = 0;

	broker_up(NULL, 1);
	a = connect_as("ws-042");
	ck_assert_int_eq(tl_client_agent_login(a, WS42, "CORP\\bob"), 0);
	tl_client_free(a);
	ck_assert_int_eq(http_get(mport, "/health", body, sizeof(body)), 200);
	ck_assert_int_eq(tl_slapd_stop(&slapd), 0);
	/* A new agent needs its computer object: that lookup fails. */
	a = connect_as("ws-043");
	(void)tl_client_agent_login(a, "ws-043.corp.example", "CORP\\bob");
	tl_client_free(a);
	for (int i = 0; i < 50 && code != 503; i++) {
		code = http_get(mport, "/health", body, sizeof(body));
		usleep(100000);
	}
	ck_assert_msg(code == 503 && strstr(body, "\"directory\":\"down\""),
	    "%d %s", code, body);
	ck_assert_int_eq(metric("rabroker_directory_up"), 0);
	ck_assert_int_eq(tl_slapd_restart(&slapd), 0);
}
END_TEST

static Suite *
suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("metrics");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, t_metrics_and_control);
	tcase_add_test(tc, t_offline_and_rate_limited);
	tcase_add_test(tc, t_expire_offline);
	tcase_add_test(tc, t_ctl_errors);
	tcase_add_test(tc, t_listen_checks);
	tcase_add_test(tc, t_port_taken);
	tcase_add_test(tc, t_health_audit_failed);
	tcase_add_test(tc, t_health_directory_down);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	slapd_ok = tl_slapd_start(NULL, &slapd) == 0;
	sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (slapd_ok)
		tl_slapd_destroy(&slapd);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
