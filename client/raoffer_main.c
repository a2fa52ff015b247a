/*
 * raoffer_main.c - the helper's command: offer remote assistance to a
 * machine, list machines and tickets, cancel, ask for control.
 * See docs/HELPER.md; the flow is in cl_offer.c.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cl_offer.h"
#include "cl_offer_config.h"
#include "cl_sasl_client.h"
#include "rp_log.h"

/*
 * jansson copies the PLAIN initial response into its own strings; these
 * allocators wipe every block on free so that no copy of it outlives the
 * request. Each block carries its size in front.
 */
static void *
wipe_malloc(size_t n)
{
	size_t *p = malloc(n + sizeof(size_t) * 2);

	if (p == NULL)
		return NULL;
	p[0] = n;
	return p + 2;
}

static void
wipe_free(void *q)
{
	size_t *p;

	if (q == NULL)
		return;
	p = (size_t *)q - 2;
	cl_wipe(q, p[0]);
	free(p);
}

int
main(int argc, char **argv)
{
	struct cl_offer_config *cfg;
	char err[4096], pw[CL_SASL_PASSWORD_MAX + 2], *initial = NULL;
	size_t pwlen = 0;
	int mech, code;

	json_set_alloc_funcs(wipe_malloc, wipe_free);
	signal(SIGPIPE, SIG_IGN);
	log_init("raoffer", LOG_LVL_WARN, 0);
	if ((cfg = cl_offer_config_new()) == NULL)
		return CL_EXIT_UNAVAILABLE;
	code = cl_offer_config_args(cfg, argc, argv, err, sizeof(err));
	if (code != 0) {
		if (code < 0) {
			fprintf(stderr, "raoffer: %s\n", err);
			if (strchr(err, '\n') == NULL &&
			    strstr(err, "raoffer -h") == NULL)
				fprintf(stderr, "(raoffer -h for usage)\n");
		}
		cl_offer_config_free(cfg);
		return code < 0 ? CL_EXIT_USAGE : CL_EXIT_OK;
	}
	log_set_level(cfg->log_level);
	mech = cfg->mech        ? cfg->mech
	    : cfg->cert != NULL ? CL_SASL_EXTERNAL
	                        : CL_SASL_PLAIN;
	if (mech == CL_SASL_PLAIN) {
		int r;
		if (cfg->password_file != NULL)
			r = cl_offer_read_password_file(cfg->password_file, pw,
			    sizeof(pw), &pwlen, err, sizeof(err));
		else {
			char prompt[CL_SASL_NAME_MAX + 32];
			snprintf(prompt, sizeof(prompt),
			    "Password for %s: ", cfg->user);
			r = cl_offer_read_password_tty(
			    prompt, pw, sizeof(pw), &pwlen, err, sizeof(err));
		}
		if (r == 0)
			initial = cl_sasl_plain_initial(cfg->user,
			    strlen(cfg->user), pw, pwlen, err, sizeof(err));
		cl_wipe(pw, sizeof(pw));
		if (initial == NULL) {
			fprintf(stderr, "raoffer: %s\n", err);
			cl_offer_config_free(cfg);
			return CL_EXIT_USAGE;
		}
	}
	code = cl_offer_run(cfg, initial);
	cl_sasl_wipe_free(initial);
	cl_offer_config_free(cfg);
	return code;
}
