/*
 * cl_prompt.h - asking the people at this machine.
 *
 * One question (a remote assistance offer, or a request for control) is
 * put to every logged-on session at once through the configured command:
 *
 *   terminal       /bin/sh writes the question to the session's tty and
 *                  reads y/N from it (as the session's user when we are
 *                  root); a session without a tty cannot answer (declines)
 *   graphical      zenity --question on the session's DISPLAY, with its
 *                  XDG_RUNTIME_DIR and D-Bus, as the session's user; a
 *                  session without a display cannot answer
 *   script:PATH    PATH runs with RA_HELPER, RA_MODE, RA_TICKET, RA_USER,
 *                  RA_SESSION, RA_KIND (offer|control), RA_TIMEOUT in its
 *                  environment; exit status 0 = accept, anything else =
 *                  decline
 *
 * Every command runs as a child process in its own process group; its exit
 * is an event (pidfd) so the loop never blocks. The first session that
 * accepts wins and the others are killed; when every one has declined,
 * failed or was killed at the timeout, the answer is decline. Nothing is
 * ever accepted by default, and nobody logged on means decline.
 */
#ifndef CL_PROMPT_H
#define CL_PROMPT_H

#include <stddef.h>

struct event_base;
struct cl_agent_config;
struct cl_session;
struct cl_prompt;

struct cl_prompt_req {
	const char *kind; /* "offer" or "control" */
	const char *ticket;
	const char *helper;
	const char *helper_host;
	const char *mode; /* view, control */
	unsigned timeout_s;
};

/* accepted: 1 or 0; user/session: who accepted (NULL on decline). The
 * prompt is freed when this returns. */
typedef void (*cl_prompt_done)(struct cl_prompt *p, int accepted,
    const char *user, const char *session, void *arg);

struct cl_prompt *cl_prompt_start(struct event_base *base,
    const struct cl_agent_config *c, const struct cl_session *sessions,
    size_t nsessions, const struct cl_prompt_req *req, cl_prompt_done done,
    void *arg);
/* Kills the commands; done is NOT called. */
void cl_prompt_cancel(struct cl_prompt *p);

/* Runs argv (argv[0] an absolute path) detached: no wait, no zombie
 * (double fork). 0 or -1. */
int cl_spawn_detached(char *const argv[]);

#endif
