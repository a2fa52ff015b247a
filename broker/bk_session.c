/*
 * bk_session.c - the first messages of every connection: hello (version and
 * role; agents are identified by their verified machine certificate, and
 * looked up in the directory), ping, and the helpers' SASL exchange
 * (auth.start / auth.step through az_sasl).
 *
 * Handlers that wait for the directory hold a reference to the connection
 * and to the request id, mark the peer busy, and answer from the
 * completion; if the connection died meanwhile the answer is dropped.
 *
 * Failed logins are counted per client address (not per account, which
 * would let anybody lock anybody out), an IPv6 client per /64 (one host
 * has a whole /64 to pick addresses from): after max_failures failures
 * within failure_window seconds from one address, auth.start answers
 * rate_limited until the window has passed. The table is bounded; when the
 * slots a new address may use are all live, the one whose window started
 * first is dropped (a flood of addresses cannot stop counting; logged at
 * most once a minute).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "az_dir.h"
#include "az_sasl.h"
#include "bk.h"
#include "bk_audit.h"
#include "bk_config.h"
#include "bk_methods.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_log.h"

#define BROKER_SOFTWARE "rabrokerd/0.1"
#define PROTO_VERSION 1
#define TLS_SSF 128 /* TLS 1.2+ with AEAD ciphers only */

#define RL_SLOTS 4096
#define RL_PROBE 32

/* --- per-address failure counter ------------------------------------------ */

#define RL_WARN_S 60 /* one "table full" log line per minute at most */

struct rl_entry {
	char ip[48]; /* bk_addrkey_text: an IPv4 address or an IPv6 /64 */
	int64_t first;
	unsigned count;
};

struct bk_ratelimit {
	struct rl_entry e[RL_SLOTS];
	int64_t warned;         /* last eviction log line */
	unsigned long nevicted; /* evictions since */
};

