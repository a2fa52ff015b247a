/*
 * bk_relay.c - relay.join and the byte splice.
 *
 * Both sides of a ticket (the helper, on a connection of its own, and the
 * agent) send relay.join. The first to arrive waits, unanswered, until the
 * other joins or relay_wait passes; then both get {"status": "paired"},
 * their connections are detached from JSON-RPC (rp_conn_detach) and from
 * then on every plaintext byte read from one rp_tls is written to the other.
 * That plaintext is the inner PSK-TLS stream between agent and helper: the
 * broker never looks at it.
 *
 * Who may join: the helper that owns the ticket, and the agent of the
 * ticket's machine; the ticket must be accepted or connected and not due.
 * A second join for a side that is already there, or for a ticket already
 * spliced, is refused (busy / ticket_used).
 *
 * Limits: one timer per pair (1 s) checks the wait deadline, idleness and
 * resumes paused sides; the byte budget counts both directions and closes
 * the pair when passed. Backpressure: after writing to side B, if B has more
 * than RELAY_WATER ciphertext bytes queued, side A stops being read until
 * B's output drains (on_drain, or the timer's check as a fallback).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bk.h"
#include "bk_audit.h"
#include "bk_config.h"
#include "bk_offer.h"
#include "bk_relay.h"
#include "bk_ticket.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_log.h"
#include "rp_tls.h"

#define RELAY_WATER (256 * 1024)
#define RELAY_TICK_MS 1000
#define RELAY_DEFAULT_WAIT 30
#define RELAY_DEFAULT_IDLE 300

enum { SIDE_AGENT = 0, SIDE_HELPER = 1 };

struct rside {
	struct rpair *p;
	int which;
	struct rp_conn *c; /* ref held */
	json_t *jid;       /* pending relay.join id, until paired */
	struct rp_tls *t;  /* after detach, until on_close */
	int paused;        /* we stopped reading it (other side full) */
	int closed;
	uint64_t bytes_in; /* read from this side */
	char host[64];
};

struct rpair {
	struct rpair *next, *prev;
	struct bk_relays *rs;
	char id[BK_TICKET_ID_LEN + 1];
	struct rside s[2];
	struct event *tick;
	int spliced;
	int ending;
	int64_t created, started;
	uint64_t last_ms;
	char reason[32];
};

struct bk_relays {
	struct bk_ctx *ctx;
	struct rpair *head;
	size_t count;
};

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static unsigned
cfg_wait(struct bk_ctx *ctx)
{
	return ctx->cfg && ctx->cfg->relay_wait_timeout_s
	    ? ctx->cfg->relay_wait_timeout_s
	    : RELAY_DEFAULT_WAIT;
}

static unsigned
cfg_idle(struct bk_ctx *ctx)
{
	return ctx->cfg && ctx->cfg->relay_idle_timeout_s
	    ? ctx->cfg->relay_idle_timeout_s
	    : RELAY_DEFAULT_IDLE;
}

static uint64_t
cfg_budget(struct bk_ctx *ctx)
{
	return ctx->cfg ? ctx->cfg->relay_byte_budget : 0;
}

static void
audit(struct bk_ctx *ctx, enum bk_audit_event ev, json_t *f)
{
	if (ctx->audit == NULL) {
		json_decref(f);
		return;
	}
	if (bk_audit_write(ctx->audit, ev, f) != RP_OK)
		log_warnx("audit: %s not written", bk_audit_event_name(ev));
}

static void
refuse(
    struct rp_conn *c, json_t *id, int code, const char *tid, const char *why)
{
	struct bk_ctx *ctx = rp_conn_ctx(c);
	const char *host = rp_conn_peer_addr(c);

	if (tid != NULL)
		audit(ctx, BK_AE_TICKET_REFUSED,
		    json_pack("{s:s, s:s, s:s, s:s}", "ticket", tid, "reason",
		        rp_err_name(code), "host", host ? host : "", "via",
		        "relay"));
	if (id != NULL)
		rp_conn_error(c, id, code, why, NULL);
}

