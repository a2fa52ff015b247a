/*
 * fuzz_cert_name.c - the identity a peer's certificate gives it
 * (rp_tls_cert_identity: first SAN dNSName, else the subject CN). The
 * certificate comes from the network before anything trusts it, so the
 * parser must never crash, and:
 *   - on 0 the identity is 1..RP_TLS_ID_MAX bytes of [A-Za-z0-9._@-], NUL
 *     free, not starting with '.' or '-', and fits the caller's buffer
 *     (asked again with a buffer one byte too small: refused; exactly big
 *     enough: the same identity);
 *   - on -1 the message is not empty.
 * Byte 0 picks the mode (mod 4); the rest is the input:
 *   0  the input is the certificate's DER;
 *   1  a certificate is built whose SAN is one dNSName with exactly the
 *      input's bytes (and a valid CN that must not be used);
 *   2  a certificate is built with no SAN and a CN (UTF8String) of exactly
 *      the input's bytes;
 *   3  as 1, with an rfc822Name and an iPAddress SAN before the dNSName
 *      (skipped: only dNSNames count).
 * In modes 1-3 the identity must be the input, byte for byte, when the
 * input is a usable name (checked here independently of rp_tls.c), and
 * the certificate must be refused otherwise. The extension and the CN are
 * written as raw DER so that GnuTLS does not rewrite the name (its
 * gnutls_x509_crt_set_subject_alt_name maps non-ASCII names to IDNA).
 * The certificates are self-signed with one P-256 key made on the first
 * call and kept.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "rp_tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                      \
	do {                                                             \
		if (!(cond)) {                                           \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", \
			    __FILE__, __LINE__, #cond);                  \
			abort();                                         \
		}                                                        \
	} while (0)

#define MAX_DER 65536
#define MAX_NAME 4096 /* well past RP_TLS_ID_MAX and GnuTLS's buffers */

static gnutls_x509_privkey_t key;

/* The rule of rp_tls.h, written again here on purpose. */
static int
usable(const uint8_t *s, size_t len)
{
	if (len == 0 || len > RP_TLS_ID_MAX || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < len; i++)
		if (strchr(
		        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		        "0123456789-._@",
		        s[i]) == NULL ||
		    s[i] == '\0')
			return 0;
	return 1;
}

/* Calls the parser and checks the invariants every answer must keep.
 * Returns its result; the identity in id. */
static int
identity(const void *der, size_t len, char *id, size_t idlen)
{
	char err[512], again[RP_TLS_ID_MAX + 1];
	size_t n;
	int r;

	memset(id, 'X', idlen);
	err[0] = '\0';
	r = rp_tls_cert_identity(der, len, id, idlen, err, sizeof(err));
	CHECK(r == 0 || r == -1);
	if (r != 0) {
		CHECK(err[0] != '\0');
		return r;
	}
	n = strnlen(id, idlen);
	CHECK(n < idlen);
	CHECK(usable((const uint8_t *)id, n));
	/* The same certificate with a buffer just big enough, and one byte
	 * short. */
	CHECK(rp_tls_cert_identity(der, len, again, n + 1, err, sizeof(err)) ==
	    0);
	CHECK(strcmp(again, id) == 0);
	err[0] = '\0';
	CHECK(rp_tls_cert_identity(der, len, again, n, err, sizeof(err)) == -1);
	CHECK(err[0] != '\0');
	return 0;
}

static void
key_once(void)
{
	if (key != NULL)
		return;
	CHECK(gnutls_x509_privkey_init(&key) == 0);
	CHECK(gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
	          GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) == 0);
}

static size_t
der_headlen(size_t len)
{
	return len < 0x80 ? 2 : len < 0x100 ? 3 : 4;
}

/* DER tag and length (len < 65536) at p; returns the bytes written. */
static size_t
der_head(uint8_t *p, uint8_t tag, size_t len)
{
	p[0] = tag;
	if (len < 0x80) {
		p[1] = (uint8_t)len;
		return 2;
	}
	if (len < 0x100) {
		p[1] = 0x81;
		p[2] = (uint8_t)len;
		return 3;
	}
	p[1] = 0x82;
	p[2] = (uint8_t)(len >> 8);
	p[3] = (uint8_t)len;
	return 4;
}

