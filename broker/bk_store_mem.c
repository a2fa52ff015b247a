/*
 * bk_store_mem.c - the in-memory ticket store (unit tests, -n dry runs),
 * and the backend-independent front of bk_store.h: the table of backends,
 * bk_store_open, the one-line wrappers callers use, and the queue that
 * brings durable-write completions back to the event loop.
 *
 * Completions: a backend finishes a sync on its own thread and hands each
 * waiter to bk_store_complete(); the waiters queue here in order and one
 * byte in a pipe wakes the loop, which runs every queued callback in one
 * go. A pipe rather than event_active() from the other thread: the broker
 * does not use libevent's thread support (no evthread_use_pthreads()).
 *
 * The memory backend is a plain array scanned linearly: it exists to test
 * callers without a file, not to be fast. Its writes are durable as soon
 * as they are made, but their callbacks still go through the queue so that
 * callers see the same order as with sqlite.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "bk_store.h"
#include "bk_ticket.h"
#include "rp_error.h"
#include "rp_log.h"

static const struct bk_store_ops *const backends[] = {
    &bk_store_sqlite_ops,
    &bk_store_mem_ops,
};

const struct bk_store_ops *
bk_store_backend(const char *name)
{
	if (name == NULL)
		return NULL;
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (strcmp(backends[i]->name, name) == 0)
			return backends[i];
	return NULL;
}

struct bk_store_wait {
	struct bk_store_wait *next;
	bk_store_done_fn fn;
	void *arg;
	int rc;
};

struct bk_store_done {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* signalled when a completion is queued */
	/* Completed waiters whose callback has not run (under mu). */
	struct bk_store_wait *head, **tail;
	size_t queued;
	int signalled; /* a byte is in the pipe (under mu) */
	/* Waiters issued whose callback has not run (loop thread only). */
	size_t outstanding;
	int fds[2]; /* the backend's thread wakes the loop */
	struct event *ev;
};

static struct bk_store_done *
done_new(void)
{
	struct bk_store_done *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return NULL;
	if (pipe2(d->fds, O_NONBLOCK | O_CLOEXEC) == -1) {
		free(d);
		return NULL;
	}
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	d->tail = &d->head;
	return d;
}

