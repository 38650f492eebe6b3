/*
 * Incremental parser for IMAP4 server responses (RFC 3501 section 9 and
 * RFC 9051 section 9): tagged status responses ("A1 OK [CODE args] text"),
 * untagged responses ("* ...") and continuation requests ("+ ...").
 *
 * The parser is fed bytes in chunks of any size and gives the same result
 * however the input is split. It owns copies of everything it keeps, so the
 * caller may reuse its buffer after each call. Every size it keeps is capped
 * (line, nesting, literal, argument count): a hostile server costs bounded
 * memory and gets a clear error.
 *
 * Literals may be streamed: the parser stops where a literal's data begins,
 * the caller moves exactly that many bytes from the connection to its sink,
 * then tells the parser to go on with the rest of the response. This is how
 * a message body is fetched without holding it in memory.
 *
 * No function here takes a struct mp_err: errors are only returned, and
 * imap_parser_error() words them.
 */
#ifndef MAILPULL_IMAP_PARSE_H
#define MAILPULL_IMAP_PARSE_H

#include "mailpull/common.h"

enum imap_arg_type {
	IMAP_ARG_ATOM,             /* also numbers, flags (\Seen), BODY[...] item names */
	IMAP_ARG_STRING,           /* quoted string, escapes removed */
	IMAP_ARG_LITERAL,          /* {n}, {n+} or ~{n}, held in memory */
	IMAP_ARG_LITERAL_STREAMED, /* a literal the caller read itself; only its size is kept */
	IMAP_ARG_NIL,              /* the atom NIL (any case); str still holds it as sent */
	IMAP_ARG_LIST,             /* parenthesised list */
	IMAP_ARG_TYPE_MAX,
};

struct imap_arg {
	enum imap_arg_type type;
	bool literal8;                 /* LITERAL / LITERAL_STREAMED sent as ~{n} (RFC 3516) */
	/*
	 * ATOM, STRING, LITERAL, NIL: the bytes, NUL-terminated. A literal may
	 * itself contain NUL bytes, so use len. "" for LIST and LITERAL_STREAMED.
	 */
	const char *str;
	size_t len;
	uint64_t literal_size;         /* LITERAL, LITERAL_STREAMED: the announced size */
	const struct imap_arg *list;   /* LIST: its elements (NULL when empty) */
	size_t count;                  /* LIST: how many */
};

enum imap_resp_type {
	IMAP_RESP_TAGGED,
	IMAP_RESP_UNTAGGED,
	IMAP_RESP_CONTINUATION,
	IMAP_RESP_TYPE_MAX,
};

enum imap_status {
	IMAP_STATUS_NONE,          /* untagged data ("* 3 EXISTS") or a continuation */
	IMAP_STATUS_OK,
	IMAP_STATUS_NO,
	IMAP_STATUS_BAD,
	IMAP_STATUS_BYE,
	IMAP_STATUS_PREAUTH,
	IMAP_STATUS_MAX,
};

/*
 * One parsed response. Every pointer in it, and in its arguments, is owned
 * by the parser and stays valid until the next imap_parser_feed(),
 * imap_parser_reset() or imap_parser_free() on it.
 */
struct imap_response {
	enum imap_resp_type type;
	const char *tag;               /* TAGGED: the tag; NULL otherwise */
	enum imap_status status;       /* OK/NO/BAD (tagged), OK/NO/BAD/BYE/PREAUTH (untagged) */
	/*
	 * Status responses and continuations: the response code between
	 * brackets (RFC 3501 section 7.1), e.g. "UIDVALIDITY" with one ATOM
	 * argument, "PERMANENTFLAGS" with one LIST. NULL when there is none.
	 */
	const char *code;
	const struct imap_arg *code_args;
	size_t code_count;
	/*
	 * Untagged data responses: every argument after "* ", the first being
	 * a number or the response name ("12" "FETCH" (...); "CAPABILITY" ...).
	 * Empty for status responses and continuations.
	 */
	const struct imap_arg *args;
	size_t count;
	/*
	 * Status responses and continuations: the human-readable text after
	 * the code (for a continuation, possibly base64), NUL-terminated,
	 * "" when absent. It is the server's: sanitize before showing it.
	 */
	const char *text;
	size_t text_len;
};

