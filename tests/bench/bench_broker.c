/*
 * bench_broker.c - the real rabrokerd under N idle agent connections:
 * resident memory per connection (TLS + rp_conn + peer record, after an
 * agent hello), ping round trip, and how long a SIGTERM drain of all of
 * them takes.
 *
 *   bench_broker [-n CONNECTIONS]     (default 2000, at most 20000)
 *
 * No directory (agents are accepted on their certificate), loopback only.
 * All connections present the same machine certificate; only hello is
 * sent, so none replaces another.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "tl_broker.h"
#include "tl_util.h"

int
main(int argc, char **argv)
{
	struct event_base *base;
	struct tl_broker b;
	struct tl_broker_opts o;
	struct tl_client **c;
	int n = 2000, ch, got = 0, i, st;
	size_t rss0, rss1;
	uint64_t t0, t1;
	unsigned ms = 0;
	char why[256];

	while ((ch = getopt(argc, argv, "n:")) != -1)
		if (ch == 'n')
			n = atoi(optarg);
	if (n < 1 || n > 20000) {
		fprintf(stderr, "usage: bench_broker [-n 1..20000]\n");
		return 2;
	}
	tl_raise_nofile(2 * n + 256);
	if ((base = event_base_new()) == NULL ||
	    (c = calloc((size_t)n, sizeof(*c))) == NULL)
		return 1;
	memset(&o, 0, sizeof(o));
	o.drain_timeout_s = 60;
	o.log_level = "warn";
	if (tl_broker_setup(&b, &o) != 0) {
		fprintf(stderr, "setup failed\n");
		return 1;
	}
	if (tl_broker_start(&b) != 0) {
		fprintf(stderr, "broker did not start (log: %s)\n", b.log);
		return 1;
	}
	rss0 = tl_broker_rss(&b);
	t0 = tl_now_ms();
	for (i = 0; i < n; i++) {
		c[i] = tl_client_connect(
		    base, b.pki, b.port, "ws-042", 10000, why, sizeof(why));
		if (c[i] == NULL) {
			fprintf(stderr, "connection %d: %s\n", i, why);
			break;
		}
		if (tl_client_call(c[i], "hello",
		        json_pack("{s:i, s:s}", "version", 1, "role", "agent"),
		        10000, NULL) != 0) {
			fprintf(stderr, "hello %d failed\n", i);
			tl_client_free(c[i]);
			c[i] = NULL;
			break;
		}
		got++;
	}
	t1 = tl_now_ms();
	tl_run_until(base, NULL, NULL, 500);
	rss1 = tl_broker_rss(&b);
	printf("connections: %d idle agent connections (TLS 1.3, hello done) "
	       "in %llu ms (%.2f ms each, client and broker on %ld CPUs)\n",
	    got, (unsigned long long)(t1 - t0),
	    got ? (double)(t1 - t0) / got : 0.0, sysconf(_SC_NPROCESSORS_ONLN));
	printf("broker RSS: %zu KiB before, %zu KiB after: %zu bytes per "
	       "connection\n",
	    rss0 / 1024, rss1 / 1024, got ? (rss1 - rss0) / (size_t)got : 0);
	if (got > 0) {
		int rounds = 1000;
		t0 = tl_now_ms();
		for (i = 0; i < rounds; i++)
			if (tl_client_call(c[i % got], "ping", json_object(),
			        5000, NULL) != 0)
				break;
		t1 = tl_now_ms();
		printf("ping: %d round trips in %llu ms (%.3f ms each)\n", i,
		    (unsigned long long)(t1 - t0),
		    i ? (double)(t1 - t0) / i : 0.0);
	}
	/* Drain: the broker closes every connection; our loop must run to
	 * answer the close_notify, so signal, then spin the loop. */
	t0 = tl_now_ms();
	tl_broker_signal(&b, SIGTERM);
	for (;;) {
		int open = 0;
		for (i = 0; i < got; i++)
			open += c[i] != NULL && !tl_client_closed(c[i]);
		if (open == 0 || tl_now_ms() - t0 > 60000)
			break;
		tl_run_until(base, NULL, NULL, 50);
	}
	st = tl_broker_stop(&b, 0, 60000, &ms);
	printf("SIGTERM drain of %d connections: all closed and exit %d "
	       "after %llu ms\n",
	    got, st, (unsigned long long)(tl_now_ms() - t0));
	for (i = 0; i < got; i++)
		tl_client_free(c[i]);
	free(c);
	tl_broker_destroy(&b);
	event_base_free(base);
	return st == 0 ? 0 : 1;
}
