/*
 * POP3 records: the keys (UIDLs) fetched, with the time of the first fetch
 * and, for keys recorded since sizes were kept, the size the server
 * LISTed. Their lines are described in state.c. Calls state_name.c and
 * state_set.c only (see state_int.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/util.h"
#include "state_int.h"

static int
name_insert_key(struct state *s, const char *name, const char *key)
{
	size_t len = strlen(key);
	char *id = malloc(len + 2);
	int r;

	if (!id)
		return -ENOMEM;
	id[0] = 'k';
	memcpy(id + 1, key, len + 1);
	r = st_name_insert(s, name, id);
	free(id);
	return r;
}

/*
 * "<when> <key>" and "L <when> <key> <size>" (snapshot), "+ <when> <key>
 * <name or ->" and "L <when> <key> <name or -> <size>" (journal): a key
 * added, with its size after an "L".
 */
static int
load_key(struct state *s, char *line, bool journal)
{
	bool sized = line[0] == 'L', tagged = journal || sized;
	int nf = 2 + tagged + journal + sized;
	const char *name = NULL;
	struct kv_slot *sl;
	uint64_t size = 0;
	char *f[5], **k;
	int64_t when;
	bool added;
	int r;

	if (st_split_fields(line, f, nf) < 0 || (tagged && strcmp(f[0], sized ? "L" : "+") != 0))
		return -EBADMSG;
	k = f + tagged;
	if (st_parse_i64(k[0], &when) < 0 || st_unescape(k[1]) < 0 ||
	    (sized && (util_parse_u64(f[nf - 1], strlen(f[nf - 1]), &size) < 0 ||
		       size == UINT64_MAX)))
		return -EBADMSG;
	if (journal && strcmp(k[2], "-") != 0) {
		if (st_unescape(k[2]) < 0)
			return -EBADMSG;
		name = k[2];
	}
	r = st_kv_insert(&s->keys, k[1], when, &sl, &added);
	if (r < 0)
		return r;
	if (sized)
		sl->size1 = size + 1;
	return name ? name_insert_key(s, name, k[1]) : 0;
}

int
st_pop3_load_snapshot(struct state *s, char *line)
{
	return load_key(s, line, false);
}

int
st_pop3_load_journal(struct state *s, char *line)
{
	char *f[2];

	if (line[0] != '-')
		return load_key(s, line, true);
	if (st_split_fields(line, f, 2) < 0 || strcmp(f[0], "-") != 0 || st_unescape(f[1]) < 0)
		return -EBADMSG;
	st_kv_remove(&s->keys, f[1]);
	return 0;
}

/*
 * A key's line: in the journal "+" or (with size1, the size + 1) "L" and
 * the Maildir name; in the snapshot "L" only with a size, and no name.
 */
static void
put_key(struct dbuf *b, bool journal, const struct kv_slot *sl, uint64_t size1, const char *name)
{
	if (journal || size1)
		st_dbuf_put(b, size1 ? "L " : "+ ", 2);
	st_dbuf_put_i64(b, sl->when);
	st_dbuf_put(b, " ", 1);
	st_dbuf_put_esc(b, sl->key);
	if (journal) {
		st_dbuf_put(b, " ", 1);
		st_dbuf_put_name(b, name);
	}
	if (size1) {
		st_dbuf_put(b, " ", 1);
		st_dbuf_put_u64(b, size1 - 1);
	}
	st_dbuf_put(b, "\n", 1);
}

int
st_pop3_snapshot(struct snap *w, const struct state *s)
{
	for (size_t i = 0; i < s->keys.cap; i++) {
		const struct kv_slot *sl = &s->keys.slots[i];
		int r;

		if (!sl->key)
			continue;
		r = st_snap_reserve(w, 48 + st_esc_max(sl->key));
		if (r < 0)
			return r;
		put_key(&w->b, false, sl, sl->size1, NULL);
	}
	return 0;
}

bool
state_has(const struct state *s, const char *key, int64_t *ret_when)
{
	const struct kv_slot *sl = st_kv_get(&s->keys, key);

	if (!sl)
		return false;
	if (ret_when)
		*ret_when = sl->when;
	return true;
}

size_t
state_count(const struct state *s)
{
	return s->keys.count;
}

static int
key_check(struct state *s, const char *key, struct mp_err *err)
{
	int r = st_writable(s, err);

	if (r == 0 && (!key || !*key))
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: empty key", s->account);
	return r;
}

/* state_add() and, with size1 (size + 1) not 0, state_add_sized(). */
static int
add_record(struct state *s, const char *key, int64_t when, uint64_t size1,
	   const char *maildir_name, struct mp_err *err)
{
	struct kv_slot *sl = NULL;
	bool added = false, resized;
	int r = key_check(s, key, err);

	if (r == 0)
		r = st_check_name(s, maildir_name, err);
	if (r < 0)
		return r;
	/* Reserve first so that, once the set changed, the journal line cannot fail. */
	r = st_dbuf_reserve(&s->pending,
			    56 + st_esc_max(key) + (maildir_name ? st_esc_max(maildir_name) : 1));
	if (r == 0)
		r = st_kv_insert(&s->keys, key, when, &sl, &added);
	if (r == 0 && maildir_name)
		r = name_insert_key(s, maildir_name, key);
	if (r < 0) {
		if (added)
			st_kv_remove(&s->keys, key);
		return st_record_fail(s, r, err);
	}
	resized = size1 && sl->size1 != size1;
	if (size1)
		sl->size1 = size1;
	if (added || maildir_name || resized)
		put_key(&s->pending, true, sl, size1, maildir_name);
	return 0;
}

int
state_add(struct state *s, const char *key, int64_t when, const char *maildir_name,
	  struct mp_err *err)
{
	return add_record(s, key, when, 0, maildir_name, err);
}

int
state_add_sized(struct state *s, const char *key, int64_t when, uint64_t size,
		const char *maildir_name, struct mp_err *err)
{
	if (size == UINT64_MAX)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: invalid size", s->account);
	return add_record(s, key, when, size + 1, maildir_name, err);
}

bool
state_get_size(const struct state *s, const char *key, uint64_t *ret_size)
{
	const struct kv_slot *sl = st_kv_get(&s->keys, key);

	if (!sl || sl->size1 == 0)
		return false;
	*ret_size = sl->size1 - 1;
	return true;
}

int
state_remove(struct state *s, const char *key, struct mp_err *err)
{
	int r = key_check(s, key, err);

	if (r < 0)
		return r;
	r = st_reserve(s, 4 + st_esc_max(key), err);
	if (r < 0)
		return r;
	if (!st_kv_remove(&s->keys, key))
		return 0;
	st_dbuf_put_tagged(&s->pending, '-', key);
	st_dbuf_put(&s->pending, "\n", 1);
	return 0;
}

int
st_pop3_forget(struct state *s, const char *key, struct mp_err *err)
{
	int r;

	if (!state_has(s, key, NULL))
		return 0;
	r = state_remove(s, key, err);
	return r < 0 ? r : 1;
}

int
state_foreach(const struct state *s, int (*cb)(void *ud, const char *key, int64_t when), void *ud)
{
	for (size_t i = 0; i < s->keys.cap; i++) {
		const struct kv_slot *sl = &s->keys.slots[i];
		int r;

		if (!sl->key)
			continue;
		r = cb(ud, sl->key, sl->when);
		if (r != 0)
			return r;
	}
	return 0;
}
