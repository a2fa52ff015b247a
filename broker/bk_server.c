/*
 * bk_server.c - the one listening port and each connection's life.
 *
 * accept -> rp_tls_accept_pool (handshake, client certificate requested,
 * on one of the handshake threads; callbacks come back to the loop) ->
 * on_ready: rp_conn over the TLS connection with THE method table and a
 * struct bk_peer as its data -> ... -> on_close: the agent goes offline or
 * the helper's pending offers are dropped, the peer is freed.
 *
 * A connection at rest costs the rp_conn, the rp_tls and the peer record:
 * no timer per connection. One periodic sweep (every few seconds) closes
 * agents that stopped sending keepalives and connections that have not
 * finished hello/authentication within login_timeout.
 *
 * Out of descriptors (EMFILE/ENFILE), accept is paused for one second
 * rather than spinning on a listener that is always readable; at
 * max_connections it is paused until a connection closes.
 *
 * max_connections is global, so one host could fill it with connections
 * that never log in and stop accept for everybody. Connections that have
 * not logged in yet are therefore also counted per source (an IPv4
 * address, an IPv6 /64): over max_pending_per_address a new one is closed
 * at accept, before any TLS work. A peer stops counting when it logs in
 * (bk_server_logged_in) or when its record is freed, whichever comes
 * first (p->pending says whether it still counts).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "az_dir.h"
#include "az_sasl.h"
#include "bk.h"
#include "bk_audit.h"
#include "bk_config.h"
#include "bk_methods.h"
#include "bk_metrics.h"
#include "bk_offer.h"
#include "bk_server.h"
#include "rp_conn.h"
#include "rp_log.h"
#include "rp_tls.h"

#define SWEEP_INTERVAL_S 5 /* at most; less with short limits */
#define ACCEPT_PAUSE_S 1
#define PEND_BUCKETS 4096
#define PEND_WARN_S 60 /* one refusal log line per source per minute */

/* Connections not logged in yet from one source. Kept while count > 0,
 * or while its last warning is recent (so the log stays rate limited). */
struct pend {
	struct bk_addrkey key;
	unsigned count;
	int64_t warned;        /* last refusal log line (0: never) */
	unsigned long refused; /* refusals not yet logged */
	struct pend *next;
};

struct bk_server {
	struct bk_ctx *ctx;
	struct evconnlistener *lis;
	struct event *resume;
	struct event *sweep;
	struct bk_peer *peers; /* every connection */
	size_t nconns;
	unsigned port;
	int paused_fd;  /* out of descriptors: resume timer armed */
	int paused_max; /* at max_connections */
	int draining;
	struct pend **pend; /* PEND_BUCKETS chains, NULL until needed */
	size_t npend;       /* entries */
};

int64_t
bk_now(void)
{
	return (int64_t)time(NULL);
}

struct bk_peer *
bk_peer_of(struct rp_conn *c)
{
	return c ? rp_conn_data(c) : NULL;
}

int
bk_audit(struct bk_ctx *ctx, int ev, json_t *fields)
{
	if (ctx->audit == NULL) {
		json_decref(fields);
		return 0;
	}
	return bk_audit_write(ctx->audit, (enum bk_audit_event)ev, fields);
}

void
bk_addrkey_from(const struct sockaddr *sa, struct bk_addrkey *k)
{
	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		k->family = AF_INET;
		memcpy(k->b, &s4->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		const unsigned char *a = s6->sin6_addr.s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			/* A dual-stack listener sees IPv4 clients so. */
			k->family = AF_INET;
			memcpy(k->b, a + 12, 4);
		} else {
			k->family = AF_INET6;
			memcpy(k->b, a, 8);
		}
	}
}

void
bk_addrkey_text(const struct bk_addrkey *k, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned char a6[16];

	if (k->family == AF_INET) {
		evutil_inet_ntop(AF_INET, k->b, host, sizeof(host));
		snprintf(out, len, "%s", host);
	} else if (k->family == AF_INET6) {
		memset(a6, 0, sizeof(a6));
		memcpy(a6, k->b, 8);
		evutil_inet_ntop(AF_INET6, a6, host, sizeof(host));
		snprintf(out, len, "%s/64", host);
	} else {
		snprintf(out, len, "?");
	}
}

