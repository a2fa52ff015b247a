/* test_msg.c - JSON-RPC 2.0 codec: validation, builders, encoder. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "rp_error.h"
#include "rp_frame.h"
#include "rp_msg.h"

/*
 * Parse cases: input line, expected return, expected kind (also on failure),
 * a substring of the error message, and the recovered id as compact JSON
 * ("" = none).
 */
static const struct pcase {
	const char *in;
	int rc;
	int kind;
	const char *msg;
	const char *id;
} pcases[] = {
    /* valid */
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"hello\",\"params\":{}}", 0,
        RP_MSG_REQUEST, "", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":\"a-b\",\"method\":\"x.y\",\"params\":[1]}",
        0, RP_MSG_REQUEST, "", "\"a-b\""},
    {"{\"jsonrpc\":\"2.0\",\"id\":-7,\"method\":\"m\"}", 0, RP_MSG_REQUEST, "",
        "-7"},
    {"{\"method\":\"m\",\"jsonrpc\":\"2.0\"}", 0, RP_MSG_NOTIFICATION, "", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":null}", 0, RP_MSG_RESULT, "",
        "3"},
    {"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":[1,2]}", 0, RP_MSG_RESULT, "",
        "3"},
    {"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,"
     "\"message\":\"x\"}}",
        0, RP_MSG_ERROR, "", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":\"q\",\"error\":{\"code\":1003,"
     "\"message\":\"no\",\"data\":{\"reason\":\"forbidden\"}}}",
        0, RP_MSG_ERROR, "", "\"q\""},
    {"  {\"jsonrpc\":\"2.0\",\"method\":\"m\"}  ", 0, RP_MSG_NOTIFICATION, "",
        ""},
    /* invalid JSON -> -32700 with position */
    {"{\"jsonrpc\":\"2.0\",", RP_ERR_PARSE, 0, "invalid JSON at line 1", ""},
    {"{\"jsonrpc\":\"2.0\",\"method\":\"m\" xyz}", RP_ERR_PARSE, 0, "column",
        ""},
    {"not json", RP_ERR_PARSE, 0, "position", ""},
    {"{\"jsonrpc\":\"2.0\",\"method\":\"m\"} {}", RP_ERR_PARSE, 0,
        "invalid JSON", ""},
    {"{\"jsonrpc\":\"2.0\",\"method\":\"a\\u0000b\"}", RP_ERR_PARSE, 0,
        "invalid JSON", ""},
    {"{'jsonrpc':'2.0'}", RP_ERR_PARSE, 0, "invalid JSON", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":99999999999999999999999,\"method\":\"m\"}",
        RP_ERR_PARSE, 0, "invalid JSON", ""},
    /* duplicate keys */
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"m\"}",
        RP_ERR_INVALID_REQUEST, 0, "duplicate key", ""},
    /* not objects, batches */
    {"[]", RP_ERR_INVALID_REQUEST, 0, "batches are not supported (empty", ""},
    {"[{\"jsonrpc\":\"2.0\",\"method\":\"m\"}]", RP_ERR_INVALID_REQUEST, 0,
        "batches are not supported", ""},
    {"[1,2,3]", RP_ERR_INVALID_REQUEST, 0, "batches", ""},
    {"1", RP_ERR_INVALID_REQUEST, 0, "must be a JSON object", ""},
    {"\"str\"", RP_ERR_INVALID_REQUEST, 0, "must be a JSON object", ""},
    {"null", RP_ERR_INVALID_REQUEST, 0, "must be a JSON object", ""},
    /* jsonrpc member */
    {"{\"id\":1,\"method\":\"m\"}", RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST,
        "missing \"jsonrpc\"", "1"},
    {"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"m\"}", RP_ERR_INVALID_REQUEST,
        RP_MSG_REQUEST, "exactly \"2.0\"", "1"},
    {"{\"jsonrpc\":2.0,\"id\":1,\"method\":\"m\"}", RP_ERR_INVALID_REQUEST,
        RP_MSG_REQUEST, "exactly \"2.0\"", "1"},
    {"{\"jsonrpc\":\"2.0 \",\"method\":\"m\"}", RP_ERR_INVALID_REQUEST,
        RP_MSG_NOTIFICATION, "exactly \"2.0\"", ""},
    /* shapes */
    {"{\"jsonrpc\":\"2.0\",\"id\":1}", RP_ERR_INVALID_REQUEST, 0, "neither",
        "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"error\":{\"code\":1,"
     "\"message\":\"m\"}}",
        RP_ERR_INVALID_REQUEST, RP_MSG_ERROR, "both", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"result\":1}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "must not carry", "1"},
    {"{\"jsonrpc\":\"2.0\",\"result\":1}", RP_ERR_INVALID_REQUEST,
        RP_MSG_RESULT, "must carry \"id\"", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":1}", RP_ERR_INVALID_REQUEST,
        RP_MSG_RESULT, "must not be null", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"params\":{}}",
        RP_ERR_INVALID_REQUEST, RP_MSG_RESULT, "\"params\"", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"parmas\":{}}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "unknown member \"parmas\"",
        "1"},
    /* error objects */
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":\"bad\"}", RP_ERR_INVALID_REQUEST,
        RP_MSG_ERROR, "must be an object", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":\"1\","
     "\"message\":\"m\"}}",
        RP_ERR_INVALID_REQUEST, RP_MSG_ERROR, "error.code", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1.5,"
     "\"message\":\"m\"}}",
        RP_ERR_INVALID_REQUEST, RP_MSG_ERROR, "error.code", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1}}",
        RP_ERR_INVALID_REQUEST, RP_MSG_ERROR, "error.message", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":2}}",
        RP_ERR_INVALID_REQUEST, RP_MSG_ERROR, "error.message", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":\"m\","
     "\"x\":1}}",
        RP_ERR_INVALID_REQUEST, RP_MSG_ERROR, "unknown member \"x\"", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":9999999999,"
     "\"message\":\"m\"}}",
        RP_ERR_INVALID_REQUEST, RP_MSG_ERROR, "out of range", "1"},
    /* ids */
    {"{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"m\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "must not be null", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"m\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "fractional", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"m\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "fractional", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"m\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "string or an integer", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"m\"}", RP_ERR_INVALID_REQUEST,
        RP_MSG_REQUEST, "string or an integer", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"m\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "string or an integer", ""},
    {"{\"jsonrpc\":\"2.0\",\"id\":false,\"result\":1}", RP_ERR_INVALID_REQUEST,
        RP_MSG_RESULT, "string or an integer", ""},
    /* methods */
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\"}", RP_ERR_INVALID_REQUEST,
        RP_MSG_REQUEST, "empty", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}", RP_ERR_INVALID_REQUEST,
        RP_MSG_REQUEST, "must be a string", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a b\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "non-printable", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\\tb\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "non-printable", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"caf\xC3\xA9\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "non-ASCII", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc.discover\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "reserved", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "longer than 64", "1"},
    /* params */
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":\"x\"}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "object or an array", "1"},
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":null}",
        RP_ERR_INVALID_REQUEST, RP_MSG_REQUEST, "object or an array", "1"},
    {"{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":3}",
        RP_ERR_INVALID_REQUEST, RP_MSG_NOTIFICATION, "object or an array", ""},
};

