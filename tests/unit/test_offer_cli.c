/*
 * test_offer_cli.c - raoffer's pieces without a broker: the INI file and
 * the command line (errors named FILE:LINE, options over the file), the
 * SASL PLAIN initial response, strict base64, the addresses advertised by
 * the listener (real port, IPv6 in brackets), the password file's
 * permission check, the viewer command template and the exit codes.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <event2/event.h>

#include "cl_listen.h"
#include "cl_offer.h"
#include "cl_offer_config.h"
#include "cl_sasl_client.h"
#include "rp_error.h"
#include "rp_log.h"

static char tmpdir[256];

static void
mk_tmp(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_offer_cli.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	log_init("test_offer_cli", LOG_LVL_ERR, 0);
}

static void
rm_tmp(void)
{
	char cmd[400];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0) {
	}
}

static const char *
tpath(const char *name)
{
	static char p[4][512];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", tmpdir, name);
	return p[i];
}

static void
put(const char *name, const char *text, mode_t mode)
{
	int fd = open(tpath(name), O_WRONLY | O_CREAT | O_TRUNC, mode);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	ck_assert_int_eq(fchmod(fd, mode), 0);
	close(fd);
}

/* Runs cl_offer_config_args over a NULL-terminated list (argv[0] added).
 * Returns its result; *out gets the config (free it). */
static int
args(struct cl_offer_config **out, char *err, size_t errlen, ...)
{
	char *argv[40];
	int argc = 0, r;
	va_list ap;
	const char *a;

	argv[argc++] = (char *)"raoffer";
	va_start(ap, errlen);
	while ((a = va_arg(ap, const char *)) != NULL && argc < 39)
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	*out = cl_offer_config_new();
	ck_assert_ptr_nonnull(*out);
	err[0] = '\0';
	r = cl_offer_config_args(*out, argc, argv, err, errlen);
	return r;
}

#define BASE "-c", "none", "-b", "broker.corp.example:4433", "--ca", "/ca.pem"

/* ---- the INI file ------------------------------------------------------- */

static const char *good_ini = "; comment\n"
                              "# another\n"
                              "[broker]\n"
                              "address = broker.corp.example:4433\n"
                              "server_name = rabroker.corp.example\n"
                              "ca = /etc/rabroker/ca.pem\n"
                              "timeout = 20s\n"
                              "\n"
                              "[auth]\n"
                              "user = CORP\\alice\n"
                              "mechanism = PLAIN\n"
                              "password_file = /home/alice/.raoffer.pw\n"
                              "[listen]\n"
                              "addresses = 192.0.2.7, [2001:db8::7] 10.0.0.1\n"
                              "port = 40123\n"
                              "[viewer]\n"
                              "port = 5901\n"
                              "command = vncviewer 127.0.0.1::%p\n"
                              "[offer]\n"
                              "mode = control\n"
                              "timeout = 2m\n"
                              "relay_after = 5\n"
                              "[log]\n"
                              "level = debug\n";

START_TEST(test_ini_good)
{
	struct cl_offer_config *c = cl_offer_config_new();
	char err[1024];

	ck_assert_int_eq(cl_offer_config_parse(
	                     c, "raoffer.conf", good_ini, err, sizeof(err)),
	    0);
	ck_assert_str_eq(c->broker[0].host, "broker.corp.example");
	ck_assert_str_eq(c->broker[0].port, "4433");
	ck_assert_str_eq(c->server_name, "rabroker.corp.example");
	ck_assert_uint_eq(c->call_timeout_s, 20);
	ck_assert_str_eq(c->user, "CORP\\alice");
	ck_assert_int_eq(c->mech, CL_SASL_PLAIN);
	ck_assert_uint_eq(c->nlisten, 3);
	ck_assert_str_eq(c->listen[0], "192.0.2.7");
	ck_assert_str_eq(c->listen[1], "2001:db8::7");
	ck_assert_str_eq(c->listen[2], "10.0.0.1");
	ck_assert_uint_eq(c->port, 40123);
	ck_assert_uint_eq(c->viewer_port, 5901);
	ck_assert_str_eq(c->viewer_cmd, "vncviewer 127.0.0.1::%p");
	ck_assert_int_eq(c->control, 1);
	ck_assert_uint_eq(c->timeout_s, 120);
	ck_assert_uint_eq(c->relay_after_s, 5);
	ck_assert_int_eq(c->log_level, LOG_LVL_DEBUG);
	cl_offer_config_free(c);
}
END_TEST

