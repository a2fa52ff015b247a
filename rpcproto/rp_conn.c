/*
 * rp_conn.c - one JSON-RPC connection over an rp_io transport.
 *
 * Input runs through one loop (conn_process): frame a line, parse it, then
 * either match it to one of our pending calls or dispatch it. All generic
 * checks live in dispatch(), in the order the header lists, so handlers only
 * see requests that are well-formed, known, allowed in this state and whose
 * params match the method's spec.
 *
 * Memory at rest matters (100,000 agents per broker): the struct holds no
 * buffers of its own; our outgoing calls are an intrusive list that is empty
 * (one NULL pointer) when nothing is pending; every message is encoded into
 * a short-lived evbuffer handed straight to the transport.
 *
 * Re-entrancy: a handler or callback may close, detach or unref the
 * connection. Every loop that calls out holds a reference (rp_conn_ref) and
 * rechecks conn_can_read() after each call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "rp_conn.h"
#include "rp_error.h"
#include "rp_frame.h"
#include "rp_log.h"
#include "rp_msg.h"

#define RP_CONN_DEFAULT_TIMEOUT_MS 30000u
#define RP_CONN_DEFAULT_BAD_LINES 8u

/* One of our outgoing requests awaiting its response. */
struct rp_call {
	LIST_ENTRY(rp_call) entry;
	struct rp_conn *conn;
	struct event *timer;
	rp_reply_cb cb;
	void *arg;
	uint32_t id;
};
LIST_HEAD(rp_call_list, rp_call);

#define CF_IN_INPUT 0x01u  /* inside conn_process */
#define CF_PAUSED 0x02u    /* output backed up: input on hold */
#define CF_CLOSING 0x04u   /* rp_conn_close called */
#define CF_NOTIFIED 0x08u  /* on_close delivered */
#define CF_XPORT_REF 0x10u /* the transport's reference is held */

struct rp_conn {
	struct event_base *base;
	const struct rp_io_ops *ops;
	void *io; /* NULL once the transport is gone or detached */
	const struct rp_method *methods;
	const struct rp_conn_cbs *cbs;
	void *ctx;
	void *data;
	struct rp_tls *tls;
	struct evbuffer *in; /* transport's input buffer (not ours) */
	char *close_why;     /* reason given to rp_conn_close */
	struct rp_call_list calls;
	struct rp_frame frame;
	uint32_t nmethods;
	uint32_t timeout_ms;
	uint32_t next_id;
	uint32_t npending;
	/* Our calls given up (timed out or cancelled) among the last 64 ids
	 * issued: bit i stands for id next_id - 1 - i. An answer to one of
	 * them is late, not stray: it is not counted against the peer. */
	uint64_t late_ids;
	uint32_t refs;
	uint16_t state;
	uint8_t bad_lines;
	uint8_t max_bad_lines;
	uint8_t flags;
};

static void conn_process(struct rp_conn *c);

const char *
rp_conn_state_name(unsigned state)
{
	if (state & RP_ST_CLOSED)
		return "closed";
	if (state & RP_ST_RAW)
		return "raw";
	if (state & RP_ST_HELPER)
		return "helper";
	if (state & RP_ST_AGENT)
		return "agent";
	if (state & RP_ST_AUTHING)
		return "authing";
	if (state & RP_ST_HELLO)
		return "hello";
	if (state & RP_ST_NEW)
		return "new";
	return "unknown";
}

struct rp_conn *
rp_conn_new(struct event_base *base, const struct rp_io_ops *ops, void *io,
    const struct rp_conn_opts *o)
{
	struct rp_conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->base = base;
	c->ops = ops;
	c->io = io;
	c->methods = o->methods;
	c->nmethods = (uint32_t)o->nmethods;
	c->cbs = o->cbs;
	c->ctx = o->ctx;
	c->timeout_ms = o->default_timeout_ms != 0 ? o->default_timeout_ms
	                                           : RP_CONN_DEFAULT_TIMEOUT_MS;
	c->max_bad_lines =
	    (uint8_t)(o->max_bad_lines == 0  ? RP_CONN_DEFAULT_BAD_LINES
	            : o->max_bad_lines > 255 ? 255
	                                     : o->max_bad_lines);
	c->state = RP_ST_NEW;
	c->next_id = 1;
	LIST_INIT(&c->calls);
	rp_frame_init(&c->frame, o->max_line);
	c->refs = 2; /* the caller's and the transport's */
	c->flags = CF_XPORT_REF;
	return c;
}

