/*
 * az_dir.h - the corporate directory (LDAP).
 *
 * Why a worker pool: libldap's asynchronous API covers searches and binds but
 * not connection set-up, StartTLS and the TLS handshake, and Cyrus SASL calls
 * its password-check callback synchronously. So directory work runs on a
 * small, bounded pool of threads, each with its own LDAP connections (one
 * bound as the service account for searches, one for verifying user
 * passwords by simple bind). Results are posted back to the event loop: the
 * loop never blocks on the directory. When the queue is full or the
 * directory is down, callers get RP_ERR_DIRECTORY_UNAVAILABLE within the
 * configured timeout.
 *
 * Security: ldaps:// or ldap:// + StartTLS that must succeed; the CA is
 * pinned and the host name verified; referrals are never chased; filter
 * values are escaped (RFC 4515); empty passwords and NUL bytes are refused
 * before any bind; passwords and bind results are never cached.
 */
#ifndef AZ_DIR_H
#define AZ_DIR_H

#include <stddef.h>

struct event_base;
struct az_dir;
struct az_worker; /* a worker thread's own LDAP connections */

enum az_group_strategy {
	AZ_GROUPS_MEMBEROF = 1, /* memberOf attribute (slapd dynlist, AD) */
	AZ_GROUPS_INCHAIN,      /* AD matching rule 1.2.840.113556.1.4.1941 */
	AZ_GROUPS_WALK,         /* iterative walk: depth cap, cycle detection */
};

struct az_domain {
	char *netbios; /* "CORP" (compared case-insensitively) */
	char *realm;   /* "corp.example" (user@realm) */
	char *base_dn; /* "dc=corp,dc=example" */
};

struct az_dir_config {
	char *uri;          /* "ldaps://127.0.0.1:6360" or "ldap://...:389" */
	int starttls;       /* with ldap://: StartTLS, must succeed */
	char *ca_file;      /* PEM: the organisation's CA, pinned */
	char *bind_dn;      /* service account */
	char *bind_pw_file; /* refused if readable by group or others */
	unsigned net_timeout_ms; /* connect/TLS; default 3000 */
	unsigned op_timeout_ms;  /* a whole request (queue wait, connect,
	                            searches, bind); default 5000 */
	unsigned workers;        /* default 4 */
	unsigned queue_max;      /* pending jobs; default 1024 */
	struct az_domain *domains;
	size_t ndomains;
	char *default_domain; /* NetBIOS name used for a bare "user" */
	/* Filters with one "%s" replaced by the escaped name. */
	char
	    *user_filter; /* default "(&(objectClass=inetOrgPerson)(uid=%s))" */
	char
	    *upn_filter; /* user@realm; NULL -> user_filter on the local part */
	char *
	    computer_filter; /* default "(&(objectClass=device)(cn=%s))", %s = FQDN */
	char *group_name_attr; /* attribute naming a group; default "cn" */
	enum az_group_strategy group_strategy;
	unsigned group_max_depth; /* walk; default 8 */
	unsigned cache_ttl_s;     /* groups; default 300 */
	unsigned cache_neg_ttl_s; /* unknown names; default 30 */
	unsigned cache_max;       /* entries; default 10000 */
	unsigned backoff_max_ms;  /* reconnect backoff cap; default 30000 */
	/* Added by the directory engineer (docs/CONFIG-directory.md): */
	char *user_name_attr;    /* names the account in "CORP\\name";
	                            default "uid" (AD: "sAMAccountName") */
	char *group_member_attr; /* walk: member DNs; default "member" */
};

/* A directory user or computer with its groups (nested included). */
struct az_entry {
	char *dn;
	char *account; /* canonical "CORP\\alice" or the computer's FQDN */
	char *domain;  /* NetBIOS name of its domain */
	char **groups; /* canonical "CORP\\helpdesk", nested included */
	size_t ngroups;
	char **group_dns;
	size_t ngroup_dns;
};
void az_entry_free(struct az_entry *e);
struct az_entry *az_entry_dup(const struct az_entry *e);

void az_dir_config_init(struct az_dir_config *c); /* defaults */
void az_dir_config_clear(struct az_dir_config *c);

/* Starts the pool. Checks the password file's permissions. NULL + err. */
struct az_dir *az_dir_new(struct event_base *base,
    const struct az_dir_config *c, char *err, size_t errlen);