START_TEST(test_ini_errors_named)
{
	struct cl_offer_config *c = cl_offer_config_new();
	char err[2048];
	const char *bad = "[broker]\n"                 /* 1 */
	                  "address = nohostport\n"     /* 2 */
	                  "ca = /a\n"                  /* 3 */
	                  "ca = /b\n"                  /* 4 */
	                  "colour = blue\n"            /* 5 */
	                  "[listen]\n"                 /* 6 */
	                  "port = 70000\n"             /* 7 */
	                  "addresses = host.example\n" /* 8 */
	                  "[offer]\n"                  /* 9 */
	                  "timeout = soon\n"           /* 10 */
	                  "mode = admin\n"             /* 11 */
	                  "[nosuch]\n"                 /* 12 */
	                  "x = 1\n"                    /* 13 */
	                  "[auth]\n"                   /* 14 */
	                  "just a line\n"              /* 15 */
	                  "mechanism = CRAM-MD5\n"     /* 16 */
	                  "user =\n";                  /* 17 */

	ck_assert_int_eq(
	    cl_offer_config_parse(c, "x.conf", bad, err, sizeof(err)), -1);
	ck_assert_msg(
	    strstr(err, "x.conf:2: broker \"nohostport\"") != NULL, "%s", err);
	ck_assert_msg(strstr(err, "x.conf:4: [broker] ca given twice") != NULL,
	    "%s", err);
	ck_assert_msg(
	    strstr(err, "x.conf:5: unknown key \"colour\"") != NULL, "%s", err);
	ck_assert_msg(
	    strstr(err, "x.conf:7: port \"70000\"") != NULL, "%s", err);
	ck_assert_msg(
	    strstr(err, "x.conf:8: listen address") != NULL, "%s", err);
	ck_assert_msg(
	    strstr(err, "x.conf:10: timeout \"soon\"") != NULL, "%s", err);
	ck_assert_msg(
	    strstr(err, "x.conf:11: mode \"admin\"") != NULL, "%s", err);
	ck_assert_msg(
	    strstr(err, "x.conf:12: unknown section [nosuch]") != NULL, "%s",
	    err);
	ck_assert_msg(strstr(err, "x.conf:13:") == NULL,
	    "keys of an unknown section are reported once: %s", err);
	ck_assert_msg(
	    strstr(err, "x.conf:15: expected key = value") != NULL, "%s", err);
	ck_assert_msg(strstr(err, "x.conf:16: mechanism \"CRAM-MD5\"") != NULL,
	    "%s", err);
	ck_assert_msg(
	    strstr(err, "x.conf:17: [auth] user: empty value") != NULL, "%s",
	    err);
	cl_offer_config_free(c);
}
END_TEST

START_TEST(test_ini_outside_section_and_long_line)
{
	struct cl_offer_config *c = cl_offer_config_new();
	char err[1024], text[1200 + 64];

	ck_assert_int_eq(
	    cl_offer_config_parse(c, "y.conf", "ca = /x\n", err, sizeof(err)),
	    -1);
	ck_assert_msg(
	    strstr(err, "y.conf:1: \"ca\" outside a section"), "%s", err);
	memset(text, 'a', sizeof(text));
	memcpy(text, "[log]\nlevel = ", 14);
	text[sizeof(text) - 1] = '\0';
	ck_assert_int_eq(
	    cl_offer_config_parse(c, "z.conf", text, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "z.conf:2: line longer than"), "%s", err);
	cl_offer_config_free(c);
}
END_TEST

/* ---- the command line ----------------------------------------------------- */

START_TEST(test_args_offer_and_options)
{
	struct cl_offer_config *c;
	char err[1024];

	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "-u", "alice",
	                     "--listen", "127.0.0.1", "-l", "[::1]", "--port",
	                     "0", "--viewer-port", "5901", "--control", "-t",
	                     "90s", "ws-042.corp.example", "-v", NULL),
	    0);
	ck_assert_int_eq(c->cmd, CL_CMD_OFFER);
	ck_assert_str_eq(c->arg, "ws-042.corp.example");
	ck_assert_uint_eq(c->nlisten, 2);
	ck_assert_str_eq(c->listen[1], "::1");
	ck_assert_int_eq(c->control, 1);
	ck_assert_uint_eq(c->timeout_s, 90);
	ck_assert_int_eq(c->log_level, LOG_LVL_INFO);
	cl_offer_config_free(c);

	/* explicit "offer MACHINE" and the other subcommands */
	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "-u", "alice",
	                     "offer", "machines", NULL),
	    0);
	ck_assert_int_eq(c->cmd, CL_CMD_OFFER);
	ck_assert_str_eq(c->arg, "machines");
	cl_offer_config_free(c);
	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "-u", "alice",
	                     "machines", "ws-04", NULL),
	    0);
	ck_assert_int_eq(c->cmd, CL_CMD_MACHINES);
	ck_assert_str_eq(c->arg, "ws-04");
	cl_offer_config_free(c);
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), BASE, "-u", "a", "tickets", NULL), 0);
	ck_assert_int_eq(c->cmd, CL_CMD_TICKETS);
	cl_offer_config_free(c);
	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "-u", "a", "control",
	                     "0123456789abcdef0123456789abcdef", NULL),
	    0);
	ck_assert_int_eq(c->cmd, CL_CMD_CONTROL);
	cl_offer_config_free(c);
}
END_TEST

