/*
 * Per-account state: a snapshot plus an append-only journal, both plain
 * text with one record per line, and an in-memory hash set of the keys.
 *
 *   NAME.state    "mailpull-state 1", then "<when> <key>" lines
 *   NAME.journal  "+ <when> <key> <maildir_name or ->" and "- <key>" lines
 *
 * Keys and names are escaped (%XX for control bytes, space, '%', DEL and
 * bytes >= 0x80) so a record never contains a space or newline of its
 * own and any key but one holding NUL round-trips. Replaying a journal
 * over a snapshot that already contains it yields the same set, which
 * makes a crash between the snapshot rename and the journal truncation
 * harmless.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailpull/state.h"
#include "mailpull/util.h"

#define STATE_HEADER "mailpull-state 1"
#define STATE_FLUSH_SIZE (64 * 1024)

/* Open addressing with linear probing; an empty slot has key == NULL. */
struct kv_slot {
	char *key;
	uint32_t hash;
	int64_t when;
};

struct kv_set {
	struct kv_slot *slots;
	size_t cap;                       /* 0 or a power of two */
	size_t count;
};

struct dbuf {
	char *p;
	size_t len, cap;
};

struct state {
	char *dir;
	char *account;
	char *state_path;
	char *new_path;
	char *journal_path;
	char *lock_path;
	int lock_fd;
	int journal_fd;
	off_t journal_len;                /* bytes known to be whole records */
	int broken;                       /* sticky error after a failed fsync */
	struct kv_set keys;               /* key -> first fetch time */
	struct kv_set names;              /* Maildir names since the last compaction */
	struct dbuf pending;              /* journal lines not yet written */
};

/* ---- hash set ---- */

static uint32_t
kv_hash(const char *key)
{
	return util_fnv1a(key, strlen(key));
}

static struct kv_slot *
kv_find(const struct kv_set *set, const char *key, uint32_t h)
{
	size_t mask = set->cap - 1;

	if (set->cap == 0)
		return NULL;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		struct kv_slot *sl = &set->slots[i];

		if (!sl->key)
			return NULL;
		if (sl->hash == h && strcmp(sl->key, key) == 0)
			return sl;
	}
}

static void
kv_place(struct kv_slot *slots, size_t cap, struct kv_slot sl)
{
	size_t i = sl.hash & (cap - 1);

	while (slots[i].key)
		i = (i + 1) & (cap - 1);
	slots[i] = sl;
}

static int
kv_grow(struct kv_set *set)
{
	size_t cap = set->cap ? set->cap * 2 : 64;
	struct kv_slot *slots;

	if (cap < set->cap || cap > SIZE_MAX / sizeof(*slots))
		return -ENOMEM;
	slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < set->cap; i++)
		if (set->slots[i].key)
			kv_place(slots, cap, set->slots[i]);
	free(set->slots);
	set->slots = slots;
	set->cap = cap;
	return 0;
}

/*
 * Inserts key unless present. *ret_slot is the key's slot either way;
 * *ret_added tells which. The set copies key.
 */
static int
kv_insert(struct kv_set *set, const char *key, int64_t when, struct kv_slot **ret_slot,
	  bool *ret_added)
{
	uint32_t h = kv_hash(key);
	struct kv_slot *sl = kv_find(set, key, h);
	struct kv_slot n;

	if (sl) {
		*ret_slot = sl;
		*ret_added = false;
		return 0;
	}
	/* Keep the load under 3/4 so probe runs stay short. */
	if ((set->count + 1) * 4 > set->cap * 3 && kv_grow(set) < 0)
		return -ENOMEM;
	n.key = strdup(key);
	if (!n.key)
		return -ENOMEM;
	n.hash = h;
	n.when = when;
	kv_place(set->slots, set->cap, n);
	set->count++;
	*ret_slot = kv_find(set, key, h);
	*ret_added = true;
	return 0;
}

/* Backward-shift deletion: no tombstones, so lookups never slow down. */
static bool
kv_remove(struct kv_set *set, const char *key)
{
	struct kv_slot *sl = kv_find(set, key, kv_hash(key));
	size_t mask = set->cap - 1, i, j;

	if (!sl)
		return false;
	free(sl->key);
	i = (size_t)(sl - set->slots);
	for (j = (i + 1) & mask; set->slots[j].key; j = (j + 1) & mask) {
		size_t k = set->slots[j].hash & mask;
		bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);

		if (stays)
			continue;
		set->slots[i] = set->slots[j];
		i = j;
	}
	set->slots[i].key = NULL;
	set->count--;
	return true;
}

