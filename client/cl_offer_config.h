/*
 * cl_offer_config.h - raoffer's settings: an INI file read strictly
 * (unknown section or key, bad value, repeated key: "FILE:LINE: why"),
 * then command-line options over it. deploy/raoffer.conf documents every
 * key, docs/HELPER.md every option.
 *
 * Passwords never live here: cl_offer_read_password_file and
 * cl_offer_read_password_tty fill a caller's buffer, which the caller
 * wipes after use.
 */
#ifndef CL_OFFER_CONFIG_H
#define CL_OFFER_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define CL_OFFER_MAX_LISTEN 16
#define CL_OFFER_MAX_BROKERS 8
#define CL_OFFER_DEFAULT_CONF "/etc/rabroker/raoffer.conf"

/* Exit codes (docs/HELPER.md). */
enum cl_offer_exit {
	CL_EXIT_OK = 0,
	CL_EXIT_REFUSED = 1,     /* refused, declined, timed out, not found */
	CL_EXIT_USAGE = 2,       /* usage or configuration error */
	CL_EXIT_UNAVAILABLE = 3, /* broker or directory unavailable */
};

enum cl_offer_cmd {
	CL_CMD_NONE = 0,
	CL_CMD_OFFER,
	CL_CMD_MACHINES,
	CL_CMD_TICKETS,
	CL_CMD_CANCEL,
	CL_CMD_CONTROL,
};

struct cl_offer_broker {
	char *host, *port;
};

struct cl_offer_config {
	char *config_path; /* the file read, or NULL */
	/* [broker]: tried in this order, each address of each name */
	struct cl_offer_broker broker[CL_OFFER_MAX_BROKERS];
	size_t nbroker;
	char *server_name; /* NULL: the broker's host */
	char *ca;
	/* [auth] */
	char *user;
	int mech; /* enum cl_sasl_mech; 0: EXTERNAL with cert, else PLAIN */
	char *password_file;
	char *cert, *key;
	/* [listen] */
	char *listen[CL_OFFER_MAX_LISTEN]; /* address literals */
	size_t nlisten;                    /* 0: automatic */
	unsigned port;                     /* 0: ephemeral */
	/* [viewer] */
	unsigned viewer_port; /* 0: ephemeral, on 127.0.0.1 */
	char *viewer_cmd;     /* "%p" is the local port */
	/* [offer] */
	int control;             /* ask for a ticket that may get control */
	unsigned timeout_s;      /* consent plus connection */
	unsigned relay_after_s;  /* join the relay after this; 0: only when
	                           the broker says the agent waits there */
	unsigned call_timeout_s; /* connect, handshake, each request */
	/* [log] */
	int log_level; /* enum log_level */
	/* test only: accept direct connections and drop them at once */
	int test_refuse_direct;
	/* the command line */
	enum cl_offer_cmd cmd;
	char *arg; /* MACHINE, FILTER or ticket ID */
};

/* Defaults, nothing read. NULL on allocation failure. */
struct cl_offer_config *cl_offer_config_new(void);
void cl_offer_config_free(struct cl_offer_config *c);

/* Reads an INI text into c. Returns 0, or -1 with every error in err
 * ("NAME:LINE: why", one per line). */
int cl_offer_config_parse(struct cl_offer_config *c, const char *name,
    const char *text, char *err, size_t errlen);
int cl_offer_config_load(
    struct cl_offer_config *c, const char *path, char *err, size_t errlen);

/*
 * The whole command line: finds -c/--config (else CL_OFFER_DEFAULT_CONF if
 * it exists, unless -c none), loads it, then applies every option over it,
 * then the subcommand and its argument, then cl_offer_config_check.
 * Returns 0; 1 when --help or --version was printed (exit 0); -1 with
 * the reason in err (exit CL_EXIT_USAGE).
 */
int cl_offer_config_args(
    struct cl_offer_config *c, int argc, char **argv, char *err, size_t errlen);
/* Consistency of the merged settings. 0, or -1 with the reason. */
int cl_offer_config_check(
    const struct cl_offer_config *c, char *err, size_t errlen);
void cl_offer_usage(FILE *f);

/* A duration in whole seconds, at most 7 days: "30", "30s", "5m", "1h"
 * (rp_cfg_duration_ms's syntax). 0 or -1. */
int cl_offer_parse_duration(const char *s, unsigned *out);
/* Port 0..65535. 0 or -1. */
int cl_offer_parse_port(const char *s, unsigned *out);
/* An address literal ("192.0.2.7", "2001:db8::7", "[2001:db8::7]"):
 * writes the bare form to out. 0 or -1. */
int cl_offer_parse_addr(const char *s, char *out, size_t outlen);
/* A ticket id: 32 lower-case hex characters. 1 if valid. */
int cl_offer_ticket_id_valid(const char *s);
/* "vncviewer 127.0.0.1::%p" with %p -> port, %% -> %. malloc'd, or NULL
 * (another %-sequence, allocation). */
char *cl_offer_viewer_cmd(const char *tmpl, unsigned port);

/*
 * Reads the first line of a password file into buf (NUL-terminated; the
 * line end is not part of it). Refused: not a regular file, not owned by
 * us, any group/other permission (the message says chmod 600), empty, a
 * NUL byte, longer than bufsize - 1. 0, or -1 with the reason in err. The
 * password itself is never part of a message.
 */
int cl_offer_read_password_file(const char *path, char *buf, size_t bufsize,
    size_t *len, char *err, size_t errlen);
/* Prompts on /dev/tty and reads a line with echo off (restored on every
 * path). 0, or -1 with the reason. */
int cl_offer_read_password_tty(const char *prompt, char *buf, size_t bufsize,
    size_t *len, char *err, size_t errlen);

#endif
