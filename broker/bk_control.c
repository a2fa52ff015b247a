/*
 * bk_control.c - the operator's control socket (bk_control.h).
 *
 * Why a Unix socket and not a method on the TLS port: operator rights are
 * decided by the file's owner, group and mode (0660), which the kernel
 * checks before we read a byte, and the caller's uid is known for the
 * audit trail (SO_PEERCRED). Nothing here is reachable from the network.
 *
 * Each connection is read line by line; every line is one request and gets
 * one reply line. A line longer than BK_CONTROL_LINE_MAX, or more than
 * CTL_CLIENTS_MAX connections, or a connection idle for CTL_IDLE_S, is
 * closed. Requests are answered synchronously from the broker's state,
 * except expire, whose reply waits until the revocation is durable (the
 * client's later lines wait with it).
 */
#include <errno.h>
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
#include <event2/event.h>
#include <event2/listener.h>

#include "az_policy.h"
#include "bk.h"
#include "bk_audit.h"
#include "bk_config.h"
#include "bk_control.h"
#include "bk_metrics.h"
#include "bk_offer.h"
#include "bk_relay.h"
#include "bk_store.h"
#include "bk_ticket.h"
#include "rp_conn.h"
#include "rp_error.h"
#include "rp_log.h"

#define CTL_CLIENTS_MAX 16
#define CTL_IDLE_S 30
#define CTL_MODE 0660

struct ctl_client {
	struct bk_control *ctl;
	struct bufferevent *bev;
	uid_t uid;
	int closing; /* reply queued, close once written */
	int waiting; /* a reply waits for the store (expire) */
	int gone;    /* freed while waiting: the store's callback frees it */
	char ticket[BK_TICKET_ID_LEN + 1]; /* the ticket being expired */
	struct ctl_client *prev, *next;
};

static void on_read(struct bufferevent *bev, void *arg);

/* A command's answer comes later (the command sends it itself). */
static json_t ctl_later_;
#define CTL_LATER (&ctl_later_)

struct bk_control {
	struct bk_ctx *ctx;
	struct evconnlistener *lis;
	char *path;
	int64_t started;
	struct ctl_client *clients;
	unsigned nclients;
};

int
bk_control_check_path(const char *path, char *why, size_t whylen)
{
	struct sockaddr_un sun;

	if (path[0] != '/') {
		snprintf(why, whylen, "must be an absolute path");
		return -1;
	}
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(why, whylen, "longer than %zu bytes",
		    sizeof(sun.sun_path) - 1);
		return -1;
	}
	return 0;
}

static void
client_free(struct ctl_client *cl)
{
	struct bk_control *ctl = cl->ctl;

	if (cl->prev)
		cl->prev->next = cl->next;
	else
		ctl->clients = cl->next;
	if (cl->next)
		cl->next->prev = cl->prev;
	ctl->nclients--;
	bufferevent_free(cl->bev);
	cl->bev = NULL;
	if (cl->waiting)
		cl->gone = 1; /* expire_durable frees it */
	else
		free(cl);
}

static void
send_json(struct ctl_client *cl, json_t *o)
{
	char *s;

	if (o == NULL) {
		s = strdup("{\"ok\":false,\"error\":\"out_of_memory\"}");
	} else {
		s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
		json_decref(o);
	}
	if (s == NULL)
		return;
	bufferevent_write(cl->bev, s, strlen(s));
	bufferevent_write(cl->bev, "\n", 1);
	free(s);
}

static json_t *
err_json(const char *error, const char *msg)
{
	return json_pack(
	    "{s:b, s:s, s:s}", "ok", 0, "error", error, "message", msg);
}

/* ---- commands ----------------------------------------------------------- */