/*
 * Caps, fixed at creation. A zero field takes the default in brackets.
 */
struct imap_parser_limits {
	size_t max_line;          /* bytes of one response outside literal data, line ends
				     included, over all its lines [1 MiB] */
	size_t max_depth;         /* list nesting [32] */
	size_t max_literal;       /* one literal held in memory [1 MiB] */
	size_t max_literal_total; /* all literals held in memory for one response [8 MiB] */
	size_t max_args;          /* arguments in one response, lists and their elements
				     counted alike [200000] */
};

/* imap_parser_feed() results besides 0 and negative errno. */
#define IMAP_PARSE_DONE 1     /* a whole response was parsed */
#define IMAP_PARSE_LITERAL 2  /* a streamed literal's data begins here */

struct imap_parser;

/*
 * Creates a parser; limits may be NULL for the defaults. *ret is owned by
 * the caller (imap_parser_free()).
 * Errors: -ENOMEM.
 */
int imap_parser_new(const struct imap_parser_limits *limits, struct imap_parser **ret) MP_WUR;

/* Frees the parser and everything a response pointed into. NULL-safe. */
void imap_parser_free(struct imap_parser *p);

/*
 * Forgets any partial response and any error, keeping the limits and the
 * streaming rules. The last response's pointers become invalid. Cannot fail.
 */
void imap_parser_reset(struct imap_parser *p);

/*
 * Streaming rules (RFC 3501 section 4.3 literals, RFC 3516 literal8).
 * A literal is streamed when its size is above threshold (UINT64_MAX, the
 * default, never), or when it is the value of a FETCH item whose name was
 * given to imap_parser_stream_item() (compared without case, ignoring a
 * partial-fetch suffix "<origin>": "BODY[]" matches "BODY[]<0>").
 * A streamed literal is not bounded by max_literal.
 * imap_parser_stream_item() copies name; imap_parser_stream_threshold()
 * cannot fail.
 * Errors: -ENOMEM, -E2BIG (more than 8 names), -EINVAL (empty name).
 */
void imap_parser_stream_threshold(struct imap_parser *p, uint64_t threshold);
int imap_parser_stream_item(struct imap_parser *p, const char *name) MP_WUR;

/*
 * Parses data[0..len). *ret_consumed (ret_consumed must not be NULL) is
 * always set: how many bytes were used; on an error, the bytes before the
 * offending one. Returns:
 *   IMAP_PARSE_DONE (1)    a response ends at data[*ret_consumed - 1];
 *                          *ret_resp points at it. Bytes after it belong
 *                          to the next response: feed them again.
 *   0                      all bytes used; the response goes on.
 *   IMAP_PARSE_LITERAL (2) the data of a streamed literal begins at
 *                          data[*ret_consumed]; imap_parser_literal()
 *                          gives its size. The caller takes exactly that
 *                          many bytes itself, calls imap_parser_literal_done()
 *                          and feeds what follows.
 *   -EBADMSG               malformed response (bad syntax, NUL byte, bad
 *                          literal size, unbalanced parentheses or brackets,
 *                          bad quoting, a tagged response that is not
 *                          OK/NO/BAD).
 *   -E2BIG                 a cap was hit (line, depth, literal, argument
 *                          count, a literal size beyond 2^64).
 *   -ENOMEM
 *   -EINVAL                called while a streamed literal is pending.
 * After an error, every call returns it again until imap_parser_reset();
 * imap_parser_error() says what went wrong.
 * ret_resp may be NULL; it is set only on IMAP_PARSE_DONE.
 */
