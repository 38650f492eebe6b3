/*
 * Mailbox names to Maildir++ folders (folder.h): the layout table, names
 * that try to leave the Maildir, the inverse mapping, and LIST wildcard
 * matching checked against a plain backtracking reference.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "mailpull/folder.h"

struct map {
	const char *name;
	char delim;
	int ret;
	const char *dir;   /* when ret == 0 */
	bool inverse;      /* from_maildir(dir) gives name back */
};

static const struct map maps[] = {
	{ "INBOX", '/', 0, "", true },
	{ "inbox", '/', 0, "", false },
	{ "InBoX", '.', 0, "", false },
	{ "INBOX", '\0', 0, "", true },
	{ "Archive", '/', 0, ".Archive", true },
	{ "Archive/2024", '/', 0, ".Archive.2024", true },
	{ "Archive.2024", '.', 0, ".Archive.2024", true },
	{ "Archive.2024", '/', 0, ".Archive\\2e2024", true },
	{ "Archive/2024", '.', 0, ".Archive\\2f2024", true },
	{ "Archive/2024", '\0', 0, ".Archive\\2f2024", true },
	{ "a\\b", '\\', 0, ".a.b", true },           /* Exchange's delimiter */
	{ "a\\b", '/', 0, ".a\\5cb", true },
	{ "INBOX/Sub", '/', 0, ".INBOX.Sub", true },
	{ "INBOX.Sub", '.', 0, ".INBOX.Sub", true },
	{ "inbox/Sub", '/', 0, ".INBOX.Sub", false },
	{ "INBOX/Sub", '.', 0, ".INBOX\\2fSub", true },
	{ "INBOX/Sub", '\0', 0, ".INBOX\\2fSub", true },
	{ "INBOXES", '/', 0, ".INBOXES", true },
	{ "Sub/INBOX", '/', 0, ".Sub.INBOX", true },
	{ "..", '/', 0, ".\\2e\\2e", true },
	{ ".", '/', 0, ".\\2e", true },
	{ "../etc", '/', 0, ".\\2e\\2e.etc", true },
	{ "..", '.', -EINVAL, NULL, false },
	{ ".hidden", '/', 0, ".\\2ehidden", true },
	{ "~user", '/', 0, ".\\7euser", true },
	{ "a/~b", '/', 0, ".a.~b", true },
	{ "tab\there", '/', 0, ".tab\\09here", true },
	{ "esc\x1b[2J", '/', 0, ".esc\\1b[2J", true },
	{ "del\x7f", '/', 0, ".del\\7f", true },
	{ "Sent Items", '/', 0, ".Sent Items", true },
	{ "\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5", '/', 0,
	  ".\xe5\x8f\xb0\xe5\x8c\x97.\xe6\x97\xa5", true },
	{ "", '/', -EINVAL, NULL, false },
	{ "/etc", '/', -EINVAL, NULL, false },
	{ "/", '/', -EINVAL, NULL, false },
	{ "a//b", '/', -EINVAL, NULL, false },
	{ "a/", '/', -EINVAL, NULL, false },
	{ "INBOX/", '/', -EINVAL, NULL, false },
	{ "a", '\n', -EINVAL, NULL, false },
	{ "a", '\r', -EINVAL, NULL, false },
	{ "a", (char)0xc3, -EINVAL, NULL, false },
	{ "INBOX", 'I', -EINVAL, NULL, false },      /* would split INBOX itself */
	{ "a1b", '1', -EINVAL, NULL, false },
	{ "a b", ' ', -EINVAL, NULL, false },
	{ "a\tb", '\t', -EINVAL, NULL, false },
	{ "a^b", '^', 0, ".a.b", true },
	{ "caf\xe9", '/', -EBADMSG, NULL, false },
	{ "\xed\xa0\x80", '/', -EBADMSG, NULL, false },
};

