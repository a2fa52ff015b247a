/*
 * bk_agent.c - the registry of online machines: agent.register,
 * agent.sessions, one live connection per machine, offline on close, the
 * keepalive sweep, and machines.list for helpers.
 *
 * The registry is an open-addressing hash table (linear probing,
 * tombstones, FNV-1a + fmix64 on the lower-case FQDN) of pointers to struct
 * bk_agent: 100,000 machines cost one pointer slot each plus the records,
 * and lookup is a hash and a short probe. A machine's record survives a
 * replacement: the new connection takes over the same struct bk_agent, so
 * whatever the offer module points at stays valid.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "az_dir.h"
#include "az_policy.h"
#include "bk.h"
#include "bk_audit.h"
#include "bk_config.h"
#include "bk_methods.h"
#include "bk_offer.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_frame.h"
#include "rp_log.h"

#define AG_FQDN_MAX 253
#define AG_MAX_ADDRS 32
#define AG_ADDR_MAX 64
#define AG_MAX_SESSIONS 64
#define AG_SESS_ID_MAX 64
#define AG_USER_MAX 256
/* Stop adding machines to a listing past this many bytes of JSON, so the
 * reply stays well under the protocol's line limit (RP_LINE_MAX). */
#define LIST_BYTES_MAX (48 * 1024)

#define TOMB ((struct bk_agent *)(uintptr_t)1)

struct bk_agents {
	struct bk_agent **slots;
	size_t cap;   /* power of two */
	size_t count; /* live entries */
	size_t used;  /* live + tombstones */
};

static uint64_t
fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (unsigned char)tolower((unsigned char)*s);
		h *= 1099511628211ull;
	}
	/* FNV's low bits (the ones the mask keeps) mix poorly for names that
	 * differ only in a few digits: finish with murmur3's fmix64. */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

struct bk_agents *
bk_agents_new(void)
{
	struct bk_agents *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return NULL;
	a->cap = 64;
	a->slots = calloc(a->cap, sizeof(*a->slots));
	if (a->slots == NULL) {
		free(a);
		return NULL;
	}
	return a;
}

static void
usess_free(struct bk_usess *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(s[i].id);
		free(s[i].user);
		free(s[i].kind);
	}
	free(s);
}

static void
strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void
agent_free(struct bk_agent *ag)
{
	if (ag == NULL)
		return;
	free(ag->fqdn);
	free(ag->dn);
	strv_free(ag->groups, ag->ngroups);
	strv_free(ag->addresses, ag->naddresses);
	usess_free(ag->sessions, ag->nsessions);
	if (ag->conn != NULL)
		rp_conn_unref(ag->conn);
	free(ag);
}

void
bk_agents_free(struct bk_agents *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->cap; i++)
		if (a->slots[i] != NULL && a->slots[i] != TOMB)
			agent_free(a->slots[i]);
	free(a->slots);
	free(a);
}

/* Slot holding fqdn, or (insert) the first free slot on its probe path. */
static size_t
slot_of(const struct bk_agents *a, const char *fqdn, int *found)
{
	size_t mask = a->cap - 1, i = fnv1a(fqdn) & mask, first = SIZE_MAX;

	*found = 0;
	for (size_t n = 0; n < a->cap; n++, i = (i + 1) & mask) {
		struct bk_agent *ag = a->slots[i];
		if (ag == NULL)
			return first != SIZE_MAX ? first : i;
		if (ag == TOMB) {
			if (first == SIZE_MAX)
				first = i;
			continue;
		}
		if (strcasecmp(ag->fqdn, fqdn) == 0) {
			*found = 1;
			return i;
		}
	}
	return first; /* table full of tombstones: cannot happen (grow) */
}

static int
grow(struct bk_agents *a, size_t cap)
{
	struct bk_agent **ns = calloc(cap, sizeof(*ns)), **old = a->slots;
	size_t ocap = a->cap;

	if (ns == NULL)
		return -1;
	a->slots = ns;
	a->cap = cap;
	a->used = a->count;
	for (size_t i = 0; i < ocap; i++) {
		int found;
		if (old[i] == NULL || old[i] == TOMB)
			continue;
		ns[slot_of(a, old[i]->fqdn, &found)] = old[i];
	}
	free(old);
	return 0;
}

