/*
 * az_names.c - account name parsing, RFC 4515 filter escaping, RFC 4514 DN
 * helpers. Everything here is pure string work so that it can be unit
 * tested without a directory and fuzzed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "az_dir.h"
#include "az_names.h"
#include "rp_error.h"

static void setmsg(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
setmsg(char *msg, size_t msglen, const char *fmt, ...)
{
	va_list ap;

	if (msg == NULL || msglen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
}

int
az_domain_find(
    const struct az_domain *domains, size_t ndomains, const char *netbios)
{
	if (netbios == NULL)
		return -1;
	for (size_t i = 0; i < ndomains; i++)
		if (domains[i].netbios != NULL &&
		    strcasecmp(domains[i].netbios, netbios) == 0)
			return (int)i;
	return -1;
}

static int
domain_by_realm(
    const struct az_domain *domains, size_t ndomains, const char *realm)
{
	for (size_t i = 0; i < ndomains; i++)
		if (domains[i].realm != NULL &&
		    strcasecmp(domains[i].realm, realm) == 0)
			return (int)i;
	return -1;
}

int
az_name_parse(const char *name, size_t len, const struct az_domain *domains,
    size_t ndomains, const char *default_domain, struct az_name *out, char *msg,
    size_t msglen)
{
	char buf[AZ_NAME_MAX + 1];
	size_t nat = 0, nbs = 0;
	char *sep;
	int i;

	memset(out, 0, sizeof(*out));
	if (name == NULL || len == 0) {
		setmsg(msg, msglen, "empty name");
		return RP_ERR_INVALID_PARAMS;
	}
	if (len > AZ_NAME_MAX) {
		if (msg != NULL && msglen > 0)
			snprintf(msg, msglen,
			    "name too long (%zu bytes, at most %d)", len,
			    AZ_NAME_MAX);
		return RP_ERR_INVALID_PARAMS;
	}
	for (size_t k = 0; k < len; k++) {
		unsigned char c = (unsigned char)name[k];

		if (c == '\0') {
			setmsg(msg, msglen, "name contains a NUL byte");
			return RP_ERR_INVALID_PARAMS;
		}
		if (c < 0x20 || c == 0x7f) {
			setmsg(
			    msg, msglen, "name contains a control character");
			return RP_ERR_INVALID_PARAMS;
		}
		if (c == '@')
			nat++;
		else if (c == '\\')
			nbs++;
	}
	memcpy(buf, name, len);
	buf[len] = '\0';
	if (nat > 1) {
		setmsg(msg, msglen, "more than one '@' in name");
		return RP_ERR_INVALID_PARAMS;
	}
	if (nat == 1 && nbs > 0) {
		setmsg(msg, msglen,
		    "name has both '\\' and '@' (use DOMAIN\\user or "
		    "user@realm)");
		return RP_ERR_INVALID_PARAMS;
	}
	if (nbs > 0) {
		sep = strchr(buf, '\\');
		*sep = '\0';
		if (buf[0] == '\0' || sep[1] == '\0') {
			setmsg(msg, msglen,
			    "empty domain or user in DOMAIN\\user");
			return RP_ERR_INVALID_PARAMS;
		}
		if ((i = az_domain_find(domains, ndomains, buf)) == -1) {
			setmsg(msg, msglen, "unknown domain \"%.64s\"", buf);
			return RP_ERR_NOT_FOUND;
		}
		out->form = AZ_NAME_NETBIOS;
		out->domain = (size_t)i;
		snprintf(out->user, sizeof(out->user), "%s", sep + 1);
		return 0;
	}
	if (nat == 1) {
		sep = strchr(buf, '@');
		if (sep == buf || sep[1] == '\0') {
			setmsg(
			    msg, msglen, "empty user or realm in user@realm");
			return RP_ERR_INVALID_PARAMS;
		}
		if ((i = domain_by_realm(domains, ndomains, sep + 1)) == -1) {
			setmsg(msg, msglen, "unknown realm \"%.64s\"", sep + 1);
			return RP_ERR_NOT_FOUND;
		}
		out->form = AZ_NAME_UPN;
		out->domain = (size_t)i;
		snprintf(out->upn, sizeof(out->upn), "%s", buf);
		*sep = '\0';
		snprintf(out->user, sizeof(out->user), "%s", buf);
		return 0;
	}
	if ((i = az_domain_find(domains, ndomains, default_domain)) == -1) {
		setmsg(msg, msglen,
		    "no default domain for the bare name \"%.64s\"", buf);
		return RP_ERR_NOT_FOUND;
	}
	out->form = AZ_NAME_BARE;
	out->domain = (size_t)i;
	snprintf(out->user, sizeof(out->user), "%s", buf);
	return 0;
}

char *
az_filter_escape(const char *value, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	char *out, *p;

	if ((out = malloc(len * 3 + 1)) == NULL)
		return NULL;
	p = out;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)value[i];

		if (c == '*' || c == '(' || c == ')' || c == '\\' || c == 0) {
			*p++ = '\\';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		} else {
			*p++ = (char)c;
		}
	}
	*p = '\0';
	return out;
}

int
az_filter_check(const char *tmpl, char *msg, size_t msglen)
{
	size_t n = 0;

	if (tmpl == NULL || *tmpl == '\0') {
		setmsg(msg, msglen, "empty filter");
		return -1;
	}
	for (const char *p = tmpl; *p != '\0'; p++) {
		if (*p != '%')
			continue;
		if (p[1] != 's') {
			setmsg(msg, msglen,
			    "filter \"%.100s\": '%%' other than one %%s", tmpl);
			return -1;
		}
		n++;
		p++;
	}
	if (n != 1) {
		setmsg(msg, msglen,
		    "filter \"%.100s\" must contain exactly one %%s", tmpl);
		return -1;
	}
	if (tmpl[0] != '(' || tmpl[strlen(tmpl) - 1] != ')') {
		setmsg(msg, msglen,
		    "filter \"%.100s\" must be enclosed in parentheses", tmpl);
		return -1;
	}
	return 0;
}

char *
az_filter_build(const char *tmpl, const char *value, size_t len)
{
	const char *at;
	char *esc, *out;
	size_t n;

	if (az_filter_check(tmpl, NULL, 0) == -1)
		return NULL;
	if ((esc = az_filter_escape(value, len)) == NULL)
		return NULL;
	at = strstr(tmpl, "%s");
	n = strlen(tmpl) - 2 + strlen(esc) + 1;
	if ((out = malloc(n)) != NULL)
		snprintf(
		    out, n, "%.*s%s%s", (int)(at - tmpl), tmpl, esc, at + 2);
	free(esc);
	return out;
}

/* ---- DNs ---- */

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

