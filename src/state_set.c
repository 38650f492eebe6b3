/*
 * The state store's generic parts: a string hash set, a 64-bit hash set,
 * a UID range set, the codec of the one-record-a-line text files, and the
 * buffered snapshot writer. Nothing here knows struct state (see
 * state_int.h for where this sits).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/util.h"
#include "state_int.h"

/* ---- open addressing, shared by both hash sets ---- */

struct oa_ops {
	size_t size;                                      /* bytes a slot */
	bool (*used)(const void *slot);
	size_t (*home)(const void *slot, size_t mask);    /* where a probe for it starts */
};

/*
 * A table twice the size of old (first slots when there is none) holding
 * old's entries; *ret_cap is its size. NULL when out of memory.
 */
static void *
oa_rehash(const void *old, size_t cap, size_t first, const struct oa_ops *ops, size_t *ret_cap)
{
	size_t ncap = cap ? cap * 2 : first, mask = ncap - 1;
	const char *o = old;
	char *n;

	if (ncap < cap || ncap > SIZE_MAX / ops->size)
		return NULL;
	n = calloc(ncap, ops->size);
	if (!n)
		return NULL;
	for (size_t i = 0; i < cap; i++) {
		const char *sl = o + i * ops->size;
		size_t j;

		if (!ops->used(sl))
			continue;
		for (j = ops->home(sl, mask); ops->used(n + j * ops->size); j = (j + 1) & mask)
			;
		memcpy(n + j * ops->size, sl, ops->size);
	}
	*ret_cap = ncap;
	return n;
}

/* Backward-shift deletion of slot i: no tombstones, so lookups never slow down. */
static void
oa_delete(void *slots, size_t cap, size_t i, const struct oa_ops *ops)
{
	char *p = slots;
	size_t mask = cap - 1;

	for (size_t j = (i + 1) & mask; ops->used(p + j * ops->size); j = (j + 1) & mask) {
		size_t k = ops->home(p + j * ops->size, mask);
		bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);

		if (stays)
			continue;
		memcpy(p + i * ops->size, p + j * ops->size, ops->size);
		i = j;
	}
	memset(p + i * ops->size, 0, ops->size);
}

/* ---- string hash set ---- */

static uint32_t
kv_hash(const char *key)
{
	return util_fnv1a(key, strlen(key));
}

static bool
kv_used(const void *slot)
{
	return ((const struct kv_slot *)slot)->key != NULL;
}

static size_t
kv_home(const void *slot, size_t mask)
{
	return ((const struct kv_slot *)slot)->hash & mask;
}

static const struct oa_ops kv_ops = { sizeof(struct kv_slot), kv_used, kv_home };

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

struct kv_slot *
st_kv_get(const struct kv_set *set, const char *key)
{
	return kv_find(set, key, kv_hash(key));
}

int
st_kv_insert(struct kv_set *set, const char *key, int64_t when, struct kv_slot **ret_slot,
	     bool *ret_added)
{
	uint32_t h = kv_hash(key);
	struct kv_slot *sl = kv_find(set, key, h);
	size_t i;

	if (sl) {
		*ret_slot = sl;
		*ret_added = false;
		return 0;
	}
	/*
	 * The load may reach 7/8: a probe compares the stored hash before the
	 * key, so a longer run costs little, while the table is most of a
	 * large POP3 state (100 000 keys fit 2^17 slots, not 2^18).
	 */
	if ((set->count + 1) * 8 > set->cap * 7) {
		struct kv_slot *slots = oa_rehash(set->slots, set->cap, 64, &kv_ops, &set->cap);

		if (!slots)
			return -ENOMEM;
		free(set->slots);
		set->slots = slots;
	}
	for (i = h & (set->cap - 1); set->slots[i].key; i = (i + 1) & (set->cap - 1))
		;
	sl = &set->slots[i];
	sl->key = strdup(key);
	if (!sl->key)
		return -ENOMEM;
	sl->hash = h;
	sl->when = when;
	sl->size1 = 0;
	set->count++;
	*ret_slot = sl;
	*ret_added = true;
	return 0;
}

