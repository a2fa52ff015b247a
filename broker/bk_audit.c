/*
 * bk_audit.c - the hash-chained audit trail and its verifier.
 *
 * Why a chain: each line carries the SHA-256 of the line before it, so that
 * editing, deleting or reordering a line breaks the chain at that point and
 * `rabrokerctl verify-audit` can name the line. A chain without a key does
 * not stop someone who rewrites the whole tail; the syslog copy of every
 * line (shipped off the host) is the anchor for that case.
 *
 * Why one write(2) per line on O_APPEND: a line is never interleaved with
 * another writer's, and a short write (disk full) is cut back with
 * ftruncate so that the file never keeps half a line.
 *
 * Why a sync thread: fdatasync costs 1.5-4.5 ms per call on an ordinary
 * disk, and an offer writes four or five lines; synced on the event loop
 * they put the disk between the helper and the user's prompt. So every line
 * is written (write(2)) before bk_audit_write returns -- a crash of the
 * daemon loses nothing -- and a thread syncs the file as soon as it is
 * dirty: group commit, where one fdatasync covers every line written while
 * the previous one ran. A power cut can lose at most the lines of the sync
 * in flight. A failed sync closes the trail like a failed write: new offers
 * are refused with audit_unavailable until a reopen succeeds.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "bk_audit.h"
#include "bk_ticket.h"
#include "rp_error.h"
#include "rp_log.h"

#define HASH_LEN 32
#define EVENT_NAME_MAX 64

static const struct {
	const char *name;
	const char *required;
} event_tab[BK_AE_COUNT] = {
#define BK_X_TAB(e, name, req) [e] = {name, req},
    BK_AUDIT_EVENT_LIST(BK_X_TAB)
#undef BK_X_TAB
};

static int sync_now(struct bk_audit *a);

struct bk_audit {
	char *path;
	int fd;
	int to_syslog;
	int ok;
	int sync;
	int fail_logged;
	unsigned pending; /* lines written but not yet fdatasync'd */
	/* The sync thread. fd is changed by the loop only while holding mu;
	 * the thread syncs a dup of it, without holding mu. */
	pthread_t thr;
	int thr_running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int dirty, stop;
	atomic_int sync_errno;
	uint64_t seq;
	unsigned char hash[HASH_LEN];
	bk_audit_observer_fn obs; /* metrics: sees every event */
	void *obs_arg;
};

const char *
bk_audit_event_name(enum bk_audit_event ev)
{
	if ((unsigned)ev >= BK_AE_COUNT)
		return "unknown";
	return event_tab[ev].name;
}

int
bk_audit_event_parse(const char *name)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < BK_AE_COUNT; i++)
		if (strcmp(name, event_tab[i].name) == 0)
			return i;
	return -1;
}

const char *
bk_audit_event_required(enum bk_audit_event ev)
{
	if ((unsigned)ev >= BK_AE_COUNT)
		return "";
	return event_tab[ev].required;
}

int
bk_audit_event_check(
    enum bk_audit_event ev, const json_t *fields, char *why, size_t whylen)
{
	const char *p = bk_audit_event_required(ev), *comma;
	char key[64];
	size_t n;

	if ((unsigned)ev >= BK_AE_COUNT) {
		snprintf(why, whylen, "unknown event %d", (int)ev);
		return -1;
	}
	if (fields != NULL && !json_is_object(fields)) {
		snprintf(why, whylen, "%s: fields are not an object",
		    event_tab[ev].name);
		return -1;
	}
	while (*p != '\0') {
		comma = strchr(p, ',');
		n = comma ? (size_t)(comma - p) : strlen(p);
		if (n >= sizeof(key))
			n = sizeof(key) - 1;
		memcpy(key, p, n);
		key[n] = '\0';
		if (fields == NULL || json_object_get(fields, key) == NULL) {
			snprintf(why, whylen, "%s: missing field \"%s\"",
			    event_tab[ev].name, key);
			return -1;
		}
		p += comma ? n + 1 : n;
	}
	return 0;
}

static void
hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int
hex_decode(const char *s, size_t slen, unsigned char *out, size_t n)
{
	if (slen != 2 * n)
		return -1;
	for (size_t i = 0; i < 2 * n; i++) {
		int c = s[i], v;

		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else
			return -1;
		if (i % 2 == 0)
			out[i / 2] = (unsigned char)(v << 4);
		else
			out[i / 2] |= (unsigned char)v;
	}
	return 0;
}

