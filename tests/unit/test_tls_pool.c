/*
 * test_tls_pool.c - server handshakes on the handshake pool (rp_tls_pool,
 * 2 threads): real handshakes on loopback with certificates from
 * tests/lib/mkpki.sh. Every callback must run on the thread that runs the
 * pool's base (here the test's main thread), with the connection's own
 * peer identity and its bytes intact and in order, including those the
 * client sent in the same flight as its Finished.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "rp_tls.h"
#include "tl_util.h"

#define NCONN 48
#define MSG_LINES 40 /* per connection, several records in all */

static char *pki;
static pthread_t main_thread;
static int wrong_thread; /* a callback ran off the main thread */

struct end {
	struct rp_tls *t;
	int ready, closes;
	enum rp_tls_close_reason why;
	char peer_id[256];
	struct evbuffer *got;
};

static void
check_thread(void)
{
	if (!pthread_equal(pthread_self(), main_thread))
		wrong_thread++;
}

static void
on_ready(struct rp_tls *t, void *arg)
{
	struct end *e = arg;
	const char *id = rp_tls_peer_id(t);

	check_thread();
	e->t = t;
	e->ready++;
	snprintf(e->peer_id, sizeof(e->peer_id), "%s", id ? id : "");
}

static void
on_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	struct end *e = arg;

	check_thread();
	evbuffer_add_buffer(e->got, in);
}

static void
on_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct end *e = arg;

	check_thread();
	e->closes++;
	e->why = why;
	e->t = NULL;
}

static const struct rp_tls_cbs cbs = {on_ready, on_read, NULL, on_close};

struct srv {
	struct event_base *base;
	struct rp_tls_ctx *ctx;
	struct rp_tls_pool *pool;
	struct tl_listener *l;
	uint16_t port;
	struct end s[NCONN]; /* server ends, in accept order */
	int nacc;
};

static void
srv_accept(evutil_socket_t fd, void *arg)
{
	struct srv *v = arg;

	ck_assert_int_lt(v->nacc, NCONN);
	ck_assert_int_eq(
	    rp_tls_accept_pool(v->pool, v->ctx, fd, &cbs, &v->s[v->nacc]), 0);
	v->nacc++;
}

static struct rp_tls_ctx *
server_ctx(unsigned hs_ms)
{
	struct rp_tls_opts so = {0};
	struct rp_tls_ctx *c;
	char err[512];

	so.role = RP_TLS_SERVER;
	so.ca_file = tl_path(pki, "ca.pem");
	so.cert_file = tl_path(pki, "broker.pem");
	so.key_file = tl_path(pki, "broker-key.pem");
	so.client_cert = RP_TLS_CLIENT_CERT_REQUEST;
	so.handshake_timeout_ms = hs_ms;
	so.session_tickets = 1; /* the pool thread sends the ticket */
	c = rp_tls_ctx_new(&so, err, sizeof(err));
	ck_assert_msg(c != NULL, "server ctx: %s", err);
	return c;
}

static struct rp_tls_ctx *
client_ctx(const char *cert)
{
	struct rp_tls_opts co = {0};
	struct rp_tls_ctx *c;
	char err[512], cf[64], kf[64];

	co.role = RP_TLS_CLIENT;
	co.ca_file = tl_path(pki, "ca.pem");
	snprintf(cf, sizeof(cf), "%s.pem", cert);
	snprintf(kf, sizeof(kf), "%s-key.pem", cert);
	co.cert_file = tl_path(pki, cf);
	co.key_file = tl_path(pki, kf);
	co.session_resumption = 1;
	c = rp_tls_ctx_new(&co, err, sizeof(err));
	ck_assert_msg(c != NULL, "client ctx: %s", err);
	return c;
}

static void
srv_init(struct srv *v, unsigned threads, unsigned hs_ms)
{
	char err[256];

	memset(v, 0, sizeof(*v));
	v->base = event_base_new();
	ck_assert_ptr_nonnull(v->base);
	v->ctx = server_ctx(hs_ms);
	v->pool = rp_tls_pool_new(v->base, threads, err, sizeof(err));
	ck_assert_msg(v->pool != NULL, "pool: %s", err);
	ck_assert_uint_eq(rp_tls_pool_threads(v->pool), threads);
	for (int i = 0; i < NCONN; i++)
		v->s[i].got = evbuffer_new();
	v->l = tl_listen(v->base, 0, srv_accept, v, &v->port);
	ck_assert_ptr_nonnull(v->l);
}

