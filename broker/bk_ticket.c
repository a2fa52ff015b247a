/*
 * bk_ticket.c - expert tickets and their state machine.
 *
 * The transition table below is the whole state machine: every move the
 * broker makes goes through bk_ticket_transition, so an illegal move (say,
 * declined -> connected after a race between a prompt timeout and a late
 * "yes") is refused in one place instead of being checked by each caller.
 */
#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bk_ticket.h"
#include "rp_error.h"

static const struct {
	const char *name;
	int open;
} state_tab[BK_TS_COUNT] = {
#define BK_X_TAB(e, name, open) [e] = {name, open},
    BK_TICKET_STATE_LIST(BK_X_TAB)
#undef BK_X_TAB
};

/* allowed[from] = bit set of states reachable in one move. */
#define B(s) (1u << (s))
#define BK_ANY_END (B(BK_TS_EXPIRED) | B(BK_TS_CANCELLED) | B(BK_TS_REVOKED))
static const unsigned allowed[BK_TS_COUNT] = {
    [BK_TS_OFFERED] = B(BK_TS_PROMPTING) | BK_ANY_END,
    [BK_TS_PROMPTING] =
        B(BK_TS_ACCEPTED) | B(BK_TS_DECLINED) | B(BK_TS_TIMED_OUT) | BK_ANY_END,
    [BK_TS_ACCEPTED] = B(BK_TS_CONNECTED) | BK_ANY_END,
    [BK_TS_CONNECTED] = B(BK_TS_ENDED) | BK_ANY_END,
};
#undef B

const char *
bk_ticket_state_name(enum bk_ticket_state s)
{
	if ((unsigned)s >= BK_TS_COUNT)
		return "unknown";
	return state_tab[s].name;
}

int
bk_ticket_state_parse(const char *s)
{
	if (s == NULL)
		return -1;
	for (int i = 0; i < BK_TS_COUNT; i++)
		if (strcmp(s, state_tab[i].name) == 0)
			return i;
	return -1;
}

const char *
bk_ticket_mode_name(enum bk_ticket_mode m)
{
	return m == BK_MODE_CONTROL ? "control" : "view";
}

int
bk_ticket_mode_parse(const char *s)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "view") == 0)
		return BK_MODE_VIEW;
	if (strcmp(s, "control") == 0)
		return BK_MODE_CONTROL;
	return -1;
}

int
bk_ticket_state_is_open(enum bk_ticket_state s)
{
	return (unsigned)s < BK_TS_COUNT && state_tab[s].open;
}

int
bk_ticket_is_open(const struct bk_ticket *t)
{
	return bk_ticket_state_is_open(t->state);
}

int
bk_ticket_can_transition(enum bk_ticket_state from, enum bk_ticket_state to)
{
	if ((unsigned)from >= BK_TS_COUNT || (unsigned)to >= BK_TS_COUNT)
		return 0;
	return (allowed[from] & (1u << to)) != 0;
}

int
bk_ticket_transition(struct bk_ticket *t, enum bk_ticket_state to, int64_t now)
{
	if (!bk_ticket_can_transition(t->state, to))
		return RP_ERR_WRONG_STATE;
	t->state = to;
	if (to == BK_TS_ACCEPTED)
		t->accepted_at = now;
	else if (to == BK_TS_CONNECTED)
		t->connected_at = now;
	if (!state_tab[to].open)
		t->ended_at = now;
	return RP_OK;
}

int
bk_ticket_expire_if_due(struct bk_ticket *t, int64_t now)
{
	if (!bk_ticket_is_open(t) || now < t->expires_at)
		return 0;
	return bk_ticket_transition(t, BK_TS_EXPIRED, now) == RP_OK;
}

int
bk_ticket_use(struct bk_ticket *t, int64_t now)
{
	switch (t->state) {
	case BK_TS_CONNECTED:
	case BK_TS_ENDED:
		return RP_ERR_TICKET_USED;
	case BK_TS_EXPIRED:
	case BK_TS_REVOKED:
	case BK_TS_CANCELLED:
		return RP_ERR_TICKET_EXPIRED;
	case BK_TS_DECLINED:
	case BK_TS_TIMED_OUT:
		return RP_ERR_DECLINED;
	default:
		break;
	}
	if (bk_ticket_expire_if_due(t, now))
		return RP_ERR_TICKET_EXPIRED;
	if (t->state != BK_TS_ACCEPTED)
		return RP_ERR_WRONG_STATE;
	return bk_ticket_transition(t, BK_TS_CONNECTED, now);
}

