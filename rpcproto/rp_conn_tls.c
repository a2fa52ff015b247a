/*
 * rp_conn_tls.c - an rp_conn over an rp_tls: the rp_io_ops table on one
 * side, the rp_tls callbacks feeding rp_conn_input / rp_conn_drained /
 * rp_conn_closed on the other. Kept apart so that rp_conn.c never calls
 * rp_tls_* itself and unit tests can run rp_conn over a socketpair.
 */
#include <stdio.h>

#include <event2/buffer.h>

#include "rp_conn.h"
#include "rp_tls.h"

static int
io_write(void *io, struct evbuffer *buf)
{
	return rp_tls_write_buffer(io, buf);
}

static size_t
io_out_pending(void *io)
{
	return rp_tls_out_pending(io);
}

static void
io_set_reading(void *io, int on)
{
	rp_tls_set_reading(io, on);
}

static void
io_close(void *io)
{
	rp_tls_close(io);
}

static const char *
io_peer_id(void *io)
{
	return rp_tls_peer_id(io);
}

static const char *
io_peer_addr(void *io)
{
	return rp_tls_peer_addr(io);
}

static const struct rp_io_ops tls_io_ops = {
    .write = io_write,
    .out_pending = io_out_pending,
    .set_reading = io_set_reading,
    .close = io_close,
    .peer_id = io_peer_id,
    .peer_addr = io_peer_addr,
};

static void
tc_read(struct rp_tls *t, struct evbuffer *in, void *arg)
{
	rp_conn_input(arg, in);
}

static void
tc_drain(struct rp_tls *t, void *arg)
{
	rp_conn_drained(arg);
}

static void
tc_close(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	char text[512];

	if (why == RP_TLS_CLOSED_LOCAL || msg == NULL || msg[0] == '\0')
		snprintf(
		    text, sizeof(text), "%s", rp_tls_close_reason_name(why));
	else
		snprintf(text, sizeof(text), "%s: %s",
		    rp_tls_close_reason_name(why), msg);
	rp_conn_closed(arg, text);
}

static const struct rp_tls_cbs conn_tls_cbs = {
    .on_ready = NULL, /* the rp_conn is made in or after on_ready */
    .on_read = tc_read,
    .on_drain = tc_drain,
    .on_close = tc_close,
};

struct rp_conn *
rp_conn_new_tls(
    struct event_base *base, struct rp_tls *t, const struct rp_conn_opts *o)
{
	struct rp_conn *c;

	if (t == NULL || (c = rp_conn_new(base, &tls_io_ops, t, o)) == NULL)
		return NULL;
	rp_conn_set_tls(c, t);
	rp_tls_set_cbs(t, &conn_tls_cbs, c);
	return c;
}
