/*
 * test_conn.c - rp_conn in a real event loop over a socketpair.
 *
 * Side A is an rp_conn on a tiny rp_io_ops transport written here over a
 * socket bufferevent (no TLS). Side B is a raw peer bufferevent: the tests
 * write lines to it and read back what rp_conn answered, so every reply is
 * checked on the wire.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "rp_conn.h"
#include "rp_error.h"
#include "rp_frame.h"
#include "rp_msg.h"

/* ---- the test transport ------------------------------------------------ */

struct tio {
	struct bufferevent *bev;
	struct rp_conn *conn;
	int closing;
	size_t fake_pending; /* added to out_pending (backpressure tests) */
	int reading;
};

static void
tio_finish(struct tio *t, const char *why)
{
	struct rp_conn *c = t->conn;

	bufferevent_free(t->bev);
	free(t);
	rp_conn_closed(c, why);
}

static int
tio_write(void *io, struct evbuffer *buf)
{
	struct tio *t = io;

	if (t->closing)
		return -1;
	return bufferevent_write_buffer(t->bev, buf);
}

static size_t
tio_out_pending(void *io)
{
	struct tio *t = io;

	return evbuffer_get_length(bufferevent_get_output(t->bev)) +
	    t->fake_pending;
}

static void
tio_set_reading(void *io, int on)
{
	struct tio *t = io;

	t->reading = on;
	if (on)
		bufferevent_enable(t->bev, EV_READ);
	else
		bufferevent_disable(t->bev, EV_READ);
}

static void
tio_close(void *io)
{
	struct tio *t = io;

	t->closing = 1;
	bufferevent_disable(t->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(t->bev)) == 0)
		tio_finish(t, "local close");
	/* else tio_write_cb finishes once flushed */
}

static const char *
tio_peer_id(void *io)
{
	return "test-peer";
}

static const char *
tio_peer_addr(void *io)
{
	return "socketpair";
}

static const struct rp_io_ops tio_ops = {
    .write = tio_write,
    .out_pending = tio_out_pending,
    .set_reading = tio_set_reading,
    .close = tio_close,
    .peer_id = tio_peer_id,
    .peer_addr = tio_peer_addr,
};

static void
tio_read_cb(struct bufferevent *bev, void *arg)
{
	struct tio *t = arg;

	rp_conn_input(t->conn, bufferevent_get_input(bev));
}

static void
tio_write_cb(struct bufferevent *bev, void *arg)
{
	struct tio *t = arg;

	if (t->closing)
		tio_finish(t, "local close");
	else
		rp_conn_drained(t->conn);
}

static void
tio_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tio *t = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		tio_finish(t, "peer closed");
}

/* ---- fixture ----------------------------------------------------------- */

static struct event_base *base;
static struct tio *tio;
static struct rp_conn *conn;     /* the test's own reference */
static struct bufferevent *peer; /* side B */
static struct evbuffer *peer_in; /* what side B received */
static int peer_eof;

static int n_close, n_proto, n_handled, n_notified;
static char close_why[128];
static int last_proto_code;
static char last_proto_msg[256];
static struct evbuffer *leftover;

static void
on_close(struct rp_conn *c, const char *why, void *ctx)
{
	n_close++;
	snprintf(close_why, sizeof(close_why), "%s", why);
	ck_assert_int_eq(rp_conn_pending(c), 0); /* already failed */
	ck_assert_uint_eq(rp_conn_state(c), RP_ST_CLOSED);
}

static void
on_protocol_error(struct rp_conn *c, int code, const char *msg, void *ctx)
{
	n_proto++;
	last_proto_code = code;
	snprintf(last_proto_msg, sizeof(last_proto_msg), "%s", msg);
}

static const struct rp_conn_cbs test_cbs = {
    .on_close = on_close,
    .on_protocol_error = on_protocol_error,
};

static void
h_hello(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	n_handled++;
	rp_conn_set_state(c, RP_ST_HELLO);
	ck_assert_int_eq(
	    rp_conn_reply(
	        c, id, json_pack("{s:i}", "version", RP_PROTOCOL_VERSION)),
	    0);
}

static void
h_echo(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	n_handled++;
	ck_assert_ptr_nonnull(params);
	if (id == NULL)
		n_notified++;
	/* On a notification this must send nothing and succeed. */
	ck_assert_int_eq(rp_conn_reply(c, id, json_incref(params)), 0);
}

static void
h_plain(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	n_handled++;
	rp_conn_reply(c, id, json_string("ok"));
}

static void
h_close_me(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	n_handled++;
	rp_conn_reply(c, id, json_true());
	rp_conn_close(c, "handler said so");
	/* Drop the test's own reference too, inside dispatch. */
	rp_conn_unref(conn);
	conn = NULL;
}

static json_t *later_id;
static struct rp_conn *later_conn;

static void
h_later(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	n_handled++;
	later_id = json_incref(id);
	rp_conn_ref(c);
	later_conn = c;
}

static void
h_relay(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	n_handled++;
	rp_conn_reply(c, id, json_pack("{s:s}", "mode", "raw"));
	ck_assert_ptr_null(rp_conn_detach(c, leftover)); /* not TLS */
	ck_assert_uint_eq(rp_conn_state(c), RP_ST_RAW);
}

static void
h_big(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	char *s = malloc(RP_LINE_MAX + 10);

	n_handled++;
	memset(s, 'b', RP_LINE_MAX + 9);
	s[RP_LINE_MAX + 9] = '\0';
	ck_assert_int_eq(
	    rp_conn_reply(c, id, json_string(s)), RP_ERR_LINE_TOO_LONG);
	free(s);
}

static const struct rp_method methods[] = {
    {"hello", RP_ST_NEW, "{version:i, role:s}", 0, h_hello},
    {"echo", RP_ST_ANY, NULL, RP_M_NOTIFY_OK, h_echo},
    {"req.only", RP_ST_ANY, NULL, RP_M_REQUEST_ONLY, h_plain},
    {"agent.only", RP_ST_AGENT, "{name:s, tags?:[s], opt?:{x:i}}", 0, h_plain},
    {"helper.only", RP_ST_HELPER, NULL, 0, h_plain},
    {"hello.only", RP_ST_HELLO, NULL, 0, h_plain},
    {"close.me", RP_ST_ANY, NULL, 0, h_close_me},
    {"later", RP_ST_ANY, NULL, 0, h_later},
    {"relay.join", RP_ST_ANY, NULL, 0, h_relay},
    {"big", RP_ST_ANY, NULL, 0, h_big},
};

