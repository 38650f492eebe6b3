/*
 * libFuzzer target for address lists (addr.h) and the outbox's reading of
 * a message (outbox.h). The first byte is flags (bit 0: sendmail's dot
 * ending for outbox_head_read()); the rest is both an address list and a
 * message.
 *
 * Address lists: every address that comes out is at most ADDR_LEN_MAX
 * bytes, holds no control byte, is there once, and is its own canonical
 * form (parsed again alone it gives itself), so what sendmail records and
 * what the smtp engine sends cannot drift apart.
 *
 * Messages (through a memfd, as files and pipes are read): the head read
 * keeps the fields as they came; the scan's three sizes equal counts made
 * here independently over the file and over what the Bcc-less reader
 * gives; the reader with bcc gives the file byte for byte.
 *
 * Standalone: make build-fuzz/fuzz_addr, then
 *   build-fuzz/fuzz_addr -max_len=4096 tests/fuzz/corpus/addr
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mailpull/addr.h"
#include "mailpull/outbox.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_addr(const char *a, const struct addr_list *l, size_t idx)
{
	size_t n = strlen(a);
	char *again = NULL;

	if (n == 0 || n > ADDR_LEN_MAX)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)a[i] < 0x20 || a[i] == 0x7f)
			abort();
	for (size_t i = 0; i < idx; i++)
		if (addr_equal(l->v[i], a))
			abort();
	if (addr_parse_first(a, n, &again) != 1 || strcmp(again, a) != 0)
		abort();
	free(again);
}

static void
fuzz_list(const char *s, size_t n)
{
	struct addr_list l = { .v = NULL };
	char *first = NULL;
	int r = addr_list_parse(&l, s, n, 50);
	int f = addr_parse_first(s, n, &first);

	if (r < 0 && r != -EBADMSG && r != -E2BIG)
		abort();
	if (r >= 0 && (size_t)r != l.n)
		abort();
	for (size_t i = 0; i < l.n; i++)
		check_addr(l.v[i], &l, i);
	/* A list read whole starts with the address read first. */
	if (r > 0 && (f != 1 || strcmp(first, l.v[0]) != 0))
		abort();
	if (r == 0 && f != 0)
		abort();
	free(first);
	addr_list_free(&l);
}

/* Size with CRLF line ends, plus the CRLF added after a last line without LF. */
static uint64_t
crlf_count(const char *p, size_t n)
{
	uint64_t c = n;

	for (size_t i = 0; i < n; i++)
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			c++;
	return n > 0 && p[n - 1] != '\n' ? c + 2 : c;
}

static char *
read_all(int fd, bool bcc, size_t *ret_len)
{
	struct outbox_reader *rd;
	const char *p;
	char *out = NULL;
	size_t len = 0, n;

	if (outbox_reader_open(fd, bcc, &rd, NULL) < 0)
		abort();
	for (;;) {
		if (outbox_reader_read(rd, &p, &n, NULL) < 0)
			abort();
		if (n == 0)
			break;
		out = realloc(out, len + n);
		memcpy(out + len, p, n);
		len += n;
	}
	outbox_reader_free(rd);
	*ret_len = len;
	return out;
}

static void
fuzz_message(const char *s, size_t n, bool dot_ends)
{
	struct outbox_head h;
	struct outbox_scan sc;
	struct mp_err err = { 0 };
	int fd = memfd_create("msg", MFD_CLOEXEC);
	char *out;
	size_t len;

	if (fd < 0 || write(fd, s, n) != (ssize_t)n || lseek(fd, 0, SEEK_SET) != 0)
		abort();
	if (outbox_head_read(fd, dot_ends, &h, &err) == 0) {
		if (h.fields_len > h.len || h.len > n || memcmp(h.text, s, h.len) != 0)
			abort();
		if (h.restlen > n - h.len || (h.ended && h.restlen))
			abort();
		outbox_head_free(&h);
	} else if (err.code != -EBADMSG) {
		abort();
	}
	mp_err_clear(&err);
	if (outbox_scan_fd(fd, &sc, &err) == 0) {
		if (sc.size != n || sc.crlf_size != crlf_count(s, n))
			abort();
		if ((memchr(s, '\0', n) != NULL) != sc.has_nul)
			abort();
		out = read_all(fd, false, &len);
		if (sc.wire_size != crlf_count(out, len))
			abort();
		free(out);
		out = read_all(fd, true, &len);
		if (len != n || (n && memcmp(out, s, n) != 0))
			abort();
		free(out);
		outbox_scan_free(&sc);
	} else if (err.code != -EBADMSG) {
		abort();
	}
	close(fd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data + 1;

	if (size < 1)
		return 0;
	fuzz_list(s, size - 1);
	fuzz_message(s, size - 1, data[0] & 1);
	return 0;
}
