/*
 * libFuzzer target for the POP3 reply and multi-line readers. The first
 * byte picks the session's options; the rest is what the server says.
 *
 * 1. The body byte machine (pop3_body_feed) decodes the bytes once whole
 *    and once in chunks whose sizes come from the input, and both runs
 *    must agree with a plain line-by-line decoder written here from
 *    RFC 1939 section 3: the result may not depend on how the network
 *    split the bytes, the output is never longer than what was consumed,
 *    and decoding stops exactly after the first terminator.
 *
 * 2. The engine (pop3.c) runs a whole session against the same bytes
 *    served over a loopback TCP connection through the real conn: the
 *    greeting, CAPA, STLS, UTF8, an AUTH exchange, LIST and UIDL, RETR
 *    (pipelined when the server says PIPELINING), TOP, DELE and QUIT. The
 *    server side sends everything at once and then closes, so no read can
 *    wait; the commands the client sends are never read. What the engine
 *    hands back is checked against what its header promises.
 *
 * The mode byte: bits 0-2 the AUTH mechanism, 3 TOP, 4 no DELE, 6 STLS
 * (refused before any handshake whenever bytes follow its +OK), 7 a
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

#include "mailpull/pop3.h"
#include "mailpull/pop3_body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* More than a loopback socket buffer surely holds while nobody reads. */
#define INPUT_MAX (64 * 1024)

/* ---- 1. the body machine against a reference decoder --------------------- */

struct decoded {
	char *out;
	size_t outlen;
	size_t used;
	int done;
};

/*
 * RFC 1939 section 3, line by line: a line ends in CRLF or a bare LF and
 * is given back with LF; a leading "." is dropped, except on a line that
 * is only "." and ends in a bare LF (kept as is, see pop3_body.c); the
 * line "." ending in CRLF is the end. An unfinished last line is given
 * back as far as the machine can know it: a leading "." and a trailing
 * CR are held back.
 */
static void
reference(const char *in, size_t len, struct decoded *d)
{
	size_t i = 0;

	d->outlen = 0;
	d->done = 0;
	while (i < len) {
		const char *lf = memchr(in + i, '\n', len - i);
		size_t end = lf ? (size_t)(lf - in) : len;
		size_t clen = end - i;
		bool crlf = lf && clen > 0 && in[end - 1] == '\r';
		const char *c = in + i;

		if (crlf)
			clen--;
		if (!lf) {
			/* Unfinished: "." alone or "." CR could still be the end. */
			if (clen > 0 && c[0] == '.') {
				c++;
				clen--;
			}
			if (clen > 0 && c[clen - 1] == '\r')
				clen--;
			memcpy(d->out + d->outlen, c, clen);
			d->outlen += clen;
			i = len;
			break;
		}
		if (crlf && clen == 1 && c[0] == '.') {
			d->done = 1;
			i = end + 1;
			break;
		}
		if (clen > 0 && c[0] == '.' && !(clen == 1 && !crlf)) {
			c++;
			clen--;
		}
		memcpy(d->out + d->outlen, c, clen);
		d->outlen += clen;
		d->out[d->outlen++] = '\n';
		i = end + 1;
	}
	d->used = i;
}

/* Feeds in chunks of 1..32 bytes sized by sizes[], or whole when sizes is NULL. */
static void
machine(const char *in, size_t len, const uint8_t *sizes, size_t nsizes, struct decoded *d)
{
	struct pop3_body b;
	char *tmp = malloc(len + 1);
	size_t pos = 0, k = 0;

	if (!tmp)
		abort();
	pop3_body_init(&b);
	d->outlen = 0;
	d->done = 0;
	while (pos < len && !d->done) {
		size_t chunk = sizes ? (size_t)(sizes[k++ % nsizes] % 32) + 1 : len - pos;
		size_t outlen = SIZE_MAX, used = SIZE_MAX;

		if (chunk > len - pos)
			chunk = len - pos;
		d->done = pop3_body_feed(&b, in + pos, chunk, tmp, &outlen, &used);
		/* The header's promise: at most len + 1 out, all used unless done. */
		if (used > chunk || outlen > chunk + 1 || (!d->done && used != chunk))
			abort();
		memcpy(d->out + d->outlen, tmp, outlen);
		d->outlen += outlen;
		pos += used;
		if (d->outlen > pos)
			abort();
	}
	if (b.bytes != d->outlen)
		abort();
	d->used = pos;
	free(tmp);
}

static void
check_body(const char *in, size_t len, const uint8_t *sizes, size_t nsizes)
{
	struct decoded ref, whole, chunked;

	ref.out = malloc(len + 1);
	whole.out = malloc(len + 1);
	chunked.out = malloc(len + 1);
	if (!ref.out || !whole.out || !chunked.out)
		abort();
	reference(in, len, &ref);
	machine(in, len, NULL, 0, &whole);
	machine(in, len, sizes, nsizes, &chunked);
	if (whole.done != ref.done || whole.used != ref.used || whole.outlen != ref.outlen ||
	    memcmp(whole.out, ref.out, ref.outlen) != 0) {
		fprintf(stderr, "machine (done %d, used %zu, out %zu) != reference "
			"(done %d, used %zu, out %zu)\n", whole.done, whole.used, whole.outlen,
			ref.done, ref.used, ref.outlen);
		abort();
	}
	if (chunked.done != whole.done || chunked.used != whole.used ||
	    chunked.outlen != whole.outlen || memcmp(chunked.out, whole.out, whole.outlen) != 0) {
		fprintf(stderr, "chunked run differs from the whole run\n");
		abort();
	}
	/* Stopping right after the first terminator, never inside or past one. */
	if (ref.done && (ref.used < 3 || memcmp(in + ref.used - 3, ".\r\n", 3) != 0 ||
			 (ref.used > 3 && in[ref.used - 4] != '\n')))
		abort();
	free(ref.out);
	free(whole.out);
	free(chunked.out);
}

