/*
 * cl_tunnel.c - splicing two byte streams, and the agent's reverse
 * connection (direct, then relay). See cl_tunnel.h.
 *
 * Lifetime rules: a cl_splice frees itself after its on_close; a cl_tunnel
 * counts its live parts (a connection attempt, the broker connection, the
 * outer relay splice, the inner TLS, the main splice) and finishes from the
 * loop when the count reaches zero and nothing is left to try.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "cl_rfb.h"
#include "cl_tunnel.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_log.h"
#include "rp_tls.h"

#define SPLICE_FLUSH_S 5 /* a closing side gets this long to flush */

/* ---- splice ------------------------------------------------------------ */

struct side {
	struct cl_splice *s;
	int idx;
	struct rp_tls *tls;
	struct bufferevent *bev;
	int gone;
	int paused; /* we stopped reading it (the other side is full) */
	uint64_t nread;
};

struct cl_splice {
	struct event_base *base;
	struct side sd[2];
	struct cl_splice_cbs cbs;
	void *arg;
	char why[512];
	struct evbuffer *tmp;
	struct event *fin, *flush_timer;
	int finishing;
};

static void side_end(struct side *d, const char *why);

static size_t
side_pending(const struct side *d)
{
	if (d->gone)
		return 0;
	if (d->tls != NULL)
		return rp_tls_out_pending(d->tls);
	return evbuffer_get_length(bufferevent_get_output(d->bev));
}

static void
side_reading(struct side *d, int on)
{
	if (d->gone)
		return;
	d->paused = !on;
	if (d->tls != NULL)
		rp_tls_set_reading(d->tls, on);
	else if (on)
		bufferevent_enable(d->bev, EV_READ);
	else
		bufferevent_disable(d->bev, EV_READ);
}

static void
side_write(struct side *d, struct evbuffer *buf)
{
	if (d->gone) {
		evbuffer_drain(buf, evbuffer_get_length(buf));
		return;
	}
	if (d->tls != NULL)
		rp_tls_write_buffer(d->tls, buf);
	else
		bufferevent_write_buffer(d->bev, buf);
}

static void
splice_why(struct cl_splice *s, const char *why)
{
	if (s->why[0] == '\0' && why != NULL)
		snprintf(s->why, sizeof(s->why), "%s", why);
}

static void
splice_fin_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_splice *s = arg;

	(void)fd;
	(void)ev;
	if (s->cbs.on_close != NULL)
		s->cbs.on_close(s, s->why[0] ? s->why : "closed", s->arg);
	event_free(s->fin);
	if (s->flush_timer != NULL)
		event_free(s->flush_timer);
	evbuffer_free(s->tmp);
	free(s);
}

static void
splice_check_done(struct cl_splice *s)
{
	if (s->sd[0].gone && s->sd[1].gone && !s->finishing) {
		s->finishing = 1;
		event_active(s->fin, EV_TIMEOUT, 0);
	}
}

/* Data from side d. */
static void
splice_input(struct side *d, struct evbuffer *in)
{
	struct cl_splice *s = d->s;
	struct side *o = &s->sd[!d->idx];
	const char *why = NULL;
	size_t n = evbuffer_get_length(in);

	d->nread += n;
	if (o->gone) {
		evbuffer_drain(in, n);
		return;
	}
	if (d->idx == 0 && s->cbs.filter_ab != NULL) {
		if (s->cbs.filter_ab(s->arg, in, s->tmp, &why) != 0) {
			evbuffer_drain(in, evbuffer_get_length(in));
			cl_splice_close(s, why ? why : "filter refused input");
			return;
		}
		side_write(o, s->tmp);
	} else
		side_write(o, in);
	if (side_pending(o) > CL_SPLICE_HIGH) {
		log_debug("splice %p: pause %d (other side holds %zu)",
		    (void *)s, d->idx, side_pending(o));
		side_reading(d, 0);
	}
}

/* Side d drained some output. */
static void
splice_drained(struct side *d)
{
	struct side *o = &d->s->sd[!d->idx];

	if (o->paused && side_pending(d) <= CL_SPLICE_HIGH / 2) {
		log_debug("splice %p: resume %d", (void *)d->s, o->idx);
		side_reading(o, 1);
	}
}

