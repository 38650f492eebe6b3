/*
 * Per-account state: a snapshot plus an append-only journal, both plain
 * text with one record per line, and an in-memory hash set of the keys.
 *
 *   NAME.state    "mailpull-state 1", then "<when> <key>" lines
 *   NAME.journal  "+ <when> <key> <maildir_name or ->" and "- <key>" lines
 *
 * IMAP folders add records that start with an upper-case tag, which no key
 * record can (those start with a digit, '-', '+'):
 *
 *   NAME.state    "F <folder> <uidvalidity> <uidnext> <ranges or ->"
 *                 "R <folder> <ranges>"        more ranges, after its F line
 *                 "P <folder> <fp>[,<fp>...]"  fingerprints, after its F line
 *                 "S <folder> <ranges>"        skipped UIDs, after its F line
 *   NAME.journal  "V <folder> <uidvalidity>"   start or restart the folder
 *                 "N <folder> <uidnext>"
 *                 "U <folder> <uid> <fp or -> <maildir_name or ->"
 *                 "E <folder> <uid>"           expunged
 *                 "X <folder> <fp>"            fingerprint forgotten (its
 *                                              message never arrived here)
 *                 "D <folder>"                 folder gone
 *                 "S <folder> <uid>"           skipped: to look at again
 *                 "T <folder> <uid>"           no longer skipped
 *                 "G <maildir_name> <flags>"   the Maildir info letters
 *                                              (as "FS") the name is to be
 *                                              published with, written
 *                                              before the U line recording
 *                                              the name, so recovery
 *                                              publishes it into cur/ with
 *                                              them as a normal run does
 *
 * A name with no G line (every file written before G existed, POP3
 * messages, IMAP messages without flags) is published into new/.
 * Ranges are "1-500,502,510-900" in increasing order; fp is 16 hex digits
 * and never 0. Long range and fingerprint lists are cut into lines of a few
 * kilobytes so no line grows with the mailbox.
 *
 * Keys, names and folders are escaped (%XX for control bytes, space, '%',
 * DEL and bytes >= 0x80) so a record never contains a space or newline of
 * its own and any string but one holding NUL round-trips. Replaying a
 * journal over a snapshot that already contains it yields the same state,
 * which makes a crash between the snapshot rename and the journal
 * truncation harmless: for folders, everything after a folder's last V or D
 * line is replayed onto the same starting point, UID adds and expunges are
 * last-writer-wins per UID, and so are fingerprints (added by U, removed by
X, all dropped by D) and skipped UIDs (added by S, removed by T, all
dropped by V and D). State files written before S and T existed simply
have no skipped UIDs.
 *
 * POP3 keys may carry the size the server LISTed for the message when it
 * was fetched, so that a UIDL the server hands to another message later is
 * told from the one fetched (tag 'L', which no other record starts with):
 *
 *   NAME.state    "L <when> <key> <size>"      a key with its size, instead
 *                                              of "<when> <key>"
 *   NAME.journal  "L <when> <key> <maildir_name or -> <size>"
 *                                              "+" that also sets the size
 *
 * A key recorded without a size (all keys of files written before sizes
 * were kept) has none; adding an existing key keeps its time, and an "L"
 * record replaces its size. Since sizes only come with additions, a key's
 * size after a journal is the last "L" since its last "-", or what it had
 * before, which keeps a replay over a snapshot that holds it harmless.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
/* Bytes of ranges or fingerprints on one snapshot line before the next starts. */
#define SNAP_LINE_ITEMS 4000

