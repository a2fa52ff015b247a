/*
 * itest_dir.c - az_dir against a real slapd (tests/lib/slapd.sh with
 * tests/data/corp.ldif): passwords, names with filter metacharacters,
 * ambiguous and unknown names, name forms, nested groups by walk and by
 * memberOf, a cycle, cache expiry after a group change, the directory
 * going away and coming back, StartTLS refused, a CA that does not match,
 * an unsafe password file, the bounded queue and shutdown.
 *
 * Every case is bounded: requests wait at most a few seconds for their
 * callback, and each case has a Check timeout.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "az_dir.h"
#include "rp_error.h"
#include "tl_slapd.h"

#define DN_ALICE "uid=alice,ou=People,dc=corp,dc=example"

static struct tl_slapd S; /* shared, TLS, started once */

static unsigned long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL +
	    (unsigned long long)ts.tv_nsec / 1000000ULL;
}

/* ---- one request's result ---- */

struct res {
	int done, calls;
	int code;
	struct az_entry *e;
	char msg[512];
	pthread_t thread;
};

static void
res_clear(struct res *r)
{
	az_entry_free(r->e);
	memset(r, 0, sizeof(*r));
}

static void
on_entry(int code, const struct az_entry *e, const char *msg, void *arg)
{
	struct res *r = arg;

	r->done = 1;
	r->calls++;
	r->code = code;
	r->thread = pthread_self();
	az_entry_free(r->e);
	r->e = e != NULL ? az_entry_dup(e) : NULL;
	snprintf(r->msg, sizeof(r->msg), "%s", msg ? msg : "");
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(*(unsigned *)arg)++;
}

/* Runs the loop until r->done or ms pass. A 10 ms timer keeps it turning
 * and counts ticks (the loop must stay responsive). Returns the ticks. */
static unsigned
wait_for(struct event_base *b, struct res *r, unsigned ms)
{
	unsigned ticks = 0;
	struct timeval tv = {0, 10000};
	struct event *t = event_new(b, -1, EV_PERSIST, tick, &ticks);
	unsigned long long end = now_ms() + ms;

	ck_assert_ptr_nonnull(t);
	event_add(t, &tv);
	while (!r->done && now_ms() < end)
		event_base_loop(b, EVLOOP_ONCE);
	event_free(t);
	return ticks;
}

/* ---- configuration ---- */

static void
conf(struct az_dir_config *c, const struct tl_slapd *s, int starttls)
{
	az_dir_config_init(c);
	c->uri = strdup(starttls ? s->uri : s->ldaps_uri);
	c->starttls = starttls;
	c->ca_file = strdup(s->ca);
	c->bind_dn = strdup(s->binddn);
	c->bind_pw_file = strdup(s->bindpw_file);
	c->domains = calloc(1, sizeof(*c->domains));
	c->domains[0].netbios = strdup("CORP");
	c->domains[0].realm = strdup("corp.example");
	c->domains[0].base_dn = strdup(s->base);
	c->ndomains = 1;
	c->default_domain = strdup("CORP");
	c->workers = 2;
	c->net_timeout_ms = 1000;
	c->op_timeout_ms = 3000;
	c->backoff_max_ms = 1000;
}

struct fix {
	struct event_base *b;
	struct az_dir *d;
	struct az_dir_config c;
};

static void
fix_open(struct fix *f)
{
	char err[512];

	f->b = event_base_new();
	ck_assert_ptr_nonnull(f->b);
	f->d = az_dir_new(f->b, &f->c, err, sizeof(err));
	ck_assert_msg(f->d != NULL, "az_dir_new: %s", err);
}

static void
fix_close(struct fix *f)
{
	az_dir_free(f->d);
	az_dir_config_clear(&f->c);
	event_base_free(f->b);
}

static int
pw(struct fix *f, const char *name, size_t nlen, const char *p, size_t plen,
    struct res *r)
{
	res_clear(r);
	ck_assert_int_eq(
	    az_dir_check_password_n(f->d, name, nlen, p, plen, on_entry, r), 0);
	wait_for(f->b, r, 8000);
	ck_assert_msg(r->done, "no answer for %s", name);
	return r->code;
}

static int
pws(struct fix *f, const char *name, const char *p, struct res *r)
{
	return pw(f, name, strlen(name), p, strlen(p), r);
}

static int
user(struct fix *f, const char *name, size_t nlen, struct res *r)
{
	res_clear(r);
	ck_assert_int_eq(
	    az_dir_lookup_user_n(f->d, name, nlen, on_entry, r), 0);
	wait_for(f->b, r, 8000);
	ck_assert_msg(r->done, "no answer for %s", name);
	return r->code;
}

static int
users(struct fix *f, const char *name, struct res *r)
{
	return user(f, name, strlen(name), r);
}

static int
computer(struct fix *f, const char *fqdn, struct res *r)
{
	res_clear(r);
	ck_assert_int_eq(az_dir_lookup_computer(f->d, fqdn, on_entry, r), 0);
	wait_for(f->b, r, 8000);
	ck_assert_msg(r->done, "no answer for %s", fqdn);
	return r->code;
}

