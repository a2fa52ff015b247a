/*
 * bk_config.c - the configuration file, read with inih but strictly.
 *
 * inih alone forgives too much (unknown keys are the caller's business, the
 * handler gets no line number in Debian's build, and a line longer than its
 * buffer is silently split in two). So lines go through rp_cfg's reader,
 * which counts them and refuses over-long ones, and rd_check_shape checks
 * the shape of each line before inih sees it; the handler then looks every
 * key up in one table per section. All errors are collected, each as
 * "FILE:LINE: why".
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rp_cfg.h"
#include "bk_config.h"
#include "rp_log.h"

#define CFG_MAX_DOMAINS 64
#define CFG_MAX_SEEN 256

enum cfg_type {
	T_STR,      /* any non-empty string */
	T_PATH,     /* non-empty, absolute or relative path */
	T_UINT,     /* integer in [min, max] */
	T_SECS,     /* duration: 30, 30s, 5m, 2h -> seconds in [min, max] */
	T_MSECS,    /* duration -> milliseconds; also accepts "500ms" */
	T_BOOL,     /* yes/no true/false on/off 1/0 */
	T_BYTES,    /* 0 = unlimited, 1024, 64K, 512M, 4G */
	T_LISTEN,   /* host:port */
	T_LOGLEVEL, /* error warn info debug */
	T_MECHS,    /* list of SASL mechanism names */
	T_GROUPS,   /* memberof | inchain | walk */
	T_STORE,    /* sqlite | memory */
	T_FILTER,   /* LDAP filter with exactly one %s */
	T_OPTSTR,   /* string, may be empty */
};

struct cfg_key {
	const char *name;
	enum cfg_type type;
	size_t off; /* offset in struct bk_config */
	unsigned long min, max;
};

#define O(f) offsetof(struct bk_config, f)
#define D(f) \
	(offsetof(struct bk_config, dir) + offsetof(struct az_dir_config, f))

