/*
 * Incremental IMAP4 response parser (RFC 3501 section 9, RFC 9051 section 9).
 *
 * One byte at a time through a state machine, except literal data, which is
 * copied in bulk: that is what makes the result independent of how the input
 * is split. Arguments are recorded as flat nodes in the order they appear
 * (each knowing its parent and its position there); when a response is
 * complete they are laid out so that every list's elements are contiguous,
 * and their strings point into one arena that does not move until the next
 * feed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/imap_parse.h"

#define DEFAULT_MAX_LINE (1024 * 1024)
#define DEFAULT_MAX_DEPTH 32
#define DEFAULT_MAX_LITERAL (1024 * 1024)
#define DEFAULT_MAX_LITERAL_TOTAL (8 * 1024 * 1024)
#define DEFAULT_MAX_ARGS 200000
#define MAX_STREAM_ITEMS 8

/* Parents that are not nodes: the data arguments and the response code's. */
#define ROOT_ARGS SIZE_MAX
#define ROOT_CODE (SIZE_MAX - 1)
#define NO_NODE SIZE_MAX

enum pstate {
	S_START,      /* first byte of a response */
	S_TAG,        /* inside the tag */
	S_STAR,       /* after "*": SP */
	S_PLUS,       /* after "+": SP or line end */
	S_TEXT_START, /* after the status word: SP or line end */
	S_TEXT_BEGIN, /* after its SP: "[" opens a code, anything else is text */
	S_CODE_NAME,  /* the response code's atom */
	S_CODE_END,   /* after "]" */
	S_TEXT,       /* human text up to the line end */
	S_ARG_START,  /* where an argument may begin */
	S_ARG_END,    /* just after an argument */
	S_ATOM,
	S_SECTION,    /* inside the brackets of BODY[...] / BINARY[...] */
	S_TILDE,      /* "~": "{" makes a literal8, anything else an atom */
	S_QUOTED,
	S_QUOTED_ESC,
	S_LIT_SIZE,   /* digits of {n} */
	S_LIT_PLUS,   /* "+" of {n+} read, "}" expected */
	S_LIT_CR,     /* after "}" */
	S_LIT_LF,
	S_LIT_DATA,   /* in-memory literal bytes */
	S_STREAM,     /* streamed literal pending: the caller reads it */
	S_CR,         /* CR of the line end read */
	S_DONE,
	S_ERROR,
};

/* parse_byte() results besides negative errno. */
enum step {
	STEP_NEXT,   /* byte used */
	STEP_AGAIN,  /* byte not used: look at it again in the new state */
	STEP_DONE,   /* byte used; the response is complete */
	STEP_STREAM, /* byte used; a streamed literal's data follows */
};

struct pnode {
	enum imap_arg_type type;
	bool literal8;
	size_t off, len;   /* bytes in the arena */
	uint64_t lit_size;
	size_t parent;     /* node index, ROOT_ARGS or ROOT_CODE */
	size_t idx;        /* position among the parent's elements */
	size_t count;      /* LIST: elements */
	size_t block;      /* LIST: where the elements go in the output */
};

struct level {
	size_t node;  /* the open list, ROOT_ARGS or ROOT_CODE */
	size_t count; /* elements so far */
	size_t last;  /* the latest element, NO_NODE when none */
};

struct imap_parser {
	struct imap_parser_limits lim;
	uint64_t stream_threshold;
	char *stream_items[MAX_STREAM_ITEMS];
	size_t n_stream_items;

	enum pstate state;
	int err;
	char errmsg[160];

	/* The response being parsed. */
	enum imap_resp_type type;
	enum imap_status status;
	bool in_code;
	size_t line_len;   /* bytes outside literal data */
	size_t lit_total;  /* in-memory literal bytes */
	size_t tag_off, code_off, text_off, text_len;
	bool has_tag, has_code, has_text;
	size_t n_code;
	size_t str_off;    /* start of the string being built */
	uint64_t lit_size;
	bool lit8, lit_digits;
	size_t lit_left;
	size_t lit_node;
	size_t lit_item;   /* node before a streamed literal, or NO_NODE */

	char *arena;
	size_t arena_len, arena_cap;
	struct pnode *nodes;
	size_t n_nodes, nodes_cap;
	struct level *levels; /* max_depth + 1; levels[0] is the root */
	size_t depth;

	struct imap_arg *out;
	size_t out_cap;
	struct imap_response resp;
};

MP_PRINTF(3, 4) static int
fail(struct imap_parser *p, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->errmsg, sizeof(p->errmsg), fmt, ap);
	va_end(ap);
	p->err = code;
	p->state = S_ERROR;
	return code;
}

/* Makes room for n more arena bytes, growing geometrically. */
static int
arena_reserve(struct imap_parser *p, size_t n)
{
	size_t need, cap;
	char *a;

	if (n > SIZE_MAX - p->arena_len)
		return fail(p, -E2BIG, "response too large");
	need = p->arena_len + n;
	if (need <= p->arena_cap)
		return 0;
	cap = p->arena_cap ? p->arena_cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	a = realloc(p->arena, cap);
	if (!a)
		return fail(p, -ENOMEM, "out of memory");
	p->arena = a;
	p->arena_cap = cap;
	return 0;
}

static int
str_put(struct imap_parser *p, char c)
{
	int r = arena_reserve(p, 1);

	if (r < 0)
		return r;
	p->arena[p->arena_len++] = c;
	return 0;
}

static void
str_begin(struct imap_parser *p)
{
	p->str_off = p->arena_len;
}