/* Open addressing with linear probing; an empty slot has key == NULL. */
struct kv_slot {
	char *key;
	uint32_t hash;
	int64_t when;
	uint64_t size1;                   /* POP3 keys: LISTed size + 1; 0 when not known */
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

struct uid_range {
	uint32_t lo, hi;
};

/* Open addressing with linear probing; an empty slot holds 0. */
struct fp_set {
	uint64_t *slots;
	size_t cap;                       /* 0 or a power of two */
	size_t count;
};

struct folder {
	char *name;
	uint32_t uidvalidity;
	uint32_t uidnext;
	struct uid_range *ranges;         /* sorted, disjoint, never touching */
	size_t nranges, rcap;
	uint64_t nuids;
	struct fp_set fps;
	/*
	 * UIDs passed over for a reason (too large, \Deleted, left out of a
	 * FETCH) and looked at again on every poll; NULL when none. A struct
	 * folder of its own so the range code serves both sets: only its
	 * ranges and nuids are used.
	 */
	struct folder *skipped;
};

/*
 * The record a Maildir name was written for: id is "k<key>" (POP3) or
 * "u<uidvalidity> <uid> <fp> <folder>" (IMAP), unique per record. latest is
 * the last name recorded for it: an older name was superseded (the
 * message was forgotten and fetched again) and speaks for nothing.
 */
struct name_owner {
	char *id;
	char *latest;
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
	bool interrupted;                 /* names were loaded: no compaction since */
	struct kv_set keys;               /* key -> first fetch time */
	struct kv_set names;              /* Maildir name -> owner index + 1, since the last compaction */
	struct kv_set name_flags;         /* Maildir name -> info letters as a bit set (G lines) */
	struct name_owner *owners;        /* who each recorded name was recorded for */
	size_t nowners, ocap;
	struct kv_set owner_ix;           /* owner id -> index in owners */
	struct dbuf pending;              /* journal lines not yet written */
	struct folder **folders;          /* sorted by name (strcmp) */
	size_t nfolders, fcap;
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
	n.size1 = 0;
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

/* ---- recorded Maildir names and their owners ---- */

static void
names_clear(struct state *s)
{
	kv_free(&s->names);
	kv_free(&s->name_flags);
	kv_free(&s->owner_ix);
	for (size_t i = 0; i < s->nowners; i++) {
		free(s->owners[i].id);
		free(s->owners[i].latest);
	}
	free(s->owners);
	s->owners = NULL;
	s->nowners = s->ocap = 0;
}

/*
 * Records name as delivered for the record id. A failure leaves at worst
 * an owner whose latest name is not recorded, which only keeps an older
 * name from being forgotten (see state_forget_name()).
 */
static int
name_insert(struct state *s, const char *name, const char *id)
{
	struct kv_slot *sl;
	struct name_owner *o;
	char *latest;
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
	latest = strdup(name);
	if (!latest)
		return -ENOMEM;
	r = kv_insert(&s->owner_ix, id, (int64_t)s->nowners, &sl, &added);
	if (r < 0) {
		free(latest);
		return r;
	}
	if (added) {
		o = &s->owners[s->nowners];
		o->id = strdup(id);
		if (!o->id) {
			kv_remove(&s->owner_ix, id);
			free(latest);
			return -ENOMEM;
		}
		o->latest = NULL;
		s->nowners++;
	}
	o = &s->owners[sl->when];
	free(o->latest);
	o->latest = latest;
	return kv_insert(&s->names, name, sl->when + 1, &sl, &added);
}

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
	r = name_insert(s, name, id);
	free(id);
	return r;
}

static int
name_insert_uid(struct state *s, const char *name, const char *folder, uint32_t uidvalidity,
		uint32_t uid, uint64_t fp)
{
	char *id;
	int r;

	if (asprintf(&id, "u%" PRIu32 " %" PRIu32 " %" PRIu64 " %s", uidvalidity, uid, fp,
		     folder) < 0)
		return -ENOMEM;
	r = name_insert(s, name, id);
	free(id);
	return r;
}

/* ---- Maildir info flags of recorded names ---- */

/* Bit of an info letter: A-Z are 0..25, a-z 26..51; -1 for anything else. */
static int
flag_bit(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return 26 + (c - 'a');
	return -1;
}

/* "FS" -> bit set; 0 for an empty string, -1 for a character not a letter. */
static int64_t
flags_parse(const char *flags)
{
	int64_t set = 0;

	for (const char *p = flags; *p; p++) {
		int b = flag_bit(*p);

		if (b < 0)
			return -1;
		set |= (int64_t)1 << b;
	}
	return set;
}

/* The letters of set in ASCII order (upper case first), as the Maildir spec wants. */
static size_t
flags_format(int64_t set, char *out)
{
	size_t n = 0;

	for (int b = 0; b < 52; b++)
		if (set & ((int64_t)1 << b))
			out[n++] = (char)(b < 26 ? 'A' + b : 'a' + (b - 26));
	out[n] = '\0';
	return n;
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

/* ---- IMAP folders in memory ---- */

/* FNV hashes cluster in their low bits alone; mix before masking. */
static size_t
fp_slot(uint64_t fp, size_t mask)
{
	fp ^= fp >> 33;
	fp *= UINT64_C(0xff51afd7ed558ccd);
	fp ^= fp >> 33;
	return (size_t)fp & mask;
}

static bool
fp_has(const struct fp_set *set, uint64_t fp)
{
	size_t mask = set->cap - 1;

	if (set->cap == 0 || fp == 0)
		return false;
	for (size_t i = fp_slot(fp, mask); set->slots[i]; i = (i + 1) & mask)
		if (set->slots[i] == fp)
			return true;
	return false;
}

/* Returns whether fp was new. The table always has an empty slot. */
static bool
fp_place(uint64_t *slots, size_t cap, uint64_t fp)
{
	size_t i = fp_slot(fp, cap - 1);

	for (; slots[i]; i = (i + 1) & (cap - 1))
		if (slots[i] == fp)
			return false;
	slots[i] = fp;
	return true;
}

/*
 * Makes room for one more fingerprint. The load may reach 7/8, not 3/4 as
 * for keys: a slot is only 8 bytes, so even a long probe run stays within
 * a few cache lines, and the table is most of a big folder's memory.
 */
static int
fp_reserve(struct fp_set *set)
{
	size_t cap = set->cap ? set->cap * 2 : 16;
	uint64_t *slots;

	if ((set->count + 1) * 8 <= set->cap * 7)
		return 0;
	if (cap < set->cap || cap > SIZE_MAX / sizeof(*slots))
		return -ENOMEM;
	slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < set->cap; i++)
		if (set->slots[i])
			fp_place(slots, cap, set->slots[i]);
	free(set->slots);
	set->slots = slots;
	set->cap = cap;
	return 0;
}

/* Call fp_reserve() first. */
static bool
fp_add(struct fp_set *set, uint64_t fp)
{
	if (!fp_place(set->slots, set->cap, fp))
		return false;
	set->count++;
	return true;
}

/* Backward-shift deletion, as kv_remove(). Returns whether fp was there. */
static bool
fp_del(struct fp_set *set, uint64_t fp)
{
	size_t mask = set->cap - 1, i, j;

	if (set->cap == 0 || fp == 0)
		return false;
	for (i = fp_slot(fp, mask); set->slots[i] != fp; i = (i + 1) & mask)
		if (!set->slots[i])
			return false;
	for (j = (i + 1) & mask; set->slots[j]; j = (j + 1) & mask) {
		size_t k = fp_slot(set->slots[j], mask);
		bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);

		if (stays)
			continue;
		set->slots[i] = set->slots[j];
		i = j;
	}
	set->slots[i] = 0;
	set->count--;
	return true;
}

