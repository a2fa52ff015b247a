/*
 * az_names.h - account names, RFC 4515 filter escaping and DN helpers.
 *
 * Name forms (az_name_parse):
 *   DOMAIN\user   DOMAIN is a configured NetBIOS name (case-insensitive).
 *                 The first backslash separates; the user part is taken
 *                 literally after it (OpenLDAP uids may hold a backslash:
 *                 CORP\back\slash is user "back\slash").
 *   user@realm    realm is a configured realm (case-insensitive).
 *   user          the default domain.
 * Refused, with a message saying why: empty name or empty part, more than
 * one '@', '@' together with '\', a NUL byte, a control character
 * (0x00-0x1f, 0x7f), more than AZ_NAME_MAX bytes, an unknown domain.
 *
 * Pure functions, no I/O, thread-safe.
 */
#ifndef AZ_NAMES_H
#define AZ_NAMES_H

#include <stddef.h>

struct az_domain;

#define AZ_NAME_MAX 256

enum az_name_form {
	AZ_NAME_BARE = 1, /* user */
	AZ_NAME_NETBIOS,  /* DOMAIN\user */
	AZ_NAME_UPN,      /* user@realm */
};

struct az_name {
	enum az_name_form form;
	size_t domain;              /* index into the domains array */
	char user[AZ_NAME_MAX + 1]; /* the user part, as typed */
	char upn[AZ_NAME_MAX + 1];  /* "user@realm" as typed (UPN form only) */
};

/* Parses `len` bytes of `name` (NUL bytes inside are refused, not
 * truncated). Returns 0, RP_ERR_INVALID_PARAMS (malformed) or
 * RP_ERR_NOT_FOUND (unknown domain or realm, or no default domain for a
 * bare name); msg says why. */
int az_name_parse(const char *name, size_t len, const struct az_domain *domains,
    size_t ndomains, const char *default_domain, struct az_name *out, char *msg,
    size_t msglen);

/* Index of the domain whose NetBIOS name is `netbios` (case-insensitive),
 * or -1. */
int az_domain_find(
    const struct az_domain *domains, size_t ndomains, const char *netbios);

/* RFC 4515 value escaping: '*' '(' ')' '\' and NUL become \2a \28 \29 \5c
 * \00; every other byte is copied. Returns a malloc'd string, NULL on
 * allocation failure. */
char *az_filter_escape(const char *value, size_t len);

/* 0 if `tmpl` holds exactly one "%s" and no other '%'; else -1 and msg. */
int az_filter_check(const char *tmpl, char *msg, size_t msglen);
/* The template with "%s" replaced by the escaped value; malloc'd, NULL if
 * the template is invalid or on allocation failure. */
char *az_filter_build(const char *tmpl, const char *value, size_t len);

/* DN helpers (RFC 4514 strings). Attribute types and values compare
 * case-insensitively (ASCII), as the directory's caseIgnore names do. */

/* The parent of a DN: a pointer into `dn` just after the first unescaped
 * ',' (spaces skipped), or NULL for a single-RDN or empty DN. */
const char *az_dn_parent(const char *dn);
/* A canonical form for comparison: lower case, no spaces around ',', '+'
 * and '=', escapes rewritten as \xx (lower-case hex) for the characters
 * that need one and decoded for the rest ("\41" -> "a", "\\" -> "\5c").
 * malloc'd, NULL on allocation failure or a malformed escape. */
char *az_dn_normalize(const char *dn);
/* 1 if `dn` equals `base` or lies below it (on RDN boundaries: "dc=xample"
 * is not within "dc=example"), 0 if not; -1 on malformed input. */
int az_dn_within(const char *dn, const char *base);
/* The first RDN's attribute type and (unescaped) value. 0 or -1 (malformed,
 * multi-valued RDN, or too long for the buffers). */
int az_dn_first_rdn(
    const char *dn, char *type, size_t typelen, char *value, size_t valuelen);
/* Index of the configured domain whose base DN contains `dn` (the longest
 * base wins), or -1. */
int az_dn_domain(
    const char *dn, const struct az_domain *domains, size_t ndomains);

#endif
