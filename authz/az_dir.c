/*
 * az_dir.c - the directory worker pool (see az_dir.h for why a pool).
 *
 * Threads: `workers` pthreads take jobs from one bounded FIFO (mutex +
 * condition variable). Each worker owns two LDAP handles, opened lazily:
 * `svc`, bound as the service account, for searches, and `usr`, never
 * bound as the service, on which user passwords are verified by simple
 * bind. A handle is used by its worker only, so libldap needs no locking.
 *
 * Back to the loop: a finished job goes on a "done" list and the worker
 * writes one byte to a non-blocking pipe whose read end is a persistent
 * libevent read event; the loop drains the pipe and runs the callbacks.
 * This needs no evthread_use_pthreads() (no libevent_pthreads) and keeps
 * libevent itself single-threaded.
 *
 * Failures: connect, TLS, StartTLS and service-bind failures, timeouts and
 * "server down" put the pool into a shared backoff (250 ms doubling up to
 * backoff_max_ms). Until the backoff expires every job fails at once with
 * RP_ERR_DIRECTORY_UNAVAILABLE; then one worker probes with a fresh
 * connection while the others keep failing fast; success ends the
 * backoff. A handle that worked before and reports "server down" (a
 * restarted slapd) is reopened once within the same request.
 *
 * Time: every request has a deadline of op_timeout_ms from submission; the
 * connect timeout and each LDAP operation's timeout are cut to what is left,
 * so the callback runs within op_timeout (plus scheduling).
 *
 * Never cached or logged: passwords and bind results. Cached (az_cache):
 * name -> DN (positive cache_ttl_s, negative cache_neg_ttl_s) and DN ->
 * groups (cache_ttl_s).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <ldap.h>

#include "az_cache.h"
#include "az_dir.h"
#include "az_names.h"
#include "rp_error.h"
#include "rp_log.h"

#define MSGLEN 320
#define BACKOFF_MIN_MS 250
#define MAX_GROUPS 4096
#define WALK_BATCH 16
#define PW_MAX 1024
/* LDAP_CAP_ACTIVE_DIRECTORY_OID and _ADAM_OID (AD LDS) */
#define AD_CAP_OID "1.2.840.113556.1.4.800"
#define ADLDS_CAP_OID "1.2.840.113556.1.4.1851"
#define INCHAIN_OID "1.2.840.113556.1.4.1941"

enum job_kind { J_USER = 1, J_PASSWORD, J_COMPUTER, J_CUSTOM };

struct az_job {
	struct az_job *next;
	enum job_kind kind;
	char *name;
	size_t namelen;
	char *pw;
	size_t pwlen;
	az_entry_cb cb;
	void *arg;
	az_job_fn fn;
	az_done_fn done;
	unsigned long long deadline_ms;
	int code;
	struct az_entry *entry;
	char msg[MSGLEN];
};

struct az_worker {
	struct az_dir *d;
	pthread_t th;
	unsigned idx;
	LDAP *svc;     /* bound as the service account: searches */
	LDAP *usr;     /* user binds only */
	int svc_is_ad; /* -1 unknown, 0/1: the server's rootDSE said */
	int closing;   /* az_dir_free is draining: fail at once */
	int probing;   /* this worker holds the reconnect probe */
	unsigned long long deadline_ms;
	struct ldap_conncb conncb; /* socket timeouts, see on_conn_add */
	unsigned long long io_deadline_ms; /* while connecting, else 0 */
	int tcp_up; /* the connection being opened got past TCP */
};

struct az_dir {
	struct event_base *base;
	struct az_dir_config c; /* deep copy */
	char *pw;               /* service password */
	size_t pwlen;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct az_job *qhead, *qtail; /* waiting */
	size_t qlen;
	struct az_job *dhead, *dtail; /* finished, for the loop */
	int stopping;

	/* shared reconnect state (under mu) */
	unsigned backoff_ms;
	unsigned long long retry_at_ms;
	int probe_taken;
	char down_msg[MSGLEN];

	struct az_dir_stats st; /* under mu */

	int wake[2];
	struct event *ev;
	struct az_worker *w;
	unsigned nw, started;
	struct az_cache *cache;
};

/* ---- small helpers ---- */

static unsigned long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL +
	    (unsigned long long)ts.tv_nsec / 1000000ULL;
}

static unsigned long long
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL;
}

