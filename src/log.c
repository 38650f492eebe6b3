/* Logging to stderr; the level is the only mutable global besides arg_*. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mailpull/log.h"
#include "mailpull/util.h"

static enum log_level log_level = LOG_LVL_INFO;

void
log_set_level(enum log_level lvl)
{
	log_level = lvl;
}

bool
log_enabled(enum log_level lvl)
{
	return lvl <= log_level;
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const char *const prefix[LOG_LVL_MAX] = {
		"error: ", "warning: ", "", "", "debug: ", "",
	};
	char buf[2048];
	va_list ap;

	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "mailpull: %s%s\n", prefix[lvl], buf);
}

void
log_trace(const char *dir, const char *line, size_t len, size_t redact_from)
{
	char buf[1024];

	if (!log_enabled(LOG_LVL_TRACE))
		return;
	util_sanitize(buf, sizeof(buf), line, redact_from < len ? redact_from : len);
	fprintf(stderr, "%s: %s%s\n", dir, buf, redact_from < len ? "***" : "");
}
