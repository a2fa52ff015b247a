/*
 * test_bk_config.c - rabrokerd's configuration parser: defaults, every
 * kind of value, and that every error names FILE:LINE.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bk_config.h"
#include "rp_log.h"
#include "tl_util.h"

static char *dir;
static char cert[600], key[600], ca[600], pol[600], pw[600], base[4096];

static void
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void
setup(void)
{
	dir = tl_tmpdir("bkcfg");
	ck_assert_ptr_nonnull(dir);
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(pol, sizeof(pol), "%s/policy.conf", dir);
	snprintf(pw, sizeof(pw), "%s/bindpw", dir);
	write_file(cert, "x\n", 0644);
	write_file(key, "x\n", 0600);
	write_file(ca, "x\n", 0644);
	write_file(pol, "\n", 0644);
	write_file(pw, "secret\n", 0600);
	/* line 1 .. 6 */
	snprintf(base, sizeof(base),
	    "[broker]\ncert = %s\nkey = %s\nca = %s\n[policy]\nfile = %s\n",
	    cert, key, ca, pol);
}

static void
teardown(void)
{
	tl_rmtree(dir);
	free(dir);
}

static struct bk_config *
load(const char *extra, char *err, size_t errlen)
{
	char text[8192];
	snprintf(text, sizeof(text), "%s%s", base, extra);
	return bk_config_load_string("t.conf", text, err, errlen);
}

static void
expect_error(const char *extra, const char *want)
{
	char err[4096];
	struct bk_config *c = load(extra, err, sizeof(err));

	ck_assert_msg(c == NULL, "accepted: %s", extra);
	ck_assert_msg(
	    strstr(err, want) != NULL, "want \"%s\" in \"%s\"", want, err);
}

