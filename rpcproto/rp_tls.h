/*
 * rp_tls.h - TLS transport on libevent with GnuTLS.
 *
 * GnuTLS never touches the socket: a socket bufferevent moves ciphertext and
 * GnuTLS reads/writes it through memory push/pull functions. The layer above
 * sees plaintext only, through callbacks. One struct rp_tls per connection,
 * kept small: no buffers of its own at rest beyond libevent's (empty)
 * evbuffers and the GnuTLS session.
 *
 * Versions: TLS 1.3 preferred, TLS 1.2 minimum. Clients verify the server
 * against the configured CA and host name. Servers may request or require a
 * client certificate; the verified identity (SAN dNSName, else CN) is
 * available with rp_tls_peer_id() once on_ready has run.
 *
 * Lifetime: after on_close has been called the object is freed by this layer
 * once the callback returns; do not touch it afterwards. rp_tls_close() is
 * graceful (sends close_notify, flushes, then closes and calls on_close).
 */
#ifndef RP_TLS_H
#define RP_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

struct event_base;
struct evbuffer;
struct sockaddr;

enum rp_tls_role { RP_TLS_SERVER = 1, RP_TLS_CLIENT };

enum rp_tls_client_cert {
	RP_TLS_CLIENT_CERT_NONE = 0, /* server: do not ask */
	RP_TLS_CLIENT_CERT_REQUEST,  /* ask; verify if sent; allow none */
	RP_TLS_CLIENT_CERT_REQUIRE, /* ask; refuse handshake without a valid one */
};

struct rp_tls_opts {
	enum rp_tls_role role;
	const char
	    *ca_file; /* PEM bundle: the organisation's CA (trust anchor) */
	const char
	    *cert_file; /* PEM: our certificate chain (server: required) */
	const char *key_file; /* PEM: our private key */
	enum rp_tls_client_cert client_cert;
	unsigned handshake_timeout_ms; /* 0 -> 10000 */
	/* Backpressure: stop reading a peer when this many ciphertext bytes wait
	 * to be sent to it; resume below half. 0 -> 256 KiB. */
	size_t out_high_water;
	/* 1: never stop reading a peer because our output to it is full
	 * (on_drain still reports the drain). For byte splices that do their
	 * own backpressure per direction: stopping both directions at once
	 * deadlocks two such peers that both send more than they read. */
	int stream;
	/* External PSK mode (expert tickets): TLS 1.3 only, no certificates.
	 * When psk_lookup is set, a server accepts PSK identities through it; a
	 * client uses rp_tls_connect_psk(). psk_lookup returns 0 and writes
	 * the key for identity (room for *keylen bytes, 64, on entry; the key
	 * length on return), or -1 if the identity is unknown. */
	int (*psk_lookup)(void *arg, const char *identity, unsigned char *key,
	    size_t *keylen);
	void *psk_arg;
	/* Session resumption (TLS 1.3 session tickets), so that a broker
	 * restarted with many agents does not pay a full handshake with
	 * certificate signatures for each of them.
	 * Server: session_tickets issues tickets encrypted with a key held in
	 * memory, or read from ticket_key_file (ignored without
	 * session_tickets) (PEM-like text, mode 0600;
	 * created with a fresh random key if missing; refused if group or
	 * others may read it), so that tickets survive a restart. A resumed
	 * session carries the client certificate inside the ticket: it is
	 * verified again against the CA and the current time, and gives the
	 * same rp_tls_peer_id(). Resumption is possible for
	 * ticket_lifetime_s (0 -> 3600) after the FULL handshake that
	 * authenticated the client (GnuTLS: a resumed session keeps that
	 * time). GnuTLS derives the key that encrypts tickets from the master
	 * key and changes it every 3 lifetimes: tickets from before such a
	 * change fall back to a full handshake. Not allowed with psk_lookup
	 * (an expert ticket must never be resumable). */
	int session_tickets;
	const char *ticket_key_file;
	unsigned ticket_lifetime_s;
	/* Client: accept session tickets from the server, so that
	 * rp_tls_get_session_data() has something to return. */
	int session_resumption;
};

struct rp_tls_ctx;
struct rp_tls;

/* Why a connection closed; passed to on_close. */
enum rp_tls_close_reason {
	RP_TLS_CLOSED_LOCAL = 0, /* rp_tls_close() finished */
	RP_TLS_CLOSED_PEER,      /* peer sent close_notify or EOF */
	RP_TLS_CLOSED_HANDSHAKE, /* handshake failed (message says why) */
	RP_TLS_CLOSED_TIMEOUT,   /* handshake deadline passed */
	RP_TLS_CLOSED_VERIFY,    /* peer certificate not trusted */
	RP_TLS_CLOSED_ERROR,     /* socket or TLS record error */
};

