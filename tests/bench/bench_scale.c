/*
 * bench_scale.c - the design targets for one broker process: N agent
 * connections (default 100,000) at <= 20 KiB each, TLS included, and all
 * of them back within a minute after a restart.
 *
 * The real rabrokerd (Release build of this tree) is started with a
 * generated configuration; this program is the load generator, one event
 * loop with one struct per agent and no timer per agent (one 10 ms wheel
 * for reconnections, one cursor for keepalives). Every agent has its own
 * machine certificate (ECDSA P-256, SAN bench-NNNNNN.corp.example) issued
 * in-process with GnuTLS from a CA kept with them in a cache directory
 * ($TMPDIR/rabroker-bench-scale, reused by later runs). Each agent does
 * TLS 1.3 with its certificate, hello + agent.register with one session,
 * then pings at the keepalive the broker announced, spread evenly. The
 * agents connect from many 127.0.0.x source addresses (the ephemeral port
 * range is per source address).
 *
 * Phases, each bounded in time (-t):
 *   1. connect + register all N (at most -c handshakes in flight): rate,
 *      broker CPU per agent (full handshakes), broker VmRSS before/after.
 *   2. idle with keepalives for -i seconds: broker CPU, VmRSS per agent.
 *   3. machines.list by a helper (SASL PLAIN against a real slapd; the
 *      broker then also looks every agent's computer object up, as in
 *      production): unfiltered (the reply stops at its size bound) and
 *      filtered to one machine (a scan of all N).
 *   4. restart: SIGTERM, start again; every agent reconnects as raagent
 *      does (exponential backoff from 1 s, full jitter, cap -b seconds),
 *      offering its session ticket: time until all N are registered again,
 *      resumed vs full handshakes, broker CPU per agent.
 *   5. (-F) the same restart with a new ticket key (tickets useless):
 *      the cost without resumption.
 * The broker and this generator share the machine's CPUs: the times are
 * those of both ends together; the broker's own CPU per agent is the
 * figure to extrapolate from, and the table says which figures are
 * measured and which are extrapolated.
 *
 *   bench_scale [-n 100000] [-c 256] [-k 60] [-i 30] [-b 5] [-s 64]
 *               [-t 900] [-F] [-x] [-H threads]
 *   -x: no directory (no slapd): phase 3 is skipped.
 *   -C: only make the certificate cache, then exit.
 *   -H: [broker] handshake_threads (default: the broker's default). The
 *       broker's CPU is given in all and for its main thread (the event
 *       loop, /proc/PID/task/PID/stat), which is what bounds its rate.
 *   TL_PERF_DIR=DIR in the environment: perf records the broker during
 *       phase 3 (DIR/list.data) and each restart until all are back
 *       (DIR/restart.data, DIR/restart-newkey.data); tl_broker_perf_start.
 *
 * Needs (run.sh scale does the first two when run as root): RLIMIT_NOFILE
 * above N + 1024 for both processes (raised here up to fs.nr_open),
 * net.core.somaxconn >= 1024. Loopback only.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>

#include "az_sasl.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_log.h"
#include "rp_tls.h"
#include "tl_broker.h"
#include "tl_slapd.h"
#include "tl_util.h"

#define MAX_AGENTS 200000
#define WHEEL 1024 /* slots of TICK_MS: 10 s ahead at most */
#define TICK_MS 10
#define BACKOFF_BASE_MS 1000
#define BACKOFF_FLOOR_MS 100

enum ag_state { A_WAIT = 0, A_TLS, A_HELLO, A_REG, A_UP };

struct ag {
	struct rp_tls_ctx *tctx; /* its certificate (made on first use) */
	struct rp_tls *tls;      /* during the handshake */
	struct rp_conn *conn;
	unsigned char *sess; /* session ticket from the broker */
	uint32_t sesslen;
	uint32_t wnext; /* wheel list: index + 1, 0 = end */
	uint8_t state, attempt, queued;
};

static struct event_base *base;
static struct tl_broker br;
static struct ag *ags;
static int nagents = 100000, conc = 256, keepalive = 60, idle_s = 30;
static int cap_s = 5, nsrc = 64, tlimit = 900, full_restart, no_dir;
static int certs_only;
static char cache[600], capath[700];
static uint32_t wheel[WHEEL];
static uint32_t *rq; /* due, waiting for a free in-flight place (FIFO) */
static size_t rq_head, rq_len;
static uint64_t wheel_tick; /* last processed tick */
static uint64_t t_origin;
static struct event *tick_ev, *ka_ev;
static int inflight, nup;
static int use_tickets = 1;
/* per phase */
static long ph_full, ph_resumed, ph_tls_fail, ph_closed, ph_reg_fail;
static long pings_sent, pings_ok, pings_fail;
static uint32_t ka_cursor;
static uint64_t ka_last;
static int finishing;

static uint64_t
now_ms(void)
{
	return tl_now_ms();
}

/* ---- certificates (cached) --------------------------------------------- */

static int
agent_file(int i, char *out, size_t len)
{
	return snprintf(out, len, "%s/a/%06d.pem", cache, i) < (int)len ? 0
	                                                                : -1;
}

