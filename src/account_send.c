/*
 * The send run (DESIGN invariant 7): drains an account's outbox through
 * its submission server, recording each message's steps in the account's
 * state, under the lock that also serialises fetch runs:
 *
 *   queued      no record: the message is to be sent
 *   submitting  recorded and synced before MAIL FROM: found after a
 *               crash, the message may or may not have been accepted
 *   held        what a crash left submitting, or a connection lost
 *               after the final dot: sent again only after
 *               `mailpull send --retry-held` (retry)
 *   accepted    250 to the final dot: never given to SMTP again; the
 *               server's Sent copy is next (IMAP, save_sent)
 *   copied      the Sent copy is there (or not wanted): the local copy
 *               in maildir/.Sent, then removal from the outbox, then the
 *               record goes
 *   failed      refused for good (5xx, too large, no sender, a message
 *               that cannot be sent as it is): reported once, kept in
 *               the outbox, skipped by later runs
 *
 * Each step is made durable before the next acts, so a crash anywhere
 * resumes from the last recorded step: the Sent copy is looked up by
 * Message-ID before it is appended, and the local copy keeps the outbox
 * message's name, so neither is ever made twice; only a crash between
 * "submitting" and "accepted" leaves a doubt, and that is held and said.
 *
 * The crash tests stop the process at each durable step through
 * deliver_crash_point() (MAILPULL_CRASH_AT): after submitting is synced,
 * after accepted is synced, after the Sent copy is appended (before
 * copied is recorded), after the local copy, after the outbox removal.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailpull/account.h"
#include "mailpull/hdr.h"
#include "mailpull/log.h"
#include "mailpull/maildir.h"
#include "mailpull/mimeword.h"
#include "mailpull/outbox.h"
#include "mailpull/smtp.h"
#include "mailpull/state.h"
#include "mailpull/util.h"
#include "deliver.h"
#include "sentcopy.h"
#include "session.h"

/* Bytes of a message's head read for its Subject in reports. */
#define SEND_HEAD_PEEK 16384
/* Characters of a Subject shown in reports. */
#define SEND_SUBJECT_SHOW 60

struct srun {
	bool wrote;                 /* a send record changed in this run: compact at the end */
	const struct mp_config *cfg;
	const struct mp_account *a;
	struct mp_account sub;             /* the account as its submission server sees it */
	const struct account_opts *o;
	struct account_stats *stats;
	struct state *st;
	struct outbox_item *items;
	size_t nitems;
	bool *removed;                     /* per item: done and gone from the outbox */
	bool *was_copied;                  /* per item: copied before this run (a local copy may exist) */
	struct smtp *smtp;                 /* NULL until the first message to send */
	bool smtp_done;                    /* no (more) session in this run */
	struct sentcopy *sc;
	bool sc_done;                      /* the Sent mailbox failed in this run */
	/* the run's outcome: its most severe problem */
	struct mp_err *err;
	int ret;
	unsigned held_now, refused_now;
	unsigned total, done;              /* messages to send, for progress lines */
};

/* ---- outcome ---- */

/* Keeps e as the run's error when it is more severe than the one kept. */
static void
note_err(struct srun *r, int code, const struct mp_err *e)
{
	enum mp_exit ex = e->ex ? e->ex : mp_exit_from_errno(code);

	if (r->ret < 0 && mp_exit_worse(r->err->ex, ex) == r->err->ex)
		return;
	*r->err = *e;
	if (r->err->code == 0)
		r->err->code = code;
	r->err->ex = ex;
	r->ret = code;
}

/* ---- what a message is, for reports ---- */

struct msginfo {
	char *subject;                     /* decoded, one line; "" when none */
	struct outbox_scan scan;
	bool scanned;
};

static void
msginfo_free(struct msginfo *mi)
{
	free(mi->subject);
	if (mi->scanned)
		outbox_scan_free(&mi->scan);
	memset(mi, 0, sizeof(*mi));
}

/* The Subject of the message in fd (best effort: "" when unreadable). */
static char *
read_subject(int fd)
{
	static const char *const names[] = { "Subject" };
	struct hdr_scan *h = malloc(sizeof(*h));
	char *buf = malloc(SEND_HEAD_PEEK), *dec = NULL, *out = NULL;
	ssize_t n = -1;
	size_t dlen = 0;

	if (h && buf) {
		hdr_scan_init(h, names, 1);
		n = pread(fd, buf, SEND_HEAD_PEEK, 0);
	}
	if (n > 0) {
		hdr_scan_feed(h, buf, (size_t)n);
		hdr_scan_finish(h);
		if (mimeword_decode(h->values[0], h->lens[0], &dec, &dlen) == 0 &&
		    mimeword_oneline(dec, dlen, SEND_SUBJECT_SHOW, &out) < 0)
			out = NULL;
	}
	free(dec);
	free(buf);
	free(h);
	return out ? out : strdup("");
}

