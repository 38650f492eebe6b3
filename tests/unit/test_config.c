/* Unit tests for the configuration loader. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailpull/config.h"

struct fx {
	char dir[64];
	char path[128];
	struct mp_config *cfg;
	struct mp_err err;
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/mp-config-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/config", fx->dir);
	setenv("HOME", fx->dir, 1);
	unsetenv("XDG_STATE_HOME");
	unsetenv("XDG_CONFIG_HOME");
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;

	config_free(fx->cfg);
	unlink(fx->path);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t len = strlen(text);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static int
load(struct fx *fx, const char *text, mode_t mode)
{
	config_free(fx->cfg);
	fx->cfg = NULL;
	mp_err_clear(&fx->err);
	write_file(fx->path, text, mode);
	return config_load(fx->path, &fx->cfg, &fx->err);
}

/* Asserts a content error: -EINVAL, "PATH:LINE: " and a part of the message. */
static void
expect_error(struct fx *fx, const char *text, int line, const char *part)
{
	char prefix[200];
	int r = load(fx, text, 0600);

	snprintf(prefix, sizeof(prefix), "%s:%d: ", fx->path, line);
	if (r != -EINVAL || strncmp(fx->err.msg, prefix, strlen(prefix)) != 0 ||
	    !strstr(fx->err.msg, part))
		print_error("config:\n%s\nwant %d line %d \"%s\"\ngot  %d \"%s\"\n", text, -EINVAL,
			    line, part, r, fx->err.msg);
	assert_int_equal(r, -EINVAL);
	assert_null(fx->cfg);
	assert_int_equal(fx->err.ex, MP_EX_CONFIG);
	assert_int_equal(strncmp(fx->err.msg, prefix, strlen(prefix)), 0);
	assert_non_null(strstr(fx->err.msg, part));
}

static const char good_conf[] =
	"# mail\n"
	"state_dir = ~/state   // trailing comment\n"
	"defaults {\n"
	"    timeout = 2m  tls = implicit\n"
	"    /* a block\n"
	"       comment */\n"
	"    folders = { \"INBOX\", # inside a list\n"
	"                Archive }\n"
	"    max_size = 10M\n"
	"}\n"
	"account \"work\" {\n"
	"    protocol = pop3\n"
	"    host = \"pop.example.com\"\n"
	"    user = \"me@example.com\"\n"
	"    password_command = \"pass show mail/work\"\n"
	"    maildir = ~/Mail/work\n"
	"    auth = \"plain login\"\n"
	"}\n"
	"account home {\n"
	"    protocol = IMAP\n"
	"    host = imap.example.org\n"
	"    port = 10993\n"
	"    user = me\n"
	"    password_file = \"~/.secret\"\n"
	"    maildir = \"/var/mail/home\"\n"
	"    keep_days = 14\n"
	"    timeout = 90\n"
	"    max_size = 0\n"
	"    tls_fingerprint = \"ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:"
	"ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89\"\n"
	"    tls_ca_file = /etc/ssl/ca.pem\n"
	"}\n";

static void
test_good(void **state)
{
	struct fx *fx = *state;
	const struct mp_account *w, *h;
	char want[256];

	assert_int_equal(load(fx, good_conf, 0644), 0);
	assert_int_equal(fx->cfg->naccounts, 2);
	assert_string_equal(fx->cfg->path, fx->path);
	snprintf(want, sizeof(want), "%s/state", fx->dir);
	assert_string_equal(fx->cfg->state_dir, want);

	w = config_find(fx->cfg, "work");
	assert_non_null(w);
	assert_int_equal(w->line, 11);
	assert_int_equal(w->protocol, MP_PROTO_POP3);
	assert_string_equal(w->host, "pop.example.com");
	assert_int_equal(w->port, 995);
	assert_int_equal(w->tls, MP_TLS_IMPLICIT);
	assert_false(w->allow_plaintext);
	assert_null(w->tls_ca_file);
	assert_null(w->tls_fingerprint);
	assert_string_equal(w->user, "me@example.com");
	assert_null(w->password);
	assert_null(w->password_file);
	assert_string_equal(w->password_command, "pass show mail/work");
	assert_string_equal(w->auth, "plain login");
	snprintf(want, sizeof(want), "%s/Mail/work", fx->dir);
	assert_string_equal(w->maildir, want);
	assert_false(w->keep);
	assert_int_equal(w->keep_days, -1);
	assert_int_equal(w->max_size, 10 * 1024 * 1024);
	assert_int_equal(w->timeout_s, 120);
	/* folders in defaults are for IMAP accounts only */
	assert_int_equal(w->nfolders, 0);

	h = config_find(fx->cfg, "home");
	assert_non_null(h);
	assert_int_equal(h->line, 19);
	assert_int_equal(h->protocol, MP_PROTO_IMAP);
	assert_int_equal(h->port, 10993);
	snprintf(want, sizeof(want), "%s/.secret", fx->dir);
	assert_string_equal(h->password_file, want);
	assert_string_equal(h->maildir, "/var/mail/home");
	assert_true(h->keep);
	assert_int_equal(h->keep_days, 14);
	assert_int_equal(h->max_size, 0);
	assert_int_equal(h->timeout_s, 90);
	assert_null(h->auth);
	assert_string_equal(h->tls_ca_file, "/etc/ssl/ca.pem");
	assert_string_equal(h->tls_fingerprint,
			    "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789");
	assert_int_equal(h->nfolders, 2);
	assert_string_equal(h->folders[0], "INBOX");
	assert_string_equal(h->folders[1], "Archive");

	assert_null(config_find(fx->cfg, "nope"));
	assert_null(config_find(NULL, "work"));
}

#define ACCT_HEAD "account \"a\" {\n"
#define ACCT_BODY \
	"  host = h\n" \
	"  user = u\n" \
	"  password_command = \"echo x\"\n" \
	"  maildir = /m\n"

