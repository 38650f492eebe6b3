/*
 * Built-in OAuth2 (RFC 6749): the token file, the token endpoint's
 * answers, the refresh grant, and the first grant on a terminal: the
 * device authorization grant (RFC 8628) or the authorization code grant
 * with PKCE (RFC 7636) and a loopback redirect (RFC 8252).
 *
 * Every token answer is saved before anything uses it: the refresh token
 * a provider rotates may be the only valid one left, so it must be
 * durable before the old file goes (oauth2_tokens_save() renames the new
 * file over the old, never in place). A provider that answers a refresh
 * without a refresh token keeps the old one valid (RFC 6749 section 6),
 * so the old one is kept.
 *
 * Crash point for the tests: MAILPULL_CRASH_OAUTH2=1 makes the process
 * _exit(101) right after a token answer was received and parsed, before
 * the token file is written (token_received()), so a test can check that
 * the refresh token on disk is still the one that worked.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mailpull/log.h"
#include "mailpull/oauth2.h"
#include "mailpull/util.h"
#include "http.h"

#define TOKEN_MAGIC "mailpull-oauth2"
#define TOKEN_VERSION 1
#define TOKEN_FILE_MAX (64 * 1024)
/* An access token is used only while it has more than this left. */
#define ACCESS_MARGIN_S 60
/* expires_in when the provider gives none (RFC 6749 5.1 only recommends it). */
#define EXPIRES_DEFAULT_S 3600
/* A lifetime beyond this is taken as this: no overflow, and a bad one is noticed in time. */
#define EXPIRES_MAX_S (10LL * 365 * 86400)
/* RFC 8628 section 3.2: the polling interval when the provider gives none. */
#define DEVICE_INTERVAL_S 5
#define DEVICE_INTERVAL_MAX_S 60
#define DEVICE_EXPIRES_MAX_S 3600
/* The loopback redirect: the whole wait, one request's wait, one request's size. */
#define REDIRECT_WAIT_S 600
#define REQUEST_WAIT_S 10
#define REQUEST_MAX 8192

/* ---- parsing the token endpoint's answers ---- */

void
oauth2_token_clear(struct oauth2_token *t)
{
	if (!t)
		return;
	util_free_secret(t->access_token);
	util_free_secret(t->refresh_token);
	free(t->error);
	free(t->error_description);
	*t = (struct oauth2_token){ .expires_in = -1, .interval = -1 };
}

/* A token as it may appear in a SASL response and the token file: printable ASCII, no space. */
static bool
token_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/*
 * An optional string member: 0 and *ret NULL when absent, 0 and a copy
 * when a string, -EPROTO for any other type.
 */
static int
json_str(json_t *o, const char *key, char **ret)
{
	json_t *v = json_object_get(o, key);

	*ret = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return -EPROTO;
	*ret = util_strndup(json_string_value(v), json_string_length(v));
	return *ret ? 0 : -ENOMEM;
}

/*
 * An optional number of seconds: an integer, or a string of digits (as
 * some providers send expires_in), capped at EXPIRES_MAX_S; -1 when
 * absent. -EPROTO for a negative number or anything else.
 */
static int
json_seconds(json_t *o, const char *key, int64_t *ret)
{
	json_t *v = json_object_get(o, key);
	uint64_t u;
	int r;

	*ret = -1;
	if (!v)
		return 0;
	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);

		if (i < 0)
			return -EPROTO;
		*ret = i > EXPIRES_MAX_S ? EXPIRES_MAX_S : (int64_t)i;
		return 0;
	}
	if (!json_is_string(v))
		return -EPROTO;
	r = util_parse_u64(json_string_value(v), json_string_length(v), &u);
	if (r == -EINVAL)
		return -EPROTO;
	/* -ERANGE: too many digits for 64 bits, capped as any large number */
	*ret = r < 0 || u > EXPIRES_MAX_S ? EXPIRES_MAX_S : (int64_t)u;
	return 0;
}

/* The error answer of RFC 6749 section 5.2: error, error_description, interval (RFC 8628). */
static int
parse_error(json_t *o, struct oauth2_token *t)
{
	int r;

	if ((r = json_str(o, "error", &t->error)) < 0 ||
	    (r = json_str(o, "error_description", &t->error_description)) < 0 ||
	    (r = json_seconds(o, "interval", &t->interval)) < 0)
		return r;
	return -EACCES;
}

static int
parse_success(json_t *o, struct oauth2_token *t)
{
	json_t *type = json_object_get(o, "token_type");
	int r;

	if ((r = json_str(o, "access_token", &t->access_token)) < 0 ||
	    (r = json_str(o, "refresh_token", &t->refresh_token)) < 0 ||
	    (r = json_seconds(o, "expires_in", &t->expires_in)) < 0)
		return r;
	if (!t->access_token || !token_ok(t->access_token) ||
	    (t->refresh_token && !token_ok(t->refresh_token)))
		return -EPROTO;
	/* RFC 6749 7.1: only Bearer tokens go into XOAUTH2 and OAUTHBEARER */
	if (type && (!json_is_string(type) || strcasecmp(json_string_value(type), "Bearer") != 0))
		return -EPROTO;
	return 0;
}

int
oauth2_parse_token(const char *json, size_t len, struct oauth2_token *ret)
{
	struct oauth2_token t = { .expires_in = -1, .interval = -1 };
	json_error_t jerr;
	json_t *o;
	int r;

	o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o)
		return json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM : -EPROTO;
	if (!json_is_object(o))
		r = -EPROTO;
	else if (json_object_get(o, "error"))
		r = parse_error(o, &t);
	else
		r = parse_success(o, &t);
	json_decref(o);
	if (r == -EACCES && !t.error)
		r = -EPROTO;
	if (r < 0 && r != -EACCES) {
		oauth2_token_clear(&t);
		return r;
	}
	*ret = t;
	return r;
}

