/*
 * IMAP4 engine (RFC 3501 IMAP4rev1 and RFC 9051 IMAP4rev2; RFC 2595
 * STARTTLS, RFC 4959 SASL-IR, RFC 4315 UIDPLUS, RFC 2342 NAMESPACE).
 * Speaks the protocol and nothing else: no files, no policy. Runs
 * sequentially over a blocking conn with deadlines; responses are read with
 * imap_parse, message bodies streamed to a sink, never held whole.
 *
 * Mailbox names cross this interface in UTF-8; the engine converts to and
 * from modified UTF-7 (RFC 3501 section 5.1.3) on the wire unless the
 * server enabled UTF8=ACCEPT (RFC 6855).
 *
 * "The engine's errors" below, which every call that talks to the server
 * can return: conn's (conn.h: -ETIMEDOUT, -ECONNRESET and other socket
 * errnos (MP_EX_TEMPFAIL), -EPROTO for TLS (MP_EX_PROTOCOL)); -EPROTO
 * (MP_EX_PROTOCOL: a malformed response, a tag we did not send, a command
 * completed twice, an unexpected PREAUTH or continuation); -E2BIG
 * (MP_EX_PROTOCOL: a response over the parser's caps on line, literal or
 * nesting, or a command of ours too long to send); -ECONNRESET
 * (MP_EX_TEMPFAIL: an untagged BYE, server text in err->srv); -ENOMEM
 * (MP_EX_TEMPFAIL); -EINVAL (MP_EX_CONFIG: an argument, such as a mailbox
 * name, that cannot be put on the wire; nothing is sent). A tagged NO or
 * BAD ending a command is -EPROTO (MP_EX_PROTOCOL) with the server's text
 * in err->srv unless a function says otherwise; with [REFERRAL] the
 * message says the server refers elsewhere (never followed).
 *
 * After an error other than a tagged NO/BAD, -EINVAL, -ENOTSUP or one
 * found before anything was sent, the session is out of step: every later
 * call but imap_free() fails with -EPROTO (MP_EX_PROTOCOL, "session
 * unusable").
 */
#ifndef MAILPULL_IMAP_H
#define MAILPULL_IMAP_H

#include <signal.h>

#include "mailpull/common.h"
#include "mailpull/conn.h"
#include "mailpull/err.h"
#include "mailpull/sasl.h"

struct imap_caps {
	bool rev1, rev2, starttls, logindisabled, sasl_ir, uidplus, idle, namespace_,
	     literal_plus, literal_minus, enable, utf8_accept, move, esearch, special_use,
	     list_extended;
	char sasl[256];            /* space-separated AUTH= mechanisms, "" if none */
};

/* Message flags we map to Maildir info letters. */
enum {
	IMAP_FLAG_SEEN = 1 << 0,       /* S */
	IMAP_FLAG_ANSWERED = 1 << 1,   /* R */
	IMAP_FLAG_FLAGGED = 1 << 2,    /* F */
	IMAP_FLAG_DELETED = 1 << 3,    /* T */
	IMAP_FLAG_DRAFT = 1 << 4,      /* D */
};

struct imap;

/*
 * Takes ownership of c (closed by imap_free(), and on error before
 * returning). Reads the greeting. With starttls: a PREAUTH greeting is
 * refused (-EPROTO: the session would be authenticated in clear); STARTTLS
 * must be advertised (asking CAPABILITY when the greeting has none) else
 * -EPROTO before any credential; any answer but tagged OK is -EPROTO;
 * conn_starttls() refuses data that followed the OK; every capability
 * learned before TLS is forgotten and CAPABILITY asked again. *ret is
 * freed with imap_free().
 * Errors: -ECONNREFUSED (MP_EX_TEMPFAIL: BYE greeting, the server's text
 * in err->srv), -EPROTO (MP_EX_PROTOCOL: greeting not untagged OK or
 * PREAUTH, and the STARTTLS refusals above), conn_starttls()'s, the
 * engine's errors.
 */
int imap_open(struct conn *c, bool starttls, struct imap **ret, struct mp_err *err) MP_WUR;