START_TEST(test_parse_cases)
{
	const struct pcase *c = &pcases[_i];
	struct rp_msg m;
	json_t *bad_id = (json_t *)1;
	char err[256];
	int rc;

	rc = rp_msg_parse(c->in, strlen(c->in), &m, &bad_id, err, sizeof(err));
	ck_assert_msg(rc == c->rc, "case %d (%s): rc %d want %d (%s)", _i,
	    c->in, rc, c->rc, err);
	ck_assert_msg((int)m.kind == c->kind, "case %d: kind %d want %d", _i,
	    (int)m.kind, c->kind);
	ck_assert_msg(strstr(err, c->msg) != NULL,
	    "case %d: message \"%s\" lacks \"%s\"", _i, err, c->msg);
	if (rc == 0) {
		ck_assert_str_eq(err, "");
		ck_assert_ptr_nonnull(m.root);
	} else {
		ck_assert_ptr_null(m.root);
		ck_assert_ptr_null(m.id);
		ck_assert_ptr_null(m.method);
	}
	if (rc == 0)
		ck_assert_ptr_null(bad_id); /* only failures hand out an id */
	if (c->id[0] == '\0') {
		ck_assert_msg(bad_id == NULL, "case %d: unexpected id", _i);
		if (rc == 0 && m.id != NULL)
			ck_assert(json_is_null(m.id));
	} else {
		json_t *want = json_loads(c->id, JSON_DECODE_ANY, NULL);

		if (rc == 0) {
			ck_assert(json_equal(m.id, want));
		} else {
			ck_assert_ptr_nonnull(bad_id);
			ck_assert_msg(
			    json_equal(bad_id, want), "case %d: id", _i);
		}
		json_decref(want);
	}
	json_decref(bad_id);
	rp_msg_clear(&m);
	ck_assert_ptr_null(m.root);
}
END_TEST

