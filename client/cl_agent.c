/*
 * cl_agent.c - raagent's engine (see cl_agent.h).
 *
 * Everything runs on one libevent loop: the broker connection (rp_conn
 * over rp_tls), the prompt children (cl_prompt), the tunnels (cl_tunnel),
 * the session poll and the control socket. The broker's requests are one
 * method table; each ticket the broker told us about has one record here,
 * which remembers whether a user of this machine accepted it: a
 * ticket.connect for a ticket nobody accepted here is refused, whatever
 * the broker says.
 */
#include <errno.h>
#include <ifaddrs.h>
#include <grp.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "cl_agent.h"
#include "cl_agent_config.h"
#include "cl_prompt.h"
#include "cl_rfb.h"
#include "cl_sessions.h"
#include "cl_tunnel.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_log.h"
#include "rp_tls.h"

#define AGENT_SOFTWARE "raagent/0.1"
#define BACKOFF_FLOOR_MS 100
#define CTL_LINE_MAX 256
#define CTL_CLIENTS_MAX 16
#define TICKETS_MAX 64
/* session.events kept while the broker cannot be told (see
 * session_event): one full session's worth for many tickets. */
#define EVQ_MAX 64

struct aticket {
	struct aticket *next;
	struct cl_agent *a;
	char id[80];
	char helper[160];
	char mode[16];
	long long expires;
	int accepted;
	int unattended; /* accepted by [prompt] unattended, nobody here */
	char user[160], session[32]; /* who accepted */
	struct cl_prompt *prompt;    /* offer or control prompt running */
	struct rp_conn *prompt_conn; /* to answer on (ref held) */
	json_t *prompt_id;
	int prompt_control;
	struct cl_tunnel *tun;
	struct cl_rfb *rfb;
	int connected;
	int control;
	int ending; /* revoked/expired: free when the tunnel is gone */
};

struct cl_agent {
	struct event_base *base;
	const struct cl_agent_config *cfg;
	char self[512];
	struct rp_tls_ctx *tls_ctx;
	struct rp_tls_ctx *relay_ctx; /* same credentials, stream mode */
	void *tls_session; /* for resumption on the next connection */
	size_t tls_session_len;
	unsigned connects, resumed;
	/* broker connection */
	struct rp_tls *tls; /* during the handshake */
	struct rp_conn *conn;
	int registered;
	time_t up_since;
	unsigned attempt;
	unsigned keepalive_s;
	struct event *retry, *ping, *poll;
	int stopping;
	/* the broker's name, looked up on the loop (evdns) */
	struct evdns_base *dns;
	struct lookup *lookup;                     /* in progress, or NULL */
	struct event *lookup_timer;                /* resolve_timeout */
	struct evutil_addrinfo *addrs, *next_addr; /* being tried in turn */
	unsigned naddrs, addr_idx;
	char fqdn[256];
	/* sessions */
	struct cl_session *sess;
	size_t nsess;
	struct cl_sessions_monitor *mon; /* logind notifications, or NULL */
	struct event *mon_ev;
	char *sess_json;
	/* tickets */
	struct aticket *tickets;
	size_t ntickets;
	/* session.events waiting for a registered connection, oldest
	 * first (a ring); each stamped with its time ("at") */
	json_t *evq[EVQ_MAX];
	size_t evq_head, evq_len;
	unsigned long long evq_dropped;
	/* control socket */
	struct evconnlistener *ctl;
	char ctl_path[512];
	size_t nctl;
};

/* One broker name lookup. evdns calls back even for a cancelled request
 * (on a later loop turn), so the record is its own allocation, freed by
 * that callback; a == NULL once the agent no longer wants the answer. */
struct lookup {
	struct cl_agent *a;
	struct evdns_getaddrinfo_request *req;
};

static void agent_connect(struct cl_agent *a);
static void connect_next(struct cl_agent *a);
static void addrs_clear(struct cl_agent *a);
static void ticket_free(struct aticket *t);
static const char *unattended_refusal(struct cl_agent *a, const char *mode);

/* ---- tickets ---------------------------------------------------------- */

static struct aticket *
ticket_find(struct cl_agent *a, const char *id)
{
	for (struct aticket *t = a->tickets; t != NULL; t = t->next)
		if (strcmp(t->id, id) == 0)
			return t;
	return NULL;
}

static struct aticket *
ticket_get(struct cl_agent *a, const char *id)
{
	struct aticket *t = ticket_find(a, id);

	if (t != NULL || a->ntickets >= TICKETS_MAX || strlen(id) >= 80)
		return t;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->a = a;
	snprintf(t->id, sizeof(t->id), "%s", id);
	t->next = a->tickets;
	a->tickets = t;
	a->ntickets++;
	return t;
}

static void
ticket_unlink(struct aticket *t)
{
	struct cl_agent *a = t->a;

	for (struct aticket **pp = &a->tickets; *pp != NULL; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			a->ntickets--;
			break;
		}
}

/* Answers a pending prompt request (if any) and forgets it. */
static void
ticket_answer(
    struct aticket *t, int accepted, const char *user, const char *session)
{
	json_t *r;

	if (t->prompt_conn == NULL)
		return;
	r = json_pack("{s:s}", "answer", accepted ? "accept" : "decline");
	if (user != NULL)
		json_object_set_new(r, "user", json_string(user));
	if (session != NULL && !t->prompt_control)
		json_object_set_new(r, "session", json_string(session));
	rp_conn_reply(t->prompt_conn, t->prompt_id, r);
	json_decref(t->prompt_id);
	t->prompt_id = NULL;
	rp_conn_unref(t->prompt_conn);
	t->prompt_conn = NULL;
}

static void
ticket_free(struct aticket *t)
{
	if (t->prompt != NULL) {
		cl_prompt_cancel(t->prompt);
		t->prompt = NULL;
	}
	ticket_answer(t, 0, NULL, NULL);
	ticket_unlink(t);
	if (t->rfb != NULL)
		cl_rfb_free(t->rfb);
	free(t);
}

/* A ticket ends: tear down what it has; freed now or when the tunnel says
 * it is gone. */
static void
ticket_end(struct aticket *t, const char *why)
{
	if (t->prompt != NULL) {
		cl_prompt_cancel(t->prompt);
		t->prompt = NULL;
	}
	ticket_answer(t, 0, NULL, NULL);
	if (t->tun != NULL) {
		t->ending = 1;
		cl_tunnel_close(t->tun, why);
		return; /* freed in tun_closed */
	}
	ticket_free(t);
}

/* ---- broker calls ----------------------------------------------------- */

static void
ignore_reply(struct rp_conn *c, int code, json_t *result, void *arg)
{
	const char *what = arg;

	(void)c;
	if (code != 0)
		log_warnx("broker refused %s: %s (%s)", what, rp_err_name(code),
		    result
		        ? json_string_value(json_object_get(result, "message"))
		        : "no answer");
}

/* Sends the queued session.events, in order, on the registered
 * connection; each one leaves the queue as it is written. */