static const struct cfg_key broker_keys[] = {
    {"listen", T_LISTEN, 0, 0, 0},
    {"cert", T_PATH, O(cert), 0, 0},
    {"key", T_PATH, O(key), 0, 0},
    {"ca", T_PATH, O(ca), 0, 0},
    {"handshake_timeout", T_SECS, O(handshake_timeout_s), 1, 300},
    {"keepalive", T_SECS, O(keepalive_s), 1, 3600},
    {"max_connections", T_UINT, O(max_connections), 1, 10000000},
    {"max_pending_per_address", T_UINT, O(max_pending_per_address), 0,
        10000000},
    {"handshake_threads", T_UINT, O(handshake_threads), 0, 64},
    {"drain_timeout", T_SECS, O(drain_timeout_s), 0, 3600},
    {"login_timeout", T_SECS, O(login_timeout_s), 1, 3600},
    {"ticket_key_file", T_PATH, O(ticket_key_file), 0, 0},
    {"ticket_lifetime", T_SECS, O(ticket_lifetime_s), 60, 30 * 86400},
};
static const struct cfg_key dir_keys[] = {
    {"uri", T_STR, D(uri), 0, 0},
    {"starttls", T_BOOL, D(starttls), 0, 0},
    {"ca", T_PATH, D(ca_file), 0, 0},
    {"bind_dn", T_STR, D(bind_dn), 0, 0},
    {"bind_pw_file", T_PATH, D(bind_pw_file), 0, 0},
    {"net_timeout", T_MSECS, D(net_timeout_ms), 100, 600000},
    {"op_timeout", T_MSECS, D(op_timeout_ms), 100, 600000},
    {"workers", T_UINT, D(workers), 1, 64},
    {"queue_max", T_UINT, D(queue_max), 1, 1000000},
    {"default_domain", T_STR, D(default_domain), 0, 0},
    {"user_filter", T_FILTER, D(user_filter), 0, 0},
    {"upn_filter", T_FILTER, D(upn_filter), 0, 0},
    {"computer_filter", T_FILTER, D(computer_filter), 0, 0},
    {"group_name_attr", T_STR, D(group_name_attr), 0, 0},
    {"group_member_attr", T_STR, D(group_member_attr), 0, 0},
    {"user_name_attr", T_STR, D(user_name_attr), 0, 0},
    {"group_strategy", T_GROUPS, D(group_strategy), 0, 0},
    {"group_max_depth", T_UINT, D(group_max_depth), 1, 64},
    {"cache_ttl", T_SECS, D(cache_ttl_s), 0, 86400},
    {"cache_negative_ttl", T_SECS, D(cache_neg_ttl_s), 0, 86400},
    {"cache_max", T_UINT, D(cache_max), 0, 10000000},
    {"backoff_max", T_MSECS, D(backoff_max_ms), 100, 3600000},
    {"require_computer_object", T_BOOL, O(require_computer_object), 0, 0},
};
static const struct cfg_key policy_keys[] = {
    {"file", T_PATH, O(policy_file), 0, 0},
};
static const struct cfg_key sasl_keys[] = {
    {"mechanisms", T_MECHS, 0, 0, 0},
    {"max_failures", T_UINT, O(max_failures), 0, 100000},
    {"failure_window", T_SECS, O(failure_window_s), 1, 86400},
};
static const struct cfg_key tickets_keys[] = {
    {"store", T_STORE, O(store), 0, 0},
    {"path", T_PATH, O(store_path), 0, 0},
    {"max_duration", T_SECS, O(max_duration_s), 1, 86400},
    {"prompt_timeout", T_SECS, O(prompt_timeout_s), 5, 3600},
    {"connect_timeout", T_SECS, O(connect_timeout_s), 1, 600},
};
static const struct cfg_key audit_keys[] = {
    {"path", T_PATH, O(audit_path), 0, 0},
    {"syslog", T_BOOL, O(audit_syslog), 0, 0},
};
static const struct cfg_key log_keys[] = {
    {"level", T_LOGLEVEL, O(log_level), 0, 0},
    {"syslog", T_BOOL, O(log_syslog), 0, 0},
};
static const struct cfg_key metrics_keys[] = {
    {"listen", T_OPTSTR, O(metrics_listen), 0, 0},
    {"allow_remote", T_BOOL, O(metrics_allow_remote), 0, 0},
};
static const struct cfg_key control_keys[] = {
    {"socket", T_PATH, O(control_socket), 0, 0},
};
static const struct cfg_key relay_keys[] = {
    {"idle_timeout", T_SECS, O(relay_idle_timeout_s), 1, 86400},
    {"byte_budget", T_BYTES, O(relay_byte_budget), 0, 0},
    {"wait_timeout", T_SECS, O(relay_wait_timeout_s), 1, 3600},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))
static const struct cfg_section {
	const char *name;
	const struct cfg_key *keys;
	size_t nkeys;
} sections[] = {
    {"broker", broker_keys, N(broker_keys)},
    {"directory", dir_keys, N(dir_keys)},
    {"policy", policy_keys, N(policy_keys)},
    {"sasl", sasl_keys, N(sasl_keys)},
    {"tickets", tickets_keys, N(tickets_keys)},
    {"audit", audit_keys, N(audit_keys)},
    {"log", log_keys, N(log_keys)},
    {"relay", relay_keys, N(relay_keys)},
    {"metrics", metrics_keys, N(metrics_keys)},
    {"control", control_keys, N(control_keys)},
};

struct seen {
	char *section;
	char *key;
	unsigned line;
};

/* Parser state. */
struct pctx {
	struct rp_cfg cfg; /* the text, its line count, the errors */
	struct bk_config *c;
	struct seen seen[CFG_MAX_SEEN];
	size_t nseen;
	unsigned domain_line[CFG_MAX_DOMAINS];
};

#define perr(p, ...) rp_cfg_error(&(p)->cfg, __VA_ARGS__)

/* Checks the shape of one line: blank, comment, [section] or key = value. */
static void
rd_check_shape(struct rp_cfg *p, const char *l)
{
	while (*l == ' ' || *l == '\t')
		l++;
	if (*l == '\0' || *l == '\n' || *l == '\r' || *l == ';' || *l == '#')
		return;
	if (*l == '[') {
		const char *e = strchr(l, ']');
		if (e == NULL)
			rp_cfg_error(p, p->line, "section header without ']'");
		else {
			for (e++; *e == ' ' || *e == '\t'; e++)
				;
			if (*e != '\0' && *e != '\n' && *e != '\r' &&
			    *e != ';' && *e != '#')
				rp_cfg_error(p, p->line,
				    "unexpected text after section header");
		}
		return;
	}
	if (strchr(l, '=') == NULL)
		rp_cfg_error(p, p->line, "expected `key = value`");
}

