/*
 * tl_broker.c - the real rabrokerd as a child process, and a scripted
 * JSON-RPC client over real TLS (see tl_broker.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "az_sasl.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_tls.h"
#include "tl_broker.h"
#include "tl_slapd.h"
#include "tl_util.h"

#ifndef RABROKER_BUILD_DIR
#define RABROKER_BUILD_DIR "."
#endif

#define START_TIMEOUT_MS 15000

const char *
tl_broker_bin(void)
{
	static char path[1024];
	const char *b = getenv("RABROKER_BUILD_DIR");

	snprintf(path, sizeof(path), "%s/broker/rabrokerd",
	    b != NULL && *b != '\0' ? b : RABROKER_BUILD_DIR);
	return path;
}

static int
write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	size_t len = strlen(text), off = 0;

	if (fd < 0)
		return -1;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	fchmod(fd, mode);
	return close(fd);
}

static char *
read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t cap = 0, n = 0, r;

	if (f == NULL)
		return NULL;
	for (;;) {
		if (n + 4096 + 1 > cap) {
			char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		r = fread(buf + n, 1, 4096, f);
		n += r;
		if (r < 4096)
			break;
	}
	fclose(f);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

static int
copy_file(const char *from, const char *to, mode_t mode)
{
	char *t = read_all(from, NULL);
	int rc;

	if (t == NULL)
		return -1;
	rc = write_file(to, t, mode);
	free(t);
	return rc;
}

int
tl_broker_write_policy(struct tl_broker *b, const char *text)
{
	char tmp[700];

	/* Atomic replacement: the daemon never reads half a file. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", b->policy);
	if (write_file(tmp, text, 0644) < 0)
		return -1;
	return rename(tmp, b->policy);
}

/* Brokers not yet destroyed, so that a test that fails half-way (Check
 * exits its child process) leaves no daemon and no directory behind. */
#define LIVE_MAX 16
static struct tl_broker *live[LIVE_MAX];
static pid_t live_owner[LIVE_MAX];

static void
live_cleanup(void)
{
	for (int i = 0; i < LIVE_MAX; i++)
		if (live[i] != NULL && live_owner[i] == getpid())
			tl_broker_destroy(live[i]);
}

static void
live_add(struct tl_broker *b)
{
	static int registered;

	if (!registered && atexit(live_cleanup) == 0)
		registered = 1;
	for (int i = 0; i < LIVE_MAX; i++)
		if (live[i] == NULL || live_owner[i] != getpid()) {
			live[i] = b;
			live_owner[i] = getpid();
			return;
		}
}

static void
live_del(struct tl_broker *b)
{
	for (int i = 0; i < LIVE_MAX; i++)
		if (live[i] == b)
			live[i] = NULL;
}