/* ---- the token file ---- */

void
oauth2_tokens_clear(struct oauth2_tokens *t)
{
	if (!t)
		return;
	util_free_secret(t->refresh_token);
	util_free_secret(t->access_token);
	*t = (struct oauth2_tokens){ 0 };
}

/* One "KEY VALUE" line of the token file into t. */
static int
tokens_line(char *line, struct oauth2_tokens *t)
{
	char *v = strchr(line, ' ');
	char **dst = NULL;
	uint64_t u;

	if (!v)
		return -EBADMSG;
	*v++ = '\0';
	if (strcmp(line, "refresh_token") == 0)
		dst = &t->refresh_token;
	else if (strcmp(line, "access_token") == 0)
		dst = &t->access_token;
	if (dst) {
		if (*dst || !token_ok(v))
			return -EBADMSG;
		*dst = strdup(v);
		return *dst ? 0 : -ENOMEM;
	}
	if (strcmp(line, "expires_at") == 0) {
		if (util_parse_u64(v, strlen(v), &u) < 0 || u > INT64_MAX)
			return -EBADMSG;
		t->expires_at = (int64_t)u;
	}
	/* another key: written by a later release of the same version; ignored */
	return 0;
}

static int
tokens_parse(const char *path, char *buf, size_t len, struct oauth2_tokens *t,
	     struct mp_err *err)
{
	char *line = buf, *nl;
	uint64_t version;
	int r = 0;

	if (memchr(buf, '\0', len) || len == 0 || buf[len - 1] != '\n')
		return mp_err_set(err, -EBADMSG, MP_EX_IOERR, "%s: not a mailpull token file, or "
				  "damaged", path);
	for (unsigned n = 1; r == 0 && (nl = strchr(line, '\n')); n++, line = nl + 1) {
		*nl = '\0';
		if (n > 1) {
			r = tokens_line(line, t);
			continue;
		}
		if (strncmp(line, TOKEN_MAGIC " ", sizeof(TOKEN_MAGIC)) != 0 ||
		    util_parse_u64(line + sizeof(TOKEN_MAGIC), strlen(line + sizeof(TOKEN_MAGIC)),
				   &version) < 0 || version == 0)
			r = -EBADMSG;
		else if (version > TOKEN_VERSION)
			return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "%s: token file version %"
					  PRIu64 " is newer than this mailpull reads (%d)", path,
					  version, TOKEN_VERSION);
	}
	if (r == -ENOMEM)
		return mp_err_oom(err);
	if (r < 0)
		return mp_err_set(err, -EBADMSG, MP_EX_IOERR, "%s: not a mailpull token file, or "
				  "damaged; run mailpull authorize again", path);
	return 0;
}

/* The token file must be ours alone, as a configuration holding a password. */
static int
tokens_check_mode(const char *path, const struct stat *st, struct mp_err *err)
{
	if (!S_ISREG(st->st_mode))
		return mp_err_set(err, -EACCES, MP_EX_CONFIG, "%s: not a regular file", path);
	if (st->st_uid != geteuid())
		return mp_err_set(err, -EACCES, MP_EX_CONFIG, "%s: owned by uid %lu, not by the "
				  "user running mailpull (uid %lu)", path,
				  (unsigned long)st->st_uid, (unsigned long)geteuid());
	if (st->st_mode & 077)
		return mp_err_set(err, -EACCES, MP_EX_CONFIG, "%s: holds OAuth2 tokens and is "
				  "open to %s; run: chmod 600 %s", path,
				  (st->st_mode & 007) ? "others" : "its group", path);
	return 0;
}

