/*
 * bk_store_sqlite.c - the default ticket store: one SQLite file in WAL mode.
 *
 * Durability, per state. In WAL mode synchronous=FULL costs one fsync of
 * the WAL per commit; NORMAL skips it and could, after a power cut (not a
 * mere crash of the daemon), lose the last commits. For a ticket that
 * matters once it can be used: losing "connected" would make a used ticket
 * usable again and losing "revoked" would resurrect a ticket the novice
 * expired. So every state from "accepted" on is committed with FULL, while
 * "offered" and "prompting" (nobody has consented yet; a restarted broker
 * times prompting tickets out anyway) are committed with NORMAL: the offer
 * path reaches the user's prompt without waiting for the disk. A FULL
 * commit also makes every earlier NORMAL one durable (same WAL file).
 * "path?sync=full" forces FULL for every commit, "path?sync=normal" NORMAL
 * (benchmarks only).
 *
 * Secrets: the file holds ticket secrets (an accepted ticket must still be
 * usable after a restart), so it is created 0600 and a file that group or
 * others can access is refused, like ssh refuses a readable private key.
 * SQLite gives the -wal and -shm files the main file's mode.
 *
 * Every statement is prepared once at open and reset after use.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bk_store.h"
#include "bk_ticket.h"
#include "rp_error.h"
#include "rp_log.h"

#define SCHEMA_VERSION 1
#define BUSY_TIMEOUT_MS 5000

enum {
	ST_PUT,
	ST_GET,
	ST_DEL,
	ST_OPEN,
	ST_DUE,
	ST_PURGE,
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_COUNT
};

#define COLS                                                            \
	"id, secret, helper, helper_host, addrs, machine, mode, rule, " \
	"control, state, open, created_at, expires_at, accepted_at, "   \
	"connected_at, ended_at"

static const char *const sql_text[ST_COUNT] = {
    [ST_PUT] = "INSERT OR REPLACE INTO tickets (" COLS ") VALUES "
               "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
               " ?15, ?16)",
    [ST_GET] = "SELECT " COLS " FROM tickets WHERE id = ?1",
    [ST_DEL] = "DELETE FROM tickets WHERE id = ?1",
    [ST_OPEN] = "SELECT " COLS " FROM tickets WHERE open = 1 "
                "ORDER BY created_at, id",
    [ST_DUE] = "SELECT " COLS " FROM tickets WHERE open = 1 AND "
               "expires_at <= ?1 ORDER BY created_at, id",
    [ST_PURGE] = "DELETE FROM tickets WHERE open = 0 AND ended_at < ?1",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tickets ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " secret BLOB NOT NULL,"
    " helper TEXT NOT NULL,"
    " helper_host TEXT NOT NULL,"
    " addrs TEXT NOT NULL," /* JSON array of "ip:port" */
    " machine TEXT NOT NULL,"
    " mode TEXT NOT NULL,"
    " rule TEXT NOT NULL,"
    " control INTEGER NOT NULL,"
    " state TEXT NOT NULL,"
    " open INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL,"
    " accepted_at INTEGER NOT NULL,"
    " connected_at INTEGER NOT NULL,"
    " ended_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS tickets_open ON tickets (open, expires_at);";

struct sq {
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	char path[1024];
	int fixed; /* "?sync=" given: never switch */
	int full;  /* current synchronous level is FULL */
};

/* Switches the connection's synchronous level when it differs. */
static int
sq_sync_level(struct sq *q, int full)
{
	char *msg = NULL;

	if (q->fixed || q->full == full)
		return 0;
	if (sqlite3_exec(q->db,
	        full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
	        NULL, NULL, &msg) != SQLITE_OK) {
		log_warnx("ticket store %s: synchronous: %s", q->path,
		    msg ? msg : sqlite3_errmsg(q->db));
		sqlite3_free(msg);
		return -1;
	}
	q->full = full;
	return 0;
}

static int
sq_fail(struct sq *q, const char *what)
{
	log_warnx(
	    "ticket store %s: %s: %s", q->path, what, sqlite3_errmsg(q->db));
	return RP_ERR_IO;
}

/*
 * Creates the file 0600 if missing, then refuses it unless it is a regular
 * file that only its owner can access. Done before SQLite touches it.
 */
static int
check_file(const char *path, char *err, size_t errlen)
{
	struct stat sb;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		return -1;
	}
	if ((sb.st_mode & 077) != 0) {
		snprintf(err, errlen,
		    "%s: mode %04o lets group or others read ticket secrets; "
		    "chmod 600 it",
		    path, (unsigned)(sb.st_mode & 07777));
		return -1;
	}
	return 0;
}