static void
pair_free(struct rpair *p)
{
	struct bk_relays *rs = p->rs;
	int i;

	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		rs->head = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	rs->count--;
	if (p->tick != NULL)
		event_free(p->tick);
	for (i = 0; i < 2; i++) {
		if (p->s[i].jid != NULL)
			json_decref(p->s[i].jid);
		if (p->s[i].c != NULL)
			rp_conn_unref(p->s[i].c);
	}
	free(p);
}

static void
pair_audit_end(struct rpair *p)
{
	json_t *f = json_pack("{s:s, s:s, s:I, s:I, s:I}", "ticket", p->id,
	    "reason", p->reason[0] ? p->reason : "closed", "bytes_to_agent",
	    (json_int_t)p->s[SIDE_HELPER].bytes_in, "bytes_to_helper",
	    (json_int_t)p->s[SIDE_AGENT].bytes_in, "seconds",
	    (json_int_t)(p->started ? bk_now() - p->started : 0));

	audit(p->rs->ctx, BK_AE_RELAY_ENDED, f);
}

static void
set_reason(struct rpair *p, const char *why)
{
	if (p->reason[0] == '\0')
		snprintf(p->reason, sizeof(p->reason), "%s", why);
}

/* Closes both sides (gracefully: queued bytes are flushed first). The pair
 * is freed when the last on_close has run. */
static void
pair_end(struct rpair *p, const char *why)
{
	int i;

	set_reason(p, why);
	if (p->ending)
		return;
	p->ending = 1;
	for (i = 0; i < 2; i++)
		if (p->s[i].t != NULL) {
			rp_tls_set_reading(p->s[i].t, 0);
			rp_tls_close(p->s[i].t);
		}
}

static void
side_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	struct rside *s = arg;
	struct rpair *p = s->p;
	struct rside *o = &p->s[!s->which];
	size_t n = evbuffer_get_length(in);
	uint64_t budget = cfg_budget(p->rs->ctx);

	if (o->t == NULL || p->ending) {
		evbuffer_drain(in, n);
		return;
	}
	s->bytes_in += n;
	p->last_ms = mono_ms();
	if (budget != 0 && p->s[0].bytes_in + p->s[1].bytes_in > budget) {
		evbuffer_drain(in, n);
		log_info("relay %s: byte budget %llu exceeded", p->id,
		    (unsigned long long)budget);
		pair_end(p, "byte_budget");
		return;
	}
	if (rp_tls_write_buffer(o->t, in) != 0) {
		evbuffer_drain(in, evbuffer_get_length(in));
		pair_end(p, "write_failed");
		return;
	}
	if (rp_tls_out_pending(o->t) > RELAY_WATER) {
		s->paused = 1;
		rp_tls_set_reading(t, 0);
	}
}

/* Side s's output drained: the other side may be read again. */
static void
side_drain(struct rp_tls *t, void *arg)
{
	struct rside *s = arg;
	struct rside *o = &s->p->s[!s->which];

	(void)t;
	if (o->paused && o->t != NULL && !s->p->ending) {
		o->paused = 0;
		rp_tls_set_reading(o->t, 1);
	}
}

static void
side_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct rside *s = arg;
	struct rpair *p = s->p;
	struct rside *o = &p->s[!s->which];

	(void)t;
	(void)msg;
	s->t = NULL;
	s->closed = 1;
	set_reason(p,
	    why == RP_TLS_CLOSED_PEER
	        ? (s->which == SIDE_AGENT ? "agent_closed" : "helper_closed")
	        : why == RP_TLS_CLOSED_LOCAL ? "closed"
	                                     : "error");
	if (s->c != NULL)
		rp_conn_closed(s->c, "relay ended");
	if (o->t != NULL) {
		if (!p->ending) {
			p->ending = 1;
			rp_tls_close(o->t); /* flushes what it still has */
		}
		return;
	}
	pair_audit_end(p);
	pair_free(p);
}

