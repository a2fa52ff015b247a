/*
 * az_sasl.c - helper authentication through Cyrus SASL (see az_sasl.h).
 *
 * Cyrus keeps process-wide state (plugins, global callbacks): it is set up
 * once, the first time az_sasl_new runs, and never torn down (re-running
 * sasl_server_init after sasl_server_done is fragile in Cyrus). The global
 * callbacks only decide where plugins come from and which files may be
 * opened; everything that depends on an az_sasl (mechanism list, password
 * check, proxy policy, logging) is a per-connection callback whose context
 * is the session.
 *
 * Why our own checks in front of Cyrus: the PLAIN plugin verifies the
 * password before it looks at the authorization identity, and when our
 * password callback fails Cyrus tries its own verifiers (pwcheck_method).
 * So PLAIN messages are parsed here first (authzid must be empty or equal
 * to authcid, password non-empty without NUL) and nothing reaches the
 * directory otherwise; the fallback verifier is "auxprop" with no auxprop
 * plugin loaded, so it can never succeed.
 */
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sasl/sasl.h>

#include "az_dir.h"
#include "az_sasl.h"
#include "rp_error.h"
#include "rp_log.h"

#define MECH_NAME_MAX 20 /* RFC 4422 */
#define MSG_LEN 256

/* Mechanisms this module knows how to run, and the Cyrus plugin file that
 * provides each (NULL: built into libsasl2). GSSAPI will add
 * { "GSSAPI", "libgssapiv2.so" } once the keytab is configurable. */
static const struct {
	const char *name;
	const char *plugin;
} mech_table[] = {
    {"PLAIN", "libplain.so"},
    {"EXTERNAL", NULL},
};
#define NMECH (sizeof(mech_table) / sizeof(mech_table[0]))

struct az_sasl {
	struct az_dir *dir;
	char *mech_list; /* configured, upper case, space separated */
	char *service;
	char *realm;
	unsigned max_steps;
	unsigned refs; /* the owner + one per live session */
	int freed;
};

/* One start or step handed to a worker; lives inside the session. */
struct sess_job {
	int is_start;
	unsigned char *in; /* NUL-terminated copy; wiped after use */
	size_t inlen;
	int has_in;
	az_sasl_cb cb;
	void *arg;
	/* worker side */
	struct az_worker *w;
	int sasl_rc;
	int code;  /* rp_err recorded by our callbacks, 0 if none */
	int quiet; /* our password check failed: Cyrus's fallback noise */
	char msg[MSG_LEN];
	unsigned char *out;
	size_t outlen;
	struct az_entry *entry;
};

enum sess_state { SS_IDLE = 0, SS_EXCH, SS_DONE };

struct az_sasl_sess {
	struct az_sasl *s;
	sasl_conn_t *conn;
	sasl_callback_t cbs[6];
	char *peer_id;
	unsigned ssf;
	char *laddr, *raddr;
	char *mechs; /* offered on this session */
	char mech[MECH_NAME_MAX + 1];
	enum sess_state state;
	unsigned steps;
	int busy; /* a job is with a worker */
	int dead; /* freed while busy: the completion frees */
	struct az_entry *user;
	char errmsg[MSG_LEN];
	struct sess_job job;
};

/* ---- process-wide Cyrus set-up ------------------------------------- */

static pthread_once_t cyrus_once = PTHREAD_ONCE_INIT;
static int cyrus_rc = SASL_NOTINIT;
static char cyrus_plugin_dir[1024];

static void *
mtx_alloc(void)
{
	pthread_mutex_t *m = malloc(sizeof(*m));

	if (m != NULL && pthread_mutex_init(m, NULL) != 0) {
		free(m);
		m = NULL;
	}
	return m;
}

static int
mtx_lock(void *m)
{
	return pthread_mutex_lock(m) == 0 ? SASL_OK : SASL_FAIL;
}

static int
mtx_unlock(void *m)
{
	return pthread_mutex_unlock(m) == 0 ? SASL_OK : SASL_FAIL;
}

static void
mtx_free(void *m)
{
	if (m != NULL) {
		pthread_mutex_destroy(m);
		free(m);
	}
}

/* Cyrus messages: never at SASL_LOG_PASS (may hold passwords). */
static void
log_cyrus(int level, const char *message, int quiet)
{
	if (message == NULL)
		return;
	switch (level) {
	case SASL_LOG_ERR:
		if (!quiet) {
			log_warnx("sasl: %s", message);
			break;
		}
		/* FALLTHROUGH */
	case SASL_LOG_FAIL:
	case SASL_LOG_WARN:
	case SASL_LOG_NOTE:
	case SASL_LOG_DEBUG:
		log_debug("sasl: %s", message);
		break;
	default: /* TRACE, PASS: never */
		break;
	}
}

static int
g_log(void *ctx, int level, const char *message)
{
	log_cyrus(level, message, 0);
	return SASL_OK;
}

static int
g_getopt(void *ctx, const char *plugin, const char *option, const char **result,
    unsigned *len)
{
	/* Nothing global: no plugin_list, no config-file options. */
	return SASL_FAIL;
}

static int
g_getpath(void *ctx, const char **path)
{
	*path = cyrus_plugin_dir;
	return SASL_OK;
}

static int
g_getconfpath(void *ctx, char **path)
{
	/* A path without config; the verify-file callback refuses any
	 * config file anyway. */
	*path = (char *)"/nonexistent/rabroker-sasl";
	return SASL_OK;
}

static int
g_verifyfile(void *ctx, const char *file, sasl_verify_type_t type)
{
	const char *base;
	size_t i;

	if (type != SASL_VRFY_PLUGIN)
		return SASL_CONTINUE; /* config, password files: skipped */
	base = strrchr(file, '/');
	base = base != NULL ? base + 1 : file;
	for (i = 0; i < NMECH; i++)
		if (mech_table[i].plugin != NULL &&
		    strcmp(base, mech_table[i].plugin) == 0)
			return SASL_OK;
	return SASL_CONTINUE; /* not ours: not loaded */
}