/* Opens the outbox file of it, read-only. */
static int
open_item(struct srun *r, const struct outbox_item *it, int *ret_fd, struct mp_err *e)
{
	int fd = open(it->path, O_RDONLY | O_NOCTTY | O_CLOEXEC);

	if (fd < 0)
		return mp_err_set(e, -errno, MP_EX_IOERR, "cannot open %s in the outbox %s: %s",
				  it->base, r->a->outbox, strerror(errno));
	*ret_fd = fd;
	return 0;
}

/*
 * "BASE (Subject "S", Message-ID <x>, to a@b and 2 more)" into buf, from
 * what mi knows.
 */
static const char *
describe(const struct outbox_item *it, const struct msginfo *mi, const char *rcpt, size_t nrcpts,
	 char *buf, size_t size)
{
	const char *mid = mi->scanned && mi->scan.message_id ? mi->scan.message_id : NULL;
	char more[48] = "";

	if (nrcpts > 1)
		snprintf(more, sizeof(more), " and %zu more", nrcpts - 1);
	snprintf(buf, size, "%s (Subject \"%s\"%s%s, to %s%s)", it->base,
		 mi->subject ? mi->subject : "", mid ? ", Message-ID " : "", mid ? mid : "",
		 rcpt ? rcpt : "nobody", more);
	return buf;
}

/* Subject and scan of the message (best effort for reports: failures leave them empty). */
static void
msginfo_load(struct srun *r, const struct outbox_item *it, struct msginfo *mi)
{
	struct mp_err e = { 0 };
	int fd;

	memset(mi, 0, sizeof(*mi));
	if (open_item(r, it, &fd, &e) < 0)
		return;
	mi->subject = read_subject(fd);
	mi->scanned = outbox_scan_fd(fd, &mi->scan, &e) == 0;
	close(fd);
}

static const char *
first_rcpt(const struct msginfo *mi)
{
	return mi->scanned && mi->scan.nrcpts ? mi->scan.rcpts[0] : NULL;
}

static size_t
nrcpts(const struct msginfo *mi)
{
	return mi->scanned ? mi->scan.nrcpts : 0;
}

/* ---- records ---- */

static int
record(struct srun *r, const char *base, enum state_send st, const char *text)
{
	struct mp_err e = { 0 };
	int ret = state_send_set(r->st, base, st, text, &e);

	r->wrote = true;
	if (ret == 0)
		ret = state_sync(r->st, &e);
	if (ret < 0)
		note_err(r, ret, &e);
	return ret;
}

static const struct outbox_item *
find_item(const struct srun *r, const char *base)
{
	for (size_t i = 0; i < r->nitems; i++)
		if (strcmp(r->items[i].base, base) == 0)
			return &r->items[i];
	return NULL;
}

/* ---- recovery ---- */

struct rec_copy {
	char *base;
	enum state_send st;
};

struct rec_list {
	struct rec_copy *v;
	size_t n, cap;
};

static int
collect_rec(void *ud, const char *base, enum state_send st, const char *text)
{
	struct rec_list *l = ud;

	(void)text;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct rec_copy *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].base = strdup(base);
	if (!l->v[l->n].base)
		return -ENOMEM;
	l->v[l->n++].st = st;
	return 0;
}

static void
rec_list_free(struct rec_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].base);
	free(l->v);
}

/* Opens the Sent mailbox once per run; false when it cannot be (the error noted). */
static bool
sent_open(struct srun *r, bool create)
{
	struct mp_err e = { 0 };
	int ret;

	if (r->sc)
		return true;
	if (r->sc_done)
		return false;
	ret = sentcopy_open(r->a, create, &r->sc, &e);
	if (ret < 0) {
		r->sc_done = true;
		mp_err_prefix(&e, "the Sent copy on %s:%u", r->a->host, r->a->port);
		if (create)
			note_err(r, ret, &e);
		return false;
	}
	return true;
}

/*
 * Whether a message found submitting after a crash was provably not
 * accepted: the server files what it accepts into Sent by itself
 * (save_sent = auto and a server on the list) and its Message-ID is not
 * there. Anything unsure is false.
 */
