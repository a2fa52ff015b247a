/* test_names.c - name parsing, RFC 4515 escaping, filters and DN helpers. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "az_dir.h"
#include "az_names.h"
#include "rp_error.h"

static struct az_domain doms[] = {
    {"CORP", "corp.example", "dc=corp,dc=example"},
    {"LAB", "lab.corp.example", "ou=Lab, dc=corp, dc=example"},
};
#define NDOMS 2

static int
parse(const char *s, size_t len, struct az_name *n, char *msg)
{
	return az_name_parse(s, len, doms, NDOMS, "CORP", n, msg, 200);
}

START_TEST(test_forms_map_to_same_user)
{
	struct az_name a, b, c, d;
	char msg[200];

	ck_assert_int_eq(parse("CORP\\alice", 10, &a, msg), 0);
	ck_assert_int_eq(parse("alice@corp.example", 18, &b, msg), 0);
	ck_assert_int_eq(parse("alice", 5, &c, msg), 0);
	ck_assert_int_eq(parse("corp\\alice", 10, &d, msg), 0);
	ck_assert_int_eq(a.form, AZ_NAME_NETBIOS);
	ck_assert_int_eq(b.form, AZ_NAME_UPN);
	ck_assert_int_eq(c.form, AZ_NAME_BARE);
	ck_assert_uint_eq(a.domain, 0);
	ck_assert_uint_eq(b.domain, 0);
	ck_assert_uint_eq(c.domain, 0);
	ck_assert_uint_eq(d.domain, 0);
	ck_assert_str_eq(a.user, "alice");
	ck_assert_str_eq(b.user, "alice");
	ck_assert_str_eq(c.user, "alice");
	ck_assert_str_eq(b.upn, "alice@corp.example");
}
END_TEST

START_TEST(test_realm_and_netbios_case_insensitive)
{
	struct az_name n;
	char msg[200];

	ck_assert_int_eq(parse("bob@LAB.Corp.Example", 20, &n, msg), 0);
	ck_assert_uint_eq(n.domain, 1);
	ck_assert_int_eq(parse("lab\\bob", 7, &n, msg), 0);
	ck_assert_uint_eq(n.domain, 1);
	ck_assert_str_eq(n.user, "bob");
}
END_TEST

struct bad {
	const char *s;
	size_t len; /* 0: strlen */
	int code;
	const char *words; /* in the message */
};

static const struct bad bads[] = {
    {"", 0, RP_ERR_INVALID_PARAMS, "empty"},
    {"\\alice", 0, RP_ERR_INVALID_PARAMS, "empty"},
    {"CORP\\", 0, RP_ERR_INVALID_PARAMS, "empty"},
    {"@corp.example", 0, RP_ERR_INVALID_PARAMS, "empty"},
    {"alice@", 0, RP_ERR_INVALID_PARAMS, "empty"},
    {"a@b@corp.example", 0, RP_ERR_INVALID_PARAMS, "more than one"},
    {"CORP\\alice@corp.example", 0, RP_ERR_INVALID_PARAMS, "both"},
    {"ali\0ce", 6, RP_ERR_INVALID_PARAMS, "NUL"},
    {"alice\0", 6, RP_ERR_INVALID_PARAMS, "NUL"},
    {"ali\nce", 0, RP_ERR_INVALID_PARAMS, "control"},
    {"ali\x7f", 0, RP_ERR_INVALID_PARAMS, "control"},
    {"ali\tce", 0, RP_ERR_INVALID_PARAMS, "control"},
    {"NOPE\\alice", 0, RP_ERR_NOT_FOUND, "unknown domain"},
    {"alice@nope.example", 0, RP_ERR_NOT_FOUND, "unknown realm"},
    {"back\\slash", 0, RP_ERR_NOT_FOUND, "unknown domain \"back\""},
};

START_TEST(test_refused)
{
	const struct bad *b = &bads[_i];
	struct az_name n;
	char msg[200] = "";
	size_t len = b->len ? b->len : strlen(b->s);

	ck_assert_int_eq(parse(b->s, len, &n, msg), b->code);
	ck_assert_msg(
	    strstr(msg, b->words) != NULL, "case %d: msg \"%s\"", _i, msg);
}
END_TEST

