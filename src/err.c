/* Error detail: the lowest layer that knows it fills it once. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mailpull/err.h"
#include "mailpull/util.h"

void
mp_err_clear(struct mp_err *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
}

void
mp_err_server(struct mp_err *err, const char *text, size_t len)
{
	if (err)
		util_sanitize(err->srv, sizeof(err->srv), text, len);
}

int
mp_err_record(struct mp_err *err, enum mp_err_how how, int code, enum mp_exit ex,
	      const char *srv, size_t srvlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || (how == MP_ERR_FIRST && err->code != 0))
		return code;
	err->code = code;
	err->ex = ex;
	err->retry = mp_retry_from_exit(ex);
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	if (srv)
		mp_err_server(err, srv, srvlen);
	return code;
}

void
mp_err_prefix(struct mp_err *err, const char *fmt, ...)
{
	char prefix[sizeof(err->msg)], msg[sizeof(err->msg)];
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "%s", err->msg[0] || !err->code ? err->msg : strerror(-err->code));
	/* truncation is what "to fit" means here */
	if (snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, msg) < 0)
		err->msg[0] = '\0';
}

int
mp_err_oom(struct mp_err *err)
{
	return mp_err_set(err, -ENOMEM, MP_EX_TEMPFAIL, "out of memory");
}

size_t
mp_err_line(char *buf, size_t size, const char *account, const char *host, unsigned port,
	    const struct mp_err *err)
{
	const char *msg = err->msg[0] || !err->code ? err->msg : strerror(-err->code);
	int n;

	if (err->srv[0])
		n = snprintf(buf, size, "account %s (%s:%u): %s; the server said: %s", account,
			     host, port, msg, err->srv);
	else
		n = snprintf(buf, size, "account %s (%s:%u): %s", account, host, port, msg);
	return n > 0 ? (size_t)n : 0;
}

enum mp_retry
mp_retry_from_exit(enum mp_exit ex)
{
	switch (ex) {
	case MP_EX_NOPERM:
	case MP_EX_CONFIG:
	case MP_EX_USAGE:
		return MP_RETRY_HOLD;
	case MP_EX_PROTOCOL:
		return MP_RETRY_SLOW;
	case MP_EX_DATAERR:
		/* the message is set aside as failed: nothing to retry */
		return MP_RETRY_INTERVAL;
	default:
		return MP_RETRY_BACKOFF;
	}
}

enum mp_exit
mp_exit_from_errno(int code)
{
	switch (code) {
	case 0:
		return MP_EX_OK;
	case -EACCES:
		return MP_EX_NOPERM;
	case -EPROTO:
	case -EBADMSG:
	case -E2BIG:
		return MP_EX_PROTOCOL;
	case -EINVAL:
		return MP_EX_CONFIG;
	case -EIO:
	case -ENOSPC:
	case -EDQUOT:
	case -EROFS:
		return MP_EX_IOERR;
	default:
		return MP_EX_TEMPFAIL;
	}
}

/*
 * Most severe first: local I/O (mail at risk on this side), configuration,
 * authentication, protocol/TLS, a refused message, temporary, usage.
 */
static int
exit_rank(enum mp_exit e)
{
	switch (e) {
	case MP_EX_IOERR:
		return 7;
	case MP_EX_CONFIG:
		return 6;
	case MP_EX_NOPERM:
		return 5;
	case MP_EX_PROTOCOL:
		return 4;
	case MP_EX_DATAERR:
		return 3;
	case MP_EX_TEMPFAIL:
		return 2;
	case MP_EX_USAGE:
		return 1;
	case MP_EX_OK:
		break;
	}
	return 0;
}

enum mp_exit
mp_exit_worse(enum mp_exit a, enum mp_exit b)
{
	return exit_rank(b) > exit_rank(a) ? b : a;
}