int
oauth2_tokens_load(const char *path, struct oauth2_tokens *ret, struct mp_err *err)
{
	struct oauth2_tokens t = { 0 };
	char *buf = NULL;
	size_t len = 0;
	struct stat st;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		return -ENOENT;
	if (fd < 0)
		return mp_err_set(err, errno == ELOOP ? -EACCES : -errno, errno == ELOOP ?
				  MP_EX_CONFIG : MP_EX_IOERR, "%s: %s", path, strerror(errno));
	r = fstat(fd, &st) < 0 ? mp_err_set(err, -errno, MP_EX_IOERR, "%s: %s", path,
					     strerror(errno)) : tokens_check_mode(path, &st, err);
	if (r == 0 && st.st_size > TOKEN_FILE_MAX)
		r = mp_err_set(err, -EBADMSG, MP_EX_IOERR, "%s: larger than a token file", path);
	if (r == 0 && !(buf = malloc(TOKEN_FILE_MAX + 1)))
		r = mp_err_oom(err);
	while (r == 0) {
		ssize_t n = read(fd, buf + len, TOKEN_FILE_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = mp_err_set(err, -errno, MP_EX_IOERR, "%s: %s", path, strerror(errno));
		else if (n == 0)
			break;
		else if ((len += (size_t)n) > TOKEN_FILE_MAX)
			r = mp_err_set(err, -EBADMSG, MP_EX_IOERR, "%s: larger than a token file",
				       path);
	}
	close(fd);
	if (r == 0) {
		buf[len] = '\0';
		r = tokens_parse(path, buf, len, &t, err);
	}
	http_free(buf, len);
	if (r < 0) {
		oauth2_tokens_clear(&t);
		return r;
	}
	*ret = t;
	return 0;
}

/*
 * The file's text (a secret: the caller wipes it). Sized first and
 * written once into its own buffer: asprintf() may grow its buffer and
 * leave copies of the tokens in freed memory.
 */
#define TOKENS_FMT TOKEN_MAGIC " %d\n%s%s%s%s%s%sexpires_at %" PRId64 "\n"
#define TOKENS_ARGS(t) TOKEN_VERSION, \
	(t)->refresh_token ? "refresh_token " : "", \
	(t)->refresh_token ? (t)->refresh_token : "", (t)->refresh_token ? "\n" : "", \
	(t)->access_token ? "access_token " : "", \
	(t)->access_token ? (t)->access_token : "", (t)->access_token ? "\n" : "", \
	(t)->expires_at < 0 ? (int64_t)0 : (t)->expires_at

static int
tokens_format(const struct oauth2_tokens *t, char **ret, size_t *ret_len)
{
	char *s;
	int n;

	if ((t->refresh_token && !token_ok(t->refresh_token)) ||
	    (t->access_token && !token_ok(t->access_token)))
		return -EINVAL;
	n = snprintf(NULL, 0, TOKENS_FMT, TOKENS_ARGS(t));
	if (n < 0)
		return -EINVAL;
	s = malloc((size_t)n + 1);
	if (!s)
		return -ENOMEM;
	if (snprintf(s, (size_t)n + 1, TOKENS_FMT, TOKENS_ARGS(t)) != n) {
		free(s);
		return -EINVAL;
	}
	*ret = s;
	*ret_len = (size_t)n;
	return 0;
}

/* Writes text into tmp (0600), synced. 0 or -errno. */
static int
write_tmp(const char *tmp, const char *text, size_t len)
{
	int fd, r;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
	if (fd < 0)
		return -errno;
	/* a leftover tmp file of a crashed run may have another mode */
	r = fchmod(fd, 0600) < 0 ? -errno : 0;
	if (r == 0)
		r = util_write_all(fd, text, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

int
oauth2_tokens_save(const char *path, const struct oauth2_tokens *t, struct mp_err *err)
{
	char *text = NULL, *tmp = NULL, *dir = NULL, *slash;
	size_t len = 0;
	int r;

	r = tokens_format(t, &text, &len);
	if (r == -EINVAL)
		return mp_err_set(err, r, MP_EX_IOERR, "%s: a token holding a byte that is not "
				  "printable ASCII is not saved", path);
	if (r < 0 || asprintf(&tmp, "%s.tmp", path) < 0 || !(dir = strdup(path))) {
		http_free(text, len);
		free(r < 0 ? NULL : tmp);
		return mp_err_oom(err);
	}
	/* the configuration makes path absolute: STATE_DIR/NAME.oauth2 */
	slash = strrchr(dir, '/');
	if (slash)
		slash[slash == dir ? 1 : 0] = '\0';
	r = slash ? util_mkdir_p(dir, 0700) : 0;
	if (r == 0)
		r = write_tmp(tmp, text, len);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r == 0 && slash)
		r = util_fsync_dir(dir);
	if (r < 0) {
		mp_err_set(err, r, MP_EX_IOERR, "cannot save the OAuth2 tokens in %s: %s", path,
			   strerror(-r));
		(void)unlink(tmp);
	}
	http_free(text, len);
	free(tmp);
	free(dir);
	return r;
}

/* ---- PKCE, random strings ---- */

/* base64url without padding (RFC 4648 section 5, RFC 7636 appendix A) into out. */
static void
b64url(const unsigned char *in, size_t n, char *out)
{
	static const char a[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint32_t bits = 0;
	unsigned nbits = 0;

	for (size_t i = 0; i < n; i++) {
		bits = (bits << 8) | in[i];
		nbits += 8;
		while (nbits >= 6) {
			nbits -= 6;
			*out++ = a[(bits >> nbits) & 63];
		}
	}
	if (nbits)
		*out++ = a[(bits << (6 - nbits)) & 63];
	*out = '\0';
}

void
oauth2_pkce_challenge(const char *verifier, char ret[44])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)verifier, strlen(verifier), md);
	b64url(md, sizeof(md), ret);
}

