/* filecreate: the file-creation reference, for the bench.
 *
 *     filecreate [--fsync] DIR SIZES
 *
 * Creates DIR/tmp and DIR/new (DIR must not exist), then for each size in
 * the file SIZES (one decimal number a line) creates a file in tmp/,
 * writes that many bytes, closes it and renames it into new/, as a
 * Maildir delivery does; then ONE syncfs() of the file system makes all
 * of it durable. With --fsync every file is also fsync()ed before its
 * close (the old way, one flush per message). Prints
 * "files N bytes B create S flush S total S" (seconds, monotonic clock,
 * from before the first file to after the flush).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *arg)
{
	fprintf(stderr, "filecreate: %s %s: %s\n", what, arg, strerror(errno));
	exit(1);
}

static size_t *read_sizes(const char *path, size_t *ret_n)
{
	FILE *f = fopen(path, "r");
	size_t n = 0, cap = 1024;
	size_t *v = malloc(cap * sizeof(*v));
	char line[64];

	if (!f || !v)
		die("cannot read", path);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long x = strtoull(line, NULL, 10);

		if (n == cap) {
			size_t *w = realloc(v, 2 * cap * sizeof(*v));

			if (!w)
				die("out of memory for", path);
			v = w;
			cap *= 2;
		}
		v[n++] = (size_t)x;
	}
	fclose(f);
	*ret_n = n;
	return v;
}

static void write_all(int fd, const char *buf, size_t bufsize, size_t len, const char *name)
{
	while (len > 0) {
		size_t n = len < bufsize ? len : bufsize;
		ssize_t w = write(fd, buf, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			die("cannot write", name);
		}
		len -= (size_t)w;
	}
}

int main(int argc, char **argv)
{
	bool each = argc > 1 && strcmp(argv[1], "--fsync") == 0;
	char tmp[64], new[64];
	static char buf[1 << 16];
	size_t n, *sizes;
	unsigned long long bytes = 0;
	int dfd;
	double t0, t1, t2;

	if (argc != 3 + each) {
		fprintf(stderr, "usage: filecreate [--fsync] DIR SIZES\n");
		return 2;
	}
	sizes = read_sizes(argv[2 + each], &n);
	memset(buf, 'x', sizeof(buf));
	for (size_t i = 79; i < sizeof(buf); i += 80)
		buf[i] = '\n';
	if (mkdir(argv[1 + each], 0700) < 0)
		die("cannot create", argv[1 + each]);
	dfd = open(argv[1 + each], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || mkdirat(dfd, "tmp", 0700) < 0 || mkdirat(dfd, "new", 0700) < 0)
		die("cannot set up", argv[1 + each]);
	t0 = now_s();
	for (size_t i = 0; i < n; i++) {
		int fd;

		snprintf(tmp, sizeof(tmp), "tmp/%zu.bench", i);
		snprintf(new, sizeof(new), "new/%zu.bench", i);
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0)
			die("cannot create", tmp);
		write_all(fd, buf, sizeof(buf), sizes[i], tmp);
		if (each && fsync(fd) < 0)
			die("cannot fsync", tmp);
		if (close(fd) < 0)
			die("cannot close", tmp);
		if (renameat(dfd, tmp, dfd, new) < 0)
			die("cannot rename", tmp);
		bytes += sizes[i];
	}
	t1 = now_s();
	if (syncfs(dfd) < 0)
		die("cannot syncfs", argv[1 + each]);
	t2 = now_s();
	printf("files %zu bytes %llu create %.3f flush %.3f total %.3f\n", n, bytes, t1 - t0,
	       t2 - t1, t2 - t0);
	close(dfd);
	free(sizes);
	return 0;
}