/* ---- 2. the engine over loopback ----------------------------------------- */

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

struct sink_check {
	size_t expect_idx;
	bool open;
	uint64_t bytes;
};

static int
sk_begin(void *ud, size_t idx)
{
	struct sink_check *s = ud;

	if (s->open || idx != s->expect_idx)
		abort();
	s->open = true;
	return 0;
}

static int
sk_data(void *ud, const char *buf, size_t len)
{
	struct sink_check *s = ud;

	if (!s->open || !buf || len == 0 || len > 64 * 1024)
		abort();
	s->bytes += len;
	return 0;
}

static int
sk_end(void *ud)
{
	struct sink_check *s = ud;

	if (!s->open)
		abort();
	s->open = false;
	s->expect_idx++;
	return 0;
}

static void
check_caps(const struct pop3_caps *caps)
{
	size_t n = strnlen(caps->sasl, sizeof(caps->sasl));

	if (n == sizeof(caps->sasl))
		abort();
	for (size_t i = 0; i < n; i++) {
		char ch = caps->sasl[i];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == ' '))
			abort();
	}
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void
check_list(const struct pop3_caps *caps, const struct pop3_msg *m, size_t n)
{
	const char **ids;

	for (size_t i = 0; i < n; i++) {
		size_t ul = strlen(m[i].uidl);

		if (m[i].num == 0 || (i > 0 && m[i].num <= m[i - 1].num) || ul > 70)
			abort();
		if (caps->uidl && ul == 0)
			abort();
		for (size_t k = 0; k < ul; k++)
			if ((unsigned char)m[i].uidl[k] < 0x21 || (unsigned char)m[i].uidl[k] > 0x7e)
				abort();
	}
	if (!caps->uidl || n < 2)
		return;
	ids = calloc(n, sizeof(*ids));
	if (!ids)
		abort();
	for (size_t i = 0; i < n; i++)
		ids[i] = m[i].uidl;
	qsort(ids, n, sizeof(*ids), cmp_str);
	for (size_t i = 1; i < n; i++)
		if (strcmp(ids[i - 1], ids[i]) == 0)
			abort();
	free(ids);
}

/* Serves data on a fresh loopback connection; returns the server end, or -1. */
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
	static const enum sasl_mech mechs[] = {
		SASL_USER, SASL_PLAIN, SASL_LOGIN, SASL_XOAUTH2, SASL_OAUTHBEARER,
	};
	struct sasl_session *cl;
	struct sink_check sc = { 0 };
	struct mp_sink sink = { sk_begin, sk_data, sk_end, &sc };
	struct mp_err err = { 0 };
	struct pop3_msg *msgs = NULL;
	unsigned nums[4] = { 1, 2, 3, 4 };
	size_t n = 0, k;
	struct pop3 *p;
	struct conn *c;
	int sfd, r;

	sfd = serve(data, size, &c, mode & 0x80 ? 64 : 8192);
	if (pop3_open(c, mode & 0x40, &p, &err) < 0)
		goto out;
	check_caps(pop3_caps(p));
	memset(&err, 0, sizeof(err));
	cl = fuzz_client(mechs[(mode & 7) % ARRAY_SIZE(mechs)]);
	(void)pop3_auth(p, cl, "user@example.com", "s3cret", &err);
	sasl_session_free(cl);
	memset(&err, 0, sizeof(err));
	r = pop3_list(p, &msgs, &n, &err);
	if (r == 0)
		check_list(pop3_caps(p), msgs, n);
	k = n < ARRAY_SIZE(nums) ? n : ARRAY_SIZE(nums);
	for (size_t i = 0; i < k; i++)
		nums[i] = msgs[i].num;
	if (k == 0)
		k = 2;
	memset(&err, 0, sizeof(err));
	r = pop3_retr(p, nums, NULL, k, &sink, &err);
	if (r == 0 && (sc.expect_idx != k || sc.open))
		abort();
	if (mode & 0x08) {
		sc = (struct sink_check){ 0 };
		memset(&err, 0, sizeof(err));
		r = pop3_top(p, nums[0], 0, &sink, &err);
		if (r == 0 && (sc.expect_idx != 1 || sc.open))
			abort();
	}
	memset(&err, 0, sizeof(err));
	if (!(mode & 0x10))
		(void)pop3_dele(p, nums, k, &err);
	memset(&err, 0, sizeof(err));
	(void)pop3_quit(p, &err);
	/*
	 * The server end is reset before the client closes: closed after, it
	 * would sit in TIME-WAIT for a minute, tens of thousands of them.
	 */
	close(sfd);
	sfd = -1;
	pop3_free(p);
out:
	free(msgs);
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
	check_body((const char *)data + 1, size - 1, data, size);
	session(data[0], data + 1, size - 1);
	return 0;
}
