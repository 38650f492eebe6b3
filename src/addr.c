/*
 * RFC 5322 address lists. A tokenizer that skips white space, folding and
 * comments yields atoms, quoted strings, domain literals and specials; each
 * list element is looked at twice: once to find what ends it ('<' for an
 * angle address, ':' for a group, else an addr-spec), then to read it.
 * No recursion: comments nest by a counter.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailpull/addr.h"

enum tok_type { TK_END, TK_ATOM, TK_QSTR, TK_DLIT, TK_SPECIAL };

struct tok {
	enum tok_type type;
	const char *p;             /* ATOM: the atom; QSTR, DLIT: inside the delimiters */
	size_t len;
	char c;                    /* SPECIAL: the character */
};

struct lexer {
	const char *s;
	size_t len;
	size_t pos;
};

/* An address being put together, bounded by ADDR_LEN_MAX. */
struct abuf {
	char b[ADDR_LEN_MAX + 1];
	size_t n;
	bool over;
};

/* atext (RFC 5322 section 3.2.3), and UTF-8 bytes (RFC 6532 section 3.2). */
static bool
is_atext(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool
is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A control byte that no part of an address may hold (white space aside). */
static bool
is_bad_ctl(unsigned char c)
{
	return (c < 0x20 && !is_space(c)) || c == 0x7f;
}

/* Skips a comment starting at '('; nested ones and quoted-pairs included. */
static int
skip_comment(struct lexer *lx)
{
	unsigned depth = 0;

	while (lx->pos < lx->len) {
		unsigned char c = (unsigned char)lx->s[lx->pos++];

		if (c == '\\') {
			if (lx->pos >= lx->len)
				return -EBADMSG;
			lx->pos++;
		} else if (c == '(') {
			depth++;
		} else if (c == ')') {
			if (--depth == 0)
				return 0;
		} else if (c == 0) {
			return -EBADMSG;
		}
	}
	return -EBADMSG;
}

/* Reads up to the closing delimiter close, honouring quoted-pairs. */
static int
lex_delimited(struct lexer *lx, char close, bool pairs, struct tok *t)
{
	size_t start = ++lx->pos;

	while (lx->pos < lx->len) {
		unsigned char c = (unsigned char)lx->s[lx->pos];

		if (c == (unsigned char)close) {
			t->p = lx->s + start;
			t->len = lx->pos - start;
			lx->pos++;
			return 0;
		}
		if (c == 0 || (!pairs && (c == '[' || c == '\\')))
			return -EBADMSG;
		if (c == '\\') {
			if (lx->pos + 1 >= lx->len)
				return -EBADMSG;
			lx->pos++;
		}
		lx->pos++;
	}
	return -EBADMSG;
}

static int
lex_next(struct lexer *lx, struct tok *t)
{
	unsigned char c;

	for (;;) {
		while (lx->pos < lx->len && is_space((unsigned char)lx->s[lx->pos]))
			lx->pos++;
		if (lx->pos >= lx->len) {
			t->type = TK_END;
			return 0;
		}
		if (lx->s[lx->pos] != '(')
			break;
		if (skip_comment(lx) < 0)
			return -EBADMSG;
	}
	c = (unsigned char)lx->s[lx->pos];
	if (c == '"') {
		t->type = TK_QSTR;
		return lex_delimited(lx, '"', true, t);
	}
	if (c == '[') {
		t->type = TK_DLIT;
		return lex_delimited(lx, ']', false, t);
	}
	if (is_atext(c)) {
		size_t start = lx->pos;

		while (lx->pos < lx->len && is_atext((unsigned char)lx->s[lx->pos]))
			lx->pos++;
		t->type = TK_ATOM;
		t->p = lx->s + start;
		t->len = lx->pos - start;
		return 0;
	}
	if (c == 0 || is_bad_ctl(c) || !strchr("<>:;@,.", c))
		return -EBADMSG;   /* ')', ']', '\\' out of place, controls */
	lx->pos++;
	t->type = TK_SPECIAL;
	t->c = (char)c;
	return 0;
}

static bool
tok_is(const struct tok *t, char c)
{
	return t->type == TK_SPECIAL && t->c == c;
}

static void
abuf_put(struct abuf *a, const char *p, size_t n)
{
	if (n > ADDR_LEN_MAX - a->n) {
		a->over = true;
		return;
	}
	memcpy(a->b + a->n, p, n);
	a->n += n;
}

/*
 * The text of a quoted string, quoted-pairs undone and folding removed
 * (RFC 5322 section 3.2.4: the CRLF of a fold is not part of it).
 */
static int
qstr_put(struct abuf *a, const struct tok *t)
{
	for (size_t i = 0; i < t->len; i++) {
		unsigned char c = (unsigned char)t->p[i];

		if (c == '\r' || c == '\n')
			continue;
		if (c == '\\')
			c = (unsigned char)t->p[++i];
		/* No control byte, TAB included: an address travels on one line. */
		if (c < 0x20 || c == 0x7f)
			return -EBADMSG;
		abuf_put(a, (const char *)&c, 1);
	}
	return 0;
}

/* Whether s[0..n) is a dot-atom: atoms joined by single dots. */
static bool
is_dot_atom(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (s[i + 1] == '.')
				return false;
		} else if (!is_atext((unsigned char)s[i])) {
			return false;
		}
	}
	return true;
}