int
tl_broker_setup(struct tl_broker *b, const struct tl_broker_opts *o)
{
	struct tl_broker_opts dflt;
	char *dir, conf[8192], src[700], pt[64] = "";
	int n;

	if (o == NULL) {
		memset(&dflt, 0, sizeof(dflt));
		o = &dflt;
	}
	memset(b, 0, sizeof(*b));
	if ((dir = tl_tmpdir("rabrokerd")) == NULL)
		return -1;
	snprintf(b->dir, sizeof(b->dir), "%s", dir);
	free(dir);
	live_add(b);
	snprintf(b->conf, sizeof(b->conf), "%s/rabrokerd.conf", b->dir);
	snprintf(b->policy, sizeof(b->policy), "%s/policy.conf", b->dir);
	snprintf(b->audit, sizeof(b->audit), "%s/audit.log", b->dir);
	snprintf(b->store, sizeof(b->store), "%s/tickets.db", b->dir);
	snprintf(b->log, sizeof(b->log), "%s/rabrokerd.log", b->dir);
	snprintf(b->key, sizeof(b->key), "%s/broker-key.pem", b->dir);
	if (o->slapd != NULL) {
		snprintf(b->pki, sizeof(b->pki), "%s", o->slapd->pki);
	} else {
		snprintf(b->pki, sizeof(b->pki), "%s/pki", b->dir);
		if (tl_mkpki(b->pki) != 0) {
			fprintf(stderr, "tl_broker: mkpki failed\n");
			return -1;
		}
	}
	snprintf(src, sizeof(src), "%s/broker-key.pem", b->pki);
	if (copy_file(src, b->key, 0600) < 0) {
		fprintf(stderr, "tl_broker: cannot copy %s\n", src);
		return -1;
	}
	b->nofile = o->nofile;
	b->quiet = o->log_level != NULL &&
	    (strcmp(o->log_level, "warn") == 0 ||
	        strcmp(o->log_level, "error") == 0);
	if ((b->port = tl_free_port()) == 0)
		return -1;
	if (tl_broker_write_policy(b, o->policy ? o->policy : "") < 0)
		return -1;
	if (o->prompt_timeout_s)
		snprintf(pt, sizeof(pt), "prompt_timeout = %us\n",
		    o->prompt_timeout_s);
	n = snprintf(conf, sizeof(conf),
	    "; written by tests/lib/tl_broker.c\n"
	    "[broker]\n"
	    "listen = 127.0.0.1:%u\n"
	    "cert = %s/broker.pem\n"
	    "key = %s\n"
	    "ca = %s/ca.pem\n"
	    "handshake_timeout = 5s\n"
	    "keepalive = %us\n"
	    "drain_timeout = %us\n"
	    "\n[policy]\nfile = %s\n"
	    "\n[tickets]\nstore = sqlite\npath = %s\n%s"
	    "\n[audit]\npath = %s\nsyslog = no\n"
	    "\n[log]\nlevel = %s\nsyslog = no\n"
	    "\n[metrics]\nlisten =\n"
	    "\n[control]\nsocket = %s/control.sock\n",
	    b->port, b->pki, b->key, b->pki,
	    o->keepalive_s ? o->keepalive_s : 60,
	    o->drain_timeout_s ? o->drain_timeout_s : 5, b->policy, b->store,
	    pt, b->audit, o->log_level ? o->log_level : "debug", b->dir);
	if (o->slapd != NULL && n > 0 && (size_t)n < sizeof(conf))
		n += snprintf(conf + n, sizeof(conf) - (size_t)n,
		    "\n[directory]\n"
		    "uri = %s\n"
		    "starttls = %s\n"
		    "ca = %s\n"
		    "bind_dn = %s\n"
		    "bind_pw_file = %s\n"
		    "op_timeout = 3s\n"
		    "net_timeout = 2s\n"
		    "workers = 2\n"
		    "default_domain = CORP\n"
		    "require_computer_object = %s\n"
		    "\n[domain CORP]\n"
		    "realm = corp.example\n"
		    "base_dn = %s\n",
		    o->slapd->uri, o->slapd->tls ? "yes" : "no", o->slapd->ca,
		    o->slapd->binddn, o->slapd->bindpw_file,
		    o->require_computer_object ? "yes" : "no", o->slapd->base);
	if (o->extra != NULL && n > 0 && (size_t)n < sizeof(conf))
		n += snprintf(
		    conf + n, sizeof(conf) - (size_t)n, "\n%s\n", o->extra);
	if (n <= 0 || (size_t)n >= sizeof(conf))
		return -1;
	return write_file(b->conf, conf, 0644);
}