static int
has_group(const struct az_entry *e, const char *g)
{
	for (size_t i = 0; i < e->ngroups; i++)
		if (strcasecmp(e->groups[i], g) == 0)
			return 1;
	return 0;
}

/* e's groups are exactly the NULL-terminated list. */
static void
groups_are(const struct az_entry *e, const char *const *want)
{
	size_t n = 0;

	ck_assert_ptr_nonnull(e);
	for (; want[n] != NULL; n++)
		ck_assert_msg(has_group(e, want[n]), "%s lacks %s (has %zu)",
		    e->account, want[n], e->ngroups);
	ck_assert_msg(e->ngroups == n, "%s: %zu groups, want %zu", e->account,
	    e->ngroups, n);
	ck_assert_uint_eq(e->ngroup_dns, n);
}

/* Bind requests slapd logged for DNs starting with dnprefix: slapd's
 * "stats" level writes "BIND dn=... method=128" once per request (and a
 * second "BIND dn=... mech=SIMPLE" line on success, not counted). */
static long
binds_of(const struct tl_slapd *s, const char *dnprefix)
{
	char needle[256], line[4096];
	long n = 0;
	FILE *fp;

	snprintf(needle, sizeof(needle), "BIND dn=\"%s", dnprefix);
	if ((fp = fopen(s->log, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), fp) != NULL)
		if (strstr(line, needle) != NULL &&
		    strstr(line, " method=") != NULL)
			n++;
	fclose(fp);
	return n;
}

/* slapd writes its log from another process: give it a moment. */
static long
binds_settled(const struct tl_slapd *s, const char *dnprefix)
{
	usleep(200000);
	return binds_of(s, dnprefix);
}

/* ---- fixtures ---- */

static void
slapd_up(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (tl_slapd_start(NULL, &S) != 0)
		ck_abort_msg("cannot start slapd");
}

static void
slapd_down(void)
{
	tl_slapd_destroy(&S);
}

/* ---- passwords ---- */

