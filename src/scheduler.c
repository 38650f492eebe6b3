/*
 * The daemon's scheduler (see scheduler.h). One parent process decides
 * what runs when; each account run happens in a forked worker, so a slow,
 * hanging or crashing account cannot hold up the others or the parent,
 * and a worker's memory is returned when it ends.
 *
 * The parent blocks its signals and reads them from a signalfd, so all of
 * its work happens in one poll() loop and no handler ever runs there.
 * Workers install handlers that only set flags. Each worker reports every
 * run through a pipe as one fixed-size record (smaller than PIPE_BUF, so
 * it arrives whole); the parent alone decides what to log about failures.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mailpull/account.h"
#include "mailpull/log.h"
#include "mailpull/scheduler.h"
#include "mailpull/svc.h"
#include "mailpull/util.h"

/* RFC 2177: servers may end IDLE after 30 minutes; renew it before. */
#define IDLE_MAX_S (28 * 60)
/* How long stopping workers get before SIGKILL; every durable step survives it. */
#define STOP_GRACE_MS 5000
#define BACKOFF_MAX_FACTOR 4
/*
 * A message landing in an outbox runs its account this long after the
 * first event, so that a burst (a mail client flushing its queue) makes
 * one run, not one per message.
 */
#define OUTBOX_DEBOUNCE_MS 700
/*
 * What a new outbox message looks like: renamed or linked in, or written
 * there. IN_MOVED_FROM pairs a rename inside the outbox with its
 * IN_MOVED_TO: that message is no news.
 */
#define OUTBOX_EVENTS (IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_FROM)

enum report_kind { REPORT_RUN, REPORT_IDLE_NOTSUP, REPORT_IDLE_ERR };

/* One worker-to-parent record; fits in PIPE_BUF so a write is atomic. */
struct report {
	enum report_kind kind;
	int code;
	struct account_stats stats;
	struct mp_err err;            /* err.retry: what the parent does next */
};

/*
 * What stat(2) said of a file: a held account runs again when its
 * configuration file or password_file no longer matches (see check_held).
 */
struct filesig {
	int err;                      /* errno of stat, 0: the fields are set */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

_Static_assert(sizeof(struct report) <= 4096, "a report must fit in PIPE_BUF");

struct slot {
	char *name;
	const struct mp_account *a;   /* in the current configuration; NULL once removed */
	pid_t pid;                    /* the worker, 0: none */
	int fd;                       /* read end of the worker's report pipe, -1: none */
	bool idle_worker;             /* the worker loops in IDLE */
	bool restart;                 /* run again at once when the worker ends */
	bool again;                   /* poll-now came while it ran */
	bool no_idle;                 /* the server lacks IDLE: poll */
	bool got_report;              /* the worker reported at least once */
	bool held;                    /* refused: no retries until released (check_held) */
	enum mp_exit held_ex;         /* why: MP_EX_NOPERM, MP_EX_CONFIG, ... */
	unsigned gen;                 /* sched.gen when its worker started */
	struct filesig pw_sig;        /* its password_file when its last run started */
	int64_t due_ms;               /* held: the next look at its files */
	int wd[2];                    /* inotify watches on outbox new/ and cur/, -1: none */
	bool watch_failed;            /* the failure to watch was logged */
	int64_t kick_ms;              /* outbox news: run at this time, 0: none pending */
	unsigned fails;
	char last_err[1536];
};

struct sched {
	struct mp_config **cfg;
	struct slot *slots;
	size_t nslots;
	int sfd;
	int ifd;                      /* inotify, for the outboxes; -1: none */
	int *wds;                     /* its watch descriptors */
	size_t nwds, wdcap;
	bool watch_limit_logged;      /* the watch limit was hit and said so once */
	uint32_t moved_cookie;        /* the last IN_MOVED_FROM in a watched directory */
	int moved_wd;
	int keep_fd;
	bool stopping;
	unsigned gen;                 /* configuration (re)loads so far */
	struct filesig cfg_sig;       /* the configuration file when last read */
	int64_t wd_ms, wd_next;
	uint64_t fetched;             /* messages since start */
	time_t last_poll;
	/*
	 * poll() set and its slot for each entry; kept here rather than on
	 * the loop's stack so a forked worker still reaches them until _exit.
	 */
	struct pollfd *pfd;
	struct slot **who;
	size_t pcap;
};

/* Set by the worker's handlers only. */
static volatile sig_atomic_t worker_term;
static volatile sig_atomic_t worker_wake;

static void
on_worker_term(int sig)
{
	(void)sig;
	worker_term = 1;
	worker_wake = 1;
}

static void
on_worker_wake(int sig)
{
	(void)sig;
	worker_wake = 1;
}

static void
sigset_daemon(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGCHLD);
}

/* ---- watched files ------------------------------------------------------ */

/* path NULL: a signature that matches only another NULL path's. */
static void
filesig_take(struct filesig *f, const char *path)
{
	struct stat st;

	*f = (struct filesig){ .err = path ? 0 : ENOENT };
	if (!path)
		return;
	if (stat(path, &st) < 0) {
		f->err = errno;
		return;
	}
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->size = st.st_size;
	f->mtime = st.st_mtim;
	f->ctime = st.st_ctim;
}