START_TEST(test_args_errors)
{
	struct cl_offer_config *c;
	char err[1024];

	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "-u", "a", NULL), -1);
	ck_assert_msg(strstr(err, "what to do?"), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), BASE, "-u", "a", "--bogus", "m", NULL),
	    -1);
	ck_assert_msg(strstr(err, "unknown option --bogus"), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), BASE, "-u", "a", "m", "-p", NULL), -1);
	ck_assert_msg(strstr(err, "needs a value"), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "-u", "a", "-p",
	                     "65536", "m", NULL),
	    -1);
	ck_assert_msg(strstr(err, "--port \"65536\""), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "-u", "a", "-l",
	                     "ws-042.corp.example", "m", NULL),
	    -1);
	ck_assert_msg(strstr(err, "not an IPv4 or IPv6 address"), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), BASE, "-u", "a", "cancel", "ABC", NULL),
	    -1);
	ck_assert_msg(strstr(err, "cancel needs one ticket ID"), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), BASE, "-u", "a", "m1", "m2", NULL), -1);
	ck_assert_msg(strstr(err, "unknown command \"m1\""), "%s", err);
	cl_offer_config_free(c);
	/* missing settings */
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), "-c", "none", "-u", "a", "m", NULL), -1);
	ck_assert_msg(strstr(err, "no broker"), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "m", NULL), -1);
	ck_assert_msg(strstr(err, "no user"), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), BASE, "--cert", "/c.pem", "m", NULL),
	    -1);
	ck_assert_msg(strstr(err, "--cert and --key go together"), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "--mechanism",
	                     "EXTERNAL", "m", NULL),
	    -1);
	ck_assert_msg(
	    strstr(err, "EXTERNAL needs a client certificate"), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(args(&c, err, sizeof(err), BASE, "-u", "a",
	                     "--viewer-cmd", "viewer %x", "m", NULL),
	    -1);
	ck_assert_msg(strstr(err, "only %p"), "%s", err);
	cl_offer_config_free(c);
	/* a user name with a control character */
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), BASE, "-u", "al\tice", "m", NULL), -1);
	ck_assert_msg(strstr(err, "control character"), "%s", err);
	cl_offer_config_free(c);
}
END_TEST

/* Several brokers: a list in [broker] address or one --broker value,
 * tried in order; each --broker replaces the whole list. */
START_TEST(test_broker_list)
{
	struct cl_offer_config *c = cl_offer_config_new();
	char err[1024];

	ck_assert_int_eq(cl_offer_config_parse(c, "b.conf",
	                     "[broker]\naddress = a.example:1, [::1]:2 "
	                     "127.0.0.1:3\n",
	                     err, sizeof(err)),
	    0);
	ck_assert_uint_eq(c->nbroker, 3);
	ck_assert_str_eq(c->broker[0].host, "a.example");
	ck_assert_str_eq(c->broker[1].host, "::1");
	ck_assert_str_eq(c->broker[1].port, "2");
	ck_assert_str_eq(c->broker[2].port, "3");
	cl_offer_config_free(c);
	c = cl_offer_config_new();
	ck_assert_int_eq(cl_offer_config_parse(c, "b.conf",
	                     "[broker]\naddress = a:1,b:2,c:3,d:4,e:5,f:6,"
	                     "g:7,h:8,i:9\n",
	                     err, sizeof(err)),
	    -1);
	ck_assert_msg(
	    strstr(err, "b.conf:2: more than 8 broker addresses"), "%s", err);
	cl_offer_config_free(c);
	c = cl_offer_config_new();
	ck_assert_int_eq(
	    cl_offer_config_parse(c, "b.conf",
	        "[broker]\naddress = a:1, nope\n", err, sizeof(err)),
	    -1);
	ck_assert_msg(
	    strstr(err, "b.conf:2: broker \"nope\": expected"), "%s", err);
	cl_offer_config_free(c);

	put("b.conf", "[broker]\naddress = a:1, b:2\n", 0644);
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), "-c", tpath("b.conf"), "--ca", "/ca.pem",
	        "-u", "a", "-b", "x:7", "-b", "y:8,[::1]:9", "m", NULL),
	    0);
	ck_assert_uint_eq(c->nbroker, 2);
	ck_assert_str_eq(c->broker[0].host, "y");
	ck_assert_str_eq(c->broker[1].host, "::1");
	cl_offer_config_free(c);
	ck_assert_int_eq(args(&c, err, sizeof(err), "-c", "none", "--ca",
	                     "/ca.pem", "-u", "a", "-b", ",", "m", NULL),
	    -1);
	ck_assert_msg(strstr(err, "broker \",\": expected"), "%s", err);
	cl_offer_config_free(c);
}
END_TEST