static unsigned
rl_hash(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/*
 * The live entry for ip, or (insert) a new one in a free or expired slot,
 * or else in place of the probed entry whose window started first: under
 * a flood of addresses the oldest counts are lost, never the new ones.
 */
static struct rl_entry *
rl_find(struct bk_ratelimit *rl, const char *ip, int64_t now, int64_t win,
    int insert)
{
	struct rl_entry *freeslot = NULL, *oldest = NULL;
	unsigned h = rl_hash(ip);

	if (rl == NULL)
		return NULL;
	for (unsigned i = 0; i < RL_PROBE; i++) {
		struct rl_entry *e = &rl->e[(h + i) % RL_SLOTS];
		int live = e->count > 0 && now - e->first < win;
		if (live && strcmp(e->ip, ip) == 0)
			return e;
		if (!live && freeslot == NULL)
			freeslot = e;
		if (live && (oldest == NULL || e->first < oldest->first))
			oldest = e;
	}
	if (!insert)
		return NULL;
	if (freeslot == NULL) {
		freeslot = oldest;
		rl->nevicted++;
		if (now - rl->warned >= RL_WARN_S) {
			log_warnx("auth failure table full: %lu older "
			          "entr%s dropped (last for %s)",
			    rl->nevicted, rl->nevicted == 1 ? "y" : "ies",
			    oldest->ip);
			rl->warned = now;
			rl->nevicted = 0;
		}
	}
	memset(freeslot, 0, sizeof(*freeslot));
	snprintf(freeslot->ip, sizeof(freeslot->ip), "%s", ip);
	freeslot->first = now;
	return freeslot;
}

unsigned
bk_ratelimit_get(
    struct bk_ratelimit *rl, const char *key, int64_t now, unsigned window_s)
{
	struct rl_entry *e = rl_find(rl, key, now, window_s, 0);

	return e != NULL ? e->count : 0;
}

unsigned
bk_ratelimit_add(
    struct bk_ratelimit *rl, const char *key, int64_t now, unsigned window_s)
{
	struct rl_entry *e = rl_find(rl, key, now, window_s, 1);

	if (e == NULL)
		return 0;
	if (e->count < UINT32_MAX)
		e->count++;
	return e->count;
}

static int
rl_blocked(struct bk_ctx *ctx, const struct bk_peer *p)
{
	char ip[48];

	if (ctx->cfg->max_failures == 0)
		return 0;
	bk_addrkey_text(&p->akey, ip, sizeof(ip));
	return bk_ratelimit_get(ctx->authrl, ip, bk_now(),
	           ctx->cfg->failure_window_s) >= ctx->cfg->max_failures;
}

static void
rl_fail(struct bk_ctx *ctx, const struct bk_peer *p)
{
	char ip[48];

	if (ctx->cfg->max_failures == 0)
		return;
	bk_addrkey_text(&p->akey, ip, sizeof(ip));
	bk_ratelimit_add(ctx->authrl, ip, bk_now(), ctx->cfg->failure_window_s);
}

struct bk_ratelimit *
bk_ratelimit_new(void)
{
	return calloc(1, sizeof(struct bk_ratelimit));
}

void
bk_ratelimit_free(struct bk_ratelimit *rl)
{
	free(rl);
}

/* --- pending asynchronous answers ------------------------------------------ */

struct pending {
	struct rp_conn *c;
	json_t *id;
	struct bk_ctx *ctx;
	char user[128]; /* who tried to log in (for the audit), never secrets */
};

static struct pending *
pending_new(struct rp_conn *c, json_t *id, struct bk_ctx *ctx)
{
	struct pending *pd = calloc(1, sizeof(*pd));

	if (pd == NULL)
		return NULL;
	rp_conn_ref(c);
	pd->c = c;
	pd->id = id ? json_incref(id) : NULL;
	pd->ctx = ctx;
	return pd;
}

static void
pending_free(struct pending *pd)
{
	json_decref(pd->id);
	rp_conn_unref(pd->c);
	free(pd);
}

void
bk_session_peer_gone(struct bk_peer *p)
{
	/* Freeing the SASL session drops a completion in flight (az_sasl.h),
	 * so the answer we owed will never be asked for: free it here. */
	if (p->sasl != NULL)
		az_sasl_sess_free(p->sasl);
	p->sasl = NULL;
	if (p->auth_pending != NULL) {
		struct pending *pd = p->auth_pending;
		p->auth_pending = NULL;
		json_decref(pd->id);
		rp_conn_unref(pd->c);
		free(pd);
	}
}

/* The peer if the connection is still there to answer. */
static struct bk_peer *
pending_peer(struct pending *pd)
{
	if (!rp_conn_is_open(pd->c))
		return NULL;
	return bk_peer_of(pd->c);
}

/* --- hello ------------------------------------------------------------------ */

static int
fqdn_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 253)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' &&
		    *s != '_')
			return 0;
	return 1;
}

static void
agent_ready(struct rp_conn *c, json_t *id, struct bk_peer *p)
{
	p->role = BK_ROLE_AGENT;
	rp_conn_set_state(c, RP_ST_AGENT);
	/* Identified by a machine certificate of our CA: no longer one of
	 * the anonymous connections limited per address. */
	bk_server_logged_in(p);
	log_info("%s: agent %s authenticated by certificate%s%s", p->addr,
	    p->machine, p->computer ? ", directory object " : "",
	    p->computer && p->computer->dn ? p->computer->dn : "");
	rp_conn_reply(c, id,
	    json_pack("{s:i, s:s, s:s, s:s}", "version", PROTO_VERSION,
	        "broker", BROKER_SOFTWARE, "role", "agent", "identity",
	        p->machine));
}

static void
computer_done(int code, const struct az_entry *e, const char *msg, void *arg)
{
	struct pending *pd = arg;
	struct bk_ctx *ctx = pd->ctx;
	struct bk_peer *p = pending_peer(pd);

	if (p == NULL)
		goto out;
	p->busy = 0;
	if (code == 0 && e != NULL) {
		p->computer = az_entry_dup(e);
		agent_ready(pd->c, pd->id, p);
	} else if (code == RP_ERR_DIRECTORY_UNAVAILABLE ||
	    code == RP_ERR_CLOSED || code == RP_ERR_INTERNAL) {
		if (ctx->cfg->require_computer_object) {
			log_warnx("%s: agent %s: directory unavailable (%s)",
			    p->addr, p->machine, msg ? msg : "");
			rp_conn_error(pd->c, pd->id,
			    RP_ERR_DIRECTORY_UNAVAILABLE, NULL, NULL);
		} else {
			log_warnx("%s: agent %s: directory unavailable (%s); "
			          "accepted without its directory object",
			    p->addr, p->machine, msg ? msg : "");
			agent_ready(pd->c, pd->id, p);
		}
	} else {
		if (ctx->cfg->require_computer_object) {
			log_warnx("%s: agent %s has a valid certificate but no "
			          "computer object in the directory: refused",
			    p->addr, p->machine);
			rp_conn_error(
			    pd->c, pd->id, RP_ERR_UNKNOWN_MACHINE, NULL, NULL);
		} else {
			log_info("%s: agent %s: no computer object (%s)",
			    p->addr, p->machine, msg ? msg : "");
			agent_ready(pd->c, pd->id, p);
		}
	}
out:
	pending_free(pd);
}

