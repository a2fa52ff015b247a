/*
 * bk_offer.c - offers in motion.
 *
 * One struct offer per open ticket, indexed by ticket id. The ticket record
 * (bk_ticket) is the truth and is written to the store on every change; the
 * offer adds what only a live broker knows: the helper's connection (to send
 * offer.update), the agent connection a prompt is pending on, who answered.
 *
 * Consent: offer.create replies at once with the ticket, then asks the
 * agent with novice.prompt. The answer is a pending rp_conn call whose
 * callback holds a reference on the offer. Only a result whose "answer" is
 * exactly "accept" accepts; a timeout, an error, a closed connection or any
 * other answer declines. Nothing is accepted by default.
 *
 * Expiry: one periodic timer (1 s) walks the open offers; there are few
 * enough open tickets on one broker (they are bounded per helper) for a walk
 * to be cheaper than keeping a heap in step with every state change.
 *
 * Restart: open tickets come back from the store. A ticket that was offered
 * or prompting lost the answer to its prompt; since consent is never
 * assumed it becomes timed_out. Accepted and connected tickets stay valid
 * until they expire. Their helper connection is unknown until the helper
 * comes back and calls ticket.list (or another method naming the ticket),
 * which re-binds it for offer.update.
 *
 * Agent replaced: prompts pending on the old connection fail with
 * connection_closed, so they are declined (reason agent_offline); accepted
 * tickets that have not connected yet get ticket.connect again on the new
 * connection (the ticket is single use, so a second connection attempt can
 * never give a second session).
 *
 * Helper gone: its tickets that have not connected (offered, prompting,
 * accepted) are cancelled and the agent is told (ticket.revoked); connected
 * sessions continue until they end, expire or the novice ends them. Not
 * while the broker drains (SIGTERM): then every connection closes and the
 * tickets must survive into the next start.
 *
 * Durable before told: from "accepted" on, a state must be on the disk
 * before anybody hears of it (a restarted broker must honour an accepted
 * ticket and must not honour a used or revoked one). The store writes at
 * once (every later read sees it) and syncs on its own thread, so the
 * loop never waits for the disk; meanwhile the offer holds every message
 * that follows the write (offer.update, ticket.connect, ticket.revoked,
 * replies) in its outbox, and sends them in order when the store calls
 * back. If the store fails instead, nothing held is sent: an open ticket
 * is cancelled (reason store_failed, audited), both sides are told, held
 * replies become errors, and new offers are refused while the store is
 * failed. offered/prompting/declined/timed_out are written without waiting:
 * a restart turns offered and prompting into timed_out anyway.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "az_dir.h"
#include "az_policy.h"
#include "bk.h"
#include "bk_audit.h"
#include "bk_config.h"
#include "bk_metrics.h"
#include "bk_offer.h"
#include "bk_relay.h"
#include "bk_store.h"
#include "bk_ticket.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_frame.h"
#include "rp_log.h"

#define OFFER_BUCKETS 4096
#define OFFER_SWEEP_MS 1000
/* Offers awaiting consent per helper account: enough for any person,
 * small enough that a runaway script is stopped (rate_limited). */
#define OFFER_MAX_PENDING 256
/* ... and per machine, so that nobody can flood a user with prompts. */
#define OFFER_MAX_PENDING_MACHINE 16
#define OFFER_MACHINE_MAX 255
#define OFFER_USER_MAX 256
/* Keep final tickets in the store this long (ticket.list of a restarted
 * broker and "ticket_used" answers need them), then purge. */
#define OFFER_KEEP_CLOSED_S (7 * 86400)
#define OFFER_PURGE_EVERY 600 /* sweeps */
/* Tickets whose end the agent reported lately (see late_disconnected). */
#define OFFER_ENDS_SEEN 256

struct offer {
	struct offer *next, *prev; /* all open offers */
	struct offer *hnext;       /* hash chain */
	int refs;
	int linked;
	struct bk_offers *os;
	struct bk_ticket *t;
	struct rp_conn *helper;      /* ref held; NULL if unknown/gone */
	struct rp_conn *prompt_conn; /* novice.prompt pending (ref held) */
	struct rp_conn *ctl_conn;    /* control.prompt pending (ref held) */
	char *user;                  /* the novice who accepted */
	unsigned prompt_timeout_s;
	int64_t prompt_deadline;
	int unattended; /* accepted without a prompt (nobody policy) */
	/* Messages waiting for durable writes (see the top of the file). */
	struct held *held, **held_tail;
	int holds;    /* durable writes in flight + offer_hold()s */
	int sync_err; /* a write failed since the outbox was last empty */
};

/* One message of an outbox. */
enum held_kind { H_NOTIFY, H_REPLY, H_CONNECT };
struct held {
	struct held *next;
	enum held_kind kind;
	struct rp_conn *c; /* ref held (not for H_CONNECT) */
	const char *method;
	json_t *params; /* H_NOTIFY params, H_REPLY result */
	json_t *id;     /* H_REPLY */
};

struct bk_offers {
	struct bk_ctx *ctx;
	struct offer *buckets[OFFER_BUCKETS];
	struct offer *head;
	size_t count;
	struct event *sweep;
	unsigned sweeps;
	int closing; /* bk_offers_free: callbacks only drop references */
	/* the last tickets an agent's "disconnected" was audited for (ring) */
	char ends_seen[OFFER_ENDS_SEEN][BK_TICKET_ID_LEN + 1];
	unsigned ends_next;
};

static void offer_final(struct offer *o);
static void send_connect(struct offer *o);
static void held_drop(struct offer *o);

/* ---- small helpers ---------------------------------------------------- */

static unsigned
id_bucket(const char *id)
{
	unsigned h = 2166136261u;

	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h % OFFER_BUCKETS;
}

static struct offer *
offer_find(struct bk_offers *os, const char *id)
{
	struct offer *o;

	if (os == NULL || id == NULL)
		return NULL;
	for (o = os->buckets[id_bucket(id)]; o != NULL; o = o->hnext)
		if (strcmp(o->t->id, id) == 0)
			return o;
	return NULL;
}

static void
offer_link(struct bk_offers *os, struct offer *o)
{
	unsigned b = id_bucket(o->t->id);

	o->hnext = os->buckets[b];
	os->buckets[b] = o;
	o->next = os->head;
	o->prev = NULL;
	if (os->head != NULL)
		os->head->prev = o;
	os->head = o;
	os->count++;
	o->linked = 1;
}

static void
offer_unlink(struct offer *o)
{
	struct bk_offers *os = o->os;
	struct offer **pp;

	if (!o->linked)
		return;
	for (pp = &os->buckets[id_bucket(o->t->id)]; *pp != NULL;
	     pp = &(*pp)->hnext)
		if (*pp == o) {
			*pp = o->hnext;
			break;
		}
	if (o->prev != NULL)
		o->prev->next = o->next;
	else
		os->head = o->next;
	if (o->next != NULL)
		o->next->prev = o->prev;
	os->count--;
	o->linked = 0;
}

static struct offer *
offer_new(struct bk_offers *os, struct bk_ticket *t)
{
	struct offer *o = calloc(1, sizeof(*o));

	if (o == NULL)
		return NULL;
	o->os = os;
	o->t = t;
	o->refs = 1;
	return o;
}

static void
offer_unref(struct offer *o)
{
	if (o == NULL || --o->refs > 0)
		return;
	if (o->helper != NULL)
		rp_conn_unref(o->helper);
	if (o->prompt_conn != NULL)
		rp_conn_unref(o->prompt_conn);
	if (o->ctl_conn != NULL)
		rp_conn_unref(o->ctl_conn);
	held_drop(o);
	bk_ticket_free(o->t);
	free(o->user);
	free(o);
}

static void
set_conn(struct rp_conn **slot, struct rp_conn *c)
{
	if (*slot == c)
		return;
	if (c != NULL)
		rp_conn_ref(c);
	if (*slot != NULL)
		rp_conn_unref(*slot);
	*slot = c;
}

static const char *
peer_addr(struct rp_conn *c)
{
	const char *a = rp_conn_peer_addr(c);

	return a != NULL ? a : "";
}

static struct bk_peer *
peer_of(struct rp_conn *c)
{
	return rp_conn_data(c);
}

static const char *
helper_account(const struct bk_peer *p)
{
	if (p == NULL || p->role != BK_ROLE_HELPER || p->user == NULL)
		return NULL;
	return p->user->account;
}

static const char *
agent_machine(const struct bk_peer *p)
{
	if (p == NULL || p->role != BK_ROLE_AGENT)
		return NULL;
	if (p->agent != NULL && p->agent->fqdn != NULL)
		return p->agent->fqdn;
	return p->machine;
}

/* The live, registered connection of a machine, or NULL. */
static struct rp_conn *
agent_conn(struct bk_ctx *ctx, const char *machine, struct bk_agent **out)
{
	struct bk_agent *ag;

	if (ctx->agents == NULL)
		return NULL;
	ag = bk_agents_find(ctx->agents, machine);
	if (ag == NULL || !ag->registered || ag->conn == NULL ||
	    !rp_conn_is_open(ag->conn))
		return NULL;
	if (out != NULL)
		*out = ag;
	return ag->conn;
}