START_TEST(test_parse_fields)
{
	struct rp_msg m;
	json_t *bad;
	char err[256];
	const char *req = "{\"jsonrpc\":\"2.0\",\"id\":\"r1\",\"method\":"
	                  "\"offer.create\",\"params\":{\"machine\":\"ws\"}}";
	const char *er =
	    "{\"jsonrpc\":\"2.0\",\"id\":4,\"error\":{\"code\":1004,"
	    "\"message\":\"gone\",\"data\":[1]}}";

	ck_assert_int_eq(
	    rp_msg_parse(req, strlen(req), &m, &bad, err, sizeof(err)), 0);
	ck_assert_int_eq(m.kind, RP_MSG_REQUEST);
	ck_assert_str_eq(m.method, "offer.create");
	ck_assert_str_eq(json_string_value(m.id), "r1");
	ck_assert_str_eq(
	    json_string_value(json_object_get(m.params, "machine")), "ws");
	ck_assert_ptr_null(m.result);
	json_decref(bad);
	rp_msg_clear(&m);

	ck_assert_int_eq(
	    rp_msg_parse(er, strlen(er), &m, &bad, err, sizeof(err)), 0);
	ck_assert_int_eq(m.kind, RP_MSG_ERROR);
	ck_assert_int_eq(m.err_code, 1004);
	ck_assert_str_eq(m.err_message, "gone");
	ck_assert(json_is_array(m.err_data));
	ck_assert_int_eq(json_integer_value(m.id), 4);
	json_decref(bad);
	rp_msg_clear(&m);
}
END_TEST

/* A 128-byte string id is fine, 129 bytes is not. */
START_TEST(test_id_length)
{
	char line[400], id[RP_ID_MAX + 2];
	struct rp_msg m;
	json_t *bad;
	char err[256];

	memset(id, 'i', sizeof(id));
	id[RP_ID_MAX] = '\0';
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":\"%s\",\"method\":\"m\"}", id);
	ck_assert_int_eq(
	    rp_msg_parse(line, strlen(line), &m, &bad, err, sizeof(err)), 0);
	json_decref(bad);
	rp_msg_clear(&m);
	id[RP_ID_MAX] = 'i';
	id[RP_ID_MAX + 1] = '\0';
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":\"%s\",\"method\":\"m\"}", id);
	ck_assert_int_eq(
	    rp_msg_parse(line, strlen(line), &m, &bad, err, sizeof(err)),
	    RP_ERR_INVALID_REQUEST);
	ck_assert_ptr_null(bad);
	ck_assert_ptr_nonnull(strstr(err, "longer than 128"));
}
END_TEST

/* Raw NUL in the input is rejected, even though the length covers it. */
START_TEST(test_raw_nul)
{
	const char in[] = "{\"jsonrpc\":\"2.0\",\"method\":\"a\0b\"}";
	struct rp_msg m;
	json_t *bad;
	char err[256];

	ck_assert_int_eq(
	    rp_msg_parse(in, sizeof(in) - 1, &m, &bad, err, sizeof(err)),
	    RP_ERR_PARSE);
	ck_assert_ptr_null(bad);
}
END_TEST

