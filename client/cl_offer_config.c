/*
 * cl_offer_config.c - raoffer's INI file and command line.
 *
 * The file parser is a small strict one of our own: full-line comments
 * (';' or '#'), [section], key = value, nothing else; every key in one
 * table per section; a repeated key is an error, because a later line
 * silently winning over an earlier one is how wrong settings survive.
 * Every error is collected, each named FILE:LINE.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "cl_agent_config.h" /* cl_split_hostport */
#include "rp_cfg.h"
#include "cl_offer_config.h"
#include "cl_sasl_client.h"
#include "rp_log.h"

#define CFG_LINE_MAX 1024
#define CFG_MAX_KEYS 64

struct cl_offer_config *
cl_offer_config_new(void)
{
	struct cl_offer_config *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->timeout_s = 120;
	c->relay_after_s = 0;
	c->call_timeout_s = 15;
	c->log_level = LOG_LVL_WARN;
	return c;
}

void
cl_offer_config_free(struct cl_offer_config *c)
{
	size_t i;

	if (c == NULL)
		return;
	free(c->config_path);
	for (i = 0; i < c->nbroker; i++) {
		free(c->broker[i].host);
		free(c->broker[i].port);
	}
	free(c->server_name);
	free(c->ca);
	free(c->user);
	free(c->password_file);
	free(c->cert);
	free(c->key);
	for (i = 0; i < c->nlisten; i++)
		free(c->listen[i]);
	free(c->viewer_cmd);
	free(c->arg);
	free(c);
}

/* ---- value parsers ---------------------------------------------------- */

int
cl_offer_parse_duration(const char *s, unsigned *out)
{
	uint64_t ms;

	if (s == NULL || rp_cfg_duration_ms(s, &ms) != 0 || ms % 1000 != 0 ||
	    ms / 1000 > 86400 * 7)
		return -1;
	*out = (unsigned)(ms / 1000);
	return 0;
}

int
cl_offer_parse_port(const char *s, unsigned *out)
{
	uint64_t v;

	if (s == NULL || rp_cfg_number(s, &v) != 0 || v > 65535)
		return -1;
	*out = (unsigned)v;
	return 0;
}

int
cl_offer_parse_addr(const char *s, char *out, size_t outlen)
{
	char tmp[INET6_ADDRSTRLEN + 2];
	unsigned char bin[sizeof(struct in6_addr)];
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n >= sizeof(tmp))
		return -1;
	if (s[0] == '[') {
		if (n < 3 || s[n - 1] != ']')
			return -1;
		memcpy(tmp, s + 1, n - 2);
		tmp[n - 2] = '\0';
		if (inet_pton(AF_INET6, tmp, bin) != 1)
			return -1;
	} else {
		memcpy(tmp, s, n + 1);
		if (inet_pton(AF_INET, tmp, bin) != 1 &&
		    inet_pton(AF_INET6, tmp, bin) != 1)
			return -1;
	}
	if (strlen(tmp) >= outlen)
		return -1;
	memcpy(out, tmp, strlen(tmp) + 1);
	return 0;
}

int
cl_offer_ticket_id_valid(const char *s)
{
	size_t i;

	if (s == NULL || strlen(s) != 32)
		return 0;
	for (i = 0; i < 32; i++)
		if (!isdigit((unsigned char)s[i]) && (s[i] < 'a' || s[i] > 'f'))
			return 0;
	return 1;
}

char *
cl_offer_viewer_cmd(const char *tmpl, unsigned port)
{
	size_t cap = strlen(tmpl) * 2 + 16, o = 0;
	char *out = malloc(cap), num[8];
	const char *p;

	if (out == NULL)
		return NULL;
	snprintf(num, sizeof(num), "%u", port);
	for (p = tmpl; *p != '\0'; p++) {
		if (o + sizeof(num) + 1 >= cap) {
			free(out);
			return NULL;
		}
		if (*p != '%') {
			out[o++] = *p;
			continue;
		}
		if (p[1] == 'p') {
			memcpy(out + o, num, strlen(num));
			o += strlen(num);
			p++;
		} else if (p[1] == '%') {
			out[o++] = '%';
			p++;
		} else {
			free(out);
			return NULL;
		}
	}
	out[o] = '\0';
	return out;
}

/* ---- setters shared by the file and the command line ------------------ */

