/*
 * SASL mechanisms as pure functions, and the choice of mechanism.
 * Every returned string is malloc'd, owned by the caller, and holds
 * secrets: free it with sasl_free() (wipes before freeing). No function
 * here takes a struct mp_err: errors are only returned (the engines
 * record them).
 */
#ifndef MAILPULL_SASL_H
#define MAILPULL_SASL_H

#include "mailpull/common.h"

enum sasl_mech {
	SASL_PLAIN,        /* RFC 4616 */
	SASL_LOGIN,        /* draft-murchison-sasl-login */
	SASL_XOAUTH2,      /* Google/Microsoft XOAUTH2 */
	SASL_OAUTHBEARER,  /* RFC 7628 */
	SASL_USER,         /* POP3 USER/PASS, IMAP LOGIN: not SASL, the last resort */
	SASL_SCRAM_SHA_1,  /* RFC 5802 */
	SASL_SCRAM_SHA_256, /* RFC 7677 */
	SASL_SCRAM_SHA_1_PLUS,   /* with channel binding (RFC 5802 section 6, RFC 9266) */
	SASL_SCRAM_SHA_256_PLUS,
	SASL_EXTERNAL,     /* RFC 4422 appendix A: the TLS client certificate */
	SASL_MECH_MAX
};

/*
 * "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "USER", "SCRAM-SHA-1",
 * "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "EXTERNAL";
 * "?" out of range. Cannot fail.
 */
const char *sasl_mech_to_string(enum sasl_mech m);

/* Case-insensitive name to mech; -EINVAL when unknown. */
int sasl_mech_from_string(const char *s, enum sasl_mech *ret);

/*
 * Chooses the mechanism. server_mechs: space-separated SASL list the server
 * offered (may be NULL or empty). user_ok: the server accepts USER/PASS
 * (POP3) or LOGIN (IMAP, no LOGINDISABLED). cb_ok: the connection can give
 * channel binding data (TLS is on): without it no -PLUS mechanism is
 * chosen, even when named. wanted: the account's `auth` list, space- or
 * comma-separated, in preference order, or NULL for automatic
 * (SCRAM-SHA-256-PLUS, SCRAM-SHA-1-PLUS, SCRAM-SHA-256, SCRAM-SHA-1, PLAIN,
 * LOGIN, then USER; the OAuth mechanisms and EXTERNAL only when named).
 * "scram" in wanted stands for the four SCRAM mechanisms in that order.
 * Returns 0 and *ret, or -ENOENT when nothing fits, -EINVAL when wanted
 * names an unknown mechanism.
 */
int sasl_choose(const char *server_mechs, bool user_ok, bool cb_ok, const char *wanted,
		enum sasl_mech *ret);

/* Whether server_mechs (as for sasl_choose()) names m. Cannot fail. */
bool sasl_offered(const char *server_mechs, enum sasl_mech m);

/* base64 (RFC 4648, padded) of data[0..len). Errors: -ENOMEM. */
int sasl_base64_encode(const void *data, size_t len, char **ret);

/*
 * Decodes strict RFC 4648 base64: whole quanta, padding only at the end,
 * the bits padding drops zero. *ret is NUL-terminated; *ret_len (ret_len
 * may be NULL) its length. Errors: -EBADMSG (bad character, length or
 * padding), -ENOMEM.
 */
int sasl_base64_decode(const char *s, size_t len, char **ret, size_t *ret_len);

/*
 * The base64 initial response of each mechanism. Errors: -EINVAL (user or
 * secret NULL; for XOAUTH2 and OAUTHBEARER also a value holding the ^A
 * separator; for OAUTHBEARER a port above 65535), -ENOMEM.
 */
int sasl_plain(const char *user, const char *pass, char **ret_b64);
int sasl_xoauth2(const char *user, const char *token, char **ret_b64);
int sasl_oauthbearer(const char *user, const char *host, unsigned port, const char *token, char **ret_b64);

/*
 * The initial response of a one-step mechanism (PLAIN, XOAUTH2,
 * OAUTHBEARER; host and port are the server's, for OAUTHBEARER's kvpairs).
 * Errors: the mechanism's, -EINVAL for the other mechanisms.
 */
int sasl_initial(enum sasl_mech m, const char *user, const char *secret, const char *host,
		 unsigned port, char **ret_b64);

