/*
 * SASL initial responses as pure functions, the choice of mechanism, and
 * the client side of a whole exchange (SCRAM itself is in scram.c).
 * Every buffer that held a secret, encoded or not, is wiped before it is
 * freed: the caller's copy with sasl_free(), ours before returning.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailpull/sasl.h"
#include "mailpull/util.h"
#include "scram.h"

static const char *const mech_names[SASL_MECH_MAX] = {
	[SASL_PLAIN] = "PLAIN",
	[SASL_LOGIN] = "LOGIN",
	[SASL_XOAUTH2] = "XOAUTH2",
	[SASL_OAUTHBEARER] = "OAUTHBEARER",
	[SASL_USER] = "USER",
	[SASL_SCRAM_SHA_1] = "SCRAM-SHA-1",
	[SASL_SCRAM_SHA_256] = "SCRAM-SHA-256",
	[SASL_SCRAM_SHA_1_PLUS] = "SCRAM-SHA-1-PLUS",
	[SASL_SCRAM_SHA_256_PLUS] = "SCRAM-SHA-256-PLUS",
	[SASL_EXTERNAL] = "EXTERNAL",
};

const char *
sasl_mech_to_string(enum sasl_mech m)
{
	return MP_ENUM_NAME(mech_names, m);
}

static int
mech_from_token(const char *s, size_t len, enum sasl_mech *ret)
{
	for (size_t m = 0; m < SASL_MECH_MAX; m++) {
		if (strlen(mech_names[m]) == len && strncasecmp(s, mech_names[m], len) == 0) {
			*ret = (enum sasl_mech)m;
			return 0;
		}
	}
	return -EINVAL;
}

int
sasl_mech_from_string(const char *s, enum sasl_mech *ret)
{
	if (!s)
		return -EINVAL;
	return mech_from_token(s, strlen(s), ret);
}

/* Walks a list separated by spaces and/or commas; 0 at the end. */
static size_t
next_token(const char **pos, const char **ret_tok)
{
	const char *p = *pos;
	size_t len;

	p += strspn(p, " ,\t");
	len = strcspn(p, " ,\t");
	*ret_tok = p;
	*pos = p + len;
	return len;
}

/* Whether the server's list holds mechanism m (names are case-insensitive, RFC 4422 3.1). */
bool
sasl_offered(const char *server_mechs, enum sasl_mech m)
{
	const char *pos = server_mechs ? server_mechs : "", *tok;
	size_t len;
	enum sasl_mech found;

	while ((len = next_token(&pos, &tok)) > 0)
		if (mech_from_token(tok, len, &found) == 0 && found == m)
			return true;
	return false;
}

static bool
is_plus(enum sasl_mech m)
{
	return m == SASL_SCRAM_SHA_1_PLUS || m == SASL_SCRAM_SHA_256_PLUS;
}

static bool
is_scram(enum sasl_mech m)
{
	return m == SASL_SCRAM_SHA_1 || m == SASL_SCRAM_SHA_256 || is_plus(m);
}

/* A -PLUS mechanism needs channel binding data, which only TLS gives. */
static bool
mech_fits(const char *server_mechs, bool user_ok, bool cb_ok, enum sasl_mech m)
{
	if (m == SASL_USER)
		return user_ok;
	if (is_plus(m) && !cb_ok)
		return false;
	return sasl_offered(server_mechs, m);
}

/*
 * Strongest first: SCRAM with channel binding, SCRAM, then what sends the
 * password. Binding comes before the hash: a server offering
 * SCRAM-SHA-1-PLUS and SCRAM-SHA-256 (or one whose SCRAM-SHA-256-PLUS was
 * stripped on the way) gets the -PLUS one, so someone relaying the TLS
 * session cannot answer; the GS2 flag "y" covers every -PLUS stripped.
 */
static const enum sasl_mech scram_order[] = {
	SASL_SCRAM_SHA_256_PLUS, SASL_SCRAM_SHA_1_PLUS, SASL_SCRAM_SHA_256, SASL_SCRAM_SHA_1,
};

static bool
is_scram_word(const char *tok, size_t len)
{
	return len == 5 && strncasecmp(tok, "scram", 5) == 0;
}

/* The first of list[0..n) that fits. */
static bool
first_fit(const char *server_mechs, bool user_ok, bool cb_ok, const enum sasl_mech *list, size_t n,
	  enum sasl_mech *ret)
{
	for (size_t i = 0; i < n; i++) {
		if (mech_fits(server_mechs, user_ok, cb_ok, list[i])) {
			*ret = list[i];
			return true;
		}
	}
	return false;
}

