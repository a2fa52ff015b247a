/*
 * bk_metrics.c - Prometheus metrics and a health check over plain HTTP on
 * a local address (bk_metrics.h, docs/OPERATIONS.md).
 *
 * Why plain HTTP: the endpoint carries no secret (counts, never names or
 * tickets) and is bound to loopback unless the operator says otherwise
 * (allow_remote), in the manner of node_exporter behind a local scraper.
 *
 * Counters come from the audit trail's observer, so that a number on the
 * dashboard always has the matching lines in the trail; gauges are read at
 * scrape time. Label sets are bounded (64 per metric) so that a peer cannot
 * grow memory by inventing reasons.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "az_dir.h"
#include "bk.h"
#include "bk_audit.h"
#include "bk_config.h"
#include "bk_metrics.h"
#include "bk_offer.h"
#include "bk_relay.h"
#include "rp_log.h"

#define LABELS_MAX 64
#define LABEL_LEN 48
#define HTTP_TIMEOUT_S 10
#define HTTP_MAX_HEADERS 8192

struct counter {
	char label[LABELS_MAX][LABEL_LEN];
	unsigned long long v[LABELS_MAX];
	size_t n;
};

struct bk_metrics {
	struct bk_ctx *ctx;
	struct evhttp *http;
	unsigned port;
	int64_t start_time;  /* unix seconds */
	uint64_t audit_seq0; /* seq of the trail when we started */
	struct counter offers, auth, refused;
};

/* Outcomes always present (0 until they happen), in this order. */
static const char *const offer_outcomes[] = {"accepted", "declined",
    "timed_out", "forbidden", "offline", "cancelled", "expired", "revoked"};
/* The SASL layer deliberately does not tell a wrong password from an
 * unknown user (both are "authentication failed"): neither does this. */
static const char *const auth_reasons[] = {
    "auth_failed", "certificate", "mechanism", "rate_limited", "other"};

int
bk_metrics_check_listen(
    const char *listen, int allow_remote, char *why, size_t whylen)
{
	char host[64];
	const char *colon, *hb, *he;
	unsigned char buf[16];
	unsigned long port;
	char *end;
	int v6;

	if (listen[0] == '[') {
		hb = listen + 1;
		he = strchr(listen, ']');
		if (he == NULL || he[1] != ':') {
			snprintf(why, whylen, "expected [IPv6]:port");
			return -1;
		}
		colon = he + 1;
		v6 = 1;
	} else {
		hb = listen;
		colon = strrchr(listen, ':');
		if (colon == NULL) {
			snprintf(why, whylen, "expected host:port");
			return -1;
		}
		he = colon;
		v6 = 0;
	}
	if ((size_t)(he - hb) >= sizeof(host) || he == hb) {
		snprintf(why, whylen, "bad address");
		return -1;
	}
	memcpy(host, hb, (size_t)(he - hb));
	host[he - hb] = '\0';
	if (inet_pton(v6 ? AF_INET6 : AF_INET, host, buf) != 1) {
		snprintf(why, whylen,
		    "\"%s\" is not a numeric %s address (127.0.0.1, [::1])",
		    host, v6 ? "IPv6" : "IPv4");
		return -1;
	}
	port = strtoul(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || port < 1 ||
	    port > 65535) {
		snprintf(why, whylen, "bad port (1..65535)");
		return -1;
	}
	if (!allow_remote) {
		static const unsigned char lo6[16] = {[15] = 1};
		int loop = v6 ? memcmp(buf, lo6, 16) == 0 : buf[0] == 127;
		if (!loop) {
			snprintf(why, whylen,
			    "%s is not a loopback address; metrics carry no "
			    "authentication: set allow_remote = yes to expose "
			    "them anyway",
			    host);
			return -1;
		}
	}
	return 0;
}

static void
counter_add(struct counter *c, const char *label, unsigned long long n)
{
	size_t i;

	if (label == NULL || *label == '\0')
		label = "unknown";
	for (i = 0; i < c->n; i++)
		if (strcmp(c->label[i], label) == 0) {
			c->v[i] += n;
			return;
		}
	if (c->n == LABELS_MAX) {
		/* Full: fold into the last slot rather than grow. */
		c->v[LABELS_MAX - 1] += n;
		return;
	}
	snprintf(c->label[c->n], LABEL_LEN, "%s", label);
	c->v[c->n++] = n;
}

