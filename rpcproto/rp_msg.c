/*
 * rp_msg.c - JSON-RPC 2.0 codec on jansson.
 *
 * rp_msg_parse is deliberately strict: every rule of JSON-RPC 2.0 is checked
 * here, and a few more that catch mistakes early (unknown top-level members
 * such as a misspelt "parmas", duplicate keys, control characters in method
 * names). Everything downstream - dispatch, handlers, reply correlation - may
 * then assume a well-formed message.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "rp_error.h"
#include "rp_msg.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int
rp_msg_id_valid(const json_t *id)
{
	if (json_is_integer(id))
		return 1;
	if (json_is_string(id))
		return json_string_length(id) <= RP_ID_MAX;
	return 0;
}

/* Why an id is not acceptable, for error messages. */
static const char *
id_problem(const json_t *id)
{
	if (json_is_null(id))
		return "id must not be null in a request";
	if (json_is_string(id))
		return "id string is longer than 128 bytes";
	if (json_is_real(id))
		return "id must be a string or an integer, not a fractional "
		       "number";
	return "id must be a string or an integer";
}

int
rp_msg_method_valid(const char *m, char *err, size_t errlen)
{
	size_t n = strlen(m);

	if (n == 0) {
		set_err(err, errlen, "method name is empty");
		return 0;
	}
	if (n > RP_METHOD_MAX) {
		set_err(err, errlen, "method name longer than %d bytes",
		    RP_METHOD_MAX);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)m[i];

		if (ch <= 0x20 || ch >= 0x7F) {
			set_err(err, errlen,
			    "method name has a non-printable or non-ASCII "
			    "byte at offset %zu",
			    i);
			return 0;
		}
	}
	if (strncmp(m, "rpc.", 4) == 0) {
		set_err(err, errlen,
		    "method names beginning with \"rpc.\" are reserved");
		return 0;
	}
	return 1;
}

static int
check_error_object(const json_t *e, char *err, size_t errlen)
{
	const char *k;
	json_t *v;

	if (!json_is_object(e)) {
		set_err(err, errlen, "\"error\" must be an object");
		return 0;
	}
	v = json_object_get(e, "code");
	if (!json_is_integer(v)) {
		set_err(err, errlen, "\"error.code\" must be an integer");
		return 0;
	}
	if (json_integer_value(v) < INT32_MIN ||
	    json_integer_value(v) > INT32_MAX) {
		set_err(err, errlen, "\"error.code\" is out of range");
		return 0;
	}
	if (!json_is_string(json_object_get(e, "message"))) {
		set_err(err, errlen, "\"error.message\" must be a string");
		return 0;
	}
	json_object_foreach((json_t *)e, k, v)
	{
		if (strcmp(k, "code") != 0 && strcmp(k, "message") != 0 &&
		    strcmp(k, "data") != 0) {
			set_err(err, errlen,
			    "unknown member \"%.40s\" in \"error\"", k);
			return 0;
		}
	}
	return 1;
}

static int
known_member(const char *k)
{
	static const char *const names[] = {
	    "jsonrpc", "id", "method", "params", "result", "error"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(k, names[i]) == 0)
			return 1;
	return 0;
}