/* What the server said it can do, borrowed: valid while m lives. Cannot fail. */
const struct imap_caps *imap_caps(const struct imap *m);

/* True once the server enabled UTF8=ACCEPT (see imap_auth()). Cannot fail. */
bool imap_utf8_enabled(const struct imap *m);

/*
 * The text of the server's greeting (after any response code), sanitized:
 * it names the server software, whose quirks the login may have to
 * follow. Valid while m lives. Cannot fail.
 */
const char *imap_greeting(const struct imap *m);

/* True when the greeting was PREAUTH (allowed on implicit TLS only). Cannot fail. */
bool imap_preauthenticated(const struct imap *m);

/*
 * Authenticates. cl NULL: LOGIN with user and secret (refused with
 * -EPROTO when LOGINDISABLED is advertised). Else AUTHENTICATE driven by
 * cl, which this engine only carries base64 lines for (see struct
 * sasl_session in sasl.h; user and secret are then unused): with SASL-IR
 * (RFC 4959) the initial response goes on the command line ("=" when
 * empty), else the first continuation goes to sasl_session_step(), as does
 * every further one. A failed step cancels with "*", reads the tagged
 * reply (the session stays in step) and is reported as that step's error.
 * A tagged OK that sasl_session_finish() refuses, or one before any
 * response, is -EPROTO. Capabilities are refreshed afterwards (from the
 * tagged OK's [CAPABILITY] code, else by asking). Then, when they offer
 * ENABLE and UTF8=ACCEPT, sends ENABLE UTF8=ACCEPT (RFC 6855), so messages
 * with raw UTF-8 headers come unchanged; mailbox names then cross the wire
 * in UTF-8 instead of modified UTF-7. With a PREAUTH greeting only that is
 * done. Secrets never reach a trace ("***").
 * Errors: -EACCES (NO; err->srv holds the server's text, or
 * sasl_session_detail() when the NO has none; MP_EX_TEMPFAIL for
 * [UNAVAILABLE], [INUSE] and [LIMIT], else MP_EX_NOPERM, also for
 * [REFERRAL]; also a step that failed on the server's e=), -EPROTO
 * (MP_EX_PROTOCOL: BAD, LOGIN under LOGINDISABLED, the server did not
 * prove it knows the password, a step the server broke), -EBADMSG,
 * -ERANGE (MP_EX_PROTOCOL: a failed step), -EINVAL (MP_EX_CONFIG: user or
 * secret missing for LOGIN, an initial response cl cannot build), the
 * engine's errors.
 */
int imap_auth(struct imap *m, struct sasl_session *cl, const char *user, const char *secret,
	      struct mp_err *err) MP_WUR;

struct imap_mailbox {
	char *name;                /* UTF-8 */
	char delim;                /* hierarchy delimiter, '\0' for NIL */
	bool noselect;             /* \Noselect or \NonExistent */
	bool invalid;              /* not valid modified UTF-7: name holds the raw bytes */
	bool sent;                 /* \Sent special-use attribute (RFC 6154) */
};

/*
 * LIST "" pattern (pattern in UTF-8, with * and % wildcards). *ret is a
 * malloc'd array the caller frees with imap_mailboxes_free(). A name that
 * is not valid modified UTF-7 comes as the server sent it, with invalid
 * set: it cannot be selected, only reported.
 * Errors: -EPROTO (MP_EX_PROTOCOL: refused, malformed LIST response),
 * -E2BIG (MP_EX_PROTOCOL: more mailboxes than the engine takes), the
 * engine's errors.
 */
int imap_list(struct imap *m, const char *pattern, struct imap_mailbox **ret, size_t *ret_n,
	      struct mp_err *err) MP_WUR;

/*
 * Every mailbox with its special-use attributes: LIST "" "*" RETURN
 * (SPECIAL-USE) when the server offers SPECIAL-USE (RFC 6154 section 5.1;
 * the SPECIAL-USE selection option would leave out the other mailboxes),
 * else plain LIST "" "*" (attributes as the server gives them unasked).
 * As imap_list() otherwise.
 */
