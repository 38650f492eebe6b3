/*
 * The SMTP engine: its pure pieces (reply parser, EHLO keywords, DATA
 * encoder) fed directly, and whole sessions against the scripted fake
 * server (fakeserver.c), which checks every line the client sends and
 * fails when the client sends anything the script does not expect: a
 * test also proves what was NOT sent (no credential after a failed
 * STARTTLS, nothing at all when the message is too large).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "fakeserver.h"
#include "mailpull/log.h"
#include "mailpull/smtp.h"

/* A line the client sends that starts with t. */
#define CP(t) { 'c', t, 0 }

#define GREET S("220 mx.test ESMTP ready\r\n")
#define EHLO C("EHLO client.test")
#define EHLO_FULL EHLO, \
	S("250-mx.test hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n" \
	  "250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN XOAUTH2\r\n250 SMTPUTF8\r\n")
/* No PIPELINING, no 8BITMIME, no SMTPUTF8, SIZE without a limit. */
#define EHLO_BASIC EHLO, S("250-mx.test\r\n250-SIZE\r\n250 ENHANCEDSTATUSCODES\r\n")
/* base64("\0user\0secret") */
#define PLAIN_IR "AHVzZXIAc2VjcmV0"

static int
fake_open(struct fake *f, bool starttls, struct smtp **ret, struct mp_err *err)
{
	*ret = NULL;
	return smtp_open(fake_connect(f, 3000, err), "client.test", starttls, ret, err);
}

/*
 * smtp_auth() with a fresh SASL client for mech, freed after; SASL_USER
 * passes none (SMTP has no plain login).
 */
static int
auth(struct smtp *s, enum sasl_mech mech, const char *user, const char *secret,
     struct mp_err *err)
{
	const struct sasl_params sp = {
		.mech = mech, .user = user, .secret = secret, .host = "127.0.0.1", .port = 587,
		.saslprep = true,
	};
	struct sasl_session *cl = NULL;
	int r;

	if (mech == SASL_USER)
		return smtp_auth(s, NULL, user, secret, err);
	assert_int_equal(sasl_session_new(&sp, &cl), 0);
	r = smtp_auth(s, cl, user, secret, err);
	sasl_session_free(cl);
	return r;
}

/* ---- a message supplied in given chunks ----------------------------------- */

struct chunks {
	const char *const *part;
	size_t n, i;
	int fail_at;   /* chunk index whose read fails, or -1 */
};

static int
chunk_read(void *ud, const char **ret_data, size_t *ret_len, struct mp_err *err)
{
	struct chunks *c = ud;

	if (c->fail_at >= 0 && c->i == (size_t)c->fail_at)
		return mp_err_set(err, -EIO, MP_EX_IOERR, "outbox file unreadable");
	if (c->i == c->n) {
		*ret_data = "";
		*ret_len = 0;
		return 0;
	}
	*ret_data = c->part[c->i];
	*ret_len = strlen(c->part[c->i]);
	c->i++;
	return 0;
}

static const char *const hello_msg[] = { "Subject: hi\n\nhello\n" };
#define HELLO_BODY C("Subject: hi"), C(""), C("hello"), C(".")

static struct chunks
hello_chunks(void)
{
	return (struct chunks){ hello_msg, 1, 0, -1 };
}

/* ---- the reply parser ------------------------------------------------------- */

/* Feeds the lines of text (LF-separated) and returns the last result. */
static int
feed(struct smtp_reply_parser *p, const char *text)
{
	int r = -1;

	smtp_reply_init(p);
	while (*text) {
		const char *nl = strchr(text, '\n');
		size_t len = nl ? (size_t)(nl - text) : strlen(text);

		r = smtp_reply_feed(p, text, len, NULL, NULL);
		if (r < 0)
			return r;
		text += len + (nl ? 1 : 0);
	}
	return r;
}

static void
test_reply_multiline(void **state)
{
	struct smtp_reply_parser p;
	const char *t;
	size_t tl;

	(void)state;
	assert_int_equal(feed(&p, "250-mx.test\n250-PIPELINING\n250 SIZE 100"), 1);
	assert_int_equal(p.rep.code, 250);
	assert_string_equal(p.rep.enh, "");
	assert_string_equal(p.rep.text, "mx.test; PIPELINING; SIZE 100");

	/* The enhanced code once, stripped from every line that repeats it. */
	assert_int_equal(feed(&p, "550-5.1.1 <a@b>: no such user\n550 5.1.1 try again"), 1);
	assert_string_equal(p.rep.enh, "5.1.1");
	assert_string_equal(p.rep.text, "<a@b>: no such user; try again");

	/* "NNN" alone ends a reply; "NNN-" with no text continues it. */
	assert_int_equal(feed(&p, "250-\n250"), 1);
	assert_string_equal(p.rep.text, "");

	/* A class that does not match the code is no enhanced code. */
	assert_int_equal(feed(&p, "550 2.1.1 odd"), 1);
	assert_string_equal(p.rep.enh, "");
	assert_string_equal(p.rep.text, "2.1.1 odd");
	assert_int_equal(feed(&p, "451 4.3.0"), 1);
	assert_string_equal(p.rep.enh, "4.3.0");
	assert_int_equal(feed(&p, "451 4.3000.1 x"), 1);
	assert_string_equal(p.rep.enh, "");

	/* Control bytes are sanitized; the text of a line is handed back. */
	smtp_reply_init(&p);
	assert_int_equal(smtp_reply_feed(&p, "354-go\x1b[2J", 10, &t, &tl), 0);
	assert_int_equal(tl, 6);
	assert_memory_equal(t, "go\x1b[2J", 6);
	assert_int_equal(smtp_reply_feed(&p, "354 on", 6, &t, &tl), 1);
	assert_null(strchr(p.rep.text, '\x1b'));
}