bool
st_kv_remove(struct kv_set *set, const char *key)
{
	struct kv_slot *sl = st_kv_get(set, key);

	if (!sl)
		return false;
	free(sl->key);
	oa_delete(set->slots, set->cap, (size_t)(sl - set->slots), &kv_ops);
	set->count--;
	return true;
}

void
st_kv_free(struct kv_set *set)
{
	for (size_t i = 0; i < set->cap; i++)
		free(set->slots[i].key);
	free(set->slots);
	memset(set, 0, sizeof(*set));
}

/* ---- 64-bit hash set ---- */

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
fp_used(const void *slot)
{
	return *(const uint64_t *)slot != 0;
}

static size_t
fp_home(const void *slot, size_t mask)
{
	return fp_slot(*(const uint64_t *)slot, mask);
}

static const struct oa_ops fp_ops = { sizeof(uint64_t), fp_used, fp_home };

/* Where fp is, or the empty slot that ends its probe run; the table must not be empty. */
static size_t
fp_probe(const struct fp_set *set, uint64_t fp)
{
	size_t mask = set->cap - 1, i;

	for (i = fp_slot(fp, mask); set->slots[i] && set->slots[i] != fp; i = (i + 1) & mask)
		;
	return i;
}

bool
st_fp_has(const struct fp_set *set, uint64_t fp)
{
	return set->cap && fp && set->slots[fp_probe(set, fp)] == fp;
}

/*
 * The load may reach 7/8, not 3/4 as for keys: a slot is only 8 bytes, so
 * even a long probe run stays within a few cache lines, and the table is
 * most of a big folder's memory.
 */
int
st_fp_reserve(struct fp_set *set)
{
	uint64_t *slots;

	if ((set->count + 1) * 8 <= set->cap * 7)
		return 0;
	slots = oa_rehash(set->slots, set->cap, 16, &fp_ops, &set->cap);
	if (!slots)
		return -ENOMEM;
	free(set->slots);
	set->slots = slots;
	return 0;
}

bool
st_fp_add(struct fp_set *set, uint64_t fp)
{
	size_t i = fp_probe(set, fp);

	if (set->slots[i])
		return false;
	set->slots[i] = fp;
	set->count++;
	return true;
}

bool
st_fp_del(struct fp_set *set, uint64_t fp)
{
	size_t i;

	if (set->cap == 0 || fp == 0)
		return false;
	i = fp_probe(set, fp);
	if (!set->slots[i])
		return false;
	oa_delete(set->slots, set->cap, i, &fp_ops);
	set->count--;
	return true;
}

void
st_fp_free(struct fp_set *set)
{
	free(set->slots);
	memset(set, 0, sizeof(*set));
}

/* ---- UID range set ---- */