/* Issues the missing agent certificates (cert and key in one PEM file). */
static int
make_certs(int n, int *made)
{
	gnutls_x509_crt_t ca;
	gnutls_x509_privkey_t cakey;
	gnutls_datum_t d;
	char path[700];
	time_t now = time(NULL);
	int i, rc = -1;

	*made = 0;
	snprintf(path, sizeof(path), "%s/pki/ca.pem", cache);
	if (gnutls_load_file(path, &d) < 0)
		return -1;
	gnutls_x509_crt_init(&ca);
	if (gnutls_x509_crt_import(ca, &d, GNUTLS_X509_FMT_PEM) < 0) {
		gnutls_free(d.data);
		gnutls_x509_crt_deinit(ca);
		return -1;
	}
	gnutls_free(d.data);
	snprintf(path, sizeof(path), "%s/pki/ca-key.pem", cache);
	if (gnutls_load_file(path, &d) < 0) {
		gnutls_x509_crt_deinit(ca);
		return -1;
	}
	gnutls_x509_privkey_init(&cakey);
	if (gnutls_x509_privkey_import(cakey, &d, GNUTLS_X509_FMT_PEM) < 0)
		goto out;
	for (i = 0; i < n; i++) {
		gnutls_x509_crt_t crt;
		gnutls_x509_privkey_t key;
		gnutls_datum_t c = {NULL, 0}, k = {NULL, 0};
		char fqdn[64], tmp[720];
		unsigned char serial[8];
		FILE *f;

		agent_file(i, path, sizeof(path));
		if (access(path, R_OK) == 0)
			continue;
		snprintf(fqdn, sizeof(fqdn), "bench-%06d.corp.example", i);
		gnutls_x509_privkey_init(&key);
		if (gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
		        GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
		        0) < 0) {
			gnutls_x509_privkey_deinit(key);
			goto out;
		}
		gnutls_x509_crt_init(&crt);
		gnutls_x509_crt_set_version(crt, 3);
		gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
		serial[0] &= 0x7f;
		gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
		gnutls_x509_crt_set_activation_time(crt, now - 3600);
		gnutls_x509_crt_set_expiration_time(crt, now + 20 * 86400);
		gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME,
		    0, fqdn, (unsigned)strlen(fqdn));
		gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME,
		    fqdn, (unsigned)strlen(fqdn), GNUTLS_FSAN_SET);
		gnutls_x509_crt_set_key(crt, key);
		gnutls_x509_crt_set_key_usage(
		    crt, GNUTLS_KEY_DIGITAL_SIGNATURE);
		gnutls_x509_crt_set_key_purpose_oid(
		    crt, GNUTLS_KP_TLS_WWW_CLIENT, 0);
		gnutls_x509_crt_set_basic_constraints(crt, 0, -1);
		if (gnutls_x509_crt_sign2(
		        crt, ca, cakey, GNUTLS_DIG_SHA256, 0) < 0 ||
		    gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &c) < 0 ||
		    gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &k) <
		        0) {
			gnutls_free(c.data);
			gnutls_x509_crt_deinit(crt);
			gnutls_x509_privkey_deinit(key);
			goto out;
		}
		/* Write whole, then rename: an interrupted run leaves no
		 * half file behind. */
		snprintf(tmp, sizeof(tmp), "%s.tmp", path);
		if ((f = fopen(tmp, "w")) == NULL) {
			gnutls_free(c.data);
			gnutls_free(k.data);
			gnutls_x509_crt_deinit(crt);
			gnutls_x509_privkey_deinit(key);
			goto out;
		}
		fwrite(c.data, 1, c.size, f);
		fwrite(k.data, 1, k.size, f);
		fclose(f);
		chmod(tmp, 0600); /* it holds a private key */
		rename(tmp, path);
		gnutls_free(c.data);
		gnutls_free(k.data);
		gnutls_x509_crt_deinit(crt);
		gnutls_x509_privkey_deinit(key);
		(*made)++;
	}
	rc = 0;
out:
	gnutls_free(d.data);
	gnutls_x509_privkey_deinit(cakey);
	gnutls_x509_crt_deinit(ca);
	return rc;
}

/* The cache: a PKI (tests/lib/mkpki.sh) and the agents' files. Remade
 * when its CA is more than 10 days old (mkpki's CA lives 30 days). */
static int
cache_open(void)
{
	const char *tmp = getenv("TMPDIR");
	char p[700];
	struct stat st;

	snprintf(cache, sizeof(cache), "%s/rabroker-bench-scale",
	    tmp && *tmp ? tmp : "/tmp");
	snprintf(p, sizeof(p), "%s/pki/ca.pem", cache);
	if (stat(p, &st) == 0 && time(NULL) - st.st_mtime > 10 * 86400) {
		printf(
		    "certificate cache %s is old: making a new one\n", cache);
		tl_rmtree(cache);
	}
	if (mkdir(cache, 0700) != 0 && errno != EEXIST)
		return -1;
	snprintf(p, sizeof(p), "%s/a", cache);
	if (mkdir(p, 0700) != 0 && errno != EEXIST)
		return -1;
	snprintf(p, sizeof(p), "%s/pki", cache);
	if (tl_mkpki(p) != 0)
		return -1;
	snprintf(capath, sizeof(capath), "%s/pki/ca.pem", cache);
	return 0;
}

/* ---- broker helpers ------------------------------------------------------ */

static size_t
vmrss_kib(pid_t pid)
{
	char path[64], line[256];
	size_t kib = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %zu kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* CPU ms (user + system) of the broker's main thread: its event loop
 * (the thread whose id is the process id); the rest of the process's CPU
 * is its handshake, directory, audit and store threads. */
static long
broker_main_cpu_ms(void)
{
	char path[96], buf[2048], *p;
	unsigned long ut, st;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)br.pid,
	    (int)br.pid);
	if (br.pid <= 0 || (f = fopen(path, "r")) == NULL)
		return -1;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (p == NULL || (p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
	        &ut, &st) != 2)
		return -1;
	return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

static long
self_cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec * 1000L + ru.ru_utime.tv_usec / 1000 +
	    ru.ru_stime.tv_sec * 1000L + ru.ru_stime.tv_usec / 1000;
}

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (n < 0 || (buf = calloc(1, (size_t)n + 1)) == NULL) {
		fclose(f);
		return NULL;
	}
	if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	return buf;
}

static int
spit(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	size_t n = strlen(text);

	if (fd < 0)
		return -1;
	if (write(fd, text, n) != (ssize_t)n) {
		close(fd);
		return -1;
	}
	fchmod(fd, mode);
	return close(fd);
}

/* Replaces the first `from` in the configuration with `to`. */
static int
conf_replace(const char *from, const char *to)
{
	char *t = slurp(br.conf), *p, *out;
	int rc;

	if (t == NULL || (p = strstr(t, from)) == NULL) {
		free(t);
		return -1;
	}
	out = malloc(strlen(t) + strlen(to) + 1);
	if (out == NULL) {
		free(t);
		return -1;
	}
	memcpy(out, t, (size_t)(p - t));
	strcpy(out + (p - t), to);
	strcat(out, p + strlen(from));
	rc = spit(br.conf, out, 0644);
	free(out);
	free(t);
	return rc;
}

