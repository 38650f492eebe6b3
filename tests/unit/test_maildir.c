/* Maildir writer: create, write, sync, publish, recover. */
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

#include "mailpull/maildir.h"

struct fixture {
	char dir[64];
	char md[128];
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
	memcpy(fx->dir, "/tmp/mp-maildir-XXXXXX", sizeof("/tmp/mp-maildir-XXXXXX"));
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->md, sizeof(fx->md), "%s/a/b/Mail", fx->dir);
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

static bool
exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static mode_t
mode_of(const char *path)
{
	struct stat st;

	assert_int_equal(lstat(path, &st), 0);
	return st.st_mode;
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
	*ret_len = (size_t)st.st_size;
	return buf;
}

static void
touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
}

/* Writes, syncs and returns a message holding text (caller publishes). */
static struct maildir_msg *
make_msg(struct maildir *md, const char *text)
{
	struct maildir_msg *m = NULL;
	struct mp_err err = { 0 };

	assert_int_equal(maildir_msg_new(md, &m, &err), 0);
	assert_int_equal(maildir_msg_write(m, text, strlen(text), &err), 0);
	assert_int_equal(maildir_msg_sync(m, &err), 0);
	return m;
}

static void
test_open_creates(void **state)
{
	struct fixture *fx = *state;
	struct maildir *md = NULL;
	struct mp_err err = { 0 };
	char p[256];

	assert_int_equal(maildir_open(fx->md, "acct1", &md, &err), 0);
	assert_non_null(md);
	assert_string_equal(maildir_path(md), fx->md);
	for (int i = 0; i < 3; i++) {
		static const char *const sub[] = { "tmp", "new", "cur" };

		pathf(p, sizeof(p), "%s/%s", fx->md, sub[i]);
		assert_true(S_ISDIR(mode_of(p)));
		assert_int_equal(mode_of(p) & 0777, 0700);
	}
	maildir_close(md);
	/* Opening an existing Maildir works too, and a trailing '/' is ignored. */
	pathf(p, sizeof(p), "%s/", fx->md);
	assert_int_equal(maildir_open(p, "acct1", &md, &err), 0);
	assert_string_equal(maildir_path(md), fx->md);
	maildir_close(md);
	maildir_close(NULL);
}

static void
test_bad_tag(void **state)
{
	static const char *const bad[] = { "", "a-b", "a.b", "X/Y", "abcdefghijklmnopq" };
	struct fixture *fx = *state;
	struct maildir *md = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct mp_err err = { 0 };

		assert_int_equal(maildir_open(fx->md, bad[i], &md, &err), -EINVAL);
		assert_int_equal(err.code, -EINVAL);
		assert_null(md);
	}
	assert_int_equal(maildir_open(fx->md, "abcdefghijklmnop", &md, NULL), 0);
	maildir_close(md);
}

static void
test_path_is_file(void **state)
{
	struct fixture *fx = *state;
	struct maildir *md = NULL;
	struct mp_err err = { 0 };
	char p[256];

	pathf(p, sizeof(p), "%s/file", fx->dir);
	touch(p);
	assert_int_equal(maildir_open(p, "t", &md, &err), -ENOTDIR);
	assert_null(md);
	assert_non_null(strstr(err.msg, p));
	assert_non_null(strstr(err.msg, strerror(ENOTDIR)));
	assert_int_equal(err.ex, MP_EX_IOERR);

	/* A file where new/ should be. */
	pathf(p, sizeof(p), "%s/md2", fx->dir);
	assert_int_equal(mkdir(p, 0700), 0);
	pathf(p, sizeof(p), "%s/md2/new", fx->dir);
	touch(p);
	pathf(p, sizeof(p), "%s/md2", fx->dir);
	mp_err_clear(&err);
	assert_int_equal(maildir_open(p, "t", &md, &err), -ENOTDIR);
	assert_non_null(strstr(err.msg, "md2/new"));
}

static void
check_name(const char *name, const char *tag)
{
	char want[64];
	const char *x;

	pathf(want, sizeof(want), "X%s.", tag);
	x = strstr(name, want);
	assert_non_null(x);
	assert_non_null(strstr(name, ".M"));
	assert_non_null(strchr(name, 'P'));
	assert_non_null(strchr(name, 'Q'));
	assert_null(strchr(name, '/'));
	assert_null(strchr(name, ':'));
	assert_true(name[0] >= '1' && name[0] <= '9');
	assert_true(strlen(x + strlen(want)) > 0);
}

