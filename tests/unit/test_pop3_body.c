/*
 * The POP3 multi-line decoder, fed every vector whole, one byte at a time,
 * split in two at every offset and in three at every pair of offsets: the
 * terminator and dot-stuffing must be found whatever the read boundaries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mailpull/pop3_body.h"

struct vec {
	const char *name;
	const char *in;      /* wire bytes; may carry bytes after the terminator */
	size_t inlen;
	const char *out;     /* decoded body */
	size_t outlen;
	size_t used;         /* bytes up to and including the terminator; 0: incomplete */
};

#define V(name, in, out, used) { name, in, sizeof(in) - 1, out, sizeof(out) - 1, used }
#define DONE_AT(s) (sizeof(s) - 1)

static const struct vec vecs[] = {
	V("empty body", ".\r\n", "", 3),
	V("empty body, trailing reply", ".\r\n+OK next\r\n", "", 3),
	V("one line", "Subject: x\r\n\r\nhi\r\n.\r\n", "Subject: x\n\nhi\n", 21),
	V("stuffed dot", "..foo\r\n.\r\n", ".foo\n", 10),
	V("line of two dots", "..\r\n.\r\n", ".\n", 7),
	V("line of three dots", "...\r\n.\r\n", "..\n", 8),
	V("dot then text unstuffed", ".foo\r\n.\r\n", "foo\n", 9),
	V("dot mid line", "a.b\r\n.\r\n", "a.b\n", 8),
	V("dot at end of line", "a.\r\n.\r\n", "a.\n", 7),
	V("bare CR kept", "a\rb\r\n.\r\n", "a\rb\n", 8),
	V("CR CR LF", "a\r\r\n.\r\n", "a\r\n", 7),
	V("bare CR at line start", "\rx\r\n.\r\n", "\rx\n", 7),
	V("bare LF is a line end", "a\nb\r\n.\r\n", "a\nb\n", 8),
	V("bare LF then stuffed dot", "a\n..b\r\n.\r\n", "a\n.b\n", 10),
	V("bare LF then terminator", "a\n.\r\n", "a\n", 5),
	V("dot bare LF is not the end", "a\r\n.\nb\r\n.\r\n", "a\n.\nb\n", 11),
	V("dot CR X", "a\r\n.\rb\r\n.\r\n", "a\n\rb\n", 11),
	V("dot CR CR LF", ".\r\r\n.\r\n", "\r\n", 7),
	V("empty lines", "\r\n\r\n\r\n.\r\n", "\n\n\n", 9),
	V("only LFs", "\n\n.\r\n", "\n\n", 5),
	V("terminator then junk", "x\r\n.\r\n..\r\n.\r\n", "x\n", 6),
	V("incomplete: no terminator", "abc\r\n", "abc\n", 0),
	V("incomplete: dot CR", "abc\r\n.\r", "abc\n", 0),
	V("incomplete: held CR", "abc\r", "abc", 0),
	V("incomplete: dot LF", "abc\r\n.\n", "abc\n.\n", 0),
	V("NUL bytes pass", "a\0b\r\n.\r\n", "a\0b\n", 8),
	V("8bit", "\xc3\xa9t\xc3\xa9\r\n.\r\n", "\xc3\xa9t\xc3\xa9\n", 10),
	V("dot dot CR LF dot", "x\r\n..\r\n..\r\n.\r\n", "x\n.\n.\n", 14),
};

/*
 * Feeds v->in in chunks ending at cuts[0..ncut) and then len, checking the
 * contract on every call. The output buffer is exactly len + 1 bytes, so a
 * sanitizer catches any overrun.
 */
static void
feed_split(const struct vec *v, const size_t *cuts, size_t ncut)
{
	struct pop3_body b;
	char *got = malloc(v->inlen + 2);
	size_t gotlen = 0, pos = 0, end_at = 0;
	int done = 0;

	assert_non_null(got);
	pop3_body_init(&b);
	for (size_t k = 0; k <= ncut && !done; k++) {
		size_t stop = k < ncut ? cuts[k] : v->inlen;

		while (pos < stop && !done) {
			size_t len = stop - pos, outlen = 99, used = 99;
			char *out = malloc(len + 1);

			assert_non_null(out);
			done = pop3_body_feed(&b, v->in + pos, len, out, &outlen, &used);
			assert_true(outlen <= len + 1);
			assert_true(used <= len);
			if (!done)
				assert_int_equal(used, len);
			memcpy(got + gotlen, out, outlen);
			gotlen += outlen;
			pos += used;
			free(out);
			if (done)
				end_at = pos;
		}
	}
	if (v->used == 0) {
		assert_int_equal(done, 0);
	} else {
		assert_int_equal(done, 1);
		assert_int_equal(end_at, v->used);
	}
	if (gotlen != v->outlen || memcmp(got, v->out, gotlen) != 0)
		fail_msg("%s: decoded %zu bytes, want %zu", v->name, gotlen, v->outlen);
	assert_int_equal(b.bytes, v->outlen);
	free(got);
}

static void
test_whole(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++)
		feed_split(&vecs[i], NULL, 0);
}

static void
test_byte_by_byte(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
		size_t cuts[64];
		size_t n = vecs[i].inlen;

		assert_true(n < 64);
		for (size_t k = 0; k < n; k++)
			cuts[k] = k + 1;
		feed_split(&vecs[i], cuts, n);
	}
}

