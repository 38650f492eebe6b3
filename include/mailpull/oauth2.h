/*
 * Built-in OAuth2 (RFC 6749) for accounts with `oauth2` set: the first
 * grant on a terminal (`mailpull authorize`), then access tokens on demand.
 * Tokens live in a->oauth2_token_file: mode 0600, replaced atomically (tmp,
 * fsync, rename, directory fsync), so a rotated refresh token is durable
 * before the old one is gone, and a crash at any instant leaves the old or
 * the new file whole. HTTPS goes through libcurl with the same verification
 * as mail (system store, or the account's tls_ca_file). Token strings are
 * secrets: wiped when freed, never logged. Callers hold the account lock.
 */
#ifndef MAILPULL_OAUTH2_H
#define MAILPULL_OAUTH2_H

#include <stdio.h>

#include "mailpull/common.h"
#include "mailpull/config.h"
#include "mailpull/err.h"

/* A provider's endpoints and scope, for the config's defaults. */
struct oauth2_preset {
	const char *token_url, *auth_url, *device_url, *scope;
};

/* The preset of google or microsoft; NULL for none and custom. Cannot fail. */
const struct oauth2_preset *oauth2_preset(enum mp_oauth2 o);

/*
 * An access token for a (secret: free with util_free_secret()): the cached
 * one while it has more than a minute left (unless refresh), else a
 * refresh-token grant, whose answer (a new access token, maybe a rotated
 * refresh token) is saved before it is returned. *ret_cached (may be
 * NULL) says whether it came from the file: a server that refuses a
 * cached token may have revoked it early, and a fresh one is worth one
 * more try.
 * Errors: -ENOENT (MP_EX_NOPERM: never authorized: "run mailpull authorize
 * NAME"), -EACCES (MP_EX_NOPERM: invalid_grant or another refusal of the
 * refresh token: "run mailpull authorize NAME again", with the provider's
 * error_description), -EPROTO (MP_EX_PROTOCOL: an answer that is not a
 * token response), -ETIMEDOUT, -ECONNREFUSED, -EIO (MP_EX_TEMPFAIL: the
 * endpoint could not be reached, or answered 5xx), -EINVAL (MP_EX_CONFIG:
 * TLS verification of the endpoint failed, a bad URL, no oauth2 on a, a
 * token file of a newer version), -ENOMEM; and the token file's errors
 * (oauth2_tokens_load(), oauth2_tokens_save()): -EACCES (MP_EX_CONFIG: a
 * file others can open), -EBADMSG, -EIO, -ENOSPC (MP_EX_IOERR).
 * MAILPULL_CRASH_OAUTH2=1 in the environment makes the process _exit(101)
 * after a token answer is parsed and before it is saved (crash tests).
 */
int oauth2_access_token(const struct mp_account *a, bool refresh, char **ret, bool *ret_cached,
			struct mp_err *err) MP_WUR;

/*
 * The first grant, talking to the user on in/out (a terminal): the device
 * authorization grant (RFC 8628) when the account has a device URL (the
 * code and URL are printed, the token endpoint polled as the provider
 * says), else the authorization code grant with PKCE S256 (RFC 7636) and a
 * loopback redirect (RFC 8252: http://127.0.0.1:PORT/ on a port of our
 * own; the URL to open is printed, the state parameter checked; the
 * address the browser was sent to may instead be pasted as a line on in,
 * for a browser on another machine; in may be NULL). What it prints is
 * in mailpull(1), AUTHORIZE. The tokens are saved as for
 * oauth2_access_token(). Errors: -EACCES
 * (MP_EX_NOPERM: the user or provider refused, the code expired), -EPROTO,
 * -ETIMEDOUT (nobody answered within the provider's expiry, or 10 minutes
 * for the redirect), the errors of oauth2_access_token().
 */
int oauth2_authorize(const struct mp_account *a, FILE *in, FILE *out, struct mp_err *err) MP_WUR;

/*
 * A token endpoint's JSON answer (RFC 6749 sections 5.1 and 5.2; RFC 8628
 * section 3.5's errors), parsed: pure, for tests and fuzzing. Strings are
 * malloc'd (free with oauth2_token_clear()). Returns 0 for a token, or
 * -EACCES with error/error_description set for an error answer; -EPROTO
 * for anything else (not JSON, no access_token, a token holding a control
 * byte, a token_type other than Bearer); -ENOMEM.
 */
struct oauth2_token {
	char *access_token, *refresh_token;
	int64_t expires_in;        /* seconds; -1: not given */
	char *error, *error_description;
	int64_t interval;          /* device grant's slow_down: seconds; -1: not given */
};
int oauth2_parse_token(const char *json, size_t len, struct oauth2_token *ret) MP_WUR;
void oauth2_token_clear(struct oauth2_token *t);

/*
 * The token file (a->oauth2_token_file), text, one "KEY VALUE" a line:
 *   mailpull-oauth2 1
 *   refresh_token TOKEN      (absent when the provider gave none)
 *   access_token TOKEN
 *   expires_at UNIX-SECONDS  (when the access token expires)
 * A file of a newer version is refused; unknown keys are ignored.
 */
struct oauth2_tokens {
	char *refresh_token, *access_token;  /* NULL: none */
	int64_t expires_at;
};

/*
 * Loads path into *ret (free with oauth2_tokens_clear()). Errors: -ENOENT
 * (not recorded: no file), -EACCES (MP_EX_CONFIG: not a regular file,
 * readable or writable by group or others, or owned by another user:
 * the message says how to fix it), -EBADMSG (MP_EX_IOERR: not a token
 * file, or damaged), -EINVAL (MP_EX_CONFIG: a newer version), -EIO or
 * another errno of open()/read() (MP_EX_IOERR), -ENOMEM.
 */
int oauth2_tokens_load(const char *path, struct oauth2_tokens *ret, struct mp_err *err) MP_WUR;

/*
 * Replaces path with t atomically and durably: PATH.tmp written (mode
 * 0600), fsynced, renamed over path, the directory fsynced; the directory
 * is created (0700) when missing. A crash leaves the old file or the new
 * one, whole. Errors: -EINVAL (MP_EX_IOERR: a token holding a byte that
 * is not printable ASCII), -EIO, -ENOSPC or another errno (MP_EX_IOERR),
 * -ENOMEM.
 */
int oauth2_tokens_save(const char *path, const struct oauth2_tokens *t, struct mp_err *err) MP_WUR;

/* Wipes and frees the tokens (the struct itself is the caller's). Accepts NULL. */
void oauth2_tokens_clear(struct oauth2_tokens *t);

/*
 * PKCE S256 (RFC 7636 section 4.2): BASE64URL(SHA256(verifier)), no
 * padding, into ret (43 characters and a NUL). Cannot fail.
 */
void oauth2_pkce_challenge(const char *verifier, char ret[44]);

#endif
