/*
 * cl_offer.c - raoffer's flow on one event loop (see cl_offer.h).
 *
 * One struct cl_offer holds everything; broker connections are struct
 * bconn (the main one, and for the relay a second one). The order of an
 * offer is fixed by seed 000: the listener is bound and its real ports
 * read back before offer.create is sent, so the addresses the agent gets
 * are those the kernel gave us.
 *
 * The session: the first reverse connection whose PSK handshake succeeds
 * (direct, or inside the relay) becomes o->agent; every later one is
 * refused. Bytes go agent <-> one local viewer connection, with simple
 * backpressure both ways. The session ending ends raoffer.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "cl_listen.h"
#include "cl_offer.h"
#include "cl_sasl_client.h"
#include "cl_tunnel.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_log.h"
#include "rp_msg.h"
#include "rp_tls.h"

#define SOFTWARE "raoffer/0.1"
#define PENDING_MAX 8
#define HOLD_MAX (1024 * 1024)
#define RELAY_JOIN_MS 120000
#define RELAY_JOINS_MAX 5
#define CANCEL_MS 3000

struct cl_offer;
struct bconn;

typedef void (*authed_fn)(struct bconn *b);

struct bconn {
	struct cl_offer *o;
	struct rp_conn *c; /* our reference, until on_close or detach */
	int relay;
	int authed;
	int detached;
	/* Connecting: each address of each broker in turn (bconn_try), the
	 * reason each one failed kept for the final message. */
	authed_fn next;
	struct rp_tls *t;          /* the attempt in progress */
	struct addrinfo *ai, *cur; /* the broker's addresses, the next one */
	size_t nb, nb_end;         /* next broker to resolve, end */
	size_t bi;                 /* the broker being tried */
	char ip[80];               /* the address being tried */
	char addr[340];            /* the same, "HOST at ADDR" for a name */
	char tried[1024];          /* "ADDR: why; ..." */
	unsigned ntried;
};

struct pend {
	struct cl_offer *o;
	struct rp_tls *t;
	char peer[80];
	int via_relay;
};

struct cl_offer {
	const struct cl_offer_config *cfg;
	const char *initial;
	int mech;
	struct event_base *base;
	struct rp_tls_ctx *bctx;
	struct rp_tls_ctx *rctx; /* as bctx, stream mode: relay connections */
	struct rp_tls_ctx *pskctx;
	struct bconn *main, *rel;
	struct cl_listen *lis, *vlis;
	/* the broker that answered (until then the first one configured);
	 * the relay connection goes to the same one */
	size_t bi;
	char host[256], port[16], target[300];
	/* the ticket */
	char ticket[40];
	unsigned char psk[64];
	size_t psklen;
	int have_ticket;
	int accepted;
	int said_waiting;
	char machine[256]; /* as offered: the FQDN when it could be told */
	char users[256];
	/* outcome */
	int done;
	int code;
	/* timers and signals */
	struct event *deadline, *relay_timer, *poll_timer, *ev_int, *ev_term,
	    *ev_chld;
	int interrupts;
	/* handshakes in progress and the session */
	struct pend *pending[PENDING_MAX];
	struct rp_tls *agent;
	char agent_peer[80];
	int agent_via_relay;
	struct cl_splice *session; /* agent <-> viewer */
	struct evbuffer *hold;     /* agent bytes before the viewer */
	size_t held;
	pid_t viewer_pid;
	time_t started;
	/* relay plumbing */
	struct cl_splice *relay_splice; /* broker stream <-> socketpair */
	int relay_joins;
	int relay_waiting; /* a relay.join is in flight */
	/* keys on stdin */
	struct event *ev_stdin;
	char keybuf[32];
	size_t keylen;
	int control_pending;
};