/* "host:port", "[v6]:port". Fills listen_host/listen_port. */
static int
parse_listen(struct bk_config *c, const char *v, char *why, size_t wlen)
{
	const char *colon, *hb, *he;
	unsigned long port;
	char *end;

	if (*v == '[') {
		he = strchr(v, ']');
		if (he == NULL || he[1] != ':') {
			snprintf(why, wlen, "expected [IPv6]:port");
			return -1;
		}
		hb = v + 1;
		colon = he + 1;
	} else {
		colon = strrchr(v, ':');
		if (colon == NULL) {
			snprintf(why, wlen, "expected host:port");
			return -1;
		}
		if (memchr(v, ':', (size_t)(colon - v)) != NULL) {
			snprintf(why, wlen,
			    "IPv6 addresses must be in brackets: [::1]:4433");
			return -1;
		}
		hb = v;
		he = colon;
	}
	if (he == hb) {
		snprintf(why, wlen, "empty host (use 0.0.0.0 or [::])");
		return -1;
	}
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno || port < 1 ||
	    port > 65535 || !isdigit((unsigned char)colon[1])) {
		snprintf(why, wlen, "bad port (1..65535)");
		return -1;
	}
	free(c->listen_host);
	c->listen_host = strndup(hb, (size_t)(he - hb));
	c->listen_port = (unsigned)port;
	free(c->listen);
	c->listen = strdup(v);
	return 0;
}

static void
free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int
parse_mechs(struct bk_config *c, const char *v, char *why, size_t wlen)
{
	char **out = NULL;
	size_t n = 0;
	const char *s = v;

	while (*s) {
		size_t len;
		char **nv;
		while (*s == ' ' || *s == ',' || *s == '\t')
			s++;
		if (*s == '\0')
			break;
		len = strcspn(s, " ,\t");
		if (len > 20) {
			snprintf(why, wlen, "mechanism name too long");
			goto bad;
		}
		for (size_t i = 0; i < len; i++)
			if (!isalnum((unsigned char)s[i]) && s[i] != '-' &&
			    s[i] != '_') {
				snprintf(why, wlen, "bad mechanism name");
				goto bad;
			}
		nv = realloc(out, (n + 1) * sizeof(*out));
		if (nv == NULL)
			goto bad;
		out = nv;
		out[n] = strndup(s, len);
		if (out[n] == NULL)
			goto bad;
		for (char *q = out[n]; *q; q++)
			*q = (char)toupper((unsigned char)*q);
		if (strcmp(out[n], "PLAIN") != 0 &&
		    strcmp(out[n], "EXTERNAL") != 0 &&
		    strcmp(out[n], "GSSAPI") != 0) {
			snprintf(why, wlen,
			    "unknown mechanism \"%s\" (PLAIN, EXTERNAL, "
			    "GSSAPI)",
			    out[n]);
			n++;
			goto bad;
		}
		n++;
		s += len;
	}
	if (n == 0) {
		snprintf(why, wlen, "no mechanism listed");
		goto bad;
	}
	free_strv(c->mechanisms, c->nmechanisms);
	c->mechanisms = out;
	c->nmechanisms = n;
	return 0;
bad:
	free_strv(out, n);
	return -1;
}

static int
filter_ok(const char *v)
{
	const char *p = strstr(v, "%s");
	size_t pct = 0;

	for (const char *q = v; *q; q++)
		if (*q == '%')
			pct++;
	return p != NULL && pct == 1 && v[0] == '(';
}

