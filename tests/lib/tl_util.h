/*
 * tl_util.h - helpers shared by the C tests and benchmarks: a temporary
 * directory, the test PKI (tests/lib/mkpki.sh), loopback listeners and
 * ports, and running an event loop until a condition or a deadline.
 */
#ifndef TL_UTIL_H
#define TL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

struct event_base;
struct sockaddr;

/* Makes a fresh directory under $TMPDIR (or /tmp); returns a malloc'd path,
 * or NULL. */
char *tl_tmpdir(const char *prefix);
/* Removes a directory tree (best effort). */
void tl_rmtree(const char *dir);
/* Runs tests/lib/mkpki.sh DIR (source dir from $RABROKER_SOURCE_DIR, else
 * the compile-time one). Returns 0 on success. */
int tl_mkpki(const char *dir);
/* "DIR/NAME" in a static rotating buffer (8 slots), for file names. */
const char *tl_path(const char *dir, const char *name);

/* A free TCP port on 127.0.0.1 (bind to 0, read it, close): racy by nature,
 * prefer tl_listen(). Returns 0 on failure. */
uint16_t tl_free_port(void);
/* Listens on 127.0.0.1 (or ::1 when v6) on a kernel-chosen port. cb gets
 * every accepted (non-blocking) socket. *port receives the port. */
typedef void (*tl_accept_cb)(evutil_socket_t fd, void *arg);
struct tl_listener;
struct tl_listener *tl_listen(struct event_base *base, int v6, tl_accept_cb cb,
    void *arg, uint16_t *port);
void tl_listen_free(struct tl_listener *l);
/* Fills *ss with 127.0.0.1:port (or [::1]:port); returns its length. */
int tl_loopback(struct sockaddr *ss, int v6, uint16_t port);

/* Monotonic milliseconds. */
uint64_t tl_now_ms(void);
/* Runs the loop until cond(arg) is true (checked after every loop pass) or
 * timeout_ms passes. cond NULL: run for timeout_ms. Returns 1 if cond
 * became true, else 0. */
int tl_run_until(struct event_base *base, int (*cond)(void *), void *arg,
    unsigned timeout_ms);
/* Resident set size of this process in bytes (/proc/self/statm). */
size_t tl_rss_bytes(void);
/* Raises RLIMIT_NOFILE's soft limit to at least n (up to the hard limit);
 * returns the resulting soft limit. */
long tl_raise_nofile(long n);

#endif
