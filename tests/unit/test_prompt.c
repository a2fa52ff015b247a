/* test_prompt.c - prompt commands as asynchronous children (cl_prompt):
 * script answers, first accept wins, decline, timeout kill, nobody, the
 * terminal prompt on a pseudo-terminal, and the graphical one (zenity on
 * Xvfb, answered with xdotool). */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "cl_agent_config.h"
#include "cl_prompt.h"
#include "cl_sessions.h"
#include "rp_log.h"

static struct event_base *base;
static char dir[] = "/tmp/test_prompt.XXXXXX";
static struct cl_agent_config cfg;

struct result {
	int done, accepted;
	char user[160], session[32];
};

static void
on_done(struct cl_prompt *p, int accepted, const char *user,
    const char *session, void *arg)
{
	struct result *r = arg;

	(void)p;
	r->done = 1;
	r->accepted = accepted;
	snprintf(r->user, sizeof(r->user), "%s", user ? user : "");
	snprintf(r->session, sizeof(r->session), "%s", session ? session : "");
}

/* Script: sleeps $RA_USER-specific seconds from DIR/delay-SESSION, then
 * exits with DIR/exit-SESSION. */
static void
script_setup(void)
{
	char p[256];
	FILE *f;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(p, sizeof(p), "%s/prompt.sh", dir);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
	    "#!/bin/sh\n"
	    "d=$(cat %s/delay-$RA_SESSION 2>/dev/null || echo 0)\n"
	    "sleep $d\n"
	    "printf '%%s %%s %%s %%s\\n' \"$RA_KIND\" \"$RA_TICKET\" "
	    "\"$RA_HELPER\" \"$RA_TIMEOUT\" > %s/env-$RA_SESSION\n"
	    "exit $(cat %s/exit-$RA_SESSION 2>/dev/null || echo 1)\n",
	    dir, dir, dir);
	fclose(f);
	chmod(p, 0755);
	memset(&cfg, 0, sizeof(cfg));
	cfg.prompt = CL_PROMPT_SCRIPT;
	cfg.prompt_script = strdup(p);
	base = event_base_new();
	log_init("test_prompt", LOG_LVL_WARN, 0);
}

static void
script_teardown(void)
{
	char cmd[300];

	free(cfg.prompt_script);
	event_base_free(base);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)system(cmd);
	strcpy(dir, "/tmp/test_prompt.XXXXXX");
}

static void
put(const char *name, const char *val)
{
	char p[256];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fputs(val, f);
	fclose(f);
}

static struct cl_session sess[3] = {
    {.id = "s1", .user = "CORP\\bob", .kind = "graphical", .uid = -1},
    {.id = "s2", .user = "CORP\\eve", .kind = "console", .uid = -1},
    {.id = "s3", .user = "CORP\\ann", .kind = "remote", .uid = -1},
};

static double
run(struct result *r, size_t n, unsigned timeout_s)
{
	struct cl_prompt_req q = {.kind = "offer",
	    .ticket = "00112233445566778899aabbccddeeff",
	    .helper = "CORP\\alice",
	    .helper_host = "192.0.2.7",
	    .mode = "view",
	    .timeout_s = timeout_s};
	struct timeval t0, t1, lim = {timeout_s + 5, 0};
	struct cl_prompt *p;

	memset(r, 0, sizeof(*r));
	gettimeofday(&t0, NULL);
	p = cl_prompt_start(base, &cfg, sess, n, &q, on_done, r);
	ck_assert_ptr_nonnull(p);
	event_base_loopexit(base, &lim);
	while (!r->done && event_base_loop(base, EVLOOP_ONCE) == 0)
		;
	gettimeofday(&t1, NULL);
	ck_assert_msg(r->done, "prompt never finished");
	return (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_usec - t0.tv_usec) / 1e6;
}

START_TEST(t_first_accept_wins)
{
	struct result r;
	double secs;

	put("exit-s1", "1");
	put("exit-s2", "0");
	put("delay-s2", "0.3");
	put("exit-s3", "0");
	put("delay-s3", "10"); /* killed once s2 accepted */
	secs = run(&r, 3, 20);
	ck_assert_int_eq(r.accepted, 1);
	ck_assert_str_eq(r.user, "CORP\\eve");
	ck_assert_str_eq(r.session, "s2");
	ck_assert_double_lt(secs, 5);
	{
		char p[256], line[256] = "";
		FILE *f;
		snprintf(p, sizeof(p), "%s/env-s2", dir);
		f = fopen(p, "r");
		ck_assert_ptr_nonnull(f);
		ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
		fclose(f);
		ck_assert_str_eq(line,
		    "offer 00112233445566778899aabbccddeeff CORP\\alice 20\n");
	}
}
END_TEST