static void
evq_flush(struct cl_agent *a)
{
	size_t n = a->evq_len;
	json_t *p;

	if (n > 0)
		log_info("sending %zu session.event(s) queued while the "
		         "broker was not connected",
		    n);
	while (a->evq_len > 0 && a->conn != NULL && a->registered) {
		p = a->evq[a->evq_head];
		a->evq[a->evq_head] = NULL;
		a->evq_head = (a->evq_head + 1) % EVQ_MAX;
		a->evq_len--;
		rp_conn_call(a->conn, "session.event", p, 0, ignore_reply,
		    (void *)"session.event");
	}
}

/*
 * session.event: sent at once on the registered connection; without one
 * (broker restarting, network down) queued with the time it happened
 * ("at") and sent, oldest first, as soon as agent.register succeeds
 * again (evq_flush). At most once: an event leaves the queue when it is
 * written, so one that was on its way when a connection died is lost,
 * never sent twice. A full queue drops its oldest event.
 */
static void
session_event(struct cl_agent *a, json_t *p)
{
	json_t **slot;

	if (p == NULL)
		return;
	if (a->conn != NULL && a->registered)
		evq_flush(a); /* empty already, but order first */
	if (a->conn != NULL && a->registered) {
		rp_conn_call(a->conn, "session.event", p, 0, ignore_reply,
		    (void *)"session.event");
		return;
	}
	if (a->evq_len == EVQ_MAX) {
		slot = &a->evq[a->evq_head];
		a->evq_dropped++;
		log_warnx("session.event queue full: dropped %s for %s "
		          "(%llu dropped so far)",
		    json_string_value(json_object_get(*slot, "event")),
		    json_string_value(json_object_get(*slot, "ticket")),
		    a->evq_dropped);
		json_decref(*slot);
		a->evq_head = (a->evq_head + 1) % EVQ_MAX;
		a->evq_len--;
	}
	json_object_set_new(p, "at", json_integer((json_int_t)time(NULL)));
	log_warnx("session.event %s for %s queued: broker not connected "
	          "(%zu waiting)",
	    json_string_value(json_object_get(p, "event")),
	    json_string_value(json_object_get(p, "ticket")), a->evq_len + 1);
	a->evq[(a->evq_head + a->evq_len) % EVQ_MAX] = p;
	a->evq_len++;
}

static void
evq_clear(struct cl_agent *a)
{
	while (a->evq_len > 0) {
		json_decref(a->evq[a->evq_head]);
		a->evq[a->evq_head] = NULL;
		a->evq_head = (a->evq_head + 1) % EVQ_MAX;
		a->evq_len--;
	}
}

static void
run_start_command(struct cl_agent *a, const char *mode, const char *ticket)
{
	char *argv[4];

	if (a->cfg->start_command == NULL)
		return;
	argv[0] = a->cfg->start_command;
	argv[1] = (char *)mode;
	argv[2] = (char *)ticket;
	argv[3] = NULL;
	if (cl_spawn_detached(argv) != 0)
		log_warnx(
		    "start_command %s %s failed", a->cfg->start_command, mode);
}

/* ---- prompts ---------------------------------------------------------- */

static void
notify_take_control(struct aticket *t)
{
	struct cl_agent *a = t->a;
	char script[1024];
	char *argv[5];

	if (a->cfg->prompt != CL_PROMPT_GRAPHICAL)
		return;
	/* A desktop notification with a button running take-control; shown
	 * on every graphical session (best effort). */
	for (size_t i = 0; i < a->nsess; i++) {
		const struct cl_session *s = &a->sess[i];
		if (s->display[0] == '\0' || s->uid == (uid_t)-1)
			continue;
		snprintf(script, sizeof(script),
		    "export DISPLAY='%s' XDG_RUNTIME_DIR=/run/user/%u "
		    "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/%u/bus; "
		    "r=$(setpriv --reuid=%u --regid=%u --init-groups "
		    "notify-send --wait --action=take='Take back control' "
		    "'Remote assistance' 'The helper controls this computer.' "
		    "2>/dev/null); "
		    "[ \"$r\" = take ] && exec '%s' -f '%s' take-control %s",
		    s->display, (unsigned)s->uid, (unsigned)s->uid,
		    (unsigned)s->uid, (unsigned)s->uid, a->self, a->cfg->path,
		    t->id);
		argv[0] = (char *)"/bin/sh";
		argv[1] = (char *)"-c";
		argv[2] = script;
		argv[3] = NULL;
		(void)cl_spawn_detached(argv);
	}
}

static void
prompt_done(struct cl_prompt *p, int accepted, const char *user,
    const char *session, void *arg)
{
	struct aticket *t = arg;
	struct cl_agent *a = t->a;

	(void)p;
	t->prompt = NULL;
	if (!t->prompt_control) {
		t->accepted = accepted;
		if (accepted) {
			snprintf(t->user, sizeof(t->user), "%s", user);
			snprintf(t->session, sizeof(t->session), "%s", session);
		}
		log_info("ticket %s: offer from %s %s%s%s", t->id, t->helper,
		    accepted ? "accepted by " : "declined",
		    accepted ? user : "", "");
		ticket_answer(t, accepted, user, session);
		if (!accepted)
			ticket_free(t);
		return;
	}
	log_info("ticket %s: control %s%s", t->id,
	    accepted ? "granted by " : "declined", accepted ? user : "");
	if (accepted && t->tun != NULL) {
		t->control = 1;
		if (t->rfb != NULL)
			cl_rfb_set_control(t->rfb, 1);
		else
			run_start_command(a, "control", t->id);
	}
	ticket_answer(t, accepted && t->tun != NULL, user, NULL);
	if (accepted && t->tun != NULL) {
		session_event(a,
		    json_pack("{s:s, s:s, s:s}", "ticket", t->id, "event",
		        "control_started", "user", user));
		notify_take_control(t);
	}
}

static unsigned
prompt_timeout(struct cl_agent *a, json_t *params)
{
	json_int_t tmo = json_integer_value(json_object_get(params, "timeout"));

	if (tmo <= 0 || tmo > 3600)
		tmo = 60;
	if (tmo > (json_int_t)a->cfg->prompt_margin_s + 1)
		tmo -= a->cfg->prompt_margin_s;
	else
		tmo = 1;
	return (unsigned)tmo;
}

static void
h_novice_prompt(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct cl_agent *a = ctx;
	const char *tid = json_string_value(json_object_get(params, "ticket"));
	const char *helper =
	    json_string_value(json_object_get(params, "helper"));
	const char *mode = json_string_value(json_object_get(params, "mode"));
	struct cl_prompt_req req;
	struct aticket *t;

	if (id == NULL)
		return;
	t = ticket_get(a, tid);
	if (t == NULL) {
		rp_conn_error(c, id, RP_ERR_BUSY, "too many tickets", NULL);
		return;
	}
	if (t->prompt != NULL || t->prompt_conn != NULL) {
		rp_conn_error(c, id, RP_ERR_BUSY, "already prompting", NULL);
		return;
	}
	snprintf(t->helper, sizeof(t->helper), "%s", helper ? helper : "?");
	snprintf(t->mode, sizeof(t->mode), "%s", mode ? mode : "view");
	t->expires = json_integer_value(json_object_get(params, "expires"));
	memset(&req, 0, sizeof(req));
	req.kind = "offer";
	req.ticket = t->id;
	req.helper = t->helper;
	req.helper_host =
	    json_string_value(json_object_get(params, "helper_host"));
	req.mode = t->mode;
	req.timeout_s = prompt_timeout(a, params);
	t->prompt_control = 0;
	rp_conn_ref(c);
	t->prompt_conn = c;
	t->prompt_id = json_incref(id);
	t->prompt = cl_prompt_start(
	    a->base, a->cfg, a->sess, a->nsess, &req, prompt_done, t);
	if (t->prompt == NULL)
		ticket_free(t); /* answers decline */
}