static void
sp_tls_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	(void)t;
	splice_input(arg, in);
}

static void
sp_tls_drain(struct rp_tls *t, void *arg)
{
	(void)t;
	splice_drained(arg);
}

static void
sp_tls_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct side *d = arg;
	char text[300];

	(void)t;
	snprintf(text, sizeof(text), "%s %s%s%s", d->idx ? "b" : "a",
	    rp_tls_close_reason_name(why), msg && *msg ? ": " : "",
	    msg ? msg : "");
	d->tls = NULL; /* freed by rp_tls after we return */
	side_end(d, text);
}

static const struct rp_tls_cbs sp_tls_cbs = {
    .on_ready = NULL,
    .on_read = sp_tls_read,
    .on_drain = sp_tls_drain,
    .on_close = sp_tls_close,
};

static void
sp_bev_read(struct bufferevent *bev, void *arg)
{
	splice_input(arg, bufferevent_get_input(bev));
}

static void
sp_bev_write(struct bufferevent *bev, void *arg)
{
	struct side *d = arg;

	if (d->s->sd[!d->idx].gone) {
		/* flushing before close */
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
			bufferevent_free(d->bev);
			d->bev = NULL;
			d->gone = 1;
			splice_check_done(d->s);
		}
		return;
	}
	splice_drained(d);
}

static void
sp_bev_event(struct bufferevent *bev, short what, void *arg)
{
	struct side *d = arg;
	char text[300];

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;
	if (what & BEV_EVENT_EOF)
		snprintf(text, sizeof(text), "%s closed", d->idx ? "b" : "a");
	else
		snprintf(text, sizeof(text), "%s: %s", d->idx ? "b" : "a",
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	bufferevent_free(d->bev);
	d->bev = NULL;
	side_end(d, text);
}

static void
splice_flush_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_splice *s = arg;

	(void)fd;
	(void)ev;
	for (int i = 0; i < 2; i++)
		if (!s->sd[i].gone && s->sd[i].bev != NULL) {
			bufferevent_free(s->sd[i].bev);
			s->sd[i].bev = NULL;
			s->sd[i].gone = 1;
		}
	splice_check_done(s);
}

/* Side d is gone: close the other one gracefully. */
static void
side_end(struct side *d, const char *why)
{
	struct cl_splice *s = d->s;
	struct side *o = &s->sd[!d->idx];
	struct timeval tv = {SPLICE_FLUSH_S, 0};

	d->gone = 1;
	splice_why(s, why);
	if (!o->gone) {
		if (o->tls != NULL)
			rp_tls_close(o->tls); /* flushes, then on_close */
		else if (evbuffer_get_length(bufferevent_get_output(o->bev)) ==
		    0) {
			bufferevent_free(o->bev);
			o->bev = NULL;
			o->gone = 1;
		} else {
			bufferevent_disable(o->bev, EV_READ);
			bufferevent_setwatermark(o->bev, EV_WRITE, 0, 0);
			bufferevent_enable(o->bev, EV_WRITE);
			if (s->flush_timer == NULL)
				s->flush_timer = evtimer_new(
				    s->base, splice_flush_timeout, s);
			if (s->flush_timer != NULL)
				evtimer_add(s->flush_timer, &tv);
		}
	}
	splice_check_done(s);
}

struct cl_splice *
cl_splice_new(struct event_base *base, struct cl_end a, struct cl_end b,
    const struct cl_splice_cbs *cbs, void *arg)
{
	struct cl_splice *s = calloc(1, sizeof(*s));
	struct cl_end e[2] = {a, b};

	if (s == NULL)
		return NULL;
	s->base = base;
	s->cbs = *cbs;
	s->arg = arg;
	s->tmp = evbuffer_new();
	s->fin = event_new(base, -1, 0, splice_fin_cb, s);
	if (s->tmp == NULL || s->fin == NULL) {
		if (s->tmp)
			evbuffer_free(s->tmp);
		if (s->fin)
			event_free(s->fin);
		free(s);
		return NULL;
	}
	for (int i = 0; i < 2; i++) {
		struct side *d = &s->sd[i];
		d->s = s;
		d->idx = i;
		d->tls = e[i].tls;
		d->bev = e[i].bev;
		if (d->tls != NULL)
			rp_tls_set_cbs(d->tls, &sp_tls_cbs, d);
		else {
			bufferevent_setcb(
			    d->bev, sp_bev_read, sp_bev_write, sp_bev_event, d);
			bufferevent_setwatermark(
			    d->bev, EV_WRITE, CL_SPLICE_HIGH / 2, 0);
			bufferevent_enable(d->bev, EV_READ | EV_WRITE);
		}
	}
	return s;
}