START_TEST(test_right_password)
{
	struct fix f;
	struct res r = {0};
	const char *const want[] = {"CORP\\helpdesk", "CORP\\staff", NULL};

	conf(&f.c, &S, _i); /* loop: 0 ldaps://, 1 ldap:// + StartTLS */
	fix_open(&f);
	ck_assert_int_eq(pws(&f, "alice", "alice-pw", &r), 0);
	ck_assert_str_eq(r.e->dn, DN_ALICE);
	ck_assert_str_eq(r.e->account, "CORP\\alice");
	ck_assert_str_eq(r.e->domain, "CORP");
	groups_are(r.e, want);
	/* callbacks run on the loop thread */
	ck_assert(pthread_equal(r.thread, pthread_self()));
	ck_assert_int_eq(r.calls, 1);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

START_TEST(test_wrong_password)
{
	struct fix f;
	struct res r = {0};

	conf(&f.c, &S, 0);
	fix_open(&f);
	ck_assert_int_eq(pws(&f, "alice", "alice-PW", &r), RP_ERR_AUTH_FAILED);
	ck_assert_ptr_null(r.e);
	ck_assert_msg(
	    strstr(r.msg, "invalid credentials") != NULL, "%s", r.msg);
	/* not cached: the right password still works right after */
	ck_assert_int_eq(pws(&f, "alice", "alice-pw", &r), 0);
	ck_assert_int_eq(pws(&f, "alice", "alice-PW", &r), RP_ERR_AUTH_FAILED);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

START_TEST(test_empty_and_nul_password_no_bind)
{
	struct fix f;
	struct res r = {0};
	struct az_dir_stats st;
	long before, after;

	conf(&f.c, &S, 0);
	fix_open(&f);
	/* the counter works: a real bind shows up in slapd's log */
	before = binds_of(&S, "uid=bob,");
	ck_assert_int_eq(pws(&f, "bob", "bob-pw", &r), 0);
	ck_assert_int_eq(binds_settled(&S, "uid=bob,"), before + 1);
	az_dir_get_stats(f.d, &st);
	ck_assert_uint_eq(st.user_binds, 1);

	before = binds_of(&S, "uid=bob,");
	ck_assert_int_eq(pw(&f, "bob", 3, "", 0, &r), RP_ERR_AUTH_FAILED);
	ck_assert_msg(strstr(r.msg, "empty password") != NULL, "%s", r.msg);
	ck_assert_int_eq(
	    pw(&f, "bob", 3, "bob\0-pw", 7, &r), RP_ERR_AUTH_FAILED);
	ck_assert_msg(strstr(r.msg, "NUL") != NULL, "%s", r.msg);
	ck_assert_int_eq(pw(&f, "bob", 3, NULL, 0, &r), RP_ERR_AUTH_FAILED);
	after = binds_settled(&S, "uid=bob,");
	ck_assert_int_eq(after, before);
	az_dir_get_stats(f.d, &st);
	ck_assert_uint_eq(st.user_binds, 1);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

/* ---- names ---- */

START_TEST(test_special_characters)
{
	struct fix f;
	struct res r = {0};

	conf(&f.c, &S, 0);
	fix_open(&f);
	ck_assert_int_eq(pws(&f, "st*r", "star-pw", &r), 0);
	ck_assert_str_eq(r.e->dn, "uid=st*r,ou=People,dc=corp,dc=example");
	ck_assert_int_eq(pws(&f, "pa(re)n", "paren-pw", &r), 0);
	ck_assert_str_eq(r.e->dn, "uid=pa(re)n,ou=People,dc=corp,dc=example");
	ck_assert_int_eq(pws(&f, "CORP\\back\\slash", "back-pw", &r), 0);
	ck_assert_ptr_nonnull(strstr(r.e->dn, "back"));
	ck_assert_str_eq(r.e->account, "CORP\\back\\slash");
	/* no wildcard expansion, no filter injection */
	ck_assert_int_eq(users(&f, "a*", &r), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(users(&f, "*", &r), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(users(&f, "st*", &r), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(users(&f, "alice)(uid=*", &r), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(users(&f, "*)(|(uid=*", &r), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(pws(&f, "a*", "alice-pw", &r), RP_ERR_AUTH_FAILED);
	/* NUL in a name: refused, not truncated to "alice" */
	ck_assert_int_eq(
	    user(&f, "alice\0junk", 10, &r), RP_ERR_INVALID_PARAMS);
	ck_assert_msg(strstr(r.msg, "NUL") != NULL, "%s", r.msg);
	ck_assert_int_eq(
	    pw(&f, "alice\0", 6, "alice-pw", 8, &r), RP_ERR_AUTH_FAILED);
	ck_assert_msg(strstr(r.msg, "NUL") != NULL, "%s", r.msg);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

START_TEST(test_ambiguous_and_unknown)
{
	struct fix f;
	struct res r = {0};
	char m1[512];

	conf(&f.c, &S, 0);
	fix_open(&f);
	ck_assert_int_eq(pws(&f, "twin", "twin-pw", &r), RP_ERR_AUTH_FAILED);
	ck_assert_msg(strstr(r.msg, "ambiguous") != NULL, "%s", r.msg);
	snprintf(m1, sizeof(m1), "%s", r.msg);
	ck_assert_int_eq(pws(&f, "nobody", "x", &r), RP_ERR_AUTH_FAILED);
	ck_assert_msg(strstr(r.msg, "unknown") != NULL, "%s", r.msg);
	/* the code (what a peer sees) is the same for both */
	ck_assert_int_eq(users(&f, "twin", &r), RP_ERR_NOT_FOUND);
	ck_assert_msg(strstr(r.msg, "ambiguous") != NULL, "%s", r.msg);
	ck_assert_int_eq(users(&f, "nobody", &r), RP_ERR_NOT_FOUND);
	ck_assert_msg(strstr(r.msg, "unknown") != NULL, "%s", r.msg);
	/* negative cache answers the second time */
	ck_assert_int_eq(users(&f, "nobody", &r), RP_ERR_NOT_FOUND);
	ck_assert_msg(strstr(r.msg, "cached") != NULL, "%s", r.msg);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

START_TEST(test_name_forms)
{
	static const char *const forms[] = {"CORP\\alice", "alice@corp.example",
	    "alice", "corp\\ALICE", "Alice@CORP.EXAMPLE"};
	struct fix f;
	struct res r = {0};

	conf(&f.c, &S, 0);
	fix_open(&f);
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		ck_assert_msg(
		    users(&f, forms[i], &r) == 0, "%s: %s", forms[i], r.msg);
		ck_assert_str_eq(r.e->dn, DN_ALICE);
		ck_assert_str_eq(r.e->account, "CORP\\alice");
		ck_assert_int_eq(pws(&f, forms[i], "alice-pw", &r), 0);
		ck_assert_str_eq(r.e->dn, DN_ALICE);
	}
	ck_assert_int_eq(users(&f, "NOPE\\alice", &r), RP_ERR_NOT_FOUND);
	ck_assert_msg(strstr(r.msg, "unknown domain") != NULL, "%s", r.msg);
	ck_assert_int_eq(
	    pws(&f, "NOPE\\alice", "alice-pw", &r), RP_ERR_AUTH_FAILED);
	ck_assert_int_eq(users(&f, "alice@nope.example", &r), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(
	    users(&f, "CORP\\alice@corp.example", &r), RP_ERR_INVALID_PARAMS);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

START_TEST(test_upn_filter_and_account_attr)
{
	struct fix f;
	struct res r = {0};

	conf(&f.c, &S, 0);
	f.c.upn_filter = strdup("(&(objectClass=inetOrgPerson)(mail=%s))");
	free(f.c.user_name_attr);
	f.c.user_name_attr = strdup("cn");
	fix_open(&f);
	/* user@realm goes through upn_filter with the whole name */
	ck_assert_int_eq(users(&f, "alice@corp.example", &r), 0);
	ck_assert_str_eq(r.e->dn, DN_ALICE);
	ck_assert_str_eq(r.e->account, "CORP\\Alice Helpdesk");
	/* bob has no mail: not found by UPN, found by uid */
	ck_assert_int_eq(users(&f, "bob@corp.example", &r), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(users(&f, "CORP\\bob", &r), 0);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

/* Two domains whose bases nest: LAB = ou=Contractors inside CORP. */
START_TEST(test_two_domains)
{
	struct fix f;
	struct res r = {0};

	conf(&f.c, &S, 0);
	f.c.domains = realloc(f.c.domains, 2 * sizeof(*f.c.domains));
	f.c.domains[1].netbios = strdup("LAB");
	f.c.domains[1].realm = strdup("lab.example");
	f.c.domains[1].base_dn = strdup("ou=Contractors,dc=corp,dc=example");
	f.c.ndomains = 2;
	fix_open(&f);
	/* under LAB's base only one twin: unique */
	ck_assert_int_eq(pws(&f, "LAB\\twin", "twin-pw", &r), 0);
	ck_assert_str_eq(r.e->dn, "uid=twin,ou=Contractors,dc=corp,dc=example");
	ck_assert_str_eq(r.e->account, "LAB\\twin");
	ck_assert_str_eq(r.e->domain, "LAB");
	ck_assert_int_eq(users(&f, "twin@LAB.example", &r), 0);
	/* under CORP's base both: ambiguous */
	ck_assert_int_eq(users(&f, "CORP\\twin", &r), RP_ERR_NOT_FOUND);
	ck_assert_msg(strstr(r.msg, "ambiguous") != NULL, "%s", r.msg);
	/* alice is not under LAB's base */
	ck_assert_int_eq(users(&f, "LAB\\alice", &r), RP_ERR_NOT_FOUND);
	/* groups are named by the domain whose base holds them */
	ck_assert_int_eq(users(&f, "alice", &r), 0);
	ck_assert(has_group(r.e, "CORP\\helpdesk"));
	res_clear(&r);
	fix_close(&f);
}
END_TEST

/* ---- groups ---- */

static const char *const carol_groups[] = {
    "CORP\\tier1", "CORP\\tier2", "CORP\\helpdesk-all", NULL};
static const char *const dave_groups[] = {"CORP\\cyc-a", "CORP\\cyc-b", NULL};
static const char *const no_groups[] = {NULL};

START_TEST(test_nested_walk)
{
	struct fix f;
	struct res r = {0};
	const char *const two[] = {"CORP\\tier1", "CORP\\tier2", NULL};

	conf(&f.c, &S, 0);
	f.c.group_strategy = AZ_GROUPS_WALK;
	fix_open(&f);
	ck_assert_int_eq(users(&f, "carol", &r), 0);
	groups_are(r.e, carol_groups);
	ck_assert_int_eq(users(&f, "bob", &r), 0);
	groups_are(r.e, no_groups);
	ck_assert_int_eq(users(&f, "dave", &r), 0); /* a cycle: terminates */
	groups_are(r.e, dave_groups);
	fix_close(&f);

	conf(&f.c, &S, 0);
	f.c.group_max_depth = 2; /* the cap */
	fix_open(&f);
	ck_assert_int_eq(users(&f, "carol", &r), 0);
	groups_are(r.e, two);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

START_TEST(test_nested_memberof)
{
	struct fix f;
	struct res r = {0};
	const char *const alice[] = {"CORP\\helpdesk", "CORP\\staff", NULL};

	/* slapd 2.5 dynlist "member+memberOf@groupOfNames*" computes nested
	 * memberOf (tests/data/slapd.conf.in) */
	conf(&f.c, &S, 0);
	f.c.group_strategy = AZ_GROUPS_MEMBEROF;
	fix_open(&f);
	ck_assert_int_eq(users(&f, "alice", &r), 0);
	groups_are(r.e, alice);
	ck_assert_int_eq(users(&f, "carol", &r), 0);
	groups_are(r.e, carol_groups);
	ck_assert_int_eq(users(&f, "dave", &r), 0);
	groups_are(r.e, dave_groups);
	ck_assert_int_eq(users(&f, "bob", &r), 0);
	groups_are(r.e, no_groups);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

START_TEST(test_inchain_refused_on_slapd)
{
	struct fix f;
	struct res r = {0};

	conf(&f.c, &S, 0);
	f.c.group_strategy = AZ_GROUPS_INCHAIN;
	fix_open(&f);
	ck_assert_int_eq(users(&f, "carol", &r), RP_ERR_CONFIG);
	ck_assert_ptr_null(r.e);
	ck_assert_msg(strstr(r.msg, "Active Directory") != NULL, "%s", r.msg);
	ck_assert_int_eq(pws(&f, "carol", "carol-pw", &r), RP_ERR_CONFIG);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

START_TEST(test_computers)
{
	struct fix f;
	struct res r = {0};
	const char *const kiosk[] = {"CORP\\kiosks", NULL};
	const char *const srv[] = {"CORP\\servers-grp", NULL};

	conf(&f.c, &S, 0);
	f.c.group_strategy = _i ? AZ_GROUPS_MEMBEROF : AZ_GROUPS_WALK;
	fix_open(&f);
	ck_assert_int_eq(computer(&f, "ws-043.corp.example", &r), 0);
	ck_assert_str_eq(r.e->dn,
	    "cn=ws-043.corp.example,ou=Workstations,"
	    "ou=Computers,dc=corp,dc=example");
	ck_assert_str_eq(r.e->account, "ws-043.corp.example");
	ck_assert_str_eq(r.e->domain, "CORP");
	groups_are(r.e, kiosk);
	ck_assert_int_eq(computer(&f, "WS-042.Corp.Example", &r), 0);
	ck_assert_str_eq(r.e->account, "ws-042.corp.example");
	groups_are(r.e, no_groups);
	ck_assert_int_eq(computer(&f, "srv-01.corp.example", &r), 0);
	ck_assert_ptr_nonnull(strstr(r.e->dn, "ou=Servers"));
	groups_are(r.e, srv);
	ck_assert_int_eq(
	    computer(&f, "ws-999.corp.example", &r), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(computer(&f, "ws-*", &r), RP_ERR_INVALID_PARAMS);
	ck_assert_int_eq(computer(&f, "", &r), RP_ERR_INVALID_PARAMS);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

START_TEST(test_group_change_after_ttl)
{
	struct fix f;
	struct res r = {0};
	unsigned long long t0, t;

	conf(&f.c, &S, 0);
	f.c.cache_ttl_s = 2;
	fix_open(&f);
	ck_assert_int_eq(users(&f, "erin", &r), 0);
	t0 = now_ms();
	ck_assert(has_group(r.e, "CORP\\removable"));
	ck_assert(has_group(r.e, "CORP\\staff"));
	ck_assert_int_eq(tl_slapd_modify(&S,
	                     "dn: cn=removable,ou=Groups,dc=corp,dc=example\n"
	                     "changetype: modify\n"
	                     "delete: member\n"
	                     "member: uid=erin,ou=People,dc=corp,dc=example\n"
	                     "-\n"
	                     "add: member\n"
	                     "member: uid=bob,ou=People,dc=corp,dc=example\n"),
	    0);
	/* still cached: the old answer until the TTL */
	ck_assert_int_eq(users(&f, "erin", &r), 0);
	t = now_ms();
	ck_assert_msg(t - t0 < 1800, "test too slow to check the cache");
	ck_assert(has_group(r.e, "CORP\\removable"));
	/* the password is checked against the directory every time, but
	 * the groups come from the cache */
	ck_assert_int_eq(pws(&f, "erin", "erin-pw", &r), 0);
	ck_assert(has_group(r.e, "CORP\\removable"));
	/* after the TTL: gone */
	while (now_ms() < t0 + 2300)
		usleep(50000);
	ck_assert_int_eq(users(&f, "erin", &r), 0);
	ck_assert(!has_group(r.e, "CORP\\removable"));
	ck_assert(has_group(r.e, "CORP\\staff"));
	/* and a flush drops cached groups at once */
	ck_assert_int_eq(users(&f, "bob", &r), 0);
	ck_assert(has_group(r.e, "CORP\\removable"));
	ck_assert_int_eq(tl_slapd_modify(&S,
	                     "dn: cn=removable,ou=Groups,dc=corp,dc=example\n"
	                     "changetype: modify\n"
	                     "add: member\n"
	                     "member: uid=erin,ou=People,dc=corp,dc=example\n"
	                     "-\n"
	                     "delete: member\n"
	                     "member: uid=bob,ou=People,dc=corp,dc=example\n"),
	    0);
	ck_assert_int_eq(users(&f, "bob", &r), 0);
	ck_assert(has_group(r.e, "CORP\\removable"));
	az_dir_cache_flush(f.d);
	ck_assert_int_eq(users(&f, "bob", &r), 0);
	ck_assert(!has_group(r.e, "CORP\\removable"));
	res_clear(&r);
	fix_close(&f);
}
END_TEST

/* ---- availability ---- */

START_TEST(test_down_then_recover)
{
	struct tl_slapd s2;
	struct fix f;
	struct res r = {0};
	unsigned long long t0, el;
	unsigned ticks;
	int ok = 0;

	ck_assert_int_eq(tl_slapd_start(NULL, &s2), 0);
	conf(&f.c, &s2, _i);
	f.c.op_timeout_ms = 1500;
	f.c.cache_max = 0; /* every lookup goes to the directory */
	fix_open(&f);
	ck_assert_int_eq(pws(&f, "alice", "alice-pw", &r), 0);
	ck_assert_int_eq(tl_slapd_stop(&s2), 0);

	for (int i = 0; i < 4; i++) {
		res_clear(&r);
		t0 = now_ms();
		ck_assert_int_eq(
		    az_dir_lookup_user(f.d, "alice", on_entry, &r), 0);
		ticks = wait_for(f.b, &r, 5000);
		el = now_ms() - t0;
		ck_assert_msg(r.done, "no answer while the directory is down");
		ck_assert_int_eq(r.code, RP_ERR_DIRECTORY_UNAVAILABLE);
		ck_assert_msg(el <= 1500 + 500, "answer after %llu ms", el);
		/* the loop ran its 10 ms timer meanwhile */
		ck_assert_msg(
		    ticks + 3 >= el / 10 / 2, "%u ticks in %llu ms", ticks, el);
	}
	/* passwords fail the same way, and no bind is possible */
	ck_assert_int_eq(
	    pws(&f, "alice", "alice-pw", &r), RP_ERR_DIRECTORY_UNAVAILABLE);

	/* back on the same ports: the same az_dir recovers by itself */
	ck_assert_int_eq(tl_slapd_restart(&s2), 0);
	t0 = now_ms();
	while (now_ms() - t0 < 6000) {
		if (pws(&f, "alice", "alice-pw", &r) == 0) {
			ok = 1;
			break;
		}
		usleep(100000);
	}
	ck_assert_msg(ok, "no recovery within 6 s: %s", r.msg);
	ck_assert_int_eq(users(&f, "carol", &r), 0);
	groups_are(r.e, carol_groups);
	res_clear(&r);
	fix_close(&f);
	tl_slapd_destroy(&s2);
}
END_TEST

/* kill(SIGSTOP) returns before every thread of slapd has stopped: wait
 * until /proc says the process is stopped ("T"), at most 2 s. */
static void
stop_and_wait(pid_t pid)
{
	char path[64], buf[512], *p;
	unsigned long long t0 = now_ms();

	ck_assert_int_eq(kill(pid, SIGSTOP), 0);
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	for (;;) {
		FILE *fp = fopen(path, "r");
		size_t n = 0;

		if (fp != NULL) {
			n = fread(buf, 1, sizeof(buf) - 1, fp);
			fclose(fp);
		}
		buf[n] = '\0';
		/* "pid (comm) S ...": the state follows the last ')' */
		if ((p = strrchr(buf, ')')) != NULL && p[1] == ' ' &&
		    (p[2] == 'T' || p[2] == 't'))
			break;
		ck_assert_msg(now_ms() - t0 < 2000, "slapd did not stop");
		usleep(2000);
	}
	usleep(20000); /* and its threads with it */
}

/* A server that accepts connections but never answers (SIGSTOP): every
 * request still gets its answer within op_timeout. */
START_TEST(test_hung_server)
{
	struct tl_slapd s2;
	struct fix f;
	struct res r = {0};
	unsigned long long t0, el;
	int ok = 0;

	ck_assert_int_eq(tl_slapd_start(NULL, &s2), 0);
	conf(&f.c, &s2, _i);
	f.c.op_timeout_ms = 1000;
	f.c.net_timeout_ms = 500;
	f.c.cache_max = 0;
	fix_open(&f);
	ck_assert_int_eq(pws(&f, "alice", "alice-pw", &r), 0);
	stop_and_wait(s2.pid);
	t0 = now_ms();
	ck_assert_int_eq(
	    pws(&f, "alice", "alice-pw", &r), RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_msg(now_ms() - t0 <= 1000 + 500, "%s", r.msg);
	/* in back-off now: the next answer comes at once */
	t0 = now_ms();
	ck_assert_int_eq(
	    pws(&f, "alice", "alice-pw", &r), RP_ERR_DIRECTORY_UNAVAILABLE);
	el = now_ms() - t0;
	/* (a real attempt would take net_timeout, 500 ms) */
	ck_assert_msg(el < 400, "back-off answer after %llu ms", el);
	ck_assert_msg(strstr(r.msg, "next attempt") != NULL, "%s", r.msg);
	for (int i = 0; i < 3; i++) {
		t0 = now_ms();
		ck_assert_int_eq(pws(&f, "alice", "alice-pw", &r),
		    RP_ERR_DIRECTORY_UNAVAILABLE);
		el = now_ms() - t0;
		ck_assert_msg(
		    el <= 1000 + 500, "answer after %llu ms: %s", el, r.msg);
		usleep(300000); /* let the backoff expire now and then */
	}
	ck_assert_int_eq(kill(s2.pid, SIGCONT), 0);
	t0 = now_ms();
	while (now_ms() - t0 < 6000) {
		if (pws(&f, "alice", "alice-pw", &r) == 0) {
			ok = 1;
			break;
		}
		usleep(100000);
	}
	ck_assert_msg(ok, "no recovery within 6 s: %s", r.msg);
	res_clear(&r);
	fix_close(&f);
	tl_slapd_destroy(&s2);
}
END_TEST

START_TEST(test_starttls_refused)
{
	struct tl_slapd s2;
	struct fix f;
	struct res r = {0};

	ck_assert_int_eq(tl_slapd_start_notls(NULL, &s2), 0);
	conf(&f.c, &s2, 1);
	fix_open(&f);
	ck_assert_int_eq(users(&f, "alice", &r), RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_msg(strstr(r.msg, "StartTLS") != NULL, "%s", r.msg);
	res_clear(&r);
	usleep(1100000); /* past the backoff: another real attempt */
	ck_assert_int_eq(
	    pws(&f, "alice", "alice-pw", &r), RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_msg(strstr(r.msg, "StartTLS") != NULL, "%s", r.msg);
	/* slapd saw StartTLS requests and not a single bind from us */
	ck_assert_int_gt(
	    tl_slapd_log_count(&s2, "EXT oid=1.3.6.1.4.1.1466.20037"), 0);
	ck_assert_int_eq(binds_settled(&s2, "cn=rabroker"), 0);
	ck_assert_int_eq(binds_of(&s2, "uid=alice"), 0);
	res_clear(&r);
	fix_close(&f);
	tl_slapd_destroy(&s2);
}
END_TEST

START_TEST(test_wrong_ca)
{
	struct fix f;
	struct res r = {0};
	char ca[700];
	long before = binds_of(&S, "cn=rabroker");

	snprintf(ca, sizeof(ca), "%s/rogue-ca.pem", S.pki);
	conf(&f.c, &S, _i);
	free(f.c.ca_file);
	f.c.ca_file = strdup(ca);
	fix_open(&f);
	ck_assert_int_eq(users(&f, "alice", &r), RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_msg(
	    strstr(r.msg, "TLS handshake failed") != NULL, "%s", r.msg);
	ck_assert_int_eq(
	    pws(&f, "alice", "alice-pw", &r), RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_int_eq(binds_settled(&S, "cn=rabroker"), before);
	res_clear(&r);
	fix_close(&f);
}
END_TEST

/* slapd presents a certificate from the right CA, but for another name
 * (SAN other.example only): the host name check must refuse it. */
START_TEST(test_wrong_hostname)
{
	struct tl_slapd s2;
	struct fix f;
	struct res r = {0};
	char dir[] = "/tmp/itest_dir.XXXXXX", cmd[2048];
	const char *t = "cn = \"other.example\"\ndns_name = \"other.example\"\n"
	                "serial = 4242\nexpiration_days = 2\nsigning_key\n"
	                "encryption_key\ntls_www_server\n";
	FILE *fp;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(cmd, sizeof(cmd), "bash %s/tests/lib/mkpki.sh %s/pki",
	    RABROKER_SOURCE_DIR, dir);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/pki/other.tmpl", dir);
	fp = fopen(cmd, "w");
	ck_assert_ptr_nonnull(fp);
	fputs(t, fp);
	fclose(fp);
	snprintf(cmd, sizeof(cmd),
	    "cd %s/pki && certtool --generate-privkey --key-type=ecdsa "
	    "--curve=secp256r1 --outfile other-key.pem 2>/dev/null && "
	    "certtool --generate-certificate --load-privkey other-key.pem "
	    "--load-ca-certificate ca.pem --load-ca-privkey ca-key.pem "
	    "--template other.tmpl --outfile other.pem 2>/dev/null",
	    dir);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/pki", dir);
	setenv("SLAPD_PKI", cmd, 1);
	snprintf(cmd, sizeof(cmd), "%s/pki/other.pem", dir);
	setenv("SLAPD_CERT", cmd, 1);
	snprintf(cmd, sizeof(cmd), "%s/pki/other-key.pem", dir);
	setenv("SLAPD_KEY", cmd, 1);
	snprintf(cmd, sizeof(cmd), "%s/slapd", dir);
	ck_assert_int_eq(tl_slapd_start(cmd, &s2), 0);
	unsetenv("SLAPD_PKI");
	unsetenv("SLAPD_CERT");
	unsetenv("SLAPD_KEY");

	conf(&f.c, &s2, _i);
	fix_open(&f);
	ck_assert_int_eq(users(&f, "alice", &r), RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_msg(
	    strstr(r.msg, "TLS handshake failed") != NULL, "%s", r.msg);
	ck_assert_int_eq(binds_settled(&s2, "cn=rabroker"), 0);
	fix_close(&f);

	/* the same server is fine when the name matches (other.example is
	 * not resolvable here, so only the refusal is checked above; the
	 * right certificate is exercised by every other case) */
	res_clear(&r);
	tl_slapd_destroy(&s2);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- configuration refused by az_dir_new ---- */

START_TEST(test_config_refused)
{
	struct az_dir_config c;
	struct event_base *b = event_base_new();
	char err[512], path[700];
	FILE *fp;

	/* a password file others can read: refused, naming file and mode */
	snprintf(path, sizeof(path), "%s/bindpw-open", S.dir);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fputs("svc-secret\n", fp);
	fclose(fp);
	chmod(path, 0644);
	conf(&c, &S, 0);
	free(c.bind_pw_file);
	c.bind_pw_file = strdup(path);
	ck_assert_ptr_null(az_dir_new(b, &c, err, sizeof(err)));
	ck_assert_msg(strstr(err, path) != NULL && strstr(err, "0644") != NULL,
	    "%s", err);
	ck_assert_ptr_null(strstr(err, "svc-secret"));
	chmod(path, 0640);
	ck_assert_ptr_null(az_dir_new(b, &c, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "0640"));
	az_dir_config_clear(&c);

	/* plain ldap:// without StartTLS */
	conf(&c, &S, 1);
	c.starttls = 0;
	ck_assert_ptr_null(az_dir_new(b, &c, err, sizeof(err)));
	ck_assert_msg(strstr(err, "starttls") != NULL, "%s", err);
	az_dir_config_clear(&c);

	/* a filter without %s */
	conf(&c, &S, 0);
	free(c.user_filter);
	c.user_filter = strdup("(uid=alice)");
	ck_assert_ptr_null(az_dir_new(b, &c, err, sizeof(err)));
	az_dir_config_clear(&c);

	/* a default domain that does not exist */
	conf(&c, &S, 0);
	free(c.default_domain);
	c.default_domain = strdup("NOPE");
	ck_assert_ptr_null(az_dir_new(b, &c, err, sizeof(err)));
	az_dir_config_clear(&c);
	event_base_free(b);
}
END_TEST

/* ---- the pool ---- */

struct slow {
	int ran, done;
	pthread_t done_thread;
	int code;
	struct az_entry *e;
};

static void
slow_job(struct az_worker *w, void *arg)
{
	struct slow *s = arg;
	char msg[256];

	(void)w;
	usleep(400000);
	s->ran = 1;
	s->code = az_worker_check_password(
	    w, "alice", "alice-pw", 8, &s->e, msg, sizeof(msg));
}

static void
slow_done(void *arg)
{
	struct slow *s = arg;

	s->done = 1;
	s->done_thread = pthread_self();
}

START_TEST(test_queue_full_and_submit)
{
	struct fix f;
	struct slow s = {0};
	struct res r1 = {0}, r2 = {0}, r3 = {0};
	unsigned long long t0;

	conf(&f.c, &S, 0);
	f.c.workers = 1;
	f.c.queue_max = 2;
	fix_open(&f);
	ck_assert_int_eq(az_dir_submit(f.d, slow_job, slow_done, &s), 0);
	/* wait until the worker has taken it: the queue is empty */
	t0 = now_ms();
	for (;;) {
		struct az_dir_stats st;

		az_dir_get_stats(f.d, &st);
		if (st.queued == 0)
			break;
		ck_assert_msg(now_ms() - t0 < 2000, "worker never started");
		usleep(5000);
	}
	ck_assert_int_eq(az_dir_lookup_user(f.d, "alice", on_entry, &r1), 0);
	ck_assert_int_eq(az_dir_lookup_user(f.d, "bob", on_entry, &r2), 0);
	ck_assert_int_eq(az_dir_lookup_user(f.d, "carol", on_entry, &r3),
	    RP_ERR_DIRECTORY_UNAVAILABLE);
	t0 = now_ms();
	while (!(s.done && r1.done && r2.done) && now_ms() - t0 < 8000)
		event_base_loop(f.b, EVLOOP_ONCE);
	ck_assert(s.ran && s.done);
	ck_assert(pthread_equal(s.done_thread, pthread_self()));
	ck_assert_int_eq(s.code, 0);
	ck_assert_str_eq(s.e->dn, DN_ALICE);
	ck_assert_int_eq(r1.code, 0);
	ck_assert_int_eq(r2.code, 0);
	ck_assert_int_eq(r3.calls, 0);
	az_entry_free(s.e);
	res_clear(&r1);
	res_clear(&r2);
	fix_close(&f);
}
END_TEST

START_TEST(test_free_with_pending)
{
	struct fix f;
	struct slow s = {0};
	struct res r[5];

	memset(r, 0, sizeof(r));
	conf(&f.c, &S, 0);
	f.c.workers = 1;
	fix_open(&f);
	ck_assert_int_eq(az_dir_submit(f.d, slow_job, slow_done, &s), 0);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(
		    az_dir_lookup_user(f.d, "alice", on_entry, &r[i]), 0);
	az_dir_free(f.d); /* without running the loop */
	f.d = NULL;
	ck_assert(s.ran && s.done);
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(r[i].calls, 1);
		ck_assert_int_eq(r[i].code, RP_ERR_CLOSED);
		res_clear(&r[i]);
	}
	az_entry_free(s.e);
	fix_close(&f);
}
END_TEST

static Suite *
dir_suite(void)
{
	Suite *s = suite_create("dir");
	TCase *tc = tcase_create("slapd");

	tcase_add_unchecked_fixture(tc, slapd_up, slapd_down);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_right_password, 0, 2);
	tcase_add_test(tc, test_wrong_password);
	tcase_add_test(tc, test_empty_and_nul_password_no_bind);
	tcase_add_test(tc, test_special_characters);
	tcase_add_test(tc, test_ambiguous_and_unknown);
	tcase_add_test(tc, test_name_forms);
	tcase_add_test(tc, test_upn_filter_and_account_attr);
	tcase_add_test(tc, test_two_domains);
	tcase_add_test(tc, test_nested_walk);
	tcase_add_test(tc, test_nested_memberof);
	tcase_add_test(tc, test_inchain_refused_on_slapd);
	tcase_add_loop_test(tc, test_computers, 0, 2);
	tcase_add_test(tc, test_group_change_after_ttl);
	tcase_add_loop_test(tc, test_down_then_recover, 0, 2);
	tcase_add_loop_test(tc, test_hung_server, 0, 2);
	tcase_add_test(tc, test_starttls_refused);
	tcase_add_loop_test(tc, test_wrong_ca, 0, 2);
	tcase_add_loop_test(tc, test_wrong_hostname, 0, 2);
	tcase_add_test(tc, test_config_refused);
	tcase_add_test(tc, test_queue_full_and_submit);
	tcase_add_test(tc, test_free_with_pending);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(dir_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
