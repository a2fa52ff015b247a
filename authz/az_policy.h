/*
 * az_policy.h - the offer policy: who may offer remote assistance to which
 * machines, view-only or with control.
 *
 * It replaces the Windows "Offer Remote Assistance" group policy: a list of
 * DOMAIN\user and DOMAIN\group entries, each granting view or control, and
 * scoped to a directory subtree (an OU, like a GPO linked to that OU), a
 * group of machines, or all machines. The language is in docs/POLICY.md.
 *
 * Evaluation: every rule whose subject matches the helper (its account or
 * any of its groups) and whose scope matches the machine is collected. Any
 * matching deny gives NONE (an explicit deny wins); otherwise the highest
 * right among the matching allows (tie: first in file order); nothing
 * matching gives NONE (default deny). The deciding rule's scope supplies the
 * limits (ticket lifetime, prompt timeout, what to do when nobody is logged
 * on), with unset values inherited from the `defaults` line.
 *
 * A loaded policy is immutable: evaluation is pure (no I/O, no allocation,
 * no global state), so one policy may be used by any number of callers and
 * swapped atomically on reload (SIGHUP: load the new one, then free the old
 * one once no decision is in progress).
 */
#ifndef AZ_POLICY_H
#define AZ_POLICY_H

#include <stddef.h>

enum az_right { AZ_RIGHT_NONE = 0, AZ_RIGHT_VIEW = 1, AZ_RIGHT_CONTROL = 2 };
enum az_nobody { AZ_NOBODY_DECLINE = 0, AZ_NOBODY_ALLOW_VIEW, AZ_NOBODY_ALLOW };

/* Hard limits of the language (see docs/POLICY.md). */
#define AZ_POLICY_LINE_MAX 4096 /* bytes per line, without the newline */
#define AZ_POLICY_DN_MAX 4096   /* bytes of a normalised DN, with the NUL */
#define AZ_POLICY_RULES_MAX 65536
#define AZ_POLICY_SCOPES_MAX 4096
#define AZ_POLICY_DURATION_MIN 1     /* seconds */
#define AZ_POLICY_DURATION_MAX 86400 /* seconds (24 h) */

/* Built-in limits, used when the `defaults` line does not set them. */
#define AZ_POLICY_DEFAULT_PROMPT_TIMEOUT 60 /* seconds */
#define AZ_POLICY_DEFAULT_MAX_TICKET 1800   /* seconds */

struct az_policy;
struct az_rule;

/* The helper: canonical "CORP\\alice" and its groups, nested included (as in
 * struct az_entry). NULL account or groups match nothing. */
struct az_subject {
	const char *account;
	const char *const *groups;
	size_t ngroups;
};

/* The machine: FQDN (informational), its DN (NULL if unknown: then no OU
 * scope matches it) and its groups. */
struct az_target {
	const char *fqdn;
	const char *dn;
	const char *const *groups;
	size_t ngroups;
};

struct az_decision {
	enum az_right right;
	const struct az_rule *rule; /* NULL => default deny */
	/* `allow control group "CORP\tier2" on workstations (policy.conf:12)`
	 * or "default deny" (with a reason in parentheses when the machine's
	 * DN could not be read). Always NUL-terminated, maybe truncated. */
	char rule_text[256];
	unsigned max_ticket_s, prompt_timeout_s;
	enum az_nobody nobody;
};

/* Parse a policy. On error NULL, and err holds
 * "NAME:LINE:COL: message" (COL omitted when the whole line is at fault).
 * An empty policy (no rules) is valid: it denies everything. */
struct az_policy *az_policy_load_file(
    const char *path, char *err, size_t errlen);
struct az_policy *az_policy_load_buffer(
    const char *name, const char *buf, size_t len, char *err, size_t errlen);
void az_policy_free(struct az_policy *p);

/* The decision for helper `s` on machine `t`. Never fails; d is always
 * filled. Also answers "which right has this subject on this target" for
 * machine listings. */
void az_policy_eval(const struct az_policy *p, const struct az_subject *s,
    const struct az_target *t, struct az_decision *d);

/* An upper bound of what `s` can get on any machine: NONE when no allow rule
 * names the subject (or a deny on a scope selecting every machine does), so
 * a listing can skip such helpers without evaluating each machine. For every
 * target t: az_policy_eval(p, s, t).right <= az_policy_subject_max(p, s). */
enum az_right az_policy_subject_max(
    const struct az_policy *p, const struct az_subject *s);

/* What may happen without consent when nobody is logged on: NONE (decline),
 * at most VIEW (allow-view), or the granted right (allow). */
enum az_right az_decision_unattended(const struct az_decision *d);

size_t az_policy_nrules(const struct az_policy *p);
size_t az_policy_nscopes(const struct az_policy *p); /* `all` included */
const char *az_policy_name(const struct az_policy *p);

/* The deciding rule: its line in the policy, its position (0-based, file
 * order) and its text (as in rule_text). */
unsigned az_rule_line(const struct az_rule *r);
size_t az_rule_index(const struct az_rule *r);
const char *az_rule_text(const struct az_rule *r);

const char *az_right_name(enum az_right r);   /* "none" "view" "control" */
const char *az_nobody_name(enum az_nobody n); /* "decline" ... "allow" */

/*
 * Normalises an LDAP DN (RFC 4514) to the form used for OU matching: RDNs
 * joined by ",", attribute types and ASCII letters of values in lower case,
 * spaces around ",", "=", "+" dropped, runs of spaces inside a value
 * collapsed to one, escapes decoded and special bytes re-escaped as \xx,
 * the AVAs of a multi-valued RDN sorted. Returns the length written, or -1
 * if the DN is malformed or does not fit in outlen.
 */
int az_policy_dn_normalize(const char *dn, char *out, size_t outlen);

/* 1 if the DN `dn` is `base` or lies below it (on RDN boundaries,
 * case-insensitively), 0 if not, -1 if either is malformed. */
int az_policy_dn_within(const char *dn, const char *base);

#endif