/* The broker uses the cache's PKI (the agents' CA) and a ticket key. */
static int
conf_adjust(void)
{
	char from[800], to[1600], *key;

	snprintf(from, sizeof(from), "cert = %s/broker.pem", br.pki);
	snprintf(to, sizeof(to), "cert = %s/pki/broker.pem", cache);
	if (conf_replace(from, to) != 0)
		return -1;
	snprintf(from, sizeof(from), "ca = %s/ca.pem\nhandshake_timeout = 5s",
	    br.pki);
	snprintf(to, sizeof(to),
	    "ca = %s/pki/ca.pem\nhandshake_timeout = 10s\n"
	    "max_connections = %d\nlogin_timeout = 120s\n"
	    "max_pending_per_address = 0\n"
	    "ticket_key_file = %s/ticket.key",
	    cache, nagents + 1000, br.dir);
	if (conf_replace(from, to) != 0)
		return -1;
	snprintf(from, sizeof(from), "%s/pki/broker-key.pem", cache);
	if ((key = slurp(from)) == NULL)
		return -1;
	unlink(br.key);
	if (spit(br.key, key, 0600) != 0) {
		free(key);
		return -1;
	}
	free(key);
	return 0;
}

/* ---- the agents ---------------------------------------------------------- */

static void ag_connect(int i);

static void
wheel_put(int i, unsigned delay_ms)
{
	uint64_t t = (now_ms() - t_origin) / TICK_MS;
	uint64_t d = delay_ms / TICK_MS;
	size_t slot;

	if (d < 1)
		d = 1;
	if (d >= WHEEL)
		d = WHEEL - 1;
	if (t < wheel_tick)
		t = wheel_tick;
	slot = (size_t)((t + d) % WHEEL);
	ags[i].wnext = wheel[slot];
	wheel[slot] = (uint32_t)i + 1;
	ags[i].queued = 1;
}

/* As raagent: base * 2^attempt up to the cap, full jitter, a floor. */
static unsigned
backoff_ms(struct ag *a)
{
	uint64_t cap = (uint64_t)cap_s * 1000, d = BACKOFF_BASE_MS;
	uint32_t r = 0;

	for (unsigned i = 0; i < a->attempt && d < cap; i++)
		d *= 2;
	if (d > cap)
		d = cap;
	if (a->attempt < 32)
		a->attempt++;
	gnutls_rnd(GNUTLS_RND_NONCE, &r, sizeof(r));
	d = (uint64_t)r % (d + 1);
	return (unsigned)(d < BACKOFF_FLOOR_MS ? BACKOFF_FLOOR_MS : d);
}

static void
ag_down(int i)
{
	struct ag *a = &ags[i];

	if (a->state == A_UP)
		nup--;
	else if (a->state != A_WAIT)
		inflight--;
	a->state = A_WAIT;
	if (!finishing)
		wheel_put(i, backoff_ms(a));
}

/* Due now: behind the others that wait for an in-flight place. */
static void
rq_put(int i)
{
	rq[(rq_head + rq_len) % (size_t)nagents] = (uint32_t)i;
	rq_len++;
	ags[i].queued = 1;
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
	uint64_t t = (now_ms() - t_origin) / TICK_MS;

	(void)fd;
	(void)what;
	(void)arg;
	while (wheel_tick < t) {
		size_t slot = (size_t)((wheel_tick + 1) % WHEEL);
		uint32_t head = wheel[slot];

		wheel[slot] = 0;
		while (head != 0) {
			int i = (int)head - 1;

			head = ags[i].wnext;
			ags[i].wnext = 0;
			rq_put(i);
		}
		wheel_tick++;
	}
	while (rq_len > 0 && inflight < conc) {
		int i = (int)rq[rq_head];

		rq_head = (rq_head + 1) % (size_t)nagents;
		rq_len--;
		ags[i].queued = 0;
		if (ags[i].state == A_WAIT)
			ag_connect(i);
	}
}

static void
p_close(struct rp_conn *c, const char *why, void *ctx)
{
	int i = (int)(intptr_t)ctx;
	struct ag *a = &ags[i];

	(void)why;
	if (a->conn == c) {
		a->conn = NULL;
		rp_conn_unref(c);
	}
	ph_closed++;
	ag_down(i);
}

static const struct rp_conn_cbs p_cbs = {.on_close = p_close};

static void
h_ignore(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	(void)params;
	(void)ctx;
	if (id != NULL)
		rp_conn_reply(c, id, json_object());
}

#define ALL (RP_ST_ANY | RP_ST_NEW)
static const struct rp_method agent_methods[] = {
    {"novice.prompt", ALL, NULL, RP_M_NOTIFY_OK, h_ignore},
    {"ticket.connect", ALL, NULL, RP_M_NOTIFY_OK, h_ignore},
    {"ticket.revoked", ALL, NULL, RP_M_NOTIFY_OK, h_ignore},
    {"control.prompt", ALL, NULL, RP_M_NOTIFY_OK, h_ignore},
};

static void
registered_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	int i = (int)(intptr_t)arg;
	struct ag *a = &ags[i];
	void *s = NULL;
	size_t sl = 0;

	(void)res;
	if (a->conn != c || a->state != A_REG)
		return;
	if (code != 0) {
		ph_reg_fail++;
		rp_conn_close(c, "register failed");
		return;
	}
	inflight--;
	nup++;
	a->state = A_UP;
	a->attempt = 0;
	/* The ticket came right after the handshake, before this reply. */
	if (use_tickets &&
	    rp_tls_get_session_data(rp_conn_tls(c), &s, &sl) == 0) {
		free(a->sess);
		a->sess = s;
		a->sesslen = (uint32_t)sl;
	}
}

static void
hello_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	int i = (int)(intptr_t)arg;
	struct ag *a = &ags[i];
	char fqdn[64];

	(void)res;
	if (a->conn != c || a->state != A_HELLO)
		return;
	if (code != 0) {
		ph_reg_fail++;
		rp_conn_close(c, "hello failed");
		return;
	}
	a->state = A_REG;
	snprintf(fqdn, sizeof(fqdn), "bench-%06d.corp.example", i);
	rp_conn_call(c, "agent.register",
	    json_pack("{s:s, s:[s], s:[{s:s, s:s, s:s, s:b}]}", "fqdn", fqdn,
	        "addresses", "127.0.0.1", "sessions", "id", "1", "user",
	        "CORP\\bob", "kind", "graphical", "locked", 0),
	    30000, registered_cb, arg);
}

