/*
 * Send records (DESIGN invariant 7): the state of each outbox message that
 * is not simply queued, by the message's base name, with a short text (the
 * server's refusal, the recipients it refused, where the Sent copy went).
 * Their lines are described in state.c:
 *
 *   NAME.state    "O <base> <state> <text or ->"
 *   NAME.journal  "O <base> <state> <text or ->"   ("queued": record removed)
 *
 * The last line for a base wins, so replaying a journal over a snapshot
 * that already holds it changes nothing. Few records live at once (the
 * outbox's size), so they are kept in an array sorted by base: lookups
 * are a binary search, and state_send_foreach() walks them in order.
 * Calls state_set.c and state_name.c only (see state_int.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "state_int.h"

/* What state_send_set() keeps of a text. */
#define SEND_TEXT_MAX 400

static const char *const send_names[STATE_SEND_MAX] = {
	"queued", "submitting", "held", "retry", "accepted", "copied", "failed",
};

const char *
state_send_to_string(enum state_send st)
{
	return (unsigned)st < STATE_SEND_MAX ? send_names[st] : "?";
}

static int
send_from_string(const char *s, enum state_send *ret)
{
	for (int i = 0; i < STATE_SEND_MAX; i++)
		if (strcmp(s, send_names[i]) == 0) {
			*ret = (enum state_send)i;
			return 0;
		}
	return -EBADMSG;
}

/* The index of base, or where it would go (*ret_found false). */
static size_t
send_find(const struct state *s, const char *base, bool *ret_found)
{
	size_t lo = 0, hi = s->nsends;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->sends[mid].base, base);

		if (c == 0) {
			*ret_found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ret_found = false;
	return lo;
}

static void
send_drop(struct state *s, size_t i)
{
	free(s->sends[i].base);
	free(s->sends[i].text);
	memmove(s->sends + i, s->sends + i + 1, (s->nsends - i - 1) * sizeof(*s->sends));
	s->nsends--;
}

/*
 * Puts base's record in memory: st QUEUED removes it. text is taken over
 * (freed on error). -ENOMEM.
 */
static int
send_apply(struct state *s, const char *base, enum state_send st, char *text)
{
	bool found;
	size_t i = send_find(s, base, &found);
	char *b;

	if (st == STATE_SEND_QUEUED) {
		if (found)
			send_drop(s, i);
		free(text);
		return 0;
	}
	if (found) {
		free(s->sends[i].text);
		s->sends[i].text = text;
		s->sends[i].st = st;
		return 0;
	}
	if (s->nsends == s->scap) {
		size_t cap = s->scap ? s->scap * 2 : 16;
		struct send_rec *v = realloc(s->sends, cap * sizeof(*v));

		if (!v) {
			free(text);
			return -ENOMEM;
		}
		s->sends = v;
		s->scap = cap;
	}
	b = strdup(base);
	if (!b) {
		free(text);
		return -ENOMEM;
	}
	memmove(s->sends + i + 1, s->sends + i, (s->nsends - i) * sizeof(*s->sends));
	s->sends[i] = (struct send_rec){ .base = b, .st = st, .text = text };
	s->nsends++;
	return 0;
}

int
st_send_load(struct state *s, char *line)
{
	enum state_send st;
	char *f[4], *text;

	if (st_split_fields(line, f, 4) < 0 || strcmp(f[0], "O") != 0 ||
	    send_from_string(f[2], &st) < 0 || st_unescape(f[1]) < 0)
		return -EBADMSG;
	if (strcmp(f[3], "-") == 0)
		f[3][0] = '\0';
	else if (st_unescape(f[3]) < 0)
		return -EBADMSG;
	text = strdup(f[3]);
	if (!text)
		return -ENOMEM;
	return send_apply(s, f[1], st, text);
}

/* "O <base> <state> <text or ->\n"; a text that is "-" itself is written escaped. */
static void
put_send(struct dbuf *b, const char *base, enum state_send st, const char *text)
{
	const char *name = state_send_to_string(st);

	st_dbuf_put_tagged(b, 'O', base);
	st_dbuf_put(b, " ", 1);
	st_dbuf_put(b, name, strlen(name));
	st_dbuf_put(b, " ", 1);
	if (!text || !*text)
		st_dbuf_put(b, "-", 1);
	else if (strcmp(text, "-") == 0)
		st_dbuf_put(b, "%2D", 3);
	else
		st_dbuf_put_esc(b, text);
	st_dbuf_put(b, "\n", 1);
}

