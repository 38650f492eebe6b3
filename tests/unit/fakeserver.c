/* The scripted fake server of the unit tests: see fakeserver.h. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/crypto.h>

#include "fakeserver.h"

/* ---- the fake server (child process) ------------------------------------ */

struct rd {
	int fd;
	char buf[65536];
	size_t len;
};

static void MP_PRINTF(2, 3)
die(int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fake server: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	_exit(code);
}

/* Reads one CRLF line into line (without CRLF). false at EOF. */
static bool
rd_line(struct rd *r, char *line, size_t cap)
{
	for (;;) {
		char *nl = memchr(r->buf, '\n', r->len);
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - r->buf);

			if (l == 0 || r->buf[l - 1] != '\r')
				die(3, "client line without CRLF");
			if (l - 1 >= cap)
				die(3, "client line too long");
			memcpy(line, r->buf, l - 1);
			line[l - 1] = '\0';
			memmove(r->buf, nl + 1, r->len - l - 1);
			r->len -= l + 1;
			return true;
		}
		if (r->len == sizeof(r->buf))
			die(3, "client line too long");
		n = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);
		if (n <= 0)
			return false;
		r->len += (size_t)n;
	}
}

static void
write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			die(4, "write: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/* Nothing buffered and nothing arriving for a while: the client waits for us. */
static void
expect_quiet(struct rd *r)
{
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

	if (r->len > 0 || poll(&pfd, 1, 150) > 0)
		die(5, "client sent a command before the previous reply");
}

/*
 * n bytes of "line NNNNNNN\r\n" lines cut at n (the big-body pattern), or
 * of fill[0] when fill is given.
 */
static void
gen_body(int fd, size_t n, const char *fill)
{
	char *b = malloc(n + 16);
	size_t len = 0;

	if (!b)
		die(4, "out of memory");
	if (fill)
		memset(b, fill[0], n);
	for (unsigned i = 0; len < n && !fill; i++)
		len += (size_t)snprintf(b + len, 16, "line %07u\r\n", i);
	write_all(fd, b, n);
	free(b);
}

/* Complete lines buffered in r. */
static size_t
rd_count(const struct rd *r)
{
	size_t k = 0;

	for (size_t i = 0; i < r->len; i++)
		k += r->buf[i] == '\n';
	return k;
}

/*
 * 'D': waits until n complete client lines are buffered, consuming none
 * (the client had them all in flight before any answer). With text, they
 * must have come in at most one read() from here: one write by the client.
 */
static void
expect_depth(struct rd *r, size_t n, bool one_read)
{
	unsigned reads = 0;

	while (rd_count(r) < n) {
		ssize_t got;

		if (r->len == sizeof(r->buf))
			die(3, "client lines fill the buffer before %zu arrived", n);
		got = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);
		if (got <= 0)
			die(1, "EOF with %zu of %zu lines in flight", rd_count(r), n);
		r->len += (size_t)got;
		reads++;
	}
	if (one_read && reads > 1)
		die(5, "%zu lines came in %u reads, not one write", n, reads);
}

/*
 * 'M': once the client has gone quiet for a while, at most n bytes of its
 * lines may be unread (its cap on unanswered command bytes).
 */
static void
expect_at_most(struct rd *r, size_t n)
{
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

	while (poll(&pfd, 1, 300) > 0) {
		ssize_t got;

		if (r->len == sizeof(r->buf))
			break;
		got = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);
		if (got <= 0)
			break;
		r->len += (size_t)got;
	}
	if (r->len > n)
		die(5, "client has %zu bytes of commands in flight, more than %zu", r->len, n);
	if (r->len == 0)
		die(5, "client sent nothing");
}

/* 'B': fn's answers to the lines "1" to "n", written without reading anything. */
static void
bulk(int fd, size_t n, fake_fn fn)
{
	char num[24];

	for (size_t i = 1; i <= n; i++) {
		const char *out;

		snprintf(num, sizeof(num), "%zu", i);
		out = fn(num);
		if (!out)
			die(1, "no bulk answer for %zu", i);
		write_all(fd, out, strlen(out));
	}
}

/*
 * 'R': a server that reads a batch of commands and writes all its replies
 * before reading more (as many do): n lines in all, each answered with fn.
 */
static void
rounds(struct rd *r, size_t n, fake_fn fn)
{
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };
	char line[8192];

	while (n > 0) {
		size_t k;

		/* What is there now, with at least one line, then all of it answered. */
		while (rd_count(r) == 0 || (r->len < sizeof(r->buf) && poll(&pfd, 1, 0) > 0)) {
			ssize_t got = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);

			if (got <= 0)
				die(1, "EOF with %zu commands to come", n);
			r->len += (size_t)got;
		}
		for (k = rd_count(r); k > 0 && n > 0; k--, n--) {
			const char *out;

			if (!rd_line(r, line, sizeof(line)))
				die(1, "EOF in a round");
			out = fn(line);
			if (!out)
				die(1, "refused \"%s\"", line);
			write_all(r->fd, out, strlen(out));
		}
	}
}

