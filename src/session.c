/*
 * Session helpers shared by the POP3 and IMAP runs and the delivery
 * sequence (session.h): login with the secret fetched at the last moment,
 * connection options, the per-message cap, the tmp/ tag, progress.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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

int
session_login(const struct mp_account *a, const char *sasl, bool user_ok, const char *plain,
	      session_auth_fn auth, void *engine, struct mp_err *err)
{
	enum sasl_mech mech;
	char *secret = NULL;
	int ret = sasl_choose(sasl, user_ok, false, a->auth, &mech);

	if (ret < 0)
		return mp_err_set(err, ret, ret == -EINVAL ? MP_EX_CONFIG : MP_EX_PROTOCOL,
				  "no usable authentication mechanism (server offers \"%s\"%s%s; "
				  "auth = %s)", sasl, user_ok ? " and " : ", no ", plain,
				  a->auth ? a->auth : "automatic");
	/* The secret is fetched only now: after TLS is verified, right before use. */
	ret = secret_get(a, a->timeout_s * 1000, &secret, err);
	if (ret < 0)
		return ret;
	ret = auth(engine, mech, a->user, secret, err);
	secret_free(secret);
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
		.max_line = 8192,
	};

	return conn_open(&co, a->tls == MP_TLS_IMPLICIT, ret, err);
}

/* The engine behind session_login() for IMAP. */
static int
imap_auth_cb(void *engine, enum sasl_mech mech, const char *user, const char *secret,
	     struct mp_err *err)
{
	return imap_auth(engine, mech, user, secret, err);
}

int
session_imap_open(const struct mp_account *a, struct imap **ret, struct mp_err *err)
{
	const struct imap_caps *caps;
	struct conn *c = NULL;
	int r = session_connect(a, &c, err);

	*ret = NULL;
	if (r == 0)
		r = imap_open(c, a->tls == MP_TLS_STARTTLS, ret, err);
	if (r < 0 || imap_preauthenticated(*ret))
		return r;
	caps = imap_caps(*ret);
	return session_login(a, caps->sasl, !caps->logindisabled, "LOGIN", imap_auth_cb, *ret, err);
}
