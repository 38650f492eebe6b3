/*
 * IMAP records: per folder its UIDVALIDITY, the UIDNEXT of the last
 * complete poll, the fetched UIDs, the fingerprints of the fetched
 * messages and the skipped UIDs. Their lines are described in state.c.
 * Calls state_name.c and state_set.c only (see state_int.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/util.h"
#include "state_int.h"

struct folder {
	char *name;
	uint32_t uidvalidity;
	uint32_t uidnext;
	struct uid_set uids;
	struct fp_set fps;
	/*
	 * UIDs passed over for a reason (too large, \Deleted, left out of a
	 * FETCH) and looked at again on every poll.
	 */
	struct uid_set skipped;
};

/* ---- folders in memory ---- */

static int
name_insert_uid(struct state *s, const char *name, const char *folder, uint32_t uidvalidity,
		uint32_t uid, uint64_t fp)
{
	char *id;
	int r;

	if (asprintf(&id, "u%" PRIu32 " %" PRIu32 " %" PRIu64 " %s", uidvalidity, uid, fp,
		     folder) < 0)
		return -ENOMEM;
	r = st_name_insert(s, name, id);
	free(id);
	return r;
}

static void
folder_free(struct folder *f)
{
	if (!f)
		return;
	st_uids_clear(&f->uids);
	st_uids_clear(&f->skipped);
	st_fp_free(&f->fps);
	free(f->name);
	free(f);
}

void
st_imap_free(struct state *s)
{
	for (size_t i = 0; i < s->nfolders; i++)
		folder_free(s->folders[i]);
	free(s->folders);
	s->folders = NULL;
	s->nfolders = s->fcap = 0;
}

