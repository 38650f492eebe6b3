/*
 * Session helpers shared by the POP3 and IMAP runs and the delivery
 * sequence (session.h): login with the secret fetched at the last moment,
 * connection options, the per-message cap, the tmp/ tag, progress.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "mailpull/log.h"
#include "mailpull/oauth2.h"
#include "mailpull/secret.h"
#include "mailpull/util.h"
#include "session.h"

void
session_progress(struct session_progress *p, const struct account_stats *s, bool final)
{
	int64_t now = util_now_ms();
	double secs;

	if (!p->on || (!final && now - p->last_ms < 200))
		return;
	p->last_ms = now;
	secs = (double)(now - p->start_ms) / 1000.0;
	fprintf(stderr, "\r%s: message %u of %u, %.1f KiB, %.0f KiB/s\033[K%s", p->name, p->done,
		p->total, (double)s->bytes / 1024.0,
		secs > 0 ? (double)s->bytes / 1024.0 / secs : 0.0, final ? "\r\033[K" : "");
	fflush(stderr);
}

/*
 * The secret the mechanism carries, fetched only now: after TLS is
 * verified, right before use. *ret_cached: an OAuth2 access token that
 * came from the token file rather than from the provider just now.
 */
static int
login_secret(const struct mp_account *a, char **ret, bool *ret_cached, struct mp_err *err)
{
	*ret_cached = false;
	/* Built-in OAuth2: the token, refreshed when it is about to expire. */
	if (a->oauth2 != MP_OAUTH2_NONE)
		return oauth2_access_token(a, false, ret, ret_cached, err);
	return secret_get(a, a->timeout_s * 1000, ret, err);
}

/*
 * Dovecot hashes the password's raw bytes for SCRAM, without SASLprep
 * (RFC 4013): a prepared password would not match it. Its greetings say
 * "Dovecot ready." unless the administrator changed them.
 */
static bool
greeting_is_dovecot(const char *greeting)
{
	return greeting && strcasestr(greeting, "dovecot") != NULL;
}

/* The connection's channel binding (RFC 5056), when it has one. */
struct login_cb {
	const char *type;
	unsigned char data[CONN_CB_MAX];
	size_t len;                /* 0: none (no TLS) */
};

/* Runs the engine's SASL exchange for mech with a client built from a, srv and secret. */
static int
login_sasl(const struct mp_account *a, const struct session_server *srv, enum sasl_mech mech,
	   const struct login_cb *cb, const char *secret, struct mp_err *err)
{
	const struct sasl_params sp = {
		.mech = mech,
		.user = mech == SASL_EXTERNAL ? "" : a->user,
		.secret = secret,
		.host = conn_host(srv->c),
		.port = conn_port(srv->c),
		.cb_type = cb->len ? cb->type : NULL,
		.cb_data = cb->len ? cb->data : NULL,
		.cb_len = cb->len,
		.server_plus = sasl_offered(srv->sasl, SASL_SCRAM_SHA_256_PLUS) ||
			       sasl_offered(srv->sasl, SASL_SCRAM_SHA_1_PLUS),
		.saslprep = !greeting_is_dovecot(srv->greeting),
	};
	struct sasl_session *cl = NULL;
	int ret = sasl_session_new(&sp, &cl);

	if (ret == -ENOMEM)
		return mp_err_oom(err);
	if (ret < 0)
		return mp_err_set(err, ret, MP_EX_CONFIG,
				  "cannot log in with %s: the user name or secret is missing or "
				  "cannot be carried by it", sasl_mech_to_string(mech));
	ret = srv->auth(srv->engine, cl, NULL, NULL, err);
	sasl_session_free(cl);
	return ret;
}

