/*
 * test_policy.c - the offer policy: every parse error with its exact
 * file:line:col, the evaluation order (deny wins, control beats view, tie
 * goes to the first rule, default deny), name and DN matching, limits, and
 * an exhaustive comparison with a reference evaluator over all subsets of a
 * pool of rules.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "az_policy.h"

#define NAME "p.conf"

static struct az_policy *
load(const char *text)
{
	char err[512];
	struct az_policy *p;

	p = az_policy_load_buffer(NAME, text, strlen(text), err, sizeof(err));
	ck_assert_msg(p != NULL, "policy failed to load: %s\n%s", err, text);
	return p;
}

/* Loading must fail with an error starting with `prefix` and containing
 * `what`. */
static void
expect_err_n(const char *text, size_t len, const char *prefix, const char *what)
{
	char err[512];
	struct az_policy *p;

	p = az_policy_load_buffer(NAME, text, len, err, sizeof(err));
	ck_assert_msg(p == NULL, "policy loaded but should not:\n%s", text);
	ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0,
	    "error \"%s\" does not start with \"%s\"", err, prefix);
	/* The prefix is exactly NAME:LINE: or NAME:LINE:COL: */
	ck_assert_msg(strstr(err, what) != NULL,
	    "error \"%s\" does not mention \"%s\"", err, what);
}

static void
expect_err(const char *text, const char *prefix, const char *what)
{
	expect_err_n(text, strlen(text), prefix, what);
}

/* A helper and a machine built from NULL-terminated name lists. */
#define GROUPS(...) ((const char *const[]){__VA_ARGS__, NULL})

static size_t
count(const char *const *v)
{
	size_t n = 0;

	while (v != NULL && v[n] != NULL)
		n++;
	return n;
}

static struct az_subject
subj(const char *account, const char *const *groups)
{
	struct az_subject s = {account, groups, count(groups)};
	return s;
}

static struct az_target
targ(const char *dn, const char *const *groups)
{
	struct az_target t = {"m.corp.example", dn, groups, count(groups)};
	return t;
}

static enum az_right
right_of(const struct az_policy *p, struct az_subject s, struct az_target t)
{
	struct az_decision d;

	az_policy_eval(p, &s, &t, &d);
	return d.right;
}

#define WS_DN "cn=ws-042,ou=Workstations,dc=corp,dc=example"

/* ---- parse errors ------------------------------------------------------ */

struct errcase {
	const char *text;
	const char *prefix;
	const char *what;
};

static const struct errcase errcases[] = {
    {"\n\nalow view group \"CORP\\x\" on all\n",
        NAME ":3:1: ", "unknown keyword \"alow\""},
    {"scope ws all\nallow view group \"CORP\\x\" on workstatons\n",
        NAME ":2:30: ", "unknown scope \"workstatons\""},
    {"allow view group \"CORP\\x\" on ws\nscope ws all\n",
        NAME ":1:30: ", "unknown scope \"ws\""},
    {"scope a all\nscope A all\n",
        NAME ":2:7: ", "duplicate scope \"A\" (first defined at line 1)"},
    {"scope all\nscope all max-ticket=1h\n",
        NAME ":2:7: ", "duplicate scope \"all\" (first defined at line 1)"},
    {"scope all ou=\"dc=x\"\n", NAME ":1:11: ", "always selects every"},
    {"scope all machine-group=\"C\\k\"\n",
        NAME ":1:11: ", "always selects every"},
    {"allow view group \"CORP\\x on all\n",
        NAME ":1:18: ", "unterminated string"},
    {"allow view group \"CORP\\x\\\" on all\n",
        NAME ":1:18: ", "unterminated string"},
    {"a\x01 view", NAME ":1:2: ", "control character 0x01"},
    {"# a\rb\n", NAME ":1:4: ", "control character 0x0d"},
    {"# \x7f\n", NAME ":1:3: ", "control character 0x7f"},
    {"# ok\n# caf\xc3\xa9 fine\nallow \xff\n", NAME ":3:7: ", "invalid UTF-8"},
    {"\xc0\x80", NAME ":1:1: ", "invalid UTF-8"},
    {"# \xed\xa0\x80\n", NAME ":1:3: ", "invalid UTF-8"},
    {"# \xf4\x90\x80\x80\n", NAME ":1:3: ", "invalid UTF-8"},
    {"# \xe2\x82\n", NAME ":1:3: ", "invalid UTF-8"},
    {"# \xe2\x82", NAME ":1:3: ", "invalid UTF-8"},
    {"# \x80\n", NAME ":1:3: ", "invalid UTF-8"},
    {"defaults max-ticket=0s\n", NAME ":1:21: ", "out of range"},
    {"defaults max-ticket=25h\n", NAME ":1:21: ", "out of range"},
    {"defaults max-ticket=86401s\n", NAME ":1:21: ", "out of range"},
    {"defaults max-ticket=1441m\n", NAME ":1:21: ", "out of range"},
    {"defaults max-ticket=23h61m\n", NAME ":1:21: ", "out of range"},
    {"defaults max-ticket=9999999s\n", NAME ":1:21: ", "out of range"},
    {"defaults max-ticket=90\n", NAME ":1:21: ", "bad duration \"90\""},
    {"defaults max-ticket=m\n", NAME ":1:21: ", "bad duration"},
    {"defaults max-ticket=1x\n", NAME ":1:21: ", "bad duration"},
    {"defaults max-ticket=1h30\n", NAME ":1:21: ", "bad duration"},
    {"defaults max-ticket=-1s\n", NAME ":1:21: ", "bad duration"},
    {"defaults max-ticket=1.5h\n", NAME ":1:21: ", "bad duration"},
    {"defaults max-ticket=1H\n", NAME ":1:21: ", "bad duration"},
    {"defaults max-ticket=\"\"\n", NAME ":1:21: ", "bad duration"},
    {"defaults prompt-timeout=0s\n", NAME ":1:25: ", "out of range"},
    {"defaults nobody=yes\n", NAME ":1:17: ", "bad value \"yes\" for nobody"},
    {"defaults nobody=allow nobody=decline\n",
        NAME ":1:23: ", "duplicate option \"nobody\""},
    {"defaults timeout=5s\n", NAME ":1:10: ", "unknown option \"timeout\""},
    {"defaults max-ticket 5s\n",
        NAME ":1:10: ", "expected \"=\" after \"max-ticket\""},
    {"defaults max-ticket=\n", NAME ":1:20: ", "missing value"},
    {"defaults max-ticket==1h\n", NAME ":1:20: ", "missing value"},
    {"defaults \"x\"\n", NAME ":1:10: ", "expected an option"},
    {"defaults nobody=allow\n\ndefaults max-ticket=1h\n",
        NAME ":3:1: ", "duplicate defaults (first at line 1)"},
    {"defaults\n", NAME ":1: ", "defaults needs at least one option"},
    {"scope ws max-ticket=1h\n", NAME ":1: ", "scope \"ws\" needs a selector"},
    {"scope ws\n", NAME ":1: ", "needs a selector"},
    {"scope\n", NAME ":1: ", "scope needs a name"},
    {"scope 1ws all\n", NAME ":1:7: ", "bad scope name"},
    {"scope \"ws\" all\n", NAME ":1:7: ", "bad scope name"},
    {"scope w@s all\n", NAME ":1:7: ", "bad scope name"},
    {"scope ws ou=\"dc=x\" all\n", NAME ":1:20: ", "exactly one selector"},
    {"scope ws all machine-group=\"C\\k\"\n",
        NAME ":1:14: ", "exactly one selector"},
    {"scope x subtree=\"dc=x\"\n",
        NAME ":1:9: ", "unknown scope selector \"subtree\""},
    {"scope x ou \"dc=x\"\n", NAME ":1:9: ", "expected \"=\" after \"ou\""},
    {"scope x ou=dc\n", NAME ":1:11: ", "ou needs a quoted value"},
    {"scope k machine-group=\"kiosks\"\n",
        NAME ":1:23: ", "machine group \"kiosks\" is not of the form"},
    {"scope k machine-group=kiosks\n",
        NAME ":1:22: ", "machine-group needs a quoted value"},
    {"scope ws all max-ticket=1h bogus=1\n",
        NAME ":1:28: ", "unknown option \"bogus\""},
    {"allow group \"C\\x\" on all\n",
        NAME ":1:7: ", "expected view or control after allow, got \"group\""},
    {"allow\n", NAME ":1: ", "allow needs a right"},
    {"allow viewer group \"C\\x\" on all\n",
        NAME ":1:7: ", "expected view or control"},
    {"deny view user \"C\\x\" on all\n", NAME ":1:6: ", "deny takes no right"},
    {"allow view users \"C\\x\" on all\n",
        NAME ":1:12: ", "expected user or group, got \"users\""},
    {"allow view\n", NAME ":1: ", "allow needs a subject"},
    {"deny\n", NAME ":1: ", "deny needs a subject"},
    {"allow view user\n", NAME ":1: ", "missing the user name"},
    {"allow view user alice on all\n", NAME ":1:17: ", "user must be a quoted"},
    {"allow view user \"alice\" on all\n",
        NAME ":1:17: ", "user \"alice\" is not of the form"},
    {"allow view group \"\\\\alice\" on all\n",
        NAME ":1:18: ", "is not of the form"},
    {"allow view group \"CORP\\\\\" on all\n",
        NAME ":1:18: ", "is not of the form"},
    {"allow view group \"A\\B\\C\" on all\n",
        NAME ":1:18: ", "is not of the form"},
    {"deny group \"\" on all\n", NAME ":1:12: ", "is not of the form"},
    {"allow view user \"C\\x\"\n", NAME ":1: ", "expected \"on SCOPE\""},
    {"allow view user \"C\\x\" in all\n",
        NAME ":1:23: ", "expected \"on SCOPE\""},
    {"allow view user \"C\\x\" on\n", NAME ":1: ", "missing the scope name"},
    {"allow view user \"C\\x\" on all now\n",
        NAME ":1:30: ", "unexpected \"now\" after the rule"},
    {"allow view user \"C\\x\" on \"all\"\n",
        NAME ":1:26: ", "unknown scope \"all\""},
    {"allow view user \"C\\x\"on all\n",
        NAME ":1:22: ", "expected a space after the closing quote"},
    {"= x\n", NAME ":1:1: ", "expected a keyword"},
    {"\"allow\" view\n", NAME ":1:1: ", "expected a keyword"},
    {"Allow view user \"C\\x\" on all\n",
        NAME ":1:1: ", "unknown keyword \"Allow\""},
    {"\xef\xbb\xbf"
     "alow\n",
        NAME ":1:1: ", "unknown keyword \"alow\""},
    {"scope a all\r\nbad\r\n", NAME ":2:1: ", "unknown keyword \"bad\""},
    {"scope a all\n\n\n\n\n\n\n\n\n\n\n"
     "allow control group \"CORP\\helpdesk-tier2\" on workstatons\n",
        NAME ":12:46: ", "unknown scope \"workstatons\""},
};