int
bk_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	const volatile unsigned char *x = a, *y = b;
	unsigned char d = 0;
	size_t i;

	/* Lengths are not secret (a secret has one fixed size). */
	if (alen != blen)
		return 0;
	for (i = 0; i < alen; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

int
bk_ticket_secret_matches(
    const struct bk_ticket *t, const void *secret, size_t len)
{
	return bk_ct_equal(t->secret, sizeof(t->secret), secret, len);
}

static void
hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

void
bk_ticket_secret_hex(
    const struct bk_ticket *t, char out[2 * BK_TICKET_SECRET_BYTES + 1])
{
	hex_encode(t->secret, sizeof(t->secret), out);
}

int
bk_ticket_id_valid(const char *s)
{
	size_t i;

	if (s == NULL)
		return 0;
	for (i = 0; i < BK_TICKET_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		        (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[i] == '\0';
}

static int
port_valid(const char *p)
{
	long v = 0;

	if (*p == '\0' || strlen(p) > 5 || (p[0] == '0'))
		return 0;
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		v = v * 10 + (*p - '0');
	}
	return v >= 1 && v <= 65535;
}

int
bk_ticket_addr_valid(const char *s)
{
	char host[BK_TICKET_ADDR_MAX];
	unsigned char bin[16];
	const char *colon;
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n >= BK_TICKET_ADDR_MAX)
		return 0;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL || close[1] != ':')
			return 0;
		n = (size_t)(close - s - 1);
		memcpy(host, s + 1, n);
		host[n] = '\0';
		/* No zone ids ("fe80::1%eth0"): inet_pton refuses them, and
		 * a broker-relayed zone means nothing to the agent. */
		if (inet_pton(AF_INET6, host, bin) != 1)
			return 0;
		return port_valid(close + 2);
	}
	if ((colon = strchr(s, ':')) == NULL || strchr(colon + 1, ':') != NULL)
		return 0;
	n = (size_t)(colon - s);
	memcpy(host, s, n);
	host[n] = '\0';
	if (inet_pton(AF_INET, host, bin) != 1)
		return 0;
	return port_valid(colon + 1);
}

static int
str_valid(const char *s)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > BK_TICKET_STR_MAX)
		return 0;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

struct bk_ticket *
bk_ticket_alloc(void)
{
	return calloc(1, sizeof(struct bk_ticket));
}

void
bk_ticket_free(struct bk_ticket *t)
{
	if (t == NULL)
		return;
	gnutls_memset(t->secret, 0, sizeof(t->secret));
	free(t->helper);
	free(t->helper_host);
	for (size_t i = 0; i < t->naddrs && i < BK_TICKET_MAX_ADDRS; i++)
		free(t->addrs[i]);
	free(t->machine);
	free(t->rule);
	free(t);
}

static int
dup_str(char **dst, const char *src)
{
	if (src == NULL) {
		*dst = NULL;
		return 0;
	}
	return (*dst = strdup(src)) == NULL ? -1 : 0;
}

struct bk_ticket *
bk_ticket_dup(const struct bk_ticket *t)
{
	struct bk_ticket *c;
	int bad = 0;

	if ((c = bk_ticket_alloc()) == NULL)
		return NULL;
	*c = *t;
	c->helper = c->helper_host = c->machine = c->rule = NULL;
	c->naddrs = 0;
	bad |= dup_str(&c->helper, t->helper);
	bad |= dup_str(&c->helper_host, t->helper_host);
	bad |= dup_str(&c->machine, t->machine);
	bad |= dup_str(&c->rule, t->rule);
	for (size_t i = 0; i < t->naddrs && i < BK_TICKET_MAX_ADDRS; i++) {
		bad |= dup_str(&c->addrs[i], t->addrs[i]);
		c->naddrs = i + 1;
	}
	if (bad) {
		bk_ticket_free(c);
		return NULL;
	}
	return c;
}

int
bk_ticket_create(const struct bk_ticket_params *p, int64_t now,
    struct bk_ticket **out, char *err, size_t errlen)
{
	static const struct {
		size_t off;
		const char *name;
	} strs[] = {
	    {offsetof(struct bk_ticket_params, helper), "helper"},
	    {offsetof(struct bk_ticket_params, helper_host), "helper_host"},
	    {offsetof(struct bk_ticket_params, machine), "machine"},
	    {offsetof(struct bk_ticket_params, rule), "rule"},
	};
	uint8_t idbin[BK_TICKET_ID_BYTES];
	struct bk_ticket *t;
	int64_t dur;
	size_t i;

	*out = NULL;
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		const char *s =
		    *(const char *const *)((const char *)p + strs[i].off);

