/* test_store.c - the ticket store: every backend passes the same contract
 * tests; the sqlite backend also persistence, file mode and schema checks. */
#include <check.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "bk_store.h"
#include "bk_ticket.h"
#include "rp_error.h"
#include "tl_util.h"

static const char *const backends[] = {"memory", "sqlite"};
static char *dir;

static void
setup(void)
{
	dir = tl_tmpdir("test_store");
	ck_assert_ptr_nonnull(dir);
}

static void
teardown(void)
{
	tl_rmtree(dir);
	free(dir);
}

static struct bk_store *
open_store(const char *backend)
{
	char err[512];
	struct bk_store *s = bk_store_open(
	    backend, tl_path(dir, "tickets.db"), err, sizeof(err));

	ck_assert_msg(s != NULL, "%s: %s", backend, err);
	return s;
}

static struct bk_ticket *
make(int64_t now, int64_t dur, const char *machine)
{
	static const char *const addrs[] = {
	    "192.0.2.7:40001", "[2001:db8::7]:40001", "10.0.0.9:40001"};
	struct bk_ticket_params p = {
	    .helper = "CORP\\alice",
	    .helper_host = "192.0.2.7",
	    .addrs = addrs,
	    .naddrs = 3,
	    .machine = machine,
	    .mode = BK_MODE_CONTROL,
	    .rule = "policy.conf:12 allow CORP\\helpdesk control",
	    .duration_s = dur,
	    .max_duration_s = 86400,
	};
	struct bk_ticket *t;
	char err[256];

	ck_assert_int_eq(
	    bk_ticket_create(&p, now, &t, err, sizeof(err)), RP_OK);
	return t;
}

static void
assert_same(const struct bk_ticket *a, const struct bk_ticket *b)
{
	ck_assert_str_eq(a->id, b->id);
	ck_assert(memcmp(a->secret, b->secret, sizeof(a->secret)) == 0);
	ck_assert_str_eq(a->helper, b->helper);
	ck_assert_str_eq(a->helper_host, b->helper_host);
	ck_assert_uint_eq(a->naddrs, b->naddrs);
	for (size_t i = 0; i < a->naddrs; i++)
		ck_assert_str_eq(a->addrs[i], b->addrs[i]);
	ck_assert_str_eq(a->machine, b->machine);
	ck_assert_int_eq(a->mode, b->mode);
	ck_assert_str_eq(a->rule, b->rule);
	ck_assert_int_eq(a->control_granted, b->control_granted);
	ck_assert_int_eq(a->control_since, b->control_since);
	ck_assert_int_eq(a->state, b->state);
	ck_assert_int_eq(a->created_at, b->created_at);
	ck_assert_int_eq(a->expires_at, b->expires_at);
	ck_assert_int_eq(a->accepted_at, b->accepted_at);
	ck_assert_int_eq(a->connected_at, b->connected_at);
	ck_assert_int_eq(a->ended_at, b->ended_at);
}