static int
agents_insert(struct bk_agents *a, struct bk_agent *ag)
{
	int found;
	size_t i;

	/* Keep the load (tombstones included) under 1/2. */
	if ((a->used + 1) * 2 > a->cap &&
	    grow(a, a->count * 4 > a->cap ? a->cap * 2 : a->cap) < 0)
		return -1;
	i = slot_of(a, ag->fqdn, &found);
	if (found)
		return -1;
	if (a->slots[i] == NULL)
		a->used++;
	a->slots[i] = ag;
	a->count++;
	return 0;
}

static void
agents_remove(struct bk_agents *a, struct bk_agent *ag)
{
	int found;
	size_t i = slot_of(a, ag->fqdn, &found);

	if (found && a->slots[i] == ag) {
		a->slots[i] = TOMB;
		a->count--;
	}
}

struct bk_agent *
bk_agents_find(struct bk_agents *a, const char *fqdn)
{
	int found;
	size_t i;

	if (a == NULL || fqdn == NULL)
		return NULL;
	i = slot_of(a, fqdn, &found);
	return found ? a->slots[i] : NULL;
}

size_t
bk_agents_count(const struct bk_agents *a)
{
	return a ? a->count : 0;
}

int
bk_agents_foreach(
    struct bk_agents *a, int (*fn)(struct bk_agent *ag, void *arg), void *arg)
{
	int rc;

	if (a == NULL)
		return 0;
	for (size_t i = 0; i < a->cap; i++) {
		struct bk_agent *ag = a->slots[i];
		if (ag == NULL || ag == TOMB || !ag->registered)
			continue;
		if ((rc = fn(ag, arg)) != 0)
			return rc;
	}
	return 0;
}

struct bk_agent *
bk_agents_add(struct bk_agents *a, const char *fqdn)
{
	struct bk_agent *ag;

	if (bk_agents_find(a, fqdn) != NULL ||
	    (ag = calloc(1, sizeof(*ag))) == NULL)
		return NULL;
	ag->fqdn = strdup(fqdn);
	for (char *q = ag->fqdn; q && *q; q++)
		*q = (char)tolower((unsigned char)*q);
	if (ag->fqdn == NULL || agents_insert(a, ag) < 0) {
		agent_free(ag);
		return NULL;
	}
	ag->registered = 1;
	ag->online_since = ag->last_seen = bk_now();
	return ag;
}

void
bk_agents_remove(struct bk_agents *a, struct bk_agent *ag)
{
	agents_remove(a, ag);
	agent_free(ag);
}

/* --- validation of what the agent reports ------------------------------ */

/* "192.0.2.42", "2001:db8::1", "192.0.2.42:5900", "[2001:db8::1]:5900". */
static int
addr_valid(const char *s)
{
	char host[AG_ADDR_MAX + 1];
	unsigned char buf[16];
	const char *port = NULL;
	size_t len = strlen(s);

	if (len == 0 || len > AG_ADDR_MAX)
		return 0;
	if (s[0] == '[') {
		const char *e = strchr(s, ']');
		if (e == NULL || e[1] != ':')
			return 0;
		memcpy(host, s + 1, (size_t)(e - s - 1));
		host[e - s - 1] = '\0';
		port = e + 2;
		if (inet_pton(AF_INET6, host, buf) != 1)
			return 0;
	} else if (inet_pton(AF_INET6, s, buf) == 1) {
		return 1;
	} else {
		const char *c = strchr(s, ':');
		size_t hl = c ? (size_t)(c - s) : len;
		memcpy(host, s, hl);
		host[hl] = '\0';
		if (inet_pton(AF_INET, host, buf) != 1)
			return 0;
		port = c ? c + 1 : NULL;
	}
	if (port != NULL) {
		char *end;
		long p;
		if (!isdigit((unsigned char)*port))
			return 0;
		p = strtol(port, &end, 10);
		if (*end != '\0' || p < 1 || p > 65535)
			return 0;
	}
	return 1;
}

/* Printable (rp_text_ok: no control or bidi characters), bounded. */
static int
text_ok(const char *s, size_t max)
{
	return rp_text_ok(s, max);
}