static bool
provably_unsent(struct srun *r, const struct msginfo *mi)
{
	struct mp_err e = { 0 };
	bool there = true;

	if (r->a->protocol != MP_PROTO_IMAP || r->a->save_sent != MP_SAVE_SENT_AUTO ||
	    !sentcopy_server_files(r->a) || !mi->scanned || !mi->scan.message_id)
		return false;
	if (!sent_open(r, false))
		return false;
	if (sentcopy_has(r->sc, mi->scan.message_id, &there, &e) < 0) {
		log_acct(LOG_LVL_DEBUG, r->a->name, r->a->host, "account %s: cannot look the "
			 "Message-ID up in Sent: %s", r->a->name, e.msg);
		return false;
	}
	return !there;
}

static void
warn_held(struct srun *r, const struct outbox_item *it, const struct msginfo *mi, const char *why)
{
	char d[512];

	log_acct(LOG_LVL_WARN, r->a->name, r->a->smtp_host,
		 "account %s: message %s may have been sent: %s; it is held: check the "
		 "recipient's copy, then `mailpull send --retry-held %s` or delete it from the "
		 "outbox %s", r->a->name, describe(it, mi, first_rcpt(mi), nrcpts(mi), d, sizeof(d)),
		 why, r->a->name, r->a->outbox);
}

/* One record found at start-up. */
static int
recover_one(struct srun *r, const struct rec_copy *rc)
{
	const struct outbox_item *it = find_item(r, rc->base);
	struct msginfo mi;
	int ret = 0;

	/* Gone from the outbox: deleted by the user, or done but for this record. */
	if (!it)
		return record(r, rc->base, STATE_SEND_QUEUED, NULL);
	if (rc->st == STATE_SEND_SUBMITTING) {
		msginfo_load(r, it, &mi);
		if (provably_unsent(r, &mi)) {
			log_acct(LOG_LVL_NOTICE, r->a->name, r->a->smtp_host, "account %s: message "
				 "%s was not sent (a crash interrupted its submission, and it is not "
				 "in the server's Sent mailbox): queued again", r->a->name, it->base);
			ret = record(r, rc->base, STATE_SEND_QUEUED, NULL);
		} else {
			ret = record(r, rc->base, STATE_SEND_HELD, "a crash interrupted its submission");
			if (ret == 0) {
				warn_held(r, it, &mi, "a crash interrupted its submission");
				r->held_now++;
			}
		}
		msginfo_free(&mi);
		return ret;
	}
	if (rc->st == STATE_SEND_HELD && r->o->retry_held)
		return record(r, rc->base, STATE_SEND_RETRY, NULL);
	return 0;
}

static int
recover(struct srun *r)
{
	struct rec_list l = { 0 };
	int ret = state_send_foreach(r->st, collect_rec, &l);

	if (ret < 0) {
		struct mp_err e = { 0 };

		mp_err_oom(&e);
		note_err(r, ret, &e);
	}
	for (size_t i = 0; ret == 0 && i < l.n; i++)
		ret = recover_one(r, &l.v[i]);
	rec_list_free(&l);
	return ret;
}

/* ---- the SMTP session ---- */

/* The account as seen by its submission server: session_connect() and session_login() work unchanged. */
static void
submission_view(struct srun *r)
{
	const struct mp_account *a = r->a;

	/* Everything else carries over, the client certificate (tls_cert, tls_key) too. */
	r->sub = *a;
	r->sub.host = a->smtp_host;
	r->sub.port = a->smtp_port;
	r->sub.tls = a->smtp_tls;
	r->sub.user = a->smtp_user ? a->smtp_user : a->user;
	if (a->smtp_password || a->smtp_password_file || a->smtp_password_command) {
		r->sub.password = a->smtp_password;
		r->sub.password_file = a->smtp_password_file;
		r->sub.password_command = a->smtp_password_command;
	}
}

static int
smtp_auth_cb(void *engine, struct sasl_session *cl, const char *user, const char *secret,
	     struct mp_err *err)
{
	return smtp_auth(engine, cl, user, secret, err);
}

static void
ehlo_name(char *buf, size_t size)
{
	if (gethostname(buf, size) < 0 || buf[0] == '\0' || strpbrk(buf, " \t\r\n"))
		snprintf(buf, size, "localhost");
	buf[size - 1] = '\0';
}

