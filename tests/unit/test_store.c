/*
 * The storage queue (store.c) across two threads, and the delivery
 * sequence with its storage thread (deliver_run()): messages from a
 * scripted fetch land in a real Maildir and state, batches are cut, a stop
 * commits what is complete, a storage error reaches the sink.
 */
#include <errno.h>
#include <ftw.h>
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "mailpull/util.h"
#include "deliver.h"
#include "store.h"

/* ---- the queue ------------------------------------------------------------ */

#define NRECS 20000

/* Record i: type 1 + i % 3, i % 5000 bytes of (i + k) & 0xff (some wrap, some are max). */
static size_t
rec_len(const struct store_queue *q, unsigned i)
{
	size_t max = store_queue_max_record(q);

	return i % 97 == 0 ? max : (i * 7919u) % 5000u;
}

static void *
producer(void *arg)
{
	struct store_queue *q = arg;
	static char buf[65536];

	for (unsigned i = 0; i < NRECS; i++) {
		size_t len = rec_len(q, i);

		for (size_t k = 0; k < len; k++)
			buf[k] = (char)((i + k) & 0xff);
		if (store_queue_put(q, 1 + i % 3, buf, len, i % 10 == 0) != 0)
			return (void *)1;
	}
	store_queue_publish(q);
	return NULL;
}

static void
test_queue_order(void **state)
{
	struct store_queue *q;
	pthread_t th;
	void *res;
	static char got[65536];

	(void)state;
	assert_int_equal(store_queue_new(20000, &q), 0);
	assert_true(store_queue_max_record(q) <= sizeof(got));
	assert_int_equal(pthread_create(&th, NULL, producer, q), 0);
	for (unsigned i = 0; i < NRECS; i++) {
		struct store_rec rec;

		assert_int_equal(store_queue_get(q, -1, &rec), 1);
		assert_int_equal(rec.type, 1 + i % 3);
		assert_int_equal(rec.len, rec_len(q, i));
		assert_int_equal(rec.n[0] + rec.n[1], rec.len);
		assert_int_equal(store_rec_copy(&rec, got, sizeof(got)), rec.len);
		for (size_t k = 0; k < rec.len; k++)
			assert_int_equal((unsigned char)got[k], (i + k) & 0xff);
		store_queue_next(q, &rec);
	}
	assert_int_equal(pthread_join(th, &res), 0);
	assert_null(res);
	store_queue_free(q);
}

static void
test_queue_deadline(void **state)
{
	struct store_queue *q;
	struct store_rec rec;
	int64_t t0 = util_now_ms();

	(void)state;
	assert_int_equal(store_queue_new(0, &q), 0);
	assert_int_equal(store_queue_get(q, t0 + 30, &rec), 0);
	assert_true(util_now_ms() >= t0 + 30);
	/* Not published yet: the consumer does not see it. */
	assert_int_equal(store_queue_put(q, 7, "abc", 3, false), 0);
	assert_int_equal(store_queue_get(q, util_now_ms() + 10, &rec), 0);
	store_queue_publish(q);
	assert_int_equal(store_queue_get(q, util_now_ms() + 1000, &rec), 1);
	assert_int_equal(rec.type, 7);
	assert_int_equal(rec.len, 3);
	assert_memory_equal(rec.p[0], "abc", 3);
	store_queue_next(q, &rec);
	store_queue_free(q);
}

struct filler {
	struct store_queue *q;
	int ret;
};

/* Puts until the queue fails: blocks once it is full. */
static void *
filler_main(void *arg)
{
	struct filler *f = arg;
	static const char buf[1000];

	do
		f->ret = store_queue_put(f->q, 1, buf, sizeof(buf), false);
	while (f->ret == 0);
	return NULL;
}

static void
test_queue_fail_wakes_producer(void **state)
{
	struct filler f = { 0 };
	pthread_t th;

	(void)state;
	assert_int_equal(store_queue_new(0, &f.q), 0);
	assert_int_equal(pthread_create(&th, NULL, filler_main, &f), 0);
	usleep(50000);       /* the filler is blocked on the full ring by now, or soon */
	store_queue_fail(f.q, -ENOSPC);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(f.ret, -ENOSPC);
	assert_int_equal(store_queue_put(f.q, 1, "x", 1, true), -ENOSPC);
	store_queue_free(f.q);
}

/* ---- deliver_run() with its storage thread -------------------------------- */