static void
kv_free(struct kv_set *set)
{
	for (size_t i = 0; i < set->cap; i++)
		free(set->slots[i].key);
	free(set->slots);
	memset(set, 0, sizeof(*set));
}

/* ---- buffers and escaping ---- */

static int
dbuf_reserve(struct dbuf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 256;

	if (more > SIZE_MAX - b->len)
		return -ENOMEM;
	if (b->len + more <= b->cap)
		return 0;
	while (cap < b->len + more) {
		if (cap > SIZE_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	char *p = realloc(b->p, cap);

	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Callers reserve first; appends then cannot fail. */
static void
dbuf_put(struct dbuf *b, const char *s, size_t len)
{
	memcpy(b->p + b->len, s, len);
	b->len += len;
}

static void
dbuf_put_i64(struct dbuf *b, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)v);

	dbuf_put(b, tmp, (size_t)n);
}

static bool
esc_needed(unsigned char c)
{
	return c <= 0x20 || c == '%' || c >= 0x7f;
}

/* Worst case bytes dbuf_put_esc() appends for s. */
static size_t
esc_max(const char *s)
{
	return strlen(s) * 3;
}

static void
dbuf_put_esc(struct dbuf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (esc_needed(*p)) {
			b->p[b->len++] = '%';
			b->p[b->len++] = hex[*p >> 4];
			b->p[b->len++] = hex[*p & 15];
		} else {
			b->p[b->len++] = (char)*p;
		}
	}
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decodes s in place. -EBADMSG on a bad escape, an escaped NUL, or a raw
 * byte we would have escaped: such a byte can only come from damage.
 */
static int
unescape(char *s)
{
	char *o = s;

	for (const char *p = s; *p; p++) {
		if (*p != '%') {
			if (esc_needed((unsigned char)*p))
				return -EBADMSG;
			*o++ = *p;
			continue;
		}
		int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);

		if (lo < 0 || (hi == 0 && lo == 0))
			return -EBADMSG;
		*o++ = (char)(hi << 4 | lo);
		p += 2;
	}
	*o = '\0';
	return 0;
}

static int
parse_i64(const char *s, int64_t *ret)
{
	bool neg = *s == '-';
	uint64_t v;
	int r;

	if (neg)
		s++;
	r = util_parse_u64(s, strlen(s), &v);
	if (r < 0)
		return -EBADMSG;
	if (v > (uint64_t)INT64_MAX + (neg ? 1 : 0))
		return -EBADMSG;
	*ret = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

/* Splits line at single spaces into exactly n non-empty fields. */
static int
split_fields(char *line, char **f, int n)
{
	int i = 0;

	for (char *p = line;; p++) {
		if (*p != ' ' && *p != '\0')
			continue;
		if (i == n || p == line)
			return -EBADMSG;
		f[i++] = line;
		if (*p == '\0')
			break;
		*p = '\0';
		line = p + 1;
	}
	return i == n ? 0 : -EBADMSG;
}

/* ---- errors and paths ---- */

static int
st_fail(struct mp_err *err, int code, const char *what, const char *path)
{
	enum mp_exit ex = code == -ENOMEM ? MP_EX_TEMPFAIL : MP_EX_IOERR;

	return mp_err_set(err, code, ex, "%s %s: %s", what, path, strerror(-code));
}

/* File-system-safe account name: [A-Za-z0-9._-] kept, others %XX. */
static char *
escape_account(const char *account)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(account);
	char *out = malloc(n * 3 + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)account[i];
		bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9') || c == '_' || c == '-' || (c == '.' && i > 0);

		/* A leading '.' would hide the files and could spell ".." */
		if (keep) {
			*o++ = (char)c;
		} else {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	*o = '\0';
	return out;
}

static char *
make_path(const char *dir, const char *name, const char *suffix)
{
	size_t len = strlen(dir) + strlen(name) + strlen(suffix) + 2;
	char *p = malloc(len);

	if (p)
		snprintf(p, len, "%s/%s%s", dir, name, suffix);
	return p;
}

static int
state_paths(struct state *s, const char *dir, const char *account)
{
	char *esc = escape_account(account);

	s->dir = strdup(dir);
	s->account = strdup(account);
	if (esc) {
		s->state_path = make_path(dir, esc, ".state");
		s->new_path = make_path(dir, esc, ".state.new");
		s->journal_path = make_path(dir, esc, ".journal");
		s->lock_path = make_path(dir, esc, ".lock");
	}
	free(esc);
	if (!s->dir || !s->account || !s->state_path || !s->new_path || !s->journal_path ||
	    !s->lock_path)
		return -ENOMEM;
	return 0;
}

static int
state_lock(struct state *s, bool wait, struct mp_err *err)
{
	s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_NOCTTY | O_CLOEXEC, 0600);
	if (s->lock_fd < 0)
		return st_fail(err, -errno, "cannot open lock file", s->lock_path);
	/* flock(), not fcntl(): it conflicts within one process too. */
	while (flock(s->lock_fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno == EWOULDBLOCK)
			return mp_err_set(err, -EAGAIN, MP_EX_TEMPFAIL, "another mailpull process"
					  " is working on account '%s' (lock %s)",
					  s->account, s->lock_path);
		return st_fail(err, -errno, "cannot lock", s->lock_path);
	}
	return 0;
}