static int
schema_init(struct sq *q, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	char *msg = NULL;
	int v = -1;

	if (sqlite3_exec(q->db, "BEGIN IMMEDIATE;", NULL, NULL, &msg) !=
	        SQLITE_OK ||
	    sqlite3_exec(q->db, schema_sql, NULL, NULL, &msg) != SQLITE_OK)
		goto fail;
	if (sqlite3_prepare_v2(q->db, "SELECT max(version) FROM schema_version",
	        -1, &st, NULL) != SQLITE_OK)
		goto fail;
	if (sqlite3_step(st) == SQLITE_ROW &&
	    sqlite3_column_type(st, 0) != SQLITE_NULL)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (v == -1) {
		if (sqlite3_exec(q->db,
		        "INSERT INTO schema_version (version) VALUES (1);",
		        NULL, NULL, &msg) != SQLITE_OK)
			goto fail;
		v = SCHEMA_VERSION;
	}
	if (v != SCHEMA_VERSION) {
		sqlite3_exec(q->db, "ROLLBACK;", NULL, NULL, NULL);
		snprintf(err, errlen,
		    "%s: schema version %d, this program knows %d", q->path, v,
		    SCHEMA_VERSION);
		return -1;
	}
	if (sqlite3_exec(q->db, "COMMIT;", NULL, NULL, &msg) != SQLITE_OK)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "%s: schema: %s", q->path,
	    msg ? msg : sqlite3_errmsg(q->db));
	sqlite3_free(msg);
	sqlite3_exec(q->db, "ROLLBACK;", NULL, NULL, NULL);
	return -1;
}

static void
sq_free(struct sq *q)
{
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(q->st[i]);
	if (q->db != NULL)
		sqlite3_close(q->db);
	free(q);
}

static int
sq_open(struct bk_store *s, const char *spec, char *err, size_t errlen)
{
	const char *sync = "FULL";
	struct sq *q;
	char pragmas[256];
	char *msg = NULL;
	const char *qm;
	size_t n;

	if (spec == NULL || *spec == '\0') {
		snprintf(err, errlen, "ticket store: no file name");
		return RP_ERR_CONFIG;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return RP_ERR_NOMEM;
	}
	n = (qm = strchr(spec, '?')) ? (size_t)(qm - spec) : strlen(spec);
	if (n >= sizeof(q->path)) {
		snprintf(err, errlen, "ticket store: file name too long");
		free(q);
		return RP_ERR_CONFIG;
	}
	memcpy(q->path, spec, n);
	q->path[n] = '\0';
	q->full = 1;
	if (qm != NULL) {
		q->fixed = 1;
		if (strcmp(qm, "?sync=normal") == 0) {
			sync = "NORMAL";
			q->full = 0;
		} else if (strcmp(qm, "?sync=full") != 0) {
			snprintf(err, errlen,
			    "%s: unknown option \"%.32s\" (sync=full|normal)",
			    q->path, qm + 1);
			free(q);
			return RP_ERR_CONFIG;
		}
	}
	if (check_file(q->path, err, errlen) == -1) {
		free(q);
		return RP_ERR_CONFIG;
	}
	if (sqlite3_open_v2(q->path, &q->db,
	        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
	        NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", q->path,
		    q->db ? sqlite3_errmsg(q->db) : "out of memory");
		sq_free(q);
		return RP_ERR_IO;
	}
	sqlite3_extended_result_codes(q->db, 1);
	sqlite3_busy_timeout(q->db, BUSY_TIMEOUT_MS);
	snprintf(pragmas, sizeof(pragmas),
	    "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;"
	    " PRAGMA foreign_keys=OFF; PRAGMA secure_delete=ON;",
	    sync);
	if (sqlite3_exec(q->db, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", q->path,
		    msg ? msg : sqlite3_errmsg(q->db));
		sqlite3_free(msg);
		sq_free(q);
		return RP_ERR_IO;
	}
	if (schema_init(q, err, errlen) == -1) {
		sq_free(q);
		return RP_ERR_IO;
	}
	for (int i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(q->db, sql_text[i], -1,
		        SQLITE_PREPARE_PERSISTENT, &q->st[i],
		        NULL) != SQLITE_OK) {
			snprintf(err, errlen, "%s: prepare: %s", q->path,
			    sqlite3_errmsg(q->db));
			sq_free(q);
			return RP_ERR_IO;
		}
	}
	s->priv = q;
	return RP_OK;
}

static void
sq_close(struct bk_store *s)
{
	sq_free(s->priv);
}

