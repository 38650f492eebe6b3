/* The storage queue: order, wrapping, a blocked producer, a failing consumer. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mailpull/util.h"
#include "store.h"

/* A payload of len bytes that depends on its sequence number. */
static void
fill(char *buf, size_t len, unsigned seq)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(seq * 31u + i * 7u);
}

static void
test_order_and_types(void **state)
{
	struct store_queue *q;
	struct store_rec rec;
	char buf[100], out[100];

	(void)state;
	assert_int_equal(store_queue_new(0, &q), 0);
	assert_int_equal(store_queue_max_record(q), 16384 / 4 - 8);
	for (unsigned i = 0; i < 5; i++) {
		fill(buf, i * 10, i);
		assert_int_equal(store_queue_put(q, i + 1, buf, i * 10, i == 4), 0);
	}
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(store_queue_get(q, -1, &rec), 1);
		assert_int_equal(rec.type, i + 1);
		assert_int_equal(rec.len, i * 10);
		assert_int_equal(store_rec_copy(&rec, out, sizeof(out)), i * 10);
		fill(buf, i * 10, i);
		assert_memory_equal(out, buf, i * 10);
		store_queue_next(q, &rec);
	}
	/* Nothing left: the deadline passes. */
	assert_int_equal(store_queue_get(q, util_now_ms() + 20, &rec), 0);
	store_queue_free(q);
	store_queue_free(NULL);
}

/* Unpublished records are not seen until store_queue_publish(). */
static void
test_publish(void **state)
{
	struct store_queue *q;
	struct store_rec rec;

	(void)state;
	assert_int_equal(store_queue_new(16384, &q), 0);
	assert_int_equal(store_queue_put(q, 1, "abc", 3, false), 0);
	assert_int_equal(store_queue_get(q, util_now_ms() + 10, &rec), 0);
	store_queue_publish(q);
	assert_int_equal(store_queue_get(q, 0, &rec), 1);
	assert_int_equal(rec.len, 3);
	store_queue_next(q, &rec);
	store_queue_free(q);
}

struct producer {
	struct store_queue *q;
	unsigned count;
	size_t maxlen;
	int ret;
};

static size_t
len_of(unsigned seq, size_t maxlen)
{
	return (seq * 2654435761u) % (maxlen + 1);
}

static void *
produce(void *arg)
{
	struct producer *p = arg;
	char *buf = malloc(p->maxlen + 1);

	for (unsigned i = 0; i < p->count && p->ret == 0; i++) {
		size_t len = len_of(i, p->maxlen);

		fill(buf, len, i);
		p->ret = store_queue_put(p->q, 1 + i % 7, buf, len, i % 5 == 0);
	}
	if (p->ret == 0)
		p->ret = store_queue_put(p->q, 99, NULL, 0, true);
	free(buf);
	return NULL;
}

/*
 * Two threads through a small ring: records of every length up to the
 * largest, wrapping round the end, the producer blocking while it is full;
 * every byte arrives in order.
 */
static void
test_threads_wrap(void **state)
{
	struct producer p = { .count = 20000 };
	pthread_t t;
	struct store_rec rec;
	unsigned seq = 0;
	char *want, *got;

	(void)state;
	assert_int_equal(store_queue_new(16384, &p.q), 0);
	p.maxlen = store_queue_max_record(p.q);
	want = malloc(p.maxlen);
	got = malloc(p.maxlen);
	assert_int_equal(pthread_create(&t, NULL, produce, &p), 0);
	for (;;) {
		assert_int_equal(store_queue_get(p.q, -1, &rec), 1);
		if (rec.type == 99)
			break;
		assert_int_equal(rec.type, 1 + seq % 7);
		assert_int_equal(rec.len, len_of(seq, p.maxlen));
		assert_int_equal(rec.n[0] + rec.n[1], rec.len);
		store_rec_copy(&rec, got, rec.len);
		fill(want, rec.len, seq);
		assert_memory_equal(got, want, rec.len);
		store_queue_next(p.q, &rec);
		seq++;
	}
	store_queue_next(p.q, &rec);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(p.ret, 0);
	assert_int_equal(seq, p.count);
	free(want);
	free(got);
	store_queue_free(p.q);
}

/* A consumer that gives up frees a producer blocked on a full ring. */
static void
test_fail_unblocks(void **state)
{
	struct producer p = { .count = 1000000 };
	pthread_t t;
	struct store_rec rec;

	(void)state;
	assert_int_equal(store_queue_new(16384, &p.q), 0);
	p.maxlen = store_queue_max_record(p.q);
	assert_int_equal(pthread_create(&t, NULL, produce, &p), 0);
	assert_int_equal(store_queue_get(p.q, -1, &rec), 1);
	store_queue_fail(p.q, -ENOSPC);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(p.ret, -ENOSPC);
	/* Later puts fail at once. */
	assert_int_equal(store_queue_put(p.q, 1, "x", 1, true), -ENOSPC);
	store_queue_free(p.q);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_types),
		cmocka_unit_test(test_publish),
		cmocka_unit_test(test_threads_wrap),
		cmocka_unit_test(test_fail_unblocks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