/* ---- loading ---- */

static int
apply_snapshot(struct state *s, char *line)
{
	struct kv_slot *sl;
	char *f[2];
	int64_t when;
	bool added;

	if (split_fields(line, f, 2) < 0 || parse_i64(f[0], &when) < 0 || unescape(f[1]) < 0)
		return -EBADMSG;
	return kv_insert(&s->keys, f[1], when, &sl, &added);
}

static int
apply_journal(struct state *s, char *line)
{
	struct kv_slot *sl;
	char *f[4];
	int64_t when;
	bool added;
	int r;

	if (line[0] == '-') {
		if (split_fields(line, f, 2) < 0 || strcmp(f[0], "-") != 0 || unescape(f[1]) < 0)
			return -EBADMSG;
		kv_remove(&s->keys, f[1]);
		return 0;
	}
	if (split_fields(line, f, 4) < 0 || strcmp(f[0], "+") != 0 || parse_i64(f[1], &when) < 0 ||
	    unescape(f[2]) < 0)
		return -EBADMSG;
	r = kv_insert(&s->keys, f[2], when, &sl, &added);
	if (r < 0 || strcmp(f[3], "-") == 0)
		return r;
	if (unescape(f[3]) < 0)
		return -EBADMSG;
	return kv_insert(&s->names, f[3], 0, &sl, &added);
}

static int
load_line(struct state *s, bool journal, unsigned long lineno, char *line)
{
	if (journal)
		return apply_journal(s, line);
	if (lineno == 1)
		return strcmp(line, STATE_HEADER) == 0 ? 0 : -EBADMSG;
	return apply_snapshot(s, line);
}

/*
 * Loads the snapshot or replays the journal. A journal's last line without
 * '\n' is a write a crash cut short: it is skipped and *ret_valid (the
 * length of the whole lines) lets the caller cut it off.
 */
static int
load_file(struct state *s, const char *path, bool journal, off_t *ret_valid, struct mp_err *err)
{
	unsigned long lineno = 0;
	char *line = NULL;
	size_t cap = 0;
	off_t valid = 0;
	ssize_t n;
	int r = 0;
	FILE *f = fopen(path, "re");

	if (!f) {
		if (errno != ENOENT)
			return st_fail(err, -errno, "cannot open", path);
		*ret_valid = 0;
		return 0;
	}
	while (r == 0 && (n = getline(&line, &cap, f)) > 0) {
		lineno++;
		/* Only the journal is appended to; the snapshot is renamed whole. */
		if (line[n - 1] != '\n') {
			if (!journal)
				r = -EBADMSG;
			break;
		}
		line[n - 1] = '\0';
		/* A NUL inside a line is damage, never something we wrote. */
		r = strlen(line) == (size_t)n - 1 ? load_line(s, journal, lineno, line) : -EBADMSG;
		valid += n;
	}
	if (r == 0 && ferror(f))
		r = st_fail(err, -EIO, "cannot read", path);
	if (r == 0 && !journal && lineno == 0) {
		r = -EBADMSG;
		lineno = 1;
	}
	if (r == -EBADMSG)
		mp_err_set(err, r, MP_EX_IOERR, "%s:%lu: malformed state record", path, lineno);
	else if (r == -ENOMEM)
		st_fail(err, r, "cannot load", path);
	free(line);
	fclose(f);
	if (r == 0)
		*ret_valid = valid;
	return r;
}