int
session_login(const struct mp_account *a, const struct session_server *srv, struct mp_err *err)
{
	struct login_cb cb = { 0 };
	ssize_t n = conn_channel_binding(srv->c, &cb.type, cb.data);
	enum sasl_mech mech;
	char *secret = NULL;
	bool cached = false;
	int ret;

	cb.len = n > 0 ? (size_t)n : 0;
	ret = sasl_choose(srv->sasl, srv->user_ok, cb.len > 0, a->auth, &mech);
	/* What would fit with channel binding is a -PLUS the connection cannot bind. */
	if (ret == -ENOENT && cb.len == 0 &&
	    sasl_choose(srv->sasl, srv->user_ok, true, a->auth, &mech) == 0)
		return mp_err_set(err, -ENOENT, MP_EX_CONFIG,
				  "%s needs channel binding, which this connection cannot give "
				  "(it needs TLS, and on TLS 1.2 a server certificate signed with "
				  "RSA or ECDSA); name another mechanism in auth",
				  sasl_mech_to_string(mech));
	if (ret < 0)
		return mp_err_set(err, ret, ret == -EINVAL ? MP_EX_CONFIG : MP_EX_PROTOCOL,
				  "no usable authentication mechanism (server offers \"%s\"%s%s; "
				  "auth = %s)", srv->sasl, srv->user_ok ? " and " : ", no ",
				  srv->plain, a->auth ? a->auth : "automatic");
	/* EXTERNAL: the TLS client certificate is the credential. */
	if (mech != SASL_EXTERNAL)
		ret = login_secret(a, &secret, &cached, err);
	if (ret == 0 && mech == SASL_USER)
		ret = srv->auth(srv->engine, NULL, a->user, secret, err);
	else if (ret == 0)
		ret = login_sasl(a, srv, mech, &cb, secret, err);
	/*
	 * A provider may revoke an access token before it expires (password
	 * change, sign-out everywhere): a refused cached token gets one fresh
	 * one, on the same connection, rather than failing every run until
	 * the cached one would have expired.
	 */
	if (ret == -EACCES && err->ex == MP_EX_NOPERM && cached) {
		log_acct(LOG_LVL_INFO, a->name, conn_host(srv->c), "account %s: the server "
			 "refused the cached OAuth2 access token; asking the provider for a new one",
			 a->name);
		secret_free(secret);
		secret = NULL;
		ret = oauth2_access_token(a, true, &secret, NULL, err);
		if (ret == 0)
			ret = login_sasl(a, srv, mech, &cb, secret, err);
	}
	secret_free(secret);
	explicit_bzero(cb.data, sizeof(cb.data));
	return ret;
}

uint64_t
session_msg_cap(const struct mp_account *a)
{
	return a->max_size && a->max_size < SESSION_MSG_MAX ? a->max_size : SESSION_MSG_MAX;
}

const char *
session_cap_name(const struct mp_account *a)
{
	return a->max_size && a->max_size < SESSION_MSG_MAX ? "max_size" :
	       "the per-message limit of 1 GiB";
}

int
session_check_received(const struct mp_account *a, const char *what, uint32_t num,
		       uint64_t declared, uint64_t got, struct mp_err *err)
{
	uint64_t cap = session_msg_cap(a);

	if (got <= cap)
		return 0;
	return mp_err_set(err, -EFBIG, MP_EX_PROTOCOL,
			  "%s %" PRIu32 ": the server sent more than %" PRIu64 " bytes (%s) "
			  "after declaring %" PRIu64 "; cut off there, nothing stored or deleted",
			  what, num, cap, session_cap_name(a), declared);
}

void
session_tag(const char *name, char tag[16])
{
	snprintf(tag, 16, "%08x", util_fnv1a(name, strlen(name)));
}

int
session_connect(const struct mp_account *a, struct conn **ret, struct mp_err *err)
{
	const struct conn_opts co = {
		.host = a->host, .port = a->port, .ca_file = a->tls_ca_file,
		.fingerprint = a->tls_fingerprint, .timeout_ms = a->timeout_s * 1000,
		.cert_file = a->tls_cert, .key_file = a->tls_key, .max_line = 8192,
	};

	return conn_open(&co, a->tls == MP_TLS_IMPLICIT, ret, err);
}

/* The engine behind session_login() for IMAP. */
static int
imap_auth_cb(void *engine, struct sasl_session *cl, const char *user, const char *secret,
	     struct mp_err *err)
{
	return imap_auth(engine, cl, user, secret, err);
}

int
session_imap_open(const struct mp_account *a, struct imap **ret, struct mp_err *err)
{
	const struct imap_caps *caps;
	struct session_server srv;
	struct conn *c = NULL;
	int r = session_connect(a, &c, err);

	*ret = NULL;
	if (r == 0)
		r = imap_open(c, a->tls == MP_TLS_STARTTLS, ret, err);
	if (r < 0 || imap_preauthenticated(*ret))
		return r;
	caps = imap_caps(*ret);
	srv = (struct session_server){
		.c = c, .sasl = caps->sasl, .user_ok = !caps->logindisabled, .plain = "LOGIN",
		.greeting = imap_greeting(*ret), .auth = imap_auth_cb, .engine = *ret,
	};
	return session_login(a, &srv, err);
}