static void
audit(struct bk_ctx *ctx, enum bk_audit_event ev, json_t *fields)
{
	if (ctx->audit == NULL) {
		json_decref(fields);
		return;
	}
	if (bk_audit_write(ctx->audit, ev, fields) != RP_OK)
		log_warnx("audit: %s not written", bk_audit_event_name(ev));
}

/* bk_audit_ticket_fields plus more members (pairs of key, json_t*, NULL). */
static json_t *
tfields(const struct bk_ticket *t)
{
	json_t *f = bk_audit_ticket_fields(t);

	if (f == NULL)
		f = json_pack("{s:s}", "ticket", t->id);
	return f;
}

static void
store_put(struct bk_ctx *ctx, const struct bk_ticket *t)
{
	int rc;

	if (ctx->store == NULL)
		return;
	rc = bk_store_put(ctx->store, t);
	if (rc != RP_OK)
		log_warnx("ticket %s: store: %s", t->id, rp_err_name(rc));
}

/* ---- the outbox ------------------------------------------------------- */

static void
held_add(struct offer *o, enum held_kind kind, struct rp_conn *c,
    const char *method, json_t *params, json_t *id)
{
	struct held *h = calloc(1, sizeof(*h));

	if (h == NULL) {
		/* Dropped, never sent early. */
		log_warnx(
		    "ticket %s: out of memory: a message is lost", o->t->id);
		json_decref(params);
		return;
	}
	h->kind = kind;
	if ((h->c = c) != NULL)
		rp_conn_ref(c);
	h->method = method;
	h->params = params;
	h->id = id != NULL ? json_incref(id) : NULL;
	if (o->held == NULL)
		o->held_tail = &o->held;
	*o->held_tail = h;
	o->held_tail = &h->next;
}

static void
held_free(struct held *h)
{
	if (h->c != NULL)
		rp_conn_unref(h->c);
	json_decref(h->params);
	json_decref(h->id);
	free(h);
}

static void
held_drop(struct offer *o)
{
	struct held *h, *next;

	for (h = o->held, o->held = NULL; h != NULL; h = next) {
		next = h->next;
		held_free(h);
	}
}

/* Sends what was held, in order. */
static void
held_flush(struct offer *o)
{
	struct held *h;

	while ((h = o->held) != NULL) {
		o->held = h->next;
		switch (h->kind) {
		case H_NOTIFY:
			(void)rp_conn_notify(h->c, h->method, h->params);
			h->params = NULL;
			break;
		case H_REPLY:
			(void)rp_conn_reply(h->c, h->id, h->params);
			h->params = NULL;
			break;
		case H_CONNECT:
			send_connect(o);
			break;
		}
		held_free(h);
	}
}

static void
out_notify(
    struct offer *o, struct rp_conn *c, const char *method, json_t *params)
{
	if (o->holds > 0)
		held_add(o, H_NOTIFY, c, method, params, NULL);
	else
		(void)rp_conn_notify(c, method, params);
}

static void
out_reply(struct offer *o, struct rp_conn *c, json_t *id, json_t *result)
{
	if (id == NULL) {
		json_decref(result);
		return;
	}
	if (o->holds > 0)
		held_add(o, H_REPLY, c, NULL, result, id);
	else
		(void)rp_conn_reply(c, id, result);
}

static void
out_connect(struct offer *o)
{
	if (o->holds > 0)
		held_add(o, H_CONNECT, NULL, NULL, NULL, NULL);
	else
		send_connect(o);
}

static void store_failed(struct offer *o);

/* Messages from here to offer_release() wait for durable writes made in
 * between. */
static void
offer_hold(struct offer *o)
{
	o->holds++;
	o->refs++;
}

static void
offer_release(struct offer *o)
{
	if (--o->holds == 0) {
		if (o->os->closing)
			held_drop(o);
		else if (o->sync_err != 0)
			store_failed(o);
		else
			held_flush(o);
	}
	offer_unref(o);
}

static void
stored_cb(int rc, void *arg)
{
	struct offer *o = arg;

	if (rc != RP_OK) {
		log_warnx("ticket %s: store: %s (state %s not durable)",
		    o->t->id, rp_err_name(rc),
		    bk_ticket_state_name(o->t->state));
		o->sync_err = rc;
	}
	offer_release(o); /* the write's hold */
}

/* States nobody may hear of before they are durable. */
static int
needs_durable(enum bk_ticket_state st)
{
	return st != BK_TS_OFFERED && st != BK_TS_PROMPTING &&
	    st != BK_TS_DECLINED && st != BK_TS_TIMED_OUT;
}

/* Writes the ticket; from "accepted" on, holds the outbox until the write
 * is durable. */
static void
offer_store(struct offer *o)
{
	struct bk_ctx *ctx = o->os->ctx;

	if (ctx->store == NULL)
		return;
	if (!needs_durable(o->t->state)) {
		store_put(ctx, o->t);
		return;
	}
	offer_hold(o);
	bk_store_put_durable(ctx->store, o->t, stored_cb, o);
}

static int
reply_err(struct rp_conn *c, json_t *id, int code, const char *msg)
{
	if (id == NULL)
		return 0;
	return rp_conn_error(c, id, code, msg, NULL);
}

static int
good_text(const char *s, size_t max)
{
	return rp_text_ok(s, max); /* no control or bidi characters */
}

/* "192.0.2.7:40123" or "[2001:db8::7]:40123"; port 1..65535 in plain
 * decimal; no host names. */
int
bk_offer_addr_valid(const char *s)
{
	char host[INET6_ADDRSTRLEN + 1];
	unsigned char buf[sizeof(struct in6_addr)];
	const char *colon, *p;
	size_t hl;
	long port = 0;
	int v6 = 0;

	if (s == NULL || strlen(s) > BK_TICKET_ADDR_MAX - 1)
		return 0;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			return 0;
		hl = (size_t)(rb - s - 1);
		if (hl == 0 || hl >= sizeof(host))
			return 0;
		memcpy(host, s + 1, hl);
		colon = rb + 1;
		v6 = 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return 0;
		hl = (size_t)(colon - s);
		if (hl == 0 || hl >= sizeof(host))
			return 0;
		memcpy(host, s, hl);
	}
	host[hl] = '\0';
	p = colon + 1;
	if (*p == '\0' || *p == '0' || strlen(p) > 5)
		return 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		port = port * 10 + (*p - '0');
	}
	if (port < 1 || port > 65535)
		return 0;
	return inet_pton(v6 ? AF_INET6 : AF_INET, host, buf) == 1;
}

static char *
b64(const uint8_t *in, size_t len)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                          "abcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc(4 * ((len + 2) / 3) + 1), *p = out;
	size_t i;

	if (out == NULL)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		*p++ = tab[in[i] >> 2];
		*p++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*p++ = tab[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*p++ = tab[in[i + 2] & 63];
	}
	if (i < len) {
		*p++ = tab[in[i] >> 2];
		if (i + 1 < len) {
			*p++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
			*p++ = tab[(in[i + 1] & 15) << 2];
		} else {
			*p++ = tab[(in[i] & 3) << 4];
			*p++ = '=';
		}
		*p++ = '=';
	}
	*p = '\0';
	return out;
}

/* "ip:port" -> "ip" (brackets removed). */
static void
host_of(const char *addr, char *out, size_t outlen)
{
	const char *e;
	size_t n;

	if (addr == NULL || *addr == '\0') {
		snprintf(out, outlen, "unknown");
		return;
	}
	if (addr[0] == '[' && (e = strchr(addr, ']')) != NULL) {
		addr++;
		n = (size_t)(e - addr);
	} else if ((e = strrchr(addr, ':')) != NULL && strchr(addr, ':') == e) {
		n = (size_t)(e - addr);
	} else
		n = strlen(addr);
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, addr, n);
	out[n] = '\0';
}

static json_t *
ticket_public(const struct offer *o)
{
	const struct bk_ticket *t = o->t;
	const char *ctl = t->control_granted ? "granted"
	    : o->ctl_conn != NULL            ? "prompting"
	                                     : "none";

	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}",
	    "id", t->id, "state", bk_ticket_state_name(t->state), "helper",
	    t->helper, "helper_host", t->helper_host, "machine", t->machine,
	    "mode", bk_ticket_mode_name(t->mode), "control", ctl, "rule",
	    t->rule ? t->rule : "", "created", (json_int_t)t->created_at,
	    "expires", (json_int_t)t->expires_at);
}

/* offer.update to the helper, if it is connected. */
static void
tell_helper(
    struct offer *o, const char *reason, const char *user, const char *control)
{
	json_t *p;

	if (o->helper == NULL || !rp_conn_is_open(o->helper))
		return;
	p = json_pack("{s:s, s:s}", "ticket", o->t->id, "state",
	    bk_ticket_state_name(o->t->state));
	if (p == NULL)
		return;
	if (reason != NULL)
		json_object_set_new(p, "reason", json_string(reason));
	if (user != NULL)
		json_object_set_new(p, "user", json_string(user));
	if (control != NULL)
		json_object_set_new(p, "control", json_string(control));
	out_notify(o, o->helper, "offer.update", p);
}

static void
tell_agent_revoked(struct offer *o, const char *reason)
{
	struct rp_conn *ac = agent_conn(o->os->ctx, o->t->machine, NULL);

	if (ac == NULL)
		return;
	out_notify(o, ac, "ticket.revoked",
	    json_pack("{s:s, s:s}", "ticket", o->t->id, "reason", reason));
}

