/* TLS client: OpenSSL with verification that cannot be skipped by accident. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>

#include "mailpull/tls.h"
#include "mailpull/util.h"

struct tls {
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	int verify_error;                 /* first chain error seen, X509_V_OK if none */
	char leaf_fp[96];                 /* fingerprint of the server's certificate */
};

static int tls_ex_index = -1;

/* OpenSSL's read buffer (with read-ahead): a few full records per recv(). */
#define TLS_READ_BUF (64 * 1024)

void
tls_fingerprint_hex(const unsigned char *der, size_t len, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t o = 0;

	out[0] = '\0';
	if (!EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL))
		return;
	for (unsigned int i = 0; i < mdlen && o + 3 < 96; i++) {
		if (i)
			out[o++] = ':';
		out[o++] = hex[md[i] >> 4];
		out[o++] = hex[md[i] & 15];
	}
	out[o] = '\0';
}

static void
cert_fingerprint(X509 *cert, char *out)
{
	unsigned char *der = NULL;
	int len = i2d_X509(cert, &der);

	out[0] = '\0';
	if (len > 0)
		tls_fingerprint_hex(der, (size_t)len, out);
	OPENSSL_free(der);
}

/* Records the leaf's fingerprint and the first error; OpenSSL still decides. */
static int
verify_cb(int ok, X509_STORE_CTX *sctx)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls *t = ssl ? SSL_get_ex_data(ssl, tls_ex_index) : NULL;
	X509 *leaf = X509_STORE_CTX_get0_cert(sctx);

	if (!t)
		return ok;
	if (leaf && !t->leaf_fp[0])
		cert_fingerprint(leaf, t->leaf_fp);
	if (!ok && t->verify_error == X509_V_OK)
		t->verify_error = X509_STORE_CTX_get_error(sctx);
	return ok;
}

/* Normalizes a pin to "AB:CD:..." form; -EINVAL unless 32 hex bytes. */
static int
normalize_pin(const char *pin, char *out)
{
	size_t n = 0, o = 0;

	for (const char *p = pin; *p; p++) {
		if (*p == ':')
			continue;
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F')))
			return -EINVAL;
		if (n == 64)
			return -EINVAL;
		if (n && n % 2 == 0)
			out[o++] = ':';
		out[o++] = (char)(*p >= 'a' ? *p - 32 : *p);
		n++;
	}
	out[o] = '\0';
	return n == 64 ? 0 : -EINVAL;
}

static const char *
verify_hint(int e)
{
	switch (e) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return "certificate has expired";
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "certificate is not yet valid";
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		return "certificate does not match the host name";
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		return "self-signed certificate (set tls_ca_file to trust it)";
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
		return "unknown issuer (not trusted by the CA store; set tls_ca_file)";
	default:
		return X509_verify_cert_error_string(e);
	}
}

/* Whether OpenSSL error e is the peer closing the connection mid-record (a
 * network cut, not a TLS failure). */
static bool
tls_eof_error(unsigned long e)
{
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
	return ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
#else
	(void)e;
	return false;
#endif
}

/*
 * Whether OpenSSL error e says the two sides share no protocol version: the
 * server alerts that it has none of ours, or it chose one below our minimum.
 */
static bool
tls_version_error(unsigned long e)
{
	if (ERR_GET_LIB(e) != ERR_LIB_SSL)
		return false;
	switch (ERR_GET_REASON(e)) {
	case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_WRONG_SSL_VERSION:
		return true;
	default:
		return false;
	}
}

static int
tls_fail(struct tls *t, const char *host, struct mp_err *err)
{
	unsigned long e = ERR_peek_last_error();
	char buf[256];

	if (t->verify_error != X509_V_OK)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "TLS certificate of %s refused: %s; its SHA-256 fingerprint is %s",
				  host, verify_hint(t->verify_error),
				  t->leaf_fp[0] ? t->leaf_fp : "unknown");
	if (e == 0 || tls_eof_error(e)) {
		ERR_clear_error();
		return mp_err_set(err, -ECONNRESET, MP_EX_TEMPFAIL,
				  "connection closed by the server during the TLS handshake with %s", host);
	}
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	if (tls_version_error(e))
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "TLS handshake with %s failed: the server offers no TLS version "
				  "mailpull accepts (TLS 1.2 is the minimum; %s)", host, buf);
	return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "TLS handshake with %s failed: %s", host,
			  e ? buf : "connection closed by the server");
}