static void
test_write_publish_new(void **state)
{
	struct fixture *fx = *state;
	struct maildir *md = NULL;
	struct maildir_msg *m = NULL;
	struct mp_err err = { 0 };
	size_t total = 300000, off = 0, len;
	char *data = malloc(total), *got, name[256], p[512];

	assert_non_null(data);
	for (size_t i = 0; i < total; i++)
		data[i] = (char)('a' + i % 26 + (i % 1000 == 999 ? -87 : 0));
	assert_int_equal(maildir_open(fx->md, "tag1", &md, &err), 0);
	assert_int_equal(maildir_msg_new(md, &m, &err), 0);
	pathf(name, sizeof(name), "%s", maildir_msg_name(m));
	check_name(name, "tag1");
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, name);
	assert_int_equal(mode_of(p) & 0777, 0600);
	/* Chunks small, odd, buffer-sized and larger than the buffer. */
	for (size_t step = 1; off < total; step = step * 3 + 7) {
		size_t n = step > total - off ? total - off : step;

		assert_int_equal(maildir_msg_write(m, data + off, n, &err), 0);
		off += n;
	}
	assert_int_equal(maildir_msg_size(m), total);
	assert_int_equal(maildir_msg_sync(m, &err), 0);
	assert_int_equal(maildir_msg_sync(m, &err), 0);
	assert_int_equal(maildir_sync_tmp(md, &err), 0);
	assert_int_equal(maildir_msg_publish(m, NULL, &err), 0);
	assert_int_equal(maildir_sync_new(md, &err), 0);
	assert_false(exists(p));
	pathf(p, sizeof(p), "%s/new/%s", fx->md, name);
	got = slurp(p, &len);
	assert_int_equal(len, total);
	assert_memory_equal(got, data, total);
	assert_int_equal(mode_of(p) & 0777, 0600);
	free(got);
	free(data);
	maildir_close(md);
}

static void
test_publish_flags(void **state)
{
	struct fixture *fx = *state;
	struct maildir *md = NULL;
	struct maildir_msg *m;
	struct mp_err err = { 0 };
	char name[256], p[512];
	size_t len;
	char *got;

	assert_int_equal(maildir_open(fx->md, "t", &md, &err), 0);
	m = make_msg(md, "Subject: hi\n\nbody\n");
	pathf(name, sizeof(name), "%s", maildir_msg_name(m));
	assert_int_equal(maildir_msg_publish(m, "FS", &err), 0);
	assert_int_equal(maildir_sync_new(md, &err), 0);
	pathf(p, sizeof(p), "%s/cur/%s:2,FS", fx->md, name);
	got = slurp(p, &len);
	assert_string_equal(got, "Subject: hi\n\nbody\n");
	free(got);
	pathf(p, sizeof(p), "%s/new/%s", fx->md, name);
	assert_false(exists(p));

	/* Empty flags: "NAME:2," in cur/. */
	m = make_msg(md, "x");
	pathf(name, sizeof(name), "%s", maildir_msg_name(m));
	assert_int_equal(maildir_msg_publish(m, "", &err), 0);
	pathf(p, sizeof(p), "%s/cur/%s:2,", fx->md, name);
	assert_true(exists(p));

	/* Out of order or bad letters: refused, the tmp file stays for recovery. */
	m = make_msg(md, "y");
	pathf(name, sizeof(name), "%s", maildir_msg_name(m));
	assert_int_equal(maildir_msg_publish(m, "SF", &err), -EINVAL);
	assert_non_null(strstr(err.msg, name));
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, name);
	assert_true(exists(p));
	m = make_msg(md, "z");
	mp_err_clear(&err);
	assert_int_equal(maildir_msg_publish(m, "F/", &err), -EINVAL);
	maildir_close(md);
}

static void
test_publish_unsynced_and_discard(void **state)
{
	struct fixture *fx = *state;
	struct maildir *md = NULL;
	struct maildir_msg *m = NULL;
	struct mp_err err = { 0 };
	char name[256], p[512];

	assert_int_equal(maildir_open(fx->md, "t", &md, &err), 0);
	assert_int_equal(maildir_msg_new(md, &m, &err), 0);
	assert_int_equal(maildir_msg_write(m, "abc", 3, &err), 0);
	pathf(name, sizeof(name), "%s", maildir_msg_name(m));
	assert_int_equal(maildir_msg_publish(m, NULL, &err), -EINVAL);
	pathf(p, sizeof(p), "%s/new/%s", fx->md, name);
	assert_false(exists(p));
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, name);
	assert_true(exists(p));

	/* Discard before and after sync removes the tmp file. */
	assert_int_equal(maildir_msg_new(md, &m, &err), 0);
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, maildir_msg_name(m));
	assert_int_equal(maildir_msg_write(m, "abc", 3, &err), 0);
	maildir_msg_discard(m);
	assert_false(exists(p));
	m = make_msg(md, "abc");
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, maildir_msg_name(m));
	maildir_msg_discard(m);
	assert_false(exists(p));
	maildir_msg_discard(NULL);
	maildir_close(md);
}

