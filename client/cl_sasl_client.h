/*
 * cl_sasl_client.h - the helper's side of SASL (docs/AUTH.md): PLAIN with
 * an initial response and EXTERNAL with an empty one, plus the strict
 * base64 both need (and the ticket secret in offer.create's result).
 *
 * Every buffer that held a password is wiped before it is freed; callers
 * free the strings returned here with cl_sasl_wipe_free().
 */
#ifndef CL_SASL_CLIENT_H
#define CL_SASL_CLIENT_H

#include <stddef.h>

#include <jansson.h>

#define CL_SASL_NAME_MAX 256
#define CL_SASL_PASSWORD_MAX 1024

enum cl_sasl_mech { CL_SASL_PLAIN = 1, CL_SASL_EXTERNAL };

/* "PLAIN" / "EXTERNAL" -> enum; 0 when unknown (case-insensitive). */
int cl_sasl_mech_parse(const char *s);
const char *cl_sasl_mech_name(int mech);

/* Base64 (RFC 4648, standard alphabet, padded). Returns a malloc'd
 * NUL-terminated string, NULL on allocation failure. */
char *cl_b64_encode(const unsigned char *in, size_t len);
/* Strict decode (no whitespace, padding required, canonical). Writes at
 * most outmax bytes; returns the length, or -1 if the input is not valid
 * base64 or does not fit. */
long cl_b64_decode(const char *in, unsigned char *out, size_t outmax);

/*
 * Checks an authentication name (CORP\alice, alice@corp.example, alice):
 * not empty, at most CL_SASL_NAME_MAX bytes, no NUL, no control
 * characters. 0, or -1 with the reason in err.
 */
int cl_sasl_name_check(const char *name, size_t len, char *err, size_t errlen);

/*
 * The PLAIN initial response "\0user\0password" in base64 (empty authzid:
 * helpers act only as themselves). name/pw are length-counted so that a
 * NUL inside either is seen and refused, as is an empty password (an LDAP
 * bind with one would be unauthenticated). Returns a malloc'd string (free
 * with cl_sasl_wipe_free), or NULL with the reason in err (never the
 * password).
 */
char *cl_sasl_plain_initial(const char *name, size_t namelen, const char *pw,
    size_t pwlen, char *err, size_t errlen);

/* auth.start params: {"mechanism": M, "initial": I}; EXTERNAL always sends
 * "" (an empty initial response: act as my certificate name). initial is
 * copied. NULL on allocation failure. */
json_t *cl_sasl_start_params(int mech, const char *initial);

/* Overwrites s (to its NUL) and frees it. NULL is fine. */
void cl_sasl_wipe_free(char *s);
/* Overwrites len bytes in a way the compiler keeps. */
void cl_wipe(void *p, size_t len);

#endif