static void
h_control_prompt(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct cl_agent *a = ctx;
	const char *tid = json_string_value(json_object_get(params, "ticket"));
	struct aticket *t = ticket_find(a, tid);
	struct cl_prompt_req req;
	struct cl_session *who = NULL;
	size_t nwho = 0;

	if (id == NULL)
		return;
	if (t == NULL || t->tun == NULL || !t->connected) {
		rp_conn_error(c, id, RP_ERR_NOT_FOUND, "no session here", NULL);
		return;
	}
	if (t->prompt != NULL || t->prompt_conn != NULL) {
		rp_conn_error(c, id, RP_ERR_BUSY, "already prompting", NULL);
		return;
	}
	if (t->unattended && !strcmp(t->mode, "control") &&
	    unattended_refusal(a, "control") == NULL) {
		/* Nobody to ask, and raagent.conf says yes for them. */
		log_warnx(
		    "ticket %s: control granted (unattended): nobody is "
		    "logged on and raagent.conf allows unattended control",
		    t->id);
		t->prompt_control = 1;
		rp_conn_ref(c);
		t->prompt_conn = c;
		t->prompt_id = json_incref(id);
		prompt_done(NULL, 1, "(nobody)", NULL, t);
		return;
	}
	memset(&req, 0, sizeof(req));
	req.kind = "control";
	req.ticket = t->id;
	req.helper = json_string_value(json_object_get(params, "helper"));
	if (req.helper == NULL)
		req.helper = t->helper;
	req.mode = "control";
	req.timeout_s = prompt_timeout(a, params);
	/* The user who accepted the offer decides; anyone if that session
	 * is gone. */
	for (size_t i = 0; i < a->nsess; i++)
		if (strcmp(a->sess[i].id, t->session) == 0) {
			who = &a->sess[i];
			nwho = 1;
		}
	if (who == NULL) {
		who = a->sess;
		nwho = a->nsess;
	}
	t->prompt_control = 1;
	rp_conn_ref(c);
	t->prompt_conn = c;
	t->prompt_id = json_incref(id);
	t->prompt =
	    cl_prompt_start(a->base, a->cfg, who, nwho, &req, prompt_done, t);
	if (t->prompt == NULL)
		ticket_answer(t, 0, NULL, NULL);
}

/* ---- tunnels ---------------------------------------------------------- */

static void
tun_connected(struct cl_tunnel *tun, const char *via, const char *address,
    json_t *tried, void *arg)
{
	struct aticket *t = arg;
	json_t *p;

	(void)tun;
	t->connected = 1;
	p = json_pack("{s:s, s:s, s:s, s:O, s:s}", "ticket", t->id, "event",
	    "connected", "via", via, "tried", tried, "user", t->user);
	if (address != NULL)
		json_object_set_new(p, "address", json_string(address));
	session_event(t->a, p);
}

static void
tun_closed(struct cl_tunnel *tun, int connected, double seconds, uint64_t bytes,
    json_t *tried, const char *why, void *arg)
{
	struct aticket *t = arg;
	struct cl_agent *a = t->a;
	char tr[512] = "";

	(void)tun;
	t->tun = NULL;
	if (connected) {
		log_info(
		    "ticket %s: session ended after %.1f s, %llu bytes: %s",
		    t->id, seconds, (unsigned long long)bytes, why);
		session_event(a,
		    json_pack("{s:s, s:s, s:I, s:I, s:s}", "ticket", t->id,
		        "event", "disconnected", "session_seconds",
		        (json_int_t)(seconds + 0.5), "bytes", (json_int_t)bytes,
		        "user", t->user));
		if (t->rfb == NULL && t->control)
			run_start_command(a, "end", t->id);
	} else {
		char *s = json_dumps(tried, JSON_COMPACT);
		snprintf(tr, sizeof(tr), "%s", s ? s : "[]");
		free(s);
		log_warnx("ticket %s: no connection to the helper (tried %s): "
		          "%s",
		    t->id, tr, why);
		/* The user's consent stays until the ticket expires: the
		 * broker sends ticket.connect again after a reconnection.
		 * An unattended one is not kept: the next ticket.connect
		 * checks raagent.conf and the sessions afresh. */
		if (!t->ending && !t->unattended)
			return;
	}
	ticket_free(t);
}

static int
b64_decode(const char *in, unsigned char *out, size_t *outlen)
{
	gnutls_datum_t d = {(unsigned char *)in, (unsigned)strlen(in)}, r;

	if (gnutls_base64_decode2(&d, &r) < 0)
		return -1;
	if (r.size == 0 || r.size > *outlen) {
		gnutls_memset(r.data, 0, r.size);
		gnutls_free(r.data);
		return -1;
	}
	memcpy(out, r.data, r.size);
	*outlen = r.size;
	gnutls_memset(r.data, 0, r.size);
	gnutls_free(r.data);
	return 0;
}

/*
 * Why this machine refuses to connect without a local yes, in mode, right
 * now; NULL if [prompt] unattended allows it and nobody is logged on (the
 * sessions read again here, not the last poll's). A missing or unknown
 * mode counts as control.
 */
static const char *
unattended_refusal(struct cl_agent *a, const char *mode)
{
	enum cl_unattended need = mode != NULL && !strcmp(mode, "view")
	    ? CL_UNATT_VIEW
	    : CL_UNATT_CONTROL;
	struct cl_session *v = NULL;
	size_t n = 0;
	const char *src = NULL;

	if (a->cfg->unattended == CL_UNATT_NO)
		return "unattended access is off in raagent.conf";
	if (a->cfg->unattended < need)
		return "unattended = view in raagent.conf, control asked";
	if (cl_sessions_read(a->cfg, &v, &n, &src) != 0)
		return "cannot read the sessions";
	free(v);
	if (n > 0)
		return "a user is logged on";
	return NULL;
}

/* Never connect for a ticket nobody here said yes to: 1007 declined, and
 * the reason in the log. */
static void
refuse_connect(struct rp_conn *c, json_t *id, const char *tid, const char *why)
{
	log_warnx("ticket %s: ticket.connect refused: not accepted on this "
	          "machine (%s)",
	    tid, why);
	rp_conn_error(
	    c, id, RP_ERR_DECLINED, "not accepted on this machine", NULL);
}

/* A ticket.connect for a ticket no local user accepted: a ticket record
 * accepted by "(nobody)" when raagent.conf and the sessions allow it,
 * else NULL with the request answered. */