int
sasl_choose(const char *server_mechs, bool user_ok, bool cb_ok, const char *wanted,
	    enum sasl_mech *ret)
{
	static const enum sasl_mech password[] = { SASL_PLAIN, SASL_LOGIN, SASL_USER };
	const char *pos, *tok;
	enum sasl_mech m;
	size_t len;

	if (!wanted) {
		if (first_fit(server_mechs, user_ok, cb_ok, scram_order, ARRAY_SIZE(scram_order),
			      ret) ||
		    first_fit(server_mechs, user_ok, cb_ok, password, ARRAY_SIZE(password), ret))
			return 0;
		return -ENOENT;
	}
	/* A typo in the configuration is reported even when an earlier name fits. */
	pos = wanted;
	while ((len = next_token(&pos, &tok)) > 0)
		if (!is_scram_word(tok, len) && mech_from_token(tok, len, &m) < 0)
			return -EINVAL;
	pos = wanted;
	while ((len = next_token(&pos, &tok)) > 0) {
		if (is_scram_word(tok, len)) {
			if (first_fit(server_mechs, user_ok, cb_ok, scram_order,
				      ARRAY_SIZE(scram_order), ret))
				return 0;
		} else if (mech_from_token(tok, len, &m) == 0 &&
			   mech_fits(server_mechs, user_ok, cb_ok, m)) {
			*ret = m;
			return 0;
		}
	}
	return -ENOENT;
}

void
sasl_free(char *s)
{
	util_free_secret(s);
}

int
sasl_base64_encode(const void *data, size_t len, char **ret)
{
	const unsigned char *in = data;
	size_t olen, o = 0, i = 0;
	char *out;

	if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
		return -ENOMEM;
	olen = (len + 2) / 3 * 4;
	out = malloc(olen + 1);
	if (!out)
		return -ENOMEM;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = util_b64_digit(v >> 18, '/');
		out[o++] = util_b64_digit((v >> 12) & 63, '/');
		out[o++] = util_b64_digit((v >> 6) & 63, '/');
		out[o++] = util_b64_digit(v & 63, '/');
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		out[o++] = util_b64_digit(v >> 18, '/');
		out[o++] = util_b64_digit((v >> 12) & 63, '/');
		out[o++] = i + 1 < len ? util_b64_digit((v >> 6) & 63, '/') : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	*ret = out;
	return 0;
}

/*
 * Strict RFC 4648 section 4: whole quanta only, padding only at the end,
 * and the bits padding drops must be zero, so every input has one reading.
 */
int
sasl_base64_decode(const char *s, size_t len, char **ret, size_t *ret_len)
{
	size_t cap = len / 4 * 3 + 1, o = 0;
	char *out = malloc(cap);

	if (!out)
		return -ENOMEM;
	if (util_b64_decode_strict(s, len, (unsigned char *)out, cap - 1, &o) < 0) {
		explicit_bzero(out, cap);
		free(out);
		return -EBADMSG;
	}
	out[o] = '\0';
	*ret = out;
	if (ret_len)
		*ret_len = o;
	return 0;
}

/*
 * Concatenates parts into one buffer, encodes it, and wipes the plain
 * copy: the raw message holds the password or token.
 */
static int
encode_parts(const char *const *parts, const size_t *lens, size_t n, char **ret_b64)
{
	size_t total = 0, o = 0;
	char *raw;
	int r;

	for (size_t i = 0; i < n; i++) {
		if (lens[i] > SIZE_MAX / 2 - total)
			return -ENOMEM;
		total += lens[i];
	}
	raw = malloc(total + 1);
	if (!raw)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		memcpy(raw + o, parts[i], lens[i]);
		o += lens[i];
	}
	r = sasl_base64_encode(raw, total, ret_b64);
	explicit_bzero(raw, total + 1);
	free(raw);
	return r;
}

/* RFC 4616 section 2: [authzid] NUL authcid NUL passwd, authzid left empty. */
int
sasl_plain(const char *user, const char *pass, char **ret_b64)
{
	const char *parts[] = { "\0", user, "\0", pass };
	size_t lens[ARRAY_SIZE(parts)];

	if (!user || !pass)
		return -EINVAL;
	lens[0] = 1;
	lens[1] = strlen(user);
	lens[2] = 1;
	lens[3] = strlen(pass);
	return encode_parts(parts, lens, ARRAY_SIZE(parts), ret_b64);
}