static bool
filesig_same(const struct filesig *a, const struct filesig *b)
{
	return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* ---- outboxes ----------------------------------------------------------- */

/*
 * A sending account's outbox is watched with inotify (one descriptor for
 * the whole daemon): a message renamed, linked or written into its new/
 * or cur/ runs the account soon after (run_kicks()), since each run sends
 * first. The directories are made when missing so that they can be
 * watched before the first message is queued. Without a watch (no
 * inotify, the watch limit reached) the account is sent at its interval.
 */

/* Remembers wd as one of the daemon's watches (for watch_all() to prune). */
static void
wd_note(struct sched *s, int wd)
{
	for (size_t i = 0; i < s->nwds; i++)
		if (s->wds[i] == wd)
			return;
	if (s->nwds < s->wdcap)
		s->wds[s->nwds++] = wd;
}

static void
watch_failed(struct sched *s, struct slot *sl, const char *path, int err)
{
	const struct mp_account *a = sl->a;

	if (err == ENOSPC) {
		/* inotify_add_watch(2): the per-user limit on watches. */
		if (!s->watch_limit_logged)
			log_acct(LOG_LVL_WARN, a->name, a->host, "account %s: cannot watch %s: the "
				 "inotify watch limit (fs.inotify.max_user_watches) is reached; "
				 "outboxes without a watch are sent at each interval", a->name,
				 path);
		s->watch_limit_logged = true;
	} else if (!sl->watch_failed) {
		log_acct(LOG_LVL_WARN, a->name, a->host, "account %s: cannot watch the outbox %s: "
			 "%s; it is sent at each interval", a->name, path, strerror(err));
	}
	sl->watch_failed = true;
}

/* Watches what of sl's outbox is not watched yet, making DIR/{tmp,new,cur} first. */
static void
watch_slot(struct sched *s, struct slot *sl)
{
	static const char *const subs[] = { "tmp", "new", "cur" };
	const struct mp_account *a = sl->a;

	if (s->ifd < 0 || !a || !a->smtp_host || !a->outbox)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		char path[PATH_MAX];
		int n = snprintf(path, sizeof(path), "%s/%s", a->outbox, subs[i]), wd, r;

		if (n < 0 || (size_t)n >= sizeof(path)) {
			watch_failed(s, sl, a->outbox, ENAMETOOLONG);
			return;
		}
		r = util_mkdir_p(path, 0700);
		if (r < 0) {
			watch_failed(s, sl, path, -r);
			return;
		}
		if (i == 0 || sl->wd[i - 1] >= 0)
			continue;
		wd = inotify_add_watch(s->ifd, path, OUTBOX_EVENTS | IN_ONLYDIR);
		if (wd < 0) {
			watch_failed(s, sl, path, errno);
			continue;
		}
		sl->wd[i - 1] = wd;
		wd_note(s, wd);
	}
}

static bool
wd_listed(const int *v, size_t n, int wd)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == wd)
			return true;
	return false;
}

/*
 * Every sending account's outbox watched anew (at start and after a
 * reload); watches no account uses any more are removed. The same
 * directory keeps its watch descriptor (inotify_add_watch(2) returns the
 * existing one), so nothing that arrived meanwhile is lost.
 */
static void
watch_all(struct sched *s)
{
	int *old = s->wds;
	size_t nold = s->nwds;

	if (s->ifd < 0)
		return;
	s->wdcap = 2 * s->nslots;
	s->wds = calloc(s->wdcap ? s->wdcap : 1, sizeof(*s->wds));
	s->nwds = 0;
	if (!s->wds)
		s->wdcap = 0;
	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];

		sl->wd[0] = sl->wd[1] = -1;
		sl->watch_failed = false;
		watch_slot(s, sl);
	}
	/* Without the new list nothing can be told stale: the old ones stay, harmless. */
	for (size_t i = 0; s->wds && i < nold; i++)
		if (!wd_listed(s->wds, s->nwds, old[i]))
			(void)inotify_rm_watch(s->ifd, old[i]);
	free(old);
}

/*
 * One event: the accounts whose outbox it concerns run after the debounce.
 * A message moved inside an outbox (new/ to cur/ by a mail client, or a
 * run renaming its own messages) was news when it landed and is not
 * again: the two halves of a rename carry one cookie (inotify(7)).
 */
static void
on_outbox_event(struct sched *s, const struct inotify_event *ev, int64_t now)
{
	bool overflow = ev->mask & IN_Q_OVERFLOW;
	bool inside = (ev->mask & IN_MOVED_TO) && ev->cookie && ev->cookie == s->moved_cookie;

	if (ev->mask & IN_MOVED_FROM) {
		s->moved_cookie = ev->cookie;
		s->moved_wd = ev->wd;
		return;
	}
	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];

		if (!sl->a || !sl->a->smtp_host)
			continue;
		if (!overflow && sl->wd[0] != ev->wd && sl->wd[1] != ev->wd)
			continue;
		if (ev->mask & IN_IGNORED) {
			/* The directory went away: watched again when the account's run ends. */
			for (int k = 0; k < 2; k++)
				if (sl->wd[k] == ev->wd)
					sl->wd[k] = -1;
			continue;
		}
		/* Directories, and names no Maildir message has (dot files), are no news. */
		if (!overflow && ((ev->mask & IN_ISDIR) || !ev->len || ev->name[0] == '.'))
			continue;
		if (inside && (sl->wd[0] == s->moved_wd || sl->wd[1] == s->moved_wd))
			continue;
		if (!sl->kick_ms)
			sl->kick_ms = now + OUTBOX_DEBOUNCE_MS;
	}
}

