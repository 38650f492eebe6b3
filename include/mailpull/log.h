/*
 * Logging. Only main, cli, scheduler and account log above debug; lower
 * modules return errors. Output goes to stderr unless log_open() chose the
 * journal or syslog; server text passed to log_trace() is sanitized
 * (control and escape bytes shown as \xNN).
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

/* Where log lines go; the values match enum mp_log of config.h. */
enum log_target {
	LOG_TARGET_AUTO,      /* the journal when stderr is connected to it, else stderr */
	LOG_TARGET_STDERR,
	LOG_TARGET_JOURNAL,
	LOG_TARGET_SYSLOG,
	LOG_TARGET_MAX
};

/*
 * Chooses the target (default: plain stderr, as before any call). With
 * LOG_TARGET_STDERR, lines carry "<N>" priority prefixes when stderr is
 * the journal's stream, so it keeps the levels. Cannot fail: a journal or
 * syslog that refuses a line gets it on stderr instead.
 */
void log_open(enum log_target t);

/*
 * Whether stderr is a journal stream (JOURNAL_STREAM names its device and
 * inode). Cannot fail: anything unreadable counts as "no".
 */
bool log_stderr_is_journal(void);

/* Sets the most verbose level printed (default LOG_LVL_INFO). Cannot fail. */
void log_set_level(enum log_level lvl);

/* Whether lines of level lvl are printed (to skip costly formatting). Cannot fail. */
bool log_enabled(enum log_level lvl);

/*
 * A line about one account: formatted like printf (longer lines are cut at
 * about 2 KiB), and in the journal also with the fields MAILPULL_ACCOUNT
 * and MAILPULL_HOST (either may be NULL). The message itself should still
 * name the account. Cannot fail: a journal or syslog that refuses the line
 * gets it on stderr instead.
 */
void log_acct(enum log_level lvl, const char *account, const char *host, const char *fmt, ...)
	MP_PRINTF(4, 5);

/* A line about no account in particular; as log_acct(). */
#define log_msg(lvl, ...) log_acct((lvl), NULL, NULL, __VA_ARGS__)

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/*
 * Protocol trace line (shown with -v). dir is "C" (sent) or "S" (received).
 * When redact_from < len, bytes from redact_from on are replaced by "***":
 * engines pass the offset of a secret so it never reaches the trace.
 * Cannot fail.
 */
void log_trace(const char *dir, const char *line, size_t len, size_t redact_from);

#endif
