/*
 * test_tls.c - the TLS transport (rp_tls) in one event loop: a server and a
 * client on loopback with certificates from tests/lib/mkpki.sh.
 */
#include <check.h>
#include <stdint.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "rp_tls.h"
#include "tl_util.h"

static char *pki;
static int want_v6; /* next pair_init listens on ::1 */

struct end {
	struct rp_tls *t;
	int ready, closes, reads, drains;
	enum rp_tls_close_reason why;
	char msg[512];
	char peer_id[256];
	int has_peer_id;
	char version[32];
	char addr[64];
	char psk_id[64];
	struct evbuffer *got;
	/* actions */
	size_t consume_limit; /* 0: consume everything */
};

struct pair {
	struct event_base *base;
	struct rp_tls_ctx *sctx, *cctx;
	struct tl_listener *l;
	uint16_t port;
	int v6;
	struct end s, c;
	int raw_fd; /* accepted fd when the test wants raw access */
};

static void
on_ready(struct rp_tls *t, void *arg)
{
	struct end *e = arg;
	const char *id = rp_tls_peer_id(t);

	e->ready++;
	e->has_peer_id = id != NULL;
	snprintf(e->peer_id, sizeof(e->peer_id), "%s", id ? id : "");
	snprintf(e->version, sizeof(e->version), "%s", rp_tls_version(t));
	snprintf(e->addr, sizeof(e->addr), "%s", rp_tls_peer_addr(t));
	id = rp_tls_psk_id(t);
	snprintf(e->psk_id, sizeof(e->psk_id), "%s", id ? id : "");
}

static void
on_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	struct end *e = arg;

	e->reads++;
	evbuffer_add_buffer(e->got, in);
}

static void
on_drain(struct rp_tls *t, void *arg)
{
	struct end *e = arg;

	e->drains++;
}

static void
on_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct end *e = arg;

	e->closes++;
	e->why = why;
	snprintf(e->msg, sizeof(e->msg), "%s", msg ? msg : "");
	e->t = NULL;
}

static const struct rp_tls_cbs cbs = {on_ready, on_read, on_drain, on_close};

static void
accept_cb(evutil_socket_t fd, void *arg)
{
	struct pair *p = arg;

	if (p->raw_fd == -2) {
		p->raw_fd = fd;
		return;
	}
	p->s.t = rp_tls_accept(p->sctx, p->base, fd, &cbs, &p->s);
	if (p->s.t == NULL)
		close(fd);
}

/* Server with `mode`; listener on loopback. */
static void
pair_init(
    struct pair *p, enum rp_tls_client_cert mode, unsigned hs_ms, size_t high)
{
	struct rp_tls_opts so = {0};
	char err[512];

	memset(p, 0, sizeof(*p));
	p->v6 = want_v6;
	p->raw_fd = -1;
	p->s.got = evbuffer_new();
	p->c.got = evbuffer_new();
	p->base = event_base_new();
	ck_assert_ptr_nonnull(p->base);
	so.role = RP_TLS_SERVER;
	so.ca_file = tl_path(pki, "ca.pem");
	so.cert_file = tl_path(pki, "broker.pem");
	so.key_file = tl_path(pki, "broker-key.pem");
	so.client_cert = mode;
	so.handshake_timeout_ms = hs_ms;
	so.out_high_water = high;
	p->sctx = rp_tls_ctx_new(&so, err, sizeof(err));
	ck_assert_msg(p->sctx != NULL, "server ctx: %s", err);
	p->l = tl_listen(p->base, p->v6, accept_cb, p, &p->port);
	ck_assert_msg(p->l != NULL, "cannot listen on loopback");
}

/* Client presenting `cert` (a mkpki.sh base name) or none. */
static void
pair_client(struct pair *p, const char *cert, const char *host, size_t high)
{
	struct rp_tls_opts co = {0};
	struct sockaddr_storage ss;
	char err[512], c[64], k[64];
	int sl;

	co.role = RP_TLS_CLIENT;
	co.ca_file = tl_path(pki, "ca.pem");
	if (cert != NULL) {
		snprintf(c, sizeof(c), "%s.pem", cert);
		snprintf(k, sizeof(k), "%s-key.pem", cert);
		co.cert_file = tl_path(pki, c);
		co.key_file = tl_path(pki, k);
	}
	co.out_high_water = high;
	p->cctx = rp_tls_ctx_new(&co, err, sizeof(err));
	ck_assert_msg(p->cctx != NULL, "client ctx: %s", err);
	sl = tl_loopback((struct sockaddr *)&ss, p->v6, p->port);
	p->c.t = rp_tls_connect(
	    p->cctx, p->base, (struct sockaddr *)&ss, sl, host, &cbs, &p->c);
	ck_assert_ptr_nonnull(p->c.t);
}

static int
both_settled(void *arg)
{
	struct pair *p = arg;

	return (p->s.ready || p->s.closes) && (p->c.ready || p->c.closes);
}

static int
both_closed(void *arg)
{
	struct pair *p = arg;

	return p->s.closes && p->c.closes;
}

static void
pair_free(struct pair *p)
{
	if (p->s.t != NULL)
		rp_tls_close(p->s.t);
	if (p->c.t != NULL)
		rp_tls_close(p->c.t);
	tl_run_until(p->base, both_closed, p, 5000);
	ck_assert_int_le(p->s.closes, 1);
	ck_assert_int_le(p->c.closes, 1);
	/* Let deferred frees run. */
	tl_run_until(p->base, NULL, NULL, 20);
	tl_listen_free(p->l);
	if (p->raw_fd >= 0)
		close(p->raw_fd);
	rp_tls_ctx_free(p->sctx);
	rp_tls_ctx_free(p->cctx);
	evbuffer_free(p->s.got);
	evbuffer_free(p->c.got);
	event_base_free(p->base);
}

static int
connect_ok(struct pair *p, enum rp_tls_client_cert mode, const char *cert)
{
	pair_init(p, mode, 5000, 0);
	pair_client(p, cert, "localhost", 0);
	tl_run_until(p->base, both_settled, p, 5000);
	return p->s.ready == 1 && p->c.ready == 1;
}

START_TEST(handshake_tls13)
{
	struct pair p;
	char want[64];

	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_REQUIRE, "ws-042"));
	ck_assert_str_eq(p.c.version, "TLS1.3");
	ck_assert_str_eq(p.s.version, "TLS1.3");
	ck_assert_str_eq(p.s.peer_id, "ws-042.corp.example");
	ck_assert_str_eq(p.c.peer_id, "localhost"); /* server's first SAN */
	snprintf(want, sizeof(want), "127.0.0.1:%u", p.port);
	ck_assert_str_eq(p.c.addr, want);
	ck_assert(strncmp(p.s.addr, "127.0.0.1:", 10) == 0);
	ck_assert_ptr_null(rp_tls_psk_id(p.s.t));
	ck_assert_int_eq(p.s.closes + p.c.closes, 0);
	pair_free(&p);
	ck_assert_int_eq(p.c.why, RP_TLS_CLOSED_LOCAL);
}
END_TEST

static int
got_len(void *arg)
{
	struct end *e = arg;

	return evbuffer_get_length(e->got) >= e->consume_limit;
}

START_TEST(data_both_ways)
{
	struct pair p;
	char buf[64];

	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_NONE, NULL));
	ck_assert_int_eq(rp_tls_write(p.c.t, "ping\n", 5), 0);
	p.s.consume_limit = 5;
	ck_assert(tl_run_until(p.base, got_len, &p.s, 3000));
	evbuffer_remove(p.s.got, buf, 5);
	ck_assert(memcmp(buf, "ping\n", 5) == 0);

	struct evbuffer *b = evbuffer_new();
	evbuffer_add_printf(b, "pong %d\n", 42);
	ck_assert_int_eq(rp_tls_write_buffer(p.s.t, b), 0);
	ck_assert_int_eq(evbuffer_get_length(b), 0);
	evbuffer_free(b);
	p.c.consume_limit = 8;
	ck_assert(tl_run_until(p.base, got_len, &p.c, 3000));
	evbuffer_remove(p.c.got, buf, 8);
	ck_assert(memcmp(buf, "pong 42\n", 8) == 0);
	ck_assert_int_eq(p.s.peer_id[0], '\0');
	ck_assert_int_eq(p.s.has_peer_id, 0);
	pair_free(&p);
}
END_TEST