static void
read_outbox_events(struct sched *s)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int64_t now = util_now_ms();

	for (;;) {
		ssize_t n = read(s->ifd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		for (size_t off = 0; off + sizeof(struct inotify_event) <= (size_t)n;) {
			const struct inotify_event *ev = (const void *)(buf + off);

			on_outbox_event(s, ev, now);
			off += sizeof(*ev) + ev->len;
		}
	}
}

/*
 * Runs sl as soon as possible: now when no worker runs it, by waking its
 * IDLE worker, or right after the run in progress.
 */
static void
slot_run_soon(struct slot *sl, int64_t now)
{
	if (!sl->pid)
		sl->due_ms = now;
	else if (sl->idle_worker)
		(void)kill(sl->pid, SIGUSR1);
	else
		sl->again = true;
}

/*
 * Outbox news whose debounce is over: the account runs now, as a poll-now
 * for it alone (once more after the run in progress, if one is). Returns
 * the earliest news still waiting (INT64_MAX: none).
 */
static int64_t
run_kicks(struct sched *s)
{
	int64_t now = util_now_ms(), next = INT64_MAX;

	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];

		if (!sl->kick_ms)
			continue;
		if (!sl->a) {
			sl->kick_ms = 0;
			continue;
		}
		if (sl->kick_ms > now) {
			next = sl->kick_ms < next ? sl->kick_ms : next;
			continue;
		}
		sl->kick_ms = 0;
		/* Held: its fix comes first (check_held); the outbox waits. */
		if (sl->held)
			continue;
		log_acct(LOG_LVL_INFO, sl->name, sl->a->host, "account %s: outbox has new mail, "
			 "running %s", sl->name, sl->pid && !sl->idle_worker ? "again after the "
			 "current run" : "now");
		slot_run_soon(sl, now);
	}
	return next;
}

/* ---- workers ------------------------------------------------------------ */

static void
report_send(int fd, enum report_kind kind, int code, const struct account_stats *st,
	    const struct mp_err *err)
{
	struct report r = { .kind = kind, .code = code };

	if (st)
		r.stats = *st;
	if (err)
		r.err = *err;
	/* A failure nobody described still gets a message (mp_err_line) and backs off. */
	if (code < 0 && r.err.code == 0)
		r.err.code = code;
	/* A parent that is gone cannot be told; the run's work is durable anyway. */
	(void)util_write_all(fd, (const char *)&r, sizeof(r));
}

static int
worker_run(const struct mp_config *cfg, const struct mp_account *a, int fd)
{
	struct account_opts o = { .stop = &worker_term };
	struct account_stats st = { 0 };
	struct mp_err err = { 0 };
	int r = account_run(cfg, a, &o, &st, &err);

	report_send(fd, REPORT_RUN, r, &st, &err);
	if (r < 0)
		return err.ex ? err.ex : MP_EX_TEMPFAIL;
	return 0;
}

/*
 * An idle = yes account: run, wait in IDLE until mail comes, the interval
 * passes or SIGUSR1 asks, run again. Any failure ends the worker: the
 * parent applies its retry class (a refused login holds the account, as
 * for a polled one) and starts a new worker when that says so.
 */
static int
worker_idle_loop(const struct mp_config *cfg, const struct mp_account *a, int fd)
{
	for (;;) {
		int64_t deadline;
		int ex, r;

		worker_wake = 0;
		ex = worker_run(cfg, a, fd);
		if (ex || worker_term)
			return ex;
		deadline = util_now_ms() + (int64_t)a->interval_s * 1000;
		for (;;) {
			int64_t left = deadline - util_now_ms();
			unsigned wait_s = left <= 0 ? 0 : (unsigned)((left + 999) / 1000);
			struct mp_err err = { 0 };

			if (wait_s == 0 || worker_term)
				break;
			r = account_idle_wait(cfg, a, wait_s < IDLE_MAX_S ? wait_s : IDLE_MAX_S,
					      &worker_wake, &err);
			if (worker_term)
				return 0;
			if (r == -ENOTSUP) {
				report_send(fd, REPORT_IDLE_NOTSUP, r, NULL, &err);
				return 0;
			}
			if (r < 0) {
				report_send(fd, REPORT_IDLE_ERR, r, NULL, &err);
				return err.ex ? err.ex : MP_EX_TEMPFAIL;
			}
			if (r == 1 || worker_wake)
				break;
		}
		if (worker_term)
			return 0;
	}
}