static struct aticket *
unattended_accept(struct cl_agent *a, struct rp_conn *c, json_t *id,
    const char *tid, struct aticket *t, const char *mode)
{
	const char *why;

	if (t != NULL) /* a prompt of its own is running: it decides */
		why = "the local prompt has not said yes";
	else
		why = unattended_refusal(a, mode);
	if (why != NULL) {
		refuse_connect(c, id, tid, why);
		return NULL;
	}
	if ((t = ticket_get(a, tid)) == NULL) {
		rp_conn_error(c, id, RP_ERR_BUSY, "too many tickets", NULL);
		return NULL;
	}
	t->accepted = 1;
	t->unattended = 1;
	snprintf(t->user, sizeof(t->user), "%s", "(nobody)");
	snprintf(t->helper, sizeof(t->helper), "%s", "?");
	snprintf(t->mode, sizeof(t->mode), "%s",
	    mode != NULL && !strcmp(mode, "view") ? "view" : "control");
	log_warnx("ticket %s: accepted (unattended): nobody is logged on and "
	          "raagent.conf allows unattended %s; connecting, view only "
	          "until control is granted",
	    t->id, t->mode);
	return t;
}

static void
h_ticket_connect(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct cl_agent *a = ctx;
	const char *tid = json_string_value(json_object_get(params, "ticket"));
	const char *psk = json_string_value(json_object_get(params, "psk"));
	json_t *addrs = json_object_get(params, "addresses");
	json_t *relay = json_object_get(params, "relay");
	json_int_t ct =
	    json_integer_value(json_object_get(params, "connect_timeout"));
	struct aticket *t = ticket_find(a, tid);
	struct cl_tunnel_params tp;
	struct cl_tunnel_cbs cbs = {
	    .on_connected = tun_connected, .on_closed = tun_closed};
	unsigned char key[64];
	size_t keylen = sizeof(key);

	if (t == NULL || !t->accepted) {
		t = unattended_accept(a, c, id, tid, t,
		    json_string_value(json_object_get(params, "mode")));
		if (t == NULL)
			return;
	} else if (t->unattended && t->tun == NULL && !t->connected) {
		/* Sent again (a reconnection): still nobody here? */
		const char *why = unattended_refusal(a, t->mode);
		if (why != NULL) {
			refuse_connect(c, id, tid, why);
			ticket_free(t);
			return;
		}
	}
	if (t->tun != NULL || t->connected) {
		rp_conn_error(c, id, RP_ERR_TICKET_USED, NULL, NULL);
		return;
	}
	if (!json_is_array(addrs) || b64_decode(psk, key, &keylen) != 0) {
		rp_conn_error(
		    c, id, RP_ERR_INVALID_PARAMS, "bad addresses or psk", NULL);
		return;
	}
	if (ct <= 0 || ct > (json_int_t)a->cfg->connect_timeout_s)
		ct = a->cfg->connect_timeout_s;
	if (a->cfg->protocol == CL_PROTO_RFB && t->rfb == NULL)
		t->rfb = cl_rfb_new();
	memset(&tp, 0, sizeof(tp));
	tp.ticket = t->id;
	tp.psk = key;
	tp.psklen = keylen;
	tp.addresses = addrs;
	tp.timeout_ms = (unsigned)ct * 1000u;
	tp.relay = a->cfg->relay && (relay == NULL || json_is_true(relay));
	tp.broker_ctx = a->relay_ctx;
	tp.broker_host = a->cfg->broker_host;
	tp.broker_port = a->cfg->broker_port;
	tp.server_name = a->cfg->server_name;
	tp.target_host = a->cfg->target_host;
	tp.target_port = a->cfg->target_port;
	tp.rfb = t->rfb;
	if (a->cfg->protocol == CL_PROTO_RAW)
		run_start_command(a, "view", t->id);
	t->tun = cl_tunnel_start(a->base, &tp, &cbs, t);
	gnutls_memset(key, 0, sizeof(key));
	if (t->tun == NULL) {
		rp_conn_error(c, id, RP_ERR_INTERNAL, "cannot start", NULL);
		return;
	}
	rp_conn_reply(c, id, json_object());
}

/* The tickets this agent still holds (a prompt, a consent, a session),
 * for agent.register: the broker says which of them ended meanwhile. */
static json_t *
held_tickets(struct cl_agent *a)
{
	json_t *v = json_array();

	for (struct aticket *t = a->tickets; t != NULL && v != NULL;
	     t = t->next)
		json_array_append_new(v, json_string(t->id));
	return v;
}

static void
h_ticket_revoked(struct rp_conn *c, json_t *id, json_t *params, void *ctx)
{
	struct cl_agent *a = ctx;
	const char *tid = json_string_value(json_object_get(params, "ticket"));
	const char *why = json_string_value(json_object_get(params, "reason"));
	struct aticket *t = ticket_find(a, tid);

	(void)c;
	(void)id;
	if (t == NULL)
		return;
	log_info("ticket %s: %s by the broker", t->id, why ? why : "revoked");
	ticket_end(t, why ? why : "revoked");
}

