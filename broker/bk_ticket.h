/*
 * bk_ticket.h - expert tickets: the record the broker issues when an offer
 * is allowed by policy, and its state machine.
 *
 * A ticket carries a random 128-bit id (32 hex characters, public: it names
 * the ticket in ticket.list, offer.update and the audit trail) and a random
 * 256-bit secret (private: the TLS 1.3 external PSK shared by the helper's
 * listener and the agent). The secret never appears in logs, lists, errors
 * or the audit trail: bk_ticket_to_json() leaves it out unless explicitly
 * asked, and only ticket.connect (broker -> agent) and the offer.create
 * reply (broker -> helper) may ask.
 *
 * Times are the broker's clock (unix seconds): like the seed's novice side,
 * the issuer's clock is the only one that decides expiry.
 *
 * States:
 *
 *   offered -> prompting -> accepted -> connected -> ended
 *                        -> declined
 *                        -> timed_out
 *   any open state -> expired   (expires_at reached)
 *                  -> cancelled (helper: offer.cancel)
 *                  -> revoked   (novice: ticket.expire; operator:
 *                                rabrokerctl expire)
 *
 * Open states are offered, prompting, accepted and connected; the others
 * are final. expires_at bounds the whole ticket, a connected session
 * included: when it passes, the session is ended as expired.
 * A ticket is single use: bk_ticket_use() moves accepted -> connected once.
 */
#ifndef BK_TICKET_H
#define BK_TICKET_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define BK_TICKET_ID_BYTES 16
#define BK_TICKET_ID_LEN (2 * BK_TICKET_ID_BYTES) /* hex chars, no NUL */
#define BK_TICKET_SECRET_BYTES 32
#define BK_TICKET_MAX_ADDRS 16
#define BK_TICKET_ADDR_MAX 64  /* "[ipv6]:port" fits in 54 bytes */
#define BK_TICKET_STR_MAX 1024 /* account, host, machine, rule */

/* X(enum, name, open) */
#define BK_TICKET_STATE_LIST(X)            \
	X(BK_TS_OFFERED, "offered", 1)     \
	X(BK_TS_PROMPTING, "prompting", 1) \
	X(BK_TS_ACCEPTED, "accepted", 1)   \
	X(BK_TS_CONNECTED, "connected", 1) \
	X(BK_TS_DECLINED, "declined", 0)   \
	X(BK_TS_TIMED_OUT, "timed_out", 0) \
	X(BK_TS_ENDED, "ended", 0)         \
	X(BK_TS_EXPIRED, "expired", 0)     \
	X(BK_TS_CANCELLED, "cancelled", 0) \
	X(BK_TS_REVOKED, "revoked", 0)

enum bk_ticket_state {
#define BK_X_ENUM(e, name, open) e,
	BK_TICKET_STATE_LIST(BK_X_ENUM)
#undef BK_X_ENUM
	    BK_TS_COUNT
};

enum bk_ticket_mode { BK_MODE_VIEW = 0, BK_MODE_CONTROL = 1 };

struct bk_ticket {
	char id[BK_TICKET_ID_LEN + 1]; /* lower-case hex, NUL-terminated */
	uint8_t secret[BK_TICKET_SECRET_BYTES];
	char *helper;      /* account as authenticated: "CORP\\alice" */
	char *helper_host; /* helper's peer address as the broker saw it */
	char *addrs[BK_TICKET_MAX_ADDRS]; /* connect-back "ip:port" list */
	size_t naddrs;
	char *machine; /* target machine FQDN */
	enum bk_ticket_mode mode;
	char *rule; /* text of the policy rule that granted the offer */
	int control_granted;   /* novice accepted control (second consent) */
	int64_t control_since; /* start of control (broker clock); 0 = none */
	enum bk_ticket_state state;
	int64_t created_at;
	int64_t expires_at;
	int64_t accepted_at; /* 0 = not yet */
	int64_t connected_at;
	int64_t ended_at; /* set on entering any final state */
};

/* What the broker knows when it creates a ticket. Strings are copied. */
struct bk_ticket_params {
	const char *helper;
	const char *helper_host;
	const char *const *addrs;
	size_t naddrs;
	const char *machine;
	enum bk_ticket_mode mode;
	const char *rule;
	int64_t duration_s;     /* requested; <= 0 means "the maximum" */
	int64_t max_duration_s; /* policy cap, > 0 */
};