static void
hello_agent(
    struct rp_conn *c, json_t *id, struct bk_ctx *ctx, struct bk_peer *p)
{
	const char *cid = rp_conn_peer_id(c);
	struct pending *pd;
	int rc;

	if (cid == NULL) {
		log_info("%s: hello as agent without a verified client "
		         "certificate: refused",
		    p->addr);
		rp_conn_error(c, id, RP_ERR_NOT_AUTHENTICATED,
		    "role agent needs a verified machine certificate", NULL);
		return;
	}
	if (!fqdn_ok(cid)) {
		log_warnx("%s: certificate identity \"%.64s\" is not a host "
		          "name: refused",
		    p->addr, cid);
		rp_conn_error(c, id, RP_ERR_NOT_AUTHENTICATED,
		    "the certificate does not name a machine", NULL);
		return;
	}
	free(p->machine);
	p->machine = strdup(cid);
	for (char *q = p->machine; q && *q; q++)
		*q = (char)tolower((unsigned char)*q);
	if (p->machine == NULL) {
		rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
		return;
	}
	if (ctx->dir == NULL) {
		agent_ready(c, id, p);
		return;
	}
	if ((pd = pending_new(c, id, ctx)) == NULL) {
		rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
		return;
	}
	p->busy = 1;
	rc = az_dir_lookup_computer(ctx->dir, p->machine, computer_done, pd);
	if (rc != 0) {
		/* Refused at once: the callback will not run. */
		computer_done(rc, NULL, "directory queue full", pd);
	}
}

void
bk_h_hello(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_peer *p = bk_peer_of(c);
	json_t *v = json_object_get(params, "version");
	const char *role = json_string_value(json_object_get(params, "role"));

	if (p == NULL)
		return;
	if (p->busy) {
		rp_conn_error(
		    c, id, RP_ERR_WRONG_STATE, "hello in progress", NULL);
		return;
	}
	if (!json_is_integer(v)) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "version: expected an integer", NULL);
		return;
	}
	if (json_integer_value(v) != PROTO_VERSION) {
		log_info(
		    "%s: hello with unsupported protocol version", p->addr);
		rp_conn_error(c, id, RP_ERR_VERSION,
		    "unsupported protocol version: this broker speaks 1",
		    json_pack("{s:s, s:[i]}", "reason", "unsupported_version",
		        "supported", PROTO_VERSION));
		return;
	}
	if (ctx->draining) {
		rp_conn_error(c, id, RP_ERR_BUSY, "broker shutting down", NULL);
		return;
	}
	if (role == NULL) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "role must be \"agent\" or \"helper\"", NULL);
		return;
	}
	if (strcmp(role, "agent") == 0) {
		hello_agent(c, id, ctx, p);
		return;
	}
	if (strcmp(role, "helper") != 0) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "role must be \"agent\" or \"helper\"", NULL);
		return;
	}
	if (p->sasl == NULL && ctx->sasl != NULL)
		p->sasl = az_sasl_sess_new(
		    ctx->sasl, rp_conn_peer_id(c), TLS_SSF, NULL, p->addr);
	p->role = BK_ROLE_HELPER;
	rp_conn_set_state(c, RP_ST_HELLO);
	rp_conn_reply(c, id,
	    json_pack("{s:i, s:s, s:s, s:o}", "version", PROTO_VERSION,
	        "broker", BROKER_SOFTWARE, "role", "helper", "mechanisms",
	        p->sasl ? az_sasl_mechanisms_json(p->sasl) : json_array()));
}