struct fx {
	char dir[64];
	char md[128];
	struct mp_account a;
	struct account_opts o;
	struct account_stats stats;
	struct mp_err err;
	struct state *st;
	struct maildir *mdir;
	struct deliver d;
	volatile sig_atomic_t stop;
	/* the scripted fetch */
	unsigned nmsgs, stop_after, fail_record_at;
	size_t size;
	int fetch_ret;          /* what the last sink call returned */
	/* what record saw */
	unsigned records;
	pthread_t main_thread;
	bool record_on_main;
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
fetch_cb(void *ud)
{
	struct fx *fx = ud;
	static char body[300000];

	for (unsigned i = 0; i < fx->nmsgs; i++) {
		struct deliver_msg m = { .uid = i + 1 };
		int r;

		if (fx->stop_after && i == fx->stop_after)
			fx->stop = 1;
		r = deliver_begin(&fx->d);
		if (r < 0)
			return fx->fetch_ret = r;
		snprintf(body, sizeof(body), "Subject: %u\n\n", i + 1);
		memset(body + strlen(body), 'x', fx->size);
		/* In pieces, as an engine hands them over. */
		for (size_t off = 0, len = strlen(body); off < len; off += 1000) {
			r = deliver_data(&fx->d, body + off, len - off < 1000 ? len - off : 1000);
			if (r < 0)
				return fx->fetch_ret = r;
		}
		if (i % 7 == 3) {        /* an unusable response: aborted, then sent again */
			deliver_abort(&fx->d);
			r = deliver_begin(&fx->d);
			if (r == 0)
				r = deliver_data(&fx->d, body, strlen(body));
			if (r < 0)
				return fx->fetch_ret = r;
		}
		r = deliver_end(&fx->d, &m);
		if (r < 0)
			return fx->fetch_ret = r;
	}
	return 0;
}

static int
record_cb(void *ud, const struct deliver_msg *m, const char *name, struct mp_err *err)
{
	struct fx *fx = ud;
	char key[32];

	if (pthread_equal(pthread_self(), fx->main_thread))
		fx->record_on_main = true;
	if (fx->fail_record_at && ++fx->records == fx->fail_record_at)
		return mp_err_set(err, -ENOSPC, MP_EX_IOERR, "scripted failure recording %s", name);
	if (!fx->fail_record_at)
		fx->records++;
	snprintf(key, sizeof(key), "uid%u", m->uid);
	return state_add(fx->st, key, 1, name, err);
}

static const struct deliver_ops ops = { fetch_cb, record_cb };

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	char sdir[128];

	assert_non_null(fx);
	memcpy(fx->dir, "/tmp/mp-store-XXXXXX", sizeof("/tmp/mp-store-XXXXXX"));
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->md, sizeof(fx->md), "%s/Mail", fx->dir);
	snprintf(sdir, sizeof(sdir), "%s/state", fx->dir);
	fx->a.name = "test";
	fx->o.stop = &fx->stop;
	fx->size = 100;
	fx->main_thread = pthread_self();
	assert_int_equal(state_open(sdir, "test", false, &fx->st, &fx->err), 0);
	assert_int_equal(deliver_open(&fx->a, fx->md, &fx->mdir, &fx->err), 0);
	deliver_init(&fx->d, &fx->a, &fx->o, fx->st, &fx->stats, &fx->err, &ops, fx);
	fx->d.md = fx->mdir;
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;

	maildir_close(fx->mdir);
	state_close(fx->st);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static unsigned
count_files(const struct fx *fx, const char *sub)
{
	char path[192];
	unsigned n = 0;
	DIR *d;
	struct dirent *e;

	snprintf(path, sizeof(path), "%s/%s", fx->md, sub);
	d = opendir(path);
	assert_non_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void
test_run_all(void **state)
{
	struct fx *fx = *state;

	fx->nmsgs = 2 * DELIVER_BATCH_MSGS + 5;     /* three batches at least */
	assert_int_equal(deliver_run(&fx->d), 0);
	assert_int_equal(fx->stats.fetched, fx->nmsgs);
	assert_int_equal(fx->records, fx->nmsgs);
	assert_false(fx->record_on_main);
	assert_int_equal(count_files(fx, "new"), fx->nmsgs);
	assert_int_equal(count_files(fx, "tmp"), 0);
	assert_int_equal(state_count(fx->st), fx->nmsgs);
	assert_true(fx->d.changed);
	assert_false(fx->d.unpublished);
	assert_int_equal(deliver_finish(&fx->d, 0), 0);
}

/* Bodies much larger than the queue go through in records of its largest size. */
static void
test_run_large(void **state)
{
	struct fx *fx = *state;

	fx->nmsgs = 5;
	fx->size = 290000;
	assert_int_equal(deliver_run(&fx->d), 0);
	assert_int_equal(fx->stats.fetched, 5);
	assert_int_equal(count_files(fx, "new"), 5);
}

static void
test_run_stop_commits_complete(void **state)
{
	struct fx *fx = *state;

	fx->nmsgs = 50;
	fx->stop_after = 20;
	assert_int_equal(deliver_run(&fx->d), -ECANCELED);
	assert_int_equal(fx->err.code, -ECANCELED);
	assert_int_equal(fx->stats.fetched, 20);
	assert_int_equal(count_files(fx, "new"), 20);
	assert_int_equal(count_files(fx, "tmp"), 0);
}

static void
test_run_storage_error_reaches_sink(void **state)
{
	struct fx *fx = *state;

	/* Far more than the queue holds, so the fetch is still going when it fails. */
	fx->nmsgs = 3 * DELIVER_BATCH_MSGS;
	fx->size = 5000;
	fx->fail_record_at = DELIVER_BATCH_MSGS + 3;    /* in the second batch */
	assert_int_equal(deliver_run(&fx->d), -ENOSPC);
	assert_int_equal(fx->err.code, -ENOSPC);
	assert_non_null(strstr(fx->err.msg, "scripted failure"));
	/* The fetch was stopped by its sink, not left to run to the end. */
	assert_int_equal(fx->fetch_ret, -ENOSPC);
	assert_true(fx->stats.fetched < fx->nmsgs);
	assert_int_equal(count_files(fx, "new"), fx->stats.fetched);
	assert_true(fx->d.unpublished);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_queue_order),
		cmocka_unit_test(test_queue_deadline),
		cmocka_unit_test(test_queue_fail_wakes_producer),
		cmocka_unit_test_setup_teardown(test_run_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_stop_commits_complete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_storage_error_reaches_sink, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