START_TEST(test_length_limit)
{
	char buf[AZ_NAME_MAX + 2];
	struct az_name n;
	char msg[200];

	memset(buf, 'a', sizeof(buf));
	ck_assert_int_eq(parse(buf, AZ_NAME_MAX, &n, msg), 0);
	ck_assert_uint_eq(strlen(n.user), AZ_NAME_MAX);
	ck_assert_int_eq(
	    parse(buf, AZ_NAME_MAX + 1, &n, msg), RP_ERR_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(msg, "too long"));
}
END_TEST

START_TEST(test_no_default_domain)
{
	struct az_name n;
	char msg[200];

	ck_assert_int_eq(
	    az_name_parse("alice", 5, doms, NDOMS, NULL, &n, msg, sizeof(msg)),
	    RP_ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(msg, "default domain"));
}
END_TEST

START_TEST(test_special_user_parts)
{
	struct az_name n;
	char msg[200];

	/* the first backslash separates; the rest is the user, literally */
	ck_assert_int_eq(parse("CORP\\back\\slash", 15, &n, msg), 0);
	ck_assert_str_eq(n.user, "back\\slash");
	ck_assert_int_eq(parse("st*r", 4, &n, msg), 0);
	ck_assert_str_eq(n.user, "st*r");
	ck_assert_int_eq(parse("pa(re)n@corp.example", 20, &n, msg), 0);
	ck_assert_str_eq(n.user, "pa(re)n");
	/* UTF-8 is fine */
	ck_assert_int_eq(parse("J\xc3\xb6rg", 5, &n, msg), 0);
}
END_TEST

START_TEST(test_escape)
{
	char *s;

	s = az_filter_escape("a*b(c)d\\e", 9);
	ck_assert_str_eq(s, "a\\2ab\\28c\\29d\\5ce");
	free(s);
	s = az_filter_escape("x\0y", 3);
	ck_assert_str_eq(s, "x\\00y");
	free(s);
	s = az_filter_escape("", 0);
	ck_assert_str_eq(s, "");
	free(s);
	s = az_filter_escape("J\xc3\xb6rg =,+<>#;\"", 14);
	ck_assert_str_eq(s, "J\xc3\xb6rg =,+<>#;\"");
	free(s);
	s = az_filter_escape("***", 3);
	ck_assert_str_eq(s, "\\2a\\2a\\2a");
	free(s);
}
END_TEST

START_TEST(test_filter_build)
{
	char *f;
	char msg[200];

	f = az_filter_build("(&(objectClass=inetOrgPerson)(uid=%s))", "a*", 2);
	ck_assert_str_eq(f, "(&(objectClass=inetOrgPerson)(uid=a\\2a))");
	free(f);
	f = az_filter_build("(uid=%s)", "x)(uid=*", 8);
	ck_assert_str_eq(f, "(uid=x\\29\\28uid=\\2a)");
	free(f);
	ck_assert_int_eq(az_filter_check("(uid=%s)", msg, sizeof(msg)), 0);
	ck_assert_int_eq(az_filter_check("(uid=x)", msg, sizeof(msg)), -1);
	ck_assert_int_eq(
	    az_filter_check("(|(uid=%s)(cn=%s))", msg, sizeof(msg)), -1);
	ck_assert_int_eq(az_filter_check("(uid=%d)", msg, sizeof(msg)), -1);
	ck_assert_int_eq(az_filter_check("(uid=%s%%)", msg, sizeof(msg)), -1);
	ck_assert_int_eq(az_filter_check("uid=%s", msg, sizeof(msg)), -1);
	ck_assert_int_eq(az_filter_check("", msg, sizeof(msg)), -1);
	ck_assert_ptr_null(az_filter_build("(uid=%s)(x=%s)", "a", 1));
}
END_TEST

START_TEST(test_dn_parent)
{
	ck_assert_str_eq(az_dn_parent("uid=alice,ou=People,dc=corp,dc=example"),
	    "ou=People,dc=corp,dc=example");
	ck_assert_str_eq(az_dn_parent("cn=a\\,b,dc=x"), "dc=x");
	ck_assert_str_eq(az_dn_parent("cn=a\\5c,dc=x"), "dc=x");
	ck_assert_str_eq(az_dn_parent("cn=a\\\\,dc=x"), "dc=x");
	ck_assert_str_eq(az_dn_parent("cn=a, dc=x"), "dc=x");
	ck_assert_ptr_null(az_dn_parent("dc=example"));
	ck_assert_ptr_null(az_dn_parent(""));
	ck_assert_ptr_null(az_dn_parent("cn=a\\,b"));
}
END_TEST