/* n random bytes as base64url into out (4n/3 + 2 bytes). 0 or -errno. */
static int
random_b64url(size_t n, char *out)
{
	unsigned char b[64];
	size_t got = 0;

	while (got < n) {
		ssize_t r = getrandom(b + got, n - got, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		got += (size_t)r;
	}
	b64url(b, n, out);
	explicit_bzero(b, sizeof(b));
	return 0;
}

/* ---- talking to the token endpoint ---- */

/*
 * POSTs form to url and parses the answer. 0 with a token in *ret;
 * -EACCES with the error answer in *ret (error set); or an error recorded
 * (5xx: -EIO, MP_EX_TEMPFAIL; not a token answer: -EPROTO).
 */
static int
post_token(const struct mp_account *a, const char *url, const char *form, size_t len,
	   struct oauth2_token *ret, struct mp_err *err)
{
	struct http_req req = { .url = url, .ca_file = a->tls_ca_file, .timeout_s = a->timeout_s,
				.form = form, .len = len };
	char *body = NULL;
	size_t blen = 0;
	long status = 0;
	int r;

	r = http_post(&req, &status, &body, &blen, err);
	if (r < 0)
		return r;
	log_acct(LOG_LVL_DEBUG, a->name, NULL, "account %s: OAuth2 POST %s: HTTP %ld", a->name,
		 url, status);
	if (status >= 500) {
		r = mp_err_set(err, -EIO, MP_EX_TEMPFAIL, "OAuth2 endpoint %s: HTTP %ld", url,
			       status);
	} else {
		r = oauth2_parse_token(body, blen, ret);
		if (r == -ENOMEM)
			mp_err_oom(err);
		else if (r == 0 && status != 200)
			r = -EPROTO;
		if (r == -EPROTO) {
			oauth2_token_clear(ret);
			mp_err_set(err, r, MP_EX_PROTOCOL, "OAuth2 endpoint %s: HTTP %ld without "
				   "a token answer", url, status);
		}
	}
	http_free(body, blen);
	return r;
}

/*
 * The answer of an endpoint that said no, as -EACCES (MP_EX_NOPERM): what
 * (our words) says what was refused, then the error code, sanitized, and
 * for again (an account name) what to do; the provider's description
 * apart from ours.
 */
static int
refused(const struct oauth2_token *t, struct mp_err *err, const char *what, const char *again)
{
	const char *d = t->error_description ? t->error_description : "";
	char code[48];

	util_sanitize(code, sizeof(code), t->error, strlen(t->error));
	return mp_err_set_srv(err, -EACCES, MP_EX_NOPERM, d, strlen(d), "%s (%s)%s%s%s", what,
			      code, again ? ": run mailpull authorize " : "", again ? again : "",
			      again ? " again" : "");
}

/* The crash point (head comment): after an answer, before it is saved. */
static void
crash_point(void)
{
	const char *e = getenv("MAILPULL_CRASH_OAUTH2");

	if (e && strcmp(e, "1") == 0)
		_exit(101);
}

/*
 * A token answer received: saved (its refresh token, else the one we had)
 * before the access token is handed out. *ret_access is a copy.
 */
static int
token_received(const struct mp_account *a, struct oauth2_token *tok, const char *old_refresh,
	       char **ret_access, struct mp_err *err)
{
	struct oauth2_tokens t = {
		.refresh_token = tok->refresh_token ? tok->refresh_token : (char *)old_refresh,
		.access_token = tok->access_token,
		.expires_at = (int64_t)time(NULL) +
			      (tok->expires_in >= 0 ? tok->expires_in : EXPIRES_DEFAULT_S),
	};
	int r;

	crash_point();
	r = oauth2_tokens_save(a->oauth2_token_file, &t, err);
	if (r < 0 || !ret_access)
		return r;
	*ret_access = strdup(tok->access_token);
	return *ret_access ? 0 : mp_err_oom(err);
}

/* The form fields every token request carries: the client, and the scope where wanted. */
static int
form_client(const struct mp_account *a, bool scope, char **form, size_t *len)
{
	int r = http_form_add(form, len, "client_id", a->oauth2_client_id);

	if (r == 0)
		r = http_form_add(form, len, "client_secret", a->oauth2_client_secret);
	if (r == 0 && scope)
		r = http_form_add(form, len, "scope", a->oauth2_scope);
	return r;
}

static int
refresh(const struct mp_account *a, const char *refresh_token, char **ret, struct mp_err *err)
{
	struct oauth2_token tok = { .expires_in = -1, .interval = -1 };
	char *form = NULL;
	size_t len = 0;
	int r;

	r = http_form_add(&form, &len, "grant_type", "refresh_token");
	if (r == 0)
		r = http_form_add(&form, &len, "refresh_token", refresh_token);
	/* Microsoft wants the scope again on a refresh; Google takes none */
	if (r == 0)
		r = form_client(a, a->oauth2 != MP_OAUTH2_GOOGLE, &form, &len);
	if (r < 0) {
		http_free(form, len);
		return mp_err_oom(err);
	}
	r = post_token(a, a->oauth2_token_url, form, len, &tok, err);
	http_free(form, len);
	if (r == -EACCES)
		r = refused(&tok, err, "OAuth2: the provider refused the refresh token", a->name);
	else if (r == 0)
		r = token_received(a, &tok, refresh_token, ret, err);
	oauth2_token_clear(&tok);
	return r;
}

int
oauth2_access_token(const struct mp_account *a, bool fresh, char **ret, bool *ret_cached,
		    struct mp_err *err)
{
	struct oauth2_tokens t = { 0 };
	int r;

	if (ret_cached)
		*ret_cached = false;
	if (a->oauth2 == MP_OAUTH2_NONE || !a->oauth2_token_file)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "account %s has no oauth2 set",
				  a->name);
	r = oauth2_tokens_load(a->oauth2_token_file, &t, err);
	if (r == -ENOENT)
		return mp_err_set(err, r, MP_EX_NOPERM, "OAuth2: not authorized yet: run mailpull "
				  "authorize %s", a->name);
	if (r < 0)
		return r;
	if (!fresh && t.access_token && t.expires_at - (int64_t)time(NULL) > ACCESS_MARGIN_S) {
		*ret = strdup(t.access_token);
		r = *ret ? 0 : mp_err_oom(err);
		if (r == 0 && ret_cached)
			*ret_cached = true;
	} else if (!t.refresh_token) {
		r = mp_err_set(err, -EACCES, MP_EX_NOPERM, "OAuth2: the access token expired and "
			       "the provider gave no refresh token: run mailpull authorize %s "
			       "again", a->name);
	} else {
		r = refresh(a, t.refresh_token, ret, err);
	}
	oauth2_tokens_clear(&t);
	return r;
}

/* ---- the device authorization grant (RFC 8628) ---- */

struct device {
	char *device_code, *user_code, *uri, *uri_complete;
	int64_t expires_in, interval;
};

static void
device_clear(struct device *d)
{
	util_free_secret(d->device_code);
	free(d->user_code);
	free(d->uri);
	free(d->uri_complete);
}