/*
 * XOAUTH2 ("user=" U ^A "auth=Bearer " T ^A ^A), as Google and Microsoft
 * document it. ^A separates fields, so neither value may hold one.
 */
int
sasl_xoauth2(const char *user, const char *token, char **ret_b64)
{
	const char *parts[] = { "user=", user, "\001auth=Bearer ", token, "\001\001" };
	size_t lens[ARRAY_SIZE(parts)];

	if (!user || !token || strchr(user, '\001') || strchr(token, '\001'))
		return -EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(parts); i++)
		lens[i] = strlen(parts[i]);
	return encode_parts(parts, lens, ARRAY_SIZE(parts), ret_b64);
}

/*
 * RFC 7628 section 3.1: gs2-header "n,a=" authzid "," then ^A-separated
 * kvpairs host, port (both optional there, sent when known) and auth.
 */
int
sasl_oauthbearer(const char *user, const char *host, unsigned port, const char *token,
		 char **ret_b64)
{
	char portbuf[16] = "";
	const char *parts[10];
	size_t lens[ARRAY_SIZE(parts)], n = 0;
	char *euser;
	int r;

	if (!user || !token || strchr(user, '\001') || strchr(token, '\001') ||
	    (host && strchr(host, '\001')) || port > 65535)
		return -EINVAL;
	euser = util_saslname(user);
	if (!euser)
		return -ENOMEM;
	parts[n++] = "n,a=";
	parts[n++] = euser;
	parts[n++] = ",";
	if (host && *host) {
		parts[n++] = "\001host=";
		parts[n++] = host;
	}
	if (port) {
		snprintf(portbuf, sizeof(portbuf), "\001port=%u", port);
		parts[n++] = portbuf;
	}
	parts[n++] = "\001auth=Bearer ";
	parts[n++] = token;
	for (size_t i = 0; i < n; i++)
		lens[i] = strlen(parts[i]);
	parts[n] = "\001\001";
	lens[n] = 2;
	n++;
	r = encode_parts(parts, lens, n, ret_b64);
	free(euser);
	return r;
}

int
sasl_initial(enum sasl_mech m, const char *user, const char *secret, const char *host,
	     unsigned port, char **ret_b64)
{
	switch (m) {
	case SASL_PLAIN:
		return sasl_plain(user, secret, ret_b64);
	case SASL_XOAUTH2:
		return sasl_xoauth2(user, secret, ret_b64);
	case SASL_OAUTHBEARER:
		return sasl_oauthbearer(user, host, port, secret, ret_b64);
	default:
		return -EINVAL;
	}
}

/* ---- the client side of one exchange -------------------------------------- */

/* Longest challenge taken, base64: more than any mechanism here needs. */
#define CHALLENGE_MAX 16384u

struct sasl_session {
	enum sasl_mech mech;
	char *user;             /* PLAIN, LOGIN, OAuth, EXTERNAL */
	char *secret;           /* PLAIN, LOGIN, OAuth: wiped on free */
	char *host;             /* OAUTHBEARER */
	unsigned port;
	struct scram *scram;    /* SCRAM: holds its own copies */
	bool initial_given;
	bool failed;
	unsigned challenges;    /* answered after the initial response */
	char error[256];
	char detail[512];
};

static int MP_PRINTF(3, 4)
client_fail(struct sasl_session *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
	c->failed = true;
	return code;
}

/* What each mechanism needs of p, checked before anything is copied. */
static int
check_params(const struct sasl_params *p)
{
	enum sasl_mech m = p->mech;

	if ((unsigned)m >= SASL_MECH_MAX || m == SASL_USER)
		return -EINVAL;
	if (m == SASL_EXTERNAL)
		return 0;
	if (!p->user || !*p->user || !p->secret)
		return -EINVAL;
	if ((m == SASL_XOAUTH2 || m == SASL_OAUTHBEARER) &&
	    (strchr(p->user, '\001') || strchr(p->secret, '\001')))
		return -EINVAL;
	if (m == SASL_OAUTHBEARER && (p->port > 65535 || (p->host && strchr(p->host, '\001'))))
		return -EINVAL;
	if (is_plus(m) && (!p->cb_type || !p->cb_data || p->cb_len == 0))
		return -EINVAL;
	return 0;
}

/*
 * RFC 5802 section 6: "p" binds; "y" tells a server that offered no -PLUS
 * that we could have, so a server that did offer one (and lost it to an
 * attacker stripping the list) refuses; "n" when we cannot bind at all.
 */