static const struct rp_method agent_methods[] = {
    {.name = "novice.prompt",
        .states = RP_ST_ANY,
        .params = "{ticket:s, helper?:s, helper_host?:s, mode?:s, "
                  "timeout?:i, expires?:i}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = h_novice_prompt},
    {.name = "control.prompt",
        .states = RP_ST_ANY,
        .params = "{ticket:s, helper?:s, timeout?:i}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = h_control_prompt},
    {.name = "ticket.connect",
        .states = RP_ST_ANY,
        .params = "{ticket:s, psk:s, addresses:o, connect_timeout?:i, "
                  "mode?:s, relay?:b}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = h_ticket_connect},
    {.name = "ticket.revoked",
        .states = RP_ST_ANY,
        .params = "{ticket:s, reason?:s}",
        .flags = RP_M_NOTIFY_OK,
        .handler = h_ticket_revoked},
};

/* ---- sessions and addresses ------------------------------------------- */

static int
broker_is_loopback(const struct cl_agent *a)
{
	const char *h = a->cfg->broker_host;

	return !strncmp(h, "127.", 4) || !strcmp(h, "::1") ||
	    !strcmp(h, "localhost");
}

static json_t *
local_addresses(struct cl_agent *a)
{
	struct ifaddrs *ifa = NULL, *i;
	json_t *arr = json_array();
	char host[NI_MAXHOST];
	int loop_ok = broker_is_loopback(a);

	if (getifaddrs(&ifa) != 0)
		return arr;
	for (i = ifa; i != NULL && json_array_size(arr) < 32; i = i->ifa_next) {
		if (i->ifa_addr == NULL || !(i->ifa_flags & IFF_UP))
			continue;
		if (i->ifa_addr->sa_family != AF_INET &&
		    i->ifa_addr->sa_family != AF_INET6)
			continue;
		if ((i->ifa_flags & IFF_LOOPBACK) && !loop_ok)
			continue;
		if (getnameinfo(i->ifa_addr,
		        i->ifa_addr->sa_family == AF_INET
		            ? sizeof(struct sockaddr_in)
		            : sizeof(struct sockaddr_in6),
		        host, sizeof(host), NULL, 0, NI_NUMERICHOST) != 0)
			continue;
		if (strchr(host, '%') != NULL)
			continue; /* link-local with a scope */
		json_array_append_new(arr, json_string(host));
	}
	freeifaddrs(ifa);
	return arr;
}

/* Rereads the sessions; 1 if they changed. */
static int
sessions_refresh(struct cl_agent *a)
{
	struct cl_session *v;
	size_t n;
	const char *src;
	json_t *j;
	char *s;

	if (cl_sessions_read(a->cfg, &v, &n, &src) != 0)
		return 0;
	j = cl_sessions_json(v, n);
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	free(a->sess);
	a->sess = v;
	a->nsess = n;
	if (s != NULL && a->sess_json != NULL && !strcmp(s, a->sess_json)) {
		free(s);
		return 0;
	}
	log_info("sessions (%s): %s", src, s ? s : "?");
	free(a->sess_json);
	a->sess_json = s;
	return 1;
}

static void
poll_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_agent *a = arg;
	time_t now = time(NULL);
	struct aticket *t, *next;

	(void)fd;
	(void)ev;
	if (sessions_refresh(a) && a->conn != NULL && a->registered)
		rp_conn_call(a->conn, "agent.sessions",
		    json_pack("{s:o}", "sessions",
		        cl_sessions_json(a->sess, a->nsess)),
		    0, ignore_reply, (void *)"agent.sessions");
	/* Accepted tickets that never connected are forgotten after their
	 * expiry. */
	for (t = a->tickets; t != NULL; t = next) {
		next = t->next;
		if (t->tun == NULL && t->prompt == NULL && t->expires > 0 &&
		    now > t->expires + 60)
			ticket_free(t);
	}
}

void
cl_agent_sessions_changed(struct cl_agent *a)
{
	poll_cb(-1, 0, a);
}

static void
mon_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_agent *a = arg;

	(void)fd;
	(void)ev;
	cl_sessions_monitor_flush(a->mon);
	poll_cb(-1, 0, a);
}

/* ---- the broker connection ------------------------------------------ */

static unsigned
backoff_ms(struct cl_agent *a)
{
	uint64_t cap = a->cfg->backoff_cap_ms, d = a->cfg->backoff_base_ms;
	uint32_t r = 0;

	for (unsigned i = 0; i < a->attempt && d < cap; i++)
		d *= 2;
	if (d > cap)
		d = cap;
	if (a->attempt < 32)
		a->attempt++;
	(void)gnutls_rnd(GNUTLS_RND_NONCE, &r, sizeof(r));
	d = (uint64_t)r % (d + 1); /* full jitter */
	return (unsigned)(d < BACKOFF_FLOOR_MS ? BACKOFF_FLOOR_MS : d);
}

static void
schedule_retry(struct cl_agent *a)
{
	unsigned ms;
	struct timeval tv;

	if (a->stopping)
		return;
	if (a->up_since != 0 &&
	    time(NULL) - a->up_since >= (time_t)a->cfg->stable_s)
		a->attempt = 0;
	a->up_since = 0;
	ms = backoff_ms(a);
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	log_info("reconnecting to the broker in %u ms", ms);
	evtimer_add(a->retry, &tv);
}

static void
conn_closed(struct rp_conn *c, const char *why, void *ctx)
{
	struct cl_agent *a = ctx;

	log_warnx("broker connection closed: %s", why);
	if (a->conn == c) {
		a->conn = NULL;
		a->registered = 0;
		evtimer_del(a->ping);
		rp_conn_unref(c);
	}
	schedule_retry(a);
}

static void
conn_protocol_error(struct rp_conn *c, int code, const char *msg, void *ctx)
{
	(void)c;
	(void)ctx;
	log_warnx("broker: protocol error %s: %s", rp_err_name(code), msg);
}

static const struct rp_conn_cbs conn_cbs = {
    .on_close = conn_closed,
    .on_protocol_error = conn_protocol_error,
};

static void
ping_reply(struct rp_conn *c, int code, json_t *result, void *arg)
{
	(void)result;
	(void)arg;
	if (code == RP_ERR_TIMEOUT) {
		log_warnx("broker did not answer ping: reconnecting");
		rp_conn_close(c, "ping timeout");
	}
}

static void
ping_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_agent *a = arg;

	(void)fd;
	(void)ev;
	if (a->conn != NULL && a->registered)
		rp_conn_call(a->conn, "ping", json_object(),
		    a->keepalive_s * 1000u, ping_reply, a);
}

static void
register_reply(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct cl_agent *a = arg;
	json_int_t ka;
	struct timeval tv;
	struct aticket *t;

	if (code != 0) {
		log_warnx("agent.register refused: %s (%s)", rp_err_name(code),
		    json_string_value(json_object_get(result, "message")));
		rp_conn_close(c, "register refused");
		return;
	}
	ka = json_integer_value(json_object_get(result, "keepalive"));
	a->keepalive_s = ka > 0 && ka < 3600 ? (unsigned)ka : 60;
	a->registered = 1;
	a->up_since = time(NULL);
	tv.tv_sec = a->keepalive_s;
	tv.tv_usec = 0;
	evtimer_add(a->ping, &tv);
	log_info("registered with the broker as %s (keepalive %u s)", a->fqdn,
	    a->keepalive_s);
	/* What happened while the broker could not hear us, in order,
	 * before anything newer. */
	evq_flush(a);
	/* Prompts that were waiting on the old connection cannot be
	 * answered any more: the broker asks again. */
	for (t = a->tickets; t != NULL; t = t->next)
		if (t->prompt_conn != NULL && !rp_conn_is_open(t->prompt_conn))
			ticket_answer(t, 0, NULL, NULL);
}

static void
hello_reply(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct cl_agent *a = arg;
	const char *ident;
	json_t *p;

	if (code != 0) {
		log_warnx("broker refused hello: %s (%s)", rp_err_name(code),
		    json_string_value(json_object_get(result, "message")));
		rp_conn_close(c, "hello refused");
		return;
	}
	rp_conn_set_state(c, RP_ST_AGENT);
	{
		/* TLS 1.3 sends the session ticket after the handshake, with
		 * or before the first reply: keep it for the next connection
		 * (a broker restart then costs no full handshake). */
		void *d;
		size_t l;
		struct rp_tls *t = rp_conn_tls(c);
		if (t != NULL && rp_tls_get_session_data(t, &d, &l) == 0) {
			if (a->tls_session != NULL)
				gnutls_memset(
				    a->tls_session, 0, a->tls_session_len);
			free(a->tls_session);
			a->tls_session = d;
			a->tls_session_len = l;
			log_debug("kept a TLS session ticket (%zu bytes)", l);
		} else
			log_debug("no TLS session ticket from the broker");
	}
	ident = json_string_value(json_object_get(result, "identity"));
	if (a->cfg->fqdn != NULL)
		snprintf(a->fqdn, sizeof(a->fqdn), "%s", a->cfg->fqdn);
	else if (ident != NULL)
		snprintf(a->fqdn, sizeof(a->fqdn), "%s", ident);
	sessions_refresh(a);
	p = json_pack("{s:s, s:o, s:o, s:o, s:s}", "fqdn", a->fqdn, "addresses",
	    local_addresses(a), "sessions", cl_sessions_json(a->sess, a->nsess),
	    "tickets", held_tickets(a), "software", AGENT_SOFTWARE);
	rp_conn_call(c, "agent.register", p, 0, register_reply, a);
}