/* Binary search by name; *at (when not NULL) is where name is or would go. */
static struct folder *
folder_find(const struct state *s, const char *name, size_t *at)
{
	size_t lo = 0, hi = s->nfolders;
	struct folder *found = NULL;

	while (name && lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->folders[mid]->name, name);

		if (c == 0) {
			found = s->folders[mid];
			lo = mid;
			break;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (at)
		*at = lo;
	return found;
}

static int
folder_insert(struct state *s, const char *name, size_t at, struct folder **ret)
{
	struct folder *f;

	if (s->nfolders == s->fcap) {
		size_t cap = s->fcap ? s->fcap * 2 : 8;
		struct folder **p = reallocarray(s->folders, cap, sizeof(*p));

		if (!p)
			return -ENOMEM;
		s->folders = p;
		s->fcap = cap;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->name = strdup(name);
	if (!f->name) {
		free(f);
		return -ENOMEM;
	}
	memmove(&s->folders[at + 1], &s->folders[at], (s->nfolders - at) * sizeof(*s->folders));
	s->folders[at] = f;
	s->nfolders++;
	*ret = f;
	return 0;
}

/* Starts or restarts name at uidvalidity: no UIDs, fingerprints kept. */
static int
mem_folder_reset(struct state *s, const char *name, uint32_t uidvalidity)
{
	size_t at;
	struct folder *f = folder_find(s, name, &at);

	if (!f) {
		int r = folder_insert(s, name, at, &f);

		if (r < 0)
			return r;
	}
	st_uids_clear(&f->uids);
	st_uids_clear(&f->skipped);
	f->uidvalidity = uidvalidity;
	f->uidnext = 0;
	return 0;
}

static bool
mem_folder_remove(struct state *s, const char *name)
{
	size_t at;
	struct folder *f = folder_find(s, name, &at);

	if (!f)
		return false;
	folder_free(f);
	memmove(&s->folders[at], &s->folders[at + 1],
		(s->nfolders - at - 1) * sizeof(*s->folders));
	s->nfolders--;
	return true;
}

/*
 * Records uid, fp (0: none) and name (may be NULL). Every allocation
 * comes first, so a failure changes nothing. *ret_changed tells whether
 * anything is new and so needs a journal line.
 */
static int
mem_uid_add(struct state *s, struct folder *f, uint32_t uid, uint64_t fp, const char *name,
	    bool *ret_changed)
{
	bool uid_added, fp_added = false;
	int r = st_uids_reserve(&f->uids);

	if (r == 0 && fp)
		r = st_fp_reserve(&f->fps);
	if (r == 0 && name)
		r = name_insert_uid(s, name, f->name, f->uidvalidity, uid, fp);
	if (r < 0)
		return r;
	uid_added = st_uids_add(&f->uids, uid);
	if (fp)
		fp_added = st_fp_add(&f->fps, fp);
	*ret_changed = uid_added || fp_added || name != NULL;
	return 0;
}

/* Adds uid to set, making room first. 0 or -ENOMEM. */
static int
uids_put(struct uid_set *set, uint32_t uid)
{
	int r = st_uids_reserve(set);

	if (r == 0)
		st_uids_add(set, uid);
	return r;
}

/* ---- loading ---- */

bool
st_imap_is_record(char c, bool journal)
{
	return c && strchr(journal ? "VNUEXDST" : "FRPS", c);
}

static int
parse_fps(struct folder *f, const char *s)
{
	for (;;) {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		uint64_t fp;

		if (st_parse_fp(s, len, &fp) < 0)
			return -EBADMSG;
		if (st_fp_reserve(&f->fps) < 0)
			return -ENOMEM;
		st_fp_add(&f->fps, fp);
		if (!end)
			return 0;
		s = end + 1;
	}
}

int
st_imap_load_snapshot(struct state *s, char *line)
{
	struct folder *fo;
	uint32_t uv, un;
	char *f[5];
	size_t at;
	int r;

	if (line[0] == 'F') {
		if (st_split_fields(line, f, 5) < 0 || !st_is_tag(f[0]) || st_unescape(f[1]) < 0 ||
		    st_parse_u32(f[2], &uv) < 0 || uv == 0 || st_parse_u32(f[3], &un) < 0)
			return -EBADMSG;
		if (folder_find(s, f[1], &at))
			return -EBADMSG;
		r = folder_insert(s, f[1], at, &fo);
		if (r < 0)
			return r;
		fo->uidvalidity = uv;
		fo->uidnext = un;
		return strcmp(f[4], "-") == 0 ? 0 : st_uids_parse(&fo->uids, f[4]);
	}
	if (st_split_fields(line, f, 3) < 0 || !st_is_tag(f[0]) || st_unescape(f[1]) < 0)
		return -EBADMSG;
	fo = folder_find(s, f[1], NULL);
	if (!fo)
		return -EBADMSG;
	switch (line[0]) {
	case 'S':
		return st_uids_parse(&fo->skipped, f[2]);
	case 'R':
		return st_uids_parse(&fo->uids, f[2]);
	default:
		return parse_fps(fo, f[2]);
	}
}

/* Journal "U <folder> <uid> <fp or -> <name or ->". */
static int
replay_uid_add(struct state *s, char **f, uint32_t uid)
{
	const char *name = f[4];
	struct folder *fo;
	struct kv_slot *sl;
	uint64_t fp = 0;
	bool changed;

	if (uid == 0 || (strcmp(f[3], "-") != 0 && st_parse_fp(f[3], strlen(f[3]), &fp) < 0))
		return -EBADMSG;
	if (strcmp(name, "-") == 0)
		name = NULL;
	else if (st_unescape(f[4]) < 0)
		return -EBADMSG;
	fo = folder_find(s, f[1], NULL);
	if (fo)
		return mem_uid_add(s, fo, uid, fp, name, &changed);
	/*
	 * Only replay over a newer snapshot meets a folder that is missing
	 * here: a later D line removed it. The name still counts for recovery.
	 */
	return name ? st_kv_insert(&s->names, name, 0, &sl, &changed) : 0;
}

/* The lines of one UID: E, S and T. */
static int
replay_uid_line(struct folder *fo, char tag, uint32_t n)
{
	int r;

	if (tag == 'S' && n == 0)
		return -EBADMSG;
	if (!fo)
		return 0;
	if (tag == 'S')
		return uids_put(&fo->skipped, n);
	r = st_uids_del(tag == 'E' ? &fo->uids : &fo->skipped, n);
	return r < 0 ? r : 0;
}

/*
 * N, U, E, X, S and T lines for a folder missing here are skipped for the
 * reason given in replay_uid_add().
 */
int
st_imap_load_journal(struct state *s, char *line)
{
	int want = line[0] == 'D' ? 2 : line[0] == 'U' ? 5 : 3;
	struct folder *fo;
	uint64_t fp = 0;
	uint32_t n = 0;
	char *f[5];

	if (st_split_fields(line, f, want) < 0 || !st_is_tag(f[0]) || st_unescape(f[1]) < 0)
		return -EBADMSG;
	fo = folder_find(s, f[1], NULL);
	if (line[0] == 'X') {
		if (st_parse_fp(f[2], strlen(f[2]), &fp) < 0)
			return -EBADMSG;
		if (fo)
			st_fp_del(&fo->fps, fp);
		return 0;
	}
	if (want > 2 && st_parse_u32(f[2], &n) < 0)
		return -EBADMSG;
	switch (line[0]) {
	case 'V':
		return n == 0 ? -EBADMSG : mem_folder_reset(s, f[1], n);
	case 'N':
		if (fo)
			fo->uidnext = n;
		return 0;
	case 'U':
		return replay_uid_add(s, f, n);
	case 'D':
		mem_folder_remove(s, f[1]);
		return 0;
	default:
		return replay_uid_line(fo, line[0], n);
	}
}

/* ---- changes ---- */

/* Room for a folder record: its escaped name plus three numbers and a name. */
static size_t
folder_line_max(const char *folder, const char *name)
{
	return 64 + st_esc_max(folder) + (name ? st_esc_max(name) : 0);
}

static int
folder_check(struct state *s, const char *folder, struct mp_err *err)
{
	int r = st_writable(s, err);

	if (r == 0 && (!folder || !*folder))
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: empty folder name",
				  s->account);
	return r;
}

/* The folder a change applies to; -ENOENT when it was never started. */
static int
folder_need(struct state *s, const char *folder, struct folder **ret, struct mp_err *err)
{
	struct folder *f;
	char safe[128];
	int r = folder_check(s, folder, err);

	if (r < 0)
		return r;
	f = folder_find(s, folder, NULL);
	if (!f) {
		/* Folder names come from the server: keep control bytes out of messages. */
		util_sanitize(safe, sizeof(safe), folder, strlen(folder));
		return mp_err_set(err, -ENOENT, MP_EX_IOERR, "state %s: folder '%s' not started",
				  s->account, safe);
	}
	*ret = f;
	return 0;
}

/* Reserves room for a folder record without a name. */
static int
folder_reserve(struct state *s, const char *folder)
{
	return st_dbuf_reserve(&s->pending, folder_line_max(folder, NULL));
}

/* Journals "<tag> <folder> <n>" ('V', 'N', 'E', 'S', 'T'). Room must be reserved. */
static void
put_num_line(struct state *s, char tag, const char *folder, uint32_t n)
{
	st_dbuf_put_tagged(&s->pending, tag, folder);
	st_dbuf_put(&s->pending, " ", 1);
	st_dbuf_put_u64(&s->pending, n);
	st_dbuf_put(&s->pending, "\n", 1);
}

static int
uid_check(struct state *s, uint32_t uid, struct mp_err *err)
{
	if (uid == 0)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: UID 0", s->account);
	return 0;
}

int
state_folder_get(const struct state *s, const char *folder, uint32_t *ret_uidvalidity,
		 uint32_t *ret_uidnext)
{
	const struct folder *f = folder_find(s, folder, NULL);

	if (!f)
		return -ENOENT;
	if (ret_uidvalidity)
		*ret_uidvalidity = f->uidvalidity;
	if (ret_uidnext)
		*ret_uidnext = f->uidnext;
	return 0;
}

int
state_folder_reset(struct state *s, const char *folder, uint32_t uidvalidity,
		   struct mp_err *err)
{
	int r = folder_check(s, folder, err);

	if (r < 0)
		return r;
	/* RFC 9051 2.3.1.1: UIDVALIDITY is a non-zero number. */
	if (uidvalidity == 0)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: UIDVALIDITY 0",
				  s->account);
	r = folder_reserve(s, folder);
	if (r == 0)
		r = mem_folder_reset(s, folder, uidvalidity);
	if (r < 0)
		return st_record_fail(s, r, err);
	put_num_line(s, 'V', folder, uidvalidity);
	return 0;
}