void
bk_metrics_count(struct bk_ctx *ctx, enum bk_metric m, const char *label)
{
	struct bk_metrics *mt = ctx != NULL ? ctx->metrics : NULL;

	if (mt == NULL)
		return;
	switch (m) {
	case BK_M_OFFER:
		counter_add(&mt->offers, label, 1);
		break;
	case BK_M_AUTH_FAILURE:
		counter_add(&mt->auth, label, 1);
		break;
	case BK_M_CONN_REFUSED:
		counter_add(&mt->refused, label, 1);
		break;
	}
}

/* The audit reason of a failed login is free text (the SASL layer's
 * message); the label is one of a few fixed words. */
static const char *
auth_reason_label(const char *r)
{
	if (r == NULL)
		return "other";
	if (strcmp(r, "rate_limited") == 0)
		return "rate_limited";
	if (strcasestr(r, "certificate"))
		return "certificate";
	if (strcasestr(r, "mechanism"))
		return "mechanism";
	if (strcasestr(r, "authentication failed") ||
	    strcasestr(r, "auth_failed"))
		return "auth_failed";
	return "other";
}

static const char *
fstr(const json_t *f, const char *key)
{
	return json_string_value(json_object_get(f, key));
}

/* Every audited event passes here (bk_audit_set_observer). */
static void
on_audit(void *arg, enum bk_audit_event ev, const json_t *f)
{
	struct bk_metrics *mt = arg;
	const char *right, *r;

	switch (ev) {
	case BK_AE_SESSION_ACCEPTED:
		counter_add(&mt->offers, "accepted", 1);
		break;
	case BK_AE_OFFER_DECLINED:
		/* The agent went away before the answer: not the user's no. */
		r = fstr(f, "reason");
		counter_add(&mt->offers,
		    r != NULL && strcmp(r, "agent_offline") == 0 ? "offline"
		                                                 : "declined",
		    1);
		break;
	case BK_AE_OFFER_TIMED_OUT:
		counter_add(&mt->offers, "timed_out", 1);
		break;
	case BK_AE_OFFER_CANCELLED:
		counter_add(&mt->offers, "cancelled", 1);
		break;
	case BK_AE_TICKET_EXPIRED:
		counter_add(&mt->offers, "expired", 1);
		break;
	case BK_AE_TICKET_REVOKED:
		counter_add(&mt->offers, "revoked", 1);
		break;
	case BK_AE_POLICY_DECISION:
		/* offer.create's decision; machines.list does not audit. */
		right = fstr(f, "right");
		if (right != NULL &&
		    (strcmp(right, "none") == 0 || strcmp(right, "deny") == 0))
			counter_add(&mt->offers, "forbidden", 1);
		break;
	case BK_AE_AUTH_FAILED:
		counter_add(&mt->auth, auth_reason_label(fstr(f, "reason")), 1);
		break;
	default:
		break;
	}
}

/* ---- the text format ---------------------------------------------------- */

