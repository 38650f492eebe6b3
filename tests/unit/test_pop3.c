/*
 * The POP3 engine against the scripted fake server (fakeserver.c).
 * The server checks every line the client sends against its script and
 * answers from it; when the script ends it fails if the client sends
 * anything more, so a test also proves what was NOT sent (no credential
 * after a failed STLS, no QUIT after a failed RETR).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "fakeserver.h"
#include "mailpull/log.h"
#include "mailpull/pop3.h"

static int
fake_open(struct fake *f, bool stls, struct pop3 **ret, struct mp_err *err)
{
	return pop3_open(fake_connect(f, 3000, err), stls, ret, err);
}

/*
 * pop3_auth() with a fresh SASL client for mech (the fake server's address
 * for OAUTHBEARER's kvpairs; cb for -PLUS or the "y" flag), freed after.
 * SASL_USER: the plain login.
 */
static int
auth_cb(struct pop3 *p, enum sasl_mech mech, const char *user, const char *secret,
	unsigned port, const char *cb, struct mp_err *err)
{
	const struct sasl_params sp = {
		.mech = mech, .user = user, .secret = secret, .host = "127.0.0.1", .port = port,
		.cb_type = cb ? "tls-exporter" : NULL, .cb_data = (const unsigned char *)cb,
		.cb_len = cb ? strlen(cb) : 0, .saslprep = true,
	};
	struct sasl_session *cl = NULL;
	int r;

	if (mech == SASL_USER)
		return pop3_auth(p, NULL, user, secret, err);
	assert_int_equal(sasl_session_new(&sp, &cl), 0);
	r = pop3_auth(p, cl, user, secret, err);
	sasl_session_free(cl);
	return r;
}

static int
auth(struct pop3 *p, enum sasl_mech mech, const char *user, const char *secret,
     struct mp_err *err)
{
	return auth_cb(p, mech, user, secret, 0, NULL, err);
}

/* ---- a sink that keeps what it gets ------------------------------------- */

struct got {
	char *buf[64];
	size_t len[64];
	size_t cur, begun, ended;
	int fail_at;  /* idx whose data() fails, or -1 */
};

static int
got_begin(void *ud, size_t idx)
{
	struct got *g = ud;

	assert_true(idx < 64);
	assert_int_equal(idx, g->begun);
	g->cur = idx;
	g->begun++;
	return 0;
}

static int
got_data(void *ud, const char *buf, size_t len)
{
	struct got *g = ud;
	char *n;

	if (g->fail_at == (int)g->cur)
		return -ENOSPC;
	n = realloc(g->buf[g->cur], g->len[g->cur] + len + 1);
	assert_non_null(n);
	memcpy(n + g->len[g->cur], buf, len);
	g->len[g->cur] += len;
	n[g->len[g->cur]] = '\0';
	g->buf[g->cur] = n;
	return 0;
}

static int
got_end(void *ud)
{
	struct got *g = ud;

	g->ended++;
	return 0;
}

static void
got_free(struct got *g)
{
	for (size_t i = 0; i < 64; i++)
		free(g->buf[i]);
}

#define GREET S("+OK POP3 ready\r\n")
#define CAPA_FULL C("CAPA"), \
	S("+OK\r\nUSER\r\nUIDL\r\nTOP\r\nSASL PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\nPIPELINING\r\n" \
	  "RESP-CODES\r\n.\r\n")
#define CAPA_SIMPLE C("CAPA"), S("+OK\r\nUSER\r\nUIDL\r\nSASL PLAIN\r\n.\r\n")
/* base64("\0user\0secret") */
#define PLAIN_IR "AHVzZXIAc2VjcmV0"

/* ---- tests -------------------------------------------------------------- */