static void
tls_ready(struct rp_tls *t, void *arg)
{
	struct cl_agent *a = arg;
	struct rp_conn_opts o;

	a->tls = NULL;
	addrs_clear(a);
	memset(&o, 0, sizeof(o));
	o.methods = agent_methods;
	o.nmethods = sizeof(agent_methods) / sizeof(agent_methods[0]);
	o.cbs = &conn_cbs;
	o.ctx = a;
	a->conn = rp_conn_new_tls(a->base, t, &o);
	if (a->conn == NULL) {
		rp_tls_close(t);
		return;
	}
	a->connects++;
	if (rp_tls_resumed(t))
		a->resumed++;
	log_info("connected to the broker %s (%s%s; %u of %u connections "
	         "resumed)",
	    rp_tls_peer_addr(t), rp_tls_version(t),
	    rp_tls_resumed(t) ? ", resumed session" : "", a->resumed,
	    a->connects);
	rp_conn_call(a->conn, "hello",
	    json_pack("{s:i, s:s, s:s}", "version", 1, "role", "agent",
	        "software", AGENT_SOFTWARE),
	    0, hello_reply, a);
}

static void
tls_closed(
    struct rp_tls *t, enum rp_tls_close_reason why, const char *msg, void *arg)
{
	struct cl_agent *a = arg;

	log_warnx("broker %s:%s%s%s: %s%s%s", a->cfg->broker_host,
	    a->cfg->broker_port, a->naddrs > 1 ? " at " : "",
	    a->naddrs > 1 ? rp_tls_peer_addr(t) : "",
	    rp_tls_close_reason_name(why), msg && *msg ? ": " : "",
	    msg ? msg : "");
	if (a->tls == t) {
		/* This attempt's address failed: the next one, if any. */
		a->tls = NULL;
		connect_next(a);
		return;
	}
	schedule_retry(a);
}

static const struct rp_tls_cbs broker_tls_cbs = {
    .on_ready = tls_ready,
    .on_close = tls_closed,
};

/* Forgets the addresses of the last lookup. */
static void
addrs_clear(struct cl_agent *a)
{
	if (a->addrs != NULL)
		evutil_freeaddrinfo(a->addrs);
	a->addrs = a->next_addr = NULL;
	a->naddrs = a->addr_idx = 0;
}

/* Connects to the next address of the lookup; after the last one the
 * attempt has failed and is retried with backoff. */
static void
connect_next(struct cl_agent *a)
{
	struct rp_tls_connect_extra x;
	char host[NI_MAXHOST];

	while (!a->stopping && a->next_addr != NULL) {
		struct evutil_addrinfo *ai = a->next_addr;

		a->next_addr = ai->ai_next;
		a->addr_idx++;
		if (getnameinfo(ai->ai_addr, (socklen_t)ai->ai_addrlen, host,
		        sizeof(host), NULL, 0, NI_NUMERICHOST) != 0)
			snprintf(host, sizeof(host), "?");
		log_debug("broker %s:%s: connecting to %s (address %u of %u)",
		    a->cfg->broker_host, a->cfg->broker_port, host, a->addr_idx,
		    a->naddrs);
		memset(&x, 0, sizeof(x));
		x.session = a->tls_session;
		x.session_len = a->tls_session_len;
		a->tls = rp_tls_connect_ex(a->tls_ctx, a->base, ai->ai_addr,
		    (int)ai->ai_addrlen, a->cfg->server_name, &x,
		    &broker_tls_cbs, a);
		if (a->tls != NULL)
			return;
		log_warnx("cannot connect to the broker %s:%s at %s",
		    a->cfg->broker_host, a->cfg->broker_port, host);
	}
	addrs_clear(a);
	schedule_retry(a);
}

/* A lookup's answer: try its addresses, or count a failed attempt. */
static void
lookup_result(struct cl_agent *a, int r, struct evutil_addrinfo *res)
{
	a->lookup = NULL;
	evtimer_del(a->lookup_timer);
	if (r != 0 || res == NULL) {
		log_warnx("broker %s: name lookup failed: %s",
		    a->cfg->broker_host,
		    r != 0 ? evutil_gai_strerror(r) : "no address");
		if (res != NULL)
			evutil_freeaddrinfo(res);
		schedule_retry(a);
		return;
	}
	addrs_clear(a);
	a->addrs = a->next_addr = res;
	for (struct evutil_addrinfo *i = res; i != NULL; i = i->ai_next)
		a->naddrs++;
	connect_next(a);
}

/* evdns' callback: answer, failure, or the cancel of a lookup the agent
 * dropped (then only the record is freed). */
static void
lookup_done(int r, struct evutil_addrinfo *res, void *arg)
{
	struct lookup *l = arg;
	struct cl_agent *a = l->a;

	free(l);
	if (a == NULL) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		return;
	}
	lookup_result(a, r, res);
}

/* Drops a lookup in progress; its callback still comes (and frees it)
 * on a later turn of the loop, without touching the agent. */
static void
lookup_cancel(struct cl_agent *a)
{
	struct lookup *l = a->lookup;

	if (l == NULL)
		return;
	a->lookup = NULL;
	l->a = NULL;
	evtimer_del(a->lookup_timer);
	if (l->req != NULL)
		evdns_getaddrinfo_cancel(l->req);
}

static void
lookup_timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_agent *a = arg;

	(void)fd;
	(void)ev;
	log_warnx("broker %s: name lookup failed: no answer within %u s",
	    a->cfg->broker_host, a->cfg->resolve_timeout_s);
	lookup_cancel(a);
	schedule_retry(a);
}

/* The resolver on the agent's loop: /etc/resolv.conf and /etc/hosts, or
 * [agent] nameserver and /etc/hosts. */
static struct evdns_base *
dns_new(struct event_base *base, const struct cl_agent_config *cfg)
{
	struct evdns_base *d;

	if (cfg->nameserver == NULL) {
		d = evdns_base_new(base,
		    EVDNS_BASE_INITIALIZE_NAMESERVERS |
		        EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		return d;
	}
	d = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (d == NULL)
		return NULL;
	(void)evdns_base_load_hosts(d, NULL);
	if (evdns_base_nameserver_ip_add(d, cfg->nameserver) != 0) {
		evdns_base_free(d, 0);
		return NULL;
	}
	return d;
}

/* One connection attempt: look the broker's name up (a numeric address
 * needs no lookup), then try its addresses in turn. */
static void
agent_connect(struct cl_agent *a)
{
	struct evutil_addrinfo hints, *res = NULL;
	struct evdns_getaddrinfo_request *req;
	struct lookup *l;
	struct timeval tv;

	if (a->stopping || a->conn != NULL || a->tls != NULL ||
	    a->lookup != NULL)
		return;
	addrs_clear(a);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_NUMERICSERV | EVUTIL_AI_NUMERICHOST;
	if (evutil_getaddrinfo(
	        a->cfg->broker_host, a->cfg->broker_port, &hints, &res) == 0 &&
	    res != NULL) {
		lookup_result(a, 0, res); /* numeric: no DNS */
		return;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL) {
		log_warnx("broker %s: out of memory", a->cfg->broker_host);
		schedule_retry(a);
		return;
	}
	l->a = a;
	a->lookup = l;
	tv.tv_sec = a->cfg->resolve_timeout_s;
	tv.tv_usec = 0;
	evtimer_add(a->lookup_timer, &tv);
	hints.ai_flags = EVUTIL_AI_NUMERICSERV | EVUTIL_AI_ADDRCONFIG;
	req = evdns_getaddrinfo(a->dns, a->cfg->broker_host,
	    a->cfg->broker_port, &hints, lookup_done, l);
	/* An answer from /etc/hosts (or an immediate failure) has already
	 * been handled: l is freed and a->lookup is NULL. */
	if (a->lookup != l)
		return;
	if (req == NULL) { /* no callback came and none will */
		a->lookup = NULL;
		free(l);
		lookup_result(a, EVUTIL_EAI_FAIL, NULL);
		return;
	}
	l->req = req;
}

static void
retry_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	agent_connect(arg);
}

