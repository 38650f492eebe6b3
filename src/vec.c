/* Growable arrays (vec.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

int
vec_grow(void *pv, size_t n, size_t *cap, size_t size, size_t first)
{
	void *v;
	size_t ncap;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : first;
	/* pv points at the caller's typed pointer: copied out and back as bytes. */
	memcpy(&v, pv, sizeof(v));
	v = reallocarray(v, ncap, size);
	if (!v)
		return -ENOMEM;
	memcpy(pv, &v, sizeof(v));
	*cap = ncap;
	return 0;
}

int
vec_str_push(struct vec_str *sv, const char *s)
{
	char *copy = strdup(s);

	if (!copy || vec_grow(&sv->v, sv->n, &sv->cap, sizeof(*sv->v), 64) < 0) {
		free(copy);
		return -ENOMEM;
	}
	sv->v[sv->n++] = copy;
	return 0;
}

void
vec_str_free(struct vec_str *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	*sv = (struct vec_str){ 0 };
}

int
vec_str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int
vec_u32_push(struct vec_u32 *u, uint32_t uid)
{
	if (vec_grow(&u->v, u->n, &u->cap, sizeof(*u->v), 256) < 0)
		return -ENOMEM;
	u->v[u->n++] = uid;
	return 0;
}