/*
 * Moves the ticket, stores it, tells the helper and, for a final state,
 * drops the offer from the index. Returns RP_OK or RP_ERR_WRONG_STATE.
 * The offer may be freed on return when the state is final and nobody else
 * holds a reference: callers that go on using `o` hold one.
 */
static int
offer_move(struct offer *o, enum bk_ticket_state to, const char *reason,
    const char *user)
{
	int rc;

	rc = bk_ticket_transition(o->t, to, bk_now());
	if (rc != RP_OK)
		return rc;
	offer_hold(o);
	offer_store(o);
	tell_helper(o, reason, user, NULL);
	if (!bk_ticket_is_open(o->t))
		offer_final(o);
	offer_release(o);
	return RP_OK;
}

/* Ends a control grant (user took it back, session ended, expiry...). */
static void
control_end(struct offer *o, const char *user)
{
	struct bk_ctx *ctx = o->os->ctx;
	int64_t now = bk_now();
	json_t *f;

	if (!o->t->control_granted && o->t->control_since == 0)
		return;
	f = tfields(o->t);
	json_object_set_new(f, "start", json_integer(o->t->control_since));
	json_object_set_new(f, "end", json_integer(now));
	json_object_set_new(f, "duration_s",
	    json_integer(o->t->control_since ? now - o->t->control_since : 0));
	if (user != NULL)
		json_object_set_new(f, "user", json_string(user));
	audit(ctx, BK_AE_CONTROL_ENDED, f);
	o->t->control_granted = 0;
	o->t->control_since = 0;
}

/* A final state was reached: stop pending calls, leave the index. */
static void
offer_final(struct offer *o)
{
	struct rp_conn *c;

	if (o->t->control_granted)
		control_end(o, NULL);
	if ((c = o->prompt_conn) != NULL) {
		rp_conn_ref(c);
		rp_conn_cancel_calls(c, o);
		rp_conn_unref(c);
	}
	if ((c = o->ctl_conn) != NULL) {
		rp_conn_ref(c);
		rp_conn_cancel_calls(c, o);
		rp_conn_unref(c);
	}
	bk_relays_ticket_closed(o->os->ctx->relays, o->t->id);
	if (o->linked) {
		offer_unlink(o);
		offer_unref(o); /* the index's reference */
	}
}

/* Audits and moves to a final "not accepted" state. */
static void
offer_decline(struct offer *o, enum bk_ticket_state to, const char *reason,
    const char *user)
{
	struct bk_ctx *ctx = o->os->ctx;
	json_t *f;

	/* The state machine declines from prompting only: an offer refused
	 * before any prompt (nobody logged on, agent gone) passes through. */
	if (o->t->state == BK_TS_OFFERED)
		(void)bk_ticket_transition(o->t, BK_TS_PROMPTING, bk_now());
	f = tfields(o->t);
	json_object_set_new(f, "reason", json_string(reason));
	if (user != NULL)
		json_object_set_new(f, "user", json_string(user));
	audit(ctx,
	    to == BK_TS_TIMED_OUT ? BK_AE_OFFER_TIMED_OUT
	                          : BK_AE_OFFER_DECLINED,
	    f);
	(void)offer_move(o, to, reason, user);
}

/* A connected session ends without the agent's "disconnected" (expiry,
 * cancel, revoke): audit its end here. */
static void
session_cut(struct offer *o, const char *reason)
{
	json_t *f;

	if (o->t->state != BK_TS_CONNECTED)
		return;
	f = tfields(o->t);
	json_object_set_new(
	    f, "session_seconds", json_integer(bk_now() - o->t->connected_at));
	json_object_set_new(f, "reason", json_string(reason));
	audit(o->os->ctx, BK_AE_SESSION_DISCONNECTED, f);
}

/*
 * A durable write failed (fail closed): nothing that was held is sent,
 * held replies become errors, an open ticket is cancelled and audited, and
 * both sides hear of the state the ticket ends in. Never "accepted" or
 * ticket.connect for a state the disk may not have.
 */
static void
store_failed(struct offer *o)
{
	struct bk_ctx *ctx = o->os->ctx;
	struct held *h, *next;
	json_t *f;

	o->sync_err = 0;
	for (h = o->held, o->held = NULL; h != NULL; h = next) {
		next = h->next;
		if (h->kind == H_REPLY)
			(void)rp_conn_error(h->c, h->id, RP_ERR_INTERNAL,
			    "ticket store failed", NULL);
		held_free(h);
	}
	o->refs++;
	if (bk_ticket_is_open(o->t)) {
		f = tfields(o->t);
		json_object_set_new(
		    f, "state", json_string(bk_ticket_state_name(o->t->state)));
		json_object_set_new(f, "reason", json_string("store_failed"));
		audit(ctx, BK_AE_OFFER_CANCELLED, f);
		session_cut(o, "store_failed");
		(void)bk_ticket_transition(o->t, BK_TS_CANCELLED, bk_now());
		store_put(ctx, o->t); /* best effort: the store is failing */
		tell_helper(o, "store_failed", NULL, NULL);
		tell_agent_revoked(o, "store_failed");
		offer_final(o);
	} else {
		tell_helper(o, "store_failed", NULL, NULL);
		tell_agent_revoked(o, "store_failed");
	}
	offer_unref(o);
}

static void
offer_expire(struct offer *o)
{
	struct bk_ctx *ctx = o->os->ctx;
	json_t *f = tfields(o->t);

	json_object_set_new(
	    f, "state", json_string(bk_ticket_state_name(o->t->state)));
	json_object_set_new(f, "expires_at", json_integer(o->t->expires_at));
	audit(ctx, BK_AE_TICKET_EXPIRED, f);
	offer_hold(o);
	tell_agent_revoked(o, "expired");
	session_cut(o, "expired");
	if (o->t->state != BK_TS_EXPIRED) {
		(void)offer_move(o, BK_TS_EXPIRED, "expired", NULL);
	} else {
		/* Already moved (bk_ticket_use saw it due): store, tell,
		 * finish. */
		offer_store(o);
		tell_helper(o, "expired", NULL, NULL);
		offer_final(o);
	}
	offer_release(o);
}

/* ---- consent ---------------------------------------------------------- */

static void connect_cb(struct rp_conn *c, int code, json_t *res, void *arg);

/* ticket.connect to the agent: the addresses and the secret. */
static void
send_connect(struct offer *o)
{
	struct bk_ctx *ctx = o->os->ctx;
	struct rp_conn *ac = agent_conn(ctx, o->t->machine, NULL);
	json_t *addrs, *p;
	char *psk;
	size_t i;
	unsigned cto = ctx->cfg != NULL && ctx->cfg->connect_timeout_s
	    ? ctx->cfg->connect_timeout_s
	    : 30;

	if (ac == NULL)
		return; /* sent again when the agent comes back */
	if ((addrs = json_array()) == NULL)
		return;
	for (i = 0; i < o->t->naddrs; i++)
		json_array_append_new(addrs, json_string(o->t->addrs[i]));
	if ((psk = b64(o->t->secret, sizeof(o->t->secret))) == NULL) {
		json_decref(addrs);
		return;
	}
	p = json_pack("{s:s, s:s, s:o, s:I, s:s, s:b}", "ticket", o->t->id,
	    "psk", psk, "addresses", addrs, "connect_timeout", (json_int_t)cto,
	    "mode", bk_ticket_mode_name(o->t->mode), "relay", 1);
	memset(psk, 0, strlen(psk));
	free(psk);
	if (p == NULL)
		return;
	o->refs++;
	if (rp_conn_call(ac, "ticket.connect", p, 10000, connect_cb, o) != 0)
		o->refs--;
}

static void
connect_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct offer *o = arg;

	(void)c;
	(void)res;
	if (code != 0)
		log_info("ticket %s: ticket.connect to %s: %s", o->t->id,
		    o->t->machine, rp_err_name(code));
	/* The agent will not connect for this ticket (nobody there said yes:
	 * unattended access off in raagent.conf, or a user logged on since
	 * the broker's decision): the offer ends now, the helper is told
	 * why, rather than waiting for the ticket to expire. */
	if (code == RP_ERR_DECLINED && o->t->state == BK_TS_ACCEPTED) {
		json_t *f = tfields(o->t);

		json_object_set_new(f, "state", json_string("accepted"));
		json_object_set_new(f, "reason", json_string("agent_refused"));
		audit(o->os->ctx, BK_AE_OFFER_CANCELLED, f);
		offer_hold(o);
		(void)offer_move(o, BK_TS_CANCELLED, "agent_refused", NULL);
		offer_release(o);
	}
	offer_unref(o);
}

static void
offer_accept(struct offer *o, const char *user, int unattended)
{
	struct bk_ctx *ctx = o->os->ctx;
	json_t *f;

	free(o->user);
	o->user = strdup(user);
	o->unattended = unattended;
	if (bk_ticket_transition(o->t, BK_TS_ACCEPTED, bk_now()) != RP_OK)
		return;
	/* The helper hears "accepted" and the agent gets the ticket only
	 * once "accepted" is on the disk. */
	offer_hold(o);
	offer_store(o);
	f = tfields(o->t);
	json_object_set_new(f, "user", json_string(user));
	json_object_set_new(f, "accepted_at", json_integer(o->t->accepted_at));
	json_object_set_new(f, "unattended", json_boolean(unattended));
	audit(ctx, BK_AE_SESSION_ACCEPTED, f);
	tell_helper(o, unattended ? "nobody_logged_on" : NULL, user, NULL);
	out_connect(o);
	offer_release(o);
}

