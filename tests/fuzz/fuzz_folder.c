/*
 * libFuzzer target for folder.h. The first byte picks the delimiter, the
 * rest up to the first NUL is the mailbox name. Whatever maps must be one
 * safe path component that maps back to the same mailbox; a second NUL
 * splits off a pattern for folder_match(), which must agree with itself
 * on the trivial cases.
 *
 * Standalone build and run:
 *   clang -g -O1 -std=c17 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Iinclude \
 *     tests/fuzz/fuzz_folder.c src/folder.c src/utf8.c -o build/fuzz_folder
 *   build/fuzz_folder -max_total_time=120 tests/fuzz/corpus/folder
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailpull/folder.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_dirname(const char *name, char delim)
{
	char *dir = NULL, *back = NULL;
	size_t skip;

	if (folder_to_maildir(name, delim, &dir) < 0)
		return;
	if (strchr(dir, '/') || strlen(dir) > FOLDER_DIRNAME_MAX)
		abort();
	if (dir[0] != '\0' && (dir[0] != '.' || dir[1] == '.' || dir[1] == '\0'))
		abort();
	for (const char *p = dir; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			abort();
	if (folder_from_maildir(dir, delim, &back) != 0)
		abort();
	/* A leading INBOX comes back as "INBOX"; everything else byte for byte. */
	skip = strncasecmp(name, "INBOX", 5) == 0 &&
	       (name[5] == '\0' || (delim != '\0' && name[5] == delim)) ? 5 : 0;
	if (strncasecmp(back, name, skip) != 0 || strcmp(back + skip, name + skip) != 0)
		abort();
	free(back);
	free(dir);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf, *name, *pattern;
	char delim;

	if (size < 1)
		return 0;
	delim = (char)data[0];
	buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data + 1, size - 1);
	buf[size - 1] = '\0';
	buf[size] = '\0';
	name = buf;
	pattern = name + strlen(name) + 1;
	check_dirname(name, delim);
	/* The inverse on arbitrary bytes: whatever it accepts must map back to itself. */
	{
		char *n = NULL, *d = NULL;

		if (folder_from_maildir(name, delim, &n) == 0) {
			if (folder_to_maildir(n, delim, &d) != 0 || strcmp(d, name) != 0)
				abort();
			free(d);
			free(n);
		}
	}
	if (pattern < buf + size) {
		int r = folder_match(pattern, name, delim);

		if (r < 0 && strlen(pattern) <= FOLDER_PATTERN_MAX)
			abort();
		if (folder_match("*", name, delim) != 1)
			abort();
		/*
		 * A name read as a pattern matches itself: '*' and '%' can match
		 * themselves, except '%' a delimiter that is '%' itself.
		 */
		if (delim != '%' && strlen(name) <= FOLDER_PATTERN_MAX &&
		    folder_match(name, name, delim) != 1)
			abort();
	}
	free(buf);
	return 0;
}
