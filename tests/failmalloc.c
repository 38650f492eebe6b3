/*
 * failmalloc.so: an LD_PRELOAD library that makes one allocation made by
 * mailpull's own code fail, so the tests can see every such failure carried
 * up as an error instead of a crash, a hang or a lost message.
 *
 * Only calls whose caller lies in the main executable count: allocations
 * inside OpenSSL, libconfuse or libc are theirs to handle and are never
 * failed. The calls covered are the allocating ones mailpull makes: malloc,
 * calloc, realloc, reallocarray, strdup, strndup, asprintf, vasprintf,
 * getline, opendir, fdopendir and realpath.
 *
 * Controlled by the environment:
 *
 *   FM_FAIL_AT=N   the Nth counted call (from 1) fails with ENOMEM; the
 *                  others go through. Unset or 0: none fails.
 *   FM_FAIL_FROM=N the Nth counted call and every one after it fail, as
 *                  when memory has run out for good.
 *   FM_LOG=FILE    at exit, one line per process is appended:
 *                  "<pid> calls <count> failed <0|1> at <caller address
 *                  relative to the executable's load address, or ->"
 *
 * Built without sanitizers and used only with the plain build: a
 * sanitizer's allocator would sit in front of this one.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);

static uintptr_t exe_lo, exe_hi, exe_base;
static long fail_at, fail_from;
static long calls;
static uintptr_t failed_at;
static bool failed;

static int
find_exe(struct dl_phdr_info *info, size_t size, void *ud)
{
	(void)size;
	(void)ud;
	/* The first object is the executable itself. */
	exe_base = info->dlpi_addr;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo, hi;

		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		lo = info->dlpi_addr + ph->p_vaddr;
		hi = lo + ph->p_memsz;
		if (!exe_lo || lo < exe_lo)
			exe_lo = lo;
		if (hi > exe_hi)
			exe_hi = hi;
	}
	return 1;
}

__attribute__((constructor)) static void
fm_init(void)
{
	const char *v = getenv("FM_FAIL_AT");

	fail_at = v ? strtol(v, NULL, 10) : 0;
	v = getenv("FM_FAIL_FROM");
	fail_from = v ? strtol(v, NULL, 10) : 0;
	dl_iterate_phdr(find_exe, NULL);
}

__attribute__((destructor)) static void
fm_fini(void)
{
	const char *path = getenv("FM_LOG");
	char line[160];
	int fd, n;

	if (!path || !*path)
		return;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (failed)
		n = snprintf(line, sizeof(line), "%ld calls %ld failed 1 at 0x%lx\n", (long)getpid(),
			     calls, (unsigned long)(failed_at - exe_base));
	else
		n = snprintf(line, sizeof(line), "%ld calls %ld failed 0 at -\n", (long)getpid(),
			     calls);
	if (n > 0 && write(fd, line, (size_t)n) < 0)
		n = 0;
	close(fd);
}

/* Whether this call, made from caller, is the one to fail. */
static bool
fail_now(void *caller)
{
	uintptr_t c = (uintptr_t)caller;

	if (c < exe_lo || c >= exe_hi)
		return false;
	calls++;
	if ((fail_at <= 0 || calls != fail_at) && (fail_from <= 0 || calls < fail_from))
		return false;
	if (!failed)
		failed_at = c;
	failed = true;
	errno = ENOMEM;
	return true;
}

#define CALLER __builtin_return_address(0)

__attribute__((noinline)) void *
malloc(size_t size)
{
	return fail_now(CALLER) ? NULL : __libc_malloc(size);
}

__attribute__((noinline)) void *
calloc(size_t n, size_t size)
{
	return fail_now(CALLER) ? NULL : __libc_calloc(n, size);
}

__attribute__((noinline)) void *
realloc(void *p, size_t size)
{
	return fail_now(CALLER) ? NULL : __libc_realloc(p, size);
}

__attribute__((noinline)) void *
reallocarray(void *p, size_t n, size_t size)
{
	if (fail_now(CALLER))
		return NULL;
	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return __libc_realloc(p, n * size);
}

__attribute__((noinline)) char *
strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p;

	if (fail_now(CALLER))
		return NULL;
	p = __libc_malloc(n);
	return p ? memcpy(p, s, n) : NULL;
}

__attribute__((noinline)) char *
strndup(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	char *p;

	if (fail_now(CALLER))
		return NULL;
	p = __libc_malloc(n + 1);
	if (!p)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static int
next_vasprintf(char **ret, const char *fmt, va_list ap)
{
	static int (*next)(char **, const char *, va_list);

	if (!next)
		next = (int (*)(char **, const char *, va_list))dlsym(RTLD_NEXT, "vasprintf");
	return next(ret, fmt, ap);
}

__attribute__((noinline)) int
vasprintf(char **ret, const char *fmt, va_list ap)
{
	if (fail_now(CALLER))
		return -1;
	return next_vasprintf(ret, fmt, ap);
}

__attribute__((noinline)) int
asprintf(char **ret, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (fail_now(CALLER))
		return -1;
	va_start(ap, fmt);
	r = next_vasprintf(ret, fmt, ap);
	va_end(ap);
	return r;
}

ssize_t
getline(char **line, size_t *cap, FILE *f)
{
	static ssize_t (*next)(char **, size_t *, FILE *);

	if (fail_now(CALLER))
		return -1;
	if (!next)
		next = (ssize_t (*)(char **, size_t *, FILE *))dlsym(RTLD_NEXT, "getline");
	return next(line, cap, f);
}

__attribute__((noinline)) DIR *
opendir(const char *path)
{
	static DIR *(*next)(const char *);

	if (fail_now(CALLER))
		return NULL;
	if (!next)
		next = (DIR * (*)(const char *)) dlsym(RTLD_NEXT, "opendir");
	return next(path);
}

__attribute__((noinline)) DIR *
fdopendir(int fd)
{
	static DIR *(*next)(int);

	if (fail_now(CALLER))
		return NULL;
	if (!next)
		next = (DIR * (*)(int)) dlsym(RTLD_NEXT, "fdopendir");
	return next(fd);
}

__attribute__((noinline)) char *
realpath(const char *path, char *resolved)
{
	static char *(*next)(const char *, char *);

	/* Only the allocating form: with a buffer given nothing is allocated. */
	if (!resolved && fail_now(CALLER))
		return NULL;
	if (!next)
		next = (char *(*)(const char *, char *))dlsym(RTLD_NEXT, "realpath");
	return next(path, resolved);
}