static int
set_value(struct pctx *p, const struct cfg_key *k, const char *v)
{
	char *base = (char *)p->c;
	char why[160] = "";
	uint64_t ms;

	switch (k->type) {
	case T_STR:
	case T_PATH:
	case T_STORE:
	case T_FILTER: {
		char **dst = (char **)(base + k->off);
		if (*v == '\0') {
			snprintf(why, sizeof(why), "empty value");
			break;
		}
		if (k->type == T_STORE && strcmp(v, "sqlite") != 0 &&
		    strcmp(v, "memory") != 0) {
			snprintf(why, sizeof(why),
			    "unknown store \"%s\" (sqlite, memory)", v);
			break;
		}
		if (k->type == T_FILTER && !filter_ok(v)) {
			snprintf(why, sizeof(why),
			    "a filter is \"(...)\" with exactly one %%s");
			break;
		}
		free(*dst);
		*dst = strdup(v);
		return *dst ? 0 : -1;
	}
	case T_OPTSTR: {
		char **dst = (char **)(base + k->off);
		free(*dst);
		*dst = strdup(v);
		return *dst ? 0 : -1;
	}
	case T_UINT: {
		uint64_t n;
		if (rp_cfg_number(v, &n) < 0)
			snprintf(why, sizeof(why), "not a number");
		else if (n < k->min || n > k->max)
			snprintf(why, sizeof(why), "out of range %lu..%lu",
			    k->min, k->max);
		else {
			*(unsigned *)(base + k->off) = (unsigned)n;
			return 0;
		}
		break;
	}
	case T_SECS:
		if (rp_cfg_duration_ms(v, &ms) < 0 || ms % 1000 != 0)
			snprintf(why, sizeof(why),
			    "not a duration in seconds (30, 30s, 5m, 1h)");
		else if (ms / 1000 < k->min || ms / 1000 > k->max)
			snprintf(why, sizeof(why), "out of range %lus..%lus",
			    k->min, k->max);
		else {
			*(unsigned *)(base + k->off) = (unsigned)(ms / 1000);
			return 0;
		}
		break;
	case T_MSECS:
		if (rp_cfg_duration_ms(v, &ms) < 0)
			snprintf(
			    why, sizeof(why), "not a duration (500ms, 3s, 1m)");
		else if (ms < k->min || ms > k->max)
			snprintf(why, sizeof(why), "out of range %lums..%lums",
			    k->min, k->max);
		else {
			*(unsigned *)(base + k->off) = (unsigned)ms;
			return 0;
		}
		break;
	case T_BOOL:
		if (rp_cfg_bool(v, (int *)(base + k->off)) == 0)
			return 0;
		snprintf(why, sizeof(why), "expected yes or no");
		break;
	case T_BYTES:
		if (rp_cfg_size(v, (uint64_t *)(base + k->off)) == 0)
			return 0;
		snprintf(why, sizeof(why),
		    "not a size (0 = unlimited, 65536, 64K, 512M, 4G)");
		break;
	case T_LISTEN:
		if (parse_listen(p->c, v, why, sizeof(why)) == 0) {
			p->c->listen_line = p->cfg.line;
			return 0;
		}
		break;
	case T_LOGLEVEL: {
		int l = log_level_parse(v);
		if (l < 0)
			snprintf(why, sizeof(why),
			    "expected error, warn, info or debug");
		else {
			*(int *)(base + k->off) = l;
			return 0;
		}
		break;
	}
	case T_MECHS:
		if (parse_mechs(p->c, v, why, sizeof(why)) == 0)
			return 0;
		break;
	case T_GROUPS: {
		enum az_group_strategy g;
		if (strcasecmp(v, "memberof") == 0)
			g = AZ_GROUPS_MEMBEROF;
		else if (strcasecmp(v, "inchain") == 0)
			g = AZ_GROUPS_INCHAIN;
		else if (strcasecmp(v, "walk") == 0)
			g = AZ_GROUPS_WALK;
		else {
			snprintf(why, sizeof(why),
			    "expected memberof, inchain or walk");
			break;
		}
		*(enum az_group_strategy *)(base + k->off) = g;
		return 0;
	}
	}
	if (why[0] == '\0')
		snprintf(why, sizeof(why), "out of memory");
	perr(p, p->cfg.line, "%s: bad value \"%.80s\": %s", k->name, v, why);
	return 0;
}

static struct seen *
seen_find(struct pctx *p, const char *section, const char *key)
{
	for (size_t i = 0; i < p->nseen; i++)
		if (strcasecmp(p->seen[i].section, section) == 0 &&
		    ((key == NULL && p->seen[i].key == NULL) ||
		        (key && p->seen[i].key &&
		            strcmp(p->seen[i].key, key) == 0)))
			return &p->seen[i];
	return NULL;
}

