/*
 * rp_tls.c - TLS transport on libevent with GnuTLS.
 *
 * GnuTLS never sees the socket. A socket bufferevent moves ciphertext; our
 * pull function reads it from the bufferevent's input evbuffer (EAGAIN when
 * empty) and our push function appends to its output evbuffer. Everything is
 * driven from the bufferevent callbacks, so the layer above only ever runs
 * from the event loop.
 *
 * Lifetime. Every entry from libevent (read, write, event, timer) holds a
 * "busy" count on the object. Closing tears down the bufferevent (after which
 * libevent runs no callback for us: bufferevent_free clears them) and calls
 * on_close exactly once; the memory itself is released only when the
 * outermost entry returns, so no stack frame of ours ever touches freed
 * memory. Errors found inside a call made by the user (rp_tls_write...) are
 * never reported synchronously: they are turned into a deferred bufferevent
 * event so on_close runs from the loop, not from under the caller's feet.
 *
 * Verification. A client verifies the server during the handshake
 * (gnutls_session_set_verify_cert: chain, validity, host name). A server
 * checks a client certificate right after the handshake (chain, validity,
 * usable name) and refuses with a bad_certificate alert; it sends no list of
 * CA names, so a client offers the one certificate it has and a foreign one
 * is refused by us with a reason, not silently withheld by the client.
 *
 * Backpressure. When more than high_water ciphertext bytes wait for the
 * socket we stop reading it and stop delivering plaintext. The write
 * low-water mark is half that, so the write callback (on_drain, and resuming)
 * comes as soon as the queue is back at or below half.
 *
 * Memory. At rest a connection holds this struct, the bufferevent (whose
 * evbuffers are empty and hold no chains), an empty plaintext evbuffer, the
 * peer address string and the GnuTLS session. Nothing else is allocated
 * between reads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "rp_log.h"
#include "rp_tls.h"

/* Certificates: X25519 first (cheaper than P-256 ECDHE in nettle) and
 * AES-128-GCM first (its SHA-256 key schedule uses the CPU's SHA
 * instructions; SHA-384 has none): a broker taking 100,000 agents back
 * after a restart spends most of each resumed handshake here. GnuTLS
 * clients send an X25519 key share with their first one, so no extra
 * round trip. */
#define TLS_PRIO_CERT                                                          \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-GROUP-ALL:+GROUP-X25519:" \
	"+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1:-CIPHER-ALL:"      \
	"+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:%SERVER_PRECEDENCE"
#define TLS_PRIO_SRV_PSK                                                  \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+ECDHE-PSK:+DHE-PSK:" \
	"%SERVER_PRECEDENCE"
/* External PSK (expert tickets): TLS 1.3 only, no certificates at all.
 * Never plain PSK (psk_ke): the ticket's secret stays in the broker's
 * store until the ticket ends, so a session keyed by it alone could be
 * decrypted later by whoever reads the store; (EC)DHE keeps forward
 * secrecy (test_tls psk_requires_ecdhe). */
#define TLS_PRIO_PSK_ONLY \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK:+DHE-PSK"
#define TLS_HS_TIMEOUT_MS 10000u
#define TLS_HIGH_WATER (256u * 1024u)
#define TLS_CLOSE_FLUSH_S 5 /* give up flushing a closing peer after this */
#define TLS_NAME_MAX RP_TLS_ID_MAX
#define TLS_PSK_ID_MAX 255
#define TLS_PSK_KEY_MAX 64
#define TLS_TICKET_LIFETIME_S 3600u
#define TLS_TICKET_KEY_PEM "RABROKER SESSION TICKET KEY"

struct rp_tls_ctx {
	enum rp_tls_role role;
	enum rp_tls_client_cert client_cert;
	unsigned hs_timeout_ms;
	size_t high_water;
	int no_self_pause;                     /* rp_tls_opts.stream */
	gnutls_certificate_credentials_t cert; /* NULL: PSK-only server */
	gnutls_psk_server_credentials_t psk_srv;
	gnutls_priority_t prio;     /* certificates (and PSK on a server) */
	gnutls_priority_t prio_psk; /* client PSK connections */
	int (*psk_lookup)(void *, const char *, unsigned char *, size_t *);
	void *psk_arg;
	gnutls_datum_t ticket_key; /* server: session ticket master key */
	unsigned ticket_lifetime_s;
	int resumption; /* client: accept session tickets */
};

enum tls_state {
	ST_HANDSHAKE = 0,
	ST_OPEN,
	ST_CLOSING, /* flushing close_notify or an alert, then done */
	ST_DONE,    /* on_close has run; freed when not busy */
};

struct rp_tls {
	struct rp_tls_ctx *ctx;
	struct bufferevent *bev;
	gnutls_session_t s;
	struct evbuffer *in;    /* decrypted, not yet consumed by on_read */
	struct evbuffer *early; /* plaintext written before the handshake */
	struct event *hs_timer; /* only during the handshake */
	gnutls_psk_client_credentials_t psk_cli;
	struct tls_pend *pend; /* only while a pool thread owns it */
	struct rp_tls_cbs cbs;
	void *arg;
	char *peer_addr;
	char *peer_id;
	char *psk_id;
	char *close_msg; /* reason kept while flushing before close */
	unsigned busy;
	uint8_t state;
	uint8_t close_why;    /* enum rp_tls_close_reason when ST_CLOSING */
	uint8_t user_reading; /* rp_tls_set_reading() */
	uint8_t paused;       /* output above high water */
	uint8_t eof;          /* peer sent FIN */
	uint8_t deferred;     /* close requested from user context */
};

struct tls_pend;
static void tls_pool_handback(struct rp_tls *);
static void tls_read_cb(struct bufferevent *, void *);
static void tls_write_cb(struct bufferevent *, void *);
static void tls_event_cb(struct bufferevent *, short, void *);

/* ---- credentials ---------------------------------------------------- */

static int
psk_server_cb(
    gnutls_session_t s, const gnutls_datum_t *user, gnutls_datum_t *key)
{
	struct rp_tls *t = gnutls_session_get_ptr(s);
	char id[TLS_PSK_ID_MAX + 1];
	unsigned char k[TLS_PSK_KEY_MAX];
	size_t klen = sizeof(k);
	int r;

	if (t == NULL || t->ctx->psk_lookup == NULL || user->size == 0 ||
	    user->size > TLS_PSK_ID_MAX ||
	    memchr(user->data, '\0', user->size) != NULL)
		return -1;
	memcpy(id, user->data, user->size);
	id[user->size] = '\0';
	r = t->ctx->psk_lookup(t->ctx->psk_arg, id, k, &klen);
	if (r != 0 || klen == 0 || klen > sizeof(k)) {
		gnutls_memset(k, 0, sizeof(k));
		return -1;
	}
	key->data = gnutls_malloc(klen);
	if (key->data == NULL) {
		gnutls_memset(k, 0, sizeof(k));
		return -1;
	}
	memcpy(key->data, k, klen);
	key->size = (unsigned)klen;
	gnutls_memset(k, 0, sizeof(k));
	return 0;
}

/*
 * The session ticket master key. GnuTLS derives the key that encrypts
 * tickets from it and changes that derived key every ticket lifetime, so
 * the file itself is the long-term secret: whoever reads it can decrypt
 * tickets (and the client certificates inside them) and mint resumptions.
 * Kept in a file, tickets survive a restart (and brokers sharing the file
 * accept each other's tickets). Missing: made with a fresh key, mode 0600.
 */
static int
tls_ticket_key(
    struct rp_tls_ctx *ctx, const char *file, char *err, size_t errlen)
{
	gnutls_datum_t raw = {NULL, 0}, pem = {NULL, 0};
	struct stat st;
	char buf[1024];
	ssize_t n;
	int fd, r;

