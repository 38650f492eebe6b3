/*
 * Per-account state: which messages were fetched (by key: the POP3 UIDL,
 * later IMAP folder/UIDVALIDITY/UID) and when, plus the Maildir names
 * recorded since the last compaction (for start-up recovery).
 *
 * Files in dir, for account NAME (escaped for the file system):
 *   NAME.state    snapshot, replaced atomically (.new, fsync, rename, fsync dir)
 *   NAME.journal  append-only log of changes since the snapshot
 *   NAME.lock     flock()ed while a run works on the account
 * Changes are buffered by state_add()/state_remove() and made durable, in
 * one write and one fdatasync, by state_sync(). A torn last journal line
 * (crash mid-write) is ignored on load.
 */
#ifndef MAILPULL_STATE_H
#define MAILPULL_STATE_H

#include "mailpull/common.h"
#include "mailpull/err.h"

struct state;

/*
 * Creates dir (0700) when missing, takes the account's lock (waiting when
 * wait is true), loads the snapshot and replays the journal.
 * Errors: -EAGAIN (another process holds the lock; err->msg says so),
 * -EBADMSG (corrupt state file, err->msg names file and line), -EACCES,
 * -EIO, -ENOMEM.
 */
int state_open(const char *dir, const char *account, bool wait, struct state **ret,
	       struct mp_err *err) MP_WUR;

/* Whether key was recorded; when so and ret_when is not NULL, its time. */
bool state_has(const struct state *s, const char *key, int64_t *ret_when);

/* Number of keys recorded. */
size_t state_count(const struct state *s);

/*
 * Records key as fetched at time when (Unix seconds), delivered as
 * maildir_name (may be NULL). Buffered until state_sync(). Keys are
 * arbitrary bytes except NUL. Re-adding a key keeps the first time.
 */
int state_add(struct state *s, const char *key, int64_t when, const char *maildir_name,
	      struct mp_err *err) MP_WUR;

/*
 * The size recorded with key by state_add_sized() (POP3: the LISTed size
 * when it was fetched). False when key is not recorded or has no size
 * (recorded before sizes were kept).
 */
bool state_get_size(const struct state *s, const char *key, uint64_t *ret_size);

/*
 * state_add() that also records size with key (replacing the size an
 * existing key had); state_remove() forgets both. Errors as state_add(),
 * and -EINVAL for size UINT64_MAX.
 */
int state_add_sized(struct state *s, const char *key, int64_t when, uint64_t size,
		    const char *maildir_name, struct mp_err *err) MP_WUR;

/* Forgets key (deleted on the server). Buffered until state_sync(). */
int state_remove(struct state *s, const char *key, struct mp_err *err) MP_WUR;

/* Writes buffered changes to the journal and fdatasyncs it. -EIO, -ENOSPC. */
int state_sync(struct state *s, struct mp_err *err) MP_WUR;

/* Whether maildir_name was recorded by state_add() since the last compaction. */
bool state_name_recorded(const struct state *s, const char *maildir_name);

/* Most Maildir info letters a name can carry: A-Z and a-z, each once. */
#define STATE_FLAGS_MAX 52

/*
 * Records the Maildir info letters (as "FS") maildir_name is to be
 * published with, so that start-up recovery can publish it into cur/ with
 * them if a crash comes between recording and publishing. Call it before
 * the call that records the name (state_uid_add()), so the journal never
 * holds the name without its flags. NULL or "" records nothing. Buffered
 * until state_sync(); forgotten at the next compaction.
 * Errors: -EINVAL (empty name, "-", a flag that is not a letter), -ENOMEM,
 * or the error of an earlier failed state_sync().
 */
int state_name_set_flags(struct state *s, const char *maildir_name, const char *flags,
			 struct mp_err *err) MP_WUR;

/*
 * Writes the info letters recorded for maildir_name (in ASCII order, as
 * the Maildir spec wants them) to ret_flags and returns their number;
 * 0 and "" when none were recorded.
 */
size_t state_name_flags(const struct state *s, const char *maildir_name,
			char ret_flags[STATE_FLAGS_MAX + 1]);

/*
 * Calls cb for every Maildir name recorded since the last compaction;
 * stops as state_foreach(). cb must not change the state.
 */
int state_name_foreach(const struct state *s, int (*cb)(void *ud, const char *name), void *ud);

/*
 * Forgets the record maildir_name was delivered for (its key; or its UID,
 * its fingerprint, and the folder's UIDNEXT, so that the next poll lists
 * the folder whole):
 * the file is gone, so the message must be fetched again, not deleted on
 * the server. A name recorded again since under another name, or whose
 * record is already gone, forgets nothing. Returns 1 when a record was
 * forgotten, 0 when none, or a negative error. Buffered until state_sync().
 */
int state_forget_name(struct state *s, const char *maildir_name, struct mp_err *err) MP_WUR;

/*
 * Whether the files loaded by state_open() held Maildir names: the last
 * run ended (crash or error) before its final compaction, so what it
 * published may not be durable yet.
 */
bool state_interrupted(const struct state *s);

/* Calls cb for every key; stops early when cb returns non-zero and returns that. */
int state_foreach(const struct state *s, int (*cb)(void *ud, const char *key, int64_t when), void *ud);

/*
 * Writes a new snapshot holding every key (without Maildir names), then
 * empties the journal. Call only when every recorded name is published.
 */
int state_compact(struct state *s, struct mp_err *err) MP_WUR;