static void
test_names_unique(void **state)
{
	struct fixture *fx = *state;
	struct maildir *md = NULL;
	struct mp_err err = { 0 };
	enum { N = 500 };
	char (*names)[256] = calloc(N, sizeof(*names));

	assert_non_null(names);
	assert_int_equal(maildir_open(fx->md, "u", &md, &err), 0);
	for (int i = 0; i < N; i++) {
		struct maildir_msg *m = make_msg(md, "m");

		pathf(names[i], sizeof(names[i]), "%s", maildir_msg_name(m));
		assert_int_equal(maildir_msg_publish(m, NULL, &err), 0);
	}
	for (int i = 0; i < N; i++)
		for (int j = i + 1; j < N; j++)
			assert_string_not_equal(names[i], names[j]);
	free(names);
	maildir_close(md);
}

struct recover_ctx {
	const char *keep;
	const char *flags;      /* given to keep; NULL: none */
	unsigned calls;
};

static bool
committed(void *ud, const char *name, char flags[MAILDIR_FLAGS_SIZE])
{
	struct recover_ctx *ctx = ud;

	ctx->calls++;
	assert_string_equal(flags, "");
	if (strcmp(name, ctx->keep) != 0)
		return false;
	if (ctx->flags)
		snprintf(flags, MAILDIR_FLAGS_SIZE, "%s", ctx->flags);
	return true;
}

/* A recovered message the state recorded flags for goes to cur/ with them. */
static void
test_recover_flags(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct recover_ctx ctx = { .flags = "FS" };
	struct maildir *md;
	struct maildir_msg *m1, *m2;
	char n1[256], n2[256], p[1024];
	unsigned pub = 0, rem = 0;

	assert_int_equal(maildir_open(fx->md, "aaa", &md, &err), 0);
	m1 = make_msg(md, "one");
	m2 = make_msg(md, "two");
	snprintf(n1, sizeof(n1), "%s", maildir_msg_name(m1));
	snprintf(n2, sizeof(n2), "%s", maildir_msg_name(m2));
	assert_int_equal(maildir_msg_sync(m1, &err), 0);
	assert_int_equal(maildir_msg_sync(m2, &err), 0);
	maildir_msg_release(&m1, 1);
	maildir_msg_release(&m2, 1);
	ctx.keep = n1;
	assert_int_equal(maildir_recover(md, committed, &ctx, &pub, &rem, &err), 0);
	assert_int_equal(pub, 1);
	assert_int_equal(rem, 1);
	pathf(p, sizeof(p), "%s/cur/%s:2,FS", fx->md, n1);
	assert_true(exists(p));
	pathf(p, sizeof(p), "%s/new/%s", fx->md, n1);
	assert_false(exists(p));
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, n2);
	assert_false(exists(p));
	/* Flags out of order are refused, and the file stays for the next try. */
	m1 = make_msg(md, "three");
	snprintf(n1, sizeof(n1), "%s", maildir_msg_name(m1));
	assert_int_equal(maildir_msg_sync(m1, &err), 0);
	maildir_msg_release(&m1, 1);
	ctx.flags = "SF";
	assert_int_equal(maildir_recover(md, committed, &ctx, NULL, NULL, &err), -EINVAL);
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, n1);
	assert_true(exists(p));
	maildir_close(md);
}