START_TEST(test_put_get_del)
{
	struct bk_store *s = open_store(backends[_i]);
	struct bk_ticket *t = make(1000, 600, "ws-1.corp.example"), *g;

	ck_assert_int_eq(bk_store_get(s, t->id, &g), RP_ERR_NOT_FOUND);
	ck_assert_ptr_null(g);
	ck_assert_int_eq(bk_store_put(s, t), RP_OK);
	ck_assert_int_eq(bk_store_get(s, t->id, &g), RP_OK);
	assert_same(t, g);
	bk_ticket_free(g);

	/* Update in place: state, times, the control flag and its start. */
	bk_ticket_transition(t, BK_TS_PROMPTING, 1001);
	bk_ticket_transition(t, BK_TS_ACCEPTED, 1002);
	t->control_granted = 1;
	t->control_since = 1003;
	ck_assert_int_eq(bk_store_put(s, t), RP_OK);
	ck_assert_int_eq(bk_store_get(s, t->id, &g), RP_OK);
	assert_same(t, g);
	ck_assert_int_eq(g->state, BK_TS_ACCEPTED);
	bk_ticket_free(g);

	ck_assert_int_eq(bk_store_del(s, t->id), RP_OK);
	ck_assert_int_eq(bk_store_del(s, t->id), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(bk_store_get(s, t->id, &g), RP_ERR_NOT_FOUND);
	bk_ticket_free(t);
	bk_store_close(s);
}
END_TEST

struct seen {
	char ids[16][BK_TICKET_ID_LEN + 1];
	int states[16];
	int n;
	int stop_after;
};

static int
seen_cb(const struct bk_ticket *t, void *arg)
{
	struct seen *v = arg;

	ck_assert_int_lt(v->n, 16);
	memcpy(v->ids[v->n], t->id, sizeof(v->ids[0]));
	v->states[v->n] = t->state;
	v->n++;
	if (v->stop_after && v->n == v->stop_after)
		return 42;
	return 0;
}

START_TEST(test_list_open)
{
	struct bk_store *s = open_store(backends[_i]);
	struct bk_ticket *a = make(300, 600, "a"), *b = make(100, 600, "b");
	struct bk_ticket *c = make(200, 600, "c"), *d = make(50, 600, "d");
	struct seen v = {0};
	size_t n;

	bk_ticket_transition(c, BK_TS_PROMPTING, 201);
	bk_ticket_transition(c, BK_TS_DECLINED, 202); /* final */
	bk_ticket_transition(d, BK_TS_PROMPTING, 60);
	bk_ticket_transition(d, BK_TS_ACCEPTED, 61);
	bk_ticket_transition(d, BK_TS_CONNECTED, 62); /* still open */
	ck_assert_int_eq(bk_store_put(s, a), RP_OK);
	ck_assert_int_eq(bk_store_put(s, b), RP_OK);
	ck_assert_int_eq(bk_store_put(s, c), RP_OK);
	ck_assert_int_eq(bk_store_put(s, d), RP_OK);
	ck_assert_int_eq(bk_store_list_open(s, seen_cb, &v), 0);
	ck_assert_int_eq(v.n, 3); /* by created_at: d, b, a */
	ck_assert_str_eq(v.ids[0], d->id);
	ck_assert_str_eq(v.ids[1], b->id);
	ck_assert_str_eq(v.ids[2], a->id);
	ck_assert_int_eq(bk_store_count_open(s, &n), 0);
	ck_assert_uint_eq(n, 3);

	memset(&v, 0, sizeof(v));
	v.stop_after = 2;
	ck_assert_int_eq(bk_store_list_open(s, seen_cb, &v), 42);
	ck_assert_int_eq(v.n, 2);
	bk_ticket_free(a);
	bk_ticket_free(b);
	bk_ticket_free(c);
	bk_ticket_free(d);
	bk_store_close(s);
}
END_TEST

/* A callback that writes to the store while being iterated. */
static int
del_cb(const struct bk_ticket *t, void *arg)
{
	ck_assert_int_eq(bk_store_del(arg, t->id), RP_OK);
	return 0;
}

START_TEST(test_callback_may_modify)
{
	struct bk_store *s = open_store(backends[_i]);
	size_t n;

	for (int i = 0; i < 10; i++) {
		struct bk_ticket *t = make(100 + i, 600, "m");

		ck_assert_int_eq(bk_store_put(s, t), RP_OK);
		bk_ticket_free(t);
	}
	ck_assert_int_eq(bk_store_list_open(s, del_cb, s), 0);
	ck_assert_int_eq(bk_store_count_open(s, &n), 0);
	ck_assert_uint_eq(n, 0);
	bk_store_close(s);
}
END_TEST

START_TEST(test_expire_before)
{
	struct bk_store *s = open_store(backends[_i]);
	struct bk_ticket *a = make(100, 100, "a"); /* expires 200 */
	struct bk_ticket *b = make(100, 500, "b"); /* expires 600 */
	struct bk_ticket *c = make(100, 50, "c");  /* expires 150, final */
	struct bk_ticket *g;
	struct seen v = {0};
	size_t n;

	bk_ticket_transition(c, BK_TS_CANCELLED, 120);
	bk_store_put(s, a);
	bk_store_put(s, b);
	bk_store_put(s, c);
	ck_assert_int_eq(bk_store_expire_before(s, 199, seen_cb, &v), 0);
	ck_assert_int_eq(v.n, 0);
	ck_assert_int_eq(bk_store_expire_before(s, 200, seen_cb, &v), 0);
	ck_assert_int_eq(v.n, 1);
	ck_assert_str_eq(v.ids[0], a->id);
	ck_assert_int_eq(v.states[0], BK_TS_EXPIRED);
	ck_assert_int_eq(bk_store_get(s, a->id, &g), RP_OK);
	ck_assert_int_eq(g->state, BK_TS_EXPIRED);
	ck_assert_int_eq(g->ended_at, 200);
	bk_ticket_free(g);
	ck_assert_int_eq(bk_store_get(s, c->id, &g), RP_OK);
	ck_assert_int_eq(g->state, BK_TS_CANCELLED); /* untouched */
	bk_ticket_free(g);
	/* Once expired, not reported again. */
	memset(&v, 0, sizeof(v));
	ck_assert_int_eq(bk_store_expire_before(s, 300, seen_cb, &v), 0);
	ck_assert_int_eq(v.n, 0);
	ck_assert_int_eq(bk_store_count_open(s, &n), 0);
	ck_assert_uint_eq(n, 1);

	/* Purge: final tickets ended before 201 (a at 200, c at 120). */
	ck_assert_int_eq(bk_store_purge_closed(s, 150, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(bk_store_get(s, c->id, &g), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(bk_store_purge_closed(s, 1000, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(bk_store_get(s, a->id, &g), RP_ERR_NOT_FOUND);
	ck_assert_int_eq(bk_store_get(s, b->id, &g), RP_OK); /* open */
	bk_ticket_free(g);
	bk_ticket_free(a);
	bk_ticket_free(b);
	bk_ticket_free(c);
	bk_store_close(s);
}
END_TEST

START_TEST(test_unknown_backend)
{
	char err[256];

	ck_assert_ptr_null(bk_store_open("redis", "x", err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "redis"));
	ck_assert_ptr_null(bk_store_backend(NULL));
	ck_assert_ptr_eq(bk_store_backend("sqlite"), &bk_store_sqlite_ops);
}
END_TEST

/* Open tickets survive a restart, secrets included. */
START_TEST(test_sqlite_reopen)
{
	struct bk_store *s = open_store("sqlite");
	struct bk_ticket *t[5], *g;
	struct seen v = {0};

	for (int i = 0; i < 5; i++) {
		t[i] = make(100 + i, 600, "ws.corp.example");
		if (i == 1) { /* accepted: must still connect after restart */
			bk_ticket_transition(t[i], BK_TS_PROMPTING, 110);
			bk_ticket_transition(t[i], BK_TS_ACCEPTED, 111);
		}
		if (i == 3)
			bk_ticket_transition(t[i], BK_TS_REVOKED, 112);
		ck_assert_int_eq(bk_store_put(s, t[i]), RP_OK);
	}
	bk_store_close(s);

	s = open_store("sqlite");
	ck_assert_int_eq(bk_store_list_open(s, seen_cb, &v), 0);
	ck_assert_int_eq(v.n, 4);
	ck_assert_str_eq(v.ids[0], t[0]->id);
	ck_assert_str_eq(v.ids[1], t[1]->id);
	ck_assert_str_eq(v.ids[2], t[2]->id);
	ck_assert_str_eq(v.ids[3], t[4]->id);
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(bk_store_get(s, t[i]->id, &g), RP_OK);
		assert_same(t[i], g);
		if (i == 1) {
			ck_assert(bk_ticket_secret_matches(
			    g, t[1]->secret, BK_TICKET_SECRET_BYTES));
			ck_assert_int_eq(bk_ticket_use(g, 200), RP_OK);
		}
		bk_ticket_free(g);
		bk_ticket_free(t[i]);
	}
	bk_store_close(s);
}
END_TEST

START_TEST(test_sqlite_file_mode)
{
	const char *path = tl_path(dir, "tickets.db");
	struct bk_store *s;
	struct stat sb;
	char err[512];

	umask(022);
	s = open_store("sqlite");
	bk_store_close(s);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 0777, 0600);

	ck_assert_int_eq(chmod(path, 0644), 0);
	s = bk_store_open("sqlite", path, err, sizeof(err));
	ck_assert_ptr_null(s);
	ck_assert_msg(strstr(err, "chmod 600") != NULL, "%s", err);
	ck_assert_int_eq(chmod(path, 0640), 0);
	ck_assert_ptr_null(bk_store_open("sqlite", path, err, sizeof(err)));
	ck_assert_int_eq(chmod(path, 0600), 0);
	s = bk_store_open("sqlite", path, err, sizeof(err));
	ck_assert_ptr_nonnull(s);
	bk_store_close(s);

	ck_assert_ptr_null(bk_store_open("sqlite", dir, err, sizeof(err)));
	ck_assert_ptr_null(bk_store_open("sqlite", "", err, sizeof(err)));
	ck_assert_ptr_null(bk_store_open(
	    "sqlite", tl_path(dir, "x.db?sync=off"), err, sizeof(err)));
	ck_assert_msg(strstr(err, "sync=off") != NULL, "%s", err);
	s = bk_store_open(
	    "sqlite", tl_path(dir, "y.db?sync=normal"), err, sizeof(err));
	ck_assert_msg(s != NULL, "%s", err);
	bk_store_close(s);
	ck_assert_int_eq(access(tl_path(dir, "y.db"), F_OK), 0);
}
END_TEST

START_TEST(test_sqlite_wal_and_schema)
{
	const char *path = tl_path(dir, "tickets.db");
	struct bk_store *s = open_store("sqlite");
	sqlite3 *db;
	sqlite3_stmt *st;
	char err[512];

	bk_store_close(s);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL),
	    SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	ck_assert_int_eq(sqlite3_exec(db,
	                     "UPDATE schema_version SET "
	                     "version = 99",
	                     NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	ck_assert_ptr_null(bk_store_open("sqlite", path, err, sizeof(err)));
	ck_assert_msg(strstr(err, "schema version 99") != NULL, "%s", err);
}
END_TEST

/* A file of schema version 1 (no control_since) still opens: it is
 * migrated to version 2 in place, its tickets read with control_since 0,
 * and the new column is written and read back. */
START_TEST(test_sqlite_migrate_v1)
{
	static const char v1[] =
	    "CREATE TABLE schema_version (version INTEGER NOT NULL);"
	    "INSERT INTO schema_version (version) VALUES (1);"
	    "CREATE TABLE tickets ("
	    " id TEXT PRIMARY KEY NOT NULL, secret BLOB NOT NULL,"
	    " helper TEXT NOT NULL, helper_host TEXT NOT NULL,"
	    " addrs TEXT NOT NULL, machine TEXT NOT NULL, mode TEXT NOT NULL,"
	    " rule TEXT NOT NULL, control INTEGER NOT NULL,"
	    " state TEXT NOT NULL, open INTEGER NOT NULL,"
	    " created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,"
	    " accepted_at INTEGER NOT NULL, connected_at INTEGER NOT NULL,"
	    " ended_at INTEGER NOT NULL);"
	    "CREATE INDEX tickets_open ON tickets (open, expires_at);"
	    "INSERT INTO tickets VALUES ('0123456789abcdef0123456789abcdef',"
	    " zeroblob(32), 'CORP\\alice', '192.0.2.7',"
	    " '[\"192.0.2.7:40001\"]', 'ws.corp.example', 'control', 'r', 1,"
	    " 'connected', 1, 100, 2000, 110, 120, 0);";
	const char *path = tl_path(dir, "tickets.db");
	struct bk_store *s;
	struct bk_ticket *g;
	sqlite3 *db;
	sqlite3_stmt *st;
	char err[512];

	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	ck_assert_int_eq(chmod(path, 0600), 0);

	s = bk_store_open("sqlite", path, err, sizeof(err));
	ck_assert_msg(s != NULL, "a version 1 file: %s", err);
	ck_assert_int_eq(
	    bk_store_get(s, "0123456789abcdef0123456789abcdef", &g), RP_OK);
	ck_assert_int_eq(g->state, BK_TS_CONNECTED);
	ck_assert_int_eq(g->control_granted, 1);
	ck_assert_int_eq(g->control_since, 0);
	ck_assert_int_eq(g->connected_at, 120);
	g->control_since = 130;
	ck_assert_int_eq(bk_store_put(s, g), RP_OK);
	bk_ticket_free(g);
	bk_store_close(s);

	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_prepare_v2(
	        db, "SELECT max(version) FROM schema_version", -1, &st, NULL),
	    SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_int_eq(sqlite3_column_int(st, 0), 2);
	sqlite3_finalize(st);
	sqlite3_close(db);

	s = open_store("sqlite");
	ck_assert_int_eq(
	    bk_store_get(s, "0123456789abcdef0123456789abcdef", &g), RP_OK);
	ck_assert_int_eq(g->control_since, 130);
	bk_ticket_free(g);
	bk_store_close(s);
}
END_TEST

/* ---- durable writes ---------------------------------------------------- */

#define NDUR 40

struct dur {
	struct bk_store *s;
	const char *backend;
	int calls[NDUR];
	int rc[NDUR];
	int order[NDUR];
	int n;
	char ids[NDUR][BK_TICKET_ID_LEN + 1];
	int fresh_state[NDUR]; /* state a fresh connection read, or -1 */
};

struct dur_arg {
	struct dur *d;
	int i;
};

/* The state of ticket `id` as a brand-new connection to the file sees it
 * (not the store's own connection). */
static int
fresh_read_state(const char *id)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int state = -1;

	ck_assert_int_eq(sqlite3_open_v2(tl_path(dir, "tickets.db"), &db,
	                     SQLITE_OPEN_READONLY, NULL),
	    SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_prepare_v2(
	        db, "SELECT state FROM tickets WHERE id = ?1", -1, &st, NULL),
	    SQLITE_OK);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		state = bk_ticket_state_parse(
		    (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
	return state;
}

static void
dur_cb(int rc, void *arg)
{
	struct dur_arg *a = arg;
	struct dur *d = a->d;

	d->calls[a->i]++;
	d->rc[a->i] = rc;
	d->order[d->n++] = a->i;
	if (strcmp(d->backend, "sqlite") == 0 && d->ids[a->i][0] != '\0')
		d->fresh_state[a->i] = fresh_read_state(d->ids[a->i]);
}

static int dur_want = NDUR;

static int
dur_done(void *arg)
{
	struct dur *d = arg;

	return d->n >= dur_want;
}

/* put_durable: the write is readable at once on the store's connection,
 * the callback never runs before the call returns, runs once per call, in
 * call order, on the loop, when a fresh connection can read the record. */
START_TEST(test_durable_order)
{
	struct event_base *base = event_base_new();
	struct bk_store *s = open_store(backends[_i]);
	static struct dur d;
	struct dur_arg a[NDUR];
	struct bk_ticket *t, *g;

	memset(&d, 0, sizeof(d));
	d.s = s;
	d.backend = backends[_i];
	ck_assert_int_eq(bk_store_set_loop(s, base), 0);
	for (int i = 0; i < NDUR; i++) {
		a[i].d = &d;
		a[i].i = i;
		d.fresh_state[i] = -2;
		if (i % 5 == 4) { /* a bare barrier between writes */
			bk_store_sync(s, dur_cb, &a[i]);
			continue;
		}
		t = make(1000 + i, 600, "ws.corp.example");
		bk_ticket_transition(t, BK_TS_PROMPTING, 1000 + i);
		bk_ticket_transition(t, BK_TS_ACCEPTED, 1000 + i);
		memcpy(d.ids[i], t->id, sizeof(d.ids[i]));
		bk_store_put_durable(s, t, dur_cb, &a[i]);
		ck_assert_int_eq(d.n, 0); /* never before the call returns */
		/* Read-your-writes on the loop, before it is durable. */
		ck_assert_int_eq(bk_store_get(s, t->id, &g), RP_OK);
		ck_assert_int_eq(g->state, BK_TS_ACCEPTED);
		bk_ticket_free(g);
		bk_ticket_free(t);
	}
	ck_assert_uint_eq(bk_store_pending(s), NDUR);
	dur_want = NDUR;
	ck_assert(tl_run_until(base, dur_done, &d, 10000));
	/* A few more turns: nothing runs twice. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(d.n, NDUR);
	ck_assert_uint_eq(bk_store_pending(s), 0);
	for (int i = 0; i < NDUR; i++) {
		ck_assert_int_eq(d.order[i], i);
		ck_assert_int_eq(d.calls[i], 1);
		ck_assert_int_eq(d.rc[i], RP_OK);
		if (strcmp(d.backend, "sqlite") == 0 && i % 5 != 4)
			ck_assert_int_eq(d.fresh_state[i], BK_TS_ACCEPTED);
	}
	ck_assert(bk_store_ok(s));
	bk_store_close(s);
	event_base_free(base);
}
END_TEST

/* With a loop, the writes of one loop turn share one transaction: the
 * store's own reads see them at once, another connection only once the
 * turn has ended (one commit). An expiry sweep in the middle of a turn
 * commits what came before it first. */
START_TEST(test_sqlite_batch_per_turn)
{
	struct event_base *base = event_base_new();
	struct bk_store *s = open_store("sqlite");
	struct bk_ticket *t[3], *g;
	size_t n = 0;

	ck_assert_int_eq(bk_store_set_loop(s, base), 0);
	for (int i = 0; i < 3; i++) {
		t[i] = make(1000 + i, 600, "ws.corp.example");
		bk_ticket_transition(t[i], BK_TS_PROMPTING, 1000 + i);
		ck_assert_int_eq(bk_store_put(s, t[i]), RP_OK);
		ck_assert_int_eq(bk_store_get(s, t[i]->id, &g), RP_OK);
		ck_assert_int_eq(g->state, BK_TS_PROMPTING);
		bk_ticket_free(g);
		ck_assert_int_eq(fresh_read_state(t[i]->id), -1);
	}
	event_base_loop(base, EVLOOP_NONBLOCK); /* the turn ends */
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(fresh_read_state(t[i]->id), BK_TS_PROMPTING);

	/* A new turn: a write, then a sweep that expires nothing. */
	bk_ticket_transition(t[0], BK_TS_ACCEPTED, 1100);
	ck_assert_int_eq(bk_store_put(s, t[0]), RP_OK);
	ck_assert_int_eq(fresh_read_state(t[0]->id), BK_TS_PROMPTING);
	ck_assert_int_eq(bk_store_expire_before(s, 1200, NULL, NULL), RP_OK);
	ck_assert_int_eq(fresh_read_state(t[0]->id), BK_TS_ACCEPTED);
	ck_assert_int_eq(bk_store_count_open(s, &n), RP_OK);
	ck_assert_uint_eq(n, 3);
	event_base_loop(base, EVLOOP_NONBLOCK);
	for (int i = 0; i < 3; i++)
		bk_ticket_free(t[i]);
	bk_store_close(s);
	event_base_free(base);
}
END_TEST

/* Closing with writes in flight (and no loop turn since): every callback
 * runs exactly once, inside bk_store_close, with success; the records are
 * there for the next start. Without a loop, only flush/close run them. */
START_TEST(test_durable_close_pending)
{
	struct event_base *base = event_base_new();
	struct bk_store *s = open_store(backends[_i]);
	static struct dur d;
	struct dur_arg a[NDUR];
	struct bk_ticket *t[NDUR], *g;

	memset(&d, 0, sizeof(d));
	d.backend = "memory"; /* no fresh reads from inside close */
	for (int i = 0; i < NDUR; i++) {
		a[i].d = &d;
		a[i].i = i;
		t[i] = make(1000 + i, 600, "ws.corp.example");
		bk_ticket_transition(t[i], BK_TS_PROMPTING, 1000 + i);
		bk_ticket_transition(t[i], BK_TS_ACCEPTED, 1000 + i);
		bk_store_put_durable(s, t[i], dur_cb, &a[i]);
		if (i == NDUR / 2) {
			/* No loop yet: nothing runs until flushed. */
			usleep(20000);
			ck_assert_int_eq(d.n, 0);
			bk_store_flush(s);
			ck_assert_int_eq(d.n, i + 1);
			ck_assert_int_eq(bk_store_set_loop(s, base), 0);
		}
	}
	bk_store_close(s);
	ck_assert_int_eq(d.n, NDUR);
	for (int i = 0; i < NDUR; i++) {
		ck_assert_int_eq(d.order[i], i);
		ck_assert_int_eq(d.calls[i], 1);
		ck_assert_int_eq(d.rc[i], RP_OK);
	}
	/* The loop has nothing left to run (the event went with the store). */
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(d.n, NDUR);
	if (strcmp(backends[_i], "sqlite") == 0) {
		s = open_store("sqlite");
		for (int i = 0; i < NDUR; i++) {
			ck_assert_int_eq(bk_store_get(s, t[i]->id, &g), RP_OK);
			ck_assert_int_eq(g->state, BK_TS_ACCEPTED);
			bk_ticket_free(g);
		}
		bk_store_close(s);
	}
	for (int i = 0; i < NDUR; i++)
		bk_ticket_free(t[i]);
	event_base_free(base);
}
END_TEST

/* A sync that fails (EIO from fdatasync) fails every write it covered, and
 * the store stays failed: later durable writes and barriers fail at once,
 * bk_store_ok says so. */
START_TEST(test_sqlite_sync_failure)
{
	struct event_base *base = event_base_new();
	struct bk_store *s = open_store("sqlite");
	static struct dur d;
	struct dur_arg a[3];
	struct bk_ticket *t = make(1000, 600, "ws.corp.example");

	memset(&d, 0, sizeof(d));
	d.backend = "memory";
	for (int i = 0; i < 3; i++) {
		a[i].d = &d;
		a[i].i = i;
	}
	ck_assert_int_eq(bk_store_set_loop(s, base), 0);
	bk_ticket_transition(t, BK_TS_PROMPTING, 1000);
	bk_ticket_transition(t, BK_TS_ACCEPTED, 1001);
	bk_store_sqlite_fail_next_sync(s, EIO);
	bk_store_put_durable(s, t, dur_cb, &a[0]);
	dur_want = 1;
	ck_assert(tl_run_until(base, dur_done, &d, 10000));
	ck_assert_int_eq(d.rc[0], RP_ERR_IO);
	ck_assert(!bk_store_ok(s));
	bk_ticket_transition(t, BK_TS_CONNECTED, 1002);
	bk_store_put_durable(s, t, dur_cb, &a[1]);
	bk_store_sync(s, dur_cb, &a[2]);
	dur_want = 3;
	ck_assert(tl_run_until(base, dur_done, &d, 10000));
	ck_assert_int_eq(d.rc[1], RP_ERR_IO);
	ck_assert_int_eq(d.rc[2], RP_ERR_IO);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(d.calls[i], 1);
	bk_store_close(s);
	bk_ticket_free(t);
	event_base_free(base);
}
END_TEST

/* A write that fails (here: another process holds the write lock) is
 * reported through the callback, never as a success. */
START_TEST(test_sqlite_write_failure)
{
	struct event_base *base = event_base_new();
	struct bk_store *s = open_store("sqlite");
	static struct dur d;
	struct dur_arg a = {&d, 0};
	struct bk_ticket *t = make(1000, 600, "ws.corp.example");
	sqlite3 *db;

	memset(&d, 0, sizeof(d));
	d.backend = "memory";
	ck_assert_int_eq(bk_store_set_loop(s, base), 0);
	ck_assert_int_eq(
	    sqlite3_open(tl_path(dir, "tickets.db"), &db), SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
	bk_ticket_transition(t, BK_TS_PROMPTING, 1000);
	bk_ticket_transition(t, BK_TS_ACCEPTED, 1001);
	bk_store_put_durable(s, t, dur_cb, &a); /* waits out busy_timeout */
	ck_assert_int_eq(d.n, 0);
	dur_want = 1;
	ck_assert(tl_run_until(base, dur_done, &d, 10000));
	ck_assert_int_eq(d.calls[0], 1);
	ck_assert_int_eq(d.rc[0], RP_ERR_IO);
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);
	/* A lock is not a broken disk: the store goes on. */
	ck_assert(bk_store_ok(s));
	bk_store_close(s);
	bk_ticket_free(t);
	event_base_free(base);
}
END_TEST

/* A damaged row is skipped (and logged), never crashes the broker. */
START_TEST(test_sqlite_bad_row)
{
	const char *path = tl_path(dir, "tickets.db");
	struct bk_store *s = open_store("sqlite");
	struct bk_ticket *t = make(100, 600, "m"), *g;
	sqlite3 *db;
	size_t n;

	bk_store_put(s, t);
	bk_store_close(s);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "UPDATE tickets SET state = 'weird'",
	                     NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	s = open_store("sqlite");
	ck_assert_int_eq(bk_store_get(s, t->id, &g), RP_ERR_IO);
	ck_assert_int_eq(bk_store_count_open(s, &n), 0);
	ck_assert_uint_eq(n, 0);
	bk_ticket_free(t);
	bk_store_close(s);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("contract");
	TCase *sq = tcase_create("sqlite");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_put_get_del, 0, 2);
	tcase_add_loop_test(tc, test_list_open, 0, 2);
	tcase_add_loop_test(tc, test_callback_may_modify, 0, 2);
	tcase_add_loop_test(tc, test_expire_before, 0, 2);
	tcase_add_test(tc, test_unknown_backend);
	tcase_add_loop_test(tc, test_durable_order, 0, 2);
	tcase_add_loop_test(tc, test_durable_close_pending, 0, 2);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(sq, setup, teardown);
	tcase_add_test(sq, test_sqlite_reopen);
	tcase_add_test(sq, test_sqlite_file_mode);
	tcase_add_test(sq, test_sqlite_wal_and_schema);
	tcase_add_test(sq, test_sqlite_migrate_v1);
	tcase_add_test(sq, test_sqlite_bad_row);
	tcase_add_test(sq, test_sqlite_sync_failure);
	tcase_add_test(sq, test_sqlite_write_failure);
	tcase_add_test(sq, test_sqlite_batch_per_turn);
	suite_add_tcase(s, sq);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
