/*
 * libFuzzer target for the SMTP engine. The first byte picks the session's
 * options; the rest is used three ways.
 *
 * 1. As reply lines (split at LF, a trailing CR dropped) fed to the reply
 *    parser, and each line's text to the EHLO keyword reader: whatever
 *    they say, a finished reply has a code of 200-559, an enhanced code
 *    that is empty or well formed and of the reply's class, text without
 *    control bytes, and the mechanism list holds only RFC 4422 characters.
 *
 * 2. As a message for the DATA encoder, once whole and once in chunks
 *    whose sizes come from the input; both must equal a reference written
 *    here line by line from RFC 5321 section 4.5.2, and the encoded bytes
 *    may hold the end-of-data sequence only at their very end.
 *
 * 3. As what a server says, over a loopback TCP connection through the
 *    real conn: the greeting, EHLO, STARTTLS, an AUTH exchange, a send to
 *    three recipients and QUIT. The server side sends everything at once
 *    and closes, so no read can wait; the commands are never read. What the
 *    engine hands back is checked against what its header promises.
 *
 * The mode byte: bits 0-1 the AUTH mechanism, 2 STARTTLS, 3 an 8-bit
 * message, 4 a UTF-8 envelope, 5 a message of 2^30 bytes (SIZE), 7 a
 * 64-byte line cap instead of 8192.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mailpull/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* More than a loopback socket buffer surely holds while nobody reads. */
#define INPUT_MAX (64 * 1024)

/* ---- 1. replies and EHLO keywords ------------------------------------------- */

static void
check_caps(const struct smtp_caps *caps)
{
	size_t n = strnlen(caps->sasl, sizeof(caps->sasl));

	if (n == sizeof(caps->sasl) || (caps->size_max && !caps->size))
		abort();
	for (size_t i = 0; i < n; i++) {
		char ch = caps->sasl[i];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		      ch == '_' || ch == ' '))
			abort();
	}
}

static void
check_reply(const struct smtp_reply *rep)
{
	size_t el = strnlen(rep->enh, sizeof(rep->enh));
	size_t tl = strnlen(rep->text, sizeof(rep->text));

	if (rep->code < 200 || rep->code > 559 || el == sizeof(rep->enh) || tl == sizeof(rep->text))
		abort();
	if (el > 0 && (rep->enh[0] != '0' + rep->code / 100 || rep->enh[1] != '.' || el < 5))
		abort();
	for (size_t i = 0; i < el; i++)
		if (!(rep->enh[i] == '.' || (rep->enh[i] >= '0' && rep->enh[i] <= '9')))
			abort();
	for (size_t i = 0; i < tl; i++)
		if ((unsigned char)rep->text[i] < 0x20 || rep->text[i] == 0x7f)
			abort();
}

static void
check_lines(const char *in, size_t len)
{
	struct smtp_reply_parser p;
	struct smtp_caps caps = { 0 };
	size_t i = 0;

	smtp_reply_init(&p);
	while (i < len) {
		const char *lf = memchr(in + i, '\n', len - i);
		size_t end = lf ? (size_t)(lf - in) : len, ll = end - i, tl = 0;
		const char *text = NULL;
		int r;

		if (ll > 0 && in[i + ll - 1] == '\r')
			ll--;
		r = smtp_reply_feed(&p, in + i, ll, &text, &tl);
		if (r >= 0) {
			if (text < in + i || text + tl > in + i + ll)
				abort();
			smtp_ehlo_line(&caps, text, tl);
			check_caps(&caps);
		}
		if (r == 1)
			check_reply(&p.rep);
		if (r != 0)
			smtp_reply_init(&p);
		i = end + 1;
	}
}

/* ---- 2. the DATA encoder against a reference ------------------------------- */

