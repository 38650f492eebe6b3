/*
 * Unit tests for OAuth2: the token endpoint's answers, the token file
 * (round trip, mode, atomic replacement), PKCE, and the access token
 * from the cache or the lack of one. The grants against a provider are
 * tested end to end in tests/integration/test_oauth2.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailpull/oauth2.h"

struct fx {
	char dir[64];
	char path[128];
	struct mp_err err;
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/mp-oauth2-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/sub/a%%40b.oauth2", fx->dir);
	unsetenv("MAILPULL_CRASH_OAUTH2");
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;
	char p[200];

	unlink(fx->path);
	snprintf(p, sizeof(p), "%s.tmp", fx->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s/sub", fx->dir);
	rmdir(p);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static int
parse(const char *json, struct oauth2_token *t)
{
	return oauth2_parse_token(json, strlen(json), t);
}

static void
test_parse_token(void **state)
{
	struct oauth2_token t;

	(void)state;
	assert_int_equal(parse("{\"access_token\":\"ya29.a0-_~+/=\",\"expires_in\":3599,"
			       "\"refresh_token\":\"1//0g\",\"token_type\":\"Bearer\","
			       "\"scope\":\"https://mail.google.com/\"}", &t), 0);
	assert_string_equal(t.access_token, "ya29.a0-_~+/=");
	assert_string_equal(t.refresh_token, "1//0g");
	assert_int_equal(t.expires_in, 3599);
	assert_null(t.error);
	oauth2_token_clear(&t);
	/* no refresh token, no expiry, token_type in any case, expires_in as a string */
	assert_int_equal(parse("{\"access_token\":\"x\",\"token_type\":\"bearer\"}", &t), 0);
	assert_null(t.refresh_token);
	assert_int_equal(t.expires_in, -1);
	oauth2_token_clear(&t);
	assert_int_equal(parse("{\"access_token\":\"x\",\"expires_in\":\"4000\"}", &t), 0);
	assert_int_equal(t.expires_in, 4000);
	oauth2_token_clear(&t);
	/* huge lifetimes are capped; too large for JSON integers is not JSON we take */
	assert_int_equal(parse("{\"access_token\":\"x\",\"expires_in\":9223372036854775807}", &t),
			 0);
	assert_int_equal(t.expires_in, 10LL * 365 * 86400);
	oauth2_token_clear(&t);
	assert_int_equal(parse("{\"access_token\":\"x\",\"expires_in\":\"99999999999999999999999\"}",
			       &t), 0);
	assert_int_equal(t.expires_in, 10LL * 365 * 86400);
	oauth2_token_clear(&t);
	assert_int_equal(parse("{\"access_token\":\"x\",\"expires_in\":99999999999999999999999}", &t),
			 -EPROTO);
	assert_int_equal(parse("{\"access_token\":\"x\",\"expires_in\":-1}", &t), -EPROTO);
	assert_int_equal(parse("{\"access_token\":\"x\",\"expires_in\":1.5}", &t), -EPROTO);
	assert_int_equal(parse("{\"access_token\":\"x\",\"expires_in\":\"12a\"}", &t), -EPROTO);
}