static char *
xstrdup(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static void
lower(char *s)
{
	for (; *s != '\0'; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s + 32);
}

static void
wipe(void *p, size_t n)
{
	if (p != NULL)
		explicit_bzero(p, n);
}

/* ---- entries ---- */

void
az_entry_free(struct az_entry *e)
{
	if (e == NULL)
		return;
	free(e->dn);
	free(e->account);
	free(e->domain);
	for (size_t i = 0; i < e->ngroups; i++)
		free(e->groups[i]);
	free(e->groups);
	for (size_t i = 0; i < e->ngroup_dns; i++)
		free(e->group_dns[i]);
	free(e->group_dns);
	free(e);
}

static char **
strv_dup(char *const *v, size_t n)
{
	char **o;

	if ((o = calloc(n + 1, sizeof(*o))) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if ((o[i] = strdup(v[i])) == NULL) {
			while (i > 0)
				free(o[--i]);
			free(o);
			return NULL;
		}
	return o;
}

struct az_entry *
az_entry_dup(const struct az_entry *e)
{
	struct az_entry *n;

	if (e == NULL || (n = calloc(1, sizeof(*n))) == NULL)
		return NULL;
	n->dn = xstrdup(e->dn);
	n->account = xstrdup(e->account);
	n->domain = xstrdup(e->domain);
	n->groups = strv_dup(e->groups, e->ngroups);
	n->ngroups = e->ngroups;
	n->group_dns = strv_dup(e->group_dns, e->ngroup_dns);
	n->ngroup_dns = e->ngroup_dns;
	if ((e->dn != NULL && n->dn == NULL) ||
	    (e->account != NULL && n->account == NULL) ||
	    (e->domain != NULL && n->domain == NULL) || n->groups == NULL ||
	    n->group_dns == NULL) {
		if (n->groups == NULL)
			n->ngroups = 0;
		if (n->group_dns == NULL)
			n->ngroup_dns = 0;
		az_entry_free(n);
		return NULL;
	}
	return n;
}

/* ---- configuration ---- */

void
az_dir_config_init(struct az_dir_config *c)
{
	memset(c, 0, sizeof(*c));
	c->net_timeout_ms = 3000;
	c->op_timeout_ms = 5000;
	c->workers = 4;
	c->queue_max = 1024;
	c->user_filter = strdup("(&(objectClass=inetOrgPerson)(uid=%s))");
	c->computer_filter = strdup("(&(objectClass=device)(cn=%s))");
	c->group_name_attr = strdup("cn");
	c->group_strategy = AZ_GROUPS_WALK;
	c->group_max_depth = 8;
	c->cache_ttl_s = 300;
	c->cache_neg_ttl_s = 30;
	c->cache_max = 10000;
	c->backoff_max_ms = 30000;
	c->user_name_attr = strdup("uid");
	c->group_member_attr = strdup("member");
}

void
az_dir_config_clear(struct az_dir_config *c)
{
	if (c == NULL)
		return;
	free(c->uri);
	free(c->ca_file);
	free(c->bind_dn);
	free(c->bind_pw_file);
	for (size_t i = 0; i < c->ndomains; i++) {
		free(c->domains[i].netbios);
		free(c->domains[i].realm);
		free(c->domains[i].base_dn);
	}
	free(c->domains);
	free(c->default_domain);
	free(c->user_filter);
	free(c->upn_filter);
	free(c->computer_filter);
	free(c->group_name_attr);
	free(c->user_name_attr);
	free(c->group_member_attr);
	memset(c, 0, sizeof(*c));
}

static int
config_copy(struct az_dir_config *dst, const struct az_dir_config *src)
{
	*dst = *src;
	dst->uri = xstrdup(src->uri);
	dst->ca_file = xstrdup(src->ca_file);
	dst->bind_dn = xstrdup(src->bind_dn);
	dst->bind_pw_file = xstrdup(src->bind_pw_file);
	dst->default_domain = xstrdup(src->default_domain);
	dst->user_filter = xstrdup(src->user_filter);
	dst->upn_filter = xstrdup(src->upn_filter);
	dst->computer_filter = xstrdup(src->computer_filter);
	dst->group_name_attr =
	    xstrdup(src->group_name_attr ? src->group_name_attr : "cn");
	dst->user_name_attr =
	    xstrdup(src->user_name_attr ? src->user_name_attr : "uid");
	dst->group_member_attr =
	    xstrdup(src->group_member_attr ? src->group_member_attr : "member");
	dst->domains = NULL;
	dst->ndomains = 0;
	if (src->ndomains > 0) {
		dst->domains = calloc(src->ndomains, sizeof(*dst->domains));
		if (dst->domains == NULL)
			return -1;
		dst->ndomains = src->ndomains;
		for (size_t i = 0; i < src->ndomains; i++) {
			dst->domains[i].netbios =
			    xstrdup(src->domains[i].netbios);
			dst->domains[i].realm = xstrdup(src->domains[i].realm);
			dst->domains[i].base_dn =
			    xstrdup(src->domains[i].base_dn);
		}
	}
	return 0;
}

/* Checks what can be checked without the server. 0 or -1 + err. */
static int
config_check(const struct az_dir_config *c, char *err, size_t errlen)
{
	char why[200];
	LDAPURLDesc *lud = NULL;

	if (c->uri == NULL || *c->uri == '\0') {
		snprintf(err, errlen, "directory: uri is required");
		return -1;
	}
	{
		char *list = strdup(c->uri), *save = NULL;
		int bad = 0;

		if (list == NULL) {
			snprintf(err, errlen, "directory: out of memory");
			return -1;
		}
		for (char *u = strtok_r(list, " ,", &save); u != NULL && !bad;
		     u = strtok_r(NULL, " ,", &save)) {
			if (ldap_url_parse(u, &lud) != LDAP_URL_SUCCESS) {
				snprintf(err, errlen,
				    "directory: uri \"%s\" is not an LDAP URL",
				    u);
				bad = 1;
			} else if (strcasecmp(lud->lud_scheme, "ldaps") == 0 &&
			    c->starttls) {
				snprintf(err, errlen,
				    "directory: uri %s is ldaps://: set "
				    "starttls = no (StartTLS is for ldap://)",
				    u);
				bad = 1;
			} else if (strcasecmp(lud->lud_scheme, "ldap") == 0 &&
			    !c->starttls) {
				snprintf(err, errlen,
				    "directory: uri %s is plain ldap:// "
				    "without "
				    "starttls: refused (use ldaps:// or "
				    "starttls = yes)",
				    u);
				bad = 1;
			} else if (strcasecmp(lud->lud_scheme, "ldap") != 0 &&
			    strcasecmp(lud->lud_scheme, "ldaps") != 0) {
				snprintf(err, errlen,
				    "directory: uri %s: only ldaps:// and "
				    "ldap:// (with StartTLS) are supported",
				    u);
				bad = 1;
			}
			if (lud != NULL)
				ldap_free_urldesc(lud);
			lud = NULL;
		}
		free(list);
		if (bad)
			return -1;
	}
	if (c->ca_file == NULL || access(c->ca_file, R_OK) != 0) {
		snprintf(err, errlen, "directory: ca_file %s: %s",
		    c->ca_file ? c->ca_file : "(not set)",
		    c->ca_file ? strerror(errno) : "the CA must be pinned");
		return -1;
	}
	if (c->bind_dn == NULL || *c->bind_dn == '\0' ||
	    c->bind_pw_file == NULL) {
		snprintf(err, errlen,
		    "directory: bind_dn and bind_pw_file are required");
		return -1;
	}
	if (c->ndomains == 0) {
		snprintf(err, errlen, "directory: no domain configured");
		return -1;
	}
	for (size_t i = 0; i < c->ndomains; i++) {
		const struct az_domain *dm = &c->domains[i];

		if (dm->netbios == NULL || *dm->netbios == '\0' ||
		    dm->realm == NULL || *dm->realm == '\0' ||
		    dm->base_dn == NULL || *dm->base_dn == '\0') {
			snprintf(err, errlen,
			    "directory: domain %zu needs a NetBIOS name, a "
			    "realm and a base_dn",
			    i + 1);
			return -1;
		}
		if (az_dn_within(dm->base_dn, "") == -1) {
			snprintf(err, errlen,
			    "directory: domain %s: base_dn \"%s\" is malformed",
			    dm->netbios, dm->base_dn);
			return -1;
		}
	}
	if (c->default_domain != NULL &&
	    az_domain_find(c->domains, c->ndomains, c->default_domain) == -1) {
		snprintf(err, errlen,
		    "directory: default_domain %s is not a configured domain",
		    c->default_domain);
		return -1;
	}
	if (c->user_filter == NULL ||
	    az_filter_check(c->user_filter, why, sizeof(why)) == -1 ||
	    (c->upn_filter != NULL &&
	        az_filter_check(c->upn_filter, why, sizeof(why)) == -1) ||
	    c->computer_filter == NULL ||
	    az_filter_check(c->computer_filter, why, sizeof(why)) == -1) {
		snprintf(err, errlen, "directory: %s",
		    c->user_filter && c->computer_filter ? why
		                                         : "filter missing");
		return -1;
	}
	if (c->group_strategy != AZ_GROUPS_MEMBEROF &&
	    c->group_strategy != AZ_GROUPS_INCHAIN &&
	    c->group_strategy != AZ_GROUPS_WALK) {
		snprintf(err, errlen, "directory: unknown group strategy %d",
		    (int)c->group_strategy);
		return -1;
	}
	if (c->workers == 0 || c->workers > 256 || c->queue_max == 0 ||
	    c->net_timeout_ms == 0 || c->op_timeout_ms == 0 ||
	    c->group_max_depth == 0) {
		snprintf(err, errlen,
		    "directory: workers (1..256), queue_max, timeouts and "
		    "group_max_depth must be positive");
		return -1;
	}
	return 0;
}

/* Reads the service password: the file must not be accessible by group or
 * others; one trailing newline is removed. Never logged. */
static int
read_pw_file(struct az_dir *d, const char *path, char *err, size_t errlen)
{
	char buf[PW_MAX + 2];
	struct stat sb;
	ssize_t n;
	size_t len = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		snprintf(err, errlen, "directory: bind_pw_file %s: %s", path,
		    strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode)) {
		snprintf(err, errlen,
		    "directory: bind_pw_file %s: not a regular file", path);
		close(fd);
		return -1;
	}
	if ((sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		snprintf(err, errlen,
		    "directory: bind_pw_file %s has mode %04o: readable or "
		    "writable by group or others, refused (chmod 600)",
		    path, (unsigned)(sb.st_mode & 07777));
		close(fd);
		return -1;
	}
	while (len < sizeof(buf) &&
	    (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "directory: bind_pw_file %s: %s",
			    path, strerror(errno));
			close(fd);
			wipe(buf, sizeof(buf));
			return -1;
		}
		len += (size_t)n;
	}
	close(fd);
	if (len > PW_MAX) {
		snprintf(err, errlen,
		    "directory: bind_pw_file %s: longer than %d bytes", path,
		    PW_MAX);
		wipe(buf, sizeof(buf));
		return -1;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len == 0 || memchr(buf, '\0', len) != NULL) {
		snprintf(err, errlen,
		    "directory: bind_pw_file %s: empty or contains a NUL byte",
		    path);
		wipe(buf, sizeof(buf));
		return -1;
	}
	if ((d->pw = malloc(len + 1)) == NULL) {
		wipe(buf, sizeof(buf));
		snprintf(err, errlen, "directory: out of memory");
		return -1;
	}
	memcpy(d->pw, buf, len);
	d->pw[len] = '\0';
	d->pwlen = len;
	wipe(buf, sizeof(buf));
	return 0;
}

/* ---- shared state: stats, backoff ---- */

static void
stat_op(struct az_dir *d, unsigned long long us, int failed)
{
	static const unsigned long long bounds_us[11] = {500, 1000, 2000, 5000,
	    10000, 20000, 50000, 100000, 200000, 500000, 1000000};
	size_t b = 0;

	while (b < 11 && us > bounds_us[b])
		b++;
	pthread_mutex_lock(&d->mu);
	d->st.ops++;
	if (failed)
		d->st.errors++;
	d->st.lat_buckets[b]++;
	d->st.lat_sum_us += us;
	pthread_mutex_unlock(&d->mu);
}

static void
note_up(struct az_worker *w)
{
	struct az_dir *d = w->d;
	int was_down;

	pthread_mutex_lock(&d->mu);
	was_down = d->backoff_ms > 0;
	d->backoff_ms = 0;
	d->retry_at_ms = 0;
	d->probe_taken = 0;
	d->st.up = 1;
	pthread_mutex_unlock(&d->mu);
	w->probing = 0;
	if (was_down)
		log_info("directory %s: reachable again", d->c.uri);
}

static void
note_down(struct az_worker *w, const char *why)
{
	struct az_dir *d = w->d;
	unsigned long long now = now_ms();
	unsigned b = 0;
	int first;

	pthread_mutex_lock(&d->mu);
	first = d->backoff_ms == 0;
	if (first || w->probing || now >= d->retry_at_ms) {
		if (d->backoff_ms == 0)
			d->backoff_ms = BACKOFF_MIN_MS;
		else if (d->backoff_ms < d->c.backoff_max_ms / 2)
			d->backoff_ms *= 2;
		else
			d->backoff_ms = d->c.backoff_max_ms;
		if (d->backoff_ms > d->c.backoff_max_ms)
			d->backoff_ms = d->c.backoff_max_ms;
		d->retry_at_ms = now + d->backoff_ms;
		b = d->backoff_ms;
	}
	if (w->probing)
		d->probe_taken = 0;
	d->st.up = 0;
	snprintf(d->down_msg, sizeof(d->down_msg), "%s", why);
	pthread_mutex_unlock(&d->mu);
	w->probing = 0;
	if (first)
		log_warnx(
		    "directory unavailable: %s; retrying in %u ms", why, b);
	else if (b > 0)
		log_debug("directory still unavailable: %s; next try in %u ms",
		    why, b);
}

/* A job that took the probe but ended without a verdict (no operation
 * was sent) hands it back, so another worker may probe. */
static void
probe_release(struct az_worker *w)
{
	struct az_dir *d = w->d;

	if (!w->probing)
		return;
	pthread_mutex_lock(&d->mu);
	d->probe_taken = 0;
	pthread_mutex_unlock(&d->mu);
	w->probing = 0;
}

/* 0: go ahead and connect; -1: in backoff, fail fast (msg set). */
static int
gate(struct az_worker *w, char *msg, size_t msglen)
{
	struct az_dir *d = w->d;
	unsigned long long now = now_ms();
	int r = 0;

	if (w->probing)
		return 0; /* this worker is the one probing */
	pthread_mutex_lock(&d->mu);
	if (d->backoff_ms > 0) {
		if (now < d->retry_at_ms) {
			snprintf(msg, msglen,
			    "directory unavailable (%s); next attempt in %llu "
			    "ms",
			    d->down_msg, d->retry_at_ms - now);
			r = -1;
		} else if (d->probe_taken) {
			snprintf(msg, msglen,
			    "directory unavailable (%s); reconnecting",
			    d->down_msg);
			r = -1;
		} else {
			d->probe_taken = 1;
			w->probing = 1;
		}
	}
	pthread_mutex_unlock(&d->mu);
	return r;
}

/* Milliseconds left for the current request; 0 when past the deadline. */
static long
left_ms(struct az_worker *w)
{
	unsigned long long now = now_ms();

	return w->deadline_ms > now ? (long)(w->deadline_ms - now) : 0;
}

static void
tv_ms(struct timeval *tv, long ms)
{
	if (ms < 1)
		ms = 1;
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (ms % 1000) * 1000;
}

/* ---- connections ---- */

static void
drop(LDAP **ld)
{
	if (*ld != NULL) {
		ldap_unbind_ext_s(*ld, NULL, NULL);
		*ld = NULL;
	}
}

static const char *
diag(LDAP *ld, char *buf, size_t len)
{
	char *s = NULL;

	buf[0] = '\0';
	if (ld != NULL &&
	    ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &s) ==
	        LDAP_OPT_SUCCESS &&
	    s != NULL) {
		/* libldap's placeholder says nothing: leave it out */
		if (*s != '\0' && strcmp(s, "(unknown error code)") != 0)
			snprintf(buf, len, " (%s)", s);
		ldap_memfree(s);
	}
	return buf;
}

