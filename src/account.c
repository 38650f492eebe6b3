/*
 * One run of one account. All policy lives here: what to fetch, when a
 * batch is durable, what may be deleted. The order of the durable steps is
 * the exactly-once argument (DESIGN invariants 1 and 2):
 *
 *   1. each message streams into tmp/NAME and is fsynced;
 *   2. tmp/ is fsynced (the names are durable);
 *   3. the journal records UIDL -> NAME for the batch and is fsynced;
 *   4. each tmp/NAME is renamed to new/NAME, then new/ is fsynced;
 *   5. only then may the server delete it (DELE ... QUIT).
 *
 * A crash before 3 leaves unrecorded tmp files: start-up removes them and
 * the messages are fetched again. A crash after 3 leaves recorded ones:
 * start-up publishes them. Nothing is deleted before 4 completed.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mailpull/account.h"
#include "mailpull/account_int.h"
#include "mailpull/conn.h"
#include "mailpull/hdr.h"
#include "mailpull/log.h"
#include "mailpull/maildir.h"
#include "mailpull/pop3.h"
#include "mailpull/secret.h"
#include "mailpull/state.h"
#include "mailpull/util.h"

/* A batch ends at whichever cap comes first. */
#define BATCH_MAX_MSGS 128
#define BATCH_MAX_BYTES (32u * 1024 * 1024)

struct run {
	const struct mp_account *a;
	const struct account_opts *o;
	struct account_stats *stats;
	struct state *st;
	struct maildir *md;
	struct pop3 *pop;
	struct pop3_msg *msgs;
	size_t nmsgs;
	time_t now;
	bool changed;          /* state needs compaction at the end */
	bool unpublished;      /* names recorded but not all published: never compact */

	/* the batch being fetched */
	const struct pop3_msg **batch;
	struct maildir_msg **files;
	size_t nbatch;
	struct maildir_msg *cur;
	size_t cur_idx;        /* batch position of cur */
	uint64_t cur_bytes;    /* bytes of cur received so far */
	unsigned total_new, done;
	int64_t start_ms;
	struct account_progress progress;
	uint64_t batch_bytes;
	struct mp_err *err;
};

void
account_crash_point(void)
{
	static long at = -1, count;

	if (at < 0) {
		const char *e = getenv("MAILPULL_CRASH_AT");

		at = e ? strtol(e, NULL, 10) : 0;
	}
	if (at > 0 && ++count == at)
		_exit(101);
}

int
account_check_stop(const struct account_opts *o, struct mp_err *err)
{
	if (!o->stop || !*o->stop)
		return 0;
	return mp_err_set(err, -ECANCELED, MP_EX_TEMPFAIL, "stopped by a signal");
}

int
account_commit_stopped(struct mp_err *err, int (*commit)(void *ud), void *ud, size_t ndone)
{
	struct mp_err stopped = *err;
	int ret;

	if (ndone == 0)
		return -ECANCELED;
	mp_err_clear(err);
	ret = commit(ud);
	if (ret < 0)
		return ret;
	*err = stopped;
	return -ECANCELED;
}

void
account_progress(struct account_progress *p, const struct account_stats *s, bool final)
{
	int64_t now = util_now_ms();
	double secs;

	if (!p->on || (!final && now - p->last_ms < 200))
		return;
	p->last_ms = now;
	secs = (double)(now - p->start_ms) / 1000.0;
	fprintf(stderr, "\r%s: message %u of %u, %.1f KiB, %.0f KiB/s\033[K%s", p->name, p->done,
		p->total, (double)s->bytes / 1024.0,
		secs > 0 ? (double)s->bytes / 1024.0 / secs : 0.0, final ? "\r\033[K" : "");
	fflush(stderr);
}

