/*
 * fuzz_policy.c - the offer-policy parser must never crash, leak or read
 * out of bounds on any input; a policy that parses must evaluate without
 * fault and keep its invariants (a decision never exceeds the subject's
 * upper bound, a deny never grants, the deciding rule's text is the one
 * reported). The input is also fed to the DN normaliser, whose output must
 * be a fixed point.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "az_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const helper_groups[] = {"CORP\\helpdesk",
    "corp\\HELPDESK-tier2", "CORP\\contractors", "CORP\\Domain Users"};
static const char *const machine_groups[] = {"CORP\\kiosks", "CORP\\Servers"};

static const struct az_subject subjects[] = {
    {"CORP\\alice", helper_groups, 4},
    {"corp\\MALLORY", helper_groups + 2, 1},
    {"CORP\\bob", NULL, 0},
    {NULL, NULL, 0},
};

static const struct az_target targets[] = {
    {"ws-042.corp.example", "CN=ws-042,OU=Workstations,DC=corp,DC=example",
        NULL, 0},
    {"ws-2.corp.example", "cn=ws-2, ou=Workstations2 ,dc=corp,dc=example",
        machine_groups, 2},
    {"k-1.corp.example", "cn=k-1,ou=Kiosks,ou=Workstations,dc=corp,dc=example",
        machine_groups, 1},
    {"odd.corp.example", "cn=odd,,dc=corp", machine_groups, 2},
    {"nodn.corp.example", NULL, NULL, 0},
};

static void
check_dn(const uint8_t *data, size_t size)
{
	char *in = malloc(size + 1);
	char a[AZ_POLICY_DN_MAX], b[AZ_POLICY_DN_MAX];
	int n, m;

	if (in == NULL)
		return;
	memcpy(in, data, size);
	in[size] = '\0';
	n = az_policy_dn_normalize(in, a, sizeof(a));
	if (n >= 0) {
		m = az_policy_dn_normalize(a, b, sizeof(b));
		if (m != n || strcmp(a, b) != 0 ||
		    az_policy_dn_within(in, a) != 1)
			abort();
	}
	free(in);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	struct az_policy *p;
	size_t i, j;

	if (size < 4096)
		check_dn(data, size);
	p = az_policy_load_buffer(
	    "fuzz.conf", (const char *)data, size, err, sizeof(err));
	if (p == NULL) {
		if (strncmp(err, "fuzz.conf:", 10) != 0)
			abort(); /* every error names the file and line */
		return 0;
	}
	for (i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
		enum az_right max = az_policy_subject_max(p, &subjects[i]);
		for (j = 0; j < sizeof(targets) / sizeof(targets[0]); j++) {
			struct az_decision d;
			az_policy_eval(p, &subjects[i], &targets[j], &d);
			if (d.right > max || d.right > AZ_RIGHT_CONTROL)
				abort();
			if (d.rule == NULL && d.right != AZ_RIGHT_NONE)
				abort();
			if (d.rule != NULL &&
			    strncmp(d.rule_text, az_rule_text(d.rule),
			        sizeof(d.rule_text) - 1) != 0)
				abort();
			if (d.max_ticket_s < 1 || d.max_ticket_s > 86400 ||
			    d.prompt_timeout_s < 1 ||
			    d.prompt_timeout_s > 86400)
				abort();
			if (az_decision_unattended(&d) > d.right)
				abort();
		}
	}
	az_policy_free(p);
	return 0;
}