/* ---- the control socket ------------------------------------------------ */

struct ctl_client {
	struct cl_agent *a;
	struct bufferevent *bev;
	uid_t uid;
	char expire[80]; /* ticket being expired */
	int waiting;     /* a broker call is pending for this client */
	int gone;        /* the client left while waiting */
};

static void
ctl_done(struct ctl_client *cc)
{
	if (cc->bev != NULL)
		bufferevent_free(cc->bev);
	cc->a->nctl--;
	free(cc);
}

static void
ctl_answer(struct ctl_client *cc, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);

	json_decref(j);
	cc->waiting = 0;
	if (cc->gone) {
		free(s);
		ctl_done(cc);
		return;
	}
	bufferevent_write(cc->bev, s ? s : "{}", s ? strlen(s) : 2);
	bufferevent_write(cc->bev, "\n", 1);
	free(s);
	bufferevent_disable(cc->bev, EV_READ);
}

static void
ctl_reply(struct rp_conn *c, int code, json_t *result, void *arg)
{
	struct ctl_client *cc = arg;

	(void)c;
	if (code == 0 && cc->expire[0] != '\0') {
		/* The broker does not send ticket.revoked to the agent that
		 * expired the ticket: end the session here at once. */
		struct aticket *t = ticket_find(cc->a, cc->expire);
		if (t != NULL)
			ticket_end(t, "expired by the user");
	}
	if (code != 0)
		ctl_answer(cc,
		    json_pack("{s:s, s:s}", "error", rp_err_name(code),
		        "message",
		        result &&
		                json_string_value(
		                    json_object_get(result, "message"))
		            ? json_string_value(
		                  json_object_get(result, "message"))
		            : rp_err_message(code)));
	else
		ctl_answer(cc, json_incref(result));
}

static void
ctl_user(const struct cl_agent *a, uid_t uid, char *out, size_t len)
{
	struct passwd *pw = getpwuid(uid);

	if (pw == NULL)
		snprintf(out, len, "uid%u", (unsigned)uid);
	else if (a->cfg->domain != NULL && !strchr(pw->pw_name, '\\') &&
	    !strchr(pw->pw_name, '@'))
		snprintf(out, len, "%s\\%s", a->cfg->domain, pw->pw_name);
	else
		snprintf(out, len, "%s", pw->pw_name);
}

static void
ctl_command(struct ctl_client *cc, char *line)
{
	struct cl_agent *a = cc->a;
	char user[200], *arg = strchr(line, ' ');
	struct aticket *t;

	if (arg != NULL)
		*arg++ = '\0';
	ctl_user(a, cc->uid, user, sizeof(user));
	if (!strcmp(line, "take-control") && arg != NULL) {
		t = ticket_find(a, arg);
		if (t == NULL || !t->control) {
			ctl_answer(cc,
			    json_pack("{s:s, s:s}", "error", "not_found",
			        "message", "no session under control"));
			return;
		}
		t->control = 0;
		if (t->rfb != NULL)
			cl_rfb_set_control(t->rfb, 0);
		else
			run_start_command(a, "view", t->id);
		log_info("ticket %s: %s took control back", t->id, user);
		session_event(a,
		    json_pack("{s:s, s:s, s:s}", "ticket", t->id, "event",
		        "control_ended", "user", user));
		ctl_answer(cc, json_pack("{s:s}", "control", "ended"));
		return;
	}
	if (a->conn == NULL || !a->registered) {
		ctl_answer(cc,
		    json_pack("{s:s, s:s}", "error", "connection_closed",
		        "message", "not connected to the broker"));
		return;
	}
	cc->waiting = 1;
	if (!strcmp(line, "tickets") && arg == NULL)
		rp_conn_call(
		    a->conn, "ticket.list", json_object(), 0, ctl_reply, cc);
	else if (!strcmp(line, "expire") && arg != NULL) {
		log_info("ticket %s: %s expires it", arg, user);
		snprintf(cc->expire, sizeof(cc->expire), "%s", arg);
		rp_conn_call(a->conn, "ticket.expire",
		    json_pack("{s:s, s:s}", "ticket", arg, "user", user), 0,
		    ctl_reply, cc);
	} else
		ctl_answer(cc,
		    json_pack("{s:s, s:s}", "error", "invalid_request",
		        "message", "tickets | expire ID | take-control ID"));
}

static void
ctl_read(struct bufferevent *bev, void *arg)
{
	struct ctl_client *cc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;

	if (cc->waiting)
		return;
	line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > CTL_LINE_MAX)
			ctl_done(cc);
		return;
	}
	if (n > CTL_LINE_MAX) {
		free(line);
		ctl_done(cc);
		return;
	}
	ctl_command(cc, line);
	free(line);
}

static void
ctl_write(struct bufferevent *bev, void *arg)
{
	struct ctl_client *cc = arg;

	if (!cc->waiting &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
	    !(bufferevent_get_enabled(bev) & EV_READ))
		ctl_done(cc);
}

static void
ctl_event(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_client *cc = arg;

	(void)bev;
	(void)what;
	if (cc->waiting) {
		/* The broker's answer will find nobody: free it then. */
		bufferevent_free(cc->bev);
		cc->bev = NULL;
		cc->gone = 1;
		return;
	}
	ctl_done(cc);
}

static void
ctl_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct cl_agent *a = arg;
	struct ctl_client *cc;
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	struct timeval tv = {10, 0};

	(void)l;
	(void)sa;
	(void)salen;
	if (a->nctl >= CTL_CLIENTS_MAX ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 ||
	    (cc = calloc(1, sizeof(*cc))) == NULL) {
		close(fd);
		return;
	}
	cc->a = a;
	cc->uid = cr.uid;
	cc->bev = bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (cc->bev == NULL) {
		close(fd);
		free(cc);
		return;
	}
	a->nctl++;
	bufferevent_setcb(cc->bev, ctl_read, ctl_write, ctl_event, cc);
	bufferevent_set_timeouts(cc->bev, &tv, &tv);
	bufferevent_enable(cc->bev, EV_READ | EV_WRITE);
}