/* Waits for fd per SSL's wish; 0 ready, -ETIMEDOUT. */
static int
tls_wait(struct tls *t, int sslerr, int64_t deadline_ms)
{
	struct pollfd pfd = { .fd = t->fd, .events = sslerr == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN };

	for (;;) {
		int64_t left = deadline_ms - util_now_ms();
		int r;

		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* OpenSSL's last error as text for a message, then forgotten. */
static void
ssl_reason(char *buf, size_t size)
{
	unsigned long e = ERR_peek_last_error();

	if (e)
		ERR_error_string_n(e, buf, size);
	else
		snprintf(buf, size, "no usable PEM data");
	ERR_clear_error();
}

/* Refuses an encrypted key instead of letting OpenSSL prompt on the terminal. */
static int
no_passphrase(char *buf, int size, int rwflag, void *ud)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)ud;
	return -1;
}

/*
 * Loads the private key from path. The mode is checked on the file opened
 * (fstat), not on the name, so the file judged is the file read.
 */
static int
load_client_key(struct tls *t, const char *path, const char *cert, struct mp_err *err)
{
	char why[256];
	int r;
	struct stat st;
	EVP_PKEY *key = NULL;
	BIO *bio;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "cannot open the client key %s: %s",
				  path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "the client key %s is not a regular file", path);
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		close(fd);
		return mp_err_set(err, -EACCES, MP_EX_CONFIG,
				  "the client key %s is accessible to group or others; "
				  "chmod 600 %s", path, path);
	}
	bio = BIO_new_fd(fd, BIO_CLOSE);
	if (!bio) {
		close(fd);
		return mp_err_set(err, -ENOMEM, MP_EX_TEMPFAIL, "cannot read the client key %s", path);
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (!key) {
		ssl_reason(why, sizeof(why));
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "cannot load the client key %s (PEM, not encrypted): %s", path, why);
	}
	/* OpenSSL checks here that the key is the certificate's. */
	r = SSL_CTX_use_PrivateKey(t->ctx, key);
	EVP_PKEY_free(key);
	if (r != 1) {
		ERR_clear_error();
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "the client key %s does not match the certificate %s", path, cert);
	}
	return 0;
}

/* The client certificate chain and its key, checked to match. */
static int
load_client_cert(struct tls *t, const char *cert_file, const char *key_file,
		 struct mp_err *err)
{
	const char *kf = key_file ? key_file : cert_file;
	char why[256];
	int r;

	if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1) {
		ssl_reason(why, sizeof(why));
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "cannot load the client certificate %s: %s", cert_file, why);
	}
	r = load_client_key(t, kf, cert_file, err);
	if (r < 0)
		return r;
	if (SSL_CTX_check_private_key(t->ctx) != 1) {
		ERR_clear_error();
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "the client key %s does not match the certificate %s", kf, cert_file);
	}
	return 0;
}

static int
tls_setup(struct tls *t, const struct tls_opts *o, struct mp_err *err)
{
	const char *host = o->host, *ca_file = o->ca_file;
	unsigned char ipbuf[16];
	bool is_ip = inet_pton(AF_INET, host, ipbuf) == 1 || inet_pton(AF_INET6, host, ipbuf) == 1;

	t->ctx = SSL_CTX_new(TLS_client_method());
	if (!t->ctx)
		return mp_err_set(err, -ENOMEM, MP_EX_TEMPFAIL, "cannot create TLS context");
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
	/*
	 * Read-ahead into a larger buffer: one recv() brings several records
	 * instead of a 5-byte header and then its record. What is read ahead
	 * stays in OpenSSL (tls_pending() sees it). The handshake is first on
	 * the wire, so nothing sent before STARTTLS's answer is read here:
	 * conn reads those bytes itself, and refuses them.
	 */
	SSL_CTX_set_read_ahead(t->ctx, 1);
	SSL_CTX_set_default_read_buffer_len(t->ctx, TLS_READ_BUF);
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, verify_cb);
	if (ca_file) {
		if (SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL) != 1) {
			ERR_clear_error();
			return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
					  "cannot load tls_ca_file %s", ca_file);
		}
	} else if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
		ERR_clear_error();
		return mp_err_set(err, -EIO, MP_EX_CONFIG, "cannot load the system CA store");
	}
	if (o->cert_file) {
		int r = load_client_cert(t, o->cert_file, o->key_file, err);

		if (r < 0)
			return r;
	}
	t->ssl = SSL_new(t->ctx);
	if (!t->ssl || SSL_set_fd(t->ssl, t->fd) != 1)
		return mp_err_set(err, -ENOMEM, MP_EX_TEMPFAIL, "cannot create TLS session");
	SSL_set_ex_data(t->ssl, tls_ex_index, t);
	if (is_ip) {
		/* An IP is matched only as an IP, and never sent as SNI (RFC 6066 3). */
		X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);

		if (X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1)
			return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "bad IP address %s", host);
	} else {
		SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(t->ssl, host) != 1 || SSL_set_tlsext_host_name(t->ssl, host) != 1)
			return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "bad host name %s", host);
	}
	return 0;
}

