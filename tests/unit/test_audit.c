/* test_audit.c - the audit trail: line format, chain, resume, fail closed,
 * rotation, no secrets, and the verifier catching every kind of tampering. */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bk_audit.h"
#include "bk_ticket.h"
#include "rp_error.h"
#include "tl_util.h"

static char *dir;
static const char *trail;

static void
setup(void)
{
	dir = tl_tmpdir("test_audit");
	ck_assert_ptr_nonnull(dir);
	trail = strdup(tl_path(dir, "audit.log"));
}

static void
teardown(void)
{
	tl_rmtree(dir);
	free(dir);
	free((char *)trail);
}

static struct bk_audit *
open_trail(const char *path)
{
	char err[512];
	struct bk_audit *a = bk_audit_open(path, 0, err, sizeof(err));

	ck_assert_msg(a != NULL, "%s", err);
	bk_audit_set_sync(a, 0); /* speed; sync is measured in bench */
	return a;
}

static void
write_n(struct bk_audit *a, int n)
{
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(bk_audit_write(a, BK_AE_AUTH_FAILED,
		                     json_pack("{s:s,s:s,s:s,s:s,s:i}", "user",
		                         "CORP\\mallory", "mech", "PLAIN",
		                         "host", "192.0.2.66", "reason",
		                         "bad password", "attempt", i)),
		    RP_OK);
}

/* Reads a whole file into a NUL-terminated buffer. */
static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t)n;
	return buf;
}

static void
spew(const char *path, const char *data)
{
	FILE *f = fopen(path, "wb");

	ck_assert_ptr_nonnull(f);
	fputs(data, f);
	fclose(f);
}

/* Pointer to the start of line n (1-based) in buf. */
static char *
line_at(char *buf, int n)
{
	while (--n > 0) {
		buf = strchr(buf, '\n');
		ck_assert_ptr_nonnull(buf);
		buf++;
	}
	return buf;
}

static size_t
line_len(const char *l)
{
	return (size_t)(strchr(l, '\n') - l);
}

/* Runs the file verifier and returns bad_line (0 = ok), why in *why. */
static unsigned long
verify(const char *path, char *why, size_t whylen, unsigned long *lines)
{
	unsigned long bad = 99999, n = 0;
	int rc = bk_audit_verify_file(path, &n, &bad, why, whylen);

	if (lines)
		*lines = n;
	if (rc == 0) {
		ck_assert_uint_eq(bad, 0);
		return 0;
	}
	ck_assert_int_eq(rc, -1);
	ck_assert_uint_ne(bad, 0);
	return bad;
}

START_TEST(test_format_and_chain)
{
	struct bk_audit *a = open_trail(trail);
	unsigned char h[32];
	char hex[65], *buf, *l2, why[256];
	unsigned long lines;
	json_t *j;
	void *it;

	ck_assert(bk_audit_ok(a));
	ck_assert_uint_eq(bk_audit_seq(a), 0);
	write_n(a, 3);
	ck_assert_uint_eq(bk_audit_seq(a), 3);
	bk_audit_close(a);

	buf = slurp(trail, NULL);
	ck_assert(strncmp(buf, "{\"seq\":1,\"time\":\"",
	              strlen("{\"seq\":1,\"time\":\"")) == 0);
	j = json_loadb(buf, line_len(buf), 0, NULL);
	ck_assert_ptr_nonnull(j);
	/* seq, time, event, fields in the caller's order, prev. */
	it = json_object_iter(j);
	ck_assert_str_eq(json_object_iter_key(it), "seq");
	it = json_object_iter_next(j, it);
	ck_assert_str_eq(json_object_iter_key(it), "time");
	it = json_object_iter_next(j, it);
	ck_assert_str_eq(json_object_iter_key(it), "event");
	it = json_object_iter_next(j, it);
	ck_assert_str_eq(json_object_iter_key(it), "user");
	it = json_object_iter_next(j, it);
	ck_assert_str_eq(json_object_iter_key(it), "mech");
	ck_assert_str_eq(
	    json_string_value(json_object_get(j, "event")), "auth_failed");
	ck_assert_str_eq(json_string_value(json_object_get(j, "prev")),
	    "0000000000000000000000000000000000000000000000000000000000000000");
	ck_assert_uint_eq(
	    strlen(json_string_value(json_object_get(j, "time"))), 24);
	json_decref(j);
	ck_assert(strstr(buf, ",\"prev\":\"0000") != NULL);

	/* Line 2's prev is SHA-256 of line 1's bytes without '\n'. */
	gnutls_hash_fast(GNUTLS_DIG_SHA256, buf, line_len(buf), h);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	l2 = line_at(buf, 2);
	j = json_loadb(l2, line_len(l2), 0, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(j, "prev")), hex);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "seq")), 2);
	json_decref(j);
	free(buf);

	ck_assert_uint_eq(verify(trail, why, sizeof(why), &lines), 0);
	ck_assert_uint_eq(lines, 3);
}
END_TEST