static void
srv_free(struct srv *v)
{
	tl_listen_free(v->l);
	rp_tls_pool_free(v->pool);
	tl_run_until(v->base, NULL, NULL, 20); /* deferred frees */
	rp_tls_ctx_free(v->ctx);
	for (int i = 0; i < NCONN; i++)
		evbuffer_free(v->s[i].got);
	event_base_free(v->base);
}

/* What client i sends: its machine name first, so that the server end can
 * tell whether the bytes and the peer identity belong together. */
static void
client_text(struct evbuffer *b, const char *machine, int i)
{
	for (int k = 0; k < MSG_LINES; k++)
		evbuffer_add_printf(b,
		    "%s conn %d line %d "
		    "..............................................."
		    "...............................................\n",
		    machine, i, k);
}

struct cli {
	struct end c[NCONN];
};

/* The last line has arrived whole. */
static int
end_complete(struct end *e)
{
	size_t n = evbuffer_get_length(e->got);
	char tag[16];

	snprintf(tag, sizeof(tag), "line %d ", MSG_LINES - 1);
	if (n == 0 || evbuffer_search(e->got, tag, strlen(tag), NULL).pos < 0)
		return 0;
	return evbuffer_pullup(e->got, -1)[n - 1] == '\n';
}

static int
all_received(void *arg)
{
	struct srv *v = arg;

	for (int i = 0; i < NCONN; i++) {
		struct end *e = &v->s[i];
		if (e->closes)
			return 1; /* settled badly: the test will say */
		if (!e->ready || !end_complete(e))
			return 0;
	}
	return 1;
}

static int
n_clients_closed(struct cli *c, int n)
{
	for (int i = 0; i < n; i++)
		if (!c->c[i].closes)
			return 0;
	return 1;
}

static int
all_closed(void *arg)
{
	return n_clients_closed(arg, NCONN);
}

static int
all_closed_8(void *arg)
{
	return n_clients_closed(arg, 8);
}

static int
first_got(void *arg)
{
	struct srv *v = arg;

	return v->s[0].closes || evbuffer_get_length(v->s[0].got) >= 6;
}

static int
first_client_closed(void *arg)
{
	return n_clients_closed(arg, 1);
}

/*
 * Many concurrent handshakes through 2 pool threads, two different client
 * certificates; each client writes its text before the handshake is done
 * (rp_tls keeps it and sends it right after the client's Finished, in the
 * same flight): every server end is ready once, on the main thread, with
 * the identity of its own client, and has exactly that client's bytes.
 */
START_TEST(pool_many_handshakes)
{
	struct srv v;
	struct cli *cl = calloc(1, sizeof(*cl));
	struct rp_tls_ctx *cc[2];
	const char *machine[2] = {"ws-042", "ws-043"};
	struct sockaddr_storage ss;
	int sl;

	srv_init(&v, 2, 10000);
	cc[0] = client_ctx("ws-042");
	cc[1] = client_ctx("ws-043");
	sl = tl_loopback((struct sockaddr *)&ss, 0, v.port);
	for (int i = 0; i < NCONN; i++) {
		struct evbuffer *b = evbuffer_new();

		cl->c[i].got = evbuffer_new();
		cl->c[i].t = rp_tls_connect(cc[i % 2], v.base,
		    (struct sockaddr *)&ss, sl, "localhost", &cbs, &cl->c[i]);
		ck_assert_ptr_nonnull(cl->c[i].t);
		client_text(b, machine[i % 2], i);
		ck_assert_int_eq(rp_tls_write_buffer(cl->c[i].t, b), 0);
		evbuffer_free(b);
	}
	ck_assert_msg(tl_run_until(v.base, all_received, &v, 20000),
	    "not all data arrived");
	ck_assert_int_eq(v.nacc, NCONN);
	for (int i = 0; i < NCONN; i++) {
		struct end *e = &v.s[i];
		struct evbuffer *want = evbuffer_new();
		char m[16], *got;
		int conn = -1;
		size_t n;

		ck_assert_int_eq(e->ready, 1);
		ck_assert_int_eq(e->closes, 0);
		/* "ws-04N conn I line 0 ...": the client that sent it */
		n = evbuffer_get_length(e->got);
		got = (char *)evbuffer_pullup(e->got, -1);
		ck_assert_int_eq(sscanf(got, "%15s conn %d ", m, &conn), 2);
		ck_assert_int_ge(conn, 0);
		ck_assert_int_lt(conn, NCONN);
		ck_assert_str_eq(m, machine[conn % 2]);
		ck_assert(strncmp(e->peer_id, m, strlen(m)) == 0);
		ck_assert_str_eq(e->peer_id + strlen(m), ".corp.example");
		client_text(want, m, conn);
		ck_assert_uint_eq(n, evbuffer_get_length(want));
		ck_assert(memcmp(got, evbuffer_pullup(want, -1), n) == 0);
		evbuffer_free(want);
		/* The connection works both ways on the main loop. */
		ck_assert_int_eq(rp_tls_write(e->t, "ok\n", 3), 0);
	}
	ck_assert_int_eq(wrong_thread, 0);
	for (int i = 0; i < NCONN; i++)
		rp_tls_close(v.s[i].t);
	ck_assert(tl_run_until(v.base, all_closed, cl, 10000));
	for (int i = 0; i < NCONN; i++) {
		ck_assert_int_eq(cl->c[i].ready, 1);
		ck_assert_uint_eq(evbuffer_get_length(cl->c[i].got), 3);
		evbuffer_free(cl->c[i].got);
	}
	ck_assert_int_eq(wrong_thread, 0);
	tl_run_until(v.base, NULL, NULL, 20);
	rp_tls_ctx_free(cc[0]);
	rp_tls_ctx_free(cc[1]);
	srv_free(&v);
	free(cl);
}
END_TEST