/* RFC 8628 section 3.2; Microsoft's older endpoints say verification_url. */
static int
device_parse(const char *body, size_t len, struct device *d)
{
	json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	int r = o && json_is_object(o) ? 0 : -EPROTO;

	if (r == 0)
		r = json_str(o, "device_code", &d->device_code);
	if (r == 0)
		r = json_str(o, "user_code", &d->user_code);
	if (r == 0)
		r = json_str(o, "verification_uri", &d->uri);
	if (r == 0)
		r = json_str(o, "verification_uri_complete", &d->uri_complete);
	if (r == 0)
		r = json_seconds(o, "expires_in", &d->expires_in);
	if (r == 0)
		r = json_seconds(o, "interval", &d->interval);
	if (r == 0 && !d->uri)
		r = json_str(o, "verification_url", &d->uri);
	json_decref(o);
	if (r == 0 && (!d->device_code || !token_ok(d->device_code) || !d->user_code ||
		       !*d->user_code || !d->uri || strncmp(d->uri, "https://", 8) != 0))
		r = -EPROTO;
	return r;
}

/* The device endpoint's "no": its error answer, or just its status. */
static int
device_refused(const char *body, size_t len, const char *url, long status, struct mp_err *err)
{
	struct oauth2_token t = { 0 };
	int r = oauth2_parse_token(body, len, &t);

	if (r == -EACCES)
		r = refused(&t, err, "OAuth2: the device endpoint refused the request", NULL);
	else if (r != -ENOMEM)
		r = mp_err_set(err, -EACCES, MP_EX_NOPERM, "OAuth2 device endpoint %s: HTTP %ld",
			       url, status);
	oauth2_token_clear(&t);
	return r;
}

/* Asks the device endpoint for a code. */
static int
device_start(const struct mp_account *a, struct device *d, struct mp_err *err)
{
	struct http_req req = { .url = a->oauth2_device_url, .ca_file = a->tls_ca_file,
				.timeout_s = a->timeout_s };
	char *form = NULL, *body = NULL;
	size_t len = 0, blen = 0;
	long status = 0;
	int r;

	if (form_client(a, true, &form, &len) < 0) {
		http_free(form, len);
		return mp_err_oom(err);
	}
	req.form = form;
	req.len = len;
	r = http_post(&req, &status, &body, &blen, err);
	http_free(form, len);
	if (r < 0)
		return r;
	log_acct(LOG_LVL_DEBUG, a->name, NULL, "account %s: OAuth2 POST %s: HTTP %ld", a->name,
		 req.url, status);
	if (status == 200 && (r = device_parse(body, blen, d)) == -EPROTO)
		mp_err_set(err, r, MP_EX_PROTOCOL, "OAuth2 device endpoint %s: an answer without a "
			   "device code", req.url);
	else if (status >= 500)
		r = mp_err_set(err, -EIO, MP_EX_TEMPFAIL, "OAuth2 device endpoint %s: HTTP %ld",
			       req.url, status);
	else if (status != 200)
		r = device_refused(body, blen, req.url, status, err);
	http_free(body, blen);
	if (r == -ENOMEM)
		return mp_err_oom(err);
	return r;
}

/* Prints a value from the provider, sanitized, after a label. */
static void
print_line(FILE *out, const char *label, const char *value)
{
	char clean[2048];

	util_sanitize(clean, sizeof(clean), value, strlen(value));
	fprintf(out, "%s%s\n", label, clean);
}

/* A failure that may pass: the endpoint unreachable, slow, or answering 5xx. */
static bool
temporary(int r)
{
	return r == -ETIMEDOUT || r == -ECONNREFUSED || r == -EIO;
}

/*
 * After authorize got tokens: without a refresh token nothing can renew
 * the access token, so the user must be told they will be back.
 */
static void
warn_no_refresh(const struct mp_account *a, const struct oauth2_token *tok, FILE *out)
{
	if (tok->refresh_token || !out)
		return;
	fprintf(out, "Warning: the provider gave no refresh token: run mailpull authorize %s "
		"again when the access token expires (in about %" PRId64 " s).\n", a->name,
		tok->expires_in >= 0 ? tok->expires_in : (int64_t)EXPIRES_DEFAULT_S);
	fflush(out);
}

/*
 * Polls the token endpoint until the user said yes or no, or the code
 * expired. An endpoint that cannot be reached for a while does not end
 * the grant while the code is good: the wait doubles (up to
 * DEVICE_INTERVAL_MAX_S) and polling goes on.
 */
static int
device_poll(const struct mp_account *a, const struct device *d, FILE *out, struct mp_err *err)
{
	int64_t deadline = util_now_ms() + 1000 * d->expires_in, interval = d->interval;
	int64_t wait = interval;
	struct oauth2_token tok = { .expires_in = -1, .interval = -1 };
	struct mp_err last = { 0 };
	char *form = NULL;
	size_t len = 0;
	bool expired;
	int r;

	r = http_form_add(&form, &len, "grant_type", "urn:ietf:params:oauth:grant-type:device_code");
	if (r == 0)
		r = http_form_add(&form, &len, "device_code", d->device_code);
	if (r == 0)
		r = form_client(a, false, &form, &len);
	if (r < 0) {
		http_free(form, len);
		return mp_err_oom(err);
	}
	for (;;) {
		if (util_now_ms() + 1000 * wait > deadline) {
			if (last.code)
				r = mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL, "OAuth2: the code "
					       "expired (%" PRId64 " s) while the token endpoint "
					       "failed: %s: run mailpull authorize %s again",
					       d->expires_in, last.msg, a->name);
			else
				r = mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL, "OAuth2: the code "
					       "was not entered in time (%" PRId64 " s): run "
					       "mailpull authorize %s again", d->expires_in, a->name);
			break;
		}
		sleep((unsigned)wait);
		oauth2_token_clear(&tok);
		mp_err_clear(&last);
		r = post_token(a, a->oauth2_token_url, form, len, &tok, &last);
		if (temporary(r)) {
			log_acct(LOG_LVL_DEBUG, a->name, NULL, "account %s: %s", a->name,
				 last.msg);
			wait = wait * 2 > DEVICE_INTERVAL_MAX_S ? DEVICE_INTERVAL_MAX_S : wait * 2;
			continue;
		}
		if (r != -EACCES) {
			/* a token, or a failure no wait mends: its detail is the caller's */
			if (r < 0 && err && !err->code)
				*err = last;
			break;
		}
		mp_err_clear(&last);
		wait = interval;
		if (strcmp(tok.error, "authorization_pending") == 0)
			continue;
		if (strcmp(tok.error, "slow_down") == 0) {
			/* RFC 8628 3.5: five seconds more for this and every later poll */
			interval = tok.interval > interval + 5 ? tok.interval : interval + 5;
			if (interval > DEVICE_INTERVAL_MAX_S)
				interval = DEVICE_INTERVAL_MAX_S;
			wait = interval;
			continue;
		}
		expired = strcmp(tok.error, "expired_token") == 0;
		r = refused(&tok, err, strcmp(tok.error, "access_denied") == 0 ?
			    "OAuth2: the authorization was refused" : expired ?
			    "OAuth2: the code expired before it was entered" :
			    "OAuth2: the provider refused the authorization",
			    expired ? a->name : NULL);
		break;
	}
	http_free(form, len);
	if (r == 0)
		r = token_received(a, &tok, NULL, NULL, err);
	if (r == 0)
		warn_no_refresh(a, &tok, out);
	oauth2_token_clear(&tok);
	return r;
}