START_TEST(t_all_decline)
{
	struct result r;

	put("exit-s1", "1");
	put("exit-s2", "3");
	run(&r, 2, 20);
	ck_assert_int_eq(r.accepted, 0);
	ck_assert_str_eq(r.user, "");
}
END_TEST

/* Nobody answers in time: killed at the timeout, declined. */
START_TEST(t_timeout)
{
	struct result r;
	double secs;

	put("exit-s1", "0");
	put("delay-s1", "30");
	secs = run(&r, 1, 1);
	ck_assert_int_eq(r.accepted, 0);
	ck_assert_double_ge(secs, 0.9);
	ck_assert_double_lt(secs, 4);
}
END_TEST

START_TEST(t_nobody)
{
	struct result r;

	run(&r, 0, 5);
	ck_assert_int_eq(r.accepted, 0);
}
END_TEST

/* A missing script declines (exec fails: 127). */
START_TEST(t_missing_script)
{
	struct result r;

	free(cfg.prompt_script);
	cfg.prompt_script = strdup("/nonexistent/prompt");
	run(&r, 1, 5);
	ck_assert_int_eq(r.accepted, 0);
}
END_TEST

/* The terminal prompt on a pty: the question appears, "y" accepts, "n"
 * declines. */
static void
terminal(const char *answer, int want)
{
	struct result r;
	struct cl_session s = {.id = "t1",
	    .user = "CORP\\bob",
	    .kind = "console",
	    .uid = (uid_t)-1};
	struct cl_prompt_req q = {.kind = "offer",
	    .ticket = "00112233445566778899aabbccddeeff",
	    .helper = "CORP\\alice",
	    .helper_host = "192.0.2.7",
	    .mode = "view",
	    .timeout_s = 10};
	struct timeval lim = {15, 0};
	char buf[1024];
	size_t got = 0;
	ssize_t n;
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	struct cl_prompt *p;

	ck_assert_int_ge(m, 0);
	ck_assert_int_eq(grantpt(m), 0);
	ck_assert_int_eq(unlockpt(m), 0);
	snprintf(s.tty, sizeof(s.tty), "%s", ptsname(m));
	cfg.prompt = CL_PROMPT_TERMINAL;
	memset(&r, 0, sizeof(r));
	p = cl_prompt_start(base, &cfg, &s, 1, &q, on_done, &r);
	ck_assert_ptr_nonnull(p);
	/* Wait for the question. */
	fcntl(m, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 100 && strstr(buf, "Allow?") == NULL; i++) {
		n = read(m, buf + got, sizeof(buf) - got - 1);
		if (n > 0)
			got += (size_t)n;
		buf[got] = '\0';
		usleep(50000);
	}
	ck_assert_msg(strstr(buf, "CORP\\alice") != NULL, "question: %s", buf);
	ck_assert_ptr_nonnull(strstr(buf, "Allow?"));
	ck_assert_int_eq(
	    write(m, answer, strlen(answer)), (ssize_t)strlen(answer));
	event_base_loopexit(base, &lim);
	while (!r.done && event_base_loop(base, EVLOOP_ONCE) == 0)
		;
	ck_assert(r.done);
	ck_assert_int_eq(r.accepted, want);
	close(m);
}

START_TEST(t_terminal_yes)
{
	terminal("y\n", 1);
}
END_TEST

START_TEST(t_terminal_no)
{
	terminal("\n", 0);
}
END_TEST

/* The graphical dialog shows the helper's name as it is: zenity's --text
 * is Pango markup with backslash escapes unless --no-markup, which showed
 * "CORP\alice" as "CORPalice" and let a '<' or '&' in a name blank the
 * question. A stand-in zenity records its arguments. */
