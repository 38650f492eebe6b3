/*
 * The account's secret: from the configuration, the first line of a file,
 * or the first line a command prints. Every buffer that held a secret is
 * wiped before it is freed, and no message ever quotes one.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "mailpull/secret.h"
#include "mailpull/util.h"

/* One byte past the cap tells "exactly the cap" from "more". */
#define SECRET_BUF_SIZE (SECRET_MAX_OUTPUT + 1)

/*
 * Takes the first line of buf[0..len) (without its CR LF) as the secret.
 * A NUL, CR or other control byte in it would be cut or reach the wire
 * as a command separator, so it is refused rather than passed on.
 */
static int
take_first_line(const char *what, const char *buf, size_t len,
		char **ret, struct mp_err *err)
{
	const char *nl = memchr(buf, '\n', len);
	size_t n = nl ? (size_t)(nl - buf) : len;
	char *s;

	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n == 0)
		return mp_err_set(err, -ENODATA, MP_EX_CONFIG, "%s gave an empty "
				  "secret", what);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)buf[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return mp_err_set(err, -EBADMSG, MP_EX_CONFIG, "the "
					  "secret from %s contains a control character",
					  what);
	}
	s = util_strndup(buf, n);
	if (!s)
		return mp_err_oom(err);
	*ret = s;
	return 0;
}

static int
secret_from_file(const struct mp_account *a, char *buf, char **ret, struct mp_err *err)
{
	const char *path = a->password_file;
	size_t len = 0;
	struct stat st;
	int fd, r = 0;

	/* O_NONBLOCK: a FIFO must not hang the open; it is refused below */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r = errno == ENOENT ? -ENOENT : -EIO;
		return mp_err_set(err, r, MP_EX_CONFIG, "password_file %s: %s",
				  path, strerror(errno));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = mp_err_set(err, -EIO, MP_EX_CONFIG, "password_file %s: "
			       "not a regular file", path);
		goto out;
	}
	/* As for the configuration file (config.c): ours or root's, and ours alone. */
	if (!util_owner_trusted(st.st_uid)) {
		r = mp_err_set(err, -EACCES, MP_EX_CONFIG, "password_file %s is owned by "
			       "uid %lu, not by the user running mailpull (uid %lu) or root; "
			       "run: chown %lu %s", path, (unsigned long)st.st_uid,
			       (unsigned long)geteuid(), (unsigned long)geteuid(), path);
		goto out;
	}
	if (st.st_mode & 077) {
		r = mp_err_set(err, -EACCES, MP_EX_CONFIG, "password_file %s is "
			       "%s by others; run: chmod 600 %s", path,
			       (st.st_mode & 022) ? "writable" : "readable", path);
		goto out;
	}
	while (len < SECRET_BUF_SIZE) {
		ssize_t n = read(fd, buf + len, SECRET_BUF_SIZE - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = mp_err_set(err, -EIO, MP_EX_CONFIG,
				       "password_file %s: %s",
				       path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len))
			break;
	}
	if (len > SECRET_MAX_OUTPUT && !memchr(buf, '\n', SECRET_MAX_OUTPUT))
		r = mp_err_set(err, -E2BIG, MP_EX_CONFIG, "password_file %s: first "
			       "line longer than %d bytes", path, SECRET_MAX_OUTPUT);
	else
		r = take_first_line("password_file", buf, len, ret, err);
out:
	close(fd);
	return r;
}

/* A descriptor below 3 would be clobbered by the dup2() calls; move it up. */
static int
above_stdio(int fd)
{
	return fd > STDERR_FILENO ? fd : fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
}

/*
 * The terminal password_command may prompt on (pinentry-tty, read -s):
 * standard input, when it is a terminal and mailpull runs in its
 * foreground process group. -1 otherwise (cron, systemd, a background
 * job): the command then gets /dev/null and no terminal of ours.
 */
static int
prompt_terminal(void)
{
	pid_t fg;

	if (!isatty(STDIN_FILENO))
		return -1;
	fg = tcgetpgrp(STDIN_FILENO);
	return fg > 0 && fg == getpgrp() ? STDIN_FILENO : -1;
}

/*
 * Makes pgrp the terminal's foreground process group. The caller blocks
 * SIGTTOU: a process that is no longer in the foreground (when it takes
 * the terminal back) would otherwise be stopped by it.
 */
static void
terminal_give(int tty, pid_t pgrp)
{
	while (tcsetpgrp(tty, pgrp) < 0 && errno == EINTR)
		;
}

/* In the child: only async-signal-safe calls until exec. */
static _Noreturn void
child_exec(const char *cmd, int in, int out, int tty)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t none;

	/* its own process group, so a timeout kills whatever it started too */
	setpgid(0, 0);
	/*
	 * A group that is not the terminal's foreground one is stopped
	 * (SIGTTIN) when it reads from the terminal: the command gets the
	 * foreground before exec (SIGTTOU is still blocked, as in the
	 * parent), and the parent does the same, as a job control shell does.
	 */
	if (tty >= 0)
		terminal_give(tty, getpid());
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	sigaction(SIGPIPE, &sa, NULL);
	in = above_stdio(in);
	out = above_stdio(out);
	if (in < 0 || out < 0 || dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0)
		_exit(127);
	execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
	_exit(127);
}