static void
conn_free(struct rp_conn *c)
{
	/* Only reachable once the transport reference is gone, i.e. after
	 * rp_conn_closed or rp_conn_detach, which emptied the call list. */
	if (!LIST_EMPTY(&c->calls))
		fatalx("rp_conn freed with calls pending");
	free(c->close_why);
	free(c);
}

void
rp_conn_ref(struct rp_conn *c)
{
	c->refs++;
}

void
rp_conn_unref(struct rp_conn *c)
{
	if (c == NULL)
		return;
	if (c->refs == 0)
		fatalx("rp_conn_unref: reference count underflow");
	if (--c->refs == 0)
		conn_free(c);
}

/* Drop the transport's reference (once). */
static void
conn_drop_transport(struct rp_conn *c)
{
	c->io = NULL;
	c->tls = NULL;
	c->in = NULL;
	if (c->flags & CF_XPORT_REF) {
		c->flags &= ~CF_XPORT_REF;
		rp_conn_unref(c);
	}
}

int
rp_conn_is_open(const struct rp_conn *c)
{
	return c != NULL && c->io != NULL && !(c->flags & CF_CLOSING) &&
	    !(c->state & (RP_ST_CLOSED | RP_ST_RAW));
}

/* May we go on reading and dispatching input? */
static int
conn_can_read(const struct rp_conn *c)
{
	return rp_conn_is_open(c) && c->in != NULL && !(c->flags & CF_PAUSED);
}

unsigned
rp_conn_state(const struct rp_conn *c)
{
	return c->state;
}

void
rp_conn_set_state(struct rp_conn *c, enum rp_state s)
{
	if (c->state & (RP_ST_CLOSED | RP_ST_RAW))
		return; /* terminal */
	c->state = (uint16_t)s;
}

void *
rp_conn_ctx(const struct rp_conn *c)
{
	return c->ctx;
}

void
rp_conn_set_data(struct rp_conn *c, void *data)
{
	c->data = data;
}

void *
rp_conn_data(const struct rp_conn *c)
{
	return c->data;
}

const char *
rp_conn_peer_id(const struct rp_conn *c)
{
	if (c->io == NULL || c->ops->peer_id == NULL)
		return NULL;
	return c->ops->peer_id(c->io);
}

const char *
rp_conn_peer_addr(const struct rp_conn *c)
{
	if (c->io == NULL || c->ops->peer_addr == NULL)
		return NULL;
	return c->ops->peer_addr(c->io);
}

void
rp_conn_set_tls(struct rp_conn *c, struct rp_tls *t)
{
	c->tls = t;
}

struct rp_tls *
rp_conn_tls(const struct rp_conn *c)
{
	return c->io != NULL ? c->tls : NULL;
}

size_t
rp_conn_pending(const struct rp_conn *c)
{
	return c->npending;
}

/* ---- outgoing ---------------------------------------------------------- */

/* Encodes msg (consumed) and hands it to the transport. */
static int
conn_send(struct rp_conn *c, json_t *msg)
{
	struct evbuffer *b;
	int rc;

	if (msg == NULL)
		return RP_ERR_NOMEM;
	if (!rp_conn_is_open(c)) {
		json_decref(msg);
		return RP_ERR_CLOSED;
	}
	if ((b = evbuffer_new()) == NULL) {
		json_decref(msg);
		return RP_ERR_NOMEM;
	}
	rc = rp_msg_encode(b, msg, c->frame.max);
	json_decref(msg);
	if (rc == 0 && c->ops->write(c->io, b) != 0)
		rc = RP_ERR_IO;
	evbuffer_free(b);
	return rc;
}

/* Error reply; id may be NULL ("id": null, for unreadable requests). */
static int
conn_send_error(
    struct rp_conn *c, json_t *id, int code, const char *msg, json_t *data)
{
	return conn_send(c, rp_msg_error(id, code, msg, data));
}

int
rp_conn_notify(struct rp_conn *c, const char *method, json_t *params)
{
	if (!rp_conn_is_open(c)) {
		json_decref(params);
		return RP_ERR_CLOSED;
	}
	return conn_send(c, rp_msg_notification(method, params));
}

int
rp_conn_reply(struct rp_conn *c, json_t *id, json_t *result)
{
	int rc;

	if (id == NULL || !rp_conn_is_open(c)) {
		json_decref(result);
		return id == NULL ? 0 : RP_ERR_CLOSED;
	}
	rc = conn_send(c, rp_msg_result(id, result));
	if (rc == RP_ERR_LINE_TOO_LONG) {
		log_warnx("%s: reply too long for one line, sent an error",
		    rp_conn_peer_addr(c) ? rp_conn_peer_addr(c) : "conn");
		conn_send_error(c, id, RP_ERR_INTERNAL,
		    "result too large for one line",
		    json_pack(
		        "{s:s}", "reason", rp_err_name(RP_ERR_LINE_TOO_LONG)));
	}
	return rc;
}