/* Defaults, protocol from defaults, default ports and keep. */
static void
test_defaults(void **state)
{
	struct fx *fx = *state;
	const struct mp_account *a;
	char want[256];

	assert_int_equal(load(fx, "defaults { protocol = imap tls = starttls keep = no }\n"
			      ACCT_HEAD ACCT_BODY "}\n"
			      "account b {\n" ACCT_BODY "  protocol = pop3\n  keep = yes\n}\n"
			      "account c {\n" ACCT_BODY "  tls = implicit\n}\n", 0600), 0);
	a = config_find(fx->cfg, "a");
	assert_int_equal(a->protocol, MP_PROTO_IMAP);
	assert_int_equal(a->tls, MP_TLS_STARTTLS);
	assert_int_equal(a->port, 143);
	assert_false(a->keep);
	assert_int_equal(a->timeout_s, 60);
	assert_int_equal(a->nfolders, 1);
	assert_string_equal(a->folders[0], "INBOX");
	a = config_find(fx->cfg, "b");
	assert_int_equal(a->protocol, MP_PROTO_POP3);
	assert_int_equal(a->port, 110);
	assert_true(a->keep);
	a = config_find(fx->cfg, "c");
	assert_int_equal(a->port, 993);
	snprintf(want, sizeof(want), "%s/.local/state/mailpull", fx->dir);
	assert_string_equal(fx->cfg->state_dir, want);

	setenv("XDG_STATE_HOME", "/xdg/state", 1);
	assert_int_equal(load(fx, ACCT_HEAD ACCT_BODY "  protocol = pop3\n}\n", 0600), 0);
	a = config_find(fx->cfg, "a");
	assert_int_equal(a->port, 995);
	assert_false(a->keep);
	assert_string_equal(fx->cfg->state_dir, "/xdg/state/mailpull");
	assert_int_equal(load(fx, ACCT_HEAD ACCT_BODY "  protocol = pop3\n  keep_days = 3\n}\n",
			      0600), 0);
	a = config_find(fx->cfg, "a");
	assert_true(a->keep);
	assert_int_equal(a->keep_days, 3);
	assert_int_equal(load(fx, ACCT_HEAD ACCT_BODY "  protocol = pop3\n  tls = none\n"
			      "  allow_plaintext = yes\n}\n", 0600), 0);
	a = config_find(fx->cfg, "a");
	assert_int_equal(a->port, 110);
	assert_true(a->allow_plaintext);
	unsetenv("XDG_STATE_HOME");
}

/* The account's own secret replaces the inherited one. */
static void
test_secret_override(void **state)
{
	struct fx *fx = *state;
	const struct mp_account *a;

	assert_int_equal(load(fx, "defaults { password_command = \"pass x\" }\n"
			      "account a {\n protocol = pop3\n host = h\n user = u\n maildir = /m\n"
			      " password = 'se$cret'\n}\n"
			      "account b {\n protocol = pop3\n host = h\n user = u\n"
			      " maildir = /m\n}\n", 0600), 0);
	a = config_find(fx->cfg, "a");
	assert_string_equal(a->password, "se$cret");
	assert_null(a->password_command);
	a = config_find(fx->cfg, "b");
	assert_null(a->password);
	assert_string_equal(a->password_command, "pass x");
}

struct err_case {
	const char *text;
	int line;
	const char *part;
};