int imap_list_special(struct imap *m, struct imap_mailbox **ret, size_t *ret_n,
		      struct mp_err *err) MP_WUR;

/*
 * CREATE name (UTF-8). A mailbox that already exists ([ALREADYEXISTS], RFC
 * 5530) is success. Errors: -EPROTO (MP_EX_PROTOCOL: refused, the server's
 * text in err->srv), the engine's errors.
 */
int imap_create(struct imap *m, const char *name, struct mp_err *err) MP_WUR;

/*
 * Supplies a message for imap_append(): the next bytes into *ret_data and
 * *ret_len (0 at the end), LF or CRLF line ends; returns 0 or a negative
 * errno recorded in err. Same shape as smtp_read_fn. The data stays valid
 * until the next call.
 */
typedef int (*imap_read_fn)(void *ud, const char **ret_data, size_t *ret_len, struct mp_err *err);

/* Goes back to the message's first byte; 0 or a negative errno recorded in err. */
typedef int (*imap_rewind_fn)(void *ud, struct mp_err *err);

/*
 * APPEND to mailbox (UTF-8) with the flags (IMAP_FLAG_*) of a message of
 * exactly size octets once its line ends are CRLF: the engine turns bare
 * LF into CRLF as it sends (a CRLF stays as it is, a bare CR too). The
 * message is read twice: once, before anything is sent, to check its size
 * and that it holds no NUL byte (an IMAP literal cannot carry one, RFC
 * 3501 section 4.3), then, after rewind, to send it in large writes. A
 * synchronizing literal waits for the continuation; LITERAL+ (or LITERAL-
 * up to 4096 octets) does not. With UIDPLUS the APPENDUID goes to
 * *ret_uidvalidity and *ret_uid (both 0 when the server gives none;
 * either pointer may be NULL).
 * Errors: -EINVAL (MP_EX_DATAERR: size 0 or over 1 GiB, or a NUL byte in
 * the message; MP_EX_CONFIG: a mailbox name that cannot be sent; nothing
 * sent), -EMSGSIZE (MP_EX_PROTOCOL: the message has another size than
 * announced: nothing sent, the session usable; or it changed between the
 * two reads: the session is unusable), -ENOENT (MP_EX_PROTOCOL:
 * [TRYCREATE], the mailbox does not exist; the session stays usable),
 * -EPROTO (refused), the callbacks' errors (the session is unusable when
 * sending had begun), the engine's errors.
 */
int imap_append(struct imap *m, const char *mailbox, unsigned flags, uint64_t size,
		imap_read_fn read, imap_rewind_fn rewind, void *ud, uint32_t *ret_uidvalidity,
		uint32_t *ret_uid, struct mp_err *err) MP_WUR;

/* Frees the n mailboxes of v and v. */
void imap_mailboxes_free(struct imap_mailbox *v, size_t n);

struct imap_namespace {
	char *prefix;              /* UTF-8, e.g. "Shared/" or "#shared." */
	char delim;
};

/*
 * NAMESPACE (RFC 2342): the other-users and shared namespaces (personal is
 * not returned), freed with imap_namespaces_free(). Without the
 * capability: 0 and empty results. Unlike the default, *ret = NULL and
 * *ret_n = 0 are set also when the command then fails.
 * Errors: -EPROTO (MP_EX_PROTOCOL: refused, malformed response), -E2BIG
 * (MP_EX_PROTOCOL: more namespaces than the engine takes), the engine's
 * errors.
 */
int imap_namespaces(struct imap *m, struct imap_namespace **ret, size_t *ret_n,
		    struct mp_err *err) MP_WUR;

/* Frees the n namespaces of v and v. */
void imap_namespaces_free(struct imap_namespace *v, size_t n);

struct imap_folder {
	uint32_t uidvalidity;
	uint32_t uidnext;          /* 0 when the server did not say */
	uint32_t exists;
	bool read_only;
};

/*
 * SELECT (or EXAMINE when read_only) the mailbox name (UTF-8).
 * Errors: -ENOENT (MP_EX_TEMPFAIL: NO, no such mailbox), -EREMOTE
 * (MP_EX_PROTOCOL: NO [REFERRAL], the mailbox is on another server, RFC
 * 2193; never followed), -EPROTO (MP_EX_PROTOCOL: BAD, malformed
 * UIDVALIDITY/UIDNEXT, or no UIDVALIDITY), the engine's errors.
 */
