/*
 * The storage queue: one byte ring, a mutex and two condition variables.
 * Each side copies record bytes outside the lock (the producer writes only
 * past the published head, the consumer reads only below it) and takes the
 * lock only to move the indices: the producer publishes a run of records
 * at once, the consumer releases a run at once, and each wakes the other
 * only when it is waiting, so a small message costs a few lock round trips,
 * not one per line.
 *
 * Records are an 8-byte header (type, length) and the payload padded to 8
 * bytes; the capacity is a multiple of 8, so a header never wraps round
 * the end of the ring while a payload may (two spans).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mailpull/common.h"
#include "store.h"

#define HDR 8u
#define PAD(n) (((n) + 7u) & ~(size_t)7u)

struct store_queue {
	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full;
	char *ring;
	size_t cap;
	/* under lock: monotonic byte counts, head - tail bytes in use */
	uint64_t head, tail;
	int failed;
	bool prod_waits, cons_waits;
	/* the producer's own: written but not yet published */
	uint64_t ph;
	/* the consumer's own: consumed but not yet released, and the head it last saw */
	uint64_t ct, seen_head;
};

struct rec_hdr {
	uint32_t type;
	uint32_t len;
};

int
store_queue_new(size_t cap, struct store_queue **ret)
{
	struct store_queue *q = calloc(1, sizeof(*q));
	pthread_condattr_t ca;
	int r;

	if (!q)
		return -ENOMEM;
	cap = cap < 16384 ? 16384 : (cap + 4095) & ~(size_t)4095;
	q->cap = cap;
	q->ring = malloc(cap);
	if (!q->ring) {
		free(q);
		return -ENOMEM;
	}
	r = pthread_condattr_init(&ca);
	/* The consumer's deadlines are util_now_ms()'s: the monotonic clock. */
	if (r == 0)
		r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (r == 0 && (r = pthread_cond_init(&q->not_empty, &ca)) == 0 &&
	    (r = pthread_cond_init(&q->not_full, NULL)) != 0)
		pthread_cond_destroy(&q->not_empty);
	pthread_condattr_destroy(&ca);
	if (r == 0 && (r = pthread_mutex_init(&q->lock, NULL)) != 0) {
		pthread_cond_destroy(&q->not_empty);
		pthread_cond_destroy(&q->not_full);
	}
	if (r != 0) {
		free(q->ring);
		free(q);
		return -r;
	}
	*ret = q;
	return 0;
}

void
store_queue_free(struct store_queue *q)
{
	if (!q)
		return;
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->not_empty);
	pthread_cond_destroy(&q->not_full);
	free(q->ring);
	free(q);
}

size_t
store_queue_max_record(const struct store_queue *q)
{
	return q->cap / 4 - HDR;
}

/* Copies len bytes to ring position pos, wrapping round the end. */
static void
ring_put(struct store_queue *q, uint64_t pos, const void *p, size_t len)
{
	size_t at = (size_t)(pos % q->cap), first = q->cap - at < len ? q->cap - at : len;

	memcpy(q->ring + at, p, first);
	if (len > first)
		memcpy(q->ring, (const char *)p + first, len - first);
}

void
store_queue_publish(struct store_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->head = q->ph;
	if (q->cons_waits)
		pthread_cond_signal(&q->not_empty);
	pthread_mutex_unlock(&q->lock);
}

int
store_queue_put(struct store_queue *q, unsigned type, const void *p, size_t len, bool publish)
{
	size_t need = HDR + PAD(len);
	struct rec_hdr h = { (uint32_t)type, (uint32_t)len };
	int failed;

	pthread_mutex_lock(&q->lock);
	/* The consumer may be waiting for what is pending: hand it over before waiting. */
	if (q->cap - (q->ph - q->tail) < need && q->head != q->ph) {
		q->head = q->ph;
		if (q->cons_waits)
			pthread_cond_signal(&q->not_empty);
	}
	while (!q->failed && q->cap - (q->ph - q->tail) < need) {
		q->prod_waits = true;
		pthread_cond_wait(&q->not_full, &q->lock);
		q->prod_waits = false;
	}
	failed = q->failed;
	pthread_mutex_unlock(&q->lock);
	if (failed)
		return failed;
	ring_put(q, q->ph, &h, HDR);
	if (len)
		ring_put(q, q->ph + HDR, p, len);
	q->ph += need;
	/* An eighth of the ring pending is worth a wake-up. */
	if (publish || q->ph - q->head >= q->cap / 8)
		store_queue_publish(q);
	return 0;
}

/* Hands consumed bytes back to the producer. Under lock. */
static void
release_locked(struct store_queue *q)
{
	q->tail = q->ct;
	if (q->prod_waits)
		pthread_cond_signal(&q->not_full);
}

int
store_queue_get(struct store_queue *q, int64_t deadline_ms, struct store_rec *rec)
{
	struct rec_hdr h;
	size_t at;

	if (q->ct == q->seen_head) {
		pthread_mutex_lock(&q->lock);
		release_locked(q);
		while (q->head == q->ct) {
			struct timespec ts = { (time_t)(deadline_ms / 1000),
					       (long)(deadline_ms % 1000) * 1000000 };

			q->cons_waits = true;
			if (deadline_ms < 0) {
				pthread_cond_wait(&q->not_empty, &q->lock);
			} else if (pthread_cond_timedwait(&q->not_empty, &q->lock, &ts) == ETIMEDOUT) {
				q->cons_waits = false;
				if (q->head != q->ct)
					break;
				pthread_mutex_unlock(&q->lock);
				return 0;
			}
			q->cons_waits = false;
		}
		q->seen_head = q->head;
		pthread_mutex_unlock(&q->lock);
	}
	at = (size_t)(q->ct % q->cap);
	memcpy(&h, q->ring + at, HDR);
	rec->type = h.type;
	rec->len = h.len;
	at = (at + HDR) % q->cap;
	rec->p[0] = q->ring + at;
	rec->n[0] = q->cap - at < rec->len ? q->cap - at : rec->len;
	rec->p[1] = q->ring;
	rec->n[1] = rec->len - rec->n[0];
	return 1;
}

void
store_queue_next(struct store_queue *q, const struct store_rec *rec)
{
	q->ct += HDR + PAD(rec->len);
	/* Release in runs of an eighth of the ring, and whenever the producer waits. */
	if (q->ct - q->tail >= q->cap / 8) {
		pthread_mutex_lock(&q->lock);
		release_locked(q);
		pthread_mutex_unlock(&q->lock);
	}
}

void
store_queue_fail(struct store_queue *q, int code)
{
	pthread_mutex_lock(&q->lock);
	q->failed = code;
	pthread_cond_broadcast(&q->not_full);
	pthread_mutex_unlock(&q->lock);
}

size_t
store_rec_copy(const struct store_rec *rec, void *dst, size_t len)
{
	size_t a = rec->n[0] < len ? rec->n[0] : len;
	size_t b = rec->n[1] < len - a ? rec->n[1] : len - a;

	memcpy(dst, rec->p[0], a);
	memcpy((char *)dst + a, rec->p[1], b);
	return a + b;
}
