/*
 * What the parts of the state store share; not for other modules (they
 * include "mailpull/state.h").
 *
 * The store is five files, each calling only the ones below it, so no
 * two of them call each other:
 *
 *   state.c       the store: open, lock, load (snapshot, then journal, with
 *                 its version line), sync, compact, close, forget a name
 *     |  calls the record modules directly to apply a loaded line, write
 *     |  their part of a snapshot, forget a record, free what they hold
 *     v
 *   state_pop3.c  POP3 keys (UIDLs) with time and size
 *   state_imap.c  IMAP folders: UIDVALIDITY, UIDNEXT, UIDs, fingerprints,
 *                 skipped UIDs
 *   state_send.c  send records of the outbox's messages
 *     |  record their Maildir names, journal their changes
 *     v
 *   state_name.c  the Maildir names recorded since the last compaction,
 *                 their owners and info flags; the write gate and journal
 *                 buffer every change passes through
 *     |
 *     v
 *   state_set.c   generic containers (string hash set, 64-bit hash set,
 *                 UID range set), the line codec (escaping, fields,
 *                 numbers), the buffered snapshot writer, st_fail()
 *
 * The record modules never call back into state.c: whatever a change
 * needs (the journal buffer, the sticky error of a failed sync) lives in
 * struct state, which they reach through this header, and the helpers
 * that guard it are in state_name.c. Non-static names here start with
 * st_ so they cannot meet another module's.
 */
#ifndef MAILPULL_STATE_INT_H
#define MAILPULL_STATE_INT_H

#include <sys/types.h>

#include "mailpull/common.h"
#include "mailpull/err.h"
#include "mailpull/state.h"

/*
 * The snapshot's first line: version 2 when it holds send records (which
 * version 1 readers would call damage), else version 1, which every
 * mailpull reads. Both are read.
 */
#define STATE_HEADER "mailpull-state 1"
#define STATE_HEADER_SEND "mailpull-state 2"
/*
 * The journal's first line is JOURNAL_MAGIC, a space and a version
 * number; journals written before it existed have none and are read as
 * version 1. A higher version is refused rather than misread. Version 2
 * adds send records ("O"): a journal is written as version 1 until the
 * first send record is synced into it, which rewrites it as version 2
 * first (see state.c), so an older mailpull refuses it by its version
 * line instead of misreading it.
 */
#define JOURNAL_MAGIC "mailpull-journal"
#define JOURNAL_VERSION 2
#define JOURNAL_VERSION_SEND 2
#define JOURNAL_HEADER JOURNAL_MAGIC " 1"
#define JOURNAL_HEADER_SEND JOURNAL_MAGIC " 2"
#define STATE_FLUSH_SIZE (64 * 1024)
/* Bytes of ranges or fingerprints on one snapshot line before the next starts. */
#define SNAP_LINE_ITEMS 4000

/* ---- state_set.c: containers ---- */

/* String -> (int64, uint64): open addressing, linear probing; an empty slot has key == NULL. */
struct kv_slot {
	char *key;
	uint32_t hash;
	int64_t when;                     /* the value: a time, an index, a flag set */
	uint64_t size1;                   /* POP3 keys: LISTed size + 1; 0 when not known */
};

struct kv_set {
	struct kv_slot *slots;
	size_t cap;                       /* 0 or a power of two */
	size_t count;
};

/* The slot of key; NULL when absent. */
struct kv_slot *st_kv_get(const struct kv_set *set, const char *key);
/*
 * Inserts key (copied) with value when unless present. *ret_slot is the
 * key's slot either way, *ret_added tells which. -ENOMEM.
 */
int st_kv_insert(struct kv_set *set, const char *key, int64_t when, struct kv_slot **ret_slot,
		 bool *ret_added) MP_WUR;
/* Removes key; whether it was there. */
bool st_kv_remove(struct kv_set *set, const char *key);
void st_kv_free(struct kv_set *set);

/* 64-bit values but 0: open addressing, linear probing; an empty slot holds 0. */
struct fp_set {
	uint64_t *slots;
	size_t cap;                       /* 0 or a power of two */
	size_t count;
};

bool st_fp_has(const struct fp_set *set, uint64_t fp);
/* Makes room for one more value. -ENOMEM. */
int st_fp_reserve(struct fp_set *set) MP_WUR;
/* Adds fp (not 0) after st_fp_reserve(); whether it was new. */
bool st_fp_add(struct fp_set *set, uint64_t fp);
/* Removes fp; whether it was there. */
bool st_fp_del(struct fp_set *set, uint64_t fp);
void st_fp_free(struct fp_set *set);

struct uid_range {
	uint32_t lo, hi;
};

/* UIDs as ranges: a folder fetched in order is one range. */
struct uid_set {
	struct uid_range *ranges;         /* sorted, disjoint, never touching */
	size_t nranges, cap;
	uint64_t count;                   /* UIDs in all ranges */
};

