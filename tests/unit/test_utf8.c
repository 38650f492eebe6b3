/* Strict UTF-8 (RFC 3629 section 4 and its table of well-formed sequences). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mailpull/utf8.h"

static void
test_decode_good(void **state)
{
	static const struct {
		const char *s;
		uint32_t cp;
	} good[] = {
		{ "a", 'a' }, { "\x7f", 0x7f }, { "\xc2\x80", 0x80 }, { "\xdf\xbf", 0x7ff },
		{ "\xe0\xa0\x80", 0x800 }, { "\xed\x9f\xbf", 0xd7ff }, { "\xee\x80\x80", 0xe000 },
		{ "\xef\xbf\xbd", 0xfffd }, { "\xf0\x90\x80\x80", 0x10000 },
		{ "\xf4\x8f\xbf\xbf", 0x10ffff },
	};
	uint32_t cp;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		size_t n = strlen(good[i].s);
		char enc[4];

		assert_int_equal(utf8_decode(good[i].s, n, &cp), (int)n);
		assert_int_equal(cp, good[i].cp);
		assert_int_equal(utf8_encode(cp, enc), (int)n);
		assert_memory_equal(enc, good[i].s, n);
	}
	assert_int_equal(utf8_decode("\0", 1, &cp), 1);
	assert_int_equal(cp, 0);
}

static void
test_decode_bad(void **state)
{
	static const char *const bad[] = {
		"\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xc2", "\xc2\x41", "\xe0\x80\x80",
		"\xe0\x9f\xbf", "\xed\xa0\x80", "\xed\xbf\xbf", "\xe2\x82", "\xf0\x80\x80\x80",
		"\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\xfe",
		"\xf0\x9f\x98",
	};
	uint32_t cp = 12345;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(utf8_decode(bad[i], strlen(bad[i]), &cp), -EBADMSG);
		assert_false(utf8_valid(bad[i], strlen(bad[i])));
	}
	assert_int_equal(utf8_decode("", 0, &cp), -EBADMSG);
	/* A valid sequence cut short by len. */
	assert_int_equal(utf8_decode("\xe2\x82\xac", 2, &cp), -EBADMSG);
	assert_int_equal(cp, 12345);
}

static void
test_encode_bad(void **state)
{
	char out[4];

	(void)state;
	assert_int_equal(utf8_encode(0xd800, out), -EINVAL);
	assert_int_equal(utf8_encode(0xdfff, out), -EINVAL);
	assert_int_equal(utf8_encode(0x110000, out), -EINVAL);
}

static void
test_valid(void **state)
{
	(void)state;
	assert_true(utf8_valid("", 0));
	assert_true(utf8_valid("caf\xc3\xa9 \xe2\x82\xac", 9));
	assert_false(utf8_valid("caf\xc3\xa9 \xe2\x82", 8));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_good),
		cmocka_unit_test(test_decode_bad),
		cmocka_unit_test(test_encode_bad),
		cmocka_unit_test(test_valid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