static void finish(struct cl_offer *o, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void start_relay(struct cl_offer *o);
static void session_close(struct cl_offer *o);
static void session_end(struct cl_offer *o, const char *why);
static void bconn_free(struct bconn *b);

/* ---- output ------------------------------------------------------------ */

static void __attribute__((format(printf, 2, 3)))
say(struct cl_offer *o, const char *fmt, ...)
{
	va_list ap;

	(void)o;
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

static void
finish(struct cl_offer *o, int code, const char *fmt, ...)
{
	va_list ap;

	if (o->done)
		return;
	o->done = 1;
	o->code = code;
	if (fmt != NULL) {
		FILE *f = code == CL_EXIT_OK ? stdout : stderr;
		fputs(code == CL_EXIT_OK ? "" : "raoffer: ", f);
		va_start(ap, fmt);
		vfprintf(f, fmt, ap);
		va_end(ap);
		fputc('\n', f);
		fflush(f);
	}
	event_base_loopexit(o->base, NULL);
}

int
cl_offer_exit_for(int code)
{
	switch (code) {
	case RP_OK:
		return CL_EXIT_OK;
	case RP_ERR_DIRECTORY_UNAVAILABLE:
	case RP_ERR_AUDIT_UNAVAILABLE:
	case RP_ERR_RATE_LIMITED:
	case RP_ERR_TIMEOUT:
	case RP_ERR_CLOSED:
	case RP_ERR_IO:
	case RP_ERR_INTERNAL:
	case RP_ERR_NOMEM:
	case RP_ERR_VERSION:
	case RP_ERR_PARSE:
	case RP_ERR_INVALID_REQUEST:
	case RP_ERR_METHOD_NOT_FOUND:
		return CL_EXIT_UNAVAILABLE;
	case RP_ERR_INVALID_PARAMS:
	case RP_ERR_CONFIG:
		return CL_EXIT_USAGE;
	default:
		return CL_EXIT_REFUSED;
	}
}

/* "forbidden by policy (rule: default deny)" from an error reply. */
static void
err_text(int code, const json_t *e, char *out, size_t outlen)
{
	const char *msg = json_string_value(json_object_get(e, "message"));
	const json_t *d = json_object_get(e, "data");
	const char *rule = json_string_value(json_object_get(d, "rule"));

	if (msg == NULL || *msg == '\0')
		msg = rp_err_message(code);
	if (rule != NULL)
		snprintf(out, outlen, "%s (%s; rule: %s)", msg,
		    rp_err_name(code), rule);
	else
		snprintf(out, outlen, "%s (%s)", msg, rp_err_name(code));
}

static void
fail_call(struct cl_offer *o, const char *what, int code, const json_t *e)
{
	char t[512];

	err_text(code, e, t, sizeof(t));
	finish(o, cl_offer_exit_for(code), "%s: %s", what, t);
}

static const char *
jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

/* ---- broker connections -------------------------------------------------- */

static void on_offer_update(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);

static const struct rp_method client_methods[] = {
    {.name = "offer.update",
        .states = RP_ST_ANY,
        .params = "{ticket:s, state:s}",
        .flags = RP_M_NOTIFY_OK,
        .handler = on_offer_update},
};

static void
bconn_on_close(struct rp_conn *c, const char *why, void *ctx)
{
	struct bconn *b = rp_conn_data(c);
	struct cl_offer *o;

	(void)ctx;
	if (b == NULL)
		return;
	o = b->o;
	b->c = NULL;
	rp_conn_set_data(c, NULL);
	rp_conn_unref(c);
	if (b->relay) {
		if (o->rel == b)
			o->rel = NULL;
		free(b);
		o->relay_waiting = 0;
		if (!o->done && o->agent == NULL)
			log_info("relay connection closed: %s", why);
		return;
	}
	o->main = NULL;
	if (o->done) {
		free(b);
		return;
	}
	if (!b->authed) {
		free(b);
		finish(o, CL_EXIT_UNAVAILABLE,
		    "cannot talk to the broker %s: %s", o->target, why);
		return;
	}
	free(b);
	if (o->agent != NULL) {
		log_warnx("lost the broker connection (%s); the session goes "
		          "on",
		    why);
		return;
	}
	finish(o, CL_EXIT_UNAVAILABLE,
	    "lost the connection to the broker %s: %s", o->target, why);
}

static void
bconn_on_perr(struct rp_conn *c, int code, const char *msg, void *ctx)
{
	(void)c;
	(void)ctx;
	log_warnx("broker: %s: %s", rp_err_name(code), msg);
}

static const struct rp_conn_cbs bconn_cbs = {
    .on_close = bconn_on_close,
    .on_protocol_error = bconn_on_perr,
};

static void
bconn_free(struct bconn *b)
{
	struct rp_conn *c;

	if (b == NULL)
		return;
	if (b->t != NULL) {
		static const struct rp_tls_cbs none;
		rp_tls_set_cbs(b->t, &none, NULL);
		rp_tls_close(b->t);
		b->t = NULL;
	}
	if (b->ai != NULL)
		freeaddrinfo(b->ai);
	c = b->c;
	b->c = NULL;
	if (c != NULL) {
		rp_conn_set_data(c, NULL);
		rp_conn_close(c, "done");
		rp_conn_unref(c);
	}
	free(b);
}

struct login {
	struct bconn *b;
	authed_fn next;
};

/* hello or auth.start failed. The relay connection only gives up the
 * relay; the main one ends raoffer. A closed connection is reported by
 * bconn_on_close, which knows why. */
static void
login_failed(struct bconn *b, const char *what, int code, const json_t *res)
{
	struct cl_offer *o = b->o;
	char t[512];

	if (b->relay) {
		err_text(code, res, t, sizeof(t));
		log_warnx("relay connection: %s: %s", what, t);
		if (o->rel == b)
			o->rel = NULL;
		o->relay_waiting = 0;
		bconn_free(b);
		return;
	}
	if (code == RP_ERR_CLOSED)
		return;
	if (code == RP_ERR_TIMEOUT) {
		finish(o, CL_EXIT_UNAVAILABLE,
		    "%s: the broker %s did not answer within %us", what,
		    o->target, o->cfg->call_timeout_s);
		return;
	}
	if (code == RP_ERR_AUTH_FAILED) {
		finish(o, CL_EXIT_REFUSED,
		    "authentication failed for %s (wrong password, unknown "
		    "name or certificate; the broker's log says which)",
		    o->mech == CL_SASL_PLAIN ? o->cfg->user
		                             : "the certificate");
		return;
	}
	fail_call(o, what, code, res);
}

static void
auth_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct login *l = arg;
	struct bconn *b = l->b;
	authed_fn next = l->next;
	struct cl_offer *o;

	free(l);
	if (rp_conn_data(c) != b || b == NULL)
		return;
	o = b->o;
	if (code != 0) {
		login_failed(b, "authentication", code, res);
		return;
	}
	if (strcmp(jstr(res, "status"), "ok") != 0) {
		/* PLAIN and EXTERNAL with an initial response need no step. */
		finish(o, CL_EXIT_UNAVAILABLE,
		    "authentication: the broker asked for another step");
		return;
	}
	b->authed = 1;
	rp_conn_set_state(c, RP_ST_HELPER);
	if (!b->relay)
		log_info("authenticated as %s", jstr(res, "account"));
	next(b);
}

static void
hello_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct login *l = arg;
	struct bconn *b = l->b;
	struct cl_offer *o;
	json_t *mechs, *v, *p;
	size_t i;
	int found = 0;
	char list[128] = "";

	if (rp_conn_data(c) != b || b == NULL) {
		free(l);
		return;
	}
	o = b->o;
	if (code != 0) {
		free(l);
		login_failed(b, "hello", code, res);
		return;
	}
	rp_conn_set_state(c, RP_ST_HELLO);
	mechs = json_object_get(res, "mechanisms");
	json_array_foreach(mechs, i, v)
	{
		const char *m = json_string_value(v);
		if (m == NULL)
			continue;
		if (strcmp(m, cl_sasl_mech_name(o->mech)) == 0)
			found = 1;
		if (strlen(list) + strlen(m) + 2 < sizeof(list)) {
			if (list[0])
				strcat(list, " ");
			strcat(list, m);
		}
	}
	if (!found) {
		free(l);
		finish(o, CL_EXIT_USAGE,
		    "the broker does not offer %s on this connection "
		    "(offered: %s)%s",
		    cl_sasl_mech_name(o->mech), list[0] ? list : "none",
		    o->mech == CL_SASL_EXTERNAL
		        ? "; was the client certificate accepted?"
		        : "");
		return;
	}
	p = cl_sasl_start_params(o->mech, o->initial);
	if (p == NULL || rp_conn_call(c, "auth.start", p, 0, auth_cb, l) != 0) {
		free(l);
		finish(o, CL_EXIT_UNAVAILABLE, "cannot send auth.start");
	}
}

