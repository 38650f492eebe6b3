/*
 * Header text for display (mimeword.h): RFC 2047's own examples, the
 * charsets mail actually uses, malformed words left alone, and the
 * guarantee that matters most: whatever comes in, what goes out is valid
 * UTF-8 that cannot drive a terminal.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mailpull/mimeword.h"
#include "mailpull/utf8.h"

#define R "\xef\xbf\xbd"   /* U+FFFD */

struct vec {
	const char *in;
	size_t len;        /* 0: strlen(in) */
	const char *out;
};

static const struct vec vecs[] = {
	{ "", 0, "" },
	{ "plain text", 0, "plain text" },
	/* RFC 2047 section 8, the examples. */
	{ "=?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>", 0, "Keith Moore <moore@cs.utk.edu>" },
	{ "=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>", 0,
	  "Keld J\xc3\xb8rn Simonsen <keld@dkuug.dk>" },
	{ "=?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>", 0,
	  "Andr\xc3\xa9 Pirard <PIRARD@vm1.ulg.ac.be>" },
	{ "=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\r\n"
	  "    =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=", 0,
	  "If you can read this you understand the example." },
	{ "=?ISO-8859-1?Q?Olle_J=E4rnefors?= <ojarnef@admin.kth.se>", 0,
	  "Olle J\xc3\xa4rnefors <ojarnef@admin.kth.se>" },
	{ "(=?ISO-8859-1?Q?a?=)", 0, "(a)" },
	{ "(=?ISO-8859-1?Q?a?= b)", 0, "(a b)" },
	{ "(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)", 0, "(ab)" },
	{ "(=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=)", 0, "(ab)" },
	{ "(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)", 0, "(ab)" },
	{ "(=?ISO-8859-1?Q?a_b?=)", 0, "(a b)" },
	{ "(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)", 0, "(a b)" },
	/* RFC 2231 section 5: the language is ignored. */
	{ "=?US-ASCII*EN?Q?Keith_Moore?=", 0, "Keith Moore" },
	{ "=?utf-8*de-DE?q?Gr=C3=BC=C3=9Fe?=", 0, "Gr\xc3\xbc\xc3\x9f" "e" },
	/* Encodings and charsets. */
	{ "=?utf-8?q?caf=C3=A9?=", 0, "caf\xc3\xa9" },
	{ "=?UTF-8?B?Y2Fmw6k=?=", 0, "caf\xc3\xa9" },
	{ "=?utf-8?b?Y2Fmw6k?=", 0, "caf\xc3\xa9" },          /* padding left out */
	{ "=?utf-8?q?caf=c3=a9?=", 0, "caf\xc3\xa9" },        /* lower-case hex */
	{ "=?utf-8?q?a_b=5Fc?=", 0, "a b_c" },
	{ "=?utf-8?q?\?=", 0, "" },          /* "?\?=": no trigraph */
	{ "=?koi8-r?B?8NLJ18XU?=", 0, "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82" },
	{ "=?windows-1251?Q?=CF=F0=E8=E2=E5=F2?=", 0,
	  "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82" },
	{ "=?gb2312?B?1tDOxNPKvP4=?=", 0, "\xe4\xb8\xad\xe6\x96\x87\xe9\x82\xae\xe4\xbb\xb6" },
	{ "=?gb2312?B?gUA=?=", 0, "\xe4\xb8\x82" },          /* GBK only, labelled gb2312 */
	{ "=?shift_jis?B?k/qWe4zq?=", 0, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
	{ "=?shift_jis?B?h0A=?=", 0, "\xe2\x91\xa0" },        /* a CP932 extension */
	{ "=?euc-jp?B?xvzL3Ljs?=", 0, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
	{ "=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=", 0, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
	/* A run left in JIS X 0208 mode must not shift the next run (each starts in ASCII). */
	{ "=?iso-2022-jp?b?GyRCRnw=?= x =?iso-2022-jp?q?ab?=", 0, "\xe6\x97\xa5 x ab" },
	{ "=?big5?B?pKSk5Q==?=", 0, "\xe4\xb8\xad\xe6\x96\x87" },
	{ "=?ks_c_5601-1987?B?x9Gxub7u?=", 0, "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4" },
	{ "=?iso-8859-15?q?=A4?=", 0, "\xe2\x82\xac" },
	{ "=?iso-8859-1?q?=93hi=94?=", 0, "\xe2\x80\x9chi\xe2\x80\x9d" },   /* as windows-1252 */
	/* A character split across two words, and adjacent words in other charsets. */
	{ "=?utf-8?q?=E2=82?= =?utf-8?q?=AC?=", 0, "\xe2\x82\xac" },
	{ "=?UTF-8?q?=E2=82?= =?utf-8?q?=AC?=", 0, "\xe2\x82\xac" },
	{ "=?gb2312?B?1tA=?= =?gb2312?B?zsQ=?=", 0, "\xe4\xb8\xad\xe6\x96\x87" },
	{ "=?gb2312?q?=D6?= =?gb2312?q?=D0?=", 0, "\xe4\xb8\xad" },
	{ "=?iso-8859-1?q?=E9?= =?utf-8?q?=C3=A9?=", 0, "\xc3\xa9\xc3\xa9" },
	{ "=?utf-8?q?=E2=82?= x =?utf-8?q?=AC?=", 0, R R " x " R },
	/* Whitespace: kept next to text, dropped only between words. */
	{ "=?utf-8?q?a?=  b", 0, "a  b" },
	{ "a  =?utf-8?q?b?=", 0, "a  b" },
	{ "=?utf-8?q?a?=\t=?utf-8?q?b?=", 0, "ab" },
	{ "=?utf-8?q?a?=\n =?utf-8?q?b?=", 0, "ab" },
	{ "foo=?utf-8?q?bar?=baz", 0, "foobarbaz" },
	{ "=?utf-8?q?a?==?utf-8?q?b?=", 0, "ab" },
	/* Malformed or unknown: left as they are. */
	{ "=?x-unknown?q?abc?=", 0, "=?x-unknown?q?abc?=" },
	{ "=?utf-8?x?abc?=", 0, "=?utf-8?x?abc?=" },
	{ "=?utf-8?b?!!!!?=", 0, "=?utf-8?b?!!!!?=" },
	{ "=?utf-8?b?Y2Fmw?=", 0, "=?utf-8?b?Y2Fmw?=" },     /* 6 bits: not even a byte */
	{ "=?utf-8?b?Y2Fmw6?=", 0, "caf" R },                   /* a byte of a 2-byte character */
	{ "=?utf-8?b?YQ==YQ==?=", 0, "=?utf-8?b?YQ==YQ==?=" },
	{ "=?utf-8?q?a=Z1?=", 0, "=?utf-8?q?a=Z1?=" },
	{ "=?utf-8?q?a=4?=", 0, "=?utf-8?q?a=4?=" },
	{ "=?utf-8?q?a b?=", 0, "=?utf-8?q?a b?=" },
	{ "=?utf-8?q?abc", 0, "=?utf-8?q?abc" },
	{ "=?utf-8?q?abc?", 0, "=?utf-8?q?abc?" },
	{ "=?utf-8?q", 0, "=?utf-8?q" },
	{ "=??q?abc?=", 0, "=??q?abc?=" },
	{ "=?*en?q?abc?=", 0, "=?*en?q?abc?=" },
	{ "=?utf-8//TRANSLIT?q?abc?=", 0, "=?utf-8//TRANSLIT?q?abc?=" },
	{ "=?utf.8?q?abc?=", 0, "=?utf.8?q?abc?=" },
	{ "=?", 0, "=?" },
	{ "=", 0, "=" },
	{ "a =?utf-8?q?a?= =?bogus?q?b?= =?utf-8?q?c?=", 0, "a a =?bogus?q?b?= c" },
	{ "=?x?=?utf-8?q?a?=", 0, "=?x?a" },
	/* Invalid bytes in charsets: each becomes U+FFFD and decoding goes on. */
	{ "=?iso-8859-1?q?a=81b?=", 0, "a" R "b" },          /* undefined in windows-1252 */
	{ "=?shift_jis?q?=93?=", 0, R },                     /* a lead byte alone */
	{ "=?utf-8?q?=FF?=", 0, R },
	{ "=?us-ascii?q?caf=E9?=", 0, "caf" R },
	/* Raw 8-bit text is UTF-8 or U+FFFD, a byte at a time. */
	{ "\xe6\x97\xa5\xe6\x9c\xac", 0, "\xe6\x97\xa5\xe6\x9c\xac" },
	{ "caf\xe9", 0, "caf" R },
	{ "\xc3", 0, R },
	{ "\xc0\xaf", 0, R R },
	{ "\xed\xa0\x80", 0, R R R },
	{ "\xe2\x82x", 0, R R "x" },
	/* Unfolding (RFC 5322 section 2.2.3). */
	{ "a\r\n b", 0, "a b" },
	{ "a\n\tb", 0, "a\tb" },
	{ "a\r\n", 0, "a" },
	{ "a\n", 0, "a" },
	{ "a\r\nb", 0, "a" R R "b" },
	{ "a\rb", 0, "a" R "b" },
	/* Terminal safety, raw and encoded. */
	{ "a\tb", 0, "a\tb" },
	{ "a\x1b[31mred", 0, "a" R "[31mred" },
	{ "=?utf-8?q?=1B]0;title=07?=", 0, R "]0;title" R },
	{ "=?utf-8?b?G1sySg==?=", 0, R "[2J" },
	{ "a\0b", 3, "a" R "b" },
	{ "=?utf-8?q?a=00b?=", 0, "a" R "b" },
	{ "del\x7f", 0, "del" R },
	{ "\xc2\x9b" "31m", 0, R "31m" },                   /* C1 CSI */
	{ "=?utf-8?q?=C2=85?=", 0, R },                     /* C1 NEL */
	{ "=?utf-8?q?=E2=80=AEevil?=", 0, R "evil" },       /* RIGHT-TO-LEFT OVERRIDE */
	{ "\xe2\x81\xa6x\xe2\x81\xa9", 0, R "x" R },        /* isolates */
	/*
	 * The marks go too: a mark still decides the direction of the neutral
	 * characters around it, so "txt.exe" can be made to read otherwise.
	 */
	{ "\xe2\x80\x8f", 0, R },                          /* RLM */
	{ "=?utf-8?q?a=E2=80=8Eb?=", 0, "a" R "b" },        /* LRM */
	{ "=?utf-8?b?2Jw=?=", 0, R },                       /* ARABIC LETTER MARK */
};

static void
test_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
		const struct vec *v = &vecs[i];
		size_t len = v->len ? v->len : strlen(v->in), outlen = 99;
		char *out = NULL;

		assert_int_equal(mimeword_decode(v->in, len, &out, &outlen), 0);
		if (strcmp(out, v->out) != 0)
			fail_msg("vector %zu \"%s\": got \"%s\" want \"%s\"", i, v->in, out,
				 v->out);
		assert_int_equal(outlen, strlen(out));
		free(out);
	}
}

static void
test_args(void **state)
{
	char *big = malloc(MIMEWORD_INPUT_MAX + 1), *out = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(mimeword_decode(NULL, 0, &out, NULL), 0);
	assert_string_equal(out, "");
	free(out);
	out = NULL;
	assert_int_equal(mimeword_oneline(NULL, 0, 5, &out), 0);
	assert_string_equal(out, "");
	free(out);
	out = NULL;
	assert_non_null(big);
	memset(big, 'a', MIMEWORD_INPUT_MAX + 1);
	assert_int_equal(mimeword_decode(big, MIMEWORD_INPUT_MAX + 1, &out, &len), -E2BIG);
	assert_null(out);
	assert_int_equal(len, 0);
	assert_int_equal(mimeword_decode(big, MIMEWORD_INPUT_MAX, &out, &len), 0);
	assert_int_equal(len, MIMEWORD_INPUT_MAX);
	free(out);
	free(big);
}

/* Every byte where a control or invalid sequence would be. */
static void
assert_display_safe(const char *s, size_t len)
{
	assert_true(utf8_valid(s, len));
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		assert_false((c < 0x20 && c != '\t') || c == 0x7f);
		if (c == 0xc2 && i + 1 < len)
			assert_false((unsigned char)s[i + 1] <= 0x9f);
	}
}