static int
client_scram(struct sasl_session *c, const struct sasl_params *p)
{
	bool can_bind = p->cb_data && p->cb_len > 0;
	struct scram_params sp = {
		.hash = (p->mech == SASL_SCRAM_SHA_1 || p->mech == SASL_SCRAM_SHA_1_PLUS) ?
			SCRAM_SHA_1 : SCRAM_SHA_256,
		.user = p->user,
		.password = p->secret,
		.saslprep = p->saslprep,
		.gs2 = is_plus(p->mech) ? SCRAM_GS2_P :
		       (can_bind && !p->server_plus) ? SCRAM_GS2_Y : SCRAM_GS2_N,
		.cb_type = p->cb_type,
		.cb_data = p->cb_data,
		.cb_len = p->cb_len,
	};

	return scram_new(&sp, &c->scram);
}

static int
client_copy(struct sasl_session *c, const struct sasl_params *p)
{
	c->user = strdup(p->user ? p->user : "");
	if (!c->user)
		return -ENOMEM;
	if (p->secret) {
		c->secret = strdup(p->secret);
		if (!c->secret)
			return -ENOMEM;
	}
	if (p->host) {
		c->host = strdup(p->host);
		if (!c->host)
			return -ENOMEM;
	}
	c->port = p->port;
	return 0;
}

