/*
 * The protocol runs behind account.h: account.c dispatches to them, and
 * preview.c asks them what is waiting. They use deliver.h and session.h
 * and never call back into account.c or preview.c. Not for other modules.
 */
#ifndef MAILPULL_ACCOUNT_INT_H
#define MAILPULL_ACCOUNT_INT_H

#include "mailpull/account.h"
#include "mailpull/state.h"

/*
 * The POP3 run of a, its state st already locked by account_run(). Fills
 * *stats as it goes. Errors as account_run(): those of the connection and
 * login (-ETIMEDOUT, -ECONNREFUSED... MP_EX_TEMPFAIL; -EACCES MP_EX_NOPERM;
 * -EPROTO MP_EX_PROTOCOL), of the Maildir and state (-EIO, -ENOSPC...
 * MP_EX_IOERR), -EFBIG (MP_EX_PROTOCOL: a message longer than its cap),
 * -ENOMEM and -ECANCELED (MP_EX_TEMPFAIL); err is set.
 */
int account_pop3_run(const struct mp_account *a, const struct account_opts *o, struct state *st,
		     struct account_stats *stats, struct mp_err *err) MP_WUR;

/*
 * The IMAP run; as account_pop3_run(). Besides, once every other folder
 * was worked on, the first problem that left the run partial, with
 * err->retry MP_RETRY_INTERVAL: -ENOENT (MP_EX_CONFIG: a configured folder
 * the server lacks), -EPROTO, -EBADMSG, -EREMOTE (MP_EX_PROTOCOL: invalid
 * UIDs or folder names, a referral), -EAGAIN (MP_EX_TEMPFAIL: messages the
 * server left out), -ENAMETOOLONG (MP_EX_IOERR).
 */
int account_imap_run(const struct mp_account *a, const struct account_opts *o, struct state *st,
		     struct account_stats *stats, struct mp_err *err) MP_WUR;

/*
 * account_idle_wait() for an IMAP account: 1 new mail, 0 max_s passed or
 * *stop set. Errors: -ENOTSUP (MP_EX_PROTOCOL: no IDLE), -ENOENT
 * (MP_EX_CONFIG: none of the folders exists), the connection's and login's
 * as account_pop3_run().
 */
int account_imap_idle(const char *state_dir, const struct mp_account *a, unsigned max_s,
		      volatile sig_atomic_t *stop, struct mp_err *err) MP_WUR;

/* One message waiting on the server, raw header values (may be NULL). */
struct preview_item {
	const char *folder;        /* NULL for POP3 */
	const char *date, *from, *subject;
	uint64_t size;
};

/* Called per waiting message; a negative errno (-ENOMEM) stops the listing and is returned. */
typedef int (*preview_cb)(void *ud, const struct preview_item *it);

/*
 * What is waiting and not yet fetched, without downloading any body (POP3:
 * TOP n 0; IMAP: ENVELOPE), the state only read. Errors: cb's, the
 * connection's and login's as account_pop3_run(), -ENOMEM; IMAP also
 * -ENOENT (MP_EX_USAGE) when folder names none of the account's folders.
 */
int account_pop3_preview(const struct mp_account *a, struct state *st, preview_cb cb, void *ud,
			 struct mp_err *err) MP_WUR;
int account_imap_preview(const struct mp_account *a, struct state *st, const char *folder,
			 preview_cb cb, void *ud, struct mp_err *err) MP_WUR;

#endif
