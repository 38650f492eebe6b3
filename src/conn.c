/*
 * One server connection: TCP with deadlines, optional TLS, buffered line
 * reading with a cap, and a pipelining write queue.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mailpull/conn.h"
#include "mailpull/tls.h"
#include "mailpull/util.h"

#define CONN_INBUF (256 * 1024)
#define CONN_OUTBUF (16 * 1024)

struct conn {
	int fd;
	struct tls *tls;
	char *host;
	char *ca_file;
	char *fingerprint;
	char *cert_file;
	char *key_file;
	unsigned port;
	unsigned timeout_ms;
	size_t max_line;
	char peer[300];

	char *in;             /* CONN_INBUF bytes; [in_start, in_end) unread */
	size_t in_start, in_end;
	char out[CONN_OUTBUF];
	size_t out_len;

	bool body;            /* minimum-rate window active (conn_body_start) */
	int64_t win_waited;   /* ms spent waiting on the socket in this window */
	uint64_t win_bytes;
};

/* Non-blocking connect to one address, bounded by timeout_ms. Returns fd or -errno. */
static int
connect_one(const struct addrinfo *ai, unsigned timeout_ms)
{
	struct pollfd pfd;
	socklen_t sl = sizeof(int);
	int fd, r, soerr = 0, one = 1;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		int64_t deadline = util_now_ms() + timeout_ms;

		if (errno != EINPROGRESS) {
			r = -errno;
			close(fd);
			return r;
		}
		pfd.fd = fd;
		pfd.events = POLLOUT;
		do {
			int64_t left = deadline - util_now_ms();

			if (left <= 0) {
				close(fd);
				return -ETIMEDOUT;
			}
			r = poll(&pfd, 1, (int)left);
		} while (r < 0 && errno == EINTR);
		if (r == 0) {
			close(fd);
			return -ETIMEDOUT;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = errno;
		if (soerr) {
			close(fd);
			return -soerr;
		}
	}
	/* Commands are flushed explicitly in batches, so Nagle only adds latency. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int
tcp_connect(struct conn *c, struct mp_err *err)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char port[16], addr[INET6_ADDRSTRLEN + 8] = "";
	int r, last = -ECONNREFUSED;

	snprintf(port, sizeof(port), "%u", c->port);
	r = getaddrinfo(c->host, port, &hints, &res);
	if (r != 0)
		return mp_err_set(err, -ENOENT, MP_EX_TEMPFAIL, "cannot resolve %s: %s", c->host,
				  gai_strerror(r));
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL, 0, NI_NUMERICHOST);
		r = connect_one(ai, c->timeout_ms);
		if (r >= 0) {
			c->fd = r;
			break;
		}
		last = r;
	}
	freeaddrinfo(res);
	if (c->fd < 0)
		return mp_err_set(err, last, MP_EX_TEMPFAIL, "cannot connect to %s (%s): %s",
				  c->peer, addr, last == -ETIMEDOUT ? "timed out" : strerror(-last));
	return 0;
}

static char *
dup_or_null(const char *s, bool *oom)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

/* The handshake on c's socket, with what c was opened with. */
static int
start_tls(struct conn *c, struct mp_err *err)
{
	const struct tls_opts to = {
		.host = c->host, .ca_file = c->ca_file, .fingerprint = c->fingerprint,
		.cert_file = c->cert_file, .key_file = c->key_file,
	};

	return tls_start(c->fd, &to, util_now_ms() + c->timeout_ms, &c->tls, err);
}

int
conn_open(const struct conn_opts *o, bool tls, struct conn **ret, struct mp_err *err)
{
	struct conn *c;
	bool oom = false;
	int r;

	if (!o->host || !*o->host || o->port == 0 || o->port > 65535)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "bad host or port");
	c = calloc(1, sizeof(*c));
	if (!c)
		return mp_err_oom(err);
	c->fd = -1;
	c->port = o->port;
	c->timeout_ms = o->timeout_ms ? o->timeout_ms : 60000;
	c->max_line = o->max_line ? o->max_line : 8192;
	if (c->max_line > CONN_INBUF / 2)
		c->max_line = CONN_INBUF / 2;
	c->host = dup_or_null(o->host, &oom);
	c->ca_file = dup_or_null(o->ca_file, &oom);
	c->fingerprint = dup_or_null(o->fingerprint, &oom);
	c->cert_file = dup_or_null(o->cert_file, &oom);
	c->key_file = dup_or_null(o->key_file, &oom);
	c->in = malloc(CONN_INBUF);
	if (oom || !c->in) {
		conn_close(c);
		return mp_err_oom(err);
	}
	snprintf(c->peer, sizeof(c->peer), strchr(o->host, ':') ? "[%s]:%u" : "%s:%u", o->host, o->port);
	r = tcp_connect(c, err);
	if (r == 0 && tls)
		r = start_tls(c, err);
	if (r < 0) {
		conn_close(c);
		return r;
	}
	*ret = c;
	return 0;
}