	if (file == NULL) {
		if ((r = gnutls_session_ticket_key_generate(&ctx->ticket_key)) <
		    0) {
			snprintf(err, errlen, "tls: session ticket key: %s",
			    gnutls_strerror(r));
			return -1;
		}
		return 0;
	}
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT) {
		if ((r = gnutls_session_ticket_key_generate(&raw)) < 0 ||
		    (r = gnutls_pem_base64_encode2(
		         TLS_TICKET_KEY_PEM, &raw, &pem)) < 0) {
			snprintf(err, errlen, "tls: session ticket key: %s",
			    gnutls_strerror(r));
			goto fail;
		}
		fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 ||
		    write(fd, pem.data, pem.size) != (ssize_t)pem.size ||
		    fsync(fd) != 0) {
			snprintf(err, errlen, "tls: ticket key file %s: %s",
			    file, strerror(errno));
			if (fd >= 0) {
				close(fd);
				unlink(file);
			}
			goto fail;
		}
		close(fd);
		gnutls_free(pem.data);
		ctx->ticket_key = raw;
		log_info("made a new session ticket key in %s", file);
		return 0;
	}
	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(err, errlen, "tls: ticket key file %s: %s", file,
		    strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IRWXG | S_IRWXO))) {
		snprintf(err, errlen,
		    "tls: ticket key file %s is %s (mode %04o); chmod 600 it",
		    file,
		    S_ISREG(st.st_mode) ? "readable by group or others"
		                        : "not a regular file",
		    (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0) {
		snprintf(err, errlen, "tls: ticket key file %s: %s", file,
		    n < 0 ? strerror(errno) : "empty");
		return -1;
	}
	buf[n] = '\0';
	pem.data = (unsigned char *)buf;
	pem.size = (unsigned)n;
	r = gnutls_pem_base64_decode2(TLS_TICKET_KEY_PEM, &pem, &raw);
	pem.data = NULL;
	gnutls_memset(buf, 0, sizeof(buf));
	if (r < 0 || raw.size != 64) {
		snprintf(err, errlen,
		    "tls: ticket key file %s: not a session ticket key "
		    "(delete it to have a new one made)",
		    file);
		goto fail;
	}
	ctx->ticket_key = raw;
	return 0;
fail:
	if (raw.data != NULL) {
		gnutls_memset(raw.data, 0, raw.size);
		gnutls_free(raw.data);
	}
	gnutls_free(pem.data);
	return -1;
}

struct rp_tls_ctx *
rp_tls_ctx_new(const struct rp_tls_opts *o, char *err, size_t errlen)
{
	struct rp_tls_ctx *ctx;
	const char *epos = NULL;
	int r;

	if (errlen > 0)
		err[0] = '\0';
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctx->role = o->role;
	ctx->client_cert = o->client_cert;
	ctx->hs_timeout_ms = o->handshake_timeout_ms ? o->handshake_timeout_ms
	                                             : TLS_HS_TIMEOUT_MS;
	ctx->high_water =
	    o->out_high_water ? o->out_high_water : TLS_HIGH_WATER;
	ctx->no_self_pause = o->stream;
	ctx->psk_lookup = o->psk_lookup;
	ctx->psk_arg = o->psk_arg;

	if (o->role != RP_TLS_SERVER && o->role != RP_TLS_CLIENT) {
		snprintf(err, errlen, "tls: role must be server or client");
		goto fail;
	}
	if (o->role == RP_TLS_SERVER && o->cert_file == NULL &&
	    o->psk_lookup == NULL) {
		snprintf(err, errlen, "tls: a server needs cert_file/key_file");
		goto fail;
	}
	if ((o->cert_file == NULL) != (o->key_file == NULL)) {
		snprintf(
		    err, errlen, "tls: cert_file and key_file go together");
		goto fail;
	}
	if (o->ca_file != NULL || o->cert_file != NULL) {
		if ((r = gnutls_certificate_allocate_credentials(&ctx->cert)) <
		    0) {
			snprintf(err, errlen, "tls: %s", gnutls_strerror(r));
			goto fail;
		}
	}
	if (o->ca_file != NULL) {
		r = gnutls_certificate_set_x509_trust_file(
		    ctx->cert, o->ca_file, GNUTLS_X509_FMT_PEM);
		if (r <= 0) {
			snprintf(err, errlen, "tls: ca_file %s: %s", o->ca_file,
			    r == 0 ? "no certificate found"
			           : gnutls_strerror(r));
			goto fail;
		}
	} else if (o->role == RP_TLS_CLIENT && o->cert_file != NULL) {
		snprintf(err, errlen, "tls: a client needs ca_file");
		goto fail;
	} else if (o->role == RP_TLS_SERVER &&
	    o->client_cert != RP_TLS_CLIENT_CERT_NONE) {
		snprintf(err, errlen,
		    "tls: client certificates need ca_file to verify them");
		goto fail;
	}
	if (o->cert_file != NULL) {
		struct stat st;

		/* A private key others can read is no longer private: refused
		 * (raagent's machine key, raoffer's helper key; the broker
		 * also checks its own key's owner). */
		if (stat(o->key_file, &st) == 0 &&
		    (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
			snprintf(err, errlen,
			    "tls: key_file %s: group or others may access this "
			    "private key (mode %04o); refused: chmod 600 %s",
			    o->key_file, (unsigned)(st.st_mode & 07777),
			    o->key_file);
			goto fail;
		}
		r = gnutls_certificate_set_x509_key_file(
		    ctx->cert, o->cert_file, o->key_file, GNUTLS_X509_FMT_PEM);
		if (r < 0) {
			snprintf(err, errlen,
			    "tls: cert_file %s / key_file %s: %s", o->cert_file,
			    o->key_file, gnutls_strerror(r));
			goto fail;
		}
	}
	if (o->role == RP_TLS_SERVER && o->psk_lookup != NULL) {
		if ((r = gnutls_psk_allocate_server_credentials(
		         &ctx->psk_srv)) < 0) {
			snprintf(err, errlen, "tls: %s", gnutls_strerror(r));
			goto fail;
		}
		gnutls_psk_set_server_credentials_function2(
		    ctx->psk_srv, psk_server_cb);
	}
	r = gnutls_priority_init(&ctx->prio,
	    ctx->psk_srv == NULL    ? TLS_PRIO_CERT
	        : ctx->cert == NULL ? TLS_PRIO_PSK_ONLY
	                            : TLS_PRIO_SRV_PSK,
	    &epos);
	if (r < 0) {
		snprintf(err, errlen, "tls: priorities at '%s': %s",
		    epos ? epos : "?", gnutls_strerror(r));
		goto fail;
	}
	if (o->role == RP_TLS_SERVER && o->session_tickets) {
		if (o->psk_lookup != NULL) {
			snprintf(err, errlen,
			    "tls: session tickets cannot be combined with "
			    "external PSKs (a PSK session must not be "
			    "resumable)");
			goto fail;
		}
		if (tls_ticket_key(ctx, o->ticket_key_file, err, errlen) < 0)
			goto fail;
		ctx->ticket_lifetime_s = o->ticket_lifetime_s
		    ? o->ticket_lifetime_s
		    : TLS_TICKET_LIFETIME_S;
	}
	ctx->resumption = o->role == RP_TLS_CLIENT && o->session_resumption;
	if (o->role == RP_TLS_CLIENT) {
		r = gnutls_priority_init(
		    &ctx->prio_psk, TLS_PRIO_PSK_ONLY, &epos);
		if (r < 0) {
			snprintf(err, errlen, "tls: PSK priorities at '%s': %s",
			    epos ? epos : "?", gnutls_strerror(r));
			goto fail;
		}
	}
	return ctx;
fail:
	rp_tls_ctx_free(ctx);
	return NULL;
}

void
rp_tls_ctx_free(struct rp_tls_ctx *ctx)
{
	if (ctx == NULL)
		return;
	if (ctx->prio != NULL)
		gnutls_priority_deinit(ctx->prio);
	if (ctx->prio_psk != NULL)
		gnutls_priority_deinit(ctx->prio_psk);
	if (ctx->cert != NULL)
		gnutls_certificate_free_credentials(ctx->cert);
	if (ctx->psk_srv != NULL)
		gnutls_psk_free_server_credentials(ctx->psk_srv);
	if (ctx->ticket_key.data != NULL) {
		gnutls_memset(ctx->ticket_key.data, 0, ctx->ticket_key.size);
		gnutls_free(ctx->ticket_key.data);
	}
	free(ctx);
}

/* ---- transport functions for GnuTLS --------------------------------- */

static ssize_t
tls_push(gnutls_transport_ptr_t p, const void *data, size_t len)
{
	struct rp_tls *t = p;

	if (t->bev == NULL ||
	    evbuffer_add(bufferevent_get_output(t->bev), data, len) != 0) {
		gnutls_transport_set_errno(t->s, EIO);
		return -1;
	}
	return (ssize_t)len;
}

static ssize_t
tls_pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
	struct rp_tls *t = p;
	int n;

	if (t->bev == NULL) {
		gnutls_transport_set_errno(t->s, EIO);
		return -1;
	}
	n = evbuffer_remove(bufferevent_get_input(t->bev), data, len);
	if (n <= 0) {
		gnutls_transport_set_errno(t->s, EAGAIN);
		return -1;
	}
	return n;
}

static int
tls_pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
	struct rp_tls *t = p;

	(void)ms; /* never block: the event loop waits for us */
	if (t->bev == NULL)
		return 0;
	return evbuffer_get_length(bufferevent_get_input(t->bev)) > 0;
}

/* ---- teardown ------------------------------------------------------- */

static void
tls_release(struct rp_tls *t)
{
	if (t->s != NULL)
		gnutls_deinit(t->s);
	if (t->psk_cli != NULL)
		gnutls_psk_free_client_credentials(t->psk_cli);
	if (t->in != NULL)
		evbuffer_free(t->in);
	if (t->early != NULL)
		evbuffer_free(t->early);
	free(t->peer_addr);
	free(t->peer_id);
	free(t->psk_id);
	free(t->close_msg);
	free(t);
}

/* Ends the connection now and calls on_close once. */
static void
tls_finish(struct rp_tls *t, enum rp_tls_close_reason why, const char *msg)
{
	char *keep;

	if (t->state == ST_DONE)
		return;
	t->state = ST_DONE;
	if (t->hs_timer != NULL) {
		event_free(t->hs_timer);
		t->hs_timer = NULL;
	}
	if (t->bev != NULL) {
		/* Clears our callbacks; libevent keeps the object alive for
		 * any of its own deferred work and closes the fd. */
		bufferevent_free(t->bev);
		t->bev = NULL;
	}
	keep = t->close_msg; /* msg may point into it */
	t->close_msg = NULL;
	if (t->pend != NULL) {
		/* On a pool thread: on_close runs on the owner's loop. */
		t->close_why = (uint8_t)why;
		t->close_msg = msg ? strdup(msg) : NULL;
	} else if (t->cbs.on_close != NULL) {
		t->busy++;
		t->cbs.on_close(t, why, msg, t->arg);
		t->busy--;
	}
	free(keep);
}

static void
tls_leave(struct rp_tls *t)
{
	if (--t->busy > 0)
		return;
	if (t->pend != NULL) {
		/* Pool thread: handshake over (done, or failed and closed)? */
		if (t->state == ST_OPEN || t->state == ST_DONE)
			tls_pool_handback(t);
	} else if (t->state == ST_DONE)
		tls_release(t);
}