int
rp_conn_error(
    struct rp_conn *c, json_t *id, int code, const char *msg, json_t *data)
{
	int rc;

	if (id == NULL || !rp_conn_is_open(c)) {
		json_decref(data);
		return id == NULL ? 0 : RP_ERR_CLOSED;
	}
	rc = conn_send_error(c, id, code, msg, data);
	if (rc == RP_ERR_LINE_TOO_LONG)
		conn_send_error(c, id, code, NULL, NULL); /* without data */
	return rc;
}

static void
call_free(struct rp_call *k)
{
	if (k->timer != NULL)
		event_free(k->timer);
	free(k);
}

/* Unlinks a call; the caller then runs its callback exactly once. */
static void
call_unlink(struct rp_conn *c, struct rp_call *k)
{
	LIST_REMOVE(k, entry);
	c->npending--;
}

/* We stopped waiting for call `id` (timeout, cancel): remember it, so that
 * its answer, if it still comes, is known as late. */
static void
call_given_up(struct rp_conn *c, uint32_t id)
{
	if (id != 0 && id < c->next_id && c->next_id - 1 - id < 64)
		c->late_ids |= (uint64_t)1 << (c->next_id - 1 - id);
}

/* 1 (once) if v is the id of a call we gave up on recently. */
static int
call_was_given_up(struct rp_conn *c, json_int_t v)
{
	uint32_t d;

	if (v <= 0 || v >= (json_int_t)c->next_id)
		return 0;
	d = c->next_id - 1 - (uint32_t)v;
	if (d >= 64 || !(c->late_ids & ((uint64_t)1 << d)))
		return 0;
	c->late_ids &= ~((uint64_t)1 << d);
	return 1;
}

static void
call_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rp_call *k = arg;
	struct rp_conn *c = k->conn;
	rp_reply_cb cb = k->cb;
	void *cbarg = k->arg;

	call_unlink(c, k);
	log_debug("call %u timed out", k->id);
	call_given_up(c, k->id);
	call_free(k);
	rp_conn_ref(c);
	cb(c, RP_ERR_TIMEOUT, NULL, cbarg);
	rp_conn_unref(c);
}

int
rp_conn_call(struct rp_conn *c, const char *method, json_t *params,
    unsigned timeout_ms, rp_reply_cb cb, void *arg)
{
	struct rp_call *k, *o;
	struct timeval tv;
	json_t *id, *msg;
	int rc;

	if (!rp_conn_is_open(c)) {
		json_decref(params);
		return RP_ERR_CLOSED;
	}
	if ((k = calloc(1, sizeof(*k))) == NULL) {
		json_decref(params);
		return RP_ERR_NOMEM;
	}
	if ((k->timer = evtimer_new(c->base, call_timeout_cb, k)) == NULL) {
		free(k);
		json_decref(params);
		return RP_ERR_NOMEM;
	}
	/* Ids are small positive integers; skip one still pending after a
	 * wrap-around. */
	do {
		k->id = c->next_id++;
		c->late_ids <<= 1;
		if (c->next_id > INT32_MAX) {
			c->next_id = 1;
			c->late_ids = 0;
		}
		for (o = LIST_FIRST(&c->calls); o != NULL;
		     o = LIST_NEXT(o, entry))
			if (o->id == k->id)
				break;
	} while (o != NULL);
	k->conn = c;
	k->cb = cb;
	k->arg = arg;

	if ((id = json_integer(k->id)) == NULL) {
		call_free(k);
		json_decref(params);
		return RP_ERR_NOMEM;
	}
	msg = rp_msg_request(id, method, params);
	json_decref(id);
	if ((rc = conn_send(c, msg)) != 0) {
		call_free(k);
		return rc;
	}
	if (timeout_ms == 0)
		timeout_ms = c->timeout_ms;
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(k->timer, &tv);
	LIST_INSERT_HEAD(&c->calls, k, entry);
	c->npending++;
	return 0;
}

/* Fails the calls matching arg (all if match_all) with RP_ERR_CLOSED. They
 * are unlinked first, so calls made from the callbacks are not affected and
 * each callback runs exactly once. */
