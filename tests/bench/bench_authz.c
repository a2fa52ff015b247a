/*
 * bench_authz.c - helper authentications per second through
 * az_dir_check_password (user search + simple bind + group resolution),
 * next to the same slapd's raw rate of search + bind done with plain
 * synchronous libldap, in one run against one slapd started here
 * (tests/lib/tl_slapd, ldaps://, slapd logging off).
 *
 *   bench_authz [SECONDS_PER_PHASE]     default 5
 *
 * Phases (each bounded by time):
 *   raw-1        one thread: search uid=X as the service account, then
 *                bind as the DN found (two persistent connections)
 *   raw-W        the same on W threads (W = the pool's workers)
 *   pool-cold    az_dir_check_password, no cache: every authentication is
 *                search + bind + group walk (3-4 searches for carol)
 *   pool-cold-mo the same with group_strategy memberof (one base read)
 *   pool-warm    names and groups cached: bind only
 * The pool phases keep INFLIGHT requests outstanding from one event loop.
 * Users rotate over alice, bob, carol, dave, erin (0..3 levels of groups).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <ldap.h>

#include "az_dir.h"
#include "tl_slapd.h"

#define WORKERS 4
#define INFLIGHT 16
#define MAXLAT 2000000

static const char *users[] = {"alice", "bob", "carol", "dave", "erin"};
#define NUSERS 5

static struct tl_slapd S;
static double phase_s = 5.0;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct lat {
	double *v;
	size_t n;
	pthread_mutex_t mu;
};

static void
lat_add(struct lat *l, double s)
{
	pthread_mutex_lock(&l->mu);
	if (l->n < MAXLAT)
		l->v[l->n++] = s;
	pthread_mutex_unlock(&l->mu);
}

static int
dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct row {
	const char *name;
	unsigned long ok, fail;
	double secs, p50, p99;
};

static void
finish(struct row *r, struct lat *l)
{
	qsort(l->v, l->n, sizeof(double), dcmp);
	r->p50 = l->n ? l->v[l->n / 2] * 1000 : 0;
	r->p99 = l->n ? l->v[(l->n * 99) / 100] * 1000 : 0;
	l->n = 0;
}

/* ---- raw libldap ---- */

static LDAP *
raw_open(int bind)
{
	int v3 = LDAP_VERSION3, hard = LDAP_OPT_X_TLS_HARD, zero = 0;
	struct berval cred;
	LDAP *ld;

	if (ldap_initialize(&ld, S.ldaps_uri) != LDAP_SUCCESS)
		return NULL;
	ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
	ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
	ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, S.ca);
	ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &hard);
	ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero);
	if (bind) {
		cred.bv_val = S.bindpw;
		cred.bv_len = strlen(S.bindpw);
		if (ldap_sasl_bind_s(ld, S.binddn, LDAP_SASL_SIMPLE, &cred,
		        NULL, NULL, NULL) != LDAP_SUCCESS) {
			ldap_unbind_ext_s(ld, NULL, NULL);
			return NULL;
		}
	} else if (ldap_connect(ld) != LDAP_SUCCESS) {
		ldap_unbind_ext_s(ld, NULL, NULL);
		return NULL;
	}
	return ld;
}

struct raw_arg {
	double end;
	unsigned long ok, fail;
	struct lat *lat;
	int idx;
};