static void
peer_read_cb(struct bufferevent *bev, void *arg)
{
	evbuffer_add_buffer(peer_in, bufferevent_get_input(bev));
}

static void
peer_event_cb(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		peer_eof = 1;
}

static void
make_conn(unsigned max_bad, unsigned timeout_ms)
{
	struct rp_conn_opts o = {
	    .methods = methods,
	    .nmethods = sizeof(methods) / sizeof(methods[0]),
	    .cbs = &test_cbs,
	    .ctx = NULL,
	    .max_line = 0,
	    .default_timeout_ms = timeout_ms,
	    .max_bad_lines = max_bad,
	};
	int fds[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	evutil_make_socket_nonblocking(fds[0]);
	evutil_make_socket_nonblocking(fds[1]);
	tio = calloc(1, sizeof(*tio));
	tio->bev = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	tio->conn = conn = rp_conn_new(base, &tio_ops, tio, &o);
	ck_assert_ptr_nonnull(conn);
	bufferevent_setcb(
	    tio->bev, tio_read_cb, tio_write_cb, tio_event_cb, tio);
	bufferevent_enable(tio->bev, EV_READ | EV_WRITE);
	tio->reading = 1;

	peer = bufferevent_socket_new(base, fds[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(peer, peer_read_cb, NULL, peer_event_cb, NULL);
	bufferevent_enable(peer, EV_READ | EV_WRITE);
}

static void
setup(void)
{
	base = event_base_new();
	peer_in = evbuffer_new();
	leftover = evbuffer_new();
	peer_eof = n_close = n_proto = n_handled = n_notified = 0;
	last_proto_code = 0;
	close_why[0] = '\0';
	later_id = NULL;
	later_conn = NULL;
	make_conn(100, 0);
}

static void
teardown(void)
{
	if (conn != NULL)
		rp_conn_unref(conn);
	if (peer != NULL)
		bufferevent_free(peer);
	/* Closing the peer lets the transport see EOF and free itself. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_loop(base, EVLOOP_NONBLOCK);
	evbuffer_free(peer_in);
	evbuffer_free(leftover);
	event_base_free(base);
}

/* ---- loop helpers ------------------------------------------------------ */

static int timed_out;

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	timed_out = 1;
}

/* Runs the loop until cond() or ms elapsed; returns cond(). */
static int
run_until(int (*cond)(void), int ms)
{
	struct event *ev = evtimer_new(base, deadline_cb, NULL);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	timed_out = 0;
	evtimer_add(ev, &tv);
	while (!cond() && !timed_out)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(ev);
	return cond();
}

static int
have_line(void)
{
	struct evbuffer_ptr p = evbuffer_search(peer_in, "\n", 1, NULL);

	return p.pos >= 0;
}

static int
is_eof(void)
{
	return peer_eof;
}

static int
never(void)
{
	return 0;
}

static int
closed_once(void)
{
	return n_close == 1;
}

static int
proto_seen(void)
{
	return n_proto > 0;
}

static void
peer_send(const char *s)
{
	bufferevent_write(peer, s, strlen(s));
}

/* Next line the peer received, parsed; fails the test after 2 s. */
static json_t *
peer_recv(void)
{
	char *line;
	size_t n;
	json_t *j;
	json_error_t e;

	ck_assert_msg(run_until(have_line, 2000), "no line from rp_conn");
	line = evbuffer_readln(peer_in, &n, EVBUFFER_EOL_LF);
	j = json_loads(line, 0, &e);
	ck_assert_msg(j != NULL, "not JSON: %s", line);
	free(line);
	return j;
}

/* No line arrives within ms. */
static void
peer_expect_silence(int ms)
{
	run_until(never, ms);
	ck_assert_msg(!have_line(), "unexpected line from rp_conn");
}

/* Checks an error reply: code, data.reason, id (JSON text), message part. */
static void
check_error_reason(json_t *r, int code, const char *reason, const char *id,
    const char *msg_part)
{
	json_t *e = json_object_get(r, "error");
	json_t *want_id = json_loads(id, JSON_DECODE_ANY, NULL);
	const char *msg;

	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(json_integer_value(json_object_get(e, "code")), code);
	ck_assert_str_eq(json_string_value(json_object_get(
	                     json_object_get(e, "data"), "reason")),
	    reason);
	ck_assert_msg(json_equal(json_object_get(r, "id"), want_id),
	    "id mismatch, want %s", id);
	msg = json_string_value(json_object_get(e, "message"));
	ck_assert_ptr_nonnull(msg);
	ck_assert_msg(strstr(msg, msg_part) != NULL,
	    "message \"%s\" lacks \"%s\"", msg, msg_part);
	ck_assert_str_eq(
	    json_string_value(json_object_get(r, "jsonrpc")), "2.0");
	json_decref(want_id);
	json_decref(r);
}

static void
check_error(json_t *r, int code, const char *id, const char *msg_part)
{
	check_error_reason(r, code, rp_err_name(code), id, msg_part);
}

static void
check_result_str(json_t *r, const char *id, const char *want)
{
	json_t *want_id = json_loads(id, JSON_DECODE_ANY, NULL);

	ck_assert_msg(json_equal(json_object_get(r, "id"), want_id), "id");
	ck_assert_ptr_null(json_object_get(r, "error"));
	ck_assert_str_eq(json_string_value(json_object_get(r, "result")), want);
	json_decref(want_id);
	json_decref(r);
}

/* ---- tests: incoming --------------------------------------------------- */

START_TEST(test_hello_and_echo)
{
	json_t *r;

	ck_assert_str_eq(rp_conn_peer_id(conn), "test-peer");
	ck_assert_str_eq(rp_conn_peer_addr(conn), "socketpair");
	ck_assert_uint_eq(rp_conn_state(conn), RP_ST_NEW);
	peer_send(
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"hello\",\"params\":"
	    "{\"version\":1,\"role\":\"helper\"}}\n");
	r = peer_recv();
	ck_assert_int_eq(json_integer_value(json_object_get(r, "id")), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(
	                     json_object_get(r, "result"), "version")),
	    1);
	json_decref(r);
	ck_assert_uint_eq(rp_conn_state(conn), RP_ST_HELLO);

	/* CRLF, two messages in one write, string id. */
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"echo\","
	          "\"params\":[1,2]}\r\n"
	          "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}\n");
	r = peer_recv();
	ck_assert_str_eq(json_string_value(json_object_get(r, "id")), "x");
	ck_assert_int_eq(json_array_size(json_object_get(r, "result")), 2);
	json_decref(r);
	r = peer_recv();
	/* absent params reach the handler as {} */
	ck_assert(json_is_object(json_object_get(r, "result")));
	json_decref(r);
	ck_assert_int_eq(n_handled, 3);
	ck_assert_int_eq(n_proto, 0);
}
END_TEST

/* Every kind of malformed line gets the right error, and the connection
 * keeps working afterwards. */
START_TEST(test_malformed_lines)
{
	char *big = malloc(RP_LINE_MAX + 20);

	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\n");
	check_error(
	    peer_recv(), RP_ERR_PARSE, "null", "invalid JSON at line 1");

	peer_send("\xC3\x28 bad utf8\n");
	check_error(peer_recv(), RP_ERR_PARSE, "null",
	    "invalid UTF-8 at byte "
	    "offset 1");
	peer_send("{\"a\":\"\xED\xA0\x80\"}\n"); /* surrogate */
	check_error(peer_recv(), RP_ERR_PARSE, "null", "offset 7");
	peer_send("{\"a\":\"\xF4\x90\x80\x80\"}\n"); /* > U+10FFFF */
	check_error(peer_recv(), RP_ERR_PARSE, "null", "offset 7");

	memset(big, ' ', RP_LINE_MAX + 10);
	big[RP_LINE_MAX + 10] = '\n';
	big[RP_LINE_MAX + 11] = '\0';
	peer_send(big);
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"req.only\"}\n");
	check_error_reason(peer_recv(), RP_ERR_INVALID_REQUEST, "line_too_long",
	    "null", "line longer than 65536");
	check_result_str(peer_recv(), "9", "ok"); /* next line fine */

	peer_send("[]\n");
	check_error(peer_recv(), RP_ERR_INVALID_REQUEST, "null",
	    "batches are not supported");
	peer_send("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"}]\n");
	check_error(peer_recv(), RP_ERR_INVALID_REQUEST, "null",
	    "batches are not supported");
	peer_send("{\"id\":4,\"method\":\"echo\"}\n");
	check_error(peer_recv(), RP_ERR_INVALID_REQUEST, "4", "jsonrpc");
	peer_send("{\"jsonrpc\":\"1.0\",\"id\":\"s\",\"method\":\"echo\"}\n");
	check_error(peer_recv(), RP_ERR_INVALID_REQUEST, "\"s\"", "2.0");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"echo\"}\n");
	check_error(peer_recv(), RP_ERR_INVALID_REQUEST, "null", "id must");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"rpc.x\"}\n");
	check_error(peer_recv(), RP_ERR_INVALID_REQUEST, "5", "reserved");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"echo\","
	          "\"params\":\"s\"}\n");
	check_error(peer_recv(), RP_ERR_INVALID_REQUEST, "6", "params");
	/* JSON-RPC's own example: invalid request without id is answered */
	peer_send("{\"jsonrpc\":\"2.0\",\"method\":1,\"params\":\"bar\"}\n");
	check_error(peer_recv(), RP_ERR_INVALID_REQUEST, "null", "method");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"x\"}\n");
	check_error(peer_recv(), RP_ERR_INVALID_REQUEST, "null", "duplicate");

	/* Peer bytes quoted in messages reach the owner without control
	 * characters (they end up in logs). */
	peer_send("{\"jsonrpc\":\x1b[31m}\n");
	json_decref(peer_recv());
	for (const char *q = last_proto_msg; *q != '\0'; q++)
		ck_assert_int_ge((unsigned char)*q, 0x20);
	ck_assert_ptr_nonnull(strstr(last_proto_msg, "invalid JSON"));

	ck_assert_int_eq(n_proto, 15);
	ck_assert_int_eq(n_close, 0);
	ck_assert(rp_conn_is_open(conn));
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"req.only\"}\n");
	check_result_str(peer_recv(), "10", "ok");
	free(big);
}
END_TEST