static void
test_to_maildir(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		const struct map *m = &maps[i];
		char *dir = (char *)0x1, *name = NULL;

		assert_int_equal(folder_to_maildir(m->name, m->delim, &dir), m->ret);
		if (m->ret < 0) {
			assert_ptr_equal(dir, (char *)0x1);
			continue;
		}
		assert_string_equal(dir, m->dir);
		assert_int_equal(folder_from_maildir(dir, m->delim, &name), 0);
		if (m->inverse)
			assert_string_equal(name, m->name);
		else
			assert_int_equal(strcasecmp(name, m->name), 0);
		free(name);
		free(dir);
	}
}

static void
test_length_cap(void **state)
{
	char name[FOLDER_DIRNAME_MAX + 2], *dir = NULL;

	(void)state;
	memset(name, 'a', sizeof(name));
	/* ".": 254 name bytes make 255. */
	name[FOLDER_DIRNAME_MAX - 1] = '\0';
	assert_int_equal(folder_to_maildir(name, '/', &dir), 0);
	assert_int_equal(strlen(dir), FOLDER_DIRNAME_MAX);
	free(dir);
	dir = NULL;
	name[FOLDER_DIRNAME_MAX - 1] = 'a';
	name[FOLDER_DIRNAME_MAX] = '\0';
	assert_int_equal(folder_to_maildir(name, '/', &dir), -E2BIG);
	/* Escapes count: 85 dots are 255 bytes of "\2e" plus the leading dot. */
	memset(name, '.', 85);
	name[85] = '\0';
	assert_int_equal(folder_to_maildir(name, '/', &dir), -E2BIG);
	name[84] = '\0';
	assert_int_equal(folder_to_maildir(name, '/', &dir), 0);
	assert_int_equal(strlen(dir), 1 + 84 * 3);
	free(dir);
}

static void
test_from_maildir_bad(void **state)
{
	static const struct {
		const char *dir;
		char delim;
		int ret;
	} bad[] = {
		{ ".", '/', -EBADMSG },
		{ "..", '/', -EBADMSG },
		{ "...", '/', -EBADMSG },
		{ "Archive", '/', -EBADMSG },
		{ "cur", '/', -EBADMSG },
		{ ".a..b", '/', -EBADMSG },
		{ ".a.", '/', -EBADMSG },
		{ ".a/b", '/', -EBADMSG },
		{ ".a\\2", '/', -EBADMSG },
		{ ".a\\", '/', -EBADMSG },
		{ ".a\\zz", '/', -EBADMSG },
		{ ".a\\2E", '/', -EBADMSG },    /* upper-case hex is never written */
		{ ".a\\61", '/', -EBADMSG },    /* 'a' needs no escape */
		{ ".a\\00", '/', -EBADMSG },
		{ ".\\ff", '/', -EBADMSG },
		{ ".~x", '/', -EBADMSG },
		{ ".a\x01", '/', -EBADMSG },
		{ ".caf\xe9", '/', -EBADMSG },
		{ ".caf\\e9", '/', -EBADMSG },
		{ ".INBOX", '/', -EBADMSG },    /* INBOX is the root */
		{ ".inbox.x", '/', -EBADMSG },  /* written ".INBOX.x" */
		{ ".a.b", '\0', -EINVAL },      /* no hierarchy without a delimiter */
		{ ".a\\2fb", '/', -EINVAL },    /* "a/b" as one level cannot be said with '/' */
		{ ".a", '\n', -EINVAL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *name = (char *)0x1;

		assert_int_equal(folder_from_maildir(bad[i].dir, bad[i].delim, &name), bad[i].ret);
		assert_ptr_equal(name, (char *)0x1);
	}
}

static uint32_t
rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(*s >> 33);
}

/*
 * Random names over an alphabet of troublemakers: whatever maps must be
 * one safe path component that maps back to the same name.
 */
