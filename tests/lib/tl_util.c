/*
 * tl_util.c - helpers shared by the C tests and benchmarks (see tl_util.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "tl_util.h"

#ifndef RABROKER_SOURCE_DIR
#define RABROKER_SOURCE_DIR "."
#endif

char *
tl_tmpdir(const char *prefix)
{
	const char *tmp = getenv("TMPDIR");
	char buf[4096];

	if (tmp == NULL || tmp[0] == '\0')
		tmp = "/tmp";
	snprintf(buf, sizeof(buf), "%s/%s-XXXXXX", tmp,
	    prefix ? prefix : "rabroker-test");
	if (mkdtemp(buf) == NULL)
		return NULL;
	return strdup(buf);
}

static int
rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	(void)remove(p); /* best effort: go on with the rest */
	return 0;
}

void
tl_rmtree(const char *dir)
{
	if (dir == NULL || dir[0] == '\0' || strcmp(dir, "/") == 0)
		return;
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int
tl_mkpki(const char *dir)
{
	const char *src = getenv("RABROKER_SOURCE_DIR");
	char cmd[8192];
	int st;

	if (src == NULL || src[0] == '\0')
		src = RABROKER_SOURCE_DIR;
	snprintf(
	    cmd, sizeof(cmd), "bash '%s/tests/lib/mkpki.sh' '%s'", src, dir);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "tl_mkpki: '%s' failed (status %d)\n", cmd, st);
		return -1;
	}
	return 0;
}

const char *
tl_path(const char *dir, const char *name)
{
	static char bufs[8][4096];
	static unsigned next;
	char *b = bufs[next++ % 8];

	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

int
tl_loopback(struct sockaddr *sa, int v6, uint16_t port)
{
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
		memset(s6, 0, sizeof(*s6));
		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_loopback;
		s6->sin6_port = htons(port);
		return (int)sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
		memset(s4, 0, sizeof(*s4));
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		s4->sin_port = htons(port);
		return (int)sizeof(*s4);
	}
}

uint16_t
tl_free_port(void)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd;
	uint16_t port = 0;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	sl = (socklen_t)tl_loopback((struct sockaddr *)&ss, 0, 0);
	if (bind(fd, (struct sockaddr *)&ss, sl) == 0 &&
	    getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	close(fd);
	return port;
}

struct tl_listener {
	struct evconnlistener *l;
	tl_accept_cb cb;
	void *arg;
};

static void
tl_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct tl_listener *la = arg;

	(void)l;
	(void)sa;
	(void)salen;
	la->cb(fd, la->arg);
}

struct tl_listener *
tl_listen(
    struct event_base *base, int v6, tl_accept_cb cb, void *arg, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	struct tl_listener *la;

	la = calloc(1, sizeof(*la));
	if (la == NULL)
		return NULL;
	la->cb = cb;
	la->arg = arg;
	sl = (socklen_t)tl_loopback((struct sockaddr *)&ss, v6, 0);
	la->l = evconnlistener_new_bind(base, tl_accept, la,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
	    4096, (struct sockaddr *)&ss, (int)sl);
	if (la->l == NULL) {
		free(la);
		return NULL;
	}
	sl = sizeof(ss);
	getsockname(evconnlistener_get_fd(la->l), (struct sockaddr *)&ss, &sl);
	if (port != NULL)
		*port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
		                 : ((struct sockaddr_in *)&ss)->sin_port);
	return la;
}

void
tl_listen_free(struct tl_listener *la)
{
	if (la == NULL)
		return;
	evconnlistener_free(la->l);
	free(la);
}

uint64_t
tl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
tl_wake(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
}

int
tl_run_until(struct event_base *base, int (*cond)(void *), void *arg,
    unsigned timeout_ms)
{
	uint64_t end = tl_now_ms() + timeout_ms, now;
	struct event *ev;
	struct timeval tv;
	int ok = 0;

	ev = evtimer_new(base, tl_wake, NULL);
	if (ev == NULL)
		return 0;
	for (;;) {
		if (cond != NULL && cond(arg)) {
			ok = 1;
			break;
		}
		now = tl_now_ms();
		if (now >= end)
			break;
		tv.tv_sec = (time_t)((end - now) / 1000);
		tv.tv_usec = (suseconds_t)(((end - now) % 1000) * 1000);
		evtimer_add(ev, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
	event_free(ev);
	return ok;
}

size_t
tl_rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, rss = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &rss) != 2)
		rss = 0;
	fclose(f);
	return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

long
tl_raise_nofile(long n)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	if ((rlim_t)n > rl.rlim_cur) {
		rl.rlim_cur = (rlim_t)n < rl.rlim_max ? (rlim_t)n : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return (long)rl.rlim_cur;
}