START_TEST(test_dn_normalize)
{
	char *n;

	n = az_dn_normalize("UID=Alice, OU=People ,DC=Corp,DC=Example");
	ck_assert_str_eq(n, "uid=alice,ou=people,dc=corp,dc=example");
	free(n);
	n = az_dn_normalize("uid=back\\\\slash,dc=x");
	ck_assert_str_eq(n, "uid=back\\5cslash,dc=x");
	free(n);
	n = az_dn_normalize("uid=back\\5Cslash,dc=x");
	ck_assert_str_eq(n, "uid=back\\5cslash,dc=x");
	free(n);
	n = az_dn_normalize("cn=\\41b\\,c,dc=x");
	ck_assert_str_eq(n, "cn=ab\\2cc,dc=x");
	free(n);
	ck_assert_ptr_null(az_dn_normalize("cn=bad\\"));
}
END_TEST

START_TEST(test_dn_within)
{
	ck_assert_int_eq(az_dn_within("uid=alice,ou=People,dc=corp,dc=example",
	                     "dc=corp,dc=example"),
	    1);
	ck_assert_int_eq(
	    az_dn_within("dc=corp,dc=example", "DC=Corp, DC=Example"), 1);
	ck_assert_int_eq(az_dn_within("ou=x,dc=corp,dc=example",
	                     "ou=people,dc=corp,dc=example"),
	    0);
	/* RDN boundaries, not string suffixes */
	ck_assert_int_eq(az_dn_within("dc=xexample", "dc=example"), 0);
	ck_assert_int_eq(
	    az_dn_within("cn=a,dc=bcorp,dc=example", "dc=corp,dc=example"), 0);
	/* an escaped comma is not a boundary */
	ck_assert_int_eq(az_dn_within("cn=a\\,dc=example", "dc=example"), 0);
	ck_assert_int_eq(az_dn_within("dc=example", "cn=a,dc=example"), 0);
	ck_assert_int_eq(az_dn_within("cn=a,dc=example", ""), 1);
	ck_assert_int_eq(az_dn_within("cn=bad\\", "dc=example"), -1);
}
END_TEST

START_TEST(test_dn_first_rdn)
{
	char t[32], v[64];

	ck_assert_int_eq(az_dn_first_rdn("cn=helpdesk,ou=Groups,dc=x", t,
	                     sizeof(t), v, sizeof(v)),
	    0);
	ck_assert_str_eq(t, "cn");
	ck_assert_str_eq(v, "helpdesk");
	ck_assert_int_eq(az_dn_first_rdn("CN = a\\2cb\\5c ,dc=x", t, sizeof(t),
	                     v, sizeof(v)),
	    0);
	ck_assert_str_eq(t, "CN");
	ck_assert_str_eq(v, "a,b\\");
	ck_assert_int_eq(
	    az_dn_first_rdn("cn=a+sn=b,dc=x", t, sizeof(t), v, sizeof(v)), -1);
	ck_assert_int_eq(
	    az_dn_first_rdn("cn=,dc=x", t, sizeof(t), v, sizeof(v)), -1);
	ck_assert_int_eq(az_dn_first_rdn("cn=abcdef", t, sizeof(t), v, 4), -1);
}
END_TEST

START_TEST(test_dn_domain)
{
	ck_assert_int_eq(
	    az_dn_domain("cn=g,ou=Groups,dc=corp,dc=example", doms, NDOMS), 0);
	/* the longest base wins */
	ck_assert_int_eq(
	    az_dn_domain("cn=g,ou=lab,dc=corp,dc=example", doms, NDOMS), 1);
	ck_assert_int_eq(az_dn_domain("cn=g,dc=other", doms, NDOMS), -1);
}
END_TEST

static Suite *
names_suite(void)
{
	Suite *s = suite_create("names");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_forms_map_to_same_user);
	tcase_add_test(tc, test_realm_and_netbios_case_insensitive);
	tcase_add_loop_test(
	    tc, test_refused, 0, (int)(sizeof(bads) / sizeof(bads[0])));
	tcase_add_test(tc, test_length_limit);
	tcase_add_test(tc, test_no_default_domain);
	tcase_add_test(tc, test_special_user_parts);
	tcase_add_test(tc, test_escape);
	tcase_add_test(tc, test_filter_build);
	tcase_add_test(tc, test_dn_parent);
	tcase_add_test(tc, test_dn_normalize);
	tcase_add_test(tc, test_dn_within);
	tcase_add_test(tc, test_dn_first_rdn);
	tcase_add_test(tc, test_dn_domain);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(names_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