typedef int (*sasl_cb_fn)(void);

static const sasl_callback_t global_cbs[] = {
    {SASL_CB_LOG, (sasl_cb_fn)(void (*)(void))g_log, NULL},
    {SASL_CB_GETOPT, (sasl_cb_fn)(void (*)(void))g_getopt, NULL},
    {SASL_CB_GETPATH, (sasl_cb_fn)(void (*)(void))g_getpath, NULL},
    {SASL_CB_GETCONFPATH, (sasl_cb_fn)(void (*)(void))g_getconfpath, NULL},
    {SASL_CB_VERIFYFILE, (sasl_cb_fn)(void (*)(void))g_verifyfile, NULL},
    {SASL_CB_LIST_END, NULL, NULL},
};

/* The plugin directory next to the libsasl2 we are linked with
 * (/usr/lib/x86_64-linux-gnu/libsasl2.so.2 -> .../sasl2): never $SASL_PATH. */
static void
default_plugin_dir(char *buf, size_t len)
{
	Dl_info info;
	const char *slash;

	if (dladdr((void *)(uintptr_t)&sasl_server_init, &info) != 0 &&
	    info.dli_fname != NULL &&
	    (slash = strrchr(info.dli_fname, '/')) != NULL &&
	    (size_t)(slash - info.dli_fname) + sizeof("/sasl2") < len) {
		snprintf(buf, len, "%.*s/sasl2", (int)(slash - info.dli_fname),
		    info.dli_fname);
		return;
	}
	snprintf(buf, len, "/usr/lib/x86_64-linux-gnu/sasl2");
}

static char once_plugin_dir[1024];

static void
cyrus_init(void)
{
	if (once_plugin_dir[0] != '\0')
		snprintf(cyrus_plugin_dir, sizeof(cyrus_plugin_dir), "%s",
		    once_plugin_dir);
	else
		default_plugin_dir(cyrus_plugin_dir, sizeof(cyrus_plugin_dir));
	sasl_set_mutex(mtx_alloc, mtx_lock, mtx_unlock, mtx_free);
	cyrus_rc = sasl_server_init(global_cbs, "rabroker");
}

/* ---- per-connection callbacks (context: the session) --------------- */

static int
c_log(void *ctx, int level, const char *message)
{
	struct az_sasl_sess *ss = ctx;

	log_cyrus(level, message, ss->job.quiet);
	return SASL_OK;
}

static int
c_getopt(void *ctx, const char *plugin, const char *option, const char **result,
    unsigned *len)
{
	struct az_sasl_sess *ss = ctx;
	const char *v = NULL;

	if (option == NULL || result == NULL)
		return SASL_BADPARAM;
	if (plugin == NULL || *plugin == '\0') {
		if (strcmp(option, "mech_list") == 0)
			v = ss->s->mech_list;
		else if (strcmp(option, "pwcheck_method") == 0)
			v = "auxprop"; /* no auxprop plugin loaded: fails */
		else if (strcmp(option, "auto_transition") == 0)
			v = "no";
		else if (strcmp(option, "log_level") == 0)
			v = log_get_level() >= LOG_LVL_DEBUG ? "5" : "2";
	}
	/* GSSAPI will answer "keytab" here (plugin "GSSAPI"). */
	if (v == NULL)
		return SASL_FAIL;
	*result = v;
	if (len != NULL)
		*len = (unsigned)strlen(v);
	return SASL_OK;
}

/* PLAIN's password check, on the worker thread of the current job. */
static int
c_checkpass(sasl_conn_t *conn, void *ctx, const char *user, const char *pass,
    unsigned passlen, struct propctx *propctx)
{
	struct az_sasl_sess *ss = ctx;
	struct sess_job *j = &ss->job;
	struct az_entry *e = NULL;
	int rc;

	if (j->w == NULL || user == NULL || pass == NULL) {
		j->code = RP_ERR_INTERNAL;
		snprintf(
		    j->msg, sizeof(j->msg), "password check outside a job");
		j->quiet = 1;
		return SASL_FAIL;
	}
	/* Also refused by az_worker_check_password; refuse here first. */
	if (passlen == 0 || memchr(pass, '\0', passlen) != NULL) {
		j->code = RP_ERR_AUTH_FAILED;
		snprintf(j->msg, sizeof(j->msg),
		    "empty password or NUL in password refused");
		j->quiet = 1;
		return SASL_BADAUTH;
	}
	rc = az_worker_check_password(
	    j->w, user, pass, passlen, &e, j->msg, sizeof(j->msg));
	if (rc == 0 && e != NULL) {
		az_entry_free(j->entry);
		j->entry = e;
		return SASL_OK;
	}
	az_entry_free(e);
	j->code = rc != 0 ? rc : RP_ERR_INTERNAL;
	j->quiet = 1;
	return rc == RP_ERR_DIRECTORY_UNAVAILABLE ? SASL_UNAVAIL : SASL_BADAUTH;
}

/* No proxying: the authorization identity is the authenticated one. */
static int
c_proxy(sasl_conn_t *conn, void *ctx, const char *requested_user, unsigned rlen,
    const char *auth_identity, unsigned alen, const char *def_realm,
    unsigned urlen, struct propctx *propctx)
{
	struct az_sasl_sess *ss = ctx;

	if (requested_user != NULL && auth_identity != NULL && rlen == alen &&
	    memcmp(requested_user, auth_identity, alen) == 0)
		return SASL_OK;
	if (ss->job.code == 0) {
		ss->job.code = RP_ERR_AUTH_FAILED;
		snprintf(ss->job.msg, sizeof(ss->job.msg),
		    "authorization identity differs from the authenticated "
		    "one (no proxying)");
	}
	sasl_seterror(conn, 0, "proxy authorization refused");
	return SASL_NOAUTHZ;
}

