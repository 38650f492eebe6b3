/*
 * Maildir writer (https://cr.yp.to/proto/maildir.html). A message is
 * written to tmp/ under a unique name, fsynced, and later published into
 * new/ under the same name. Group commit: write and sync a batch of
 * messages, maildir_sync_tmp(), record them durably elsewhere, publish each,
 * then maildir_sync_new() once.
 *
 * Names: "<sec>.M<usec>P<pid>Q<seq>X<tag>.<host>" where tag identifies the
 * owner (the account), so maildir_recover() only ever touches its own
 * files when several accounts share one Maildir.
 *
 * Errors: every error is recorded with MP_EX_IOERR and a message naming
 * the path, except -ENOMEM (MP_EX_TEMPFAIL) and maildir_open()'s -EINVAL
 * for a bad tag (MP_EX_CONFIG). "The call's errno" below is the negative
 * errno of the failing system call: typically -EACCES, -ENOENT, -ENOTDIR,
 * -EROFS, -ENOSPC, -EDQUOT, -EIO.
 */
#ifndef MAILPULL_MAILDIR_H
#define MAILPULL_MAILDIR_H

#include "mailpull/common.h"
#include "mailpull/err.h"

struct maildir;
struct maildir_msg;

/*
 * Opens the Maildir at path, creating it (tmp, new, cur and any missing
 * parents, mode 0700) when missing. tag: up to 16 chars [A-Za-z0-9],
 * identifying the owner. *ret is freed with maildir_close().
 * Errors: -EINVAL (MP_EX_CONFIG: bad tag, or no path), -ENOMEM, the call's
 * errno (mkdir, open, fsync of a created directory).
 */
int maildir_open(const char *path, const char *tag, struct maildir **ret, struct mp_err *err) MP_WUR;

/* The path maildir_open() was given. Valid while md lives. Cannot fail. */
const char *maildir_path(const struct maildir *md);

/*
 * Creates a new tmp/ file (O_EXCL, O_CLOEXEC, mode 0600). *ret owned by
 * the caller until maildir_msg_publish(), maildir_msg_discard() or
 * maildir_msg_release(); md must outlive it.
 * Errors: -ENOMEM, -ENAMETOOLONG, -EEXIST (the unique name repeated every
 * time), the call's errno (openat).
 */
int maildir_msg_new(struct maildir *md, struct maildir_msg **ret, struct mp_err *err) MP_WUR;

/*
 * Appends bytes (buffered). Errors: the call's errno (write), -EINVAL after
 * maildir_msg_flush() or a sync; after an error every later write returns
 * the first error again.
 */
int maildir_msg_write(struct maildir_msg *m, const void *data, size_t len, struct mp_err *err) MP_WUR;

/* The unique base name (same in tmp/ and new/). Valid while m lives. Cannot fail. */
const char *maildir_msg_name(const struct maildir_msg *m);

/* Bytes written so far. Cannot fail. */
uint64_t maildir_msg_size(const struct maildir_msg *m);

/*
 * Hands the buffered bytes to the kernel and frees the buffer, keeping the
 * file open: a batch of finished messages then costs a descriptor each, and
 * their fsyncs can run back to back (one file system journal commit can
 * cover them all). No further write is allowed. Errors as maildir_msg_write().
 */
int maildir_msg_flush(struct maildir_msg *m, struct mp_err *err) MP_WUR;

/*
 * Flushes, fsyncs and closes the tmp file. Errors as maildir_msg_write(),
 * -EBADF when already closed, the call's errno (fsync, close).
 */
int maildir_msg_sync(struct maildir_msg *m, struct mp_err *err) MP_WUR;

/*
 * Creates tmp/NAME for a message whose name the caller chose (the Sent
 * copy of an outbox message keeps the outbox's name, so a rerun after a
 * crash finds it instead of storing it twice). A tmp/NAME left by an
 * interrupted run is replaced. Then as maildir_msg_new().
 * Errors: -EINVAL (a name that is empty, holds '/' or ':', or starts with
 * '.'), -ENOMEM, the call's errno (openat).
 */
int maildir_msg_new_named(struct maildir *md, const char *name, struct maildir_msg **ret,
			  struct mp_err *err) MP_WUR;

/*
 * Whether a message with base name (before any ":2,") is in new/ or cur/.
 * Errors: the call's errno (opendir, readdir), -ENOMEM.
 */
int maildir_has_published(struct maildir *md, const char *name, bool *ret,
			  struct mp_err *err) MP_WUR;

