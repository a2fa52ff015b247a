/*
 * itest_rpc_tls.c - JSON-RPC (rp_conn) over real TLS (rp_tls) on loopback:
 * calls both ways, notifications, large messages, an over-long line, an
 * untrusted client, a stalled handshake and a peer that stops reading.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "rp_conn.h"
#include "rp_error.h"
#include "rp_frame.h"
#include "rp_tls.h"
#include "tl_util.h"

static char *pki;

/* Sanitizers keep freed memory in quarantine: RSS says nothing then. */
#if defined(__SANITIZE_ADDRESS__)
#define TL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TL_ASAN 1
#endif
#endif
#ifndef TL_ASAN
#define TL_ASAN 0
#endif

/* ---- server ----------------------------------------------------------- */

struct srv {
	struct event_base *base;
	struct rp_tls_ctx *ctx;
	struct tl_listener *l;
	uint16_t port;
	int ready, refused, timeouts, conns_closed, notes, handled;
	int proto_errors;
	enum rp_tls_close_reason last_why;
	char last_msg[512];
	char peer_id[128];
	struct rp_conn *conns[8];
	int nconns;
	int raw_fd;
};

static void
srv_echo(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct srv *s = ctx;

	s->handled++;
	rp_conn_reply(c, id, json_incref(params));
}

struct ask {
	json_t *id;
};

static void
srv_ask_reply(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct ask *a = arg;

	if (code == 0)
		rp_conn_reply(
		    c, a->id, json_pack("{s:O}", "client_said", result));
	else
		rp_conn_error(
		    c, a->id, RP_ERR_INTERNAL, "client call failed", NULL);
	json_decref(a->id);
	free(a);
	rp_conn_unref(c);
}

/* The server calls the client before answering. */
static void
srv_ask_back(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct ask *a = calloc(1, sizeof(*a));

	a->id = json_incref(id);
	rp_conn_ref(c);
	if (rp_conn_call(c, "client.echo", json_incref(params), 5000,
	        srv_ask_reply, a) != 0) {
		json_decref(a->id);
		free(a);
		rp_conn_unref(c);
		rp_conn_error(c, id, RP_ERR_INTERNAL, "call failed", NULL);
	}
}

static void
srv_note(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct srv *s = ctx;

	s->notes++;
	rp_conn_notify(c, "server.note", json_pack("{s:i}", "n", s->notes));
}

static const struct rp_method srv_methods[] = {
    {"echo", RP_ST_ANY, NULL, 0, srv_echo},
    {"ask_back", RP_ST_ANY, "{q:s}", RP_M_REQUEST_ONLY, srv_ask_back},
    {"note", RP_ST_ANY, NULL, RP_M_NOTIFY_OK, srv_note},
};

static void
srv_conn_close(struct rp_conn *c, const char *why, void *ctx)
{
	struct srv *s = ctx;

	s->conns_closed++;
	for (int i = 0; i < s->nconns; i++)
		if (s->conns[i] == c) {
			s->conns[i] = NULL;
			rp_conn_unref(c);
		}
}

static void
srv_proto_error(struct rp_conn *c, int code, const char *msg, void *ctx)
{
	struct srv *s = ctx;

	s->proto_errors++;
}

static const struct rp_conn_cbs srv_conn_cbs = {
    srv_conn_close, srv_proto_error};

static void
srv_ready(struct rp_tls *t, void *arg)
{
	struct srv *s = arg;
	struct rp_conn_opts o = {0};
	const char *id = rp_tls_peer_id(t);

	s->ready++;
	snprintf(s->peer_id, sizeof(s->peer_id), "%s", id ? id : "");
	o.methods = srv_methods;
	o.nmethods = sizeof(srv_methods) / sizeof(srv_methods[0]);
	o.cbs = &srv_conn_cbs;
	o.ctx = s;
	ck_assert_int_lt(s->nconns, 8);
	s->conns[s->nconns] = rp_conn_new_tls(s->base, t, &o);
	ck_assert_ptr_nonnull(s->conns[s->nconns]);
	s->nconns++;
}

static void
srv_tls_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct srv *s = arg;

	s->last_why = why;
	snprintf(s->last_msg, sizeof(s->last_msg), "%s", msg ? msg : "");
	if (why == RP_TLS_CLOSED_TIMEOUT)
		s->timeouts++;
	else
		s->refused++;
}

static const struct rp_tls_cbs srv_tls_cbs = {
    srv_ready, NULL, NULL, srv_tls_close};

