/*
 * The Maildir names recorded since the last compaction (for start-up
 * recovery), the record each was delivered for, and the info letters it
 * is to be published with; and the checks every change to the state
 * passes before it touches the journal buffer. Used by the record modules
 * (state_pop3.c, state_imap.c) and the store (state.c); calls only
 * state_set.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "state_int.h"

int
st_writable(struct state *s, struct mp_err *err)
{
	if (s->broken)
		return st_fail(err, s->broken, "earlier failure on", s->journal_path);
	return 0;
}

int
st_record_fail(struct state *s, int r, struct mp_err *err)
{
	return st_fail(err, r, "cannot record in", s->journal_path);
}

int
st_reserve(struct state *s, size_t more, struct mp_err *err)
{
	int r = st_dbuf_reserve(&s->pending, more);

	return r < 0 ? st_record_fail(s, r, err) : 0;
}

int
st_check_name(struct state *s, const char *maildir_name, struct mp_err *err)
{
	/* "-" stands for "no name" in the journal. */
	if (maildir_name && (!*maildir_name || strcmp(maildir_name, "-") == 0))
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: invalid Maildir name '%s'",
				  s->account, maildir_name);
	return 0;
}

void
st_names_clear(struct state *s)
{
	st_kv_free(&s->names);
	st_kv_free(&s->name_flags);
	/* The owners' strings are the tables' keys. */
	st_kv_free(&s->owner_ix);
	free(s->owners);
	s->owners = NULL;
	s->nowners = s->ocap = 0;
}

/*
 * The owner's id and latest name point at the keys of owner_ix and names
 * (strings that stay put when the tables grow, and are freed only with
 * them), so each is held once. A failure leaves at worst an owner with no
 * latest name, which only keeps an older name from being forgotten (see
 * state_forget_name()).
 */
int
st_name_insert(struct state *s, const char *name, const char *id)
{
	struct kv_slot *sl;
	struct name_owner *o;
	size_t ix;
	bool added;
	int r;

	if (s->nowners == s->ocap) {
		size_t cap = s->ocap ? s->ocap * 2 : 64;
		struct name_owner *v = realloc(s->owners, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->owners = v;
		s->ocap = cap;
	}
	r = st_kv_insert(&s->owner_ix, id, (int64_t)s->nowners, &sl, &added);
	if (r < 0)
		return r;
	ix = (size_t)sl->when;
	if (added) {
		s->owners[ix].id = sl->key;
		s->nowners++;
	}
	o = &s->owners[ix];
	o->latest = NULL;
	r = st_kv_insert(&s->names, name, (int64_t)ix + 1, &sl, &added);
	if (r < 0)
		return r;
	o->latest = sl->key;
	return 0;
}

const char *
st_name_owner(const struct state *s, const char *name)
{
	const struct kv_slot *sl = st_kv_get(&s->names, name);
	const struct name_owner *o;

	/* 0: recorded by a journal line whose folder a later D line removed. */
	if (!sl || sl->when <= 0)
		return NULL;
	o = &s->owners[sl->when - 1];
	if (!o->latest || strcmp(o->latest, name) != 0)
		return NULL;
	return o->id;
}

int
st_name_load_flags(struct state *s, char *line)
{
	struct kv_slot *sl;
	char *f[3];
	int64_t set;
	bool added;

	if (st_split_fields(line, f, 3) < 0 || !st_is_tag(f[0]) || st_unescape(f[1]) < 0)
		return -EBADMSG;
	set = st_flags_parse(f[2]);
	if (set <= 0)
		return -EBADMSG;
	if (st_kv_insert(&s->name_flags, f[1], set, &sl, &added) < 0)
		return -ENOMEM;
	sl->when = set;
	return 0;
}

bool
state_name_recorded(const struct state *s, const char *maildir_name)
{
	return st_kv_get(&s->names, maildir_name) != NULL;
}

int
state_name_set_flags(struct state *s, const char *maildir_name, const char *flags,
		     struct mp_err *err)
{
	char letters[STATE_FLAGS_MAX + 1];
	struct kv_slot *sl;
	int64_t set;
	bool added;
	int r = st_writable(s, err);

	if (r < 0 || !flags || !*flags)
		return r;
	set = st_flags_parse(flags);
	if (!maildir_name || !*maildir_name || strcmp(maildir_name, "-") == 0 || set < 0)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: invalid Maildir name "
				  "or flags", s->account);
	r = st_dbuf_reserve(&s->pending, 8 + st_esc_max(maildir_name) + strlen(flags));
	if (r == 0)
		r = st_kv_insert(&s->name_flags, maildir_name, set, &sl, &added);
	if (r < 0)
		return st_record_fail(s, r, err);
	sl->when = set;
	st_dbuf_put_tagged(&s->pending, 'G', maildir_name);
	st_dbuf_put(&s->pending, " ", 1);
	st_dbuf_put(&s->pending, letters, st_flags_format(set, letters));
	st_dbuf_put(&s->pending, "\n", 1);
	return 0;
}

size_t
state_name_flags(const struct state *s, const char *maildir_name,
		 char ret_flags[STATE_FLAGS_MAX + 1])
{
	const struct kv_slot *sl = st_kv_get(&s->name_flags, maildir_name);

	ret_flags[0] = '\0';
	return sl ? st_flags_format(sl->when, ret_flags) : 0;
}

int
state_name_foreach(const struct state *s, int (*cb)(void *ud, const char *name), void *ud)
{
	for (size_t i = 0; i < s->names.cap; i++) {
		int r;

		if (!s->names.slots[i].key)
			continue;
		r = cb(ud, s->names.slots[i].key);
		if (r != 0)
			return r;
	}
	return 0;
}