static void
conn_fail_calls(struct rp_conn *c, int match_all, void *arg)
{
	struct rp_call_list doomed;
	struct rp_call *k, *next;

	LIST_INIT(&doomed);
	for (k = LIST_FIRST(&c->calls); k != NULL; k = next) {
		next = LIST_NEXT(k, entry);
		if (match_all || k->arg == arg) {
			call_unlink(c, k);
			LIST_INSERT_HEAD(&doomed, k, entry);
		}
	}
	if (LIST_EMPTY(&doomed))
		return;
	rp_conn_ref(c);
	while ((k = LIST_FIRST(&doomed)) != NULL) {
		rp_reply_cb cb = k->cb;
		void *cbarg = k->arg;

		LIST_REMOVE(k, entry);
		call_given_up(c, k->id);
		call_free(k);
		cb(c, RP_ERR_CLOSED, NULL, cbarg);
	}
	rp_conn_unref(c);
}

void
rp_conn_cancel_calls(struct rp_conn *c, void *arg)
{
	conn_fail_calls(c, 0, arg);
}

/* ---- closing ----------------------------------------------------------- */

void
rp_conn_close(struct rp_conn *c, const char *why)
{
	if (!rp_conn_is_open(c))
		return;
	c->flags |= CF_CLOSING;
	if (why != NULL && c->close_why == NULL)
		c->close_why = strdup(why);
	log_debug("%s: closing: %s",
	    rp_conn_peer_addr(c) ? rp_conn_peer_addr(c) : "conn",
	    why ? why : "-");
	rp_conn_ref(c);
	conn_fail_calls(c, 1, NULL);
	if (c->io != NULL)
		c->ops->close(c->io); /* may call rp_conn_closed now */
	rp_conn_unref(c);
}

void
rp_conn_closed(struct rp_conn *c, const char *why)
{
	if (c->state & RP_ST_CLOSED)
		return;
	rp_conn_ref(c);
	c->state = RP_ST_CLOSED;
	conn_fail_calls(c, 1, NULL);
	if (!(c->flags & CF_NOTIFIED)) {
		c->flags |= CF_NOTIFIED;
		if (c->cbs != NULL && c->cbs->on_close != NULL)
			c->cbs->on_close(c,
			    c->close_why != NULL ? c->close_why
			        : why != NULL    ? why
			                         : "closed",
			    c->ctx);
	}
	conn_drop_transport(c);
	rp_conn_unref(c);
}

struct rp_tls *
rp_conn_detach(struct rp_conn *c, struct evbuffer *leftover)
{
	struct rp_tls *t = c->tls;

	if (c->io == NULL || (c->state & (RP_ST_CLOSED | RP_ST_RAW)))
		return NULL;
	if (c->in != NULL && leftover != NULL)
		evbuffer_add_buffer(leftover, c->in);
	rp_conn_ref(c);
	c->state = RP_ST_RAW;
	if (c->flags & CF_PAUSED) {
		/* Hand the transport over reading, as it came to us. */
		c->flags &= ~CF_PAUSED;
		if (c->ops->set_reading != NULL)
			c->ops->set_reading(c->io, 1);
	}
	conn_fail_calls(c, 1, NULL);
	conn_drop_transport(c);
	rp_conn_unref(c);
	return t;
}

/* ---- params specs ------------------------------------------------------ */

/*
 * A method's params spec is jansson's unpack format with the object keys
 * written inline, because a static table cannot pass them as arguments:
 * "{machine:s, mode:s, addresses?:[s]}" becomes the format
 * "{s:s, s:s, s?:[s]}" plus the keys in order, which are then passed as
 * the (fixed number of) variadic arguments of json_unpack_ex; jansson reads
 * as many as the format needs and ignores the rest.
 */
#define SPEC_MAX_KEYS 16
#define SPEC_MAX_LEN 256

struct spec_top {
	const char *key;
	uint8_t first_key; /* index of the first key inside the value */
	uint8_t optional;
	uint16_t vstart, vlen; /* the value's format inside fmt */
};

struct spec {
	char fmt[SPEC_MAX_LEN];
	char names[SPEC_MAX_LEN];
	/* Twice the size, NULL-padded: a value's keys can start anywhere. */
	const char *keys[2 * SPEC_MAX_KEYS];
	struct spec_top top[SPEC_MAX_KEYS];
	int nkeys, ntop;
};