static int
set_str(char **dst, const char *v)
{
	char *d = strdup(v);

	if (d == NULL)
		return -1;
	free(*dst);
	*dst = d;
	return 0;
}

static int
add_broker(struct cl_offer_config *c, const char *v, char *err, size_t el)
{
	char *h = NULL, *p = NULL;

	if (cl_split_hostport(v, &h, &p) != 0) {
		snprintf(err, el,
		    "broker \"%s\": expected HOST:PORT ([v6]:PORT), port "
		    "1-65535",
		    v);
		return -1;
	}
	if (c->nbroker >= CL_OFFER_MAX_BROKERS) {
		free(h);
		free(p);
		snprintf(err, el, "more than %d broker addresses",
		    CL_OFFER_MAX_BROKERS);
		return -1;
	}
	c->broker[c->nbroker].host = h;
	c->broker[c->nbroker].port = p;
	c->nbroker++;
	return 0;
}

/* "HOST:PORT[, HOST:PORT...]" (commas or spaces) replaces the list. */
static int
set_brokers(struct cl_offer_config *c, const char *v, char *err, size_t el)
{
	char *copy = strdup(v), *tok, *save = NULL;
	int r = 0;

	if (copy == NULL)
		return -1;
	while (c->nbroker > 0) {
		c->nbroker--;
		free(c->broker[c->nbroker].host);
		free(c->broker[c->nbroker].port);
	}
	for (tok = strtok_r(copy, " \t,", &save); tok != NULL && r == 0;
	     tok = strtok_r(NULL, " \t,", &save))
		r = add_broker(c, tok, err, el);
	if (r == 0 && c->nbroker == 0)
		r = add_broker(c, v, err, el); /* says what is wrong */
	free(copy);
	return r;
}

static int
add_listen(struct cl_offer_config *c, const char *v, char *err, size_t el)
{
	char a[INET6_ADDRSTRLEN + 1];

	if (cl_offer_parse_addr(v, a, sizeof(a)) != 0) {
		snprintf(err, el,
		    "listen address \"%s\": not an IPv4 or IPv6 address "
		    "literal",
		    v);
		return -1;
	}
	if (c->nlisten >= CL_OFFER_MAX_LISTEN) {
		snprintf(err, el, "more than %d listen addresses",
		    CL_OFFER_MAX_LISTEN);
		return -1;
	}
	if ((c->listen[c->nlisten] = strdup(a)) == NULL)
		return -1;
	c->nlisten++;
	return 0;
}

static void
clear_listen(struct cl_offer_config *c)
{
	while (c->nlisten > 0)
		free(c->listen[--c->nlisten]);
}

static int
set_mode(struct cl_offer_config *c, const char *v, char *err, size_t el)
{
	if (strcmp(v, "view") == 0)
		c->control = 0;
	else if (strcmp(v, "control") == 0)
		c->control = 1;
	else {
		snprintf(err, el, "mode \"%s\": expected view or control", v);
		return -1;
	}
	return 0;
}

static int
set_mech(struct cl_offer_config *c, const char *v, char *err, size_t el)
{
	int m = cl_sasl_mech_parse(v);

	if (m == 0) {
		snprintf(
		    err, el, "mechanism \"%s\": expected PLAIN or EXTERNAL", v);
		return -1;
	}
	c->mech = m;
	return 0;
}

static int
set_dur(unsigned *dst, const char *what, const char *v, char *err, size_t el)
{
	if (cl_offer_parse_duration(v, dst) != 0) {
		snprintf(err, el,
		    "%s \"%s\": expected a duration (30, 30s, 5m, 1h)", what,
		    v);
		return -1;
	}
	return 0;
}

static int
set_port(unsigned *dst, const char *what, const char *v, char *err, size_t el)
{
	if (cl_offer_parse_port(v, dst) != 0) {
		snprintf(
		    err, el, "%s \"%s\": expected a port 0-65535", what, v);
		return -1;
	}
	return 0;
}

static int
set_level(struct cl_offer_config *c, const char *v, char *err, size_t el)
{
	int l = log_level_parse(v);

	if (l < 0) {
		snprintf(err, el,
		    "log level \"%s\": expected error, warn, info or debug", v);
		return -1;
	}
	c->log_level = l;
	return 0;
}

/* ---- the INI file ----------------------------------------------------- */