/* In the forked child: never returns. */
static void
worker_main(struct sched *s, struct slot *me, int fd)
{
	const struct sigaction term = { .sa_handler = on_worker_term };
	const struct sigaction wake = { .sa_handler = on_worker_wake };
	const struct sigaction ign = { .sa_handler = SIG_IGN };
	const struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t set;
	int ex;

	/* The parent's descriptors are not ours to keep open (locks, pipes). */
	close(s->sfd);
	if (s->ifd >= 0)
		close(s->ifd);
	if (s->keep_fd >= 0)
		close(s->keep_fd);
	for (size_t i = 0; i < s->nslots; i++)
		if (s->slots[i].fd >= 0)
			close(s->slots[i].fd);
	sigaction(SIGTERM, &term, NULL);
	sigaction(SIGINT, &term, NULL);
	sigaction(SIGUSR1, me->idle_worker ? &wake : &ign, NULL);
	/* The parent reloads; a terminal hangup reaches it too. */
	sigaction(SIGHUP, &ign, NULL);
	sigaction(SIGCHLD, &dfl, NULL);
	sigset_daemon(&set);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	if (me->idle_worker)
		ex = worker_idle_loop(*s->cfg, me->a, fd);
	else
		ex = worker_run(*s->cfg, me->a, fd);
	_exit(ex);
}

static int
worker_start(struct sched *s, struct slot *sl)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	sl->idle_worker = sl->a->idle && sl->a->protocol == MP_PROTO_IMAP && !sl->no_idle;
	/* Taken before the run, so a fix made while it runs is not missed. */
	sl->gen = s->gen;
	filesig_take(&sl->pw_sig, sl->a->password_file);
	/* Buffered output would otherwise be written twice. */
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		int r = -errno;

		close(p[0]);
		close(p[1]);
		return r;
	}
	if (pid == 0) {
		close(p[0]);
		worker_main(s, sl, p[1]);
	}
	close(p[1]);
	(void)fcntl(p[0], F_SETFL, O_NONBLOCK);
	sl->pid = pid;
	sl->fd = p[0];
	sl->restart = false;
	sl->again = false;
	sl->got_report = false;
	sl->due_ms = INT64_MAX;
	log_debug("account %s: started worker %ld%s", sl->name, (long)pid,
		  sl->idle_worker ? " (IDLE)" : "");
	return 0;
}

/* ---- results ------------------------------------------------------------ */

/* Appends ", " (unless first) and the formatted text to list, as far as it fits. */
MP_PRINTF(3, 4) static void
list_add(char *list, size_t size, const char *fmt, ...)
{
	size_t off = strlen(list);
	va_list ap;

	if (off + 2 >= size)
		return;
	if (off) {
		memcpy(list + off, ", ", 3);
		off += 2;
	}
	va_start(ap, fmt);
	vsnprintf(list + off, size - off, fmt, ap);
	va_end(ap);
}

static const char *
held_reason(enum mp_exit ex)
{
	return ex == MP_EX_NOPERM ? "authentication refused" : "configuration error";
}

/*
 * STATUS=: counts, the last poll, then the failing accounts (retried on
 * their own) and the held ones (waiting for a fix) in lists of their own.
 */
static void
update_status(struct sched *s)
{
	char buf[600], when[32] = "never", failing[200] = "", held[240] = "";
	size_t n = 0;
	struct tm tm;
	int k;

	for (size_t i = 0; i < s->nslots; i++) {
		const struct slot *sl = &s->slots[i];

		if (!sl->a)
			continue;
		n++;
		if (sl->held)
			list_add(held, sizeof(held), "%s (%s)", sl->name, held_reason(sl->held_ex));
		else if (sl->fails)
			list_add(failing, sizeof(failing), "%s", sl->name);
	}
	if (s->last_poll && localtime_r(&s->last_poll, &tm))
		strftime(when, sizeof(when), "%H:%M:%S", &tm);
	k = snprintf(buf, sizeof(buf), "%zu account%s, last poll %s, %llu message%s fetched",
		     n, n == 1 ? "" : "s", when, (unsigned long long)s->fetched,
		     s->fetched == 1 ? "" : "s");
	if (failing[0] && k > 0 && (size_t)k < sizeof(buf))
		k += snprintf(buf + k, sizeof(buf) - (size_t)k, "; failing: %s", failing);
	if (held[0] && k > 0 && (size_t)k < sizeof(buf))
		snprintf(buf + k, sizeof(buf) - (size_t)k, "; held: %s", held);
	svc_status(buf);
}

/* interval/8, doubling with each failure, at most BACKOFF_MAX_FACTOR x interval. */
static int64_t
backoff_ms(const struct mp_account *a, unsigned fails)
{
	int64_t base = (int64_t)a->interval_s * 1000 / 8, cap;
	int64_t d;

	cap = (int64_t)a->interval_s * 1000 * BACKOFF_MAX_FACTOR;
	if (base < 1000)
		base = 1000;
	d = base;
	for (unsigned i = 1; i < fails && d < cap; i++)
		d *= 2;
	return d < cap ? d : cap;
}

/* The first failure, and each new error, at error level; a repeat at debug. */
static void
log_failure(struct slot *sl, const struct report *r, int64_t delay)
{
	const struct mp_account *a = sl->a;
	char line[sizeof(sl->last_err)];

	mp_err_line(line, sizeof(line), a->name, a->host, a->port, &r->err);
	if (sl->fails == 1 || strcmp(line, sl->last_err) != 0)
		log_acct(LOG_LVL_ERR, a->name, a->host, "%s; retrying in %llds", line,
			 (long long)(delay / 1000));
	else if (sl->fails)
		log_acct(LOG_LVL_DEBUG, a->name, a->host, "account %s: still failing (%u times); "
			 "retrying in %llds", a->name, sl->fails, (long long)(delay / 1000));
	else
		log_acct(LOG_LVL_DEBUG, a->name, a->host, "account %s: the same error again; "
			 "next run in %llds", a->name, (long long)(delay / 1000));
	memcpy(sl->last_err, line, sizeof(line));
}

