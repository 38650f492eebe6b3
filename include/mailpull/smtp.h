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
 * Errors: -ECONNREFUSED (MP_EX_TEMPFAIL: 4xx/5xx greeting; QUIT is sent
 * after a 554), -EPROTO (MP_EX_PROTOCOL: the STARTTLS refusals above, but
 * a 421 is -ECONNRESET as anywhere; EHLO and HELO refused; a greeting
 * that is no 220 and no refusal), -EINVAL (MP_EX_CONFIG: ehlo_name empty,
 * over 255 bytes or holding a space or control byte), conn_starttls()'s,
 * the engine's errors.
 */
int smtp_open(struct conn *c, const char *ehlo_name, bool starttls, struct smtp **ret,
	      struct mp_err *err) MP_WUR;

/*
 * The text of the 220 greeting, sanitized (it names the server software).
 * Valid while s lives. Cannot fail.
 */
const char *smtp_greeting(const struct smtp *s);

/* What the last EHLO announced. Valid while s lives. Cannot fail. */
const struct smtp_caps *smtp_caps(const struct smtp *s);

/*
 * AUTH (RFC 4954) driven by cl, which this engine only carries base64
 * lines for (see struct sasl_session in sasl.h; user and secret are
 * unused): the initial response goes on the AUTH line when the line fits
 * in 512 octets ("=" when empty), else it answers the first 334; every
 * further 334 goes to sasl_session_step(). A failed step cancels with "*",
 * reads the final reply and is reported as that step's error. A 235 that
 * sasl_session_finish() refuses, or one before any response, is -EPROTO.
 * A 5xx after the server's error report (RFC 7628 section 3.2.2) has that
 * report, decoded, as err->srv. The secret is never logged ("***"). The
 * session stays usable after -EACCES and -EAGAIN.
 * Errors: -EACCES (MP_EX_NOPERM: 535 and other 5xx, the server's text in
 * err->srv; also a step that failed on the server's e=), -EAGAIN
 * (MP_EX_TEMPFAIL: 454 and other 4xx), -EINVAL (MP_EX_CONFIG: cl NULL, as
 * SMTP has no plain login; an initial response cl cannot build), -EPROTO
 * (MP_EX_PROTOCOL: the server did not prove it knows the password, a step
 * the server broke, a code out of place), -EBADMSG, -ERANGE
 * (MP_EX_PROTOCOL: a failed step), the engine's errors.
 */
int smtp_auth(struct smtp *s, struct sasl_session *cl, const char *user, const char *secret,
	      struct mp_err *err) MP_WUR;

/*
 * Supplies the message: sets *ret_data and *ret_len to the next bytes (borrowed
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
	bool dot_sent;             /* the final dot was written: the message may be accepted */
};

/*
 * Sends one message: MAIL FROM (with SIZE=, BODY=8BITMIME, SMTPUTF8 as
 * needed and offered), RCPT TO each, DATA, the body, the final dot. With
 * PIPELINING, MAIL, the RCPTs and DATA go in one write (RFC 2920). A
 * refused recipient does not stop the others; with no recipient accepted
 * the transaction is reset (RSET) and nothing is sent.
 * Returns 0 when the server accepted the message (250 to the final dot),
 * possibly for fewer than all recipients: res->rcpt says which.
 * res->rcpt may be NULL (then per-recipient replies are not kept). When
 * no recipient was accepted but DATA got 354 anyway, a lone "." ends the
 * transaction (RFC 2920 section 3.1) and res->dot_sent stays false.
 * An address beyond ASCII needs SMTPUTF8 even without env->utf8.
 * Errors (before or after MAIL FROM; res says how far it went):
 *   -EINVAL     (MP_EX_DATAERR: no recipient, or an address holding a
 *                control byte, space, "<" or ">", or over 1000 bytes;
 *                nothing sent)
 *   -EMSGSIZE   (MP_EX_DATAERR: env->size over the server's SIZE; nothing sent)
 *   -EILSEQ     (MP_EX_DATAERR: 8-bit or UTF-8 content and the server offers
 *                neither 8BITMIME nor SMTPUTF8; nothing sent)
 *   -EPERM      (MP_EX_DATAERR: a 5xx to MAIL, DATA, the final dot, or to
 *                every RCPT: permanently refused; the session stays usable)
 *   -EAGAIN     (MP_EX_TEMPFAIL: a 4xx to MAIL, DATA, the final dot or to
 *                every RCPT with none 5xx: try later; the session stays usable)
 *               After a refused MAIL, RCPT or DATA the transaction is reset
 *               (RSET); if that fails, the error stays the refusal but later
 *               calls fail with -EPROTO.
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

/*
 * The pure pieces of the engine, for the tests and the fuzz harness. None
 * does I/O or takes a struct mp_err.
 *
 * Reply lines (RFC 5321 section 4.2): smtp_reply_init(), then
 * smtp_reply_feed() with each line as read (without CRLF). Returns 1 when
 * the line was the last of the reply (p->rep is then complete), 0 when
 * more lines follow; *ret_text and *ret_len (may be NULL) point at the line's
 * text after "NNN-" or "NNN " in line (for EHLO keywords). Errors: -EPROTO
 * (not "NNN", "NNN text" or "NNN-text"; a code unlike the first line's;
 * a line fed after the last), -E2BIG (a line over SMTP_LINE_MAX, or more
 * than SMTP_REPLY_LINES lines).
 */
#define SMTP_LINE_MAX 2048
#define SMTP_REPLY_LINES 128

struct smtp_reply_parser {
	struct smtp_reply rep;
	unsigned nlines;
	size_t textlen;
	bool done;
};

void smtp_reply_init(struct smtp_reply_parser *p);
int smtp_reply_feed(struct smtp_reply_parser *p, const char *line, size_t len,
		    const char **ret_text, size_t *ret_len) MP_WUR;

/*
 * One EHLO keyword line (RFC 5321 section 4.1.1.1, the text after
 * "250-"), case-insensitive, into caps: PIPELINING, STARTTLS, 8BITMIME,
 * SMTPUTF8, ENHANCEDSTATUSCODES, SIZE [n], AUTH mechs and the older
 * "AUTH=mechs". Unknown keywords are ignored. Cannot fail.
 */
void smtp_ehlo_line(struct smtp_caps *caps, const char *text, size_t len);

/*
 * The DATA encoder (RFC 5321 sections 2.3.8 and 4.5.2): LF becomes CRLF
 * (a CRLF is kept, a bare CR is kept as it is), a "." starting a line is
 * doubled; the state carries over from one chunk to the next. encode
 * writes at most 2 * len bytes to out and returns how many; finish writes
 * the end (CRLF when the data did not end a line, then ".\r\n"), at most
 * SMTP_DOT_FINISH_MAX bytes, and returns how many. Cannot fail.
 */
struct smtp_dot {
	bool bol;   /* at the start of a line */
	bool cr;    /* the last byte was a CR not yet followed by LF */
};

#define SMTP_DOT_FINISH_MAX 5

void smtp_dot_init(struct smtp_dot *d);
size_t smtp_dot_encode(struct smtp_dot *d, const char *in, size_t len, char *out);
size_t smtp_dot_finish(struct smtp_dot *d, char *out);

#endif
