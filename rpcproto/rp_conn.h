/*
 * rp_conn.h - one JSON-RPC connection: framing, codec, dispatch through a
 * method table, and correlation of our own outgoing requests.
 *
 * Every generic check happens in rp_conn before a handler runs:
 *   line length, UTF-8, JSON, JSON-RPC shape  -> -32700 / -32600
 *   method exists                             -> -32601
 *   connection state allows it                -> RP_ERR_NOT_AUTHENTICATED
 *                                                or RP_ERR_WRONG_STATE
 *   params match the method's jansson spec    -> -32602
 * so handlers contain only their own logic.
 *
 * Transport: rp_conn sits on a struct rp_io (a small table of functions), so
 * the same code runs over TLS (rp_conn_new_tls) and, in unit tests, over a
 * plain socketpair. Input arrives through rp_conn_input().
 *
 * Lifetime: rp_conn is reference counted. A handler that answers later
 * (directory lookup, user consent) takes rp_conn_ref(); replying on a closed
 * connection is a harmless no-op; the last rp_conn_unref() frees it.
 * rp_conn_new returns one reference, owned by the caller (drop it in
 * on_close); the transport holds another until rp_conn_closed() or
 * rp_conn_detach(), so the transport's callback pointer stays valid even if
 * the caller lets go early.
 *
 * Bad peers: every message rp_conn itself rejects (malformed line, unknown
 * method, wrong state, bad params) counts as a bad line; a good message
 * resets the count; max_bad_lines in a row close the connection. Malformed
 * lines are answered with "id": null (or the id when it could be read),
 * except malformed responses and notifications, which are never answered
 * (JSON-RPC) but reported through on_protocol_error. A response to an
 * unknown id is a bad line too, except a late answer: one to a call of ours
 * among the last 64 that timed out or was cancelled, which is ignored
 * (logged at debug) and neither counted nor reported.
 */
#ifndef RP_CONN_H
#define RP_CONN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct rp_conn;
struct rp_tls;

/* Connection states (bit flags so a method can allow several). */
enum rp_state {
	RP_ST_NEW = 1 << 0,     /* connected, no hello yet */
	RP_ST_HELLO = 1 << 1,   /* hello done, not authenticated */
	RP_ST_AUTHING = 1 << 2, /* SASL exchange in progress (helper) */
	RP_ST_AGENT = 1 << 3,   /* authenticated agent (machine certificate) */
	RP_ST_HELPER = 1 << 4,  /* authenticated helper (SASL) */
	RP_ST_RAW = 1 << 5,     /* relay: no more RPC, raw bytes */
	RP_ST_CLOSED = 1 << 6,
};
#define RP_ST_PREAUTH (RP_ST_NEW | RP_ST_HELLO | RP_ST_AUTHING)
#define RP_ST_ANY (RP_ST_PREAUTH | RP_ST_AGENT | RP_ST_HELPER)

/* Handler for an incoming request or notification. id is NULL for a
 * notification. params is never NULL (an empty object when absent). The
 * handler answers with rp_conn_reply/rp_conn_error, now or later (keep a
 * reference to id with json_incref and to the connection with rp_conn_ref). */
typedef void (*rp_handler)(
    struct rp_conn *c, json_t *id, json_t *params, void *ctx);

struct rp_method {
	const char *name;
	unsigned states; /* RP_ST_* in which the method is allowed */
	/* Params spec: jansson's json_unpack format with the object keys
	 * written inline (a table cannot pass them as arguments), e.g.
	 * "{machine:s, mode:s, addresses?:[s]}" ("?" = optional member;
	 * at most 16 keys). Checked with JSON_VALIDATE_ONLY; unknown members
	 * are ignored unless the spec ends an object with '!'. NULL = any
	 * object or array. The key-less form "{s:s}" cannot be checked: it
	 * fails rp_methods_check, is logged once, and then only the container
	 * type (object/array) is checked. Note jansson's
	 * semantics: "[s]" checks the first element only; handlers check the
	 * rest of a list themselves. */
	const char *params;
	unsigned flags; /* RP_M_* */
	rp_handler handler;
};
/* A method is called as a request (with an id) unless RP_M_NOTIFY_OK
 * allows the notification form too; a notification for a method without it
 * is dropped and reported. RP_M_REQUEST_ONLY states the default explicitly. */
#define RP_M_NOTIFY_OK 1u    /* may be sent as a notification */
#define RP_M_REQUEST_ONLY 2u /* must carry an id */

/* Result of one of our outgoing requests. code == 0: `result` is the result.
 * Otherwise `result` is the error object (may be NULL for local failures such
 * as RP_ERR_TIMEOUT or RP_ERR_CLOSED). Called exactly once per call.
 * `result` is borrowed for the duration of the callback (json_incref to
 * keep it). */
typedef void (*rp_reply_cb)(
    struct rp_conn *c, int code, json_t *result, void *arg);

/* Transport operations rp_conn needs. */
struct rp_io_ops {
	int (*write)(void *io, struct evbuffer *buf); /* takes all of buf */
	size_t (*out_pending)(void *io);
	void (*set_reading)(void *io, int on);
	void (*close)(void *io); /* graceful; transport later calls
	                            rp_conn_closed() */
	const char *(*peer_id)(void *io);
	const char *(*peer_addr)(void *io);
};