static int
ctl_listen(struct cl_agent *a, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	evutil_socket_t fd;
	mode_t mode = 0600;
	struct group *gr = NULL;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if ((size_t)snprintf(a->ctl_path, sizeof(a->ctl_path),
	        "%s/raagent.sock", a->cfg->state_dir) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "state_dir too long for a socket path");
		return -1;
	}
	memcpy(sun.sun_path, a->ctl_path, strlen(a->ctl_path) + 1);
	if (mkdir(a->cfg->state_dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "state_dir %s: %s", a->cfg->state_dir,
		    strerror(errno));
		return -1;
	}
	if (a->cfg->control_group != NULL) {
		if ((gr = getgrnam(a->cfg->control_group)) == NULL) {
			snprintf(err, errlen, "control_group %s: no such group",
			    a->cfg->control_group);
			return -1;
		}
		mode = 0660;
	}
	(void)unlink(a->ctl_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 ||
	    chmod(a->ctl_path, mode) != 0 ||
	    (gr != NULL && chown(a->ctl_path, (uid_t)-1, gr->gr_gid) != 0) ||
	    listen(fd, 16) != 0) {
		snprintf(err, errlen, "control socket %s: %s", a->ctl_path,
		    strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	a->ctl = evconnlistener_new(a->base, ctl_accept, a,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (a->ctl == NULL) {
		close(fd);
		snprintf(err, errlen, "control socket: listener failed");
		return -1;
	}
	return 0;
}

int
cl_agent_control(const char *state_dir, const char *line, char *out,
    size_t outlen, unsigned timeout_ms)
{
	struct sockaddr_un sun;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	int fd;
	size_t used = 0;
	ssize_t n;

	out[0] = '\0';
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(
	    sun.sun_path, sizeof(sun.sun_path), "%s/raagent.sock", state_dir);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		snprintf(out, outlen, "%s: %s (is raagent running?)",
		    sun.sun_path, strerror(errno));
		close(fd);
		return -1;
	}
	if (write(fd, line, strlen(line)) != (ssize_t)strlen(line) ||
	    write(fd, "\n", 1) != 1) {
		snprintf(out, outlen, "write: %s", strerror(errno));
		close(fd);
		return -1;
	}
	while (used + 1 < outlen &&
	    (n = read(fd, out + used, outlen - used - 1)) > 0) {
		used += (size_t)n;
		if (memchr(out, '\n', used) != NULL)
			break;
	}
	out[used] = '\0';
	close(fd);
	if (used == 0) {
		snprintf(out, outlen, "no answer from raagent");
		return -1;
	}
	return 0;
}

/* ---- life cycle -------------------------------------------------------- */

struct cl_agent *
cl_agent_new(struct event_base *base, const struct cl_agent_config *cfg,
    const char *self_path, char *err, size_t errlen)
{
	struct cl_agent *a = calloc(1, sizeof(*a));
	struct rp_tls_opts o;

	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->base = base;
	a->cfg = cfg;
	snprintf(a->self, sizeof(a->self), "%s", self_path);
	memset(&o, 0, sizeof(o));
	o.role = RP_TLS_CLIENT;
	o.ca_file = cfg->ca;
	o.cert_file = cfg->cert;
	o.key_file = cfg->key;
	o.session_resumption = 1;
	a->tls_ctx = rp_tls_ctx_new(&o, err, errlen);
	o.session_resumption = 0;
	o.stream = 1;
	a->relay_ctx = a->tls_ctx ? rp_tls_ctx_new(&o, err, errlen) : NULL;
	a->retry = evtimer_new(base, retry_cb, a);
	a->lookup_timer = evtimer_new(base, lookup_timeout_cb, a);
	a->dns = dns_new(base, cfg);
	a->ping = event_new(base, -1, EV_PERSIST, ping_cb, a);
	a->poll = event_new(base, -1, EV_PERSIST, poll_cb, a);
	if (a->tls_ctx != NULL && a->relay_ctx != NULL && a->dns == NULL)
		snprintf(err, errlen, "cannot set up the resolver%s%s",
		    cfg->nameserver ? " with nameserver " : "",
		    cfg->nameserver ? cfg->nameserver : "");
	if (a->tls_ctx == NULL || a->relay_ctx == NULL || a->retry == NULL ||
	    a->lookup_timer == NULL || a->dns == NULL || a->ping == NULL ||
	    a->poll == NULL) {
		cl_agent_free(a);
		return NULL;
	}
	return a;
}

int
cl_agent_start(struct cl_agent *a, char *err, size_t errlen)
{
	struct timeval tv = {a->cfg->poll_s, 0};
	int fd;

	if (ctl_listen(a, err, errlen) != 0)
		return -1;
	sessions_refresh(a);
	evtimer_add(a->poll, &tv);
	/* logind tells us at once; the poll stays as a safety net. */
	if ((fd = cl_sessions_monitor_open(a->cfg, &a->mon)) >= 0) {
		a->mon_ev =
		    event_new(a->base, fd, EV_READ | EV_PERSIST, mon_cb, a);
		if (a->mon_ev != NULL)
			event_add(a->mon_ev, NULL);
		log_info("following logind session changes");
	}
	agent_connect(a);
	return 0;
}

void
cl_agent_stop(struct cl_agent *a)
{
	struct aticket *t, *next;

	a->stopping = 1;
	evtimer_del(a->retry);
	lookup_cancel(a);
	addrs_clear(a);
	evtimer_del(a->ping);
	evtimer_del(a->poll);
	if (a->mon_ev != NULL)
		event_del(a->mon_ev);
	for (t = a->tickets; t != NULL; t = next) {
		next = t->next;
		ticket_end(t, "agent stopping");
	}
	if (a->ctl != NULL) {
		evconnlistener_free(a->ctl);
		a->ctl = NULL;
		(void)unlink(a->ctl_path);
	}
	if (a->conn != NULL)
		rp_conn_close(a->conn, "agent stopping");
	if (a->tls != NULL)
		rp_tls_close(a->tls);
}

void
cl_agent_free(struct cl_agent *a)
{
	if (a == NULL)
		return;
	while (a->tickets != NULL) {
		struct aticket *t = a->tickets;
		if (t->tun != NULL) /* the loop is gone: just forget it */
			t->tun = NULL;
		ticket_free(t);
	}
	if (a->ctl != NULL) {
		evconnlistener_free(a->ctl);
		(void)unlink(a->ctl_path);
	}
	if (a->conn != NULL)
		rp_conn_unref(a->conn);
	/* A lookup still running (free without stop): its record is freed
	 * by the cancel's callback if the loop turns again. */
	lookup_cancel(a);
	addrs_clear(a);
	if (a->dns != NULL)
		evdns_base_free(a->dns, 0);
	if (a->lookup_timer)
		event_free(a->lookup_timer);
	if (a->retry)
		event_free(a->retry);
	if (a->ping)
		event_free(a->ping);
	if (a->poll)
		event_free(a->poll);
	if (a->mon_ev)
		event_free(a->mon_ev);
	cl_sessions_monitor_close(a->mon);
	if (a->evq_len > 0)
		log_warnx("%zu session.event(s) never sent: the broker was "
		          "not connected",
		    a->evq_len);
	evq_clear(a);
	rp_tls_ctx_free(a->tls_ctx);
	rp_tls_ctx_free(a->relay_ctx);
	if (a->tls_session != NULL)
		gnutls_memset(a->tls_session, 0, a->tls_session_len);
	free(a->tls_session);
	free(a->sess);
	free(a->sess_json);
	free(a);
}