static void
test_parse_errors(void **state)
{
	static const char *const bad[] = {
		"", "not json", "[]", "\"x\"", "{}", "{\"access_token\":\"\"}",
		"{\"access_token\":1}", "{\"access_token\":null}",
		"{\"access_token\":\"a b\"}", "{\"access_token\":\"a\\u0001b\"}",
		"{\"access_token\":\"a\\nb\"}", "{\"access_token\":\"a\\u0000b\"}",
		"{\"access_token\":\"caf\\u00e9\"}", "{\"access_token\":\"\xff\"}",
		"{\"access_token\":\"x\",\"refresh_token\":\"a\\tb\"}",
		"{\"access_token\":\"x\",\"refresh_token\":7}",
		"{\"access_token\":\"x\",\"token_type\":\"mac\"}",
		"{\"access_token\":\"x\",\"token_type\":1}",
		"{\"access_token\":\"x\",\"access_token\":\"y\"}",
		"{\"access_token\":\"x\"} trailing", "{\"access_token\":\"x\"",
		"{\"error\":1}", "{\"error\":\"invalid_grant\",\"error_description\":[]}",
		"{\"error\":\"a\",\"error\":\"b\"}",
	};
	struct oauth2_token t;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		int r = parse(bad[i], &t);

		if (r != -EPROTO)
			print_error("%s: %d\n", bad[i], r);
		assert_int_equal(r, -EPROTO);
	}
	assert_int_equal(parse("{\"error\":\"invalid_grant\",\"error_description\":"
			       "\"Token has been expired or revoked.\"}", &t), -EACCES);
	assert_string_equal(t.error, "invalid_grant");
	assert_string_equal(t.error_description, "Token has been expired or revoked.");
	assert_null(t.access_token);
	oauth2_token_clear(&t);
	/* the error wins over a token beside it; slow_down's interval (RFC 8628) */
	assert_int_equal(parse("{\"error\":\"slow_down\",\"interval\":10,\"access_token\":\"x\"}",
			       &t), -EACCES);
	assert_string_equal(t.error, "slow_down");
	assert_int_equal(t.interval, 10);
	assert_null(t.error_description);
	assert_null(t.access_token);
	oauth2_token_clear(&t);
	assert_null(t.error);
	oauth2_token_clear(NULL);
}

static void
test_tokens_round_trip(void **state)
{
	struct fx *fx = *state;
	struct oauth2_tokens t = { .refresh_token = "R1", .access_token = "A1",
				   .expires_at = 1700000000 };
	struct oauth2_tokens got = { 0 };
	struct stat st;
	char text[256];
	FILE *f;
	size_t n;

	assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), -ENOENT);
	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), 0);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	f = fopen(fx->path, "re");
	assert_non_null(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	assert_string_equal(text, "mailpull-oauth2 1\nrefresh_token R1\naccess_token A1\n"
			    "expires_at 1700000000\n");
	assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), 0);
	assert_string_equal(got.refresh_token, "R1");
	assert_string_equal(got.access_token, "A1");
	assert_int_equal(got.expires_at, 1700000000);
	oauth2_tokens_clear(&got);
	/* no refresh token */
	t.refresh_token = NULL;
	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), 0);
	assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), 0);
	assert_null(got.refresh_token);
	assert_string_equal(got.access_token, "A1");
	oauth2_tokens_clear(&got);
	/* a token that could break the file is refused, and the old file stays */
	t.access_token = "A\nrefresh_token X";
	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), -EINVAL);
	assert_int_equal(fx->err.ex, MP_EX_IOERR);
	assert_null(strstr(fx->err.msg, "refresh_token X"));
	assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), 0);
	assert_string_equal(got.access_token, "A1");
	oauth2_tokens_clear(&got);
	oauth2_tokens_clear(NULL);
}

/* Tokens of a few kilobytes (Microsoft's are) are written whole, sized exactly. */
static void
test_tokens_long(void **state)
{
	struct fx *fx = *state;
	static char rt[6001], at[3001];
	struct oauth2_tokens t = { .refresh_token = rt, .access_token = at, .expires_at = 5 };
	struct oauth2_tokens got = { 0 };
	struct stat st;

	memset(rt, 'r', sizeof(rt) - 1);
	memset(at, 'a', sizeof(at) - 1);
	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), 0);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_size, strlen("mailpull-oauth2 1\nrefresh_token \naccess_token \n"
					    "expires_at 5\n") + 6000 + 3000);
	assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), 0);
	assert_string_equal(got.refresh_token, rt);
	assert_string_equal(got.access_token, at);
	assert_int_equal(got.expires_at, 5);
	oauth2_tokens_clear(&got);
}