/* Index of the first range ending at or after uid; nranges when none does. */
static size_t
range_find(const struct uid_set *set, uint32_t uid)
{
	size_t lo = 0, hi = set->nranges;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (set->ranges[mid].hi < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool
st_uids_has(const struct uid_set *set, uint32_t uid)
{
	size_t i = range_find(set, uid);

	return i < set->nranges && set->ranges[i].lo <= uid;
}

int
st_uids_reserve(struct uid_set *set)
{
	size_t cap = set->cap ? set->cap * 2 : 4;
	struct uid_range *p;

	if (set->nranges < set->cap)
		return 0;
	if (cap < set->cap || cap > SIZE_MAX / sizeof(*p))
		return -ENOMEM;
	p = realloc(set->ranges, cap * sizeof(*p));
	if (!p)
		return -ENOMEM;
	set->ranges = p;
	set->cap = cap;
	return 0;
}

/* Opens a gap of one range at i, or closes the one there (by < 0). */
static void
range_shift(struct uid_set *set, size_t i, int by)
{
	struct uid_range *r = set->ranges;

	if (by > 0) {
		memmove(&r[i + 1], &r[i], (set->nranges - i) * sizeof(*r));
		set->nranges++;
	} else {
		memmove(&r[i], &r[i + 1], (set->nranges - i - 1) * sizeof(*r));
		set->nranges--;
	}
}

bool
st_uids_add(struct uid_set *set, uint32_t uid)
{
	struct uid_range *r = set->ranges;
	size_t i = range_find(set, uid), n = set->nranges;
	bool left, right;

	if (i < n && r[i].lo <= uid)
		return false;
	/* r[i - 1].hi < uid < r[i].lo, so neither side overflows. */
	left = i > 0 && r[i - 1].hi + 1 == uid;
	right = i < n && r[i].lo - 1 == uid;
	if (left && right) {
		r[i - 1].hi = r[i].hi;
		range_shift(set, i, -1);
	} else if (left) {
		r[i - 1].hi = uid;
	} else if (right) {
		r[i].lo = uid;
	} else {
		range_shift(set, i, 1);
		r[i].lo = uid;
		r[i].hi = uid;
	}
	set->count++;
	return true;
}

int
st_uids_del(struct uid_set *set, uint32_t uid)
{
	size_t i = range_find(set, uid);
	struct uid_range *r;

	if (i == set->nranges || set->ranges[i].lo > uid)
		return 0;
	if (set->ranges[i].lo < uid && uid < set->ranges[i].hi && st_uids_reserve(set) < 0)
		return -ENOMEM;
	r = set->ranges;
	if (r[i].lo == r[i].hi) {
		range_shift(set, i, -1);
	} else if (uid == r[i].lo) {
		r[i].lo++;
	} else if (uid == r[i].hi) {
		r[i].hi--;
	} else {
		range_shift(set, i, 1);
		r[i].hi = uid - 1;
		r[i + 1].lo = uid + 1;
	}
	set->count--;
	return 1;
}

/* Appends [lo, hi] read from a snapshot, where ranges come in increasing order. */
static int
range_append(struct uid_set *set, uint64_t lo, uint64_t hi)
{
	struct uid_range *last = set->nranges ? &set->ranges[set->nranges - 1] : NULL;

	if (lo == 0 || lo > hi || hi > UINT32_MAX || (last && lo <= last->hi))
		return -EBADMSG;
	set->count += hi - lo + 1;
	if (last && lo == (uint64_t)last->hi + 1) {
		last->hi = (uint32_t)hi;
		return 0;
	}
	if (st_uids_reserve(set) < 0)
		return -ENOMEM;
	set->ranges[set->nranges].lo = (uint32_t)lo;
	set->ranges[set->nranges].hi = (uint32_t)hi;
	set->nranges++;
	return 0;
}

int
st_uids_parse(struct uid_set *set, const char *s)
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
		r = range_append(set, lo, hi);
		if (r < 0 || !end)
			return r;
		s = end + 1;
	}
}

int
st_uids_foreach(const struct uid_set *set, int (*cb)(void *ud, uint32_t uid), void *ud)
{
	for (size_t i = 0; i < set->nranges; i++) {
		/* 64-bit, so a range ending at UINT32_MAX still ends the loop. */
		for (uint64_t u = set->ranges[i].lo; u <= set->ranges[i].hi; u++) {
			int r = cb(ud, (uint32_t)u);

			if (r != 0)
				return r;
		}
	}
	return 0;
}

void
st_uids_clear(struct uid_set *set)
{
	free(set->ranges);
	memset(set, 0, sizeof(*set));
}

/* ---- Maildir info letters ---- */

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

int64_t
st_flags_parse(const char *flags)
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

/* Upper case first, as the Maildir spec wants them. */
size_t
st_flags_format(int64_t set, char *out)
{
	size_t n = 0;

	for (int b = 0; b < STATE_FLAGS_MAX; b++)
		if (set & ((int64_t)1 << b))
			out[n++] = (char)(b < 26 ? 'A' + b : 'a' + (b - 26));
	out[n] = '\0';
	return n;
}

/* ---- buffers and escaping ---- */

int
st_dbuf_reserve(struct dbuf *b, size_t more)
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

void
st_dbuf_put(struct dbuf *b, const char *s, size_t len)
{
	memcpy(b->p + b->len, s, len);
	b->len += len;
}

void
st_dbuf_put_i64(struct dbuf *b, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)v);

	st_dbuf_put(b, tmp, (size_t)n);
}

void
st_dbuf_put_u64(struct dbuf *b, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);

	st_dbuf_put(b, tmp, (size_t)n);
}

void
st_dbuf_put_fp(struct dbuf *b, uint64_t fp)
{
	static const char hex[] = "0123456789abcdef";

	for (int shift = 60; shift >= 0; shift -= 4)
		b->p[b->len++] = hex[(fp >> shift) & 15];
}

