/*
 * libFuzzer target for mimeword_decode() and mimeword_oneline(). Whatever
 * the input, the output must be valid UTF-8 with no byte a terminal would
 * act on. The checks below are written independently of src/utf8.c so a
 * bug there cannot hide itself.
 *
 * Standalone build and run:
 *   clang -g -O1 -std=c17 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Iinclude \
 *     tests/fuzz/fuzz_mimeword.c src/mimeword.c src/utf8.c -o build/fuzz_mimeword
 *   build/fuzz_mimeword -max_len=4096 -max_total_time=300 tests/fuzz/corpus/mimeword
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/mimeword.h"

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629 section 4,
 * table 3-7 of the Unicode standard), or 0.
 */
static size_t
check_seq(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

static void
check_display_safe(const char *str, size_t n, int allow_tab)
{
	const unsigned char *s = (const unsigned char *)str;

	if (s[n] != '\0')
		abort();
	for (size_t i = 0; i < n;) {
		size_t len = check_seq(s + i, n - i);

		if (len == 0)
			abort();
		/* C0 (TAB aside), DEL, and C1 as U+0080..U+009F. */
		if ((s[i] < 0x20 && !(allow_tab && s[i] == '\t')) || s[i] == 0x7f)
			abort();
		if (s[i] == 0xc2 && s[i + 1] <= 0x9f)
			abort();
		/* U+202A..U+202E and U+2066..U+2069. */
		if (s[i] == 0xe2 && s[i + 1] == 0x80 && s[i + 2] >= 0xaa && s[i + 2] <= 0xae)
			abort();
		if (s[i] == 0xe2 && s[i + 1] == 0x81 && s[i + 2] >= 0xa6 && s[i + 2] <= 0xa9)
			abort();
		i += len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *out = NULL, *line = NULL;
	size_t len = 0;

	if (mimeword_decode((const char *)data, size, &out, &len) < 0) {
		if (size <= MIMEWORD_INPUT_MAX)
			abort();
		return 0;
	}
	if (strlen(out) != len)
		abort();
	check_display_safe(out, len, 1);
	if (mimeword_oneline(out, len, 1 + size % 40, &line) == 0) {
		size_t n = strlen(line), chars = 0;

		check_display_safe(line, n, 0);
		for (size_t i = 0; i < n; i++)
			chars += ((unsigned char)line[i] & 0xc0) != 0x80;
		if (chars > 1 + size % 40 || (n > 0 && (line[0] == ' ' || line[n - 1] == ' ')))
			abort();
		free(line);
	}
	/* Raw input to oneline too: it must make its own output safe. */
	if (mimeword_oneline((const char *)data, size, 0, &line) == 0) {
		check_display_safe(line, strlen(line), 0);
		free(line);
	}
	free(out);
	return 0;
}
