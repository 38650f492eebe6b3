/* The daemon's pid file: lock it, name it after the configuration, find its holder. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailpull/pidfile.h"
#include "mailpull/util.h"

int
pidfile_path(const char *config_path, const char *state_dir, char **ret)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	char *abs = realpath(config_path, NULL);
	char *s = NULL;
	uint32_t h;
	int r;

	if (!abs)
		return -errno;
	h = util_fnv1a(abs, strlen(abs));
	free(abs);
	/* the XDG spec: a relative XDG_RUNTIME_DIR is invalid and ignored */
	if (rt && rt[0] == '/')
		r = asprintf(&s, "%s/mailpull/daemon-%08x.pid", rt, h);
	else
		r = asprintf(&s, "%s/daemon-%08x.pid", state_dir, h);
	if (r < 0)
		return -ENOMEM;
	*ret = s;
	return 0;
}

static pid_t
read_pid(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	uint64_t v;
	size_t len;

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	len = strcspn(buf, "\n");
	if (util_parse_u64(buf, len, &v) < 0 || v == 0 || v > INT_MAX)
		return 0;
	return (pid_t)v;
}

static int
make_dir(const char *path)
{
	char *dir = strdup(path);
	char *slash = dir ? strrchr(dir, '/') : NULL;
	int r = 0;

	if (!dir)
		return -ENOMEM;
	if (slash && slash != dir) {
		*slash = '\0';
		r = util_mkdir_p(dir, 0700);
	}
	free(dir);
	return r;
}

int
pidfile_acquire(const char *path, int *ret_fd, pid_t *ret_holder)
{
	char buf[32];
	int fd = -1, r, n;

	*ret_holder = 0;
	r = make_dir(path);
	if (r < 0)
		return r;
	/*
	 * A stopping daemon unlinks the file before it closes it; a lock
	 * taken on the unlinked inode in between guards nothing, so take it
	 * again on whatever the name now holds.
	 */
	for (int tries = 0; tries < 10; tries++) {
		struct stat a, b;

		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
		if (fd < 0)
			return -errno;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			r = errno == EWOULDBLOCK ? -EAGAIN : -errno;
			if (r == -EAGAIN)
				*ret_holder = read_pid(fd);
			close(fd);
			return r;
		}
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino &&
		    a.st_dev == b.st_dev)
			break;
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		return -EAGAIN;
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || (r = util_write_all(fd, buf, (size_t)n)) < 0) {
		r = r < 0 ? r : -errno;
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int
pidfile_holder(const char *path, pid_t *ret)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	pid_t pid;

	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	/* Our shared lock succeeding means nobody holds the exclusive one. */
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		close(fd);
		return -ESRCH;
	}
	pid = read_pid(fd);
	close(fd);
	if (pid == 0)
		return -EBADMSG;
	*ret = pid;
	return 0;
}

void
pidfile_release(const char *path, int fd)
{
	if (fd < 0)
		return;
	if (path)
		(void)unlink(path);
	close(fd);
}