long
tl_broker_log_count(const struct tl_broker *b, const char *needle)
{
	char *t = read_all(b->log, NULL), *p;
	long n = 0;

	if (t == NULL)
		return -1;
	for (p = t; (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
		n++;
		/* one per line */
		if ((p = strchr(p, '\n')) == NULL)
			break;
	}
	free(t);
	return n;
}

long
tl_broker_audit_count(const struct tl_broker *b, const char *needle)
{
	char *t = read_all(b->audit, NULL), *line, *save = NULL;
	long n = 0;

	if (t == NULL)
		return -1;
	for (line = strtok_r(t, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		if (strstr(line, needle) != NULL)
			n++;
	free(t);
	return n;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int
tl_broker_wait_audit(
    const struct tl_broker *b, const char *needle, long n, unsigned ms)
{
	uint64_t end = tl_now_ms() + ms;

	do {
		if (tl_broker_audit_count(b, needle) >= n)
			return 1;
		sleep_ms(20);
	} while (tl_now_ms() < end);
	return tl_broker_audit_count(b, needle) >= n;
}

int
tl_broker_wait_log(
    const struct tl_broker *b, const char *needle, long n, unsigned ms)
{
	uint64_t end = tl_now_ms() + ms;

	do {
		if (tl_broker_log_count(b, needle) >= n)
			return 1;
		sleep_ms(20);
	} while (tl_now_ms() < end);
	return tl_broker_log_count(b, needle) >= n;
}

/* 1 if something accepts TCP connections on 127.0.0.1:port. */
static int
port_open(unsigned port)
{
	struct sockaddr_storage ss;
	int sl = tl_loopback((struct sockaddr *)&ss, 0, (uint16_t)port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	if (fd < 0)
		return 0;
	ok = connect(fd, (struct sockaddr *)&ss, (socklen_t)sl) == 0;
	close(fd);
	return ok;
}

int
tl_broker_start(struct tl_broker *b)
{
	uint64_t end;
	long ready0 = tl_broker_log_count(b, " ready on ");
	pid_t pid;

	if (ready0 < 0)
		ready0 = 0;
	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		int fd = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, STDERR_FILENO);
			dup2(fd, STDOUT_FILENO);
			close(fd);
		}
		/* Never outlive the test. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (b->nofile > 0) {
			struct rlimit rl = {b->nofile, b->nofile};
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		execl(tl_broker_bin(), "rabrokerd", "-d", "-f", b->conf,
		    (char *)NULL);
		_exit(127);
	}
	b->pid = pid;
	end = tl_now_ms() + START_TIMEOUT_MS;
	while (tl_now_ms() < end) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			b->pid = 0;
			b->status = WIFEXITED(st) ? WEXITSTATUS(st) : -2;
			fprintf(stderr,
			    "tl_broker: rabrokerd exited with %d, see %s\n",
			    b->status, b->log);
			return -1;
		}
		if (tl_broker_log_count(b, " ready on ") > ready0)
			return 0;
		if (b->quiet && port_open(b->port)) {
			sleep_ms(200); /* the rest of the start-up */
			return 0;
		}
		sleep_ms(20);
	}
	fprintf(stderr, "tl_broker: rabrokerd not ready after %d ms\n",
	    START_TIMEOUT_MS);
	tl_broker_stop(b, SIGKILL, 2000, NULL);
	return -1;
}

static long
stat_cpu_ms(const char *path)
{
	char buf[2048], *p;
	unsigned long ut, st;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return -1;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	/* Fields after the command name (which may hold spaces). */
	if (p == NULL || (p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
	        &ut, &st) != 2)
		return -1;
	return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

long
tl_broker_cpu_ms(const struct tl_broker *b)
{
	char path[64];

	if (b->pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)b->pid);
	return stat_cpu_ms(path);
}

long
tl_broker_main_cpu_ms(const struct tl_broker *b)
{
	char path[96];

	if (b->pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)b->pid,
	    (int)b->pid);
	return stat_cpu_ms(path);
}

static pid_t perf_pid;

void
tl_broker_perf_start(const struct tl_broker *b, const char *tag)
{
	const char *dir = getenv("TL_PERF_DIR"), *args = getenv("TL_PERF_ARGS");
	char out[700], pid[16], cmd[2048];

	if (dir == NULL || *dir == '\0' || b->pid <= 0 || perf_pid > 0)
		return;
	snprintf(out, sizeof(out), "%s/%s.data", dir, tag);
	snprintf(pid, sizeof(pid), "%d", (int)b->pid);
	snprintf(cmd, sizeof(cmd), "exec perf record -q -g %s -o '%s' -p %s",
	    args != NULL ? args : "-F 999 --call-graph dwarf,16384", out, pid);
	fflush(stdout);
	fflush(stderr);
	if ((perf_pid = fork()) < 0) {
		perf_pid = 0;
		return;
	}
	if (perf_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGINT);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	fprintf(stderr,
	    "tl_broker: perf (pid %d) records rabrokerd %s into %s\n",
	    (int)perf_pid, pid, out);
	sleep_ms(500); /* perf attaches */
}

void
tl_broker_perf_stop(void)
{
	uint64_t end = tl_now_ms() + 30000;
	int st;

	if (perf_pid <= 0)
		return;
	kill(perf_pid, SIGINT);
	while (waitpid(perf_pid, &st, WNOHANG) == 0) {
		if (tl_now_ms() >= end) {
			kill(perf_pid, SIGKILL);
			waitpid(perf_pid, &st, 0);
			break;
		}
		sleep_ms(20);
	}
	perf_pid = 0;
}

