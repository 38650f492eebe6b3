/*
 * The daemon's pid file: one per configuration file, locked with flock(2)
 * for as long as the daemon runs, so a second daemon of the same
 * configuration is refused and `--poll-now` finds the one that runs.
 */
#ifndef MAILPULL_PIDFILE_H
#define MAILPULL_PIDFILE_H

#include <sys/types.h>

#include "mailpull/common.h"

/*
 * The pid file for config_path: $XDG_RUNTIME_DIR/mailpull/daemon-HASH.pid,
 * or STATE_DIR/daemon-HASH.pid without XDG_RUNTIME_DIR, where HASH is
 * 8 hex digits of the FNV-1a hash of the configuration's absolute path
 * (symbolic links resolved), so every spelling of one file finds the same
 * daemon. *ret is malloc'd: the caller frees it with free(3).
 * Errors: -ENOENT (config_path does not exist), -ENOMEM, other realpath(3)
 * errors.
 */
int pidfile_path(const char *config_path, const char *state_dir, char **ret) MP_WUR;

/*
 * Creates the directory (0700) and the file, takes the lock and writes our
 * pid. *ret_fd keeps the lock (O_CLOEXEC; a forked worker must close it);
 * the caller gives it back with pidfile_release().
 * Errors: -EAGAIN (another process holds the lock, or the file kept being
 * replaced under us; the holder's pid, when readable, in *ret_holder, else
 * 0), -ENOMEM, -errno of mkdir, open, flock, ftruncate or write.
 */
int pidfile_acquire(const char *path, int *ret_fd, pid_t *ret_holder) MP_WUR;

/*
 * The pid of the daemon holding path's lock.
 * Errors: -ESRCH (no daemon: no file, or nobody holds its lock), -EBADMSG
 * (locked, but no pid in it yet), -errno of open.
 */
int pidfile_holder(const char *path, pid_t *ret) MP_WUR;

/*
 * Removes the file, then closes fd (which releases the lock). fd < 0:
 * nothing; path NULL: only closes. Cannot fail (an unlink error is ignored:
 * the lock, not the file, says whether a daemon runs).
 */
void pidfile_release(const char *path, int fd);

#endif
