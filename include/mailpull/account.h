/*
 * One run of one account: lock its state, recover what a crash left,
 * connect, authenticate, list, fetch what is new into the Maildir with
 * group commit, record it, then delete on the server what the account's
 * policy (keep, keep_days) allows. All policy lives behind this header
 * (the protocol runs and the delivery sequence in src/).
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
	bool no_send;     /* account_run(): fetch only, leave the outbox alone */
	bool retry_held;  /* account_send(): release held messages first (send --retry-held) */
};

struct account_stats {
	unsigned on_server;    /* messages listed */
	unsigned fetched;
	unsigned deleted;
	unsigned too_large;    /* left on the server because of max_size */
	uint64_t bytes;        /* stored bytes fetched */
	int64_t elapsed_ms;
	/* sending */
	unsigned sent;         /* accepted by the submission server in this run */
	unsigned send_failed;  /* refused for good in this run (5xx) */
	unsigned held;         /* in the outbox, held: may have been sent (send --retry-held) */
	unsigned queued;       /* still in the outbox, to be sent later (4xx, network) */
	unsigned failed_kept;  /* in the outbox, refused for good in an earlier run */
};

/*
 * Runs account a of cfg once. Fills *ret_stats (also on error, with what
 * was done). Errors carry the exit class in err->ex and a message that
 * names what failed; the caller prefixes the account and host:
 *   -EAGAIN       the state is locked by another run (MP_EX_TEMPFAIL)
 *   -ETIMEDOUT, -ECONNREFUSED, -ECONNRESET, -ENOENT (host), -ENETUNREACH
 *                 the network (MP_EX_TEMPFAIL)
 *   -EACCES       login refused (MP_EX_NOPERM), or a password_file others
 *                 can read (MP_EX_CONFIG)
 *   -EPROTO, -EBADMSG, -E2BIG, -EFBIG
 *                 the server broke the protocol, TLS failed or a message
 *                 outgrew its cap (MP_EX_PROTOCOL)
 *   -EINVAL, -ENOENT, -ECHILD, -ENODATA
 *                 configuration: an unknown auth mechanism, no secret, a
 *                 failing password_command (MP_EX_CONFIG)
 *   -EIO, -ENOSPC, -EDQUOT, -EROFS, -EACCES, -ENAMETOOLONG, -EBADMSG
 *                 the Maildir or state file, a malformed state record
 *                 (MP_EX_IOERR)
 *   -ENOMEM       (MP_EX_TEMPFAIL)
 *   -ECANCELED    o->stop was set (MP_EX_TEMPFAIL)
 *   IMAP, a partial run (the other folders done): the first folder's
 *                 problem, with err->retry MP_RETRY_INTERVAL: -EAGAIN
 *                 (MP_EX_TEMPFAIL: messages the server left out), -EPROTO,
 *                 -EBADMSG (MP_EX_PROTOCOL: invalid UIDs or folder names),
 *                 -ENAMETOOLONG (MP_EX_IOERR), -EREMOTE (MP_EX_PROTOCOL: a
 *                 referral), -ENOENT (MP_EX_CONFIG: a configured folder
 *                 is missing)
 */
int account_run(const struct mp_config *cfg, const struct mp_account *a,
		const struct account_opts *o, struct account_stats *ret_stats,
		struct mp_err *err) MP_WUR;

/*
 * Sends what waits in the account's outbox (nothing when smtp_host is
 * unset), the way DESIGN invariant 7 says: under the account's lock, each
 * message recorded submitting before MAIL FROM, accepted after the 250 to
 * the final dot, then the server Sent copy (IMAP, save_sent), the local
 * copy in maildir/.Sent, removal from the outbox. A message found
 * submitting (a crash) is held and reported "may have been sent", never
 * resent unless o->retry_held. Fills the send counters of *ret_stats.
 * account_run() calls it first unless o->no_send. Errors: as
 * account_run(), naming the submission server; -EPERM (MP_EX_DATAERR: a
 * message refused for good in this run, the others sent); -EALREADY
 * (MP_EX_DATAERR: a message became held in this run).
 */
int account_send(const struct mp_config *cfg, const struct mp_account *a,
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
 * it returns 1 at once instead of idling). Errors: -ENOTSUP
 * (MP_EX_CONFIG for POP3, MP_EX_PROTOCOL for a server without IDLE),
 * -ENOENT (MP_EX_CONFIG: none of the account's folders exists), and the
 * network, login and protocol errors of account_run().
 */
int account_idle_wait(const struct mp_config *cfg, const struct mp_account *a, unsigned max_s,
		      volatile sig_atomic_t *stop, struct mp_err *err) MP_WUR;

/*
 * Lists what is waiting on the server and not fetched yet (date, sender,
 * subject, size; encoded words decoded), one line per message aligned in
 * columns, or one JSON object per line. folder (IMAP only) limits it to one
 * folder. Nothing on the server changes. Errors: -EINVAL (MP_EX_USAGE:
 * a folder named for a POP3 account), -ENOENT (MP_EX_USAGE: folder is none
 * of the account's folders), -EAGAIN (MP_EX_TEMPFAIL: the state is
 * locked and wait is false), -ENOMEM, and the network, login and protocol
 * errors of account_run(); errors writing to out are not reported.
 */
int account_preview(const struct mp_config *cfg, const struct mp_account *a, const char *folder,
		    bool json, bool wait, FILE *out, struct mp_err *err) MP_WUR;

#endif
