/*
 * cl_sasl_client.c - client side of SASL PLAIN / EXTERNAL for raoffer.
 *
 * The broker parses PLAIN itself and refuses what can only fail (empty
 * password, NUL, proxying); we refuse the same things before anything is
 * sent, so that a typo never reaches the directory as a failed bind and a
 * password never travels in a message we know to be wrong.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cl_sasl_client.h"

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void
cl_wipe(void *p, size_t len)
{
	volatile unsigned char *v = p;

	while (len-- > 0)
		*v++ = 0;
}

void
cl_sasl_wipe_free(char *s)
{
	if (s == NULL)
		return;
	cl_wipe(s, strlen(s));
	free(s);
}

int
cl_sasl_mech_parse(const char *s)
{
	if (s == NULL)
		return 0;
	if (strcasecmp(s, "PLAIN") == 0)
		return CL_SASL_PLAIN;
	if (strcasecmp(s, "EXTERNAL") == 0)
		return CL_SASL_EXTERNAL;
	return 0;
}

const char *
cl_sasl_mech_name(int mech)
{
	return mech == CL_SASL_PLAIN   ? "PLAIN"
	    : mech == CL_SASL_EXTERNAL ? "EXTERNAL"
	                               : "?";
}

char *
cl_b64_encode(const unsigned char *in, size_t len)
{
	size_t olen = (len + 2) / 3 * 4, i, o = 0;
	char *out = malloc(olen + 1);

	if (out == NULL)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 |
		    in[i + 2];
		out[o++] = b64chars[v >> 18 & 63];
		out[o++] = b64chars[v >> 12 & 63];
		out[o++] = b64chars[v >> 6 & 63];
		out[o++] = b64chars[v & 63];
	}
	if (i < len) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < len)
			v |= (unsigned)in[i + 1] << 8;
		out[o++] = b64chars[v >> 18 & 63];
		out[o++] = b64chars[v >> 12 & 63];
		out[o++] = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return out;
}

static int
b64val(char c)
{
	const char *p;

	if (c == '\0' || (p = strchr(b64chars, c)) == NULL)
		return -1;
	return (int)(p - b64chars);
}

long
cl_b64_decode(const char *in, unsigned char *out, size_t outmax)
{
	size_t len = strlen(in), i, o = 0;

	if (len % 4 != 0)
		return -1;
	for (i = 0; i < len; i += 4) {
		int a = b64val(in[i]), b = b64val(in[i + 1]), c, d;
		int last = i + 4 == len;
		unsigned v;

		if (a < 0 || b < 0)
			return -1;
		if (last && in[i + 2] == '=') {
			if (in[i + 3] != '=' || (b & 15) != 0 || o + 1 > outmax)
				return -1;
			out[o++] = (unsigned char)(a << 2 | b >> 4);
			break;
		}
		c = b64val(in[i + 2]);
		if (c < 0)
			return -1;
		if (last && in[i + 3] == '=') {
			if ((c & 3) != 0 || o + 2 > outmax)
				return -1;
			v = (unsigned)a << 18 | (unsigned)b << 12 |
			    (unsigned)c << 6;
			out[o++] = (unsigned char)(v >> 16);
			out[o++] = (unsigned char)(v >> 8);
			break;
		}
		d = b64val(in[i + 3]);
		if (d < 0 || o + 3 > outmax)
			return -1;
		v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 |
		    (unsigned)d;
		out[o++] = (unsigned char)(v >> 16);
		out[o++] = (unsigned char)(v >> 8);
		out[o++] = (unsigned char)v;
	}
	return (long)o;
}

int
cl_sasl_name_check(const char *name, size_t len, char *err, size_t errlen)
{
	size_t i;

	if (name == NULL || len == 0) {
		snprintf(err, errlen, "the user name is empty");
		return -1;
	}
	if (len > CL_SASL_NAME_MAX) {
		snprintf(err, errlen, "the user name is longer than %d bytes",
		    CL_SASL_NAME_MAX);
		return -1;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == 0) {
			snprintf(
			    err, errlen, "the user name contains a NUL byte");
			return -1;
		}
		if (c < 0x20 || c == 0x7f) {
			snprintf(err, errlen,
			    "the user name contains a control character");
			return -1;
		}
	}
	return 0;
}

char *
cl_sasl_plain_initial(const char *name, size_t namelen, const char *pw,
    size_t pwlen, char *err, size_t errlen)
{
	unsigned char *msg;
	char *b64;
	size_t mlen;

	if (cl_sasl_name_check(name, namelen, err, errlen) != 0)
		return NULL;
	if (pw == NULL || pwlen == 0) {
		snprintf(err, errlen, "the password is empty");
		return NULL;
	}
	if (pwlen > CL_SASL_PASSWORD_MAX) {
		snprintf(err, errlen, "the password is longer than %d bytes",
		    CL_SASL_PASSWORD_MAX);
		return NULL;
	}
	if (memchr(pw, '\0', pwlen) != NULL) {
		snprintf(err, errlen, "the password contains a NUL byte");
		return NULL;
	}
	mlen = 1 + namelen + 1 + pwlen;
	if ((msg = malloc(mlen)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	msg[0] = '\0';
	memcpy(msg + 1, name, namelen);
	msg[1 + namelen] = '\0';
	memcpy(msg + 2 + namelen, pw, pwlen);
	b64 = cl_b64_encode(msg, mlen);
	cl_wipe(msg, mlen);
	free(msg);
	if (b64 == NULL)
		snprintf(err, errlen, "out of memory");
	return b64;
}

json_t *
cl_sasl_start_params(int mech, const char *initial)
{
	if (mech == CL_SASL_EXTERNAL)
		return json_pack(
		    "{s:s, s:s}", "mechanism", "EXTERNAL", "initial", "");
	if (mech != CL_SASL_PLAIN || initial == NULL)
		return NULL;
	return json_pack(
	    "{s:s, s:s}", "mechanism", "PLAIN", "initial", initial);
}
