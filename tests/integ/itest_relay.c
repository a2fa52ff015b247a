/*
 * itest_relay.c - the broker's relay with a real slapd, a real rabrokerd
 * and real TLS. The ticket is made with the scripted clients of
 * tests/lib/tl_broker.h; the relay connections are raw rp_tls clients of
 * this file, since after relay.join's reply they stop speaking JSON-RPC and
 * carry bytes: what one side writes must arrive unchanged at the other.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "az_sasl.h"
#include "rp_error.h"
#include "rp_log.h"
#include "rp_tls.h"
#include "tl_broker.h"
#include "tl_slapd.h"
#include "tl_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define RELAY_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RELAY_TEST_ASAN 1
#endif
#endif
#ifndef RELAY_TEST_ASAN
#define RELAY_TEST_ASAN 0
#endif

#define WS42 "ws-042.corp.example"
#define T_WAIT 5000

static struct tl_slapd slapd;
static int slapd_ok;
static struct event_base *base;
static struct tl_broker br;
static int br_ok;

static const char *policy =
    "defaults prompt-timeout=5s\n"
    "scope workstations ou=\"ou=Workstations,ou=Computers,dc=corp,"
    "dc=example\"\n"
    "allow control group \"CORP\\helpdesk\" on workstations\n"
    "allow view group \"CORP\\helpdesk-all\" on workstations\n";

/* ---- a raw TLS client ------------------------------------------------------ */

struct raw {
	struct rp_tls_ctx *ctx;
	struct rp_tls *t;
	struct evbuffer *in;
	int ready, closed;
	int next_id;
};

static void
raw_ready(struct rp_tls *t, void *arg)
{
	struct raw *r = arg;

	(void)t;
	r->ready = 1;
}

static void
raw_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	struct raw *r = arg;

	(void)t;
	evbuffer_add_buffer(r->in, in);
}

static void
raw_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct raw *r = arg;

	(void)t;
	(void)why;
	(void)msg;
	r->closed = 1;
	r->t = NULL;
}

static const struct rp_tls_cbs raw_cbs = {
    .on_ready = raw_ready,
    .on_read = raw_read,
    .on_close = raw_close,
};

static int
raw_is_ready(void *arg)
{
	struct raw *r = arg;

	return r->ready || r->closed;
}

static int
raw_is_closed(void *arg)
{
	return ((struct raw *)arg)->closed;
}

static struct raw *
raw_connect(const char *cert)
{
	struct raw *r = calloc(1, sizeof(*r));
	struct rp_tls_opts o;
	struct sockaddr_storage ss;
	char err[256] = "", cf[700], kf[700], ca[700];
	int len;

	ck_assert_ptr_nonnull(r);
	memset(&o, 0, sizeof(o));
	o.role = RP_TLS_CLIENT;
	snprintf(ca, sizeof(ca), "%s/ca.pem", br.pki);
	o.ca_file = ca;
	if (cert != NULL) {
		snprintf(cf, sizeof(cf), "%s/%s.pem", br.pki, cert);
		snprintf(kf, sizeof(kf), "%s/%s-key.pem", br.pki, cert);
		o.cert_file = cf;
		o.key_file = kf;
	}
	r->ctx = rp_tls_ctx_new(&o, err, sizeof(err));
	ck_assert_msg(r->ctx != NULL, "rp_tls_ctx_new: %s", err);
	r->in = evbuffer_new();
	len = tl_loopback((struct sockaddr *)&ss, 0, (uint16_t)br.port);
	r->t = rp_tls_connect(r->ctx, base, (struct sockaddr *)&ss, len,
	    "localhost", &raw_cbs, r);
	ck_assert_ptr_nonnull(r->t);
	tl_run_until(base, raw_is_ready, r, T_WAIT);
	ck_assert_msg(r->ready && !r->closed, "TLS to the broker failed");
	return r;
}

static void
raw_free(struct raw *r)
{
	if (r == NULL)
		return;
	if (r->t != NULL) {
		rp_tls_close(r->t);
		tl_run_until(base, raw_is_closed, r, 2000);
	}
	evbuffer_free(r->in);
	rp_tls_ctx_free(r->ctx);
	free(r);
}

struct linewait {
	struct raw *r;
};

static int
has_line(void *arg)
{
	struct raw *r = arg;
	struct evbuffer_ptr p = evbuffer_search(r->in, "\n", 1, NULL);

	return p.pos >= 0 || r->closed;
}

