/*
 * cl_agent_config.c - raagent.conf, read with inih but strictly.
 *
 * Lines come through rp_cfg's reader (counted, over-long ones and NUL
 * bytes refused); the handler looks every key up in one table. Errors are
 * collected as "FILE:LINE: why".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/util.h>

#include "rp_cfg.h"
#include "cl_agent_config.h"
#include "rp_log.h"

#define CFG_MAX_SEEN 128

struct pctx {
	struct rp_cfg cfg;
	struct cl_agent_config *c;
	char *seen[CFG_MAX_SEEN]; /* "section.key" of single keys */
	size_t nseen;
};

#define perr(p, ...) rp_cfg_error(&(p)->cfg, __VA_ARGS__)

/* inih does not tell the handler about a section without keys: check
 * every section header here. */
static void
rd_check_section(struct rp_cfg *cfg, const char *line)
{
	static const char *known[] = {
	    "agent", "sessions", "prompt", "tunnel", "log"};
	const char *s = line + strspn(line, " \t"), *e;
	size_t n;

	if (*s != '[')
		return;
	e = strchr(s, ']');
	if (e == NULL)
		return; /* inih reports the syntax error */
	n = (size_t)(e - s - 1);
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strlen(known[i]) == n && !strncmp(known[i], s + 1, n))
			return;
	rp_cfg_error(cfg, cfg->line, "unknown section [%.*s]", (int)n, s + 1);
}

int
cl_split_hostport(const char *s, char **host, char **port)
{
	const char *colon;
	size_t hl;

	*host = *port = NULL;
	if (s == NULL || *s == '\0')
		return -1;
	if (s[0] == '[') {
		const char *e = strchr(s, ']');
		if (e == NULL || e[1] != ':')
			return -1;
		hl = (size_t)(e - s - 1);
		colon = e + 1;
		s++;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || strchr(s, ':') != colon)
			return -1;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || colon[1] == '\0' || strlen(colon + 1) > 5 ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
	    atoi(colon + 1) < 1 || atoi(colon + 1) > 65535)
		return -1;
	*host = strndup(s, hl);
	*port = strdup(colon + 1);
	if (*host == NULL || *port == NULL) {
		free(*host);
		free(*port);
		*host = *port = NULL;
		return -1;
	}
	return 0;
}

/* ---- value parsers ---------------------------------------------------- */

static int
v_str(struct pctx *p, const char *v, char **out)
{
	(void)p;
	free(*out);
	*out = strdup(v);
	return *out == NULL ? -1 : 0;
}

static int
v_uint(const char *v, unsigned lo, unsigned hi, unsigned *out)
{
	uint64_t n;

	if (rp_cfg_number(v, &n) != 0 || n < lo || n > hi)
		return -1;
	*out = (unsigned)n;
	return 0;
}

/* "USER KIND [locked|unlocked]" */
static int
v_session(struct pctx *p, const char *v)
{
	struct cl_static_session *s;
	char buf[512], *tok[4], *save = NULL, *w;
	int n = 0;

	if (p->c->nstat >= CL_CFG_MAX_STATIC) {
		perr(p, p->cfg.line, "more than %d static sessions",
		    CL_CFG_MAX_STATIC);
		return 0;
	}
	snprintf(buf, sizeof(buf), "%s", v);
	for (w = strtok_r(buf, " \t", &save); w != NULL && n < 4;
	     w = strtok_r(NULL, " \t", &save))
		tok[n++] = w;
	if (n < 2 || n > 3 ||
	    (strcmp(tok[1], "graphical") && strcmp(tok[1], "console") &&
	        strcmp(tok[1], "remote")) ||
	    (n == 3 && strcmp(tok[2], "locked") &&
	        strcmp(tok[2], "unlocked"))) {
		perr(p, p->cfg.line,
		    "session: expected \"USER graphical|console|remote "
		    "[locked|unlocked]\"");
		return 0;
	}
	s = &p->c->stat[p->c->nstat++];
	s->user = strdup(tok[0]);
	s->kind = strdup(tok[1]);
	s->locked = n == 3 && !strcmp(tok[2], "locked");
	return s->user && s->kind ? 0 : -1;
}

/* ---- the key table ---------------------------------------------------- */

