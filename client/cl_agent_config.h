/*
 * cl_agent_config.h - raagent's configuration file (INI, read strictly).
 *
 * Every key is looked up in one table per section; an unknown section or
 * key, a bad value, a duplicate key, an over-long line or a missing
 * required key is an error named "FILE:LINE: why". All errors are
 * collected. deploy/raagent.conf documents every option.
 */
#ifndef CL_AGENT_CONFIG_H
#define CL_AGENT_CONFIG_H

#include <stddef.h>

#define CL_CFG_MAX_STATIC 32

enum cl_sessions_source { CL_SESS_LOGIND = 0, CL_SESS_STATIC };
enum cl_prompt_kind {
	CL_PROMPT_TERMINAL = 0,
	CL_PROMPT_GRAPHICAL,
	CL_PROMPT_SCRIPT
};
enum cl_tunnel_proto { CL_PROTO_RFB = 0, CL_PROTO_RAW };
/* [prompt] unattended: what may connect without a local yes while nobody
 * is logged on (the broker's nobody= must allow it too). Ordered. */
enum cl_unattended { CL_UNATT_NO = 0, CL_UNATT_VIEW, CL_UNATT_CONTROL };

struct cl_static_session {
	char *user; /* "CORP\bob" */
	char *kind; /* graphical, console, remote */
	int locked;
};

struct cl_agent_config {
	char *path;
	/* [agent] */
	char *broker_host, *broker_port; /* broker = host:port */
	char *server_name;               /* default: broker_host */
	char *ca, *cert, *key;
	char *fqdn; /* NULL: the certificate's identity */
	char *state_dir;
	char *domain;               /* prefix for logind user names: "CORP" */
	char *control_group;        /* group allowed on the control socket */
	unsigned backoff_base_ms;   /* reconnect: first delay */
	unsigned backoff_cap_ms;    /* reconnect: largest delay */
	unsigned stable_s;          /* connection up this long resets backoff */
	unsigned resolve_timeout_s; /* broker name lookup, all of it */
	char *nameserver; /* "IP[:port]": instead of /etc/resolv.conf's */
	/* [sessions] */
	enum cl_sessions_source source;
	unsigned poll_s;
	struct cl_static_session stat[CL_CFG_MAX_STATIC];
	size_t nstat;
	/* [prompt] */
	enum cl_prompt_kind prompt;
	char *prompt_script;           /* script:PATH */
	unsigned prompt_margin_s;      /* answer this much before the broker's
	                             timeout */
	enum cl_unattended unattended; /* default CL_UNATT_NO */
	/* [tunnel] */
	char *target_host, *target_port; /* target = 127.0.0.1:5900 */
	enum cl_tunnel_proto protocol;
	char *start_command;
	unsigned connect_timeout_s; /* per helper address, upper bound */
	int relay;
	/* [log] */
	int log_level; /* enum log_level */
	int log_syslog;
};

/* NULL on error; err gets every "FILE:LINE: why", one per line. */
struct cl_agent_config *cl_agent_config_load(
    const char *path, char *err, size_t errlen);
/* Same from a string (tests); name is used in messages. */
struct cl_agent_config *cl_agent_config_parse(
    const char *name, const char *text, char *err, size_t errlen);
void cl_agent_config_free(struct cl_agent_config *c);
/* Splits "host:port" / "[v6]:port" into malloc'd parts. 0 or -1. */
int cl_split_hostport(const char *s, char **host, char **port);

#endif
