/* Parsing, paths, time and sanitizing helpers. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include "mailpull/util.h"
#include "mailpull/utf8.h"

/*
 * The bidirectional formatting characters: embeddings and overrides
 * (U+202A..U+202E), isolates (U+2066..U+2069) and the marks (U+200E,
 * U+200F, U+061C). Server text holding them can make what follows it on
 * the line read in another order than it is written (CVE-2021-42574).
 */
bool
util_is_bidi_control(uint32_t cp)
{
	return (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
	       cp == 0x200e || cp == 0x200f || cp == 0x061c;
}

void
util_free_secret(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

char
util_b64_digit(unsigned v, char c63)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+";

	return v < 63 ? a[v] : c63;
}

static int
b64_value(char c, char c63)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == c63)
		return 63;
	return -1;
}

int
util_b64_put(struct util_b64 *d, char c, unsigned char *ret_byte)
{
	int v = b64_value(c, d->c63);

	if (v < 0)
		return -EBADMSG;
	d->bits = (d->bits << 6) | (uint32_t)v;
	d->nbits += 6;
	if (d->nbits < 8)
		return 0;
	d->nbits -= 8;
	*ret_byte = (unsigned char)(d->bits >> d->nbits);
	d->bits &= (1u << d->nbits) - 1;
	return 1;
}

int
util_b64_end(const struct util_b64 *d, bool strict)
{
	/* Six bits left: a lone trailing character, no byte. */
	if (d->nbits >= 6 || (strict && d->bits != 0))
		return -EBADMSG;
	return 0;
}

size_t
util_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (dstlen == 0)
		return 0;
	for (size_t i = 0; i < srclen; i++) {
		unsigned char ch = (unsigned char)src[i];
		uint32_t cp = 0;
		int n = ch < 0x80 ? 1 : utf8_decode(src + i, srclen - i, &cp);

		if (n > 1 && util_is_bidi_control(cp)) {
			/* Shown as \uNNNN: visible, and it moves nothing. */
			if (o + 6 >= dstlen)
				break;
			dst[o++] = '\\';
			dst[o++] = 'u';
			for (int shift = 12; shift >= 0; shift -= 4)
				dst[o++] = hex[(cp >> shift) & 15];
			i += (size_t)n - 1;
		} else if (n > 1 && cp >= 0xa0) {
			/* Valid UTF-8 passes, but not a C1 control (U+0080..U+009F:
			 * U+009B is CSI); invalid bytes (a raw 0x9b too) are shown
			 * as \xNN. */
			if (o + (size_t)n >= dstlen)
				break;
			memcpy(dst + o, src + i, (size_t)n);
			o += (size_t)n;
			i += (size_t)n - 1;
		} else if (ch < 0x20 || ch >= 0x7f) {
			if (o + 4 >= dstlen)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[ch >> 4];
			dst[o++] = hex[ch & 15];
		} else {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)ch;
		}
	}
	dst[o] = '\0';
	return o;
}

int
util_parse_u64(const char *s, size_t len, uint64_t *ret)
{
	uint64_t v = 0;

	if (len == 0)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*ret = v;
	return 0;
}

static int
parse_with_suffix(const char *s, const char *suffixes, const uint64_t *mult, uint64_t *ret)
{
	size_t len = strlen(s);
	uint64_t m = 1, v;
	int r;

	if (len > 0) {
		const char *p = strchr(suffixes, s[len - 1]);

		if (p && *p) {
			m = mult[p - suffixes];
			len--;
		}
	}
	r = util_parse_u64(s, len, &v);
	if (r < 0)
		return r;
	if (m > 1 && v > UINT64_MAX / m)
		return -ERANGE;
	*ret = v * m;
	return 0;
}

int
util_parse_duration(const char *s, uint64_t *ret_seconds)
{
	static const uint64_t mult[] = { 1, 60, 3600, 86400 };

	return parse_with_suffix(s, "smhd", mult, ret_seconds);
}

int
util_parse_size(const char *s, uint64_t *ret_bytes)
{
	static const uint64_t mult[] = { 1024, 1024, 1048576, 1048576, 1073741824, 1073741824 };

	return parse_with_suffix(s, "kKmMgG", mult, ret_bytes);
}

char *
util_expand_home(const char *path)
{
	const char *home;
	char *out;
	size_t hl, pl;

	if (path[0] != '~' || (path[1] != '\0' && path[1] != '/'))
		return strdup(path);
	home = getenv("HOME");
	if (!home || !*home) {
		errno = ENOENT;
		return NULL;
	}
	hl = strlen(home);
	pl = strlen(path + 1);
	out = malloc(hl + pl + 1);
	if (!out)
		return NULL;
	memcpy(out, home, hl);
	memcpy(out + hl, path + 1, pl + 1);
	return out;
}

/*
 * A new directory only survives a crash once its entry is durable in its
 * parent, so the parent of each directory created here is fsynced before
 * the function returns (and before anything relies on the new one).
 */