/* The next JSON line, or NULL (timeout or closed). */
static json_t *
raw_line(struct raw *r, unsigned ms)
{
	size_t n;
	char *l;
	json_t *j;

	tl_run_until(base, has_line, r, ms);
	l = evbuffer_readln(r->in, &n, EVBUFFER_EOL_LF);
	if (l == NULL)
		return NULL;
	j = json_loads(l, 0, NULL);
	free(l);
	return j;
}

/* Sends a request; returns its id. */
static int
raw_send(struct raw *r, const char *method, json_t *params)
{
	json_t *m = json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id",
	    ++r->next_id, "method", method, "params", params);
	char *s = json_dumps(m, JSON_COMPACT);

	ck_assert_ptr_nonnull(r->t);
	ck_assert_int_eq(rp_tls_write(r->t, s, strlen(s)), 0);
	ck_assert_int_eq(rp_tls_write(r->t, "\n", 1), 0);
	free(s);
	json_decref(m);
	return r->next_id;
}

/* Sends a request and waits for its response (skipping notifications). */
static json_t *
raw_call(struct raw *r, const char *method, json_t *params, unsigned ms)
{
	int id = raw_send(r, method, params);
	json_t *j;

	while ((j = raw_line(r, ms)) != NULL) {
		if (json_integer_value(json_object_get(j, "id")) == id)
			return j;
		json_decref(j);
	}
	return NULL;
}

static const char *
jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static const char *
err_reason(const json_t *resp)
{
	return jstr(
	    json_object_get(json_object_get(resp, "error"), "data"), "reason");
}

static struct raw *
raw_agent(void)
{
	struct raw *r = raw_connect("ws-042");
	json_t *j = raw_call(r, "hello",
	    json_pack("{s:i, s:s}", "version", 1, "role", "agent"), T_WAIT);

	ck_assert_ptr_nonnull(json_object_get(j, "result"));
	json_decref(j);
	return r;
}

static struct raw *
raw_helper(const char *user)
{
	struct raw *r = raw_connect(NULL);
	unsigned char buf[128];
	size_t ul = strlen(user), n;
	char pw[64], *b64;
	json_t *j;

	snprintf(pw, sizeof(pw), "%s-pw", user);
	j = raw_call(r, "hello",
	    json_pack("{s:i, s:s}", "version", 1, "role", "helper"), T_WAIT);
	ck_assert_ptr_nonnull(json_object_get(j, "result"));
	json_decref(j);
	buf[0] = '\0';
	memcpy(buf + 1, user, ul);
	buf[1 + ul] = '\0';
	memcpy(buf + 2 + ul, pw, strlen(pw));
	n = 2 + ul + strlen(pw);
	b64 = az_sasl_b64_encode(buf, n);
	j = raw_call(r, "auth.start",
	    json_pack("{s:s, s:s}", "mechanism", "PLAIN", "initial", b64),
	    T_WAIT);
	free(b64);
	ck_assert_str_eq(jstr(json_object_get(j, "result"), "status"), "ok");
	json_decref(j);
	return r;
}

struct waitbytes {
	struct raw *r;
	size_t n;
};

static int
got_bytes(void *arg)
{
	struct waitbytes *w = arg;

	return evbuffer_get_length(w->r->in) >= w->n || w->r->closed;
}

/* ---- fixtures -------------------------------------------------------------- */

static void
broker_with(const char *extra)
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
	ck_assert_msg(slapd_ok, "slapd did not start");
	log_init("itest_relay", LOG_LVL_WARN, 0);
	base = event_base_new();
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

static long
audit_with(const char *a, const char *b)
{
	FILE *f = fopen(br.audit, "r");
	char line[8192];
	long n = 0;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, a) && (b == NULL || strstr(line, b)))
			n++;
	fclose(f);
	return n;
}

static int
audit_wait_with(const char *a, const char *b)
{
	uint64_t end = tl_now_ms() + T_WAIT;

	while (tl_now_ms() < end) {
		if (audit_with(a, b) > 0)
			return 1;
		tl_run_until(base, NULL, NULL, 50);
	}
	return 0;
}