/* Waits for the result of msgid within what is left of the deadline.
 * Returns an LDAP result code; LDAP_TIMEOUT when none came in time. */
static int
wait_result(struct az_worker *w, LDAP *ld, int msgid, char *dbuf, size_t dlen)
{
	LDAPMessage *res = NULL;
	struct timeval tv;
	char *dm = NULL;
	int rc, err = LDAP_OTHER;

	dbuf[0] = '\0';
	tv_ms(&tv, left_ms(w));
	rc = ldap_result(ld, msgid, LDAP_MSG_ALL, &tv, &res);
	if (rc == 0) {
		ldap_abandon_ext(ld, msgid, NULL, NULL);
		return LDAP_TIMEOUT;
	}
	if (rc == -1) {
		ldap_get_option(ld, LDAP_OPT_RESULT_CODE, &err);
		diag(ld, dbuf, dlen);
		return err != LDAP_SUCCESS ? err : LDAP_SERVER_DOWN;
	}
	rc = ldap_parse_result(ld, res, &err, NULL, &dm, NULL, NULL, 1);
	if (rc != LDAP_SUCCESS)
		return rc;
	if (dm != NULL) {
		if (*dm != '\0')
			snprintf(dbuf, dlen, " (%s)", dm);
		ldap_memfree(dm);
	}
	return err;
}

static int
simple_bind(struct az_worker *w, LDAP *ld, const char *dn, const char *pw,
    size_t pwlen, char *dbuf, size_t dlen)
{
	struct berval cred;
	int msgid, rc;

	cred.bv_val = (char *)pw;
	cred.bv_len = pwlen;
	rc =
	    ldap_sasl_bind(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, &msgid);
	if (rc != LDAP_SUCCESS) {
		diag(ld, dbuf, dlen);
		return rc;
	}
	return wait_result(w, ld, msgid, dbuf, dlen);
}

/*
 * Bounding the TLS handshake. libldap 2.5 puts the socket back into
 * blocking mode after the TCP connect, and its handshake loop has no
 * deadline unless the handle is asynchronous: an ldaps:// server (or a
 * StartTLS one) that accepted the connection but does not answer - stopped,
 * overloaded - would hold the worker forever. So, once TCP is up (the
 * connection callback below, run before any TLS byte):
 *   - SO_RCVTIMEO/SO_SNDTIMEO make a stuck read or write return EAGAIN;
 *   - a thin Sockbuf I/O layer under TLS turns that EAGAIN into ETIMEDOUT
 *     once the connect deadline has passed, which gnutls treats as a hard
 *     error, so the handshake fails instead of being retried.
 * After the connect io_deadline_ms is 0 and the layer passes everything
 * through; later reads happen only after poll() said data is there.
 */
static int
dl_setup(Sockbuf_IO_Desc *sbiod, void *arg)
{
	sbiod->sbiod_pvt = arg;
	return 0;
}

static int
dl_remove(Sockbuf_IO_Desc *sbiod)
{
	(void)sbiod;
	return 0;
}

static int
dl_ctrl(Sockbuf_IO_Desc *sbiod, int opt, void *arg)
{
	return LBER_SBIOD_CTRL_NEXT(sbiod, opt, arg);
}

static int
dl_timed_out(Sockbuf_IO_Desc *sbiod)
{
	struct az_worker *w = sbiod->sbiod_pvt;

	return (errno == EAGAIN || errno == EWOULDBLOCK) &&
	    w->io_deadline_ms != 0 && now_ms() >= w->io_deadline_ms;
}

static ber_slen_t
dl_read(Sockbuf_IO_Desc *sbiod, void *buf, ber_len_t len)
{
	ber_slen_t n = LBER_SBIOD_READ_NEXT(sbiod, buf, len);

	if (n < 0 && dl_timed_out(sbiod))
		errno = ETIMEDOUT;
	return n;
}

static ber_slen_t
dl_write(Sockbuf_IO_Desc *sbiod, void *buf, ber_len_t len)
{
	ber_slen_t n = LBER_SBIOD_WRITE_NEXT(sbiod, buf, len);

	if (n < 0 && dl_timed_out(sbiod))
		errno = ETIMEDOUT;
	return n;
}

static Sockbuf_IO deadline_io = {
    dl_setup, dl_remove, dl_ctrl, dl_read, dl_write, NULL};

static int
on_conn_add(LDAP *ld, Sockbuf *sb, LDAPURLDesc *srv, struct sockaddr *addr,
    struct ldap_conncb *ctx)
{
	struct az_worker *w = ctx->lc_arg;
	long ms = left_ms(w);
	struct timeval tv;
	ber_socket_t fd;

	(void)ld;
	(void)srv;
	(void)addr;
	if (ms > (long)w->d->c.net_timeout_ms)
		ms = (long)w->d->c.net_timeout_ms;
	tv_ms(&tv, ms < 100 ? ms : ms / 4);
	if (ber_sockbuf_ctrl(sb, LBER_SB_OPT_GET_FD, &fd) == 1 && fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (ber_sockbuf_add_io(
	        sb, &deadline_io, LBER_SBIOD_LEVEL_TRANSPORT - 1, w) != 0)
		return -1;
	w->tcp_up = 1;
	return 0;
}

static void
on_conn_del(LDAP *ld, Sockbuf *sb, struct ldap_conncb *ctx)
{
	(void)ld;
	(void)sb;
	(void)ctx;
}

/* Says what went wrong while connecting: TCP, StartTLS refused, or the
 * TLS handshake (libldap's own text for the latter is often only
 * "unknown error code"). Always ends saying that nothing was sent in
 * clear, since no bind happens on a failed connection. */
static void
tls_failure(struct az_worker *w, LDAP *ld, int rc, char *msg, size_t msglen)
{
	const struct az_dir_config *c = &w->d->c;
	char db[200];

	diag(ld, db, sizeof(db));
	if (!w->tcp_up)
		snprintf(msg, msglen, "directory %s: cannot connect: %s%s",
		    c->uri, ldap_err2string(rc), db);
	else if (w->io_deadline_ms != 0 && now_ms() >= w->io_deadline_ms)
		snprintf(msg, msglen,
		    "directory %s: %s timed out (net_timeout %u ms); no bind "
		    "was attempted",
		    c->uri, c->starttls ? "StartTLS" : "TLS handshake",
		    c->net_timeout_ms);
	else if (rc == LDAP_CONNECT_ERROR || !c->starttls)
		snprintf(msg, msglen,
		    "directory %s: %sTLS handshake failed%s: the server "
		    "certificate is not issued by the CA in %s, does not "
		    "name the host of the uri, or TLS 1.2 is not offered; no "
		    "bind was attempted",
		    c->uri, c->starttls ? "StartTLS accepted but the " : "", db,
		    c->ca_file);
	else
		snprintf(msg, msglen,
		    "directory %s: %s failed: %s%s; no bind was attempted",
		    c->uri, c->starttls ? "StartTLS" : "connect",
		    ldap_err2string(rc), db);
}

/* Opens a handle: options, TLS (ldaps:// or StartTLS that must succeed)
 * and, for the service handle, the service bind. Returns 0 or an rp_err. */
static int
conn_open(
    struct az_worker *w, LDAP **out, int bind_service, char *msg, size_t msglen)
{
	struct az_dir *d = w->d;
	const struct az_dir_config *c = &d->c;
	int v3 = LDAP_VERSION3, hard = LDAP_OPT_X_TLS_HARD, zero = 0;
	int tmin = LDAP_OPT_X_TLS_PROTOCOL_TLS1_2;
	struct timeval ntv, otv;
	char db[200];
	long left = left_ms(w);
	LDAP *ld = NULL;
	int rc;

