/*
 * bench_offer.c - offers per second and consent latency through a real
 * rabrokerd (tests/lib/tl_broker.h) with a real slapd for the helper's
 * login.
 *
 * Set-up: N agent machine certificates (ECDSA P-256, SAN dNSName
 * bench-NNNN.corp.example) are issued in-process with GnuTLS from the test
 * CA, so the broker keys every agent by a real certificate identity; N
 * agents connect and register (one graphical session each); one helper
 * logs in with SASL PLAIN (verified against slapd).
 *
 * Measurement: up to C offers in flight, each on a different machine. For
 * each: offer.create -> novice.prompt received by the agent (which answers
 * "accept" at once) -> ticket.connect received by the agent and
 * offer.update "accepted" received by the helper (both follow the durable
 * write of "accepted"); the helper then cancels the ticket (offer.cancel)
 * so that open tickets do not pile up. Reported: offers completed per
 * second, and p50/p99 of create->prompt, create->ticket.connect (the agent
 * told to connect) and create->accepted (the helper told), p90/max of the
 * last.
 *
 * Also reported: the broker's CPU per offer (whole process, and its main
 * thread: the event loop) and the load average. With TL_PERF_DIR set, the
 * measurement is recorded by perf into TL_PERF_DIR/offer.data
 * (tl_broker_perf_start).
 *
 * Bounded: -n agents (default 1000, max 5000), -o offers (default 2000,
 * max 100000), -c in flight (default 16), -t seconds (default 60). Loopback
 * only. The audit trail is synced as in production (group commit); the broker's
 * log level is info.
 *
 *   build/bench/tests/bench_offer [-n 1000] [-o 2000] [-c 16] [-t 60]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "az_sasl.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_log.h"
#include "rp_tls.h"
#include "tl_broker.h"
#include "tl_slapd.h"
#include "tl_util.h"

#define MAX_AGENTS 5000
#define MAX_OFFERS 100000
#define MAX_INFLIGHT 256

struct peer {
	int idx; /* agent index, -1 for the helper */
	struct rp_tls_ctx *tctx;
	struct rp_tls *tls;
	struct rp_conn *conn;
	int ready, closed, registered, busy;
	char fqdn[64];
};

struct op {
	int used;
	int agent;
	uint64_t t0, t_prompt, t_acc, t_conn;
	char ticket[33];
};

static struct event_base *base;
static struct tl_broker br;
static struct peer agents[MAX_AGENTS];
static struct peer helper;
static int nagents = 1000, noffers = 2000, inflight = 16, tlimit = 60;
static struct op ops[MAX_INFLIGHT];
static int started, completed, failed, nregistered, nready;
static uint64_t *lat_prompt, *lat_acc, *lat_conn;
static int next_agent;
static char keydir[600];
static int finishing;

static uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

/* ---- certificates --------------------------------------------------------- */

static int
load_file(const char *path, gnutls_datum_t *d)
{
	return gnutls_load_file(path, d) < 0 ? -1 : 0;
}

/* 0600: private keys others may read are refused (rp_tls). */
static int
write_pem(const char *path, const gnutls_datum_t *d)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (f == NULL) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	fwrite(d->data, 1, d->size, f);
	return fclose(f);
}