START_TEST(test_method_valid)
{
	char err[128];

	ck_assert_int_eq(rp_msg_method_valid("agent.register", err, 128), 1);
	ck_assert_int_eq(rp_msg_method_valid("~!{}", err, 128), 1);
	ck_assert_int_eq(rp_msg_method_valid("rpc.x", err, 128), 0);
	ck_assert_int_eq(rp_msg_method_valid("rpcx", err, 128), 1);
	ck_assert_int_eq(rp_msg_method_valid("a\x7f", err, 128), 0);
	ck_assert_int_eq(rp_msg_method_valid("", err, 128), 0);
}
END_TEST

/* Encodes and returns the line (without '\n'), checking it is one line. */
static char *
encode_line(const json_t *msg)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	ck_assert_int_eq(rp_msg_encode(b, msg, RP_LINE_MAX), 0);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	ck_assert_uint_gt(n, 0);
	ck_assert_int_eq(s[n - 1], '\n');
	s[n - 1] = '\0';
	ck_assert_ptr_null(strchr(s, '\n'));
	evbuffer_free(b);
	return s;
}

START_TEST(test_builders)
{
	json_t *id = json_integer(7), *m;
	char *s;

	m = rp_msg_request(id, "hello", json_pack("{s:i}", "version", 1));
	s = encode_line(m);
	ck_assert_str_eq(s,
	    "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"hello\","
	    "\"params\":{\"version\":1}}");
	free(s);
	json_decref(m);

	m = rp_msg_notification("offer.update", NULL);
	s = encode_line(m);
	ck_assert_str_eq(
	    s, "{\"jsonrpc\":\"2.0\",\"method\":\"offer.update\"}");
	free(s);
	json_decref(m);

	m = rp_msg_result(id, NULL);
	s = encode_line(m);
	ck_assert_str_eq(s, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":null}");
	free(s);
	json_decref(m);

	m = rp_msg_error(id, RP_ERR_FORBIDDEN, NULL, NULL);
	s = encode_line(m);
	ck_assert_str_eq(s,
	    "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":"
	    "1003,\"message\":\"forbidden by policy\","
	    "\"data\":{\"reason\":\"forbidden\"}}}");
	free(s);
	json_decref(m);

	m = rp_msg_error(NULL, RP_ERR_PARSE, "bad", json_pack("{s:i}", "n", 1));
	s = encode_line(m);
	ck_assert_str_eq(s,
	    "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{"
	    "\"code\":-32700,\"message\":\"bad\",\"data\":{"
	    "\"n\":1,\"reason\":\"parse_error\"}}}");
	free(s);
	json_decref(m);

	/* Non-object data kept under "detail"; existing reason kept. */
	m = rp_msg_error(id, RP_ERR_BUSY, "b", json_string("x"));
	s = encode_line(m);
	ck_assert_ptr_nonnull(strstr(s,
	    "\"data\":{\"detail\":\"x\","
	    "\"reason\":\"busy\"}"));
	free(s);
	json_decref(m);
	m = rp_msg_error(
	    id, RP_ERR_BUSY, "b", json_pack("{s:s}", "reason", "custom"));
	s = encode_line(m);
	ck_assert_ptr_nonnull(strstr(s, "\"reason\":\"custom\""));
	free(s);
	json_decref(m);

	/* Invalid UTF-8 in a message does not lose the reply. */
	m = rp_msg_error(id, RP_ERR_PARSE, "near '\xC3'", NULL);
	ck_assert_ptr_nonnull(m);
	s = encode_line(m);
	ck_assert_ptr_nonnull(strstr(s, "near '?'"));
	free(s);
	json_decref(m);

	ck_assert_int_eq(id->refcount, 1); /* builders took their own refs */
	json_decref(id);
}
END_TEST

