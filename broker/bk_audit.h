/*
 * bk_audit.h - the audit trail: one JSON event per line, hash-chained.
 *
 * Line format (compact JSON, keys in this order, see docs/AUDIT.md):
 *
 *   {"seq":12,"time":"2026-11-22T03:04:05.678Z","event":"ticket_created",
 *    <fields in the caller's order>,"prev":"<64 hex>"}
 *
 * seq counts from 1; prev is the hex SHA-256 of the previous line's bytes
 * (without its '\n'), 64 zeros on a trail's first line. Opening an existing
 * file resumes seq and the chain from its last line, and refuses a file whose
 * last line is torn or not a valid event. Each line is written with one
 * write(2) on an O_APPEND descriptor, then fdatasync'd (agent presence events
 * in batches: see bk_audit_sync and docs/AUDIT.md), and optionally copied to
 * syslog (authpriv).
 *
 * Fail closed: when a line cannot be written, bk_audit_ok() turns 0, the
 * failure is logged once, and every later bk_audit_write() returns
 * RP_ERR_AUDIT_UNAVAILABLE without writing until bk_audit_reopen() succeeds.
 * The broker must check bk_audit_ok() before creating an offer and refuse it
 * with RP_ERR_AUDIT_UNAVAILABLE.
 *
 * Never put secrets in fields: members named "secret", "psk" or "password"
 * (at any depth) are replaced by "(redacted)" and a warning is logged.
 */
#ifndef BK_AUDIT_H
#define BK_AUDIT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct bk_ticket;

#define BK_AUDIT_LINE_MAX 65536 /* bytes, '\n' included */
#define BK_AUDIT_HASH_HEX 64

/*
 * X(enum, name, required fields). The required fields are the minimum every
 * writer must supply (checked by bk_audit_event_check, warned about by
 * bk_audit_write); docs/AUDIT.md lists the usual optional ones.
 */
#define BK_AUDIT_EVENT_LIST(X)                                                 \
	X(BK_AE_BROKER_STARTED, "broker_started", "version")                   \
	X(BK_AE_BROKER_STOPPED, "broker_stopped", "reason")                    \
	X(BK_AE_POLICY_RELOADED, "policy_reloaded", "file,result")             \
	X(BK_AE_AUTH_SUCCEEDED, "auth_succeeded", "user,mech,host")            \
	X(BK_AE_AUTH_FAILED, "auth_failed", "user,mech,host,reason")           \
	X(BK_AE_POLICY_DECISION, "policy_decision",                            \
	    "helper,machine,right,rule")                                       \
	X(BK_AE_AGENT_ONLINE, "agent_online", "machine,host")                  \
	X(BK_AE_AGENT_OFFLINE, "agent_offline", "machine,reason")              \
	X(BK_AE_AGENT_REPLACED, "agent_replaced", "machine,old_host,host")     \
	X(BK_AE_OFFER_CREATED, "offer_created", "ticket,helper,machine,mode")  \
	X(BK_AE_TICKET_CREATED, "ticket_created",                              \
	    "ticket,helper,helper_host,machine,mode,duration_s,"               \
	    "reverse_connect,addresses,expires_at")                            \
	X(BK_AE_OFFER_DECLINED, "offer_declined", "ticket,machine")            \
	X(BK_AE_OFFER_TIMED_OUT, "offer_timed_out", "ticket,machine")          \
	X(BK_AE_OFFER_CANCELLED, "offer_cancelled", "ticket,helper")           \
	X(BK_AE_SESSION_ACCEPTED, "session_accepted",                          \
	    "ticket,user,accepted_at")                                         \
	X(BK_AE_SESSION_CONNECTED, "session_connected",                        \
	    "ticket,from_fqdn,to_fqdn,user,addresses")                         \
	X(BK_AE_SESSION_DISCONNECTED, "session_disconnected",                  \
	    "ticket,session_seconds")                                          \
	X(BK_AE_CONTROL_ACCEPTED, "control_accepted", "ticket,user,start")     \
	X(BK_AE_CONTROL_ENDED, "control_ended", "ticket,start,end,duration_s") \
	X(BK_AE_FILE_TRANSFER, "file_transfer",                                \
	    "ticket,start,end,result,name,size")                               \
	X(BK_AE_TICKET_EXPIRED, "ticket_expired", "ticket")                    \
	X(BK_AE_TICKET_REVOKED, "ticket_revoked", "ticket,user")               \
	X(BK_AE_TICKET_DELETED, "ticket_deleted", "ticket")                    \
	X(BK_AE_TICKET_REFUSED, "ticket_refused", "ticket,reason,host")        \
	X(BK_AE_TICKET_PARSE_FAILED, "ticket_parse_failed", "host,reason")     \
	X(BK_AE_AUDIT_CONTINUED, "audit_continued",                            \
	    "prev_file_seq,prev_file_hash")                                    \
	X(BK_AE_CONTROL_DECLINED, "control_declined", "ticket,reason")         \
	X(BK_AE_RELAY_STARTED, "relay_started", "ticket,helper_host,host")     \
	X(BK_AE_RELAY_ENDED, "relay_ended",                                    \
	    "ticket,reason,bytes_to_agent,bytes_to_helper,seconds")