static size_t
send_line_max(const char *base, const char *text)
{
	return 24 + st_esc_max(base) + (text ? st_esc_max(text) : 0);
}

int
st_send_snapshot(struct snap *w, const struct state *s)
{
	for (size_t i = 0; i < s->nsends; i++) {
		const struct send_rec *rec = &s->sends[i];
		int r = st_snap_reserve(w, send_line_max(rec->base, rec->text));

		if (r < 0)
			return r;
		put_send(&w->b, rec->base, rec->st, rec->text);
	}
	return 0;
}

void
st_send_free(struct state *s)
{
	for (size_t i = 0; i < s->nsends; i++) {
		free(s->sends[i].base);
		free(s->sends[i].text);
	}
	free(s->sends);
	s->sends = NULL;
	s->nsends = s->scap = 0;
}

enum state_send
state_send_get(const struct state *s, const char *base, const char **ret_text)
{
	bool found;
	size_t i = base ? send_find(s, base, &found) : 0;

	if (!base || !found) {
		if (ret_text)
			*ret_text = "";
		return STATE_SEND_QUEUED;
	}
	if (ret_text)
		*ret_text = s->sends[i].text ? s->sends[i].text : "";
	return s->sends[i].st;
}

/* A base is one file name: not empty, no '/', not "." or "..", not too long. */
static bool
base_valid(const char *base)
{
	size_t n = base ? strlen(base) : 0;

	return n > 0 && n <= NAME_MAX && !strchr(base, '/') && strcmp(base, ".") != 0 &&
	       strcmp(base, "..") != 0;
}

/*
 * The text kept: at most SEND_TEXT_MAX bytes, cut before a UTF-8 sequence
 * that would not fit whole, control bytes replaced by '?'.
 */
static char *
send_text_copy(const char *text)
{
	size_t n = text ? strlen(text) : 0;
	char *t;

	if (n > SEND_TEXT_MAX) {
		n = SEND_TEXT_MAX;
		while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
			n--;
	}
	t = malloc(n + 1);
	if (!t)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)text[i];

		t[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	t[n] = '\0';
	return t;
}

int
state_send_set(struct state *s, const char *base, enum state_send st, const char *text,
	       struct mp_err *err)
{
	const char *old_text;
	enum state_send old;
	size_t mark;
	char *t;
	int r = st_writable(s, err);

	if (r < 0)
		return r;
	if (!base_valid(base) || (unsigned)st >= STATE_SEND_MAX)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: invalid send record '%s'",
				  s->account, base ? base : "(null)");
	t = send_text_copy(st == STATE_SEND_QUEUED ? NULL : text);
	if (!t)
		return st_record_fail(s, -ENOMEM, err);
	old = state_send_get(s, base, &old_text);
	/* Nothing changes: nothing to journal (queued with no record included). */
	if (old == st && strcmp(old_text, t) == 0) {
		free(t);
		return 0;
	}
	/* Reserve first so that, once memory changed, the journal line cannot fail. */
	r = st_reserve(s, send_line_max(base, t), err);
	if (r < 0) {
		free(t);
		return r;
	}
	mark = s->pending.len;
	put_send(&s->pending, base, st, t);
	r = send_apply(s, base, st, t);
	if (r < 0) {
		/* Take the line back: memory and journal must say the same. */
		s->pending.len = mark;
		return st_record_fail(s, r, err);
	}
	s->send_pending = true;
	return 0;
}

int
state_send_foreach(const struct state *s,
		   int (*cb)(void *ud, const char *base, enum state_send st, const char *text),
		   void *ud)
{
	for (size_t i = 0; i < s->nsends; i++) {
		int r = cb(ud, s->sends[i].base, s->sends[i].st,
			   s->sends[i].text ? s->sends[i].text : "");

		if (r != 0)
			return r;
	}
	return 0;
}
