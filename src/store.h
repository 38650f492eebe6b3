/*
 * A bounded single-producer, single-consumer queue of records in one byte
 * ring: the wire thread puts the messages it receives, the storage thread
 * (deliver.c) gets them and does the file system work, so the server never
 * waits for the disk. The producer blocks only while the ring is full; the
 * consumer may give up (store_queue_fail()), after which every put returns
 * its error at once instead of blocking. Records carry a type, chosen by
 * the caller, and up to store_queue_max_record() bytes. Not for other
 * modules.
 */
#ifndef MAILPULL_STORE_H
#define MAILPULL_STORE_H

#include <stddef.h>
#include <stdint.h>

struct store_queue;

/* One record as the consumer sees it: its bytes may wrap round the ring. */
struct store_rec {
	unsigned type;
	size_t len;
	const char *p[2];      /* the bytes: p[0] (n[0] bytes), then p[1] (n[1], maybe 0) */
	size_t n[2];
};

/*
 * A queue of cap bytes (rounded up to a multiple of 4 KiB, at least
 * 16 KiB). 0, -ENOMEM or the pthread call's error (negative).
 */
int store_queue_new(size_t cap, struct store_queue **ret);

/* Frees q (NULL is fine); no thread may be using it. */
void store_queue_free(struct store_queue *q);

/* The largest payload a record may carry: a quarter of the ring. */
size_t store_queue_max_record(const struct store_queue *q);

/*
 * Producer: appends a record (type > 0, len <= store_queue_max_record()
 * bytes from p), waiting while the ring is full. A record is handed to the
 * consumer at once when publish is true, else once enough bytes gathered
 * (fewer wake-ups); store_queue_publish() hands over what is pending.
 * 0, or the consumer's error from store_queue_fail() (the record dropped).
 */
int store_queue_put(struct store_queue *q, unsigned type, const void *p, size_t len,
		    bool publish);
void store_queue_publish(struct store_queue *q);

/*
 * Consumer: the next record, waiting for one until deadline_ms
 * (util_now_ms() clock; negative: no limit). 1 with *rec filled, 0 when
 * the deadline passed first. The record stays valid until
 * store_queue_next().
 */
int store_queue_get(struct store_queue *q, int64_t deadline_ms, struct store_rec *rec);

/* Consumer: done with the record store_queue_get() returned. */
void store_queue_next(struct store_queue *q, const struct store_rec *rec);

/* Consumer: gives up; from now on every put returns code (negative). */
void store_queue_fail(struct store_queue *q, int code);

/* Copies a record's bytes out, at most len. Returns the count copied. */
size_t store_rec_copy(const struct store_rec *rec, void *dst, size_t len);

#endif