int
rp_msg_parse(const char *line, size_t len, struct rp_msg *out, json_t **bad_id,
    char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *v, *id, *method, *params, *result, *error;
	const char *k;

	memset(out, 0, sizeof(*out));
	if (bad_id != NULL)
		*bad_id = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';

	/* JSON_DECODE_ANY so that "1" is an invalid request, not a parse
	 * error; raw NUL and "\u0000" are rejected by jansson's defaults. */
	root = json_loadb(
	    line, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		int dup = json_error_code(&jerr) == json_error_duplicate_key;

		set_err(err, errlen,
		    "%s at line %d, column %d (position %d): %s",
		    dup ? "duplicate key" : "invalid JSON", jerr.line,
		    jerr.column, jerr.position, jerr.text);
		return dup ? RP_ERR_INVALID_REQUEST : RP_ERR_PARSE;
	}
	if (json_is_array(root)) {
		set_err(err, errlen, "batches are not supported%s",
		    json_array_size(root) == 0 ? " (empty batch)" : "");
		goto invalid;
	}
	if (!json_is_object(root)) {
		set_err(err, errlen, "message must be a JSON object");
		goto invalid;
	}

	id = json_object_get(root, "id");
	method = json_object_get(root, "method");
	params = json_object_get(root, "params");
	result = json_object_get(root, "result");
	error = json_object_get(root, "error");

	/* Recover the id first so that the error reply can carry it. */
	if (id != NULL && rp_msg_id_valid(id) && bad_id != NULL)
		*bad_id = json_incref(id);

	/* Tell the kind early: callers must not answer a bad response. */
	if (method != NULL)
		out->kind = id != NULL ? RP_MSG_REQUEST : RP_MSG_NOTIFICATION;
	else if (error != NULL)
		out->kind = RP_MSG_ERROR;
	else if (result != NULL)
		out->kind = RP_MSG_RESULT;

	v = json_object_get(root, "jsonrpc");
	if (v == NULL) {
		set_err(err, errlen, "missing \"jsonrpc\" member");
		goto invalid;
	}
	if (!json_is_string(v) || strcmp(json_string_value(v), "2.0") != 0 ||
	    json_string_length(v) != 3) {
		set_err(err, errlen, "\"jsonrpc\" must be exactly \"2.0\"");
		goto invalid;
	}
	json_object_foreach(root, k, v)
	{
		if (!known_member(k)) {
			set_err(err, errlen, "unknown member \"%.40s\"", k);
			goto invalid;
		}
	}

	if (method != NULL) {
		if (result != NULL || error != NULL) {
			set_err(err, errlen,
			    "a request must not carry \"result\" or "
			    "\"error\"");
			goto invalid;
		}
		if (!json_is_string(method)) {
			set_err(err, errlen, "\"method\" must be a string");
			goto invalid;
		}
		if (strlen(json_string_value(method)) !=
		    json_string_length(method)) {
			set_err(err, errlen, "method name contains NUL");
			goto invalid;
		}
		if (!rp_msg_method_valid(
		        json_string_value(method), err, errlen))
			goto invalid;
		if (params != NULL && !json_is_object(params) &&
		    !json_is_array(params)) {
			set_err(err, errlen,
			    "\"params\" must be an object or an array");
			goto invalid;
		}
		if (id != NULL && !rp_msg_id_valid(id)) {
			set_err(err, errlen, "%s", id_problem(id));
			goto invalid;
		}
		out->method = json_string_value(method);
		out->params = params;
	} else if (result != NULL || error != NULL) {
		if (result != NULL && error != NULL) {
			set_err(err, errlen,
			    "a response must not carry both \"result\" and "
			    "\"error\"");
			goto invalid;
		}
		if (params != NULL) {
			set_err(err, errlen,
			    "a response must not carry \"params\"");
			goto invalid;
		}
		if (id == NULL) {
			set_err(err, errlen, "a response must carry \"id\"");
			goto invalid;
		}
		/* id null is allowed only in an error response, for input
		 * whose id could not be read. */
		if (!rp_msg_id_valid(id) &&
		    !(error != NULL && json_is_null(id))) {
			set_err(err, errlen, "%s", id_problem(id));
			goto invalid;
		}
		if (error != NULL) {
			if (!check_error_object(error, err, errlen))
				goto invalid;
			out->err_code = (int)json_integer_value(
			    json_object_get(error, "code"));
			out->err_message = json_string_value(
			    json_object_get(error, "message"));
			out->err_data = json_object_get(error, "data");
		} else {
			out->result = result;
		}
	} else {
		set_err(err, errlen,
		    "message has neither \"method\" nor \"result\"/\"error\"");
		goto invalid;
	}

	out->root = root;
	out->id = id;
	if (bad_id != NULL && *bad_id != NULL) {
		json_decref(*bad_id); /* only failures hand out an id */
		*bad_id = NULL;
	}
	return 0;

invalid : {
	enum rp_msg_kind kind = out->kind;

	json_decref(root);
	memset(out, 0, sizeof(*out));
	out->kind = kind;
	return RP_ERR_INVALID_REQUEST;
}
}

void
rp_msg_clear(struct rp_msg *m)
{
	if (m == NULL)
		return;
	json_decref(m->root);
	memset(m, 0, sizeof(*m));
}