static const char *
answer_user(json_t *res)
{
	const char *u = NULL;

	if (json_is_object(res))
		u = json_string_value(json_object_get(res, "user"));
	return good_text(u, OFFER_USER_MAX) ? u : "(unknown)";
}

static void
prompt_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct offer *o = arg;
	const char *ans = NULL;

	if (o->os->closing || o->prompt_conn != c ||
	    o->t->state != BK_TS_PROMPTING) {
		offer_unref(o); /* already decided (cancelled, expired...) */
		return;
	}
	set_conn(&o->prompt_conn, NULL);
	if (code == 0 && json_is_object(res))
		ans = json_string_value(json_object_get(res, "answer"));
	if (code == 0 && ans != NULL && strcmp(ans, "accept") == 0)
		offer_accept(o, answer_user(res), 0);
	else if (code == RP_ERR_TIMEOUT)
		offer_decline(o, BK_TS_TIMED_OUT, "timeout", NULL);
	else if (code == RP_ERR_CLOSED)
		offer_decline(o, BK_TS_DECLINED, "agent_offline", NULL);
	else if (code != 0)
		offer_decline(o, BK_TS_DECLINED, rp_err_name(code), NULL);
	else
		offer_decline(o, BK_TS_DECLINED,
		    ans != NULL && strcmp(ans, "decline") == 0 ? "declined"
		                                               : "bad_answer",
		    answer_user(res));
	offer_unref(o);
}

/*
 * Starts consent for a fresh offer (state offered). The decision `d` says
 * what to do when nobody is logged on.
 */
static void
offer_consent(struct offer *o, const struct az_decision *d)
{
	struct bk_ctx *ctx = o->os->ctx;
	struct bk_agent *ag = NULL;
	struct rp_conn *ac = agent_conn(ctx, o->t->machine, &ag);
	enum az_right un;
	json_t *p;

	if (ac == NULL) {
		offer_decline(o, BK_TS_DECLINED, "agent_offline", NULL);
		return;
	}
	if (ag->nsessions == 0) {
		un = az_decision_unattended(d);
		if (un == AZ_RIGHT_NONE) {
			offer_decline(
			    o, BK_TS_DECLINED, "nobody_logged_on", NULL);
			return;
		}
		if (un == AZ_RIGHT_VIEW)
			o->t->mode = BK_MODE_VIEW; /* never escalates */
		if (bk_ticket_transition(o->t, BK_TS_PROMPTING, bk_now()) ==
		    RP_OK)
			tell_helper(o, "nobody_logged_on", NULL, NULL);
		offer_accept(o, "(nobody)", 1);
		return;
	}
	/* Not stored: offered and prompting mean the same after a restart
	 * (timed out), and one write less per offer. */
	if (bk_ticket_transition(o->t, BK_TS_PROMPTING, bk_now()) != RP_OK)
		return;
	tell_helper(o, NULL, NULL, NULL);
	p = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "ticket", o->t->id,
	    "helper", o->t->helper, "helper_host", o->t->helper_host, "mode",
	    bk_ticket_mode_name(o->t->mode), "timeout",
	    (json_int_t)o->prompt_timeout_s, "expires",
	    (json_int_t)o->t->expires_at);
	if (p == NULL) {
		offer_decline(o, BK_TS_DECLINED, "internal_error", NULL);
		return;
	}
	o->prompt_deadline = bk_now() + o->prompt_timeout_s + 2;
	set_conn(&o->prompt_conn, ac);
	o->refs++;
	if (rp_conn_call(ac, "novice.prompt", p, o->prompt_timeout_s * 1000u,
	        prompt_cb, o) != 0) {
		o->refs--;
		set_conn(&o->prompt_conn, NULL);
		offer_decline(o, BK_TS_DECLINED, "agent_offline", NULL);
	}
}

/* ---- offer.create ----------------------------------------------------- */

static void
policy_decide(struct bk_ctx *ctx, const struct az_entry *u,
    const struct bk_agent *ag, struct az_decision *d)
{
	struct az_subject s;
	struct az_target t;

	memset(&s, 0, sizeof(s));
	memset(&t, 0, sizeof(t));
	s.account = u->account;
	s.groups = (const char *const *)u->groups;
	s.ngroups = u->ngroups;
	t.fqdn = ag->fqdn;
	t.dn = ag->dn;
	t.groups = (const char *const *)ag->groups;
	t.ngroups = ag->ngroups;
	if (ctx->policy == NULL) {
		memset(d, 0, sizeof(*d));
		snprintf(d->rule_text, sizeof(d->rule_text),
		    "default deny (no policy loaded)");
		return;
	}
	az_policy_eval(ctx->policy, &s, &t, d);
}

/* Offers awaiting consent from this account, and on this machine. */
static void
pending_for(struct bk_offers *os, const char *account, const char *machine,
    size_t *by_helper, size_t *on_machine)
{
	struct offer *o;

	*by_helper = *on_machine = 0;
	for (o = os->head; o != NULL; o = o->next) {
		if (o->t->state != BK_TS_OFFERED &&
		    o->t->state != BK_TS_PROMPTING)
			continue;
		if (strcasecmp(o->t->helper, account) == 0)
			(*by_helper)++;
		if (strcasecmp(o->t->machine, machine) == 0)
			(*on_machine)++;
	}
}

