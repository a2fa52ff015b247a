/*
 * tl_slapd.c - C wrapper around tests/lib/slapd.sh. The script does the
 * work (config, slapadd, ports, waiting until slapd answers) and writes
 * DIR/slapd.env, which is parsed here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tl_slapd.h"

#ifndef RABROKER_SOURCE_DIR
#define RABROKER_SOURCE_DIR "."
#endif

static const char *
source_dir(void)
{
	const char *s = getenv("RABROKER_SOURCE_DIR");

	return s != NULL && *s != '\0' ? s : RABROKER_SOURCE_DIR;
}

/* Runs argv (no shell) with extra environment; returns the exit status. */
static int
run(char *const argv[], const char *const envs[])
{
	pid_t pid, r;
	int st;

	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		if (fd != -1) {
			dup2(fd, STDOUT_FILENO);
			close(fd);
		}
		for (size_t i = 0; envs != NULL && envs[i] != NULL; i += 2)
			setenv(envs[i], envs[i + 1], 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	do
		r = waitpid(pid, &st, 0);
	while (r == -1 && errno == EINTR);
	if (r == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static void
copy(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src);
}

static int
read_env(struct tl_slapd *s)
{
	char path[600], line[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/slapd.env", s->dir);
	if ((f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "tl_slapd: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *v = strchr(line, '=');

		if (v == NULL)
			continue;
		*v++ = '\0';
		v[strcspn(v, "\n")] = '\0';
		if (strcmp(line, "SLAPD_PID") == 0)
			s->pid = (pid_t)atol(v);
		else if (strcmp(line, "SLAPD_URI") == 0)
			copy(s->uri, sizeof(s->uri), v);
		else if (strcmp(line, "SLAPD_LDAPS_URI") == 0)
			copy(s->ldaps_uri, sizeof(s->ldaps_uri), v);
		else if (strcmp(line, "SLAPD_PORT") == 0)
			s->port = atoi(v);
		else if (strcmp(line, "SLAPD_TLS_PORT") == 0)
			s->tls_port = s->tls ? atoi(v) : 0;
		else if (strcmp(line, "SLAPD_BASE") == 0)
			copy(s->base, sizeof(s->base), v);
		else if (strcmp(line, "SLAPD_ROOTDN") == 0)
			copy(s->rootdn, sizeof(s->rootdn), v);
		else if (strcmp(line, "SLAPD_ROOTPW") == 0)
			copy(s->rootpw, sizeof(s->rootpw), v);
		else if (strcmp(line, "SLAPD_BINDDN") == 0)
			copy(s->binddn, sizeof(s->binddn), v);
		else if (strcmp(line, "SLAPD_BINDPW") == 0)
			copy(s->bindpw, sizeof(s->bindpw), v);
		else if (strcmp(line, "SLAPD_BINDPW_FILE") == 0)
			copy(s->bindpw_file, sizeof(s->bindpw_file), v);
		else if (strcmp(line, "SLAPD_CA") == 0)
			copy(s->ca, sizeof(s->ca), v);
		else if (strcmp(line, "SLAPD_PKI") == 0)
			copy(s->pki, sizeof(s->pki), v);
		else if (strcmp(line, "SLAPD_LOG") == 0)
			copy(s->log, sizeof(s->log), v);
	}
	fclose(f);
	return s->pid > 0 && s->port > 0 ? 0 : -1;
}

static int
script(struct tl_slapd *s, const char *cmd)
{
	char scr[600], owner[32];
	char *argv[] = {"bash", scr, (char *)cmd, s->dir, NULL};
	const char *envs[] = {
	    "SLAPD_TLS", s->tls ? "1" : "0", "SLAPD_OWNER_PID", owner, NULL};

	snprintf(scr, sizeof(scr), "%s/tests/lib/slapd.sh", source_dir());
	snprintf(owner, sizeof(owner), "%ld", (long)getpid());
	if (run(argv, envs) != 0) {
		fprintf(
		    stderr, "tl_slapd: slapd.sh %s %s failed\n", cmd, s->dir);
		return -1;
	}
	return 0;
}

static int
start(const char *dir, int tls, struct tl_slapd *s)
{
	memset(s, 0, sizeof(*s));
	s->tls = tls;
	if (dir != NULL) {
		copy(s->dir, sizeof(s->dir), dir);
	} else {
		const char *t = getenv("TMPDIR");

		snprintf(s->dir, sizeof(s->dir), "%s/tl_slapd.XXXXXX",
		    t != NULL && *t != '\0' ? t : "/tmp");
		if (mkdtemp(s->dir) == NULL) {
			fprintf(stderr, "tl_slapd: mkdtemp %s: %s\n", s->dir,
			    strerror(errno));
			return -1;
		}
	}
	if (script(s, "start") == -1)
		return -1;
	return read_env(s);
}

int
tl_slapd_start(const char *dir, struct tl_slapd *s)
{
	return start(dir, 1, s);
}

int
tl_slapd_start_notls(const char *dir, struct tl_slapd *s)
{
	return start(dir, 0, s);
}

int
tl_slapd_stop(struct tl_slapd *s)
{
	if (s->dir[0] == '\0')
		return 0;
	if (script(s, "stop") == -1)
		return -1;
	s->pid = 0;
	return 0;
}

int
tl_slapd_restart(struct tl_slapd *s)
{
	if (script(s, "restart") == -1)
		return -1;
	return read_env(s);
}

void
tl_slapd_destroy(struct tl_slapd *s)
{
	char *argv[] = {"rm", "-rf", s->dir, NULL};

	if (s->dir[0] == '\0')
		return;
	tl_slapd_stop(s);
	if (getenv("TL_SLAPD_KEEP") == NULL)
		run(argv, NULL);
	s->dir[0] = '\0';
}

int
tl_slapd_modify(const struct tl_slapd *s, const char *ldif)
{
	char path[600];
	char *argv[] = {"ldapmodify", "-x", "-H", (char *)s->uri, "-D",
	    (char *)s->rootdn, "-w", (char *)s->rootpw, "-o", "nettimeout=5",
	    "-f", path, NULL};
	FILE *f;
	int rc;

	snprintf(path, sizeof(path), "%s/modify.ldif", s->dir);
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fputs(ldif, f);
	if (fclose(f) != 0)
		return -1;
	rc = run(argv, NULL);
	return rc == 0 ? 0 : -1;
}

long
tl_slapd_log_count(const struct tl_slapd *s, const char *needle)
{
	char line[4096];
	long n = 0;
	FILE *f;

	if ((f = fopen(s->log, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, needle) != NULL)
			n++;
	fclose(f);
	return n;
}