/* Stops the workers (in-flight callbacks get RP_ERR_CLOSED) and frees. */
void az_dir_free(struct az_dir *d);

/* Completion callbacks run on the event loop thread. code is 0 or an rp_err:
 * RP_ERR_AUTH_FAILED (wrong password, unknown or ambiguous name),
 * RP_ERR_NOT_FOUND, RP_ERR_INVALID_PARAMS (malformed name, lookups only),
 * RP_ERR_DIRECTORY_UNAVAILABLE, RP_ERR_CONFIG (the configuration does not
 * fit the server, e.g. group_strategy inchain on a server other than AD),
 * RP_ERR_CLOSED (az_dir_free while pending). msg is for logs only: it
 * says e.g. unknown vs ambiguous, which a peer must not be told. `e` is owned by the
 * callee only for the duration of the callback (az_entry_dup to keep). */
typedef void (*az_entry_cb)(
    int code, const struct az_entry *e, const char *msg, void *arg);

/* These return 0 when the request is queued: cb then runs exactly once, on
 * the loop thread, never from inside the call. Otherwise they return
 * RP_ERR_DIRECTORY_UNAVAILABLE (queue full, logged as such, or pool
 * stopping) or RP_ERR_NOMEM, and cb is not called. */
/* Maps DOMAIN\user, user@realm or user to one DN and resolves its groups. */
int az_dir_lookup_user(
    struct az_dir *d, const char *name, az_entry_cb cb, void *arg);
/* Verifies a password by simple bind as the user's DN, then groups. */
int az_dir_check_password(struct az_dir *d, const char *name,
    const char *password, size_t pwlen, az_entry_cb cb, void *arg);
/* The same with a counted name (from JSON, which may carry \u0000): a NUL
 * byte inside is refused, never truncated. */
int az_dir_lookup_user_n(struct az_dir *d, const char *name, size_t namelen,
    az_entry_cb cb, void *arg);
int az_dir_check_password_n(struct az_dir *d, const char *name, size_t namelen,
    const char *password, size_t pwlen, az_entry_cb cb, void *arg);
/* Finds a computer object by FQDN; its DN gives the OU, plus its groups. */
int az_dir_lookup_computer(
    struct az_dir *d, const char *fqdn, az_entry_cb cb, void *arg);
/* Drops cached names and groups (SIGHUP, tests). */
void az_dir_cache_flush(struct az_dir *d);

/*
 * Low level, for work that must run inside a worker (the SASL exchange: Cyrus
 * calls its password check synchronously). `job` runs on a worker thread with
 * that worker's connections; `done` then runs on the loop thread. Returns 0,
 * or RP_ERR_DIRECTORY_UNAVAILABLE if the queue is full / pool stopped (then
 * neither function is called).
 */
typedef void (*az_job_fn)(struct az_worker *w, void *arg);
/* Every accepted job runs exactly once and then its done runs, also when
 * az_dir_free drains the queue: then the az_worker_* calls inside return
 * RP_ERR_CLOSED at once. */
typedef void (*az_done_fn)(void *arg);
int az_dir_submit(struct az_dir *d, az_job_fn job, az_done_fn done, void *arg);

/* Synchronous calls, valid only inside an az_job_fn on that worker. They
 * return 0 or an rp_err, and set *out (free with az_entry_free). */
int az_worker_lookup_user(struct az_worker *w, const char *name,
    struct az_entry **out, char *msg, size_t msglen);
int az_worker_check_password(struct az_worker *w, const char *name,
    const char *password, size_t pwlen, struct az_entry **out, char *msg,
    size_t msglen);
int az_worker_lookup_computer(struct az_worker *w, const char *fqdn,
    struct az_entry **out, char *msg, size_t msglen);

/* Per-operation directory latency, for metrics (microseconds). */
struct az_dir_stats {
	unsigned long long ops, errors, cache_hits, cache_misses;
	unsigned long long
	    lat_buckets[12]; /* <=0.5,1,2,5,10,20,50,100,200,500,1000ms,+Inf */
	unsigned long long lat_sum_us; /* all latencies added up */
	int up; /* last operation reached the directory */
	unsigned long long user_binds; /* simple binds sent for users */
	unsigned long long queued;     /* jobs waiting now */
};
void az_dir_get_stats(struct az_dir *d, struct az_dir_stats *s);

#endif