static int
authorize_device(const struct mp_account *a, FILE *out, struct mp_err *err)
{
	struct device d = { 0 };
	int r;

	r = device_start(a, &d, err);
	if (r == 0) {
		if (d.expires_in <= 0 || d.expires_in > DEVICE_EXPIRES_MAX_S)
			d.expires_in = d.expires_in <= 0 ? 900 : DEVICE_EXPIRES_MAX_S;
		if (d.interval <= 0)
			d.interval = DEVICE_INTERVAL_S;
		if (d.interval > DEVICE_INTERVAL_MAX_S)
			d.interval = DEVICE_INTERVAL_MAX_S;
		fprintf(out, "To authorize mailpull for account %s, open this URL in a browser, "
			"sign in and enter the code:\n", a->name);
		print_line(out, "URL: ", d.uri);
		print_line(out, "Code: ", d.user_code);
		if (d.uri_complete)
			print_line(out, "URL with the code: ", d.uri_complete);
		fprintf(out, "Waiting for the authorization (up to %" PRId64 " s)...\n",
			d.expires_in);
		fflush(out);
		r = device_poll(a, &d, out, err);
	}
	device_clear(&d);
	return r;
}

/* ---- the authorization code grant with PKCE and a loopback redirect (RFC 8252) ---- */

struct redirect {
	int fd;                    /* listening on 127.0.0.1 */
	unsigned port;
	char verifier[64], challenge[44], state[32];
	char redirect_uri[64];
};

static int
redirect_listen(struct redirect *rd, struct mp_err *err)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);

	rd->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (rd->fd < 0 || bind(rd->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(rd->fd, 4) < 0 || getsockname(rd->fd, (struct sockaddr *)&sin, &sl) < 0)
		return mp_err_set(err, -errno, MP_EX_TEMPFAIL, "OAuth2: cannot listen on "
				  "127.0.0.1 for the redirect: %s", strerror(errno));
	rd->port = ntohs(sin.sin_port);
	snprintf(rd->redirect_uri, sizeof(rd->redirect_uri), "http://127.0.0.1:%u/", rd->port);
	return 0;
}

/* The URL the user opens: the authorization request of RFC 6749 4.1.1 with PKCE. */
static int
redirect_url(const struct mp_account *a, const struct redirect *rd, char **ret)
{
	char *q = NULL, *url = NULL;
	size_t len = 0;
	int r;

	if ((r = http_form_add(&q, &len, "response_type", "code")) < 0 ||
	    (r = http_form_add(&q, &len, "client_id", a->oauth2_client_id)) < 0 ||
	    (r = http_form_add(&q, &len, "redirect_uri", rd->redirect_uri)) < 0 ||
	    (r = http_form_add(&q, &len, "scope", a->oauth2_scope)) < 0 ||
	    (r = http_form_add(&q, &len, "state", rd->state)) < 0 ||
	    (r = http_form_add(&q, &len, "code_challenge", rd->challenge)) < 0 ||
	    (r = http_form_add(&q, &len, "code_challenge_method", "S256")) < 0)
		goto out;
	/* Google gives a refresh token only when asked for offline access, and consent again */
	if (a->oauth2 == MP_OAUTH2_GOOGLE &&
	    ((r = http_form_add(&q, &len, "access_type", "offline")) < 0 ||
	     (r = http_form_add(&q, &len, "prompt", "consent")) < 0))
		goto out;
	if (asprintf(&url, "%s%c%s", a->oauth2_auth_url,
		     strchr(a->oauth2_auth_url, '?') ? '&' : '?', q) < 0)
		r = -ENOMEM;
	else
		*ret = url;
out:
	http_free(q, len);
	return r;
}