/* Options read after an operand (a second pass over the rest) add to
 * those before it: the first -l replaces the file's list, later ones add,
 * whichever operand they follow; -v counts across operands too. */
START_TEST(test_args_listen_across_operands)
{
	struct cl_offer_config *c;
	char err[2048];

	put("l.conf", good_ini, 0644);
	ck_assert_int_eq(args(&c, err, sizeof(err), "-c", tpath("l.conf"), "-l",
	                     "127.0.0.1", "ws-042", "-l", "[::1]", "-v", NULL),
	    0);
	ck_assert_str_eq(c->arg, "ws-042");
	ck_assert_uint_eq(c->nlisten, 2);
	ck_assert_str_eq(c->listen[0], "127.0.0.1");
	ck_assert_str_eq(c->listen[1], "::1");
	cl_offer_config_free(c);
	/* "offer MACHINE": three passes */
	ck_assert_int_eq(args(&c, err, sizeof(err), "-c", tpath("l.conf"), "-v",
	                     "-l", "10.0.0.9", "offer", "-l", "127.0.0.1",
	                     "ws-042", "-l", "[::1]", "-v", NULL),
	    0);
	ck_assert_int_eq(c->cmd, CL_CMD_OFFER);
	ck_assert_str_eq(c->arg, "ws-042");
	ck_assert_uint_eq(c->nlisten, 3);
	ck_assert_str_eq(c->listen[0], "10.0.0.9");
	ck_assert_str_eq(c->listen[1], "127.0.0.1");
	ck_assert_str_eq(c->listen[2], "::1");
	ck_assert_int_eq(c->log_level, LOG_LVL_DEBUG);
	cl_offer_config_free(c);
	/* -l only after the operand still replaces the file's list */
	ck_assert_int_eq(args(&c, err, sizeof(err), "-c", tpath("l.conf"),
	                     "ws-042", "-l", "127.0.0.1", NULL),
	    0);
	ck_assert_uint_eq(c->nlisten, 1);
	ck_assert_str_eq(c->listen[0], "127.0.0.1");
	cl_offer_config_free(c);
}
END_TEST

START_TEST(test_args_override_file)
{
	struct cl_offer_config *c;
	char err[2048];

	put("r.conf", good_ini, 0644);
	ck_assert_int_eq(args(&c, err, sizeof(err), "-c", tpath("r.conf"),
	                     "--listen", "127.0.0.1", "--view", "--port", "0",
	                     "-b", "[::1]:9999", "ws-042", NULL),
	    0);
	ck_assert_str_eq(c->config_path, tpath("r.conf"));
	/* the file's three addresses are replaced, not extended */
	ck_assert_uint_eq(c->nlisten, 1);
	ck_assert_str_eq(c->listen[0], "127.0.0.1");
	ck_assert_int_eq(c->control, 0);
	ck_assert_uint_eq(c->port, 0);
	ck_assert_str_eq(c->broker[0].host, "::1");
	ck_assert_str_eq(c->broker[0].port, "9999");
	/* untouched: from the file */
	ck_assert_str_eq(c->user, "CORP\\alice");
	ck_assert_uint_eq(c->viewer_port, 5901);
	cl_offer_config_free(c);

	/* a broken file stops everything, with its line */
	put("bad.conf", "[offer]\nmode = maybe\n", 0644);
	ck_assert_int_eq(
	    args(&c, err, sizeof(err), "-c", tpath("bad.conf"), "m", NULL), -1);
	ck_assert_msg(strstr(err, "bad.conf:2: mode \"maybe\""), "%s", err);
	cl_offer_config_free(c);
	ck_assert_int_eq(args(&c, err, sizeof(err), "--config",
	                     tpath("missing.conf"), "m", NULL),
	    -1);
	ck_assert_msg(strstr(err, "missing.conf: No such file"), "%s", err);
	cl_offer_config_free(c);
}
END_TEST

