/* --daemon and --poll-now: the pid file around the scheduler, and its reader. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/daemon.h"
#include "mailpull/log.h"
#include "mailpull/pidfile.h"
#include "mailpull/scheduler.h"

static enum log_target
log_target_of(enum mp_log l)
{
	switch (l) {
	case MP_LOG_STDERR:
		return LOG_TARGET_STDERR;
	case MP_LOG_JOURNAL:
		return LOG_TARGET_JOURNAL;
	case MP_LOG_SYSLOG:
		return LOG_TARGET_SYSLOG;
	case MP_LOG_AUTO:
	case MP_LOG_MAX:
		break;
	}
	return LOG_TARGET_AUTO;
}

enum mp_exit
daemon_run(struct mp_config **cfg)
{
	char *pp = NULL;
	pid_t holder = 0;
	int fd = -1, r;

	log_open(log_target_of((*cfg)->log));
	r = pidfile_path((*cfg)->path, (*cfg)->state_dir, &pp);
	if (r < 0) {
		log_err("%s: %s", (*cfg)->path, strerror(-r));
		return MP_EX_IOERR;
	}
	r = pidfile_acquire(pp, &fd, &holder);
	if (r == -EAGAIN) {
		if (holder)
			log_err("another daemon (pid %ld) runs for %s; its pid file is %s",
				(long)holder, (*cfg)->path, pp);
		else
			log_err("another daemon runs for %s; its pid file is %s", (*cfg)->path, pp);
		free(pp);
		return MP_EX_TEMPFAIL;
	}
	if (r < 0) {
		log_err("cannot write the pid file %s: %s", pp, strerror(-r));
		free(pp);
		return MP_EX_IOERR;
	}
	r = scheduler_run(cfg, fd);
	pidfile_release(pp, fd);
	free(pp);
	if (r < 0) {
		log_err("cannot start the scheduler: %s", strerror(-r));
		return MP_EX_IOERR;
	}
	log_notice("stopped");
	return MP_EX_OK;
}

static int
find_pidfile(const char *path, char **ret)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	struct mp_config *cfg = NULL;
	struct mp_err err = { 0 };
	int r;

	if (rt && rt[0] == '/')
		return pidfile_path(path, NULL, ret);
	r = config_load(path, &cfg, &err);
	if (r < 0) {
		log_err("%s", err.msg);
		return r;
	}
	r = pidfile_path(path, cfg->state_dir, ret);
	config_free(cfg);
	return r;
}

enum mp_exit
daemon_poll_now(const char *path, bool quiet)
{
	char *pp = NULL;
	pid_t pid = 0;
	int r = find_pidfile(path, &pp);

	if (r < 0) {
		if (r != -EINVAL && r != -EACCES)
			log_err("%s: %s", path, strerror(-r));
		return MP_EX_CONFIG;
	}
	r = pidfile_holder(pp, &pid);
	if (r == 0 && kill(pid, SIGUSR1) < 0)
		r = -errno;
	if (r < 0) {
		log_err("no daemon runs for %s (%s: %s)", path, pp,
			r == -ESRCH ? "not locked" : strerror(-r));
		free(pp);
		return MP_EX_TEMPFAIL;
	}
	if (!quiet)
		log_info("asked the daemon (pid %ld) to poll every account now", (long)pid);
	free(pp);
	return MP_EX_OK;
}