static void
fill(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)((i * 131u + seed) ^ (i >> 8));
}

START_TEST(write_60k)
{
	struct pair p;
	size_t n = 60 * 1024;
	unsigned char *a = malloc(n), *g = malloc(n);
	struct evbuffer *b = evbuffer_new();

	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_NONE, NULL));
	fill(a, n, 7);
	ck_assert_int_eq(rp_tls_write(p.c.t, a, n), 0);
	p.s.consume_limit = n;
	ck_assert(tl_run_until(p.base, got_len, &p.s, 5000));
	ck_assert_int_eq(evbuffer_get_length(p.s.got), n);
	evbuffer_remove(p.s.got, g, n);
	ck_assert(memcmp(a, g, n) == 0);

	/* Same through write_buffer with a buffer made of many chains. */
	for (size_t off = 0; off < n; off += 1000)
		evbuffer_add(b, a + off, off + 1000 <= n ? 1000 : n - off);
	ck_assert_int_eq(rp_tls_write_buffer(p.s.t, b), 0);
	p.c.consume_limit = n;
	ck_assert(tl_run_until(p.base, got_len, &p.c, 5000));
	ck_assert_int_eq(evbuffer_get_length(p.c.got), n);
	evbuffer_remove(p.c.got, g, n);
	ck_assert(memcmp(a, g, n) == 0);
	pair_free(&p);
	evbuffer_free(b);
	free(a);
	free(g);
}
END_TEST

START_TEST(key_update_mid_stream)
{
	struct pair p;
	char buf[16];

	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_NONE, NULL));
	/* Data, a KeyUpdate (post-handshake message) and data under the new
	 * key arrive in one read: all of it must be decrypted. */
	ck_assert_int_eq(rp_tls_write(p.c.t, "a\n", 2), 0);
	ck_assert_int_eq(rp_tls_key_update(p.c.t), 0);
	ck_assert_int_eq(rp_tls_write(p.c.t, "b\n", 2), 0);
	p.s.consume_limit = 4;
	ck_assert(tl_run_until(p.base, got_len, &p.s, 3000));
	evbuffer_remove(p.s.got, buf, 4);
	ck_assert(memcmp(buf, "a\nb\n", 4) == 0);
	/* The server answered with its own KeyUpdate; both directions go
	 * on. */
	ck_assert_int_eq(rp_tls_write(p.s.t, "c\n", 2), 0);
	ck_assert_int_eq(rp_tls_key_update(p.s.t), 0);
	ck_assert_int_eq(rp_tls_write(p.s.t, "d\n", 2), 0);
	p.c.consume_limit = 4;
	ck_assert(tl_run_until(p.base, got_len, &p.c, 3000));
	evbuffer_remove(p.c.got, buf, 4);
	ck_assert(memcmp(buf, "c\nd\n", 4) == 0);
	ck_assert_int_eq(p.s.closes + p.c.closes, 0);
	pair_free(&p);
}
END_TEST

/* Callbacks that close or write from inside callbacks. */
static void
on_read_close(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	struct end *e = arg;

	e->reads++;
	evbuffer_add_buffer(e->got, in);
	ck_assert_int_eq(rp_tls_write(t, "bye\n", 4), 0);
	rp_tls_close(t);
	rp_tls_close(t); /* twice is harmless */
	ck_assert_int_eq(rp_tls_write(t, "late\n", 5), -1);
	ck_assert_int_eq(e->closes, 0); /* never from inside the call */
}

static void
on_close_touch(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	/* Still valid inside on_close. */
	(void)rp_tls_peer_addr(t);
	(void)rp_tls_peer_id(t);
	rp_tls_close(t);
	ck_assert_int_eq(rp_tls_write(t, "x", 1), -1);
	on_close(t, why, msg, arg);
}

static const struct rp_tls_cbs close_cbs = {
    on_ready, on_read_close, NULL, on_close_touch};

START_TEST(close_from_callbacks)
{
	struct pair p;
	char buf[8];

	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_NONE, NULL));
	rp_tls_set_cbs(p.s.t, &close_cbs, &p.s);
	rp_tls_set_cbs(p.c.t, &close_cbs, &p.c);
	ck_assert_int_eq(rp_tls_write(p.c.t, "hi\n", 3), 0);
	ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
	ck_assert_int_eq(p.s.closes, 1);
	ck_assert_int_eq(p.c.closes, 1);
	ck_assert_int_eq(p.s.why, RP_TLS_CLOSED_LOCAL);
	/* The client got "bye" before the close_notify, then closed in its
	 * own on_read. */
	ck_assert_int_ge(evbuffer_get_length(p.c.got), 4);
	evbuffer_remove(p.c.got, buf, 4);
	ck_assert(memcmp(buf, "bye\n", 4) == 0);
	pair_free(&p);
}
END_TEST

START_TEST(wrong_host_name)
{
	struct pair p;

	pair_init(&p, RP_TLS_CLIENT_CERT_NONE, 5000, 0);
	pair_client(&p, NULL, "other.corp.example", 0);
	ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
	ck_assert_int_eq(p.c.ready, 0);
	ck_assert_int_eq(p.c.closes, 1);
	ck_assert_int_eq(p.c.why, RP_TLS_CLOSED_VERIFY);
	ck_assert_msg(
	    strstr(p.c.msg, "does not match") != NULL, "msg: %s", p.c.msg);
	ck_assert_int_eq(p.s.ready, 0);
	pair_free(&p);
}
END_TEST

START_TEST(ip_literal_host)
{
	struct pair p;

	pair_init(&p, RP_TLS_CLIENT_CERT_NONE, 5000, 0);
	pair_client(&p, NULL, "127.0.0.1", 0); /* SAN IP 127.0.0.1 */
	ck_assert(tl_run_until(p.base, both_settled, &p, 5000));
	ck_assert_int_eq(p.c.ready, 1);
	pair_free(&p);
}
END_TEST

/* The server refuses the client: it never becomes ready and says why; the
 * client never receives application data and is closed too. */
static void
refused(const char *cert, enum rp_tls_client_cert mode, const char *want)
{
	struct pair p;

	pair_init(&p, mode, 5000, 0);
	pair_client(&p, cert, "localhost", 0);
	ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
	ck_assert_int_eq(p.s.ready, 0);
	ck_assert_int_eq(p.s.closes, 1);
	ck_assert_int_eq(p.c.closes, 1);
	ck_assert_msg(
	    p.s.why == RP_TLS_CLOSED_VERIFY, "why %d: %s", p.s.why, p.s.msg);
	ck_assert_msg(strstr(p.s.msg, want) != NULL, "msg: %s", p.s.msg);
	ck_assert_int_ne(p.c.why, RP_TLS_CLOSED_LOCAL);
	ck_assert_int_eq(evbuffer_get_length(p.c.got), 0);
	pair_free(&p);
}

START_TEST(rogue_client_refused)
{
	refused("rogue", RP_TLS_CLIENT_CERT_REQUIRE, "issuer is unknown");
}
END_TEST

START_TEST(rogue_client_refused_request)
{
	/* REQUEST still verifies a certificate that is sent. */
	refused("rogue", RP_TLS_CLIENT_CERT_REQUEST, "issuer is unknown");
}
END_TEST

START_TEST(expired_client_refused)
{
	refused("expired", RP_TLS_CLIENT_CERT_REQUIRE, "expired");
}
END_TEST

START_TEST(server_cert_as_client_refused)
{
	/* broker.pem comes from the right CA but is a TLS *server*
	 * certificate: it must not pass as a machine identity. */
	refused("broker", RP_TLS_CLIENT_CERT_REQUIRE, "purpose");
}
END_TEST

START_TEST(no_cert_require_refused)
{
	refused(NULL, RP_TLS_CLIENT_CERT_REQUIRE, "ertificate");
}
END_TEST

START_TEST(no_cert_request_accepted)
{
	struct pair p;

	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_REQUEST, NULL));
	ck_assert_int_eq(p.s.has_peer_id, 0);
	ck_assert_ptr_null(rp_tls_peer_id(p.s.t));
	pair_free(&p);
}
END_TEST

START_TEST(cn_only_identity)
{
	struct pair p;

	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_REQUIRE, "cn-only"));
	ck_assert_str_eq(p.s.peer_id, "ws-cn.corp.example");
	pair_free(&p);
}
END_TEST

