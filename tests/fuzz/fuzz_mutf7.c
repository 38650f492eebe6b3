/*
 * libFuzzer target for modified UTF-7 (mutf7.h): what decodes must encode
 * back to the very same bytes (only canonical forms are accepted), and what
 * encodes must decode back to the input.
 *
 * Standalone build and run:
 *   clang -g -O1 -std=c17 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Iinclude \
 *     tests/fuzz/fuzz_mutf7.c src/mutf7.c src/utf8.c -o build/fuzz_mutf7
 *   build/fuzz_mutf7 -max_total_time=120 tests/fuzz/corpus/mutf7
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/mutf7.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	char *a = NULL, *b = NULL;

	if (mutf7_decode(in, size, &a) == 0) {
		if (mutf7_encode(a, strlen(a), &b) != 0)
			abort();
		if (strlen(b) != size || memcmp(b, in, size) != 0)
			abort();
		free(a);
		free(b);
		a = b = NULL;
	}
	if (mutf7_encode(in, size, &a) == 0) {
		for (const char *p = a; *p; p++)
			if (*p < 0x20 || *p > 0x7e)
				abort();
		if (mutf7_decode(a, strlen(a), &b) != 0)
			abort();
		if (strlen(b) != size || memcmp(b, in, size) != 0)
			abort();
		free(a);
		free(b);
	}
	return 0;
}