enum key_id {
	K_BROKER_ADDRESS,
	K_BROKER_SERVER_NAME,
	K_BROKER_CA,
	K_BROKER_TIMEOUT,
	K_AUTH_USER,
	K_AUTH_MECH,
	K_AUTH_PWFILE,
	K_AUTH_CERT,
	K_AUTH_KEY,
	K_LISTEN_ADDRESSES,
	K_LISTEN_PORT,
	K_VIEWER_PORT,
	K_VIEWER_COMMAND,
	K_OFFER_MODE,
	K_OFFER_TIMEOUT,
	K_OFFER_RELAY_AFTER,
	K_LOG_LEVEL,
};

static const struct {
	const char *section, *key;
	enum key_id id;
} keys[] = {
    {"broker", "address", K_BROKER_ADDRESS},
    {"broker", "server_name", K_BROKER_SERVER_NAME},
    {"broker", "ca", K_BROKER_CA},
    {"broker", "timeout", K_BROKER_TIMEOUT},
    {"auth", "user", K_AUTH_USER},
    {"auth", "mechanism", K_AUTH_MECH},
    {"auth", "password_file", K_AUTH_PWFILE},
    {"auth", "cert", K_AUTH_CERT},
    {"auth", "key", K_AUTH_KEY},
    {"listen", "addresses", K_LISTEN_ADDRESSES},
    {"listen", "port", K_LISTEN_PORT},
    {"viewer", "port", K_VIEWER_PORT},
    {"viewer", "command", K_VIEWER_COMMAND},
    {"offer", "mode", K_OFFER_MODE},
    {"offer", "timeout", K_OFFER_TIMEOUT},
    {"offer", "relay_after", K_OFFER_RELAY_AFTER},
    {"log", "level", K_LOG_LEVEL},
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static int
apply_key(
    struct cl_offer_config *c, enum key_id id, char *v, char *err, size_t el)
{
	char *tok, *save = NULL;

	switch (id) {
	case K_BROKER_ADDRESS:
		return set_brokers(c, v, err, el);
	case K_BROKER_SERVER_NAME:
		return set_str(&c->server_name, v);
	case K_BROKER_CA:
		return set_str(&c->ca, v);
	case K_BROKER_TIMEOUT:
		if (set_dur(&c->call_timeout_s, "timeout", v, err, el) != 0)
			return -1;
		if (c->call_timeout_s == 0) {
			snprintf(err, el, "timeout must be at least 1s");
			return -1;
		}
		return 0;
	case K_AUTH_USER:
		if (cl_sasl_name_check(v, strlen(v), err, el) != 0)
			return -1;
		return set_str(&c->user, v);
	case K_AUTH_MECH:
		return set_mech(c, v, err, el);
	case K_AUTH_PWFILE:
		return set_str(&c->password_file, v);
	case K_AUTH_CERT:
		return set_str(&c->cert, v);
	case K_AUTH_KEY:
		return set_str(&c->key, v);
	case K_LISTEN_ADDRESSES:
		clear_listen(c);
		for (tok = strtok_r(v, " \t,", &save); tok != NULL;
		     tok = strtok_r(NULL, " \t,", &save))
			if (add_listen(c, tok, err, el) != 0)
				return -1;
		return 0;
	case K_LISTEN_PORT:
		return set_port(&c->port, "port", v, err, el);
	case K_VIEWER_PORT:
		return set_port(&c->viewer_port, "viewer port", v, err, el);
	case K_VIEWER_COMMAND:
		return set_str(&c->viewer_cmd, v);
	case K_OFFER_MODE:
		return set_mode(c, v, err, el);
	case K_OFFER_TIMEOUT:
		if (set_dur(&c->timeout_s, "timeout", v, err, el) != 0)
			return -1;
		if (c->timeout_s == 0) {
			snprintf(err, el, "timeout must be at least 1s");
			return -1;
		}
		return 0;
	case K_OFFER_RELAY_AFTER:
		return set_dur(&c->relay_after_s, "relay_after", v, err, el);
	case K_LOG_LEVEL:
		return set_level(c, v, err, el);
	}
	return -1;
}

int
cl_offer_config_parse(struct cl_offer_config *c, const char *name,
    const char *text, char *err, size_t errlen)
{
	struct rp_cfg p;
	unsigned char seen[NKEYS];
	char section[32] = "", line[CFG_LINE_MAX + 1];
	enum rp_cfg_read r;
	size_t i;

	memset(seen, 0, sizeof(seen));
	rp_cfg_init(&p, name, NULL, text, err, errlen);
	while ((r = rp_cfg_read_line(&p, line, CFG_LINE_MAX)) != RP_CFG_EOF) {
		unsigned lineno = p.line;
		char *l, *eq, *k, *v, msg[256];

		if (r == RP_CFG_TOO_LONG) {
			rp_cfg_error(&p, lineno, "line longer than %d bytes",
			    CFG_LINE_MAX);
			continue;
		}
		if (r == RP_CFG_NUL) {
			rp_cfg_error(&p, lineno, "NUL byte");
			continue;
		}
		l = trim(line);
		if (*l == '\0' || *l == ';' || *l == '#')
			continue;
		if (*l == '[') {
			char *rb = strchr(l, ']');
			if (rb == NULL || rb[1] != '\0') {
				rp_cfg_error(&p, lineno, "bad section header");
				section[0] = '\0';
				continue;
			}
			*rb = '\0';
			for (i = 0; i < NKEYS; i++)
				if (strcmp(keys[i].section, l + 1) == 0)
					break;
			if (i == NKEYS) {
				rp_cfg_error(
				    &p, lineno, "unknown section [%s]", l + 1);
				section[0] = '\0';
				/* keys below are reported once, here */
				snprintf(section, sizeof(section), "?");
				continue;
			}
			snprintf(section, sizeof(section), "%s", l + 1);
			continue;
		}
		if ((eq = strchr(l, '=')) == NULL) {
			rp_cfg_error(&p, lineno, "expected key = value");
			continue;
		}
		*eq = '\0';
		k = trim(l);
		v = trim(eq + 1);
		if (strcmp(section, "?") == 0)
			continue;
		if (section[0] == '\0') {
			rp_cfg_error(&p, lineno, "\"%s\" outside a section", k);
			continue;
		}
		for (i = 0; i < NKEYS; i++)
			if (strcmp(keys[i].section, section) == 0 &&
			    strcmp(keys[i].key, k) == 0)
				break;
		if (i == NKEYS) {
			rp_cfg_error(&p, lineno, "unknown key \"%s\" in [%s]",
			    k, section);
			continue;
		}
		if (seen[i]) {
			rp_cfg_error(
			    &p, lineno, "[%s] %s given twice", section, k);
			continue;
		}
		seen[i] = 1;
		if (*v == '\0') {
			rp_cfg_error(
			    &p, lineno, "[%s] %s: empty value", section, k);
			continue;
		}
		msg[0] = '\0';
		if (apply_key(c, keys[i].id, v, msg, sizeof(msg)) != 0)
			rp_cfg_error(
			    &p, lineno, "%s", msg[0] ? msg : "out of memory");
	}
	return p.nerr > 0 ? -1 : 0;
}

int
cl_offer_config_load(
    struct cl_offer_config *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t n;
	int rc;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if ((buf = malloc(65536 + 1)) == NULL) {
		fclose(f);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	n = fread(buf, 1, 65536 + 1, f);
	fclose(f);
	if (n > 65536) {
		free(buf);
		snprintf(err, errlen, "%s: larger than 64 KiB", path);
		return -1;
	}
	buf[n] = '\0';
	if (strlen(buf) != n) {
		free(buf);
		snprintf(err, errlen, "%s: NUL byte in the file", path);
		return -1;
	}
	rc = cl_offer_config_parse(c, path, buf, err, errlen);
	free(buf);
	if (rc == 0 && set_str(&c->config_path, path) != 0)
		return -1;
	return rc;
}

/* ---- the command line ------------------------------------------------- */

void
cl_offer_usage(FILE *f)
{
	fprintf(f,
	    "usage: raoffer [options] [--control] MACHINE   offer assistance\n"
	    "       raoffer [options] machines [FILTER]     machines you may "
	    "help\n"
	    "       raoffer [options] tickets               your open "
	    "tickets\n"
	    "       raoffer [options] cancel ID             cancel a ticket\n"
	    "       raoffer [options] control ID            ask for control\n"
	    "options:\n"
	    "  -c, --config FILE       settings (default " CL_OFFER_DEFAULT_CONF
	    ",\n"
	    "                          if present; 'none': no file)\n"
	    "  -b, --broker HOST:PORT  the broker (\"A:P,B:P\": tried in "
	    "turn)\n"
	    "      --server-name NAME  the broker's certificate name (default "
	    "HOST)\n"
	    "      --ca FILE           the organisation's CA (PEM)\n"
	    "  -u, --user NAME         CORP\\alice, alice@corp.example or "
	    "alice\n"
	    "      --password-file F   first line is the password (mode 0600)\n"
	    "      --cert F --key F    client certificate: SASL EXTERNAL\n"
	    "      --mechanism M       PLAIN or EXTERNAL\n"
	    "  -l, --listen ADDR       address for the agent to connect to "
	    "(repeat)\n"
	    "  -p, --port N            listening port (default 0: any free "
	    "port)\n"
	    "      --viewer-port N     local port for the viewer, 127.0.0.1 "
	    "(default any)\n"
	    "      --viewer-cmd CMD    run CMD, %%p = the local port\n"
	    "      --control | --view  ticket mode (default view)\n"
	    "  -t, --timeout DUR       wait for consent and connection (120s)\n"
	    "      --relay-after DUR   join the broker's relay after DUR "
	    "without "
	    "a direct\n"
	    "                          connection (default 0: when the broker "
	    "says so)\n"
	    "  -v                      more output (repeat for debug)\n"
	    "  -h, --help, -V, --version\n"
	    "exit: 0 ok, 1 refused/declined, 2 usage/config, 3 broker or "
	    "directory unavailable\n");
}

enum {
	O_SERVER_NAME = 256,
	O_CA,
	O_PWFILE,
	O_CERT,
	O_KEY,
	O_MECH,
	O_VIEWER_PORT,
	O_VIEWER_CMD,
	O_CONTROL,
	O_VIEW,
	O_RELAY_AFTER,
	O_TEST_REFUSE,
};

static const struct option longopts[] = {
    {"config", required_argument, NULL, 'c'},
    {"broker", required_argument, NULL, 'b'},
    {"server-name", required_argument, NULL, O_SERVER_NAME},
    {"ca", required_argument, NULL, O_CA},
    {"user", required_argument, NULL, 'u'},
    {"password-file", required_argument, NULL, O_PWFILE},
    {"cert", required_argument, NULL, O_CERT},
    {"key", required_argument, NULL, O_KEY},
    {"mechanism", required_argument, NULL, O_MECH},
    {"listen", required_argument, NULL, 'l'},
    {"port", required_argument, NULL, 'p'},
    {"viewer-port", required_argument, NULL, O_VIEWER_PORT},
    {"viewer-cmd", required_argument, NULL, O_VIEWER_CMD},
    {"control", no_argument, NULL, O_CONTROL},
    {"view", no_argument, NULL, O_VIEW},
    {"timeout", required_argument, NULL, 't'},
    {"relay-after", required_argument, NULL, O_RELAY_AFTER},
    {"test-refuse-direct", no_argument, NULL, O_TEST_REFUSE},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};
#define SHORTOPTS "+:c:b:u:l:p:t:vhV"

/* The -c value without getopt (it must be read before the other options
 * apply over it). NULL when absent. */
static const char *
find_config_arg(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0)
			break;
		if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) &&
		    i + 1 < argc)
			return argv[i + 1];
		if (strncmp(a, "--config=", 9) == 0)
			return a + 9;
		if (strncmp(a, "-c", 2) == 0 && a[2] != '\0')
			return a + 2;
	}
	return NULL;
}