static int
on_kv(void *user, const char *section, const char *name, const char *value)
{
	struct pctx *p = user;
	struct cl_agent_config *c = p->c;
	char key[128];
	unsigned u;

	if (name == NULL || *name == '\0')
		return 1;
	if (strcmp(section, "agent") && strcmp(section, "sessions") &&
	    strcmp(section, "prompt") && strcmp(section, "tunnel") &&
	    strcmp(section, "log"))
		return 1; /* reported with the section header */
	snprintf(key, sizeof(key), "%s.%s", section, name);
	if (strcmp(key, "sessions.session") != 0) {
		for (size_t i = 0; i < p->nseen; i++)
			if (!strcmp(p->seen[i], key)) {
				perr(p, p->cfg.line, "%s given twice in [%s]",
				    name, section);
				return 1;
			}
		if (p->nseen < CFG_MAX_SEEN)
			p->seen[p->nseen++] = strdup(key);
	}
#define BAD(...)                                   \
	do {                                       \
		perr(p, p->cfg.line, __VA_ARGS__); \
		return 1;                          \
	} while (0)
	if (!strcmp(key, "agent.broker")) {
		free(c->broker_host);
		free(c->broker_port);
		if (cl_split_hostport(
		        value, &c->broker_host, &c->broker_port) != 0)
			BAD("broker: expected host:port, got \"%s\"", value);
	} else if (!strcmp(key, "agent.server_name"))
		v_str(p, value, &c->server_name);
	else if (!strcmp(key, "agent.ca"))
		v_str(p, value, &c->ca);
	else if (!strcmp(key, "agent.cert"))
		v_str(p, value, &c->cert);
	else if (!strcmp(key, "agent.key"))
		v_str(p, value, &c->key);
	else if (!strcmp(key, "agent.fqdn"))
		v_str(p, value, &c->fqdn);
	else if (!strcmp(key, "agent.state_dir"))
		v_str(p, value, &c->state_dir);
	else if (!strcmp(key, "agent.domain"))
		v_str(p, value, &c->domain);
	else if (!strcmp(key, "agent.control_group"))
		v_str(p, value, &c->control_group);
	else if (!strcmp(key, "agent.backoff_base")) {
		if (v_uint(value, 1, 3600, &u))
			BAD("backoff_base: seconds 1..3600");
		c->backoff_base_ms = u * 1000;
	} else if (!strcmp(key, "agent.backoff_base_ms")) {
		if (v_uint(value, 10, 3600000, &c->backoff_base_ms))
			BAD("backoff_base_ms: milliseconds 10..3600000");
	} else if (!strcmp(key, "agent.backoff_cap")) {
		if (v_uint(value, 1, 3600, &u))
			BAD("backoff_cap: seconds 1..3600");
		c->backoff_cap_ms = u * 1000;
	} else if (!strcmp(key, "agent.resolve_timeout")) {
		if (v_uint(value, 1, 300, &c->resolve_timeout_s))
			BAD("resolve_timeout: seconds 1..300");
	} else if (!strcmp(key, "agent.nameserver")) {
		struct sockaddr_storage ss;
		int sl = (int)sizeof(ss);
		if (evutil_parse_sockaddr_port(
		        value, (struct sockaddr *)&ss, &sl) != 0)
			BAD("nameserver: expected an IP address with an "
			    "optional :port, got \"%s\"",
			    value);
		v_str(p, value, &c->nameserver);
	} else if (!strcmp(key, "agent.stable")) {
		if (v_uint(value, 1, 86400, &c->stable_s))
			BAD("stable: seconds 1..86400");
	} else if (!strcmp(key, "sessions.source")) {
		if (!strcmp(value, "logind"))
			c->source = CL_SESS_LOGIND;
		else if (!strcmp(value, "static"))
			c->source = CL_SESS_STATIC;
		else
			BAD("source: logind or static, got \"%s\"", value);
	} else if (!strcmp(key, "sessions.poll")) {
		if (v_uint(value, 1, 3600, &c->poll_s))
			BAD("poll: seconds 1..3600");
	} else if (!strcmp(key, "sessions.session")) {
		if (v_session(p, value) != 0)
			BAD("out of memory");
	} else if (!strcmp(key, "prompt.command")) {
		if (!strcmp(value, "terminal"))
			c->prompt = CL_PROMPT_TERMINAL;
		else if (!strcmp(value, "graphical"))
			c->prompt = CL_PROMPT_GRAPHICAL;
		else if (!strncmp(value, "script:", 7) && value[7] == '/') {
			c->prompt = CL_PROMPT_SCRIPT;
			v_str(p, value + 7, &c->prompt_script);
		} else
			BAD("command: terminal, graphical or script:/PATH, "
			    "got \"%s\"",
			    value);
	} else if (!strcmp(key, "prompt.unattended")) {
		if (!strcmp(value, "no"))
			c->unattended = CL_UNATT_NO;
		else if (!strcmp(value, "view"))
			c->unattended = CL_UNATT_VIEW;
		else if (!strcmp(value, "control"))
			c->unattended = CL_UNATT_CONTROL;
		else
			BAD("unattended: no, view or control, got \"%s\"",
			    value);
	} else if (!strcmp(key, "prompt.timeout_margin")) {
		if (v_uint(value, 0, 60, &c->prompt_margin_s))
			BAD("timeout_margin: seconds 0..60");
	} else if (!strcmp(key, "tunnel.target")) {
		free(c->target_host);
		free(c->target_port);
		if (cl_split_hostport(
		        value, &c->target_host, &c->target_port) != 0)
			BAD("target: expected host:port, got \"%s\"", value);
	} else if (!strcmp(key, "tunnel.protocol")) {
		if (!strcmp(value, "rfb"))
			c->protocol = CL_PROTO_RFB;
		else if (!strcmp(value, "raw"))
			c->protocol = CL_PROTO_RAW;
		else
			BAD("protocol: rfb or raw, got \"%s\"", value);
	} else if (!strcmp(key, "tunnel.start_command")) {
		if (value[0] != '/')
			BAD("start_command: an absolute path");
		v_str(p, value, &c->start_command);
	} else if (!strcmp(key, "tunnel.connect_timeout")) {
		if (v_uint(value, 1, 300, &c->connect_timeout_s))
			BAD("connect_timeout: seconds 1..300");
	} else if (!strcmp(key, "tunnel.relay")) {
		if (rp_cfg_bool(value, &c->relay))
			BAD("relay: yes or no");
	} else if (!strcmp(key, "log.level")) {
		if ((c->log_level = log_level_parse(value)) < 0)
			BAD("level: error, warn, info or debug");
	} else if (!strcmp(key, "log.syslog")) {
		if (rp_cfg_bool(value, &c->log_syslog))
			BAD("syslog: yes or no");
	} else
		BAD("unknown key %s in [%s]", name, section);
#undef BAD
	return 1;
}

