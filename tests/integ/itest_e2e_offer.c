/*
 * itest_e2e_offer.c - remote assistance end to end with the real
 * programs: slapd (tests/data/corp.ldif), rabrokerd, raagent (static
 * session CORP\bob, prompt script:PATH), raoffer (--password-file,
 * --viewer-port), and a small scripted RFB server as the agent's tunnel
 * target. The test itself plays the helper's VNC viewer on raoffer's
 * viewer port.
 *
 * What is checked, with every process real:
 *   - accept, direct reverse connection: the RFB handshake crosses both
 *     ways, 64 KiB from the server reach the viewer unchanged, the
 *     viewer's FramebufferUpdateRequests reach the server while its
 *     KeyEvent does not (view-only is enforced by the agent), raoffer
 *     exits 0 when the viewer leaves; the audit trail says via direct.
 *   - a reverse connection with the right ticket id and a wrong PSK fails
 *     its handshake, raoffer logs it and keeps waiting; the agent then
 *     connects.
 *   - the ticket is single use: after the session, session.event
 *     connected for the same ticket (a scripted agent with the machine
 *     certificate) is refused and audited as ticket_refused.
 *   - decline: raoffer exits 1 saying "declined by CORP\bob".
 *   - relay: raoffer drops every direct connection (--test-refuse-direct),
 *     the agent falls back to the broker's relay, the broker tells raoffer
 *     (offer.update relay "waiting"), raoffer joins with its own
 *     connection, and the same bytes flow; the audit says via relay.
 *   - raoffer machines lists ws-042 with CORP\bob; a group-readable
 *     password file is refused with exit 2 before anything is sent.
 *
 * slapd is started once in the parent; each test forks (Check) and starts
 * its own broker, agent and RFB server. Every wait is bounded.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "rp_error.h"
#include "rp_log.h"
#include "rp_tls.h"
#include "tl_broker.h"
#include "tl_slapd.h"
#include "tl_util.h"

#define WS42 "ws-042.corp.example"
#define T_WAIT 20000
#define PAYLOAD (64 * 1024)

static struct tl_slapd slapd;
static int slapd_ok;

static struct event_base *base;
static struct tl_broker br;
static int br_ok;
static pid_t agent_pid, rfb_pid;
static char dir[600];
static unsigned rfb_port;

static const char *policy =
    "defaults max-ticket=30m prompt-timeout=10s nobody=decline\n"
    "scope workstations ou=\"ou=Workstations,ou=Computers,dc=corp,"
    "dc=example\"\n"
    "allow control group \"CORP\\helpdesk\" on workstations\n";

/* ---- small helpers ------------------------------------------------------- */

static const char *
build_dir(void)
{
	const char *b = getenv("RABROKER_BUILD_DIR");

	return b != NULL && *b != '\0' ? b : RABROKER_BUILD_DIR;
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	fchmod(fd, mode);
	close(fd);
}

static char *
read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t n;

	if (f == NULL)
		return strdup("");
	buf = calloc(1, 1 << 20);
	n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Waits until the file contains needle; returns a malloc'd copy of the
 * rest of that line (after needle), or NULL on timeout. */
static char *
wait_file(const char *path, const char *needle, unsigned ms)
{
	uint64_t end = tl_now_ms() + ms;

	do {
		char *t = read_file(path), *p = strstr(t, needle), *r;
		if (p != NULL) {
			p += strlen(needle);
			r = strndup(p, strcspn(p, "\n"));
			free(t);
			return r;
		}
		free(t);
		sleep_ms(50);
	} while (tl_now_ms() < end);
	return NULL;
}

/* Standard input for the next spawn (-1: /dev/null). */
static int spawn_stdin = -1;

