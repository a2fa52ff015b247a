/*
 * raagent_main.c - the agent on every domain machine.
 *
 *   raagent [-d] [-n] [-f FILE]            run (or -n: check the config)
 *   raagent [-f FILE] tickets              list this machine's tickets
 *   raagent [-f FILE] expire ID            end a ticket now
 *   raagent [-f FILE] take-control ID      take control back at once
 *
 * The commands talk to the running agent over STATE_DIR/raagent.sock.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <gnutls/gnutls.h>

#include "cl_agent.h"
#include "cl_agent_config.h"
#include "rp_log.h"

#define DEFAULT_CONF "/etc/rabroker/raagent.conf"

static void
usage(void)
{
	fprintf(stderr,
	    "usage: raagent [-dn] [-f config]\n"
	    "       raagent [-f config] tickets | expire ID | take-control "
	    "ID\n");
	exit(2);
}

struct sigctx {
	struct event_base *base;
	struct cl_agent *agent;
	struct cl_agent_config *cfg;
	const char *conf;
	int stopping;
};

/* SIGHUP: reread the configuration; only the static session list is
 * taken over (everything else needs a restart). A broken file changes
 * nothing. */
static void
on_hup(evutil_socket_t sig, short ev, void *arg)
{
	struct sigctx *s = arg;
	struct cl_agent_config *n;
	char err[4096];

	(void)sig;
	(void)ev;
	n = cl_agent_config_load(s->conf, err, sizeof(err));
	if (n == NULL) {
		log_warnx("SIGHUP: configuration not reloaded: %s", err);
		return;
	}
	for (size_t i = 0; i < s->cfg->nstat; i++) {
		free(s->cfg->stat[i].user);
		free(s->cfg->stat[i].kind);
	}
	memcpy(s->cfg->stat, n->stat, sizeof(n->stat));
	s->cfg->nstat = n->nstat;
	n->nstat = 0; /* moved */
	cl_agent_config_free(n);
	log_info("SIGHUP: static sessions reread (%zu)", s->cfg->nstat);
	cl_agent_sessions_changed(s->agent);
}

static void
on_signal(evutil_socket_t sig, short ev, void *arg)
{
	struct sigctx *s = arg;
	struct timeval tv = {2, 0};

	(void)ev;
	if (s->stopping) {
		event_base_loopbreak(s->base);
		return;
	}
	log_info("signal %d: stopping", (int)sig);
	s->stopping = 1;
	cl_agent_stop(s->agent);
	event_base_loopexit(s->base, &tv);
}

static int
command(const struct cl_agent_config *c, int argc, char **argv)
{
	char line[300], out[65536];

	if (!strcmp(argv[0], "tickets") && argc == 1)
		snprintf(line, sizeof(line), "tickets");
	else if ((!strcmp(argv[0], "expire") ||
	             !strcmp(argv[0], "take-control")) &&
	    argc == 2 && strlen(argv[1]) < 100 &&
	    strspn(argv[1], "0123456789abcdefABCDEF") == strlen(argv[1]))
		snprintf(line, sizeof(line), "%s %s", argv[0], argv[1]);
	else
		usage();
	if (cl_agent_control(c->state_dir, line, out, sizeof(out), 15000) !=
	    0) {
		fprintf(stderr, "raagent: %s\n", out);
		return 1;
	}
	fputs(out, stdout);
	return strstr(out, "\"error\"") != NULL ? 1 : 0;
}

int
main(int argc, char **argv)
{
	const char *conf = DEFAULT_CONF;
	int ch, debug = 0, check = 0, rc;
	char err[4096], self[512];
	struct cl_agent_config *c;
	struct event_base *base;
	struct cl_agent *a;
	struct sigctx sc;
	struct event *sterm, *sint, *shup;
	ssize_t n;

	while ((ch = getopt(argc, argv, "df:n")) != -1) {
		switch (ch) {
		case 'd':
			debug = 1;
			break;
		case 'f':
			conf = optarg;
			break;
		case 'n':
			check = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	log_init("raagent", LOG_LVL_INFO, 0);
	c = cl_agent_config_load(conf, err, sizeof(err));
	if (c == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check) {
		printf("%s: configuration OK\n", conf);
		cl_agent_config_free(c);
		return 0;
	}
	if (argc > 0) {
		rc = command(c, argc, argv);
		cl_agent_config_free(c);
		return rc;
	}
	log_init("raagent",
	    debug ? LOG_LVL_DEBUG : (enum log_level)c->log_level,
	    debug ? 0 : c->log_syslog);
	signal(SIGPIPE, SIG_IGN);
	gnutls_global_init();
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = '\0';
	base = event_base_new();
	if (base == NULL)
		fatalx("event_base_new");
	a = cl_agent_new(
	    base, c, self[0] ? self : argv[-optind], err, sizeof(err));
	if (a == NULL || cl_agent_start(a, err, sizeof(err)) != 0) {
		log_errx("%s", err);
		cl_agent_free(a);
		cl_agent_config_free(c);
		event_base_free(base);
		return 1;
	}
	log_info("raagent ready (broker %s:%s, state %s)", c->broker_host,
	    c->broker_port, c->state_dir);
	sc.base = base;
	sc.agent = a;
	sc.cfg = c;
	sc.conf = conf;
	sc.stopping = 0;
	sterm = evsignal_new(base, SIGTERM, on_signal, &sc);
	sint = evsignal_new(base, SIGINT, on_signal, &sc);
	shup = evsignal_new(base, SIGHUP, on_hup, &sc);
	evsignal_add(sterm, NULL);
	evsignal_add(sint, NULL);
	evsignal_add(shup, NULL);
	event_base_dispatch(base);
	event_free(sterm);
	event_free(sint);
	event_free(shup);
	cl_agent_free(a);
	event_base_free(base);
	cl_agent_config_free(c);
	gnutls_global_deinit();
	log_info("raagent stopped");
	return 0;
}
