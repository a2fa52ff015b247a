/*
 * az_policy.c - the offer policy: loaded form, DN matching and evaluation.
 * The parser (line-oriented, strict, every error with file:line:col) is at
 * the end of this file.
 *
 * Evaluation is one pass over the rules in file order. The helper's names
 * are compared first (cheap and usually decisive), the machine's scope only
 * for rules naming the helper. The machine's DN is normalised at most once
 * per decision, lazily, into a stack buffer: no allocation, no I/O.
 */
#include "az_policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum azp_scope_kind { AZP_SCOPE_ALL = 0, AZP_SCOPE_OU, AZP_SCOPE_GROUP };

#define AZP_SET_MAX_TICKET 0x1
#define AZP_SET_PROMPT 0x2
#define AZP_SET_NOBODY 0x4

struct azp_limits {
	unsigned max_ticket_s, prompt_timeout_s;
	enum az_nobody nobody;
	unsigned set; /* AZP_SET_* given explicitly */
};

struct azp_scope {
	char *name;
	enum azp_scope_kind kind;
	char *arg; /* OU: canonical DN; GROUP: "DOMAIN\\name" */
	size_t arglen;
	struct azp_limits lim; /* resolved against defaults after parsing */
	unsigned line;         /* 0 for the built-in `all` until redefined */
};

struct az_rule {
	int deny;
	enum az_right right; /* NONE for deny */
	int is_group;
	char *name;
	size_t scope; /* index in scopes */
	unsigned line;
	size_t index;
	char *text; /* as shown in decisions */
};

struct az_policy {
	char *name;
	struct azp_limits defaults;
	unsigned defaults_line;
	struct azp_scope *scopes; /* [0] is the built-in `all` */
	size_t nscopes, scopecap;
	struct az_rule *rules;
	size_t nrules, rulecap;
};

/* ---- names --------------------------------------------------------------
 * Windows compares account names case-insensitively. We fold ASCII only and
 * compare other bytes (UTF-8) exactly: no locale dependence. */

static unsigned char
lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static int
azp_name_eq(const char *a, const char *b)
{
	const unsigned char *x = (const unsigned char *)a;
	const unsigned char *y = (const unsigned char *)b;

	if (a == NULL || b == NULL)
		return 0;
	while (*x != '\0' && lower(*x) == lower(*y)) {
		x++;
		y++;
	}
	return *x == '\0' && *y == '\0';
}

/* ---- distinguished names ------------------------------------------------
 * RFC 4514 syntax. The canonical form makes "is within" a suffix test: a
 * value's ',' and '+' are always escaped as \2c and \2b there, so a bare
 * ',' in the canonical string is always an RDN boundary. */

#define DN_AVAS_MAX 16
#define DN_RDN_SCRATCH 1024

struct dnout {
	char *p;
	size_t len, cap;
	int err;
};

static void
put(struct dnout *o, char c)
{
	if (o->len + 1 >= o->cap) {
		o->err = 1;
		return;
	}
	o->p[o->len++] = c;
}

static void
put_hex(struct dnout *o, unsigned char c)
{
	static const char hx[] = "0123456789abcdef";

	put(o, '\\');
	put(o, hx[c >> 4]);
	put(o, hx[c & 15]);
}

static int
is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static const char *
skip_sp(const char *s)
{
	while (*s == ' ')
		s++;
	return s;
}

/* One attribute value up to an unescaped ',' or '+' or the end. Writes the
 * canonical value; returns the position after it or NULL if malformed. */
static const char *
dn_value(const char *s, struct dnout *o)
{
	unsigned char val[AZ_POLICY_DN_MAX];
	size_t n = 0, sig = 0, i;

	if (*s == '#') { /* BER hex string: kept as lower-case hex */
		size_t digits = 0;
		put(o, '#');
		for (s++; hexval((unsigned char)*s) >= 0; s++, digits++)
			put(o, (char)lower((unsigned char)*s));
		s = skip_sp(s);
		if (digits == 0 || digits % 2 != 0)
			return NULL;
		if (*s != '\0' && *s != ',' && *s != '+')
			return NULL;
		return s;
	}
	while (*s != '\0' && *s != ',' && *s != '+') {
		unsigned char c = (unsigned char)*s;
		int escaped = 0;

		if (c == '\\') {
			int h1 = hexval((unsigned char)s[1]);
			if (h1 >= 0) {
				int h2 = hexval((unsigned char)s[2]);
				if (h2 < 0)
					return NULL;
				c = (unsigned char)(h1 * 16 + h2);
				s += 3;
			} else if (s[1] != '\0' &&
			    strchr(" \"#+,;<=>\\", s[1]) != NULL) {
				c = (unsigned char)s[1];
				s += 2;
			} else {
				return NULL;
			}
			escaped = 1;
		} else if (c == '"' || c == ';' || c == '<' || c == '>') {
			return NULL;
		} else {
			s++;
		}
		if (c == ' ' && n > 0 && val[n - 1] == ' ')
			continue; /* runs of spaces count as one */
		if (n >= sizeof(val))
			return NULL;
		val[n++] = c;
		if (c != ' ' || escaped)
			sig = n;
	}
	n = sig; /* trailing unescaped spaces are not part of the value */
	if (n == 0)
		return NULL;
	for (i = 0; i < n; i++) {
		unsigned char c = lower(val[i]);
		if (c < 0x20 || c == 0x7f || strchr(",+\"\\<>;=#", c) != NULL ||
		    (c == ' ' && (i == 0 || i == n - 1)))
			put_hex(o, c);
		else
			put(o, (char)c);
	}
	return s;
}