/* What the passes over the options (one per operand) share: -l and -v
 * count across all of them ("raoffer -l A ws-042 -l B" listens on both). */
struct opt_state {
	int listen_cleared; /* the file's listen list was replaced */
	int verbose;
};

static int
parse_options(struct cl_offer_config *c, int argc, char **argv, int *optout,
    struct opt_state *st, char *err, size_t el)
{
	int ch;

	optind = 0; /* glibc: full re-initialisation (argv changes) */
	opterr = 0;
	/* '+': options stop at the first operand; the operands' own options
	 * are read in a second pass (see cl_offer_config_args). */
	while (
	    (ch = getopt_long(argc, argv, SHORTOPTS, longopts, NULL)) != -1) {
		const char *v = optarg;
		int r = 0;

		switch (ch) {
		case 'c':
			break;
		case 'b':
			r = set_brokers(c, v, err, el);
			break;
		case O_SERVER_NAME:
			r = set_str(&c->server_name, v);
			break;
		case O_CA:
			r = set_str(&c->ca, v);
			break;
		case 'u':
			if (cl_sasl_name_check(v, strlen(v), err, el) != 0)
				return -1;
			r = set_str(&c->user, v);
			break;
		case O_PWFILE:
			r = set_str(&c->password_file, v);
			break;
		case O_CERT:
			r = set_str(&c->cert, v);
			break;
		case O_KEY:
			r = set_str(&c->key, v);
			break;
		case O_MECH:
			r = set_mech(c, v, err, el);
			break;
		case 'l':
			/* the first --listen replaces the file's list */
			if (!st->listen_cleared) {
				clear_listen(c);
				st->listen_cleared = 1;
			}
			r = add_listen(c, v, err, el);
			break;
		case 'p':
			r = set_port(&c->port, "--port", v, err, el);
			break;
		case O_VIEWER_PORT:
			r = set_port(
			    &c->viewer_port, "--viewer-port", v, err, el);
			break;
		case O_VIEWER_CMD:
			r = set_str(&c->viewer_cmd, v);
			break;
		case O_CONTROL:
			c->control = 1;
			break;
		case O_VIEW:
			c->control = 0;
			break;
		case 't':
			r = set_dur(&c->timeout_s, "--timeout", v, err, el);
			if (r == 0 && c->timeout_s == 0) {
				snprintf(
				    err, el, "--timeout must be at least 1s");
				r = -1;
			}
			break;
		case O_RELAY_AFTER:
			r = set_dur(
			    &c->relay_after_s, "--relay-after", v, err, el);
			break;
		case O_TEST_REFUSE:
			c->test_refuse_direct = 1;
			break;
		case 'v':
			st->verbose++;
			break;
		case 'h':
			cl_offer_usage(stdout);
			return 1;
		case 'V':
			printf("raoffer 0.1\n");
			return 1;
		case ':':
			snprintf(err, el, "option %s needs a value",
			    argv[optind - 1]);
			return -1;
		default:
			if (optopt != 0 && optopt < 256)
				snprintf(err, el, "unknown option -%c", optopt);
			else
				snprintf(err, el, "unknown option %s",
				    argv[optind - 1]);
			return -1;
		}
		if (r != 0) {
			if (err[0] == '\0')
				snprintf(err, el, "out of memory");
			return -1;
		}
	}
	if (st->verbose > 0)
		c->log_level = st->verbose == 1 ? LOG_LVL_INFO : LOG_LVL_DEBUG;
	*optout = optind;
	return 0;
}