static int
parse_addresses(json_t *arr, char ***out, size_t *n, char *why, size_t wl)
{
	size_t i;
	json_t *v;
	char **a;

	*out = NULL;
	*n = 0;
	if (arr == NULL || json_is_null(arr))
		return 0;
	if (!json_is_array(arr)) {
		snprintf(why, wl, "addresses: expected an array");
		return -1;
	}
	if (json_array_size(arr) > AG_MAX_ADDRS) {
		snprintf(why, wl, "addresses: at most %d", AG_MAX_ADDRS);
		return -1;
	}
	a = calloc(json_array_size(arr) + 1, sizeof(*a));
	if (a == NULL)
		return -1;
	json_array_foreach(arr, i, v)
	{
		const char *s = json_string_value(v);
		if (s == NULL || !addr_valid(s)) {
			snprintf(why, wl,
			    "addresses[%zu]: expected an IP address", i);
			strv_free(a, i);
			return -1;
		}
		a[i] = strdup(s);
	}
	*out = a;
	*n = json_array_size(arr);
	return 0;
}

static int
parse_sessions(
    json_t *arr, struct bk_usess **out, size_t *n, char *why, size_t wl)
{
	size_t i;
	json_t *v;
	struct bk_usess *s;

	*out = NULL;
	*n = 0;
	if (arr == NULL || json_is_null(arr))
		return 0;
	if (!json_is_array(arr)) {
		snprintf(why, wl, "sessions: expected an array");
		return -1;
	}
	if (json_array_size(arr) > AG_MAX_SESSIONS) {
		snprintf(why, wl, "sessions: at most %d", AG_MAX_SESSIONS);
		return -1;
	}
	s = calloc(json_array_size(arr) + 1, sizeof(*s));
	if (s == NULL)
		return -1;
	json_array_foreach(arr, i, v)
	{
		const char *sid = NULL, *user = NULL, *kind = NULL;
		int locked = 0;
		if (json_unpack(v, "{s:s, s:s, s:s, s?:b}", "id", &sid, "user",
		        &user, "kind", &kind, "locked", &locked) != 0 ||
		    !text_ok(sid, AG_SESS_ID_MAX) ||
		    !text_ok(user, AG_USER_MAX) ||
		    (strcmp(kind, "graphical") != 0 &&
		        strcmp(kind, "console") != 0 &&
		        strcmp(kind, "remote") != 0)) {
			snprintf(why, wl,
			    "sessions[%zu]: expected {\"id\", \"user\", "
			    "\"kind\": graphical|console|remote, \"locked\"}",
			    i);
			usess_free(s, i);
			return -1;
		}
		s[i].id = strdup(sid);
		s[i].user = strdup(user);
		s[i].kind = strdup(kind);
		s[i].locked = locked;
	}
	*out = s;
	*n = json_array_size(arr);
	return 0;
}

static char *
lower_dup(const char *s)
{
	char *d = strdup(s);
	for (char *q = d; q && *q; q++)
		*q = (char)tolower((unsigned char)*q);
	return d;
}

/* Copies the directory's view of the machine into the record. */
static void
agent_set_computer(struct bk_agent *ag, const struct az_entry *e)
{
	free(ag->dn);
	strv_free(ag->groups, ag->ngroups);
	ag->dn = NULL;
	ag->groups = NULL;
	ag->ngroups = 0;
	if (e == NULL)
		return;
	ag->dn = e->dn ? strdup(e->dn) : NULL;
	if (e->ngroups > 0 &&
	    (ag->groups = calloc(e->ngroups, sizeof(char *))) != NULL) {
		for (size_t i = 0; i < e->ngroups; i++)
			ag->groups[i] = strdup(e->groups[i]);
		ag->ngroups = e->ngroups;
	}
}

static json_t *
sessions_json(const struct bk_agent *ag)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < ag->nsessions; i++)
		json_array_append_new(a,
		    json_pack("{s:s, s:s, s:s, s:b}", "id", ag->sessions[i].id,
		        "user", ag->sessions[i].user, "kind",
		        ag->sessions[i].kind, "locked",
		        ag->sessions[i].locked));
	return a;
}

/* --- agent.register ------------------------------------------------------ */