struct rp_tls_cbs {
	/* Handshake finished and the peer verified. */
	void (*on_ready)(struct rp_tls *t, void *arg);
	/* Plaintext is available in `in`; consume what you can. */
	void (*on_read)(struct rp_tls *t, struct evbuffer *in, void *arg);
	/* Output drained to half the high water or below (after every socket
	 * write that leaves it there; optional). */
	void (*on_drain)(struct rp_tls *t, void *arg);
	/* Connection is gone; `t` is freed when this returns. */
	void (*on_close)(struct rp_tls *t, enum rp_tls_close_reason why,
	    const char *msg, void *arg);
};

/* Short text for a close reason ("handshake timeout"), for logs. */
const char *rp_tls_close_reason_name(enum rp_tls_close_reason why);

/* Loads credentials; on error returns NULL and writes what/where into err.
 * The context must outlive every connection made with it. */
struct rp_tls_ctx *rp_tls_ctx_new(
    const struct rp_tls_opts *o, char *err, size_t errlen);
void rp_tls_ctx_free(struct rp_tls_ctx *ctx);

/* Server side: wraps an accepted socket (made non-blocking, TCP_NODELAY).
 * Returns NULL on failure and the caller still owns fd. Callbacks only ever
 * run from the event loop, never from inside an rp_tls_* call. */
struct rp_tls *rp_tls_accept(struct rp_tls_ctx *ctx, struct event_base *base,
    evutil_socket_t fd, const struct rp_tls_cbs *cbs, void *arg);
/*
 * Handshake pool: server-side handshakes of accepted connections on
 * `nthreads` threads, each with its own event_base, so that the loop that
 * owns `base` pays only for what follows the handshake (a broker taking
 * 100,000 agents back after a restart). A connection given to
 * rp_tls_accept_pool() lives on one pool thread until its handshake ends;
 * then it is handed back to `base` (bufferevent re-made there, ciphertext
 * already read or still to send carried over) and on_ready runs on the
 * loop of `base`, or, if the handshake failed or timed out, it is closed
 * on the pool thread and on_close runs on the loop of `base`. Every
 * callback therefore runs on the thread of `base`, as with
 * rp_tls_accept(). libevent needs no evthread_use_pthreads(): no event or
 * bufferevent is ever used by two threads; hand-offs go through
 * mutex-protected lists and a pipe read by the receiving loop.
 * With nthreads 0 (or a context with psk_lookup, whose lookup is user code
 * that must run on the loop) rp_tls_accept_pool() is rp_tls_accept() on
 * `base`. Threads are started here: create the pool after any fork().
 */
struct rp_tls_pool;
struct rp_tls_pool *rp_tls_pool_new(
    struct event_base *base, unsigned nthreads, char *err, size_t errlen);
/* Stops and joins the threads. Connections still handshaking, or handed
 * back but not yet taken by the loop, are closed without any callback.
 * Call it from the thread of `base`, before freeing `base` or a context
 * the pool's connections use. */
void rp_tls_pool_free(struct rp_tls_pool *pool);
unsigned rp_tls_pool_threads(const struct rp_tls_pool *pool);
/* Server side through the pool: returns 0 (fd now belongs to the pool,
 * every outcome comes to on_ready or on_close, on the loop of the pool's
 * base), or -1 (no callback; the caller still owns fd). The connection is
 * first seen by the caller in on_ready / on_close. */
int rp_tls_accept_pool(struct rp_tls_pool *pool, struct rp_tls_ctx *ctx,
    evutil_socket_t fd, const struct rp_tls_cbs *cbs, void *arg);

/* Client side: connects (non-blocking) and verifies the server as `host`
 * (a DNS name, or an address literal matched against IP SANs). Returns NULL
 * on immediate failure (no callback); later failures come to on_close. */
struct rp_tls *rp_tls_connect(struct rp_tls_ctx *ctx, struct event_base *base,
    const struct sockaddr *sa, int salen, const char *host,
    const struct rp_tls_cbs *cbs, void *arg);
/* Client side with an external PSK (TLS 1.3 only, no certificates). */
struct rp_tls *rp_tls_connect_psk(struct rp_tls_ctx *ctx,
    struct event_base *base, const struct sockaddr *sa, int salen,
    const char *identity, const unsigned char *key, size_t keylen,
    const struct rp_tls_cbs *cbs, void *arg);

