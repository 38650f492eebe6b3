/*
 * The daemon's scheduler: all of mailpull's concurrency lives here. Every
 * account runs at start-up and then every `interval` after its last run
 * ended, on a pool of `parallel` worker processes (one account run per
 * process); an idle = yes IMAP account gets a long-lived process of its
 * own that waits in IDLE between runs. One account never runs twice at
 * once. A failing account is retried after interval/8, then twice as late
 * each time up to 4 x interval, and the log says when it starts failing
 * and when it works again, not at every retry.
 *
 * Signals: SIGUSR1 polls every account now; SIGHUP re-reads the
 * configuration (keeping the old one when the new one is invalid);
 * SIGTERM and SIGINT stop the workers (SIGKILL after a grace period) and
 * return.
 */
#ifndef MAILPULL_SCHEDULER_H
#define MAILPULL_SCHEDULER_H

#include "mailpull/common.h"
#include "mailpull/config.h"

/*
 * Runs until SIGTERM or SIGINT. *cfg is replaced on each successful reload
 * (the old one freed); the caller frees the last one. keep_fd (the pid
 * file, or -1) is closed in the workers. Notifies the service manager
 * (READY, STATUS, RELOADING, WATCHDOG, STOPPING).
 * Returns 0 after a clean stop, with SIGUSR1, SIGHUP, SIGTERM, SIGINT and
 * SIGCHLD still blocked so a repeated SIGTERM cannot interrupt the
 * caller's clean-up; or -errno when the signal machinery cannot be set up
 * (nothing was started then).
 */
int scheduler_run(struct mp_config **cfg, int keep_fd) MP_WUR;

#endif