/* Issues bench-NNNN.corp.example certificates signed by the test CA. */
static int
make_certs(const char *pki, const char *dir, int n)
{
	gnutls_x509_crt_t ca;
	gnutls_x509_privkey_t cakey;
	gnutls_datum_t d;
	char path[700];
	time_t now = time(NULL);
	int i, rc = -1;

	snprintf(path, sizeof(path), "%s/ca.pem", pki);
	if (load_file(path, &d) < 0)
		return -1;
	gnutls_x509_crt_init(&ca);
	if (gnutls_x509_crt_import(ca, &d, GNUTLS_X509_FMT_PEM) < 0)
		goto out_ca;
	gnutls_free(d.data);
	snprintf(path, sizeof(path), "%s/ca-key.pem", pki);
	if (load_file(path, &d) < 0)
		goto out_ca;
	gnutls_x509_privkey_init(&cakey);
	if (gnutls_x509_privkey_import(cakey, &d, GNUTLS_X509_FMT_PEM) < 0)
		goto out_key;
	for (i = 0; i < n; i++) {
		gnutls_x509_crt_t crt;
		gnutls_x509_privkey_t key;
		gnutls_datum_t out;
		char fqdn[64];
		unsigned char serial[8];

		snprintf(fqdn, sizeof(fqdn), "bench-%04d.corp.example", i);
		gnutls_x509_privkey_init(&key);
		if (gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
		        GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
		        0) < 0)
			goto out_key;
		gnutls_x509_crt_init(&crt);
		gnutls_x509_crt_set_version(crt, 3);
		gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
		serial[0] &= 0x7f;
		gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
		gnutls_x509_crt_set_activation_time(crt, now - 3600);
		gnutls_x509_crt_set_expiration_time(crt, now + 86400);
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
		        crt, ca, cakey, GNUTLS_DIG_SHA256, 0) < 0) {
			gnutls_x509_crt_deinit(crt);
			gnutls_x509_privkey_deinit(key);
			goto out_key;
		}
		snprintf(path, sizeof(path), "%s/bench-%04d.pem", dir, i);
		gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out);
		write_pem(path, &out);
		gnutls_free(out.data);
		snprintf(path, sizeof(path), "%s/bench-%04d-key.pem", dir, i);
		gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &out);
		write_pem(path, &out);
		gnutls_free(out.data);
		gnutls_x509_crt_deinit(crt);
		gnutls_x509_privkey_deinit(key);
	}
	rc = 0;
out_key:
	gnutls_free(d.data);
	gnutls_x509_privkey_deinit(cakey);
	gnutls_x509_crt_deinit(ca);
	return rc;
out_ca:
	gnutls_free(d.data);
	gnutls_x509_crt_deinit(ca);
	return -1;
}

/* ---- the async clients ------------------------------------------------------ */

static void start_offers(void);

static struct op *
op_by_agent(int idx)
{
	int i;

	for (i = 0; i < inflight; i++)
		if (ops[i].used && ops[i].agent == idx)
			return &ops[i];
	return NULL;
}

static struct op *
op_by_ticket(const char *t)
{
	int i;

	for (i = 0; i < inflight; i++)
		if (ops[i].used && strcmp(ops[i].ticket, t) == 0)
			return &ops[i];
	return NULL;
}

static void
h_prompt(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct peer *p = ctx;
	struct op *o = op_by_agent(p->idx);

	(void)params;
	if (o != NULL && o->t_prompt == 0)
		o->t_prompt = now_us();
	if (id != NULL)
		rp_conn_reply(c, id,
		    json_pack("{s:s, s:s, s:s}", "answer", "accept", "user",
		        "CORP\\bob", "session", "1"));
}

static void op_done(struct op *o, int ok);

static void
h_connect(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct peer *p = ctx;
	struct op *o = op_by_agent(p->idx);

	(void)params;
	if (id != NULL)
		rp_conn_reply(c, id, json_object());
	if (o != NULL && o->t_conn == 0) {
		o->t_conn = now_us();
		if (o->t_acc != 0)
			op_done(o, 1);
	}
}

static void
h_ignore(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	(void)params;
	(void)ctx;
	if (id != NULL)
		rp_conn_reply(c, id, json_object());
}

static void
cancel_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	(void)c;
	(void)code;
	(void)res;
	(void)arg;
}

static void
op_done(struct op *o, int ok)
{
	if (ok) {
		lat_prompt[completed] = o->t_prompt ? o->t_prompt - o->t0 : 0;
		lat_acc[completed] = o->t_acc - o->t0;
		lat_conn[completed] = o->t_conn - o->t0;
		completed++;
	} else
		failed++;
	o->used = 0;
	start_offers();
}

static void
h_update(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	const char *t = json_string_value(json_object_get(params, "ticket"));
	const char *st = json_string_value(json_object_get(params, "state"));
	struct op *o;

	(void)id;
	(void)ctx;
	if (t == NULL || st == NULL || (o = op_by_ticket(t)) == NULL)
		return;
	/* After "accepted" the helper cancels: "cancelled" may come back
	 * before the agent's ticket.connect has been read. */
	if (o->t_acc != 0)
		return;
	if (strcmp(st, "accepted") == 0) {
		o->t_acc = now_us();
		rp_conn_call(c, "offer.cancel", json_pack("{s:s}", "ticket", t),
		    10000, cancel_cb, NULL);
		if (o->t_conn != 0) /* else when ticket.connect arrives */
			op_done(o, 1);
	} else if (strcmp(st, "prompting") != 0) {
		if (failed < 5)
			fprintf(stderr, "bench: offer.update %s (%s)\n", st,
			    json_string_value(
			        json_object_get(params, "reason")));
		op_done(o, 0);
	}
}

