/*
 * fuzz_rfb.c - libFuzzer harness for the agent's RFB view-only filter.
 *
 * Input: byte 0 picks the chunk size, byte 1 a control toggle pattern, the
 * rest is the viewer stream. Invariants (abort() when broken):
 *  1. the output of every call fits in len + CL_RFB_HOLD;
 *  2. fed in chunks or all at once, with control off, the filter gives
 *     the same output and the same verdict (chunking never changes what
 *     passes);
 *  3. with control off, no KeyEvent/PointerEvent/ClientCutText passes:
 *     re-parsing the output with control on sees no message of type 4-6
 *     (the output is itself a valid stream prefix);
 *  4. with control on, an accepted stream passes unchanged;
 *  5. once failed, the filter stays failed and outputs nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_rfb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                      \
	do {                                                             \
		if (!(cond)) {                                           \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", \
			    __FILE__, __LINE__, #cond);                  \
			abort();                                         \
		}                                                        \
	} while (0)

#define MAX_IN (1u << 20)

/* Runs the filter; returns the verdict, output in out (room size +
 * CL_RFB_HOLD), its length in *outlen. toggles: control flips before a
 * chunk whose index has that bit set in the pattern (0: never). */
static int
run(const uint8_t *in, size_t n, size_t chunk, int control, unsigned toggles,
    uint8_t *out, size_t *outlen, struct cl_rfb_stats *st)
{
	struct cl_rfb *f = cl_rfb_new();
	size_t i = 0, o = 0, k, ol;
	unsigned idx = 0;
	int r = 0;

	CHECK(f != NULL);
	cl_rfb_set_control(f, control);
	while (i < n) {
		k = n - i < chunk ? n - i : chunk;
		if (toggles & (1u << (idx++ % 8)))
			cl_rfb_set_control(f, !cl_rfb_control(f));
		r = cl_rfb_filter(f, in + i, k, out + o, &ol);
		CHECK(ol <= k + CL_RFB_HOLD);
		o += ol;
		i += k;
		if (r != 0) {
			CHECK(cl_rfb_error(f) != NULL);
			/* stays failed */
			CHECK(cl_rfb_filter(
			          f, in, n > 4 ? 4 : n, out + o, &ol) == -1);
			CHECK(ol == 0);
			break;
		}
	}
	CHECK(o <= n);
	*outlen = o;
	if (st != NULL)
		cl_rfb_stats(f, st);
	cl_rfb_free(f);
	return r;
}

/* Walks a filtered stream (as the server would) and returns 1 if it holds
 * an input message. The stream must parse with control on. */
static int
has_input(const uint8_t *s, size_t n)
{
	struct cl_rfb *f = cl_rfb_new();
	struct cl_rfb_stats st;
	uint8_t *tmp = malloc(n + CL_RFB_HOLD);
	size_t ol;
	int r;

	CHECK(f != NULL && tmp != NULL);
	cl_rfb_set_control(f, 1);
	r = cl_rfb_filter(f, s, n, tmp, &ol);
	CHECK(r == 0);
	CHECK(ol == n || ol < n); /* a tail may be held back */
	cl_rfb_stats(f, &st);
	/* Count input messages: parse again with control off and compare
	 * how many bytes were dropped. */
	cl_rfb_free(f);
	f = cl_rfb_new();
	cl_rfb_set_control(f, 0);
	r = cl_rfb_filter(f, s, n, tmp, &ol);
	CHECK(r == 0);
	cl_rfb_stats(f, &st);
	cl_rfb_free(f);
	free(tmp);
	return st.dropped_msgs > 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *in;
	size_t n, chunk, ol1, ol2;
	uint8_t *o1, *o2;
	int r1, r2;
	unsigned toggles;

	if (size < 2 || size > MAX_IN)
		return 0;
	chunk = (size_t)data[0] % 17 + 1;
	toggles = data[1];
	in = data + 2;
	n = size - 2;
	o1 = malloc(n + CL_RFB_HOLD + 1);
	o2 = malloc(n + CL_RFB_HOLD + 1);
	CHECK(o1 != NULL && o2 != NULL);

	/* 2: chunking does not matter (control off). */
	r1 = run(in, n, chunk, 0, 0, o1, &ol1, NULL);
	r2 = run(in, n, n ? n : 1, 0, 0, o2, &ol2, NULL);
	CHECK(r1 == r2);
	CHECK(ol1 == ol2 && memcmp(o1, o2, ol1) == 0);
	/* 3: nothing the server gets in view mode is input. */
	CHECK(!has_input(o1, ol1));
	/* 4: control on, an accepted stream passes whole, minus a held
	 * tail. */
	r2 = run(in, n, chunk, 1, 0, o2, &ol2, NULL);
	if (r2 == 0)
		CHECK(ol2 <= n && memcmp(o2, in, ol2) == 0 &&
		    n - ol2 < CL_RFB_HOLD + 1);
	/* Toggling mid-stream never breaks parsing: the verdict is the same
	 * as without toggles. */
	r2 = run(in, n, chunk, 0, toggles, o2, &ol2, NULL);
	CHECK(r2 == r1);
	free(o1);
	free(o2);
	return 0;
}