/* Sends what is queued (an alert, close_notify), then finishes. */
static void
tls_flush_then_finish(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg)
{
	struct timeval tv = {TLS_CLOSE_FLUSH_S, 0};

	if (t->state >= ST_CLOSING)
		return;
	if (t->hs_timer != NULL) {
		event_free(t->hs_timer);
		t->hs_timer = NULL;
	}
	t->state = ST_CLOSING;
	t->close_why = (uint8_t)why;
	free(t->close_msg);
	t->close_msg = msg ? strdup(msg) : NULL;
	bufferevent_disable(t->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(t->bev)) == 0) {
		/* Nothing to flush: finish from the loop (we may be inside a
		 * user call). */
		t->deferred = 1;
		bufferevent_trigger_event(
		    t->bev, BEV_EVENT_ERROR, BEV_TRIG_DEFER_CALLBACKS);
		return;
	}
	bufferevent_setwatermark(t->bev, EV_WRITE, 0, 0);
	bufferevent_set_timeouts(t->bev, NULL, &tv);
	bufferevent_enable(t->bev, EV_WRITE);
}

/* An error noticed inside a user call: close from the loop instead. */
static void
tls_fail_deferred(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg)
{
	if (t->state >= ST_CLOSING)
		return;
	if (t->hs_timer != NULL) {
		event_free(t->hs_timer);
		t->hs_timer = NULL;
	}
	t->state = ST_CLOSING;
	t->close_why = (uint8_t)why;
	free(t->close_msg);
	t->close_msg = msg ? strdup(msg) : NULL;
	t->deferred = 1;
	bufferevent_disable(t->bev, EV_READ | EV_WRITE);
	bufferevent_trigger_event(
	    t->bev, BEV_EVENT_ERROR, BEV_TRIG_DEFER_CALLBACKS);
}

/* ---- reading policy ------------------------------------------------- */

static int
tls_want_read(const struct rp_tls *t)
{
	if (t->state == ST_HANDSHAKE)
		return 1;
	return t->state == ST_OPEN && t->user_reading && !t->paused;
}

static void
tls_update_reading(struct rp_tls *t)
{
	if (t->bev == NULL || t->state >= ST_CLOSING)
		return;
	if (tls_want_read(t) && !t->eof)
		bufferevent_enable(t->bev, EV_READ);
	else
		bufferevent_disable(t->bev, EV_READ);
}

/* Enters backpressure when the ciphertext queue passes the high water. */
static void
tls_check_high(struct rp_tls *t)
{
	size_t hw = t->ctx->high_water;

	if (t->paused || t->bev == NULL || t->state != ST_OPEN ||
	    t->ctx->no_self_pause)
		return;
	if (evbuffer_get_length(bufferevent_get_output(t->bev)) <= hw)
		return;
	t->paused = 1;
	tls_update_reading(t);
}

/* ---- names ---------------------------------------------------------- */

/* A usable identity: a host name or a simple account name. */
static int
tls_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > TLS_NAME_MAX || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		        (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		        c == '_' || c == '@'))
			return 0;
	}
	return 1;
}

/* The certificate's bytes come from the peer: everything GnuTLS reports
 * is a refusal with a message, and only a name that passes tls_name_ok()
 * comes out. */
int
rp_tls_cert_identity(const void *der, size_t len, char *out, size_t outlen,
    char *err, size_t errlen)
{
	gnutls_x509_crt_t crt;
	gnutls_datum_t d;
	char buf[TLS_NAME_MAX + 2];
	size_t sz;
	unsigned type;
	int r, found = 0;

	if (der == NULL || len == 0 || len > UINT32_MAX) {
		snprintf(err, errlen, "peer certificate: %s",
		    len == 0 ? "empty" : "too large");
		return -1;
	}
	if (gnutls_x509_crt_init(&crt) < 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	d.data = (unsigned char *)(uintptr_t)der;
	d.size = (unsigned)len;
	if ((r = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER)) < 0) {
		snprintf(
		    err, errlen, "peer certificate: %s", gnutls_strerror(r));
		gnutls_x509_crt_deinit(crt);
		return -1;
	}
	for (unsigned i = 0; i < 64 && !found; i++) {
		sz = sizeof(buf);
		r = gnutls_x509_crt_get_subject_alt_name(
		    crt, i, buf, &sz, NULL);
		if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
			break;
		type = (unsigned)r;
		if (r == GNUTLS_E_SHORT_MEMORY_BUFFER) {
			snprintf(err, errlen,
			    "peer certificate: subject alt name too long");
			goto bad;
		}
		if (r < 0) {
			snprintf(err, errlen,
			    "peer certificate: subject alt name: %s",
			    gnutls_strerror(r));
			goto bad;
		}
		if (type != GNUTLS_SAN_DNSNAME)
			continue;
		if (!tls_name_ok(buf, sz)) {
			snprintf(
			    err, errlen, "peer certificate: unusable dNSName");
			goto bad;
		}
		found = 1;
	}
	if (!found) {
		sz = sizeof(buf);
		r = gnutls_x509_crt_get_dn_by_oid(
		    crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &sz);
		if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
			snprintf(err, errlen,
			    "peer certificate has neither dNSName nor CN");
			goto bad;
		}
		if (r < 0) {
			snprintf(err, errlen, "peer certificate CN: %s",
			    r == GNUTLS_E_SHORT_MEMORY_BUFFER
			        ? "too long"
			        : gnutls_strerror(r));
			goto bad;
		}
		if (!tls_name_ok(buf, sz)) {
			snprintf(err, errlen, "peer certificate: unusable CN");
			goto bad;
		}
	}
	gnutls_x509_crt_deinit(crt);
	if (sz >= outlen) {
		snprintf(err, errlen,
		    "peer certificate: identity longer than "
		    "%zu bytes",
		    outlen > 0 ? outlen - 1 : 0);
		return -1;
	}
	memcpy(out, buf, sz);
	out[sz] = '\0';
	return 0;
bad:
	gnutls_x509_crt_deinit(crt);
	return -1;
}

/* Sets t->peer_id from the peer's leaf certificate (rp_tls_cert_identity).
 * Returns 0, or -1 with a message. */
