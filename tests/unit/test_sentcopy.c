/*
 * The Sent copy against the scripted fake server (fakeserver.c): which
 * mailbox is chosen, the Message-ID lookup (quoting, and the mailbox
 * examined anew after an APPEND so the new copy is found), never a second
 * copy, and what is refused before anything is sent. The server checks
 * every line against its script and fails on anything more.
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
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "fakeserver.h"
#include "mailpull/config.h"
#include "sentcopy.h"

#define GREET_CAPS(caps) S("* OK [CAPABILITY IMAP4rev1 " caps "] ready\r\n")
/* The capabilities after login replace those of the greeting. */
#define LOGIN_CAPS(caps) C("A0001 LOGIN \"me\" \"secret\""), \
	S("A0001 OK [CAPABILITY IMAP4rev1 SPECIAL-USE UIDPLUS" caps "] in\r\n")
#define LOGIN LOGIN_CAPS("")
#define LIST_SU C("A0002 LIST \"\" \"*\" RETURN (SPECIAL-USE)")
#define EXAMINE(tag, name) C(tag " EXAMINE \"" name "\""), \
	S("* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n" tag " OK [READ-ONLY] done\r\n")

static void
account_for(struct mp_account *a, const struct fake *f)
{
	*a = (struct mp_account){
		.name = "acct", .protocol = MP_PROTO_IMAP, .host = "127.0.0.1",
		.port = f->port, .tls = MP_TLS_NONE, .allow_plaintext = true, .user = "me",
		.password = "secret", .timeout_s = 3,
	};
}

/* A message file (memfd) holding s. */
static int
msg_fd(const char *s, size_t len)
{
	int fd = memfd_create("msg", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, s, len), (ssize_t)len);
	return fd;
}

static void
test_server_files(void **state)
{
	static const struct {
		const char *host, *smtp;
		bool files;
	} cases[] = {
		{ "imap.gmail.com", "smtp.gmail.com", true },
		{ "IMAP.GMAIL.COM.", NULL, true },
		{ "mail.example.org", "smtp.gmail.com", true },
		{ "imap.googlemail.com", NULL, true },
		{ "outlook.office365.com", "smtp.office365.com", true },
		{ "imap-mail.outlook.com", "smtp-mail.outlook.com", true },
		{ "outlook.live.com", NULL, true },
		{ "imap.mail.yahoo.com", "smtp.mail.yahoo.com", false },
		{ "imap.gmail.com.evil.example", "gmail.com", false },
		{ "localhost", NULL, false },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct mp_account a = { .host = (char *)cases[i].host,
					.smtp_host = (char *)cases[i].smtp };

		assert_int_equal(sentcopy_server_files(&a), cases[i].files);
	}
}

#define MSG "Message-ID: <1@x>\nSubject: hi\n\nbody\n"
#define MSG_LINES C("Message-ID: <1@x>"), C("Subject: hi"), C(""), C("body"), C("")

/*
 * The \Sent mailbox is found; the first put appends, a lookup right after
 * finds the copy (the mailbox examined anew), a second put does not append.
 */
static void
test_put_once(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS(""), LOGIN_CAPS(" LITERAL+"), LIST_SU,
		S("* LIST (\\HasNoChildren) \"/\" INBOX\r\n"
		  "* LIST (\\HasNoChildren) \"/\" Sent\r\n"
		  "* LIST (\\HasNoChildren \\Sent) \"/\" \"Gesendete Elemente\"\r\n"
		  "A0002 OK done\r\n"),
		EXAMINE("A0003", "Gesendete Elemente"),
		C("A0004 UID SEARCH HEADER Message-ID \"<1@x>\" UID 1:4294967295"),
		S("* SEARCH\r\nA0004 OK\r\n"),
		C("A0005 APPEND \"Gesendete Elemente\" (\\Seen) {40+}"), MSG_LINES,
		S("A0005 OK [APPENDUID 7 12] done\r\n"),
		EXAMINE("A0006", "Gesendete Elemente"),
		C("A0007 UID SEARCH HEADER Message-ID \"<1@x>\" UID 1:4294967295"),
		S("* SEARCH 12\r\nA0007 OK\r\n"),
		C("A0008 UID SEARCH HEADER Message-ID \"<1@x>\" UID 1:4294967295"),
		S("* SEARCH 12\r\nA0008 OK\r\n"),
		C("A0009 LOGOUT"), S("* BYE bye\r\nA0009 OK\r\n"),
		END,
	};
	struct fake f;
	struct mp_account a;
	struct mp_err err = { 0 };
	struct sentcopy *sc = NULL;
	int fd = msg_fd(MSG, strlen(MSG));
	uint32_t uid = 0;
	bool appended = false, there = false;

	(void)state;
	fake_start(&f, script);
	account_for(&a, &f);
	assert_int_equal(sentcopy_open(&a, true, &sc, &err), 0);
	assert_string_equal(sentcopy_folder(sc), "Gesendete Elemente");
	assert_int_equal(sentcopy_put(sc, "<1@x>", fd, 40, &uid, &appended, &err), 0);
	assert_true(appended);
	assert_int_equal(uid, 12);
	assert_int_equal(sentcopy_has(sc, "<1@x>", &there, &err), 0);
	assert_true(there);
	assert_int_equal(sentcopy_put(sc, "<1@x>", fd, 40, &uid, &appended, &err), 0);
	assert_false(appended);
	assert_int_equal(uid, 0);
	sentcopy_close(sc);
	close(fd);
	assert_int_equal(fake_wait(&f), 0);
}

