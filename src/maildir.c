/*
 * Maildir writer. Every message costs one O_EXCL create in tmp/, its
 * writes, one fdatasync and, later, one rename; directories are opened
 * once by maildir_open() and reached through their descriptors (openat,
 * renameat), so no per-message path walk or directory open happens.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "mailpull/maildir.h"
#include "mailpull/util.h"

#define MD_TAG_MAX 16
#define MD_HOST_MAX 128
#define MD_BUF_SIZE (64 * 1024)
/* How often maildir_msg_new() picks a fresh name after EEXIST. */
#define MD_CREATE_TRIES 8

enum md_sub {
	MD_TMP,
	MD_NEW,
	MD_CUR,
	MD_SUB_MAX
};

static const char *const md_sub_names[MD_SUB_MAX] = { "tmp", "new", "cur" };

struct maildir {
	char *path;
	char tag[MD_TAG_MAX + 1];
	char host[MD_HOST_MAX + 1];       /* escaped per the Maildir spec */
	int fd[MD_SUB_MAX];               /* tmp/, new/, cur/ */
	bool dirty[MD_SUB_MAX];           /* changed since their last fsync */
	bool use_syncfs;                  /* group commit by syncfs(), else fdatasync per file */
	uint64_t seq;
	long pid;                         /* for names: a system call saved per message */
	char *spare;                      /* a finished message's write buffer, for the next */
};

struct maildir_msg {
	struct maildir *md;
	int fd;                           /* -1 once synced or failed */
	bool synced;
	int failed;                       /* sticky negative errno of a failed write */
	uint64_t size;
	size_t buflen;
	char *buf;                        /* MD_BUF_SIZE bytes; freed by sync */
	char name[NAME_MAX + 1];
};

/* Local disk trouble is an I/O failure, never an authentication one. */
static int
md_fail(struct mp_err *err, int code, const char *what, const char *path, const char *name)
{
	enum mp_exit ex = code == -ENOMEM ? MP_EX_TEMPFAIL : MP_EX_IOERR;

	if (name)
		return mp_err_set(err, code, ex, "%s %s/%s: %s", what, path, name, strerror(-code));
	return mp_err_set(err, code, ex, "%s %s: %s", what, path, strerror(-code));
}

