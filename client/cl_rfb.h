/*
 * cl_rfb.h - view-only filter for the RFB (VNC) viewer -> server stream.
 *
 * The agent sits between the helper's viewer and the local VNC server and
 * parses the viewer's direction only: ProtocolVersion (12 bytes), the
 * security type chosen (1 byte; 2 = VNC authentication is followed by a
 * 16-byte response; only None (1) and VNC (2) are supported), ClientInit (1
 * byte), then client messages:
 *
 *   0 SetPixelFormat        20 bytes           always passed
 *   2 SetEncodings          4 + 4n (n bounded) always passed
 *   3 FramebufferUpdateReq  10 bytes           always passed
 *   4 KeyEvent               8 bytes           passed only under control
 *   5 PointerEvent           6 bytes           passed only under control
 *   6 ClientCutText         8 + len (bounded)  passed only under control
 *
 * Anything else (an unknown type, RFB 3.3, another security type, a bound
 * exceeded) is an error: there is no way to resynchronise an RFB stream,
 * so the caller closes the tunnel. The parser is incremental: input may be
 * split anywhere; the pass/drop decision for a message is taken when its
 * type byte arrives, so switching control mid-message affects the next one.
 */
#ifndef CL_RFB_H
#define CL_RFB_H

#include <stddef.h>
#include <stdint.h>

#define CL_RFB_MAX_ENCODINGS 1024
#define CL_RFB_MAX_CUT_TEXT (1024u * 1024u)
/* Most bytes the filter holds back between calls (SetPixelFormat). */
#define CL_RFB_HOLD 20

struct cl_rfb;

struct cl_rfb_stats {
	uint64_t passed_msgs;  /* client messages passed (after ClientInit) */
	uint64_t dropped_msgs; /* input messages dropped (view-only) */
	uint64_t dropped_bytes;
};

struct cl_rfb *cl_rfb_new(void);
void cl_rfb_free(struct cl_rfb *f);
/* 1: input (key, pointer, clipboard) passes; 0: dropped (the default). */
void cl_rfb_set_control(struct cl_rfb *f, int on);
int cl_rfb_control(const struct cl_rfb *f);
/*
 * Filters len bytes of viewer input. The bytes to forward are written to
 * out (room for len + CL_RFB_HOLD bytes: a head held back from an earlier
 * call may come out now) and their count to *outlen. Returns 0, or -1 on a protocol error (the reason in
 * cl_rfb_error(); every later call fails too). On error *outlen still
 * holds what was filtered before the bad byte.
 */
int cl_rfb_filter(struct cl_rfb *f, const unsigned char *in, size_t len,
    unsigned char *out, size_t *outlen);
const char *cl_rfb_error(const struct cl_rfb *f);
void cl_rfb_stats(const struct cl_rfb *f, struct cl_rfb_stats *st);

#endif