static int
tls_peer_name(struct rp_tls *t, char *err, size_t errlen)
{
	const gnutls_datum_t *certs;
	unsigned ncerts = 0;
	char id[RP_TLS_ID_MAX + 1];

	certs = gnutls_certificate_get_peers(t->s, &ncerts);
	if (certs == NULL || ncerts == 0) {
		snprintf(err, errlen, "no peer certificate");
		return -1;
	}
	if (rp_tls_cert_identity(
	        certs[0].data, certs[0].size, id, sizeof(id), err, errlen) != 0)
		return -1;
	free(t->peer_id);
	t->peer_id = strdup(id);
	if (t->peer_id == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* Validity period of crt at `now`; 0 or -1 with a message. */
static int
tls_crt_current(gnutls_x509_crt_t crt, time_t now, const char *what, char *err,
    size_t errlen)
{
	time_t nb = gnutls_x509_crt_get_activation_time(crt);
	time_t na = gnutls_x509_crt_get_expiration_time(crt);

	if (nb == (time_t)-1 || na == (time_t)-1 || now < nb || now > na) {
		snprintf(err, errlen, "%s: %s", what,
		    now > na ? "the certificate has expired"
		             : "the certificate is not yet valid");
		return -1;
	}
	return 0;
}

/*
 * A resumed session: the client certificate comes from our own ticket
 * (authenticated with our ticket key), so it passed the full verification
 * (chain signatures, key purpose, names) when the ticket was issued, at
 * most ticket_lifetime ago. What can have changed since is time and our
 * trust: the certificates of the chain must still be within their validity
 * and the chain must still end at a CA of the current trust list. That is
 * checked here without signature operations (an ECDSA verification costs
 * more than the rest of a resumed handshake: this is what makes a mass
 * reconnection cheap). Revocation: rp_tls has no CRLs; a certificate the
 * CA revokes gets in by resumption at most until its tickets expire.
 */
static int
tls_recheck_resumed(struct rp_tls *t, char *err, size_t errlen)
{
	const gnutls_datum_t *certs;
	unsigned n = 0;
	gnutls_x509_trust_list_t tl = NULL;
	gnutls_x509_crt_t chain[8], issuer = NULL;
	time_t now = time(NULL);
	unsigned i, k = 0;
	int rc = -1;

	certs = gnutls_certificate_get_peers(t->s, &n);
	if (n > 8)
		n = 8;
	for (k = 0; k < n; k++) {
		if (gnutls_x509_crt_init(&chain[k]) < 0)
			break;
		if (gnutls_x509_crt_import(
		        chain[k], &certs[k], GNUTLS_X509_FMT_DER) < 0) {
			gnutls_x509_crt_deinit(chain[k]);
			break;
		}
	}
	if (k == 0 || k < n) {
		snprintf(err, errlen,
		    "client certificate from the session "
		    "ticket unreadable");
		goto out;
	}
	gnutls_certificate_get_trust_list(t->ctx->cert, &tl);
	for (i = 0; i < k; i++) {
		if (tls_crt_current(
		        chain[i], now, "client certificate", err, errlen) < 0)
			goto out;
		if (tl != NULL &&
		    gnutls_x509_trust_list_get_issuer(
		        tl, chain[i], &issuer, 0) == 0) {
			if (tls_crt_current(
			        issuer, now, "client CA", err, errlen) < 0)
				goto out;
			rc = 0;
			goto out;
		}
		if (i + 1 >= k ||
		    !gnutls_x509_crt_check_issuer(chain[i], chain[i + 1]))
			break;
	}
	snprintf(err, errlen,
	    "client certificate: its CA is no longer "
	    "trusted");
out:
	while (k > 0)
		gnutls_x509_crt_deinit(chain[--k]);
	if (rc == 0)
		return tls_peer_name(t, err, errlen);
	return rc;
}

/* Server side: checks the client certificate after the handshake. */
static int
tls_verify_client(struct rp_tls *t, char *err, size_t errlen)
{
	unsigned status = 0, n = 0;
	gnutls_datum_t out;
	int r;

	if (t->ctx->client_cert == RP_TLS_CLIENT_CERT_NONE || t->psk_id != NULL)
		return 0;
	if (gnutls_certificate_get_peers(t->s, &n) == NULL || n == 0) {
		if (t->ctx->client_cert == RP_TLS_CLIENT_CERT_REQUIRE) {
			snprintf(err, errlen, "client certificate required");
			return -1;
		}
		return 0;
	}
	if (t->ctx->ticket_key.data != NULL && gnutls_session_is_resumed(t->s))
		return tls_recheck_resumed(t, err, errlen);
	/* The certificate must be issued for TLS clients: a server
	 * certificate from the same CA must not pass as a machine or a
	 * helper identity. */
	gnutls_typed_vdata_st purpose = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
	    .data = (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT};
	r = gnutls_certificate_verify_peers(t->s, &purpose, 1, &status);
	if (r < 0) {
		snprintf(
		    err, errlen, "client certificate: %s", gnutls_strerror(r));
		return -1;
	}
	if (status != 0) {
		if (gnutls_certificate_verification_status_print(
		        status, GNUTLS_CRT_X509, &out, 0) == 0) {
			snprintf(err, errlen, "client certificate: %s",
			    (char *)out.data);
			gnutls_free(out.data);
		} else
			snprintf(err, errlen, "client certificate not trusted");
		return -1;
	}
	return tls_peer_name(t, err, errlen);
}

/* ---- handshake and records ------------------------------------------ */

static void
tls_handshake_failed(struct rp_tls *t, int r)
{
	char msg[512];
	enum rp_tls_close_reason why = RP_TLS_CLOSED_HANDSHAKE;
	gnutls_datum_t out;

	if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		why = RP_TLS_CLOSED_VERIFY;
		if (gnutls_certificate_verification_status_print(
		        gnutls_session_get_verify_cert_status(t->s),
		        GNUTLS_CRT_X509, &out, 0) == 0) {
			snprintf(msg, sizeof(msg), "peer certificate: %s",
			    (char *)out.data);
			gnutls_free(out.data);
		} else
			snprintf(
			    msg, sizeof(msg), "peer certificate not trusted");
	} else if (r == GNUTLS_E_NO_CERTIFICATE_FOUND ||
	    r == GNUTLS_E_CERTIFICATE_REQUIRED) {
		why = RP_TLS_CLOSED_VERIFY;
		snprintf(msg, sizeof(msg), "handshake: %s", gnutls_strerror(r));
	} else if (r == GNUTLS_E_FATAL_ALERT_RECEIVED) {
		snprintf(msg, sizeof(msg), "handshake: peer sent alert: %s",
		    gnutls_alert_get_name(gnutls_alert_get(t->s)));
	} else
		snprintf(msg, sizeof(msg), "handshake: %s", gnutls_strerror(r));
	if (r != GNUTLS_E_FATAL_ALERT_RECEIVED)
		gnutls_alert_send_appropriate(t->s, r);
	tls_flush_then_finish(t, why, msg);
}

static int
tls_flush_early(struct rp_tls *t)
{
	struct evbuffer *e = t->early;

	if (e == NULL)
		return 0;
	t->early = NULL;
	rp_tls_write_buffer(t, e);
	evbuffer_free(e);
	return t->state == ST_OPEN ? 0 : -1;
}

/*
 * Server with tickets, TLS 1.3: one NewSessionTicket at the end of the
 * handshake (GnuTLS sends nothing to a client that did not ask for
 * tickets). Note GnuTLS's rule: a ticket is accepted until ticket_lifetime
 * after the *full* handshake that authenticated the session; a resumed
 * session and the tickets it gets keep that original time. A newer ticket
 * on a long connection would therefore not live longer: none is sent.
 */
static void
tls_send_ticket(struct rp_tls *t)
{
	int r;

	if (t->ctx->ticket_key.data == NULL || t->state != ST_OPEN ||
	    t->psk_id != NULL ||
	    gnutls_protocol_get_version(t->s) != GNUTLS_TLS1_3)
		return;
	do
		r = gnutls_session_ticket_send(t->s, 1, 0);
	while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
}

static void
tls_handshake_done(struct rp_tls *t)
{
	char err[512];
	gnutls_datum_t u;

	if (t->hs_timer != NULL) {
		event_free(t->hs_timer);
		t->hs_timer = NULL;
	}
	if (gnutls_auth_get_type(t->s) == GNUTLS_CRD_PSK &&
	    t->ctx->role == RP_TLS_SERVER) {
		if (gnutls_psk_server_get_username2(t->s, &u) == 0 &&
		    u.size > 0)
			t->psk_id = strndup((const char *)u.data, u.size);
		if (t->psk_id == NULL) {
			tls_flush_then_finish(
			    t, RP_TLS_CLOSED_HANDSHAKE, "PSK identity missing");
			return;
		}
		/* A server with certificates too allows TLS 1.2 for them;
		 * external PSKs stay TLS 1.3 only. */
		if (gnutls_protocol_get_version(t->s) != GNUTLS_TLS1_3) {
			gnutls_alert_send(
			    t->s, GNUTLS_AL_FATAL, GNUTLS_A_PROTOCOL_VERSION);
			tls_flush_then_finish(t, RP_TLS_CLOSED_HANDSHAKE,
			    "PSK before TLS 1.3 refused");
			return;
		}
	}
	if (t->ctx->role == RP_TLS_SERVER) {
		if (tls_verify_client(t, err, sizeof(err)) != 0) {
			gnutls_alert_send(
			    t->s, GNUTLS_AL_FATAL, GNUTLS_A_BAD_CERTIFICATE);
			tls_flush_then_finish(t, RP_TLS_CLOSED_VERIFY, err);
			return;
		}
	} else if (t->psk_cli != NULL) {
		/* Only the ticket may authenticate this connection. */
		if (gnutls_auth_get_type(t->s) != GNUTLS_CRD_PSK) {
			tls_flush_then_finish(t, RP_TLS_CLOSED_VERIFY,
			    "server did not use the PSK");
			return;
		}
	} else {
		/* Chain and host name were verified during the handshake. */
		if (tls_peer_name(t, err, sizeof(err)) != 0) {
			gnutls_alert_send(
			    t->s, GNUTLS_AL_FATAL, GNUTLS_A_BAD_CERTIFICATE);
			tls_flush_then_finish(t, RP_TLS_CLOSED_VERIFY, err);
			return;
		}
	}
	t->state = ST_OPEN;
	if (t->pend != NULL) {
		/* Pool thread: the ticket is cheap to send from here; the
		 * rest (reading, on_ready) happens on the owner's loop once
		 * the busy count drops (tls_leave). */
		tls_send_ticket(t);
		return;
	}
	tls_update_reading(t);
	tls_send_ticket(t);
	if (tls_flush_early(t) != 0)
		return;
	if (t->cbs.on_ready != NULL)
		t->cbs.on_ready(t, t->arg);
}

/* Decrypts every complete record waiting in the input and hands the
 * plaintext to on_read, while reading is allowed. */
static void
tls_process(struct rp_tls *t)
{
	struct evbuffer *cin;
	gnutls_packet_t pkt;
	gnutls_datum_t d;
	ssize_t r;
	size_t before;
	char msg[256];
	int got_bye = 0;

	if (t->state == ST_HANDSHAKE) {
		int hr;
		for (int i = 0; i < 64; i++) {
			hr = gnutls_handshake(t->s);
			if (hr == 0 || gnutls_error_is_fatal(hr) ||
			    hr == GNUTLS_E_AGAIN)
				break;
		}
		if (hr == GNUTLS_E_AGAIN || hr == GNUTLS_E_INTERRUPTED ||
		    (hr < 0 && !gnutls_error_is_fatal(hr)))
			return;
		if (hr < 0) {
			tls_handshake_failed(t, hr);
			return;
		}
		tls_handshake_done(t);
		if (t->pend != NULL)
			return; /* records are read on the owner's loop */
	}
	while (t->state == ST_OPEN && t->user_reading && !t->paused) {
		cin = bufferevent_get_input(t->bev);
		before = evbuffer_get_length(cin);
		if (before == 0 && gnutls_record_check_pending(t->s) == 0)
			break;
		r = gnutls_record_recv_packet(t->s, &pkt);
		if (r > 0) {
			gnutls_packet_get(pkt, &d, NULL);
			if (evbuffer_add(t->in, d.data, d.size) != 0) {
				gnutls_packet_deinit(pkt);
				tls_finish(
				    t, RP_TLS_CLOSED_ERROR, "out of memory");
				return;
			}
			gnutls_packet_deinit(pkt);
			continue;
		}
		if (r == 0) { /* close_notify: deliver what came before */
			got_bye = 1;
			break;
		}
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED ||
		    !gnutls_error_is_fatal((int)r)) {
			/* A partial record, a post-handshake message
			 * (NewSessionTicket, KeyUpdate), a warning alert, a
			 * renegotiation request (refused): go on while the
			 * input shrinks, so the loop always ends. */
			if (r == GNUTLS_E_REHANDSHAKE)
				gnutls_alert_send(t->s, GNUTLS_AL_WARNING,
				    GNUTLS_A_NO_RENEGOTIATION);
			if (evbuffer_get_length(cin) < before)
				continue;
			break;
		}
		if (r == GNUTLS_E_FATAL_ALERT_RECEIVED)
			snprintf(msg, sizeof(msg), "peer sent alert: %s",
			    gnutls_alert_get_name(gnutls_alert_get(t->s)));
		else
			snprintf(msg, sizeof(msg), "record: %s",
			    gnutls_strerror((int)r));
		tls_finish(t, RP_TLS_CLOSED_ERROR, msg);
		return;
	}
	if (t->state == ST_OPEN && t->user_reading && !t->paused &&
	    evbuffer_get_length(t->in) > 0 && t->cbs.on_read != NULL)
		t->cbs.on_read(t, t->in, t->arg);
	if (t->state == ST_OPEN && got_bye)
		tls_finish(t, RP_TLS_CLOSED_PEER, "peer closed");
	else if (t->state == ST_OPEN && t->eof && t->user_reading &&
	    !t->paused &&
	    evbuffer_get_length(bufferevent_get_input(t->bev)) == 0)
		tls_finish(t, RP_TLS_CLOSED_PEER, "peer closed the connection");
}