START_TEST(t_graphical_text_literal)
{
	struct result r;
	struct cl_session s = {.id = "g1",
	    .user = "CORP\\bob",
	    .kind = "graphical",
	    .display = ":99",
	    .uid = geteuid()};
	struct cl_prompt_req q = {.kind = "offer",
	    .ticket = "00112233445566778899aabbccddeeff",
	    .helper = "CORP\\alice <b>&",
	    .helper_host = "192.0.2.7",
	    .mode = "view",
	    .timeout_s = 10};
	struct timeval lim = {15, 0};
	char p[256], path[600], args[2048] = "";
	size_t n;
	FILE *f;

	snprintf(p, sizeof(p), "%s/zenity", dir);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
	    "#!/bin/sh\nfor a; do printf '%%s\\n' \"$a\"; done > %s/args\n"
	    "exit 1\n",
	    dir);
	fclose(f);
	chmod(p, 0755);
	snprintf(path, sizeof(path), "%s:/usr/bin:/bin", dir);
	setenv("PATH", path, 1);
	cfg.prompt = CL_PROMPT_GRAPHICAL;
	memset(&r, 0, sizeof(r));
	ck_assert_ptr_nonnull(
	    cl_prompt_start(base, &cfg, &s, 1, &q, on_done, &r));
	event_base_loopexit(base, &lim);
	while (!r.done && event_base_loop(base, EVLOOP_ONCE) == 0)
		;
	ck_assert(r.done);
	ck_assert_int_eq(r.accepted, 0);
	snprintf(p, sizeof(p), "%s/args", dir);
	f = fopen(p, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(args, 1, sizeof(args) - 1, f);
	args[n] = '\0';
	fclose(f);
	ck_assert_msg(
	    strstr(args, "\n--no-markup\n") != NULL, "args: %s", args);
	ck_assert_msg(strstr(args, "CORP\\alice <b>& (192.0.2.7)") != NULL,
	    "args: %s", args);
}
END_TEST

/*
 * The graphical prompt: the real zenity on a virtual X display (Xvfb, no
 * TCP), answered with real key presses (xdotool, through XTEST). The
 * dialog's default button is "No": Enter declines, only an explicit "Yes"
 * (Alt+Y) accepts, and no answer declines at the timeout.
 */
static pid_t xvfb_pid = -1;
static int xvfb_fd = -1; /* kept open: Xvfb dies of SIGPIPE otherwise */
static char xdisplay[16];