START_TEST(test_values)
{
	unsigned v;
	char a[64], *s;

	ck_assert_int_eq(cl_offer_parse_duration("90", &v), 0);
	ck_assert_uint_eq(v, 90);
	ck_assert_int_eq(cl_offer_parse_duration("5m", &v), 0);
	ck_assert_uint_eq(v, 300);
	ck_assert_int_eq(cl_offer_parse_duration("1h", &v), 0);
	ck_assert_uint_eq(v, 3600);
	ck_assert_int_eq(cl_offer_parse_duration("-1", &v), -1);
	ck_assert_int_eq(cl_offer_parse_duration("5d", &v), -1);
	ck_assert_int_eq(cl_offer_parse_duration("", &v), -1);
	ck_assert_int_eq(cl_offer_parse_port("0", &v), 0);
	ck_assert_int_eq(cl_offer_parse_port("65535", &v), 0);
	ck_assert_int_eq(cl_offer_parse_port("65536", &v), -1);
	ck_assert_int_eq(cl_offer_parse_port("+5", &v), -1);
	ck_assert_int_eq(cl_offer_parse_addr("[::1]", a, sizeof(a)), 0);
	ck_assert_str_eq(a, "::1");
	ck_assert_int_eq(cl_offer_parse_addr("10.1.2.3", a, sizeof(a)), 0);
	ck_assert_int_eq(cl_offer_parse_addr("10.1.2", a, sizeof(a)), -1);
	ck_assert_int_eq(cl_offer_parse_addr("[10.1.2.3]", a, sizeof(a)), -1);
	ck_assert_int_eq(cl_offer_parse_addr("[::1", a, sizeof(a)), -1);
	ck_assert(cl_offer_ticket_id_valid("0123456789abcdef0123456789abcdef"));
	ck_assert(
	    !cl_offer_ticket_id_valid("0123456789ABCDEF0123456789abcdef"));
	ck_assert(!cl_offer_ticket_id_valid("0123456789abcdef"));
	s = cl_offer_viewer_cmd("vncviewer 127.0.0.1::%p -q 100%%", 5901);
	ck_assert_str_eq(s, "vncviewer 127.0.0.1::5901 -q 100%");
	free(s);
	ck_assert_ptr_null(cl_offer_viewer_cmd("v %s", 1));
	ck_assert_ptr_null(cl_offer_viewer_cmd("v %", 1));
}
END_TEST

START_TEST(test_exit_codes)
{
	ck_assert_int_eq(cl_offer_exit_for(RP_OK), CL_EXIT_OK);
	ck_assert_int_eq(cl_offer_exit_for(RP_ERR_FORBIDDEN), CL_EXIT_REFUSED);
	ck_assert_int_eq(cl_offer_exit_for(RP_ERR_DECLINED), CL_EXIT_REFUSED);
	ck_assert_int_eq(
	    cl_offer_exit_for(RP_ERR_AUTH_FAILED), CL_EXIT_REFUSED);
	ck_assert_int_eq(
	    cl_offer_exit_for(RP_ERR_MACHINE_OFFLINE), CL_EXIT_REFUSED);
	ck_assert_int_eq(cl_offer_exit_for(RP_ERR_DIRECTORY_UNAVAILABLE),
	    CL_EXIT_UNAVAILABLE);
	ck_assert_int_eq(
	    cl_offer_exit_for(RP_ERR_AUDIT_UNAVAILABLE), CL_EXIT_UNAVAILABLE);
	ck_assert_int_eq(cl_offer_exit_for(RP_ERR_CLOSED), CL_EXIT_UNAVAILABLE);
	ck_assert_int_eq(
	    cl_offer_exit_for(RP_ERR_INVALID_PARAMS), CL_EXIT_USAGE);
}
END_TEST

/* ---- SASL PLAIN and base64 ----------------------------------------------------- */

START_TEST(test_plain_initial)
{
	char err[256], *b;
	json_t *p;

	/* docs/AUTH.md's example */
	b = cl_sasl_plain_initial("alice", 5, "alice-pw", 8, err, sizeof(err));
	ck_assert_ptr_nonnull(b);
	ck_assert_str_eq(b, "AGFsaWNlAGFsaWNlLXB3");
	p = cl_sasl_start_params(CL_SASL_PLAIN, b);
	ck_assert_str_eq(
	    json_string_value(json_object_get(p, "mechanism")), "PLAIN");
	ck_assert_str_eq(json_string_value(json_object_get(p, "initial")), b);
	json_decref(p);
	cl_sasl_wipe_free(b);
	/* every name form goes as typed */
	b = cl_sasl_plain_initial(
	    "CORP\\alice", 10, "alice-pw", 8, err, sizeof(err));
	ck_assert_str_eq(b, "AENPUlBcYWxpY2UAYWxpY2UtcHc=");
	cl_sasl_wipe_free(b);
	b = cl_sasl_plain_initial(
	    "alice@corp.example", 18, "pw", 2, err, sizeof(err));
	ck_assert_str_eq(b, "AGFsaWNlQGNvcnAuZXhhbXBsZQBwdw==");
	cl_sasl_wipe_free(b);
	/* refused before anything is sent */
	ck_assert_ptr_null(
	    cl_sasl_plain_initial("alice", 5, "", 0, err, sizeof(err)));
	ck_assert_msg(strstr(err, "password is empty"), "%s", err);
	ck_assert_ptr_null(
	    cl_sasl_plain_initial("ali\0ce", 6, "pw", 2, err, sizeof(err)));
	ck_assert_msg(strstr(err, "user name contains a NUL"), "%s", err);
	ck_assert_ptr_null(
	    cl_sasl_plain_initial("alice", 5, "p\0w", 3, err, sizeof(err)));
	ck_assert_msg(strstr(err, "password contains a NUL"), "%s", err);
	ck_assert_ptr_null(
	    cl_sasl_plain_initial("", 0, "pw", 2, err, sizeof(err)));
	ck_assert_msg(strstr(err, "user name is empty"), "%s", err);
	/* EXTERNAL: an empty initial response, not an absent one */
	p = cl_sasl_start_params(CL_SASL_EXTERNAL, NULL);
	ck_assert_str_eq(
	    json_string_value(json_object_get(p, "mechanism")), "EXTERNAL");
	ck_assert_ptr_nonnull(json_object_get(p, "initial"));
	ck_assert_str_eq(json_string_value(json_object_get(p, "initial")), "");
	json_decref(p);
	ck_assert_ptr_null(cl_sasl_start_params(CL_SASL_PLAIN, NULL));
}
END_TEST