int
cl_offer_config_args(
    struct cl_offer_config *c, int argc, char **argv, char *err, size_t errlen)
{
	const char *cfg = find_config_arg(argc, argv);
	char *ops[4];
	char **rest = NULL;
	int nops = 0, i, optout = 0, r, nrest;
	struct opt_state st = {0, 0};

	err[0] = '\0';
	if (cfg == NULL && access(CL_OFFER_DEFAULT_CONF, F_OK) == 0)
		cfg = CL_OFFER_DEFAULT_CONF;
	if (cfg != NULL && strcmp(cfg, "none") != 0 &&
	    cl_offer_config_load(c, cfg, err, errlen) != 0)
		return -1;
	/* Options may come before and after the subcommand ("raoffer -v
	 * machines -b host:port"): read them, collect one operand, go on
	 * with what follows it. */
	if ((rest = calloc((size_t)argc + 1, sizeof(*rest))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	nrest = argc;
	for (i = 0; i < argc; i++)
		rest[i] = argv[i];
	for (;;) {
		r = parse_options(c, nrest, rest, &optout, &st, err, errlen);
		if (r != 0)
			break;
		if (optout >= nrest)
			break;
		if (strcmp(rest[optout - 1], "--") == 0 && optout > 1) {
			/* everything after -- is an operand */
			for (i = optout; i < nrest && nops < 4; i++)
				ops[nops++] = rest[i];
			if (i < nrest)
				nops = 5;
			break;
		}
		if (nops >= 3) {
			nops = 5;
			break;
		}
		ops[nops++] = rest[optout];
		/* shift: keep argv[0], drop what was read */
		for (i = 1; optout + i < nrest; i++)
			rest[i] = rest[optout + i];
		nrest = i;
	}
	free(rest);
	if (r != 0)
		return r;
	if (nops > 3) {
		snprintf(err, errlen, "too many arguments (see raoffer -h)");
		return -1;
	}
	if (nops == 0) {
		snprintf(err, errlen,
		    "what to do? a MACHINE, machines, tickets, cancel ID or "
		    "control ID (see raoffer -h)");
		return -1;
	}
	if (strcmp(ops[0], "machines") == 0) {
		c->cmd = CL_CMD_MACHINES;
		if (nops > 2) {
			snprintf(err, errlen, "machines takes one FILTER");
			return -1;
		}
		if (nops == 2 && set_str(&c->arg, ops[1]) != 0)
			return -1;
	} else if (strcmp(ops[0], "tickets") == 0) {
		c->cmd = CL_CMD_TICKETS;
		if (nops > 1) {
			snprintf(err, errlen, "tickets takes no argument");
			return -1;
		}
	} else if (strcmp(ops[0], "cancel") == 0 ||
	    strcmp(ops[0], "control") == 0) {
		c->cmd = ops[0][1] == 'a' ? CL_CMD_CANCEL : CL_CMD_CONTROL;
		if (nops != 2 || !cl_offer_ticket_id_valid(ops[1])) {
			snprintf(err, errlen,
			    "%s needs one ticket ID (32 lower-case hex "
			    "characters, see raoffer tickets)",
			    ops[0]);
			return -1;
		}
		if (set_str(&c->arg, ops[1]) != 0)
			return -1;
	} else {
		const char *m = ops[0];
		if (strcmp(m, "offer") == 0) {
			if (nops != 2) {
				snprintf(
				    err, errlen, "offer needs one MACHINE");
				return -1;
			}
			m = ops[1];
		} else if (nops != 1) {
			snprintf(err, errlen,
			    "unknown command \"%s\" (an offer takes one "
			    "MACHINE)",
			    ops[0]);
			return -1;
		}
		c->cmd = CL_CMD_OFFER;
		if (*m == '\0' || *m == '-' || strlen(m) > 253) {
			snprintf(err, errlen, "bad machine name \"%s\"", m);
			return -1;
		}
		if (set_str(&c->arg, m) != 0)
			return -1;
	}
	return cl_offer_config_check(c, err, errlen);
}

int
cl_offer_config_check(const struct cl_offer_config *c, char *err, size_t errlen)
{
	int mech = c->mech    ? c->mech
	    : c->cert != NULL ? CL_SASL_EXTERNAL
	                      : CL_SASL_PLAIN;

	if (c->nbroker == 0) {
		snprintf(err, errlen,
		    "no broker: --broker HOST:PORT or [broker] address");
		return -1;
	}
	if (c->ca == NULL) {
		snprintf(err, errlen,
		    "no CA to verify the broker with: --ca FILE or [broker] "
		    "ca");
		return -1;
	}
	if ((c->cert == NULL) != (c->key == NULL)) {
		snprintf(err, errlen, "--cert and --key go together");
		return -1;
	}
	if (mech == CL_SASL_EXTERNAL && c->cert == NULL) {
		snprintf(err, errlen,
		    "mechanism EXTERNAL needs a client certificate (--cert, "
		    "--key)");
		return -1;
	}
	if (mech == CL_SASL_PLAIN && c->user == NULL) {
		snprintf(err, errlen, "no user: --user NAME or [auth] user");
		return -1;
	}
	/* A password file with EXTERNAL is not used (the file may set it
	 * for PLAIN while --cert picks EXTERNAL for one run). */
	if (c->viewer_cmd != NULL) {
		char *t = cl_offer_viewer_cmd(c->viewer_cmd, 1);
		if (t == NULL) {
			snprintf(err, errlen,
			    "viewer command: only %%p (the port) and %%%% are "
			    "allowed");
			return -1;
		}
		free(t);
	}
	if (c->port != 0 && c->viewer_port == c->port) {
		snprintf(err, errlen,
		    "--port and --viewer-port must differ (%u)", c->port);
		return -1;
	}
	return 0;
}

/* ---- passwords -------------------------------------------------------- */

int
cl_offer_read_password_file(const char *path, char *buf, size_t bufsize,
    size_t *len, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	size_t got = 0;
	char *nl;
	int fd;

	buf[0] = '\0';
	*len = 0;
	/* O_NONBLOCK: opening a FIFO for reading would otherwise wait for
	 * a writer; it is refused below like anything but a regular file
	 * (where O_NONBLOCK changes nothing). */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) <
	    0) {
		snprintf(
		    err, errlen, "password file %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(
		    err, errlen, "password file %s: not a regular file", path);
		close(fd);
		return -1;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen,
		    "password file %s: owned by uid %u, not by you (uid %u)",
		    path, (unsigned)st.st_uid, (unsigned)geteuid());
		close(fd);
		return -1;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		snprintf(err, errlen,
		    "password file %s: group or others may access it (mode "
		    "%04o); refused: chmod 600 %s",
		    path, (unsigned)(st.st_mode & 07777), path);
		close(fd);
		return -1;
	}
	while (got + 1 < bufsize) {
		n = read(fd, buf + got, bufsize - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "password file %s: %s", path,
			    strerror(errno));
			close(fd);
			cl_wipe(buf, bufsize);
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (memchr(buf, '\n', got) != NULL)
			break;
	}
	close(fd);
	buf[got] = '\0';
	if ((nl = memchr(buf, '\n', got)) != NULL)
		got = (size_t)(nl - buf);
	else if (got + 1 >= bufsize) {
		cl_wipe(buf, bufsize);
		snprintf(err, errlen,
		    "password file %s: the first line is longer than %zu "
		    "bytes",
		    path, bufsize - 2);
		return -1;
	}
	if (got > 0 && buf[got - 1] == '\r')
		got--;
	if (memchr(buf, '\0', got) != NULL) {
		cl_wipe(buf, bufsize);
		snprintf(err, errlen,
		    "password file %s: NUL byte in the password", path);
		return -1;
	}
	cl_wipe(buf + got, bufsize - got);
	if (got == 0) {
		snprintf(err, errlen,
		    "password file %s: the first line is empty", path);
		return -1;
	}
	*len = got;
	return 0;
}

