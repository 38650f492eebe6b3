/*
 * SMTP submission engine (RFC 6409, RFC 5321; RFC 3207 STARTTLS, RFC 4954
 * AUTH, RFC 2920 PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531
 * SMTPUTF8, RFC 2034/3463 enhanced status codes). Speaks the protocol and
 * nothing else: no files, no policy. The message comes from a read callback
 * as it is to be transmitted (LF or CRLF line ends); the engine writes it
 * with CRLF line ends and dot-stuffing, byte-exact otherwise, never holding
 * it whole.
 *
 * "The engine's errors", which every call that talks to the server can
 * return: conn's (conn.h: -ETIMEDOUT, -ECONNRESET and other socket errnos
 * (MP_EX_TEMPFAIL), -EPROTO for TLS (MP_EX_PROTOCOL)); -EPROTO
 * (MP_EX_PROTOCOL: a malformed reply, a reply code out of place); -E2BIG
 * (MP_EX_PROTOCOL: a reply line or a multi-line reply over the caps);
 * -ENOMEM (MP_EX_TEMPFAIL). A 421 reply at any point is -ECONNRESET
 * (MP_EX_TEMPFAIL, the server's text in err->srv). After any of them the
 * session is unusable: every later call but smtp_free() fails with -EPROTO.
 * Server text reaches err->srv sanitized, enhanced status code first.
 */
#ifndef MAILPULL_SMTP_H
#define MAILPULL_SMTP_H

#include "mailpull/common.h"
#include "mailpull/conn.h"
#include "mailpull/err.h"
#include "mailpull/sasl.h"

struct smtp_caps {
	bool pipelining, starttls, eightbitmime, smtputf8, enhancedstatuscodes, size;
	uint64_t size_max;         /* SIZE's limit; 0: none announced */
	char sasl[256];            /* space-separated AUTH mechanisms, "" if none */
};

/* One reply: its code, the enhanced status code ("5.1.1", "" if none) and text (sanitized). */
struct smtp_reply {
	int code;                  /* 0: no reply was read */
	char enh[16];
	char text[256];            /* the lines joined by "; ", truncated */
};

struct smtp;

/*
 * Takes ownership of c (closed by smtp_free(), and on error before
 * returning). Reads the greeting (220, else -ECONNREFUSED with the
 * server's text), sends EHLO ehlo_name (a host name or "[127.0.0.1]"-style
 * literal; falls back to HELO only on a 500/502 to EHLO, and then no
 * extension is used). With starttls: STARTTLS must be advertised, else
 * -EPROTO before any credential; any reply but 220 is -EPROTO;
 * conn_starttls() refuses bytes that followed the 220; every capability
 * learned before TLS is forgotten and EHLO sent again. *ret is freed with
 * smtp_free().
 * Errors: -ECONNREFUSED (MP_EX_TEMPFAIL: 4xx/5xx greeting), -EPROTO
 * (MP_EX_PROTOCOL: the STARTTLS refusals above, EHLO and HELO refused),
 * conn_starttls()'s, the engine's errors.
 */
int smtp_open(struct conn *c, const char *ehlo_name, bool starttls, struct smtp **ret,
	      struct mp_err *err) MP_WUR;

/* What the last EHLO announced. Valid while s lives. Cannot fail. */
const struct smtp_caps *smtp_caps(const struct smtp *s);

/*
 * AUTH with mech (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER; an initial response
 * is sent on the AUTH line, RFC 4954). The secret is never logged.
 * Errors: -EACCES (MP_EX_NOPERM: 535 and other 5xx, the server's text in
 * err->srv), -EAGAIN (MP_EX_TEMPFAIL: 454 and other 4xx), -EINVAL
 * (MP_EX_CONFIG: SASL_USER, which SMTP does not have), the engine's errors.
 */
int smtp_auth(struct smtp *s, enum sasl_mech mech, const char *user, const char *secret,
	      struct mp_err *err) MP_WUR;

/*
 * Supplies the message: sets *ret_data/*ret_len to the next bytes (borrowed
 * until the next call), *ret_len 0 at the end. Returns 0 or a negative
 * errno already recorded in err (the engine stops and passes it up).
 */
typedef int (*smtp_read_fn)(void *ud, const char **ret_data, size_t *ret_len, struct mp_err *err);

struct smtp_envelope {
	const char *from;          /* reverse path without <>; "" for the null sender */
	const char *const *rcpts;  /* forward paths without <> */
	size_t nrcpts;             /* at least 1 */
	uint64_t size;             /* octets as transmitted (CRLF line ends), for SIZE= */
	bool eightbit;             /* the message holds bytes over 127: BODY=8BITMIME */
	bool utf8;                 /* addresses or headers need SMTPUTF8 (RFC 6531) */
};

/* What smtp_send() learned, filled also on error (codes 0 where nothing was read). */
struct smtp_result {
	struct smtp_reply mail;    /* MAIL FROM */
	struct smtp_reply *rcpt;   /* nrcpts entries, caller's array */
	struct smtp_reply data;    /* DATA (354) */
	struct smtp_reply final;   /* the reply to the final dot */
	size_t naccepted;          /* recipients with a 2xx to RCPT */
	bool dot_sent;             /* the final dot was written: from here the message may have been accepted */
};

/*
 * Sends one message: MAIL FROM (with SIZE=, BODY=8BITMIME, SMTPUTF8 as
 * needed and offered), RCPT TO each, DATA, the body, the final dot. With
 * PIPELINING, MAIL, the RCPTs and DATA go in one write (RFC 2920). A
 * refused recipient does not stop the others; with no recipient accepted
 * the transaction is reset (RSET) and nothing is sent.
 * Returns 0 when the server accepted the message (250 to the final dot),
 * possibly for fewer than all recipients: res->rcpt says which.
 * Errors (before or after MAIL FROM; res says how far it went):
 *   -EMSGSIZE   (MP_EX_DATAERR: env->size over the server's SIZE; nothing sent)
 *   -EILSEQ     (MP_EX_DATAERR: 8-bit or UTF-8 content and the server offers
 *                neither 8BITMIME nor SMTPUTF8; nothing sent)
 *   -EPERM      (MP_EX_DATAERR: a 5xx to MAIL, DATA, the final dot, or to
 *                every RCPT: permanently refused; the session stays usable)
 *   -EAGAIN     (MP_EX_TEMPFAIL: a 4xx to MAIL, DATA, the final dot or to
 *                every RCPT with none 5xx: try later; the session stays usable)
 *   the read callback's errors (the session is unusable: the transaction
 *   was cut mid-DATA), the engine's errors (with res->dot_sent set: the
 *   server may have accepted the message).
 */
int smtp_send(struct smtp *s, const struct smtp_envelope *env, smtp_read_fn read, void *ud,
	      struct smtp_result *res, struct mp_err *err) MP_WUR;

/* QUIT and wait for the reply (best effort). Errors: the engine's. */
int smtp_quit(struct smtp *s, struct mp_err *err) MP_WUR;

/* Closes the connection and frees. */
void smtp_free(struct smtp *s);

#endif