#define ALL (RP_ST_ANY | RP_ST_NEW)
static const struct rp_method agent_methods[] = {
    {"novice.prompt", ALL, NULL, RP_M_NOTIFY_OK, h_prompt},
    {"ticket.connect", ALL, NULL, RP_M_NOTIFY_OK, h_connect},
    {"ticket.revoked", ALL, NULL, RP_M_NOTIFY_OK, h_ignore},
    {"control.prompt", ALL, NULL, RP_M_NOTIFY_OK, h_ignore},
};
static const struct rp_method helper_methods[] = {
    {"offer.update", ALL, NULL, RP_M_NOTIFY_OK, h_update},
};

static void
p_close(struct rp_conn *c, const char *why, void *ctx)
{
	struct peer *p = ctx;

	if (!p->closed && p->idx >= 0 && !finishing)
		fprintf(stderr, "bench: agent %d closed: %s\n", p->idx,
		    why ? why : "");
	p->closed = 1;
	if (p->conn == c) {
		p->conn = NULL;
		rp_conn_unref(c);
	}
}

static const struct rp_conn_cbs p_cbs = {.on_close = p_close};

static void
registered_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct peer *p = arg;

	(void)c;
	(void)res;
	p->busy = 0;
	if (code == 0) {
		p->registered = 1;
		nregistered++;
	} else {
		fprintf(stderr, "bench: register %s: %s\n", p->fqdn,
		    rp_err_name(code));
		p->closed = 1;
	}
}

static void
hello_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct peer *p = arg;

	(void)res;
	if (code != 0) {
		fprintf(stderr, "bench: hello %s: %s\n", p->fqdn,
		    rp_err_name(code));
		p->busy = 0;
		p->closed = 1;
		return;
	}
	rp_conn_call(c, "agent.register",
	    json_pack("{s:s, s:[s], s:[{s:s, s:s, s:s, s:b}]}", "fqdn", p->fqdn,
	        "addresses", "127.0.0.1", "sessions", "id", "1", "user",
	        "CORP\\bob", "kind", "graphical", "locked", 0),
	    10000, registered_cb, p);
}

static void
t_ready(struct rp_tls *t, void *arg)
{
	struct peer *p = arg;
	struct rp_conn_opts o = {
	    .methods = p->idx >= 0 ? agent_methods : helper_methods,
	    .nmethods = p->idx >= 0
	        ? sizeof(agent_methods) / sizeof(agent_methods[0])
	        : sizeof(helper_methods) / sizeof(helper_methods[0]),
	    .cbs = &p_cbs,
	    .ctx = p,
	};

	p->tls = NULL;
	p->conn = rp_conn_new_tls(base, t, &o);
	if (p->conn == NULL) {
		rp_tls_close(t);
		p->closed = 1;
		return;
	}
	p->ready = 1;
	nready++;
	if (p->idx >= 0)
		rp_conn_call(p->conn, "hello",
		    json_pack("{s:i, s:s, s:s}", "version", 1, "role", "agent",
		        "software", "bench/0"),
		    10000, hello_cb, p);
}

static void
t_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct peer *p = arg;

	(void)t;
	(void)why;
	p->tls = NULL;
	p->closed = 1;
	p->busy = 0;
	fprintf(stderr, "bench: TLS %s: %s\n", p->fqdn, msg ? msg : "");
}

static const struct rp_tls_cbs t_cbs = {
    .on_ready = t_ready,
    .on_close = t_close,
};

static int
peer_connect(struct peer *p, const char *cert, const char *key)
{
	struct rp_tls_opts o;
	struct sockaddr_storage ss;
	char ca[700], err[512];
	int sl;

	memset(&o, 0, sizeof(o));
	o.role = RP_TLS_CLIENT;
	snprintf(ca, sizeof(ca), "%s/ca.pem", br.pki);
	o.ca_file = ca;
	o.cert_file = cert;
	o.key_file = key;
	o.handshake_timeout_ms = 20000;
	if ((p->tctx = rp_tls_ctx_new(&o, err, sizeof(err))) == NULL) {
		fprintf(stderr, "bench: TLS ctx: %s\n", err);
		return -1;
	}
	sl = tl_loopback((struct sockaddr *)&ss, 0, (uint16_t)br.port);
	p->tls = rp_tls_connect(
	    p->tctx, base, (struct sockaddr *)&ss, sl, "localhost", &t_cbs, p);
	return p->tls != NULL ? 0 : -1;
}

