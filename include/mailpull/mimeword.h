/*
 * Header text for display: RFC 2047 encoded words decoded to UTF-8, made
 * safe to print on a terminal. Used by preview for sender and subject
 * (IMAP ENVELOPE fields, POP3 TOP headers). Pure: no I/O; charsets are
 * converted with the C library's iconv.
 *
 * The output is always valid UTF-8 without C0 controls other than TAB,
 * DEL, C1 controls or bidirectional overrides: whatever a server sends,
 * printing the result cannot move the cursor, start an escape sequence or
 * reorder the line around it.
 */
#ifndef MAILPULL_MIMEWORD_H
#define MAILPULL_MIMEWORD_H

#include "mailpull/common.h"

/*
 * Longest input mimeword_decode() takes, in bytes. Callers cap a header
 * before decoding (the reader's line and header caps are far below this);
 * the output is bounded by a small multiple of the input.
 */
#define MIMEWORD_INPUT_MAX 65536

/*
 * Decodes the header field body in[0..len) (no field name) for display:
 *
 *  - Folded lines are unfolded (RFC 5322 section 2.2.3): CRLF or a bare LF
 *    followed by a space or tab is removed, as is a line end at the end.
 *  - Encoded words "=?charset?B|Q?text?=" (RFC 2047 section 2, either case
 *    for B and Q) are decoded, with charsets converted to UTF-8 by iconv
 *    ("utf-8", "us-ascii", "iso-8859-*", "windows-125x", "koi8-r",
 *    "gb2312", "shift_jis", "euc-jp", "iso-2022-jp" and whatever else the
 *    C library knows); an RFC 2231 language suffix ("utf-8*en") is
 *    ignored. A few labels are read as the superset mail software actually
 *    sends under them (WHATWG Encoding): gb2312 and gbk as GB18030,
 *    iso-8859-1 as windows-1252, euc-kr and ks_c_5601-1987 as CP949,
 *    shift_jis as CP932.
 *  - Whitespace between two adjacent encoded words is dropped (RFC 2047
 *    section 6.2), and adjacent words in the same charset are converted
 *    together, so a character split across two words still decodes.
 *  - Encoded words are recognized even when not separated from the text
 *    around them, as mail user agents do in practice.
 *  - A malformed encoded word (bad syntax, bad BASE64, "=" in Q not
 *    followed by two hex digits) or one in a charset iconv does not know is
 *    left as it is.
 *  - Raw 8-bit text is taken as UTF-8; each byte of an invalid sequence
 *    becomes U+FFFD, as does a byte a charset converter rejects.
 *  - Control characters (C0 but TAB, including ESC, CR, LF and NUL; DEL;
 *    C1) and the bidirectional overrides, isolates and marks (U+202A..U+202E,
 *    U+2066..U+2069, U+200E, U+200F, U+061C) become U+FFFD.
 *
 * in may be NULL when len is 0. On success *ret_out is a NUL-terminated
 * malloc'd string the caller frees (it never holds a NUL before the end),
 * and *ret_len, when ret_len is not NULL, its length.
 * Errors:
 *   -E2BIG    len > MIMEWORD_INPUT_MAX
 *   -ENOMEM   out of memory
 * Nothing is set on error.
 */
int mimeword_decode(const char *in, size_t len, char **ret_out, size_t *ret_len) MP_WUR;

/*
 * Cleans a string for one line of a list: the same replacement of invalid
 * UTF-8 and controls as mimeword_decode(), except that TAB, CR, LF and the
 * Unicode line and paragraph separators become spaces; runs of spaces
 * collapse to one; leading and trailing spaces go. When max_chars is not 0
 * and the result has more characters (code points) than that, it is cut to
 * max_chars - 1 characters followed by "…" (U+2026). No cap on len beyond
 * size arithmetic, so the output of mimeword_decode() always fits; in may
 * be NULL when len is 0.
 * On success *ret_out is a NUL-terminated malloc'd string the caller frees.
 * Errors:
 *   -E2BIG    len > (SIZE_MAX - 4) / 3
 *   -ENOMEM   out of memory
 * Nothing is set on error.
 */
int mimeword_oneline(const char *in, size_t len, size_t max_chars, char **ret_out) MP_WUR;

#endif
