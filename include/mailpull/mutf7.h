/*
 * IMAP modified UTF-7 (RFC 3501 section 5.1.3, unchanged in RFC 9051
 * section 5.1.3 for servers without UTF8=ACCEPT): the encoding of mailbox
 * names on the wire. Printable US-ASCII (0x20..0x7e) stands for itself, "&"
 * is written "&-", anything else is UTF-16BE in modified BASE64 (',' in
 * place of '/', no '=' padding) between "&" and "-".
 *
 * Both directions are strict: only the one canonical encoding of a name is
 * accepted, so a name and its encoding map one to one (the state store and
 * the Maildir folder name can rely on it). Pure: no I/O.
 */
#ifndef MAILPULL_MUTF7_H
#define MAILPULL_MUTF7_H

#include "mailpull/common.h"

/* Longest input either function accepts, in bytes. */
#define MUTF7_INPUT_MAX 65536

/*
 * Decodes the modified UTF-7 in[0..len) into UTF-8. On success *ret_out is
 * a NUL-terminated malloc'd string the caller frees; it never contains NUL.
 * Errors:
 *   -EBADMSG  not canonical modified UTF-7: a byte outside 0x20..0x7e, an
 *             unterminated "&" run, a character outside the modified BASE64
 *             alphabet, an empty run other than "&-", an extra BASE64
 *             character or non-zero padding bits at the end of a run, a
 *             printable US-ASCII character or U+0000 inside a run, a run
 *             right after another run (they would have been one), or an
 *             unpaired or reversed UTF-16 surrogate
 *   -E2BIG    len > MUTF7_INPUT_MAX
 *   -ENOMEM   out of memory
 * *ret_out is left untouched on error.
 */
int mutf7_decode(const char *in, size_t len, char **ret_out) MP_WUR;

/*
 * Encodes the UTF-8 in[0..len) into canonical modified UTF-7. On success
 * *ret_out is a NUL-terminated malloc'd string the caller frees.
 * Errors:
 *   -EBADMSG  in is not valid UTF-8 (RFC 3629: overlong forms, surrogates,
 *             values above U+10FFFF, truncated sequences) or holds a NUL
 *   -E2BIG    len > MUTF7_INPUT_MAX
 *   -ENOMEM   out of memory
 * *ret_out is left untouched on error.
 */
int mutf7_encode(const char *in, size_t len, char **ret_out) MP_WUR;

#endif
