/*
 * fuzz_rpc.c - libFuzzer harness for the rpcproto input path.
 *
 * The bytes go through three things, each with invariants that abort():
 *  1. rp_frame on an evbuffer, fed in chunks whose size comes from the
 *     first input byte, compared result by result with the same bytes fed
 *     at once (the incremental scan must not change what is framed), with a
 *     small line limit as well so over-long lines are exercised;
 *  2. rp_msg_parse on every line; whatever parses is encoded again with
 *     rp_msg_encode and re-parsed: the round trip must succeed and give an
 *     equal message of the same kind;
 *  3. rp_conn_input on an in-memory transport with a small method table:
 *     every line rp_conn writes back must itself parse as a JSON-RPC
 *     response (never a request, never malformed).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "rp_conn.h"
#include "rp_error.h"
#include "rp_frame.h"
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

/* One framing result, for the chunked/whole comparison. */
struct fres {
	enum rp_frame_res r;
	size_t len, off;
	char *line;
};

#define MAX_RES 256

static size_t
frame_all(uint32_t max, const uint8_t *data, size_t size, size_t chunk,
    struct fres *out)
{
	struct evbuffer *in = evbuffer_new();
	struct rp_frame f;
	size_t n = 0, pos = 0;

	rp_frame_init(&f, max);
	while (pos < size || chunk == 0) {
		size_t take = chunk == 0 ? size : chunk;

		if (take > size - pos)
			take = size - pos;
		evbuffer_add(in, data + pos, take);
		pos += take;
		for (;;) {
			struct fres r = {0};

			r.r = rp_frame_next(&f, in, &r.line, &r.len, &r.off);
			/* bounded memory: never more than one line + '\r' */
			CHECK(evbuffer_get_length(in) <= (size_t)max + 1 ||
			    r.r != RP_FRAME_NEED_MORE);
			if (r.r == RP_FRAME_NEED_MORE)
				break;
			if (r.r == RP_FRAME_LINE || r.r == RP_FRAME_BAD_UTF8) {
				CHECK(r.line != NULL);
				CHECK(r.len > 0 && r.len <= max);
				CHECK(memchr(r.line, '\n', r.len) == NULL);
				CHECK(r.line[r.len] == '\0');
			} else {
				CHECK(r.line == NULL);
			}
			if (r.r == RP_FRAME_LINE) {
				CHECK(rp_utf8_valid(r.line, r.len, NULL));
			} else if (r.r == RP_FRAME_BAD_UTF8) {
				size_t off;

				CHECK(!rp_utf8_valid(r.line, r.len, &off));
				CHECK(off == r.off && off < r.len);
			}
			if (n < MAX_RES)
				out[n++] = r;
			else
				free(r.line);
		}
		if (chunk == 0)
			break;
	}
	evbuffer_free(in);
	return n;
}

static void
check_parse_roundtrip(const char *line, size_t len)
{
	struct rp_msg m, m2;
	json_t *bad = NULL, *bad2 = NULL;
	char err[256], err2[256];
	struct evbuffer *out;
	size_t n;
	char *enc;
	int rc;

	rc = rp_msg_parse(line, len, &m, &bad, err, sizeof(err));
	if (rc != 0) {
		CHECK(rc == RP_ERR_PARSE || rc == RP_ERR_INVALID_REQUEST);
		CHECK(err[0] != '\0');
		CHECK(m.root == NULL);
		CHECK(bad == NULL || rp_msg_id_valid(bad));
		/* The error reply we would send must encode on one line. */
		json_t *e = rp_msg_error(bad, rc, err, NULL);
		out = evbuffer_new();
		CHECK(e != NULL);
		CHECK(rp_msg_encode(out, e, RP_LINE_MAX) == 0);
		json_decref(e);
		json_decref(bad);
		evbuffer_free(out);
		return;
	}
	CHECK(bad == NULL);
	CHECK(m.kind >= RP_MSG_REQUEST && m.kind <= RP_MSG_ERROR);
	CHECK(m.kind == RP_MSG_NOTIFICATION || m.id != NULL);

	out = evbuffer_new();
	/* Re-encoding never needs more than the input plus escapes. */
	CHECK(rp_msg_encode(out, m.root, 8 * (size_t)RP_LINE_MAX) == 0);
	n = evbuffer_get_length(out);
	CHECK(n >= 2);
	enc = (char *)evbuffer_pullup(out, -1);
	CHECK(enc[n - 1] == '\n');
	CHECK(memchr(enc, '\n', n - 1) == NULL);
	CHECK(rp_utf8_valid(enc, n - 1, NULL));
	rc = rp_msg_parse(enc, n - 1, &m2, &bad2, err2, sizeof(err2));
	if (rc != 0)
		fprintf(stderr, "round trip failed: %s\n", err2);
	CHECK(rc == 0);
	CHECK(m2.kind == m.kind);
	CHECK(json_equal(m2.root, m.root));
	CHECK((m.method == NULL) == (m2.method == NULL));
	CHECK(m.method == NULL || strcmp(m.method, m2.method) == 0);
	CHECK(m.err_code == m2.err_code);
	rp_msg_clear(&m2);
	rp_msg_clear(&m);
	evbuffer_free(out);
}

/* ---- rp_conn over memory ----------------------------------------------- */

struct mem_io {
	struct evbuffer *sent;
	int closed;
};