START_TEST(san_identity_request)
{
	struct pair p;

	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_REQUEST, "ws-042"));
	ck_assert_str_eq(p.s.peer_id, "ws-042.corp.example");
	ck_assert_str_eq(rp_tls_peer_id(p.s.t), "ws-042.corp.example");
	pair_free(&p);
}
END_TEST

START_TEST(helper_cn_identity)
{
	struct pair p;

	/* SAN email only: the identity falls back to the CN. */
	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_REQUIRE, "helper-alice"));
	ck_assert_str_eq(p.s.peer_id, "alice");
	pair_free(&p);
}
END_TEST

/* Issues a client certificate from the test CA with a template of our own
 * (names mkpki.sh does not make). */
static void
issue_cert(const char *name, const char *tmpl)
{
	char cmd[4096], path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.tmpl", pki, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
	    "%s\nserial = 4242\nexpiration_days = 2\nsigning_key\n"
	    "tls_www_client\n",
	    tmpl);
	fclose(f);
	snprintf(cmd, sizeof(cmd),
	    "cd '%s' && certtool --generate-privkey --key-type=ecdsa "
	    "--curve=secp256r1 --outfile %s-key.pem 2>/dev/null && "
	    "certtool --generate-certificate --load-privkey %s-key.pem "
	    "--load-ca-certificate ca.pem --load-ca-privkey ca-key.pem "
	    "--template %s.tmpl --outfile %s.pem >/dev/null 2>&1",
	    pki, name, name, name, name);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(unusable_names_refused)
{
	static const struct {
		const char *name, *tmpl, *want;
	} cases[] = {
	    {"bad-cn", "cn = \"ws 042; rm -rf\"", "unusable CN"},
	    {"bad-san",
	        "cn = \"ok.corp.example\"\ndns_name = \"*.corp.example\"",
	        "unusable dNSName"},
	    {"no-name",
	        "organization = \"nameless\"\nemail = \"x@corp.example\"",
	        "neither dNSName nor CN"},
	    {"utf8-cn", "cn = \"ws-\xc3\xa9.corp.example\"", "unusable CN"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pair p;

		issue_cert(cases[i].name, cases[i].tmpl);
		pair_init(&p, RP_TLS_CLIENT_CERT_REQUIRE, 5000, 0);
		pair_client(&p, cases[i].name, "localhost", 0);
		ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
		ck_assert_int_eq(p.s.ready, 0);
		ck_assert_int_eq(p.s.why, RP_TLS_CLOSED_VERIFY);
		ck_assert_msg(strstr(p.s.msg, cases[i].want) != NULL, "%s: %s",
		    cases[i].name, p.s.msg);
		pair_free(&p);
	}
}
END_TEST

static int
server_closed(void *arg)
{
	struct pair *p = arg;

	return p->s.closes > 0;
}

static void
raw_client(struct pair *p, const void *send, size_t len)
{
	struct sockaddr_storage ss;
	int sl, fd;
	uint64_t t0, dt;

	pair_init(p, RP_TLS_CLIENT_CERT_REQUIRE, 300, 0);
	sl = tl_loopback((struct sockaddr *)&ss, 0, p->port);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&ss, sl), 0);
	if (len > 0)
		ck_assert_int_eq(write(fd, send, len), (ssize_t)len);
	t0 = tl_now_ms();
	ck_assert(tl_run_until(p->base, server_closed, p, 5000));
	dt = tl_now_ms() - t0;
	ck_assert_int_eq(p->s.why, RP_TLS_CLOSED_TIMEOUT);
	ck_assert_int_eq(p->s.ready, 0);
	ck_assert_msg(dt >= 250 && dt < 2000, "closed after %llu ms",
	    (unsigned long long)dt);
	/* The server really closed the socket: we read EOF. */
	char b[16];
	ck_assert_int_eq(read(fd, b, sizeof(b)), 0);
	close(fd);
	p->c.closes = 1; /* no client object */
	pair_free(p);
}

START_TEST(silent_client_timeout)
{
	struct pair p;

	raw_client(&p, NULL, 0);
}
END_TEST

START_TEST(half_hello_timeout)
{
	struct pair p;
	/* A TLS record header promising a 512-byte ClientHello, then
	 * silence. */
	static const unsigned char hdr[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};

	raw_client(&p, hdr, sizeof(hdr));
}
END_TEST

START_TEST(garbage_client)
{
	struct pair p;
	struct sockaddr_storage ss;
	int sl, fd;
	const char *junk = "GET / HTTP/1.0\r\n\r\n";

	pair_init(&p, RP_TLS_CLIENT_CERT_NONE, 3000, 0);
	sl = tl_loopback((struct sockaddr *)&ss, 0, p.port);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&ss, sl), 0);
	ck_assert_int_eq(write(fd, junk, strlen(junk)), (ssize_t)strlen(junk));
	ck_assert(tl_run_until(p.base, server_closed, &p, 3000));
	ck_assert_int_eq(p.s.why, RP_TLS_CLOSED_HANDSHAKE);
	close(fd);
	p.c.closes = 1;
	pair_free(&p);
}
END_TEST

static int
client_closed(void *arg)
{
	struct pair *p = arg;

	return p->c.closes > 0;
}

START_TEST(graceful_close_flushes)
{
	struct pair p;
	size_t n = 8 * 1024 * 1024; /* far beyond the socket buffers */
	unsigned char *a = malloc(n), *g = malloc(n);

	ck_assert(connect_ok(&p, RP_TLS_CLIENT_CERT_NONE, NULL));
	fill(a, n, 3);
	/* The client does not read at first: data piles up on the server. */
	rp_tls_set_reading(p.c.t, 0);
	ck_assert_int_eq(rp_tls_write(p.s.t, a, n), 0);
	rp_tls_close(p.s.t);
	ck_assert_int_eq(rp_tls_write(p.s.t, "x", 1), -1); /* closing */
	tl_run_until(p.base, NULL, NULL, 100);
	ck_assert_int_eq(p.s.closes, 0); /* still flushing */
	ck_assert_int_gt(rp_tls_out_pending(p.s.t), 0);
	rp_tls_set_reading(p.c.t, 1);
	ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
	ck_assert_int_eq(p.s.closes, 1);
	ck_assert_int_eq(p.s.why, RP_TLS_CLOSED_LOCAL);
	ck_assert_int_eq(p.c.why, RP_TLS_CLOSED_PEER);
	ck_assert_int_eq(evbuffer_get_length(p.c.got), n);
	evbuffer_remove(p.c.got, g, n);
	ck_assert(memcmp(a, g, n) == 0);
	pair_free(&p);
	free(a);
	free(g);
}
END_TEST

START_TEST(backpressure)
{
	struct pair p;
	size_t hw = 64 * 1024, n = 8 * 1024 * 1024;
	unsigned char *a = malloc(n);
	int reads;

	pair_init(&p, RP_TLS_CLIENT_CERT_NONE, 5000, hw);
	pair_client(&p, NULL, "localhost", 0);
	ck_assert(tl_run_until(p.base, both_settled, &p, 5000));
	ck_assert(p.s.ready && p.c.ready);
	rp_tls_set_reading(p.c.t, 0);
	fill(a, n, 9);
	ck_assert_int_eq(rp_tls_write(p.s.t, a, n), 0);
	tl_run_until(p.base, NULL, NULL, 200);
	/* The socket buffers are full; the rest waits above high water. */
	ck_assert_uint_gt(rp_tls_out_pending(p.s.t), hw);
	/* While paused, the server neither reads nor delivers plaintext. */
	reads = p.s.reads;
	ck_assert_int_eq(rp_tls_write(p.c.t, "hello\n", 6), 0);
	tl_run_until(p.base, NULL, NULL, 200);
	ck_assert_int_eq(p.s.reads, reads);
	ck_assert_int_eq(evbuffer_get_length(p.s.got), 0);
	ck_assert_int_eq(p.s.drains, 0);
	/* The client reads again: the server drains, calls on_drain, and then
	 * delivers the pending input. */
	rp_tls_set_reading(p.c.t, 1);
	p.c.consume_limit = n;
	ck_assert(tl_run_until(p.base, got_len, &p.c, 10000));
	p.s.consume_limit = 6;
	ck_assert(tl_run_until(p.base, got_len, &p.s, 3000));
	ck_assert_int_ge(p.s.drains, 1);
	ck_assert_int_eq(evbuffer_get_length(p.s.got), 6);
	ck_assert_int_eq(evbuffer_get_length(p.c.got), n);
	pair_free(&p);
	free(a);
}
END_TEST