static int
seg_cmp(const void *a, const void *b)
{
	const char *const *x = a, *const *y = b;
	return strcmp(*x, *y);
}

/* Sorts the '+'-separated AVAs of the RDN at o->p[start..o->len). */
static int
dn_sort_rdn(struct dnout *o, size_t start, size_t navas)
{
	char scratch[DN_RDN_SCRATCH];
	char *segs[DN_AVAS_MAX];
	size_t len = o->len - start, i, k = 0;

	if (navas < 2)
		return 0;
	if (len >= sizeof(scratch))
		return -1;
	memcpy(scratch, o->p + start, len);
	scratch[len] = '\0';
	segs[k++] = scratch;
	for (i = 0; i < len; i++) {
		if (scratch[i] == '+') {
			scratch[i] = '\0';
			segs[k++] = scratch + i + 1;
		}
	}
	qsort(segs, k, sizeof(segs[0]), seg_cmp);
	o->len = start;
	for (i = 0; i < k; i++) {
		const char *q;
		if (i > 0)
			put(o, '+');
		for (q = segs[i]; *q != '\0'; q++)
			put(o, *q);
	}
	return 0;
}

int
az_policy_dn_normalize(const char *dn, char *out, size_t outlen)
{
	struct dnout o = {out, 0, outlen, 0};
	const char *s = dn;

	if (dn == NULL || out == NULL || outlen == 0)
		return -1;
	for (;;) { /* one RDN */
		size_t start = o.len, navas = 0;
		for (;;) { /* one AVA */
			s = skip_sp(s);
			if (is_alpha((unsigned char)*s)) {
				while (is_alpha((unsigned char)*s) ||
				    is_digit((unsigned char)*s) || *s == '-')
					put(&o,
					    (char)lower((unsigned char)*s++));
			} else if (is_digit((unsigned char)*s)) {
				while (is_digit((unsigned char)*s) || *s == '.')
					put(&o, *s++);
				if (s[-1] == '.')
					return -1;
			} else {
				return -1;
			}
			s = skip_sp(s);
			if (*s++ != '=')
				return -1;
			put(&o, '=');
			s = skip_sp(s);
			if ((s = dn_value(s, &o)) == NULL)
				return -1;
			if (++navas > DN_AVAS_MAX)
				return -1;
			if (*s != '+')
				break;
			s++;
			put(&o, '+');
		}
		if (dn_sort_rdn(&o, start, navas) < 0)
			return -1;
		if (*s == '\0')
			break;
		s++; /* ',' */
		put(&o, ',');
	}
	if (o.err)
		return -1;
	out[o.len] = '\0';
	return (int)o.len;
}

/* Canonical t within canonical base b. */
static int
canon_within(const char *t, size_t tl, const char *b, size_t bl)
{
	if (tl < bl || memcmp(t + tl - bl, b, bl) != 0)
		return 0;
	return tl == bl || t[tl - bl - 1] == ',';
}

int
az_policy_dn_within(const char *dn, const char *base)
{
	char t[AZ_POLICY_DN_MAX], b[AZ_POLICY_DN_MAX];
	int tl, bl;

	if ((tl = az_policy_dn_normalize(dn, t, sizeof(t))) < 0 ||
	    (bl = az_policy_dn_normalize(base, b, sizeof(b))) < 0)
		return -1;
	return canon_within(t, (size_t)tl, b, (size_t)bl);
}

/* ---- evaluation --------------------------------------------------------- */

static int
subject_match(const struct az_rule *r, const struct az_subject *s)
{
	size_t i;

	if (s == NULL)
		return 0;
	if (!r->is_group)
		return azp_name_eq(r->name, s->account);
	if (s->groups == NULL)
		return 0;
	for (i = 0; i < s->ngroups; i++)
		if (azp_name_eq(r->name, s->groups[i]))
			return 1;
	return 0;
}

/* The machine's DN, normalised once per decision. */
struct dncache {
	int state; /* 0 not yet, 1 ok, -1 unknown (NULL), -2 malformed */
	size_t len;
	char buf[AZ_POLICY_DN_MAX];
};

/* 1 match, 0 no match, -1 the machine's DN is malformed (cannot tell). */
static int
scope_match(
    const struct azp_scope *sc, const struct az_target *t, struct dncache *dc)
{
	size_t i;

	switch (sc->kind) {
	case AZP_SCOPE_ALL:
		return 1;
	case AZP_SCOPE_GROUP:
		if (t == NULL || t->groups == NULL)
			return 0;
		for (i = 0; i < t->ngroups; i++)
			if (azp_name_eq(sc->arg, t->groups[i]))
				return 1;
		return 0;
	case AZP_SCOPE_OU:
		if (dc->state == 0) {
			int n;
			if (t == NULL || t->dn == NULL) {
				dc->state = -1;
			} else if ((n = az_policy_dn_normalize(
			                t->dn, dc->buf, sizeof(dc->buf))) < 0) {
				dc->state = -2;
			} else {
				dc->state = 1;
				dc->len = (size_t)n;
			}
		}
		if (dc->state == -1)
			return 0;
		if (dc->state == -2)
			return -1;
		return canon_within(dc->buf, dc->len, sc->arg, sc->arglen);
	}
	return 0;
}