/* --- ping -------------------------------------------------------------------- */

void
bk_h_ping(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_peer *p = bk_peer_of(c);

	if (p != NULL && p->agent != NULL)
		p->agent->last_seen = bk_now();
	if (id != NULL)
		rp_conn_reply(
		    c, id, json_pack("{s:I}", "now", (json_int_t)bk_now()));
}

/* --- auth.start / auth.step -------------------------------------------------- */

/* PLAIN is authzid NUL authcid NUL password: keep authcid for the audit
 * (never the password). */
static void
plain_user(const unsigned char *b, size_t len, char *out, size_t outlen)
{
	const unsigned char *z1 = memchr(b, 0, len), *z2;
	size_t n, j = 0;

	out[0] = '\0';
	if (z1 == NULL)
		return;
	z1++;
	z2 = memchr(z1, 0, len - (size_t)(z1 - b));
	if (z2 == NULL)
		return;
	n = (size_t)(z2 - z1);
	for (size_t i = 0; i < n && j + 1 < outlen; i++)
		out[j++] = (z1[i] < 0x20 || z1[i] == 0x7f) ? '?' : (char)z1[i];
	out[j] = '\0';
}

static void
auth_failed(
    struct bk_ctx *ctx, struct bk_peer *p, const char *user, const char *reason)
{
	rl_fail(ctx, p);
	log_info("%s: authentication failed (user \"%s\", %s): %s", p->addr,
	    user, p->mech, reason);
	bk_audit(ctx, BK_AE_AUTH_FAILED,
	    json_pack("{s:s, s:s, s:s, s:s}", "user", user, "mech", p->mech,
	        "host", p->addr, "reason", reason));
}

static void
auth_done(enum az_sasl_status st, int code, const unsigned char *challenge,
    size_t chlen, const struct az_entry *user, const char *msg, void *arg)
{
	struct pending *pd = arg;
	struct bk_ctx *ctx = pd->ctx;
	struct bk_peer *p = bk_peer_of(pd->c);

	if (p != NULL && p->auth_pending == pd)
		p->auth_pending = NULL;
	if (p == NULL || !rp_conn_is_open(pd->c))
		goto out;
	p->busy = 0;
	switch (st) {
	case AZ_SASL_CONTINUE:
		rp_conn_set_state(pd->c, RP_ST_AUTHING);
		rp_conn_reply(pd->c, pd->id,
		    az_sasl_result_json(st, challenge, chlen, NULL));
		break;
	case AZ_SASL_OK:
		p->user = az_entry_dup(user);
		if (p->user == NULL) {
			rp_conn_error(pd->c, pd->id, RP_ERR_NOMEM, NULL, NULL);
			break;
		}
		p->role = BK_ROLE_HELPER;
		ctx->nhelpers++;
		bk_server_logged_in(p);
		rp_conn_set_state(pd->c, RP_ST_HELPER);
		log_info("%s: helper %s authenticated (%s, %zu group(s))",
		    p->addr, p->user->account, p->mech, p->user->ngroups);
		bk_audit(ctx, BK_AE_AUTH_SUCCEEDED,
		    json_pack("{s:s, s:s, s:s, s:s?}", "user", p->user->account,
		        "mech", p->mech, "host", p->addr, "dn", p->user->dn));
		rp_conn_reply(
		    pd->c, pd->id, az_sasl_result_json(st, NULL, 0, p->user));
		break;
	case AZ_SASL_FAIL:
	default:
		rp_conn_set_state(pd->c, RP_ST_HELLO);
		if (code == RP_ERR_AUTH_FAILED || code == 0)
			auth_failed(
			    ctx, p, pd->user, msg ? msg : "auth_failed");
		else
			log_warnx("%s: authentication could not complete: %s "
			          "(%s)",
			    p->addr, rp_err_name(code), msg ? msg : "");
		rp_conn_error(pd->c, pd->id, code ? code : RP_ERR_AUTH_FAILED,
		    code == RP_ERR_AUTH_FAILED ? NULL : msg, NULL);
		break;
	}
out:
	pending_free(pd);
}

