/* rawwire: the physical limit of a server and a wire, for the bench.
 *
 *     rawwire pop3|imap HOST PORT USER PASSWORD CAFILE [COUNT BYTES]
 *
 * Connects over implicit TLS (verifying the server against CAFILE), logs
 * in and moves every message's bytes with as much pipelining as the
 * protocol allows, discarding them: POP3 STATs, then writes every RETR
 * while reading the answers (non-blocking, both ways at once); IMAP
 * SELECTs INBOX and sends one UID FETCH 1:* (RFC822.SIZE BODY.PEEK[]).
 * Nothing is changed on the server (no DELE, no \Seen).
 *
 * It counts what it moved: messages, and message bytes as the server
 * sends them (CRLF line ends; POP3 dot-stuffing undone). The count is
 * checked against what the server itself announced (POP3: STAT's count
 * and octets; IMAP: EXISTS and the sum of RFC822.SIZE), and against COUNT
 * and BYTES when given. Prints "messages N bytes B" and exits 0 when every
 * check holds, 1 otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUF_SIZE (256u << 10)

struct conn {
	int fd;
	SSL *ssl;
	char *buf;              /* received, not yet parsed: buf[start, end) */
	size_t start, end;
};

/* What the parser found. */
struct tally {
	unsigned long long messages, bytes, announced_bytes;
	unsigned long long announced;   /* STAT count or EXISTS */
	bool done, failed;
	/* POP3 */
	bool in_body;
	unsigned long long retr_answers;
	/* IMAP */
	unsigned long long literal_left;
	bool in_literal;
	int stage;              /* 0 login, 1 select, 2 fetch */
};

static void die(const char *what)
{
	fprintf(stderr, "rawwire: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static int tcp_connect(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	int fd = -1;

	if (getaddrinfo(host, port, &hints, &res) != 0)
		die("cannot resolve the host");
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		die("cannot connect");
	return fd;
}

static void tls_open(struct conn *c, const char *host, const char *cafile)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx || SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1)
		die("cannot load the CA file");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);
	if (!c->ssl || SSL_set1_host(c->ssl, host) != 1 || SSL_set_fd(c->ssl, c->fd) != 1)
		die("cannot set up TLS");
	if (SSL_connect(c->ssl) != 1)
		die("TLS handshake failed");
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
}

static void wait_fd(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };

	if (poll(&p, 1, 600000) <= 0)
		die("timed out waiting for the server");
}

/* Writes as much of out[*off, len) as TLS takes now. Returns the SSL error
 * class that stopped it (SSL_ERROR_WANT_*), or SSL_ERROR_NONE when done. */
static int write_some(struct conn *c, const char *out, size_t len, size_t *off)
{
	while (*off < len) {
		size_t n = len - *off;
		int r = SSL_write(c->ssl, out + *off, n > 65536 ? 65536 : (int)n);

		if (r <= 0) {
			int e = SSL_get_error(c->ssl, r);

			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return e;
			die("write failed");
		}
		*off += (size_t)r;
	}
	return SSL_ERROR_NONE;
}

/* Reads what TLS has into the buffer. Returns SSL_ERROR_WANT_* when it must
 * wait, SSL_ERROR_NONE after reading something. */
static int read_some(struct conn *c)
{
	int r;

	if (c->start > 0 && c->start == c->end)
		c->start = c->end = 0;
	if (c->end == BUF_SIZE) {
		if (c->start == 0)
			die("line longer than the buffer");
		memmove(c->buf, c->buf + c->start, c->end - c->start);
		c->end -= c->start;
		c->start = 0;
	}
	r = SSL_read(c->ssl, c->buf + c->end, (int)(BUF_SIZE - c->end));
	if (r <= 0) {
		int e = SSL_get_error(c->ssl, r);

		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return e;
		die("connection closed by the server");
	}
	c->end += (size_t)r;
	return SSL_ERROR_NONE;
}

/* The next complete line (with its CRLF) or NULL. */
static const char *next_line(struct conn *c, size_t *ret_len)
{
	char *s = c->buf + c->start;
	char *nl = memchr(s, '\n', c->end - c->start);

	if (!nl)
		return NULL;
	*ret_len = (size_t)(nl - s) + 1;
	c->start += *ret_len;
	return s;
}