static void
test_reply_bad(void **state)
{
	struct smtp_reply_parser p;
	char *big;

	(void)state;
	assert_int_equal(feed(&p, "250-a\n251 b"), -EPROTO);
	assert_int_equal(feed(&p, "25"), -EPROTO);
	assert_int_equal(feed(&p, "250x"), -EPROTO);
	assert_int_equal(feed(&p, "2500 x"), -EPROTO);
	assert_int_equal(feed(&p, "650 x"), -EPROTO);
	assert_int_equal(feed(&p, "160 x"), -EPROTO);
	assert_int_equal(feed(&p, "270 x"), -EPROTO);
	assert_int_equal(feed(&p, "+OK"), -EPROTO);
	assert_int_equal(feed(&p, "250 a\n250 b"), -EPROTO);
	/* 128 lines are fine, the 129th is over the cap. */
	smtp_reply_init(&p);
	for (int i = 0; i < SMTP_REPLY_LINES - 1; i++)
		assert_int_equal(smtp_reply_feed(&p, "250-x", 5, NULL, NULL), 0);
	assert_int_equal(smtp_reply_feed(&p, "250-x", 5, NULL, NULL), 0);
	assert_int_equal(smtp_reply_feed(&p, "250 x", 5, NULL, NULL), -E2BIG);
	big = malloc(SMTP_LINE_MAX + 2);
	assert_non_null(big);
	memset(big, 'a', SMTP_LINE_MAX + 1);
	memcpy(big, "250 ", 4);
	smtp_reply_init(&p);
	assert_int_equal(smtp_reply_feed(&p, big, SMTP_LINE_MAX + 1, NULL, NULL), -E2BIG);
	smtp_reply_init(&p);
	assert_int_equal(smtp_reply_feed(&p, big, SMTP_LINE_MAX, NULL, NULL), 1);
	assert_int_equal(strlen(p.rep.text), sizeof(p.rep.text) - 1);
	free(big);
}

/* ---- EHLO keywords ----------------------------------------------------------- */

static void
ehlo(struct smtp_caps *caps, const char *line)
{
	smtp_ehlo_line(caps, line, strlen(line));
}

static void
test_ehlo_keywords(void **state)
{
	struct smtp_caps caps = { 0 };

	(void)state;
	ehlo(&caps, "pipelining");
	ehlo(&caps, "StartTLS");
	ehlo(&caps, "8bitmime");
	ehlo(&caps, "SMTPUTF8");
	ehlo(&caps, "ENHANCEDSTATUSCODES");
	ehlo(&caps, "SIZE 35882577");
	ehlo(&caps, "auth plain login");
	ehlo(&caps, "AUTH=LOGIN PLAIN CRAM-MD5");
	ehlo(&caps, "AUTH XOAUTH2 bad/name OAUTHBEARER");
	ehlo(&caps, "DSN");
	ehlo(&caps, "PIPELININGX");
	assert_true(caps.pipelining && caps.starttls && caps.eightbitmime && caps.smtputf8 &&
		    caps.enhancedstatuscodes && caps.size);
	assert_true(caps.size_max == 35882577);
	assert_string_equal(caps.sasl, "PLAIN LOGIN CRAM-MD5 XOAUTH2 OAUTHBEARER");

	memset(&caps, 0, sizeof(caps));
	ehlo(&caps, "SIZE");
	assert_true(caps.size);
	assert_true(caps.size_max == 0);
	ehlo(&caps, "SIZE 12x");
	assert_true(caps.size_max == 0);
	ehlo(&caps, "SIZE 99999999999999999999999");
	assert_true(caps.size_max == 0);
	ehlo(&caps, "AUTH");
	ehlo(&caps, "STARTTLSX");
	assert_false(caps.starttls);
	assert_string_equal(caps.sasl, "");
}

/* ---- the DATA encoder ---------------------------------------------------------- */

/* Encodes in, whole and split at every position, and checks both give want. */
static void
encode_check(const char *in, const char *want)
{
	size_t len = strlen(in), wl = strlen(want);
	char *out = malloc(2 * len + SMTP_DOT_FINISH_MAX + 1);

	assert_non_null(out);
	for (size_t cut = 0; cut <= len; cut++) {
		struct smtp_dot d;
		size_t o;

		smtp_dot_init(&d);
		o = smtp_dot_encode(&d, in, cut, out);
		o += smtp_dot_encode(&d, in + cut, len - cut, out + o);
		o += smtp_dot_finish(&d, out + o);
		out[o] = '\0';
		if (o != wl || memcmp(out, want, wl) != 0)
			fail_msg("input \"%s\" cut at %zu gave \"%s\"", in, cut, out);
	}
	free(out);
}

