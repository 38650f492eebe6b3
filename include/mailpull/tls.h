/*
 * TLS client on a connected, non-blocking socket (OpenSSL 3). Used by conn
 * only. Verification: the chain against the system store or ca_file,
 * validity, the host name by OpenSSL's own check (an IP address is matched
 * only as an IP), TLS 1.2 minimum, SNI for names; a SHA-256 pin is checked
 * in addition, never instead.
 */
#ifndef MAILPULL_TLS_H
#define MAILPULL_TLS_H

#include <sys/types.h>

#include "mailpull/common.h"
#include "mailpull/err.h"

struct tls;

/* What tls_start() needs besides the socket; strings borrowed for the call. */
struct tls_opts {
	const char *host;
	const char *ca_file;       /* NULL: the system store */
	const char *fingerprint;   /* SHA-256 pin or NULL */
	const char *cert_file;     /* PEM client certificate chain or NULL */
	const char *key_file;      /* its PEM key; NULL: the key is in cert_file */
};

/*
 * Handshakes on fd before deadline_ms (util_now_ms() clock). fd stays the
 * caller's (tls_free() does not close it). With cert_file, the chain and
 * key are loaded and offered to a server that asks; the file holding the
 * key must not be accessible to group or others (checked with fstat() on
 * the file opened). *ret is freed with tls_free().
 * Errors: -EPROTO (MP_EX_PROTOCOL: handshake or verification failed, or
 * the pin does not match; err->msg says why and gives the certificate's
 * fingerprint), -ETIMEDOUT (MP_EX_TEMPFAIL), -ECONNRESET (MP_EX_TEMPFAIL:
 * closed during the handshake), -EINVAL (MP_EX_CONFIG: bad pin, host name,
 * IP address or ca_file; a client certificate or key that cannot be read
 * or loaded, or a key that does not match the certificate: the message
 * names the file), -EACCES (MP_EX_CONFIG: the key file is accessible to
 * group or others: the message says chmod 600 FILE), -EIO (MP_EX_CONFIG:
 * no system CA store), -ENOMEM (MP_EX_TEMPFAIL).
 */
int tls_start(int fd, const struct tls_opts *o, int64_t deadline_ms, struct tls **ret,
	      struct mp_err *err) MP_WUR;

/*
 * Channel binding data (RFC 5056) into buf (64 bytes): on TLS 1.3
 * "tls-exporter" (RFC 9266: 32 bytes exported with the label
 * "EXPORTER-Channel-Binding" and no context), else "tls-server-end-point"
 * (RFC 5929: the server certificate hashed with its signature's digest,
 * SHA-256 in place of MD5 and SHA-1). *ret_type is static. Returns the
 * length, or -ENOTSUP (no certificate, or a signature without one digest,
 * such as Ed25519, for which RFC 5929 defines none). Cannot fail otherwise.
 */
#define TLS_CB_MAX 64
ssize_t tls_channel_binding(struct tls *t, const char **ret_type, unsigned char *buf);

/*
 * Reads up to len bytes: waits for the first, then adds without waiting
 * what OpenSSL holds and the socket has (several records per call).
 * Returns the count (> 0), or 0 when the deadline passed with nothing read.
 * Errors: -ECONNRESET (not recorded: the peer closed, the caller words it),
 * -EPROTO (MP_EX_PROTOCOL).
 */
ssize_t tls_read(struct tls *t, void *buf, size_t len, int64_t deadline_ms, struct mp_err *err);

/*
 * Whether OpenSSL holds received bytes not yet returned by tls_read()
 * (decrypted data, or a record read ahead): poll() on the socket cannot
 * see them. Cannot fail.
 */
bool tls_pending(struct tls *t);

/*
 * Writes everything. Errors: -ETIMEDOUT (MP_EX_TEMPFAIL), -ECONNRESET
 * (MP_EX_TEMPFAIL), -EPROTO (MP_EX_PROTOCOL).
 */
int tls_write(struct tls *t, const void *buf, size_t len, int64_t deadline_ms, struct mp_err *err);

/* Sends close_notify without waiting and frees; the fd stays open. */
void tls_free(struct tls *t);

/* "AB:CD:..." SHA-256 of a DER certificate; out must hold 96 bytes. Cannot fail. */
void tls_fingerprint_hex(const unsigned char *der, size_t len, char *out);

#endif
