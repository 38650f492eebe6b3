/*
 * Logging to stderr, the journal or syslog. The level and the target are
 * the only mutable globals besides arg_*: set once in main, before any
 * worker process is forked, so every process logs the same way.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "mailpull/log.h"
#include "mailpull/util.h"

static enum log_level log_level = LOG_LVL_INFO;
static enum log_target log_target = LOG_TARGET_STDERR;
static bool log_prefix;    /* "<N>" before stderr lines */

bool
log_stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	const char *colon = e ? strchr(e, ':') : NULL;
	uint64_t dev, ino;
	struct stat st;

	if (!colon || util_parse_u64(e, (size_t)(colon - e), &dev) < 0 ||
	    util_parse_u64(colon + 1, strlen(colon + 1), &ino) < 0)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (uint64_t)st.st_dev == dev && (uint64_t)st.st_ino == ino;
}

void
log_open(enum log_target t)
{
	bool journal = log_stderr_is_journal();

	if (t == LOG_TARGET_AUTO)
		t = journal ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
	log_prefix = t == LOG_TARGET_STDERR && journal;
	if (t == LOG_TARGET_SYSLOG)
		openlog("mailpull", LOG_PID, LOG_MAIL);
	log_target = t;
}

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

static int
syslog_priority(enum log_level lvl)
{
	static const int prio[LOG_LVL_MAX] = {
		LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG, LOG_DEBUG,
	};

	return prio[lvl];
}

/* Native journal entry; 0 or a negative errno (then the caller uses stderr). */
static int
to_journal(enum log_level lvl, const char *account, const char *host, const char *msg)
{
	char m[2100], p[16], a[128], h[300];
	struct iovec iov[5];
	int n = 0;

	snprintf(m, sizeof(m), "MESSAGE=%s", msg);
	snprintf(p, sizeof(p), "PRIORITY=%d", syslog_priority(lvl));
	iov[n++] = (struct iovec){ m, strlen(m) };
	iov[n++] = (struct iovec){ p, strlen(p) };
	iov[n++] = (struct iovec){ (char *)"SYSLOG_IDENTIFIER=mailpull",
				   strlen("SYSLOG_IDENTIFIER=mailpull") };
	if (account) {
		snprintf(a, sizeof(a), "MAILPULL_ACCOUNT=%s", account);
		iov[n++] = (struct iovec){ a, strlen(a) };
	}
	if (host) {
		snprintf(h, sizeof(h), "MAILPULL_HOST=%s", host);
		iov[n++] = (struct iovec){ h, strlen(h) };
	}
	return sd_journal_sendv(iov, n);
}

static void
emit(enum log_level lvl, const char *account, const char *host, const char *msg)
{
	static const char *const prefix[LOG_LVL_MAX] = {
		"error: ", "warning: ", "", "", "debug: ", "",
	};

	if (log_target == LOG_TARGET_JOURNAL && to_journal(lvl, account, host, msg) >= 0)
		return;
	if (log_target == LOG_TARGET_SYSLOG) {
		syslog(syslog_priority(lvl), "%s%s", prefix[lvl], msg);
		return;
	}
	if (log_prefix)
		fprintf(stderr, "<%d>mailpull: %s%s\n", syslog_priority(lvl), prefix[lvl], msg);
	else
		fprintf(stderr, "mailpull: %s%s\n", prefix[lvl], msg);
}

void
log_acct(enum log_level lvl, const char *account, const char *host, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	emit(lvl, account, host, buf);
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
