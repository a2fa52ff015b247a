/*
 * rabrokerctl_main.c - the broker's administration tool.
 *
 * One table of subcommands; main() only finds the entry and runs it. For
 * now: verify-audit. The control-socket client (status, agents, tickets,
 * ticket expire) will be added as further entries.
 *
 * Exit status: 0 success, 1 the check failed (e.g. a broken audit trail),
 * 2 usage or I/O error.
 */
#include <stdio.h>
#include <string.h>

#include "bk_audit.h"
#include "rp_log.h"

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

static const struct ctl_cmd cmds[] = {
    {"verify-audit", "FILE [FILE...]",
        "check an audit trail's hash chain (rotated files oldest first)",
        cmd_verify_audit},
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: rabrokerctl COMMAND [ARGS]\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %s %s\n      %s\n", cmds[i].name, cmds[i].usage,
		    cmds[i].help);
}

int
main(int argc, char **argv)
{
	int rc;

	log_init("rabrokerctl", LOG_LVL_WARN, 0);
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
