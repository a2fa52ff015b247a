/*
 * bench_store.c - ticket store throughput: puts/s and gets/s for each
 * backend (sqlite with synchronous=FULL, the default; sqlite with NORMAL;
 * memory), plus list_open and expire_before over the whole table.
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
	if (run("sqlite FULL", "sqlite", path, n) == -1)
		return 1;
	unlink(path);
	snprintf(spec, sizeof(spec), "%s?sync=normal", path);
	if (run("sqlite NORMAL", "sqlite", spec, n) == -1)
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