START_TEST(write_before_ready_and_ipv6)
{
	struct pair p;
	char want[64], buf[8];

	want_v6 = 1;
	pair_init(&p, RP_TLS_CLIENT_CERT_NONE, 5000, 0);
	want_v6 = 0;
	pair_client(&p, NULL, "::1", 0);
	/* Written before the handshake: queued, sent once ready. */
	ck_assert_int_eq(rp_tls_write(p.c.t, "early\n", 6), 0);
	ck_assert_uint_ge(rp_tls_out_pending(p.c.t), 6);
	p.s.consume_limit = 6;
	ck_assert(tl_run_until(p.base, got_len, &p.s, 5000));
	evbuffer_remove(p.s.got, buf, 6);
	ck_assert(memcmp(buf, "early\n", 6) == 0);
	snprintf(want, sizeof(want), "[::1]:%u", p.port);
	ck_assert_str_eq(p.c.addr, want);
	ck_assert(strncmp(p.s.addr, "[::1]:", 6) == 0);
	pair_free(&p);
}
END_TEST

START_TEST(close_during_handshake)
{
	struct pair p;

	pair_init(&p, RP_TLS_CLIENT_CERT_NONE, 5000, 0);
	pair_client(&p, NULL, "localhost", 0);
	rp_tls_close(p.c.t);
	ck_assert_int_eq(p.c.closes, 0); /* never from inside the call */
	ck_assert(tl_run_until(p.base, client_closed, &p, 3000));
	ck_assert_int_eq(p.c.why, RP_TLS_CLOSED_LOCAL);
	ck_assert_int_eq(p.c.ready, 0);
	/* The server sees the peer go away during its handshake. */
	ck_assert(
	    tl_run_until(p.base, server_closed, &p, 3000) || p.s.t == NULL);
	pair_free(&p);
}
END_TEST

START_TEST(connect_refused)
{
	struct pair p;
	uint16_t port;

	pair_init(&p, RP_TLS_CLIENT_CERT_NONE, 5000, 0);
	port = p.port;
	tl_listen_free(p.l);
	p.l = NULL;
	p.port = port; /* nobody listens there now */
	pair_client(&p, NULL, "localhost", 0);
	ck_assert(tl_run_until(p.base, client_closed, &p, 3000));
	ck_assert_int_eq(p.c.why, RP_TLS_CLOSED_ERROR);
	ck_assert_msg(strstr(p.c.msg, "refused") != NULL, "msg: %s", p.c.msg);
	tl_run_until(p.base, NULL, NULL, 50);
	ck_assert_int_eq(p.c.closes, 1);
	p.s.closes = 1;
	pair_free(&p);
}
END_TEST

/* Sanitizers replace malloc: mallinfo2 says nothing then. */
#if defined(__SANITIZE_ADDRESS__)
#define TL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TL_ASAN 1
#endif
#endif
#ifndef TL_ASAN
#define TL_ASAN 0
#endif

struct many {
	struct pair *p;
	struct end *s, *c;
	size_t n, accepted;
};

static void
many_accept(evutil_socket_t fd, void *arg)
{
	struct many *m = arg;
	struct rp_tls *t;

	if (m->accepted >= m->n) {
		close(fd);
		return;
	}
	t = rp_tls_accept(m->p->sctx, m->p->base, fd, &cbs, &m->s[m->accepted]);
	ck_assert_ptr_nonnull(t);
	m->s[m->accepted++].t = t;
}

static int
many_ready(void *arg)
{
	struct many *m = arg;
	size_t n = 0;

	for (size_t i = 0; i < m->n; i++)
		n += m->s[i].ready + m->c[i].ready;
	return n == 2 * m->n;
}

static int
many_closed(void *arg)
{
	struct many *m = arg;
	size_t n = 0;

	for (size_t i = 0; i < m->n; i++)
		n += m->s[i].closes + m->c[i].closes;
	return n == 2 * m->n;
}

/* Goal: 100,000 connections per process at <= 20 KiB each. Heap bytes in
 * use per idle connection (both ends here: server and client side of each
 * pair) after a handshake and a little traffic. */
START_TEST(idle_memory_per_connection)
{
	struct pair p;
	struct many m;
	struct sockaddr_storage ss;
	size_t n = 200, before, after;
	double per_side;
	int sl;

	if (TL_ASAN)
		return;
	pair_init(&p, RP_TLS_CLIENT_CERT_REQUIRE, 10000, 0);
	pair_client(&p, "ws-042", "localhost", 0);
	ck_assert(tl_run_until(p.base, both_settled, &p, 5000));
	ck_assert(p.c.ready && p.s.ready); /* warm the libraries up */
	tl_listen_free(p.l);
	memset(&m, 0, sizeof(m));
	m.p = &p;
	m.n = n;
	m.s = calloc(n, sizeof(*m.s));
	m.c = calloc(n, sizeof(*m.c));
	for (size_t i = 0; i < n; i++) {
		m.s[i].got = evbuffer_new();
		m.c[i].got = evbuffer_new();
	}
	p.l = tl_listen(p.base, 0, many_accept, &m, &p.port);
	sl = tl_loopback((struct sockaddr *)&ss, 0, p.port);
	before = mallinfo2().uordblks;
	for (size_t i = 0; i < n; i++) {
		m.c[i].t = rp_tls_connect(p.cctx, p.base,
		    (struct sockaddr *)&ss, sl, "localhost", &cbs, &m.c[i]);
		ck_assert_ptr_nonnull(m.c[i].t);
		rp_tls_write(m.c[i].t, "hello\n", 6);
	}
	ck_assert(tl_run_until(p.base, many_ready, &m, 30000));
	for (size_t i = 0; i < n; i++)
		rp_tls_write(m.s[i].t, "hi\n", 3);
	tl_run_until(p.base, NULL, NULL, 200);
	/* What the test itself keeps per pair: the received bytes. */
	for (size_t i = 0; i < n; i++) {
		evbuffer_drain(m.s[i].got, evbuffer_get_length(m.s[i].got));
		evbuffer_drain(m.c[i].got, evbuffer_get_length(m.c[i].got));
	}
	after = mallinfo2().uordblks;
	per_side = ((double)after - (double)before) / (double)(2 * n);
	fprintf(stderr, "idle_memory_per_connection: %.0f bytes per side\n",
	    per_side);
	ck_assert_msg(
	    per_side < 20 * 1024, "%.0f bytes per connection", per_side);
	for (size_t i = 0; i < n; i++)
		rp_tls_close(m.c[i].t);
	ck_assert(tl_run_until(p.base, many_closed, &m, 10000));
	for (size_t i = 0; i < n; i++) {
		evbuffer_free(m.s[i].got);
		evbuffer_free(m.c[i].got);
	}
	free(m.s);
	free(m.c);
	pair_free(&p);
}
END_TEST

START_TEST(bad_ctx_files)
{
	struct rp_tls_opts o = {0};
	char err[512];

	o.role = RP_TLS_SERVER;
	o.ca_file = tl_path(pki, "ca.pem");
	o.cert_file = tl_path(pki, "nonexistent.pem");
	o.key_file = tl_path(pki, "broker-key.pem");
	ck_assert_ptr_null(rp_tls_ctx_new(&o, err, sizeof(err)));
	ck_assert_msg(strstr(err, "nonexistent.pem") != NULL, "err: %s", err);
	o.cert_file = NULL;
	o.key_file = NULL;
	ck_assert_ptr_null(rp_tls_ctx_new(&o, err, sizeof(err)));
	o.role = RP_TLS_CLIENT;
	o.ca_file = tl_path(pki, "missing-ca.pem");
	ck_assert_ptr_null(rp_tls_ctx_new(&o, err, sizeof(err)));
	ck_assert_msg(strstr(err, "missing-ca.pem") != NULL, "err: %s", err);
}
END_TEST

/* A private key that group or others may read is refused, with the fix
 * in the message; the same file at 0600 is used. */