static int
n_closed(void *arg)
{
	struct srv *v = arg;
	int n = 0;

	for (int i = 0; i < v->nacc; i++)
		n += v->s[i].closes;
	return n == 3;
}

/*
 * Handshakes that fail on a pool thread: a silent client (deadline, on the
 * thread's loop), garbage, an untrusted certificate. Each is closed there
 * and reported once to on_close on the main thread with its reason; the
 * silent client reads EOF.
 */
START_TEST(pool_failures_reported_on_main)
{
	struct srv v;
	struct sockaddr_storage ss;
	struct rp_tls_ctx *rogue;
	struct end rc = {0};
	int sl, silent, junk;
	char b[64];
	uint64_t t0;

	srv_init(&v, 2, 300);
	sl = tl_loopback((struct sockaddr *)&ss, 0, v.port);
	silent = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(connect(silent, (struct sockaddr *)&ss, sl), 0);
	junk = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(connect(junk, (struct sockaddr *)&ss, sl), 0);
	memset(b, 'x', sizeof(b));
	ck_assert_int_eq(write(junk, b, sizeof(b)), (ssize_t)sizeof(b));
	rogue = client_ctx("rogue");
	rc.got = evbuffer_new();
	rc.t = rp_tls_connect(
	    rogue, v.base, (struct sockaddr *)&ss, sl, "localhost", &cbs, &rc);
	ck_assert_ptr_nonnull(rc.t);
	t0 = tl_now_ms();
	ck_assert(tl_run_until(v.base, n_closed, &v, 5000));
	ck_assert_uint_lt(tl_now_ms() - t0, 3000);
	ck_assert_int_eq(v.nacc, 3);
	{
		int timeout = 0, verify = 0, hs = 0;
		for (int i = 0; i < 3; i++) {
			ck_assert_int_eq(v.s[i].ready, 0);
			ck_assert_int_eq(v.s[i].closes, 1);
			timeout += v.s[i].why == RP_TLS_CLOSED_TIMEOUT;
			verify += v.s[i].why == RP_TLS_CLOSED_VERIFY;
			hs += v.s[i].why == RP_TLS_CLOSED_HANDSHAKE;
		}
		ck_assert_int_eq(timeout, 1);
		ck_assert_int_eq(verify, 1);
		ck_assert_int_eq(hs, 1);
	}
	ck_assert_int_eq(read(silent, b, sizeof(b)), 0);
	ck_assert_int_eq(wrong_thread, 0);
	tl_run_until(v.base, NULL, NULL, 100);
	if (rc.t != NULL)
		rp_tls_close(rc.t);
	tl_run_until(v.base, NULL, NULL, 50);
	close(silent);
	close(junk);
	evbuffer_free(rc.got);
	srv_free(&v);
	rp_tls_ctx_free(rogue);
}
END_TEST

static int
clients_ready(void *arg)
{
	struct cli *c = arg;

	for (int i = 0; i < 8; i++)
		if (!c->c[i].ready)
			return 0;
	return 1;
}

/*
 * Freeing the pool with connections in every stage: silent ones still
 * handshaking on the threads, and finished ones handed back but never taken
 * by the main loop (its base is not run at all here; clients run on their
 * own base). Nothing is reported, nothing leaks (ASan), the threads are
 * joined, and the clients see their connections closed.
 */
