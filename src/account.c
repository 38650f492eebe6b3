/*
 * One run of one account: sends what waits in the outbox (account_send.c),
 * then takes the account's state lock and hands the fetch to its protocol
 * (account_pop3.c, account_imap.c), which share the delivery sequence
 * (deliver.c) and the session helpers (session.c).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mailpull/account.h"
#include "mailpull/log.h"
#include "mailpull/state.h"
#include "mailpull/util.h"
#include "account_int.h"

static int
fetch(const struct mp_config *cfg, const struct mp_account *a, const struct account_opts *o,
      struct account_stats *ret_stats, struct mp_err *err)
{
	struct state *st = NULL;
	int ret = state_open(cfg->state_dir, a->name, o->wait, &st, err);

	if (ret == 0)
		ret = a->protocol == MP_PROTO_IMAP ?
			account_imap_run(a, o, st, ret_stats, err) :
			account_pop3_run(a, o, st, ret_stats, err);
	state_close(st);
	return ret;
}

/*
 * Sending and fetching both failed: the more severe error is returned (the
 * caller reports it), the other is reported here, so the user sees both.
 */
static int
both_failed(const struct mp_account *a, int sret, struct mp_err *serr, int fret,
	    struct mp_err *err)
{
	bool send_worse = mp_exit_worse(err->ex, serr->ex) != err->ex;
	const struct mp_err *other = send_worse ? err : serr;
	char line[1536];

	/* The same failure twice (the state locked by another run) is said once. */
	if (serr->code == err->code && strcmp(serr->msg, err->msg) == 0)
		return fret;

	if (send_worse)
		mp_err_line(line, sizeof(line), a->name, a->host, a->port, other);
	else
		mp_err_line(line, sizeof(line), a->name, a->smtp_host, a->smtp_port, other);
	log_acct(LOG_LVL_ERR, a->name, send_worse ? a->host : a->smtp_host, "%s", line);
	if (!send_worse)
		return fret;
	mp_err_prefix(serr, "sending through %s:%u", a->smtp_host, a->smtp_port);
	*err = *serr;
	return sret;
}

int
account_run(const struct mp_config *cfg, const struct mp_account *a,
	    const struct account_opts *o, struct account_stats *ret_stats, struct mp_err *err)
{
	int64_t start = util_now_ms();
	struct mp_err serr = { 0 };
	int sret = 0, ret;

	memset(ret_stats, 0, sizeof(*ret_stats));
	/* Send first ("Send and Receive"), then fetch whatever sending did. */
	if (!o->no_send && a->smtp_host) {
		sret = account_send(cfg, a, o, ret_stats, &serr);
	}
	ret = fetch(cfg, a, o, ret_stats, err);
	ret_stats->elapsed_ms = util_now_ms() - start;
	if (ret < 0 && err->code == 0)
		mp_err_set(err, ret, mp_exit_from_errno(ret), "%s", strerror(-ret));
	if (sret < 0 && ret < 0)
		return both_failed(a, sret, &serr, ret, err);
	if (sret < 0) {
		mp_err_prefix(&serr, "sending through %s:%u", a->smtp_host, a->smtp_port);
		*err = serr;
		return sret;
	}
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