/* The local part in canonical form: a dot-atom, else a quoted string. */
static void
local_render(struct abuf *out, const struct abuf *raw)
{
	if (is_dot_atom(raw->b, raw->n)) {
		abuf_put(out, raw->b, raw->n);
		return;
	}
	abuf_put(out, "\"", 1);
	for (size_t i = 0; i < raw->n; i++) {
		if (raw->b[i] == '"' || raw->b[i] == '\\')
			abuf_put(out, "\\", 1);
		abuf_put(out, raw->b + i, 1);
	}
	abuf_put(out, "\"", 1);
}

/*
 * Reads local-part ["@" domain] from the lexer up to a token that is not
 * part of it, left in *t. The local part is words and dots (obs-local-part
 * tolerates "a..b", which then comes out quoted).
 */
static int
read_addr_spec(struct lexer *lx, struct tok *t, struct abuf *out)
{
	struct abuf raw = { .n = 0 };
	bool any = false, after_word = false;
	int r;

	for (;;) {
		/* Two words in a row are no local part ("John Doe" without <>). */
		if ((t->type == TK_ATOM || t->type == TK_QSTR) && after_word)
			break;
		if (t->type == TK_ATOM) {
			abuf_put(&raw, t->p, t->len);
		} else if (t->type == TK_QSTR) {
			if (qstr_put(&raw, t) < 0)
				return -EBADMSG;
		} else if (tok_is(t, '.')) {
			abuf_put(&raw, ".", 1);
		} else {
			break;
		}
		after_word = !tok_is(t, '.');
		any = any || after_word;
		if ((r = lex_next(lx, t)) < 0)
			return r;
	}
	if (raw.over)
		return -E2BIG;
	if (!any || raw.n == 0)
		return -EBADMSG;
	out->n = 0;
	local_render(out, &raw);
	if (!tok_is(t, '@'))
		return raw.over || out->over ? -E2BIG : 0;
	abuf_put(out, "@", 1);
	if ((r = lex_next(lx, t)) < 0)
		return r;
	if (t->type == TK_DLIT) {
		abuf_put(out, "[", 1);
		for (size_t i = 0; i < t->len; i++)
			if (!is_space((unsigned char)t->p[i])) {
				if (is_bad_ctl((unsigned char)t->p[i]))
					return -EBADMSG;
				abuf_put(out, t->p + i, 1);
			}
		abuf_put(out, "]", 1);
		r = lex_next(lx, t);
		return r < 0 ? r : raw.over || out->over ? -E2BIG : 0;
	}
	for (;;) {
		if (t->type != TK_ATOM)
			return -EBADMSG;
		abuf_put(out, t->p, t->len);
		if ((r = lex_next(lx, t)) < 0)
			return r;
		if (!tok_is(t, '.'))
			break;
		abuf_put(out, ".", 1);
		if ((r = lex_next(lx, t)) < 0)
			return r;
	}
	return raw.over || out->over ? -E2BIG : 0;
}

