/* Unit tests for password, password_file and password_command. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailpull/secret.h"
#include "mailpull/util.h"

struct fx {
	char dir[64];
	char file[128];
	struct mp_account a;
	struct mp_err err;
	char *secret;
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/mp-secret-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->file, sizeof(fx->file), "%s/pw", fx->dir);
	fx->a.name = "acct";
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;
	char path[160];

	secret_free(fx->secret);
	unlink(fx->file);
	snprintf(path, sizeof(path), "%s/pid", fx->dir);
	unlink(path);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static int
run_cmd(struct fx *fx, const char *cmd, unsigned timeout_ms)
{
	secret_free(fx->secret);
	fx->secret = NULL;
	mp_err_clear(&fx->err);
	fx->a.password = NULL;
	fx->a.password_file = NULL;
	fx->a.password_command = (char *)cmd;
	return secret_get(&fx->a, timeout_ms, &fx->secret, &fx->err);
}

static int
run_file(struct fx *fx, const char *text, size_t len, mode_t mode)
{
	int fd = open(fx->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
	secret_free(fx->secret);
	fx->secret = NULL;
	mp_err_clear(&fx->err);
	fx->a.password_command = NULL;
	fx->a.password_file = fx->file;
	return secret_get(&fx->a, 1000, &fx->secret, &fx->err);
}

/* Every child was reaped: no zombie left behind. */
static void
assert_no_children(void)
{
	errno = 0;
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
}

static void
test_password(void **state)
{
	struct fx *fx = *state;

	fx->a.password = "hunter2";
	assert_int_equal(secret_get(&fx->a, 100, &fx->secret, &fx->err), 0);
	assert_string_equal(fx->secret, "hunter2");
	assert_ptr_not_equal(fx->secret, fx->a.password);
	fx->a.password = NULL;
	secret_free(fx->secret);
	fx->secret = NULL;
	assert_int_equal(secret_get(&fx->a, 100, &fx->secret, &fx->err), -ENOENT);
	assert_null(fx->secret);
	assert_int_equal(fx->err.ex, MP_EX_CONFIG);
	secret_free(NULL);
}

static void
test_command_ok(void **state)
{
	struct fx *fx = *state;

	assert_int_equal(run_cmd(fx, "printf 'hunter2\\r\\nsecond line\\n'", 2000), 0);
	assert_string_equal(fx->secret, "hunter2");
	assert_int_equal(run_cmd(fx, "printf 'no newline'", 2000), 0);
	assert_string_equal(fx->secret, "no newline");
	assert_int_equal(run_cmd(fx, "echo 'tab\tinside'", 2000), 0);
	assert_string_equal(fx->secret, "tab\tinside");
	/* stdin is /dev/null: cat ends at once instead of waiting for input */
	assert_int_equal(run_cmd(fx, "cat; echo done", 2000), 0);
	assert_string_equal(fx->secret, "done");
	/* exactly the cap is still fine */
	assert_int_equal(run_cmd(fx, "echo pw; head -c 65533 /dev/zero | tr '\\0' x", 5000), 0);
	assert_string_equal(fx->secret, "pw");
	assert_no_children();
}

static void
test_command_fails(void **state)
{
	struct fx *fx = *state;

	assert_int_equal(run_cmd(fx, "echo s3cr3t; exit 3", 2000), -ECHILD);
	assert_null(fx->secret);
	assert_non_null(strstr(fx->err.msg, "exited with status 3"));
	/* The caller names the account; the message does not repeat it. */
	assert_null(strstr(fx->err.msg, "acct"));
	assert_null(strstr(fx->err.msg, "s3cr3t"));
	assert_int_equal(fx->err.ex, MP_EX_CONFIG);
	assert_int_equal(run_cmd(fx, "echo s3cr3t; kill -TERM $$", 2000), -ECHILD);
	assert_non_null(strstr(fx->err.msg, "signal 15"));
	/* A child of the shell killed: sh says 128 + 9, the message says what that means. */
	assert_int_equal(run_cmd(fx, "sh -c 'kill -KILL $$'; exit $?", 2000), -ECHILD);
	assert_non_null(strstr(fx->err.msg, "status 137"));
	assert_non_null(strstr(fx->err.msg, "killed by signal 9"));
	assert_int_equal(run_cmd(fx, "/nonexistent/command 2>/dev/null", 2000), -ECHILD);
	assert_non_null(strstr(fx->err.msg, "status 127"));
	assert_no_children();
}

static void
test_command_timeout(void **state)
{
	struct fx *fx = *state;
	int64_t t0 = util_now_ms();

	assert_int_equal(run_cmd(fx, "sleep 5", 300), -ETIMEDOUT);
	assert_true(util_now_ms() - t0 < 2000);
	assert_true(util_now_ms() - t0 >= 290);
	assert_null(fx->secret);
	assert_int_equal(fx->err.ex, MP_EX_TEMPFAIL);
	assert_non_null(strstr(fx->err.msg, "300 ms"));

	/* output arrived, but the command never finishes */
	t0 = util_now_ms();
	assert_int_equal(run_cmd(fx, "echo s3cr3t; sleep 5", 300), -ETIMEDOUT);
	assert_true(util_now_ms() - t0 < 2000);
	assert_null(strstr(fx->err.msg, "s3cr3t"));

	/* closes its output, then lingers */
	t0 = util_now_ms();
	assert_int_equal(run_cmd(fx, "echo pw; exec >&-; sleep 5", 300), -ETIMEDOUT);
	assert_true(util_now_ms() - t0 < 2000);
	assert_no_children();
}