static int
mem_write(void *io, struct evbuffer *buf)
{
	struct mem_io *m = io;

	return evbuffer_add_buffer(m->sent, buf);
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
	struct mem_io *m = io;

	m->closed = 1;
}

static const struct rp_io_ops mem_ops = {
    .write = mem_write,
    .out_pending = mem_out_pending,
    .set_reading = mem_set_reading,
    .close = mem_close,
};

static void
h_hello(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	CHECK(json_is_object(params));
	CHECK(json_is_integer(json_object_get(params, "version")));
	CHECK(json_is_string(json_object_get(params, "role")));
	rp_conn_set_state(c, RP_ST_HELLO);
	rp_conn_reply(c, id, json_pack("{s:i}", "version", 1));
}

static void
h_echo(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	CHECK(params != NULL);
	rp_conn_reply(c, id, json_incref(params));
}

static void
h_close(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	rp_conn_close(c, "asked to");
}

static void
h_agent(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	CHECK(rp_conn_state(c) & RP_ST_AGENT);
	rp_conn_error(c, id, RP_ERR_DECLINED, NULL, NULL);
}

static const struct rp_method fuzz_methods[] = {
    {"hello", RP_ST_NEW, "{version:I, role:s, software?:s}", 0, h_hello},
    {"echo", RP_ST_ANY, NULL, RP_M_NOTIFY_OK, h_echo},
    {"close", RP_ST_ANY, NULL, RP_M_NOTIFY_OK, h_close},
    {"agent.x", RP_ST_AGENT, "{a:[s], b?:{c:i}}", 0, h_agent},
};

static struct event_base *fuzz_base;

/* Our own calls: each callback must run exactly once. */
static int fuzz_replies[2];

static void
fuzz_reply_cb(struct rp_conn *c, int code, json_t *result, void *arg)
{
	int *n = arg;

	(*n)++;
	CHECK(*n == 1);
	CHECK(code != 0 || result != NULL);
}

static void
fuzz_conn(const uint8_t *data, size_t size)
{
	struct rp_conn_opts o = {
	    .methods = fuzz_methods,
	    .nmethods = sizeof(fuzz_methods) / sizeof(fuzz_methods[0]),
	};
	struct mem_io io = {evbuffer_new(), 0};
	struct evbuffer *in = evbuffer_new();
	struct rp_conn *c = rp_conn_new(fuzz_base, &mem_ops, &io, &o);
	char *line;
	size_t n;

	CHECK(c != NULL);
	/* Two calls of ours (ids 1 and 2) for the input to answer. */
	fuzz_replies[0] = fuzz_replies[1] = 0;
	CHECK(rp_conn_call(c, "novice.prompt", NULL, 0, fuzz_reply_cb,
	          &fuzz_replies[0]) == 0);
	CHECK(rp_conn_call(c, "control.prompt", json_object(), 0, fuzz_reply_cb,
	          &fuzz_replies[1]) == 0);
	evbuffer_drain(io.sent, evbuffer_get_length(io.sent));
	evbuffer_add(in, data, size);
	evbuffer_add(in, "\n", 1);
	rp_conn_input(c, in);
	/* Everything rp_conn said is a well-formed response. */
	while ((line = evbuffer_readln(io.sent, &n, EVBUFFER_EOL_LF)) != NULL) {
		struct rp_msg m;
		json_t *bad;
		char err[256];

		CHECK(rp_msg_parse(line, n, &m, &bad, err, sizeof(err)) == 0);
		CHECK(m.kind == RP_MSG_RESULT || m.kind == RP_MSG_ERROR);
		rp_msg_clear(&m);
		free(line);
	}
	CHECK(evbuffer_get_length(io.sent) == 0);
	rp_conn_closed(c, "fuzz done");
	CHECK(rp_conn_state(c) == RP_ST_CLOSED);
	CHECK(rp_conn_pending(c) == 0);
	CHECK(fuzz_replies[0] == 1 && fuzz_replies[1] == 1);
	rp_conn_unref(c);
	evbuffer_free(in);
	evbuffer_free(io.sent);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fres whole[MAX_RES], chunked[MAX_RES];
	size_t nw, nc, chunk;
	uint32_t max;

	if (fuzz_base == NULL) {
		log_init("fuzz_rpc", LOG_LVL_ERR, 0);
		fuzz_base = event_base_new();
	}
	if (size == 0)
		return 0;
	/* First byte: chunk size (1..128) and line limit (64 or default). */
	chunk = (size_t)(data[0] & 0x7F) + 1;
	max = (data[0] & 0x80) ? 64 : RP_LINE_MAX;
	data++;
	size--;

	nw = frame_all(max, data, size, 0, whole);
	nc = frame_all(max, data, size, chunk, chunked);
	/* Chunking changes nothing, except that the whole-buffer run sees an
	 * over-long line without '\n' as over-long at once, like the chunked
	 * run does once enough has arrived: both report it exactly once. */
	CHECK(nw == nc);
	for (size_t i = 0; i < nw; i++) {
		CHECK(whole[i].r == chunked[i].r);
		CHECK(whole[i].len == chunked[i].len);
		CHECK(whole[i].off == chunked[i].off);
		CHECK(whole[i].len == 0 ||
		    memcmp(whole[i].line, chunked[i].line, whole[i].len) == 0);
		if (whole[i].r == RP_FRAME_LINE)
			check_parse_roundtrip(whole[i].line, whole[i].len);
		free(whole[i].line);
		free(chunked[i].line);
	}
	fuzz_conn(data, size);
	return 0;
}
