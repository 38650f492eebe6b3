/*
 * Strict UTF-8 (RFC 3629) in small pieces, shared by the text codecs
 * (mimeword, mutf7, folder). Pure: no I/O, no allocation, no struct mp_err.
 */
#ifndef MAILPULL_UTF8_H
#define MAILPULL_UTF8_H

#include "mailpull/common.h"

/* The replacement character U+FFFD, encoded. */
#define UTF8_REPLACEMENT "\xef\xbf\xbd"

/*
 * Decodes the sequence at s[0..len). Strict, as RFC 3629 section 4 asks:
 * overlong forms, surrogates (U+D800..U+DFFF), values above U+10FFFF and
 * truncated sequences are refused. NUL decodes to U+0000 like any byte.
 * Returns the sequence length (1..4) and sets *ret_cp, or -EBADMSG (also
 * for len == 0).
 */
int utf8_decode(const char *s, size_t len, uint32_t *ret_cp);

/*
 * Encodes the scalar value cp into out[0..4). Returns its length (1..4),
 * or -EINVAL for a surrogate or a value above U+10FFFF.
 */
int utf8_encode(uint32_t cp, char out[static 4]);

/* True when s[0..len) is entirely valid UTF-8 (as utf8_decode judges). Cannot fail. */
bool utf8_valid(const char *s, size_t len);

#endif
