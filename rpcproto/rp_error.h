/*
 * rp_error.h - the one error enum shared by every rabroker program.
 *
 * Negative codes are JSON-RPC 2.0's own (malformed input). Positive codes
 * in the 1000 range are rabroker's application errors. Every code has a
 * stable lower-case name (rp_err_name) used in logs, in the "data.reason"
 * member of error replies and in docs/PROTOCOL.md; never renumber or rename.
 */
#ifndef RP_ERROR_H
#define RP_ERROR_H

/* X(enum, code, name, default message) */
#define RP_ERR_LIST(X)                                                        \
	X(RP_OK, 0, "ok", "success")                                          \
	X(RP_ERR_PARSE, -32700, "parse_error", "Parse error")                 \
	X(RP_ERR_INVALID_REQUEST, -32600, "invalid_request",                  \
	    "Invalid Request")                                                \
	X(RP_ERR_METHOD_NOT_FOUND, -32601, "method_not_found",                \
	    "Method not found")                                               \
	X(RP_ERR_INVALID_PARAMS, -32602, "invalid_params", "Invalid params")  \
	X(RP_ERR_INTERNAL, -32603, "internal_error", "Internal error")        \
	X(RP_ERR_NOT_AUTHENTICATED, 1001, "not_authenticated",                \
	    "not authenticated")                                              \
	X(RP_ERR_WRONG_STATE, 1002, "wrong_state",                            \
	    "method not allowed in this connection state")                    \
	X(RP_ERR_FORBIDDEN, 1003, "forbidden", "forbidden by policy")         \
	X(RP_ERR_MACHINE_OFFLINE, 1004, "machine_offline", "machine offline") \
	X(RP_ERR_DIRECTORY_UNAVAILABLE, 1005, "directory_unavailable",        \
	    "directory unavailable")                                          \
	X(RP_ERR_TICKET_EXPIRED, 1006, "ticket_expired", "ticket expired")    \
	X(RP_ERR_DECLINED, 1007, "declined", "declined")                      \
	X(RP_ERR_RATE_LIMITED, 1008, "rate_limited", "rate limited")          \
	X(RP_ERR_AUDIT_UNAVAILABLE, 1009, "audit_unavailable",                \
	    "audit unavailable")                                              \
	X(RP_ERR_AUTH_FAILED, 1010, "auth_failed", "authentication failed")   \
	X(RP_ERR_VERSION, 1011, "unsupported_version",                        \
	    "unsupported protocol version")                                   \
	X(RP_ERR_NOT_FOUND, 1012, "not_found", "not found")                   \
	X(RP_ERR_TIMEOUT, 1013, "timeout", "timed out")                       \
	X(RP_ERR_TICKET_USED, 1014, "ticket_used", "ticket already used")     \
	X(RP_ERR_CLOSED, 1015, "connection_closed", "connection closed")      \
	X(RP_ERR_UNKNOWN_MACHINE, 1016, "unknown_machine", "unknown machine") \
	X(RP_ERR_BUSY, 1017, "busy", "resource busy")                         \
	X(RP_ERR_LINE_TOO_LONG, 1018, "line_too_long", "line too long")       \
	X(RP_ERR_IO, 1019, "io_error", "input/output error")                  \
	X(RP_ERR_CONFIG, 1020, "config_error", "configuration error")         \
	X(RP_ERR_NOMEM, 1021, "out_of_memory", "out of memory")

enum rp_err {
#define RP_X_ENUM(e, code, name, msg) e = code,
	RP_ERR_LIST(RP_X_ENUM)
#undef RP_X_ENUM
};

/* Stable name of a code ("forbidden"), "unknown_error" if not listed. */
const char *rp_err_name(int code);
/* Default human message ("forbidden by policy"). */
const char *rp_err_message(int code);
/* Code for a name, or RP_ERR_INTERNAL when unknown. */
int rp_err_from_name(const char *name);

#endif