/* Skips an obsolete route "@a,@b:" at the start of an angle address. */
static int
skip_route(struct lexer *lx, struct tok *t)
{
	int r;

	while (!tok_is(t, ':')) {
		if (t->type == TK_END || tok_is(t, '>') || tok_is(t, '<') || tok_is(t, ';'))
			return -EBADMSG;
		if ((r = lex_next(lx, t)) < 0)
			return r;
	}
	return lex_next(lx, t);
}

/*
 * An angle address, the lexer just past '<'. *ret_found false for "<>"
 * (no address). Leaves the token after '>' in *t.
 */
static int
read_angle(struct lexer *lx, struct tok *t, struct abuf *out, bool *ret_found)
{
	int r;

	if ((r = lex_next(lx, t)) < 0)
		return r;
	if (tok_is(t, '@') && (r = skip_route(lx, t)) < 0)
		return r;
	*ret_found = !tok_is(t, '>');
	if (*ret_found && (r = read_addr_spec(lx, t, out)) < 0)
		return r;
	if (!tok_is(t, '>'))
		return -EBADMSG;
	return lex_next(lx, t);
}

/* What ends the element starting at the lexer: '<', ':', or 0 (an addr-spec). */
static int
element_kind(struct lexer lx, char *ret_kind)
{
	struct tok t;
	int r;

	for (;;) {
		if ((r = lex_next(&lx, &t)) < 0)
			return r;
		if (t.type == TK_END || tok_is(&t, ',') || tok_is(&t, ';')) {
			*ret_kind = 0;
			return 0;
		}
		if (tok_is(&t, '<') || tok_is(&t, ':')) {
			*ret_kind = t.c;
			return 0;
		}
	}
}

/* Skips a display name (any tokens) up to the '<' or ':' that ends it. */
static int
skip_phrase(struct lexer *lx, char until)
{
	struct tok t;
	int r;

	do {
		if ((r = lex_next(lx, &t)) < 0)
			return r;
	} while (!tok_is(&t, until));
	return 0;
}

struct list_ctx {
	struct lexer lx;
	bool in_group;
	size_t found;              /* addresses read, taken or not */
};

/*
 * Reads one element of the list. Returns 1 with the address in out, 0 for
 * an element without one (an empty element, "<>"), after which the token
 * that ends it (',', ';', END) follows; 2 for a group's start ("name:"),
 * after which the group's first element follows.
 */
static int
read_element(struct list_ctx *c, struct abuf *out)
{
	struct tok t;
	bool found = true;
	char kind;
	int r;

	if ((r = element_kind(c->lx, &kind)) < 0)
		return r;
	if (kind == ':') {
		if (c->in_group)
			return -EBADMSG;
		c->in_group = true;
		r = skip_phrase(&c->lx, ':');
		return r < 0 ? r : 2;
	}
	if (kind == '<') {
		if ((r = skip_phrase(&c->lx, '<')) < 0 || (r = read_angle(&c->lx, &t, out, &found)) < 0)
			return r;
	} else {
		size_t save = c->lx.pos;

		if ((r = lex_next(&c->lx, &t)) < 0)
			return r;
		if (t.type == TK_END || tok_is(&t, ',') || tok_is(&t, ';')) {
			c->lx.pos = save;   /* an empty element: the separator is read below */
			return 0;
		}
		if ((r = read_addr_spec(&c->lx, &t, out)) < 0)
			return r;
	}
	/* What follows the element must end it; give the separator back. */
	if (tok_is(&t, ',') || tok_is(&t, ';'))
		c->lx.pos--;
	else if (t.type != TK_END)
		return -EBADMSG;
	return found ? 1 : 0;
}