size_t
tl_broker_rss(const struct tl_broker *b)
{
	char path[64];
	unsigned long size, res;
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "/proc/%d/statm", (int)b->pid);
	if (b->pid <= 0 || (f = fopen(path, "r")) == NULL)
		return 0;
	n = fscanf(f, "%lu %lu", &size, &res);
	fclose(f);
	return n == 2 ? res * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

int
tl_broker_signal(struct tl_broker *b, int sig)
{
	if (b->pid <= 0)
		return -1;
	return kill(b->pid, sig);
}

int
tl_broker_stop(
    struct tl_broker *b, int sig, unsigned timeout_ms, unsigned *elapsed_ms)
{
	uint64_t start = tl_now_ms(), end = start + timeout_ms;
	int st;

	if (b->pid <= 0)
		return -1;
	kill(b->pid, sig);
	for (;;) {
		pid_t r = waitpid(b->pid, &st, WNOHANG);
		if (r == b->pid)
			break;
		if (tl_now_ms() >= end) {
			kill(b->pid, SIGKILL);
			waitpid(b->pid, &st, 0);
			b->pid = 0;
			b->status = -1;
			if (elapsed_ms)
				*elapsed_ms = (unsigned)(tl_now_ms() - start);
			return -1;
		}
		sleep_ms(10);
	}
	if (elapsed_ms)
		*elapsed_ms = (unsigned)(tl_now_ms() - start);
	b->pid = 0;
	b->status = WIFEXITED(st) ? WEXITSTATUS(st) : -2;
	return b->status;
}

int
tl_broker_restart(struct tl_broker *b)
{
	if (b->pid > 0 && tl_broker_stop(b, SIGTERM, 15000, NULL) != 0)
		return -1;
	return tl_broker_start(b);
}

void
tl_broker_destroy(struct tl_broker *b)
{
	live_del(b);
	if (b->pid > 0)
		tl_broker_stop(b, SIGKILL, 5000, NULL);
	if (b->dir[0] != '\0' && getenv("TL_KEEP") == NULL)
		tl_rmtree(b->dir);
	b->dir[0] = '\0';
}

