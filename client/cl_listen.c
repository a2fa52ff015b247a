/*
 * cl_listen.c - listening sockets with the ports read back (seed 000).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "cl_listen.h"
#include "rp_log.h"

#define LISTEN_MAX 16

struct cl_listen {
	struct evconnlistener *lev[LISTEN_MAX];
	struct sockaddr_storage sa[LISTEN_MAX];
	size_t n;
	cl_listen_cb cb;
	void *arg;
	int enabled;
};

int
cl_listen_format(const struct sockaddr *sa, char *out, size_t outlen)
{
	char h[INET6_ADDRSTRLEN];
	int n;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		if (inet_ntop(AF_INET, &s4->sin_addr, h, sizeof(h)) == NULL)
			return -1;
		n = snprintf(out, outlen, "%s:%u", h, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		if (inet_ntop(AF_INET6, &s6->sin6_addr, h, sizeof(h)) == NULL)
			return -1;
		n = snprintf(out, outlen, "[%s]:%u", h, ntohs(s6->sin6_port));
	} else
		return -1;
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static int
make_sa(const char *addr, unsigned port, struct sockaddr_storage *ss,
    socklen_t *len)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*len = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*s6);
		return 0;
	}
	return -1;
}

int
cl_listen_format_addr(const char *addr, unsigned port, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (port > 65535 || make_sa(addr, port, &ss, &len) != 0)
		return -1;
	return cl_listen_format((struct sockaddr *)&ss, out, outlen);
}

static unsigned sa_port(const struct sockaddr_storage *ss);

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct cl_listen *l = arg;
	char peer[INET6_ADDRSTRLEN + 16];

	(void)lev;
	(void)salen;
	if (cl_listen_format(sa, peer, sizeof(peer)) != 0)
		snprintf(peer, sizeof(peer), "unknown");
	evutil_make_socket_nonblocking(fd);
	l->cb(fd, peer, l->arg);
}

static void
error_cb(struct evconnlistener *lev, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();

	(void)arg;
	/* Out of descriptors and the like: pause a little, do not spin. */
	log_warnx("accept: %s", evutil_socket_error_to_string(e));
	(void)lev;
}

/* One socket; -1 with errno kept. */
static evutil_socket_t
bind_one(const struct sockaddr_storage *ss, socklen_t len)
{
	evutil_socket_t fd;
	int one = 1, e;

	fd = socket(
	    ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss->ss_family == AF_INET6)
		(void)setsockopt(
		    fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, len) != 0 ||
	    listen(fd, 16) != 0) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

struct cl_listen *
cl_listen_new(struct event_base *base, const char *const *addrs, size_t n,
    unsigned port, cl_listen_cb cb, void *arg, char *err, size_t errlen)
{
	struct cl_listen *l;
	unsigned shared = port;
	size_t i;

	if (n == 0 || n > LISTEN_MAX || port > 65535) {
		snprintf(err, errlen, "listen: 1 to %d addresses", LISTEN_MAX);
		return NULL;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->cb = cb;
	l->arg = arg;
	l->enabled = 1;
	for (i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		socklen_t len, sl;
		evutil_socket_t fd = -1;
		char txt[80];

		if (make_sa(addrs[i], shared, &ss, &len) != 0) {
			snprintf(err, errlen,
			    "listen: \"%s\" is not an address literal",
			    addrs[i]);
			goto fail;
		}
		fd = bind_one(&ss, len);
		if (fd < 0 && port == 0 && shared != 0) {
			/* The shared ephemeral port is taken here: any. */
			make_sa(addrs[i], 0, &ss, &len);
			fd = bind_one(&ss, len);
		}
		if (fd < 0) {
			int e = errno;
			cl_listen_format_addr(
			    addrs[i], shared, txt, sizeof(txt));
			if (e == EADDRINUSE)
				snprintf(err, errlen,
				    "listen on %s: port %u is already in use; "
				    "choose another with --port (or 0 for any "
				    "free port)",
				    txt, shared);
			else if (e == EADDRNOTAVAIL)
				snprintf(err, errlen,
				    "listen on %s: %s is not an address of "
				    "this machine (--listen)",
				    txt, addrs[i]);
			else
				snprintf(err, errlen, "listen on %s: %s", txt,
				    strerror(e));
			goto fail;
		}
		sl = sizeof(l->sa[i]);
		if (getsockname(fd, (struct sockaddr *)&l->sa[i], &sl) != 0) {
			snprintf(
			    err, errlen, "getsockname: %s", strerror(errno));
			close(fd);
			goto fail;
		}
		if (shared == 0)
			shared = sa_port(&l->sa[i]);
		l->lev[i] = evconnlistener_new(base, accept_cb, l,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
		if (l->lev[i] == NULL) {
			snprintf(err, errlen, "listen: out of memory");
			close(fd);
			goto fail;
		}
		evconnlistener_set_error_cb(l->lev[i], error_cb);
		l->n = i + 1;
	}
	return l;
fail:
	cl_listen_free(l);
	return NULL;
}

void
cl_listen_free(struct cl_listen *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++)
		if (l->lev[i] != NULL)
			evconnlistener_free(l->lev[i]);
	free(l);
}

void
cl_listen_enable(struct cl_listen *l, int on)
{
	size_t i;

	if (l == NULL || l->enabled == !!on)
		return;
	l->enabled = !!on;
	for (i = 0; i < l->n; i++) {
		if (on)
			evconnlistener_enable(l->lev[i]);
		else
			evconnlistener_disable(l->lev[i]);
	}
}

size_t
cl_listen_count(const struct cl_listen *l)
{
	return l ? l->n : 0;
}

unsigned
cl_listen_port(const struct cl_listen *l, size_t i)
{
	if (l == NULL || i >= l->n)
		return 0;
	return sa_port(&l->sa[i]);
}

static unsigned
sa_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return 0;
}

