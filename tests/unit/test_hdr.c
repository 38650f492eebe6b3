/* Streaming header scanner: fields across any chunking, folding, caps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "mailpull/hdr.h"

static const char *const names[] = { "Message-ID", "Subject", "From" };

static void
scan_split(const char *msg, size_t step, struct hdr_scan *h)
{
	size_t len = strlen(msg);

	hdr_scan_init(h, names, 3);
	for (size_t i = 0; i < len; i += step)
		hdr_scan_feed(h, msg + i, len - i < step ? len - i : step);
	hdr_scan_finish(h);
}

static void
test_fields_any_split(void **state)
{
	const char *msg = "From: A <a@x>\r\nsubject: Hello\r\n  world\r\nMessage-Id:\r\n"
			  " <id@x>\r\nX: y\r\n\r\nSubject: body, not a header\r\n";
	struct hdr_scan h;

	(void)state;
	for (size_t step = 1; step <= strlen(msg); step++) {
		scan_split(msg, step, &h);
		assert_true(h.done);
		assert_string_equal(h.values[1], "Hello  world");
		assert_string_equal(h.values[0], " <id@x>");
		assert_string_equal(h.values[2], "A <a@x>");
	}
}

static void
test_absent_and_first_wins(void **state)
{
	struct hdr_scan h;

	(void)state;
	scan_split("Subject: one\nSubject: two\n\n", 3, &h);
	assert_string_equal(h.values[1], "one");
	assert_false(h.found[0]);
	assert_string_equal(h.values[0], "");
}

static void
test_caps(void **state)
{
	static char msg[20000];
	struct hdr_scan h;

	(void)state;
	memcpy(msg, "Subject: ", 9);
	memset(msg + 9, 'a', sizeof(msg) - 12);
	memcpy(msg + sizeof(msg) - 3, "\n\n", 3);
	scan_split(msg, 700, &h);
	assert_true(h.lens[1] <= HDR_VALUE_MAX);
	assert_true(h.done);
}

static void
test_msgid_core(void **state)
{
	size_t n;
	const char *p;

	(void)state;
	p = hdr_msgid_core(" (c) <a@b> ", 11, &n);
	assert_int_equal(n, 5);
	assert_memory_equal(p, "<a@b>", 5);
	p = hdr_msgid_core("  plain  ", 9, &n);
	assert_int_equal(n, 5);
	assert_memory_equal(p, "plain", 5);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields_any_split),
		cmocka_unit_test(test_absent_and_first_wins),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_msgid_core),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