START_TEST(key_file_mode)
{
	struct rp_tls_opts o = {0};
	struct rp_tls_ctx *ctx;
	char err[512], cmd[1024];

	snprintf(cmd, sizeof(cmd), "cp %s %s", tl_path(pki, "ws-042-key.pem"),
	    tl_path(pki, "mode-key.pem"));
	ck_assert_int_eq(system(cmd), 0);
	o.role = RP_TLS_CLIENT;
	o.ca_file = tl_path(pki, "ca.pem");
	o.cert_file = tl_path(pki, "ws-042.pem");
	o.key_file = tl_path(pki, "mode-key.pem");
	ck_assert_int_eq(chmod(o.key_file, 0640), 0);
	ck_assert_ptr_null(rp_tls_ctx_new(&o, err, sizeof(err)));
	ck_assert_msg(strstr(err, "mode 0640") && strstr(err, "chmod 600"),
	    "err: %s", err);
	ck_assert_int_eq(chmod(o.key_file, 0604), 0);
	ck_assert_ptr_null(rp_tls_ctx_new(&o, err, sizeof(err)));
	ck_assert_int_eq(chmod(o.key_file, 0600), 0);
	ctx = rp_tls_ctx_new(&o, err, sizeof(err));
	ck_assert_msg(ctx != NULL, "err: %s", err);
	rp_tls_ctx_free(ctx);
	unlink(o.key_file);
}
END_TEST

/* ---- external PSK (expert tickets) ------------------------------------ */

static const unsigned char psk_key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    32};
static int psk_lookups;

static int
psk_lookup(void *arg, const char *identity, unsigned char *key, size_t *keylen)
{
	psk_lookups++;
	ck_assert_ptr_eq(arg, &psk_lookups);
	if (strcmp(identity, "ticket-7f3a") != 0)
		return -1;
	ck_assert_uint_ge(*keylen, sizeof(psk_key));
	memcpy(key, psk_key, sizeof(psk_key));
	*keylen = sizeof(psk_key);
	return 0;
}

/* A PSK-only server (no certificate: the helper's listener) and a client
 * offering identity/key. */
static void psk_pair_srv(struct pair *p, const char *identity,
    const unsigned char *key, int with_certs);

static void
psk_pair(struct pair *p, const char *identity, const unsigned char *key)
{
	psk_pair_srv(p, identity, key, 0);
}

static void
psk_pair_srv(struct pair *p, const char *identity, const unsigned char *key,
    int with_certs)
{
	struct rp_tls_opts so = {0}, co = {0};
	struct sockaddr_storage ss;
	char err[512];
	int sl;

	memset(p, 0, sizeof(*p));
	p->raw_fd = -1;
	p->s.got = evbuffer_new();
	p->c.got = evbuffer_new();
	p->base = event_base_new();
	so.role = RP_TLS_SERVER;
	so.psk_lookup = psk_lookup;
	so.psk_arg = &psk_lookups;
	so.handshake_timeout_ms = 5000;
	if (with_certs) {
		so.ca_file = tl_path(pki, "ca.pem");
		so.cert_file = tl_path(pki, "broker.pem");
		so.key_file = tl_path(pki, "broker-key.pem");
		so.client_cert = RP_TLS_CLIENT_CERT_REQUEST;
	}
	p->sctx = rp_tls_ctx_new(&so, err, sizeof(err));
	ck_assert_msg(p->sctx != NULL, "server ctx: %s", err);
	p->l = tl_listen(p->base, 0, accept_cb, p, &p->port);
	ck_assert_ptr_nonnull(p->l);
	co.role = RP_TLS_CLIENT;
	p->cctx = rp_tls_ctx_new(&co, err, sizeof(err));
	ck_assert_msg(p->cctx != NULL, "client ctx: %s", err);
	sl = tl_loopback((struct sockaddr *)&ss, 0, p->port);
	p->c.t = rp_tls_connect_psk(p->cctx, p->base, (struct sockaddr *)&ss,
	    sl, identity, key, sizeof(psk_key), &cbs, &p->c);
	ck_assert_ptr_nonnull(p->c.t);
}

START_TEST(psk_right_key)
{
	struct pair p;
	char buf[8];

	psk_lookups = 0;
	psk_pair(&p, "ticket-7f3a", psk_key);
	ck_assert(tl_run_until(p.base, both_settled, &p, 5000));
	ck_assert_int_eq(p.s.ready, 1);
	ck_assert_int_eq(p.c.ready, 1);
	ck_assert_int_ge(psk_lookups, 1);
	ck_assert_str_eq(p.s.version, "TLS1.3");
	ck_assert_str_eq(p.s.psk_id, "ticket-7f3a");
	ck_assert_str_eq(p.c.psk_id, "ticket-7f3a");
	ck_assert_int_eq(p.s.has_peer_id, 0);
	ck_assert_int_eq(p.c.has_peer_id, 0);
	ck_assert_int_eq(rp_tls_write(p.c.t, "psk!\n", 5), 0);
	p.s.consume_limit = 5;
	ck_assert(tl_run_until(p.base, got_len, &p.s, 3000));
	evbuffer_remove(p.s.got, buf, 5);
	ck_assert(memcmp(buf, "psk!\n", 5) == 0);
	pair_free(&p);
}
END_TEST

/* A raw GnuTLS client in a child process: a PSK handshake with priority
 * `prio`; exits 0 when it completes, 1 when it fails. */
static int
raw_psk_client(uint16_t port, const char *prio)
{
	gnutls_session_t s;
	gnutls_psk_client_credentials_t cred;
	gnutls_datum_t key = {(unsigned char *)psk_key, sizeof(psk_key)};
	struct sockaddr_storage ss;
	int fd, r, sl = tl_loopback((struct sockaddr *)&ss, 0, port);

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, (socklen_t)sl) != 0)
		return 2;
	if (gnutls_psk_allocate_client_credentials(&cred) < 0 ||
	    gnutls_psk_set_client_credentials(
	        cred, "ticket-7f3a", &key, GNUTLS_PSK_KEY_RAW) < 0 ||
	    gnutls_init(&s, GNUTLS_CLIENT) < 0 ||
	    gnutls_priority_set_direct(s, prio, NULL) < 0 ||
	    gnutls_credentials_set(s, GNUTLS_CRD_PSK, cred) < 0)
		return 2;
	gnutls_transport_set_int(s, fd);
	gnutls_handshake_set_timeout(s, 5000);
	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	return r == 0 ? 0 : 1;
}

static pid_t raw_pid;
static int raw_status;

static int
raw_done(void *arg)
{
	(void)arg;
	return waitpid(raw_pid, &raw_status, WNOHANG) == raw_pid;
}

/* The exit status of raw_psk_client(prio) against a PSK-only server. */
static int
raw_psk_handshake(const char *prio)
{
	struct pair p;

	psk_pair(&p, "ticket-7f3a", psk_key);
	ck_assert(tl_run_until(p.base, both_settled, &p, 5000));
	raw_pid = fork();
	ck_assert_int_ne(raw_pid, -1);
	if (raw_pid == 0)
		_exit(raw_psk_client(p.port, prio));
	if (!tl_run_until(p.base, raw_done, NULL, 10000)) {
		kill(raw_pid, SIGKILL);
		waitpid(raw_pid, NULL, 0);
		ck_abort_msg("the raw client did not finish");
	}
	pair_free(&p);
	ck_assert(WIFEXITED(raw_status));
	return WEXITSTATUS(raw_status);
}

/* Forward secrecy for expert tickets: the secret is in the broker's store
 * until the ticket ends, so a session keyed by it alone (TLS 1.3 psk_ke,
 * GnuTLS "+PSK") could be decrypted later by whoever reads the store. The
 * PSK server accepts psk_dhe_ke only. */
START_TEST(psk_requires_ecdhe)
{
	ck_assert_int_eq(
	    raw_psk_handshake(
	        "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK"),
	    0);
	ck_assert_int_eq(
	    raw_psk_handshake("NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+PSK"), 1);
}
END_TEST

START_TEST(psk_wrong_key)
{
	struct pair p;
	unsigned char bad[32];

	memcpy(bad, psk_key, sizeof(bad));
	bad[31] ^= 0x01;
	psk_lookups = 0;
	psk_pair(&p, "ticket-7f3a", bad);
	ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
	ck_assert_int_ge(psk_lookups, 1);
	ck_assert_int_eq(p.s.ready, 0);
	ck_assert_int_eq(p.c.ready, 0);
	ck_assert_int_ne(p.s.why, RP_TLS_CLOSED_LOCAL);
	ck_assert_int_ne(p.c.why, RP_TLS_CLOSED_LOCAL);
	pair_free(&p);
}
END_TEST