/* Why one address (or a name) failed, for the message if all fail. */
static void __attribute__((format(printf, 2, 3)))
bconn_note(struct bconn *b, const char *fmt, ...)
{
	size_t n = strlen(b->tried);
	va_list ap;

	if (n > 0 && n + 2 < sizeof(b->tried)) {
		memcpy(b->tried + n, "; ", 3);
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(b->tried + n, sizeof(b->tried) - n, fmt, ap);
	va_end(ap);
	b->ntried++;
}

static void
set_target(struct cl_offer *o, size_t bi)
{
	const struct cl_offer_broker *k = &o->cfg->broker[bi];

	o->bi = bi;
	snprintf(o->host, sizeof(o->host), "%s", k->host);
	snprintf(o->port, sizeof(o->port), "%s", k->port);
	snprintf(o->target, sizeof(o->target),
	    strchr(o->host, ':') ? "[%s]:%s" : "%s:%s", o->host, o->port);
}

static void bconn_try(struct bconn *b);

static void
bconn_tls_closed(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct bconn *b = arg;

	(void)t;
	b->t = NULL;
	bconn_note(b, "%s (%s%s%s)", b->addr, rp_tls_close_reason_name(why),
	    msg && *msg ? ": " : "", msg ? msg : "");
	log_info("broker at %s: %s%s%s", b->addr, rp_tls_close_reason_name(why),
	    msg && *msg ? ": " : "", msg ? msg : "");
	bconn_try(b);
}

/* The TLS handshake succeeded: from here on the connection is an RPC
 * connection; say hello, authenticate, then next(b). */
static void
bconn_tls_ready(struct rp_tls *t, void *arg)
{
	struct bconn *b = arg;
	struct cl_offer *o = b->o;
	struct rp_conn_opts co;
	struct login *l;

	b->t = NULL;
	freeaddrinfo(b->ai);
	b->ai = b->cur = NULL;
	if (!b->relay)
		set_target(o, b->bi);
	if (b->ntried > 0)
		log_warnx("broker %s answered at %s; before: %s", o->target,
		    b->ip, b->tried);
	if ((l = calloc(1, sizeof(*l))) == NULL) {
		rp_tls_close(t);
		finish(o, CL_EXIT_UNAVAILABLE, "out of memory");
		return;
	}
	memset(&co, 0, sizeof(co));
	co.methods = client_methods;
	co.nmethods = sizeof(client_methods) / sizeof(client_methods[0]);
	co.cbs = &bconn_cbs;
	co.ctx = o;
	co.default_timeout_ms = o->cfg->call_timeout_s * 1000;
	if ((b->c = rp_conn_new_tls(o->base, t, &co)) == NULL) {
		free(l);
		rp_tls_close(t);
		finish(o, CL_EXIT_UNAVAILABLE, "out of memory");
		return;
	}
	rp_conn_set_data(b->c, b);
	l->b = b;
	l->next = b->next;
	if (rp_conn_call(b->c, "hello",
	        json_pack("{s:i, s:s, s:s}", "version", RP_PROTOCOL_VERSION,
	            "role", "helper", "software", SOFTWARE),
	        0, hello_cb, l) != 0) {
		free(l);
		finish(o, CL_EXIT_UNAVAILABLE, "cannot send hello");
	}
}

static const struct rp_tls_cbs bconn_tls_cbs = {
    .on_ready = bconn_tls_ready,
    .on_close = bconn_tls_closed,
};

/* No address of any broker answered. The relay connection only gives up
 * the relay; the main one ends raoffer. */
static void
bconn_unreachable(struct bconn *b)
{
	struct cl_offer *o = b->o;

	if (b->relay) {
		log_warnx("relay connection: cannot reach the broker %s (%s)",
		    o->target, b->tried);
		if (o->rel == b)
			o->rel = NULL;
		o->relay_waiting = 0;
		bconn_free(b);
		return;
	}
	if (o->cfg->nbroker == 1)
		finish(o, CL_EXIT_UNAVAILABLE,
		    "cannot talk to the broker %s: tried %s", o->target,
		    b->tried);
	else
		finish(o, CL_EXIT_UNAVAILABLE,
		    "cannot talk to any of the %zu brokers: tried %s",
		    o->cfg->nbroker, b->tried);
}

/* Starts the next attempt: the next address of this broker, else the
 * first address of the next broker. Each attempt is bounded by the TLS
 * handshake timeout (connect included): [broker] timeout. */
static void
bconn_try(struct bconn *b)
{
	struct cl_offer *o = b->o;
	struct addrinfo hints, *a;
	char h[64], p[16];
	int r;

	for (;;) {
		if (b->cur == NULL) {
			const struct cl_offer_broker *k;
			if (b->ai != NULL)
				freeaddrinfo(b->ai);
			b->ai = NULL;
			if (b->nb >= b->nb_end) {
				bconn_unreachable(b);
				return;
			}
			b->bi = b->nb++;
			k = &o->cfg->broker[b->bi];
			memset(&hints, 0, sizeof(hints));
			hints.ai_socktype = SOCK_STREAM;
			hints.ai_family = AF_UNSPEC;
			r = getaddrinfo(k->host, k->port, &hints, &b->ai);
			if (r != 0) {
				b->ai = NULL;
				bconn_note(
				    b, "%s (%s)", k->host, gai_strerror(r));
				log_info(
				    "broker %s: %s", k->host, gai_strerror(r));
				continue;
			}
			b->cur = b->ai;
		}
		a = b->cur;
		b->cur = a->ai_next;
		if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
			continue;
		if (getnameinfo(a->ai_addr, a->ai_addrlen, h, sizeof(h), p,
		        sizeof(p), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
			snprintf(h, sizeof(h), "?");
		snprintf(b->ip, sizeof(b->ip),
		    a->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, p);
		/* "HOST at ADDR" when the name is not the address */
		if (strcmp(h, o->cfg->broker[b->bi].host) != 0)
			snprintf(b->addr, sizeof(b->addr), "%s at %s",
			    o->cfg->broker[b->bi].host, b->ip);
		else
			snprintf(b->addr, sizeof(b->addr), "%s", b->ip);
		log_info("connecting to the broker at %s", b->addr);
		b->t = rp_tls_connect(b->relay ? o->rctx : o->bctx, o->base,
		    a->ai_addr, (int)a->ai_addrlen,
		    o->cfg->server_name ? o->cfg->server_name
		                        : o->cfg->broker[b->bi].host,
		    &bconn_tls_cbs, b);
		if (b->t != NULL)
			return;
		bconn_note(b, "%s (cannot open a socket)", b->addr);
	}
}

/* Opens o->main, or o->rel: connects (to each broker configured in
 * turn; a relay connection to the one that answered), says hello,
 * authenticates, then calls next(b). An unreachable broker is reported by
 * bconn_unreachable. */
static void
bconn_open(struct cl_offer *o, int relay, authed_fn next)
{
	struct bconn *b;

	if ((b = calloc(1, sizeof(*b))) == NULL) {
		finish(o, CL_EXIT_UNAVAILABLE, "out of memory");
		return;
	}
	b->o = o;
	b->relay = relay;
	b->next = next;
	b->nb = relay ? o->bi : 0;
	b->nb_end = relay ? o->bi + 1 : o->cfg->nbroker;
	if (relay)
		o->rel = b;
	else
		o->main = b;
	bconn_try(b); /* may free b (a relay connection, no address) */
}

/* ---- the session: agent <-> viewer ---------------------------------------- */

/*
 * Until the viewer connects, the agent's bytes (an RFB server's greeting)
 * wait in o->hold (bounded: reading stops past HOLD_MAX). Then agent and
 * viewer are joined with cl_splice (client/cl_tunnel.h, shared with
 * raagent): backpressure both ways, the other side flushed when one ends.
 */

/* Ends the session (or the agent connection before the viewer came);
 * the close callbacks finish. */
static void
session_end(struct cl_offer *o, const char *why)
{
	if (o->session != NULL)
		cl_splice_close(o->session, why);
	else if (o->agent != NULL)
		rp_tls_close(o->agent);
}

static void
session_closed(struct cl_splice *s, const char *why, void *arg)
{
	struct cl_offer *o = arg;
	uint64_t up = 0, down = 0;

	cl_splice_bytes(s, &down, &up);
	o->session = NULL;
	o->agent = NULL;
	log_info("session closed: %s", why ? why : "");
	finish(o, CL_EXIT_OK,
	    "session ended after %lds (%llu bytes to the viewer, %llu from "
	    "it)",
	    (long)(time(NULL) - o->started),
	    (unsigned long long)(down + o->held), (unsigned long long)up);
}

static const struct cl_splice_cbs session_cbs = {
    .on_close = session_closed,
};

static void
viewer_accept(evutil_socket_t fd, const char *peer, void *arg)
{
	struct cl_offer *o = arg;
	struct bufferevent *bev;
	struct cl_end a, b;

	if (o->session != NULL || o->agent == NULL) {
		log_warnx("viewer connection from %s refused: %s", peer,
		    o->session ? "one viewer already connected" : "no session");
		evutil_closesocket(fd);
		return;
	}
	bev = bufferevent_socket_new(o->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		evutil_closesocket(fd);
		return;
	}
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.tls = o->agent;
	b.bev = bev;
	rp_tls_set_reading(o->agent, 1);
	o->session = cl_splice_new(o->base, a, b, &session_cbs, o);
	if (o->session == NULL) {
		bufferevent_free(bev);
		rp_tls_close(o->agent);
		return;
	}
	cl_listen_enable(o->vlis, 0);
	log_info("viewer connected from %s", peer);
	o->held = evbuffer_get_length(o->hold);
	if (o->held > 0)
		cl_splice_push(o->session, 0, o->hold);
}

/* Before the viewer: keep what the agent sends. */
static void
agent_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	struct cl_offer *o = arg;

	evbuffer_add_buffer(o->hold, in);
	if (evbuffer_get_length(o->hold) > HOLD_MAX)
		rp_tls_set_reading(t, 0);
}

static void
agent_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct cl_offer *o = arg;

	(void)t;
	o->agent = NULL;
	finish(o, CL_EXIT_OK,
	    "session ended before a viewer connected (%s%s%s)",
	    rp_tls_close_reason_name(why), msg && *msg ? ": " : "",
	    msg ? msg : "");
}

static const struct rp_tls_cbs agent_cbs = {
    .on_read = agent_read,
    .on_close = agent_close,
};

static void
run_viewer_cmd(struct cl_offer *o)
{
	char *cmd =
	    cl_offer_viewer_cmd(o->cfg->viewer_cmd, cl_listen_port(o->vlis, 0));
	pid_t pid;

	if (cmd == NULL) {
		log_warnx("viewer command: cannot expand");
		return;
	}
	say(o, "starting the viewer: %s", cmd);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		/* Its own process group, so that it and its children can be
		 * ended together when the session is over. */
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	if (pid < 0)
		log_warn("fork");
	o->viewer_pid = pid > 0 ? pid : 0;
	free(cmd);
}

static void
pend_remove(struct cl_offer *o, struct pend *p)
{
	size_t i;

	for (i = 0; i < PENDING_MAX; i++)
		if (o->pending[i] == p)
			o->pending[i] = NULL;
	free(p);
}

static void
pend_ready(struct rp_tls *t, void *arg)
{
	struct pend *p = arg;
	struct cl_offer *o = p->o;
	const char *id = rp_tls_psk_id(t);
	size_t i;

	if (o->agent != NULL || o->done || id == NULL ||
	    strcmp(id, o->ticket) != 0) {
		log_warnx("reverse connection from %s refused: %s", p->peer,
		    o->agent ? "a session is already running"
		             : "not for this ticket");
		rp_tls_close(t); /* pend_close frees p */
		return;
	}
	o->agent = t;
	o->agent_via_relay = p->via_relay;
	snprintf(o->agent_peer, sizeof(o->agent_peer), "%s", p->peer);
	o->started = time(NULL);
	pend_remove(o, p);
	rp_tls_set_cbs(t, &agent_cbs, o);
	rp_tls_set_reading(t, 1);
	if (o->deadline != NULL)
		evtimer_del(o->deadline);
	if (o->relay_timer != NULL)
		evtimer_del(o->relay_timer);
	/* Other handshakes in flight lose. */
	for (i = 0; i < PENDING_MAX; i++)
		if (o->pending[i] != NULL)
			rp_tls_close(o->pending[i]->t);
	/* A relay join still waiting is not needed any more. */
	if (!o->agent_via_relay && o->rel != NULL && !o->rel->detached) {
		struct bconn *r = o->rel;
		o->rel = NULL;
		bconn_free(r);
	}
	if (o->agent_via_relay)
		say(o,
		    "agent connected through the broker's relay (%s, "
		    "ticket secret verified)",
		    rp_tls_version(t));
	else
		say(o, "agent connected from %s (%s, ticket secret verified)",
		    o->agent_peer, rp_tls_version(t));
	cl_listen_enable(o->vlis, 1);
	if (o->cfg->control && o->ev_stdin != NULL)
		say(o,
		    "type c and Enter to ask for control, q to end the "
		    "session");
	if (o->cfg->viewer_cmd != NULL)
		run_viewer_cmd(o);
	else
		say(o, "viewer: connect to 127.0.0.1:%u",
		    cl_listen_port(o->vlis, 0));
}

static void
pend_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct pend *p = arg;

	(void)t;
	if (!p->o->done && p->o->agent == NULL)
		log_warnx("reverse connection from %s failed: %s%s%s "
		          "(still waiting)",
		    p->peer, rp_tls_close_reason_name(why),
		    msg && *msg ? ": " : "", msg ? msg : "");
	pend_remove(p->o, p);
}

