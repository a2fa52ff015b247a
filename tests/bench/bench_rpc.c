/*
 * bench_rpc.c - JSON-RPC over TLS on loopback: a benchmark, not a test.
 *
 *   (a) one connection, sequential small requests (echo): p50/p99 round
 *       trip and requests/s;
 *   (b) many connections (1,000) each doing sequential requests at the
 *       same time: requests/s, p50/p99, and the time to connect them all;
 *   (c) memory per idle TLS connection on the server side: the clients run
 *       in a forked child so the server's RSS and malloc figures are its
 *       own; the child reports the client side the same way.
 *
 * Everything is bounded in count and time. Usage:
 *   bench_rpc [-n requests] [-c connections] [-m idle_conns] [-t seconds]
 */
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "rp_conn.h"
#include "rp_tls.h"
#include "tl_util.h"

static char *pki;

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of this process (user + system), ns. */
static uint64_t
cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) *
	    1000000000u +
	    ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) *
	    1000u;
}

static size_t
heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/* ---- server ----------------------------------------------------------- */

struct server {
	struct event_base *base;
	struct rp_tls_ctx *ctx;
	struct tl_listener *l;
	uint16_t port;
	size_t ready, open, refused;
};

static void
srv_echo(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	rp_conn_reply(c, id, json_incref(params));
}

static const struct rp_method srv_methods[] = {
    {"echo", RP_ST_ANY, NULL, 0, srv_echo},
};

static void
srv_conn_close(struct rp_conn *c, const char *why, void *ctx)
{
	struct server *s = ctx;

	s->open--;
	rp_conn_unref(c); /* the reference rp_conn_new_tls gave us */
}

static const struct rp_conn_cbs srv_conn_cbs = {srv_conn_close, NULL};

static void
srv_ready(struct rp_tls *t, void *arg)
{
	struct server *s = arg;
	struct rp_conn_opts o = {0};

	o.methods = srv_methods;
	o.nmethods = 1;
	o.cbs = &srv_conn_cbs;
	o.ctx = s;
	if (rp_conn_new_tls(s->base, t, &o) == NULL) {
		rp_tls_close(t);
		return;
	}
	s->ready++;
	s->open++;
}

static void
srv_tls_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct server *s = arg;

	s->refused++;
	fprintf(stderr, "server: connection refused: %s\n", msg);
}

static const struct rp_tls_cbs srv_tls_cbs = {
    srv_ready, NULL, NULL, srv_tls_close};

static void
srv_accept(evutil_socket_t fd, void *arg)
{
	struct server *s = arg;

	if (rp_tls_accept(s->ctx, s->base, fd, &srv_tls_cbs, s) == NULL)
		close(fd);
}

static int
srv_init(struct server *s)
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
	o.handshake_timeout_ms = 30000;
	if ((s->ctx = rp_tls_ctx_new(&o, err, sizeof(err))) == NULL) {
		fprintf(stderr, "server ctx: %s\n", err);
		return -1;
	}
	s->l = tl_listen(s->base, 0, srv_accept, s, &s->port);
	return s->l != NULL ? 0 : -1;
}

/* ---- clients ---------------------------------------------------------- */

struct run;

struct client {
	struct run *r;
	struct rp_conn *c;
	uint64_t t0;
	int closed;
};

struct run {
	struct event_base *base;
	struct rp_tls_ctx *ctx;
	struct client *cl;
	size_t n;
	size_t warm;   /* warm-up answers received */
	size_t issued; /* measured requests sent */
	size_t done;   /* measured answers received */
	size_t limit;  /* measured requests at most */
	size_t errors;
	uint64_t deadline; /* ns: stop issuing after this */
	uint64_t *lat;     /* ns, one per measured answer */
	int measuring;
	size_t closed;
};

static void issue(struct client *k);

static void
reply_cb(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct client *k = arg;
	struct run *r = k->r;

	if (code != 0)
		r->errors++;
	if (!r->measuring) {
		r->warm++;
		return;
	}
	r->lat[r->done++] = now_ns() - k->t0;
	issue(k);
}

static void
issue(struct client *k)
{
	struct run *r = k->r;

	if (r->issued >= r->limit || now_ns() >= r->deadline || k->closed)
		return;
	r->issued++;
	k->t0 = now_ns();
	if (rp_conn_call(k->c, "echo",
	        json_pack("{s:s,s:I}", "m", "ping", "n", (json_int_t)r->issued),
	        10000, reply_cb, k) != 0) {
		r->issued--;
		r->errors++;
	}
}