static int
md_check_tag(const char *tag)
{
	size_t n = strlen(tag);

	if (n == 0 || n > MD_TAG_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = tag[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			return -EINVAL;
	}
	return 0;
}

/*
 * The Maildir spec asks for '/' and ':' in the host name to be written as
 * "\057" and "\072": '/' cannot appear in a file name and ':' starts the
 * info part in cur/.
 */
static void
md_escape_host(char *dst, size_t dstlen, const char *host)
{
	size_t o = 0;

	for (const char *p = host; *p; p++) {
		const char *rep = NULL;

		if (*p == '/')
			rep = "\\057";
		else if (*p == ':')
			rep = "\\072";
		if (rep) {
			if (o + 4 >= dstlen)
				break;
			memcpy(dst + o, rep, 4);
			o += 4;
		} else {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = *p;
		}
	}
	dst[o] = '\0';
}

static void
md_init_host(struct maildir *md)
{
	char host[HOST_NAME_MAX + 1];

	if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
		memcpy(host, "localhost", sizeof("localhost"));
	host[sizeof(host) - 1] = '\0';
	md_escape_host(md->host, sizeof(md->host), host);
}

/* Creates (when missing) and opens one of tmp/, new/, cur/. */
static int
md_open_sub(struct maildir *md, int rootfd, enum md_sub sub, bool *created, struct mp_err *err)
{
	const char *name = md_sub_names[sub];
	int fd;

	if (mkdirat(rootfd, name, 0700) == 0)
		*created = true;
	else if (errno != EEXIST)
		return md_fail(err, -errno, "cannot create Maildir directory", md->path, name);
	fd = openat(rootfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return md_fail(err, -errno, "cannot open Maildir directory", md->path, name);
	md->fd[sub] = fd;
	return 0;
}

/*
 * syncfs() reports write-back errors of the files it flushed only since
 * Linux 5.8; before that a failed write-back of a message would go
 * unnoticed, so older kernels sync file by file.
 */
static bool
md_syncfs_reports_errors(void)
{
	struct utsname u;
	unsigned long major, minor;
	char *end;

	if (uname(&u) < 0)
		return false;
	major = strtoul(u.release, &end, 10);
	if (*end != '.')
		return false;
	minor = strtoul(end + 1, &end, 10);
	return major > 5 || (major == 5 && minor >= 8);
}

static int
md_open_dirs(struct maildir *md, struct mp_err *err)
{
	bool created = false;
	int rootfd, r = 0;

	/* util_mkdir_p() fsyncs the parent of every directory it creates. */
	r = util_mkdir_p(md->path, 0700);
	if (r < 0)
		return md_fail(err, r, "cannot create Maildir", md->path, NULL);
	rootfd = open(md->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return md_fail(err, -errno, "cannot open Maildir", md->path, NULL);
	for (int i = 0; i < MD_SUB_MAX && r == 0; i++)
		r = md_open_sub(md, rootfd, (enum md_sub)i, &created, err);
	/* New tmp/, new/ or cur/ entries are durable once the root is synced. */
	if (r == 0 && created && fsync(rootfd) < 0)
		r = md_fail(err, -errno, "cannot sync Maildir", md->path, NULL);
	close(rootfd);
	return r;
}

int
maildir_open(const char *path, const char *tag, struct maildir **ret, struct mp_err *err)
{
	struct maildir *md;
	int r;

	if (!path || !*path || !tag || md_check_tag(tag) < 0)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "Maildir %s: invalid owner tag '%s'",
				  path ? path : "(null)", tag ? tag : "(null)");
	md = calloc(1, sizeof(*md));
	if (!md)
		return md_fail(err, -ENOMEM, "cannot open Maildir", path, NULL);
	for (int i = 0; i < MD_SUB_MAX; i++)
		md->fd[i] = -1;
	md->pid = (long)getpid();
	md->path = strdup(path);
	if (!md->path) {
		maildir_close(md);
		return md_fail(err, -ENOMEM, "cannot open Maildir", path, NULL);
	}
	/* "a/b/" names the same Maildir as "a/b"; its parent is "a". */
	for (size_t n = strlen(md->path); n > 1 && md->path[n - 1] == '/'; n--)
		md->path[n - 1] = '\0';
	memcpy(md->tag, tag, strlen(tag) + 1);
	md_init_host(md);
	md->use_syncfs = md_syncfs_reports_errors();
	r = md_open_dirs(md, err);
	if (r < 0) {
		maildir_close(md);
		return r;
	}
	*ret = md;
	return 0;
}

const char *
maildir_path(const struct maildir *md)
{
	return md->path;
}

static int
md_make_name(struct maildir *md, char *name, size_t len)
{
	struct timespec ts;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(name, len, "%lld.M%ldP%ldQ%lluX%s.%s", (long long)ts.tv_sec,
		     (long)(ts.tv_nsec / 1000), md->pid, (unsigned long long)++md->seq,
		     md->tag, md->host);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

/*
 * Messages are written one at a time: the buffer of a finished one serves
 * the next, so a run of small messages allocates one buffer, not one each.
 */
static void
md_buf_put(struct maildir *md, char *buf)
{
	if (!md->spare)
		md->spare = buf;
	else
		free(buf);
}

/* A message of md with its write buffer, not yet named or opened. */
static int
md_msg_alloc(struct maildir *md, struct maildir_msg **ret, struct mp_err *err)
{
	struct maildir_msg *m = calloc(1, sizeof(*m));

	if (m && md->spare) {
		m->buf = md->spare;
		md->spare = NULL;
	} else if (m) {
		m->buf = malloc(MD_BUF_SIZE);
	}
	if (!m || !m->buf) {
		free(m);
		return md_fail(err, -ENOMEM, "cannot create message in", md->path, "tmp");
	}
	m->md = md;
	*ret = m;
	return 0;
}

int
maildir_msg_new(struct maildir *md, struct maildir_msg **ret, struct mp_err *err)
{
	struct maildir_msg *m;
	int r = md_msg_alloc(md, &m, err);

	if (r < 0)
		return r;
	r = -EEXIST;
	/* EEXIST only when a name repeats (clock stepped back, pid reused). */
	for (int i = 0; i < MD_CREATE_TRIES && r == -EEXIST; i++) {
		r = md_make_name(md, m->name, sizeof(m->name));
		if (r < 0)
			break;
		m->fd = openat(md->fd[MD_TMP], m->name,
			       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		r = m->fd < 0 ? -errno : 0;
	}
	if (r < 0) {
		md_fail(err, r, "cannot create message in", md->path, "tmp");
		md_buf_put(md, m->buf);
		free(m);
		return r;
	}
	*ret = m;
	return 0;
}

int
maildir_msg_new_named(struct maildir *md, const char *name, struct maildir_msg **ret,
		      struct mp_err *err)
{
	size_t n = name ? strlen(name) : 0;
	struct maildir_msg *m;

	if (n == 0 || n >= sizeof(m->name) || name[0] == '.' || strpbrk(name, "/:"))
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "invalid message name '%s' for %s",
				  name ? name : "", md->path);
	if (md_msg_alloc(md, &m, err) < 0)
		return -ENOMEM;
	memcpy(m->name, name, n + 1);
	/* Not O_EXCL: a leftover of an interrupted run is this very message. */
	m->fd = openat(md->fd[MD_TMP], m->name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (m->fd < 0) {
		int r = -errno;

		md_fail(err, r, "cannot create message in", md->path, "tmp");
		md_buf_put(md, m->buf);
		free(m);
		return r;
	}
	*ret = m;
	return 0;
}

static int
md_msg_fail(struct maildir_msg *m, int r, const char *what, struct mp_err *err)
{
	char sub[NAME_MAX + 8];

	if (m->failed == 0)
		m->failed = r;
	snprintf(sub, sizeof(sub), "tmp/%s", m->name);
	return md_fail(err, r, what, m->md->path, sub);
}

static int
md_flush(struct maildir_msg *m, struct mp_err *err)
{
	int r;

	if (m->buflen == 0)
		return 0;
	r = util_write_all(m->fd, m->buf, m->buflen);
	if (r < 0)
		return md_msg_fail(m, r, "cannot write", err);
	m->buflen = 0;
	return 0;
}

int
maildir_msg_write(struct maildir_msg *m, const void *data, size_t len, struct mp_err *err)
{
	const char *p = data;

	if (m->failed)
		return md_msg_fail(m, m->failed, "cannot write", err);
	if (m->fd < 0 || !m->buf)
		return md_msg_fail(m, -EINVAL, "write after flush or sync to", err);
	m->size += len;
	if (m->buflen + len <= MD_BUF_SIZE) {
		memcpy(m->buf + m->buflen, p, len);
		m->buflen += len;
		return 0;
	}
	if (md_flush(m, err) < 0)
		return m->failed;
	/* Large chunks skip the copy: the buffer would only be flushed again. */
	if (len >= MD_BUF_SIZE) {
		int r = util_write_all(m->fd, p, len);

		return r < 0 ? md_msg_fail(m, r, "cannot write", err) : 0;
	}
	memcpy(m->buf, p, len);
	m->buflen = len;
	return 0;
}

const char *
maildir_msg_name(const struct maildir_msg *m)
{
	return m->name;
}

uint64_t
maildir_msg_size(const struct maildir_msg *m)
{
	return m->size;
}

int
maildir_msg_flush(struct maildir_msg *m, struct mp_err *err)
{
	int r;

	if (m->synced)
		return 0;
	if (m->failed < 0)
		return md_msg_fail(m, m->failed, "cannot write", err);
	r = md_flush(m, err);
	if (r < 0)
		return r;
	md_buf_put(m->md, m->buf);
	m->buf = NULL;
	return 0;
}

/*
 * Group commit: one syncfs() makes a whole batch durable at the cost of one
 * file system journal commit, where an fdatasync() per file costs one each
 * (measured: 5000 small messages in about half the time). It also flushes
 * other programs' dirty data on the same file system; that is the price,
 * and `sync = file` (maildir_set_sync_per_file()) declines to pay it.
 */
int
maildir_sync_batch(struct maildir *md, struct maildir_msg **msgs, size_t n, struct mp_err *err)
{
	int r = 0;

	if (n >= 2 && md->use_syncfs) {
		for (size_t i = 0; i < n; i++) {
			r = maildir_msg_flush(msgs[i], err);
			if (r < 0)
				return r;
		}
		if (syncfs(md->fd[MD_TMP]) == 0) {
			for (size_t i = 0; i < n; i++) {
				if (close(msgs[i]->fd) < 0 && errno != EINTR && r == 0)
					r = md_msg_fail(msgs[i], -errno, "cannot close", err);
				msgs[i]->fd = -1;
				msgs[i]->synced = true;
			}
			return r;
		}
		/* No syncfs here (seccomp, emulation): the files are still open. */
		if (errno != ENOSYS && errno != EINVAL)
			return md_fail(err, -errno, "cannot sync", md->path, "tmp");
		md->use_syncfs = false;
	}
	for (size_t i = 0; i < n && r == 0; i++)
		r = maildir_msg_sync(msgs[i], err);
	return r;
}

void
maildir_set_sync_per_file(struct maildir *md, bool per_file)
{
	/* Otherwise as maildir_open() found the kernel (or a failed syncfs left it). */
	if (per_file)
		md->use_syncfs = false;
}

int
maildir_msg_sync(struct maildir_msg *m, struct mp_err *err)
{
	int r = m->failed;

	if (m->synced)
		return 0;
	if (r < 0)
		return md_msg_fail(m, r, "cannot write", err);
	if (m->fd < 0)
		return md_msg_fail(m, -EBADF, "cannot sync", err);
	r = md_flush(m, err);
	/* fdatasync also persists the file size, all a reader needs. */
	if (r == 0 && fdatasync(m->fd) < 0)
		r = md_msg_fail(m, -errno, "cannot sync", err);
	/* close() can report a deferred write error (NFS, quotas). */
	if (close(m->fd) < 0 && r == 0 && errno != EINTR)
		r = md_msg_fail(m, -errno, "cannot close", err);
	m->fd = -1;
	md_buf_put(m->md, m->buf);
	m->buf = NULL;
	if (r < 0)
		return r;
	m->synced = true;
	return 0;
}

static int
md_sync_sub(struct maildir *md, enum md_sub sub, struct mp_err *err)
{
	if (fsync(md->fd[sub]) < 0)
		return md_fail(err, -errno, "cannot sync", md->path, md_sub_names[sub]);
	md->dirty[sub] = false;
	return 0;
}

int
maildir_sync_tmp(struct maildir *md, struct mp_err *err)
{
	return md_sync_sub(md, MD_TMP, err);
}

static bool
md_flags_valid(const char *flags)
{
	char prev = 0;

	/* The spec wants the info letters in ASCII order, each once. */
	for (const char *p = flags; *p; p++) {
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) || *p <= prev)
			return false;
		prev = *p;
	}
	return true;
}

static void
md_msg_free(struct maildir_msg *m)
{
	if (m->fd >= 0)
		close(m->fd);
	if (m->buf)
		md_buf_put(m->md, m->buf);
	free(m);
}

int
maildir_msg_publish(struct maildir_msg *m, const char *flags, struct mp_err *err)
{
	struct maildir *md = m->md;
	enum md_sub sub = flags ? MD_CUR : MD_NEW;
	char dst[NAME_MAX + 1];
	int r = 0;

	if (!m->synced)
		r = md_msg_fail(m, -EINVAL, "cannot publish unsynced message", err);
	else if (flags && !md_flags_valid(flags))
		r = md_msg_fail(m, -EINVAL, "invalid Maildir flags for", err);
	else if (snprintf(dst, sizeof(dst), "%s%s%s", m->name, flags ? ":2," : "",
			  flags ? flags : "") >= (int)sizeof(dst))
		r = md_msg_fail(m, -ENAMETOOLONG, "cannot publish", err);
	else if (renameat(md->fd[MD_TMP], m->name, md->fd[sub], dst) < 0)
		r = md_msg_fail(m, -errno, "cannot publish", err);
	else
		md->dirty[sub] = true;
	md_msg_free(m);
	return r;
}

int
maildir_sync_new(struct maildir *md, struct mp_err *err)
{
	int r = 0;

	if (md->dirty[MD_NEW])
		r = md_sync_sub(md, MD_NEW, err);
	if (r == 0 && md->dirty[MD_CUR])
		r = md_sync_sub(md, MD_CUR, err);
	return r;
}

int
maildir_sync_published(struct maildir *md, struct mp_err *err)
{
	md->dirty[MD_NEW] = true;
	md->dirty[MD_CUR] = true;
	return maildir_sync_new(md, err);
}

void
maildir_msg_discard(struct maildir_msg *m)
{
	if (!m)
		return;
	if (m->fd >= 0) {
		close(m->fd);
		m->fd = -1;
	}
	if (unlinkat(m->md->fd[MD_TMP], m->name, 0) == 0)
		m->md->dirty[MD_TMP] = true;
	md_msg_free(m);
}

void
maildir_msg_release(struct maildir_msg **msgs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (msgs[i])
			md_msg_free(msgs[i]);
		msgs[i] = NULL;
	}
}

static bool
md_skip_digits(const char **p)
{
	const char *s = *p;

	while (**p >= '0' && **p <= '9')
		(*p)++;
	return *p != s;
}

/*
 * Whether name is one of ours: "<sec>.M<usec>P<pid>Q<seq>X<tag>.<host>".
 * The whole prefix is matched, not just "X<tag>.", so a host name or
 * another program's naming scheme can never make us claim a foreign file.
 */
static bool
md_is_ours(const struct maildir *md, const char *name)
{
	static const char marks[] = "PQX";
	const char *p = name;
	size_t tl = strlen(md->tag);

	if (!md_skip_digits(&p) || p[0] != '.' || p[1] != 'M')
		return false;
	p += 2;
	for (const char *mk = marks; *mk; mk++) {
		if (!md_skip_digits(&p) || *p != *mk)
			return false;
		p++;
	}
	return strncmp(p, md->tag, tl) == 0 && p[tl] == '.' && p[tl + 1] != '\0';
}

struct md_names {
	char **v;
	size_t n, cap;
};

static void
md_names_free(struct md_names *names)
{
	for (size_t i = 0; i < names->n; i++)
		free(names->v[i]);
	free(names->v);
}

static int
md_names_push(struct md_names *names, const char *name)
{
	if (names->n == names->cap) {
		size_t cap = names->cap ? names->cap * 2 : 16;
		char **v = realloc(names->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		names->v = v;
		names->cap = cap;
	}
	names->v[names->n] = strdup(name);
	if (!names->v[names->n])
		return -ENOMEM;
	names->n++;
	return 0;
}

/* Our tmp/ names, collected first so the directory is not changed while read. */
static int
md_list_ours(struct maildir *md, struct md_names *names, struct mp_err *err)
{
	struct dirent *de;
	DIR *d;
	int fd, r = 0;

	fd = openat(md->fd[MD_TMP], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return md_fail(err, -errno, "cannot open", md->path, "tmp");
	d = fdopendir(fd);
	if (!d) {
		r = -errno;
		close(fd);
		return md_fail(err, r, "cannot read", md->path, "tmp");
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno != 0)
				r = md_fail(err, -errno, "cannot read", md->path, "tmp");
			break;
		}
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		if (!md_is_ours(md, de->d_name))
			continue;
		r = md_names_push(names, de->d_name);
		if (r < 0) {
			md_fail(err, r, "cannot read", md->path, "tmp");
			break;
		}
	}
	closedir(d);
	return r;
}

/*
 * Finishes one interrupted delivery: publish it (into cur/ with the info
 * letters a normal run would have given it) or remove it.
 */
static int
md_recover_one(struct maildir *md, const char *name, bool keep, const char *flags,
	       struct mp_err *err)
{
	enum md_sub to = *flags ? MD_CUR : MD_NEW;
	char sub[NAME_MAX + 8], dst[NAME_MAX + 1];

	snprintf(sub, sizeof(sub), "tmp/%s", name);
	if (keep) {
		if (!md_flags_valid(flags))
			return md_fail(err, -EINVAL, "invalid Maildir flags for recovered",
				       md->path, sub);
		if (snprintf(dst, sizeof(dst), "%s%s%s", name, *flags ? ":2," : "", flags) >=
		    (int)sizeof(dst))
			return md_fail(err, -ENAMETOOLONG, "cannot publish recovered", md->path,
				       sub);
		if (renameat(md->fd[MD_TMP], name, md->fd[to], dst) < 0)
			return md_fail(err, -errno, "cannot publish recovered", md->path, sub);
		md->dirty[to] = true;
		return 0;
	}
	if (unlinkat(md->fd[MD_TMP], name, 0) < 0 && errno != ENOENT)
		return md_fail(err, -errno, "cannot remove partial", md->path, sub);
	md->dirty[MD_TMP] = true;
	return 0;
}

int
maildir_recover(struct maildir *md,
		bool (*committed)(void *ud, const char *name, char flags[MAILDIR_FLAGS_SIZE]),
		void *ud, unsigned *ret_published, unsigned *ret_removed, struct mp_err *err)
{
	struct md_names names = { 0 };
	unsigned published = 0, removed = 0;
	int r, q;

	r = md_list_ours(md, &names, err);
	for (size_t i = 0; r == 0 && i < names.n; i++) {
		char flags[MAILDIR_FLAGS_SIZE] = "";
		bool keep = committed(ud, names.v[i], flags);

		flags[MAILDIR_FLAGS_SIZE - 1] = '\0';
		r = md_recover_one(md, names.v[i], keep, flags, err);
		if (r == 0 && keep)
			published++;
		else if (r == 0)
			removed++;
	}
	md_names_free(&names);
	/* Sync even after a failure: what was already moved should stay moved. */
	q = md->dirty[MD_TMP] ? md_sync_sub(md, MD_TMP, err) : 0;
	r = r < 0 ? r : q;
	q = maildir_sync_new(md, err);
	r = r < 0 ? r : q;
	if (r < 0)
		return r;
	if (ret_published)
		*ret_published = published;
	if (ret_removed)
		*ret_removed = removed;
	return 0;
}

/* ---- walking a Maildir tree ---- */

int
maildir_tree_foreach(const char *root, int (*cb)(void *ud, const char *path), void *ud,
		     struct mp_err *err)
{
	struct dirent *de;
	DIR *d;
	int r = cb(ud, root);

	if (r != 0)
		return r;
	d = opendir(root);
	if (!d)
		return md_fail(err, -errno, "cannot read", root, NULL);
	for (;;) {
		struct stat sb;
		char *path, *tmp;

		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno != 0)
				r = md_fail(err, -errno, "cannot read", root, NULL);
			break;
		}
		/* Maildir++ folders are ".NAME" (mbsync also writes "..NAME"). */
		if (de->d_name[0] != '.' || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (asprintf(&path, "%s/%s", root, de->d_name) < 0) {
			r = md_fail(err, -ENOMEM, "cannot read", root, NULL);
			break;
		}
		if (asprintf(&tmp, "%s/tmp", de->d_name) < 0) {
			free(path);
			r = md_fail(err, -ENOMEM, "cannot read", root, NULL);
			break;
		}
		if (fstatat(dirfd(d), tmp, &sb, 0) == 0 && S_ISDIR(sb.st_mode))
			r = cb(ud, path);
		free(tmp);
		free(path);
		if (r != 0)
			break;
	}
	closedir(d);
	return r;
}

