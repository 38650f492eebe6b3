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
 *
 * Errors are a negative errno, with err (when not NULL) filled with the
 * message and exit class. -ENOMEM is always possible where listed and is
 * always MP_EX_TEMPFAIL ("out of memory"). Once a state_sync() or
 * state_compact() failed to make the journal durable, every later change,
 * sync or compaction returns that same error again (MP_EX_IOERR): what was
 * written since cannot be trusted.
 */
#ifndef MAILPULL_STATE_H
#define MAILPULL_STATE_H

#include <stdlib.h>
#include <string.h>

#include "mailpull/common.h"
#include "mailpull/err.h"

/*
 * The file-system-safe form of an account name that the files above (and
 * the account's OAuth2 token file, config.h) are named after:
 * [A-Za-z0-9_-] and a '.' that is not first are kept, every other byte is
 * %XX (a leading '.' would hide the files and could spell ".."). malloc'd;
 * NULL on ENOMEM. Inline so that the configuration, which names the token
 * file, needs none of the state code (the config fuzzer links config.c
 * alone).
 */
static inline char *
state_escape_account(const char *account)
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

struct state;

/*
 * Creates dir (0700) when missing, takes the account's lock (waiting when
 * wait is true), loads the snapshot and replays the journal, and gives a
 * new or empty journal its version line. *ret is set only on success.
 * Errors: -EINVAL, MP_EX_CONFIG (empty dir or account; or a journal whose
 * version line is newer than this code reads: err->msg names the file);
 * -EAGAIN, MP_EX_TEMPFAIL (another process holds the lock; err->msg says
 * so); -EBADMSG, MP_EX_IOERR (corrupt state file; err->msg names file and
 * line); -EACCES, -EIO, -ENOSPC, -ENOTDIR, -EROFS or another errno of the
 * file system, MP_EX_IOERR; -ENOMEM.
 */
int state_open(const char *dir, const char *account, bool wait, struct state **ret,
	       struct mp_err *err) MP_WUR;

/* Whether key was recorded; when so and ret_when is not NULL, its time. No errors. */
bool state_has(const struct state *s, const char *key, int64_t *ret_when);

/* Number of keys recorded. No errors. */
size_t state_count(const struct state *s);

/*
 * Records key as fetched at time when (Unix seconds), delivered as
 * maildir_name (may be NULL). Buffered until state_sync(). Keys are
 * arbitrary bytes except NUL. Re-adding a key keeps the first time.
 * Errors: -EINVAL, MP_EX_IOERR (empty key, Maildir name "" or "-");
 * -ENOMEM; an earlier failed sync's error.
 */
int state_add(struct state *s, const char *key, int64_t when, const char *maildir_name,
	      struct mp_err *err) MP_WUR;

/*
 * The size recorded with key by state_add_sized() (POP3: the LISTed size
 * when it was fetched). False when key is not recorded or has no size
 * (recorded before sizes were kept). No errors.
 */
bool state_get_size(const struct state *s, const char *key, uint64_t *ret_size);

/*
 * state_add() that also records size with key (replacing the size an
 * existing key had); state_remove() forgets both. Errors as state_add(),
 * and -EINVAL, MP_EX_IOERR for size UINT64_MAX.
 */
int state_add_sized(struct state *s, const char *key, int64_t when, uint64_t size,
		    const char *maildir_name, struct mp_err *err) MP_WUR;

/*
 * Forgets key (deleted on the server); an unknown key is not an error.
 * Buffered until state_sync(). Errors: -EINVAL, MP_EX_IOERR (empty key);
 * -ENOMEM; an earlier failed sync's error.
 */
int state_remove(struct state *s, const char *key, struct mp_err *err) MP_WUR;

/*
 * Writes buffered changes to the journal and fdatasyncs it; nothing to
 * write costs nothing. The first send record written into a journal of
 * version 1 rewrites the journal as version 2 first (state.c says why).
 * Errors: -EIO, -ENOSPC, -EDQUOT or another errno of write(), fdatasync(),
 * or of the rewrite (open(), rename(), the directory's fsync), MP_EX_IOERR
 * (a failed write is taken back and may be retried, as may a rewrite that
 * failed before its rename; a failed fdatasync, or directory sync after
 * the rename, is final, see above); an earlier failed sync's error.
 */
int state_sync(struct state *s, struct mp_err *err) MP_WUR;

/*
 * Whether maildir_name was recorded by state_add() or state_uid_add()
 * since the last compaction. No errors.
 */
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
 * Errors: -EINVAL, MP_EX_IOERR (empty name, "-", a flag that is not a
 * letter); -ENOMEM; an earlier failed sync's error.
 */
int state_name_set_flags(struct state *s, const char *maildir_name, const char *flags,
			 struct mp_err *err) MP_WUR;

/*
 * Writes the info letters recorded for maildir_name (in ASCII order, as
 * the Maildir spec wants them) to ret_flags and returns their number;
 * 0 and "" when none were recorded. No errors.
 */
