/*
 * az_sasl.h - helper authentication: the broker as a Cyrus SASL server.
 *
 * Mechanisms:
 *   PLAIN     only inside TLS (external SSF > 0). The password is verified
 *             by the directory (bind as the user's DN) on a directory
 *             worker thread; empty passwords and NUL bytes are refused
 *             before any bind.
 *   EXTERNAL  only with a verified TLS client certificate: its identity
 *             (e.g. CN "alice") is mapped to a directory user (CORP\alice).
 *   GSSAPI    not yet: the list of mechanisms is configuration, see
 *             docs/AUTH.md for what Kerberos will need.
 *
 * Cyrus is configured only through callbacks: no /etc/sasl2/<app>.conf is
 * read (config files are refused by the verify-file callback), plugins are
 * loaded only from the system plugin directory and only those that serve a
 * configured mechanism, no auxprop/sasldb/saslauthd fallback verifies a
 * password, and no proxying: the authorization identity must equal the
 * authentication identity.
 *
 * Threading: every Cyrus call that may block (start, step: the password
 * check) runs on a directory worker through az_dir_submit, one job at a
 * time per session, so a sasl_conn_t is only ever used by one thread at a
 * time. Completion callbacks run on the event loop thread. All az_sasl_*
 * functions must be called from the loop thread.
 */
#ifndef AZ_SASL_H
#define AZ_SASL_H

#include <jansson.h>
#include <stddef.h>

struct az_dir;
struct az_entry;
struct az_sasl;
struct az_sasl_sess;

struct az_sasl_config {
	const char *mechanisms; /* "PLAIN EXTERNAL" (space separated) */
	const char *service;    /* "rabroker" (GSSAPI service name) */
	const char *realm;      /* Kerberos realm for GSSAPI; unused by PLAIN
	                           and EXTERNAL (names go to the directory as
	                           typed: DOMAIN\user, user@realm, user) */
	unsigned max_steps;     /* start + steps per exchange; 0 -> 8 */
	const char *plugin_dir; /* NULL: next to libsasl2 (never $SASL_PATH);
	                           process-wide: the first az_sasl_new sets it */
};

/* Payload limits: decoded initial response / response, and base64 text. */
#define AZ_SASL_MAX_PAYLOAD 8192
#define AZ_SASL_MAX_B64 (((AZ_SASL_MAX_PAYLOAD + 2) / 3) * 4)

/* Initializes Cyrus SASL (once per process) and checks that every
 * configured mechanism is known and available. dir may be NULL only for
 * tests that never start an exchange. NULL + err on failure. */
struct az_sasl *az_sasl_new(struct az_dir *dir, const struct az_sasl_config *c,
    char *err, size_t errlen);
/* Frees; sessions still in flight keep what they need until they finish. */
void az_sasl_free(struct az_sasl *s);

/* One authentication context per connection. tls_peer_id: the verified
 * client certificate identity or NULL; tls_ssf: the TLS cipher strength in
 * bits (0 = no TLS); addresses "ip;port" or "ip:port" (for logs), may be
 * NULL. NULL on failure (logged). */
struct az_sasl_sess *az_sasl_sess_new(struct az_sasl *s,
    const char *tls_peer_id, unsigned tls_ssf, const char *local_addr,
    const char *remote_addr);
/* Safe while a step is in flight: the completion is then dropped. */
void az_sasl_sess_free(struct az_sasl_sess *ss);

/* Space-separated mechanisms this session may use ("" if none); free(). */
char *az_sasl_mechanisms(struct az_sasl_sess *ss);
/* The same as a JSON array of strings (hello's "mechanisms"). */
json_t *az_sasl_mechanisms_json(struct az_sasl_sess *ss);

enum az_sasl_status { AZ_SASL_CONTINUE = 1, AZ_SASL_OK, AZ_SASL_FAIL };

/* Runs on the loop thread exactly once per accepted start/step.
 *   CONTINUE  challenge/chlen: the next server challenge (may be empty)
 *   OK        user: the directory entry (owned by the session; valid
 *             until az_sasl_sess_free, az_entry_dup to keep longer)
 *   FAIL      code: RP_ERR_AUTH_FAILED (generic: msg is safe for the
 *             peer), RP_ERR_DIRECTORY_UNAVAILABLE, RP_ERR_INTERNAL. The
 *             log already says why in more detail (never the password).
 * After FAIL a new az_sasl_start may be made on the same session. */
typedef void (*az_sasl_cb)(enum az_sasl_status st, int code,
    const unsigned char *challenge, size_t chlen, const struct az_entry *user,
    const char *msg, void *arg);

/* Both return 0 when the exchange is under way (cb will be called), or an
 * rp_err when refused at once (cb is not called; az_sasl_sess_errmsg says
 * why, in words safe to send to the peer):
 *   RP_ERR_INVALID_PARAMS          unknown / not offered mechanism,
 *                                  payload too large, NUL in EXTERNAL
 *   RP_ERR_WRONG_STATE             step without start, call while one is
 *                                  in flight, already authenticated
 *   RP_ERR_AUTH_FAILED             too many steps (the exchange is over)
 *   RP_ERR_DIRECTORY_UNAVAILABLE   no directory / worker queue full
 * has_initial = 0: no initial response; 1 with len 0: an empty one. */
int az_sasl_start(struct az_sasl_sess *ss, const char *mech,
    const unsigned char *initial, size_t len, int has_initial, az_sasl_cb cb,
    void *arg);
int az_sasl_step(struct az_sasl_sess *ss, const unsigned char *resp, size_t len,
    az_sasl_cb cb, void *arg);
const char *az_sasl_sess_errmsg(const struct az_sasl_sess *ss);
/* The authenticated user, or NULL before OK. */
const struct az_entry *az_sasl_sess_user(const struct az_sasl_sess *ss);

/*
 * JSON helpers for the broker's auth.start / auth.step handlers. Return 0,
 * or RP_ERR_INVALID_PARAMS with a message saying what is wrong.
 *   auth.start {"mechanism":"PLAIN","initial":"<base64>"|null|absent}
 *              absent or null = NO initial response; "" = EMPTY one
 *   auth.step  {"response":"<base64>"}
 * *initial / *resp are malloc'ed (NUL-terminated, may hold NULs; free()),
 * NULL when there is no initial response. *mech points into params.
 */
int az_sasl_parse_start(json_t *params, const char **mech,
    unsigned char **initial, size_t *len, int *has_initial, char *err,
    size_t errlen);
int az_sasl_parse_step(json_t *params, unsigned char **resp, size_t *len,
    char *err, size_t errlen);
/* {"status":"continue","challenge":"<b64>"} or
 * {"status":"ok","account":"CORP\\alice","groups":[...]}; NULL for FAIL. */
json_t *az_sasl_result_json(enum az_sasl_status st,
    const unsigned char *challenge, size_t chlen, const struct az_entry *user);

/* Strict RFC 4648 base64 (standard alphabet, '=' padding required, no
 * whitespace, canonical: unused bits must be zero). decode returns 0 and a
 * malloc'ed NUL-terminated buffer, or -1 with a message. */
int az_sasl_b64_decode(const char *in, size_t inlen, unsigned char **out,
    size_t *outlen, char *err, size_t errlen);
char *az_sasl_b64_encode(const unsigned char *in, size_t len);

#endif