static bool
process_gone(pid_t pid)
{
	char path[64], stat[256];
	FILE *f;
	char *p;
	bool gone = true;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return true;
	/* a zombie waiting for init to reap it is gone as well */
	if (fgets(stat, sizeof(stat), f) && (p = strrchr(stat, ')')) && p[1] == ' ')
		gone = p[2] == 'Z' || p[2] == 'X';
	fclose(f);
	return gone;
}

/* The whole process group dies, not only the shell. */
static void
test_command_timeout_kills_group(void **state)
{
	struct fx *fx = *state;
	char cmd[256], path[160], buf[32] = "";
	FILE *f;
	pid_t pid;
	bool gone = false;

	snprintf(path, sizeof(path), "%s/pid", fx->dir);
	snprintf(cmd, sizeof(cmd), "sleep 30 & echo $! > %s; wait", path);
	assert_int_equal(run_cmd(fx, cmd, 300), -ETIMEDOUT);
	f = fopen(path, "re");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	pid = (pid_t)strtol(buf, NULL, 10);
	assert_true(pid > 1);
	for (int i = 0; i < 100 && !gone; i++) {
		gone = process_gone(pid);
		if (!gone)
			nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
	}
	if (!gone)
		kill(pid, SIGKILL);
	assert_true(gone);
}

static void
test_command_output_limits(void **state)
{
	struct fx *fx = *state;
	int64_t t0 = util_now_ms();

	/* endless output: stopped at the cap, long before the timeout */
	assert_int_equal(run_cmd(fx, "yes s3cr3t", 10000), -E2BIG);
	assert_true(util_now_ms() - t0 < 5000);
	assert_null(fx->secret);
	assert_null(strstr(fx->err.msg, "s3cr3t"));
	assert_int_equal(run_cmd(fx, "echo pw; head -c 65535 /dev/zero | tr '\\0' x", 5000),
			 -E2BIG);
	assert_int_equal(run_cmd(fx, "true", 2000), -ENODATA);
	assert_int_equal(run_cmd(fx, "echo", 2000), -ENODATA);
	assert_int_equal(run_cmd(fx, "printf '\\r\\n'", 2000), -ENODATA);
	assert_non_null(strstr(fx->err.msg, "empty"));
	assert_int_equal(run_cmd(fx, "printf 'a\\rb\\n'", 2000), -EBADMSG);
	assert_int_equal(run_cmd(fx, "printf 'a\\000b\\n'", 2000), -EBADMSG);
	assert_int_equal(run_cmd(fx, "printf 'a\\033[2Jb\\n'", 2000), -EBADMSG);
	assert_no_children();
}

static void
test_file(void **state)
{
	struct fx *fx = *state;
	static const char big[] = "x";
	char *text;

	assert_int_equal(run_file(fx, "hunter2\r\nmore\n", 15, 0600), 0);
	assert_string_equal(fx->secret, "hunter2");
	assert_int_equal(run_file(fx, "only", 4, 0400), 0);
	assert_string_equal(fx->secret, "only");
	assert_int_equal(run_file(fx, "hunter2\n", 8, 0640), -EACCES);
	assert_null(fx->secret);
	assert_non_null(strstr(fx->err.msg, "chmod 600"));
	assert_null(strstr(fx->err.msg, "hunter2"));
	assert_int_equal(run_file(fx, "hunter2\n", 8, 0604), -EACCES);
	assert_int_equal(run_file(fx, "", 0, 0600), -ENODATA);
	assert_int_equal(run_file(fx, "\nsecond\n", 8, 0600), -ENODATA);

	text = malloc(SECRET_MAX_OUTPUT + 10);
	assert_non_null(text);
	memset(text, big[0], SECRET_MAX_OUTPUT + 10);
	assert_int_equal(run_file(fx, text, SECRET_MAX_OUTPUT + 10, 0600), -E2BIG);
	text[10] = '\n';
	assert_int_equal(run_file(fx, text, SECRET_MAX_OUTPUT + 10, 0600), 0);
	assert_string_equal(fx->secret, "xxxxxxxxxx");
	free(text);

	unlink(fx->file);
	fx->a.password_file = fx->file;
	assert_int_equal(secret_get(&fx->a, 100, &fx->secret, &fx->err), -ENOENT);
	fx->a.password_file = fx->dir;
	mp_err_clear(&fx->err);
	assert_int_equal(secret_get(&fx->a, 100, &fx->secret, &fx->err), -EIO);
	assert_non_null(strstr(fx->err.msg, "not a regular file"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_password, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_timeout_kills_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_output_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
