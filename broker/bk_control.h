/*
 * bk_control.h - the local control socket that rabrokerctl talks to
 * (docs/OPERATIONS.md), in the manner of OpenBSD daemons' control.c.
 *
 * A Unix stream socket ([control] socket, default
 * /run/rabroker/control.sock), mode 0660, owned by the broker's user and
 * group: whoever may open it is an operator (root, or a member of the
 * `rabroker` group). One JSON object per line each way:
 *
 *   {"cmd":"status"}                 -> {"ok":true,"version":..,...}
 *   {"cmd":"agents"}                 -> {"ok":true,"agents":[...]}
 *   {"cmd":"tickets"}                -> {"ok":true,"tickets":[...]}
 *   {"cmd":"expire","ticket":"<id>"} -> {"ok":true,"state":"revoked"}
 *
 * Errors: {"ok":false,"error":"not_found","message":"..."}. Never a ticket
 * secret. An operator's expire is audited as ticket_revoked with user
 * "operator" and the caller's uid.
 */
#ifndef BK_CONTROL_H
#define BK_CONTROL_H

#include <stddef.h>

struct bk_ctx;

#define BK_CONTROL_DEFAULT_SOCKET "/run/rabroker/control.sock"
#define BK_CONTROL_LINE_MAX 4096

/* Checks a [control] socket path: absolute, fits in sun_path. 0 or -1. */
int bk_control_check_path(const char *path, char *why, size_t whylen);

/*
 * After ctx->base, ctx->cfg, ctx->store and ctx->agents are set: binds the
 * socket (a stale socket file is replaced; any other file there is left
 * alone and refused). A failure is logged and leaves the socket off; the
 * broker goes on. Returns -1 only when out of memory.
 */
int bk_control_init(struct bk_ctx *ctx);
/* Closes every control connection and removes the socket file. */
void bk_control_free(struct bk_ctx *ctx);

#endif
