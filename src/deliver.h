/*
 * The one delivery sequence of both protocol runs: a batch of messages
 * from the server into a Maildir, exactly once (the argument is deliver.c's
 * file comment), with its crash points, batch caps, stop handling and
 * start-up recovery. A run plugs in only what differs (struct deliver_ops):
 * how a batch is fetched (its sink calls deliver_begin(), deliver_data(),
 * deliver_end()) and how a message is recorded in the state. Not for other
 * modules.
 */
#ifndef MAILPULL_DELIVER_H
#define MAILPULL_DELIVER_H

#include "mailpull/account.h"
#include "mailpull/maildir.h"
#include "mailpull/state.h"
#include "session.h"

/*
 * The storage thread cuts a group commit at whichever comes first: a
 * message count, a byte count, or an age (so a crash loses little and
 * progress is durable steadily while the wire keeps going).
 */
#define DELIVER_BATCH_MSGS 128
#define DELIVER_BATCH_BYTES (32u * 1024 * 1024)
#define DELIVER_BATCH_MS 500
/* The queue between the wire and the storage thread (see deliver_run()). */
#define DELIVER_QUEUE_BYTES (256u * 1024)

/* One received message of the batch, as its run described it to deliver_end(). */
struct deliver_msg {
	const void *ref;        /* the run's own listing entry (POP3: its pop3_msg), or NULL */
	uint32_t uid;           /* IMAP: the UID */
	uint64_t fp;            /* IMAP: the fingerprint, 0 for none */
	char flags[8];          /* Maildir info letters ("" publishes into new/, else cur/) */
};

struct deliver_ops {
	/*
	 * Fetches every wanted message from the server in one go (the run
	 * chose them before: it must not touch the state while this runs);
	 * its sink calls deliver_begin(), deliver_data(), deliver_end() and
	 * deliver_abort(). Runs on the calling thread. 0, -ECANCELED (a stop,
	 * from deliver_begin()) or another negative errno with the run's err
	 * set.
	 */
	int (*fetch)(void *ud);
	/*
	 * Records m, stored as Maildir name, in the state (not synced), errors
	 * in err. Called on the storage thread, the only one touching the
	 * state while deliver_run() runs. 0 or a state_* error.
	 */
	int (*record)(void *ud, const struct deliver_msg *m, const char *name, struct mp_err *err);
};

struct deliver_batch;

struct deliver {
	const struct mp_account *a;
	const struct account_opts *o;
	struct account_stats *stats;   /* fetched, bytes */
	struct state *st;
	struct maildir *md;            /* where the batch goes: set by the run */
	struct mp_err *err;
	const struct deliver_ops *ops;
	void *ud;
	bool changed;                  /* state needs compaction at the end (runs set it too) */
	bool unpublished;              /* names recorded but not all published: never compact */
	struct session_progress progress;   /* total: set by the run; done: counted here */
	struct deliver_batch *b;       /* the storage thread's, during deliver_run() */
	bool in_msg;                   /* the wire thread is between begin and end */
};

/* Sets d up for one run of a; ops->fetch and ops->record get ud. Never fails. */
void deliver_init(struct deliver *d, const struct mp_account *a, const struct account_opts *o,
		  struct state *st, struct account_stats *stats, struct mp_err *err,
		  const struct deliver_ops *ops, void *ud);

/*
 * Opens the Maildir at path for a's files (the account's tag, its sync
 * setting). Errors as maildir_open(): -EACCES, -ENOTDIR, -EROFS, -ENOSPC,
 * -EIO, -ENAMETOOLONG, -ENOMEM (MP_EX_IOERR or MP_EX_TEMPFAIL, path named).
 */
int deliver_open(const struct mp_account *a, const char *path, struct maildir **ret,
		 struct mp_err *err) MP_WUR;