void
cl_splice_push(struct cl_splice *s, int to_a, struct evbuffer *buf)
{
	side_write(&s->sd[to_a ? 0 : 1], buf);
}

void
cl_splice_bytes(const struct cl_splice *s, uint64_t *ab, uint64_t *ba)
{
	*ab = s->sd[0].nread;
	*ba = s->sd[1].nread;
}

void
cl_splice_close(struct cl_splice *s, const char *why)
{
	splice_why(s, why);
	for (int i = 0; i < 2; i++) {
		struct side *d = &s->sd[i];
		if (d->gone)
			continue;
		if (d->tls != NULL)
			rp_tls_close(d->tls);
		else {
			bufferevent_free(d->bev);
			d->bev = NULL;
			d->gone = 1;
		}
	}
	splice_check_done(s);
}

/* ---- the reverse connection ------------------------------------------ */

enum tn_phase { TN_DIRECT = 0, TN_RELAY, TN_UP, TN_DONE };

struct cl_tunnel {
	struct event_base *base;
	struct cl_tunnel_cbs cbs;
	void *arg;
	char *ticket;
	unsigned char psk[64];
	size_t psklen;
	json_t *addresses, *tried;
	size_t next;
	unsigned timeout_ms;
	int relay;
	struct rp_tls_ctx *broker_ctx, *psk_ctx;
	char *broker_host, *broker_port, *server_name;
	char *target_host, *target_port;
	struct cl_rfb *rfb;

	enum tn_phase phase;
	int live;    /* parts still open */
	int closing; /* cl_tunnel_close called */
	int connected;
	struct timespec t0;
	uint64_t bytes;
	char why[512];
	struct event *timer, *fin;

	struct rp_tls *attempt; /* direct attempt or inner TLS, pre-ready */
	char attempt_addr[80];
	struct rp_tls *btls; /* broker connection, before the rp_conn */
	struct rp_conn *bc;  /* broker connection, JSON-RPC phase */
	struct cl_splice *outer, *main;
};

static void tn_next(struct cl_tunnel *t);

static void
tn_why(struct cl_tunnel *t, const char *why)
{
	if (t->why[0] == '\0' && why != NULL)
		snprintf(t->why, sizeof(t->why), "%s", why);
}

static double
tn_elapsed(const struct cl_tunnel *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->t0.tv_sec) +
	    (double)(now.tv_nsec - t->t0.tv_nsec) / 1e9;
}

static void
tn_fin_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_tunnel *t = arg;

	(void)fd;
	(void)ev;
	if (t->cbs.on_closed != NULL)
		t->cbs.on_closed(t, t->connected,
		    t->connected ? tn_elapsed(t) : 0, t->bytes, t->tried,
		    t->why[0] ? t->why : "closed", t->arg);
	event_free(t->timer);
	event_free(t->fin);
	json_decref(t->addresses);
	json_decref(t->tried);
	rp_tls_ctx_free(t->psk_ctx);
	free(t->ticket);
	free(t->broker_host);
	free(t->broker_port);
	free(t->server_name);
	free(t->target_host);
	free(t->target_port);
	explicit_bzero(t->psk, sizeof(t->psk));
	free(t);
}

/* A part closed (or nothing started): finish when nothing is left. */
static void
tn_part_gone(struct cl_tunnel *t)
{
	t->live--;
	if (t->live == 0 && t->phase != TN_DONE) {
		if (!t->closing && !t->connected &&
		    (t->phase == TN_DIRECT || t->phase == TN_RELAY)) {
			tn_next(t);
			if (t->live > 0)
				return;
		}
		t->phase = TN_DONE;
		event_active(t->fin, EV_TIMEOUT, 0);
	}
}