/* After an element: ',' goes on, ';' ends a group, the end ends the list. */
static int
read_separator(struct list_ctx *c, bool *ret_end)
{
	struct tok t;
	int r;

	if ((r = lex_next(&c->lx, &t)) < 0)
		return r;
	*ret_end = t.type == TK_END;
	if (tok_is(&t, ';')) {
		if (!c->in_group)
			return -EBADMSG;
		c->in_group = false;
	}
	return 0;
}

/*
 * Calls take(ud, address) for each address of the list s[0..len); stops
 * when take returns non-zero (0 or negative) and returns that.
 */
static int
list_each(const char *s, size_t len, int (*take)(void *ud, const char *a), void *ud)
{
	struct list_ctx c = { .lx = { .s = s, .len = len } };
	struct abuf *out = malloc(sizeof(*out));
	bool end = false;
	int r = 0;

	if (!out)
		return -ENOMEM;
	while (!end) {
		out->n = 0;
		out->over = false;
		r = read_element(&c, out);
		if (r < 0)
			break;
		if (r == 1) {
			out->b[out->n] = '\0';
			if ((r = take(ud, out->b)) != 0)
				break;
		}
		if (r != 2 && (r = read_separator(&c, &end)) < 0)
			break;
		r = 0;
	}
	free(out);
	return r;
}

static bool
name_has(const struct addr_list *l, const char *a)
{
	for (size_t i = 0; i < l->n; i++)
		if (addr_equal(l->v[i], a))
			return true;
	return false;
}

int
addr_list_add(struct addr_list *l, const char *a, size_t max)
{
	char *copy;

	if (name_has(l, a))
		return 0;
	if (l->n >= max)
		return -E2BIG;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		char **v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	copy = strdup(a);
	if (!copy)
		return -ENOMEM;
	l->v[l->n++] = copy;
	return 1;
}

struct add_ctx {
	struct addr_list *l;
	size_t max;
	int added;
};

static int
take_add(void *ud, const char *a)
{
	struct add_ctx *c = ud;
	int r = addr_list_add(c->l, a, c->max);

	if (r < 0)
		return r;
	c->added += r;
	return 0;
}

int
addr_list_parse(struct addr_list *l, const char *s, size_t len, size_t max)
{
	struct add_ctx c = { .l = l, .max = max };
	int r = list_each(s, len, take_add, &c);

	return r < 0 ? r : c.added;
}

static int
take_first(void *ud, const char *a)
{
	char **ret = ud;

	*ret = strdup(a);
	return *ret ? 1 : -ENOMEM;
}

int
addr_parse_first(const char *s, size_t len, char **ret)
{
	char *a = NULL;
	int r = list_each(s, len, take_first, &a);

	if (r < 0)
		return r;
	if (a)
		*ret = a;
	return a ? 1 : 0;
}

char **
addr_list_take(struct addr_list *l, size_t *ret_n)
{
	char **v = l->v;

	*ret_n = l->n;
	if (l->n == 0) {
		free(v);
		v = NULL;
	}
	l->v = NULL;
	l->n = l->cap = 0;
	return v;
}

void
addr_list_free(struct addr_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

const char *
addr_domain(const char *a)
{
	size_t n = strlen(a);
	const char *at = strrchr(a, '@');

	/* A quoted local part may hold '@'; a domain never ends in '"'. */
	if (!at || (n > 0 && a[n - 1] == '"'))
		return NULL;
	return at + 1;
}

bool
addr_equal(const char *a, const char *b)
{
	const char *da = addr_domain(a), *db = addr_domain(b);
	size_t la = da ? (size_t)(da - a) : strlen(a);
	size_t lb = db ? (size_t)(db - b) : strlen(b);

	if (la != lb || memcmp(a, b, la) != 0 || !da != !db)
		return false;
	return !da || strcasecmp(da, db) == 0;
}
