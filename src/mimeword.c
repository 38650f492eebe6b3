/*
 * RFC 2047 encoded words in header text, decoded for display. The contract
 * is in mimeword.h. Every byte that reaches the output goes through
 * emit_safe(), the one place that guarantees valid, printable UTF-8.
 */
#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailpull/mimeword.h"
#include "mailpull/utf8.h"
#include "mailpull/util.h"

/* Real charset names are short (IANA's longest is 45); longer is malformed. */
#define CHARSET_MAX 63

#define NO_ICONV ((iconv_t)-1)

struct obuf {
	char *p;
	size_t len, cap;
	bool oom;   /* sticky: an append failed */
};

static void
ob_put(struct obuf *b, const void *s, size_t n)
{
	if (b->oom || n == 0)
		return;
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 64;
		char *p;

		if (n > SIZE_MAX / 4 - b->len) {
			b->oom = true;
			return;
		}

		while (cap - b->len < n)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

/*
 * Terminal safety: C0 but TAB (ESC starts escape sequences, CR and LF
 * break lines), DEL, C1 (0x9b is a one-byte CSI on some terminals), and
 * the bidi overrides, isolates and marks that can reorder what is printed
 * after them (CVE-2021-42574; util_is_bidi_control()).
 */
static bool
display_safe(uint32_t cp)
{
	if (cp == '\t')
		return true;
	if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
		return false;
	return !util_is_bidi_control(cp);
}

/* Appends s[0..n) as valid, display-safe UTF-8: anything else becomes U+FFFD. */
static void
emit_safe(struct obuf *b, const char *s, size_t n)
{
	while (n > 0) {
		uint32_t cp;
		int k = utf8_decode(s, n, &cp);

		if (k < 0) {
			/* One replacement per byte, so no later valid character is swallowed. */
			ob_put(b, UTF8_REPLACEMENT, 3);
			k = 1;
		} else if (!display_safe(cp)) {
			ob_put(b, UTF8_REPLACEMENT, 3);
		} else {
			ob_put(b, s, (size_t)k);
		}
		s += k;
		n -= (size_t)k;
	}
}

/*
 * RFC 5322 section 2.2.3: unfolding removes each CRLF that is followed by
 * WSP. A bare LF is treated the same (headers read from files or servers
 * that already converted line ends), and a line end at the very end is
 * dropped. Any other CR or LF stays, to be replaced later.
 */
static char *
unfold(const char *in, size_t len, size_t *ret_len)
{
	char *u = malloc(len + 1);
	size_t o = 0;

	if (!u)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		size_t brk = 0;

		if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
			brk = 2;
		else if (in[i] == '\n')
			brk = 1;
		if (brk > 0 && (i + brk == len || in[i + brk] == ' ' || in[i + brk] == '\t')) {
			i += brk - 1;
			continue;
		}
		u[o++] = in[i];
	}
	*ret_len = o;
	return u;
}

/* Charset label → the name iconv should use, for labels that are subsets in name only. */
static const struct {
	const char *label;
	const char *iconv_name;
} charset_aliases[] = {
	/* WHATWG Encoding: mail "gb2312" is routinely GBK, and GBK is a subset of GB18030. */
	{ "gb2312", "GB18030" },
	{ "gbk", "GB18030" },
	{ "x-gbk", "GB18030" },
	/* Its C1 range is controls; senders mean windows-1252's quotes and dashes there. */
	{ "iso-8859-1", "WINDOWS-1252" },
	{ "latin1", "WINDOWS-1252" },
	{ "euc-kr", "CP949" },
	{ "ks_c_5601-1987", "CP949" },
	{ "shift_jis", "CP932" },
	{ "sjis", "CP932" },
	{ "x-sjis", "CP932" },
};

/* Labels read as UTF-8 without iconv: emit_safe() validates it, and ASCII is a subset. */
static bool
charset_is_direct(const char *cs)
{
	return strcmp(cs, "utf-8") == 0 || strcmp(cs, "utf8") == 0 ||
	       strcmp(cs, "us-ascii") == 0 || strcmp(cs, "ascii") == 0;
}

static iconv_t
charset_open(const char *cs)
{
	const char *name = cs;

	for (size_t i = 0; i < ARRAY_SIZE(charset_aliases); i++)
		if (strcmp(cs, charset_aliases[i].label) == 0)
			name = charset_aliases[i].iconv_name;
	return iconv_open("UTF-8", name);
}

struct word {
	char cs[CHARSET_MAX + 1];  /* lower case, language suffix removed */
	char enc;                   /* 'B' or 'Q' */
	const char *text;
	size_t textlen;
	size_t total;               /* bytes from "=?" to "?=" inclusive */
};

