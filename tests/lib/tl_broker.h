/*
 * tl_broker.h - the real rabrokerd for integration tests, and a scripted
 * JSON-RPC client over real TLS that plays an agent or a helper.
 *
 * Broker: tl_broker_setup writes a configuration (every path inside a
 * fresh temporary directory), a policy and copies of the TLS key with mode
 * 0600; tl_broker_start runs RABROKER_BUILD_DIR/broker/rabrokerd -d -f
 * CONF as a child (stderr to DIR/rabrokerd.log) and waits until it logs
 * that it is ready, or exits, or 15 s pass. stop/restart/signal act on
 * that child; destroy kills what is left and removes the directory. The
 * directory section points at a tl_slapd when one is given.
 *
 * Client: tl_client_connect opens TLS to 127.0.0.1:port, verifying the
 * broker against the test CA, optionally presenting PKI/NAME.pem (an agent
 * machine certificate, a rogue one...). Everything is synchronous-looking:
 * each call runs the caller's event loop until the answer or a deadline.
 * Requests and notifications the broker sends (novice.prompt, offer.update,
 * ...) are answered by a handler set with tl_client_on_request, or queued
 * for tl_client_wait_request.
 */
#ifndef TL_BROKER_H
#define TL_BROKER_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

struct event_base;
struct tl_slapd;

struct tl_broker {
	char dir[512];
	char conf[600];   /* rabrokerd.conf */
	char policy[600]; /* policy.conf */
	char audit[600];  /* audit.log */
	char store[600];  /* tickets.db */
	char log[600];    /* the daemon's stderr */
	char pki[600];    /* ca.pem, broker.pem, ws-042.pem ... */
	char key[600];    /* copy of broker-key.pem, mode 0600 */
	unsigned port;
	int quiet; /* log level above info: no "ready" line to wait for */
	unsigned
	    nofile; /* RLIMIT_NOFILE of the child (soft = hard); 0: inherited */
	pid_t pid;  /* 0 when not running */
	int status; /* last exit status (waitpid) */
};

struct tl_broker_opts {
	const struct tl_slapd *slapd; /* NULL: no [directory] section */
	const char *policy;           /* policy text; NULL: allow nothing */
	int require_computer_object;
	unsigned keepalive_s;      /* 0: 60 */
	unsigned drain_timeout_s;  /* 0: 5 */
	unsigned prompt_timeout_s; /* 0: default */
	const char *extra; /* raw INI appended at the end (more sections) */
	unsigned nofile;   /* descriptor limit of the daemon; 0: inherited */
	const char *log_level; /* NULL: debug */
};

/* Makes the directory and files; picks a free port. 0 or -1 (stderr). */
int tl_broker_setup(struct tl_broker *b, const struct tl_broker_opts *o);
/* Starts the daemon and waits for "ready". 0, or -1 (it exited: its
 * status is in b->status, its log in b->log). */
int tl_broker_start(struct tl_broker *b);
/* Sends sig and waits up to timeout_ms for the exit. Returns the exit
 * status (WEXITSTATUS) or -1 (still running: then it is killed) or -2
 * (killed by a signal). elapsed_ms may be NULL. */
int tl_broker_stop(
    struct tl_broker *b, int sig, unsigned timeout_ms, unsigned *elapsed_ms);
int tl_broker_signal(struct tl_broker *b, int sig);
int tl_broker_restart(struct tl_broker *b);
void tl_broker_destroy(struct tl_broker *b);
/* Replaces the policy file (then SIGHUP to apply). */
int tl_broker_write_policy(struct tl_broker *b, const char *text);
/* Lines of the log / the audit trail containing needle; -1 if unreadable. */
long tl_broker_log_count(const struct tl_broker *b, const char *needle);
long tl_broker_audit_count(const struct tl_broker *b, const char *needle);
/* Waits (bounded) until the count reaches at least n. 1 if it did. */
int tl_broker_wait_audit(
    const struct tl_broker *b, const char *needle, long n, unsigned ms);
int tl_broker_wait_log(
    const struct tl_broker *b, const char *needle, long n, unsigned ms);