static void *
raw_thread(void *p)
{
	struct raw_arg *a = p;
	LDAP *svc = raw_open(1), *usr = raw_open(0);
	char *attrs[] = {"1.1", NULL};
	unsigned i = (unsigned)a->idx;

	if (svc == NULL || usr == NULL) {
		fprintf(stderr, "raw: cannot connect\n");
		a->fail++;
		return NULL;
	}
	while (now_s() < a->end) {
		const char *u = users[i++ % NUSERS];
		char filter[128], pw[64];
		LDAPMessage *res = NULL, *e;
		struct berval cred;
		double t0 = now_s();
		char *dn;
		int rc;

		snprintf(filter, sizeof(filter),
		    "(&(objectClass=inetOrgPerson)(uid=%s))", u);
		snprintf(pw, sizeof(pw), "%s-pw", u);
		rc = ldap_search_ext_s(svc, S.base, LDAP_SCOPE_SUBTREE, filter,
		    attrs, 0, NULL, NULL, NULL, 2, &res);
		if (rc != LDAP_SUCCESS ||
		    (e = ldap_first_entry(svc, res)) == NULL ||
		    (dn = ldap_get_dn(svc, e)) == NULL) {
			a->fail++;
			ldap_msgfree(res);
			continue;
		}
		cred.bv_val = pw;
		cred.bv_len = strlen(pw);
		rc = ldap_sasl_bind_s(
		    usr, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
		ldap_memfree(dn);
		ldap_msgfree(res);
		if (rc == LDAP_SUCCESS) {
			a->ok++;
			lat_add(a->lat, now_s() - t0);
		} else {
			a->fail++;
		}
	}
	ldap_unbind_ext_s(svc, NULL, NULL);
	ldap_unbind_ext_s(usr, NULL, NULL);
	return NULL;
}

static void
run_raw(struct row *r, int nthreads, struct lat *lat)
{
	pthread_t th[WORKERS];
	struct raw_arg a[WORKERS];
	double t0 = now_s();

	memset(a, 0, sizeof(a));
	for (int i = 0; i < nthreads; i++) {
		a[i].end = t0 + phase_s;
		a[i].lat = lat;
		a[i].idx = i;
		pthread_create(&th[i], NULL, raw_thread, &a[i]);
	}
	for (int i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		r->ok += a[i].ok;
		r->fail += a[i].fail;
	}
	r->secs = now_s() - t0;
	finish(r, lat);
}

/* ---- the pool ---- */

struct pool_run {
	struct az_dir *d;
	struct event_base *b;
	double end;
	unsigned long ok, fail;
	unsigned inflight, next;
	struct lat *lat;
	int lastcode;
	char lastmsg[256];
};

struct req {
	struct pool_run *p;
	double t0;
};

static void submit(struct pool_run *p);

static void
on_done(int code, const struct az_entry *e, const char *msg, void *arg)
{
	struct req *q = arg;
	struct pool_run *p = q->p;

	(void)e;
	p->inflight--;
	if (code == 0) {
		p->ok++;
		lat_add(p->lat, now_s() - q->t0);
	} else {
		p->fail++;
		p->lastcode = code;
		snprintf(p->lastmsg, sizeof(p->lastmsg), "%s", msg);
	}
	free(q);
	if (now_s() < p->end)
		submit(p);
	if (p->inflight == 0)
		event_base_loopbreak(p->b);
}

static void
submit(struct pool_run *p)
{
	const char *u = users[p->next++ % NUSERS];
	struct req *q = malloc(sizeof(*q));
	char pw[64];

	snprintf(pw, sizeof(pw), "%s-pw", u);
	q->p = p;
	q->t0 = now_s();
	if (az_dir_check_password(p->d, u, pw, strlen(pw), on_done, q) != 0) {
		free(q);
		p->fail++;
		return;
	}
	p->inflight++;
}

static void
conf(struct az_dir_config *c, enum az_group_strategy gs, unsigned cache_max)
{
	az_dir_config_init(c);
	c->uri = strdup(S.ldaps_uri);
	c->ca_file = strdup(S.ca);
	c->bind_dn = strdup(S.binddn);
	c->bind_pw_file = strdup(S.bindpw_file);
	c->domains = calloc(1, sizeof(*c->domains));
	c->domains[0].netbios = strdup("CORP");
	c->domains[0].realm = strdup("corp.example");
	c->domains[0].base_dn = strdup(S.base);
	c->ndomains = 1;
	c->default_domain = strdup("CORP");
	c->workers = WORKERS;
	c->group_strategy = gs;
	c->cache_max = cache_max;
}

static void
run_pool(struct row *r, enum az_group_strategy gs, int warm, struct lat *lat)
{
	struct az_dir_config c;
	struct pool_run p;
	char err[512];
	double t0;

	memset(&p, 0, sizeof(p));
	conf(&c, gs, warm ? 10000 : 0);
	p.b = event_base_new();
	p.lat = lat;
	if ((p.d = az_dir_new(p.b, &c, err, sizeof(err))) == NULL) {
		fprintf(stderr, "az_dir_new: %s\n", err);
		exit(1);
	}
	/* open the workers' connections (and, warm, fill the cache) */
	p.end = now_s() + 0.5;
	for (int i = 0; i < INFLIGHT; i++)
		submit(&p);
	event_base_dispatch(p.b);
	p.ok = p.fail = 0;
	lat->n = 0;

	t0 = now_s();
	p.end = t0 + phase_s;
	for (int i = 0; i < INFLIGHT; i++)
		submit(&p);
	event_base_dispatch(p.b);
	r->secs = now_s() - t0;
	r->ok = p.ok;
	r->fail = p.fail;
	if (p.fail)
		fprintf(stderr, "%s: last failure %d: %s\n", r->name,
		    p.lastcode, p.lastmsg);
	finish(r, lat);
	az_dir_free(p.d);
	az_dir_config_clear(&c);
	event_base_free(p.b);
}

int
main(int argc, char **argv)
{
	struct row rows[5] = {
	    {"raw search+bind, 1 thread", 0, 0, 0, 0, 0},
	    {"raw search+bind, 4 threads", 0, 0, 0, 0, 0},
	    {"pool cold (walk), 4 workers", 0, 0, 0, 0, 0},
	    {"pool cold (memberof)", 0, 0, 0, 0, 0},
	    {"pool warm cache (bind only)", 0, 0, 0, 0, 0},
	};
	struct lat lat;

	if (argc > 1)
		phase_s = atof(argv[1]);
	if (phase_s <= 0 || phase_s > 600)
		phase_s = 5;
	signal(SIGPIPE, SIG_IGN);
	setenv("SLAPD_LOGLEVEL", "0", 1); /* no stats log: measure slapd */
	if (tl_slapd_start(NULL, &S) != 0) {
		fprintf(stderr, "cannot start slapd\n");
		return 1;
	}
	lat.v = malloc(MAXLAT * sizeof(double));
	lat.n = 0;
	pthread_mutex_init(&lat.mu, NULL);

	run_raw(&rows[0], 1, &lat);
	run_raw(&rows[1], WORKERS, &lat);
	run_pool(&rows[2], AZ_GROUPS_WALK, 0, &lat);
	run_pool(&rows[3], AZ_GROUPS_MEMBEROF, 0, &lat);
	run_pool(&rows[4], AZ_GROUPS_WALK, 1, &lat);

	printf("\nbench_authz: slapd %s, %.0f s per phase, users rotate over "
	       "%d accounts, pool: %d workers, %d requests in flight\n\n",
	    S.ldaps_uri, phase_s, NUSERS, WORKERS, INFLIGHT);
	printf("%-30s %10s %8s %10s %10s\n", "phase", "auth/s", "failed",
	    "p50 ms", "p99 ms");
	for (int i = 0; i < 5; i++)
		printf("%-30s %10.0f %8lu %10.2f %10.2f\n", rows[i].name,
		    rows[i].secs > 0 ? (double)rows[i].ok / rows[i].secs : 0,
		    rows[i].fail, rows[i].p50, rows[i].p99);
	free(lat.v);
	tl_slapd_destroy(&S);
	return 0;
}