static bool
esc_needed(unsigned char c)
{
	return c <= 0x20 || c == '%' || c >= 0x7f;
}

size_t
st_esc_max(const char *s)
{
	return strlen(s) * 3;
}

void
st_dbuf_put_esc(struct dbuf *b, const char *s)
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

void
st_dbuf_put_name(struct dbuf *b, const char *s)
{
	if (s)
		st_dbuf_put_esc(b, s);
	else
		st_dbuf_put(b, "-", 1);
}

void
st_dbuf_put_tagged(struct dbuf *b, char tag, const char *s)
{
	char head[2] = { tag, ' ' };

	st_dbuf_put(b, head, 2);
	st_dbuf_put_esc(b, s);
}

/* A raw byte we would have escaped can only come from damage. */
int
st_unescape(char *s)
{
	char *o = s;

	for (const char *p = s; *p; p++) {
		if (*p != '%') {
			if (esc_needed((unsigned char)*p))
				return -EBADMSG;
			*o++ = *p;
			continue;
		}
		int hi = util_hex_value(p[1]), lo = hi < 0 ? -1 : util_hex_value(p[2]);

		if (lo < 0 || (hi == 0 && lo == 0))
			return -EBADMSG;
		*o++ = (char)(hi << 4 | lo);
		p += 2;
	}
	*o = '\0';
	return 0;
}

int
st_parse_i64(const char *s, int64_t *ret)
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

int
st_parse_u32(const char *s, uint32_t *ret)
{
	uint64_t v;

	if (util_parse_u64(s, strlen(s), &v) < 0 || v > UINT32_MAX)
		return -EBADMSG;
	*ret = (uint32_t)v;
	return 0;
}

/* 0 stands for "none" and is never written. */
int
st_parse_fp(const char *s, size_t len, uint64_t *ret)
{
	uint64_t v = 0;

	if (len != 16)
		return -EBADMSG;
	for (size_t i = 0; i < len; i++) {
		int d = util_hex_value(s[i]);

		if (d < 0)
			return -EBADMSG;
		v = v << 4 | (uint64_t)d;
	}
	if (v == 0)
		return -EBADMSG;
	*ret = v;
	return 0;
}

int
st_split_fields(char *line, char **f, int n)
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

/* A tag is one character; st_split_fields() already made it a string. */
bool
st_is_tag(const char *field)
{
	return field[0] && !field[1];
}

/* ---- snapshot writer and errors ---- */

int
st_snap_reserve(struct snap *w, size_t more)
{
	if (w->b.len >= STATE_FLUSH_SIZE) {
		int r = util_write_all(w->fd, w->b.p, w->b.len);

		if (r < 0)
			return r;
		w->b.len = 0;
	}
	return st_dbuf_reserve(&w->b, more);
}

/* Each step's room also leaves room for the final '\n'. */
int
st_snap_uids(struct snap *w, const struct uid_set *set, char cont, const char *s, size_t room)
{
	size_t used = 0;

	for (size_t i = 0; i < set->nranges; i++) {
		const struct uid_range *rg = &set->ranges[i];
		size_t before;
		int r = st_snap_reserve(w, room);

		if (r < 0)
			return r;
		if (used >= SNAP_LINE_ITEMS) {
			st_dbuf_put(&w->b, "\n", 1);
			st_dbuf_put_tagged(&w->b, cont, s);
			st_dbuf_put(&w->b, " ", 1);
			used = 0;
		} else if (i > 0) {
			st_dbuf_put(&w->b, ",", 1);
		}
		before = w->b.len;
		st_dbuf_put_u64(&w->b, rg->lo);
		if (rg->hi != rg->lo) {
			st_dbuf_put(&w->b, "-", 1);
			st_dbuf_put_u64(&w->b, rg->hi);
		}
		used += w->b.len - before + 1;
	}
	st_dbuf_put(&w->b, "\n", 1);
	return 0;
}

int
st_fail(struct mp_err *err, int code, const char *what, const char *path)
{
	if (code == -ENOMEM)
		return mp_err_oom(err);
	return mp_err_set(err, code, MP_EX_IOERR, "%s %s: %s", what, path, strerror(-code));
}
