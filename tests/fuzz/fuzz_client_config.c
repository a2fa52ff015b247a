/*
 * fuzz_client_config.c - the clients' configuration parsers (raagent.conf,
 * raoffer.conf) must never crash, leak or read out of bounds, and every
 * refusal must say what and where (a message naming the file). The first
 * byte picks the parser; the rest is the file's text. rabrokerd.conf has
 * its own harness, fuzz_config.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_agent_config.h"
#include "cl_offer_config.h"
#include "rp_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
must_explain(const char *err)
{
	/* A refusal names the file ("fuzz.conf:LINE: why" or "fuzz.conf: why"). */
	if (err[0] == '\0' || strstr(err, "fuzz.conf") == NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	char err[4096];
	char *text;

	if (!quiet) {
		log_init("fuzz_client_config", LOG_LVL_ERR, 0);
		quiet = 1;
	}
	if (size < 1 || size > 65536)
		return 0;
	text = malloc(size);
	if (text == NULL)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	err[0] = '\0';
	if (data[0] % 2 == 0) {
		struct cl_agent_config *c =
		    cl_agent_config_parse("fuzz.conf", text, err, sizeof(err));

		if (c == NULL)
			must_explain(err);
		cl_agent_config_free(c);
	} else {
		struct cl_offer_config *c = cl_offer_config_new();

		if (c != NULL &&
		    cl_offer_config_parse(
		        c, "fuzz.conf", text, err, sizeof(err)) != 0)
			must_explain(err);
		cl_offer_config_free(c);
	}
	free(text);
	return 0;
}