/* A malformed response is never answered (no error ping-pong). */
START_TEST(test_bad_response_not_answered)
{
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":1,\"error\":"
	          "{\"code\":1,\"message\":\"m\"}}\n"
	          "{\"jsonrpc\":\"2.0\",\"id\":6,\"result\":1,\"bogus\":1}\n"
	          "{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"req.only\"}\n");
	check_result_str(peer_recv(), "11", "ok");
	ck_assert_int_eq(n_proto, 2);
	/* Unknown id, and an error with id null: logged, not answered. */
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":77,\"result\":1}\n"
	          "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,"
	          "\"message\":\"you sent junk\"}}\n"
	          "{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"req.only\"}\n");
	check_result_str(peer_recv(), "12", "ok");
	ck_assert_int_eq(n_proto, 4);
	ck_assert_int_eq(last_proto_code, RP_ERR_NOT_FOUND);
}
END_TEST

START_TEST(test_notifications)
{
	/* Allowed notification: handled, never answered. */
	peer_send("{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{}}\n");
	/* Unknown method, method without RP_M_NOTIFY_OK, bad state: all
	 * reported, none answered. */
	peer_send("{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}\n");
	peer_send("{\"jsonrpc\":\"2.0\",\"method\":\"req.only\"}\n");
	peer_send("{\"jsonrpc\":\"2.0\",\"method\":\"hello\"}\n");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"req.only\"}\n");
	check_result_str(peer_recv(), "3", "ok"); /* the first line back */
	ck_assert_int_eq(n_notified, 1);
	ck_assert_int_eq(n_proto, 3);
	ck_assert_int_eq(n_handled, 2);
	peer_expect_silence(50);
}
END_TEST