/* ---- libevent callbacks --------------------------------------------- */

static void
tls_read_cb(struct bufferevent *bev, void *arg)
{
	struct rp_tls *t = arg;

	t->busy++;
	if (t->state <= ST_OPEN)
		tls_process(t);
	tls_leave(t);
}

static void
tls_write_cb(struct bufferevent *bev, void *arg)
{
	struct rp_tls *t = arg;
	size_t left = evbuffer_get_length(bufferevent_get_output(bev));
	int resumed = 0;

	t->busy++;
	if (t->state == ST_CLOSING && !t->deferred) {
		if (left == 0)
			tls_finish(t, (enum rp_tls_close_reason)t->close_why,
			    t->close_msg);
	} else if (t->state == ST_OPEN) {
		if (t->paused && left <= t->ctx->high_water / 2) {
			t->paused = 0;
			resumed = 1;
			tls_update_reading(t);
		}
		/* The write low-water mark is half the high water, so we get
		 * here whenever the queue is at or below it: the layer above
		 * may keep its own mark (rp_conn does) and waits for this. */
		if (left <= t->ctx->high_water / 2 && t->cbs.on_drain != NULL)
			t->cbs.on_drain(t, t->arg);
		/* Records may wait in the input, unseen while paused. */
		if (resumed && t->state == ST_OPEN && tls_want_read(t))
			tls_process(t);
	}
	tls_leave(t);
}

static void
tls_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct rp_tls *t = arg;
	char msg[256];
	int e;

	t->busy++;
	if (t->deferred) {
		tls_finish(
		    t, (enum rp_tls_close_reason)t->close_why, t->close_msg);
	} else if (what & BEV_EVENT_CONNECTED) {
		/* The ClientHello is already queued. */
	} else if (what & BEV_EVENT_TIMEOUT) {
		tls_finish(t, (enum rp_tls_close_reason)t->close_why,
		    "close: peer did not read our close_notify in time");
	} else if (what & BEV_EVENT_EOF) {
		if (t->state == ST_HANDSHAKE)
			tls_finish(t, RP_TLS_CLOSED_HANDSHAKE,
			    "handshake: peer closed the connection");
		else if (t->state == ST_CLOSING)
			tls_finish(t, (enum rp_tls_close_reason)t->close_why,
			    t->close_msg);
		else {
			t->eof = 1;
			/* Deliver what was received before the FIN. */
			if (tls_want_read(t))
				tls_process(t);
			if (t->state == ST_OPEN && tls_want_read(t))
				tls_finish(t, RP_TLS_CLOSED_PEER,
				    "peer closed the connection");
		}
	} else if (what & BEV_EVENT_ERROR) {
		e = EVUTIL_SOCKET_ERROR();
		snprintf(msg, sizeof(msg), "%s: %s",
		    (what & BEV_EVENT_READING)       ? "read"
		        : (what & BEV_EVENT_WRITING) ? "write"
		                                     : "socket",
		    e ? evutil_socket_error_to_string(e) : "error");
		if (t->state == ST_CLOSING)
			tls_finish(t, (enum rp_tls_close_reason)t->close_why,
			    t->close_msg);
		else
			tls_finish(t, RP_TLS_CLOSED_ERROR, msg);
	}
	tls_leave(t);
}

static void
tls_hs_timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct rp_tls *t = arg;
	char msg[96];

	t->busy++;
	snprintf(msg, sizeof(msg), "handshake not finished within %u ms",
	    t->ctx->hs_timeout_ms);
	if (t->state == ST_HANDSHAKE)
		tls_finish(t, RP_TLS_CLOSED_TIMEOUT, msg);
	tls_leave(t);
}

/* ---- construction --------------------------------------------------- */

static char *
tls_addr_text(const struct sockaddr *sa)
{
	char host[INET6_ADDRSTRLEN], out[INET6_ADDRSTRLEN + 10];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		snprintf(out, sizeof(out), "%s:%u", host, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		snprintf(
		    out, sizeof(out), "[%s]:%u", host, ntohs(s6->sin6_port));
	} else
		snprintf(out, sizeof(out), "unknown");
	return strdup(out);
}

static struct rp_tls *
tls_alloc(struct rp_tls_ctx *ctx, const struct rp_tls_cbs *cbs, void *arg)
{
	struct rp_tls *t;

	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->ctx = ctx;
	if (cbs != NULL)
		t->cbs = *cbs;
	t->arg = arg;
	t->user_reading = 1;
	return t;
}

/* Session, bufferevent on `base` and handshake timer (on `base` too: the
 * deadline lives where the handshake runs). On -1 the caller still owns
 * fd and frees t. */
static int
tls_setup(struct rp_tls *t, struct event_base *base, evutil_socket_t fd,
    int psk_client)
{
	struct rp_tls_ctx *ctx = t->ctx;
	unsigned flags;
	struct timeval tv;
	int one = 1;

	evutil_make_socket_nonblocking(fd);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	flags = (ctx->role == RP_TLS_SERVER ? GNUTLS_SERVER : GNUTLS_CLIENT) |
	    GNUTLS_NONBLOCK;
	/* Tickets only where asked for, and never around an external PSK. */
	if (ctx->ticket_key.data == NULL && (!ctx->resumption || psk_client))
		flags |= GNUTLS_NO_TICKETS;
	/* One ticket per handshake (GnuTLS sends two), sent by us. */
	if (ctx->ticket_key.data != NULL)
		flags |= GNUTLS_NO_AUTO_SEND_TICKET;
	if (gnutls_init(&t->s, flags) < 0) {
		t->s = NULL;
		goto fail;
	}
	if (ctx->ticket_key.data != NULL) {
		if (gnutls_session_ticket_enable_server(
		        t->s, &ctx->ticket_key) < 0)
			goto fail;
		gnutls_db_set_cache_expiration(
		    t->s, (int)ctx->ticket_lifetime_s);
	}
	gnutls_session_set_ptr(t->s, t);
	if (gnutls_priority_set(t->s, psk_client ? ctx->prio_psk : ctx->prio) <
	    0)
		goto fail;
	if (!psk_client && ctx->cert != NULL &&
	    gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, ctx->cert) < 0)
		goto fail;
	if (ctx->psk_srv != NULL &&
	    gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, ctx->psk_srv) < 0)
		goto fail;
	if (ctx->role == RP_TLS_SERVER && ctx->cert != NULL) {
		gnutls_certificate_server_set_request(t->s,
		    ctx->client_cert == RP_TLS_CLIENT_CERT_REQUIRE
		        ? GNUTLS_CERT_REQUIRE
		        : ctx->client_cert == RP_TLS_CLIENT_CERT_REQUEST
		        ? GNUTLS_CERT_REQUEST
		        : GNUTLS_CERT_IGNORE);
		/* No CA name list: smaller handshake, and a client sends
		 * the one certificate it has, which we then verify and
		 * refuse by name if it is not ours. */
		gnutls_certificate_send_x509_rdn_sequence(t->s, 1);
	}
	gnutls_transport_set_ptr(t->s, t);
	gnutls_transport_set_push_function(t->s, tls_push);
	gnutls_transport_set_pull_function(t->s, tls_pull);
	gnutls_transport_set_pull_timeout_function(t->s, tls_pull_timeout);
	t->in = evbuffer_new();
	if (t->in == NULL)
		goto fail;
	t->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (t->bev == NULL)
		goto fail;
	bufferevent_setcb(t->bev, tls_read_cb, tls_write_cb, tls_event_cb, t);
	bufferevent_setwatermark(t->bev, EV_WRITE, ctx->high_water / 2, 0);
	t->hs_timer = evtimer_new(base, tls_hs_timeout_cb, t);
	if (t->hs_timer == NULL)
		goto fail;
	tv.tv_sec = ctx->hs_timeout_ms / 1000;
	tv.tv_usec = (ctx->hs_timeout_ms % 1000) * 1000;
	evtimer_add(t->hs_timer, &tv);
	return 0;
fail:
	if (t->hs_timer != NULL)
		event_free(t->hs_timer);
	t->hs_timer = NULL;
	if (t->bev != NULL) {
		bufferevent_setfd(t->bev, -1); /* the caller keeps the fd */
		bufferevent_free(t->bev);
	}
	t->bev = NULL;
	return -1;
}

static struct rp_tls *
tls_new(struct rp_tls_ctx *ctx, struct event_base *base, evutil_socket_t fd,
    const struct rp_tls_cbs *cbs, void *arg, int psk_client)
{
	struct rp_tls *t = tls_alloc(ctx, cbs, arg);

	if (t == NULL)
		return NULL;
	if (tls_setup(t, base, fd, psk_client) != 0) {
		tls_release(t);
		return NULL;
	}
	return t;
}