/* A ticket accepted by the user, through the scripted clients. */
static void
make_ticket(struct tl_client **a, struct tl_client **h, char *tid, int accept)
{
	char why[256];
	json_t *res = NULL, *id = NULL, *p;

	*a = tl_client_connect(
	    base, br.pki, br.port, "ws-042", T_WAIT, why, sizeof(why));
	ck_assert_ptr_nonnull(*a);
	ck_assert_int_eq(tl_client_agent_login(*a, WS42, "CORP\\bob"), 0);
	*h = tl_client_connect(
	    base, br.pki, br.port, NULL, T_WAIT, why, sizeof(why));
	ck_assert_ptr_nonnull(*h);
	ck_assert_int_eq(tl_client_helper_login(*h, "alice", "alice-pw"), 0);
	ck_assert_int_eq(
	    tl_client_call(*h, "offer.create",
	        json_pack("{s:s, s:s, s:[s]}", "machine", WS42, "mode", "view",
	            "addresses", "192.0.2.1:40000"),
	        T_WAIT, &res),
	    0);
	snprintf(tid, 33, "%s", jstr(res, "ticket"));
	json_decref(res);
	p = tl_client_wait_request(*a, "novice.prompt", T_WAIT, &id);
	ck_assert_ptr_nonnull(p);
	json_decref(p);
	if (!accept) {
		json_decref(id);
		return;
	}
	ck_assert_int_eq(tl_client_reply(*a, id,
	                     json_pack("{s:s, s:s}", "answer", "accept", "user",
	                         "CORP\\bob")),
	    0);
	json_decref(id);
	p = tl_client_wait_request(*a, "ticket.connect", T_WAIT, &id);
	ck_assert_ptr_nonnull(p);
	json_decref(p);
	tl_client_reply(*a, id, json_object());
	json_decref(id);
}

static void
fill(unsigned char *b, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (unsigned char)(seed >> 16);
	}
}

/* ---- tests ----------------------------------------------------------------- */

START_TEST(t_splice)
{
	struct tl_client *a, *h;
	struct raw *ra, *rh;
	char tid[33];
	json_t *j;
	int aid;
	enum { N1 = 300 * 1024, N2 = 1024 * 1024 };
	unsigned char *b1 = malloc(N1), *b2 = malloc(N2), *got;
	struct waitbytes w;
	char needle[80];

	broker_with("[relay]\nwait_timeout = 5s\nidle_timeout = 30s\n");
	make_ticket(&a, &h, tid, 1);
	ra = raw_agent();
	rh = raw_helper("alice");

	/* The agent joins first: no answer until the helper is there. */
	aid = raw_send(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "agent"));
	ck_assert_ptr_null(raw_line(ra, 500));
	j = raw_call(rh, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "helper"), T_WAIT);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "result"), "status"), "paired");
	json_decref(j);
	j = raw_line(ra, T_WAIT);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), aid);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "result"), "status"), "paired");
	json_decref(j);
	ck_assert(audit_wait_with("\"event\":\"relay_started\"", tid));

	/* Bytes both ways, unchanged (binary, with newlines and NULs, more
	 * than the backpressure watermark one way). */
	fill(b1, N1, 1);
	fill(b2, N2, 2);
	ck_assert_int_eq(rp_tls_write(rh->t, b1, N1), 0);
	ck_assert_int_eq(rp_tls_write(ra->t, b2, N2), 0);
	w.r = ra;
	w.n = N1;
	ck_assert(tl_run_until(base, got_bytes, &w, 10000));
	w.r = rh;
	w.n = N2;
	ck_assert(tl_run_until(base, got_bytes, &w, 10000));
	ck_assert_uint_eq(evbuffer_get_length(ra->in), N1);
	ck_assert_uint_eq(evbuffer_get_length(rh->in), N2);
	got = evbuffer_pullup(ra->in, -1);
	ck_assert_int_eq(memcmp(got, b1, N1), 0);
	got = evbuffer_pullup(rh->in, -1);
	ck_assert_int_eq(memcmp(got, b2, N2), 0);

	/* One side closes: the other is closed, the end audited with the
	 * byte counts. */
	raw_free(rh);
	ck_assert(tl_run_until(base, raw_is_closed, ra, T_WAIT));
	snprintf(needle, sizeof(needle), "\"bytes_to_agent\":%d", N1);
	ck_assert(audit_wait_with("\"event\":\"relay_ended\"", needle));
	snprintf(needle, sizeof(needle), "\"bytes_to_helper\":%d", N2);
	ck_assert_int_eq(audit_with("\"event\":\"relay_ended\"", needle), 1);
	raw_free(ra);
	free(b1);
	free(b2);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_refused)
{
	struct tl_client *a, *h, *a2, *h2;
	struct raw *ra, *rc;
	char tid[33], tid2[33];
	json_t *j;

	broker_with("[relay]\nwait_timeout = 5s\n");
	make_ticket(&a, &h, tid, 1);
	ra = raw_agent();
	/* A well-formed id that names no ticket. */
	j = raw_call(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket",
	        "0123456789abcdef0123456789abcdef", "side", "agent"),
	    T_WAIT);
	ck_assert_str_eq(err_reason(j), "not_found");
	json_decref(j);
	/* A malformed one. */
	j = raw_call(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", "../../etc", "side", "agent"),
	    T_WAIT);
	ck_assert_int_eq(json_integer_value(json_object_get(
	                     json_object_get(j, "error"), "code")),
	    RP_ERR_INVALID_PARAMS);
	json_decref(j);
	/* The agent claiming to be the helper side. */
	j = raw_call(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "helper"), T_WAIT);
	ck_assert_str_eq(err_reason(j), "forbidden");
	json_decref(j);
	ck_assert_int_ge(
	    audit_with("\"event\":\"ticket_refused\"", "relay"), 2);
	/* Another helper (carol) does not own the ticket. */
	rc = raw_helper("carol");
	j = raw_call(rc, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "helper"), T_WAIT);
	ck_assert_str_eq(err_reason(j), "not_found");
	json_decref(j);
	raw_free(rc);
	raw_free(ra);

	/* A ticket still waiting for consent cannot be relayed. */
	tl_client_free(h);
	tl_client_free(a);
	make_ticket(&a2, &h2, tid2, 0);
	ra = raw_agent();
	j = raw_call(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid2, "side", "agent"), T_WAIT);
	ck_assert_str_eq(err_reason(j), "wrong_state");
	json_decref(j);
	raw_free(ra);
	tl_client_free(h2);
	tl_client_free(a2);
}
END_TEST

