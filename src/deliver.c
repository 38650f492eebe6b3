/*
 * The delivery sequence of both protocols, and the exactly-once argument
 * (DESIGN invariants 1 and 2). Two threads share the work so the server
 * never waits for the disk: the wire thread (the engine and its sink) only
 * copies each message's bytes into a bounded queue (store.c), and one
 * storage thread does every file system step below, in the order given,
 * and is the only one touching the Maildir and the state until the fetch
 * is over and it has been joined; the order of the steps, and so the
 * argument, is the same as with one thread. The storage thread cuts the
 * batches (a count, bytes, or an age); for each batch:
 *
 *   1. each message streams into tmp/NAME and is fsynced (the batch back
 *      to back, so the file system can commit it at once);
 *   2. tmp/ is fsynced (the names are durable);
 *   3. the journal records each message (POP3: UIDL -> NAME with its size;
 *      IMAP: NAME's flags, then folder UID -> NAME with its fingerprint)
 *      and is fsynced;
 *   4. each tmp/NAME is renamed to new/NAME (IMAP with flags: cur/NAME:2,FLAGS),
 *      then new/ (and cur/) is fsynced;
 *   5. only then may the server delete it (POP3 DELE ... QUIT; IMAP UID
 *      STORE \Deleted, UID EXPUNGE): that is the runs' business.
 *
 * A crash before 3 leaves unrecorded tmp files: start-up (deliver_recover())
 * removes them and the messages are fetched again. A crash after 3 leaves
 * recorded ones: start-up publishes them, into cur/ with the flags the
 * journal holds for them (which is why IMAP records the flags first). A
 * recorded name whose file another program removed is forgotten
 * (deliver_forget_lost()), so it is fetched again and never deleted on
 * the server. Nothing is deleted before 4 completed. The state is
 * compacted only when no recorded name is left unpublished: compaction
 * forgets the names recovery needs.
 *
 * A stop signal is honoured where a message begins: the messages complete
 * by then are committed (steps 2 to 4), the one in flight is dropped and
 * fetched again next time, and nothing more is deleted. A storage error
 * stops the storage thread (what it had not committed is discarded, or
 * left to recovery after step 3 began) and reaches the wire thread at its
 * next sink call: the fetch fails, so step 5 never comes for any of it.
 *
 * The crash tests count the durable steps (MAILPULL_CRASH_AT): one per
 * message received, one after step 2, one after step 3, one per message
 * published, one after step 4, for POP3 and IMAP alike, whichever thread
 * takes them (the count is atomic).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailpull/log.h"
#include "mailpull/util.h"
#include "deliver.h"
#include "store.h"
#include "vec.h"

/* What the wire thread queues for the storage thread. */
enum {
	REC_BEGIN = 1,         /* a message begins */
	REC_DATA,              /* its bytes */
	REC_END,               /* it is complete: a struct deliver_msg */
	REC_ABORT,             /* it turned out unusable */
	REC_CLOSE,             /* the fetch is over: its outcome, an int */
};

/* The pipeline: the queue, and the storage thread's own state. */
struct deliver_batch {
	struct store_queue *q;
	pthread_t thread;
	/* the storage thread's; the wire thread reads them once the queue failed or after join */
	struct mp_err err;
	int ret;
	unsigned fetched;
	/* the message being written, and the complete ones not committed yet */
	struct maildir_msg *cur;
	struct maildir_msg *files[DELIVER_BATCH_MSGS];
	struct deliver_msg msgs[DELIVER_BATCH_MSGS];
	size_t n;
	uint64_t bytes;
	int64_t first_ms;      /* when the batch's first message was complete */
};

static pthread_once_t crash_once = PTHREAD_ONCE_INIT;
static long crash_at;
static atomic_long crash_count;

static void
crash_init(void)
{
	const char *e = getenv("MAILPULL_CRASH_AT");

	crash_at = e ? strtol(e, NULL, 10) : 0;
}

void
deliver_crash_point(void)
{
	pthread_once(&crash_once, crash_init);
	if (crash_at > 0 && atomic_fetch_add(&crash_count, 1) + 1 == crash_at)
		_exit(101);
}

void
deliver_init(struct deliver *d, const struct mp_account *a, const struct account_opts *o,
	     struct state *st, struct account_stats *stats, struct mp_err *err,
	     const struct deliver_ops *ops, void *ud)
{
	*d = (struct deliver){ .a = a, .o = o, .st = st, .stats = stats, .err = err,
			       .ops = ops, .ud = ud };
	d->progress = (struct session_progress){ .name = a->name, .on = o->progress,
						 .start_ms = util_now_ms() };
}

