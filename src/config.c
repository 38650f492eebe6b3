/*
 * Configuration: parses one file with libconfuse into validated accounts.
 *
 * Two libconfuse 3.3 limits shape this file. It keeps no line number per
 * option, so every value is a CFGT_PTR holding a struct cval that records
 * the line it came from; validation after parsing can then still say
 * "FILE:LINE". And its lexer miscounts lines after a comment and rejects a
 * comment inside a list, so comments are blanked here (newlines kept)
 * before the parser sees the text.
 *
 * libconfuse's lexer is global state: config_load() is not reentrant.
 */
#include <confuse.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailpull/config.h"
#include "mailpull/oauth2.h"
#include "mailpull/state.h"
#include "mailpull/util.h"

/* A configuration file is a few kilobytes; this only bounds a mistake. */
#define CONFIG_MAX_SIZE (1024 * 1024)
#define ACCOUNT_NAME_MAX 64
#define KEEP_DAYS_MAX 36500
#define TIMEOUT_MAX_S 3600
/* Tests poll every second; nobody needs more than a month between polls. */
#define INTERVAL_MIN_S 1
#define INTERVAL_MAX_S (30 * 86400)
#define INTERVAL_DEFAULT_S 300
#define PARALLEL_MAX 64
#define PARALLEL_DEFAULT 4

enum key_kind {
	KEY_TEXT,       /* non-empty, no control bytes */
	KEY_HOST,       /* non-empty, no control bytes, spaces or '/' */
	KEY_PATH,       /* absolute or "~/..." */
	KEY_COMMAND,    /* non-empty shell command */
	KEY_SECRET,     /* non-empty, no CR or LF; never echoed */
	KEY_BOOL,
	KEY_PROTO,
	KEY_TLS,
	KEY_PORT,
	KEY_DURATION,
	KEY_SIZE,
	KEY_DAYS,
	KEY_FPR,
	KEY_AUTH,
	KEY_FOLDER,
	KEY_INTERVAL,
	KEY_PARALLEL,
	KEY_LOG,
	KEY_SYNC,
	KEY_SAVE_SENT,
	KEY_SMTP_TLS,
	KEY_OAUTH2,
	KEY_URL,        /* https://HOST... */
};

struct key_def {
	const char *name;
	enum key_kind kind;
};

static const struct key_def key_defs[] = {
	{ "state_dir", KEY_PATH },
	{ "protocol", KEY_PROTO },
	{ "host", KEY_HOST },
	{ "port", KEY_PORT },
	{ "tls", KEY_TLS },
	{ "allow_plaintext", KEY_BOOL },
	{ "tls_ca_file", KEY_PATH },
	{ "tls_fingerprint", KEY_FPR },
	{ "tls_cert", KEY_PATH },
	{ "tls_key", KEY_PATH },
	{ "user", KEY_TEXT },
	{ "password", KEY_SECRET },
	{ "password_file", KEY_PATH },
	{ "password_command", KEY_COMMAND },
	{ "auth", KEY_AUTH },
	{ "oauth2", KEY_OAUTH2 },
	{ "oauth2_token_url", KEY_URL },
	{ "oauth2_auth_url", KEY_URL },
	{ "oauth2_device_url", KEY_URL },
	{ "oauth2_client_id", KEY_TEXT },
	{ "oauth2_client_secret", KEY_SECRET },
	{ "oauth2_scope", KEY_TEXT },
	{ "maildir", KEY_PATH },
	{ "keep", KEY_BOOL },
	{ "keep_days", KEY_DAYS },
	{ "max_size", KEY_SIZE },
	{ "timeout", KEY_DURATION },
	{ "folders", KEY_FOLDER },
	{ "exclude", KEY_FOLDER },
	{ "namespaces", KEY_BOOL },
	{ "mark_seen", KEY_BOOL },
	{ "only_unseen", KEY_BOOL },
	{ "expunge", KEY_BOOL },
	{ "interval", KEY_INTERVAL },
	{ "idle", KEY_BOOL },
	{ "parallel", KEY_PARALLEL },
	{ "log", KEY_LOG },
	{ "sync", KEY_SYNC },
	{ "smtp_host", KEY_HOST },
	{ "smtp_port", KEY_PORT },
	{ "smtp_tls", KEY_SMTP_TLS },
	{ "smtp_user", KEY_TEXT },
	{ "smtp_password", KEY_SECRET },
	{ "smtp_password_file", KEY_PATH },
	{ "smtp_password_command", KEY_COMMAND },
	{ "from", KEY_TEXT },
	{ "outbox", KEY_PATH },
	{ "save_sent", KEY_SAVE_SENT },
	{ "sent_folder", KEY_FOLDER },
};

/* "scram" stands for the four SCRAM mechanisms (sasl_choose()). */
static const char *const auth_names[] = {
	"plain", "login", "xoauth2", "oauthbearer", "user", "scram-sha-1", "scram-sha-256",
	"scram-sha-1-plus", "scram-sha-256-plus", "scram", "external",
};

/* The mechanisms that send an OAuth2 access token, the only secret of an oauth2 account. */
static const char *const oauth2_auth_names[] = { "xoauth2", "oauthbearer" };
static const char *const external_names[] = { "external" };

/* Longest URL accepted: far beyond any real endpoint, short enough to quote. */
#define URL_MAX 2048

/* One parsed value and where it was written. */
struct cval {
	const struct key_def *key;
	int line;
	size_t len;
	char s[];
};

struct load_ctx {
	const char *path;
	struct mp_err *err;
	int rc;                 /* first error, 0 while none */
	bool parsing;
	int *sec_lines;         /* line of each top-level section's "{" */
	size_t nsec_lines;
	size_t sec_done;        /* sections libconfuse has finished */
	int password_line;      /* first `password` key, 0: none */
	int secret_tail;        /* line of the last value parsed when it was a password */
	bool own_error;         /* val_parse() reports, in words of its own */
	const char *text;       /* the file, comments blanked, while libconfuse parses it */
	size_t textlen;
	int defaults_line;
	const struct key_def *overwritten; /* a key being assigned again */
	int overwritten_line;
};

/*
 * libconfuse callbacks carry no user pointer; this points at the running
 * config_load()'s context and is NULL at any other time.
 */
static _Thread_local struct load_ctx *cur_ctx;

static int MP_PRINTF(3, 4)
ctx_error(struct load_ctx *ctx, int line, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		mp_err_set(ctx->err, -EINVAL, MP_EX_CONFIG, "%s:%d: %s", ctx->path, line, msg);
	else
		mp_err_set(ctx->err, -EINVAL, MP_EX_CONFIG, "%s: %s", ctx->path, msg);
	if (ctx->rc == 0)
		ctx->rc = -EINVAL;
	return -EINVAL;
}

/*
 * "timeout = 2 hours" reads as "timeout = 2" and an option "hours": a unit
 * word where an option name should be is that mistake.
 */
static bool
is_unit_word(const char *w)
{
	static const char *const units[] = {
		"s", "sec", "secs", "second", "seconds", "m", "min", "mins", "minute",
		"minutes", "h", "hr", "hrs", "hour", "hours", "d", "day", "days",
		"k", "kb", "kib", "mb", "mib", "g", "gb", "gib", "byte", "bytes",
	};

	for (size_t i = 0; i < ARRAY_SIZE(units); i++)
		if (strcasecmp(w, units[i]) == 0)
			return true;
	return false;
}

/* Line (1-based) of the text being parsed as [*ret_start, return value); NULL if none. */
static const char *
text_line(const struct load_ctx *ctx, int line, const char **ret_start)
{
	const char *t = ctx->text, *end;
	size_t n = ctx->textlen;

	if (!t || line < 1)
		return NULL;
	for (int l = 1; l < line; l++) {
		const char *nl = memchr(t, '\n', n - (size_t)(t - ctx->text));

		if (!nl)
			return NULL;
		t = nl + 1;
	}
	end = memchr(t, '\n', n - (size_t)(t - ctx->text));
	*ret_start = t;
	return end ? end : ctx->text + n;
}

/*
 * Where line (1-based) of the text being parsed assigns `password`, the
 * offset just past its '=' (spaces skipped); 0 when it does not.
 */