static void
seen_add(struct pctx *p, const char *section, const char *key)
{
	if (p->nseen >= CFG_MAX_SEEN)
		return;
	p->seen[p->nseen].section = strdup(section);
	p->seen[p->nseen].key = key ? strdup(key) : NULL;
	p->seen[p->nseen].line = p->cfg.line;
	p->nseen++;
}

/* Line of a setting, 0 if it was not written. */
static unsigned
line_of(struct pctx *p, const char *section, const char *key)
{
	struct seen *s = seen_find(p, section, key);
	return s ? s->line : 0;
}

static int
netbios_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 15)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return 0;
	return 1;
}

/* [domain NAME]: realm, base_dn. Returns the domain, creating it. */
static struct az_domain *
domain_get(struct pctx *p, const char *name)
{
	struct az_dir_config *d = &p->c->dir;
	struct az_domain *nd;

	for (size_t i = 0; i < d->ndomains; i++)
		if (strcasecmp(d->domains[i].netbios, name) == 0)
			return &d->domains[i];
	if (d->ndomains >= CFG_MAX_DOMAINS)
		return NULL;
	nd = realloc(d->domains, (d->ndomains + 1) * sizeof(*nd));
	if (nd == NULL)
		return NULL;
	d->domains = nd;
	memset(&nd[d->ndomains], 0, sizeof(*nd));
	nd[d->ndomains].netbios = strdup(name);
	for (char *q = nd[d->ndomains].netbios; q && *q; q++)
		*q = (char)toupper((unsigned char)*q);
	p->domain_line[d->ndomains] = p->cfg.line;
	return &nd[d->ndomains++];
}

static void
domain_key(struct pctx *p, const char *dname, const char *key, const char *v)
{
	struct az_domain *d;
	char **dst;

	if (!netbios_ok(dname)) {
		if (seen_find(p, "domain ", dname) == NULL) {
			perr(p, p->cfg.line,
			    "[domain %.40s]: a domain is named by its NetBIOS "
			    "name (1-15 letters, digits, - or _)",
			    dname);
			seen_add(p, "domain ", dname);
		}
		return;
	}
	if ((d = domain_get(p, dname)) == NULL) {
		perr(p, p->cfg.line, "too many domains (at most %d)",
		    CFG_MAX_DOMAINS);
		return;
	}
	if (strcmp(key, "realm") == 0)
		dst = &d->realm;
	else if (strcmp(key, "base_dn") == 0)
		dst = &d->base_dn;
	else {
		perr(p, p->cfg.line,
		    "unknown key \"%.60s\" in [domain %s] (realm, base_dn)",
		    key, dname);
		return;
	}
	if (*v == '\0') {
		perr(p, p->cfg.line, "%s: empty value", key);
		return;
	}
	free(*dst);
	*dst = strdup(v);
}

static int
on_kv(void *user, const char *section, const char *name, const char *value)
{
	struct pctx *p = user;
	const struct cfg_section *sec = NULL;

	if (*section == '\0') {
		perr(
		    p, p->cfg.line, "\"%.60s\" outside of any [section]", name);
		return 1;
	}
	if (seen_find(p, section, name) != NULL) {
		perr(p, p->cfg.line, "duplicate key \"%.60s\" in [%.60s]%s",
		    name, section,
		    seen_find(p, section, name)->line == p->cfg.line
		        ? " (continuation lines are not supported)"
		        : "");
		return 1;
	}
	seen_add(p, section, name);
	if (seen_find(p, section, NULL) == NULL)
		seen_add(p, section, NULL);
	if (strncasecmp(section, "domain", 6) == 0 &&
	    (section[6] == ' ' || section[6] == '\t')) {
		const char *dn = section + 7;
		while (*dn == ' ' || *dn == '\t')
			dn++;
		domain_key(p, dn, name, value);
		return 1;
	}
	for (size_t i = 0; i < N(sections); i++)
		if (strcmp(section, sections[i].name) == 0)
			sec = &sections[i];
	if (sec == NULL) {
		/* Report an unknown section once. */
		if (seen_find(p, section, "\001") == NULL) {
			perr(p, p->cfg.line,
			    "unknown section [%.60s] (broker, directory, "
			    "domain NAME, policy, sasl, tickets, audit, log, "
			    "relay, metrics, control)",
			    section);
			seen_add(p, section, "\001");
		}
		return 1;
	}
	if (strcmp(sec->name, "directory") == 0)
		p->c->have_directory = 1;
	for (size_t i = 0; i < sec->nkeys; i++)
		if (strcmp(name, sec->keys[i].name) == 0) {
			if (set_value(p, &sec->keys[i], value) < 0)
				perr(p, p->cfg.line, "out of memory");
			return 1;
		}
	{
		char known[400] = "";
		size_t used = 0;
		for (size_t i = 0; i < sec->nkeys && used < sizeof(known);
		     i++) {
			int n = snprintf(known + used, sizeof(known) - used,
			    "%s%s", i ? ", " : "", sec->keys[i].name);
			if (n < 0)
				break;
			used += (size_t)n;
		}
		perr(p, p->cfg.line,
		    "unknown key \"%.60s\" in [%s] (known: %s)", name,
		    sec->name, known);
	}
	return 1;
}