static int
spec_keychar(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	    (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.';
}

/* all_optional: every key made optional, so that checking the spec against
 * {} walks the whole format (jansson stops at the first missing key). */
static int
spec_compile(const char *spec, struct spec *sp, int all_optional, char *err,
    size_t errlen)
{
	char stack[16];
	size_t depth = 0, f = 0, nn = 0;
	int expect_key = 0, top_open = 0;
	const char *p;

	memset(sp, 0, sizeof(*sp));
#define EMIT(ch)                              \
	do {                                  \
		if (f + 1 >= sizeof(sp->fmt)) \
			goto toolong;         \
		sp->fmt[f++] = (ch);          \
	} while (0)
	for (p = spec; *p != '\0';) {
		if (*p == ' ' || *p == '\t') {
			p++;
			continue;
		}
		if (expect_key && *p != '}' && *p != '!' && *p != '*') {
			const char *k = p;
			size_t kl;
			int opt;

			while (spec_keychar(*p))
				p++;
			kl = (size_t)(p - k);
			if (kl == 0) {
				snprintf(err, errlen,
				    "expected a key at offset %zu",
				    (size_t)(k - spec));
				return -1;
			}
			if (kl == 1 && k[0] == 's') {
				snprintf(err, errlen,
				    "key-less jansson form \"{s:...}\": write "
				    "the keys inline, e.g. \"{name:s}\"");
				return -2;
			}
			if (sp->nkeys >= SPEC_MAX_KEYS ||
			    nn + kl + 1 > sizeof(sp->names))
				goto toolong;
			memcpy(sp->names + nn, k, kl);
			sp->names[nn + kl] = '\0';
			sp->keys[sp->nkeys++] = sp->names + nn;
			nn += kl + 1;
			opt = *p == '?';
			if (opt)
				p++;
			EMIT('s');
			if (opt || all_optional)
				EMIT('?');
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p != ':') {
				snprintf(err, errlen,
				    "expected ':' after key at offset %zu",
				    (size_t)(p - spec));
				return -1;
			}
			EMIT(':');
			p++;
			if (depth == 1) {
				struct spec_top *t = &sp->top[sp->ntop++];

				t->key = sp->keys[sp->nkeys - 1];
				t->first_key = (uint8_t)sp->nkeys;
				t->optional = (uint8_t)opt;
				t->vstart = (uint16_t)f;
				top_open = 1;
			}
			expect_key = 0;
			continue;
		}
		expect_key = 0;
		/* A top-level value ends at ',', '}', '!' or '*' on level 1. */
		if (top_open && depth == 1 &&
		    (*p == ',' || *p == '}' || *p == '!' || *p == '*')) {
			struct spec_top *t = &sp->top[sp->ntop - 1];

			t->vlen = (uint16_t)(f - t->vstart);
			top_open = 0;
		}
		switch (*p) {
		case '{':
		case '[':
			if (depth >= sizeof(stack))
				goto toolong;
			stack[depth++] = *p;
			expect_key = *p == '{';
			break;
		case '}':
		case ']':
			if (depth == 0 ||
			    stack[depth - 1] != (*p == '}' ? '{' : '[')) {
				snprintf(err, errlen,
				    "unbalanced '%c' at offset %zu", *p,
				    (size_t)(p - spec));
				return -1;
			}
			depth--;
			break;
		case ',':
			expect_key = depth > 0 && stack[depth - 1] == '{';
			break;
		}
		EMIT(*p);
		p++;
	}
	if (depth != 0) {
		snprintf(err, errlen, "unbalanced spec");
		return -1;
	}
	sp->fmt[f] = '\0';
	return 0;
#undef EMIT
toolong:
	snprintf(err, errlen, "spec too long or too many keys (max %d)",
	    SPEC_MAX_KEYS);
	return -1;
}

static int
spec_unpack(json_t *v, json_error_t *e, const char *fmt, const char *const *k)
{
	return json_unpack_ex(v, e, JSON_VALIDATE_ONLY, fmt, k[0], k[1], k[2],
	    k[3], k[4], k[5], k[6], k[7], k[8], k[9], k[10], k[11], k[12],
	    k[13], k[14], k[15]);
}

/*
 * Checks params against a spec. Returns 0 if they match; 1 if not, with
 * jansson's text (prefixed by the member at fault when it can be told) in
 * err; -1 if the spec itself is broken (a bug in the method table); 2 for
 * the key-less jansson form, which cannot be checked (see dispatch).
 */