/* Connects, STARTTLS when configured, logs in. false when it failed (the error noted). */
static bool
session_open(struct srun *r)
{
	char ehlo[HOST_NAME_MAX + 1];
	struct mp_err e = { 0 };
	struct conn *c = NULL;
	int ret;

	if (r->smtp)
		return true;
	if (r->smtp_done)
		return false;
	ehlo_name(ehlo, sizeof(ehlo));
	ret = session_connect(&r->sub, &c, &e);
	if (ret == 0)
		ret = smtp_open(c, ehlo, r->a->smtp_tls == MP_TLS_STARTTLS, &r->smtp, &e);
	if (ret == 0) {
		/* c now belongs to r->smtp, and lives as long. */
		const struct session_server srv = {
			.c = c, .sasl = smtp_caps(r->smtp)->sasl, .user_ok = false, .plain = "USER",
			.greeting = smtp_greeting(r->smtp), .auth = smtp_auth_cb, .engine = r->smtp,
		};

		ret = session_login(&r->sub, &srv, &e);
	}
	if (ret < 0) {
		smtp_free(r->smtp);
		r->smtp = NULL;
		r->smtp_done = true;
		note_err(r, ret, &e);
		return false;
	}
	return true;
}

static void
session_end(struct srun *r, bool quit)
{
	struct mp_err e = { 0 };

	if (r->smtp && quit && smtp_quit(r->smtp, &e) < 0)
		log_acct(LOG_LVL_DEBUG, r->a->name, r->a->smtp_host, "account %s: QUIT: %s",
			 r->a->name, e.msg);
	smtp_free(r->smtp);
	r->smtp = NULL;
	r->smtp_done = true;
}

/* ---- sending one message ---- */

/* What one message is sent as. */
struct sendjob {
	const struct outbox_item *it;
	int fd;
	struct msginfo mi;
	struct outbox_env env;
	bool has_env;
	const char *from;
	const char *const *rcpts;
	size_t nrcpts;
};

static void
sendjob_free(struct sendjob *j)
{
	if (j->fd >= 0)
		close(j->fd);
	msginfo_free(&j->mi);
	if (j->has_env)
		outbox_env_free(&j->env);
}

/* Marks the message failed for good and reports it once. */
static int
fail_message(struct srun *r, struct sendjob *j, const char *why)
{
	char d[512];
	int ret = record(r, j->it->base, STATE_SEND_FAILED, why);

	if (ret < 0)
		return ret;
	r->stats->send_failed++;
	log_acct(LOG_LVL_ERR, r->a->name, r->a->smtp_host, "account %s (%s:%u): message %s "
		 "cannot be sent: %s; it stays in the outbox %s, marked failed", r->a->name,
		 r->a->smtp_host, r->a->smtp_port,
		 describe(j->it, &j->mi, j->nrcpts ? j->rcpts[0] : first_rcpt(&j->mi),
			  j->nrcpts ? j->nrcpts : nrcpts(&j->mi), d, sizeof(d)),
		 why, r->a->outbox);
	return 0;
}

/*
 * Reads the message, its envelope, and decides sender and recipients.
 * 1: ready; 0: failed for good (recorded and reported); < 0: a run error
 * (noted; the message stays queued).
 */
static int
prepare(struct srun *r, struct sendjob *j)
{
	struct mp_err e = { 0 };
	char why[600];
	int ret = open_item(r, j->it, &j->fd, &e);

	if (ret == 0) {
		j->mi.subject = read_subject(j->fd);
		ret = outbox_scan_fd(j->fd, &j->mi.scan, &e);
		j->mi.scanned = ret == 0;
	}
	if (ret == -EBADMSG) {
		snprintf(why, sizeof(why), "%s", e.msg);
		return fail_message(r, j, why);
	}
	if (ret == 0) {
		ret = outbox_envelope_read(r->a->outbox, j->it->base, &j->env, &e);
		j->has_env = ret == 0;
		if (ret == -ENOENT)
			ret = 0;
		if (ret == -EBADMSG) {
			snprintf(why, sizeof(why), "its envelope: %s", e.msg);
			return fail_message(r, j, why);
		}
	}
	if (ret < 0) {
		note_err(r, ret, &e);
		return ret;
	}
	j->from = j->has_env && j->env.from ? j->env.from : r->a->from ? r->a->from :
		  j->mi.scan.from_addr;
	if (j->has_env && j->env.nrcpts) {
		j->rcpts = (const char *const *)j->env.rcpts;
		j->nrcpts = j->env.nrcpts;
	} else {
		j->rcpts = (const char *const *)j->mi.scan.rcpts;
		j->nrcpts = j->mi.scan.nrcpts;
	}
	if (j->mi.scan.has_nul)
		return fail_message(r, j, "it holds a NUL byte, which SMTP cannot carry");
	if (!j->from)
		return fail_message(r, j, "no sender: the message has no From address (set `from` "
				    "for the account)");
	if (j->nrcpts == 0)
		return fail_message(r, j, "no recipients (no To, Cc or Bcc, and none given)");
	return 1;
}

