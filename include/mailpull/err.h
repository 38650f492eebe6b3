/*
 * Error detail carried up from the layer that knows it.
 *
 * Functions return 0 or a negative errno with a fixed meaning:
 *   -ETIMEDOUT  a deadline passed          -EPROTO   the peer broke the protocol
 *   -EBADMSG    malformed input            -E2BIG    a cap was hit
 *   -EACCES     authentication refused     -EIO / -ENOSPC  local disk
 *   -ECONNRESET the peer closed            -EINVAL   bad configuration / argument
 *   -ENOMEM     out of memory              -EAGAIN   another run holds the lock
 * and, when given a non-NULL struct mp_err, fill it with our message, the
 * server's (sanitized) text, and the exit class the failure maps to.
 */
#ifndef MAILPULL_ERR_H
#define MAILPULL_ERR_H

#include "mailpull/common.h"

/*
 * Exit classes, from sysexits.h. Their numeric values are the exit statuses.
 * mp_exit_worse() orders them by severity (see mailpull(1)).
 */
enum mp_exit {
	MP_EX_OK = 0,
	MP_EX_USAGE = 64,
	MP_EX_DATAERR = 65,   /* a message refused for good (SMTP 5xx, too large); not retried */
	MP_EX_IOERR = 74,     /* local I/O: disk full, unwritable Maildir or state */
	MP_EX_TEMPFAIL = 75,  /* network, timeout, lock held by another run */
	MP_EX_PROTOCOL = 76,  /* protocol error, TLS refused or failed */
	MP_EX_NOPERM = 77,    /* authentication refused */
	MP_EX_CONFIG = 78,    /* configuration error */
};

/*
 * What the daemon does after a failed run (DESIGN, failure classes; the
 * scheduler applies it). mp_err_set() derives it from the exit class
 * (mp_retry_from_exit()); a caller that knows better overrides it.
 */
enum mp_retry {
	MP_RETRY_BACKOFF = 0,  /* temporary: retry soon, backing off with each failure */
	MP_RETRY_SLOW,         /* the server broke the protocol: retry at the slow end */
	MP_RETRY_HOLD,         /* authentication or configuration: not until it changes */
	MP_RETRY_INTERVAL,     /* the run did its work but left something: next interval */
};

struct mp_err {
	int code;              /* negative errno, 0 when unset */
	enum mp_exit ex;       /* exit class */
	enum mp_retry retry;   /* what the daemon does next */
	char msg[512];         /* our words */
	char srv[256];         /* the server's words, sanitized; may be empty */
};

/* Clears *err (NULL-safe). Cannot fail. */
void mp_err_clear(struct mp_err *err);

/* How mp_err_record() treats an error already recorded in *err. */
enum mp_err_how {
	MP_ERR_FIRST,          /* keep it: the lowest layer that knows the detail wins */
	MP_ERR_OVERWRITE,      /* replace it */
};

/*
 * The one writer behind mp_err_set(), mp_err_reset() and mp_err_set_srv():
 * records code, ex (and the retry class mp_retry_from_exit(ex)), our
 * message from fmt, and, when srv is not NULL, a sanitized copy of its
 * srvlen bytes of server text (else err->srv is left as it was).
 * NULL-safe. Returns code, whether recorded or not (cannot fail).
 */
int mp_err_record(struct mp_err *err, enum mp_err_how how, int code, enum mp_exit ex,
		  const char *srv, size_t srvlen, const char *fmt, ...) MP_PRINTF(7, 8);

/*
 * Records an error unless one is already recorded (the lowest layer that
 * knows the detail wins). NULL-safe. Returns code (a negative errno) so
 * callers can write `return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, ...)`.
 * Cannot fail. Each argument is evaluated once.
 */
#define mp_err_set(err, code, ex, ...) \
	mp_err_record((err), MP_ERR_FIRST, (code), (ex), NULL, 0, __VA_ARGS__)

/* Same, overwriting an earlier error. Returns code. */
#define mp_err_reset(err, code, ex, ...) \
	mp_err_record((err), MP_ERR_OVERWRITE, (code), (ex), NULL, 0, __VA_ARGS__)

/* Stores a sanitized copy of the server's text (control bytes replaced). NULL-safe. */
void mp_err_server(struct mp_err *err, const char *text, size_t len);

/*
 * mp_err_set() with the server's text (len bytes, sanitized) kept apart
 * from ours in err->srv. Unlike mp_err_server(), leaves an error already
 * recorded untouched, the server text included. Returns code.
 */
#define mp_err_set_srv(err, code, ex, text, len, ...) \
	mp_err_record((err), MP_ERR_FIRST, (code), (ex), (text), (len), __VA_ARGS__)

/*
 * Puts "PREFIX: " (from fmt) before err->msg (or before strerror of its
 * code when the message is empty), truncated to fit: for a caller that
 * knows where an error from below happened. NULL-safe. Cannot fail.
 */
void mp_err_prefix(struct mp_err *err, const char *fmt, ...) MP_PRINTF(2, 3);

/* Records "out of memory" (class MP_EX_TEMPFAIL) unless an error is recorded. Returns -ENOMEM. */
int mp_err_oom(struct mp_err *err);

/*
 * The line that reports a failed account run, into buf (size bytes, always
 * terminated, truncated to fit): "account NAME (HOST:PORT): MSG", followed
 * by "; the server said: SRV" when err->srv is not empty. MSG is err->msg,
 * or strerror(-err->code) when the message is empty and a code is set.
 * Returns the length the whole line needs, like snprintf(); cannot fail.
 */
size_t mp_err_line(char *buf, size_t size, const char *account, const char *host, unsigned port,
		   const struct mp_err *err);

/*
 * The retry class of an exit class: NOPERM, CONFIG, USAGE hold; PROTOCOL
 * slow; everything else (MP_EX_OK included) backoff. Cannot fail.
 */
enum mp_retry mp_retry_from_exit(enum mp_exit ex);

/* Default exit class for a bare negative errno (0: MP_EX_OK). Cannot fail. */
enum mp_exit mp_exit_from_errno(int code);

/* The more severe of two exit classes (see mailpull(1), EXIT STATUS). Cannot fail. */
enum mp_exit mp_exit_worse(enum mp_exit a, enum mp_exit b);

#endif
