/*
 * itest_agent.c - the real raagent end to end: a real slapd, a real
 * rabrokerd (tests/lib/tl_broker.h), the raagent binary as a child process
 * (static session CORP\bob, a script prompt that answers from files this
 * test writes), a scripted helper in this process (tl_client for
 * offer.create / control.request, a PSK-TLS listener with psk_lookup, and
 * for the relay a raw broker connection with the PSK-TLS server inside),
 * and a scripted RFB server behind the agent that records what it gets.
 *
 * With RABROKER_BENCH_TUNNEL=1 in the environment, t_bench measures
 * throughput and added latency (direct, relay, plain TCP) and prints them;
 * otherwise it is skipped (it is a benchmark, not a timed test).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <gnutls/gnutls.h>

#include "az_sasl.h"
#include "cl_tunnel.h"
#include "rp_error.h"
#include "rp_log.h"
#include "rp_tls.h"
#include "tl_broker.h"
#include "tl_slapd.h"
#include "tl_util.h"

#define WS42 "ws-042.corp.example"
#define T_WAIT 8000

static struct tl_slapd slapd;
static int slapd_ok;
static struct event_base *base;
static struct tl_broker br;
static int br_ok;
static pid_t agent_pid;
static char agent_conf[700], agent_log[700], agent_dir[700];

static const char *policy =
    "defaults prompt-timeout=6s\n"
    "scope workstations ou=\"ou=Workstations,ou=Computers,dc=corp,"
    "dc=example\"\n"
    "allow control group \"CORP\\helpdesk\" on workstations\n";

/* ---- the RFB server behind the agent ------------------------------------ */

struct srv {
	struct tl_listener *l;
	uint16_t port;
	int accepted;
	struct bufferevent *bev;
	struct evbuffer *in; /* everything received */
	int closed;
	int echo; /* bench: send back what arrives */
};
static struct srv rfb;

static void
srv_read(struct bufferevent *bev, void *arg)
{
	struct srv *s = arg;

	if (s->echo)
		bufferevent_write_buffer(bev, bufferevent_get_input(bev));
	else
		evbuffer_add_buffer(s->in, bufferevent_get_input(bev));
}

static void
srv_event(struct bufferevent *bev, short what, void *arg)
{
	struct srv *s = arg;

	(void)what;
	bufferevent_free(bev);
	s->bev = NULL;
	s->closed = 1;
}

static void
srv_accept(evutil_socket_t fd, void *arg)
{
	struct srv *s = arg;

	s->accepted++;
	if (s->bev != NULL) {
		close(fd);
		return;
	}
	s->closed = 0;
	s->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(s->bev, srv_read, NULL, srv_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	if (!s->echo)
		bufferevent_write(s->bev, "RFB 003.008\n", 12);
}

/* ---- the helper's PSK listener ----------------------------------------- */

struct hl {
	struct tl_listener *l;
	uint16_t port;
	struct rp_tls_ctx *ctx;
	unsigned char psk[64];
	size_t psklen;
	char ticket[40];
	int wrong; /* answer with a wrong key */
	int accepted, ready, closed, failed;
	struct rp_tls *t;
	struct evbuffer *in;
	char why[256];
};
static struct hl hl;

static int
hl_lookup(void *arg, const char *id, unsigned char *key, size_t *keylen)
{
	struct hl *h = arg;

	if (strcmp(id, h->ticket) != 0 || h->psklen == 0)
		return -1;
	memcpy(key, h->psk, h->psklen);
	if (h->wrong)
		key[0] ^= 0x55;
	*keylen = h->psklen;
	return 0;
}

static void
hl_ready(struct rp_tls *t, void *arg)
{
	struct hl *h = arg;

	(void)t;
	h->ready = 1;
}

static void
hl_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	(void)t;
	evbuffer_add_buffer(((struct hl *)arg)->in, in);
}

static void
hl_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct hl *h = arg;

	if (h->t == t)
		h->t = NULL;
	if (!h->ready)
		h->failed++;
	h->closed = 1;
	snprintf(h->why, sizeof(h->why), "%s %s", rp_tls_close_reason_name(why),
	    msg ? msg : "");
}

static const struct rp_tls_cbs hl_cbs = {
    .on_ready = hl_ready, .on_read = hl_read, .on_close = hl_close};

static void
hl_accept(evutil_socket_t fd, void *arg)
{
	struct hl *h = arg;
	struct rp_tls *t;

	h->accepted++;
	t = rp_tls_accept(h->ctx, base, fd, &hl_cbs, h);
	if (t == NULL) {
		close(fd);
		return;
	}
	h->closed = 0;
	h->t = t;
}

static void
hl_setup(void)
{
	struct rp_tls_opts o;
	char err[256];

	memset(&hl, 0, sizeof(hl));
	memset(&o, 0, sizeof(o));
	o.role = RP_TLS_SERVER;
	o.psk_lookup = hl_lookup;
	o.stream = 1;
	o.psk_arg = &hl;
	hl.ctx = rp_tls_ctx_new(&o, err, sizeof(err));
	ck_assert_msg(hl.ctx != NULL, "%s", err);
	hl.in = evbuffer_new();
	hl.l = tl_listen(base, 0, hl_accept, &hl, &hl.port);
	ck_assert_ptr_nonnull(hl.l);
}

/* ---- running raagent ------------------------------------------------------ */

static void
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void
answer(const char *kind, const char *yes_no)
{
	char p[800];

	snprintf(p, sizeof(p), "%s/answer-%s", agent_dir, kind);
	write_file(p, yes_no, 0644);
}

static const char *
agent_bin(void)
{
	static char p[600];

	snprintf(p, sizeof(p), "%s/client/raagent",
	    getenv("RABROKER_BUILD_DIR") ? getenv("RABROKER_BUILD_DIR")
	                                 : RABROKER_BUILD_DIR);
	return p;
}

static int agent_raw;              /* protocol raw with a no-op start_command */
static uint16_t target_override;   /* a real VNC server instead of rfb */
static const char *agent_broker;   /* "host:port" instead of 127.0.0.1 */
static char agent_extra[256];      /* more [agent] lines */
static int agent_nowait;           /* do not wait for agent_online */
static const char *agent_sessions; /* [sessions] lines, NULL: CORP\bob */
static char agent_prompt[128];     /* more [prompt] lines */

static void
agent_start(int relay, unsigned connect_timeout)
{
	char text[8192], script[800], start[800];
	int fd;

	snprintf(agent_dir, sizeof(agent_dir), "%s/agent", br.dir);
	mkdir(agent_dir, 0700);
	snprintf(agent_conf, sizeof(agent_conf), "%s/raagent.conf", br.dir);
	snprintf(agent_log, sizeof(agent_log), "%s/raagent.log", br.dir);
	snprintf(script, sizeof(script), "%s/prompt.sh", br.dir);
	snprintf(text, sizeof(text),
	    "#!/bin/sh\n"
	    "printf '%%s\\n' \"$RA_KIND $RA_TICKET $RA_HELPER $RA_MODE "
	    "$RA_USER $RA_TIMEOUT\" >> '%s/prompts.log'\n"
	    "a=$(cat '%s/answer-'\"$RA_KIND\" 2>/dev/null)\n"
	    "[ \"$a\" = yes ]\n",
	    agent_dir, agent_dir);
	write_file(script, text, 0755);
	snprintf(start, sizeof(start), "%s/start.sh", br.dir);
	snprintf(text, sizeof(text),
	    "#!/bin/sh\necho \"$1 $2\" >> '%s/start.log'\nexit 0\n", agent_dir);
	write_file(start, text, 0755);
	char broker[300];

	if (agent_broker != NULL)
		snprintf(broker, sizeof(broker), "%s", agent_broker);
	else
		snprintf(broker, sizeof(broker), "127.0.0.1:%u", br.port);
	snprintf(text, sizeof(text),
	    "[agent]\n"
	    "broker = %s\n"
	    "%s"
	    "server_name = localhost\n"
	    "ca = %s/ca.pem\n"
	    "cert = %s/ws-042.pem\n"
	    "key = %s/ws-042-key.pem\n"
	    "state_dir = %s\n"
	    "backoff_base_ms = 200\n"
	    "backoff_cap = 2\n"
	    "[sessions]\n"
	    "source = static\n"
	    "%s"
	    "[prompt]\n"
	    "command = script:%s\n"
	    "timeout_margin = 1\n"
	    "%s"
	    "[tunnel]\n"
	    "target = 127.0.0.1:%u\n"
	    "connect_timeout = %u\n"
	    "relay = %s\n"
	    "%s%s\n"
	    "[log]\n"
	    "level = %s\n",
	    broker, agent_extra, br.pki, br.pki, br.pki, agent_dir,
	    agent_sessions ? agent_sessions : "session = CORP\\bob graphical\n",
	    script, agent_prompt, target_override ? target_override : rfb.port,
	    connect_timeout, relay ? "yes" : "no",
	    agent_raw ? "protocol = raw\nstart_command = " : "",
	    agent_raw ? start : "", agent_raw ? "info" : "debug");
	write_file(agent_conf, text, 0644);
	agent_pid = fork();
	ck_assert_int_ge(agent_pid, 0);
	if (agent_pid == 0) {
		fd = open(agent_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
		}
		execl(agent_bin(), "raagent", "-d", "-f", agent_conf,
		    (char *)NULL);
		_exit(127);
	}
	if (agent_nowait)
		return;
	ck_assert_msg(tl_broker_wait_audit(&br, "agent_online", 1, T_WAIT),
	    "raagent did not come online (see %s)", agent_log);
}