/* RFC 5321 section 4.5.2, line by line: what the encoder must give for in. */
static size_t
reference(const char *in, size_t len, char *out)
{
	size_t i = 0, o = 0;

	while (i < len) {
		const char *lf = memchr(in + i, '\n', len - i);
		size_t end = lf ? (size_t)(lf - in) : len, ll = end - i;

		if (ll > 0 && in[i] == '.')
			out[o++] = '.';
		memcpy(out + o, in + i, ll);
		o += ll;
		/* A line ending in CR already has its CR; the last line gets a whole end. */
		if (!lf || ll == 0 || in[end - 1] != '\r')
			out[o++] = '\r';
		out[o++] = '\n';
		i = end + 1;
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}

static size_t
encode(const char *in, size_t len, const uint8_t *sizes, size_t nsizes, char *out)
{
	struct smtp_dot d;
	size_t pos = 0, o = 0, k = 0;

	smtp_dot_init(&d);
	while (pos < len) {
		size_t chunk = sizes ? (size_t)(sizes[k++ % nsizes] % 32) + 1 : len - pos;

		if (chunk > len - pos)
			chunk = len - pos;
		o += smtp_dot_encode(&d, in + pos, chunk, out + o);
		pos += chunk;
	}
	return o + smtp_dot_finish(&d, out + o);
}

static void
check_encoder(const char *in, size_t len, const uint8_t *sizes, size_t nsizes)
{
	size_t cap = 2 * len + SMTP_DOT_FINISH_MAX;
	char *ref = malloc(cap), *whole = malloc(cap), *chunked = malloc(cap);
	size_t rl, wl, cl;
	const char *end;

	if (!ref || !whole || !chunked)
		abort();
	rl = reference(in, len, ref);
	wl = encode(in, len, NULL, 0, whole);
	cl = encode(in, len, sizes, nsizes, chunked);
	if (wl != rl || memcmp(whole, ref, rl) != 0) {
		fprintf(stderr, "encoder (%zu bytes) != reference (%zu bytes)\n", wl, rl);
		abort();
	}
	if (cl != wl || memcmp(chunked, whole, wl) != 0) {
		fprintf(stderr, "chunked run differs from the whole run\n");
		abort();
	}
	/* Transparency: the end of data appears once, at the end. */
	end = memmem(whole, wl, "\r\n.\r\n", 5);
	if ((end && end != whole + wl - 5) || (wl > 3 && memcmp(whole, ".\r\n", 3) == 0) ||
	    (!end && wl != 3))
		abort();
	free(ref);
	free(whole);
	free(chunked);
}

/* ---- 3. the engine over loopback --------------------------------------------- */

static int listen_fd = -1;
static unsigned listen_port;

static void
setup(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(listen_fd, 16) < 0 || getsockname(listen_fd, (struct sockaddr *)&sa, &sl) < 0)
		abort();
	listen_port = ntohs(sa.sin_port);
}