static void
test_recover(void **state)
{
	static const char *const foreign[] = {
		"1700000000.M1P2.otherhost",             /* another program */
		"1700000000.M1P2Q3Xaaab.host",           /* a tag that merely starts with ours */
		"1700000000.M1P2Q3Xbbb.hostXaaa.x",      /* ours only by its host part */
		"Xaaa.host",                             /* no prefix at all */
		"1700000000.M1P2Q3Xaaa.",                /* no host */
	};
	struct fixture *fx = *state;
	struct maildir *a = NULL, *b = NULL;
	struct maildir_msg *a1, *a2, *b1;
	struct mp_err err = { 0 };
	struct recover_ctx ctx = { 0 };
	char names[3][256], p[512];
	const char *n_a1, *n_a2, *n_b1;
	int fds[2], status;
	pid_t pid;
	unsigned pub = 99, rem = 99;

	/* A child delivers and dies mid-run: the tmp files stay, nothing is published. */
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char buf[3 * 256];

		if (maildir_open(fx->md, "aaa", &a, &err) < 0 ||
		    maildir_open(fx->md, "bbb", &b, &err) < 0)
			_exit(1);
		a1 = make_msg(a, "one");
		a2 = make_msg(a, "two");
		b1 = make_msg(b, "three");
		memset(buf, 0, sizeof(buf));
		snprintf(buf, 256, "%s", maildir_msg_name(a1));
		snprintf(buf + 256, 256, "%s", maildir_msg_name(a2));
		snprintf(buf + 512, 256, "%s", maildir_msg_name(b1));
		_exit(write(fds[1], buf, sizeof(buf)) == (ssize_t)sizeof(buf) ? 0 : 1);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], names, sizeof(names)), sizeof(names));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	n_a1 = names[0];
	n_a2 = names[1];
	n_b1 = names[2];
	for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
		pathf(p, sizeof(p), "%s/tmp/%s", fx->md, foreign[i]);
		touch(p);
	}

	assert_int_equal(maildir_open(fx->md, "aaa", &a, &err), 0);
	ctx.keep = n_a1;
	assert_int_equal(maildir_recover(a, committed, &ctx, &pub, &rem, &err), 0);
	assert_int_equal(pub, 1);
	assert_int_equal(rem, 1);
	assert_int_equal(ctx.calls, 2);
	pathf(p, sizeof(p), "%s/new/%s", fx->md, n_a1);
	assert_true(exists(p));
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, n_a1);
	assert_false(exists(p));
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, n_a2);
	assert_false(exists(p));
	pathf(p, sizeof(p), "%s/new/%s", fx->md, n_a2);
	assert_false(exists(p));
	pathf(p, sizeof(p), "%s/tmp/%s", fx->md, n_b1);
	assert_true(exists(p));
	for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
		pathf(p, sizeof(p), "%s/tmp/%s", fx->md, foreign[i]);
		assert_true(exists(p));
	}
	/* Nothing left to do; NULL counters are fine. */
	ctx.calls = 0;
	assert_int_equal(maildir_recover(a, committed, &ctx, NULL, NULL, &err), 0);
	assert_int_equal(ctx.calls, 0);
	maildir_close(a);
}

/*
 * A message stored under a name the caller chose (the Sent copy keeps the
 * outbox name): a leftover tmp/ file of that name is replaced, the
 * published copy is found in new/ or cur/ by its base name, and a name
 * that is not one file name is refused.
 */
static void
test_named(void **state)
{
	static const char *const bad[] = { "", ".hidden", "a/b", "a:2,S" };
	struct fixture *fx = *state;
	struct maildir *md = NULL;
	struct maildir_msg *m = NULL;
	struct mp_err err = { 0 };
	bool found = true;
	char p[512];
	size_t len;
	char *got;
	int fd;

	assert_int_equal(maildir_open(fx->md, "t", &md, &err), 0);
	assert_int_equal(maildir_has_published(md, "123.M1.host", &found, &err), 0);
	assert_false(found);
	/* What an interrupted run left in tmp/ is replaced, not added to. */
	pathf(p, sizeof(p), "%s/tmp/123.M1.host", fx->md);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "partial and longer", 18), 18);
	close(fd);
	assert_int_equal(maildir_has_published(md, "123.M1.host", &found, &err), 0);
	assert_false(found);
	assert_int_equal(maildir_msg_new_named(md, "123.M1.host", &m, &err), 0);
	assert_string_equal(maildir_msg_name(m), "123.M1.host");
	assert_int_equal(maildir_msg_write(m, "sent\n", 5, &err), 0);
	assert_int_equal(maildir_msg_sync(m, &err), 0);
	assert_int_equal(maildir_msg_publish(m, "S", &err), 0);
	assert_int_equal(maildir_sync_new(md, &err), 0);
	pathf(p, sizeof(p), "%s/cur/123.M1.host:2,S", fx->md);
	got = slurp(p, &len);
	assert_int_equal(len, 5);
	assert_string_equal(got, "sent\n");
	free(got);
	assert_int_equal(maildir_has_published(md, "123.M1.host", &found, &err), 0);
	assert_true(found);
	assert_int_equal(maildir_has_published(md, "123.M1", &found, &err), 0);
	assert_false(found);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		mp_err_clear(&err);
		assert_int_equal(maildir_msg_new_named(md, bad[i], &m, &err), -EINVAL);
	}
	maildir_close(md);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_tag, setup, teardown),
		cmocka_unit_test_setup_teardown(test_path_is_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_publish_new, setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish_unsynced_and_discard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_unique, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_named, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