/* Neither sent_folder nor \Sent: "Sent" is created (existing already is fine). */
static void
test_create_sent(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS(""), LOGIN, LIST_SU,
		S("* LIST (\\HasNoChildren) \"/\" INBOX\r\nA0002 OK done\r\n"),
		C("A0003 CREATE \"Sent\""), S("A0003 NO [ALREADYEXISTS] raced\r\n"),
		EXAMINE("A0004", "Sent"),
		C("A0005 APPEND \"Sent\" (\\Seen) {40}"), S("+ go\r\n"), MSG_LINES,
		S("A0005 OK no uid\r\n"),
		C("A0006 LOGOUT"), S("* BYE bye\r\nA0006 OK\r\n"),
		END,
	};
	struct fake f;
	struct mp_account a;
	struct mp_err err = { 0 };
	struct sentcopy *sc = NULL;
	int fd = msg_fd(MSG, strlen(MSG));
	uint32_t uid = 1;
	bool appended = false;

	(void)state;
	fake_start(&f, script);
	account_for(&a, &f);
	assert_int_equal(sentcopy_open(&a, true, &sc, &err), 0);
	assert_string_equal(sentcopy_folder(sc), "Sent");
	/* no Message-ID: no lookup */
	assert_int_equal(sentcopy_put(sc, NULL, fd, 40, &uid, &appended, &err), 0);
	assert_true(appended);
	assert_int_equal(uid, 0);
	sentcopy_close(sc);
	close(fd);
	assert_int_equal(fake_wait(&f), 0);
}

/*
 * No Sent mailbox and create false; a sent_folder the server lacks:
 * -ENOENT, a configuration error.
 */
static void
test_missing(void **state)
{
	static const struct fake_step s1[] = {
		GREET_CAPS(""), LOGIN, LIST_SU,
		S("* LIST (\\Noselect) \"/\" Sent\r\nA0002 OK done\r\n"), END,
	};
	static const struct fake_step s2[] = {
		GREET_CAPS(""), LOGIN, LIST_SU,
		S("* LIST (\\Sent) \"/\" Sent\r\nA0002 OK done\r\n"), END,
	};
	const struct fake_step *scripts[] = { s1, s2 };
	const char *folders[] = { NULL, "Gesendet" };

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(scripts); i++) {
		struct fake f;
		struct mp_account a;
		struct mp_err err = { 0 };
		struct sentcopy *sc = NULL;

		fake_start(&f, scripts[i]);
		account_for(&a, &f);
		a.sent_folder = (char *)folders[i];
		assert_int_equal(sentcopy_open(&a, false, &sc, &err), -ENOENT);
		assert_int_equal(err.ex, MP_EX_CONFIG);
		assert_null(sc);
		if (folders[i])
			assert_non_null(strstr(err.msg, folders[i]));
		assert_int_equal(fake_wait(&f), 0);
	}
}

/*
 * sent_folder wins over \Sent; a Message-ID with a quote or a backslash
 * goes as an escaped quoted string, one with 8-bit bytes or a control is
 * refused before anything is sent; so is a message holding a NUL.
 */
static void
test_lookup_quoting(void **state)
{
	static const struct fake_step script[] = {
		GREET_CAPS(""), LOGIN, LIST_SU,
		S("* LIST (\\Sent) \"/\" Sent\r\n* LIST () \"/\" \"Mine/Out\"\r\n"
		  "A0002 OK done\r\n"),
		EXAMINE("A0003", "Mine/Out"),
		C("A0004 UID SEARCH HEADER Message-ID \"<a\\\"b\\\\c@x>\" UID 1:4294967295"),
		S("* SEARCH 3\r\nA0004 OK\r\n"),
		C("A0005 LOGOUT"), S("* BYE bye\r\nA0005 OK\r\n"),
		END,
	};
	struct fake f;
	struct mp_account a;
	struct mp_err err = { 0 };
	struct sentcopy *sc = NULL;
	int fd = msg_fd("a\0b\n", 4);
	uint32_t uid = 0;
	bool there = false, appended = true;

	(void)state;
	fake_start(&f, script);
	account_for(&a, &f);
	a.sent_folder = "Mine/Out";
	assert_int_equal(sentcopy_open(&a, true, &sc, &err), 0);
	assert_int_equal(sentcopy_has(sc, "<a\"b\\c@x>", &there, &err), 0);
	assert_true(there);
	assert_int_equal(sentcopy_has(sc, "<\xc3\xa4@x>", &there, &err), -EINVAL);
	assert_int_equal(err.ex, MP_EX_DATAERR);
	mp_err_clear(&err);
	assert_int_equal(sentcopy_has(sc, "<a\r\nA1 LOGOUT>", &there, &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(sentcopy_has(sc, "", &there, &err), -EINVAL);
	mp_err_clear(&err);
	assert_int_equal(sentcopy_put(sc, NULL, fd, 5, &uid, &appended, &err), -EINVAL);
	assert_int_equal(err.ex, MP_EX_DATAERR);
	sentcopy_close(sc);
	close(fd);
	assert_int_equal(fake_wait(&f), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_server_files),
		cmocka_unit_test(test_put_once),
		cmocka_unit_test(test_create_sent),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_lookup_quoting),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
