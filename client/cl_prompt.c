/*
 * cl_prompt.c - prompt commands as asynchronous children (cl_prompt.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "cl_agent_config.h"
#include "cl_prompt.h"
#include "cl_sessions.h"
#include "rp_log.h"

#define PROMPT_MAX 64

struct child {
	struct cl_prompt *p;
	pid_t pid;
	int pidfd;
	struct event *ev; /* pidfd readable, or a poll timer */
	const struct cl_session *s;
	char user[160], session[32];
	int done;
};

struct cl_prompt {
	struct event_base *base;
	cl_prompt_done done;
	void *arg;
	struct child ch[PROMPT_MAX];
	size_t n, running;
	struct event *timer, *fin;
	int answered;
	int accepted;
	char user[160], session[32];
	char ticket[80];
};

static const char terminal_script[] =
    "exec <\"$RA_TTY\" >\"$RA_TTY\" 2>&1 || exit 1\n"
    "if [ \"$RA_KIND\" = control ]; then\n"
    "  q=\"$RA_HELPER asks to CONTROL this computer (keyboard and mouse).\"\n"
    "else\n"
    "  q=\"$RA_HELPER ($RA_HELPER_HOST) offers remote assistance: to SEE "
    "your screen ($RA_MODE).\"\n"
    "fi\n"
    "printf '\\a\\n*** %s\\n*** Allow? [y/N] (%s s) ' \"$q\" \"$RA_TIMEOUT\"\n"
    "read -r a || exit 1\n"
    "case \"$a\" in y|Y|yes|YES) exit 0;; esac\n"
    "exit 1\n";

static void
child_reap(struct child *c, int status)
{
	struct cl_prompt *p = c->p;

	c->done = 1;
	if (c->ev != NULL) {
		event_free(c->ev);
		c->ev = NULL;
	}
	if (c->pidfd >= 0) {
		close(c->pidfd);
		c->pidfd = -1;
	}
	p->running--;
	if (!p->answered && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		p->answered = 1;
		p->accepted = 1;
		snprintf(p->user, sizeof(p->user), "%s", c->user);
		snprintf(p->session, sizeof(p->session), "%s", c->session);
		log_info("ticket %s: %s (session %s) accepted", p->ticket,
		    c->user, c->session);
		for (size_t i = 0; i < p->n; i++)
			if (!p->ch[i].done)
				kill(-p->ch[i].pid, SIGKILL);
	} else if (!p->answered)
		log_info("ticket %s: session %s (%s) declined (%s %d)",
		    p->ticket, c->session, c->user,
		    WIFEXITED(status) ? "exit" : "signal",
		    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	if (p->running == 0 || p->accepted)
		event_active(p->fin, EV_TIMEOUT, 0);
}

static void
child_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct child *c = arg;
	int status = 0;
	pid_t r;

	(void)fd;
	(void)ev;
	r = waitpid(c->pid, &status, WNOHANG);
	if (r == 0)
		return; /* poll timer: not yet */
	if (r < 0)
		status = 1 << 8; /* lost: a decline */
	child_reap(c, status);
}

static void
prompt_free(struct cl_prompt *p)
{
	for (size_t i = 0; i < p->n; i++) {
		struct child *c = &p->ch[i];
		if (c->done)
			continue;
		kill(-c->pid, SIGKILL);
		kill(c->pid, SIGKILL);
		(void)waitpid(c->pid, NULL, 0); /* SIGKILL: prompt */
		if (c->ev != NULL)
			event_free(c->ev);
		if (c->pidfd >= 0)
			close(c->pidfd);
	}
	event_free(p->timer);
	event_free(p->fin);
	free(p);
}

static void
fin_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_prompt *p = arg;

	(void)fd;
	(void)ev;
	/* Reap the killed losers first, so no zombie stays. */
	p->done(p, p->accepted, p->accepted ? p->user : NULL,
	    p->accepted ? p->session : NULL, p->arg);
	prompt_free(p);
}

static void
timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cl_prompt *p = arg;

	(void)fd;
	(void)ev;
	log_info("ticket %s: prompt timed out", p->ticket);
	for (size_t i = 0; i < p->n; i++)
		if (!p->ch[i].done)
			kill(-p->ch[i].pid, SIGKILL);
}

static void
drop_to(uid_t uid)
{
	struct passwd *pw;

	if (geteuid() != 0 || uid == (uid_t)-1)
		return;
	if ((pw = getpwuid(uid)) == NULL)
		_exit(126);
	if (initgroups(pw->pw_name, pw->pw_gid) != 0 ||
	    setgid(pw->pw_gid) != 0 || setuid(uid) != 0)
		_exit(126);
	setenv("HOME", pw->pw_dir, 1);
	setenv("USER", pw->pw_name, 1);
	setenv("LOGNAME", pw->pw_name, 1);
}