int
util_mkdir_p(const char *path, unsigned mode)
{
	char *p = strdup(path);
	int r = 0;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;

		*s = '\0';
		if (mkdir(p, mode) == 0) {
			char *slash = strrchr(p, '/');

			if (!slash) {
				r = util_fsync_dir(".");
			} else if (slash == p) {
				r = util_fsync_dir("/");
			} else {
				*slash = '\0';
				r = util_fsync_dir(p);
				*slash = '/';
			}
			if (r < 0)
				break;
		} else if (errno != EEXIST) {
			r = -errno;
			break;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	if (r == 0) {
		struct stat st;

		if (stat(path, &st) < 0)
			r = -errno;
		else if (!S_ISDIR(st.st_mode))
			r = -ENOTDIR;
	}
	free(p);
	return r;
}

bool
util_owner_trusted(uid_t uid)
{
	return uid == geteuid() || uid == 0;
}

int
util_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int64_t
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
util_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c & ~0x20);
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

uint32_t
util_fnv1a(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 16777619u;
	}
	return h;
}

char *
util_strndup(const char *s, size_t n)
{
	char *d = malloc(n + 1);

	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

int
util_write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}


int
util_b64_decode_strict(const char *s, size_t len, unsigned char *out, size_t outmax,
		       size_t *ret_len)
{
	struct util_b64 d = UTIL_B64_STD;
	size_t o = 0, pad = 0;

	if (len % 4 != 0)
		return -EBADMSG;
	if (len > 0 && s[len - 1] == '=')
		pad = len > 1 && s[len - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < len - pad; i++) {
		unsigned char c;
		int r = util_b64_put(&d, s[i], &c);

		if (r < 0)
			return -EBADMSG;
		if (r > 0) {
			if (o == outmax)
				return -EBADMSG;
			out[o++] = c;
		}
	}
	if (util_b64_end(&d, true) < 0)
		return -EBADMSG;
	*ret_len = o;
	return 0;
}

char *
util_saslname(const char *s)
{
	size_t n = 0, o = 0;
	char *out;

	for (const char *p = s; *p; p++)
		n += (*p == ',' || *p == '=') ? 3 : 1;
	out = malloc(n + 1);
	if (!out)
		return NULL;
	for (const char *p = s; *p; p++) {
		if (*p == ',' || *p == '=') {
			memcpy(out + o, *p == ',' ? "=2C" : "=3D", 3);
			o += 3;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
	return out;
}

/*
 * libsystemd, loaded (dlopen) the first time it is needed rather than
 * linked: with libgcrypt, liblzma, libzstd, liblz4 and libcap behind it
 * its relocations cost every run about 1 MiB of resident memory, while
 * only the daemon under systemd uses it (readiness and watchdog
 * notifications, native journal entries). The three functions mailpull
 * calls are defined here under their own names, so svc.c and log.c use
 * them as documented; without NOTIFY_SOCKET or WATCHDOG_USEC they answer
 * as libsystemd does (0) without loading it. When it cannot be loaded,
 * notifications fail (-ENOSYS) and log.c falls back to stderr.
 */
#define UTIL_LIBSYSTEMD "libsystemd.so.0"

static struct {
	pthread_once_t once;
	void *handle;
	int (*notify)(int, const char *);
	int (*watchdog_enabled)(int, uint64_t *);
	int (*journal_sendv)(const char *, const char *, const char *, const struct iovec *, int);
} sd = { .once = PTHREAD_ONCE_INIT };

static void
sd_load(void)
{
	void *h = dlopen(UTIL_LIBSYSTEMD, RTLD_NOW | RTLD_LOCAL);

	if (!h)
		return;
	*(void **)&sd.notify = dlsym(h, "sd_notify");
	*(void **)&sd.watchdog_enabled = dlsym(h, "sd_watchdog_enabled");
	*(void **)&sd.journal_sendv = dlsym(h, "sd_journal_sendv_with_location");
	if (!sd.notify || !sd.watchdog_enabled || !sd.journal_sendv) {
		sd.notify = NULL;
		sd.watchdog_enabled = NULL;
		sd.journal_sendv = NULL;
		dlclose(h);
		return;
	}
	sd.handle = h;
}

/* Whether libsystemd is loaded (loading it on the first call; once, thread-safe). */
static bool
sd_have(void)
{
	(void)pthread_once(&sd.once, sd_load);
	return sd.handle != NULL;
}

int
sd_notify(int unset_environment, const char *state)
{
	const char *e = getenv("NOTIFY_SOCKET");

	if (!e || !*e)
		return 0;
	return sd_have() ? sd.notify(unset_environment, state) : -ENOSYS;
}

int
sd_watchdog_enabled(int unset_environment, uint64_t *usec)
{
	const char *e = getenv("WATCHDOG_USEC");

	if (!e || !*e)
		return 0;
	return sd_have() ? sd.watchdog_enabled(unset_environment, usec) : -ENOSYS;
}

/* What log.c's sd_journal_sendv() expands to (sd-journal.h adds the caller's location). */
int
sd_journal_sendv_with_location(const char *file, const char *line, const char *func,
			       const struct iovec *iov, int n)
{
	return sd_have() ? sd.journal_sendv(file, line, func, iov, n) : -ENOSYS;
}