/* NUL-terminates the string being built; returns its length or -errno. */
static int
str_end(struct imap_parser *p, size_t *ret_len)
{
	size_t len = p->arena_len - p->str_off;
	int r = str_put(p, '\0');

	if (r < 0)
		return r;
	*ret_len = len;
	return 0;
}

static bool
mem_eq_nocase(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);

	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];

		if (x >= 'a' && x <= 'z')
			x = (unsigned char)(x - 'a' + 'A');
		if (y >= 'a' && y <= 'z')
			y = (unsigned char)(y - 'a' + 'A');
		if (x != y)
			return false;
	}
	return true;
}

static bool
is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* RFC 3501 tag: 1*<any ASTRING-CHAR except "+">. */
static bool
is_tag_char(unsigned char c)
{
	return !is_ctl(c) && c != ' ' && !strchr("(){%*\"\\+", c);
}

static int
node_add(struct imap_parser *p, enum imap_arg_type type, struct pnode **ret)
{
	struct level *lv = &p->levels[p->depth];
	struct pnode *n;

	if (p->n_nodes >= p->lim.max_args)
		return fail(p, -E2BIG, "more than %zu arguments", p->lim.max_args);
	if (p->n_nodes == p->nodes_cap) {
		size_t cap = p->nodes_cap ? p->nodes_cap * 2 : 64;
		struct pnode *a;

		if (cap > p->lim.max_args)
			cap = p->lim.max_args;
		a = reallocarray(p->nodes, cap, sizeof(*a));
		if (!a)
			return fail(p, -ENOMEM, "out of memory");
		p->nodes = a;
		p->nodes_cap = cap;
	}
	n = &p->nodes[p->n_nodes];
	memset(n, 0, sizeof(*n));
	n->type = type;
	n->off = p->arena_len;
	n->parent = lv->node;
	n->idx = lv->count++;
	lv->last = p->n_nodes++;
	*ret = n;
	return 0;
}

static void
level_root(struct imap_parser *p, size_t root)
{
	p->depth = 0;
	p->levels[0].node = root;
	p->levels[0].count = 0;
	p->levels[0].last = NO_NODE;
}

static enum imap_status
status_word(const char *s, size_t len, bool tagged)
{
	if (mem_eq_nocase(s, len, "OK"))
		return IMAP_STATUS_OK;
	if (mem_eq_nocase(s, len, "NO"))
		return IMAP_STATUS_NO;
	if (mem_eq_nocase(s, len, "BAD"))
		return IMAP_STATUS_BAD;
	if (tagged)
		return IMAP_STATUS_NONE;
	if (mem_eq_nocase(s, len, "BYE"))
		return IMAP_STATUS_BYE;
	if (mem_eq_nocase(s, len, "PREAUTH"))
		return IMAP_STATUS_PREAUTH;
	return IMAP_STATUS_NONE;
}

/*
 * An argument is complete. The first one of a tagged response must be
 * OK/NO/BAD, and the first one of an untagged response may be a status
 * word (RFC 3501 section 7.1): either way the rest of the line is
 * resp-text, which is not made of arguments.
 */
static int
arg_complete(struct imap_parser *p, size_t idx)
{
	struct pnode *n = &p->nodes[idx];
	enum imap_status st = IMAP_STATUS_NONE;

	if (n->type == IMAP_ARG_ATOM && mem_eq_nocase(p->arena + n->off, n->len, "NIL"))
		n->type = IMAP_ARG_NIL;
	p->state = S_ARG_END;
	if (n->parent != ROOT_ARGS || n->idx != 0 || p->type == IMAP_RESP_CONTINUATION)
		return 0;
	if (n->type == IMAP_ARG_ATOM)
		st = status_word(p->arena + n->off, n->len, p->type == IMAP_RESP_TAGGED);
	if (st == IMAP_STATUS_NONE) {
		if (p->type == IMAP_RESP_TAGGED)
			return fail(p, -EBADMSG, "tagged response is not OK, NO or BAD");
		return 0;
	}
	p->status = st;
	p->arena_len = n->off;
	p->n_nodes--;
	level_root(p, ROOT_ARGS);
	p->state = S_TEXT_START;
	return 0;
}

static int
list_open(struct imap_parser *p)
{
	struct pnode *n;
	int r;

	if (p->depth >= p->lim.max_depth)
		return fail(p, -E2BIG, "lists nested deeper than %zu", p->lim.max_depth);
	r = node_add(p, IMAP_ARG_LIST, &n);
	if (r < 0)
		return r;
	p->depth++;
	p->levels[p->depth].node = p->n_nodes - 1;
	p->levels[p->depth].count = 0;
	p->levels[p->depth].last = NO_NODE;
	p->state = S_ARG_START;
	return 0;
}

static int
list_close(struct imap_parser *p)
{
	size_t idx;

	if (p->depth == 0)
		return fail(p, -EBADMSG, "unbalanced ')'");
	idx = p->levels[p->depth].node;
	p->nodes[idx].count = p->levels[p->depth].count;
	p->depth--;
	return arg_complete(p, idx);
}

static int
code_end(struct imap_parser *p)
{
	if (p->depth > 0)
		return fail(p, -EBADMSG, "unbalanced '(' in response code");
	p->n_code = p->levels[0].count;
	p->in_code = false;
	level_root(p, ROOT_ARGS);
	p->state = S_CODE_END;
	return 0;
}

static int
line_end(struct imap_parser *p, unsigned char c)
{
	if (c == '\r') {
		p->state = S_CR;
		return STEP_NEXT;
	}
	return STEP_DONE;
}