int
deliver_open(const struct mp_account *a, const char *path, struct maildir **ret,
	     struct mp_err *err)
{
	char tag[16];
	int r;

	session_tag(a->name, tag);
	r = maildir_open(path, tag, ret, err);
	if (r == 0)
		maildir_set_sync_per_file(*ret, a->sync_per_file);
	return r;
}

/* Recorded names are published, with the flags recorded for them (IMAP). */
static bool
recorded_cb(void *ud, const char *name, char flags[MAILDIR_FLAGS_SIZE])
{
	_Static_assert(MAILDIR_FLAGS_SIZE == STATE_FLAGS_MAX + 1, "flag buffers differ");
	if (!state_name_recorded(ud, name))
		return false;
	state_name_flags(ud, name, flags);
	return true;
}

int
deliver_recover(const struct mp_account *a, struct state *st, struct maildir *md,
		struct mp_err *err)
{
	unsigned published = 0, removed = 0;
	int ret = maildir_recover(md, recorded_cb, st, &published, &removed, err);

	/*
	 * The interrupted run may have renamed files into new/ or cur/ and
	 * failed (or never got) to sync them: sync before anything recorded
	 * there can be deleted on the server.
	 */
	if (ret == 0 && state_interrupted(st))
		ret = maildir_sync_published(md, err);

	if (ret == 0 && (published || removed))
		log_info("%s: recovered from an interrupted run in %s: %u message(s) completed, "
			 "%u partial download(s) removed", a->name, maildir_path(md), published,
			 removed);
	return ret;
}

/* Names recorded by an interrupted run, and which of them have a file. */
struct lost {
	struct vec_str names;   /* sorted */
	bool *seen;
	struct mp_err *err;
};

static int
lost_collect(void *ud, const char *name)
{
	return vec_str_push(&((struct lost *)ud)->names, name);
}

static int
lost_mark(void *ud, const char *base)
{
	struct lost *l = ud;
	char **at = bsearch(&base, l->names.v, l->names.n, sizeof(*l->names.v), vec_str_cmp);

	if (at)
		l->seen[at - l->names.v] = true;
	return 0;
}

static int
lost_scan(void *ud, const char *path)
{
	struct lost *l = ud;

	return maildir_names_foreach(path, lost_mark, l, l->err);
}

int
deliver_forget_lost(const struct mp_account *a, struct state *st, struct mp_err *err)
{
	struct lost l = { .err = err };
	size_t n;
	unsigned forgotten = 0;
	int ret = 0;

	if (!state_interrupted(st))
		return 0;
	if (state_name_foreach(st, lost_collect, &l) < 0 ||
	    (l.names.n && !(l.seen = calloc(l.names.n, sizeof(*l.seen)))))
		ret = mp_err_oom(err);
	n = l.names.n;
	if (ret == 0 && n) {
		qsort(l.names.v, n, sizeof(*l.names.v), vec_str_cmp);
		ret = maildir_tree_foreach(a->maildir, lost_scan, &l, err);
	}
	for (size_t i = 0; i < n && ret == 0; i++) {
		if (l.seen[i])
			continue;
		ret = state_forget_name(st, l.names.v[i], err);
		if (ret > 0)
			forgotten++;
		ret = ret < 0 ? ret : 0;
	}
	if (ret == 0 && forgotten)
		ret = state_sync(st, err);
	if (ret == 0 && forgotten)
		log_warn("%s: %u message(s) recorded by an interrupted run have no file in any "
			 "folder of %s; they will be fetched again", a->name, forgotten, a->maildir);
	vec_str_free(&l.names);
	free(l.seen);
	return ret;
}

int
deliver_check_stop(const struct deliver *d)
{
	if (!d->o->stop || !*d->o->stop)
		return 0;
	return mp_err_set(d->err, -ECANCELED, MP_EX_TEMPFAIL, "stopped by a signal");
}

/* ---- the wire thread's side: the sink ------------------------------------ */

/* The storage thread failed: its error becomes the run's. */
static int
storage_failed(struct deliver *d, int ret)
{
	if (ret < 0)
		*d->err = d->b->err;
	return ret;
}

