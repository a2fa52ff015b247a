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

typedef int (*bk_store_cb)(const struct bk_ticket *, void *);

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
};

struct bk_store {
	const struct bk_store_ops *ops;
	void *priv; /* backend state */
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

#endif