/*
 * Start-up recovery of one Maildir: finishes or discards what an
 * interrupted run left in md's tmp/ (its own files only), logging what it
 * did. Errors as maildir_recover() and maildir_sync_published() (-errno of
 * the file system call with the path named, -EINVAL, -ENOMEM).
 */
int deliver_recover(const struct mp_account *a, struct state *st, struct maildir *md,
		    struct mp_err *err) MP_WUR;

/*
 * After an interrupted run (state_interrupted()), forgets every record
 * whose Maildir name matches no file in tmp/, new/ or cur/ of any folder
 * of the account's Maildir: another program removed it from tmp/ before
 * it was delivered, so it must be fetched again, never deleted on the
 * server. A message a reader moved to another folder keeps its base name
 * and still counts. Syncs the state when it forgot anything. Errors:
 * -ENOMEM (MP_EX_TEMPFAIL), those of maildir_tree_foreach() /
 * maildir_names_foreach() (-errno, the path named), state_forget_name()
 * and state_sync() (-EIO, -ENOSPC... MP_EX_IOERR).
 */
int deliver_forget_lost(const struct mp_account *a, struct state *st, struct mp_err *err) MP_WUR;

/*
 * Fetches and stores what the run wants: starts the storage thread, calls
 * ops->fetch on this thread (the wire), then waits for the storage thread.
 * The storage thread does all file system work: it creates and writes
 * each tmp/ file, and commits in batches (steps 1 to 4 of deliver.c),
 * calling ops->record and counting stats->fetched; d->md and d->st are its
 * own until deliver_run() returns. A storage error reaches the sink at its
 * next call (the fetch stops, the connection is to be abandoned). When the
 * fetch returns 0 or -ECANCELED (a stop), what is complete is committed;
 * after any other error what was not committed yet is discarded.
 * Returns 0, -ECANCELED (MP_EX_TEMPFAIL), ops->fetch's error, or the
 * storage thread's (ops->record's, the maildir_* errors, state_sync()'s:
 * -EIO, -ENOSPC, -EDQUOT, -EROFS... MP_EX_IOERR; -ENOMEM; a pthread
 * error), err set. After an error nothing fetched by this call may be
 * deleted on the server.
 */
int deliver_run(struct deliver *d) MP_WUR;

/*
 * -ECANCELED (MP_EX_TEMPFAIL, err set) when o->stop asks the run to end,
 * else 0. Checked where a message begins: stopping there costs only the
 * message in flight, which is fetched again next time.
 */
int deliver_check_stop(const struct deliver *d) MP_WUR;

/*
 * The sink's steps for one message, on the wire thread during
 * deliver_run(): each queues its part for the storage thread, blocking
 * only while the queue is full. deliver_begin() checks the stop signal
 * first (-ECANCELED); the tmp/ file is created, written, and flushed into
 * the batch as m describes it (a crash point) by the storage thread;
 * deliver_abort() discards it (a response that turned out unusable). Each
 * returns the storage thread's first error, if any, with err set
 * (maildir_msg_new()'s, maildir_msg_write()'s: -ENOSPC, -EIO, -EDQUOT...
 * with the path, a commit's).
 */
int deliver_begin(struct deliver *d) MP_WUR;
int deliver_data(struct deliver *d, const char *buf, size_t len) MP_WUR;
int deliver_end(struct deliver *d, const struct deliver_msg *m) MP_WUR;
void deliver_abort(struct deliver *d);

/*
 * The end of a run: compacts the state when it changed and nothing
 * recorded is still unpublished. Returns ret, or
 * state_compact()'s error (-EIO, -ENOSPC... MP_EX_IOERR, err set) when ret
 * was 0.
 */
int deliver_finish(struct deliver *d, int ret) MP_WUR;

/*
 * Fault injection for the crash tests: MAILPULL_CRASH_AT=N ends the process
 * at the Nth durable step, as a SIGKILL would, from whichever thread takes
 * that step (the count is atomic). The runs call it after each deletion
 * step on the server too.
 */
void deliver_crash_point(void);

#endif