static void
srv_accept(evutil_socket_t fd, void *arg)
{
	struct srv *s = arg;

	if (rp_tls_accept(s->ctx, s->base, fd, &srv_tls_cbs, s) == NULL)
		close(fd);
}

static void
srv_init(struct srv *s, unsigned hs_ms)
{
	struct rp_tls_opts o = {0};
	char err[512];

	memset(s, 0, sizeof(*s));
	s->base = event_base_new();
	o.role = RP_TLS_SERVER;
	o.ca_file = tl_path(pki, "ca.pem");
	o.cert_file = tl_path(pki, "broker.pem");
	o.key_file = tl_path(pki, "broker-key.pem");
	o.client_cert = RP_TLS_CLIENT_CERT_REQUIRE;
	o.handshake_timeout_ms = hs_ms;
	s->ctx = rp_tls_ctx_new(&o, err, sizeof(err));
	ck_assert_msg(s->ctx != NULL, "%s", err);
	s->l = tl_listen(s->base, 0, srv_accept, s, &s->port);
	ck_assert_ptr_nonnull(s->l);
}

static int
srv_all_closed(void *arg)
{
	struct srv *s = arg;

	for (int i = 0; i < s->nconns; i++)
		if (s->conns[i] != NULL)
			return 0;
	return 1;
}

static void
srv_free(struct srv *s)
{
	for (int i = 0; i < s->nconns; i++)
		if (s->conns[i] != NULL)
			rp_conn_close(s->conns[i], "test over");
	ck_assert(tl_run_until(s->base, srv_all_closed, s, 5000));
	tl_run_until(s->base, NULL, NULL, 30);
	tl_listen_free(s->l);
	rp_tls_ctx_free(s->ctx);
	event_base_free(s->base);
}

/* ---- RPC client ------------------------------------------------------- */

struct cli {
	struct srv *s;
	struct rp_tls_ctx *ctx;
	struct rp_conn *c;
	int closed, notes, echoes;
	char why[512];
};

static void
cli_echo(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct cli *k = ctx;

	k->echoes++;
	rp_conn_reply(c, id, json_incref(params));
}

static void
cli_note(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct cli *k = ctx;

	k->notes++;
}

static const struct rp_method cli_methods[] = {
    {"client.echo", RP_ST_ANY, NULL, 0, cli_echo},
    {"server.note", RP_ST_ANY, "{n:i}", RP_M_NOTIFY_OK, cli_note},
};

static void
cli_close(struct rp_conn *c, const char *why, void *ctx)
{
	struct cli *k = ctx;

	k->closed++;
	snprintf(k->why, sizeof(k->why), "%s", why);
}

static const struct rp_conn_cbs cli_cbs = {cli_close, NULL};

static void
cli_init(struct cli *k, struct srv *s, const char *cert)
{
	struct rp_tls_opts o = {0};
	struct rp_conn_opts co = {0};
	struct sockaddr_storage ss;
	char err[512], cf[64], kf[64];
	struct rp_tls *t;
	int sl;

	memset(k, 0, sizeof(*k));
	k->s = s;
	o.role = RP_TLS_CLIENT;
	o.ca_file = tl_path(pki, "ca.pem");
	snprintf(cf, sizeof(cf), "%s.pem", cert);
	snprintf(kf, sizeof(kf), "%s-key.pem", cert);
	o.cert_file = tl_path(pki, cf);
	o.key_file = tl_path(pki, kf);
	k->ctx = rp_tls_ctx_new(&o, err, sizeof(err));
	ck_assert_msg(k->ctx != NULL, "%s", err);
	sl = tl_loopback((struct sockaddr *)&ss, 0, s->port);
	t = rp_tls_connect(k->ctx, s->base, (struct sockaddr *)&ss, sl,
	    "broker.corp.example", NULL, NULL);
	ck_assert_ptr_nonnull(t);
	/* The rp_conn is made at once: requests queue until the handshake
	 * is done. */
	co.methods = cli_methods;
	co.nmethods = 2;
	co.cbs = &cli_cbs;
	co.ctx = k;
	k->c = rp_conn_new_tls(s->base, t, &co);
	ck_assert_ptr_nonnull(k->c);
}

static int
cli_closed(void *arg)
{
	struct cli *k = arg;

	return k->closed > 0;
}

