/*
 * test_sasl.c - az_sasl without a directory: strict base64, the JSON
 * params of auth.start/auth.step, result objects, configuration checks,
 * the mechanisms a session is offered, and every refusal that must happen
 * before anything reaches the directory (with no directory at all, a
 * request that passed them gets directory_unavailable instead).
 * The exchanges against a real slapd are in tests/integ/itest_sasl.c.
 */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dlfcn.h>
#include <stdint.h>

#include <sasl/sasl.h>
#include <sasl/saslutil.h>

#include "az_dir.h"
#include "az_sasl.h"
#include "rp_error.h"

/* ---- base64 ------------------------------------------------------------ */

static void
dec_ok(const char *b64, const char *want, size_t wantlen)
{
	unsigned char *out = NULL;
	size_t len = 99;
	char err[160] = "";

	ck_assert_msg(az_sasl_b64_decode(
	                  b64, strlen(b64), &out, &len, err, sizeof(err)) == 0,
	    "\"%s\" refused: %s", b64, err);
	ck_assert_uint_eq(len, wantlen);
	ck_assert_int_eq(memcmp(out, want, wantlen), 0);
	ck_assert_int_eq(out[len], '\0'); /* always NUL-terminated */
	free(out);
}

static void
dec_bad(const char *b64, size_t len, const char *why)
{
	unsigned char *out = (unsigned char *)"x";
	size_t outlen = 99;
	char err[160] = "";

	ck_assert_int_eq(
	    az_sasl_b64_decode(b64, len, &out, &outlen, err, sizeof(err)), -1);
	ck_assert_ptr_null(out);
	ck_assert_uint_eq(outlen, 0);
	ck_assert_msg(strstr(err, why) != NULL,
	    "\"%s\": got \"%s\", want \"%s\"", b64, err, why);
}

START_TEST(test_b64_rfc4648_vectors)
{
	dec_ok("", "", 0);
	dec_ok("Zg==", "f", 1);
	dec_ok("Zm8=", "fo", 2);
	dec_ok("Zm9v", "foo", 3);
	dec_ok("Zm9vYg==", "foob", 4);
	dec_ok("Zm9vYmE=", "fooba", 5);
	dec_ok("Zm9vYmFy", "foobar", 6);
	dec_ok("AGFsaWNlAGFsaWNlLXB3", "\0alice\0alice-pw", 15);
	dec_ok("+/+/", "\xfb\xff\xbf", 3);
}
END_TEST

START_TEST(test_b64_strict)
{
	dec_bad("Zg=", 3, "not a multiple of 4");
	dec_bad("Zm9", 3, "not a multiple of 4");
	dec_bad("Zg", 2, "not a multiple of 4");
	dec_bad("Zm 9", 4, "whitespace at offset 2");
	dec_bad("Zm9v\nYmFy", 9, "not a multiple of 4");
	dec_bad("Zm9v\r\nYm", 8, "whitespace at offset 4");
	dec_bad("Zm9vYmF\t", 8, "whitespace at offset 7");
	dec_bad("Zm9-", 4, "invalid base64 character 0x2d at offset 3");
	dec_bad("Zm9_", 4, "invalid base64 character 0x5f");
	dec_bad("Zm\x00v", 4, "invalid base64 character 0x00 at offset 2");
	dec_bad("Zm9v\xc3\xa9==", 8, "invalid base64 character 0xc3");
	dec_bad("Z===", 4, "padding '=' at offset 1");
	dec_bad("Zg==Zm9v", 8, "padding '=' at offset 2");
	dec_bad("Zm=v", 4, "padding '=' at offset 2");
	dec_bad("====", 4, "padding '=' at offset 0");
	/* Non-canonical: the unused bits must be zero ("Zh==" is 'f'+1). */
	dec_bad("Zh==", 4, "non-canonical");
	dec_bad("Zm9=", 4, "non-canonical");
}
END_TEST