/*
 * Syncs and closes a batch of messages (group commit: one syncfs() of the
 * Maildir's file system for two or more, fdatasync() for one). fdatasync()
 * per file instead when the kernel is older than Linux 5.8 (its syncfs()
 * does not report write-back errors), when syncfs() fails with ENOSYS or
 * EINVAL (from then on), or after maildir_set_sync_per_file(md, true).
 * Errors as maildir_msg_sync(); on error the messages stay unsynced.
 */
int maildir_sync_batch(struct maildir *md, struct maildir_msg **msgs, size_t n, struct mp_err *err) MP_WUR;

/*
 * per_file: maildir_sync_batch() fdatasyncs each message on its own and
 * never flushes the whole file system (`sync = file`); false leaves
 * the default, group commit where the kernel allows it. Call it right
 * after maildir_open(). Cannot fail.
 */
void maildir_set_sync_per_file(struct maildir *md, bool per_file);

/* fsyncs tmp/ so the synced tmp files' names are durable. Errors: the call's errno. */
int maildir_sync_tmp(struct maildir *md, struct mp_err *err) MP_WUR;

/*
 * Renames tmp/NAME to new/NAME (or to cur/NAME:2,FLAGS when flags is not
 * NULL, flags being Maildir info letters in ASCII order, e.g. "FS"), then
 * frees m. The message must have been synced. Unlike the default, m is
 * freed on error too, the tmp file left in place for recovery.
 * Errors: -EINVAL (not synced, or flags not letters in ASCII order),
 * -ENAMETOOLONG, the call's errno (renameat).
 */
int maildir_msg_publish(struct maildir_msg *m, const char *flags, struct mp_err *err) MP_WUR;

/*
 * fsyncs new/ and cur/ (whichever publish touched since the last call).
 * Errors: the call's errno (open, fsync).
 */
int maildir_sync_new(struct maildir *md, struct mp_err *err) MP_WUR;

/*
 * fsyncs new/ and cur/ whether or not this process changed them: after an
 * interrupted run, whose renames into them may not be durable. Errors as
 * maildir_sync_new().
 */
int maildir_sync_published(struct maildir *md, struct mp_err *err) MP_WUR;

/* Removes the tmp file (best effort) and frees m. Cannot fail. */
void maildir_msg_discard(struct maildir_msg *m);

/*
 * Frees msgs[0..n) and sets them to NULL, leaving their tmp files for
 * maildir_recover() to publish or remove: for synced messages whose
 * records may or may not have reached the state (a failed journal write
 * or sync). NULL entries are skipped. Cannot fail.
 */
void maildir_msg_release(struct maildir_msg **msgs, size_t n);

/* Room for Maildir info letters: A-Z and a-z, each once, and a NUL. */
#define MAILDIR_FLAGS_SIZE 53

/*
 * Start-up recovery: for each tmp/ file carrying this Maildir's tag,
 * committed(ud, name, flags) decides: true → publish it (a crash hit
 * between recording and publishing): into cur/ as "name:2,FLAGS" when the
 * callback wrote info letters to flags (it starts as ""), else into new/;
 * false → unlink it (an unrecorded, possibly partial download). Files of
 * other owners are never touched. Syncs the directories it changed.
 * Counts go to *ret_published and *ret_removed (either may be NULL).
 * Errors: the call's errno (opendir, readdir, renameat, unlinkat, fsync),
 * -EINVAL for flags that are not letters in ASCII order, -ENAMETOOLONG,
 * -ENOMEM.
 */
int maildir_recover(struct maildir *md,
		    bool (*committed)(void *ud, const char *name, char flags[MAILDIR_FLAGS_SIZE]),
		    void *ud, unsigned *ret_published, unsigned *ret_removed,
		    struct mp_err *err) MP_WUR;

/*
 * Calls cb with root, then with every Maildir++ folder under it (a
 * directory root/.NAME holding tmp/). Stops when cb returns non-zero and
 * returns that (not recorded).
 * Errors: the call's errno (opendir, readdir of root), -ENOMEM.
 */
int maildir_tree_foreach(const char *root, int (*cb)(void *ud, const char *path), void *ud,
			 struct mp_err *err) MP_WUR;

/*
 * Calls cb with the base name (before any ":2,..." info) of every file in
 * tmp/, new/ and cur/ of the Maildir at path, whoever owns it; a missing
 * subdirectory has none. Creates nothing. Stops as maildir_tree_foreach().
 * Errors: the call's errno (opendir other than ENOENT, readdir), -ENOMEM.
 */
int maildir_names_foreach(const char *path, int (*cb)(void *ud, const char *base), void *ud,
			  struct mp_err *err) MP_WUR;

/* Closes the directories and frees md (its messages use it: free them first). */
void maildir_close(struct maildir *md);

#endif