/* The local side: a connecting bufferevent to the target. */
static struct bufferevent *
tn_local(struct cl_tunnel *t)
{
	struct addrinfo hints, *res = NULL;
	struct bufferevent *bev;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(t->target_host, t->target_port, &hints, &res) != 0 ||
	    res == NULL)
		return NULL;
	bev = bufferevent_socket_new(t->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev != NULL &&
	    bufferevent_socket_connect(
	        bev, res->ai_addr, (int)res->ai_addrlen) != 0) {
		bufferevent_free(bev);
		bev = NULL;
	}
	if (bev != NULL) {
		/* Pointer and key events are small: no Nagle delay. */
		int one = 1;
		(void)setsockopt(bufferevent_getfd(bev), IPPROTO_TCP,
		    TCP_NODELAY, &one, sizeof(one));
	}
	freeaddrinfo(res);
	return bev;
}

static int
tn_rfb_filter(
    void *arg, struct evbuffer *src, struct evbuffer *dst, const char **why)
{
	struct cl_tunnel *t = arg;
	unsigned char in[16384], out[sizeof(in) + CL_RFB_HOLD];
	size_t n, outlen;

	while (
	    (n = evbuffer_remove(src, in, sizeof(in))) > 0 && n != (size_t)-1) {
		int r = cl_rfb_filter(t->rfb, in, n, out, &outlen);
		if (outlen > 0)
			evbuffer_add(dst, out, outlen);
		if (r != 0) {
			*why = cl_rfb_error(t->rfb);
			log_warnx("ticket %s: closing the tunnel: %s",
			    t->ticket, *why);
			return -1;
		}
	}
	return 0;
}

static void
tn_main_closed(struct cl_splice *s, const char *why, void *arg)
{
	struct cl_tunnel *t = arg;
	uint64_t ab, ba;

	cl_splice_bytes(s, &ab, &ba);
	t->bytes = ab + ba;
	t->main = NULL;
	tn_why(t, why);
	tn_part_gone(t);
}

/* The PSK-TLS to the helper is up (direct or inside the relay). */
static void
tn_up(struct cl_tunnel *t, struct rp_tls *helper, const char *via)
{
	struct cl_splice_cbs cbs = {
	    .filter_ab = t->rfb ? tn_rfb_filter : NULL,
	    .on_close = tn_main_closed,
	};
	struct cl_end a = {.tls = helper}, b = {0};

	t->attempt = NULL;
	evtimer_del(t->timer);
	b.bev = tn_local(t);
	if (b.bev == NULL) {
		tn_why(t, "cannot connect to the local target");
		rp_tls_set_cbs(helper, NULL, NULL);
		rp_tls_close(helper);
		tn_part_gone(t);
		return;
	}
	t->main = cl_splice_new(t->base, a, b, &cbs, t);
	if (t->main == NULL) {
		bufferevent_free(b.bev);
		rp_tls_set_cbs(helper, NULL, NULL);
		rp_tls_close(helper);
		tn_why(t, "out of memory");
		tn_part_gone(t);
		return;
	}
	t->phase = TN_UP;
	t->connected = 1;
	clock_gettime(CLOCK_MONOTONIC, &t->t0);
	if (t->closing) {
		cl_splice_close(t->main, t->why);
		return;
	}
	log_info("ticket %s: connected via %s%s%s", t->ticket, via,
	    strcmp(via, "direct") ? "" : " to ",
	    strcmp(via, "direct") ? "" : t->attempt_addr);
	if (t->cbs.on_connected != NULL)
		t->cbs.on_connected(t, via,
		    strcmp(via, "direct") ? NULL : t->attempt_addr, t->tried,
		    t->arg);
}

static void
att_ready(struct rp_tls *tls, void *arg)
{
	struct cl_tunnel *t = arg;

	tn_up(t, tls, t->phase == TN_RELAY ? "relay" : "direct");
}