enum bk_audit_event {
#define BK_X_ENUM(e, name, req) e,
	BK_AUDIT_EVENT_LIST(BK_X_ENUM)
#undef BK_X_ENUM
	    BK_AE_COUNT
};

struct bk_audit;

const char *bk_audit_event_name(enum bk_audit_event ev);
int bk_audit_event_parse(const char *name); /* -1 when unknown */
/* Comma-separated required field names of ev ("" if none). */
const char *bk_audit_event_required(enum bk_audit_event ev);
/* 0 if fields (may be NULL) has every required member, else -1 + why. */
int bk_audit_event_check(
    enum bk_audit_event ev, const json_t *fields, char *why, size_t whylen);

/*
 * Opens (creates 0600) the trail at path and resumes from its last line.
 * to_syslog: copy every line to syslog(LOG_AUTHPRIV | LOG_NOTICE).
 * Returns NULL with err filled when the file cannot be opened or its last
 * line is torn or invalid ("audit.log: last line 812 is torn (no newline):
 * repair or move the file").
 */
struct bk_audit *bk_audit_open(
    const char *path, int to_syslog, char *err, size_t errlen);
/*
 * Starts the thread that syncs the file (one fdatasync for every line
 * written while the previous one ran), so that writing a line never waits
 * for the disk. Until then every line is synced as it is written. Start it
 * after any fork() (daemonize): a thread does not survive one. Returns 0,
 * or -1 with err filled.
 */
int bk_audit_start_sync(struct bk_audit *a, char *err, size_t errlen);
/*
 * Writes one event. fields is an object (or NULL) whose reference is
 * stolen. Returns RP_OK, or RP_ERR_AUDIT_UNAVAILABLE when the line was not
 * written (and bk_audit_ok() is now 0).
 */
int bk_audit_write(struct bk_audit *a, enum bk_audit_event ev, json_t *fields);
/* 1 while the trail is writable; 0 after a failure until a reopen. */
int bk_audit_ok(const struct bk_audit *a);
/*
 * Closes and reopens the path (SIGHUP, after logrotate moved the file). If
 * the file at path is now empty and a chain was in progress, the new file
 * starts with an audit_continued event linking it to the old file's last
 * line (seq and prev continue). On success bk_audit_ok() is 1 again.
 * Returns 0, or -1 with err filled (the trail then stays unavailable).
 */
int bk_audit_reopen(struct bk_audit *a, char *err, size_t errlen);
void bk_audit_close(struct bk_audit *a); /* NULL is fine */