START_TEST(test_encode_newlines_escaped)
{
	json_t *m = rp_msg_notification(
	    "x", json_pack("{s:s}", "text", "line1\nline2\r\n\x01"));
	char *s = encode_line(m);

	ck_assert_ptr_nonnull(strstr(s, "line1\\nline2\\r\\n\\u0001"));
	free(s);
	json_decref(m);
}
END_TEST

START_TEST(test_encode_too_long)
{
	struct evbuffer *b = evbuffer_new();
	char *big = malloc(RP_LINE_MAX + 1);
	json_t *m;
	size_t n;

	memset(big, 'a', RP_LINE_MAX);
	big[RP_LINE_MAX] = '\0';
	m = rp_msg_notification("x", json_pack("{s:s}", "v", big));
	ck_assert_int_eq(
	    rp_msg_encode(b, m, RP_LINE_MAX), RP_ERR_LINE_TOO_LONG);
	ck_assert_uint_eq(evbuffer_get_length(b), 0); /* nothing appended */
	json_decref(m);

	/* Exactly at the limit is fine: find the overhead, then fill. */
	m = rp_msg_notification("x", json_pack("{s:s}", "v", ""));
	ck_assert_int_eq(rp_msg_encode(b, m, RP_LINE_MAX), 0);
	n = evbuffer_get_length(b) - 1; /* without '\n' */
	evbuffer_drain(b, n + 1);
	json_decref(m);
	big[RP_LINE_MAX - n] = '\0';
	m = rp_msg_notification("x", json_pack("{s:s}", "v", big));
	ck_assert_int_eq(rp_msg_encode(b, m, RP_LINE_MAX), 0);
	ck_assert_uint_eq(evbuffer_get_length(b), RP_LINE_MAX + 1);
	evbuffer_drain(b, RP_LINE_MAX + 1);
	json_decref(m);
	big[RP_LINE_MAX - n] = 'a';
	big[RP_LINE_MAX - n + 1] = '\0';
	m = rp_msg_notification("x", json_pack("{s:s}", "v", big));
	ck_assert_int_eq(
	    rp_msg_encode(b, m, RP_LINE_MAX), RP_ERR_LINE_TOO_LONG);
	json_decref(m);
	free(big);
	evbuffer_free(b);
}
END_TEST

/* Everything the builders make parses back to the same kind and fields. */
START_TEST(test_round_trip)
{
	json_t *id = json_string("abc"), *msgs[4];
	struct rp_msg m;
	json_t *bad;
	char err[256];

	msgs[0] = rp_msg_request(id, "a.b", json_pack("[i,s]", 1, "\xC3\xA9"));
	msgs[1] = rp_msg_notification("n", json_object());
	msgs[2] = rp_msg_result(id, json_pack("{s:b}", "ok", 1));
	msgs[3] = rp_msg_error(NULL, RP_ERR_INVALID_REQUEST, "bad", NULL);
	for (int i = 0; i < 4; i++) {
		char *s = encode_line(msgs[i]);

		ck_assert_int_eq(
		    rp_msg_parse(s, strlen(s), &m, &bad, err, sizeof(err)), 0);
		ck_assert_int_eq(m.kind, i + 1);
		ck_assert(json_equal(m.root, msgs[i]));
		json_decref(bad);
		rp_msg_clear(&m);
		free(s);
		json_decref(msgs[i]);
	}
	json_decref(id);
}
END_TEST

static Suite *
msg_suite(void)
{
	Suite *s = suite_create("msg");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(
	    tc, test_parse_cases, 0, (int)(sizeof(pcases) / sizeof(pcases[0])));
	tcase_add_test(tc, test_parse_fields);
	tcase_add_test(tc, test_id_length);
	tcase_add_test(tc, test_raw_nul);
	tcase_add_test(tc, test_method_valid);
	tcase_add_test(tc, test_builders);
	tcase_add_test(tc, test_encode_newlines_escaped);
	tcase_add_test(tc, test_encode_too_long);
	tcase_add_test(tc, test_round_trip);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(msg_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