static void
test_open_auth_plain_quit(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_FULL,
		C("AUTH PLAIN " PLAIN_IR), S("+OK logged in\r\n"),
		C("QUIT"), S("+OK bye\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;
	const struct pop3_caps *caps;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	caps = pop3_caps(p);
	assert_true(caps->user && caps->uidl && caps->top && caps->pipelining && caps->resp_codes);
	assert_false(caps->stls);
	assert_string_equal(caps->sasl, "PLAIN LOGIN XOAUTH2 OAUTHBEARER");
	assert_int_equal(auth(p, SASL_PLAIN, "user", "secret", &err), 0);
	assert_int_equal(pop3_quit(p, &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_bad_greeting(void **state)
{
	static const struct fake_step script[] = { S("-ERR \033[2Jgo away\r\n"), END };
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), -EPROTO);
	assert_null(p);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	/* server text is kept apart and sanitized */
	assert_string_equal(err.srv, "\\x1b[2Jgo away");
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_auth_refused_then_user_pass(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE,
		C("AUTH PLAIN " PLAIN_IR), S("-ERR [AUTH] invalid credentials\r\n"),
		C("USER user"), S("+OK\r\n"),
		C("PASS secret"), S("+OK\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(auth(p, SASL_PLAIN, "user", "secret", &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_NOPERM);
	assert_string_equal(err.msg, "authentication refused");
	assert_string_equal(err.srv, "[AUTH] invalid credentials");
	mp_err_clear(&err);
	/* a line break would end the command and start another: never sent */
	assert_int_equal(auth(p, SASL_USER, "user\r\nDELE 1", "secret", &err), -EINVAL);
	assert_int_equal(auth(p, SASL_USER, "user", "x\nDELE 1", &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(auth(p, SASL_USER, "user", "secret", &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_pass_refused_in_use(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE,
		C("USER user"), S("+OK\r\n"),
		C("PASS secret"), S("-ERR [IN-USE] mailbox locked\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(auth(p, SASL_USER, "user", "secret", &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_TEMPFAIL);
	assert_string_equal(err.srv, "[IN-USE] mailbox locked");
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/* Without CAPA: USER/UIDL/TOP are tried, UIDL's -ERR believed, nothing pipelined. */
static void
test_no_capa(void **state)
{
	static const struct fake_step script[] = {
		GREET, C("CAPA"), S("-ERR unknown command\r\n"),
		C("USER user"), S("+OK\r\n"), C("PASS secret"), S("+OK\r\n"),
		C("LIST"), S("+OK 2 messages\r\n1 10\r\n2 20\r\n.\r\n"),
		C("UIDL"), S("-ERR unknown command\r\n"),
		C("RETR 1"), QUIET, S("+OK\r\na\r\n.\r\n"),
		C("RETR 2"), QUIET, S("+OK\r\nb\r\n.\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct pop3_msg *m = NULL;
	struct got g = { .fail_at = -1 };
	struct mp_sink sink = { got_begin, got_data, got_end, &g };
	unsigned nums[] = { 1, 2 };
	struct mp_err err;
	size_t n = 0;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_true(pop3_caps(p)->user && pop3_caps(p)->uidl && pop3_caps(p)->top);
	assert_false(pop3_caps(p)->pipelining);
	assert_int_equal(auth(p, SASL_USER, "user", "secret", &err), 0);
	assert_int_equal(pop3_list(p, &m, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(m[0].uidl, "");
	assert_false(pop3_caps(p)->uidl);
	assert_int_equal(pop3_retr(p, nums, NULL, 2, &sink, &err), 0);
	assert_string_equal(g.buf[0], "a\n");
	assert_string_equal(g.buf[1], "b\n");
	free(m);
	got_free(&g);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_list_uidl_merge(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE,
		C("LIST"), S("+OK\r\n1 100\r\n3 300 extra\r\n7 7000000000\r\n.\r\n"),
		C("UIDL"), S("+OK\r\n1 aaa\r\n3 b~!b \r\n7 ccc\r\n.\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct pop3_msg *m = NULL;
	struct mp_err err;
	size_t n = 0;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_list(p, &m, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(m[0].num, 1);
	assert_int_equal(m[0].size, 100);
	assert_string_equal(m[0].uidl, "aaa");
	assert_int_equal(m[1].num, 3);
	assert_string_equal(m[1].uidl, "b~!b");
	assert_int_equal(m[2].size, 7000000000ull);
	assert_string_equal(m[2].uidl, "ccc");
	free(m);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/* UTF8 (RFC 6856) goes out before login when offered; a refusal is no error. */
static void
utf8_case(const char *reply, bool want)
{
	struct fake_step script[] = {
		GREET, C("CAPA"), S("+OK\r\nUSER\r\nUIDL\r\nUTF8 USER\r\n.\r\n"),
		C("UTF8"), S(reply), C("USER user"), S("+OK\r\n"), C("PASS secret"), S("+OK\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_true(pop3_caps(p)->utf8);
	assert_int_equal(pop3_utf8_mode(p), want);
	assert_int_equal(auth(p, SASL_USER, "user", "secret", &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_utf8(void **state)
{
	static const struct fake_step plain[] = {
		GREET, CAPA_SIMPLE, C("USER user"), S("+OK\r\n"), C("PASS secret"), S("+OK\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	utf8_case("+OK UTF8 enabled\r\n", true);
	utf8_case("-ERR not now\r\n", false);
	/* Not offered: not sent. */
	fake_start(&f, plain);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_false(pop3_utf8_mode(p));
	assert_int_equal(auth(p, SASL_USER, "user", "secret", &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_empty_list(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE, C("LIST"), S("+OK 0 messages\r\n.\r\n"),
		C("UIDL"), S("+OK\r\n.\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct pop3_msg *m = NULL;
	struct mp_err err;
	size_t n = 99;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_list(p, &m, &n, &err), 0);
	assert_int_equal(n, 0);
	free(m);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/* A listing problem is -EPROTO with msg containing want; nothing more is sent. */
static void
list_fails(const char *list, const char *uidl, const char *want)
{
	struct fake_step script[] = {
		GREET, CAPA_SIMPLE, C("LIST"), S(list), C("UIDL"), S(uidl), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct pop3_msg *m = NULL;
	struct mp_err err;
	size_t n = 0;

	if (!uidl)
		script[5] = (struct fake_step)END;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_list(p, &m, &n, &err), -EPROTO);
	assert_null(m);
	if (!strstr(err.msg, want))
		fail_msg("error \"%s\" lacks \"%s\"", err.msg, want);
	/* the session refuses further use */
	assert_int_equal(pop3_quit(p, &err), -EPROTO);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_list_errors(void **state)
{
	(void)state;
	list_fails("+OK\r\n1 10\r\n2 20\r\n.\r\n", "+OK\r\n1 abc\r\n2 abc\r\n.\r\n",
		   "server listed UIDL abc twice");
	list_fails("+OK\r\n1 10\r\n2 20\r\n3 5\r\n.\r\n", "+OK\r\n3 x\r\n1 y\r\n2 x\r\n.\r\n",
		   "disagree");
	list_fails("+OK\r\n2 10\r\n1 20\r\n.\r\n", NULL, "after");
	list_fails("+OK\r\n1 10\r\n1 20\r\n.\r\n", NULL, "after");
	list_fails("+OK\r\n1 ten\r\n.\r\n", NULL, "malformed LIST");
	list_fails("+OK\r\n0 10\r\n.\r\n", NULL, "malformed LIST");
	list_fails("+OK\r\n1  10\r\n.\r\n", NULL, "malformed LIST");
	list_fails("+OK\r\n-1 10\r\n.\r\n", NULL, "malformed LIST");
	list_fails("-ERR no\r\n", NULL, "refused LIST");
	list_fails("+OK\r\n1 10\r\n2 20\r\n.\r\n", "+OK\r\n1 a\r\n.\r\n", "no UIDL for message 2");
	list_fails("+OK\r\n1 10\r\n.\r\n", "+OK\r\n1 a\r\n2 b\r\n.\r\n", "disagree");
	list_fails("+OK\r\n1 10\r\n.\r\n", "+OK\r\n1 a\001b\r\n.\r\n", "invalid UIDL");
	list_fails("+OK\r\n1 10\r\n.\r\n", "+OK\r\n1 \r\n.\r\n", "invalid UIDL");
	list_fails("+OK\r\n1 10\r\n.\r\n",
		   "+OK\r\n1 1234567890123456789012345678901234567890"
		   "1234567890123456789012345678901"
		   "\r\n.\r\n", "invalid UIDL");
	list_fails("+OK\r\n1 10\r\n.\r\n", "-ERR no\r\n", "advertised UIDL");
}

/* PIPELINING: all RETRs go out before the first reply; bodies are decoded. */
static void
test_retr_pipelined(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_FULL,
		C("RETR 1"), C("RETR 2"), C("RETR 5"),
		S("+OK 10 octets\r\nA: 1\r\n\r\n..dot\r\n.\r\n"
		  "+OK\r\n.\r\n"
		  "+OK\r\nline\r\n..\r\nno newline\r\n.\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct got g = { .fail_at = -1 };
	struct mp_sink sink = { got_begin, got_data, got_end, &g };
	unsigned nums[] = { 1, 2, 5 };
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_retr(p, nums, NULL, 3, &sink, &err), 0);
	assert_int_equal(g.begun, 3);
	assert_int_equal(g.ended, 3);
	assert_string_equal(g.buf[0], "A: 1\n\n.dot\n");
	assert_null(g.buf[1]);
	assert_string_equal(g.buf[2], "line\n.\nno newline\n");
	got_free(&g);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static const char *
dele_reply(const char *line)
{
	(void)line;
	return "+OK\r\n";
}

/* ---- deep pipelines: a sink that checks generated bodies ---------------- */

/* The fake server's steps added for pipelines (fakeserver.c). */
/* n client lines in flight before any answer (in one write when one_write). */
#define DEPTH(n) { 'D', NULL, n }
#define DEPTH_ONE_WRITE(n) { 'D', "one write", n }
/* At most n bytes of client lines unread once the client is quiet. */
#define AT_MOST(n) { 'M', NULL, n }
/* Reads what came (one line or more), answers it all with f; n lines in all. */
#define ROUNDS(n, f) { 'R', NULL, n, f }
/* f's answers to "1".."n", written without reading. */
#define BULK(n, f) { 'B', NULL, n, f }

/* Body bytes of message k after its "Subject: k" line (decoded size matters). */
static size_t pad_len;

/* The wire reply to "RETR k" (or to "k" alone): a header and pad_len bytes of lines. */
static const char *
retr_reply(const char *line)
{
	static char *out;
	static size_t cap;
	const char *num = strncmp(line, "RETR ", 5) == 0 ? line + 5 : line;
	unsigned k = (unsigned)strtoul(num, NULL, 10);
	size_t len;

	if (cap < pad_len + 128) {
		cap = pad_len + 128;
		out = realloc(out, cap);
		if (!out)
			return NULL;
	}
	len = (size_t)snprintf(out, cap, "+OK\r\nSubject: %u\r\n\r\n", k);
	for (size_t i = 0; i < pad_len; i++)
		out[len++] = i % 64 == 62 ? '\r' : i % 64 == 63 ? '\n' : (char)('a' + (k + i) % 26);
	memcpy(out + len, "\r\n.\r\n", 6);
	return out;
}

/* Checks each body against retr_reply()'s for nums[idx]; sleeps on demand. */
struct tally {
	const unsigned *nums;
	size_t begun, ended, cur, len;
	bool bad;
	unsigned sleep_ms;   /* the first data() call sleeps this long (a slow disk) */
	char body[4096];
};

static int
tally_begin(void *ud, size_t idx)
{
	struct tally *t = ud;

	if (idx != t->begun)
		t->bad = true;
	t->cur = idx;
	t->len = 0;
	t->begun++;
	return 0;
}

static int
tally_data(void *ud, const char *buf, size_t len)
{
	struct tally *t = ud;

	if (t->sleep_ms) {
		usleep(t->sleep_ms * 1000);
		t->sleep_ms = 0;
	}
	if (t->len + len < sizeof(t->body))
		memcpy(t->body + t->len, buf, len);
	t->len += len;
	return 0;
}

static int
tally_end(void *ud)
{
	struct tally *t = ud;
	char head[64];
	size_t hl = (size_t)snprintf(head, sizeof(head), "Subject: %u\n\n", t->nums[t->cur]);
	size_t want = hl + pad_len - pad_len / 64 + 1;

	if (t->len != want || memcmp(t->body, head, hl) != 0)
		t->bad = true;
	t->ended++;
	return 0;
}

#define CAPA_PIPE C("CAPA"), S("+OK\r\nPIPELINING\r\n.\r\n")

/*
 * Far deeper than 32: with sizes, 300 small messages fit every limit, so
 * all their commands leave in one write before any reply.
 */
static void
test_retr_deep_one_write(void **state)
{
	enum { NMSG = 300 };
	struct fake_step script[4 + NMSG + 1];
	struct fake f;
	struct pop3 *p = NULL;
	unsigned nums[NMSG];
	uint64_t sizes[NMSG];
	struct tally t = { .nums = nums };
	struct mp_sink sink = { tally_begin, tally_data, tally_end, &t };
	struct mp_err err;
	size_t k = 0;

	(void)state;
	pad_len = 100;
	script[k++] = (struct fake_step)GREET;
	script[k++] = (struct fake_step)C("CAPA");
	script[k++] = (struct fake_step)S("+OK\r\nPIPELINING\r\n.\r\n");
	script[k++] = (struct fake_step)DEPTH_ONE_WRITE(NMSG);
	for (size_t i = 0; i < NMSG; i++) {
		nums[i] = (unsigned)(NMSG - i);   /* any order the caller wants */
		sizes[i] = 130;
		script[k++] = (struct fake_step)ANSWER("RETR ", retr_reply);
	}
	script[k] = (struct fake_step)END;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_retr(p, nums, sizes, NMSG, &sink, &err), 0);
	assert_int_equal(t.ended, NMSG);
	assert_false(t.bad);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/*
 * Messages far larger than the window: with sizes, one command at a time
 * into an idle pipe still goes out, and every body arrives whole.
 */
static void
test_retr_large_sizes(void **state)
{
	enum { NMSG = 12 };
	static const struct fake_step script[] = {
		GREET, CAPA_PIPE, ROUNDS(NMSG, retr_reply), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	unsigned nums[NMSG];
	uint64_t sizes[NMSG];
	struct tally t = { .nums = nums };
	struct mp_sink sink = { tally_begin, tally_data, tally_end, &t };
	struct mp_err err;

	(void)state;
	pad_len = 300000;
	for (size_t i = 0; i < NMSG; i++) {
		nums[i] = (unsigned)(i + 1);
		sizes[i] = pad_len + 20;
	}
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_retr(p, nums, sizes, NMSG, &sink, &err), 0);
	assert_int_equal(t.ended, NMSG);
	/* tally keeps 4 KiB of each body: the length check is what matters here */
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/*
 * The cap on unanswered command bytes: deep (hundreds of commands) but
 * never past 32 KiB, against a server that writes all its replies to what
 * it has read before reading more. Without the cap, both sides would wait
 * on full TCP windows for ever (the server's alarm would end it).
 */
static void
test_retr_command_cap(void **state)
{
	enum { NMSG = 20000 };
	static const struct fake_step script[] = {
		GREET, CAPA_PIPE, DEPTH(500), AT_MOST(32768), ROUNDS(NMSG, retr_reply), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	unsigned *nums = calloc(NMSG, sizeof(*nums));
	uint64_t *sizes = calloc(NMSG, sizeof(*sizes));
	struct tally t = { .nums = nums };
	struct mp_sink sink = { tally_begin, tally_data, tally_end, &t };
	struct mp_err err;

	(void)state;
	assert_non_null(nums);
	assert_non_null(sizes);
	pad_len = 1000;
	for (size_t i = 0; i < NMSG; i++) {
		nums[i] = (unsigned)(i + 1);
		sizes[i] = 1;   /* a listing that understates: the caps still hold */
	}
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_retr(p, nums, sizes, NMSG, &sink, &err), 0);
	assert_int_equal(t.ended, NMSG);
	assert_false(t.bad);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
	free(nums);
	free(sizes);
}

/* The reply to "k": retr_reply()'s, but -ERR for message 50. */
static const char *
retr_or_err50(const char *line)
{
	return strcmp(line, "50") == 0 ? "-ERR no such message\r\n" : retr_reply(line);
}

/* -ERR in the middle of a deep pipeline: the batch stops there, out of step. */
static void
test_retr_err_deep(void **state)
{
	enum { NMSG = 100 };
	struct fake_step script[4 + NMSG + 2];
	struct fake f;
	struct pop3 *p = NULL;
	unsigned nums[NMSG];
	uint64_t sizes[NMSG];
	struct tally t = { .nums = nums };
	struct mp_sink sink = { tally_begin, tally_data, tally_end, &t };
	struct mp_err err;
	size_t k = 0;

	(void)state;
	pad_len = 100;
	script[k++] = (struct fake_step)GREET;
	script[k++] = (struct fake_step)C("CAPA");
	script[k++] = (struct fake_step)S("+OK\r\nPIPELINING\r\n.\r\n");
	script[k++] = (struct fake_step)DEPTH_ONE_WRITE(NMSG);
	for (size_t i = 0; i < NMSG; i++) {
		nums[i] = (unsigned)(i + 1);
		sizes[i] = 130;
		script[k++] = (struct fake_step){ 'c', "RETR ", 0 };
	}
	script[k++] = (struct fake_step)BULK(50, retr_or_err50);
	script[k] = (struct fake_step)END;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_retr(p, nums, sizes, NMSG, &sink, &err), -EPROTO);
	assert_string_equal(err.msg, "server refused RETR 50");
	assert_string_equal(err.srv, "no such message");
	assert_int_equal(t.ended, 49);
	assert_false(t.bad);
	assert_int_equal(pop3_quit(p, &err), -EPROTO);
	pop3_free(p);
	/* nothing after the -ERR: no QUIT, no more commands */
	assert_int_equal(fake_wait(&f), 0);
}

/*
 * A sink that blocks longer than the timeout (a slow disk) is not the
 * server being slow: the minimum-rate rule counts only time spent waiting.
 */
static void
test_retr_slow_sink(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE, C("RETR 1"),
		S("+OK\r\nSubject: 1\r\n"), PAUSE, S("\r\n\r\n.\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	unsigned nums[] = { 1 };
	struct tally t = { .nums = nums, .sleep_ms = 1500 };
	struct mp_sink sink = { tally_begin, tally_data, tally_end, &t };
	struct mp_err err;

	(void)state;
	pad_len = 0;
	fake_start(&f, script);
	assert_int_equal(pop3_open(fake_connect(&f, 1000, &err), false, &p, &err), 0);
	assert_int_equal(pop3_retr(p, nums, NULL, 1, &sink, &err), 0);
	assert_int_equal(t.ended, 1);
	assert_false(t.bad);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/* A server that trickles a body, each line in time, still fails the rate. */
static void
test_retr_slow_server(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE, C("RETR 1"), S("+OK\r\n"),
		S("abcdefgh\r\n"), SLEEP(400), S("abcdefgh\r\n"), SLEEP(400),
		S("abcdefgh\r\n"), SLEEP(400), S("abcdefgh\r\n"), SLEEP(400),
		S("abcdefgh\r\n"), SLEEP(400), S("abcdefgh\r\n"), SLEEP(400),
		S("abcdefgh\r\n"), SLEEP(400), S(".\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	unsigned nums[] = { 1 };
	struct tally t = { .nums = nums };
	struct mp_sink sink = { tally_begin, tally_data, tally_end, &t };
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(pop3_open(fake_connect(&f, 1000, &err), false, &p, &err), 0);
	assert_int_equal(pop3_retr(p, nums, NULL, 1, &sink, &err), -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "slower than"));
	assert_int_equal(t.ended, 0);
	pop3_free(p);
	(void)fake_wait(&f);
}

/* DELE of many: deep, in one write. */
static void
test_dele_deep(void **state)
{
	enum { NMSG = 400 };
	struct fake_step script[4 + NMSG + 1];
	struct fake f;
	struct pop3 *p = NULL;
	unsigned nums[NMSG];
	struct mp_err err;
	size_t k = 0;

	(void)state;
	script[k++] = (struct fake_step)GREET;
	script[k++] = (struct fake_step)C("CAPA");
	script[k++] = (struct fake_step)S("+OK\r\nPIPELINING\r\n.\r\n");
	script[k++] = (struct fake_step)DEPTH_ONE_WRITE(NMSG);
	for (size_t i = 0; i < NMSG; i++) {
		nums[i] = (unsigned)(i + 1);
		script[k++] = (struct fake_step)ANSWER("DELE ", dele_reply);
	}
	script[k] = (struct fake_step)END;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_dele(p, nums, NMSG, &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_retr_err(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_FULL,
		C("RETR 1"), C("RETR 2"),
		S("+OK\r\nx\r\n.\r\n-ERR no such message\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct got g = { .fail_at = -1 };
	struct mp_sink sink = { got_begin, got_data, got_end, &g };
	unsigned nums[] = { 1, 2 };
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_retr(p, nums, NULL, 2, &sink, &err), -EPROTO);
	assert_string_equal(err.msg, "server refused RETR 2");
	assert_string_equal(err.srv, "no such message");
	assert_int_equal(g.ended, 1);
	/* no QUIT: that would commit nothing here, but the session is out of step */
	assert_int_equal(pop3_quit(p, &err), -EPROTO);
	got_free(&g);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_retr_sink_fails(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE, C("RETR 1"), S("+OK\r\nx\r\n.\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct got g = { .fail_at = 0 };
	struct mp_sink sink = { got_begin, got_data, got_end, &g };
	unsigned nums[] = { 1 };
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_retr(p, nums, NULL, 1, &sink, &err), -ENOSPC);
	assert_int_equal(g.ended, 0);
	got_free(&g);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_top(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE, C("TOP 3 0"), S("+OK\r\nSubject: hi\r\n\r\n.\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct got g = { .fail_at = -1 };
	struct mp_sink sink = { got_begin, got_data, got_end, &g };
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_top(p, 3, 0, &sink, &err), 0);
	assert_string_equal(g.buf[0], "Subject: hi\n\n");
	got_free(&g);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_dele_quit(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_FULL,
		C("DELE 1"), C("DELE 2"), C("DELE 4"), S("+OK\r\n+OK\r\n+OK\r\n"),
		C("QUIT"), S("+OK\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	unsigned nums[] = { 1, 2, 4 };
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_dele(p, nums, 3, &err), 0);
	assert_int_equal(pop3_quit(p, &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_dele_err_quit_err(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE,
		C("DELE 1"), QUIET, S("-ERR message 1 already deleted\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	unsigned nums[] = { 1, 2 };
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_dele(p, nums, 2, &err), -EPROTO);
	assert_string_equal(err.srv, "message 1 already deleted");
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_quit_err(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE, C("QUIT"), S("-ERR some deleted messages not removed\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(pop3_quit(p, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "deletions may not have happened"));
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/* STLS asked for but not offered: stop before any credential. */
static void
test_stls_not_offered(void **state)
{
	static const struct fake_step script[] = { GREET, CAPA_FULL, END };
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &p, &err), -EPROTO);
	assert_null(p);
	assert_non_null(strstr(err.msg, "server does not offer STLS"));
	/* the server fails if AUTH, USER or anything else followed CAPA */
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_stls_refused(void **state)
{
	static const struct fake_step script[] = {
		GREET, C("CAPA"), S("+OK\r\nSTLS\r\nUSER\r\n.\r\n"),
		C("STLS"), QUIET, S("-ERR not now\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &p, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "refused STLS"));
	assert_string_equal(err.srv, "not now");
	assert_int_equal(fake_wait(&f), 0);
}

/* Bytes after the STLS +OK came before the handshake: refuse them. */
static void
test_stls_injection(void **state)
{
	static const struct fake_step script[] = {
		GREET, C("CAPA"), S("+OK\r\nSTLS\r\nUSER\r\n.\r\n"),
		C("STLS"), S("+OK begin TLS\r\n+OK\r\nSASL ANONYMOUS\r\n.\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &p, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "data after STARTTLS response"));
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_stls_garbage(void **state)
{
	static const struct fake_step script[] = {
		GREET, C("CAPA"), S("+OK\r\nSTLS\r\n.\r\n"), C("STLS"), S("* OK what\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &p, &err), -EPROTO);
	assert_int_equal(fake_wait(&f), 0);
}

/* An initial response that would make the AUTH line exceed 255 octets follows "+ ". */
static void
test_auth_plain_long(void **state)
{
	char user[201], *b64 = NULL;
	struct fake_step script[] = {
		GREET, CAPA_SIMPLE, C("AUTH PLAIN"), S("+ \r\n"), C(NULL), S("+OK\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	memset(user, 'u', sizeof(user) - 1);
	user[sizeof(user) - 1] = '\0';
	assert_int_equal(sasl_plain(user, "secret", &b64), 0);
	script[5].text = b64;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(auth(p, SASL_PLAIN, user, "secret", &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
	sasl_free(b64);
}

static void
test_auth_login(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_FULL,
		C("AUTH LOGIN"), S("+ VXNlcm5hbWU6\r\n"),
		C("dXNlcg=="), S("+ UGFzc3dvcmQ6\r\n"),
		C("c2VjcmV0"), S("+OK\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(auth(p, SASL_LOGIN, "user", "secret", &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/* XOAUTH2 failure: an error challenge, an empty answer, then -ERR. */
static void
test_auth_xoauth2_error(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_FULL,
		/* base64("user=user\1auth=Bearer tok\1\1") */
		C("AUTH XOAUTH2 dXNlcj11c2VyAWF1dGg9QmVhcmVyIHRvawEB"),
		S("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"),
		C(""), S("-ERR\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(auth(p, SASL_XOAUTH2, "user", "tok", &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_NOPERM);
	/* the decoded error report stands in for an empty -ERR text */
	assert_string_equal(err.srv, "{\"status\":\"401\"}");
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/* OAUTHBEARER names the server's host and port; an error challenge gets ^A. */
static void
test_auth_oauthbearer_error(void **state)
{
	char want[300], *b64 = NULL;
	struct fake_step script[] = {
		GREET, CAPA_FULL, C(NULL), S("+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n"),
		C("AQ=="), S("-ERR token expired\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_listen(&f);
	assert_int_equal(sasl_oauthbearer("user", "127.0.0.1", f.port, "tok", &b64), 0);
	snprintf(want, sizeof(want), "AUTH OAUTHBEARER %s", b64);
	sasl_free(b64);
	script[3].text = want;
	fake_run(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(auth_cb(p, SASL_OAUTHBEARER, "user", "tok", f.port, NULL, &err), -EACCES);
	/* the provider's error report says more than the -ERR text */
	assert_string_equal(err.srv, "{\"status\":\"invalid_token\"}");
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/* ---- SCRAM and the generic SASL loop ------------------------------------ */

#define CAPA_SCRAM C("CAPA"), S("+OK\r\nUSER\r\nSASL SCRAM-SHA-256 SCRAM-SHA-1 EXTERNAL\r\n.\r\n")

static void
scram_setup(bool sha1)
{
	fake_scram = (struct fake_scram){
		.prefix = "+ ", .user = "user", .password = "pencil", .sha1 = sha1, .gs2 = "n,,",
	};
}

/* Runs script against one SCRAM login of mech; returns pop3_auth()'s result. */
static int
scram_run(const struct fake_step *script, enum sasl_mech mech, struct mp_err *err)
{
	struct fake f;
	struct pop3 *p = NULL;
	int r;

	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, err), 0);
	r = auth(p, mech, "user", "pencil", err);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
	return r;
}

/*
 * The client-first message on the AUTH line, the client-final answering
 * the server-first, an empty line answering the verified server-final.
 */
static void
test_auth_scram(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SCRAM,
		ANSWER("AUTH SCRAM-SHA-256 ", fake_scram_first), ANSWER(NULL, fake_scram_final),
		C(""), S("+OK logged in\r\n"),
		END,
	};
	static const struct fake_step sha1[] = {
		GREET, CAPA_SCRAM,
		ANSWER("AUTH SCRAM-SHA-1 ", fake_scram_first), ANSWER(NULL, fake_scram_final),
		C(""), S("+OK logged in\r\n"),
		END,
	};
	struct mp_err err;

	(void)state;
	scram_setup(false);
	assert_int_equal(scram_run(script, SASL_SCRAM_SHA_256, &err), 0);
	scram_setup(true);
	assert_int_equal(scram_run(sha1, SASL_SCRAM_SHA_1, &err), 0);
}

/* +OK without the server's proof: the server never showed it knows the password. */
static void
test_auth_scram_ok_without_v(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SCRAM,
		ANSWER("AUTH SCRAM-SHA-256 ", fake_scram_first), C(NULL), S("+OK\r\n"),
		END,
	};
	struct mp_err err;

	(void)state;
	scram_setup(false);
	assert_int_equal(scram_run(script, SASL_SCRAM_SHA_256, &err), -EPROTO);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_non_null(strstr(err.msg, "without proving it knows the password"));
}

/* A wrong server signature, a nonce not extended, 1 iteration: "*" cancels. */
static void
test_auth_scram_cancel(void **state)
{
	static const struct fake_step bad_v[] = {
		GREET, CAPA_SCRAM,
		ANSWER("AUTH SCRAM-SHA-256 ", fake_scram_first), ANSWER(NULL, fake_scram_final),
		C("*"), S("-ERR cancelled\r\n"),
		END,
	};
	static const struct fake_step first_only[] = {
		GREET, CAPA_SCRAM,
		ANSWER("AUTH SCRAM-SHA-256 ", fake_scram_first), C("*"), S("-ERR cancelled\r\n"),
		END,
	};
	struct mp_err err;

	(void)state;
	scram_setup(false);
	fake_scram.bad_signature = true;
	assert_int_equal(scram_run(bad_v, SASL_SCRAM_SHA_256, &err), -EPROTO);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_non_null(strstr(err.msg, "SCRAM-SHA-256 authentication failed: "));
	/* the server's text is not what failed */
	assert_string_equal(err.srv, "");

	scram_setup(false);
	fake_scram.short_nonce = true;
	assert_int_equal(scram_run(first_only, SASL_SCRAM_SHA_256, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "nonce"));

	scram_setup(false);
	fake_scram.iter = 1;
	assert_int_equal(scram_run(first_only, SASL_SCRAM_SHA_256, &err), -ERANGE);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
}

/* The server's e= in the server-final: refused, MP_EX_NOPERM. */
static void
test_auth_scram_server_error(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SCRAM,
		ANSWER("AUTH SCRAM-SHA-256 ", fake_scram_first), C(NULL),
		/* base64("e=invalid-proof") */
		S("+ ZT1pbnZhbGlkLXByb29m\r\n"), C("*"), S("-ERR [AUTH] failed\r\n"),
		END,
	};
	struct mp_err err;

	(void)state;
	scram_setup(false);
	assert_int_equal(scram_run(script, SASL_SCRAM_SHA_256, &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_NOPERM);
	assert_non_null(strstr(err.msg, "invalid-proof"));
}

/* An XOAUTH2 response over 255 octets with the command: two steps (RFC 5034 section 4). */
static void
test_auth_xoauth2_long(void **state)
{
	char tok[301], *b64 = NULL;
	struct fake_step script[] = {
		GREET, CAPA_FULL, C("AUTH XOAUTH2"), S("+ \r\n"), C(NULL), S("+OK\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	memset(tok, 't', sizeof(tok) - 1);
	tok[sizeof(tok) - 1] = '\0';
	assert_int_equal(sasl_xoauth2("user", tok, &b64), 0);
	script[5].text = b64;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(auth(p, SASL_XOAUTH2, "user", tok, &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
	sasl_free(b64);
}

/* EXTERNAL with an empty authorization identity: "=" on the AUTH line. */
static void
test_auth_external_empty(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SCRAM, C("AUTH EXTERNAL ="), S("+OK\r\n"), END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(auth(p, SASL_EXTERNAL, "", NULL, &err), 0);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
}

/* An +OK before any response was sent is no login. */
static void
test_auth_ok_without_response(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_FULL, C("AUTH LOGIN"), S("+OK\r\n"), END,
	};
	struct mp_err err;

	(void)state;
	assert_int_equal(scram_run(script, SASL_LOGIN, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "without a response"));
}

/* With -v, no secret reaches the trace: only "***". */
static void
test_trace_redacts(void **state)
{
	static const struct fake_step script[] = {
		GREET, CAPA_SIMPLE,
		C("AUTH PLAIN " PLAIN_IR), S("-ERR no\r\n"),
		C("USER user"), S("+OK\r\n"), C("PASS secret"), S("+OK\r\n"),
		END,
	};
	struct fake f;
	struct pop3 *p = NULL;
	struct mp_err err;
	char buf[8192];
	FILE *tmp = tmpfile();
	int saved = dup(2);
	size_t n;

	(void)state;
	assert_non_null(tmp);
	fake_start(&f, script);
	fflush(stderr);
	dup2(fileno(tmp), 2);
	log_set_level(LOG_LVL_TRACE);
	assert_int_equal(fake_open(&f, false, &p, &err), 0);
	assert_int_equal(auth(p, SASL_PLAIN, "user", "secret", &err), -EACCES);
	assert_int_equal(auth(p, SASL_USER, "user", "secret", &err), 0);
	log_set_level(LOG_LVL_INFO);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	pop3_free(p);
	assert_int_equal(fake_wait(&f), 0);
	rewind(tmp);
	n = fread(buf, 1, sizeof(buf) - 1, tmp);
	buf[n] = '\0';
	fclose(tmp);
	assert_non_null(strstr(buf, "C: AUTH PLAIN ***"));
	assert_non_null(strstr(buf, "C: PASS ***"));
	assert_non_null(strstr(buf, "C: USER user"));
	assert_non_null(strstr(buf, "S: +OK POP3 ready"));
	assert_null(strstr(buf, "secret"));
	assert_null(strstr(buf, PLAIN_IR));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_auth_plain_quit),
		cmocka_unit_test(test_bad_greeting),
		cmocka_unit_test(test_auth_refused_then_user_pass),
		cmocka_unit_test(test_pass_refused_in_use),
		cmocka_unit_test(test_no_capa),
		cmocka_unit_test(test_list_uidl_merge),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_empty_list),
		cmocka_unit_test(test_list_errors),
		cmocka_unit_test(test_retr_pipelined),
		cmocka_unit_test(test_retr_deep_one_write),
		cmocka_unit_test(test_retr_large_sizes),
		cmocka_unit_test(test_retr_command_cap),
		cmocka_unit_test(test_retr_err_deep),
		cmocka_unit_test(test_retr_slow_sink),
		cmocka_unit_test(test_retr_slow_server),
		cmocka_unit_test(test_dele_deep),
		cmocka_unit_test(test_retr_err),
		cmocka_unit_test(test_retr_sink_fails),
		cmocka_unit_test(test_top),
		cmocka_unit_test(test_dele_quit),
		cmocka_unit_test(test_dele_err_quit_err),
		cmocka_unit_test(test_quit_err),
		cmocka_unit_test(test_stls_not_offered),
		cmocka_unit_test(test_stls_refused),
		cmocka_unit_test(test_stls_injection),
		cmocka_unit_test(test_stls_garbage),
		cmocka_unit_test(test_auth_plain_long),
		cmocka_unit_test(test_auth_login),
		cmocka_unit_test(test_auth_xoauth2_error),
		cmocka_unit_test(test_auth_oauthbearer_error),
		cmocka_unit_test(test_auth_scram),
		cmocka_unit_test(test_auth_scram_ok_without_v),
		cmocka_unit_test(test_auth_scram_cancel),
		cmocka_unit_test(test_auth_scram_server_error),
		cmocka_unit_test(test_auth_xoauth2_long),
		cmocka_unit_test(test_auth_external_empty),
		cmocka_unit_test(test_auth_ok_without_response),
		cmocka_unit_test(test_trace_redacts),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