static const struct err_case err_cases[] = {
	{ "bogus = 1\n", 1, "no such option 'bogus'" },
	{ "# c\n// c\n/* c\n c */\n" ACCT_HEAD "  protocol = pop3\n  hots = x\n}\n", 7,
	  "'hots'" },
	{ "defaults {\n  # x\n  colour = blue\n}\n", 3, "'colour'" },
	{ ACCT_HEAD "  protocol = smtp\n" ACCT_BODY "}\n", 2, "must be pop3 or imap" },
	{ ACCT_HEAD "  protocol = pop3\n  tls = maybe\n" ACCT_BODY "}\n", 3,
	  "implicit, starttls or none" },
	{ ACCT_HEAD "  protocol = pop3\n  port = 70000\n" ACCT_BODY "}\n", 3, "1 to 65535" },
	{ ACCT_HEAD "  protocol = pop3\n  port = 0\n" ACCT_BODY "}\n", 3, "1 to 65535" },
	{ ACCT_HEAD "  protocol = pop3\n\n  timeout = 0\n" ACCT_BODY "}\n", 4, "duration" },
	{ ACCT_HEAD "  protocol = pop3\n  timeout = 2h\n" ACCT_BODY "}\n", 3, "duration" },
	{ ACCT_HEAD "  protocol = pop3\n  timeout = 5x\n" ACCT_BODY "}\n", 3, "duration" },
	{ ACCT_HEAD "  protocol = pop3\n  max_size = 10Q\n" ACCT_BODY "}\n", 3, "size" },
	{ ACCT_HEAD "  protocol = pop3\n  max_size = -1\n" ACCT_BODY "}\n", 3, "size" },
	{ ACCT_HEAD "  protocol = pop3\n  keep = perhaps\n" ACCT_BODY "}\n", 3, "yes or no" },
	{ ACCT_HEAD "  protocol = pop3\n  keep_days = 0\n" ACCT_BODY "}\n", 3, "keep_days" },
	{ ACCT_HEAD "  protocol = pop3\n  keep_days = 1.5\n" ACCT_BODY "}\n", 3, "keep_days" },
	{ ACCT_HEAD "  protocol = pop3\n  tls_fingerprint = ABCD\n" ACCT_BODY "}\n", 3,
	  "SHA-256" },
	{ ACCT_HEAD "  protocol = pop3\n  tls_fingerprint = \"AB:CD:EF:01:23:45:67:89:AB:CD:EF:"
	  "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:8G\"\n" ACCT_BODY "}\n", 3,
	  "SHA-256" },
	{ ACCT_HEAD "  protocol = pop3\n  auth = \"plain cram-md5\"\n" ACCT_BODY "}\n", 3,
	  "unknown mechanism \"cram-md5\"" },
	{ ACCT_HEAD "  protocol = pop3\n  auth = \" , \"\n" ACCT_BODY "}\n", 3, "auth" },
	{ ACCT_HEAD "  protocol = pop3\n  maildir = Mail/x\n  host = h\n}\n", 3, "absolute path" },
	{ ACCT_HEAD "  protocol = pop3\n  host = \"a b\"\n}\n", 3, "not a host name" },
	{ ACCT_HEAD "  protocol = pop3\n  user = \"a\\nb\"\n}\n", 3, "control character" },
	{ ACCT_HEAD "  protocol = pop3\n  user = \"\"\n}\n", 3, "user is empty" },
	{ ACCT_HEAD "  protocol = pop3\n  password = \"se\\ncret\"\n}\n", 3, "line break" },
	{ ACCT_HEAD "  protocol = pop3\n  host = a\n  host = b\n}\n", 4,
	  "host is set twice (first at line 3)" },
	/* missing required keys point at the account */
	{ "\n" ACCT_HEAD ACCT_BODY "}\n", 2, "protocol is required" },
	{ ACCT_HEAD "  protocol = pop3\n  user = u\n  maildir = /m\n  password = p\n}\n", 1,
	  "host is required" },
	{ ACCT_HEAD "  protocol = pop3\n  host = h\n  maildir = /m\n  password = p\n}\n", 1,
	  "user is required" },
	{ ACCT_HEAD "  protocol = pop3\n  host = h\n  user = u\n  password = p\n}\n", 1,
	  "maildir is required" },
	{ "\n\n" ACCT_HEAD "  protocol = pop3\n  host = h\n  user = u\n  maildir = /m\n}\n", 3,
	  "one of password, password_file or password_command is required" },
	{ ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "  password = p\n}\n", 1,
	  "set only one of" },
	{ ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\naccount \"a\"\n{\n" ACCT_BODY "}\n", 9,
	  "account \"a\" is defined twice" },
	{ "account \"../x\" {\n  protocol = pop3\n" ACCT_BODY "}\n", 1, "account name" },
	{ ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "\n  folders = { INBOX }\n}\n", 8,
	  "POP3 has one mailbox; folders is an IMAP key" },
	{ ACCT_HEAD "  protocol = pop3\n  mark_seen = yes\n" ACCT_BODY "}\n", 3,
	  "mark_seen is an IMAP key" },
	{ ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "  exclude = { Trash }\n}\n", 7,
	  "exclude is an IMAP key" },
	{ ACCT_HEAD "  protocol = imap\n  only_unseen = maybe\n" ACCT_BODY "}\n", 3, "only_unseen" },
	{ ACCT_HEAD "  protocol = imap\n" ACCT_BODY "  folders = { INBOX, \"x\", INBOX }\n}\n", 7,
	  "\"INBOX\" is listed twice in folders" },
	{ ACCT_HEAD "  protocol = imap\n  tls = none\n" ACCT_BODY "}\n", 3, "allow_plaintext" },
	{ ACCT_HEAD "  protocol = imap\n  tls = none\n  allow_plaintext = yes\n"
	  "  tls_fingerprint = \"" "0123456789abcdef0123456789abcdef"
	  "0123456789abcdef0123456789abcdef\"\n" ACCT_BODY "}\n", 5, "needs TLS" },
	{ ACCT_HEAD "  protocol = pop3\n  keep = no\n  keep_days = 3\n" ACCT_BODY "}\n", 4,
	  "keep_days needs keep = yes" },
	{ "defaults { keep = no }\n" ACCT_HEAD "  protocol = pop3\n  keep_days = 3\n"
	  ACCT_BODY "}\n", 4, "line 1" },
	{ "defaults {}\n\ndefaults {}\n" ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\n", 3,
	  "defaults is given twice" },
	/* syntax */
	{ "\n" ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "\n", 2, "'{' is not closed" },
	{ ACCT_HEAD "  protocol = imap\n" ACCT_BODY "  folders = { a, b\n}\n", 1,
	  "'{' is not closed" },
	{ ACCT_HEAD "  protocol = pop3\n  host = 'h\n}\n", 3, "string is not closed (missing ')" },
	{ ACCT_HEAD "  protocol = pop3\n\n  host = \"h\n}\n", 4, "string is not closed" },
	{ ACCT_HEAD "  protocol = pop3\n  host = \"h\\\"\n}\n", 3, "string is not closed" },
	{ ACCT_HEAD "  protocol = pop3\n  /* never closed\n" ACCT_BODY "}\n", 3,
	  "comment is not closed" },
	{ ACCT_HEAD "  protocol = pop3\n  host \"h\"\n}\n", 3, "missing equal sign" },
	{ "}\n", 1, "unexpected closing brace" },
	{ "state_dir = relative\n" ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\n", 1,
	  "absolute path" },
};

static void
test_errors(void **state)
{
	struct fx *fx = *state;

	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++)
		expect_error(fx, err_cases[i].text, err_cases[i].line, err_cases[i].part);
}

static void
test_no_account(void **state)
{
	struct fx *fx = *state;
	char want[256];

	assert_int_equal(load(fx, "# nothing\n", 0600), -EINVAL);
	snprintf(want, sizeof(want), "%s: no account is defined", fx->path);
	assert_string_equal(fx->err.msg, want);
	assert_int_equal(load(fx, "", 0600), -EINVAL);
	assert_string_equal(fx->err.msg, want);
}

static void
test_missing_file(void **state)
{
	struct fx *fx = *state;
	char want[256];

	mp_err_clear(&fx->err);
	assert_int_equal(config_load(fx->path, &fx->cfg, &fx->err), -ENOENT);
	assert_null(fx->cfg);
	snprintf(want, sizeof(want), "%s: No such file or directory", fx->path);
	assert_string_equal(fx->err.msg, want);
	assert_int_equal(fx->err.ex, MP_EX_CONFIG);
}

static void
test_permissions(void **state)
{
	struct fx *fx = *state;
	static const char with_pw[] = "defaults { password = hunter2 }\n"
		ACCT_HEAD "  protocol = pop3\n  host = h\n  user = u\n  maildir = /m\n}\n";
	static const char no_pw[] = ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\n";
	static const mode_t bad[] = { 0640, 0604, 0610, 0601, 0644 };
	static const mode_t writable[] = { 0620, 0602, 0664, 0646, 0666 };
	char want[512];

	snprintf(want, sizeof(want),
		 "%s: holds a password and is readable by others; run: chmod 600 %s",
		 fx->path, fx->path);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(load(fx, with_pw, bad[i]), -EACCES);
		assert_string_equal(fx->err.msg, want);
		assert_int_equal(fx->err.ex, MP_EX_CONFIG);
		assert_null(strstr(fx->err.msg, "hunter2"));
	}
	/* Writable by others: refused whatever the file holds. */
	for (size_t i = 0; i < sizeof(writable) / sizeof(writable[0]); i++) {
		for (int pw = 0; pw < 2; pw++) {
			assert_int_equal(load(fx, pw ? with_pw : no_pw, writable[i]), -EACCES);
			assert_int_equal(fx->err.ex, MP_EX_CONFIG);
			assert_non_null(strstr(fx->err.msg, fx->path));
			assert_non_null(strstr(fx->err.msg, "run: chmod go-w "));
			assert_null(strstr(fx->err.msg, "hunter2"));
		}
	}
	assert_int_equal(load(fx, with_pw, 0600), 0);
	assert_string_equal(fx->cfg->accounts[0].password, "hunter2");
	assert_int_equal(load(fx, with_pw, 0400), 0);
	/* password_command holds no secret: readable by all will do */
	assert_int_equal(load(fx, no_pw, 0644), 0);
}