/*
 * IMAP folders. Each folder (by its UTF-8 name) has a UIDVALIDITY, the
 * UIDNEXT seen at the end of the last complete poll (so a poll with nothing
 * new costs no FETCH), the set of fetched UIDs kept as ranges (a 100 000
 * message folder fetched in order is one range), and the fingerprints of
 * the fetched messages (a 64-bit hash of Message-ID and size) that let a
 * UIDVALIDITY change re-identify them instead of fetching them twice.
 * Changes are buffered and journaled like state_add(), made durable by
 * state_sync(), folded into the snapshot by state_compact().
 */

/* UIDVALIDITY and UIDNEXT recorded for folder (either out-param may be NULL); -ENOENT when none. */
int state_folder_get(const struct state *s, const char *folder, uint32_t *ret_uidvalidity,
		     uint32_t *ret_uidnext);

/*
 * Starts (or restarts, after a UIDVALIDITY change) folder at uidvalidity:
 * the UID set is emptied, the fingerprints kept, UIDNEXT set to 0.
 * Errors: -EINVAL (empty folder name, uidvalidity 0), -ENOMEM, or the
 * error of an earlier failed state_sync().
 */
int state_folder_reset(struct state *s, const char *folder, uint32_t uidvalidity,
		       struct mp_err *err) MP_WUR;

/*
 * Records the UIDNEXT seen after a complete poll; an unchanged value adds
 * nothing to the journal. Errors: -ENOENT (folder not started), -EINVAL,
 * -ENOMEM.
 */
int state_folder_set_uidnext(struct state *s, const char *folder, uint32_t uidnext,
			     struct mp_err *err) MP_WUR;

/* Whether uid was fetched in folder (under its current UIDVALIDITY). */
bool state_uid_has(const struct state *s, const char *folder, uint32_t uid);

/*
 * Records uid of folder as fetched, delivered as maildir_name (may be
 * NULL; when given, state_name_recorded() knows it until the next
 * compaction), with fingerprint fp (0: none). The folder must exist.
 * Errors: -ENOENT (folder not started), -EINVAL (uid 0, empty folder or
 * Maildir name, name "-"), -ENOMEM.
 */
int state_uid_add(struct state *s, const char *folder, uint32_t uid, uint64_t fp,
		  const char *maildir_name, struct mp_err *err) MP_WUR;

/*
 * Forgets uid (expunged on the server); the fingerprint stays. A uid not
 * recorded is not an error. Errors: -ENOENT (folder not started),
 * -EINVAL, -ENOMEM.
 */
int state_uid_remove(struct state *s, const char *folder, uint32_t uid, struct mp_err *err) MP_WUR;

/* Whether a message with fingerprint fp was ever fetched from folder. */
bool state_fp_has(const struct state *s, const char *folder, uint64_t fp);

/*
 * Calls cb for every fetched UID of folder in increasing order; stops when
 * cb returns non-zero and returns that. cb must not change the state.
 */
int state_uid_foreach(const struct state *s, const char *folder,
		      int (*cb)(void *ud, uint32_t uid), void *ud);

/* Number of fetched UIDs in folder. */
size_t state_uid_count(const struct state *s, const char *folder);

/*
 * Skipped UIDs (DESIGN invariant 8): messages of folder passed over for a
 * reason (over max_size, flagged \Deleted, announced but left out of a
 * FETCH) that every poll looks at again, so the folder's UIDNEXT can move
 * past them. A UIDVALIDITY change (state_folder_reset()) empties the set;
 * compaction keeps it.
 *
 * state_skip_add() records uid as skipped; one already recorded adds
 * nothing. Errors: -ENOENT (folder not started), -EINVAL (uid 0, empty
 * folder), -ENOMEM, or the error of an earlier failed state_sync().
 * state_skip_remove() forgets uid (fetched, or gone from the server); one
 * not recorded is not an error. Errors: as state_skip_add(). Both are
 * buffered until state_sync().
 */
int state_skip_add(struct state *s, const char *folder, uint32_t uid, struct mp_err *err) MP_WUR;
int state_skip_remove(struct state *s, const char *folder, uint32_t uid,
		      struct mp_err *err) MP_WUR;

/* Whether uid is recorded as skipped in folder. */
bool state_skip_has(const struct state *s, const char *folder, uint32_t uid);

/* Calls cb for every skipped UID of folder in increasing order; stops as state_uid_foreach(). */
int state_skip_foreach(const struct state *s, const char *folder,
		       int (*cb)(void *ud, uint32_t uid), void *ud);

/* Number of skipped UIDs in folder. */
size_t state_skip_count(const struct state *s, const char *folder);

/*
 * Forgets a folder entirely, fingerprints included (it vanished from the
 * server). An unknown folder is not an error. Errors: -EINVAL, -ENOMEM.
 */
int state_folder_remove(struct state *s, const char *folder, struct mp_err *err) MP_WUR;

/* Calls cb for each folder name recorded, in strcmp() order; stops as state_foreach(). */
int state_folder_foreach(const struct state *s, int (*cb)(void *ud, const char *folder), void *ud);

/* The fingerprint of a message: 64-bit FNV-1a of "<message-id>\n<size>". */
uint64_t state_fingerprint(const char *message_id, size_t idlen, uint64_t size);

/* Releases the lock and frees. Buffered, unsynced changes are dropped. NULL-safe. */
void state_close(struct state *s);

#endif