/* Client side with extras (rp_tls_connect is this with a NULL `x`). */
struct rp_tls_connect_extra {
	/* Local address to bind before connecting (port 0: the kernel picks
	 * one), e.g. many 127.0.0.x sources for a load generator. NULL: any. */
	const struct sockaddr *src;
	int srclen;
	/* Session data from rp_tls_get_session_data() of an earlier
	 * connection to the same server: offered for resumption. If the
	 * server does not accept it, a full handshake follows. */
	const void *session;
	size_t session_len;
};
struct rp_tls *rp_tls_connect_ex(struct rp_tls_ctx *ctx,
    struct event_base *base, const struct sockaddr *sa, int salen,
    const char *host, const struct rp_tls_connect_extra *x,
    const struct rp_tls_cbs *cbs, void *arg);
/* Client: a malloc'd copy of the session (the server's ticket) for a later
 * rp_tls_connect_ex(); 0, or -1 if none was received yet (in TLS 1.3 the
 * ticket comes after the handshake, with or before the first reply) or the
 * context has no session_resumption. Treat it as a secret. */
int rp_tls_get_session_data(const struct rp_tls *t, void **data, size_t *len);
/* 1 if this connection was resumed from a session ticket (after on_ready),
 * else 0. */
int rp_tls_resumed(const struct rp_tls *t);

/* Same over an already connected stream fd (e.g. one end of a socketpair
 * spliced into a relay connection: TLS inside TLS). On success the
 * connection owns fd; on NULL the caller still does. */
struct rp_tls *rp_tls_connect_psk_fd(struct rp_tls_ctx *ctx,
    struct event_base *base, evutil_socket_t fd, const char *identity,
    const unsigned char *key, size_t keylen, const struct rp_tls_cbs *cbs,
    void *arg);

/* Encrypts and queues plaintext (before on_ready: kept and sent once the
 * handshake is done). Returns 0, or -1 if closing/closed. */
int rp_tls_write(struct rp_tls *t, const void *buf, size_t len);
/* Moves all of `buf` (plaintext) into the connection. */
int rp_tls_write_buffer(struct rp_tls *t, struct evbuffer *buf);
/* Ciphertext bytes queued for the socket. */
size_t rp_tls_out_pending(const struct rp_tls *t);
/* Stops/resumes delivering plaintext (and reading the socket). */
void rp_tls_set_reading(struct rp_tls *t, int on);
/* Replaces callbacks (e.g. when a connection switches to relay mode). */
void rp_tls_set_cbs(struct rp_tls *t, const struct rp_tls_cbs *cbs, void *arg);
/* Verified peer identity (SAN dNSName, else CN); NULL if none. */
const char *rp_tls_peer_id(const struct rp_tls *t);
/*
 * The identity a certificate gives its holder, as rp_tls_peer_id() reports
 * it for a verified peer: the first SAN dNSName, else the subject CN (only
 * the first dNSName is looked at: a first dNSName that is not usable
 * refuses the certificate, there is no falling back to a later one or to
 * the CN; so does a SAN entry of any type, before the first dNSName, that
 * GnuTLS cannot read or that is longer than RP_TLS_ID_MAX + 1). Usable: 1 to RP_TLS_ID_MAX bytes of [A-Za-z0-9._@-], not
 * starting with '.' or '-'. `der` is one DER certificate (len bytes, from
 * the peer: anything); nothing is verified here (chain, validity, purpose
 * are the handshake's business). Returns 0 with the NUL-terminated
 * identity in out (outlen > RP_TLS_ID_MAX always suffices), or -1 with a
 * message in err naming what is wrong ("peer certificate: unusable CN").
 */
#define RP_TLS_ID_MAX 253
int rp_tls_cert_identity(const void *der, size_t len, char *out, size_t outlen,
    char *err, size_t errlen);
/* PSK identity used by the peer (PSK mode), or NULL. */
const char *rp_tls_psk_id(const struct rp_tls *t);
/* "TLS1.3", "TLS1.2"... for logs. */
const char *rp_tls_version(const struct rp_tls *t);
/* Peer address as text ("127.0.0.1:4433"), for logs and the audit trail. */
const char *rp_tls_peer_addr(const struct rp_tls *t);
/* TLS 1.3 KeyUpdate: new traffic keys for our direction and ask the peer
 * to do the same (for long-lived connections). Returns 0, or -1 (not TLS
 * 1.3, not open). */
int rp_tls_key_update(struct rp_tls *t);
/* Graceful close: close_notify, flush, then on_close(RP_TLS_CLOSED_LOCAL). */
void rp_tls_close(struct rp_tls *t);

#endif