START_TEST(test_unknown_method)
{
	peer_send(
	    "{\"jsonrpc\":\"2.0\",\"id\":\"u1\",\"method\":\"no.such\"}\n");
	check_error(peer_recv(), RP_ERR_METHOD_NOT_FOUND, "\"u1\"", "no.such");
	ck_assert_int_eq(last_proto_code, RP_ERR_METHOD_NOT_FOUND);
	ck_assert_int_eq(n_handled, 0);
}
END_TEST

START_TEST(test_wrong_state)
{
	/* Pre-auth state, method needs an agent: not authenticated. */
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.only\","
	          "\"params\":{\"name\":\"x\"}}\n");
	check_error(peer_recv(), RP_ERR_NOT_AUTHENTICATED, "1", "state new");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"hello.only\"}\n");
	check_error(peer_recv(), RP_ERR_WRONG_STATE, "2", "state new");
	rp_conn_set_state(conn, RP_ST_AUTHING);
	peer_send(
	    "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"helper.only\"}\n");
	check_error(peer_recv(), RP_ERR_NOT_AUTHENTICATED, "3", "authing");

	/* Authenticated as agent: helper methods are the wrong state, not
	 * "not authenticated". */
	rp_conn_set_state(conn, RP_ST_AGENT);
	peer_send(
	    "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"helper.only\"}\n");
	check_error(peer_recv(), RP_ERR_WRONG_STATE, "4", "state agent");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"hello\","
	          "\"params\":{\"version\":1,\"role\":\"agent\"}}\n");
	check_error(peer_recv(), RP_ERR_WRONG_STATE, "5", "hello not allowed");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"agent.only\","
	          "\"params\":{\"name\":\"x\"}}\n");
	check_result_str(peer_recv(), "6", "ok");
	ck_assert_int_eq(n_handled, 1);
}
END_TEST

START_TEST(test_bad_params)
{
	rp_conn_set_state(conn, RP_ST_AGENT);
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.only\","
	          "\"params\":{\"name\":5}}\n");
	check_error(peer_recv(), RP_ERR_INVALID_PARAMS, "1",
	    "invalid params for agent.only: member \"name\": Expected string, "
	    "got integer");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"agent.only\","
	          "\"params\":[\"x\"]}\n");
	check_error(peer_recv(), RP_ERR_INVALID_PARAMS, "2", "Expected object");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"agent.only\"}\n");
	check_error(peer_recv(), RP_ERR_INVALID_PARAMS, "3", "name");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"agent.only\","
	          "\"params\":{\"name\":\"a\",\"tags\":[1]}}\n");
	check_error(peer_recv(), RP_ERR_INVALID_PARAMS, "4", "tags");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"agent.only\","
	          "\"params\":{\"name\":\"a\",\"opt\":{\"x\":\"1\"}}}\n");
	check_error(peer_recv(), RP_ERR_INVALID_PARAMS, "7",
	    "member \"opt\": Expected integer, got string");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"agent.only\","
	          "\"params\":{\"name\":\"a\",\"opt\":{}}}\n");
	check_error(peer_recv(), RP_ERR_INVALID_PARAMS, "8", "x");
	/* extra members are fine (forward compatibility) */
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"agent.only\","
	          "\"params\":{\"name\":\"a\",\"tags\":[\"t\"],\"new\":1}}\n");
	check_result_str(peer_recv(), "5", "ok");
	ck_assert_int_eq(n_handled, 1);
}
END_TEST

/* Too many bad lines in a row close the connection; a good line resets. */
START_TEST(test_max_bad_lines)
{
	rp_conn_unref(conn);
	bufferevent_free(peer);
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(n_close, 1);
	n_close = 0;
	make_conn(3, 0);

	peer_send("junk\njunk\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
	          "\"req.only\"}\njunk\njunk\n");
	json_decref(peer_recv());
	json_decref(peer_recv());
	check_result_str(peer_recv(), "1", "ok");
	json_decref(peer_recv());
	json_decref(peer_recv());
	ck_assert(rp_conn_is_open(conn));
	/* unknown methods count too */
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"nope\"}\n"
	          "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"req.only\"}\n");
	check_error(peer_recv(), RP_ERR_METHOD_NOT_FOUND, "2", "nope");
	ck_assert(!rp_conn_is_open(conn));
	ck_assert(run_until(is_eof, 2000));
	ck_assert_int_eq(n_close, 1);
	ck_assert_ptr_nonnull(strstr(close_why, "too many malformed lines"));
	ck_assert(!rp_conn_is_open(conn));
	ck_assert(run_until(is_eof, 2000));
	ck_assert(!have_line()); /* id 3 was not processed */
}
END_TEST

/* A handler that closes the connection and drops the last outside
 * reference during dispatch; the lines after it are not processed. */
START_TEST(test_close_in_handler)
{
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"close.me\"}\n"
	          "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"req.only\"}\n");
	json_t *r = peer_recv();

	ck_assert(json_is_true(json_object_get(r, "result")));
	json_decref(r);
	ck_assert(run_until(is_eof, 2000));
	ck_assert_int_eq(n_handled, 1);
	ck_assert_int_eq(n_close, 1);
	ck_assert_str_eq(close_why, "handler said so");
	ck_assert(!have_line());
	ck_assert_ptr_null(conn); /* freed by now; ASan checks the rest */
}
END_TEST

static int
later_set(void)
{
	return later_conn != NULL;
}

