/*
 * fuzz_names.c - helper names and directory DNs come from the network (the
 * SASL exchange) and from the directory's answers. The parsers must never
 * crash, and keep their invariants:
 *   - az_name_parse either refuses with a message or yields a user part
 *     without NUL or control characters;
 *   - RFC 4515 escaping leaves no '*', '(', ')' or NUL and escapes every '\';
 *   - a built filter contains the escaped value exactly once;
 *   - DN normalisation is a fixed point, and a valid DN is within itself
 *     and within its parent.
 * The first byte picks the operation; the rest is the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "az_dir.h"
#include "az_names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct az_domain domains[] = {
    {"CORP", "corp.example", "dc=corp,dc=example"},
    {"LAB", "lab.corp.example", "dc=lab,dc=corp,dc=example"},
};

static void
check_name(const char *s, size_t len)
{
	struct az_name n;
	char msg[256];
	int r;

	msg[0] = '\0';
	r = az_name_parse(s, len, domains, 2, "CORP", &n, msg, sizeof(msg));
	if (r != 0) {
		if (msg[0] == '\0')
			abort();
		return;
	}
	if (n.user[0] == '\0' || n.domain >= 2)
		abort();
	for (const unsigned char *p = (const unsigned char *)n.user; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			abort();
}

static int
is_hex(char c)
{
	return c != '\0' && strchr("0123456789abcdefABCDEF", c) != NULL;
}

static void
check_escape(const char *s, size_t len)
{
	char *e = az_filter_escape(s, len), *f;
	size_t elen;

	if (e == NULL)
		return;
	elen = strlen(e);
	for (size_t i = 0; i < elen; i++) {
		if (e[i] == '*' || e[i] == '(' || e[i] == ')')
			abort();
		/* Every backslash starts a two-hex-digit escape. */
		if (e[i] == '\\') {
			if (i + 2 >= elen + 1 || !is_hex(e[i + 1]) ||
			    !is_hex(e[i + 2]))
				abort();
			i += 2;
		}
	}
	f = az_filter_build("(uid=%s)", s, len);
	if (f == NULL || strlen(f) != elen + 6 || strncmp(f + 5, e, elen) != 0)
		abort();
	free(f);
	free(e);
}

static void
check_dn(const char *s)
{
	char *n = az_dn_normalize(s), *n2;
	const char *parent;
	char type[64], value[256];

	(void)az_dn_first_rdn(s, type, sizeof(type), value, sizeof(value));
	(void)az_dn_domain(s, domains, 2);
	if (n == NULL)
		return;
	n2 = az_dn_normalize(n);
	if (n2 == NULL || strcmp(n, n2) != 0)
		abort();
	if (n[0] != '\0' && az_dn_within(s, s) != 1)
		abort();
	parent = az_dn_parent(s);
	if (parent != NULL && parent[0] != '\0') {
		char *pn = az_dn_normalize(parent);

		if (pn != NULL && az_dn_within(s, parent) != 1)
			abort();
		free(pn);
	}
	free(n2);
	free(n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1 || size > 4096)
		return 0;
	s = malloc(size);
	if (s == NULL)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	switch (data[0] % 3) {
	case 0:
		check_name(s, size - 1); /* NUL bytes inside are kept */
		break;
	case 1:
		check_escape(s, size - 1);
		break;
	default:
		check_dn(s);
		break;
	}
	free(s);
	return 0;
}
