/*
 * RFC 5322 address lists to addr-specs (section 3.4), as SMTP's forward
 * and reverse paths take them (RFC 5321 section 4.1.2): display names,
 * comments (nested), quoted strings with quoted-pairs, angle addresses,
 * groups ("undisclosed-recipients:;" gives nothing), the obsolete route
 * ("<@a,@b:u@c>") and folding (CRLF or LF then white space) are read;
 * display names, encoded words included, are dropped. Nothing is lowered
 * (local parts are case-sensitive). Bytes over 127 are taken as UTF-8
 * text (RFC 6532).
 *
 * An address comes out in one canonical form: the local part as a
 * dot-atom when it is one, else as a quoted string ("a b"@x), then "@"
 * and the domain (a dot-atom or a [literal]) when there is one: an
 * address without a domain (a local user name, "root") is kept as it is.
 */
#ifndef MAILPULL_ADDR_H
#define MAILPULL_ADDR_H

#include "mailpull/common.h"

/* The longest address kept (RFC 5322's line limit). */
#define ADDR_LEN_MAX 998

/* A growing list of addresses, each once. Zero-initialize; free with addr_list_free(). */
struct addr_list {
	char **v;                  /* malloc'd strings */
	size_t n;
	size_t cap;
};

/*
 * Appends the addresses of the address list s[0..len) (a header field's
 * value, folded or not, or a command line argument) to l, skipping those
 * already there (addr_equal()), l holding at most max.
 * Returns how many were added. On error l keeps what was added before.
 * Errors: -EBADMSG (an unterminated quoted string, comment, angle address
 * or domain literal; a control byte; an address that is not one, such as
 * "a@b@c" or "<a@>"; stray specials), -E2BIG (more than max addresses,
 * an address over ADDR_LEN_MAX), -ENOMEM.
 */
int addr_list_parse(struct addr_list *l, const char *s, size_t len, size_t max) MP_WUR;

/*
 * Appends a copy of the address a (in canonical form already) unless l
 * holds it. Returns 1 when added, 0 when already there.
 * Errors: -E2BIG (l holds max), -ENOMEM.
 */
int addr_list_add(struct addr_list *l, const char *a, size_t max) MP_WUR;

/*
 * The strings of l, handed over with their count (the caller frees each
 * and the array); l is left empty. NULL with *ret_n 0 for an empty list.
 * Cannot fail.
 */
char **addr_list_take(struct addr_list *l, size_t *ret_n);

/* Frees the addresses and the array; l is left empty. Accepts NULL. */
void addr_list_free(struct addr_list *l);

/*
 * Parses s[0..len) as one address (the first of a list: From, -f) into a
 * malloc'd string. Returns 1 with *ret set, 0 when s holds no address
 * (*ret untouched: an empty value, a group with no member).
 * Errors: as addr_list_parse().
 */
int addr_parse_first(const char *s, size_t len, char **ret) MP_WUR;

/*
 * The domain of a canonical address (after its "@"), or NULL when it has
 * none. Points into a. Cannot fail.
 */
const char *addr_domain(const char *a);

/* Whether two canonical addresses are the same: local parts exactly, domains in any case. */
bool addr_equal(const char *a, const char *b);

#endif