/* ---- helpers ---------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void
wipe_free(unsigned char *p, size_t len)
{
	if (p != NULL) {
		explicit_bzero(p, len);
		free(p);
	}
}

static int
mech_known(const char *m)
{
	size_t i;

	for (i = 0; i < NMECH; i++)
		if (strcasecmp(m, mech_table[i].name) == 0)
			return 1;
	return 0;
}

/* Is `name` (case-insensitive) a word of the space-separated `list`? */
static int
in_list(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p = list;

	while (*p != '\0') {
		const char *e = strchr(p, ' ');
		size_t l = e != NULL ? (size_t)(e - p) : strlen(p);

		if (l == n && strncasecmp(p, name, n) == 0)
			return 1;
		p += l;
		while (*p == ' ')
			p++;
	}
	return 0;
}

static int
valid_mech_name(const char *m, size_t len)
{
	size_t i;

	if (len == 0 || len > MECH_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)m[i];

		if (!(isascii(c) && (isalnum(c) || c == '-' || c == '_')))
			return 0;
	}
	return 1;
}

/* Normalises "plain  external" to "PLAIN EXTERNAL"; checks every name. */
static char *
normalise_mechs(const char *in, char *err, size_t errlen)
{
	char *out, *o;
	const char *p = in;
	size_t n = 0;

	if ((out = malloc(strlen(in) + 1)) == NULL) {
		set_err(err, errlen, "out of memory");
		return NULL;
	}
	o = out;
	while (*p != '\0') {
		char name[MECH_NAME_MAX + 1];
		size_t l = strcspn(p, " \t,");
		size_t i;

		if (l == 0) {
			p++;
			continue;
		}
		if (!valid_mech_name(p, l)) {
			set_err(err, errlen,
			    "invalid SASL mechanism name \"%.*s\"",
			    (int)(l > 40 ? 40 : l), p);
			free(out);
			return NULL;
		}
		for (i = 0; i < l; i++)
			name[i] = (char)toupper((unsigned char)p[i]);
		name[l] = '\0';
		if (!mech_known(name)) {
			set_err(err, errlen,
			    "SASL mechanism %s is not supported (supported: "
			    "PLAIN EXTERNAL)",
			    name);
			free(out);
			return NULL;
		}
		*o = '\0';
		if (!in_list(out, name)) {
			if (n++ > 0)
				*o++ = ' ';
			memcpy(o, name, l);
			o += l;
			*o = '\0';
		}
		p += l;
	}
	*o = '\0';
	if (n == 0) {
		set_err(err, errlen, "no SASL mechanism configured");
		free(out);
		return NULL;
	}
	return out;
}

/* ---- the library object --------------------------------------------- */

static void
sasl_unref(struct az_sasl *s)
{
	if (--s->refs > 0)
		return;
	free(s->mech_list);
	free(s->service);
	free(s->realm);
	free(s);
}

static int sess_conn_new(struct az_sasl_sess *ss);
static void sess_destroy(struct az_sasl_sess *ss);

struct az_sasl *
az_sasl_new(struct az_dir *dir, const struct az_sasl_config *c, char *err,
    size_t errlen)
{
	struct az_sasl *s;
	struct az_sasl_sess *probe;
	char *offered;
	const char *p;

	if (c == NULL || c->mechanisms == NULL) {
		set_err(err, errlen, "no SASL mechanism configured");
		return NULL;
	}
	if (c->plugin_dir != NULL &&
	    strlen(c->plugin_dir) >= sizeof(once_plugin_dir)) {
		set_err(err, errlen, "SASL plugin directory name too long");
		return NULL;
	}
	/* Cyrus's plugins are process-wide: the first call decides. */
	if (c->plugin_dir != NULL && cyrus_rc == SASL_NOTINIT)
		snprintf(once_plugin_dir, sizeof(once_plugin_dir), "%s",
		    c->plugin_dir);
	pthread_once(&cyrus_once, cyrus_init);
	if (c->plugin_dir != NULL &&
	    strcmp(c->plugin_dir, cyrus_plugin_dir) != 0) {
		set_err(err, errlen,
		    "SASL plugins were already loaded from %s (one plugin "
		    "directory per process)",
		    cyrus_plugin_dir);
		return NULL;
	}
	if (cyrus_rc != SASL_OK) {
		set_err(err, errlen, "Cyrus SASL initialisation failed: %s",
		    sasl_errstring(cyrus_rc, NULL, NULL));
		return NULL;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		set_err(err, errlen, "out of memory");
		return NULL;
	}
	s->refs = 1;
	s->dir = dir;
	s->max_steps = c->max_steps != 0 ? c->max_steps : 8;
	s->service = strdup(c->service != NULL ? c->service : "rabroker");
	s->realm = c->realm != NULL ? strdup(c->realm) : NULL;
	if (s->service == NULL || (c->realm != NULL && s->realm == NULL)) {
		set_err(err, errlen, "out of memory");
		sasl_unref(s);
		return NULL;
	}
	if ((s->mech_list = normalise_mechs(c->mechanisms, err, errlen)) ==
	    NULL) {
		sasl_unref(s);
		return NULL;
	}

	/* Check that Cyrus really offers each configured mechanism on the
	 * best connection we will ever see (TLS + client certificate). */
	probe = az_sasl_sess_new(s, "probe", 256, NULL, NULL);
	if (probe == NULL) {
		set_err(err, errlen, "cannot create a SASL context");
		sasl_unref(s);
		return NULL;
	}
	offered = az_sasl_mechanisms(probe);
	if (offered == NULL)
		set_err(err, errlen, "out of memory");
	p = s->mech_list;
	while (offered != NULL && *p != '\0') {
		size_t l = strcspn(p, " ");
		char name[MECH_NAME_MAX + 1];

		snprintf(name, sizeof(name), "%.*s", (int)l, p);
		if (!in_list(offered, name)) {
			set_err(err, errlen,
			    "SASL mechanism %s is not available: Cyrus "
			    "plugin not found in %s",
			    name, cyrus_plugin_dir);
			free(offered);
			offered = NULL;
			break;
		}
		p += l;
		while (*p == ' ')
			p++;
	}
	az_sasl_sess_free(probe);
	if (offered == NULL) {
		sasl_unref(s);
		return NULL;
	}
	free(offered);
	log_debug("sasl: mechanisms %s, plugins from %s", s->mech_list,
	    cyrus_plugin_dir);
	return s;
}