static const struct rp_tls_cbs pend_cbs = {
    .on_ready = pend_ready,
    .on_close = pend_close,
};

/* Starts the PSK-TLS server on fd (a direct socket or our end of the
 * relay's socketpair). */
static void
psk_serve(
    struct cl_offer *o, evutil_socket_t fd, const char *peer, int via_relay)
{
	struct pend *p;
	size_t i;

	for (i = 0; i < PENDING_MAX; i++)
		if (o->pending[i] == NULL)
			break;
	if (i == PENDING_MAX || (p = calloc(1, sizeof(*p))) == NULL) {
		log_warnx("reverse connection from %s refused: too many "
		          "handshakes in progress",
		    peer);
		evutil_closesocket(fd);
		return;
	}
	p->o = o;
	p->via_relay = via_relay;
	snprintf(p->peer, sizeof(p->peer), "%s", peer);
	p->t = rp_tls_accept(o->pskctx, o->base, fd, &pend_cbs, p);
	if (p->t == NULL) {
		free(p);
		evutil_closesocket(fd);
		return;
	}
	o->pending[i] = p;
}

static void
direct_accept(evutil_socket_t fd, const char *peer, void *arg)
{
	struct cl_offer *o = arg;

	if (o->cfg->test_refuse_direct) {
		log_warnx("reverse connection from %s dropped "
		          "(--test-refuse-direct)",
		    peer);
		evutil_closesocket(fd);
		return;
	}
	if (o->agent != NULL || o->done) {
		log_warnx("reverse connection from %s refused: a session is "
		          "already running",
		    peer);
		evutil_closesocket(fd);
		return;
	}
	if (!o->have_ticket) {
		log_warnx(
		    "reverse connection from %s refused: no ticket yet", peer);
		evutil_closesocket(fd);
		return;
	}
	log_info("reverse connection from %s", peer);
	psk_serve(o, fd, peer, 0);
}

static int
psk_lookup(void *arg, const char *identity, unsigned char *key, size_t *len)
{
	struct cl_offer *o = arg;

	if (!o->have_ticket || strcmp(identity, o->ticket) != 0 ||
	    *len < o->psklen) {
		log_warnx("reverse connection: unknown PSK identity refused");
		return -1;
	}
	memcpy(key, o->psk, o->psklen);
	*len = o->psklen;
	return 0;
}

/* ---- the relay ------------------------------------------------------------ */

/* The detached broker connection carries the inner PSK-TLS stream: it is
 * spliced to one end of a socketpair, and the PSK-TLS server runs on the
 * other end exactly as for a direct connection. */
static void
relay_splice_closed(struct cl_splice *s, const char *why, void *arg)
{
	struct cl_offer *o = arg;

	(void)s;
	o->relay_splice = NULL;
	log_info("relay connection closed: %s", why ? why : "");
}

static const struct cl_splice_cbs relay_splice_cbs = {
    .on_close = relay_splice_closed,
};

static void relay_retry(struct cl_offer *o);

static void
join_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct bconn *b = arg;
	struct cl_offer *o;
	struct evbuffer *left;
	struct bufferevent *pipe_bev;
	struct cl_end ea, eb;
	struct rp_tls *t;
	int sv[2];

	if (rp_conn_data(c) != b)
		return;
	o = b->o;
	o->relay_waiting = 0;
	if (o->done || o->agent != NULL) {
		if (o->rel == b)
			o->rel = NULL;
		bconn_free(b);
		return;
	}
	if (code != 0) {
		char t2[256];
		err_text(code, res, t2, sizeof(t2));
		log_warnx("relay.join: %s", t2);
		if (o->rel == b)
			o->rel = NULL;
		bconn_free(b);
		if (code == RP_ERR_TIMEOUT || code == RP_ERR_CLOSED ||
		    code == RP_ERR_BUSY)
			relay_retry(o);
		return;
	}
	if (strcmp(jstr(res, "status"), "paired") != 0) {
		log_info(
		    "relay: %s (%s)", jstr(res, "status"), jstr(res, "reason"));
		if (o->rel == b)
			o->rel = NULL;
		bconn_free(b);
		relay_retry(o);
		return;
	}
	left = evbuffer_new();
	if (left == NULL ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		log_warn("relay: socketpair");
		evbuffer_free(left);
		return;
	}
	t = rp_conn_detach(c, left);
	b->detached = 1;
	rp_conn_set_data(c, NULL);
	rp_conn_unref(c);
	b->c = NULL;
	if (o->rel == b)
		o->rel = NULL;
	free(b);
	if (t == NULL) {
		evbuffer_free(left);
		close(sv[0]);
		close(sv[1]);
		return;
	}
	evutil_make_socket_nonblocking(sv[1]);
	pipe_bev =
	    bufferevent_socket_new(o->base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	if (pipe_bev == NULL) {
		close(sv[1]);
		close(sv[0]);
		evbuffer_free(left);
		rp_tls_close(t);
		return;
	}
	memset(&ea, 0, sizeof(ea));
	memset(&eb, 0, sizeof(eb));
	ea.tls = t;
	eb.bev = pipe_bev;
	o->relay_splice = cl_splice_new(o->base, ea, eb, &relay_splice_cbs, o);
	if (o->relay_splice == NULL) {
		bufferevent_free(pipe_bev);
		close(sv[0]);
		evbuffer_free(left);
		rp_tls_close(t);
		return;
	}
	/* Bytes that came right behind the relay.join answer. */
	if (evbuffer_get_length(left) > 0)
		cl_splice_push(o->relay_splice, 0, left);
	evbuffer_free(left);
	log_info("relay paired; the PSK handshake runs through it");
	psk_serve(o, sv[0], "the broker's relay", 1);
}