static void
set_limits(struct az_decision *d, const struct azp_limits *l)
{
	d->max_ticket_s = l->max_ticket_s;
	d->prompt_timeout_s = l->prompt_timeout_s;
	d->nobody = l->nobody;
}

static void
decide(const struct az_policy *p, const struct az_rule *r, enum az_right right,
    struct az_decision *d)
{
	d->right = right;
	d->rule = r;
	snprintf(d->rule_text, sizeof(d->rule_text), "%s", r->text);
	set_limits(d, &p->scopes[r->scope].lim);
}

void
az_policy_eval(const struct az_policy *p, const struct az_subject *s,
    const struct az_target *t, struct az_decision *d)
{
	const struct az_rule *deny = NULL, *best = NULL;
	struct dncache dc;
	int dn_unreadable = 0;
	size_t i;

	memset(d, 0, sizeof(*d));
	d->right = AZ_RIGHT_NONE;
	d->rule = NULL;
	snprintf(d->rule_text, sizeof(d->rule_text), "default deny");
	d->max_ticket_s = AZ_POLICY_DEFAULT_MAX_TICKET;
	d->prompt_timeout_s = AZ_POLICY_DEFAULT_PROMPT_TIMEOUT;
	d->nobody = AZ_NOBODY_DECLINE;
	if (p == NULL)
		return;
	set_limits(d, &p->defaults);
	dc.state = 0;
	dc.len = 0;

	for (i = 0; i < p->nrules; i++) {
		const struct az_rule *r = &p->rules[i];
		int m;

		if (!subject_match(r, s))
			continue;
		if (!r->deny && best != NULL && r->right <= best->right)
			continue; /* cannot change the outcome */
		m = scope_match(&p->scopes[r->scope], t, &dc);
		if (m < 0 && r->deny) {
			/* A deny we cannot check: fail closed. An allow we
			 * cannot check simply does not apply. */
			dn_unreadable = 1;
			continue;
		}
		if (m <= 0)
			continue;
		if (r->deny) {
			deny = r;
			break; /* first deny in file order decides */
		}
		best = r;
	}
	if (deny != NULL)
		decide(p, deny, AZ_RIGHT_NONE, d);
	else if (dn_unreadable)
		snprintf(d->rule_text, sizeof(d->rule_text),
		    "default deny (machine DN malformed)");
	else if (best != NULL)
		decide(p, best, best->right, d);
}

enum az_right
az_policy_subject_max(const struct az_policy *p, const struct az_subject *s)
{
	enum az_right max = AZ_RIGHT_NONE;
	size_t i;

	if (p == NULL)
		return AZ_RIGHT_NONE;
	for (i = 0; i < p->nrules; i++) {
		const struct az_rule *r = &p->rules[i];
		if (!subject_match(r, s))
			continue;
		if (r->deny && p->scopes[r->scope].kind == AZP_SCOPE_ALL)
			return AZ_RIGHT_NONE;
		if (!r->deny && r->right > max)
			max = r->right;
	}
	return max;
}

enum az_right
az_decision_unattended(const struct az_decision *d)
{
	switch (d->nobody) {
	case AZ_NOBODY_ALLOW:
		return d->right;
	case AZ_NOBODY_ALLOW_VIEW:
		return d->right >= AZ_RIGHT_VIEW ? AZ_RIGHT_VIEW
		                                 : AZ_RIGHT_NONE;
	case AZ_NOBODY_DECLINE:
		break;
	}
	return AZ_RIGHT_NONE;
}

/* ---- accessors and lifetime -------------------------------------------- */

size_t
az_policy_nrules(const struct az_policy *p)
{
	return p != NULL ? p->nrules : 0;
}

size_t
az_policy_nscopes(const struct az_policy *p)
{
	return p != NULL ? p->nscopes : 0;
}

const char *
az_policy_name(const struct az_policy *p)
{
	return p != NULL ? p->name : "";
}

unsigned
az_rule_line(const struct az_rule *r)
{
	return r != NULL ? r->line : 0;
}

size_t
az_rule_index(const struct az_rule *r)
{
	return r != NULL ? r->index : 0;
}

const char *
az_rule_text(const struct az_rule *r)
{
	return r != NULL ? r->text : "default deny";
}

const char *
az_right_name(enum az_right r)
{
	switch (r) {
	case AZ_RIGHT_NONE:
		return "none";
	case AZ_RIGHT_VIEW:
		return "view";
	case AZ_RIGHT_CONTROL:
		return "control";
	}
	return "none";
}

const char *
az_nobody_name(enum az_nobody n)
{
	switch (n) {
	case AZ_NOBODY_DECLINE:
		return "decline";
	case AZ_NOBODY_ALLOW_VIEW:
		return "allow-view";
	case AZ_NOBODY_ALLOW:
		return "allow";
	}
	return "decline";
}