static int
spec_check(const char *spec, json_t *params, int all_optional, char *err,
    size_t errlen)
{
	struct spec sp;
	json_error_t e;

	switch (spec_compile(spec, &sp, all_optional, err, errlen)) {
	case 0:
		break;
	case -2:
		return 2;
	default:
		return -1;
	}
	if (spec_unpack(params, &e, sp.fmt, sp.keys) == 0)
		return 0;
	if (json_error_code(&e) == json_error_invalid_format ||
	    json_error_code(&e) == json_error_invalid_argument) {
		snprintf(err, errlen, "%s", e.text);
		return -1;
	}
	/* jansson stops at the first missing member, before it has read the
	 * whole format: walk all of it once to tell our bug from theirs. */
	if (!all_optional) {
		json_t *empty = json_object();
		int rc = spec_check(spec, empty, 1, err, errlen);

		json_decref(empty);
		if (rc < 0)
			return rc;
	}
	/* Name the member at fault: check the top-level values one by one. */
	for (int i = 0; json_is_object(params) && i < sp.ntop; i++) {
		const struct spec_top *t = &sp.top[i];
		json_t *v = json_object_get(params, t->key);
		char sub[SPEC_MAX_LEN];
		json_error_t se;

		if (v == NULL) {
			if (t->optional)
				continue;
			snprintf(err, errlen, "missing member \"%s\"", t->key);
			return 1;
		}
		memcpy(sub, sp.fmt + t->vstart, t->vlen);
		sub[t->vlen] = '\0';
		if (spec_unpack(v, &se, sub, sp.keys + t->first_key) != 0) {
			snprintf(
			    err, errlen, "member \"%s\": %s", t->key, se.text);
			return 1;
		}
	}
	snprintf(err, errlen, "%s", e.text);
	return 1;
}

int
rp_methods_check(const struct rp_method *m, size_t n, char *err, size_t errlen)
{
	json_t *empty = json_object();
	char why[160];
	int rc = 0, sc;

	for (size_t i = 0; i < n && rc == 0; i++) {
		if (m[i].name == NULL || m[i].handler == NULL ||
		    m[i].states == 0) {
			snprintf(err, errlen,
			    "method %zu: name, states and handler are required",
			    i);
			rc = -1;
		} else if (!rp_msg_method_valid(m[i].name, why, sizeof(why))) {
			snprintf(err, errlen, "method %s: %s", m[i].name, why);
			rc = -1;
		} else if (m[i].params != NULL &&
		    ((sc = spec_check(
		          m[i].params, empty, 1, why, sizeof(why))) < 0 ||
		        sc == 2)) {
			snprintf(err, errlen,
			    "method %s: params spec \"%s\": %s", m[i].name,
			    m[i].params, why);
			rc = -1;
		}
		for (size_t j = 0; j < i && rc == 0; j++)
			if (strcmp(m[i].name, m[j].name) == 0) {
				snprintf(err, errlen, "method %s listed twice",
				    m[i].name);
				rc = -1;
			}
	}
	json_decref(empty);
	return rc;
}

/* ---- input ------------------------------------------------------------- */

/* Copies text that may quote the peer's bytes (jansson's "near '...'", an
 * error message the peer sent) with control characters replaced: nothing
 * from the network reaches a log line raw. */
static void
sanitize(char *dst, size_t n, const char *src)
{
	size_t i;

	for (i = 0; src[i] != '\0' && i < n - 1; i++)
		dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f
		    ? '?'
		    : src[i];
	dst[i] = '\0';
}

static void
conn_protocol_error(struct rp_conn *c, int code, const char *msg)
{
	char safe[256];

	sanitize(safe, sizeof(safe), msg);
	log_debug("%s: %s: %s",
	    rp_conn_peer_addr(c) ? rp_conn_peer_addr(c) : "conn",
	    rp_err_name(code), safe);
	if (c->cbs != NULL && c->cbs->on_protocol_error != NULL)
		c->cbs->on_protocol_error(c, code, safe, c->ctx);
}

/* A message rp_conn rejected itself: report, answer (when answerable: id
 * NULL means "id": null), count, and close after too many in a row. */
static void
conn_reject_data(struct rp_conn *c, int answer, json_t *id, int code,
    const char *msg, json_t *data)
{
	conn_protocol_error(c, code, msg);
	if (answer && rp_conn_is_open(c))
		conn_send_error(c, id, code, msg, data);
	else
		json_decref(data);
	if (c->bad_lines < 255)
		c->bad_lines++;
	if (c->bad_lines >= c->max_bad_lines && rp_conn_is_open(c)) {
		char why[80];

		snprintf(why, sizeof(why),
		    "too many malformed lines (%u in a row)", c->bad_lines);
		log_info("%s: %s",
		    rp_conn_peer_addr(c) ? rp_conn_peer_addr(c) : "conn", why);
		rp_conn_close(c, why);
	}
}