int imap_parser_feed(struct imap_parser *p, const char *data, size_t len, size_t *ret_consumed,
		     const struct imap_response **ret_resp) MP_WUR;

/*
 * While IMAP_PARSE_LITERAL is pending: the literal's size, whether it is a
 * literal8, and the FETCH item it belongs to (the atom just before it in its
 * list, e.g. "BODY[]"; NULL if none), valid until imap_parser_literal_done().
 * Errors: -EINVAL when no streamed literal is pending.
 */
int imap_parser_literal(const struct imap_parser *p, uint64_t *ret_size, bool *ret_literal8,
			const char **ret_item) MP_WUR;

/*
 * The caller has taken the streamed literal's bytes: parsing resumes with
 * what follows it. Errors: -EINVAL when no streamed literal is pending;
 * -EBADMSG when a literal cannot stand where it is (first word of a tagged
 * response), the parser then failing as imap_parser_feed() does.
 */
int imap_parser_literal_done(struct imap_parser *p) MP_WUR;

/*
 * The input has ended (the server closed the connection). Returns 0 when
 * that happened between responses; otherwise the parser fails with
 * -EBADMSG ("input ended inside a literal", "... inside a response").
 * After an earlier error, returns that error.
 */
int imap_parser_eof(struct imap_parser *p) MP_WUR;

/*
 * A short message (ours, never server text) about the last error, "" when
 * there is none. Borrowed: valid until the next call on p. Cannot fail.
 */
const char *imap_parser_error(const struct imap_parser *p);

/*
 * Writes r compactly into buf (always NUL-terminated when len > 0), for
 * traces and tests: atoms as sent, strings quoted, in-memory literals as
 * {n}"bytes" (control bytes as \xNN), streamed ones as <lit n> (<lit8 n>),
 * lists in parentheses; "A1 OK [CODE args] text", "* 3 EXISTS", "+ text".
 * Returns the length the whole text needs, as snprintf() does. Cannot fail.
 */
size_t imap_response_format(const struct imap_response *r, char *buf, size_t len);

/* Same for a list of arguments, separated by single spaces. */
size_t imap_args_format(const struct imap_arg *args, size_t count, char *buf, size_t len);

/*
 * True when a is an ATOM (or NIL) equal to s without regard to ASCII case;
 * false for a NULL a. Cannot fail.
 */
bool imap_arg_atom_is(const struct imap_arg *a, const char *s);

/*
 * The value of FETCH item name in list (a LIST of name/value pairs, RFC 3501
 * section 7.4.2 msg-att), names compared as imap_arg_atom_is(). NULL when
 * list is not a LIST or the item is absent. The result points into list.
 * Cannot fail.
 */
const struct imap_arg *imap_fetch_item(const struct imap_arg *list, const char *name);

/*
 * Parses a as a number: an ATOM of decimal digits only (no sign, no space).
 * Errors: -EBADMSG (a is NULL or not such an atom), -ERANGE (too big for
 * the type).
 */
int imap_arg_u32(const struct imap_arg *a, uint32_t *ret) MP_WUR;
int imap_arg_u64(const struct imap_arg *a, uint64_t *ret) MP_WUR;

/*
 * a as an astring or nstring (RFC 3501 section 9): ATOM, STRING or
 * LITERAL give their bytes; NIL gives NULL with length 0 (an nstring's
 * absence); *ret_str points into a. Errors: -EBADMSG for a NULL a, a LIST
 * or a streamed literal.
 */
int imap_arg_string(const struct imap_arg *a, const char **ret_str, size_t *ret_len) MP_WUR;

/* True when r carries response code name (compared without case). Cannot fail. */
bool imap_response_code_is(const struct imap_response *r, const char *name);

/* Names for traces ("?" for a value out of range). Cannot fail. */
const char *imap_arg_type_to_string(enum imap_arg_type t);
const char *imap_resp_type_to_string(enum imap_resp_type t);
const char *imap_status_to_string(enum imap_status s);

#endif