/* Refused (password, configuration): said once; check_held() watches for the fix. */
static void
hold(struct slot *sl, const struct report *r, int64_t now)
{
	const struct mp_account *a = sl->a;

	sl->held = true;
	sl->held_ex = r->err.ex;
	sl->due_ms = now + (int64_t)a->interval_s * 1000;
	mp_err_line(sl->last_err, sizeof(sl->last_err), a->name, a->host, a->port, &r->err);
	log_acct(LOG_LVL_ERR, a->name, a->host, "%s; not retried until the configuration changes "
		 "or mailpull is reloaded (SIGHUP)", sl->last_err);
}

/* A failed run: its retry class (err.h) decides when the account runs next. */
static void
on_failure(struct sched *s, struct slot *sl, const struct report *r, int64_t now)
{
	int64_t interval = (int64_t)sl->a->interval_s * 1000;
	enum mp_retry retry = r->err.retry;

	/* A reload since the run started released it (SIGHUP): one more try first. */
	if (retry == MP_RETRY_HOLD && sl->gen != s->gen)
		retry = MP_RETRY_BACKOFF;
	switch (retry) {
	case MP_RETRY_HOLD:
		sl->fails++;
		hold(sl, r, now);
		return;
	case MP_RETRY_SLOW:
		sl->fails++;
		sl->due_ms = now + interval * BACKOFF_MAX_FACTOR;
		break;
	case MP_RETRY_INTERVAL:
		/* The run did its work: counted as a poll, not as a failure. */
		s->fetched += r->stats.fetched;
		s->last_poll = time(NULL);
		sl->due_ms = now + interval;
		break;
	case MP_RETRY_BACKOFF:
	default:
		sl->fails++;
		sl->due_ms = now + backoff_ms(sl->a, sl->fails);
		break;
	}
	log_failure(sl, r, sl->due_ms - now);
}

static void
on_success(struct sched *s, struct slot *sl, const struct report *r, int64_t now)
{
	const struct mp_account *a = sl->a;

	if (sl->fails)
		log_acct(LOG_LVL_NOTICE, a->name, a->host, "account %s (%s:%u): working again "
			 "after %u failed attempt%s", a->name, a->host, a->port, sl->fails,
			 sl->fails == 1 ? "" : "s");
	sl->fails = 0;
	sl->last_err[0] = '\0';
	s->fetched += r->stats.fetched;
	s->last_poll = time(NULL);
	log_acct(r->stats.fetched ? LOG_LVL_INFO : LOG_LVL_DEBUG, a->name, a->host,
		 "account %s: %u new message%s, %u left on the server", a->name,
		 r->stats.fetched, r->stats.fetched == 1 ? "" : "s",
		 r->stats.on_server - r->stats.deleted);
	sl->due_ms = now + (int64_t)a->interval_s * 1000;
}

static void
on_report(struct sched *s, struct slot *sl, const struct report *r)
{
	int64_t now = util_now_ms();

	sl->got_report = true;
	if (!sl->a || s->stopping)
		return;
	if (r->kind == REPORT_IDLE_NOTSUP) {
		log_acct(LOG_LVL_NOTICE, sl->a->name, sl->a->host, "account %s (%s): %s; polling "
			 "every %us instead of IDLE", sl->a->name, sl->a->host,
			 r->err.msg[0] ? r->err.msg : "the server does not support IDLE",
			 sl->a->interval_s);
		sl->no_idle = true;
		sl->due_ms = now + (int64_t)sl->a->interval_s * 1000;
	} else if (r->code == -EAGAIN && r->kind == REPORT_RUN) {
		/* Another run (cron, a terminal) has the account: not a failure. */
		log_acct(LOG_LVL_INFO, sl->a->name, sl->a->host, "account %s: %s; trying again "
			 "later", sl->a->name, r->err.msg);
		sl->due_ms = now + backoff_ms(sl->a, 1);
	} else if (r->code < 0) {
		on_failure(s, sl, r, now);
	} else {
		on_success(s, sl, r, now);
	}
	update_status(s);
}

/* Reads every complete report waiting; 1 at end of file, else 0. */
static int
drain(struct sched *s, struct slot *sl)
{
	struct report r;

	while (sl->fd >= 0) {
		ssize_t n = read(sl->fd, &r, sizeof(r));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return 0;
		if (n == 0)
			return 1;
		if ((size_t)n == sizeof(r))
			on_report(s, sl, &r);
	}
	return 1;
}

static struct slot *
slot_by_pid(struct sched *s, pid_t pid)
{
	for (size_t i = 0; i < s->nslots; i++)
		if (s->slots[i].pid == pid)
			return &s->slots[i];
	return NULL;
}

static void
slot_forget(struct sched *s, struct slot *sl)
{
	size_t i = (size_t)(sl - s->slots);

	free(sl->name);
	memmove(sl, sl + 1, (s->nslots - i - 1) * sizeof(*sl));
	s->nslots--;
}