/* Decodes %XX and '+' in place (application/x-www-form-urlencoded). -EBADMSG when broken. */
static int
url_decode(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (*s == '+') {
			*o++ = ' ';
		} else if (*s == '%') {
			int hi = util_hex_value(s[1]), lo = hi < 0 ? -1 : util_hex_value(s[2]);

			if (lo < 0 || (hi == 0 && lo == 0))
				return -EBADMSG;
			*o++ = (char)(hi * 16 + lo);
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return 0;
}

struct redirect_answer {
	char *code, *state, *error, *error_description;
};

static void
answer_clear(struct redirect_answer *ans)
{
	util_free_secret(ans->code);
	free(ans->state);
	free(ans->error);
	free(ans->error_description);
	*ans = (struct redirect_answer){ 0 };
}

/* A redirect's query (code, state, error, error_description) into ans. -EBADMSG: none. */
static int
parse_query(char *q, struct redirect_answer *ans)
{
	char *p;

	for (p = strsep(&q, "&"); p; p = strsep(&q, "&")) {
		char *v = strchr(p, '='), **dst = NULL;

		if (!v)
			continue;
		*v++ = '\0';
		if (strcmp(p, "code") == 0)
			dst = &ans->code;
		else if (strcmp(p, "state") == 0)
			dst = &ans->state;
		else if (strcmp(p, "error") == 0)
			dst = &ans->error;
		else if (strcmp(p, "error_description") == 0)
			dst = &ans->error_description;
		if (!dst || *dst)
			continue;
		if (url_decode(v) < 0)
			return -EBADMSG;
		if (!(*dst = strdup(v)))
			return -ENOMEM;
	}
	return ans->code || ans->error ? 0 : -EBADMSG;
}

/* The query of "GET /?QUERY HTTP/1.1" into ans. -EBADMSG: not a redirect to us. */
static int
parse_request(char *req, struct redirect_answer *ans)
{
	char *end = strstr(req, "\r\n");

	if (!end || strncmp(req, "GET /?", 6) != 0)
		return -EBADMSG;
	*end = '\0';
	if (!(end = strrchr(req, ' ')) || end < req + 6)
		return -EBADMSG;
	*end = '\0';
	return parse_query(req + 6, ans);
}

/* Reads one request head (bounded in size and time) from a browser. */
static int
read_request(int fd, char *buf, size_t cap)
{
	int64_t deadline = util_now_ms() + REQUEST_WAIT_S * 1000;
	size_t len = 0;

	while (len < cap - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - util_now_ms();
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -ETIMEDOUT;
		n = recv(fd, buf + len, cap - 1 - len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -ECONNRESET;
		len += (size_t)n;
		buf[len] = '\0';
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			return 0;
	}
	return -E2BIG;
}

static void
respond(int fd, int status, const char *text)
{
	char page[1024];
	int n;

	n = snprintf(page, sizeof(page), "HTTP/1.1 %d %s\r\nContent-Type: text/html; "
		     "charset=utf-8\r\nCache-Control: no-store\r\nConnection: close\r\n"
		     "Content-Length: %zu\r\n\r\n%s", status, status == 200 ? "OK" :
		     status == 400 ? "Bad Request" : "Not Found",
		     strlen(text), text);
	if (n > 0 && (size_t)n < sizeof(page))
		(void)send(fd, page, (size_t)n, MSG_NOSIGNAL);
}

#define PAGE(msg) "<!DOCTYPE html><html><head><title>mailpull</title></head><body><p>" \
		  msg "</p></body></html>"

/*
 * Handles one connection to the listener. 1 with the answer in ans (a
 * code, or an error the provider redirected with), 0 when it was not the
 * redirect (answered and dropped: wait for the next).
 */
static int
redirect_one(int fd, const struct redirect *rd, struct redirect_answer *ans)
{
	char *buf = malloc(REQUEST_MAX);
	int r;

	if (!buf)
		return -ENOMEM;
	r = read_request(fd, buf, REQUEST_MAX);
	if (r == 0)
		r = parse_request(buf, ans);
	if (r == 0 && (!ans->state || strcmp(ans->state, rd->state) != 0)) {
		/* RFC 6749 10.12: a redirect not of our request (CSRF); keep waiting for ours */
		respond(fd, 400, PAGE("mailpull: this answer is not for the request mailpull "
				      "made (the state does not match); it was ignored."));
		r = -EBADMSG;
	} else if (r == 0) {
		respond(fd, 200, ans->code ? PAGE("mailpull: authorized. You can close this "
						  "window.") :
			PAGE("mailpull: the authorization was refused."));
		r = 1;
	} else if (r == -EBADMSG) {
		respond(fd, 404, PAGE("mailpull: not found."));
	}
	explicit_bzero(buf, REQUEST_MAX);
	free(buf);
	if (r != 1)
		answer_clear(ans);
	return r == -ENOMEM ? r : r == 1 ? 1 : 0;
}

/*
 * What the user pastes on the terminal: the address the browser was sent
 * to, for a browser on another machine that cannot reach our listener.
 */
struct paste {
	int fd;                    /* -1: not read (none, or at its end) */
	FILE *out;
	char buf[REQUEST_MAX];
	size_t len;
};

/*
 * Reads what is there of the pasted line. 1 with the answer in ans once a
 * whole line holds a redirect of ours, else 0 (told on out what was
 * wrong with a line); -ENOMEM.
 */
static int
paste_read(struct paste *ps, const struct redirect *rd, struct redirect_answer *ans)
{
	ssize_t n = read(ps->fd, ps->buf + ps->len, sizeof(ps->buf) - 1 - ps->len);
	char *nl, *q;
	int r;

	if (n <= 0) {
		if (n == 0 || (errno != EINTR && errno != EAGAIN))
			ps->fd = -1;
		return 0;
	}
	ps->len += (size_t)n;
	ps->buf[ps->len] = '\0';
	if (!(nl = strchr(ps->buf, '\n'))) {
		/* a line longer than any redirect: dropped */
		if (ps->len == sizeof(ps->buf) - 1)
			ps->len = 0;
		return 0;
	}
	*nl = '\0';
	q = strchr(ps->buf, '?');
	r = q ? parse_query(q + 1, ans) : -EBADMSG;
	if (r == 0 && (!ans->state || strcmp(ans->state, rd->state) != 0))
		r = -EPERM;
	if (r == -EBADMSG || r == -EPERM)
		fprintf(ps->out, "%s\n", r == -EPERM ? "That address is not the answer to this "
			"request (the state does not match); still waiting." : "Paste the whole "
			"address the browser was sent to (it holds ?code= or ?error=); "
			"still waiting.");
	fflush(ps->out);
	explicit_bzero(ps->buf, sizeof(ps->buf));
	ps->len = 0;
	if (r != 0)
		answer_clear(ans);
	return r == -ENOMEM ? r : r == 0 ? 1 : 0;
}

/* Waits for the browser's redirect, or its address pasted, REDIRECT_WAIT_S at most. */
static int
redirect_wait(const struct redirect *rd, struct paste *ps, struct redirect_answer *ans,
	      struct mp_err *err)
{
	int64_t deadline = util_now_ms() + REDIRECT_WAIT_S * 1000;

	for (;;) {
		struct pollfd p[2] = { { .fd = rd->fd, .events = POLLIN },
				       { .fd = ps->fd, .events = POLLIN } };
		int64_t left = deadline - util_now_ms();
		int n, c, r = 0;

		if (left <= 0)
			return mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL, "OAuth2: no answer from "
					  "the browser within %d minutes", REDIRECT_WAIT_S / 60);
		n = poll(p, ps->fd >= 0 ? 2 : 1, (int)left);
		if (n < 0 && errno != EINTR)
			return mp_err_set(err, -errno, MP_EX_TEMPFAIL, "OAuth2: poll: %s",
					  strerror(errno));
		if (n <= 0)
			continue;
		if (ps->fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			r = paste_read(ps, rd, ans);
		if (r == 0 && (p[0].revents & POLLIN) &&
		    (c = accept4(rd->fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
			r = redirect_one(c, rd, ans);
			close(c);
		}
		if (r < 0)
			return mp_err_oom(err);
		if (r == 1)
			return 0;
	}
}

/* Trades the code for tokens (RFC 6749 4.1.3, RFC 7636 4.5). */
static int
redirect_exchange(const struct mp_account *a, const struct redirect *rd, const char *code,
		  FILE *out, struct mp_err *err)
{
	struct oauth2_token tok = { .expires_in = -1, .interval = -1 };
	char *form = NULL;
	size_t len = 0;
	int r;

	if ((r = http_form_add(&form, &len, "grant_type", "authorization_code")) < 0 ||
	    (r = http_form_add(&form, &len, "code", code)) < 0 ||
	    (r = http_form_add(&form, &len, "redirect_uri", rd->redirect_uri)) < 0 ||
	    (r = http_form_add(&form, &len, "code_verifier", rd->verifier)) < 0 ||
	    (r = form_client(a, false, &form, &len)) < 0) {
		http_free(form, len);
		return mp_err_oom(err);
	}
	r = post_token(a, a->oauth2_token_url, form, len, &tok, err);
	http_free(form, len);
	if (r == -EACCES)
		r = refused(&tok, err, "OAuth2: the token endpoint refused the code", NULL);
	else if (r == 0)
		r = token_received(a, &tok, NULL, NULL, err);
	if (r == 0)
		warn_no_refresh(a, &tok, out);
	oauth2_token_clear(&tok);
	return r;
}

static int
authorize_redirect(const struct mp_account *a, FILE *in, FILE *out, struct mp_err *err)
{
	struct redirect rd = { .fd = -1 };
	struct paste *ps = NULL;
	struct redirect_answer ans = { 0 };
	char *url = NULL;
	int r;

	/* RFC 7636 4.1: 32 random octets give a 43-character verifier */
	if (random_b64url(32, rd.verifier) < 0 || random_b64url(16, rd.state) < 0)
		return mp_err_set(err, -EIO, MP_EX_TEMPFAIL, "OAuth2: no random numbers: %s",
				  strerror(errno));
	oauth2_pkce_challenge(rd.verifier, rd.challenge);
	ps = calloc(1, sizeof(*ps));
	r = ps ? redirect_listen(&rd, err) : mp_err_oom(err);
	if (r == 0 && redirect_url(a, &rd, &url) < 0)
		r = mp_err_oom(err);
	if (r == 0) {
		fprintf(out, "To authorize mailpull for account %s, open this URL in a browser on "
			"this machine and sign in (waiting up to %d minutes):\n", a->name,
			REDIRECT_WAIT_S / 60);
		fprintf(out, "URL: %s\n", url);
		if (in)
			fprintf(out, "If the browser runs on another machine, paste here the address "
				"it was sent to (it fails to load there).\n");
		fflush(out);
		ps->fd = in ? fileno(in) : -1;
		ps->out = out;
		r = redirect_wait(&rd, ps, &ans, err);
	}
	if (r == 0 && ans.error)
		r = refused(&(struct oauth2_token){ .error = ans.error,
						    .error_description = ans.error_description },
			    err, "OAuth2: the authorization was refused", NULL);
	if (r == 0)
		r = redirect_exchange(a, &rd, ans.code, out, err);
	if (rd.fd >= 0)
		close(rd.fd);
	answer_clear(&ans);
	free(url);
	explicit_bzero(rd.verifier, sizeof(rd.verifier));
	if (ps)
		explicit_bzero(ps->buf, sizeof(ps->buf));
	free(ps);
	return r;
}

int
oauth2_authorize(const struct mp_account *a, FILE *in, FILE *out, struct mp_err *err)
{
	if (a->oauth2 == MP_OAUTH2_NONE || !a->oauth2_token_file)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "account %s has no oauth2 set",
				  a->name);
	if (a->oauth2_device_url)
		return authorize_device(a, out, err);
	return authorize_redirect(a, in, out, err);
}