struct rp_tls *
rp_tls_accept(struct rp_tls_ctx *ctx, struct event_base *base,
    evutil_socket_t fd, const struct rp_tls_cbs *cbs, void *arg)
{
	struct rp_tls *t;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (ctx->role != RP_TLS_SERVER)
		return NULL;
	t = tls_new(ctx, base, fd, cbs, arg, 0);
	if (t == NULL)
		return NULL;
	memset(&ss, 0, sizeof(ss));
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
		t->peer_addr = tls_addr_text((struct sockaddr *)&ss);
	bufferevent_enable(t->bev, EV_READ | EV_WRITE);
	return t;
}

/* ---- handshake pool ------------------------------------------------- */

/*
 * Ownership. A pooled connection is owned by exactly one thread at a time:
 * the accepting loop creates the bare object (no session, no
 * bufferevent) and puts it on a worker's inbox; the worker makes the
 * session, the bufferevent and the deadline timer on its own event_base
 * and runs the handshake; when the handshake ends (tls_leave, outermost
 * entry, busy count 0) the worker either closed it (failure: bufferevent
 * freed, fd closed there) or detaches it: the bufferevent is freed without
 * closing the fd, and the ciphertext it had read but GnuTLS had not (e.g.
 * the agent's first request in the same flight as its Finished) and the
 * ciphertext not yet written (our NewSessionTicket) are moved into two
 * plain evbuffers. Then it goes on the pool's done list and the owner's
 * loop makes a new bufferevent on its base with the same fd and the
 * carried bytes, and runs on_ready (or on_close). GnuTLS keeps any record
 * it had already pulled inside the session, which moves with the object.
 * The two lists are the only shared state (one mutex each); a pipe wakes
 * the receiving loop. The TLS context is only read by the threads (GnuTLS
 * credentials and priority caches are safe for read-only use by many
 * threads; a session's ticket key is copied into the session).
 */
struct tls_pend {
	struct rp_tls *t;
	struct tls_worker *w;
	struct tls_pend *next, *prev; /* inbox / done list / worker's live */
	evutil_socket_t fd;           /* while no bufferevent holds it */
	struct evbuffer *cin, *cout;  /* carried ciphertext (handed back) */
};

struct tls_worker {
	struct rp_tls_pool *pool;
	pthread_t th;
	struct event_base *base;
	struct event *ev;
	int wake[2];
	pthread_mutex_t mu;
	struct tls_pend *inbox, *inbox_tail; /* under mu */
	int stop;                            /* under mu */
	struct tls_pend *live;               /* handshaking; this thread only */
};

struct rp_tls_pool {
	struct event_base *base;
	unsigned n, started, next;
	struct tls_worker *w;
	struct event *ev;
	int wake[2];
	pthread_mutex_t mu;
	struct tls_pend *done, *done_tail; /* under mu */
};

static void
pool_wake(int fd)
{
	char b = 1;
	ssize_t r;

	do
		r = write(fd, &b, 1);
	while (r < 0 && errno == EINTR);
	/* EAGAIN: the pipe is full, the reader will wake anyway. */
}

static void
pool_drain_pipe(int fd)
{
	char buf[64];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* Appends p to a list under mu; wakes the reader if it was empty. */
static void
pool_push(pthread_mutex_t *mu, struct tls_pend **head, struct tls_pend **tail,
    struct tls_pend *p, int wake_fd)
{
	int was_empty;

	p->next = NULL;
	pthread_mutex_lock(mu);
	was_empty = *head == NULL;
	if (*tail != NULL)
		(*tail)->next = p;
	else
		*head = p;
	*tail = p;
	pthread_mutex_unlock(mu);
	if (was_empty)
		pool_wake(wake_fd);
}

/* Frees a pooled connection without any callback (pool shutdown). */
static void
pend_discard(struct tls_pend *p)
{
	struct rp_tls *t = p->t;

	if (t->hs_timer != NULL)
		event_free(t->hs_timer);
	t->hs_timer = NULL;
	if (t->bev != NULL)
		bufferevent_free(t->bev); /* closes the fd */
	t->bev = NULL;
	if (p->fd >= 0)
		evutil_closesocket(p->fd);
	if (p->cin != NULL)
		evbuffer_free(p->cin);
	if (p->cout != NULL)
		evbuffer_free(p->cout);
	t->pend = NULL;
	tls_release(t);
	free(p);
}

static void
live_unlink(struct tls_worker *w, struct tls_pend *p)
{
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		w->live = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	p->next = p->prev = NULL;
}

/* Pool thread, outermost entry: the handshake is over. Detach the
 * connection from this thread's loop and give it back to the owner. */
static void
tls_pool_handback(struct rp_tls *t)
{
	struct tls_pend *p = t->pend;
	struct tls_worker *w = p->w;
	struct rp_tls_pool *pool = w->pool;
	struct bufferevent *bev = t->bev;

	live_unlink(w, p);
	if (t->state != ST_DONE) {
		struct evbuffer *out = bufferevent_get_output(bev);

		bufferevent_disable(bev, EV_READ | EV_WRITE);
		/* The output is frozen at its front for anyone but the
		 * bufferevent; it is being thrown away with it. */
		evbuffer_unfreeze(out, 1);
		if ((p->cin = evbuffer_new()) == NULL ||
		    (p->cout = evbuffer_new()) == NULL ||
		    evbuffer_add_buffer(p->cin, bufferevent_get_input(bev)) !=
		        0 ||
		    evbuffer_add_buffer(p->cout, out) != 0) {
			if (p->cin != NULL)
				evbuffer_free(p->cin);
			if (p->cout != NULL)
				evbuffer_free(p->cout);
			p->cin = p->cout = NULL;
			tls_finish(t, RP_TLS_CLOSED_ERROR, "out of memory");
		} else {
			p->fd = bufferevent_getfd(bev);
			bufferevent_setfd(bev, -1); /* keep the fd open */
			bufferevent_free(bev);
			t->bev = NULL;
		}
	}
	pool_push(&pool->mu, &pool->done, &pool->done_tail, p, pool->wake[1]);
}

/* Owner's loop: a connection whose handshake ended on a pool thread. */
static void
tls_pool_adopt(struct rp_tls_pool *pool, struct tls_pend *p)
{
	struct rp_tls *t = p->t;
	struct evbuffer *in;

	t->pend = NULL;
	if (t->state != ST_DONE) {
		t->bev = bufferevent_socket_new(
		    pool->base, p->fd, BEV_OPT_CLOSE_ON_FREE);
		if (t->bev == NULL) {
			evutil_closesocket(p->fd);
			t->state = ST_DONE;
			t->close_why = RP_TLS_CLOSED_ERROR;
			free(t->close_msg);
			t->close_msg = strdup("out of memory");
		}
		p->fd = -1;
	}
	if (t->state == ST_DONE) {
		/* Failed (or timed out) and closed on the pool thread. */
		t->busy++;
		if (t->cbs.on_close != NULL)
			t->cbs.on_close(t,
			    (enum rp_tls_close_reason)t->close_why,
			    t->close_msg, t->arg);
		p->t = NULL;
		free(p);
		tls_leave(t);
		return;
	}
	bufferevent_setcb(t->bev, tls_read_cb, tls_write_cb, tls_event_cb, t);
	bufferevent_setwatermark(t->bev, EV_WRITE, t->ctx->high_water / 2, 0);
	in = bufferevent_get_input(t->bev);
	evbuffer_unfreeze(in, 0);
	evbuffer_add_buffer(in, p->cin);
	evbuffer_freeze(in, 0);
	evbuffer_add_buffer(bufferevent_get_output(t->bev), p->cout);
	evbuffer_free(p->cin);
	evbuffer_free(p->cout);
	free(p);
	/* As at the end of tls_handshake_done() on the loop. */
	t->busy++;
	bufferevent_enable(t->bev, EV_WRITE);
	tls_update_reading(t);
	if (t->cbs.on_ready != NULL)
		t->cbs.on_ready(t, t->arg);
	/* Records that came with the handshake (or are still inside the
	 * session): delivered now, as they would have been. */
	if (t->state == ST_OPEN && tls_want_read(t))
		tls_process(t);
	tls_leave(t);
}

static void
pool_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct rp_tls_pool *pool = arg;
	struct tls_pend *p, *next;

	pool_drain_pipe(fd);
	pthread_mutex_lock(&pool->mu);
	p = pool->done;
	pool->done = pool->done_tail = NULL;
	pthread_mutex_unlock(&pool->mu);
	for (; p != NULL; p = next) {
		next = p->next;
		tls_pool_adopt(pool, p);
	}
}

/* Pool thread: start the handshakes given to us. */
static void
worker_on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct tls_worker *w = arg;
	struct tls_pend *p, *next;
	struct sockaddr_storage ss;
	socklen_t sl;
	int stop;

	pool_drain_pipe(fd);
	pthread_mutex_lock(&w->mu);
	p = w->inbox;
	w->inbox = w->inbox_tail = NULL;
	stop = w->stop;
	pthread_mutex_unlock(&w->mu);
	for (; p != NULL; p = next) {
		struct rp_tls *t = p->t;

		next = p->next;
		if (stop) {
			pend_discard(p);
			continue;
		}
		p->prev = NULL;
		p->next = w->live;
		if (w->live != NULL)
			w->live->prev = p;
		w->live = p;
		if (tls_setup(t, w->base, p->fd, 0) != 0) {
			evutil_closesocket(p->fd);
			p->fd = -1;
			t->state = ST_DONE;
			t->close_why = RP_TLS_CLOSED_ERROR;
			t->close_msg = strdup("cannot start TLS");
			tls_pool_handback(t);
			continue;
		}
		memset(&ss, 0, sizeof(ss));
		sl = sizeof(ss);
		if (getpeername(p->fd, (struct sockaddr *)&ss, &sl) == 0)
			t->peer_addr = tls_addr_text((struct sockaddr *)&ss);
		p->fd = -1; /* the bufferevent has it */
		bufferevent_enable(t->bev, EV_READ | EV_WRITE);
	}
	if (stop)
		event_base_loopbreak(w->base);
}

