/*
 * bk_store_sqlite.c - the default ticket store: one SQLite file in WAL mode.
 *
 * Durability without the loop waiting for the disk. Every write is
 * committed on the event loop with synchronous=NORMAL: the commit is
 * appended to the WAL with write(2) and is visible at once to this and any
 * other connection (read-your-writes), but not yet on the disk. A ticket
 * that matters once it can be used -- losing "accepted" would lose a
 * consent, losing "connected" would make a used ticket usable again,
 * losing "revoked" would resurrect a ticket the novice expired -- goes
 * through bk_store_put_durable(): after the commit, its waiter is queued
 * for the sync thread, which fdatasync()s the WAL file and completes every
 * waiter queued before that sync began (group commit, as the audit trail's
 * sync thread does). A sync of the WAL covers every commit appended before
 * it, which is what synchronous=FULL would have done inside each commit,
 * one fsync per commit, on the loop.
 *
 * The WAL is synced through a descriptor of our own on the "-wal" file.
 * That file is the same inode for as long as a connection is open (SQLite
 * removes it only when the last connection closes; a checkpoint rewinds it
 * in place), and the directory entry is synced once at open. Checkpoints,
 * which sync both files, run on the sync thread too, on a connection of
 * its own (PASSIVE: they never block the loop's writer); the loop's
 * connection has no automatic checkpoint.
 *
 * Batching. Once the store knows the event loop (bk_store_set_loop), the
 * writes of one loop turn share one transaction: the first write opens it
 * and activates an event that commits it after the turn's other callbacks
 * have run. The store's own reads see the writes at once (same
 * connection); other connections see them at the commit, a few
 * microseconds later; a durable waiter queued meanwhile goes to the sync
 * thread after that commit. One commit (one append to the WAL, one round
 * of locks) for several offers' writes: with 16 offers in flight the
 * broker spends ~25 % less CPU per offer (bench_offer). A failed commit
 * loses writes already reported stored, so it fails the store closed.
 * Without a loop (tests, rabrokerd -n) every write commits on its own.
 *
 * A failed sync is final: the pages it could not write may be gone from
 * the page cache, and a second fdatasync would then report success for
 * data that was lost. The store refuses durable writes from then on
 * (bk_store_ok() is 0) until the broker is restarted.
 *
 * "path?sync=full" commits with FULL on the loop as well (the behaviour
 * before the sync thread; comparison benchmarks), "path?sync=normal" never
 * syncs at all (benchmarks only).
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
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
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
#include "rp_log.h"

/* 1: the first schema. 2: control_since (the start of control, so that a
 * restart does not move it); a version 1 file is migrated at open. */
#define SCHEMA_VERSION 2
#define SCHEMA_VERSION_S "2"
#define BUSY_TIMEOUT_MS 5000
/* The sync thread checkpoints once the WAL holds this many pages (SQLite's
 * own automatic checkpoint uses the same figure). */
#define CHECKPOINT_PAGES 1000

enum {
	ST_PUT,
	ST_GET,
	ST_DEL,
	ST_OPEN,
	ST_DUE,
	ST_PURGE,
	ST_BEGIN,
	ST_BATCH,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_COUNT
};

#define COLS                                                            \
	"id, secret, helper, helper_host, addrs, machine, mode, rule, " \
	"control, state, open, created_at, expires_at, accepted_at, "   \
	"connected_at, ended_at, control_since"

static const char *const sql_text[ST_COUNT] = {
    [ST_PUT] = "INSERT OR REPLACE INTO tickets (" COLS ") VALUES "
               "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
               " ?15, ?16, ?17)",
    [ST_GET] = "SELECT " COLS " FROM tickets WHERE id = ?1",
    [ST_DEL] = "DELETE FROM tickets WHERE id = ?1",
    [ST_OPEN] = "SELECT " COLS " FROM tickets WHERE open = 1 "
                "ORDER BY created_at, id",
    [ST_DUE] = "SELECT " COLS " FROM tickets WHERE open = 1 AND "
               "expires_at <= ?1 ORDER BY created_at, id",
    [ST_PURGE] = "DELETE FROM tickets WHERE open = 0 AND ended_at < ?1",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_BATCH] = "BEGIN",
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
    " ended_at INTEGER NOT NULL,"
    " control_since INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS tickets_open ON tickets (open, expires_at);";