/* Serves data on a fresh loopback connection; returns the server end. */
static int
serve(const uint8_t *data, size_t size, struct conn **ret, unsigned max_line)
{
	struct conn_opts o = {
		.host = "127.0.0.1", .port = listen_port, .timeout_ms = 5000, .max_line = max_line,
	};
	struct mp_err err = { 0 };
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	int sfd, sndbuf = 4 * INPUT_MAX;
	size_t off = 0;

	if (conn_open(&o, false, ret, &err) < 0) {
		fprintf(stderr, "loopback connect failed: %s\n", err.msg);
		abort();
	}
	sfd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (sfd < 0)
		abort();
	setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	/* Closed with a reset, never a FIN handshake. */
	setsockopt(sfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	while (off < size) {
		ssize_t n = send(sfd, data + off, size - off, MSG_NOSIGNAL);

		if (n <= 0)
			abort();
		off += (size_t)n;
	}
	shutdown(sfd, SHUT_WR);
	return sfd;
}

struct message {
	const char *data;
	size_t len;
	bool given;
};

static int
msg_read(void *ud, const char **ret_data, size_t *ret_len, struct mp_err *err)
{
	struct message *m = ud;

	(void)err;
	*ret_data = m->data;
	*ret_len = m->given ? 0 : m->len;
	m->given = true;
	return 0;
}

static void
check_result(const struct smtp_result *res, const struct smtp_reply *rcpt, size_t n, int r)
{
	size_t acc = 0;

	for (size_t i = 0; i < n; i++) {
		if (rcpt[i].code)
			check_reply(&rcpt[i]);
		if (rcpt[i].code / 100 == 2)
			acc++;
	}
	if (acc != res->naccepted)
		abort();
	if (r == 0 && (!res->dot_sent || res->final.code / 100 != 2 || acc == 0 ||
		       res->data.code != 354 || res->mail.code / 100 != 2))
		abort();
	if (res->dot_sent && (res->data.code != 354 || acc == 0))
		abort();
	if (res->final.code)
		check_reply(&res->final);
	if (r == -EMSGSIZE || r == -EILSEQ || r == -EINVAL)
		if (res->mail.code || res->dot_sent)
			abort();
}

/* A client for mech, NULL for the plain login or when it cannot be made. */
static struct sasl_session *
fuzz_client(enum sasl_mech mech)
{
	const struct sasl_params sp = {
		.mech = mech, .user = "user@example.com", .secret = "s3cret",
		.host = "mail.example.com", .port = 993, .saslprep = true,
	};
	struct sasl_session *cl = NULL;

	if (mech == SASL_USER || sasl_session_new(&sp, &cl) < 0)
		return NULL;
	return cl;
}

static void
session(uint8_t mode, const uint8_t *data, size_t size)
{
	static const enum sasl_mech mechs[] = { SASL_PLAIN, SASL_LOGIN, SASL_XOAUTH2,
						SASL_OAUTHBEARER };
	struct sasl_session *cl;
	static const char *const rcpts[] = { "a@example.com", "b@example.com",
					     "c\xc3\xa9@example.com" };
	struct smtp_reply rcpt[3];
	struct smtp_result res = { .rcpt = rcpt };
	struct message m = { "Subject: x\n\n.dot\nbody", 21, false };
	struct smtp_envelope env = {
		.from = "me@example.com", .rcpts = rcpts, .nrcpts = mode & 0x10 ? 3 : 2,
		.size = mode & 0x20 ? (uint64_t)1 << 30 : 24, .eightbit = mode & 0x08,
	};
	struct mp_err err = { 0 };
	struct smtp *s;
	struct conn *c;
	int sfd, r;

	sfd = serve(data, size, &c, mode & 0x80 ? 64 : 8192);
	if (smtp_open(c, "client.example.com", mode & 0x04, &s, &err) < 0)
		goto out;
	check_caps(smtp_caps(s));
	memset(&err, 0, sizeof(err));
	cl = fuzz_client(mechs[mode & 3]);
	(void)smtp_auth(s, cl, "user@example.com", "s3cret", &err);
	sasl_session_free(cl);
	memset(&err, 0, sizeof(err));
	r = smtp_send(s, &env, msg_read, &m, &res, &err);
	check_result(&res, rcpt, env.nrcpts, r);
	if (r < 0 && err.code != r)
		abort();
	memset(&err, 0, sizeof(err));
	(void)smtp_quit(s, &err);
	/*
	 * The server end is reset before the client closes: closed after, it
	 * would sit in TIME-WAIT for a minute, tens of thousands of them.
	 */
	close(sfd);
	sfd = -1;
	smtp_free(s);
out:
	if (sfd >= 0)
		close(sfd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > INPUT_MAX)
		return 0;
	if (listen_fd < 0)
		setup();
	check_lines((const char *)data + 1, size - 1);
	check_encoder((const char *)data + 1, size - 1, data, size);
	session(data[0], data + 1, size - 1);
	return 0;
}
