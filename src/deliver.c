/*
 * The delivery sequence of both protocols, and the exactly-once argument
 * (DESIGN invariants 1 and 2). Messages go in batches; for each batch:
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
 * fetched again next time, and nothing more is deleted.
 *
 * The crash tests count the durable steps (MAILPULL_CRASH_AT): one per
 * message received, one after step 2, one after step 3, one per message
 * published, one after step 4, for POP3 and IMAP alike.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailpull/log.h"
#include "mailpull/util.h"
#include "deliver.h"
#include "vec.h"

struct deliver_batch {
	/* what the batch asks for */
	uint32_t ids[DELIVER_BATCH_MSGS];
	const void *refs[DELIVER_BATCH_MSGS];
	size_t nids;
	uint64_t bytes;
	/* what arrived, complete: n files and their descriptions */
	struct maildir_msg *files[DELIVER_BATCH_MSGS];
	struct deliver_msg msgs[DELIVER_BATCH_MSGS];
	size_t n;
};

void
deliver_crash_point(void)
{
	static long at = -1, count;

	if (at < 0) {
		const char *e = getenv("MAILPULL_CRASH_AT");

		at = e ? strtol(e, NULL, 10) : 0;
	}
	if (at > 0 && ++count == at)
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

int
deliver_begin(struct deliver *d)
{
	int ret = deliver_check_stop(d);

	if (ret < 0)
		return ret;
	return maildir_msg_new(d->md, &d->cur, d->err);
}

int
deliver_data(struct deliver *d, const char *buf, size_t len)
{
	int ret = maildir_msg_write(d->cur, buf, len, d->err);

	d->stats->bytes += len;
	session_progress(&d->progress, d->stats, false);
	return ret;
}

int
deliver_end(struct deliver *d, const struct deliver_msg *m)
{
	struct deliver_batch *b = d->b;
	int ret = maildir_msg_flush(d->cur, d->err);

	b->files[b->n] = d->cur;
	b->msgs[b->n++] = *m;
	d->cur = NULL;
	d->progress.done++;
	deliver_crash_point();
	return ret;
}

void
deliver_abort(struct deliver *d)
{
	maildir_msg_discard(d->cur);
	d->cur = NULL;
}

const void *
deliver_queued(const struct deliver *d, size_t idx)
{
	return idx < d->b->nids ? d->b->refs[idx] : NULL;
}

/* Drops what is not committed: the message in flight and the batch's files. */
static void
discard(struct deliver *d)
{
	deliver_abort(d);
	if (!d->b)
		return;
	for (size_t i = 0; i < d->b->n; i++)
		maildir_msg_discard(d->b->files[i]);
	d->b->n = 0;
}

/*
 * Step 4: publish each file. A file that fails (another program removed it
 * from tmp/, say) keeps its record and fails the run, so nothing is
 * deleted; start-up recovery then publishes it or, if its file is gone,
 * forgets the record (deliver_forget_lost()).
 */
static int
publish(struct deliver *d, size_t n)
{
	struct deliver_batch *b = d->b;
	int ret = 0;

	for (size_t i = 0; i < n; i++) {
		const char *flags = b->msgs[i].flags[0] ? b->msgs[i].flags : NULL;
		int pr = maildir_msg_publish(b->files[i], flags, d->err);

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

	ret = maildir_sync_batch(d->md, b->files, n, d->err);
	if (ret == 0)
		ret = maildir_sync_tmp(d->md, d->err);
	if (ret < 0)
		return ret;
	deliver_crash_point();
	d->unpublished = true;
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = d->ops->record(d->ud, &b->msgs[i], maildir_msg_name(b->files[i]));
	if (ret == 0)
		ret = state_sync(d->st, d->err);
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
	ret = publish(d, n);
	if (ret == 0)
		ret = maildir_sync_new(d->md, d->err);
	if (ret < 0)
		return ret;
	d->unpublished = false;
	deliver_crash_point();
	d->stats->fetched += (unsigned)n;
	return 0;
}

/*
 * A stop (-ECANCELED from deliver_begin()) arrived after some messages of
 * the batch were complete: commits them (so the message being written
 * when the signal came is kept), then returns -ECANCELED with the stop
 * reason in err, or the commit's error. Nothing is deleted after it.
 */
static int
commit_stopped(struct deliver *d)
{
	struct mp_err stopped = *d->err;
	int ret;

	if (d->b->n == 0)
		return -ECANCELED;
	mp_err_clear(d->err);
	ret = commit(d);
	if (ret < 0)
		return ret;
	*d->err = stopped;
	return -ECANCELED;
}

static int
fetch_batch(struct deliver *d)
{
	int ret;

	d->b->n = 0;
	ret = d->ops->fetch(d->ud, d->b->ids, d->b->nids);
	if (ret == -ECANCELED) {
		ret = commit_stopped(d);
		if (ret == -ECANCELED)
			return ret;
	} else if (ret == 0 && d->b->n > 0) {
		ret = commit(d);
	}
	if (ret < 0)
		discard(d);
	return ret;
}

int
deliver_start(struct deliver *d)
{
	d->b = calloc(1, sizeof(*d->b));
	return d->b ? 0 : mp_err_oom(d->err);
}

int
deliver_queue(struct deliver *d, uint32_t id, uint64_t size, const void *ref)
{
	struct deliver_batch *b = d->b;

	b->ids[b->nids] = id;
	b->refs[b->nids++] = ref;
	b->bytes += size;
	if (b->nids == DELIVER_BATCH_MSGS || b->bytes >= DELIVER_BATCH_BYTES)
		return deliver_flush(d);
	return 0;
}

int
deliver_flush(struct deliver *d)
{
	int ret = d->b->nids ? fetch_batch(d) : 0;

	d->b->nids = 0;
	d->b->bytes = 0;
	return ret;
}

void
deliver_done(struct deliver *d)
{
	discard(d);
	free(d->b);
	d->b = NULL;
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
	deliver_done(d);
	return ret;
}