	*out = NULL;
	if (left <= 0) {
		snprintf(msg, msglen,
		    "directory: no time left to connect (op_timeout %u ms)",
		    c->op_timeout_ms);
		return RP_ERR_DIRECTORY_UNAVAILABLE;
	}
	tv_ms(&ntv,
	    left < (long)c->net_timeout_ms ? left : (long)c->net_timeout_ms);
	tv_ms(&otv, left);
	if ((rc = ldap_initialize(&ld, c->uri)) != LDAP_SUCCESS) {
		snprintf(msg, msglen, "directory %s: %s", c->uri,
		    ldap_err2string(rc));
		return RP_ERR_CONFIG;
	}
	w->conncb.lc_add = on_conn_add;
	w->conncb.lc_del = on_conn_del;
	w->conncb.lc_arg = w;
	if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3) ||
	    ldap_set_option(ld, LDAP_OPT_CONNECT_CB, &w->conncb) ||
	    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) ||
	    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &ntv) ||
	    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &otv) ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, c->ca_file) ||
	    /* only that file: not a TLS_CACERTDIR from ldap.conf */
	    ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTDIR, NULL) ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &hard) ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_PROTOCOL_MIN, &tmin) ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero)) {
		snprintf(msg, msglen,
		    "directory %s: cannot set LDAP/TLS options (CA %s)", c->uri,
		    c->ca_file);
		ldap_unbind_ext_s(ld, NULL, NULL);
		return RP_ERR_CONFIG;
	}
	w->io_deadline_ms = now_ms() +
	    (unsigned long long)(left < (long)c->net_timeout_ms
	            ? left
	            : (long)c->net_timeout_ms);
	w->tcp_up = 0;
	rc = c->starttls ? ldap_start_tls_s(ld, NULL, NULL) : ldap_connect(ld);
	if (rc != LDAP_SUCCESS) {
		tls_failure(w, ld, rc, msg, msglen);
		w->io_deadline_ms = 0;
		ldap_unbind_ext_s(ld, NULL, NULL);
		return RP_ERR_DIRECTORY_UNAVAILABLE;
	}
	w->io_deadline_ms = 0;
	if (bind_service) {
		rc = simple_bind(
		    w, ld, c->bind_dn, d->pw, d->pwlen, db, sizeof(db));
		if (rc != LDAP_SUCCESS) {
			snprintf(msg, msglen,
			    "directory %s: service bind as %s failed: %s%s",
			    c->uri, c->bind_dn, ldap_err2string(rc), db);
			ldap_unbind_ext_s(ld, NULL, NULL);
			return RP_ERR_DIRECTORY_UNAVAILABLE;
		}
		w->svc_is_ad = -1;
	}
	*out = ld;
	return 0;
}

/* Makes sure *ld is open. *reused: it was open already. */
static int
ensure(struct az_worker *w, LDAP **ld, int svc, int *reused, char *msg,
    size_t msglen)
{
	int rc;

	*reused = 0;
	if (w->closing) {
		snprintf(msg, msglen, "directory pool closing");
		return RP_ERR_CLOSED;
	}
	/* In back-off every worker fails fast, also one whose connection
	 * still looks open: it would only wait for its timeout. */
	if (gate(w, msg, msglen) == -1)
		return RP_ERR_DIRECTORY_UNAVAILABLE;
	if (*ld != NULL) {
		*reused = 1;
		return 0;
	}
	if ((rc = conn_open(w, ld, svc, msg, msglen)) != 0) {
		note_down(w, msg);
		return rc;
	}
	note_up(w);
	return 0;
}

static int
is_down(int rc)
{
	return rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR ||
	    rc == LDAP_TIMEOUT || rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY ||
	    rc == LDAP_LOCAL_ERROR || rc == LDAP_ENCODING_ERROR ||
	    rc == LDAP_DECODING_ERROR;
}

/* A search on the service handle. *res is set (free with ldap_msgfree)
 * on success, also for an empty result. */
static int
search(struct az_worker *w, const char *base, int scope, const char *filter,
    char **attrs, int sizelimit, LDAPMessage **res, char *msg, size_t msglen)
{
	struct az_dir *d = w->d;

	*res = NULL;
	for (int attempt = 0; attempt < 2; attempt++) {
		unsigned long long t0;
		struct timeval tv;
		char db[200];
		int reused, rc;
		long left;

		if ((rc = ensure(w, &w->svc, 1, &reused, msg, msglen)) != 0)
			return rc;
		if ((left = left_ms(w)) <= 0) {
			snprintf(msg, msglen,
			    "directory %s: no answer within op_timeout (%u ms)",
			    d->c.uri, d->c.op_timeout_ms);
			return RP_ERR_DIRECTORY_UNAVAILABLE;
		}
		tv_ms(&tv, left);
		t0 = now_us();
		rc = ldap_search_ext_s(w->svc, base, scope, filter, attrs, 0,
		    NULL, NULL, &tv, sizelimit, res);
		stat_op(d, now_us() - t0,
		    rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED &&
		        rc != LDAP_NO_SUCH_OBJECT);
		if (!is_down(rc) && w->probing)
			note_up(w); /* the server answered the probe */
		if (rc == LDAP_SIZELIMIT_EXCEEDED && sizelimit == 0)
			log_warnx("directory: server size limit reached for "
			          "%s under \"%s\": results truncated",
			    filter, base);
		if (rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED ||
		    rc == LDAP_NO_SUCH_OBJECT) {
			return 0; /* *res may be NULL: first_entry copes */
		}
		diag(w->svc, db, sizeof(db));
		ldap_msgfree(*res);
		*res = NULL;
		if (is_down(rc)) {
			drop(&w->svc);
			/* A handle from before a server restart: retry once
			 * on a fresh connection within the same request. */
			if (rc == LDAP_SERVER_DOWN && reused && attempt == 0)
				continue;
			snprintf(msg, msglen, "directory %s: search: %s%s",
			    d->c.uri,
			    rc == LDAP_TIMEOUT ? "no answer within op_timeout"
			                       : ldap_err2string(rc),
			    db);
			note_down(w, msg);
			return RP_ERR_DIRECTORY_UNAVAILABLE;
		}
		snprintf(msg, msglen, "directory: search %s under \"%s\": %s%s",
		    filter, base, ldap_err2string(rc), db);
		return rc == LDAP_FILTER_ERROR ||
		        rc == LDAP_INAPPROPRIATE_MATCHING
		    ? RP_ERR_CONFIG
		    : RP_ERR_DIRECTORY_UNAVAILABLE;
	}
	return RP_ERR_DIRECTORY_UNAVAILABLE;
}

/* Simple bind as a user on the bind handle. 0, RP_ERR_AUTH_FAILED or
 * RP_ERR_DIRECTORY_UNAVAILABLE. The result is never cached. */
static int
user_bind(struct az_worker *w, const char *dn, const char *pw, size_t pwlen,
    char *msg, size_t msglen)
{
	struct az_dir *d = w->d;

	for (int attempt = 0; attempt < 2; attempt++) {
		unsigned long long t0;
		char db[200];
		int reused, rc;

		if ((rc = ensure(w, &w->usr, 0, &reused, msg, msglen)) != 0)
			return rc;
		if (left_ms(w) <= 0) {
			snprintf(msg, msglen,
			    "directory %s: no time left for the bind "
			    "(op_timeout "
			    "%u ms)",
			    d->c.uri, d->c.op_timeout_ms);
			return RP_ERR_DIRECTORY_UNAVAILABLE;
		}
		pthread_mutex_lock(&d->mu);
		d->st.user_binds++;
		pthread_mutex_unlock(&d->mu);
		t0 = now_us();
		rc = simple_bind(w, w->usr, dn, pw, pwlen, db, sizeof(db));
		stat_op(d, now_us() - t0,
		    rc != LDAP_SUCCESS && rc != LDAP_INVALID_CREDENTIALS);
		if (!is_down(rc) && w->probing)
			note_up(w);
		if (rc == LDAP_SUCCESS)
			return 0;
		if (rc == LDAP_INVALID_CREDENTIALS) {
			snprintf(msg, msglen, "invalid credentials for %s", dn);
			return RP_ERR_AUTH_FAILED;
		}
		if (is_down(rc)) {
			drop(&w->usr);
			if (rc == LDAP_SERVER_DOWN && reused && attempt == 0)
				continue;
			snprintf(msg, msglen, "directory %s: bind: %s%s",
			    d->c.uri,
			    rc == LDAP_TIMEOUT ? "no answer within op_timeout"
			                       : ldap_err2string(rc),
			    db);
			note_down(w, msg);
			return RP_ERR_DIRECTORY_UNAVAILABLE;
		}
		/* e.g. unwillingToPerform, inappropriateAuthentication,
		 * a locked account: refuse the login, keep the handle */
		snprintf(msg, msglen, "bind as %s refused: %s%s", dn,
		    ldap_err2string(rc), db);
		return RP_ERR_AUTH_FAILED;
	}
	return RP_ERR_DIRECTORY_UNAVAILABLE;
}

/* ---- groups ---- */

struct glist {
	char **dns, **names; /* names[i] NULL: outside every domain */
	char **norm;         /* normalised DNs: the cycle-detection set */
	size_t n, cap;
};

static void
glist_free(struct glist *g)
{
	for (size_t i = 0; i < g->n; i++) {
		free(g->dns[i]);
		free(g->names[i]);
		free(g->norm[i]);
	}
	free(g->dns);
	free(g->names);
	free(g->norm);
	memset(g, 0, sizeof(*g));
}

static int
glist_has(const struct glist *g, const char *norm)
{
	for (size_t i = 0; i < g->n; i++)
		if (strcmp(g->norm[i], norm) == 0)
			return 1;
	return 0;
}

