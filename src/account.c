/*
 * One run of one account: takes the account's state lock and hands the run
 * to its protocol (account_pop3.c, account_imap.c), which share the
 * delivery sequence (deliver.c) and the session helpers (session.c).
 */
#include <errno.h>
#include <string.h>

#include "mailpull/account.h"
#include "mailpull/state.h"
#include "mailpull/util.h"
#include "account_int.h"

int
account_run(const struct mp_config *cfg, const struct mp_account *a,
	    const struct account_opts *o, struct account_stats *ret_stats, struct mp_err *err)
{
	int64_t start = util_now_ms();
	struct state *st = NULL;
	int ret;

	memset(ret_stats, 0, sizeof(*ret_stats));
	ret = state_open(cfg->state_dir, a->name, o->wait, &st, err);
	if (ret == 0)
		ret = a->protocol == MP_PROTO_IMAP ?
			account_imap_run(a, o, st, ret_stats, err) :
			account_pop3_run(a, o, st, ret_stats, err);
	state_close(st);
	ret_stats->elapsed_ms = util_now_ms() - start;
	if (ret < 0 && err->code == 0)
		mp_err_set(err, ret, mp_exit_from_errno(ret), "%s", strerror(-ret));
	return ret;
}

int
account_idle_wait(const struct mp_config *cfg, const struct mp_account *a, unsigned max_s,
		  volatile sig_atomic_t *stop, struct mp_err *err)
{
	int ret;

	/* POP3 has no push (RFC 1939): the caller polls. */
	if (a->protocol != MP_PROTO_IMAP)
		return mp_err_set(err, -ENOTSUP, MP_EX_CONFIG, "POP3 has no way to wait for "
				  "new mail (no IDLE)");
	ret = account_imap_idle(cfg->state_dir, a, max_s, stop, err);
	if (ret < 0 && err->code == 0)
		mp_err_set(err, ret, mp_exit_from_errno(ret), "%s", strerror(-ret));
	return ret;
}