static size_t
password_assignment(const struct load_ctx *ctx, int line)
{
	static const char key[] = "password";
	const char *t = NULL, *end = text_line(ctx, line, &t);

	if (!end)
		return 0;
	for (const char *p = t; p + sizeof(key) - 1 <= end; p++) {
		const char *q = p + sizeof(key) - 1;

		if (memcmp(p, key, sizeof(key) - 1) != 0 ||
		    (p > t && (isalnum((unsigned char)p[-1]) || p[-1] == '_')))
			continue;
		while (q < end && (*q == ' ' || *q == '\t'))
			q++;
		if (q < end && *q == '=') {
			for (q++; q < end && (*q == ' ' || *q == '\t'); q++)
				;
			return (size_t)(q - ctx->text);
		}
	}
	return 0;
}

/*
 * An error on a line that assigns a password, or on the next one after an
 * unquoted password value when it assigns nothing (the value went on past
 * the line end), would quote a piece of the password (libconfuse takes
 * "password = my secret pw" for the value "my" and an option "secret"):
 * report it without libconfuse's text, at the password's line.
 */
static bool
password_error(struct load_ctx *ctx, int line)
{
	const char *start = NULL, *end;
	size_t at;

	if (password_assignment(ctx, line)) {
		ctx_error(ctx, line, "password: a value holding spaces or any of "
			  "= { } ( ) , + * # must be quoted (password = \"...\"); "
			  "the value is not shown");
		return true;
	}
	if (!ctx->secret_tail || line != ctx->secret_tail + 1)
		return false;
	end = text_line(ctx, line, &start);
	at = password_assignment(ctx, ctx->secret_tail);
	if (end && !memchr(start, '=', (size_t)(end - start)) && at &&
	    ctx->text[at] != '"' && ctx->text[at] != '\'') {
		ctx_error(ctx, ctx->secret_tail, "password: a value holding spaces or line "
			  "breaks must be quoted (password = \"...\"); the value is not shown");
		return true;
	}
	return false;
}

/* Receives every libconfuse error so none reaches stderr. */
static void MP_PRINTF(2, 0)
conf_errfunc(cfg_t *cfg, const char *fmt, va_list ap)
{
	struct load_ctx *ctx = cur_ctx;
	char raw[400], clean[400];
	va_list aq;

	if (!ctx)
		return;
	if (!ctx->own_error && password_error(ctx, cfg ? cfg->line : 0))
		return;
	va_copy(aq, ap);
	if (strcmp(fmt, "found duplicate title '%s'") == 0) {
		snprintf(raw, sizeof(raw), "account \"%s\" is defined twice",
			 va_arg(aq, const char *));
	} else if (strcmp(fmt, "no such option '%s'") == 0) {
		const char *w = va_arg(aq, const char *);

		snprintf(raw, sizeof(raw), "no such option '%s'%s", w,
			 is_unit_word(w) ? " (write a duration or size with its unit letter "
			 "and no space: 2h, 90s, 10M)" : "");
	} else {
		vsnprintf(raw, sizeof(raw), fmt, aq);
	}
	va_end(aq);
	/* libconfuse quotes file text; keep escape sequences off the terminal */
	util_sanitize(clean, sizeof(clean), raw, strlen(raw));
	ctx_error(ctx, cfg ? cfg->line : 0, "%s", clean);
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(clean, sizeof(clean));
}

static const struct key_def *
key_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(key_defs); i++)
		if (strcmp(key_defs[i].name, name) == 0)
			return &key_defs[i];
	return NULL;
}

static bool
has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static int
parse_bool(const char *v, bool *ret)
{
	int b = cfg_parse_boolean(v);

	if (b < 0)
		return -EINVAL;
	*ret = b == 1;
	return 0;
}

static int
parse_proto(const char *v, enum mp_proto *ret)
{
	for (int p = 0; p < MP_PROTO_MAX; p++) {
		if (strcasecmp(v, mp_proto_to_string((enum mp_proto)p)) == 0) {
			*ret = (enum mp_proto)p;
			return 0;
		}
	}
	return -EINVAL;
}

static int
parse_tls(const char *v, enum mp_tls *ret)
{
	for (int t = 0; t < MP_TLS_MAX; t++) {
		if (strcasecmp(v, mp_tls_to_string((enum mp_tls)t)) == 0) {
			*ret = (enum mp_tls)t;
			return 0;
		}
	}
	return -EINVAL;
}

static int
parse_ranged(const char *v, uint64_t min, uint64_t max, uint64_t *ret)
{
	uint64_t n;
	int r = util_parse_u64(v, strlen(v), &n);

	if (r < 0)
		return r;
	if (n < min || n > max)
		return -ERANGE;
	*ret = n;
	return 0;
}

static int
parse_log(const char *v, enum mp_log *ret)
{
	for (int l = 0; l < MP_LOG_MAX; l++) {
		if (strcasecmp(v, mp_log_to_string((enum mp_log)l)) == 0) {
			*ret = (enum mp_log)l;
			return 0;
		}
	}
	return -EINVAL;
}

/* sync = batch (group commit, the default) or file (fdatasync per message). */
static int
parse_sync(const char *v, bool *ret_per_file)
{
	if (strcasecmp(v, "batch") == 0)
		*ret_per_file = false;
	else if (strcasecmp(v, "file") == 0)
		*ret_per_file = true;
	else
		return -EINVAL;
	return 0;
}

