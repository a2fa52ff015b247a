/*
 * bk_methods.h - the broker's one method table and the handlers the core
 * provides (bk_session.c, bk_agent.c). The offer family's handlers are in
 * bk_offer.h.
 */
#ifndef BK_METHODS_H
#define BK_METHODS_H

#include <stddef.h>

#include <jansson.h>

struct rp_conn;
#include "rp_conn.h"

extern const struct rp_method bk_methods[];
extern const size_t bk_nmethods;

/* bk_session.c */
void bk_h_hello(struct rp_conn *c, json_t *id, json_t *params, void *ctx);
void bk_h_ping(struct rp_conn *c, json_t *id, json_t *params, void *ctx);
void bk_h_auth_start(struct rp_conn *c, json_t *id, json_t *params, void *ctx);
void bk_h_auth_step(struct rp_conn *c, json_t *id, json_t *params, void *ctx);

/* bk_agent.c */
void bk_h_agent_register(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);
void bk_h_agent_sessions(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);
void bk_h_machines_list(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);

#endif
