/*
 * The client side of SCRAM (RFC 5802, RFC 7677 for SHA-256, RFC 9266 for
 * tls-exporter binding) on raw messages, without base64 framing or any
 * I/O: sasl.c carries them. The client nonce may be given, so the
 * published exchanges can be replayed; the parsers are pure functions.
 * Calls no other module of mailpull but util. Not for other modules.
 */
#ifndef MAILPULL_SCRAM_H
#define MAILPULL_SCRAM_H

#include "mailpull/common.h"

/* Iteration counts accepted from a server (RFC 7677 section 4 asks 4096 at least). */
#define SCRAM_ITER_MIN 4096u
#define SCRAM_ITER_MAX 10000000u

/* Longest server message accepted, and the longest nonce and salt in it. */
#define SCRAM_MSG_MAX 4096u
#define SCRAM_NONCE_MAX 512u
#define SCRAM_SALT_B64_MAX 512u
#define SCRAM_COUNT_DIGITS 20u

enum scram_hash {
	SCRAM_SHA_1,
	SCRAM_SHA_256,
};

/* The GS2 channel binding flag (RFC 5802 section 7, gs2-cbind-flag). */
enum scram_gs2 {
	SCRAM_GS2_N,  /* the client cannot bind */
	SCRAM_GS2_Y,  /* the client could bind, but thinks the server cannot */
	SCRAM_GS2_P,  /* bound: cb_type and cb_data required */
};

struct scram_params {
	enum scram_hash hash;
	const char *user;             /* sent as saslname, "," and "=" escaped */
	const char *password;
	bool saslprep;                /* SASLprep the password, raw bytes if it refuses */
	enum scram_gs2 gs2;
	const char *cb_type;          /* SCRAM_GS2_P: "tls-exporter", "tls-server-end-point" */
	const unsigned char *cb_data; /* SCRAM_GS2_P: the binding data */
	size_t cb_len;
	/* The client nonce, printable ASCII without ","; NULL: 24 random bytes in base64. */
	const char *nonce;
};

struct scram;

/*
 * A client for p (everything copied; the password wiped on free).
 * Errors: -EINVAL (user or password NULL, an empty user, a user over 1024
 * bytes, a bad nonce, SCRAM_GS2_P without cb_type or cb_data or with a
 * cb_type that is not a cb-name), -EIO (no random bytes), -ENOMEM.
 */
int scram_new(const struct scram_params *p, struct scram **ret) MP_WUR;

/*
 * The client-first-message (gs2-header "n=" saslname ",r=" nonce), raw,
 * NUL-terminated, *ret_len its length; the caller frees it. Errors:
 * -EPROTO (called twice), -ENOMEM.
 */
int scram_client_first(struct scram *s, char **ret, size_t *ret_len) MP_WUR;

/*
 * Takes the server-first-message msg[0..len) and returns the
 * client-final-message (with the proof: free it with util_free_secret()).
 * Errors: -EBADMSG (malformed, over the caps, bad salt base64), -EPROTO (a
 * nonce that does not extend ours, a mandatory extension m=, out of
 * order), -ERANGE (iteration count outside SCRAM_ITER_MIN..MAX), -EACCES
 * (e=), -ENOMEM. scram_error() says which.
 */
int scram_server_first(struct scram *s, const char *msg, size_t len, char **ret,
		       size_t *ret_len) MP_WUR;

/*
 * Checks the server-final-message msg[0..len): 0 when v= is the server
 * signature. Errors: -EPROTO (no v=, a wrong one, out of order), -EBADMSG
 * (malformed), -EACCES (e=).
 */
int scram_server_final(struct scram *s, const char *msg, size_t len) MP_WUR;

/* Whether the server's signature was verified. Cannot fail. */
bool scram_verified(const struct scram *s);

/* Why the last call failed, for the user ("" when none did). Cannot fail. */
const char *scram_error(const struct scram *s);

/* The server's e= value, sanitized ("" when none). Cannot fail. */
const char *scram_server_error(const struct scram *s);

/* Wipes every key and the password, then frees; NULL is allowed. */
void scram_free(struct scram *s);

/* A parsed server-first-message; pointers into the message. */
struct scram_first {
	const char *nonce;      /* r=, the whole combined nonce */
	size_t nonce_len;
	const char *salt;       /* s=, base64 as sent */
	size_t salt_len;
	unsigned long iter;     /* i=, ULONG_MAX when larger */
	const char *iter_text;  /* i= as sent (digits only) */
	size_t iter_len;
};

/*
 * Parses a server-first-message (RFC 5802 section 7): [m=...,] r=, s=,
 * i= and tolerated extensions. Pure: checks syntax and caps, not the
 * nonce, nor the range of i= (up to SCRAM_COUNT_DIGITS digits). Writes why into
 * why[0..whylen) on failure. Errors: -EBADMSG, -EPROTO (m=), -EACCES (e=,
 * its value, sanitized, in why).
 */
int scram_parse_first(const char *msg, size_t len, struct scram_first *ret, char *why,
		      size_t whylen);

#endif