/* save_sent = auto, yes or no. */
static int
parse_save_sent(const char *v, enum mp_save_sent *ret)
{
	for (int i = 0; i < MP_SAVE_SENT_MAX; i++) {
		if (strcasecmp(v, mp_save_sent_to_string((enum mp_save_sent)i)) == 0) {
			*ret = (enum mp_save_sent)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* oauth2 = none, google, microsoft or custom. */
static int
parse_oauth2(const char *v, enum mp_oauth2 *ret)
{
	for (int i = 0; i < MP_OAUTH2_MAX; i++) {
		if (strcasecmp(v, mp_oauth2_to_string((enum mp_oauth2)i)) == 0) {
			*ret = (enum mp_oauth2)i;
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * An OAuth2 endpoint: https:// (tokens must never cross the network in
 * clear, RFC 6749 section 3.1.2.1; the test provider runs HTTPS too), a
 * host, no spaces and no fragment.
 */
static bool
url_ok(const char *v)
{
	static const char scheme[] = "https://";
	const char *host = v + sizeof(scheme) - 1;

	return strncasecmp(v, scheme, sizeof(scheme) - 1) == 0 && strlen(v) <= URL_MAX &&
	       *host && !strchr("/?#:", *host) && !strpbrk(v, " \t\"<>\\^`{|}#");
}

/*
 * Userinfo (user:password@) in a URL's authority: the URL is printed in
 * errors and debug logs, so it must hold no credentials.
 */
static bool
url_has_userinfo(const char *v)
{
	const char *host = strstr(v, "://");

	if (!host)
		return false;
	host += 3;
	return memchr(host, '@', strcspn(host, "/?#")) != NULL;
}

static int
parse_interval(const char *v, uint64_t *ret)
{
	uint64_t s;
	int r = util_parse_duration(v, &s);

	if (r < 0)
		return r;
	if (s < INTERVAL_MIN_S || s > INTERVAL_MAX_S)
		return -ERANGE;
	*ret = s;
	return 0;
}

static int
parse_timeout(const char *v, uint64_t *ret)
{
	uint64_t s;
	int r = util_parse_duration(v, &s);

	if (r < 0)
		return r;
	if (s < 1 || s > TIMEOUT_MAX_S)
		return -ERANGE;
	*ret = s;
	return 0;
}

/*
 * A SHA-256 fingerprint: 64 hex digits, or 32 pairs separated by colons as
 * `openssl x509 -fingerprint -sha256` prints them. Writes 64 upper-case
 * hex digits and a NUL to out.
 */
static int
parse_fingerprint(const char *v, char out[65])
{
	size_t len = strlen(v), n = 0;
	bool colons = len == 95;

	if (len != 64 && !colons)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (colons && i % 3 == 2) {
			if (v[i] != ':')
				return -EINVAL;
			continue;
		}
		if (!isxdigit((unsigned char)v[i]))
			return -EINVAL;
		out[n++] = (char)toupper((unsigned char)v[i]);
	}
	out[n] = '\0';
	return 0;
}

/* Mechanism names separated by spaces or commas, each one we implement. */
static int
check_auth(const char *v, char *why, size_t whylen)
{
	const char *sep = " \t,";
	size_t n = 0;

	for (const char *p = v + strspn(v, sep); *p; p += strspn(p, sep)) {
		size_t len = strcspn(p, sep);
		bool known = false;

		for (size_t i = 0; i < ARRAY_SIZE(auth_names); i++)
			known |= strlen(auth_names[i]) == len &&
				 strncasecmp(p, auth_names[i], len) == 0;
		if (!known) {
			snprintf(why, whylen, "auth: unknown mechanism \"%.*s\" (known: plain "
				 "login scram-sha-256 scram-sha-256-plus scram-sha-1 "
				 "scram-sha-1-plus scram xoauth2 oauthbearer external user)",
				 (int)(len > 40 ? 40 : len), p);
			return -EINVAL;
		}
		p += len;
		n++;
	}
	if (n == 0) {
		snprintf(why, whylen, "auth names no mechanism");
		return -EINVAL;
	}
	return 0;
}

/* Whether the mechanism list v names one of set (any: true), or only those (any: false). */
static bool
auth_match(const char *v, const char *const *set, size_t n, bool any)
{
	const char *sep = " \t,";

	for (const char *p = v + strspn(v, sep); *p; p += strspn(p, sep)) {
		size_t len = strcspn(p, sep);
		bool in = false;

		for (size_t i = 0; i < n; i++)
			in |= strlen(set[i]) == len && strncasecmp(p, set[i], len) == 0;
		if (in == any)
			return any;
		p += len;
	}
	return !any;
}

static bool
path_ok(const char *v)
{
	return v[0] == '/' || (v[0] == '~' && (v[1] == '\0' || v[1] == '/'));
}

/* Checks v against its key's kind; on error writes the reason into why. */
static int
check_value(const struct key_def *k, const char *v, char *why, size_t whylen)
{
	const char *what = NULL;
	uint64_t n;
	char fpr[65];
	bool b;

	if (k->kind != KEY_SECRET && k->kind != KEY_COMMAND && has_control(v))
		what = "contains a control character";
	else if (v[strspn(v, " \t")] == '\0')
		what = "is empty";
	if (what) {
		snprintf(why, whylen, "%s %s", k->name, what);
		return -EINVAL;
	}
	switch (k->kind) {
	case KEY_TEXT:
	case KEY_COMMAND:
	case KEY_FOLDER:
		return 0;
	case KEY_HOST:
		what = strpbrk(v, " \t/") ? "is not a host name" : NULL;
		break;
	case KEY_PATH:
		what = path_ok(v) ? NULL : "must be an absolute path or start with ~/";
		break;
	case KEY_SECRET:
		/* never quote the value: it is a password */
		what = strpbrk(v, "\r\n") ? "contains a line break" : NULL;
		break;
	case KEY_BOOL:
		what = parse_bool(v, &b) < 0 ? "must be yes or no" : NULL;
		break;
	case KEY_PROTO:
		what = parse_proto(v, &(enum mp_proto){ 0 }) < 0 ? "must be pop3 or imap" : NULL;
		break;
	case KEY_TLS:
		what = parse_tls(v, &(enum mp_tls){ 0 }) < 0 ?
			"must be implicit, starttls or none" : NULL;
		break;
	case KEY_PORT:
		what = parse_ranged(v, 1, 65535, &n) < 0 ?
			"must be a number from 1 to 65535" : NULL;
		break;
	case KEY_DURATION:
		what = parse_timeout(v, &n) < 0 ?
			"must be a duration from 1s to 3600s (as 90, 90s, 5m or 1h)" : NULL;
		break;
	case KEY_INTERVAL:
		what = parse_interval(v, &n) < 0 ?
			"must be a duration from 1s to 30d (as 90, 90s, 5m or 1h)" : NULL;
		break;
	case KEY_PARALLEL:
		what = parse_ranged(v, 1, PARALLEL_MAX, &n) < 0 ?
			"must be a number from 1 to 64" : NULL;
		break;
	case KEY_LOG:
		what = parse_log(v, &(enum mp_log){ 0 }) < 0 ?
			"must be auto, stderr, journal or syslog" : NULL;
		break;
	case KEY_SYNC:
		what = parse_sync(v, &b) < 0 ? "must be batch or file" : NULL;
		break;
	case KEY_SAVE_SENT:
		what = parse_save_sent(v, &(enum mp_save_sent){ 0 }) < 0 ?
			"must be auto, yes or no" : NULL;
		break;
	case KEY_SMTP_TLS:
		/* submission has no plaintext fallback (RFC 8314) */
		what = parse_tls(v, &(enum mp_tls){ 0 }) < 0 || strcasecmp(v, "none") == 0 ?
			"must be implicit or starttls" : NULL;
		break;
	case KEY_OAUTH2:
		what = parse_oauth2(v, &(enum mp_oauth2){ 0 }) < 0 ?
			"must be none, google, microsoft or custom" : NULL;
		break;
	case KEY_URL:
		if (url_has_userinfo(v)) {
			/* not quoted: what stands before the '@' is a secret */
			snprintf(why, whylen, "%s must not hold credentials (user:password@): "
				 "client credentials go in oauth2_client_id / "
				 "oauth2_client_secret", k->name);
			return -EINVAL;
		}
		what = url_ok(v) ? NULL : "must be an https:// URL";
		break;
	case KEY_SIZE:
		what = util_parse_size(v, &n) < 0 ?
			"must be a size (as 500000, 512k, 10M or 1G)" : NULL;
		break;
	case KEY_DAYS:
		what = parse_ranged(v, 1, KEEP_DAYS_MAX, &n) < 0 ?
			"must be a whole number of days from 1 to 36500" : NULL;
		break;
	case KEY_FPR:
		what = parse_fingerprint(v, fpr) < 0 ?
			"must be a SHA-256 fingerprint: 64 hex digits, colons optional" : NULL;
		break;
	case KEY_AUTH:
		if (check_auth(v, why, whylen) < 0)
			return -EINVAL;
		break;
	}
	if (!what)
		return 0;
	if (k->kind == KEY_SECRET)
		snprintf(why, whylen, "%s %s", k->name, what);
	else
		snprintf(why, whylen, "%s \"%.60s\" %s", k->name, v, what);
	return -EINVAL;
}

/* libconfuse parse callback for every key: validate, then keep value and line. */
static int
val_parse(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result)
{
	struct load_ctx *ctx = cur_ctx;
	const struct key_def *k = key_find(opt->name);
	struct cval *v;
	char why[200];
	size_t len;

	if (!ctx || !k || !value)
		return -1;
	if (ctx->overwritten == k) {
		ctx->own_error = true;
		cfg_error(cfg, "%s is set twice (first at line %d)", k->name,
			  ctx->overwritten_line);
		ctx->own_error = false;
		return -1;
	}
	ctx->overwritten = NULL;
	/* Before the checks: an error here must not quote the value either. */
	ctx->secret_tail = k->kind == KEY_SECRET ? cfg->line : 0;
	if (check_value(k, value, why, sizeof(why)) < 0) {
		ctx->secret_tail = 0;
		ctx->own_error = true;
		cfg_error(cfg, "%s", why);
		ctx->own_error = false;
		return -1;
	}
	len = strlen(value);
	v = malloc(sizeof(*v) + len + 1);
	if (!v) {
		mp_err_set(ctx->err, -ENOMEM, MP_EX_TEMPFAIL, "%s: out of memory", ctx->path);
		ctx->rc = ctx->rc ? ctx->rc : -ENOMEM;
		return -1;
	}
	v->key = k;
	v->line = cfg->line;
	v->len = len;
	memcpy(v->s, value, len + 1);
	if (k->kind == KEY_SECRET && ctx->password_line == 0)
		ctx->password_line = v->line;
	*(void **)result = v;
	return 0;
}

/*
 * libconfuse frees a value while parsing only when the same key is
 * assigned again; note it so val_parse() can refuse the second one.
 */
static void
val_free(void *p)
{
	struct cval *v = p;

	if (!v)
		return;
	if (cur_ctx && cur_ctx->parsing && !cur_ctx->overwritten) {
		cur_ctx->overwritten = v->key;
		cur_ctx->overwritten_line = v->line;
	}
	explicit_bzero(v->s, v->len);
	free(v);
}

/*
 * Called by libconfuse after each top-level section. Its `line` then
 * holds where the section ended; replace it with where it began.
 */
static int
section_done(cfg_t *cfg, cfg_opt_t *opt)
{
	struct load_ctx *ctx = cur_ctx;
	cfg_t *sec;
	int line = 0;

	if (!ctx || opt->nvalues == 0)
		return -1;
	if (ctx->sec_done < ctx->nsec_lines)
		line = ctx->sec_lines[ctx->sec_done];
	ctx->sec_done++;
	sec = cfg_opt_getnsec(opt, opt->nvalues - 1);
	if (strcmp(opt->name, "defaults") == 0) {
		if (ctx->defaults_line) {
			ctx_error(ctx, line, "defaults is given twice (first at line %d)",
				  ctx->defaults_line);
			return -1;
		}
		ctx->defaults_line = line;
	}
	if (sec && line > 0)
		sec->line = line;
	(void)cfg;
	return 0;
}

static int
sec_line_add(struct load_ctx *ctx, int line)
{
	int *n = reallocarray(ctx->sec_lines, ctx->nsec_lines + 1, sizeof(*n));

	if (!n)
		return -ENOMEM;
	n[ctx->nsec_lines++] = line;
	ctx->sec_lines = n;
	return 0;
}

/*
 * Blanks comments (#..., //..., / * ... * /) outside quoted strings,
 * keeping newlines, with the same rules as libconfuse's lexer. Records
 * the line of each top-level section's opening brace (a brace right
 * after '=' opens a list instead).
 */
static int
blank_comments(struct load_ctx *ctx, char *buf, size_t len)
{
	enum { S_CODE, S_DQ, S_SQ, S_LINE, S_BLOCK } st = S_CODE;
	int line = 1, depth = 0, open_line = 0, top_line = 0;
	char last = '\n';

	for (size_t i = 0; i < len; i++) {
		char c = buf[i], next = i + 1 < len ? buf[i + 1] : '\0';

		if (c == '\0')
			return ctx_error(ctx, line, "the file contains a NUL byte");
		switch (st) {
		case S_CODE:
			if (c == '"' || c == '\'') {
				st = c == '"' ? S_DQ : S_SQ;
				open_line = line;
			} else if (c == '#' || (c == '/' && (next == '/' || next == '*'))) {
				st = c == '/' && next == '*' ? S_BLOCK : S_LINE;
				open_line = line;
				buf[i] = ' ';
				if (c == '/') {
					buf[++i] = ' ';
					continue;
				}
			} else if (c == '{') {
				if (depth == 0 && last != '=' && sec_line_add(ctx, line) < 0)
					return -ENOMEM;
				if (depth == 0)
					top_line = line;
				depth++;
			} else if (c == '}' && depth > 0) {
				depth--;
			}
			if (st == S_CODE && !isspace((unsigned char)c))
				last = c;
			break;
		case S_DQ:
		case S_SQ:
			if (c == '\\' && next != '\0') {
				i++;
				line += next == '\n';
				continue;
			}
			if (c == (st == S_DQ ? '"' : '\'')) {
				st = S_CODE;
				last = c;
			}
			break;
		case S_LINE:
			if (c == '\n')
				st = S_CODE;
			else
				buf[i] = ' ';
			break;
		case S_BLOCK:
			if (c == '*' && next == '/') {
				buf[i] = buf[i + 1] = ' ';
				i++;
				st = S_CODE;
			} else if (c != '\n') {
				buf[i] = ' ';
			}
			break;
		}
		line += c == '\n';
	}
	/*
	 * libconfuse 3.3 takes the end of the file as the end of an open
	 * section: a truncated file would load without a word.
	 */
	if (st == S_BLOCK)
		return ctx_error(ctx, open_line, "comment is not closed (missing */)");
	if (st == S_DQ || st == S_SQ)
		return ctx_error(ctx, open_line, "string is not closed (missing %c)",
				 st == S_DQ ? '"' : '\'');
	if (depth > 0)
		return ctx_error(ctx, top_line, "'{' is not closed (missing })");
	return 0;
}

/*
 * The buffer of read_file() is full but the file goes on: moves its len
 * bytes (which may hold a password, so the old copy is wiped) into one of
 * the full cap.
 */
static int
grow_to_cap(char **buf, size_t len, size_t *cap)
{
	char *nb;

	nb = malloc(CONFIG_MAX_SIZE + 1);
	if (!nb)
		return -ENOMEM;
	memcpy(nb, *buf, len);
	explicit_bzero(*buf, len);
	free(*buf);
	*buf = nb;
	*cap = CONFIG_MAX_SIZE + 1;
	return 0;
}

/* Reads the whole file through one descriptor so the mode checked is the file read. */
static int
read_file(struct load_ctx *ctx, char **ret_buf, size_t *ret_len, struct stat *ret_st)
{
	char *buf = NULL;
	size_t len = 0, cap;
	int fd, r = 0;

	fd = open(ctx->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		return mp_err_set(ctx->err, r, MP_EX_CONFIG, "%s: %s", ctx->path, strerror(-r));
	}
	if (fstat(fd, ret_st) < 0) {
		r = -errno;
		mp_err_set(ctx->err, r, MP_EX_CONFIG, "%s: %s", ctx->path, strerror(-r));
		goto out;
	}
	if (!S_ISREG(ret_st->st_mode)) {
		r = mp_err_set(ctx->err, -EINVAL, MP_EX_CONFIG, "%s: not a regular file",
			       ctx->path);
		goto out;
	}
	if (ret_st->st_size > CONFIG_MAX_SIZE) {
		r = mp_err_set(ctx->err, -EINVAL, MP_EX_CONFIG, "%s: larger than 1 MiB", ctx->path);
		goto out;
	}
	/*
	 * Sized from fstat(), not the cap: a reload should not cost 1 MiB for
	 * a file of a few lines. A file that grows while it is read gets the
	 * full cap, so it is still read whole or refused as too large.
	 */
	cap = (size_t)ret_st->st_size + 1;
	buf = malloc(cap);
	if (!buf) {
		r = mp_err_oom(ctx->err);
		goto out;
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			r = grow_to_cap(&buf, len, &cap);
			if (r == -ENOMEM)
				mp_err_oom(ctx->err);
			if (r < 0)
				goto out;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			mp_err_set(ctx->err, r, MP_EX_CONFIG, "%s: %s", ctx->path, strerror(-r));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CONFIG_MAX_SIZE) {
			r = mp_err_set(ctx->err, -EINVAL, MP_EX_CONFIG, "%s: larger than 1 MiB",
				       ctx->path);
			goto out;
		}
	}
	buf[len] = '\0';
	*ret_buf = buf;
	*ret_len = len;
	buf = NULL;
out:
	if (buf) {
		explicit_bzero(buf, len);
		free(buf);
	}
	close(fd);
	return r;
}

static int
parse_text(struct load_ctx *ctx, char *buf, size_t len, cfg_t **ret)
{
	cfg_opt_t acct_opts[] = {
#define K(name) CFG_PTR_CB(name, 0, CFGF_NODEFAULT, val_parse, val_free)
		K("protocol"), K("host"), K("port"), K("tls"), K("allow_plaintext"),
		K("tls_ca_file"), K("tls_fingerprint"), K("tls_cert"), K("tls_key"), K("user"),
		K("password"), K("oauth2"), K("oauth2_token_url"), K("oauth2_auth_url"),
		K("oauth2_device_url"), K("oauth2_client_id"), K("oauth2_client_secret"),
		K("oauth2_scope"),
		K("password_file"), K("password_command"), K("auth"), K("maildir"), K("keep"),
		K("keep_days"), K("max_size"), K("timeout"), K("namespaces"), K("mark_seen"),
		K("only_unseen"), K("expunge"), K("interval"), K("idle"), K("sync"),
		K("smtp_host"), K("smtp_port"), K("smtp_tls"), K("smtp_user"), K("smtp_password"),
		K("smtp_password_file"), K("smtp_password_command"), K("from"), K("outbox"),
		K("save_sent"), K("sent_folder"),
		CFG_PTR_LIST_CB("folders", 0, CFGF_NODEFAULT, val_parse, val_free),
		CFG_PTR_LIST_CB("exclude", 0, CFGF_NODEFAULT, val_parse, val_free),
		CFG_END()
	};
	cfg_opt_t root_opts[] = {
		K("state_dir"), K("parallel"), K("log"),
#undef K
		CFG_SEC("defaults", acct_opts, CFGF_NONE),
		CFG_SEC("account", acct_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
		CFG_END()
	};
	cfg_t *cfg;
	FILE *fp;
	int rc;

	cfg = cfg_init(root_opts, CFGF_NONE);
	if (!cfg)
		return -ENOMEM;
	cfg_set_error_function(cfg, conf_errfunc);
	cfg_set_validate_func(cfg, "account", section_done);
	cfg_set_validate_func(cfg, "defaults", section_done);
	*ret = cfg;
	if (len == 0)
		return 0;
	fp = fmemopen(buf, len, "r");
	if (!fp)
		return -errno;
	ctx->parsing = true;
	ctx->text = buf;
	ctx->textlen = len;
	rc = cfg_parse_fp(cfg, fp);
	ctx->text = NULL;
	ctx->parsing = false;
	fclose(fp);
	if (ctx->rc < 0)
		return ctx->rc;
	if (rc != CFG_SUCCESS)
		return ctx_error(ctx, 0, "cannot be parsed");
	return 0;
}

/* The values that make up one account: its own section, then defaults. */
struct acct_src {
	struct load_ctx *ctx;
	cfg_t *sec;
	cfg_t *defs;
	const char *name;
	int line;
	const char *state_dir;
};

static const struct cval *
own(const struct acct_src *src, const char *key)
{
	if (cfg_size(src->sec, key) > 0)
		return cfg_getptr(src->sec, key);
	return NULL;
}

static const struct cval *
get(const struct acct_src *src, const char *key)
{
	const struct cval *v = own(src, key);

	if (!v && src->defs && cfg_size(src->defs, key) > 0)
		v = cfg_getptr(src->defs, key);
	return v;
}

static int MP_PRINTF(3, 4)
acct_error(const struct acct_src *src, int line, const char *fmt, ...)
{
	char msg[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return ctx_error(src->ctx, line, "account \"%s\": %s", src->name, msg);
}

static int
dup_value(const struct acct_src *src, const struct cval *v, bool expand, char **ret)
{
	char *s;

	*ret = NULL;
	if (!v)
		return 0;
	s = expand ? util_expand_home(v->s) : strdup(v->s);
	if (!s && errno == ENOENT)
		return acct_error(src, v->line, "%s: HOME is not set, cannot expand ~",
				  v->key->name);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

/* Account names become state file names: keep them to a safe alphabet. */
static int
check_account_name(const struct acct_src *src)
{
	const char *n = src->name;
	size_t len = strlen(n);

	if (len == 0 || len > ACCOUNT_NAME_MAX || n[0] == '.' ||
	    strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@+") != len)
		return ctx_error(src->ctx, src->line, "account name \"%.64s\" must be 1 to 64 "
				 "letters, digits or . _ - @ + and not start with '.'", n);
	return 0;
}

/*
 * An account whose secret is an OAuth2 token (oauth2 set) or its client
 * certificate (auth = external alone) has no use for a password: one set
 * in its own section is a mistake worth naming; one inherited from
 * defaults is meant for the other accounts and ignored.
 */
static int
acct_secret(const struct acct_src *src, struct mp_account *a)
{
	static const char *const keys[] = { "password", "password_file", "password_command" };
	const struct cval *auth = get(src, "auth"), *oauth = get(src, "oauth2");
	const struct cval *pw[3] = { own(src, keys[0]), own(src, keys[1]), own(src, keys[2]) };
	bool external;
	int n = 0, r;

	a->oauth2 = MP_OAUTH2_NONE;
	if (oauth)
		(void)parse_oauth2(oauth->s, &a->oauth2);
	external = auth && auth_match(auth->s, external_names, ARRAY_SIZE(external_names), false);
	if (a->oauth2 != MP_OAUTH2_NONE || external) {
		for (size_t i = 0; i < ARRAY_SIZE(pw); i++)
			if (pw[i])
				return acct_error(src, pw[i]->line, "%s would never be used: %s",
						  keys[i], external ? "auth = external logs in "
						  "with the client certificate (tls_cert)" :
						  "with oauth2 the secret is an OAuth2 token "
						  "(mailpull authorize)");
		return 0;
	}
	/* the account's own secret replaces every inherited one */
	if (!pw[0] && !pw[1] && !pw[2]) {
		for (size_t i = 0; i < ARRAY_SIZE(pw); i++)
			pw[i] = get(src, keys[i]);
	}
	for (size_t i = 0; i < ARRAY_SIZE(pw); i++)
		n += pw[i] != NULL;
	if (n == 0)
		return acct_error(src, src->line,
				  "one of password, password_file or password_command is required");
	if (n > 1)
		return acct_error(src, src->line,
				  "set only one of password, password_file and password_command");
	if ((r = dup_value(src, pw[0], false, &a->password)) < 0 ||
	    (r = dup_value(src, pw[1], true, &a->password_file)) < 0 ||
	    (r = dup_value(src, pw[2], false, &a->password_command)) < 0)
		return r;
	return 0;
}

static int
acct_required(const struct acct_src *src, struct mp_account *a)
{
	static const char *const required[] = { "protocol", "host", "user", "maildir" };
	const struct cval *proto;
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(required); i++)
		if (!get(src, required[i]))
			return acct_error(src, src->line, "%s is required", required[i]);
	proto = get(src, "protocol");
	(void)parse_proto(proto->s, &a->protocol);
	if ((r = acct_secret(src, a)) < 0)
		return r;
	if ((r = dup_value(src, get(src, "host"), false, &a->host)) < 0 ||
	    (r = dup_value(src, get(src, "user"), false, &a->user)) < 0 ||
	    (r = dup_value(src, get(src, "maildir"), true, &a->maildir)) < 0 ||
	    (r = dup_value(src, get(src, "auth"), false, &a->auth)) < 0)
		return r;
	return 0;
}

/*
 * The built-in OAuth2 keys: the provider's endpoints and scope from its
 * preset unless given, the user's own client id, auth defaulted to
 * xoauth2 (both Google and Microsoft take it on POP3, IMAP and SMTP), and
 * the token file beside the account's state files.
 */
static int
acct_oauth2(const struct acct_src *src, struct mp_account *a)
{
	static const char *const keys[] = {
		"oauth2_token_url", "oauth2_auth_url", "oauth2_device_url", "oauth2_client_id",
		"oauth2_client_secret", "oauth2_scope",
	};
	char **dst[] = {
		&a->oauth2_token_url, &a->oauth2_auth_url, &a->oauth2_device_url,
		&a->oauth2_client_id, &a->oauth2_client_secret, &a->oauth2_scope,
	};
	const char *oname = mp_oauth2_to_string(a->oauth2);
	const struct oauth2_preset *pre = oauth2_preset(a->oauth2);
	const struct cval *v, *auth = get(src, "auth");
	char *esc;
	int r;

	if (a->oauth2 == MP_OAUTH2_NONE) {
		for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
			if ((v = own(src, keys[i])))
				return acct_error(src, v->line, "%s needs oauth2 = google, "
						  "microsoft or custom", keys[i]);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if ((r = dup_value(src, get(src, keys[i]), false, dst[i])) < 0)
			return r;
	if (pre) {
		const char *from[] = { pre->token_url, pre->auth_url, pre->device_url, NULL, NULL,
				       pre->scope };

		for (size_t i = 0; i < ARRAY_SIZE(from); i++)
			if (!*dst[i] && from[i] && !(*dst[i] = strdup(from[i])))
				return -ENOMEM;
	}
	if (!a->oauth2_client_id)
		return acct_error(src, src->line, "oauth2 = %s needs oauth2_client_id, the id of "
				  "the client you registered with the provider (see "
				  "mailpull.conf(5), OAUTH2)", oname);
	if (!a->oauth2_token_url)
		return acct_error(src, src->line, "oauth2 = %s needs oauth2_token_url", oname);
	if (!a->oauth2_auth_url && !a->oauth2_device_url)
		return acct_error(src, src->line, "oauth2 = %s needs oauth2_auth_url or "
				  "oauth2_device_url", oname);
	if (auth && !auth_match(auth->s, oauth2_auth_names, ARRAY_SIZE(oauth2_auth_names), false))
		return acct_error(src, auth->line, "auth = \"%.60s\": with oauth2 the secret is "
				  "an access token, so auth may name only xoauth2 and "
				  "oauthbearer", auth->s);
	if (!a->auth && !(a->auth = strdup("xoauth2")))
		return -ENOMEM;
	if (!(esc = state_escape_account(a->name)))
		return -ENOMEM;
	r = asprintf(&a->oauth2_token_file, "%s/%s.oauth2", src->state_dir, esc);
	free(esc);
	if (r < 0) {
		a->oauth2_token_file = NULL;
		return -ENOMEM;
	}
	return 0;
}

static int
acct_tls(const struct acct_src *src, struct mp_account *a)
{
	const struct cval *tls = get(src, "tls"), *port = get(src, "port");
	const struct cval *plain = get(src, "allow_plaintext");
	const struct cval *ca = get(src, "tls_ca_file"), *fpr = get(src, "tls_fingerprint");
	const struct cval *cert = get(src, "tls_cert"), *key = get(src, "tls_key");
	const struct cval *auth = get(src, "auth"), *oauth = get(src, "oauth2");
	const struct cval *needs_tls = ca ? ca : fpr ? fpr : cert ? cert : key;
	enum mp_oauth2 oauth2;
	static const unsigned ports[MP_PROTO_MAX][2] = { { 995, 110 }, { 993, 143 } };
	uint64_t n;
	int r;

	a->tls = MP_TLS_IMPLICIT;
	if (tls)
		(void)parse_tls(tls->s, &a->tls);
	if (plain)
		(void)parse_bool(plain->s, &a->allow_plaintext);
	if (a->tls == MP_TLS_NONE && !a->allow_plaintext)
		return acct_error(src, tls->line, "tls = none sends the password in clear; "
				  "set allow_plaintext = yes to accept that");
	if (a->tls == MP_TLS_NONE && oauth && parse_oauth2(oauth->s, &oauth2) == 0 &&
	    oauth2 != MP_OAUTH2_NONE)
		return acct_error(src, tls->line, "oauth2 needs TLS: with tls = none the access "
				  "token would cross the network in clear");
	if (a->tls == MP_TLS_NONE && needs_tls)
		return acct_error(src, needs_tls->line, "%s needs TLS, but tls = none",
				  needs_tls->key->name);
	if (key && !cert)
		return acct_error(src, key->line, "tls_key needs tls_cert (the client certificate "
				  "it belongs to)");
	if (auth && !cert &&
	    auth_match(auth->s, external_names, ARRAY_SIZE(external_names), true))
		return acct_error(src, auth->line, "auth = external logs in with a client "
				  "certificate: set tls_cert (and tls_key unless the key is in it)");
	a->port = ports[a->protocol][a->tls == MP_TLS_IMPLICIT ? 0 : 1];
	if (port && parse_ranged(port->s, 1, 65535, &n) == 0)
		a->port = (unsigned)n;
	if ((r = dup_value(src, ca, true, &a->tls_ca_file)) < 0 ||
	    (r = dup_value(src, cert, true, &a->tls_cert)) < 0 ||
	    (r = dup_value(src, key, true, &a->tls_key)) < 0)
		return r;
	if (fpr) {
		a->tls_fingerprint = malloc(65);
		if (!a->tls_fingerprint)
			return -ENOMEM;
		(void)parse_fingerprint(fpr->s, a->tls_fingerprint);
	}
	return 0;
}

static int
acct_limits(const struct acct_src *src, struct mp_account *a)
{
	const struct cval *keep = get(src, "keep"), *days = get(src, "keep_days");
	const struct cval *size = get(src, "max_size"), *timeout = get(src, "timeout");
	const struct cval *interval;
	uint64_t n;

	/* POP3 clients traditionally delete what they fetched; IMAP ones keep it */
	a->keep = a->protocol == MP_PROTO_IMAP;
	a->keep_days = -1;
	if (keep)
		(void)parse_bool(keep->s, &a->keep);
	if (days) {
		if (keep && !a->keep)
			return acct_error(src, days->line, "keep_days needs keep = yes "
					  "(keep = no at line %d deletes at once)", keep->line);
		/* keep_days alone means: keep, then delete after N days */
		a->keep = true;
		if (parse_ranged(days->s, 1, KEEP_DAYS_MAX, &n) == 0)
			a->keep_days = (int64_t)n;
	}
	a->max_size = 0;
	if (size)
		(void)util_parse_size(size->s, &a->max_size);
	a->timeout_s = 60;
	if (timeout && parse_timeout(timeout->s, &n) == 0)
		a->timeout_s = (unsigned)n;
	a->interval_s = INTERVAL_DEFAULT_S;
	if ((interval = get(src, "interval")) && parse_interval(interval->s, &n) == 0)
		a->interval_s = (unsigned)n;
	a->sync_per_file = false;
	if ((interval = get(src, "sync")))
		(void)parse_sync(interval->s, &a->sync_per_file);
	return 0;
}

/* A list key (folders, exclude): the account's own, else the defaults'. */
static int
acct_list(const struct acct_src *src, const char *key, const char *dflt, char ***ret,
	  size_t *ret_n)
{
	cfg_t *from = src->sec;
	unsigned n = cfg_size(src->sec, key);
	char **v;

	if (n == 0 && src->defs && cfg_size(src->defs, key) > 0) {
		from = src->defs;
		n = cfg_size(from, key);
	}
	if (n == 0 && !dflt)
		return 0;
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	*ret = v;
	if (n == 0) {
		v[0] = strdup(dflt);
		if (!v[0])
			return -ENOMEM;
		*ret_n = 1;
		return 0;
	}
	for (unsigned i = 0; i < n; i++) {
		const struct cval *f = cfg_getnptr(from, key, i);

		for (unsigned j = 0; j < i; j++)
			if (strcmp(v[j], f->s) == 0)
				return acct_error(src, f->line, "\"%.100s\" is listed twice in %s",
						  f->s, key);
		v[i] = strdup(f->s);
		if (!v[i])
			return -ENOMEM;
		*ret_n = i + 1;
	}
	return 0;
}

static int
acct_folders(const struct acct_src *src, struct mp_account *a)
{
	static const char *const imap_keys[] = {
		"folders", "exclude", "namespaces", "mark_seen", "only_unseen", "expunge", "idle",
	};
	const struct cval *v;
	int r;

	if (a->protocol == MP_PROTO_POP3) {
		/* IMAP keys from defaults are meant for the IMAP accounts only */
		for (size_t i = 0; i < ARRAY_SIZE(imap_keys); i++) {
			bool list = i < 2;

			if (list ? cfg_size(src->sec, imap_keys[i]) == 0 : !cfg_getptr(src->sec, imap_keys[i]))
				continue;
			v = list ? cfg_getnptr(src->sec, imap_keys[i], 0) : cfg_getptr(src->sec, imap_keys[i]);
			return acct_error(src, v->line, i == 0 ?
					  "POP3 has one mailbox; folders is an IMAP key" :
					  "%s is an IMAP key; this account uses POP3", imap_keys[i]);
		}
		return 0;
	}
	r = acct_list(src, "folders", "INBOX", &a->folders, &a->nfolders);
	if (r == 0)
		r = acct_list(src, "exclude", NULL, &a->exclude, &a->nexclude);
	if (r < 0)
		return r;
	if ((v = get(src, "namespaces")))
		(void)parse_bool(v->s, &a->namespaces);
	if ((v = get(src, "mark_seen")))
		(void)parse_bool(v->s, &a->mark_seen);
	if ((v = get(src, "only_unseen")))
		(void)parse_bool(v->s, &a->only_unseen);
	if ((v = get(src, "expunge")))
		(void)parse_bool(v->s, &a->expunge);
	if ((v = get(src, "idle")))
		(void)parse_bool(v->s, &a->idle);
	return 0;
}

static bool
account_has_password(const struct mp_account *a)
{
	return a->password || a->password_file || a->password_command;
}

/*
 * The sending keys. The submission password is the account's own unless
 * one of the smtp_password keys is given; the account's own secret is then
 * not used for sending.
 */
static int
acct_send(const struct acct_src *src, struct mp_account *a)
{
	static const char *const send_keys[] = {
		"smtp_port", "smtp_tls", "smtp_user", "smtp_password", "smtp_password_file",
		"smtp_password_command", "from", "outbox", "save_sent", "sent_folder",
	};
	const struct cval *host = get(src, "smtp_host"), *v;
	const struct cval *pw[3] = {
		get(src, "smtp_password"), get(src, "smtp_password_file"),
		get(src, "smtp_password_command"),
	};
	uint64_t n;
	int r;

	a->smtp_tls = MP_TLS_IMPLICIT;
	a->save_sent = MP_SAVE_SENT_AUTO;
	if (!host) {
		for (size_t i = 0; i < ARRAY_SIZE(send_keys); i++)
			if ((v = own(src, send_keys[i])))
				return acct_error(src, v->line, "%s needs smtp_host: an account "
						  "without it does not send", send_keys[i]);
		return 0;
	}
	if ((!!pw[0] + !!pw[1] + !!pw[2]) > 1)
		return acct_error(src, src->line, "set only one of smtp_password, "
				  "smtp_password_file and smtp_password_command");
	/* submission logs in as the account does: with its token or its certificate */
	for (size_t i = 0; i < ARRAY_SIZE(pw); i++) {
		if ((v = own(src, send_keys[3 + i])) &&
		    (a->oauth2 != MP_OAUTH2_NONE || !account_has_password(a)))
			return acct_error(src, v->line, "%s would never be used: submission "
					  "logs in as the account does, %s", send_keys[3 + i],
					  a->oauth2 != MP_OAUTH2_NONE ? "with its OAuth2 token" :
					  "with its client certificate (auth = external)");
		if (a->oauth2 != MP_OAUTH2_NONE || !account_has_password(a))
			pw[i] = NULL;
	}
	if ((v = get(src, "smtp_tls")))
		(void)parse_tls(v->s, &a->smtp_tls);
	a->smtp_port = a->smtp_tls == MP_TLS_IMPLICIT ? 465 : 587;
	if ((v = get(src, "smtp_port")) && parse_ranged(v->s, 1, 65535, &n) == 0)
		a->smtp_port = (unsigned)n;
	if ((v = get(src, "save_sent")))
		(void)parse_save_sent(v->s, &a->save_sent);
	if ((v = get(src, "sent_folder")) && a->protocol == MP_PROTO_POP3)
		return acct_error(src, v->line, "sent_folder is an IMAP key: a POP3 account "
				  "keeps its Sent copy locally (maildir/.Sent)");
	if ((r = dup_value(src, host, false, &a->smtp_host)) < 0 ||
	    (r = dup_value(src, get(src, "smtp_user"), false, &a->smtp_user)) < 0 ||
	    (r = dup_value(src, pw[0], false, &a->smtp_password)) < 0 ||
	    (r = dup_value(src, pw[1], true, &a->smtp_password_file)) < 0 ||
	    (r = dup_value(src, pw[2], false, &a->smtp_password_command)) < 0 ||
	    (r = dup_value(src, get(src, "from"), false, &a->from)) < 0 ||
	    (r = dup_value(src, get(src, "outbox"), true, &a->outbox)) < 0 ||
	    (r = dup_value(src, get(src, "sent_folder"), false, &a->sent_folder)) < 0)
		return r;
	if (!a->smtp_user && !(a->smtp_user = strdup(a->user)))
		return -ENOMEM;
	if (!a->outbox && asprintf(&a->outbox, "%s/.Outbox", a->maildir) < 0) {
		a->outbox = NULL;
		return -ENOMEM;
	}
	return 0;
}

/*
 * Two sending accounts with one outbox would each send every message in it
 * (each keeps its own send records): refused.
 */
static int
check_outbox_shared(struct load_ctx *ctx, const struct mp_config *c, unsigned i)
{
	const struct mp_account *a = &c->accounts[i];

	if (!a->smtp_host)
		return 0;
	for (unsigned j = 0; j < i; j++) {
		const struct mp_account *b = &c->accounts[j];

		if (b->smtp_host && strcmp(a->outbox, b->outbox) == 0)
			return ctx_error(ctx, a->line, "account \"%s\": its outbox %s is also the "
					 "outbox of account \"%s\" (line %d): both would send "
					 "every message in it; give each its own outbox", a->name,
					 a->outbox, b->name, b->line);
	}
	return 0;
}

static int
build_account(struct load_ctx *ctx, cfg_t *sec, cfg_t *defs, const char *state_dir,
	      struct mp_account *a)
{
	struct acct_src src = {
		.ctx = ctx, .sec = sec, .defs = defs, .name = cfg_title(sec), .line = sec->line,
		.state_dir = state_dir,
	};
	int r;

	a->line = sec->line;
	if ((r = check_account_name(&src)) < 0)
		return r;
	a->name = strdup(src.name);
	if (!a->name)
		return -ENOMEM;
	if ((r = acct_required(&src, a)) < 0 ||
	    (r = acct_oauth2(&src, a)) < 0 ||
	    (r = acct_tls(&src, a)) < 0 ||
	    (r = acct_limits(&src, a)) < 0 ||
	    (r = acct_folders(&src, a)) < 0 ||
	    (r = acct_send(&src, a)) < 0)
		return r;
	return 0;
}

static char *
default_state_dir(void)
{
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	char *s = NULL;

	/* the XDG spec says to ignore a relative XDG_STATE_HOME */
	if (xdg && xdg[0] == '/') {
		if (asprintf(&s, "%s/mailpull", xdg) < 0)
			return NULL;
	} else if (home && *home) {
		if (asprintf(&s, "%s/.local/state/mailpull", home) < 0)
			return NULL;
	} else {
		errno = ENOENT;
	}
	return s;
}

static int
build_config(struct load_ctx *ctx, cfg_t *cfg, struct mp_config *c)
{
	cfg_t *defs = cfg_getsec(cfg, "defaults");
	unsigned n = cfg_size(cfg, "account");
	const struct cval *sd = NULL, *v;
	uint64_t par;
	int r;

	c->parallel = PARALLEL_DEFAULT;
	if (cfg_size(cfg, "parallel") > 0 && (v = cfg_getptr(cfg, "parallel")) &&
	    parse_ranged(v->s, 1, PARALLEL_MAX, &par) == 0)
		c->parallel = (unsigned)par;
	c->log = MP_LOG_AUTO;
	if (cfg_size(cfg, "log") > 0 && (v = cfg_getptr(cfg, "log")))
		(void)parse_log(v->s, &c->log);
	if (cfg_size(cfg, "state_dir") > 0)
		sd = cfg_getptr(cfg, "state_dir");
	if (sd) {
		c->state_dir = util_expand_home(sd->s);
		if (!c->state_dir && errno == ENOENT)
			return ctx_error(ctx, sd->line,
					 "state_dir: HOME is not set, cannot expand ~");
	} else {
		c->state_dir = default_state_dir();
		if (!c->state_dir && errno == ENOENT)
			return ctx_error(ctx, 0, "neither XDG_STATE_HOME nor HOME is set; "
					 "set state_dir");
	}
	if (!c->state_dir)
		return -ENOMEM;
	if (n == 0)
		return ctx_error(ctx, 0, "no account is defined");
	c->accounts = calloc(n, sizeof(*c->accounts));
	if (!c->accounts)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		c->naccounts = i + 1;
		r = build_account(ctx, cfg_getnsec(cfg, "account", i), defs, c->state_dir,
				  &c->accounts[i]);
		if (r == 0)
			r = check_outbox_shared(ctx, c, i);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * Whoever can change this file can make mailpull run commands
 * (password_command) and trust another CA (tls_ca_file), whatever it holds
 * now: as OpenSSH for its own files, it must be owned by the user running
 * mailpull or by root (who can change any file anyway) and writable by
 * nobody else. And OpenSMTPD's rule: a file holding a password must be
 * ours alone.
 */
static int
check_secrecy(struct load_ctx *ctx, const struct stat *st)
{
	uid_t me = geteuid();

	if (!util_owner_trusted(st->st_uid))
		return mp_err_set(ctx->err, -EACCES, MP_EX_CONFIG,
				  "%s: owned by uid %lu, not by the user running mailpull "
				  "(uid %lu) or root, and its owner can make mailpull run commands; "
				  "run: chown %lu %s", ctx->path, (unsigned long)st->st_uid,
				  (unsigned long)me, (unsigned long)me, ctx->path);
	if (st->st_mode & 022)
		return mp_err_set(ctx->err, -EACCES, MP_EX_CONFIG,
				  "%s: writable by %s, who could make mailpull run commands; "
				  "run: chmod go-w %s", ctx->path,
				  (st->st_mode & 002) ? "others" : "its group", ctx->path);
	if (ctx->password_line == 0 || (st->st_mode & 077) == 0)
		return 0;
	return mp_err_set(ctx->err, -EACCES, MP_EX_CONFIG,
			  "%s: holds a password and is readable by others; run: chmod 600 %s",
			  ctx->path, ctx->path);
}

int
config_load(const char *path, struct mp_config **ret, struct mp_err *err)
{
	struct load_ctx ctx = { .path = path, .err = err };
	struct mp_config *c = NULL;
	cfg_t *cfg = NULL;
	char *buf = NULL;
	size_t len = 0;
	struct stat st;
	int r;

	r = read_file(&ctx, &buf, &len, &st);
	if (r < 0)
		return r;
	cur_ctx = &ctx;
	r = blank_comments(&ctx, buf, len);
	if (r >= 0)
		r = parse_text(&ctx, buf, len, &cfg);
	if (r >= 0)
		r = check_secrecy(&ctx, &st);
	if (r >= 0) {
		c = calloc(1, sizeof(*c));
		r = c ? 0 : -ENOMEM;
	}
	if (r >= 0 && !(c->path = strdup(path)))
		r = -ENOMEM;
	if (r >= 0)
		r = build_config(&ctx, cfg, c);
	if (cfg)
		cfg_free(cfg);
	cur_ctx = NULL;
	explicit_bzero(buf, len);
	free(buf);
	free(ctx.sec_lines);
	if (r < 0) {
		if (r == -ENOMEM)
			mp_err_set(err, r, MP_EX_TEMPFAIL, "%s: out of memory", path);
		config_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

char *
config_default_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	char *s = NULL;

	if (xdg && xdg[0] == '/') {
		if (asprintf(&s, "%s/mailpull/config", xdg) < 0)
			return NULL;
	} else if (home && *home) {
		if (asprintf(&s, "%s/.config/mailpull/config", home) < 0)
			return NULL;
	} else {
		errno = ENOENT;
	}
	return s;
}

const struct mp_account *
config_find(const struct mp_config *cfg, const char *name)
{
	if (!cfg || !name)
		return NULL;
	for (size_t i = 0; i < cfg->naccounts; i++)
		if (strcmp(cfg->accounts[i].name, name) == 0)
			return &cfg->accounts[i];
	return NULL;
}

static bool
str_equal(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static bool
list_equal(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!str_equal(a[i], b[i]))
			return false;
	return true;
}

bool
config_account_equal(const struct mp_account *a, const struct mp_account *b)
{
	return str_equal(a->name, b->name) && a->protocol == b->protocol &&
	       str_equal(a->host, b->host) && a->port == b->port && a->tls == b->tls &&
	       a->allow_plaintext == b->allow_plaintext &&
	       str_equal(a->tls_ca_file, b->tls_ca_file) &&
	       str_equal(a->tls_fingerprint, b->tls_fingerprint) &&
	       str_equal(a->tls_cert, b->tls_cert) && str_equal(a->tls_key, b->tls_key) &&
	       a->oauth2 == b->oauth2 && str_equal(a->oauth2_token_url, b->oauth2_token_url) &&
	       str_equal(a->oauth2_auth_url, b->oauth2_auth_url) &&
	       str_equal(a->oauth2_device_url, b->oauth2_device_url) &&
	       str_equal(a->oauth2_client_id, b->oauth2_client_id) &&
	       str_equal(a->oauth2_client_secret, b->oauth2_client_secret) &&
	       str_equal(a->oauth2_scope, b->oauth2_scope) &&
	       str_equal(a->oauth2_token_file, b->oauth2_token_file) &&
	       str_equal(a->user, b->user) && str_equal(a->password, b->password) &&
	       str_equal(a->password_file, b->password_file) &&
	       str_equal(a->password_command, b->password_command) &&
	       str_equal(a->auth, b->auth) && str_equal(a->maildir, b->maildir) &&
	       a->keep == b->keep && a->keep_days == b->keep_days &&
	       a->max_size == b->max_size && a->timeout_s == b->timeout_s &&
	       list_equal(a->folders, a->nfolders, b->folders, b->nfolders) &&
	       list_equal(a->exclude, a->nexclude, b->exclude, b->nexclude) &&
	       a->namespaces == b->namespaces && a->mark_seen == b->mark_seen &&
	       a->only_unseen == b->only_unseen && a->expunge == b->expunge &&
	       a->interval_s == b->interval_s && a->idle == b->idle &&
	       a->sync_per_file == b->sync_per_file &&
	       str_equal(a->smtp_host, b->smtp_host) && a->smtp_port == b->smtp_port &&
	       a->smtp_tls == b->smtp_tls && str_equal(a->smtp_user, b->smtp_user) &&
	       str_equal(a->smtp_password, b->smtp_password) &&
	       str_equal(a->smtp_password_file, b->smtp_password_file) &&
	       str_equal(a->smtp_password_command, b->smtp_password_command) &&
	       str_equal(a->from, b->from) && str_equal(a->outbox, b->outbox) &&
	       a->save_sent == b->save_sent && str_equal(a->sent_folder, b->sent_folder);
}

static void
account_free(struct mp_account *a)
{
	util_free_secret(a->password);
	free(a->name);
	free(a->host);
	free(a->tls_ca_file);
	free(a->tls_fingerprint);
	free(a->tls_cert);
	free(a->tls_key);
	free(a->oauth2_token_url);
	free(a->oauth2_auth_url);
	free(a->oauth2_device_url);
	free(a->oauth2_client_id);
	util_free_secret(a->oauth2_client_secret);
	free(a->oauth2_scope);
	free(a->oauth2_token_file);
	free(a->user);
	free(a->password_file);
	free(a->password_command);
	free(a->auth);
	free(a->maildir);
	free(a->smtp_host);
	free(a->smtp_user);
	util_free_secret(a->smtp_password);
	free(a->smtp_password_file);
	free(a->smtp_password_command);
	free(a->from);
	free(a->outbox);
	free(a->sent_folder);
	for (size_t i = 0; i < a->nfolders; i++)
		free(a->folders[i]);
	free(a->folders);
	for (size_t i = 0; i < a->nexclude; i++)
		free(a->exclude[i]);
	free(a->exclude);
}

void
config_free(struct mp_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->naccounts; i++)
		account_free(&cfg->accounts[i]);
	free(cfg->accounts);
	free(cfg->state_dir);
	free(cfg->path);
	free(cfg);
}

const char *
mp_save_sent_to_string(enum mp_save_sent s)
{
	switch (s) {
	case MP_SAVE_SENT_AUTO:
		return "auto";
	case MP_SAVE_SENT_YES:
		return "yes";
	case MP_SAVE_SENT_NO:
		return "no";
	case MP_SAVE_SENT_MAX:
		break;
	}
	return "?";
}

const char *
mp_oauth2_to_string(enum mp_oauth2 o)
{
	switch (o) {
	case MP_OAUTH2_NONE:
		return "none";
	case MP_OAUTH2_GOOGLE:
		return "google";
	case MP_OAUTH2_MICROSOFT:
		return "microsoft";
	case MP_OAUTH2_CUSTOM:
		return "custom";
	case MP_OAUTH2_MAX:
		break;
	}
	return "?";
}

/*
 * The providers' endpoints (oauth2.h). Defined here, beside the only user
 * of their defaults, so the configuration needs none of the HTTP code.
 * Google gives no device grant for the mail scope; Microsoft's scope
 * names each protocol's permission (and offline_access for a refresh
 * token), as its IMAP/POP/SMTP OAuth documentation says.
 */
const struct oauth2_preset *
oauth2_preset(enum mp_oauth2 o)
{
	static const struct oauth2_preset google = {
		.token_url = "https://oauth2.googleapis.com/token",
		.auth_url = "https://accounts.google.com/o/oauth2/v2/auth",
		.device_url = NULL,
		.scope = "https://mail.google.com/",
	};
	static const struct oauth2_preset microsoft = {
		.token_url = "https://login.microsoftonline.com/common/oauth2/v2.0/token",
		.auth_url = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
		.device_url = "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
		.scope = "https://outlook.office.com/IMAP.AccessAsUser.All "
			 "https://outlook.office.com/POP.AccessAsUser.All "
			 "https://outlook.office.com/SMTP.Send offline_access",
	};

	switch (o) {
	case MP_OAUTH2_GOOGLE:
		return &google;
	case MP_OAUTH2_MICROSOFT:
		return &microsoft;
	case MP_OAUTH2_NONE:
	case MP_OAUTH2_CUSTOM:
	case MP_OAUTH2_MAX:
		break;
	}
	return NULL;
}

const char *
mp_proto_to_string(enum mp_proto p)
{
	switch (p) {
	case MP_PROTO_POP3:
		return "pop3";
	case MP_PROTO_IMAP:
		return "imap";
	case MP_PROTO_MAX:
		break;
	}
	return "?";
}

const char *
mp_log_to_string(enum mp_log l)
{
	switch (l) {
	case MP_LOG_AUTO:
		return "auto";
	case MP_LOG_STDERR:
		return "stderr";
	case MP_LOG_JOURNAL:
		return "journal";
	case MP_LOG_SYSLOG:
		return "syslog";
	case MP_LOG_MAX:
		break;
	}
	return "?";
}

const char *
mp_tls_to_string(enum mp_tls t)
{
	switch (t) {
	case MP_TLS_IMPLICIT:
		return "implicit";
	case MP_TLS_STARTTLS:
		return "starttls";
	case MP_TLS_NONE:
		return "none";
	case MP_TLS_MAX:
		break;
	}
	return "?";
}