void
bk_h_agent_register(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_peer *p = bk_peer_of(c);
	struct bk_agent *ag;
	const char *fqdn = json_string_value(json_object_get(params, "fqdn"));
	char **addrs = NULL;
	size_t naddrs = 0, nsess = 0;
	struct bk_usess *sess = NULL;
	char why[200];

	if (p == NULL || p->machine == NULL) {
		rp_conn_error(c, id, RP_ERR_NOT_AUTHENTICATED, NULL, NULL);
		return;
	}
	if (fqdn == NULL) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "fqdn: expected a string", NULL);
		return;
	}
	for (const char *q = fqdn; *q; q++)
		if (!isalnum((unsigned char)*q) && *q != '-' && *q != '.' &&
		    *q != '_') {
			rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
			    "fqdn: not a host name", NULL);
			return;
		}
	if (strlen(fqdn) > AG_FQDN_MAX || strcasecmp(fqdn, p->machine) != 0) {
		log_warnx("agent %s (certificate %s) tried to register as "
		          "\"%.253s\": refused",
		    p->addr, p->machine, fqdn ? fqdn : "");
		snprintf(why, sizeof(why),
		    "fqdn does not match the certificate identity %s",
		    p->machine);
		rp_conn_error(c, id, RP_ERR_FORBIDDEN, why,
		    json_pack("{s:s, s:s}", "reason", "forbidden", "identity",
		        p->machine));
		return;
	}
	if (parse_addresses(json_object_get(params, "addresses"), &addrs,
	        &naddrs, why, sizeof(why)) < 0 ||
	    parse_sessions(json_object_get(params, "sessions"), &sess, &nsess,
	        why, sizeof(why)) < 0) {
		strv_free(addrs, naddrs);
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS, why, NULL);
		return;
	}

	ag = p->agent;
	if (ag == NULL &&
	    (ag = bk_agents_find(ctx->agents, p->machine)) != NULL) {
		/* A second live connection for this machine: the new one
		 * wins (the old one is probably a dead NAT mapping). */
		struct rp_conn *old = ag->conn;
		struct bk_peer *op = old ? bk_peer_of(old) : NULL;
		char oaddr[64];

		snprintf(oaddr, sizeof(oaddr), "%s", op ? op->addr : "?");
		bk_offers_agent_gone(ctx, ag);
		if (op != NULL)
			op->agent = NULL;
		log_info("agent %s: new connection from %s replaces the one "
		         "from %s",
		    ag->fqdn, p->addr, oaddr);
		bk_audit(ctx, BK_AE_AGENT_REPLACED,
		    json_pack("{s:s, s:s, s:s}", "machine", ag->fqdn,
		        "old_host", oaddr, "host", p->addr));
		rp_conn_ref(c);
		ag->conn = c;
		ag->online_since = bk_now();
		p->agent = ag;
		if (old != NULL) {
			rp_conn_close(old, "replaced by a newer connection");
			rp_conn_unref(old);
		}
		agent_set_computer(ag, p->computer);
		strv_free(ag->addresses, ag->naddresses);
		usess_free(ag->sessions, ag->nsessions);
		ag->addresses = addrs;
		ag->naddresses = naddrs;
		ag->sessions = sess;
		ag->nsessions = nsess;
		ag->last_seen = bk_now();
		bk_offers_agent_back(ctx, ag);
	} else if (ag == NULL) {
		ag = calloc(1, sizeof(*ag));
		if (ag == NULL || (ag->fqdn = lower_dup(p->machine)) == NULL ||
		    agents_insert(ctx->agents, ag) < 0) {
			agent_free(ag);
			strv_free(addrs, naddrs);
			usess_free(sess, nsess);
			rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
			return;
		}
		rp_conn_ref(c);
		ag->conn = c;
		ag->online_since = ag->last_seen = bk_now();
		ag->registered = 1;
		ag->addresses = addrs;
		ag->naddresses = naddrs;
		ag->sessions = sess;
		ag->nsessions = nsess;
		agent_set_computer(ag, p->computer);
		p->agent = ag;
		log_info("agent %s online from %s (%zu session%s)", ag->fqdn,
		    p->addr, nsess, nsess == 1 ? "" : "s");
		bk_audit(ctx, BK_AE_AGENT_ONLINE,
		    json_pack("{s:s, s:s, s:s?, s:o}", "machine", ag->fqdn,
		        "host", p->addr, "dn", ag->dn, "sessions",
		        sessions_json(ag)));
		bk_offers_agent_back(ctx, ag);
	} else {
		/* Same connection registers again: refresh what it reports. */
		strv_free(ag->addresses, ag->naddresses);
		usess_free(ag->sessions, ag->nsessions);
		ag->addresses = addrs;
		ag->naddresses = naddrs;
		ag->sessions = sess;
		ag->nsessions = nsess;
		ag->last_seen = bk_now();
	}
	/* Tickets it still serves that ended while it was away. */
	bk_offers_agent_tickets(ctx, ag, json_object_get(params, "tickets"));
	if (id != NULL)
		rp_conn_reply(c, id,
		    json_pack("{s:s, s:s?, s:i}", "machine", ag->fqdn, "dn",
		        ag->dn, "keepalive",
		        (json_int_t)ctx->cfg->keepalive_s));
}

