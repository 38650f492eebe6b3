/*
 * libFuzzer target for imap_parse. The first byte picks the limits and the
 * streaming rules; the rest is server input. It is parsed twice, whole and
 * in chunks whose sizes come from the input itself, and both runs must give
 * the same responses, the same error and the same message: the parser's
 * result may not depend on how the network split the bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/imap_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct digest {
	uint64_t h;
	int rc;
	char err[160];
};

static void
mix(struct digest *d, const void *buf, size_t len)
{
	const unsigned char *b = buf;

	for (size_t i = 0; i < len; i++) {
		d->h ^= b[i];
		d->h *= 0x100000001b3ull;
	}
}

/* Exercises the helpers on every argument; none may crash on any tree. */
static void
walk(struct digest *d, const struct imap_arg *args, size_t count, unsigned depth)
{
	for (size_t i = 0; i < count; i++) {
		const struct imap_arg *a = &args[i];
		const char *s;
		size_t len;
		uint32_t u32;
		uint64_t u64;
		int r[3];

		r[0] = imap_arg_u32(a, &u32);
		r[1] = imap_arg_u64(a, &u64);
		r[2] = imap_arg_string(a, &s, &len);
		mix(d, r, sizeof(r));
		if (r[2] == 0 && s && s[len] != '\0')
			abort();
		if (a->type == IMAP_ARG_LIST) {
			if (depth > 100)
				abort();
			(void)imap_fetch_item(a, "BODY[]");
			(void)imap_fetch_item(a, "UID");
			walk(d, a->list, a->count, depth + 1);
		}
	}
}

static void
record(struct digest *d, const struct imap_response *r)
{
	char buf[4096];
	size_t need = imap_response_format(r, buf, sizeof(buf));

	if (strlen(buf) != (need < sizeof(buf) ? need : sizeof(buf) - 1))
		abort();
	mix(d, &need, sizeof(need));
	mix(d, buf, strlen(buf));
	mix(d, &r->type, sizeof(r->type));
	mix(d, &r->status, sizeof(r->status));
	if (r->code && imap_response_code_is(r, "UIDVALIDITY"))
		mix(d, "U", 1);
	walk(d, r->args, r->count, 0);
	walk(d, r->code_args, r->code_count, 0);
}

static struct imap_parser *
make_parser(uint8_t mode)
{
	struct imap_parser_limits small = {
		.max_line = 512, .max_depth = 6, .max_literal = 64,
		.max_literal_total = 100, .max_args = 64,
	};
	struct imap_parser *p;

	if (imap_parser_new(mode & 1 ? &small : NULL, &p) < 0)
		abort();
	if (mode & 2)
		imap_parser_stream_threshold(p, (mode >> 4) * 3u);
	if ((mode & 4) && imap_parser_stream_item(p, "BODY[]") < 0)
		abort();
	if ((mode & 8) && imap_parser_stream_item(p, "BINARY[]") < 0)
		abort();
	return p;
}

/* Feeds data in chunks of 1..16 bytes, from sizes, or whole when sizes is NULL. */
static void
run(uint8_t mode, const uint8_t *data, size_t size, const uint8_t *sizes, struct digest *d)
{
	struct imap_parser *p = make_parser(mode);
	size_t pos = 0, k = 0;
	int r = 0;

	memset(d, 0, sizeof(*d));
	d->h = 0xcbf29ce484222325ull;
	while (pos < size) {
		size_t chunk = sizes ? (size_t)(sizes[k++ % size] % 16) + 1 : size - pos;
		const struct imap_response *resp = NULL;
		size_t used;

		if (chunk > size - pos)
			chunk = size - pos;
		r = imap_parser_feed(p, (const char *)data + pos, chunk, &used, &resp);
		if (used > chunk)
			abort();
		pos += used;
		if (r == IMAP_PARSE_DONE) {
			record(d, resp);
		} else if (r == IMAP_PARSE_LITERAL) {
			uint64_t lit;
			const char *item;

			if (imap_parser_literal(p, &lit, NULL, &item) < 0)
				abort();
			mix(d, &lit, sizeof(lit));
			if (lit > size - pos)
				break;
			pos += (size_t)lit;
			r = imap_parser_literal_done(p);
			if (r < 0)
				break;
		} else if (r < 0) {
			break;
		} else if (used != chunk) {
			abort();
		}
	}
	if (r >= 0)
		r = imap_parser_eof(p);
	d->rc = r;
	snprintf(d->err, sizeof(d->err), "%s", imap_parser_error(p));
	imap_parser_free(p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct digest whole, chunked;

	if (size < 1)
		return 0;
	run(data[0], data + 1, size - 1, NULL, &whole);
	run(data[0], data + 1, size - 1, data, &chunked);
	if (whole.h != chunked.h || whole.rc != chunked.rc || strcmp(whole.err, chunked.err) != 0) {
		fprintf(stderr, "whole %d [%s] vs chunked %d [%s]\n", whole.rc, whole.err,
			chunked.rc, chunked.err);
		abort();
	}
	return 0;
}
