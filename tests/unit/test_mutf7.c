/*
 * IMAP modified UTF-7 (RFC 3501 section 5.1.3): the RFC's example both
 * ways, every way to be non-canonical refused, and a random round trip.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mailpull/mutf7.h"
#include "mailpull/utf8.h"

struct pair {
	const char *wire;   /* modified UTF-7 */
	const char *utf8;
};

/* Valid both ways: decode(wire) == utf8 and encode(utf8) == wire. */
static const struct pair pairs[] = {
	{ "", "" },
	{ "INBOX", "INBOX" },
	{ "~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
	  "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
	{ "&-", "&" },
	{ "A&-B", "A&B" },
	{ "&-&-", "&&" },
	{ "&AOk-", "\xc3\xa9" },
	{ "Entw&APw-rfe", "Entw\xc3\xbcrfe" },
	{ "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-",
	  "\xd0\x9e\xd1\x82\xd0\xbf\xd1\x80\xd0\xb0\xd0\xb2\xd0\xbb\xd0\xb5\xd0\xbd"
	  "\xd0\xbd\xd1\x8b\xd0\xb5" },
	{ "&2D3eAA-", "\xf0\x9f\x98\x80" },                 /* U+1F600, a surrogate pair */
	{ "&IKzYPd4A-", "\xe2\x82\xac\xf0\x9f\x98\x80" },   /* BMP then astral in one run */
	{ "a&AAk-", "a\t" },                                /* controls are encoded */
	{ "&AH8-", "\x7f" },
	{ "&AOk-&-", "\xc3\xa9&" },
	{ "&-&AOk-", "&\xc3\xa9" },
	{ "&AOk-a&AOk-", "\xc3\xa9" "a\xc3\xa9" },
	{ "a-b", "a-b" },                                   /* '-' outside a run is text */
	{ "&AOk--", "\xc3\xa9-" },
};

static void
test_pairs(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		const struct pair *p = &pairs[i];
		char *out = NULL;

		assert_int_equal(mutf7_decode(p->wire, strlen(p->wire), &out), 0);
		assert_string_equal(out, p->utf8);
		free(out);
		out = NULL;
		assert_int_equal(mutf7_encode(p->utf8, strlen(p->utf8), &out), 0);
		assert_string_equal(out, p->wire);
		free(out);
	}
}

static const char *const bad_wire[] = {
	"&",                /* unterminated */
	"&U,BTFw",          /* unterminated run */
	"a&",
	"&U,BTFw=-",        /* '=' padding is not modified BASE64 */
	"&U,BTFw/-",        /* '/' is RFC 2152's, not ours */
	"&&-",
	"&AGE-",            /* 'a' must stand for itself */
	"&ACY-",            /* '&' must be "&-" */
	"&ACA-",            /* so must SPACE */
	"&AAA-",            /* U+0000 */
	"&2D0-",            /* lone high surrogate */
	"&3gA-",            /* lone low surrogate */
	"&3gDYPQ-",         /* reversed pair */
	"&2D0A6Q-",         /* high surrogate then a BMP character */
	"&2D0-&3gA-",       /* a pair split over two runs */
	"&U,BTF-",          /* a character too many (30 bits: 14 left over) */
	"&U,BTFx-",         /* non-zero padding bits */
	"&AOkA-",           /* 24 bits: 8 left over */
	"&A-",              /* 6 bits, no unit */
	"&AOk-&AOk-",       /* two runs back to back */
	"caf\xc3\xa9",      /* raw 8-bit */
	"a\tb",             /* raw control */
	"a\x7f",
};

static void
test_bad_wire(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_wire) / sizeof(bad_wire[0]); i++) {
		char *out = (char *)0x1;

		assert_int_equal(mutf7_decode(bad_wire[i], strlen(bad_wire[i]), &out), -EBADMSG);
		assert_ptr_equal(out, (char *)0x1);
	}
}