/* A new {"jsonrpc":"2.0"} object. */
static json_t *
msg_new(void)
{
	json_t *o = json_object();

	if (o != NULL &&
	    json_object_set_new(o, "jsonrpc", json_string("2.0")) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *
rp_msg_request(json_t *id, const char *method, json_t *params)
{
	json_t *o = msg_new();

	if (o == NULL || id == NULL || json_object_set(o, "id", id) != 0 ||
	    json_object_set_new(o, "method", json_string(method)) != 0 ||
	    (params != NULL && json_object_set(o, "params", params) != 0)) {
		json_decref(o);
		json_decref(params);
		return NULL;
	}
	json_decref(params);
	return o;
}

json_t *
rp_msg_notification(const char *method, json_t *params)
{
	json_t *o = msg_new();

	if (o == NULL ||
	    json_object_set_new(o, "method", json_string(method)) != 0 ||
	    (params != NULL && json_object_set(o, "params", params) != 0)) {
		json_decref(o);
		json_decref(params);
		return NULL;
	}
	json_decref(params);
	return o;
}

json_t *
rp_msg_result(json_t *id, json_t *result)
{
	json_t *o = msg_new();

	if (result == NULL)
		result = json_null();
	if (o == NULL || id == NULL || json_object_set(o, "id", id) != 0 ||
	    json_object_set(o, "result", result) != 0) {
		json_decref(o);
		json_decref(result);
		return NULL;
	}
	json_decref(result);
	return o;
}

/* A JSON string for text that may hold invalid UTF-8 (jansson's error text
 * and our "%.40s" truncations can cut a character in half): if it is not
 * valid, every non-ASCII byte becomes '?'. */
static json_t *
safe_string(const char *text)
{
	json_t *j = json_string(text);
	char *copy;

	if (j != NULL || (copy = strdup(text)) == NULL)
		return j;
	for (char *p = copy; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

json_t *
rp_msg_error(json_t *id, int code, const char *message, json_t *data)
{
	json_t *o, *e;

	if (message == NULL)
		message = rp_err_message(code);
	/* data always carries the stable reason; a value that is not an
	 * object is kept under "detail". */
	if (data != NULL && !json_is_object(data)) {
		json_t *wrap = json_object();

		if (wrap == NULL || json_object_set_new(wrap, "detail", data)) {
			json_decref(wrap);
			return NULL;
		}
		data = wrap;
	} else if (data == NULL && (data = json_object()) == NULL) {
		return NULL;
	}
	if (json_object_get(data, "reason") == NULL &&
	    json_object_set_new(
	        data, "reason", json_string(rp_err_name(code)))) {
		json_decref(data);
		return NULL;
	}
	if ((e = json_object()) == NULL) {
		json_decref(data);
		return NULL;
	}
	if (json_object_set_new(e, "code", json_integer(code)) != 0 ||
	    json_object_set_new(e, "message", safe_string(message)) != 0) {
		json_decref(data);
		json_decref(e);
		return NULL;
	}
	if (json_object_set_new(e, "data", data) != 0) {
		json_decref(e);
		return NULL;
	}
	if ((o = msg_new()) == NULL ||
	    json_object_set(o, "id", id != NULL ? id : json_null()) != 0 ||
	    json_object_set_new(o, "error", e) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* Encoder sink: a small inline buffer, spilling to the heap, that refuses to
 * grow past the line limit (so a huge message is not encoded in full). */
struct sink {
	char *buf;
	size_t len, cap, max;
	int over, nomem;
	char small[2048];
};

static int
sink_add(const char *p, size_t n, void *arg)
{
	struct sink *s = arg;

	if (s->len + n > s->max) {
		s->over = 1;
		return -1;
	}
	if (s->len + n > s->cap) {
		size_t cap = s->cap * 2;
		char *nb;

		while (cap < s->len + n)
			cap *= 2;
		if (cap > s->max)
			cap = s->max;
		if (s->buf == s->small) {
			if ((nb = malloc(cap)) != NULL)
				memcpy(nb, s->small, s->len);
		} else {
			nb = realloc(s->buf, cap);
		}
		if (nb == NULL) {
			s->nomem = 1;
			return -1;
		}
		s->buf = nb;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	return 0;
}

int
rp_msg_encode(struct evbuffer *out, const json_t *msg, size_t max)
{
	struct sink s;
	int rc = 0;

	s.buf = s.small;
	s.len = 0;
	s.cap = sizeof(s.small);
	s.max = max;
	s.over = s.nomem = 0;
	/* JSON_COMPACT output has no raw newline: jansson escapes control
	 * characters inside strings, so the line stays one line. */
	if (json_dump_callback(msg, sink_add, &s, JSON_COMPACT) != 0)
		rc = s.over ? RP_ERR_LINE_TOO_LONG : RP_ERR_NOMEM;
	else if (evbuffer_expand(out, s.len + 1) != 0 ||
	    evbuffer_add(out, s.buf, s.len) != 0 ||
	    evbuffer_add(out, "\n", 1) != 0)
		rc = RP_ERR_NOMEM;
	if (s.buf != s.small)
		free(s.buf);
	return rc;
}
