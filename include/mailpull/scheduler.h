/*
 * The daemon's scheduler: all of mailpull's concurrency lives here. Every
 * account runs at start-up and then every `interval` after its last run
 * ended, on a pool of `parallel` worker processes (one account run per
 * process); an idle = yes IMAP account gets a long-lived process of its
 * own that waits in IDLE between runs. One account never runs twice at
 * once. A failed run's retry class (err.h, enum mp_retry) decides when the
 * account runs again: a temporary failure after interval/8, then twice as
 * late each time up to 4 x interval; a protocol error after 4 x interval;
 * a refusal (password, configuration) not until SIGHUP or until the
 * configuration file or the account's password_file changes (stat(2) at
 * each interval tick; a changed configuration file is reloaded); a
 * partial run at the next interval. The log says when an account starts
 * failing and when it works again, not at every retry; a held account is
 * logged once, and named apart in the STATUS line.
 *
 * A sending account (smtp_host) also runs when a message lands in its
 * outbox: new/ and cur/ are watched with inotify (one descriptor for the
 * daemon; the directories are made, mode 0700, when missing), and the
 * account runs about 0.7 s after the first event, so a burst of messages
 * makes one run, plus at most one more for what lands during it (a message
 * moved inside the outbox, new/ to cur/ or a flag change, is no news). Without
 * a watch (no inotify, the watch limit reached: logged once) the outbox is
 * sent at the account's interval. A reload watches the new outboxes.
 *
 * Signals: SIGUSR1 polls every account now, held ones excepted; SIGHUP
 * re-reads the configuration (keeping the old one when the new one is
 * invalid) and releases every held account; SIGTERM and SIGINT stop the
 * workers (SIGKILL after a grace period) and return.
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
 * caller's clean-up. Errors: -errno of sigprocmask or signalfd when the
 * signal machinery cannot be set up, -ENOMEM before the first run (nothing
 * was started then); -errno of poll or -ENOMEM later, after the workers
 * were stopped. Account failures are never returned: they are logged and
 * retried.
 */
int scheduler_run(struct mp_config **cfg, int keep_fd) MP_WUR;

#endif