START_TEST(t_defaults)
{
	char err[1024];
	struct bk_config *c = load("", err, sizeof(err));

	ck_assert_msg(c != NULL, "%s", err);
	ck_assert_str_eq(c->listen, "0.0.0.0:4433");
	ck_assert_uint_eq(c->listen_port, 4433);
	ck_assert_uint_eq(c->keepalive_s, 60);
	ck_assert_uint_eq(c->drain_timeout_s, 10);
	/* CPUs online - 1, at least 1, at most 8 */
	ck_assert_uint_ge(c->handshake_threads, 1);
	ck_assert_uint_le(c->handshake_threads, 8);
	ck_assert_uint_eq(c->max_duration_s, 1800);
	ck_assert_int_eq(c->have_directory, 0);
	ck_assert(bk_config_has_mech(c, "plain"));
	ck_assert(bk_config_has_mech(c, "EXTERNAL"));
	ck_assert(!bk_config_has_mech(c, "GSSAPI"));
	ck_assert_str_eq(c->store, "sqlite");
	ck_assert_uint_eq(c->max_failures, 5);
	ck_assert_uint_eq(c->max_pending_per_address, 256);
	ck_assert_str_eq(c->metrics_listen, "127.0.0.1:9464");
	bk_config_free(c);
	c = load("[metrics]\nlisten =\n[control]\nsocket = /tmp/c.sock\n", err,
	    sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	ck_assert_str_eq(c->metrics_listen, "");
	ck_assert_str_eq(c->control_socket, "/tmp/c.sock");
	bk_config_free(c);
	c = load("[metrics]\nlisten = [2001:db8::1]:9464\nallow_remote = yes\n",
	    err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	bk_config_free(c);
}
END_TEST

START_TEST(t_values)
{
	char err[1024], extra[2048];
	struct bk_config *c;

	snprintf(extra, sizeof(extra),
	    "[broker]\n" /* a second [broker] header continues it */
	    "listen = [::1]:5443\n"
	    "keepalive = 2m\n"
	    "drain_timeout = 0\n"
	    "handshake_threads = 0\n"
	    "max_pending_per_address = 0\n"
	    "[relay]\nbyte_budget = 512M\nidle_timeout = 1h ; inline comment\n"
	    "[sasl]\nmechanisms = plain\n"
	    "[log]\nlevel = debug\nsyslog = no\n"
	    "[directory]\nuri = ldaps://127.0.0.1:636\nbind_dn = cn=x\n"
	    "ca = %s\n"
	    "bind_pw_file = %s\nop_timeout = 500ms\ngroup_strategy = memberof\n"
	    "require_computer_object = yes\n"
	    "[domain corp]\nrealm = corp.example\nbase_dn = dc=corp\n",
	    ca, pw);
	c = load(extra, err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	ck_assert_str_eq(c->listen_host, "::1");
	ck_assert_uint_eq(c->listen_port, 5443);
	ck_assert_uint_eq(c->keepalive_s, 120);
	ck_assert_uint_eq(c->drain_timeout_s, 0);
	ck_assert_uint_eq(c->handshake_threads, 0);
	ck_assert_uint_eq(c->max_pending_per_address, 0);
	ck_assert_uint_eq(c->relay_byte_budget, 512ull << 20);
	ck_assert_uint_eq(c->relay_idle_timeout_s, 3600);
	ck_assert(bk_config_has_mech(c, "PLAIN"));
	ck_assert(!bk_config_has_mech(c, "EXTERNAL"));
	ck_assert_int_eq(c->log_level, LOG_LVL_DEBUG);
	ck_assert_int_eq(c->log_syslog, 0);
	ck_assert_uint_eq(c->dir.op_timeout_ms, 500);
	ck_assert_int_eq(c->dir.group_strategy, AZ_GROUPS_MEMBEROF);
	ck_assert_uint_eq(c->dir.ndomains, 1);
	ck_assert_str_eq(c->dir.domains[0].netbios, "CORP");
	/* one domain: it is the default */
	ck_assert_str_eq(c->dir.default_domain, "CORP");
	ck_assert_int_eq(c->require_computer_object, 1);
	bk_config_free(c);
}
END_TEST

START_TEST(t_errors_name_lines)
{
	/* base is 6 lines: extra starts at line 7 */
	expect_error("[broker]\nlisten = 127.0.0.1\n",
	    "t.conf:8: listen: bad value \"127.0.0.1\": expected host:port");
	expect_error("[broker]\nlisten = ::1:80\n", "t.conf:8: listen");
	expect_error("[broker]\nlisten = 127.0.0.1:70000\n", "bad port");
	expect_error("[brokr]\nx = 1\n", "t.conf:8: unknown section [brokr]");
	expect_error("[broker]\nkeepalive = 0\n",
	    "t.conf:8: keepalive: bad value \"0\": out of range 1s..3600s");
	expect_error("[broker]\nkeepalive = soon\n", "t.conf:8: keepalive");
	expect_error("[broker]\nhandshake_threads = 65\n",
	    "t.conf:8: handshake_threads: bad value \"65\"");
	expect_error("[broker]\nmax_pending_per_address = -1\n",
	    "t.conf:8: max_pending_per_address: bad value \"-1\"");
	expect_error(
	    "[broker]\ncert = other\n", "t.conf:8: duplicate key \"cert\"");
	expect_error("[log]\nlevel = loud\n", "t.conf:8: level");
	expect_error("[audit]\nsyslog = maybe\n", "expected yes or no");
	expect_error("[sasl]\nmechanisms = PLAIN DIGEST-MD5\n",
	    "unknown mechanism \"DIGEST-MD5\"");
	expect_error("[tickets]\nstore = redis\n", "unknown store");
	expect_error("just words\n", "t.conf:7: expected `key = value`");
	expect_error("[broker\n", "t.conf:7: section header without ']'");
	expect_error("[relay]\nbyte_budget = lots\n", "byte_budget");
	expect_error("[directory]\nuser_filter = (uid=x)\n", "exactly one %s");
	expect_error("[domain CORP]\nrealm = x\n",
	    "[domain] sections need a [directory] section");
	expect_error("[directory]\nrequire_computer_object = yes\n",
	    "[directory] uri is required");
	expect_error("[metrics]\nlisten = 192.0.2.1:9464\n",
	    "t.conf:8: [metrics] listen: 192.0.2.1 is not a loopback");
	expect_error("[metrics]\nlisten = localhost:9464\n", "numeric");
	expect_error("[control]\nsocket = run/x.sock\n", "t.conf:8: [control]");
	expect_error("[directory]\nuri = ldap://127.0.0.1:389\n",
	    "t.conf:8: uri: ldap:// needs starttls = yes");
	expect_error("[directory]\nuri = ldaps://h:636\nstarttls = yes\n",
	    "t.conf:9: starttls = yes contradicts ldaps://");
	/* two errors: both reported */
	expect_error("[broker]\nfoo = 1\nbar = 2\n", "t.conf:9: unknown key");
}
END_TEST

START_TEST(t_required)
{
	char err[1024];
	struct bk_config *c = bk_config_load_string(
	    "t.conf", "[broker]\nlisten = 127.0.0.1:1\n", err, sizeof(err));

	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(err, "t.conf: [broker] cert is required"));
	ck_assert_ptr_nonnull(strstr(err, "[policy] file is required"));
}
END_TEST

START_TEST(t_long_line)
{
	char extra[2048], v[700];

	memset(v, 'a', 600);
	v[600] = '\0';
	/* A long value that fits the 1024-byte limit is fine... */
	snprintf(extra, sizeof(extra),
	    "[directory]\nuser_filter = (uid=%%s)%s\n", v);
	{
		char err[2048];
		struct bk_config *c = load(extra, err, sizeof(err));
		/* (fails later for the missing uri, not for the length) */
		ck_assert_ptr_null(c);
		ck_assert_ptr_null(strstr(err, "too long"));
	}
	/* ...a longer one is refused, with its line. */
	memset(v, 'a', 1100 > sizeof(v) - 1 ? sizeof(v) - 1 : 1100);
	v[sizeof(v) - 1] = '\0';
	snprintf(extra, sizeof(extra), "[broker]\nca = %s%s\n", v, v);
	expect_error(extra, "t.conf:8: line too long");
}
END_TEST

START_TEST(t_secret_modes)
{
	char err[1024];

	chmod(key, 0640);
	expect_error("", "t.conf:3: private key");
	expect_error("", "is readable by group or others (mode 0640)");
	chmod(key, 0600);
	ck_assert_int_eq(bk_config_check_secret("x", key, err, sizeof(err)), 0);
	chmod(pw, 0604);
	ck_assert_int_eq(
	    bk_config_check_secret("bind password file", pw, err, sizeof(err)),
	    -1);
	ck_assert_ptr_nonnull(strstr(err, "mode 0604"));
	ck_assert_int_eq(
	    bk_config_check_secret("x", "/nonexistent", err, sizeof(err)), -1);
}
END_TEST

START_TEST(t_file)
{
	char path[700], err[1024];
	struct bk_config *c;

	snprintf(path, sizeof(path), "%s/r.conf", dir);
	write_file(path, base, 0644);
	c = bk_config_load(path, err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	ck_assert_str_eq(c->path, path);
	bk_config_free(c);
	ck_assert_ptr_null(
	    bk_config_load("/nonexistent.conf", err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent.conf: No such file"));
}
END_TEST

#ifndef RABROKER_SOURCE_DIR
#define RABROKER_SOURCE_DIR "."
#endif

/* The example in deploy/ uses only known keys with valid values, also
 * with every commented default switched on. */
START_TEST(t_example)
{
	char path[700], err[8192], *text, *out, *o;
	const char *srcdir = getenv("RABROKER_SOURCE_DIR");
	FILE *f;
	long len;
	struct bk_config *c;

	snprintf(path, sizeof(path), "%s/deploy/rabrokerd.conf",
	    srcdir ? srcdir : RABROKER_SOURCE_DIR);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	text = calloc(1, (size_t)len + 1);
	ck_assert_int_eq(fread(text, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			/* ";key = value" lines become settings. */
			out = calloc(1, (size_t)len + 1);
			o = out;
			for (char *l = text; *l;) {
				char *e = strchr(l, '\n');
				size_t n = e ? (size_t)(e - l + 1) : strlen(l);
				if (l[0] == ';' && l[1] >= 'a' && l[1] <= 'z' &&
				    memchr(l, '=', n) != NULL &&
				    strstr(l, " = ") != NULL) {
					memcpy(o, l + 1, n - 1);
					o += n - 1;
				} else {
					memcpy(o, l, n);
					o += n;
				}
				l += n;
			}
			c = bk_config_load_string(
			    "example", out, err, sizeof(err));
			free(out);
		} else {
			c = bk_config_load_string(
			    "example", text, err, sizeof(err));
		}
		/* The files it names do not exist here: only those errors. */
		ck_assert_ptr_null(c);
		ck_assert_msg(strstr(err, "unknown") == NULL &&
		        strstr(err, "bad value") == NULL &&
		        strstr(err, "duplicate") == NULL &&
		        strstr(err, "expected") == NULL &&
		        strstr(err, "/etc/rabroker/broker.pem") != NULL,
		    "pass %d: %s", pass, err);
	}
	free(text);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("bk_config");
	TCase *tc = tcase_create("config");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, t_defaults);
	tcase_add_test(tc, t_values);
	tcase_add_test(tc, t_errors_name_lines);
	tcase_add_test(tc, t_required);
	tcase_add_test(tc, t_long_line);
	tcase_add_test(tc, t_secret_modes);
	tcase_add_test(tc, t_file);
	tcase_add_test(tc, t_example);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
