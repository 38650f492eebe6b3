/* The two daemon commands: --daemon and --poll-now. They log their own errors. */
#ifndef MAILPULL_DAEMON_H
#define MAILPULL_DAEMON_H

#include "mailpull/config.h"
#include "mailpull/err.h"

/*
 * --daemon with the loaded *cfg (replaced by each reload; the caller frees
 * the last one): takes the pid file and runs the scheduler until SIGTERM.
 * Returns MP_EX_OK after a clean stop, MP_EX_TEMPFAIL when another daemon
 * holds the pid file, MP_EX_IOERR when it cannot be written or the
 * scheduler cannot start.
 */
enum mp_exit daemon_run(struct mp_config **cfg);

/*
 * --poll-now: sends SIGUSR1 to the daemon of the configuration at path.
 * Reads the configuration only when XDG_RUNTIME_DIR is unset (the pid file
 * is then in its state_dir). Returns MP_EX_OK, MP_EX_TEMPFAIL when no
 * daemon runs for path, MP_EX_CONFIG when path cannot be read.
 */
enum mp_exit daemon_poll_now(const char *path, bool quiet);

#endif