static uint32_t
rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(*s >> 33);
}

/* Random byte soup built from pieces of encoded words: the output is always display-safe. */
static void
test_random_safe(void **state)
{
	static const char *const atoms[] = {
		"=?", "?=", "?", "=", "utf-8", "iso-2022-jp", "gb2312", "shift_jis", "?q?", "?B?",
		"=1B", "=C2", "=9B", "=E2=80=AE", "GyRC", "GyhC", "8NLJ", "_", " ", "\r\n ", "\n",
		"\x1b", "\x9b", "\xc2", "\xff", "\0", "a", "\xe2\x82\xac", "====", "*en",
	};
	uint64_t seed = 1;

	(void)state;
	for (int iter = 0; iter < 20000; iter++) {
		char in[256], *out = NULL, *line = NULL;
		size_t n = 0, outlen, k = rnd(&seed) % 24;

		for (size_t j = 0; j < k; j++) {
			size_t a = rnd(&seed) % (sizeof(atoms) / sizeof(atoms[0]));
			size_t l = a == 25 ? 1 : strlen(atoms[a]);

			memcpy(in + n, atoms[a], l);
			n += l;
		}
		assert_int_equal(mimeword_decode(in, n, &out, &outlen), 0);
		assert_int_equal(strlen(out), outlen);
		assert_display_safe(out, outlen);
		assert_int_equal(mimeword_oneline(out, outlen, 10, &line), 0);
		assert_display_safe(line, strlen(line));
		assert_null(strchr(line, '\t'));
		free(line);
		free(out);
	}
}