/* Replies after close are no-ops returning RP_ERR_CLOSED. */
START_TEST(test_reply_after_close)
{
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"later\"}\n");
	ck_assert(run_until(later_set, 2000));
	ck_assert_ptr_eq(later_conn, conn);
	rp_conn_close(conn, "bye");
	ck_assert(run_until(is_eof, 2000));
	ck_assert_int_eq(n_close, 1);
	ck_assert_int_eq(
	    rp_conn_reply(later_conn, later_id, json_true()), RP_ERR_CLOSED);
	ck_assert_int_eq(
	    rp_conn_error(later_conn, later_id, RP_ERR_DECLINED, NULL, NULL),
	    RP_ERR_CLOSED);
	ck_assert_int_eq(rp_conn_notify(later_conn, "x", NULL), RP_ERR_CLOSED);
	ck_assert_int_eq(
	    rp_conn_call(later_conn, "x", NULL, 0, NULL, NULL), RP_ERR_CLOSED);
	rp_conn_close(later_conn, "again"); /* harmless */
	ck_assert_int_eq(n_close, 1);
	ck_assert(!have_line());
	json_decref(later_id);
	rp_conn_unref(later_conn);
}
END_TEST

/* The caller may drop its reference while the peer is still connected:
 * the transport's reference keeps the connection working. */
START_TEST(test_caller_unref_early)
{
	rp_conn_unref(conn);
	conn = NULL;
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"req.only\"}\n");
	check_result_str(peer_recv(), "1", "ok");
	bufferevent_free(peer);
	peer = NULL;
	ck_assert(run_until(closed_once, 2000));
	ck_assert_str_eq(close_why, "peer closed");
}
END_TEST

START_TEST(test_big_reply)
{
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"big\"}\n");
	check_error_reason(
	    peer_recv(), RP_ERR_INTERNAL, "line_too_long", "8", "too large");
	ck_assert(rp_conn_is_open(conn));
}
END_TEST

/* Output backed up: input waits until the transport drains. */
START_TEST(test_backpressure)
{
	tio->fake_pending = RP_CONN_OUT_HIGH + 1;
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"req.only\"}\n"
	          "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"req.only\"}\n"
	          "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"req.only\"}\n");
	check_result_str(peer_recv(), "1", "ok");
	peer_expect_silence(100);
	ck_assert_int_eq(n_handled, 1);
	ck_assert_int_eq(tio->reading, 0);
	rp_conn_drained(conn); /* still backed up: nothing happens */
	peer_expect_silence(20);
	ck_assert_int_eq(n_handled, 1);
	tio->fake_pending = 0;
	rp_conn_drained(conn);
	ck_assert_int_eq(tio->reading, 1);
	check_result_str(peer_recv(), "2", "ok");
	check_result_str(peer_recv(), "3", "ok");
	ck_assert_int_eq(n_handled, 3);
}
END_TEST

/* Relay: the reply goes out, bytes after the line are handed over. */
START_TEST(test_detach)
{
	static const char msg[] =
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"relay.join\"}\n"
	    "RAW\x00\xff bytes\n{\"not\":\"rpc\"}\n";
	const char *raw = strchr(msg, '\n') + 1;
	size_t rawlen = sizeof(msg) - 1 - (size_t)(raw - msg);
	char got[64];
	json_t *r, *id;

	bufferevent_write(peer, msg, sizeof(msg) - 1);
	r = peer_recv();
	ck_assert_str_eq(json_string_value(json_object_get(
	                     json_object_get(r, "result"), "mode")),
	    "raw");
	json_decref(r);
	ck_assert_uint_eq(rp_conn_state(conn), RP_ST_RAW);
	ck_assert(!rp_conn_is_open(conn));
	ck_assert_int_eq(n_handled, 1);
	ck_assert_int_eq(n_proto, 0);
	ck_assert_int_eq(n_close, 0); /* not called on detach */
	/* Everything after the relay.join line, byte for byte. */
	ck_assert_uint_eq(evbuffer_get_length(leftover), rawlen);
	evbuffer_copyout(leftover, got, rawlen);
	ck_assert_int_eq(memcmp(got, raw, rawlen), 0);
	id = json_integer(1);
	ck_assert_int_eq(rp_conn_reply(conn, id, NULL), RP_ERR_CLOSED);
	json_decref(id);
	/* The transport now belongs to the test (as the relay would). */
	bufferevent_free(tio->bev);
	free(tio);
	tio = NULL;
}
END_TEST

/* Detach outside dispatch (the relay's first side) while input is on hold:
 * unprocessed lines go to leftover and reading is switched back on. */
START_TEST(test_detach_paused)
{
	static const char second[] =
	    "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"req.only\"}\npartial";
	char got[128];

	tio->fake_pending = RP_CONN_OUT_HIGH + 1;
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"req.only\"}\n");
	peer_send(second);
	check_result_str(peer_recv(), "1", "ok");
	peer_expect_silence(50);
	ck_assert_int_eq(tio->reading, 0);
	ck_assert_ptr_null(rp_conn_detach(conn, leftover));
	ck_assert_int_eq(tio->reading, 1);
	ck_assert_uint_eq(evbuffer_get_length(leftover), sizeof(second) - 1);
	evbuffer_copyout(leftover, got, sizeof(second) - 1);
	ck_assert_int_eq(memcmp(got, second, sizeof(second) - 1), 0);
	ck_assert_int_eq(n_handled, 1);
	ck_assert_ptr_null(rp_conn_detach(conn, leftover)); /* once only */
	bufferevent_free(tio->bev);
	free(tio);
	tio = NULL;
}
END_TEST

/* ---- tests: outgoing calls --------------------------------------------- */

struct reply_rec {
	int calls;
	int code;
	json_t *result;
};

static void
reply_cb(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct reply_rec *r = arg;

	r->calls++;
	r->code = code;
	json_decref(r->result);
	r->result = json_incref(result);
}

static struct reply_rec *wait_rec;

static int
rec_done(void)
{
	return wait_rec->calls > 0;
}