static void
defaults(struct bk_config *c)
{
	long ncpu;

	c->listen = strdup("0.0.0.0:4433");
	c->listen_host = strdup("0.0.0.0");
	c->listen_port = 4433;
	c->handshake_timeout_s = 10;
	c->keepalive_s = 60;
	c->max_connections = 100000;
	/* A /24 office behind one NAT address reconnecting all at once after
	 * a broker restart is never refused (docs/CONFIG.md). */
	c->max_pending_per_address = 256;
	/* TLS handshakes off the event loop: one thread per other CPU. */
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	c->handshake_threads = ncpu > 9 ? 8 : ncpu > 2 ? (unsigned)ncpu - 1 : 1;
	c->drain_timeout_s = 10;
	c->login_timeout_s = 60;
	/* GnuTLS counts it from the agent's last full handshake: it must
	 * cover the broker's uptime for a restart to resume (docs/SCALE.md). */
	c->ticket_lifetime_s = 7 * 86400;
	az_dir_config_init(&c->dir);
	c->mechanisms = calloc(2, sizeof(char *));
	if (c->mechanisms) {
		c->mechanisms[0] = strdup("PLAIN");
		c->mechanisms[1] = strdup("EXTERNAL");
		c->nmechanisms = 2;
	}
	c->max_failures = 5;
	c->failure_window_s = 60;
	c->store = strdup("sqlite");
	c->store_path = strdup("/var/lib/rabroker/tickets.db");
	c->max_duration_s = 1800;
	c->prompt_timeout_s = 60;
	c->connect_timeout_s = 30;
	c->audit_path = strdup("/var/log/rabroker/audit.log");
	c->audit_syslog = 1;
	c->log_level = LOG_LVL_INFO;
	c->log_syslog = 1;
	c->relay_idle_timeout_s = 300;
	c->relay_wait_timeout_s = 30;
	c->relay_byte_budget = 4ull << 30;
	c->metrics_listen = strdup(BK_CONFIG_METRICS_LISTEN);
	c->control_socket = strdup(BK_CONFIG_CONTROL_SOCKET);
}

int
bk_config_check_secret(
    const char *what, const char *file, char *err, size_t errlen)
{
	struct stat st;

	if (stat(file, &st) < 0) {
		snprintf(err, errlen, "%s %s: %s", what, file, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(
		    err, errlen, "%s %s is not a regular file", what, file);
		return -1;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen,
		    "%s %s is readable by group or others (mode %04o); "
		    "chmod 600 it",
		    what, file, (unsigned)(st.st_mode & 07777));
		return -1;
	}
	if (access(file, R_OK) < 0) {
		snprintf(err, errlen, "%s %s: %s", what, file, strerror(errno));
		return -1;
	}
	return 0;
}

static void
check_readable(struct pctx *p, const char *what, const char *file,
    const char *section, const char *key)
{
	if (file == NULL)
		return;
	if (access(file, R_OK) < 0)
		perr(p, line_of(p, section, key), "%s %s: %s", what, file,
		    strerror(errno));
}

static void
check_secret(struct pctx *p, const char *what, const char *file,
    const char *section, const char *key)
{
	char why[600];

	if (file == NULL)
		return;
	if (bk_config_check_secret(what, file, why, sizeof(why)) < 0)
		perr(p, line_of(p, section, key), "%s", why);
}