static void
agent_stop(void)
{
	int st;

	if (agent_pid <= 0)
		return;
	kill(agent_pid, SIGTERM);
	for (int i = 0; i < 50; i++) {
		if (waitpid(agent_pid, &st, WNOHANG) == agent_pid) {
			agent_pid = 0;
			return;
		}
		usleep(100000);
	}
	kill(agent_pid, SIGKILL);
	waitpid(agent_pid, &st, 0);
	agent_pid = 0;
}

static long
agent_log_count(const char *needle)
{
	FILE *f = fopen(agent_log, "r");
	char line[4096];
	long n = 0;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, needle) != NULL)
			n++;
	fclose(f);
	return n;
}

static int
agent_wait_log(const char *needle, unsigned ms)
{
	uint64_t end = tl_now_ms() + ms;

	while (tl_now_ms() < end) {
		if (agent_log_count(needle) > 0)
			return 1;
		tl_run_until(base, NULL, NULL, 50);
	}
	return 0;
}

static int
agent_wait_count(const char *needle, long n, unsigned ms)
{
	uint64_t end = tl_now_ms() + ms;

	while (tl_now_ms() < end) {
		if (agent_log_count(needle) >= n)
			return 1;
		tl_run_until(base, NULL, NULL, 50);
	}
	return 0;
}