const char *
az_dn_parent(const char *dn)
{
	if (dn == NULL)
		return NULL;
	for (const char *p = dn; *p != '\0'; p++) {
		if (*p == '\\') {
			if (p[1] == '\0')
				return NULL;
			p++;
		} else if (*p == ',') {
			p++;
			while (*p == ' ')
				p++;
			return *p != '\0' ? p : NULL;
		}
	}
	return NULL;
}

/* Characters that keep an escape in the canonical form. */
static int
needs_escape(unsigned char c)
{
	return c < 0x20 || c == 0x7f || strchr(",+\"\\<>;=#", c) != NULL ||
	    c == ' ';
}

char *
az_dn_normalize(const char *dn)
{
	static const char hex[] = "0123456789abcdef";
	size_t len;
	char *out, *o;
	const char *p;

	if (dn == NULL)
		return NULL;
	len = strlen(dn);
	if ((out = malloc(len * 3 + 1)) == NULL)
		return NULL;
	o = out;
	p = dn;
	while (*p == ' ')
		p++;
	while (*p != '\0') {
		unsigned char c = (unsigned char)*p;

		if (c == '\\') {
			int h, l;

			if (p[1] == '\0')
				goto bad;
			if ((h = hexval(p[1])) != -1 &&
			    (l = hexval(p[2])) != -1) {
				c = (unsigned char)(h << 4 | l);
				p += 3;
			} else {
				c = (unsigned char)p[1];
				p += 2;
			}
			if (needs_escape(c) || c >= 0x80) {
				*o++ = '\\';
				*o++ = hex[c >> 4];
				*o++ = hex[c & 15];
			} else {
				*o++ =
				    (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
			}
			continue;
		}
		if (c == ',' || c == '+' || c == '=') {
			/* drop unescaped spaces before and after */
			while (o > out && o[-1] == ' ')
				o--;
			*o++ = (char)c;
			p++;
			while (*p == ' ')
				p++;
			continue;
		}
		*o++ = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		p++;
	}
	while (o > out && o[-1] == ' ')
		o--;
	*o = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

int
az_dn_within(const char *dn, const char *base)
{
	char *nd, *nb;
	size_t ld, lb;
	int r = 0;

	nd = az_dn_normalize(dn);
	nb = az_dn_normalize(base);
	if (nd == NULL || nb == NULL) {
		free(nd);
		free(nb);
		return -1;
	}
	ld = strlen(nd);
	lb = strlen(nb);
	if (lb == 0) {
		r = 1; /* the root DSE contains everything */
	} else if (ld == lb) {
		r = strcmp(nd, nb) == 0;
	} else if (ld > lb && strcmp(nd + ld - lb, nb) == 0 &&
	    nd[ld - lb - 1] == ',') {
		/* the ',' must not be escaped: in the normal form every
		 * escape is "\xx", so an escaped ',' reads "\2c" */
		r = 1;
	}
	free(nd);
	free(nb);
	return r;
}

int
az_dn_first_rdn(
    const char *dn, char *type, size_t typelen, char *value, size_t valuelen)
{
	const char *p = dn;
	size_t t = 0, v = 0, keep = 0;

	if (dn == NULL || typelen == 0 || valuelen == 0)
		return -1;
	while (*p == ' ')
		p++;
	while (*p != '\0' && *p != '=' && *p != ' ') {
		if (t + 1 >= typelen)
			return -1;
		type[t++] = *p++;
	}
	type[t] = '\0';
	while (*p == ' ')
		p++;
	if (t == 0 || *p != '=')
		return -1;
	p++;
	while (*p == ' ')
		p++;
	while (*p != '\0' && *p != ',') {
		unsigned char c = (unsigned char)*p;

		if (c == '+')
			return -1; /* multi-valued RDN */
		if (c == '\\') {
			int h, l;

			if (p[1] == '\0')
				return -1;
			if ((h = hexval(p[1])) != -1 &&
			    (l = hexval(p[2])) != -1) {
				c = (unsigned char)(h << 4 | l);
				p += 3;
			} else {
				c = (unsigned char)p[1];
				p += 2;
			}
			if (c == '\0' || v + 1 >= valuelen)
				return -1;
			value[v++] = (char)c;
			keep = v;
			continue;
		}
		p++;
		if (v + 1 >= valuelen)
			return -1;
		value[v++] = (char)c;
	}
	/* trailing unescaped spaces are not part of the value */
	while (v > keep && value[v - 1] == ' ')
		v--;
	value[v] = '\0';
	return v > 0 ? 0 : -1;
}

int
az_dn_domain(const char *dn, const struct az_domain *domains, size_t ndomains)
{
	int best = -1;
	size_t bestlen = 0;

	for (size_t i = 0; i < ndomains; i++) {
		size_t l;

		if (domains[i].base_dn == NULL)
			continue;
		l = strlen(domains[i].base_dn);
		if (az_dn_within(dn, domains[i].base_dn) == 1 &&
		    (best == -1 || l > bestlen)) {
			best = (int)i;
			bestlen = l;
		}
	}
	return best;
}