/* Wipes and frees a string that held a secret (util_free_secret()). */
void sasl_free(char *s);

/*
 * A client side of one SASL exchange, for every mechanism but SASL_USER:
 * the engines (pop3, imap, smtp) carry base64 lines between it and the
 * server, and know nothing of any mechanism.
 *
 * The engine sends the initial response on the AUTH line when the
 * protocol allows one (SASL-IR) and it fits, else sends the bare command
 * and answers the server's first (empty) challenge with sasl_session_step():
 * a client that has not given its initial response gives it then. Each
 * further challenge goes to sasl_session_step(); a step that fails means
 * cancel ("*"), read the server's final reply, and report the step's
 * error. When the server says OK, sasl_session_finish() decides: SCRAM
 * fails there unless the server proved it knows the password (a verified
 * v=). When the server refuses, sasl_session_detail() holds what the
 * server's error challenge said (RFC 7628 JSON), to quote.
 */
struct sasl_session;

struct sasl_params {
	enum sasl_mech mech;
	const char *user;          /* authentication identity; "" for EXTERNAL */
	const char *secret;        /* password or OAuth token; NULL for EXTERNAL */
	const char *host;          /* the server's, for OAUTHBEARER's kvpairs */
	unsigned port;
	/*
	 * Channel binding (RFC 5056): cb_type "tls-exporter" (RFC 9266, TLS
	 * 1.3) or "tls-server-end-point" (RFC 5929), and its data; NULL/0 when
	 * the connection has none (no TLS). Required by the -PLUS mechanisms;
	 * for plain SCRAM it sets the GS2 flag: "y" when the client could bind
	 * but server_plus is false, else "n".
	 */
	const char *cb_type;
	const unsigned char *cb_data;
	size_t cb_len;
	bool server_plus;          /* the server advertised a SCRAM-*-PLUS mechanism */
	/*
	 * SASLprep (RFC 4013) the password before SCRAM hashes it; false for a
	 * server known to hash the raw bytes. A password SASLprep refuses is
	 * used as it is.
	 */
	bool saslprep;
};

/*
 * A client for p (its strings are copied; secrets wiped on free). *ret is
 * freed with sasl_session_free(). Errors: -EINVAL (SASL_USER, a missing
 * user or secret, a -PLUS mechanism without channel binding data, a value
 * the mechanism cannot carry), -ENOMEM.
 */
int sasl_session_new(const struct sasl_params *p, struct sasl_session **ret) MP_WUR;

/* The mechanism. Cannot fail. */
enum sasl_mech sasl_session_mech(const struct sasl_session *c);

/*
 * The initial response, base64 ("" for an empty one), or NULL when the
 * mechanism waits for the server (LOGIN). Once asked, it counts as given.
 * *ret is freed with sasl_free(). Errors: -ENOMEM.
 */
int sasl_session_initial(struct sasl_session *c, char **ret_b64) MP_WUR;

/*
 * Answers one challenge (base64, as the server sent it, len bytes, may be
 * empty). *ret_b64 is the response to send ("" for an empty line), freed
 * with sasl_free(). Errors: -EBADMSG (the challenge is not base64, or not
 * what the mechanism allows), -EPROTO (the server broke the mechanism: a
 * nonce that does not extend ours, a wrong server signature, a challenge
 * after the exchange ended), -ERANGE (SCRAM iteration count below 4096 or
 * above 10 000 000), -EACCES (the server reported an error, e=...),
 * -ENOMEM. After an error, sasl_session_error() says what, for the user.
 */
int sasl_session_step(struct sasl_session *c, const char *chal_b64, size_t len,
		     char **ret_b64) MP_WUR;

/*
 * The server said the exchange succeeded. 0, or -EPROTO when the mechanism
 * requires the server's proof and none was verified (SCRAM without a
 * valid v=); sasl_session_error() says so.
 */
int sasl_session_finish(struct sasl_session *c) MP_WUR;

/* Why the last call failed ("" when none did). Valid while c lives. Cannot fail. */
const char *sasl_session_error(const struct sasl_session *c);

/*
 * The server's error report carried in a challenge (RFC 7628 section
 * 3.2.2 JSON, sanitized), "" when none. Valid while c lives. Cannot fail.
 */
const char *sasl_session_detail(const struct sasl_session *c);

/* Wipes and frees; NULL is allowed. */
void sasl_session_free(struct sasl_session *c);

#endif
