/*
 * cl_rfb.c - the RFB viewer -> server filter (see cl_rfb.h).
 *
 * One small state machine. Every element is handled in two steps: its
 * fixed-size head is collected in f->hdr (so it may arrive one byte at a
 * time), then, once its total size is known and checked, the head is
 * emitted or dropped and the rest (the body) streams through with the same
 * decision, without being buffered.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_rfb.h"

enum rfb_state {
	RFB_VERSION = 0, /* 12 bytes "RFB 003.00x\n" */
	RFB_SECTYPE,     /* 1 byte */
	RFB_VNCAUTH,     /* 16 bytes DES response */
	RFB_INIT,        /* ClientInit: shared flag */
	RFB_MSG,         /* head of a client message */
	RFB_BODY,        /* rest of a message */
	RFB_ERROR,
};

struct cl_rfb {
	enum rfb_state st;
	int control;
	unsigned char hdr[CL_RFB_HOLD];
	size_t have, need; /* head bytes collected / wanted */
	uint64_t body;     /* body bytes left (RFB_BODY) */
	int pass;          /* decision for the current message */
	char err[128];
	struct cl_rfb_stats stats;
};

struct cl_rfb *
cl_rfb_new(void)
{
	struct cl_rfb *f = calloc(1, sizeof(*f));

	if (f != NULL) {
		f->st = RFB_VERSION;
		f->need = 12;
	}
	return f;
}

void
cl_rfb_free(struct cl_rfb *f)
{
	free(f);
}

void
cl_rfb_set_control(struct cl_rfb *f, int on)
{
	f->control = on != 0;
}

int
cl_rfb_control(const struct cl_rfb *f)
{
	return f->control;
}

const char *
cl_rfb_error(const struct cl_rfb *f)
{
	return f->st == RFB_ERROR ? f->err : NULL;
}

void
cl_rfb_stats(const struct cl_rfb *f, struct cl_rfb_stats *st)
{
	*st = f->stats;
}

static int rfb_fail(struct cl_rfb *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
rfb_fail(struct cl_rfb *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f->err, sizeof(f->err), fmt, ap);
	va_end(ap);
	f->st = RFB_ERROR;
	return -1;
}

static void
rfb_head(struct cl_rfb *f, enum rfb_state st, size_t need)
{
	f->st = st;
	f->have = 0;
	f->need = need;
}

static uint32_t
be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* Size of the head of a message type, or 0 if unknown. The head of a
 * fixed-size message is the whole message. */
static size_t
msg_head(unsigned type)
{
	switch (type) {
	case 0: /* SetPixelFormat */
		return 20;
	case 2: /* SetEncodings: type, pad, u16 n */
		return 4;
	case 3: /* FramebufferUpdateRequest */
		return 10;
	case 4: /* KeyEvent */
		return 8;
	case 5: /* PointerEvent */
		return 6;
	case 6: /* ClientCutText: type, pad[3], u32 len */
		return 8;
	default:
		return 0;
	}
}

/* The head in f->hdr is complete: check it, decide, and say how many body
 * bytes follow (in f->body). 0 or -1. */
static int
rfb_head_done(struct cl_rfb *f)
{
	unsigned n;
	uint32_t len;

	f->body = 0;
	switch (f->st) {
	case RFB_VERSION:
		if (memcmp(f->hdr, "RFB 003.", 8) != 0 || f->hdr[11] != '\n')
			return rfb_fail(f, "not an RFB ProtocolVersion");
		n = (unsigned)(f->hdr[8] - '0') * 100 +
		    (unsigned)(f->hdr[9] - '0') * 10 +
		    (unsigned)(f->hdr[10] - '0');
		if (n < 7 || n > 8)
			return rfb_fail(
			    f, "RFB version 3.%u not supported (3.7, 3.8)", n);
		f->pass = 1;
		return 0;
	case RFB_SECTYPE:
		if (f->hdr[0] != 1 && f->hdr[0] != 2)
			return rfb_fail(f,
			    "RFB security type %u not supported (1, 2)",
			    f->hdr[0]);
		f->pass = 1;
		return 0;
	case RFB_VNCAUTH:
	case RFB_INIT:
		f->pass = 1;
		return 0;
	case RFB_MSG:
		switch (f->hdr[0]) {
		case 2:
			n = (unsigned)f->hdr[2] << 8 | f->hdr[3];
			if (n > CL_RFB_MAX_ENCODINGS)
				return rfb_fail(
				    f, "RFB SetEncodings with %u encodings", n);
			f->body = 4u * n;
			break;
		case 6:
			len = be32(f->hdr + 4);
			if (len > CL_RFB_MAX_CUT_TEXT)
				return rfb_fail(
				    f, "RFB ClientCutText of %u bytes", len);
			f->body = len;
			break;
		}
		if (f->pass)
			f->stats.passed_msgs++;
		else {
			f->stats.dropped_msgs++;
			f->stats.dropped_bytes += f->need + f->body;
		}
		return 0;
	default:
		return rfb_fail(f, "RFB filter in a bad state");
	}
}

static void
rfb_next(struct cl_rfb *f)
{
	switch (f->st) {
	case RFB_VERSION:
		rfb_head(f, RFB_SECTYPE, 1);
		break;
	case RFB_SECTYPE:
		if (f->hdr[0] == 2)
			rfb_head(f, RFB_VNCAUTH, 16);
		else
			rfb_head(f, RFB_INIT, 1);
		break;
	case RFB_VNCAUTH:
		rfb_head(f, RFB_INIT, 1);
		break;
	default:
		rfb_head(f, RFB_MSG, 0); /* need set by the type byte */
		break;
	}
}

int
cl_rfb_filter(struct cl_rfb *f, const unsigned char *in, size_t len,
    unsigned char *out, size_t *outlen)
{
	size_t i = 0, o = 0, k;

	*outlen = 0;
	if (f->st == RFB_ERROR)
		return -1;
	while (i < len) {
		if (f->st == RFB_BODY) {
			k = len - i;
			if (k > f->body)
				k = (size_t)f->body;
			if (f->pass) {
				memcpy(out + o, in + i, k);
				o += k;
			}
			i += k;
			f->body -= k;
			if (f->body == 0)
				rfb_head(f, RFB_MSG, 0);
			continue;
		}
		if (f->st == RFB_MSG && f->have == 0) {
			f->need = msg_head(in[i]);
			if (f->need == 0) {
				*outlen = o;
				return rfb_fail(f,
				    "unknown RFB client message type %u",
				    in[i]);
			}
			f->pass = in[i] <= 3 ? 1 : f->control;
		}
		k = f->need - f->have;
		if (k > len - i)
			k = len - i;
		memcpy(f->hdr + f->have, in + i, k);
		f->have += k;
		i += k;
		if (f->have < f->need)
			break;
		if (rfb_head_done(f) != 0) {
			*outlen = o;
			return -1;
		}
		if (f->pass) {
			memcpy(out + o, f->hdr, f->need);
			o += f->need;
		}
		if (f->st == RFB_MSG && f->body > 0)
			f->st = RFB_BODY;
		else
			rfb_next(f);
	}
	*outlen = o;
	return 0;
}