struct sq {
	struct bk_store *s;
	sqlite3 *db; /* the loop's connection */
	sqlite3_stmt *st[ST_COUNT];
	char path[1024];
	int nosync; /* "?sync=normal": never sync (benchmarks) */
	int walfd;  /* the "-wal" file, synced by the thread */
	/* The sync thread and its own connection (checkpoints only). */
	sqlite3 *ckdb;
	pthread_t thr;
	int thr_running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct bk_store_wait **wq; /* waiters for the next sync (under mu) */
	size_t nwq, capwq;
	int stop;             /* under mu */
	atomic_int failed;    /* errno of the sync that failed, or 0 */
	atomic_int fault;     /* tests: errno for the next sync */
	atomic_int wal_pages; /* pages in the WAL after the last commit */
	/* Batching: the writes of one turn of the event loop share one
	 * transaction, committed when the turn's other callbacks have run. */
	struct event *commit_ev;
	int in_txn;
	struct bk_store_wait **held; /* syncs asked for before that commit */
	size_t nheld, capheld;
};

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
		/* A new file: schema_sql has just created the tables. */
		if (sqlite3_exec(q->db,
		        "INSERT INTO schema_version (version) "
		        "VALUES (" SCHEMA_VERSION_S ");",
		        NULL, NULL, &msg) != SQLITE_OK)
			goto fail;
		v = SCHEMA_VERSION;
	}
	if (v == 1) {
		/* Version 1 had no start of control: 0 ("not known"). In the
		 * same transaction as the version, so it is all or nothing. */
		if (sqlite3_exec(q->db,
		        "ALTER TABLE tickets ADD COLUMN control_since INTEGER "
		        "NOT NULL DEFAULT 0;"
		        "UPDATE schema_version SET version = 2;",
		        NULL, NULL, &msg) != SQLITE_OK)
			goto fail;
		log_info(
		    "ticket store %s: schema version 1 migrated to 2", q->path);
		v = 2;
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

/* ---- the sync thread ------------------------------------------------- */

/* fdatasync of the WAL; errno or 0. */
static int
wal_sync(struct sq *q)
{
	int e = atomic_exchange(&q->fault, 0);

	if (e != 0 || q->nosync)
		return e;
	if (fdatasync(q->walfd) == -1 && errno != EINVAL)
		return errno;
	return 0;
}

static void
checkpoint(struct sq *q)
{
	int rc;

	/* The next commit reports the WAL's size again. */
	if (atomic_exchange(&q->wal_pages, 0) < CHECKPOINT_PAGES ||
	    atomic_load(&q->failed) != 0)
		return;
	rc = sqlite3_wal_checkpoint_v2(
	    q->ckdb, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		log_warnx("ticket store %s: checkpoint: %s", q->path,
		    sqlite3_errmsg(q->ckdb));
}

static void *
sync_main(void *arg)
{
	struct sq *q = arg;
	struct bk_store_wait **v = NULL;
	size_t n, cap = 0;
	int e;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (q->nwq == 0 && !q->stop &&
		    atomic_load(&q->wal_pages) < CHECKPOINT_PAGES)
			pthread_cond_wait(&q->cv, &q->mu);
		if (q->nwq == 0 && q->stop)
			break;
		/* Take every waiter queued so far: their commits were all
		 * appended to the WAL before they were queued, so the one
		 * sync below covers them all. */
		n = q->nwq;
		if (n > 0) {
			struct bk_store_wait **t = q->wq;
			size_t tcap = q->capwq;

			q->wq = v; /* the loop queues into the other array */
			q->capwq = cap;
			q->nwq = 0;
			v = t;
			cap = tcap;
		}
		pthread_mutex_unlock(&q->mu);
		if (n > 0) {
			e = atomic_load(&q->failed);
			if (e == 0 && (e = wal_sync(q)) != 0) {
				log_warnx("ticket store %s: fdatasync: %s; "
				          "durable writes refused from now on",
				    q->path, strerror(e));
				atomic_store(&q->failed, e);
			}
			for (size_t i = 0; i < n; i++)
				bk_store_complete(
				    q->s, v[i], e == 0 ? RP_OK : RP_ERR_IO);
		}
		checkpoint(q);
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	free(v);
	return NULL;
}

/*
 * Started by the first sync (or the first WAL big enough to checkpoint),
 * not at open: rabrokerd opens the store before it forks into the
 * background, and a thread does not survive fork. Loop thread.
 */
static int
thread_start(struct sq *q)
{
	if (q->thr_running)
		return 0;
	if (pthread_create(&q->thr, NULL, sync_main, q) != 0) {
		log_warnx(
		    "ticket store %s: cannot start the sync thread", q->path);
		return -1;
	}
	q->thr_running = 1;
	return 0;
}

/* Called by SQLite after each commit on the loop's connection. */
static int
wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct sq *q = arg;

	(void)db;
	(void)name;
	atomic_store(&q->wal_pages, pages);
	if (pages >= CHECKPOINT_PAGES && thread_start(q) == 0) {
		pthread_mutex_lock(&q->mu);
		pthread_cond_signal(&q->cv);
		pthread_mutex_unlock(&q->mu);
	}
	return SQLITE_OK;
}

/* Queues w for the sync thread's next fdatasync. */
static void
queue_wait(struct bk_store *s, struct bk_store_wait *w)
{
	struct sq *q = s->priv;

	if (thread_start(q) == -1) {
		bk_store_complete(s, w, RP_ERR_IO);
		return;
	}
	pthread_mutex_lock(&q->mu);
	if (q->nwq == q->capwq) {
		size_t cap = q->capwq ? 2 * q->capwq : 64;
		struct bk_store_wait **v = reallocarray(q->wq, cap, sizeof(*v));

		if (v == NULL) {
			pthread_mutex_unlock(&q->mu);
			bk_store_complete(s, w, RP_ERR_NOMEM);
			return;
		}
		q->wq = v;
		q->capwq = cap;
	}
	q->wq[q->nwq++] = w;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

/* A barrier: every write made so far is durable once the WAL holding it
 * is synced; writes still in this turn's transaction reach the WAL at its
 * commit, so their waiters wait for that first. */
static void
sq_sync(struct bk_store *s, struct bk_store_wait *w)
{
	struct sq *q = s->priv;

	if (!q->in_txn) {
		queue_wait(s, w);
		return;
	}
	if (q->nheld == q->capheld) {
		size_t cap = q->capheld ? 2 * q->capheld : 16;
		struct bk_store_wait **v =
		    reallocarray(q->held, cap, sizeof(*v));

		if (v == NULL) {
			bk_store_complete(s, w, RP_ERR_NOMEM);
			return;
		}
		q->held = v;
		q->capheld = cap;
	}
	q->held[q->nheld++] = w;
}

/* ---- batching: one transaction per turn of the event loop ----------- */

static int run_simple(struct sq *q, int which);

/*
 * Ends the turn's transaction: one commit (one append to the WAL, one
 * round of locks) for every write of the turn instead of one each. A
 * failed commit loses writes that were reported stored: the store fails
 * closed (durable writes refused from now on, as after a failed sync).
 */
static void
batch_commit(struct sq *q)
{
	struct bk_store_wait **v = q->held;
	size_t n = q->nheld;

	if (!q->in_txn)
		return;
	q->in_txn = 0;
	if (run_simple(q, ST_COMMIT) != RP_OK) {
		run_simple(q, ST_ROLLBACK);
		atomic_store(&q->failed, EIO);
		log_warnx("ticket store %s: commit failed; durable writes "
		          "refused from now on",
		    q->path);
	}
	q->held = NULL;
	q->nheld = q->capheld = 0;
	for (size_t i = 0; i < n; i++)
		queue_wait(q->s, v[i]);
	free(v);
}

static void
commit_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	batch_commit(arg);
}

/* Before a write: opens the turn's transaction if there is none (and no
 * other transaction is open), and asks the loop to commit it once the
 * callbacks already due in this turn have run. Without a loop (tests,
 * rabrokerd -n) every write commits on its own. */
static void
batch_begin(struct sq *q)
{
	if (q->commit_ev == NULL || q->in_txn || !sqlite3_get_autocommit(q->db))
		return;
	if (run_simple(q, ST_BATCH) != RP_OK)
		return; /* then this write commits on its own */
	q->in_txn = 1;
	event_active(q->commit_ev, EV_TIMEOUT, 1);
}

static int
sq_set_loop(struct bk_store *s, struct event_base *base)
{
	struct sq *q = s->priv;

	batch_commit(q);
	if (q->commit_ev != NULL)
		event_free(q->commit_ev);
	q->commit_ev = event_new(base, -1, 0, commit_cb, q);
	return q->commit_ev != NULL ? RP_OK : RP_ERR_NOMEM;
}

static void
sq_commit(struct bk_store *s)
{
	batch_commit(s->priv);
}

static int
sq_ok(struct bk_store *s)
{
	struct sq *q = s->priv;

	return atomic_load(&q->failed) == 0;
}

void
bk_store_sqlite_fail_next_sync(struct bk_store *s, int err)
{
	struct sq *q = s->priv;

	if (s->ops == &bk_store_sqlite_ops)
		atomic_store(&q->fault, err);
}

/* Stops the thread after it has synced and completed every waiter. */
static void
sync_stop(struct sq *q)
{
	if (!q->thr_running)
		return;
	pthread_mutex_lock(&q->mu);
	q->stop = 1;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->thr, NULL);
	q->thr_running = 0;
}