/* Owned by another user (not root): refused, with the chown that fixes it. */
static void
test_owner(void **state)
{
	struct fx *fx = *state;
	static const char no_pw[] = ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\n";
	uid_t other = geteuid() == 0 ? 4242 : 0;
	char want[64];

	assert_int_equal(load(fx, no_pw, 0644), 0);
	config_free(fx->cfg);
	fx->cfg = NULL;
	if (geteuid() != 0)
		skip();
	assert_int_equal(chown(fx->path, other, (gid_t)-1), 0);
	assert_int_equal(config_load(fx->path, &fx->cfg, &fx->err), -EACCES);
	assert_int_equal(fx->err.ex, MP_EX_CONFIG);
	assert_non_null(strstr(fx->err.msg, fx->path));
	snprintf(want, sizeof(want), "run: chown %lu ", (unsigned long)geteuid());
	assert_non_null(strstr(fx->err.msg, want));
	/* Root's own files are trusted. */
	assert_int_equal(chown(fx->path, 0, (gid_t)-1), 0);
	assert_int_equal(config_load(fx->path, &fx->cfg, &fx->err), 0);
}

/* No secret in any message, even when its value is the thing that is wrong. */
static void
test_secret_not_echoed(void **state)
{
	struct fx *fx = *state;

	expect_error(fx, ACCT_HEAD "  protocol = pop3\n  password = \"hun\\rter2\"\n}\n", 3,
		     "line break");
	assert_null(strstr(fx->err.msg, "hun"));
}

/*
 * An unquoted password with spaces reads as a value and option names to
 * libconfuse: the error must say to quote it, at its line, and quote no
 * part of it.
 */
static void
test_unquoted_password(void **state)
{
	struct fx *fx = *state;
	static const struct {
		const char *text;
		int line;
	} cases[] = {
		{ ACCT_HEAD "  protocol = pop3\n  host = h\n  user = u\n  maildir = /m\n"
		  "  password = hunter zwei drei\n}\n", 6 },
		{ ACCT_HEAD "  protocol = pop3 host = h user = u maildir = /m password = hunter zwei }\n",
		  2 },
		{ ACCT_HEAD "  protocol = pop3\n  password = hunter=zwei\n  host = h\n}\n", 3 },
		{ ACCT_HEAD "  protocol = pop3\n  password = hunter\n  zwei\n  host = h\n}\n", 3 },
		{ "defaults { password = hunter zwei }\n" ACCT_HEAD "  protocol = pop3\n}\n", 1 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		expect_error(fx, cases[i].text, cases[i].line, "must be quoted");
		assert_null(strstr(fx->err.msg, "hunter"));
		assert_null(strstr(fx->err.msg, "zwei"));
	}
	/* Errors on later lines are reported as usual, after any password. */
	expect_error(fx, "defaults { password = hunter\nhots = x }\n" ACCT_HEAD "  protocol = pop3\n}\n",
		     2, "no such option 'hots'");
	expect_error(fx, "defaults { password = hunter }\n" ACCT_HEAD "  hots = x\n}\n",
		     3, "no such option 'hots'");
	expect_error(fx, ACCT_HEAD "  protocol = pop3\n  password = \"hunter zwei\"\n  hots = x\n}\n",
		     4, "no such option 'hots'");
}

static void
test_durations_and_sizes(void **state)
{
	struct fx *fx = *state;
	static const struct {
		const char *timeout, *size;
		unsigned secs;
		uint64_t bytes;
	} cases[] = {
		{ "1", "0", 1, 0 },
		{ "45s", "512", 45, 512 },
		{ "5m", "64k", 300, 65536 },
		{ "1h", "3M", 3600, 3 * 1048576 },
		{ "60m", "2G", 3600, 2ull * 1073741824 },
	};
	char text[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), ACCT_HEAD "  protocol = pop3\n" ACCT_BODY
			 "  timeout = %s\n  max_size = %s\n}\n", cases[i].timeout, cases[i].size);
		assert_int_equal(load(fx, text, 0600), 0);
		assert_int_equal(fx->cfg->accounts[0].timeout_s, cases[i].secs);
		assert_int_equal(fx->cfg->accounts[0].max_size, cases[i].bytes);
	}
	expect_error(fx, ACCT_HEAD "  protocol = pop3\n  timeout = 61m\n}\n", 3, "duration");
	expect_error(fx, ACCT_HEAD "  protocol = pop3\n  timeout = 1d\n}\n", 3, "duration");
	expect_error(fx, ACCT_HEAD "  protocol = pop3\n  max_size = 99999999999999999999\n}\n", 3,
		     "size");
}

/* A failing load says nothing on stderr: the caller decides what to print. */
static void
test_quiet_stderr(void **state)
{
	struct fx *fx = *state;
	char errpath[128];
	struct stat st;
	int saved, fd;

	snprintf(errpath, sizeof(errpath), "%s/stderr", fx->dir);
	fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);
	close(fd);
	(void)load(fx, "account \"a\" { bogus = 1 }\naccount \"a\" {}\n", 0600);
	(void)load(fx, "account \"a\" { host = \"unterminated }\n", 0600);
	(void)load(fx, "account \"a\" { protocol = pop3 }\naccount \"a\" { }\n", 0600);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	assert_int_equal(stat(errpath, &st), 0);
	unlink(errpath);
	assert_int_equal(st.st_size, 0);
}