/* CR or LF where arguments may end. */
static int
args_line_end(struct imap_parser *p, unsigned char c)
{
	if (p->depth > 0)
		return fail(p, -EBADMSG, "unbalanced '(' at end of line");
	if (p->in_code)
		return fail(p, -EBADMSG, "unterminated response code");
	return line_end(p, c);
}

static int
atom_begin(struct imap_parser *p)
{
	struct pnode *n;
	int r = node_add(p, IMAP_ARG_ATOM, &n);

	if (r < 0)
		return r;
	str_begin(p);
	p->state = S_ATOM;
	return STEP_AGAIN;
}

static int
atom_end(struct imap_parser *p)
{
	size_t idx = p->n_nodes - 1;
	int r = str_end(p, &p->nodes[idx].len);

	if (r < 0)
		return r;
	r = arg_complete(p, idx);
	return r < 0 ? r : STEP_AGAIN;
}

/*
 * FETCH items whose section (RFC 3501 section 6.4.5, RFC 3516) may hold
 * spaces and a parenthesised header list: BODY[HEADER.FIELDS (FROM TO)].
 * Servers send the item name back as one unit, so it is kept as one atom.
 */
static bool
atom_takes_section(const struct imap_parser *p)
{
	static const char *const names[] = {
		"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE",
	};
	size_t len = p->arena_len - p->str_off;
	const char *s;

	if (len == 0)
		return false;
	s = p->arena + p->str_off;
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (mem_eq_nocase(s, len, names[i]))
			return true;
	return false;
}

/* "BODY[]" matches "BODY[]" and "BODY[]<0>" (RFC 3501 section 7.4.2). */
static bool
item_matches(const char *atom, size_t len, const char *name)
{
	size_t nlen = strlen(name);

	if (len < nlen || !mem_eq_nocase(atom, nlen, name))
		return false;
	return len == nlen || atom[nlen] == '<';
}

static bool
literal_streams(struct imap_parser *p)
{
	size_t prev = p->levels[p->depth].last;

	p->lit_item = NO_NODE;
	if (prev != NO_NODE && p->nodes[prev].type == IMAP_ARG_ATOM) {
		const struct pnode *n = &p->nodes[prev];

		for (size_t i = 0; i < p->n_stream_items; i++) {
			if (item_matches(p->arena + n->off, n->len, p->stream_items[i])) {
				p->lit_item = prev;
				return true;
			}
		}
	}
	if (p->lit_size > p->stream_threshold) {
		if (prev != NO_NODE && p->nodes[prev].type == IMAP_ARG_ATOM)
			p->lit_item = prev;
		return true;
	}
	return false;
}

/* The line end after {n} was read: the literal's data comes next. */
static int
literal_begin(struct imap_parser *p)
{
	bool stream = literal_streams(p);
	struct pnode *n;
	size_t len;
	int r;

	if (!stream) {
		/* Also leaves room for the NUL after it, whatever max_literal is. */
		if (p->lit_size > p->lim.max_literal || p->lit_size >= SIZE_MAX)
			return fail(p, -E2BIG, "literal of %llu bytes is over the %zu-byte cap",
				    (unsigned long long)p->lit_size, p->lim.max_literal);
		if (p->lit_size > p->lim.max_literal_total - p->lit_total)
			return fail(p, -E2BIG, "literals in one response over %zu bytes",
				    p->lim.max_literal_total);
	}
	r = node_add(p, stream ? IMAP_ARG_LITERAL_STREAMED : IMAP_ARG_LITERAL, &n);
	if (r < 0)
		return r;
	n->literal8 = p->lit8;
	n->lit_size = p->lit_size;
	p->lit_node = p->n_nodes - 1;
	str_begin(p);
	if (stream) {
		r = str_end(p, &len);
		if (r < 0)
			return r;
		p->state = S_STREAM;
		return STEP_STREAM;
	}
	/* lit_size <= max_literal, a size_t: the cast below is exact. */
	r = arena_reserve(p, (size_t)p->lit_size + 1);
	if (r < 0)
		return r;
	p->lit_total += (size_t)p->lit_size;
	p->lit_left = (size_t)p->lit_size;
	p->state = S_LIT_DATA;
	if (p->lit_left > 0)
		return STEP_NEXT;
	r = str_end(p, &p->nodes[p->lit_node].len);
	if (r < 0)
		return r;
	return arg_complete(p, p->lit_node);
}

static int
literal_digit(struct imap_parser *p, unsigned char c)
{
	unsigned d = (unsigned)(c - '0');

	/* RFC 3501 number64 / RFC 9051: sizes fit 63 bits; reject before overflowing. */
	if (p->lit_size > (UINT64_MAX - d) / 10)
		return fail(p, -E2BIG, "literal size does not fit in 64 bits");
	p->lit_size = p->lit_size * 10 + d;
	p->lit_digits = true;
	return STEP_NEXT;
}

static int
literal_open(struct imap_parser *p, bool lit8)
{
	p->lit8 = lit8;
	p->lit_size = 0;
	p->lit_digits = false;
	p->state = S_LIT_SIZE;
	return STEP_NEXT;
}