static void
write_text(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void
test_tokens_bad_files(void **state)
{
	static const struct {
		const char *text;
		int code;
	} cases[] = {
		{ "", -EBADMSG },
		{ "mailpull-oauth2 1", -EBADMSG },
		{ "mailpull-state 1\n", -EBADMSG },
		{ "mailpull-oauth2 0\n", -EBADMSG },
		{ "mailpull-oauth2 2\nrefresh_token R\n", -EINVAL },
		{ "mailpull-oauth2 1\nrefresh_token\n", -EBADMSG },
		{ "mailpull-oauth2 1\nrefresh_token a b\n", -EBADMSG },
		{ "mailpull-oauth2 1\nrefresh_token R\nrefresh_token S\n", -EBADMSG },
		{ "mailpull-oauth2 1\nexpires_at -5\n", -EBADMSG },
		{ "mailpull-oauth2 1\nexpires_at 99999999999999999999\n", -EBADMSG },
	};
	struct fx *fx = *state;
	struct oauth2_tokens got = { 0 };
	char sub[128];

	snprintf(sub, sizeof(sub), "%s/sub", fx->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int r;

		write_text(fx->path, cases[i].text, 0600);
		mp_err_clear(&fx->err);
		r = oauth2_tokens_load(fx->path, &got, &fx->err);
		if (r != cases[i].code)
			print_error("%s: %d\n", cases[i].text, r);
		assert_int_equal(r, cases[i].code);
		assert_non_null(strstr(fx->err.msg, fx->path));
	}
	/* unknown keys of the same version are skipped */
	write_text(fx->path, "mailpull-oauth2 1\nrefresh_token R\nlater_key v w\n", 0600);
	assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), 0);
	assert_string_equal(got.refresh_token, "R");
	assert_null(got.access_token);
	assert_int_equal(got.expires_at, 0);
	oauth2_tokens_clear(&got);
}

/* A token file others can read or write is refused, with the chmod that fixes it. */
static void
test_tokens_mode(void **state)
{
	static const mode_t bad[] = { 0640, 0604, 0620, 0602, 0644, 0660 };
	struct fx *fx = *state;
	struct oauth2_tokens t = { .refresh_token = "R1", .expires_at = 1 }, got = { 0 };
	char want[256];

	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), 0);
	snprintf(want, sizeof(want), "run: chmod 600 %s", fx->path);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(chmod(fx->path, bad[i]), 0);
		mp_err_clear(&fx->err);
		assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), -EACCES);
		assert_int_equal(fx->err.ex, MP_EX_CONFIG);
		assert_non_null(strstr(fx->err.msg, want));
		assert_null(strstr(fx->err.msg, "R1"));
	}
	assert_int_equal(chmod(fx->path, 0400), 0);
	assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), 0);
	oauth2_tokens_clear(&got);
	/* saving over a read-only file of ours replaces it, mode 0600 again */
	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), 0);
	assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), 0);
	oauth2_tokens_clear(&got);
}

/*
 * A reader never sees a partial file while a writer replaces it again and
 * again: every load gives one whole version or the other.
 */
