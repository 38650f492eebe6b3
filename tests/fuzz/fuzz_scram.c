/*
 * libFuzzer target for SCRAM (scram.h) and the SASL client (sasl.h). The
 * first byte picks the options (bit 0 SHA-256, bits 1-2 the GS2 flag, bit
 * 3 SASLprep); the rest is split at LF into a server-first message, a
 * server-final message and a password ("pencil" when absent).
 *
 * 1. The pure parser takes the server-first message: what it accepts has a
 *    printable nonce, a salt and a count within their caps.
 * 2. A client with the RFC 5802 example's nonce takes both messages, so
 *    the fuzzer can reach the proof and the signature check. Counts the
 *    client would hash with for long (over 8192) are parsed but not hashed.
 * 3. SASL clients (SCRAM with a random nonce, OAuth, LOGIN) take the
 *    messages as challenges, raw and base64'd. A failure must say why.
 * Nothing may crash or leak, whatever the input.
 *
 *   make build-fuzz/fuzz_scram && build-fuzz/fuzz_scram -dict=tests/fuzz/scram.dict \
 *     tests/fuzz/corpus/scram
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/sasl.h"
#include "mailpull/util.h"
#include "scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NONCE "fyko+d2lbbFgONRv9qkxdawL"
#define HASHED_COUNT_MAX 8192u

struct input {
	const char *part[3];
	size_t len[3];
};

/* Splits at the first two LFs. */
static void
split(const char *p, size_t n, struct input *in)
{
	memset(in, 0, sizeof(*in));
	for (int k = 0; k < 3; k++) {
		const char *lf = k < 2 ? memchr(p, '\n', n) : NULL;
		size_t l = lf ? (size_t)(lf - p) : n;

		in->part[k] = p;
		in->len[k] = l;
		if (!lf) {
			for (int j = k + 1; j < 3; j++)
				in->part[j] = NULL;
			return;
		}
		p += l + 1;
		n -= l + 1;
	}
}

static void
check_parse(const char *msg, size_t len)
{
	struct scram_first sf;
	char why[128] = "";
	int r = scram_parse_first(msg, len, &sf, why, sizeof(why));

	if (r < 0) {
		if (!why[0] && r != -EACCES)
			abort();
		return;
	}
	if (sf.nonce_len == 0 || sf.nonce_len > SCRAM_NONCE_MAX || sf.salt_len == 0 ||
	    sf.salt_len > SCRAM_SALT_B64_MAX || sf.iter_len == 0 ||
	    sf.iter_len > SCRAM_COUNT_DIGITS)
		abort();
	for (size_t i = 0; i < sf.nonce_len; i++)
		if (sf.nonce[i] <= 0x20 || sf.nonce[i] >= 0x7f || sf.nonce[i] == ',')
			abort();
}

/* Whether the server-first message would make the client hash for long. */
static bool
too_slow(const char *msg, size_t len)
{
	struct scram_first sf;

	if (scram_parse_first(msg, len, &sf, NULL, 0) < 0)
		return false;
	return sf.iter > HASHED_COUNT_MAX && sf.iter <= SCRAM_ITER_MAX;
}

static void
run_core(const struct scram_params *p, const struct input *in)
{
	struct scram *s = NULL;
	char *first = NULL, *final = NULL;
	size_t len;

	if (scram_new(p, &s) < 0)
		return;
	if (scram_client_first(s, &first, &len) < 0)
		abort();
	free(first);
	if (scram_server_first(s, in->part[0], in->len[0], &final, &len) == 0) {
		if (strlen(final) != len || !strstr(final, ",p="))
			abort();
		util_free_secret(final);
		if (in->part[1] && scram_server_final(s, in->part[1], in->len[1]) == 0 &&
		    !scram_verified(s))
			abort();
	} else if (!scram_error(s)[0]) {
		abort();
	}
	if (scram_verified(s) && scram_error(s)[0])
		abort();
	scram_free(s);
}

/* Feeds each message as a challenge, as sent and base64'd. */
static void
run_client(const struct sasl_params *p, const struct input *in)
{
	for (int b64 = 0; b64 < 2; b64++) {
		struct sasl_session *c = NULL;
		char *ir = NULL;

		if (sasl_session_new(p, &c) < 0)
			return;
		if (sasl_session_initial(c, &ir) < 0)
			abort();
		sasl_free(ir);
		for (int k = 0; k < 2 && in->part[k]; k++) {
			char *chal = NULL, *resp = NULL;
			int r;

			if (b64 && sasl_base64_encode(in->part[k], in->len[k], &chal) < 0)
				abort();
			if (b64)
				r = sasl_session_step(c, chal, strlen(chal), &resp);
			else
				r = sasl_session_step(c, in->part[k], in->len[k], &resp);
			free(chal);
			if (r < 0) {
				if (resp || !sasl_session_error(c)[0])
					abort();
				break;
			}
			sasl_free(resp);
		}
		(void)sasl_session_finish(c);
		sasl_session_free(c);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char cb[32] = { 1, 2, 3 };
	static const enum sasl_mech others[] = { SASL_LOGIN, SASL_XOAUTH2, SASL_OAUTHBEARER,
						 SASL_PLAIN };
	struct scram_params sp = { .user = "user", .nonce = NONCE, .cb_type = "tls-exporter",
				   .cb_data = cb, .cb_len = sizeof(cb) };
	struct sasl_params p = { .user = "user", .secret = "pencil", .host = "h", .port = 110,
				 .cb_type = "tls-exporter", .cb_data = cb, .cb_len = sizeof(cb) };
	struct input in;
	char *password = NULL;
	unsigned mode;

	if (size < 1 || size > 16384)
		return 0;
	mode = data[0];
	split((const char *)data + 1, size - 1, &in);
	check_parse(in.part[0], in.len[0]);
	if (too_slow(in.part[0], in.len[0]))
		return 0;
	if (in.part[2]) {
		password = malloc(in.len[2] + 1);
		if (!password)
			return 0;
		memcpy(password, in.part[2], in.len[2]);
		password[in.len[2]] = '\0';
	}
	sp.hash = mode & 1 ? SCRAM_SHA_256 : SCRAM_SHA_1;
	sp.gs2 = (enum scram_gs2)((mode >> 1) & 3);
	sp.saslprep = mode & 8;
	sp.password = password ? password : "pencil";
	run_core(&sp, &in);

	p.mech = mode & 1 ? SASL_SCRAM_SHA_256_PLUS : SASL_SCRAM_SHA_1;
	p.saslprep = sp.saslprep;
	p.secret = sp.password;
	run_client(&p, &in);
	p.mech = others[(mode >> 4) & 3];
	run_client(&p, &in);
	util_free_secret(password);
	return 0;
}