int
conn_starttls(struct conn *c, struct mp_err *err)
{
	if (c->tls)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "TLS is already active");
	/*
	 * Anything already received was sent before the handshake, unprotected:
	 * acting on it would allow response injection (CVE-2021-39272 class).
	 */
	if (c->in_end > c->in_start)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "data after STARTTLS response from %s (possible injection); refusing",
				  c->peer);
	c->in_start = c->in_end = 0;
	return start_tls(c, err);
}

bool
conn_is_tls(const struct conn *c)
{
	return c->tls != NULL;
}

static_assert(CONN_CB_MAX >= TLS_CB_MAX, "channel binding buffer too small");

ssize_t
conn_channel_binding(const struct conn *c, const char **ret_type, unsigned char *buf)
{
	if (!c->tls)
		return -ENOTSUP;
	return tls_channel_binding(c->tls, ret_type, buf);
}

size_t
conn_buffered(const struct conn *c)
{
	return c->in_end - c->in_start;
}

const char *
conn_host(const struct conn *c)
{
	return c->host;
}

unsigned
conn_port(const struct conn *c)
{
	return c->port;
}

const char *
conn_peer(const struct conn *c)
{
	return c->peer;
}

/*
 * Acknowledges what was just read at once instead of after the delayed-ACK
 * timer (40 ms on Linux). A server that writes replies in pieces smaller
 * than a segment without TCP_NODELAY (Cyrus pop3d) holds each next piece
 * (Nagle) until the last is acknowledged; while a deep pipeline leaves us
 * nothing to send for long stretches, no command carries that ACK, and
 * every reply would wait for the timer. The flag does not stick: it is set
 * again after each read. Best effort: a failure only costs that wait.
 */
static void
quick_ack(struct conn *c)
{
	int one = 1;

	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

/*
 * Reads what is available into the buffer, waiting until deadline_ms.
 * Returns bytes added (> 0), 0 on deadline, or a negative errno.
 */
static ssize_t
fill(struct conn *c, int64_t deadline_ms, struct mp_err *err)
{
	int64_t t0;
	size_t room;
	ssize_t n;

	/*
	 * A queued command is never awaited unsent: engines queue a batch of
	 * commands and read, and the batch leaves in one write here.
	 */
	if (c->out_len > 0) {
		int r = conn_flush(c, err);

		if (r < 0)
			return r;
	}
	t0 = util_now_ms();

	if (c->in_start > 0 && (c->in_start == c->in_end || c->in_end > CONN_INBUF / 2)) {
		memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
		c->in_end -= c->in_start;
		c->in_start = 0;
	}
	room = CONN_INBUF - c->in_end;
	if (room == 0)
		return mp_err_set(err, -E2BIG, MP_EX_PROTOCOL, "input buffer full");
	if (c->tls) {
		n = tls_read(c->tls, c->in + c->in_end, room, deadline_ms, err);
	} else {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

		for (;;) {
			int64_t left = deadline_ms - util_now_ms();
			int pr;

			n = recv(c->fd, c->in + c->in_end, room, MSG_DONTWAIT);
			if (n > 0)
				break;
			if (n == 0) {
				n = -ECONNRESET;
				break;
			}
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				n = -errno;
				break;
			}
			if (left <= 0) {
				n = 0;
				break;
			}
			pr = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
			if (pr < 0 && errno != EINTR) {
				n = -errno;
				break;
			}
		}
	}
	if (n == -ECONNRESET)
		return mp_err_set(err, -ECONNRESET, MP_EX_TEMPFAIL,
				  "connection closed by %s", c->peer);
	if (n < 0)
		return mp_err_set(err, (int)n, MP_EX_TEMPFAIL, "reading from %s: %s", c->peer,
				  strerror((int)-n));
	c->in_end += (size_t)n;
	quick_ack(c);
	/*
	 * Only time spent waiting here counts against the minimum rate: the
	 * caller may spend seconds elsewhere (a sink waiting for the disk),
	 * and that is not the server being slow.
	 */
	if (c->body) {
		c->win_waited += util_now_ms() - t0;
		c->win_bytes += (uint64_t)n;
	}
	return n;
}