static void
cli_close(struct rp_conn *c, const char *why, void *ctx)
{
	struct client *k = ctx;

	k->closed = 1;
	k->r->closed++;
}

static const struct rp_conn_cbs cli_cbs = {cli_close, NULL};

static struct rp_tls_ctx *
cli_ctx(void)
{
	struct rp_tls_opts o = {0};
	char err[512];
	struct rp_tls_ctx *ctx;

	o.role = RP_TLS_CLIENT;
	o.ca_file = tl_path(pki, "ca.pem");
	o.cert_file = tl_path(pki, "ws-042.pem");
	o.key_file = tl_path(pki, "ws-042-key.pem");
	if ((ctx = rp_tls_ctx_new(&o, err, sizeof(err))) == NULL)
		fprintf(stderr, "client ctx: %s\n", err);
	return ctx;
}

static int
cli_open(struct run *r, struct client *k, uint16_t port)
{
	struct sockaddr_storage ss;
	struct rp_conn_opts o = {0};
	struct rp_tls *t;
	int sl = tl_loopback((struct sockaddr *)&ss, 0, port);

	k->r = r;
	t = rp_tls_connect(r->ctx, r->base, (struct sockaddr *)&ss, sl,
	    "localhost", NULL, NULL);
	if (t == NULL)
		return -1;
	o.cbs = &cli_cbs;
	o.ctx = k;
	k->c = rp_conn_new_tls(r->base, t, &o);
	return k->c != NULL ? 0 : -1;
}

static int
warm_done(void *arg)
{
	struct run *r = arg;

	return r->warm + r->closed >= r->n;
}

static int
measured_done(void *arg)
{
	struct run *r = arg;

	return r->done + r->errors >= r->issued &&
	    (r->issued >= r->limit || now_ns() >= r->deadline);
}