/* S_ARG_START: anything that may begin an argument, or end the list or line. */
static int
arg_start(struct imap_parser *p, unsigned char c)
{
	struct pnode *n;
	int r;

	switch (c) {
	case ' ':
		/* Lenient: some servers send two spaces or one before CRLF. */
		return STEP_NEXT;
	case '(':
		r = list_open(p);
		return r < 0 ? r : STEP_NEXT;
	case ')':
		r = list_close(p);
		return r < 0 ? r : STEP_NEXT;
	case ']':
		if (!p->in_code)
			return atom_begin(p);
		r = code_end(p);
		return r < 0 ? r : STEP_NEXT;
	case '"':
		r = node_add(p, IMAP_ARG_STRING, &n);
		if (r < 0)
			return r;
		str_begin(p);
		p->state = S_QUOTED;
		return STEP_NEXT;
	case '{':
		return literal_open(p, false);
	case '~':
		p->state = S_TILDE;
		return STEP_NEXT;
	case '\r':
	case '\n':
		return args_line_end(p, c);
	case '\0':
		return fail(p, -EBADMSG, "NUL byte in response");
	default:
		if (is_ctl(c))
			return fail(p, -EBADMSG, "control character 0x%02x in response", c);
		return atom_begin(p);
	}
}

/* S_ARG_END: an argument was just read. */
static int
arg_end(struct imap_parser *p, unsigned char c)
{
	int r;

	switch (c) {
	case ' ':
		p->state = S_ARG_START;
		return STEP_NEXT;
	case ')':
		r = list_close(p);
		return r < 0 ? r : STEP_NEXT;
	case '(':
		/*
		 * RFC 3501 section 9 writes lists of lists without a space:
		 * env-from = "(" 1*address ")", body-type-mpart = 1*body SP ...
		 */
		if (p->levels[p->depth].last == NO_NODE ||
		    p->nodes[p->levels[p->depth].last].type != IMAP_ARG_LIST)
			break;
		r = list_open(p);
		return r < 0 ? r : STEP_NEXT;
	case ']':
		if (!p->in_code)
			break;
		r = code_end(p);
		return r < 0 ? r : STEP_NEXT;
	case '\r':
	case '\n':
		return args_line_end(p, c);
	case '\0':
		return fail(p, -EBADMSG, "NUL byte in response");
	default:
		break;
	}
	return fail(p, -EBADMSG, "no space between arguments");
}

static int
atom_byte(struct imap_parser *p, unsigned char c)
{
	switch (c) {
	case ' ':
	case '(':
	case ')':
	case '\r':
	case '\n':
		return atom_end(p);
	case ']':
		if (p->in_code)
			return atom_end(p);
		break;
	case '[':
		if (!p->in_code && atom_takes_section(p))
			p->state = S_SECTION;
		break;
	case '"':
		/* Generic response codes carry free text (RFC 3501 section 9 resp-text-code). */
		if (!p->in_code)
			return fail(p, -EBADMSG, "quote inside an atom");
		break;
	case '\0':
		return fail(p, -EBADMSG, "NUL byte in response");
	default:
		if (is_ctl(c))
			return fail(p, -EBADMSG, "control character 0x%02x in atom", c);
		break;
	}
	return str_put(p, (char)c) < 0 ? p->err : STEP_NEXT;
}

static int
section_byte(struct imap_parser *p, unsigned char c)
{
	if (c == '\r' || c == '\n')
		return fail(p, -EBADMSG, "unterminated '[' in FETCH item");
	if (c == '\0')
		return fail(p, -EBADMSG, "NUL byte in response");
	if (is_ctl(c))
		return fail(p, -EBADMSG, "control character 0x%02x in FETCH item", c);
	if (c == ']')
		p->state = S_ATOM;
	return str_put(p, (char)c) < 0 ? p->err : STEP_NEXT;
}

/* RFC 3501 quoted: TEXT-CHAR except quoted-specials, which come escaped. */
static int
quoted_byte(struct imap_parser *p, unsigned char c)
{
	size_t idx = p->n_nodes - 1;
	int r;

	if (p->state == S_QUOTED_ESC) {
		if (c != '"' && c != '\\') {
			if (is_ctl(c))
				return fail(p, -EBADMSG, "bad escape in quoted string");
			return fail(p, -EBADMSG, "bad escape \\%c in quoted string", c);
		}
		p->state = S_QUOTED;
		return str_put(p, (char)c) < 0 ? p->err : STEP_NEXT;
	}
	switch (c) {
	case '"':
		r = str_end(p, &p->nodes[idx].len);
		if (r < 0)
			return r;
		r = arg_complete(p, idx);
		return r < 0 ? r : STEP_NEXT;
	case '\\':
		p->state = S_QUOTED_ESC;
		return STEP_NEXT;
	case '\r':
	case '\n':
		return fail(p, -EBADMSG, "unterminated quoted string");
	case '\0':
		return fail(p, -EBADMSG, "NUL byte in quoted string");
	default:
		return str_put(p, (char)c) < 0 ? p->err : STEP_NEXT;
	}
}

/* {n}, {n+} (RFC 7888) and ~{n} (RFC 3516), up to the line end after "}". */
static int
literal_spec_byte(struct imap_parser *p, unsigned char c)
{
	switch (p->state) {
	case S_LIT_SIZE:
		if (c >= '0' && c <= '9')
			return literal_digit(p, c);
		if (c == '-')
			return fail(p, -EBADMSG, "negative literal size");
		if (!p->lit_digits || (c != '+' && c != '}'))
			return fail(p, -EBADMSG, "bad literal size");
		p->state = c == '+' ? S_LIT_PLUS : S_LIT_CR;
		return STEP_NEXT;
	case S_LIT_PLUS:
		if (c != '}')
			return fail(p, -EBADMSG, "bad literal size");
		p->state = S_LIT_CR;
		return STEP_NEXT;
	case S_LIT_CR:
		if (c == '\r') {
			p->state = S_LIT_LF;
			return STEP_NEXT;
		}
		if (c != '\n')
			return fail(p, -EBADMSG, "literal size not followed by a line end");
		break;
	default:
		if (c != '\n')
			return fail(p, -EBADMSG, "literal size not followed by a line end");
		break;
	}
	return literal_begin(p);
}