static void
conn_reject(
    struct rp_conn *c, int answer, json_t *id, int code, const char *msg)
{
	conn_reject_data(c, answer, id, code, msg, NULL);
}

static const struct rp_method *
find_method(const struct rp_conn *c, const char *name)
{
	for (uint32_t i = 0; i < c->nmethods; i++)
		if (strcmp(c->methods[i].name, name) == 0)
			return &c->methods[i];
	return NULL;
}

/* A response to one of our calls. */
static void
conn_response(struct rp_conn *c, struct rp_msg *m)
{
	struct rp_call *k = NULL;
	rp_reply_cb cb;
	void *arg;

	if (json_is_integer(m->id)) {
		json_int_t v = json_integer_value(m->id);

		for (k = LIST_FIRST(&c->calls); k != NULL;
		     k = LIST_NEXT(k, entry))
			if ((json_int_t)k->id == v)
				break;
	}
	if (k == NULL && json_is_integer(m->id) &&
	    call_was_given_up(c, json_integer_value(m->id))) {
		/* We stopped waiting (timeout, cancel): the peer is slow, not
		 * wrong. Ignored, and not counted as a rejected message. */
		log_debug("%s: late answer to call %lld ignored",
		    rp_conn_peer_addr(c) ? rp_conn_peer_addr(c) : "conn",
		    (long long)json_integer_value(m->id));
		return;
	}
	if (k == NULL) {
		char text[96];

		if (json_is_null(m->id))
			snprintf(text, sizeof(text),
			    "peer reported error %d: %.50s", m->err_code,
			    m->err_message);
		else
			snprintf(text, sizeof(text),
			    "response to an unknown id ignored");
		sanitize(text, sizeof(text), text);
		log_info("%s: %s",
		    rp_conn_peer_addr(c) ? rp_conn_peer_addr(c) : "conn", text);
		/* Not answered, but counted: a peer flooding us with stray
		 * responses is closed like any other bad peer. */
		conn_reject(c, 0, NULL, RP_ERR_NOT_FOUND, text);
		return;
	}
	c->bad_lines = 0;
	call_unlink(c, k);
	cb = k->cb;
	arg = k->arg;
	call_free(k);
	if (m->kind == RP_MSG_RESULT)
		cb(c, 0, m->result, arg);
	else
		cb(c, m->err_code != 0 ? m->err_code : RP_ERR_INTERNAL,
		    json_object_get(m->root, "error"), arg);
}

/*
 * The generic checks, in order, then the handler. Only the first failing
 * check answers (requests) or reports (notifications).
 */
static void
dispatch(struct rp_conn *c, struct rp_msg *m)
{
	const struct rp_method *meth;
	int is_req = m->kind == RP_MSG_REQUEST;
	json_t *params, *empty = NULL;
	char text[256], why[200];
	int rc;

	if ((meth = find_method(c, m->method)) == NULL) {
		snprintf(text, sizeof(text), "method not found: %s", m->method);
		conn_reject(c, is_req, m->id, RP_ERR_METHOD_NOT_FOUND, text);
		return;
	}
	if (!is_req && !(meth->flags & RP_M_NOTIFY_OK)) {
		snprintf(text, sizeof(text),
		    "%s must be called as a request (with an id)", m->method);
		conn_reject(c, 0, NULL, RP_ERR_INVALID_REQUEST, text);
		return;
	}
	if (!(meth->states & c->state)) {
		/* Would authenticating make it allowed? Then say so. */
		int code = (meth->states & (RP_ST_AGENT | RP_ST_HELPER)) &&
		        (c->state & RP_ST_PREAUTH)
		    ? RP_ERR_NOT_AUTHENTICATED
		    : RP_ERR_WRONG_STATE;

		snprintf(text, sizeof(text), "%s not allowed in state %s%s",
		    m->method, rp_conn_state_name(c->state),
		    code == RP_ERR_NOT_AUTHENTICATED ? ": not authenticated"
		                                     : "");
		conn_reject(c, is_req, m->id, code, text);
		return;
	}
	params = m->params;
	if (params == NULL && (params = empty = json_object()) == NULL) {
		conn_reject(c, is_req, m->id, RP_ERR_INTERNAL, "out of memory");
		return;
	}
	rc = meth->params != NULL
	    ? spec_check(meth->params, params, 0, why, sizeof(why))
	    : 0;
	if (rc == 2) {
		/* A key-less spec ("{s:s}") names no keys, so only the kind
		 * of container can be checked. Say so once, loudly, and keep
		 * serving: the handler still unpacks its params itself. */
		static int warned;

		if (!warned) {
			warned = 1;
			log_errx("method table: %s: params spec \"%s\": %s; "
			         "only the container type is checked",
			    m->method, meth->params, why);
		}
		rc = 0;
		if ((meth->params[0] == '{' && !json_is_object(params)) ||
		    (meth->params[0] == '[' && !json_is_array(params))) {
			snprintf(why, sizeof(why), "Expected %s",
			    meth->params[0] == '{' ? "an object" : "an array");
			rc = 1;
		}
	}
	if (rc != 0) {
		if (rc < 0) {
			/* Our bug, not the peer's: say so loudly and do not
			 * count it against the peer. */
			log_errx("method table: %s: params spec \"%s\": %s",
			    m->method, meth->params, why);
			if (is_req)
				conn_send_error(c, m->id, RP_ERR_INTERNAL,
				    "server method table error", NULL);
		} else {
			snprintf(text, sizeof(text),
			    "invalid params for %s: %s", m->method, why);
			conn_reject(
			    c, is_req, m->id, RP_ERR_INVALID_PARAMS, text);
		}
		json_decref(empty);
		return;
	}
	c->bad_lines = 0;
	meth->handler(c, m->id, params, c->ctx);
	json_decref(empty);
}