static void
test_every_split(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
		for (size_t a = 0; a <= vecs[i].inlen; a++) {
			size_t cut1[1] = { a };

			feed_split(&vecs[i], cut1, 1);
			for (size_t c = a; c <= vecs[i].inlen; c++) {
				size_t cut2[2] = { a, c };

				feed_split(&vecs[i], cut2, 2);
			}
		}
	}
}

/* After the terminator, further input is left alone. */
static void
test_after_done(void **state)
{
	struct pop3_body b;
	char out[16];
	size_t outlen, used;

	(void)state;
	pop3_body_init(&b);
	assert_int_equal(pop3_body_feed(&b, ".\r\n", 3, out, &outlen, &used), 1);
	assert_int_equal(pop3_body_feed(&b, "abc", 3, out, &outlen, &used), 1);
	assert_int_equal(outlen, 0);
	assert_int_equal(used, 0);
	assert_int_equal(pop3_body_feed(&b, "", 0, out, &outlen, &used), 1);
}

/* Zero-length input is harmless in every state. */
static void
test_empty_input(void **state)
{
	struct pop3_body b;
	char out[4];
	size_t outlen, used;

	(void)state;
	pop3_body_init(&b);
	assert_int_equal(pop3_body_feed(&b, "", 0, out, &outlen, &used), 0);
	assert_int_equal(outlen, 0);
	assert_int_equal(pop3_body_feed(&b, ".", 1, out, &outlen, &used), 0);
	assert_int_equal(pop3_body_feed(&b, "", 0, out, &outlen, &used), 0);
	assert_int_equal(pop3_body_feed(&b, "\r", 1, out, &outlen, &used), 0);
	assert_int_equal(pop3_body_feed(&b, "\n", 1, out, &outlen, &used), 1);
	assert_int_equal(b.bytes, 0);
}

/*
 * A large body with long lines, many stuffed lines and runs of bare CRs,
 * fed in uneven chunks, against a straightforward reference decoder.
 */
static size_t
reference_decode(const char *in, size_t len, char *out, size_t *ret_used)
{
	size_t o = 0, i = 0;

	while (i < len) {
		size_t e = i, next;

		while (e < len && in[e] != '\n')
			e++;
		next = e < len ? e + 1 : len;
		/* line is in[i..e) without LF; strip a CR before LF */
		size_t le = e;
		bool crlf = e < len && le > i && in[le - 1] == '\r';

		if (crlf)
			le--;
		if (crlf && le - i == 1 && in[i] == '.') {
			*ret_used = next;
			return o;
		}
		if (in[i] == '.' && !(le - i == 1 && !crlf && e < len))
			i++;
		memcpy(out + o, in + i, le - i);
		o += le - i;
		if (e < len)
			out[o++] = '\n';
		i = next;
	}
	*ret_used = 0;
	return o;
}

static void
test_large_random(void **state)
{
	size_t cap = 1 << 20, n = 0;
	char *in = malloc(cap + 8), *want = malloc(cap + 8), *got = malloc(cap + 8);
	char *out = malloc(70000);
	struct pop3_body b;
	size_t wantlen, wantused, gotlen = 0, pos = 0;
	unsigned seed = 12345;
	int done = 0;

	(void)state;
	assert_non_null(in);
	assert_non_null(want);
	assert_non_null(got);
	assert_non_null(out);
	while (n < cap - 100) {
		unsigned r = (seed = seed * 1103515245u + 12345u) >> 16;

		switch (r % 8) {
		case 0: in[n++] = '.'; break;
		case 1: in[n++] = '\r'; break;
		case 2: in[n++] = '\n'; break;
		case 3: in[n++] = '\r'; in[n++] = '\n'; break;
		case 4: in[n++] = '\r'; in[n++] = '\n'; in[n++] = '.'; in[n++] = '.'; break;
		default:
			for (unsigned k = r % 97; k > 0; k--)
				in[n++] = (char)('a' + k % 26);
			break;
		}
	}
	/* Make sure no accidental terminator sits inside, then end it. */
	for (size_t i = 0; i + 2 < n; i++)
		if (in[i] == '.' && in[i + 1] == '\r' && in[i + 2] == '\n')
			in[i] = 'x';
	memcpy(in + n, "\r\n.\r\n", 5);
	n += 5;
	wantlen = reference_decode(in, n, want, &wantused);
	assert_int_equal(wantused, n);

	pop3_body_init(&b);
	while (pos < n && !done) {
		unsigned r = (seed = seed * 1103515245u + 12345u) >> 16;
		size_t len = 1 + r % 65536, outlen, used;

		if (len > n - pos)
			len = n - pos;
		done = pop3_body_feed(&b, in + pos, len, out, &outlen, &used);
		memcpy(got + gotlen, out, outlen);
		gotlen += outlen;
		pos += used;
	}
	assert_int_equal(done, 1);
	assert_int_equal(pos, n);
	assert_int_equal(gotlen, wantlen);
	assert_memory_equal(got, want, wantlen);
	free(in);
	free(want);
	free(got);
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_after_done),
		cmocka_unit_test(test_empty_input),
		cmocka_unit_test(test_large_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