/* Status response text: ["[" resp-text-code "]" SP] text (RFC 3501 section 9). */
static int
text_byte(struct imap_parser *p, unsigned char c)
{
	size_t len;
	int r;

	if (c == '\0')
		return fail(p, -EBADMSG, "NUL byte in response text");
	switch (p->state) {
	case S_TEXT_START:
		if (c == '\r' || c == '\n')
			return line_end(p, c);
		if (c != ' ')
			return fail(p, -EBADMSG, "no space after the status");
		p->state = S_TEXT_BEGIN;
		return STEP_NEXT;
	case S_TEXT_BEGIN:
		if (c == '[') {
			str_begin(p);
			p->code_off = p->arena_len;
			p->state = S_CODE_NAME;
			return STEP_NEXT;
		}
		break;
	case S_CODE_NAME:
		if (c == ']' || c == ' ') {
			if (p->arena_len == p->code_off)
				return fail(p, -EBADMSG, "empty response code");
			r = str_end(p, &len);
			if (r < 0)
				return r;
			p->has_code = true;
			if (c == ']')
				return code_end(p) < 0 ? p->err : STEP_NEXT;
			p->in_code = true;
			level_root(p, ROOT_CODE);
			p->state = S_ARG_START;
			return STEP_NEXT;
		}
		if (is_ctl(c) || strchr("()[{\"\\", c))
			return fail(p, -EBADMSG, "bad character in response code");
		return str_put(p, (char)c) < 0 ? p->err : STEP_NEXT;
	case S_CODE_END:
		if (c == ' ') {
			/* Text proper: a "[" here opens no second code. */
			str_begin(p);
			p->text_off = p->arena_len;
			p->has_text = true;
			p->state = S_TEXT;
			return STEP_NEXT;
		}
		/* Lenient: "[READ-ONLY]" right before the line end or the text. */
		break;
	default:
		break;
	}
	/* S_TEXT, or its first byte. */
	if (p->state != S_TEXT) {
		if (c == '\r' || c == '\n')
			return line_end(p, c);
		str_begin(p);
		p->text_off = p->arena_len;
		p->has_text = true;
		p->state = S_TEXT;
	}
	if (c == '\r' || c == '\n') {
		r = str_end(p, &p->text_len);
		return r < 0 ? r : line_end(p, c);
	}
	return str_put(p, (char)c) < 0 ? p->err : STEP_NEXT;
}

/* The first bytes: tag, "*" or "+" (RFC 3501 section 2.2.2). */
static int
start_byte(struct imap_parser *p, unsigned char c)
{
	size_t len;
	int r;

	switch (p->state) {
	case S_START:
		if (c == '*') {
			p->type = IMAP_RESP_UNTAGGED;
			p->state = S_STAR;
			return STEP_NEXT;
		}
		if (c == '+') {
			p->type = IMAP_RESP_CONTINUATION;
			p->state = S_PLUS;
			return STEP_NEXT;
		}
		if (c == '\0')
			return fail(p, -EBADMSG, "NUL byte in response");
		if (c == '\r' || c == '\n')
			return fail(p, -EBADMSG, "empty response line");
		if (!is_tag_char(c))
			return fail(p, -EBADMSG, "bad character in tag");
		p->type = IMAP_RESP_TAGGED;
		str_begin(p);
		p->tag_off = p->arena_len;
		p->state = S_TAG;
		return str_put(p, (char)c) < 0 ? p->err : STEP_NEXT;
	case S_TAG:
		if (c == ' ') {
			r = str_end(p, &len);
			if (r < 0)
				return r;
			p->has_tag = true;
			p->state = S_ARG_START;
			return STEP_NEXT;
		}
		if (!is_tag_char(c))
			return fail(p, -EBADMSG, "bad character in tag");
		return str_put(p, (char)c) < 0 ? p->err : STEP_NEXT;
	case S_STAR:
		if (c != ' ')
			return fail(p, -EBADMSG, "no space after '*'");
		p->state = S_ARG_START;
		return STEP_NEXT;
	default:
		/* S_PLUS: RFC 3501 continue-req is "+" SP; tolerate a bare "+". */
		if (c == ' ') {
			p->state = S_TEXT_BEGIN;
			return STEP_NEXT;
		}
		p->state = S_TEXT_BEGIN;
		return STEP_AGAIN;
	}
}

static int
parse_byte(struct imap_parser *p, unsigned char c)
{
	switch (p->state) {
	case S_START:
	case S_TAG:
	case S_STAR:
	case S_PLUS:
		return start_byte(p, c);
	case S_TEXT_START:
	case S_TEXT_BEGIN:
	case S_CODE_NAME:
	case S_CODE_END:
	case S_TEXT:
		return text_byte(p, c);
	case S_ARG_START:
		return arg_start(p, c);
	case S_ARG_END:
		return arg_end(p, c);
	case S_ATOM:
		return atom_byte(p, c);
	case S_SECTION:
		return section_byte(p, c);
	case S_TILDE:
		if (c == '{')
			return literal_open(p, true);
		/* A plain atom that starts with "~", as mailbox names in LIST do. */
		if (atom_begin(p) < 0)
			return p->err;
		return str_put(p, '~') < 0 ? p->err : STEP_AGAIN;
	case S_QUOTED:
	case S_QUOTED_ESC:
		return quoted_byte(p, c);
	case S_LIT_SIZE:
	case S_LIT_PLUS:
	case S_LIT_CR:
	case S_LIT_LF:
		return literal_spec_byte(p, c);
	case S_CR:
		if (c != '\n')
			return fail(p, -EBADMSG, "CR not followed by LF");
		return STEP_DONE;
	default:
		return fail(p, -EINVAL, "parser in unexpected state");
	}
}