/* A worker ended: settle what it did not report and decide when to run again. */
static void
on_exit_status(struct sched *s, struct slot *sl, int status)
{
	int64_t now = util_now_ms();

	drain(s, sl);
	if (sl->fd >= 0)
		close(sl->fd);
	sl->fd = -1;
	sl->pid = 0;
	if (!sl->a) {
		slot_forget(s, sl);
		return;
	}
	if (s->stopping)
		return;
	if (!sl->got_report) {
		/* Nothing says why: a temporary failure (err.retry is MP_RETRY_BACKOFF). */
		struct report r = { .kind = REPORT_RUN, .code = -EIO, .err.code = -EIO };

		if (WIFSIGNALED(status))
			snprintf(r.err.msg, sizeof(r.err.msg), "the worker was killed by signal %d",
				 WTERMSIG(status));
		else
			snprintf(r.err.msg, sizeof(r.err.msg), "the worker exited with status %d "
				 "before reporting", WEXITSTATUS(status));
		on_report(s, sl, &r);
	}
	/* A changed account runs again with its new settings, held or not. */
	if (sl->restart)
		sl->held = false;
	if (sl->restart || (sl->again && !sl->held))
		sl->due_ms = now;
	else if (sl->due_ms == INT64_MAX)
		sl->due_ms = now + (int64_t)sl->a->interval_s * 1000;
	/* An outbox that could not be watched (or went away) is tried again. */
	if (sl->wd[0] < 0 || sl->wd[1] < 0)
		watch_slot(s, sl);
}

static void
reap(struct sched *s)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct slot *sl = slot_by_pid(s, pid);

		if (sl)
			on_exit_status(s, sl, status);
	}
}

/* ---- scheduling --------------------------------------------------------- */

static unsigned
pool_busy(const struct sched *s)
{
	unsigned n = 0;

	for (size_t i = 0; i < s->nslots; i++)
		n += s->slots[i].pid && !s->slots[i].idle_worker;
	return n;
}

static bool
wants_idle(const struct slot *sl)
{
	return sl->a->idle && sl->a->protocol == MP_PROTO_IMAP && !sl->no_idle;
}

/*
 * Starts what is due, earliest first; idle workers do not take a place in
 * the pool. Returns the next time something becomes due (INT64_MAX: none).
 */
static int64_t
start_due(struct sched *s)
{
	int64_t now = util_now_ms(), next = INT64_MAX;
	unsigned busy = pool_busy(s);

	for (;;) {
		struct slot *best = NULL;

		for (size_t i = 0; i < s->nslots; i++) {
			struct slot *sl = &s->slots[i];

			if (!sl->a || sl->pid || sl->held || sl->due_ms > now)
				continue;
			if (!wants_idle(sl) && busy >= (*s->cfg)->parallel)
				continue;
			if (!best || sl->due_ms < best->due_ms)
				best = sl;
		}
		if (!best)
			break;
		int r = worker_start(s, best);

		if (r < 0) {
			log_acct(LOG_LVL_ERR, best->name, best->a->host, "account %s: cannot start "
				 "a worker: %s", best->name, strerror(-r));
			best->due_ms = now + 1000;
			continue;
		}
		busy += !best->idle_worker;
	}
	for (size_t i = 0; i < s->nslots; i++)
		if (s->slots[i].a && !s->slots[i].pid && s->slots[i].due_ms < next)
			next = s->slots[i].due_ms;
	return next;
}

static void
poll_now(struct sched *s)
{
	int64_t now = util_now_ms();

	log_info("polling every account now (SIGUSR1)");
	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];

		/* A held account waits for its fix; a poll would only be refused again. */
		if (!sl->a || sl->held)
			continue;
		slot_run_soon(sl, now);
	}
}

/* ---- reload ------------------------------------------------------------- */

static struct slot *
slot_by_name(struct slot *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].name, name) == 0)
			return &v[i];
	return NULL;
}

/*
 * New slots for cfg, carrying over the state of old ones by name. Workers
 * of changed accounts finish their run with the old settings; idle ones
 * are told to stop and start again with the new.
 */
static void
slots_free_new(struct slot *v, size_t n, const struct slot *old, size_t nold)
{
	for (size_t i = 0; i < n; i++)
		if (!slot_by_name((struct slot *)old, nold, v[i].name))
			free(v[i].name);
	free(v);
}

static void
carry_over(struct slot *sl, const struct slot *old, const struct mp_account *a, int64_t now)
{
	bool same = old->a && config_account_equal(old->a, a);

	*sl = *old;
	if (same)
		return;
	sl->held = false;
	sl->no_idle = false;
	sl->restart = sl->pid != 0;
	if (!sl->pid)
		sl->due_ms = now;
	if (sl->pid && sl->idle_worker)
		(void)kill(sl->pid, SIGTERM);
}