static int
sha256(const void *data, size_t len, unsigned char out[HASH_LEN])
{
	return gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, out) == 0 ? 0
	                                                                : -1;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ", exactly 24 characters, fields in range. */
static int
time_valid(const char *s, size_t n)
{
	static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
	int mo, d, h, mi, se;

	if (n != sizeof(pat) - 1)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (pat[i] == 'd') {
			if (s[i] < '0' || s[i] > '9')
				return 0;
		} else if (s[i] != pat[i])
			return 0;
	}
#define D2(o) ((s[o] - '0') * 10 + (s[(o) + 1] - '0'))
	mo = D2(5);
	d = D2(8);
	h = D2(11);
	mi = D2(14);
	se = D2(17);
#undef D2
	return mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h <= 23 &&
	    mi <= 59 && se <= 60;
}

static void
time_now(char out[32])
{
	struct timespec ts;
	struct tm tm;
	char base[24];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(
	    out, 32, "%.19s.%03dZ", base, (int)(ts.tv_nsec / 1000000) % 1000);
}

static int
name_valid(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++, n++)
		if (!((*s >= 'a' && *s <= 'z') || *s == '_' ||
		        (*s >= '0' && *s <= '9')))
			return 0;
	return n >= 1 && n <= EVENT_NAME_MAX;
}

/*
 * The parsed header of one line. Shared by the verifier and by open, which
 * must refuse a trail whose last line it cannot chain from.
 */
struct line_info {
	uint64_t seq;
	unsigned char prev[HASH_LEN];
	char event[EVENT_NAME_MAX + 1];
	int has_cont; /* audit_continued fields present and well typed */
	uint64_t cont_seq;
	unsigned char cont_hash[HASH_LEN];
};

