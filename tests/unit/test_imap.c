/*
 * The IMAP engine against the scripted fake server (fakeserver.c).
 * The server checks every line the client sends against its script and
 * answers from it; when the script ends it fails if the client sends
 * anything more, so a test also proves what was NOT sent (no credential
 * after a refused STARTTLS, no LOGIN under LOGINDISABLED).
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
#include <time.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "fakeserver.h"
#include "mailpull/imap.h"
#include "mailpull/log.h"
#include "mailpull/util.h"

static int
fake_open_timeout(struct fake *f, bool starttls, unsigned timeout_ms, struct imap **ret,
		  struct mp_err *err)
{
	struct conn *c = fake_connect(f, timeout_ms, err);

	*ret = NULL;
	return imap_open(c, starttls, ret, err);
}

static int
fake_open(struct fake *f, bool starttls, struct imap **ret, struct mp_err *err)
{
	return fake_open_timeout(f, starttls, 3000, ret, err);
}

/* Runs script against a session opened without STARTTLS; the session is returned. */
static struct imap *
open_ok(struct fake *f, const struct fake_step *script, struct mp_err *err)
{
	struct imap *m = NULL;

	fake_start(f, script);
	assert_int_equal(fake_open(f, false, &m, err), 0);
	assert_non_null(m);
	return m;
}

static void
finish(struct fake *f, struct imap *m)
{
	imap_free(m);
	assert_int_equal(fake_wait(f), 0);
}

/*
 * imap_auth() with a fresh SASL client for mech (cb: channel binding data
 * for -PLUS or the "y" flag; plus: the server offered a -PLUS mechanism),
 * freed after. SASL_USER: the plain login (LOGIN).
 */
static int
auth_cb(struct imap *m, enum sasl_mech mech, const char *user, const char *secret,
	const char *cb, bool plus, struct mp_err *err)
{
	const struct sasl_params sp = {
		.mech = mech, .user = user, .secret = secret, .host = "127.0.0.1", .port = 143,
		.cb_type = cb ? "tls-exporter" : NULL, .cb_data = (const unsigned char *)cb,
		.cb_len = cb ? strlen(cb) : 0, .server_plus = plus, .saslprep = true,
	};
	struct sasl_session *cl = NULL;
	int r;

	if (mech == SASL_USER)
		return imap_auth(m, NULL, user, secret, err);
	assert_int_equal(sasl_session_new(&sp, &cl), 0);
	r = imap_auth(m, cl, user, secret, err);
	sasl_session_free(cl);
	return r;
}

static int
auth(struct imap *m, enum sasl_mech mech, const char *user, const char *secret,
     struct mp_err *err)
{
	return auth_cb(m, mech, user, secret, NULL, false, err);
}

/* ---- a sink that keeps what it gets ------------------------------------- */

#define GOT_MAX 16

struct got {
	char *buf[GOT_MAX];
	size_t len[GOT_MAX];
	uint64_t size[GOT_MAX];
	uint32_t uid[GOT_MAX];
	unsigned flags[GOT_MAX];
	bool ended[GOT_MAX], aborted[GOT_MAX];
	size_t n;          /* bodies begun */
	bool open;
	int fail_data;     /* errno data() returns, or 0 */
};

static int
got_begin(void *ud, uint64_t size)
{
	struct got *g = ud;

	assert_false(g->open);
	assert_true(g->n < GOT_MAX);
	g->size[g->n] = size;
	g->open = true;
	g->n++;
	return 0;
}

static int
got_data(void *ud, const char *buf, size_t len)
{
	struct got *g = ud;
	size_t i = g->n - 1;
	char *nb;

	assert_true(g->open);
	assert_true(len > 0);
	if (g->fail_data)
		return -g->fail_data;
	nb = realloc(g->buf[i], g->len[i] + len + 1);
	assert_non_null(nb);
	memcpy(nb + g->len[i], buf, len);
	g->len[i] += len;
	nb[g->len[i]] = '\0';
	g->buf[i] = nb;
	return 0;
}

static int
got_end(void *ud, uint32_t uid, unsigned flags)
{
	struct got *g = ud;

	assert_true(g->open);
	g->open = false;
	g->ended[g->n - 1] = true;
	g->uid[g->n - 1] = uid;
	g->flags[g->n - 1] = flags;
	return 0;
}

static void
got_abort(void *ud)
{
	struct got *g = ud;

	assert_true(g->open);
	g->open = false;
	g->aborted[g->n - 1] = true;
}

static void
got_free(struct got *g)
{
	for (size_t i = 0; i < GOT_MAX; i++)
		free(g->buf[i]);
}

#define GREET_CAPS(caps) S("* OK [CAPABILITY IMAP4rev1 " caps "] ready\r\n")
#define GREET GREET_CAPS("AUTH=PLAIN")
/* base64("\0user\0secret") */
#define PLAIN_IR "AHVzZXIAc2VjcmV0"

/* ---- greeting and STARTTLS ------------------------------------------------ */

static void
test_greeting_caps_login_logout(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("LITERAL+ SASL-IR UIDPLUS IDLE NAMESPACE AUTH=PLAIN AUTH=XOAUTH2 "
			   "AUTH=bad!name ID"),
		C("A0001 LOGIN \"user\" \"secret\""),
		S("A0001 OK [CAPABILITY IMAP4rev1 IDLE MOVE] logged in\r\n"),
		C("A0002 LOGOUT"), S("* BYE see you\r\nA0002 OK done\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	const struct imap_caps *caps = imap_caps(m);

	(void)state;
	assert_true(caps->rev1 && caps->literal_plus && caps->sasl_ir && caps->uidplus &&
		    caps->idle && caps->namespace_);
	assert_false(caps->starttls || caps->logindisabled || caps->rev2);
	assert_string_equal(caps->sasl, "PLAIN XOAUTH2");
	assert_false(imap_preauthenticated(m));
	assert_int_equal(auth(m, SASL_USER, "user", "secret", &err), 0);
	/* capabilities after login come from the tagged OK */
	assert_true(caps->idle && caps->move);
	assert_false(caps->sasl_ir || caps->uidplus);
	assert_int_equal(imap_logout(m, &err), 0);
	finish(&f, m);
}

static void
test_greeting_asks_caps(void **state)
{
	static const struct fake_step script[] = {
		S("* OK ready\r\n"),
		C("A0001 CAPABILITY"),
		S("* CAPABILITY IMAP4rev2 STARTTLS LOGINDISABLED AUTH=PLAIN\r\nA0001 OK\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_true(imap_caps(m)->rev2 && imap_caps(m)->starttls && imap_caps(m)->logindisabled);
	/* LOGIN is never sent under LOGINDISABLED (RFC 3501 section 6.2.3) */
	assert_int_equal(auth(m, SASL_USER, "user", "secret", &err), -EPROTO);
	assert_non_null(strstr(err.msg, "LOGINDISABLED"));
	finish(&f, m);
}

static void
test_preauth(void **state)
{
	static const struct fake_step script[] = {
		S("* PREAUTH [CAPABILITY IMAP4rev1] welcome back\r\n"), END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_true(imap_preauthenticated(m));
	/* already authenticated: nothing is sent */
	assert_int_equal(auth(m, SASL_PLAIN, "user", "secret", &err), 0);
	finish(&f, m);
}

static void
test_preauth_with_starttls_refused(void **state)
{
	static const struct fake_step script[] = {
		S("* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"), END,
	};
	struct fake f;
	struct imap *m = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &m, &err), -EPROTO);
	assert_null(m);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_bye_greeting(void **state)
{
	static const struct fake_step script[] = { S("* BYE \033[2Jtoo busy\r\n"), END };
	struct fake f;
	struct imap *m = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &m, &err), -ECONNREFUSED);
	assert_null(m);
	assert_string_equal(err.srv, "\\x1b[2Jtoo busy");
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_bad_greeting(void **state)
{
	static const struct fake_step script[] = { S("A1 OK hello\r\n"), END };
	struct fake f;
	struct imap *m = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, false, &m, &err), -EPROTO);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_starttls_not_offered(void **state)
{
	/* the script ends after the greeting: LOGIN/AUTHENTICATE would fail it */
	static const struct fake_step script[] = { GREET_CAPS("AUTH=PLAIN"), END };
	struct fake f;
	struct imap *m = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &m, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "does not offer STARTTLS"));
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_starttls_not_offered_asked(void **state)
{
	static const struct fake_step script[] = {
		S("* OK hi\r\n"), C("A0001 CAPABILITY"),
		S("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nA0001 OK\r\n"), END,
	};
	struct fake f;
	struct imap *m = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &m, &err), -EPROTO);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_starttls_no(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("STARTTLS"), C("A0001 STARTTLS"), S("A0001 NO not now\r\n"), END,
	};
	struct fake f;
	struct imap *m = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &m, &err), -EPROTO);
	assert_string_equal(err.srv, "not now");
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_int_equal(fake_wait(&f), 0);
}

static void
test_starttls_bad(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("STARTTLS"), C("A0001 STARTTLS"), S("A0001 BAD what\r\n"), END,
	};
	struct fake f;
	struct imap *m = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &m, &err), -EPROTO);
	assert_int_equal(fake_wait(&f), 0);
}

/* Bytes after the tagged OK came before the handshake: refused, never parsed. */
static void
test_starttls_injection(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("STARTTLS"), C("A0001 STARTTLS"),
		S("A0001 OK begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"), END,
	};
	struct fake f;
	struct imap *m = NULL;
	struct mp_err err;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open(&f, true, &m, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "data after STARTTLS response"));
	assert_int_equal(fake_wait(&f), 0);
}

/* ---- authentication ------------------------------------------------------ */