static unsigned
pend_hash(const struct bk_addrkey *k)
{
	unsigned h = 2166136261u;

	h = (h ^ k->family) * 16777619u;
	for (size_t i = 0; i < sizeof(k->b); i++)
		h = (h ^ k->b[i]) * 16777619u;
	return h % PEND_BUCKETS;
}

/* The entry for k; created (count 0) if create; NULL if absent / no
 * memory (then the connection is simply not limited). */
static struct pend *
pend_get(struct bk_server *s, const struct bk_addrkey *k, int create)
{
	unsigned h = pend_hash(k);
	struct pend *e;

	if (s->pend == NULL) {
		if (!create)
			return NULL;
		s->pend = calloc(PEND_BUCKETS, sizeof(*s->pend));
		if (s->pend == NULL)
			return NULL;
	}
	for (e = s->pend[h]; e != NULL; e = e->next)
		if (memcmp(&e->key, k, sizeof(*k)) == 0)
			return e;
	if (!create || (e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	e->key = *k;
	e->next = s->pend[h];
	s->pend[h] = e;
	s->npend++;
	return e;
}

/* Frees the entries nobody counts on any more (all of them if all). */
static void
pend_prune(struct bk_server *s, int64_t now, int all)
{
	if (s->pend == NULL)
		return;
	for (unsigned h = 0; h < PEND_BUCKETS; h++) {
		struct pend **pp = &s->pend[h], *e;
		while ((e = *pp) != NULL) {
			if (all ||
			    (e->count == 0 && now - e->warned >= PEND_WARN_S)) {
				*pp = e->next;
				free(e);
				s->npend--;
			} else {
				pp = &e->next;
			}
		}
	}
}

static void
pend_release(struct bk_server *s, struct bk_peer *p)
{
	struct pend *e;

	if (!p->pending)
		return;
	p->pending = 0;
	if ((e = pend_get(s, &p->akey, 0)) != NULL && e->count > 0)
		e->count--;
}

void
bk_server_logged_in(struct bk_peer *p)
{
	if (p != NULL && p->ctx != NULL && p->ctx->server != NULL)
		pend_release(p->ctx->server, p);
}

/* 1 if a new connection from k must be refused (logged, counted). */
static int
pend_over(struct bk_server *s, const struct bk_addrkey *k)
{
	unsigned cap = s->ctx->cfg->max_pending_per_address;
	struct pend *e;
	int64_t now;
	char text[64];

	if (cap == 0 || (e = pend_get(s, k, 0)) == NULL || e->count < cap)
		return 0;
	bk_metrics_count(s->ctx, BK_M_CONN_REFUSED, "pending_per_address");
	e->refused++;
	now = bk_now();
	if (now - e->warned >= PEND_WARN_S) {
		bk_addrkey_text(k, text, sizeof(text));
		log_warnx("%s: %u connections not logged in yet "
		          "(max_pending_per_address): %lu new one(s) refused",
		    text, e->count, e->refused);
		e->warned = now;
		e->refused = 0;
	}
	return 1;
}

static void
accept_update(struct bk_server *s)
{
	int want = !s->draining && !s->paused_fd &&
	    s->nconns < s->ctx->cfg->max_connections;

	if (s->lis == NULL)
		return;
	if (want)
		evconnlistener_enable(s->lis);
	else
		evconnlistener_disable(s->lis);
}

static void
peer_unlink_free(struct bk_server *s, struct bk_peer *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		s->peers = p->next;
	if (p->next)
		p->next->prev = p->prev;
	pend_release(s, p);
	bk_session_peer_gone(p);
	az_entry_free(p->user);
	az_entry_free(p->computer);
	free(p->machine);
	free(p);
	s->nconns--;
	if (s->paused_max && s->nconns < s->ctx->cfg->max_connections) {
		s->paused_max = 0;
		accept_update(s);
	}
}

/* rp_conn callbacks. */
static void
conn_on_close(struct rp_conn *c, const char *why, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_peer *p = rp_conn_data(c);

	if (p == NULL)
		return;
	rp_conn_set_data(c, NULL);
	log_debug("connection from %s closed: %s", p->addr, why ? why : "");
	if (p->role == BK_ROLE_AGENT)
		bk_agents_conn_closed(ctx, p, why);
	else if (p->role == BK_ROLE_HELPER && p->user != NULL) {
		bk_offers_helper_gone(ctx, p);
		if (ctx->nhelpers > 0)
			ctx->nhelpers--;
	}
	p->conn = NULL;
	peer_unlink_free(ctx->server, p);
	rp_conn_unref(c);
}

static void
conn_on_protocol_error(struct rp_conn *c, int code, const char *msg, void *arg)
{
	struct bk_peer *p = rp_conn_data(c);

	log_info("%s: protocol error %d: %s", p ? p->addr : "?", code,
	    msg ? msg : "");
}

static const struct rp_conn_cbs conn_cbs = {
    .on_close = conn_on_close,
    .on_protocol_error = conn_on_protocol_error,
};

/* TLS handshake callbacks (until the rp_conn takes over). */
static void
hs_on_ready(struct rp_tls *t, void *arg)
{
	struct bk_peer *p = arg;
	struct bk_ctx *ctx = p->ctx;
	struct rp_conn_opts o = {
	    .methods = bk_methods,
	    .nmethods = bk_nmethods,
	    .cbs = &conn_cbs,
	    .ctx = ctx,
	};
	const char *id = rp_tls_peer_id(t);

	p->conn = rp_conn_new_tls(ctx->base, t, &o);
	if (p->conn == NULL) {
		log_warnx("%s: cannot set up the connection", p->addr);
		rp_tls_set_cbs(t, NULL, NULL);
		rp_tls_close(t);
		peer_unlink_free(ctx->server, p);
		return;
	}
	rp_conn_set_data(p->conn, p);
	log_debug("%s: TLS ready (%s), client certificate: %s", p->addr,
	    rp_tls_version(t), id ? id : "none");
	if (ctx->server->draining) {
		p->closing = 1;
		rp_conn_close(p->conn, "broker shutting down");
	}
}

static void
hs_on_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct bk_peer *p = arg;

	log_info("%s: TLS connection refused or failed before it was ready: "
	         "%s",
	    p->addr, msg ? msg : "closed");
	peer_unlink_free(p->ctx->server, p);
}

static const struct rp_tls_cbs hs_cbs = {
    .on_ready = hs_on_ready,
    .on_close = hs_on_close,
};

static void
addr_text(const struct sockaddr *sa, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		evutil_inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, ntohs(s6->sin6_port));
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		evutil_inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, ntohs(s4->sin_port));
	} else {
		snprintf(out, len, "?");
	}
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_server *s = ctx->server;
	struct bk_peer *p;
	struct bk_addrkey k;
	struct pend *e;

	if (s->draining) {
		evutil_closesocket(fd);
		return;
	}
	bk_addrkey_from(sa, &k);
	if (pend_over(s, &k)) {
		evutil_closesocket(fd);
		return;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		evutil_closesocket(fd);
		return;
	}
	p->ctx = ctx;
	p->since = bk_now();
	p->akey = k;
	addr_text(sa, p->addr, sizeof(p->addr));
	if (ctx->cfg->max_pending_per_address > 0 &&
	    (e = pend_get(s, &k, 1)) != NULL) {
		e->count++;
		p->pending = 1;
	}
	p->next = s->peers;
	if (s->peers)
		s->peers->prev = p;
	s->peers = p;
	s->nconns++;
	if (ctx->hspool != NULL
	        ? rp_tls_accept_pool(ctx->hspool, ctx->tls, fd, &hs_cbs, p) != 0
	        : rp_tls_accept(ctx->tls, ctx->base, fd, &hs_cbs, p) == NULL) {
		log_warnx("%s: cannot start TLS", p->addr);
		evutil_closesocket(fd);
		peer_unlink_free(s, p);
		return;
	}
	if (s->nconns >= ctx->cfg->max_connections && !s->paused_max) {
		log_warnx("max_connections (%u) reached: accepting paused",
		    ctx->cfg->max_connections);
		s->paused_max = 1;
		accept_update(s);
	}
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct bk_server *s = arg;

	s->paused_fd = 0;
	accept_update(s);
}