/* One line, which must be complete by deadline. */
static int
read_line_by(struct conn *c, int64_t deadline, const char **ret_line, size_t *ret_len,
	     struct mp_err *err)
{
	size_t scanned = 0;

	for (;;) {
		char *start = c->in + c->in_start;
		size_t avail = c->in_end - c->in_start;
		char *nl = memchr(start + scanned, '\n', avail - scanned);
		ssize_t n;

		if (nl) {
			size_t len = (size_t)(nl - start);

			if (len > 0 && start[len - 1] == '\r')
				len--;
			if (len > c->max_line)
				return mp_err_set(err, -E2BIG, MP_EX_PROTOCOL,
						  "line from %s longer than %zu bytes", c->peer, c->max_line);
			if (memchr(start, '\0', len))
				return mp_err_set(err, -EBADMSG, MP_EX_PROTOCOL,
						  "NUL byte in a line from %s", c->peer);
			start[len] = '\0';
			c->in_start += (size_t)(nl - start) + 1;
			*ret_line = start;
			*ret_len = len;
			return 0;
		}
		scanned = avail;
		if (avail > c->max_line + 1)
			return mp_err_set(err, -E2BIG, MP_EX_PROTOCOL,
					  "line from %s longer than %zu bytes", c->peer, c->max_line);
		n = fill(c, deadline, err);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL,
					  "%s did not answer within %u s", c->peer, c->timeout_ms / 1000);
	}
}

int
conn_read_line(struct conn *c, const char **ret_line, size_t *ret_len, struct mp_err *err)
{
	c->body = false;
	return read_line_by(c, util_now_ms() + c->timeout_ms, ret_line, ret_len, err);
}

/*
 * The minimum-rate rule: once a window of the timeout's length has been
 * spent waiting on the socket since conn_body_start() (or the last
 * window), it must have brought CONN_MIN_RATE bytes a second; then a new
 * window starts. Time the caller spends between reads does not count.
 */
static int
window_check(struct conn *c, struct mp_err *err)
{
	uint64_t need = (uint64_t)CONN_MIN_RATE * (c->timeout_ms / 1000 ? c->timeout_ms / 1000 : 1);

	if (!c->body || c->win_waited < (int64_t)c->timeout_ms)
		return 0;
	if (c->win_bytes < need)
		return mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL, "%s sends slower than %u bytes/s",
				  c->peer, CONN_MIN_RATE);
	c->win_waited = 0;
	c->win_bytes = 0;
	return 0;
}

int
conn_read_body_line(struct conn *c, const char **ret_line, size_t *ret_len, struct mp_err *err)
{
	int64_t now = util_now_ms();
	/*
	 * Checked between lines: each line still has the whole timeout, so a
	 * response that comes a short line at a time, each just in time,
	 * fails within two windows instead of never.
	 */
	int r = window_check(c, err);

	if (r < 0)
		return r;
	return read_line_by(c, now + c->timeout_ms, ret_line, ret_len, err);
}

void
conn_body_start(struct conn *c)
{
	c->body = true;
	c->win_waited = 0;
	c->win_bytes = 0;
}