/* Adds (dn, name) unless already there. 1 added, 0 present, -1 ENOMEM or
 * malformed DN, -2 too many groups. */
static int
glist_add(struct glist *g, const char *dn, const char *name)
{
	char *norm;

	if ((norm = az_dn_normalize(dn)) == NULL)
		return -1;
	if (glist_has(g, norm)) {
		free(norm);
		return 0;
	}
	if (g->n >= MAX_GROUPS) {
		free(norm);
		return -2;
	}
	if (g->n == g->cap) {
		size_t nc = g->cap ? g->cap * 2 : 8;
		char **a = realloc(g->dns, nc * sizeof(*a));
		if (a == NULL)
			goto nomem;
		g->dns = a;
		if ((a = realloc(g->names, nc * sizeof(*a))) == NULL)
			goto nomem;
		g->names = a;
		if ((a = realloc(g->norm, nc * sizeof(*a))) == NULL)
			goto nomem;
		g->norm = a;
		g->cap = nc;
	}
	g->dns[g->n] = strdup(dn);
	g->names[g->n] = name != NULL ? strdup(name) : NULL;
	g->norm[g->n] = norm;
	if (g->dns[g->n] == NULL || (name != NULL && g->names[g->n] == NULL)) {
		free(g->dns[g->n]);
		free(g->names[g->n]);
		free(norm);
		return -1;
	}
	g->n++;
	return 1;
nomem:
	free(norm);
	return -1;
}

/* "CORP\cn" for a group DN and the value naming it; NULL when the DN lies
 * outside every configured domain. */
static char *
canonical(struct az_dir *d, const char *dn, const char *value)
{
	int i = az_dn_domain(dn, d->c.domains, d->c.ndomains);
	char *s;

	if (i == -1 || value == NULL)
		return NULL;
	if (asprintf(&s, "%s\\%s", d->c.domains[i].netbios, value) == -1)
		return NULL;
	return s;
}

/* The first value of attr, malloc'd, or NULL. */
static char *
first_value(LDAP *ld, LDAPMessage *e, const char *attr)
{
	struct berval **v = ldap_get_values_len(ld, e, attr);
	char *s = NULL;

	if (v != NULL && v[0] != NULL &&
	    memchr(v[0]->bv_val, '\0', v[0]->bv_len) == NULL)
		s = strndup(v[0]->bv_val, v[0]->bv_len);
	ldap_value_free_len(v);
	return s;
}

/* ldap_first_entry that accepts an empty (NULL) result. */
static LDAPMessage *
first_entry(LDAP *ld, LDAPMessage *res)
{
	return ld != NULL && res != NULL ? ldap_first_entry(ld, res) : NULL;
}

/* Collects the groups of a search result into g (names from
 * group_name_attr). Returns the number of new groups, or -1. */
static int
collect(
    struct az_worker *w, LDAPMessage *res, struct glist *g, struct glist *next)
{
	struct az_dir *d = w->d;
	int added = 0;

	for (LDAPMessage *e = first_entry(w->svc, res); e != NULL;
	     e = ldap_next_entry(w->svc, e)) {
		char *dn = ldap_get_dn(w->svc, e), *v, *name;
		int r;

		if (dn == NULL)
			continue;
		v = first_value(w->svc, e, d->c.group_name_attr);
		name = canonical(d, dn, v);
		r = glist_add(g, dn, name);
		if (r == 1 && next != NULL && glist_add(next, dn, NULL) < 0)
			r = -1;
		free(v);
		free(name);
		ldap_memfree(dn);
		if (r == -2) {
			log_warnx("directory: more than %d groups, truncated",
			    MAX_GROUPS);
			break;
		}
		if (r < 0)
			return -1;
		added += r;
	}
	return added;
}

/* Breadth-first: the groups naming any DN of the frontier as a member,
 * level after level, at most group_max_depth levels; a group already seen
 * is not expanded again, which ends cycles. */
static int
groups_walk(struct az_worker *w, const char *dn, struct glist *g, char *msg,
    size_t msglen)
{
	struct az_dir *d = w->d;
	char *attrs[] = {d->c.group_name_attr, NULL};
	struct glist front = {0}, next = {0};
	unsigned depth;
	int rc = 0;

	if (glist_add(&front, dn, NULL) < 0)
		return RP_ERR_NOMEM;
	for (depth = 0; depth < d->c.group_max_depth && front.n > 0; depth++) {
		for (size_t i = 0; i < front.n && rc == 0; i += WALK_BATCH) {
			size_t end =
			    i + WALK_BATCH < front.n ? i + WALK_BATCH : front.n;
			char *filter = NULL, *tmp;
			size_t flen = 0;
			FILE *f = open_memstream(&filter, &flen);

			if (f == NULL) {
				rc = RP_ERR_NOMEM;
				break;
			}
			fputs("(|", f);
			for (size_t k = i; k < end; k++) {
				tmp = az_filter_escape(
				    front.dns[k], strlen(front.dns[k]));
				if (tmp == NULL) {
					rc = RP_ERR_NOMEM;
					break;
				}
				fprintf(
				    f, "(%s=%s)", d->c.group_member_attr, tmp);
				free(tmp);
			}
			fputs(")", f);
			if (fclose(f) != 0 || filter == NULL || rc != 0) {
				free(filter);
				rc = RP_ERR_NOMEM;
				break;
			}
			for (size_t k = 0; k < d->c.ndomains && rc == 0; k++) {
				LDAPMessage *res;

				rc = search(w, d->c.domains[k].base_dn,
				    LDAP_SCOPE_SUBTREE, filter, attrs, 0, &res,
				    msg, msglen);
				if (rc == 0 && collect(w, res, g, &next) == -1)
					rc = RP_ERR_NOMEM;
				ldap_msgfree(res);
			}
			free(filter);
		}
		glist_free(&front);
		front = next;
		memset(&next, 0, sizeof(next));
		if (rc != 0)
			break;
	}
	if (rc == 0 && front.n > 0)
		log_info("directory: group walk for %s stopped at "
		         "group_max_depth %u",
		    dn, d->c.group_max_depth);
	glist_free(&front);
	glist_free(&next);
	return rc;
}

/* Reads the root DSE once per service connection: AD and AD LDS advertise
 * their capability OIDs there; OpenLDAP does not. */
static int
server_is_ad(struct az_worker *w, char *msg, size_t msglen)
{
	char *attrs[] = {"supportedCapabilities", NULL};
	LDAPMessage *res;
	int rc;

	if (w->svc != NULL && w->svc_is_ad != -1)
		return w->svc_is_ad;
	rc = search(w, "", LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, &res,
	    msg, msglen);
	if (rc != 0)
		return -rc;
	w->svc_is_ad = 0;
	for (LDAPMessage *e = first_entry(w->svc, res); e != NULL;
	     e = ldap_next_entry(w->svc, e)) {
		struct berval **v = ldap_get_values_len(w->svc, e, attrs[0]);

		for (size_t i = 0; v != NULL && v[i] != NULL; i++)
			if ((v[i]->bv_len == strlen(AD_CAP_OID) &&
			        memcmp(v[i]->bv_val, AD_CAP_OID,
			            v[i]->bv_len) == 0) ||
			    (v[i]->bv_len == strlen(ADLDS_CAP_OID) &&
			        memcmp(v[i]->bv_val, ADLDS_CAP_OID,
			            v[i]->bv_len) == 0))
				w->svc_is_ad = 1;
		ldap_value_free_len(v);
	}
	ldap_msgfree(res);
	return w->svc_is_ad;
}

/* AD only: one search per domain with LDAP_MATCHING_RULE_IN_CHAIN, which
 * the server evaluates transitively. Other servers ignore the unknown rule
 * and answer "no groups", so the root DSE is checked first. */
static int
groups_inchain(struct az_worker *w, const char *dn, struct glist *g, char *msg,
    size_t msglen)
{
	struct az_dir *d = w->d;
	char *attrs[] = {d->c.group_name_attr, NULL};
	char *esc, *filter;
	int ad, rc = 0;

	if ((ad = server_is_ad(w, msg, msglen)) < 0)
		return -ad;
	if (ad == 0) {
		snprintf(msg, msglen,
		    "directory %s: group_strategy inchain needs Active "
		    "Directory (matching rule " INCHAIN_OID "), but the root "
		    "DSE does not list the AD capability " AD_CAP_OID
		    "; use group_strategy walk or memberof",
		    d->c.uri);
		return RP_ERR_CONFIG;
	}
	if ((esc = az_filter_escape(dn, strlen(dn))) == NULL)
		return RP_ERR_NOMEM;
	if (asprintf(&filter, "(%s:" INCHAIN_OID ":=%s)",
	        d->c.group_member_attr, esc) == -1) {
		free(esc);
		return RP_ERR_NOMEM;
	}
	free(esc);
	for (size_t k = 0; k < d->c.ndomains && rc == 0; k++) {
		LDAPMessage *res;

		rc = search(w, d->c.domains[k].base_dn, LDAP_SCOPE_SUBTREE,
		    filter, attrs, 0, &res, msg, msglen);
		if (rc == 0 && collect(w, res, g, NULL) == -1)
			rc = RP_ERR_NOMEM;
		ldap_msgfree(res);
	}
	free(filter);
	return rc;
}

/* The name of a group known by DN only (memberOf): from its first RDN when
 * that is group_name_attr (no round trip), else read from the entry. */