void
az_policy_free(struct az_policy *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nrules; i++) {
		free(p->rules[i].name);
		free(p->rules[i].text);
	}
	free(p->rules);
	for (i = 0; i < p->nscopes; i++) {
		free(p->scopes[i].name);
		free(p->scopes[i].arg);
	}
	free(p->scopes);
	free(p->name);
	free(p);
}

/* ---- parser -------------------------------------------------------------
 * Line-oriented: each line is checked as bytes (length, NUL, control
 * characters, strict UTF-8), split into tokens (words, quoted strings, "="),
 * then matched against one of four statements. The first error stops the
 * parse and names NAME:LINE:COL. */

#define TOKS_MAX 32
#define SCOPE_NAME_MAX 64
#define SHOW_MAX 64
#define FILE_MAX (16u * 1024 * 1024)

enum tok_kind { T_WORD, T_STR, T_EQ };

struct tok {
	enum tok_kind kind;
	const char *s; /* decoded, NUL-terminated (in the parser's buffer) */
	size_t len;
	unsigned col;
};

struct parser {
	struct az_policy *p;
	const char *name;
	unsigned line;
	char *err;
	size_t errlen;
	struct tok toks[TOKS_MAX];
	size_t ntok;
	char buf[2 * AZ_POLICY_LINE_MAX + 2 * TOKS_MAX]; /* decoded tokens */
	char dn[AZ_POLICY_DN_MAX];
};