void
az_sasl_free(struct az_sasl *s)
{
	if (s == NULL || s->freed)
		return;
	s->freed = 1;
	if (s->refs > 1)
		log_debug("sasl: %u session(s) outlive the SASL context",
		    s->refs - 1);
	sasl_unref(s);
}

/* ---- sessions ---------------------------------------------------------- */

/* Cyrus wants "a.b.c.d;port"; we only log addresses, so pass them to
 * Cyrus only when they already have that shape. */
static void
set_addr(sasl_conn_t *conn, int prop, const char *addr)
{
	if (addr != NULL && strchr(addr, ';') != NULL &&
	    sasl_setprop(conn, prop, addr) != SASL_OK)
		log_debug("sasl: address \"%s\" not usable by Cyrus", addr);
}

static int
sess_conn_new(struct az_sasl_sess *ss)
{
	sasl_security_properties_t sp;
	sasl_ssf_t ssf = ss->ssf;
	int rc;

	if (ss->conn != NULL)
		sasl_dispose(&ss->conn);
	/* user_realm NULL: Cyrus would append "@realm" to names without
	 * '@', which breaks DOMAIN\user. */
	rc = sasl_server_new(
	    ss->s->service, NULL, NULL, NULL, NULL, ss->cbs, 0, &ss->conn);
	if (rc != SASL_OK) {
		log_warnx("sasl: sasl_server_new: %s",
		    sasl_errstring(rc, NULL, NULL));
		ss->conn = NULL;
		return -1;
	}
	memset(&sp, 0, sizeof(sp));
	sp.min_ssf = 0;
	sp.max_ssf = 0; /* no SASL security layer: TLS is the layer */
	sp.maxbufsize = 0;
	sp.security_flags = SASL_SEC_NOPLAINTEXT | SASL_SEC_NOANONYMOUS;
	if (sasl_setprop(ss->conn, SASL_SSF_EXTERNAL, &ssf) != SASL_OK ||
	    sasl_setprop(ss->conn, SASL_SEC_PROPS, &sp) != SASL_OK ||
	    (ss->peer_id != NULL &&
	        sasl_setprop(ss->conn, SASL_AUTH_EXTERNAL, ss->peer_id) !=
	            SASL_OK)) {
		log_warnx("sasl: setting connection properties: %s",
		    sasl_errdetail(ss->conn));
		sasl_dispose(&ss->conn);
		return -1;
	}
	set_addr(ss->conn, SASL_IPLOCALPORT, ss->laddr);
	set_addr(ss->conn, SASL_IPREMOTEPORT, ss->raddr);
	return 0;
}

static int
sess_compute_mechs(struct az_sasl_sess *ss)
{
	const char *list = NULL, *p;
	unsigned llen = 0;
	int count = 0;
	char *out, *o;

	if (sasl_listmech(ss->conn, NULL, "", " ", "", &list, &llen, &count) !=
	    SASL_OK)
		list = ""; /* nothing permitted, e.g. PLAIN alone without TLS */
	if ((out = malloc(strlen(ss->s->mech_list) + 1)) == NULL)
		return -1;
	o = out;
	*o = '\0';
	/* Configured order; Cyrus's verdict; and our own rules on top. */
	for (p = ss->s->mech_list; *p != '\0';) {
		size_t l = strcspn(p, " ");
		char name[MECH_NAME_MAX + 1];
		int ok;

		snprintf(name, sizeof(name), "%.*s", (int)l, p);
		ok = in_list(list, name);
		if (strcmp(name, "PLAIN") == 0 && ss->ssf == 0)
			ok = 0;
		if (strcmp(name, "EXTERNAL") == 0 && ss->peer_id == NULL)
			ok = 0;
		if (ok) {
			if (o != out)
				*o++ = ' ';
			memcpy(o, name, l + 1);
			o += l;
		}
		p += l;
		while (*p == ' ')
			p++;
	}
	ss->mechs = out;
	return 0;
}

struct az_sasl_sess *
az_sasl_sess_new(struct az_sasl *s, const char *tls_peer_id, unsigned tls_ssf,
    const char *local_addr, const char *remote_addr)
{
	struct az_sasl_sess *ss;

	if (s == NULL || s->freed)
		return NULL;
	if ((ss = calloc(1, sizeof(*ss))) == NULL)
		return NULL;
	ss->s = s;
	s->refs++;
	ss->ssf = tls_ssf;
	ss->cbs[0] = (sasl_callback_t){
	    SASL_CB_GETOPT, (sasl_cb_fn)(void (*)(void))c_getopt, ss};
	ss->cbs[1] = (sasl_callback_t){
	    SASL_CB_LOG, (sasl_cb_fn)(void (*)(void))c_log, ss};
	ss->cbs[2] = (sasl_callback_t){SASL_CB_SERVER_USERDB_CHECKPASS,
	    (sasl_cb_fn)(void (*)(void))c_checkpass, ss};
	ss->cbs[3] = (sasl_callback_t){
	    SASL_CB_PROXY_POLICY, (sasl_cb_fn)(void (*)(void))c_proxy, ss};
	ss->cbs[4] = (sasl_callback_t){SASL_CB_LIST_END, NULL, NULL};
	if ((tls_peer_id != NULL && *tls_peer_id != '\0' &&
	        (ss->peer_id = strdup(tls_peer_id)) == NULL) ||
	    (local_addr != NULL && (ss->laddr = strdup(local_addr)) == NULL) ||
	    (remote_addr != NULL &&
	        (ss->raddr = strdup(remote_addr)) == NULL) ||
	    sess_conn_new(ss) != 0 || sess_compute_mechs(ss) != 0) {
		sess_destroy(ss);
		return NULL;
	}
	return ss;
}