void
bk_h_agent_sessions(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_peer *p = bk_peer_of(c);
	struct bk_usess *sess;
	size_t n;
	char why[200];

	if (p == NULL || p->agent == NULL) {
		if (id != NULL)
			rp_conn_error(c, id, RP_ERR_WRONG_STATE,
			    "agent.register first", NULL);
		return;
	}
	if (!json_is_array(json_object_get(params, "sessions"))) {
		if (id != NULL)
			rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
			    "sessions: expected an array", NULL);
		return;
	}
	if (parse_sessions(json_object_get(params, "sessions"), &sess, &n, why,
	        sizeof(why)) < 0) {
		if (id != NULL)
			rp_conn_error(c, id, RP_ERR_INVALID_PARAMS, why, NULL);
		return;
	}
	usess_free(p->agent->sessions, p->agent->nsessions);
	p->agent->sessions = sess;
	p->agent->nsessions = n;
	p->agent->last_seen = bk_now();
	log_debug("agent %s: %zu session(s)", p->agent->fqdn, n);
	if (id != NULL)
		rp_conn_reply(c, id, json_object());
}

/* --- offline, keepalive ---------------------------------------------------- */

void
bk_agents_conn_closed(struct bk_ctx *ctx, struct bk_peer *p, const char *why)
{
	struct bk_agent *ag = p->agent;

	if (ag == NULL)
		return;
	p->agent = NULL;
	if (ag->conn != p->conn)
		return; /* replaced already */
	bk_offers_agent_gone(ctx, ag);
	log_info("agent %s offline (%s)", ag->fqdn, why ? why : "closed");
	bk_audit(ctx, BK_AE_AGENT_OFFLINE,
	    json_pack("{s:s, s:s, s:s, s:I}", "machine", ag->fqdn, "reason",
	        why ? why : "closed", "host", p->addr, "online_seconds",
	        (json_int_t)(bk_now() - ag->online_since)));
	agents_remove(ctx->agents, ag);
	agent_free(ag);
}

struct sweep {
	int64_t now, limit;
	struct rp_conn **close;
	size_t n, cap;
};

static int
sweep_one(struct bk_agent *ag, void *arg)
{
	struct sweep *s = arg;

	if (s->now - ag->last_seen <= s->limit || ag->conn == NULL)
		return 0;
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 16;
		struct rp_conn **v = realloc(s->close, nc * sizeof(*v));
		if (v == NULL)
			return 1;
		s->close = v;
		s->cap = nc;
	}
	log_info("agent %s silent for %lld s: closing", ag->fqdn,
	    (long long)(s->now - ag->last_seen));
	rp_conn_ref(ag->conn);
	s->close[s->n++] = ag->conn;
	return 0;
}

void
bk_agents_sweep(struct bk_ctx *ctx)
{
	struct sweep s = {
	    .now = bk_now(), .limit = 3 * (int64_t)ctx->cfg->keepalive_s};

	/* Collect first, close after: closing may edit the table. */
	bk_agents_foreach(ctx->agents, sweep_one, &s);
	for (size_t i = 0; i < s.n; i++) {
		rp_conn_close(s.close[i], "keepalive timeout");
		rp_conn_unref(s.close[i]);
	}
	free(s.close);
}

/* --- machines.list ----------------------------------------------------------- */

/*
 * Two passes so that a long listing is cut in a stable place: first the
 * machines the helper may see (a pointer each, however many there are),
 * sorted by name; then JSON for them in that order until the reply would
 * pass LIST_BYTES_MAX ("truncated": true tells the helper to use a
 * filter). The policy is evaluated again for the ones that are shown, to
 * get the deciding rule's text without keeping 256 bytes per machine.
 */