START_TEST(test_parse_errors)
{
	expect_err(errcases[_i].text, errcases[_i].prefix, errcases[_i].what);
}
END_TEST

/* A DN in a policy string: every backslash and quote escaped. */
static void
quote_dn(const char *dn, char *out, size_t outlen)
{
	size_t o = 0;

	for (; *dn != '\0' && o + 3 < outlen; dn++) {
		if (*dn == '\\' || *dn == '"')
			out[o++] = '\\';
		out[o++] = *dn;
	}
	out[o] = '\0';
}

static const char *const bad_dns[] = {"ou=x,,dc=y", "", " ", "ou", "=x",
    "ou=", "ou= ", "ou=x,", ",ou=x", "ou=a\\", "ou=a\\zz", "ou=a\\4",
    "ou=a\\4g", "ou=a;b", "ou=\"x\"", "ou=a<b", "ou=a>b", "1.=x", "o u=x",
    "-ou=x", "ou=#", "ou=#abc", "ou=#zz", "ou=#ab cd", "ou=x+", "ou=x,+",
    "ou=x\xc3\xa9,dc=y,", "ou=x,dc"};

START_TEST(test_malformed_dn)
{
	char text[512], q[256];

	quote_dn(bad_dns[_i], q, sizeof(q));
	snprintf(text, sizeof(text), "# ok\nscope ws ou=\"%s\"\n", q);
	expect_err(text, NAME ":2:13: ", "malformed DN");
	ck_assert_int_eq(az_policy_dn_normalize(bad_dns[_i], q, sizeof(q)), -1);
}
END_TEST

static const char *const good_durations[] = {"1s", "24h", "86400s", "1h30m",
    "1440m", "0h1s", "1m1s", "000001s", "23h59m60s"};
static const unsigned good_duration_s[] = {
    1, 86400, 86400, 5400, 86400, 1, 61, 1, 86400};

START_TEST(test_durations)
{
	char text[256];
	struct az_policy *p;
	struct az_decision d;
	struct az_subject s = subj("C\\u", NULL);
	struct az_target t = targ(NULL, NULL);

	snprintf(text, sizeof(text),
	    "defaults max-ticket=%s prompt-timeout=%s\n"
	    "allow view user \"C\\u\" on all\n",
	    good_durations[_i], good_durations[_i]);
	p = load(text);
	az_policy_eval(p, &s, &t, &d);
	ck_assert_uint_eq(d.max_ticket_s, good_duration_s[_i]);
	ck_assert_uint_eq(d.prompt_timeout_s, good_duration_s[_i]);
	az_policy_free(p);
}
END_TEST

START_TEST(test_nul_byte)
{
	static const char text[] = "# ok\nallow view\0group \"C\\x\" on all\n";
	expect_err_n(text, sizeof(text) - 1, NAME ":2:11: ", "NUL byte");
}
END_TEST

START_TEST(test_line_length)
{
	char *text = malloc(2 * AZ_POLICY_LINE_MAX + 64);
	struct az_policy *p;
	size_t n;

	ck_assert_ptr_nonnull(text);
	/* Exactly AZ_POLICY_LINE_MAX bytes (plus CR LF) is fine. */
	strcpy(text, "# first\n#");
	n = strlen(text);
	memset(text + n, 'x', AZ_POLICY_LINE_MAX - 1);
	n += AZ_POLICY_LINE_MAX - 1;
	strcpy(text + n, "\r\nallow view user \"C\\u\" on all\n");
	p = load(text);
	ck_assert_uint_eq(az_policy_nrules(p), 1);
	az_policy_free(p);
	/* One more is not, without a newline at the end too. */
	n = strlen("# first\n#");
	memset(text + n, 'x', AZ_POLICY_LINE_MAX);
	text[n + AZ_POLICY_LINE_MAX] = '\0';
	expect_err(text, NAME ":2: ", "line too long (4097 bytes, max 4096)");
	free(text);
}
END_TEST

START_TEST(test_too_many_words)
{
	char text[256] = "# x\nallow";
	int i;

	for (i = 0; i < 40; i++)
		strcat(text, " x");
	/* Token 33 starts at column 7 + 2 * 31. */
	expect_err(text, NAME ":2:69: ", "too many words");
}
END_TEST

START_TEST(test_err_null_buffer_and_truncation)
{
	char err[16];
	struct az_policy *p;

	/* A NULL buffer of length 0 is an empty policy. */
	p = az_policy_load_buffer(NAME, NULL, 0, err, sizeof(err));
	ck_assert_ptr_nonnull(p);
	az_policy_free(p);
	/* A short error buffer is truncated, never overrun. */
	p = az_policy_load_buffer(NAME, "bogus", 5, err, sizeof(err));
	ck_assert_ptr_null(p);
	ck_assert_uint_eq(strlen(err), sizeof(err) - 1);
	ck_assert_int_eq(strncmp(err, NAME ":1:1: ", 9), 0);
	/* No error buffer at all. */
	p = az_policy_load_buffer(NAME, "bogus", 5, NULL, 0);
	ck_assert_ptr_null(p);
}
END_TEST

