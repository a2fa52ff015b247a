/*
 * bk.h - the broker's one context struct and the records shared by its
 * modules. No global mutable state: everything hangs off struct bk_ctx,
 * which is passed explicitly (it is the `ctx` of every rp_conn).
 *
 * Modules and who owns what:
 *   rabrokerd_main.c  startup, signals, -n
 *   bk_config.c       the configuration file (INI, file:line errors)
 *   bk_server.c       listener, accept, per-connection setup/teardown
 *   bk_methods.c      THE method table (name, state, params spec, handler)
 *   bk_session.c      hello, ping, auth.start/auth.step (helpers)
 *   bk_agent.c        agent registry: register, sessions, replace, offline
 *   bk_offer.c        offers, consent, ticket.connect, control, ticket.*
 *   bk_relay.c        relay.join and the byte splice
 *   bk_ticket.c bk_store*.c bk_audit.c   tickets, storage, audit trail
 */
#ifndef BK_H
#define BK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct event;
struct sockaddr;
struct evconnlistener;
struct rp_conn;
struct rp_tls_ctx;
struct rp_tls_pool;
struct az_dir;
struct az_sasl;
struct az_policy;
struct az_entry;
struct bk_store;
struct bk_audit;
struct bk_config;
struct bk_offers;    /* bk_offer.c's private state */
struct bk_server;    /* bk_server.c's private state */
struct bk_ratelimit; /* bk_session.c's private state */
struct bk_metrics;   /* bk_metrics.c's private state */
struct bk_control;   /* bk_control.c's private state */
struct bk_relays;    /* bk_relay.c's private state */

/* A logged-on session on a machine, as the agent reports it. */
struct bk_usess {
	char *id;
	char *user;
	char *kind; /* "graphical" | "console" | "remote" */
	int locked;
};

/* One online machine. Owned by the registry; looked up by FQDN. */
struct bk_agent {
	char *fqdn;    /* lower-case, from the certificate */
	char *dn;      /* computer object, NULL if not looked up */
	char **groups; /* machine groups "CORP\\kiosks" */
	size_t ngroups;
	char **addresses;
	size_t naddresses;
	struct bk_usess *sessions;
	size_t nsessions;
	struct rp_conn *conn; /* the live connection (a reference is held) */
	int64_t online_since;
	int64_t last_seen;
	int registered; /* agent.register done */
};

/*
 * Where a connection comes from, for per-source limits: an IPv4 address
 * (IPv4-mapped IPv6 included), or the /64 of an IPv6 address (one host
 * usually has a whole /64 to pick addresses from).
 */
struct bk_addrkey {
	unsigned char family; /* AF_INET, AF_INET6, 0 = unknown */
	unsigned char b[8];   /* 4 bytes (IPv4) or the /64 prefix */
};

/* Per-connection record (rp_conn_set_data). */
enum bk_role { BK_ROLE_NONE = 0, BK_ROLE_AGENT, BK_ROLE_HELPER };
struct bk_peer {
	enum bk_role role;
	struct bk_ctx *ctx;
	struct rp_conn *conn;
	struct bk_agent *agent; /* role agent, after register */
	char *machine;          /* role agent: certificate identity */
	struct az_entry *user;  /* role helper, after auth */
	struct az_sasl_sess *sasl;
	char addr[64]; /* peer address "ip:port" */
	/* Added by bk_server.c / bk_session.c (additive). */
	struct az_entry *computer;   /* role agent: directory computer object */
	struct bk_peer *prev, *next; /* every connection (bk_server.c) */
	int64_t since;               /* connected at (broker clock) */
	int busy;                    /* an async hello/auth is in flight */
	int closing;                 /* close requested by the broker */
	char mech[24];               /* SASL mechanism in progress */
	void *auth_pending;          /* bk_session.c: SASL step in flight */
	struct bk_addrkey akey;      /* source address or /64 (bk_server.c) */
	int pending;                 /* counted in max_pending_per_address */
};