/* Sync lines to disk (default 1). 0 is for benchmarks and tests. */
void bk_audit_set_sync(struct bk_audit *a, int on);
/*
 * Every line is written (write(2)) before bk_audit_write returns and synced
 * by the trail's own thread as soon as possible (group commit: one
 * fdatasync covers every line written meanwhile), so the event loop never
 * waits for the disk. A failed sync closes the trail (bk_audit_ok() 0).
 * bk_audit_sync syncs now, on the caller's thread (shutdown, tests).
 * Returns RP_OK or RP_ERR_AUDIT_UNAVAILABLE.
 */
int bk_audit_sync(struct bk_audit *a);
/*
 * An observer sees every event passed to bk_audit_write (fields borrowed,
 * may be NULL), whether or not the line could be written: the metrics
 * count offer outcomes and authentication failures from it. One observer
 * per trail; fn NULL removes it.
 */
typedef void (*bk_audit_observer_fn)(
    void *arg, enum bk_audit_event ev, const json_t *fields);
void bk_audit_set_observer(
    struct bk_audit *a, bk_audit_observer_fn fn, void *arg);
/* seq of the last line written (0 for an empty trail). */
uint64_t bk_audit_seq(const struct bk_audit *a);
/* Hex SHA-256 of the last line (64 zeros for an empty trail). */
void bk_audit_last_hash(
    const struct bk_audit *a, char out[BK_AUDIT_HASH_HEX + 1]);

/*
 * The usual ticket members for an event, never the secret:
 * {"ticket","helper","helper_host","machine","mode"}. New reference or NULL.
 */
json_t *bk_audit_ticket_fields(const struct bk_ticket *t);

/*
 * Verification. A verifier is fed lines in order (several files in rotation
 * order may be fed to one verifier: continuity across them is checked).
 */
struct bk_audit_verifier {
	unsigned long lines;    /* lines accepted so far */
	uint64_t seq;           /* seq of the last line, 0 before the first */
	unsigned char hash[32]; /* SHA-256 of the last line */
	int started;            /* a line has been accepted */
};

void bk_audit_verifier_init(struct bk_audit_verifier *v);
/*
 * Checks one line (without its '\n', len bytes, may hold NULs) against the
 * chain so far: valid JSON object, keys seq/time/event/prev present and
 * typed, seq = previous + 1, time in "YYYY-MM-DDTHH:MM:SS.mmmZ", event a
 * lower-case name, prev = SHA-256 of the previous line. A trail's first line
 * must have seq 1 and a zero prev, or be an audit_continued event whose
 * prev_file_hash/prev_file_seq match its own prev and seq - 1. Returns 0, or
 * -1 with why ("seq 5 expected 4") and the verifier unchanged.
 */
int bk_audit_verify_line(struct bk_audit_verifier *v, const char *line,
    size_t len, char *why, size_t whylen);
/*
 * Verifies a whole buffer (a file's contents) with v. On failure returns -1
 * and sets *bad_line (1-based, counted within buf) and why ("line 4: seq 5
 * expected 4"); a last line without '\n' is "truncated". v->lines counts
 * accepted lines. bad_line may be NULL.
 */
int bk_audit_verify_buf(struct bk_audit_verifier *v, const char *buf,
    size_t len, unsigned long *bad_line, char *why, size_t whylen);
/*
 * Verifies a file, streaming, lines up to BK_AUDIT_LINE_MAX. Returns 0 with
 * *lines set, -1 with *bad_line and why ("line 17: prev hash does not match
 * line 16"), or -2 when the file cannot be read (why = "path: strerror").
 */
int bk_audit_verify_file(const char *path, unsigned long *lines,
    unsigned long *bad_line, char *why, size_t whylen);
/* The same, continuing the chain held by v (files in rotation order). */
int bk_audit_verify_file_v(struct bk_audit_verifier *v, const char *path,
    unsigned long *bad_line, char *why, size_t whylen);

#endif