static int perr(struct parser *ps, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
perr(struct parser *ps, unsigned col, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ps->err == NULL || ps->errlen == 0)
		return -1;
	if (col > 0)
		n = snprintf(
		    ps->err, ps->errlen, "%s:%u:%u: ", ps->name, ps->line, col);
	else
		n = snprintf(
		    ps->err, ps->errlen, "%s:%u: ", ps->name, ps->line);
	if (n < 0 || (size_t)n >= ps->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* A token's text for an error message: at most SHOW_MAX bytes, cut on a
 * UTF-8 boundary, with '"' and '\\' shown escaped. Tokens never hold
 * control characters (lines are checked first). */
static const char *
show(const struct tok *t, char *out, size_t outlen)
{
	size_t i, o = 0, n = t->len;

	if (n > SHOW_MAX) {
		n = SHOW_MAX;
		while (n > 0 && ((unsigned char)t->s[n] & 0xc0) == 0x80)
			n--;
	}
	for (i = 0; i < n && o + 4 < outlen; i++) {
		if (t->s[i] == '"' || t->s[i] == '\\')
			out[o++] = '\\';
		out[o++] = t->s[i];
	}
	if (n < t->len && o + 4 < outlen) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

static int
tok_is(const struct tok *t, const char *word)
{
	return t->kind == T_WORD && strcmp(t->s, word) == 0;
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, <= U+10FFFF), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0], lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < len)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

static int
check_bytes(struct parser *ps, const unsigned char *l, size_t n)
{
	size_t i = 0, k;

	while (i < n) {
		unsigned char c = l[i];
		if (c == '\0')
			return perr(ps, (unsigned)i + 1, "NUL byte");
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return perr(
			    ps, (unsigned)i + 1, "control character 0x%02x", c);
		if ((k = utf8_len(l + i, n - i)) == 0)
			return perr(ps, (unsigned)i + 1, "invalid UTF-8");
		i += k;
	}
	return 0;
}

static int
tokenize(struct parser *ps, const char *l, size_t n)
{
	size_t i = 0, b = 0;

	ps->ntok = 0;
	for (;;) {
		struct tok *t;
		while (i < n && (l[i] == ' ' || l[i] == '\t'))
			i++;
		if (i >= n || l[i] == '#')
			return 0;
		if (ps->ntok == TOKS_MAX)
			return perr(ps, (unsigned)i + 1,
			    "too many words on one line (max %d)", TOKS_MAX);
		t = &ps->toks[ps->ntok++];
		t->col = (unsigned)i + 1;
		t->s = ps->buf + b;
		if (l[i] == '=') {
			t->kind = T_EQ;
			ps->buf[b++] = '=';
			i++;
		} else if (l[i] == '"') {
			/* \\ and \" are escapes; any other backslash is
			 * literal, so "CORP\helpdesk" reads as written. */
			t->kind = T_STR;
			for (i++;; i++) {
				if (i >= n)
					return perr(
					    ps, t->col, "unterminated string");
				if (l[i] == '"')
					break;
				if (l[i] == '\\' && i + 1 < n &&
				    (l[i + 1] == '\\' || l[i + 1] == '"'))
					i++;
				ps->buf[b++] = l[i];
			}
			i++;
			if (i < n && l[i] != ' ' && l[i] != '\t' && l[i] != '#')
				return perr(ps, (unsigned)i + 1,
				    "expected a space after the closing quote");
		} else {
			t->kind = T_WORD;
			while (i < n && l[i] != ' ' && l[i] != '\t' &&
			    l[i] != '=' && l[i] != '"' && l[i] != '#')
				ps->buf[b++] = l[i++];
		}
		t->len = (size_t)(ps->buf + b - t->s);
		ps->buf[b++] = '\0';
	}
}

/* "90s", "30m", "2h", "1h30m": one or more <digits><unit>. */
static int
parse_duration(struct parser *ps, const struct tok *t, unsigned *out)
{
	const char *s = t->s;
	unsigned long long total = 0;
	char tmp[SHOW_MAX * 2 + 8];

	if (*s == '\0')
		goto bad;
	while (*s != '\0') {
		unsigned long long v = 0;
		int digits = 0;
		while (is_digit((unsigned char)*s)) {
			if (++digits > 6)
				goto range;
			v = v * 10 + (unsigned)(*s++ - '0');
		}
		if (digits == 0)
			goto bad;
		switch (*s++) {
		case 's':
			break;
		case 'm':
			v *= 60;
			break;
		case 'h':
			v *= 3600;
			break;
		default:
			goto bad;
		}
		total += v;
	}
	if (total < AZ_POLICY_DURATION_MIN || total > AZ_POLICY_DURATION_MAX)
		goto range;
	*out = (unsigned)total;
	return 0;
bad:
	return perr(ps, t->col,
	    "bad duration \"%s\" (use e.g. 90s, 30m, 2h or 1h30m)",
	    show(t, tmp, sizeof(tmp)));
range:
	return perr(ps, t->col, "duration \"%s\" out of range (1s to 24h)",
	    show(t, tmp, sizeof(tmp)));
}

/* Is the token one of the limit options' keys? */
static int
is_option_key(const struct tok *t)
{
	return tok_is(t, "max-ticket") || tok_is(t, "prompt-timeout") ||
	    tok_is(t, "nobody");
}

/* key=value options from toks[k] to the end of the line. */
static int
parse_options(struct parser *ps, size_t k, struct azp_limits *lim)
{
	char tmp[SHOW_MAX * 2 + 8];

	while (k < ps->ntok) {
		const struct tok *key = &ps->toks[k], *val;
		unsigned bit;

		if (key->kind != T_WORD)
			return perr(ps, key->col, "expected an option, got %s",
			    key->kind == T_EQ ? "\"=\"" : "a string");
		if (tok_is(key, "max-ticket"))
			bit = AZP_SET_MAX_TICKET;
		else if (tok_is(key, "prompt-timeout"))
			bit = AZP_SET_PROMPT;
		else if (tok_is(key, "nobody"))
			bit = AZP_SET_NOBODY;
		else
			return perr(ps, key->col,
			    "unknown option \"%s\" (expected max-ticket, "
			    "prompt-timeout or nobody)",
			    show(key, tmp, sizeof(tmp)));
		if (k + 1 >= ps->ntok || ps->toks[k + 1].kind != T_EQ)
			return perr(ps, key->col, "expected \"=\" after \"%s\"",
			    key->s);
		if (k + 2 >= ps->ntok || ps->toks[k + 2].kind == T_EQ)
			return perr(ps, ps->toks[k + 1].col,
			    "missing value for \"%s\"", key->s);
		if (lim->set & bit)
			return perr(
			    ps, key->col, "duplicate option \"%s\"", key->s);
		val = &ps->toks[k + 2];
		if (bit == AZP_SET_MAX_TICKET) {
			if (parse_duration(ps, val, &lim->max_ticket_s) < 0)
				return -1;
		} else if (bit == AZP_SET_PROMPT) {
			if (parse_duration(ps, val, &lim->prompt_timeout_s) < 0)
				return -1;
		} else if (strcmp(val->s, "decline") == 0) {
			lim->nobody = AZ_NOBODY_DECLINE;
		} else if (strcmp(val->s, "allow-view") == 0) {
			lim->nobody = AZ_NOBODY_ALLOW_VIEW;
		} else if (strcmp(val->s, "allow") == 0) {
			lim->nobody = AZ_NOBODY_ALLOW;
		} else {
			return perr(ps, val->col,
			    "bad value \"%s\" for nobody (expected decline, "
			    "allow-view or allow)",
			    show(val, tmp, sizeof(tmp)));
		}
		lim->set |= bit;
		k += 3;
	}
	return 0;
}

/* "DOMAIN\name": a non-empty domain without '\\', one '\\', and a
 * non-empty name without '\\'. */
static int
check_account(struct parser *ps, const struct tok *t, const char *what)
{
	const char *bs = memchr(t->s, '\\', t->len);
	char tmp[SHOW_MAX * 2 + 8];

	if (t->kind != T_STR)
		return perr(
		    ps, t->col, "%s must be a quoted \"DOMAIN\\name\"", what);
	if (bs == NULL || bs == t->s || bs[1] == '\0' ||
	    strchr(bs + 1, '\\') != NULL)
		return perr(ps, t->col,
		    "%s \"%s\" is not of the form \"DOMAIN\\name\"", what,
		    show(t, tmp, sizeof(tmp)));
	return 0;
}

static int
valid_scope_name(const struct tok *t)
{
	size_t i;

	if (t->kind != T_WORD || t->len == 0 || t->len > SCOPE_NAME_MAX ||
	    !is_alpha((unsigned char)t->s[0]))
		return 0;
	for (i = 1; i < t->len; i++) {
		unsigned char c = (unsigned char)t->s[i];
		if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_' &&
		    c != '.')
			return 0;
	}
	return 1;
}

