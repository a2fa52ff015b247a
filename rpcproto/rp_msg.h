/*
 * rp_msg.h - JSON-RPC 2.0 codec on jansson.
 *
 * rp_msg_parse validates one line completely: every generic rule of
 * JSON-RPC 2.0 is checked here, so that dispatch and handlers only ever see
 * well-formed messages. Batches (JSON arrays) are rejected with
 * RP_ERR_INVALID_REQUEST ("batches are not supported").
 *
 * Ids: a string (at most RP_ID_MAX bytes) or an integer. null, fractional
 * numbers, objects, arrays and booleans are rejected.
 */
#ifndef RP_MSG_H
#define RP_MSG_H

#include <jansson.h>
#include <stddef.h>

struct evbuffer;

/* Version carried by "hello" (docs/PROTOCOL.md). */
#define RP_PROTOCOL_VERSION 1

#define RP_ID_MAX 128
#define RP_METHOD_MAX 64

enum rp_msg_kind {
	RP_MSG_REQUEST = 1,  /* method + id */
	RP_MSG_NOTIFICATION, /* method, no id */
	RP_MSG_RESULT,       /* id + result */
	RP_MSG_ERROR,        /* id (may be null) + error */
};

struct rp_msg {
	enum rp_msg_kind kind;
	json_t *root;       /* owned: the whole message */
	json_t *id;         /* borrowed from root; NULL for notifications */
	const char *method; /* borrowed; requests and notifications */
	json_t *params;     /* borrowed; object or array, or NULL if absent */
	json_t *result;     /* borrowed; RP_MSG_RESULT */
	int err_code;       /* RP_MSG_ERROR */
	const char *err_message;
	json_t *err_data; /* borrowed; may be NULL */
};

/*
 * Parses and validates one line. Returns 0 on success. On failure returns
 * RP_ERR_PARSE or RP_ERR_INVALID_REQUEST, writes a message saying what and
 * where into err (e.g. "invalid JSON at column 17: ..."), and sets *bad_id to
 * a new reference to the request id when one could be recovered (else NULL),
 * so that the error reply can carry it (on success *bad_id is NULL: use
 * out->id). On failure out->kind is still set
 * when the kind could be told (a malformed response must not be answered),
 * else 0; nothing else in *out is set.
 *
 * Beyond JSON-RPC 2.0's own rules it rejects duplicate keys (-32600),
 * unknown top-level members, unknown members of "error", and method names
 * that are not printable ASCII (0x21-0x7E) or begin with "rpc.".
 */
int rp_msg_parse(const char *line, size_t len, struct rp_msg *out,
    json_t **bad_id, char *err, size_t errlen);
void rp_msg_clear(struct rp_msg *m);

/* 1 if id is an acceptable request id (integer, or string <= RP_ID_MAX). */
int rp_msg_id_valid(const json_t *id);
/* 1 if m is an acceptable method name; else 0 and a reason in err. */
int rp_msg_method_valid(const char *m, char *err, size_t errlen);

/* Builders. They steal the reference to params/result/data (may be NULL) and
 * take a new reference to id. They return NULL only on allocation failure. */
json_t *rp_msg_request(json_t *id, const char *method, json_t *params);
json_t *rp_msg_notification(const char *method, json_t *params);
json_t *rp_msg_result(json_t *id, json_t *result);
/* id NULL -> "id": null. data NULL -> {"reason": rp_err_name(code)}; an
 * object without "reason" gets one added. */
json_t *rp_msg_error(json_t *id, int code, const char *message, json_t *data);

/*
 * Encodes msg compactly on one line plus '\n' and appends it to out.
 * Returns 0, or RP_ERR_LINE_TOO_LONG if the encoding exceeds max bytes
 * (nothing is appended), or RP_ERR_NOMEM.
 */
int rp_msg_encode(struct evbuffer *out, const json_t *msg, size_t max);

#endif