static void
on_accept_error(struct evconnlistener *l, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_server *s = ctx->server;
	int e = EVUTIL_SOCKET_ERROR();
	struct timeval tv = {ACCEPT_PAUSE_S, 0};

	if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
		if (!s->paused_fd)
			log_warnx("accept: %s: pausing accept for %d s",
			    strerror(e), ACCEPT_PAUSE_S);
		s->paused_fd = 1;
		accept_update(s);
		evtimer_add(s->resume, &tv);
		return;
	}
	log_warnx("accept: %s", strerror(e));
}

/*
 * A connection handed to the relay (rp_conn_detach) gets no on_close: its
 * bytes now belong to bk_relay.c. Forget our record of it here. An agent
 * whose connection went raw can no longer be prompted: it is offline. A
 * helper's offers are left alone (the relay carries its session).
 */
static void
reap_detached(struct bk_server *s)
{
	struct bk_peer *p, *next;

	for (p = s->peers; p != NULL; p = next) {
		struct rp_conn *c = p->conn;
		next = p->next;
		if (c == NULL || !(rp_conn_state(c) & RP_ST_RAW))
			continue;
		rp_conn_set_data(c, NULL);
		if (p->role == BK_ROLE_AGENT)
			bk_agents_conn_closed(s->ctx, p, "relay");
		else if (p->role == BK_ROLE_HELPER && p->user != NULL &&
		    s->ctx->nhelpers > 0)
			s->ctx->nhelpers--;
		p->conn = NULL;
		peer_unlink_free(s, p);
		rp_conn_unref(c);
	}
}

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct bk_server *s = arg;
	struct bk_ctx *ctx = s->ctx;
	int64_t now = bk_now();

	reap_detached(s);
	pend_prune(s, now, 0);
	bk_agents_sweep(ctx);
	/* Connections that never finished hello / authentication. */
	for (struct bk_peer *p = s->peers; p != NULL; p = p->next) {
		if (p->conn == NULL || p->closing || p->busy)
			continue;
		if ((rp_conn_state(p->conn) & RP_ST_AGENT) &&
		    p->agent == NULL &&
		    now - p->since > (int64_t)ctx->cfg->login_timeout_s +
		            (int64_t)ctx->cfg->relay_wait_timeout_s) {
			/* hello as agent but never registered (nor paired in
			 * the relay): nobody can reach it, close it. */
			log_info("%s: agent %s never registered: closing",
			    p->addr, p->machine ? p->machine : "?");
			p->closing = 1;
			rp_conn_close(p->conn, "no agent.register");
			continue;
		}
		if (!(rp_conn_state(p->conn) & RP_ST_PREAUTH))
			continue;
		if (now - p->since > (int64_t)ctx->cfg->login_timeout_s) {
			log_info("%s: no login within %u s: closing", p->addr,
			    ctx->cfg->login_timeout_s);
			p->closing = 1;
			rp_conn_close(p->conn, "login timeout");
		}
	}
}

