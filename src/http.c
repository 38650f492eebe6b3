/*
 * HTTPS form POSTs through libcurl, for the OAuth2 token and device
 * endpoints (http.h). Everything that could send a token elsewhere is
 * off: redirects (a token POST must reach the configured endpoint or
 * fail), other protocols, .netrc; verification is on and kept on.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/util.h"
#include "http.h"

int
http_form_add(char **form, size_t *len, const char *key, const char *value)
{
	size_t klen = strlen(key), vlen, need;
	char *esc, *n;

	if (!value)
		return 0;
	esc = curl_easy_escape(NULL, value, 0);
	if (!esc)
		return -ENOMEM;
	vlen = strlen(esc);
	need = *len + (*len ? 1 : 0) + klen + 1 + vlen + 1;
	n = malloc(need);
	if (!n) {
		explicit_bzero(esc, vlen);
		curl_free(esc);
		return -ENOMEM;
	}
	/* built anew rather than realloc()ed, so no copy of a secret is left behind */
	if (*len) {
		memcpy(n, *form, *len);
		n[*len] = '&';
	}
	memcpy(n + *len + (*len ? 1 : 0), key, klen);
	n[*len + (*len ? 1 : 0) + klen] = '=';
	memcpy(n + need - 1 - vlen, esc, vlen);
	n[need - 1] = '\0';
	explicit_bzero(esc, vlen);
	curl_free(esc);
	http_free(*form, *len);
	*form = n;
	*len = need - 1;
	return 0;
}

void
http_free(char *p, size_t len)
{
	if (!p)
		return;
	explicit_bzero(p, len);
	free(p);
}

struct sink {
	char *buf;
	size_t len, cap;
	bool over;
};

/* libcurl's write callback: keeps the answer, up to the cap. */
static size_t
sink_write(char *data, size_t size, size_t n, void *ud)
{
	struct sink *s = ud;
	size_t add = size * n;

	if (add > HTTP_MAX_RESPONSE - s->len) {
		s->over = true;
		return 0;
	}
	memcpy(s->buf + s->len, data, add);
	s->len += add;
	s->buf[s->len] = '\0';
	return add;
}

/* A libcurl failure as one of http_post()'s errors. */
static int
curl_fail(CURLcode rc, const struct http_req *req, const char *detail, struct mp_err *err)
{
	const char *why = detail && *detail ? detail : curl_easy_strerror(rc);

	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		return mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL, "OAuth2 endpoint %s: no answer "
				  "within %u s", req->url, req->timeout_s);
	case CURLE_COULDNT_CONNECT:
		return mp_err_set(err, -ECONNREFUSED, MP_EX_TEMPFAIL, "OAuth2 endpoint %s: %s",
				  req->url, why);
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "OAuth2 endpoint %s: TLS "
				  "verification failed: %s", req->url, why);
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "OAuth2 endpoint %s: %s", req->url,
				  why);
	case CURLE_OUT_OF_MEMORY:
		return mp_err_oom(err);
	default:
		return mp_err_set(err, -EIO, MP_EX_TEMPFAIL, "OAuth2 endpoint %s: %s", req->url,
				  why);
	}
}

static CURLcode
setup(CURL *c, const struct http_req *req, struct curl_slist *hdrs, struct sink *s, char *errbuf)
{
	CURLcode rc;

	if ((rc = curl_easy_setopt(c, CURLOPT_URL, req->url)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https")) ||
	    (rc = curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https")) ||
	    (rc = curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_NETRC, (long)CURL_NETRC_IGNORED)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)req->timeout_s)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_MAXFILESIZE, (long)HTTP_MAX_RESPONSE)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_USERAGENT, "mailpull/" MAILPULL_VERSION)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)req->len)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->form)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_WRITEDATA, s)) ||
	    (rc = curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf)))
		return rc;
	if (req->ca_file && (rc = curl_easy_setopt(c, CURLOPT_CAINFO, req->ca_file)))
		return rc;
	return CURLE_OK;
}

int
http_post(const struct http_req *req, long *ret_status, char **ret_body, size_t *ret_len,
	  struct mp_err *err)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL, *h;
	struct sink s = { 0 };
	long status = 0;
	CURL *c = NULL;
	CURLcode rc;
	int r = 0;

	s.buf = malloc(HTTP_MAX_RESPONSE + 1);
	if (!s.buf)
		return mp_err_oom(err);
	s.buf[0] = '\0';
	h = curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
	hdrs = h ? curl_slist_append(h, "Accept: application/json") : NULL;
	c = hdrs ? curl_easy_init() : NULL;
	if (!c) {
		curl_slist_free_all(hdrs ? hdrs : h);
		http_free(s.buf, 0);
		return mp_err_oom(err);
	}
	rc = setup(c, req, hdrs, &s, errbuf);
	if (rc == CURLE_OK)
		rc = curl_easy_perform(c);
	if (s.over || rc == CURLE_FILESIZE_EXCEEDED)
		r = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "OAuth2 endpoint %s: an answer "
			       "larger than %d bytes", req->url, HTTP_MAX_RESPONSE);
	else if (rc != CURLE_OK)
		r = curl_fail(rc, req, errbuf, err);
	else if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
		r = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "OAuth2 endpoint %s: no HTTP status",
			       req->url);
	curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	if (r < 0) {
		http_free(s.buf, s.len);
		return r;
	}
	*ret_status = status;
	*ret_body = s.buf;
	*ret_len = s.len;
	return 0;
}