void
bk_h_offer_create(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_offers *os = ctx->offers;
	struct bk_peer *peer = peer_of(c);
	const char *account = helper_account(peer);
	const char *mstr, *mode_s;
	char machine[OFFER_MACHINE_MAX + 1], hhost[64], err[160];
	const char *addrs[BK_TICKET_MAX_ADDRS];
	json_t *ja, *v, *f, *res;
	struct bk_agent *ag = NULL;
	struct az_decision d;
	struct bk_ticket_params tp;
	struct bk_ticket *t = NULL;
	struct offer *o;
	size_t i, n;
	int mode, rc;
	int64_t cap;
	char *psk;
	const char *first;
	size_t nh, nm;

	if (id == NULL)
		return; /* request only */
	if (account == NULL || os == NULL) {
		rp_conn_error(c, id, RP_ERR_NOT_AUTHENTICATED, NULL, NULL);
		return;
	}
	mstr = json_string_value(json_object_get(params, "machine"));
	mode_s = json_string_value(json_object_get(params, "mode"));
	ja = json_object_get(params, "addresses");
	if (mstr == NULL || mode_s == NULL || ja == NULL) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "machine, mode and addresses are required", NULL);
		return;
	}
	if (!json_is_array(ja)) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "addresses: expected an array of \"ip:port\" strings",
		    NULL);
		return;
	}
	n = strlen(mstr);
	if (n == 0 || n > OFFER_MACHINE_MAX) {
		rp_conn_error(
		    c, id, RP_ERR_INVALID_PARAMS, "bad machine name", NULL);
		return;
	}
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)mstr[i];

		if (!isalnum(ch) && ch != '-' && ch != '.' && ch != '_') {
			rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
			    "bad machine name", NULL);
			return;
		}
		machine[i] = (char)tolower(ch);
	}
	machine[n] = '\0';
	if ((mode = bk_ticket_mode_parse(mode_s)) < 0) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "mode must be \"view\" or \"control\"", NULL);
		return;
	}
	n = json_array_size(ja);
	if (n == 0) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "addresses: at least one \"ip:port\" is needed", NULL);
		return;
	}
	if (n > BK_TICKET_MAX_ADDRS) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "addresses: 1 to 16 \"ip:port\" entries", NULL);
		return;
	}
	json_array_foreach(ja, i, v)
	{
		addrs[i] = json_string_value(v);
		if (!bk_offer_addr_valid(addrs[i])) {
			snprintf(err, sizeof(err),
			    "addresses[%zu]: not an \"ip:port\" with port "
			    "1-65535",
			    i);
			rp_conn_error(c, id, RP_ERR_INVALID_PARAMS, err, NULL);
			return;
		}
	}
	if (ctx->audit == NULL || !bk_audit_ok(ctx->audit)) {
		rp_conn_error(c, id, RP_ERR_AUDIT_UNAVAILABLE,
		    "the audit trail cannot be written: no new offers", NULL);
		return;
	}
	if (ctx->draining) {
		rp_conn_error(
		    c, id, RP_ERR_BUSY, "broker is shutting down", NULL);
		return;
	}
	if (ctx->store != NULL && !bk_store_ok(ctx->store)) {
		rp_conn_error(c, id, RP_ERR_INTERNAL,
		    "the ticket store cannot be written: no new offers", NULL);
		return;
	}
	if (agent_conn(ctx, machine, &ag) == NULL) {
		/* Not an audited event: counted here (bk_metrics.h). */
		bk_metrics_count(ctx, BK_M_OFFER, "offline");
		rp_conn_error(c, id, RP_ERR_MACHINE_OFFLINE, NULL, NULL);
		return;
	}
	policy_decide(ctx, peer->user, ag, &d);
	f = json_pack("{s:s, s:s, s:s, s:s, s:s}", "helper", account, "machine",
	    machine, "right", az_right_name(d.right), "rule", d.rule_text,
	    "mode", mode_s);
	if (f != NULL)
		json_object_set_new(f, "host", json_string(peer->addr));
	audit(ctx, BK_AE_POLICY_DECISION, f);
	if (d.right == AZ_RIGHT_NONE) {
		rp_conn_error(c, id, RP_ERR_FORBIDDEN, NULL,
		    json_pack("{s:s}", "rule", d.rule_text));
		return;
	}
	pending_for(os, account, machine, &nh, &nm);
	if (nh >= OFFER_MAX_PENDING || nm >= OFFER_MAX_PENDING_MACHINE) {
		rp_conn_error(c, id, RP_ERR_RATE_LIMITED,
		    nh >= OFFER_MAX_PENDING
		        ? "too many offers of this account await consent"
		        : "too many offers await consent on this machine",
		    NULL);
		return;
	}
	/* Policy grants view only: the ticket is view only (never escalates). */
	if (mode == BK_MODE_CONTROL && d.right < AZ_RIGHT_CONTROL)
		mode = BK_MODE_VIEW;
	/* Nobody logged on and the scope says allow-view: view only. */
	if (ag->nsessions == 0 && az_decision_unattended(&d) == AZ_RIGHT_VIEW)
		mode = BK_MODE_VIEW;

	host_of(peer->addr, hhost, sizeof(hhost));
	memset(&tp, 0, sizeof(tp));
	tp.helper = account;
	tp.helper_host = hhost;
	tp.addrs = addrs;
	tp.naddrs = json_array_size(ja);
	tp.machine = machine;
	tp.mode = mode;
	tp.rule = d.rule_text;
	cap = d.max_ticket_s ? d.max_ticket_s : AZ_POLICY_DEFAULT_MAX_TICKET;
	if (ctx->cfg != NULL && ctx->cfg->max_duration_s > 0 &&
	    ctx->cfg->max_duration_s < cap)
		cap = ctx->cfg->max_duration_s;
	tp.duration_s = cap;
	tp.max_duration_s = cap;
	rc = bk_ticket_create(&tp, bk_now(), &t, err, sizeof(err));
	if (rc != RP_OK) {
		rp_conn_error(
		    c, id, rc, rc == RP_ERR_INVALID_PARAMS ? err : NULL, NULL);
		return;
	}
	if (ctx->store != NULL && (rc = bk_store_put(ctx->store, t)) != RP_OK) {
		bk_ticket_free(t);
		rp_conn_error(
		    c, id, RP_ERR_INTERNAL, "ticket store failed", NULL);
		return;
	}
	if ((o = offer_new(os, t)) == NULL) {
		bk_ticket_free(t);
		rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
		return;
	}
	o->prompt_timeout_s = d.prompt_timeout_s;
	if (o->prompt_timeout_s == 0)
		o->prompt_timeout_s = ctx->cfg && ctx->cfg->prompt_timeout_s
		    ? ctx->cfg->prompt_timeout_s
		    : AZ_POLICY_DEFAULT_PROMPT_TIMEOUT;
	set_conn(&o->helper, c);
	offer_link(os, o);

	f = tfields(t);
	json_object_set_new(
	    f, "duration_s", json_integer(t->expires_at - t->created_at));
	json_object_set_new(f, "reverse_connect", json_true());
	v = json_array();
	for (i = 0; i < t->naddrs; i++)
		json_array_append_new(v, json_string(t->addrs[i]));
	json_object_set_new(f, "addresses", v);
	json_object_set_new(f, "expires_at", json_integer(t->expires_at));
	json_object_set_new(f, "rule", json_string(t->rule));
	audit(ctx, BK_AE_TICKET_CREATED, f);

	/* The state consent is about to take (offer.update follows). */
	first = "prompting";
	if (ag->nsessions == 0)
		first = az_decision_unattended(&d) == AZ_RIGHT_NONE
		    ? "declined"
		    : "accepted";
	psk = b64(t->secret, sizeof(t->secret));
	res = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "ticket", t->id,
	    "psk", psk ? psk : "", "state", first, "mode",
	    bk_ticket_mode_name(t->mode), "expires", (json_int_t)t->expires_at,
	    "rule", t->rule);
	if (psk != NULL) {
		memset(psk, 0, strlen(psk));
		free(psk);
	}
	/* Accepted at once (nobody logged on): the reply that says so waits
	 * for the disk with the rest. */
	offer_hold(o);
	if (strcmp(first, "accepted") == 0)
		out_reply(o, c, id, res);
	else
		rp_conn_reply(c, id, res);
	offer_consent(o, &d);
	offer_release(o);
}

/* ---- helper methods --------------------------------------------------- */

/* The helper's open offer named by params.ticket, or NULL after replying
 * with an error. Re-binds the helper connection (after a restart). */
static struct offer *
helper_offer(struct rp_conn *c, json_t *id, json_t *params)
{
	struct bk_ctx *ctx = rp_conn_ctx(c);
	const char *account = helper_account(peer_of(c));
	const char *tid = json_string_value(json_object_get(params, "ticket"));
	struct bk_ticket *st = NULL;
	struct offer *o;

	if (tid == NULL || !bk_ticket_id_valid(tid)) {
		reply_err(c, id, RP_ERR_INVALID_PARAMS, "bad ticket id");
		return NULL;
	}
	o = offer_find(ctx->offers, tid);
	if (o != NULL && account != NULL &&
	    strcasecmp(o->t->helper, account) == 0) {
		if (o->helper == NULL || !rp_conn_is_open(o->helper))
			set_conn(&o->helper, c);
		return o;
	}
	/* Not open here: an expired ticket of this helper says so. */
	if (o == NULL && account != NULL && ctx->store != NULL &&
	    bk_store_get(ctx->store, tid, &st) == RP_OK &&
	    strcasecmp(st->helper, account) == 0 &&
	    st->state == BK_TS_EXPIRED) {
		bk_ticket_free(st);
		reply_err(c, id, RP_ERR_TICKET_EXPIRED, NULL);
		return NULL;
	}
	bk_ticket_free(st);
	reply_err(c, id, RP_ERR_NOT_FOUND, "no such ticket");
	return NULL;
}

void
bk_h_offer_cancel(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct offer *o = helper_offer(c, id, params);
	json_t *f;

	if (o == NULL)
		return;
	o->refs++;
	f = tfields(o->t);
	json_object_set_new(
	    f, "state", json_string(bk_ticket_state_name(o->t->state)));
	json_object_set_new(f, "reason", json_string("helper"));
	audit(ctx, BK_AE_OFFER_CANCELLED, f);
	session_cut(o, "cancelled");
	offer_hold(o);
	out_reply(o, c, id, json_pack("{s:s}", "state", "cancelled"));
	tell_agent_revoked(o, "cancelled");
	(void)offer_move(o, BK_TS_CANCELLED, "cancelled", NULL);
	offer_release(o);
	offer_unref(o);
}

static void
control_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct offer *o = arg;
	struct bk_ctx *ctx = o->os->ctx;
	const char *ans = NULL, *why;
	json_t *f;

	if (o->os->closing || o->ctl_conn != c ||
	    o->t->state != BK_TS_CONNECTED) {
		offer_unref(o);
		return;
	}
	set_conn(&o->ctl_conn, NULL);
	if (code == 0 && json_is_object(res))
		ans = json_string_value(json_object_get(res, "answer"));
	if (code == 0 && ans != NULL && strcmp(ans, "accept") == 0) {
		o->t->control_granted = 1;
		o->t->control_since = bk_now();
		offer_hold(o);
		offer_store(o);
		f = tfields(o->t);
		json_object_set_new(f, "user", json_string(answer_user(res)));
		json_object_set_new(
		    f, "start", json_integer(o->t->control_since));
		audit(ctx, BK_AE_CONTROL_ACCEPTED, f);
		tell_helper(o, NULL, answer_user(res), "granted");
		offer_release(o);
	} else {
		why = code == RP_ERR_TIMEOUT ? "timeout"
		    : code == RP_ERR_CLOSED  ? "agent_offline"
		    : code != 0              ? rp_err_name(code)
		    : ans != NULL && strcmp(ans, "decline") == 0 ? "declined"
		                                                 : "bad_answer";
		f = tfields(o->t);
		json_object_set_new(f, "reason", json_string(why));
		if (code == 0)
			json_object_set_new(
			    f, "user", json_string(answer_user(res)));
		audit(ctx, BK_AE_CONTROL_DECLINED, f);
		tell_helper(
		    o, why, code == 0 ? answer_user(res) : NULL, "declined");
	}
	offer_unref(o);
}