static void
job_clear(struct sess_job *j)
{
	wipe_free(j->in, j->inlen + 1);
	free(j->out);
	az_entry_free(j->entry);
	memset(j, 0, sizeof(*j));
}

static void
sess_destroy(struct az_sasl_sess *ss)
{
	if (ss->conn != NULL)
		sasl_dispose(&ss->conn);
	job_clear(&ss->job);
	az_entry_free(ss->user);
	free(ss->peer_id);
	free(ss->laddr);
	free(ss->raddr);
	free(ss->mechs);
	sasl_unref(ss->s);
	free(ss);
}

void
az_sasl_sess_free(struct az_sasl_sess *ss)
{
	if (ss == NULL)
		return;
	if (ss->busy) {
		/* The worker still uses ss->conn: the completion frees. */
		ss->dead = 1;
		return;
	}
	sess_destroy(ss);
}

char *
az_sasl_mechanisms(struct az_sasl_sess *ss)
{
	return strdup(ss != NULL && ss->mechs != NULL ? ss->mechs : "");
}

json_t *
az_sasl_mechanisms_json(struct az_sasl_sess *ss)
{
	json_t *a = json_array();
	const char *p = ss != NULL && ss->mechs != NULL ? ss->mechs : "";

	if (a == NULL)
		return NULL;
	while (*p != '\0') {
		size_t l = strcspn(p, " ");

		if (json_array_append_new(a, json_stringn(p, l)) != 0) {
			json_decref(a);
			return NULL;
		}
		p += l;
		while (*p == ' ')
			p++;
	}
	return a;
}

const char *
az_sasl_sess_errmsg(const struct az_sasl_sess *ss)
{
	return ss != NULL ? ss->errmsg : "";
}

const struct az_entry *
az_sasl_sess_user(const struct az_sasl_sess *ss)
{
	return ss != NULL && ss->state == SS_DONE ? ss->user : NULL;
}

static const char *
peer(const struct az_sasl_sess *ss)
{
	return ss->raddr != NULL ? ss->raddr : "?";
}

/* Ends the exchange after a failure; the session may start again. */
static void
sess_reset(struct az_sasl_sess *ss)
{
	ss->state = SS_IDLE;
	ss->steps = 0;
	ss->mech[0] = '\0';
	if (sess_conn_new(ss) != 0)
		log_warnx(
		    "sasl: cannot reset the SASL context for %s", peer(ss));
}

/* A refusal before anything reached Cyrus or the directory. */
static int refuse(struct az_sasl_sess *ss, int code, int end, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

static int
refuse(struct az_sasl_sess *ss, int code, int end, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ss->errmsg, sizeof(ss->errmsg), fmt, ap);
	va_end(ap);
	if (end) {
		log_warnx("sasl: authentication failed (%s from %s): %s",
		    ss->mech[0] != '\0' ? ss->mech : "-", peer(ss), ss->errmsg);
		if (code == RP_ERR_AUTH_FAILED)
			snprintf(ss->errmsg, sizeof(ss->errmsg), "%s",
			    rp_err_message(RP_ERR_AUTH_FAILED));
		sess_reset(ss);
	}
	return code;
}

/*
 * PLAIN (RFC 4616): authzid NUL authcid NUL passwd. Checked here so that a
 * malformed message, an empty password or a proxy attempt never reaches
 * the directory. Returns NULL if fine, else the reason (for the log).
 */
static const char *
plain_precheck(const unsigned char *in, size_t len)
{
	const unsigned char *n1, *n2;
	size_t zlen, clen, plen;

	if ((n1 = memchr(in, '\0', len)) == NULL)
		return "malformed PLAIN message (no NUL separator)";
	zlen = (size_t)(n1 - in);
	if ((n2 = memchr(n1 + 1, '\0', len - zlen - 1)) == NULL)
		return "malformed PLAIN message (no password field)";
	clen = (size_t)(n2 - n1 - 1);
	plen = len - zlen - clen - 2;
	if (clen == 0)
		return "empty authentication identity";
	if (plen == 0)
		return "empty password refused";
	if (memchr(n2 + 1, '\0', plen) != NULL)
		return "NUL byte in password refused";
	if (zlen != 0 && (zlen != clen || memcmp(in, n1 + 1, clen) != 0))
		return "authorization identity differs from the "
		       "authentication identity (no proxying)";
	return NULL;
}

static const char *
external_precheck(
    const struct az_sasl_sess *ss, const unsigned char *in, size_t len)
{
	if (memchr(in, '\0', len) != NULL)
		return "NUL byte in EXTERNAL authorization identity";
	if (len != 0 &&
	    (ss->peer_id == NULL || strlen(ss->peer_id) != len ||
	        memcmp(in, ss->peer_id, len) != 0))
		return "authorization identity differs from the certificate "
		       "identity (no proxying)";
	return NULL;
}

static void job_run(struct az_worker *w, void *arg);
static void job_done(void *arg);

static int
submit(struct az_sasl_sess *ss, int is_start, const unsigned char *in,
    size_t len, int has_in, az_sasl_cb cb, void *arg)
{
	struct sess_job *j = &ss->job;
	int rc;

	job_clear(j);
	j->is_start = is_start;
	j->has_in = has_in;
	j->cb = cb;
	j->arg = arg;
	if ((j->in = malloc(len + 1)) == NULL)
		return refuse(ss, RP_ERR_INTERNAL, 1, "out of memory");
	if (len > 0)
		memcpy(j->in, in, len);
	j->in[len] = '\0';
	j->inlen = len;
	/* Until a worker has run the job, it has failed (set before the
	 * submit: from then on the job belongs to the worker). */
	j->sasl_rc = SASL_NOTDONE;
	j->code = RP_ERR_CLOSED;
	if (ss->s->dir == NULL || ss->s->freed)
		rc = RP_ERR_DIRECTORY_UNAVAILABLE; /* none, or shutting down */
	else
		rc = az_dir_submit(ss->s->dir, job_run, job_done, ss);
	if (rc != 0) {
		job_clear(j);
		if (rc != RP_ERR_DIRECTORY_UNAVAILABLE)
			rc = RP_ERR_INTERNAL;
		return refuse(ss, rc, 1, "%s", rp_err_message(rc));
	}
	ss->busy = 1;
	return 0;
}