static void
cli_free(struct cli *k)
{
	rp_conn_close(k->c, "client done");
	ck_assert(tl_run_until(k->s->base, cli_closed, k, 5000));
	rp_conn_unref(k->c);
	tl_run_until(k->s->base, NULL, NULL, 30);
	rp_tls_ctx_free(k->ctx);
}

struct res {
	int done, code;
	json_t *v;
};

static void
res_cb(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct res *r = arg;

	r->done++;
	r->code = code;
	r->v = json_incref(result);
}

static int
res_done(void *arg)
{
	return ((struct res *)arg)->done > 0;
}

static void
call(struct cli *k, const char *method, json_t *params, struct res *r)
{
	memset(r, 0, sizeof(*r));
	ck_assert_int_eq(
	    rp_conn_call(k->c, method, params, 5000, res_cb, r), 0);
	ck_assert_msg(tl_run_until(k->s->base, res_done, r, 6000),
	    "no answer to %s", method);
	ck_assert_int_eq(r->done, 1);
}

/* ---- tests ------------------------------------------------------------ */

static int
notes_arrived(void *arg)
{
	struct cli *k = arg;

	return k->notes > 0 && k->s->notes > 0;
}

START_TEST(calls_both_ways)
{
	struct srv s;
	struct cli k;
	struct res r;

	srv_init(&s, 5000);
	cli_init(&k, &s, "ws-042");
	call(&k, "echo", json_pack("{s:i,s:s}", "x", 1, "y", "ü"), &r);
	ck_assert_int_eq(r.code, 0);
	ck_assert_int_eq(json_integer_value(json_object_get(r.v, "x")), 1);
	ck_assert_str_eq(json_string_value(json_object_get(r.v, "y")), "ü");
	json_decref(r.v);
	ck_assert_str_eq(s.peer_id, "ws-042.corp.example");
	ck_assert_str_eq(rp_conn_peer_id(s.conns[0]), "ws-042.corp.example");
	ck_assert(
	    strncmp(rp_conn_peer_addr(s.conns[0]), "127.0.0.1:", 10) == 0);
	ck_assert_ptr_nonnull(rp_conn_tls(s.conns[0]));

	/* Server calls the client while our call is pending. */
	call(&k, "ask_back", json_pack("{s:s}", "q", "hi"), &r);
	ck_assert_int_eq(r.code, 0);
	ck_assert_str_eq(json_string_value(json_object_get(
	                     json_object_get(r.v, "client_said"), "q")),
	    "hi");
	ck_assert_int_eq(k.echoes, 1);
	json_decref(r.v);

	/* Notifications both ways. */
	ck_assert_int_eq(rp_conn_notify(k.c, "note", NULL), 0);
	ck_assert(tl_run_until(s.base, notes_arrived, &k, 3000));
	ck_assert_int_eq(s.notes, 1);
	ck_assert_int_eq(k.notes, 1);

	/* Errors come back as errors. */
	call(&k, "no.such.method", NULL, &r);
	ck_assert_int_eq(r.code, RP_ERR_METHOD_NOT_FOUND);
	json_decref(r.v);
	call(&k, "ask_back", json_pack("{s:i}", "q", 5), &r);
	ck_assert_int_eq(r.code, RP_ERR_INVALID_PARAMS);
	json_decref(r.v);

	cli_free(&k);
	ck_assert_int_eq(s.refused, 0);
	srv_free(&s);
}
END_TEST

START_TEST(message_60k)
{
	struct srv s;
	struct cli k;
	struct res r;
	size_t n = 60 * 1024;
	char *big = malloc(n + 1);

	for (size_t i = 0; i < n; i++)
		big[i] = (char)('a' + i % 26);
	big[n] = '\0';
	srv_init(&s, 5000);
	cli_init(&k, &s, "ws-042");
	call(&k, "echo", json_pack("{s:s}", "big", big), &r);
	ck_assert_int_eq(r.code, 0);
	ck_assert_str_eq(json_string_value(json_object_get(r.v, "big")), big);
	json_decref(r.v);
	/* And the server calls back with it. */
	call(&k, "ask_back", json_pack("{s:s}", "q", big), &r);
	ck_assert_int_eq(r.code, 0);
	ck_assert_str_eq(json_string_value(json_object_get(
	                     json_object_get(r.v, "client_said"), "q")),
	    big);
	json_decref(r.v);
	cli_free(&k);
	srv_free(&s);
	free(big);
}
END_TEST

/* ---- raw client: speaks TLS, writes and reads lines itself ------------ */

struct raw {
	struct rp_tls *t;
	struct evbuffer *got;
	int ready, closed;
	enum rp_tls_close_reason why;
};