START_TEST(psk_unknown_identity)
{
	struct pair p;

	psk_pair(&p, "ticket-0000", psk_key);
	ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
	ck_assert_int_eq(p.s.ready, 0);
	ck_assert_int_eq(p.c.ready, 0);
	pair_free(&p);
}
END_TEST

START_TEST(psk_server_refuses_certificates)
{
	struct pair p;
	struct sockaddr_storage ss;
	struct rp_tls_opts co = {0};
	char err[512];
	int sl;

	/* A client without the ticket cannot fall back to certificates. */
	psk_pair(&p, "ticket-7f3a", psk_key);
	ck_assert(tl_run_until(p.base, both_settled, &p, 5000));
	ck_assert_int_eq(p.c.ready, 1);
	rp_tls_close(p.c.t);
	ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
	evbuffer_free(p.s.got);
	evbuffer_free(p.c.got);
	memset(&p.s, 0, sizeof(p.s));
	memset(&p.c, 0, sizeof(p.c));
	p.s.got = evbuffer_new();
	p.c.got = evbuffer_new();
	rp_tls_ctx_free(p.cctx);
	co.role = RP_TLS_CLIENT;
	co.ca_file = tl_path(pki, "ca.pem");
	co.cert_file = tl_path(pki, "ws-042.pem");
	co.key_file = tl_path(pki, "ws-042-key.pem");
	p.cctx = rp_tls_ctx_new(&co, err, sizeof(err));
	ck_assert_ptr_nonnull(p.cctx);
	sl = tl_loopback((struct sockaddr *)&ss, 0, p.port);
	p.c.t = rp_tls_connect(p.cctx, p.base, (struct sockaddr *)&ss, sl,
	    "localhost", &cbs, &p.c);
	ck_assert_ptr_nonnull(p.c.t);
	ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
	ck_assert_int_eq(p.s.ready, 0);
	ck_assert_int_eq(p.c.ready, 0);
	pair_free(&p);
}
END_TEST

START_TEST(psk_and_certificates_on_one_server)
{
	struct pair p;
	struct rp_tls_opts so = {0};
	char err[512];

	/* A server with certificates and a PSK lookup serves both kinds. */
	psk_pair_srv(&p, "ticket-7f3a", psk_key, 1);
	ck_assert(tl_run_until(p.base, both_settled, &p, 5000));
	ck_assert(p.c.ready && p.s.ready);
	ck_assert_str_eq(p.s.psk_id, "ticket-7f3a");
	ck_assert_str_eq(p.s.version, "TLS1.3");
	ck_assert_int_eq(p.s.has_peer_id, 0);
	rp_tls_close(p.c.t);
	ck_assert(tl_run_until(p.base, both_closed, &p, 5000));
	pair_free(&p);

	pair_init(&p, RP_TLS_CLIENT_CERT_REQUEST, 5000, 0);
	rp_tls_ctx_free(p.sctx);
	so.role = RP_TLS_SERVER;
	so.ca_file = tl_path(pki, "ca.pem");
	so.cert_file = tl_path(pki, "broker.pem");
	so.key_file = tl_path(pki, "broker-key.pem");
	so.client_cert = RP_TLS_CLIENT_CERT_REQUEST;
	so.psk_lookup = psk_lookup;
	so.psk_arg = &psk_lookups;
	p.sctx = rp_tls_ctx_new(&so, err, sizeof(err));
	ck_assert_msg(p.sctx != NULL, "%s", err);
	pair_client(&p, "ws-042", "localhost", 0);
	ck_assert(tl_run_until(p.base, both_settled, &p, 5000));
	ck_assert(p.c.ready && p.s.ready);
	ck_assert_str_eq(p.s.peer_id, "ws-042.corp.example");
	ck_assert_str_eq(p.s.psk_id, "");
	pair_free(&p);
}
END_TEST

/* ---- session resumption (session tickets) ---------------------------- */

struct rs {
	struct event_base *base;
	struct rp_tls_ctx *sctx;
	struct tl_listener *l;
	uint16_t port;
	struct end s, c;
};

static void
rs_accept(evutil_socket_t fd, void *arg)
{
	struct rs *r = arg;

	r->s.t = rp_tls_accept(r->sctx, r->base, fd, &cbs, &r->s);
	if (r->s.t == NULL)
		close(fd);
}

static const char *rs_ca = "ca.pem"; /* the server's trust anchor */

static struct rp_tls_ctx *
rs_server_ctx(
    const char *key_file, unsigned lifetime_s, char *err, size_t errlen)
{
	struct rp_tls_opts so = {0};

	so.role = RP_TLS_SERVER;
	so.ca_file = tl_path(pki, rs_ca);
	so.cert_file = tl_path(pki, "broker.pem");
	so.key_file = tl_path(pki, "broker-key.pem");
	so.client_cert = RP_TLS_CLIENT_CERT_REQUEST;
	so.session_tickets = 1;
	so.ticket_key_file = key_file;
	so.ticket_lifetime_s = lifetime_s;
	return rp_tls_ctx_new(&so, err, errlen);
}

static struct rp_tls_ctx *
rs_client_ctx(const char *cert_file, const char *key_file)
{
	struct rp_tls_opts co = {0};
	struct rp_tls_ctx *c;
	char err[512];

	co.role = RP_TLS_CLIENT;
	co.ca_file = tl_path(pki, "ca.pem");
	co.cert_file = cert_file;
	co.key_file = key_file;
	co.session_resumption = 1;
	c = rp_tls_ctx_new(&co, err, sizeof(err));
	ck_assert_msg(c != NULL, "client ctx: %s", err);
	return c;
}

static int
rs_settled(void *arg)
{
	struct rs *r = arg;

	return (r->s.ready || r->s.closes) && (r->c.ready || r->c.closes);
}

static int
rs_closed(void *arg)
{
	struct rs *r = arg;

	return (r->s.t == NULL || r->s.closes) && r->c.closes;
}

static int
rs_client_got(void *arg)
{
	struct rs *r = arg;

	return evbuffer_get_length(r->c.got) > 0 || r->c.closes;
}

/*
 * One connection from cctx to the server in sctx, offering `session`
 * (NULL: none). Returns 1 if both ends were ready. *resumed: as the server
 * saw it. *out (if not NULL): the new ticket, after one exchange of data.
 */
static int
rs_connect(struct rp_tls_ctx *sctx, struct rp_tls_ctx *cctx,
    const void *session, size_t slen, int *resumed, char *peer_id, size_t idlen,
    void **out, size_t *outlen, enum rp_tls_close_reason *why)
{
	struct rs r;
	struct sockaddr_storage ss;
	struct rp_tls_connect_extra x = {0};
	int sl, ok;

	memset(&r, 0, sizeof(r));
	r.base = event_base_new();
	r.sctx = sctx;
	r.s.got = evbuffer_new();
	r.c.got = evbuffer_new();
	r.l = tl_listen(r.base, 0, rs_accept, &r, &r.port);
	ck_assert_ptr_nonnull(r.l);
	sl = tl_loopback((struct sockaddr *)&ss, 0, r.port);
	x.session = session;
	x.session_len = slen;
	r.c.t = rp_tls_connect_ex(cctx, r.base, (struct sockaddr *)&ss, sl,
	    "localhost", &x, &cbs, &r.c);
	ck_assert_ptr_nonnull(r.c.t);
	tl_run_until(r.base, rs_settled, &r, 5000);
	ok = r.s.ready == 1 && r.c.ready == 1;
	*resumed = ok ? rp_tls_resumed(r.s.t) : 0;
	if (ok)
		ck_assert_int_eq(rp_tls_resumed(r.c.t), *resumed);
	snprintf(peer_id, idlen, "%s", r.s.peer_id);
	if (why != NULL)
		*why = r.s.why;
	if (ok && out != NULL) {
		/* The ticket follows the handshake; one reply brings it. */
		ck_assert_int_eq(rp_tls_write(r.s.t, "hi\n", 3), 0);
		tl_run_until(r.base, rs_client_got, &r, 5000);
		ck_assert_int_eq(
		    rp_tls_get_session_data(r.c.t, out, outlen), 0);
		ck_assert_uint_gt(*outlen, 0);
	}
	if (r.s.t != NULL && !r.s.closes)
		rp_tls_close(r.s.t);
	if (r.c.t != NULL && !r.c.closes)
		rp_tls_close(r.c.t);
	tl_run_until(r.base, rs_closed, &r, 5000);
	tl_run_until(r.base, NULL, NULL, 20);
	tl_listen_free(r.l);
	evbuffer_free(r.s.got);
	evbuffer_free(r.c.got);
	event_base_free(r.base);
	return ok;
}