START_TEST(test_call_timeout)
{
	struct reply_rec rec = {0};
	json_t *req;
	char line[128];

	n_proto = 0;
	ck_assert_int_eq(
	    rp_conn_call(conn, "novice.prompt",
	        json_pack("{s:s}", "helper", "h"), 50, reply_cb, &rec),
	    0);
	ck_assert_uint_eq(rp_conn_pending(conn), 1);
	req = peer_recv();
	ck_assert_str_eq(
	    json_string_value(json_object_get(req, "method")), "novice.prompt");
	ck_assert_str_eq(json_string_value(json_object_get(
	                     json_object_get(req, "params"), "helper")),
	    "h");
	wait_rec = &rec;
	ck_assert(run_until(rec_done, 2000));
	ck_assert_int_eq(rec.code, RP_ERR_TIMEOUT);
	ck_assert_ptr_null(rec.result);
	ck_assert_uint_eq(rp_conn_pending(conn), 0);

	/* A late answer is ignored: the callback does not run again, and
	 * it is no protocol error (the peer was slow, not wrong). */
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":true}\n",
	    (long long)json_integer_value(json_object_get(req, "id")));
	peer_send(line);
	ck_assert(!run_until(proto_seen, 200));
	ck_assert_int_eq(rec.calls, 1);
	ck_assert(!have_line()); /* not answered */
	/* The same answer again is a stray response. */
	peer_send(line);
	ck_assert(run_until(proto_seen, 2000));
	ck_assert_int_eq(last_proto_code, RP_ERR_NOT_FOUND);
	ck_assert_int_eq(rec.calls, 1);
	json_decref(req);
}
END_TEST

static int
all_timed_out(void)
{
	return rp_conn_pending(conn) == 0;
}

/*
 * Late answers (to calls that timed out or were cancelled) do not count
 * toward max_bad_lines: more of them than the limit leave the connection
 * open. Stray responses still count and close it.
 */
START_TEST(test_late_answers_not_counted)
{
	struct reply_rec rec[6] = {{0}};
	json_int_t ids[6];
	char line[128];
	json_t *req;

	rp_conn_unref(conn);
	bufferevent_free(peer);
	event_base_loop(base, EVLOOP_NONBLOCK);
	n_close = 0;
	make_conn(3, 0);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(rp_conn_call(conn, "novice.prompt", NULL, 30,
		                     reply_cb, &rec[i]),
		    0);
	ck_assert_int_eq(rp_conn_call(conn, "control.prompt", NULL, 10000,
	                     reply_cb, &rec[5]),
	    0);
	for (int i = 0; i < 6; i++) {
		req = peer_recv();
		ids[i] = json_integer_value(json_object_get(req, "id"));
		json_decref(req);
	}
	rp_conn_cancel_calls(conn, &rec[5]); /* e.g. the ticket ended */
	ck_assert(run_until(all_timed_out, 2000));
	for (int i = 0; i < 6; i++)
		ck_assert_int_eq(rec[i].calls, 1);
	ck_assert_int_eq(rec[0].code, RP_ERR_TIMEOUT);
	ck_assert_int_eq(rec[5].code, RP_ERR_CLOSED);

	/* Six late answers, twice the limit of 3: results and an error. */
	for (int i = 0; i < 6; i++) {
		if (i == 2)
			snprintf(line, sizeof(line),
			    "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"error\":{"
			    "\"code\":1017,\"message\":\"busy\"}}\n",
			    (long long)ids[i]);
		else
			snprintf(line, sizeof(line),
			    "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":"
			    "{\"answer\":\"accept\"}}\n",
			    (long long)ids[i]);
		peer_send(line);
	}
	run_until(never, 100);
	ck_assert(rp_conn_is_open(conn));
	ck_assert_int_eq(n_proto, 0);
	ck_assert_int_eq(n_close, 0);
	ck_assert(!have_line());
	for (int i = 0; i < 6; i++)
		ck_assert_int_eq(rec[i].calls, 1);

	/* Answers to ids never issued, or answered twice, are strays. */
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":1}\n"
	    "{\"jsonrpc\":\"2.0\",\"id\":5000,\"result\":1}\n"
	    "{\"jsonrpc\":\"2.0\",\"id\":5001,\"result\":1}\n",
	    (long long)ids[0]);
	peer_send(line);
	ck_assert(run_until(is_eof, 2000));
	ck_assert_int_eq(n_close, 1);
	ck_assert_int_eq(n_proto, 3);
	ck_assert_ptr_nonnull(strstr(close_why, "too many malformed lines"));
	for (int i = 0; i < 6; i++) {
		ck_assert_int_eq(rec[i].calls, 1);
		json_decref(rec[i].result);
	}
}
END_TEST

/* Out-of-order answers reach the right callbacks. */
START_TEST(test_call_correlation)
{
	struct reply_rec rec[3] = {{0}};
	json_t *req[3];
	char line[256];

	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(
		    rp_conn_call(conn, "echo", json_pack("{s:i}", "n", i), 0,
		        reply_cb, &rec[i]),
		    0);
	ck_assert_uint_eq(rp_conn_pending(conn), 3);
	for (int i = 0; i < 3; i++)
		req[i] = peer_recv();
	/* Ids are distinct integers. */
	ck_assert(!json_equal(
	    json_object_get(req[0], "id"), json_object_get(req[1], "id")));
	/* Answer 2, an unknown id, then 0 with an error, then 1. */
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":{\"n\":%lld}}\n"
	    "{\"jsonrpc\":\"2.0\",\"id\":\"zz\",\"result\":0}\n",
	    json_integer_value(json_object_get(req[2], "id")),
	    json_integer_value(
	        json_object_get(json_object_get(req[2], "params"), "n")));
	peer_send(line);
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"error\":{\"code\":1007,"
	    "\"message\":\"declined\",\"data\":{\"reason\":\"declined\"}}}\n",
	    json_integer_value(json_object_get(req[0], "id")));
	peer_send(line);
	wait_rec = &rec[0];
	ck_assert(run_until(rec_done, 2000));
	ck_assert_int_eq(rec[2].calls, 1);
	ck_assert_int_eq(rec[2].code, 0);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(rec[2].result, "n")), 2);
	ck_assert_int_eq(rec[0].code, RP_ERR_DECLINED);
	ck_assert_str_eq(json_string_value(json_object_get(
	                     json_object_get(rec[0].result, "data"), "reason")),
	    "declined");
	ck_assert_int_eq(rec[1].calls, 0);
	ck_assert_uint_eq(rp_conn_pending(conn), 1);

	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":{\"n\":1}}\n",
	    json_integer_value(json_object_get(req[1], "id")));
	peer_send(line);
	wait_rec = &rec[1];
	ck_assert(run_until(rec_done, 2000));
	ck_assert_int_eq(rec[1].code, 0);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(rec[1].result, "n")), 1);
	ck_assert_uint_eq(rp_conn_pending(conn), 0);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(rec[i].calls, 1);
		json_decref(rec[i].result);
		json_decref(req[i]);
	}
}
END_TEST

