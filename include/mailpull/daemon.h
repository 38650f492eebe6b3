/* The two daemon commands: --daemon and --poll-now. They log their own errors. */
#ifndef MAILPULL_DAEMON_H
#define MAILPULL_DAEMON_H

#include "mailpull/config.h"
#include "mailpull/err.h"

/*
 * --daemon with the loaded *cfg (replaced by each reload; the caller frees
 * the last one): opens the log target of (*cfg)->log, takes the pid file
 * and runs the scheduler until SIGTERM or SIGINT. Account failures are
 * the scheduler's to log and retry, never returned.
 * Returns MP_EX_OK after a clean stop; MP_EX_TEMPFAIL when another daemon
 * holds the pid file; MP_EX_IOERR when the pid file cannot be named
 * (realpath of the configuration) or written, or the scheduler cannot
 * start or fails (out of memory, poll).
 */
enum mp_exit daemon_run(struct mp_config **cfg);

/*
 * --poll-now: sends SIGUSR1 to the daemon of the configuration at path.
 * Reads the configuration only when XDG_RUNTIME_DIR is unset (the pid file
 * is then in its state_dir). Returns MP_EX_OK; MP_EX_TEMPFAIL when no
 * daemon runs for path (no pid file, not locked, no pid in it, or kill
 * failed); MP_EX_CONFIG when path cannot be resolved or loaded. quiet:
 * no line on success.
 */
enum mp_exit daemon_poll_now(const char *path, bool quiet);

#endif
