/*
 * rabrokerd_main.c - the broker daemon: startup, signals, -n.
 *
 *   rabrokerd [-n] [-d] [-f FILE]
 *
 * Startup order: configuration -> log -> TLS credentials -> audit trail
 * (fail closed: no trail, no broker) -> ticket store -> listening socket
 * (bound while still attached to the terminal, so a port conflict is told
 * to whoever started us) -> detach unless -d -> directory + SASL -> offers
 * and relay -> open tickets restored -> READY=1.
 *
 * Signals arrive through libevent: SIGHUP reloads the policy (the old one
 * stays if the new one has errors), reopens the audit file and flushes the
 * directory caches, without touching a connection. SIGTERM/SIGINT drain:
 * stop accepting, refuse new offers, close every connection gracefully,
 * wait up to drain_timeout, exit 0. A second SIGTERM exits at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "az_dir.h"
#include "az_policy.h"
#include "az_sasl.h"
#include "bk.h"
#include "bk_audit.h"
#include "bk_config.h"
#include "bk_methods.h"
#include "bk_control.h"
#include "bk_metrics.h"
#include "bk_offer.h"
#include "bk_relay.h"
#include "bk_server.h"
#include "bk_store.h"
#include "rp_log.h"
#include "rp_tls.h"

#define VERSION "0.1"
#define DRAIN_POLL_MS 100

struct daemon_state {
	struct bk_ctx ctx;
	struct event *sig_hup, *sig_term, *sig_int, *drain_timer;
	int64_t drain_deadline_ms;
	const char *stop_reason;
};

static void
notify(const char *what)
{
#ifdef HAVE_SYSTEMD
	sd_notify(0, what);
#else
	(void)what;
#endif
}

static int64_t
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: rabrokerd [-n] [-d] [-f FILE]\n"
	    "  -n       check the configuration and the policy, "
	    "then exit\n"
	    "  -d       stay in the foreground, log to stderr\n"
	    "  -f FILE  configuration (default %s)\n",
	    BK_CONFIG_DEFAULT_PATH);
	exit(1);
}

static void
reload(struct daemon_state *st)
{
	struct bk_ctx *ctx = &st->ctx;
	struct az_policy *np;
	char err[1024];

	log_info("SIGHUP: reloading the policy %s", ctx->cfg->policy_file);
	np = az_policy_load_file(ctx->cfg->policy_file, err, sizeof(err));
	if (np == NULL) {
		log_warnx("policy not reloaded, the previous one stays in "
		          "force: %s",
		    err);
		bk_audit(ctx, BK_AE_POLICY_RELOADED,
		    json_pack("{s:s, s:s, s:s}", "file", ctx->cfg->policy_file,
		        "result", "error", "error", err));
	} else {
		/* Evaluation is synchronous on this thread: no decision is in
		 * progress now, so the old policy can go at once. */
		struct az_policy *old = ctx->policy;
		ctx->policy = np;
		az_policy_free(old);
		log_info("policy reloaded: %zu rule(s)", az_policy_nrules(np));
		bk_audit(ctx, BK_AE_POLICY_RELOADED,
		    json_pack("{s:s, s:s, s:I}", "file", ctx->cfg->policy_file,
		        "result", "ok", "rules",
		        (json_int_t)az_policy_nrules(np)));
	}
	if (ctx->audit != NULL &&
	    bk_audit_reopen(ctx->audit, err, sizeof(err)) != 0)
		log_warnx("audit trail could not be reopened: %s; new offers "
		          "are refused until it can",
		    err);
	if (ctx->dir != NULL)
		az_dir_cache_flush(ctx->dir);
}

static void
on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon_state *st = arg;
	struct bk_ctx *ctx = &st->ctx;
	size_t n = bk_server_nconns(ctx);
	struct timeval tv = {0, DRAIN_POLL_MS * 1000};

	if (n == 0) {
		log_info("all connections closed");
		event_base_loopexit(ctx->base, NULL);
		return;
	}
	if (mono_ms() >= st->drain_deadline_ms) {
		log_warnx("drain_timeout (%u s) passed with %zu connection(s) "
		          "still open: exiting",
		    ctx->cfg->drain_timeout_s, n);
		event_base_loopexit(ctx->base, NULL);
		return;
	}
	evtimer_add(st->drain_timer, &tv);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon_state *st = arg;
	struct bk_ctx *ctx = &st->ctx;
	struct timeval tv = {0, DRAIN_POLL_MS * 1000};

	if (sig == SIGHUP) {
		reload(st);
		return;
	}
	if (ctx->draining) {
		log_warnx("second signal: exiting now");
		st->stop_reason = "signal (forced)";
		event_base_loopexit(ctx->base, NULL);
		return;
	}
	log_info("%s: draining (at most %u s)",
	    sig == SIGTERM ? "SIGTERM" : "SIGINT", ctx->cfg->drain_timeout_s);
	notify("STOPPING=1");
	st->stop_reason = sig == SIGTERM ? "SIGTERM" : "SIGINT";
	ctx->draining = 1;
	bk_server_drain(ctx);
	st->drain_deadline_ms =
	    mono_ms() + (int64_t)ctx->cfg->drain_timeout_s * 1000;
	st->drain_timer = evtimer_new(ctx->base, on_drain_tick, st);
	if (st->drain_timer == NULL) {
		event_base_loopexit(ctx->base, NULL);
		return;
	}
	evtimer_add(st->drain_timer, &tv);
}

