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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
