/*
 * What both protocol runs (account_pop3.c, account_imap.c) and the delivery
 * sequence (deliver.c) need about a session with the server: connecting,
 * logging in, the cap on one message, the tag naming the account's
 * files, and the progress line. It calls no account module back, so the
 * modules above it form no cycle. Not for other modules.
 */
#ifndef MAILPULL_SESSION_H
#define MAILPULL_SESSION_H

#include "mailpull/account.h"
#include "mailpull/conn.h"
#include "mailpull/imap.h"
#include "mailpull/sasl.h"

/*
 * An engine's login, for session_login(): cl NULL is the plain login (POP3
 * USER/PASS, IMAP LOGIN) with user and secret, else the SASL exchange cl
 * drives (pop3_auth(), imap_auth(), smtp_auth()).
 */
typedef int (*session_auth_fn)(void *engine, struct sasl_session *cl, const char *user,
			       const char *secret, struct mp_err *err);

/* What session_login() needs to know of the session it logs in; all borrowed. */
struct session_server {
	struct conn *c;            /* the engine's connection, for channel binding */
	const char *sasl;          /* the SASL mechanisms offered, space-separated */
	bool user_ok;              /* the plain login is offered */
	const char *plain;         /* its name in messages ("USER", "LOGIN") */
	const char *greeting;      /* the greeting's text: it names the server software */
	session_auth_fn auth;
	void *engine;
};

/*
 * Chooses the mechanism among what the server offers (the -PLUS ones only
 * when the connection has channel binding), then, only now that TLS is
 * verified, fetches the secret (none for EXTERNAL, whose authorization
 * identity is left empty: the server takes the certificate's), builds the
 * SASL client (channel binding, whether the server offers a -PLUS
 * mechanism, SASLprep unless the greeting names Dovecot, which hashes the
 * password as it is) and runs the engine's login with it. The secret and
 * the client are wiped afterwards.
 * Errors: -EINVAL (MP_EX_CONFIG: auth names an unknown mechanism, or the
 * mechanism cannot carry the user name or secret), -ENOENT
 * (MP_EX_PROTOCOL: nothing the server offers fits), those of secret_get()
 * (-ENOENT, -EACCES, -ECHILD, -ENODATA, -E2BIG, -EBADMSG: MP_EX_CONFIG;
 * -ETIMEDOUT, -ENOMEM, -EIO: MP_EX_TEMPFAIL), -ENOTSUP (MP_EX_CONFIG: an
 * account with built-in OAuth2, whose tokens this build cannot fetch yet),
 * -ENOMEM (MP_EX_TEMPFAIL), and auth's (pop3_auth(), imap_auth(),
 * smtp_auth(): -EACCES when refused, -EPROTO, conn's).
 */
int session_login(const struct mp_account *a, const struct session_server *srv,
		  struct mp_err *err) MP_WUR;

/*
 * An IMAP session with a's server, logged in: session_connect(),
 * imap_open() (STARTTLS when tls = starttls) and session_login() unless
 * the greeting was PREAUTH. *ret is the caller's (imap_free()), NULL on
 * error. Errors: those three's.
 */
int session_imap_open(const struct mp_account *a, struct imap **ret, struct mp_err *err) MP_WUR;

/*
 * The hard cap on one message, whatever max_size says: no server can make
 * a run store more than this for a message (documented in mailpull.conf(5)).
 */
#define SESSION_MSG_MAX ((uint64_t)1 << 30)

/* The cap for one message of a: max_size when set and lower, else SESSION_MSG_MAX. Never fails. */
uint64_t session_msg_cap(const struct mp_account *a);

/* What session_msg_cap() is, for messages: "max_size" or the hard limit. Never fails. */
const char *session_cap_name(const struct mp_account *a);

/*
 * Checks got, the bytes of one message received so far, against the cap:
 * a server can declare a small size (LIST, RFC822.SIZE) and then send
 * without end. Over the cap: -EFBIG (MP_EX_PROTOCOL) with err naming what
 * and num (e.g. "message", 3), the cap and the declared size; else 0.
 */
int session_check_received(const struct mp_account *a, const char *what, uint32_t num,
			   uint64_t declared, uint64_t got, struct mp_err *err) MP_WUR;

/* The tag naming this account's files in tmp/ (8 hex digits). Never fails. */
void session_tag(const char *name, char tag[16]);

/*
 * Connects to the account's server, with implicit TLS when it is
 * configured (STARTTLS/STLS is the engine's). *ret is the caller's
 * (conn_close(), or handed to an engine). Errors as conn_open(): -EINVAL,
 * -ENOENT, -ECONNREFUSED, -ETIMEDOUT, -ENETUNREACH, -EPROTO (TLS), -ENOMEM.
 */
int session_connect(const struct mp_account *a, struct conn **ret, struct mp_err *err) MP_WUR;

/* Progress line on a terminal (rate-limited unless final). Never fails. */
struct session_progress {
	const char *name;
	unsigned done, total;
	int64_t start_ms, last_ms;
	bool on;
};
void session_progress(struct session_progress *p, const struct account_stats *s, bool final);

#endif