static void
test_tokens_atomic(void **state)
{
	struct fx *fx = *state;
	static char big_a[4000], big_b[4000];
	struct oauth2_tokens a = { .refresh_token = big_a, .access_token = "A", .expires_at = 1 };
	struct oauth2_tokens b = { .refresh_token = big_b, .access_token = "B", .expires_at = 2 };
	pid_t pid;
	int status;

	memset(big_a, 'a', sizeof(big_a) - 1);
	memset(big_b, 'b', sizeof(big_b) - 1);
	assert_int_equal(oauth2_tokens_save(fx->path, &a, &fx->err), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (int i = 0; i < 200; i++)
			if (oauth2_tokens_save(fx->path, i % 2 ? &a : &b, NULL) < 0)
				_exit(1);
		_exit(0);
	}
	for (int i = 0; i < 2000; i++) {
		struct oauth2_tokens got = { 0 };
		struct mp_err err = { 0 };
		int r = oauth2_tokens_load(fx->path, &got, &err);

		if (r != 0)
			print_error("load: %d %s\n", r, err.msg);
		assert_int_equal(r, 0);
		assert_non_null(got.refresh_token);
		assert_non_null(got.access_token);
		if (got.expires_at == 1) {
			assert_string_equal(got.refresh_token, big_a);
			assert_string_equal(got.access_token, "A");
		} else {
			assert_int_equal(got.expires_at, 2);
			assert_string_equal(got.refresh_token, big_b);
			assert_string_equal(got.access_token, "B");
		}
		oauth2_tokens_clear(&got);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* RFC 7636 appendix B. */
static void
test_pkce(void **state)
{
	char c[44];

	(void)state;
	oauth2_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", c);
	assert_string_equal(c, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static void
account(struct fx *fx, struct mp_account *a)
{
	*a = (struct mp_account){
		.name = "a@b", .oauth2 = MP_OAUTH2_CUSTOM, .oauth2_token_file = fx->path,
		/* a port nothing listens on: a refresh must fail to connect */
		.oauth2_token_url = "https://127.0.0.1:1/token", .oauth2_client_id = "cid",
		.timeout_s = 5,
	};
}

static void
test_access_token(void **state)
{
	struct fx *fx = *state;
	struct oauth2_tokens t = { .refresh_token = "R1", .access_token = "A1" };
	struct oauth2_tokens got = { 0 };
	struct mp_account a;
	char *tok = NULL;

	account(fx, &a);
	/* never authorized */
	assert_int_equal(oauth2_access_token(&a, false, &tok, NULL, &fx->err), -ENOENT);
	assert_int_equal(fx->err.ex, MP_EX_NOPERM);
	assert_non_null(strstr(fx->err.msg, "run mailpull authorize a@b"));
	/* a cached token with more than a minute left */
	t.expires_at = (int64_t)time(NULL) + 120;
	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), 0);
	mp_err_clear(&fx->err);
	assert_int_equal(oauth2_access_token(&a, false, &tok, NULL, &fx->err), 0);
	assert_string_equal(tok, "A1");
	free(tok);
	tok = NULL;
	/* less than a minute left: refreshed, here against an endpoint that is down */
	t.expires_at = (int64_t)time(NULL) + 30;
	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), 0);
	assert_int_equal(oauth2_access_token(&a, false, &tok, NULL, &fx->err), -ECONNREFUSED);
	assert_int_equal(fx->err.ex, MP_EX_TEMPFAIL);
	assert_null(strstr(fx->err.msg, "R1"));
	assert_null(tok);
	/* the tokens are kept as they were */
	assert_int_equal(oauth2_tokens_load(fx->path, &got, &fx->err), 0);
	assert_string_equal(got.refresh_token, "R1");
	oauth2_tokens_clear(&got);
	/* expired and nothing to refresh with */
	t.refresh_token = NULL;
	t.expires_at = 1;
	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), 0);
	mp_err_clear(&fx->err);
	assert_int_equal(oauth2_access_token(&a, false, &tok, NULL, &fx->err), -EACCES);
	assert_int_equal(fx->err.ex, MP_EX_NOPERM);
	assert_non_null(strstr(fx->err.msg, "run mailpull authorize a@b again"));
	/* an http:// endpoint is never asked (the configuration refuses it too) */
	t.refresh_token = "R1";
	assert_int_equal(oauth2_tokens_save(fx->path, &t, &fx->err), 0);
	a.oauth2_token_url = "http://127.0.0.1:1/token";
	mp_err_clear(&fx->err);
	assert_int_equal(oauth2_access_token(&a, false, &tok, NULL, &fx->err), -EINVAL);
	assert_int_equal(fx->err.ex, MP_EX_CONFIG);
	/* not an oauth2 account */
	a.oauth2 = MP_OAUTH2_NONE;
	mp_err_clear(&fx->err);
	assert_int_equal(oauth2_access_token(&a, false, &tok, NULL, &fx->err), -EINVAL);
	assert_int_equal(oauth2_authorize(&a, stdin, stdout, &fx->err), -EINVAL);
}

static void
test_presets(void **state)
{
	const struct oauth2_preset *g = oauth2_preset(MP_OAUTH2_GOOGLE);
	const struct oauth2_preset *m = oauth2_preset(MP_OAUTH2_MICROSOFT);

	(void)state;
	assert_string_equal(g->token_url, "https://oauth2.googleapis.com/token");
	assert_string_equal(g->auth_url, "https://accounts.google.com/o/oauth2/v2/auth");
	assert_null(g->device_url);
	assert_string_equal(g->scope, "https://mail.google.com/");
	assert_string_equal(m->device_url,
			    "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode");
	assert_non_null(strstr(m->scope, "offline_access"));
	assert_null(oauth2_preset(MP_OAUTH2_CUSTOM));
	assert_null(oauth2_preset(MP_OAUTH2_NONE));
}