static void
t_ready(struct rp_tls *t, void *arg)
{
	int i = (int)(intptr_t)arg;
	struct ag *a = &ags[i];
	struct rp_conn_opts o = {
	    .methods = agent_methods,
	    .nmethods = sizeof(agent_methods) / sizeof(agent_methods[0]),
	    .cbs = &p_cbs,
	    .ctx = arg,
	};

	a->tls = NULL;
	if (rp_tls_resumed(t))
		ph_resumed++;
	else
		ph_full++;
	a->conn = rp_conn_new_tls(base, t, &o);
	if (a->conn == NULL) {
		rp_tls_close(t);
		return;
	}
	a->state = A_HELLO;
	rp_conn_call(a->conn, "hello",
	    json_pack("{s:i, s:s, s:s}", "version", 1, "role", "agent",
	        "software", "bench_scale/0"),
	    30000, hello_cb, arg);
}

static void
t_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	int i = (int)(intptr_t)arg;
	struct ag *a = &ags[i];

	(void)t;
	(void)why;
	(void)msg;
	if (ph_tls_fail < 3 && !finishing)
		fprintf(stderr, "bench_scale: agent %d: TLS: %s\n", i,
		    msg ? msg : "");
	a->tls = NULL;
	ph_tls_fail++;
	/* A ticket the broker refused is not worth offering again. */
	if (why == RP_TLS_CLOSED_VERIFY) {
		free(a->sess);
		a->sess = NULL;
		a->sesslen = 0;
	}
	ag_down(i);
}

static const struct rp_tls_cbs t_cbs = {
    .on_ready = t_ready,
    .on_close = t_close,
};

static void
ag_connect(int i)
{
	struct ag *a = &ags[i];
	struct sockaddr_in dst, src;
	struct rp_tls_connect_extra x;

	if (a->tctx == NULL) {
		struct rp_tls_opts o;
		char file[700], err[512];

		memset(&o, 0, sizeof(o));
		agent_file(i, file, sizeof(file));
		o.role = RP_TLS_CLIENT;
		o.ca_file = capath;
		o.cert_file = file;
		o.key_file = file;
		o.handshake_timeout_ms = 30000;
		o.session_resumption = 1;
		if ((a->tctx = rp_tls_ctx_new(&o, err, sizeof(err))) == NULL) {
			fprintf(stderr, "bench_scale: agent %d: %s\n", i, err);
			ph_tls_fail++;
			return; /* stays A_WAIT, not queued: counted lost */
		}
	}
	memset(&dst, 0, sizeof(dst));
	dst.sin_family = AF_INET;
	dst.sin_port = htons((uint16_t)br.port);
	dst.sin_addr.s_addr = htonl(0x7f000001);
	memset(&src, 0, sizeof(src));
	src.sin_family = AF_INET;
	src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(2 + i % nsrc));
	memset(&x, 0, sizeof(x));
	x.src = (struct sockaddr *)&src;
	x.srclen = sizeof(src);
	if (use_tickets && a->sess != NULL) {
		x.session = a->sess;
		x.session_len = a->sesslen;
	}
	a->state = A_TLS;
	inflight++;
	a->tls = rp_tls_connect_ex(a->tctx, base, (struct sockaddr *)&dst,
	    sizeof(dst), "localhost", &x, &t_cbs, (void *)(intptr_t)i);
	if (a->tls == NULL) {
		ph_tls_fail++;
		ag_down(i);
	}
}

/* ---- keepalive: one cursor, pings spread over the interval ------------- */

static void
ping_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	(void)res;
	(void)arg;
	if (code == 0) {
		pings_ok++;
		return;
	}
	pings_fail++;
	if (code == RP_ERR_TIMEOUT)
		rp_conn_close(c, "ping timeout");
}

static void
on_keepalive(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = now_ms();
	uint64_t due =
	    (now - ka_last) * (uint64_t)nagents / ((uint64_t)keepalive * 1000);

	(void)fd;
	(void)what;
	(void)arg;
	if (due == 0)
		return;
	ka_last = now;
	for (uint64_t k = 0; k < due && k < (uint64_t)nagents; k++) {
		struct ag *a = &ags[ka_cursor];

		if (a->state == A_UP && a->conn != NULL &&
		    rp_conn_call(a->conn, "ping", json_object(),
		        (unsigned)keepalive * 1000, ping_cb, NULL) == 0)
			pings_sent++;
		ka_cursor = (ka_cursor + 1) % (uint32_t)nagents;
	}
}

/* ---- TLS alone: full vs resumed handshakes ---------------------------------- */

/* Handshake-only connections with the first agents' credentials: the
 * broker does accept + TLS (+ its peer record), nothing else; closed as
 * soon as they are ready. Up to 32 in flight. */
static int hs_left, hs_inflight, hs_done, hs_resumed, hs_failed, hs_next;
static int hs_with_ticket;

static void hs_start(void);

static void
hs_ready(struct rp_tls *t, void *arg)
{
	(void)arg;
	hs_done++;
	hs_resumed += rp_tls_resumed(t);
	rp_tls_close(t);
}

static void
hs_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	(void)t;
	(void)msg;
	(void)arg;
	if (why != RP_TLS_CLOSED_LOCAL)
		hs_failed++;
	hs_inflight--;
	hs_start();
}

static const struct rp_tls_cbs hs_cbs = {
    .on_ready = hs_ready, .on_close = hs_close};

static void
hs_start(void)
{
	while (hs_left > 0 && hs_inflight < 32) {
		struct ag *a = &ags[hs_next++ % nagents];
		struct sockaddr_in dst, src;
		struct rp_tls_connect_extra x;

		if (a->tctx == NULL)
			continue;
		hs_left--;
		memset(&dst, 0, sizeof(dst));
		dst.sin_family = AF_INET;
		dst.sin_port = htons((uint16_t)br.port);
		dst.sin_addr.s_addr = htonl(0x7f000001);
		memset(&src, 0, sizeof(src));
		src.sin_family = AF_INET;
		src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(2 + nsrc));
		memset(&x, 0, sizeof(x));
		x.src = (struct sockaddr *)&src;
		x.srclen = sizeof(src);
		if (hs_with_ticket && a->sess != NULL) {
			x.session = a->sess;
			x.session_len = a->sesslen;
		}
		if (rp_tls_connect_ex(a->tctx, base, (struct sockaddr *)&dst,
		        sizeof(dst), "localhost", &x, &hs_cbs, NULL) == NULL)
			hs_failed++;
		else
			hs_inflight++;
	}
}