START_TEST(test_resume)
{
	struct bk_audit *a = open_trail(trail);
	char h1[65], h2[65], why[256];
	unsigned long lines;

	write_n(a, 4);
	bk_audit_last_hash(a, h1);
	bk_audit_close(a);
	a = open_trail(trail);
	ck_assert_uint_eq(bk_audit_seq(a), 4);
	bk_audit_last_hash(a, h2);
	ck_assert_str_eq(h1, h2);
	write_n(a, 2);
	bk_audit_close(a);
	ck_assert_uint_eq(verify(trail, why, sizeof(why), &lines), 0);
	ck_assert_uint_eq(lines, 6);
}
END_TEST

START_TEST(test_refuse_torn_or_corrupt)
{
	struct bk_audit *a = open_trail(trail);
	char err[512], *buf;
	size_t len;
	int fd;

	write_n(a, 2);
	bk_audit_close(a);
	buf = slurp(trail, &len);

	/* Torn: a crash in the middle of the last line. */
	ck_assert_int_eq(truncate(trail, (off_t)len - 10), 0);
	ck_assert_ptr_null(bk_audit_open(trail, 0, err, sizeof(err)));
	ck_assert_msg(strstr(err, "torn") != NULL, "%s", err);

	/* Corrupt: a whole but invalid last line. */
	spew(trail, buf);
	fd = open(trail, O_WRONLY | O_APPEND);
	ck_assert_int_eq(write(fd, "garbage\n", 8), 8);
	close(fd);
	ck_assert_ptr_null(bk_audit_open(trail, 0, err, sizeof(err)));
	ck_assert_msg(strstr(err, "corrupt") != NULL, "%s", err);
	ck_assert_msg(strstr(err, "not JSON") != NULL, "%s", err);

	/* Restored: opens again. */
	spew(trail, buf);
	a = open_trail(trail);
	ck_assert_uint_eq(bk_audit_seq(a), 2);
	bk_audit_close(a);
	free(buf);
}
END_TEST

/* Makes a trail of n lines, returns its contents. */
static char *
make_trail(int n)
{
	struct bk_audit *a = open_trail(trail);

	write_n(a, n);
	bk_audit_close(a);
	return slurp(trail, NULL);
}

START_TEST(test_detect_deletion)
{
	char *buf = make_trail(6), *l3 = line_at(buf, 3), why[256];

	memmove(l3, l3 + line_len(l3) + 1, strlen(l3 + line_len(l3) + 1) + 1);
	spew(trail, buf);
	ck_assert_uint_eq(verify(trail, why, sizeof(why), NULL), 3);
	ck_assert_str_eq(why, "line 3: seq 4 expected 3");
	free(buf);
}
END_TEST

START_TEST(test_detect_first_line_deleted)
{
	char *buf = make_trail(3), *l2 = line_at(buf, 2), why[256];

	spew(trail, l2);
	ck_assert_uint_eq(verify(trail, why, sizeof(why), NULL), 1);
	ck_assert_msg(
	    strstr(why, "start of the trail is missing") != NULL, "%s", why);
	free(buf);
}
END_TEST