static struct azp_scope *
find_scope(struct az_policy *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nscopes; i++)
		if (azp_name_eq(p->scopes[i].name, name))
			return &p->scopes[i];
	return NULL;
}

static int
parse_defaults(struct parser *ps)
{
	struct az_policy *p = ps->p;

	if (p->defaults_line != 0)
		return perr(ps, ps->toks[0].col,
		    "duplicate defaults (first at line %u)", p->defaults_line);
	if (ps->ntok < 2)
		return perr(ps, 0,
		    "defaults needs at least one option (max-ticket, "
		    "prompt-timeout, nobody)");
	if (parse_options(ps, 1, &p->defaults) < 0)
		return -1;
	p->defaults_line = ps->line;
	return 0;
}

static int
parse_scope(struct parser *ps)
{
	struct az_policy *p = ps->p;
	const struct tok *nt, *sel;
	struct azp_scope sc, *old;
	char tmp[SHOW_MAX * 2 + 8];
	size_t k = 3;
	int builtin_all;

	if (ps->ntok < 2)
		return perr(ps, 0, "scope needs a name");
	nt = &ps->toks[1];
	if (!valid_scope_name(nt))
		return perr(ps, nt->col,
		    "bad scope name %s%s%s (a letter, then letters, digits, "
		    "'-', '_' or '.', at most %d)",
		    nt->kind == T_WORD ? "\"" : "",
		    nt->kind == T_WORD ? show(nt, tmp, sizeof(tmp))
		                       : "(not a word)",
		    nt->kind == T_WORD ? "\"" : "", SCOPE_NAME_MAX);
	builtin_all = azp_name_eq(nt->s, "all");
	old = find_scope(p, nt->s);
	if (old != NULL && !(builtin_all && old->line == 0))
		return perr(ps, nt->col,
		    "duplicate scope \"%s\" (first defined at line %u)", nt->s,
		    old->line);
	if (p->nscopes >= AZ_POLICY_SCOPES_MAX)
		return perr(ps, nt->col, "too many scopes (max %d)",
		    AZ_POLICY_SCOPES_MAX);

	memset(&sc, 0, sizeof(sc));
	sc.line = ps->line;
	sel = ps->toks + 2;
	if (ps->ntok < 3 || is_option_key(sel)) {
		if (!builtin_all)
			return perr(ps, 0,
			    "scope \"%s\" needs a selector: ou=\"DN\", "
			    "machine-group=\"DOMAIN\\name\" or all",
			    nt->s);
		sc.kind = AZP_SCOPE_ALL;
		k = 2;
	} else if (tok_is(sel, "all")) {
		sc.kind = AZP_SCOPE_ALL;
	} else if (tok_is(sel, "ou") || tok_is(sel, "machine-group")) {
		const struct tok *v;
		if (builtin_all)
			return perr(ps, sel->col,
			    "scope \"all\" always selects every machine");
		if (ps->ntok < 4 || ps->toks[3].kind != T_EQ)
			return perr(ps, sel->col, "expected \"=\" after \"%s\"",
			    sel->s);
		if (ps->ntok < 5 || ps->toks[4].kind != T_STR)
			return perr(ps, ps->toks[3].col,
			    "%s needs a quoted value", sel->s);
		v = &ps->toks[4];
		if (tok_is(sel, "ou")) {
			int n = az_policy_dn_normalize(
			    v->s, ps->dn, sizeof(ps->dn));
			if (n < 0)
				return perr(ps, v->col, "malformed DN \"%s\"",
				    show(v, tmp, sizeof(tmp)));
			sc.kind = AZP_SCOPE_OU;
			sc.arg = strdup(ps->dn);
			sc.arglen = (size_t)n;
		} else {
			if (check_account(ps, v, "machine group") < 0)
				return -1;
			sc.kind = AZP_SCOPE_GROUP;
			sc.arg = strdup(v->s);
			sc.arglen = v->len;
		}
		if (sc.arg == NULL)
			return perr(ps, 0, "out of memory");
		k = 5;
	} else {
		free(sc.arg);
		return perr(ps, sel->col,
		    "unknown scope selector \"%s\" (expected ou=, "
		    "machine-group= or all)",
		    show(sel, tmp, sizeof(tmp)));
	}
	if (k < ps->ntok &&
	    (tok_is(&ps->toks[k], "ou") ||
	        tok_is(&ps->toks[k], "machine-group") ||
	        tok_is(&ps->toks[k], "all"))) {
		free(sc.arg);
		return perr(ps, ps->toks[k].col,
		    "a scope has exactly one selector (define one scope "
		    "per OU or machine group)");
	}
	if (parse_options(ps, k, &sc.lim) < 0) {
		free(sc.arg);
		return -1;
	}
	if (builtin_all && old != NULL) { /* configures the built-in */
		old->lim = sc.lim;
		old->line = ps->line;
		return 0;
	}
	if ((sc.name = strdup(nt->s)) == NULL) {
		free(sc.arg);
		return perr(ps, 0, "out of memory");
	}
	if (p->nscopes == p->scopecap) {
		size_t ncap = p->scopecap * 2;
		struct azp_scope *ns = realloc(p->scopes, ncap * sizeof(*ns));
		if (ns == NULL) {
			free(sc.name);
			free(sc.arg);
			return perr(ps, 0, "out of memory");
		}
		p->scopes = ns;
		p->scopecap = ncap;
	}
	p->scopes[p->nscopes++] = sc;
	return 0;
}