static void
test_dot_encode(void **state)
{
	(void)state;
	encode_check("", ".\r\n");
	encode_check("a\n", "a\r\n.\r\n");
	encode_check("a", "a\r\n.\r\n");
	encode_check(".\n", "..\r\n.\r\n");
	encode_check("..\n", "...\r\n.\r\n");
	encode_check(".a\n.\n..b\nc.\n", "..a\r\n..\r\n...b\r\nc.\r\n.\r\n");
	encode_check("x\n.", "x\r\n..\r\n.\r\n");
	encode_check("a\r\nb\r\n", "a\r\nb\r\n.\r\n");
	encode_check("a\r\n.b\r\n", "a\r\n..b\r\n.\r\n");
	encode_check("a\rb\n", "a\rb\r\n.\r\n");
	encode_check("a\r.b\n", "a\r.b\r\n.\r\n");
	encode_check("a\r", "a\r\r\n.\r\n");
	encode_check("\n\n", "\r\n\r\n.\r\n");
	encode_check("\r\r\n", "\r\r\n.\r\n");
	encode_check("8bit \xc3\xa9\n", "8bit \xc3\xa9\r\n.\r\n");
}

/* ---- opening -------------------------------------------------------------------- */

static void
test_open_caps_quit(void **state)
{
	static const struct fake_step script[] = {
		S("220-mx.test ESMTP\r\n220-second line\r\n220 ready\r\n"),
		EHLO_FULL,
		C("QUIT"), S("221 2.0.0 bye\r\n"),
		END,
	};
	struct fake f;
	struct smtp *s;
	struct mp_err err;
	const struct smtp_caps *caps;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	caps = smtp_caps(s);
	assert_true(caps->pipelining && caps->eightbitmime && caps->smtputf8 &&
		    caps->enhancedstatuscodes && caps->size);
	assert_false(caps->starttls);
	assert_true(caps->size_max == 1000);
	assert_string_equal(caps->sasl, "PLAIN LOGIN XOAUTH2");
	assert_int_equal(smtp_quit(s, &err), 0);
	/* After QUIT the session is over. */
	assert_int_equal(smtp_quit(s, &err), -EPROTO);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_greeting_refused(void **state)
{
	static const struct fake_step s554[] = {
		S("554 5.7.1 no service for you\r\n"), C("QUIT"), END,
	};
	static const struct fake_step s421[] = { S("421 4.3.2 busy\r\n"), END };
	static const struct fake_step sbad[] = { S("250 hello?\r\n"), END };
	static const struct fake_step sgarbage[] = { S("* OK IMAP4rev1\r\n"), END };
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, s554);
	assert_int_equal(fake_open(&f, false, &s, &err), -ECONNREFUSED);
	assert_null(s);
	assert_int_equal(err.ex, MP_EX_TEMPFAIL);
	assert_string_equal(err.srv, "5.7.1 no service for you");
	assert_int_equal(fake_wait(&f), 0);

	fake_start(&f, s421);
	assert_int_equal(fake_open(&f, false, &s, &err), -ECONNREFUSED);
	assert_int_equal(fake_wait(&f), 0);

	fake_start(&f, sbad);
	assert_int_equal(fake_open(&f, false, &s, &err), -EPROTO);
	assert_int_equal(fake_wait(&f), 0);

	fake_start(&f, sgarbage);
	assert_int_equal(fake_open(&f, false, &s, &err), -EPROTO);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_bad_code_sequence(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO, S("250-mx.test\r\n251 PIPELINING\r\n"), END,
	};
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "malformed SMTP reply in EHLO state"));
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_too_many_lines(void **state)
{
	static char many[8 * 200];
	static struct fake_step script[] = { GREET, EHLO, S(many), END };
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	for (int i = 0; i < 200; i++)
		memcpy(many + 7 * i, "250-X\r\n", 7);
	many[7 * 200] = '\0';
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), -E2BIG);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_helo_fallback(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO, S("502 5.5.2 what?\r\n"),
		C("HELO client.test"), S("250 mx.test\r\n"),
		C("QUIT"), S("221 bye\r\n"),
		END,
	};
	static const struct fake_step refused[] = {
		GREET, EHLO, S("550 go away\r\n"), END,
	};
	struct fake f;
	struct smtp *s;
	struct mp_err err;
	const struct smtp_caps *caps;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	caps = smtp_caps(s);
	assert_false(caps->pipelining || caps->size || caps->starttls);
	assert_string_equal(caps->sasl, "");
	assert_int_equal(smtp_quit(s, &err), 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);

	/* Only 500/502 mean "EHLO unknown": anything else is not retried as HELO. */
	fake_start(&f, refused);
	assert_int_equal(fake_open(&f, false, &s, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "refused EHLO"));
	assert_int_equal(fake_wait(&f), 0);
}

/* ---- STARTTLS: every failure stops before anything else is sent ---------------- */

static void
test_starttls_not_offered(void **state)
{
	static const struct fake_step script[] = { GREET, EHLO_FULL, END };
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &s, &err), -EPROTO);
	assert_null(s);
	assert_non_null(strstr(err.msg, "does not offer STARTTLS"));
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_starttls_refused(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO, S("250-mx.test\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"),
		C("STARTTLS"), QUIET, S("454 4.7.0 TLS not available\r\n"),
		END,
	};
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &s, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "refused STARTTLS"));
	assert_string_equal(err.srv, "4.7.0 TLS not available");
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_starttls_injection(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO, S("250-mx.test\r\n250 STARTTLS\r\n"),
		C("STARTTLS"), S("220 2.0.0 go ahead\r\n250-mx.test\r\n250 AUTH PLAIN\r\n"),
		END,
	};
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &s, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "data after STARTTLS response"));
	assert_int_equal(fake_wait(&f), 0);
}