static void
att_close(struct rp_tls *tls, enum rp_tls_close_reason why, const char *msg,
    void *arg)
{
	struct cl_tunnel *t = arg;
	char text[300];

	(void)tls;
	snprintf(text, sizeof(text), "%s: %s%s%s",
	    t->phase == TN_RELAY ? "relay" : t->attempt_addr,
	    rp_tls_close_reason_name(why), msg && *msg ? ": " : "",
	    msg ? msg : "");
	log_info("ticket %s: %s", t->ticket, text);
	t->attempt = NULL;
	evtimer_del(t->timer);
	if (t->phase == TN_RELAY)
		tn_why(t, text);
	else
		tn_why(t, NULL);
	tn_part_gone(t);
}

static const struct rp_tls_cbs att_cbs = {
    .on_ready = att_ready,
    .on_close = att_close,
};

static void
tn_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_tunnel *t = arg;

	(void)fd;
	(void)ev;
	if (t->attempt != NULL) {
		log_info("ticket %s: %s: no answer in %u ms", t->ticket,
		    t->attempt_addr, t->timeout_ms);
		rp_tls_close(t->attempt);
	}
}

static void
tn_arm(struct cl_tunnel *t)
{
	struct timeval tv;

	tv.tv_sec = t->timeout_ms / 1000;
	tv.tv_usec = (t->timeout_ms % 1000) * 1000;
	evtimer_add(t->timer, &tv);
}

/* ---- relay ---- */

static void
outer_closed(struct cl_splice *s, const char *why, void *arg)
{
	struct cl_tunnel *t = arg;

	(void)s;
	t->outer = NULL;
	log_debug("ticket %s: relay connection ended: %s", t->ticket, why);
	tn_part_gone(t);
}