int
cl_offer_read_password_tty(const char *prompt, char *buf, size_t bufsize,
    size_t *len, char *err, size_t errlen)
{
	struct termios old, noecho;
	size_t got = 0;
	int fd, rc = 0;
	char ch;

	*len = 0;
	if ((fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY)) < 0) {
		snprintf(err, errlen,
		    "no terminal to ask for the password (%s); use "
		    "--password-file",
		    strerror(errno));
		return -1;
	}
	if (tcgetattr(fd, &old) != 0) {
		snprintf(err, errlen, "/dev/tty: %s", strerror(errno));
		close(fd);
		return -1;
	}
	noecho = old;
	noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
	noecho.c_lflag |= ICANON;
	/* Echo off before the prompt: whatever is typed after seeing it is
	 * never shown. */
	if (tcsetattr(fd, TCSAFLUSH, &noecho) != 0) {
		snprintf(
		    err, errlen, "cannot turn echo off: %s", strerror(errno));
		close(fd);
		return -1;
	}
	if (write(fd, prompt, strlen(prompt)) < 0) {
		/* the prompt is a courtesy; the read still works */
	}
	for (;;) {
		ssize_t n = read(fd, &ch, 1);
		if (n < 0 && errno == EINTR) {
			rc = -1;
			snprintf(err, errlen, "interrupted");
			break;
		}
		if (n <= 0 || ch == '\n' || ch == '\r')
			break;
		if (got + 1 >= bufsize) {
			rc = -1;
			snprintf(err, errlen, "the password is too long");
			/* keep reading to the end of the line */
			continue;
		}
		buf[got++] = ch;
	}
	ch = 0;
	(void)tcsetattr(fd, TCSAFLUSH, &old);
	if (write(fd, "\n", 1) < 0) {
		/* nothing to do */
	}
	close(fd);
	buf[got] = '\0';
	if (rc == 0 && got == 0) {
		rc = -1;
		snprintf(err, errlen, "empty password");
	}
	if (rc != 0) {
		cl_wipe(buf, bufsize);
		return -1;
	}
	*len = got;
	return 0;
}