/* ---- POP3 ---- */

static void pop3_line(struct tally *t, const char *s, size_t len)
{
	if (!t->in_body) {
		if (len < 3 || memcmp(s, "+OK", 3) != 0) {
			fprintf(stderr, "rawwire: RETR answered %.*s", (int)len, s);
			t->failed = true;
		}
		t->in_body = true;
		t->retr_answers++;
		return;
	}
	if (len == 3 && memcmp(s, ".\r\n", 3) == 0) {
		t->in_body = false;
		t->messages++;
		if (t->messages == t->announced)
			t->done = true;
		return;
	}
	t->bytes += len - (s[0] == '.' ? 1 : 0);
}

/* Sends cmd and reads one single-line answer, which must be +OK. */
static void pop3_simple(struct conn *c, const char *cmd, char *ret, size_t retlen)
{
	size_t off = 0, len;
	const char *s;

	if (cmd) {
		for (int e; (e = write_some(c, cmd, strlen(cmd), &off)) != SSL_ERROR_NONE;)
			wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
	}
	while (!(s = next_line(c, &len))) {
		int e = read_some(c);

		if (e != SSL_ERROR_NONE)
			wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
	}
	if (len < 3 || memcmp(s, "+OK", 3) != 0) {
		fprintf(stderr, "rawwire: %s -> %.*s", cmd ? cmd : "greeting", (int)len, s);
		exit(1);
	}
	if (ret)
		snprintf(ret, retlen, "%.*s", (int)len, s);
}

/* Writes and reads at once until every answer is in. */
static void pump(struct conn *c, struct tally *t, const char *out, size_t outlen,
		 void (*on_line)(struct tally *, const char *, size_t))
{
	size_t off = 0;

	while (!t->done) {
		short ev = 0;
		int we = write_some(c, out, outlen, &off);
		int re;

		if (we != SSL_ERROR_NONE)
			ev |= we == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		re = read_some(c);
		if (re == SSL_ERROR_NONE) {
			const char *s;
			size_t len;

			while (!t->done && (s = next_line(c, &len)))
				on_line(t, s, len);
			continue;
		}
		ev |= re == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		wait_fd(c->fd, ev);
	}
}

static void run_pop3(struct conn *c, struct tally *t, const char *user, const char *pass)
{
	char line[512], cmd[600];
	char *out;
	size_t outlen = 0;

	pop3_simple(c, NULL, NULL, 0);
	snprintf(cmd, sizeof(cmd), "USER %s\r\n", user);
	pop3_simple(c, cmd, NULL, 0);
	snprintf(cmd, sizeof(cmd), "PASS %s\r\n", pass);
	pop3_simple(c, cmd, NULL, 0);
	pop3_simple(c, "STAT\r\n", line, sizeof(line));
	{
		char *end;

		t->announced = strtoull(line + 3, &end, 10);
		t->announced_bytes = strtoull(end, &end, 10);
		if (strncmp(line, "+OK ", 4) != 0 || (*end != '\r' && *end != ' '))
			die("cannot read STAT's answer");
	}
	if (t->announced == 0)
		return;
	out = malloc(t->announced * 24 + 16);
	if (!out)
		die("out of memory");
	for (unsigned long long i = 1; i <= t->announced; i++)
		outlen += (size_t)snprintf(out + outlen, 24, "RETR %llu\r\n", i);
	pump(c, t, out, outlen, pop3_line);
	free(out);
	pop3_simple(c, "QUIT\r\n", NULL, 0);
}

/* ---- IMAP ---- */

/* Handles one line of the FETCH stage (the literals are skipped by the
 * caller). A line ending in {N} announces a literal of N bytes. */
static void imap_line(struct tally *t, const char *s, size_t len)
{
	const char *p;

	if (len >= 2 && memcmp(s, "c ", 2) == 0) {
		if (len < 4 || memcmp(s + 2, "OK", 2) != 0) {
			fprintf(stderr, "rawwire: FETCH answered %.*s", (int)len, s);
			t->failed = true;
		}
		t->done = true;
		return;
	}
	p = memmem(s, len, "RFC822.SIZE ", 12);
	if (p)
		t->announced_bytes += strtoull(p + 12, NULL, 10);
	if (len >= 4 && s[len - 3] == '}') {
		p = s + len - 4;
		while (p > s && *p != '{')
			p--;
		t->literal_left = strtoull(p + 1, NULL, 10);
		t->in_literal = true;
		t->messages++;
		t->bytes += t->literal_left;
	}
}

