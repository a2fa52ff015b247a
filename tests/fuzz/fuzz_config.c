/*
 * fuzz_config.c - rabrokerd's configuration parser (bk_config) must never
 * crash, leak or read out of bounds on any input; every failure must come
 * with a message that names the file ("fuzz.conf"), and a success must
 * hold the invariants the daemon relies on (a listen port in range, the
 * required paths set, at least one SASL mechanism).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bk_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text, err[4096];
	struct bk_config *c;

	if (size > 64 * 1024)
		return 0;
	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0'; /* (an embedded NUL ends the text early) */
	err[0] = '\0';
	c = bk_config_load_string("fuzz.conf", text, err, sizeof(err));
	if (c == NULL) {
		if (strncmp(err, "fuzz.conf", 9) != 0)
			abort();
	} else {
		if (c->listen_port < 1 || c->listen_port > 65535 ||
		    c->listen_host == NULL || c->cert == NULL ||
		    c->key == NULL || c->ca == NULL || c->policy_file == NULL ||
		    c->nmechanisms == 0 ||
		    (c->have_directory && c->dir.ndomains == 0))
			abort();
		bk_config_free(c);
	}
	free(text);
	return 0;
}