/* Pending calls fail with RP_ERR_CLOSED exactly once, before on_close. */
static int close_seen_by_cb;

static void
closed_cb(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct reply_rec *r = arg;

	r->calls++;
	r->code = code;
	if (n_close != 0)
		close_seen_by_cb = 1;
	/* Calling again from the callback must fail cleanly. */
	ck_assert_int_eq(
	    rp_conn_call(c, "x", NULL, 0, closed_cb, arg), RP_ERR_CLOSED);
}

START_TEST(test_pending_failed_on_close)
{
	struct reply_rec rec[3] = {{0}};

	close_seen_by_cb = 0;
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(
		    rp_conn_call(conn, "m", NULL, 10000, closed_cb, &rec[i]),
		    0);
	rp_conn_close(conn, "shutdown");
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(rec[i].calls, 1);
		ck_assert_int_eq(rec[i].code, RP_ERR_CLOSED);
	}
	ck_assert_uint_eq(rp_conn_pending(conn), 0);
	ck_assert(run_until(is_eof, 2000));
	ck_assert_int_eq(n_close, 1);
	ck_assert_str_eq(close_why, "shutdown");
	ck_assert_int_eq(close_seen_by_cb, 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(rec[i].calls, 1);
}
END_TEST

START_TEST(test_pending_failed_on_peer_close)
{
	struct reply_rec rec[2] = {{0}};

	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(
		    rp_conn_call(conn, "m", NULL, 10000, reply_cb, &rec[i]), 0);
	bufferevent_free(peer);
	peer = NULL;
	wait_rec = &rec[1];
	ck_assert(run_until(rec_done, 2000));
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(rec[i].calls, 1);
		ck_assert_int_eq(rec[i].code, RP_ERR_CLOSED);
	}
	ck_assert_int_eq(n_close, 1);
	ck_assert_str_eq(close_why, "peer closed");
	ck_assert_uint_eq(rp_conn_state(conn), RP_ST_CLOSED);
}
END_TEST

START_TEST(test_cancel_calls)
{
	struct reply_rec a = {0}, b = {0};

	ck_assert_int_eq(rp_conn_call(conn, "m", NULL, 0, reply_cb, &a), 0);
	ck_assert_int_eq(rp_conn_call(conn, "m", NULL, 0, reply_cb, &b), 0);
	ck_assert_int_eq(rp_conn_call(conn, "m", NULL, 0, reply_cb, &a), 0);
	rp_conn_cancel_calls(conn, &a);
	ck_assert_int_eq(a.calls, 2);
	ck_assert_int_eq(a.code, RP_ERR_CLOSED);
	ck_assert_int_eq(b.calls, 0);
	ck_assert_uint_eq(rp_conn_pending(conn), 1);
	ck_assert(rp_conn_is_open(conn));
	rp_conn_cancel_calls(conn, &b); /* b lives on this stack */
	ck_assert_int_eq(b.calls, 1);
	ck_assert_uint_eq(rp_conn_pending(conn), 0);
}
END_TEST

/* Stray responses are not answered but count as bad lines; a response
 * that matches a call resets the count. */
START_TEST(test_stray_responses_close)
{
	struct reply_rec rec = {0};
	json_t *req;
	char line[512];

	rp_conn_unref(conn);
	bufferevent_free(peer);
	event_base_loop(base, EVLOOP_NONBLOCK);
	n_close = 0;
	make_conn(3, 0);
	ck_assert_int_eq(rp_conn_call(conn, "m", NULL, 0, reply_cb, &rec), 0);
	req = peer_recv();
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":1000,\"result\":1}\n"
	    "{\"jsonrpc\":\"2.0\",\"id\":1001,\"result\":1}\n"
	    "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":1}\n"
	    "{\"jsonrpc\":\"2.0\",\"id\":1002,\"result\":1}\n"
	    "{\"jsonrpc\":\"2.0\",\"id\":1003,\"result\":1}\n",
	    json_integer_value(json_object_get(req, "id")));
	peer_send(line);
	wait_rec = &rec;
	ck_assert(run_until(rec_done, 2000));
	ck_assert_int_eq(rec.code, 0);
	run_until(never, 50);
	ck_assert(rp_conn_is_open(conn)); /* 2, reset, 2: still open */
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1004,\"result\":1}\n");
	ck_assert(run_until(is_eof, 2000));
	ck_assert_int_eq(n_close, 1);
	ck_assert(!have_line()); /* none of them was answered */
	json_decref(req);
	json_decref(rec.result);
}
END_TEST

START_TEST(test_call_too_long)
{
	char *s = malloc(RP_LINE_MAX + 1);

	memset(s, 'q', RP_LINE_MAX);
	s[RP_LINE_MAX] = '\0';
	ck_assert_int_eq(rp_conn_call(conn, "m", json_pack("{s:s}", "v", s), 0,
	                     reply_cb, NULL),
	    RP_ERR_LINE_TOO_LONG);
	ck_assert_uint_eq(rp_conn_pending(conn), 0);
	ck_assert_int_eq(rp_conn_notify(conn, "m", json_pack("{s:s}", "v", s)),
	    RP_ERR_LINE_TOO_LONG);
	free(s);
	ck_assert_int_eq(rp_conn_notify(conn, "offer.update",
	                     json_pack("{s:s}", "state", "prompting")),
	    0);
	json_t *r = peer_recv();
	ck_assert_ptr_null(json_object_get(r, "id"));
	ck_assert_str_eq(
	    json_string_value(json_object_get(r, "method")), "offer.update");
	json_decref(r);
}
END_TEST

