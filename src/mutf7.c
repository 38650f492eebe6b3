/* IMAP modified UTF-7 mailbox names (RFC 3501 section 5.1.3). */
#include <errno.h>
#include <stdlib.h>

#include "mailpull/mutf7.h"
#include "mailpull/utf8.h"
#include "mailpull/util.h"

static bool
is_direct(uint32_t cp)
{
	return cp >= 0x20 && cp <= 0x7e;
}

/*
 * Takes one UTF-16 code unit of a run. *hi holds a pending high surrogate.
 * Writes the UTF-8 of a completed character at *o.
 */
static int
decode_unit(uint32_t u, uint32_t *hi, char **o)
{
	uint32_t cp;
	int n;

	if (*hi != 0) {
		if (u < 0xdc00 || u > 0xdfff)
			return -EBADMSG;
		cp = 0x10000 + ((*hi - 0xd800) << 10) + (u - 0xdc00);
		*hi = 0;
	} else if (u >= 0xd800 && u <= 0xdbff) {
		*hi = u;
		return 0;
	} else if (u >= 0xdc00 && u <= 0xdfff) {
		return -EBADMSG;
	} else {
		cp = u;
	}
	/*
	 * "Modified BASE64 MUST NOT be used to represent any printing US-ASCII
	 * character which can represent itself"; U+0000 has no place in a
	 * C string name.
	 */
	if (cp == 0 || is_direct(cp))
		return -EBADMSG;
	n = utf8_encode(cp, *o);
	if (n < 0)
		return -EBADMSG;
	*o += n;
	return 0;
}

/*
 * Decodes the run starting after "&" at in[*pos], up to and including the
 * closing "-". Output goes to *o.
 */
static int
decode_run(const char *in, size_t len, size_t *pos, char **o)
{
	struct util_b64 d = UTIL_B64_MUTF7;
	uint32_t hi = 0;
	unsigned nbytes = 0;
	unsigned char first = 0;
	size_t i = *pos;
	int r;

	/* The run is UTF-16BE in base64: two bytes make a unit. */
	for (; i < len && in[i] != '-'; i++) {
		unsigned char c;

		r = util_b64_put(&d, in[i], &c);
		if (r <= 0) {
			if (r < 0)
				return r;
			continue;
		}
		if (nbytes++ % 2 == 0) {
			first = c;
			continue;
		}
		r = decode_unit((uint32_t)first << 8 | c, &hi, o);
		if (r < 0)
			return r;
	}
	if (i == len)
		return -EBADMSG;
	/*
	 * Canonical form: at least one unit, a dangling high surrogate is
	 * never complete, no half unit, fewer than 6 leftover bits (else a
	 * character too many) and those bits zero.
	 */
	if (nbytes < 2 || nbytes % 2 != 0 || hi != 0 || util_b64_end(&d, true) < 0)
		return -EBADMSG;
	*pos = i + 1;
	return 0;
}

int
mutf7_decode(const char *in, size_t len, char **ret_out)
{
	size_t i = 0, run_end = SIZE_MAX;
	char *out, *o;
	int r;

	if (len > MUTF7_INPUT_MAX)
		return -E2BIG;
	/*
	 * A run spends 8/3 characters on a 16-bit unit that becomes at most 3
	 * bytes of UTF-8: 9 bytes out for 8 in, so twice the input is ample.
	 */
	out = malloc(2 * len + 1);
	if (!out)
		return -ENOMEM;
	o = out;
	while (i < len) {
		unsigned char c = (unsigned char)in[i];

		if (!is_direct(c)) {
			r = -EBADMSG;
			goto fail;
		}
		if (c != '&') {
			*o++ = (char)c;
			i++;
			continue;
		}
		if (i + 1 < len && in[i + 1] == '-') {
			*o++ = '&';
			i += 2;
			continue;
		}
		/* Two runs back to back would have been written as one. */
		if (run_end == i) {
			r = -EBADMSG;
			goto fail;
		}
		i++;
		r = decode_run(in, len, &i, &o);
		if (r < 0)
			goto fail;
		run_end = i;
	}
	*o = '\0';
	*ret_out = out;
	return 0;
fail:
	free(out);
	return r;
}

struct b64w {
	char *o;
	uint32_t bits;
	unsigned nbits;
};

static void
b64_push16(struct b64w *w, uint32_t unit)
{
	w->bits = (w->bits << 16) | unit;
	w->nbits += 16;
	while (w->nbits >= 6) {
		w->nbits -= 6;
		*w->o++ = util_b64_digit((w->bits >> w->nbits) & 0x3f, ',');
	}
	w->bits &= (1u << w->nbits) - 1;
}

/* Ends a run: the leftover bits, zero-padded to 6, then "-". */
static void
b64_close(struct b64w *w)
{
	if (w->nbits > 0)
		*w->o++ = util_b64_digit((w->bits << (6 - w->nbits)) & 0x3f, ',');
	w->bits = 0;
	w->nbits = 0;
	*w->o++ = '-';
}

int
mutf7_encode(const char *in, size_t len, char **ret_out)
{
	struct b64w w = { 0 };
	bool in_run = false;
	size_t i = 0;
	char *out;

	if (len > MUTF7_INPUT_MAX)
		return -E2BIG;
	/* Worst case: a lone control byte becomes "&AAE-", five bytes. */
	out = malloc(5 * len + 1);
	if (!out)
		return -ENOMEM;
	w.o = out;
	while (i < len) {
		uint32_t cp;
		int n = utf8_decode(in + i, len - i, &cp);

		if (n < 0 || cp == 0) {
			free(out);
			return -EBADMSG;
		}
		i += (size_t)n;
		if (is_direct(cp)) {
			if (in_run)
				b64_close(&w);
			in_run = false;
			*w.o++ = (char)cp;
			if (cp == '&')
				*w.o++ = '-';
			continue;
		}
		if (!in_run)
			*w.o++ = '&';
		in_run = true;
		if (cp >= 0x10000) {
			cp -= 0x10000;
			b64_push16(&w, 0xd800 | (cp >> 10));
			b64_push16(&w, 0xdc00 | (cp & 0x3ff));
		} else {
			b64_push16(&w, cp);
		}
	}
	if (in_run)
		b64_close(&w);
	*w.o = '\0';
	*ret_out = out;
	return 0;
}
