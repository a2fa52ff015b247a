/*
 * bench_audit.c - audit trail throughput (lines/s with fdatasync per line
 * and without) and verification speed; also generates trails for the
 * integration test.
 *
 * usage: bench_audit [DIR] [N]      benchmark in DIR ($TMPDIR or /tmp)
 *        bench_audit --gen FILE N   append N varied events to FILE
 *        bench_audit --gen-rotated FILE N   N events, rotate to FILE.1,
 *                                   reopen, N more (audit_continued)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "bk_audit.h"
#include "rp_error.h"
#include "rp_log.h"

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One realistic event per index, cycling through the offer's life. */
static int
event(struct bk_audit *a, int i)
{
	char tid[33];

	snprintf(tid, sizeof(tid), "%032x", i / 6);
	switch (i % 6) {
	case 0:
		return bk_audit_write(a, BK_AE_AUTH_SUCCEEDED,
		    json_pack("{s:s,s:s,s:s}", "user", "CORP\\alice", "mech",
		        "PLAIN", "host", "192.0.2.7"));
	case 1:
		return bk_audit_write(a, BK_AE_POLICY_DECISION,
		    json_pack("{s:s,s:s,s:s,s:s}", "helper", "CORP\\alice",
		        "machine", "ws-042.corp.example", "right", "control",
		        "rule", "policy.conf:12 allow CORP\\helpdesk control"));
	case 2:
		return bk_audit_write(a, BK_AE_TICKET_CREATED,
		    json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:b,s:[s,s],s:I}",
		        "ticket", tid, "helper", "CORP\\alice", "helper_host",
		        "192.0.2.7", "machine", "ws-042.corp.example", "mode",
		        "view", "duration_s", 600, "reverse_connect", 1,
		        "addresses", "192.0.2.7:40001", "[2001:db8::7]:40001",
		        "expires_at", (json_int_t)1795000000 + i));
	case 3:
		return bk_audit_write(a, BK_AE_SESSION_ACCEPTED,
		    json_pack("{s:s,s:s,s:I}", "ticket", tid, "user",
		        "CORP\\bob", "accepted_at",
		        (json_int_t)1795000000 + i));
	case 4:
		return bk_audit_write(a, BK_AE_SESSION_CONNECTED,
		    json_pack("{s:s,s:s,s:s,s:s,s:[s]}", "ticket", tid,
		        "from_fqdn", "helper-7.corp.example", "to_fqdn",
		        "ws-042.corp.example", "user", "CORP\\bob", "addresses",
		        "192.0.2.7:40001"));
	default:
		return bk_audit_write(a, BK_AE_SESSION_DISCONNECTED,
		    json_pack("{s:s,s:i}", "ticket", tid, "session_seconds",
		        300 + i));
	}
}

/*
 * Appends n events to path. With rotate, then moves path to path.1 (as
 * logrotate does), reopens (as on SIGHUP) and appends n more.
 */
static int
gen(const char *path, int n, int rotate)
{
	char err[512], old[4200];
	struct bk_audit *a = bk_audit_open(path, 0, err, sizeof(err));

	if (a == NULL) {
		fprintf(stderr, "bench_audit: %s\n", err);
		return 1;
	}
	bk_audit_set_sync(a, 0);
	for (int i = 0; i < n; i++)
		if (event(a, i) != RP_OK)
			return 1;
	if (rotate) {
		snprintf(old, sizeof(old), "%s.1", path);
		if (rename(path, old) == -1 ||
		    bk_audit_reopen(a, err, sizeof(err)) == -1) {
			fprintf(stderr, "bench_audit: rotate: %s\n", err);
			return 1;
		}
		for (int i = 0; i < n; i++)
			if (event(a, n + i) != RP_OK)
				return 1;
	}
	bk_audit_close(a);
	return 0;
}

/* A reconnect flood: agent_online only, synced in batches. */
static int
bench_flood(const char *path, int n)
{
	char err[512], host[32];
	struct bk_audit *a;
	double t0, dt;

	unlink(path);
	if ((a = bk_audit_open(path, 0, err, sizeof(err))) == NULL ||
	    bk_audit_start_sync(a, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_audit: %s\n", err);
		bk_audit_close(a);
		return -1;
	}
	t0 = now_s();
	for (int i = 0; i < n; i++) {
		snprintf(host, sizeof(host), "10.%d.%d.%d", i >> 16,
		    (i >> 8) & 255, i & 255);
		if (bk_audit_write(a, BK_AE_AGENT_ONLINE,
		        json_pack("{s:s,s:s}", "machine", "ws-000.corp.example",
		            "host", host)) != RP_OK)
			return -1;
	}
	bk_audit_close(a);
	dt = now_s() - t0;
	printf("write %-18s n=%-7d %9.0f lines/s  (%.3f ms/line)\n",
	    "agent_online batch", n, n / dt, 1e3 * dt / n);
	return 0;
}

static int
bench(const char *path, int n, int sync)
{
	char err[512];
	struct bk_audit *a;
	double t0, dt;

	unlink(path);
	if ((a = bk_audit_open(path, 0, err, sizeof(err))) == NULL ||
	    bk_audit_start_sync(a, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_audit: %s\n", err);
		bk_audit_close(a);
		return -1;
	}
	bk_audit_set_sync(a, sync);
	t0 = now_s();
	for (int i = 0; i < n; i++)
		if (event(a, i) != RP_OK)
			return -1;
	dt = now_s() - t0;
	bk_audit_close(a);
	printf("write %-18s n=%-7d %9.0f lines/s  (%.3f ms/line)\n",
	    sync ? "fdatasync/line" : "no sync", n, n / dt, 1e3 * dt / n);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *dir;
	char path[4096], why[512];
	unsigned long lines, bad;
	struct statfs sf;
	double t0, dt;
	int n;

	log_init("bench_audit", LOG_LVL_WARN, 0);
	if (argc == 4 && strcmp(argv[1], "--gen") == 0)
		return gen(argv[2], atoi(argv[3]), 0);
	if (argc == 4 && strcmp(argv[1], "--gen-rotated") == 0)
		return gen(argv[2], atoi(argv[3]), 1);
	dir = argc > 1 ? argv[1] : getenv("TMPDIR");
	n = argc > 2 ? atoi(argv[2]) : 2000;
	if (dir == NULL)
		dir = "/tmp";
	if (statfs(dir, &sf) == 0)
		printf("dir %s (filesystem magic 0x%lx%s)\n", dir,
		    (unsigned long)sf.f_type,
		    sf.f_type == 0x01021994 ? ", tmpfs: fsync is free here"
		                            : "");
	snprintf(
	    path, sizeof(path), "%s/bench_audit.%d.log", dir, (int)getpid());
	if (bench(path, n, 1) == -1 || bench_flood(path, 20 * n) == -1 ||
	    bench(path, 20 * n, 0) == -1)
		return 1;
	t0 = now_s();
	if (bk_audit_verify_file(path, &lines, &bad, why, sizeof(why)) != 0) {
		fprintf(stderr, "bench_audit: %s\n", why);
		return 1;
	}
	dt = now_s() - t0;
	printf("verify                   n=%-7lu %9.0f lines/s\n", lines,
	    lines / dt);
	unlink(path);
	return 0;
}