static int
parse_line(const char *line, size_t len, struct line_info *li, char *why,
    size_t whylen)
{
	json_error_t jerr;
	json_t *o, *v;
	const char *k, *s;
	void *it;
	int ret = -1;

	memset(li, 0, sizeof(*li));
	if (len == 0) {
		snprintf(why, whylen, "empty line");
		return -1;
	}
	if (len >= BK_AUDIT_LINE_MAX) {
		snprintf(
		    why, whylen, "longer than %d bytes", BK_AUDIT_LINE_MAX - 1);
		return -1;
	}
	if ((o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL) {
		snprintf(why, whylen, "not JSON: %s at column %d", jerr.text,
		    jerr.column);
		return -1;
	}
	if (!json_is_object(o)) {
		snprintf(why, whylen, "not a JSON object");
		goto out;
	}
	/* Key order is part of the format: seq, time, event, ..., prev. */
	it = json_object_iter(o);
	k = it ? json_object_iter_key(it) : "";
	if (strcmp(k, "seq") != 0)
		goto order;
	it = json_object_iter_next(o, it);
	if (it == NULL || strcmp(json_object_iter_key(it), "time") != 0)
		goto order;
	it = json_object_iter_next(o, it);
	if (it == NULL || strcmp(json_object_iter_key(it), "event") != 0)
		goto order;
	while ((it = json_object_iter_next(o, it)) != NULL)
		k = json_object_iter_key(it);
	if (strcmp(k, "prev") != 0)
		goto order;

	v = json_object_get(o, "seq");
	if (!json_is_integer(v) || json_integer_value(v) < 1) {
		snprintf(why, whylen, "seq is not a positive integer");
		goto out;
	}
	li->seq = (uint64_t)json_integer_value(v);
	v = json_object_get(o, "time");
	if (!json_is_string(v) ||
	    !time_valid(json_string_value(v), json_string_length(v))) {
		snprintf(why, whylen,
		    "time is not RFC 3339 UTC with milliseconds "
		    "(YYYY-MM-DDTHH:MM:SS.mmmZ)");
		goto out;
	}
	v = json_object_get(o, "event");
	if (!json_is_string(v) || !name_valid(json_string_value(v))) {
		snprintf(why, whylen, "event is not a lower-case name");
		goto out;
	}
	strcpy(li->event, json_string_value(v));
	v = json_object_get(o, "prev");
	if (!json_is_string(v) ||
	    hex_decode(json_string_value(v), json_string_length(v), li->prev,
	        HASH_LEN) != 0) {
		snprintf(why, whylen, "prev is not 64 lower-case hex digits");
		goto out;
	}
	v = json_object_get(o, "prev_file_hash");
	s = json_is_string(v) ? json_string_value(v) : NULL;
	if (s != NULL && json_is_integer(json_object_get(o, "prev_file_seq")) &&
	    hex_decode(s, json_string_length(v), li->cont_hash, HASH_LEN) ==
	        0) {
		li->has_cont = 1;
		li->cont_seq = (uint64_t)json_integer_value(
		    json_object_get(o, "prev_file_seq"));
	}
	ret = 0;
	goto out;
order:
	snprintf(
	    why, whylen, "keys not in the order seq, time, event, ..., prev");
out:
	json_decref(o);
	return ret;
}

void
bk_audit_verifier_init(struct bk_audit_verifier *v)
{
	memset(v, 0, sizeof(*v));
}

/* lineno: the line's number in its file, for messages (0 = unknown). */
static int
verify_line_n(struct bk_audit_verifier *v, const char *line, size_t len,
    unsigned long lineno, char *why, size_t whylen)
{
	static const unsigned char zero[HASH_LEN];
	struct line_info li;

	if (parse_line(line, len, &li, why, whylen) == -1)
		return -1;
	if (!v->started) {
		if (li.seq == 1 && memcmp(li.prev, zero, HASH_LEN) == 0)
			goto good;
		if (strcmp(li.event, "audit_continued") == 0 && li.has_cont &&
		    li.cont_seq + 1 == li.seq &&
		    memcmp(li.cont_hash, li.prev, HASH_LEN) == 0)
			goto good;
		snprintf(why, whylen,
		    "first line has seq %" PRIu64 " and a non-zero prev but is "
		    "not an audit_continued event: the start of the trail is "
		    "missing",
		    li.seq);
		return -1;
	}
	if (li.seq != v->seq + 1) {
		snprintf(why, whylen, "seq %" PRIu64 " expected %" PRIu64,
		    li.seq, v->seq + 1);
		return -1;
	}
	if (memcmp(li.prev, v->hash, HASH_LEN) != 0) {
		if (lineno > 1)
			snprintf(why, whylen,
			    "prev hash does not match line %lu", lineno - 1);
		else
			snprintf(why, whylen,
			    "prev hash does not match the previous file's "
			    "last line");
		return -1;
	}
good:
	if (sha256(line, len, v->hash) == -1) {
		snprintf(why, whylen, "SHA-256 unavailable");
		return -1;
	}
	v->seq = li.seq;
	v->lines++;
	v->started = 1;
	return 0;
}

int
bk_audit_verify_line(struct bk_audit_verifier *v, const char *line, size_t len,
    char *why, size_t whylen)
{
	return verify_line_n(v, line, len, 0, why, whylen);
}

/*
 * Verifies the complete lines in data[0..len); *used = bytes consumed.
 * *lineno counts lines in the file. At eof, a remainder is a torn line.
 */
static int
verify_chunk(struct bk_audit_verifier *v, const char *data, size_t len, int eof,
    size_t *used, unsigned long *lineno, char *why, size_t whylen)
{
	const char *p = data, *end = data + len, *nl;
	char sub[200];

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL) {
			if ((size_t)(end - p) >= BK_AUDIT_LINE_MAX) {
				++*lineno;
				snprintf(why, whylen,
				    "line %lu: longer than %d bytes", *lineno,
				    BK_AUDIT_LINE_MAX - 1);
				return -1;
			}
			if (!eof)
				break;
			++*lineno;
			snprintf(why, whylen,
			    "line %lu: truncated (no newline at end of file)",
			    *lineno);
			return -1;
		}
		++*lineno;
		if (verify_line_n(v, p, (size_t)(nl - p), *lineno, sub,
		        sizeof(sub)) == -1) {
			snprintf(why, whylen, "line %lu: %s", *lineno, sub);
			return -1;
		}
		p = nl + 1;
	}
	*used = (size_t)(p - data);
	return 0;
}

int
bk_audit_verify_buf(struct bk_audit_verifier *v, const char *buf, size_t len,
    unsigned long *bad_line, char *why, size_t whylen)
{
	unsigned long lineno = 0;
	size_t used;

	if (verify_chunk(v, buf, len, 1, &used, &lineno, why, whylen) == -1) {
		if (bad_line)
			*bad_line = lineno;
		return -1;
	}
	if (bad_line)
		*bad_line = 0;
	return 0;
}