struct listing {
	const struct az_policy *policy;
	struct az_subject subj;
	const char *filter; /* lower-case; NULL: every machine */
	struct bk_agent **v;
	size_t n, cap;
	int nomem;
};

static void
target_of(const struct bk_agent *ag, struct az_target *t)
{
	t->fqdn = ag->fqdn;
	t->dn = ag->dn;
	t->groups = (const char *const *)ag->groups;
	t->ngroups = ag->ngroups;
}

static int
list_collect(struct bk_agent *ag, void *arg)
{
	struct listing *l = arg;
	struct az_target t;
	struct az_decision d;

	/* Registry names are lower-case: strstr with the lower-cased filter
	 * is the case-insensitive match, without folding every name. */
	if (l->filter != NULL && strstr(ag->fqdn, l->filter) == NULL)
		return 0;
	target_of(ag, &t);
	az_policy_eval(l->policy, &l->subj, &t, &d);
	if (d.right < AZ_RIGHT_VIEW)
		return 0;
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 64;
		struct bk_agent **nv = realloc(l->v, nc * sizeof(*nv));
		if (nv == NULL) {
			l->nomem = 1;
			return 1;
		}
		l->v = nv;
		l->cap = nc;
	}
	l->v[l->n++] = ag;
	return 0;
}

static int
cmp_agent(const void *a, const void *b)
{
	return strcmp((*(struct bk_agent *const *)a)->fqdn,
	    (*(struct bk_agent *const *)b)->fqdn);
}

void
bk_h_machines_list(struct rp_conn *c, json_t *id, json_t *params, void *arg)
{
	struct bk_ctx *ctx = arg;
	struct bk_peer *p = bk_peer_of(c);
	struct listing l;
	json_t *out;
	const char *filter;
	char *lfilter = NULL;
	size_t bytes = 0, i;
	int truncated = 0;

	if (p == NULL || p->user == NULL) {
		rp_conn_error(c, id, RP_ERR_NOT_AUTHENTICATED, NULL, NULL);
		return;
	}
	if (json_object_get(params, "filter") != NULL &&
	    !json_is_string(json_object_get(params, "filter")) &&
	    !json_is_null(json_object_get(params, "filter"))) {
		rp_conn_error(c, id, RP_ERR_INVALID_PARAMS,
		    "filter: expected a string", NULL);
		return;
	}
	memset(&l, 0, sizeof(l));
	l.policy = ctx->policy;
	l.subj.account = p->user->account;
	l.subj.groups = (const char *const *)p->user->groups;
	l.subj.ngroups = p->user->ngroups;
	filter = json_string_value(json_object_get(params, "filter"));
	if (filter != NULL && *filter != '\0') {
		if ((lfilter = lower_dup(filter)) == NULL) {
			rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
			return;
		}
		l.filter = lfilter;
	}
	if (ctx->policy != NULL &&
	    az_policy_subject_max(ctx->policy, &l.subj) >= AZ_RIGHT_VIEW)
		bk_agents_foreach(ctx->agents, list_collect, &l);
	free(lfilter);
	if (l.nomem || (out = json_array()) == NULL) {
		free(l.v);
		rp_conn_error(c, id, RP_ERR_NOMEM, NULL, NULL);
		return;
	}
	if (l.n > 1)
		qsort(l.v, l.n, sizeof(*l.v), cmp_agent);
	for (i = 0; i < l.n; i++) {
		struct az_target t;
		struct az_decision d;
		json_t *m;
		size_t sz;

		target_of(l.v[i], &t);
		az_policy_eval(ctx->policy, &l.subj, &t, &d);
		m = json_pack("{s:s, s:s, s:s, s:o}", "fqdn", l.v[i]->fqdn,
		    "right", az_right_name(d.right), "rule", d.rule_text,
		    "sessions", sessions_json(l.v[i]));
		if (m == NULL)
			continue;
		sz = json_dumpb(m, NULL, 0, JSON_COMPACT);
		if (bytes + sz > LIST_BYTES_MAX) {
			json_decref(m);
			truncated = 1;
			break;
		}
		bytes += sz + 1;
		json_array_append_new(out, m);
	}
	log_debug("machines.list for %s: %zu of %zu machine(s)",
	    p->user->account, json_array_size(out), l.n);
	free(l.v);
	rp_conn_reply(c, id,
	    json_pack("{s:o, s:b}", "machines", out, "truncated", truncated));
}