int imap_select(struct imap *m, const char *name, bool read_only, struct imap_folder *ret,
		struct mp_err *err) MP_WUR;

struct imap_msginfo {
	uint32_t uid;
	uint64_t size;             /* RFC822.SIZE */
	unsigned flags;            /* IMAP_FLAG_* */
	int64_t internaldate;      /* Unix seconds, 0 when unknown */
};

/*
 * Lists the messages with UID >= from_uid in the selected mailbox:
 * UID FETCH from:* (UID FLAGS RFC822.SIZE INTERNALDATE), discarding the
 * one message a server returns for "n:*" when n is past the last UID.
 * *ret is malloc'd (caller frees), sorted by UID, one per UID.
 * Errors: -EPROTO (MP_EX_PROTOCOL: refused, malformed FETCH), -E2BIG
 * (MP_EX_PROTOCOL: more messages than the engine takes), the engine's
 * errors.
 */
int imap_list_messages(struct imap *m, uint32_t from_uid, struct imap_msginfo **ret,
		       size_t *ret_n, struct mp_err *err) MP_WUR;

/*
 * UID FETCH uids (UID FLAGS RFC822.SIZE): what the server still has of
 * these UIDs (one it does not have simply does not come back). Responses
 * for other UIDs are ignored. *ret is malloc'd (caller frees), sorted by
 * UID; internaldate is 0.
 * Errors: -EINVAL (MP_EX_USAGE: UID 0) and -E2BIG (MP_EX_USAGE: more UIDs
 * than the engine takes at once), both before anything is sent; -EPROTO
 * (MP_EX_PROTOCOL: refused or malformed), the engine's errors.
 */
int imap_fetch_info(struct imap *m, const uint32_t *uids, size_t n, struct imap_msginfo **ret,
		    size_t *ret_n, struct mp_err *err) MP_WUR;

/*
 * The number of FETCH responses that carried no valid UID (absent, 0, or
 * past 2^32-1) since the last call, and resets it. Listings and envelope
 * fetches leave such a message out; imap_fetch_bodies() aborts its body.
 * The engine does not log them: the policy reports them. Cannot fail.
 */
unsigned imap_take_bad_uids(struct imap *m);

/*
 * UID SEARCH with the given criteria (e.g. "UNSEEN", "BEFORE 1-Jan-2026",
 * "DELETED"), restricted to the UID range lo:hi (lo 0 is 1). *ret
 * malloc'd (caller frees), sorted, without duplicates.
 * Errors: -EINVAL (MP_EX_USAGE: no criteria, hi < lo, criteria not
 * printable ASCII; nothing sent), -EPROTO (MP_EX_PROTOCOL: refused,
 * malformed SEARCH), -E2BIG (MP_EX_PROTOCOL: more results than the engine
 * takes), the engine's errors.
 */
int imap_search(struct imap *m, const char *criteria, uint32_t lo, uint32_t hi,
		uint32_t **ret, size_t *ret_n, struct mp_err *err) MP_WUR;

/*
 * Where fetched bodies go. begin() when a body literal starts; data() with
 * bytes already turned from CRLF into LF (bare CR kept); end() when the
 * whole FETCH response is in, with the UID and flags it carried (they may
 * follow the body on the wire); abort() instead of end() when the response
 * turned out unusable (no UID). A callback's negative errno aborts the
 * command and is returned, recorded with mp_exit_from_errno()'s class; the
 * session is then out of step. buf is borrowed: valid only during data().
 */
struct imap_fetch_sink {
	int (*begin)(void *ud, uint64_t size);
	int (*data)(void *ud, const char *buf, size_t len);
	int (*end)(void *ud, uint32_t uid, unsigned flags);
	void (*abort)(void *ud);
	void *ud;
};

