/*
 * rabrokerctl_main.c - the broker's administration tool.
 *
 * One table of subcommands; main() only finds the entry and runs it.
 *
 *   rabrokerctl [-s SOCKET] [-j] status | agents | tickets | expire ID
 *   rabrokerctl check-config [-f FILE]
 *   rabrokerctl verify-audit FILE [FILE...]
 *
 * status/agents/tickets/expire talk to the running broker over its control
 * socket (bk_control.h: one JSON object per line each way); -j prints the
 * broker's JSON reply as it came. check-config runs `rabrokerd -n` (the
 * program beside this one), so that both always check the same things.
 *
 * Exit status: 0 success, 1 the check failed or the broker refused (a
 * broken audit trail, a bad configuration, no such ticket), 2 usage or I/O
 * error (the socket cannot be reached).
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bk_audit.h"
#include "bk_config.h"
#include "bk_control.h"
#include "rp_log.h"

#define CTL_TIMEOUT_MS 10000

/* Global options (before or after the command name). */
static const char *sock_path = BK_CONTROL_DEFAULT_SOCKET;
static int raw_json;

struct ctl_cmd {
	const char *name;
	const char *usage;
	const char *help;
	int (*run)(int argc, char **argv);
};

/*
 * verify-audit FILE [FILE...]: files in rotation order (oldest first); the
 * chain must continue from each file into the next.
 */
static int
cmd_verify_audit(int argc, char **argv)
{
	struct bk_audit_verifier v;
	unsigned long bad = 0;
	char why[512], hash[BK_AUDIT_HASH_HEX + 1];
	int rc;

	if (argc < 2)
		return -1;
	bk_audit_verifier_init(&v);
	for (int i = 1; i < argc; i++) {
		rc =
		    bk_audit_verify_file_v(&v, argv[i], &bad, why, sizeof(why));
		if (rc == -2) {
			fprintf(stderr, "rabrokerctl: %s\n", why);
			return 2;
		}
		if (rc != 0) {
			printf("%s: %s\n", argv[i], why);
			return 1;
		}
	}
	for (int i = 0; i < 32; i++)
		snprintf(hash + 2 * i, 3, "%02x", v.hash[i]);
	if (!v.started)
		hash[0] = '\0';
	printf("ok: %lu lines", v.lines);
	if (v.started)
		printf(" (last seq %llu, last hash %s)",
		    (unsigned long long)v.seq, hash);
	printf("\n");
	return 0;
}

/* ---- control socket client ---------------------------------------------- */

/* Sends one request line and reads one reply line. NULL after a message. */
static json_t *
ctl_request(json_t *req)
{
	struct sockaddr_un sun;
	char *line = json_dumps(req, JSON_COMPACT);
	char buf[1 << 16];
	size_t used = 0;
	json_error_t je;
	json_t *rep;
	int fd;

	json_decref(req);
	if (line == NULL)
		return NULL;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(sock_path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "rabrokerctl: socket path too long\n");
		free(line);
		return NULL;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;
		fprintf(stderr, "rabrokerctl: cannot connect to %s: %s%s\n",
		    sock_path, strerror(e),
		    e == EACCES ? " (run as root or as a member of the "
		                  "broker's group, rabroker)"
		        : e == ENOENT || e == ECONNREFUSED
		        ? " (is rabrokerd running? see [control] socket in "
		          "rabrokerd.conf, or give -s SOCKET)"
		        : "");
		if (fd >= 0)
			close(fd);
		free(line);
		return NULL;
	}
	if (write(fd, line, strlen(line)) != (ssize_t)strlen(line) ||
	    write(fd, "\n", 1) != 1) {
		fprintf(stderr, "rabrokerctl: %s: %s\n", sock_path,
		    strerror(errno));
		close(fd);
		free(line);
		return NULL;
	}
	free(line);
	while (used < sizeof(buf) - 1 && memchr(buf, '\n', used) == NULL) {
		struct pollfd pfd = {fd, POLLIN, 0};
		ssize_t n;

		if (poll(&pfd, 1, CTL_TIMEOUT_MS) <= 0) {
			fprintf(stderr, "rabrokerctl: no answer from %s\n",
			    sock_path);
			close(fd);
			return NULL;
		}
		n = read(fd, buf + used, sizeof(buf) - 1 - used);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			break;
		}
		used += (size_t)n;
	}
	close(fd);
	rep = json_loadb(buf, used, JSON_DISABLE_EOF_CHECK, &je);
	if (rep == NULL || !json_is_object(rep)) {
		fprintf(stderr, "rabrokerctl: bad answer from %s\n", sock_path);
		json_decref(rep);
		return NULL;
	}
	return rep;
}