/* ---- the offers ------------------------------------------------------------ */

static void
create_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	struct op *o = arg;
	const char *t;

	(void)c;
	if (code != 0 ||
	    (t = json_string_value(json_object_get(res, "ticket"))) == NULL) {
		if (failed < 5)
			fprintf(stderr, "bench: offer.create: %s\n",
			    rp_err_name(code));
		op_done(o, 0);
		return;
	}
	snprintf(o->ticket, sizeof(o->ticket), "%s", t);
}

static void
start_offers(void)
{
	int i, tries;

	for (i = 0; i < inflight && started < noffers; i++) {
		struct op *o = &ops[i];

		if (o->used || helper.conn == NULL)
			continue;
		/* The next registered machine with no offer in flight. */
		for (tries = 0; tries < nagents; tries++) {
			int a = next_agent++ % nagents;

			if (agents[a].registered && !agents[a].closed &&
			    op_by_agent(a) == NULL) {
				o->agent = a;
				break;
			}
		}
		if (tries == nagents)
			return;
		memset(o->ticket, 0, sizeof(o->ticket));
		o->used = 1;
		o->t_prompt = o->t_acc = o->t_conn = 0;
		o->t0 = now_us();
		started++;
		rp_conn_call(helper.conn, "offer.create",
		    json_pack("{s:s, s:s, s:[s]}", "machine",
		        agents[o->agent].fqdn, "mode", "view", "addresses",
		        "127.0.0.1:40123"),
		    30000, create_cb, o);
	}
}

/* ---- main ---------------------------------------------------------------- */

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double
pct(uint64_t *v, int n, double p)
{
	int i;

	if (n == 0)
		return 0;
	i = (int)(p * (n - 1) + 0.5);
	return v[i] / 1000.0;
}

static double
loadavg1(void)
{
	double la[1];

	return getloadavg(la, 1) == 1 ? la[0] : -1.0;
}

static int
all_registered(void *arg)
{
	(void)arg;
	return nregistered >= nagents;
}

static int
helper_ok(void *arg)
{
	int *st = arg;

	return *st != 0;
}

static void
auth_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	int *st = arg;

	(void)c;
	*st = code == 0 && json_is_string(json_object_get(res, "account")) ? 1
	                                                                   : -1;
}

static void
hhello_cb(struct rp_conn *c, int code, json_t *res, void *arg)
{
	unsigned char buf[] = "\0alice\0alice-pw";
	char *b64 = az_sasl_b64_encode(buf, sizeof(buf) - 1);
	int *st = arg;

	(void)res;
	if (code != 0) {
		*st = -1;
		free(b64);
		return;
	}
	rp_conn_call(c, "auth.start",
	    json_pack("{s:s, s:s}", "mechanism", "PLAIN", "initial", b64),
	    10000, auth_cb, st);
	free(b64);
}

static int
helper_ready(void *arg)
{
	(void)arg;
	return helper.ready || helper.closed;
}

static int
done_all(void *arg)
{
	(void)arg;
	return completed + failed >= noffers;
}

static void
lower_log_level(const char *conf)
{
	FILE *f = fopen(conf, "r");
	char buf[16384], *p;
	size_t n;

	if (f == NULL)
		return;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if ((p = strstr(buf, "level = debug")) != NULL)
		memcpy(p, "level = info ", 13);
	if ((f = fopen(conf, "w")) != NULL) {
		fwrite(buf, 1, n, f);
		fclose(f);
	}
}