static void
response_reset(struct imap_parser *p)
{
	p->state = S_START;
	p->err = 0;
	p->errmsg[0] = '\0';
	p->type = IMAP_RESP_UNTAGGED;
	p->status = IMAP_STATUS_NONE;
	p->in_code = false;
	p->line_len = 0;
	p->lit_total = 0;
	p->has_tag = p->has_code = p->has_text = false;
	p->n_code = 0;
	p->text_len = 0;
	p->arena_len = 0;
	p->n_nodes = 0;
	level_root(p, ROOT_ARGS);
	memset(&p->resp, 0, sizeof(p->resp));
}

/* Lays the nodes out so that each list's elements are contiguous. */
static int
finish(struct imap_parser *p)
{
	size_t n_args = p->status == IMAP_STATUS_NONE ? p->levels[0].count : 0;
	size_t next = n_args + p->n_code;
	struct imap_response *r = &p->resp;

	if (p->type == IMAP_RESP_UNTAGGED && p->status == IMAP_STATUS_NONE && n_args == 0)
		return fail(p, -EBADMSG, "empty untagged response");
	if (p->type == IMAP_RESP_TAGGED && p->status == IMAP_STATUS_NONE)
		return fail(p, -EBADMSG, "tagged response is not OK, NO or BAD");
	if (p->n_nodes > p->out_cap) {
		struct imap_arg *a = reallocarray(p->out, p->n_nodes, sizeof(*a));

		if (!a)
			return fail(p, -ENOMEM, "out of memory");
		p->out = a;
		p->out_cap = p->n_nodes;
	}
	for (size_t i = 0; i < p->n_nodes; i++) {
		if (p->nodes[i].type == IMAP_ARG_LIST) {
			p->nodes[i].block = next;
			next += p->nodes[i].count;
		}
	}
	for (size_t i = 0; i < p->n_nodes; i++) {
		const struct pnode *n = &p->nodes[i];
		size_t pos = n->parent == ROOT_ARGS ? n->idx
			     : n->parent == ROOT_CODE ? n_args + n->idx
						      : p->nodes[n->parent].block + n->idx;
		struct imap_arg *a = &p->out[pos];

		a->type = n->type;
		a->literal8 = n->literal8;
		a->literal_size = n->lit_size;
		a->count = n->type == IMAP_ARG_LIST ? n->count : 0;
		a->list = a->count ? &p->out[n->block] : NULL;
		a->str = n->type == IMAP_ARG_LIST ? "" : p->arena + n->off;
		a->len = n->type == IMAP_ARG_LIST ? 0 : n->len;
	}
	r->type = p->type;
	r->status = p->status;
	r->tag = p->has_tag ? p->arena + p->tag_off : NULL;
	r->code = p->has_code ? p->arena + p->code_off : NULL;
	r->code_args = p->n_code ? p->out + n_args : NULL;
	r->code_count = p->n_code;
	r->args = n_args ? p->out : NULL;
	r->count = n_args;
	r->text = p->has_text ? p->arena + p->text_off : "";
	r->text_len = p->has_text ? p->text_len : 0;
	p->state = S_DONE;
	return 0;
}

/* Copies as much in-memory literal data as is there. */
static int
literal_data(struct imap_parser *p, const char *data, size_t len, size_t *used)
{
	size_t n = len < p->lit_left ? len : p->lit_left;

	/* literal_begin() reserved lit_size + 1 bytes. */
	memcpy(p->arena + p->arena_len, data, n);
	p->arena_len += n;
	p->lit_left -= n;
	*used = n;
	if (p->lit_left > 0)
		return 0;
	if (str_end(p, &p->nodes[p->lit_node].len) < 0)
		return p->err;
	return arg_complete(p, p->lit_node);
}

int
imap_parser_feed(struct imap_parser *p, const char *data, size_t len, size_t *ret_consumed,
		 const struct imap_response **ret_resp)
{
	size_t i = 0, used;
	int r = 0;

	*ret_consumed = 0;
	if (p->state == S_ERROR)
		return p->err;
	if (p->state == S_STREAM)
		return -EINVAL;
	if (p->state == S_DONE)
		response_reset(p);
	while (i < len) {
		if (p->state == S_LIT_DATA) {
			r = literal_data(p, data + i, len - i, &used);
			i += used;
			if (r < 0)
				break;
			continue;
		}
		if (p->line_len >= p->lim.max_line) {
			r = fail(p, -E2BIG, "response longer than %zu bytes", p->lim.max_line);
			break;
		}
		do
			r = parse_byte(p, (unsigned char)data[i]);
		while (r == STEP_AGAIN);
		if (r < 0)
			break;
		i++;
		p->line_len++;
		if (r == STEP_DONE) {
			r = finish(p);
			if (r < 0)
				break;
			*ret_consumed = i;
			if (ret_resp)
				*ret_resp = &p->resp;
			return IMAP_PARSE_DONE;
		}
		if (r == STEP_STREAM) {
			*ret_consumed = i;
			return IMAP_PARSE_LITERAL;
		}
	}
	*ret_consumed = i;
	return r < 0 ? r : 0;
}