static void
fmt_time(long long t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
		snprintf(out, len, "-");
	else
		strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *
js(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s != NULL ? s : "-";
}

/* Runs one control command. 0, 1 (the broker refused) or 2. */
static int
ctl_run(json_t *req, void (*show)(const json_t *rep))
{
	json_t *rep = ctl_request(req);
	int ok;

	if (rep == NULL)
		return 2;
	ok = json_is_true(json_object_get(rep, "ok"));
	if (raw_json) {
		char *s = json_dumps(rep, JSON_COMPACT);
		if (s != NULL)
			printf("%s\n", s);
		free(s);
	} else if (!ok) {
		fprintf(stderr, "rabrokerctl: %s: %s\n", js(rep, "error"),
		    js(rep, "message"));
	} else {
		show(rep);
	}
	json_decref(rep);
	return ok ? 0 : 1;
}

static void
show_status(const json_t *rep)
{
	const char *key;
	json_t *v;
	char t[32];

	json_object_foreach((json_t *)rep, key, v)
	{
		if (strcmp(key, "ok") == 0)
			continue;
		if (strcmp(key, "started") == 0) {
			fmt_time(json_integer_value(v), t, sizeof(t));
			printf("%-14s %s\n", key, t);
		} else if (json_is_string(v))
			printf("%-14s %s\n", key, json_string_value(v));
		else if (json_is_integer(v))
			printf("%-14s %lld\n", key,
			    (long long)json_integer_value(v));
		else if (json_is_boolean(v))
			printf(
			    "%-14s %s\n", key, json_is_true(v) ? "yes" : "no");
	}
}

static void
show_agents(const json_t *rep)
{
	json_t *list = json_object_get(rep, "agents"), *a, *s;
	size_t i, j;
	char t[32];

	printf("%-28s %-22s %-20s %s\n", "MACHINE", "ADDRESS", "SINCE",
	    "SESSIONS");
	json_array_foreach(list, i, a)
	{
		fmt_time(json_integer_value(json_object_get(a, "since")), t,
		    sizeof(t));
		printf("%-28s %-22s %-20s", js(a, "fqdn"), js(a, "address"), t);
		if (json_array_size(json_object_get(a, "sessions")) == 0)
			printf(" (nobody logged on)");
		json_array_foreach(json_object_get(a, "sessions"), j, s)
		{
			printf("%s %s (%s%s)", j ? "," : "", js(s, "user"),
			    js(s, "kind"),
			    json_is_true(json_object_get(s, "locked"))
			        ? ", locked"
			        : "");
		}
		printf("\n");
	}
	printf("%zu machine(s) online\n", json_array_size(list));
}

static void
show_tickets(const json_t *rep)
{
	json_t *list = json_object_get(rep, "tickets"), *t;
	size_t i;
	char exp[32];

	printf("%-32s %-10s %-7s %-20s %-24s %s\n", "TICKET", "STATE", "MODE",
	    "HELPER", "MACHINE", "EXPIRES");
	json_array_foreach(list, i, t)
	{
		fmt_time(json_integer_value(json_object_get(t, "expires")), exp,
		    sizeof(exp));
		printf("%-32s %-10s %-7s %-20s %-24s %s\n", js(t, "id"),
		    js(t, "state"), js(t, "mode"), js(t, "helper"),
		    js(t, "machine"), exp);
	}
	printf("%zu open ticket(s)\n", json_array_size(list));
}

static void
show_expire(const json_t *rep)
{
	printf("ticket %s revoked\n", js(rep, "ticket"));
}

/* Subcommand options: -s SOCKET and -j may also follow the command. */
static int
ctl_opts(int argc, char **argv, int nargs)
{
	int ch;

	optind = 1;
	while ((ch = getopt(argc, argv, "+s:j")) != -1) {
		switch (ch) {
		case 's':
			sock_path = optarg;
			break;
		case 'j':
			raw_json = 1;
			break;
		default:
			return -1;
		}
	}
	return argc - optind == nargs ? optind : -1;
}

static int
cmd_status(int argc, char **argv)
{
	if (ctl_opts(argc, argv, 0) < 0)
		return -1;
	return ctl_run(json_pack("{s:s}", "cmd", "status"), show_status);
}

static int
cmd_agents(int argc, char **argv)
{
	if (ctl_opts(argc, argv, 0) < 0)
		return -1;
	return ctl_run(json_pack("{s:s}", "cmd", "agents"), show_agents);
}

static int
cmd_tickets(int argc, char **argv)
{
	if (ctl_opts(argc, argv, 0) < 0)
		return -1;
	return ctl_run(json_pack("{s:s}", "cmd", "tickets"), show_tickets);
}

static int
cmd_expire(int argc, char **argv)
{
	int i = ctl_opts(argc, argv, 1);

	if (i < 0)
		return -1;
	return ctl_run(
	    json_pack("{s:s, s:s}", "cmd", "expire", "ticket", argv[i]),
	    show_expire);
}

/*
 * check-config [-f FILE]: exactly `rabrokerd -n -f FILE`, with the
 * rabrokerd installed beside this program (or found in PATH).
 */
static int
cmd_check_config(int argc, char **argv)
{
	const char *file = BK_CONFIG_DEFAULT_PATH;
	char self[PATH_MAX], prog[PATH_MAX + 16];
	ssize_t n;
	int ch;

	optind = 1;
	while ((ch = getopt(argc, argv, "+f:")) != -1) {
		if (ch != 'f')
			return -1;
		file = optarg;
	}
	if (optind != argc)
		return -1;
	fflush(stdout);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		char *slash;

		self[n] = '\0';
		if ((slash = strrchr(self, '/')) != NULL) {
			*slash = '\0';
			snprintf(prog, sizeof(prog), "%s/rabrokerd", self);
			if (access(prog, X_OK) == 0)
				execl(prog, "rabrokerd", "-n", "-f", file,
				    (char *)NULL);
		}
	}
	execlp("rabrokerd", "rabrokerd", "-n", "-f", file, (char *)NULL);
	fprintf(
	    stderr, "rabrokerctl: cannot run rabrokerd: %s\n", strerror(errno));
	return 2;
}