static void
done_free(struct bk_store_done *d)
{
	if (d == NULL)
		return;
	if (d->ev != NULL)
		event_free(d->ev);
	close(d->fds[0]);
	close(d->fds[1]);
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

void
bk_store_complete(struct bk_store *s, struct bk_store_wait *w, int rc)
{
	struct bk_store_done *d = s->done;
	ssize_t n;

	pthread_mutex_lock(&d->mu);
	w->rc = rc;
	w->next = NULL;
	*d->tail = w;
	d->tail = &w->next;
	d->queued++;
	if (!d->signalled) {
		d->signalled = 1;
		do
			n = write(d->fds[1], "", 1);
		while (n == -1 && errno == EINTR);
	}
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* Runs every queued callback, in order (loop thread). */
static void
done_run(struct bk_store_done *d)
{
	struct bk_store_wait *w, *next;
	char buf[64];

	pthread_mutex_lock(&d->mu);
	w = d->head;
	d->head = NULL;
	d->tail = &d->head;
	d->queued = 0;
	d->signalled = 0;
	while (read(d->fds[0], buf, sizeof(buf)) > 0)
		;
	pthread_mutex_unlock(&d->mu);
	for (; w != NULL; w = next) {
		next = w->next;
		d->outstanding--;
		w->fn(w->rc, w->arg);
		free(w);
	}
}

static void
done_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	done_run(arg);
}

int
bk_store_set_loop(struct bk_store *s, struct event_base *base)
{
	struct bk_store_done *d = s->done;

	if (d->ev != NULL)
		event_free(d->ev);
	d->ev = event_new(base, d->fds[0], EV_READ | EV_PERSIST, done_cb, d);
	if (d->ev == NULL || event_add(d->ev, NULL) == -1)
		return RP_ERR_NOMEM;
	if (s->ops->set_loop != NULL)
		return s->ops->set_loop(s, base);
	return RP_OK;
}

/*
 * Without the few bytes of a wait there is no way to keep the promise
 * (the callback later, exactly once, never before the call returns), and a
 * caller told nothing is the one safe outcome: the daemon stops and the
 * next start restores the tickets from the file.
 */
static struct bk_store_wait *
wait_new(bk_store_done_fn fn, void *arg)
{
	struct bk_store_wait *w = calloc(1, sizeof(*w));

	if (w == NULL)
		fatalx("ticket store: out of memory for a durable write");
	w->fn = fn;
	w->arg = arg;
	return w;
}

void
bk_store_sync(struct bk_store *s, bk_store_done_fn fn, void *arg)
{
	struct bk_store_wait *w = wait_new(fn, arg);

	s->done->outstanding++;
	if (!bk_store_ok(s))
		bk_store_complete(s, w, RP_ERR_IO);
	else
		s->ops->sync(s, w);
}

void
bk_store_put_durable(struct bk_store *s, const struct bk_ticket *t,
    bk_store_done_fn fn, void *arg)
{
	struct bk_store_wait *w = wait_new(fn, arg);
	int rc;

	s->done->outstanding++;
	/* Written even when the store has failed (a later read, or a
	 * restart, may still find it), but never reported durable then. */
	if ((rc = s->ops->put(s, t)) != RP_OK)
		bk_store_complete(s, w, rc);
	else if (!bk_store_ok(s))
		bk_store_complete(s, w, RP_ERR_IO);
	else
		s->ops->sync(s, w);
}

void
bk_store_flush(struct bk_store *s)
{
	struct bk_store_done *d;

	if (s == NULL)
		return;
	d = s->done;
	if (s->ops->commit != NULL)
		s->ops->commit(s); /* what this turn deferred */
	while (d->outstanding > 0) {
		pthread_mutex_lock(&d->mu);
		while (d->queued == 0)
			pthread_cond_wait(&d->cv, &d->mu);
		pthread_mutex_unlock(&d->mu);
		done_run(d);
	}
}

int
bk_store_ok(struct bk_store *s)
{
	return s->ops->ok == NULL || s->ops->ok(s);
}

size_t
bk_store_pending(struct bk_store *s)
{
	return s->done->outstanding;
}

struct bk_store *
bk_store_open(const char *backend, const char *path, char *err, size_t errlen)
{
	const struct bk_store_ops *ops = bk_store_backend(backend);
	struct bk_store *s;

	if (ops == NULL) {
		snprintf(err, errlen,
		    "unknown ticket store backend \"%.32s\" (use sqlite or "
		    "memory)",
		    backend ? backend : "");
		return NULL;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->ops = ops;
	if ((s->done = done_new()) == NULL) {
		snprintf(err, errlen, "ticket store: %s", strerror(errno));
		free(s);
		return NULL;
	}
	if (ops->open(s, path, err, errlen) != RP_OK) {
		done_free(s->done);
		free(s);
		return NULL;
	}
	return s;
}

void
bk_store_close(struct bk_store *s)
{
	if (s == NULL)
		return;
	bk_store_flush(s); /* every callback runs, once, before we go */
	s->ops->close(s);
	done_free(s->done);
	free(s);
}

int
bk_store_put(struct bk_store *s, const struct bk_ticket *t)
{
	return s->ops->put(s, t);
}

int
bk_store_get(struct bk_store *s, const char *id, struct bk_ticket **out)
{
	*out = NULL;
	return s->ops->get(s, id, out);
}

int
bk_store_del(struct bk_store *s, const char *id)
{
	return s->ops->del(s, id);
}

int
bk_store_list_open(struct bk_store *s, bk_store_cb fn, void *arg)
{
	return s->ops->list_open(s, fn, arg);
}

int
bk_store_expire_before(
    struct bk_store *s, int64_t now, bk_store_cb fn, void *arg)
{
	return s->ops->expire_before(s, now, fn, arg);
}

int
bk_store_purge_closed(struct bk_store *s, int64_t before, size_t *n)
{
	size_t dummy;

	return s->ops->purge_closed(s, before, n ? n : &dummy);
}

static int
count_cb(const struct bk_ticket *t, void *arg)
{
	(void)t;
	(*(size_t *)arg)++;
	return 0;
}

int
bk_store_count_open(struct bk_store *s, size_t *n)
{
	*n = 0;
	return bk_store_list_open(s, count_cb, n);
}

/* The memory backend. */

struct mem {
	struct bk_ticket **v;
	size_t n, cap;
};

static int
mem_open(struct bk_store *s, const char *path, char *err, size_t errlen)
{
	(void)path;
	if ((s->priv = calloc(1, sizeof(struct mem))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return RP_ERR_NOMEM;
	}
	return RP_OK;
}

static void
mem_close(struct bk_store *s)
{
	struct mem *m = s->priv;

	for (size_t i = 0; i < m->n; i++)
		bk_ticket_free(m->v[i]);
	free(m->v);
	free(m);
}

static ssize_t
mem_find(struct mem *m, const char *id)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->v[i]->id, id) == 0)
			return (ssize_t)i;
	return -1;
}

