/*
 * Shared by the per-protocol account runs (account.c for POP3,
 * account_imap.c for IMAP) and preview. Not for other modules.
 */
#ifndef MAILPULL_ACCOUNT_INT_H
#define MAILPULL_ACCOUNT_INT_H

#include "mailpull/account.h"
#include "mailpull/conn.h"
#include "mailpull/sasl.h"
#include "mailpull/maildir.h"
#include "mailpull/state.h"

/*
 * Fault injection for the crash tests: MAILPULL_CRASH_AT=N ends the process
 * at the Nth durable step, as a SIGKILL would.
 */
void account_crash_point(void);

/*
 * -ECANCELED (with err set) when o->stop asks the run to end, else 0.
 * Called where a message begins and as its bytes arrive: stopping there
 * costs only the message in flight, which is fetched again next time.
 */
int account_check_stop(const struct account_opts *o, struct mp_err *err) MP_WUR;

/*
 * A stop signal (-ECANCELED from a sink's begin) arrived after ndone
 * messages of a batch were complete: commits them (so the message being
 * written when the signal came is kept), then returns -ECANCELED with the
 * stop reason in err, or the commit's error. Nothing is deleted after it.
 */
int account_commit_stopped(struct mp_err *err, int (*commit)(void *ud), void *ud, size_t ndone);

/*
 * Chooses the mechanism among what the server offers (sasl, and the plain
 * login when user_ok; plain names it in the error), then, only now that TLS
 * is verified, fetches the secret, hands it to auth and wipes it. Errors as
 * sasl_choose() (-EINVAL: config, -ENOENT: nothing fits), secret_get(), auth.
 */
typedef int (*account_auth_fn)(void *engine, enum sasl_mech mech, const char *user,
			       const char *secret, struct mp_err *err);
int account_login(const struct mp_account *a, const char *sasl, bool user_ok, const char *plain,
		  account_auth_fn auth, void *engine, struct mp_err *err) MP_WUR;

/*
 * The hard cap on one message, whatever max_size says: no server can make
 * a run store more than this for a message (documented in mailpull.conf(5)).
 */
#define ACCOUNT_MSG_MAX ((uint64_t)1 << 30)

/* The cap for one message of a: max_size when set and lower, else ACCOUNT_MSG_MAX. */
uint64_t account_msg_cap(const struct mp_account *a);

/* What account_msg_cap() is, for messages: "max_size" or the hard limit. */
const char *account_cap_name(const struct mp_account *a);

/*
 * Checks got, the bytes of one message received so far, against the cap:
 * a server can declare a small size (LIST, RFC822.SIZE) and then send
 * without end. Over the cap: -EFBIG (MP_EX_PROTOCOL) with err naming what
 * and num (e.g. "message", 3), the cap and the declared size; else 0.
 */
int account_check_received(const struct mp_account *a, const char *what, uint32_t num,
			   uint64_t declared, uint64_t got, struct mp_err *err) MP_WUR;

/* The tag naming this account's files in tmp/ (8 hex digits). */
void account_tag(const char *name, char tag[16]);

/* conn_opts for the account's server. */
void account_conn_opts(const struct mp_account *a, struct conn_opts *ret);

/*
 * Finishes or discards what an interrupted run left in md's tmp/ (its own
 * files only), logging what it did.
 */
int account_recover(const struct mp_account *a, struct state *st, struct maildir *md,
		    struct mp_err *err) MP_WUR;

/*
 * After an interrupted run (state_interrupted()), forgets every record
 * whose Maildir name matches no file in tmp/, new/ or cur/ of any folder
 * of the account's Maildir: another program removed it from tmp/ before
 * it was delivered, so it must be fetched again, never deleted on the
 * server. A message a reader moved to another folder keeps its base name
 * and still counts. Syncs the state when it forgot anything.
 */
int account_forget_lost(const struct mp_account *a, struct state *st, struct mp_err *err) MP_WUR;

/* Progress line on a terminal (rate-limited unless final). */
struct account_progress {
	const char *name;
	unsigned done, total;
	int64_t start_ms, last_ms;
	bool on;
};
void account_progress(struct account_progress *p, const struct account_stats *s, bool final);

/* The IMAP run; state already locked by account_run(). */
int account_imap_run(const struct mp_config *cfg, const struct mp_account *a,
		     const struct account_opts *o, struct state *st,
		     struct account_stats *stats, struct mp_err *err) MP_WUR;

/* account_idle_wait() for an IMAP account. */
int account_imap_idle(const char *state_dir, const struct mp_account *a, unsigned max_s,
		      volatile sig_atomic_t *stop, struct mp_err *err) MP_WUR;

/* One message waiting on the server, raw header values (may be NULL). */
struct preview_item {
	const char *folder;        /* NULL for POP3 */
	const char *date, *from, *subject;
	uint64_t size;
};
typedef int (*preview_cb)(void *ud, const struct preview_item *it);

/* What is waiting and not yet fetched, without downloading any body. */
int account_pop3_preview(const struct mp_account *a, struct state *st, preview_cb cb, void *ud,
			 struct mp_err *err) MP_WUR;
int account_imap_preview(const struct mp_account *a, struct state *st, const char *folder,
			 preview_cb cb, void *ud, struct mp_err *err) MP_WUR;

#endif