static int
run_simple(struct sq *q, int which)
{
	sqlite3_stmt *st = q->st[which];
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE ? RP_OK : sq_fail(q, sql_text[which]);
}

static int
sq_put(struct bk_store *s, const struct bk_ticket *t)
{
	struct sq *q = s->priv;
	sqlite3_stmt *st = q->st[ST_PUT];
	json_t *a;
	char *addrs;
	int rc;

	if ((a = json_array()) == NULL)
		return RP_ERR_NOMEM;
	for (size_t i = 0; i < t->naddrs; i++)
		json_array_append_new(a, json_string(t->addrs[i]));
	addrs = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	if (addrs == NULL)
		return RP_ERR_NOMEM;
	if (sq_sync_level(
	        q, t->state != BK_TS_OFFERED && t->state != BK_TS_PROMPTING) ==
	    -1) {
		free(addrs);
		return RP_ERR_IO;
	}
	sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, t->secret, sizeof(t->secret), SQLITE_STATIC);
	sqlite3_bind_text(st, 3, t->helper ? t->helper : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(
	    st, 4, t->helper_host ? t->helper_host : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, addrs, -1, SQLITE_STATIC);
	sqlite3_bind_text(
	    st, 6, t->machine ? t->machine : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(
	    st, 7, bk_ticket_mode_name(t->mode), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, t->rule ? t->rule : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 9, t->control_granted != 0);
	sqlite3_bind_text(
	    st, 10, bk_ticket_state_name(t->state), -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 11, bk_ticket_is_open(t));
	sqlite3_bind_int64(st, 12, t->created_at);
	sqlite3_bind_int64(st, 13, t->expires_at);
	sqlite3_bind_int64(st, 14, t->accepted_at);
	sqlite3_bind_int64(st, 15, t->connected_at);
	sqlite3_bind_int64(st, 16, t->ended_at);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	free(addrs);
	return rc == SQLITE_DONE ? RP_OK : sq_fail(q, "put");
}

static char *
col_str(sqlite3_stmt *st, int i)
{
	const unsigned char *s = sqlite3_column_text(st, i);

	return strdup(s ? (const char *)s : "");
}

/* Builds a ticket from the current row; NULL on a bad row or no memory. */
static struct bk_ticket *
row_ticket(struct sq *q, sqlite3_stmt *st)
{
	struct bk_ticket *t;
	const unsigned char *id, *addrs;
	json_t *a = NULL, *v;
	size_t i;
	int state, mode;

	if ((t = bk_ticket_alloc()) == NULL)
		return NULL;
	id = sqlite3_column_text(st, 0);
	if (id == NULL || !bk_ticket_id_valid((const char *)id) ||
	    sqlite3_column_bytes(st, 1) != BK_TICKET_SECRET_BYTES)
		goto bad;
	memcpy(t->id, id, BK_TICKET_ID_LEN + 1);
	memcpy(t->secret, sqlite3_column_blob(st, 1), BK_TICKET_SECRET_BYTES);
	t->helper = col_str(st, 2);
	t->helper_host = col_str(st, 3);
	t->machine = col_str(st, 5);
	t->rule = col_str(st, 7);
	if (!t->helper || !t->helper_host || !t->machine || !t->rule)
		goto bad;
	addrs = sqlite3_column_text(st, 4);
	a = json_loads(addrs ? (const char *)addrs : "", 0, NULL);
	if (!json_is_array(a) || json_array_size(a) > BK_TICKET_MAX_ADDRS)
		goto bad;
	json_array_foreach(a, i, v)
	{
		if (!json_is_string(v) ||
		    (t->addrs[i] = strdup(json_string_value(v))) == NULL)
			goto bad;
		t->naddrs = i + 1;
	}
	json_decref(a);
	a = NULL;
	mode = bk_ticket_mode_parse((const char *)sqlite3_column_text(st, 6));
	state = bk_ticket_state_parse((const char *)sqlite3_column_text(st, 9));
	if (mode < 0 || state < 0)
		goto bad;
	t->mode = (enum bk_ticket_mode)mode;
	t->state = (enum bk_ticket_state)state;
	t->control_granted = sqlite3_column_int(st, 8);
	t->created_at = sqlite3_column_int64(st, 11);
	t->expires_at = sqlite3_column_int64(st, 12);
	t->accepted_at = sqlite3_column_int64(st, 13);
	t->connected_at = sqlite3_column_int64(st, 14);
	t->ended_at = sqlite3_column_int64(st, 15);
	return t;
bad:
	/* A row we cannot read is a storage fault, not input: say which. */
	log_warnx("ticket store %s: unreadable row for ticket %.32s", q->path,
	    id ? (const char *)id : "?");
	json_decref(a);
	bk_ticket_free(t);
	return NULL;
}

static int
sq_get(struct bk_store *s, const char *id, struct bk_ticket **out)
{
	struct sq *q = s->priv;
	sqlite3_stmt *st = q->st[ST_GET];
	int rc, ret;

	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = (*out = row_ticket(q, st)) ? RP_OK : RP_ERR_IO;
	else if (rc == SQLITE_DONE)
		ret = RP_ERR_NOT_FOUND;
	else
		ret = sq_fail(q, "get");
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

static int
sq_del(struct bk_store *s, const char *id)
{
	struct sq *q = s->priv;
	sqlite3_stmt *st = q->st[ST_DEL];
	int rc;

	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE)
		return sq_fail(q, "del");
	return sqlite3_changes(q->db) > 0 ? RP_OK : RP_ERR_NOT_FOUND;
}

struct tvec {
	struct bk_ticket **v;
	size_t n, cap;
};

static void
tvec_free(struct tvec *tv)
{
	for (size_t i = 0; i < tv->n; i++)
		bk_ticket_free(tv->v[i]);
	free(tv->v);
}

/* Reads every row of a statement before anyone is called back. */
static int
collect(struct sq *q, sqlite3_stmt *st, struct tvec *tv)
{
	struct bk_ticket *t;
	int rc, ret = RP_OK;

	memset(tv, 0, sizeof(*tv));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((t = row_ticket(q, st)) == NULL)
			continue; /* logged; skip the bad row */
		if (tv->n == tv->cap) {
			size_t cap = tv->cap ? 2 * tv->cap : 32;
			struct bk_ticket **v =
			    reallocarray(tv->v, cap, sizeof(*v));

			if (v == NULL) {
				bk_ticket_free(t);
				ret = RP_ERR_NOMEM;
				break;
			}
			tv->v = v;
			tv->cap = cap;
		}
		tv->v[tv->n++] = t;
	}
	if (ret == RP_OK && rc != SQLITE_DONE)
		ret = sq_fail(q, "select");
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (ret != RP_OK)
		tvec_free(tv);
	return ret;
}