/* "rcpt: 550 5.1.1 text; ..." for the recipients the server refused. */
static void
refused_text(const struct sendjob *j, const struct smtp_result *res, char *buf, size_t size)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < j->nrcpts && o + 1 < size; i++) {
		const struct smtp_reply *rp = &res->rcpt[i];
		int n;

		if (rp->code >= 200 && rp->code < 300)
			continue;
		n = snprintf(buf + o, size - o, "%s%s: %d %s%s%s", o ? "; " : "", j->rcpts[i],
			     rp->code, rp->enh, rp->enh[0] ? " " : "", rp->text);
		if (n < 0)
			break;
		o += (size_t)n < size - o ? (size_t)n : size - o - 1;
	}
}

static void
progress_line(struct srun *r, const struct sendjob *j)
{
	if (!r->o->progress)
		return;
	fprintf(stderr, "%s: sent %u/%u: %s -> %s%s\n", r->a->name, r->done, r->total,
		j->mi.subject && j->mi.subject[0] ? j->mi.subject : "(no subject)", j->rcpts[0],
		j->nrcpts > 1 ? " ..." : "");
	fflush(stderr);
}

static int
accepted(struct srun *r, struct sendjob *j, const struct smtp_result *res)
{
	char refused[1024], d[512];
	int ret;

	refused_text(j, res, refused, sizeof(refused));
	ret = record(r, j->it->base, STATE_SEND_ACCEPTED, refused);
	if (ret < 0)
		return ret;
	deliver_crash_point();
	r->stats->sent++;
	r->done++;
	progress_line(r, j);
	if (refused[0]) {
		r->refused_now++;
		log_acct(LOG_LVL_WARN, r->a->name, r->a->smtp_host, "account %s (%s:%u): message "
			 "%s was sent, but the server refused some recipients: %s", r->a->name,
			 r->a->smtp_host, r->a->smtp_port,
			 describe(j->it, &j->mi, j->rcpts[0], j->nrcpts, d, sizeof(d)), refused);
	}
	return 0;
}

/*
 * After an engine error: the session is unusable. Before the final dot
 * the message was not accepted (queued again); after it, it may have
 * been (held).
 */
static int
lost(struct srun *r, struct sendjob *j, const struct smtp_result *res, int code,
     const struct mp_err *e)
{
	int ret;

	note_err(r, code, e);
	session_end(r, false);
	if (!res->dot_sent)
		return record(r, j->it->base, STATE_SEND_QUEUED, NULL);
	ret = record(r, j->it->base, STATE_SEND_HELD, "the connection was lost after the final "
		     "dot, before the server's answer");
	if (ret == 0) {
		warn_held(r, j->it, &j->mi, "the connection was lost after its final dot, "
			  "before the server's answer");
		r->held_now++;
	}
	return ret;
}

/* Submits one prepared message and records the outcome. < 0: stop sending. */
static int
submit(struct srun *r, struct sendjob *j)
{
	struct smtp_result res = { 0 };
	struct outbox_reader *rd = NULL;
	struct mp_err e = { 0 };
	struct smtp_envelope env = {
		.from = j->from, .rcpts = j->rcpts, .nrcpts = j->nrcpts,
		.size = j->mi.scan.wire_size, .eightbit = j->mi.scan.eightbit,
		.utf8 = j->mi.scan.utf8,
	};
	char why[1024];
	int ret;

	res.rcpt = calloc(j->nrcpts, sizeof(*res.rcpt));
	if (!res.rcpt) {
		mp_err_oom(&e);
		note_err(r, -ENOMEM, &e);
		return -ENOMEM;
	}
	/* The durable record that makes a crash from here on a held message, never a resend. */
	ret = record(r, j->it->base, STATE_SEND_SUBMITTING, NULL);
	if (ret < 0)
		goto out;
	deliver_crash_point();
	ret = outbox_reader_open(j->fd, false, &rd, &e);
	if (ret < 0) {
		note_err(r, ret, &e);
		ret = record(r, j->it->base, STATE_SEND_QUEUED, NULL);
		goto out;
	}
	ret = smtp_send(r->smtp, &env, outbox_reader_read, rd, &res, &e);
	if (ret == 0) {
		ret = accepted(r, j, &res);
	} else if (ret == -EPERM || ret == -EMSGSIZE || ret == -EILSEQ || ret == -EINVAL) {
		if (e.srv[0])
			snprintf(why, sizeof(why), "%s; the server said: %s", e.msg, e.srv);
		else
			snprintf(why, sizeof(why), "%s", e.msg);
		ret = fail_message(r, j, why);
	} else if (ret == -EAGAIN) {
		/* 4xx: queued again, the run ends temporary-failed and the daemon backs off. */
		note_err(r, ret, &e);
		ret = record(r, j->it->base, STATE_SEND_QUEUED, NULL);
	} else {
		lost(r, j, &res, ret, &e);
		ret = -ECONNRESET;
	}
out:
	outbox_reader_free(rd);
	free(res.rcpt);
	return ret;
}