static void
relay_authed(struct bconn *b)
{
	struct cl_offer *o = b->o;

	if (o->done || o->agent != NULL) {
		if (o->rel == b)
			o->rel = NULL;
		bconn_free(b);
		return;
	}
	o->relay_waiting = 1;
	say(o, "joining the broker's relay...");
	if (rp_conn_call(b->c, "relay.join",
	        json_pack("{s:s, s:s}", "ticket", o->ticket, "side", "helper"),
	        RELAY_JOIN_MS, join_cb, b) != 0) {
		o->relay_waiting = 0;
		log_warnx("relay.join could not be sent");
	}
}

static void
start_relay(struct cl_offer *o)
{
	if (o->cfg->cmd != CL_CMD_OFFER || o->done || o->agent != NULL ||
	    !o->have_ticket || o->rel != NULL || o->relay_splice != NULL)
		return;
	if (o->relay_joins >= RELAY_JOINS_MAX) {
		log_warnx("relay: gave up after %d joins", RELAY_JOINS_MAX);
		return;
	}
	o->relay_joins++;
	bconn_open(o, 1, relay_authed);
}

static void
relay_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	start_relay(arg);
}

static void
relay_retry(struct cl_offer *o)
{
	struct timeval tv = {1, 0};

	if (o->done || o->agent != NULL || o->relay_timer == NULL)
		return;
	evtimer_add(o->relay_timer, &tv);
}

/* ---- offer.update ---------------------------------------------------------- */

static void
on_offer_update(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct cl_offer *o = ctx;
	const char *st = jstr(params, "state"), *user = jstr(params, "user");
	const char *reason = jstr(params, "reason");
	const char *ctl = jstr(params, "control");
	const char *relay = jstr(params, "relay");
	const char *who;

	if (strcmp(user, "(unknown)") == 0)
		user = "";
	if (strcmp(reason, st) == 0)
		reason = ""; /* "declined (declined)" says nothing more */
	who = *user ? user : o->users[0] ? o->users : "the user";

	(void)c;
	(void)id;
	if (!o->have_ticket || strcmp(jstr(params, "ticket"), o->ticket) != 0)
		return;
	log_debug(
	    "offer.update state=%s reason=%s control=%s", st, reason, ctl);
	if (*ctl != '\0') {
		o->control_pending = 0;
		if (strcmp(ctl, "granted") == 0)
			say(o, "control granted by %s", who);
		else if (strcmp(ctl, "declined") == 0)
			say(o, "control declined%s%s", *user ? " by " : "",
			    user);
		else if (strcmp(ctl, "ended") == 0)
			say(o, "control ended: %s took it back", who);
		if (o->cfg->cmd == CL_CMD_CONTROL) {
			if (strcmp(ctl, "granted") == 0)
				finish(o, CL_EXIT_OK, NULL);
			else if (strcmp(ctl, "declined") == 0)
				finish(o, CL_EXIT_REFUSED, NULL);
		}
		return;
	}
	if (strcmp(relay, "waiting") == 0) {
		say(o,
		    "the agent could not reach this machine and waits at "
		    "the broker's relay");
		start_relay(o);
		return;
	}
	if (o->cfg->cmd != CL_CMD_OFFER)
		return;
	if (strcmp(st, "prompting") == 0) {
		if (!o->said_waiting++)
			say(o, "waiting for %s to answer...", who);
	} else if (strcmp(st, "accepted") == 0) {
		struct timeval tv = {(time_t)o->cfg->relay_after_s, 0};
		o->accepted = 1;
		if (o->agent != NULL)
			say(o, "accepted by %s", who);
		else
			say(o,
			    "accepted by %s; waiting for the agent to "
			    "connect",
			    who);
		if (o->cfg->relay_after_s > 0 && o->relay_timer != NULL &&
		    o->agent == NULL)
			evtimer_add(o->relay_timer, &tv);
	} else if (strcmp(st, "declined") == 0) {
		finish(o, CL_EXIT_REFUSED, "declined by %s%s%s%s", who,
		    *reason ? " (" : "", reason, *reason ? ")" : "");
	} else if (strcmp(st, "timed_out") == 0) {
		finish(o, CL_EXIT_REFUSED, "timed out: %s did not answer%s%s%s",
		    who, *reason ? " (" : "", reason, *reason ? ")" : "");
	} else if (strcmp(st, "connected") == 0) {
		log_info("the broker reports the session connected");
	} else if (strcmp(st, "ended") == 0) {
		if (o->agent == NULL)
			finish(o, o->accepted ? CL_EXIT_OK : CL_EXIT_REFUSED,
			    "session ended%s%s%s", *reason ? " (" : "", reason,
			    *reason ? ")" : "");
	} else if (strcmp(st, "expired") == 0 || strcmp(st, "cancelled") == 0 ||
	    strcmp(st, "revoked") == 0) {
		const char *what = strcmp(st, "expired") == 0 ? "the ticket "
		                                                "expired"
		    : strcmp(st, "cancelled") == 0 ? "the offer was cancelled"
		                                   : "the user ended it";
		if (o->agent != NULL) {
			say(o, "%s%s%s%s", what, *reason ? " (" : "", reason,
			    *reason ? ")" : "");
			session_end(o, st);
		} else
			finish(o, CL_EXIT_REFUSED, "%s%s%s%s", what,
			    *reason ? " (" : "", reason, *reason ? ")" : "");
	}
}

/* ---- the commands ------------------------------------------------------------ */

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cl_offer *o = arg;

	(void)fd;
	(void)what;
	if (o->agent != NULL || o->done)
		return;
	if (o->cfg->cmd == CL_CMD_CONTROL) {
		finish(o, CL_EXIT_REFUSED,
		    "no answer to the control request "
		    "within %us",
		    o->cfg->timeout_s);
		return;
	}
	finish(o, CL_EXIT_REFUSED,
	    o->accepted ? "the agent did not connect within %us"
	                : "no answer within %us",
	    o->cfg->timeout_s);
}