/* Reads one line from f into buf (without its newline); fails the test at EOF. */
static void
read_line(FILE *f, char *buf, size_t size)
{
	assert_non_null(fgets(buf, (int)size, f));
	buf[strcspn(buf, "\n")] = '\0';
}

/* The value of key in the query of url, into buf. */
static void
query_value(const char *url, const char *key, char *buf, size_t size)
{
	char pat[40];
	const char *p;

	snprintf(pat, sizeof(pat), "&%s=", key);
	p = strstr(url, pat);
	assert_non_null(p);
	p += strlen(pat);
	snprintf(buf, size, "%.*s", (int)strcspn(p, "&"), p);
}

/*
 * The redirect grant with the answer pasted on the terminal: a line that
 * is no address and one with another state are refused with a line each
 * and the wait goes on; the right one ends the wait and the code goes to
 * the token endpoint (down here: the grant fails to connect, nothing is
 * saved). Run in a child with pipes for its terminal.
 */
static void
test_authorize_paste(void **state)
{
	struct fx *fx = *state;
	int to_child[2], from_child[2], status;
	char line[4096], st[64], paste[256];
	struct mp_account a;
	FILE *in, *out;
	pid_t pid;

	account(fx, &a);
	a.oauth2_auth_url = "https://auth.example/authorize?tenant=x";
	a.oauth2_scope = "mail offline";
	assert_int_equal(pipe(to_child), 0);
	assert_int_equal(pipe(from_child), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct mp_err err = { 0 };
		int r;

		close(to_child[1]);
		close(from_child[0]);
		in = fdopen(to_child[0], "r");
		out = fdopen(from_child[1], "w");
		r = oauth2_authorize(&a, in, out, &err);
		fprintf(out, "END %d %d %s\n", r, err.ex, err.msg);
		fclose(out);
		_exit(0);
	}
	close(to_child[0]);
	close(from_child[1]);
	in = fdopen(from_child[0], "r");
	out = fdopen(to_child[1], "w");
	read_line(in, line, sizeof(line));
	assert_non_null(strstr(line, "account a@b"));
	read_line(in, line, sizeof(line));
	snprintf(paste, sizeof(paste), "URL: https://auth.example/authorize?tenant=x&"
		 "response_type=code&client_id=cid&redirect_uri=http%%3A%%2F%%2F127.0.0.1%%3A");
	assert_int_equal(strncmp(line, paste, strlen(paste)), 0);
	assert_non_null(strstr(line, "&scope=mail%20offline&state="));
	assert_non_null(strstr(line, "&code_challenge_method=S256"));
	assert_null(strstr(line, "access_type"));
	query_value(line, "state", st, sizeof(st));
	read_line(in, line, sizeof(line));
	assert_non_null(strstr(line, "paste here"));

	fputs("not an address\n", out);
	fflush(out);
	read_line(in, line, sizeof(line));
	assert_non_null(strstr(line, "Paste the whole address"));
	fputs("http://127.0.0.1:9/?code=c1&state=forged\n", out);
	fflush(out);
	read_line(in, line, sizeof(line));
	assert_non_null(strstr(line, "the state does not match"));
	snprintf(paste, sizeof(paste), "http://127.0.0.1:9/?state=%s&code=c%%2F1&scope=x\n", st);
	fputs(paste, out);
	fflush(out);
	read_line(in, line, sizeof(line));
	if (strncmp(line, "END ", 4) != 0)
		print_error("%s\n", line);
	snprintf(paste, sizeof(paste), "END %d %d ", -ECONNREFUSED, MP_EX_TEMPFAIL);
	assert_int_equal(strncmp(line, paste, strlen(paste)), 0);
	assert_non_null(strstr(line, "https://127.0.0.1:1/token"));
	fclose(out);
	fclose(in);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(access(fx->path, F_OK), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_token),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test_setup_teardown(test_tokens_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tokens_long, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tokens_bad_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tokens_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tokens_atomic, setup, teardown),
		cmocka_unit_test(test_pkce),
		cmocka_unit_test_setup_teardown(test_access_token, setup, teardown),
		cmocka_unit_test(test_presets),
		cmocka_unit_test_setup_teardown(test_authorize_paste, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
