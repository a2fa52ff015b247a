/*
 * bk_offer.h - offers in motion: offer.create, the novice's consent
 * (novice.prompt), ticket.connect, control (control.request and
 * control.prompt), ticket.list / ticket.expire / session.event, the
 * expiry sweep and what happens when an agent or a helper goes away.
 *
 * The tickets themselves (ids, secrets, state machine) are bk_ticket.c's and
 * they live in bk_store; this module keeps a small in-memory index of the
 * open ones (who to tell, which call is pending) and drives them through
 * their states, auditing every step and telling the helper with offer.update
 * on every change. Consent is never assumed: no answer, an error, a closed
 * connection or any answer other than exactly "accept" means declined.
 *
 * Handlers below are rp_handler (ctx is struct bk_ctx *; the connection's
 * struct bk_peer is rp_conn_data(c)). Method names and shapes are in
 * docs/PROTOCOL.md (Methods).
 */
#ifndef BK_OFFER_H
#define BK_OFFER_H

#include <stddef.h>

#include <jansson.h>

struct rp_conn;
struct bk_ctx;
struct bk_agent;
struct bk_peer;
struct bk_offers;
struct bk_ticket;

/* Helper methods. */
void bk_h_offer_create(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);
void bk_h_offer_cancel(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);
void bk_h_control_request(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);
/* Helper and agent. */
void bk_h_ticket_list(struct rp_conn *c, json_t *id, json_t *params, void *ctx);
/* Agent methods. */
void bk_h_ticket_expire(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);
void bk_h_session_event(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);

/* Relay (bk_relay.c, declared here too so the method table needs one
 * header for the offer family). */
void bk_h_relay_join(struct rp_conn *c, json_t *id, json_t *params, void *ctx);

/* Lifetime: after ctx->store, ctx->audit and ctx->policy are set. Arms the
 * periodic expiry sweep (one timer for all tickets). */
struct bk_offers *bk_offers_new(struct bk_ctx *ctx);
void bk_offers_free(struct bk_offers *o);
/*
 * At start: loads open tickets from the store. Tickets past their expiry
 * are expired (audited). A ticket that was offered or prompting when the
 * broker stopped is marked timed_out: the answer to its prompt was lost and
 * consent is never assumed. Accepted and connected tickets stay valid until
 * they expire, so a restarted broker keeps them. Returns 0 or -1.
 */
int bk_offers_restore(struct bk_ctx *ctx);
/* The registry calls these: an agent's connection went away (prompts in
 * flight become declined, reason agent_offline), or an agent (re)registered
 * on a new connection. */
void bk_offers_agent_gone(struct bk_ctx *ctx, struct bk_agent *ag);
void bk_offers_agent_back(struct bk_ctx *ctx, struct bk_agent *ag);
/*
 * agent.register's "tickets": the tickets the agent still holds (a prompt,
 * a consent, a live session). Every one that is not open here for this
 * machine any more (revoked by the operator, expired or ended while the
 * agent was away, or unknown) gets a ticket.revoked (reason "closed"), so
 * a session that went on between agent and helper while the agent could
 * not hear the broker ends when it comes back. At most 64 are looked at;
 * anything else in the array is ignored.
 */
void bk_offers_agent_tickets(
    struct bk_ctx *ctx, struct bk_agent *ag, const json_t *tickets);
/* A helper's connection closed: its tickets that have not connected yet
 * (offered, prompting, accepted) are cancelled; connected sessions go on
 * until they end or expire. */
void bk_offers_helper_gone(struct bk_ctx *ctx, struct bk_peer *p);
/*
 * Ends the open ticket `id` as revoked whatever its state and the agent's
 * (the operator's rabrokerctl expire): audit ticket_revoked (user `who`,
 * the state it had, `reason`), a connected session's end, the state made
 * durable, then offer.update revoked (user `who`) to the helper and
 * ticket.revoked to the agent if it is online; a relay or a prompt of the
 * ticket ends. `extra` (may be NULL, reference stolen) adds fields to the
 * audit line (the operator's uid). Returns RP_OK or RP_ERR_NOT_FOUND (no
 * open ticket `id`). The state may not be durable yet on return:
 * bk_store_sync() says when.
 */
int bk_offers_revoke(struct bk_ctx *ctx, const char *id, const char *reason,
    const char *who, json_t *extra);
/* The open ticket `id` (for the relay), or NULL. Valid until the next
 * event-loop turn; never hand out its secret. */
const struct bk_ticket *bk_offers_ticket(struct bk_offers *o, const char *id);
/* 1 if s is "a.b.c.d:port" or "[v6]:port" with port 1..65535 (no host
 * names, no port 0, no spaces or signs). */
int bk_offer_addr_valid(const char *s);
/* Open tickets known to this broker (metrics). */
size_t bk_offers_open_count(struct bk_offers *o);

#endif