static int
listen_error(struct bk_ctx *ctx, int e, char *err, size_t errlen)
{
	const struct bk_config *c = ctx->cfg;
	const char *hint;

	switch (e) {
	case EADDRINUSE:
		hint = "; another program holds this port";
		break;
	case EACCES:
		hint = "; ports below 1024 need CAP_NET_BIND_SERVICE";
		break;
	case EADDRNOTAVAIL:
		hint = "; no interface of this machine has that address";
		break;
	default:
		hint = "";
	}
	snprintf(err, errlen,
	    "cannot listen on %s: %s%s \xe2\x80\x94 change `listen` in "
	    "[broker] of %s",
	    c->listen, e == EADDRINUSE ? "address already in use" : strerror(e),
	    hint, c->path);
	return -1;
}

int
bk_server_start(struct bk_ctx *ctx, char *err, size_t errlen)
{
	const struct bk_config *c = ctx->cfg;
	struct bk_server *s;
	struct addrinfo hints, *res = NULL;
	char port[8];
	evutil_socket_t fd;
	int one = 1, rc, e;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct timeval tv = {SWEEP_INTERVAL_S, 0};

	/* The sweep must be finer than the limits it enforces. */
	if ((unsigned)tv.tv_sec > c->keepalive_s)
		tv.tv_sec = c->keepalive_s;
	if ((unsigned)tv.tv_sec > c->login_timeout_s)
		tv.tv_sec = c->login_timeout_s;
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	s->ctx = ctx;
	ctx->server = s;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", c->listen_port);
	if ((rc = getaddrinfo(c->listen_host, port, &hints, &res)) != 0) {
		snprintf(err, errlen,
		    "cannot listen on %s: %s \xe2\x80\x94 change `listen` in "
		    "[broker] of %s",
		    c->listen, gai_strerror(rc), c->path);
		return -1;
	}
	fd = socket(
	    res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		e = errno;
		freeaddrinfo(res);
		return listen_error(ctx, e, err, errlen);
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 ||
	    listen(fd, 1024) < 0) {
		e = errno;
		freeaddrinfo(res);
		close(fd);
		return listen_error(ctx, e, err, errlen);
	}
	freeaddrinfo(res);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		s->port = ntohs(ss.ss_family == AF_INET6
		        ? ((struct sockaddr_in6 *)&ss)->sin6_port
		        : ((struct sockaddr_in *)&ss)->sin_port);
	s->lis = evconnlistener_new(ctx->base, on_accept, ctx,
	    LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE,
	    -1, fd);
	if (s->lis == NULL) {
		close(fd);
		snprintf(err, errlen, "cannot listen on %s: libevent failed",
		    c->listen);
		return -1;
	}
	ctx->listener = s->lis;
	evconnlistener_set_error_cb(s->lis, on_accept_error);
	s->resume = evtimer_new(ctx->base, on_resume, s);
	s->sweep = event_new(ctx->base, -1, EV_PERSIST, on_sweep, s);
	if (s->resume == NULL || s->sweep == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	evtimer_add(s->sweep, &tv);
	log_info("listening on %s (port %u)", c->listen, s->port);
	return 0;
}

unsigned
bk_server_port(const struct bk_ctx *ctx)
{
	return ctx->server ? ctx->server->port : 0;
}

size_t
bk_server_nconns(struct bk_ctx *ctx)
{
	if (ctx->server == NULL)
		return 0;
	reap_detached(ctx->server);
	return ctx->server->nconns;
}

void
bk_server_drain(struct bk_ctx *ctx)
{
	struct bk_server *s = ctx->server;
	struct rp_conn **v;
	size_t n = 0;

	if (s == NULL || s->draining)
		return;
	s->draining = 1;
	accept_update(s);
	/* Collect first: closing may run callbacks that edit the list. */
	v = calloc(s->nconns + 1, sizeof(*v));
	if (v == NULL)
		return;
	for (struct bk_peer *p = s->peers; p != NULL; p = p->next)
		if (p->conn != NULL && !p->closing) {
			p->closing = 1;
			rp_conn_ref(p->conn);
			v[n++] = p->conn;
		}
	for (size_t i = 0; i < n; i++) {
		rp_conn_close(v[i], "broker shutting down");
		rp_conn_unref(v[i]);
	}
	free(v);
	log_info("draining: %zu connection(s) closing", s->nconns);
}

void
bk_server_free(struct bk_ctx *ctx)
{
	struct bk_server *s = ctx->server;

	if (s == NULL)
		return;
	if (s->lis != NULL)
		evconnlistener_free(s->lis);
	s->lis = NULL;
	ctx->listener = NULL;
	if (s->resume != NULL)
		event_free(s->resume);
	if (s->sweep != NULL)
		event_free(s->sweep);
	/* Connections still open are abandoned with the event base; their
	 * peer records go with them. */
	while (s->peers != NULL) {
		struct bk_peer *p = s->peers;
		if (p->conn != NULL)
			rp_conn_set_data(p->conn, NULL);
		peer_unlink_free(s, p);
	}
	pend_prune(s, 0, 1);
	free(s->pend);
	free(s);
	ctx->server = NULL;
}