/* Runs "raagent -f CONF args..." to the end (bounded); out gets stdout. */
static int
agent_cmd(const char *a1, const char *a2, char *out, size_t outlen)
{
	int pfd[2], st = 0;
	pid_t pid;
	size_t used = 0;
	ssize_t n;
	uint64_t end = tl_now_ms() + 10000;

	ck_assert_int_eq(pipe(pfd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		execl(agent_bin(), "raagent", "-f", agent_conf, a1, a2,
		    (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		n = read(pfd[0], out + used, outlen - used - 1);
		if (n > 0) {
			used += (size_t)n;
			if (used + 1 >= outlen)
				break;
			continue;
		}
		if (n == 0)
			break;
		if (tl_now_ms() > end) {
			kill(pid, SIGKILL);
			break;
		}
		usleep(20000);
	}
	out[used] = '\0';
	close(pfd[0]);
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- fixtures ------------------------------------------------------------ */

static void
setup(void)
{
	struct tl_broker_opts o;

	ck_assert_msg(slapd_ok, "slapd did not start");
	log_init("itest_agent", LOG_LVL_WARN, 0);
	base = event_base_new();
	memset(&rfb, 0, sizeof(rfb));
	rfb.in = evbuffer_new();
	rfb.l = tl_listen(base, 0, srv_accept, &rfb, &rfb.port);
	ck_assert_ptr_nonnull(rfb.l);
	hl_setup();
	memset(&o, 0, sizeof(o));
	o.slapd = &slapd;
	o.policy = policy;
	o.require_computer_object = 1;
	ck_assert_int_eq(tl_broker_setup(&br, &o), 0);
	ck_assert_msg(
	    tl_broker_start(&br) == 0, "rabrokerd did not start: %s", br.log);
	br_ok = 1;
	agent_pid = 0;
	agent_broker = NULL;
	agent_extra[0] = '\0';
	agent_nowait = 0;
	agent_sessions = NULL;
	agent_prompt[0] = '\0';
}

static void
teardown(void)
{
	agent_stop();
	if (br_ok)
		tl_broker_destroy(&br);
	br_ok = 0;
}

/* ---- the helper's side ------------------------------------------------- */

static const char *
jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static struct tl_client *
helper_login(void)
{
	char why[256];
	struct tl_client *h = tl_client_connect(
	    base, br.pki, br.port, NULL, T_WAIT, why, sizeof(why));

	ck_assert_msg(h != NULL, "%s", why);
	ck_assert_int_eq(tl_client_helper_login(h, "alice", "alice-pw"), 0);
	return h;
}

static char last_psk_b64[128]; /* the ticket secret as the broker gave it */

/* offer.create towards addr; fills hl's ticket and psk. */
static void
offer(struct tl_client *h, const char *mode, const char *addr)
{
	json_t *res = NULL;
	gnutls_datum_t in, out;
	const char *psk;

	ck_assert_int_eq(tl_client_call(h, "offer.create",
	                     json_pack("{s:s, s:s, s:[s]}", "machine", WS42,
	                         "mode", mode, "addresses", addr),
	                     T_WAIT, &res),
	    0);
	snprintf(hl.ticket, sizeof(hl.ticket), "%s", jstr(res, "ticket"));
	psk = jstr(res, "psk");
	snprintf(last_psk_b64, sizeof(last_psk_b64), "%s", psk);
	in.data = (unsigned char *)psk;
	in.size = (unsigned)strlen(psk);
	ck_assert_int_ge(gnutls_base64_decode2(&in, &out), 0);
	ck_assert_uint_le(out.size, sizeof(hl.psk));
	memcpy(hl.psk, out.data, out.size);
	hl.psklen = out.size;
	gnutls_free(out.data);
	json_decref(res);
}

/* Waits for an offer.update of the ticket with key == value. */
static int
wait_update(
    struct tl_client *h, const char *key, const char *value, unsigned ms)
{
	uint64_t end = tl_now_ms() + ms;
	json_t *p;

	while (tl_now_ms() < end) {
		p = tl_client_wait_request(
		    h, "offer.update", (unsigned)(end - tl_now_ms()), NULL);
		if (p == NULL)
			return 0;
		if (!strcmp(jstr(p, "ticket"), hl.ticket) &&
		    !strcmp(jstr(p, key), value)) {
			json_decref(p);
			return 1;
		}
		json_decref(p);
	}
	return 0;
}

static char my_helper_addr[64];

static const char *
helper_addr(void)
{
	snprintf(
	    my_helper_addr, sizeof(my_helper_addr), "127.0.0.1:%u", hl.port);
	return my_helper_addr;
}

struct bufwait {
	struct evbuffer *b;
	size_t n;
};

static int
has_bytes(void *arg)
{
	struct bufwait *w = arg;

	return evbuffer_get_length(w->b) >= w->n;
}

static int
wait_bytes(struct evbuffer *b, size_t n, unsigned ms)
{
	struct bufwait w = {b, n};

	return tl_run_until(base, has_bytes, &w, ms);
}

static int
is_set(void *arg)
{
	return *(int *)arg != 0;
}

static int
hl_gone(void *arg)
{
	(void)arg;
	return hl.t == NULL;
}

/* RFB messages from the viewer. */
static const unsigned char rfb_hs[14] = {
    'R', 'F', 'B', ' ', '0', '0', '3', '.', '0', '0', '8', '\n', 1, 1};
static const unsigned char fbur[10] = {3, 1, 0, 0, 0, 0, 4, 0, 3, 0};
static const unsigned char key_a[8] = {4, 1, 0, 0, 0, 0, 0, 'a'};
static const unsigned char ptr_ev[6] = {5, 1, 0, 10, 0, 20};

/* What the RFB server got since the last call. */
static size_t
srv_take(unsigned char *buf, size_t len)
{
	size_t n = evbuffer_get_length(rfb.in);

	if (n > len)
		n = len;
	evbuffer_remove(rfb.in, buf, n);
	return n;
}

/* A direct session up to the RFB greeting; returns the helper client. */
static struct tl_client *
direct_session(const char *mode)
{
	struct tl_client *h = helper_login();

	answer("offer", "yes");
	offer(h, mode, helper_addr());
	ck_assert_msg(tl_run_until(base, is_set, &hl.ready, T_WAIT),
	    "the agent did not connect to the helper (%s)", agent_log);
	ck_assert_msg(wait_bytes(hl.in, 12, T_WAIT),
	    "no RFB greeting through the tunnel");
	ck_assert_int_eq(evbuffer_get_length(hl.in), 12);
	ck_assert_int_eq(
	    memcmp(evbuffer_pullup(hl.in, 12), "RFB 003.008\n", 12), 0);
	evbuffer_drain(hl.in, 12);
	ck_assert_msg(wait_update(h, "state", "connected", T_WAIT),
	    "no offer.update connected");
	return h;
}

/* ---- tests --------------------------------------------------------------- */

/* Accept: bytes both ways through the direct reverse connection; view
 * only until control is granted; take-control drops input again. */
START_TEST(t_direct_view_control)
{
	struct tl_client *h;
	unsigned char got[256];
	char out[4096];
	size_t n;

	agent_start(0, 3);
	h = direct_session("control");
	ck_assert_int_eq(agent_log_count("connected via direct"), 1);
	ck_assert_int_ge(tl_broker_audit_count(&br, "session_connected"), 1);
	/* View only: key and pointer dropped, the rest passes, in order. */
	rp_tls_write(hl.t, rfb_hs, sizeof(rfb_hs));
	rp_tls_write(hl.t, fbur, sizeof(fbur));
	rp_tls_write(hl.t, key_a, sizeof(key_a));
	rp_tls_write(hl.t, ptr_ev, sizeof(ptr_ev));
	rp_tls_write(hl.t, fbur, sizeof(fbur));
	ck_assert(wait_bytes(rfb.in, 34, T_WAIT));
	tl_run_until(base, NULL, NULL, 300); /* anything more would show */
	n = srv_take(got, sizeof(got));
	ck_assert_uint_eq(n, 34);
	ck_assert_int_eq(memcmp(got, rfb_hs, 14), 0);
	ck_assert_int_eq(memcmp(got + 14, fbur, 10), 0);
	ck_assert_int_eq(memcmp(got + 24, fbur, 10), 0);
	/* Server -> viewer goes through untouched. */
	bufferevent_write(rfb.bev, "\x00\x00\x00\x01screen", 10);
	ck_assert(wait_bytes(hl.in, 10, T_WAIT));
	evbuffer_drain(hl.in, 10);

	/* Control: the user says yes. */
	answer("control", "yes");
	ck_assert_int_eq(
	    tl_client_call(h, "control.request",
	        json_pack("{s:s}", "ticket", hl.ticket), T_WAIT, NULL),
	    0);
	ck_assert_msg(wait_update(h, "control", "granted", T_WAIT),
	    "control not granted");
	ck_assert(tl_broker_wait_audit(&br, "control_accepted", 1, T_WAIT));
	rp_tls_write(hl.t, key_a, sizeof(key_a));
	rp_tls_write(hl.t, ptr_ev, sizeof(ptr_ev));
	ck_assert(wait_bytes(rfb.in, 14, T_WAIT));
	n = srv_take(got, sizeof(got));
	ck_assert_uint_eq(n, 14);
	ck_assert_int_eq(memcmp(got, key_a, 8), 0);
	ck_assert_int_eq(memcmp(got + 8, ptr_ev, 6), 0);

	/* The user takes control back. */
	ck_assert_int_eq(
	    agent_cmd("take-control", hl.ticket, out, sizeof(out)), 0);
	ck_assert_ptr_nonnull(strstr(out, "ended"));
	ck_assert_msg(wait_update(h, "control", "ended", T_WAIT),
	    "helper not told control ended");
	rp_tls_write(hl.t, key_a, sizeof(key_a));
	rp_tls_write(hl.t, fbur, sizeof(fbur));
	ck_assert(wait_bytes(rfb.in, 10, T_WAIT));
	tl_run_until(base, NULL, NULL, 200);
	n = srv_take(got, sizeof(got));
	ck_assert_uint_eq(n, 10);
	ck_assert_int_eq(memcmp(got, fbur, 10), 0);
	/* take-control again: nothing under control. */
	ck_assert_int_ne(
	    agent_cmd("take-control", hl.ticket, out, sizeof(out)), 0);

	/* The helper hangs up: the agent reports the end. */
	rp_tls_close(hl.t);
	ck_assert(tl_run_until(base, is_set, &rfb.closed, T_WAIT));
	ck_assert_msg(
	    tl_broker_wait_audit(&br, "session_disconnected", 1, T_WAIT),
	    "no session_disconnected");
	ck_assert(agent_wait_log("session ended after", T_WAIT));
	/* The ticket secret never reaches the agent's log. */
	ck_assert_uint_gt(strlen(last_psk_b64), 40);
	ck_assert_int_eq(agent_log_count(last_psk_b64), 0);
	tl_client_free(h);
}
END_TEST

/* ---- nobody logged on ----------------------------------------------------
 * The broker's policy (nobody=allow-view) and raagent.conf ([prompt]
 * unattended) must both allow a connection nobody here said yes to. */

static void
policy_nobody(const char *nobody)
{
	char text[512];

	snprintf(text, sizeof(text),
	    "defaults prompt-timeout=6s\n"
	    "scope workstations ou=\"ou=Workstations,ou=Computers,"
	    "dc=corp,dc=example\" nobody=%s\n"
	    "allow control group \"CORP\\helpdesk\" on workstations\n",
	    nobody);
	ck_assert_int_eq(tl_broker_write_policy(&br, text), 0);
	ck_assert_int_eq(tl_broker_signal(&br, SIGHUP), 0);
	ck_assert(tl_broker_wait_audit(&br, "\"policy_reloaded\"", 1, T_WAIT));
}

static void
policy_nobody_view(void)
{
	policy_nobody("allow-view");
}

/* unattended = view, no session: accepted without a prompt, the tunnel
 * comes up, and it stays view only. */
START_TEST(t_unattended_view)
{
	struct tl_client *h;
	unsigned char got[256];
	char p[800];
	size_t n;

	policy_nobody_view();
	agent_sessions = ""; /* nobody is ever logged on */
	snprintf(agent_prompt, sizeof(agent_prompt), "unattended = view\n");
	agent_start(0, 3);
	h = helper_login();
	answer("offer", "yes"); /* would say yes if it were asked */
	offer(h, "control", helper_addr());
	ck_assert_msg(tl_run_until(base, is_set, &hl.ready, T_WAIT),
	    "the agent did not connect to the helper (%s)", agent_log);
	ck_assert_msg(wait_bytes(hl.in, 12, T_WAIT),
	    "no RFB greeting through the tunnel");
	ck_assert_int_eq(
	    memcmp(evbuffer_pullup(hl.in, 12), "RFB 003.008\n", 12), 0);
	evbuffer_drain(hl.in, 12);
	ck_assert_msg(wait_update(h, "state", "connected", T_WAIT),
	    "no offer.update connected");
	ck_assert_int_eq(agent_log_count("accepted (unattended)"), 1);
	/* No prompt ran. */
	snprintf(p, sizeof(p), "%s/prompts.log", agent_dir);
	ck_assert_int_ne(access(p, F_OK), 0);
	/* Audited as nobody's: accepted by the broker, connected by the
	 * agent's session.event. */
	ck_assert(tl_broker_wait_audit(&br, "session_connected", 1, T_WAIT));
	ck_assert_int_ge(
	    tl_broker_audit_count(&br, "\"user\":\"(nobody)\""), 2);
	/* View only: key and pointer dropped. */
	rp_tls_write(hl.t, rfb_hs, sizeof(rfb_hs));
	rp_tls_write(hl.t, key_a, sizeof(key_a));
	rp_tls_write(hl.t, ptr_ev, sizeof(ptr_ev));
	rp_tls_write(hl.t, fbur, sizeof(fbur));
	ck_assert(wait_bytes(rfb.in, 24, T_WAIT));
	tl_run_until(base, NULL, NULL, 300); /* anything more would show */
	n = srv_take(got, sizeof(got));
	ck_assert_uint_eq(n, 24);
	ck_assert_int_eq(memcmp(got, rfb_hs, 14), 0);
	ck_assert_int_eq(memcmp(got + 14, fbur, 10), 0);
	rp_tls_close(hl.t);
	ck_assert(tl_run_until(base, is_set, &rfb.closed, T_WAIT));
	ck_assert(tl_broker_wait_audit(&br, "session_disconnected", 1, T_WAIT));
	tl_client_free(h);
}
END_TEST

/* unattended = control, nobody=allow: a control ticket connects view
 * only, and control.request is granted without a prompt. */
START_TEST(t_unattended_control)
{
	struct tl_client *h;
	unsigned char got[256];
	char p[800];
	size_t n;

	policy_nobody("allow");
	agent_sessions = "";
	snprintf(agent_prompt, sizeof(agent_prompt), "unattended = control\n");
	agent_start(0, 3);
	h = helper_login();
	offer(h, "control", helper_addr());
	ck_assert_msg(tl_run_until(base, is_set, &hl.ready, T_WAIT),
	    "the agent did not connect to the helper (%s)", agent_log);
	ck_assert(wait_bytes(hl.in, 12, T_WAIT));
	evbuffer_drain(hl.in, 12);
	ck_assert(wait_update(h, "state", "connected", T_WAIT));
	/* View only until control is granted. */
	rp_tls_write(hl.t, rfb_hs, sizeof(rfb_hs));
	rp_tls_write(hl.t, key_a, sizeof(key_a));
	ck_assert(wait_bytes(rfb.in, 14, T_WAIT));
	tl_run_until(base, NULL, NULL, 300);
	ck_assert_uint_eq(srv_take(got, sizeof(got)), 14);
	ck_assert_int_eq(
	    tl_client_call(h, "control.request",
	        json_pack("{s:s}", "ticket", hl.ticket), T_WAIT, NULL),
	    0);
	ck_assert_msg(wait_update(h, "control", "granted", T_WAIT),
	    "control not granted (%s)", agent_log);
	ck_assert(tl_broker_wait_audit(&br, "control_accepted", 1, T_WAIT));
	ck_assert_int_eq(agent_log_count("control granted (unattended)"), 1);
	rp_tls_write(hl.t, key_a, sizeof(key_a));
	ck_assert(wait_bytes(rfb.in, 8, T_WAIT));
	n = srv_take(got, sizeof(got));
	ck_assert_uint_eq(n, 8);
	ck_assert_int_eq(memcmp(got, key_a, 8), 0);
	snprintf(p, sizeof(p), "%s/prompts.log", agent_dir);
	ck_assert_int_ne(access(p, F_OK), 0);
	tl_client_free(h);
}
END_TEST

/* unattended = view does not allow a control ticket (nobody=allow). */
START_TEST(t_unattended_view_not_control)
{
	struct tl_client *h;

	policy_nobody("allow");
	agent_sessions = "";
	snprintf(agent_prompt, sizeof(agent_prompt), "unattended = view\n");
	agent_start(0, 2);
	h = helper_login();
	offer(h, "control", helper_addr());
	ck_assert(agent_wait_log("ticket.connect refused: not accepted on "
	                         "this machine (unattended = view",
	    T_WAIT));
	ck_assert(tl_broker_wait_log(
	    &br, "ticket.connect to " WS42 ": declined", 1, T_WAIT));
	ck_assert_int_eq(hl.accepted, 0);
	tl_client_free(h);
}
END_TEST

/* unattended = no (the default), same broker policy: the agent refuses
 * ticket.connect and says why; the broker logs the refusal; the helper
 * has "accepted" and nothing more (the ticket waits for its expiry). */
START_TEST(t_unattended_off)
{
	struct tl_client *h;

	policy_nobody_view();
	agent_sessions = "";
	snprintf(agent_prompt, sizeof(agent_prompt), "unattended = no\n");
	agent_start(1, 2);
	h = helper_login();
	answer("offer", "yes");
	offer(h, "view", helper_addr());
	ck_assert(wait_update(h, "state", "accepted", T_WAIT));
	ck_assert_msg(agent_wait_log("ticket.connect refused: not accepted "
	                             "on this machine (unattended access is "
	                             "off in raagent.conf)",
	                  T_WAIT),
	    "no refusal in %s", agent_log);
	/* The broker logs the agent's answer (1007 declined). */
	ck_assert_msg(tl_broker_wait_log(&br,
	                  "ticket.connect to " WS42 ": declined", 1, T_WAIT),
	    "no refusal in %s", br.log);
	/* and ends the offer at once, telling the helper why */
	ck_assert_msg(wait_update(h, "reason", "agent_refused", T_WAIT),
	    "no offer.update cancelled/agent_refused");
	ck_assert_int_eq(tl_broker_audit_count(&br, "\"agent_refused\""), 1);
	ck_assert(!wait_update(h, "state", "connected", 1000));
	ck_assert_int_eq(hl.accepted, 0);
	ck_assert_int_eq(rfb.accepted, 0);
	ck_assert_int_eq(agent_log_count("accepted (unattended)"), 0);
	ck_assert_int_eq(tl_broker_audit_count(&br, "session_connected"), 0);
	tl_client_free(h);
}
END_TEST

/* An unknown RFB message closes the tunnel with a clear log line. */
START_TEST(t_rfb_unknown_type)
{
	struct tl_client *h;
	static const unsigned char bad[1] = {200};

	agent_start(0, 3);
	h = direct_session("view");
	rp_tls_write(hl.t, rfb_hs, sizeof(rfb_hs));
	rp_tls_write(hl.t, bad, 1);
	ck_assert(tl_run_until(base, hl_gone, NULL, T_WAIT));
	ck_assert(tl_run_until(base, is_set, &rfb.closed, T_WAIT));
	ck_assert(agent_wait_log("unknown RFB client message type 200", 2000));
	tl_client_free(h);
}
END_TEST

/* A listener with the wrong key is refused (no relay allowed here): no
 * byte reaches the RFB server. */
START_TEST(t_wrong_psk)
{
	struct tl_client *h = helper_login();

	agent_start(0, 2);
	hl.wrong = 1;
	answer("offer", "yes");
	offer(h, "view", helper_addr());
	ck_assert(tl_run_until(base, is_set, &hl.failed, T_WAIT));
	ck_assert_int_eq(hl.ready, 0);
	ck_assert(agent_wait_log("no connection to the helper", T_WAIT));
	ck_assert_int_eq(rfb.accepted, 0);
	ck_assert_int_eq(tl_broker_audit_count(&br, "session_connected"), 0);
	tl_client_free(h);
}
END_TEST

/* Decline: no connection at all. */
START_TEST(t_decline)
{
	struct tl_client *h = helper_login();
	char p[800];

	agent_start(1, 2);
	answer("offer", "no");
	offer(h, "view", helper_addr());
	ck_assert(wait_update(h, "state", "declined", T_WAIT));
	tl_run_until(base, NULL, NULL, 500);
	ck_assert_int_eq(hl.accepted, 0);
	ck_assert_int_eq(rfb.accepted, 0);
	/* The prompt script was asked, with the helper's name. */
	snprintf(p, sizeof(p), "%s/prompts.log", agent_dir);
	{
		FILE *f = fopen(p, "r");
		char line[512] = "";
		ck_assert_ptr_nonnull(f);
		ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
		fclose(f);
		ck_assert_ptr_nonnull(strstr(line, "offer"));
		ck_assert_ptr_nonnull(strstr(line, hl.ticket));
		ck_assert_ptr_nonnull(strstr(line, "CORP\\alice"));
		ck_assert_ptr_nonnull(strstr(line, "CORP\\bob"));
	}
	tl_client_free(h);
}
END_TEST

/* The novice expires the ticket through the local socket: tunnel down. */
START_TEST(t_expire_tears_down)
{
	struct tl_client *h;
	char out[8192];

	agent_start(0, 3);
	h = direct_session("view");
	ck_assert_int_eq(agent_cmd("tickets", NULL, out, sizeof(out)), 0);
	ck_assert_msg(strstr(out, hl.ticket) != NULL, "tickets: %s", out);
	ck_assert_int_eq(agent_cmd("expire", hl.ticket, out, sizeof(out)), 0);
	ck_assert_msg(strstr(out, "revoked") != NULL, "expire: %s", out);
	ck_assert_msg(tl_run_until(base, hl_gone, NULL, T_WAIT),
	    "tunnel still up after expire");
	ck_assert(tl_run_until(base, is_set, &rfb.closed, T_WAIT));
	ck_assert(tl_broker_wait_audit(&br, "ticket_revoked", 1, T_WAIT));
	tl_client_free(h);
}
END_TEST

/* The helper cancels: ticket.revoked tears the tunnel down. */
START_TEST(t_cancel_tears_down)
{
	struct tl_client *h;

	agent_start(0, 3);
	h = direct_session("view");
	tl_client_call(h, "offer.cancel",
	    json_pack("{s:s}", "ticket", hl.ticket), T_WAIT, NULL);
	ck_assert_msg(tl_run_until(base, hl_gone, NULL, T_WAIT),
	    "tunnel still up after cancel");
	ck_assert(tl_run_until(base, is_set, &rfb.closed, T_WAIT));
	tl_client_free(h);
}
END_TEST

/* The helper cancels while the agent cannot hear the broker (its
 * connection replaced, the agent stopped): the session between agent and
 * helper goes on until the agent is back. It then names the tickets it
 * holds (agent.register "tickets"), the broker tells it this one is
 * closed, and the tunnel ends. */
START_TEST(t_cancel_while_away)
{
	struct tl_client *h, *intruder;
	json_t *p;
	char why[256];

	agent_start(0, 3);
	h = direct_session("view");
	ck_assert_int_eq(kill(agent_pid, SIGSTOP), 0);
	intruder = tl_client_connect(
	    base, br.pki, br.port, "ws-042", T_WAIT, why, sizeof(why));
	ck_assert_ptr_nonnull(intruder);
	ck_assert_int_eq(tl_client_agent_login(intruder, WS42, "CORP\\bob"), 0);
	tl_client_call(h, "offer.cancel",
	    json_pack("{s:s}", "ticket", hl.ticket), T_WAIT, NULL);
	/* told to the connection the broker knows, not to our agent */
	p = tl_client_wait_request(intruder, "ticket.revoked", T_WAIT, NULL);
	ck_assert_ptr_nonnull(p);
	json_decref(p);
	tl_client_free(intruder);
	ck_assert_msg(!tl_run_until(base, hl_gone, NULL, 500),
	    "the tunnel ended while the agent was stopped");
	ck_assert_int_eq(kill(agent_pid, SIGCONT), 0);
	ck_assert_msg(tl_run_until(base, hl_gone, NULL, 3 * T_WAIT),
	    "tunnel still up after the agent came back (%s)", agent_log);
	ck_assert(tl_run_until(base, is_set, &rfb.closed, T_WAIT));
	ck_assert(agent_wait_log("closed by the broker", T_WAIT));
	/* The session's end is audited although the ticket was closed
	 * before the agent could report it: a late line with its figures. */
	ck_assert_msg(tl_broker_wait_audit(&br, "\"late\":true", 1, T_WAIT),
	    "no late session_disconnected (%s)", br.audit);
	ck_assert_int_eq(
	    tl_broker_audit_count(&br, "\"agent_session_seconds\""), 1);
	tl_client_free(h);
}
END_TEST

/* The session ends while the broker is down: raagent keeps the
 * session.event "disconnected" (with the time it happened) and sends it
 * once registered with the restarted broker, which restored the
 * connected ticket: its session_disconnected carries the agent's
 * figures, once. */
START_TEST(t_end_while_broker_down)
{
	struct tl_client *h;

	agent_start(0, 3);
	h = direct_session("view");
	ck_assert_int_eq(tl_broker_stop(&br, SIGTERM, 10000, NULL), 0);
	ck_assert(agent_wait_log("broker connection closed", T_WAIT));
	rp_tls_close(hl.t);
	ck_assert(tl_run_until(base, is_set, &rfb.closed, T_WAIT));
	ck_assert(agent_wait_log("session ended after", T_WAIT));
	ck_assert(agent_wait_log("queued: broker not connected", T_WAIT));
	ck_assert_int_eq(
	    tl_broker_audit_count(&br, "\"event\":\"session_disconnected\""),
	    0);
	ck_assert_int_eq(tl_broker_start(&br), 0);
	ck_assert_msg(tl_broker_wait_audit(&br,
	                  "\"event\":\"session_disconnected\"", 1, 3 * T_WAIT),
	    "no session_disconnected after the broker came back (%s)",
	    agent_log);
	ck_assert_int_eq(
	    tl_broker_audit_count(&br, "\"agent_session_seconds\""), 1);
	ck_assert_int_eq(tl_broker_audit_count(&br, "\"agent_bytes\""), 1);
	ck_assert_int_eq(tl_broker_audit_count(&br, "\"at\":"), 1);
	ck_assert_int_eq(
	    tl_broker_audit_count(&br, "\"reason\":\"disconnected\""), 1);
	ck_assert(agent_wait_log("sending 1 session.event(s) queued", T_WAIT));
	tl_run_until(base, NULL, NULL, 500); /* nothing sent twice */
	ck_assert_int_eq(
	    tl_broker_audit_count(&br, "\"event\":\"session_disconnected\""),
	    1);
	ck_assert_int_eq(agent_log_count("broker refused session.event"), 0);
	tl_client_free(h);
}
END_TEST

/* The broker goes away and comes back; another connection for the
 * machine replaces ours: the agent reconnects each time (bounded backoff,
 * cap 2 s here) and resumes its TLS session when the broker still knows
 * the ticket key. */
START_TEST(t_reconnect)
{
	struct tl_client *intruder;
	char why[256];
	uint64_t t0;

	agent_start(0, 2);
	ck_assert_int_eq(agent_log_count("resumed session"), 0);
	/* Replaced by a second connection with the same certificate. */
	intruder = tl_client_connect(
	    base, br.pki, br.port, "ws-042", T_WAIT, why, sizeof(why));
	ck_assert_ptr_nonnull(intruder);
	ck_assert_int_eq(tl_client_agent_login(intruder, WS42, "CORP\\bob"), 0);
	ck_assert(agent_wait_log("broker connection closed", T_WAIT));
	ck_assert_msg(agent_wait_count("registered with the broker", 2, T_WAIT),
	    "raagent did not come back");
	ck_assert(tl_broker_wait_audit(&br, "agent_replaced", 2, T_WAIT));
	ck_assert_msg(agent_wait_log("resumed session", T_WAIT),
	    "no TLS session resumption on reconnect");
	tl_client_free(intruder);
	/* Broker restart. */
	t0 = tl_now_ms();
	ck_assert_int_eq(tl_broker_restart(&br), 0);
	ck_assert_msg(
	    agent_wait_count("registered with the broker", 3, 3 * T_WAIT),
	    "raagent did not come back after the restart");
	ck_assert_uint_lt(tl_now_ms() - t0, 3 * T_WAIT);
	ck_assert_int_ge(agent_log_count("reconnecting to the broker in"), 2);
}
END_TEST

/* protocol = raw: nothing is parsed (input passes in view mode), and
 * start_command gets the mode and the ticket. */
START_TEST(t_raw_start_command)
{
	struct tl_client *h = helper_login();
	unsigned char got[64];
	char p[800], line[256] = "", want[128];
	FILE *f;

	agent_raw = 1;
	agent_start(0, 3);
	answer("offer", "yes");
	offer(h, "view", helper_addr());
	ck_assert(tl_run_until(base, is_set, &hl.ready, T_WAIT));
	ck_assert(wait_bytes(hl.in, 12, T_WAIT)); /* the server's greeting */
	rp_tls_write(hl.t, key_a, sizeof(key_a));
	ck_assert(wait_bytes(rfb.in, 8, T_WAIT));
	ck_assert_uint_eq(srv_take(got, sizeof(got)), 8);
	ck_assert_int_eq(memcmp(got, key_a, 8), 0);
	snprintf(p, sizeof(p), "%s/start.log", agent_dir);
	/* start_command runs detached: wait for its line. */
	for (int i = 0; i < 100 && line[0] == '\0'; i++) {
		if ((f = fopen(p, "r")) != NULL) {
			if (fgets(line, sizeof(line), f) == NULL)
				line[0] = '\0';
			fclose(f);
		}
		if (line[0] == '\0')
			tl_run_until(base, NULL, NULL, 50);
	}
	snprintf(want, sizeof(want), "view %s\n", hl.ticket);
	ck_assert_str_eq(line, want);
	rp_tls_close(hl.t);
	ck_assert(tl_run_until(base, is_set, &rfb.closed, T_WAIT));
	tl_client_free(h);
}
END_TEST

/* Sessions of ws-042 as machines.list shows them to the helper. */
static char *
listed_sessions(struct tl_client *h)
{
	json_t *res = NULL, *m;
	size_t i;
	char *out = NULL;

	ck_assert_int_eq(
	    tl_client_call(h, "machines.list", json_object(), T_WAIT, &res), 0);
	json_array_foreach(json_object_get(res, "machines"), i, m)
	{
		if (!strcmp(jstr(m, "fqdn"), WS42))
			out = json_dumps(
			    json_object_get(m, "sessions"), JSON_COMPACT);
	}
	json_decref(res);
	return out ? out : strdup("");
}

/* SIGHUP rereads the static sessions; the change reaches the broker
 * (agent.sessions) and the helper's machines.list. A broken file changes
 * nothing. */
START_TEST(t_sessions_reload)
{
	struct tl_client *h;
	char *l, text[8192];
	FILE *f;
	size_t n;
	int seen = 0;

	agent_start(0, 3);
	h = helper_login();
	l = listed_sessions(h);
	ck_assert_msg(strstr(l, "CORP\\\\bob") != NULL, "%s", l);
	ck_assert_ptr_null(strstr(l, "eve"));
	free(l);
	f = fopen(agent_conf, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	{
		char *p = strstr(text, "session = CORP\\bob graphical\n");
		char out[8300];
		ck_assert_ptr_nonnull(p);
		p += strlen("session = CORP\\bob graphical\n");
		snprintf(out, sizeof(out), "%.*s%s%s", (int)(p - text), text,
		    "session = CORP\\eve console locked\n", p);
		write_file(agent_conf, out, 0644);
	}
	kill(agent_pid, SIGHUP);
	for (int i = 0; i < 40 && !seen; i++) {
		l = listed_sessions(h);
		seen = strstr(l, "CORP\\\\eve") != NULL &&
		    strstr(l, "\"locked\":true") != NULL;
		free(l);
		if (!seen)
			tl_run_until(base, NULL, NULL, 100);
	}
	ck_assert_msg(seen, "the new session never reached the broker");
	/* A broken file: refused, the sessions stay. */
	write_file(agent_conf, "[agent]\nbogus = 1\n", 0644);
	kill(agent_pid, SIGHUP);
	ck_assert(agent_wait_log("configuration not reloaded", T_WAIT));
	l = listed_sessions(h);
	ck_assert_ptr_nonnull(strstr(l, "eve"));
	free(l);
	tl_client_free(h);
}
END_TEST

/* ---- the broker's name --------------------------------------------------- */

/* A DNS server on 127.0.0.1 in this process (the agent is pointed at it
 * with [agent] nameserver, so no query ever leaves the machine): counts
 * the queries and answers NXDOMAIN, or nothing at all. */
struct fake_dns {
	evutil_socket_t fd;
	struct evdns_server_port *port;
	uint16_t portno;
	int silent;
	int queries, want;
	struct evdns_server_request *held[64]; /* silent: dropped at the end */
	int nheld;
};
static struct fake_dns fdns;

static void
fake_dns_cb(struct evdns_server_request *req, void *arg)
{
	struct fake_dns *f = arg;

	f->queries++;
	if (f->silent && f->nheld < 64) {
		f->held[f->nheld++] = req;
		return;
	}
	if (f->silent)
		evdns_server_request_drop(req);
	else
		evdns_server_request_respond(req, DNS_ERR_NOTEXIST);
}

static int
dns_queried(void *arg)
{
	const struct fake_dns *f = arg;

	return f->queries >= f->want;
}

static void
fake_dns_start(int silent)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int len;

	memset(&fdns, 0, sizeof(fdns));
	fdns.silent = silent;
	fdns.fd = socket(AF_INET, SOCK_DGRAM, 0);
	ck_assert_int_ge(fdns.fd, 0);
	len = tl_loopback((struct sockaddr *)&ss, 0, 0);
	ck_assert_int_eq(bind(fdns.fd, (struct sockaddr *)&ss, len), 0);
	ck_assert_int_eq(getsockname(fdns.fd, (struct sockaddr *)&ss, &sl), 0);
	fdns.portno = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	evutil_make_socket_nonblocking(fdns.fd);
	fdns.port = evdns_add_server_port_with_base(
	    base, fdns.fd, 0, fake_dns_cb, &fdns);
	ck_assert_ptr_nonnull(fdns.port);
	snprintf(agent_extra, sizeof(agent_extra),
	    "nameserver = 127.0.0.1:%u\nresolve_timeout = 2\n", fdns.portno);
}

static void
fake_dns_stop(void)
{
	for (int i = 0; i < fdns.nheld; i++)
		evdns_server_request_drop(fdns.held[i]);
	fdns.nheld = 0;
	evdns_close_server_port(fdns.port);
	close(fdns.fd);
}

/* Stops the agent with SIGTERM; its exit status (-1: killed). */
static int
agent_stop_status(void)
{
	int st;

	kill(agent_pid, SIGTERM);
	for (int i = 0; i < 50; i++) {
		if (waitpid(agent_pid, &st, WNOHANG) == agent_pid) {
			agent_pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		}
		usleep(100000);
	}
	kill(agent_pid, SIGKILL);
	waitpid(agent_pid, &st, 0);
	agent_pid = 0;
	return -1;
}

/* broker = localhost:PORT: answered from /etc/hosts by the agent's own
 * resolver (the fake DNS server sees no query), and the agent registers. */
START_TEST(t_broker_localhost)
{
	char broker[64];

	fake_dns_start(0);
	snprintf(broker, sizeof(broker), "localhost:%u", br.port);
	agent_broker = broker;
	agent_start(0, 2);
	ck_assert(agent_wait_log("registered with the broker", T_WAIT));
	ck_assert_int_eq(fdns.queries, 0);
	ck_assert_int_eq(agent_log_count("name lookup failed"), 0);
	ck_assert_int_eq(agent_stop_status(), 0);
	ck_assert_int_eq(agent_log_count("AddressSanitizer"), 0);
	fake_dns_stop();
}
END_TEST

/* A name the (fake) DNS says does not exist: each attempt is a failed
 * lookup with a log line naming the host, retried with backoff. */
START_TEST(t_broker_name_fails)
{
	char out[4096];

	fake_dns_start(0);
	agent_broker = "broker.corp.test:5500";
	agent_nowait = 1;
	agent_start(0, 2);
	ck_assert_msg(agent_wait_count("broker broker.corp.test: name lookup "
	                               "failed",
	                  3, T_WAIT),
	    "no retried lookup failures (see %s)", agent_log);
	ck_assert_int_ge(agent_log_count("reconnecting to the broker in"), 3);
	ck_assert_int_ge(fdns.queries, 3);
	/* The loop serves the control socket between attempts. */
	ck_assert_int_eq(agent_cmd("tickets", NULL, out, sizeof(out)), 1);
	ck_assert_msg(strstr(out, "not connected") != NULL, "%s", out);
	ck_assert_int_eq(agent_stop_status(), 0);
	ck_assert_int_eq(agent_log_count("AddressSanitizer"), 0);
	fake_dns_stop();
}
END_TEST

/* A DNS server that never answers: while the lookup is pending the loop
 * keeps serving (the control socket answers at once, SIGHUP is handled),
 * the lookup gives up after resolve_timeout and is retried; SIGTERM
 * during a pending lookup cancels it cleanly (exit 0, no ASan report). */
START_TEST(t_broker_name_silent)
{
	char out[4096];
	uint64_t t0;

	fake_dns_start(1);
	agent_broker = "broker.corp.test:5500";
	agent_nowait = 1;
	agent_start(0, 2);
	fdns.want = 1;
	ck_assert_msg(tl_run_until(base, dns_queried, &fdns, T_WAIT),
	    "no query reached the fake DNS (see %s)", agent_log);
	t0 = tl_now_ms();
	ck_assert_int_eq(agent_cmd("tickets", NULL, out, sizeof(out)), 1);
	ck_assert_msg(strstr(out, "not connected") != NULL, "%s", out);
	ck_assert_uint_lt(tl_now_ms() - t0, 1500);
	kill(agent_pid, SIGHUP);
	ck_assert(agent_wait_log("SIGHUP: static sessions reread", T_WAIT));
	ck_assert_int_eq(agent_log_count("name lookup failed"), 0);
	ck_assert_msg(agent_wait_log("broker broker.corp.test: name lookup "
	                             "failed: no answer within 2 s",
	                  T_WAIT),
	    "the lookup never timed out (see %s)", agent_log);
	ck_assert(agent_wait_log("reconnecting to the broker in", T_WAIT));
	/* The next attempt asks again; stop while it is pending. */
	fdns.want = fdns.queries + 1;
	ck_assert(tl_run_until(base, dns_queried, &fdns, T_WAIT));
	ck_assert_int_eq(agent_log_count("name lookup failed"), 1);
	ck_assert_int_eq(agent_stop_status(), 0);
	ck_assert_int_eq(agent_log_count("AddressSanitizer"), 0);
	ck_assert_int_eq(agent_log_count("LeakSanitizer"), 0);
	fake_dns_stop();
}
END_TEST

/* ---- a real VNC server (x11vnc on Xvfb), when installed ------------------ */

static pid_t
spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		setpgid(0, 0);
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static void
reap(pid_t pid)
{
	int st;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	for (int i = 0; i < 30; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return;
		usleep(100000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
}

static int
port_open(uint16_t port)
{
	struct sockaddr_storage ss;
	int len = tl_loopback((struct sockaddr *)&ss, 0, port);
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	ok = connect(fd, (struct sockaddr *)&ss, (socklen_t)len) == 0;
	close(fd);
	return ok;
}

static size_t
need(struct evbuffer *b, size_t n)
{
	wait_bytes(b, n, T_WAIT);
	return evbuffer_get_length(b);
}

/* The agent's RFB filter in front of a real x11vnc: the whole handshake
 * and a framebuffer update go through; skipped without x11vnc/Xvfb. */
START_TEST(t_x11vnc)
{
	char disp[16], port[16], xlog[700], vlog[700], *xa[8], *va[16];
	pid_t xpid, vpid;
	struct tl_client *h;
	unsigned char b[64];
	uint16_t vport = tl_free_port();
	int dn = 50 + (int)(getpid() % 200), has_none = 0;
	size_t n;

	if (access("/usr/bin/x11vnc", X_OK) != 0 ||
	    access("/usr/bin/Xvfb", X_OK) != 0) {
		fprintf(stderr,
		    "t_x11vnc: x11vnc or Xvfb not installed: "
		    "skipped\n");
		return;
	}
	snprintf(disp, sizeof(disp), ":%d", dn);
	snprintf(port, sizeof(port), "%u", vport);
	snprintf(xlog, sizeof(xlog), "%s/xvfb.log", br.dir);
	snprintf(vlog, sizeof(vlog), "%s/x11vnc.log", br.dir);
	xa[0] = "Xvfb";
	xa[1] = disp;
	xa[2] = "-screen";
	xa[3] = "0";
	xa[4] = "320x200x24";
	xa[5] = "-nolisten";
	xa[6] = "tcp";
	xa[7] = NULL;
	xpid = spawn(xa, xlog);
	usleep(500000);
	{
		char *v[] = {"x11vnc", "-display", disp, "-rfbport", port,
		    "-localhost", "-nopw", "-forever", "-shared", "-norc",
		    "-nossl", "-noxdamage", NULL};
		memcpy(va, v, sizeof(v));
	}
	vpid = spawn(va, vlog);
	for (int i = 0; i < 100 && !port_open(vport); i++)
		usleep(100000);
	if (!port_open(vport)) {
		reap(vpid);
		reap(xpid);
		ck_abort_msg("x11vnc did not listen (see %s)", vlog);
	}
	target_override = vport;
	agent_start(0, 3);
	h = helper_login();
	answer("offer", "yes");
	offer(h, "view", helper_addr());
	ck_assert_msg(
	    tl_run_until(base, is_set, &hl.ready, T_WAIT), "no tunnel");
	ck_assert_uint_ge(need(hl.in, 12), 12);
	evbuffer_remove(hl.in, b, 12);
	ck_assert_int_eq(memcmp(b, "RFB 003.", 8), 0);
	rp_tls_write(hl.t, "RFB 003.008\n", 12);
	ck_assert_uint_ge(need(hl.in, 1), 1);
	evbuffer_remove(hl.in, b, 1);
	n = b[0];
	ck_assert_uint_gt(n, 0);
	ck_assert_uint_ge(need(hl.in, n), n);
	evbuffer_remove(hl.in, b + 1, n);
	for (size_t i = 1; i <= n; i++)
		has_none |= b[i] == 1;
	ck_assert_msg(has_none, "x11vnc offers no None security");
	rp_tls_write(hl.t, "\x01", 1);
	ck_assert_uint_ge(need(hl.in, 4), 4);
	evbuffer_remove(hl.in, b, 4);
	ck_assert_int_eq(b[3], 0);     /* SecurityResult OK */
	rp_tls_write(hl.t, "\x01", 1); /* ClientInit shared */
	ck_assert_uint_ge(need(hl.in, 24), 24);
	evbuffer_remove(hl.in, b, 24);
	ck_assert_uint_eq((unsigned)(b[0] << 8 | b[1]), 320); /* width */
	ck_assert_uint_eq((unsigned)(b[2] << 8 | b[3]), 200);
	n = (size_t)b[20] << 24 | (size_t)b[21] << 16 | (size_t)b[22] << 8 |
	    b[23];
	ck_assert_uint_ge(need(hl.in, n), n);
	evbuffer_drain(hl.in, n);
	/* View mode: input is dropped, the update request passes. */
	rp_tls_write(hl.t, key_a, sizeof(key_a));
	rp_tls_write(hl.t, ptr_ev, sizeof(ptr_ev));
	{
		unsigned char req[10] = {3, 0, 0, 0, 0, 0, 1, 64, 0, 200};
		rp_tls_write(hl.t, req, sizeof(req));
	}
	ck_assert_msg(need(hl.in, 4) >= 4, "no FramebufferUpdate");
	evbuffer_remove(hl.in, b, 4);
	ck_assert_int_eq(b[0], 0); /* FramebufferUpdate */
	fprintf(stderr,
	    "t_x11vnc: x11vnc %ux%u through the agent, "
	    "FramebufferUpdate received\n",
	    320u, 200u);
	ck_assert_ptr_nonnull(hl.t);
	rp_tls_close(hl.t);
	tl_run_until(base, hl_gone, NULL, T_WAIT);
	ck_assert(tl_broker_wait_audit(&br, "session_disconnected", 1, T_WAIT));
	tl_client_free(h);
	agent_stop();
	target_override = 0;
	reap(vpid);
	reap(xpid);
}
END_TEST

/* ---- relay: the helper's side ------------------------------------------ */

struct relay_helper {
	struct rp_tls_ctx *ctx; /* to the broker */
	struct rp_tls *t;       /* outer, before the splice */
	struct evbuffer *in;
	int ready, closed;
	struct cl_splice *sp;
	struct rp_tls *inner;
	int inner_ready;
	struct evbuffer *inner_in;
	int next_id;
};
static struct relay_helper rh;

static void
rh_ready(struct rp_tls *t, void *arg)
{
	(void)t;
	(void)arg;
	rh.ready = 1;
}

static void
rh_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	(void)t;
	(void)arg;
	evbuffer_add_buffer(rh.in, in);
}

static void
rh_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	(void)t;
	(void)why;
	(void)msg;
	(void)arg;
	rh.closed = 1;
	rh.t = NULL;
}

static const struct rp_tls_cbs rh_cbs = {
    .on_ready = rh_ready, .on_read = rh_read, .on_close = rh_close};

static int
rh_line_ready(void *arg)
{
	struct evbuffer_ptr p = evbuffer_search(rh.in, "\n", 1, NULL);

	(void)arg;
	return p.pos >= 0 || rh.closed;
}

static json_t *
rh_call(const char *method, json_t *params)
{
	json_t *m = json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id",
	    ++rh.next_id, "method", method, "params", params);
	char *s = json_dumps(m, JSON_COMPACT), *l;
	json_t *j = NULL;
	size_t n;

	rp_tls_write(rh.t, s, strlen(s));
	rp_tls_write(rh.t, "\n", 1);
	free(s);
	json_decref(m);
	for (int i = 0; i < 20; i++) {
		tl_run_until(base, rh_line_ready, NULL, T_WAIT);
		l = evbuffer_readln(rh.in, &n, EVBUFFER_EOL_LF);
		if (l == NULL)
			return NULL;
		j = json_loads(l, 0, NULL);
		free(l);
		if (json_integer_value(json_object_get(j, "id")) == rh.next_id)
			return j;
		json_decref(j);
	}
	return NULL;
}

static void
in_ready(struct rp_tls *t, void *arg)
{
	(void)t;
	(void)arg;
	rh.inner_ready = 1;
}

static void
in_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	(void)t;
	(void)arg;
	evbuffer_add_buffer(rh.inner_in, in);
}

static void
in_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	(void)t;
	(void)why;
	(void)msg;
	(void)arg;
	rh.inner = NULL;
}

static const struct rp_tls_cbs in_cbs = {
    .on_ready = in_ready, .on_read = in_read, .on_close = in_close};

static void
rh_sp_closed(struct cl_splice *s, const char *why, void *arg)
{
	(void)s;
	(void)why;
	(void)arg;
	rh.sp = NULL;
}

/* Joins the relay as the helper and runs the PSK-TLS server inside. */
static void
relay_helper_join(void)
{
	struct rp_tls_opts o;
	struct sockaddr_storage ss;
	char err[256], ca[700], *b64;
	unsigned char buf[64];
	int len, sp[2];
	json_t *j;
	struct cl_end a = {0}, b = {0};
	struct cl_splice_cbs cbs = {.on_close = rh_sp_closed};

	memset(&rh, 0, sizeof(rh));
	memset(&o, 0, sizeof(o));
	o.role = RP_TLS_CLIENT;
	o.stream = 1;
	snprintf(ca, sizeof(ca), "%s/ca.pem", br.pki);
	o.ca_file = ca;
	rh.ctx = rp_tls_ctx_new(&o, err, sizeof(err));
	ck_assert_msg(rh.ctx != NULL, "%s", err);
	rh.in = evbuffer_new();
	rh.inner_in = evbuffer_new();
	len = tl_loopback((struct sockaddr *)&ss, 0, (uint16_t)br.port);
	rh.t = rp_tls_connect(rh.ctx, base, (struct sockaddr *)&ss, len,
	    "localhost", &rh_cbs, NULL);
	ck_assert(tl_run_until(base, is_set, &rh.ready, T_WAIT));
	j = rh_call(
	    "hello", json_pack("{s:i, s:s}", "version", 1, "role", "helper"));
	ck_assert_ptr_nonnull(json_object_get(j, "result"));
	json_decref(j);
	memcpy(buf, "\0alice\0alice-pw", 15);
	b64 = az_sasl_b64_encode(buf, 15);
	j = rh_call("auth.start",
	    json_pack("{s:s, s:s}", "mechanism", "PLAIN", "initial", b64));
	free(b64);
	ck_assert_ptr_nonnull(json_object_get(j, "result"));
	json_decref(j);
	j = rh_call("relay.join",
	    json_pack("{s:s, s:s}", "ticket", hl.ticket, "side", "helper"));
	ck_assert_msg(
	    !strcmp(jstr(json_object_get(j, "result"), "status"), "paired"),
	    "relay.join did not pair");
	json_decref(j);
	/* Outer TLS <-> socketpair <-> PSK-TLS server (cl_splice, as raoffer
	 * would do it). */
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	evutil_make_socket_nonblocking(sp[0]);
	a.tls = rh.t;
	rh.t = NULL;
	b.bev = bufferevent_socket_new(base, sp[0], BEV_OPT_CLOSE_ON_FREE);
	rh.sp = cl_splice_new(base, a, b, &cbs, NULL);
	ck_assert_ptr_nonnull(rh.sp);
	cl_splice_push(rh.sp, 0, rh.in); /* inner bytes already here */
	rh.inner = rp_tls_accept(hl.ctx, base, sp[1], &in_cbs, NULL);
	ck_assert_ptr_nonnull(rh.inner);
	ck_assert_msg(tl_run_until(base, is_set, &rh.inner_ready, T_WAIT),
	    "inner PSK-TLS through the relay failed");
}

/* The helper's address does not answer: the relay carries the bytes. */
START_TEST(t_relay)
{
	struct tl_client *h = helper_login();
	char dead[64];
	unsigned char got[64];
	uint16_t port = tl_free_port(); /* closed: nothing listens */

	agent_start(1, 2);
	snprintf(dead, sizeof(dead), "127.0.0.1:%u", port);
	answer("offer", "yes");
	offer(h, "view", dead);
	/* The agent joins first; the broker tells the helper. */
	ck_assert_msg(wait_update(h, "relay", "waiting", 3 * T_WAIT),
	    "no offer.update relay waiting (agent log %s)", agent_log);
	relay_helper_join();
	ck_assert_msg(wait_bytes(rh.inner_in, 12, T_WAIT),
	    "no RFB greeting through the relay");
	ck_assert_int_eq(
	    memcmp(evbuffer_pullup(rh.inner_in, 12), "RFB 003.008\n", 12), 0);
	rp_tls_write(rh.inner, rfb_hs, sizeof(rfb_hs));
	rp_tls_write(rh.inner, key_a, sizeof(key_a)); /* view: dropped */
	rp_tls_write(rh.inner, fbur, sizeof(fbur));
	ck_assert(wait_bytes(rfb.in, 24, T_WAIT));
	tl_run_until(base, NULL, NULL, 200);
	ck_assert_uint_eq(srv_take(got, sizeof(got)), 24);
	ck_assert_int_eq(memcmp(got + 14, fbur, 10), 0);
	ck_assert(agent_wait_log("connected via relay", T_WAIT));
	ck_assert(tl_broker_wait_audit(&br, "relay_started", 1, T_WAIT));
	ck_assert(wait_update(h, "state", "connected", T_WAIT));
	/* The helper ends: everything comes down. */
	rp_tls_close(rh.inner);
	ck_assert(tl_run_until(base, is_set, &rfb.closed, T_WAIT));
	ck_assert(tl_broker_wait_audit(&br, "session_disconnected", 1, T_WAIT));
	tl_client_free(h);
}
END_TEST

/* ---- the benchmark -------------------------------------------------------- */

#define BENCH_BYTES (64u * 1024u * 1024u)
#define BENCH_PINGS 2000

struct bench_end {
	struct rp_tls *tls;
	struct bufferevent *bev;
	struct evbuffer *in;
};

static void
bench_write(struct bench_end *e, const void *p, size_t n)
{
	if (e->tls != NULL)
		rp_tls_write(e->tls, p, n);
	else
		bufferevent_write(e->bev, p, n);
}

static size_t
bench_out(struct bench_end *e)
{
	if (e->tls != NULL)
		return rp_tls_out_pending(e->tls);
	return evbuffer_get_length(bufferevent_get_output(e->bev));
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sends BENCH_BYTES to the echo server and reads them back; then
 * BENCH_PINGS one-byte round trips. */
static void
bench_run(const char *name, struct bench_end *e)
{
	static unsigned char chunk[65536];
	size_t sent = 0;
	double t0, t1, t2;

	t0 = now_s();
	while (evbuffer_get_length(e->in) < BENCH_BYTES) {
		while (sent < BENCH_BYTES && bench_out(e) < 1024 * 1024) {
			bench_write(e, chunk, sizeof(chunk));
			sent += sizeof(chunk);
		}
		event_base_loop(base, EVLOOP_ONCE);
		if (now_s() - t0 > 60)
			break;
		if (evbuffer_get_length(e->in) > 4 * 1024 * 1024 &&
		    evbuffer_get_length(e->in) < BENCH_BYTES)
			continue;
	}
	t1 = now_s();
	ck_assert_uint_ge(evbuffer_get_length(e->in), BENCH_BYTES);
	evbuffer_drain(e->in, evbuffer_get_length(e->in));
	for (int i = 0; i < BENCH_PINGS; i++) {
		bench_write(e, "p", 1);
		while (evbuffer_get_length(e->in) < 1)
			event_base_loop(base, EVLOOP_ONCE);
		evbuffer_drain(e->in, 1);
	}
	t2 = now_s();
	printf("bench %-8s throughput %7.1f MB/s (%u MiB echoed, counted "
	       "once)  round trip %6.1f us\n",
	    name, (double)BENCH_BYTES / (t1 - t0) / 1e6, BENCH_BYTES >> 20,
	    (t2 - t1) / BENCH_PINGS * 1e6);
	fflush(stdout);
}

static void
bench_bev_read(struct bufferevent *bev, void *arg)
{
	evbuffer_add_buffer(
	    ((struct bench_end *)arg)->in, bufferevent_get_input(bev));
}

START_TEST(t_bench)
{
	struct tl_client *h;
	struct bench_end e;
	struct sockaddr_storage ss;
	int len, fd;
	char dead[64];

	if (getenv("RABROKER_BENCH_TUNNEL") == NULL)
		return; /* a benchmark, run on demand */
	rfb.echo = 1;
	/* Baseline: plain loopback TCP to the same echo server. */
	memset(&e, 0, sizeof(e));
	e.in = evbuffer_new();
	len = tl_loopback((struct sockaddr *)&ss, 0, rfb.port);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(
	    connect(fd, (struct sockaddr *)&ss, (socklen_t)len), 0);
	evutil_make_socket_nonblocking(fd);
	e.bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(e.bev, bench_bev_read, NULL, NULL, &e);
	bufferevent_enable(e.bev, EV_READ | EV_WRITE);
	bench_run("tcp", &e);
	bufferevent_free(e.bev);
	tl_run_until(base, is_set, &rfb.closed, 2000);
	rfb.bev = NULL;

	/* Direct tunnel (protocol raw: no RFB parsing on the echo). */
	agent_raw = 1;
	agent_start(1, 2);
	h = helper_login();
	answer("offer", "yes");
	offer(h, "view", helper_addr());
	ck_assert(tl_run_until(base, is_set, &hl.ready, T_WAIT));
	memset(&e, 0, sizeof(e));
	e.in = hl.in;
	e.tls = hl.t;
	tl_run_until(base, NULL, NULL, 300);
	bench_run("direct", &e);
	rp_tls_close(hl.t);
	tl_run_until(base, is_set, &rfb.closed, T_WAIT);
	tl_broker_wait_audit(&br, "session_disconnected", 1, T_WAIT);
	rfb.bev = NULL;

	/* Through the relay. */
	snprintf(dead, sizeof(dead), "127.0.0.1:%u", tl_free_port());
	offer(h, "view", dead);
	ck_assert(wait_update(h, "relay", "waiting", 3 * T_WAIT));
	relay_helper_join();
	memset(&e, 0, sizeof(e));
	e.in = rh.inner_in;
	e.tls = rh.inner;
	tl_run_until(base, NULL, NULL, 300);
	bench_run("relay", &e);
	rp_tls_close(rh.inner);
	tl_run_until(base, is_set, &rfb.closed, T_WAIT);
	tl_client_free(h);
}
END_TEST

static Suite *
agent_suite(void)
{
	Suite *s = suite_create("agent");
	TCase *tc = tcase_create("raagent");

	tcase_add_unchecked_fixture(tc, NULL, NULL);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, t_direct_view_control);
	tcase_add_test(tc, t_rfb_unknown_type);
	tcase_add_test(tc, t_wrong_psk);
	tcase_add_test(tc, t_decline);
	tcase_add_test(tc, t_unattended_view);
	tcase_add_test(tc, t_unattended_off);
	tcase_add_test(tc, t_unattended_control);
	tcase_add_test(tc, t_unattended_view_not_control);
	tcase_add_test(tc, t_expire_tears_down);
	tcase_add_test(tc, t_cancel_tears_down);
	tcase_add_test(tc, t_cancel_while_away);
	tcase_add_test(tc, t_end_while_broker_down);
	tcase_add_test(tc, t_relay);
	tcase_add_test(tc, t_reconnect);
	tcase_add_test(tc, t_x11vnc);
	tcase_add_test(tc, t_raw_start_command);
	tcase_add_test(tc, t_sessions_reload);
	tcase_add_test(tc, t_broker_localhost);
	tcase_add_test(tc, t_broker_name_fails);
	tcase_add_test(tc, t_broker_name_silent);
	suite_add_tcase(s, tc);
	/* CK_RUN_CASE=bench RABROKER_BENCH_TUNNEL=1 runs only the benchmark */
	tc = tcase_create("bench");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, t_bench);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	signal(SIGPIPE, SIG_IGN);
	slapd_ok = tl_slapd_start(NULL, &slapd) == 0;
	sr = srunner_create(agent_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (slapd_ok)
		tl_slapd_destroy(&slapd);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
