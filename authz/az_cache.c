/*
 * az_cache.c - bounded LRU cache with expiry: a chained hash table whose
 * entries are also on a doubly linked recency list (most recent at the
 * head). The table doubles when the load passes 1, up to what `max`
 * entries need, so memory is bounded by max entries plus their values.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "az_cache.h"

struct ent {
	struct ent *hnext;             /* hash chain */
	struct ent *prev, *next;       /* recency list */
	unsigned long long expires_ms; /* clock value after which it is stale */
	uint32_t hash;
	size_t vlen;
	char *val;
	char key[]; /* NUL-terminated */
};

struct az_cache {
	pthread_mutex_t mu;
	struct ent **tab;
	size_t nbuckets; /* power of two */
	size_t count, max;
	struct ent *head, *tail;
	az_cache_clock_fn clock;
	void *clock_arg;
	struct az_cache_stats st;
};

static unsigned long long
real_clock(void *arg)
{
	struct timespec ts;

	(void)arg;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL +
	    (unsigned long long)ts.tv_nsec / 1000000ULL;
}

static uint32_t
fnv1a(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

struct az_cache *
az_cache_new(size_t max)
{
	struct az_cache *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->max = max;
	c->nbuckets = 64;
	if ((c->tab = calloc(c->nbuckets, sizeof(*c->tab))) == NULL) {
		free(c);
		return NULL;
	}
	c->clock = real_clock;
	pthread_mutex_init(&c->mu, NULL);
	return c;
}

static void
ent_free(struct ent *e)
{
	free(e->val);
	free(e);
}

static void
list_unlink(struct az_cache *c, struct ent *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void
list_push_head(struct az_cache *c, struct ent *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head != NULL)
		c->head->prev = e;
	c->head = e;
	if (c->tail == NULL)
		c->tail = e;
}

/* Removes e from the table and the list and frees it. */
static void
remove_ent(struct az_cache *c, struct ent *e)
{
	struct ent **pp = &c->tab[e->hash & (c->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	list_unlink(c, e);
	c->count--;
	ent_free(e);
}

static struct ent *
find(struct az_cache *c, const char *key, uint32_t h)
{
	for (struct ent *e = c->tab[h & (c->nbuckets - 1)]; e != NULL;
	     e = e->hnext)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

static void
grow(struct az_cache *c)
{
	size_t n = c->nbuckets * 2;
	struct ent **t;

	if ((t = calloc(n, sizeof(*t))) == NULL)
		return; /* keep the old table: slower, still correct */
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct ent *e = c->tab[i], *next;

		for (; e != NULL; e = next) {
			next = e->hnext;
			e->hnext = t[e->hash & (n - 1)];
			t[e->hash & (n - 1)] = e;
		}
	}
	free(c->tab);
	c->tab = t;
	c->nbuckets = n;
}

void
az_cache_free(struct az_cache *c)
{
	if (c == NULL)
		return;
	az_cache_flush(c);
	pthread_mutex_destroy(&c->mu);
	free(c->tab);
	free(c);
}

void
az_cache_set_clock(struct az_cache *c, az_cache_clock_fn fn, void *arg)
{
	pthread_mutex_lock(&c->mu);
	c->clock = fn != NULL ? fn : real_clock;
	c->clock_arg = arg;
	pthread_mutex_unlock(&c->mu);
}

int
az_cache_put(struct az_cache *c, const char *key, const void *val, size_t vlen,
    unsigned long long ttl_ms)
{
	size_t klen = strlen(key);
	uint32_t h = fnv1a(key);
	struct ent *e, *old;

	if (c->max == 0 || ttl_ms == 0) {
		az_cache_del(c, key);
		return 0;
	}
	if ((e = calloc(1, sizeof(*e) + klen + 1)) == NULL)
		return -1;
	if ((e->val = malloc(vlen + 1)) == NULL) {
		free(e);
		return -1;
	}
	if (vlen > 0)
		memcpy(e->val, val, vlen);
	e->val[vlen] = '\0';
	e->vlen = vlen;
	e->hash = h;
	memcpy(e->key, key, klen + 1);

	pthread_mutex_lock(&c->mu);
	e->expires_ms = c->clock(c->clock_arg) + ttl_ms;
	if ((old = find(c, key, h)) != NULL)
		remove_ent(c, old);
	while (c->count >= c->max && c->tail != NULL) {
		remove_ent(c, c->tail);
		c->st.evicted++;
	}
	if (c->count >= c->nbuckets && c->nbuckets < c->max)
		grow(c);
	e->hnext = c->tab[h & (c->nbuckets - 1)];
	c->tab[h & (c->nbuckets - 1)] = e;
	list_push_head(c, e);
	c->count++;
	c->st.inserts++;
	pthread_mutex_unlock(&c->mu);
	return 0;
}

int
az_cache_get(struct az_cache *c, const char *key, void **val, size_t *vlen)
{
	uint32_t h = fnv1a(key);
	struct ent *e;
	int r = 0;

	if (val != NULL)
		*val = NULL;
	if (vlen != NULL)
		*vlen = 0;
	pthread_mutex_lock(&c->mu);
	if ((e = find(c, key, h)) != NULL &&
	    c->clock(c->clock_arg) >= e->expires_ms) {
		remove_ent(c, e);
		c->st.expired++;
		e = NULL;
	}
	if (e == NULL) {
		c->st.misses++;
	} else {
		list_unlink(c, e);
		list_push_head(c, e);
		c->st.hits++;
		r = 1;
		if (val != NULL) {
			if ((*val = malloc(e->vlen + 1)) == NULL) {
				r = -1;
			} else {
				memcpy(*val, e->val, e->vlen + 1);
				if (vlen != NULL)
					*vlen = e->vlen;
			}
		}
	}
	pthread_mutex_unlock(&c->mu);
	return r;
}

void
az_cache_del(struct az_cache *c, const char *key)
{
	uint32_t h = fnv1a(key);
	struct ent *e;

	pthread_mutex_lock(&c->mu);
	if ((e = find(c, key, h)) != NULL)
		remove_ent(c, e);
	pthread_mutex_unlock(&c->mu);
}

void
az_cache_flush(struct az_cache *c)
{
	pthread_mutex_lock(&c->mu);
	while (c->head != NULL)
		remove_ent(c, c->head);
	pthread_mutex_unlock(&c->mu);
}

void
az_cache_get_stats(struct az_cache *c, struct az_cache_stats *s)
{
	pthread_mutex_lock(&c->mu);
	*s = c->st;
	s->count = c->count;
	s->max = c->max;
	pthread_mutex_unlock(&c->mu);
}