/* ---- AUTH ------------------------------------------------------------------------ */

static void
test_auth_plain(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		C("AUTH PLAIN " PLAIN_IR), S("535 5.7.8 bad credentials\r\n"),
		C("AUTH PLAIN " PLAIN_IR), S("454 4.7.0 try later\r\n"),
		C("AUTH PLAIN " PLAIN_IR), S("235 2.7.0 ok\r\n"),
		C("QUIT"), S("221 bye\r\n"),
		END,
	};
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(auth(s, SASL_PLAIN, "user", "secret", &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_NOPERM);
	assert_string_equal(err.srv, "5.7.8 bad credentials");
	mp_err_clear(&err);
	assert_int_equal(auth(s, SASL_PLAIN, "user", "secret", &err), -EAGAIN);
	assert_int_equal(err.ex, MP_EX_TEMPFAIL);
	mp_err_clear(&err);
	assert_int_equal(auth(s, SASL_PLAIN, "user", "secret", &err), 0);
	/* SMTP has no USER login: refused without sending anything. */
	assert_int_equal(auth(s, SASL_USER, "user", "secret", &err), -EINVAL);
	assert_int_equal(err.ex, MP_EX_CONFIG);
	assert_int_equal(smtp_quit(s, &err), 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_auth_login(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		/* Prompts worded oddly: answered in order whatever they say. */
		C("AUTH LOGIN"), S("334 UGFzc3dvcmQ6\r\n"),
		C("dXNlcg=="), S("334 VXNlcm5hbWU6\r\n"),
		C("c2VjcmV0"), S("235 2.7.0 Authentication successful\r\n"),
		END,
	};
	static const struct fake_step refused[] = {
		GREET, EHLO_FULL,
		C("AUTH LOGIN"), S("334 VXNlcm5hbWU6\r\n"),
		C("dXNlcg=="), S("334 UGFzc3dvcmQ6\r\n"),
		C("c2VjcmV0"), S("535 5.7.8 Error: authentication failed\r\n"),
		END,
	};
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(auth(s, SASL_LOGIN, "user", "secret", &err), 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);

	fake_start(&f, refused);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(auth(s, SASL_LOGIN, "user", "secret", &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_NOPERM);
	assert_string_equal(err.srv, "5.7.8 Error: authentication failed");
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* The JSON error in a 334 after XOAUTH2 is answered by an empty line (RFC 7628 3.2.3). */
static void
test_auth_xoauth2_error(void **state)
{
	/* base64('{"status":"401","schemes":"bearer"}') */
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		CP("AUTH XOAUTH2 "),
		S("334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n"),
		C(""), S("535 5.7.8 Username and Password not accepted\r\n"),
		CP("AUTH OAUTHBEARER "),
		S("334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n"),
		C("AQ=="), S("535 5.7.8\r\n"),
		END,
	};
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(auth(s, SASL_XOAUTH2, "user", "tok", &err), -EACCES);
	assert_string_equal(err.srv, "{\"status\":\"401\",\"schemes\":\"bearer\"}");
	mp_err_clear(&err);
	assert_int_equal(auth(s, SASL_OAUTHBEARER, "user", "tok", &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_NOPERM);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

#define EHLO_SCRAM EHLO, S("250-mx.test\r\n250-ENHANCEDSTATUSCODES\r\n" \
			   "250 AUTH SCRAM-SHA-256 SCRAM-SHA-1 XOAUTH2\r\n")

static void
scram_setup(void)
{
	fake_scram = (struct fake_scram){
		.prefix = "334 ", .user = "user", .password = "pencil", .gs2 = "n,,",
	};
}

/* Runs script against one login of mech; returns smtp_auth()'s result. */
static int
auth_run(const struct fake_step *script, enum sasl_mech mech, const char *secret,
	 struct mp_err *err)
{
	struct fake f;
	struct smtp *s;
	int r;

	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, err), 0);
	r = auth(s, mech, "user", secret, err);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
	return r;
}

/* The client-first on the AUTH line (RFC 4954), 334 challenges, "" to the server-final. */
static void
test_auth_scram(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_SCRAM,
		ANSWER("AUTH SCRAM-SHA-256 ", fake_scram_first), ANSWER(NULL, fake_scram_final),
		C(""), S("235 2.7.0 Authentication successful\r\n"),
		END,
	};
	struct mp_err err;

	(void)state;
	scram_setup();
	assert_int_equal(auth_run(script, SASL_SCRAM_SHA_256, "pencil", &err), 0);
}

/* 235 without the server-final: -EPROTO, the session no longer trusted. */
static void
test_auth_scram_ok_without_v(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_SCRAM,
		ANSWER("AUTH SCRAM-SHA-256 ", fake_scram_first), C(NULL),
		S("235 2.7.0 Authentication successful\r\n"),
		END,
	};
	struct mp_err err;

	(void)state;
	scram_setup();
	assert_int_equal(auth_run(script, SASL_SCRAM_SHA_256, "pencil", &err), -EPROTO);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_non_null(strstr(err.msg, "without proving it knows the password"));
}