START_TEST(test_base64)
{
	unsigned char out[64];
	const unsigned char k[32] = {0xff, 0, 1, 2, 3, 0xfe, 0x80};
	char *e;

	ck_assert_int_eq(cl_b64_decode("AGFsaWNl", out, sizeof(out)), 6);
	ck_assert_int_eq(memcmp(out, "\0alice", 6), 0);
	ck_assert_int_eq(cl_b64_decode("", out, sizeof(out)), 0);
	ck_assert_int_eq(cl_b64_decode("YQ==", out, sizeof(out)), 1);
	ck_assert_int_eq(cl_b64_decode("YWI=", out, sizeof(out)), 2);
	ck_assert_int_eq(cl_b64_decode("YQ=", out, sizeof(out)), -1);
	ck_assert_int_eq(cl_b64_decode("YR==", out, sizeof(out)), -1);
	ck_assert_int_eq(cl_b64_decode("Y Q==", out, sizeof(out)), -1);
	ck_assert_int_eq(cl_b64_decode("YQ==YQ==", out, sizeof(out)), -1);
	ck_assert_int_eq(cl_b64_decode("YWJj", out, 2), -1);
	e = cl_b64_encode(k, sizeof(k));
	ck_assert_int_eq(cl_b64_decode(e, out, sizeof(out)), 32);
	ck_assert_int_eq(memcmp(out, k, 32), 0);
	free(e);
}
END_TEST

/* ---- the listener: what is advertised ------------------------------------------- */

static void
noop_accept(evutil_socket_t fd, const char *peer, void *arg)
{
	(void)peer;
	(void)arg;
	evutil_closesocket(fd);
}

START_TEST(test_format)
{
	char t[80];

	ck_assert_int_eq(
	    cl_listen_format_addr("192.0.2.7", 40123, t, sizeof(t)), 0);
	ck_assert_str_eq(t, "192.0.2.7:40123");
	ck_assert_int_eq(
	    cl_listen_format_addr("2001:db8::7", 40123, t, sizeof(t)), 0);
	ck_assert_str_eq(t, "[2001:db8::7]:40123");
	ck_assert_int_eq(cl_listen_format_addr("::1", 1, t, sizeof(t)), 0);
	ck_assert_str_eq(t, "[::1]:1");
	ck_assert_int_eq(cl_listen_format_addr("::1", 1, t, 7), -1);
	ck_assert_int_eq(cl_listen_format_addr("nohost", 1, t, sizeof(t)), -1);
}
END_TEST

/* Seed 000: with port 0 the advertised port is the one the kernel gave,
 * read back from the socket, and the same for every address. */