/* In the child: never returns. */
static void
child_exec(const struct cl_agent_config *cf, const struct cl_session *s,
    const struct cl_prompt_req *r)
{
	char tmo[16], text[512], rt[64], bus[96];
	int fd;

	setpgid(0, 0);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		if (cf->prompt != CL_PROMPT_SCRIPT)
			dup2(fd, 1);
		if (fd > 2)
			close(fd);
	}
	snprintf(tmo, sizeof(tmo), "%u", r->timeout_s);
	setenv("RA_HELPER", r->helper ? r->helper : "", 1);
	setenv("RA_HELPER_HOST", r->helper_host ? r->helper_host : "", 1);
	setenv("RA_MODE", r->mode ? r->mode : "view", 1);
	setenv("RA_TICKET", r->ticket, 1);
	setenv("RA_USER", s->user, 1);
	setenv("RA_SESSION", s->id, 1);
	setenv("RA_KIND", r->kind, 1);
	setenv("RA_TIMEOUT", tmo, 1);
	setenv("RA_TTY", s->tty, 1);
	switch (cf->prompt) {
	case CL_PROMPT_SCRIPT:
		execl(cf->prompt_script, cf->prompt_script, (char *)NULL);
		break;
	case CL_PROMPT_TERMINAL:
		if (s->tty[0] == '\0')
			_exit(2);
		drop_to(s->uid);
		execl("/bin/sh", "sh", "-c", terminal_script, (char *)NULL);
		break;
	case CL_PROMPT_GRAPHICAL:
		if (s->display[0] == '\0' || s->uid == (uid_t)-1)
			_exit(2);
		snprintf(rt, sizeof(rt), "/run/user/%u", (unsigned)s->uid);
		snprintf(bus, sizeof(bus), "unix:path=%s/bus", rt);
		setenv("DISPLAY", s->display, 1);
		setenv("XDG_RUNTIME_DIR", rt, 1);
		setenv("DBUS_SESSION_BUS_ADDRESS", bus, 1);
		drop_to(s->uid);
		if (!strcmp(r->kind, "control"))
			snprintf(text, sizeof(text),
			    "%s asks to control this computer (keyboard and "
			    "mouse). Allow?",
			    r->helper ? r->helper : "A helper");
		else
			snprintf(text, sizeof(text),
			    "%s (%s) offers remote assistance and asks to see "
			    "your screen. Allow?",
			    r->helper ? r->helper : "A helper",
			    r->helper_host ? r->helper_host : "?");
		snprintf(tmo, sizeof(tmo), "--timeout=%u", r->timeout_s);
		/* --no-markup: the text as it is (else Pango markup with
		 * backslash escapes: "CORP\alice" showed as "CORPalice"). */
		execlp("zenity", "zenity", "--question", "--title",
		    "Remote assistance", "--no-markup", "--text", text, tmo,
		    "--default-cancel", (char *)NULL);
		break;
	}
	_exit(127);
}

struct cl_prompt *
cl_prompt_start(struct event_base *base, const struct cl_agent_config *cf,
    const struct cl_session *sessions, size_t nsessions,
    const struct cl_prompt_req *req, cl_prompt_done done, void *arg)
{
	struct cl_prompt *p = calloc(1, sizeof(*p));
	struct timeval tv;

	if (p == NULL)
		return NULL;
	p->base = base;
	p->done = done;
	p->arg = arg;
	snprintf(p->ticket, sizeof(p->ticket), "%s", req->ticket);
	p->timer = evtimer_new(base, timeout_cb, p);
	p->fin = event_new(base, -1, 0, fin_cb, p);
	if (p->timer == NULL || p->fin == NULL) {
		if (p->timer)
			event_free(p->timer);
		if (p->fin)
			event_free(p->fin);
		free(p);
		return NULL;
	}
	for (size_t i = 0; i < nsessions && p->n < PROMPT_MAX; i++) {
		struct child *c = &p->ch[p->n];
		pid_t pid;

		c->p = p;
		c->pidfd = -1;
		c->s = &sessions[i];
		snprintf(c->user, sizeof(c->user), "%s", sessions[i].user);
		snprintf(c->session, sizeof(c->session), "%s", sessions[i].id);
		pid = fork();
		if (pid < 0) {
			log_warn("ticket %s: fork", req->ticket);
			continue;
		}
		if (pid == 0)
			child_exec(cf, &sessions[i], req);
		setpgid(pid, pid); /* also in the child: no race */
		c->pid = pid;
		c->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (c->pidfd >= 0)
			c->ev = event_new(
			    base, c->pidfd, EV_READ | EV_PERSIST, child_cb, c);
		else {
			struct timeval poll = {0, 100000};
			c->ev = event_new(base, -1, EV_PERSIST, child_cb, c);
			if (c->ev != NULL)
				event_add(c->ev, &poll);
		}
		if (c->ev != NULL && c->pidfd >= 0)
			event_add(c->ev, NULL);
		p->n++;
		p->running++;
		log_info("ticket %s: asking %s (session %s, %s)", req->ticket,
		    c->user, c->session, sessions[i].kind);
	}
	tv.tv_sec = req->timeout_s;
	tv.tv_usec = 0;
	evtimer_add(p->timer, &tv);
	if (p->running == 0) {
		log_info("ticket %s: nobody to ask: declined", req->ticket);
		event_active(p->fin, EV_TIMEOUT, 0);
	}
	return p;
}

void
cl_prompt_cancel(struct cl_prompt *p)
{
	if (p != NULL)
		prompt_free(p);
}

int
cl_spawn_detached(char *const argv[])
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		pid_t g;
		setsid();
		g = fork();
		if (g != 0)
			_exit(g < 0 ? 1 : 0);
		for (int sig = 1; sig < NSIG; sig++)
			signal(sig, SIG_DFL);
		execv(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		return -1;
	return 0;
}