static void
conn_line(struct rp_conn *c, const char *line, size_t len)
{
	struct rp_msg m;
	json_t *bad_id = NULL;
	char err[256];
	int rc;

	rc = rp_msg_parse(line, len, &m, &bad_id, err, sizeof(err));
	if (rc != 0) {
		/* Never answer a response, however broken: two peers could
		 * otherwise bounce errors forever. */
		int answer = m.kind != RP_MSG_RESULT && m.kind != RP_MSG_ERROR;

		conn_reject(c, answer, bad_id, rc, err);
		json_decref(bad_id);
		return;
	}
	switch (m.kind) {
	case RP_MSG_RESULT:
	case RP_MSG_ERROR:
		conn_response(c, &m);
		break;
	case RP_MSG_REQUEST:
	case RP_MSG_NOTIFICATION:
		dispatch(c, &m);
		break;
	}
	rp_msg_clear(&m);
}

static void
conn_process(struct rp_conn *c)
{
	char *line;
	size_t len, off;
	char text[96];

	if ((c->flags & CF_IN_INPUT) || !conn_can_read(c))
		return;
	rp_conn_ref(c);
	c->flags |= CF_IN_INPUT;
	while (conn_can_read(c)) {
		switch (rp_frame_next(&c->frame, c->in, &line, &len, &off)) {
		case RP_FRAME_NEED_MORE:
			goto out;
		case RP_FRAME_TOO_LONG:
			snprintf(text, sizeof(text),
			    "line longer than %u bytes", c->frame.max);
			/* JSON-RPC's own code; the reason says which rule. */
			conn_reject_data(c, 1, NULL, RP_ERR_INVALID_REQUEST,
			    text,
			    json_pack("{s:s, s:i}", "reason",
			        rp_err_name(RP_ERR_LINE_TOO_LONG), "max",
			        (json_int_t)c->frame.max));
			break;
		case RP_FRAME_BAD_UTF8:
			snprintf(text, sizeof(text),
			    "invalid UTF-8 at byte offset %zu", off);
			conn_reject(c, 1, NULL, RP_ERR_PARSE, text);
			free(line);
			break;
		case RP_FRAME_LINE:
			conn_line(c, line, len);
			free(line);
			break;
		}
		/* Backpressure: stop taking requests while the peer is not
		 * reading our answers. */
		if (rp_conn_is_open(c) &&
		    c->ops->out_pending(c->io) > RP_CONN_OUT_HIGH) {
			c->flags |= CF_PAUSED;
			if (c->ops->set_reading != NULL)
				c->ops->set_reading(c->io, 0);
		}
	}
out:
	c->flags &= ~CF_IN_INPUT;
	rp_conn_unref(c);
}

void
rp_conn_input(struct rp_conn *c, struct evbuffer *in)
{
	if (c->io == NULL)
		return;
	c->in = in;
	conn_process(c);
}

void
rp_conn_drained(struct rp_conn *c)
{
	if (!(c->flags & CF_PAUSED) || !rp_conn_is_open(c))
		return;
	if (c->ops->out_pending(c->io) > RP_CONN_OUT_HIGH)
		return;
	c->flags &= ~CF_PAUSED;
	if (c->ops->set_reading != NULL)
		c->ops->set_reading(c->io, 1);
	conn_process(c);
}