int
bk_audit_verify_file_v(struct bk_audit_verifier *v, const char *path,
    unsigned long *bad_line, char *why, size_t whylen)
{
	const size_t cap = 2 * BK_AUDIT_LINE_MAX;
	unsigned long lineno = 0;
	size_t fill = 0, used;
	ssize_t n;
	char *buf;
	int fd, ret = 0;

	if (bad_line)
		*bad_line = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return -2;
	}
	if ((buf = malloc(cap)) == NULL) {
		snprintf(why, whylen, "out of memory");
		close(fd);
		return -2;
	}
	for (;;) {
		n = read(fd, buf + fill, cap - fill);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			snprintf(why, whylen, "%s: %s", path, strerror(errno));
			ret = -2;
			break;
		}
		fill += (size_t)n;
		if (verify_chunk(v, buf, fill, n == 0, &used, &lineno, why,
		        whylen) == -1) {
			if (bad_line)
				*bad_line = lineno;
			ret = -1;
			break;
		}
		if (n == 0)
			break;
		memmove(buf, buf + used, fill - used);
		fill -= used;
	}
	free(buf);
	close(fd);
	return ret;
}

int
bk_audit_verify_file(const char *path, unsigned long *lines,
    unsigned long *bad_line, char *why, size_t whylen)
{
	struct bk_audit_verifier v;
	int rc;

	bk_audit_verifier_init(&v);
	rc = bk_audit_verify_file_v(&v, path, bad_line, why, whylen);
	if (lines)
		*lines = v.lines;
	return rc;
}

/*
 * Reads the last line of the open trail and takes seq and hash from it.
 * The rest of the file is not re-verified here (that is verify-audit's
 * job and would make startup O(trail)); the last line must at least be
 * whole and well-formed, or we would chain from garbage.
 */