/* Up to 1 MiB loads whatever the buffer started at; one byte more is refused. */
static void
test_size_cap(void **state)
{
	static const char acct[] = ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\n";
	struct fx *fx = *state;
	size_t cap = 1024 * 1024;
	char *text = malloc(cap + 2);
	char want[200];

	assert_non_null(text);
	memcpy(text, acct, sizeof(acct) - 1);
	memset(text + sizeof(acct) - 1, '#', cap - (sizeof(acct) - 1));
	text[cap] = '\0';
	assert_int_equal(load(fx, text, 0600), 0);
	assert_non_null(config_find(fx->cfg, "a"));
	text[cap] = '#';
	text[cap + 1] = '\0';
	assert_int_equal(load(fx, text, 0600), -EINVAL);
	snprintf(want, sizeof(want), "%s: larger than 1 MiB", fx->path);
	assert_string_equal(fx->err.msg, want);
	free(text);
}

static void
test_default_path(void **state)
{
	struct fx *fx = *state;
	char want[256], *p;

	p = config_default_path();
	snprintf(want, sizeof(want), "%s/.config/mailpull/config", fx->dir);
	assert_string_equal(p, want);
	free(p);
	setenv("XDG_CONFIG_HOME", "/xdg", 1);
	p = config_default_path();
	assert_string_equal(p, "/xdg/mailpull/config");
	free(p);
	setenv("XDG_CONFIG_HOME", "relative", 1);
	p = config_default_path();
	assert_string_equal(p, want);
	free(p);
	unsetenv("XDG_CONFIG_HOME");
	assert_string_equal(mp_proto_to_string(MP_PROTO_IMAP), "imap");
	assert_string_equal(mp_tls_to_string(MP_TLS_STARTTLS), "starttls");
}