static void
raw_ready(struct rp_tls *t, void *arg)
{
	((struct raw *)arg)->ready = 1;
}

static void
raw_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	evbuffer_add_buffer(((struct raw *)arg)->got, in);
}

static void
raw_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct raw *w = arg;

	w->closed = 1;
	w->why = why;
	w->t = NULL;
}

static const struct rp_tls_cbs raw_cbs = {raw_ready, raw_read, NULL, raw_close};

static struct rp_tls_ctx *
raw_connect(struct raw *w, struct srv *s, size_t high)
{
	struct rp_tls_opts o = {0};
	struct sockaddr_storage ss;
	struct rp_tls_ctx *ctx;
	char err[512];
	int sl;

	memset(w, 0, sizeof(*w));
	w->got = evbuffer_new();
	o.role = RP_TLS_CLIENT;
	o.ca_file = tl_path(pki, "ca.pem");
	o.cert_file = tl_path(pki, "ws-043.pem");
	o.key_file = tl_path(pki, "ws-043-key.pem");
	o.out_high_water = high;
	ctx = rp_tls_ctx_new(&o, err, sizeof(err));
	ck_assert_msg(ctx != NULL, "%s", err);
	sl = tl_loopback((struct sockaddr *)&ss, 0, s->port);
	w->t = rp_tls_connect(
	    ctx, s->base, (struct sockaddr *)&ss, sl, "localhost", &raw_cbs, w);
	ck_assert_ptr_nonnull(w->t);
	return ctx;
}

static int
raw_is_ready(void *arg)
{
	struct raw *w = arg;

	return w->ready || w->closed;
}

static int
raw_is_closed(void *arg)
{
	return ((struct raw *)arg)->closed;
}

struct want_lines {
	struct raw *w;
	size_t n;
};

static int
has_lines(void *arg)
{
	struct want_lines *wl = arg;
	struct evbuffer_ptr p;
	size_t n = 0;

	p = evbuffer_search(wl->w->got, "\n", 1, NULL);
	while (p.pos != -1 && n < wl->n) {
		n++;
		evbuffer_ptr_set(wl->w->got, &p, 1, EVBUFFER_PTR_ADD);
		p = evbuffer_search(wl->w->got, "\n", 1, &p);
	}
	return n >= wl->n;
}

static json_t *
raw_line(struct raw *w)
{
	size_t n;
	char *line = evbuffer_readln(w->got, &n, EVBUFFER_EOL_LF);
	json_t *j;

	ck_assert_ptr_nonnull(line);
	j = json_loadb(line, n, 0, NULL);
	free(line);
	ck_assert_ptr_nonnull(j);
	return j;
}

static void
raw_free(struct raw *w, struct rp_tls_ctx *ctx, struct srv *s)
{
	if (w->t != NULL)
		rp_tls_close(w->t);
	ck_assert(tl_run_until(s->base, raw_is_closed, w, 5000));
	tl_run_until(s->base, NULL, NULL, 30);
	evbuffer_free(w->got);
	rp_tls_ctx_free(ctx);
}

START_TEST(line_too_long)
{
	struct srv s;
	struct raw w;
	struct rp_tls_ctx *ctx;
	struct want_lines wl = {&w, 2};
	size_t n = RP_LINE_MAX + 4096;
	char *junk = malloc(n);
	const char *ok =
	    "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\",\"params\":"
	    "{\"k\":1}}\n";
	json_t *j;

	srv_init(&s, 5000);
	ctx = raw_connect(&w, &s, 0);
	ck_assert(tl_run_until(s.base, raw_is_ready, &w, 5000));
	ck_assert(w.ready);
	/* A syntactically fine request, but one byte too long as a line. */
	memset(junk, 'A', n);
	{
		const char *head = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
		                   "\"echo\",\"x\":\"";
		memcpy(junk, head, strlen(head));
	}
	memcpy(junk + n - 3, "\"}\n", 3);
	ck_assert_int_eq(rp_tls_write(w.t, junk, n), 0);
	ck_assert_int_eq(rp_tls_write(w.t, ok, strlen(ok)), 0);
	ck_assert(tl_run_until(s.base, has_lines, &wl, 5000));

	j = raw_line(&w);
	ck_assert(json_is_null(json_object_get(j, "id")));
	/* JSON-RPC's Invalid Request, with the reason naming the rule. */
	ck_assert_int_eq(json_integer_value(json_object_get(
	                     json_object_get(j, "error"), "code")),
	    RP_ERR_INVALID_REQUEST);
	ck_assert_str_eq(
	    json_string_value(json_object_get(
	        json_object_get(json_object_get(j, "error"), "data"),
	        "reason")),
	    "line_too_long");
	json_decref(j);
	/* The connection keeps working. */
	j = raw_line(&w);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(
	                     json_object_get(j, "result"), "k")),
	    1);
	json_decref(j);
	ck_assert_int_eq(s.handled, 1);
	ck_assert_int_eq(w.closed, 0);
	raw_free(&w, ctx, &s);
	srv_free(&s);
	free(junk);
}
END_TEST