int
az_sasl_start(struct az_sasl_sess *ss, const char *mech,
    const unsigned char *initial, size_t len, int has_initial, az_sasl_cb cb,
    void *arg)
{
	const char *why = NULL;
	size_t i, mlen;

	if (ss == NULL || cb == NULL || (initial == NULL && len > 0))
		return RP_ERR_INTERNAL;
	ss->errmsg[0] = '\0';
	if (ss->busy)
		return refuse(ss, RP_ERR_WRONG_STATE, 0,
		    "an authentication step is already in progress");
	if (ss->state == SS_DONE)
		return refuse(
		    ss, RP_ERR_WRONG_STATE, 0, "already authenticated");
	if (ss->state == SS_EXCH) /* the client aborts and starts again */
		sess_reset(ss);
	if (ss->conn == NULL && sess_conn_new(ss) != 0)
		return refuse(ss, RP_ERR_INTERNAL, 0, "%s",
		    rp_err_message(RP_ERR_INTERNAL));
	mlen = mech != NULL ? strlen(mech) : 0;
	if (!valid_mech_name(mech != NULL ? mech : "", mlen))
		return refuse(
		    ss, RP_ERR_INVALID_PARAMS, 0, "invalid mechanism name");
	if (!in_list(ss->mechs, mech)) {
		if (strcasecmp(mech, "PLAIN") == 0 &&
		    in_list(ss->s->mech_list, "PLAIN"))
			return refuse(ss, RP_ERR_INVALID_PARAMS, 0,
			    "mechanism PLAIN is only offered inside TLS");
		if (strcasecmp(mech, "EXTERNAL") == 0 &&
		    in_list(ss->s->mech_list, "EXTERNAL"))
			return refuse(ss, RP_ERR_INVALID_PARAMS, 0,
			    "mechanism EXTERNAL needs a verified TLS client "
			    "certificate");
		return refuse(ss, RP_ERR_INVALID_PARAMS, 0,
		    "unknown mechanism \"%s\" (offered: %s)", mech,
		    ss->mechs[0] != '\0' ? ss->mechs : "none");
	}
	if (has_initial && len > AZ_SASL_MAX_PAYLOAD)
		return refuse(ss, RP_ERR_INVALID_PARAMS, 0,
		    "initial response too large (%zu bytes, limit %d)", len,
		    AZ_SASL_MAX_PAYLOAD);
	for (i = 0; i < mlen; i++)
		ss->mech[i] = (char)toupper((unsigned char)mech[i]);
	ss->mech[mlen] = '\0';
	if (has_initial && strcmp(ss->mech, "PLAIN") == 0)
		why = plain_precheck(initial, len);
	else if (has_initial && strcmp(ss->mech, "EXTERNAL") == 0)
		why = external_precheck(ss, initial, len);
	if (why != NULL)
		return refuse(ss, RP_ERR_AUTH_FAILED, 1, "%s", why);
	/* EXTERNAL: an authzid equal to the certificate name means the
	 * same as none, and Cyrus (no auxprop plugin) refuses a separate
	 * authzid lookup: hand it the empty form. */
	if (has_initial && strcmp(ss->mech, "EXTERNAL") == 0)
		len = 0;
	ss->state = SS_EXCH;
	ss->steps = 1;
	return submit(ss, 1, has_initial ? initial : NULL,
	    has_initial ? len : 0, has_initial, cb, arg);
}

int
az_sasl_step(struct az_sasl_sess *ss, const unsigned char *resp, size_t len,
    az_sasl_cb cb, void *arg)
{
	const char *why = NULL;

	if (ss == NULL || cb == NULL || (resp == NULL && len > 0))
		return RP_ERR_INTERNAL;
	ss->errmsg[0] = '\0';
	if (ss->busy)
		return refuse(ss, RP_ERR_WRONG_STATE, 0,
		    "an authentication step is already in progress");
	if (ss->state == SS_DONE)
		return refuse(
		    ss, RP_ERR_WRONG_STATE, 0, "already authenticated");
	if (ss->state != SS_EXCH)
		return refuse(ss, RP_ERR_WRONG_STATE, 0,
		    "no authentication exchange in progress (auth.start "
		    "first)");
	if (len > AZ_SASL_MAX_PAYLOAD)
		return refuse(ss, RP_ERR_INVALID_PARAMS, 0,
		    "response too large (%zu bytes, limit %d)", len,
		    AZ_SASL_MAX_PAYLOAD);
	if (++ss->steps > ss->s->max_steps)
		return refuse(ss, RP_ERR_AUTH_FAILED, 1,
		    "too many authentication steps (limit %u)",
		    ss->s->max_steps);
	if (strcmp(ss->mech, "PLAIN") == 0)
		why =
		    plain_precheck(resp != NULL ? resp : (const void *)"", len);
	else if (strcmp(ss->mech, "EXTERNAL") == 0)
		why = external_precheck(
		    ss, resp != NULL ? resp : (const void *)"", len);
	if (why != NULL)
		return refuse(ss, RP_ERR_AUTH_FAILED, 1, "%s", why);
	if (strcmp(ss->mech, "EXTERNAL") == 0)
		len = 0; /* as in az_sasl_start */
	return submit(
	    ss, 0, resp != NULL ? resp : (const void *)"", len, 1, cb, arg);
}