static char *
group_value(
    struct az_worker *w, const char *dn, int *rc, char *msg, size_t msglen)
{
	struct az_dir *d = w->d;
	char type[64], value[AZ_NAME_MAX + 1];
	char *attrs[] = {d->c.group_name_attr, NULL};
	LDAPMessage *res;
	char *v = NULL;

	*rc = 0;
	if (az_dn_first_rdn(dn, type, sizeof(type), value, sizeof(value)) ==
	        0 &&
	    strcasecmp(type, d->c.group_name_attr) == 0) {
		if ((v = strdup(value)) == NULL)
			*rc = RP_ERR_NOMEM;
		return v;
	}
	if ((*rc = search(w, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 1,
	         &res, msg, msglen)) != 0)
		return NULL;
	if (first_entry(w->svc, res) != NULL)
		v = first_value(w->svc, first_entry(w->svc, res), attrs[0]);
	ldap_msgfree(res);
	return v;
}

/* The memberOf values of the entry itself: nested or not is the server's
 * business (AD: direct only unless the server computes more; slapd 2.5
 * dynlist "memberOf@groupOfNames*": nested, see docs/CONFIG-directory.md). */
static int
groups_memberof(struct az_worker *w, const char *dn, struct glist *g, char *msg,
    size_t msglen)
{
	char *attrs[] = {"memberOf", NULL};
	LDAPMessage *res, *e;
	struct berval **v;
	int rc;

	rc = search(w, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 1, &res,
	    msg, msglen);
	if (rc != 0)
		return rc;
	if ((e = first_entry(w->svc, res)) == NULL) {
		ldap_msgfree(res);
		snprintf(msg, msglen, "directory: %s vanished", dn);
		return RP_ERR_NOT_FOUND;
	}
	v = ldap_get_values_len(w->svc, e, "memberOf");
	for (size_t i = 0; v != NULL && v[i] != NULL && rc == 0; i++) {
		char *gdn = strndup(v[i]->bv_val, v[i]->bv_len), *val, *name;

		if (gdn == NULL) {
			rc = RP_ERR_NOMEM;
			break;
		}
		val = group_value(w, gdn, &rc, msg, msglen);
		name = canonical(w->d, gdn, val);
		if (rc == 0 && glist_add(g, gdn, name) == -1)
			rc = RP_ERR_NOMEM;
		free(gdn);
		free(val);
		free(name);
	}
	ldap_value_free_len(v);
	ldap_msgfree(res);
	return rc;
}

/* Cache value for DN -> groups: "dn\0name\0" pairs, name "" for none. */
static char *
groups_pack(const struct glist *g, size_t *len)
{
	size_t n = 0, o = 0;
	char *buf;

	for (size_t i = 0; i < g->n; i++)
		n += strlen(g->dns[i]) + 1 +
		    (g->names[i] ? strlen(g->names[i]) : 0) + 1;
	if ((buf = malloc(n + 1)) == NULL)
		return NULL;
	for (size_t i = 0; i < g->n; i++) {
		size_t l = strlen(g->dns[i]) + 1;

		memcpy(buf + o, g->dns[i], l);
		o += l;
		l = g->names[i] ? strlen(g->names[i]) : 0;
		memcpy(buf + o, g->names[i] ? g->names[i] : "", l);
		o += l;
		buf[o++] = '\0';
	}
	*len = o;
	return buf;
}

static int
groups_unpack(const char *buf, size_t len, struct glist *g)
{
	size_t o = 0;

	while (o < len) {
		const char *dn = buf + o, *name;

		o += strlen(dn) + 1;
		if (o >= len + 1)
			return -1;
		name = buf + o;
		o += strlen(name) + 1;
		if (glist_add(g, dn, *name ? name : NULL) < 0)
			return -1;
	}
	return 0;
}

static int
resolve_groups(struct az_worker *w, const char *dn, struct glist *g, char *msg,
    size_t msglen)
{
	struct az_dir *d = w->d;
	char *key, *norm, *val = NULL;
	size_t vlen;
	int rc;

	if ((norm = az_dn_normalize(dn)) == NULL)
		return RP_ERR_INTERNAL;
	if (asprintf(&key, "g:%s", norm) == -1) {
		free(norm);
		return RP_ERR_NOMEM;
	}
	free(norm);
	if (az_cache_get(d->cache, key, (void **)&val, &vlen) == 1) {
		rc = groups_unpack(val, vlen, g) == 0 ? 0 : RP_ERR_NOMEM;
		free(val);
		free(key);
		return rc;
	}
	switch (d->c.group_strategy) {
	case AZ_GROUPS_MEMBEROF:
		rc = groups_memberof(w, dn, g, msg, msglen);
		break;
	case AZ_GROUPS_INCHAIN:
		rc = groups_inchain(w, dn, g, msg, msglen);
		break;
	case AZ_GROUPS_WALK:
	default:
		rc = groups_walk(w, dn, g, msg, msglen);
		break;
	}
	if (rc == 0 && (val = groups_pack(g, &vlen)) != NULL) {
		az_cache_put(d->cache, key, val, vlen,
		    (unsigned long long)d->c.cache_ttl_s * 1000ULL);
		free(val);
	}
	free(key);
	return rc;
}

/* Builds the entry handed to callers from a DN, its account and groups. */
static int
make_entry(struct az_worker *w, const char *dn, const char *account, int domain,
    struct glist *g, struct az_entry **out)
{
	struct az_dir *d = w->d;
	struct az_entry *e;
	size_t k = 0;

	if ((e = calloc(1, sizeof(*e))) == NULL)
		return RP_ERR_NOMEM;
	e->dn = strdup(dn);
	e->account = strdup(account);
	e->domain =
	    domain >= 0 ? strdup(d->c.domains[domain].netbios) : strdup("");
	e->groups = calloc(g->n + 1, sizeof(char *));
	e->group_dns = calloc(g->n + 1, sizeof(char *));
	if (e->dn == NULL || e->account == NULL || e->domain == NULL ||
	    e->groups == NULL || e->group_dns == NULL) {
		az_entry_free(e);
		return RP_ERR_NOMEM;
	}
	for (size_t i = 0; i < g->n; i++) {
		e->group_dns[i] = g->dns[i];
		g->dns[i] = NULL;
		e->ngroup_dns++;
		if (g->names[i] != NULL) {
			e->groups[k++] = g->names[i];
			g->names[i] = NULL;
			e->ngroups++;
		}
	}
	/* glist_free must not free what moved: */
	for (size_t i = 0; i < g->n; i++) {
		free(g->norm[i]);
		g->norm[i] = NULL;
	}
	free(g->dns);
	free(g->names);
	free(g->norm);
	memset(g, 0, sizeof(*g));
	*out = e;
	return 0;
}

/* ---- users and computers ---- */

/* Finds the one DN for a name. *dn and *account are malloc'd; *domain is
 * the domain index. code for "not exactly one" is `notfound`. */
static int
find_user(struct az_worker *w, const char *name, size_t namelen, int notfound,
    char **dn, char **account, int *domain, char *msg, size_t msglen)
{
	struct az_dir *d = w->d;
	const struct az_dir_config *c = &d->c;
	struct az_name nm;
	char *key = NULL, *val = NULL, *filter = NULL;
	char *attrs[] = {c->user_name_attr, NULL};
	const char *tmpl, *value;
	LDAPMessage *res = NULL, *e;
	size_t vlen;
	int rc, n;

	*dn = *account = NULL;
	rc = az_name_parse(name, namelen, c->domains, c->ndomains,
	    c->default_domain, &nm, msg, msglen);
	if (rc != 0)
		return notfound == RP_ERR_AUTH_FAILED ? RP_ERR_AUTH_FAILED : rc;
	*domain = (int)nm.domain;
	if (nm.form == AZ_NAME_UPN && c->upn_filter != NULL) {
		tmpl = c->upn_filter;
		value = nm.upn;
		rc = asprintf(&key, "p:%s", nm.upn);
	} else {
		tmpl = c->user_filter;
		value = nm.user;
		rc = asprintf(
		    &key, "u:%s\\%s", c->domains[nm.domain].netbios, nm.user);
	}
	if (rc == -1)
		return RP_ERR_NOMEM;
	lower(key);
	if (az_cache_get(d->cache, key, (void **)&val, &vlen) == 1) {
		if (val[0] == 'F' && vlen > 1 && strlen(val + 1) + 1 < vlen) {
			*dn = strdup(val + 1);
			*account = strdup(val + 1 + strlen(val + 1) + 1);
			rc = *dn && *account ? 0 : RP_ERR_NOMEM;
		} else {
			snprintf(msg, msglen, "%s user %s\\%s (cached)",
			    val[0] == 'A' ? "ambiguous" : "unknown",
			    c->domains[nm.domain].netbios, nm.user);
			rc = notfound;
		}
		free(val);
		free(key);
		return rc;
	}
	if ((filter = az_filter_build(tmpl, value, strlen(value))) == NULL) {
		free(key);
		return RP_ERR_NOMEM;
	}
	rc = search(w, c->domains[nm.domain].base_dn, LDAP_SCOPE_SUBTREE,
	    filter, attrs, 2, &res, msg, msglen);
	if (rc != 0)
		goto out;
	n = res != NULL ? ldap_count_entries(w->svc, res) : 0;
	if (n != 1) {
		unsigned long long ttl =
		    (unsigned long long)c->cache_neg_ttl_s * 1000ULL;

		snprintf(msg, msglen, "%s user %s\\%s: %s%d entries match %s",
		    n == 0 ? "unknown" : "ambiguous",
		    c->domains[nm.domain].netbios, nm.user,
		    n > 1 ? "at least " : "", n, filter);
		az_cache_put(d->cache, key, n == 0 ? "N" : "A", 1, ttl);
		rc = notfound;
		goto out;
	}
	e = first_entry(w->svc, res);
	{
		char *edn = ldap_get_dn(w->svc, e), *v, *packed;
		size_t dl, al;

		if (edn == NULL) {
			rc = RP_ERR_DIRECTORY_UNAVAILABLE;
			snprintf(msg, msglen, "directory: entry without DN");
			goto out;
		}
		v = first_value(w->svc, e, c->user_name_attr);
		rc = asprintf(account, "%s\\%s", c->domains[nm.domain].netbios,
		    v != NULL ? v : nm.user);
		free(v);
		*dn = strdup(edn);
		ldap_memfree(edn);
		if (rc == -1 || *dn == NULL) {
			rc = RP_ERR_NOMEM;
			goto out;
		}
		rc = 0;
		dl = strlen(*dn);
		al = strlen(*account);
		if ((packed = malloc(dl + al + 3)) != NULL) {
			packed[0] = 'F';
			memcpy(packed + 1, *dn, dl + 1);
			memcpy(packed + 2 + dl, *account, al + 1);
			az_cache_put(d->cache, key, packed, dl + al + 3,
			    (unsigned long long)c->cache_ttl_s * 1000ULL);
			free(packed);
		}
	}
out:
	ldap_msgfree(res);
	free(filter);
	free(key);
	if (rc != 0) {
		free(*dn);
		free(*account);
		*dn = *account = NULL;
	}
	return rc;
}