static void
defaults(struct cl_agent_config *c)
{
	c->backoff_base_ms = 1000;
	c->backoff_cap_ms = 60000;
	c->stable_s = 60;
	c->resolve_timeout_s = 10;
	c->source = CL_SESS_LOGIND;
	c->poll_s = 5;
	c->prompt = CL_PROMPT_TERMINAL;
	c->prompt_margin_s = 2;
	c->unattended = CL_UNATT_NO;
	c->protocol = CL_PROTO_RFB;
	c->connect_timeout_s = 30;
	c->relay = 1;
	c->log_level = LOG_LVL_INFO;
}

static void
finish(struct pctx *p)
{
	struct cl_agent_config *c = p->c;

	if (c->broker_host == NULL)
		perr(p, 0, "[agent] broker is required");
	if (c->ca == NULL)
		perr(p, 0, "[agent] ca is required");
	if (c->cert == NULL)
		perr(p, 0, "[agent] cert is required");
	if (c->key == NULL)
		perr(p, 0, "[agent] key is required");
	if (c->state_dir == NULL)
		perr(p, 0, "[agent] state_dir is required");
	if (c->backoff_cap_ms < c->backoff_base_ms)
		perr(p, 0, "[agent] backoff_cap is below backoff_base");
	if (c->server_name == NULL && c->broker_host != NULL)
		c->server_name = strdup(c->broker_host);
	if (c->target_host == NULL) {
		c->target_host = strdup("127.0.0.1");
		c->target_port = strdup("5900");
	}
	if (c->protocol == CL_PROTO_RAW && c->start_command == NULL)
		perr(p, 0, "[tunnel] protocol = raw needs start_command");
	if (c->source == CL_SESS_STATIC && c->nstat == 0)
		log_info("%s: [sessions] source = static with no session: "
		         "nobody is ever logged on",
		    p->cfg.name);
}

/* Reads what p->cfg was set up with. */
static struct cl_agent_config *
load(struct pctx *p)
{
	struct cl_agent_config *c;
	int rc;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	p->c = c;
	defaults(c);
	c->path = strdup(p->cfg.name);
	p->cfg.check_line = rd_check_section;
	rc = rp_cfg_ini_parse(&p->cfg, 0, on_kv, p);
	if (rc > 0)
		perr(p, (unsigned)rc, "syntax error");
	else if (rc < 0)
		perr(p, 0, "cannot read the file");
	if (p->cfg.nerr == 0)
		finish(p);
	for (size_t i = 0; i < p->nseen; i++)
		free(p->seen[i]);
	if (p->cfg.nerr > 0) {
		cl_agent_config_free(c);
		return NULL;
	}
	return c;
}

struct cl_agent_config *
cl_agent_config_load(const char *path, char *err, size_t errlen)
{
	struct pctx p = {.c = NULL};
	struct cl_agent_config *c;

	if (rp_cfg_open(&p.cfg, path, err, errlen) != 0)
		return NULL;
	c = load(&p);
	rp_cfg_close(&p.cfg);
	return c;
}

struct cl_agent_config *
cl_agent_config_parse(
    const char *name, const char *text, char *err, size_t errlen)
{
	struct pctx p = {.c = NULL};

	rp_cfg_init(&p.cfg, name, NULL, text, err, errlen);
	return load(&p);
}

void
cl_agent_config_free(struct cl_agent_config *c)
{
	if (c == NULL)
		return;
	free(c->path);
	free(c->broker_host);
	free(c->broker_port);
	free(c->server_name);
	free(c->ca);
	free(c->cert);
	free(c->key);
	free(c->fqdn);
	free(c->state_dir);
	free(c->domain);
	free(c->control_group);
	free(c->nameserver);
	for (size_t i = 0; i < c->nstat; i++) {
		free(c->stat[i].user);
		free(c->stat[i].kind);
	}
	free(c->prompt_script);
	free(c->target_host);
	free(c->target_port);
	free(c->start_command);
	free(c);
}