static int
open_journal(struct state *s, off_t valid, struct mp_err *err)
{
	struct stat st;

	s->journal_fd = open(s->journal_path, O_WRONLY | O_CREAT | O_APPEND | O_NOCTTY | O_CLOEXEC,
			     0600);
	if (s->journal_fd < 0)
		return st_fail(err, -errno, "cannot open", s->journal_path);
	if (fstat(s->journal_fd, &st) < 0)
		return st_fail(err, -errno, "cannot stat", s->journal_path);
	/* Cut a torn tail now, or the next append would glue onto it. */
	if (st.st_size > valid) {
		if (ftruncate(s->journal_fd, valid) < 0)
			return st_fail(err, -errno, "cannot truncate", s->journal_path);
		if (fdatasync(s->journal_fd) < 0)
			return st_fail(err, -errno, "cannot sync", s->journal_path);
	}
	s->journal_len = valid;
	return 0;
}

int
state_open(const char *dir, const char *account, bool wait, struct state **ret,
	   struct mp_err *err)
{
	struct state *s;
	off_t valid;
	int r;

	if (!dir || !*dir || !account || !*account)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "state: empty directory or account name");
	s = calloc(1, sizeof(*s));
	if (!s)
		return st_fail(err, -ENOMEM, "cannot open state in", dir);
	s->lock_fd = -1;
	s->journal_fd = -1;
	r = state_paths(s, dir, account);
	if (r < 0) {
		st_fail(err, r, "cannot open state in", dir);
		goto fail;
	}
	r = util_mkdir_p(dir, 0700);
	if (r < 0) {
		st_fail(err, r, "cannot create state directory", dir);
		goto fail;
	}
	r = state_lock(s, wait, err);
	if (r == 0)
		r = load_file(s, s->state_path, false, &valid, err);
	if (r == 0)
		r = load_file(s, s->journal_path, true, &valid, err);
	if (r == 0)
		r = open_journal(s, valid, err);
	if (r < 0)
		goto fail;
	*ret = s;
	return 0;
fail:
	state_close(s);
	return r;
}

/* ---- queries and changes ---- */

bool
state_has(const struct state *s, const char *key, int64_t *ret_when)
{
	const struct kv_slot *sl = kv_find(&s->keys, key, kv_hash(key));

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

bool
state_name_recorded(const struct state *s, const char *maildir_name)
{
	return kv_find(&s->names, maildir_name, kv_hash(maildir_name)) != NULL;
}

static int
state_check(struct state *s, const char *key, struct mp_err *err)
{
	if (s->broken)
		return st_fail(err, s->broken, "earlier failure on", s->journal_path);
	if (!key || !*key)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: empty key", s->account);
	return 0;
}

int
state_add(struct state *s, const char *key, int64_t when, const char *maildir_name,
	  struct mp_err *err)
{
	struct kv_slot *sl, *nsl;
	bool added = false, name_added = false;
	int r = state_check(s, key, err);

	if (r < 0)
		return r;
	/* "-" stands for "no name" in the journal. */
	if (maildir_name && (!*maildir_name || strcmp(maildir_name, "-") == 0))
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: invalid Maildir name '%s'",
				  s->account, maildir_name);
	/* Reserve first so that, once the set changed, the journal line cannot fail. */
	r = dbuf_reserve(&s->pending,
			 32 + esc_max(key) + (maildir_name ? esc_max(maildir_name) : 1));
	if (r == 0)
		r = kv_insert(&s->keys, key, when, &sl, &added);
	if (r == 0 && maildir_name)
		r = kv_insert(&s->names, maildir_name, 0, &nsl, &name_added);
	if (r < 0) {
		if (added)
			kv_remove(&s->keys, key);
		return st_fail(err, r, "cannot record in", s->journal_path);
	}
	if (!added && !maildir_name)
		return 0;
	dbuf_put(&s->pending, "+ ", 2);
	dbuf_put_i64(&s->pending, sl->when);
	dbuf_put(&s->pending, " ", 1);
	dbuf_put_esc(&s->pending, key);
	dbuf_put(&s->pending, " ", 1);
	if (maildir_name)
		dbuf_put_esc(&s->pending, maildir_name);
	else
		dbuf_put(&s->pending, "-", 1);
	dbuf_put(&s->pending, "\n", 1);
	return 0;
}

int
state_remove(struct state *s, const char *key, struct mp_err *err)
{
	int r = state_check(s, key, err);

	if (r < 0)
		return r;
	r = dbuf_reserve(&s->pending, 4 + esc_max(key));
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	if (!kv_remove(&s->keys, key))
		return 0;
	dbuf_put(&s->pending, "- ", 2);
	dbuf_put_esc(&s->pending, key);
	dbuf_put(&s->pending, "\n", 1);
	return 0;
}