static void
serve(int cfd, const struct fake_step *script)
{
	struct rd r = { .fd = cfd };
	char line[8192];

	for (const struct fake_step *s = script; s->dir; s++) {
		if (s->dir == 'S') {
			write_all(cfd, s->text, strlen(s->text));
		} else if (s->dir == 'P') {
			/* Lets the client read what came so far on its own. */
			usleep(60 * 1000);
		} else if (s->dir == 'W') {
			usleep((useconds_t)s->n * 1000);
		} else if (s->dir == 'X') {
			/* Half-close: the client sees the end, we still see what it sends. */
			shutdown(cfd, SHUT_WR);
		} else if (s->dir == 'G') {
			gen_body(cfd, s->n, s->text);
		} else if (s->dir == 'Q') {
			expect_quiet(&r);
		} else if (s->dir == 'D') {
			expect_depth(&r, s->n, s->text != NULL);
		} else if (s->dir == 'M') {
			expect_at_most(&r, s->n);
		} else if (s->dir == 'R') {
			rounds(&r, s->n, s->fn);
		} else if (s->dir == 'B') {
			bulk(cfd, s->n, s->fn);
		} else if (s->dir == 'F') {
			const char *out;

			if (!rd_line(&r, line, sizeof(line)))
				die(1, "expected a line for a computed answer, got EOF");
			if (s->text && strncmp(line, s->text, strlen(s->text)) != 0)
				die(1, "expected \"%s...\", got \"%s\"", s->text, line);
			out = s->fn(line);
			if (!out)
				die(1, "refused \"%s\"", line);
			write_all(cfd, out, strlen(out));
		} else {
			if (!rd_line(&r, line, sizeof(line)))
				die(1, "expected \"%s\", got EOF", s->text ? s->text : "*");
			if (s->dir == 'c' && strncmp(line, s->text, strlen(s->text)) == 0)
				continue;
			if (s->text && strcmp(line, s->text) != 0)
				die(1, "expected \"%s\", got \"%s\"", s->text, line);
		}
	}
	/* The script is over: the client must send nothing more. */
	if (rd_line(&r, line, sizeof(line)))
		die(2, "unexpected \"%s\" after the script", line);
	if (r.len > 0)
		die(2, "unexpected bytes after the script");
	_exit(0);
}

void
fake_listen(struct fake *f)
{
	struct sockaddr_in sa = {
		.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	socklen_t sl = sizeof(sa);

	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 1), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
	f->port = ntohs(sa.sin_port);
}

void
fake_run(struct fake *f, const struct fake_step *script)
{
	fflush(NULL);
	f->pid = fork();
	assert_true(f->pid >= 0);
	if (f->pid == 0) {
		int cfd;

		alarm(20);
		cfd = accept(f->lfd, NULL, NULL);
		if (cfd < 0)
			die(6, "accept: %s", strerror(errno));
		close(f->lfd);
		serve(cfd, script);
	}
	close(f->lfd);
}

void
fake_start(struct fake *f, const struct fake_step *script)
{
	fake_listen(f);
	fake_run(f, script);
}

