/* util_sanitize: server text made safe for a log or a terminal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "mailpull/util.h"

static void
check(const char *in, size_t len, const char *want)
{
	char out[256];

	assert_int_equal(util_sanitize(out, sizeof(out), in, len), strlen(want));
	assert_string_equal(out, want);
}

static void
test_sanitize(void **state)
{
	(void)state;
	check("plain text", 10, "plain text");
	check("\x1b[31mred\r\n", 10, "\\x1b[31mred\\x0d\\x0a");
	check("a\0b\x7f", 4, "a\\x00b\\x7f");
	/* Valid UTF-8 passes; C1 controls (raw or encoded) and bad bytes do not. */
	check("caf\xc3\xa9 \xe2\x82\xac", 9, "caf\xc3\xa9 \xe2\x82\xac");
	check("\x9b" "31m", 4, "\\x9b31m");
	check("\xc2\x9b" "31m", 5, "\\xc2\\x9b31m");
	check("\xff\xfe\xc3(", 4, "\\xff\\xfe\\xc3(");
	check("\xed\xa0\x80", 3, "\\xed\\xa0\\x80");
	check("\xe2\x82", 2, "\\xe2\\x82");
}

/* The bidi formatting characters are shown, not obeyed (CVE-2021-42574). */
static void
test_sanitize_bidi(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "a\xe2\x80\xaa" "gnp.exe", "a\\u202agnp.exe" },          /* LRE */
		{ "invoice\xe2\x80\xae" "fdp.exe", "invoice\\u202efdp.exe" }, /* RLO */
		{ "\xe2\x81\xa6" "x\xe2\x81\xa9", "\\u2066x\\u2069" },         /* LRI, PDI */
		{ "\xe2\x81\xa7\xe2\x81\xa8", "\\u2067\\u2068" },            /* RLI, FSI */
		{ "\xe2\x80\x8e\xe2\x80\x8f", "\\u200e\\u200f" },            /* LRM, RLM */
		{ "\xd8\x9c", "\\u061c" },                                /* ALM */
		{ "\x1b[2J\xe2\x80\xae!", "\\x1b[2J\\u202e!" },
		/* Neighbours that are harmless pass. */
		{ "\xe2\x80\x90\xe2\x80\x8d\xe2\x81\xaa\xd8\x9b", "\xe2\x80\x90\xe2\x80\x8d\xe2\x81\xaa\xd8\x9b" },
	};
	char out[7];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check(cases[i].in, strlen(cases[i].in), cases[i].want);
	assert_true(util_is_bidi_control(0x202e));
	assert_false(util_is_bidi_control(0x2029));
	/* Never cut: 6 bytes do not fit in 6 of room with the NUL. */
	assert_int_equal(util_sanitize(out, 6, "\xe2\x80\xae", 3), 0);
	assert_int_equal(util_sanitize(out, sizeof(out), "\xe2\x80\xae", 3), 6);
	assert_string_equal(out, "\\u202e");
}

static void
test_sanitize_truncates(void **state)
{
	char out[6];

	(void)state;
	assert_int_equal(util_sanitize(out, sizeof(out), "abcdefgh", 8), 5);
	assert_string_equal(out, "abcde");
	/* An escape or a UTF-8 sequence is never cut in half. */
	assert_int_equal(util_sanitize(out, sizeof(out), "ab\x1b", 3), 2);
	assert_string_equal(out, "ab");
	assert_int_equal(util_sanitize(out, sizeof(out), "abcd\xc3\xa9", 6), 4);
	assert_string_equal(out, "abcd");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sanitize),
		cmocka_unit_test(test_sanitize_truncates),
		cmocka_unit_test(test_sanitize_bidi),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