int
deliver_begin(struct deliver *d)
{
	int ret = deliver_check_stop(d);

	if (ret < 0)
		return ret;
	ret = store_queue_put(d->b->q, REC_BEGIN, NULL, 0, false);
	d->in_msg = ret == 0;
	return storage_failed(d, ret);
}

int
deliver_data(struct deliver *d, const char *buf, size_t len)
{
	size_t max = store_queue_max_record(d->b->q);
	int ret = 0;

	d->stats->bytes += len;
	session_progress(&d->progress, d->stats, false);
	while (len && ret == 0) {
		size_t n = len < max ? len : max;

		ret = store_queue_put(d->b->q, REC_DATA, buf, n, false);
		buf += n;
		len -= n;
	}
	return storage_failed(d, ret);
}

int
deliver_end(struct deliver *d, const struct deliver_msg *m)
{
	d->in_msg = false;
	d->progress.done++;
	return storage_failed(d, store_queue_put(d->b->q, REC_END, m, sizeof(*m), true));
}

void
deliver_abort(struct deliver *d)
{
	if (d->in_msg)
		(void)store_queue_put(d->b->q, REC_ABORT, NULL, 0, true);
	d->in_msg = false;
}

/* ---- the storage thread -------------------------------------------------- */

/* Drops what is not committed: the message in flight and the batch's files. */
static void
discard(struct deliver_batch *b)
{
	maildir_msg_discard(b->cur);
	b->cur = NULL;
	for (size_t i = 0; i < b->n; i++)
		maildir_msg_discard(b->files[i]);
	b->n = 0;
	b->bytes = 0;
}

/*
 * Step 4: publish each file. A file that fails (another program removed it
 * from tmp/, say) keeps its record and fails the run, so nothing is
 * deleted; start-up recovery then publishes it or, if its file is gone,
 * forgets the record (deliver_forget_lost()).
 */
static int
publish(struct deliver_batch *b, size_t n)
{
	int ret = 0;

	for (size_t i = 0; i < n; i++) {
		const char *flags = b->msgs[i].flags[0] ? b->msgs[i].flags : NULL;
		int pr = maildir_msg_publish(b->files[i], flags, &b->err);

		b->files[i] = NULL;
		if (pr < 0 && ret == 0)
			ret = pr;
		deliver_crash_point();
	}
	return ret;
}

/* Steps 2 to 4 for the received batch. */
static int
commit(struct deliver *d)
{
	struct deliver_batch *b = d->b;
	size_t n = b->n;
	int ret;

	if (n == 0)
		return 0;
	ret = maildir_sync_batch(d->md, b->files, n, &b->err);
	if (ret == 0)
		ret = maildir_sync_tmp(d->md, &b->err);
	if (ret < 0)
		return ret;
	deliver_crash_point();
	d->unpublished = true;
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = d->ops->record(d->ud, &b->msgs[i], maildir_msg_name(b->files[i]), &b->err);
	if (ret == 0)
		ret = state_sync(d->st, &b->err);
	if (ret < 0) {
		/*
		 * The journal may or may not hold the batch's records (a failed
		 * write or sync): the synced tmp files stay for start-up
		 * recovery, which publishes them if the records are there and
		 * removes them if not. Removing them now could leave records
		 * naming messages that exist nowhere here, and the next run
		 * would delete those on the server.
		 */
		maildir_msg_release(b->files, n);
		b->n = 0;
		return ret;
	}
	d->changed = true;
	deliver_crash_point();
	b->n = 0;
	b->bytes = 0;
	ret = publish(b, n);
	if (ret == 0)
		ret = maildir_sync_new(d->md, &b->err);
	if (ret < 0)
		return ret;
	d->unpublished = false;
	/* Published and journalled: the names need not stay in memory. */
	state_names_release(d->st);
	deliver_crash_point();
	b->fetched += (unsigned)n;
	return 0;
}

/* Step 1 for one message: its bytes are with the kernel, the file in the batch. */
static int
end_message(struct deliver *d, const struct store_rec *rec)
{
	struct deliver_batch *b = d->b;
	int ret;

	if (!b->cur)
		return mp_err_set(&b->err, -EINVAL, MP_EX_IOERR, "message end without a begin");
	ret = maildir_msg_flush(b->cur, &b->err);
	b->bytes += maildir_msg_size(b->cur);
	b->files[b->n] = b->cur;
	store_rec_copy(rec, &b->msgs[b->n], sizeof(b->msgs[b->n]));
	b->cur = NULL;
	if (b->n++ == 0)
		b->first_ms = util_now_ms();
	if (ret < 0)
		return ret;
	deliver_crash_point();
	if (b->n == DELIVER_BATCH_MSGS || b->bytes >= DELIVER_BATCH_BYTES ||
	    util_now_ms() - b->first_ms >= DELIVER_BATCH_MS)
		return commit(d);
	return 0;
}