START_TEST(test_detect_edit)
{
	char *buf = make_trail(6), *l4 = line_at(buf, 4), *p, why[256];

	/* A quiet edit that keeps the JSON valid: the user name. */
	p = strstr(l4, "mallory");
	ck_assert_ptr_nonnull(p);
	memcpy(p, "mallorz", 7);
	spew(trail, buf);
	ck_assert_uint_eq(verify(trail, why, sizeof(why), NULL), 5);
	ck_assert_str_eq(why, "line 5: prev hash does not match line 4");
	free(buf);
}
END_TEST

START_TEST(test_detect_reorder)
{
	char *buf = make_trail(5), *l2 = line_at(buf, 2), *l3, why[256];
	char *tmp;
	size_t n2, n3;

	n2 = line_len(l2) + 1;
	l3 = l2 + n2;
	n3 = line_len(l3) + 1;
	tmp = malloc(n2 + n3);
	memcpy(tmp, l3, n3);
	memcpy(tmp + n3, l2, n2);
	memcpy(l2, tmp, n2 + n3);
	free(tmp);
	spew(trail, buf);
	ck_assert_uint_eq(verify(trail, why, sizeof(why), NULL), 2);
	ck_assert_str_eq(why, "line 2: seq 3 expected 2");
	free(buf);
}
END_TEST

START_TEST(test_detect_truncation)
{
	size_t len;
	char *buf = make_trail(3), why[256];

	free(buf);
	buf = slurp(trail, &len);
	ck_assert_int_eq(truncate(trail, (off_t)len - 30), 0);
	ck_assert_uint_eq(verify(trail, why, sizeof(why), NULL), 3);
	ck_assert_str_eq(why, "line 3: truncated (no newline at end of file)");
	free(buf);
}
END_TEST

START_TEST(test_detect_bad_lines)
{
	static const struct {
		const char *line;
		const char *why;
	} cases[] = {
	    {"not json", "line 1: not JSON"},
	    {"[1,2]", "line 1: not a JSON object"},
	    {"", "line 1: empty line"},
	    {"{\"time\":\"2026-11-22T03:04:05.678Z\",\"seq\":1,\"event\":\"x\","
	     "\"prev\":\""
	     "0000000000000000000000000000000000000000000000000000"
	     "000000000000\"}",
	        "line 1: keys not in the order"},
	    {"{\"seq\":1,\"time\":\"2026-11-22 03:04:05Z\",\"event\":\"x\","
	     "\"prev\":\""
	     "0000000000000000000000000000000000000000000000000000"
	     "000000000000\"}",
	        "line 1: time is not RFC 3339"},
	    {"{\"seq\":1,\"time\":\"2026-13-22T03:04:05.678Z\",\"event\":\"x\","
	     "\"prev\":\""
	     "0000000000000000000000000000000000000000000000000000"
	     "000000000000\"}",
	        "line 1: time is not RFC 3339"},
	    {"{\"seq\":0,\"time\":\"2026-11-22T03:04:05.678Z\",\"event\":\"x\","
	     "\"prev\":\""
	     "0000000000000000000000000000000000000000000000000000"
	     "000000000000\"}",
	        "line 1: seq is not a positive integer"},
	    {"{\"seq\":1,\"time\":\"2026-11-22T03:04:05.678Z\",\"event\":\"X!"
	     "\","
	     "\"prev\":\""
	     "0000000000000000000000000000000000000000000000000000"
	     "000000000000\"}",
	        "line 1: event is not"},
	    {"{\"seq\":1,\"time\":\"2026-11-22T03:04:05.678Z\",\"event\":\"x\","
	     "\"prev\":\"00\"}",
	        "line 1: prev is not 64"},
	    {"{\"seq\":1,\"seq\":1,\"time\":\"2026-11-22T03:04:05.678Z\","
	     "\"event\":\"x\",\"prev\":\"00\"}",
	        "line 1: not JSON"},
	};
	struct bk_audit_verifier v;
	char line[512], why[256];
	unsigned long bad;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(line, sizeof(line), "%s\n", cases[i].line);
		bk_audit_verifier_init(&v);
		ck_assert_int_eq(bk_audit_verify_buf(&v, line, strlen(line),
		                     &bad, why, sizeof(why)),
		    -1);
		ck_assert_uint_eq(bad, 1);
		ck_assert_msg(
		    strncmp(why, cases[i].why, strlen(cases[i].why)) == 0,
		    "case %zu: %s", i, why);
	}
	/* A minimal valid first line passes. */
	snprintf(line, sizeof(line),
	    "{\"seq\":1,\"time\":\"2026-11-22T03:04:05.678Z\",\"event\":\"x\","
	    "\"prev\":\"%064d\"}\n",
	    0);
	bk_audit_verifier_init(&v);
	ck_assert_int_eq(
	    bk_audit_verify_buf(&v, line, strlen(line), &bad, why, sizeof(why)),
	    0);
	ck_assert_uint_eq(v.lines, 1);
}
END_TEST