static int
start_check(struct az_worker *w, char *msg, size_t msglen)
{
	if (w->closing) {
		snprintf(msg, msglen, "directory pool closing");
		return RP_ERR_CLOSED;
	}
	if (left_ms(w) <= 0) {
		snprintf(msg, msglen,
		    "directory: request waited longer than op_timeout (%u ms) "
		    "in the queue",
		    w->d->c.op_timeout_ms);
		return RP_ERR_DIRECTORY_UNAVAILABLE;
	}
	return 0;
}

static int
lookup_user(struct az_worker *w, const char *name, size_t namelen,
    const char *pw, size_t pwlen, int auth, struct az_entry **out, char *msg,
    size_t msglen)
{
	struct glist g = {0};
	char *dn = NULL, *account = NULL;
	int rc, domain = -1;

	*out = NULL;
	if (msg != NULL && msglen > 0)
		msg[0] = '\0';
	if ((rc = start_check(w, msg, msglen)) != 0)
		return rc;
	if (auth) {
		/* before anything touches the directory */
		if (pw == NULL || pwlen == 0) {
			snprintf(msg, msglen,
			    "empty password refused (no bind attempted)");
			return RP_ERR_AUTH_FAILED;
		}
		if (memchr(pw, '\0', pwlen) != NULL) {
			snprintf(msg, msglen,
			    "password contains a NUL byte: refused (no bind "
			    "attempted)");
			return RP_ERR_AUTH_FAILED;
		}
	}
	rc = find_user(w, name, namelen,
	    auth ? RP_ERR_AUTH_FAILED : RP_ERR_NOT_FOUND, &dn, &account,
	    &domain, msg, msglen);
	if (rc != 0)
		return rc;
	if (auth && (rc = user_bind(w, dn, pw, pwlen, msg, msglen)) != 0)
		goto out;
	if ((rc = resolve_groups(w, dn, &g, msg, msglen)) != 0)
		goto out;
	rc = make_entry(w, dn, account, domain, &g, out);
out:
	glist_free(&g);
	free(dn);
	free(account);
	return rc;
}

int
az_worker_lookup_user(struct az_worker *w, const char *name,
    struct az_entry **out, char *msg, size_t msglen)
{
	return lookup_user(
	    w, name, name ? strlen(name) : 0, NULL, 0, 0, out, msg, msglen);
}

int
az_worker_check_password(struct az_worker *w, const char *name,
    const char *password, size_t pwlen, struct az_entry **out, char *msg,
    size_t msglen)
{
	return lookup_user(w, name, name ? strlen(name) : 0, password, pwlen, 1,
	    out, msg, msglen);
}

static int
fqdn_ok(const char *s, size_t len)
{
	if (len == 0 || len > 253 || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		        (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		        c == '_'))
			return 0;
	}
	return 1;
}

int
az_worker_lookup_computer(struct az_worker *w, const char *fqdn,
    struct az_entry **out, char *msg, size_t msglen)
{
	struct az_dir *d = w->d;
	const struct az_dir_config *c = &d->c;
	char *key = NULL, *val = NULL, *filter = NULL, *dn = NULL, *name;
	char *attrs[] = {"1.1", NULL};
	struct glist found = {0}, g = {0};
	size_t vlen;
	int rc;

	*out = NULL;
	if (msg != NULL && msglen > 0)
		msg[0] = '\0';
	if ((rc = start_check(w, msg, msglen)) != 0)
		return rc;
	if (fqdn == NULL || !fqdn_ok(fqdn, strlen(fqdn))) {
		snprintf(msg, msglen, "not a host name: \"%.64s\"",
		    fqdn ? fqdn : "");
		return RP_ERR_INVALID_PARAMS;
	}
	if ((name = strdup(fqdn)) == NULL)
		return RP_ERR_NOMEM;
	lower(name);
	if (asprintf(&key, "c:%s", name) == -1) {
		free(name);
		return RP_ERR_NOMEM;
	}
	if (az_cache_get(d->cache, key, (void **)&val, &vlen) == 1) {
		if (val[0] == 'F') {
			dn = strdup(val + 1);
			rc = dn != NULL ? 0 : RP_ERR_NOMEM;
		} else {
			snprintf(msg, msglen, "%s computer %s (cached)",
			    val[0] == 'A' ? "ambiguous" : "unknown", name);
			rc = RP_ERR_NOT_FOUND;
		}
		free(val);
		if (rc != 0)
			goto out;
	} else {
		filter =
		    az_filter_build(c->computer_filter, name, strlen(name));
		if (filter == NULL) {
			rc = RP_ERR_NOMEM;
			goto out;
		}
		for (size_t k = 0; k < c->ndomains && rc == 0; k++) {
			LDAPMessage *res;

			rc =
			    search(w, c->domains[k].base_dn, LDAP_SCOPE_SUBTREE,
			        filter, attrs, 2, &res, msg, msglen);
			if (rc == 0 && collect(w, res, &found, NULL) == -1)
				rc = RP_ERR_NOMEM;
			ldap_msgfree(res);
		}
		if (rc != 0)
			goto out;
		if (found.n != 1) {
			snprintf(msg, msglen,
			    "%s computer %s: %zu entries match %s",
			    found.n == 0 ? "unknown" : "ambiguous", name,
			    found.n, filter);
			az_cache_put(d->cache, key, found.n == 0 ? "N" : "A", 1,
			    (unsigned long long)c->cache_neg_ttl_s * 1000ULL);
			rc = RP_ERR_NOT_FOUND;
			goto out;
		}
		if ((dn = strdup(found.dns[0])) == NULL) {
			rc = RP_ERR_NOMEM;
			goto out;
		}
		if ((val = malloc(strlen(dn) + 2)) != NULL) {
			val[0] = 'F';
			memcpy(val + 1, dn, strlen(dn) + 1);
			az_cache_put(d->cache, key, val, strlen(dn) + 2,
			    (unsigned long long)c->cache_ttl_s * 1000ULL);
			free(val);
		}
	}
	if ((rc = resolve_groups(w, dn, &g, msg, msglen)) != 0)
		goto out;
	rc = make_entry(
	    w, dn, name, az_dn_domain(dn, c->domains, c->ndomains), &g, out);
out:
	glist_free(&found);
	glist_free(&g);
	free(filter);
	free(key);
	free(dn);
	free(name);
	return rc;
}

/* ---- the pool ---- */

static void
run_job(struct az_worker *w, struct az_job *j)
{
	switch (j->kind) {
	case J_USER:
		j->code = lookup_user(w, j->name, j->namelen, NULL, 0, 0,
		    &j->entry, j->msg, sizeof(j->msg));
		break;
	case J_PASSWORD:
		j->code = lookup_user(w, j->name, j->namelen, j->pw, j->pwlen,
		    1, &j->entry, j->msg, sizeof(j->msg));
		break;
	case J_COMPUTER:
		j->code = az_worker_lookup_computer(
		    w, j->name, &j->entry, j->msg, sizeof(j->msg));
		break;
	case J_CUSTOM:
		j->fn(w, j->arg);
		break;
	}
	if (j->pw != NULL) {
		wipe(j->pw, j->pwlen);
		free(j->pw);
		j->pw = NULL;
	}
}

static void *
worker_main(void *arg)
{
	struct az_worker *w = arg;
	struct az_dir *d = w->d;
	sigset_t set;

	/* libldap writes to sockets: a peer that went away must not kill
	 * the daemon with SIGPIPE (thread-directed, so block it here). */
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		struct az_job *j;
		int wake;

		pthread_mutex_lock(&d->mu);
		while (d->qhead == NULL && !d->stopping)
			pthread_cond_wait(&d->cv, &d->mu);
		if ((j = d->qhead) == NULL) {
			pthread_mutex_unlock(&d->mu);
			break;
		}
		d->qhead = j->next;
		if (d->qhead == NULL)
			d->qtail = NULL;
		d->qlen--;
		w->closing = d->stopping;
		pthread_mutex_unlock(&d->mu);

		j->next = NULL;
		w->deadline_ms = j->deadline_ms;
		run_job(w, j);
		probe_release(w);

		pthread_mutex_lock(&d->mu);
		wake = d->dhead == NULL;
		if (d->dtail != NULL)
			d->dtail->next = j;
		else
			d->dhead = j;
		d->dtail = j;
		pthread_mutex_unlock(&d->mu);
		if (wake) {
			char b = 1;
			ssize_t n;

			do
				n = write(d->wake[1], &b, 1);
			while (n == -1 && errno == EINTR);
			/* EAGAIN: the pipe is full, the loop will wake */
		}
	}
	drop(&w->svc);
	drop(&w->usr);
	return NULL;
}