json_t *
cl_listen_addresses(const struct cl_listen *l)
{
	json_t *a = json_array();
	size_t i;

	if (a == NULL)
		return NULL;
	for (i = 0; l != NULL && i < l->n; i++) {
		char txt[80];
		if (cl_listen_format((const struct sockaddr *)&l->sa[i], txt,
		        sizeof(txt)) == 0)
			json_array_append_new(a, json_string(txt));
	}
	return a;
}

void
cl_listen_addrs_free(char **a, size_t n)
{
	size_t i;

	for (i = 0; a != NULL && i < n; i++)
		free(a[i]);
	free(a);
}

static int
push(char ***a, size_t *n, const char *s)
{
	size_t i;
	char **na;

	for (i = 0; i < *n; i++)
		if (strcmp((*a)[i], s) == 0)
			return 0;
	if (*n >= LISTEN_MAX)
		return 0; /* enough addresses to try */
	if ((na = realloc(*a, (*n + 1) * sizeof(*na))) == NULL)
		return -1;
	*a = na;
	if ((na[*n] = strdup(s)) == NULL)
		return -1;
	(*n)++;
	return 0;
}

int
cl_listen_local_addrs(int loopback_too, char ***out, size_t *n)
{
	struct ifaddrs *ifa = NULL, *i;
	char **a = NULL;
	size_t cnt = 0;
	int fam, pass;

	*out = NULL;
	*n = 0;
	if (getifaddrs(&ifa) != 0)
		return -1;
	for (pass = 0; pass < 2; pass++) {
		fam = pass == 0 ? AF_INET : AF_INET6;
		for (i = ifa; i != NULL; i = i->ifa_next) {
			char h[INET6_ADDRSTRLEN];
			if (i->ifa_addr == NULL ||
			    i->ifa_addr->sa_family != fam ||
			    (i->ifa_flags & IFF_UP) == 0 ||
			    (i->ifa_flags & IFF_LOOPBACK) != 0)
				continue;
			if (fam == AF_INET) {
				struct sockaddr_in *s4 =
				    (struct sockaddr_in *)i->ifa_addr;
				if ((ntohl(s4->sin_addr.s_addr) >> 24) == 127)
					continue;
				inet_ntop(AF_INET, &s4->sin_addr, h, sizeof(h));
			} else {
				struct sockaddr_in6 *s6 =
				    (struct sockaddr_in6 *)i->ifa_addr;
				if (IN6_IS_ADDR_LINKLOCAL(&s6->sin6_addr) ||
				    IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr) ||
				    IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
					continue;
				inet_ntop(
				    AF_INET6, &s6->sin6_addr, h, sizeof(h));
			}
			if (push(&a, &cnt, h) != 0)
				goto fail;
		}
	}
	freeifaddrs(ifa);
	if (loopback_too && push(&a, &cnt, "127.0.0.1") != 0) {
		cl_listen_addrs_free(a, cnt);
		return -1;
	}
	*out = a;
	*n = cnt;
	return 0;
fail:
	freeifaddrs(ifa);
	cl_listen_addrs_free(a, cnt);
	return -1;
}