/* RFC 2047 section 2: token = 1*<any CHAR except SPACE, CTLs, and especials>. */
static bool
is_token_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\"/[]?.=", c);
}

/*
 * Parses "=?charset?X?text?=" at s[0..n), s[0..2) being "=?". Only the
 * syntax is checked here.
 */
static bool
parse_word(const char *s, size_t n, struct word *w)
{
	size_t i = 2, cs = 0, text;
	bool in_lang = false;

	for (; i < n && s[i] != '?'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_token_char(c))
			return false;
		/* RFC 2231 section 5: "charset*language"; display needs no language. */
		if (c == '*')
			in_lang = true;
		if (in_lang)
			continue;
		if (cs >= CHARSET_MAX)
			return false;
		w->cs[cs++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	w->cs[cs] = '\0';
	if (cs == 0 || i + 3 >= n || s[i + 2] != '?')
		return false;
	w->enc = (char)(s[i + 1] & ~0x20);
	if (w->enc != 'B' && w->enc != 'Q')
		return false;
	text = i + 3;
	/* encoded-text: printable ASCII but "?" and SPACE (RFC 2047 section 2). */
	for (i = text; i < n && s[i] != '?'; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	if (i + 1 >= n || s[i + 1] != '=')
		return false;
	w->text = s + text;
	w->textlen = i - text;
	w->total = i + 2;
	return true;
}

/*
 * RFC 2047 section 4.1 (BASE64 as RFC 2045 section 6.8). Padding may be
 * missing, as some senders omit it; a lone trailing character (six bits,
 * not a byte) or anything after padding makes the word malformed.
 */
static bool
decode_b(const char *s, size_t n, struct obuf *out)
{
	struct util_b64 d = UTIL_B64_STD;
	size_t data = n;

	while (data > 0 && n - data < 2 && s[data - 1] == '=')
		data--;
	for (size_t i = 0; i < data; i++) {
		unsigned char c;
		int r = util_b64_put(&d, s[i], &c);

		if (r < 0)
			return false;
		if (r > 0)
			ob_put(out, (const char *)&c, 1);
	}
	return util_b64_end(&d, false) == 0;
}

/* RFC 2047 section 4.2: "_" is 0x20 whatever the charset, "=XX" a byte, the rest itself. */
static bool
decode_q(const char *s, size_t n, struct obuf *out)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '_') {
			c = ' ';
		} else if (c == '=') {
			/* RFC 2047 asks for upper case; lower case is common and unambiguous. */
			int hi = i + 2 < n ? util_hex_value(s[i + 1]) : -1;
			int lo = hi >= 0 ? util_hex_value(s[i + 2]) : -1;

			if (lo < 0)
				return false;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		ob_put(out, &c, 1);
	}
	return true;
}

struct mw {
	struct obuf out;
	struct obuf pending;       /* decoded bytes of adjacent words in charset cs */
	struct obuf scratch;       /* the word being decoded */
	char cs[CHARSET_MAX + 1];  /* "" until the first word */
	iconv_t cd;                /* NO_ICONV for direct charsets */
};

/*
 * Converts s[0..n) from m->cd's charset. A byte the converter rejects
 * becomes U+FFFD and conversion resumes after it; an incomplete sequence
 * at the end becomes one U+FFFD.
 */
static void
convert(struct mw *m, const char *s, size_t n)
{
	char buf[1024];
	char *in = (char *)s;
	size_t inleft = n;

	/*
	 * Start from the initial shift state: a stateful charset (ISO-2022-JP)
	 * must not carry a shift from an earlier run into this one. UTF-8 out
	 * is stateless, so there is nothing to flush at the end.
	 */
	iconv(m->cd, NULL, NULL, NULL, NULL);
	while (inleft > 0) {
		char *o = buf;
		size_t oleft = sizeof(buf), before = inleft;
		size_t r = iconv(m->cd, &in, &inleft, &o, &oleft);
		int e = errno;

		emit_safe(&m->out, buf, (size_t)(o - buf));
		if (r != (size_t)-1)
			break;
		if (e == E2BIG && (inleft < before || o > buf))
			continue;
		ob_put(&m->out, UTF8_REPLACEMENT, 3);
		/* EILSEQ: skip the byte. EINVAL (truncated) or no progress at all: stop. */
		if (e != EILSEQ || inleft == 0)
			break;
		in++;
		inleft--;
	}
}

static void
flush_pending(struct mw *m)
{
	if (m->pending.len == 0)
		return;
	if (m->cd == NO_ICONV)
		emit_safe(&m->out, m->pending.p, m->pending.len);
	else
		convert(m, m->pending.p, m->pending.len);
	m->pending.len = 0;
}