/*
 * Creates a ticket in state offered with fresh id and secret
 * (gnutls_rnd(GNUTLS_RND_KEY)); expires_at = now + min(duration, max).
 * Validates every field (non-empty strings without control characters and
 * at most BK_TICKET_STR_MAX bytes, 1..BK_TICKET_MAX_ADDRS valid addresses).
 * Returns RP_OK, RP_ERR_INVALID_PARAMS (err says which field and why),
 * RP_ERR_NOMEM or RP_ERR_INTERNAL (no randomness).
 */
int bk_ticket_create(const struct bk_ticket_params *p, int64_t now,
    struct bk_ticket **out, char *err, size_t errlen);
/* Deep copy; NULL on allocation failure. */
struct bk_ticket *bk_ticket_dup(const struct bk_ticket *t);
/* Wipes the secret, frees the strings and the record. NULL is fine. */
void bk_ticket_free(struct bk_ticket *t);
/* An empty record (all strings NULL) for backends that fill fields in. */
struct bk_ticket *bk_ticket_alloc(void);

/* "ip:port": IPv4 dotted quad or [IPv6], port 1..65535. 1 if valid. */
int bk_ticket_addr_valid(const char *s);
/* 1 if s is 32 lower-case hex characters (a well-formed ticket id). */
int bk_ticket_id_valid(const char *s);

const char *bk_ticket_state_name(enum bk_ticket_state s);
/* Returns the state or -1 when unknown. */
int bk_ticket_state_parse(const char *s);
const char *bk_ticket_mode_name(enum bk_ticket_mode m);
int bk_ticket_mode_parse(const char *s); /* -1 when unknown */
/* 1 for offered, prompting, accepted, connected. */
int bk_ticket_is_open(const struct bk_ticket *t);
int bk_ticket_state_is_open(enum bk_ticket_state s);

/*
 * Moves t to state `to` if the state machine allows it and stamps the
 * matching time (accepted_at, connected_at, ended_at) with now. Returns
 * RP_OK or RP_ERR_WRONG_STATE (t unchanged) for an illegal move.
 */
int bk_ticket_transition(
    struct bk_ticket *t, enum bk_ticket_state to, int64_t now);
/* 1 if the machine allows from -> to. */
int bk_ticket_can_transition(
    enum bk_ticket_state from, enum bk_ticket_state to);

/*
 * If t is open and now >= expires_at, moves it to expired and returns 1;
 * else returns 0.
 */
int bk_ticket_expire_if_due(struct bk_ticket *t, int64_t now);

/*
 * Single use: the reverse connection (or relay join) presents the ticket.
 * accepted and not due -> connected, RP_OK.
 * connected/ended -> RP_ERR_TICKET_USED. Due (now >= expires_at, the ticket
 * is moved to expired), expired, revoked or cancelled ->
 * RP_ERR_TICKET_EXPIRED. declined/timed_out -> RP_ERR_DECLINED.
 * offered/prompting (no consent yet) -> RP_ERR_WRONG_STATE.
 * Callers persist t and audit ticket_refused on any error.
 */
int bk_ticket_use(struct bk_ticket *t, int64_t now);

/*
 * Constant-time comparison: 1 when equal. Runs in time that depends only on
 * the lengths, never on the contents (use for secrets and PSKs).
 */
int bk_ct_equal(const void *a, size_t alen, const void *b, size_t blen);
/* 1 if secret (len bytes) is t's secret; constant time. */
int bk_ticket_secret_matches(
    const struct bk_ticket *t, const void *secret, size_t len);
/* Writes the secret as 64 lower-case hex characters + NUL into out[65]. */
void bk_ticket_secret_hex(
    const struct bk_ticket *t, char out[2 * BK_TICKET_SECRET_BYTES + 1]);

/*
 * JSON view: {"id","helper","helper_host","addresses":[...],"machine",
 * "mode","rule","state","control_granted","control_since","created_at",
 * "expires_at","accepted_at","connected_at","ended_at"} (times as unix
 * seconds, absent
 * when 0), plus "secret" (hex) only when include_secret is non-zero.
 * ticket.list, offer.update and the audit trail use include_secret = 0.
 * Returns a new reference or NULL on allocation failure.
 */
json_t *bk_ticket_to_json(const struct bk_ticket *t, int include_secret);

#endif