bool st_uids_has(const struct uid_set *set, uint32_t uid);
/* Makes room for one more range. -ENOMEM. */
int st_uids_reserve(struct uid_set *set) MP_WUR;
/* Adds uid after st_uids_reserve(), merging touching ranges; whether it was new. */
bool st_uids_add(struct uid_set *set, uint32_t uid);
/* Removes uid: 1 removed, 0 absent, -ENOMEM (splitting a range). */
int st_uids_del(struct uid_set *set, uint32_t uid) MP_WUR;
/* Appends "1-500,502,510-900" (increasing, after what is there). -EBADMSG, -ENOMEM. */
int st_uids_parse(struct uid_set *set, const char *s) MP_WUR;
/* Calls cb for every UID in increasing order; stops when cb returns non-zero and returns that. */
int st_uids_foreach(const struct uid_set *set, int (*cb)(void *ud, uint32_t uid), void *ud);
/* Empties the set. */
void st_uids_clear(struct uid_set *set);

/* ---- state_set.c: Maildir info letters as a bit set ---- */

/* "FS" -> bit set; 0 for "", -1 when a character is not a letter. */
int64_t st_flags_parse(const char *flags);
/* The letters of set in ASCII order into out (STATE_FLAGS_MAX + 1 bytes); their number. */
size_t st_flags_format(int64_t set, char *out);

/* ---- state_set.c: the line codec ---- */

/* A growing byte buffer; callers reserve, then the puts cannot fail. */
struct dbuf {
	char *p;
	size_t len, cap;
};

int st_dbuf_reserve(struct dbuf *b, size_t more) MP_WUR;
void st_dbuf_put(struct dbuf *b, const char *s, size_t len);
void st_dbuf_put_i64(struct dbuf *b, int64_t v);
void st_dbuf_put_u64(struct dbuf *b, uint64_t v);
/* fp as 16 hex digits. */
void st_dbuf_put_fp(struct dbuf *b, uint64_t fp);
/* s escaped (%XX for control bytes, space, '%', DEL, bytes >= 0x80). */
void st_dbuf_put_esc(struct dbuf *b, const char *s);
/* s escaped, or "-" for NULL (no name). */
void st_dbuf_put_name(struct dbuf *b, const char *s);
/* "<tag> <escaped s>": the start of every folder record and of G lines. */
void st_dbuf_put_tagged(struct dbuf *b, char tag, const char *s);
/* Worst case bytes st_dbuf_put_esc() appends for s. */
size_t st_esc_max(const char *s);

/*
 * Decodes s in place. -EBADMSG on a bad escape, an escaped NUL, or a byte
 * that should have been escaped.
 */
int st_unescape(char *s) MP_WUR;
/* Splits line at single spaces into exactly n non-empty fields. -EBADMSG. */
int st_split_fields(char *line, char **f, int n) MP_WUR;
/* Whether a field is a one-character tag. */
bool st_is_tag(const char *field);
int st_parse_i64(const char *s, int64_t *ret) MP_WUR;
int st_parse_u32(const char *s, uint32_t *ret) MP_WUR;
/* Exactly 16 hex digits, not all 0. -EBADMSG. */
int st_parse_fp(const char *s, size_t len, uint64_t *ret) MP_WUR;

/* ---- state_set.c: the snapshot writer ---- */

/* Buffered writes to fd, flushed every STATE_FLUSH_SIZE bytes. */
struct snap {
	struct dbuf b;
	int fd;
};

/* Makes room for more bytes, writing the buffer out once it is full. -EIO, -ENOSPC, -ENOMEM. */
int st_snap_reserve(struct snap *w, size_t more) MP_WUR;
/*
 * The ranges of set after what the line holds, a line break and a new
 * "<cont> <s> " head every SNAP_LINE_ITEMS bytes, then '\n'. room is what
 * one step needs: a line break, a line head and one range.
 */
int st_snap_uids(struct snap *w, const struct uid_set *set, char cont, const char *s,
		 size_t room) MP_WUR;

/*
 * Records "<what> <path>: <strerror>" (MP_EX_IOERR), or "out of memory"
 * for -ENOMEM (MP_EX_TEMPFAIL). Returns code.
 */
int st_fail(struct mp_err *err, int code, const char *what, const char *path);

/* ---- state_send.c: send records ---- */

/* A snapshot or journal "O" line. -EBADMSG, -ENOMEM. */
int st_send_load(struct state *s, char *line) MP_WUR;
/* Every send record's snapshot line. Errors of st_snap_reserve(). */
int st_send_snapshot(struct snap *w, const struct state *s) MP_WUR;
/* Frees every send record. */
void st_send_free(struct state *s);

/* ---- the state ---- */