int
state_folder_set_uidnext(struct state *s, const char *folder, uint32_t uidnext,
			 struct mp_err *err)
{
	struct folder *f;
	int r = folder_need(s, folder, &f, err);

	if (r < 0)
		return r;
	/* A poll that found nothing new writes nothing. */
	if (f->uidnext == uidnext)
		return 0;
	r = st_reserve(s, folder_line_max(folder, NULL), err);
	if (r < 0)
		return r;
	f->uidnext = uidnext;
	put_num_line(s, 'N', folder, uidnext);
	return 0;
}

/* The fetched or the skipped UIDs of folder; NULL when it was never started. */
static const struct uid_set *
folder_uids(const struct state *s, const char *folder, bool skipped)
{
	const struct folder *f = folder_find(s, folder, NULL);

	return !f ? NULL : skipped ? &f->skipped : &f->uids;
}

static bool
uids_has(const struct state *s, const char *folder, bool skipped, uint32_t uid)
{
	const struct uid_set *set = folder_uids(s, folder, skipped);

	return set && st_uids_has(set, uid);
}

static int
uids_foreach(const struct state *s, const char *folder, bool skipped,
	     int (*cb)(void *ud, uint32_t uid), void *ud)
{
	const struct uid_set *set = folder_uids(s, folder, skipped);

	return set ? st_uids_foreach(set, cb, ud) : 0;
}

