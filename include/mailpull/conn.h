/*
 * One connection to a server: TCP (IPv6 and IPv4, every address tried in
 * turn) with optional TLS, behind the same read and write calls. Every call
 * is bounded by the configured timeout; every line by a length cap.
 */
#ifndef MAILPULL_CONN_H
#define MAILPULL_CONN_H

#include <sys/types.h>

#include "mailpull/common.h"
#include "mailpull/err.h"

struct conn_opts {
	const char *host;
	unsigned port;
	const char *ca_file;      /* NULL: the system CA store */
	const char *fingerprint;  /* SHA-256 pin (hex, colons optional) or NULL */
	unsigned timeout_ms;      /* every wait: connect, handshake, a whole line */
	const char *cert_file;    /* PEM client certificate (chain) for TLS, or NULL */
	const char *key_file;     /* its PEM private key (mode 0600), NULL: in cert_file */
	size_t max_line;          /* cap on a response line, excluding CRLF */
};

/*
 * Minimum rate at which a body read through conn_peek() must progress: each
 * timeout period spent waiting on the socket must bring at least
 * CONN_MIN_RATE bytes per second of it. Time the caller spends between
 * reads (a sink waiting for the disk) does not count.
 */
#define CONN_MIN_RATE 1024

struct conn;

/*
 * Connects to o->host:o->port and, when tls is true, completes a verified
 * TLS handshake (chain, validity, host name, optional pin; TLS 1.2 minimum;
 * SNI). o's strings are copied. *ret is freed with conn_close().
 * Errors: -EINVAL (MP_EX_CONFIG: bad host or port; with TLS also a bad pin,
 * host name or tls_ca_file), -ENOENT (MP_EX_TEMPFAIL: the name does not
 * resolve), -ECONNREFUSED, -ETIMEDOUT, -ENETUNREACH or another connect
 * errno (MP_EX_TEMPFAIL: the last address's), -ENOMEM (MP_EX_TEMPFAIL);
 * with TLS: -EPROTO (MP_EX_PROTOCOL: handshake failed or certificate not
 * trusted; err->msg says why and shows the certificate's SHA-256
 * fingerprint), -ECONNRESET (MP_EX_TEMPFAIL: closed during the handshake),
 * -ETIMEDOUT (MP_EX_TEMPFAIL), -EIO (MP_EX_CONFIG: the system CA store
 * cannot be loaded), -EACCES (MP_EX_CONFIG: the client key file is
 * accessible to group or others; the message says chmod 600), -EINVAL
 * (MP_EX_CONFIG: the client certificate or key cannot be loaded, or they
 * do not match; the message names the file).
 */
int conn_open(const struct conn_opts *o, bool tls, struct conn **ret, struct mp_err *err) MP_WUR;

/*
 * Upgrades a plain connection to verified TLS after the server accepted
 * STARTTLS/STLS. Refuses with -EPROTO (MP_EX_PROTOCOL, "data after STARTTLS
 * response") when any byte is buffered: such bytes were sent before the
 * handshake and are never acted on; also -EPROTO when TLS is already on.
 * Other errors: conn_open()'s TLS ones.
 */
int conn_starttls(struct conn *c, struct mp_err *err) MP_WUR;

/* Whether TLS is on. Cannot fail. */
bool conn_is_tls(const struct conn *c);

/*
 * The channel binding of the TLS session (RFC 5056) for SCRAM-*-PLUS:
 * "tls-exporter" (RFC 9266: 32 bytes exported with the label
 * "EXPORTER-Channel-Binding", no context) on TLS 1.3, else
 * "tls-server-end-point" (RFC 5929: the server certificate's hash, SHA-256
 * for MD5 and SHA-1 signatures). *ret_type is static; buf holds
 * CONN_CB_MAX bytes. Returns the length, or -ENOTSUP (no TLS, or no data
 * can be had). Cannot fail otherwise.
 */
#define CONN_CB_MAX 64
ssize_t conn_channel_binding(const struct conn *c, const char **ret_type, unsigned char *buf);

/* Bytes received and buffered but not consumed yet. Cannot fail. */
size_t conn_buffered(const struct conn *c);