int
main(int argc, char **argv)
{
	struct tl_slapd slapd;
	struct tl_broker_opts bo;
	char cert[700], key[700];
	int ch, i, hst = 0, conc;
	uint64_t t0, t_conn, t_meas;
	long cpu0, cpu1, mcpu0, mcpu1;
	double secs;

	while ((ch = getopt(argc, argv, "n:o:c:t:")) != -1) {
		switch (ch) {
		case 'n':
			nagents = atoi(optarg);
			break;
		case 'o':
			noffers = atoi(optarg);
			break;
		case 'c':
			inflight = atoi(optarg);
			break;
		case 't':
			tlimit = atoi(optarg);
			break;
		default:
			fprintf(stderr,
			    "usage: bench_offer [-n agents] [-o offers] "
			    "[-c in flight] [-t seconds]\n");
			return 2;
		}
	}
	if (nagents < 1 || nagents > MAX_AGENTS || noffers < 1 ||
	    noffers > MAX_OFFERS || inflight < 1 || inflight > MAX_INFLIGHT ||
	    inflight > nagents || tlimit < 1 || tlimit > 600) {
		fprintf(stderr, "bench_offer: argument out of range\n");
		return 2;
	}
	log_init("bench_offer", LOG_LVL_WARN, 0);
	tl_raise_nofile(2 * nagents + 256);
	lat_prompt = calloc((size_t)noffers, sizeof(uint64_t));
	lat_acc = calloc((size_t)noffers, sizeof(uint64_t));
	lat_conn = calloc((size_t)noffers, sizeof(uint64_t));
	base = event_base_new();
	if (tl_slapd_start(NULL, &slapd) != 0) {
		fprintf(stderr, "bench_offer: slapd did not start\n");
		return 1;
	}
	memset(&bo, 0, sizeof(bo));
	bo.slapd = &slapd;
	bo.policy = "defaults prompt-timeout=30s\n"
	            "allow control group \"CORP\\helpdesk\" on all\n";
	bo.require_computer_object = 0;
	/* Every agent comes from 127.0.0.1 and connects at once: the
	 * per-address cap on connections not logged in yet is for hostile
	 * hosts, not for a load generator. */
	bo.extra = "\n[broker]\nmax_pending_per_address = 0\n";
	if (tl_broker_setup(&br, &bo) != 0) {
		tl_slapd_destroy(&slapd);
		return 1;
	}
	lower_log_level(br.conf);
	snprintf(keydir, sizeof(keydir), "%s/agents", br.dir);
	if (mkdir(keydir, 0700) != 0 && errno != EEXIST)
		goto fail;
	t0 = now_us();
	if (make_certs(br.pki, keydir, nagents) != 0) {
		fprintf(stderr, "bench_offer: certificates failed\n");
		goto fail;
	}
	printf("issued %d agent certificates in %.2f s\n", nagents,
	    (now_us() - t0) / 1e6);
	if (tl_broker_start(&br) != 0) {
		fprintf(stderr, "bench_offer: rabrokerd did not start: %s\n",
		    br.log);
		goto fail;
	}

	/* Agents: at most 64 handshakes in flight. */
	t0 = now_us();
	for (i = 0; i < nagents; i++) {
		struct peer *p = &agents[i];

		p->idx = i;
		snprintf(
		    p->fqdn, sizeof(p->fqdn), "bench-%04d.corp.example", i);
		snprintf(cert, sizeof(cert), "%s/bench-%04d.pem", keydir, i);
		snprintf(key, sizeof(key), "%s/bench-%04d-key.pem", keydir, i);
		p->busy = 1;
		if (peer_connect(p, cert, key) != 0)
			goto fail;
		for (;;) {
			conc = 0;
			for (int j = 0; j <= i; j++)
				conc += agents[j].busy;
			if (conc < 64 || now_us() - t0 > 120000000u)
				break;
			event_base_loop(base, EVLOOP_ONCE);
		}
	}
	tl_run_until(base, all_registered, NULL, 60000);
	t_conn = now_us() - t0;
	printf("%d/%d agents registered in %.2f s\n", nregistered, nagents,
	    t_conn / 1e6);
	if (nregistered < nagents)
		goto fail;

	helper.idx = -1;
	snprintf(helper.fqdn, sizeof(helper.fqdn), "helper");
	if (peer_connect(&helper, NULL, NULL) != 0)
		goto fail;
	tl_run_until(base, helper_ready, NULL, 10000);
	if (!helper.ready)
		goto fail;
	rp_conn_call(helper.conn, "hello",
	    json_pack("{s:i, s:s}", "version", 1, "role", "helper"), 10000,
	    hhello_cb, &hst);
	tl_run_until(base, helper_ok, &hst, 15000);
	if (hst != 1) {
		fprintf(stderr, "bench_offer: helper login failed\n");
		goto fail;
	}

	tl_broker_perf_start(&br, "offer");
	cpu0 = tl_broker_cpu_ms(&br);
	mcpu0 = tl_broker_main_cpu_ms(&br);
	t0 = now_us();
	start_offers();
	tl_run_until(base, done_all, NULL, (unsigned)tlimit * 1000);
	t_meas = now_us() - t0;
	cpu1 = tl_broker_cpu_ms(&br);
	mcpu1 = tl_broker_main_cpu_ms(&br);
	tl_broker_perf_stop();
	secs = t_meas / 1e6;
	qsort(lat_prompt, (size_t)completed, sizeof(uint64_t), cmp_u64);
	qsort(lat_acc, (size_t)completed, sizeof(uint64_t), cmp_u64);
	qsort(lat_conn, (size_t)completed, sizeof(uint64_t), cmp_u64);

	printf("\nbench_offer: %d agents, %d offers asked, %d in flight, "
	       "audit synced as in production (group commit)\n",
	    nagents, noffers, inflight);
	printf("%-34s %10s\n", "figure", "value");
	printf("%-34s %10d\n", "offers completed (accepted)", completed);
	printf("%-34s %10d\n", "offers failed/unfinished", noffers - completed);
	printf("%-34s %10.2f\n", "elapsed (s)", secs);
	printf("%-34s %10.1f\n", "offers per second", completed / secs);
	printf("%-34s %10.2f\n", "create->prompt p50 (ms)",
	    pct(lat_prompt, completed, 0.50));
	printf("%-34s %10.2f\n", "create->prompt p99 (ms)",
	    pct(lat_prompt, completed, 0.99));
	printf("%-34s %10.2f\n", "create->ticket.connect p50 (ms)",
	    pct(lat_conn, completed, 0.50));
	printf("%-34s %10.2f\n", "create->ticket.connect p99 (ms)",
	    pct(lat_conn, completed, 0.99));
	printf("%-34s %10.2f\n", "create->accepted p50 (ms)",
	    pct(lat_acc, completed, 0.50));
	printf("%-34s %10.2f\n", "create->accepted p90 (ms)",
	    pct(lat_acc, completed, 0.90));
	printf("%-34s %10.2f\n", "create->accepted p99 (ms)",
	    pct(lat_acc, completed, 0.99));
	printf("%-34s %10.2f\n", "create->accepted max (ms)",
	    completed ? lat_acc[completed - 1] / 1000.0 : 0);
	printf("%-34s %10.2f\n", "agents connect+register (s)", t_conn / 1e6);
	printf("%-34s %10.1f\n", "rabrokerd CPU during offers (%)",
	    cpu0 >= 0 && cpu1 >= 0 ? 100.0 * (cpu1 - cpu0) / (t_meas / 1e3)
	                           : -1.0);
	printf("%-34s %10.3f\n", "rabrokerd CPU per offer (ms)",
	    cpu0 >= 0 && cpu1 >= 0 && completed > 0
	        ? (double)(cpu1 - cpu0) / completed
	        : -1.0);
	printf("%-34s %10.3f\n", "  of which its event loop (ms)",
	    mcpu0 >= 0 && mcpu1 >= 0 && completed > 0
	        ? (double)(mcpu1 - mcpu0) / completed
	        : -1.0);
	printf("%-34s %10.2f\n", "load average (1 min) at the end", loadavg1());
	printf("%-34s %10.1f\n", "rabrokerd RSS (MiB)",
	    tl_broker_rss(&br) / 1048576.0);
	printf("%-34s %10ld\n", "audit lines written",
	    tl_broker_audit_count(&br, "\"event\""));

	finishing = 1;
	for (i = 0; i < nagents; i++)
		if (agents[i].conn != NULL)
			rp_conn_close(agents[i].conn, "bench done");
	if (helper.conn != NULL)
		rp_conn_close(helper.conn, "bench done");
	tl_run_until(base, NULL, NULL, 200);
	tl_broker_destroy(&br);
	tl_slapd_destroy(&slapd);
	return completed == noffers ? 0 : 1;
fail:
	tl_broker_destroy(&br);
	tl_slapd_destroy(&slapd);
	return 1;
}
