/*
 * fuzz_sasl_params.c - the untrusted half of auth.start / auth.step: JSON
 * params, strict base64, and the checks az_sasl_start/az_sasl_step make
 * before anything reaches Cyrus's password check or the directory.
 *
 * Input: one control byte, then JSON text (the params object).
 *   bit 0  auth.start (1) or auth.step (0) params
 *   bit 1  the session has TLS (ssf 256) or not (0)
 *   bit 2  the session has a verified client certificate "alice"
 *   bit 3  also decode the JSON text itself as raw base64
 *
 * Oracles: accepted base64 is canonical (re-encoding gives the input back)
 * and Cyrus's own decoder agrees with it; a decoded payload is within the
 * documented limit; az_sasl_start never calls back synchronously and its
 * answer is one of the documented codes; with no directory configured, a
 * PLAIN message may only get as far as "directory unavailable" when it is
 * well-formed (authzid empty or equal to authcid, non-empty password
 * without NUL), which is checked here by an independent parser.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sasl/sasl.h>
#include <sasl/saslutil.h>

#include "az_sasl.h"
#include "rp_error.h"
#include "rp_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct az_sasl *sasl;
static int calls;

static void
cb(enum az_sasl_status st, int code, const unsigned char *ch, size_t chlen,
    const struct az_entry *user, const char *msg, void *arg)
{
	calls++;
}

static void
check_b64(const char *s, size_t n)
{
	unsigned char *out = NULL, *cy;
	size_t len = 0;
	unsigned cylen = 0;
	char err[160];
	char *back;

	if (az_sasl_b64_decode(s, n, &out, &len, err, sizeof(err)) != 0) {
		if (out != NULL || len != 0 || err[0] == '\0')
			abort();
		return;
	}
	if (len !=
	    n / 4 * 3 - (n > 0 && s[n - 1] == '=') - (n > 1 && s[n - 2] == '='))
		abort();
	back = az_sasl_b64_encode(out, len);
	if (back == NULL || strlen(back) != n || memcmp(back, s, n) != 0)
		abort();
	free(back);
	if ((cy = malloc(len + 1)) == NULL)
		abort();
	if (sasl_decode64(s, (unsigned)n, (char *)cy, (unsigned)len + 1,
	        &cylen) != SASL_OK ||
	    cylen != len || memcmp(cy, out, len) != 0)
		abort();
	free(cy);
	free(out);
}

/* Independent reading of RFC 4616 (authzid NUL authcid NUL passwd). */
static int
plain_well_formed(const unsigned char *p, size_t n)
{
	size_t nul[3], k = 0, i;

	for (i = 0; i < n; i++)
		if (p[i] == '\0') {
			if (k == 2)
				return 0; /* NUL in the password */
			nul[k++] = i;
		}
	if (k != 2)
		return 0;
	(void)nul[2];
	if (nul[1] == nul[0] + 1 || nul[1] == n - 1)
		return 0; /* empty authcid or password */
	if (nul[0] != 0 &&
	    (nul[0] != nul[1] - nul[0] - 1 ||
	        memcmp(p, p + nul[0] + 1, nul[0]) != 0))
		return 0; /* proxying */
	return 1;
}

static void
check_start(json_t *params, unsigned ctl)
{
	const char *mech;
	unsigned char *ini = NULL;
	size_t len = 0;
	int has = 0, rc;
	char err[256] = "";
	struct az_sasl_sess *ss;

	rc = az_sasl_parse_start(
	    params, &mech, &ini, &len, &has, err, sizeof(err));
	if (rc != 0) {
		if (rc != RP_ERR_INVALID_PARAMS || err[0] == '\0' ||
		    ini != NULL)
			abort();
		return;
	}
	if (mech == NULL || (has && ini == NULL) || (!has && ini != NULL) ||
	    len > AZ_SASL_MAX_B64 / 4 * 3)
		abort();
	ss = az_sasl_sess_new(sasl, (ctl & 4) ? "alice" : NULL,
	    (ctl & 2) ? 256 : 0, "127.0.0.1;1", "127.0.0.1;2");
	if (ss == NULL)
		abort();
	calls = 0;
	rc = az_sasl_start(ss, mech, ini, len, has, cb, NULL);
	if (calls != 0 || rc == 0)
		abort(); /* no directory: nothing can be under way */
	switch (rc) {
	case RP_ERR_INVALID_PARAMS:
	case RP_ERR_AUTH_FAILED:
		if (az_sasl_sess_errmsg(ss)[0] == '\0')
			abort();
		break;
	case RP_ERR_DIRECTORY_UNAVAILABLE:
		if (strcasecmp(mech, "PLAIN") == 0) {
			if (!(ctl & 2))
				abort(); /* PLAIN without TLS */
			if (has && !plain_well_formed(ini, len))
				abort();
		} else if (strcasecmp(mech, "EXTERNAL") == 0) {
			if (!(ctl & 4))
				abort(); /* EXTERNAL without certificate */
			if (has && len != 0 &&
			    (len != 5 || memcmp(ini, "alice", 5) != 0))
				abort();
		} else
			abort();
		break;
	default:
		abort();
	}
	if (az_sasl_sess_user(ss) != NULL)
		abort();
	/* A step now is always out of state: the refusal ended it. */
	if (az_sasl_step(ss, ini, len, cb, NULL) != RP_ERR_WRONG_STATE ||
	    calls != 0)
		abort();
	az_sasl_sess_free(ss);
	if (has) {
		json_t *r =
		    az_sasl_result_json(AZ_SASL_CONTINUE, ini, len, NULL);
		json_t *ch = json_object_get(r, "challenge");

		if (!json_is_string(ch) ||
		    json_string_length(ch) !=
		        json_string_length(
		            json_object_get(params, "initial")) ||
		    memcmp(json_string_value(ch),
		        json_string_value(json_object_get(params, "initial")),
		        json_string_length(ch)) != 0)
			abort();
		json_decref(r);
	}
	free(ini);
}

static void
check_step(json_t *params)
{
	unsigned char *resp = NULL;
	size_t len = 0;
	char err[256] = "";
	int rc = az_sasl_parse_step(params, &resp, &len, err, sizeof(err));

	if (rc != 0) {
		if (rc != RP_ERR_INVALID_PARAMS || err[0] == '\0' ||
		    resp != NULL)
			abort();
		return;
	}
	if (resp == NULL || len > AZ_SASL_MAX_B64 / 4 * 3 || resp[len] != '\0')
		abort();
	free(resp);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *params;
	json_error_t jerr;
	unsigned ctl;

	if (sasl == NULL) {
		struct az_sasl_config c = {
		    .mechanisms = "PLAIN EXTERNAL", .service = "rabroker"};
		char err[256];

		log_init("fuzz_sasl_params", LOG_LVL_ERR, 0);
		if ((sasl = az_sasl_new(NULL, &c, err, sizeof(err))) == NULL) {
			fprintf(stderr, "az_sasl_new: %s\n", err);
			abort();
		}
	}
	if (size < 1)
		return 0;
	ctl = data[0];
	data++;
	size--;
	if (ctl & 8)
		check_b64((const char *)data, size);
	params = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &jerr);
	if (params == NULL)
		return 0;
	if (ctl & 1)
		check_start(params, ctl);
	else
		check_step(params);
	{
		json_t *v = json_object_get(params, "initial");

		if (json_is_string(v))
			check_b64(json_string_value(v), json_string_length(v));
		v = json_object_get(params, "response");
		if (json_is_string(v))
			check_b64(json_string_value(v), json_string_length(v));
	}
	json_decref(params);
	return 0;
}