static int
tls_check_pin(struct tls *t, const char *host, const char *pin, struct mp_err *err)
{
	char want[96];
	X509 *cert = SSL_get0_peer_certificate(t->ssl);

	if (!cert)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "%s presented no certificate", host);
	if (!t->leaf_fp[0])
		cert_fingerprint(cert, t->leaf_fp);
	if (!pin)
		return 0;
	if (normalize_pin(pin, want) < 0)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "tls_fingerprint is not a SHA-256 fingerprint (64 hex digits)");
	if (strcmp(want, t->leaf_fp) != 0)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "TLS certificate of %s does not match tls_fingerprint: it is %s",
				  host, t->leaf_fp);
	return 0;
}

int
tls_start(int fd, const struct tls_opts *o, int64_t deadline_ms, struct tls **ret,
	  struct mp_err *err)
{
	const char *host = o->host;
	struct tls *t;
	int r;

	if (tls_ex_index < 0)
		tls_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	t = calloc(1, sizeof(*t));
	if (!t)
		return mp_err_oom(err);
	t->fd = fd;
	t->verify_error = X509_V_OK;
	r = tls_setup(t, o, err);
	while (r == 0) {
		int hr = SSL_connect(t->ssl);
		int e;

		if (hr == 1)
			break;
		e = SSL_get_error(t->ssl, hr);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			if (tls_wait(t, e, deadline_ms) < 0)
				r = mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL,
					       "TLS handshake with %s timed out", host);
			continue;
		}
		r = tls_fail(t, host, err);
	}
	if (r == 0 && SSL_get_verify_result(t->ssl) != X509_V_OK) {
		/* Unreachable with SSL_VERIFY_PEER; kept as a second lock on the door. */
		t->verify_error = (int)SSL_get_verify_result(t->ssl);
		r = tls_fail(t, host, err);
	}
	if (r == 0)
		r = tls_check_pin(t, host, o->fingerprint, err);
	if (r < 0) {
		tls_free(t);
		return r;
	}
	*ret = t;
	return 0;
}

/* One SSL_read_ex(): 1 with *got bytes, else SSL_get_error()'s code. */
static int
read_once(struct tls *t, char *buf, size_t len, size_t *got)
{
	int r = SSL_read_ex(t->ssl, buf, len, got);

	return r == 1 ? 0 : SSL_get_error(t->ssl, r);
}

/*
 * After the first bytes, more of what OpenSSL already holds (decrypted,
 * or records read ahead) and what the socket has without waiting: the
 * caller's buffer fills in one call instead of one call per record. A
 * failure here is left for the next call, which meets it again (the peer
 * closed, or the session broke); the bytes read so far are returned.
 */
static size_t
drain(struct tls *t, char *buf, size_t len)
{
	size_t total = 0;

	while (total < len && (SSL_pending(t->ssl) > 0 || SSL_has_pending(t->ssl) == 1)) {
		size_t got = 0;

		if (read_once(t, buf + total, len - total, &got) != 0) {
			ERR_clear_error();
			break;
		}
		total += got;
	}
	return total;
}