/* Detach from the terminal. The parent exits once the child is set up. */
static int
daemonize(void)
{
	pid_t pid = fork();
	int fd;

	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return -1;
	if ((fd = open("/dev/null", O_RDWR)) >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	return 0;
}

/* Room for max_connections descriptors, as far as the hard limit allows. */
static void
raise_nofile(unsigned want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)want + 64)
		log_warnx("descriptor limit %llu is below max_connections "
		          "(%u) + 64: accept will pause when it is reached",
		    (unsigned long long)rl.rlim_cur, want);
}

int
main(int argc, char **argv)
{
	struct daemon_state st;
	struct bk_ctx *ctx = &st.ctx;
	struct bk_config *cfg;
	const char *path = BK_CONFIG_DEFAULT_PATH;
	int ch, check_only = 0, foreground = 0, rc = 1, to_syslog = 0;
	char err[8192];
	struct rp_tls_opts to;

	memset(&st, 0, sizeof(st));
	while ((ch = getopt(argc, argv, "ndf:h")) != -1) {
		switch (ch) {
		case 'n':
			check_only = 1;
			break;
		case 'd':
			foreground = 1;
			break;
		case 'f':
			path = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	log_init("rabrokerd", LOG_LVL_INFO, 0);

	/* Configuration and policy: everything -n checks. */
	if ((cfg = bk_config_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	ctx->cfg = cfg;
	ctx->config_path = cfg->path;
	ctx->policy = az_policy_load_file(cfg->policy_file, err, sizeof(err));
	if (ctx->policy == NULL) {
		fprintf(stderr, "%s\n", err);
		goto out;
	}
	memset(&to, 0, sizeof(to));
	to.role = RP_TLS_SERVER;
	to.ca_file = cfg->ca;
	to.cert_file = cfg->cert;
	to.key_file = cfg->key;
	to.client_cert = RP_TLS_CLIENT_CERT_REQUEST;
	to.handshake_timeout_ms = cfg->handshake_timeout_s * 1000;
	/* Resumption: a restarted broker takes its agents back without a
	 * certificate signature per agent (docs/SCALE.md). Not for -n, which
	 * must not create the key file (its permissions were checked). */
	to.session_tickets = !check_only;
	to.ticket_key_file = cfg->ticket_key_file;
	to.ticket_lifetime_s = cfg->ticket_lifetime_s;
	if ((ctx->tls = rp_tls_ctx_new(&to, err, sizeof(err))) == NULL) {
		fprintf(
		    stderr, "%s: [broker] TLS credentials: %s\n", path, err);
		goto out;
	}
	/* A broken method table is a bug: refuse to run with it. */
	if (rp_methods_check(bk_methods, bk_nmethods, err, sizeof(err)) != 0) {
		fprintf(stderr, "rabrokerd: method table: %s\n", err);
		goto out;
	}
	if (check_only) {
		printf("configuration OK\n");
		rc = 0;
		goto out;
	}

	/* Until we detach, errors also go to the terminal when the log goes
	 * to syslog: whoever started us must see why it failed. */
	to_syslog = !foreground && cfg->log_syslog;
	log_init("rabrokerd", (enum log_level)cfg->log_level, to_syslog);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile(cfg->max_connections);
	if ((ctx->base = event_base_new()) == NULL) {
		log_errx("cannot create the event loop");
		goto out;
	}
	if ((ctx->audit = bk_audit_open(cfg->audit_path, cfg->audit_syslog, err,
	         sizeof(err))) == NULL) {
		log_errx("audit trail: %s", err);
		if (to_syslog)
			fprintf(stderr, "rabrokerd: audit trail: %s\n", err);
		goto out;
	}
	if ((ctx->store = bk_store_open(
	         cfg->store, cfg->store_path, err, sizeof(err))) == NULL) {
		log_errx("ticket store: %s", err);
		if (to_syslog)
			fprintf(stderr, "rabrokerd: ticket store: %s\n", err);
		goto out;
	}
	/* Durable writes complete on the loop (bk_store.h). */
	if (bk_store_set_loop(ctx->store, ctx->base) != 0) {
		log_errx("ticket store: cannot watch its sync thread");
		goto out;
	}
	if ((ctx->agents = bk_agents_new()) == NULL ||
	    (ctx->authrl = bk_ratelimit_new()) == NULL) {
		log_errx("out of memory");
		goto out;
	}
	if (bk_server_start(ctx, err, sizeof(err)) != 0) {
		log_errx("%s", err);
		if (to_syslog)
			fprintf(stderr, "rabrokerd: %s\n", err);
		goto out;
	}
	if (!foreground) {
		if (daemonize() < 0 || event_reinit(ctx->base) < 0) {
			log_errx("cannot detach: %s", strerror(errno));
			goto out;
		}
	}
	/* Threads only now: they would not survive daemonize()'s fork. */
	if (bk_audit_start_sync(ctx->audit, err, sizeof(err)) != 0) {
		log_errx("audit: %s", err);
		goto out;
	}
	if ((ctx->hspool = rp_tls_pool_new(ctx->base, cfg->handshake_threads,
	         err, sizeof(err))) == NULL) {
		log_errx("%s", err);
		goto out;
	}
	if (cfg->handshake_threads > 0)
		log_info(
		    "TLS handshakes on %u thread(s)", cfg->handshake_threads);
	if (cfg->have_directory) {
		struct az_sasl_config sc;
		char *mechs;
		size_t len = 0;

		if ((ctx->dir = az_dir_new(
		         ctx->base, &cfg->dir, err, sizeof(err))) == NULL) {
			log_errx("directory: %s", err);
			goto out;
		}
		for (size_t i = 0; i < cfg->nmechanisms; i++)
			len += strlen(cfg->mechanisms[i]) + 1;
		if ((mechs = calloc(1, len + 1)) == NULL)
			goto out;
		for (size_t i = 0; i < cfg->nmechanisms; i++) {
			if (i)
				strcat(mechs, " ");
			strcat(mechs, cfg->mechanisms[i]);
		}
		memset(&sc, 0, sizeof(sc));
		sc.mechanisms = mechs;
		sc.service = "rabroker";
		ctx->sasl = az_sasl_new(ctx->dir, &sc, err, sizeof(err));
		free(mechs);
		if (ctx->sasl == NULL) {
			log_errx("[sasl]: %s", err);
			goto out;
		}
	}
	if ((ctx->offers = bk_offers_new(ctx)) == NULL ||
	    (ctx->relays = bk_relays_new(ctx)) == NULL) {
		log_errx("cannot start the offer engine");
		goto out;
	}
	if (bk_offers_restore(ctx) != 0)
		log_warnx("some open tickets could not be restored");
	/* Metrics endpoint and control socket: off (with a warning) if their
	 * address is taken; the broker's own port is what must work. */
	if (bk_metrics_init(ctx) != 0 || bk_control_init(ctx) != 0) {
		log_errx("out of memory");
		goto out;
	}

	st.sig_hup = evsignal_new(ctx->base, SIGHUP, on_signal, &st);
	st.sig_term = evsignal_new(ctx->base, SIGTERM, on_signal, &st);
	st.sig_int = evsignal_new(ctx->base, SIGINT, on_signal, &st);
	if (st.sig_hup == NULL || st.sig_term == NULL || st.sig_int == NULL ||
	    evsignal_add(st.sig_hup, NULL) < 0 ||
	    evsignal_add(st.sig_term, NULL) < 0 ||
	    evsignal_add(st.sig_int, NULL) < 0) {
		log_errx("cannot install signal handlers");
		goto out;
	}
	bk_audit(ctx, BK_AE_BROKER_STARTED,
	    json_pack("{s:s, s:s, s:i, s:i}", "version", VERSION, "listen",
	        cfg->listen, "port", (int)bk_server_port(ctx), "pid",
	        (int)getpid()));
	log_info("rabrokerd %s ready on %s (policy %s: %zu rule(s))", VERSION,
	    cfg->listen, cfg->policy_file, az_policy_nrules(ctx->policy));
	notify("READY=1");
	st.stop_reason = "loop ended";

	event_base_dispatch(ctx->base);

	bk_audit(ctx, BK_AE_BROKER_STOPPED,
	    json_pack("{s:s}", "reason", st.stop_reason));
	log_info("stopped (%s)", st.stop_reason);
	rc = 0;
out:
	if (st.drain_timer)
		event_free(st.drain_timer);
	if (st.sig_hup)
		event_free(st.sig_hup);
	if (st.sig_term)
		event_free(st.sig_term);
	if (st.sig_int)
		event_free(st.sig_int);
	bk_control_free(ctx);
	bk_metrics_free(ctx);
	bk_relays_free(ctx->relays);
	ctx->relays = NULL;
	bk_offers_free(ctx->offers);
	ctx->offers = NULL;
	/* Handshakes still in flight on the threads are closed (no
	 * callback) and the threads joined, before their peers go. */
	rp_tls_pool_free(ctx->hspool);
	ctx->hspool = NULL;
	bk_server_free(ctx);
	bk_agents_free(ctx->agents);
	ctx->agents = NULL;
	if (ctx->sasl)
		az_sasl_free(ctx->sasl);
	if (ctx->dir)
		az_dir_free(ctx->dir);
	bk_ratelimit_free(ctx->authrl);
	bk_store_close(ctx->store);
	bk_audit_close(ctx->audit);
	if (ctx->policy)
		az_policy_free(ctx->policy);
	if (ctx->tls)
		rp_tls_ctx_free(ctx->tls);
	if (ctx->base)
		event_base_free(ctx->base);
	bk_config_free(cfg);
	return rc;
}