static size_t
uids_count(const struct state *s, const char *folder, bool skipped)
{
	const struct uid_set *set = folder_uids(s, folder, skipped);

	return set ? (size_t)set->count : 0;
}

bool
state_uid_has(const struct state *s, const char *folder, uint32_t uid)
{
	return uids_has(s, folder, false, uid);
}

int
state_uid_add(struct state *s, const char *folder, uint32_t uid, uint64_t fp,
	      const char *maildir_name, struct mp_err *err)
{
	struct folder *f;
	bool changed;
	int r = folder_need(s, folder, &f, err);

	if (r == 0)
		r = uid_check(s, uid, err);
	if (r == 0)
		r = st_check_name(s, maildir_name, err);
	if (r < 0)
		return r;
	r = st_dbuf_reserve(&s->pending, folder_line_max(folder, maildir_name));
	if (r == 0)
		r = mem_uid_add(s, f, uid, fp, maildir_name, &changed);
	if (r < 0)
		return st_record_fail(s, r, err);
	if (!changed)
		return 0;
	st_dbuf_put_tagged(&s->pending, 'U', folder);
	st_dbuf_put(&s->pending, " ", 1);
	st_dbuf_put_u64(&s->pending, uid);
	st_dbuf_put(&s->pending, " ", 1);
	if (fp)
		st_dbuf_put_fp(&s->pending, fp);
	else
		st_dbuf_put(&s->pending, "-", 1);
	st_dbuf_put(&s->pending, " ", 1);
	st_dbuf_put_name(&s->pending, maildir_name);
	st_dbuf_put(&s->pending, "\n", 1);
	return 0;
}

int
state_uid_remove(struct state *s, const char *folder, uint32_t uid, struct mp_err *err)
{
	struct folder *f;
	int r = folder_need(s, folder, &f, err);

	if (r < 0)
		return r;
	r = folder_reserve(s, folder);
	if (r == 0)
		r = st_uids_del(&f->uids, uid);
	if (r < 0)
		return st_record_fail(s, r, err);
	if (r > 0)
		put_num_line(s, 'E', folder, uid);
	return 0;
}

bool
state_fp_has(const struct state *s, const char *folder, uint64_t fp)
{
	const struct folder *f = folder_find(s, folder, NULL);

	return f && st_fp_has(&f->fps, fp);
}