ssize_t
tls_read(struct tls *t, void *buf, size_t len, int64_t deadline_ms, struct mp_err *err)
{
	for (;;) {
		size_t got = 0;
		int e = read_once(t, buf, len, &got);

		if (e == 0)
			return (ssize_t)(got + drain(t, (char *)buf + got, len - got));
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			if (tls_wait(t, e, deadline_ms) < 0)
				return 0;
			continue;
		}
		if (e == SSL_ERROR_ZERO_RETURN ||
		    (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) ||
		    (e == SSL_ERROR_SSL && tls_eof_error(ERR_peek_error()))) {
			ERR_clear_error();
			return -ECONNRESET;
		}
		ERR_clear_error();
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "TLS read failed");
	}
}

bool
tls_pending(struct tls *t)
{
	return SSL_pending(t->ssl) > 0 || SSL_has_pending(t->ssl) == 1;
}

int
tls_write(struct tls *t, const void *buf, size_t len, int64_t deadline_ms, struct mp_err *err)
{
	const char *p = buf;

	while (len > 0) {
		size_t done = 0;
		int r = SSL_write_ex(t->ssl, p, len, &done);
		int e;

		if (r == 1) {
			p += done;
			len -= done;
			continue;
		}
		e = SSL_get_error(t->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			if (tls_wait(t, e, deadline_ms) < 0)
				return mp_err_set(err, -ETIMEDOUT, MP_EX_TEMPFAIL, "TLS write timed out");
			continue;
		}
		ERR_clear_error();
		if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN)
			return mp_err_set(err, -ECONNRESET, MP_EX_TEMPFAIL, "connection closed by the server");
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "TLS write failed");
	}
	return 0;
}

/* RFC 9266 section 2: the exporter label, no context, 32 bytes. */
static ssize_t
cb_exporter(struct tls *t, unsigned char *buf)
{
	static const char label[] = "EXPORTER-Channel-Binding";

	if (SSL_export_keying_material(t->ssl, buf, 32, label, sizeof(label) - 1, NULL, 0, 0) != 1) {
		ERR_clear_error();
		return -ENOTSUP;
	}
	return 32;
}

/*
 * RFC 5929 section 4.1: the server certificate hashed with the digest of
 * its signature algorithm, SHA-256 when that is MD5 or SHA-1; undefined
 * for a signature without one digest (Ed25519, RSASSA-PSS with parameters).
 */
static ssize_t
cb_server_end_point(struct tls *t, unsigned char *buf)
{
	X509 *cert = SSL_get0_peer_certificate(t->ssl);
	const EVP_MD *md;
	unsigned int len = 0;
	int mdnid = NID_undef, pknid = NID_undef;

	if (!cert)
		return -ENOTSUP;
	if (X509_get_signature_info(cert, &mdnid, &pknid, NULL, NULL) != 1 &&
	    OBJ_find_sigid_algs(X509_get_signature_nid(cert), &mdnid, &pknid) != 1) {
		ERR_clear_error();
		return -ENOTSUP;
	}
	if (mdnid == NID_md5 || mdnid == NID_sha1)
		mdnid = NID_sha256;
	md = mdnid == NID_undef ? NULL : EVP_get_digestbynid(mdnid);
	if (!md || EVP_MD_get_size(md) > TLS_CB_MAX || X509_digest(cert, md, buf, &len) != 1) {
		ERR_clear_error();
		return -ENOTSUP;
	}
	return (ssize_t)len;
}

ssize_t
tls_channel_binding(struct tls *t, const char **ret_type, unsigned char *buf)
{
	ssize_t n;

	if (SSL_version(t->ssl) == TLS1_3_VERSION) {
		n = cb_exporter(t, buf);
		if (n > 0)
			*ret_type = "tls-exporter";
		return n;
	}
	n = cb_server_end_point(t, buf);
	if (n > 0)
		*ret_type = "tls-server-end-point";
	return n;
}

void
tls_free(struct tls *t)
{
	if (!t)
		return;
	if (t->ssl) {
		/* close_notify without waiting for the peer's; errors do not matter here. */
		if (SSL_is_init_finished(t->ssl))
			SSL_shutdown(t->ssl);
		SSL_free(t->ssl);
	}
	SSL_CTX_free(t->ctx);
	ERR_clear_error();
	free(t);
}