static json_t *
cmd_status(struct bk_control *ctl, struct ctl_client *cl, json_t *req)
{
	struct bk_ctx *ctx = ctl->ctx;
	int aok = ctx->audit != NULL && bk_audit_ok(ctx->audit);
	int64_t now = bk_now();

	return json_pack("{s:b, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, "
	                 "s:I, s:s, s:I, s:b}",
	    "ok", 1, "pid", (json_int_t)getpid(), "listen", ctx->cfg->listen,
	    "started", (json_int_t)ctl->started, "uptime_s",
	    (json_int_t)(now - ctl->started), "agents",
	    (json_int_t)(ctx->agents ? bk_agents_count(ctx->agents) : 0),
	    "helpers", (json_int_t)ctx->nhelpers, "tickets_open",
	    (json_int_t)bk_offers_open_count(ctx->offers), "relays",
	    (json_int_t)(ctx->relays ? bk_relays_active(ctx->relays) : 0),
	    "audit", aok ? "ok" : "failed", "audit_seq",
	    (json_int_t)(ctx->audit ? bk_audit_seq(ctx->audit) : 0),
	    "directory", bk_metrics_dir_state(ctx), "policy_rules",
	    (json_int_t)(ctx->policy ? az_policy_nrules(ctx->policy) : 0),
	    "draining", ctx->draining != 0);
}

static int
agent_json(struct bk_agent *ag, void *arg)
{
	json_t *list = arg, *o, *addrs, *sess;
	struct bk_peer *p = ag->conn != NULL ? bk_peer_of(ag->conn) : NULL;

	addrs = json_array();
	sess = json_array();
	for (size_t i = 0; i < ag->naddresses; i++)
		json_array_append_new(addrs, json_string(ag->addresses[i]));
	for (size_t i = 0; i < ag->nsessions; i++) {
		const struct bk_usess *u = &ag->sessions[i];
		json_array_append_new(sess,
		    json_pack("{s:s?, s:s?, s:s?, s:b}", "id", u->id, "user",
		        u->user, "kind", u->kind, "locked", u->locked != 0));
	}
	o = json_pack("{s:s, s:s?, s:s, s:o, s:I, s:I, s:o}", "fqdn", ag->fqdn,
	    "dn", ag->dn, "address", p != NULL ? p->addr : "", "addresses",
	    addrs, "since", (json_int_t)ag->online_since, "last_seen",
	    (json_int_t)ag->last_seen, "sessions", sess);
	if (o != NULL)
		json_array_append_new(list, o);
	return 0;
}

static json_t *
cmd_agents(struct bk_control *ctl, struct ctl_client *cl, json_t *req)
{
	json_t *list = json_array();

	if (list == NULL)
		return NULL;
	if (ctl->ctx->agents != NULL)
		bk_agents_foreach(ctl->ctx->agents, agent_json, list);
	return json_pack("{s:b, s:o}", "ok", 1, "agents", list);
}

/* Public fields only, spelled out: the secret can never slip in. */
static int
ticket_json(const struct bk_ticket *t, void *arg)
{
	json_t *list = arg, *addrs = json_array(), *o;

	for (size_t i = 0; i < t->naddrs; i++)
		json_array_append_new(addrs, json_string(t->addrs[i]));
	o = json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s, s:b, s:s?, s:o, "
	              "s:I, s:I}",
	    "id", t->id, "state", bk_ticket_state_name(t->state), "helper",
	    t->helper, "helper_host", t->helper_host, "machine", t->machine,
	    "mode", bk_ticket_mode_name(t->mode), "control",
	    t->control_granted != 0, "rule", t->rule, "addresses", addrs,
	    "created", (json_int_t)t->created_at, "expires",
	    (json_int_t)t->expires_at);
	if (o != NULL)
		json_array_append_new(list, o);
	return 0;
}

static json_t *
cmd_tickets(struct bk_control *ctl, struct ctl_client *cl, json_t *req)
{
	json_t *list = json_array();
	int rc;

	if (list == NULL)
		return NULL;
	if (ctl->ctx->store == NULL)
		return json_pack("{s:b, s:o}", "ok", 1, "tickets", list);
	rc = bk_store_list_open(ctl->ctx->store, ticket_json, list);
	if (rc != RP_OK) {
		json_decref(list);
		return err_json(rp_err_name(rc), "the ticket store failed");
	}
	return json_pack("{s:b, s:o}", "ok", 1, "tickets", list);
}

/*
 * Revokes an open ticket as the operator, whether or not its machine is
 * online (bk_offers_revoke: audited ticket_revoked with reason "operator",
 * the helper told, the agent told if online, a relay torn down). Like the
 * helper and the agent, the operator hears "revoked" only once the state
 * is durable: the reply waits for the store (reading from this client
 * stops meanwhile, so replies stay in order).
 */