START_TEST(t_wait_timeout)
{
	struct tl_client *a, *h;
	struct raw *ra;
	char tid[33];
	json_t *j;
	uint64_t t0;

	broker_with("[relay]\nwait_timeout = 2s\n");
	make_ticket(&a, &h, tid, 1);
	ra = raw_agent();
	t0 = tl_now_ms();
	raw_send(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "agent"));
	j = raw_line(ra, 6000);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "result"), "status"), "timeout");
	json_decref(j);
	ck_assert_uint_ge(tl_now_ms() - t0, 1500);
	ck_assert(tl_run_until(base, raw_is_closed, ra, T_WAIT));
	ck_assert(audit_wait_with("\"event\":\"relay_ended\"", "wait_timeout"));
	raw_free(ra);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

START_TEST(t_idle_and_budget)
{
	struct tl_client *a, *h;
	struct raw *ra, *rh;
	char tid[33];
	json_t *j;
	static unsigned char big[256 * 1024];

	broker_with("[relay]\nwait_timeout = 5s\nidle_timeout = 2s\n"
	            "byte_budget = 64K\n");
	make_ticket(&a, &h, tid, 1);

	/* Idle: paired, nothing sent, both closed after ~2 s. */
	ra = raw_agent();
	rh = raw_helper("alice");
	raw_send(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "agent"));
	j = raw_call(rh, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "helper"), T_WAIT);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "result"), "status"), "paired");
	json_decref(j);
	ck_assert(tl_run_until(base, raw_is_closed, rh, 6000));
	ck_assert(tl_run_until(base, raw_is_closed, ra, 2000));
	ck_assert(audit_wait_with("\"event\":\"relay_ended\"", "\"idle\""));
	raw_free(ra);
	raw_free(rh);

	/* Budget: 64 KiB for the ticket; 256 KiB sent -> closed. */
	ra = raw_agent();
	rh = raw_helper("alice");
	raw_send(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "agent"));
	j = raw_call(rh, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "helper"), T_WAIT);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "result"), "status"), "paired");
	json_decref(j);
	json_decref(raw_line(ra, T_WAIT));
	fill(big, sizeof(big), 3);
	ck_assert_int_eq(rp_tls_write(rh->t, big, sizeof(big)), 0);
	ck_assert(tl_run_until(base, raw_is_closed, ra, T_WAIT));
	ck_assert_uint_le(evbuffer_get_length(ra->in), 64 * 1024);
	ck_assert(audit_wait_with("\"event\":\"relay_ended\"", "byte_budget"));
	raw_free(ra);
	raw_free(rh);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

/* Backpressure: while the helper does not read, the broker stops reading
 * the agent, so the bytes wait at the agent (and in kernel buffers), not
 * in the broker's memory. When the helper reads again, every byte arrives
 * unchanged. */