/* Reads until end of file, the deadline or more than the cap. */
static int
read_output(int fd, int64_t deadline, char *buf, size_t *ret_len)
{
	size_t len = 0;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - util_now_ms();
		ssize_t n;
		int k;

		if (left <= 0)
			return -ETIMEDOUT;
		k = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -EIO;
		if (k == 0)
			continue;
		n = read(fd, buf + len, SECRET_BUF_SIZE - len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -EIO;
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > SECRET_MAX_OUTPUT)
			return -E2BIG;
	}
	*ret_len = len;
	return 0;
}

/*
 * Waits for the child until the deadline. It closed its output already,
 * so this is normally immediate; the short sleeps only cover a child that
 * lingers after closing stdout.
 */
static int
wait_exit(pid_t pid, int64_t deadline, int *ret_status)
{
	long delay_ms = 1;

	for (;;) {
		struct timespec ts;
		pid_t w = waitpid(pid, ret_status, WNOHANG);

		if (w == pid)
			return 0;
		if (w < 0 && errno != EINTR)
			return -ECHILD;
		if (util_now_ms() >= deadline)
			return -ETIMEDOUT;
		ts.tv_sec = 0;
		ts.tv_nsec = delay_ms * 1000000L;
		nanosleep(&ts, NULL);
		delay_ms = delay_ms < 50 ? delay_ms * 2 : 50;
	}
}

static void
kill_and_reap(pid_t pid)
{
	int status;

	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
}

static int
command_failed(int r, unsigned timeout_ms, struct mp_err *err)
{
	switch (r) {
	case -ETIMEDOUT:
		return mp_err_set(err, r, MP_EX_TEMPFAIL, "password_command did "
				  "not finish within %u ms and was killed", timeout_ms);
	case -E2BIG:
		return mp_err_set(err, r, MP_EX_CONFIG, "password_command printed "
				  "more than %d bytes", SECRET_MAX_OUTPUT);
	default:
		return mp_err_set(err, -EIO, MP_EX_TEMPFAIL, "password_command: "
				  "cannot read its output");
	}
}

static int
secret_from_command(const struct mp_account *a, unsigned timeout_ms, char *buf, char **ret,
		    struct mp_err *err)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	int pfd[2], in, status = 0, r, tty = prompt_terminal();
	sigset_t ttou, saved;
	size_t len = 0;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return mp_err_set(err, -EIO, MP_EX_TEMPFAIL, "password_command: "
				  "pipe: %s", strerror(errno));
	/* On a terminal, the command reads it as its stdin (read -s) as well. */
	in = tty >= 0 ? fcntl(tty, F_DUPFD_CLOEXEC, 0) : open("/dev/null", O_RDONLY | O_CLOEXEC);
	sigemptyset(&ttou);
	sigaddset(&ttou, SIGTTOU);
	sigprocmask(SIG_BLOCK, &ttou, &saved);
	pid = in < 0 ? -1 : fork();
	if (pid == 0)
		child_exec(a->password_command, in, pfd[1], tty);
	if (pid < 0) {
		r = mp_err_set(err, -EIO, MP_EX_TEMPFAIL, "password_command: "
			       "cannot start: %s", strerror(errno));
		sigprocmask(SIG_SETMASK, &saved, NULL);
		close(pfd[0]);
		close(pfd[1]);
		if (in >= 0)
			close(in);
		return r;
	}
	/* also here, so kill(-pid) works even before the child got to run */
	setpgid(pid, pid);
	if (tty >= 0)
		terminal_give(tty, pid);
	close(pfd[1]);
	close(in);
	r = read_output(pfd[0], deadline, buf, &len);
	close(pfd[0]);
	if (r == 0)
		r = wait_exit(pid, deadline, &status);
	if (r < 0)
		kill_and_reap(pid);
	/* The terminal comes back whatever happened, before anything is printed. */
	if (tty >= 0)
		terminal_give(tty, getpgrp());
	sigprocmask(SIG_SETMASK, &saved, NULL);
	if (r < 0)
		return command_failed(r, timeout_ms, err);
	if (WIFSIGNALED(status))
		return mp_err_set(err, -ECHILD, MP_EX_CONFIG, "password_command "
				  "was killed by signal %d", WTERMSIG(status));
	/* sh -c reports a command killed by signal N as status 128 + N. */
	if (WEXITSTATUS(status) > 128 && WEXITSTATUS(status) - 128 < NSIG)
		return mp_err_set(err, -ECHILD, MP_EX_CONFIG, "password_command exited with "
				  "status %d (the shell's way of saying: killed by signal %d)",
				  WEXITSTATUS(status), WEXITSTATUS(status) - 128);
	if (WEXITSTATUS(status) != 0)
		return mp_err_set(err, -ECHILD, MP_EX_CONFIG, "password_command "
				  "exited with status %d", WEXITSTATUS(status));
	return take_first_line("password_command", buf, len, ret, err);
}

int
secret_get(const struct mp_account *a, unsigned timeout_ms, char **ret, struct mp_err *err)
{
	char *buf, *s = NULL;
	int r;

	if (a->password)
		r = take_first_line("password", a->password, strlen(a->password), &s, err);
	else if (a->password_file || a->password_command) {
		buf = malloc(SECRET_BUF_SIZE);
		if (!buf)
			return mp_err_oom(err);
		if (a->password_file)
			r = secret_from_file(a, buf, &s, err);
		else
			r = secret_from_command(a, timeout_ms, buf, &s, err);
		explicit_bzero(buf, SECRET_BUF_SIZE);
		free(buf);
	} else {
		r = mp_err_set(err, -ENOENT, MP_EX_CONFIG, "no password, "
			       "password_file or password_command");
	}
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

void
secret_free(char *s)
{
	util_free_secret(s);
}