static bool
stopped(const struct srun *r)
{
	return r->o->stop && *r->o->stop;
}

static void
note_stop(struct srun *r)
{
	struct mp_err e = { 0 };

	mp_err_set(&e, -ECANCELED, MP_EX_TEMPFAIL, "stopped by a signal");
	note_err(r, -ECANCELED, &e);
}

static bool
to_send(const struct srun *r, const struct outbox_item *it)
{
	enum state_send st = state_send_get(r->st, it->base, NULL);

	return st == STATE_SEND_QUEUED || st == STATE_SEND_RETRY;
}

static int
send_all(struct srun *r)
{
	int ret = 0;

	for (size_t i = 0; i < r->nitems; i++)
		r->total += to_send(r, &r->items[i]);
	for (size_t i = 0; i < r->nitems && ret == 0; i++) {
		struct sendjob j = { .it = &r->items[i], .fd = -1 };

		if (!to_send(r, j.it))
			continue;
		if (stopped(r)) {
			note_stop(r);
			return -ECANCELED;
		}
		ret = prepare(r, &j);
		if (ret == 1)
			ret = session_open(r) ? submit(r, &j) : -ECONNREFUSED;
		else if (ret < 0)
			ret = 0;    /* this message stays queued; the next may work */
		sendjob_free(&j);
	}
	session_end(r, true);
	return ret;
}

/* ---- after acceptance: the Sent copies and removal ---- */

static bool
wants_server_copy(const struct mp_account *a)
{
	if (a->protocol != MP_PROTO_IMAP)
		return false;
	return a->save_sent == MP_SAVE_SENT_YES ||
	       (a->save_sent == MP_SAVE_SENT_AUTO && !sentcopy_server_files(a));
}

/* The server's Sent copy of an accepted message; it stays accepted on failure. */
static int
server_copy(struct srun *r, const struct outbox_item *it)
{
	struct outbox_scan scan = { 0 };
	struct mp_err e = { 0 };
	bool appended = false;
	char text[400];
	uint32_t uid = 0;
	int fd = -1, ret;

	if (!wants_server_copy(r->a))
		return record(r, it->base, STATE_SEND_COPIED, NULL);
	if (!sent_open(r, true))
		return 0;
	ret = open_item(r, it, &fd, &e);
	if (ret == 0)
		ret = outbox_scan_fd(fd, &scan, &e);
	if (ret == 0)
		ret = sentcopy_put(r->sc, scan.message_id, fd, scan.crlf_size, &uid, &appended, &e);
	if (ret == 0) {
		deliver_crash_point();
		if (uid)
			snprintf(text, sizeof(text), "uid %" PRIu32 " in %s", uid,
				 sentcopy_folder(r->sc));
		else
			snprintf(text, sizeof(text), "%s %s", appended ? "appended to" : "already in",
				 sentcopy_folder(r->sc));
		ret = record(r, it->base, STATE_SEND_COPIED, text);
	} else {
		mp_err_prefix(&e, "the Sent copy on %s:%u", r->a->host, r->a->port);
		note_err(r, ret, &e);
		/* A broken IMAP session is not retried for every message. */
		if (ret != -EBADMSG && e.ex != MP_EX_IOERR) {
			sentcopy_close(r->sc);
			r->sc = NULL;
			r->sc_done = true;
		}
		ret = 0;
	}
	if (fd >= 0)
		close(fd);
	outbox_scan_free(&scan);
	return ret;
}

/* Copies fd into the Maildir md as cur/NAME:2,S, durably. */
static int
store_local(struct maildir *md, const char *name, int fd, struct mp_err *e)
{
	struct maildir_msg *m = NULL;
	char buf[65536];
	off_t off = 0;
	int ret = maildir_msg_new_named(md, name, &m, e);

	while (ret == 0) {
		ssize_t n = pread(fd, buf, sizeof(buf), off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = mp_err_set(e, -errno, MP_EX_IOERR, "cannot read %s: %s", name,
					 strerror(errno));
			break;
		}
		if (n == 0)
			break;
		ret = maildir_msg_write(m, buf, (size_t)n, e);
		off += n;
	}
	if (ret == 0)
		ret = maildir_msg_sync(m, e);
	if (ret < 0) {
		maildir_msg_discard(m);
		return ret;
	}
	ret = maildir_msg_publish(m, "S", e);
	if (ret == 0)
		ret = maildir_sync_new(md, e);
	return ret;
}

