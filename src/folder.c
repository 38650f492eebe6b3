/*
 * IMAP mailbox names to Maildir++ directory names, and LIST wildcard
 * matching. The layout and its reasons are in folder.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailpull/folder.h"
#include "mailpull/utf8.h"
#include "mailpull/util.h"

#define ESCAPE_CHAR '\\'

static const char hexdigits[] = "0123456789abcdef";

/*
 * RFC 3501 allows any QUOTED-CHAR as the delimiter; NUL here is NIL. Only
 * punctuation is taken: a letter or digit would split "INBOX" itself or
 * ordinary words, and a control or space would be no better. Servers use
 * '/', '.' or '\\'.
 */
static bool
delim_valid(char delim)
{
	unsigned char d = (unsigned char)delim;

	if (d == '\0')
		return true;
	return d > 0x20 && d < 0x7f && !(d >= '0' && d <= '9') &&
	       !((d | 0x20) >= 'a' && (d | 0x20) <= 'z');
}

/* Length of the first component of name: up to delim or the end. */
static size_t
first_component_len(const char *name, char delim)
{
	const char *end = delim != '\0' ? strchr(name, delim) : NULL;

	return end ? (size_t)(end - name) : strlen(name);
}

/* RFC 3501 section 5.1: "INBOX" is case-insensitive, every other name is not. */
static bool
starts_with_inbox(const char *name, char delim)
{
	return first_component_len(name, delim) == 5 && strncasecmp(name, "INBOX", 5) == 0;
}

/*
 * Whether byte c of a component must be written "\xx": the Maildir++ level
 * separator, the path separator, the escape itself, control bytes (a name
 * must not move a terminal's cursor when listed), and '~' opening the
 * name, which Dovecot refuses there because shells expand it.
 */
static bool
needs_escape(unsigned char c, bool name_start)
{
	return c == '.' || c == '/' || c == ESCAPE_CHAR || c < 0x20 || c == 0x7f ||
	       (c == '~' && name_start);
}

struct dirbuf {
	char *p;
	size_t len;
};

static int
dir_put(struct dirbuf *b, char c)
{
	if (b->len >= FOLDER_DIRNAME_MAX)
		return -E2BIG;
	b->p[b->len++] = c;
	return 0;
}

static int
dir_put_component(struct dirbuf *b, const char *s, size_t n, bool name_start)
{
	int r = dir_put(b, '.');

	for (size_t i = 0; i < n && r == 0; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!needs_escape(c, name_start && i == 0)) {
			r = dir_put(b, (char)c);
			continue;
		}
		r = dir_put(b, ESCAPE_CHAR);
		if (r == 0)
			r = dir_put(b, hexdigits[c >> 4]);
		if (r == 0)
			r = dir_put(b, hexdigits[c & 15]);
	}
	return r;
}

int
folder_to_maildir(const char *name, char delim, char **ret_dirname)
{
	struct dirbuf b = { 0 };
	const char *s = name;
	size_t len = strlen(name);
	int r = 0;

	if (!delim_valid(delim) || len == 0)
		return -EINVAL;
	if (!utf8_valid(name, len))
		return -EBADMSG;
	b.p = malloc(FOLDER_DIRNAME_MAX + 1);
	if (!b.p)
		return -ENOMEM;
	if (starts_with_inbox(name, delim)) {
		if (len == 5)
			goto done;
		/* Dovecot writes INBOX's children under ".INBOX."; keep the canonical case. */
		r = dir_put_component(&b, "INBOX", 5, true);
		s += 6;
	}
	while (r == 0) {
		size_t n = first_component_len(s, delim);

		if (n == 0) {
			r = -EINVAL;
			break;
		}
		r = dir_put_component(&b, s, n, s == name);
		if (s[n] == '\0')
			break;
		s += n + 1;
	}
	if (r < 0) {
		free(b.p);
		return r;
	}
done:
	b.p[b.len] = '\0';
	*ret_dirname = b.p;
	return 0;
}

static int
hex_value(char c)
{
	/* mailpull writes lower case: an upper-case escape is not one of its names. */
	return c >= 'A' && c <= 'F' ? -1 : util_hex_value(c);
}

/*
 * Decodes the component at d[0..n) into out at *o. Only the escapes
 * folder_to_maildir() writes are accepted, so the mapping stays one to one.
 */
static int
unescape_component(const char *d, size_t n, bool name_start, char delim, char *out, size_t *o)
{
	if (n == 0)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)d[i];
		bool at_start = name_start && i == 0;

		if (c == ESCAPE_CHAR) {
			int hi = i + 2 < n ? hex_value(d[i + 1]) : -1;
			int lo = hi >= 0 ? hex_value(d[i + 2]) : -1;

			if (lo < 0)
				return -EBADMSG;
			c = (unsigned char)(hi << 4 | lo);
			if (c == 0 || !needs_escape(c, at_start))
				return -EBADMSG;
			i += 2;
		} else if (needs_escape(c, at_start)) {
			return -EBADMSG;
		}
		if (delim != '\0' && c == (unsigned char)delim)
			return -EINVAL;
		out[(*o)++] = (char)c;
	}
	return 0;
}