/* Common tail of auth.start / auth.step once the call was made. */
static void
auth_refused(struct rp_conn *c, json_t *id, struct bk_ctx *ctx,
    struct bk_peer *p, int rc, const char *user)
{
	const char *why = az_sasl_sess_errmsg(p->sasl);

	if (rc == RP_ERR_AUTH_FAILED) {
		rp_conn_set_state(c, RP_ST_HELLO);
		auth_failed(ctx, p, user, why ? why : "auth_failed");
		why = NULL;
	}
	rp_conn_error(c, id, rc, why, NULL);
}

void
bk_h_auth_start(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_peer *p = bk_peer_of(c);
	const char *mech = NULL;
	unsigned char *initial = NULL;
	size_t len = 0;
	int has = 0, rc;
	char why[200];
	struct pending *pd;

	if (p == NULL)
		return;
	if (p->sasl == NULL) {
		if (ctx->sasl == NULL)
			rp_conn_error(c, id, RP_ERR_DIRECTORY_UNAVAILABLE,
			    "no directory configured: helpers cannot log in",
			    NULL);
		else
			rp_conn_error(c, id, RP_ERR_INTERNAL,
			    "authentication could not be set up", NULL);
		return;
	}
	if (az_sasl_parse_start(
	        params, &mech, &initial, &len, &has, why, sizeof(why)) != 0) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS, why, NULL);
		return;
	}
	if (!bk_config_has_mech(ctx->cfg, mech)) {
		if (initial) {
			explicit_bzero(initial, len);
			free(initial);
		}
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "mechanism not offered", NULL);
		return;
	}
	snprintf(p->mech, sizeof(p->mech), "%s", mech);
	if ((pd = pending_new(c, id, ctx)) == NULL) {
		free(initial);
		rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
		return;
	}
	if (strcasecmp(mech, "PLAIN") == 0 && initial != NULL)
		plain_user(initial, len, pd->user, sizeof(pd->user));
	else if (strcasecmp(mech, "EXTERNAL") == 0)
		snprintf(pd->user, sizeof(pd->user), "%s",
		    rp_conn_peer_id(c) ? rp_conn_peer_id(c) : "");
	if (rl_blocked(ctx, p)) {
		/* Audited (who tried, from where), not counted again. */
		log_info("%s: auth.start refused: too many failures", p->addr);
		bk_audit(ctx, BK_AE_AUTH_FAILED,
		    json_pack("{s:s, s:s, s:s, s:s}", "user", pd->user, "mech",
		        p->mech, "host", p->addr, "reason", "rate_limited"));
		if (initial) {
			explicit_bzero(initial, len);
			free(initial);
		}
		pending_free(pd);
		rp_conn_error(c, id, RP_ERR_RATE_LIMITED,
		    "too many failed logins from this address; try later",
		    NULL);
		return;
	}
	rc = az_sasl_start(p->sasl, mech, initial, len, has, auth_done, pd);
	if (initial) {
		explicit_bzero(initial, len);
		free(initial);
	}
	if (rc != 0) {
		auth_refused(c, id, ctx, p, rc, pd->user);
		pending_free(pd);
		return;
	}
	p->busy = 1;
	p->auth_pending = pd;
}

void
bk_h_auth_step(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_peer *p = bk_peer_of(c);
	unsigned char *resp = NULL;
	size_t len = 0;
	int rc;
	char why[200];
	struct pending *pd;

	if (p == NULL)
		return;
	if (p->sasl == NULL) {
		rp_conn_error(c, id, RP_ERR_WRONG_STATE, NULL, NULL);
		return;
	}
	if (az_sasl_parse_step(params, &resp, &len, why, sizeof(why)) != 0) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS, why, NULL);
		return;
	}
	if ((pd = pending_new(c, id, ctx)) == NULL) {
		free(resp);
		rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
		return;
	}
	if (strcasecmp(p->mech, "PLAIN") == 0)
		plain_user(resp, len, pd->user, sizeof(pd->user));
	rc = az_sasl_step(p->sasl, resp, len, auth_done, pd);
	explicit_bzero(resp, len);
	free(resp);
	if (rc != 0) {
		auth_refused(c, id, ctx, p, rc, pd->user);
		pending_free(pd);
		return;
	}
	p->busy = 1;
	p->auth_pending = pd;
}