static void
create_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct cl_offer *o = arg;
	const char *tid, *psk;
	long n;

	(void)c;
	if (code != 0) {
		fail_call(o, "offer refused", code, res);
		return;
	}
	tid = json_string_value(json_object_get(res, "ticket"));
	psk = json_string_value(json_object_get(res, "psk"));
	if (!cl_offer_ticket_id_valid(tid) || psk == NULL) {
		finish(o, CL_EXIT_UNAVAILABLE,
		    "offer.create: the broker's answer has no ticket");
		return;
	}
	n = cl_b64_decode(psk, o->psk, sizeof(o->psk));
	/* The secret's text in the reply is ours: wipe it now. */
	cl_wipe((char *)psk, strlen(psk));
	if (n <= 0) {
		finish(o, CL_EXIT_UNAVAILABLE,
		    "offer.create: the ticket secret is not valid base64");
		return;
	}
	o->psklen = (size_t)n;
	snprintf(o->ticket, sizeof(o->ticket), "%s", tid);
	o->have_ticket = 1;
	{
		time_t ex =
		    (time_t)json_integer_value(json_object_get(res, "expires"));
		struct tm tm;
		char when[32] = "?";
		if (ex > 0 && localtime_r(&ex, &tm) != NULL)
			strftime(when, sizeof(when), "%H:%M:%S", &tm);
		say(o, "ticket %s (%s, expires %s; rule: %s)", o->ticket,
		    jstr(res, "mode"), when, jstr(res, "rule"));
	}
	if (strcmp(jstr(res, "state"), "prompting") == 0 && !o->said_waiting++)
		say(o, "waiting for %s to answer...",
		    o->users[0] ? o->users : "the user");
}

static void
send_offer(struct cl_offer *o)
{
	json_t *addrs = cl_listen_addresses(o->lis);
	char list[1024] = "";
	size_t i;
	json_t *v;

	json_array_foreach(addrs, i, v)
	{
		if (strlen(list) + strlen(json_string_value(v)) + 3 <
		    sizeof(list)) {
			if (list[0])
				strcat(list, ", ");
			strcat(list, json_string_value(v));
		}
	}
	say(o, "listening for the agent on %s", list);
	if (rp_conn_call(o->main->c, "offer.create",
	        json_pack("{s:s, s:s, s:o}", "machine", o->machine, "mode",
	            o->cfg->control ? "control" : "view", "addresses", addrs),
	        0, create_cb, o) != 0)
		finish(o, CL_EXIT_UNAVAILABLE, "cannot send offer.create");
}

static void
who_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct cl_offer *o = arg;
	const json_t *hit = NULL, *m, *s;
	size_t i, j, plen = strlen(o->cfg->arg), nshort = 0;

	(void)c;
	/* The machine as typed, or the one online machine whose FQDN it
	 * begins ("ws-042" -> ws-042.corp.example). */
	json_array_foreach(json_object_get(res, "machines"), i, m)
	{
		const char *f = jstr(m, "fqdn");
		if (strcasecmp(f, o->cfg->arg) == 0) {
			hit = m;
			nshort = 0;
			break;
		}
		if (strncasecmp(f, o->cfg->arg, plen) == 0 && f[plen] == '.') {
			nshort++;
			hit = m;
		}
	}
	if (code != 0 || nshort > 1)
		hit = NULL;
	if (hit != NULL) {
		snprintf(
		    o->machine, sizeof(o->machine), "%s", jstr(hit, "fqdn"));
		if (nshort == 1)
			say(o, "%s is %s", o->cfg->arg, o->machine);
		json_array_foreach(json_object_get(hit, "sessions"), j, s)
		{
			const char *u = jstr(s, "user");
			if (*u == '\0' ||
			    strlen(o->users) + strlen(u) + 5 >=
			        sizeof(o->users))
				continue;
			if (o->users[0])
				strcat(o->users, " or ");
			strcat(o->users, u);
		}
	}
	send_offer(o);
}

static void
list_machines_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct cl_offer *o = arg;
	json_t *m, *s;
	size_t i, j, n;

	(void)c;
	if (code != 0) {
		fail_call(o, "machines.list", code, res);
		return;
	}
	n = json_array_size(json_object_get(res, "machines"));
	if (n == 0) {
		say(o, "no machine you may help is online%s%s",
		    o->cfg->arg ? " matching " : "",
		    o->cfg->arg ? o->cfg->arg : "");
		finish(o, CL_EXIT_OK, NULL);
		return;
	}
	say(o, "%-32s %-8s %s", "MACHINE", "RIGHT", "SESSIONS");
	json_array_foreach(json_object_get(res, "machines"), i, m)
	{
		char sess[512] = "";
		json_array_foreach(json_object_get(m, "sessions"), j, s)
		{
			char one[160];
			snprintf(one, sizeof(one), "%s%s (%s%s)",
			    sess[0] ? ", " : "", jstr(s, "user"),
			    jstr(s, "kind"),
			    json_is_true(json_object_get(s, "locked"))
			        ? ", locked"
			        : "");
			if (strlen(sess) + strlen(one) + 1 < sizeof(sess))
				strcat(sess, one);
		}
		say(o, "%-32s %-8s %s", jstr(m, "fqdn"), jstr(m, "right"),
		    sess[0] ? sess : "(nobody logged on)");
		log_info("  %s: %s", jstr(m, "fqdn"), jstr(m, "rule"));
	}
	finish(o, CL_EXIT_OK, NULL);
}

static void
list_tickets_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct cl_offer *o = arg;
	json_t *t;
	size_t i;

	(void)c;
	if (code != 0) {
		fail_call(o, "ticket.list", code, res);
		return;
	}
	if (json_array_size(json_object_get(res, "tickets")) == 0) {
		say(o, "no open tickets");
		finish(o, CL_EXIT_OK, NULL);
		return;
	}
	say(o, "%-32s %-10s %-7s %-9s %-8s %s", "ID", "STATE", "MODE",
	    "CONTROL", "EXPIRES", "MACHINE");
	json_array_foreach(json_object_get(res, "tickets"), i, t)
	{
		time_t ex =
		    (time_t)json_integer_value(json_object_get(t, "expires"));
		struct tm tm;
		char when[16] = "?";
		if (ex > 0 && localtime_r(&ex, &tm) != NULL)
			strftime(when, sizeof(when), "%H:%M:%S", &tm);
		say(o, "%-32s %-10s %-7s %-9s %-8s %s", jstr(t, "id"),
		    jstr(t, "state"), jstr(t, "mode"), jstr(t, "control"), when,
		    jstr(t, "machine"));
	}
	finish(o, CL_EXIT_OK, NULL);
}

static void
cancel_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct cl_offer *o = arg;

	(void)c;
	if (o->cfg->cmd == CL_CMD_OFFER) {
		/* Ctrl-C during an offer. */
		finish(o, CL_EXIT_REFUSED, "interrupted: offer %s",
		    code == 0
		        ? "cancelled"
		        : "not cancelled (the broker cancels it when we go)");
		return;
	}
	if (code != 0) {
		fail_call(o, "offer.cancel", code, res);
		return;
	}
	finish(o, CL_EXIT_OK, "ticket %s cancelled", o->cfg->arg);
}

/* control ID from a second raoffer: offer.update goes to the connection
 * that made the offer while it is open, so the answer is also polled
 * with ticket.list ("control": prompting -> granted | none). */
static void
poll_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct cl_offer *o = arg;
	json_t *t;
	size_t i;
	struct timeval tv = {1, 0};

	(void)c;
	if (o->done)
		return;
	if (code != 0) {
		fail_call(o, "ticket.list", code, res);
		return;
	}
	json_array_foreach(json_object_get(res, "tickets"), i, t)
	{
		const char *ctl;
		if (strcmp(jstr(t, "id"), o->cfg->arg) != 0)
			continue;
		ctl = jstr(t, "control");
		if (strcmp(ctl, "granted") == 0) {
			finish(o, CL_EXIT_OK, "control granted");
			return;
		}
		if (strcmp(ctl, "prompting") != 0) {
			finish(o, CL_EXIT_REFUSED, "control declined");
			return;
		}
		evtimer_add(o->poll_timer, &tv);
		return;
	}
	finish(
	    o, CL_EXIT_REFUSED, "ticket %s is not open any more", o->cfg->arg);
}

static void
poll_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cl_offer *o = arg;

	(void)fd;
	(void)what;
	if (o->done || o->main == NULL)
		return;
	if (rp_conn_call(
	        o->main->c, "ticket.list", json_object(), 0, poll_cb, o) != 0)
		finish(o, CL_EXIT_UNAVAILABLE, "cannot send ticket.list");
}