/*
 * Reads one line. *ret_line points at the line without its CRLF (or bare
 * LF), NUL-terminated, borrowed: valid until the next read call on c. The
 * whole line must arrive within the timeout.
 * Errors: -ETIMEDOUT (MP_EX_TEMPFAIL), -ECONNRESET (MP_EX_TEMPFAIL: peer
 * closed), another recv() errno such as -EIO (MP_EX_TEMPFAIL), -E2BIG
 * (MP_EX_PROTOCOL: longer than max_line), -EBADMSG (MP_EX_PROTOCOL: NUL
 * byte in the line), -EPROTO (MP_EX_PROTOCOL: TLS failure).
 */
int conn_read_line(struct conn *c, const char **ret_line, size_t *ret_len, struct mp_err *err) MP_WUR;

/*
 * As conn_read_line(), for the lines of a multi-line response read after
 * conn_body_start(): each line must arrive within the timeout, and the
 * response as a whole must keep coming at CONN_MIN_RATE or more, averaged
 * over each period of the timeout's length. Errors as conn_read_line(),
 * -ETIMEDOUT also when the response arrives slower than the minimum rate.
 */
int conn_read_body_line(struct conn *c, const char **ret_line, size_t *ret_len,
			struct mp_err *err) MP_WUR;

/*
 * Body streaming: returns the buffered bytes (reading from the network first
 * when none are buffered), borrowed: they stay buffered until
 * conn_consume() and valid until the next call on c. Enforces
 * CONN_MIN_RATE between conn_body_start() and the next conn_read_line().
 * Errors: -ETIMEDOUT (MP_EX_TEMPFAIL; also when the body arrives slower
 * than the minimum rate), -ECONNRESET or another recv() errno
 * (MP_EX_TEMPFAIL), -EPROTO (MP_EX_PROTOCOL: TLS failure).
 */
int conn_peek(struct conn *c, const char **ret_data, size_t *ret_len, struct mp_err *err) MP_WUR;

/* Drops n buffered bytes (at most what is buffered). Cannot fail. */
void conn_consume(struct conn *c, size_t n);

/* Starts the CONN_MIN_RATE window of a multi-line response or body. Cannot fail. */
void conn_body_start(struct conn *c);

/*
 * Waits, without consuming anything, until a byte is buffered or can be
 * read, up to timeout_ms, or until a signal interrupts the wait (IMAP
 * IDLE: the daemon's SIGUSR1/SIGTERM handlers must be able to cut it
 * short). Not subject to CONN_MIN_RATE. Returns 0 when data is ready.
 * Errors: -ETIMEDOUT and -EINTR (not recorded: the expected ends of a
 * wait), a poll() errno (MP_EX_TEMPFAIL); over TLS also -ECONNRESET or
 * another recv() errno (MP_EX_TEMPFAIL) and -EPROTO (MP_EX_PROTOCOL).
 */
int conn_wait(struct conn *c, unsigned timeout_ms, struct mp_err *err) MP_WUR;

/*
 * Queues bytes for sending (pipelining: several commands, one flush).
 * Queued bytes are sent by conn_flush(), as soon as the queue is full, or
 * before any read or wait blocks (a queued command is never awaited
 * unsent); the queue is wiped once sent (it may hold a secret).
 * Errors (conn_flush() too): -ETIMEDOUT (MP_EX_TEMPFAIL), -ECONNRESET,
 * -EPIPE or another send() errno (MP_EX_TEMPFAIL), -EPROTO
 * (MP_EX_PROTOCOL: TLS write failed).
 */
int conn_write(struct conn *c, const void *data, size_t len, struct mp_err *err) MP_WUR;

/* Sends what conn_write() queued. Errors as conn_write(). */
int conn_flush(struct conn *c, struct mp_err *err) MP_WUR;

/* The host and port as configured. The string is valid while c lives. Cannot fail. */
const char *conn_host(const struct conn *c);
unsigned conn_port(const struct conn *c);

/* "host:port" for messages. Valid while c lives. Cannot fail. */
const char *conn_peer(const struct conn *c);

/* Closes (TLS close_notify best effort, no wait), wipes the send queue and frees. */
void conn_close(struct conn *c);

#endif