static pid_t
spawn(const char *const *argv, const char *out, const char *err)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int nul = open("/dev/null", O_RDONLY);
		if (o < 0 || e < 0 || nul < 0)
			_exit(126);
		dup2(spawn_stdin >= 0 ? spawn_stdin : nul, 0);
		dup2(o, 1);
		dup2(e, 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		setsid(); /* no controlling terminal: no tty prompt */
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Exit status, or -1 (killed after timeout_ms), -2 (signal). */
static int
wait_exit(pid_t pid, unsigned timeout_ms)
{
	uint64_t end = tl_now_ms() + timeout_ms;
	int st;

	do {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -2;
		sleep_ms(20);
	} while (tl_now_ms() < end);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

static void
stop_child(pid_t *pid)
{
	if (*pid > 0) {
		kill(*pid, SIGTERM);
		if (wait_exit(*pid, 5000) == -1)
			fprintf(stderr, "child %d needed SIGKILL\n", (int)*pid);
		*pid = 0;
	}
}

/* ---- bounded blocking socket I/O for the viewer and the RFB server ------ */

static int
io_full(int fd, void *buf, size_t len, int wr, unsigned ms)
{
	uint64_t end = tl_now_ms() + ms;
	size_t off = 0;

	while (off < len) {
		struct pollfd p = {fd, wr ? POLLOUT : POLLIN, 0};
		int64_t left = (int64_t)(end - tl_now_ms());
		ssize_t n;
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -1;
		n = wr ? send(fd, (char *)buf + off, len - off, MSG_NOSIGNAL)
		       : recv(fd, (char *)buf + off, len - off, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

static int
connect_local(unsigned port)
{
	struct sockaddr_storage ss;
	int len = tl_loopback((struct sockaddr *)&ss, 0, (uint16_t)port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&ss, (socklen_t)len) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static unsigned char
pattern(size_t i)
{
	return (unsigned char)(i * 7 + (i >> 8));
}

/*
 * The scripted RFB server (a child process): for each connection (at most
 * 4, at most 60 s in all) it runs the RFB 3.8 handshake with security type
 * None, then counts the viewer's bytes; on the first byte after ClientInit
 * it sends PAYLOAD pattern bytes. When the viewer side closes, it writes
 * "got N first T\n" (N bytes after ClientInit, T the type of every message
 * seen, as letters) to DIR/rfb.log.
 */
static void
rfb_serve(int lfd)
{
	int conns;

	alarm(60);
	for (conns = 0; conns < 4; conns++) {
		int fd = accept(lfd, NULL, NULL);
		unsigned char b[PAYLOAD], ver[12], one;
		static const unsigned char sec[2] = {1, 1},
		                           ok[4] = {0, 0, 0, 0};
		unsigned char init[24 + 3];
		size_t got = 0, i, need = 0;
		char types[64] = "", line[160];
		int sent = 0, logfd;

		if (fd < 0)
			_exit(1);
		memset(init, 0, sizeof(init));
		init[1] = 64;
		init[3] = 48;
		init[4] = 32; /* bpp */
		init[23] = 3; /* name length */
		memcpy(init + 24, "e2e", 3);
		if (io_full(fd, "RFB 003.008\n", 12, 1, 10000) != 0 ||
		    io_full(fd, ver, 12, 0, 10000) != 0 ||
		    io_full(fd, (void *)sec, 2, 1, 10000) != 0 ||
		    io_full(fd, &one, 1, 0, 10000) != 0 ||
		    io_full(fd, (void *)ok, 4, 1, 10000) != 0 ||
		    io_full(fd, &one, 1, 0, 10000) != 0 ||
		    io_full(fd, init, sizeof(init), 1, 10000) != 0) {
			close(fd);
			continue;
		}
		for (;;) {
			struct pollfd p = {fd, POLLIN, 0};
			ssize_t n;
			if (poll(&p, 1, 30000) <= 0)
				break;
			n = recv(fd, b, sizeof(b), 0);
			if (n <= 0)
				break;
			/* FramebufferUpdateRequest (3, 10 bytes) and
			 * KeyEvent (4, 8 bytes) are all the viewer sends:
			 * note each message's type */
			for (i = 0; i < (size_t)n; i++) {
				if (need > 0) {
					need--;
					continue;
				}
				if (strlen(types) < 60)
					strcat(types,
					    b[i] == 3       ? "F"
					        : b[i] == 4 ? "K"
					                    : "?");
				need = b[i] == 3 ? 9 : b[i] == 4 ? 7 : 0;
			}
			got += (size_t)n;
			if (!sent) {
				for (i = 0; i < PAYLOAD; i++)
					b[i] = pattern(i);
				if (io_full(fd, b, PAYLOAD, 1, 10000) != 0)
					break;
				sent = 1;
			}
		}
		close(fd);
		snprintf(line, sizeof(line), "got %zu types %s\n", got, types);
		logfd = open(tl_path(dir, "rfb.log"),
		    O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (logfd >= 0) {
			if (write(logfd, line, strlen(line)) < 0) {
			}
			close(logfd);
		}
	}
	_exit(0);
}

static void
start_rfb(void)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(lfd, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(lfd, 8), 0);
	ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	rfb_port = ntohs(sa.sin_port);
	fflush(NULL);
	rfb_pid = fork();
	ck_assert_int_ge(rfb_pid, 0);
	if (rfb_pid == 0) {
		/* Check's SIGTERM handler would take the test's process
		 * group down with us. */
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		rfb_serve(lfd);
	}
	close(lfd);
}

/* ---- the agent --------------------------------------------------------------- */

/* The prompt script answers from DIR/answer (an exit status) after
 * DIR/delay seconds. */
static void
set_answer(int status, int delay)
{
	char t[32];

	snprintf(t, sizeof(t), "%d\n", status);
	write_file(tl_path(dir, "answer"), t, 0644);
	snprintf(t, sizeof(t), "%d\n", delay);
	write_file(tl_path(dir, "delay"), t, 0644);
}

static void
start_agent(void)
{
	char conf[8192], key[700], state[700], script[700], sh[2400];
	const char *argv[6];
	char bin[700];

	snprintf(key, sizeof(key), "%s/ws-042-key.pem", dir);
	{
		char *k = read_file(tl_path(br.pki, "ws-042-key.pem"));
		write_file(key, k, 0600);
		free(k);
	}
	snprintf(state, sizeof(state), "%s/agent-state", dir);
	mkdir(state, 0700);
	snprintf(script, sizeof(script), "%s/prompt.sh", dir);
	snprintf(sh, sizeof(sh),
	    "#!/bin/sh\n"
	    "echo \"prompt $RA_KIND $RA_TICKET $RA_HELPER\" >> %s/prompts\n"
	    "sleep $(cat %s/delay)\n"
	    "exit $(cat %s/answer)\n",
	    dir, dir, dir);
	write_file(script, sh, 0755);
	set_answer(0, 0);
	snprintf(conf, sizeof(conf),
	    "[agent]\n"
	    "broker = 127.0.0.1:%u\n"
	    "server_name = localhost\n"
	    "ca = %s/ca.pem\n"
	    "cert = %s/ws-042.pem\n"
	    "key = %s\n"
	    "fqdn = " WS42 "\n"
	    "state_dir = %s\n"
	    "domain = CORP\n"
	    "backoff_base_ms = 100\n"
	    "backoff_cap = 1\n"
	    "[sessions]\n"
	    "source = static\n"
	    "session = CORP\\bob graphical\n"
	    "[prompt]\n"
	    "command = script:%s\n"
	    "[tunnel]\n"
	    "target = 127.0.0.1:%u\n"
	    "protocol = rfb\n"
	    "connect_timeout = 3\n"
	    "relay = yes\n"
	    "[log]\n"
	    "level = debug\n",
	    br.port, br.pki, br.pki, key, state, script, rfb_port);
	write_file(tl_path(dir, "raagent.conf"), conf, 0644);
	snprintf(bin, sizeof(bin), "%s/client/raagent", build_dir());
	argv[0] = bin;
	argv[1] = "-d";
	argv[2] = "-f";
	argv[3] = tl_path(dir, "raagent.conf");
	argv[4] = NULL;
	agent_pid = spawn(
	    argv, tl_path(dir, "raagent.out"), tl_path(dir, "raagent.log"));
	ck_assert_msg(tl_broker_wait_audit(&br, "agent_online", 1, T_WAIT),
	    "raagent did not come online; see %s/raagent.log", dir);
}

/* ---- fixtures ------------------------------------------------------------------ */

static void
slapd_up(void)
{
	slapd_ok = tl_slapd_start(NULL, &slapd) == 0;
}

static void
slapd_down(void)
{
	if (slapd_ok)
		tl_slapd_destroy(&slapd);
}

static void
setup(void)
{
	struct tl_broker_opts o;

	ck_assert_msg(slapd_ok, "slapd did not start (see stderr)");
	log_init("itest_e2e_offer", LOG_LVL_WARN, 0);
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	memset(&o, 0, sizeof(o));
	o.slapd = &slapd;
	o.policy = policy;
	o.require_computer_object = 1;
	o.extra = "[relay]\nwait_timeout = 20s\n";
	ck_assert_int_eq(tl_broker_setup(&br, &o), 0);
	ck_assert_msg(
	    tl_broker_start(&br) == 0, "rabrokerd did not start: %s", br.log);
	br_ok = 1;
	snprintf(dir, sizeof(dir), "%s", br.dir);
	write_file(tl_path(dir, "alice.pw"), "alice-pw\n", 0600);
	start_rfb();
	start_agent();
}

static void
dump(const char *name)
{
	char *t = read_file(tl_path(dir, name));

	fprintf(stderr, "---- %s ----\n%s\n", name, t);
	free(t);
}

static void
teardown(void)
{
	if (getenv("E2E_DUMP") != NULL) {
		dump("raoffer.out");
		dump("raoffer.err");
		dump("raagent.log");
	}
	stop_child(&agent_pid);
	stop_child(&rfb_pid);
	if (br_ok && getenv("E2E_KEEP") == NULL)
		tl_broker_destroy(&br);
	else if (br_ok)
		tl_broker_stop(&br, SIGTERM, 5000, NULL);
	event_base_free(base);
}

/* ---- raoffer --------------------------------------------------------------------- */

/* Starts raoffer with the common options and extra ones (NULL ended);
 * stdout and stderr go to DIR/NAME.out and DIR/NAME.err. */
static pid_t
raoffer_as(const char *name, unsigned viewer_port, const char *const *extra)
{
	static char bin[700], brk[64], vp[16];
	char out[64], err[64];
	const char *argv[40];
	int n = 0;

	snprintf(bin, sizeof(bin), "%s/client/raoffer", build_dir());
	snprintf(brk, sizeof(brk), "127.0.0.1:%u", br.port);
	snprintf(vp, sizeof(vp), "%u", viewer_port);
	argv[n++] = bin;
	argv[n++] = "-c";
	argv[n++] = "none";
	argv[n++] = "-v";
	argv[n++] = "--broker";
	argv[n++] = brk;
	argv[n++] = "--ca";
	argv[n++] = tl_path(br.pki, "ca.pem");
	argv[n++] = "--user";
	argv[n++] = "CORP\\alice";
	argv[n++] = "--password-file";
	argv[n++] = tl_path(dir, "alice.pw");
	argv[n++] = "--listen";
	argv[n++] = "127.0.0.1";
	argv[n++] = "--viewer-port";
	argv[n++] = vp;
	argv[n++] = "--timeout";
	argv[n++] = "40";
	while (extra != NULL && *extra != NULL && n < 38)
		argv[n++] = *extra++;
	argv[n] = NULL;
	snprintf(out, sizeof(out), "%s.out", name);
	snprintf(err, sizeof(err), "%s.err", name);
	return spawn(argv, tl_path(dir, out), tl_path(dir, err));
}

static pid_t
raoffer(unsigned viewer_port, const char *const *extra)
{
	return raoffer_as("raoffer", viewer_port, extra);
}

static const unsigned char fbur[10] = {3, 0, 0, 0, 0, 0, 0, 64, 0, 48};
static const unsigned char keyev[8] = {4, 1, 0, 0, 0, 0, 0, 'x'};

/* Connects to the viewer port and runs the viewer's half of the RFB 3.8
 * handshake (security None). Returns the socket, or -step on failure. */
static int
viewer_open(unsigned port)
{
	unsigned char ver[12], types[2], res[4], init[27], one = 1;
	int fd = -1, tries, step = 1;

	for (tries = 0; tries < 50 && fd < 0; tries++) {
		fd = connect_local(port);
		if (fd < 0)
			sleep_ms(100);
	}
	if (fd < 0)
		return -step;
	if (++step,
	    io_full(fd, ver, 12, 0, T_WAIT) != 0 ||
	        memcmp(ver, "RFB 003.008\n", 12) != 0)
		goto fail;
	if (++step, io_full(fd, "RFB 003.008\n", 12, 1, T_WAIT) != 0)
		goto fail;
	if (++step,
	    io_full(fd, types, 2, 0, T_WAIT) != 0 || types[0] != 1 ||
	        types[1] != 1)
		goto fail;
	if (++step,
	    io_full(fd, &one, 1, 1, T_WAIT) != 0 ||
	        io_full(fd, res, 4, 0, T_WAIT) != 0 || res[3] != 0)
		goto fail;
	if (++step,
	    io_full(fd, &one, 1, 1, T_WAIT) != 0 ||
	        io_full(fd, init, sizeof(init), 0, T_WAIT) != 0 ||
	        memcmp(init + 24, "e2e", 3) != 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return -step;
}

/* Reads the server's PAYLOAD pattern. 0 or -1. */
static int
viewer_payload(int fd)
{
	static unsigned char buf[PAYLOAD];
	size_t i;

	if (io_full(fd, buf, PAYLOAD, 0, T_WAIT) != 0)
		return -1;
	for (i = 0; i < PAYLOAD; i++)
		if (buf[i] != pattern(i))
			return -1;
	return 0;
}

/*
 * Plays the VNC viewer: handshake, then FramebufferUpdateRequest,
 * KeyEvent (must be dropped: view only), FramebufferUpdateRequest; reads
 * the PAYLOAD pattern; closes. Returns 0, or the step that failed.
 */
static int
viewer(unsigned port)
{
	int fd = viewer_open(port);

	if (fd < 0)
		return -fd;
	if (io_full(fd, (void *)fbur, 10, 1, T_WAIT) != 0 ||
	    io_full(fd, (void *)keyev, 8, 1, T_WAIT) != 0 ||
	    io_full(fd, (void *)fbur, 10, 1, T_WAIT) != 0) {
		close(fd);
		return 10;
	}
	if (viewer_payload(fd) != 0) {
		close(fd);
		return 11;
	}
	/* let the second request reach the server before closing */
	sleep_ms(300);
	close(fd);
	return 0;
}

static unsigned
viewer_port_free(void)
{
	unsigned p = tl_free_port();

	ck_assert_uint_ne(p, 0);
	return p;
}

/* The ticket id raoffer printed. */
static char *
ticket_of_run(void)
{
	char *t = wait_file(tl_path(dir, "raoffer.out"), "ticket ", T_WAIT);

	ck_assert_msg(t != NULL, "raoffer printed no ticket");
	t[strcspn(t, " ")] = '\0';
	ck_assert_uint_eq(strlen(t), 32);
	return t;
}

static void
check_no_secret(void)
{
	char *o = read_file(tl_path(dir, "raoffer.out"));
	char *e = read_file(tl_path(dir, "raoffer.err"));

	ck_assert_msg(
	    strstr(o, "alice-pw") == NULL && strstr(e, "alice-pw") == NULL,
	    "the password appears in raoffer's output");
	ck_assert_msg(strstr(o, "psk") == NULL && strstr(e, "\"psk\"") == NULL,
	    "raoffer's output mentions the psk");
	free(o);
	free(e);
}

static const char *const offer42[] = {WS42, NULL};

/* ---- the tests ---------------------------------------------------------------------- */

START_TEST(test_accept_direct)
{
	unsigned vp = viewer_port_free();
	pid_t pid;
	int rc, st;
	char *tid, *rfb, *line;

	set_answer(0, 0);
	pid = raoffer(vp, offer42);
	tid = ticket_of_run();
	line = wait_file(
	    tl_path(dir, "raoffer.out"), "viewer: connect to", T_WAIT);
	ck_assert_msg(line != NULL, "no session announced");
	free(line);
	line = wait_file(tl_path(dir, "raoffer.out"), "accepted by ", 1000);
	ck_assert_msg(line != NULL && strncmp(line, "CORP\\bob", 8) == 0,
	    "no \"accepted by CORP\\bob\" line");
	free(line);
	st = viewer(vp);
	ck_assert_msg(st == 0, "viewer failed at step %d", st);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_msg(rc == 0, "raoffer exit %d, expected 0", rc);
	rfb = wait_file(tl_path(dir, "rfb.log"), "got ", 5000);
	ck_assert_msg(rfb != NULL, "the RFB server logged nothing");
	/* two FramebufferUpdateRequests, the KeyEvent dropped */
	ck_assert_msg(strcmp(rfb, "20 types FF") == 0,
	    "the RFB server got \"%s\", expected \"20 types FF\"", rfb);
	free(rfb);
	ck_assert(tl_broker_wait_audit(&br, "session_connected", 1, 5000));
	ck_assert_int_eq(tl_broker_audit_count(&br, "\"via\":\"direct\""), 1);
	/* Seed 000: the port advertised is the one raoffer listened on, and
	 * the agent connected to exactly that address. */
	{
		char *port = wait_file(tl_path(dir, "raoffer.out"),
		    "listening for the agent on 127.0.0.1:", 1000);
		char want[64];
		ck_assert_msg(port != NULL && atoi(port) > 0, "no port");
		snprintf(want, sizeof(want), "\"127.0.0.1:%d\"", atoi(port));
		ck_assert_msg(tl_broker_audit_count(&br, want) >= 2,
		    "%s is not both advertised and connected to", want);
		snprintf(want, sizeof(want), "\"address\":\"127.0.0.1:%d\"",
		    atoi(port));
		ck_assert_int_eq(tl_broker_audit_count(&br, want), 1);
		free(port);
	}
	ck_assert_int_eq(tl_broker_audit_count(&br, "\"via\":\"relay\""), 0);
	check_no_secret();

	/* Single use: the same ticket cannot connect again. */
	{
		char why[256] = "";
		struct tl_client *a = tl_client_connect(
		    base, br.pki, br.port, "ws-042", 5000, why, sizeof(why));
		json_t *res = NULL;
		int code;

		ck_assert_msg(a != NULL, "connect: %s", why);
		ck_assert_int_eq(tl_client_call(a, "hello",
		                     json_pack("{s:i, s:s, s:s}", "version", 1,
		                         "role", "agent", "software", "e2e"),
		                     5000, NULL),
		    0);
		code = tl_client_call(a, "session.event",
		    json_pack("{s:s, s:s, s:s}", "ticket", tid, "event",
		        "connected", "via", "direct"),
		    5000, &res);
		ck_assert_msg(code == RP_ERR_TICKET_USED,
		    "a second connected got %d (%s), expected ticket_used",
		    code, rp_err_name(code));
		json_decref(res);
		tl_client_free(a);
		ck_assert(tl_broker_wait_audit(&br, "ticket_refused", 1, 5000));
	}
	free(tid);
}
END_TEST

START_TEST(test_wrong_psk_then_agent)
{
	unsigned vp = viewer_port_free();
	struct rp_tls_opts to;
	struct rp_tls_ctx *ctx;
	char err[256], *tid, *addr, *line;
	unsigned char bad[32];
	pid_t pid;
	int rc, st;

	set_answer(0, 3); /* the user takes 3 s: time for an impostor */
	pid = raoffer(vp, offer42);
	tid = ticket_of_run();
	addr = wait_file(tl_path(dir, "raoffer.out"),
	    "listening for the agent on 127.0.0.1:", 1000);
	ck_assert_ptr_nonnull(addr);
	memset(&to, 0, sizeof(to));
	to.role = RP_TLS_CLIENT;
	ctx = rp_tls_ctx_new(&to, err, sizeof(err));
	ck_assert_msg(ctx != NULL, "%s", err);
	memset(bad, 0x5a, sizeof(bad));
	{
		struct sockaddr_storage ss;
		int len = tl_loopback(
		    (struct sockaddr *)&ss, 0, (uint16_t)atoi(addr));
		static int closed;
		struct rp_tls_cbs cbs;
		struct rp_tls *t;

		memset(&cbs, 0, sizeof(cbs));
		closed = 0;
		cbs.on_close = NULL;
		t = rp_tls_connect_psk(ctx, base, (struct sockaddr *)&ss, len,
		    tid, bad, sizeof(bad), &cbs, NULL);
		ck_assert_ptr_nonnull(t);
		(void)closed;
		tl_run_until(base, NULL, NULL, 1500);
	}
	line =
	    wait_file(tl_path(dir, "raoffer.err"), "failed: handshake", 3000);
	ck_assert_msg(line != NULL && strstr(line, "still waiting") != NULL,
	    "raoffer did not log the failed handshake");
	free(line);
	/* The real agent still gets through. */
	line = wait_file(
	    tl_path(dir, "raoffer.out"), "viewer: connect to", T_WAIT);
	ck_assert_msg(line != NULL, "no session after the impostor");
	free(line);
	st = viewer(vp);
	ck_assert_msg(st == 0, "viewer failed at step %d", st);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_int_eq(rc, 0);
	rp_tls_ctx_free(ctx);
	free(addr);
	free(tid);
}
END_TEST

START_TEST(test_decline)
{
	static const char *const shortname[] = {"ws-042", NULL};
	pid_t pid;
	int rc;
	char *e;

	set_answer(1, 0);
	/* the short name is enough when one online machine has it */
	pid = raoffer(viewer_port_free(), shortname);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_msg(rc == 1, "raoffer exit %d, expected 1", rc);
	e = read_file(tl_path(dir, "raoffer.err"));
	ck_assert_msg(strstr(e, "declined by CORP\\bob") != NULL,
	    "no clear message: %s", e);
	free(e);
	e = read_file(tl_path(dir, "raoffer.out"));
	ck_assert_msg(strstr(e, "ws-042 is " WS42) != NULL, "%s", e);
	free(e);
	ck_assert(tl_broker_wait_audit(&br, "offer_declined", 1, 5000));
	ck_assert_int_eq(tl_broker_audit_count(&br, "session_connected"), 0);
}
END_TEST

START_TEST(test_relay)
{
	static const char *const extra[] = {"--test-refuse-direct", WS42, NULL};
	unsigned vp = viewer_port_free();
	pid_t pid;
	int rc, st;
	char *line, *rfb;

	set_answer(0, 0);
	pid = raoffer(vp, extra);
	line = wait_file(tl_path(dir, "raoffer.out"),
	    "agent connected through the broker's relay", T_WAIT);
	ck_assert_msg(line != NULL, "no session through the relay");
	free(line);
	line = wait_file(
	    tl_path(dir, "raoffer.out"), "waits at the broker's relay", 1000);
	ck_assert_msg(line != NULL, "raoffer was not told the agent waits");
	free(line);
	st = viewer(vp);
	ck_assert_msg(st == 0, "viewer failed at step %d", st);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_msg(rc == 0, "raoffer exit %d, expected 0", rc);
	rfb = wait_file(tl_path(dir, "rfb.log"), "got ", 5000);
	ck_assert_msg(rfb != NULL && strcmp(rfb, "20 types FF") == 0,
	    "the RFB server got \"%s\"", rfb ? rfb : "nothing");
	free(rfb);
	ck_assert(tl_broker_wait_audit(&br, "relay_started", 1, 5000));
	ck_assert(tl_broker_wait_audit(&br, "\"via\":\"relay\"", 1, 5000));
	ck_assert_int_eq(tl_broker_audit_count(&br, "\"via\":\"direct\""), 0);
	check_no_secret();
}
END_TEST

START_TEST(test_machines_and_refusals)
{
	static const char *const m[] = {"machines", NULL};
	pid_t pid;
	int rc;
	char *o;

	pid = raoffer(viewer_port_free(), m);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_int_eq(rc, 0);
	o = read_file(tl_path(dir, "raoffer.out"));
	ck_assert_msg(strstr(o, WS42) != NULL && strstr(o, "CORP\\bob") != NULL,
	    "machines: %s", o);
	free(o);

	{
		long before;

		ck_assert(tl_broker_wait_audit(&br, "auth_succeeded", 1, 5000));
		before = tl_broker_audit_count(&br, "auth_succeeded");
		chmod(tl_path(dir, "alice.pw"), 0640);
		pid = raoffer(viewer_port_free(), m);
		rc = wait_exit(pid, T_WAIT);
		ck_assert_int_eq(rc, 2);
		o = read_file(tl_path(dir, "raoffer.err"));
		ck_assert_msg(strstr(o, "chmod 600") != NULL, "message: %s", o);
		free(o);
		/* refused before any connection: no new login at the broker */
		sleep_ms(300);
		ck_assert_int_eq(
		    tl_broker_audit_count(&br, "auth_succeeded"), before);
		ck_assert_int_eq(tl_broker_audit_count(&br, "auth_failed"), 0);
	}
	/* a wrong password: refused (1), audited, never echoed */
	write_file(tl_path(dir, "alice.pw"), "not-alice-pw\n", 0600);
	pid = raoffer(viewer_port_free(), m);
	rc = wait_exit(pid, T_WAIT);
	o = read_file(tl_path(dir, "raoffer.err"));
	ck_assert_msg(rc == 1 &&
	        strstr(o,
	            "authentication failed for "
	            "CORP\\alice") != NULL,
	    "exit %d: %s", rc, o);
	ck_assert_msg(strstr(o, "not-alice-pw") == NULL, "password shown");
	free(o);
	ck_assert(tl_broker_wait_audit(&br, "auth_failed", 1, 5000));
	write_file(tl_path(dir, "alice.pw"), "alice-pw\n", 0600);
	/* SASL EXTERNAL with the helper's client certificate (CN alice) */
	{
		static const char *ext[] = {
		    "--cert", NULL, "--key", NULL, "machines", NULL};
		char *k = read_file(tl_path(br.pki, "helper-alice-key.pem"));
		write_file(tl_path(dir, "alice-key.pem"), k, 0600);
		free(k);
		ext[1] = tl_path(br.pki, "helper-alice.pem");
		ext[3] = tl_path(dir, "alice-key.pem");
		pid = raoffer(viewer_port_free(), ext);
		rc = wait_exit(pid, T_WAIT);
		o = read_file(tl_path(dir, "raoffer.out"));
		ck_assert_msg(
		    rc == 0 && strstr(o, WS42) != NULL, "exit %d: %s", rc, o);
		free(o);
		ck_assert(tl_broker_wait_audit(
		    &br, "\"mech\":\"EXTERNAL\"", 1, 5000));
	}
	/* a machine that is not online: refused (1), with the reason */
	{
		static const char *const off[] = {"ws-043.corp.example", NULL};
		pid = raoffer(viewer_port_free(), off);
		rc = wait_exit(pid, T_WAIT);
		o = read_file(tl_path(dir, "raoffer.err"));
		ck_assert_msg(rc == 1 && strstr(o, "offer refused: ") &&
		        strstr(o, "machine_offline"),
		    "exit %d: %s", rc, o);
		free(o);
	}
	/* a helper the policy does not allow: refused (1), rule named */
	{
		static const char *const carol[] = {"--user", "CORP\\carol",
		    "--password-file", NULL, WS42, NULL};
		const char *a[6];
		memcpy(a, carol, sizeof(a));
		write_file(tl_path(dir, "carol.pw"), "carol-pw\n", 0600);
		a[3] = tl_path(dir, "carol.pw");
		pid = raoffer(viewer_port_free(), a);
		rc = wait_exit(pid, T_WAIT);
		o = read_file(tl_path(dir, "raoffer.err"));
		ck_assert_msg(rc == 1 && strstr(o, "forbidden") &&
		        strstr(o, "rule: default deny"),
		    "exit %d: %s", rc, o);
		free(o);
	}
	/* the broker not trusted under that name: unavailable (3) */
	{
		static const char *const bad[] = {
		    "--server-name", "ws-042.corp.example", "machines", NULL};
		pid = raoffer(viewer_port_free(), bad);
		rc = wait_exit(pid, T_WAIT);
		o = read_file(tl_path(dir, "raoffer.err"));
		ck_assert_msg(rc == 3 && strstr(o, "cannot talk to the broker"),
		    "exit %d: %s", rc, o);
		free(o);
	}
	/* no broker there: unavailable (3) */
	{
		static char brk[64];
		static const char *bad[] = {"-b", brk, "machines", NULL};
		snprintf(brk, sizeof(brk), "127.0.0.1:%u", tl_free_port());
		pid = raoffer(viewer_port_free(), bad);
		rc = wait_exit(pid, T_WAIT);
		o = read_file(tl_path(dir, "raoffer.err"));
		ck_assert_msg(rc == 3, "exit %d: %s", rc, o);
		free(o);
	}
}
END_TEST

/* Control: a --control ticket starts view-only; "raoffer control ID"
 * asks the user (the prompt script accepts), the running raoffer is told,
 * and from then on the viewer's KeyEvent reaches the server. */
START_TEST(test_control)
{
	static const char *const ctl[] = {"--control", WS42, NULL};
	unsigned vp = viewer_port_free();
	char *tid, *line, *rfb, *e;
	const char *cargs[4];
	pid_t pid, cpid;
	int fd, rc;

	set_answer(0, 0);
	pid = raoffer(vp, ctl);
	tid = ticket_of_run();
	line = wait_file(
	    tl_path(dir, "raoffer.out"), "viewer: connect to", T_WAIT);
	ck_assert_msg(line != NULL, "no session");
	free(line);
	fd = viewer_open(vp);
	ck_assert_msg(fd >= 0, "viewer handshake failed at step %d", -fd);
	/* view only: the KeyEvent is dropped */
	ck_assert_int_eq(io_full(fd, (void *)fbur, 10, 1, T_WAIT), 0);
	ck_assert_int_eq(io_full(fd, (void *)keyev, 8, 1, T_WAIT), 0);
	ck_assert_int_eq(viewer_payload(fd), 0);
	ck_assert(tl_broker_wait_audit(&br, "session_connected", 1, 5000));

	cargs[0] = "control";
	cargs[1] = tid;
	cargs[2] = NULL;
	/* first the user says no: exit 1, input still dropped */
	set_answer(1, 0);
	cpid = raoffer_as("ctl", viewer_port_free(), cargs);
	rc = wait_exit(cpid, T_WAIT);
	e = read_file(tl_path(dir, "ctl.err"));
	ck_assert_msg(rc == 1 && strstr(e, "control declined") != NULL,
	    "raoffer control exit %d: %s", rc, e);
	free(e);
	line = wait_file(tl_path(dir, "raoffer.out"), "control declined", 5000);
	ck_assert_msg(line != NULL, "the offering raoffer was not told");
	free(line);
	ck_assert_int_eq(io_full(fd, (void *)keyev, 8, 1, T_WAIT), 0);
	/* then yes */
	set_answer(0, 0);
	cpid = raoffer_as("ctl", viewer_port_free(), cargs);
	rc = wait_exit(cpid, T_WAIT);
	e = read_file(tl_path(dir, "ctl.err"));
	ck_assert_msg(rc == 0, "raoffer control exit %d: %s", rc, e);
	free(e);
	line = wait_file(tl_path(dir, "ctl.out"), "control granted", 1000);
	ck_assert_ptr_nonnull(line);
	free(line);
	line =
	    wait_file(tl_path(dir, "raoffer.out"), "control granted by ", 5000);
	ck_assert_msg(line != NULL && strcmp(line, "CORP\\bob") == 0,
	    "the offering raoffer was not told");
	free(line);
	ck_assert(tl_broker_wait_audit(&br, "control_accepted", 1, 5000));
	/* now input passes */
	ck_assert_int_eq(io_full(fd, (void *)keyev, 8, 1, T_WAIT), 0);
	ck_assert_int_eq(io_full(fd, (void *)fbur, 10, 1, T_WAIT), 0);
	sleep_ms(500);
	close(fd);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_int_eq(rc, 0);
	rfb = wait_file(tl_path(dir, "rfb.log"), "got ", 5000);
	ck_assert_msg(rfb != NULL && strcmp(rfb, "28 types FKF") == 0,
	    "the RFB server got \"%s\", expected \"28 types FKF\"",
	    rfb ? rfb : "nothing");
	free(rfb);
	free(tid);
}
END_TEST

/* "raoffer cancel ID" while the user has not answered yet: the offering
 * raoffer is told and exits 1; "raoffer tickets" showed it before. */
START_TEST(test_cancel)
{
	static const char *const tk[] = {"tickets", NULL};
	const char *cargs[3];
	char *tid, *e, *o;
	pid_t pid, cpid;
	int rc;

	set_answer(0, 8); /* the user is slow */
	pid = raoffer(viewer_port_free(), offer42);
	tid = ticket_of_run();
	cpid = raoffer_as("tk", viewer_port_free(), tk);
	ck_assert_int_eq(wait_exit(cpid, T_WAIT), 0);
	o = read_file(tl_path(dir, "tk.out"));
	ck_assert_msg(strstr(o, tid) != NULL && strstr(o, WS42) != NULL,
	    "tickets: %s", o);
	ck_assert_msg(strstr(o, "psk") == NULL, "tickets: %s", o);
	free(o);
	cargs[0] = "cancel";
	cargs[1] = tid;
	cargs[2] = NULL;
	cpid = raoffer_as("cancel", viewer_port_free(), cargs);
	rc = wait_exit(cpid, T_WAIT);
	ck_assert_int_eq(rc, 0);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_msg(rc == 1, "raoffer exit %d, expected 1", rc);
	e = read_file(tl_path(dir, "raoffer.err"));
	ck_assert_msg(strstr(e, "the offer was cancelled") != NULL, "%s", e);
	free(e);
	ck_assert(tl_broker_wait_audit(&br, "offer_cancelled", 1, 5000));
	/* cancelling again: not an open ticket any more */
	cpid = raoffer_as("cancel", viewer_port_free(), cargs);
	rc = wait_exit(cpid, T_WAIT);
	ck_assert_int_eq(rc, 1);
	free(tid);
}
END_TEST

/* Ctrl-C while waiting for the user: offer.cancel, then exit 1. */
START_TEST(test_sigint_cancels)
{
	char *line, *e;
	pid_t pid;
	int rc;

	set_answer(0, 8);
	pid = raoffer(viewer_port_free(), offer42);
	line = wait_file(tl_path(dir, "raoffer.out"), "waiting for ", T_WAIT);
	ck_assert_ptr_nonnull(line);
	free(line);
	kill(pid, SIGINT);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_msg(rc == 1, "raoffer exit %d, expected 1", rc);
	e = read_file(tl_path(dir, "raoffer.err"));
	ck_assert_msg(
	    strstr(e, "interrupted: offer cancelled") != NULL, "%s", e);
	free(e);
	ck_assert(tl_broker_wait_audit(&br, "offer_cancelled", 1, 5000));
	ck_assert_int_eq(tl_broker_audit_count(&br, "session_connected"), 0);
}
END_TEST

/* --viewer-cmd: started once the agent is connected with %p replaced by
 * the viewer port; it gets the session there; it is ended with raoffer. */
START_TEST(test_viewer_cmd)
{
	static char cmd[1400];
	static const char *ex[] = {"--viewer-cmd", cmd, WS42, NULL};
	char *port, *line;
	pid_t pid;
	int rc, st;

	snprintf(cmd, sizeof(cmd),
	    "echo %%p > %s/vport; echo $$ > %s/vpid; exec sleep 60", dir, dir);
	set_answer(0, 0);
	pid = raoffer(0, ex);
	/* the file exists before the echo has written to it: wait for a
	 * complete line */
	line = wait_file(tl_path(dir, "vport"), "\n", T_WAIT);
	ck_assert_msg(line != NULL, "the viewer command did not run");
	free(line);
	port = wait_file(tl_path(dir, "vport"), "", 100);
	ck_assert_msg(port != NULL && atoi(port) > 0, "vport: %s", port);
	line = wait_file(
	    tl_path(dir, "raoffer.out"), "starting the viewer: echo ", 1000);
	ck_assert_msg(line != NULL && strncmp(line, port, strlen(port)) == 0,
	    "%%p not replaced by the port");
	free(line);
	st = viewer((unsigned)atoi(port));
	ck_assert_msg(st == 0, "viewer failed at step %d", st);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_int_eq(rc, 0);
	/* the viewer command was ended with the session */
	{
		char *vp = read_file(tl_path(dir, "vpid"));
		pid_t v = (pid_t)atoi(vp);
		int gone = 0, i;
		free(vp);
		ck_assert_int_gt(v, 0);
		for (i = 0; i < 100 && !gone; i++) {
			gone = kill(v, 0) != 0;
			if (!gone)
				sleep_ms(50);
		}
		ck_assert_msg(gone, "the viewer command outlived raoffer");
	}
	free(port);
}
END_TEST

/* Keys on raoffer's standard input: "c" asks for control from the
 * offering raoffer itself (the user accepts), input then passes; "q"
 * ends the session. */
START_TEST(test_control_keys)
{
	static const char *const ctl[] = {"--control", WS42, NULL};
	unsigned vp = viewer_port_free();
	char *line, *rfb;
	int fd, rc, in[2];
	pid_t pid;

	set_answer(0, 0);
	ck_assert_int_eq(pipe(in), 0);
	spawn_stdin = in[0];
	pid = raoffer(vp, ctl);
	spawn_stdin = -1;
	close(in[0]);
	line =
	    wait_file(tl_path(dir, "raoffer.out"), "type c and Enter", T_WAIT);
	ck_assert_msg(line != NULL, "no hint about the keys");
	free(line);
	fd = viewer_open(vp);
	ck_assert_msg(fd >= 0, "viewer handshake failed at step %d", -fd);
	ck_assert_int_eq(io_full(fd, (void *)fbur, 10, 1, T_WAIT), 0);
	ck_assert_int_eq(viewer_payload(fd), 0);
	ck_assert(tl_broker_wait_audit(&br, "session_connected", 1, 5000));
	ck_assert_int_eq(write(in[1], "c\n", 2), 2);
	line = wait_file(
	    tl_path(dir, "raoffer.out"), "control granted by ", T_WAIT);
	ck_assert_msg(line != NULL && strcmp(line, "CORP\\bob") == 0,
	    "control not granted");
	free(line);
	ck_assert_int_eq(io_full(fd, (void *)keyev, 8, 1, T_WAIT), 0);
	sleep_ms(300);
	/* "q" ends the session from raoffer's side */
	ck_assert_int_eq(write(in[1], "q\n", 2), 2);
	rc = wait_exit(pid, T_WAIT);
	ck_assert_int_eq(rc, 0);
	close(fd);
	close(in[1]);
	rfb = wait_file(tl_path(dir, "rfb.log"), "got ", 5000);
	ck_assert_msg(rfb != NULL && strcmp(rfb, "18 types FK") == 0,
	    "the RFB server got \"%s\", expected \"18 types FK\"",
	    rfb ? rfb : "nothing");
	free(rfb);
}
END_TEST

/* A listening socket on 127.0.0.1 that never accepts: the kernel
 * completes the TCP handshake, nobody answers the ClientHello. */
static int
silent_listener(unsigned *port)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 8), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

/* Runs "raoffer -c CONF machines" ([broker] address = addrs, timeout
 * 2s); its exit status, stderr in *err. */
static int
raoffer_brokers(const char *addrs, char **err)
{
	static char bin[700], vp[16], conf[4096];
	const char *argv[16];
	int n = 0;
	pid_t pid;
	int rc;

	snprintf(conf, sizeof(conf),
	    "[broker]\naddress = %s\ntimeout = 2s\nca = %s\n"
	    "[auth]\nuser = CORP\\alice\npassword_file = %s\n",
	    addrs, tl_path(br.pki, "ca.pem"), tl_path(dir, "alice.pw"));
	write_file(tl_path(dir, "brokers.conf"), conf, 0600);
	snprintf(bin, sizeof(bin), "%s/client/raoffer", build_dir());
	snprintf(vp, sizeof(vp), "%u", viewer_port_free());
	argv[n++] = bin;
	argv[n++] = "-c";
	argv[n++] = tl_path(dir, "brokers.conf");
	argv[n++] = "--viewer-port";
	argv[n++] = vp;
	argv[n++] = "machines";
	argv[n] = NULL;
	pid = spawn(
	    argv, tl_path(dir, "brokers.out"), tl_path(dir, "brokers.err"));
	rc = wait_exit(pid, T_WAIT);
	*err = read_file(tl_path(dir, "brokers.err"));
	return rc;
}

/* Several broker addresses: each is tried in turn, each bounded by
 * [broker] timeout; the first that answers is used and the ones before
 * are named with their reason; when none answers, every one is named. */
START_TEST(test_broker_addresses)
{
	unsigned refused = tl_free_port(), quiet;
	int sfd = silent_listener(&quiet), rc;
	char addrs[256], want[128], *e;
	uint64_t t0;

	snprintf(addrs, sizeof(addrs),
	    "127.0.0.1:%u, 127.0.0.1:%u 127.0.0.1:%u", refused, quiet, br.port);
	t0 = tl_now_ms();
	rc = raoffer_brokers(addrs, &e);
	ck_assert_msg(rc == 0, "exit %d: %s", rc, e);
	ck_assert_msg(tl_now_ms() - t0 < 10000, "took %llu ms",
	    (unsigned long long)(tl_now_ms() - t0));
	snprintf(
	    want, sizeof(want), "answered at 127.0.0.1:%u; before: ", br.port);
	ck_assert_msg(strstr(e, want) != NULL, "%s", e);
	snprintf(want, sizeof(want), "127.0.0.1:%u (connection error", refused);
	ck_assert_msg(strstr(e, want) != NULL && strstr(e, "refused"), "%s", e);
	snprintf(want, sizeof(want), "127.0.0.1:%u (handshake timeout", quiet);
	ck_assert_msg(strstr(e, want) != NULL, "%s", e);
	free(e);
	e = read_file(tl_path(dir, "brokers.out"));
	ck_assert_msg(strstr(e, WS42) != NULL, "machines: %s", e);
	free(e);

	/* none answers: unavailable (3), every address with its reason */
	snprintf(
	    addrs, sizeof(addrs), "127.0.0.1:%u 127.0.0.1:%u", refused, quiet);
	rc = raoffer_brokers(addrs, &e);
	ck_assert_msg(rc == 3, "exit %d: %s", rc, e);
	snprintf(want, sizeof(want),
	    "cannot talk to any of the 2 brokers: tried 127.0.0.1:%u "
	    "(connection error",
	    refused);
	ck_assert_msg(strstr(e, want) != NULL, "%s", e);
	snprintf(
	    want, sizeof(want), "; 127.0.0.1:%u (handshake timeout", quiet);
	ck_assert_msg(strstr(e, want) != NULL, "%s", e);
	free(e);
	close(sfd);
}
END_TEST

static Suite *
suite(void)
{
	Suite *s = suite_create("e2e_offer");
	TCase *tc = tcase_create("real processes");

	tcase_add_unchecked_fixture(tc, slapd_up, slapd_down);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_accept_direct);
	tcase_add_test(tc, test_wrong_psk_then_agent);
	tcase_add_test(tc, test_decline);
	tcase_add_test(tc, test_relay);
	tcase_add_test(tc, test_machines_and_refusals);
	tcase_add_test(tc, test_control);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_sigint_cancels);
	tcase_add_test(tc, test_viewer_cmd);
	tcase_add_test(tc, test_control_keys);
	tcase_add_test(tc, test_broker_addresses);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
