/*
 * TLS client on a connected, non-blocking socket (OpenSSL 3). Used by conn
 * only. Verification: the chain against the system store or ca_file,
 * validity, the host name by OpenSSL's own check (an IP address is matched
 * only as an IP), TLS 1.2 minimum, SNI for names; a SHA-256 pin is checked
 * in addition, never instead.
 */
#ifndef MAILPULL_TLS_H
#define MAILPULL_TLS_H

#include "mailpull/common.h"
#include "mailpull/err.h"

struct tls;

/*
 * Handshakes on fd before deadline_ms (util_now_ms() clock). fd stays the
 * caller's (tls_free() does not close it). *ret is freed with tls_free().
 * Errors: -EPROTO (MP_EX_PROTOCOL: handshake or verification failed, or
 * the pin does not match; err->msg says why and gives the certificate's
 * fingerprint), -ETIMEDOUT (MP_EX_TEMPFAIL), -ECONNRESET (MP_EX_TEMPFAIL:
 * closed during the handshake), -EINVAL (MP_EX_CONFIG: bad pin, host name,
 * IP address or ca_file), -EIO (MP_EX_CONFIG: no system CA store),
 * -ENOMEM (MP_EX_TEMPFAIL).
 */
int tls_start(int fd, const char *host, const char *ca_file, const char *fingerprint,
	      int64_t deadline_ms, struct tls **ret, struct mp_err *err) MP_WUR;

/*
 * Reads up to len bytes. Returns the count (> 0), or 0 when the deadline
 * passed with nothing read.
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