static void
quiet_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	(void)t;
	(void)why;
	(void)msg;
	(void)arg;
}

static const struct rp_tls_cbs quiet_cbs = {
    .on_close = quiet_close,
};

static const struct rp_tls_cbs relay_cbs = {
    .on_read = side_read,
    .on_drain = side_drain,
    .on_close = side_close,
};

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rpair *p = arg;
	struct bk_ctx *ctx = p->rs->ctx;
	int i;

	(void)fd;
	(void)what;
	if (!p->spliced) {
		if (bk_now() - p->created < (int64_t)cfg_wait(ctx))
			return;
		/* The other side never came: tell the one waiting, close. */
		for (i = 0; i < 2; i++)
			if (p->s[i].c != NULL && p->s[i].jid != NULL) {
				rp_conn_reply(p->s[i].c, p->s[i].jid,
				    json_pack("{s:s, s:s}", "status", "timeout",
				        "reason",
				        i == SIDE_AGENT ? "helper_absent"
				                        : "agent_absent"));
				json_decref(p->s[i].jid);
				p->s[i].jid = NULL;
				rp_conn_close(p->s[i].c, "relay wait timeout");
			}
		set_reason(p, "wait_timeout");
		pair_audit_end(p);
		pair_free(p);
		return;
	}
	if (p->ending)
		return;
	if (mono_ms() - p->last_ms >= (uint64_t)cfg_idle(ctx) * 1000) {
		pair_end(p, "idle");
		return;
	}
	for (i = 0; i < 2; i++) {
		struct rside *s = &p->s[i], *o = &p->s[!i];

		if (s->paused && s->t != NULL && o->t != NULL &&
		    rp_tls_out_pending(o->t) <= RELAY_WATER / 2) {
			s->paused = 0;
			rp_tls_set_reading(s->t, 1);
		}
	}
}

/* Both sides are here: answer both, detach both, start splicing. */
static void
pair_start(struct rpair *p)
{
	struct bk_ctx *ctx = p->rs->ctx;
	struct evbuffer *left[2] = {NULL, NULL};
	int i;

	for (i = 0; i < 2; i++) {
		struct rside *s = &p->s[i];

		rp_conn_reply(
		    s->c, s->jid, json_pack("{s:s}", "status", "paired"));
		json_decref(s->jid);
		s->jid = NULL;
		left[i] = evbuffer_new();
		s->t = rp_conn_detach(s->c, left[i]);
	}
	p->spliced = 1;
	p->started = bk_now();
	p->last_ms = mono_ms();
	if (p->s[0].t == NULL || p->s[1].t == NULL) {
		for (i = 0; i < 2; i++) {
			if (p->s[i].t != NULL)
				rp_tls_set_cbs(p->s[i].t, &relay_cbs, &p->s[i]);
			if (left[i] != NULL)
				evbuffer_free(left[i]);
		}
		pair_end(p, "detach_failed");
		if (p->s[0].t == NULL && p->s[1].t == NULL) {
			pair_audit_end(p);
			pair_free(p);
		}
		return;
	}
	for (i = 0; i < 2; i++)
		rp_tls_set_cbs(p->s[i].t, &relay_cbs, &p->s[i]);
	audit(ctx, BK_AE_RELAY_STARTED,
	    json_pack("{s:s, s:s, s:s}", "ticket", p->id, "helper_host",
	        p->s[SIDE_HELPER].host, "host", p->s[SIDE_AGENT].host));
	/* Bytes that arrived right behind the join line. */
	for (i = 0; i < 2; i++) {
		if (left[i] != NULL && evbuffer_get_length(left[i]) > 0 &&
		    p->s[!i].t != NULL) {
			p->s[i].bytes_in += evbuffer_get_length(left[i]);
			rp_tls_write_buffer(p->s[!i].t, left[i]);
		}
		if (left[i] != NULL)
			evbuffer_free(left[i]);
	}
}

