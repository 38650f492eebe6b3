/*
 * Where protocol engines stream message bodies. Engines never touch files:
 * they call begin(), then data() any number of times with bytes already
 * decoded (CRLF turned into LF, POP3 dot-stuffing undone), then end().
 * A callback returning a negative errno aborts the transfer; the engine
 * records it in its struct mp_err with mp_exit_from_errno()'s class,
 * returns that value, and the connection must not be reused. buf passed
 * to data() is borrowed: valid only during the call.
 */
#ifndef MAILPULL_SINK_H
#define MAILPULL_SINK_H

#include "mailpull/common.h"

struct mp_sink {
	/* idx is the position of the message in the request (0-based). */
	int (*begin)(void *ud, size_t idx);
	int (*data)(void *ud, const char *buf, size_t len);
	int (*end)(void *ud);
	void *ud;
};

#endif