size_t state_name_flags(const struct state *s, const char *maildir_name,
			char ret_flags[STATE_FLAGS_MAX + 1]);

/*
 * Calls cb for every Maildir name recorded since the last compaction;
 * stops as state_foreach(). cb must not change the state; name is valid
 * during the call only. No errors of its own.
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
 * Errors: those of state_remove(), state_uid_remove() and
 * state_folder_set_uidnext() (-ENOMEM; an earlier failed sync's error).
 */
int state_forget_name(struct state *s, const char *maildir_name, struct mp_err *err) MP_WUR;

/*
 * Every Maildir name recorded so far is published and the journal that
 * records it synced: forgets the names, their owners and flags in memory,
 * as state_compact() does, but leaves the journal as it is, so start-up
 * recovery still finds them after a crash. Call it after each batch is
 * published, so a run's memory does not grow with the messages it
 * fetches; state_name_recorded(), state_name_flags(),
 * state_name_foreach() and state_forget_name() know none of them after.
 * No errors.
 */
void state_names_release(struct state *s);

/*
 * Whether the files loaded by state_open() held Maildir names: the last
 * run ended (crash or error) before its final compaction, so what it
 * published may not be durable yet. No errors.
 */
bool state_interrupted(const struct state *s);

/*
 * Calls cb for every key; stops early when cb returns non-zero and returns
 * that, else 0. cb must not change the state; key is valid during the call
 * only. No errors of its own.
 */
int state_foreach(const struct state *s, int (*cb)(void *ud, const char *key, int64_t when),
		  void *ud);

/*
 * Writes a new snapshot holding every key (without Maildir names), then
 * empties the journal down to its version line (a journal from before the
 * version line gets one). Call only when every recorded name is
 * published. Errors: -EIO, -ENOSPC, -EROFS, -EACCES or another errno of
 * the file system, MP_EX_IOERR (err->msg names the file; a failure before
 * the rename leaves the old snapshot and journal as they were, one while
 * emptying the journal is final, see above); -ENOMEM; an earlier failed
 * sync's error.
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

/*
 * UIDVALIDITY and UIDNEXT recorded for folder (either out-param may be
 * NULL). Errors: -ENOENT when the folder was never started (no err to fill).
 */
int state_folder_get(const struct state *s, const char *folder, uint32_t *ret_uidvalidity,
		     uint32_t *ret_uidnext);

/*
 * Starts (or restarts, after a UIDVALIDITY change) folder at uidvalidity:
 * the UID set is emptied, the fingerprints kept, UIDNEXT set to 0.
 * Errors: -EINVAL, MP_EX_IOERR (empty folder name, uidvalidity 0);
 * -ENOMEM; an earlier failed sync's error.
 */
int state_folder_reset(struct state *s, const char *folder, uint32_t uidvalidity,
		       struct mp_err *err) MP_WUR;

/*
 * Records the UIDNEXT seen after a complete poll; an unchanged value adds
 * nothing to the journal. Errors: -ENOENT, MP_EX_IOERR (folder not
 * started); -EINVAL, MP_EX_IOERR (empty folder name); -ENOMEM; an earlier
 * failed sync's error.
 */
int state_folder_set_uidnext(struct state *s, const char *folder, uint32_t uidnext,
			     struct mp_err *err) MP_WUR;

/* Whether uid was fetched in folder (under its current UIDVALIDITY). No errors. */
bool state_uid_has(const struct state *s, const char *folder, uint32_t uid);

/*
 * Records uid of folder as fetched, delivered as maildir_name (may be
 * NULL; when given, state_name_recorded() knows it until the next
 * compaction), with fingerprint fp (0: none). The folder must exist.
 * Errors: -ENOENT, MP_EX_IOERR (folder not started); -EINVAL, MP_EX_IOERR
 * (uid 0, empty folder or Maildir name, name "-"); -ENOMEM; an earlier
 * failed sync's error.
 */
int state_uid_add(struct state *s, const char *folder, uint32_t uid, uint64_t fp,
		  const char *maildir_name, struct mp_err *err) MP_WUR;

/*
 * Forgets uid (expunged on the server); the fingerprint stays. A uid not
 * recorded is not an error. Errors: -ENOENT, MP_EX_IOERR (folder not
 * started); -EINVAL, MP_EX_IOERR (empty folder name); -ENOMEM (splitting a
 * range); an earlier failed sync's error.
 */
int state_uid_remove(struct state *s, const char *folder, uint32_t uid, struct mp_err *err) MP_WUR;

/* Whether a message with fingerprint fp was ever fetched from folder. No errors. */
bool state_fp_has(const struct state *s, const char *folder, uint64_t fp);

/*
 * Calls cb for every fetched UID of folder in increasing order; stops when
 * cb returns non-zero and returns that, else 0. cb must not change the
 * state. No errors of its own.
 */