		if (!str_valid(s)) {
			snprintf(err, errlen,
			    "%s: empty, too long or has control characters",
			    strs[i].name);
			return RP_ERR_INVALID_PARAMS;
		}
	}
	if (p->naddrs == 0 || p->naddrs > BK_TICKET_MAX_ADDRS ||
	    p->addrs == NULL) {
		snprintf(err, errlen, "addresses: need 1 to %d entries",
		    BK_TICKET_MAX_ADDRS);
		return RP_ERR_INVALID_PARAMS;
	}
	for (i = 0; i < p->naddrs; i++) {
		if (!bk_ticket_addr_valid(p->addrs[i])) {
			/* The entry is echoed back only when short and
			 * printable: it came from the network. */
			snprintf(err, errlen,
			    "addresses[%zu]: not \"ipv4:port\" or "
			    "\"[ipv6]:port\" with port 1..65535",
			    i);
			return RP_ERR_INVALID_PARAMS;
		}
	}
	if (p->mode != BK_MODE_VIEW && p->mode != BK_MODE_CONTROL) {
		snprintf(err, errlen, "mode: not view or control");
		return RP_ERR_INVALID_PARAMS;
	}
	if (p->max_duration_s <= 0) {
		snprintf(err, errlen, "max_duration_s: must be positive");
		return RP_ERR_INVALID_PARAMS;
	}
	dur = p->duration_s;
	if (dur <= 0 || dur > p->max_duration_s)
		dur = p->max_duration_s;

	if ((t = bk_ticket_alloc()) == NULL)
		return RP_ERR_NOMEM;
	if (gnutls_rnd(GNUTLS_RND_KEY, idbin, sizeof(idbin)) != 0 ||
	    gnutls_rnd(GNUTLS_RND_KEY, t->secret, sizeof(t->secret)) != 0) {
		bk_ticket_free(t);
		snprintf(err, errlen, "no randomness available");
		return RP_ERR_INTERNAL;
	}
	hex_encode(idbin, sizeof(idbin), t->id);
	if (dup_str(&t->helper, p->helper) ||
	    dup_str(&t->helper_host, p->helper_host) ||
	    dup_str(&t->machine, p->machine) || dup_str(&t->rule, p->rule)) {
		bk_ticket_free(t);
		return RP_ERR_NOMEM;
	}
	for (i = 0; i < p->naddrs; i++) {
		if (dup_str(&t->addrs[i], p->addrs[i])) {
			bk_ticket_free(t);
			return RP_ERR_NOMEM;
		}
		t->naddrs = i + 1;
	}
	t->mode = p->mode;
	t->state = BK_TS_OFFERED;
	t->created_at = now;
	t->expires_at = now + dur;
	*out = t;
	return RP_OK;
}

static int
set_time(json_t *o, const char *k, int64_t v)
{
	if (v == 0)
		return 0;
	return json_object_set_new(o, k, json_integer(v));
}

json_t *
bk_ticket_to_json(const struct bk_ticket *t, int include_secret)
{
	json_t *o, *a;
	int bad = 0;

	if ((o = json_object()) == NULL || (a = json_array()) == NULL) {
		json_decref(o);
		return NULL;
	}
	for (size_t i = 0; i < t->naddrs; i++)
		bad |= json_array_append_new(a, json_string(t->addrs[i]));
	bad |= json_object_set_new(o, "id", json_string(t->id));
	bad |= json_object_set_new(o, "helper", json_string(t->helper));
	bad |=
	    json_object_set_new(o, "helper_host", json_string(t->helper_host));
	bad |= json_object_set_new(o, "addresses", a);
	bad |= json_object_set_new(o, "machine", json_string(t->machine));
	bad |= json_object_set_new(
	    o, "mode", json_string(bk_ticket_mode_name(t->mode)));
	bad |= json_object_set_new(o, "rule", json_string(t->rule));
	bad |= json_object_set_new(
	    o, "state", json_string(bk_ticket_state_name(t->state)));
	bad |= json_object_set_new(
	    o, "control_granted", json_boolean(t->control_granted));
	bad |= set_time(o, "control_since", t->control_since);
	bad |= set_time(o, "created_at", t->created_at);
	bad |= set_time(o, "expires_at", t->expires_at);
	bad |= set_time(o, "accepted_at", t->accepted_at);
	bad |= set_time(o, "connected_at", t->connected_at);
	bad |= set_time(o, "ended_at", t->ended_at);
	if (include_secret) {
		char hex[2 * BK_TICKET_SECRET_BYTES + 1];

		bk_ticket_secret_hex(t, hex);
		bad |= json_object_set_new(o, "secret", json_string(hex));
		gnutls_memset(hex, 0, sizeof(hex));
	}
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}
