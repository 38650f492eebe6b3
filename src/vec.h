/*
 * Growable arrays for the account modules (account runs, delivery,
 * preview): one doubling rule instead of a copy in each collector. Calls
 * no other module of mailpull. Not for other modules.
 */
#ifndef MAILPULL_VEC_H
#define MAILPULL_VEC_H

#include "mailpull/common.h"

/*
 * Makes room for element n of the array *pv (a pointer to the array's
 * pointer; *cap elements of size bytes allocated), doubling, from first
 * when nothing is allocated yet. Returns 0 or -ENOMEM (the array is then
 * unchanged, still owned by the caller).
 */
int vec_grow(void *pv, size_t n, size_t *cap, size_t size, size_t first) MP_WUR;

/* Strings, each a malloc'd copy owned by the vector. */
struct vec_str {
	char **v;
	size_t n, cap;
};

/* Appends a copy of s. Returns 0 or -ENOMEM (nothing appended). */
int vec_str_push(struct vec_str *sv, const char *s) MP_WUR;

/* Frees every string and the array; leaves sv empty. */
void vec_str_free(struct vec_str *sv);

/* qsort()/bsearch() order of an array of string pointers (strcmp). */
int vec_str_cmp(const void *a, const void *b);

/* UIDs. */
struct vec_u32 {
	uint32_t *v;
	size_t n, cap;
};

/* Appends uid. Returns 0 or -ENOMEM (nothing appended). */
int vec_u32_push(struct vec_u32 *u, uint32_t uid) MP_WUR;

#endif