/* A wrong signature or a short nonce: "*", the 501 read, the step's error reported. */
static void
test_auth_scram_cancel(void **state)
{
	static const struct fake_step bad_v[] = {
		GREET, EHLO_SCRAM,
		ANSWER("AUTH SCRAM-SHA-256 ", fake_scram_first), ANSWER(NULL, fake_scram_final),
		C("*"), S("501 5.7.0 Authentication aborted\r\n"),
		END,
	};
	static const struct fake_step short_nonce[] = {
		GREET, EHLO_SCRAM,
		ANSWER("AUTH SCRAM-SHA-256 ", fake_scram_first),
		C("*"), S("501 5.7.0 Authentication aborted\r\n"),
		END,
	};
	struct mp_err err;

	(void)state;
	scram_setup();
	fake_scram.bad_signature = true;
	assert_int_equal(auth_run(bad_v, SASL_SCRAM_SHA_256, "pencil", &err), -EPROTO);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_non_null(strstr(err.msg, "SCRAM-SHA-256 authentication failed: "));
	scram_setup();
	fake_scram.short_nonce = true;
	assert_int_equal(auth_run(short_nonce, SASL_SCRAM_SHA_256, "pencil", &err), -EPROTO);
	assert_non_null(strstr(err.msg, "nonce"));
}

/* An XOAUTH2 response past the 512-octet AUTH line goes after an empty 334. */
static void
test_auth_xoauth2_long(void **state)
{
	char tok[601], *b64 = NULL;
	struct fake_step script[] = {
		GREET, EHLO_SCRAM, C("AUTH XOAUTH2"), S("334 \r\n"), C(NULL), S("235 2.7.0 ok\r\n"),
		END,
	};
	struct mp_err err;

	(void)state;
	memset(tok, 't', sizeof(tok) - 1);
	tok[sizeof(tok) - 1] = '\0';
	assert_int_equal(sasl_xoauth2("user", tok, &b64), 0);
	script[5].text = b64;
	assert_int_equal(auth_run(script, SASL_XOAUTH2, tok, &err), 0);
	sasl_free(b64);
}

static void
test_trace_redacts(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		C("AUTH PLAIN " PLAIN_IR), S("535 5.7.8 no\r\n"),
		C("AUTH LOGIN"), S("334 VXNlcm5hbWU6\r\n"),
		C("dXNlcg=="), S("334 UGFzc3dvcmQ6\r\n"),
		C("c2VjcmV0"), S("235 2.7.0 ok\r\n"),
		END,
	};
	struct fake f;
	struct smtp *s;
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
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(auth(s, SASL_PLAIN, "user", "secret", &err), -EACCES);
	assert_int_equal(auth(s, SASL_LOGIN, "user", "secret", &err), 0);
	log_set_level(LOG_LVL_INFO);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
	rewind(tmp);
	n = fread(buf, 1, sizeof(buf) - 1, tmp);
	buf[n] = '\0';
	fclose(tmp);
	assert_non_null(strstr(buf, "C: AUTH PLAIN ***"));
	assert_non_null(strstr(buf, "C: EHLO client.test"));
	assert_non_null(strstr(buf, "S: 250 SMTPUTF8"));
	assert_null(strstr(buf, "c2VjcmV0"));
	assert_null(strstr(buf, PLAIN_IR));
}

/* ---- sending ------------------------------------------------------------------------ */

static const char *const three[] = { "a@x.test", "b@x.test", "c@x.test" };