static void
test_auth_plain_sasl_ir(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("SASL-IR AUTH=PLAIN"),
		C("A0001 AUTHENTICATE PLAIN " PLAIN_IR), S("A0001 OK in\r\n"),
		C("A0002 CAPABILITY"), S("* CAPABILITY IMAP4rev1 UIDPLUS\r\nA0002 OK\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(auth(m, SASL_PLAIN, "user", "secret", &err), 0);
	assert_true(imap_caps(m)->uidplus);
	finish(&f, m);
}

static void
test_auth_plain_continuation(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("AUTH=PLAIN"),
		C("A0001 AUTHENTICATE PLAIN"), QUIET, S("+ \r\n"),
		C(PLAIN_IR), S("* CAPABILITY IMAP4rev1 NAMESPACE\r\nA0001 OK in\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(auth(m, SASL_PLAIN, "user", "secret", &err), 0);
	/* the untagged CAPABILITY during the command counts: not asked again */
	assert_true(imap_caps(m)->namespace_);
	finish(&f, m);
}

static void
test_auth_no(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("SASL-IR AUTH=PLAIN"),
		C("A0001 AUTHENTICATE PLAIN " PLAIN_IR),
		S("A0001 NO [AUTHENTICATIONFAILED] bad password\r\n"),
		C("A0002 AUTHENTICATE PLAIN " PLAIN_IR),
		S("A0002 NO [UNAVAILABLE] backend down\r\n"),
		C("A0003 LOGIN \"user\" \"secret\""), S("A0003 NO nope\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(auth(m, SASL_PLAIN, "user", "secret", &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_NOPERM);
	assert_string_equal(err.srv, "bad password");
	mp_err_clear(&err);
	assert_int_equal(auth(m, SASL_PLAIN, "user", "secret", &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_TEMPFAIL);
	mp_err_clear(&err);
	/* a refusal leaves the session usable */
	assert_int_equal(auth(m, SASL_USER, "user", "secret", &err), -EACCES);
	assert_int_equal(err.ex, MP_EX_NOPERM);
	finish(&f, m);
}

static void
test_login_quoting(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("ID"),
		C("A0001 LOGIN \"a\\\"b\\\\c\" {5}"), QUIET, S("+ go on\r\n"),
		C("p\xc3\xa4ss"), S("A0001 OK [CAPABILITY IMAP4rev1] in\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(auth(m, SASL_USER, "a\"b\\c", "p\xc3\xa4ss", &err), 0);
	finish(&f, m);
}

static void
test_login_literal_plus(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("LITERAL+"),
		C("A0001 LOGIN \"user\" {4+}"), C("a"), C("b"),
		S("A0001 OK [CAPABILITY IMAP4rev1] in\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	/* a line break cannot be quoted: a literal, not waited for with LITERAL+ */
	assert_int_equal(auth(m, SASL_USER, "user", "a\r\nb", &err), 0);
	finish(&f, m);
}

static void
test_login_literal_refused(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("ID"),
		C("A0001 LOGIN \"user\" {5}"), S("A0001 NO no 8-bit passwords\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	/* refused before the literal: its data is never sent */
	assert_int_equal(auth(m, SASL_USER, "user", "p\xc3\xa4ss", &err), -EACCES);
	finish(&f, m);
}

static void
test_auth_xoauth2_error(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("SASL-IR AUTH=XOAUTH2"),
		/* base64("user=u\1auth=Bearer t\1\1") */
		C("A0001 AUTHENTICATE XOAUTH2 dXNlcj11AWF1dGg9QmVhcmVyIHQBAQ=="),
		/* base64("{\"status\":\"401\"}") */
		S("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"), C(""), S("A0001 NO denied\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(auth(m, SASL_XOAUTH2, "u", "t", &err), -EACCES);
	/* the provider's error report says more than the NO's text */
	assert_string_equal(err.srv, "{\"status\":\"401\"}");
	finish(&f, m);
}

static void
test_auth_oauthbearer_error(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("AUTH=OAUTHBEARER"),
		C("A0001 AUTHENTICATE OAUTHBEARER"), S("+ \r\n"),
		{ 'C', NULL, 1 },  /* any line: the initial response */
		S("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"), C("AQ=="), S("A0001 NO\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(auth(m, SASL_OAUTHBEARER, "u", "t", &err), -EACCES);
	/* no text in the NO: the decoded error report is shown */
	assert_string_equal(err.srv, "{\"status\":\"401\"}");
	finish(&f, m);
}

/* ---- SCRAM and the generic SASL loop ------------------------------------ */

static void
scram_setup(void)
{
	fake_scram = (struct fake_scram){
		.prefix = "+ ", .user = "user", .password = "pencil", .gs2 = "n,,",
	};
}

/* SASL-IR: the client-first on the command line; the server-final answered with "". */
static void
test_auth_scram_sasl_ir(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("SASL-IR AUTH=SCRAM-SHA-256"),
		ANSWER("A0001 AUTHENTICATE SCRAM-SHA-256 ", fake_scram_first),
		ANSWER(NULL, fake_scram_final), C(""),
		S("A0001 OK [CAPABILITY IMAP4rev1 UIDPLUS] in\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m;

	(void)state;
	scram_setup();
	m = open_ok(&f, script, &err);
	assert_int_equal(auth(m, SASL_SCRAM_SHA_256, "user", "pencil", &err), 0);
	assert_true(imap_caps(m)->uidplus);
	finish(&f, m);
}

/* Without SASL-IR: the empty first challenge is answered with the client-first. */
static void
test_auth_scram_continuation(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("AUTH=SCRAM-SHA-256"),
		C("A0001 AUTHENTICATE SCRAM-SHA-256"), QUIET, S("+ \r\n"),
		ANSWER(NULL, fake_scram_first), ANSWER(NULL, fake_scram_final), C(""),
		S("A0001 OK done\r\n"),
		C("A0002 CAPABILITY"), S("* CAPABILITY IMAP4rev1\r\nA0002 OK\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m;

	(void)state;
	scram_setup();
	m = open_ok(&f, script, &err);
	assert_int_equal(auth(m, SASL_SCRAM_SHA_256, "user", "pencil", &err), 0);
	finish(&f, m);
}

/* -PLUS: the channel binding data travel in c= (the fake server checks them). */
static void
test_auth_scram_plus(void **state)
{
	static const char cb[] = "0123456789abcdef0123456789abcdef";
	static const struct fake_step script[] = {
		GREET_CAPS("SASL-IR AUTH=SCRAM-SHA-256-PLUS"),
		ANSWER("A0001 AUTHENTICATE SCRAM-SHA-256-PLUS ", fake_scram_first),
		ANSWER(NULL, fake_scram_final), C(""),
		S("A0001 OK [CAPABILITY IMAP4rev1] in\r\n"),
		END,
	};
	static const struct fake_step y[] = {
		GREET_CAPS("SASL-IR AUTH=SCRAM-SHA-256"),
		ANSWER("A0001 AUTHENTICATE SCRAM-SHA-256 ", fake_scram_first),
		ANSWER(NULL, fake_scram_final), C(""),
		S("A0001 OK [CAPABILITY IMAP4rev1] in\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m;

	(void)state;
	scram_setup();
	fake_scram.gs2 = "p=tls-exporter,,";
	fake_scram.cb = (const unsigned char *)cb;
	fake_scram.cb_len = strlen(cb);
	m = open_ok(&f, script, &err);
	assert_int_equal(auth_cb(m, SASL_SCRAM_SHA_256_PLUS, "user", "pencil", cb, true, &err), 0);
	finish(&f, m);

	/* could bind, but no -PLUS offered: "y" (a stripped -PLUS list is noticed) */
	scram_setup();
	fake_scram.gs2 = "y,,";
	m = open_ok(&f, y, &err);
	assert_int_equal(auth_cb(m, SASL_SCRAM_SHA_256, "user", "pencil", cb, false, &err), 0);
	finish(&f, m);
}

/* A tagged OK without the server-final: no proof, no login. */
static void
test_auth_scram_ok_without_v(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("SASL-IR AUTH=SCRAM-SHA-256"),
		ANSWER("A0001 AUTHENTICATE SCRAM-SHA-256 ", fake_scram_first), C(NULL),
		S("A0001 OK [CAPABILITY IMAP4rev1] in\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m;

	(void)state;
	scram_setup();
	m = open_ok(&f, script, &err);
	assert_int_equal(auth(m, SASL_SCRAM_SHA_256, "user", "pencil", &err), -EPROTO);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_non_null(strstr(err.msg, "without proving it knows the password"));
	finish(&f, m);
}

/* A wrong server signature: "*", the tagged reply read, the step's error reported. */
static void
test_auth_scram_cancel(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("SASL-IR AUTH=SCRAM-SHA-256 AUTH=PLAIN"),
		ANSWER("A0001 AUTHENTICATE SCRAM-SHA-256 ", fake_scram_first),
		ANSWER(NULL, fake_scram_final), C("*"), S("A0001 BAD cancelled\r\n"),
		C("A0002 AUTHENTICATE PLAIN " PLAIN_IR), S("A0002 OK [CAPABILITY IMAP4rev1] in\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m;

	(void)state;
	scram_setup();
	fake_scram.bad_signature = true;
	m = open_ok(&f, script, &err);
	assert_int_equal(auth(m, SASL_SCRAM_SHA_256, "user", "pencil", &err), -EPROTO);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_non_null(strstr(err.msg, "SCRAM-SHA-256 authentication failed: "));
	/* in step after the cancel: the next login goes on the same session */
	assert_int_equal(auth(m, SASL_PLAIN, "user", "secret", &err), 0);
	finish(&f, m);
}

/* ---- mailboxes ----------------------------------------------------------- */

#define LOGGED_IN GREET_CAPS("UIDPLUS NAMESPACE")

static void
test_select(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 SELECT \"INBOX\""),
		S("* 172 EXISTS\r\n* 1 RECENT\r\n* OK [UNSEEN 12] first unseen\r\n"
		  "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n* OK [UIDNEXT 4392] next\r\n"
		  "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
		  "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"
		  "A0001 OK [READ-WRITE] SELECT completed\r\n"),
		C("A0002 EXAMINE \"Archive/2024\""),
		S("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\nA0002 OK [READ-ONLY] done\r\n"),
		C("A0003 SELECT \"Nope\""), S("A0003 NO [NONEXISTENT] no such mailbox\r\n"),
		C("A0004 SELECT \"NoValidity\""), S("* 0 EXISTS\r\nA0004 OK done\r\n"),
		C("A0005 SELECT \"&AMQ-pfel\""),
		S("* 5 EXISTS\r\n* 2 EXPUNGE\r\n* OK [UIDVALIDITY 9] x\r\n"
		  "A0005 OK [READ-ONLY] ro\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct imap_folder fo;

	(void)state;
	assert_int_equal(imap_select(m, "INBOX", false, &fo, &err), 0);
	assert_int_equal(fo.uidvalidity, 3857529045u);
	assert_int_equal(fo.uidnext, 4392);
	assert_int_equal(fo.exists, 172);
	assert_false(fo.read_only);
	assert_int_equal(imap_select(m, "Archive/2024", true, &fo, &err), 0);
	assert_int_equal(fo.uidvalidity, 7);
	assert_int_equal(fo.uidnext, 0);
	assert_true(fo.read_only);
	assert_int_equal(imap_select(m, "Nope", false, &fo, &err), -ENOENT);
	assert_string_equal(err.srv, "no such mailbox");
	mp_err_clear(&err);
	assert_int_equal(imap_select(m, "NoValidity", false, &fo, &err), -EPROTO);
	mp_err_clear(&err);
	assert_int_equal(imap_select(m, "\xc3\x84pfel", false, &fo, &err), 0);
	assert_int_equal(fo.exists, 4);
	assert_true(fo.read_only);
	finish(&f, m);
}

static void
test_list(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 LIST \"\" \"*\""),
		S("* LIST (\\HasChildren) \"/\" inbox\r\n"
		  "* LIST (\\HasNoChildren) \"/\" \"Archive/2024\"\r\n"
		  "* LIST (\\Noselect \\HasChildren) \"/\" Archive\r\n"
		  "* LIST () NIL \"Flat\"\r\n"
		  "* LIST (\\HasNoChildren) \".\" \"Entw&APw-rfe\"\r\n"
		  "* LIST () \"/\" {11}\r\nWith \"Quote\r\n"
		  "* LIST () \"/\" \"Bad&-x&AAA-\"\r\n"
		  "* LIST () \"/\" \"&Jjo-!\"\r\n"
		  "* 3 EXISTS\r\n"
		  "A0001 OK LIST done\r\n"),
		C("A0002 LIST \"\" \"&AOQ-/%\""), S("A0002 BAD no\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct imap_mailbox *v = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(imap_list(m, "*", &v, &n, &err), 0);
	assert_int_equal(n, 8);
	assert_string_equal(v[0].name, "INBOX");
	assert_int_equal(v[0].delim, '/');
	assert_string_equal(v[1].name, "Archive/2024");
	assert_false(v[1].noselect);
	assert_string_equal(v[2].name, "Archive");
	assert_true(v[2].noselect);
	assert_string_equal(v[3].name, "Flat");
	assert_int_equal(v[3].delim, '\0');
	assert_string_equal(v[4].name, "Entw\xc3\xbcrfe");
	assert_int_equal(v[4].delim, '.');
	assert_string_equal(v[5].name, "With \"Quote");
	assert_false(v[5].invalid);
	/* Not modified UTF-7: kept raw, for the policy to report. */
	assert_string_equal(v[6].name, "Bad&-x&AAA-");
	assert_true(v[6].invalid);
	assert_string_equal(v[7].name, "\xe2\x98\xba!");
	assert_false(v[7].invalid);
	imap_mailboxes_free(v, n);
	v = NULL;
	/* the pattern goes in modified UTF-7; BAD is a refusal */
	assert_int_equal(imap_list(m, "\xc3\xa4/%", &v, &n, &err), -EPROTO);
	assert_null(v);
	finish(&f, m);
}

/*
 * UTF8=ACCEPT offered once logged in: ENABLE follows the login, and from
 * then on mailbox names go and come in UTF-8 (RFC 6855 section 3).
 */
static void
test_utf8_accept(void **state)
{
	static const struct fake_step script[] = {
		GREET,
		C("A0001 LOGIN \"user\" \"secret\""),
		S("A0001 OK [CAPABILITY IMAP4rev1 ENABLE UTF8=ACCEPT] logged in\r\n"),
		C("A0002 ENABLE UTF8=ACCEPT"), S("* ENABLED UTF8=ACCEPT\r\nA0002 OK done\r\n"),
		C("A0003 LIST \"\" \"\xc3\xa4/%\""),
		S("* LIST () \"/\" \"Entw\xc3\xbcrfe\"\r\n"
		  "* LIST () \"/\" \"Entw&APw-rfe\"\r\n"
		  "* LIST () \"/\" \"Bad\xc3\"\r\n"
		  "A0003 OK LIST done\r\n"),
		C("A0004 SELECT \"\xc3\x84pfel\""),
		S("* 1 EXISTS\r\n* OK [UIDVALIDITY 9] x\r\nA0004 OK [READ-WRITE] rw\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct imap_mailbox *v = NULL;
	struct imap_folder fo;
	size_t n = 0;

	(void)state;
	assert_int_equal(auth(m, SASL_USER, "user", "secret", &err), 0);
	assert_true(imap_utf8_enabled(m));
	assert_int_equal(imap_list(m, "\xc3\xa4/%", &v, &n, &err), 0);
	/*
	 * "&APw-" is no longer modified UTF-7 but the name itself; bad UTF-8 is
	 * kept raw and marked invalid, for the policy to report and skip.
	 */
	assert_int_equal(n, 3);
	assert_string_equal(v[0].name, "Entw\xc3\xbcrfe");
	assert_false(v[0].invalid);
	assert_string_equal(v[1].name, "Entw&APw-rfe");
	assert_false(v[1].invalid);
	assert_true(v[2].invalid);
	imap_mailboxes_free(v, n);
	assert_int_equal(imap_select(m, "\xc3\x84pfel", false, &fo, &err), 0);
	assert_int_equal(fo.uidvalidity, 9);
	finish(&f, m);
}

/* ENABLE refused, or answered without ENABLED: modified UTF-7 stays. */
static void
test_utf8_accept_refused(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("AUTH=PLAIN ENABLE UTF8=ACCEPT"),
		C("A0001 LOGIN \"user\" \"secret\""), S("A0001 OK logged in\r\n"),
		C("A0002 CAPABILITY"),
		S("* CAPABILITY IMAP4rev1 ENABLE UTF8=ACCEPT\r\nA0002 OK\r\n"),
		C("A0003 ENABLE UTF8=ACCEPT"), S("A0003 OK nothing enabled\r\n"),
		C("A0004 SELECT \"&AMQ-pfel\""),
		S("* 1 EXISTS\r\n* OK [UIDVALIDITY 9] x\r\nA0004 OK [READ-WRITE] rw\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct imap_folder fo;

	(void)state;
	assert_int_equal(auth(m, SASL_USER, "user", "secret", &err), 0);
	assert_false(imap_utf8_enabled(m));
	assert_int_equal(imap_select(m, "\xc3\x84pfel", false, &fo, &err), 0);
	finish(&f, m);
}

static void
test_namespaces(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 NAMESPACE"),
		S("* NAMESPACE ((\"\" \"/\")) ((\"Other Users/\" \"/\")) "
		  "((\"Shared/\" \"/\" \"X-PARAM\" (\"x\")) (\"#public.\" \".\"))\r\n"
		  "A0001 OK done\r\n"),
		C("A0002 NAMESPACE"),
		S("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nA0002 OK done\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct imap_namespace *v = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(imap_namespaces(m, &v, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(v[0].prefix, "Other Users/");
	assert_string_equal(v[1].prefix, "Shared/");
	assert_string_equal(v[2].prefix, "#public.");
	assert_int_equal(v[2].delim, '.');
	imap_namespaces_free(v, n);
	assert_int_equal(imap_namespaces(m, &v, &n, &err), 0);
	assert_int_equal(n, 0);
	imap_namespaces_free(v, n);
	finish(&f, m);
}

static void
test_namespaces_not_offered(void **state)
{
	static const struct fake_step script[] = { GREET, END };
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct imap_namespace *v = NULL;
	size_t n = 1;

	(void)state;
	assert_int_equal(imap_namespaces(m, &v, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_null(v);
	finish(&f, m);
}

/* ---- listing and searching ----------------------------------------------- */

static void
test_list_messages(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID FETCH 100:* (UID FLAGS RFC822.SIZE INTERNALDATE)"),
		S("* 3 FETCH (UID 102 FLAGS (\\Seen \\Flagged $Junk) RFC822.SIZE 2000 "
		  "INTERNALDATE \"17-Jul-1996 02:44:25 -0700\")\r\n"
		  "* 1 FETCH (FLAGS (\\Deleted))\r\n"
		  "* 2 FETCH (UID 100 RFC822.SIZE 10 INTERNALDATE \" 1-Jan-2024 00:00:00 +0000\" "
		  "FLAGS ())\r\n"
		  "* 4 EXISTS\r\n"
		  "* 4 FETCH (UID 103 FLAGS (\\Answered \\Draft \\Deleted) RFC822.SIZE 5 "
		  "INTERNALDATE \"31-Feb-2024 00:00:00 +0000\")\r\n"
		  "A0001 OK done\r\n"),
		/* n:* past the last UID still returns the last message (RFC 3501 6.4.8) */
		C("A0002 UID FETCH 200:* (UID FLAGS RFC822.SIZE INTERNALDATE)"),
		S("* 4 FETCH (UID 103 FLAGS () RFC822.SIZE 5)\r\nA0002 OK done\r\n"),
		C("A0003 UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)"),
		S("* 1 FETCH (UID x RFC822.SIZE 5)\r\n* 2 FETCH (UID 0 RFC822.SIZE 5)\r\n"
		  "* 3 FETCH (RFC822.SIZE 5 FLAGS ())\r\n* 4 FETCH (UID 4294967296 RFC822.SIZE 5)\r\n"
		  "* 5 FETCH (UID 9 RFC822.SIZE 5)\r\nA0003 OK done\r\n"),
		C("A0004 UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)"),
		S("* 1 FETCH (UID 3 RFC822.SIZE x)\r\nA0004 OK done\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct imap_msginfo *v = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(imap_list_messages(m, 100, &v, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(v[0].uid, 100);
	assert_int_equal(v[0].size, 10);
	assert_int_equal(v[0].flags, 0);
	assert_int_equal(v[0].internaldate, 1704067200);
	assert_int_equal(v[1].uid, 102);
	assert_int_equal(v[1].size, 2000);
	assert_int_equal(v[1].flags, IMAP_FLAG_SEEN | IMAP_FLAG_FLAGGED);
	assert_int_equal(v[1].internaldate, 837596665);
	assert_int_equal(v[2].uid, 103);
	assert_int_equal(v[2].flags, IMAP_FLAG_ANSWERED | IMAP_FLAG_DRAFT | IMAP_FLAG_DELETED);
	/* no such day: unknown */
	assert_int_equal(v[2].internaldate, 0);
	free(v);
	v = NULL;
	assert_int_equal(imap_list_messages(m, 200, &v, &n, &err), 0);
	assert_int_equal(n, 0);
	free(v);
	v = NULL;
	assert_int_equal(imap_take_bad_uids(m), 0);
	/* Messages without a valid UID are left out and counted, the others kept. */
	assert_int_equal(imap_list_messages(m, 0, &v, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].uid, 9);
	free(v);
	v = NULL;
	assert_int_equal(imap_take_bad_uids(m), 4);
	assert_int_equal(imap_take_bad_uids(m), 0);
	assert_int_equal(imap_list_messages(m, 0, &v, &n, &err), -EPROTO);
	finish(&f, m);
}

static void
test_fetch_info(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID FETCH 5,7:8,4294967295 (UID FLAGS RFC822.SIZE)"),
		S("* 3 FETCH (UID 8 FLAGS (\\Deleted) RFC822.SIZE 20)\r\n"
		  "* 1 FETCH (FLAGS (\\Seen))\r\n"
		  "* 2 FETCH (UID 6 FLAGS () RFC822.SIZE 1)\r\n"
		  "* 1 FETCH (UID 5 FLAGS () RFC822.SIZE 10)\r\n"
		  "* 4 FETCH (FLAGS () RFC822.SIZE 7)\r\n"
		  "* 3 FETCH (UID 8 FLAGS () RFC822.SIZE 20)\r\n"
		  "A0001 OK done\r\n"),
		C("A0002 UID FETCH 1 (UID FLAGS RFC822.SIZE)"), S("A0002 NO gone\r\n"),
		END,
	};
	static const uint32_t uids[] = { 8, 7, 5, 4294967295u, 5 };
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct imap_msginfo *v = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(imap_fetch_info(m, uids, ARRAY_SIZE(uids), &v, &n, &err), 0);
	/* 6 was not asked for; 7 and 4294967295 are gone; 8 came twice. */
	assert_int_equal(n, 2);
	assert_int_equal(v[0].uid, 5);
	assert_int_equal(v[0].size, 10);
	assert_int_equal(v[1].uid, 8);
	assert_int_equal(v[1].size, 20);
	free(v);
	v = NULL;
	assert_int_equal(imap_take_bad_uids(m), 1);
	assert_int_equal(imap_fetch_info(m, uids + 2, 0, &v, &n, &err), 0);
	assert_int_equal(n, 0);
	free(v);
	v = NULL;
	assert_int_equal(imap_fetch_info(m, (const uint32_t[]){ 1 }, 1, &v, &n, &err), -EPROTO);
	finish(&f, m);
}

static void
test_search(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID SEARCH UNSEEN UID 10:4294967295"),
		/* an unasked-for body is read past, not kept */
		S("* 1 FETCH (UID 1 BODY[] {5}\r\nhello)\r\n"
		  "* SEARCH 15 12 99\r\n* SEARCH 12 3\r\n* SEARCH\r\nA0001 OK done\r\n"),
		C("A0002 UID SEARCH DELETED UID 1:5"), S("* SEARCH\r\nA0002 OK\r\n"),
		C("A0003 UID SEARCH BEFORE 1-Jan-2026 UID 1:9"),
		S("A0003 NO [BADCHARSET] huh\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	uint32_t *v = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(imap_search(m, "UNSEEN", 10, UINT32_MAX, &v, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(v[0], 12);
	assert_int_equal(v[1], 15);
	assert_int_equal(v[2], 99);
	free(v);
	v = NULL;
	assert_int_equal(imap_search(m, "DELETED", 0, 5, &v, &n, &err), 0);
	assert_int_equal(n, 0);
	free(v);
	assert_int_equal(imap_search(m, "X\r\nA1 LOGOUT", 1, 5, &v, &n, &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(imap_search(m, "BEFORE 1-Jan-2026", 1, 9, &v, &n, &err), -EPROTO);
	assert_string_equal(err.srv, "huh");
	finish(&f, m);
}

/* ---- bodies -------------------------------------------------------------- */

static const struct imap_fetch_sink *
sink_of(struct got *g)
{
	static struct imap_fetch_sink s;

	s = (struct imap_fetch_sink){ got_begin, got_data, got_end, got_abort, g };
	return &s;
}

static void
test_fetch_bodies(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID FETCH 1:3,5,9 (UID FLAGS BODY.PEEK[])"),
		/* CRLF split between reads, a bare CR inside */
		S("* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[] {10}\r\nab\r"), PAUSE,
		S("\ncd\r"), PAUSE, S("e\r\n)\r\n"),
		/* unsolicited data between the messages */
		S("* 3 EXPUNGE\r\n* 4 EXISTS\r\n* 2 FETCH (FLAGS (\\Deleted))\r\n"
		  "* OK [ALERT] \033]0;pwned\007 maintenance\r\n"),
		/* a CR that ends the literal is a bare one */
		S("* 2 FETCH (UID 2 BODY[] {4}\r\nx\r\n\r)\r\n"),
		/* UID and FLAGS after the body */
		S("* 3 FETCH (BODY[] {3}\r\nabc UID 3 FLAGS (\\Answered))\r\n"),
		/* no UID; a UID not asked for; a second copy: all aborted */
		S("* 4 FETCH (BODY[] {2}\r\nzz)\r\n"),
		S("* 5 FETCH (UID 77 BODY[] {1}\r\nq)\r\n"),
		S("* 6 FETCH (UID 1 BODY[] {1}\r\nq)\r\n"),
		/* the literal's size split across reads */
		S("* 7 FETCH (UID 9 BODY[] {1"), PAUSE, S("2}\r\nHello"), PAUSE,
		S(" World!)\r\n"),
		S("A0001 OK done\r\n"),
		END,
	};
	static const uint32_t uids[] = { 9, 5, 3, 2, 1, 2 };
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct got g = { 0 };

	(void)state;
	assert_int_equal(imap_fetch_bodies(m, uids, ARRAY_SIZE(uids), false, sink_of(&g), &err),
			 0);
	assert_int_equal(g.n, 7);
	assert_false(g.open);
	assert_true(g.ended[0]);
	assert_int_equal(g.uid[0], 1);
	assert_int_equal(g.size[0], 10);
	assert_int_equal(g.flags[0], IMAP_FLAG_SEEN);
	assert_int_equal(g.len[0], 8);
	assert_memory_equal(g.buf[0], "ab\ncd\re\n", 8);
	assert_true(g.ended[1]);
	assert_int_equal(g.uid[1], 2);
	assert_string_equal(g.buf[1], "x\n\r");
	assert_true(g.ended[2]);
	assert_int_equal(g.uid[2], 3);
	assert_int_equal(g.flags[2], IMAP_FLAG_ANSWERED);
	assert_string_equal(g.buf[2], "abc");
	assert_true(g.aborted[3] && g.aborted[4] && g.aborted[5]);
	/* Only the body without a UID counts as one the server could not name. */
	assert_int_equal(imap_take_bad_uids(m), 1);
	assert_true(g.ended[6]);
	assert_int_equal(g.uid[6], 9);
	assert_string_equal(g.buf[6], "Hello World!");
	got_free(&g);
	finish(&f, m);
}

static void
test_fetch_mark_seen_quoted(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID FETCH 1:5000 (UID FLAGS BODY[])"),
		S("* 1 FETCH (UID 4 BODY[] \"a\\\"b\" FLAGS (\\Seen))\r\n"
		  "* 2 FETCH (UID 5 BODY[] NIL)\r\nA0001 OK\r\n"),
		END,
	};
	uint32_t *uids = malloc(5000 * sizeof(*uids));
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct got g = { 0 };

	(void)state;
	assert_non_null(uids);
	for (uint32_t i = 0; i < 5000; i++)
		uids[i] = 5000 - i;
	assert_int_equal(imap_fetch_bodies(m, uids, 5000, true, sink_of(&g), &err), 0);
	assert_int_equal(g.n, 1);
	assert_true(g.ended[0]);
	assert_string_equal(g.buf[0], "a\"b");
	free(uids);
	got_free(&g);
	finish(&f, m);
}

/* Sets longer than a command allows are split, pipelined, answered in any order. */
static void
test_fetch_split_pipelined(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		{ 'c', "A0001 UID FETCH 2,4,6,8,10,", 0 },
		{ 'c', "A0002 UID FETCH ", 0 },
		S("* 300 FETCH (UID 600 BODY[] {1}\r\nb)\r\nA0002 OK\r\n"
		  "* 1 FETCH (UID 2 BODY[] {1}\r\na)\r\nA0001 OK\r\n"),
		END,
	};
	uint32_t uids[400];
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct got g = { 0 };

	(void)state;
	for (uint32_t i = 0; i < 400; i++)
		uids[i] = 2 * (i + 1);
	assert_int_equal(imap_fetch_bodies(m, uids, 400, false, sink_of(&g), &err), 0);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.uid[0], 600);
	assert_int_equal(g.uid[1], 2);
	got_free(&g);
	finish(&f, m);
}

/*
 * A large sparse set: its sixteen commands (163 five-digit UIDs each) are
 * all in flight before the first completion, not eight at a time, and the
 * completions may come in any order.
 */
static void
test_fetch_sparse_large_pipelined(void **state)
{
	enum { NCMD = 16, PER = 163, N = NCMD * PER };
	struct fake_step script[64];
	char cmds[NCMD][32], done[NCMD * 16 + 64];
	uint32_t *uids = malloc(N * sizeof(*uids));
	struct fake f;
	struct mp_err err;
	struct imap *m;
	struct got g = { 0 };
	size_t k = 0, o = 0;

	(void)state;
	assert_non_null(uids);
	script[k++] = (struct fake_step)LOGGED_IN;
	for (unsigned i = 0; i < NCMD; i++) {
		snprintf(cmds[i], sizeof(cmds[i]), "A%04u UID FETCH %u,", i + 1, 10000 + 2 * PER * i);
		script[k++] = (struct fake_step){ 'c', cmds[i], 0 };
	}
	o += (size_t)snprintf(done + o, sizeof(done) - o,
			      "* 1 FETCH (UID 10002 BODY[] {1}\r\nz)\r\n");
	for (unsigned i = NCMD; i > 0; i--)
		o += (size_t)snprintf(done + o, sizeof(done) - o, "A%04u OK\r\n", i);
	script[k++] = (struct fake_step)S(done);
	script[k++] = (struct fake_step)END;
	assert_true(k <= ARRAY_SIZE(script));
	for (uint32_t i = 0; i < N; i++)
		uids[i] = 10000 + 2 * i;
	m = open_ok(&f, script, &err);
	assert_int_equal(imap_fetch_bodies(m, uids, N, false, sink_of(&g), &err), 0);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.uid[0], 10002);
	free(uids);
	got_free(&g);
	finish(&f, m);
}

#define BIG (5u * 1024 * 1024)

static void
test_fetch_big(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID FETCH 7 (UID FLAGS BODY.PEEK[])"),
		S("* 1 FETCH (UID 7 BODY[] {5242880}\r\n"), GEN(BIG),
		S(" FLAGS (\\Seen \\Flagged))\r\nA0001 OK\r\n"),
		END,
	};
	static const uint32_t uid = 7;
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct got g = { 0 };
	char *want = malloc(BIG + 16);
	size_t wl = 0;

	(void)state;
	assert_non_null(want);
	for (unsigned i = 0; wl < BIG; i++)
		wl += (size_t)snprintf(want + wl, 16, "line %07u\n", i);
	/* the pattern is cut at BIG bytes of CRLF text: the LF text is shorter */
	assert_int_equal(imap_fetch_bodies(m, &uid, 1, false, sink_of(&g), &err), 0);
	assert_int_equal(g.n, 1);
	assert_true(g.ended[0]);
	assert_int_equal(g.size[0], BIG);
	assert_int_equal(g.flags[0], IMAP_FLAG_SEEN | IMAP_FLAG_FLAGGED);
	/* BIG / 14 whole lines lose a CR each; the cut line ends without CRLF */
	assert_int_equal(g.len[0], BIG - BIG / 14);
	assert_memory_equal(g.buf[0], want, g.len[0]);
	free(want);
	got_free(&g);
	finish(&f, m);
}

static void
test_fetch_sink_fails(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID FETCH 1 (UID FLAGS BODY.PEEK[])"),
		S("* 1 FETCH (UID 1 BODY[] {5}\r\nhello)\r\nA0001 OK\r\n"),
		END,
	};
	static const uint32_t uid = 1;
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct got g = { .fail_data = ENOSPC };

	(void)state;
	assert_int_equal(imap_fetch_bodies(m, &uid, 1, false, sink_of(&g), &err), -ENOSPC);
	assert_true(g.aborted[0]);
	/* the session is out of step: refused from now on, nothing sent */
	mp_err_clear(&err);
	assert_int_equal(imap_expunge(m, &err), -EPROTO);
	got_free(&g);
	finish(&f, m);
}

static void
test_fetch_bye(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID FETCH 1 (UID FLAGS BODY.PEEK[])"),
		S("* 1 FETCH (UID 1 BODY[] {5}\r\nhe"), PAUSE, S("llo)\r\n* BYE going down\r\n"),
		END,
	};
	static const uint32_t uid = 1;
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct got g = { 0 };

	(void)state;
	assert_int_equal(imap_fetch_bodies(m, &uid, 1, false, sink_of(&g), &err), -ECONNRESET);
	assert_string_equal(err.srv, "going down");
	assert_true(g.ended[0]);
	got_free(&g);
	finish(&f, m);
}

static void
test_fetch_hostile(void **state)
{
	static const struct fake_step s1[] = {
		LOGGED_IN, C("A0001 UID FETCH 1 (UID FLAGS BODY.PEEK[])"),
		S("* 1 FETCH (UID 1 BODY[] {2}\r\nab BODY[] {2}\r\ncd)\r\nA0001 OK\r\n"), END,
	};
	static const struct fake_step s2[] = {
		LOGGED_IN, C("A0001 UID FETCH 1 (UID FLAGS BODY.PEEK[])"),
		S("A0009 OK not yours\r\n"), END,
	};
	static const struct fake_step s3[] = {
		LOGGED_IN, C("A0001 UID FETCH 1 (UID FLAGS BODY.PEEK[])"),
		S("* 1 FETCH (UID 1 BODY[] {3}\r\nabc\r\nA0001 OK\r\n"), END,
	};
	static const struct fake_step s4[] = {
		LOGGED_IN, C("A0001 UID FETCH 1 (UID FLAGS BODY.PEEK[])"),
		S("+ more?\r\n"), END,
	};
	const struct fake_step *scripts[] = { s1, s2, s3, s4 };
	static const int want[] = { -EPROTO, -EPROTO, -EPROTO, -EPROTO };
	static const uint32_t uid = 1;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(scripts); i++) {
		struct fake f;
		struct mp_err err;
		struct imap *m = open_ok(&f, scripts[i], &err);
		struct got g = { 0 };
		int r = imap_fetch_bodies(m, &uid, 1, false, sink_of(&g), &err);

		assert_int_equal(r, want[i]);
		assert_false(g.open);
		assert_false(g.ended[0]);
		got_free(&g);
		finish(&f, m);
	}
}

/* ---- envelopes ----------------------------------------------------------- */

static void
test_envelopes(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID FETCH 1:2 (UID RFC822.SIZE ENVELOPE)"),
		S("* 1 FETCH (UID 1 RFC822.SIZE 321 ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700\" "
		  "{8}\r\nSubject! ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) NIL NIL "
		  "NIL NIL NIL NIL \"<B27397-0100000@cac.washington.edu>\"))\r\n"
		  "* 2 FETCH (UID 2 RFC822.SIZE 5 ENVELOPE (NIL NIL ((NIL NIL \"undisclosed\" NIL) "
		  "(NIL NIL \"bob\" \"example.org\") (NIL NIL NIL NIL)) NIL NIL NIL NIL NIL NIL "
		  "NIL))\r\n"
		  "* 3 FETCH (UID 99 ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n"
		  "A0001 OK\r\n"),
		C("A0002 UID FETCH 3 (UID RFC822.SIZE ENVELOPE)"),
		S("* 3 FETCH (UID 3 ENVELOPE (NIL NIL))\r\nA0002 OK\r\n"),
		END,
	};
	static const uint32_t uids[] = { 2, 1 };
	static const uint32_t three = 3;
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct imap_envelope *v = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(imap_fetch_envelopes(m, uids, 2, &v, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(v[0].uid, 1);
	assert_int_equal(v[0].size, 321);
	assert_string_equal(v[0].date, "Wed, 17 Jul 1996 02:23:25 -0700");
	assert_string_equal(v[0].subject, "Subject!");
	assert_string_equal(v[0].from, "Terry Gray <gray@cac.washington.edu>");
	assert_string_equal(v[0].message_id, "<B27397-0100000@cac.washington.edu>");
	assert_int_equal(v[1].uid, 2);
	assert_null(v[1].date);
	assert_null(v[1].subject);
	assert_null(v[1].message_id);
	assert_string_equal(v[1].from, "bob@example.org");
	imap_envelopes_free(v, n);
	v = NULL;
	assert_int_equal(imap_fetch_envelopes(m, &three, 1, &v, &n, &err), -EPROTO);
	assert_null(v);
	finish(&f, m);
}

/* ---- flags and expunge --------------------------------------------------- */

static void
test_store_uid_expunge(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 UID STORE 3:4,8 +FLAGS.SILENT (\\Deleted)"), S("A0001 OK\r\n"),
		C("A0002 UID EXPUNGE 3:4,8"),
		S("* 3 EXPUNGE\r\n* 3 EXPUNGE\r\n* 5 EXPUNGE\r\nA0002 OK\r\n"),
		C("A0003 UID STORE 9 +FLAGS.SILENT (\\Seen)"),
		S("* 9 FETCH (FLAGS (\\Seen))\r\nA0003 NO [CANNOT] read-only\r\n"),
		C("A0004 EXPUNGE"), S("A0004 OK\r\n"),
		C("A0005 LOGOUT"), S("* BYE\r\nA0005 OK\r\n"),
		END,
	};
	static const uint32_t uids[] = { 8, 4, 3 };
	static const uint32_t nine = 9;
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(imap_store_flag(m, uids, 3, false, &err), 0);
	assert_int_equal(imap_uid_expunge(m, uids, 3, &err), 0);
	assert_int_equal(imap_store_flag(m, &nine, 1, true, &err), -EPROTO);
	assert_string_equal(err.srv, "read-only");
	mp_err_clear(&err);
	assert_int_equal(imap_expunge(m, &err), 0);
	/* nothing to do: nothing sent */
	assert_int_equal(imap_store_flag(m, NULL, 0, false, &err), 0);
	assert_int_equal(imap_logout(m, &err), 0);
	finish(&f, m);
}

static void
test_uid_expunge_without_uidplus(void **state)
{
	static const struct fake_step script[] = { GREET, END };
	static const uint32_t uid = 5;
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(imap_uid_expunge(m, &uid, 1, &err), -ENOTSUP);
	finish(&f, m);
}

/* A server may close right after its BYE: that is a LOGOUT too. */
static void
test_logout_close_after_bye(void **state)
{
	static const struct fake_step script[] = {
		GREET, C("A0001 LOGOUT"), S("* BYE bye\r\n"), CLOSE, END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(imap_logout(m, &err), 0);
	finish(&f, m);
}

/* Caps: a literal past the in-memory cap, a response past the line cap. */
static void
test_caps(void **state)
{
	static const struct fake_step s1[] = {
		GREET, C("A0001 LIST \"\" \"*\""), S("* LIST () \"/\" {100000}\r\n"), END,
	};
	static const struct fake_step s2[] = {
		GREET, C("A0001 LIST \"\" \"*\""), S("* LIST () \"/\" \""),
		FILL("a", 1050000), END,
	};
	const struct fake_step *scripts[] = { s1, s2 };

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(scripts); i++) {
		struct fake f;
		struct mp_err err;
		struct imap *m = open_ok(&f, scripts[i], &err);
		struct imap_mailbox *v = NULL;
		size_t n = 0;

		assert_int_equal(imap_list(m, "*", &v, &n, &err), -E2BIG);
		assert_non_null(strstr(err.msg, "bad response"));
		assert_null(v);
		finish(&f, m);
	}
}

/* ---- special-use, CREATE, APPEND ------------------------------------------- */

/* A message handed over in chunks of at most step bytes; pass 2 may differ from pass 1. */
struct msg_src {
	const char *data[2];       /* the first read pass, then every later one */
	size_t step;
	size_t pos;
	unsigned pass;
	unsigned rewinds;
	int fail;                  /* errno for the read in pass 2, or 0 */
};

static int
src_read(void *ud, const char **ret_data, size_t *ret_len, struct mp_err *err)
{
	struct msg_src *s = ud;
	const char *d = s->data[s->pass ? 1 : 0] ? s->data[s->pass ? 1 : 0] : s->data[0];
	size_t left = strlen(d) - s->pos;

	if (s->pass && s->fail)
		return mp_err_set(err, -s->fail, MP_EX_IOERR, "read failed");
	*ret_data = d + s->pos;
	*ret_len = s->step && left > s->step ? s->step : left;
	s->pos += *ret_len;
	return 0;
}

static int
src_rewind(void *ud, struct mp_err *err)
{
	struct msg_src *s = ud;

	(void)err;
	s->pos = 0;
	s->pass++;
	s->rewinds++;
	return 0;
}

static void
test_caps_special_use(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("SPECIAL-USE LIST-EXTENDED LITERAL-"), END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_true(imap_caps(m)->special_use);
	assert_true(imap_caps(m)->list_extended);
	assert_true(imap_caps(m)->literal_minus);
	assert_false(imap_caps(m)->literal_plus);
	finish(&f, m);
}

static void
test_list_special(void **state)
{
	static const struct fake_step s1[] = {
		GREET_CAPS("SPECIAL-USE LIST-EXTENDED"),
		C("A0001 LIST \"\" \"*\" RETURN (SPECIAL-USE)"),
		S("* LIST (\\HasNoChildren) \"/\" INBOX\r\n"
		  "* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts\r\n"
		  "* LIST (\\HasNoChildren \\sENT) \"/\" \"Gesendete &AMQ-\" "
		  "(\"CHILDINFO\" (\"X\"))\r\n"
		  "* LIST (\\HasNoChildren) \"/\" Sent\r\n"
		  "A0001 OK done\r\n"),
		END,
	};
	/* Without the capability: plain LIST, attributes as given unasked. */
	static const struct fake_step s2[] = {
		LOGGED_IN,
		C("A0001 LIST \"\" \"*\""),
		S("* LIST (\\Sent \\HasNoChildren) \".\" \"INBOX.Sent Items\"\r\n"
		  "A0001 OK done\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap_mailbox *v = NULL;
	size_t n = 0;
	struct imap *m = open_ok(&f, s1, &err);

	(void)state;
	assert_int_equal(imap_list_special(m, &v, &n, &err), 0);
	assert_int_equal(n, 4);
	assert_false(v[0].sent);
	assert_false(v[1].sent);
	assert_true(v[2].sent);
	assert_string_equal(v[2].name, "Gesendete \xc3\x84");
	assert_false(v[3].sent);
	imap_mailboxes_free(v, n);
	finish(&f, m);

	m = open_ok(&f, s2, &err);
	assert_int_equal(imap_list_special(m, &v, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_true(v[0].sent);
	assert_string_equal(v[0].name, "INBOX.Sent Items");
	imap_mailboxes_free(v, n);
	finish(&f, m);
}

static void
test_create(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 CREATE \"Sent\""), S("A0001 OK created\r\n"),
		C("A0002 CREATE \"Gesendete &AMQ-\""),
		S("A0002 NO [ALREADYEXISTS] Mailbox already exists\r\n"),
		C("A0003 CREATE \"Sent\""), S("A0003 NO [NOPERM] not allowed\r\n"),
		C("A0004 CREATE \"x\""), S("A0004 OK\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	assert_int_equal(imap_create(m, "Sent", &err), 0);
	assert_int_equal(imap_create(m, "Gesendete \xc3\x84", &err), 0);
	assert_int_equal(imap_create(m, "Sent", &err), -EPROTO);
	assert_string_equal(err.srv, "not allowed");
	/* a refusal leaves the session usable */
	mp_err_clear(&err);
	assert_int_equal(imap_create(m, "x", &err), 0);
	finish(&f, m);
}

/* 23 octets with CRLF line ends: two bare LFs become CRLF, the CRLF stays. */
#define MSG "Subject: x\nHi\r\nthere\n"
#define MSG_LINES C("Subject: x"), C("Hi"), C("there"), C("")

/* A synchronizing literal: nothing of the message before the "+". */
static void
test_append_sync(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 APPEND \"Sent\" (\\Seen) {23}"), QUIET,
		S("* 3 EXISTS\r\n+ go ahead\r\n"), MSG_LINES,
		S("A0001 OK [APPENDUID 38505 3955] APPEND completed\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct msg_src src = { .data = { MSG }, .step = 3 };
	uint32_t v = 1, uid = 1;

	(void)state;
	assert_int_equal(imap_append(m, "Sent", IMAP_FLAG_SEEN, 23, src_read, src_rewind, &src,
				     &v, &uid, &err), 0);
	assert_int_equal(v, 38505);
	assert_int_equal(uid, 3955);
	assert_int_equal(src.rewinds, 1);
	finish(&f, m);
}

/* LITERAL+: the message follows the command at once; no APPENDUID gives 0. */
static void
test_append_literal_plus(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("LITERAL+ UIDPLUS"),
		C("A0001 APPEND \"Entw&APw-rfe\" (\\Seen \\Draft) {23+}"), MSG_LINES,
		S("A0001 OK done\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct msg_src src = { .data = { MSG }, .step = 1 };
	uint32_t v = 1, uid = 1;

	(void)state;
	assert_int_equal(imap_append(m, "Entw\xc3\xbcrfe", IMAP_FLAG_SEEN | IMAP_FLAG_DRAFT, 23,
				     src_read, src_rewind, &src, &v, &uid, &err), 0);
	assert_int_equal(v, 0);
	assert_int_equal(uid, 0);
	finish(&f, m);
}

/* LITERAL-: non-synchronizing up to 4096 octets, synchronizing above. */
static void
test_append_literal_minus(void **state)
{
	static char big[5001];
	static const struct fake_step script[] = {
		GREET_CAPS("LITERAL-"),
		C("A0001 APPEND \"Sent\" {5+}"), C("a\rb"), C(""), S("A0001 OK\r\n"),
		C("A0002 APPEND \"Sent\" (\\Seen) {5001}"), QUIET, S("+ \r\n"), C(NULL), C(""),
		S("A0002 OK [APPENDUID 7 8] done\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct msg_src s1 = { .data = { "a\rb\n" } }, s2 = { .data = { big }, .step = 1000 };
	uint32_t uid = 0;

	(void)state;
	memset(big, 'x', 4999);
	big[4999] = '\n';
	/* a bare CR is kept as it is, the bare LF becomes CRLF */
	assert_int_equal(imap_append(m, "Sent", 0, 5, src_read, src_rewind, &s1, NULL, &uid,
				     &err), 0);
	assert_int_equal(imap_append(m, "Sent", IMAP_FLAG_SEEN, 5001, src_read, src_rewind, &s2,
				     NULL, &uid, &err), 0);
	assert_int_equal(uid, 8);
	finish(&f, m);
}

/*
 * [TRYCREATE] instead of the continuation: -ENOENT, nothing of the message
 * sent, the session usable (CREATE, then APPEND again).
 */
static void
test_append_trycreate(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN,
		C("A0001 APPEND \"Sent\" (\\Seen) {23}"),
		S("A0001 NO [TRYCREATE] Mailbox doesn't exist: Sent\r\n"),
		C("A0002 CREATE \"Sent\""), S("A0002 OK\r\n"),
		C("A0003 APPEND \"Sent\" (\\Seen) {23}"), S("+ OK\r\n"), MSG_LINES,
		S("A0003 NO [TRYCREATE] gone again\r\n"),
		C("A0004 APPEND \"Sent\" (\\Seen) {23}"), S("+ OK\r\n"), MSG_LINES,
		S("A0004 NO [OVERQUOTA] full\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct msg_src src = { .data = { MSG } };

	(void)state;
	assert_int_equal(imap_append(m, "Sent", IMAP_FLAG_SEEN, 23, src_read, src_rewind, &src,
				     NULL, NULL, &err), -ENOENT);
	assert_int_equal(err.ex, MP_EX_PROTOCOL);
	assert_string_equal(err.srv, "Mailbox doesn't exist: Sent");
	mp_err_clear(&err);
	assert_int_equal(imap_create(m, "Sent", &err), 0);
	src = (struct msg_src){ .data = { MSG } };
	assert_int_equal(imap_append(m, "Sent", IMAP_FLAG_SEEN, 23, src_read, src_rewind, &src,
				     NULL, NULL, &err), -ENOENT);
	mp_err_clear(&err);
	src = (struct msg_src){ .data = { MSG } };
	assert_int_equal(imap_append(m, "Sent", IMAP_FLAG_SEEN, 23, src_read, src_rewind, &src,
				     NULL, NULL, &err), -EPROTO);
	assert_string_equal(err.srv, "full");
	finish(&f, m);
}

/* What cannot be sent is refused before anything goes out; the session stays usable. */
static void
test_append_refused_before(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN, C("A0001 CREATE \"ok\""), S("A0001 OK\r\n"), END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	struct msg_src src = { .data = { MSG } };

	(void)state;
	assert_int_equal(imap_append(m, "Sent", 0, 0, src_read, src_rewind, &src, NULL, NULL,
				     &err), -EINVAL);
	assert_int_equal(imap_append(m, "Sent", 0, (uint64_t)2 << 30, src_read, src_rewind,
				     &src, NULL, NULL, &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(imap_append(m, "Sent", 0, 22, src_read, src_rewind, &src, NULL, NULL,
				     &err), -EMSGSIZE);
	assert_int_equal(src.rewinds, 0);
	assert_int_equal(imap_create(m, "ok", &err), 0);
	finish(&f, m);
}

/* A reader that hands over a NUL: refused before sending. */
static int
nul_read(void *ud, const char **ret_data, size_t *ret_len, struct mp_err *err)
{
	bool *done = ud;

	(void)err;
	*ret_data = "a\0b\n";
	*ret_len = *done ? 0 : 4;
	*done = !*done;
	return 0;
}

static int
nul_rewind(void *ud, struct mp_err *err)
{
	(void)ud;
	(void)err;
	fail();
	return 0;
}

static void
test_append_nul(void **state)
{
	static const struct fake_step script[] = {
		LOGGED_IN, C("A0001 CREATE \"ok\""), S("A0001 OK\r\n"), END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	bool done = false;

	(void)state;
	assert_int_equal(imap_append(m, "Sent", 0, 5, nul_read, nul_rewind, &done, NULL, NULL,
				     &err), -EINVAL);
	assert_int_equal(err.ex, MP_EX_DATAERR);
	assert_int_equal(imap_create(m, "ok", &err), 0);
	finish(&f, m);
}

/*
 * The message changed between the two reads: -EMSGSIZE once sending has
 * begun, and the session is unusable (its literal cannot be completed).
 */
static void
test_append_changed(void **state)
{
	static const struct fake_step s1[] = {
		LOGGED_IN, C("A0001 APPEND \"Sent\" {5}"), S("+ go\r\n"), END,
	};
	static const struct fake_step s2[] = {
		LOGGED_IN, C("A0001 APPEND \"Sent\" {5}"), S("+ go\r\n"), END,
	};
	static const struct fake_step s3[] = {
		LOGGED_IN, C("A0001 APPEND \"Sent\" {5}"), S("+ go\r\n"), END,
	};
	const struct fake_step *scripts[] = { s1, s2, s3 };
	struct msg_src srcs[] = {
		{ .data = { "abc\n", "abcd\n" } },      /* grew */
		{ .data = { "abc\n", "ab\n" } },        /* shrank */
		{ .data = { "abc\n" }, .fail = EIO },   /* the reader fails */
	};
	const int want[] = { -EMSGSIZE, -EMSGSIZE, -EIO };

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(scripts); i++) {
		struct fake f;
		struct mp_err err;
		struct imap *m = open_ok(&f, scripts[i], &err);

		assert_int_equal(imap_append(m, "Sent", 0, 5, src_read, src_rewind, &srcs[i],
					     NULL, NULL, &err), want[i]);
		mp_err_clear(&err);
		assert_int_equal(imap_create(m, "x", &err), -EPROTO);
		assert_non_null(strstr(err.msg, "unusable"));
		finish(&f, m);
	}
}

/* ---- traces -------------------------------------------------------------- */

/* With -v, no secret reaches the trace: only "***". */
static void
test_trace_redacts(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS("SASL-IR AUTH=PLAIN"),
		C("A0001 AUTHENTICATE PLAIN " PLAIN_IR), S("A0001 NO bad\r\n"),
		C("A0002 LOGIN \"user\" \"secret\""), S("A0002 NO bad\r\n"),
		C("A0003 LOGIN \"user\" {8}"), S("+ ok\r\n"), C("s\xc3\xa9" "cret!"),
		S("A0003 OK [CAPABILITY IMAP4rev1] in\r\n"),
		END,
	};
	struct fake f;
	struct imap *m = NULL;
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
	assert_int_equal(fake_open(&f, false, &m, &err), 0);
	assert_int_equal(auth(m, SASL_PLAIN, "user", "secret", &err), -EACCES);
	assert_int_equal(auth(m, SASL_USER, "user", "secret", &err), -EACCES);
	assert_int_equal(auth(m, SASL_USER, "user", "s\xc3\xa9" "cret!", &err), 0);
	log_set_level(LOG_LVL_INFO);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	finish(&f, m);
	rewind(tmp);
	n = fread(buf, 1, sizeof(buf) - 1, tmp);
	buf[n] = '\0';
	fclose(tmp);
	assert_non_null(strstr(buf, "C: A0001 AUTHENTICATE PLAIN ***"));
	assert_non_null(strstr(buf, "C: A0002 LOGIN \"user\" ***"));
	assert_non_null(strstr(buf, "S: A0002 NO bad"));
	assert_null(strstr(buf, "secret"));
	assert_null(strstr(buf, "cret"));
	assert_null(strstr(buf, PLAIN_IR));
}

/* ---- IDLE (RFC 2177) ----------------------------------------------------- */

#define IDLE_CAPS GREET_CAPS("IDLE")
#define EXAMINE3 C("A0001 EXAMINE \"INBOX\""), \
	S("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\nA0001 OK [READ-ONLY] done\r\n")

static void
examine3(struct imap *m, struct mp_err *err)
{
	struct imap_folder fo;

	assert_int_equal(imap_select(m, "INBOX", true, &fo, err), 0);
	assert_int_equal(fo.exists, 3);
}

static void
test_idle_new_mail(void **state)
{
	/*
	 * The silence lasts longer than the connection's timeout: IDLE waits
	 * must not fall under the timeout or the minimum-rate rule.
	 */
	static const struct fake_step script[] = {
		IDLE_CAPS, EXAMINE3,
		C("A0002 IDLE"), S("+ idling\r\n"), QUIET, SLEEP(1300),
		S("* 1 FETCH (FLAGS (\\Seen))\r\n"), QUIET,
		S("* 4 EXISTS\r\n* 1 RECENT\r\n"),
		C("DONE"), S("A0002 OK IDLE terminated\r\n"),
		END,
	};
	volatile sig_atomic_t stop = 0;
	struct fake f;
	struct imap *m = NULL;
	struct mp_err err;
	int64_t t0;

	(void)state;
	fake_start(&f, script);
	assert_int_equal(fake_open_timeout(&f, false, 1000, &m, &err), 0);
	examine3(m, &err);
	t0 = util_now_ms();
	assert_int_equal(imap_idle(m, 10000, &stop, &err), 1);
	assert_true(util_now_ms() - t0 >= 1400);
	assert_int_equal(err.code, 0);
	finish(&f, m);
}

static void
test_idle_timeout(void **state)
{
	static const struct fake_step script[] = {
		IDLE_CAPS, EXAMINE3,
		C("A0002 IDLE"), S("+ idling\r\n"),
		C("DONE"), S("* 5 EXISTS\r\nA0002 OK done\r\n"),
		C("A0003 IDLE"), S("+ idling\r\n"),
		C("DONE"), S("A0003 OK done\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	int64_t t0, dt;

	(void)state;
	examine3(m, &err);
	t0 = util_now_ms();
	/* the EXISTS that crossed our DONE still counts; no stop flag given */
	assert_int_equal(imap_idle(m, 300, NULL, &err), 1);
	dt = util_now_ms() - t0;
	assert_true(dt >= 300 && dt < 2000);
	assert_int_equal(imap_idle(m, 200, NULL, &err), 0);
	assert_int_equal(err.code, 0);
	finish(&f, m);
}

static void
test_idle_refused(void **state)
{
	static const struct fake_step script[] = {
		IDLE_CAPS, EXAMINE3,
		C("A0002 IDLE"), S("A0002 NO [LIMIT] too many idlers\r\n"),
		C("A0003 LOGOUT"), S("* BYE bye\r\nA0003 OK done\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	examine3(m, &err);
	assert_int_equal(imap_idle(m, 1000, NULL, &err), -EPROTO);
	assert_string_equal(err.srv, "too many idlers");
	assert_non_null(strstr(err.msg, "IDLE"));
	/* a refusal leaves the session in step */
	mp_err_clear(&err);
	assert_int_equal(imap_logout(m, &err), 0);
	finish(&f, m);
}

static void
test_idle_not_offered(void **state)
{
	/* the script ends after EXAMINE: sending IDLE would fail it */
	static const struct fake_step script[] = { GREET, EXAMINE3, END };
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	examine3(m, &err);
	assert_int_equal(imap_idle(m, 1000, NULL, &err), -ENOTSUP);
	finish(&f, m);
}

static void
test_idle_bye(void **state)
{
	static const struct fake_step script[] = {
		IDLE_CAPS, EXAMINE3,
		C("A0002 IDLE"), S("+ idling\r\n"), QUIET,
		S("* BYE \033[1mserver shutting down\r\n"), CLOSE,
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	examine3(m, &err);
	assert_int_equal(imap_idle(m, 5000, NULL, &err), -ECONNRESET);
	assert_string_equal(err.srv, "\\x1b[1mserver shutting down");
	/* the session is over: nothing more is sent */
	mp_err_clear(&err);
	assert_int_equal(imap_logout(m, &err), -EPROTO);
	finish(&f, m);
}

static void
test_idle_expunge_then_exists(void **state)
{
	static const struct fake_step script[] = {
		IDLE_CAPS, EXAMINE3,
		C("A0002 IDLE"), S("+ idling\r\n"), QUIET,
		/* one gone, the count said again: nothing new */
		S("* 2 EXPUNGE\r\n* 2 EXISTS\r\n* 1 FETCH (FLAGS (\\Deleted))\r\n"),
		C("DONE"), S("A0002 OK done\r\n"),
		C("A0003 IDLE"), S("+ idling\r\n"), QUIET,
		/* back to three after the expunge: one arrived */
		S("* 3 EXISTS\r\n"),
		C("DONE"), S("A0003 OK done\r\n"),
		END,
	};
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	examine3(m, &err);
	assert_int_equal(imap_idle(m, 600, NULL, &err), 0);
	assert_int_equal(imap_idle(m, 5000, NULL, &err), 1);
	finish(&f, m);
}

static volatile sig_atomic_t alarm_stop, alarm_hits;

/* The first tick only interrupts; the second asks to stop. */
static void
on_alarm(int sig)
{
	(void)sig;
	if (++alarm_hits >= 2)
		alarm_stop = 1;
}

static void
test_idle_signal_stop(void **state)
{
	static const struct fake_step script[] = {
		IDLE_CAPS, EXAMINE3,
		C("A0002 IDLE"), S("+ idling\r\n"),
		C("DONE"), S("A0002 OK done\r\n"),
		END,
	};
	struct sigaction sa = { .sa_handler = on_alarm }, old;
	struct itimerval tv = { .it_interval = { 0, 150000 }, .it_value = { 0, 150000 } };
	struct itimerval off = { 0 };
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);
	int64_t t0, dt;

	(void)state;
	examine3(m, &err);
	alarm_stop = alarm_hits = 0;
	/* no SA_RESTART: the wait must see EINTR (poll is never restarted anyway) */
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	t0 = util_now_ms();
	assert_int_equal(setitimer(ITIMER_REAL, &tv, NULL), 0);
	assert_int_equal(imap_idle(m, 20000, &alarm_stop, &err), 0);
	dt = util_now_ms() - t0;
	setitimer(ITIMER_REAL, &off, NULL);
	sigaction(SIGALRM, &old, NULL);
	/* a signal without the flag kept it waiting; the one with it ended it */
	assert_true(alarm_hits >= 2);
	assert_true(dt >= 250 && dt < 3000);
	assert_int_equal(err.code, 0);
	finish(&f, m);
}

static void
test_idle_stop_before(void **state)
{
	/* a stop asked before IDLE began: nothing is sent */
	static const struct fake_step script[] = { IDLE_CAPS, EXAMINE3, END };
	volatile sig_atomic_t stop = 1;
	struct fake f;
	struct mp_err err;
	struct imap *m = open_ok(&f, script, &err);

	(void)state;
	examine3(m, &err);
	assert_int_equal(imap_idle(m, 5000, &stop, &err), 0);
	finish(&f, m);
}

static void
test_idle_hostile(void **state)
{
	static const struct fake_step s1[] = {
		IDLE_CAPS, EXAMINE3, C("A0002 IDLE"), S("A0002 OK no idling today\r\n"), END,
	};
	static const struct fake_step s2[] = {
		IDLE_CAPS, EXAMINE3, C("A0002 IDLE"), S("+ idling\r\n+ again\r\n"), END,
	};
	static const struct fake_step s3[] = {
		IDLE_CAPS, EXAMINE3, C("A0002 IDLE"), S("+ idling\r\nA0002 OK bored\r\n"), END,
	};
	static const struct fake_step s4[] = {
		/* a response that begins and never ends: bounded by the timeout */
		IDLE_CAPS, EXAMINE3, C("A0002 IDLE"), S("+ idling\r\n* 4 EXI"), SLEEP(1500), END,
	};
	const struct fake_step *scripts[] = { s1, s2, s3, s4 };
	const int want[] = { -EPROTO, -EPROTO, 0, -ETIMEDOUT };

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(scripts); i++) {
		struct fake f;
		struct imap *m = NULL;
		struct mp_err err;

		fake_start(&f, scripts[i]);
		assert_int_equal(fake_open_timeout(&f, false, 1000, &m, &err), 0);
		examine3(m, &err);
		assert_int_equal(imap_idle(m, 5000, NULL, &err), want[i]);
		finish(&f, m);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_caps_login_logout),
		cmocka_unit_test(test_greeting_asks_caps),
		cmocka_unit_test(test_preauth),
		cmocka_unit_test(test_preauth_with_starttls_refused),
		cmocka_unit_test(test_bye_greeting),
		cmocka_unit_test(test_bad_greeting),
		cmocka_unit_test(test_starttls_not_offered),
		cmocka_unit_test(test_starttls_not_offered_asked),
		cmocka_unit_test(test_starttls_no),
		cmocka_unit_test(test_starttls_bad),
		cmocka_unit_test(test_starttls_injection),
		cmocka_unit_test(test_auth_plain_sasl_ir),
		cmocka_unit_test(test_auth_plain_continuation),
		cmocka_unit_test(test_auth_no),
		cmocka_unit_test(test_login_quoting),
		cmocka_unit_test(test_login_literal_plus),
		cmocka_unit_test(test_login_literal_refused),
		cmocka_unit_test(test_auth_xoauth2_error),
		cmocka_unit_test(test_auth_oauthbearer_error),
		cmocka_unit_test(test_auth_scram_sasl_ir),
		cmocka_unit_test(test_auth_scram_continuation),
		cmocka_unit_test(test_auth_scram_plus),
		cmocka_unit_test(test_auth_scram_ok_without_v),
		cmocka_unit_test(test_auth_scram_cancel),
		cmocka_unit_test(test_select),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_utf8_accept),
		cmocka_unit_test(test_utf8_accept_refused),
		cmocka_unit_test(test_namespaces),
		cmocka_unit_test(test_namespaces_not_offered),
		cmocka_unit_test(test_list_messages),
		cmocka_unit_test(test_fetch_info),
		cmocka_unit_test(test_search),
		cmocka_unit_test(test_fetch_bodies),
		cmocka_unit_test(test_fetch_mark_seen_quoted),
		cmocka_unit_test(test_fetch_split_pipelined),
		cmocka_unit_test(test_fetch_sparse_large_pipelined),
		cmocka_unit_test(test_fetch_big),
		cmocka_unit_test(test_fetch_sink_fails),
		cmocka_unit_test(test_fetch_bye),
		cmocka_unit_test(test_fetch_hostile),
		cmocka_unit_test(test_envelopes),
		cmocka_unit_test(test_store_uid_expunge),
		cmocka_unit_test(test_uid_expunge_without_uidplus),
		cmocka_unit_test(test_logout_close_after_bye),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_caps_special_use),
		cmocka_unit_test(test_list_special),
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_append_sync),
		cmocka_unit_test(test_append_literal_plus),
		cmocka_unit_test(test_append_literal_minus),
		cmocka_unit_test(test_append_trycreate),
		cmocka_unit_test(test_append_refused_before),
		cmocka_unit_test(test_append_nul),
		cmocka_unit_test(test_append_changed),
		cmocka_unit_test(test_trace_redacts),
		cmocka_unit_test(test_idle_new_mail),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_idle_refused),
		cmocka_unit_test(test_idle_not_offered),
		cmocka_unit_test(test_idle_bye),
		cmocka_unit_test(test_idle_expunge_then_exists),
		cmocka_unit_test(test_idle_signal_stop),
		cmocka_unit_test(test_idle_stop_before),
		cmocka_unit_test(test_idle_hostile),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