/* The text of a rule as shown in decisions and the audit trail; quotes the
 * name so that it would parse back to the same name. */
static char *
rule_text(const struct az_rule *r, const struct azp_scope *sc, const char *file)
{
	size_t nlen = strlen(r->name), cap, o, i;
	char *t;
	int n;

	cap = 2 * nlen + strlen(sc->name) + strlen(file) + 80;
	if ((t = malloc(cap)) == NULL)
		return NULL;
	n = snprintf(t, cap, "%s%s%s %s \"", r->deny ? "deny" : "allow",
	    r->deny ? "" : " ", r->deny ? "" : az_right_name(r->right),
	    r->is_group ? "group" : "user");
	o = (size_t)n;
	for (i = 0; i < nlen; i++) {
		char c = r->name[i], next = r->name[i + 1];
		if (c == '"' ||
		    (c == '\\' &&
		        (next == '\\' || next == '"' || next == '\0')))
			t[o++] = '\\';
		t[o++] = c;
	}
	snprintf(t + o, cap - o, "\" on %s (%s:%u)", sc->name, file, r->line);
	return t;
}

static int
parse_rule(struct parser *ps, int deny)
{
	struct az_policy *p = ps->p;
	struct az_rule r;
	const struct tok *t;
	const struct azp_scope *sc;
	char tmp[SHOW_MAX * 2 + 8];
	size_t k = 1;

	memset(&r, 0, sizeof(r));
	r.deny = deny;
	r.line = ps->line;
	if (!deny) {
		if (k >= ps->ntok)
			return perr(
			    ps, 0, "allow needs a right: view or control");
		t = &ps->toks[k++];
		if (tok_is(t, "view"))
			r.right = AZ_RIGHT_VIEW;
		else if (tok_is(t, "control"))
			r.right = AZ_RIGHT_CONTROL;
		else
			return perr(ps, t->col,
			    "expected view or control after allow, got \"%s\"",
			    show(t, tmp, sizeof(tmp)));
	} else if (ps->ntok > 1 &&
	    (tok_is(&ps->toks[1], "view") || tok_is(&ps->toks[1], "control"))) {
		return perr(ps, ps->toks[1].col,
		    "deny takes no right: it denies view and control");
	}
	if (k >= ps->ntok)
		return perr(ps, 0,
		    "%s needs a subject: user \"DOMAIN\\name\" "
		    "or group \"DOMAIN\\name\"",
		    deny ? "deny" : "allow");
	t = &ps->toks[k++];
	if (tok_is(t, "user"))
		r.is_group = 0;
	else if (tok_is(t, "group"))
		r.is_group = 1;
	else
		return perr(ps, t->col, "expected user or group, got \"%s\"",
		    show(t, tmp, sizeof(tmp)));
	if (k >= ps->ntok)
		return perr(ps, 0, "missing the %s name",
		    r.is_group ? "group" : "user");
	t = &ps->toks[k++];
	if (check_account(ps, t, r.is_group ? "group" : "user") < 0)
		return -1;
	if (k >= ps->ntok || !tok_is(&ps->toks[k], "on"))
		return perr(ps, k < ps->ntok ? ps->toks[k].col : 0,
		    "expected \"on SCOPE\" after the %s name (use \"on all\" "
		    "for every machine)",
		    r.is_group ? "group" : "user");
	k++;
	if (k >= ps->ntok)
		return perr(ps, 0, "missing the scope name after \"on\"");
	t = &ps->toks[k++];
	if (t->kind != T_WORD || (sc = find_scope(p, t->s)) == NULL)
		return perr(ps, t->col,
		    "unknown scope \"%s\" (scopes must be defined before use)",
		    show(t, tmp, sizeof(tmp)));
	if (k < ps->ntok)
		return perr(ps, ps->toks[k].col,
		    "unexpected \"%s\" after the rule",
		    show(&ps->toks[k], tmp, sizeof(tmp)));
	if (p->nrules >= AZ_POLICY_RULES_MAX)
		return perr(
		    ps, 0, "too many rules (max %d)", AZ_POLICY_RULES_MAX);
	r.scope = (size_t)(sc - p->scopes);
	r.index = p->nrules;
	if ((r.name = strdup(ps->toks[k - 3].s)) == NULL ||
	    (r.text = rule_text(&r, sc, ps->name)) == NULL) {
		free(r.name);
		return perr(ps, 0, "out of memory");
	}
	if (p->nrules == p->rulecap) {
		size_t ncap = p->rulecap ? p->rulecap * 2 : 16;
		struct az_rule *nr = realloc(p->rules, ncap * sizeof(*nr));
		if (nr == NULL) {
			free(r.name);
			free(r.text);
			return perr(ps, 0, "out of memory");
		}
		p->rules = nr;
		p->rulecap = ncap;
	}
	p->rules[p->nrules++] = r;
	return 0;
}