START_TEST(test_detect_long_line)
{
	struct bk_audit_verifier v;
	size_t n = BK_AUDIT_LINE_MAX + 100;
	char *buf = malloc(n), why[256];
	unsigned long bad;

	memset(buf, 'x', n);
	buf[n - 1] = '\n';
	bk_audit_verifier_init(&v);
	ck_assert_int_eq(
	    bk_audit_verify_buf(&v, buf, n, &bad, why, sizeof(why)), -1);
	ck_assert_msg(strstr(why, "longer than") != NULL, "%s", why);
	spew(trail, "");
	FILE *f = fopen(trail, "wb");
	fwrite(buf, 1, n, f);
	fclose(f);
	ck_assert_uint_eq(verify(trail, why, sizeof(why), NULL), 1);
	ck_assert_msg(strstr(why, "longer than") != NULL, "%s", why);
	free(buf);
}
END_TEST

START_TEST(test_empty_and_missing)
{
	char why[256];
	unsigned long lines = 7, bad;

	spew(trail, "");
	ck_assert_uint_eq(verify(trail, why, sizeof(why), &lines), 0);
	ck_assert_uint_eq(lines, 0);
	ck_assert_int_eq(bk_audit_verify_file(tl_path(dir, "nope"), &lines,
	                     &bad, why, sizeof(why)),
	    -2);
	ck_assert_msg(strstr(why, "No such file") != NULL, "%s", why);
}
END_TEST

START_TEST(test_no_secret_in_trail)
{
	static const char *const addrs[] = {"192.0.2.7:40001"};
	struct bk_ticket_params p = {.helper = "CORP\\alice",
	    .helper_host = "192.0.2.7",
	    .addrs = addrs,
	    .naddrs = 1,
	    .machine = "ws-042.corp.example",
	    .mode = BK_MODE_VIEW,
	    .rule = "allow CORP\\helpdesk view",
	    .duration_s = 600,
	    .max_duration_s = 3600};
	struct bk_audit *a = open_trail(trail);
	struct bk_ticket *t;
	char hex[65], err[256], *buf;
	json_t *f;

	ck_assert_int_eq(
	    bk_ticket_create(&p, 100, &t, err, sizeof(err)), RP_OK);
	bk_ticket_secret_hex(t, hex);
	/* The usual path: ticket fields and the ticket's public JSON. */
	f = bk_audit_ticket_fields(t);
	json_object_set_new(f, "duration_s", json_integer(600));
	json_object_set_new(f, "reverse_connect", json_true());
	json_object_set_new(f, "addresses", json_pack("[s]", addrs[0]));
	json_object_set_new(f, "expires_at", json_integer(t->expires_at));
	json_object_set_new(f, "detail", bk_ticket_to_json(t, 0));
	ck_assert_int_eq(bk_audit_write(a, BK_AE_TICKET_CREATED, f), RP_OK);
	/* A careless caller: secret-named members are redacted, even
	 * nested. */
	ck_assert_int_eq(bk_audit_write(a, BK_AE_TICKET_DELETED,
	                     json_pack("{s:s,s:o}", "ticket", t->id, "detail",
	                         bk_ticket_to_json(t, 1))),
	    RP_OK);
	ck_assert_int_eq(
	    bk_audit_write(a, BK_AE_TICKET_EXPIRED,
	        json_pack("{s:s,s:s}", "ticket", t->id, "psk", hex)),
	    RP_OK);
	bk_audit_close(a);
	buf = slurp(trail, NULL);
	ck_assert_ptr_nonnull(strstr(buf, t->id));
	ck_assert_ptr_nonnull(strstr(buf, "(redacted)"));
	ck_assert_msg(strstr(buf, hex) == NULL, "secret in the trail");
	/* Upper case too, in case someone encodes it differently. */
	for (char *c = hex; *c; c++)
		if (*c >= 'a' && *c <= 'f')
			*c = (char)(*c - 'a' + 'A');
	ck_assert(strstr(buf, hex) == NULL);
	free(buf);
	ck_assert_uint_eq(verify(trail, err, sizeof(err), NULL), 0);
	bk_ticket_free(t);
}
END_TEST