/* On a directory worker: the Cyrus call, the password check inside it,
 * and for EXTERNAL the mapping of the certificate name to a user. */
static void
job_run(struct az_worker *w, void *arg)
{
	struct az_sasl_sess *ss = arg;
	struct sess_job *j = &ss->job;
	const char *out = NULL;
	unsigned outlen = 0;
	const void *authid = NULL;
	struct az_entry *e = NULL;
	int rc;

	j->w = w;
	j->code = 0;
	if (j->is_start)
		rc = sasl_server_start(ss->conn, ss->mech,
		    j->has_in ? (const char *)j->in : NULL, (unsigned)j->inlen,
		    &out, &outlen);
	else
		rc = sasl_server_step(ss->conn, (const char *)j->in,
		    (unsigned)j->inlen, &out, &outlen);
	explicit_bzero(j->in, j->inlen + 1);
	j->sasl_rc = rc;
	if (rc == SASL_CONTINUE && outlen > 0 && out != NULL) {
		if ((j->out = malloc(outlen)) == NULL) {
			j->code = RP_ERR_NOMEM;
			j->sasl_rc = SASL_NOMEM;
		} else {
			memcpy(j->out, out, outlen);
			j->outlen = outlen;
		}
	}
	if (rc == SASL_OK && j->entry == NULL &&
	    strcmp(ss->mech, "EXTERNAL") != 0) {
		/* Only our password check may vouch for a password. */
		if (j->code == 0) {
			j->code = RP_ERR_INTERNAL;
			snprintf(j->msg, sizeof(j->msg),
			    "%s succeeded without a directory check", ss->mech);
		}
	} else if (rc == SASL_OK && j->entry == NULL) {
		/* EXTERNAL: the certificate name is a directory user. */
		if (sasl_getprop(ss->conn, SASL_AUTHUSER, &authid) != SASL_OK ||
		    authid == NULL) {
			j->code = RP_ERR_INTERNAL;
			snprintf(j->msg, sizeof(j->msg), "no authid after OK");
		} else {
			rc = az_worker_lookup_user(w, (const char *)authid, &e,
			    j->msg, sizeof(j->msg));
			if (rc == 0 && e != NULL)
				j->entry = e;
			else {
				az_entry_free(e);
				j->code = rc == RP_ERR_DIRECTORY_UNAVAILABLE
				    ? rc
				    : RP_ERR_AUTH_FAILED;
			}
		}
	}
	j->w = NULL;
}

static void
job_done(void *arg)
{
	struct az_sasl_sess *ss = arg;
	struct sess_job *j = &ss->job;
	az_sasl_cb cb = j->cb;
	void *cbarg = j->arg;
	int code;

	ss->busy = 0;
	if (ss->dead) {
		sess_destroy(ss);
		return;
	}
	if (j->sasl_rc == SASL_CONTINUE && j->code == 0) {
		cb(AZ_SASL_CONTINUE, 0, j->out != NULL ? j->out : (void *)"",
		    j->outlen, NULL, NULL, cbarg);
		return;
	}
	if (j->sasl_rc == SASL_OK && j->code == 0 && j->entry != NULL) {
		ss->state = SS_DONE;
		az_entry_free(ss->user);
		ss->user = j->entry;
		j->entry = NULL;
		log_info("sasl: %s authenticated with %s from %s",
		    ss->user->account, ss->mech, peer(ss));
		cb(AZ_SASL_OK, 0, NULL, 0, ss->user, "authenticated", cbarg);
		return;
	}
	code = j->code;
	if (code == 0 || code == RP_ERR_NOT_FOUND)
		code = RP_ERR_AUTH_FAILED;
	else if (code == RP_ERR_CLOSED || code == RP_ERR_TIMEOUT)
		code = RP_ERR_DIRECTORY_UNAVAILABLE;
	else if (code != RP_ERR_AUTH_FAILED &&
	    code != RP_ERR_DIRECTORY_UNAVAILABLE)
		code = RP_ERR_INTERNAL;
	log_warnx("sasl: authentication failed (%s from %s): %s", ss->mech,
	    peer(ss), j->msg[0] != '\0' ? j->msg : sasl_errdetail(ss->conn));
	snprintf(ss->errmsg, sizeof(ss->errmsg), "%s", rp_err_message(code));
	job_clear(j);
	sess_reset(ss);
	cb(AZ_SASL_FAIL, code, NULL, 0, NULL, ss->errmsg, cbarg);
}

/* ---- base64 and JSON ---------------------------------------------- */

static int
b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int
az_sasl_b64_decode(const char *in, size_t inlen, unsigned char **out,
    size_t *outlen, char *err, size_t errlen)
{
	unsigned char *buf;
	size_t i, o = 0, pad = 0;

	*out = NULL;
	*outlen = 0;
	if (inlen % 4 != 0) {
		set_err(err, errlen, "base64 length %zu is not a multiple of 4",
		    inlen);
		return -1;
	}
	if (inlen > 0 && in[inlen - 1] == '=')
		pad = (inlen > 1 && in[inlen - 2] == '=') ? 2 : 1;
	for (i = 0; i < inlen; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '=') {
			if (i < inlen - pad) {
				set_err(err, errlen,
				    "base64 padding '=' at offset %zu is not "
				    "at the end",
				    i);
				return -1;
			}
			continue;
		}
		if (b64_val(c) < 0) {
			if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
				set_err(err, errlen,
				    "whitespace at offset %zu is not allowed "
				    "in base64",
				    i);
			else
				set_err(err, errlen,
				    "invalid base64 character 0x%02x at "
				    "offset %zu",
				    c, i);
			return -1;
		}
	}
	if ((buf = malloc(inlen / 4 * 3 + 1)) == NULL) {
		set_err(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < inlen; i += 4) {
		int a = b64_val((unsigned char)in[i]);
		int b = b64_val((unsigned char)in[i + 1]);
		int c =
		    in[i + 2] == '=' ? 0 : b64_val((unsigned char)in[i + 2]);
		int d =
		    in[i + 3] == '=' ? 0 : b64_val((unsigned char)in[i + 3]);
		unsigned v = ((unsigned)a << 18) | ((unsigned)b << 12) |
		    ((unsigned)c << 6) | (unsigned)d;

		buf[o++] = (unsigned char)(v >> 16);
		if (in[i + 2] != '=')
			buf[o++] = (unsigned char)(v >> 8);
		if (in[i + 3] != '=')
			buf[o++] = (unsigned char)v;
		/* Canonical form only: bits beyond the data must be zero. */
		if ((in[i + 2] == '=' && (b & 0x0f) != 0) ||
		    (in[i + 2] != '=' && in[i + 3] == '=' && (c & 0x03) != 0)) {
			set_err(err, errlen,
			    "non-canonical base64 (unused bits set) at "
			    "offset %zu",
			    i);
			free(buf);
			return -1;
		}
	}
	buf[o] = '\0';
	*out = buf;
	*outlen = o;
	return 0;
}