void
bk_h_control_request(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct offer *o = helper_offer(c, id, params);
	struct bk_peer *peer = peer_of(c);
	struct bk_agent *ag = NULL;
	struct rp_conn *ac;
	struct az_decision d;
	json_t *p;

	if (o == NULL)
		return;
	if (o->t->state != BK_TS_CONNECTED) {
		reply_err(c, id, RP_ERR_WRONG_STATE, "ticket not connected");
		return;
	}
	if ((ac = agent_conn(ctx, o->t->machine, &ag)) == NULL) {
		reply_err(c, id, RP_ERR_MACHINE_OFFLINE, NULL);
		return;
	}
	/* The policy may have changed (SIGHUP) since the offer: ask again,
	 * and audit the decision with its rule, granted or not. */
	policy_decide(ctx, peer->user, ag, &d);
	{
		json_t *f = tfields(o->t);

		json_object_set_new(f, "request", json_string("control"));
		json_object_set_new(
		    f, "right", json_string(az_right_name(d.right)));
		json_object_set_new(f, "rule", json_string(d.rule_text));
		audit(ctx, BK_AE_POLICY_DECISION, f);
	}
	if (o->t->mode != BK_MODE_CONTROL || d.right < AZ_RIGHT_CONTROL) {
		json_t *f = tfields(o->t);

		json_object_set_new(f, "reason",
		    json_string(o->t->mode != BK_MODE_CONTROL
		            ? "view_only_ticket"
		            : "forbidden"));
		json_object_set_new(f, "rule", json_string(d.rule_text));
		audit(ctx, BK_AE_CONTROL_DECLINED, f);
		if (id != NULL)
			rp_conn_error(c, id, RP_ERR_FORBIDDEN,
			    o->t->mode != BK_MODE_CONTROL
			        ? "this ticket is view only"
			        : NULL,
			    json_pack("{s:s}", "rule", d.rule_text));
		return;
	}
	if (o->t->control_granted) {
		if (id != NULL)
			rp_conn_reply(
			    c, id, json_pack("{s:s}", "state", "granted"));
		return;
	}
	if (o->ctl_conn != NULL) {
		if (id != NULL)
			rp_conn_reply(
			    c, id, json_pack("{s:s}", "state", "prompting"));
		return;
	}
	/* The prompt lasts what the current policy says (also after a
	 * restart, when the offer's own decision is gone). */
	if (d.prompt_timeout_s > 0)
		o->prompt_timeout_s = d.prompt_timeout_s;
	p = json_pack("{s:s, s:s, s:I}", "ticket", o->t->id, "helper",
	    o->t->helper, "timeout", (json_int_t)o->prompt_timeout_s);
	if (id != NULL)
		rp_conn_reply(c, id, json_pack("{s:s}", "state", "prompting"));
	set_conn(&o->ctl_conn, ac);
	o->refs++;
	if (rp_conn_call(ac, "control.prompt", p, o->prompt_timeout_s * 1000u,
	        control_cb, o) != 0) {
		o->refs--;
		set_conn(&o->ctl_conn, NULL);
		tell_helper(o, "agent_offline", NULL, "declined");
	}
}

/* A ticket.list reply waiting for the disk. */
struct list_wait {
	struct rp_conn *c;
	json_t *id, *res;
};

static void
list_stored_cb(int rc, void *arg)
{
	struct list_wait *w = arg;

	if (rc == RP_OK) {
		(void)rp_conn_reply(w->c, w->id, w->res);
		w->res = NULL;
	} else
		(void)rp_conn_error(
		    w->c, w->id, RP_ERR_INTERNAL, "ticket store failed", NULL);
	rp_conn_unref(w->c);
	json_decref(w->id);
	json_decref(w->res);
	free(w);
}

void
bk_h_ticket_list(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_peer *peer = peer_of(c);
	const char *account = helper_account(peer);
	const char *machine = agent_machine(peer);
	json_t *arr = json_array();
	struct list_wait *w;
	struct offer *o;

	(void)params;
	if (id == NULL) {
		json_decref(arr);
		return;
	}
	if (ctx->offers != NULL)
		for (o = ctx->offers->head; o != NULL; o = o->next) {
			if (account != NULL &&
			    strcasecmp(o->t->helper, account) == 0) {
				if (o->helper == NULL ||
				    !rp_conn_is_open(o->helper))
					set_conn(&o->helper, c);
			} else if (machine == NULL ||
			    strcasecmp(o->t->machine, machine) != 0)
				continue;
			json_array_append_new(arr, ticket_public(o));
		}
	/* The list shows states (or the absence of tickets that just ended)
	 * that may not be durable yet: then it waits for the disk too. */
	if (ctx->store != NULL && bk_store_pending(ctx->store) > 0) {
		if ((w = calloc(1, sizeof(*w))) == NULL) {
			json_decref(arr);
			rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
			return;
		}
		rp_conn_ref(c);
		w->c = c;
		w->id = json_incref(id);
		w->res = json_pack("{s:o}", "tickets", arr);
		bk_store_sync(ctx->store, list_stored_cb, w);
		return;
	}
	rp_conn_reply(c, id, json_pack("{s:o}", "tickets", arr));
}

/* ---- agent methods ---------------------------------------------------- */

/* The open offer for the calling agent's machine, or NULL after an error. */
static struct offer *
agent_offer(struct rp_conn *c, json_t *id, json_t *params, const char **tidp)
{
	struct bk_ctx *ctx = rp_conn_ctx(c);
	const char *machine = agent_machine(peer_of(c));
	const char *tid = json_string_value(json_object_get(params, "ticket"));
	struct offer *o;

	*tidp = tid;
	if (tid == NULL || !bk_ticket_id_valid(tid)) {
		reply_err(c, id, RP_ERR_INVALID_PARAMS, "bad ticket id");
		return NULL;
	}
	o = offer_find(ctx->offers, tid);
	if (o != NULL && machine != NULL &&
	    strcasecmp(o->t->machine, machine) == 0)
		return o;
	return NULL;
}

/*
 * Ends an open ticket as revoked, whatever the agent's state. The novice's
 * agent asked (c, id): it gets the reply, not ticket.revoked. Anybody else
 * (the operator, c NULL): the agent, if online, gets ticket.revoked. The
 * state is durable before the helper, the agent or the caller hear of it;
 * a relay or a prompt of the ticket is ended by offer_final.
 */
static void
offer_revoke(struct offer *o, const char *reason, const char *user,
    json_t *extra, struct rp_conn *c, json_t *id)
{
	json_t *f;

	o->refs++;
	f = tfields(o->t);
	if (extra != NULL)
		json_object_update(f, extra);
	json_decref(extra);
	json_object_set_new(f, "user", json_string(user));
	json_object_set_new(
	    f, "state", json_string(bk_ticket_state_name(o->t->state)));
	json_object_set_new(f, "reason", json_string(reason));
	audit(o->os->ctx, BK_AE_TICKET_REVOKED, f);
	session_cut(o, "revoked");
	offer_hold(o);
	if (c != NULL)
		out_reply(o, c, id, json_pack("{s:s}", "state", "revoked"));
	else
		tell_agent_revoked(o, "revoked");
	(void)offer_move(o, BK_TS_REVOKED, "revoked", user);
	offer_release(o);
	offer_unref(o);
}

int
bk_offers_revoke(struct bk_ctx *ctx, const char *id, const char *reason,
    const char *who, json_t *extra)
{
	struct offer *o = offer_find(ctx->offers, id);

	if (o == NULL || !bk_ticket_is_open(o->t)) {
		json_decref(extra);
		return RP_ERR_NOT_FOUND;
	}
	offer_revoke(o, reason, who, extra, NULL, NULL);
	return RP_OK;
}

void
bk_h_ticket_expire(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	const char *tid, *user;
	struct offer *o = agent_offer(c, id, params, &tid);

	(void)arg;
	if (o == NULL) {
		if (tid != NULL && bk_ticket_id_valid(tid))
			reply_err(c, id, RP_ERR_NOT_FOUND, "no such ticket");
		return;
	}
	user = json_string_value(json_object_get(params, "user"));
	if (!good_text(user, OFFER_USER_MAX))
		user = "(unknown)";
	offer_revoke(o, "user", user, NULL, c, id);
}

/* session.event "at": when it happened on the agent (unix seconds, the
 * agent's clock), sent for an event raagent had to queue; 0 if absent. */
static int64_t
event_at(json_t *params)
{
	json_t *v = json_object_get(params, "at");

	return json_is_integer(v) && json_integer_value(v) > 0
	    ? (int64_t)json_integer_value(v)
	    : 0;
}

/* session.event connected for a ticket not open here (ended, used...):
 * the store says why it is refused. */
static void
refuse_closed(struct rp_conn *c, json_t *id, const char *tid)
{
	struct bk_ctx *ctx = rp_conn_ctx(c);
	const char *machine = agent_machine(peer_of(c));
	struct bk_ticket *st = NULL;
	int rc = RP_ERR_NOT_FOUND;
	json_t *f;

	if (ctx->store != NULL && bk_store_get(ctx->store, tid, &st) == RP_OK &&
	    machine != NULL && strcasecmp(st->machine, machine) == 0)
		rc = bk_ticket_use(st, bk_now());
	if (rc == RP_ERR_NOT_FOUND) {
		bk_ticket_free(st);
		f = json_pack("{s:s, s:s, s:s}", "ticket", tid, "reason",
		    "not_found", "host", peer_addr(c));
		audit(ctx, BK_AE_TICKET_REFUSED, f);
		reply_err(c, id, RP_ERR_NOT_FOUND, "no such ticket");
		return;
	}
	f = tfields(st);
	json_object_set_new(f, "reason", json_string(rp_err_name(rc)));
	json_object_set_new(f, "host", json_string(peer_addr(c)));
	audit(ctx, BK_AE_TICKET_REFUSED, f);
	bk_ticket_free(st);
	reply_err(c, id, rc, NULL);
}