START_TEST(test_fail_closed_dev_full)
{
	struct bk_audit *a;
	char err[256];

	a = bk_audit_open("/dev/full", 0, err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert(bk_audit_ok(a));
	ck_assert_int_eq(bk_audit_write(a, BK_AE_BROKER_STARTED,
	                     json_pack("{s:s}", "version", "0.1")),
	    RP_ERR_AUDIT_UNAVAILABLE);
	ck_assert(!bk_audit_ok(a));
	ck_assert_uint_eq(bk_audit_seq(a), 0);
	ck_assert_int_eq(bk_audit_sync(a), RP_ERR_AUDIT_UNAVAILABLE);
	/* Stays closed: no retry behind the operator's back. */
	ck_assert_int_eq(bk_audit_write(a, BK_AE_BROKER_STARTED, NULL),
	    RP_ERR_AUDIT_UNAVAILABLE);
	bk_audit_close(a);
	ck_assert_int_eq(bk_audit_write(NULL, BK_AE_BROKER_STARTED, NULL),
	    RP_ERR_AUDIT_UNAVAILABLE);
	ck_assert(!bk_audit_ok(NULL));
}
END_TEST

/* Threads of this process (/proc/self/task). */
static int
threads_now(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* The sync thread is started after the fork of daemonize(): a thread does
 * not survive a fork, and a trail whose thread was left in the parent
 * would never sync, and hang at close (joining a thread that does not
 * exist). Lines written before the start are synced as they are written. */
START_TEST(test_sync_thread_after_fork)
{
	struct bk_audit *a;
	char err[256];
	pid_t pid;
	int status = -1;
	size_t len;
	char *buf;
	unsigned long lines = 0;

	a = bk_audit_open(trail, 0, err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	write_n(a, 2); /* before any thread: synced inline */
	pid = fork();
	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		int rc = 0;

		if (bk_audit_start_sync(a, err, sizeof(err)) != 0 ||
		    bk_audit_start_sync(a, err, sizeof(err)) != 0)
			_exit(2);
		for (int i = 0; i < 50; i++)
			if (bk_audit_write(a, BK_AE_BROKER_STARTED,
			        json_pack("{s:s}", "version", "0.1")) != RP_OK)
				rc = 3;
		if (!bk_audit_ok(a))
			rc = 4;
		if (threads_now() != 2) /* this process's own sync thread */
			rc = 5;
		bk_audit_close(a); /* joins its own thread */
		_exit(rc);
	}
	for (int i = 0; i < 1000; i++) { /* at most 10 s */
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		usleep(10000);
	}
	if (!WIFEXITED(status)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		ck_abort_msg("the child did not finish within 10 s");
	}
	ck_assert_msg(WEXITSTATUS(status) == 0,
	    "child exit %d (5: no sync thread)", WEXITSTATUS(status));
	bk_audit_close(a); /* the parent never started one */
	buf = slurp(trail, &len);
	for (size_t i = 0; i < len; i++)
		lines += buf[i] == '\n';
	free(buf);
	ck_assert_uint_eq(lines, 52);
}
END_TEST

/* The trail path is a symlink: to /dev/full (disk full), then back to a
 * real file; a reopen restores the trail and the chain goes on. */
START_TEST(test_fail_then_reopen)
{
	const char *link = tl_path(dir, "audit.link");
	struct bk_audit *a;
	char err[256];
	unsigned long lines;

	ck_assert_int_eq(symlink(trail, link), 0);
	a = open_trail(link);
	write_n(a, 2);
	ck_assert_int_eq(unlink(link), 0);
	ck_assert_int_eq(symlink("/dev/full", link), 0);
	ck_assert_int_eq(bk_audit_reopen(a, err, sizeof(err)), -1);
	ck_assert(!bk_audit_ok(a));
	ck_assert_int_eq(bk_audit_write(a, BK_AE_BROKER_STOPPED,
	                     json_pack("{s:s}", "reason", "test")),
	    RP_ERR_AUDIT_UNAVAILABLE);
	ck_assert_int_eq(unlink(link), 0);
	ck_assert_int_eq(symlink(trail, link), 0);
	ck_assert_int_eq(bk_audit_reopen(a, err, sizeof(err)), 0);
	ck_assert(bk_audit_ok(a));
	ck_assert_uint_eq(bk_audit_seq(a), 2);
	write_n(a, 1);
	bk_audit_set_sync(a, 1);
	ck_assert_int_eq(
	    bk_audit_write(a, BK_AE_AGENT_ONLINE,
	        json_pack("{s:s,s:s}", "machine", "ws-1", "host", "10.0.0.1")),
	    RP_OK);
	ck_assert_int_eq(bk_audit_sync(a), RP_OK);
	bk_audit_close(a);
	ck_assert_uint_eq(verify(trail, err, sizeof(err), &lines), 0);
	ck_assert_uint_eq(lines, 4);
}
END_TEST

START_TEST(test_rotation)
{
	const char *old = tl_path(dir, "audit.log.1");
	struct bk_audit_verifier v;
	struct bk_audit *a = open_trail(trail);
	char err[256], *buf;
	unsigned long bad, lines;

	write_n(a, 3);
	ck_assert_int_eq(rename(trail, old), 0); /* logrotate */
	ck_assert_int_eq(bk_audit_reopen(a, err, sizeof(err)), 0);
	ck_assert_uint_eq(bk_audit_seq(a), 4); /* audit_continued */
	write_n(a, 2);
	bk_audit_close(a);
	buf = slurp(trail, NULL);
	ck_assert(strncmp(buf, "{\"seq\":4,", 9) == 0);
	ck_assert_ptr_nonnull(strstr(buf, "\"event\":\"audit_continued\""));
	free(buf);

	/* Alone, the new file is a valid continuation. */
	ck_assert_uint_eq(verify(trail, err, sizeof(err), &lines), 0);
	ck_assert_uint_eq(lines, 3);
	/* Together, in order, the chain runs through both. */
	bk_audit_verifier_init(&v);
	ck_assert_int_eq(
	    bk_audit_verify_file_v(&v, old, &bad, err, sizeof(err)), 0);
	ck_assert_int_eq(
	    bk_audit_verify_file_v(&v, trail, &bad, err, sizeof(err)), 0);
	ck_assert_uint_eq(v.lines, 6);
	/* Wrong order fails. */
	bk_audit_verifier_init(&v);
	ck_assert_int_eq(
	    bk_audit_verify_file_v(&v, trail, &bad, err, sizeof(err)), 0);
	ck_assert_int_eq(
	    bk_audit_verify_file_v(&v, old, &bad, err, sizeof(err)), -1);
	ck_assert_uint_eq(bad, 1);
	/* Reopen of a non-empty file: no continuation line. */
	a = open_trail(trail);
	ck_assert_int_eq(bk_audit_reopen(a, err, sizeof(err)), 0);
	ck_assert_uint_eq(bk_audit_seq(a), 6);
	bk_audit_close(a);
}
END_TEST

START_TEST(test_events_table)
{
	static const char *const seed001[] = {"session_connected",
	    "session_disconnected", "session_accepted", "ticket_created",
	    "ticket_expired", "ticket_deleted", "file_transfer",
	    "ticket_parse_failed", "control_accepted", "control_ended",
	    "auth_succeeded", "auth_failed", "policy_decision", "agent_online",
	    "agent_offline", "agent_replaced", "offer_created",
	    "offer_declined", "offer_timed_out", "offer_cancelled",
	    "ticket_revoked", "ticket_refused", "broker_started",
	    "broker_stopped", "policy_reloaded"};
	char why[256];

	for (size_t i = 0; i < sizeof(seed001) / sizeof(seed001[0]); i++)
		ck_assert_msg(
		    bk_audit_event_parse(seed001[i]) >= 0, "%s", seed001[i]);
	for (int i = 0; i < BK_AE_COUNT; i++) {
		ck_assert_int_eq(
		    bk_audit_event_parse(bk_audit_event_name(i)), i);
		for (int j = i + 1; j < BK_AE_COUNT; j++)
			ck_assert_str_ne(
			    bk_audit_event_name(i), bk_audit_event_name(j));
	}
	ck_assert_int_eq(bk_audit_event_parse("nope"), -1);
	json_t *f = json_pack("{s:s,s:s}", "ticket", "x", "host", "y");

	ck_assert_int_eq(
	    bk_audit_event_check(BK_AE_TICKET_REFUSED, f, why, sizeof(why)),
	    -1);
	ck_assert_str_eq(why, "ticket_refused: missing field \"reason\"");
	json_decref(f);
	f = json_pack(
	    "{s:s,s:s,s:s}", "ticket", "x", "host", "y", "reason", "expired");
	ck_assert_int_eq(
	    bk_audit_event_check(BK_AE_TICKET_REFUSED, f, why, sizeof(why)), 0);
	json_decref(f);
	ck_assert_int_eq(
	    bk_audit_event_check(BK_AE_TICKET_EXPIRED, NULL, why, sizeof(why)),
	    -1);
}
END_TEST

START_TEST(test_reserved_and_unicode)
{
	struct bk_audit *a = open_trail(trail);
	char why[256], *buf;

	ck_assert_int_eq(bk_audit_write(a, BK_AE_AGENT_ONLINE,
	                     json_pack("{s:s,s:s,s:i,s:s}", "machine",
	                         "ws-\xc3\xa9t\xc3\xa9.corp.example", "host",
	                         "10.0.0.5", "seq", 999, "prev", "forged")),
	    RP_OK);
	bk_audit_close(a);
	buf = slurp(trail, NULL);
	ck_assert_ptr_nonnull(strstr(buf, "\"field_seq\":999"));
	ck_assert_ptr_nonnull(strstr(buf, "\"field_prev\":\"forged\""));
	ck_assert_ptr_nonnull(strstr(buf, "ws-\\u00E9t\\u00E9"));
	for (char *c = buf; *c; c++)
		ck_assert((unsigned char)*c < 0x80);
	free(buf);
	ck_assert_uint_eq(verify(trail, why, sizeof(why), NULL), 0);
}
END_TEST

START_TEST(test_file_mode)
{
	struct bk_audit *a;
	struct stat sb;

	umask(022);
	a = open_trail(trail);
	bk_audit_close(a);
	ck_assert_int_eq(stat(trail, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 0777, 0600);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("audit");
	TCase *tc = tcase_create("audit");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_format_and_chain);
	tcase_add_test(tc, test_resume);
	tcase_add_test(tc, test_refuse_torn_or_corrupt);
	tcase_add_test(tc, test_detect_deletion);
	tcase_add_test(tc, test_detect_first_line_deleted);
	tcase_add_test(tc, test_detect_edit);
	tcase_add_test(tc, test_detect_reorder);
	tcase_add_test(tc, test_detect_truncation);
	tcase_add_test(tc, test_detect_bad_lines);
	tcase_add_test(tc, test_detect_long_line);
	tcase_add_test(tc, test_empty_and_missing);
	tcase_add_test(tc, test_no_secret_in_trail);
	tcase_add_test(tc, test_fail_closed_dev_full);
	tcase_add_test(tc, test_fail_then_reopen);
	tcase_add_test(tc, test_sync_thread_after_fork);
	tcase_add_test(tc, test_rotation);
	tcase_add_test(tc, test_events_table);
	tcase_add_test(tc, test_reserved_and_unicode);
	tcase_add_test(tc, test_file_mode);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