struct bk_ctx {
	struct event_base *base;
	struct bk_config *cfg;
	struct rp_tls_ctx *tls;
	/* TLS handshakes off the loop ([broker] handshake_threads); NULL:
	 * on the loop. Callbacks still run on the loop. */
	struct rp_tls_pool *hspool;
	struct evconnlistener *listener;
	struct az_dir *dir; /* NULL when no directory configured */
	struct az_sasl *sasl;
	struct az_policy *policy;
	struct bk_store *store;
	struct bk_audit *audit;
	struct bk_agents *agents; /* registry (bk_agent.c) */
	struct bk_offers *offers;
	struct bk_relays *relays;
	unsigned nhelpers; /* connected helpers */
	int draining;      /* SIGTERM: no new offers */
	/* Added by the core (additive). */
	struct bk_server *server;    /* bk_server.c */
	struct bk_ratelimit *authrl; /* bk_session.c: auth failures */
	const char *config_path;     /* for messages */
	struct bk_metrics *metrics;  /* bk_metrics.c */
	struct bk_control *control;  /* bk_control.c */
};

/* bk_agent.c: the registry of online machines. */
struct bk_agents *bk_agents_new(void);
void bk_agents_free(struct bk_agents *a);
struct bk_agent *bk_agents_find(struct bk_agents *a, const char *fqdn);
size_t bk_agents_count(const struct bk_agents *a);
/* Calls fn for every online, registered agent; stops if fn returns != 0. */
int bk_agents_foreach(
    struct bk_agents *a, int (*fn)(struct bk_agent *ag, void *arg), void *arg);

/* Raw registry access for unit tests and benchmarks: a registered record
 * without a connection (NULL if the FQDN is present or out of memory), and
 * its removal (frees it). The broker itself goes through agent.register. */
struct bk_agent *bk_agents_add(struct bk_agents *a, const char *fqdn);
void bk_agents_remove(struct bk_agents *a, struct bk_agent *ag);

/* The agent's connection closed (bk_server.c calls it): if `ag` is still
 * that connection's agent, tell the offers, audit agent_offline, remove it
 * from the registry and free it. */
void bk_agents_conn_closed(
    struct bk_ctx *ctx, struct bk_peer *p, const char *why);
/* Closes agents silent for three keepalive intervals (periodic sweep). */
void bk_agents_sweep(struct bk_ctx *ctx);

/* bk_session.c: the peer is being freed: drop its SASL session and any
 * answer still owed to it. */
void bk_session_peer_gone(struct bk_peer *p);

/* bk_session.c: per-address counter of failed logins. */
struct bk_ratelimit *bk_ratelimit_new(void);
void bk_ratelimit_free(struct bk_ratelimit *rl);

/* bk_server.c: the key of sa (IPv4, or IPv6 /64), and its text
 * ("192.0.2.7", "2001:db8:1:2::/64"; out of at least 48 bytes). */
void bk_addrkey_from(const struct sockaddr *sa, struct bk_addrkey *k);
void bk_addrkey_text(const struct bk_addrkey *k, char *out, size_t len);
/* bk_server.c: the peer has logged in (helper authenticated, agent
 * identified by its certificate): it no longer counts against
 * max_pending_per_address. Idempotent. */
void bk_server_logged_in(struct bk_peer *p);

/* bk_session.c, exposed for tests: failures counted for key within
 * window_s at `now` (0 if none); count one more (returns the new count;
 * a full table evicts the entry whose window started first). */
unsigned bk_ratelimit_get(
    struct bk_ratelimit *rl, const char *key, int64_t now, unsigned window_s);
unsigned bk_ratelimit_add(
    struct bk_ratelimit *rl, const char *key, int64_t now, unsigned window_s);

/* Helpers for handlers. */
int64_t bk_now(void); /* broker clock, unix seconds */
/* The connection's peer record, or NULL once it is gone. */
struct bk_peer *bk_peer_of(struct rp_conn *c);
/* Writes an audit event (steals fields); logs when the trail is down.
 * Returns RP_OK or RP_ERR_AUDIT_UNAVAILABLE. ctx->audit may be NULL in
 * unit tests (then nothing is written). */
int bk_audit(struct bk_ctx *ctx, int ev, json_t *fields);

#endif
