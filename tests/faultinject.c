/*
 * faultinject.so: an LD_PRELOAD library that makes file system calls fail
 * for paths under one prefix, so the tests can see what mailpull does when
 * the disk is full, fsync reports EIO or a directory turns read-only.
 *
 * Controlled by the environment (nothing happens without FI_PREFIX):
 *
 *   FI_PREFIX=DIR            only files and directories under DIR are hit
 *   FI_LOG=FILE              one line ("<call> <errno name> <path>") is
 *                            appended per injected failure, so a test can
 *                            prove the fault fired
 *   FI_WRITE_LIMIT=N         write/pwrite/writev to regular files under DIR
 *                            succeed for N bytes in all, then fail with
 *                            ENOSPC (the last one short, as a full disk does)
 *   FI_SYNC_FAIL=N|all       the Nth fsync/fdatasync/syncfs on a descriptor
 *                            under DIR (counting from 1), or every one,
 *                            fails with EIO
 *   FI_SYNC_CALLS=a,b        only these of fsync, fdatasync, syncfs count
 *   FI_SYNC_TRACE=1          every fsync/fdatasync/syncfs on a descriptor
 *                            under DIR is logged, failing or not, as
 *                            "trace <call> <dir|file> <path>"
 *   FI_SYNCFS_ERRNO=E        every syncfs under DIR fails with E (ENOSYS,
 *                            EINVAL: a kernel or sandbox without it)
 *   FI_UNAME_RELEASE=R       uname() reports kernel release R (as "5.4.0"),
 *                            whatever FI_PREFIX says
 *   FI_CREATE_ERRNO=E        open/openat/creat with O_CREAT and mkdir/mkdirat
 *                            under DIR fail with E (EROFS, EIO, ENOSPC)
 *   FI_CREATE_SKIP=N         ... after letting the first N through
 *   FI_RENAME_ERRNO=E        rename/renameat/renameat2 whose target is under
 *                            DIR fail with E
 *   FI_RENAME_SKIP=N         ... after letting the first N through
 *
 * Descriptors are mapped to paths through /proc/self/fd. Calls are passed
 * to the next definition (libc, or libc through a sanitizer's interceptor)
 * found with dlsym(RTLD_NEXT).
 *
 * Built without sanitizers: under AddressSanitizer, LD_PRELOAD lists the
 * ASan runtime first and this library after it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#define NEXT(name) ((__typeof__(&name))next_sym(#name))

static void *
next_sym(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (!p)
		abort();
	return p;
}

static const char *
env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static long
env_long(const char *name, long dflt)
{
	const char *v = env(name);

	return v ? strtol(v, NULL, 10) : dflt;
}

static int
errno_of(const char *name)
{
	static const struct {
		const char *name;
		int code;
	} tab[] = {
		{ "EROFS", EROFS }, { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT },
		{ "EACCES", EACCES }, { "EPERM", EPERM }, { "ENOSYS", ENOSYS },
		{ "EINVAL", EINVAL },
	};
	const char *v = env(name);

	if (!v)
		return 0;
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcmp(v, tab[i].name) == 0)
			return tab[i].code;
	return EIO;
}

static const char *
errno_name(int e)
{
	switch (e) {
	case EROFS: return "EROFS";
	case EIO: return "EIO";
	case ENOSPC: return "ENOSPC";
	case EDQUOT: return "EDQUOT";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case ENOSYS: return "ENOSYS";
	case EINVAL: return "EINVAL";
	default: return "E?";
	}
}

/* Whether path lies under FI_PREFIX (the prefix itself included). */
static bool
under_prefix(const char *path)
{
	const char *pre = env("FI_PREFIX");
	size_t n;

	if (!pre || !path)
		return false;
	n = strlen(pre);
	while (n > 1 && pre[n - 1] == '/')
		n--;
	return strncmp(path, pre, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static bool
fd_path(int fd, char *buf, size_t len)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = NEXT(readlink)(link, buf, len - 1);
	if (n < 0)
		return false;
	buf[n] = '\0';
	return true;
}

/* The absolute path of name relative to dirfd (AT_FDCWD or a directory). */
static bool
at_path(int dirfd, const char *name, char *buf, size_t len)
{
	char dir[PATH_MAX];

	if (!name)
		return false;
	if (name[0] == '/')
		return (size_t)snprintf(buf, len, "%s", name) < len;
	if (dirfd == AT_FDCWD) {
		if (!getcwd(dir, sizeof(dir)))
			return false;
	} else if (!fd_path(dirfd, dir, sizeof(dir))) {
		return false;
	}
	return (size_t)snprintf(buf, len, "%s/%s", dir, name) < len;
}

static void
log_fault(const char *call, int e, const char *path)
{
	const char *log = env("FI_LOG");
	char line[PATH_MAX + 64];
	int fd, n;

	if (!log)
		return;
	n = snprintf(line, sizeof(line), "%s %s %s\n", call, errno_name(e), path);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	fd = NEXT(open)(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (NEXT(write)(fd, line, (size_t)n) < 0) {
		/* nothing to do: the test will miss the line and fail */
	}
	NEXT(close)(fd);
}

/* Counts calls of one kind; true when this one is to fail. */
static bool
nth_fails(long *counter, long skip)
{
	long k = __atomic_add_fetch(counter, 1, __ATOMIC_SEQ_CST);

	return k > skip;
}

/* ---- writes ---- */

static long write_total;

/*
 * How many of len bytes to the regular file fd may be written: len, fewer
 * (the disk fills up mid-write), or -1 with errno = ENOSPC.
 */
static ssize_t
write_allow(const char *call, int fd, size_t len)
{
	char path[PATH_MAX];
	struct stat st;
	long limit = env_long("FI_WRITE_LIMIT", -1), before, room;

	if (limit < 0 || len == 0)
		return (ssize_t)len;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || !fd_path(fd, path, sizeof(path)) ||
	    !under_prefix(path))
		return (ssize_t)len;
	before = __atomic_fetch_add(&write_total, (long)len, __ATOMIC_SEQ_CST);
	room = limit - before;
	if (room >= (long)len)
		return (ssize_t)len;
	if (room > 0)
		return (ssize_t)room;
	log_fault(call, ENOSPC, path);
	errno = ENOSPC;
	return -1;
}

ssize_t
write(int fd, const void *buf, size_t len)
{
	ssize_t n = write_allow("write", fd, len);

	return n < 0 ? -1 : NEXT(write)(fd, buf, (size_t)n);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t n = write_allow("pwrite", fd, len);

	return n < 0 ? -1 : NEXT(pwrite)(fd, buf, (size_t)n, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t n = write_allow("pwrite64", fd, len);

	return n < 0 ? -1 : NEXT(pwrite64)(fd, buf, (size_t)n, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
	size_t len = 0;
	ssize_t n;

	for (int i = 0; i < cnt; i++)
		len += iov[i].iov_len;
	n = write_allow("writev", fd, len);
	if (n < 0)
		return -1;
	if ((size_t)n == len)
		return NEXT(writev)(fd, iov, cnt);
	/* Short: write the first n bytes only. */
	{
		struct iovec v[64];
		int k = 0;
		size_t left = (size_t)n;

		for (int i = 0; i < cnt && left > 0 && k < 64; i++, k++) {
			v[k] = iov[i];
			if (v[k].iov_len > left)
				v[k].iov_len = left;
			left -= v[k].iov_len;
		}
		return NEXT(writev)(fd, v, k);
	}
}

/* ---- syncs ---- */

static long sync_count;

static void
sync_trace(const char *call, int fd)
{
	const char *log = env("FI_LOG");
	char path[PATH_MAX], line[PATH_MAX + 64];
	struct stat st;
	int lfd, n;

	if (!env("FI_SYNC_TRACE") || !log || !fd_path(fd, path, sizeof(path)) ||
	    !under_prefix(path) || fstat(fd, &st) < 0)
		return;
	n = snprintf(line, sizeof(line), "trace %s %s %s\n", call,
		     S_ISDIR(st.st_mode) ? "dir" : "file", path);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	lfd = NEXT(open)(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (lfd < 0)
		return;
	if (NEXT(write)(lfd, line, (size_t)n) < 0) {
		/* nothing to do: the test will miss the line and fail */
	}
	NEXT(close)(lfd);
}

static bool
sync_fails(const char *call, int fd)
{
	const char *spec = env("FI_SYNC_FAIL"), *calls = env("FI_SYNC_CALLS");
	char path[PATH_MAX];
	long k;

	sync_trace(call, fd);
	if (!spec)
		return false;
	if (calls) {
		size_t n = strlen(call);
		const char *p = strstr(calls, call);

		if (!p || (p != calls && p[-1] != ',') || (p[n] != '\0' && p[n] != ','))
			return false;
	}
	if (!fd_path(fd, path, sizeof(path)) || !under_prefix(path))
		return false;
	k = __atomic_add_fetch(&sync_count, 1, __ATOMIC_SEQ_CST);
	if (strcmp(spec, "all") != 0 && k != strtol(spec, NULL, 10))
		return false;
	log_fault(call, EIO, path);
	errno = EIO;
	return true;
}

int
fsync(int fd)
{
	return sync_fails("fsync", fd) ? -1 : NEXT(fsync)(fd);
}

int
fdatasync(int fd)
{
	return sync_fails("fdatasync", fd) ? -1 : NEXT(fdatasync)(fd);
}

int
syncfs(int fd)
{
	char path[PATH_MAX];
	int e = errno_of("FI_SYNCFS_ERRNO");

	if (sync_fails("syncfs", fd))
		return -1;
	if (e && fd_path(fd, path, sizeof(path)) && under_prefix(path)) {
		log_fault("syncfs", e, path);
		errno = e;
		return -1;
	}
	return NEXT(syncfs)(fd);
}

/* ---- the kernel's version ---- */

int
uname(struct utsname *u)
{
	const char *rel = env("FI_UNAME_RELEASE");
	int r = NEXT(uname)(u);

	if (r == 0 && rel)
		snprintf(u->release, sizeof(u->release), "%s", rel);
	return r;
}

/* ---- creating files and directories ---- */

static long create_count;

static int
create_fails(const char *call, int dirfd, const char *name)
{
	char path[PATH_MAX];
	int e = errno_of("FI_CREATE_ERRNO");

	struct stat st;

	if (!e || !at_path(dirfd, name, path, sizeof(path)) || !under_prefix(path))
		return 0;
	/* As the kernel does: an existing directory is EEXIST even read-only. */
	if (strncmp(call, "mkdir", 5) == 0 && lstat(path, &st) == 0)
		return 0;
	if (!nth_fails(&create_count, env_long("FI_CREATE_SKIP", 0)))
		return 0;
	log_fault(call, e, path);
	return e;
}

static mode_t
mode_arg(int flags, va_list ap)
{
	return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

#define OPEN_BODY(call, dirfd, path, flags, ...)                                      \
	do {                                                                          \
		int e_ = (flags & O_CREAT) ? create_fails(call, dirfd, path) : 0;     \
		if (e_) {                                                             \
			errno = e_;                                                   \
			return -1;                                                    \
		}                                                                     \
		return __VA_ARGS__;                                                   \
	} while (0)

int
open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY("open", AT_FDCWD, path, flags, NEXT(open)(path, flags, mode));
}

int
open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY("open", AT_FDCWD, path, flags, NEXT(open64)(path, flags, mode));
}

int
openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY("openat", dirfd, path, flags, NEXT(openat)(dirfd, path, flags, mode));
}

int
openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY("openat", dirfd, path, flags, NEXT(openat64)(dirfd, path, flags, mode));
}

int
creat(const char *path, mode_t mode)
{
	OPEN_BODY("creat", AT_FDCWD, path, O_CREAT, NEXT(creat)(path, mode));
}

int
mkdir(const char *path, mode_t mode)
{
	int e = create_fails("mkdir", AT_FDCWD, path);

	if (e) {
		errno = e;
		return -1;
	}
	return NEXT(mkdir)(path, mode);
}

int
mkdirat(int dirfd, const char *path, mode_t mode)
{
	int e = create_fails("mkdirat", dirfd, path);

	if (e) {
		errno = e;
		return -1;
	}
	return NEXT(mkdirat)(dirfd, path, mode);
}

/* ---- renames ---- */

static long rename_count;

static int
rename_fails(const char *call, int dirfd, const char *to)
{
	char path[PATH_MAX];
	int e = errno_of("FI_RENAME_ERRNO");

	if (!e || !at_path(dirfd, to, path, sizeof(path)) || !under_prefix(path))
		return 0;
	if (!nth_fails(&rename_count, env_long("FI_RENAME_SKIP", 0)))
		return 0;
	log_fault(call, e, path);
	return e;
}

int
rename(const char *from, const char *to)
{
	int e = rename_fails("rename", AT_FDCWD, to);

	if (e) {
		errno = e;
		return -1;
	}
	return NEXT(rename)(from, to);
}

int
renameat(int fromfd, const char *from, int tofd, const char *to)
{
	int e = rename_fails("renameat", tofd, to);

	if (e) {
		errno = e;
		return -1;
	}
	return NEXT(renameat)(fromfd, from, tofd, to);
}

int
renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned flags)
{
	int e = rename_fails("renameat2", tofd, to);

	if (e) {
		errno = e;
		return -1;
	}
	return NEXT(renameat2)(fromfd, from, tofd, to, flags);
}