START_TEST(resume_keeps_peer_id)
{
	struct rp_tls_ctx *sctx, *cctx;
	char err[512], id[256];
	void *tk = NULL, *tk2 = NULL;
	size_t tl = 0, tl2 = 0;
	int resumed;

	sctx = rs_server_ctx(NULL, 0, err, sizeof(err));
	ck_assert_msg(sctx != NULL, "%s", err);
	cctx = rs_client_ctx(
	    tl_path(pki, "ws-042.pem"), tl_path(pki, "ws-042-key.pem"));
	ck_assert(rs_connect(
	    sctx, cctx, NULL, 0, &resumed, id, sizeof(id), &tk, &tl, NULL));
	ck_assert_int_eq(resumed, 0);
	ck_assert_str_eq(id, "ws-042.corp.example");
	/* Resumed: no certificate messages, same verified identity. */
	ck_assert(rs_connect(
	    sctx, cctx, tk, tl, &resumed, id, sizeof(id), &tk2, &tl2, NULL));
	ck_assert_int_eq(resumed, 1);
	ck_assert_str_eq(id, "ws-042.corp.example");
	/* A ticket is not bound to the client's key pair: whoever holds it
	 * resumes as its identity (so it is a secret, like the key). Another
	 * machine's credentials with ws-042's ticket still get ws-042's
	 * identity, never a mix; without a ticket, its own. */
	rp_tls_ctx_free(cctx);
	cctx = rs_client_ctx(
	    tl_path(pki, "ws-043.pem"), tl_path(pki, "ws-043-key.pem"));
	ck_assert(rs_connect(
	    sctx, cctx, NULL, 0, &resumed, id, sizeof(id), NULL, NULL, NULL));
	ck_assert_int_eq(resumed, 0);
	ck_assert_str_eq(id, "ws-043.corp.example");
	free(tk);
	free(tk2);
	rp_tls_ctx_free(cctx);
	rp_tls_ctx_free(sctx);
}
END_TEST

START_TEST(resume_other_key_full_handshake)
{
	struct rp_tls_ctx *a, *b, *cctx;
	char err[512], id[256];
	void *tk = NULL;
	size_t tl = 0;
	int resumed;

	a = rs_server_ctx(NULL, 0, err, sizeof(err));
	b = rs_server_ctx(NULL, 0, err, sizeof(err));
	ck_assert(a != NULL && b != NULL);
	cctx = rs_client_ctx(
	    tl_path(pki, "ws-042.pem"), tl_path(pki, "ws-042-key.pem"));
	ck_assert(rs_connect(
	    a, cctx, NULL, 0, &resumed, id, sizeof(id), &tk, &tl, NULL));
	/* b cannot decrypt a's ticket: full handshake, still the right
	 * identity. */
	ck_assert(rs_connect(
	    b, cctx, tk, tl, &resumed, id, sizeof(id), NULL, NULL, NULL));
	ck_assert_int_eq(resumed, 0);
	ck_assert_str_eq(id, "ws-042.corp.example");
	/* A damaged ticket: full handshake too. */
	((unsigned char *)tk)[tl / 2] ^= 0x5a;
	ck_assert(rs_connect(
	    a, cctx, tk, tl, &resumed, id, sizeof(id), NULL, NULL, NULL));
	ck_assert_int_eq(resumed, 0);
	ck_assert_str_eq(id, "ws-042.corp.example");
	free(tk);
	rp_tls_ctx_free(cctx);
	rp_tls_ctx_free(a);
	rp_tls_ctx_free(b);
}
END_TEST

START_TEST(resume_key_file_survives_restart)
{
	struct rp_tls_ctx *sctx, *cctx;
	char err[512], id[256], file[600];
	void *tk = NULL;
	size_t tl = 0;
	int resumed;
	struct stat st;

	snprintf(file, sizeof(file), "%s/ticket.key", pki);
	unlink(file);
	sctx = rs_server_ctx(file, 0, err, sizeof(err));
	ck_assert_msg(sctx != NULL, "%s", err);
	ck_assert_int_eq(stat(file, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	cctx = rs_client_ctx(
	    tl_path(pki, "ws-042.pem"), tl_path(pki, "ws-042-key.pem"));
	ck_assert(rs_connect(
	    sctx, cctx, NULL, 0, &resumed, id, sizeof(id), &tk, &tl, NULL));
	rp_tls_ctx_free(sctx);
	/* "Restart": a new context reading the same file. */
	sctx = rs_server_ctx(file, 0, err, sizeof(err));
	ck_assert_msg(sctx != NULL, "%s", err);
	ck_assert(rs_connect(
	    sctx, cctx, tk, tl, &resumed, id, sizeof(id), NULL, NULL, NULL));
	ck_assert_int_eq(resumed, 1);
	ck_assert_str_eq(id, "ws-042.corp.example");
	rp_tls_ctx_free(sctx);
	/* Restarted trusting another CA only: the certificate inside the
	 * ticket no longer chains to a trusted CA, so no resumption (and no
	 * full handshake either). */
	rs_ca = "rogue-ca.pem";
	sctx = rs_server_ctx(file, 0, err, sizeof(err));
	rs_ca = "ca.pem";
	ck_assert_msg(sctx != NULL, "%s", err);
	ck_assert(!rs_connect(
	    sctx, cctx, tk, tl, &resumed, id, sizeof(id), NULL, NULL, NULL));
	rp_tls_ctx_free(sctx);
	/* Readable by others: refused. Garbage: refused. */
	chmod(file, 0644);
	ck_assert_ptr_null(rs_server_ctx(file, 0, err, sizeof(err)));
	ck_assert_msg(
	    strstr(err, "readable by group or others") != NULL, "%s", err);
	chmod(file, 0600);
	{
		FILE *f = fopen(file, "w");
		fputs("not a key\n", f);
		fclose(f);
	}
	ck_assert_ptr_null(rs_server_ctx(file, 0, err, sizeof(err)));
	ck_assert_msg(
	    strstr(err, "not a session ticket key") != NULL, "%s", err);
	unlink(file);
	free(tk);
	rp_tls_ctx_free(cctx);
}
END_TEST

/* Issues NAME.pem / NAME-key.pem in pki for fqdn, valid until now + secs. */
static void
issue_short_cert(const char *name, const char *fqdn, long secs)
{
	gnutls_x509_crt_t ca, crt;
	gnutls_x509_privkey_t cakey, key;
	gnutls_datum_t d, out;
	unsigned char serial[8];
	char path[700];
	time_t now = time(NULL);
	FILE *f;

	ck_assert_int_eq(gnutls_load_file(tl_path(pki, "ca.pem"), &d), 0);
	gnutls_x509_crt_init(&ca);
	ck_assert_int_eq(
	    gnutls_x509_crt_import(ca, &d, GNUTLS_X509_FMT_PEM), 0);
	gnutls_free(d.data);
	ck_assert_int_eq(gnutls_load_file(tl_path(pki, "ca-key.pem"), &d), 0);
	gnutls_x509_privkey_init(&cakey);
	ck_assert_int_eq(
	    gnutls_x509_privkey_import(cakey, &d, GNUTLS_X509_FMT_PEM), 0);
	gnutls_free(d.data);
	gnutls_x509_privkey_init(&key);
	ck_assert_int_eq(
	    gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
	        GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
	    0);
	gnutls_x509_crt_init(&crt);
	gnutls_x509_crt_set_version(crt, 3);
	gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
	serial[0] &= 0x7f;
	gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
	gnutls_x509_crt_set_activation_time(crt, now - 3600);
	gnutls_x509_crt_set_expiration_time(crt, now + secs);
	gnutls_x509_crt_set_dn_by_oid(
	    crt, GNUTLS_OID_X520_COMMON_NAME, 0, fqdn, (unsigned)strlen(fqdn));
	gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, fqdn,
	    (unsigned)strlen(fqdn), GNUTLS_FSAN_SET);
	gnutls_x509_crt_set_key(crt, key);
	gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE);
	gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0);
	gnutls_x509_crt_set_basic_constraints(crt, 0, -1);
	ck_assert_int_eq(
	    gnutls_x509_crt_sign2(crt, ca, cakey, GNUTLS_DIG_SHA256, 0), 0);
	snprintf(path, sizeof(path), "%s.pem", name);
	gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out);
	f = fopen(tl_path(pki, path), "w");
	fwrite(out.data, 1, out.size, f);
	fclose(f);
	gnutls_free(out.data);
	snprintf(path, sizeof(path), "%s-key.pem", name);
	gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &out);
	f = fopen(tl_path(pki, path), "w");
	fwrite(out.data, 1, out.size, f);
	fclose(f);
	chmod(tl_path(pki, path), 0600); /* keys others may read are refused */
	gnutls_free(out.data);
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
	gnutls_x509_privkey_deinit(cakey);
	gnutls_x509_crt_deinit(ca);
}

