/*
 * HTTPS form POSTs through libcurl, for the OAuth2 token and device
 * endpoints (http.h). Everything that could send a token elsewhere is
 * off: redirects (a token POST must reach the configured endpoint or
 * fail), other protocols, .netrc; verification is on and kept on.
 *
 * libcurl is loaded (dlopen) the first time a request is made, not
 * linked: with its own dependencies (Kerberos, LDAP, GnuTLS through
 * librtmp, SSH...) it would add about thirty libraries and a megabyte of
 * memory to every run, while only accounts with built-in OAuth2 ever
 * need it, and those only when a token must be refreshed.
 */
#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/util.h"
#include "http.h"

/* The OpenSSL build of libcurl (Debian's libcurl4), the same TLS library as mail's. */
#define HTTP_LIBCURL "libcurl.so.4"

/* The libcurl functions http_post() uses, resolved once. */
static struct {
	bool tried;
	void *handle;
	char why[256];             /* dlerror()'s text: its own buffer is reused */
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
	CURLcode (*easy_perform)(CURL *);
	CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
	void (*easy_cleanup)(CURL *);
	const char *(*easy_strerror)(CURLcode);
	struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
	void (*slist_free_all)(struct curl_slist *);
} lc;

/* Copies the last dlerror() text before another dl call overwrites it. */
static void
keep_dlerror(void)
{
	const char *e = dlerror();

	snprintf(lc.why, sizeof(lc.why), "%s", e ? e : "unknown error");
}

/* Loads libcurl on first use; false when it cannot be had. */
static bool
libcurl_load(void)
{
	struct { void **fn; const char *name; } syms[] = {
		{ (void **)&lc.easy_init, "curl_easy_init" },
		{ (void **)&lc.easy_setopt, "curl_easy_setopt" },
		{ (void **)&lc.easy_perform, "curl_easy_perform" },
		{ (void **)&lc.easy_getinfo, "curl_easy_getinfo" },
		{ (void **)&lc.easy_cleanup, "curl_easy_cleanup" },
		{ (void **)&lc.easy_strerror, "curl_easy_strerror" },
		{ (void **)&lc.slist_append, "curl_slist_append" },
		{ (void **)&lc.slist_free_all, "curl_slist_free_all" },
	};

	if (lc.tried)
		return lc.handle != NULL;
	lc.tried = true;
	lc.handle = dlopen(HTTP_LIBCURL, RTLD_NOW | RTLD_LOCAL);
	if (!lc.handle) {
		keep_dlerror();
		return false;
	}
	for (size_t i = 0; i < ARRAY_SIZE(syms); i++) {
		*syms[i].fn = dlsym(lc.handle, syms[i].name);
		if (!*syms[i].fn) {
			keep_dlerror();
			dlclose(lc.handle);
			lc.handle = NULL;
			return false;
		}
	}
	return true;
}

/* RFC 3986 unreserved characters pass; every other byte is %XX (form encoding). */
static size_t
form_escape(const char *v, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			if (out)
				out[n] = (char)*p;
			n++;
			continue;
		}
		if (out) {
			out[n] = '%';
			out[n + 1] = hex[*p >> 4];
			out[n + 2] = hex[*p & 15];
		}
		n += 3;
	}
	return n;
}

int
http_form_add(char **form, size_t *len, const char *key, const char *value)
{
	size_t klen = strlen(key), vlen, need, at;
	char *n;

	if (!value)
		return 0;
	vlen = form_escape(value, NULL);
	need = *len + (*len ? 1 : 0) + klen + 1 + vlen + 1;
	n = malloc(need);
	if (!n)
		return -ENOMEM;
	/* built anew rather than realloc()ed, so no copy of a secret is left behind */
	if (*len) {
		memcpy(n, *form, *len);
		n[*len] = '&';
	}
	at = *len + (*len ? 1 : 0);
	memcpy(n + at, key, klen);
	n[at + klen] = '=';
	form_escape(value, n + at + klen + 1);
	n[need - 1] = '\0';
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
	const char *why = detail && *detail ? detail : lc.easy_strerror(rc);

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
	case CURLE_UNKNOWN_OPTION:
	case CURLE_NOT_BUILT_IN:
		/* CURLOPT_PROTOCOLS_STR came in 7.85; a build without TLS lacks the rest */
		return mp_err_set(err, -ENOTSUP, MP_EX_CONFIG, "OAuth2 endpoint %s: libcurl 7.85 "
				  "or later, built with HTTPS, is needed: %s", req->url, why);
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

	if ((rc = lc.easy_setopt(c, CURLOPT_URL, req->url)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https")) ||
	    (rc = lc.easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https")) ||
	    (rc = lc.easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_NETRC, (long)CURL_NETRC_IGNORED)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_NOSIGNAL, 1L)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_TIMEOUT, (long)req->timeout_s)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_MAXFILESIZE, (long)HTTP_MAX_RESPONSE)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_USERAGENT, "mailpull/" MAILPULL_VERSION)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_HTTPHEADER, hdrs)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)req->len)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_POSTFIELDS, req->form)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_WRITEDATA, s)) ||
	    (rc = lc.easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf)))
		return rc;
	/*
	 * The CA file alone, as for mail: libcurl would otherwise also trust
	 * the CA directory it was built with (/etc/ssl/certs on Debian).
	 */
	if (req->ca_file && ((rc = lc.easy_setopt(c, CURLOPT_CAINFO, req->ca_file)) ||
			     (rc = lc.easy_setopt(c, CURLOPT_CAPATH, (char *)NULL))))
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

	if (!libcurl_load())
		return mp_err_set(err, -ENOTSUP, MP_EX_CONFIG, "OAuth2 needs libcurl (%s), which "
				  "cannot be loaded (%s): install libcurl4", HTTP_LIBCURL, lc.why);
	s.buf = malloc(HTTP_MAX_RESPONSE + 1);
	if (!s.buf)
		return mp_err_oom(err);
	s.buf[0] = '\0';
	h = lc.slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
	hdrs = h ? lc.slist_append(h, "Accept: application/json") : NULL;
	c = hdrs ? lc.easy_init() : NULL;
	if (!c) {
		lc.slist_free_all(hdrs ? hdrs : h);
		http_free(s.buf, 0);
		return mp_err_oom(err);
	}
	rc = setup(c, req, hdrs, &s, errbuf);
	if (rc == CURLE_OK)
		rc = lc.easy_perform(c);
	if (s.over || rc == CURLE_FILESIZE_EXCEEDED)
		r = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "OAuth2 endpoint %s: an answer "
			       "larger than %d bytes", req->url, HTTP_MAX_RESPONSE);
	else if (rc != CURLE_OK)
		r = curl_fail(rc, req, errbuf, err);
	else if (lc.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
		r = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "OAuth2 endpoint %s: no HTTP status",
			       req->url);
	lc.easy_cleanup(c);
	lc.slist_free_all(hdrs);
	if (r < 0) {
		http_free(s.buf, s.len);
		return r;
	}
	*ret_status = status;
	*ret_body = s.buf;
	*ret_len = s.len;
	return 0;
}