static void *
worker_main(void *arg)
{
	struct tls_worker *w = arg;
	struct tls_pend *p;

	event_base_dispatch(w->base);
	/* Stopped: whatever is still here is closed without callbacks. */
	while ((p = w->live) != NULL) {
		live_unlink(w, p);
		pend_discard(p);
	}
	pthread_mutex_lock(&w->mu);
	p = w->inbox;
	w->inbox = w->inbox_tail = NULL;
	pthread_mutex_unlock(&w->mu);
	while (p != NULL) {
		struct tls_pend *next = p->next;
		pend_discard(p);
		p = next;
	}
	event_free(w->ev);
	w->ev = NULL;
	event_base_free(w->base); /* runs libevent's pending finalizers */
	w->base = NULL;
	return NULL;
}

struct rp_tls_pool *
rp_tls_pool_new(
    struct event_base *base, unsigned nthreads, char *err, size_t errlen)
{
	struct rp_tls_pool *pool;
	sigset_t all, old;
	int r;

	if (errlen > 0)
		err[0] = '\0';
	pool = calloc(1, sizeof(*pool));
	if (pool == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pool->base = base;
	pool->wake[0] = pool->wake[1] = -1;
	pthread_mutex_init(&pool->mu, NULL);
	if (nthreads == 0)
		return pool;
	if (pipe2(pool->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
		snprintf(err, errlen, "tls pool: pipe: %s", strerror(errno));
		goto fail;
	}
	pool->ev = event_new(
	    base, pool->wake[0], EV_READ | EV_PERSIST, pool_on_done, pool);
	if (pool->ev == NULL || event_add(pool->ev, NULL) != 0) {
		snprintf(err, errlen, "tls pool: cannot add the wake event");
		goto fail;
	}
	if ((pool->w = calloc(nthreads, sizeof(*pool->w))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	pool->n = nthreads;
	for (unsigned i = 0; i < nthreads; i++) { /* rp_tls_pool_free-able */
		pool->w[i].pool = pool;
		pool->w[i].wake[0] = pool->w[i].wake[1] = -1;
		pthread_mutex_init(&pool->w[i].mu, NULL);
	}
	for (unsigned i = 0; i < nthreads; i++) {
		struct tls_worker *w = &pool->w[i];

		if (pipe2(w->wake, O_NONBLOCK | O_CLOEXEC) != 0 ||
		    (w->base = event_base_new()) == NULL ||
		    (w->ev = event_new(w->base, w->wake[0],
		         EV_READ | EV_PERSIST, worker_on_wake, w)) == NULL ||
		    event_add(w->ev, NULL) != 0) {
			snprintf(err, errlen, "tls pool: cannot set up thread");
			goto fail;
		}
		/* Signals stay with the main thread (libevent's handlers). */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		r = pthread_create(&w->th, NULL, worker_main, w);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (r != 0) {
			snprintf(err, errlen,
			    "tls pool: cannot start thread: %s", strerror(r));
			goto fail;
		}
		pool->started++;
	}
	return pool;
fail:
	rp_tls_pool_free(pool);
	return NULL;
}

void
rp_tls_pool_free(struct rp_tls_pool *pool)
{
	struct tls_pend *p, *next;

	if (pool == NULL)
		return;
	for (unsigned i = 0; i < pool->started; i++) {
		pthread_mutex_lock(&pool->w[i].mu);
		pool->w[i].stop = 1;
		pthread_mutex_unlock(&pool->w[i].mu);
		pool_wake(pool->w[i].wake[1]);
	}
	for (unsigned i = 0; i < pool->started; i++)
		pthread_join(pool->w[i].th, NULL);
	for (unsigned i = 0; i < pool->n; i++) {
		struct tls_worker *w = &pool->w[i];

		if (i >= pool->started) { /* set up, never started */
			if (w->ev != NULL)
				event_free(w->ev);
			if (w->base != NULL)
				event_base_free(w->base);
		}
		if (w->wake[0] >= 0)
			close(w->wake[0]);
		if (w->wake[1] >= 0)
			close(w->wake[1]);
		pthread_mutex_destroy(&w->mu);
	}
	/* Handed back but not adopted yet: no thread is left to race. */
	for (p = pool->done; p != NULL; p = next) {
		next = p->next;
		pend_discard(p);
	}
	if (pool->ev != NULL)
		event_free(pool->ev);
	if (pool->wake[0] >= 0)
		close(pool->wake[0]);
	if (pool->wake[1] >= 0)
		close(pool->wake[1]);
	pthread_mutex_destroy(&pool->mu);
	free(pool->w);
	free(pool);
}

unsigned
rp_tls_pool_threads(const struct rp_tls_pool *pool)
{
	return pool != NULL ? pool->n : 0;
}

int
rp_tls_accept_pool(struct rp_tls_pool *pool, struct rp_tls_ctx *ctx,
    evutil_socket_t fd, const struct rp_tls_cbs *cbs, void *arg)
{
	struct rp_tls *t;
	struct tls_pend *p;
	struct tls_worker *w;

	if (pool == NULL || ctx->role != RP_TLS_SERVER)
		return -1;
	if (pool->n == 0 || ctx->psk_lookup != NULL)
		return rp_tls_accept(ctx, pool->base, fd, cbs, arg) != NULL
		    ? 0
		    : -1;
	if ((t = tls_alloc(ctx, cbs, arg)) == NULL)
		return -1;
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		tls_release(t);
		return -1;
	}
	p->t = t;
	p->fd = fd;
	t->pend = p;
	w = &pool->w[pool->next++ % pool->n];
	p->w = w;
	pool_push(&w->mu, &w->inbox, &w->inbox_tail, p, w->wake[1]);
	return 0;
}

/* sa NULL: fd is an already connected stream (rp_tls_connect_psk_fd). */
static struct rp_tls *
tls_connect(struct rp_tls_ctx *ctx, struct event_base *base,
    const struct sockaddr *sa, int salen, evutil_socket_t given,
    const char *host, const char *identity, const unsigned char *key,
    size_t keylen, const struct rp_tls_connect_extra *x,
    const struct rp_tls_cbs *cbs, void *arg)
{
	struct rp_tls *t;
	evutil_socket_t fd = given;
	int one = 1;
	unsigned char tmp[sizeof(struct in6_addr)];
	gnutls_datum_t k;
	int r;

	if (ctx->role != RP_TLS_CLIENT ||
	    (sa != NULL && sa->sa_family != AF_INET &&
	        sa->sa_family != AF_INET6))
		return NULL;
	if (sa != NULL)
		fd = socket(sa->sa_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	if (sa != NULL && x != NULL && x->src != NULL) {
#ifdef IP_BIND_ADDRESS_NO_PORT
		/* Pick the port at connect time, per destination: many
		 * connections from one source address to different ports. */
		setsockopt(
		    fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#endif
		if (bind(fd, x->src, (socklen_t)x->srclen) != 0) {
			close(fd);
			return NULL;
		}
	}
	(void)one;
	t = tls_new(ctx, base, fd, cbs, arg, identity != NULL);
	if (t == NULL) {
		if (sa != NULL)
			close(fd);
		return NULL;
	}
	t->peer_addr = sa != NULL ? tls_addr_text(sa) : strdup("stream");
	if (identity != NULL) {
		if (strlen(identity) == 0 ||
		    strlen(identity) > TLS_PSK_ID_MAX || keylen == 0 ||
		    keylen > TLS_PSK_KEY_MAX)
			goto fail;
		if (gnutls_psk_allocate_client_credentials(&t->psk_cli) < 0)
			goto fail;
		k.data = (unsigned char *)key;
		k.size = (unsigned)keylen;
		if (gnutls_psk_set_client_credentials(
		        t->psk_cli, identity, &k, GNUTLS_PSK_KEY_RAW) < 0 ||
		    gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, t->psk_cli) <
		        0)
			goto fail;
		if ((t->psk_id = strdup(identity)) == NULL)
			goto fail;
	} else {
		if (host == NULL || ctx->cert == NULL)
			goto fail;
		/* SNI carries names only, never address literals. */
		if (inet_pton(AF_INET, host, tmp) != 1 &&
		    inet_pton(AF_INET6, host, tmp) != 1)
			gnutls_server_name_set(
			    t->s, GNUTLS_NAME_DNS, host, strlen(host));
		gnutls_session_set_verify_cert(t->s, host, 0);
		if (x != NULL && x->session != NULL && x->session_len > 0 &&
		    ctx->resumption)
			(void)gnutls_session_set_data(
			    t->s, x->session, x->session_len);
	}
	/* Connect first (libevent then holds output until connected), then
	 * queue the ClientHello. */
	if (sa != NULL && bufferevent_socket_connect(t->bev, sa, salen) != 0)
		goto fail;
	r = gnutls_handshake(t->s);
	if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED)
		goto fail;
	bufferevent_enable(t->bev, EV_READ | EV_WRITE);
	return t;
fail:
	event_free(t->hs_timer);
	t->hs_timer = NULL;
	if (sa == NULL)
		bufferevent_setfd(t->bev, -1); /* the caller keeps the fd */
	bufferevent_free(t->bev);              /* closes fd */
	t->bev = NULL;
	tls_release(t);
	return NULL;
}

struct rp_tls *
rp_tls_connect(struct rp_tls_ctx *ctx, struct event_base *base,
    const struct sockaddr *sa, int salen, const char *host,
    const struct rp_tls_cbs *cbs, void *arg)
{
	return tls_connect(
	    ctx, base, sa, salen, -1, host, NULL, NULL, 0, NULL, cbs, arg);
}

struct rp_tls *
rp_tls_connect_ex(struct rp_tls_ctx *ctx, struct event_base *base,
    const struct sockaddr *sa, int salen, const char *host,
    const struct rp_tls_connect_extra *x, const struct rp_tls_cbs *cbs,
    void *arg)
{
	if (sa == NULL)
		return NULL;
	return tls_connect(
	    ctx, base, sa, salen, -1, host, NULL, NULL, 0, x, cbs, arg);
}

int
rp_tls_get_session_data(const struct rp_tls *t, void **data, size_t *len)
{
	gnutls_datum_t d = {NULL, 0};

	*data = NULL;
	*len = 0;
	if (t == NULL || t->state != ST_OPEN || t->ctx->role != RP_TLS_CLIENT ||
	    !t->ctx->resumption || t->psk_cli != NULL)
		return -1;
	/* TLS 1.3: nothing until the server's NewSessionTicket arrived
	 * (GnuTLS would hand out a placeholder; never wait for it here). */
	if (gnutls_protocol_get_version(t->s) == GNUTLS_TLS1_3 &&
	    !(gnutls_session_get_flags(t->s) & GNUTLS_SFLAGS_SESSION_TICKET))
		return -1;
	if (gnutls_session_get_data2(t->s, &d) < 0 || d.size <= 4) {
		gnutls_free(d.data);
		return -1;
	}
	if ((*data = malloc(d.size)) == NULL) {
		gnutls_free(d.data);
		return -1;
	}
	memcpy(*data, d.data, d.size);
	*len = d.size;
	gnutls_memset(d.data, 0, d.size);
	gnutls_free(d.data);
	return 0;
}

int
rp_tls_resumed(const struct rp_tls *t)
{
	if (t == NULL || t->state == ST_HANDSHAKE || t->s == NULL)
		return 0;
	return gnutls_session_is_resumed(t->s) != 0;
}

struct rp_tls *
rp_tls_connect_psk(struct rp_tls_ctx *ctx, struct event_base *base,
    const struct sockaddr *sa, int salen, const char *identity,
    const unsigned char *key, size_t keylen, const struct rp_tls_cbs *cbs,
    void *arg)
{
	if (identity == NULL || key == NULL)
		return NULL;
	return tls_connect(ctx, base, sa, salen, -1, NULL, identity, key,
	    keylen, NULL, cbs, arg);
}

struct rp_tls *
rp_tls_connect_psk_fd(struct rp_tls_ctx *ctx, struct event_base *base,
    evutil_socket_t fd, const char *identity, const unsigned char *key,
    size_t keylen, const struct rp_tls_cbs *cbs, void *arg)
{
	if (identity == NULL || key == NULL || fd < 0)
		return NULL;
	return tls_connect(ctx, base, NULL, 0, fd, NULL, identity, key, keylen,
	    NULL, cbs, arg);
}

/* ---- user calls ----------------------------------------------------- */

const char *
rp_tls_close_reason_name(enum rp_tls_close_reason why)
{
	switch (why) {
	case RP_TLS_CLOSED_LOCAL:
		return "closed";
	case RP_TLS_CLOSED_PEER:
		return "peer closed";
	case RP_TLS_CLOSED_HANDSHAKE:
		return "handshake failed";
	case RP_TLS_CLOSED_TIMEOUT:
		return "handshake timeout";
	case RP_TLS_CLOSED_VERIFY:
		return "peer not trusted";
	case RP_TLS_CLOSED_ERROR:
		return "connection error";
	}
	return "unknown";
}

static int
tls_send(struct rp_tls *t, const unsigned char *p, size_t len)
{
	ssize_t r;
	char msg[128];
	unsigned again = 0;

	while (len > 0) {
		r = gnutls_record_send(t->s, p, len);
		if ((r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) &&
		    ++again < 16)
			continue; /* our push never blocks; retry */
		if (r < 0) {
			snprintf(msg, sizeof(msg), "send: %s",
			    gnutls_strerror((int)r));
			tls_fail_deferred(t, RP_TLS_CLOSED_ERROR, msg);
			return -1;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

int
rp_tls_write(struct rp_tls *t, const void *buf, size_t len)
{
	if (t == NULL || t->state > ST_OPEN)
		return -1;
	if (len == 0)
		return 0;
	if (t->state == ST_HANDSHAKE) {
		if (t->early == NULL && (t->early = evbuffer_new()) == NULL)
			return -1;
		return evbuffer_add(t->early, buf, len) == 0 ? 0 : -1;
	}
	if (tls_send(t, buf, len) != 0)
		return -1;
	tls_check_high(t);
	return 0;
}

int
rp_tls_write_buffer(struct rp_tls *t, struct evbuffer *buf)
{
	unsigned char tmp[16384];
	struct evbuffer_iovec v;
	size_t len, n;

	if (t == NULL || t->state > ST_OPEN) {
		evbuffer_drain(buf, evbuffer_get_length(buf));
		return -1;
	}
	if (t->state == ST_HANDSHAKE) {
		if (t->early == NULL && (t->early = evbuffer_new()) == NULL)
			return -1;
		return evbuffer_add_buffer(t->early, buf) == 0 ? 0 : -1;
	}
	while ((len = evbuffer_get_length(buf)) > 0) {
		/* Send straight from the first chain when it is big enough
		 * for a full record, else gather up to one record. */
		evbuffer_peek(buf, -1, NULL, &v, 1);
		if (v.iov_len >= sizeof(tmp) || v.iov_len == len) {
			n = v.iov_len < sizeof(tmp) ? v.iov_len : sizeof(tmp);
			if (tls_send(t, v.iov_base, n) != 0)
				break;
			evbuffer_drain(buf, n);
		} else {
			n = len < sizeof(tmp) ? len : sizeof(tmp);
			evbuffer_remove(buf, tmp, n);
			if (tls_send(t, tmp, n) != 0)
				break;
		}
	}
	if (t->state != ST_OPEN) {
		evbuffer_drain(buf, evbuffer_get_length(buf));
		return -1;
	}
	tls_check_high(t);
	return 0;
}

size_t
rp_tls_out_pending(const struct rp_tls *t)
{
	size_t n = 0;

	if (t == NULL)
		return 0;
	if (t->bev != NULL)
		n += evbuffer_get_length(bufferevent_get_output(t->bev));
	if (t->early != NULL)
		n += evbuffer_get_length(t->early);
	return n;
}

void
rp_tls_set_reading(struct rp_tls *t, int on)
{
	if (t == NULL || t->state > ST_OPEN)
		return;
	on = on ? 1 : 0;
	if (t->user_reading == on)
		return;
	t->user_reading = (uint8_t)on;
	tls_update_reading(t);
	/* Resume from the loop: plaintext or records may already wait. */
	if (on && t->state == ST_OPEN && tls_want_read(t))
		bufferevent_trigger(t->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

void
rp_tls_set_cbs(struct rp_tls *t, const struct rp_tls_cbs *cbs, void *arg)
{
	if (t == NULL)
		return;
	if (cbs != NULL)
		t->cbs = *cbs;
	else
		memset(&t->cbs, 0, sizeof(t->cbs));
	t->arg = arg;
	/* Plaintext that arrived before the new owner: offer it from the
	 * loop. */
	if (t->state == ST_OPEN && evbuffer_get_length(t->in) > 0 &&
	    tls_want_read(t))
		bufferevent_trigger(t->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

const char *
rp_tls_peer_id(const struct rp_tls *t)
{
	return t != NULL ? t->peer_id : NULL;
}

const char *
rp_tls_psk_id(const struct rp_tls *t)
{
	if (t == NULL || t->state == ST_HANDSHAKE)
		return NULL;
	return t->psk_id;
}

const char *
rp_tls_version(const struct rp_tls *t)
{
	const char *v;

	if (t == NULL || t->state == ST_HANDSHAKE)
		return "none";
	v = gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));
	return v != NULL ? v : "unknown";
}

const char *
rp_tls_peer_addr(const struct rp_tls *t)
{
	if (t == NULL || t->peer_addr == NULL)
		return "unknown";
	return t->peer_addr;
}

int
rp_tls_key_update(struct rp_tls *t)
{
	int r;

	if (t == NULL || t->state != ST_OPEN ||
	    gnutls_protocol_get_version(t->s) != GNUTLS_TLS1_3)
		return -1;
	do
		r = gnutls_session_key_update(t->s, GNUTLS_KU_PEER);
	while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
	return r == 0 ? 0 : -1;
}

void
rp_tls_close(struct rp_tls *t)
{
	int r;

	if (t == NULL || t->state >= ST_CLOSING)
		return;
	if (t->state == ST_HANDSHAKE) {
		tls_fail_deferred(
		    t, RP_TLS_CLOSED_LOCAL, "closed during the handshake");
		return;
	}
	if (t->paused) { /* let the close flush below high water too */
		t->paused = 0;
	}
	do
		r = gnutls_bye(t->s, GNUTLS_SHUT_WR);
	while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
	tls_flush_then_finish(t, RP_TLS_CLOSED_LOCAL, "closed");
}
