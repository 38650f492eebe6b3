/* Entry point: options, configuration, then one pass, send, preview or the daemon. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailpull/account.h"
#include "mailpull/cli.h"
#include "mailpull/config.h"
#include "mailpull/daemon.h"
#include "mailpull/log.h"
#include "mailpull/oauth2.h"
#include "mailpull/sendmail.h"
#include "mailpull/state.h"

/*
 * One malloc arena: a run's threads (the storage thread beside the wire)
 * allocate little, and a second arena would reserve its own 64 MiB heap
 * and keep its own free memory. A fixed mmap threshold keeps glibc from
 * raising it after the first large buffer is freed, so the large buffers
 * (connection input, snapshot writer, listings) stay mmapped and go back
 * to the system whole when freed, instead of fragmenting the heap; the
 * fixed trim threshold gives freed heap tops back early.
 */
static void
malloc_tune(void)
{
	(void)mallopt(M_ARENA_MAX, 1);
	(void)mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	(void)mallopt(M_TRIM_THRESHOLD, 256 * 1024);
}

static void
print_summary(const struct mp_account *a, const struct account_stats *s)
{
	printf("%s: %u new message%s (%.1f KiB)", a->name, s->fetched, s->fetched == 1 ? "" : "s",
	       (double)s->bytes / 1024.0);
	if (s->deleted)
		printf(", %u deleted on the server", s->deleted);
	printf(", %u left on the server", s->on_server - s->deleted);
	if (s->too_large)
		printf(", %u over max_size left there", s->too_large);
	printf(", %.1f s\n", (double)s->elapsed_ms / 1000.0);
	fflush(stdout);
}

/* "work: 3 sent, 1 held (...), 0 failed": what sending did and what it left. */
static void
print_send_summary(const struct mp_account *a, const struct account_stats *s)
{
	unsigned failed = s->send_failed + s->failed_kept;

	printf("%s: %u sent", a->name, s->sent);
	if (s->held)
		printf(", %u held (may have been sent; mailpull send --retry-held %s)", s->held,
		       a->name);
	printf(", %u failed%s", failed, failed ? " (kept in the outbox)" : "");
	if (s->queued)
		printf(", %u still queued", s->queued);
	putchar('\n');
	fflush(stdout);
}

static bool
send_happened(const struct mp_account *a, const struct account_stats *s)
{
	return a->smtp_host && s->sent + s->send_failed + s->failed_kept + s->held + s->queued > 0;
}

static void
print_error(const struct mp_account *a, bool send, const struct mp_err *err)
{
	char line[1536];

	if (send)
		mp_err_line(line, sizeof(line), a->name, a->smtp_host, a->smtp_port, err);
	else
		mp_err_line(line, sizeof(line), a->name, a->host, a->port, err);
	log_err("%s", line);
}

static enum mp_exit
run_one(const struct mp_config *cfg, const struct mp_account *a, const struct cli_opts *o)
{
	struct account_opts ao = { .wait = o->wait, .progress = !o->quiet && isatty(STDERR_FILENO) };
	struct account_stats stats = { 0 };
	struct mp_err err = { 0 };
	int ret;

	if (a->tls == MP_TLS_NONE)
		log_warn("account %s: tls = none: the password and all mail cross the network "
			 "in clear", a->name);
	ret = account_run(cfg, a, &ao, &stats, &err);
	if (!o->quiet && send_happened(a, &stats))
		print_send_summary(a, &stats);
	if (ret < 0) {
		print_error(a, false, &err);
		return err.ex ? err.ex : MP_EX_TEMPFAIL;
	}
	if (!o->quiet)
		print_summary(a, &stats);
	return MP_EX_OK;
}

/* `mailpull send`: the outbox only. */
static enum mp_exit
send_one(const struct mp_config *cfg, const struct mp_account *a, const struct cli_opts *o)
{
	struct account_opts ao = { .wait = o->wait, .no_send = false, .retry_held = o->retry_held,
				   .progress = !o->quiet && isatty(STDERR_FILENO) };
	struct account_stats stats = { 0 };
	struct mp_err err = { 0 };
	int ret = account_send(cfg, a, &ao, &stats, &err);

	if (!o->quiet)
		print_send_summary(a, &stats);
	if (ret < 0) {
		print_error(a, true, &err);
		return err.ex ? err.ex : MP_EX_TEMPFAIL;
	}
	return MP_EX_OK;
}

/* One pass (or, for send, the outbox only) over the accounts named, else all. */
static enum mp_exit
fetch(const struct mp_config *cfg, const struct cli_opts *o)
{
	bool send = o->mode == CLI_SEND, any = false;
	enum mp_exit worst = MP_EX_OK;

	for (int i = 0; i < o->naccounts; i++) {
		const struct mp_account *a = config_find(cfg, o->accounts[i]);

		if (!a) {
			log_err("no account named \"%s\" in %s", o->accounts[i], cfg->path);
			return MP_EX_USAGE;
		}
		if (send && !a->smtp_host) {
			log_err("account %s does not send: it has no smtp_host in %s", a->name,
				cfg->path);
			return MP_EX_USAGE;
		}
	}
	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct mp_account *a = &cfg->accounts[i];
		bool selected = o->naccounts == 0 && (!send || a->smtp_host);

		for (int j = 0; j < o->naccounts && !selected; j++)
			selected = strcmp(o->accounts[j], a->name) == 0;
		if (selected)
			worst = mp_exit_worse(worst, send ? send_one(cfg, a, o) : run_one(cfg, a, o));
		any = any || selected;
	}
	if (send && !any) {
		log_err("no account in %s sends: none has smtp_host", cfg->path);
		return MP_EX_USAGE;
	}
	return worst;
}