static void
expire_durable(int rc, void *arg)
{
	struct ctl_client *cl = arg;

	cl->waiting = 0;
	if (cl->gone) {
		free(cl); /* closed meanwhile (client_free left it to us) */
		return;
	}
	if (rc == RP_OK)
		send_json(cl,
		    json_pack("{s:b, s:s, s:s}", "ok", 1, "ticket", cl->ticket,
		        "state", "revoked"));
	else
		send_json(cl,
		    err_json(rp_err_name(rc),
		        "the ticket store failed: the revocation may not "
		        "survive a restart (see the broker's log)"));
	bufferevent_enable(cl->bev, EV_READ);
	on_read(cl->bev, cl); /* lines that came meanwhile */
}

static json_t *
cmd_expire(struct bk_control *ctl, struct ctl_client *cl, json_t *req)
{
	struct bk_ctx *ctx = ctl->ctx;
	const char *id = json_string_value(json_object_get(req, "ticket"));

	if (id == NULL || !bk_ticket_id_valid(id))
		return err_json("invalid_params",
		    "\"ticket\" must be a ticket id (32 lower-case hex)");
	if (bk_offers_revoke(ctx, id, "operator", "operator",
	        cl->uid == (uid_t)-1
	            ? NULL
	            : json_pack("{s:I}", "uid", (json_int_t)cl->uid)) != RP_OK)
		return err_json(rp_err_name(RP_ERR_NOT_FOUND),
		    "no open ticket with this id");
	log_info("control: ticket %s revoked by the operator (uid %ld)", id,
	    (long)cl->uid);
	if (ctx->store == NULL)
		return json_pack("{s:b, s:s, s:s}", "ok", 1, "ticket", id,
		    "state", "revoked");
	snprintf(cl->ticket, sizeof(cl->ticket), "%s", id);
	cl->waiting = 1;
	bufferevent_disable(cl->bev, EV_READ);
	bk_store_sync(ctx->store, expire_durable, cl);
	return CTL_LATER;
}

static const struct ctl_command {
	const char *name;
	json_t *(*run)(struct bk_control *, struct ctl_client *, json_t *);
} commands[] = {
    {"status", cmd_status},
    {"agents", cmd_agents},
    {"tickets", cmd_tickets},
    {"expire", cmd_expire},
};

static void
handle_line(struct ctl_client *cl, const char *line, size_t len)
{
	json_error_t je;
	json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	const char *cmd = json_string_value(json_object_get(req, "cmd"));

	if (req == NULL || !json_is_object(req) || cmd == NULL) {
		send_json(cl,
		    err_json("invalid_request",
		        "expected {\"cmd\": \"status\"|\"agents\"|"
		        "\"tickets\"|\"expire\"}"));
		json_decref(req);
		return;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(cmd, commands[i].name) == 0) {
			json_t *res = commands[i].run(cl->ctl, cl, req);

			if (res != CTL_LATER)
				send_json(cl, res);
			json_decref(req);
			return;
		}
	send_json(cl, err_json("unknown_command", cmd));
	json_decref(req);
}

/* ---- connections -------------------------------------------------------- */

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct ctl_client *cl = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;

	if (cl->closing || cl->waiting)
		return;
	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF)) != NULL) {
		if (len > BK_CONTROL_LINE_MAX) {
			free(line);
			goto too_long;
		}
		handle_line(cl, line, len);
		free(line);
		if (cl->waiting)
			return; /* the rest after the reply */
	}
	if (evbuffer_get_length(in) <= BK_CONTROL_LINE_MAX)
		return;
too_long:
	send_json(cl, err_json("line_too_long", "request line too long"));
	cl->closing = 1;
	bufferevent_disable(bev, EV_READ);
}

static void
on_write(struct bufferevent *bev, void *arg)
{
	struct ctl_client *cl = arg;

	if (cl->closing)
		client_free(cl);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_client *cl = arg;

	/* EOF, error or idle timeout. Replies already queued are dropped on
	 * EOF: the client stopped listening. */
	client_free(cl);
}