static struct rpair *
pair_find(struct bk_relays *rs, const char *id)
{
	struct rpair *p;

	for (p = rs->head; p != NULL; p = p->next)
		if (strcmp(p->id, id) == 0)
			return p;
	return NULL;
}

/*
 * The agent joined first: the helper may not know the direct connection
 * failed, so tell it to join too. Every authenticated connection of the
 * ticket's helper gets offer.update {ticket, state, relay: "waiting"}
 * (the broker's peers are one list; `from` is any element of it).
 */
static void
tell_helper_waiting(struct bk_peer *from, const struct bk_ticket *t)
{
	struct bk_peer *q = from;

	while (q->prev != NULL)
		q = q->prev;
	for (; q != NULL; q = q->next) {
		if (q->role != BK_ROLE_HELPER || q->user == NULL ||
		    q->user->account == NULL || q->conn == NULL ||
		    !rp_conn_is_open(q->conn) ||
		    !(rp_conn_state(q->conn) & RP_ST_HELPER) ||
		    strcasecmp(q->user->account, t->helper) != 0)
			continue;
		(void)rp_conn_notify(q->conn, "offer.update",
		    json_pack("{s:s, s:s, s:s}", "ticket", t->id, "state",
		        bk_ticket_state_name(t->state), "relay", "waiting"));
	}
}

void
bk_h_relay_join(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_relays *rs = ctx->relays;
	struct bk_peer *peer = rp_conn_data(c);
	const char *tid = json_string_value(json_object_get(params, "ticket"));
	const char *side = json_string_value(json_object_get(params, "side"));
	const struct bk_ticket *t;
	struct timeval tv = {RELAY_TICK_MS / 1000, 0};
	struct rpair *p;
	struct rside *s;
	int which;
	const char *host;

	if (id == NULL)
		return; /* request only: the reply marks the switch */
	if (rs == NULL || peer == NULL) {
		rp_conn_error(c, id, RP_ERR_INTERNAL, "relay disabled", NULL);
		return;
	}
	if (tid == NULL || !bk_ticket_id_valid(tid) || side == NULL ||
	    (strcmp(side, "agent") != 0 && strcmp(side, "helper") != 0)) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "ticket (id) and side (\"agent\"|\"helper\") required",
		    NULL);
		return;
	}
	which = strcmp(side, "agent") == 0 ? SIDE_AGENT : SIDE_HELPER;
	if (peer->role == BK_ROLE_AGENT && peer->agent != NULL) {
		/* Detaching the registered connection would take the machine
		 * offline: the relay needs a connection of its own. */
		refuse(c, id, RP_ERR_WRONG_STATE, tid,
		    "relay.join needs a connection of its own (no "
		    "agent.register)");
		return;
	}
	if ((which == SIDE_AGENT) != (peer->role == BK_ROLE_AGENT)) {
		refuse(
		    c, id, RP_ERR_FORBIDDEN, tid, "side does not match role");
		return;
	}
	t = bk_offers_ticket(ctx->offers, tid);
	if (t == NULL) {
		refuse(c, id, RP_ERR_NOT_FOUND, tid, "no such ticket");
		return;
	}
	if (which == SIDE_HELPER) {
		if (peer->user == NULL || peer->user->account == NULL ||
		    strcasecmp(peer->user->account, t->helper) != 0) {
			refuse(c, id, RP_ERR_NOT_FOUND, tid, "no such ticket");
			return;
		}
	} else {
		const char *m = peer->agent && peer->agent->fqdn
		    ? peer->agent->fqdn
		    : peer->machine;

		if (m == NULL || strcasecmp(m, t->machine) != 0) {
			refuse(c, id, RP_ERR_NOT_FOUND, tid, "no such ticket");
			return;
		}
	}
	if (bk_now() >= t->expires_at) {
		refuse(c, id, RP_ERR_TICKET_EXPIRED, tid, NULL);
		return;
	}
	if (t->state != BK_TS_ACCEPTED && t->state != BK_TS_CONNECTED) {
		refuse(c, id, RP_ERR_WRONG_STATE, tid,
		    "ticket not accepted by the user");
		return;
	}
	p = pair_find(rs, tid);
	if (p != NULL && p->spliced) {
		refuse(c, id, RP_ERR_TICKET_USED, tid, "relay already in use");
		return;
	}
	if (p != NULL && p->s[which].c != NULL) {
		if (rp_conn_is_open(p->s[which].c)) {
			refuse(c, id, RP_ERR_BUSY, tid,
			    "this side has already joined");
			return;
		}
		/* The earlier joiner went away: this one takes its place. */
		json_decref(p->s[which].jid);
		p->s[which].jid = NULL;
		rp_conn_unref(p->s[which].c);
		p->s[which].c = NULL;
	}
	if (p == NULL) {
		if ((p = calloc(1, sizeof(*p))) == NULL) {
			rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
			return;
		}
		p->rs = rs;
		memcpy(p->id, tid, BK_TICKET_ID_LEN);
		p->created = bk_now();
		p->s[0].p = p->s[1].p = p;
		p->s[0].which = SIDE_AGENT;
		p->s[1].which = SIDE_HELPER;
		p->tick = event_new(ctx->base, -1, EV_PERSIST, tick_cb, p);
		if (p->tick == NULL) {
			free(p);
			rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
			return;
		}
		event_add(p->tick, &tv);
		p->next = rs->head;
		if (rs->head != NULL)
			rs->head->prev = p;
		rs->head = p;
		rs->count++;
	}
	s = &p->s[which];
	rp_conn_ref(c);
	s->c = c;
	s->jid = json_incref(id);
	host = rp_conn_peer_addr(c);
	snprintf(s->host, sizeof(s->host), "%s", host ? host : "");
	if (p->s[!which].c != NULL && !rp_conn_is_open(p->s[!which].c)) {
		/* The other one left while waiting. */
		json_decref(p->s[!which].jid);
		p->s[!which].jid = NULL;
		rp_conn_unref(p->s[!which].c);
		p->s[!which].c = NULL;
	}
	if (p->s[!which].c != NULL)
		pair_start(p);
	else if (which == SIDE_AGENT)
		tell_helper_waiting(peer, t);
}