/*
 * The record a Maildir name was written for: id is "k<key>" (POP3) or
 * "u<uidvalidity> <uid> <fp> <folder>" (IMAP), unique per record. latest is
 * the last name recorded for it: an older name was superseded (the
 * message was forgotten and fetched again) and speaks for nothing.
 */
struct name_owner {
	const char *id;                   /* owner_ix's key */
	const char *latest;               /* names' key; NULL when none */
};

struct folder;

/* An outbox message's send record (state_send.c). */
struct send_rec {
	char *base;
	enum state_send st;
	char *text;                       /* "" when none */
};

struct state {
	char *dir;
	char *account;
	char *state_path;
	char *new_path;
	char *journal_path;
	char *journal_new_path;           /* the journal rewritten as version 2 */
	char *lock_path;
	int lock_fd;
	int journal_fd;
	off_t journal_len;                /* bytes known to be whole records */
	off_t journal_base;               /* bytes of the version line; 0 when it has none */
	unsigned journal_version;         /* of the open journal (1 when it has no line) */
	int broken;                       /* sticky error after a failed fsync */
	bool interrupted;                 /* names were loaded: no compaction since */
	struct kv_set keys;               /* key -> first fetch time */
	struct kv_set names;              /* Maildir name -> owner index + 1, since compaction */
	struct kv_set name_flags;         /* Maildir name -> info letters as a bit set (G lines) */
	struct name_owner *owners;        /* who each recorded name was recorded for */
	size_t nowners, ocap;
	struct kv_set owner_ix;           /* owner id -> index in owners */
	struct dbuf pending;              /* journal lines not yet written */
	struct folder **folders;          /* sorted by name (strcmp) */
	size_t nfolders, fcap;
	struct send_rec *sends;           /* sorted by base (strcmp) */
	size_t nsends, scap;
	bool send_pending;                /* pending holds send records */
};

/* ---- state_name.c: recorded names, and what every change passes through ---- */

/* The error of an earlier failed sync, if any: after it nothing may change. */
int st_writable(struct state *s, struct mp_err *err) MP_WUR;
/* st_fail() for a change that could not be recorded (r is its error). */
int st_record_fail(struct state *s, int r, struct mp_err *err);
/* Room for more bytes of journal lines; st_record_fail() when there is none. */
int st_reserve(struct state *s, size_t more, struct mp_err *err) MP_WUR;
/* -EINVAL for a Maildir name that is empty or "-" ("no name" in the journal); NULL is fine. */
int st_check_name(struct state *s, const char *maildir_name, struct mp_err *err) MP_WUR;
/* Records name as delivered for the record id (see struct name_owner). -ENOMEM. */
int st_name_insert(struct state *s, const char *name, const char *id) MP_WUR;
/* The record id name was last delivered for; NULL when none or superseded. */
const char *st_name_owner(const struct state *s, const char *name);
/* Journal "G <maildir_name> <flags>". -EBADMSG, -ENOMEM. */
int st_name_load_flags(struct state *s, char *line) MP_WUR;
/* Forgets every recorded name, owner and flag set (at compaction and close). */
void st_names_clear(struct state *s);

/* ---- state_pop3.c: keys ---- */

/* A snapshot "<when> <key>" or "L <when> <key> <size>" line. -EBADMSG, -ENOMEM. */
int st_pop3_load_snapshot(struct state *s, char *line) MP_WUR;
/* A journal "+", "-" or "L" line. -EBADMSG, -ENOMEM. */
int st_pop3_load_journal(struct state *s, char *line) MP_WUR;
/* Every key's snapshot line. Errors of st_snap_reserve(). */
int st_pop3_snapshot(struct snap *w, const struct state *s) MP_WUR;
/* Forgets key (owner id "k<key>" without its 'k'): 1 forgotten, 0 not there, or an error. */
int st_pop3_forget(struct state *s, const char *key, struct mp_err *err) MP_WUR;

/* ---- state_imap.c: folders ---- */

/* Whether a line starting with c is a folder record of the snapshot or the journal. */
bool st_imap_is_record(char c, bool journal);
/* A snapshot "F", "R", "P" or "S" line. -EBADMSG, -ENOMEM. */
int st_imap_load_snapshot(struct state *s, char *line) MP_WUR;
/* A journal "V", "N", "U", "E", "X", "D", "S" or "T" line. -EBADMSG, -ENOMEM. */
int st_imap_load_journal(struct state *s, char *line) MP_WUR;
/* Every folder's snapshot lines. Errors of st_snap_reserve(). */
int st_imap_snapshot(struct snap *w, const struct state *s) MP_WUR;
/*
 * Forgets the message of owner id "u..." (without its 'u'), unless its
 * folder moved to another UIDVALIDITY or lost the UID already: 1
 * forgotten, 0 not, or an error.
 */
int st_imap_forget(struct state *s, const char *id, struct mp_err *err) MP_WUR;
/* Frees every folder. */
void st_imap_free(struct state *s);

#endif