static int
all_closed(void *arg)
{
	struct run *r = arg;

	return r->closed >= r->n;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double
pct_us(uint64_t *v, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return 0;
	i = (size_t)(p * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

/* Runs n connections each doing sequential requests; prints one row. */
static int
bench_conns(struct server *s, const char *label, size_t n, size_t limit,
    unsigned seconds)
{
	struct run r;
	uint64_t t0, t_conn, t1, t2, c1, c2;
	int ok = 0;

	memset(&r, 0, sizeof(r));
	r.base = s->base;
	r.n = n;
	r.limit = limit;
	if ((r.ctx = cli_ctx()) == NULL)
		return -1;
	r.cl = calloc(n, sizeof(*r.cl));
	r.lat = calloc(limit, sizeof(*r.lat));
	t0 = now_ns();
	/* Connect everyone and make one warm-up call each (queued until the
	 * handshake is done). */
	for (size_t i = 0; i < n; i++) {
		if (cli_open(&r, &r.cl[i], s->port) != 0) {
			fprintf(stderr, "%s: connect %zu failed\n", label, i);
			goto out;
		}
		rp_conn_call(r.cl[i].c, "echo", json_pack("{s:s}", "m", "warm"),
		    30000, reply_cb, &r.cl[i]);
	}
	if (!tl_run_until(s->base, warm_done, &r, 60000) || r.closed > 0 ||
	    r.errors > 0) {
		fprintf(stderr,
		    "%s: warm-up failed (%zu answers, %zu closed)\n", label,
		    r.warm, r.closed);
		goto out;
	}
	t_conn = now_ns() - t0;

	r.measuring = 1;
	r.deadline = now_ns() + (uint64_t)seconds * 1000000000u;
	t1 = now_ns();
	c1 = cpu_ns();
	for (size_t i = 0; i < n; i++)
		issue(&r.cl[i]);
	tl_run_until(s->base, measured_done, &r,
	    seconds * 1000 + 15000); /* answers in flight get time */
	t2 = now_ns();
	c2 = cpu_ns();
	qsort(r.lat, r.done, sizeof(*r.lat), cmp_u64);
	printf("%-32s %5zu %8zu %8.0f %8.1f %8.1f %8.1f %7.1f %8.1f\n", label,
	    n, r.done, (double)r.done / ((double)(t2 - t1) / 1e9),
	    pct_us(r.lat, r.done, 0.50), pct_us(r.lat, r.done, 0.99),
	    r.done ? (double)r.lat[r.done - 1] / 1000.0 : 0.0,
	    r.done ? (double)(c2 - c1) / 1000.0 / (double)r.done : 0.0,
	    (double)t_conn / 1e6);
	fflush(stdout);
	if (r.errors)
		fprintf(stderr, "%s: %zu errors\n", label, r.errors);
	ok = 1;
out:
	for (size_t i = 0; i < n; i++)
		if (r.cl[i].c != NULL)
			rp_conn_close(r.cl[i].c, "bench over");
	tl_run_until(s->base, all_closed, &r, 20000);
	tl_run_until(s->base, NULL, NULL, 50);
	for (size_t i = 0; i < n; i++)
		if (r.cl[i].c != NULL)
			rp_conn_unref(r.cl[i].c);
	rp_tls_ctx_free(r.ctx);
	free(r.cl);
	free(r.lat);
	return ok ? 0 : -1;
}

/* ---- (c) idle memory -------------------------------------------------- */

struct mem_report {
	long rss_delta, heap_delta;
	long n;
};

/* Child: opens n client connections, one call each, reports its own
 * memory growth on `wfd`, then waits for the parent to close `rfd`. */
static void
mem_child(uint16_t port, size_t n, int wfd, int rfd)
{
	struct run r;
	struct mem_report rep;
	size_t rss0, heap0;
	struct pollfd pfd = {rfd, POLLIN, 0};

	memset(&r, 0, sizeof(r));
	r.base = event_base_new();
	r.n = n;
	r.ctx = cli_ctx();
	r.cl = calloc(n, sizeof(*r.cl));
	/* Warm the libraries with one connection first. */
	rss0 = tl_rss_bytes();
	heap0 = heap_bytes();
	for (size_t i = 0; i < n; i++) {
		if (cli_open(&r, &r.cl[i], port) != 0)
			_exit(2);
		rp_conn_call(r.cl[i].c, "echo", json_pack("{s:s}", "m", "hi"),
		    30000, reply_cb, &r.cl[i]);
		if (i % 100 == 99) /* do not flood the accept queue */
			tl_run_until(r.base, NULL, NULL, 1);
	}
	if (!tl_run_until(r.base, warm_done, &r, 60000))
		_exit(3);
	tl_run_until(r.base, NULL, NULL, 200);
	rep.rss_delta = (long)tl_rss_bytes() - (long)rss0;
	rep.heap_delta = (long)heap_bytes() - (long)heap0;
	rep.n = (long)(n - r.closed);
	if (write(wfd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		_exit(4);
	/* Stay connected (the loop keeps running) until the parent says. */
	for (int i = 0; i < 600; i++) {
		tl_run_until(r.base, NULL, NULL, 50);
		if (poll(&pfd, 1, 0) > 0)
			break;
	}
	_exit(0);
}

static int
srv_count(void *arg)
{
	struct server *s = ((void **)arg)[0];
	size_t want = (size_t)(uintptr_t)((void **)arg)[1];

	return s->open >= want;
}

static int
srv_empty(void *arg)
{
	return ((struct server *)arg)->open == 0;
}

static struct {
	size_t n;
	double srv_rss, srv_heap, cli_rss, cli_heap;
} mem_out;

static void
print_memory(void)
{
	printf("\n(c) idle memory per TLS connection (%zu connections, "
	       "TLS 1.3, ECDSA P-256,\n    client certificates, rp_conn on "
	       "top, measured first in a fresh process)\n",
	    mem_out.n);
	printf("  %-28s %12s %12s\n", "side", "RSS/conn", "heap/conn");
	printf("  %-28s %8.1f KiB %8.1f KiB\n", "server (this process)",
	    mem_out.srv_rss, mem_out.srv_heap);
	printf("  %-28s %8.1f KiB %8.1f KiB\n", "client (forked child)",
	    mem_out.cli_rss, mem_out.cli_heap);
	printf("  heap = malloc'd bytes in use (mallinfo2); kernel socket "
	       "buffers are not counted\n");
}

static int
bench_memory(struct server *s, size_t n)
{
	int up[2], down[2], st;
	pid_t pid;
	size_t rss0, heap0, rss1, heap1, base_open = s->open;
	struct mem_report rep;
	void *arg[2];
	struct pollfd pfd;
	uint64_t end;

	if (pipe(up) != 0 || pipe(down) != 0)
		return -1;
	rss0 = tl_rss_bytes();
	heap0 = heap_bytes();
	fflush(stdout);
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		close(up[0]);
		close(down[1]);
		mem_child(s->port, n, up[1], down[0]);
	}
	close(up[1]);
	close(down[0]);
	/* Serve until the child has reported (all its calls answered). */
	pfd.fd = up[0];
	pfd.events = POLLIN;
	end = tl_now_ms() + 90000;
	while (tl_now_ms() < end) {
		tl_run_until(s->base, NULL, NULL, 20);
		if (poll(&pfd, 1, 0) > 0)
			break;
	}
	if (read(up[0], &rep, sizeof(rep)) != (ssize_t)sizeof(rep)) {
		fprintf(stderr, "memory: child failed\n");
		kill(pid, SIGTERM);
		waitpid(pid, &st, 0);
		return -1;
	}
	arg[0] = s;
	arg[1] = (void *)(uintptr_t)(base_open + n);
	tl_run_until(s->base, srv_count, arg, 10000);
	tl_run_until(s->base, NULL, NULL, 200); /* idle */
	rss1 = tl_rss_bytes();
	heap1 = heap_bytes();
	mem_out.n = s->open - base_open;
	mem_out.srv_rss = ((double)rss1 - (double)rss0) / 1024.0 / (double)n;
	mem_out.srv_heap = ((double)heap1 - (double)heap0) / 1024.0 / (double)n;
	mem_out.cli_rss = (double)rep.rss_delta / 1024.0 / (double)rep.n;
	mem_out.cli_heap = (double)rep.heap_delta / 1024.0 / (double)rep.n;
	close(down[1]); /* tell the child to go */
	waitpid(pid, &st, 0);
	close(up[0]);
	tl_run_until(s->base, srv_empty, s, 10000);
	return 0;
}

int
main(int argc, char **argv)
{
	struct server s;
	size_t nreq = 20000, nconns = 1000, nidle = 1000;
	unsigned secs = 10;
	int opt;

	while ((opt = getopt(argc, argv, "n:c:m:t:")) != -1) {
		switch (opt) {
		case 'n':
			nreq = strtoul(optarg, NULL, 10);
			break;
		case 'c':
			nconns = strtoul(optarg, NULL, 10);
			break;
		case 'm':
			nidle = strtoul(optarg, NULL, 10);
			break;
		case 't':
			secs = (unsigned)strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr,
			    "usage: bench_rpc [-n requests] [-c conns] "
			    "[-m idle_conns] [-t seconds]\n");
			return 2;
		}
	}
	if (nreq < 1 || nconns < 1 || secs < 1 || nreq > 10000000)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	if (tl_raise_nofile((long)(2 * (nconns > nidle ? nconns : nidle) +
	        64)) < (long)(2 * nconns + 64)) {
		fprintf(stderr, "need ulimit -n >= %zu\n", 2 * nconns + 64);
		return 1;
	}
	pki = tl_tmpdir("rabroker-bench");
	if (pki == NULL || tl_mkpki(pki) != 0 || srv_init(&s) != 0)
		return 1;

	printf("bench_rpc: JSON-RPC echo over TLS 1.3 on loopback, one "
	       "process, one event loop\n");
	printf("(client and server share the loop and the CPU; limits: %zu "
	       "requests or %u s per row;\n cpu us = process CPU time per "
	       "request, both sides; setup = connect, handshake and a first "
	       "call for all)\n\n",
	    nreq, secs);
	/* Memory first, while the process has not been through the busy
	 * rows (freed-but-kept heap would hide RSS growth). */
	if (nidle > 0 && bench_memory(&s, nidle) != 0)
		return 1;
	printf("%-32s %5s %8s %8s %8s %8s %8s %7s %8s\n", "scenario", "conns",
	    "requests", "req/s", "p50 us", "p99 us", "max us", "cpu us",
	    "setup ms");
	if (bench_conns(&s, "(a) 1 conn, sequential", 1, nreq, secs) != 0)
		return 1;
	if (bench_conns(&s, "(b) many conns, sequential each", nconns, nreq * 5,
	        secs) != 0)
		return 1;
	if (nidle > 0)
		print_memory();
	tl_listen_free(s.l);
	tl_run_until(s.base, NULL, NULL, 50);
	rp_tls_ctx_free(s.ctx);
	event_base_free(s.base);
	tl_rmtree(pki);
	free(pki);
	return 0;
}