/* The local copy in maildir/.Sent, then removal from the outbox, then the record goes. */
static int
finish_one(struct srun *r, struct maildir *md, const struct outbox_item *it)
{
	struct mp_err e = { 0 };
	bool there = false;
	int fd = -1, ret = 0;

	/*
	 * Only a run interrupted after "copied" can have left a local copy:
	 * the look (a directory scan) is for those alone.
	 */
	if (r->was_copied[it - r->items])
		ret = maildir_has_published(md, it->base, &there, &e);
	if (ret == 0 && !there) {
		ret = open_item(r, it, &fd, &e);
		if (ret == 0)
			ret = store_local(md, it->base, fd, &e);
		if (fd >= 0)
			close(fd);
		if (ret == 0)
			deliver_crash_point();
	}
	if (ret == 0) {
		ret = outbox_remove(r->a->outbox, it, &e);
		if (ret == 0)
			deliver_crash_point();
	}
	if (ret < 0) {
		note_err(r, ret, &e);
		return ret;
	}
	r->removed[it - r->items] = true;
	/*
	 * Dropping the record need not be durable at once: a record whose
	 * file is gone is dropped by the next run's recovery. copies() syncs
	 * once for all of them.
	 */
	r->wrote = true;
	ret = state_send_set(r->st, it->base, STATE_SEND_QUEUED, NULL, &e);
	if (ret < 0)
		note_err(r, ret, &e);
	return ret;
}

static int
open_sent_maildir(struct srun *r, struct maildir **ret)
{
	struct mp_err e = { 0 };
	char tag[16], *path = NULL;
	int n;

	session_tag(r->a->name, tag);
	if (asprintf(&path, "%s/.Sent", r->a->maildir) < 0) {
		mp_err_oom(&e);
		note_err(r, -ENOMEM, &e);
		return -ENOMEM;
	}
	n = maildir_open(path, tag, ret, &e);
	free(path);
	if (n < 0)
		note_err(r, n, &e);
	return n;
}

static int
copies(struct srun *r)
{
	struct maildir *md = NULL;
	int ret = 0;

	for (size_t i = 0; i < r->nitems && ret == 0; i++)
		if (state_send_get(r->st, r->items[i].base, NULL) == STATE_SEND_ACCEPTED)
			ret = server_copy(r, &r->items[i]);
	sentcopy_close(r->sc);
	r->sc = NULL;
	for (size_t i = 0; i < r->nitems && ret == 0; i++) {
		if (state_send_get(r->st, r->items[i].base, NULL) != STATE_SEND_COPIED)
			continue;
		if (!md && open_sent_maildir(r, &md) < 0)
			return 0;
		/* One that failed stays copied (the error noted) and is finished next run. */
		(void)finish_one(r, md, &r->items[i]);
	}
	if (md) {
		struct mp_err e = { 0 };

		maildir_close(md);
		ret = state_sync(r->st, &e);
		if (ret < 0)
			note_err(r, ret, &e);
	}
	return ret;
}

/* ---- the run ---- */

static void
count_left(struct srun *r)
{
	r->stats->held = 0;
	r->stats->queued = 0;
	r->stats->failed_kept = 0;
	for (size_t i = 0; i < r->nitems; i++) {
		enum state_send st = state_send_get(r->st, r->items[i].base, NULL);

		if (r->removed[i])
			continue;
		if (st == STATE_SEND_HELD)
			r->stats->held++;
		else if (st == STATE_SEND_QUEUED || st == STATE_SEND_RETRY)
			r->stats->queued++;
		else if (st == STATE_SEND_FAILED)
			r->stats->failed_kept++;
	}
	/* Those failed in this run are counted in send_failed. */
	r->stats->failed_kept -= r->stats->failed_kept < r->stats->send_failed ?
				 r->stats->failed_kept : r->stats->send_failed;
}

/* Held messages from earlier runs are said again each run: they wait for the user. */
static void
remind_held(struct srun *r)
{
	unsigned n = 0;

	for (size_t i = 0; i < r->nitems; i++)
		n += state_send_get(r->st, r->items[i].base, NULL) == STATE_SEND_HELD;
	if (n > r->held_now)
		log_acct(LOG_LVL_WARN, r->a->name, r->a->smtp_host, "account %s: %u message%s "
			 "held in the outbox %s (may have been sent): check, then `mailpull send "
			 "--retry-held %s` or delete %s", r->a->name, n - r->held_now,
			 n - r->held_now == 1 ? "" : "s", r->a->outbox, r->a->name,
			 n - r->held_now == 1 ? "it" : "them");
}