static int
resume(struct bk_audit *a, char *err, size_t errlen)
{
	struct line_info li;
	struct stat sb;
	char *buf, *start, why[200];
	size_t want, len;
	off_t off;
	ssize_t n;

	a->seq = 0;
	memset(a->hash, 0, HASH_LEN);
	if (fstat(a->fd, &sb) == -1) {
		snprintf(err, errlen, "%s: %s", a->path, strerror(errno));
		return -1;
	}
	/* Not a regular file (a device, a pipe): nothing to resume from. */
	if (!S_ISREG(sb.st_mode) || sb.st_size == 0)
		return 0;
	want = (size_t)sb.st_size < (size_t)BK_AUDIT_LINE_MAX + 1
	    ? (size_t)sb.st_size
	    : (size_t)BK_AUDIT_LINE_MAX + 1;
	off = sb.st_size - (off_t)want;
	if ((buf = malloc(want)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (len = 0; len < want; len += (size_t)n) {
		n = pread(a->fd, buf + len, want - len, off + (off_t)len);
		if (n == -1 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n <= 0) {
			snprintf(err, errlen, "%s: read: %s", a->path,
			    n == 0 ? "file shrank" : strerror(errno));
			free(buf);
			return -1;
		}
	}
	if (buf[want - 1] != '\n') {
		snprintf(err, errlen,
		    "%s: last line is torn (no newline at end): the trail "
		    "cannot be continued; check it with rabrokerctl "
		    "verify-audit, then repair or move the file",
		    a->path);
		free(buf);
		return -1;
	}
	start = buf + want - 1;
	while (start > buf && start[-1] != '\n')
		start--;
	if (start == buf && off != 0) {
		snprintf(err, errlen, "%s: last line longer than %d bytes",
		    a->path, BK_AUDIT_LINE_MAX - 1);
		free(buf);
		return -1;
	}
	len = (size_t)(buf + want - 1 - start);
	if (parse_line(start, len, &li, why, sizeof(why)) == -1 ||
	    sha256(start, len, a->hash) == -1) {
		snprintf(err, errlen,
		    "%s: last line is corrupt (%s): the trail cannot be "
		    "continued; check it with rabrokerctl verify-audit, then "
		    "repair or move the file",
		    a->path, why);
		free(buf);
		return -1;
	}
	a->seq = li.seq;
	free(buf);
	return 0;
}

static void set_fd(struct bk_audit *a, int fd);

static int
open_fd(struct bk_audit *a, char *err, size_t errlen)
{
	int fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);

	if (fd == -1) {
		snprintf(err, errlen, "%s: %s", a->path, strerror(errno));
		return -1;
	}
	set_fd(a, fd);
	return 0;
}

static void *
sync_main(void *arg)
{
	struct bk_audit *a = arg;
	int fd, e;

	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (!a->dirty && !a->stop)
			pthread_cond_wait(&a->cv, &a->mu);
		if (!a->dirty)
			break; /* stop, nothing left */
		a->dirty = 0;
		fd = a->fd == -1 ? -1 : dup(a->fd);
		e = (a->fd != -1 && fd == -1) ? errno : 0;
		pthread_mutex_unlock(&a->mu);
		if (fd != -1) {
			if (fdatasync(fd) == -1 && errno != EINVAL)
				e = errno;
			close(fd);
		}
		if (e != 0)
			atomic_store(&a->sync_errno, e);
		pthread_mutex_lock(&a->mu);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/* Asks the sync thread to sync what has been written; before the thread
 * is started (bk_audit_start_sync), syncs at once. */
static void
sync_later(struct bk_audit *a)
{
	if (!a->thr_running) {
		sync_now(a);
		return;
	}
	pthread_mutex_lock(&a->mu);
	a->dirty = 1;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

/* Changes the file descriptor under the thread's lock. */
static void
set_fd(struct bk_audit *a, int fd)
{
	pthread_mutex_lock(&a->mu);
	a->fd = fd;
	pthread_mutex_unlock(&a->mu);
}

static void
sync_stop(struct bk_audit *a)
{
	if (!a->thr_running)
		return;
	pthread_mutex_lock(&a->mu);
	a->stop = 1;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thr, NULL);
	a->thr_running = 0;
}

struct bk_audit *
bk_audit_open(const char *path, int to_syslog, char *err, size_t errlen)
{
	struct bk_audit *a;

	if ((a = calloc(1, sizeof(*a))) == NULL ||
	    (a->path = strdup(path)) == NULL) {
		free(a);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->to_syslog = to_syslog;
	a->sync = 1;
	a->fd = -1;
	atomic_init(&a->sync_errno, 0);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	if (open_fd(a, err, errlen) == -1 || resume(a, err, errlen) == -1)
		goto fail;
	a->ok = 1;
	return a;
fail:
	if (a->fd != -1)
		close(a->fd);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	free(a->path);
	free(a);
	return NULL;
}

int
bk_audit_start_sync(struct bk_audit *a, char *err, size_t errlen)
{
	if (a->thr_running)
		return 0;
	if (pthread_create(&a->thr, NULL, sync_main, a) != 0) {
		snprintf(
		    err, errlen, "%s: cannot start the sync thread", a->path);
		return -1;
	}
	a->thr_running = 1;
	return 0;
}

void
bk_audit_close(struct bk_audit *a)
{
	if (a == NULL)
		return;
	sync_stop(a);
	if (a->fd != -1) {
		if (a->ok && a->sync)
			sync_now(a);
		close(a->fd);
	}
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	free(a->path);
	free(a);
}

int
bk_audit_ok(const struct bk_audit *a)
{
	return a != NULL && a->ok &&
	    atomic_load((atomic_int *)&a->sync_errno) == 0;
}

void
bk_audit_set_sync(struct bk_audit *a, int on)
{
	a->sync = on;
}

uint64_t
bk_audit_seq(const struct bk_audit *a)
{
	return a->seq;
}

void
bk_audit_last_hash(const struct bk_audit *a, char out[BK_AUDIT_HASH_HEX + 1])
{
	hex_encode(a->hash, HASH_LEN, out);
}

static void
fail(struct bk_audit *a, int err, const char *what)
{
	a->ok = 0;
	if (!a->fail_logged) {
		errno = err;
		log_warn("audit trail %s: %s failed; refusing new offers "
		         "until the trail is reopened (SIGHUP)",
		    a->path, what);
		a->fail_logged = 1;
	}
}

static int
is_secret_key(const char *k)
{
	return strcmp(k, "secret") == 0 || strcmp(k, "psk") == 0 ||
	    strcmp(k, "password") == 0;
}

static int
has_secret(json_t *j, int depth)
{
	const char *k;
	json_t *v;
	size_t i;

	if (depth > 32)
		return 0;
	if (json_is_object(j)) {
		json_object_foreach(j, k, v)
		{
			if (is_secret_key(k) || has_secret(v, depth + 1))
				return 1;
		}
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
		{
			if (has_secret(v, depth + 1))
				return 1;
		}
	}
	return 0;
}

static void
redact(json_t *j, int depth)
{
	const char *k;
	json_t *v;
	size_t i;

	if (depth > 32)
		return;
	if (json_is_object(j)) {
		json_object_foreach(j, k, v)
		{
			if (is_secret_key(k))
				json_object_set_new(
				    j, k, json_string("(redacted)"));
			else
				redact(v, depth + 1);
		}
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
		{
			redact(v, depth + 1);
		}
	}
}

static int
is_reserved(const char *k)
{
	return strcmp(k, "seq") == 0 || strcmp(k, "time") == 0 ||
	    strcmp(k, "event") == 0 || strcmp(k, "prev") == 0;
}

/* Serialises one event; NULL on allocation failure. */
static char *
build_line(struct bk_audit *a, enum bk_audit_event ev, json_t *fields)
{
	char when[32], prev[BK_AUDIT_HASH_HEX + 1], key[300];
	json_t *o, *v;
	const char *k;
	char *line;
	int bad = 0;

	if ((o = json_object()) == NULL)
		return NULL;
	time_now(when);
	hex_encode(a->hash, HASH_LEN, prev);
	bad |=
	    json_object_set_new(o, "seq", json_integer((json_int_t)a->seq + 1));
	bad |= json_object_set_new(o, "time", json_string(when));
	bad |= json_object_set_new(
	    o, "event", json_string(bk_audit_event_name(ev)));
	if (fields != NULL) {
		json_object_foreach(fields, k, v)
		{
			const char *name = k;

			if (is_reserved(k)) {
				snprintf(key, sizeof(key), "field_%.256s", k);
				name = key;
			}
			bad |= json_object_set(o, name, v);
		}
	}
	bad |= json_object_set_new(o, "prev", json_string(prev));
	line = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(o);
	return line;
}

static int
write_line(struct bk_audit *a, const char *line, size_t len)
{
	struct stat sb;
	char *buf;
	ssize_t n;
	off_t before = -1;

	if ((buf = malloc(len + 1)) == NULL) {
		fail(a, ENOMEM, "allocation");
		return -1;
	}
	memcpy(buf, line, len);
	buf[len] = '\n';
	if (fstat(a->fd, &sb) == 0 && S_ISREG(sb.st_mode))
		before = sb.st_size;
	do {
		n = write(a->fd, buf, len + 1);
	} while (n == -1 && errno == EINTR);
	free(buf);
	if (n != (ssize_t)len + 1) {
		int e = n == -1 ? errno : ENOSPC;

		/* Never leave half a line: the next open would refuse it. */
		if (n > 0 && before >= 0 && ftruncate(a->fd, before) == -1)
			log_warn("audit trail %s: cannot cut a partial line",
			    a->path);
		fail(a, e, "write");
		return -1;
	}
	return 0;
}

static int
sync_now(struct bk_audit *a)
{
	int e = atomic_exchange(&a->sync_errno, 0);

	if (e != 0) {
		fail(a, e, "fdatasync (sync thread)");
		return -1;
	}
	if (a->pending == 0)
		return 0;
	if (fdatasync(a->fd) == -1 && errno != EINVAL) {
		fail(a, errno, "fdatasync");
		return -1;
	}
	a->pending = 0;
	return 0;
}

int
bk_audit_sync(struct bk_audit *a)
{
	if (a == NULL || !a->ok || a->fd == -1)
		return RP_ERR_AUDIT_UNAVAILABLE;
	return sync_now(a) == 0 ? RP_OK : RP_ERR_AUDIT_UNAVAILABLE;
}

int
bk_audit_write(struct bk_audit *a, enum bk_audit_event ev, json_t *fields)
{
	char why[200];
	char *line;
	size_t len;

	if (a != NULL && a->obs != NULL &&
	    (fields == NULL || json_is_object(fields)))
		a->obs(a->obs_arg, ev, fields);
	if (a != NULL && a->ok && atomic_load(&a->sync_errno) != 0)
		fail(a, atomic_exchange(&a->sync_errno, 0),
		    "fdatasync (sync thread)");
	if (a == NULL || !a->ok || a->fd == -1) {
		json_decref(fields);
		return RP_ERR_AUDIT_UNAVAILABLE;
	}
	if (fields != NULL && !json_is_object(fields)) {
		log_warnx("audit: %s: fields are not an object, dropped",
		    bk_audit_event_name(ev));
		json_decref(fields);
		fields = NULL;
	}
	if (bk_audit_event_check(ev, fields, why, sizeof(why)) == -1)
		log_warnx("audit: %s (written anyway)", why);
	if (fields != NULL && has_secret(fields, 0)) {
		json_t *c = json_deep_copy(fields);

		log_warnx("audit: %s: a secret-named field was redacted",
		    bk_audit_event_name(ev));
		json_decref(fields);
		if ((fields = c) != NULL)
			redact(fields, 0);
	}
	line = build_line(a, ev, fields);
	json_decref(fields);
	if (line != NULL && strlen(line) >= BK_AUDIT_LINE_MAX) {
		/* Keep the event, drop the oversized fields. */
		json_t *f = json_pack("{s:b,s:I}", "fields_too_long", 1,
		    "fields_bytes", (json_int_t)strlen(line));

		log_warnx("audit: %s: fields too long, dropped",
		    bk_audit_event_name(ev));
		free(line);
		line = build_line(a, ev, f);
		json_decref(f);
	}
	if (line == NULL) {
		fail(a, ENOMEM, "building a line");
		return RP_ERR_AUDIT_UNAVAILABLE;
	}
	len = strlen(line);
	if (write_line(a, line, len) == -1) {
		free(line);
		return RP_ERR_AUDIT_UNAVAILABLE;
	}
	a->seq++;
	sha256(line, len, a->hash);
	if (a->sync) {
		a->pending++;
		sync_later(a);
	}
	if (a->to_syslog)
		syslog(LOG_AUTHPRIV | LOG_NOTICE, "audit %s", line);
	free(line);
	return RP_OK;
}

int
bk_audit_reopen(struct bk_audit *a, char *err, size_t errlen)
{
	unsigned char hash[HASH_LEN];
	char hex[BK_AUDIT_HASH_HEX + 1];
	uint64_t seq = a->seq;

	memcpy(hash, a->hash, HASH_LEN);
	if (a->fd != -1) {
		int old = a->fd;

		if (a->ok && a->sync)
			sync_now(a);
		set_fd(a, -1);
		close(old);
	}
	a->pending = 0;
	a->ok = 0;
	/* A new file: an old sync error no longer applies. */
	atomic_store(&a->sync_errno, 0);
	if (open_fd(a, err, errlen) == -1)
		return -1;
	if (resume(a, err, errlen) == -1) {
		int old = a->fd;

		set_fd(a, -1);
		close(old);
		a->seq = seq; /* keep the chain for the next attempt */
		memcpy(a->hash, hash, HASH_LEN);
		return -1;
	}
	a->ok = 1;
	a->fail_logged = 0;
	if (a->seq == 0 && seq > 0) {
		/* A fresh file after rotation: link it to the old one. */
		a->seq = seq;
		memcpy(a->hash, hash, HASH_LEN);
		hex_encode(hash, HASH_LEN, hex);
		if (bk_audit_write(a, BK_AE_AUDIT_CONTINUED,
		        json_pack("{s:I,s:s}", "prev_file_seq", (json_int_t)seq,
		            "prev_file_hash", hex)) != RP_OK) {
			snprintf(err, errlen, "%s: cannot write the first line",
			    a->path);
			return -1;
		}
	}
	return 0;
}

json_t *
bk_audit_ticket_fields(const struct bk_ticket *t)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:s}", "ticket", t->id, "helper",
	    t->helper ? t->helper : "", "helper_host",
	    t->helper_host ? t->helper_host : "", "machine",
	    t->machine ? t->machine : "", "mode", bk_ticket_mode_name(t->mode));
}

void
bk_audit_set_observer(struct bk_audit *a, bk_audit_observer_fn fn, void *arg)
{
	if (a == NULL)
		return;
	a->obs = fn;
	a->obs_arg = arg;
}