void
bk_relays_ticket_closed(struct bk_relays *rs, const char *ticket)
{
	struct rpair *p;
	int i;

	if (rs == NULL || ticket == NULL || (p = pair_find(rs, ticket)) == NULL)
		return;
	if (p->spliced) {
		pair_end(p, "ticket_closed");
		return;
	}
	for (i = 0; i < 2; i++)
		if (p->s[i].c != NULL && p->s[i].jid != NULL) {
			rp_conn_error(p->s[i].c, p->s[i].jid,
			    RP_ERR_TICKET_EXPIRED, "the ticket has ended",
			    NULL);
			json_decref(p->s[i].jid);
			p->s[i].jid = NULL;
		}
	set_reason(p, "ticket_closed");
	pair_audit_end(p);
	pair_free(p);
}

struct bk_relays *
bk_relays_new(struct bk_ctx *ctx)
{
	struct bk_relays *rs = calloc(1, sizeof(*rs));

	if (rs != NULL)
		rs->ctx = ctx;
	return rs;
}

void
bk_relays_free(struct bk_relays *rs)
{
	struct rpair *p;
	int i;

	if (rs == NULL)
		return;
	while ((p = rs->head) != NULL) {
		/* Detached transports: stop calling back into us, close. */
		for (i = 0; i < 2; i++)
			if (p->s[i].t != NULL) {
				rp_tls_set_cbs(p->s[i].t, &quiet_cbs, NULL);
				rp_tls_close(p->s[i].t);
				p->s[i].t = NULL;
			}
		set_reason(p, "shutdown");
		pair_audit_end(p);
		pair_free(p);
	}
	free(rs);
}

size_t
bk_relays_active(struct bk_relays *rs)
{
	return rs != NULL ? rs->count : 0;
}