static int
rebuild_slots(struct sched *s, const struct mp_config *cfg)
{
	size_t n = cfg->naccounts + s->nslots, k = 0;
	struct slot *v = calloc(n ? n : 1, sizeof(*v));
	bool *taken = calloc(s->nslots + 1, sizeof(*taken));
	int64_t now = util_now_ms();

	if (!v || !taken) {
		free(v);
		free(taken);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->naccounts; i++) {
		struct slot *old = slot_by_name(s->slots, s->nslots, cfg->accounts[i].name);

		if (old)
			continue;
		v[k] = (struct slot){ .fd = -1, .due_ms = now, .a = &cfg->accounts[i],
				      .wd = { -1, -1 } };
		v[k].name = strdup(cfg->accounts[i].name);
		if (!v[k++].name) {
			slots_free_new(v, k - 1, s->slots, s->nslots);
			free(taken);
			return -ENOMEM;
		}
	}
	/* Nothing can fail from here on. */
	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct mp_account *a = &cfg->accounts[i];
		struct slot *old = slot_by_name(s->slots, s->nslots, a->name);

		if (!old)
			continue;
		taken[old - s->slots] = true;
		carry_over(&v[k], old, a, now);
		v[k++].a = a;
	}
	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *old = &s->slots[i];

		if (taken[i])
			continue;
		if (!old->pid) {
			free(old->name);
			continue;
		}
		/* removed while running: kept until its worker ends */
		if (old->idle_worker)
			(void)kill(old->pid, SIGTERM);
		v[k] = *old;
		v[k++].a = NULL;
	}
	free(taken);
	free(s->slots);
	s->slots = v;
	s->nslots = k;
	return 0;
}

/* Every held account runs again at once (a reload is the way to ask for that). */
static void
release_held(struct sched *s)
{
	int64_t now = util_now_ms();

	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];

		if (!sl->held)
			continue;
		sl->held = false;
		if (!sl->pid)
			sl->due_ms = now;
		if (sl->a)
			log_acct(LOG_LVL_INFO, sl->name, sl->a->host, "account %s: released; "
				 "running it again", sl->name);
	}
}

/*
 * Re-reads the configuration; why says what asked ("SIGHUP", or the file
 * changed). Whether or not the new file is valid, every held account is
 * released: it runs again with whatever configuration is now in force.
 */
static void
reload(struct sched *s, const char *why)
{
	struct mp_config *cfg = NULL;
	struct mp_err err = { 0 };
	const char *path = (*s->cfg)->path;
	int r;

	svc_reloading();
	log_info("reloading %s (%s)", path, why);
	/* Taken before reading, so an edit made while it reads is seen next time. */
	filesig_take(&s->cfg_sig, path);
	s->gen++;
	r = config_load(path, &cfg, &err);
	if (r == 0)
		r = rebuild_slots(s, cfg);
	if (r < 0) {
		if (err.msg[0])
			log_err("%s; keeping the previous configuration", err.msg);
		else
			log_err("reloading %s: %s; keeping the previous configuration", path,
				strerror(-r));
		config_free(cfg);
	} else {
		config_free(*s->cfg);
		*s->cfg = cfg;
		watch_all(s);
		log_notice("reloaded %s: %zu account%s", cfg->path, cfg->naccounts,
			   cfg->naccounts == 1 ? "" : "s");
	}
	release_held(s);
	update_status(s);
	svc_ready(NULL);
}

/*
 * At each interval tick of a held account, two stat(2) calls tell whether
 * its fix has come: a changed configuration file is reloaded as on SIGHUP
 * (which releases every held account), a changed password_file (read anew
 * by each run) releases the account alone. Anything else it depends on
 * (password_command, certificates) takes a SIGHUP.
 */
static void
check_held(struct sched *s)
{
	int64_t now = util_now_ms();
	struct filesig sig;

	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];

		if (!sl->held || !sl->a || sl->pid || sl->due_ms > now)
			continue;
		sl->due_ms = now + (int64_t)sl->a->interval_s * 1000;
		filesig_take(&sig, (*s->cfg)->path);
		if (!filesig_same(&sig, &s->cfg_sig)) {
			log_notice("account %s is held and %s changed; reloading it", sl->name,
				   (*s->cfg)->path);
			/* The slots are rebuilt: nothing of this loop is valid after. */
			reload(s, "changed on disk");
			return;
		}
		filesig_take(&sig, sl->a->password_file);
		if (!filesig_same(&sig, &sl->pw_sig)) {
			log_acct(LOG_LVL_NOTICE, sl->name, sl->a->host, "account %s: password_file "
				 "%s changed; running it again", sl->name, sl->a->password_file);
			sl->held = false;
			sl->due_ms = now;
			update_status(s);
		}
	}
}

/* ---- the loop ----------------------------------------------------------- */