START_TEST(test_listen_real_port)
{
	struct event_base *base = event_base_new();
	const char *addrs[] = {"127.0.0.1", "::1"};
	struct cl_listen *l;
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	char err[256], want[64];
	json_t *a;
	unsigned port;
	int fd, v6 = 1;

	/* ::1 may be missing in a container: then test IPv4 alone */
	fd = socket(AF_INET6, SOCK_STREAM, 0);
	if (fd < 0)
		v6 = 0;
	else {
		struct sockaddr_in6 s6;
		memset(&s6, 0, sizeof(s6));
		s6.sin6_family = AF_INET6;
		s6.sin6_addr = in6addr_loopback;
		if (bind(fd, (struct sockaddr *)&s6, sizeof(s6)) != 0)
			v6 = 0;
		close(fd);
	}
	l = cl_listen_new(
	    base, addrs, v6 ? 2 : 1, 0, noop_accept, NULL, err, sizeof(err));
	ck_assert_msg(l != NULL, "%s", err);
	port = cl_listen_port(l, 0);
	ck_assert_uint_ne(port, 0);
	a = cl_listen_addresses(l);
	ck_assert_uint_eq(json_array_size(a), v6 ? 2 : 1);
	snprintf(want, sizeof(want), "127.0.0.1:%u", port);
	ck_assert_str_eq(json_string_value(json_array_get(a, 0)), want);
	if (v6) {
		snprintf(want, sizeof(want), "[::1]:%u", port);
		ck_assert_str_eq(json_string_value(json_array_get(a, 1)), want);
		ck_assert_uint_eq(cl_listen_port(l, 1), port);
	}
	json_decref(a);

	/* the port really is ours: a second bind on it fails, and the
	 * message names the port and the option */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_ne(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	{
		struct cl_listen *l2 = cl_listen_new(
		    base, addrs, 1, port, noop_accept, NULL, err, sizeof(err));
		char num[16];
		ck_assert_ptr_null(l2);
		snprintf(num, sizeof(num), "port %u", port);
		ck_assert_msg(
		    strstr(err, num) && strstr(err, "--port"), "%s", err);
	}
	/* getsockname agrees with what is advertised */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_port = 0;
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	cl_listen_free(l);

	/* a fixed port is used as given */
	{
		const char *lo = "127.0.0.1";
		unsigned p2 = ntohs(sa.sin_port);
		l = cl_listen_new(
		    base, &lo, 1, p2, noop_accept, NULL, err, sizeof(err));
		ck_assert_msg(l != NULL, "%s", err);
		ck_assert_uint_eq(cl_listen_port(l, 0), p2);
		cl_listen_free(l);
	}
	/* not an address of this machine */
	{
		const char *far = "192.0.2.1";
		l = cl_listen_new(
		    base, &far, 1, 0, noop_accept, NULL, err, sizeof(err));
		ck_assert_ptr_null(l);
		ck_assert_msg(
		    strstr(err, "not an address of this machine"), "%s", err);
	}
	event_base_free(base);
}
END_TEST

START_TEST(test_local_addrs)
{
	char **a = NULL;
	size_t n = 0, i;

	ck_assert_int_eq(cl_listen_local_addrs(1, &a, &n), 0);
	ck_assert_uint_ge(n, 1);
	/* loopback only at the end, never a link-local address */
	ck_assert_str_eq(a[n - 1], "127.0.0.1");
	for (i = 0; i < n; i++) {
		ck_assert_msg(strncmp(a[i], "fe80:", 5) != 0, "%s", a[i]);
		ck_assert_msg(
		    i == n - 1 || strncmp(a[i], "127.", 4) != 0, "%s", a[i]);
		ck_assert_msg(strcmp(a[i], "::1") != 0, "%s", a[i]);
	}
	cl_listen_addrs_free(a, n);
	ck_assert_int_eq(cl_listen_local_addrs(0, &a, &n), 0);
	for (i = 0; i < n; i++)
		ck_assert_str_ne(a[i], "127.0.0.1");
	cl_listen_addrs_free(a, n);
}
END_TEST

/* ---- the password file ----------------------------------------------------------- */

START_TEST(test_password_file)
{
	char buf[64], err[512];
	size_t len = 99;

	put("pw", "s3cret\n", 0600);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pw"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    0);
	ck_assert_uint_eq(len, 6);
	ck_assert_str_eq(buf, "s3cret");
	/* CRLF, no final newline, only the first line */
	put("pw", "s3cret\r\nsecond\n", 0600);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pw"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    0);
	ck_assert_str_eq(buf, "s3cret");
	put("pw", "nolf", 0400);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pw"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    0);
	ck_assert_str_eq(buf, "nolf");
	/* permissions: any group/other bit is refused, with the fix */
	put("pw", "s3cret\n", 0640);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pw"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    -1);
	ck_assert_msg(
	    strstr(err, "mode 0640") && strstr(err, "chmod 600"), "%s", err);
	ck_assert_msg(strstr(err, "s3cret") == NULL, "password in message");
	ck_assert_str_eq(buf, "");
	put("pw", "s3cret\n", 0604);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pw"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    -1);
	put("pw", "s3cret\n", 0620);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pw"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    -1);
	/* empty, NUL, too long, missing, a directory */
	put("pw", "\n", 0600);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pw"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    -1);
	ck_assert_msg(strstr(err, "empty"), "%s", err);
	{
		int fd =
		    open(tpath("pwnul"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
		ck_assert_int_eq(write(fd, "ab\0cd\n", 6), 6);
		close(fd);
	}
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pwnul"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    -1);
	ck_assert_msg(strstr(err, "NUL"), "%s", err);
	put("pwlong",
	    "0123456789012345678901234567890123456789012345678901234567890123"
	    "456789\n",
	    0600);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pwlong"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    -1);
	ck_assert_msg(strstr(err, "longer than"), "%s", err);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("nope"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    -1);
	ck_assert_int_eq(cl_offer_read_password_file(
	                     tmpdir, buf, sizeof(buf), &len, err, sizeof(err)),
	    -1);
	ck_assert_msg(strstr(err, "not a regular file"), "%s", err);
	/* A FIFO with no writer: refused at once, not waited on (opening it
	 * for reading would block raoffer forever). */
	ck_assert_int_eq(mkfifo(tpath("pwfifo"), 0600), 0);
	ck_assert_int_eq(cl_offer_read_password_file(tpath("pwfifo"), buf,
	                     sizeof(buf), &len, err, sizeof(err)),
	    -1);
	ck_assert_msg(strstr(err, "not a regular file"), "%s", err);
}
END_TEST

/* The terminal prompt: echo is off while the password is typed and back
 * on afterwards; the password never appears on the terminal. */
START_TEST(test_password_tty_no_echo)
{
	char seen[4096];
	size_t n = 0;
	int master, st = -1, typed = 0, i;
	pid_t pid;

	seen[0] = '\0';
	pid = forkpty(&master, NULL, NULL, NULL);
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char buf[64], err[256];
		size_t len = 0;
		struct termios t;
		int r = cl_offer_read_password_tty(
		    "Password: ", buf, sizeof(buf), &len, err, sizeof(err));
		int ok = r == 0 && len == 9 && strcmp(buf, "hunter2!x") == 0;
		/* echo restored */
		ok = ok && tcgetattr(0, &t) == 0 && (t.c_lflag & ECHO);
		_exit(ok ? 0 : 1);
	}
	for (i = 0; i < 200; i++) { /* at most about 10 s */
		struct pollfd p = {master, POLLIN, 0};
		if (poll(&p, 1, 50) > 0) {
			ssize_t r =
			    read(master, seen + n, sizeof(seen) - 1 - n);
			if (r <= 0)
				break;
			n += (size_t)r;
			seen[n] = '\0';
		}
		if (!typed && strstr(seen, "Password: ") != NULL) {
			ck_assert_int_eq(write(master, "hunter2!x\n", 10), 10);
			typed = 1;
		}
		if (st == -1 && waitpid(pid, &st, WNOHANG) != pid)
			st = -1;
		else if (st != -1 && n > 0)
			break;
	}
	if (st == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	close(master);
	ck_assert_msg(typed, "no prompt: \"%s\"", seen);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	    "the password was not read back right (status %d)", st);
	ck_assert_msg(strstr(seen, "hunter2") == NULL,
	    "the password was echoed: \"%s\"", seen);
	ck_assert_msg(strstr(seen, "Password: ") != NULL, "%s", seen);
}
END_TEST

/* The shipped example parses, and its active keys are the documented
 * ones. */
START_TEST(test_deploy_example)
{
	struct cl_offer_config *c = cl_offer_config_new();
	const char *src = getenv("RABROKER_SOURCE_DIR");
	char path[600], err[2048];

	snprintf(path, sizeof(path), "%s/deploy/raoffer.conf",
	    src != NULL && *src ? src : RABROKER_SOURCE_DIR);
	ck_assert_msg(
	    cl_offer_config_load(c, path, err, sizeof(err)) == 0, "%s", err);
	ck_assert_str_eq(c->broker[0].host, "broker.corp.example");
	ck_assert_str_eq(c->user, "CORP\\alice");
	ck_assert_uint_eq(c->nlisten, 0);
	ck_assert_uint_eq(c->timeout_s, 120);
	ck_assert_uint_eq(c->relay_after_s, 0);
	cl_offer_config_free(c);
}
END_TEST

static Suite *
suite(void)
{
	Suite *s = suite_create("offer_cli");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, mk_tmp, rm_tmp);
	tcase_add_test(tc, test_ini_good);
	tcase_add_test(tc, test_ini_errors_named);
	tcase_add_test(tc, test_ini_outside_section_and_long_line);
	tcase_add_test(tc, test_args_offer_and_options);
	tcase_add_test(tc, test_args_listen_across_operands);
	tcase_add_test(tc, test_args_errors);
	tcase_add_test(tc, test_args_override_file);
	tcase_add_test(tc, test_values);
	tcase_add_test(tc, test_exit_codes);
	tcase_add_test(tc, test_plain_initial);
	tcase_add_test(tc, test_base64);
	tcase_add_test(tc, test_format);
	tcase_add_test(tc, test_listen_real_port);
	tcase_add_test(tc, test_local_addrs);
	tcase_add_test(tc, test_password_file);
	tcase_add_test(tc, test_deploy_example);
	tcase_add_test(tc, test_broker_list);
	tcase_add_test(tc, test_password_tty_no_echo);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