int
tl_broker_run(
    const char *const *args, char *out, size_t outlen, unsigned timeout_ms)
{
	int pfd[2], st;
	pid_t pid;
	size_t n = 0;
	uint64_t end = tl_now_ms() + timeout_ms;
	const char *argv[32];
	size_t na = 0;

	argv[na++] = "rabrokerd";
	for (; args && *args && na < 31; args++)
		argv[na++] = *args;
	argv[na] = NULL;
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -1;
	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		dup2(pfd[1], STDOUT_FILENO);
		dup2(pfd[1], STDERR_FILENO);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(tl_broker_bin(), (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	if (out && outlen)
		out[0] = '\0';
	for (;;) {
		struct pollfd p = {pfd[0], POLLIN, 0};
		int left = (int)(end > tl_now_ms() ? end - tl_now_ms() : 0);
		char buf[1024];
		ssize_t r;

		if (left == 0 || poll(&p, 1, left) <= 0)
			break;
		r = read(pfd[0], buf, sizeof(buf));
		if (r <= 0)
			break;
		if (out && n + 1 < outlen) {
			size_t c = (size_t)r < outlen - n - 1 ? (size_t)r
			                                      : outlen - n - 1;
			memcpy(out + n, buf, c);
			n += c;
			out[n] = '\0';
		}
	}
	close(pfd[0]);
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (tl_now_ms() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		sleep_ms(10);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* --- the scripted client ------------------------------------------------ */

struct queued {
	char *method;
	json_t *id;
	json_t *params;
	struct queued *next;
};

struct tl_client {
	struct event_base *base;
	struct rp_tls_ctx *tctx;
	struct rp_tls *tls; /* until the rp_conn takes over */
	struct rp_conn *conn;
	int ready, closed;
	char why[256];
	tl_request_fn fn;
	void *fn_arg;
	struct queued *q;
};

struct slot {
	int done, code;
	json_t *result;
};

/* One handler per broker-to-client method: rp_handler has no method
 * argument, so the name is bound by a tiny wrapper each. */
static void
cl_queue(struct tl_client *c, const char *method, json_t *id, json_t *params)
{
	struct queued *q, **tail;
	json_t *res;

	if (c->fn != NULL &&
	    (res = c->fn(c, method, params, c->fn_arg)) != NULL) {
		if (id != NULL)
			rp_conn_reply(c->conn, id, res);
		else
			json_decref(res);
		return;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return;
	q->method = strdup(method);
	q->id = id ? json_incref(id) : NULL;
	q->params = json_incref(params);
	for (tail = &c->q; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = q;
}

#define CL_WRAP(fn, name)                                                \
	static void fn(                                                  \
	    struct rp_conn *conn, json_t *id, json_t *params, void *ctx) \
	{                                                                \
		(void)conn;                                              \
		cl_queue(ctx, name, id, params);                         \
	}
CL_WRAP(cl_novice_prompt, "novice.prompt")
CL_WRAP(cl_ticket_connect, "ticket.connect")
CL_WRAP(cl_control_prompt, "control.prompt")
CL_WRAP(cl_ticket_revoked, "ticket.revoked")
CL_WRAP(cl_offer_update, "offer.update")

#define CL_ALL (RP_ST_ANY | RP_ST_NEW)
static const struct rp_method cl_methods[] = {
    {"novice.prompt", CL_ALL, NULL, RP_M_NOTIFY_OK, cl_novice_prompt},
    {"ticket.connect", CL_ALL, NULL, RP_M_NOTIFY_OK, cl_ticket_connect},
    {"control.prompt", CL_ALL, NULL, RP_M_NOTIFY_OK, cl_control_prompt},
    {"ticket.revoked", CL_ALL, NULL, RP_M_NOTIFY_OK, cl_ticket_revoked},
    {"offer.update", CL_ALL, NULL, RP_M_NOTIFY_OK, cl_offer_update},
};

static void
cl_on_close(struct rp_conn *conn, const char *why, void *ctx)
{
	struct tl_client *c = ctx;

	c->closed = 1;
	snprintf(c->why, sizeof(c->why), "%s", why ? why : "closed");
	if (c->conn != NULL) {
		c->conn = NULL;
		rp_conn_unref(conn);
	}
}

static const struct rp_conn_cbs cl_cbs = {.on_close = cl_on_close};

static void
cl_tls_ready(struct rp_tls *t, void *arg)
{
	struct tl_client *c = arg;
	struct rp_conn_opts o = {
	    .methods = cl_methods,
	    .nmethods = sizeof(cl_methods) / sizeof(cl_methods[0]),
	    .cbs = &cl_cbs,
	    .ctx = c,
	};

	c->tls = NULL;
	c->conn = rp_conn_new_tls(c->base, t, &o);
	if (c->conn == NULL) {
		snprintf(c->why, sizeof(c->why), "rp_conn_new_tls failed");
		rp_tls_close(t);
		return;
	}
	c->ready = 1;
}

static void
cl_tls_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct tl_client *c = arg;

	c->tls = NULL;
	c->closed = 1;
	snprintf(c->why, sizeof(c->why), "%s", msg ? msg : "closed");
}

static const struct rp_tls_cbs cl_tls_cbs = {
    .on_ready = cl_tls_ready,
    .on_close = cl_tls_close,
};

static int
cl_settled(void *arg)
{
	struct tl_client *c = arg;
	return c->ready || c->closed;
}

struct tl_client *
tl_client_connect(struct event_base *base, const char *pki, unsigned port,
    const char *cert, unsigned timeout_ms, char *why, size_t whylen)
{
	return tl_client_connect_from(
	    base, pki, port, cert, NULL, timeout_ms, why, whylen);
}

struct tl_client *
tl_client_connect_from(struct event_base *base, const char *pki, unsigned port,
    const char *cert, const char *src, unsigned timeout_ms, char *why,
    size_t whylen)
{
	struct tl_client *c = calloc(1, sizeof(*c));
	struct rp_tls_opts o;
	char ca[700], crt[700], key[700], err[512];
	struct sockaddr_storage ss;
	struct sockaddr_in s4;
	struct rp_tls_connect_extra x;
	int sl;

	if (c == NULL)
		return NULL;
	c->base = base;
	memset(&o, 0, sizeof(o));
	o.role = RP_TLS_CLIENT;
	snprintf(ca, sizeof(ca), "%s/ca.pem", pki);
	o.ca_file = ca;
	if (cert != NULL) {
		snprintf(crt, sizeof(crt), "%s/%s.pem", pki, cert);
		snprintf(key, sizeof(key), "%s/%s-key.pem", pki, cert);
		o.cert_file = crt;
		o.key_file = key;
	}
	o.handshake_timeout_ms = timeout_ms;
	if ((c->tctx = rp_tls_ctx_new(&o, err, sizeof(err))) == NULL) {
		if (why)
			snprintf(why, whylen, "client TLS: %s", err);
		free(c);
		return NULL;
	}
	sl = tl_loopback((struct sockaddr *)&ss, 0, (uint16_t)port);
	memset(&x, 0, sizeof(x));
	if (src != NULL) {
		memset(&s4, 0, sizeof(s4));
		s4.sin_family = AF_INET;
		if (inet_pton(AF_INET, src, &s4.sin_addr) != 1) {
			if (why)
				snprintf(why, whylen, "bad source %s", src);
			rp_tls_ctx_free(c->tctx);
			free(c);
			return NULL;
		}
		x.src = (struct sockaddr *)&s4;
		x.srclen = (int)sizeof(s4);
	}
	c->tls = rp_tls_connect_ex(c->tctx, base, (struct sockaddr *)&ss, sl,
	    "localhost", &x, &cl_tls_cbs, c);
	if (c->tls == NULL) {
		if (why)
			snprintf(why, whylen, "connect failed");
		rp_tls_ctx_free(c->tctx);
		free(c);
		return NULL;
	}
	tl_run_until(base, cl_settled, c, timeout_ms + 1000);
	if (!c->ready) {
		if (why)
			snprintf(why, whylen, "%s",
			    c->closed ? c->why : "handshake timed out");
		tl_client_free(c);
		return NULL;
	}
	return c;
}

void
tl_client_free(struct tl_client *c)
{
	struct queued *q;

	if (c == NULL)
		return;
	if (c->conn != NULL) {
		struct rp_conn *conn = c->conn;
		rp_conn_close(conn, "test done");
		/* Let the close_notify go out. */
		tl_run_until(c->base, NULL, NULL, 20);
		if (c->conn != NULL) {
			rp_conn_set_data(conn, NULL);
			c->conn = NULL;
			rp_conn_unref(conn);
		}
	}
	if (c->tls != NULL) {
		rp_tls_set_cbs(c->tls, NULL, NULL);
		rp_tls_close(c->tls);
		c->tls = NULL;
	}
	/* Let pending transport callbacks (which point at c) run first. */
	event_base_loop(c->base, EVLOOP_NONBLOCK);
	while ((q = c->q) != NULL) {
		c->q = q->next;
		free(q->method);
		json_decref(q->id);
		json_decref(q->params);
		free(q);
	}
	rp_tls_ctx_free(c->tctx);
	free(c);
}

static void
cl_reply(struct rp_conn *conn, int code, json_t *result, void *arg)
{
	struct slot *s = arg;

	s->done = 1;
	s->code = code;
	s->result = result ? json_incref(result) : NULL;
}

static int
slot_done(void *arg)
{
	return ((struct slot *)arg)->done;
}

int
tl_client_call(struct tl_client *c, const char *method, json_t *params,
    unsigned timeout_ms, json_t **result)
{
	struct slot *s;
	int rc;

	if (result)
		*result = NULL;
	if (c->conn == NULL || c->closed) {
		json_decref(params);
		return RP_ERR_CLOSED;
	}
	/* The slot outlives a timeout: rp_conn calls back exactly once. */
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		json_decref(params);
		return RP_ERR_NOMEM;
	}
	rc = rp_conn_call(c->conn, method, params ? params : json_object(),
	    timeout_ms, cl_reply, s);
	if (rc != 0) {
		free(s);
		return rc;
	}
	tl_run_until(c->base, slot_done, s, timeout_ms + 500);
	if (!s->done) {
		/* Should not happen (rp_conn times the call out); leak the
		 * slot rather than let a late answer write into freed memory. */
		return RP_ERR_TIMEOUT;
	}
	rc = s->code;
	if (result)
		*result = s->result;
	else
		json_decref(s->result);
	free(s);
	return rc;
}

int
tl_client_notify(struct tl_client *c, const char *method, json_t *params)
{
	if (c->conn == NULL) {
		json_decref(params);
		return RP_ERR_CLOSED;
	}
	return rp_conn_notify(c->conn, method, params ? params : json_object());
}

const char *
tl_error_reason(const json_t *err)
{
	const char *r = json_string_value(
	    json_object_get(json_object_get(err, "data"), "reason"));
	return r ? r : "";
}

void
tl_client_on_request(struct tl_client *c, tl_request_fn fn, void *arg)
{
	c->fn = fn;
	c->fn_arg = arg;
}

struct qwait {
	struct tl_client *c;
	const char *method;
};

static struct queued **
q_find(struct tl_client *c, const char *method)
{
	struct queued **p;

	for (p = &c->q; *p != NULL; p = &(*p)->next)
		if (method == NULL || strcmp((*p)->method, method) == 0)
			return p;
	return NULL;
}

static int
q_ready(void *arg)
{
	struct qwait *w = arg;
	return q_find(w->c, w->method) != NULL || w->c->closed;
}

json_t *
tl_client_wait_request(
    struct tl_client *c, const char *method, unsigned timeout_ms, json_t **id)
{
	struct qwait w = {c, method};
	struct queued **pp, *q;
	json_t *params;

	if (id)
		*id = NULL;
	tl_run_until(c->base, q_ready, &w, timeout_ms);
	if ((pp = q_find(c, method)) == NULL)
		return NULL;
	q = *pp;
	*pp = q->next;
	params = q->params;
	if (id)
		*id = q->id;
	else
		json_decref(q->id);
	free(q->method);
	free(q);
	return params;
}

int
tl_client_reply(struct tl_client *c, json_t *id, json_t *result)
{
	if (c->conn == NULL) {
		json_decref(result);
		return RP_ERR_CLOSED;
	}
	return rp_conn_reply(c->conn, id, result);
}

int
tl_client_closed(const struct tl_client *c)
{
	return c->closed;
}

static int
cl_closed(void *arg)
{
	return ((struct tl_client *)arg)->closed;
}

int
tl_client_wait_closed(struct tl_client *c, unsigned timeout_ms)
{
	return tl_run_until(c->base, cl_closed, c, timeout_ms);
}

const char *
tl_client_close_reason(const struct tl_client *c)
{
	return c->why;
}

int
tl_client_agent_login(struct tl_client *c, const char *fqdn, const char *user)
{
	int rc;

	rc = tl_client_call(c, "hello",
	    json_pack("{s:i, s:s, s:s}", "version", 1, "role", "agent",
	        "software", "tl_broker/0"),
	    5000, NULL);
	if (rc != 0)
		return rc;
	return tl_client_call(c, "agent.register",
	    json_pack("{s:s, s:[s], s:[{s:s, s:s, s:s, s:b}], s:s}", "fqdn",
	        fqdn, "addresses", "127.0.0.1", "sessions", "id", "1", "user",
	        user ? user : "CORP\\bob", "kind", "graphical", "locked", 0,
	        "software", "tl_broker/0"),
	    5000, NULL);
}

int
tl_client_helper_login(
    struct tl_client *c, const char *user, const char *password)
{
	unsigned char buf[512];
	size_t ul = strlen(user), pl = strlen(password);
	char *b64;
	int rc;

	rc = tl_client_call(c, "hello",
	    json_pack("{s:i, s:s, s:s}", "version", 1, "role", "helper",
	        "software", "tl_broker/0"),
	    5000, NULL);
	if (rc != 0)
		return rc;
	if (ul + pl + 2 > sizeof(buf))
		return RP_ERR_INVALID_PARAMS;
	buf[0] = '\0';
	memcpy(buf + 1, user, ul);
	buf[1 + ul] = '\0';
	memcpy(buf + 2 + ul, password, pl);
	b64 = az_sasl_b64_encode(buf, ul + pl + 2);
	if (b64 == NULL)
		return RP_ERR_NOMEM;
	rc = tl_client_call(c, "auth.start",
	    json_pack("{s:s, s:s}", "mechanism", "PLAIN", "initial", b64),
	    10000, NULL);
	free(b64);
	return rc;
}
