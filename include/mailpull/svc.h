/*
 * Service manager glue (systemd's notify protocol, sd_notify(3)). Every
 * function is a no-op when NOTIFY_SOCKET is unset, and none can fail the
 * caller: a manager that does not listen is no reason to stop fetching.
 */
#ifndef MAILPULL_SVC_H
#define MAILPULL_SVC_H

#include "mailpull/common.h"

/* READY=1 with a STATUS= line (status may be NULL). Cannot fail. */
void svc_ready(const char *status);

/*
 * STATUS=status: a short human summary shown by `systemctl status`
 * (cut at about 500 bytes). Cannot fail.
 */
void svc_status(const char *status);

/*
 * RELOADING=1 with MONOTONIC_USEC= (systemd 253's Type=notify-reload wants
 * both). Cannot fail.
 */
void svc_reloading(void);

/* STOPPING=1. Cannot fail. */
void svc_stopping(void);

/*
 * The watchdog period in milliseconds when the manager asked for keep-alive
 * pings for this process (WATCHDOG_USEC, WATCHDOG_PID unset or ours), else 0.
 * The caller pings at half of it. Cannot fail: an unparsable
 * WATCHDOG_USEC counts as none.
 */
int64_t svc_watchdog_ms(void);

/* WATCHDOG=1. Cannot fail. */
void svc_watchdog(void);

#endif
