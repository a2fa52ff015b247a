/*
 * bk_metrics.h - the broker's metrics and health endpoint (docs/OPERATIONS.md).
 *
 * A small HTTP server (libevent evhttp) on its own address, by default
 * 127.0.0.1:9464, separate from the TLS port:
 *
 *   GET /metrics   Prometheus text format 0.0.4
 *   GET /health    200 {"status":"ok","directory":"up|down|unknown|none",
 *                       "audit":"ok|failed"}; 503 with "status":"fail"
 *                  when the audit trail has failed or the directory is
 *                  down, "status":"draining" after SIGTERM
 *
 * Gauges are read from what the broker already holds (agent registry,
 * open offers, relays, directory statistics, audit state) when scraped.
 * Counters are fed by the audit trail: every event the broker writes is
 * seen by bk_metrics (bk_audit_set_observer), so an offer outcome or an
 * authentication failure is counted exactly when it is audited. What is
 * not audited is counted with bk_metrics_count().
 */
#ifndef BK_METRICS_H
#define BK_METRICS_H

#include <stddef.h>

struct bk_ctx;
struct bk_metrics;

#define BK_METRICS_DEFAULT_LISTEN "127.0.0.1:9464"

enum bk_metric {
	BK_M_OFFER,        /* label: outcome ("accepted", "offline", ...) */
	BK_M_AUTH_FAILURE, /* label: reason ("auth_failed", ...) */
	BK_M_CONN_REFUSED, /* label: reason ("pending_per_address") */
};

/*
 * Checks a [metrics] listen value: "host:port" with a numeric IPv4 address
 * or a bracketed IPv6 one, port 1..65535, and a loopback address unless
 * allow_remote. 0, or -1 with why filled.
 */
int bk_metrics_check_listen(
    const char *listen, int allow_remote, char *why, size_t whylen);

/*
 * After ctx->base, ctx->cfg and ctx->audit are set: allocates ctx->metrics,
 * watches the audit trail and, when [metrics] listen is set, binds the
 * HTTP endpoint. A bind failure is logged and leaves the endpoint off (the
 * broker itself goes on); returns -1 only when out of memory.
 */
int bk_metrics_init(struct bk_ctx *ctx);
void bk_metrics_free(struct bk_ctx *ctx);
/* The port bound (0 when off). */
unsigned bk_metrics_port(const struct bk_ctx *ctx);

/* "none" (no [directory]), "unknown" (no operation yet), "up", "down". */
const char *bk_metrics_dir_state(struct bk_ctx *ctx);

/* Adds one to counter m with label (NULL: "unknown"); no-op without
 * ctx->metrics. Labels are copied; at most 64 distinct per metric. */
void bk_metrics_count(struct bk_ctx *ctx, enum bk_metric m, const char *label);

#endif