/* Runs rabrokerd with args (NULL-terminated, without argv[0]) to the end,
 * at most timeout_ms; out gets stdout+stderr. Returns the exit status, or
 * -1 if it had to be killed. */
int tl_broker_run(
    const char *const *args, char *out, size_t outlen, unsigned timeout_ms);
/* CPU time (user + system) the daemon has used, in milliseconds; -1 if
 * unknown. */
long tl_broker_cpu_ms(const struct tl_broker *b);
/* Same for its main thread (the event loop; the other threads are the
 * handshake, directory, audit and store threads). */
long tl_broker_main_cpu_ms(const struct tl_broker *b);
/* Profiling for benchmarks: when TL_PERF_DIR is set, tl_broker_perf_start
 * runs `perf record -g --call-graph dwarf -p PID` on the running daemon
 * into TL_PERF_DIR/TAG.data (TL_PERF_ARGS replaces the default options
 * "-F 999 --call-graph dwarf,16384"); tl_broker_perf_stop ends it (SIGINT,
 * waits up to 30 s). Both do nothing without TL_PERF_DIR. */
void tl_broker_perf_start(const struct tl_broker *b, const char *tag);
void tl_broker_perf_stop(void);
/* Resident memory of the daemon in bytes (/proc/PID/statm); 0 if unknown. */
size_t tl_broker_rss(const struct tl_broker *b);
/* Path of the rabrokerd binary. */
const char *tl_broker_bin(void);

/* --- the scripted client ------------------------------------------------ */

struct tl_client;

/* Handler for requests/notifications from the broker; id is NULL for a
 * notification. Return a new reference to a result to answer, or NULL to
 * leave the request queued for tl_client_wait_request. */
typedef json_t *(*tl_request_fn)(
    struct tl_client *c, const char *method, json_t *params, void *arg);

/*
 * Connects and completes the TLS handshake. cert: NULL (no client
 * certificate) or a name in pki ("ws-042" -> ws-042.pem + ws-042-key.pem).
 * Returns NULL if TLS fails; then, if why is not NULL, it receives the
 * reason.
 */
struct tl_client *tl_client_connect(struct event_base *base, const char *pki,
    unsigned port, const char *cert, unsigned timeout_ms, char *why,
    size_t whylen);
/* Same from the local IPv4 address src ("127.0.0.2"; NULL: any), for
 * limits per source address. */
struct tl_client *tl_client_connect_from(struct event_base *base,
    const char *pki, unsigned port, const char *cert, const char *src,
    unsigned timeout_ms, char *why, size_t whylen);
void tl_client_free(struct tl_client *c);

/* Calls method and waits. Returns 0 and *result (new reference), or the
 * error code and *result = the error object (new reference, may be NULL),
 * or RP_ERR_TIMEOUT / RP_ERR_CLOSED. result may be NULL. */
int tl_client_call(struct tl_client *c, const char *method, json_t *params,
    unsigned timeout_ms, json_t **result);
int tl_client_notify(struct tl_client *c, const char *method, json_t *params);
/* The error reason string of an error object ("forbidden"), or "". */
const char *tl_error_reason(const json_t *err);

void tl_client_on_request(struct tl_client *c, tl_request_fn fn, void *arg);
/* Waits for a queued request/notification named method (NULL: any).
 * Returns its params (new reference) and *id (new reference or NULL for a
 * notification; id may be NULL), or NULL on timeout. */
json_t *tl_client_wait_request(
    struct tl_client *c, const char *method, unsigned timeout_ms, json_t **id);
int tl_client_reply(struct tl_client *c, json_t *id, json_t *result);

/* 1 once the connection is closed. */
int tl_client_closed(const struct tl_client *c);
int tl_client_wait_closed(struct tl_client *c, unsigned timeout_ms);
const char *tl_client_close_reason(const struct tl_client *c);

/* Shortcuts. hello as agent + agent.register with fqdn and one graphical
 * session of user. 0 or the failing error code. */
int tl_client_agent_login(
    struct tl_client *c, const char *fqdn, const char *user);
/* hello as helper + auth.start PLAIN. 0 or the error code. */
int tl_client_helper_login(
    struct tl_client *c, const char *user, const char *password);

#endif