static void
control_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct cl_offer *o = arg;
	struct timeval tv = {1, 0};

	(void)c;
	if (code != 0) {
		fail_call(o, "control.request", code, res);
		return;
	}
	say(o,
	    "control requested for ticket %s; waiting for the user to "
	    "answer...",
	    o->cfg->arg);
	evtimer_add(o->poll_timer, &tv);
}

static void
main_authed(struct bconn *b)
{
	struct cl_offer *o = b->o;
	const struct cl_offer_config *cfg = o->cfg;
	json_t *p;
	struct timeval tv = {(time_t)cfg->timeout_s, 0};

	switch (cfg->cmd) {
	case CL_CMD_MACHINES:
		p = cfg->arg ? json_pack("{s:s}", "filter", cfg->arg)
		             : json_object();
		if (rp_conn_call(
		        b->c, "machines.list", p, 0, list_machines_cb, o) != 0)
			finish(o, CL_EXIT_UNAVAILABLE, "cannot send request");
		return;
	case CL_CMD_TICKETS:
		if (rp_conn_call(b->c, "ticket.list", json_object(), 0,
		        list_tickets_cb, o) != 0)
			finish(o, CL_EXIT_UNAVAILABLE, "cannot send request");
		return;
	case CL_CMD_CANCEL:
		if (rp_conn_call(b->c, "offer.cancel",
		        json_pack("{s:s}", "ticket", cfg->arg), 0, cancel_cb,
		        o) != 0)
			finish(o, CL_EXIT_UNAVAILABLE, "cannot send request");
		return;
	case CL_CMD_CONTROL:
		o->have_ticket = 1; /* for offer.update matching */
		snprintf(o->ticket, sizeof(o->ticket), "%s", cfg->arg);
		evtimer_add(o->deadline, &tv);
		if (rp_conn_call(b->c, "control.request",
		        json_pack("{s:s}", "ticket", cfg->arg), 0, control_cb,
		        o) != 0)
			finish(o, CL_EXIT_UNAVAILABLE, "cannot send request");
		return;
	case CL_CMD_OFFER:
		say(o, "connected to the broker %s", o->target);
		evtimer_add(o->deadline, &tv);
		/* Who will be asked (for the progress lines); then offer. */
		if (rp_conn_call(b->c, "machines.list",
		        json_pack("{s:s}", "filter", cfg->arg), 0, who_cb,
		        o) != 0)
			finish(o, CL_EXIT_UNAVAILABLE, "cannot send request");
		return;
	case CL_CMD_NONE:
		break;
	}
	finish(o, CL_EXIT_USAGE, "nothing to do");
}

/* ---- keys on standard input during a session ------------------------------ */

/*
 * While an offer runs, lines on standard input (a terminal or a pipe) are
 * commands: "c" asks the user for control (a --control ticket, once the
 * agent is connected), "q" ends the session. The answer to "c" comes as
 * offer.update on this connection ("control granted by ...").
 */
static void
key_control_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct cl_offer *o = arg;
	char t[512];

	(void)c;
	if (code != 0) {
		o->control_pending = 0;
		err_text(code, res, t, sizeof(t));
		say(o, "control request refused: %s", t);
		return;
	}
	say(o, "asking %s for control...", o->users[0] ? o->users : "the user");
}

static void
key_line(struct cl_offer *o, const char *line)
{
	if (strcmp(line, "c") == 0 || strcmp(line, "control") == 0) {
		if (o->agent == NULL) {
			say(o, "no session yet");
			return;
		}
		if (!o->cfg->control) {
			say(o,
			    "this is a view-only ticket (offer with "
			    "--control to be able to ask)");
			return;
		}
		if (o->control_pending) {
			say(o, "already asked");
			return;
		}
		if (o->main == NULL ||
		    rp_conn_call(o->main->c, "control.request",
		        json_pack("{s:s}", "ticket", o->ticket), 0,
		        key_control_cb, o) != 0) {
			say(o, "cannot ask: no broker connection");
			return;
		}
		o->control_pending = 1;
	} else if (strcmp(line, "q") == 0 || strcmp(line, "quit") == 0) {
		if (o->agent != NULL) {
			say(o, "ending the session");
			session_end(o, "ended by the helper");
		} else
			finish(o, CL_EXIT_REFUSED, "quit before a session");
	} else if (*line != '\0')
		say(o, "keys: c = ask for control, q = end the session");
}

static void
stdin_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cl_offer *o = arg;
	char buf[256];
	ssize_t n;

	(void)what;
	n = read(fd, buf, sizeof(buf));
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		event_del(o->ev_stdin); /* end of input: keys are off */
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		char ch = buf[i];
		if (ch == '\n' || ch == '\r') {
			o->keybuf[o->keylen] = '\0';
			key_line(o, o->keybuf);
			o->keylen = 0;
			if (o->done)
				return;
		} else if (o->keylen + 1 < sizeof(o->keybuf) && ch != ' ')
			o->keybuf[o->keylen++] = ch;
	}
}

/* Keys only from a terminal or a pipe (not /dev/null or a file). */
static void
watch_stdin(struct cl_offer *o)
{
	struct stat st;

	if (o->cfg->cmd != CL_CMD_OFFER || fstat(0, &st) != 0 ||
	    !(isatty(0) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
		return;
	o->ev_stdin = event_new(o->base, 0, EV_READ | EV_PERSIST, stdin_cb, o);
	if (o->ev_stdin != NULL)
		event_add(o->ev_stdin, NULL);
}

/* ---- signals ----------------------------------------------------------------- */

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct cl_offer *o = arg;

	(void)what;
	if (++o->interrupts > 1 || o->done) {
		finish(o, CL_EXIT_REFUSED, "interrupted");
		return;
	}
	if (o->agent != NULL) {
		say(o, "ending the session (signal %d)", (int)sig);
		session_end(o, "interrupted");
		return;
	}
	if (o->cfg->cmd == CL_CMD_OFFER && o->have_ticket && o->main != NULL &&
	    rp_conn_call(o->main->c, "offer.cancel",
	        json_pack("{s:s}", "ticket", o->ticket), CANCEL_MS, cancel_cb,
	        o) == 0) {
		say(o, "cancelling the offer...");
		return;
	}
	finish(o, CL_EXIT_REFUSED, "interrupted");
}

static void
on_chld(evutil_socket_t sig, short what, void *arg)
{
	struct cl_offer *o = arg;
	int st;
	pid_t p;

	(void)sig;
	(void)what;
	while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
		if (p != o->viewer_pid)
			continue;
		o->viewer_pid = 0;
		/* A viewer that exits after connecting (the window closed)
		 * ends the session through its connection; one that hands
		 * the port to a running instance exits 0 at once and the
		 * session waits for that. Only a failure without any viewer
		 * connected ends it here. */
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			log_info("the viewer command exited");
			continue;
		}
		if (o->session != NULL) {
			log_info("the viewer command exited (status %d)", st);
			continue;
		}
		if (WIFEXITED(st))
			say(o, "the viewer command failed (exit %d)",
			    WEXITSTATUS(st));
		else
			say(o, "the viewer command was killed (signal %d)",
			    WIFSIGNALED(st) ? WTERMSIG(st) : 0);
		session_end(o, "viewer command failed");
	}
}

/* ---- setup ---------------------------------------------------------------------- */