static int
hs_all_done(void *arg)
{
	(void)arg;
	return hs_left == 0 && hs_inflight == 0;
}

/* m handshakes; returns the broker's CPU ms per handshake, less its
 * background rate (keepalives) bg_ms_per_s; *main_ms: the same for its
 * main thread (background bg_main_per_s). */
static double
hs_measure(int m, int with_ticket, double bg_ms_per_s, double bg_main_per_s,
    double *per_s, int *resumed, double *main_ms)
{
	long c0 = tl_broker_cpu_ms(&br), c1;
	long mc0 = broker_main_cpu_ms(), mc1;
	uint64_t t0 = now_ms();
	double secs, cpu;

	hs_left = m;
	hs_inflight = hs_done = hs_resumed = hs_failed = 0;
	hs_next = 0;
	hs_with_ticket = with_ticket;
	hs_start();
	tl_run_until(base, hs_all_done, NULL, 120000);
	c1 = tl_broker_cpu_ms(&br);
	mc1 = broker_main_cpu_ms();
	secs = (now_ms() - t0) / 1e3;
	cpu = (double)(c1 - c0) - bg_ms_per_s * secs;
	*main_ms = hs_done
	    ? ((double)(mc1 - mc0) - bg_main_per_s * secs) / hs_done
	    : 0;
	*per_s = hs_done / secs;
	*resumed = hs_resumed;
	return hs_done ? cpu / hs_done : 0;
}

/* ---- the helper ------------------------------------------------------------ */

struct helper {
	struct rp_tls_ctx *tctx;
	struct rp_conn *conn;
	int state; /* 0 connecting, 1 ready, 2 logged in, -1 failed */
	int pending;
	uint64_t t0, lat_us;
	int count, truncated;
};
static struct helper hp;

static void
hp_close(struct rp_conn *c, const char *why, void *ctx)
{
	(void)why;
	(void)ctx;
	if (hp.conn == c) {
		hp.conn = NULL;
		rp_conn_unref(c);
	}
	hp.state = -1;
}
static const struct rp_conn_cbs hp_cbs = {.on_close = hp_close};
static const struct rp_method hp_methods[] = {
    {"offer.update", ALL, NULL, RP_M_NOTIFY_OK, h_ignore},
};

static void
hp_auth_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	(void)c;
	(void)arg;
	hp.state = code == 0 && json_is_string(json_object_get(res, "account"))
	    ? 2
	    : -1;
}

static void
hp_hello_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	unsigned char buf[] = "\0alice\0alice-pw";
	char *b64 = az_sasl_b64_encode(buf, sizeof(buf) - 1);

	(void)res;
	(void)arg;
	if (code != 0) {
		hp.state = -1;
		free(b64);
		return;
	}
	rp_conn_call(c, "auth.start",
	    json_pack("{s:s, s:s}", "mechanism", "PLAIN", "initial", b64),
	    15000, hp_auth_cb, NULL);
	free(b64);
}

static void
hp_ready(struct rp_tls *t, void *arg)
{
	struct rp_conn_opts o = {
	    .methods = hp_methods,
	    .nmethods = 1,
	    .cbs = &hp_cbs,
	};

	(void)arg;
	hp.conn = rp_conn_new_tls(base, t, &o);
	if (hp.conn == NULL) {
		hp.state = -1;
		return;
	}
	hp.state = 1;
	rp_conn_call(hp.conn, "hello",
	    json_pack("{s:i, s:s}", "version", 1, "role", "helper"), 15000,
	    hp_hello_cb, NULL);
}

static void
hp_tclose(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	(void)t;
	(void)why;
	(void)arg;
	fprintf(stderr, "bench_scale: helper TLS: %s\n", msg ? msg : "");
	hp.state = -1;
}
static const struct rp_tls_cbs hp_tcbs = {
    .on_ready = hp_ready, .on_close = hp_tclose};

static int
hp_settled(void *arg)
{
	(void)arg;
	return hp.state == 2 || hp.state == -1;
}

static void
list_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	(void)c;
	(void)arg;
	hp.lat_us = (tl_now_ms() - hp.t0) * 1000;
	hp.pending = 0;
	if (code != 0) {
		hp.count = -1;
		return;
	}
	hp.count = (int)json_array_size(json_object_get(res, "machines"));
	hp.truncated = json_is_true(json_object_get(res, "truncated"));
}

static int
hp_answered(void *arg)
{
	(void)arg;
	return !hp.pending;
}

static int
helper_login(void)
{
	struct rp_tls_opts o;
	struct sockaddr_storage ss;
	char err[512];
	int sl;

	memset(&o, 0, sizeof(o));
	o.role = RP_TLS_CLIENT;
	o.ca_file = capath;
	if ((hp.tctx = rp_tls_ctx_new(&o, err, sizeof(err))) == NULL)
		return -1;
	sl = tl_loopback((struct sockaddr *)&ss, 0, (uint16_t)br.port);
	if (rp_tls_connect(hp.tctx, base, (struct sockaddr *)&ss, sl,
	        "localhost", &hp_tcbs, NULL) == NULL)
		return -1;
	tl_run_until(base, hp_settled, NULL, 30000);
	return hp.state == 2 ? 0 : -1;
}

