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
	SASL_MECH_MAX
};

/* "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "USER"; "?" out of range. Cannot fail. */
const char *sasl_mech_to_string(enum sasl_mech m);

/* Case-insensitive name to mech; -EINVAL when unknown. */
int sasl_mech_from_string(const char *s, enum sasl_mech *ret);

/*
 * Chooses the mechanism. server_mechs: space-separated SASL list the server
 * offered (may be NULL or empty). user_ok: the server accepts USER/PASS
 * (POP3) or LOGIN (IMAP, no LOGINDISABLED). wanted: the account's `auth`
 * list, space- or comma-separated, in preference order, or NULL for
 * automatic (PLAIN, then LOGIN, then USER; the OAuth mechanisms are used
 * only when named). Returns 0 and *ret, or -ENOENT when nothing fits,
 * -EINVAL when wanted names an unknown mechanism.
 */
int sasl_choose(const char *server_mechs, bool user_ok, const char *wanted, enum sasl_mech *ret);

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

#endif