/*
 * UID FETCH uids (UID FLAGS BODY.PEEK[]) — BODY[] when mark_seen — with
 * the UID set compressed into ranges and split into commands of bounded
 * length, pipelined. Messages expunged meanwhile simply do not arrive.
 * Unsolicited responses (EXISTS, EXPUNGE, FETCH FLAGS) are tolerated.
 * A body sent twice, or for a UID not asked for, is aborted (abort()).
 * Errors: as imap_fetch_info(), and the sink's errors.
 */
int imap_fetch_bodies(struct imap *m, const uint32_t *uids, size_t n, bool mark_seen,
		      const struct imap_fetch_sink *sink, struct mp_err *err) MP_WUR;

struct imap_envelope {
	uint32_t uid;
	uint64_t size;
	char *date;                /* as sent (RFC 5322 date), may be NULL */
	char *from;                /* "Name <addr>" raw (encoded words not decoded), may be NULL */
	char *subject;             /* raw, may be NULL */
	char *message_id;          /* raw, may be NULL */
};

/*
 * UID FETCH uids (UID RFC822.SIZE ENVELOPE): no body is transferred.
 * *ret malloc'd, sorted by UID, one per UID; free with
 * imap_envelopes_free().
 * Errors: as imap_fetch_info() (-EPROTO also for a malformed ENVELOPE).
 */
int imap_fetch_envelopes(struct imap *m, const uint32_t *uids, size_t n,
			 struct imap_envelope **ret, size_t *ret_n, struct mp_err *err) MP_WUR;

/* Frees the strings of the n envelopes of v and v. */
void imap_envelopes_free(struct imap_envelope *v, size_t n);

/*
 * UID STORE uids +FLAGS.SILENT (\Deleted), or (\Seen) with seen.
 * Errors: -EINVAL and -E2BIG (MP_EX_USAGE) as imap_fetch_info(), -EPROTO
 * (MP_EX_PROTOCOL: refused), the engine's errors.
 */
int imap_store_flag(struct imap *m, const uint32_t *uids, size_t n, bool seen,
		    struct mp_err *err) MP_WUR;

/*
 * UID EXPUNGE uids (RFC 4315): removes only these. imap_expunge() is the
 * plain EXPUNGE, which also removes what other clients marked \Deleted:
 * only on explicit request.
 * Errors: -ENOTSUP (MP_EX_PROTOCOL: no UIDPLUS, imap_uid_expunge() only;
 * nothing sent), otherwise as imap_store_flag().
 */
int imap_uid_expunge(struct imap *m, const uint32_t *uids, size_t n, struct mp_err *err) MP_WUR;
int imap_expunge(struct imap *m, struct mp_err *err) MP_WUR;

/*
 * IDLE (RFC 2177) on the selected mailbox until the server reports more
 * messages than the mailbox had (EXISTS), max_ms passes (callers keep it
 * under 29 minutes, RFC 2177 section 3), or a signal interrupts the wait
 * and *stop is non-zero; then DONE and the tagged OK. Returns 1 (new mail)
 * or 0 (time up or stopped). The silence is waited out with conn_wait(),
 * outside CONN_MIN_RATE; each response, once begun, is read under the
 * normal rules. stop may be NULL; when *stop is already set nothing is
 * sent.
 * Errors: -ENOTSUP (MP_EX_PROTOCOL: no IDLE capability; nothing sent),
 * -EPROTO (MP_EX_PROTOCOL: IDLE refused with NO/BAD, err->srv holding the
 * server's text, the session still usable; or a protocol violation),
 * -ECONNRESET (MP_EX_TEMPFAIL: BYE while idling), the engine's errors.
 */
int imap_idle(struct imap *m, unsigned max_ms, volatile sig_atomic_t *stop,
	      struct mp_err *err) MP_WUR;

/*
 * LOGOUT, waiting for the tagged OK (a server closing right after its BYE
 * counts as done). The session is over afterwards, whatever the outcome.
 * Errors: -EPROTO (MP_EX_PROTOCOL: refused), the engine's errors.
 */
int imap_logout(struct imap *m, struct mp_err *err) MP_WUR;

/* Frees m and closes its conn without LOGOUT. */
void imap_free(struct imap *m);

#endif