/* A self-signed certificate: SAN extension value `san` (NULL: none) and a
 * CN whose DER value is `cn` (NULL: none). The DER goes to *out
 * (gnutls_free). */
static void
build(const uint8_t *san, size_t sanlen, const uint8_t *cn, size_t cnlen,
    gnutls_datum_t *out)
{
	gnutls_x509_crt_t crt;
	static const uint8_t serial[] = {0x01, 0x23};

	key_once();
	CHECK(gnutls_x509_crt_init(&crt) == 0);
	CHECK(gnutls_x509_crt_set_version(crt, 3) == 0);
	CHECK(gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) == 0);
	CHECK(gnutls_x509_crt_set_activation_time(crt, 1700000000) == 0);
	CHECK(gnutls_x509_crt_set_expiration_time(crt, 1900000000) == 0);
	CHECK(gnutls_x509_crt_set_key(crt, key) == 0);
	CHECK(gnutls_x509_crt_set_dn_by_oid(crt,
	          GNUTLS_OID_X520_ORGANIZATION_NAME, 0, "rabroker fuzz",
	          13) == 0);
	if (cn != NULL)
		CHECK(gnutls_x509_crt_set_dn_by_oid(crt,
		          GNUTLS_OID_X520_COMMON_NAME, 1, cn,
		          (unsigned)cnlen) == 0);
	if (san != NULL)
		CHECK(gnutls_x509_crt_set_extension_by_oid(
		          crt, "2.5.29.17", san, sanlen, 0) == 0);
	CHECK(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) == 0);
	CHECK(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, out) == 0);
	gnutls_x509_crt_deinit(crt);
}

static void
check_built(int mode, const uint8_t *name, size_t len)
{
	static const uint8_t fixed_cn[] = "fixed-cn.corp.example";
	static const uint8_t pre[] = {0x81, 14, 'x', '@', 'c', 'o', 'r', 'p',
	    '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0x87, 4, 127, 0, 0, 1};
	uint8_t *buf = malloc(len + 64), cnder[64];
	char id[RP_TLS_ID_MAX + 1];
	gnutls_datum_t der;
	size_t n = 0, inner, hl;
	int r;

	CHECK(buf != NULL);
	if (mode == 2) {
		n = der_head(buf, 0x0c, len); /* UTF8String */
		memcpy(buf + n, name, len);
		build(NULL, 0, buf, n + len, &der);
	} else {
		inner = (mode == 3 ? sizeof(pre) : 0) + der_headlen(len) + len;
		n = hl = der_head(buf, 0x30, inner);
		if (mode == 3) {
			memcpy(buf + n, pre, sizeof(pre));
			n += sizeof(pre);
		}
		n += der_head(buf + n, 0x82, len); /* [2] IA5String */
		memcpy(buf + n, name, len);
		n += len;
		CHECK(n == hl + inner);
		der_head(cnder, 0x0c, sizeof(fixed_cn) - 1);
		memcpy(cnder + 2, fixed_cn, sizeof(fixed_cn) - 1);
		build(buf, n, cnder, sizeof(fixed_cn) + 1, &der);
	}
	r = identity(der.data, der.size, id, sizeof(id));
	if (usable(name, len)) {
		CHECK(r == 0);
		CHECK(strlen(id) == len && memcmp(id, name, len) == 0);
	} else
		CHECK(r == -1);
	gnutls_free(der.data);
	free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[RP_TLS_ID_MAX + 1];

	if (size < 1 || size - 1 > MAX_DER)
		return 0;
	switch (data[0] % 4) {
	case 0:
		(void)identity(data + 1, size - 1, id, sizeof(id));
		break;
	default:
		if (size - 1 <= MAX_NAME)
			check_built(data[0] % 4, data + 1, size - 1);
		break;
	}
	return 0;
}