/*
 * The certificate inside a ticket is verified again on every resumption
 * (chain and validity at that moment): a machine certificate that expired
 * after the ticket was issued is refused although the ticket is still
 * valid. And no ticket is accepted beyond its lifetime, so a certificate
 * that can no longer pass a full handshake (revoked: its CA or CRL no
 * longer trusts it) gets in by resumption at most for one lifetime.
 */
START_TEST(resume_expired_cert_and_lifetime)
{
	struct rp_tls_ctx *sctx, *cctx;
	char err[512], id[256];
	void *tk = NULL;
	size_t tl = 0;
	int resumed;
	enum rp_tls_close_reason why;

	issue_short_cert("short", "ws-short.corp.example", 2);
	sctx = rs_server_ctx(NULL, 3600, err, sizeof(err));
	ck_assert_msg(sctx != NULL, "%s", err);
	cctx = rs_client_ctx(
	    tl_path(pki, "short.pem"), tl_path(pki, "short-key.pem"));
	ck_assert(rs_connect(
	    sctx, cctx, NULL, 0, &resumed, id, sizeof(id), &tk, &tl, NULL));
	ck_assert_str_eq(id, "ws-short.corp.example");
	sleep(3); /* the certificate expires; the ticket does not */
	ck_assert(!rs_connect(
	    sctx, cctx, tk, tl, &resumed, id, sizeof(id), NULL, NULL, &why));
	ck_assert_int_eq(why, RP_TLS_CLOSED_VERIFY);
	free(tk);
	tk = NULL;
	rp_tls_ctx_free(cctx);
	rp_tls_ctx_free(sctx);

	/* Ticket lifetime 1 s: after it, a full handshake. */
	sctx = rs_server_ctx(NULL, 1, err, sizeof(err));
	ck_assert_msg(sctx != NULL, "%s", err);
	cctx = rs_client_ctx(
	    tl_path(pki, "ws-042.pem"), tl_path(pki, "ws-042-key.pem"));
	ck_assert(rs_connect(
	    sctx, cctx, NULL, 0, &resumed, id, sizeof(id), &tk, &tl, NULL));
	ck_assert(rs_connect(
	    sctx, cctx, tk, tl, &resumed, id, sizeof(id), NULL, NULL, NULL));
	ck_assert_int_eq(resumed, 1);
	sleep(3);
	ck_assert(rs_connect(
	    sctx, cctx, tk, tl, &resumed, id, sizeof(id), NULL, NULL, NULL));
	ck_assert_int_eq(resumed, 0);
	ck_assert_str_eq(id, "ws-042.corp.example");
	free(tk);
	rp_tls_ctx_free(cctx);
	rp_tls_ctx_free(sctx);
}
END_TEST

/* GnuTLS counts the lifetime from the full handshake that authenticated
 * the client: a resumed session (and the ticket it gets) keeps that time,
 * so a chain of resumptions cannot stretch one authentication forever. */
START_TEST(resume_lifetime_from_full_handshake)
{
	struct rp_tls_ctx *sctx, *cctx;
	char err[512], id[256];
	void *a = NULL, *b = NULL;
	size_t al = 0, bl = 0;
	int resumed;

	sctx = rs_server_ctx(NULL, 4, err, sizeof(err));
	ck_assert_msg(sctx != NULL, "%s", err);
	cctx = rs_client_ctx(
	    tl_path(pki, "ws-042.pem"), tl_path(pki, "ws-042-key.pem"));
	ck_assert(rs_connect(
	    sctx, cctx, NULL, 0, &resumed, id, sizeof(id), &a, &al, NULL));
	ck_assert_int_eq(resumed, 0);
	/* GnuTLS compares whole seconds of age (age_ms / 1000 > lifetime), so
	 * each step keeps a full second of margin: 2 s (accepted), then 6 s
	 * after the full handshake (refused), which is only 4 s after ticket
	 * b was issued: counted from b it would still be accepted. */
	sleep(2);
	ck_assert(rs_connect(
	    sctx, cctx, a, al, &resumed, id, sizeof(id), &b, &bl, NULL));
	ck_assert_int_eq(resumed, 1);
	sleep(4);
	ck_assert(rs_connect(
	    sctx, cctx, b, bl, &resumed, id, sizeof(id), NULL, NULL, NULL));
	ck_assert_int_eq(resumed, 0);
	ck_assert_str_eq(id, "ws-042.corp.example");
	free(a);
	free(b);
	rp_tls_ctx_free(cctx);
	rp_tls_ctx_free(sctx);
}
END_TEST

/* An external-PSK server never issues tickets (a ticket would outlive the
 * single-use expert ticket). */
START_TEST(resume_refused_with_psk)
{
	struct rp_tls_opts so = {0};
	char err[512];

	so.role = RP_TLS_SERVER;
	so.ca_file = tl_path(pki, "ca.pem");
	so.cert_file = tl_path(pki, "broker.pem");
	so.key_file = tl_path(pki, "broker-key.pem");
	so.psk_lookup = psk_lookup;
	so.session_tickets = 1;
	ck_assert_ptr_null(rp_tls_ctx_new(&so, err, sizeof(err)));
	ck_assert_msg(strstr(err, "session tickets") != NULL, "%s", err);
}
END_TEST

static Suite *
tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("tls");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, handshake_tls13);
	tcase_add_test(tc, data_both_ways);
	tcase_add_test(tc, write_60k);
	tcase_add_test(tc, key_update_mid_stream);
	tcase_add_test(tc, close_from_callbacks);
	tcase_add_test(tc, wrong_host_name);
	tcase_add_test(tc, ip_literal_host);
	tcase_add_test(tc, rogue_client_refused);
	tcase_add_test(tc, rogue_client_refused_request);
	tcase_add_test(tc, expired_client_refused);
	tcase_add_test(tc, server_cert_as_client_refused);
	tcase_add_test(tc, no_cert_require_refused);
	tcase_add_test(tc, no_cert_request_accepted);
	tcase_add_test(tc, cn_only_identity);
	tcase_add_test(tc, san_identity_request);
	tcase_add_test(tc, helper_cn_identity);
	tcase_add_test(tc, unusable_names_refused);
	tcase_add_test(tc, silent_client_timeout);
	tcase_add_test(tc, half_hello_timeout);
	tcase_add_test(tc, garbage_client);
	tcase_add_test(tc, graceful_close_flushes);
	tcase_add_test(tc, backpressure);
	tcase_add_test(tc, write_before_ready_and_ipv6);
	tcase_add_test(tc, close_during_handshake);
	tcase_add_test(tc, connect_refused);
	tcase_add_test(tc, bad_ctx_files);
	tcase_add_test(tc, key_file_mode);
	tcase_add_test(tc, idle_memory_per_connection);
	tcase_add_test(tc, psk_right_key);
	tcase_add_test(tc, psk_requires_ecdhe);
	tcase_add_test(tc, psk_wrong_key);
	tcase_add_test(tc, psk_unknown_identity);
	tcase_add_test(tc, psk_server_refuses_certificates);
	tcase_add_test(tc, psk_and_certificates_on_one_server);
	tcase_add_test(tc, resume_keeps_peer_id);
	tcase_add_test(tc, resume_other_key_full_handshake);
	tcase_add_test(tc, resume_key_file_survives_restart);
	tcase_add_test(tc, resume_expired_cert_and_lifetime);
	tcase_add_test(tc, resume_refused_with_psk);
	tcase_add_test(tc, resume_lifetime_from_full_handshake);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	pki = tl_tmpdir("rabroker-test-tls");
	if (pki == NULL || tl_mkpki(pki) != 0)
		return 1;
	sr = srunner_create(tls_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tl_rmtree(pki);
	free(pki);
	return failed == 0 ? 0 : 1;
}