int
state_sync(struct state *s, struct mp_err *err)
{
	int r;

	if (s->broken)
		return st_fail(err, s->broken, "earlier failure on", s->journal_path);
	if (s->pending.len == 0)
		return 0;
	r = util_write_all(s->journal_fd, s->pending.p, s->pending.len);
	if (r < 0) {
		/* Take back a partial record so a retry does not follow garbage. */
		if (ftruncate(s->journal_fd, s->journal_len) < 0)
			s->broken = r;
		return st_fail(err, r, "cannot write", s->journal_path);
	}
	/*
	 * After a failed fdatasync the kernel may have dropped the dirty pages:
	 * nothing written since can be trusted, so refuse further changes.
	 */
	if (fdatasync(s->journal_fd) < 0) {
		s->broken = -errno;
		return st_fail(err, s->broken, "cannot sync", s->journal_path);
	}
	s->journal_len += (off_t)s->pending.len;
	s->pending.len = 0;
	return 0;
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

/* ---- compaction ---- */

static int
write_snapshot(struct state *s, int fd)
{
	struct dbuf b = { 0 };
	int r = dbuf_reserve(&b, STATE_FLUSH_SIZE);

	if (r < 0)
		return r;
	dbuf_put(&b, STATE_HEADER "\n", sizeof(STATE_HEADER));
	for (size_t i = 0; r == 0 && i < s->keys.cap; i++) {
		const struct kv_slot *sl = &s->keys.slots[i];

		if (!sl->key)
			continue;
		r = dbuf_reserve(&b, 24 + esc_max(sl->key));
		if (r < 0)
			break;
		dbuf_put_i64(&b, sl->when);
		dbuf_put(&b, " ", 1);
		dbuf_put_esc(&b, sl->key);
		dbuf_put(&b, "\n", 1);
		if (b.len >= STATE_FLUSH_SIZE) {
			r = util_write_all(fd, b.p, b.len);
			b.len = 0;
		}
	}
	if (r == 0)
		r = util_write_all(fd, b.p, b.len);
	free(b.p);
	return r;
}

/* NAME.state.new, fsync, rename over NAME.state, fsync the directory. */
static int
replace_snapshot(struct state *s, struct mp_err *err)
{
	int fd, r;

	fd = open(s->new_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY | O_CLOEXEC, 0600);
	if (fd < 0)
		return st_fail(err, -errno, "cannot create", s->new_path);
	r = write_snapshot(s, fd);
	if (r < 0)
		st_fail(err, r, "cannot write", s->new_path);
	else if (fsync(fd) < 0)
		r = st_fail(err, -errno, "cannot sync", s->new_path);
	if (close(fd) < 0 && r == 0 && errno != EINTR)
		r = st_fail(err, -errno, "cannot close", s->new_path);
	if (r == 0 && rename(s->new_path, s->state_path) < 0)
		r = st_fail(err, -errno, "cannot rename to", s->state_path);
	if (r < 0) {
		unlink(s->new_path);
		return r;
	}
	r = util_fsync_dir(s->dir);
	if (r < 0)
		return st_fail(err, r, "cannot sync", s->dir);
	return 0;
}

int
state_compact(struct state *s, struct mp_err *err)
{
	int r;

	if (s->broken)
		return st_fail(err, s->broken, "earlier failure on", s->journal_path);
	r = replace_snapshot(s, err);
	if (r < 0)
		return r;
	/* The snapshot holds every change now, buffered ones included. */
	s->pending.len = 0;
	if (ftruncate(s->journal_fd, 0) < 0 || fsync(s->journal_fd) < 0) {
		s->broken = -errno;
		return st_fail(err, s->broken, "cannot empty", s->journal_path);
	}
	s->journal_len = 0;
	kv_free(&s->names);
	return 0;
}

void
state_close(struct state *s)
{
	if (!s)
		return;
	if (s->journal_fd >= 0)
		close(s->journal_fd);
	/* Closing the last descriptor of the lock file releases the flock. */
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	kv_free(&s->keys);
	kv_free(&s->names);
	free(s->pending.p);
	free(s->dir);
	free(s->account);
	free(s->state_path);
	free(s->new_path);
	free(s->journal_path);
	free(s->lock_path);
	free(s);
}
