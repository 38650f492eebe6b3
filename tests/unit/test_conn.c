/*
 * conn_wait() on a loopback connection: buffered bytes, data arriving,
 * a timeout, a signal, and the peer closing.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "fakeserver.h"
#include "mailpull/conn.h"
#include "mailpull/util.h"

struct pair {
	struct conn *c;
	int peer;          /* the server's end */
};

/* A conn to a listener on 127.0.0.1, and the accepted socket. */
static void
pair_open(struct pair *p)
{
	struct mp_err err = { 0 };
	struct fake f;

	fake_listen(&f);
	p->c = fake_connect(&f, 1000, &err);
	p->peer = accept(f.lfd, NULL, NULL);
	assert_true(p->peer >= 0);
	close(f.lfd);
}

static void
pair_close(struct pair *p)
{
	conn_close(p->c);
	close(p->peer);
}

static void
send_str(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static void
test_wait_timeout(void **state)
{
	struct pair p;
	struct mp_err err = { 0 };
	int64_t t0 = util_now_ms(), dt;

	(void)state;
	pair_open(&p);
	assert_int_equal(conn_wait(p.c, 200, &err), -ETIMEDOUT);
	dt = util_now_ms() - t0;
	assert_true(dt >= 200 && dt < 1000);
	/* an expected end of a wait, not an error to report */
	assert_int_equal(err.code, 0);
	assert_int_equal(conn_wait(p.c, 0, &err), -ETIMEDOUT);
	pair_close(&p);
}

static void
test_wait_data_and_buffered(void **state)
{
	struct pair p;
	struct mp_err err = { 0 };
	const char *line;
	size_t len;
	int64_t t0;

	(void)state;
	pair_open(&p);
	send_str(p.peer, "a\r\nb\r\n");
	assert_int_equal(conn_wait(p.c, 1000, &err), 0);
	/* nothing is consumed by the wait */
	assert_int_equal(conn_read_line(p.c, &line, &len, &err), 0);
	assert_string_equal(line, "a");
	/* "b" is buffered, the socket is empty: ready at once */
	assert_true(conn_buffered(p.c) > 0);
	t0 = util_now_ms();
	assert_int_equal(conn_wait(p.c, 1000, &err), 0);
	assert_true(util_now_ms() - t0 < 100);
	assert_int_equal(conn_read_line(p.c, &line, &len, &err), 0);
	assert_string_equal(line, "b");
	pair_close(&p);
}

static void
waitpid_ok(pid_t pid)
{
	int status = 0;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void
test_wait_longer_than_timeout(void **state)
{
	/* The connection's timeout is 1 s; a wait is bounded by its own. */
	struct pair p;
	struct mp_err err = { 0 };
	pid_t pid;

	(void)state;
	pair_open(&p);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		usleep(1500 * 1000);
		send_str(p.peer, "* 1 EXISTS\r\n");
		_exit(0);
	}
	assert_int_equal(conn_wait(p.c, 5000, &err), 0);
	assert_int_equal(err.code, 0);
	pair_close(&p);
	waitpid_ok(pid);
}

static volatile sig_atomic_t ticks;

static void
on_alarm(int sig)
{
	(void)sig;
	ticks++;
}

static void
test_wait_eintr(void **state)
{
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART }, old;
	struct itimerval tv = { .it_value = { 0, 100000 } };
	struct pair p;
	struct mp_err err = { 0 };
	int64_t t0, dt;

	(void)state;
	pair_open(&p);
	ticks = 0;
	/* even with SA_RESTART: the caller must get to look at its flag */
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	t0 = util_now_ms();
	assert_int_equal(setitimer(ITIMER_REAL, &tv, NULL), 0);
	assert_int_equal(conn_wait(p.c, 5000, &err), -EINTR);
	dt = util_now_ms() - t0;
	sigaction(SIGALRM, &old, NULL);
	assert_int_equal(ticks, 1);
	assert_true(dt >= 90 && dt < 2000);
	assert_int_equal(err.code, 0);
	pair_close(&p);
}

static void
test_wait_eof(void **state)
{
	struct pair p;
	struct mp_err err = { 0 };
	const char *line;
	size_t len;

	(void)state;
	pair_open(&p);
	shutdown(p.peer, SHUT_WR);
	/* readable; the end itself is the next read's to report */
	assert_int_equal(conn_wait(p.c, 1000, &err), 0);
	assert_int_equal(err.code, 0);
	assert_int_equal(conn_read_line(p.c, &line, &len, &err), -ECONNRESET);
	pair_close(&p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wait_timeout),
		cmocka_unit_test(test_wait_data_and_buffered),
		cmocka_unit_test(test_wait_longer_than_timeout),
		cmocka_unit_test(test_wait_eintr),
		cmocka_unit_test(test_wait_eof),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
