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
 * Handshakes on fd (not owned) before deadline_ms (util_now_ms() clock).
 * Errors: -EPROTO (handshake or verification failed; err->msg says why and
 * gives the certificate's fingerprint), -ETIMEDOUT, -ECONNRESET, -EINVAL
 * (bad pin), -ENOMEM.
 */
int tls_start(int fd, const char *host, const char *ca_file, const char *fingerprint,
	      int64_t deadline_ms, struct tls **ret, struct mp_err *err) MP_WUR;

/*
 * Reads up to len bytes. Returns the count (> 0), 0 when the deadline
 * passed with nothing read, or -ECONNRESET (peer closed), -EPROTO.
 */
ssize_t tls_read(struct tls *t, void *buf, size_t len, int64_t deadline_ms, struct mp_err *err);

/*
 * Whether OpenSSL holds received bytes not yet returned by tls_read()
 * (decrypted data, or a record read ahead): poll() on the socket cannot
 * see them.
 */
bool tls_pending(struct tls *t);

/* Writes everything. 0, -ETIMEDOUT, -ECONNRESET, -EPROTO. */
int tls_write(struct tls *t, const void *buf, size_t len, int64_t deadline_ms, struct mp_err *err);

/* Sends close_notify without waiting and frees. NULL-safe. */
void tls_free(struct tls *t);

/* "AB:CD:..." SHA-256 of a DER certificate; out must hold 96 bytes. */
void tls_fingerprint_hex(const unsigned char *der, size_t len, char *out);

#endif