int
imap_parser_literal(const struct imap_parser *p, uint64_t *ret_size, bool *ret_literal8,
		    const char **ret_item)
{
	if (p->state != S_STREAM)
		return -EINVAL;
	if (ret_size)
		*ret_size = p->nodes[p->lit_node].lit_size;
	if (ret_literal8)
		*ret_literal8 = p->nodes[p->lit_node].literal8;
	if (ret_item)
		*ret_item = p->lit_item == NO_NODE ? NULL : p->arena + p->nodes[p->lit_item].off;
	return 0;
}

int
imap_parser_literal_done(struct imap_parser *p)
{
	if (p->state != S_STREAM)
		return -EINVAL;
	return arg_complete(p, p->lit_node);
}

int
imap_parser_eof(struct imap_parser *p)
{
	switch (p->state) {
	case S_START:
	case S_DONE:
		return 0;
	case S_ERROR:
		return p->err;
	case S_LIT_DATA:
	case S_STREAM:
		return fail(p, -EBADMSG, "input ended inside a literal");
	default:
		return fail(p, -EBADMSG, "input ended inside a response");
	}
}

const char *
imap_parser_error(const struct imap_parser *p)
{
	return p->state == S_ERROR ? p->errmsg : "";
}

void
imap_parser_stream_threshold(struct imap_parser *p, uint64_t threshold)
{
	p->stream_threshold = threshold;
}

int
imap_parser_stream_item(struct imap_parser *p, const char *name)
{
	char *s;

	if (!name || !*name)
		return -EINVAL;
	if (p->n_stream_items >= MAX_STREAM_ITEMS)
		return -E2BIG;
	s = strdup(name);
	if (!s)
		return -ENOMEM;
	p->stream_items[p->n_stream_items++] = s;
	return 0;
}

int
imap_parser_new(const struct imap_parser_limits *limits, struct imap_parser **ret)
{
	struct imap_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	if (limits)
		p->lim = *limits;
	if (!p->lim.max_line)
		p->lim.max_line = DEFAULT_MAX_LINE;
	if (!p->lim.max_depth)
		p->lim.max_depth = DEFAULT_MAX_DEPTH;
	if (!p->lim.max_literal)
		p->lim.max_literal = DEFAULT_MAX_LITERAL;
	if (!p->lim.max_literal_total)
		p->lim.max_literal_total = DEFAULT_MAX_LITERAL_TOTAL;
	if (!p->lim.max_args)
		p->lim.max_args = DEFAULT_MAX_ARGS;
	p->stream_threshold = UINT64_MAX;
	/* max_depth + 1 levels: the root and one per open list; guard the product. */
	if (p->lim.max_depth >= SIZE_MAX / sizeof(*p->levels) - 1)
		p->levels = NULL;
	else
		p->levels = calloc(p->lim.max_depth + 1, sizeof(*p->levels));
	if (!p->levels) {
		free(p);
		return -ENOMEM;
	}
	response_reset(p);
	*ret = p;
	return 0;
}

void
imap_parser_reset(struct imap_parser *p)
{
	if (p)
		response_reset(p);
}

void
imap_parser_free(struct imap_parser *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_stream_items; i++)
		free(p->stream_items[i]);
	free(p->arena);
	free(p->nodes);
	free(p->levels);
	free(p->out);
	free(p);
}

/* A bounded writer that counts what it could not write, as snprintf() does. */
struct wbuf {
	char *buf;
	size_t len, need;
};

static void
w_putc(struct wbuf *w, char c)
{
	if (w->need + 1 < w->len)
		w->buf[w->need] = c;
	w->need++;
}

static void
w_puts(struct wbuf *w, const char *s)
{
	while (*s)
		w_putc(w, *s++);
}

static void
w_u64(struct wbuf *w, uint64_t v)
{
	char d[24];
	size_t n = 0;

	do {
		d[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		w_putc(w, d[--n]);
}

/* Control bytes as \xNN; in quoted form also quotes and backslashes escaped. */
static void
w_bytes(struct wbuf *w, const char *s, size_t len, bool quoted)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_ctl(c)) {
			w_puts(w, "\\x");
			w_putc(w, hex[c >> 4]);
			w_putc(w, hex[c & 15]);
			continue;
		}
		if (quoted && (c == '"' || c == '\\'))
			w_putc(w, '\\');
		w_putc(w, (char)c);
	}
}

static void w_args(struct wbuf *w, const struct imap_arg *args, size_t count);

static void
w_arg(struct wbuf *w, const struct imap_arg *a)
{
	switch (a->type) {
	case IMAP_ARG_ATOM:
	case IMAP_ARG_NIL:
		w_bytes(w, a->str, a->len, false);
		break;
	case IMAP_ARG_STRING:
		w_putc(w, '"');
		w_bytes(w, a->str, a->len, true);
		w_putc(w, '"');
		break;
	case IMAP_ARG_LITERAL:
		w_puts(w, a->literal8 ? "~{" : "{");
		w_u64(w, a->literal_size);
		w_puts(w, "}\"");
		w_bytes(w, a->str, a->len, true);
		w_putc(w, '"');
		break;
	case IMAP_ARG_LITERAL_STREAMED:
		w_puts(w, a->literal8 ? "<lit8 " : "<lit ");
		w_u64(w, a->literal_size);
		w_putc(w, '>');
		break;
	case IMAP_ARG_LIST:
		w_putc(w, '(');
		w_args(w, a->list, a->count);
		w_putc(w, ')');
		break;
	default:
		w_puts(w, "<?>");
		break;
	}
}

