/*
 * cl_listen.h - raoffer's listening sockets: the reverse-connection
 * listener the agent connects to, and the local viewer port.
 *
 * Seed 000 (an invitation that advertised a stale port): the addresses
 * offered to the agent are read back from the bound sockets with
 * getsockname, never taken from the configuration. With port 0 the first
 * socket gets a port from the kernel and the others try the same one (one
 * port to open in a firewall), falling back to their own free port.
 */
#ifndef CL_LISTEN_H
#define CL_LISTEN_H

#include <stddef.h>

#include <event2/util.h>
#include <jansson.h>

struct event_base;
struct sockaddr;
struct cl_listen;

/* An accepted socket (non-blocking); the callee owns fd. peer is the
 * remote address as text ("192.0.2.9:51000", "[::1]:51000"). */
typedef void (*cl_listen_cb)(evutil_socket_t fd, const char *peer, void *arg);

/* Binds and listens on every address literal (bare IPv4/IPv6) with port
 * (0: ephemeral). Returns NULL with what/where in err if any bind fails
 * (an address in use names the port and what to change). Starts enabled. */
struct cl_listen *cl_listen_new(struct event_base *base,
    const char *const *addrs, size_t n, unsigned port, cl_listen_cb cb,
    void *arg, char *err, size_t errlen);
void cl_listen_free(struct cl_listen *l);
/* Stops/resumes accepting (the kernel still queues connections). */
void cl_listen_enable(struct cl_listen *l, int on);
size_t cl_listen_count(const struct cl_listen *l);
/* The port socket i really has (getsockname). */
unsigned cl_listen_port(const struct cl_listen *l, size_t i);
/* ["ip:port", "[v6]:port", ...] as really bound, in order. */
json_t *cl_listen_addresses(const struct cl_listen *l);

/* "192.0.2.7:40123" / "[2001:db8::7]:40123". 0, or -1 (family, room). */
int cl_listen_format(const struct sockaddr *sa, char *out, size_t outlen);
/* Same from an address literal and a port (for tests and messages). */
int cl_listen_format_addr(
    const char *addr, unsigned port, char *out, size_t outlen);

/*
 * The default listen list: every address of every interface that is up,
 * except loopback and IPv6 link-local (an agent cannot use those without
 * a zone), IPv4 first; then 127.0.0.1 when loopback_too (the broker is on
 * this host, so the agent may be too). *out is a malloc'd array of
 * malloc'd strings, freed with cl_listen_addrs_free. 0 or -1.
 */
int cl_listen_local_addrs(int loopback_too, char ***out, size_t *n);
void cl_listen_addrs_free(char **a, size_t n);

#endif