static int
write_data(struct deliver_batch *b, const struct store_rec *rec)
{
	int ret = 0;

	if (!b->cur)
		return mp_err_set(&b->err, -EINVAL, MP_EX_IOERR, "message data without a begin");
	for (int i = 0; i < 2 && ret == 0; i++)
		if (rec->n[i])
			ret = maildir_msg_write(b->cur, rec->p[i], rec->n[i], &b->err);
	return ret;
}

/*
 * One record from the wire thread. 1 when the pipeline is over (REC_CLOSE
 * carries the fetch's outcome), 0 to go on, or a negative errno.
 */
static int
handle(struct deliver *d, const struct store_rec *rec)
{
	struct deliver_batch *b = d->b;
	int outcome = 0;

	switch (rec->type) {
	case REC_BEGIN:
		maildir_msg_discard(b->cur);
		b->cur = NULL;
		return maildir_msg_new(d->md, &b->cur, &b->err);
	case REC_DATA:
		return write_data(b, rec);
	case REC_END:
		return end_message(d, rec);
	case REC_ABORT:
		maildir_msg_discard(b->cur);
		b->cur = NULL;
		return 0;
	case REC_CLOSE:
		store_rec_copy(rec, &outcome, sizeof(outcome));
		/* A stop keeps what is complete; the message in flight goes. */
		maildir_msg_discard(b->cur);
		b->cur = NULL;
		if (outcome == 0 || outcome == -ECANCELED) {
			int ret = commit(d);

			return ret < 0 ? ret : 1;
		}
		discard(b);
		return 1;
	default:
		return mp_err_set(&b->err, -EINVAL, MP_EX_IOERR, "unknown storage record %u",
				  rec->type);
	}
}

static void *
storage_main(void *arg)
{
	struct deliver *d = arg;
	struct deliver_batch *b = d->b;
	struct store_rec rec;
	int ret = 0;

	while (ret == 0) {
		int64_t deadline = b->n ? b->first_ms + DELIVER_BATCH_MS : -1;

		if (store_queue_get(b->q, deadline, &rec) == 0) {
			/* The wire is quiet: make what arrived durable meanwhile. */
			ret = commit(d);
			continue;
		}
		ret = handle(d, &rec);
		store_queue_next(b->q, &rec);
	}
	if (ret < 0) {
		discard(b);
		b->ret = ret;
		store_queue_fail(b->q, ret);
	}
	return NULL;
}

static void
batch_free(struct deliver_batch *b)
{
	if (!b)
		return;
	store_queue_free(b->q);
	free(b);
}

int
deliver_run(struct deliver *d)
{
	struct deliver_batch *b = calloc(1, sizeof(*b));
	int ret, fret, r;

	if (!b || store_queue_new(DELIVER_QUEUE_BYTES, &b->q) < 0) {
		batch_free(b);
		return mp_err_oom(d->err);
	}
	d->b = b;
	r = pthread_create(&b->thread, NULL, storage_main, d);
	if (r != 0) {
		d->b = NULL;
		batch_free(b);
		return mp_err_set(d->err, -r, MP_EX_TEMPFAIL, "cannot start the storage thread: %s",
				  strerror(r));
	}
	fret = d->ops->fetch(d->ud);
	d->in_msg = false;
	/* After a failure the thread is gone and the put returns at once. */
	(void)store_queue_put(b->q, REC_CLOSE, &fret, sizeof(fret), true);
	pthread_join(b->thread, NULL);
	d->stats->fetched += b->fetched;
	ret = fret;
	if (b->ret < 0) {
		*d->err = b->err;
		ret = b->ret;
	}
	d->b = NULL;
	batch_free(b);
	return ret;
}

int
deliver_finish(struct deliver *d, int ret)
{
	if (d->changed && !d->unpublished) {
		struct mp_err cerr = { 0 };
		int cret = state_compact(d->st, &cerr);

		if (cret < 0 && ret == 0) {
			*d->err = cerr;
			ret = cret;
		}
	}
	return ret;
}