/* [metrics] listen: numeric "ip:port" / "[ip6]:port", loopback unless
 * allow_remote (the endpoint has no authentication). */
static int
check_metrics_listen(const char *v, int allow_remote, char *why, size_t wl)
{
	char host[64];
	const char *colon;
	unsigned char a[16];
	size_t hl;
	long port;
	char *end;
	int v6 = 0, loop;

	if (*v == '[') {
		const char *e = strchr(v, ']');
		if (e == NULL || e[1] != ':')
			goto bad;
		hl = (size_t)(e - v - 1);
		if (hl >= sizeof(host))
			goto bad;
		memcpy(host, v + 1, hl);
		colon = e + 1;
		v6 = 1;
	} else {
		colon = strrchr(v, ':');
		if (colon == NULL || (hl = (size_t)(colon - v)) >= sizeof(host))
			goto bad;
		memcpy(host, v, hl);
	}
	host[hl] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (!isdigit((unsigned char)colon[1]) || *end != '\0' || port < 1 ||
	    port > 65535 || inet_pton(v6 ? AF_INET6 : AF_INET, host, a) != 1)
		goto bad;
	loop = v6 ? memcmp(a, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16) == 0
	          : a[0] == 127;
	if (!loop && !allow_remote) {
		snprintf(why, wl,
		    "%s is not a loopback address and the endpoint has no "
		    "authentication: set allow_remote = yes to expose it",
		    host);
		return -1;
	}
	return 0;
bad:
	snprintf(why, wl,
	    "expected a numeric ip:port or [ipv6]:port, or empty (off)");
	return -1;
}

/* Rules that involve more than one key, and the files named. */
static void
finish(struct pctx *p)
{
	struct bk_config *c = p->c;
	struct az_dir_config *d = &c->dir;

	if (c->cert == NULL)
		perr(p, 0, "[broker] cert is required");
	if (c->key == NULL)
		perr(p, 0, "[broker] key is required");
	if (c->ca == NULL)
		perr(p, 0,
		    "[broker] ca is required (the organisation's CA "
		    "that signs machine certificates)");
	if (c->policy_file == NULL)
		perr(p, 0, "[policy] file is required");
	check_readable(p, "certificate", c->cert, "broker", "cert");
	check_secret(p, "private key", c->key, "broker", "key");
	check_readable(p, "CA file", c->ca, "broker", "ca");
	/* The session-ticket key is made at first start if missing. */
	if (c->ticket_key_file != NULL && access(c->ticket_key_file, F_OK) == 0)
		check_secret(p, "session ticket key", c->ticket_key_file,
		    "broker", "ticket_key_file");

	if (c->have_directory) {
		if (d->uri == NULL)
			perr(p, 0, "[directory] uri is required");
		else if (strncmp(d->uri, "ldap://", 7) != 0 &&
		    strncmp(d->uri, "ldaps://", 8) != 0)
			perr(p, line_of(p, "directory", "uri"),
			    "uri: expected ldap://host:port or "
			    "ldaps://host:port");
		else if (strncmp(d->uri, "ldap://", 7) == 0 && !d->starttls)
			perr(p, line_of(p, "directory", "uri"),
			    "uri: ldap:// needs starttls = yes (passwords "
			    "never "
			    "cross in clear); or use ldaps://");
		else if (strncmp(d->uri, "ldaps://", 8) == 0 && d->starttls)
			perr(p, line_of(p, "directory", "starttls"),
			    "starttls = yes contradicts ldaps:// in uri");
		if (d->ca_file == NULL)
			perr(p, 0,
			    "[directory] ca is required (the CA of the "
			    "directory servers, pinned)");
		if (d->bind_dn == NULL)
			perr(p, 0, "[directory] bind_dn is required");
		if (d->bind_pw_file == NULL)
			perr(p, 0, "[directory] bind_pw_file is required");
		if (d->ndomains == 0)
			perr(p, 0,
			    "[directory] needs at least one "
			    "[domain NAME] section");
		check_secret(p, "bind password file", d->bind_pw_file,
		    "directory", "bind_pw_file");
		check_readable(
		    p, "directory CA file", d->ca_file, "directory", "ca");
		if (d->default_domain != NULL) {
			int found = 0;
			for (size_t i = 0; i < d->ndomains; i++)
				if (strcasecmp(d->domains[i].netbios,
				        d->default_domain) == 0)
					found = 1;
			if (!found)
				perr(p,
				    line_of(p, "directory", "default_domain"),
				    "default_domain: no [domain %s] section",
				    d->default_domain);
		} else if (d->ndomains == 1) {
			d->default_domain = strdup(d->domains[0].netbios);
		}
	} else {
		if (d->ndomains > 0)
			perr(p, p->domain_line[0],
			    "[domain] sections need a [directory] section");
	}
	for (size_t i = 0; i < d->ndomains; i++) {
		if (d->domains[i].realm == NULL)
			perr(p, p->domain_line[i],
			    "[domain %s]: realm is "
			    "required",
			    d->domains[i].netbios);
		if (d->domains[i].base_dn == NULL)
			perr(p, p->domain_line[i],
			    "[domain %s]: base_dn is "
			    "required",
			    d->domains[i].netbios);
	}
	if (c->require_computer_object && !c->have_directory)
		perr(p, line_of(p, "directory", "require_computer_object"),
		    "require_computer_object needs a directory (uri)");
	if (c->metrics_listen != NULL && c->metrics_listen[0] != '\0') {
		char why[300];
		if (check_metrics_listen(c->metrics_listen,
		        c->metrics_allow_remote, why, sizeof(why)) != 0)
			perr(p, line_of(p, "metrics", "listen"),
			    "[metrics] listen: %s", why);
	}
	if (c->control_socket[0] != '/' || strlen(c->control_socket) >= 108)
		perr(p, line_of(p, "control", "socket"),
		    "[control] socket: an absolute path under 108 bytes");
	if (strcmp(c->store, "sqlite") == 0 && c->store_path == NULL)
		perr(p, 0, "[tickets] path is required with store = sqlite");
}

