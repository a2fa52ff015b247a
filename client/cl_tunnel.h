/*
 * cl_tunnel.h - byte pipes for remote assistance.
 *
 * cl_splice: joins two endpoints (an rp_tls, or a plain socket
 * bufferevent) and moves bytes both ways with backpressure: a side stops
 * being read while the other has more than CL_SPLICE_HIGH bytes of output
 * queued, and resumes when that drains below half. When one side ends, the
 * other is flushed (bounded in time) and closed; on_close is called once,
 * after both are gone, and then the splice frees itself. An optional filter
 * sees the a -> b direction (the agent's RFB view-only filter). Used by
 * raagent (helper tunnel <-> local VNC server) and raoffer (local viewer
 * <-> helper listener).
 *
 * cl_tunnel: the agent's reverse connection for one ticket: tries each of
 * the helper's addresses in order with TLS 1.3 external PSK (identity =
 * ticket id), a per-address timeout; if none answers and the relay is
 * allowed, opens a second connection to the broker with the machine
 * certificate, says hello, relay.join {ticket, side: "agent"}, and runs the
 * PSK-TLS inside that stream (a socketpair: one end spliced to the broker
 * connection, rp_tls_connect_psk_fd on the other). Then bridges to the
 * local target.
 */
#ifndef CL_TUNNEL_H
#define CL_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct bufferevent;
struct event_base;
struct evbuffer;
struct rp_tls;
struct rp_tls_ctx;
struct cl_splice;
struct cl_tunnel;
struct cl_rfb;

#define CL_SPLICE_HIGH (256u * 1024u)

/* One endpoint: exactly one of the two is set. The splice takes it over
 * (callbacks replaced, freed/closed by the splice). */
struct cl_end {
	struct rp_tls *tls;
	struct bufferevent *bev;
};

/* Filter for a -> b: consume from src, append what passes to dst. 0, or
 * -1 to end the splice (why: a static string for the log). */
typedef int (*cl_splice_filter)(
    void *arg, struct evbuffer *src, struct evbuffer *dst, const char **why);

struct cl_splice_cbs {
	cl_splice_filter filter_ab; /* optional */
	/* Both sides gone. why: first reason. The splice is freed when this
	 * returns. */
	void (*on_close)(struct cl_splice *s, const char *why, void *arg);
};

struct cl_splice *cl_splice_new(struct event_base *base, struct cl_end a,
    struct cl_end b, const struct cl_splice_cbs *cbs, void *arg);
/* Queues bytes for side b (0) or a (1), e.g. what arrived before the
 * splice existed. Takes all of buf. */
void cl_splice_push(struct cl_splice *s, int to_a, struct evbuffer *buf);
/* Bytes read from a (sent towards b), and from b. */
void cl_splice_bytes(const struct cl_splice *s, uint64_t *ab, uint64_t *ba);
/* Ends both sides now; on_close follows from the loop. */
void cl_splice_close(struct cl_splice *s, const char *why);

/* ---- the agent's reverse connection ------------------------------------ */

struct cl_tunnel_params {
	const char *ticket;
	const unsigned char *psk;
	size_t psklen;
	json_t *addresses;   /* array of "ip:port" (borrowed) */
	unsigned timeout_ms; /* per address */
	int relay;           /* relay fallback allowed */
	/* broker, for the relay */
	struct rp_tls_ctx *broker_ctx; /* machine certificate; made with
	                                  rp_tls_opts.stream = 1 */
	const char *broker_host, *broker_port, *server_name;
	/* local side */
	const char *target_host, *target_port;
	struct cl_rfb *rfb; /* NULL: no filter (raw); owned by the caller */
};

struct cl_tunnel_cbs {
	/* Connected: via "direct" or "relay", address (direct only), tried
	 * (array of addresses tried; borrowed). */
	void (*on_connected)(struct cl_tunnel *t, const char *via,
	    const char *address, json_t *tried, void *arg);
	/* Ended (failed to connect when connected == 0). bytes: both ways.
	 * The tunnel is freed when this returns. */
	void (*on_closed)(struct cl_tunnel *t, int connected, double seconds,
	    uint64_t bytes, json_t *tried, const char *why, void *arg);
};

struct cl_tunnel *cl_tunnel_start(struct event_base *base,
    const struct cl_tunnel_params *p, const struct cl_tunnel_cbs *cbs,
    void *arg);
/* Tears down at once (revoked); on_closed follows from the loop. */
void cl_tunnel_close(struct cl_tunnel *t, const char *why);
const char *cl_tunnel_ticket(const struct cl_tunnel *t);

#endif
