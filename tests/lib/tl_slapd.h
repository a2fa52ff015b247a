/*
 * tl_slapd.h - a real slapd for C tests and benchmarks (tests/lib/slapd.sh).
 *
 * tl_slapd_start makes a directory (mkdtemp under $TMPDIR when dir is NULL),
 * a test PKI, a slapd.conf, loads tests/data/corp.ldif and starts slapd on
 * two free 127.0.0.1 ports: ldap:// (StartTLS) and ldaps://. The *_notls
 * variant has no TLS at all (StartTLS is refused by the server). stop and
 * restart keep the data and the ports, so a test can take the directory
 * away mid-run and bring it back where clients expect it. A watchdog kills
 * slapd when the starting process dies. All calls are bounded in time.
 * The environment reaches slapd.sh: SLAPD_LOGLEVEL (default "stats", "0"
 * for benchmarks), SLAPD_PKI, SLAPD_CERT/SLAPD_KEY (another server
 * certificate), TL_SLAPD_KEEP (tl_slapd_destroy keeps the directory).
 */
#ifndef TL_SLAPD_H
#define TL_SLAPD_H

#include <stddef.h>
#include <sys/types.h>

struct tl_slapd {
	char dir[512];
	int tls;            /* 1: TLS configured (StartTLS and ldaps://) */
	int port;           /* ldap:// */
	int tls_port;       /* ldaps:// (0 without TLS) */
	pid_t pid;          /* 0 while stopped */
	char uri[64];       /* "ldap://127.0.0.1:PORT" */
	char ldaps_uri[64]; /* "ldaps://127.0.0.1:PORT" or "" */
	char base[64];      /* "dc=corp,dc=example" */
	char rootdn[128];   /* manager: bypasses ACLs (tests only) */
	char rootpw[64];
	char binddn[128]; /* the service account rabroker uses */
	char bindpw[64];
	char bindpw_file[600]; /* mode 0600, "svc-secret\n" */
	char ca[600];          /* the CA that signed slapd's certificate */
	char pki[600];         /* all of tests/lib/mkpki.sh's files */
	char log[600];         /* slapd's log (loglevel stats) */
};

/* 0 on success, -1 with a message on stderr. */
int tl_slapd_start(const char *dir, struct tl_slapd *s);
int tl_slapd_start_notls(const char *dir, struct tl_slapd *s);
int tl_slapd_stop(struct tl_slapd *s);
int tl_slapd_restart(struct tl_slapd *s);
/* Stops slapd and removes its directory. */
void tl_slapd_destroy(struct tl_slapd *s);

/* Runs ldapmodify as the rootdn with this LDIF text. 0 on success. */
int tl_slapd_modify(const struct tl_slapd *s, const char *ldif);
/* Number of lines of slapd's log containing `needle` (e.g. " BIND dn=").
 * -1 if the log cannot be read. */
long tl_slapd_log_count(const struct tl_slapd *s, const char *needle);

#endif