/* 1 when asked to stop. */
static int
read_signals(struct sched *s)
{
	struct signalfd_siginfo si;
	int stop = 0;

	while (read(s->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGUSR1:
			poll_now(s);
			break;
		case SIGHUP:
			reload(s, "SIGHUP");
			break;
		case SIGTERM:
		case SIGINT:
			log_info("stopping (%s)", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
			stop = 1;
			break;
		case SIGCHLD:
			reap(s);
			break;
		}
	}
	return stop;
}

static void
watchdog(struct sched *s, int64_t now)
{
	if (s->wd_ms <= 0 || now < s->wd_next)
		return;
	svc_watchdog();
	s->wd_next = now + s->wd_ms / 2;
}

static int
loop_once(struct sched *s)
{
	struct pollfd *pfd = s->pfd;
	struct slot **who = s->who;
	int64_t next, now, wait, kick;
	nfds_t n = 2;
	int pr;

	check_held(s);
	kick = run_kicks(s);
	next = start_due(s);
	if (kick < next)
		next = kick;
	now = util_now_ms();
	if (s->wd_ms > 0 && s->wd_next < next)
		next = s->wd_next;
	wait = next == INT64_MAX ? -1 : next - now;
	if (wait < 0 && next != INT64_MAX)
		wait = 0;
	if (wait > 60000 || wait < 0)
		wait = 60000;
	pfd[0] = (struct pollfd){ .fd = s->sfd, .events = POLLIN };
	/* poll(2) passes over a negative fd. */
	pfd[1] = (struct pollfd){ .fd = s->ifd, .events = POLLIN };
	for (size_t i = 0; i < s->nslots; i++) {
		if (s->slots[i].fd < 0)
			continue;
		pfd[n] = (struct pollfd){ .fd = s->slots[i].fd, .events = POLLIN };
		who[n++] = &s->slots[i];
	}
	pr = poll(pfd, n, (int)wait);
	if (pr < 0 && errno != EINTR)
		return -errno;
	watchdog(s, util_now_ms());
	if (pr <= 0)
		return 0;
	/*
	 * Outbox events first: those a run caused itself are read while its
	 * worker still counts as running. Then reports: the slots may move
	 * when a signal reloads.
	 */
	if (pfd[1].revents & POLLIN)
		read_outbox_events(s);
	for (nfds_t i = 2; i < n; i++)
		if (pfd[i].revents & POLLIN)
			drain(s, who[i]);
	if (pfd[0].revents & POLLIN)
		return read_signals(s);
	return 0;
}

/* Safe: every durable step survives SIGKILL, and start-up recovery finishes it. */
static void
kill_workers(struct sched *s)
{
	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];

		if (!sl->pid)
			continue;
		log_warn("account %s: worker %ld did not stop in time; killing it", sl->name,
			 (long)sl->pid);
		(void)kill(sl->pid, SIGKILL);
		(void)waitpid(sl->pid, NULL, 0);
		sl->pid = 0;
		if (sl->fd >= 0)
			close(sl->fd);
		sl->fd = -1;
	}
}

/* SIGTERM to every worker; SIGKILL to those still running after the grace period. */
static void
stop_workers(struct sched *s)
{
	int64_t deadline = util_now_ms() + STOP_GRACE_MS;
	struct signalfd_siginfo si;
	bool any = false;

	s->stopping = true;
	for (size_t i = 0; i < s->nslots; i++)
		if (s->slots[i].pid)
			any = kill(s->slots[i].pid, SIGTERM) == 0 || any;
	while (any) {
		struct pollfd p = { .fd = s->sfd, .events = POLLIN };
		int64_t left = deadline - util_now_ms();

		reap(s);
		any = false;
		for (size_t i = 0; i < s->nslots; i++)
			any |= s->slots[i].pid != 0;
		if (!any)
			break;
		if (left <= 0) {
			kill_workers(s);
			break;
		}
		(void)poll(&p, 1, (int)(left < 100 ? left : 100));
		while (read(s->sfd, &si, sizeof(si)) > 0)
			;
	}
}

static int
sched_init(struct sched *s, sigset_t *old)
{
	sigset_t set;
	int r;

	sigset_daemon(&set);
	if (sigprocmask(SIG_BLOCK, &set, old) < 0)
		return -errno;
	s->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s->sfd < 0) {
		r = -errno;
		sigprocmask(SIG_SETMASK, old, NULL);
		return r;
	}
	s->wd_ms = svc_watchdog_ms();
	s->wd_next = util_now_ms();
	filesig_take(&s->cfg_sig, (*s->cfg)->path);
	r = rebuild_slots(s, *s->cfg);
	if (r < 0)
		return r;
	s->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (s->ifd < 0)
		log_warn("cannot watch the outboxes (inotify: %s); they are sent at each "
			 "account's interval", strerror(errno));
	watch_all(s);
	return 0;
}

int
scheduler_run(struct mp_config **cfg, int keep_fd)
{
	struct sched s = { .cfg = cfg, .keep_fd = keep_fd, .sfd = -1, .ifd = -1 };
	sigset_t old;
	int r;

	r = sched_init(&s, &old);
	if (r < 0) {
		if (s.sfd >= 0)
			close(s.sfd);
		return r;
	}
	log_notice("daemon started: %zu account%s from %s", (*cfg)->naccounts,
		   (*cfg)->naccounts == 1 ? "" : "s", (*cfg)->path);
	svc_ready("starting the first polls");
	while (r == 0) {
		if (s.nslots + 2 > s.pcap) {
			s.pcap = s.nslots + 2;
			free(s.pfd);
			free(s.who);
			s.pfd = calloc(s.pcap, sizeof(*s.pfd));
			s.who = calloc(s.pcap, sizeof(*s.who));
			if (!s.pfd || !s.who) {
				r = -ENOMEM;
				break;
			}
		}
		r = loop_once(&s);
	}
	if (r < 0)
		log_err("the scheduler failed: %s; stopping", strerror(-r));
	svc_stopping();
	stop_workers(&s);
	for (size_t i = 0; i < s.nslots; i++) {
		if (s.slots[i].fd >= 0)
			close(s.slots[i].fd);
		free(s.slots[i].name);
	}
	free(s.slots);
	free(s.pfd);
	free(s.who);
	free(s.wds);
	if (s.ifd >= 0)
		close(s.ifd);
	close(s.sfd);
	/*
	 * The signals stay blocked: a second SIGTERM must not cut short the
	 * caller's clean-up (the pid file); the process exits next anyway.
	 */
	return r < 0 ? r : 0;
}
