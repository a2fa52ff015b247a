/*
 * cl_sessions.c - logged-on sessions from logind or the configuration.
 */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-login.h>
#endif

#include "cl_agent_config.h"
#include "cl_sessions.h"

#define SESSIONS_MAX 256

static void
user_name(const struct cl_agent_config *c, uid_t uid, char *out, size_t len)
{
	struct passwd pw, *res = NULL;
	char buf[2048];

	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL) {
		snprintf(out, len, "uid%u", (unsigned)uid);
		return;
	}
	/* "bob" -> "CORP\bob"; names already qualified stay as they are. */
	if (c->domain != NULL && strchr(pw.pw_name, '\\') == NULL &&
	    strchr(pw.pw_name, '@') == NULL)
		snprintf(out, len, "%s\\%s", c->domain, pw.pw_name);
	else
		snprintf(out, len, "%s", pw.pw_name);
}

#ifdef HAVE_SYSTEMD
static int
read_logind(const struct cl_agent_config *c, struct cl_session **v, size_t *n)
{
	char **ids = NULL;
	int k;
	struct cl_session *out;
	size_t m = 0;

	if (access("/run/systemd/seats", F_OK) != 0)
		return -2; /* logind not running */
	k = sd_get_sessions(&ids);
	if (k < 0)
		return -2;
	out = calloc((size_t)k + 1, sizeof(*out));
	if (out == NULL) {
		for (int i = 0; i < k; i++)
			free(ids[i]);
		free(ids);
		return -1;
	}
	for (int i = 0; i < k && m < SESSIONS_MAX; i++) {
		struct cl_session *s = &out[m];
		char *type = NULL, *class = NULL, *state = NULL, *tty = NULL,
		     *disp = NULL;
		uid_t uid;

		if (sd_session_get_uid(ids[i], &uid) < 0)
			goto next;
		if (sd_session_get_class(ids[i], &class) >= 0 &&
		    strcmp(class, "user") != 0)
			goto next;
		if (sd_session_get_state(ids[i], &state) >= 0 &&
		    strcmp(state, "closing") == 0)
			goto next;
		snprintf(s->id, sizeof(s->id), "%s", ids[i]);
		s->uid = uid;
		user_name(c, uid, s->user, sizeof(s->user));
		(void)sd_session_get_type(ids[i], &type);
		if (sd_session_is_remote(ids[i]) > 0)
			snprintf(s->kind, sizeof(s->kind), "remote");
		else if (type != NULL &&
		    (!strcmp(type, "x11") || !strcmp(type, "wayland") ||
		        !strcmp(type, "mir")))
			snprintf(s->kind, sizeof(s->kind), "graphical");
		else
			snprintf(s->kind, sizeof(s->kind), "console");
		s->locked = sd_session_is_active(ids[i]) == 0;
		if (sd_session_get_tty(ids[i], &tty) >= 0 && tty != NULL)
			snprintf(s->tty, sizeof(s->tty), "%s%s",
			    tty[0] == '/' ? "" : "/dev/", tty);
		if (sd_session_get_display(ids[i], &disp) >= 0 && disp != NULL)
			snprintf(s->display, sizeof(s->display), "%s", disp);
		m++;
	next:
		free(type);
		free(class);
		free(state);
		free(tty);
		free(disp);
	}
	for (int i = 0; i < k; i++)
		free(ids[i]);
	free(ids);
	*v = out;
	*n = m;
	return 0;
}
#endif

int
cl_sessions_read(const struct cl_agent_config *c, struct cl_session **v,
    size_t *n, const char **source_used)
{
	struct cl_session *out;

	*v = NULL;
	*n = 0;
#ifdef HAVE_SYSTEMD
	if (c->source == CL_SESS_LOGIND) {
		int r = read_logind(c, v, n);
		if (r != -2) {
			*source_used = "logind";
			return r;
		}
	}
#endif
	*source_used = "static";
	if (c->nstat == 0)
		return 0;
	if ((out = calloc(c->nstat, sizeof(*out))) == NULL)
		return -1;
	for (size_t i = 0; i < c->nstat; i++) {
		snprintf(out[i].id, sizeof(out[i].id), "static-%zu", i + 1);
		snprintf(
		    out[i].user, sizeof(out[i].user), "%s", c->stat[i].user);
		snprintf(
		    out[i].kind, sizeof(out[i].kind), "%s", c->stat[i].kind);
		out[i].locked = c->stat[i].locked;
		out[i].uid = (uid_t)-1;
	}
	*v = out;
	*n = c->nstat;
	return 0;
}

json_t *
cl_sessions_json(const struct cl_session *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n && a != NULL; i++)
		json_array_append_new(a,
		    json_pack("{s:s, s:s, s:s, s:b}", "id", v[i].id, "user",
		        v[i].user, "kind", v[i].kind, "locked", v[i].locked));
	return a;
}

int
cl_sessions_monitor_open(
    const struct cl_agent_config *c, struct cl_sessions_monitor **m)
{
	*m = NULL;
#ifdef HAVE_SYSTEMD
	sd_login_monitor *mon = NULL;
	int fd;

	if (c->source != CL_SESS_LOGIND ||
	    access("/run/systemd/seats", F_OK) != 0 ||
	    sd_login_monitor_new("session", &mon) < 0)
		return -1;
	fd = sd_login_monitor_get_fd(mon);
	if (fd < 0) {
		sd_login_monitor_unref(mon);
		return -1;
	}
	*m = (struct cl_sessions_monitor *)mon;
	return fd;
#else
	(void)c;
	return -1;
#endif
}

void
cl_sessions_monitor_flush(struct cl_sessions_monitor *m)
{
#ifdef HAVE_SYSTEMD
	if (m != NULL)
		(void)sd_login_monitor_flush((sd_login_monitor *)m);
#else
	(void)m;
#endif
}

void
cl_sessions_monitor_close(struct cl_sessions_monitor *m)
{
#ifdef HAVE_SYSTEMD
	if (m != NULL)
		sd_login_monitor_unref((sd_login_monitor *)m);
#else
	(void)m;
#endif
}