static void
test_random_names(void **state)
{
	static const char *const atoms[] = {
		".", "/", "\\", "~", " ", "a", "B", "\xc3\xa9", "\t", "\x1b", "INBOX", "inbox",
		"..",
	};
	static const char delims[] = { '/', '.', '\\', '\0' };
	uint64_t seed = 7;
	int mapped = 0;

	(void)state;
	for (int iter = 0; iter < 50000; iter++) {
		char name[128], *dir = NULL, *back = NULL;
		char delim = delims[rnd(&seed) % 4];
		size_t natoms = 1 + rnd(&seed) % 8, len = 0, skip;
		int r;

		for (size_t k = 0; k < natoms; k++) {
			const char *a = atoms[rnd(&seed) % (sizeof(atoms) / sizeof(atoms[0]))];

			memcpy(name + len, a, strlen(a));
			len += strlen(a);
		}
		name[len] = '\0';
		r = folder_to_maildir(name, delim, &dir);
		if (r < 0) {
			assert_int_equal(r, -EINVAL);
			continue;
		}
		mapped++;
		assert_null(strchr(dir, '/'));
		assert_string_not_equal(dir, ".");
		assert_string_not_equal(dir, "..");
		assert_false(dir[0] == '.' && dir[1] == '.');
		assert_true(strlen(dir) <= FOLDER_DIRNAME_MAX);
		assert_true(dir[0] == '\0' || dir[0] == '.');
		assert_int_equal(folder_from_maildir(dir, delim, &back), 0);
		/* A leading INBOX comes back as "INBOX"; the rest byte for byte. */
		skip = strncasecmp(name, "INBOX", 5) == 0 &&
		       (name[5] == '\0' || (delim != '\0' && name[5] == delim)) ? 5 : 0;
		assert_int_equal(strncasecmp(back, name, skip), 0);
		assert_string_equal(back + skip, name + skip);
		free(back);
		free(dir);
	}
	assert_true(mapped > 10000);
}

struct mcase {
	const char *pattern;
	const char *name;
	char delim;
	int ret;
};

static const struct mcase mcases[] = {
	{ "*", "", '/', 1 },
	{ "*", "a/b/c", '/', 1 },
	{ "%", "a", '/', 1 },
	{ "%", "a/b", '/', 0 },
	{ "%", "a/b", '\0', 1 },           /* NIL: no hierarchy, '%' is '*' */
	{ "%", "a.b", '/', 1 },
	{ "%", "a.b", '.', 0 },
	{ "Archive", "Archive", '/', 1 },
	{ "Archive", "archive", '/', 0 },  /* only INBOX is case-insensitive */
	{ "Archive", "Archive/2024", '/', 0 },
	{ "Archive/*", "Archive/2024/x", '/', 1 },
	{ "Archive/*", "Archive", '/', 0 },
	{ "Archive*", "Archive", '/', 1 },
	{ "Archive*", "Archive/2024", '/', 1 },
	{ "Archive%", "Archive/2024", '/', 0 },
	{ "Archive/%", "Archive/2024", '/', 1 },
	{ "Archive/%", "Archive/2024/x", '/', 0 },
	{ "Arch%ve", "Archive", '/', 1 },
	{ "%/%", "a/b", '/', 1 },
	{ "%/%", "a/b/c", '/', 0 },
	{ "*/%", "a/b/c", '/', 1 },
	{ "a%b", "ab", '/', 1 },
	{ "a%b", "axxb", '/', 1 },
	{ "a%b", "ax/xb", '/', 0 },
	{ "a*b", "ax/xb", '/', 1 },
	{ "", "", '/', 1 },
	{ "", "a", '/', 0 },
	{ "a", "", '/', 0 },
	{ "INBOX", "inbox", '/', 1 },
	{ "inbox", "INBOX", '/', 1 },
	{ "InBox", "iNbOx", '.', 1 },
	{ "inbox/*", "INBOX/x", '/', 1 },
	{ "INBOX/*", "inbox/x", '/', 1 },
	{ "inbox/X", "INBOX/x", '/', 0 },  /* below INBOX, case matters again */
	{ "inbox*", "INBOX", '/', 1 },
	{ "inbox%", "Inbox", '/', 1 },
	{ "inbox*", "INBOXES", '/', 0 },   /* a different, case-sensitive name */
	{ "INBOX*", "inboxes", '/', 0 },
	{ "inbox*", "inboxes", '/', 1 },
	{ "inbo%", "INBOX", '/', 0 },
	{ "\xe5\x8f\xb0%", "\xe5\x8f\xb0\xe5\x8c\x97", '/', 1 },
	{ "%\xe5\x8c\x97", "\xe5\x8f\xb0\xe5\x8c\x97", '/', 1 },
	{ "\xe5\x8f\xb0/%", "\xe5\x8f\xb0/\xe6\x97\xa5", '/', 1 },
};

