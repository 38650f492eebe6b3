/*
 * One run of one account: lock its state, recover what a crash left,
 * connect, authenticate, list, fetch what is new into the Maildir with
 * group commit, record it, then delete on the server what the account's
 * policy (keep, keep_days) allows. All policy lives here.
 */
#ifndef MAILPULL_ACCOUNT_H
#define MAILPULL_ACCOUNT_H

#include "mailpull/common.h"
#include "mailpull/err.h"
#include "mailpull/config.h"

#include <signal.h>
#include <stdio.h>

struct account_opts {
	bool wait;        /* wait for the account's lock instead of failing */
	bool progress;    /* show a progress line (terminal) */
	/*
	 * Set by a signal handler to stop at the next message boundary (NULL:
	 * never): the message being received is discarded, nothing more is
	 * deleted on the server, and the run fails with -ECANCELED. What was
	 * made durable before stays recorded.
	 */
	volatile sig_atomic_t *stop;
};

struct account_stats {
	unsigned on_server;    /* messages listed */
	unsigned fetched;
	unsigned deleted;
	unsigned too_large;    /* left on the server because of max_size */
	uint64_t bytes;        /* stored bytes fetched */
	int64_t elapsed_ms;
};

/*
 * Runs account a of cfg once. Fills *ret_stats (also on error, with what
 * was done). Errors carry the exit class in err->ex and a message that
 * names what failed; the caller prefixes the account and host.
 * -ECANCELED (class MP_EX_TEMPFAIL) when o->stop was set.
 */
int account_run(const struct mp_config *cfg, const struct mp_account *a,
		const struct account_opts *o, struct account_stats *ret_stats,
		struct mp_err *err) MP_WUR;

/*
 * For the daemon's idle = yes accounts: connects, authenticates, selects
 * the account's first folder and waits in IDLE until new mail arrives (1),
 * max_s seconds pass or *stop is set by a signal handler (0). -ENOTSUP
 * when the server lacks IDLE (the caller falls back to polling) or the
 * account is POP3. Takes no lock: it only reads (the state's lock is
 * tried for a moment, never waited for: when the folder's UIDNEXT differs
 * from the one the last complete run recorded, mail came in between and
 * it returns 1 at once instead of idling). Errors as account_run().
 */
int account_idle_wait(const struct mp_config *cfg, const struct mp_account *a, unsigned max_s,
		      volatile sig_atomic_t *stop, struct mp_err *err) MP_WUR;

/*
 * Lists what is waiting on the server and not fetched yet (date, sender,
 * subject, size; encoded words decoded), one line per message aligned in
 * columns, or one JSON object per line. folder (IMAP only) limits it to one
 * folder. Nothing on the server changes. Errors as account_run().
 */
int account_preview(const struct mp_config *cfg, const struct mp_account *a, const char *folder,
		    bool json, bool wait, FILE *out, struct mp_err *err) MP_WUR;

#endif