/* The shipped sample must load as it is (the test runs from the repository root). */
static void
test_sample(void **state)
{
	struct fx *fx = *state;
	FILE *f = fopen("conf/mailpull.conf", "re");
	char *text;
	long len;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	assert_true(len > 0);
	rewind(f);
	text = calloc(1, (size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	if (load(fx, text, 0600) != 0)
		print_error("%s\n", fx->err.msg);
	free(text);
	assert_non_null(fx->cfg);
	assert_true(fx->cfg->naccounts >= 2);
}

/* Daemon keys: interval and idle per account, parallel and log global. */
static void
test_daemon_keys(void **state)
{
	struct fx *fx = *state;
	static const char conf[] =
		"parallel = 8\n"
		"log = journal\n"
		"defaults { interval = 10m  idle = yes }\n"
		ACCT_HEAD "  protocol = imap\n" ACCT_BODY "}\n"
		"account p {\n  protocol = pop3\n" ACCT_BODY "  interval = 1s\n}\n"
		"account i {\n  protocol = imap\n" ACCT_BODY "  idle = no\n}\n";
	const struct mp_account *a, *p, *i;
	struct mp_config *old;

	assert_int_equal(load(fx, conf, 0600), 0);
	assert_int_equal(fx->cfg->parallel, 8);
	assert_int_equal(fx->cfg->log, MP_LOG_JOURNAL);
	a = config_find(fx->cfg, "a");
	p = config_find(fx->cfg, "p");
	i = config_find(fx->cfg, "i");
	assert_int_equal(a->interval_s, 600);
	assert_true(a->idle);
	/* idle in defaults is meant for the IMAP accounts only */
	assert_false(p->idle);
	assert_int_equal(p->interval_s, 1);
	assert_false(i->idle);
	assert_false(config_account_equal(a, i));
	assert_true(config_account_equal(a, a));

	/* the same text loads into equal accounts; one changed key makes them differ */
	old = fx->cfg;
	fx->cfg = NULL;
	assert_int_equal(load(fx, conf, 0600), 0);
	assert_true(config_account_equal(config_find(old, "a"), config_find(fx->cfg, "a")));
	config_free(old);
	old = fx->cfg;
	fx->cfg = NULL;
	assert_int_equal(load(fx, "parallel = 8\n" ACCT_HEAD "  protocol = imap\n" ACCT_BODY
			      "  interval = 10m\n  idle = yes\n  timeout = 61\n}\n", 0600), 0);
	assert_false(config_account_equal(config_find(old, "a"), config_find(fx->cfg, "a")));
	config_free(old);

	assert_int_equal(load(fx, ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\n", 0600), 0);
	assert_int_equal(fx->cfg->parallel, 4);
	assert_int_equal(fx->cfg->log, MP_LOG_AUTO);
	assert_int_equal(fx->cfg->accounts[0].interval_s, 300);
	assert_false(fx->cfg->accounts[0].idle);

	expect_error(fx, "parallel = 0\n" ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\n", 1,
		     "parallel \"0\" must be a number from 1 to 64");
	expect_error(fx, "parallel = 65\n" ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\n", 1,
		     "must be a number from 1 to 64");
	expect_error(fx, "log = file\n" ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "}\n", 1,
		     "log \"file\" must be auto, stderr, journal or syslog");
	expect_error(fx, ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "  interval = 0\n}\n", 7,
		     "interval \"0\" must be a duration from 1s to 30d");
	expect_error(fx, ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "  interval = 31d\n}\n", 7,
		     "must be a duration from 1s to 30d");
	expect_error(fx, ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "  idle = yes\n}\n", 7,
		     "idle is an IMAP key; this account uses POP3");
	expect_error(fx, ACCT_HEAD "  protocol = imap\n" ACCT_BODY "  idle = sometimes\n}\n", 7,
		     "idle \"sometimes\" must be yes or no");
	expect_error(fx, ACCT_HEAD "  protocol = pop3\n" ACCT_BODY "  parallel = 2\n}\n", 7,
		     "parallel");
}

/* The sending keys: defaults, overrides, and what an account without smtp_host may not set. */
static void
test_send_keys(void **state)
{
	struct fx *fx = *state;
	const struct mp_account *a, *b, *p;

	assert_int_equal(load(fx, ACCT_HEAD "  protocol = imap\n" ACCT_BODY
			      "  smtp_host = smtp.example.com\n}\n"
			      "account b {\n  protocol = imap\n" ACCT_BODY
			      "  smtp_host = smtp.example.com\n  smtp_tls = starttls\n"
			      "  smtp_user = other\n  smtp_password_command = \"echo y\"\n"
			      "  from = \"me@example.com\"\n  outbox = ~/out\n  save_sent = no\n"
			      "  sent_folder = \"Sent Items\"\n}\n"
			      "account p {\n  protocol = pop3\n" ACCT_BODY "}\n", 0600), 0);
	a = config_find(fx->cfg, "a");
	b = config_find(fx->cfg, "b");
	p = config_find(fx->cfg, "p");
	assert_string_equal(a->smtp_host, "smtp.example.com");
	assert_int_equal(a->smtp_port, 465);
	assert_int_equal(a->smtp_tls, MP_TLS_IMPLICIT);
	assert_string_equal(a->smtp_user, "u");
	assert_null(a->smtp_password_command);
	assert_null(a->from);
	assert_string_equal(a->outbox, "/m/.Outbox");
	assert_int_equal(a->save_sent, MP_SAVE_SENT_AUTO);
	assert_null(a->sent_folder);
	assert_int_equal(b->smtp_port, 587);
	assert_int_equal(b->smtp_tls, MP_TLS_STARTTLS);
	assert_string_equal(b->smtp_user, "other");
	assert_string_equal(b->smtp_password_command, "echo y");
	assert_string_equal(b->from, "me@example.com");
	assert_non_null(strstr(b->outbox, "/out"));
	assert_int_equal(b->outbox[0], '/');
	assert_int_equal(b->save_sent, MP_SAVE_SENT_NO);
	assert_string_equal(b->sent_folder, "Sent Items");
	assert_null(p->smtp_host);
	assert_null(p->outbox);
	assert_false(config_account_equal(a, b));
	assert_string_equal(mp_save_sent_to_string(MP_SAVE_SENT_YES), "yes");

	expect_error(fx, ACCT_HEAD "  protocol = imap\n" ACCT_BODY "  outbox = /o\n}\n", 7,
		     "outbox needs smtp_host");
	expect_error(fx, ACCT_HEAD "  protocol = imap\n" ACCT_BODY
		     "  smtp_host = s\n  smtp_tls = none\n}\n", 8,
		     "smtp_tls \"none\" must be implicit or starttls");
	expect_error(fx, ACCT_HEAD "  protocol = imap\n" ACCT_BODY
		     "  smtp_host = s\n  save_sent = maybe\n}\n", 8,
		     "save_sent \"maybe\" must be auto, yes or no");
	expect_error(fx, ACCT_HEAD "  protocol = pop3\n" ACCT_BODY
		     "  smtp_host = s\n  sent_folder = Sent\n}\n", 8,
		     "sent_folder is an IMAP key");
	expect_error(fx, ACCT_HEAD "  protocol = imap\n" ACCT_BODY
		     "  smtp_host = s\n  smtp_password = x\n  smtp_password_command = y\n}\n", 1,
		     "set only one of smtp_password");
	expect_error(fx, ACCT_HEAD "  protocol = imap\n" ACCT_BODY
		     "  smtp_host = \"a b\"\n}\n", 7, "is not a host name");
}

#define OAUTH_BODY \
	"  protocol = imap\n" \
	"  host = h\n" \
	"  user = u\n" \
	"  maildir = /m\n"

/* oauth2: presets, overrides, the default auth, the token file, and no password. */
static void
test_oauth2_keys(void **state)
{
	struct fx *fx = *state;
	const struct mp_account *g, *m, *c, *p;
	char want[256];

	assert_int_equal(load(fx, "state_dir = /st\n"
			      "defaults { password_command = \"pass x\" }\n"
			      "account \"g@x\" {\n" OAUTH_BODY "  oauth2 = google\n"
			      "  oauth2_client_id = \"id.apps\"\n  oauth2_client_secret = s3\n}\n"
			      "account m {\n" OAUTH_BODY "  oauth2 = Microsoft\n  oauth2_client_id = mid\n"
			      "  auth = \"oauthbearer, xoauth2\"\n  smtp_host = smtp.office365.com\n"
			      "  smtp_tls = starttls\n"
			      "  oauth2_scope = \"https://outlook.office.com/IMAP.AccessAsUser.All "
			      "offline_access\"\n  oauth2_device_url = \"https://dev.example/code\"\n}\n"
			      "account c {\n" OAUTH_BODY "  oauth2 = custom\n  oauth2_client_id = cid\n"
			      "  oauth2_token_url = \"https://127.0.0.1:8443/token\"\n"
			      "  oauth2_auth_url = \"HTTPS://[::1]:8443/auth?x=1\"\n}\n"
			      "account p {\n" OAUTH_BODY "  oauth2 = none\n}\n", 0600), 0);
	g = config_find(fx->cfg, "g@x");
	assert_int_equal(g->oauth2, MP_OAUTH2_GOOGLE);
	assert_string_equal(g->oauth2_token_url, "https://oauth2.googleapis.com/token");
	assert_string_equal(g->oauth2_auth_url, "https://accounts.google.com/o/oauth2/v2/auth");
	assert_null(g->oauth2_device_url);
	assert_string_equal(g->oauth2_scope, "https://mail.google.com/");
	assert_string_equal(g->oauth2_client_id, "id.apps");
	assert_string_equal(g->oauth2_client_secret, "s3");
	assert_string_equal(g->auth, "xoauth2");
	assert_null(g->password_command);
	assert_null(g->password);
	assert_string_equal(g->oauth2_token_file, "/st/g%40x.oauth2");
	m = config_find(fx->cfg, "m");
	assert_int_equal(m->oauth2, MP_OAUTH2_MICROSOFT);
	assert_string_equal(m->oauth2_token_url,
			    "https://login.microsoftonline.com/common/oauth2/v2.0/token");
	assert_string_equal(m->oauth2_auth_url,
			    "https://login.microsoftonline.com/common/oauth2/v2.0/authorize");
	assert_string_equal(m->oauth2_device_url, "https://dev.example/code");
	assert_string_equal(m->oauth2_scope,
			    "https://outlook.office.com/IMAP.AccessAsUser.All offline_access");
	assert_null(m->oauth2_client_secret);
	assert_string_equal(m->auth, "oauthbearer, xoauth2");
	assert_string_equal(m->smtp_user, "u");
	assert_null(m->smtp_password_command);
	c = config_find(fx->cfg, "c");
	assert_int_equal(c->oauth2, MP_OAUTH2_CUSTOM);
	assert_null(c->oauth2_device_url);
	assert_null(c->oauth2_scope);
	assert_string_equal(c->oauth2_auth_url, "HTTPS://[::1]:8443/auth?x=1");
	p = config_find(fx->cfg, "p");
	assert_int_equal(p->oauth2, MP_OAUTH2_NONE);
	assert_null(p->oauth2_token_file);
	assert_null(p->oauth2_token_url);
	assert_string_equal(p->password_command, "pass x");
	assert_false(config_account_equal(g, m));
	assert_true(config_account_equal(g, g));
	assert_string_equal(mp_oauth2_to_string(MP_OAUTH2_MICROSOFT), "microsoft");
	assert_string_equal(mp_oauth2_to_string(MP_OAUTH2_MAX), "?");

	/* the Microsoft preset's scope and device URL, and the default state dir */
	assert_int_equal(load(fx, ACCT_HEAD OAUTH_BODY "  oauth2 = microsoft\n"
			      "  oauth2_client_id = mid\n}\n", 0600), 0);
	m = config_find(fx->cfg, "a");
	assert_string_equal(m->oauth2_device_url,
			    "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode");
	assert_string_equal(m->oauth2_scope, "https://outlook.office.com/IMAP.AccessAsUser.All "
			    "https://outlook.office.com/POP.AccessAsUser.All "
			    "https://outlook.office.com/SMTP.Send offline_access");
	snprintf(want, sizeof(want), "%s/.local/state/mailpull/a.oauth2", fx->dir);
	assert_string_equal(m->oauth2_token_file, want);
}

/* Every change of an oauth2 or client-certificate key makes another account. */
static void
test_new_keys_equal(void **state)
{
	/* each line of the base replaced in turn by its variant */
	static const char *const base[] = {
		"  tls_cert = /c.pem\n", "  tls_key = /k.pem\n", "  oauth2 = custom\n",
		"  oauth2_client_id = id\n", "  oauth2_client_secret = s\n",
		"  oauth2_scope = sc\n", "  oauth2_token_url = \"https://t.example/t\"\n",
		"  oauth2_auth_url = \"https://t.example/a\"\n",
		"  oauth2_device_url = \"https://t.example/d\"\n", "  auth = xoauth2\n",
	};
	static const char *const variant[] = {
		"  tls_cert = /c2.pem\n", "  tls_key = /k2.pem\n", "  oauth2 = google\n",
		"  oauth2_client_id = id2\n", "  oauth2_client_secret = s2\n",
		"  oauth2_scope = sc2\n", "  oauth2_token_url = \"https://t.example/t2\"\n",
		"  oauth2_auth_url = \"https://t.example/a2\"\n",
		"  oauth2_device_url = \"https://t.example/d2\"\n", "  auth = oauthbearer\n",
	};
	struct fx *fx = *state;
	struct mp_config *old;
	char text[2048];

	for (size_t v = 0; v <= ARRAY_SIZE(base); v++) {
		snprintf(text, sizeof(text), ACCT_HEAD OAUTH_BODY);
		for (size_t i = 0; i < ARRAY_SIZE(base); i++)
			strncat(text, i + 1 == v ? variant[i] : base[i], sizeof(text) - strlen(text) - 1);
		strncat(text, "}\n", sizeof(text) - strlen(text) - 1);
		old = fx->cfg;
		fx->cfg = NULL;
		if (load(fx, text, 0600) != 0)
			print_error("%s\n%s\n", text, fx->err.msg);
		assert_non_null(fx->cfg);
		if (v == 0) {
			assert_string_equal(fx->cfg->accounts[0].tls_cert, "/c.pem");
			assert_string_equal(fx->cfg->accounts[0].tls_key, "/k.pem");
		} else {
			/* old holds the base (v == 1) or the previous variant: both differ */
			assert_false(config_account_equal(&old->accounts[0], &fx->cfg->accounts[0]));
		}
		config_free(old);
	}
	/* the same text, an equal account */
	old = fx->cfg;
	fx->cfg = NULL;
	assert_int_equal(load(fx, text, 0600), 0);
	assert_true(config_account_equal(&old->accounts[0], &fx->cfg->accounts[0]));
	config_free(old);
}

/* Client certificates, EXTERNAL and the SCRAM names. */
static void
test_cert_and_auth_names(void **state)
{
	struct fx *fx = *state;
	const struct mp_account *a;
	char want[256];

	assert_int_equal(load(fx, ACCT_HEAD OAUTH_BODY "  tls_cert = ~/c.pem\n"
			      "  tls_key = \"~/k.pem\"\n  auth = external\n}\n", 0600), 0);
	a = config_find(fx->cfg, "a");
	snprintf(want, sizeof(want), "%s/c.pem", fx->dir);
	assert_string_equal(a->tls_cert, want);
	snprintf(want, sizeof(want), "%s/k.pem", fx->dir);
	assert_string_equal(a->tls_key, want);
	assert_string_equal(a->auth, "external");
	assert_null(a->password);
	assert_null(a->password_command);
	assert_null(a->oauth2_token_file);
	/* a certificate alone, with a password login */
	assert_int_equal(load(fx, ACCT_HEAD ACCT_BODY "  protocol = pop3\n  tls_cert = /c.pem\n"
			      "  auth = \"SCRAM-SHA-256-PLUS scram-sha-256 scram-sha-1-plus "
			      "scram-sha-1 scram plain\"\n}\n", 0600), 0);
	a = config_find(fx->cfg, "a");
	assert_string_equal(a->tls_cert, "/c.pem");
	assert_null(a->tls_key);
	/* external with a fallback needs the password for the fallback */
	assert_int_equal(load(fx, ACCT_HEAD ACCT_BODY "  protocol = pop3\n  tls_cert = /c.pem\n"
			      "  auth = \"external plain\"\n}\n", 0600), 0);
	assert_string_equal(fx->cfg->accounts[0].password_command, "echo x");
}

static const struct err_case new_err_cases[] = {
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = yahoo\n}\n", 6,
	  "oauth2 \"yahoo\" must be none, google, microsoft or custom" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = google\n}\n", 1,
	  "oauth2 = google needs oauth2_client_id" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = custom\n  oauth2_client_id = c\n}\n", 1,
	  "oauth2 = custom needs oauth2_token_url" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = custom\n  oauth2_client_id = c\n"
	  "  oauth2_token_url = \"https://t/\"\n}\n", 1,
	  "oauth2 = custom needs oauth2_auth_url or oauth2_device_url" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = custom\n  oauth2_token_url = \"http://127.0.0.1/t\"\n}\n",
	  7, "oauth2_token_url \"http://127.0.0.1/t\" must be an https:// URL" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2_auth_url = \"https://\"\n}\n", 6, "https:// URL" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2_device_url = \"https://a b/\"\n}\n", 6, "https:// URL" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2_device_url = \"https:///x\"\n}\n", 6, "https:// URL" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2_device_url = \"ftp://x/\"\n}\n", 6, "https:// URL" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2_token_url = \"https://id:s3cr3t@t.example/t\"\n}\n", 6,
	  "oauth2_token_url must not hold credentials (user:password@): client credentials go "
	  "in oauth2_client_id / oauth2_client_secret" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2_auth_url = \"https://u@t.example?x=1\"\n}\n", 6,
	  "oauth2_auth_url must not hold credentials" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = google\n  oauth2_client_id = c\n  tls = none\n"
	  "  allow_plaintext = yes\n}\n", 8, "oauth2 needs TLS: with tls = none the access token "
	  "would cross the network in clear" },
	{ ACCT_HEAD OAUTH_BODY "  password = x\n  oauth2_client_id = c\n}\n", 7,
	  "oauth2_client_id needs oauth2 = google, microsoft or custom" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = none\n  password = x\n  oauth2_scope = s\n}\n", 8,
	  "oauth2_scope needs oauth2" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = google\n  oauth2_client_id = c\n"
	  "  password_command = \"pass x\"\n}\n", 8,
	  "password_command would never be used: with oauth2 the secret is an OAuth2 token" },
	{ "defaults { oauth2 = google }\n" ACCT_HEAD OAUTH_BODY "  oauth2_client_id = c\n"
	  "  password = x\n}\n", 8, "password would never be used" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = google\n  oauth2_client_id = c\n"
	  "  auth = \"xoauth2 plain\"\n}\n", 8,
	  "auth may name only xoauth2 and oauthbearer" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = google\n  oauth2_client_id = c\n  tls_cert = /c\n"
	  "  auth = external\n}\n", 9, "auth may name only xoauth2 and oauthbearer" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = google\n  oauth2_client_id = c\n"
	  "  smtp_host = s\n  smtp_password = p\n}\n", 9,
	  "smtp_password would never be used: submission logs in as the account does, "
	  "with its OAuth2 token" },
	{ ACCT_HEAD OAUTH_BODY "  tls_cert = /c\n  auth = external\n"
	  "  smtp_host = s\n  smtp_password_file = /p\n}\n", 9,
	  "smtp_password_file would never be used" },
	{ ACCT_HEAD OAUTH_BODY "  auth = external\n  tls_cert = /c\n  password = x\n}\n", 8,
	  "password would never be used: auth = external logs in with the client certificate" },
	{ ACCT_HEAD OAUTH_BODY "  password = x\n  tls_key = /k\n}\n", 7,
	  "tls_key needs tls_cert" },
	{ ACCT_HEAD OAUTH_BODY "  auth = external\n}\n", 6,
	  "auth = external logs in with a client certificate: set tls_cert" },
	{ ACCT_HEAD OAUTH_BODY "  password = x\n  auth = \"scram external\"\n}\n", 7,
	  "set tls_cert" },
	{ ACCT_HEAD OAUTH_BODY "  password = x\n  tls_cert = relative.pem\n}\n", 7,
	  "tls_cert \"relative.pem\" must be an absolute path" },
	{ ACCT_HEAD OAUTH_BODY "  password = x\n  tls = none\n  allow_plaintext = yes\n"
	  "  tls_cert = /c\n}\n", 9, "tls_cert needs TLS, but tls = none" },
	{ ACCT_HEAD OAUTH_BODY "  password = x\n  auth = scram-sha-512\n}\n", 7,
	  "unknown mechanism \"scram-sha-512\"" },
	{ ACCT_HEAD OAUTH_BODY "  oauth2 = google\n  oauth2_client_id = c\n"
	  "  oauth2_client_secret = \"a\\nb\"\n}\n", 8,
	  "oauth2_client_secret contains a line break" },
};