struct rp_conn_cbs {
	/* Connection closed (transport gone). Pending calls have already been
	 * failed with RP_ERR_CLOSED. Drop your references here. */
	void (*on_close)(struct rp_conn *c, const char *why, void *ctx);
	/* Protocol error worth logging (malformed input, unknown method...). */
	void (*on_protocol_error)(
	    struct rp_conn *c, int code, const char *msg, void *ctx);
};

struct rp_conn_opts {
	const struct rp_method *methods; /* table, sorted or not */
	size_t nmethods;
	const struct rp_conn_cbs *cbs;
	void *ctx;                   /* passed to handlers and callbacks */
	uint32_t max_line;           /* 0 -> RP_LINE_MAX */
	unsigned default_timeout_ms; /* outgoing calls; 0 -> 30000 */
	/* Close after this many consecutive malformed lines (0 -> 8). */
	unsigned max_bad_lines;
};

/* Checks a method table (names, states, handlers, params specs,
 * duplicates). Returns 0, or -1 with the first problem in err. Call it once
 * at startup or in a unit test: a broken spec is otherwise only reported
 * (-32603 to the peer, log_errx) when the method is called. */
int rp_methods_check(
    const struct rp_method *m, size_t n, char *err, size_t errlen);

struct rp_conn *rp_conn_new(struct event_base *base,
    const struct rp_io_ops *ops, void *io, const struct rp_conn_opts *o);
/* Convenience: an rp_conn over an rp_tls (sets the TLS callbacks). */
struct rp_conn *rp_conn_new_tls(
    struct event_base *base, struct rp_tls *t, const struct rp_conn_opts *o);

/* Feed received plaintext (transport callback). */
void rp_conn_input(struct rp_conn *c, struct evbuffer *in);
/* Transport reports it is gone. The transport must not call rp_conn_*
 * with this connection afterwards. */
void rp_conn_closed(struct rp_conn *c, const char *why);
/* Transport output drained (for backpressure bookkeeping). */
void rp_conn_drained(struct rp_conn *c);

void rp_conn_ref(struct rp_conn *c);
void rp_conn_unref(struct rp_conn *c);

unsigned rp_conn_state(const struct rp_conn *c);
void rp_conn_set_state(struct rp_conn *c, enum rp_state s);
int rp_conn_is_open(const struct rp_conn *c);
void *rp_conn_ctx(const struct rp_conn *c);
/* Per-connection user data (e.g. the broker's agent or helper record). */
void rp_conn_set_data(struct rp_conn *c, void *data);
void *rp_conn_data(const struct rp_conn *c);
const char *rp_conn_peer_id(const struct rp_conn *c);
const char *rp_conn_peer_addr(const struct rp_conn *c);
/* The underlying rp_tls, or NULL if the transport is not TLS (or gone). */
struct rp_tls *rp_conn_tls(const struct rp_conn *c);
/* Called by rp_conn_new_tls (rp_conn_tls.c) to record the rp_tls under the
 * rp_io_ops; rp_conn itself never calls rp_tls_* directly. */
void rp_conn_set_tls(struct rp_conn *c, struct rp_tls *t);
/* "new", "hello", "authing", "agent", "helper", "raw", "closed". */
const char *rp_conn_state_name(unsigned state);

/* Stop processing input while the transport holds more than this many
 * bytes of our output; resume on rp_conn_drained(). */
#define RP_CONN_OUT_HIGH (256u * 1024u)

/* Outgoing. All steal the reference to params/result/data. Return 0, or an
 * rp_err (RP_ERR_CLOSED on a closed connection, RP_ERR_LINE_TOO_LONG if the
 * message would exceed the line limit). rp_conn_reply and rp_conn_error with
 * id NULL (the request was a notification) send nothing and return 0. A reply
 * too long for one line is replaced by a line_too_long error to the peer (so
 * it does not wait forever) and RP_ERR_LINE_TOO_LONG is returned. */
int rp_conn_call(struct rp_conn *c, const char *method, json_t *params,
    unsigned timeout_ms, rp_reply_cb cb, void *arg);
int rp_conn_notify(struct rp_conn *c, const char *method, json_t *params);
int rp_conn_reply(struct rp_conn *c, json_t *id, json_t *result);
int rp_conn_error(
    struct rp_conn *c, json_t *id, int code, const char *msg, json_t *data);
/* Number of our requests awaiting an answer. */
size_t rp_conn_pending(const struct rp_conn *c);
/* Fails every pending call whose callback argument is `arg` with RP_ERR_CLOSED
 * (used when the object `arg` dies first). */
void rp_conn_cancel_calls(struct rp_conn *c, void *arg);

/* Graceful close (flushes queued replies first). */
void rp_conn_close(struct rp_conn *c, const char *why);

/*
 * Relay: stop RPC processing after the current message and hand the
 * transport over. Any bytes already received after the current line are
 * moved into `leftover`. The rp_conn is marked RP_ST_RAW; the caller takes
 * over the rp_tls callbacks with rp_tls_set_cbs(). Pending calls fail with
 * RP_ERR_CLOSED. on_close is NOT called (the transport is not gone): the
 * caller cleans up its record and drops its reference itself. Replies sent
 * before detaching (e.g. the relay.join result) are already queued on the
 * transport. Returns NULL (leftover still filled) on a non-TLS transport.
 */
struct rp_tls *rp_conn_detach(struct rp_conn *c, struct evbuffer *leftover);

#endif