/* Journal "X <folder> <fp>": the fingerprint no longer counts as fetched. */
static int
fp_forget(struct state *s, const char *folder, uint64_t fp, struct mp_err *err)
{
	struct folder *f;
	int r = folder_need(s, folder, &f, err);

	if (r < 0)
		return r;
	r = st_reserve(s, folder_line_max(folder, NULL), err);
	if (r < 0)
		return r;
	if (!st_fp_del(&f->fps, fp))
		return 0;
	st_dbuf_put_tagged(&s->pending, 'X', folder);
	st_dbuf_put(&s->pending, " ", 1);
	st_dbuf_put_fp(&s->pending, fp);
	st_dbuf_put(&s->pending, "\n", 1);
	return 0;
}

/* id: "<uidvalidity> <uid> <fp> <folder>", as name_insert_uid() wrote it after its 'u'. */
int
st_imap_forget(struct state *s, const char *id, struct mp_err *err)
{
	const char *folder, *sp1, *sp2, *sp3;
	uint32_t uv = 0, uid;
	uint64_t a, b, fp;
	int r;

	sp1 = strchr(id, ' ');
	sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	sp3 = sp2 ? strchr(sp2 + 1, ' ') : NULL;
	if (!sp3 || util_parse_u64(id, (size_t)(sp1 - id), &a) < 0 ||
	    util_parse_u64(sp1 + 1, (size_t)(sp2 - sp1 - 1), &b) < 0 ||
	    util_parse_u64(sp2 + 1, (size_t)(sp3 - sp2 - 1), &fp) < 0)
		return 0;
	folder = sp3 + 1;
	uid = (uint32_t)b;
	/* Under another UIDVALIDITY the UID names another message. */
	if (state_folder_get(s, folder, &uv, NULL) < 0 || uv != (uint32_t)a ||
	    !state_uid_has(s, folder, uid))
		return 0;
	r = state_uid_remove(s, folder, uid, err);
	/* UIDNEXT 0: the next poll lists the folder from UID 1 and finds it. */
	if (r == 0)
		r = state_folder_set_uidnext(s, folder, 0, err);
	/* Nor may a UIDVALIDITY change take it for fetched by its fingerprint. */
	if (r == 0 && fp)
		r = fp_forget(s, folder, fp, err);
	return r < 0 ? r : 1;
}

int
state_uid_foreach(const struct state *s, const char *folder,
		  int (*cb)(void *ud, uint32_t uid), void *ud)
{
	return uids_foreach(s, folder, false, cb, ud);
}

size_t
state_uid_count(const struct state *s, const char *folder)
{
	return uids_count(s, folder, false);
}

int
state_skip_add(struct state *s, const char *folder, uint32_t uid, struct mp_err *err)
{
	struct folder *f;
	int r = folder_need(s, folder, &f, err);

	if (r == 0)
		r = uid_check(s, uid, err);
	if (r < 0 || st_uids_has(&f->skipped, uid))
		return r;
	r = folder_reserve(s, folder);
	if (r == 0)
		r = uids_put(&f->skipped, uid);
	if (r < 0)
		return st_record_fail(s, r, err);
	put_num_line(s, 'S', folder, uid);
	return 0;
}

int
state_skip_remove(struct state *s, const char *folder, uint32_t uid, struct mp_err *err)
{
	struct folder *f;
	int r = folder_need(s, folder, &f, err);

	if (r < 0 || !st_uids_has(&f->skipped, uid))
		return r;
	r = folder_reserve(s, folder);
	if (r == 0)
		r = st_uids_del(&f->skipped, uid);
	if (r < 0)
		return st_record_fail(s, r, err);
	put_num_line(s, 'T', folder, uid);
	return 0;
}

bool
state_skip_has(const struct state *s, const char *folder, uint32_t uid)
{
	return uids_has(s, folder, true, uid);
}

int
state_skip_foreach(const struct state *s, const char *folder,
		   int (*cb)(void *ud, uint32_t uid), void *ud)
{
	return uids_foreach(s, folder, true, cb, ud);
}

