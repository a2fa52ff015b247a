/*
 * bench_store.c - ticket store throughput: puts/s and gets/s for each
 * backend (sqlite as the broker opens it: every put a NORMAL commit, no
 * fsync; sqlite "?sync=full": an fsync in every commit, which is what an
 * accepted ticket cost on the event loop before the sync thread; memory),
 * plus list_open and expire_before over the whole table; then durable
 * writes through the sync thread: one at a time (the latency one offer
 * sees between "accepted" written and the helper told) and in a burst
 * (group commit).
 *
 * usage: bench_store [DIR] [N]   (DIR defaults to $TMPDIR or /tmp; use a
 * directory on the disk the broker will use: fsync cost is the point)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "bk_store.h"
#include "bk_ticket.h"
#include "rp_error.h"
#include "rp_log.h"

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
count_cb(const struct bk_ticket *t, void *arg)
{
	(void)t;
	(*(size_t *)arg)++;
	return 0;
}

static int
run(const char *label, const char *backend, const char *spec, int n)
{
	static const char *const addrs[] = {
	    "192.0.2.7:40001", "[2001:db8::7]:40001"};
	struct bk_ticket_params p = {.helper = "CORP\\alice",
	    .helper_host = "192.0.2.7",
	    .addrs = addrs,
	    .naddrs = 2,
	    .machine = "ws-042.corp.example",
	    .mode = BK_MODE_VIEW,
	    .rule = "policy.conf:12 allow CORP\\helpdesk view",
	    .duration_s = 600,
	    .max_duration_s = 3600};
	struct bk_ticket **t = calloc((size_t)n, sizeof(*t)), *g;
	struct bk_store *s;
	char err[512];
	double t0, put_s, upd_s, get_s, list_s, exp_s;
	size_t seen = 0, expired = 0;
	int i;

	if ((s = bk_store_open(backend, spec, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s: %s\n", label, err);
		return -1;
	}
	for (i = 0; i < n; i++)
		if (bk_ticket_create(&p, 1000 + i, &t[i], err, sizeof(err)))
			return -1;
	t0 = now_s();
	for (i = 0; i < n; i++)
		if (bk_store_put(s, t[i]) != RP_OK)
			return -1;
	put_s = now_s() - t0;
	t0 = now_s();
	for (i = 0; i < n; i++) {
		bk_ticket_transition(t[i], BK_TS_PROMPTING, 2000);
		if (bk_store_put(s, t[i]) != RP_OK)
			return -1;
	}
	upd_s = now_s() - t0;
	t0 = now_s();
	for (i = 0; i < n; i++) {
		/* Spread the lookups over the table. */
		int k = (int)(((unsigned)i * 2654435761u) % (unsigned)n);

		if (bk_store_get(s, t[k]->id, &g) != RP_OK)
			return -1;
		bk_ticket_free(g);
	}
	get_s = now_s() - t0;
	t0 = now_s();
	bk_store_list_open(s, count_cb, &seen);
	list_s = now_s() - t0;
	t0 = now_s();
	bk_store_expire_before(s, 1000 + n / 2 + 600, count_cb, &expired);
	exp_s = now_s() - t0;
	printf("%-16s n=%-6d put %9.0f/s  update %9.0f/s  get %9.0f/s  "
	       "list_open(%zu) %.3f s  expire(%zu) %.3f s\n",
	    label, n, n / put_s, n / upd_s, n / get_s, seen, list_s, expired,
	    exp_s);
	for (i = 0; i < n; i++)
		bk_ticket_free(t[i]);
	free(t);
	bk_store_close(s);
	return 0;
}

static int ndone;

static void
done_cb(int rc, void *arg)
{
	(void)arg;
	if (rc == RP_OK)
		ndone++;
}

static int
cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Runs the loop until ndone reaches want or 30 s pass. */
static int
wait_done(struct event_base *base, int want)
{
	double t0 = now_s();

	while (ndone < want && now_s() - t0 < 30)
		event_base_loop(base, EVLOOP_ONCE);
	return ndone >= want ? 0 : -1;
}