static void
ev_connected(struct rp_conn *c, json_t *id, json_t *params, struct offer *o)
{
	struct bk_ctx *ctx = o->os->ctx;
	const char *user, *via, *addr;
	json_t *tried, *f, *list, *v;
	size_t i;
	int rc, was_open = bk_ticket_is_open(o->t);

	rc = bk_ticket_use(o->t, bk_now());
	if (rc != RP_OK) {
		f = tfields(o->t);
		json_object_set_new(f, "reason", json_string(rp_err_name(rc)));
		json_object_set_new(f, "host", json_string(peer_addr(c)));
		audit(ctx, BK_AE_TICKET_REFUSED, f);
		/* The code's own message speaks of the connection's state;
		 * here it is the ticket's. */
		reply_err(c, id, rc,
		    rc == RP_ERR_WRONG_STATE
		        ? "ticket not accepted yet: connected before consent"
		        : NULL);
		if (was_open && o->t->state == BK_TS_EXPIRED)
			offer_expire(o); /* bk_ticket_use found it due */
		else
			offer_store(o);
		return;
	}
	offer_store(o); /* used: durable before the agent hears "ok" */
	user = json_string_value(json_object_get(params, "user"));
	if (!good_text(user, OFFER_USER_MAX))
		user = o->user ? o->user : "(unknown)";
	via = json_string_value(json_object_get(params, "via"));
	addr = json_string_value(json_object_get(params, "address"));
	tried = json_object_get(params, "tried");
	list = json_array();
	if (json_is_array(tried))
		json_array_foreach(tried, i, v)
		{
			if (i >= BK_TICKET_MAX_ADDRS * 2)
				break;
			if (json_is_string(v) &&
			    good_text(json_string_value(v), 80))
				json_array_append(list, v);
		}
	if (addr != NULL && good_text(addr, 80) && json_array_size(list) == 0)
		json_array_append_new(list, json_string(addr));
	f = tfields(o->t);
	json_object_set_new(f, "from_fqdn", json_string(o->t->helper_host));
	json_object_set_new(f, "to_fqdn", json_string(o->t->machine));
	json_object_set_new(f, "user", json_string(user));
	json_object_set_new(f, "addresses", list);
	json_object_set_new(f, "via",
	    json_string(
	        via != NULL && strcmp(via, "relay") == 0 ? "relay" : "direct"));
	if (addr != NULL && good_text(addr, 80))
		json_object_set_new(f, "address", json_string(addr));
	json_object_set_new(f, "agent_host",
	    json_string(rp_conn_peer_addr(c) ? rp_conn_peer_addr(c) : ""));
	if (event_at(params) > 0)
		json_object_set_new(f, "at", json_integer(event_at(params)));
	audit(ctx, BK_AE_SESSION_CONNECTED, f);
	out_reply(o, c, id, json_object());
	tell_helper(o, NULL, user, NULL);
}

static void
ev_file(struct rp_conn *c, json_t *id, json_t *params, struct offer *o)
{
	json_t *file = json_object_get(params, "file"), *f;
	const char *name, *result;

	name = json_string_value(json_object_get(file, "name"));
	result = json_string_value(json_object_get(file, "result"));
	if (!json_is_object(file) || !good_text(name, 1024) ||
	    !json_is_integer(json_object_get(file, "size"))) {
		reply_err(
		    c, id, RP_ERR_INVALID_PARAMS, "file needs name and size");
		return;
	}
	f = tfields(o->t);
	json_object_set_new(f, "name", json_string(name));
	json_object_set(f, "size", json_object_get(file, "size"));
	json_object_set_new(f, "result",
	    json_string(good_text(result, 64) ? result : "unknown"));
	json_object_set_new(f, "start",
	    json_integer(json_integer_value(json_object_get(file, "start"))));
	json_object_set_new(f, "end",
	    json_integer(json_integer_value(json_object_get(file, "end"))));
	audit(o->os->ctx, BK_AE_FILE_TRANSFER, f);
	if (id != NULL)
		rp_conn_reply(c, id, json_object());
}

/* An agent's "disconnected" was audited for tid (once is enough). */
static int
end_seen(struct bk_offers *os, const char *tid, int add)
{
	for (unsigned i = 0; i < OFFER_ENDS_SEEN; i++)
		if (strcmp(os->ends_seen[i], tid) == 0)
			return 1;
	if (add) {
		snprintf(os->ends_seen[os->ends_next], sizeof(os->ends_seen[0]),
		    "%s", tid);
		os->ends_next = (os->ends_next + 1) % OFFER_ENDS_SEEN;
	}
	return 0;
}

/* The agent's own figures of a "disconnected" into its audit line. */
static void
agent_figures(json_t *f, json_t *params, int64_t at)
{
	json_t *v;

	v = json_object_get(params, "session_seconds");
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		json_object_set(f, "agent_session_seconds", v);
	v = json_object_get(params, "bytes");
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		json_object_set(f, "agent_bytes", v);
	if (at > 0)
		json_object_set_new(f, "at", json_integer(at));
}

/*
 * session.event "disconnected" for a ticket that is no longer open: it
 * closed (revoked, expired, cancelled) while the session went on between
 * agent and helper, and the agent could only report the end later. The
 * agent's figures still reach the audit trail, marked "late"; the ticket
 * is not touched (a closed ticket stays closed, whatever it is told).
 * Only for a ticket of this machine (the certificate's identity), that
 * was connected, whose end no "disconnected" reported yet: a replayed or
 * made-up event adds no line.
 */
static void
late_disconnected(
    struct rp_conn *c, json_t *id, json_t *params, const char *tid)
{
	struct bk_ctx *ctx = rp_conn_ctx(c);
	const char *machine = agent_machine(peer_of(c));
	const char *user = json_string_value(json_object_get(params, "user"));
	struct bk_ticket *st = NULL;
	int64_t at = event_at(params), now = bk_now(), secs;
	json_t *f, *v;

	if (ctx->store == NULL || machine == NULL ||
	    bk_store_get(ctx->store, tid, &st) != RP_OK ||
	    strcasecmp(st->machine, machine) != 0 || st->connected_at == 0 ||
	    st->state == BK_TS_ENDED || end_seen(ctx->offers, tid, 1)) {
		bk_ticket_free(st);
		reply_err(c, id, RP_ERR_NOT_FOUND, "no such ticket");
		return;
	}
	/* The broker saw the ticket close, not the session end: the
	 * agent's count is the session's length. */
	v = json_object_get(params, "session_seconds");
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		secs = (int64_t)json_integer_value(v);
	else
		secs = (at >= st->connected_at && at <= now ? at : now) -
		    st->connected_at;
	f = tfields(st);
	json_object_set_new(
	    f, "state", json_string(bk_ticket_state_name(st->state)));
	json_object_set_new(f, "session_seconds", json_integer(secs));
	agent_figures(f, params, at);
	if (good_text(user, OFFER_USER_MAX))
		json_object_set_new(f, "user", json_string(user));
	json_object_set_new(f, "reason", json_string("disconnected"));
	json_object_set_new(f, "late", json_true());
	json_object_set_new(f, "host", json_string(peer_addr(c)));
	log_info("ticket %s: late disconnected from %s (ticket %s), audited",
	    tid, machine, bk_ticket_state_name(st->state));
	audit(ctx, BK_AE_SESSION_DISCONNECTED, f);
	bk_ticket_free(st);
	if (id != NULL)
		rp_conn_reply(c, id, json_object());
}

void
bk_h_session_event(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	const char *tid, *ev, *user;
	struct offer *o;
	json_t *f;
	int64_t secs, at;

	ev = json_string_value(json_object_get(params, "event"));
	if (ev == NULL) {
		reply_err(c, id, RP_ERR_INVALID_PARAMS, "event is required");
		return;
	}
	o = agent_offer(c, id, params, &tid);
	if (o == NULL) {
		if (tid == NULL || !bk_ticket_id_valid(tid))
			return; /* replied */
		if (strcmp(ev, "connected") == 0)
			refuse_closed(c, id, tid);
		else if (strcmp(ev, "disconnected") == 0)
			late_disconnected(c, id, params, tid);
		else
			reply_err(c, id, RP_ERR_NOT_FOUND, "no such ticket");
		return;
	}
	user = json_string_value(json_object_get(params, "user"));
	if (!good_text(user, OFFER_USER_MAX))
		user = NULL;
	o->refs++;
	offer_hold(o);
	if (strcmp(ev, "connected") == 0) {
		ev_connected(c, id, params, o);
	} else if (strcmp(ev, "disconnected") == 0) {
		if (o->t->state != BK_TS_CONNECTED) {
			reply_err(
			    c, id, RP_ERR_WRONG_STATE, "ticket not connected");
			goto out;
		}
		/* A queued event says when the session ended ("at"). */
		at = event_at(params);
		secs = (at >= o->t->connected_at && at <= bk_now() ? at
		                                                   : bk_now()) -
		    o->t->connected_at;
		f = tfields(o->t);
		json_object_set_new(f, "session_seconds", json_integer(secs));
		agent_figures(f, params, at);
		json_object_set_new(f, "reason", json_string("disconnected"));
		(void)end_seen(ctx->offers, o->t->id, 1);
		audit(ctx, BK_AE_SESSION_DISCONNECTED, f);
		out_reply(o, c, id, json_object());
		(void)offer_move(o, BK_TS_ENDED, "disconnected", user);
	} else if (strcmp(ev, "control_started") == 0) {
		/* The agent confirms it lets input through: control must
		 * have been granted by the user (control.prompt). */
		if (!o->t->control_granted) {
			reply_err(
			    c, id, RP_ERR_WRONG_STATE, "control not granted");
			goto out;
		}
		if (o->t->control_since == 0)
			o->t->control_since = bk_now();
		if (id != NULL)
			rp_conn_reply(c, id, json_object());
	} else if (strcmp(ev, "control_ended") == 0) {
		control_end(o, user);
		offer_store(o);
		out_reply(o, c, id, json_object());
		tell_helper(o, "user", user, "ended");
	} else if (strcmp(ev, "file_transfer") == 0) {
		ev_file(c, id, params, o);
	} else
		reply_err(c, id, RP_ERR_INVALID_PARAMS, "unknown event");
out:
	offer_release(o);
	offer_unref(o);
}