static void
on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct bk_control *ctl = arg;
	struct ctl_client *cl;
	struct timeval idle = {CTL_IDLE_S, 0};
	struct ucred cr;
	socklen_t crlen = sizeof(cr);

	if (ctl->nclients >= CTL_CLIENTS_MAX) {
		static const char busy[] = "{\"ok\":false,\"error\":\"busy\","
		                           "\"message\":\"too many control "
		                           "connections\"}\n";
		(void)!write(fd, busy, sizeof(busy) - 1);
		close(fd);
		return;
	}
	if ((cl = calloc(1, sizeof(*cl))) == NULL) {
		close(fd);
		return;
	}
	cl->uid = (uid_t)-1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0)
		cl->uid = cr.uid;
	cl->ctl = ctl;
	cl->bev =
	    bufferevent_socket_new(ctl->ctx->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (cl->bev == NULL) {
		close(fd);
		free(cl);
		return;
	}
	bufferevent_setcb(cl->bev, on_read, on_write, on_event, cl);
	bufferevent_set_timeouts(cl->bev, &idle, &idle);
	bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
	cl->next = ctl->clients;
	if (cl->next)
		cl->next->prev = cl;
	ctl->clients = cl;
	ctl->nclients++;
}

/* Binds path; a socket file left by a previous run is replaced. */
static int
bind_socket(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	struct stat st;
	mode_t old;
	int fd;

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen,
			    "%s exists and is not a socket: not replacing it",
			    path);
			return -1;
		}
		/* Another broker answering there? Then leave it alone. */
		if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) >= 0) {
			memset(&sun, 0, sizeof(sun));
			sun.sun_family = AF_UNIX;
			snprintf(
			    sun.sun_path, sizeof(sun.sun_path), "%s", path);
			if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) ==
			    0) {
				close(fd);
				snprintf(err, errlen,
				    "%s: another process is listening there",
				    path);
				return -1;
			}
			close(fd);
		}
		unlink(path);
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	/* Never a moment with wider permissions than 0660. */
	old = umask(0117);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		umask(old);
		snprintf(err, errlen, "cannot bind %s: %s%s", path,
		    strerror(errno),
		    errno == ENOENT ? " (its directory does not exist; under "
		                      "systemd RuntimeDirectory=rabroker "
		                      "makes /run/rabroker)"
		                    : "");
		close(fd);
		return -1;
	}
	umask(old);
	if (chmod(path, CTL_MODE) < 0) {
		snprintf(err, errlen, "chmod %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

int
bk_control_init(struct bk_ctx *ctx)
{
	struct bk_control *ctl;
	const char *path = ctx->cfg->control_socket;
	char err[400];
	int fd;

	if ((ctl = calloc(1, sizeof(*ctl))) == NULL)
		return -1;
	ctl->ctx = ctx;
	ctl->started = bk_now();
	ctx->control = ctl;
	if (path == NULL || path[0] == '\0') {
		log_info("control socket: off ([control] socket is empty)");
		return 0;
	}
	if ((fd = bind_socket(path, err, sizeof(err))) < 0) {
		log_warnx("control socket: %s; rabrokerctl cannot reach this "
		          "broker — change `socket` in [control] of %s",
		    err, ctx->cfg->path);
		return 0;
	}
	evutil_make_socket_nonblocking(fd);
	ctl->lis = evconnlistener_new(ctx->base, on_accept, ctl,
	    LEV_OPT_CLOSE_ON_FREE, CTL_CLIENTS_MAX, fd);
	if (ctl->lis == NULL) {
		log_warnx("control socket %s: cannot listen", path);
		close(fd);
		unlink(path);
		return 0;
	}
	if ((ctl->path = strdup(path)) == NULL) {
		evconnlistener_free(ctl->lis);
		ctl->lis = NULL;
		unlink(path);
		return -1;
	}
	log_info("control socket %s (mode %04o)", path, CTL_MODE);
	return 0;
}

void
bk_control_free(struct bk_ctx *ctx)
{
	struct bk_control *ctl = ctx->control;

	if (ctl == NULL)
		return;
	while (ctl->clients != NULL)
		client_free(ctl->clients);
	if (ctl->lis != NULL)
		evconnlistener_free(ctl->lis);
	if (ctl->path != NULL) {
		unlink(ctl->path);
		free(ctl->path);
	}
	free(ctl);
	ctx->control = NULL;
}