static int
durable(const char *path, int n)
{
	static const char *const addrs[] = {"192.0.2.7:40001"};
	struct bk_ticket_params p = {.helper = "CORP\\alice",
	    .helper_host = "192.0.2.7",
	    .addrs = addrs,
	    .naddrs = 1,
	    .machine = "ws-042.corp.example",
	    .mode = BK_MODE_VIEW,
	    .rule = "r",
	    .duration_s = 600,
	    .max_duration_s = 3600};
	struct event_base *base = event_base_new();
	struct bk_ticket *t;
	struct bk_store *s;
	double *lat = calloc((size_t)n, sizeof(double)), t0, loop_s = 0, burst;
	char err[512];
	int i;

	if (base == NULL || lat == NULL ||
	    (s = bk_store_open("sqlite", path, err, sizeof(err))) == NULL ||
	    bk_store_set_loop(s, base) != 0)
		return -1;
	if (bk_ticket_create(&p, 1000, &t, err, sizeof(err)) != RP_OK)
		return -1;
	bk_ticket_transition(t, BK_TS_PROMPTING, 1000);
	bk_ticket_transition(t, BK_TS_ACCEPTED, 1001);
	ndone = 0;
	for (i = 0; i < n; i++) {
		t0 = now_s();
		bk_store_put_durable(s, t, done_cb, NULL);
		loop_s += now_s() - t0;
		if (wait_done(base, i + 1) == -1)
			return -1;
		lat[i] = now_s() - t0;
	}
	qsort(lat, (size_t)n, sizeof(double), cmp_d);
	printf("%-16s n=%-6d one at a time: on the loop %.1f us per write, "
	       "durable after p50 %.2f ms p99 %.2f ms\n",
	    "sqlite durable", n, 1e6 * loop_s / n, 1e3 * lat[n / 2],
	    1e3 * lat[(int)(0.99 * (n - 1))]);
	ndone = 0;
	t0 = now_s();
	for (i = 0; i < n; i++)
		bk_store_put_durable(s, t, done_cb, NULL);
	loop_s = now_s() - t0;
	if (wait_done(base, n) == -1)
		return -1;
	burst = now_s() - t0;
	printf("%-16s n=%-6d burst: %.0f durable writes/s (%.1f us each on "
	       "the loop)\n",
	    "sqlite durable", n, n / burst, 1e6 * loop_s / n);
	bk_ticket_free(t);
	bk_store_close(s);
	event_base_free(base);
	free(lat);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : getenv("TMPDIR");
	int n = argc > 2 ? atoi(argv[2]) : 2000;
	char path[4096], spec[4200];
	struct statfs sf;

	log_init("bench_store", LOG_LVL_WARN, 0);
	if (dir == NULL)
		dir = "/tmp";
	if (statfs(dir, &sf) == 0)
		printf("dir %s (filesystem magic 0x%lx%s)\n", dir,
		    (unsigned long)sf.f_type,
		    sf.f_type == 0x01021994 ? ", tmpfs: fsync is free here"
		                            : "");
	snprintf(
	    path, sizeof(path), "%s/bench_store.%d.db", dir, (int)getpid());
	snprintf(spec, sizeof(spec), "%s?sync=full", path);
	if (run("sqlite FULL", "sqlite", spec, n) == -1)
		return 1;
	unlink(path);
	if (run("sqlite (broker)", "sqlite", path, n) == -1)
		return 1;
	unlink(path);
	if (durable(path, n) == -1)
		return 1;
	if (run("memory", "memory", "", n) == -1)
		return 1;
	unlink(path);
	snprintf(spec, sizeof(spec), "%s-wal", path);
	unlink(spec);
	snprintf(spec, sizeof(spec), "%s-shm", path);
	unlink(spec);
	return 0;
}