static void
deliver(struct az_dir *d, struct az_job *j, int closing)
{
	if (j->kind == J_CUSTOM) {
		if (j->done != NULL)
			j->done(j->arg);
	} else {
		if (closing && j->code == 0) {
			az_entry_free(j->entry);
			j->entry = NULL;
			j->code = RP_ERR_CLOSED;
			snprintf(j->msg, sizeof(j->msg), "directory closed");
		}
		if (j->code != 0 && j->msg[0] == '\0')
			snprintf(j->msg, sizeof(j->msg), "%s",
			    rp_err_message(j->code));
		j->cb(j->code, j->code == 0 ? j->entry : NULL, j->msg, j->arg);
	}
	az_entry_free(j->entry);
	if (j->pw != NULL) {
		wipe(j->pw, j->pwlen);
		free(j->pw);
	}
	free(j->name);
	free(j);
}

static void
on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct az_dir *d = arg;
	struct az_job *list;
	char buf[64];

	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&d->mu);
	list = d->dhead;
	d->dhead = d->dtail = NULL;
	pthread_mutex_unlock(&d->mu);
	while (list != NULL) {
		struct az_job *next = list->next;

		deliver(d, list, 0);
		list = next;
	}
}

struct az_dir *
az_dir_new(struct event_base *base, const struct az_dir_config *c, char *err,
    size_t errlen)
{
	struct az_dir *d;
	int debug = 0;

	if (base == NULL || c == NULL) {
		snprintf(err, errlen, "directory: no event base or config");
		return NULL;
	}
	if (config_check(c, err, errlen) == -1)
		return NULL;
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		snprintf(err, errlen, "directory: out of memory");
		return NULL;
	}
	d->base = base;
	d->wake[0] = d->wake[1] = -1;
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	if (config_copy(&d->c, c) == -1) {
		snprintf(err, errlen, "directory: out of memory");
		goto fail;
	}
	if (read_pw_file(d, c->bind_pw_file, err, errlen) == -1)
		goto fail;
	if ((d->cache = az_cache_new(c->cache_max)) == NULL) {
		snprintf(err, errlen, "directory: out of memory");
		goto fail;
	}
	if (pipe2(d->wake, O_NONBLOCK | O_CLOEXEC) == -1) {
		snprintf(err, errlen, "directory: pipe: %s", strerror(errno));
		goto fail;
	}
	d->ev = event_new(base, d->wake[0], EV_READ | EV_PERSIST, on_wake, d);
	if (d->ev == NULL || event_add(d->ev, NULL) == -1) {
		snprintf(err, errlen, "directory: cannot add the wake event");
		goto fail;
	}
	/* libldap's global initialisation is not thread-safe: run it here,
	 * on one thread, before the workers start. */
	ldap_get_option(NULL, LDAP_OPT_DEBUG_LEVEL, &debug);
	if ((d->w = calloc(c->workers, sizeof(*d->w))) == NULL) {
		snprintf(err, errlen, "directory: out of memory");
		goto fail;
	}
	d->nw = c->workers;
	for (unsigned i = 0; i < d->nw; i++) {
		d->w[i].d = d;
		d->w[i].idx = i;
		d->w[i].svc_is_ad = -1;
		if (pthread_create(&d->w[i].th, NULL, worker_main, &d->w[i]) !=
		    0) {
			snprintf(err, errlen, "directory: cannot start worker");
			goto fail;
		}
		d->started++;
	}
	return d;
fail:
	az_dir_free(d);
	return NULL;
}

void
az_dir_free(struct az_dir *d)
{
	struct az_job *list;

	if (d == NULL)
		return;
	pthread_mutex_lock(&d->mu);
	d->stopping = 1;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	/* the workers drain the queue (jobs fail at once with
	 * RP_ERR_CLOSED) and finish the request in hand */
	for (unsigned i = 0; i < d->started; i++)
		pthread_join(d->w[i].th, NULL);
	pthread_mutex_lock(&d->mu);
	list = d->dhead;
	d->dhead = d->dtail = NULL;
	pthread_mutex_unlock(&d->mu);
	while (list != NULL) {
		struct az_job *next = list->next;

		deliver(d, list, 1);
		list = next;
	}
	if (d->ev != NULL)
		event_free(d->ev);
	if (d->wake[0] != -1)
		close(d->wake[0]);
	if (d->wake[1] != -1)
		close(d->wake[1]);
	free(d->w);
	az_cache_free(d->cache);
	if (d->pw != NULL) {
		wipe(d->pw, d->pwlen);
		free(d->pw);
	}
	az_dir_config_clear(&d->c);
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

static int
enqueue(struct az_dir *d, struct az_job *j)
{
	pthread_mutex_lock(&d->mu);
	if (d->stopping || d->qlen >= d->c.queue_max) {
		size_t n = d->qlen;
		int stopping = d->stopping;

		pthread_mutex_unlock(&d->mu);
		if (!stopping)
			log_warnx("directory: queue full (%zu jobs): request "
			          "refused",
			    n);
		return RP_ERR_DIRECTORY_UNAVAILABLE;
	}
	j->deadline_ms = now_ms() + d->c.op_timeout_ms;
	if (d->qtail != NULL)
		d->qtail->next = j;
	else
		d->qhead = j;
	d->qtail = j;
	d->qlen++;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
	return 0;
}

static int
submit_entry(struct az_dir *d, enum job_kind kind, const char *name,
    size_t namelen, const char *pw, size_t pwlen, az_entry_cb cb, void *arg)
{
	struct az_job *j;
	int rc;

	if (d == NULL || cb == NULL)
		return RP_ERR_INTERNAL;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return RP_ERR_NOMEM;
	j->kind = kind;
	j->cb = cb;
	j->arg = arg;
	j->namelen = name != NULL ? namelen : 0;
	if ((j->name = malloc(j->namelen + 1)) == NULL)
		goto nomem;
	if (j->namelen > 0)
		memcpy(j->name, name, j->namelen);
	j->name[j->namelen] = '\0';
	if (pw != NULL && pwlen > 0) {
		if ((j->pw = malloc(pwlen)) == NULL)
			goto nomem;
		memcpy(j->pw, pw, pwlen);
		j->pwlen = pwlen;
	}
	if ((rc = enqueue(d, j)) != 0) {
		wipe(j->pw, j->pwlen);
		free(j->pw);
		free(j->name);
		free(j);
	}
	return rc;
nomem:
	free(j->name);
	free(j);
	return RP_ERR_NOMEM;
}

int
az_dir_lookup_user(
    struct az_dir *d, const char *name, az_entry_cb cb, void *arg)
{
	return submit_entry(
	    d, J_USER, name, name ? strlen(name) : 0, NULL, 0, cb, arg);
}

int
az_dir_lookup_user_n(struct az_dir *d, const char *name, size_t namelen,
    az_entry_cb cb, void *arg)
{
	return submit_entry(d, J_USER, name, namelen, NULL, 0, cb, arg);
}

int
az_dir_check_password(struct az_dir *d, const char *name, const char *password,
    size_t pwlen, az_entry_cb cb, void *arg)
{
	return submit_entry(d, J_PASSWORD, name, name ? strlen(name) : 0,
	    password, pwlen, cb, arg);
}

int
az_dir_check_password_n(struct az_dir *d, const char *name, size_t namelen,
    const char *password, size_t pwlen, az_entry_cb cb, void *arg)
{
	return submit_entry(
	    d, J_PASSWORD, name, namelen, password, pwlen, cb, arg);
}

int
az_dir_lookup_computer(
    struct az_dir *d, const char *fqdn, az_entry_cb cb, void *arg)
{
	return submit_entry(
	    d, J_COMPUTER, fqdn, fqdn ? strlen(fqdn) : 0, NULL, 0, cb, arg);
}

int
az_dir_submit(struct az_dir *d, az_job_fn job, az_done_fn done, void *arg)
{
	struct az_job *j;
	int rc;

	if (d == NULL || job == NULL)
		return RP_ERR_INTERNAL;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return RP_ERR_NOMEM;
	j->kind = J_CUSTOM;
	j->fn = job;
	j->done = done;
	j->arg = arg;
	if ((rc = enqueue(d, j)) != 0)
		free(j);
	return rc;
}

void
az_dir_cache_flush(struct az_dir *d)
{
	if (d != NULL)
		az_cache_flush(d->cache);
}

void
az_dir_get_stats(struct az_dir *d, struct az_dir_stats *s)
{
	struct az_cache_stats cs;

	memset(s, 0, sizeof(*s));
	if (d == NULL)
		return;
	az_cache_get_stats(d->cache, &cs);
	pthread_mutex_lock(&d->mu);
	*s = d->st;
	s->queued = d->qlen;
	pthread_mutex_unlock(&d->mu);
	s->cache_hits = cs.hits;
	s->cache_misses = cs.misses;
}