static void
relay_joined(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct cl_tunnel *t = arg;
	struct evbuffer *left = NULL;
	struct rp_tls *outer;
	struct bufferevent *bev = NULL;
	int sp[2] = {-1, -1};
	struct cl_splice_cbs ocbs = {.on_close = outer_closed};
	struct cl_end a = {0}, b = {0};
	const char *st = json_string_value(json_object_get(result, "status"));

	if (code != 0 || st == NULL || strcmp(st, "paired") != 0) {
		const char *r =
		    json_string_value(json_object_get(result, "message"));
		char text[256];
		snprintf(text, sizeof(text), "relay.join refused: %s",
		    code == 0 ? (st ? st : "?")
		        : r   ? r
		              : rp_err_name(code));
		tn_why(t, text);
		log_warnx("ticket %s: %s", t->ticket, text);
		rp_conn_close(c, "relay refused");
		return; /* on_close follows */
	}
	if (t->closing) {
		rp_conn_close(c, "tunnel closed");
		return;
	}
	left = evbuffer_new();
	outer = left ? rp_conn_detach(c, left) : NULL;
	t->bc = NULL;
	rp_conn_unref(c);
	if (outer == NULL) {
		tn_why(t, "relay: detach failed");
		goto fail_outer_gone;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0 ||
	    (bev = bufferevent_socket_new(
	         t->base, sp[0], BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		tn_why(t, "relay: socketpair failed");
		goto fail;
	}
	evutil_make_socket_nonblocking(sp[0]);
	sp[0] = -1;
	a.tls = outer;
	b.bev = bev;
	t->outer = cl_splice_new(t->base, a, b, &ocbs, t);
	if (t->outer == NULL) {
		tn_why(t, "out of memory");
		goto fail;
	}
	bev = NULL;
	outer = NULL;
	cl_splice_push(t->outer, 0, left); /* early inner bytes */
	evbuffer_free(left);
	left = NULL;
	t->attempt = rp_tls_connect_psk_fd(t->psk_ctx, t->base, sp[1],
	    t->ticket, t->psk, t->psklen, &att_cbs, t);
	if (t->attempt == NULL) {
		close(sp[1]);
		tn_why(t, "relay: inner TLS failed to start");
		cl_splice_close(t->outer, "inner TLS failed");
		return;
	}
	t->live++; /* the inner TLS (the outer splice kept the broker's) */
	tn_arm(t);
	log_info("ticket %s: relay paired", t->ticket);
	return;
fail:
	if (bev != NULL)
		bufferevent_free(bev);
	if (sp[0] >= 0)
		close(sp[0]);
	if (sp[1] >= 0)
		close(sp[1]);
	if (outer != NULL) {
		rp_tls_set_cbs(outer, NULL, NULL);
		rp_tls_close(outer);
	}
fail_outer_gone:
	if (left != NULL)
		evbuffer_free(left);
	tn_part_gone(t);
}

static void
relay_hello(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct cl_tunnel *t = arg;

	(void)result;
	if (code != 0 || t->closing) {
		tn_why(t, code ? "relay: hello refused" : NULL);
		rp_conn_close(c, "hello refused");
		return;
	}
	if (rp_conn_call(c, "relay.join",
	        json_pack("{s:s, s:s}", "ticket", t->ticket, "side", "agent"),
	        120000, relay_joined, t) != 0)
		rp_conn_close(c, "relay.join failed");
}

static void
bc_closed(struct rp_conn *c, const char *why, void *ctx)
{
	struct cl_tunnel *t = ctx;
	char text[300];

	snprintf(text, sizeof(text), "relay: broker connection: %s", why);
	tn_why(t, text);
	if (t->bc == c) {
		t->bc = NULL;
		rp_conn_unref(c);
	}
	tn_part_gone(t);
}

static const struct rp_conn_cbs bc_cbs = {.on_close = bc_closed};

static void
btls_ready(struct rp_tls *tls, void *arg)
{
	struct cl_tunnel *t = arg;
	struct rp_conn_opts o;

	memset(&o, 0, sizeof(o));
	o.cbs = &bc_cbs;
	o.ctx = t;
	t->btls = NULL;
	t->bc = rp_conn_new_tls(t->base, tls, &o);
	if (t->bc == NULL) {
		rp_tls_close(tls); /* on_close still ours */
		t->btls = tls;
		return;
	}
	rp_conn_call(t->bc, "hello",
	    json_pack("{s:i, s:s, s:s}", "version", 1, "role", "agent",
	        "software", "raagent/0.1"),
	    0, relay_hello, t);
}

static void
btls_close(struct rp_tls *tls, enum rp_tls_close_reason why, const char *msg,
    void *arg)
{
	struct cl_tunnel *t = arg;
	char text[300];

	(void)tls;
	snprintf(text, sizeof(text), "relay: broker: %s%s%s",
	    rp_tls_close_reason_name(why), msg && *msg ? ": " : "",
	    msg ? msg : "");
	t->btls = NULL;
	tn_why(t, text);
	tn_part_gone(t);
}

static const struct rp_tls_cbs btls_cbs = {
    .on_ready = btls_ready,
    .on_close = btls_close,
};

static int
tn_relay(struct cl_tunnel *t)
{
	struct addrinfo hints, *res = NULL;

	t->phase = TN_RELAY;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(t->broker_host, t->broker_port, &hints, &res) != 0 ||
	    res == NULL) {
		tn_why(t, "relay: cannot resolve the broker");
		return -1;
	}
	log_info("ticket %s: no helper address answered; trying the relay",
	    t->ticket);
	t->btls = rp_tls_connect(t->broker_ctx, t->base, res->ai_addr,
	    (int)res->ai_addrlen, t->server_name, &btls_cbs, t);
	freeaddrinfo(res);
	if (t->btls == NULL) {
		tn_why(t, "relay: cannot connect to the broker");
		return -1;
	}
	t->live++;
	return 0;
}

/* Starts the next attempt; leaves live unchanged when nothing is left. */
static void
tn_next(struct cl_tunnel *t)
{
	struct sockaddr_storage ss;
	int sl;
	const char *a;

	while (
	    t->phase == TN_DIRECT && t->next < json_array_size(t->addresses)) {
		a = json_string_value(json_array_get(t->addresses, t->next++));
		if (a == NULL)
			continue;
		snprintf(t->attempt_addr, sizeof(t->attempt_addr), "%s", a);
		json_array_append_new(t->tried, json_string(a));
		sl = sizeof(ss);
		memset(&ss, 0, sizeof(ss));
		if (evutil_parse_sockaddr_port(
		        a, (struct sockaddr *)&ss, &sl) != 0 ||
		    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
			log_warnx("ticket %s: bad helper address \"%s\"",
			    t->ticket, a);
			continue;
		}
		log_info("ticket %s: trying %s", t->ticket, a);
		t->attempt = rp_tls_connect_psk(t->psk_ctx, t->base,
		    (struct sockaddr *)&ss, sl, t->ticket, t->psk, t->psklen,
		    &att_cbs, t);
		if (t->attempt == NULL) {
			log_info("ticket %s: %s: cannot connect", t->ticket, a);
			continue;
		}
		t->live++;
		tn_arm(t);
		return;
	}
	if (t->phase == TN_DIRECT) {
		if (!t->relay) {
			tn_why(t,
			    "no helper address answered (relay not "
			    "allowed)");
			t->phase = TN_RELAY; /* nothing more to try */
			return;
		}
		if (tn_relay(t) != 0)
			return;
		return;
	}
	tn_why(t, "no helper address answered and the relay failed");
}

struct cl_tunnel *
cl_tunnel_start(struct event_base *base, const struct cl_tunnel_params *p,
    const struct cl_tunnel_cbs *cbs, void *arg)
{
	struct cl_tunnel *t;
	struct rp_tls_opts o;
	char err[256];

	if (p->psklen == 0 || p->psklen > sizeof(t->psk) ||
	    !json_is_array(p->addresses))
		return NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->base = base;
	t->cbs = *cbs;
	t->arg = arg;
	t->ticket = strdup(p->ticket);
	memcpy(t->psk, p->psk, p->psklen);
	t->psklen = p->psklen;
	t->addresses = json_incref(p->addresses);
	t->tried = json_array();
	t->timeout_ms = p->timeout_ms ? p->timeout_ms : 30000;
	t->relay = p->relay && p->broker_ctx != NULL;
	t->broker_ctx = p->broker_ctx;
	t->broker_host = p->broker_host ? strdup(p->broker_host) : NULL;
	t->broker_port = p->broker_port ? strdup(p->broker_port) : NULL;
	t->server_name = p->server_name ? strdup(p->server_name) : NULL;
	t->target_host = strdup(p->target_host);
	t->target_port = strdup(p->target_port);
	t->rfb = p->rfb;
	t->timer = evtimer_new(base, tn_timeout, t);
	t->fin = event_new(base, -1, 0, tn_fin_cb, t);
	memset(&o, 0, sizeof(o));
	o.role = RP_TLS_CLIENT;
	o.handshake_timeout_ms = t->timeout_ms + 1000;
	o.stream = 1; /* the splice does the backpressure */
	t->psk_ctx = rp_tls_ctx_new(&o, err, sizeof(err));
	if (t->psk_ctx == NULL)
		log_warnx("ticket %s: %s", p->ticket, err);
	if (t->ticket == NULL || t->tried == NULL || t->timer == NULL ||
	    t->fin == NULL || t->psk_ctx == NULL || t->target_host == NULL ||
	    t->target_port == NULL) {
		t->cbs.on_closed = NULL;
		tn_fin_cb(-1, 0, t);
		return NULL;
	}
	t->live = 1; /* held until the first attempt is under way */
	tn_next(t);
	tn_part_gone(t);
	return t;
}

void
cl_tunnel_close(struct cl_tunnel *t, const char *why)
{
	if (t->closing || t->phase == TN_DONE)
		return;
	t->closing = 1;
	tn_why(t, why);
	evtimer_del(t->timer);
	if (t->attempt != NULL)
		rp_tls_close(t->attempt);
	if (t->btls != NULL)
		rp_tls_close(t->btls);
	if (t->bc != NULL)
		rp_conn_close(t->bc, why);
	if (t->main != NULL)
		cl_splice_close(t->main, why);
	if (t->outer != NULL)
		cl_splice_close(t->outer, why);
}

const char *
cl_tunnel_ticket(const struct cl_tunnel *t)
{
	return t->ticket;
}
