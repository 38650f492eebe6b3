/*
 * POP3 engine (RFC 1939, RFC 2449 CAPA and PIPELINING, RFC 5034 AUTH,
 * RFC 2595 STLS, RFC 6856 UTF8). Speaks the protocol and nothing else: no files, no
 * policy. Runs sequentially over a blocking conn with deadlines.
 *
 * "conn's errors" below are those of conn_read_line(), conn_peek() and
 * conn_write() (conn.h): -ETIMEDOUT, -ECONNRESET and other socket errnos
 * (MP_EX_TEMPFAIL), -E2BIG, -EBADMSG, -EPROTO (MP_EX_PROTOCOL). Every
 * function that talks to the server also returns -EPROTO (MP_EX_PROTOCOL)
 * for a reply that is neither +OK nor -ERR. After an error other than
 * -EACCES or -EINVAL the session is out of step: every later call but
 * pop3_free() fails with -EPROTO (MP_EX_PROTOCOL, "session unusable").
 */
#ifndef MAILPULL_POP3_H
#define MAILPULL_POP3_H

#include "mailpull/common.h"
#include "mailpull/conn.h"
#include "mailpull/sasl.h"
#include "mailpull/sink.h"

struct pop3_caps {
	bool stls, uidl, top, user, pipelining, resp_codes, utf8;
	char sasl[256];   /* space-separated SASL mechanisms, "" if none */
};

struct pop3_msg {
	unsigned num;      /* message number in this session */
	uint64_t size;     /* octets as LISTed (CRLF, stuffed) */
	const char *uidl;  /* RFC 1939: 1 to 70 chars 0x21-0x7E; "" without UIDL */
};

struct pop3;

/*
 * Takes ownership of c (closed by pop3_free(), and on error before
 * returning), reads the greeting and asks CAPA. With stls, issues STLS
 * (refusing with -EPROTO, before any credential, when STLS is not offered
 * or not accepted, or when data follows the +OK), upgrades, and asks CAPA
 * again, forgetting all that was learned before. Then, when CAPA offers
 * UTF8 (RFC 6856), sends UTF8 so that messages with raw UTF-8 headers come
 * unchanged; -ERR to it is no error. *ret is freed with pop3_free().
 * Errors: -EPROTO (MP_EX_PROTOCOL: greeting not +OK, STLS missing or
 * refused), -E2BIG (MP_EX_PROTOCOL: CAPA longer than its cap), -ENOMEM
 * (MP_EX_TEMPFAIL), conn_starttls()'s, conn's.
 */
int pop3_open(struct conn *c, bool stls, struct pop3 **ret, struct mp_err *err) MP_WUR;

/* What CAPA offered, borrowed: valid while p lives. Cannot fail. */
const struct pop3_caps *pop3_caps(const struct pop3 *p);

/*
 * The text of the server's greeting after "+OK", sanitized (it names the
 * server software, whose quirks the login may have to follow). Valid while
 * p lives. Cannot fail.
 */
const char *pop3_greeting(const struct pop3 *p);

/* Whether the server accepted UTF8 in pop3_open(). Cannot fail. */
bool pop3_utf8_mode(const struct pop3 *p);

/*
 * Authenticates. cl NULL: USER/PASS (RFC 1939) with user and secret.
 * Else AUTH (RFC 5034) driven by cl, which this engine only carries base64
 * lines for (see struct sasl_session in sasl.h; user and secret are then
 * unused): the initial response goes on the AUTH line when "AUTH MECH
 * RESP" fits in 255 octets ("=" when empty), else it answers the first
 * "+ "; every further "+ " goes to sasl_session_step(). A failed step
 * cancels with "*", reads the final reply and is reported as that step's
 * error. An +OK that sasl_session_finish() refuses, or one before any
 * response, is -EPROTO. The secret never reaches a trace ("***").
 * Errors: -EACCES (MP_EX_NOPERM: refused, err->srv holds the server's
 * reason, or sasl_session_detail() when the -ERR has no text; MP_EX_TEMPFAIL
 * when the reply says [IN-USE], [LOGIN-DELAY] or [SYS/TEMP]; also a step
 * that failed on the server's e=), -EINVAL (MP_EX_CONFIG: user or secret
 * missing or holding a line break for USER/PASS; an initial response cl
 * cannot build), -EPROTO (MP_EX_PROTOCOL: AUTH answered neither "+ ",
 * +OK nor -ERR; the server did not prove it knows the password; a step
 * the server broke), -EBADMSG, -ERANGE (MP_EX_PROTOCOL: a failed step),
 * -ENOMEM (MP_EX_TEMPFAIL), conn's.
 */
int pop3_auth(struct pop3 *p, struct sasl_session *cl, const char *user, const char *secret,
	      struct mp_err *err) MP_WUR;

/*
 * Lists the mailbox: LIST sizes merged with UIDL (when the server has it).
 * *ret is malloc'd, ordered by number, the UIDL strings in the same block:
 * the caller frees it with one free().
 * Errors: -EPROTO (MP_EX_PROTOCOL: -ERR, malformed or inconsistent
 * listing, duplicate UIDL), -E2BIG (MP_EX_PROTOCOL: more than a million
 * messages), -ENOMEM (MP_EX_TEMPFAIL), conn's.
 */
int pop3_list(struct pop3 *p, struct pop3_msg **ret, size_t *ret_n, struct mp_err *err) MP_WUR;

/*
 * Retrieves messages nums[0..n) (RETR, pipelined when PIPELINING is
 * offered), streaming each decoded body into sink with idx = position.
 * sizes[i] is nums[i]'s LISTed size (NULL: unknown): the pipeline keeps
 * about a round trip's worth of expected bytes in flight, not a fixed
 * number of commands. n may be the whole mailbox.
 * Errors: -EPROTO (MP_EX_PROTOCOL: -ERR reply, server text in err->srv),
 * -EINVAL (MP_EX_USAGE: message number 0; nothing sent), the sink's
 * negative errno (recorded with mp_exit_from_errno()'s class), conn's.
 */
int pop3_retr(struct pop3 *p, const unsigned *nums, const uint64_t *sizes, size_t n,
	      const struct mp_sink *sink, struct mp_err *err) MP_WUR;

/* TOP num lines, streamed like RETR (idx 0). Errors as pop3_retr(). */
int pop3_top(struct pop3 *p, unsigned num, unsigned lines, const struct mp_sink *sink,
	     struct mp_err *err) MP_WUR;

/*
 * DELE each of nums[0..n) (pipelined when offered).
 * Errors: -EPROTO (MP_EX_PROTOCOL: any -ERR), -EINVAL (MP_EX_USAGE: message
 * number 0; nothing sent), conn's.
 */
int pop3_dele(struct pop3 *p, const unsigned *nums, size_t n, struct mp_err *err) MP_WUR;

/*
 * QUIT: the server commits deletions only on a +OK here (RFC 1939 UPDATE
 * state). The session is over afterwards, whatever the outcome.
 * Errors: -EPROTO (MP_EX_PROTOCOL: -ERR, deletions may not have happened),
 * conn's.
 */
int pop3_quit(struct pop3 *p, struct mp_err *err) MP_WUR;

/* Frees and closes the conn without QUIT, so nothing marked is deleted. */
void pop3_free(struct pop3 *p);

#endif
