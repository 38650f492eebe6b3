/*
 * The one HTTP request mailpull makes: a form POSTed to an OAuth2
 * endpoint, through libcurl (loaded on first use, not linked). HTTPS only, peer and host verified (the
 * system store, or ca_file as for mail), TLS 1.2 at least, no redirect
 * followed, the whole request bounded by a timeout and the answer by
 * HTTP_MAX_RESPONSE. Forms and answers hold secrets: both are wiped by
 * their owners (http_free()).
 */
#ifndef MAILPULL_HTTP_H
#define MAILPULL_HTTP_H

#include "mailpull/common.h"
#include "mailpull/err.h"

#define HTTP_MAX_RESPONSE (64 * 1024)

/*
 * Appends "key=value" (value percent-encoded, "&" before it unless *form is
 * empty) to the malloc'd *form of *len bytes (NULL and 0 to start). A
 * NULL value appends nothing. The old buffer is wiped when it moves.
 * Errors: -ENOMEM (*form left as it was).
 */
int http_form_add(char **form, size_t *len, const char *key, const char *value) MP_WUR;

struct http_req {
	const char *url;           /* https:// */
	const char *ca_file;       /* NULL: the system store; else the only trust */
	unsigned timeout_s;        /* the whole request */
	const char *form;          /* application/x-www-form-urlencoded body */
	size_t len;
};

/*
 * POSTs req->form to req->url. *ret_status is the HTTP status, *ret_body
 * the answer (NUL-terminated, *ret_len bytes, free with http_free()),
 * whatever the status. Errors: -ETIMEDOUT, -ECONNREFUSED, -EIO
 * (MP_EX_TEMPFAIL: the endpoint could not be reached); -EINVAL
 * (MP_EX_CONFIG: TLS verification failed, the URL is not https or bad);
 * -EPROTO (MP_EX_PROTOCOL: an answer over HTTP_MAX_RESPONSE, or broken);
 * -ENOTSUP (MP_EX_CONFIG: libcurl cannot be loaded, or is older than
 * 7.85 or built without HTTPS); -ENOMEM.
 */
int http_post(const struct http_req *req, long *ret_status, char **ret_body, size_t *ret_len,
	      struct mp_err *err) MP_WUR;

/* Wipes len bytes of a form or answer and frees it. Accepts NULL. Cannot fail. */
void http_free(char *p, size_t len);

#endif