static const struct ctl_cmd cmds[] = {
    {"status", "[-s SOCKET] [-j]",
        "the running broker: counts, audit and directory state", cmd_status},
    {"agents", "[-s SOCKET] [-j]",
        "online machines: FQDN, address, since when, logged-on users",
        cmd_agents},
    {"tickets", "[-s SOCKET] [-j]", "open tickets (never their secrets)",
        cmd_tickets},
    {"expire", "[-s SOCKET] [-j] TICKET",
        "revoke an open ticket now (audited as revoked by \"operator\")",
        cmd_expire},
    {"check-config", "[-f FILE]",
        "check the configuration and the policy (same as rabrokerd -n)",
        cmd_check_config},
    {"verify-audit", "FILE [FILE...]",
        "check an audit trail's hash chain (rotated files oldest first)",
        cmd_verify_audit},
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: rabrokerctl [-s SOCKET] [-j] COMMAND [ARGS]\n"
	    "  -s SOCKET  control socket (default %s)\n"
	    "  -j         print the broker's JSON reply\n"
	    "commands:\n",
	    BK_CONTROL_DEFAULT_SOCKET);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %s %s\n      %s\n", cmds[i].name, cmds[i].usage,
		    cmds[i].help);
}

int
main(int argc, char **argv)
{
	int rc;

	log_init("rabrokerctl", LOG_LVL_WARN, 0);
	/* Global options before the command. */
	while (argc > 2 && argv[1][0] == '-' && argv[1][1] != '-' &&
	    strcmp(argv[1], "-h") != 0) {
		if (strcmp(argv[1], "-j") == 0) {
			raw_json = 1;
			argv++, argc--;
		} else if (strcmp(argv[1], "-s") == 0 && argc > 3) {
			sock_path = argv[2];
			argv += 2, argc -= 2;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(argv[1], cmds[i].name) != 0)
			continue;
		if ((rc = cmds[i].run(argc - 1, argv + 1)) < 0) {
			fprintf(stderr, "usage: rabrokerctl %s %s\n",
			    cmds[i].name, cmds[i].usage);
			return 2;
		}
		return rc;
	}
	fprintf(stderr, "rabrokerctl: unknown command \"%s\"\n", argv[1]);
	usage(stderr);
	return 2;
}
