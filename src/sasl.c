/*
 * SASL initial responses as pure functions, and the choice of mechanism.
 * Every buffer that held a secret, encoded or not, is wiped before it is
 * freed: the caller's copy with sasl_free(), ours before returning.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailpull/sasl.h"
#include "mailpull/util.h"

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
static bool
server_offers(const char *server_mechs, enum sasl_mech m)
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
mech_fits(const char *server_mechs, bool user_ok, enum sasl_mech m)
{
	if (m == SASL_USER)
		return user_ok;
	return server_offers(server_mechs, m);
}

int
sasl_choose(const char *server_mechs, bool user_ok, bool cb_ok, const char *wanted,
	    enum sasl_mech *ret)
{
	static const enum sasl_mech automatic[] = { SASL_PLAIN, SASL_LOGIN, SASL_USER };
	const char *pos, *tok;
	enum sasl_mech m;
	size_t len;

	(void)cb_ok;
	if (!wanted) {
		for (size_t i = 0; i < ARRAY_SIZE(automatic); i++) {
			if (mech_fits(server_mechs, user_ok, automatic[i])) {
				*ret = automatic[i];
				return 0;
			}
		}
		return -ENOENT;
	}
	/* A typo in the configuration is reported even when an earlier name fits. */
	pos = wanted;
	while ((len = next_token(&pos, &tok)) > 0)
		if (mech_from_token(tok, len, &m) < 0)
			return -EINVAL;
	pos = wanted;
	while ((len = next_token(&pos, &tok)) > 0) {
		if (mech_from_token(tok, len, &m) == 0 && mech_fits(server_mechs, user_ok, m)) {
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
	struct util_b64 d = UTIL_B64_STD;
	size_t o = 0, pad = 0;
	char *out;

	if (len % 4 != 0)
		return -EBADMSG;
	if (len > 0 && s[len - 1] == '=')
		pad = len > 1 && s[len - 2] == '=' ? 2 : 1;
	out = malloc(len / 4 * 3 + 1);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < len - pad; i++) {
		unsigned char c;
		int r = util_b64_put(&d, s[i], &c);

		if (r < 0)
			goto bad;
		if (r > 0)
			out[o++] = (char)c;
	}
	if (util_b64_end(&d, true) < 0)
		goto bad;
	out[o] = '\0';
	*ret = out;
	if (ret_len)
		*ret_len = o;
	return 0;
bad:
	explicit_bzero(out, len / 4 * 3 + 1);
	free(out);
	return -EBADMSG;
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
 * RFC 5801 section 5.1 saslname: "," and "=" in the authzid are written
 * "=2C" and "=3D". Returns a malloc'd string or NULL.
 */
static char *
gs2_escape(const char *s)
{
	size_t n = 0, o = 0;
	char *out;

	for (const char *p = s; *p; p++)
		n += (*p == ',' || *p == '=') ? 3 : 1;
	out = malloc(n + 1);
	if (!out)
		return NULL;
	for (const char *p = s; *p; p++) {
		if (*p == ',' || *p == '=') {
			memcpy(out + o, *p == ',' ? "=2C" : "=3D", 3);
			o += 3;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
	return out;
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
	euser = gs2_escape(user);
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