START_TEST(test_b64_encode_roundtrip)
{
	unsigned char buf[300];
	size_t n, i;

	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 37 + 11);
	for (n = 0; n < sizeof(buf); n++) {
		char *b64 = az_sasl_b64_encode(buf, n);
		unsigned char *back = NULL, cyrus[512];
		size_t len = 0;
		unsigned clen = 0;
		char err[160];

		ck_assert_ptr_nonnull(b64);
		ck_assert_uint_eq(strlen(b64), (n + 2) / 3 * 4);
		ck_assert_int_eq(az_sasl_b64_decode(b64, strlen(b64), &back,
		                     &len, err, sizeof(err)),
		    0);
		ck_assert_uint_eq(len, n);
		ck_assert_int_eq(memcmp(back, buf, n), 0);
		/* Cyrus agrees with every encoding we produce. */
		ck_assert_int_eq(sasl_decode64(b64, (unsigned)strlen(b64),
		                     (char *)cyrus, sizeof(cyrus), &clen),
		    SASL_OK);
		ck_assert_uint_eq(clen, n);
		ck_assert_int_eq(memcmp(cyrus, buf, n), 0);
		free(back);
		free(b64);
	}
	{
		char *e = az_sasl_b64_encode((const unsigned char *)"", 0);

		ck_assert_str_eq(e, "");
		free(e);
	}
}
END_TEST

/* ---- JSON params ------------------------------------------------------ */

static json_t *
js(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, JSON_ALLOW_NUL, &e);

	ck_assert_msg(j != NULL, "bad test JSON %s: %s", text, e.text);
	return j;
}

START_TEST(test_parse_start)
{
	const char *mech;
	unsigned char *ini;
	size_t len;
	int has;
	char err[200];
	json_t *p;

	/* Absent: no initial response. */
	p = js("{\"mechanism\":\"PLAIN\"}");
	ck_assert_int_eq(
	    az_sasl_parse_start(p, &mech, &ini, &len, &has, err, sizeof(err)),
	    0);
	ck_assert_str_eq(mech, "PLAIN");
	ck_assert_int_eq(has, 0);
	ck_assert_ptr_null(ini);
	json_decref(p);

	/* null: no initial response either. */
	p = js("{\"mechanism\":\"EXTERNAL\",\"initial\":null}");
	ck_assert_int_eq(
	    az_sasl_parse_start(p, &mech, &ini, &len, &has, err, sizeof(err)),
	    0);
	ck_assert_int_eq(has, 0);
	ck_assert_ptr_null(ini);
	json_decref(p);

	/* "": an EMPTY initial response, which is not the same. */
	p = js("{\"mechanism\":\"EXTERNAL\",\"initial\":\"\"}");
	ck_assert_int_eq(
	    az_sasl_parse_start(p, &mech, &ini, &len, &has, err, sizeof(err)),
	    0);
	ck_assert_int_eq(has, 1);
	ck_assert_uint_eq(len, 0);
	ck_assert_ptr_nonnull(ini);
	free(ini);
	json_decref(p);

	p = js("{\"mechanism\":\"PLAIN\",\"initial\":\"AGFsaWNlAGFsaWNlLXB3\","
	       "\"extra\":1}");
	ck_assert_int_eq(
	    az_sasl_parse_start(p, &mech, &ini, &len, &has, err, sizeof(err)),
	    0);
	ck_assert_int_eq(has, 1);
	ck_assert_uint_eq(len, 15);
	ck_assert_int_eq(memcmp(ini, "\0alice\0alice-pw", 15), 0);
	free(ini);
	json_decref(p);
}
END_TEST

