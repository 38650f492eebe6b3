/* The scripted fake server of the unit tests: see fakeserver.h. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "fakeserver.h"

/* ---- the fake server (child process) ------------------------------------ */

struct rd {
	int fd;
	char buf[65536];
	size_t len;
};

static void MP_PRINTF(2, 3)
die(int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fake server: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	_exit(code);
}

/* Reads one CRLF line into line (without CRLF). false at EOF. */
static bool
rd_line(struct rd *r, char *line, size_t cap)
{
	for (;;) {
		char *nl = memchr(r->buf, '\n', r->len);
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - r->buf);

			if (l == 0 || r->buf[l - 1] != '\r')
				die(3, "client line without CRLF");
			if (l - 1 >= cap)
				die(3, "client line too long");
			memcpy(line, r->buf, l - 1);
			line[l - 1] = '\0';
			memmove(r->buf, nl + 1, r->len - l - 1);
			r->len -= l + 1;
			return true;
		}
		if (r->len == sizeof(r->buf))
			die(3, "client line too long");
		n = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);
		if (n <= 0)
			return false;
		r->len += (size_t)n;
	}
}

static void
write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			die(4, "write: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/* Nothing buffered and nothing arriving for a while: the client waits for us. */
static void
expect_quiet(struct rd *r)
{
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

	if (r->len > 0 || poll(&pfd, 1, 150) > 0)
		die(5, "client sent a command before the previous reply");
}

/*
 * n bytes of "line NNNNNNN\r\n" lines cut at n (the big-body pattern), or
 * of fill[0] when fill is given.
 */
static void
gen_body(int fd, size_t n, const char *fill)
{
	char *b = malloc(n + 16);
	size_t len = 0;

	if (!b)
		die(4, "out of memory");
	if (fill)
		memset(b, fill[0], n);
	for (unsigned i = 0; len < n && !fill; i++)
		len += (size_t)snprintf(b + len, 16, "line %07u\r\n", i);
	write_all(fd, b, n);
	free(b);
}

static void
serve(int cfd, const struct fake_step *script)
{
	struct rd r = { .fd = cfd };
	char line[8192];

	for (const struct fake_step *s = script; s->dir; s++) {
		if (s->dir == 'S') {
			write_all(cfd, s->text, strlen(s->text));
		} else if (s->dir == 'P') {
			/* Lets the client read what came so far on its own. */
			usleep(60 * 1000);
		} else if (s->dir == 'W') {
			usleep((useconds_t)s->n * 1000);
		} else if (s->dir == 'X') {
			/* Half-close: the client sees the end, we still see what it sends. */
			shutdown(cfd, SHUT_WR);
		} else if (s->dir == 'G') {
			gen_body(cfd, s->n, s->text);
		} else if (s->dir == 'Q') {
			expect_quiet(&r);
		} else {
			if (!rd_line(&r, line, sizeof(line)))
				die(1, "expected \"%s\", got EOF", s->text ? s->text : "*");
			if (s->dir == 'c' && strncmp(line, s->text, strlen(s->text)) == 0)
				continue;
			if (s->text && strcmp(line, s->text) != 0)
				die(1, "expected \"%s\", got \"%s\"", s->text, line);
		}
	}
	/* The script is over: the client must send nothing more. */
	if (rd_line(&r, line, sizeof(line)))
		die(2, "unexpected \"%s\" after the script", line);
	if (r.len > 0)
		die(2, "unexpected bytes after the script");
	_exit(0);
}

void
fake_listen(struct fake *f)
{
	struct sockaddr_in sa = {
		.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	socklen_t sl = sizeof(sa);

	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 1), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
	f->port = ntohs(sa.sin_port);
}

void
fake_run(struct fake *f, const struct fake_step *script)
{
	fflush(NULL);
	f->pid = fork();
	assert_true(f->pid >= 0);
	if (f->pid == 0) {
		int cfd;

		alarm(20);
		cfd = accept(f->lfd, NULL, NULL);
		if (cfd < 0)
			die(6, "accept: %s", strerror(errno));
		close(f->lfd);
		serve(cfd, script);
	}
	close(f->lfd);
}

void
fake_start(struct fake *f, const struct fake_step *script)
{
	fake_listen(f);
	fake_run(f, script);
}

int
fake_wait(struct fake *f)
{
	int status = 0;

	assert_int_equal(waitpid(f->pid, &status, 0), f->pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct conn *
fake_connect(struct fake *f, unsigned timeout_ms, struct mp_err *err)
{
	struct conn_opts o = { .host = "127.0.0.1", .port = f->port, .timeout_ms = timeout_ms,
			       .max_line = 8192 };
	struct conn *c = NULL;

	mp_err_clear(err);
	assert_int_equal(conn_open(&o, false, &c, err), 0);
	return c;
}