/*
 * Decodes the encoded word at s[0..n) if it is one and its charset is
 * known, appending its bytes to the pending run; *ret_total is its length.
 * after_word says whether only whitespace separates it from the last word,
 * in which case that whitespace (gap) is dropped (RFC 2047 section 6.2).
 */
static bool
take_word(struct mw *m, const char *s, size_t n, const char *gap, size_t gaplen,
	  bool after_word, size_t *ret_total)
{
	struct word w;
	iconv_t cd = NO_ICONV;
	bool same, ok;

	if (!parse_word(s, n, &w))
		return false;
	m->scratch.len = 0;
	ok = w.enc == 'B' ? decode_b(w.text, w.textlen, &m->scratch)
			  : decode_q(w.text, w.textlen, &m->scratch);
	if (!ok)
		return false;
	same = strcmp(w.cs, m->cs) == 0;
	if (!same && !charset_is_direct(w.cs)) {
		cd = charset_open(w.cs);
		if (cd == NO_ICONV)
			return false;
	}
	for (size_t i = 0; i < gaplen && after_word; i++)
		if (gap[i] != ' ' && gap[i] != '\t')
			after_word = false;
	if (!after_word || !same)
		flush_pending(m);
	if (!after_word)
		emit_safe(&m->out, gap, gaplen);
	if (!same) {
		if (m->cd != NO_ICONV)
			iconv_close(m->cd);
		m->cd = cd;
		memcpy(m->cs, w.cs, sizeof(w.cs));
	}
	ob_put(&m->pending, m->scratch.p, m->scratch.len);
	*ret_total = w.total;
	return true;
}

static void
scan(struct mw *m, const char *u, size_t n)
{
	size_t i = 0, text = 0, total;
	bool after_word = false;

	while (i < n) {
		if (u[i] == '=' && i + 1 < n && u[i + 1] == '?' &&
		    take_word(m, u + i, n - i, u + text, i - text, after_word, &total)) {
			i += total;
			text = i;
			after_word = true;
			continue;
		}
		i++;
	}
	flush_pending(m);
	emit_safe(&m->out, u + text, n - text);
}

static void
mw_done(struct mw *m)
{
	if (m->cd != NO_ICONV)
		iconv_close(m->cd);
	free(m->pending.p);
	free(m->scratch.p);
	free(m->out.p);
}

int
mimeword_decode(const char *in, size_t len, char **ret_out, size_t *ret_len)
{
	struct mw m = { .cd = NO_ICONV };
	size_t ulen;
	char *u;
	int r = 0;

	if (len > MIMEWORD_INPUT_MAX)
		return -E2BIG;
	u = unfold(in ? in : "", len, &ulen);
	if (!u)
		return -ENOMEM;
	scan(&m, u, ulen);
	free(u);
	ob_put(&m.out, "", 1);
	if (m.out.oom || m.pending.oom || m.scratch.oom) {
		r = -ENOMEM;
	} else {
		*ret_out = m.out.p;
		if (ret_len)
			*ret_len = m.out.len - 1;
		m.out.p = NULL;
	}
	mw_done(&m);
	return r;
}

static bool
is_line_space(uint32_t cp)
{
	return cp == ' ' || cp == '\t' || cp == '\r' || cp == '\n' || cp == 0x2028 || cp == 0x2029;
}

/* Cuts s, a valid UTF-8 string of more than max code points, to max - 1 of them and "…". */
static void
ellipsize(struct obuf *b, size_t max)
{
	size_t chars = 0, i = 0;

	for (; i < b->len && chars + 1 < max; chars++) {
		i++;
		while (i < b->len && ((unsigned char)b->p[i] & 0xc0) == 0x80)
			i++;
	}
	while (i > 0 && b->p[i - 1] == ' ')
		i--;
	b->len = i;
	ob_put(b, "\xe2\x80\xa6", 3);
}

int
mimeword_oneline(const char *in, size_t len, size_t max_chars, char **ret_out)
{
	struct obuf b = { 0 };
	size_t chars = 0;
	bool space = false;

	if (len > (SIZE_MAX - 4) / 3)
		return -E2BIG;
	while (len > 0) {
		uint32_t cp = 0xfffd;
		int k = utf8_decode(in, len, &cp);

		k = k < 0 ? 1 : k;
		if (is_line_space(cp)) {
			space = b.len > 0;
		} else {
			if (space) {
				ob_put(&b, " ", 1);
				chars++;
			}
			space = false;
			emit_safe(&b, in, (size_t)k);
			chars++;
		}
		in += k;
		len -= (size_t)k;
	}
	if (max_chars > 0 && chars > max_chars)
		ellipsize(&b, max_chars);
	ob_put(&b, "", 1);
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*ret_out = b.p;
	return 0;
}