static int
sq_list_open(struct bk_store *s, bk_store_cb fn, void *arg)
{
	struct sq *q = s->priv;
	struct tvec tv;
	int rc;

	if ((rc = collect(q, q->st[ST_OPEN], &tv)) != RP_OK)
		return rc;
	for (size_t i = 0; i < tv.n && rc == 0; i++)
		rc = fn(tv.v[i], arg);
	tvec_free(&tv);
	return rc;
}

static int
sq_expire_before(struct bk_store *s, int64_t now, bk_store_cb fn, void *arg)
{
	struct sq *q = s->priv;
	struct tvec tv;
	size_t i;
	int rc;

	/* Select and update in one transaction so that a ticket is never
	 * half expired; callbacks run after the commit. */
	if ((rc = run_simple(q, ST_BEGIN)) != RP_OK)
		return rc;
	sqlite3_bind_int64(q->st[ST_DUE], 1, now);
	if ((rc = collect(q, q->st[ST_DUE], &tv)) != RP_OK) {
		run_simple(q, ST_ROLLBACK);
		return rc;
	}
	for (i = 0; i < tv.n; i++) {
		bk_ticket_transition(tv.v[i], BK_TS_EXPIRED, now);
		if ((rc = sq_put(s, tv.v[i])) != RP_OK)
			break;
	}
	if (rc == RP_OK)
		rc = run_simple(q, ST_COMMIT);
	if (rc != RP_OK) {
		run_simple(q, ST_ROLLBACK);
		tvec_free(&tv);
		return rc;
	}
	for (i = 0; i < tv.n && rc == 0; i++)
		rc = fn(tv.v[i], arg);
	tvec_free(&tv);
	return rc;
}

static int
sq_purge_closed(struct bk_store *s, int64_t before, size_t *n)
{
	struct sq *q = s->priv;
	sqlite3_stmt *st = q->st[ST_PURGE];
	int rc;

	sqlite3_bind_int64(st, 1, before);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE)
		return sq_fail(q, "purge");
	*n = (size_t)sqlite3_changes(q->db);
	return RP_OK;
}

const struct bk_store_ops bk_store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .put = sq_put,
    .get = sq_get,
    .del = sq_del,
    .list_open = sq_list_open,
    .expire_before = sq_expire_before,
    .purge_closed = sq_purge_closed,
};