/* When messages were refused or held in this run, and nothing worse happened: exit 65. */
static void
data_errors(struct srun *r)
{
	struct mp_err e = { 0 };
	char line[1536];

	/* The run's other problem is said here when a data error takes its place. */
	if (r->ret < 0 && r->err->ex != MP_EX_DATAERR &&
	    mp_exit_worse(r->err->ex, MP_EX_DATAERR) == MP_EX_DATAERR &&
	    (r->stats->send_failed || r->held_now || r->refused_now)) {
		mp_err_line(line, sizeof(line), r->a->name, r->a->smtp_host, r->a->smtp_port,
			    r->err);
		log_acct(LOG_LVL_ERR, r->a->name, r->a->smtp_host, "%s", line);
	}

	if (r->stats->send_failed) {
		mp_err_set(&e, -EPERM, MP_EX_DATAERR, "%u message%s refused for good, kept in the "
			   "outbox %s as failed", r->stats->send_failed,
			   r->stats->send_failed == 1 ? "" : "s", r->a->outbox);
		note_err(r, -EPERM, &e);
	} else if (r->held_now) {
		mp_err_set(&e, -EALREADY, MP_EX_DATAERR, "%u message%s held: may have been sent "
			   "(`mailpull send --retry-held %s` sends again)", r->held_now,
			   r->held_now == 1 ? "" : "s", r->a->name);
		note_err(r, -EALREADY, &e);
	} else if (r->refused_now) {
		mp_err_set(&e, -EPERM, MP_EX_DATAERR, "%u message%s sent with some recipients "
			   "refused", r->refused_now, r->refused_now == 1 ? "" : "s");
		note_err(r, -EPERM, &e);
	}
}

/*
 * Folds the run's records into the snapshot, so the journal does not grow
 * with every message sent. Not after an interrupted fetch: its recorded
 * Maildir names are what its recovery needs, and compaction forgets them.
 */
static void
compact(struct srun *r)
{
	struct mp_err e = { 0 };
	int ret;

	/* an empty or unchanged outbox costs no rewrite of the whole state */
	if (!r->wrote || state_interrupted(r->st))
		return;
	ret = state_compact(r->st, &e);
	if (ret < 0)
		note_err(r, ret, &e);
}

static int
run(struct srun *r)
{
	struct mp_err e = { 0 };
	int ret = state_open(r->cfg->state_dir, r->a->name, r->o->wait, &r->st, &e);

	if (ret == 0)
		ret = outbox_list(r->a->outbox, &r->items, &r->nitems, &e);
	if (ret == 0) {
		r->removed = calloc(r->nitems + 1, sizeof(*r->removed));
		r->was_copied = calloc(r->nitems + 1, sizeof(*r->was_copied));
		if (!r->removed || !r->was_copied)
			ret = mp_err_oom(&e);
	}
	if (ret < 0) {
		note_err(r, ret, &e);
		return ret;
	}
	outbox_tidy(r->a->outbox);
	for (size_t i = 0; i < r->nitems; i++)
		r->was_copied[i] = state_send_get(r->st, r->items[i].base, NULL) ==
				   STATE_SEND_COPIED;
	ret = recover(r);
	if (ret == 0) {
		remind_held(r);
		ret = send_all(r);
	}
	/* What was accepted gets its copies even when sending stopped early. */
	if (ret != -ECANCELED && r->st)
		copies(r);
	count_left(r);
	compact(r);
	data_errors(r);
	return r->ret;
}

int
account_send(const struct mp_config *cfg, const struct mp_account *a,
	     const struct account_opts *o, struct account_stats *ret_stats, struct mp_err *err)
{
	struct srun r = { .cfg = cfg, .a = a, .o = o, .stats = ret_stats, .err = err };
	int ret;

	if (!a->smtp_host)
		return 0;
	submission_view(&r);
	mp_err_clear(err);
	ret = run(&r);
	sentcopy_close(r.sc);
	smtp_free(r.smtp);
	outbox_items_free(r.items, r.nitems);
	free(r.removed);
	free(r.was_copied);
	state_close(r.st);
	if (ret < 0 && err->code == 0)
		mp_err_set(err, ret, mp_exit_from_errno(ret), "%s", strerror(-ret));
	return ret;
}