static void
test_match_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(mcases) / sizeof(mcases[0]); i++) {
		const struct mcase *c = &mcases[i];

		if (folder_match(c->pattern, c->name, c->delim) != c->ret)
			fail_msg("pattern \"%s\" name \"%s\" delim '%c': want %d", c->pattern,
				 c->name, c->delim ? c->delim : '0', c->ret);
	}
}

static void
test_match_caps(void **state)
{
	char *pat = malloc(FOLDER_PATTERN_MAX + 2), *name = malloc(20001);

	(void)state;
	assert_non_null(pat);
	assert_non_null(name);
	memset(pat, '*', FOLDER_PATTERN_MAX + 1);
	pat[FOLDER_PATTERN_MAX + 1] = '\0';
	assert_int_equal(folder_match(pat, "a", '/'), -E2BIG);
	pat[FOLDER_PATTERN_MAX] = '\0';
	assert_int_equal(folder_match(pat, "a", '/'), 1);
	/* A pattern that makes a backtracking matcher take exponential time. */
	for (size_t i = 0; i < 40; i++)
		memcpy(pat + 2 * i, i < 39 ? "%a" : "%b", 2);
	pat[80] = '\0';
	memset(name, 'a', 20000);
	name[20000] = '\0';
	assert_int_equal(folder_match(pat, name, '/'), 0);
	name[19999] = 'b';
	assert_int_equal(folder_match(pat, name, '/'), 1);
	free(pat);
	free(name);
}

/* The reference: RFC 3501 section 6.3.8 read literally, by backtracking. */
static bool
ref_match(const char *p, const char *n, char delim)
{
	if (*p == '\0')
		return *n == '\0';
	if (*p == '*' || *p == '%') {
		for (const char *s = n;; s++) {
			if (ref_match(p + 1, s, delim))
				return true;
			if (*s == '\0' || (*p == '%' && delim != '\0' && *s == delim))
				return false;
		}
	}
	return *n != '\0' && *p == *n && ref_match(p + 1, n + 1, delim);
}

static void
test_match_reference(void **state)
{
	static const char palpha[] = "ab/.*%";
	static const char nalpha[] = "ab/.";
	uint64_t seed = 99;
	int hits = 0;

	(void)state;
	for (int iter = 0; iter < 200000; iter++) {
		char pat[10], name[12];
		size_t pl = rnd(&seed) % 9, nl = rnd(&seed) % 12;
		char delim = "/.\0"[rnd(&seed) % 3];
		int got;

		for (size_t i = 0; i < pl; i++)
			pat[i] = palpha[rnd(&seed) % 6];
		pat[pl] = '\0';
		for (size_t i = 0; i < nl; i++)
			name[i] = nalpha[rnd(&seed) % 4];
		name[nl] = '\0';
		got = folder_match(pat, name, delim);
		if (got != (int)ref_match(pat, name, delim))
			fail_msg("pattern \"%s\" name \"%s\" delim %d: got %d", pat, name, delim,
				 got);
		hits += got;
	}
	assert_true(hits > 1000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_to_maildir),
		cmocka_unit_test(test_length_cap),
		cmocka_unit_test(test_from_maildir_bad),
		cmocka_unit_test(test_random_names),
		cmocka_unit_test(test_match_table),
		cmocka_unit_test(test_match_caps),
		cmocka_unit_test(test_match_reference),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