/* n machines.list calls; *p50 and *max in ms (precise to the loop). */
static int
time_list(
    const char *filter, int n, double *med, double *max, int *count, int *trunc)
{
	double v[64];
	struct timespec a, b;

	if (n > 64)
		n = 64;
	for (int k = 0; k < n; k++) {
		json_t *params = filter ? json_pack("{s:s}", "filter", filter)
		                        : json_object();
		hp.pending = 1;
		hp.t0 = tl_now_ms();
		clock_gettime(CLOCK_MONOTONIC, &a);
		if (hp.conn == NULL ||
		    rp_conn_call(hp.conn, "machines.list", params, 30000,
		        list_cb, NULL) != 0)
			return -1;
		tl_run_until(base, hp_answered, NULL, 31000);
		clock_gettime(CLOCK_MONOTONIC, &b);
		if (hp.pending || hp.count < 0)
			return -1;
		v[k] =
		    (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
	}
	for (int x = 1; x < n; x++)
		for (int y = x; y > 0 && v[y] < v[y - 1]; y--) {
			double t = v[y];
			v[y] = v[y - 1];
			v[y - 1] = t;
		}
	*med = v[n / 2];
	*max = v[n - 1];
	*count = hp.count;
	*trunc = hp.truncated;
	return 0;
}

/* ---- phases ------------------------------------------------------------------ */

static int
all_up(void *arg)
{
	(void)arg;
	return nup >= nagents;
}

static void
phase_reset(void)
{
	ph_full = ph_resumed = ph_tls_fail = ph_closed = ph_reg_fail = 0;
}

struct restart_res {
	double total_s, since_ready_s, down_ms;
	long full, resumed, tls_fail, cpu_ms, main_ms;
	int up;
};

/* SIGTERM, wait for the exit (running our loop: the agents see the drain
 * and start their backoff), start again, wait for every agent (recorded
 * by perf as DIR/TAG.data with TL_PERF_DIR). */
static int
do_restart(struct restart_res *r, const char *tag)
{
	uint64_t t0, t_exit, t_ready, end;
	int st;
	pid_t pid = br.pid;

	memset(r, 0, sizeof(*r));
	phase_reset();
	t0 = now_ms();
	kill(pid, SIGTERM);
	end = t0 + 60000;
	for (;;) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			break;
		if (now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(2000);
	}
	br.pid = 0;
	t_exit = now_ms();
	r->down_ms = (double)(t_exit - t0);
	/* tl_broker_start blocks while the daemon starts (a few hundred
	 * ms): agents whose timers fall due meanwhile connect right after,
	 * as real agents retrying on refusals would. */
	if (tl_broker_start(&br) != 0) {
		fprintf(
		    stderr, "bench_scale: restart failed (log %s)\n", br.log);
		return -1;
	}
	t_ready = now_ms();
	tl_broker_perf_start(&br, tag);
	tl_run_until(base, all_up, NULL, (unsigned)tlimit * 1000);
	tl_broker_perf_stop();
	r->up = nup;
	r->total_s = (now_ms() - t0) / 1e3;
	r->since_ready_s = (now_ms() - t_ready) / 1e3;
	r->full = ph_full;
	r->resumed = ph_resumed;
	r->tls_fail = ph_tls_fail;
	r->cpu_ms = tl_broker_cpu_ms(&br);
	r->main_ms = broker_main_cpu_ms();
	return 0;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: bench_scale [-n agents] [-c in flight] [-k keepalive s] "
	    "[-i idle s] [-b backoff cap s] [-s sources] [-t s] [-F] [-x] "
	    "[-C] [-H handshake threads]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct tl_slapd slapd;
	struct tl_broker_opts bo;
	struct restart_res r1, r2;
	size_t rss0, rss1, rss2, gen_rss0, gen_rss1;
	long cpu0, cpu1, cpu2, gcpu0, gcpu1, mcpu0, mcpu1, mcpu2;
	int hs_threads = -1; /* -H; -1: the broker's default */
	char extra[128] = "", hs_desc[24] = "default";
	uint64_t t0;
	double conn_s, lm = 0, lx = 0, fm = 0, fx = 0;
	int ch, made, lcount = 0, ltrunc = 0, fcount = 0, ftrunc = 0;
	int have_list = 0, rc = 1, hs_m = 0, hs_full_n = 0, hs_res_n = 0;
	double hs_full_ms = 0, hs_res_ms = 0, hs_full_rate = 0, hs_res_rate = 0;
	double hs_full_main = 0, hs_res_main = 0;
	struct timeval tick = {0, TICK_MS * 1000}, kat = {0, 100000};

	while ((ch = getopt(argc, argv, "n:c:k:i:b:s:t:FxCH:")) != -1) {
		switch (ch) {
		case 'n':
			nagents = atoi(optarg);
			break;
		case 'c':
			conc = atoi(optarg);
			break;
		case 'k':
			keepalive = atoi(optarg);
			break;
		case 'i':
			idle_s = atoi(optarg);
			break;
		case 'b':
			cap_s = atoi(optarg);
			break;
		case 's':
			nsrc = atoi(optarg);
			break;
		case 't':
			tlimit = atoi(optarg);
			break;
		case 'F':
			full_restart = 1;
			break;
		case 'x':
			no_dir = 1;
			break;
		case 'C':
			certs_only = 1;
			break;
		case 'H':
			hs_threads = atoi(optarg);
			break;
		default:
			usage();
		}
	}
	if (nagents < 1 || nagents > MAX_AGENTS || conc < 1 || conc > 10000 ||
	    keepalive < 1 || keepalive > 3600 || idle_s < 0 || idle_s > 3600 ||
	    cap_s < 1 || cap_s > 9 || nsrc < 1 || nsrc > 250 || tlimit < 10 ||
	    tlimit > 7200)
		usage();
	log_init("bench_scale", LOG_LVL_WARN, 0);
	signal(SIGPIPE, SIG_IGN);
	/* One descriptor per agent here and in the broker, plus a few. */
	if (tl_raise_nofile(nagents + 4096) < nagents + 256) {
		struct rlimit rl;
		rl.rlim_cur = rl.rlim_max = (rlim_t)nagents + 4096;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			getrlimit(RLIMIT_NOFILE, &rl);
			fprintf(stderr,
			    "bench_scale: %d agents need %d descriptors per "
			    "process; the hard limit is %llu and cannot be "
			    "raised here (needs CAP_SYS_RESOURCE, or ulimit "
			    "-Hn / LimitNOFILE= beforehand): use -n %llu at "
			    "most\n",
			    nagents, nagents + 256,
			    (unsigned long long)rl.rlim_max,
			    rl.rlim_max > 256
			        ? (unsigned long long)rl.rlim_max - 256
			        : 0ull);
			return 1;
		}
	}
	if ((ags = calloc((size_t)nagents, sizeof(*ags))) == NULL ||
	    (rq = calloc((size_t)nagents, sizeof(*rq))) == NULL)
		return 1;
	base = event_base_new();
	if (cache_open() != 0) {
		fprintf(stderr, "bench_scale: cache directory failed\n");
		return 1;
	}
	t0 = now_ms();
	if (make_certs(nagents, &made) != 0) {
		fprintf(stderr, "bench_scale: certificates failed\n");
		return 1;
	}
	printf("agent certificates: %d made, %d from the cache %s (%.1f s)\n",
	    made, nagents - made, cache, (now_ms() - t0) / 1e3);
	if (certs_only)
		return 0;

	memset(&slapd, 0, sizeof(slapd));
	if (!no_dir && tl_slapd_start(NULL, &slapd) != 0) {
		fprintf(stderr, "bench_scale: slapd did not start\n");
		return 1;
	}
	memset(&bo, 0, sizeof(bo));
	bo.slapd = no_dir ? NULL : &slapd;
	bo.policy = "allow control group \"CORP\\helpdesk\" on all\n";
	bo.keepalive_s = (unsigned)keepalive;
	bo.drain_timeout_s = 30;
	{
		struct rlimit rl;
		getrlimit(RLIMIT_NOFILE, &rl);
		bo.nofile = (unsigned)rl.rlim_cur;
	}
	bo.log_level = "warn";
	if (hs_threads >= 0) {
		snprintf(extra, sizeof(extra),
		    "\n[broker]\nhandshake_threads = %d\n", hs_threads);
		bo.extra = extra;
		snprintf(hs_desc, sizeof(hs_desc), "%d", hs_threads);
	}
	if (tl_broker_setup(&br, &bo) != 0 || conf_adjust() != 0) {
		fprintf(stderr, "bench_scale: broker setup failed\n");
		goto out;
	}
	if (tl_broker_start(&br) != 0) {
		fprintf(stderr, "bench_scale: rabrokerd did not start: %s\n",
		    br.log);
		goto out;
	}
	t_origin = now_ms();
	tick_ev = event_new(base, -1, EV_PERSIST, on_tick, NULL);
	ka_ev = event_new(base, -1, EV_PERSIST, on_keepalive, NULL);
	event_add(tick_ev, &tick);
	ka_last = now_ms();
	event_add(ka_ev, &kat);

	/* 1. connect + register. */
	rss0 = vmrss_kib(br.pid);
	gen_rss0 = tl_rss_bytes() / 1024;
	cpu0 = tl_broker_cpu_ms(&br);
	mcpu0 = broker_main_cpu_ms();
	gcpu0 = self_cpu_ms();
	phase_reset();
	t0 = now_ms();
	for (int i = 0; i < nagents; i++)
		rq_put(i);
	tl_run_until(base, all_up, NULL, (unsigned)tlimit * 1000);
	conn_s = (now_ms() - t0) / 1e3;
	cpu1 = tl_broker_cpu_ms(&br);
	mcpu1 = broker_main_cpu_ms();
	gcpu1 = self_cpu_ms();
	rss1 = vmrss_kib(br.pid);
	printf("phase 1: %d/%d agents registered in %.1f s (%ld full, %ld "
	       "resumed handshakes, %ld TLS failures, %ld closes)\n",
	    nup, nagents, conn_s, ph_full, ph_resumed, ph_tls_fail, ph_closed);
	fflush(stdout);
	if (nup < nagents)
		goto out;

	/* 2. idle with keepalives. */
	pings_sent = pings_ok = pings_fail = 0;
	tl_run_until(base, NULL, NULL, (unsigned)idle_s * 1000);
	cpu2 = tl_broker_cpu_ms(&br);
	mcpu2 = broker_main_cpu_ms();
	rss2 = vmrss_kib(br.pid);
	gen_rss1 = tl_rss_bytes() / 1024;
	printf("phase 2: idle %d s: %ld pings sent, %ld answered, %ld failed, "
	       "%d agents up\n",
	    idle_s, pings_sent, pings_ok, pings_fail, nup);
	fflush(stdout);

	/* 2b. TLS alone. */
	{
		double bg = idle_s ? (double)(cpu2 - cpu1) / idle_s : 0;
		double bgm = idle_s ? (double)(mcpu2 - mcpu1) / idle_s : 0;
		int m = nagents < 2000 ? nagents : 2000;
		hs_full_ms = hs_measure(
		    m, 0, bg, bgm, &hs_full_rate, &hs_full_n, &hs_full_main);
		hs_res_ms = hs_measure(
		    m, 1, bg, bgm, &hs_res_rate, &hs_res_n, &hs_res_main);
		hs_m = m;
		printf("phase 2b: %d TLS-only handshakes each way: full %.3f "
		       "ms broker CPU, resumed (%d of %d) %.3f ms\n",
		    m, hs_full_ms, hs_res_n, m, hs_res_ms);
		fflush(stdout);
	}

	/* 3. machines.list. */
	if (!no_dir) {
		if (helper_login() != 0)
			fprintf(stderr, "bench_scale: helper login failed\n");
		else {
			tl_broker_perf_start(&br, "list");
			if (time_list(NULL, 21, &lm, &lx, &lcount, &ltrunc) ==
			        0 &&
			    time_list("bench-000042.", 21, &fm, &fx, &fcount,
			        &ftrunc) == 0)
				have_list = 1;
			tl_broker_perf_stop();
		}
	}

	/* 4. restart with tickets; 5. restart with a new ticket key. */
	if (do_restart(&r1, "restart") != 0)
		goto out;
	printf("phase 4: restart: %d/%d back in %.1f s (%ld resumed, %ld "
	       "full, %ld TLS failures)\n",
	    r1.up, nagents, r1.total_s, r1.resumed, r1.full, r1.tls_fail);
	fflush(stdout);
	if (full_restart && r1.up == nagents) {
		char kf[700];
		snprintf(kf, sizeof(kf), "%s/ticket.key", br.dir);
		/* The running broker has read it; the next makes a new one. */
		unlink(kf);
		if (do_restart(&r2, "restart-newkey") != 0)
			goto out;
		printf("phase 5: restart, new ticket key: %d/%d back in %.1f "
		       "s (%ld resumed, %ld full)\n",
		    r2.up, nagents, r2.total_s, r2.resumed, r2.full);
	}

	/* The table. */
	printf("\nbench_scale: %d agents, TLS 1.3 ECDSA P-256, %d in flight, "
	       "keepalive %d s, %d source addresses, %ld CPUs shared by "
	       "broker and generator%s, handshake_threads %s\n",
	    nagents, conc, keepalive, nsrc, sysconf(_SC_NPROCESSORS_ONLN),
	    no_dir ? ", no directory" : ", slapd directory", hs_desc);
	printf("%-52s %14s\n", "figure (measured)", "value");
	printf("%-52s %14.1f\n", "connect+register, all agents (s)", conn_s);
	printf("%-52s %14.0f\n", "connect+register rate (agents/s)",
	    nagents / conn_s);
	printf("%-52s %14.3f\n", "broker CPU per full connect+register (ms)",
	    (double)(cpu1 - cpu0) / nagents);
	printf("%-52s %14.3f\n", "  of which main thread (event loop) (ms)",
	    (double)(mcpu1 - mcpu0) / nagents);
	printf("%-52s %14.3f\n", "generator CPU per full connect+register (ms)",
	    (double)(gcpu1 - gcpu0) / nagents);
	printf("%-52s %14.0f\n",
	    "broker full handshakes/s per CPU (1000/CPU ms)",
	    1000.0 / ((double)(cpu1 - cpu0) / nagents));
	printf("%-52s %14.3f\n", "TLS only: broker CPU per full handshake (ms)",
	    hs_full_ms);
	printf("%-52s %14.3f\n",
	    "TLS only: broker CPU per resumed handshake (ms)", hs_res_ms);
	printf("%-52s %8.3f / %.3f\n",
	    "TLS only: main thread per full / resumed (ms)", hs_full_main,
	    hs_res_main);
	printf("%-52s %8d of %d\n", "TLS only: resumed", hs_res_n, hs_m);
	printf("%-52s %14.0f\n", "TLS only: full handshakes/s per broker CPU",
	    hs_full_ms > 0 ? 1000 / hs_full_ms : 0);
	printf("%-52s %14.0f\n",
	    "TLS only: resumed handshakes/s per broker CPU",
	    hs_res_ms > 0 ? 1000 / hs_res_ms : 0);
	printf("%-52s %8.0f / %.0f\n",
	    "TLS only: measured rate full / resumed (conn/s)", hs_full_rate,
	    hs_res_rate);
	printf("%-52s %14zu\n", "broker VmRSS before agents (KiB)", rss0);
	printf("%-52s %14zu\n", "broker VmRSS, all registered (KiB)", rss1);
	printf("%-52s %14zu\n", "broker VmRSS after idle (KiB)", rss2);
	printf("%-52s %14.0f\n", "broker RSS per agent (bytes)",
	    (double)(rss2 - rss0) * 1024 / nagents);
	printf("%-52s %14.1f\n", "broker CPU idle with keepalives (ms/s)",
	    idle_s ? (double)(cpu2 - cpu1) / idle_s : 0);
	printf("%-52s %14.0f\n", "generator RSS per agent (bytes)",
	    (double)(gen_rss1 - gen_rss0) * 1024 / nagents);
	if (have_list) {
		printf("%-52s %14.2f\n", "machines.list p50 (ms)", lm);
		printf("%-52s %14.2f\n", "machines.list max (ms)", lx);
		printf("%-52s %8d%s\n", "  machines returned", lcount,
		    ltrunc ? " (truncated)" : "");
		printf("%-52s %14.2f\n",
		    "machines.list filter, scans all, p50 (ms)", fm);
		printf("%-52s %14.2f\n", "machines.list filter max (ms)", fx);
	}
	printf("%-52s %14.1f\n", "restart: SIGTERM to all registered (s)",
	    r1.total_s);
	printf("%-52s %14.1f\n", "restart: broker ready to all registered (s)",
	    r1.since_ready_s);
	printf("%-52s %14.0f\n", "restart: drain + exit (ms)", r1.down_ms);
	printf("%-52s %8ld / %ld\n", "restart: resumed / full handshakes",
	    r1.resumed, r1.full);
	printf("%-52s %14.3f\n", "restart: broker CPU per agent (ms)",
	    (double)r1.cpu_ms / nagents);
	printf("%-52s %14.3f\n", "  of which main thread (event loop) (ms)",
	    (double)r1.main_ms / nagents);
	if (full_restart) {
		printf("%-52s %14.1f\n",
		    "restart, new ticket key: SIGTERM to all (s)", r2.total_s);
		printf("%-52s %8ld / %ld\n",
		    "restart, new key: resumed / full handshakes", r2.resumed,
		    r2.full);
		printf("%-52s %14.3f\n",
		    "restart, new key: broker CPU per agent (ms)",
		    (double)r2.cpu_ms / nagents);
		printf("%-52s %14.3f\n",
		    "  of which main thread (event loop) (ms)",
		    (double)r2.main_ms / nagents);
	}
	if (nagents < 100000) {
		double full = (double)(cpu1 - cpu0) / nagents;
		double res = (double)r1.cpu_ms / nagents;
		printf("%-52s %14s\n", "EXTRAPOLATED to 100,000 agents", "");
		printf("%-52s %14.0f\n", "  broker RSS (MiB)",
		    (rss0 + (double)(rss2 - rss0) * 100000 / nagents) / 1024);
		printf("%-52s %14.0f\n", "  broker CPU, 100k full connects (s)",
		    full * 100);
		printf("%-52s %14.0f\n",
		    "  broker CPU, 100k resumed reconnects (s)", res * 100);
		printf("%-52s %14.0f\n",
		    "  main thread CPU, 100k resumed reconnects (s)",
		    (double)r1.main_ms / nagents * 100);
	}
	rc = r1.up == nagents ? 0 : 1;
out:
	finishing = 1;
	for (int i = 0; i < nagents; i++)
		if (ags[i].conn != NULL)
			rp_conn_close(ags[i].conn, "bench done");
	if (hp.conn != NULL)
		rp_conn_close(hp.conn, "bench done");
	tl_run_until(base, NULL, NULL, 300);
	tl_broker_destroy(&br);
	if (!no_dir)
		tl_slapd_destroy(&slapd);
	return rc;
}
