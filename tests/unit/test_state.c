/* State store: journal, snapshot, torn and corrupt files, lock, scale. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "mailpull/state.h"

struct fixture {
	char dir[64];
	char sdir[128];           /* the state directory, not yet created */
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	memcpy(fx->dir, "/tmp/mp-state-XXXXXX", sizeof("/tmp/mp-state-XXXXXX"));
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->sdir, sizeof(fx->sdir), "%s/x/state", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static void MP_PRINTF(3, 4)
pathf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < len);
}

static char *
slurp(const char *path, size_t *ret_len)
{
	struct stat st;
	char *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	buf[st.st_size] = '\0';
	close(fd);
	if (ret_len)
		*ret_len = (size_t)st.st_size;
	return buf;
}

static off_t
size_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static void
put_file(const char *path, const char *text, bool append)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0600);
	size_t len = strlen(text);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
}

static struct state *
open_ok(const struct fixture *fx, const char *account)
{
	struct state *s = NULL;
	struct mp_err err = { 0 };
	int r = state_open(fx->sdir, account, false, &s, &err);

	if (r != 0)
		fail_msg("state_open: %d %s", r, err.msg);
	assert_non_null(s);
	return s;
}

static void
test_round_trip(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "work");
	char p[256];
	int64_t when = 0;

	assert_int_equal(state_count(s), 0);
	assert_int_equal(state_add(s, "uid-1", 1000, "1.M1P1Q1Xt.h", &err), 0);
	assert_int_equal(state_add(s, "uid-2", 2000, NULL, &err), 0);
	assert_int_equal(state_add(s, "uid-3", 3000, "1.M1P1Q3Xt.h", &err), 0);
	assert_int_equal(state_remove(s, "uid-2", &err), 0);
	assert_int_equal(state_remove(s, "never-there", &err), 0);
	assert_true(state_has(s, "uid-1", &when));
	assert_int_equal(when, 1000);
	assert_false(state_has(s, "uid-2", NULL));
	assert_int_equal(state_sync(s, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);

	s = open_ok(fx, "work");
	assert_int_equal(state_count(s), 2);
	assert_true(state_has(s, "uid-1", &when));
	assert_int_equal(when, 1000);
	assert_true(state_has(s, "uid-3", &when));
	assert_int_equal(when, 3000);
	assert_true(state_has(s, "uid-3", NULL));
	assert_false(state_has(s, "uid-2", NULL));
	assert_true(state_name_recorded(s, "1.M1P1Q1Xt.h"));
	assert_true(state_name_recorded(s, "1.M1P1Q3Xt.h"));
	assert_false(state_name_recorded(s, "1.M1P1Q2Xt.h"));

	/* Unsynced changes are dropped by close. */
	assert_int_equal(state_add(s, "uid-4", 4000, "n4", &err), 0);
	assert_int_equal(state_remove(s, "uid-1", &err), 0);
	state_close(s);
	s = open_ok(fx, "work");
	assert_false(state_has(s, "uid-4", NULL));
	assert_true(state_has(s, "uid-1", NULL));
	assert_false(state_name_recorded(s, "n4"));
	state_close(s);
	state_close(NULL);

	/* Directory made 0700, files 0600. */
	{
		struct stat st;

		assert_int_equal(stat(fx->sdir, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0700);
		pathf(p, sizeof(p), "%s/work.journal", fx->sdir);
		assert_int_equal(stat(p, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
		pathf(p, sizeof(p), "%s/work.lock", fx->sdir);
		assert_int_equal(stat(p, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
	}
}

static void
test_readd_keeps_first_time(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "a");
	int64_t when = 0;

	assert_int_equal(state_add(s, "k", 10, NULL, &err), 0);
	assert_int_equal(state_add(s, "k", 20, "name-2", &err), 0);
	assert_int_equal(state_add(s, "k", 30, NULL, &err), 0);
	assert_true(state_has(s, "k", &when));
	assert_int_equal(when, 10);
	assert_true(state_name_recorded(s, "name-2"));
	assert_int_equal(state_count(s), 1);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "a");
	assert_true(state_has(s, "k", &when));
	assert_int_equal(when, 10);
	assert_true(state_name_recorded(s, "name-2"));
	/* Removed and added again: the new time counts. */
	assert_int_equal(state_remove(s, "k", &err), 0);
	assert_int_equal(state_add(s, "k", 40, NULL, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "a");
	assert_true(state_has(s, "k", &when));
	assert_int_equal(when, 40);
	state_close(s);
}

static void
test_bad_arguments(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = NULL;

	assert_int_equal(state_open(fx->sdir, "", false, &s, &err), -EINVAL);
	assert_null(s);
	s = open_ok(fx, "a");
	mp_err_clear(&err);
	assert_int_equal(state_add(s, "", 1, NULL, &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(state_add(s, "k", 1, "-", &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(state_add(s, "k", 1, "", &err), -EINVAL);
	assert_int_equal(state_count(s), 0);
	state_close(s);
}

static void
test_torn_journal(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "t");
	char j[256];
	off_t good;
	char *text;

	assert_int_equal(state_add(s, "a", 1, "na", &err), 0);
	assert_int_equal(state_add(s, "b", 2, NULL, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	pathf(j, sizeof(j), "%s/t.journal", fx->sdir);
	good = size_of(j);
	/* A crash cut the last write short. */
	put_file(j, "+ 3 c nc\n- a\n+ 4 d n", true);
	s = open_ok(fx, "t");
	assert_true(state_has(s, "c", NULL));
	assert_false(state_has(s, "a", NULL));
	assert_false(state_has(s, "d", NULL));
	assert_false(state_name_recorded(s, "n"));
	assert_int_equal(state_count(s), 2);
	/* The torn tail is gone before anything is appended. */
	assert_int_equal(size_of(j), good + (off_t)strlen("+ 3 c nc\n- a\n"));
	assert_int_equal(state_add(s, "e", 5, NULL, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	text = slurp(j, NULL);
	assert_string_equal(text, "+ 1 a na\n+ 2 b -\n+ 3 c nc\n- a\n+ 5 e -\n");
	free(text);
	s = open_ok(fx, "t");
	assert_int_equal(state_count(s), 3);
	assert_true(state_has(s, "e", NULL));
	state_close(s);

	/* A torn tail of zeros (data blocks lost, size kept). */
	{
		int fd = open(j, O_WRONLY | O_APPEND | O_CLOEXEC);
		char zeros[100] = { 0 };

		assert_true(fd >= 0);
		assert_int_equal(write(fd, zeros, sizeof(zeros)), (ssize_t)sizeof(zeros));
		close(fd);
	}
	s = open_ok(fx, "t");
	assert_int_equal(state_count(s), 3);
	state_close(s);
}

static void
expect_bad(const struct fixture *fx, const char *file, const char *where)
{
	struct mp_err err = { 0 };
	struct state *s = NULL;
	char want[256];

	assert_int_equal(state_open(fx->sdir, "c", false, &s, &err), -EBADMSG);
	assert_null(s);
	assert_int_equal(err.code, -EBADMSG);
	pathf(want, sizeof(want), "%s/%s:%s", fx->sdir, file, where);
	if (!strstr(err.msg, want))
		fail_msg("'%s' does not name '%s'", err.msg, want);
}

static void
test_corrupt_lines(void **state)
{
	static const char *const bad_journal[] = {
		"garbage\n", "+ 1 k\n", "+ x k -\n", "+ 1 k - extra\n", "+ 1  k -\n", "- \n",
		"-  k\n", "- k extra\n", "+ 1 k%4 -\n", "+ 1 k%00 -\n", "+ 1 k%zz -\n", "* 1 k -\n",
		"+ 99999999999999999999 k -\n", "\n", "+ 1 k -\r\n", "+ 1 k\tx -\n",
	};
	struct fixture *fx = *state;
	char j[256], sn[256];
	struct state *s = open_ok(fx, "c");

	state_close(s);
	pathf(j, sizeof(j), "%s/c.journal", fx->sdir);
	pathf(sn, sizeof(sn), "%s/c.state", fx->sdir);
	for (size_t i = 0; i < sizeof(bad_journal) / sizeof(bad_journal[0]); i++) {
		char text[256];

		pathf(text, sizeof(text), "+ 1 ok -\n- ok\n%s+ 2 after -\n", bad_journal[i]);
		put_file(j, text, false);
		expect_bad(fx, "c.journal", "3");
	}
	/* A NUL byte inside a complete line. */
	{
		int fd = open(j, O_WRONLY | O_TRUNC | O_CLOEXEC);

		assert_true(fd >= 0);
		assert_int_equal(write(fd, "+ 1 a\0b -\n", 10), 10);
		close(fd);
		expect_bad(fx, "c.journal", "1");
	}
	put_file(j, "", false);
	put_file(sn, "mailpull-state 2\n", false);
	expect_bad(fx, "c.state", "1");
	put_file(sn, "", false);
	expect_bad(fx, "c.state", "1");
	put_file(sn, "mailpull-state 1\n5 a\n6 b c\n", false);
	expect_bad(fx, "c.state", "3");
	/* The snapshot is renamed into place whole: a missing '\n' is damage. */
	put_file(sn, "mailpull-state 1\n5 a\n6 b", false);
	expect_bad(fx, "c.state", "3");
	put_file(sn, "mailpull-state 1\n5 a\n-6 b\n", false);
	s = open_ok(fx, "c");
	assert_int_equal(state_count(s), 2);
	state_close(s);
}

static void
test_compact(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "cp");
	char j[256], sn[256], nw[256];
	int64_t when;
	char *text;

	pathf(j, sizeof(j), "%s/cp.journal", fx->sdir);
	pathf(sn, sizeof(sn), "%s/cp.state", fx->sdir);
	pathf(nw, sizeof(nw), "%s/cp.state.new", fx->sdir);
	assert_int_equal(state_add(s, "a", 1, "na", &err), 0);
	assert_int_equal(state_add(s, "b", 2, "nb", &err), 0);
	assert_int_equal(state_add(s, "c", 3, NULL, &err), 0);
	assert_int_equal(state_remove(s, "b", &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	/* Buffered changes are part of the snapshot too. */
	assert_int_equal(state_add(s, "d", 4, NULL, &err), 0);
	assert_int_equal(state_compact(s, &err), 0);
	assert_int_equal(size_of(j), 0);
	assert_int_equal(access(nw, F_OK), -1);
	assert_false(state_name_recorded(s, "na"));
	text = slurp(sn, NULL);
	assert_true(strncmp(text, "mailpull-state 1\n", 17) == 0);
	assert_non_null(strstr(text, "\n1 a\n"));
	assert_non_null(strstr(text, "\n3 c\n"));
	assert_non_null(strstr(text, "\n4 d\n"));
	assert_null(strstr(text, " b\n"));
	free(text);
	/* Nothing left to write: the next sync adds nothing. */
	assert_int_equal(state_sync(s, &err), 0);
	assert_int_equal(size_of(j), 0);
	assert_int_equal(state_add(s, "e", 5, "ne", &err), 0);
	assert_int_equal(state_remove(s, "a", &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);

	s = open_ok(fx, "cp");
	assert_int_equal(state_count(s), 3);
	assert_false(state_has(s, "a", NULL));
	assert_true(state_has(s, "c", &when));
	assert_int_equal(when, 3);
	assert_true(state_has(s, "d", &when));
	assert_int_equal(when, 4);
	assert_true(state_has(s, "e", &when));
	assert_int_equal(when, 5);
	assert_true(state_name_recorded(s, "ne"));
	assert_false(state_name_recorded(s, "na"));
	state_close(s);
}

/* A crash after the rename, before the journal was emptied, changes nothing. */
static void
test_compact_crash_replay(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "r");
	char j[256];
	char *saved;
	int64_t when;

	pathf(j, sizeof(j), "%s/r.journal", fx->sdir);
	assert_int_equal(state_add(s, "k1", 1, NULL, &err), 0);
	assert_int_equal(state_remove(s, "k1", &err), 0);
	assert_int_equal(state_add(s, "k1", 7, NULL, &err), 0);
	assert_int_equal(state_add(s, "k2", 2, NULL, &err), 0);
	assert_int_equal(state_remove(s, "k2", &err), 0);
	assert_int_equal(state_add(s, "k3", 3, NULL, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	saved = slurp(j, NULL);
	assert_int_equal(state_compact(s, &err), 0);
	state_close(s);
	put_file(j, saved, false);
	free(saved);
	s = open_ok(fx, "r");
	assert_int_equal(state_count(s), 2);
	assert_true(state_has(s, "k1", &when));
	assert_int_equal(when, 7);
	assert_false(state_has(s, "k2", NULL));
	assert_true(state_has(s, "k3", NULL));
	state_close(s);
}

static const char *const odd_keys[] = {
	"with space", "new\nline", "cr\rlf", "tab\there", "100%", "%41", "del\x7f", "\xff\xfe utf?",
	"caf\xc3\xa9", "\x01\x02\x1f", "-", "+", "+ 1 x -", "a/b:c", "trailing ", " leading",
	"%", "%%", "=?x?=", "\"quoted\"",
};

static void
check_odd_keys(struct state *s)
{
	for (size_t i = 0; i < sizeof(odd_keys) / sizeof(odd_keys[0]); i++) {
		int64_t when = 0;

		if (!state_has(s, odd_keys[i], &when))
			fail_msg("key %zu lost", i);
		assert_int_equal(when, (int64_t)i - 5);
	}
	assert_int_equal(state_count(s), sizeof(odd_keys) / sizeof(odd_keys[0]));
}

static void
test_odd_bytes(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "o");
	size_t n = sizeof(odd_keys) / sizeof(odd_keys[0]), len, lines = 0;
	char j[256], name[64];
	char *text;

	for (size_t i = 0; i < n; i++) {
		pathf(name, sizeof(name), "n%s", odd_keys[i]);
		assert_int_equal(state_add(s, odd_keys[i], (int64_t)i - 5, name, &err), 0);
	}
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	pathf(j, sizeof(j), "%s/o.journal", fx->sdir);
	text = slurp(j, &len);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		lines += c == '\n';
		assert_true(c == '\n' || (c > 0x20 && c < 0x7f) || c == ' ');
	}
	assert_int_equal(lines, n);
	free(text);

	s = open_ok(fx, "o");
	check_odd_keys(s);
	for (size_t i = 0; i < n; i++) {
		pathf(name, sizeof(name), "n%s", odd_keys[i]);
		assert_true(state_name_recorded(s, name));
	}
	assert_int_equal(state_compact(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "o");
	check_odd_keys(s);
	state_close(s);

	/* Extreme times survive too. */
	s = open_ok(fx, "o");
	assert_int_equal(state_add(s, "min", INT64_MIN, NULL, &err), 0);
	assert_int_equal(state_add(s, "max", INT64_MAX, NULL, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "o");
	{
		int64_t w;

		assert_true(state_has(s, "min", &w));
		assert_true(w == INT64_MIN);
		assert_true(state_has(s, "max", &w));
		assert_true(w == INT64_MAX);
	}
	state_close(s);
}

static void
test_account_name_escaped(void **state)
{
	struct fixture *fx = *state;
	struct state *s = open_ok(fx, "../evil/x y.z\xc3\xa9");
	char p[256];

	pathf(p, sizeof(p), "%s/%%2E.%%2Fevil%%2Fx%%20y.z%%C3%%A9.lock", fx->sdir);
	assert_int_equal(access(p, F_OK), 0);
	pathf(p, sizeof(p), "%s/x/evil", fx->dir);
	assert_int_equal(access(p, F_OK), -1);
	state_close(s);
	s = open_ok(fx, ".hidden");
	pathf(p, sizeof(p), "%s/%%2Ehidden.journal", fx->sdir);
	assert_int_equal(access(p, F_OK), 0);
	state_close(s);
}

static void
test_lock_conflict(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s1 = open_ok(fx, "acct"), *s2 = NULL, *other;
	char want[256];

	assert_int_equal(state_open(fx->sdir, "acct", false, &s2, &err), -EAGAIN);
	assert_null(s2);
	assert_int_equal(err.code, -EAGAIN);
	assert_int_equal(err.ex, MP_EX_TEMPFAIL);
	pathf(want, sizeof(want), "another mailpull process is working on account 'acct'"
	      " (lock %s/acct.lock)", fx->sdir);
	assert_string_equal(err.msg, want);
	/* Other accounts are independent. */
	other = open_ok(fx, "acct2");
	state_close(other);
	state_close(s1);
	s2 = open_ok(fx, "acct");
	state_close(s2);
	/* Waiting succeeds at once when nobody holds it. */
	assert_int_equal(state_open(fx->sdir, "acct", true, &s2, NULL), 0);
	state_close(s2);
}

/* wait = true blocks until the other process lets go. */
static void
test_lock_wait(void **state)
{
	struct fixture *fx = *state;
	struct state *s = NULL;
	int fds[2], status;
	char c;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (state_open(fx->sdir, "w", false, &s, NULL) < 0)
			_exit(1);
		if (write(fds[1], "x", 1) != 1)
			_exit(1);
		usleep(300 * 1000);
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &c, 1), 1);
	close(fds[0]);
	assert_int_equal(state_open(fx->sdir, "w", false, &s, NULL), -EAGAIN);
	assert_int_equal(state_open(fx->sdir, "w", true, &s, NULL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	state_close(s);
}

static void
test_dir_is_file(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = NULL;
	char p[256];

	pathf(p, sizeof(p), "%s/x", fx->dir);
	put_file(p, "not a directory\n", false);
	assert_int_equal(state_open(fx->sdir, "a", false, &s, &err), -ENOTDIR);
	assert_null(s);
	assert_non_null(strstr(err.msg, fx->sdir));
	assert_int_equal(err.ex, MP_EX_IOERR);
}

static int
count_cb(void *ud, const char *key, int64_t when)
{
	size_t *n = ud;

	(void)key;
	(void)when;
	(*n)++;
	return *n == 3 ? 42 : 0;
}

static void
test_foreach(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "f");
	size_t n = 0;

	assert_int_equal(state_foreach(s, count_cb, &n), 0);
	assert_int_equal(n, 0);
	for (int i = 0; i < 5; i++) {
		char key[16];

		pathf(key, sizeof(key), "k%d", i);
		assert_int_equal(state_add(s, key, i, NULL, &err), 0);
	}
	assert_int_equal(state_foreach(s, count_cb, &n), 42);
	assert_int_equal(n, 3);
	state_close(s);
}

struct sum {
	size_t n;
	int64_t total;
};

static int
sum_cb(void *ud, const char *key, int64_t when)
{
	struct sum *sm = ud;

	assert_true(strncmp(key, "uidl-", 5) == 0);
	sm->n++;
	sm->total += when;
	return 0;
}

static void
test_many_keys(void **state)
{
	enum { N = 100000 };
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "big");
	struct sum sm = { 0 };
	char key[32];
	int64_t when, want = 0;

	for (int i = 0; i < N; i++) {
		pathf(key, sizeof(key), "uidl-%08x", (unsigned)i * 2654435761u);
		assert_int_equal(state_add(s, key, i, NULL, &err), 0);
	}
	assert_int_equal(state_count(s), N);
	assert_int_equal(state_sync(s, &err), 0);
	for (int i = 0; i < N; i += 2) {
		pathf(key, sizeof(key), "uidl-%08x", (unsigned)i * 2654435761u);
		assert_int_equal(state_remove(s, key, &err), 0);
	}
	assert_int_equal(state_count(s), N / 2);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);

	s = open_ok(fx, "big");
	assert_int_equal(state_count(s), N / 2);
	for (int i = 0; i < N; i++) {
		bool has;

		pathf(key, sizeof(key), "uidl-%08x", (unsigned)i * 2654435761u);
		has = state_has(s, key, &when);
		assert_int_equal(has, i % 2 == 1);
		if (has)
			assert_int_equal(when, i);
		if (has)
			want += i;
	}
	assert_int_equal(state_foreach(s, sum_cb, &sm), 0);
	assert_int_equal(sm.n, N / 2);
	assert_true(sm.total == want);
	assert_int_equal(state_compact(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "big");
	assert_int_equal(state_count(s), N / 2);
	pathf(key, sizeof(key), "uidl-%08x", 1u * 2654435761u);
	assert_true(state_has(s, key, NULL));
	state_close(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readd_keeps_first_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_crash_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_odd_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_name_escaped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_conflict, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_is_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_keys, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