static void
w_args(struct wbuf *w, const struct imap_arg *args, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		if (i > 0)
			w_putc(w, ' ');
		w_arg(w, &args[i]);
	}
}

static size_t
w_finish(struct wbuf *w)
{
	if (w->len > 0)
		w->buf[w->need < w->len ? w->need : w->len - 1] = '\0';
	return w->need;
}

size_t
imap_args_format(const struct imap_arg *args, size_t count, char *buf, size_t len)
{
	struct wbuf w = {buf, len, 0};

	w_args(&w, args, count);
	return w_finish(&w);
}

size_t
imap_response_format(const struct imap_response *r, char *buf, size_t len)
{
	struct wbuf w = {buf, len, 0};

	if (r->type == IMAP_RESP_TAGGED)
		w_bytes(&w, r->tag ? r->tag : "", r->tag ? strlen(r->tag) : 0, false);
	else
		w_putc(&w, r->type == IMAP_RESP_CONTINUATION ? '+' : '*');
	if (r->status != IMAP_STATUS_NONE) {
		w_putc(&w, ' ');
		w_puts(&w, imap_status_to_string(r->status));
	}
	if (r->count > 0) {
		w_putc(&w, ' ');
		w_args(&w, r->args, r->count);
	}
	if (r->code) {
		w_puts(&w, " [");
		w_bytes(&w, r->code, strlen(r->code), false);
		if (r->code_count > 0) {
			w_putc(&w, ' ');
			w_args(&w, r->code_args, r->code_count);
		}
		w_putc(&w, ']');
	}
	if (r->text_len > 0) {
		w_putc(&w, ' ');
		w_bytes(&w, r->text, r->text_len, false);
	}
	return w_finish(&w);
}

bool
imap_arg_atom_is(const struct imap_arg *a, const char *s)
{
	if (!a || (a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_NIL))
		return false;
	return mem_eq_nocase(a->str, a->len, s);
}

const struct imap_arg *
imap_fetch_item(const struct imap_arg *list, const char *name)
{
	if (!list || list->type != IMAP_ARG_LIST)
		return NULL;
	for (size_t i = 0; i + 1 < list->count; i += 2)
		if (imap_arg_atom_is(&list->list[i], name))
			return &list->list[i + 1];
	return NULL;
}

int
imap_arg_u64(const struct imap_arg *a, uint64_t *ret)
{
	uint64_t v = 0;

	if (!a || a->type != IMAP_ARG_ATOM || a->len == 0)
		return -EBADMSG;
	for (size_t i = 0; i < a->len; i++) {
		unsigned d = (unsigned)(unsigned char)a->str[i] - '0';

		if (d > 9)
			return -EBADMSG;
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

int
imap_arg_u32(const struct imap_arg *a, uint32_t *ret)
{
	uint64_t v;
	int r = imap_arg_u64(a, &v);

	if (r < 0)
		return r;
	if (v > UINT32_MAX)
		return -ERANGE;
	*ret = (uint32_t)v;
	return 0;
}

int
imap_arg_string(const struct imap_arg *a, const char **ret_str, size_t *ret_len)
{
	if (!a)
		return -EBADMSG;
	switch (a->type) {
	case IMAP_ARG_ATOM:
	case IMAP_ARG_STRING:
	case IMAP_ARG_LITERAL:
		*ret_str = a->str;
		*ret_len = a->len;
		return 0;
	case IMAP_ARG_NIL:
		*ret_str = NULL;
		*ret_len = 0;
		return 0;
	default:
		return -EBADMSG;
	}
}

bool
imap_response_code_is(const struct imap_response *r, const char *name)
{
	return r && r->code && mem_eq_nocase(r->code, strlen(r->code), name);
}

const char *
imap_arg_type_to_string(enum imap_arg_type t)
{
	static const char *const names[IMAP_ARG_TYPE_MAX] = {
		[IMAP_ARG_ATOM] = "atom",
		[IMAP_ARG_STRING] = "string",
		[IMAP_ARG_LITERAL] = "literal",
		[IMAP_ARG_LITERAL_STREAMED] = "streamed literal",
		[IMAP_ARG_NIL] = "NIL",
		[IMAP_ARG_LIST] = "list",
	};

	return MP_ENUM_NAME(names, t);
}

const char *
imap_resp_type_to_string(enum imap_resp_type t)
{
	static const char *const names[IMAP_RESP_TYPE_MAX] = {
		[IMAP_RESP_TAGGED] = "tagged",
		[IMAP_RESP_UNTAGGED] = "untagged",
		[IMAP_RESP_CONTINUATION] = "continuation",
	};

	return MP_ENUM_NAME(names, t);
}

const char *
imap_status_to_string(enum imap_status s)
{
	static const char *const names[IMAP_STATUS_MAX] = {
		[IMAP_STATUS_NONE] = "",
		[IMAP_STATUS_OK] = "OK",
		[IMAP_STATUS_NO] = "NO",
		[IMAP_STATUS_BAD] = "BAD",
		[IMAP_STATUS_BYE] = "BYE",
		[IMAP_STATUS_PREAUTH] = "PREAUTH",
	};

	return MP_ENUM_NAME(names, s);
}
