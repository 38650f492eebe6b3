/* State store: journal, snapshot, torn and corrupt files, lock, scale. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <malloc.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mailpull/state.h"

/* The heap-size check means nothing under AddressSanitizer's allocator. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* The version line every journal created since it existed begins with. */
#define JHDR "mailpull-journal 1\n"

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

/* A run that ended before compacting leaves names: the next open says so. */
static void
test_interrupted(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "i");

	assert_false(state_interrupted(s));
	assert_int_equal(state_add(s, "k1", 10, NULL, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	/* recorded in this run: not an interrupted earlier one */
	assert_int_equal(state_add(s, "k2", 10, "n2", &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	assert_false(state_interrupted(s));
	state_close(s);
	s = open_ok(fx, "i");
	assert_true(state_interrupted(s));
	assert_int_equal(state_compact(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "i");
	assert_false(state_interrupted(s));
	assert_true(state_has(s, "k2", NULL));
	state_close(s);
}

static int
count_name(void *ud, const char *name)
{
	(void)name;
	(*(int *)ud)++;
	return 0;
}

/*
 * Released names leave memory but not the journal: after a crash the next
 * start-up finds them again, with their flags; the records stay.
 */
static void
test_names_release(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	char flags[STATE_FLAGS_MAX + 1];
	struct state *s = open_ok(fx, "rel");
	int n = 0;

	assert_int_equal(state_add(s, "k1", 10, "n1", &err), 0);
	assert_int_equal(state_folder_reset(s, "INBOX", 7, &err), 0);
	assert_int_equal(state_name_set_flags(s, "n2", "S", &err), 0);
	assert_int_equal(state_uid_add(s, "INBOX", 3, 0x1234, "n2", &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_names_release(s);
	assert_false(state_name_recorded(s, "n1"));
	assert_false(state_name_recorded(s, "n2"));
	assert_int_equal(state_name_flags(s, "n2", flags), 0);
	assert_int_equal(state_name_foreach(s, count_name, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(state_forget_name(s, "n1", &err), 0);
	assert_true(state_has(s, "k1", NULL));
	assert_true(state_uid_has(s, "INBOX", 3));
	/* Recorded after the release: known as before. */
	assert_int_equal(state_add(s, "k3", 10, "n3", &err), 0);
	assert_true(state_name_recorded(s, "n3"));
	assert_int_equal(state_sync(s, &err), 0);
	state_names_release(s);
	state_names_release(s);
	state_close(s);

	s = open_ok(fx, "rel");
	assert_true(state_interrupted(s));
	assert_true(state_name_recorded(s, "n1"));
	assert_true(state_name_recorded(s, "n2"));
	assert_true(state_name_recorded(s, "n3"));
	assert_int_equal(state_name_flags(s, "n2", flags), 1);
	assert_string_equal(flags, "S");
	state_names_release(s);
	assert_int_equal(state_compact(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "rel");
	assert_false(state_interrupted(s));
	assert_false(state_name_recorded(s, "n1"));
	assert_true(state_has(s, "k3", NULL));
	assert_true(state_uid_has(s, "INBOX", 3));
	state_close(s);
}

/* A name whose file is gone gives back its key: fetched again, not deleted. */
static void
test_forget_name_key(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "f");
	int n = 0;

	assert_int_equal(state_add(s, "k1", 10, "n1", &err), 0);
	assert_int_equal(state_add(s, "k2", 10, "n2", &err), 0);
	assert_int_equal(state_add(s, "k3", 10, "a", &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "f");
	assert_int_equal(state_name_foreach(s, count_name, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(state_forget_name(s, "n1", &err), 1);
	assert_false(state_has(s, "k1", NULL));
	assert_true(state_has(s, "k2", NULL));
	assert_int_equal(state_forget_name(s, "n1", &err), 0);
	assert_int_equal(state_forget_name(s, "unknown", &err), 0);
	/* k3 forgotten, fetched again as "b": "a" no longer speaks for it. */
	assert_int_equal(state_forget_name(s, "a", &err), 1);
	assert_int_equal(state_add(s, "k3", 20, "b", &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "f");
	assert_false(state_has(s, "k1", NULL));
	assert_true(state_has(s, "k3", NULL));
	assert_int_equal(state_forget_name(s, "a", &err), 0);
	assert_true(state_has(s, "k3", NULL));
	assert_int_equal(state_forget_name(s, "b", &err), 1);
	assert_false(state_has(s, "k3", NULL));
	/* Compaction forgets the names: nothing is left to forget by. */
	assert_int_equal(state_compact(s, &err), 0);
	assert_int_equal(state_forget_name(s, "n2", &err), 0);
	assert_true(state_has(s, "k2", NULL));
	state_close(s);
}

/* For a UID: the UID goes, UIDNEXT goes to 0, and only under its UIDVALIDITY. */
static void
test_forget_name_uid(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "g");
	uint32_t uv = 0, next = 1;

	assert_int_equal(state_folder_reset(s, "A b", 7, &err), 0);
	assert_int_equal(state_uid_add(s, "A b", 5, 0x1234, "u5", &err), 0);
	assert_int_equal(state_uid_add(s, "A b", 6, 0, "u6", &err), 0);
	assert_int_equal(state_folder_set_uidnext(s, "A b", 10, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "g");
	assert_true(state_fp_has(s, "A b", 0x1234));
	assert_int_equal(state_forget_name(s, "u5", &err), 1);
	assert_false(state_uid_has(s, "A b", 5));
	assert_true(state_uid_has(s, "A b", 6));
	/* Nor does a UIDVALIDITY change take it for fetched. */
	assert_false(state_fp_has(s, "A b", 0x1234));
	assert_int_equal(state_folder_get(s, "A b", &uv, &next), 0);
	assert_int_equal(uv, 7);
	assert_int_equal(next, 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "g");
	assert_false(state_uid_has(s, "A b", 5));
	assert_false(state_fp_has(s, "A b", 0x1234));
	assert_int_equal(state_folder_get(s, "A b", &uv, &next), 0);
	assert_int_equal(next, 0);
	/* Fetched again: the fingerprint is back, through compaction too. */
	assert_int_equal(state_uid_add(s, "A b", 5, 0x1234, "u5b", &err), 0);
	assert_int_equal(state_compact(s, &err), 0);
	state_close(s);
	s = open_ok(fx, "g");
	assert_true(state_fp_has(s, "A b", 0x1234));
	/* A new UIDVALIDITY: UID 6 now names another message. */
	assert_int_equal(state_folder_reset(s, "A b", 8, &err), 0);
	assert_int_equal(state_uid_add(s, "A b", 6, 0, NULL, &err), 0);
	assert_int_equal(state_forget_name(s, "u6", &err), 0);
	assert_true(state_uid_has(s, "A b", 6));
	state_close(s);
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

/* Sizes ride with their key through journal, snapshot and removal. */
static void
test_sizes(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "sz");
	char j[256], sn[256];
	uint64_t size = 0;
	int64_t when = 0;
	char *text;

	pathf(j, sizeof(j), "%s/sz.journal", fx->sdir);
	pathf(sn, sizeof(sn), "%s/sz.state", fx->sdir);
	assert_int_equal(state_add_sized(s, "a b", 1, 1024, "na", &err), 0);
	assert_true(state_get_size(s, "a b", &size));
	assert_int_equal(size, 1024);
	assert_int_equal(state_add_sized(s, "c", 2, 0, NULL, &err), 0);
	assert_int_equal(state_add(s, "nosize", 3, NULL, &err), 0);
	assert_false(state_get_size(s, "nosize", &size));
	assert_false(state_get_size(s, "missing", &size));
	assert_int_equal(state_add_sized(s, "c", 2, UINT64_MAX, NULL, &err), -EINVAL);
	mp_err_clear(&err);
	/* Re-added with another size: the time stays, the size is the new one. */
	assert_int_equal(state_add_sized(s, "d", 4, 10, NULL, &err), 0);
	assert_int_equal(state_add_sized(s, "d", 5, 11, NULL, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	text = slurp(j, NULL);
	assert_non_null(strstr(text, "L 1 a%20b na 1024\n"));
	assert_non_null(strstr(text, "\nL 2 c - 0\n"));
	assert_non_null(strstr(text, "\n+ 3 nosize -\n"));
	assert_non_null(strstr(text, "\nL 4 d - 11\n"));
	free(text);
	state_close(s);

	/* From the journal. */
	s = open_ok(fx, "sz");
	assert_true(state_get_size(s, "a b", &size));
	assert_int_equal(size, 1024);
	assert_true(state_name_recorded(s, "na"));
	assert_true(state_get_size(s, "c", &size));
	assert_int_equal(size, 0);
	assert_false(state_get_size(s, "nosize", &size));
	assert_true(state_has(s, "d", &when));
	assert_int_equal(when, 4);
	assert_true(state_get_size(s, "d", &size));
	assert_int_equal(size, 11);
	/* Forgotten with the key; a plain record has none. */
	assert_int_equal(state_remove(s, "c", &err), 0);
	assert_int_equal(state_add(s, "c", 9, NULL, &err), 0);
	assert_false(state_get_size(s, "c", &size));
	assert_int_equal(state_compact(s, &err), 0);
	text = slurp(sn, NULL);
	assert_non_null(strstr(text, "\nL 1 a%20b 1024\n"));
	assert_non_null(strstr(text, "\n9 c\n"));
	assert_non_null(strstr(text, "\n3 nosize\n"));
	free(text);
	state_close(s);

	/* From the snapshot. */
	s = open_ok(fx, "sz");
	assert_true(state_get_size(s, "a b", &size));
	assert_int_equal(size, 1024);
	assert_false(state_get_size(s, "c", &size));
	assert_true(state_get_size(s, "d", &size));
	assert_int_equal(size, 11);
	state_close(s);

	/* A file of an older version (no sizes) loads as it did. */
	put_file(sn, "mailpull-state 1\n5 old\n", false);
	put_file(j, "+ 6 new n6\n", false);
	s = open_ok(fx, "sz");
	assert_true(state_has(s, "old", NULL));
	assert_false(state_get_size(s, "old", &size));
	assert_true(state_has(s, "new", NULL));
	assert_false(state_get_size(s, "new", &size));
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
	assert_string_equal(text, JHDR "+ 1 a na\n+ 2 b -\n+ 3 c nc\n- a\n+ 5 e -\n");
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
		"L 1 ok - \n", "L 1 ok - x\n", "L 1 ok 1\n", "L 1 ok - -1\n", "L x ok - 1\n",
		"L 1 ok - 18446744073709551615\n", "LL 1 ok - 1\n", "L 1 ok - 1 2\n",
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
	put_file(sn, "mailpull-state 3\n", false);
	expect_bad(fx, "c.state", "1");
	put_file(sn, "", false);
	expect_bad(fx, "c.state", "1");
	put_file(sn, "mailpull-state 1\n5 a\n6 b c\n", false);
	expect_bad(fx, "c.state", "3");
	/* The snapshot is renamed into place whole: a missing '\n' is damage. */
	put_file(sn, "mailpull-state 1\n5 a\n6 b", false);
	expect_bad(fx, "c.state", "3");
	put_file(sn, "mailpull-state 1\n5 a\nL 6 b - 7\n", false);
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
	assert_int_equal(size_of(j), (off_t)strlen(JHDR));
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
	assert_int_equal(size_of(j), (off_t)strlen(JHDR));
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
	assert_int_equal(lines, n + 1);
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

/* ---- IMAP folders ---- */

static uint64_t
fp_of(uint32_t uid)
{
	char id[64];

	pathf(id, sizeof(id), "<%u@example.org>", uid);
	return state_fingerprint(id, strlen(id), 1000 + uid);
}

static void
fsync_ok(struct state *s)
{
	struct mp_err err = { 0 };
	int r = state_sync(s, &err);

	if (r != 0)
		fail_msg("state_sync: %d %s", r, err.msg);
}

static void
compact_ok(struct state *s)
{
	struct mp_err err = { 0 };
	int r = state_compact(s, &err);

	if (r != 0)
		fail_msg("state_compact: %d %s", r, err.msg);
}

/* The snapshot's text, for checks on its exact lines. */
static char *
snapshot_text(const struct fixture *fx, const char *account)
{
	char p[256];

	pathf(p, sizeof(p), "%s/%s.state", fx->sdir, account);
	return slurp(p, NULL);
}

static off_t
journal_size(const struct fixture *fx, const char *account)
{
	char p[256];

	pathf(p, sizeof(p), "%s/%s.journal", fx->sdir, account);
	return size_of(p);
}

static void
check_inbox(struct state *s, bool names)
{
	uint32_t uv = 0, un = 0;

	assert_int_equal(state_folder_get(s, "INBOX", &uv, &un), 0);
	assert_int_equal(uv, 7);
	assert_int_equal(un, 11);
	assert_int_equal(state_uid_count(s, "INBOX"), 9);
	for (uint32_t u = 1; u <= 12; u++) {
		char name[32];

		assert_int_equal(state_uid_has(s, "INBOX", u), u <= 10 && u != 5);
		/* The fingerprint of an expunged message stays. */
		assert_int_equal(state_fp_has(s, "INBOX", fp_of(u)), u <= 10);
		pathf(name, sizeof(name), "1.M%uP1.h", u);
		assert_int_equal(state_name_recorded(s, name), names && u <= 10);
	}
	assert_false(state_uid_has(s, "INBOX", 0));
	assert_false(state_fp_has(s, "INBOX", 0));
	assert_false(state_uid_has(s, "Other", 1));
	assert_false(state_fp_has(s, "Other", fp_of(1)));
	assert_int_equal(state_folder_get(s, "Other", &uv, &un), -ENOENT);
	assert_int_equal(state_uid_count(s, "Other"), 0);
}

static void
test_folder_round_trip(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "imap");
	char name[32];
	char *text;

	assert_int_equal(state_folder_reset(s, "INBOX", 7, &err), 0);
	for (uint32_t u = 1; u <= 10; u++) {
		pathf(name, sizeof(name), "1.M%uP1.h", u);
		assert_int_equal(state_uid_add(s, "INBOX", u, fp_of(u), name, &err), 0);
	}
	assert_int_equal(state_uid_remove(s, "INBOX", 5, &err), 0);
	assert_int_equal(state_uid_remove(s, "INBOX", 99, &err), 0);
	assert_int_equal(state_folder_set_uidnext(s, "INBOX", 11, &err), 0);
	/* Keys and folders live side by side. */
	assert_int_equal(state_add(s, "pop-key", 5, NULL, &err), 0);
	check_inbox(s, true);
	fsync_ok(s);
	state_close(s);

	s = open_ok(fx, "imap");
	check_inbox(s, true);
	assert_true(state_has(s, "pop-key", NULL));
	/* Unsynced changes are dropped by close. */
	assert_int_equal(state_uid_add(s, "INBOX", 12, fp_of(12), "1.M12P1.h", &err), 0);
	assert_int_equal(state_uid_remove(s, "INBOX", 1, &err), 0);
	assert_int_equal(state_folder_set_uidnext(s, "INBOX", 13, &err), 0);
	assert_int_equal(state_folder_reset(s, "New", 1, &err), 0);
	state_close(s);

	s = open_ok(fx, "imap");
	check_inbox(s, true);
	compact_ok(s);
	check_inbox(s, false);
	text = snapshot_text(fx, "imap");
	assert_non_null(strstr(text, "\nF INBOX 7 11 1-4,6-10\n"));
	assert_non_null(strstr(text, "\n5 pop-key\n"));
	free(text);
	state_close(s);

	s = open_ok(fx, "imap");
	check_inbox(s, false);
	assert_true(state_has(s, "pop-key", NULL));
	state_close(s);
}

static void
shuffle(uint32_t *v, size_t n, uint32_t seed)
{
	for (size_t i = n - 1; i > 0; i--) {
		size_t j;
		uint32_t t;

		seed = seed * 1103515245u + 12345u;
		j = (seed >> 8) % (i + 1);
		t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

struct uid_walk {
	uint32_t last;
	size_t n;
	uint32_t stop_at;
};

static int
walk_cb(void *ud, uint32_t uid)
{
	struct uid_walk *w = ud;

	assert_true(uid > w->last);
	w->last = uid;
	w->n++;
	return uid == w->stop_at ? 7 : 0;
}

/* Compacts and checks the F line that holds folder "r". */
static void
expect_f_line(const struct fixture *fx, struct state *s, const char *line)
{
	char *text;

	compact_ok(s);
	text = snapshot_text(fx, "rg");
	if (!strstr(text, line))
		fail_msg("snapshot lacks '%s':\n%s", line, text);
	free(text);
}

static void
test_ranges(void **state)
{
	enum { N = 1000 };
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "rg");
	struct uid_walk w = { 0 };
	uint32_t v[N];

	for (uint32_t i = 0; i < N; i++)
		v[i] = i + 1;
	shuffle(v, N, 42);
	assert_int_equal(state_folder_reset(s, "r", 3, &err), 0);
	for (size_t i = 0; i < N; i++) {
		assert_int_equal(state_uid_add(s, "r", v[i], 0, NULL, &err), 0);
		/* Re-adding changes nothing. */
		assert_int_equal(state_uid_add(s, "r", v[i / 2], 0, NULL, &err), 0);
	}
	assert_int_equal(state_uid_count(s, "r"), N);
	assert_int_equal(state_uid_foreach(s, "r", walk_cb, &w), 0);
	assert_int_equal(w.n, N);
	assert_int_equal(w.last, N);
	expect_f_line(fx, s, "\nF r 3 0 1-1000\n");

	assert_int_equal(state_uid_remove(s, "r", 500, &err), 0);
	assert_false(state_uid_has(s, "r", 500));
	assert_true(state_uid_has(s, "r", 499));
	assert_true(state_uid_has(s, "r", 501));
	assert_int_equal(state_uid_count(s, "r"), N - 1);
	expect_f_line(fx, s, "\nF r 3 0 1-499,501-1000\n");

	assert_int_equal(state_uid_remove(s, "r", 1, &err), 0);
	assert_int_equal(state_uid_remove(s, "r", 1000, &err), 0);
	assert_int_equal(state_uid_remove(s, "r", 1000, &err), 0);
	assert_int_equal(state_uid_remove(s, "r", 499, &err), 0);
	assert_int_equal(state_uid_remove(s, "r", 498, &err), 0);
	assert_int_equal(state_uid_add(s, "r", 2000, 0, NULL, &err), 0);
	assert_int_equal(state_uid_add(s, "r", 4294967295u, 0, NULL, &err), 0);
	assert_int_equal(state_uid_add(s, "r", 4294967294u, 0, NULL, &err), 0);
	expect_f_line(fx, s, "\nF r 3 0 2-497,501-999,2000,4294967294-4294967295\n");
	assert_int_equal(state_uid_remove(s, "r", 2000, &err), 0);
	for (uint32_t u = 497; u <= 501; u++)
		assert_int_equal(state_uid_add(s, "r", u, 0, NULL, &err), 0);
	expect_f_line(fx, s, "\nF r 3 0 2-999,4294967294-4294967295\n");
	assert_int_equal(state_uid_count(s, "r"), 1000);
	state_close(s);

	s = open_ok(fx, "rg");
	assert_int_equal(state_uid_count(s, "r"), 1000);
	w = (struct uid_walk){ .stop_at = 10 };
	assert_int_equal(state_uid_foreach(s, "r", walk_cb, &w), 7);
	assert_int_equal(w.n, 9);
	w = (struct uid_walk){ 0 };
	assert_int_equal(state_uid_foreach(s, "r", walk_cb, &w), 0);
	assert_int_equal(w.n, 1000);
	assert_true(w.last == 4294967295u);
	assert_int_equal(state_uid_foreach(s, "none", walk_cb, &w), 0);
	state_close(s);
}

/* Thousands of ranges and fingerprints are cut into several bounded lines. */
static void
test_long_lines(void **state)
{
	enum { N = 20000 };
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "ll");
	size_t f = 0, r = 0, p = 0, longest = 0;
	char *text, *line;

	assert_int_equal(state_folder_reset(s, "odd", 9, &err), 0);
	for (uint32_t u = 1; u <= N; u += 2)
		assert_int_equal(state_uid_add(s, "odd", u, fp_of(u), NULL, &err), 0);
	fsync_ok(s);
	compact_ok(s);
	state_close(s);
	text = snapshot_text(fx, "ll");
	for (line = text; *line; ) {
		char *nl = strchr(line, '\n');

		assert_non_null(nl);
		f += strncmp(line, "F odd ", 6) == 0;
		r += strncmp(line, "R odd ", 6) == 0;
		p += strncmp(line, "P odd ", 6) == 0;
		if ((size_t)(nl - line) > longest)
			longest = (size_t)(nl - line);
		line = nl + 1;
	}
	free(text);
	assert_int_equal(f, 1);
	assert_true(r >= 10);
	assert_true(p >= 10);
	assert_true(longest < 4200);
	s = open_ok(fx, "ll");
	assert_int_equal(state_uid_count(s, "odd"), N / 2);
	for (uint32_t u = 1; u <= N + 1; u++) {
		assert_int_equal(state_uid_has(s, "odd", u), u % 2 == 1 && u <= N);
		assert_int_equal(state_fp_has(s, "odd", fp_of(u)), u % 2 == 1 && u <= N);
	}
	state_close(s);
}

static void
test_uidvalidity_reset(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "uv");
	uint32_t uv = 0, un = 1;

	assert_int_equal(state_folder_reset(s, "INBOX", 100, &err), 0);
	for (uint32_t u = 1; u <= 50; u++)
		assert_int_equal(state_uid_add(s, "INBOX", u, fp_of(u), NULL, &err), 0);
	assert_int_equal(state_folder_set_uidnext(s, "INBOX", 51, &err), 0);
	fsync_ok(s);
	/* The server renumbered the folder. */
	assert_int_equal(state_folder_reset(s, "INBOX", 200, &err), 0);
	assert_int_equal(state_uid_count(s, "INBOX"), 0);
	assert_false(state_uid_has(s, "INBOX", 1));
	assert_int_equal(state_folder_get(s, "INBOX", &uv, &un), 0);
	assert_int_equal(uv, 200);
	assert_int_equal(un, 0);
	for (uint32_t u = 1; u <= 50; u++)
		assert_true(state_fp_has(s, "INBOX", fp_of(u)));
	/* Re-identified messages are recorded under their new UIDs. */
	assert_int_equal(state_uid_add(s, "INBOX", 1001, fp_of(1), NULL, &err), 0);
	fsync_ok(s);
	state_close(s);

	for (int round = 0; round < 2; round++) {
		s = open_ok(fx, "uv");
		assert_int_equal(state_folder_get(s, "INBOX", &uv, &un), 0);
		assert_int_equal(uv, 200);
		assert_int_equal(un, 0);
		assert_int_equal(state_uid_count(s, "INBOX"), 1);
		assert_true(state_uid_has(s, "INBOX", 1001));
		assert_false(state_uid_has(s, "INBOX", 1));
		for (uint32_t u = 1; u <= 50; u++)
			assert_true(state_fp_has(s, "INBOX", fp_of(u)));
		assert_false(state_fp_has(s, "INBOX", fp_of(51)));
		if (round == 0)
			compact_ok(s);
		state_close(s);
	}
}

static void
test_uidnext(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "un");
	uint32_t un = 0;
	off_t before;

	assert_int_equal(state_folder_set_uidnext(s, "INBOX", 5, &err), -ENOENT);
	assert_int_equal(err.code, -ENOENT);
	assert_non_null(strstr(err.msg, "'INBOX'"));
	mp_err_clear(&err);
	assert_int_equal(state_folder_reset(s, "INBOX", 1, &err), 0);
	assert_int_equal(state_folder_set_uidnext(s, "INBOX", 5, &err), 0);
	assert_int_equal(state_folder_set_uidnext(s, "INBOX", 4000000000u, &err), 0);
	fsync_ok(s);
	/* A poll with nothing new costs no journal write. */
	before = journal_size(fx, "un");
	assert_int_equal(state_folder_set_uidnext(s, "INBOX", 4000000000u, &err), 0);
	fsync_ok(s);
	assert_int_equal(journal_size(fx, "un"), before);
	state_close(s);
	s = open_ok(fx, "un");
	assert_int_equal(state_folder_get(s, "INBOX", NULL, &un), 0);
	assert_true(un == 4000000000u);
	compact_ok(s);
	state_close(s);
	s = open_ok(fx, "un");
	assert_int_equal(state_folder_get(s, "INBOX", NULL, &un), 0);
	assert_true(un == 4000000000u);
	state_close(s);
}

static const char *const odd_folders[] = {
	"INBOX", "Sent Items", "Entw\xc3\xbcrfe", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
	"a b  c ", " lead", "100%", "%41", "-", "F x 1 2 3", "new\nline", "tab\tcr\r",
	"Archive/2024", "\x7f\x01",
};

static int
collect_cb(void *ud, const char *folder)
{
	size_t *n = ud, i = 0;

	while (i < ARRAY_SIZE(odd_folders) && strcmp(odd_folders[i], folder) != 0)
		i++;
	if (i == ARRAY_SIZE(odd_folders))
		fail_msg("unknown folder '%s'", folder);
	(*n)++;
	return 0;
}

static void
check_odd_folders(struct state *s)
{
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(odd_folders); i++) {
		uint32_t uv = 0, un = 0;

		if (state_folder_get(s, odd_folders[i], &uv, &un) != 0)
			fail_msg("folder %zu lost", i);
		assert_int_equal(uv, i + 1);
		assert_int_equal(un, i + 100);
		assert_int_equal(state_uid_count(s, odd_folders[i]), 1);
		assert_true(state_uid_has(s, odd_folders[i], (uint32_t)i + 10));
		assert_true(state_fp_has(s, odd_folders[i], fp_of((uint32_t)i)));
	}
	assert_int_equal(state_folder_get(s, "Sent", NULL, NULL), -ENOENT);
	assert_int_equal(state_folder_foreach(s, collect_cb, &n), 0);
	assert_int_equal(n, ARRAY_SIZE(odd_folders));
}

static void
test_folder_names(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "fn");
	size_t len;
	char p[256];
	char *text;

	for (size_t i = 0; i < ARRAY_SIZE(odd_folders); i++) {
		const char *f = odd_folders[i];

		assert_int_equal(state_folder_reset(s, f, (uint32_t)i + 1, &err), 0);
		assert_int_equal(state_uid_add(s, f, (uint32_t)i + 10, fp_of((uint32_t)i), NULL,
					       &err), 0);
		assert_int_equal(state_folder_set_uidnext(s, f, (uint32_t)i + 100, &err), 0);
	}
	fsync_ok(s);
	state_close(s);
	pathf(p, sizeof(p), "%s/fn.journal", fx->sdir);
	text = slurp(p, &len);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		assert_true(c == '\n' || (c >= 0x20 && c < 0x7f));
	}
	assert_non_null(strstr(text, "V Sent%20Items 2\n"));
	assert_non_null(strstr(text, "V Entw%C3%BCrfe 3\n"));
	free(text);
	s = open_ok(fx, "fn");
	check_odd_folders(s);
	compact_ok(s);
	state_close(s);
	text = snapshot_text(fx, "fn");
	assert_non_null(strstr(text, "\nF Sent%20Items 2 101 11\n"));
	free(text);
	s = open_ok(fx, "fn");
	check_odd_folders(s);
	state_close(s);
}

static int
order_cb(void *ud, const char *folder)
{
	const char **prev = ud;

	if (*prev)
		assert_true(strcmp(*prev, folder) < 0);
	*prev = folder;
	return strcmp(folder, "c") == 0 ? 3 : 0;
}

static void
test_folder_foreach_order(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "fo");
	const char *prev = NULL;

	assert_int_equal(state_folder_foreach(s, order_cb, &prev), 0);
	assert_int_equal(state_folder_reset(s, "d", 1, &err), 0);
	assert_int_equal(state_folder_reset(s, "b", 1, &err), 0);
	assert_int_equal(state_folder_reset(s, "c", 1, &err), 0);
	assert_int_equal(state_folder_reset(s, "a", 1, &err), 0);
	assert_int_equal(state_folder_foreach(s, order_cb, &prev), 3);
	state_close(s);
}

static void
test_folder_torn_journal(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "tj");
	char j[256];
	off_t good;

	assert_int_equal(state_folder_reset(s, "INBOX", 5, &err), 0);
	assert_int_equal(state_uid_add(s, "INBOX", 1, fp_of(1), "n1", &err), 0);
	fsync_ok(s);
	state_close(s);
	pathf(j, sizeof(j), "%s/tj.journal", fx->sdir);
	good = size_of(j);
	put_file(j, "U INBOX 2 - n2\nU INBOX 3 0123456789abcdef n", true);
	s = open_ok(fx, "tj");
	assert_true(state_uid_has(s, "INBOX", 1));
	assert_true(state_uid_has(s, "INBOX", 2));
	assert_false(state_uid_has(s, "INBOX", 3));
	assert_false(state_fp_has(s, "INBOX", 0x0123456789abcdefULL));
	assert_true(state_name_recorded(s, "n2"));
	assert_false(state_name_recorded(s, "n"));
	assert_int_equal(size_of(j), good + (off_t)strlen("U INBOX 2 - n2\n"));
	assert_int_equal(state_uid_add(s, "INBOX", 4, 0, NULL, &err), 0);
	fsync_ok(s);
	state_close(s);
	s = open_ok(fx, "tj");
	assert_int_equal(state_uid_count(s, "INBOX"), 3);
	assert_true(state_uid_has(s, "INBOX", 4));
	state_close(s);
}

static void
test_folder_corrupt_lines(void **state)
{
	static const char *const bad_journal[] = {
		"V INBOX\n", "V INBOX 0\n", "V INBOX x\n", "V INBOX 4294967296\n", "V  INBOX 1\n",
		"V INBOX 1 2\n", "VV INBOX 1\n", "V IN%zzBOX 1\n", "N INBOX\n", "N INBOX -1\n",
		"U INBOX 1 -\n", "U INBOX 0 - -\n", "U INBOX 1 12 -\n", "U INBOX 1 - - x\n",
		"U INBOX 1 0000000000000000 -\n", "U INBOX 1 0123456789abcdeg -\n",
		"U INBOX 1 - %00\n", "E INBOX\n", "E INBOX 1 2\n", "D\n", "D INBOX 1\n", "D \n",
		"X INBOX 1\n", "V INBOX\t1\n",
	};
	static const char *const bad_snapshot[] = {
		"F INBOX 1 0\n", "F INBOX 0 0 -\n", "F INBOX 1 0 0\n", "F INBOX 1 0 5-4\n",
		"F INBOX 1 0 1-5,3\n", "F INBOX 1 0 1-5,5\n", "F INBOX 1 0 1,,3\n", "F INBOX 1 0 1,\n",
		"F INBOX 1 0 1-\n", "F INBOX 1 0 -1\n", "F INBOX 1 0 1-2-3\n",
		"F INBOX 1 0 1-4294967296\n", "F INBOX 1 0 -\nF INBOX 1 0 -\n",
		"F INBOX 1 0 5\nR INBOX 4\n", "R INBOX 1\n", "P INBOX 0123456789abcdef\n",
		"F INBOX 1 0 -\nP INBOX 123\n", "F INBOX 1 0 -\nP INBOX 0123456789abcdef,\n",
		"F INBOX 1 0 -\nR INBOX -\n", "F INBOX 1 0 - x\n", "F INBOX 1 0 1 -\n",
	};
	struct fixture *fx = *state;
	struct state *s = open_ok(fx, "c");
	char j[256], sn[256], text[256];

	state_close(s);
	pathf(j, sizeof(j), "%s/c.journal", fx->sdir);
	pathf(sn, sizeof(sn), "%s/c.state", fx->sdir);
	for (size_t i = 0; i < ARRAY_SIZE(bad_journal); i++) {
		pathf(text, sizeof(text), "V INBOX 1\nU INBOX 1 - -\n%sU INBOX 2 - -\n",
		      bad_journal[i]);
		put_file(j, text, false);
		expect_bad(fx, "c.journal", "3");
	}
	put_file(j, "", false);
	for (size_t i = 0; i < ARRAY_SIZE(bad_snapshot); i++) {
		size_t lines = 0;

		for (const char *c = bad_snapshot[i]; *c; c++)
			lines += *c == '\n';
		pathf(text, sizeof(text), "mailpull-state 1\n1 k\n%s", bad_snapshot[i]);
		put_file(sn, text, false);
		pathf(text, sizeof(text), "%zu", lines + 2);
		expect_bad(fx, "c.state", text);
	}
	/* What a snapshot may hold that this writer never writes. */
	put_file(sn, "mailpull-state 1\nF INBOX 1 0 1-5,6\nR INBOX 7-9,20\n"
		 "P INBOX 0123456789abcdef,0123456789ABCDEF\n", false);
	s = open_ok(fx, "c");
	assert_int_equal(state_uid_count(s, "INBOX"), 10);
	assert_true(state_fp_has(s, "INBOX", 0x0123456789abcdefULL));
	state_close(s);
}

/* G lines: the flags a recorded name is to be published with. */
static void
test_name_flags(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "nf");
	char flags[STATE_FLAGS_MAX + 1], j[256], *text;

	assert_int_equal(state_folder_reset(s, "INBOX", 1, &err), 0);
	assert_int_equal(state_name_set_flags(s, "1.M1 x.h", "FS", &err), 0);
	assert_int_equal(state_uid_add(s, "INBOX", 1, 0, "1.M1 x.h", &err), 0);
	assert_int_equal(state_name_set_flags(s, "1.M2.h", NULL, &err), 0);
	assert_int_equal(state_name_set_flags(s, "1.M2.h", "", &err), 0);
	assert_int_equal(state_uid_add(s, "INBOX", 2, 0, "1.M2.h", &err), 0);
	assert_int_equal(state_name_set_flags(s, "1.M3.h", "F:", &err), -EINVAL);
	assert_int_equal(state_name_set_flags(s, "-", "F", &err), -EINVAL);
	assert_int_equal(state_name_flags(s, "1.M1 x.h", flags), 2);
	assert_string_equal(flags, "FS");
	fsync_ok(s);
	state_close(s);
	pathf(j, sizeof(j), "%s/nf.journal", fx->sdir);
	text = slurp(j, NULL);
	assert_non_null(strstr(text, "G 1.M1%20x.h FS\nU INBOX 1 - 1.M1%20x.h\n"));
	free(text);
	s = open_ok(fx, "nf");
	assert_int_equal(state_name_flags(s, "1.M1 x.h", flags), 2);
	assert_string_equal(flags, "FS");
	assert_int_equal(state_name_flags(s, "1.M2.h", flags), 0);
	assert_string_equal(flags, "");
	/* Letters come back in ASCII order whatever order they were given in. */
	assert_int_equal(state_name_set_flags(s, "1.M4.h", "SaRD", &err), 0);
	assert_int_equal(state_name_flags(s, "1.M4.h", flags), 4);
	assert_string_equal(flags, "DRSa");
	/* Compaction forgets them with the names. */
	compact_ok(s);
	assert_int_equal(state_name_flags(s, "1.M1 x.h", flags), 0);
	state_close(s);
	/* A malformed G line is corrupt like any other. */
	s = open_ok(fx, "c");
	state_close(s);
	pathf(j, sizeof(j), "%s/c.journal", fx->sdir);
	put_file(j, "G 1.M1.h\n", false);
	expect_bad(fx, "c.journal", "1");
	put_file(j, "G 1.M1.h F5\n", false);
	expect_bad(fx, "c.journal", "1");
}

static void
test_names_recorded(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "nr");

	assert_int_equal(state_folder_reset(s, "INBOX", 1, &err), 0);
	assert_int_equal(state_uid_add(s, "INBOX", 1, fp_of(1), "1.M1.h", &err), 0);
	assert_true(state_name_recorded(s, "1.M1.h"));
	fsync_ok(s);
	/* Recorded again under a known UID: the name counts all the same. */
	assert_int_equal(state_uid_add(s, "INBOX", 1, fp_of(1), "1.M1b.h", &err), 0);
	assert_int_equal(state_uid_add(s, "INBOX", 2, 0, "1.M2 x\xc3\xa9.h", &err), 0);
	fsync_ok(s);
	state_close(s);
	s = open_ok(fx, "nr");
	assert_true(state_name_recorded(s, "1.M1.h"));
	assert_true(state_name_recorded(s, "1.M1b.h"));
	assert_true(state_name_recorded(s, "1.M2 x\xc3\xa9.h"));
	assert_false(state_name_recorded(s, "1.M3.h"));
	compact_ok(s);
	assert_false(state_name_recorded(s, "1.M1.h"));
	state_close(s);
	s = open_ok(fx, "nr");
	assert_false(state_name_recorded(s, "1.M1.h"));
	assert_false(state_name_recorded(s, "1.M2 x\xc3\xa9.h"));
	assert_true(state_uid_has(s, "INBOX", 2));
	state_close(s);
}

static void
test_folder_remove(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "fr");
	off_t before;

	assert_int_equal(state_folder_reset(s, "Gone", 1, &err), 0);
	assert_int_equal(state_folder_reset(s, "Kept", 2, &err), 0);
	assert_int_equal(state_uid_add(s, "Gone", 1, fp_of(1), NULL, &err), 0);
	assert_int_equal(state_uid_add(s, "Kept", 1, fp_of(1), NULL, &err), 0);
	fsync_ok(s);
	assert_int_equal(state_folder_remove(s, "Gone", &err), 0);
	assert_int_equal(state_folder_get(s, "Gone", NULL, NULL), -ENOENT);
	assert_false(state_uid_has(s, "Gone", 1));
	assert_false(state_fp_has(s, "Gone", fp_of(1)));
	assert_int_equal(state_uid_add(s, "Gone", 2, 0, NULL, &err), -ENOENT);
	fsync_ok(s);
	before = journal_size(fx, "fr");
	assert_int_equal(state_folder_remove(s, "Gone", &err), 0);
	assert_int_equal(state_folder_remove(s, "Never", &err), 0);
	fsync_ok(s);
	assert_int_equal(journal_size(fx, "fr"), before);
	state_close(s);

	for (int round = 0; round < 2; round++) {
		s = open_ok(fx, "fr");
		assert_int_equal(state_folder_get(s, "Gone", NULL, NULL), -ENOENT);
		assert_false(state_fp_has(s, "Gone", fp_of(1)));
		assert_true(state_uid_has(s, "Kept", 1));
		assert_true(state_fp_has(s, "Kept", fp_of(1)));
		if (round == 0)
			compact_ok(s);
		state_close(s);
	}
	s = open_ok(fx, "fr");
	/* Started again, the folder knows nothing of its past. */
	assert_int_equal(state_folder_reset(s, "Gone", 1, &err), 0);
	assert_false(state_fp_has(s, "Gone", fp_of(1)));
	state_close(s);
}

/* A crash after the rename, before the journal was emptied, changes nothing. */
static void
test_folder_compact_crash_replay(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "cr");
	uint32_t uv = 0, un = 0;
	char j[256];
	char *saved;

	pathf(j, sizeof(j), "%s/cr.journal", fx->sdir);
	/* B comes from the snapshot, so its U line meets no folder on replay. */
	assert_int_equal(state_folder_reset(s, "B", 1, &err), 0);
	compact_ok(s);
	assert_int_equal(state_folder_reset(s, "A", 1, &err), 0);
	assert_int_equal(state_uid_add(s, "A", 1, fp_of(1), "n1", &err), 0);
	assert_int_equal(state_uid_add(s, "A", 2, fp_of(2), NULL, &err), 0);
	assert_int_equal(state_uid_remove(s, "A", 1, &err), 0);
	assert_int_equal(state_folder_set_uidnext(s, "A", 3, &err), 0);
	assert_int_equal(state_folder_reset(s, "A", 2, &err), 0);
	assert_int_equal(state_uid_add(s, "A", 7, fp_of(7), NULL, &err), 0);
	assert_int_equal(state_uid_add(s, "B", 1, fp_of(1), "nb", &err), 0);
	assert_int_equal(state_uid_remove(s, "B", 1, &err), 0);
	assert_int_equal(state_folder_set_uidnext(s, "B", 2, &err), 0);
	assert_int_equal(state_folder_remove(s, "B", &err), 0);
	assert_int_equal(state_folder_reset(s, "C", 4, &err), 0);
	assert_int_equal(state_uid_add(s, "C", 5, 0, NULL, &err), 0);
	assert_int_equal(state_uid_remove(s, "C", 5, &err), 0);
	fsync_ok(s);
	saved = slurp(j, NULL);
	compact_ok(s);
	state_close(s);
	put_file(j, saved, false);
	free(saved);
	s = open_ok(fx, "cr");
	assert_int_equal(state_folder_get(s, "A", &uv, &un), 0);
	assert_int_equal(uv, 2);
	assert_int_equal(un, 0);
	assert_int_equal(state_uid_count(s, "A"), 1);
	assert_true(state_uid_has(s, "A", 7));
	assert_true(state_fp_has(s, "A", fp_of(1)));
	assert_true(state_fp_has(s, "A", fp_of(2)));
	assert_int_equal(state_folder_get(s, "B", NULL, NULL), -ENOENT);
	assert_int_equal(state_folder_get(s, "C", &uv, NULL), 0);
	assert_int_equal(state_uid_count(s, "C"), 0);
	assert_true(state_name_recorded(s, "nb"));
	state_close(s);
}

static int
collect_uid(void *ud, uint32_t uid)
{
	uint32_t *v = ud;

	v[++v[0]] = uid;
	return 0;
}

/* Skipped UIDs: S/T journal lines, S snapshot lines, reset by V, kept by compaction. */
static void
test_skipped(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "sk");
	uint32_t got[16] = { 0 };
	char j[256], *saved;

	pathf(j, sizeof(j), "%s/sk.journal", fx->sdir);
	assert_int_equal(state_skip_add(s, "INBOX", 5, &err), -ENOENT);
	assert_int_equal(state_folder_reset(s, "INBOX", 9, &err), 0);
	assert_int_equal(state_folder_reset(s, "A b", 9, &err), 0);
	assert_int_equal(state_skip_add(s, "INBOX", 0, &err), -EINVAL);
	for (uint32_t u = 3; u <= 7; u++)
		assert_int_equal(state_skip_add(s, "INBOX", u, &err), 0);
	assert_int_equal(state_skip_add(s, "INBOX", 5, &err), 0);
	assert_int_equal(state_skip_add(s, "INBOX", UINT32_MAX, &err), 0);
	assert_int_equal(state_skip_remove(s, "INBOX", 5, &err), 0);
	assert_int_equal(state_skip_remove(s, "INBOX", 99, &err), 0);
	assert_int_equal(state_skip_add(s, "A b", 2, &err), 0);
	assert_int_equal(state_skip_count(s, "INBOX"), 5);
	assert_true(state_skip_has(s, "INBOX", 4));
	assert_false(state_skip_has(s, "INBOX", 5));
	assert_false(state_uid_has(s, "INBOX", 4));
	assert_false(state_skip_has(s, "nope", 4));
	fsync_ok(s);
	saved = slurp(j, NULL);
	assert_non_null(strstr(saved, "S INBOX 3\n"));
	assert_non_null(strstr(saved, "T INBOX 5\n"));
	state_close(s);

	for (int round = 0; round < 3; round++) {
		s = open_ok(fx, "sk");
		assert_int_equal(state_skip_count(s, "INBOX"), 5);
		memset(got, 0, sizeof(got));
		assert_int_equal(state_skip_foreach(s, "INBOX", collect_uid, got), 0);
		assert_int_equal(got[0], 5);
		assert_int_equal(got[1], 3);
		assert_int_equal(got[2], 4);
		assert_int_equal(got[3], 6);
		assert_int_equal(got[4], 7);
		assert_int_equal(got[5], UINT32_MAX);
		assert_true(state_skip_has(s, "A b", 2));
		if (round == 0)
			compact_ok(s);
		if (round == 1) {
			/* A crash between snapshot and journal truncation replays over it. */
			put_file(j, saved, false);
		}
		state_close(s);
	}
	free(saved);
	s = open_ok(fx, "sk");
	/* A new UIDVALIDITY empties the set, in memory and on replay. */
	assert_int_equal(state_folder_reset(s, "INBOX", 10, &err), 0);
	assert_int_equal(state_skip_count(s, "INBOX"), 0);
	assert_int_equal(state_skip_add(s, "INBOX", 1, &err), 0);
	fsync_ok(s);
	state_close(s);
	s = open_ok(fx, "sk");
	assert_int_equal(state_skip_count(s, "INBOX"), 1);
	assert_true(state_skip_has(s, "INBOX", 1));
	assert_false(state_skip_has(s, "INBOX", 3));
	assert_int_equal(state_folder_remove(s, "A b", &err), 0);
	fsync_ok(s);
	state_close(s);
	s = open_ok(fx, "sk");
	assert_false(state_skip_has(s, "A b", 2));
	state_close(s);
}

/* A snapshot from before skipped UIDs existed loads; a bad S or T line is refused. */
static void
test_skipped_lines(void **state)
{
	struct fixture *fx = *state;
	char p[256], j[256];
	struct mp_err err = { 0 };
	struct state *s;
	static const char *const bad[] = {
		"S INBOX 0\n", "S INBOX x\n", "T INBOX\n", "S INBOX 4294967296\n",
	};

	pathf(p, sizeof(p), "%s/old.state", fx->sdir);
	pathf(j, sizeof(j), "%s/old.journal", fx->sdir);
	state_close(open_ok(fx, "old"));
	put_file(p, "mailpull-state 1\nF INBOX 7 10 1-9\n", false);
	s = open_ok(fx, "old");
	assert_int_equal(state_skip_count(s, "INBOX"), 0);
	assert_int_equal(state_uid_count(s, "INBOX"), 9);
	state_close(s);
	put_file(p, "mailpull-state 1\nF INBOX 7 10 1-9\nS INBOX 20-22,30\nS INBOX 40\n", false);
	s = open_ok(fx, "old");
	assert_int_equal(state_skip_count(s, "INBOX"), 5);
	assert_true(state_skip_has(s, "INBOX", 40));
	state_close(s);
	put_file(p, "mailpull-state 1\nF INBOX 7 10 1-9\nS INBOX 30,20\n", false);
	assert_int_equal(state_open(fx->sdir, "old", false, &s, &err), -EBADMSG);
	put_file(p, "mailpull-state 1\nS INBOX 30\n", false);
	assert_int_equal(state_open(fx->sdir, "old", false, &s, &err), -EBADMSG);
	put_file(p, "mailpull-state 1\nF INBOX 7 10 1-9\n", false);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		put_file(j, bad[i], false);
		assert_int_equal(state_open(fx->sdir, "old", false, &s, &err), -EBADMSG);
	}
	/* S and T lines of a folder a later D removed are skipped on replay. */
	put_file(j, "S Gone 3\nT Gone 3\n", false);
	s = open_ok(fx, "old");
	assert_int_equal(state_skip_count(s, "Gone"), 0);
	state_close(s);
}

static void
test_folder_bad_arguments(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "ba");

	assert_int_equal(state_folder_reset(s, "", 1, &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(state_folder_reset(s, NULL, 1, &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(state_folder_reset(s, "INBOX", 0, &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(state_uid_add(s, "x\x1b[2J", 1, 0, NULL, &err), -ENOENT);
	assert_null(strchr(err.msg, '\x1b'));
	mp_err_clear(&err);
	assert_int_equal(state_uid_remove(s, "INBOX", 1, &err), -ENOENT);
	mp_err_clear(&err);
	assert_int_equal(state_folder_reset(s, "INBOX", 1, &err), 0);
	assert_int_equal(state_uid_add(s, "INBOX", 0, 0, NULL, &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(state_uid_add(s, "INBOX", 1, 0, "-", &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(state_uid_add(s, "INBOX", 1, 0, "", &err), -EINVAL);
	assert_int_equal(state_uid_count(s, "INBOX"), 0);
	assert_false(state_uid_has(s, NULL, 1));
	assert_int_equal(state_folder_remove(s, "", NULL), -EINVAL);
	state_close(s);
}

static void
test_fingerprint(void **state)
{
	static const char id[] = "<abc@example.com>";

	(void)state;
	/* FNV-1a 64 of "<abc@example.com>\n12345" and of "\n0". */
	assert_true(state_fingerprint(id, strlen(id), 12345) == 0x59d9a1d9d30358e3ULL);
	assert_true(state_fingerprint(NULL, 0, 0) == 0x08549407b5086ab7ULL);
	assert_true(state_fingerprint(id, strlen(id), 12346) != state_fingerprint(id, strlen(id),
										    12345));
	/* The length counts, not a NUL. */
	assert_true(state_fingerprint("<a>x", 3, 1) == state_fingerprint("<a>", 3, 1));
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t
heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static void
test_folder_scale(void **state)
{
	enum { N = 100000 };
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "big");
	double t0 = now_s(), t_add, t_load;
	size_t heap0, heap1;
	char *text, *f;

	assert_int_equal(state_folder_reset(s, "INBOX", 77, &err), 0);
	for (uint32_t u = 1; u <= N; u++)
		assert_int_equal(state_uid_add(s, "INBOX", u, fp_of(u), NULL, &err), 0);
	assert_int_equal(state_folder_set_uidnext(s, "INBOX", N + 1, &err), 0);
	fsync_ok(s);
	t_add = now_s() - t0;
	state_close(s);

	/* Journal replay. */
	s = open_ok(fx, "big");
	assert_int_equal(state_uid_count(s, "INBOX"), N);
	compact_ok(s);
	state_close(s);
	text = snapshot_text(fx, "big");
	f = strstr(text, "\nF INBOX 77 100001 1-100000\n");
	assert_non_null(f);
	assert_null(strstr(text, "\nR "));
	/* About 17 bytes per fingerprint, no more. */
	assert_true(strlen(text) < (size_t)N * 18);
	free(text);

	heap0 = heap_in_use();
	t0 = now_s();
	s = open_ok(fx, "big");
	t_load = now_s() - t0;
	heap1 = heap_in_use();
	for (uint32_t u = 1; u <= N + 10; u++) {
		assert_int_equal(state_uid_has(s, "INBOX", u), u <= N);
		assert_int_equal(state_fp_has(s, "INBOX", fp_of(u)), u <= N);
	}
	t_load = now_s() - t0;
	print_message("100000 UIDs: add+sync %.3fs, load+200000 lookups %.3fs, heap %zu bytes\n",
		      t_add, t_load, heap1 - heap0);
	/* Generous bounds: sanitizer builds run several times slower. */
	assert_true(t_add < 10.0);
	assert_true(t_load < 10.0);
#ifndef UNDER_ASAN
	/* One range, and a fingerprint table of at most 16 bytes per message. */
	assert_true(heap1 - heap0 < (size_t)N * 16 + 64 * 1024);
#endif
	state_close(s);
}

/*
 * The journal's version line: a new journal begins with it, compaction
 * keeps it, and a journal from before it existed (no version line) still
 * replays and gets one when compaction empties it.
 */
static void
test_journal_version(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "v");
	char j[256], sn[256];
	uint32_t uv = 0, un = 0;
	char *text;

	pathf(j, sizeof(j), "%s/v.journal", fx->sdir);
	pathf(sn, sizeof(sn), "%s/v.state", fx->sdir);
	text = slurp(j, NULL);
	assert_string_equal(text, JHDR);
	free(text);
	assert_int_equal(state_add(s, "a", 1, "na", &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	state_close(s);
	text = slurp(j, NULL);
	assert_string_equal(text, JHDR "+ 1 a na\n");
	free(text);
	s = open_ok(fx, "v");
	assert_true(state_has(s, "a", NULL));
	assert_true(state_name_recorded(s, "na"));
	assert_int_equal(state_compact(s, &err), 0);
	state_close(s);
	text = slurp(j, NULL);
	assert_string_equal(text, JHDR);
	free(text);

	/* A journal written before the version line existed. */
	unlink(sn);
	put_file(j, "+ 5 old nold\nL 6 sized - 42\nV INBOX 7\nU INBOX 3 - nu\nN INBOX 4\n- gone\n",
		 false);
	s = open_ok(fx, "v");
	assert_true(state_has(s, "old", NULL));
	assert_true(state_name_recorded(s, "nold"));
	assert_true(state_name_recorded(s, "nu"));
	assert_true(state_uid_has(s, "INBOX", 3));
	assert_int_equal(state_folder_get(s, "INBOX", &uv, &un), 0);
	assert_int_equal(uv, 7);
	assert_int_equal(un, 4);
	/* Appended to as it is, without a version line in the middle. */
	assert_int_equal(state_add(s, "new", 8, NULL, &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	text = slurp(j, NULL);
	assert_true(strncmp(text, "+ 5 old nold\n", 13) == 0);
	assert_null(strstr(text, "mailpull-journal"));
	free(text);
	assert_int_equal(state_compact(s, &err), 0);
	state_close(s);
	text = slurp(j, NULL);
	assert_string_equal(text, JHDR);
	free(text);
	s = open_ok(fx, "v");
	assert_int_equal(state_count(s), 3);
	assert_true(state_uid_has(s, "INBOX", 3));
	state_close(s);

	/* Empty, or a version line a crash cut short: it is written again. */
	put_file(j, "", false);
	state_close(open_ok(fx, "v"));
	text = slurp(j, NULL);
	assert_string_equal(text, JHDR);
	free(text);
	put_file(j, "mailpull-jour", false);
	s = open_ok(fx, "v");
	assert_int_equal(state_count(s), 3);
	state_close(s);
	text = slurp(j, NULL);
	assert_string_equal(text, JHDR);
	free(text);
}

/*
 * A journal of a version newer than this code knows is refused with a
 * configuration error that says so, and left as it is; a damaged version
 * line, or one past the first line, is a malformed record.
 */
static void
test_journal_version_refused(void **state)
{
	static const char future[] = "mailpull-journal 3\n+ 1 a na\nQ what this cannot read\n";
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "c");
	char j[256], want[300];
	char *text;

	state_close(s);
	s = NULL;
	pathf(j, sizeof(j), "%s/c.journal", fx->sdir);
	put_file(j, future, false);
	assert_int_equal(state_open(fx->sdir, "c", false, &s, &err), -EINVAL);
	assert_null(s);
	assert_int_equal(err.code, -EINVAL);
	assert_int_equal(err.ex, MP_EX_CONFIG);
	pathf(want, sizeof(want), "%s: journal version 3 is newer", j);
	if (!strstr(err.msg, want))
		fail_msg("'%s' does not say '%s'", err.msg, want);
	text = slurp(j, NULL);
	assert_string_equal(text, future);
	free(text);
	put_file(j, "mailpull-journal 18446744073709551616\n", false);
	expect_bad(fx, "c.journal", "1");
	put_file(j, "mailpull-journal x\n", false);
	expect_bad(fx, "c.journal", "1");
	put_file(j, "mailpull-journal 0\n", false);
	expect_bad(fx, "c.journal", "1");
	put_file(j, "mailpull-journal  1\n", false);
	expect_bad(fx, "c.journal", "1");
	/* Compaction keeps the line as it is: only the form mailpull writes is its own. */
	put_file(j, "mailpull-journal 01\n", false);
	expect_bad(fx, "c.journal", "1");
	put_file(j, "+ 1 a na\nmailpull-journal 1\n", false);
	expect_bad(fx, "c.journal", "2");
	put_file(j, JHDR JHDR, false);
	expect_bad(fx, "c.journal", "2");
}

struct send_seen {
	char list[512];
};

static int
send_list_cb(void *ud, const char *base, enum state_send st, const char *text)
{
	struct send_seen *seen = ud;
	size_t n = strlen(seen->list);

	snprintf(seen->list + n, sizeof(seen->list) - n, "%s=%s(%s);", base,
		 state_send_to_string(st), text);
	return 0;
}

static void
expect_sends(const struct state *s, const char *want)
{
	struct send_seen seen = { "" };

	assert_int_equal(state_send_foreach(s, send_list_cb, &seen), 0);
	assert_string_equal(seen.list, want);
}

/*
 * Send records: set, replaced, removed (queued), kept across a reopen and
 * a compaction, in strcmp() order; their texts capped and cleaned.
 */
static void
test_send_records(void **state)
{
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s = open_ok(fx, "snd");
	char long_text[600], j[256], sn[256];
	const char *text;
	char *file;

	pathf(j, sizeof(j), "%s/snd.journal", fx->sdir);
	pathf(sn, sizeof(sn), "%s/snd.state", fx->sdir);
	assert_int_equal(state_send_get(s, "m1", &text), STATE_SEND_QUEUED);
	assert_string_equal(text, "");
	assert_int_equal(state_send_set(s, "m2", STATE_SEND_SUBMITTING, NULL, &err), 0);
	assert_int_equal(state_send_set(s, "m1", STATE_SEND_FAILED, "550 5.7.1 no\tway", &err), 0);
	assert_int_equal(state_send_set(s, "m3", STATE_SEND_COPIED, "-", &err), 0);
	assert_int_equal(state_send_set(s, "m4", STATE_SEND_ACCEPTED, "b\xc3\xa9 %x y", &err), 0);
	assert_int_equal(state_send_set(s, "m2", STATE_SEND_HELD, "crash", &err), 0);
	/* Queued with no record changes nothing. */
	assert_int_equal(state_send_set(s, "m9", STATE_SEND_QUEUED, "ignored", &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	expect_sends(s, "m1=failed(550 5.7.1 no?way);m2=held(crash);m3=copied(-);"
		     "m4=accepted(b\xc3\xa9 %x y);");
	state_close(s);
	file = slurp(j, NULL);
	assert_true(strncmp(file, "mailpull-journal 2\n", 19) == 0);
	free(file);
	s = open_ok(fx, "snd");
	expect_sends(s, "m1=failed(550 5.7.1 no?way);m2=held(crash);m3=copied(-);"
		     "m4=accepted(b\xc3\xa9 %x y);");
	assert_int_equal(state_send_set(s, "m3", STATE_SEND_QUEUED, NULL, &err), 0);
	assert_int_equal(state_send_set(s, "m2", STATE_SEND_RETRY, NULL, &err), 0);
	assert_int_equal(state_compact(s, &err), 0);
	file = slurp(sn, NULL);
	assert_true(strncmp(file, "mailpull-state 2\n", 17) == 0);
	assert_non_null(strstr(file, "\nO m2 retry -\n"));
	free(file);
	assert_int_equal(size_of(j), (off_t)strlen("mailpull-journal 2\n"));
	state_close(s);
	s = open_ok(fx, "snd");
	expect_sends(s, "m1=failed(550 5.7.1 no?way);m2=retry();m4=accepted(b\xc3\xa9 %x y);");
	assert_int_equal(state_send_get(s, "m1", &text), STATE_SEND_FAILED);
	assert_string_equal(text, "550 5.7.1 no?way");
	/* A long text is cut to 400 bytes, never inside a UTF-8 sequence. */
	memset(long_text, 'a', sizeof(long_text));
	memcpy(long_text + 399, "\xc3\xa9", 2);
	long_text[sizeof(long_text) - 1] = '\0';
	assert_int_equal(state_send_set(s, "m5", STATE_SEND_FAILED, long_text, &err), 0);
	state_send_get(s, "m5", &text);
	assert_int_equal(strlen(text), 399);
	/* Invalid bases and states. */
	assert_int_equal(state_send_set(s, "", STATE_SEND_HELD, NULL, &err), -EINVAL);
	assert_int_equal(state_send_set(s, "a/b", STATE_SEND_HELD, NULL, &err), -EINVAL);
	assert_int_equal(state_send_set(s, "..", STATE_SEND_HELD, NULL, &err), -EINVAL);
	assert_int_equal(state_send_set(s, "x", STATE_SEND_MAX, NULL, &err), -EINVAL);
	assert_string_equal(state_send_to_string(STATE_SEND_MAX), "?");
	/* Every record gone: the snapshot is version 1 again. */
	for (const char *b = "1245"; *b; b++) {
		char base[3] = { 'm', *b, '\0' };

		assert_int_equal(state_send_set(s, base, STATE_SEND_QUEUED, NULL, &err), 0);
	}
	assert_int_equal(state_compact(s, &err), 0);
	file = slurp(sn, NULL);
	assert_string_equal(file, "mailpull-state 1\n");
	free(file);
	state_close(s);
}

/*
 * A journal of version 1 (or one without a version line) keeps its
 * records and its version until the first send record, which rewrites it
 * as version 2 first; an account that never sends keeps version 1.
 */
static void
test_send_journal_upgrade(void **state)
{
	static const char *const old[] = { JHDR "+ 1 a na\n", "+ 1 a na\n" };
	struct fixture *fx = *state;
	struct mp_err err = { 0 };
	struct state *s;
	char j[256];
	char *file;

	pathf(j, sizeof(j), "%s/u.journal", fx->sdir);
	for (size_t i = 0; i < 2; i++) {
		s = open_ok(fx, "u");
		state_close(s);
		put_file(j, old[i], false);
		s = open_ok(fx, "u");
		assert_int_equal(state_add(s, "b", 2, NULL, &err), 0);
		assert_int_equal(state_sync(s, &err), 0);
		file = slurp(j, NULL);
		/* Not sending yet: the journal keeps its version. */
		assert_true(strncmp(file, old[i], strlen(old[i])) == 0);
		assert_string_equal(file + strlen(old[i]), "+ 2 b -\n");
		free(file);
		assert_int_equal(state_send_set(s, "q1", STATE_SEND_SUBMITTING, NULL, &err), 0);
		assert_int_equal(state_sync(s, &err), 0);
		state_close(s);
		file = slurp(j, NULL);
		assert_string_equal(file, "mailpull-journal 2\n+ 1 a na\n+ 2 b -\n"
				    "O q1 submitting -\n");
		free(file);
		s = open_ok(fx, "u");
		assert_true(state_has(s, "a", NULL));
		assert_true(state_has(s, "b", NULL));
		assert_true(state_name_recorded(s, "na"));
		assert_int_equal(state_send_get(s, "q1", NULL), STATE_SEND_SUBMITTING);
		state_close(s);
		unlink(j);
	}
	/* Never sending: version 1 stays. */
	s = open_ok(fx, "never");
	assert_int_equal(state_add(s, "k", 1, "n", &err), 0);
	assert_int_equal(state_sync(s, &err), 0);
	assert_int_equal(state_compact(s, &err), 0);
	state_close(s);
	pathf(j, sizeof(j), "%s/never.journal", fx->sdir);
	file = slurp(j, NULL);
	assert_string_equal(file, JHDR);
	free(file);
}

static void
test_send_bad_lines(void **state)
{
	static const char *const bad[] = {
		"O m1 bogus -\n", "O m1 held\n", "O  held -\n", "O m1 held - x\n",
		"O m%zz held -\n", "O m1 held a b\n",
	};
	struct fixture *fx = *state;
	struct state *s = open_ok(fx, "c");
	char j[256], text[128];

	state_close(s);
	pathf(j, sizeof(j), "%s/c.journal", fx->sdir);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		pathf(text, sizeof(text), "mailpull-journal 2\n%s", bad[i]);
		put_file(j, text, false);
		expect_bad(fx, "c.journal", "2");
	}
	put_file(j, "mailpull-journal 2\nO m1 held -\nO m1 queued -\nO m2 failed a%20b\n", false);
	s = open_ok(fx, "c");
	expect_sends(s, "m2=failed(a b);");
	state_close(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readd_keeps_first_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_interrupted, setup, teardown),
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
		cmocka_unit_test_setup_teardown(test_folder_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uidvalidity_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uidnext, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_foreach_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_torn_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_corrupt_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_name_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_compact_crash_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fingerprint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forget_name_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forget_name_uid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_scale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_skipped_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_version_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_journal_upgrade, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_bad_lines, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
