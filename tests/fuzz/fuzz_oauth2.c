/*
 * libFuzzer target for the token endpoint's answers (oauth2_parse_token()).
 * Whatever the input, the result is one of the three the header promises:
 * 0 with an access token (and maybe a refresh token) that may go into a
 * SASL response and the token file (printable ASCII, no space) and no
 * error; -EACCES with an error name and no token; -EPROTO with nothing
 * set. A token accepted must be saved and loaded back unchanged.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailpull/oauth2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[128];

static void
check_token(const char *s)
{
	if (!s)
		return;
	if (!*s)
		abort();
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			abort();
}

/* The token file keeps what the parser accepted, byte for byte. */
static void
round_trip(const struct oauth2_token *t)
{
	struct oauth2_tokens in = { .refresh_token = t->refresh_token,
				    .access_token = t->access_token, .expires_at = t->expires_in };
	struct oauth2_tokens out = { 0 };

	if (!path[0])
		snprintf(path, sizeof(path), "%s/fuzz-oauth2-%ld.tokens",
			 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (long)getpid());
	if (oauth2_tokens_save(path, &in, NULL) < 0)
		abort();
	if (oauth2_tokens_load(path, &out, NULL) < 0 ||
	    strcmp(out.access_token, t->access_token) != 0 ||
	    (t->refresh_token ? !out.refresh_token ||
	     strcmp(out.refresh_token, t->refresh_token) != 0 : out.refresh_token != NULL) ||
	    out.expires_at != (t->expires_in < 0 ? 0 : t->expires_in))
		abort();
	oauth2_tokens_clear(&out);
	unlink(path);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct oauth2_token t;
	int r;

	memset(&t, 0x5a, sizeof(t));
	r = oauth2_parse_token((const char *)data, size, &t);
	if (r == -EPROTO || r == -ENOMEM)
		return 0;
	if (r == 0) {
		if (!t.access_token || t.error || t.error_description || t.expires_in < -1)
			abort();
		check_token(t.access_token);
		check_token(t.refresh_token);
		round_trip(&t);
	} else if (r == -EACCES) {
		if (!t.error || t.access_token || t.refresh_token || t.interval < -1)
			abort();
	} else {
		abort();
	}
	oauth2_token_clear(&t);
	return 0;
}