static void
head(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(
	    b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
gauge(struct evbuffer *b, const char *name, const char *help,
    unsigned long long v)
{
	head(b, name, "gauge", help);
	evbuffer_add_printf(b, "%s %llu\n", name, v);
}

static void
counter_out(struct evbuffer *b, const char *name, const char *label,
    const struct counter *c, const char *help)
{
	head(b, name, "counter", help);
	for (size_t i = 0; i < c->n; i++)
		evbuffer_add_printf(b, "%s{%s=\"%s\"} %llu\n", name, label,
		    c->label[i], c->v[i]);
}

static void
dir_histogram(struct evbuffer *b, const struct az_dir_stats *s)
{
	static const char *const le[12] = {"0.0005", "0.001", "0.002", "0.005",
	    "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "+Inf"};
	static const char *name = "rabroker_directory_latency_seconds";
	unsigned long long cum = 0;

	head(b, name, "histogram",
	    "Time of one directory operation (search, bind), queue wait "
	    "included.");
	for (size_t i = 0; i < 12; i++) {
		cum += s->lat_buckets[i];
		evbuffer_add_printf(
		    b, "%s_bucket{le=\"%s\"} %llu\n", name, le[i], cum);
	}
	/* Seconds, printed from integer microseconds (no locale, no
	 * rounding surprises). */
	evbuffer_add_printf(b, "%s_sum %llu.%06llu\n", name,
	    s->lat_sum_us / 1000000, s->lat_sum_us % 1000000);
	evbuffer_add_printf(b, "%s_count %llu\n", name, cum);
}

static const char *
dir_state(struct bk_ctx *ctx, struct az_dir_stats *s)
{
	memset(s, 0, sizeof(*s));
	if (ctx->dir == NULL)
		return "none";
	az_dir_get_stats(ctx->dir, s);
	if (s->up)
		return "up";
	/* Connections are opened on first use: before any operation the
	 * state is not known yet. */
	return s->ops == 0 ? "unknown" : "down";
}

const char *
bk_metrics_dir_state(struct bk_ctx *ctx)
{
	struct az_dir_stats s;

	return dir_state(ctx, &s);
}

static void
render(struct bk_metrics *mt, struct evbuffer *b)
{
	struct bk_ctx *ctx = mt->ctx;
	struct az_dir_stats ds;
	const char *dstate = dir_state(ctx, &ds);
	uint64_t seq = ctx->audit ? bk_audit_seq(ctx->audit) : 0;
	int aok = ctx->audit ? bk_audit_ok(ctx->audit) : 0;

	gauge(b, "rabroker_agents_online",
	    "Machines whose agent is connected and registered.",
	    ctx->agents ? bk_agents_count(ctx->agents) : 0);
	gauge(b, "rabroker_helpers_connected",
	    "Authenticated helper connections.", ctx->nhelpers);
	counter_out(b, "rabroker_offers_total", "outcome", &mt->offers,
	    "Offers by outcome (accepted = the user consented).");
	counter_out(b, "rabroker_auth_failures_total", "reason", &mt->auth,
	    "Failed helper logins by reason.");
	counter_out(b, "rabroker_connections_refused_total", "reason",
	    &mt->refused, "Connections closed at accept, by reason.");
	gauge(b, "rabroker_tickets_open",
	    "Open tickets (offered, prompting, accepted, connected).",
	    bk_offers_open_count(ctx->offers));
	gauge(b, "rabroker_relays_active", "Relay pairs waiting or splicing.",
	    ctx->relays ? bk_relays_active(ctx->relays) : 0);
	head(b, "rabroker_audit_lines_total", "counter",
	    "Audit lines written by this process.");
	evbuffer_add_printf(b, "rabroker_audit_lines_total %llu\n",
	    (unsigned long long)(seq >= mt->audit_seq0 ? seq - mt->audit_seq0
	                                               : 0));
	gauge(b, "rabroker_audit_ok",
	    "1 while the audit trail is writable; 0 = offers are refused.",
	    (unsigned long long)aok);
	gauge(b, "rabroker_directory_up",
	    "1 if the last directory operation reached it (0 with no "
	    "directory).",
	    strcmp(dstate, "up") == 0);
	if (ctx->dir != NULL) {
		dir_histogram(b, &ds);
		head(b, "rabroker_directory_errors_total", "counter",
		    "Directory operations that failed.");
		evbuffer_add_printf(
		    b, "rabroker_directory_errors_total %llu\n", ds.errors);
		gauge(b, "rabroker_directory_queue",
		    "Directory requests waiting for a worker.", ds.queued);
		head(b, "rabroker_directory_cache_hits_total", "counter",
		    "Name and group lookups answered from the cache.");
		evbuffer_add_printf(b,
		    "rabroker_directory_cache_hits_total %llu\n",
		    ds.cache_hits);
	}
	gauge(b, "rabroker_draining", "1 after SIGTERM (no new offers).",
	    (unsigned long long)(ctx->draining != 0));
	head(b, "process_start_time_seconds", "gauge",
	    "Start time of the process since unix epoch in seconds.");
	evbuffer_add_printf(
	    b, "process_start_time_seconds %lld\n", (long long)mt->start_time);
}

static int
is_get(struct evhttp_request *req)
{
	enum evhttp_cmd_type t = evhttp_request_get_command(req);
	return t == EVHTTP_REQ_GET || t == EVHTTP_REQ_HEAD;
}

static void
on_metrics(struct evhttp_request *req, void *arg)
{
	struct bk_metrics *mt = arg;
	struct evbuffer *b;

	if (!is_get(req)) {
		evhttp_send_error(req, 405, "only GET");
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	render(mt, b);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void
on_health(struct evhttp_request *req, void *arg)
{
	struct bk_metrics *mt = arg;
	struct bk_ctx *ctx = mt->ctx;
	struct az_dir_stats ds;
	const char *dstate = dir_state(ctx, &ds);
	int aok = ctx->audit != NULL && bk_audit_ok(ctx->audit);
	int good = aok && strcmp(dstate, "down") != 0 && !ctx->draining;
	struct evbuffer *b;

	if (!is_get(req)) {
		evhttp_send_error(req, 405, "only GET");
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	evbuffer_add_printf(b,
	    "{\"status\":\"%s\",\"directory\":\"%s\",\"audit\":\"%s\"}\n",
	    good                ? "ok"
	        : ctx->draining ? "draining"
	                        : "fail",
	    dstate, aok ? "ok" : "failed");
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "application/json");
	evhttp_send_reply(
	    req, good ? 200 : 503, good ? "OK" : "Service Unavailable", b);
	evbuffer_free(b);
}

static void
on_other(struct evhttp_request *req, void *arg)
{
	evhttp_send_error(req, 404, "try /metrics or /health");
}

/* Binds the endpoint; 0, or -1 with err filled. */
static int
start_http(struct bk_metrics *mt, const char *listen, char *err, size_t len)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[64];
	const char *colon = strrchr(listen, ':');
	const char *hb = listen, *he = colon;
	unsigned port;

	if (listen[0] == '[') {
		hb = listen + 1;
		he = strchr(listen, ']');
	}
	snprintf(host, sizeof(host), "%.*s", (int)(he - hb), hb);
	port = (unsigned)strtoul(colon + 1, NULL, 10);
	if ((mt->http = evhttp_new(mt->ctx->base)) == NULL) {
		snprintf(err, len, "out of memory");
		return -1;
	}
	evhttp_set_timeout(mt->http, HTTP_TIMEOUT_S);
	evhttp_set_max_headers_size(mt->http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(mt->http, 0);
	evhttp_set_allowed_methods(mt->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_cb(mt->http, "/metrics", on_metrics, mt);
	evhttp_set_cb(mt->http, "/health", on_health, mt);
	evhttp_set_gencb(mt->http, on_other, mt);
	bs = evhttp_bind_socket_with_handle(mt->http, host, (uint16_t)port);
	if (bs == NULL) {
		snprintf(err, len, "cannot listen on %s: %s", listen,
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		evhttp_free(mt->http);
		mt->http = NULL;
		return -1;
	}
	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss,
	        &sl) == 0)
		mt->port = ntohs(ss.ss_family == AF_INET6
		        ? ((struct sockaddr_in6 *)&ss)->sin6_port
		        : ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

int
bk_metrics_init(struct bk_ctx *ctx)
{
	struct bk_metrics *mt;
	const struct bk_config *c = ctx->cfg;
	char err[300];

	if ((mt = calloc(1, sizeof(*mt))) == NULL)
		return -1;
	mt->ctx = ctx;
	mt->start_time = (int64_t)time(NULL);
	mt->audit_seq0 = ctx->audit ? bk_audit_seq(ctx->audit) : 0;
	for (size_t i = 0; i < sizeof(offer_outcomes) / sizeof(char *); i++)
		counter_add(&mt->offers, offer_outcomes[i], 0);
	for (size_t i = 0; i < sizeof(auth_reasons) / sizeof(char *); i++)
		counter_add(&mt->auth, auth_reasons[i], 0);
	counter_add(&mt->refused, "pending_per_address", 0);
	ctx->metrics = mt;
	bk_audit_set_observer(ctx->audit, on_audit, mt);
	if (c->metrics_listen == NULL || c->metrics_listen[0] == '\0') {
		log_info("metrics: off ([metrics] listen is empty)");
		return 0;
	}
	if (start_http(mt, c->metrics_listen, err, sizeof(err)) != 0) {
		log_warnx("metrics: %s; metrics and health are off — change "
		          "`listen` in [metrics] of %s",
		    err, c->path);
		return 0;
	}
	log_info("metrics on http://%s/metrics, health on /health",
	    c->metrics_listen);
	return 0;
}

unsigned
bk_metrics_port(const struct bk_ctx *ctx)
{
	return ctx->metrics != NULL ? ctx->metrics->port : 0;
}

void
bk_metrics_free(struct bk_ctx *ctx)
{
	struct bk_metrics *mt = ctx->metrics;

	if (mt == NULL)
		return;
	bk_audit_set_observer(ctx->audit, NULL, NULL);
	if (mt->http != NULL)
		evhttp_free(mt->http);
	free(mt);
	ctx->metrics = NULL;
}
