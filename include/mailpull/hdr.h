/*
 * Streaming header scanner: collects the values of a few named header
 * fields (unfolded, capped) from a message fed in chunks of any size, and
 * stops looking at the blank line that ends the header. Used for the
 * Message-ID fingerprint while a body streams to disk, and for preview.
 */
#ifndef MAILPULL_HDR_H
#define MAILPULL_HDR_H

#include "mailpull/common.h"

#define HDR_MAX_FIELDS 4
#define HDR_VALUE_MAX 2048     /* bytes kept per value; the rest is dropped */
#define HDR_LINE_MAX 4096      /* name matching looks at this much of a line */

struct hdr_scan {
	const char *names[HDR_MAX_FIELDS];
	size_t nnames;
	char values[HDR_MAX_FIELDS][HDR_VALUE_MAX + 1];  /* "" when absent; first occurrence */
	size_t lens[HDR_MAX_FIELDS];
	bool found[HDR_MAX_FIELDS];
	bool done;                 /* blank line seen */
	/* private */
	char line[HDR_LINE_MAX];
	size_t linelen;
	int cur;                   /* field being continued, -1 none */
	bool overflow;
};

/*
 * names: up to HDR_MAX_FIELDS field names (case-insensitive); unlike the
 * default, kept by pointer: they must outlive h. Cannot fail.
 */
void hdr_scan_init(struct hdr_scan *h, const char *const *names, size_t n);

/* Feeds message bytes (LF or CRLF line ends). Cheap once done. Cannot fail. */
void hdr_scan_feed(struct hdr_scan *h, const char *data, size_t len);

/* Ends the input (a header without a body). Cannot fail. */
void hdr_scan_finish(struct hdr_scan *h);

/*
 * The "<...>" part of a Message-ID value (whitespace and comments around
 * it dropped), or the trimmed value when there are no angle brackets.
 * Returns a pointer into v and its length in *ret_len. Cannot fail.
 */
const char *hdr_msgid_core(const char *v, size_t len, size_t *ret_len);

#endif
