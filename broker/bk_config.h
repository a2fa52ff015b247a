/*
 * bk_config.h - rabrokerd's configuration file (docs/CONFIG.md).
 *
 * INI, parsed with inih but strictly: an unknown section or key, a bad
 * value, a duplicate key or a missing required setting is an error that
 * names FILE:LINE. Every error is reported, not only the first, so that
 * `rabrokerd -n` shows all of them at once.
 */
#ifndef BK_CONFIG_H
#define BK_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "az_dir.h"

#define BK_CONFIG_DEFAULT_PATH "/etc/rabroker/rabrokerd.conf"
#define BK_CONFIG_METRICS_LISTEN "127.0.0.1:9464"
#define BK_CONFIG_CONTROL_SOCKET "/run/rabroker/control.sock"

struct bk_config {
	char *path; /* the file, as given */

	/* [broker] */
	char *listen;      /* as written: "127.0.0.1:4433", "[::1]:4433" */
	char *listen_host; /* "127.0.0.1", "::1" (brackets removed) */
	unsigned listen_port;
	unsigned listen_line; /* line of `listen` (0 = default) */
	char *cert, *key, *ca;
	unsigned handshake_timeout_s;
	unsigned keepalive_s;
	unsigned max_connections;
	/* Connections not logged in yet (TLS handshake, hello, SASL) from
	 * one IPv4 address or one IPv6 /64; over it a new one is closed at
	 * accept. 0: no limit. */
	unsigned max_pending_per_address;
	/* TLS handshakes run on this many threads (0: on the event loop). */
	unsigned handshake_threads;
	unsigned drain_timeout_s;
	unsigned login_timeout_s; /* hello + authentication must end by then */
	/* TLS session tickets (resumption): the key file (NULL: a key made
	 * in memory at start, so tickets do not survive a restart) and how
	 * long a ticket is accepted. */
	char *ticket_key_file;
	unsigned ticket_lifetime_s;

	/* [directory] and [domain NAME] */
	int have_directory;
	struct az_dir_config dir;
	int require_computer_object;

	/* [policy] */
	char *policy_file;

	/* [sasl] */
	char **mechanisms; /* upper case, e.g. "PLAIN", "EXTERNAL" */
	size_t nmechanisms;
	unsigned max_failures;     /* failed logins per address ... */
	unsigned failure_window_s; /* ... in this window -> rate_limited */

	/* [tickets] */
	char *store; /* backend name */
	char *store_path;
	unsigned max_duration_s;
	unsigned prompt_timeout_s;
	unsigned connect_timeout_s;

	/* [audit] */
	char *audit_path;
	int audit_syslog;

	/* [log] */
	int log_level; /* enum log_level */
	int log_syslog;

	/* [metrics] */
	char *metrics_listen; /* "" or NULL: off */
	int metrics_allow_remote;

	/* [control] */
	char *control_socket;

	/* [relay] */
	unsigned relay_idle_timeout_s;
	unsigned relay_wait_timeout_s;
	uint64_t relay_byte_budget; /* 0 = unlimited */
};

/*
 * Reads and checks `path`. On success returns the configuration. On error
 * returns NULL and err holds one "FILE:LINE: message" per line (LINE is
 * omitted for errors about the whole file, such as a missing setting).
 */
struct bk_config *bk_config_load(const char *path, char *err, size_t errlen);
/* Same from a string (unit tests); `name` is used in messages. */
struct bk_config *bk_config_load_string(
    const char *name, const char *text, char *err, size_t errlen);
void bk_config_free(struct bk_config *c);

/* 1 if `mech` (any case) is enabled in [sasl] mechanisms. */
int bk_config_has_mech(const struct bk_config *c, const char *mech);

/*
 * Refuses a secrets file that group or others may access. Returns 0, or -1
 * with "WHAT FILE is readable by group or others (mode 0644); chmod 600 it"
 * (or why it cannot be read) in err.
 */
int bk_config_check_secret(
    const char *what, const char *file, char *err, size_t errlen);

#endif