/* One of tmp/, new/, cur/: a missing one has no names. */
static int
md_names_in(const char *path, const char *sub, int (*cb)(void *ud, const char *base),
	    void *ud, struct mp_err *err)
{
	char base[NAME_MAX + 1];
	struct dirent *de;
	char *dir;
	DIR *d;
	int r = 0;

	if (asprintf(&dir, "%s/%s", path, sub) < 0)
		return md_fail(err, -ENOMEM, "cannot read", path, sub);
	d = opendir(dir);
	free(dir);
	if (!d)
		return errno == ENOENT ? 0 : md_fail(err, -errno, "cannot read", path, sub);
	for (;;) {
		size_t len;

		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno != 0)
				r = md_fail(err, -errno, "cannot read", path, sub);
			break;
		}
		if (de->d_name[0] == '.')
			continue;
		len = strcspn(de->d_name, ":");
		memcpy(base, de->d_name, len);
		base[len] = '\0';
		r = cb(ud, base);
		if (r != 0)
			break;
	}
	closedir(d);
	return r;
}

static int
md_name_is(void *ud, const char *base)
{
	return strcmp(base, ud) == 0 ? 1 : 0;
}

int
maildir_has_published(struct maildir *md, const char *name, bool *ret, struct mp_err *err)
{
	int r = md_names_in(md->path, "new", md_name_is, (void *)name, err);

	if (r == 0)
		r = md_names_in(md->path, "cur", md_name_is, (void *)name, err);
	if (r < 0)
		return r;
	*ret = r == 1;
	return 0;
}

int
maildir_names_foreach(const char *path, int (*cb)(void *ud, const char *base), void *ud,
		      struct mp_err *err)
{
	static const char *const subs[] = { "tmp", "new", "cur" };
	int r = 0;

	for (size_t i = 0; i < 3 && r == 0; i++)
		r = md_names_in(path, subs[i], cb, ud, err);
	return r;
}

void
maildir_close(struct maildir *md)
{
	if (!md)
		return;
	for (int i = 0; i < MD_SUB_MAX; i++)
		if (md->fd[i] >= 0)
			close(md->fd[i]);
	free(md->spare);
	free(md->path);
	free(md);
}