static int
parse_line(struct parser *ps, const char *l, size_t n)
{
	const struct tok *t;
	char tmp[SHOW_MAX * 2 + 8];

	if (n > AZ_POLICY_LINE_MAX)
		return perr(ps, 0, "line too long (%zu bytes, max %d)", n,
		    AZ_POLICY_LINE_MAX);
	if (check_bytes(ps, (const unsigned char *)l, n) < 0)
		return -1;
	if (tokenize(ps, l, n) < 0)
		return -1;
	if (ps->ntok == 0)
		return 0;
	t = &ps->toks[0];
	if (tok_is(t, "allow"))
		return parse_rule(ps, 0);
	if (tok_is(t, "deny"))
		return parse_rule(ps, 1);
	if (tok_is(t, "scope"))
		return parse_scope(ps);
	if (tok_is(t, "defaults"))
		return parse_defaults(ps);
	if (t->kind != T_WORD)
		return perr(ps, t->col,
		    "expected a keyword (allow, deny, scope, defaults)");
	return perr(ps, t->col,
	    "unknown keyword \"%s\" (expected allow, deny, scope or "
	    "defaults)",
	    show(t, tmp, sizeof(tmp)));
}

static void
resolve(struct azp_limits *l, const struct azp_limits *d)
{
	if (!(l->set & AZP_SET_MAX_TICKET))
		l->max_ticket_s = d->max_ticket_s;
	if (!(l->set & AZP_SET_PROMPT))
		l->prompt_timeout_s = d->prompt_timeout_s;
	if (!(l->set & AZP_SET_NOBODY))
		l->nobody = d->nobody;
}

struct az_policy *
az_policy_load_buffer(
    const char *name, const char *buf, size_t len, char *err, size_t errlen)
{
	static const struct azp_limits builtin = {AZ_POLICY_DEFAULT_MAX_TICKET,
	    AZ_POLICY_DEFAULT_PROMPT_TIMEOUT, AZ_NOBODY_DECLINE,
	    AZP_SET_MAX_TICKET | AZP_SET_PROMPT | AZP_SET_NOBODY};
	struct parser *ps;
	struct az_policy *p;
	size_t off = 0, i;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (name == NULL)
		name = "policy";
	ps = calloc(1, sizeof(*ps));
	p = calloc(1, sizeof(*p));
	if (ps == NULL || p == NULL || (p->name = strdup(name)) == NULL ||
	    (p->scopes = calloc(4, sizeof(*p->scopes))) == NULL ||
	    (p->scopes[0].name = strdup("all")) == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: out of memory", name);
		if (p != NULL && p->scopes != NULL && p->scopes[0].name != NULL)
			p->nscopes = 1;
		az_policy_free(p);
		free(ps);
		return NULL;
	}
	ps->p = p;
	ps->name = name;
	ps->err = err;
	ps->errlen = errlen;
	p->scopecap = 4;
	p->nscopes = 1; /* the built-in `all` */
	p->scopes[0].kind = AZP_SCOPE_ALL;

	while (buf != NULL && off < len) {
		const char *l = buf + off, *nl = memchr(l, '\n', len - off);
		size_t n = nl != NULL ? (size_t)(nl - l) : len - off;

		off += n + (nl != NULL ? 1 : 0);
		ps->line++;
		if (n > 0 && l[n - 1] == '\r')
			n--;
		if (ps->line == 1 && n >= 3 &&
		    memcmp(l, "\xef\xbb\xbf", 3) == 0)
			l += 3, n -= 3; /* a UTF-8 byte order mark */
		if (parse_line(ps, l, n) < 0) {
			az_policy_free(p);
			free(ps);
			return NULL;
		}
	}
	free(ps);
	resolve(&p->defaults, &builtin);
	for (i = 0; i < p->nscopes; i++)
		resolve(&p->scopes[i].lim, &p->defaults);
	return p;
}

struct az_policy *
az_policy_load_file(const char *path, char *err, size_t errlen)
{
	struct az_policy *p;
	struct stat st;
	FILE *f;
	char *buf;
	size_t n;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((f = fopen(path, "rb")) == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) ||
	    (unsigned long long)st.st_size > FILE_MAX) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: %s", path,
			    !S_ISREG(st.st_mode)
			        ? "not a regular file"
			        : "file too large (max 16 MiB)");
		fclose(f);
		return NULL;
	}
	if (st.st_mode & S_IWOTH) {
		/* Anyone could grant themselves control of every machine. */
		if (err != NULL && errlen > 0)
			snprintf(err, errlen,
			    "%s: writable by others, refusing it (chmod o-w)",
			    path);
		fclose(f);
		return NULL;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: out of memory", path);
		fclose(f);
		return NULL;
	}
	n = fread(buf, 1, (size_t)st.st_size, f);
	if (ferror(f)) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: read error", path);
		fclose(f);
		free(buf);
		return NULL;
	}
	fclose(f);
	p = az_policy_load_buffer(path, buf, n, err, errlen);
	free(buf);
	return p;
}