struct line {
	const char *in;
	size_t max;
	const char *out;
};

static const struct line lines[] = {
	{ "", 0, "" },
	{ "   ", 0, "" },
	{ "  a \t b\r\n c  ", 0, "a b c" },
	{ "a\xe2\x80\xa8" "b\xe2\x80\xa9", 0, "a b" },
	{ "a\x1b[2Jb", 0, "a" R "[2Jb" },
	{ "caf\xe9", 0, "caf" R },
	{ "a\xe2\x80\xae" "b", 0, "a" R "b" },
	{ "abcdef", 4, "abc\xe2\x80\xa6" },
	{ "abcd", 4, "abcd" },
	{ "abcde", 4, "abc\xe2\x80\xa6" },
	{ "ab cd", 3, "ab\xe2\x80\xa6" },
	{ "a b", 3, "a b" },
	{ "abc", 1, "\xe2\x80\xa6" },
	{ "a", 1, "a" },
	{ "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xa7\xe3\x81\x99", 3,
	  "\xe6\x97\xa5\xe6\x9c\xac\xe2\x80\xa6" },
	{ "caf\xe9\xe9\xe9", 4, "caf\xe2\x80\xa6" },
};

static void
test_oneline(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		const struct line *l = &lines[i];
		char *out = NULL;

		assert_int_equal(mimeword_oneline(l->in, strlen(l->in), l->max, &out), 0);
		if (strcmp(out, l->out) != 0)
			fail_msg("line %zu: got \"%s\" want \"%s\"", i, out, l->out);
		free(out);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_args),
		cmocka_unit_test(test_random_safe),
		cmocka_unit_test(test_oneline),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