static enum mp_exit
preview(const struct mp_config *cfg, const struct cli_opts *o)
{
	const struct mp_account *a = config_find(cfg, o->accounts[0]);
	struct mp_err err = { 0 };

	if (!a) {
		log_err("no account named \"%s\" in %s", o->accounts[0], cfg->path);
		return MP_EX_USAGE;
	}
	if (account_preview(cfg, a, o->folder, o->json, o->wait, stdout, &err) < 0) {
		print_error(a, false, &err);
		return err.ex ? err.ex : MP_EX_TEMPFAIL;
	}
	return MP_EX_OK;
}

/*
 * `mailpull authorize ACCOUNT`: the first OAuth2 grant, on the terminal,
 * under the account's lock so no run refreshes the tokens meanwhile.
 */
static enum mp_exit
authorize(const struct mp_config *cfg, const struct cli_opts *o)
{
	const struct mp_account *a = config_find(cfg, o->accounts[0]);
	struct mp_err err = { 0 };
	struct state *st = NULL;

	if (!a) {
		log_err("no account named \"%s\" in %s", o->accounts[0], cfg->path);
		return MP_EX_USAGE;
	}
	if (a->oauth2 == MP_OAUTH2_NONE) {
		log_err("account %s does not use OAuth2: set oauth2 = google, microsoft or custom "
			"for it in %s (see mailpull.conf(5), OAUTH2)", a->name, cfg->path);
		return MP_EX_USAGE;
	}
	if (state_open(cfg->state_dir, a->name, false, &st, &err) < 0) {
		if (err.code == -EAGAIN)
			log_err("account %s: another run is using %s; try again when it is done",
				a->name, a->name);
		else
			log_err("account %s: %s", a->name, err.msg);
		return err.ex ? err.ex : MP_EX_TEMPFAIL;
	}
	if (oauth2_authorize(a, stdin, stdout, &err) < 0) {
		state_close(st);
		log_err("account %s: %s%s%s", a->name, err.msg[0] ? err.msg : strerror(-err.code),
			err.srv[0] ? "; the provider said: " : "", err.srv);
		return err.ex ? err.ex : MP_EX_TEMPFAIL;
	}
	state_close(st);
	printf("Authorized: the tokens of account %s are saved in %s\n", a->name,
	       a->oauth2_token_file);
	return MP_EX_OK;
}

int
main(int argc, char **argv)
{
	struct cli_opts o;
	struct mp_config *cfg = NULL;
	struct mp_err err = { 0 };
	char *path = NULL;
	enum mp_exit ex;

	malloc_tune();
	/* A closed connection must be an error return, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	if (sendmail_invoked(argc, argv))
		return sendmail_main(argc, argv);
	if (cli_parse(argc, argv, &o) < 0)
		return MP_EX_USAGE;
	if (o.mode == CLI_HELP) {
		cli_usage();
		return 0;
	}
	if (o.mode == CLI_VERSION) {
		puts("mailpull " MAILPULL_VERSION);
		return 0;
	}
	log_set_level(o.quiet ? LOG_LVL_WARN : o.verbose ? LOG_LVL_TRACE : LOG_LVL_INFO);
	path = o.config ? strdup(o.config) : config_default_path();
	if (!path && (o.config || errno == ENOMEM)) {
		log_err("out of memory");
		return MP_EX_TEMPFAIL;
	}
	if (!path) {
		log_err("cannot find the configuration: set HOME or use -c FILE");
		return MP_EX_CONFIG;
	}
	if (o.mode == CLI_POLL_NOW) {
		ex = daemon_poll_now(path, o.quiet);
		free(path);
		return ex;
	}
	if (config_load(path, &cfg, &err) < 0) {
		log_err("%s", err.msg);
		free(path);
		return err.ex ? err.ex : MP_EX_CONFIG;
	}
	if (o.mode == CLI_DAEMON) {
		ex = daemon_run(&cfg);
	} else if (o.mode == CLI_PREVIEW) {
		ex = preview(cfg, &o);
	} else if (o.mode == CLI_AUTHORIZE) {
		ex = authorize(cfg, &o);
	} else if (o.mode == CLI_CHECK_CONFIG) {
		if (!o.quiet)
			printf("%s: OK, %zu account%s\n", path, cfg->naccounts,
			       cfg->naccounts == 1 ? "" : "s");
		ex = MP_EX_OK;
	} else {
		ex = fetch(cfg, &o);
	}
	config_free(cfg);
	free(path);
	return ex;
}
