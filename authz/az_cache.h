/*
 * az_cache.h - a bounded, thread-safe cache with per-entry expiry.
 *
 * Keys are strings (callers normalise them: lower-case names, canonical
 * DNs), values opaque byte strings that are copied in and out. At most
 * `max` entries: inserting into a full cache evicts the least recently
 * used entry. An entry older than its TTL is a miss and is dropped. One
 * mutex guards everything; every operation is O(1) on average.
 *
 * It holds directory lookups only (name -> DN, DN -> groups); passwords
 * and bind results are never put here.
 */
#ifndef AZ_CACHE_H
#define AZ_CACHE_H

#include <stddef.h>

struct az_cache;

/* Milliseconds on some monotonic clock; replaceable for tests. */
typedef unsigned long long (*az_cache_clock_fn)(void *arg);

struct az_cache_stats {
	unsigned long long hits, misses, expired, evicted, inserts;
	size_t count, max;
};

/* max 0: the cache stores nothing (every get misses). NULL on ENOMEM. */
struct az_cache *az_cache_new(size_t max);
void az_cache_free(struct az_cache *c);
/* NULL restores the real clock (CLOCK_MONOTONIC). */
void az_cache_set_clock(struct az_cache *c, az_cache_clock_fn fn, void *arg);

/* Stores a copy of val[0..vlen) under key for ttl_ms (0: not stored),
 * replacing any older value. 0, or -1 on ENOMEM. */
int az_cache_put(struct az_cache *c, const char *key, const void *val,
    size_t vlen, unsigned long long ttl_ms);
/* 1 on a hit: *val is a malloc'd copy (NUL-terminated after vlen bytes,
 * free it), *vlen its length. 0 on a miss or an expired entry, -1 on
 * ENOMEM. val may be NULL to only test presence. */
int az_cache_get(struct az_cache *c, const char *key, void **val, size_t *vlen);
void az_cache_del(struct az_cache *c, const char *key);
void az_cache_flush(struct az_cache *c);
void az_cache_get_stats(struct az_cache *c, struct az_cache_stats *s);

#endif
