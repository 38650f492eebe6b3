/*
 * POP3 multi-line response decoder (RFC 1939 section 3), in the manner of
 * curl's pop3_write(): a byte state machine that survives any split of the
 * input, so the terminator and dot-stuffing are recognised even when they
 * straddle two reads.
 *
 * Line starts are after CRLF, after a bare LF, and at the very beginning of
 * the body. The terminator is a line holding a single "." that ends in CRLF.
 * A "." line ending in a bare LF is NOT the terminator: a server that
 * stuffs only after CRLF sends such a line from the message unstuffed, and
 * taking it for the end would cut the message short, which a later delete
 * would make permanent. A server that really ends with ".\n" times out
 * instead, and nothing is lost.
 */
#include <string.h>

#include "mailpull/pop3_body.h"

enum body_state {
	BODY_LINE_START,  /* at the first byte of a line */
	BODY_MID,         /* inside a line */
	BODY_CR,          /* inside a line, a CR held back */
	BODY_DOT,         /* a "." at line start, held back */
	BODY_DOT_CR,      /* "." CR at line start, both held back */
	BODY_DONE,        /* the terminator was consumed */
};

void
pop3_body_init(struct pop3_body *b)
{
	b->state = BODY_LINE_START;
	b->bytes = 0;
}

/*
 * At most one byte is ever held back between calls (a CR, or the "." of a
 * line start), and every consumed byte yields at most one output byte, so
 * the output never exceeds len + 1.
 */
int
pop3_body_feed(struct pop3_body *b, const char *in, size_t len,
	       char *out, size_t *ret_outlen, size_t *ret_used)
{
	size_t i = 0, o = 0, nl = 0;
	bool nl_known = false;
	int st = b->state;
	int done = 0;

	while (i < len && st != BODY_DONE) {
		switch (st) {
		case BODY_LINE_START:
			if (in[i] == '.') {
				st = BODY_DOT;
				i++;
				break;
			}
			st = BODY_MID;
			/* fall through */
		case BODY_MID: {
			const char *cr;

			/*
			 * The next LF is remembered for the whole call, so a run
			 * of bare CRs does not rescan the rest of the buffer.
			 */
			if (!nl_known || nl < i) {
				const char *lf = memchr(in + i, '\n', len - i);

				nl = lf ? (size_t)(lf - in) : len;
				nl_known = true;
			}
			cr = memchr(in + i, '\r', nl - i);
			if (cr) {
				size_t n = (size_t)(cr - in) - i;

				memcpy(out + o, in + i, n);
				o += n;
				i += n + 1;
				st = BODY_CR;
			} else {
				memcpy(out + o, in + i, nl - i);
				o += nl - i;
				i = nl;
				if (nl < len) {
					/* A bare LF ends the line like CRLF. */
					out[o++] = '\n';
					i++;
					st = BODY_LINE_START;
				}
			}
			break;
		}
		case BODY_CR:
			if (in[i] == '\n') {
				out[o++] = '\n';
				i++;
				st = BODY_LINE_START;
			} else {
				/* A bare CR is data; the byte after it is looked at again. */
				out[o++] = '\r';
				st = BODY_MID;
			}
			break;
		case BODY_DOT:
			if (in[i] == '\r') {
				st = BODY_DOT_CR;
				i++;
			} else if (in[i] == '\n') {
				/* "." + bare LF: kept as is (see the top of this file). */
				out[o++] = '.';
				st = BODY_MID;
			} else {
				/*
				 * RFC 1939 section 3: a line starting with the
				 * termination octet that is not the terminator loses
				 * that octet; ".." becomes ".".
				 */
				st = BODY_MID;
			}
			break;
		case BODY_DOT_CR:
			if (in[i] == '\n') {
				i++;
				st = BODY_DONE;
			} else {
				/* ".\rX": the dot was stuffing, the CR is a bare CR. */
				out[o++] = '\r';
				st = BODY_MID;
			}
			break;
		default:
			break;
		}
	}
	if (st == BODY_DONE)
		done = 1;
	b->state = st;
	b->bytes += o;
	*ret_outlen = o;
	*ret_used = i;
	return done;
}