int
fake_wait(struct fake *f)
{
	int status = 0;

	assert_int_equal(waitpid(f->pid, &status, 0), f->pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct conn *
fake_connect(struct fake *f, unsigned timeout_ms, struct mp_err *err)
{
	struct conn_opts o = { .host = "127.0.0.1", .port = f->port, .timeout_ms = timeout_ms,
			       .max_line = 8192 };
	struct conn *c = NULL;

	mp_err_clear(err);
	assert_int_equal(conn_open(&o, false, &c, err), 0);
	return c;
}

/* ---- the server side of SCRAM (in the server's process) ------------------ */

struct fake_scram fake_scram;

static struct {
	char first_bare[1024];     /* client-first-message-bare */
	char server_first[1024];
	char nonce[512];           /* combined */
	unsigned char salted[64];
	char out[2048];
} scram_st;

static const unsigned char scram_salt[] = "fake salt 16 by";

static const EVP_MD *
scram_md(void)
{
	return fake_scram.sha1 ? EVP_sha1() : EVP_sha256();
}

static size_t
b64_enc(const void *in, size_t len, char *out)
{
	return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* Decodes base64 into out (NUL-terminated); -1 when it is not base64. */
static int
b64_dec(const char *in, char *out, size_t cap)
{
	size_t len = strlen(in);
	int n;

	if (len % 4 || len / 4 * 3 + 1 > cap)
		return -1;
	n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)len);
	if (n < 0)
		return -1;
	if (len && in[len - 1] == '=')
		n--;
	if (len > 1 && in[len - 2] == '=')
		n--;
	out[n] = '\0';
	return n;
}

static const char *
last_word(const char *line)
{
	const char *sp = strrchr(line, ' ');

	return sp ? sp + 1 : line;
}

static const char *
scram_answer(const char *msg)
{
	size_t pl = strlen(fake_scram.prefix);

	memcpy(scram_st.out, fake_scram.prefix, pl);
	pl += b64_enc(msg, strlen(msg), scram_st.out + pl);
	memcpy(scram_st.out + pl, "\r\n", 3);
	return scram_st.out;
}

const char *
fake_scram_first(const char *line)
{
	char msg[1024], salt[64], want[128];
	const char *bare, *r;
	size_t gl = strlen(fake_scram.gs2);
	int n = b64_dec(last_word(line), msg, sizeof(msg));

	/* gs2-header, then "n=user,r=nonce" */
	if (n < 0 || strncmp(msg, fake_scram.gs2, gl) != 0)
		return NULL;
	bare = msg + gl;
	snprintf(want, sizeof(want), "n=%s,r=", fake_scram.user);
	if (strncmp(bare, want, strlen(want)) != 0)
		return NULL;
	r = bare + strlen(want);
	snprintf(scram_st.first_bare, sizeof(scram_st.first_bare), "%s", bare);
	snprintf(scram_st.nonce, sizeof(scram_st.nonce), "%s%s", r,
		 fake_scram.short_nonce ? "" : "SeRvErNoNcE");
	b64_enc(scram_salt, sizeof(scram_salt) - 1, salt);
	snprintf(scram_st.server_first, sizeof(scram_st.server_first), "r=%s,s=%s,i=%u",
		 scram_st.nonce, salt, fake_scram.iter ? fake_scram.iter : 4096);
	PKCS5_PBKDF2_HMAC(fake_scram.password, (int)strlen(fake_scram.password), scram_salt,
			  (int)sizeof(scram_salt) - 1, (int)(fake_scram.iter ? fake_scram.iter : 4096),
			  scram_md(), EVP_MD_get_size(scram_md()), scram_st.salted);
	return scram_answer(scram_st.server_first);
}

/* HMAC(key, "text") */
static void
hmac(const unsigned char *key, size_t klen, const char *text, unsigned char *out)
{
	unsigned int len = 0;

	HMAC(scram_md(), key, (int)klen, (const unsigned char *)text, strlen(text), out, &len);
}

const char *
fake_scram_final(const char *line)
{
	char msg[1024], cbind[512], want_c[800], auth[3072], proof64[128], v[256];
	unsigned char ckey[64], skey[64], stored[64], csig[64], ssig[64], proof[64];
	size_t hl = (size_t)EVP_MD_get_size(scram_md()), gl = strlen(fake_scram.gs2);
	char *p;
	int n = b64_dec(last_word(line), msg, sizeof(msg));

	p = n < 0 ? NULL : strstr(msg, ",p=");
	if (!p)
		return NULL;
	*p = '\0';
	/* c= is base64(gs2-header + channel binding data) */
	memcpy(cbind, fake_scram.gs2, gl);
	if (fake_scram.cb)
		memcpy(cbind + gl, fake_scram.cb, fake_scram.cb_len);
	want_c[0] = 'c';
	want_c[1] = '=';
	b64_enc(cbind, gl + (fake_scram.cb ? fake_scram.cb_len : 0), want_c + 2);
	snprintf(auth, sizeof(auth), "%s,r=%s", want_c, scram_st.nonce);
	if (strcmp(msg, auth) != 0)
		return NULL;
	snprintf(auth, sizeof(auth), "%s,%s,%s", scram_st.first_bare, scram_st.server_first, msg);
	hmac(scram_st.salted, hl, "Client Key", ckey);
	EVP_Digest(ckey, hl, stored, NULL, scram_md(), NULL);
	hmac(stored, hl, auth, csig);
	for (size_t i = 0; i < hl; i++)
		proof[i] = ckey[i] ^ csig[i];
	b64_enc(proof, hl, proof64);
	if (strcmp(p + 3, proof64) != 0)
		return NULL;
	hmac(scram_st.salted, hl, "Server Key", skey);
	hmac(skey, hl, auth, ssig);
	if (fake_scram.bad_signature)
		ssig[0] ^= 1;
	memcpy(v, "v=", 2);
	b64_enc(ssig, hl, v + 2);
	return scram_answer(v);
}