/* MAIL, every RCPT and DATA come in one write: the server answers only after DATA. */
static void
test_send_pipelined_one_refused(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		C("MAIL FROM:<me@x.test> SIZE=20"), C("RCPT TO:<a@x.test>"),
		C("RCPT TO:<b@x.test>"), C("RCPT TO:<c@x.test>"), C("DATA"),
		S("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		  "550-5.1.1 <b@x.test>: Recipient address rejected:\r\n550 5.1.1 User unknown\r\n"
		  "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"),
		HELLO_BODY, S("250 2.0.0 Ok: queued as 1234\r\n"),
		C("QUIT"), S("221 2.0.0 Bye\r\n"),
		END,
	};
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 3, .size = 20 };
	struct smtp_reply rcpt[3];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = hello_chunks();
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), 0);
	assert_int_equal(res.naccepted, 2);
	assert_int_equal(res.mail.code, 250);
	assert_int_equal(rcpt[0].code, 250);
	assert_int_equal(rcpt[1].code, 550);
	assert_string_equal(rcpt[1].enh, "5.1.1");
	assert_string_equal(rcpt[1].text, "<b@x.test>: Recipient address rejected:; User unknown");
	assert_int_equal(rcpt[2].code, 250);
	assert_int_equal(res.data.code, 354);
	assert_int_equal(res.final.code, 250);
	assert_string_equal(res.final.text, "Ok: queued as 1234");
	assert_true(res.dot_sent);
	assert_int_equal(smtp_quit(s, &err), 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* Every recipient refused, DATA refused too: RSET, and the session goes on. */
static void
test_send_all_refused(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		C("MAIL FROM:<me@x.test> SIZE=20"), C("RCPT TO:<a@x.test>"),
		C("RCPT TO:<b@x.test>"), C("DATA"),
		S("250 2.1.0 Ok\r\n450 4.2.1 a busy\r\n550 5.1.1 b unknown\r\n"
		  "554 5.5.1 Error: no valid recipients\r\n"),
		C("RSET"), S("250 2.0.0 Ok\r\n"),
		/* All refused for now only: -EAGAIN. DATA got 354 anyway: a lone dot. */
		C("MAIL FROM:<me@x.test> SIZE=20"), C("RCPT TO:<a@x.test>"),
		C("RCPT TO:<b@x.test>"), C("DATA"),
		S("250 2.1.0 Ok\r\n450 4.2.1 a busy\r\n451 4.3.0 b later\r\n354 go\r\n"),
		C("."), S("554 5.5.1 no valid recipients\r\n"),
		C("QUIT"), S("221 bye\r\n"),
		END,
	};
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 2, .size = 20 };
	struct smtp_reply rcpt[2];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = hello_chunks();
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EPERM);
	assert_int_equal(err.ex, MP_EX_DATAERR);
	assert_string_equal(err.srv, "5.1.1 b unknown");
	assert_int_equal(res.naccepted, 0);
	assert_false(res.dot_sent);
	assert_int_equal(ch.i, 0);
	mp_err_clear(&err);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EAGAIN);
	assert_int_equal(err.ex, MP_EX_TEMPFAIL);
	assert_false(res.dot_sent);
	assert_int_equal(ch.i, 0);
	assert_int_equal(smtp_quit(s, &err), 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* Without PIPELINING, one command at a time; no DATA when nobody was accepted. */
static void
test_send_unpipelined(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_BASIC,
		C("MAIL FROM:<> SIZE=20"), QUIET, S("250 2.1.0 Ok\r\n"),
		C("RCPT TO:<a@x.test>"), QUIET, S("550 5.1.1 nope\r\n"),
		C("RCPT TO:<b@x.test>"), QUIET, S("550 5.1.1 nope\r\n"),
		C("RSET"), S("250 Ok\r\n"),
		C("MAIL FROM:<> SIZE=20"), QUIET, S("250 2.1.0 Ok\r\n"),
		C("RCPT TO:<a@x.test>"), QUIET, S("250 2.1.5 Ok\r\n"),
		C("RCPT TO:<b@x.test>"), QUIET, S("250 2.1.5 Ok\r\n"),
		C("DATA"), QUIET, S("354 go\r\n"),
		HELLO_BODY, QUIET, S("250 2.0.0 queued\r\n"),
		END,
	};
	struct smtp_envelope env = { .from = "", .rcpts = three, .nrcpts = 2, .size = 20 };
	struct smtp_reply rcpt[2];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = hello_chunks();
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EPERM);
	assert_int_equal(res.data.code, 0);
	mp_err_clear(&err);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), 0);
	assert_int_equal(res.naccepted, 2);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_send_mail_refused(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_BASIC,
		C("MAIL FROM:<me@x.test> SIZE=20"), S("553 5.7.1 Sender address rejected\r\n"),
		C("RSET"), S("250 Ok\r\n"),
		C("MAIL FROM:<me@x.test> SIZE=20"), S("452 4.3.1 Insufficient system storage\r\n"),
		C("RSET"), S("250 Ok\r\n"),
		END,
	};
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 1, .size = 20 };
	struct smtp_reply rcpt[1];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = hello_chunks();
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EPERM);
	assert_string_equal(err.srv, "5.7.1 Sender address rejected");
	assert_int_equal(rcpt[0].code, 0);
	mp_err_clear(&err);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EAGAIN);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* A 4xx, then a 5xx to the final dot; the session stays usable after either. */