/* Reads the stage's lines and literals until its tagged answer. */
static void imap_pump(struct conn *c, struct tally *t, const char *out)
{
	size_t off = 0, outlen = strlen(out);

	t->done = false;
	while (!t->done) {
		int we = write_some(c, out, outlen, &off), re;
		short ev = 0;

		while (!t->done) {
			size_t avail = c->end - c->start, len;
			const char *s;

			if (t->in_literal) {
				size_t n = avail < t->literal_left ? avail : (size_t)t->literal_left;

				c->start += n;
				t->literal_left -= n;
				if (t->literal_left)
					break;
				t->in_literal = false;
				continue;
			}
			if (!(s = next_line(c, &len)))
				break;
			if (t->stage == 1) {
				const char *e = memmem(s, len, " EXISTS", 7);

				if (len > 2 && s[0] == '*' && e)
					t->announced = strtoull(s + 2, NULL, 10);
			}
			if (t->stage == 2) {
				imap_line(t, s, len);
			} else if (len >= 2 && s[0] == 'c' && s[1] == ' ') {
				if (len < 4 || memcmp(s + 2, "OK", 2) != 0) {
					fprintf(stderr, "rawwire: %.*s", (int)len, s);
					exit(1);
				}
				t->done = true;
			}
		}
		if (t->done)
			break;
		if (we != SSL_ERROR_NONE)
			ev |= we == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		re = read_some(c);
		if (re == SSL_ERROR_NONE)
			continue;
		ev |= re == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		wait_fd(c->fd, ev);
	}
}

static void run_imap(struct conn *c, struct tally *t, const char *user, const char *pass)
{
	char cmd[1200];
	size_t len;
	const char *s;

	while (!(s = next_line(c, &len))) {
		int e = read_some(c);

		if (e != SSL_ERROR_NONE)
			wait_fd(c->fd, POLLIN);
	}
	/* Every command is tagged "c": one at a time, so the tag is enough. */
	snprintf(cmd, sizeof(cmd), "c LOGIN \"%s\" \"%s\"\r\n", user, pass);
	t->stage = 0;
	imap_pump(c, t, cmd);
	t->stage = 1;
	imap_pump(c, t, "c SELECT INBOX\r\n");
	t->stage = 2;
	if (t->announced > 0)
		imap_pump(c, t, "c UID FETCH 1:* (RFC822.SIZE BODY.PEEK[])\r\n");
	t->stage = 3;
	imap_pump(c, t, "c LOGOUT\r\n");
}

int main(int argc, char **argv)
{
	struct conn c = { 0 };
	struct tally t = { 0 };
	bool ok;

	if (argc != 7 && argc != 9) {
		fprintf(stderr, "usage: rawwire pop3|imap HOST PORT USER PASSWORD CAFILE "
				"[COUNT BYTES]\n");
		return 2;
	}
	c.buf = malloc(BUF_SIZE);
	if (!c.buf)
		die("out of memory");
	c.fd = tcp_connect(argv[2], argv[3]);
	tls_open(&c, argv[2], argv[6]);
	if (strcmp(argv[1], "pop3") == 0)
		run_pop3(&c, &t, argv[4], argv[5]);
	else if (strcmp(argv[1], "imap") == 0)
		run_imap(&c, &t, argv[4], argv[5]);
	else
		die("protocol must be pop3 or imap");
	printf("messages %llu bytes %llu announced %llu %llu\n", t.messages, t.bytes,
	       t.announced, t.announced_bytes);
	ok = !t.failed && t.messages == t.announced && t.bytes == t.announced_bytes;
	if (argc == 9)
		ok = ok && t.messages == strtoull(argv[7], NULL, 10) &&
		     t.bytes == strtoull(argv[8], NULL, 10);
	if (!ok)
		fprintf(stderr, "rawwire: the counts do not match\n");
	SSL_free(c.ssl);
	close(c.fd);
	free(c.buf);
	return ok ? 0 : 1;
}
