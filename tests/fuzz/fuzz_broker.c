/*
 * fuzz_broker.c - the broker's method table and its own handlers (hello,
 * ping, agent.register, agent.sessions, machines.list) on any input.
 *
 * Each input is fed, line by line, to two connections over an in-memory
 * transport: a new one whose peer presents the machine certificate of
 * ws-042 (so hello as agent and agent.register are reachable), and one
 * already authenticated as the helper CORP\alice (machines.list). There is
 * no directory, store or offer engine: methods that need them must answer
 * with an error, never crash. Invariants (abort()): every line the broker
 * writes is a well-formed JSON-RPC response; after both connections close
 * the registry is empty (no agent outlives its connection); the registry
 * only ever holds ws-042, lower case.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "az_dir.h"
#include "az_policy.h"
#include "bk.h"
#include "bk_config.h"
#include "bk_methods.h"
#include "rp_conn.h"
#include "rp_log.h"
#include "rp_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                      \
	do {                                                             \
		if (!(cond)) {                                           \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", \
			    __FILE__, __LINE__, #cond);                  \
			abort();                                         \
		}                                                        \
	} while (0)

struct mem_io {
	struct evbuffer *sent;
	const char *peer_id;
};

static int
mem_write(void *io, struct evbuffer *buf)
{
	return evbuffer_add_buffer(((struct mem_io *)io)->sent, buf);
}

static size_t
mem_out_pending(void *io)
{
	return 0;
}

static void
mem_set_reading(void *io, int on)
{
}

static void
mem_close(void *io)
{
}

static const char *
mem_peer_id(void *io)
{
	return ((struct mem_io *)io)->peer_id;
}

static const char *
mem_peer_addr(void *io)
{
	return "192.0.2.1:40000";
}

static const struct rp_io_ops mem_ops = {
    .write = mem_write,
    .out_pending = mem_out_pending,
    .set_reading = mem_set_reading,
    .close = mem_close,
    .peer_id = mem_peer_id,
    .peer_addr = mem_peer_addr,
};

static struct bk_ctx ctx;
static struct bk_config cfg;

/* What bk_server.c's on_close does, minus the server bookkeeping. */
static void
on_close(struct rp_conn *c, const char *why, void *arg)
{
	struct bk_peer *p = rp_conn_data(c);

	if (p == NULL)
		return;
	rp_conn_set_data(c, NULL);
	if (p->role == BK_ROLE_AGENT)
		bk_agents_conn_closed(&ctx, p, why);
	bk_session_peer_gone(p);
	az_entry_free(p->user);
	az_entry_free(p->computer);
	free(p->machine);
	free(p);
}

static const struct rp_conn_cbs cbs = {.on_close = on_close};

static int
check_agent(struct bk_agent *ag, void *arg)
{
	CHECK(strcmp(ag->fqdn, "ws-042.corp.example") == 0);
	return 0;
}

static void
init_once(void)
{
	char err[256];
	static const char policy[] =
	    "allow control user \"CORP\\alice\" on all\n";

	if (ctx.base != NULL)
		return;
	log_init("fuzz_broker", LOG_LVL_ERR, 0);
	ctx.base = event_base_new();
	cfg.keepalive_s = 60;
	cfg.login_timeout_s = 60;
	cfg.max_failures = 5;
	cfg.failure_window_s = 60;
	ctx.cfg = &cfg;
	ctx.policy =
	    az_policy_load_buffer("fuzz", policy, strlen(policy), err, 256);
	ctx.agents = bk_agents_new();
	ctx.authrl = bk_ratelimit_new();
	CHECK(ctx.base && ctx.policy && ctx.agents && ctx.authrl);
}

static struct rp_conn *
conn_new(struct mem_io *io, int helper)
{
	struct rp_conn_opts o = {
	    .methods = bk_methods,
	    .nmethods = bk_nmethods,
	    .cbs = &cbs,
	    .ctx = &ctx,
	};
	struct rp_conn *c = rp_conn_new(ctx.base, &mem_ops, io, &o);
	struct bk_peer *p = calloc(1, sizeof(*p));

	CHECK(c != NULL && p != NULL);
	p->ctx = &ctx;
	p->conn = c;
	snprintf(p->addr, sizeof(p->addr), "192.0.2.1:40000");
	if (helper) {
		struct az_entry e = {0};
		char *groups[] = {"CORP\\helpdesk"};
		e.dn = "uid=alice,ou=People,dc=corp,dc=example";
		e.account = "CORP\\alice";
		e.domain = "CORP";
		e.groups = groups;
		e.ngroups = 1;
		p->user = az_entry_dup(&e);
		p->role = BK_ROLE_HELPER;
		rp_conn_set_state(c, RP_ST_HELPER);
	}
	rp_conn_set_data(c, p);
	return c;
}

static void
check_output(struct evbuffer *sent)
{
	char *line;
	size_t n;

	while ((line = evbuffer_readln(sent, &n, EVBUFFER_EOL_LF)) != NULL) {
		struct rp_msg m;
		json_t *bad;
		char err[256];

		CHECK(rp_msg_parse(line, n, &m, &bad, err, sizeof(err)) == 0);
		CHECK(m.kind == RP_MSG_RESULT || m.kind == RP_MSG_ERROR);
		rp_msg_clear(&m);
		free(line);
	}
	CHECK(evbuffer_get_length(sent) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mem_io ia = {NULL, "WS-042.corp.example"}, ih = {NULL, NULL};
	struct rp_conn *a, *h;
	struct evbuffer *in;

	init_once();
	ia.sent = evbuffer_new();
	ih.sent = evbuffer_new();
	in = evbuffer_new();
	a = conn_new(&ia, 0);
	h = conn_new(&ih, 1);
	evbuffer_add(in, data, size);
	evbuffer_add(in, "\n", 1);
	rp_conn_input(a, in);
	evbuffer_drain(in, evbuffer_get_length(in));
	evbuffer_add(in, data, size);
	evbuffer_add(in, "\n", 1);
	rp_conn_input(h, in);
	check_output(ia.sent);
	check_output(ih.sent);
	CHECK(bk_agents_count(ctx.agents) <= 1);
	bk_agents_foreach(ctx.agents, check_agent, NULL);
	rp_conn_closed(a, "fuzz done");
	rp_conn_closed(h, "fuzz done");
	rp_conn_unref(a);
	rp_conn_unref(h);
	CHECK(bk_agents_count(ctx.agents) == 0);
	evbuffer_free(in);
	evbuffer_free(ia.sent);
	evbuffer_free(ih.sent);
	return 0;
}