static int
setup_listeners(struct cl_offer *o)
{
	const struct cl_offer_config *cfg = o->cfg;
	const char *lo = "127.0.0.1";
	char err[512], **auto_addrs = NULL;
	size_t i, nauto = 0;

	o->vlis = cl_listen_new(o->base, &lo, 1, cfg->viewer_port,
	    viewer_accept, o, err, sizeof(err));
	if (o->vlis == NULL) {
		finish(o, CL_EXIT_USAGE, "viewer port: %s", err);
		return -1;
	}
	cl_listen_enable(o->vlis, 0);
	if (cfg->cmd != CL_CMD_OFFER)
		return 0;
	if (cfg->nlisten > 0) {
		o->lis = cl_listen_new(o->base,
		    (const char *const *)cfg->listen, cfg->nlisten, cfg->port,
		    direct_accept, o, err, sizeof(err));
	} else {
		/* The brokers' addresses decide whether loopback is useful. */
		int lb = 0;
		struct addrinfo hints, *ai = NULL, *a;
		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		for (i = 0; i < cfg->nbroker; i++) {
			if (getaddrinfo(cfg->broker[i].host,
			        cfg->broker[i].port, &hints, &ai) != 0)
				continue;
			for (a = ai; a != NULL; a = a->ai_next)
				if ((a->ai_family == AF_INET &&
				        (ntohl(
				             ((struct sockaddr_in *)a->ai_addr)
				                 ->sin_addr.s_addr) >>
				            24) == 127) ||
				    (a->ai_family == AF_INET6 &&
				        IN6_IS_ADDR_LOOPBACK(
				            &((struct sockaddr_in6 *)a->ai_addr)
				                 ->sin6_addr)))
					lb = 1;
			freeaddrinfo(ai);
		}
		if (cl_listen_local_addrs(lb, &auto_addrs, &nauto) != 0 ||
		    nauto == 0) {
			cl_listen_addrs_free(auto_addrs, nauto);
			finish(o, CL_EXIT_USAGE,
			    "no local address to listen on; give one with "
			    "--listen");
			return -1;
		}
		o->lis = cl_listen_new(o->base, (const char *const *)auto_addrs,
		    nauto, cfg->port, direct_accept, o, err, sizeof(err));
		cl_listen_addrs_free(auto_addrs, nauto);
	}
	if (o->lis == NULL) {
		finish(o, CL_EXIT_USAGE, "%s", err);
		return -1;
	}
	return 0;
}

int
cl_offer_run(const struct cl_offer_config *cfg, const char *plain_initial)
{
	struct cl_offer *o;
	struct rp_tls_opts to;
	char err[512];
	int code;
	size_t i;

	if ((o = calloc(1, sizeof(*o))) == NULL)
		return CL_EXIT_UNAVAILABLE;
	o->cfg = cfg;
	o->initial = plain_initial;
	o->mech = cfg->mech     ? cfg->mech
	    : cfg->cert != NULL ? CL_SASL_EXTERNAL
	                        : CL_SASL_PLAIN;
	o->code = CL_EXIT_UNAVAILABLE;
	if (cfg->arg != NULL)
		snprintf(o->machine, sizeof(o->machine), "%s", cfg->arg);
	set_target(o, 0);
	o->base = event_base_new();
	o->hold = evbuffer_new();
	if (o->base == NULL || o->hold == NULL) {
		code = CL_EXIT_UNAVAILABLE;
		goto out;
	}
	memset(&to, 0, sizeof(to));
	to.role = RP_TLS_CLIENT;
	to.ca_file = cfg->ca;
	to.cert_file = cfg->cert;
	to.key_file = cfg->key;
	to.handshake_timeout_ms = cfg->call_timeout_s * 1000;
	if ((o->bctx = rp_tls_ctx_new(&to, err, sizeof(err))) == NULL) {
		fprintf(stderr, "raoffer: %s\n", err);
		code = CL_EXIT_USAGE;
		goto out;
	}
	/* Connections that end up in a cl_splice run in stream mode: the
	 * splice does the backpressure per direction (see rp_tls_opts). */
	to.stream = 1;
	if ((o->rctx = rp_tls_ctx_new(&to, err, sizeof(err))) == NULL) {
		fprintf(stderr, "raoffer: %s\n", err);
		code = CL_EXIT_USAGE;
		goto out;
	}
	memset(&to, 0, sizeof(to));
	to.role = RP_TLS_SERVER;
	to.stream = 1;
	to.psk_lookup = psk_lookup;
	to.psk_arg = o;
	to.handshake_timeout_ms = 15000;
	if ((o->pskctx = rp_tls_ctx_new(&to, err, sizeof(err))) == NULL) {
		fprintf(stderr, "raoffer: %s\n", err);
		code = CL_EXIT_UNAVAILABLE;
		goto out;
	}
	o->deadline = evtimer_new(o->base, deadline_cb, o);
	o->relay_timer = evtimer_new(o->base, relay_timer_cb, o);
	o->poll_timer = evtimer_new(o->base, poll_timer_cb, o);
	o->ev_int = evsignal_new(o->base, SIGINT, on_signal, o);
	o->ev_term = evsignal_new(o->base, SIGTERM, on_signal, o);
	o->ev_chld = evsignal_new(o->base, SIGCHLD, on_chld, o);
	if (o->deadline == NULL || o->relay_timer == NULL ||
	    o->poll_timer == NULL || o->ev_int == NULL || o->ev_term == NULL ||
	    o->ev_chld == NULL) {
		code = CL_EXIT_UNAVAILABLE;
		goto out;
	}
	evsignal_add(o->ev_int, NULL);
	evsignal_add(o->ev_term, NULL);
	evsignal_add(o->ev_chld, NULL);
	watch_stdin(o);
	/* Seed 000: listen first, advertise what was bound. */
	if (setup_listeners(o) == 0)
		bconn_open(o, 0, main_authed);
	if (!o->done)
		event_base_dispatch(o->base);
	code = o->code;
out:
	/* Tear down in reverse order. */
	session_close(o);
	for (i = 0; i < PENDING_MAX; i++)
		if (o->pending[i] != NULL)
			rp_tls_close(o->pending[i]->t); /* pend_close frees */
	bconn_free(o->rel);
	o->rel = NULL;
	bconn_free(o->main);
	o->main = NULL;
	if (o->base != NULL) {
		/* Let closes flush (bounded). */
		struct timeval tv = {0, 200000};
		event_base_loopexit(o->base, &tv);
		event_base_dispatch(o->base);
	}
	cl_listen_free(o->lis);
	cl_listen_free(o->vlis);
	if (o->viewer_pid > 0)
		kill(-o->viewer_pid, SIGTERM); /* its process group */
	cl_wipe(o->psk, sizeof(o->psk));
	if (o->deadline)
		event_free(o->deadline);
	if (o->relay_timer)
		event_free(o->relay_timer);
	if (o->poll_timer)
		event_free(o->poll_timer);
	if (o->ev_int)
		event_free(o->ev_int);
	if (o->ev_term)
		event_free(o->ev_term);
	if (o->ev_chld)
		event_free(o->ev_chld);
	if (o->ev_stdin)
		event_free(o->ev_stdin);
	if (o->hold)
		evbuffer_free(o->hold);
	/* rp_tls objects still alive belong to the base; the process ends
	 * right after this, so the contexts are released last. */
	if (o->base)
		event_base_free(o->base);
	if (o->pskctx)
		rp_tls_ctx_free(o->pskctx);
	if (o->rctx)
		rp_tls_ctx_free(o->rctx);
	if (o->bctx)
		rp_tls_ctx_free(o->bctx);
	free(o);
	return code;
}

static void
session_close(struct cl_offer *o)
{
	if (o->session != NULL)
		cl_splice_close(o->session, "raoffer exiting");
	else if (o->agent != NULL) {
		struct rp_tls *t = o->agent;
		o->agent = NULL;
		rp_tls_set_cbs(t, NULL, NULL);
		rp_tls_close(t);
	}
	if (o->relay_splice != NULL)
		cl_splice_close(o->relay_splice, "raoffer exiting");
}