/* Opens the "-wal" file for the thread's syncs and makes its name durable
 * (SQLite syncs the directory on the first sync of a new WAL; we sync the
 * file ourselves, so the directory too). */
static int
wal_open(struct sq *q, char *err, size_t errlen)
{
	char wal[sizeof(q->path) + 8], dir[sizeof(q->path)];
	int dfd;

	snprintf(wal, sizeof(wal), "%s-wal", q->path);
	q->walfd = open(wal, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (q->walfd == -1) {
		snprintf(err, errlen, "%s: %s", wal, strerror(errno));
		return -1;
	}
	snprintf(dir, sizeof(dir), "%s", q->path);
	dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd != -1) {
		if (!q->nosync)
			(void)fsync(dfd);
		close(dfd);
	}
	return 0;
}

static void batch_commit(struct sq *q);

static void
sq_free(struct sq *q)
{
	batch_commit(q);
	if (q->commit_ev != NULL)
		event_free(q->commit_ev);
	sync_stop(q);
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(q->st[i]);
	if (q->ckdb != NULL)
		sqlite3_close(q->ckdb);
	if (q->db != NULL)
		sqlite3_close(q->db);
	if (q->walfd != -1)
		close(q->walfd);
	free(q->wq);
	pthread_cond_destroy(&q->cv);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

static int
sq_open(struct bk_store *s, const char *spec, char *err, size_t errlen)
{
	const char *sync = "NORMAL";
	struct sq *q;
	char pragmas[256];
	char *msg = NULL;
	const char *qm;
	size_t n;
	int e;

	if (spec == NULL || *spec == '\0') {
		snprintf(err, errlen, "ticket store: no file name");
		return RP_ERR_CONFIG;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return RP_ERR_NOMEM;
	}
	q->s = s;
	q->walfd = -1;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	n = (qm = strchr(spec, '?')) ? (size_t)(qm - spec) : strlen(spec);
	if (n >= sizeof(q->path)) {
		snprintf(err, errlen, "ticket store: file name too long");
		free(q);
		return RP_ERR_CONFIG;
	}
	memcpy(q->path, spec, n);
	q->path[n] = '\0';
	if (qm != NULL) {
		if (strcmp(qm, "?sync=normal") == 0) {
			q->nosync = 1;
		} else if (strcmp(qm, "?sync=full") == 0) {
			sync = "FULL";
		} else {
			snprintf(err, errlen,
			    "%s: unknown option \"%.32s\" (sync=full|normal)",
			    q->path, qm + 1);
			sq_free(q);
			return RP_ERR_CONFIG;
		}
	}
	if (check_file(q->path, err, errlen) == -1) {
		sq_free(q);
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
	/* The schema commit created the WAL: make what is there durable, as
	 * a FULL commit would have, then hand syncs and checkpoints to the
	 * thread (the hook replaces the automatic checkpoint). */
	if (wal_open(q, err, errlen) == -1) {
		sq_free(q);
		return RP_ERR_IO;
	}
	if ((e = wal_sync(q)) != 0) {
		snprintf(
		    err, errlen, "%s-wal: fdatasync: %s", q->path, strerror(e));
		sq_free(q);
		return RP_ERR_IO;
	}
	if (sqlite3_open_v2(q->path, &q->ckdb,
	        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
	        NULL) != SQLITE_OK ||
	    sqlite3_exec(q->ckdb, "PRAGMA synchronous=NORMAL", NULL, NULL,
	        NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", q->path,
		    q->ckdb ? sqlite3_errmsg(q->ckdb) : "out of memory");
		sq_free(q);
		return RP_ERR_IO;
	}
	sqlite3_busy_timeout(q->ckdb, BUSY_TIMEOUT_MS);
	sqlite3_wal_hook(q->db, wal_hook, q);
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
	batch_begin(q);
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
	sqlite3_bind_int64(st, 17, t->control_since);
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
	t->control_since = sqlite3_column_int64(st, 16);
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
	batch_commit(q);
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
	/* Stored means durable here: the callbacks tell people. This call
	 * is not on the offer path (bk_offer expires offer by offer), so it
	 * syncs in place rather than through the thread. */
	if (tv.n > 0 && (rc = atomic_load(&q->failed)) == 0 &&
	    (rc = wal_sync(q)) != 0) {
		log_warnx(
		    "ticket store %s: fdatasync: %s", q->path, strerror(rc));
		atomic_store(&q->failed, rc);
	}
	if (rc != 0) {
		tvec_free(&tv);
		return RP_ERR_IO;
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
    .sync = sq_sync,
    .ok = sq_ok,
    .set_loop = sq_set_loop,
    .commit = sq_commit,
};