static void
test_send_final_refused(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		C("MAIL FROM:<me@x.test> SIZE=20"), C("RCPT TO:<a@x.test>"), C("DATA"),
		S("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
		HELLO_BODY, S("451 4.3.0 Error: queue file write error\r\n"),
		C("MAIL FROM:<me@x.test> SIZE=20"), C("RCPT TO:<a@x.test>"), C("DATA"),
		S("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
		HELLO_BODY, S("554 5.6.0 content rejected\r\n"),
		C("QUIT"), S("221 bye\r\n"),
		END,
	};
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 1, .size = 20 };
	struct smtp_reply rcpt[1];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = hello_chunks();
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EAGAIN);
	assert_int_equal(err.ex, MP_EX_TEMPFAIL);
	assert_string_equal(err.srv, "4.3.0 Error: queue file write error");
	assert_true(res.dot_sent);
	assert_int_equal(res.final.code, 451);
	mp_err_clear(&err);
	ch = hello_chunks();
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EPERM);
	assert_int_equal(err.ex, MP_EX_DATAERR);
	assert_int_equal(res.final.code, 554);
	assert_int_equal(smtp_quit(s, &err), 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* Refused before a byte is sent: too large, 8-bit or UTF-8 content the server cannot carry. */
static void
test_send_checks_first(void **state)
{
	static const struct fake_step full[] = { GREET, EHLO_FULL, END };
	static const struct fake_step basic[] = { GREET, EHLO_BASIC, END };
	static const char *const utf8rcpt[] = { "j\xc3\xb6rg@x.test" };
	static const char *const bad[] = { "a@x.test>\r\nRSET" };
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 1,
				     .size = 1001 };
	struct smtp_reply rcpt[1];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = hello_chunks();
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, full);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EMSGSIZE);
	assert_int_equal(err.ex, MP_EX_DATAERR);
	assert_non_null(strstr(err.msg, "1001"));
	env.size = 10;
	env.rcpts = bad;
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EINVAL);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);

	fake_start(&f, basic);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	env = (struct smtp_envelope){ .from = "me@x.test", .rcpts = three, .nrcpts = 1,
				      .size = 1u << 30, .eightbit = true };
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EILSEQ);
	assert_int_equal(err.ex, MP_EX_DATAERR);
	env.eightbit = false;
	env.utf8 = true;
	mp_err_clear(&err);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EILSEQ);
	env.utf8 = false;
	env.rcpts = utf8rcpt;
	mp_err_clear(&err);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EILSEQ);
	assert_int_equal(ch.i, 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* BODY=8BITMIME and SMTPUTF8 when needed and offered. */
static void
test_send_8bit_utf8(void **state)
{
	static const char *const msg[] = { "Subject: caf\xc3\xa9\n\nx\n" };
	static const char *const utf8rcpt[] = { "j\xc3\xb6rg@x.test" };
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		C("MAIL FROM:<me@x.test> SIZE=22 BODY=8BITMIME SMTPUTF8"),
		C("RCPT TO:<j\xc3\xb6rg@x.test>"), C("DATA"),
		S("250 Ok\r\n250 Ok\r\n354 go\r\n"),
		C("Subject: caf\xc3\xa9"), C(""), C("x"), C("."), S("250 Ok\r\n"),
		END,
	};
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = utf8rcpt, .nrcpts = 1,
				     .size = 22, .eightbit = true };
	struct smtp_reply rcpt[1];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = { msg, 1, 0, -1 };
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* Dot-stuffing and line ends on the wire, across chunk boundaries. */
static void
test_send_dot_stuffing(void **state)
{
	static const char *const msg[] = {
		"Subject: dots\n\n.starts\n", "..two\n", ".", "split\n", "x", "\n", ".\n",
		"bare\rcr\n", "crlf\r", "\nkept\r\n", "\n", "last line without end",
	};
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		C("MAIL FROM:<me@x.test> SIZE=100"), C("RCPT TO:<a@x.test>"), C("DATA"),
		S("250 Ok\r\n250 Ok\r\n354 go\r\n"),
		C("Subject: dots"), C(""), C("..starts"), C("...two"), C("..split"), C("x"),
		C(".."), C("bare\rcr"), C("crlf"), C("kept"), C(""), C("last line without end"),
		C("."), S("250 Ok\r\n"),
		END,
	};
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 1,
				     .size = 100 };
	struct smtp_reply rcpt[1];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = { msg, ARRAY_SIZE(msg), 0, -1 };
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* A message larger than the encoder's chunk goes through whole. */
static void
test_send_large(void **state)
{
	static char big[100 * 1024 + 1];
	static const char *const msg[] = { big };
	static struct fake_step script[2500];
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 1,
				     .size = sizeof(big) };
	struct smtp_reply rcpt[1];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = { msg, 1, 0, -1 };
	static const struct fake_step head[] = {
		GREET, EHLO_BASIC,
		C("MAIL FROM"), S("250 Ok\r\n"),
		C("RCPT TO:<a@x.test>"), S("250 Ok\r\n"), C("DATA"), S("354 go\r\n"),
	};
	static const char line[] = ".line of a large message, starting with a dot\n";
	struct fake f;
	struct smtp *s;
	struct mp_err err;
	size_t k = 0, off = 0;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(head); i++)
		script[k++] = head[i];
	while (off + sizeof(line) - 1 <= sizeof(big) - 1) {
		memcpy(big + off, line, sizeof(line) - 1);
		off += sizeof(line) - 1;
		script[k++] = (struct fake_step)C("..line of a large message, starting with a dot");
	}
	big[off] = '\0';
	env.size = off;
	script[3].text = NULL;   /* MAIL FROM: any line (the size is computed) */
	script[k++] = (struct fake_step)C(".");
	script[k++] = (struct fake_step)S("250 Ok\r\n");
	script[k] = (struct fake_step)END;
	assert_true(k < ARRAY_SIZE(script));
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), 0);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/*
 * Many recipients go in groups of at most 100 pipelined commands, each
 * group's replies read before the next is written (RFC 2920 section 3.1:
 * a client that never reads can deadlock with a server that blocks writing).
 */
static void
test_send_pipelined_groups(void **state)
{
	enum { N = 150 };
	static char names[N][32], lines[N][48];
	static const char *rcpts[N];
	static struct fake_step script[2 * N + 32];
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = rcpts, .nrcpts = N, .size = 20 };
	static struct smtp_reply rcpt[N];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = hello_chunks();
	struct fake f;
	struct smtp *s;
	struct mp_err err;
	size_t k = 0;

	(void)state;
	script[k++] = (struct fake_step)GREET;
	script[k++] = (struct fake_step)EHLO;
	script[k++] = (struct fake_step)S("250-mx.test\r\n250 PIPELINING\r\n");
	script[k++] = (struct fake_step)C("MAIL FROM:<me@x.test>");
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "r%03d@x.test", i);
		snprintf(lines[i], sizeof(lines[i]), "RCPT TO:<r%03d@x.test>", i);
		rcpts[i] = names[i];
	}
	/* The first group: MAIL and 99 RCPTs, then their replies. */
	for (int i = 0; i < 99; i++)
		script[k++] = (struct fake_step)C(lines[i]);
	script[k++] = (struct fake_step)QUIET;
	script[k++] = (struct fake_step)S("250 Ok\r\n");
	for (int i = 0; i < 99; i++)
		script[k++] = (struct fake_step)S(i == 7 ? "550 5.1.1 no\r\n" : "250 Ok\r\n");
	/* The second: the other 51 RCPTs and DATA. */
	for (int i = 99; i < N; i++)
		script[k++] = (struct fake_step)C(lines[i]);
	script[k++] = (struct fake_step)C("DATA");
	for (int i = 99; i < N; i++)
		script[k++] = (struct fake_step)S("250 Ok\r\n");
	script[k++] = (struct fake_step)S("354 go\r\n");
	script[k++] = (struct fake_step)C("Subject: hi");
	script[k++] = (struct fake_step)C("");
	script[k++] = (struct fake_step)C("hello");
	script[k++] = (struct fake_step)C(".");
	script[k++] = (struct fake_step)S("250 Ok\r\n");
	script[k] = (struct fake_step)END;
	assert_true(k < ARRAY_SIZE(script));
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), 0);
	assert_int_equal(res.naccepted, N - 1);
	assert_int_equal(rcpt[7].code, 550);
	assert_int_equal(rcpt[N - 1].code, 250);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* The connection closes after the final dot: the message may have been taken. */