int
account_login(const struct mp_account *a, const char *sasl, bool user_ok, const char *plain,
	      account_auth_fn auth, void *engine, struct mp_err *err)
{
	enum sasl_mech mech;
	char *secret = NULL;
	int ret = sasl_choose(sasl, user_ok, a->auth, &mech);

	if (ret < 0)
		return mp_err_set(err, ret, ret == -EINVAL ? MP_EX_CONFIG : MP_EX_PROTOCOL,
				  "no usable authentication mechanism (server offers \"%s\"%s%s; "
				  "auth = %s)", sasl, user_ok ? " and " : ", no ", plain,
				  a->auth ? a->auth : "automatic");
	/* The secret is fetched only now: after TLS is verified, right before use. */
	ret = secret_get(a, a->timeout_s * 1000, &secret, err);
	if (ret < 0)
		return ret;
	ret = auth(engine, mech, a->user, secret, err);
	secret_free(secret);
	return ret;
}

uint64_t
account_msg_cap(const struct mp_account *a)
{
	return a->max_size && a->max_size < ACCOUNT_MSG_MAX ? a->max_size : ACCOUNT_MSG_MAX;
}

const char *
account_cap_name(const struct mp_account *a)
{
	return a->max_size && a->max_size < ACCOUNT_MSG_MAX ? "max_size" :
	       "the per-message limit of 1 GiB";
}

int
account_check_received(const struct mp_account *a, const char *what, uint32_t num,
		       uint64_t declared, uint64_t got, struct mp_err *err)
{
	uint64_t cap = account_msg_cap(a);

	if (got <= cap)
		return 0;
	return mp_err_set(err, -EFBIG, MP_EX_PROTOCOL,
			  "%s %" PRIu32 ": the server sent more than %" PRIu64 " bytes (%s) "
			  "after declaring %" PRIu64 "; cut off there, nothing stored or deleted",
			  what, num, cap, account_cap_name(a), declared);
}

void
account_tag(const char *name, char tag[16])
{
	snprintf(tag, 16, "%08x", util_fnv1a(name, strlen(name)));
}