int
folder_from_maildir(const char *dirname, char delim, char **ret_name)
{
	size_t len = strlen(dirname), o = 0;
	const char *s = dirname + 1;
	char *out;
	int r = 0;

	if (!delim_valid(delim))
		return -EINVAL;
	if (len == 0)
		return (*ret_name = strdup("INBOX")) ? 0 : -ENOMEM;
	if (dirname[0] != '.' || len > FOLDER_DIRNAME_MAX)
		return -EBADMSG;
	/* Unescaping only shrinks; delimiters replace separators one for one. */
	out = malloc(len + 1);
	if (!out)
		return -ENOMEM;
	for (;;) {
		const char *dot = strchr(s, '.');
		size_t n = dot ? (size_t)(dot - s) : strlen(s);

		if (s != dirname + 1) {
			if (delim == '\0') {
				r = -EINVAL;
				break;
			}
			out[o++] = delim;
		}
		r = unescape_component(s, n, s == dirname + 1, delim, out, &o);
		if (r < 0 || !dot)
			break;
		s = dot + 1;
	}
	out[o] = '\0';
	/* "INBOX" alone is the root, and its children are written ".INBOX.", never ".inbox.". */
	if (r == 0 && starts_with_inbox(out, delim) &&
	    (out[5] == '\0' || memcmp(out, "INBOX", 5) != 0))
		r = -EBADMSG;
	if (r == 0 && !utf8_valid(out, o))
		r = -EBADMSG;
	if (r < 0) {
		free(out);
		return r;
	}
	*ret_name = out;
	return 0;
}

/*
 * folder_match() runs the pattern as a nondeterministic automaton: state i
 * means "pattern[0..i) matched what has been read". The state set is a
 * bitmap, so time is linear in the name and no input can make it
 * backtrack exponentially (patterns like "%a%a%a%a%b" against "aaaa...").
 */
#define MATCH_WORDS ((FOLDER_PATTERN_MAX + 1 + 63) / 64)

struct matcher {
	const char *pat;
	size_t plen;
	char delim;
	bool pat_inbox, name_inbox;
	uint64_t set[MATCH_WORDS];
};

static void
set_add(uint64_t *set, size_t i)
{
	set[i / 64] |= UINT64_C(1) << (i % 64);
}

static bool
set_has(const uint64_t *set, size_t i)
{
	return set[i / 64] & (UINT64_C(1) << (i % 64));
}

/* A wildcard may match nothing: from state i, state i + 1 is reachable for free. */
static void
match_closure(struct matcher *m)
{
	for (size_t i = 0; i < m->plen; i++)
		if (set_has(m->set, i) && (m->pat[i] == '*' || m->pat[i] == '%'))
			set_add(m->set, i + 1);
}

static unsigned char
fold(unsigned char c, bool inbox, size_t pos)
{
	return inbox && pos < 5 && c >= 'a' && c <= 'z' ? (unsigned char)(c - 'a' + 'A') : c;
}

static void
match_step(struct matcher *m, unsigned char c, size_t npos)
{
	uint64_t next[MATCH_WORDS] = { 0 };
	unsigned char nc = fold(c, m->name_inbox && m->pat_inbox, npos);

	for (size_t i = 0; i < m->plen; i++) {
		unsigned char p = (unsigned char)m->pat[i];

		if (!set_has(m->set, i))
			continue;
		if (p == '*' || (p == '%' && (m->delim == '\0' || c != (unsigned char)m->delim)))
			set_add(next, i);
		else if (p != '%' && fold(p, m->name_inbox && m->pat_inbox, i) == nc)
			set_add(next, i + 1);
	}
	memcpy(m->set, next, sizeof(next));
	match_closure(m);
}

/* The pattern's leading "INBOX" may be followed by a wildcard as well as by the delimiter. */
static bool
pattern_starts_with_inbox(const char *pat, char delim)
{
	return strncasecmp(pat, "INBOX", 5) == 0 &&
	       (pat[5] == '\0' || pat[5] == '*' || pat[5] == '%' ||
		(delim != '\0' && pat[5] == delim));
}

int
folder_match(const char *pattern, const char *name, char delim)
{
	struct matcher m = { .pat = pattern, .delim = delim };

	m.plen = strlen(pattern);
	if (m.plen > FOLDER_PATTERN_MAX)
		return -E2BIG;
	m.pat_inbox = pattern_starts_with_inbox(pattern, delim);
	m.name_inbox = starts_with_inbox(name, delim);
	set_add(m.set, 0);
	match_closure(&m);
	for (size_t j = 0; name[j] != '\0'; j++)
		match_step(&m, (unsigned char)name[j], j);
	return set_has(m.set, m.plen) ? 1 : 0;
}