int state_uid_foreach(const struct state *s, const char *folder,
		      int (*cb)(void *ud, uint32_t uid), void *ud);

/* Number of fetched UIDs in folder; 0 for a folder never started. No errors. */
size_t state_uid_count(const struct state *s, const char *folder);

/*
 * Skipped UIDs (DESIGN invariant 8): messages of folder passed over for a
 * reason (over max_size, flagged \Deleted, announced but left out of a
 * FETCH) that every poll looks at again, so the folder's UIDNEXT can move
 * past them. A UIDVALIDITY change (state_folder_reset()) empties the set;
 * compaction keeps it.
 *
 * state_skip_add() records uid as skipped; one already recorded adds
 * nothing. Errors: -ENOENT, MP_EX_IOERR (folder not started); -EINVAL,
 * MP_EX_IOERR (uid 0, empty folder); -ENOMEM; an earlier failed sync's
 * error.
 * state_skip_remove() forgets uid (fetched, or gone from the server); one
 * not recorded is not an error. Errors: as state_skip_add(). Both are
 * buffered until state_sync().
 */
int state_skip_add(struct state *s, const char *folder, uint32_t uid, struct mp_err *err) MP_WUR;
int state_skip_remove(struct state *s, const char *folder, uint32_t uid,
		      struct mp_err *err) MP_WUR;

/* Whether uid is recorded as skipped in folder. No errors. */
bool state_skip_has(const struct state *s, const char *folder, uint32_t uid);

/*
 * Calls cb for every skipped UID of folder in increasing order; stops as
 * state_uid_foreach(). No errors of its own.
 */
int state_skip_foreach(const struct state *s, const char *folder,
		       int (*cb)(void *ud, uint32_t uid), void *ud);

/* Number of skipped UIDs in folder. No errors. */
size_t state_skip_count(const struct state *s, const char *folder);

/*
 * Forgets a folder entirely, fingerprints included (it vanished from the
 * server). An unknown folder is not an error. Errors: -EINVAL,
 * MP_EX_IOERR (empty folder name); -ENOMEM; an earlier failed sync's error.
 */
int state_folder_remove(struct state *s, const char *folder, struct mp_err *err) MP_WUR;

/*
 * Calls cb for each folder name recorded, in strcmp() order; stops as
 * state_foreach(). folder is valid during the call only. No errors of its own.
 */
int state_folder_foreach(const struct state *s, int (*cb)(void *ud, const char *folder), void *ud);

/* The fingerprint of a message: 64-bit FNV-1a of "<message-id>\n<size>". No errors. */
uint64_t state_fingerprint(const char *message_id, size_t idlen, uint64_t size);

/*
 * The outbox's send records (DESIGN invariant 7), keyed by the outbox
 * message's base name. No record means queued. Changes are buffered and
 * made durable by state_sync() like every other; the send run syncs each
 * one before it acts on it (submitting before MAIL FROM).
 */
enum state_send {
	STATE_SEND_QUEUED = 0,     /* no record: send it */
	STATE_SEND_SUBMITTING,     /* recorded before MAIL FROM; found after a crash: may have been sent */
	STATE_SEND_HELD,           /* a crash hit submitting: sent only after `send --retry-held` */
	STATE_SEND_RETRY,          /* the user released a held message: send it */
	STATE_SEND_ACCEPTED,       /* 250 to the final dot: the Sent copy is next */
	STATE_SEND_COPIED,         /* the Sent copy is done (or not wanted): the local copy and removal are next */
	STATE_SEND_FAILED,         /* refused for good (5xx); text says why; never sent again */
	STATE_SEND_MAX
};

/* "queued", "submitting", "held", "retry", "accepted", "copied", "failed"; "?" out of range. */
const char *state_send_to_string(enum state_send st);

/*
 * The record of base: its state (STATE_SEND_QUEUED when none) and, into
 * *ret_text when not NULL, its text (the server's refusal, the rejected
 * recipients; "" when none), valid until the next change. No errors.
 */
enum state_send state_send_get(const struct state *s, const char *base, const char **ret_text);

/*
 * Records base's new state, with an optional text (at most 400 bytes kept,
 * control bytes replaced). STATE_SEND_QUEUED removes the record (the
 * message is done or back in the queue). Errors: -EINVAL (base empty or
 * not a file name, state out of range), -ENOMEM, the sticky sync error.
 */
int state_send_set(struct state *s, const char *base, enum state_send st, const char *text,
		   struct mp_err *err) MP_WUR;

/* Calls cb for each record, in strcmp() order of base; stops as state_foreach(). No errors of its own. */
int state_send_foreach(const struct state *s,
		       int (*cb)(void *ud, const char *base, enum state_send st, const char *text),
		       void *ud);

/* Releases the lock and frees. Buffered, unsynced changes are dropped. */
void state_close(struct state *s);

#endif