static void
x_setup(void)
{
	int pfd[2];
	char buf[16] = "";
	ssize_t n = 0;

	script_setup();
	ck_assert_msg(access("/usr/bin/Xvfb", X_OK) == 0 &&
	        access("/usr/bin/zenity", X_OK) == 0 &&
	        access("/usr/bin/xdotool", X_OK) == 0,
	    "Xvfb, zenity and xdotool are needed (deploy/install-deps.sh)");
	ck_assert_int_eq(pipe(pfd), 0);
	xvfb_pid = fork();
	ck_assert_int_ne(xvfb_pid, -1);
	if (xvfb_pid == 0) {
		char fd[16];
		int null = open("/dev/null", O_RDWR);

		dup2(null, 1);
		dup2(null, 2);
		close(pfd[0]);
		snprintf(fd, sizeof(fd), "%d", pfd[1]);
		execl("/usr/bin/Xvfb", "Xvfb", "-displayfd", fd, "-noreset",
		    "-nolisten", "tcp", "-screen", "0", "800x600x24",
		    (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	/* Xvfb writes its display number once it accepts clients. */
	for (int i = 0; i < 100 && n <= 0; i++) {
		struct timeval tv = {0, 100000};
		fd_set r;

		FD_ZERO(&r);
		FD_SET(pfd[0], &r);
		if (select(pfd[0] + 1, &r, NULL, NULL, &tv) > 0)
			n = read(pfd[0], buf, sizeof(buf) - 1);
	}
	xvfb_fd = pfd[0];
	ck_assert_msg(n > 0, "Xvfb did not start");
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	snprintf(xdisplay, sizeof(xdisplay), ":%s", buf);
	cfg.prompt = CL_PROMPT_GRAPHICAL;
}

static void
x_teardown(void)
{
	if (xvfb_pid > 0) {
		kill(xvfb_pid, SIGTERM);
		waitpid(xvfb_pid, NULL, 0);
		xvfb_pid = -1;
	}
	if (xvfb_fd != -1) {
		close(xvfb_fd);
		xvfb_fd = -1;
	}
	script_teardown();
}

/* Runs xdotool on the test's display; its exit status. */
static int
xdo(const char *args)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "DISPLAY=%s xdotool %s >/dev/null 2>&1",
	    xdisplay, args);
	return system(cmd);
}

/* Starts the graphical prompt, waits for its window, presses keys (NULL:
 * none) and runs the loop until the prompt is done. */
static void
graphical(const char *keys, unsigned timeout_s, struct result *r)
{
	struct cl_session s = {.id = "g1",
	    .user = "CORP\\bob",
	    .kind = "graphical",
	    .uid = geteuid()};
	struct cl_prompt_req q = {.kind = "offer",
	    .ticket = "00112233445566778899aabbccddeeff",
	    .helper = "CORP\\alice",
	    .helper_host = "192.0.2.7",
	    .mode = "view",
	    .timeout_s = timeout_s};
	struct timeval lim = {timeout_s + 10, 0};
	struct cl_prompt *p;
	int found = 0;

	snprintf(s.display, sizeof(s.display), "%s", xdisplay);
	memset(r, 0, sizeof(*r));
	p = cl_prompt_start(base, &cfg, &s, 1, &q, on_done, r);
	ck_assert_ptr_nonnull(p);
	/* The dialog appears, mapped (at most 20 s: GTK starts slowly on a
	 * loaded machine), before anything is answered. */
	for (int i = 0; i < 200 && !found; i++) {
		found = xdo("search --onlyvisible --name "
		            "'^Remote assistance$'") == 0;
		if (!found)
			usleep(100000);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	ck_assert_msg(found, "no \"Remote assistance\" window on %s", xdisplay);
	ck_assert_int_eq(r->done, 0);
	if (keys != NULL) {
		char cmd[200];
		struct timeval half = {0, 500000};

		/* A key pressed before GTK has taken the focus is lost: press
		 * again (at most 20 times) until the dialog has answered. */
		snprintf(cmd, sizeof(cmd),
		    "search --onlyvisible --name '^Remote assistance$' "
		    "windowfocus --sync key %s",
		    keys);
		for (int i = 0; i < 20 && !r->done; i++) {
			(void)xdo(cmd);
			event_base_loopexit(base, &half);
			while (!r->done &&
			    event_base_loop(base, EVLOOP_ONCE) == 0 &&
			    !event_base_got_exit(base))
				;
		}
	}
	event_base_loopexit(base, &lim);
	while (!r->done && event_base_loop(base, EVLOOP_ONCE) == 0)
		;
	ck_assert_msg(r->done, "prompt never finished");
}

START_TEST(t_graphical_yes)
{
	struct result r;

	graphical("alt+y", 30, &r);
	ck_assert_int_eq(r.accepted, 1);
	ck_assert_str_eq(r.user, "CORP\\bob");
}
END_TEST

/* Enter (or a stray key) on the dialog never consents: "No" is the
 * default button. */
START_TEST(t_graphical_enter_declines)
{
	struct result r;
	struct timeval t0, t1;

	gettimeofday(&t0, NULL);
	graphical("Return", 30, &r);
	gettimeofday(&t1, NULL);
	ck_assert_int_eq(r.accepted, 0);
	ck_assert_msg(
	    t1.tv_sec - t0.tv_sec < 20, "declined only at the timeout");
}
END_TEST

START_TEST(t_graphical_timeout_declines)
{
	struct result r;

	graphical(NULL, 2, &r);
	ck_assert_int_eq(r.accepted, 0);
}
END_TEST

static Suite *
prompt_suite(void)
{
	Suite *s = suite_create("prompt");
	TCase *tc = tcase_create("prompt");

	tcase_add_checked_fixture(tc, script_setup, script_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t_first_accept_wins);
	tcase_add_test(tc, t_all_decline);
	tcase_add_test(tc, t_timeout);
	tcase_add_test(tc, t_nobody);
	tcase_add_test(tc, t_missing_script);
	tcase_add_test(tc, t_terminal_yes);
	tcase_add_test(tc, t_terminal_no);
	tcase_add_test(tc, t_graphical_text_literal);
	suite_add_tcase(s, tc);

	tc = tcase_create("graphical");
	tcase_add_checked_fixture(tc, x_setup, x_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t_graphical_yes);
	tcase_add_test(tc, t_graphical_enter_declines);
	tcase_add_test(tc, t_graphical_timeout_declines);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(prompt_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
