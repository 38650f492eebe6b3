/*
 * The POP3 multi-line response decoder (RFC 1939 section 3): a byte state
 * machine that finds the terminating CRLF "." CRLF even when it is split
 * across reads, undoes dot-stuffing, and turns CRLF line ends into LF. A
 * bare CR is kept; a bare LF is taken as a line end (some servers send it).
 * Pure: no I/O, no allocation.
 */
#ifndef MAILPULL_POP3_BODY_H
#define MAILPULL_POP3_BODY_H

#include "mailpull/common.h"

struct pop3_body {
	int state;       /* private */
	uint64_t bytes;  /* decoded bytes produced so far */
};

/* Readies b for a new response. Cannot fail. */
void pop3_body_init(struct pop3_body *b);

/*
 * Decodes in[0..len). Decoded bytes are written to out, which must hold at
 * least len + 1 bytes; *ret_outlen says how many. *ret_used says how many
 * input bytes were consumed: all of them, unless the terminator was found,
 * in which case consumption stops right after it.
 * Returns 1 when the terminator was seen (the message is complete), 0 when
 * more input is needed. Cannot fail: every byte sequence has a reading.
 */
int pop3_body_feed(struct pop3_body *b, const char *in, size_t len,
		   char *out, size_t *ret_outlen, size_t *ret_used);

#endif