static void
test_bad_utf8(void **state)
{
	static const char *const bad[] = {
		"\xff", "caf\xe9", "\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
		"\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\x80",
	};
	char *out = (char *)0x1;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(mutf7_encode(bad[i], strlen(bad[i]), &out), -EBADMSG);
	assert_int_equal(mutf7_encode("a\0b", 3, &out), -EBADMSG);
	assert_ptr_equal(out, (char *)0x1);
}

static void
test_caps(void **state)
{
	char *big = malloc(MUTF7_INPUT_MAX + 1), *out = NULL;

	(void)state;
	assert_non_null(big);
	memset(big, 'a', MUTF7_INPUT_MAX + 1);
	assert_int_equal(mutf7_decode(big, MUTF7_INPUT_MAX + 1, &out), -E2BIG);
	assert_int_equal(mutf7_encode(big, MUTF7_INPUT_MAX + 1, &out), -E2BIG);
	assert_null(out);
	assert_int_equal(mutf7_decode(big, MUTF7_INPUT_MAX, &out), 0);
	assert_int_equal(strlen(out), MUTF7_INPUT_MAX);
	free(out);
	/* Worst-case expansions at the cap: a control per byte; runs of 3-byte characters. */
	memset(big, '\x01', MUTF7_INPUT_MAX);
	assert_int_equal(mutf7_encode(big, MUTF7_INPUT_MAX, &out), 0);
	free(out);
	for (size_t i = 0; i + 3 <= MUTF7_INPUT_MAX; i += 3)
		memcpy(big + i, "\xe6\x97\xa5", 3);
	assert_int_equal(mutf7_encode(big, MUTF7_INPUT_MAX / 3 * 3, &out), 0);
	assert_true(strlen(out) <= MUTF7_INPUT_MAX);
	{
		char *back = NULL;

		assert_int_equal(mutf7_decode(out, strlen(out), &back), 0);
		assert_int_equal(strlen(back), MUTF7_INPUT_MAX / 3 * 3);
		assert_memory_equal(back, big, MUTF7_INPUT_MAX / 3 * 3);
		free(back);
	}
	free(out);
	free(big);
}

static uint32_t
rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(*s >> 33);
}

/* A random scalar value, biased towards the interesting classes. */
static uint32_t
rnd_cp(uint64_t *s)
{
	switch (rnd(s) % 6) {
	case 0:
		return 0x20 + rnd(s) % 0x5f;
	case 1:
		return '&';
	case 2:
		return 1 + rnd(s) % 0x1f;
	case 3:
		return 0x80 + rnd(s) % 0x780;
	case 4: {
		uint32_t cp = 0x800 + rnd(s) % 0xf800;

		return cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp;
	}
	default:
		return 0x10000 + rnd(s) % 0x100000;
	}
}

/*
 * For random names: encode then decode gives the name back, and the
 * encoding is canonical (decoding it and encoding again is the identity).
 * Also flips one byte of each encoding: the decoder must then either refuse
 * it or return a name whose encoding is exactly the mutated string.
 */
static void
test_round_trip(void **state)
{
	uint64_t seed = 42;

	(void)state;
	for (int iter = 0; iter < 20000; iter++) {
		char name[128], *wire = NULL, *back = NULL, *again = NULL;
		size_t n = 0, len = rnd(&seed) % 20;

		for (size_t k = 0; k < len; k++)
			n += (size_t)utf8_encode(rnd_cp(&seed), name + n);
		assert_int_equal(mutf7_encode(name, n, &wire), 0);
		assert_int_equal(mutf7_decode(wire, strlen(wire), &back), 0);
		assert_int_equal(strlen(back), n);
		assert_memory_equal(back, name, n);
		free(back);
		back = NULL;
		if (wire[0] != '\0') {
			size_t at = rnd(&seed) % strlen(wire);

			wire[at] = "A&-,+/=a\x80 "[rnd(&seed) % 10];
			if (mutf7_decode(wire, strlen(wire), &back) == 0) {
				assert_int_equal(mutf7_encode(back, strlen(back), &again), 0);
				assert_string_equal(again, wire);
				free(again);
				free(back);
			}
		}
		free(wire);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pairs),
		cmocka_unit_test(test_bad_wire),
		cmocka_unit_test(test_bad_utf8),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