START_TEST(t_backpressure)
{
	struct tl_client *a, *h;
	struct raw *ra, *rh;
	char tid[33];
	json_t *j;
	enum { N = 64 * 1024 * 1024 };
	unsigned char *buf = malloc(N), *got;
	struct waitbytes w;
	size_t rss0, rss1, pending;

	ck_assert_ptr_nonnull(buf);
	broker_with("[relay]\nwait_timeout = 5s\nidle_timeout = 60s\n");
	make_ticket(&a, &h, tid, 1);
	ra = raw_agent();
	rh = raw_helper("alice");
	raw_send(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "agent"));
	j = raw_call(rh, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "helper"), T_WAIT);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "result"), "status"), "paired");
	json_decref(j);
	j = raw_line(ra, T_WAIT);
	ck_assert_ptr_nonnull(j);
	json_decref(j);

	rss0 = tl_broker_rss(&br);
	rp_tls_set_reading(rh->t, 0);
	fill(buf, N, 7);
	ck_assert_int_eq(rp_tls_write(ra->t, buf, N), 0);
	tl_run_until(base, NULL, NULL, 2500);
	rss1 = tl_broker_rss(&br);
	pending = rp_tls_out_pending(ra->t);
	ck_assert_msg(pending > 16 * 1024 * 1024,
	    "only %zu bytes still queued at the agent", pending);
	/* Under ASan freed memory stays in quarantine: RSS says nothing. */
	if (!RELAY_TEST_ASAN)
		ck_assert_msg(rss1 < rss0 + 16 * 1024 * 1024,
		    "broker RSS grew from %zu to %zu bytes", rss0, rss1);
	else
		(void)rss1;
	ck_assert_uint_eq(evbuffer_get_length(rh->in), 0);

	rp_tls_set_reading(rh->t, 1);
	w.r = rh;
	w.n = N;
	ck_assert(tl_run_until(base, got_bytes, &w, 30000));
	ck_assert_uint_eq(evbuffer_get_length(rh->in), N);
	got = evbuffer_pullup(rh->in, -1);
	ck_assert_int_eq(memcmp(got, buf, N), 0);
	raw_free(ra);
	raw_free(rh);
	free(buf);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

/* The novice ends the ticket while its relay runs: the relay is cut. The
 * registered agent connection may not be turned into a relay. */
START_TEST(t_ticket_closed)
{
	struct tl_client *a, *h;
	struct raw *ra, *rh;
	char tid[33];
	json_t *j, *res = NULL;

	broker_with("[relay]\nwait_timeout = 5s\nidle_timeout = 30s\n");
	make_ticket(&a, &h, tid, 1);
	ck_assert_int_eq(
	    tl_client_call(a, "relay.join",
	        json_pack("{s:s, s:s}", "ticket", tid, "side", "agent"), T_WAIT,
	        &res),
	    RP_ERR_WRONG_STATE);
	json_decref(res);
	ra = raw_agent();
	rh = raw_helper("alice");
	raw_send(ra, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "agent"));
	j = raw_call(rh, "relay.join",
	    json_pack("{s:s, s:s}", "ticket", tid, "side", "helper"), T_WAIT);
	ck_assert_str_eq(
	    jstr(json_object_get(j, "result"), "status"), "paired");
	json_decref(j);
	ck_assert_int_eq(rp_tls_write(rh->t, "hello", 5), 0);
	ck_assert_int_eq(
	    tl_client_call(a, "ticket.expire",
	        json_pack("{s:s, s:s}", "ticket", tid, "user", "CORP\\bob"),
	        T_WAIT, &res),
	    0);
	json_decref(res);
	ck_assert(tl_run_until(base, raw_is_closed, ra, T_WAIT));
	ck_assert(tl_run_until(base, raw_is_closed, rh, T_WAIT));
	ck_assert(
	    audit_wait_with("\"event\":\"relay_ended\"", "ticket_closed"));
	raw_free(ra);
	raw_free(rh);
	tl_client_free(h);
	tl_client_free(a);
}
END_TEST

static Suite *
suite(void)
{
	Suite *s = suite_create("relay");
	TCase *tc = tcase_create("relay");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, t_splice);
	tcase_add_test(tc, t_refused);
	tcase_add_test(tc, t_wait_timeout);
	tcase_add_test(tc, t_idle_and_budget);
	tcase_add_test(tc, t_ticket_closed);
	tcase_add_test(tc, t_backpressure);
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