char *
az_sasl_b64_encode(const unsigned char *in, size_t len)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out, *o;
	size_t i;

	if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
		return NULL;
	if ((out = malloc((len + 2) / 3 * 4 + 1)) == NULL)
		return NULL;
	o = out;
	for (i = 0; i + 2 < len; i += 3) {
		unsigned v = ((unsigned)in[i] << 16) |
		    ((unsigned)in[i + 1] << 8) | in[i + 2];

		*o++ = tab[(v >> 18) & 63];
		*o++ = tab[(v >> 12) & 63];
		*o++ = tab[(v >> 6) & 63];
		*o++ = tab[v & 63];
	}
	if (i < len) {
		unsigned v = (unsigned)in[i] << 16;

		if (i + 1 < len)
			v |= (unsigned)in[i + 1] << 8;
		*o++ = tab[(v >> 18) & 63];
		*o++ = tab[(v >> 12) & 63];
		*o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int
parse_b64_member(json_t *v, const char *name, unsigned char **out,
    size_t *outlen, char *err, size_t errlen)
{
	char why[160];
	size_t n;

	if (!json_is_string(v)) {
		set_err(err, errlen, "\"%s\" must be a base64 string", name);
		return RP_ERR_INVALID_PARAMS;
	}
	n = json_string_length(v);
	if (n > AZ_SASL_MAX_B64) {
		set_err(err, errlen,
		    "\"%s\" too long (%zu base64 characters, "
		    "limit %d)",
		    name, n, AZ_SASL_MAX_B64);
		return RP_ERR_INVALID_PARAMS;
	}
	if (az_sasl_b64_decode(
	        json_string_value(v), n, out, outlen, why, sizeof(why)) != 0) {
		set_err(err, errlen, "\"%s\": %s", name, why);
		return RP_ERR_INVALID_PARAMS;
	}
	return 0;
}

int
az_sasl_parse_start(json_t *params, const char **mech, unsigned char **initial,
    size_t *len, int *has_initial, char *err, size_t errlen)
{
	json_t *m, *ini;
	int rc;

	*mech = NULL;
	*initial = NULL;
	*len = 0;
	*has_initial = 0;
	if (!json_is_object(params)) {
		set_err(err, errlen, "params must be an object");
		return RP_ERR_INVALID_PARAMS;
	}
	m = json_object_get(params, "mechanism");
	if (!json_is_string(m)) {
		set_err(err, errlen, "\"mechanism\" (string) is required");
		return RP_ERR_INVALID_PARAMS;
	}
	if (!valid_mech_name(json_string_value(m), json_string_length(m))) {
		set_err(err, errlen,
		    "\"mechanism\" is not a SASL mechanism "
		    "name (1-20 of A-Z 0-9 - _)");
		return RP_ERR_INVALID_PARAMS;
	}
	ini = json_object_get(params, "initial");
	if (ini != NULL && !json_is_null(ini)) {
		rc =
		    parse_b64_member(ini, "initial", initial, len, err, errlen);
		if (rc != 0)
			return rc;
		*has_initial = 1;
	}
	*mech = json_string_value(m);
	return 0;
}

int
az_sasl_parse_step(
    json_t *params, unsigned char **resp, size_t *len, char *err, size_t errlen)
{
	json_t *r;

	*resp = NULL;
	*len = 0;
	if (!json_is_object(params)) {
		set_err(err, errlen, "params must be an object");
		return RP_ERR_INVALID_PARAMS;
	}
	r = json_object_get(params, "response");
	if (r == NULL) {
		set_err(err, errlen,
		    "\"response\" (base64 string) is "
		    "required");
		return RP_ERR_INVALID_PARAMS;
	}
	return parse_b64_member(r, "response", resp, len, err, errlen);
}

json_t *
az_sasl_result_json(enum az_sasl_status st, const unsigned char *challenge,
    size_t chlen, const struct az_entry *user)
{
	json_t *o = NULL, *groups;
	char *b64;
	size_t i;

	switch (st) {
	case AZ_SASL_CONTINUE:
		if ((b64 = az_sasl_b64_encode(
		         challenge != NULL ? challenge : (const void *)"",
		         challenge != NULL ? chlen : 0)) == NULL)
			return NULL;
		o = json_pack(
		    "{s:s, s:s}", "status", "continue", "challenge", b64);
		free(b64);
		return o;
	case AZ_SASL_OK:
		if (user == NULL || user->account == NULL ||
		    (groups = json_array()) == NULL)
			return NULL;
		for (i = 0; i < user->ngroups; i++)
			if (user->groups[i] != NULL &&
			    json_array_append_new(
			        groups, json_string(user->groups[i])) != 0) {
				json_decref(groups);
				return NULL;
			}
		return json_pack("{s:s, s:s, s:o}", "status", "ok", "account",
		    user->account, "groups", groups);
	default:
		return NULL;
	}
}
