/*
 * bk_store.h - where tickets live: a small table of function pointers picked
 * by name, in the manner of smtpd's queue backends. "sqlite" is the default
 * (bk_store_sqlite.c, survives restarts), "memory" is for unit tests
 * (bk_store_mem.c); a Redis backend for several brokers can be added later
 * without touching callers.
 *
 * All calls return an enum rp_err: RP_OK, RP_ERR_NOT_FOUND (get/del of an
 * unknown id), RP_ERR_NOMEM or RP_ERR_IO (storage failure; the message has
 * been logged). The store is used from the event loop thread only.
 *
 * Durability: put() is visible at once to every later call (and to another
 * connection to the same file) but need not have reached the disk. A state
 * that somebody is about to be told of (accepted, connected, ...) goes
 * through bk_store_put_durable(): the write happens at once, and the
 * callback runs later, on the event loop, once the write is durable (or
 * with the error that kept it from being so). The loop never waits for the
 * disk: a backend syncs on its own thread, one sync for every write queued
 * while the previous sync ran (group commit). Callbacks run in the order of
 * the calls, each exactly once: bk_store_flush() and bk_store_close() wait
 * for the ones still pending and run them before returning. After a failed
 * sync the store stays failed (bk_store_ok() is 0; a second fsync cannot be
 * trusted after a first one failed) and every later durable write fails.
 *
 * Iteration callbacks receive a ticket that is valid during the call only;
 * they may call the store (the backend has finished reading before it calls
 * back). Returning non-zero from a callback stops the iteration, and the
 * iterating call then returns that value.
 *
 * The store holds ticket secrets (an accepted ticket must still be usable
 * after a restart): its file is as secret as a private key. The sqlite
 * backend creates it 0600 and refuses to open a file that group or others
 * may access.
 */
#ifndef BK_STORE_H
#define BK_STORE_H

#include <stddef.h>
#include <stdint.h>

struct bk_ticket;
struct bk_store;

struct event_base;
struct bk_store_done;
struct bk_store_wait;

typedef int (*bk_store_cb)(const struct bk_ticket *, void *);
/* rc: RP_OK (durable) or an enum rp_err (not durable: do not tell). */
typedef void (*bk_store_done_fn)(int rc, void *arg);

struct bk_store_ops {
	const char *name;
	/* path: backend specific (sqlite: file name, optionally followed by
	 * "?sync=normal"; memory: ignored). */
	int (*open)(
	    struct bk_store *, const char *path, char *err, size_t errlen);
	void (*close)(struct bk_store *);
	/* Insert or replace the whole record (the secret included). */
	int (*put)(struct bk_store *, const struct bk_ticket *);
	/* *out is a new copy the caller frees with bk_ticket_free. */
	int (*get)(struct bk_store *, const char *id, struct bk_ticket **out);
	int (*del)(struct bk_store *, const char *id);
	/* Every ticket in an open state, by created_at then id. */
	int (*list_open)(struct bk_store *, bk_store_cb fn, void *arg);
	/* Every open ticket with expires_at <= now is moved to expired
	 * (ended_at = now), stored, then passed to fn (to audit
	 * ticket_expired and notify the peers). */
	int (*expire_before)(
	    struct bk_store *, int64_t now, bk_store_cb fn, void *arg);
	/* Deletes final-state tickets whose ended_at < before; *n = how many
	 * (may be NULL). Keeps the store from growing forever. */
	int (*purge_closed)(struct bk_store *, int64_t before, size_t *n);
	/* Barrier: calls bk_store_complete(s, w, rc) once, from any thread,
	 * when every write made before this call is durable. Never waits. */
	void (*sync)(struct bk_store *, struct bk_store_wait *w);
	/* 0 after a storage failure that makes later durability doubtful. */
	int (*ok)(struct bk_store *);
	/* Optional. The loop the store may defer work to (sqlite: the writes
	 * of one loop turn share one transaction, committed at its end). */
	int (*set_loop)(struct bk_store *, struct event_base *);
	/* Optional. Commits what was deferred, now. */
	void (*commit)(struct bk_store *);
};

struct bk_store {
	const struct bk_store_ops *ops;
	void *priv;                 /* backend state */
	struct bk_store_done *done; /* completions for the loop (front) */
};

extern const struct bk_store_ops bk_store_sqlite_ops;
extern const struct bk_store_ops bk_store_mem_ops;

/* Backend by name ("sqlite", "memory"); NULL when unknown. */
const struct bk_store_ops *bk_store_backend(const char *name);

/*
 * Opens a store. Returns NULL and writes why into err (unknown backend,
 * file permissions, schema version newer than this program, I/O).
 */
struct bk_store *bk_store_open(
    const char *backend, const char *path, char *err, size_t errlen);
void bk_store_close(struct bk_store *s); /* NULL is fine */

int bk_store_put(struct bk_store *s, const struct bk_ticket *t);
int bk_store_get(struct bk_store *s, const char *id, struct bk_ticket **out);
int bk_store_del(struct bk_store *s, const char *id);
int bk_store_list_open(struct bk_store *s, bk_store_cb fn, void *arg);
int bk_store_expire_before(
    struct bk_store *s, int64_t now, bk_store_cb fn, void *arg);
int bk_store_purge_closed(struct bk_store *s, int64_t before, size_t *n);
/* Number of open tickets (metrics: tickets open). */
int bk_store_count_open(struct bk_store *s, size_t *n);

/*
 * The loop durable-write callbacks run on. Until one is set (tests, -n),
 * callbacks wait for bk_store_flush() or bk_store_close().
 */
int bk_store_set_loop(struct bk_store *s, struct event_base *base);
/*
 * put(), then fn(rc, arg) on the loop once the record is durable. fn runs
 * exactly once, never before this returns, also when the write itself
 * fails (then with its error). (Out of memory for the wait: fatalx.)
 */
void bk_store_put_durable(struct bk_store *s, const struct bk_ticket *t,
    bk_store_done_fn fn, void *arg);
/* fn(rc, arg) on the loop once every write made so far is durable. */
void bk_store_sync(struct bk_store *s, bk_store_done_fn fn, void *arg);
/* Waits for every pending durable write and runs its callback (shutdown;
 * blocks on the disk). */
void bk_store_flush(struct bk_store *s);
/* 1 while the store can promise durability; 0 after a failed sync. */
int bk_store_ok(struct bk_store *s);
/* Durable writes queued or completed whose callback has not run yet. */
size_t bk_store_pending(struct bk_store *s);

/* For backends: w's callback is to run with rc (any thread, once). */
void bk_store_complete(struct bk_store *s, struct bk_store_wait *w, int rc);

/* Tests only: the next sync of a sqlite store fails with errno err (as an
 * fsync that returned EIO would). */
void bk_store_sqlite_fail_next_sync(struct bk_store *s, int err);

#endif