START_TEST(test_methods_check)
{
	char err[256];
	struct rp_method bad[2] = {
	    {"m", RP_ST_ANY, "{s:s}", 0, h_plain},
	};

	ck_assert_int_eq(
	    rp_methods_check(methods, sizeof(methods) / sizeof(methods[0]), err,
	        sizeof(err)),
	    0);
	ck_assert_int_eq(rp_methods_check(bad, 1, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "key-less"));
	bad[0].params = "{a:s";
	ck_assert_int_eq(rp_methods_check(bad, 1, err, sizeof(err)), -1);
	bad[0].params = "{a:s]}";
	ck_assert_int_eq(rp_methods_check(bad, 1, err, sizeof(err)), -1);
	bad[0].params = "{a:q}"; /* jansson rejects the format */
	ck_assert_int_eq(rp_methods_check(bad, 1, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "params spec"));
	bad[0].params = "{a s}";
	ck_assert_int_eq(rp_methods_check(bad, 1, err, sizeof(err)), -1);
	bad[0].params = "{a:s, b?:[{c:i, d:[s]}], e:o !}";
	ck_assert_int_eq(rp_methods_check(bad, 1, err, sizeof(err)), 0);
	bad[1] = bad[0];
	ck_assert_int_eq(rp_methods_check(bad, 2, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "twice"));
	bad[1].name = "rpc.x";
	ck_assert_int_eq(rp_methods_check(bad, 2, err, sizeof(err)), -1);
	bad[1].name = "n";
	bad[1].states = 0;
	ck_assert_int_eq(rp_methods_check(bad, 2, err, sizeof(err)), -1);
}
END_TEST

/* A broken spec is our bug: -32603, not counted against the peer. */
static const struct rp_method broken_methods[] = {
    {"broken", RP_ST_ANY, "{a:q}", 0, h_plain},
    {"legacy", RP_ST_ANY, "{s:s}", 0, h_plain},
};

START_TEST(test_broken_spec_internal_error)
{
	struct rp_conn_opts o = {
	    .methods = broken_methods, .nmethods = 2, .cbs = &test_cbs};

	rp_conn_unref(conn);
	bufferevent_free(peer);
	event_base_loop(base, EVLOOP_NONBLOCK);
	make_conn(1, 0);
	/* swap the table: make_conn used the normal one */
	rp_conn_unref(conn);
	bufferevent_free(peer);
	event_base_loop(base, EVLOOP_NONBLOCK);
	{
		int fds[2];

		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
		evutil_make_socket_nonblocking(fds[0]);
		evutil_make_socket_nonblocking(fds[1]);
		tio = calloc(1, sizeof(*tio));
		tio->bev =
		    bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
		tio->conn = conn = rp_conn_new(base, &tio_ops, tio, &o);
		bufferevent_setcb(
		    tio->bev, tio_read_cb, tio_write_cb, tio_event_cb, tio);
		bufferevent_enable(tio->bev, EV_READ | EV_WRITE);
		peer =
		    bufferevent_socket_new(base, fds[1], BEV_OPT_CLOSE_ON_FREE);
		bufferevent_setcb(
		    peer, peer_read_cb, NULL, peer_event_cb, NULL);
		bufferevent_enable(peer, EV_READ | EV_WRITE);
	}
	n_close = 0;
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"broken\","
	          "\"params\":{}}\n");
	check_error(peer_recv(), RP_ERR_INTERNAL, "1", "method table");
	ck_assert(rp_conn_is_open(conn)); /* max_bad_lines (8) not hit */
	ck_assert_int_eq(n_close, 0);
	ck_assert_int_eq(n_handled, 0);
	/* Key-less spec: only the container type can be checked. */
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"legacy\","
	          "\"params\":[1]}\n");
	check_error(peer_recv(), RP_ERR_INVALID_PARAMS, "2", "an object");
	peer_send("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"legacy\","
	          "\"params\":{\"x\":1}}\n");
	check_result_str(peer_recv(), "3", "ok");
	ck_assert_int_eq(n_handled, 1);
}
END_TEST

START_TEST(test_state_names)
{
	ck_assert_str_eq(rp_conn_state_name(RP_ST_NEW), "new");
	ck_assert_str_eq(rp_conn_state_name(RP_ST_HELLO), "hello");
	ck_assert_str_eq(rp_conn_state_name(RP_ST_AUTHING), "authing");
	ck_assert_str_eq(rp_conn_state_name(RP_ST_AGENT), "agent");
	ck_assert_str_eq(rp_conn_state_name(RP_ST_HELPER), "helper");
	ck_assert_str_eq(rp_conn_state_name(RP_ST_RAW), "raw");
	ck_assert_str_eq(rp_conn_state_name(RP_ST_CLOSED), "closed");
	ck_assert_ptr_null(rp_conn_tls(conn));
	rp_conn_set_data(conn, &n_close);
	ck_assert_ptr_eq(rp_conn_data(conn), &n_close);
}
END_TEST

static Suite *
conn_suite(void)
{
	Suite *s = suite_create("conn");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_hello_and_echo);
	tcase_add_test(tc, test_malformed_lines);
	tcase_add_test(tc, test_bad_response_not_answered);
	tcase_add_test(tc, test_notifications);
	tcase_add_test(tc, test_unknown_method);
	tcase_add_test(tc, test_wrong_state);
	tcase_add_test(tc, test_bad_params);
	tcase_add_test(tc, test_max_bad_lines);
	tcase_add_test(tc, test_close_in_handler);
	tcase_add_test(tc, test_reply_after_close);
	tcase_add_test(tc, test_caller_unref_early);
	tcase_add_test(tc, test_big_reply);
	tcase_add_test(tc, test_backpressure);
	tcase_add_test(tc, test_detach);
	tcase_add_test(tc, test_detach_paused);
	tcase_add_test(tc, test_call_timeout);
	tcase_add_test(tc, test_late_answers_not_counted);
	tcase_add_test(tc, test_call_correlation);
	tcase_add_test(tc, test_pending_failed_on_close);
	tcase_add_test(tc, test_pending_failed_on_peer_close);
	tcase_add_test(tc, test_cancel_calls);
	tcase_add_test(tc, test_call_too_long);
	tcase_add_test(tc, test_stray_responses_close);
	tcase_add_test(tc, test_methods_check);
	tcase_add_test(tc, test_broken_spec_internal_error);
	tcase_add_test(tc, test_state_names);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(conn_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN); /* a peer that went away is a test case */
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
