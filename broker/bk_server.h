/*
 * bk_server.h - the listening socket and every connection's set-up and
 * teardown: accept, TLS handshake, rp_conn with the method table, the peer
 * record, limits, the periodic sweep, and the graceful drain.
 */
#ifndef BK_SERVER_H
#define BK_SERVER_H

#include <stddef.h>

struct bk_ctx;

/*
 * Binds and listens on ctx->cfg's `listen`. On failure returns -1 and err
 * says why and what to change, e.g. "cannot listen on 127.0.0.1:4433:
 * address already in use; another program holds this port — change
 * `listen` in [broker] of FILE".
 */
int bk_server_start(struct bk_ctx *ctx, char *err, size_t errlen);
/* The port actually bound (for logs and tests). */
unsigned bk_server_port(const struct bk_ctx *ctx);
/* SIGTERM: stop accepting and close every connection gracefully. */
void bk_server_drain(struct bk_ctx *ctx);
/* Open connections (TLS handshakes included; connections handed to the
 * relay are not counted). */
size_t bk_server_nconns(struct bk_ctx *ctx);
/* Closes the listener and frees what is left (connections are dropped). */
void bk_server_free(struct bk_ctx *ctx);

#endif