static int
srv_refused(void *arg)
{
	return ((struct srv *)arg)->refused > 0;
}

START_TEST(untrusted_client_refused)
{
	struct srv s;
	struct cli k;
	struct res r;

	srv_init(&s, 5000);
	cli_init(&k, &s, "rogue");
	memset(&r, 0, sizeof(r));
	ck_assert_int_eq(
	    rp_conn_call(k.c, "echo", json_pack("{}"), 5000, res_cb, &r), 0);
	ck_assert(tl_run_until(s.base, srv_refused, &s, 5000));
	ck_assert(tl_run_until(s.base, res_done, &r, 5000));
	ck_assert_int_eq(r.code, RP_ERR_CLOSED);
	ck_assert_int_eq(s.ready, 0);
	ck_assert_int_eq(s.handled, 0);
	ck_assert_int_eq(s.last_why, RP_TLS_CLOSED_VERIFY);
	ck_assert_msg(
	    strstr(s.last_msg, "issuer is unknown") != NULL, "%s", s.last_msg);
	ck_assert(tl_run_until(s.base, cli_closed, &k, 5000));
	cli_free(&k);
	srv_free(&s);
}
END_TEST

static int
srv_timed_out(void *arg)
{
	return ((struct srv *)arg)->timeouts > 0;
}

START_TEST(stalled_handshake_closed)
{
	struct srv s;
	struct sockaddr_storage ss;
	static const unsigned char hdr[] = {0x16, 0x03, 0x01, 0x01, 0x00};
	uint64_t t0, dt;
	int fd, sl;
	char b[8];

	srv_init(&s, 400);
	sl = tl_loopback((struct sockaddr *)&ss, 0, s.port);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&ss, sl), 0);
	ck_assert_int_eq(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	t0 = tl_now_ms();
	ck_assert(tl_run_until(s.base, srv_timed_out, &s, 5000));
	dt = tl_now_ms() - t0;
	ck_assert_msg(
	    dt >= 350 && dt < 3000, "after %llu ms", (unsigned long long)dt);
	ck_assert_int_eq(read(fd, b, sizeof(b)), 0); /* closed on us */
	close(fd);
	ck_assert_int_eq(s.ready, 0);
	srv_free(&s);
}
END_TEST

struct slow {
	struct raw *w;
	int want;
	int *seen;
	int nseen;
};

/* Counts distinct result ids among complete lines. */
static int
slow_done(void *arg)
{
	struct slow *sl = arg;
	char *line;
	size_t n;

	while (
	    (line = evbuffer_readln(sl->w->got, &n, EVBUFFER_EOL_LF)) != NULL) {
		json_t *j = json_loadb(line, n, 0, NULL);
		json_int_t id;

		free(line);
		ck_assert_ptr_nonnull(j);
		ck_assert_ptr_nonnull(json_object_get(j, "result"));
		id = json_integer_value(json_object_get(j, "id"));
		ck_assert(id >= 1 && id <= sl->want);
		if (!sl->seen[id]) {
			sl->seen[id] = 1;
			sl->nseen++;
		}
		json_decref(j);
	}
	return sl->nseen == sl->want;
}

static int
srv_is_ready(void *arg)
{
	return ((struct srv *)arg)->ready > 0;
}