static void
test_send_closed_after_dot(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		C("MAIL FROM:<me@x.test> SIZE=20"), C("RCPT TO:<a@x.test>"), C("DATA"),
		S("250 Ok\r\n250 Ok\r\n354 go\r\n"),
		HELLO_BODY, CLOSE,
		END,
	};
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 1, .size = 20 };
	struct smtp_reply rcpt[1];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = hello_chunks();
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -ECONNRESET);
	assert_int_equal(err.ex, MP_EX_TEMPFAIL);
	assert_true(res.dot_sent);
	assert_int_equal(res.final.code, 0);
	assert_int_equal(smtp_quit(s, &err), -EPROTO);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* 421 mid-transaction: the server is closing; nothing more is sent. */
static void
test_send_421(void **state)
{
	static const struct fake_step script[] = {
		GREET, EHLO_BASIC,
		C("MAIL FROM:<me@x.test> SIZE=20"), S("250 Ok\r\n"),
		C("RCPT TO:<a@x.test>"), S("421 4.3.2 Service shutting down\r\n"),
		END,
	};
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 2, .size = 20 };
	struct smtp_reply rcpt[2];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = hello_chunks();
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -ECONNRESET);
	assert_int_equal(err.ex, MP_EX_TEMPFAIL);
	assert_string_equal(err.srv, "4.3.2 Service shutting down");
	assert_false(res.dot_sent);
	assert_int_equal(rcpt[0].code, 421);
	mp_err_clear(&err);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EPROTO);
	assert_int_equal(smtp_quit(s, &err), -EPROTO);
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

/* The message cannot be read mid-DATA: the transaction is cut, the session unusable. */
static void
test_send_read_fails(void **state)
{
	static const char *const msg[] = { "Subject: x\n\n", "never\n" };
	static const struct fake_step script[] = {
		GREET, EHLO_FULL,
		C("MAIL FROM:<me@x.test> SIZE=20"), C("RCPT TO:<a@x.test>"), C("DATA"),
		S("250 Ok\r\n250 Ok\r\n354 go\r\n"),
		END,
	};
	struct smtp_envelope env = { .from = "me@x.test", .rcpts = three, .nrcpts = 1, .size = 20 };
	struct smtp_reply rcpt[1];
	struct smtp_result res = { .rcpt = rcpt };
	struct chunks ch = { msg, 2, 0, 1 };
	struct fake f;
	struct smtp *s;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &s, &err), 0);
	assert_int_equal(smtp_send(s, &env, chunk_read, &ch, &res, &err), -EIO);
	assert_int_equal(err.ex, MP_EX_IOERR);
	assert_false(res.dot_sent);
	assert_int_equal(smtp_quit(s, &err), -EPROTO);
	/* The queued "Subject: x" never reached the server: the script ends at 354. */
	smtp_free(s);
	assert_int_equal(fake_wait(&f), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_multiline),
		cmocka_unit_test(test_reply_bad),
		cmocka_unit_test(test_ehlo_keywords),
		cmocka_unit_test(test_dot_encode),
		cmocka_unit_test(test_open_caps_quit),
		cmocka_unit_test(test_greeting_refused),
		cmocka_unit_test(test_bad_code_sequence),
		cmocka_unit_test(test_too_many_lines),
		cmocka_unit_test(test_helo_fallback),
		cmocka_unit_test(test_starttls_not_offered),
		cmocka_unit_test(test_starttls_refused),
		cmocka_unit_test(test_starttls_injection),
		cmocka_unit_test(test_auth_plain),
		cmocka_unit_test(test_auth_login),
		cmocka_unit_test(test_auth_xoauth2_error),
		cmocka_unit_test(test_auth_scram),
		cmocka_unit_test(test_auth_scram_ok_without_v),
		cmocka_unit_test(test_auth_scram_cancel),
		cmocka_unit_test(test_auth_xoauth2_long),
		cmocka_unit_test(test_trace_redacts),
		cmocka_unit_test(test_send_pipelined_one_refused),
		cmocka_unit_test(test_send_all_refused),
		cmocka_unit_test(test_send_unpipelined),
		cmocka_unit_test(test_send_mail_refused),
		cmocka_unit_test(test_send_final_refused),
		cmocka_unit_test(test_send_checks_first),
		cmocka_unit_test(test_send_8bit_utf8),
		cmocka_unit_test(test_send_dot_stuffing),
		cmocka_unit_test(test_send_large),
		cmocka_unit_test(test_send_pipelined_groups),
		cmocka_unit_test(test_send_closed_after_dot),
		cmocka_unit_test(test_send_421),
		cmocka_unit_test(test_send_read_fails),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
