/*
 * cl_sessions.h - who is logged on to this machine.
 *
 * Source "logind" reads systemd-logind through sd-login (libsystemd):
 * sd_get_sessions, then per session sd_session_get_uid / _type / _class /
 * _state / _tty / _display / sd_session_is_remote. Only class "user"
 * sessions that are not closing are listed. kind: "remote" when
 * sd_session_is_remote, "graphical" for x11/wayland/mir, else "console".
 * locked: sd-login has no lock state (LockedHint is only on D-Bus), so a
 * session that is not the active one on its seat (sd_session_is_active ==
 * 0) is reported locked: nobody is looking at it. Without libsystemd, or
 * when logind is not running (no /run/systemd/seats), the static list from
 * the configuration is used.
 */
#ifndef CL_SESSIONS_H
#define CL_SESSIONS_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

struct cl_agent_config;

struct cl_session {
	char id[32];
	char user[160]; /* "CORP\bob" */
	char kind[16];  /* graphical, console, remote */
	int locked;
	uid_t uid; /* (uid_t)-1 for static entries */
	char tty[64];
	char display[64];
};

/* Reads the current sessions into a malloc'd array (may be NULL with *n =
 * 0). Returns 0, or -1 on memory failure. *source_used gets "logind" or
 * "static". */
int cl_sessions_read(const struct cl_agent_config *c, struct cl_session **v,
    size_t *n, const char **source_used);
/* logind change notifications (sd_login_monitor "session"): returns a
 * file descriptor that becomes readable when sessions come, go or change
 * state, or -1 (no libsystemd, logind not running, or source static).
 * After it was readable, call cl_sessions_monitor_flush. */
struct cl_sessions_monitor;
int cl_sessions_monitor_open(
    const struct cl_agent_config *c, struct cl_sessions_monitor **m);
void cl_sessions_monitor_flush(struct cl_sessions_monitor *m);
void cl_sessions_monitor_close(struct cl_sessions_monitor *m);
/* [{id, user, kind, locked}] as agent.register wants. */
json_t *cl_sessions_json(const struct cl_session *v, size_t n);

#endif