static void
test_new_key_errors(void **state)
{
	struct fx *fx = *state;

	for (size_t i = 0; i < ARRAY_SIZE(new_err_cases); i++)
		expect_error(fx, new_err_cases[i].text, new_err_cases[i].line,
			     new_err_cases[i].part);
	/* a client secret is a secret: the file holding it must be ours alone */
	assert_int_equal(load(fx, ACCT_HEAD OAUTH_BODY "  oauth2 = google\n"
			      "  oauth2_client_id = c\n  oauth2_client_secret = s\n}\n", 0644),
			 -EACCES);
	assert_non_null(strstr(fx->err.msg, "chmod 600"));
	assert_int_equal(load(fx, ACCT_HEAD OAUTH_BODY "  oauth2 = google\n"
			      "  oauth2_client_id = c\n}\n", 0644), 0);
	/* credentials in an endpoint URL are refused without being quoted */
	assert_int_equal(load(fx, ACCT_HEAD OAUTH_BODY "  oauth2 = custom\n"
			      "  oauth2_client_id = c\n"
			      "  oauth2_device_url = \"https://id:s3cr3t@t.example/d\"\n"
			      "  oauth2_token_url = \"https://t.example/t\"\n}\n", 0600), -EINVAL);
	assert_null(strstr(fx->err.msg, "s3cr3t"));
	/* an '@' past the host is a path or a query, not credentials */
	assert_int_equal(load(fx, ACCT_HEAD OAUTH_BODY "  oauth2 = custom\n"
			      "  oauth2_client_id = c\n"
			      "  oauth2_device_url = \"https://t.example/d/u@x\"\n"
			      "  oauth2_token_url = \"https://t.example/t?for=u@x\"\n}\n", 0600), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secret_override, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_account, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_permissions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secret_not_echoed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unquoted_password, setup, teardown),
		cmocka_unit_test_setup_teardown(test_durations_and_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quiet_stderr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sample, setup, teardown),
		cmocka_unit_test_setup_teardown(test_daemon_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oauth2_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_keys_equal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cert_and_auth_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_key_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