size_t
state_skip_count(const struct state *s, const char *folder)
{
	return uids_count(s, folder, true);
}

int
state_folder_remove(struct state *s, const char *folder, struct mp_err *err)
{
	int r = folder_check(s, folder, err);

	if (r < 0)
		return r;
	r = st_reserve(s, folder_line_max(folder, NULL), err);
	if (r < 0)
		return r;
	if (!mem_folder_remove(s, folder))
		return 0;
	st_dbuf_put_tagged(&s->pending, 'D', folder);
	st_dbuf_put(&s->pending, "\n", 1);
	return 0;
}

int
state_folder_foreach(const struct state *s, int (*cb)(void *ud, const char *folder), void *ud)
{
	for (size_t i = 0; i < s->nfolders; i++) {
		int r = cb(ud, s->folders[i]->name);

		if (r != 0)
			return r;
	}
	return 0;
}

static uint64_t
fnv1a64(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

uint64_t
state_fingerprint(const char *message_id, size_t idlen, uint64_t size)
{
	char tail[24];
	int n = snprintf(tail, sizeof(tail), "\n%" PRIu64, size);
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	h = fnv1a64(h, message_id, idlen);
	return fnv1a64(h, tail, (size_t)n);
}

/* ---- snapshot ---- */

/* "F" then, past SNAP_LINE_ITEMS bytes of ranges, "R" lines. */
static int
snap_ranges(struct snap *w, const struct folder *f, size_t room)
{
	int r = st_snap_reserve(w, room);

	if (r < 0)
		return r;
	st_dbuf_put_tagged(&w->b, 'F', f->name);
	st_dbuf_put(&w->b, " ", 1);
	st_dbuf_put_u64(&w->b, f->uidvalidity);
	st_dbuf_put(&w->b, " ", 1);
	st_dbuf_put_u64(&w->b, f->uidnext);
	st_dbuf_put(&w->b, " ", 1);
	if (f->uids.nranges == 0)
		st_dbuf_put(&w->b, "-", 1);
	return st_snap_uids(w, &f->uids, 'R', f->name, room);
}

/* "P" lines of at most about SNAP_LINE_ITEMS bytes of fingerprints each. */
static int
snap_fps(struct snap *w, const struct folder *f, size_t room)
{
	size_t used = 0;
	bool open = false;

	for (size_t i = 0; i < f->fps.cap; i++) {
		int r;

		if (!f->fps.slots[i])
			continue;
		r = st_snap_reserve(w, room);
		if (r < 0)
			return r;
		if (open && used >= SNAP_LINE_ITEMS) {
			st_dbuf_put(&w->b, "\n", 1);
			open = false;
		}
		if (!open) {
			st_dbuf_put_tagged(&w->b, 'P', f->name);
			st_dbuf_put(&w->b, " ", 1);
			open = true;
			used = 0;
		} else {
			st_dbuf_put(&w->b, ",", 1);
		}
		st_dbuf_put_fp(&w->b, f->fps.slots[i]);
		used += 17;
	}
	if (open)
		st_dbuf_put(&w->b, "\n", 1);
	return 0;
}

/* "S" lines of at most about SNAP_LINE_ITEMS bytes of ranges each. */
static int
snap_skipped(struct snap *w, const struct folder *f, size_t room)
{
	int r = st_snap_reserve(w, room);

	if (r < 0)
		return r;
	st_dbuf_put_tagged(&w->b, 'S', f->name);
	st_dbuf_put(&w->b, " ", 1);
	return st_snap_uids(w, &f->skipped, 'S', f->name, room);
}

int
st_imap_snapshot(struct snap *w, const struct state *s)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < s->nfolders; i++) {
		const struct folder *f = s->folders[i];
		size_t room = folder_line_max(f->name, NULL);

		r = snap_ranges(w, f, room);
		if (r == 0)
			r = snap_fps(w, f, room);
		if (r == 0 && f->skipped.nranges)
			r = snap_skipped(w, f, room);
	}
	return r;
}
