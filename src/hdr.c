/* Streaming header field collection (RFC 5322 section 2.2: unfolding). */
#include <string.h>
#include <strings.h>

#include "mailpull/hdr.h"

void
hdr_scan_init(struct hdr_scan *h, const char *const *names, size_t n)
{
	memset(h, 0, offsetof(struct hdr_scan, line));
	h->nnames = n > HDR_MAX_FIELDS ? HDR_MAX_FIELDS : n;
	for (size_t i = 0; i < h->nnames; i++)
		h->names[i] = names[i];
	h->linelen = 0;
	h->cur = -1;
	h->overflow = false;
}

static void
append_value(struct hdr_scan *h, int f, const char *s, size_t len)
{
	size_t room = HDR_VALUE_MAX - h->lens[f];

	if (len > room)
		len = room;
	memcpy(h->values[f] + h->lens[f], s, len);
	h->lens[f] += len;
	h->values[f][h->lens[f]] = '\0';
}

/* One complete physical line (without its line end). */
static void
hdr_line(struct hdr_scan *h, const char *s, size_t len)
{
	const char *colon;

	if (len == 0) {
		h->done = true;
		return;
	}
	if (s[0] == ' ' || s[0] == '\t') {
		/* Folding: the line continues the field before (CRLF removed, WSP kept). */
		if (h->cur >= 0)
			append_value(h, h->cur, s, len);
		return;
	}
	h->cur = -1;
	colon = memchr(s, ':', len);
	if (!colon)
		return;
	for (size_t i = 0; i < h->nnames; i++) {
		size_t nl = strlen(h->names[i]);

		if (h->found[i] || (size_t)(colon - s) != nl || strncasecmp(s, h->names[i], nl) != 0)
			continue;
		h->found[i] = true;
		h->cur = (int)i;
		colon++;
		while (colon < s + len && (*colon == ' ' || *colon == '\t'))
			colon++;
		append_value(h, (int)i, colon, (size_t)(s + len - colon));
		return;
	}
}

static void
end_line(struct hdr_scan *h)
{
	size_t len = h->linelen;

	if (len > 0 && h->line[len - 1] == '\r')
		len--;
	/* An overlong line keeps its head: enough for the name and most values. */
	hdr_line(h, h->line, len);
	h->linelen = 0;
	h->overflow = false;
}

void
hdr_scan_feed(struct hdr_scan *h, const char *data, size_t len)
{
	while (len > 0 && !h->done) {
		const char *nl = memchr(data, '\n', len);
		size_t take = nl ? (size_t)(nl - data) : len;
		size_t room = sizeof(h->line) - h->linelen;
		size_t copy = take < room ? take : room;

		memcpy(h->line + h->linelen, data, copy);
		h->linelen += copy;
		if (copy < take)
			h->overflow = true;
		if (!nl)
			return;
		end_line(h);
		data += take + 1;
		len -= take + 1;
	}
}

void
hdr_scan_finish(struct hdr_scan *h)
{
	if (!h->done && h->linelen > 0)
		end_line(h);
	h->done = true;
}

const char *
hdr_msgid_core(const char *v, size_t len, size_t *ret_len)
{
	const char *lt = memchr(v, '<', len);
	const char *gt = lt ? memchr(lt, '>', len - (size_t)(lt - v)) : NULL;

	if (lt && gt) {
		*ret_len = (size_t)(gt - lt) + 1;
		return lt;
	}
	while (len > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		len--;
	}
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t' || v[len - 1] == '\r'))
		len--;
	*ret_len = len;
	return v;
}