int
sasl_session_new(const struct sasl_params *p, struct sasl_session **ret)
{
	struct sasl_session *c;
	int r;

	r = check_params(p);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->mech = p->mech;
	r = is_scram(p->mech) ? client_scram(c, p) : client_copy(c, p);
	if (r < 0) {
		sasl_session_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

enum sasl_mech
sasl_session_mech(const struct sasl_session *c)
{
	return c->mech;
}

static int
scram_initial(struct sasl_session *c, char **ret_b64)
{
	char *raw;
	size_t len;
	int r;

	r = scram_client_first(c->scram, &raw, &len);
	if (r < 0)
		return client_fail(c, r, "%s", scram_error(c->scram));
	r = sasl_base64_encode(raw, len, ret_b64);
	free(raw);
	return r;
}

/* RFC 4422 appendix A: empty asks for the certificate's identity. */
static int
external_initial(const struct sasl_session *c, char **ret_b64)
{
	if (!*c->user) {
		*ret_b64 = strdup("");
		return *ret_b64 ? 0 : -ENOMEM;
	}
	return sasl_base64_encode(c->user, strlen(c->user), ret_b64);
}

int
sasl_session_initial(struct sasl_session *c, char **ret_b64)
{
	char *out = NULL;
	int r;

	c->initial_given = true;
	switch (c->mech) {
	case SASL_LOGIN:
		*ret_b64 = NULL;
		return 0;
	case SASL_PLAIN:
	case SASL_XOAUTH2:
	case SASL_OAUTHBEARER:
		r = sasl_initial(c->mech, c->user, c->secret, c->host, c->port, &out);
		break;
	case SASL_EXTERNAL:
		r = external_initial(c, &out);
		break;
	default:
		r = scram_initial(c, &out);
		break;
	}
	if (r == -ENOMEM)
		return client_fail(c, r, "out of memory");
	if (r < 0)
		return c->failed ? r : client_fail(c, r, "cannot build the %s initial response",
						    sasl_mech_to_string(c->mech));
	*ret_b64 = out;
	return 0;
}

/* "" as a malloc'd string: an empty response line. */
static int
empty_response(struct sasl_session *c, char **ret_b64)
{
	*ret_b64 = strdup("");
	return *ret_b64 ? 0 : client_fail(c, -ENOMEM, "out of memory");
}

/* draft-murchison-sasl-login: the user, then the password, whatever the prompts say. */
static int
login_step(struct sasl_session *c, char **ret_b64)
{
	const char *v;
	int r;

	if (c->challenges >= 2)
		return client_fail(c, -EPROTO, "a third LOGIN challenge, after the password");
	v = c->challenges == 0 ? c->user : c->secret;
	r = sasl_base64_encode(v, strlen(v), ret_b64);
	return r < 0 ? client_fail(c, r, "out of memory") : 0;
}

/*
 * RFC 7628 section 3.2.2: a challenge after the token is the server's
 * error report (JSON); kept, sanitized, for the user, and answered with
 * the dummy response (%x01 for OAUTHBEARER; XOAUTH2 takes an empty one)
 * so the server ends the exchange with its failure.
 */
static int
oauth_step(struct sasl_session *c, const char *chal, size_t len, char **ret_b64)
{
	char *json = NULL;
	size_t jlen = 0;
	int r;

	if (c->challenges > 0)
		return client_fail(c, -EPROTO, "a second %s challenge, after its error report",
				   sasl_mech_to_string(c->mech));
	r = sasl_base64_decode(chal, len, &json, &jlen);
	if (r == -ENOMEM)
		return client_fail(c, r, "out of memory");
	if (r < 0)
		return client_fail(c, r, "the server's %s error report is not base64",
				   sasl_mech_to_string(c->mech));
	util_sanitize(c->detail, sizeof(c->detail), json, jlen);
	free(json);
	if (c->mech == SASL_OAUTHBEARER) {
		*ret_b64 = strdup("AQ==");
		return *ret_b64 ? 0 : client_fail(c, -ENOMEM, "out of memory");
	}
	return empty_response(c, ret_b64);
}

/* server-first, then server-final (answered with an empty response). */
static int
scram_step(struct sasl_session *c, const char *chal, size_t len, char **ret_b64)
{
	char *raw = NULL, *out = NULL;
	size_t rlen = 0, olen = 0;
	int r;

	r = sasl_base64_decode(chal, len, &raw, &rlen);
	if (r == -ENOMEM)
		return client_fail(c, r, "out of memory");
	if (r < 0)
		return client_fail(c, r, "the server's SCRAM challenge is not base64");
	if (c->challenges == 0)
		r = scram_server_first(c->scram, raw, rlen, &out, &olen);
	else
		r = scram_server_final(c->scram, raw, rlen);
	free(raw);
	if (r < 0) {
		snprintf(c->detail, sizeof(c->detail), "%s", scram_server_error(c->scram));
		return client_fail(c, r, "%s", scram_error(c->scram));
	}
	if (!out)
		return empty_response(c, ret_b64);
	r = sasl_base64_encode(out, olen, ret_b64);
	util_free_secret(out);
	return r < 0 ? client_fail(c, r, "out of memory") : 0;
}

int
sasl_session_step(struct sasl_session *c, const char *chal_b64, size_t len, char **ret_b64)
{
	int r;

	if (c->failed)
		return client_fail(c, -EPROTO, "a challenge after the exchange failed");
	if (len > CHALLENGE_MAX)
		return client_fail(c, -EBADMSG, "the server's %s challenge is longer than %u bytes",
				   sasl_mech_to_string(c->mech), CHALLENGE_MAX);
	/*
	 * RFC 4422 section 5: without an initial response on the command the
	 * server's first challenge is empty; what it holds says nothing, and
	 * the answer is the initial response.
	 */
	if (!c->initial_given && c->mech != SASL_LOGIN)
		return sasl_session_initial(c, ret_b64);
	switch (c->mech) {
	case SASL_LOGIN:
		r = login_step(c, ret_b64);
		break;
	case SASL_XOAUTH2:
	case SASL_OAUTHBEARER:
		r = oauth_step(c, chal_b64, len, ret_b64);
		break;
	case SASL_PLAIN:
	case SASL_EXTERNAL:
		r = client_fail(c, -EPROTO, "a challenge after the %s response",
				sasl_mech_to_string(c->mech));
		break;
	default:
		r = scram_step(c, chal_b64, len, ret_b64);
		break;
	}
	if (r == 0)
		c->challenges++;
	return r;
}

int
sasl_session_finish(struct sasl_session *c)
{
	if (c->failed)
		return client_fail(c, -EPROTO, "the server accepted an exchange that had failed");
	if (c->scram && !scram_verified(c->scram))
		return client_fail(c, -EPROTO,
				   "the server said the login succeeded without proving it knows "
				   "the password (no valid SCRAM signature); the login counts as "
				   "failed: the server is not the one holding the password, or "
				   "someone is in the middle");
	/* A server that never asked for the password did not check it. */
	if (c->mech == SASL_LOGIN && c->challenges < 2)
		return client_fail(c, -EPROTO, "the server accepted LOGIN before the password");
	return 0;
}

const char *
sasl_session_error(const struct sasl_session *c)
{
	return c->error;
}

const char *
sasl_session_detail(const struct sasl_session *c)
{
	return c->detail;
}

void
sasl_session_free(struct sasl_session *c)
{
	if (!c)
		return;
	free(c->user);
	util_free_secret(c->secret);
	free(c->host);
	scram_free(c->scram);
	explicit_bzero(c, sizeof(*c));
	free(c);
}
