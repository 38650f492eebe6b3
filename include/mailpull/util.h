/* Helpers usable everywhere: parsing, paths, time, sanitizing. None takes a struct mp_err. */
#ifndef MAILPULL_UTIL_H
#define MAILPULL_UTIL_H

#include <sys/types.h>

#include "mailpull/common.h"

/*
 * Copies src into dst (always NUL-terminated, truncated to dstlen-1, never
 * in the middle of a character or escape), replacing control bytes (< 0x20,
 * 0x7f), C1 controls and bytes that are not valid UTF-8 with "\xNN" so
 * server text can never move a terminal cursor or start an escape
 * sequence, and the bidirectional formatting characters (see
 * util_is_bidi_control()) with "\uNNNN" so it cannot reorder the line it
 * is shown on. Other valid UTF-8 is kept. Returns strlen(dst). Cannot fail.
 */
size_t util_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen);

/*
 * Whether a file owned by uid may steer mailpull (its configuration, a
 * password_file): owned by the user running mailpull, or by root, who can
 * change any file anyway (OpenSSH's rule for its own files). Cannot fail.
 */
bool util_owner_trusted(uid_t uid);

/*
 * Whether cp is a bidirectional formatting character: U+202A..U+202E
 * (embeddings, overrides), U+2066..U+2069 (isolates), U+200E, U+200F and
 * U+061C (marks). Cannot fail.
 */
bool util_is_bidi_control(uint32_t cp);

/*
 * Parses a duration: a plain integer (seconds) or one with a suffix s, m, h, d
 * ("90", "90s", "5m", "2h", "7d"). Returns 0 or -EINVAL / -ERANGE.
 */
int util_parse_duration(const char *s, uint64_t *ret_seconds);

/*
 * Parses a size: integer bytes or with suffix k/K, m/M, g/G (powers of 1024).
 * Errors: -EINVAL (not such a size), -ERANGE (too big).
 */
int util_parse_size(const char *s, uint64_t *ret_bytes);

/*
 * Parses s[0..len) as an unsigned decimal without sign or spaces.
 * Errors: -EINVAL (empty or not all digits), -ERANGE (overflow).
 */
int util_parse_u64(const char *s, size_t len, uint64_t *ret);

/*
 * Expands a leading "~" or "~/" to $HOME. Returns a malloc'd string the
 * caller owns, or NULL on ENOMEM / unset HOME (errno set).
 */
char *util_expand_home(const char *path);

/*
 * mkdir -p with the given mode for every created directory; the parent of
 * each one created is fsynced so the new entries survive a crash.
 * 0 or -errno (-ENOTDIR when path exists but is not a directory, or the
 * error of a failed mkdir or fsync).
 */
int util_mkdir_p(const char *path, unsigned mode);

/* write(2) until done, retrying EINTR and short writes. 0 or -errno (-EIO if nothing moves). */
int util_write_all(int fd, const char *p, size_t len);

/* fsync a directory by path. Errors: -errno of open() or fsync(). */
int util_fsync_dir(const char *path);

/* Monotonic clock in milliseconds. Cannot fail. */
int64_t util_now_ms(void);

/* The value of a hex digit, either case; -1 for any other byte. Cannot fail. */
int util_hex_value(char c);

/* 32-bit FNV-1a hash (used for stable short tags). Cannot fail. */
uint32_t util_fnv1a(const void *data, size_t len);

/*
 * base64 (RFC 4648 section 4) one character at a time, shared by SASL
 * (strict, padded), RFC 2047 encoded words (padding optional) and IMAP's
 * modified UTF-7 (RFC 3501 section 5.1.3: ',' instead of '/', no padding).
 * The caller handles padding; only data characters are put. c63 is the
 * 64th character of the alphabet, '/' or ','.
 */
struct util_b64 {
	uint32_t bits;
	unsigned nbits;
	char c63;
};

#define UTIL_B64_STD ((struct util_b64){ .c63 = '/' })
#define UTIL_B64_MUTF7 ((struct util_b64){ .c63 = ',' })

/* The alphabet's character for the six-bit value v (v < 64). Cannot fail. */
char util_b64_digit(unsigned v, char c63);

/*
 * Takes one data character. Returns 1 with a completed byte in *ret_byte,
 * 0 when the character completed none, or -EBADMSG for a character outside
 * the alphabet (padding included).
 */
int util_b64_put(struct util_b64 *d, char c, unsigned char *ret_byte);

/*
 * After the last data character: 0 when the characters make whole bytes
 * (not a lone six bits: 4n+1 characters) and, when strict, the bits left
 * over are zero, so that every input has one reading; else -EBADMSG.
 */
int util_b64_end(const struct util_b64 *d, bool strict);

/*
 * Strict padded base64 (SASL, SCRAM: whole quanta, padding only at the
 * end, the bits padding drops zero) of s[0..len) into out[0..outmax).
 * 0 and *ret_len, or -EBADMSG (also when it does not fit). Cannot fail
 * otherwise.
 */
int util_b64_decode_strict(const char *s, size_t len, unsigned char *out, size_t outmax,
			   size_t *ret_len);

/*
 * GS2 saslname (RFC 5801 section 5.1; SCRAM, OAUTHBEARER): "," and "="
 * written "=2C" and "=3D". malloc'd; NULL on ENOMEM.
 */
char *util_saslname(const char *s);

/*
 * Wipes a NUL-terminated string that held a secret (explicit_bzero), then
 * frees it. Accepts NULL. Cannot fail.
 */
void util_free_secret(char *s);

/* Duplicates n bytes into a NUL-terminated malloc'd string (NULL on ENOMEM). */
char *util_strndup(const char *s, size_t n);

#endif