/* Index of the first range ending at or after uid; nranges when none does. */
static size_t
range_find(const struct folder *f, uint32_t uid)
{
	size_t lo = 0, hi = f->nranges;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (f->ranges[mid].hi < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool
range_has(const struct folder *f, uint32_t uid)
{
	size_t i = range_find(f, uid);

	return i < f->nranges && f->ranges[i].lo <= uid;
}

/* Makes room for one more range. */
static int
range_reserve(struct folder *f)
{
	size_t cap = f->rcap ? f->rcap * 2 : 4;
	struct uid_range *p;

	if (f->nranges < f->rcap)
		return 0;
	if (cap < f->rcap || cap > SIZE_MAX / sizeof(*p))
		return -ENOMEM;
	p = realloc(f->ranges, cap * sizeof(*p));
	if (!p)
		return -ENOMEM;
	f->ranges = p;
	f->rcap = cap;
	return 0;
}

/*
 * Adds uid, merging it into the ranges it touches, so UIDs fetched in
 * order stay one range. Call range_reserve() first. Returns whether uid
 * was new.
 */
static bool
range_add(struct folder *f, uint32_t uid)
{
	struct uid_range *r = f->ranges;
	size_t i = range_find(f, uid), n = f->nranges;
	bool left, right;

	if (i < n && r[i].lo <= uid)
		return false;
	/* r[i - 1].hi < uid < r[i].lo, so neither side overflows. */
	left = i > 0 && r[i - 1].hi + 1 == uid;
	right = i < n && r[i].lo - 1 == uid;
	if (left && right) {
		r[i - 1].hi = r[i].hi;
		memmove(&r[i], &r[i + 1], (n - i - 1) * sizeof(*r));
		f->nranges--;
	} else if (left) {
		r[i - 1].hi = uid;
	} else if (right) {
		r[i].lo = uid;
	} else {
		memmove(&r[i + 1], &r[i], (n - i) * sizeof(*r));
		r[i].lo = uid;
		r[i].hi = uid;
		f->nranges++;
	}
	f->nuids++;
	return true;
}

/* Removes uid, splitting its range when uid is inside. 1 removed, 0 absent, -ENOMEM. */
static int
range_del(struct folder *f, uint32_t uid)
{
	size_t i = range_find(f, uid);
	struct uid_range *r;

	if (i == f->nranges || f->ranges[i].lo > uid)
		return 0;
	if (f->ranges[i].lo < uid && uid < f->ranges[i].hi && range_reserve(f) < 0)
		return -ENOMEM;
	r = f->ranges;
	if (r[i].lo == r[i].hi) {
		memmove(&r[i], &r[i + 1], (f->nranges - i - 1) * sizeof(*r));
		f->nranges--;
	} else if (uid == r[i].lo) {
		r[i].lo++;
	} else if (uid == r[i].hi) {
		r[i].hi--;
	} else {
		memmove(&r[i + 1], &r[i], (f->nranges - i) * sizeof(*r));
		r[i].hi = uid - 1;
		r[i + 1].lo = uid + 1;
		f->nranges++;
	}
	f->nuids--;
	return 1;
}

/* Appends [lo, hi] read from a snapshot, where ranges come in increasing order. */
static int
range_append(struct folder *f, uint64_t lo, uint64_t hi)
{
	struct uid_range *last = f->nranges ? &f->ranges[f->nranges - 1] : NULL;

	if (lo == 0 || lo > hi || hi > UINT32_MAX || (last && lo <= last->hi))
		return -EBADMSG;
	f->nuids += hi - lo + 1;
	if (last && lo == (uint64_t)last->hi + 1) {
		last->hi = (uint32_t)hi;
		return 0;
	}
	if (range_reserve(f) < 0)
		return -ENOMEM;
	f->ranges[f->nranges].lo = (uint32_t)lo;
	f->ranges[f->nranges].hi = (uint32_t)hi;
	f->nranges++;
	return 0;
}

static void
folder_clear_uids(struct folder *f)
{
	free(f->ranges);
	f->ranges = NULL;
	f->nranges = 0;
	f->rcap = 0;
	f->nuids = 0;
}

static void
folder_free(struct folder *f)
{
	if (!f)
		return;
	folder_clear_uids(f);
	folder_free(f->skipped);
	free(f->fps.slots);
	free(f->name);
	free(f);
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
	folder_clear_uids(f);
	folder_free(f->skipped);
	f->skipped = NULL;
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
	int r = range_reserve(f);

	if (r == 0 && fp)
		r = fp_reserve(&f->fps);
	if (r == 0 && name)
		r = name_insert_uid(s, name, f->name, f->uidvalidity, uid, fp);
	if (r < 0)
		return r;
	uid_added = range_add(f, uid);
	if (fp)
		fp_added = fp_add(&f->fps, fp);
	*ret_changed = uid_added || fp_added || name != NULL;
	return 0;
}

/* ---- IMAP folder records ---- */

static int
parse_u32(const char *s, uint32_t *ret)
{
	uint64_t v;

	if (util_parse_u64(s, strlen(s), &v) < 0 || v > UINT32_MAX)
		return -EBADMSG;
	*ret = (uint32_t)v;
	return 0;
}

/* Exactly 16 hex digits, as written; 0 stands for "none" and is never written. */
static int
parse_fp(const char *s, size_t len, uint64_t *ret)
{
	uint64_t v = 0;

	if (len != 16)
		return -EBADMSG;
	for (size_t i = 0; i < len; i++) {
		int d = hexval(s[i]);

		if (d < 0)
			return -EBADMSG;
		v = v << 4 | (uint64_t)d;
	}
	if (v == 0)
		return -EBADMSG;
	*ret = v;
	return 0;
}

/* "1-500,502,510-900" appended to f's ranges. */
static int
parse_ranges(struct folder *f, const char *s)
{
	for (;;) {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		const char *dash = memchr(s, '-', len);
		uint64_t lo, hi;
		int r;

		if (!dash) {
			if (util_parse_u64(s, len, &lo) < 0)
				return -EBADMSG;
			hi = lo;
		} else if (util_parse_u64(s, (size_t)(dash - s), &lo) < 0 ||
			   util_parse_u64(dash + 1, len - (size_t)(dash - s) - 1, &hi) < 0) {
			return -EBADMSG;
		}
		r = range_append(f, lo, hi);
		if (r < 0 || !end)
			return r;
		s = end + 1;
	}
}

static int
parse_fps(struct folder *f, const char *s)
{
	for (;;) {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		uint64_t fp;

		if (parse_fp(s, len, &fp) < 0)
			return -EBADMSG;
		if (fp_reserve(&f->fps) < 0)
			return -ENOMEM;
		fp_add(&f->fps, fp);
		if (!end)
			return 0;
		s = end + 1;
	}
}

/* A tag is one character; split_fields() already made it a string. */
static bool
is_tag(const char *field)
{
	return field[0] && !field[1];
}

/* The skipped-UID set of f, created when missing. */
static int
skipped_need(struct folder *f)
{
	if (!f->skipped && !(f->skipped = calloc(1, sizeof(*f->skipped))))
		return -ENOMEM;
	return 0;
}

/* Snapshot "F", "R", "P" and "S" lines. */
static int
apply_folder_snapshot(struct state *s, char *line)
{
	struct folder *fo;
	uint32_t uv, un;
	char *f[5];
	size_t at;
	int r;

	if (line[0] == 'F') {
		if (split_fields(line, f, 5) < 0 || !is_tag(f[0]) || unescape(f[1]) < 0 ||
		    parse_u32(f[2], &uv) < 0 || uv == 0 || parse_u32(f[3], &un) < 0)
			return -EBADMSG;
		if (folder_find(s, f[1], &at))
			return -EBADMSG;
		r = folder_insert(s, f[1], at, &fo);
		if (r < 0)
			return r;
		fo->uidvalidity = uv;
		fo->uidnext = un;
		return strcmp(f[4], "-") == 0 ? 0 : parse_ranges(fo, f[4]);
	}
	if (split_fields(line, f, 3) < 0 || !is_tag(f[0]) || unescape(f[1]) < 0)
		return -EBADMSG;
	fo = folder_find(s, f[1], NULL);
	if (!fo)
		return -EBADMSG;
	if (line[0] == 'S') {
		r = skipped_need(fo);
		return r < 0 ? r : parse_ranges(fo->skipped, f[2]);
	}
	return line[0] == 'R' ? parse_ranges(fo, f[2]) : parse_fps(fo, f[2]);
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

	if (uid == 0 || (strcmp(f[3], "-") != 0 && parse_fp(f[3], strlen(f[3]), &fp) < 0))
		return -EBADMSG;
	if (strcmp(name, "-") == 0)
		name = NULL;
	else if (unescape(f[4]) < 0)
		return -EBADMSG;
	fo = folder_find(s, f[1], NULL);
	if (fo)
		return mem_uid_add(s, fo, uid, fp, name, &changed);
	/*
	 * Only replay over a newer snapshot meets a folder that is missing
	 * here: a later D line removed it. The name still counts for recovery.
	 */
	return name ? kv_insert(&s->names, name, 0, &sl, &changed) : 0;
}

/*
 * Journal "V", "N", "U", "E", "S", "T" and "D" lines. N, U, E, S and T lines for a folder
 * missing here are skipped for the reason given in replay_uid_add().
 */
static int
apply_folder_journal(struct state *s, char *line)
{
	struct folder *fo;
	uint64_t fp = 0;
	uint32_t n = 0;
	char *f[5];
	int want, r;

	switch (line[0]) {
	case 'D':
		want = 2;
		break;
	case 'U':
		want = 5;
		break;
	default:
		want = 3;
		break;
	}
	if (split_fields(line, f, want) < 0 || !is_tag(f[0]) || unescape(f[1]) < 0)
		return -EBADMSG;
	fo = folder_find(s, f[1], NULL);
	if (line[0] == 'X') {
		if (parse_fp(f[2], strlen(f[2]), &fp) < 0)
			return -EBADMSG;
		if (fo)
			fp_del(&fo->fps, fp);
		return 0;
	}
	if (want > 2 && parse_u32(f[2], &n) < 0)
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
	case 'E':
		r = fo ? range_del(fo, n) : 0;
		return r < 0 ? r : 0;
	case 'S':
		if (n == 0)
			return -EBADMSG;
		r = fo ? skipped_need(fo) : 0;
		if (r == 0 && fo)
			r = range_reserve(fo->skipped);
		if (r == 0 && fo)
			range_add(fo->skipped, n);
		return r;
	case 'T':
		r = fo && fo->skipped ? range_del(fo->skipped, n) : 0;
		return r < 0 ? r : 0;
	default:
		mem_folder_remove(s, f[1]);
		return 0;
	}
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
	return name_insert_key(s, f[3], f[2]);
}

/* Journal "G <maildir_name> <flags>". */
static int
apply_name_flags(struct state *s, char *line)
{
	struct kv_slot *sl;
	char *f[3];
	int64_t set;
	bool added;

	if (split_fields(line, f, 3) < 0 || !is_tag(f[0]) || unescape(f[1]) < 0)
		return -EBADMSG;
	set = flags_parse(f[2]);
	if (set <= 0)
		return -EBADMSG;
	if (kv_insert(&s->name_flags, f[1], set, &sl, &added) < 0)
		return -ENOMEM;
	sl->when = set;
	return 0;
}

/*
 * "L <when> <key> <size>" (snapshot) or "L <when> <key> <name> <size>"
 * (journal): a key added with its size.
 */
static int
apply_sized(struct state *s, bool journal, char *line)
{
	int nf = journal ? 5 : 4;
	struct kv_slot *sl;
	int64_t when;
	uint64_t size;
	bool added;
	char *f[5];
	int r;

	if (split_fields(line, f, nf) < 0 || !is_tag(f[0]) || parse_i64(f[1], &when) < 0 ||
	    unescape(f[2]) < 0 || util_parse_u64(f[nf - 1], strlen(f[nf - 1]), &size) < 0 ||
	    size == UINT64_MAX || (journal && strcmp(f[3], "-") != 0 && unescape(f[3]) < 0))
		return -EBADMSG;
	r = kv_insert(&s->keys, f[2], when, &sl, &added);
	if (r < 0)
		return r;
	sl->size1 = size + 1;
	if (!journal || strcmp(f[3], "-") == 0)
		return 0;
	return name_insert_key(s, f[3], f[2]);
}

static int
load_line(struct state *s, bool journal, unsigned long lineno, char *line)
{
	if (line[0] == 'L' && (journal || lineno > 1))
		return apply_sized(s, journal, line);
	/* Folder records start with an upper-case tag, key records never do. */
	if (journal && line[0] && strchr("VNUEXDST", line[0]))
		return apply_folder_journal(s, line);
	if (journal && line[0] == 'G')
		return apply_name_flags(s, line);
	if (journal)
		return apply_journal(s, line);
	if (lineno == 1)
		return strcmp(line, STATE_HEADER) == 0 ? 0 : -EBADMSG;
	if (line[0] && strchr("FRPS", line[0]))
		return apply_folder_snapshot(s, line);
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
	int r;

	s->journal_fd = open(s->journal_path, O_WRONLY | O_APPEND | O_NOCTTY | O_CLOEXEC);
	if (s->journal_fd < 0 && errno == ENOENT) {
		/*
		 * A new journal's records count only once its directory entry
		 * is durable too: sync the directory before anything is
		 * recorded in it.
		 */
		s->journal_fd = open(s->journal_path,
				     O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOCTTY | O_CLOEXEC,
				     0600);
		if (s->journal_fd < 0)
			return st_fail(err, -errno, "cannot create", s->journal_path);
		r = util_fsync_dir(s->dir);
		if (r < 0)
			return st_fail(err, r, "cannot sync", s->dir);
	}
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
	s->interrupted = s->names.count > 0;
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

int
state_name_set_flags(struct state *s, const char *maildir_name, const char *flags,
		     struct mp_err *err)
{
	char letters[STATE_FLAGS_MAX + 1];
	struct kv_slot *sl;
	int64_t set;
	bool added;
	int r;

	if (s->broken)
		return st_fail(err, s->broken, "earlier failure on", s->journal_path);
	if (!flags || !*flags)
		return 0;
	set = flags_parse(flags);
	if (!maildir_name || !*maildir_name || strcmp(maildir_name, "-") == 0 || set < 0)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: invalid Maildir name "
				  "or flags", s->account);
	r = dbuf_reserve(&s->pending, 8 + esc_max(maildir_name) + strlen(flags));
	if (r == 0)
		r = kv_insert(&s->name_flags, maildir_name, set, &sl, &added);
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	sl->when = set;
	dbuf_put(&s->pending, "G ", 2);
	dbuf_put_esc(&s->pending, maildir_name);
	dbuf_put(&s->pending, " ", 1);
	dbuf_put(&s->pending, letters, flags_format(set, letters));
	dbuf_put(&s->pending, "\n", 1);
	return 0;
}

size_t
state_name_flags(const struct state *s, const char *maildir_name,
		 char ret_flags[STATE_FLAGS_MAX + 1])
{
	const struct kv_slot *sl = kv_find(&s->name_flags, maildir_name, kv_hash(maildir_name));

	ret_flags[0] = '\0';
	return sl ? flags_format(sl->when, ret_flags) : 0;
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

static void dbuf_put_u64(struct dbuf *b, uint64_t v);

/* state_add() and, with size1 (size + 1) not 0, state_add_sized(). */
static int
add_record(struct state *s, const char *key, int64_t when, uint64_t size1,
	   const char *maildir_name, struct mp_err *err)
{
	struct kv_slot *sl = NULL;
	bool added = false, resized;
	int r = state_check(s, key, err);

	if (r < 0)
		return r;
	/* "-" stands for "no name" in the journal. */
	if (maildir_name && (!*maildir_name || strcmp(maildir_name, "-") == 0))
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: invalid Maildir name '%s'",
				  s->account, maildir_name);
	/* Reserve first so that, once the set changed, the journal line cannot fail. */
	r = dbuf_reserve(&s->pending,
			 56 + esc_max(key) + (maildir_name ? esc_max(maildir_name) : 1));
	if (r == 0)
		r = kv_insert(&s->keys, key, when, &sl, &added);
	if (r == 0 && maildir_name)
		r = name_insert_key(s, maildir_name, key);
	if (r < 0) {
		if (added)
			kv_remove(&s->keys, key);
		return st_fail(err, r, "cannot record in", s->journal_path);
	}
	resized = size1 && sl->size1 != size1;
	if (size1)
		sl->size1 = size1;
	if (!added && !maildir_name && !resized)
		return 0;
	dbuf_put(&s->pending, size1 ? "L " : "+ ", 2);
	dbuf_put_i64(&s->pending, sl->when);
	dbuf_put(&s->pending, " ", 1);
	dbuf_put_esc(&s->pending, key);
	dbuf_put(&s->pending, " ", 1);
	if (maildir_name)
		dbuf_put_esc(&s->pending, maildir_name);
	else
		dbuf_put(&s->pending, "-", 1);
	if (size1) {
		dbuf_put(&s->pending, " ", 1);
		dbuf_put_u64(&s->pending, size1 - 1);
	}
	dbuf_put(&s->pending, "\n", 1);
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
	const struct kv_slot *sl = kv_find(&s->keys, key, kv_hash(key));

	if (!sl || sl->size1 == 0)
		return false;
	*ret_size = sl->size1 - 1;
	return true;
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

bool
state_interrupted(const struct state *s)
{
	return s->interrupted;
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

/* ---- IMAP folders ---- */

static void
dbuf_put_u64(struct dbuf *b, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);

	dbuf_put(b, tmp, (size_t)n);
}

static void
dbuf_put_fp(struct dbuf *b, uint64_t fp)
{
	static const char hex[] = "0123456789abcdef";

	for (int shift = 60; shift >= 0; shift -= 4)
		b->p[b->len++] = hex[(fp >> shift) & 15];
}

/* "<tag> <folder>": the start of every folder record. */
static void
dbuf_put_folder(struct dbuf *b, char tag, const char *folder)
{
	char head[2] = { tag, ' ' };

	dbuf_put(b, head, 2);
	dbuf_put_esc(b, folder);
}

/* Room for a folder record: its escaped name plus three numbers and a name. */
static size_t
folder_line_max(const char *folder, const char *name)
{
	return 64 + esc_max(folder) + (name ? esc_max(name) : 0);
}

static int
folder_check(struct state *s, const char *folder, struct mp_err *err)
{
	if (s->broken)
		return st_fail(err, s->broken, "earlier failure on", s->journal_path);
	if (!folder || !*folder)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: empty folder name",
				  s->account);
	return 0;
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
	r = dbuf_reserve(&s->pending, folder_line_max(folder, NULL));
	if (r == 0)
		r = mem_folder_reset(s, folder, uidvalidity);
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	dbuf_put_folder(&s->pending, 'V', folder);
	dbuf_put(&s->pending, " ", 1);
	dbuf_put_u64(&s->pending, uidvalidity);
	dbuf_put(&s->pending, "\n", 1);
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
	r = dbuf_reserve(&s->pending, folder_line_max(folder, NULL));
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	f->uidnext = uidnext;
	dbuf_put_folder(&s->pending, 'N', folder);
	dbuf_put(&s->pending, " ", 1);
	dbuf_put_u64(&s->pending, uidnext);
	dbuf_put(&s->pending, "\n", 1);
	return 0;
}

bool
state_uid_has(const struct state *s, const char *folder, uint32_t uid)
{
	const struct folder *f = folder_find(s, folder, NULL);

	return f && range_has(f, uid);
}

int
state_uid_add(struct state *s, const char *folder, uint32_t uid, uint64_t fp,
	      const char *maildir_name, struct mp_err *err)
{
	struct folder *f;
	bool changed;
	int r = folder_need(s, folder, &f, err);

	if (r < 0)
		return r;
	if (uid == 0)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: UID 0", s->account);
	/* "-" stands for "no name" in the journal. */
	if (maildir_name && (!*maildir_name || strcmp(maildir_name, "-") == 0))
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: invalid Maildir name '%s'",
				  s->account, maildir_name);
	r = dbuf_reserve(&s->pending, folder_line_max(folder, maildir_name));
	if (r == 0)
		r = mem_uid_add(s, f, uid, fp, maildir_name, &changed);
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	if (!changed)
		return 0;
	dbuf_put_folder(&s->pending, 'U', folder);
	dbuf_put(&s->pending, " ", 1);
	dbuf_put_u64(&s->pending, uid);
	dbuf_put(&s->pending, " ", 1);
	if (fp)
		dbuf_put_fp(&s->pending, fp);
	else
		dbuf_put(&s->pending, "-", 1);
	dbuf_put(&s->pending, " ", 1);
	if (maildir_name)
		dbuf_put_esc(&s->pending, maildir_name);
	else
		dbuf_put(&s->pending, "-", 1);
	dbuf_put(&s->pending, "\n", 1);
	return 0;
}