/* Reads what p->cfg was set up with. */
static struct bk_config *
load(struct pctx *p)
{
	struct bk_config *c;
	int rc;

	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		perr(p, 0, "out of memory");
		return NULL;
	}
	p->c = c;
	defaults(c);
	c->path = strdup(p->cfg.name);
	/* Continuation lines reach on_kv as a duplicate key on one line,
	 * which names them. Shape errors are the reader's: inih's own
	 * line number is not used. */
	p->cfg.check_line = rd_check_shape;
	rc = rp_cfg_ini_parse(&p->cfg, 1, on_kv, p);
	if (rc == -2)
		perr(p, 0, "out of memory");
	if (p->cfg.nerr == 0)
		finish(p);
	for (size_t i = 0; i < p->nseen; i++) {
		free(p->seen[i].section);
		free(p->seen[i].key);
	}
	if (p->cfg.nerr > 0) {
		bk_config_free(c);
		return NULL;
	}
	return c;
}

struct bk_config *
bk_config_load(const char *path, char *err, size_t errlen)
{
	struct pctx p;
	struct bk_config *c;

	memset(&p, 0, sizeof(p));
	if (rp_cfg_open(&p.cfg, path, err, errlen) != 0)
		return NULL;
	c = load(&p);
	rp_cfg_close(&p.cfg);
	return c;
}

struct bk_config *
bk_config_load_string(
    const char *name, const char *text, char *err, size_t errlen)
{
	struct pctx p;

	memset(&p, 0, sizeof(p));
	rp_cfg_init(&p.cfg, name, NULL, text, err, errlen);
	return load(&p);
}

void
bk_config_free(struct bk_config *c)
{
	if (c == NULL)
		return;
	free(c->path);
	free(c->listen);
	free(c->listen_host);
	free(c->cert);
	free(c->key);
	free(c->ca);
	free(c->ticket_key_file);
	az_dir_config_clear(&c->dir);
	free(c->policy_file);
	free_strv(c->mechanisms, c->nmechanisms);
	free(c->store);
	free(c->store_path);
	free(c->audit_path);
	free(c->metrics_listen);
	free(c->control_socket);
	free(c);
}

int
bk_config_has_mech(const struct bk_config *c, const char *mech)
{
	for (size_t i = 0; i < c->nmechanisms; i++)
		if (strcasecmp(c->mechanisms[i], mech) == 0)
			return 1;
	return 0;
}