int
conn_peek(struct conn *c, const char **ret_data, size_t *ret_len, struct mp_err *err)
{
	while (c->in_end == c->in_start) {
		int64_t now = util_now_ms();
		ssize_t n = window_check(c, err);

		if (n < 0)
			return (int)n;
		/* In a body, the wait ends with the window: what is left of it. */
		n = fill(c, now + (c->body ? (int64_t)c->timeout_ms - c->win_waited : c->timeout_ms),
			 err);
		if (n < 0)
			return (int)n;
		if (n == 0 && !c->body)
			return mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL,
					  "%s did not answer within %u s", c->peer, c->timeout_ms / 1000);
	}
	*ret_data = c->in + c->in_start;
	*ret_len = c->in_end - c->in_start;
	return 0;
}

void
conn_consume(struct conn *c, size_t n)
{
	if (n > c->in_end - c->in_start)
		n = c->in_end - c->in_start;
	c->in_start += n;
}

/*
 * Over TLS a readable socket may bring no application data (a partial
 * record, a session ticket, a key update): those bytes are read without
 * waiting, and the wait goes on until data can be handed over. Returns 1
 * (data buffered), 0 (none yet) or a read error.
 */
static int
wait_tls_data(struct conn *c, struct mp_err *err)
{
	ssize_t n = fill(c, util_now_ms(), err);

	if (n < 0)
		return (int)n;
	return n > 0;
}

int
conn_wait(struct conn *c, unsigned timeout_ms, struct mp_err *err)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	if (c->out_len > 0) {
		int r = conn_flush(c, err);

		if (r < 0)
			return r;
	}
	for (;;) {
		int64_t left;
		int r;

		if (c->in_end > c->in_start)
			return 0;
		if (c->tls && tls_pending(c->tls)) {
			r = wait_tls_data(c, err);
			if (r != 0)
				return r < 0 ? r : 0;
		}
		left = deadline - util_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		/*
		 * Not retried: a signal must end the wait so the caller can act
		 * on the flag its handler set (IMAP IDLE, RFC 2177).
		 */
		if (r < 0 && errno == EINTR)
			return -EINTR;
		if (r < 0)
			return mp_err_set(err, -errno, MP_EX_TEMPFAIL, "waiting for %s: %s",
					  c->peer, strerror(errno));
		if (r == 0)
			continue;
		/* Plain TCP: readable is enough; an end of file is the next read's to report. */
		if (!c->tls)
			return 0;
		r = wait_tls_data(c, err);
		if (r != 0)
			return r < 0 ? r : 0;
	}
}

static int
send_all(struct conn *c, const char *p, size_t len, struct mp_err *err)
{
	int64_t deadline = util_now_ms() + c->timeout_ms;
	struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };

	if (c->tls)
		return tls_write(c->tls, p, len, deadline, err);
	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return mp_err_set(err, -errno, MP_EX_TEMPFAIL, "writing to %s: %s", c->peer,
					  strerror(errno));
		int64_t left = deadline - util_now_ms();

		if (left <= 0)
			return mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL, "writing to %s timed out",
					  c->peer);
		poll(&pfd, 1, (int)left);
	}
	return 0;
}

int
conn_flush(struct conn *c, struct mp_err *err)
{
	int r;

	if (c->out_len == 0)
		return 0;
	r = send_all(c, c->out, c->out_len, err);
	explicit_bzero(c->out, c->out_len);
	c->out_len = 0;
	return r;
}

int
conn_write(struct conn *c, const void *data, size_t len, struct mp_err *err)
{
	int r;

	if (len > sizeof(c->out) - c->out_len) {
		r = conn_flush(c, err);
		if (r < 0)
			return r;
		if (len > sizeof(c->out))
			return send_all(c, data, len, err);
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return 0;
}

void
conn_close(struct conn *c)
{
	if (!c)
		return;
	tls_free(c->tls);
	if (c->fd >= 0)
		close(c->fd);
	/* The queue may hold a secret (PASS, AUTH): wipe it. */
	explicit_bzero(c->out, sizeof(c->out));
	free(c->in);
	free(c->host);
	free(c->ca_file);
	free(c->fingerprint);
	free(c->cert_file);
	free(c->key_file);
	free(c);
}