int
state_uid_remove(struct state *s, const char *folder, uint32_t uid, struct mp_err *err)
{
	struct folder *f;
	int r = folder_need(s, folder, &f, err);

	if (r < 0)
		return r;
	r = dbuf_reserve(&s->pending, folder_line_max(folder, NULL));
	if (r == 0)
		r = range_del(f, uid);
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	if (r == 0)
		return 0;
	dbuf_put_folder(&s->pending, 'E', folder);
	dbuf_put(&s->pending, " ", 1);
	dbuf_put_u64(&s->pending, uid);
	dbuf_put(&s->pending, "\n", 1);
	return 0;
}

bool
state_fp_has(const struct state *s, const char *folder, uint64_t fp)
{
	const struct folder *f = folder_find(s, folder, NULL);

	return f && fp_has(&f->fps, fp);
}

/* Journal "X <folder> <fp>": the fingerprint no longer counts as fetched. */
static int
fp_forget(struct state *s, const char *folder, uint64_t fp, struct mp_err *err)
{
	struct folder *f;
	int r = folder_need(s, folder, &f, err);

	if (r < 0)
		return r;
	r = dbuf_reserve(&s->pending, folder_line_max(folder, NULL));
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	if (!fp_del(&f->fps, fp))
		return 0;
	dbuf_put_folder(&s->pending, 'X', folder);
	dbuf_put(&s->pending, " ", 1);
	dbuf_put_fp(&s->pending, fp);
	dbuf_put(&s->pending, "\n", 1);
	return 0;
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

int
state_forget_name(struct state *s, const char *maildir_name, struct mp_err *err)
{
	const struct kv_slot *sl = kv_find(&s->names, maildir_name, kv_hash(maildir_name));
	const struct name_owner *o;
	const char *folder, *sp1, *sp2, *sp3;
	uint32_t uv = 0, uid;
	uint64_t a, b, fp;
	int r;

	if (!sl || sl->when <= 0)
		return 0;
	o = &s->owners[sl->when - 1];
	if (!o->latest || strcmp(o->latest, maildir_name) != 0)
		return 0;
	if (o->id[0] == 'k') {
		if (!state_has(s, o->id + 1, NULL))
			return 0;
		r = state_remove(s, o->id + 1, err);
		return r < 0 ? r : 1;
	}
	/* "u<uidvalidity> <uid> <fp> <folder>", as name_insert_uid() wrote it. */
	sp1 = strchr(o->id, ' ');
	sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	sp3 = sp2 ? strchr(sp2 + 1, ' ') : NULL;
	if (!sp3 || util_parse_u64(o->id + 1, (size_t)(sp1 - o->id - 1), &a) < 0 ||
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

/* Calls cb for every UID in f's ranges; stops when cb returns non-zero. */
static int
ranges_foreach(const struct folder *f, int (*cb)(void *ud, uint32_t uid), void *ud)
{
	for (size_t i = 0; f && i < f->nranges; i++) {
		/* 64-bit, so a range ending at UINT32_MAX still ends the loop. */
		for (uint64_t u = f->ranges[i].lo; u <= f->ranges[i].hi; u++) {
			int r = cb(ud, (uint32_t)u);

			if (r != 0)
				return r;
		}
	}
	return 0;
}

int
state_uid_foreach(const struct state *s, const char *folder,
		  int (*cb)(void *ud, uint32_t uid), void *ud)
{
	return ranges_foreach(folder_find(s, folder, NULL), cb, ud);
}

size_t
state_uid_count(const struct state *s, const char *folder)
{
	const struct folder *f = folder_find(s, folder, NULL);

	return f ? (size_t)f->nuids : 0;
}

/* Journals "<tag> <folder> <uid>". Room must be reserved. */
static void
put_uid_line(struct state *s, char tag, const char *folder, uint32_t uid)
{
	dbuf_put_folder(&s->pending, tag, folder);
	dbuf_put(&s->pending, " ", 1);
	dbuf_put_u64(&s->pending, uid);
	dbuf_put(&s->pending, "\n", 1);
}

int
state_skip_add(struct state *s, const char *folder, uint32_t uid, struct mp_err *err)
{
	struct folder *f;
	int r = folder_need(s, folder, &f, err);

	if (r < 0)
		return r;
	if (uid == 0)
		return mp_err_set(err, -EINVAL, MP_EX_IOERR, "state %s: UID 0", s->account);
	if (f->skipped && range_has(f->skipped, uid))
		return 0;
	r = dbuf_reserve(&s->pending, folder_line_max(folder, NULL));
	if (r == 0)
		r = skipped_need(f);
	if (r == 0)
		r = range_reserve(f->skipped);
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	range_add(f->skipped, uid);
	put_uid_line(s, 'S', folder, uid);
	return 0;
}

int
state_skip_remove(struct state *s, const char *folder, uint32_t uid, struct mp_err *err)
{
	struct folder *f;
	int r = folder_need(s, folder, &f, err);

	if (r < 0)
		return r;
	if (!f->skipped || !range_has(f->skipped, uid))
		return 0;
	r = dbuf_reserve(&s->pending, folder_line_max(folder, NULL));
	if (r == 0)
		r = range_del(f->skipped, uid);
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	put_uid_line(s, 'T', folder, uid);
	return 0;
}

bool
state_skip_has(const struct state *s, const char *folder, uint32_t uid)
{
	const struct folder *f = folder_find(s, folder, NULL);

	return f && f->skipped && range_has(f->skipped, uid);
}

int
state_skip_foreach(const struct state *s, const char *folder,
		   int (*cb)(void *ud, uint32_t uid), void *ud)
{
	const struct folder *f = folder_find(s, folder, NULL);

	if (!f || !f->skipped)
		return 0;
	return ranges_foreach(f->skipped, cb, ud);
}

size_t
state_skip_count(const struct state *s, const char *folder)
{
	const struct folder *f = folder_find(s, folder, NULL);

	return f && f->skipped ? (size_t)f->skipped->nuids : 0;
}

int
state_folder_remove(struct state *s, const char *folder, struct mp_err *err)
{
	int r = folder_check(s, folder, err);

	if (r < 0)
		return r;
	r = dbuf_reserve(&s->pending, folder_line_max(folder, NULL));
	if (r < 0)
		return st_fail(err, r, "cannot record in", s->journal_path);
	if (!mem_folder_remove(s, folder))
		return 0;
	dbuf_put_folder(&s->pending, 'D', folder);
	dbuf_put(&s->pending, "\n", 1);
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

/* ---- compaction ---- */

struct snap {
	struct dbuf b;
	int fd;
};

/* Makes room for more bytes, writing out the buffer once it is full. */
static int
snap_reserve(struct snap *w, size_t more)
{
	if (w->b.len >= STATE_FLUSH_SIZE) {
		int r = util_write_all(w->fd, w->b.p, w->b.len);

		if (r < 0)
			return r;
		w->b.len = 0;
	}
	return dbuf_reserve(&w->b, more);
}

static int
snap_keys(struct snap *w, const struct state *s)
{
	for (size_t i = 0; i < s->keys.cap; i++) {
		const struct kv_slot *sl = &s->keys.slots[i];
		int r;

		if (!sl->key)
			continue;
		r = snap_reserve(w, 48 + esc_max(sl->key));
		if (r < 0)
			return r;
		if (sl->size1)
			dbuf_put(&w->b, "L ", 2);
		dbuf_put_i64(&w->b, sl->when);
		dbuf_put(&w->b, " ", 1);
		dbuf_put_esc(&w->b, sl->key);
		if (sl->size1) {
			dbuf_put(&w->b, " ", 1);
			dbuf_put_u64(&w->b, sl->size1 - 1);
		}
		dbuf_put(&w->b, "\n", 1);
	}
	return 0;
}

/*
 * Ranges as "1-500,502", a line break and a new "<cont> <folder> " head
 * past SNAP_LINE_ITEMS bytes, then '\n'. Each step reserves room for a
 * line break, a new line head and one range, which also leaves room for
 * the final '\n'.
 */
static int
snap_range_lines(struct snap *w, const struct uid_range *ranges, size_t n, char cont,
		 const char *folder, size_t room)
{
	size_t used = 0;

	for (size_t i = 0; i < n; i++) {
		const struct uid_range *rg = &ranges[i];
		size_t before;
		int r = snap_reserve(w, room);

		if (r < 0)
			return r;
		if (used >= SNAP_LINE_ITEMS) {
			dbuf_put(&w->b, "\n", 1);
			dbuf_put_folder(&w->b, cont, folder);
			dbuf_put(&w->b, " ", 1);
			used = 0;
		} else if (i > 0) {
			dbuf_put(&w->b, ",", 1);
		}
		before = w->b.len;
		dbuf_put_u64(&w->b, rg->lo);
		if (rg->hi != rg->lo) {
			dbuf_put(&w->b, "-", 1);
			dbuf_put_u64(&w->b, rg->hi);
		}
		used += w->b.len - before + 1;
	}
	dbuf_put(&w->b, "\n", 1);
	return 0;
}

/* "F" then, past SNAP_LINE_ITEMS bytes of ranges, "R" lines. */
static int
snap_ranges(struct snap *w, const struct folder *f, size_t room)
{
	int r = snap_reserve(w, room);

	if (r < 0)
		return r;
	dbuf_put_folder(&w->b, 'F', f->name);
	dbuf_put(&w->b, " ", 1);
	dbuf_put_u64(&w->b, f->uidvalidity);
	dbuf_put(&w->b, " ", 1);
	dbuf_put_u64(&w->b, f->uidnext);
	dbuf_put(&w->b, " ", 1);
	if (f->nranges == 0)
		dbuf_put(&w->b, "-", 1);
	return snap_range_lines(w, f->ranges, f->nranges, 'R', f->name, room);
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
		r = snap_reserve(w, room);
		if (r < 0)
			return r;
		if (open && used >= SNAP_LINE_ITEMS) {
			dbuf_put(&w->b, "\n", 1);
			open = false;
		}
		if (!open) {
			dbuf_put_folder(&w->b, 'P', f->name);
			dbuf_put(&w->b, " ", 1);
			open = true;
			used = 0;
		} else {
			dbuf_put(&w->b, ",", 1);
		}
		dbuf_put_fp(&w->b, f->fps.slots[i]);
		used += 17;
	}
	if (open)
		dbuf_put(&w->b, "\n", 1);
	return 0;
}

/* "S" lines of at most about SNAP_LINE_ITEMS bytes of ranges each. */
static int
snap_skipped(struct snap *w, const struct folder *f, size_t room)
{
	const struct folder *k = f->skipped;
	int r = snap_reserve(w, room);

	if (r < 0)
		return r;
	dbuf_put_folder(&w->b, 'S', f->name);
	dbuf_put(&w->b, " ", 1);
	return snap_range_lines(w, k->ranges, k->nranges, 'S', f->name, room);
}

static int
write_snapshot(struct state *s, int fd)
{
	struct snap w = { .fd = fd };
	int r = dbuf_reserve(&w.b, STATE_FLUSH_SIZE);

	if (r < 0)
		return r;
	dbuf_put(&w.b, STATE_HEADER "\n", sizeof(STATE_HEADER));
	r = snap_keys(&w, s);
	for (size_t i = 0; r == 0 && i < s->nfolders; i++) {
		const struct folder *f = s->folders[i];
		size_t room = folder_line_max(f->name, NULL);

		r = snap_ranges(&w, f, room);
		if (r == 0)
			r = snap_fps(&w, f, room);
		if (r == 0 && f->skipped && f->skipped->nranges)
			r = snap_skipped(&w, f, room);
	}
	if (r == 0)
		r = util_write_all(fd, w.b.p, w.b.len);
	free(w.b.p);
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
	names_clear(s);
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
	names_clear(s);
	for (size_t i = 0; i < s->nfolders; i++)
		folder_free(s->folders[i]);
	free(s->folders);
	free(s->pending.p);
	free(s->dir);
	free(s->account);
	free(s->state_path);
	free(s->new_path);
	free(s->journal_path);
	free(s->lock_path);
	free(s);
}