START_TEST(pool_free_in_flight)
{
	struct event_base *base = event_base_new(), *cbase = event_base_new();
	struct rp_tls_ctx *sctx = server_ctx(10000),
	                  *cctx = client_ctx("ws-042");
	struct rp_tls_pool *pool;
	struct end s[16];
	struct cli *cl = calloc(1, sizeof(*cl));
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char err[256];
	int lfd, raw[8], n = 0;

	memset(s, 0, sizeof(s));
	pool = rp_tls_pool_new(base, 2, err, sizeof(err));
	ck_assert_msg(pool != NULL, "%s", err);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	sl = (socklen_t)tl_loopback((struct sockaddr *)&ss, 0, 0);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&ss, sl), 0);
	ck_assert_int_eq(listen(lfd, 64), 0);
	ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&ss, &sl), 0);
	for (int i = 0; i < 8; i++) {
		raw[i] = socket(AF_INET, SOCK_STREAM, 0);
		ck_assert_int_eq(
		    connect(raw[i], (struct sockaddr *)&ss, sl), 0);
		cl->c[i].got = evbuffer_new();
		cl->c[i].t = rp_tls_connect(cctx, cbase, (struct sockaddr *)&ss,
		    (int)sl, "localhost", &cbs, &cl->c[i]);
		ck_assert_ptr_nonnull(cl->c[i].t);
		ck_assert_int_eq(rp_tls_write(cl->c[i].t, "hello\n", 6), 0);
	}
	for (int i = 0; i < 16; i++) {
		int fd = accept(lfd, NULL, NULL);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(
		    rp_tls_accept_pool(pool, sctx, fd, &cbs, &s[n++]), 0);
	}
	/* The threads finish the 8 real handshakes: handed back, waiting. */
	ck_assert(tl_run_until(cbase, clients_ready, cl, 10000));
	tl_run_until(cbase, NULL, NULL, 100);
	rp_tls_pool_free(pool);
	for (int i = 0; i < 16; i++) {
		ck_assert_int_eq(s[i].ready, 0);
		ck_assert_int_eq(s[i].closes, 0);
	}
	/* Every socket was closed: the clients see it. */
	ck_assert(tl_run_until(cbase, all_closed_8, cl, 5000));
	for (int i = 0; i < 8; i++) {
		char b[16];
		ck_assert_int_eq(read(raw[i], b, sizeof(b)), 0);
		close(raw[i]);
		evbuffer_free(cl->c[i].got);
	}
	tl_run_until(cbase, NULL, NULL, 20);
	close(lfd);
	rp_tls_ctx_free(sctx);
	rp_tls_ctx_free(cctx);
	event_base_free(base);
	event_base_free(cbase);
	free(cl);
}
END_TEST

/* 0 threads: rp_tls_accept on the base, same callbacks. */
START_TEST(pool_zero_threads_inline)
{
	struct srv v;
	struct cli *cl = calloc(1, sizeof(*cl));
	struct rp_tls_ctx *cc = client_ctx("ws-042");
	struct sockaddr_storage ss;
	int sl;

	srv_init(&v, 0, 5000);
	sl = tl_loopback((struct sockaddr *)&ss, 0, v.port);
	cl->c[0].got = evbuffer_new();
	cl->c[0].t = rp_tls_connect(cc, v.base, (struct sockaddr *)&ss, sl,
	    "localhost", &cbs, &cl->c[0]);
	ck_assert_ptr_nonnull(cl->c[0].t);
	ck_assert_int_eq(rp_tls_write(cl->c[0].t, "hello\n", 6), 0);
	ck_assert(tl_run_until(v.base, first_got, &v, 5000));
	ck_assert_str_eq(v.s[0].peer_id, "ws-042.corp.example");
	rp_tls_close(v.s[0].t);
	tl_run_until(v.base, first_client_closed, cl, 5000);
	ck_assert_int_eq(cl->c[0].closes, 1);
	evbuffer_free(cl->c[0].got);
	tl_run_until(v.base, NULL, NULL, 20);
	rp_tls_ctx_free(cc);
	srv_free(&v);
	free(cl);
}
END_TEST

static Suite *
pool_suite(void)
{
	Suite *s = suite_create("tls_pool");
	TCase *tc = tcase_create("tls_pool");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, pool_many_handshakes);
	tcase_add_test(tc, pool_failures_reported_on_main);
	tcase_add_test(tc, pool_free_in_flight);
	tcase_add_test(tc, pool_zero_threads_inline);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	main_thread = pthread_self();
	pki = tl_tmpdir("rabroker-test-tls-pool");
	if (pki == NULL || tl_mkpki(pki) != 0)
		return 1;
	sr = srunner_create(pool_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tl_rmtree(pki);
	free(pki);
	return failed == 0 ? 0 : 1;
}
