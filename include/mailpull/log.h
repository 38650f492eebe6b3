/*
 * Logging. Only main, cli and account log above debug; lower modules return
 * errors. Output goes to stderr; server text passed to log_trace() is
 * sanitized (control and escape bytes shown as \xNN).
 */
#ifndef MAILPULL_LOG_H
#define MAILPULL_LOG_H

#include "mailpull/common.h"

enum log_level {
	LOG_LVL_ERR,
	LOG_LVL_WARN,
	LOG_LVL_NOTICE,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
	LOG_LVL_TRACE,   /* protocol trace, -v */
	LOG_LVL_MAX
};

/* Sets the most verbose level printed (default LOG_LVL_INFO). */
void log_set_level(enum log_level lvl);
bool log_enabled(enum log_level lvl);

void log_msg(enum log_level lvl, const char *fmt, ...) MP_PRINTF(2, 3);
#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/*
 * Protocol trace line (shown with -v). dir is "C" (sent) or "S" (received).
 * When redact_from < len, bytes from redact_from on are replaced by "***":
 * engines pass the offset of a secret so it never reaches the trace.
 */
void log_trace(const char *dir, const char *line, size_t len, size_t redact_from);

#endif