START_TEST(peer_stops_reading)
{
	struct srv s;
	struct raw w;
	struct rp_tls_ctx *ctx;
	enum { N = 8000, PAD = 1000 };
	char pad[PAD + 1], line[PAD + 128];
	size_t rss0, rss1, hw = 256 * 1024, maxpend = 0, cli_pend;
	int handled_stop, sent = 0;
	struct slow sl;

	srv_init(&s, 5000);
	/* The misbehaving client itself never pauses (huge high water). */
	ctx = raw_connect(&w, &s, (size_t)1 << 30);
	ck_assert(tl_run_until(s.base, raw_is_ready, &w, 5000));
	ck_assert(tl_run_until(s.base, srv_is_ready, &s, 5000));
	ck_assert(w.ready && s.ready == 1);
	rp_tls_set_reading(w.t, 0);
	memset(pad, 'p', PAD);
	pad[PAD] = '\0';
	rss0 = tl_rss_bytes();

	/* 8 MB of requests in 8 steps; the server answers until its output
	 * passes the high water, then must stop reading us. */
	for (int step = 0; step < 8; step++) {
		for (int i = 0; i < N / 8; i++) {
			int len = snprintf(line, sizeof(line),
			    "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":"
			    "\"echo\","
			    "\"params\":{\"p\":\"%s\"}}\n",
			    ++sent, pad);
			ck_assert_int_eq(
			    rp_tls_write(w.t, line, (size_t)len), 0);
		}
		tl_run_until(s.base, NULL, NULL, 150);
		ck_assert_ptr_nonnull(s.conns[0]);
		size_t pend = rp_tls_out_pending(rp_conn_tls(s.conns[0]));
		if (pend > maxpend)
			maxpend = pend;
	}
	/* Wait (bounded) until the server stops: the kernel's socket buffers
	 * fill first, then its own queue passes the high water. */
	handled_stop = -1;
	for (int i = 0; i < 50 && s.handled != handled_stop; i++) {
		size_t pend;

		handled_stop = s.handled;
		tl_run_until(s.base, NULL, NULL, 200);
		pend = rp_tls_out_pending(rp_conn_tls(s.conns[0]));
		if (pend > maxpend)
			maxpend = pend;
	}
	ck_assert_msg(s.handled < N, "server read everything (%d)", s.handled);
	/* It really stopped: nothing more is handled while we wait. */
	tl_run_until(s.base, NULL, NULL, 300);
	ck_assert_int_eq(s.handled, handled_stop);
	ck_assert_uint_gt(rp_tls_out_pending(rp_conn_tls(s.conns[0])), hw / 2);
	/* Server-side queue stays near the high water (one message over at
	 * most, plus TLS record overhead). */
	ck_assert_msg(
	    maxpend <= hw + 16 * 1024, "server queued %zu bytes", maxpend);
	/* Memory: what grew is the client's own unsent queue, not the
	 * server. */
	rss1 = tl_rss_bytes();
	cli_pend = rp_tls_out_pending(w.t);
	/* (The kernel's loopback buffers hold a few MB more.) */
	ck_assert_msg(cli_pend > 1024 * 1024, "client queued %zu", cli_pend);
	ck_assert_msg(TL_ASAN || rss1 < rss0 + cli_pend + 6 * 1024 * 1024,
	    "rss grew by %zu with %zu queued by the client", rss1 - rss0,
	    cli_pend);

	fprintf(stderr,
	    "peer_stops_reading: server handled %d of %d while not read; "
	    "server queue max %zu; client queue %zu; rss +%ld KiB\n",
	    handled_stop, N, maxpend, cli_pend,
	    ((long)rss1 - (long)rss0) / 1024);
	/* The client reads again: everything completes. */
	sl.w = &w;
	sl.want = N;
	sl.seen = calloc(N + 1, sizeof(int));
	sl.nseen = 0;
	rp_tls_set_reading(w.t, 1);
	ck_assert_msg(tl_run_until(s.base, slow_done, &sl, 20000),
	    "only %d of %d answers", sl.nseen, N);
	ck_assert_int_eq(s.handled, N);
	ck_assert_int_eq(w.closed, 0);
	free(sl.seen);
	raw_free(&w, ctx, &s);
	srv_free(&s);
}
END_TEST

static Suite *
rpc_tls_suite(void)
{
	Suite *s = suite_create("rpc_tls");
	TCase *tc = tcase_create("rpc_tls");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, calls_both_ways);
	tcase_add_test(tc, message_60k);
	tcase_add_test(tc, line_too_long);
	tcase_add_test(tc, untrusted_client_refused);
	tcase_add_test(tc, stalled_handshake_closed);
	tcase_add_test(tc, peer_stops_reading);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	pki = tl_tmpdir("rabroker-itest-rpc-tls");
	if (pki == NULL || tl_mkpki(pki) != 0)
		return 1;
	sr = srunner_create(rpc_tls_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tl_rmtree(pki);
	free(pki);
	return failed == 0 ? 0 : 1;
}
