/*
 * bk_relay.h - the broker's relay: when the agent cannot reach the
 * helper's listener, both sides send relay.join {ticket, side} on their
 * broker connection; after the reply the connection stops speaking JSON-RPC
 * and the broker splices the two plaintext streams (each one is the inner
 * PSK-TLS stream between agent and helper, which the broker never parses).
 *
 * Limits: the two sides must pair within relay_wait seconds, a spliced pair
 * idle for relay_idle seconds is closed, and a ticket may move at most
 * relay_max_bytes in total (both directions). Backpressure: one side stops
 * being read while the other has more than a watermark of output queued.
 */
#ifndef BK_RELAY_H
#define BK_RELAY_H

#include <stddef.h>

#include <jansson.h>

struct rp_conn;
struct bk_ctx;
struct bk_relays;

void bk_h_relay_join(struct rp_conn *c, json_t *id, json_t *params, void *ctx);

struct bk_relays *bk_relays_new(struct bk_ctx *ctx);
void bk_relays_free(struct bk_relays *r);
/* The ticket reached a final state (expired, revoked, cancelled, ended):
 * its relay, waiting or splicing, is closed (queued bytes are flushed). */
void bk_relays_ticket_closed(struct bk_relays *r, const char *ticket);
/* Pairs waiting plus pairs splicing (metrics). */
size_t bk_relays_active(struct bk_relays *r);

#endif