START_TEST(test_long_token_in_error)
{
	char text[600], err[512];
	struct az_policy *p;

	memset(text, 'z', 500);
	text[500] = '\0';
	p = az_policy_load_buffer(NAME, text, strlen(text), err, sizeof(err));
	ck_assert_ptr_null(p);
	/* The token is cut at 64 bytes in the message. */
	ck_assert_ptr_nonnull(strstr(err, "zzz...\""));
	ck_assert_uint_lt(strlen(err), 200);
}
END_TEST

START_TEST(test_load_file)
{
	char path[] = "/tmp/test_policy.XXXXXX", err[512];
	static const char text[] =
	    "scope all max-ticket=2h\n"
	    "\n"
	    "allow control user \"CORP\\alice\" on all\n";
	struct az_policy *p;
	struct az_decision d;
	struct az_subject s = subj("CORP\\alice", NULL);
	struct az_target t = targ(NULL, NULL);
	char want[600];
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(
	    write(fd, text, sizeof(text) - 1), (int)sizeof(text) - 1);
	close(fd);
	p = az_policy_load_file(path, err, sizeof(err));
	ck_assert_msg(p != NULL, "%s", err);
	ck_assert_str_eq(az_policy_name(p), path);
	az_policy_eval(p, &s, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
	snprintf(want, sizeof(want),
	    "allow control user \"CORP\\alice\" on all (%s:3)", path);
	ck_assert_str_eq(d.rule_text, want);
	ck_assert_uint_eq(d.max_ticket_s, 7200);
	az_policy_free(p);

	/* A policy anyone may write is refused. */
	ck_assert_int_eq(chmod(path, 0666), 0);
	ck_assert_ptr_null(az_policy_load_file(path, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "writable by others"));
	ck_assert_int_eq(chmod(path, 0664), 0);
	p = az_policy_load_file(path, err, sizeof(err));
	ck_assert_msg(p != NULL, "%s", err);
	az_policy_free(p);

	/* An error in a file names the file. */
	fd = open(path, O_WRONLY | O_TRUNC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "\nnope\n", 6), 6);
	close(fd);
	ck_assert_ptr_null(az_policy_load_file(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s:2:1: unknown keyword", path);
	ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
	unlink(path);

	ck_assert_ptr_null(az_policy_load_file(path, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "No such file"));
	ck_assert_ptr_null(az_policy_load_file("/tmp", err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "/tmp: "));
}
END_TEST

/* ---- accepted syntax --------------------------------------------------- */

START_TEST(test_empty_policy_denies)
{
	static const char *const texts[] = {"", "\n", "# nothing\n\n  \t\n",
	    "defaults max-ticket=1h\n", "scope ws all\n", "\xef\xbb\xbf"};
	size_t i;

	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct az_policy *p = load(texts[i]);
		struct az_decision d;
		struct az_subject s = subj("CORP\\alice", GROUPS("CORP\\x"));
		struct az_target t = targ(WS_DN, GROUPS("CORP\\k"));

		ck_assert_uint_eq(az_policy_nrules(p), 0);
		az_policy_eval(p, &s, &t, &d);
		ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
		ck_assert_ptr_null(d.rule);
		ck_assert_str_eq(d.rule_text, "default deny");
		ck_assert_int_eq(az_policy_subject_max(p, &s), AZ_RIGHT_NONE);
		az_policy_free(p);
	}
}
END_TEST

START_TEST(test_syntax_variants)
{
	/* Tabs, comments after statements and inside nothing else, spaces
	 * around "=", CRLF, no final newline, '#' inside a string. */
	static const char text[] =
	    "\tdefaults   max-ticket = 10m\t# comment\r\n"
	    "scope ws ou = \"OU=Workstations , DC=corp,DC=example\"# c\n"
	    "scope k machine-group=\"CORP\\#kiosks\"\n"
	    "allow view group \"CORP\\help#desk\" on ws # trailing\n"
	    "allow control user \"CORP\\a\\\"b\" on k\n"
	    "allow control user \"CORP\\\\bob\" on k";
	struct az_policy *p = load(text);
	struct az_decision d;
	struct az_subject s = subj("CORP\\zed", GROUPS("corp\\HELP#DESK"));
	struct az_target t = targ(WS_DN, NULL);

	ck_assert_uint_eq(az_policy_nrules(p), 3);
	ck_assert_uint_eq(az_policy_nscopes(p), 3); /* all, ws, k */
	az_policy_eval(p, &s, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_VIEW);
	ck_assert_uint_eq(d.max_ticket_s, 600);
	ck_assert_str_eq(d.rule_text,
	    "allow view group \"CORP\\help#desk\" on ws (p.conf:4)");

	s = subj("corp\\A\"B", NULL);
	t = targ(NULL, GROUPS("CORP\\#KIOSKS"));
	az_policy_eval(p, &s, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
	ck_assert_str_eq(
	    d.rule_text, "allow control user \"CORP\\a\\\"b\" on k (p.conf:5)");

	/* "\\" in a string is one backslash. */
	s = subj("CORP\\BOB", NULL);
	az_policy_eval(p, &s, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
	ck_assert_str_eq(
	    d.rule_text, "allow control user \"CORP\\bob\" on k (p.conf:6)");
	ck_assert_uint_eq(az_rule_line(d.rule), 6);
	ck_assert_uint_eq(az_rule_index(d.rule), 2);
	az_policy_free(p);
}
END_TEST

/* ---- evaluation -------------------------------------------------------- */

START_TEST(test_brief_example)
{
	static const char text[] =
	    "# rabroker offer policy\n"
	    "defaults prompt-timeout=60s max-ticket=30m nobody=decline\n"
	    "\n"
	    "scope workstations ou=\"ou=Workstations,dc=corp,dc=example\" "
	    "max-ticket=1h prompt-timeout=90s nobody=decline\n"
	    "scope kiosks machine-group=\"CORP\\kiosks\" nobody=allow-view\n"
	    "scope all                                    # every machine\n"
	    "\n"
	    "allow control group \"CORP\\helpdesk-tier2\" on workstations\n"
	    "allow view    group \"CORP\\helpdesk\"       on workstations\n"
	    "allow view    user  \"CORP\\alice\"          on kiosks\n"
	    "deny          user  \"CORP\\mallory\"        on all\n"
	    "deny          group \"CORP\\contractors\"    on workstations\n";
	struct az_policy *p = load(text);
	struct az_decision d;
	struct az_subject s;
	struct az_target ws = targ(WS_DN, NULL);
	struct az_target kiosk =
	    targ("cn=k1,ou=Lobby,dc=corp,dc=example", GROUPS("CORP\\Kiosks"));

	ck_assert_uint_eq(az_policy_nrules(p), 5);
	s = subj("CORP\\bob", GROUPS("CORP\\helpdesk", "CORP\\helpdesk-tier2"));
	az_policy_eval(p, &s, &ws, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
	ck_assert_str_eq(d.rule_text,
	    "allow control group \"CORP\\helpdesk-tier2\" on workstations "
	    "(p.conf:8)");
	ck_assert_uint_eq(d.max_ticket_s, 3600);
	ck_assert_uint_eq(d.prompt_timeout_s, 90);
	ck_assert_int_eq(d.nobody, AZ_NOBODY_DECLINE);
	az_policy_eval(p, &s, &kiosk, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
	ck_assert_str_eq(d.rule_text, "default deny");
	ck_assert_uint_eq(d.max_ticket_s, 1800);
	ck_assert_uint_eq(d.prompt_timeout_s, 60);

	s = subj("corp\\ALICE", NULL);
	az_policy_eval(p, &s, &kiosk, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_VIEW);
	ck_assert_uint_eq(az_rule_line(d.rule), 10);
	ck_assert_uint_eq(d.max_ticket_s, 1800);
	ck_assert_uint_eq(d.prompt_timeout_s, 60);
	ck_assert_int_eq(d.nobody, AZ_NOBODY_ALLOW_VIEW);
	ck_assert_int_eq(az_decision_unattended(&d), AZ_RIGHT_VIEW);

	/* mallory is in tier2 but denied everywhere. */
	s = subj("CORP\\mallory", GROUPS("CORP\\helpdesk-tier2"));
	az_policy_eval(p, &s, &ws, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
	ck_assert_ptr_nonnull(d.rule);
	ck_assert_str_eq(
	    d.rule_text, "deny user \"CORP\\mallory\" on all (p.conf:11)");
	ck_assert_int_eq(az_policy_subject_max(p, &s), AZ_RIGHT_NONE);

	/* A contractor in helpdesk: denied on workstations only. */
	s = subj("CORP\\carl", GROUPS("CORP\\contractors", "CORP\\helpdesk"));
	az_policy_eval(p, &s, &ws, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
	ck_assert_uint_eq(az_rule_line(d.rule), 12);
	ck_assert_int_eq(az_policy_subject_max(p, &s), AZ_RIGHT_VIEW);
	az_policy_free(p);
}
END_TEST

/* A deny anywhere among allows wins, whatever its position. */
START_TEST(test_deny_wins_any_position)
{
	int pos, n = 6;

	for (pos = 0; pos <= n; pos++) {
		char text[2048] = "scope ws ou=\"dc=corp,dc=example\"\n";
		struct az_policy *p;
		struct az_decision d;
		struct az_subject s = subj("CORP\\eve", GROUPS("CORP\\g1"));
		struct az_target t = targ(WS_DN, NULL);
		int i;

		for (i = 0; i <= n; i++) {
			if (i == pos)
				strcat(text, "deny group \"corp\\G1\" on ws\n");
			else
				strcat(text,
				    i % 2 ? "allow control user "
				            "\"CORP\\eve\" on all\n"
				          : "allow view group "
				            "\"CORP\\g1\" on ws\n");
		}
		p = load(text);
		az_policy_eval(p, &s, &t, &d);
		ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
		ck_assert_uint_eq(az_rule_line(d.rule), (unsigned)pos + 2);
		ck_assert_ptr_nonnull(strstr(d.rule_text, "deny group"));
		/* The deny does not apply outside its scope. */
		t = targ("cn=x,dc=other", NULL);
		az_policy_eval(p, &s, &t, &d);
		ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
		az_policy_free(p);
	}
}
END_TEST

START_TEST(test_control_beats_view_and_ties)
{
	static const char text[] = "scope a all max-ticket=1m\n"
	                           "scope b all max-ticket=2m\n"
	                           "scope c all max-ticket=3m\n"
	                           "allow view group \"C\\g\" on a\n"
	                           "allow view user \"C\\u\" on b\n"
	                           "allow control group \"C\\g\" on b\n"
	                           "allow control user \"C\\u\" on c\n";
	struct az_policy *p = load(text);
	struct az_decision d;
	struct az_subject s = subj("C\\u", GROUPS("C\\g"));
	struct az_target t = targ(NULL, NULL);

	az_policy_eval(p, &s, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
	ck_assert_uint_eq(az_rule_line(d.rule), 6); /* first control */
	ck_assert_uint_eq(d.max_ticket_s, 120);     /* its scope's limits */
	s = subj("C\\u", NULL);
	az_policy_eval(p, &s, &t, &d);
	ck_assert_uint_eq(az_rule_line(d.rule), 7);
	ck_assert_uint_eq(d.max_ticket_s, 180);
	s = subj("C\\nobody", GROUPS("C\\other", "c\\G"));
	az_policy_eval(p, &s, &t, &d);
	ck_assert_uint_eq(az_rule_line(d.rule), 6);
	az_policy_free(p);

	p = load("allow view group \"C\\g\" on all\n"
	         "allow view user \"C\\u\" on all\n");
	s = subj("C\\u", GROUPS("C\\g"));
	az_policy_eval(p, &s, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_VIEW);
	ck_assert_uint_eq(az_rule_line(d.rule), 1); /* tie: file order */
	az_policy_free(p);
}
END_TEST

START_TEST(test_user_vs_group)
{
	struct az_policy *p = load("allow control user \"CORP\\ops\" on all\n"
	                           "allow view group \"CORP\\alice\" on all\n");
	struct az_target t = targ(NULL, NULL);

	/* A user rule does not match a group of the same name ... */
	ck_assert_int_eq(right_of(p, subj("CORP\\x", GROUPS("CORP\\ops")), t),
	    AZ_RIGHT_NONE);
	/* ... and a group rule does not match the account. */
	ck_assert_int_eq(
	    right_of(p, subj("CORP\\alice", NULL), t), AZ_RIGHT_NONE);
	ck_assert_int_eq(
	    right_of(p, subj("CORP\\ops", NULL), t), AZ_RIGHT_CONTROL);
	ck_assert_int_eq(right_of(p, subj("CORP\\x", GROUPS("CORP\\alice")), t),
	    AZ_RIGHT_VIEW);
	/* Machine groups never act as the helper's groups. */
	ck_assert_int_eq(right_of(p, subj("CORP\\x", NULL),
	                     targ(NULL, GROUPS("CORP\\alice", "CORP\\ops"))),
	    AZ_RIGHT_NONE);
	/* NULL account, NULL group list, NULL entries: no match, no crash. */
	ck_assert_int_eq(right_of(p, subj(NULL, NULL), t), AZ_RIGHT_NONE);
	{
		const char *const g[] = {NULL, "CORP\\alice"};
		struct az_subject s = {NULL, g, 2};
		struct az_subject s2 = {NULL, NULL, 5};
		struct az_decision d;
		az_policy_eval(p, &s, &t, &d);
		ck_assert_int_eq(d.right, AZ_RIGHT_VIEW);
		az_policy_eval(p, &s2, &t, &d);
		ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
		az_policy_eval(p, NULL, NULL, &d);
		ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
		az_policy_eval(NULL, &s, &t, &d);
		ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
		ck_assert_str_eq(d.rule_text, "default deny");
	}
	az_policy_free(p);
}
END_TEST

START_TEST(test_case_insensitive_names)
{
	struct az_policy *p =
	    load("scope K machine-group=\"Corp\\Kiosks\"\n"
	         "allow view group \"CoRp\\HelpDesk\" on k\n"
	         "allow control user \"corp\\\xc3\x89lise\" on ALL\n");
	struct az_target t = targ(NULL, GROUPS("CORP\\KIOSKS"));

	ck_assert_int_eq(right_of(p, subj("x\\y", GROUPS("corp\\helpdesk")), t),
	    AZ_RIGHT_VIEW);
	ck_assert_int_eq(right_of(p, subj("x\\y", GROUPS("CORP\\HELPDESK")),
	                     targ(NULL, GROUPS("corp\\kiosks"))),
	    AZ_RIGHT_VIEW);
	/* Only ASCII is folded; other bytes compare exactly. */
	ck_assert_int_eq(
	    right_of(p, subj("CORP\\\xc3\x89LISE", NULL), t), AZ_RIGHT_CONTROL);
	ck_assert_int_eq(
	    right_of(p, subj("CORP\\\xc3\xa9lise", NULL), t), AZ_RIGHT_NONE);
	/* Prefixes and longer names do not match. */
	ck_assert_int_eq(
	    right_of(p, subj("x\\y", GROUPS("CORP\\helpdesk2")), t),
	    AZ_RIGHT_NONE);
	ck_assert_int_eq(right_of(p, subj("x\\y", GROUPS("CORP\\helpdes")), t),
	    AZ_RIGHT_NONE);
	ck_assert_int_eq(
	    right_of(p, subj("x\\y", GROUPS("helpdesk")), t), AZ_RIGHT_NONE);
	az_policy_free(p);
}
END_TEST

/* ---- OU scopes --------------------------------------------------------- */

struct dncase {
	const char *dn, *base;
	int within;
};

static const struct dncase dncases[] = {
    {"cn=ws,ou=Workstations,dc=corp,dc=example",
        "ou=Workstations,dc=corp,dc=example", 1},
    {"ou=Workstations,dc=corp,dc=example", "ou=Workstations,dc=corp,dc=example",
        1},
    {"cn=ws,ou=Lab,ou=Floor2,ou=Workstations,dc=corp,dc=example",
        "ou=Workstations,dc=corp,dc=example", 1},
    {"cn=ws,ou=Workstations2,dc=corp,dc=example",
        "ou=Workstations,dc=corp,dc=example", 0},
    {"cn=ws,ou=MyWorkstations,dc=corp,dc=example",
        "ou=Workstations,dc=corp,dc=example", 0},
    {"cn=ws,ou=Workstations,dc=corp,dc=example",
        "ou=Workstations2,dc=corp,dc=example", 0},
    {"cn=ws,ou=Workstations,dc=corp,dc=example",
        "ou=Lab,ou=Workstations,dc=corp,dc=example", 0},
    {"cn=ws,ou=Workstations,dc=corp,dc=example",
        "ou=Workstations,dc=corp,dc=example,dc=org", 0},
    {"cn=ws,ou=Workstations,dc=corp,dc=example", "dc=example", 1},
    {"cn=ws,ou=Workstations,dc=corp,dc=example", "dc=Example", 1},
    {"cn=ws,ou=Workstations,dc=xcorp,dc=example", "dc=corp,dc=example", 0},
    {"CN=WS , OU = WORKSTATIONS ,DC=Corp, DC=Example",
        "ou=workstations,dc=corp,dc=example", 1},
    {"cn=ws,ou=Work  Stations,dc=corp", "OU=work stations , dc=corp", 1},
    {"cn=ws,ou=Work Stations,dc=corp", "ou=WorkStations,dc=corp", 0},
    /* an escaped comma is part of the value, not a boundary */
    {"cn=ws,ou=Sales\\, Europe,dc=corp", "ou=Sales\\2C Europe,dc=corp", 1},
    {"cn=ws,ou=Sales\\, Europe,dc=corp", "ou=Europe,dc=corp", 0},
    {"cn=ws,ou=Sales\\, Europe,dc=corp", "ou=Sales,dc=corp", 0},
    {"ou=a\\,dc=x,dc=corp", "dc=x,dc=corp", 0},
    {"ou=a+cn=b,dc=corp", "cn=B+OU=A,dc=corp", 1},
    {"x=1,ou=a+cn=b,dc=corp", "cn=b+ou=a,dc=corp", 1},
    {"x=1,ou=a+cn=b,dc=corp", "ou=a,dc=corp", 0},
    {"ou=a\\+cn=b,dc=corp", "cn=b,dc=corp", 0},
    {"ou=\\20x\\20,dc=corp", "ou=\\ x\\ ,dc=corp", 1},
    {"ou=\\20x\\20,dc=corp", "ou=x,dc=corp", 0},
    {"ou=x ,dc=corp", "ou=x,dc=corp", 1},
    {"OU=Lab,2.5.4.11=Workstations,dc=corp", "ou=workstations,dc=corp", 0},
    {"ou=#04024869,dc=corp", "OU=#04024869,DC=corp", 1},
    {"ou=\\23x,dc=corp", "ou=\\#x,dc=corp", 1},
    {"ou=caf\xc3\xa9,dc=corp", "ou=CAF\xc3\xa9,dc=corp", 1},
    {"ou=caf\\c3\\a9,dc=corp", "ou=caf\xc3\xa9,dc=corp", 1},
    {"ou=x,,dc=corp", "dc=corp", -1},
    {"cn=ws,dc=corp", "dc=corp,", -1},
};

START_TEST(test_dn_within)
{
	const struct dncase *c = &dncases[_i];
	int r = az_policy_dn_within(c->dn, c->base);

	ck_assert_msg(r == c->within, "\"%s\" within \"%s\": got %d, want %d",
	    c->dn, c->base, r, c->within);
	/* Through a policy: an OU scope matches the same machines. */
	if (c->within >= 0) {
		char text[1024], q[512];
		struct az_policy *p;

		quote_dn(c->base, q, sizeof(q));
		snprintf(text, sizeof(text),
		    "scope s ou=\"%s\"\nallow view user \"C\\u\" on s\n", q);
		p = load(text);
		ck_assert_int_eq(
		    right_of(p, subj("C\\u", NULL), targ(c->dn, NULL)),
		    c->within ? AZ_RIGHT_VIEW : AZ_RIGHT_NONE);
		az_policy_free(p);
	}
}
END_TEST

START_TEST(test_dn_normalize)
{
	char out[256];

	ck_assert_int_eq(
	    az_policy_dn_normalize(
	        " CN = A  B , OU=x\\,y+CN=Z , DC=Corp ", out, sizeof(out)),
	    (int)strlen("cn=a b,cn=z+ou=x\\2cy,dc=corp"));
	ck_assert_str_eq(out, "cn=a b,cn=z+ou=x\\2cy,dc=corp");
	ck_assert_int_ge(
	    az_policy_dn_normalize("ou=\\\"q\\\",dc=x", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "ou=\\22q\\22,dc=x");
	/* Too small an output buffer fails, never overruns. */
	ck_assert_int_eq(az_policy_dn_normalize("ou=abc,dc=x", out, 11), -1);
	ck_assert_int_eq(az_policy_dn_normalize("ou=abc,dc=x", out, 12), 11);
	ck_assert_int_eq(az_policy_dn_normalize(NULL, out, sizeof(out)), -1);
}
END_TEST

START_TEST(test_ou_scope_unknown_and_bad_dn)
{
	struct az_policy *p =
	    load("scope ws ou=\"ou=Workstations,dc=corp,dc=example\"\n"
	         "scope k machine-group=\"CORP\\kiosks\"\n"
	         "allow control group \"CORP\\ops\" on ws\n"
	         "allow view group \"CORP\\ops\" on k\n");
	struct az_subject s = subj("CORP\\o", GROUPS("CORP\\ops"));
	struct az_decision d;
	struct az_target t;

	/* Unknown DN: OU scopes never match; other scopes still do. */
	ck_assert_int_eq(right_of(p, s, targ(NULL, NULL)), AZ_RIGHT_NONE);
	ck_assert_int_eq(
	    right_of(p, s, targ(NULL, GROUPS("CORP\\kiosks"))), AZ_RIGHT_VIEW);
	/* A malformed machine DN makes an OU allow not apply ... */
	t = targ(
	    "cn=x,,ou=Workstations,dc=corp,dc=example", GROUPS("CORP\\kiosks"));
	ck_assert_int_eq(right_of(p, s, t), AZ_RIGHT_VIEW);
	az_policy_free(p);

	/* ... and an OU deny that cannot be checked denies (fail closed). */
	p = load("scope ws ou=\"ou=Workstations,dc=corp,dc=example\"\n"
	         "allow control group \"CORP\\ops\" on all\n"
	         "deny user \"CORP\\o\" on ws\n");
	az_policy_eval(p, &s, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
	ck_assert_ptr_null(d.rule);
	ck_assert_str_eq(d.rule_text, "default deny (machine DN malformed)");
	/* With an unknown DN the OU deny does not apply (documented). */
	ck_assert_int_eq(right_of(p, s, targ(NULL, NULL)), AZ_RIGHT_CONTROL);
	ck_assert_int_eq(
	    right_of(p, s, targ("cn=x,dc=other", NULL)), AZ_RIGHT_CONTROL);
	ck_assert_int_eq(right_of(p, s, targ(WS_DN, NULL)), AZ_RIGHT_NONE);
	/* A DN longer than AZ_POLICY_DN_MAX is treated as malformed. */
	{
		size_t n = AZ_POLICY_DN_MAX + 100, i;
		char *dn = malloc(n + 64);
		ck_assert_ptr_nonnull(dn);
		for (i = 0; i + 5 < n; i += 5)
			memcpy(dn + i, "ou=x,", 5);
		strcpy(dn + i, "ou=Workstations,dc=corp,dc=example");
		az_policy_eval(
		    p, &s, &(struct az_target){"f", dn, NULL, 0}, &d);
		ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
		free(dn);
	}
	az_policy_free(p);
}
END_TEST

START_TEST(test_machine_group_and_all)
{
	struct az_policy *p = load("scope k machine-group=\"CORP\\kiosks\"\n"
	                           "scope every all max-ticket=5m\n"
	                           "allow view user \"CORP\\u\" on k\n"
	                           "allow view user \"CORP\\v\" on every\n"
	                           "allow view user \"CORP\\w\" on all\n");
	struct az_decision d;
	struct az_subject s = subj("CORP\\v", NULL);
	struct az_target t = targ(NULL, NULL);

	ck_assert_int_eq(right_of(p, subj("CORP\\u", NULL),
	                     targ(WS_DN, GROUPS("CORP\\a", "corp\\KIOSKS"))),
	    AZ_RIGHT_VIEW);
	ck_assert_int_eq(right_of(p, subj("CORP\\u", NULL),
	                     targ(WS_DN, GROUPS("CORP\\kiosks2"))),
	    AZ_RIGHT_NONE);
	/* Machine groups are matched on the machine, not on the helper. */
	ck_assert_int_eq(right_of(p, subj("CORP\\u", GROUPS("CORP\\kiosks")),
	                     targ(WS_DN, NULL)),
	    AZ_RIGHT_NONE);
	az_policy_eval(p, &s, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_VIEW);
	ck_assert_uint_eq(d.max_ticket_s, 300);
	ck_assert_int_eq(right_of(p, subj("CORP\\w", NULL), t), AZ_RIGHT_VIEW);
	az_policy_free(p);
}
END_TEST

/* ---- limits ------------------------------------------------------------ */

START_TEST(test_limits_inheritance)
{
	struct az_policy *p;
	struct az_decision d;
	struct az_subject s = subj("C\\u", GROUPS("C\\g", "C\\bad"));
	struct az_target t = targ(WS_DN, GROUPS("C\\k"));

	/* No defaults line: the built-in values. */
	p = load("allow view user \"C\\u\" on all\n");
	az_policy_eval(p, &s, &t, &d);
	ck_assert_uint_eq(d.max_ticket_s, AZ_POLICY_DEFAULT_MAX_TICKET);
	ck_assert_uint_eq(d.prompt_timeout_s, AZ_POLICY_DEFAULT_PROMPT_TIMEOUT);
	ck_assert_int_eq(d.nobody, AZ_NOBODY_DECLINE);
	ck_assert_int_eq(az_decision_unattended(&d), AZ_RIGHT_NONE);
	az_policy_free(p);

	/* defaults may come after the scopes; each scope inherits only what
	 * it does not set; the built-in `all` can be given limits too. */
	p = load(
	    "scope ws ou=\"dc=example\" max-ticket=1h\n"
	    "scope k machine-group=\"C\\k\" prompt-timeout=2m nobody=allow\n"
	    "defaults prompt-timeout=10s nobody=allow-view max-ticket=2h\n"
	    "scope all max-ticket=3h\n"
	    "allow control user \"C\\u\" on ws\n"
	    "allow control user \"C\\x\" on k\n"
	    "allow view user \"C\\y\" on all\n"
	    "deny group \"C\\bad\" on k\n");
	az_policy_eval(p, &(struct az_subject){"C\\u", NULL, 0}, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
	ck_assert_uint_eq(d.max_ticket_s, 3600);
	ck_assert_uint_eq(d.prompt_timeout_s, 10);
	ck_assert_int_eq(d.nobody, AZ_NOBODY_ALLOW_VIEW);
	ck_assert_int_eq(az_decision_unattended(&d), AZ_RIGHT_VIEW);
	az_policy_eval(p, &(struct az_subject){"C\\x", NULL, 0}, &t, &d);
	ck_assert_uint_eq(d.max_ticket_s, 7200);
	ck_assert_uint_eq(d.prompt_timeout_s, 120);
	ck_assert_int_eq(d.nobody, AZ_NOBODY_ALLOW);
	ck_assert_int_eq(az_decision_unattended(&d), AZ_RIGHT_CONTROL);
	az_policy_eval(p, &(struct az_subject){"C\\y", NULL, 0}, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_VIEW);
	ck_assert_uint_eq(d.max_ticket_s, 10800);
	ck_assert_uint_eq(d.prompt_timeout_s, 10);
	/* Default deny carries the defaults' limits, nothing unattended. */
	az_policy_eval(p, &(struct az_subject){"C\\z", NULL, 0}, &t, &d);
	ck_assert_ptr_null(d.rule);
	ck_assert_uint_eq(d.max_ticket_s, 7200);
	ck_assert_uint_eq(d.prompt_timeout_s, 10);
	ck_assert_int_eq(az_decision_unattended(&d), AZ_RIGHT_NONE);
	/* A deny carries its scope's limits but grants nothing. */
	az_policy_eval(p, &s, &t, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
	ck_assert_uint_eq(az_rule_line(d.rule), 8);
	ck_assert_int_eq(d.nobody, AZ_NOBODY_ALLOW);
	ck_assert_int_eq(az_decision_unattended(&d), AZ_RIGHT_NONE);
	az_policy_free(p);
}
END_TEST

START_TEST(test_subject_max_and_names)
{
	struct az_policy *p = load("scope ws ou=\"dc=corp\"\n"
	                           "allow view group \"C\\g\" on ws\n"
	                           "allow control user \"C\\u\" on ws\n"
	                           "deny user \"C\\d\" on all\n"
	                           "deny user \"C\\u\" on ws\n"
	                           "allow control user \"C\\d\" on all\n");

	ck_assert_int_eq(
	    az_policy_subject_max(p, &(struct az_subject){"C\\n", NULL, 0}),
	    AZ_RIGHT_NONE);
	ck_assert_int_eq(az_policy_subject_max(p,
	                     &(struct az_subject){"C\\n", GROUPS("c\\G"), 1}),
	    AZ_RIGHT_VIEW);
	/* A deny on a narrower scope does not lower the bound. */
	ck_assert_int_eq(
	    az_policy_subject_max(p, &(struct az_subject){"C\\u", NULL, 0}),
	    AZ_RIGHT_CONTROL);
	ck_assert_int_eq(
	    az_policy_subject_max(p, &(struct az_subject){"C\\d", NULL, 0}),
	    AZ_RIGHT_NONE);
	ck_assert_int_eq(az_policy_subject_max(NULL, NULL), AZ_RIGHT_NONE);
	ck_assert_uint_eq(az_policy_nrules(p), 5);
	ck_assert_uint_eq(az_policy_nrules(NULL), 0);
	ck_assert_str_eq(az_policy_name(p), NAME);
	ck_assert_str_eq(az_right_name(AZ_RIGHT_NONE), "none");
	ck_assert_str_eq(az_right_name(AZ_RIGHT_VIEW), "view");
	ck_assert_str_eq(az_right_name(AZ_RIGHT_CONTROL), "control");
	ck_assert_str_eq(az_nobody_name(AZ_NOBODY_DECLINE), "decline");
	ck_assert_str_eq(az_nobody_name(AZ_NOBODY_ALLOW_VIEW), "allow-view");
	ck_assert_str_eq(az_nobody_name(AZ_NOBODY_ALLOW), "allow");
	ck_assert_str_eq(az_rule_text(NULL), "default deny");
	az_policy_free(p);
	az_policy_free(NULL);
}
END_TEST

START_TEST(test_rule_text_truncated)
{
	char text[1024], name[600];
	struct az_policy *p;
	struct az_decision d;

	memset(name, 'n', 500);
	memcpy(name, "CORP\\", 5);
	name[500] = '\0';
	snprintf(text, sizeof(text), "allow view user \"%s\" on all\n", name);
	p = load(text);
	az_policy_eval(p, &(struct az_subject){name, NULL, 0}, NULL, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_VIEW);
	ck_assert_uint_eq(strlen(d.rule_text), sizeof(d.rule_text) - 1);
	ck_assert_int_eq(
	    strncmp(d.rule_text, az_rule_text(d.rule), sizeof(d.rule_text) - 1),
	    0);
	ck_assert_ptr_nonnull(
	    strstr(az_rule_text(d.rule), "on all (p.conf:1)"));
	az_policy_free(p);
}
END_TEST

/* ---- exhaustive comparison with a reference evaluator ------------------
 * A pool of rules over four scopes; every subset of the pool, in file
 * order and reversed, is evaluated for every helper on every machine and
 * compared with a reference that knows scope membership from a table
 * written by hand (not from DN code) and decides by sorting the matching
 * rules (deny first, then higher right, then earlier line). */

enum { SC_WS, SC_LAB, SC_KIOSK, SC_EVERY, SC_N };

static const char *const scope_names[SC_N] = {"ws", "lab", "kiosk", "every"};
static const char pool_header[] =
    "defaults max-ticket=20m prompt-timeout=45s nobody=allow\n"
    "scope ws ou=\"OU=Workstations,DC=corp,DC=example\" max-ticket=1h\n"
    "scope lab ou=\"ou=Lab, ou=Workstations, dc=corp, dc=example\" "
    "prompt-timeout=2m\n"
    "scope kiosk machine-group=\"CORP\\kiosks\" max-ticket=10m "
    "nobody=allow-view\n"
    "scope every all\n";
#define POOL_HEADER_LINES 5
static const unsigned scope_max_ticket[SC_N] = {3600, 1200, 600, 1200};
static const unsigned scope_prompt[SC_N] = {45, 120, 45, 45};

struct poolrule {
	int deny;
	enum az_right right;
	int group;
	const char *name; /* as written in the policy */
	int scope;
};

static const struct poolrule pool[] = {
    {0, AZ_RIGHT_VIEW, 1, "CORP\\helpdesk", SC_WS},
    {0, AZ_RIGHT_CONTROL, 1, "CORP\\tier2", SC_LAB},
    {1, AZ_RIGHT_NONE, 1, "CORP\\contractors", SC_KIOSK},
    {0, AZ_RIGHT_CONTROL, 0, "CORP\\alice", SC_EVERY},
    {1, AZ_RIGHT_NONE, 0, "corp\\ALICE", SC_LAB},
    {0, AZ_RIGHT_VIEW, 0, "CORP\\bob", SC_KIOSK},
    {0, AZ_RIGHT_CONTROL, 1, "corp\\HELPDESK", SC_KIOSK},
    {1, AZ_RIGHT_NONE, 1, "CORP\\Tier2", SC_WS},
    {0, AZ_RIGHT_VIEW, 1, "CORP\\contractors", SC_EVERY},
    {0, AZ_RIGHT_VIEW, 0, "CORP\\carol", SC_LAB},
};
#define NPOOL (sizeof(pool) / sizeof(pool[0]))

struct refsubject {
	const char *account;
	const char *groups[3];
};

static const struct refsubject ref_subjects[] = {
    {"CORP\\alice", {"CORP\\helpdesk", NULL}},
    {"CORP\\bob", {"CORP\\contractors", "CORP\\TIER2", NULL}},
    {"Corp\\Carol", {"corp\\helpdesk", "CORP\\tier2", NULL}},
    {"CORP\\mallory", {NULL}},
    {NULL, {"CORP\\contractors", NULL}},
};
#define NSUBJ (sizeof(ref_subjects) / sizeof(ref_subjects[0]))

struct reftarget {
	const char *dn;
	const char *groups[2];
	int in[SC_N]; /* membership, by hand */
};

static const struct reftarget ref_targets[] = {
    {"cn=ws-1,ou=Workstations,dc=corp,dc=example", {NULL}, {1, 0, 0, 1}},
    {"CN=lab-1,OU=Lab,OU=Workstations,DC=corp,DC=example", {NULL},
        {1, 1, 0, 1}},
    {"cn=k,ou=Workstations,dc=corp,dc=example", {"CORP\\kiosks", NULL},
        {1, 0, 1, 1}},
    {"cn=x,ou=Workstations2,dc=corp,dc=example", {"CORP\\KIOSKS", NULL},
        {0, 0, 1, 1}},
    {NULL, {"corp\\kiosks", NULL}, {0, 0, 1, 1}},
    {"cn=srv,ou=Servers,dc=corp,dc=example", {NULL}, {0, 0, 0, 1}},
    {"cn=y,ou=Lab2,ou=Workstations,dc=corp,dc=example", {"CORP\\kiosk"},
        {1, 0, 0, 1}},
};
#define NTARG (sizeof(ref_targets) / sizeof(ref_targets[0]))

static int
ref_subject_matches(const struct poolrule *r, const struct refsubject *s)
{
	size_t i;

	if (!r->group)
		return s->account != NULL &&
		    strcasecmp(r->name, s->account) == 0;
	for (i = 0; s->groups[i] != NULL; i++)
		if (strcasecmp(r->name, s->groups[i]) == 0)
			return 1;
	return 0;
}

struct refmatch {
	const struct poolrule *r;
	unsigned line;
};

static int
ref_cmp(const void *a, const void *b)
{
	const struct refmatch *x = a, *y = b;

	if (x->r->deny != y->r->deny)
		return y->r->deny - x->r->deny;
	if (x->r->right != y->r->right)
		return (int)y->r->right - (int)x->r->right;
	return (int)x->line - (int)y->line;
}

START_TEST(test_reference_all_subsets)
{
	unsigned mask, checked = 0;
	int reversed;

	for (mask = 0; mask < (1u << NPOOL); mask++) {
		for (reversed = 0; reversed < 2; reversed++) {
			char text[4096];
			unsigned line[NPOOL] = {0}, ln = POOL_HEADER_LINES;
			struct az_policy *p;
			size_t k, si, ti;

			strcpy(text, pool_header);
			for (k = 0; k < NPOOL; k++) {
				size_t i = reversed ? NPOOL - 1 - k : k;
				const struct poolrule *r = &pool[i];
				char l[256];
				if (!(mask & (1u << i)))
					continue;
				snprintf(l, sizeof(l), "%s%s %s \"%s\" on %s\n",
				    r->deny ? "deny" : "allow ",
				    r->deny ? "" : az_right_name(r->right),
				    r->group ? "group" : "user", r->name,
				    scope_names[r->scope]);
				strcat(text, l);
				line[i] = ++ln;
			}
			p = load(text);
			for (si = 0; si < NSUBJ; si++) {
				const struct refsubject *rs = &ref_subjects[si];
				struct az_subject s = {
				    rs->account, rs->groups, count(rs->groups)};
				enum az_right bound =
				    az_policy_subject_max(p, &s);
				for (ti = 0; ti < NTARG; ti++) {
					const struct reftarget *rt =
					    &ref_targets[ti];
					struct az_target t = {"m", rt->dn,
					    rt->groups, count(rt->groups)};
					struct refmatch m[NPOOL];
					size_t nm = 0, i;
					enum az_right want = AZ_RIGHT_NONE;
					unsigned wline = 0;
					struct az_decision d;

					for (i = 0; i < NPOOL; i++) {
						if (!(mask & (1u << i)) ||
						    !ref_subject_matches(
						        &pool[i], rs) ||
						    !rt->in[pool[i].scope])
							continue;
						m[nm].r = &pool[i];
						m[nm++].line = line[i];
					}
					if (nm > 0) {
						qsort(m, nm, sizeof(m[0]),
						    ref_cmp);
						want = m[0].r->deny
						    ? AZ_RIGHT_NONE
						    : m[0].r->right;
						wline = m[0].line;
					}
					az_policy_eval(p, &s, &t, &d);
					ck_assert_msg(d.right == want &&
					        az_rule_line(d.rule) == wline,
					    "mask %#x rev %d subject %zu "
					    "target %zu: got %s line %u, "
					    "want %s line %u\n%s",
					    mask, reversed, si, ti,
					    az_right_name(d.right),
					    az_rule_line(d.rule),
					    az_right_name(want), wline, text);
					ck_assert_int_le(d.right, bound);
					if (nm > 0) {
						char suffix[64];
						int sc = m[0].r->scope;
						snprintf(suffix, sizeof(suffix),
						    " on %s (p.conf:%u)",
						    scope_names[sc], wline);
						ck_assert_ptr_nonnull(strstr(
						    d.rule_text, suffix));
						ck_assert_uint_eq(
						    d.max_ticket_s,
						    scope_max_ticket[sc]);
						ck_assert_uint_eq(
						    d.prompt_timeout_s,
						    scope_prompt[sc]);
					} else {
						ck_assert_str_eq(d.rule_text,
						    "default deny");
						ck_assert_uint_eq(
						    d.max_ticket_s, 1200);
					}
					checked++;
				}
			}
			az_policy_free(p);
		}
	}
	ck_assert_uint_eq(checked, (1u << NPOOL) * 2 * NSUBJ * NTARG);
}
END_TEST

/* ---- shipped examples -------------------------------------------------- */

/* The decisions docs/POLICY.md lists under its complete example (the
 * same policy ships as deploy/policy.example). */
static void
check_doc_decisions(const struct az_policy *p)
{
	struct az_decision d;
	struct az_target ws =
	    targ("cn=ws7,ou=Workstations,dc=corp,dc=example", NULL);
	struct az_target lab =
	    targ("cn=lab3,ou=Labs,ou=Workstations,dc=corp,dc=example", NULL);
	struct az_target srv =
	    targ("cn=db1,ou=Servers,dc=corp,dc=example", NULL);
	struct az_subject bob =
	    subj("CORP\\bob", GROUPS("CORP\\Helpdesk", "CORP\\Helpdesk-Tier2"));
	struct az_subject labadm =
	    subj("CORP\\lea", GROUPS("CORP\\Lab-Admins"));
	struct az_subject alice = subj("CORP\\alice", NULL);
	struct az_subject contractor = subj(
	    "CORP\\con", GROUPS("CORP\\Server-Admins", "CORP\\Contractors"));

	az_policy_eval(p, &bob, &ws, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
	ck_assert_uint_eq(d.max_ticket_s, 3600);
	ck_assert_uint_eq(d.prompt_timeout_s, 90);
	az_policy_eval(p, &bob, &lab, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
	ck_assert_ptr_nonnull(strstr(d.rule_text, "on workstations ("));
	ck_assert_uint_eq(d.max_ticket_s, 3600);
	az_policy_eval(p, &labadm, &lab, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_CONTROL);
	ck_assert_ptr_nonnull(strstr(d.rule_text, "on labs ("));
	ck_assert_uint_eq(d.max_ticket_s, 1800);
	ck_assert_int_eq(az_decision_unattended(&d), AZ_RIGHT_VIEW);
	az_policy_eval(p, &alice, &srv, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_VIEW);
	ck_assert_uint_eq(d.max_ticket_s, 1200);
	az_policy_eval(p, &contractor, &srv, &d);
	ck_assert_int_eq(d.right, AZ_RIGHT_NONE);
	ck_assert_ptr_nonnull(strstr(d.rule_text, "deny group"));
}

START_TEST(test_deploy_example_parses)
{
	char path[1024], err[512];
	struct az_policy *p;

	snprintf(path, sizeof(path), "%s/deploy/policy.example",
	    RABROKER_SOURCE_DIR);
	p = az_policy_load_file(path, err, sizeof(err));
	ck_assert_msg(p != NULL, "%s", err);
	ck_assert_uint_gt(az_policy_nrules(p), 3);
	check_doc_decisions(p);
	az_policy_free(p);
}
END_TEST

/* The complete example in docs/POLICY.md, between the marker lines. */
START_TEST(test_doc_example_parses)
{
	char path[1024], err[512], line[1024];
	char *text = calloc(1, 65536);
	struct az_policy *p;
	int in = 0;
	FILE *f;

	ck_assert_ptr_nonnull(text);
	snprintf(path, sizeof(path), "%s/docs/POLICY.md", RABROKER_SOURCE_DIR);
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "%s", path);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strstr(line, "<!-- example:begin -->") != NULL)
			in = 1;
		else if (strstr(line, "<!-- example:end -->") != NULL)
			in = 0;
		else if (in && strncmp(line, "```", 3) != 0)
			strncat(text, line, 65535 - strlen(text));
	}
	fclose(f);
	ck_assert_uint_gt(strlen(text), 100);
	p = az_policy_load_buffer(
	    "POLICY.md", text, strlen(text), err, sizeof(err));
	ck_assert_msg(p != NULL, "%s", err);
	ck_assert_uint_gt(az_policy_nrules(p), 3);
	check_doc_decisions(p);
	az_policy_free(p);
	free(text);
}
END_TEST

static Suite *
policy_suite(void)
{
	Suite *s = suite_create("policy");
	TCase *tc = tcase_create("parse");

	tcase_add_loop_test(
	    tc, test_parse_errors, 0, sizeof(errcases) / sizeof(errcases[0]));
	tcase_add_loop_test(
	    tc, test_malformed_dn, 0, sizeof(bad_dns) / sizeof(bad_dns[0]));
	tcase_add_loop_test(tc, test_durations, 0,
	    sizeof(good_durations) / sizeof(good_durations[0]));
	tcase_add_test(tc, test_nul_byte);
	tcase_add_test(tc, test_line_length);
	tcase_add_test(tc, test_too_many_words);
	tcase_add_test(tc, test_err_null_buffer_and_truncation);
	tcase_add_test(tc, test_long_token_in_error);
	tcase_add_test(tc, test_load_file);
	tcase_add_test(tc, test_empty_policy_denies);
	tcase_add_test(tc, test_syntax_variants);
	suite_add_tcase(s, tc);

	tc = tcase_create("eval");
	tcase_add_test(tc, test_brief_example);
	tcase_add_test(tc, test_deny_wins_any_position);
	tcase_add_test(tc, test_control_beats_view_and_ties);
	tcase_add_test(tc, test_user_vs_group);
	tcase_add_test(tc, test_case_insensitive_names);
	tcase_add_loop_test(
	    tc, test_dn_within, 0, sizeof(dncases) / sizeof(dncases[0]));
	tcase_add_test(tc, test_dn_normalize);
	tcase_add_test(tc, test_ou_scope_unknown_and_bad_dn);
	tcase_add_test(tc, test_machine_group_and_all);
	tcase_add_test(tc, test_limits_inheritance);
	tcase_add_test(tc, test_subject_max_and_names);
	tcase_add_test(tc, test_rule_text_truncated);
	tcase_add_test(tc, test_reference_all_subsets);
	suite_add_tcase(s, tc);

	tc = tcase_create("examples");
	tcase_add_test(tc, test_deploy_example_parses);
	tcase_add_test(tc, test_doc_example_parses);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(policy_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