static void
start_bad(const char *text, const char *why)
{
	const char *mech = "x";
	unsigned char *ini = (unsigned char *)"x";
	size_t len = 7;
	int has = 7;
	char err[200] = "";
	json_t *p = js(text);

	ck_assert_int_eq(
	    az_sasl_parse_start(p, &mech, &ini, &len, &has, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_null(ini);
	ck_assert_int_eq(has, 0);
	ck_assert_msg(strstr(err, why) != NULL, "%s: got \"%s\", want \"%s\"",
	    text, err, why);
	json_decref(p);
}

START_TEST(test_parse_start_bad)
{
	start_bad("[]", "must be an object");
	start_bad("{}", "\"mechanism\" (string) is required");
	start_bad("{\"mechanism\":7}", "\"mechanism\" (string) is required");
	start_bad("{\"mechanism\":\"\"}", "not a SASL mechanism name");
	start_bad("{\"mechanism\":\"PL AIN\"}", "not a SASL mechanism name");
	start_bad(
	    "{\"mechanism\":\"PLAIN\\u0000X\"}", "not a SASL mechanism name");
	start_bad("{\"mechanism\":\"ABCDEFGHIJKLMNOPQRSTU\"}",
	    "not a SASL mechanism name");
	start_bad("{\"mechanism\":\"PLAIN\",\"initial\":5}",
	    "\"initial\" must be a base64 string");
	start_bad("{\"mechanism\":\"PLAIN\",\"initial\":false}",
	    "\"initial\" must be a base64 string");
	start_bad("{\"mechanism\":\"PLAIN\",\"initial\":\"AGFs aWN\"}",
	    "\"initial\": whitespace at offset 4");
	start_bad("{\"mechanism\":\"PLAIN\",\"initial\":\"AGF\"}",
	    "\"initial\": base64 length 3 is not a multiple of 4");
	start_bad("{\"mechanism\":\"PLAIN\",\"initial\":\"AG\\u0000s\"}",
	    "invalid base64 character 0x00");
}
END_TEST

START_TEST(test_parse_too_long)
{
	size_t n = AZ_SASL_MAX_B64 + 4;
	char *text = NULL;
	const char *mech;
	unsigned char *buf;
	size_t len;
	int has;
	char err[200] = "";
	json_t *p;

	/* Build the long string directly. */
	text = malloc(n + 1);
	ck_assert_ptr_nonnull(text);
	memset(text, 'A', n);
	text[n] = '\0';
	p = json_pack("{s:s, s:s}", "mechanism", "PLAIN", "initial", text);
	ck_assert_int_eq(
	    az_sasl_parse_start(p, &mech, &buf, &len, &has, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(err, "too long"));
	json_decref(p);
	/* Exactly at the limit is fine. */
	text[AZ_SASL_MAX_B64] = '\0';
	p = json_pack("{s:s}", "response", text);
	ck_assert_int_eq(
	    az_sasl_parse_step(p, &buf, &len, err, sizeof(err)), 0);
	ck_assert_uint_eq(len, AZ_SASL_MAX_B64 / 4 * 3);
	ck_assert_uint_ge(len, AZ_SASL_MAX_PAYLOAD);
	free(buf);
	json_decref(p);
	free(text);
}
END_TEST

START_TEST(test_parse_step)
{
	unsigned char *r = NULL;
	size_t len = 9;
	char err[200] = "";
	json_t *p;

	p = js("{\"response\":\"\"}");
	ck_assert_int_eq(az_sasl_parse_step(p, &r, &len, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(len, 0);
	free(r);
	json_decref(p);

	p = js("{\"response\":\"Zm9vYmFy\"}");
	ck_assert_int_eq(az_sasl_parse_step(p, &r, &len, err, sizeof(err)), 0);
	ck_assert_uint_eq(len, 6);
	ck_assert_str_eq((char *)r, "foobar");
	free(r);
	json_decref(p);

	p = js("{}");
	ck_assert_int_eq(az_sasl_parse_step(p, &r, &len, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(err, "\"response\""));
	ck_assert_ptr_null(r);
	json_decref(p);

	p = js("{\"response\":null}");
	ck_assert_int_eq(az_sasl_parse_step(p, &r, &len, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(err, "must be a base64 string"));
	json_decref(p);

	p = js("{\"response\":\"Zm9v=\"}");
	ck_assert_int_eq(az_sasl_parse_step(p, &r, &len, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(err, "\"response\": base64 length 5"));
	json_decref(p);

	ck_assert_int_eq(az_sasl_parse_step(NULL, &r, &len, err, sizeof(err)),
	    RP_ERR_INVALID_PARAMS);
}
END_TEST

START_TEST(test_result_json)
{
	char *groups[] = {"CORP\\helpdesk", "CORP\\staff"};
	struct az_entry e = {.dn = "uid=alice,ou=People,dc=corp,dc=example",
	    .account = "CORP\\alice",
	    .domain = "CORP",
	    .groups = groups,
	    .ngroups = 2};
	json_t *j;
	char *s;

	j = az_sasl_result_json(AZ_SASL_CONTINUE, NULL, 0, NULL);
	s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	ck_assert_str_eq(s, "{\"challenge\":\"\",\"status\":\"continue\"}");
	free(s);
	json_decref(j);

	j = az_sasl_result_json(
	    AZ_SASL_CONTINUE, (const unsigned char *)"foob", 4, NULL);
	s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	ck_assert_str_eq(
	    s, "{\"challenge\":\"Zm9vYg==\",\"status\":\"continue\"}");
	free(s);
	json_decref(j);

	j = az_sasl_result_json(AZ_SASL_OK, NULL, 0, &e);
	s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	ck_assert_str_eq(s,
	    "{\"account\":\"CORP\\\\alice\",\"groups\":"
	    "[\"CORP\\\\helpdesk\",\"CORP\\\\staff\"],"
	    "\"status\":\"ok\"}");
	free(s);
	json_decref(j);

	ck_assert_ptr_null(az_sasl_result_json(AZ_SASL_OK, NULL, 0, NULL));
	ck_assert_ptr_null(az_sasl_result_json(AZ_SASL_FAIL, NULL, 0, &e));
}
END_TEST

/* ---- configuration and sessions (no directory) ------------------------ */

/* Cyrus is set up once per process: the plugin-directory tests need
 * Check's default fork mode (a fresh process per test). */
static int
forking(void)
{
	const char *f = getenv("CK_FORK");

	return f == NULL || strcmp(f, "no") != 0;
}

/* The system plugin directory: next to the libsasl2 we run with. */
static void
system_plugin_dir(char *buf, size_t len)
{
	Dl_info info;
	const char *slash;

	ck_assert_int_ne(
	    dladdr((void *)(uintptr_t)&sasl_server_init, &info), 0);
	slash = strrchr(info.dli_fname, '/');
	ck_assert_ptr_nonnull(slash);
	snprintf(buf, len, "%.*s/sasl2", (int)(slash - info.dli_fname),
	    info.dli_fname);
}

static struct az_sasl *
sasl_with(const char *mechs)
{
	struct az_sasl_config c = {
	    .mechanisms = mechs, .service = "rabroker", .max_steps = 3};
	char err[256] = "";
	struct az_sasl *s = az_sasl_new(NULL, &c, err, sizeof(err));

	ck_assert_msg(s != NULL, "az_sasl_new(%s): %s", mechs, err);
	return s;
}

static void
config_bad(const char *mechs, const char *why)
{
	struct az_sasl_config c = {.mechanisms = mechs};
	char err[256] = "";

	ck_assert_ptr_null(az_sasl_new(NULL, &c, err, sizeof(err)));
	ck_assert_msg(strstr(err, why) != NULL, "%s: got \"%s\", want \"%s\"",
	    mechs ? mechs : "(null)", err, why);
}

START_TEST(test_config)
{
	struct az_sasl *s;
	struct az_sasl_sess *ss;
	char *m;

	config_bad(NULL, "no SASL mechanism configured");
	config_bad("", "no SASL mechanism configured");
	config_bad("  ", "no SASL mechanism configured");
	config_bad("PLAIN FOO", "SASL mechanism FOO is not supported");
	config_bad("PLAIN ANONYMOUS", "ANONYMOUS is not supported");
	config_bad("GSSAPI", "GSSAPI is not supported");
	config_bad("PLAIN;EXTERNAL", "invalid SASL mechanism name");

	/* Case, commas, duplicates and order are normalised. */
	s = sasl_with("external, plain  PLAIN");
	ss = az_sasl_sess_new(s, "alice", 256, NULL, NULL);
	ck_assert_ptr_nonnull(ss);
	m = az_sasl_mechanisms(ss);
	ck_assert_str_eq(m, "EXTERNAL PLAIN");
	free(m);
	az_sasl_sess_free(ss);
	az_sasl_free(s);
}
END_TEST

static void
expect_mechs(
    struct az_sasl *s, const char *peer, unsigned ssf, const char *want)
{
	struct az_sasl_sess *ss = az_sasl_sess_new(s, peer, ssf, NULL, NULL);
	char *m;

	ck_assert_ptr_nonnull(ss);
	m = az_sasl_mechanisms(ss);
	ck_assert_msg(strcmp(m, want) == 0, "peer %s ssf %u: \"%s\" != \"%s\"",
	    peer ? peer : "-", ssf, m, want);
	free(m);
	az_sasl_sess_free(ss);
}

START_TEST(test_mechanisms_per_session)
{
	struct az_sasl *s = sasl_with("PLAIN EXTERNAL");
	struct az_sasl_sess *ss;
	json_t *a;
	char *t;

	expect_mechs(s, "alice", 256, "PLAIN EXTERNAL");
	expect_mechs(s, NULL, 256, "PLAIN");
	expect_mechs(s, "", 128, "PLAIN"); /* empty id = no certificate */
	expect_mechs(s, "alice", 0, "EXTERNAL");
	expect_mechs(s, NULL, 0, "");

	ss = az_sasl_sess_new(s, "alice", 256, "127.0.0.1;6000", "127.0.0.1;5");
	a = az_sasl_mechanisms_json(ss);
	t = json_dumps(a, JSON_COMPACT);
	ck_assert_str_eq(t, "[\"PLAIN\",\"EXTERNAL\"]");
	free(t);
	json_decref(a);
	az_sasl_sess_free(ss);

	ss = az_sasl_sess_new(s, NULL, 0, NULL, NULL);
	a = az_sasl_mechanisms_json(ss);
	ck_assert_uint_eq(json_array_size(a), 0);
	json_decref(a);
	az_sasl_sess_free(ss);
	az_sasl_free(s);

	s = sasl_with("PLAIN");
	expect_mechs(s, "alice", 256, "PLAIN");
	az_sasl_free(s);
}
END_TEST

static int cb_calls;

static void
never_cb(enum az_sasl_status st, int code, const unsigned char *ch,
    size_t chlen, const struct az_entry *user, const char *msg, void *arg)
{
	cb_calls++;
}

static int
start(struct az_sasl_sess *ss, const char *mech, const char *in, size_t len,
    int has)
{
	return az_sasl_start(
	    ss, mech, (const unsigned char *)in, len, has, never_cb, NULL);
}

START_TEST(test_start_refusals)
{
	struct az_sasl *s = sasl_with("PLAIN EXTERNAL");
	struct az_sasl_sess *tls = az_sasl_sess_new(s, NULL, 256, NULL, NULL);
	struct az_sasl_sess *clear = az_sasl_sess_new(s, NULL, 0, NULL, NULL);
	struct az_sasl_sess *cert =
	    az_sasl_sess_new(s, "alice", 256, NULL, NULL);
	unsigned char big[AZ_SASL_MAX_PAYLOAD + 1];

	cb_calls = 0;
	ck_assert_int_eq(start(tls, "FOO", "", 0, 0), RP_ERR_INVALID_PARAMS);
	ck_assert_str_eq(az_sasl_sess_errmsg(tls),
	    "unknown mechanism \"FOO\" (offered: PLAIN)");
	ck_assert_int_eq(
	    start(tls, "DIGEST-MD5", NULL, 0, 0), RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(az_sasl_sess_errmsg(tls), "unknown"));
	ck_assert_int_eq(
	    start(tls, "bad name", NULL, 0, 0), RP_ERR_INVALID_PARAMS);
	ck_assert_int_eq(start(tls, NULL, NULL, 0, 0), RP_ERR_INVALID_PARAMS);

	/* No TLS: PLAIN is not offered and refused. */
	ck_assert_int_eq(start(clear, "PLAIN", "\0alice\0alice-pw", 15, 1),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_str_eq(az_sasl_sess_errmsg(clear),
	    "mechanism PLAIN is only offered inside TLS");
	/* No certificate: EXTERNAL is not offered and refused. */
	ck_assert_int_eq(
	    start(tls, "EXTERNAL", "", 0, 1), RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(
	    az_sasl_sess_errmsg(tls), "verified TLS client certificate"));

	/* Too large. */
	memset(big, 'a', sizeof(big));
	ck_assert_int_eq(start(tls, "PLAIN", (char *)big, sizeof(big), 1),
	    RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(az_sasl_sess_errmsg(tls), "too large"));

	/* Step without start. */
	ck_assert_int_eq(
	    az_sasl_step(tls, (const unsigned char *)"x", 1, never_cb, NULL),
	    RP_ERR_WRONG_STATE);
	ck_assert_ptr_nonnull(strstr(az_sasl_sess_errmsg(tls), "auth.start"));
	ck_assert_int_eq(cb_calls, 0);

	az_sasl_sess_free(tls);
	az_sasl_sess_free(clear);
	az_sasl_sess_free(cert);
	az_sasl_free(s);
}
END_TEST

/*
 * Refused before the directory: with no directory at all, a well-formed
 * request would get directory_unavailable; these get auth_failed, with the
 * generic message for the peer.
 */
START_TEST(test_refused_before_directory)
{
	struct az_sasl *s = sasl_with("PLAIN EXTERNAL");
	struct az_sasl_sess *ss = az_sasl_sess_new(s, "alice", 256, NULL, NULL);
	static const struct {
		const char *in;
		size_t len;
	} bad[] = {
	    {"\0alice\0", 7},              /* empty password */
	    {"\0alice\0pw\0x", 11},        /* NUL in password */
	    {"\0alice\0\0", 8},            /* NUL only */
	    {"bob\0alice\0alice-pw", 18},  /* proxy attempt */
	    {"alic\0alice\0alice-pw", 19}, /* proxy attempt */
	    {"\0\0alice-pw", 10},          /* empty authcid */
	    {"alice-pw", 8},               /* no separators */
	    {"\0alice", 6},                /* no password field */
	    {"", 0},                       /* empty response */
	};
	size_t i;

	cb_calls = 0;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(start(ss, "PLAIN", bad[i].in, bad[i].len, 1) ==
		        RP_ERR_AUTH_FAILED,
		    "case %zu not refused", i);
		ck_assert_str_eq(
		    az_sasl_sess_errmsg(ss), "authentication failed");
	}
	/* The same shapes as a step after an empty challenge. */
	ck_assert_int_eq(az_sasl_step(ss, (const unsigned char *)"\0alice\0", 7,
	                     never_cb, NULL),
	    RP_ERR_WRONG_STATE); /* the failed start ended the exchange */

	/* EXTERNAL asking for another identity. */
	ck_assert_int_eq(
	    start(ss, "EXTERNAL", "bob", 3, 1), RP_ERR_AUTH_FAILED);
	ck_assert_int_eq(
	    start(ss, "EXTERNAL", "alice\0x", 7, 1), RP_ERR_AUTH_FAILED);

	/* Well-formed: it would go to the directory, which is absent. */
	ck_assert_int_eq(start(ss, "PLAIN", "\0alice\0alice-pw", 15, 1),
	    RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_str_eq(az_sasl_sess_errmsg(ss), "directory unavailable");
	ck_assert_int_eq(start(ss, "PLAIN", "alice\0alice\0alice-pw", 20, 1),
	    RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_int_eq(
	    start(ss, "plain", NULL, 0, 0), RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_int_eq(
	    start(ss, "EXTERNAL", "alice", 5, 1), RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_int_eq(
	    start(ss, "EXTERNAL", "", 0, 1), RP_ERR_DIRECTORY_UNAVAILABLE);
	ck_assert_int_eq(cb_calls, 0);
	ck_assert_ptr_null(az_sasl_sess_user(ss));

	az_sasl_sess_free(ss);
	az_sasl_free(s);
}
END_TEST

/* Sessions may outlive the az_sasl (reference counted). */
START_TEST(test_free_order)
{
	struct az_sasl *s = sasl_with("PLAIN");
	struct az_sasl_sess *ss = az_sasl_sess_new(s, NULL, 256, NULL, NULL);
	char *m;

	az_sasl_free(s);
	m = az_sasl_mechanisms(ss);
	ck_assert_str_eq(m, "PLAIN");
	free(m);
	ck_assert_int_eq(
	    start(ss, "PLAIN", "\0a\0b", 4, 1), RP_ERR_DIRECTORY_UNAVAILABLE);
	az_sasl_sess_free(ss);
	az_sasl_sess_free(NULL);
	az_sasl_free(NULL);
}
END_TEST

/*
 * Only the plugins we use are loaded, from the configured directory, and
 * no configuration file changes anything: a plugin directory holding the
 * ANONYMOUS and LOGIN plugins and a rabroker.conf asking for them (and for
 * a password check that always succeeds) changes nothing; $SASL_PATH and
 * $SASL_CONF_PATH are ignored too.
 */
START_TEST(test_no_config_files)
{
	char dir[] = "/tmp/test_sasl.XXXXXX";
	char path[PATH_MAX], target[PATH_MAX + 64], sys[PATH_MAX];
	const char *plugins[] = {
	    "libplain.so", "libanonymous.so", "liblogin.so", "libsasldb.so"};
	struct az_sasl_config c = {.mechanisms = "PLAIN EXTERNAL"};
	struct az_sasl *s;
	struct az_sasl_sess *ss;
	char err[256] = "", *m;
	const char **all;
	FILE *f;
	size_t i;

	if (!forking())
		return;
	system_plugin_dir(sys, sizeof(sys));
	ck_assert_ptr_nonnull(mkdtemp(dir));
	for (i = 0; i < sizeof(plugins) / sizeof(plugins[0]); i++) {
		snprintf(target, sizeof(target), "%s/%s", sys, plugins[i]);
		snprintf(path, sizeof(path), "%s/%s", dir, plugins[i]);
		ck_assert_int_eq(symlink(target, path), 0);
	}
	snprintf(path, sizeof(path), "%s/rabroker.conf", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
	    "mech_list: ANONYMOUS LOGIN PLAIN EXTERNAL\n"
	    "pwcheck_method: alwaystrue\n");
	fclose(f);
	setenv("SASL_PATH", dir, 1);
	setenv("SASL_CONF_PATH", dir, 1);

	c.plugin_dir = dir;
	s = az_sasl_new(NULL, &c, err, sizeof(err));
	ck_assert_msg(s != NULL, "%s", err);
	/* Loaded into Cyrus at all: only PLAIN (and the built-in EXTERNAL). */
	for (all = sasl_global_listmech(); all != NULL && *all != NULL; all++)
		ck_assert_msg(
		    strcmp(*all, "PLAIN") == 0 || strcmp(*all, "EXTERNAL") == 0,
		    "plugin for %s loaded", *all);
	ss = az_sasl_sess_new(s, "alice", 256, NULL, NULL);
	m = az_sasl_mechanisms(ss);
	ck_assert_str_eq(m, "PLAIN EXTERNAL");
	free(m);
	ck_assert_int_eq(
	    start(ss, "ANONYMOUS", "", 0, 1), RP_ERR_INVALID_PARAMS);
	ck_assert_int_eq(start(ss, "LOGIN", NULL, 0, 0), RP_ERR_INVALID_PARAMS);
	az_sasl_sess_free(ss);
	az_sasl_free(s);

	for (i = 0; i < sizeof(plugins) / sizeof(plugins[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, plugins[i]);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/rabroker.conf", dir);
	unlink(path);
	rmdir(dir);
}
END_TEST

/* A plugin directory without libplain.so: PLAIN is reported missing. */
START_TEST(test_missing_plugin)
{
	char dir[] = "/tmp/test_sasl.XXXXXX";
	struct az_sasl_config c = {.mechanisms = "PLAIN EXTERNAL"};
	char err[256] = "";

	if (!forking())
		return;
	ck_assert_ptr_nonnull(mkdtemp(dir));
	c.plugin_dir = dir;
	ck_assert_ptr_null(az_sasl_new(NULL, &c, err, sizeof(err)));
	ck_assert_msg(
	    strstr(err, "SASL mechanism PLAIN is not available") != NULL, "%s",
	    err);
	/* EXTERNAL is built into libsasl2. */
	c.mechanisms = "EXTERNAL";
	{
		struct az_sasl *s = az_sasl_new(NULL, &c, err, sizeof(err));

		ck_assert_msg(s != NULL, "%s", err);
		az_sasl_free(s);
	}
	/* Plugins are process-wide: another directory is refused. */
	c.plugin_dir = "/nonexistent/sasl2";
	ck_assert_ptr_null(az_sasl_new(NULL, &c, err, sizeof(err)));
	ck_assert_msg(strstr(err, "already loaded from") != NULL, "%s", err);
	rmdir(dir);
}
END_TEST

static Suite *
sasl_suite(void)
{
	Suite *s = suite_create("sasl");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_b64_rfc4648_vectors);
	tcase_add_test(tc, test_b64_strict);
	tcase_add_test(tc, test_b64_encode_roundtrip);
	tcase_add_test(tc, test_parse_start);
	tcase_add_test(tc, test_parse_start_bad);
	tcase_add_test(tc, test_parse_too_long);
	tcase_add_test(tc, test_parse_step);
	tcase_add_test(tc, test_result_json);
	tcase_add_test(tc, test_config);
	tcase_add_test(tc, test_mechanisms_per_session);
	tcase_add_test(tc, test_start_refusals);
	tcase_add_test(tc, test_refused_before_directory);
	tcase_add_test(tc, test_free_order);
	tcase_add_test(tc, test_no_config_files);
	tcase_add_test(tc, test_missing_plugin);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(sasl_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