void
account_conn_opts(const struct mp_account *a, struct conn_opts *ret)
{
	*ret = (struct conn_opts){
		.host = a->host, .port = a->port, .ca_file = a->tls_ca_file,
		.fingerprint = a->tls_fingerprint, .timeout_ms = a->timeout_s * 1000,
		.max_line = 8192,
	};
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
account_recover(const struct mp_account *a, struct state *st, struct maildir *md,
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

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names recorded by an interrupted run, and which of them have a file. */
struct lost {
	char **v;               /* sorted */
	bool *seen;
	size_t n, cap;
	struct mp_err *err;
};

static int
lost_collect(void *ud, const char *name)
{
	struct lost *l = ud;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		char **v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n] = strdup(name);
	if (!l->v[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

static int
lost_mark(void *ud, const char *base)
{
	struct lost *l = ud;
	char **at = bsearch(&base, l->v, l->n, sizeof(*l->v), cmp_str);

	if (at)
		l->seen[at - l->v] = true;
	return 0;
}

static int
lost_scan(void *ud, const char *path)
{
	struct lost *l = ud;

	return maildir_names_foreach(path, lost_mark, l, l->err);
}

int
account_forget_lost(const struct mp_account *a, struct state *st, struct mp_err *err)
{
	struct lost l = { .err = err };
	unsigned forgotten = 0;
	int ret = 0;

	if (!state_interrupted(st))
		return 0;
	if (state_name_foreach(st, lost_collect, &l) < 0 ||
	    (l.n && !(l.seen = calloc(l.n, sizeof(*l.seen)))))
		ret = mp_err_oom(err);
	if (ret == 0 && l.n) {
		qsort(l.v, l.n, sizeof(*l.v), cmp_str);
		ret = maildir_tree_foreach(a->maildir, lost_scan, &l, err);
	}
	for (size_t i = 0; i < l.n && ret == 0; i++) {
		if (l.seen[i])
			continue;
		ret = state_forget_name(st, l.v[i], err);
		if (ret > 0)
			forgotten++;
		ret = ret < 0 ? ret : 0;
	}
	if (ret == 0 && forgotten)
		ret = state_sync(st, err);
	if (ret == 0 && forgotten)
		log_warn("%s: %u message(s) recorded by an interrupted run have no file in any "
			 "folder of %s; they will be fetched again", a->name, forgotten, a->maildir);
	for (size_t i = 0; i < l.n; i++)
		free(l.v[i]);
	free(l.v);
	free(l.seen);
	return ret;
}

static void
progress(struct run *r, bool final)
{
	r->progress.done = r->done;
	r->progress.total = r->total_new;
	account_progress(&r->progress, r->stats, final);
}

static int
sink_begin(void *ud, size_t idx)
{
	struct run *r = ud;
	int ret = account_check_stop(r->o, r->err);

	if (ret < 0)
		return ret;
	r->cur_idx = idx;
	r->cur_bytes = 0;
	return maildir_msg_new(r->md, &r->cur, r->err);
}

static int
sink_data(void *ud, const char *buf, size_t len)
{
	struct run *r = ud;
	const struct pop3_msg *m = r->batch[r->cur_idx];
	int ret;

	/* What the server LISTed is a claim: the cap holds for what it sends. */
	r->cur_bytes += len;
	ret = account_check_received(r->a, "message", m->num, m->size, r->cur_bytes, r->err);
	if (ret < 0)
		return ret;
	ret = maildir_msg_write(r->cur, buf, len, r->err);
	r->stats->bytes += len;
	progress(r, false);
	return ret;
}

static int
sink_end(void *ud)
{
	struct run *r = ud;
	int ret = maildir_msg_flush(r->cur, r->err);

	r->files[r->nbatch++] = r->cur;
	r->cur = NULL;
	r->done++;
	account_crash_point();
	return ret;
}

static void
batch_discard(struct run *r)
{
	maildir_msg_discard(r->cur);
	r->cur = NULL;
	for (size_t i = 0; i < r->nbatch; i++)
		maildir_msg_discard(r->files[i]);
	r->nbatch = 0;
}

/*
 * Key under which a message is recorded: its UIDL. A server without UIDL
 * cannot name a message across sessions; such messages are recorded under
 * their Maildir name only so that recovery publishes them, and forgotten
 * once the server confirmed their deletion.
 *
 * A UIDL is the server's text and may itself begin with NOUIDL_PREFIX: it
 * is then recorded behind UIDL_ESCAPE, a byte no UIDL can hold (RFC 1939:
 * 0x21-0x7E), so the two kinds of key never meet, and every other UIDL
 * keeps the key older state files recorded it under.
 */
#define NOUIDL_PREFIX "nouidl/"
#define UIDL_ESCAPE ' '
#define KEY_MAX 300

static bool
internal_key(const char *key)
{
	return strncmp(key, NOUIDL_PREFIX, strlen(NOUIDL_PREFIX)) == 0;
}

static const char *
msg_key(const struct pop3_msg *m, const char *name, char *buf, size_t len)
{
	if (m->uidl[0] && !internal_key(m->uidl))
		return m->uidl;
	if (m->uidl[0])
		snprintf(buf, len, "%c%s", UIDL_ESCAPE, m->uidl);
	else
		snprintf(buf, len, NOUIDL_PREFIX "%s", name ? name : "");
	return buf;
}

/* The UIDL a recorded key stands for; NULL for mailpull's own keys. */
static const char *
key_uidl(const char *key)
{
	if (internal_key(key))
		return NULL;
	return key[0] == UIDL_ESCAPE ? key + 1 : key;
}

/*
 * Whether m was fetched: its UIDL is recorded and, when a size was
 * recorded with it, m has that size. A server may give a UIDL to another
 * message once the first is gone (RFC 1939 asks it not to); a different
 * size shows that, and the message is new. Keys recorded before sizes were
 * kept match on the UIDL alone.
 */
static bool
already_fetched(struct run *r, const struct pop3_msg *m, int64_t *ret_when)
{
	char kbuf[KEY_MAX];
	const char *key;
	uint64_t size;

	if (!m->uidl[0])
		return false;
	key = msg_key(m, NULL, kbuf, sizeof(kbuf));
	if (!state_has(r->st, key, ret_when))
		return false;
	return !state_get_size(r->st, key, &size) || size == m->size;
}

/*
 * Step 4: publish each file. A file that fails (another program removed it
 * from tmp/, say) keeps its record and fails the run, so nothing is
 * deleted; start-up recovery then publishes it or, if its file is gone,
 * forgets the record (account_forget_lost()).
 */
static int
batch_publish(struct run *r, size_t n)
{
	int ret = 0;

	for (size_t i = 0; i < n; i++) {
		int pr = maildir_msg_publish(r->files[i], NULL, r->err);

		r->files[i] = NULL;
		if (pr < 0 && ret == 0)
			ret = pr;
		account_crash_point();
	}
	return ret;
}

/*
 * Records m as fetched into name, with its LISTed size. A UIDL recorded for
 * an earlier message of another size is forgotten first, so the record
 * (time included, for keep_days) is the new message's.
 */
static int
record_msg(struct run *r, const struct pop3_msg *m, const char *name)
{
	char kbuf[KEY_MAX];
	const char *key = msg_key(m, name, kbuf, sizeof(kbuf));
	int ret = 0;

	if (m->uidl[0] && state_has(r->st, key, NULL))
		ret = state_remove(r->st, key, r->err);
	if (ret == 0 && m->uidl[0])
		ret = state_add_sized(r->st, key, (int64_t)r->now, m->size, name, r->err);
	else if (ret == 0)
		ret = state_add(r->st, key, (int64_t)r->now, name, r->err);
	return ret;
}

/* Steps 2 to 4 of the file comment for the fetched batch. */
static int
batch_commit(struct run *r)
{
	size_t n = r->nbatch;
	int ret;

	/* Back to back, so the file system can commit the batch at once. */
	ret = maildir_sync_batch(r->md, r->files, n, r->err);
	if (ret < 0)
		return ret;
	ret = maildir_sync_tmp(r->md, r->err);
	if (ret < 0)
		return ret;
	account_crash_point();
	r->unpublished = true;
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = record_msg(r, r->batch[i], maildir_msg_name(r->files[i]));
	if (ret == 0)
		ret = state_sync(r->st, r->err);
	if (ret < 0) {
		/*
		 * The journal may or may not hold the batch's records (a failed
		 * write or sync): the synced tmp files stay for start-up
		 * recovery, which publishes them if the records are there and
		 * removes them if not. Removing them now could leave records
		 * naming messages that exist nowhere here, and the next run
		 * would delete those on the server.
		 */
		maildir_msg_release(r->files, r->nbatch);
		r->nbatch = 0;
		return ret;
	}
	r->changed = true;
	account_crash_point();
	r->nbatch = 0;
	ret = batch_publish(r, n);
	if (ret < 0)
		return ret;
	ret = maildir_sync_new(r->md, r->err);
	if (ret < 0)
		return ret;
	r->unpublished = false;
	account_crash_point();
	r->stats->fetched += (unsigned)n;
	return 0;
}

static int
batch_commit_cb(void *ud)
{
	struct run *r = ud;
	int ret = batch_commit(r);

	if (ret < 0)
		batch_discard(r);
	return ret;
}

static int
fetch_batch(struct run *r, unsigned *nums, size_t n)
{
	struct mp_sink sink = { sink_begin, sink_data, sink_end, r };
	int ret;

	r->nbatch = 0;
	ret = pop3_retr(r->pop, nums, n, &sink, r->err);
	if (ret == -ECANCELED)
		return account_commit_stopped(r->err, batch_commit_cb, r,
					      r->nbatch);
	if (ret < 0) {
		batch_discard(r);
		return ret;
	}
	ret = batch_commit(r);
	if (ret < 0)
		batch_discard(r);
	return ret;
}

static bool
wanted(struct run *r, const struct pop3_msg *m)
{
	if (already_fetched(r, m, NULL))
		return false;
	if (m->size > account_msg_cap(r->a)) {
		r->stats->too_large++;
		log_notice("%s: message %u (%llu bytes) is over %s; left on the server",
			   r->a->name, m->num, (unsigned long long)m->size,
			   account_cap_name(r->a));
		return false;
	}
	return true;
}

static int
fetch_new(struct run *r)
{
	unsigned *nums = calloc(BATCH_MAX_MSGS, sizeof(*nums));
	size_t n = 0;
	int ret = 0;

	r->batch = calloc(BATCH_MAX_MSGS, sizeof(*r->batch));
	r->files = calloc(BATCH_MAX_MSGS, sizeof(*r->files));
	if (!nums || !r->batch || !r->files) {
		ret = mp_err_oom(r->err);
		goto out;
	}
	for (size_t i = 0; i < r->nmsgs; i++)
		if (!already_fetched(r, &r->msgs[i], NULL))
			r->total_new++;
	r->batch_bytes = 0;
	for (size_t i = 0; i < r->nmsgs && ret == 0; i++) {
		const struct pop3_msg *m = &r->msgs[i];

		if (!wanted(r, m))
			continue;
		r->batch[n] = m;
		nums[n++] = m->num;
		r->batch_bytes += m->size;
		if (n == BATCH_MAX_MSGS || r->batch_bytes >= BATCH_MAX_BYTES) {
			ret = fetch_batch(r, nums, n);
			n = 0;
			r->batch_bytes = 0;
		}
	}
	if (ret == 0 && n > 0)
		ret = fetch_batch(r, nums, n);
	progress(r, true);
out:
	free(nums);
	free(r->batch);
	free(r->files);
	r->batch = NULL;
	r->files = NULL;
	return ret;
}

/* Whether the server copy of m may go now (DESIGN: keep, keep_days). */
static bool
deletable(struct run *r, const struct pop3_msg *m)
{
	int64_t when;

	if (!m->uidl[0])
		return m->size <= account_msg_cap(r->a);    /* fetched in this session */
	if (!already_fetched(r, m, &when))
		return false;
	if (r->a->keep_days >= 0)
		return (int64_t)r->now - when >= r->a->keep_days * 86400;
	return !r->a->keep;
}

struct prune {
	const char **server;   /* sorted UIDLs on the server */
	size_t nserver;
	char **gone;
	size_t ngone, cap;
};

static int
prune_cb(void *ud, const char *key, int64_t when)
{
	struct prune *p = ud;
	const char *uidl = key_uidl(key);

	(void)when;
	/* No-UIDL keys served start-up recovery only: drop them (see msg_key). */
	if (uidl && bsearch(&uidl, p->server, p->nserver, sizeof(*p->server), cmp_str))
		return 0;
	if (p->ngone == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		char **v = realloc(p->gone, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		p->gone = v;
		p->cap = cap;
	}
	p->gone[p->ngone] = strdup(key);
	if (!p->gone[p->ngone])
		return -ENOMEM;
	p->ngone++;
	return 0;
}

/*
 * Forgets what the server no longer has (deleted here or by another
 * client), so the state stays the size of the mailbox.
 */
static int
prune_state(struct run *r)
{
	struct prune p = { 0 };
	int ret = 0;

	p.server = calloc(r->nmsgs + 1, sizeof(*p.server));
	if (!p.server)
		return mp_err_oom(r->err);
	for (size_t i = 0; i < r->nmsgs; i++)
		if (r->msgs[i].uidl[0])
			p.server[p.nserver++] = r->msgs[i].uidl;
	qsort(p.server, p.nserver, sizeof(*p.server), cmp_str);
	ret = state_foreach(r->st, prune_cb, &p);
	if (ret < 0)
		ret = mp_err_oom(r->err);
	for (size_t i = 0; i < p.ngone; i++) {
		if (ret == 0)
			ret = state_remove(r->st, p.gone[i], r->err);
		free(p.gone[i]);
	}
	if (ret == 0 && p.ngone > 0) {
		r->changed = true;
		ret = state_sync(r->st, r->err);
	}
	free(p.gone);
	free(p.server);
	return ret;
}

/*
 * DELE what policy allows, then QUIT: the server deletes only on QUIT's +OK
 * (RFC 1939 section 6). The state forgets those messages only once a later
 * UIDL listing no longer has them (prune_state): a server that answers +OK
 * and keeps a message must not make the next run fetch it again.
 */
static int
delete_and_quit(struct run *r)
{
	unsigned *nums = calloc(r->nmsgs + 1, sizeof(*nums));
	size_t n = 0;
	int ret;

	if (!nums)
		return mp_err_oom(r->err);
	for (size_t i = 0; i < r->nmsgs; i++)
		if (deletable(r, &r->msgs[i]))
			nums[n++] = r->msgs[i].num;
	ret = n ? pop3_dele(r->pop, nums, n, r->err) : 0;
	if (ret == 0)
		account_crash_point();
	if (ret == 0)
		ret = pop3_quit(r->pop, r->err);
	if (ret == 0) {
		account_crash_point();
		r->stats->deleted = (unsigned)n;
	}
	free(nums);
	return ret;
}

/* Finish or discard what an interrupted run left (invariant 2). */
static int
open_local(struct run *r)
{
	char tag[16];
	int ret;

	account_tag(r->a->name, tag);
	ret = maildir_open(r->a->maildir, tag, &r->md, r->err);
	if (ret == 0)
		maildir_set_sync_per_file(r->md, r->a->sync_per_file);
	if (ret == 0)
		ret = account_recover(r->a, r->st, r->md, r->err);
	if (ret == 0)
		ret = account_forget_lost(r->a, r->st, r->err);
	return ret;
}

static int
pop3_auth_cb(void *engine, enum sasl_mech mech, const char *user, const char *secret,
	     struct mp_err *err)
{
	return pop3_auth(engine, mech, user, secret, err);
}

static int
open_session(struct run *r)
{
	const struct mp_account *a = r->a;
	struct conn_opts co;
	struct conn *c = NULL;
	int ret;

	account_conn_opts(a, &co);
	ret = conn_open(&co, a->tls == MP_TLS_IMPLICIT, &c, r->err);
	if (ret < 0)
		return ret;
	ret = pop3_open(c, a->tls == MP_TLS_STARTTLS, &r->pop, r->err);
	if (ret < 0)
		return ret;
	return account_login(a, pop3_caps(r->pop)->sasl, pop3_caps(r->pop)->user, "USER",
			     pop3_auth_cb, r->pop, r->err);
}

static int
run_session(struct run *r)
{
	int ret = open_session(r);

	if (ret < 0)
		return ret;
	ret = pop3_list(r->pop, &r->msgs, &r->nmsgs, r->err);
	if (ret < 0)
		return ret;
	r->stats->on_server = (unsigned)r->nmsgs;
	if (r->nmsgs > 0 && !r->msgs[0].uidl[0] && (r->a->keep || r->a->keep_days >= 0))
		return mp_err_set(r->err, -EPROTO, MP_EX_PROTOCOL,
				  "the server does not support UIDL, so keep = yes and keep_days "
				  "cannot be honoured (messages could not be told apart across runs)");
	ret = prune_state(r);
	if (ret < 0)
		return ret;
	ret = fetch_new(r);
	if (ret < 0)
		return ret;
	return delete_and_quit(r);
}

static int
pop3_run(const struct mp_account *a, const struct account_opts *o, struct state *st,
	 struct account_stats *stats, struct mp_err *err)
{
	struct run r = { .a = a, .o = o, .stats = stats, .err = err, .st = st };
	int ret, cret;

	r.start_ms = util_now_ms();
	r.now = time(NULL);
	r.progress = (struct account_progress){ .name = a->name, .on = o->progress,
						.start_ms = r.start_ms };
	ret = open_local(&r);
	if (ret == 0)
		ret = run_session(&r);
	/*
	 * Compaction forgets the recorded names, which start-up recovery needs
	 * while any recorded message still sits in tmp/.
	 */
	if (r.changed && !r.unpublished) {
		struct mp_err cerr = { 0 };

		cret = state_compact(r.st, &cerr);
		if (cret < 0 && ret == 0) {
			*err = cerr;
			ret = cret;
		}
	}
	pop3_free(r.pop);
	free(r.msgs);
	maildir_close(r.md);
	return ret;
}

int
account_run(const struct mp_config *cfg, const struct mp_account *a,
	    const struct account_opts *o, struct account_stats *ret_stats, struct mp_err *err)
{
	int64_t start = util_now_ms();
	struct state *st = NULL;
	int ret;

	memset(ret_stats, 0, sizeof(*ret_stats));
	ret = state_open(cfg->state_dir, a->name, o->wait, &st, err);
	if (ret == 0)
		ret = a->protocol == MP_PROTO_IMAP ?
			account_imap_run(cfg, a, o, st, ret_stats, err) :
			pop3_run(a, o, st, ret_stats, err);
	state_close(st);
	ret_stats->elapsed_ms = util_now_ms() - start;
	if (ret < 0 && err->code == 0)
		mp_err_set(err, ret, mp_exit_from_errno(ret), "%s", strerror(-ret));
	return ret;
}

int
account_idle_wait(const struct mp_config *cfg, const struct mp_account *a, unsigned max_s,
		  volatile sig_atomic_t *stop, struct mp_err *err)
{
	int ret;

	/* POP3 has no push (RFC 1939): the caller polls. */
	if (a->protocol != MP_PROTO_IMAP)
		return mp_err_set(err, -ENOTSUP, MP_EX_CONFIG, "POP3 has no way to wait for "
				  "new mail (no IDLE)");
	ret = account_imap_idle(cfg->state_dir, a, max_s, stop, err);
	if (ret < 0 && err->code == 0)
		mp_err_set(err, ret, mp_exit_from_errno(ret), "%s", strerror(-ret));
	return ret;
}

struct top_ctx {
	struct hdr_scan hs;
};

static int
top_begin(void *ud, size_t idx)
{
	static const char *const names[] = { "Date", "From", "Subject" };
	struct top_ctx *t = ud;

	(void)idx;
	hdr_scan_init(&t->hs, names, 3);
	return 0;
}

static int
top_data(void *ud, const char *buf, size_t len)
{
	hdr_scan_feed(&((struct top_ctx *)ud)->hs, buf, len);
	return 0;
}

static int
top_end(void *ud)
{
	hdr_scan_finish(&((struct top_ctx *)ud)->hs);
	return 0;
}

int
account_pop3_preview(const struct mp_account *a, struct state *st, preview_cb cb, void *ud,
		     struct mp_err *err)
{
	struct account_stats stats = { 0 };
	struct account_opts o = { 0 };
	struct run r = { .a = a, .o = &o, .stats = &stats, .err = err, .st = st };
	struct top_ctx *t = calloc(1, sizeof(*t));
	struct mp_sink sink = { top_begin, top_data, top_end, t };
	int ret = t ? open_session(&r) : -ENOMEM;

	if (ret == 0)
		ret = pop3_list(r.pop, &r.msgs, &r.nmsgs, err);
	for (size_t i = 0; i < r.nmsgs && ret == 0; i++) {
		struct preview_item it = { .size = r.msgs[i].size };

		if (already_fetched(&r, &r.msgs[i], NULL))
			continue;
		/* TOP n 0: the header only (RFC 1939 section 7). */
		ret = pop3_top(r.pop, r.msgs[i].num, 0, &sink, err);
		if (ret < 0)
			break;
		it.date = t->hs.found[0] ? t->hs.values[0] : NULL;
		it.from = t->hs.found[1] ? t->hs.values[1] : NULL;
		it.subject = t->hs.found[2] ? t->hs.values[2] : NULL;
		ret = cb(ud, &it);
	}
	if (ret == 0)
		ret = pop3_quit(r.pop, err);
	pop3_free(r.pop);
	free(r.msgs);
	free(t);
	return ret;
}