/* ---- lifecycle -------------------------------------------------------- */

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bk_offers *os = arg;
	struct offer *o, *next;
	int64_t now = bk_now();
	size_t n;

	(void)fd;
	(void)what;
	for (o = os->head; o != NULL; o = next) {
		o->refs++;
		if (now >= o->t->expires_at)
			offer_expire(o);
		else if (o->t->state == BK_TS_PROMPTING &&
		    o->prompt_deadline != 0 && now > o->prompt_deadline &&
		    o->prompt_conn != NULL) {
			/* Belt and braces: the call's own timeout should have
			 * fired already. */
			offer_decline(o, BK_TS_TIMED_OUT, "timeout", NULL);
		}
		next = o->next;
		offer_unref(o);
	}
	if (os->ctx->store != NULL && ++os->sweeps % OFFER_PURGE_EVERY == 0)
		(void)bk_store_purge_closed(
		    os->ctx->store, now - OFFER_KEEP_CLOSED_S, &n);
}

struct bk_offers *
bk_offers_new(struct bk_ctx *ctx)
{
	struct bk_offers *os = calloc(1, sizeof(*os));
	struct timeval tv = {
	    OFFER_SWEEP_MS / 1000, (OFFER_SWEEP_MS % 1000) * 1000};

	if (os == NULL)
		return NULL;
	os->ctx = ctx;
	if (ctx->base != NULL) {
		os->sweep = event_new(ctx->base, -1, EV_PERSIST, sweep_cb, os);
		if (os->sweep == NULL) {
			free(os);
			return NULL;
		}
		event_add(os->sweep, &tv);
	}
	return os;
}

void
bk_offers_free(struct bk_offers *os)
{
	struct offer *o;

	if (os == NULL)
		return;
	os->closing = 1;
	if (os->sweep != NULL)
		event_free(os->sweep);
	/* Durable writes still in flight call back now (and, closing, only
	 * drop their references): none may outlive the offers. */
	if (os->ctx->store != NULL)
		bk_store_flush(os->ctx->store);
	while ((o = os->head) != NULL) {
		offer_unlink(o);
		if (o->prompt_conn != NULL)
			rp_conn_cancel_calls(o->prompt_conn, o);
		if (o->ctl_conn != NULL)
			rp_conn_cancel_calls(o->ctl_conn, o);
		offer_unref(o);
	}
	free(os);
}

size_t
bk_offers_open_count(struct bk_offers *os)
{
	return os != NULL ? os->count : 0;
}

struct restore_list {
	struct bk_ticket **v;
	size_t n, cap;
};

static int
restore_collect(const struct bk_ticket *t, void *arg)
{
	struct restore_list *l = arg;
	struct bk_ticket **nv;

	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		nv = realloc(l->v, l->cap * sizeof(*nv));
		if (nv == NULL)
			return -1;
		l->v = nv;
	}
	if ((l->v[l->n] = bk_ticket_dup(t)) == NULL)
		return -1;
	l->n++;
	return 0;
}

int
bk_offers_restore(struct bk_ctx *ctx)
{
	struct restore_list l = {NULL, 0, 0};
	struct offer *o;
	size_t i, kept = 0;
	int rc = 0;

	if (ctx->store == NULL || ctx->offers == NULL)
		return 0;
	if (bk_store_list_open(ctx->store, restore_collect, &l) != 0)
		rc = -1;
	for (i = 0; i < l.n; i++) {
		if (offer_find(ctx->offers, l.v[i]->id) != NULL ||
		    (o = offer_new(ctx->offers, l.v[i])) == NULL) {
			bk_ticket_free(l.v[i]);
			continue;
		}
		o->prompt_timeout_s = ctx->cfg && ctx->cfg->prompt_timeout_s
		    ? ctx->cfg->prompt_timeout_s
		    : AZ_POLICY_DEFAULT_PROMPT_TIMEOUT;
		offer_link(ctx->offers, o);
		o->refs++;
		if (bk_now() >= o->t->expires_at)
			offer_expire(o);
		else if (o->t->state == BK_TS_OFFERED ||
		    o->t->state == BK_TS_PROMPTING) {
			if (o->t->state == BK_TS_OFFERED)
				(void)bk_ticket_transition(
				    o->t, BK_TS_PROMPTING, bk_now());
			offer_decline(
			    o, BK_TS_TIMED_OUT, "broker_restart", NULL);
		} else {
			/* The session itself lives between agent and helper
			 * and went on while the broker was down: a control
			 * grant stays as stored (the agent enforces it), its
			 * start too. A grant stored before the start was
			 * (schema version 1) counts from now. */
			if (o->t->control_granted && o->t->control_since == 0)
				o->t->control_since = bk_now();
			kept++;
		}
		offer_unref(o);
	}
	free(l.v);
	log_info("offers: %zu open ticket(s) restored", kept);
	return rc;
}

void
bk_offers_agent_gone(struct bk_ctx *ctx, struct bk_agent *ag)
{
	struct offer *o, *next;

	if (ctx->offers == NULL || ag == NULL || ag->fqdn == NULL)
		return;
	for (o = ctx->offers->head; o != NULL; o = next) {
		o->refs++;
		if (strcasecmp(o->t->machine, ag->fqdn) == 0) {
			if (o->t->state == BK_TS_PROMPTING ||
			    o->t->state == BK_TS_OFFERED)
				offer_decline(
				    o, BK_TS_DECLINED, "agent_offline", NULL);
			else if (o->ctl_conn != NULL) {
				rp_conn_cancel_calls(o->ctl_conn, o);
			}
		}
		next = o->next;
		offer_unref(o);
	}
}

void
bk_offers_agent_back(struct bk_ctx *ctx, struct bk_agent *ag)
{
	struct offer *o;

	if (ctx->offers == NULL || ag == NULL || ag->fqdn == NULL)
		return;
	for (o = ctx->offers->head; o != NULL; o = o->next)
		if (o->t->state == BK_TS_ACCEPTED &&
		    strcasecmp(o->t->machine, ag->fqdn) == 0)
			out_connect(o);
}

void
bk_offers_agent_tickets(
    struct bk_ctx *ctx, struct bk_agent *ag, const json_t *tickets)
{
	struct offer *o;
	const char *tid;
	json_t *v;
	size_t i;

	if (ctx->offers == NULL || ag == NULL || ag->conn == NULL ||
	    !json_is_array(tickets))
		return;
	json_array_foreach(tickets, i, v)
	{
		if (i >= 64)
			break;
		tid = json_string_value(v);
		if (tid == NULL || !bk_ticket_id_valid(tid))
			continue;
		o = offer_find(ctx->offers, tid);
		if (o != NULL && bk_ticket_is_open(o->t) &&
		    strcasecmp(o->t->machine, ag->fqdn) == 0)
			continue;
		log_info("agent %s still holds ticket %s, which is not open "
		         "here: told to end it",
		    ag->fqdn, tid);
		rp_conn_notify(ag->conn, "ticket.revoked",
		    json_pack("{s:s, s:s}", "ticket", tid, "reason", "closed"));
	}
}

void
bk_offers_helper_gone(struct bk_ctx *ctx, struct bk_peer *p)
{
	struct offer *o, *next;
	json_t *f;

	if (ctx->offers == NULL || p == NULL || p->conn == NULL)
		return;
	for (o = ctx->offers->head; o != NULL; o = next) {
		o->refs++;
		if (o->helper == p->conn) {
			set_conn(&o->helper, NULL);
			/* A draining broker closes every connection: the
			 * tickets must survive the restart, not be
			 * cancelled by it. */
			if (o->t->state != BK_TS_CONNECTED && !ctx->draining) {
				f = tfields(o->t);
				json_object_set_new(f, "state",
				    json_string(
				        bk_ticket_state_name(o->t->state)));
				json_object_set_new(
				    f, "reason", json_string("helper_gone"));
				audit(ctx, BK_AE_OFFER_CANCELLED, f);
				offer_hold(o);
				tell_agent_revoked(o, "cancelled");
				(void)offer_move(
				    o, BK_TS_CANCELLED, "helper_gone", NULL);
				offer_release(o);
			}
		}
		next = o->next;
		offer_unref(o);
	}
}

const struct bk_ticket *
bk_offers_ticket(struct bk_offers *os, const char *id)
{
	struct offer *o = offer_find(os, id);

	return o != NULL ? o->t : NULL;
}