static int
mem_put(struct bk_store *s, const struct bk_ticket *t)
{
	struct mem *m = s->priv;
	struct bk_ticket *c;
	ssize_t i;

	if ((c = bk_ticket_dup(t)) == NULL)
		return RP_ERR_NOMEM;
	if ((i = mem_find(m, t->id)) >= 0) {
		bk_ticket_free(m->v[i]);
		m->v[i] = c;
		return RP_OK;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 16;
		struct bk_ticket **v = reallocarray(m->v, cap, sizeof(*v));

		if (v == NULL) {
			bk_ticket_free(c);
			return RP_ERR_NOMEM;
		}
		m->v = v;
		m->cap = cap;
	}
	m->v[m->n++] = c;
	return RP_OK;
}

static int
mem_get(struct bk_store *s, const char *id, struct bk_ticket **out)
{
	struct mem *m = s->priv;
	ssize_t i;

	if ((i = mem_find(m, id)) < 0)
		return RP_ERR_NOT_FOUND;
	if ((*out = bk_ticket_dup(m->v[i])) == NULL)
		return RP_ERR_NOMEM;
	return RP_OK;
}

static int
mem_del(struct bk_store *s, const char *id)
{
	struct mem *m = s->priv;
	ssize_t i;

	if ((i = mem_find(m, id)) < 0)
		return RP_ERR_NOT_FOUND;
	bk_ticket_free(m->v[i]);
	memmove(
	    &m->v[i], &m->v[i + 1], (m->n - (size_t)i - 1) * sizeof(m->v[0]));
	m->n--;
	return RP_OK;
}

static int
by_created(const void *a, const void *b)
{
	const struct bk_ticket *x = *(struct bk_ticket *const *)a;
	const struct bk_ticket *y = *(struct bk_ticket *const *)b;

	if (x->created_at != y->created_at)
		return x->created_at < y->created_at ? -1 : 1;
	return strcmp(x->id, y->id);
}

/*
 * Copies the selected tickets before calling back, so that callbacks may
 * put, get or delete while we iterate (the same contract as sqlite's).
 */
static int
mem_select(struct mem *m, int64_t due, struct bk_ticket ***outv, size_t *outn)
{
	struct bk_ticket **v;
	size_t n = 0;

	*outv = NULL;
	*outn = 0;
	if (m->n == 0)
		return RP_OK;
	if ((v = calloc(m->n, sizeof(*v))) == NULL)
		return RP_ERR_NOMEM;
	for (size_t i = 0; i < m->n; i++) {
		if (!bk_ticket_is_open(m->v[i]))
			continue;
		if (due != INT64_MIN && m->v[i]->expires_at > due)
			continue;
		if ((v[n] = bk_ticket_dup(m->v[i])) == NULL) {
			while (n > 0)
				bk_ticket_free(v[--n]);
			free(v);
			return RP_ERR_NOMEM;
		}
		n++;
	}
	qsort(v, n, sizeof(*v), by_created);
	*outv = v;
	*outn = n;
	return RP_OK;
}

static int
mem_iterate(
    struct bk_store *s, int64_t due, int64_t now, bk_store_cb fn, void *arg)
{
	struct bk_ticket **v;
	size_t n, i;
	int rc;

	if ((rc = mem_select(s->priv, due, &v, &n)) != RP_OK)
		return rc;
	for (i = 0; i < n && rc == 0; i++) {
		if (due != INT64_MIN) {
			bk_ticket_transition(v[i], BK_TS_EXPIRED, now);
			if ((rc = mem_put(s, v[i])) != RP_OK)
				break;
		}
		rc = fn(v[i], arg);
	}
	for (i = 0; i < n; i++)
		bk_ticket_free(v[i]);
	free(v);
	return rc;
}

static int
mem_list_open(struct bk_store *s, bk_store_cb fn, void *arg)
{
	return mem_iterate(s, INT64_MIN, 0, fn, arg);
}

static int
mem_expire_before(struct bk_store *s, int64_t now, bk_store_cb fn, void *arg)
{
	return mem_iterate(s, now, now, fn, arg);
}

static void
mem_sync(struct bk_store *s, struct bk_store_wait *w)
{
	bk_store_complete(s, w, RP_OK);
}

static int
mem_purge_closed(struct bk_store *s, int64_t before, size_t *n)
{
	struct mem *m = s->priv;
	size_t i = 0;

	*n = 0;
	while (i < m->n) {
		if (!bk_ticket_is_open(m->v[i]) && m->v[i]->ended_at < before) {
			mem_del(s, m->v[i]->id);
			(*n)++;
		} else
			i++;
	}
	return RP_OK;
}

const struct bk_store_ops bk_store_mem_ops = {
    .name = "memory",
    .open = mem_open,
    .close = mem_close,
    .put = mem_put,
    .get = mem_get,
    .del = mem_del,
    .list_open = mem_list_open,
    .expire_before = mem_expire_before,
    .purge_closed = mem_purge_closed,
    .sync = mem_sync,
};
