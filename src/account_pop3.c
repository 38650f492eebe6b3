/*
 * One run of a POP3 account, and its preview. Policy only; the wire is
 * pop3.c's and the durable sequence deliver.c's. LIST and UIDL, forget
 * what the server no longer has, fetch what is new in batches (RETR,
 * pipelined), then DELE what keep / keep_days allow and QUIT: the server
 * deletes only on QUIT's +OK (RFC 1939 section 6).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mailpull/conn.h"
#include "mailpull/hdr.h"
#include "mailpull/log.h"
#include "mailpull/pop3.h"
#include "account_int.h"
#include "deliver.h"
#include "session.h"
#include "vec.h"

struct run {
	const struct mp_account *a;
	struct account_stats *stats;
	struct state *st;
	struct maildir *md;
	struct pop3 *pop;
	struct pop3_msg *msgs;
	size_t nmsgs;
	time_t now;
	struct mp_err *err;
	struct deliver d;

	/* what fetch_new() asks for: numbers, LISTed sizes, indexes into msgs */
	unsigned *want_nums;
	uint64_t *want_sizes;
	uint32_t *want_idx;
	size_t nwant;

	/* the message being received */
	const struct pop3_msg *cur;
	uint64_t cur_bytes;    /* bytes of cur received so far */
};

static int
sink_begin(void *ud, size_t idx)
{
	struct run *r = ud;
	int ret = deliver_begin(&r->d);

	r->cur = &r->msgs[r->want_idx[idx]];
	r->cur_bytes = 0;
	return ret;
}

static int
sink_data(void *ud, const char *buf, size_t len)
{
	struct run *r = ud;
	int ret;

	/* What the server LISTed is a claim: the cap holds for what it sends. */
	r->cur_bytes += len;
	ret = session_check_received(r->a, "message", r->cur->num, r->cur->size, r->cur_bytes,
				     r->err);
	if (ret < 0)
		return ret;
	return deliver_data(&r->d, buf, len);
}

static int
sink_end(void *ud)
{
	struct run *r = ud;
	struct deliver_msg m = { .ref = r->cur };

	return deliver_end(&r->d, &m);
}

static int
fetch_cb(void *ud)
{
	struct run *r = ud;
	struct mp_sink sink = { sink_begin, sink_data, sink_end, r };

	return pop3_retr(r->pop, r->want_nums, r->want_sizes, r->nwant, &sink, r->err);
}

/*
 * Key under which a message is recorded: its UIDL. A server without UIDL
 * cannot name a message across sessions; such messages are recorded under
 * their Maildir name only so that recovery publishes them, and forgotten
 * once the server confirmed their deletion.
 *
 * A UIDL is the server's text and may itself begin with NOUIDL_PREFIX: it
 * is then recorded behind UIDL_ESCAPE, a byte no UIDL can hold (RFC 1939:
 * 0x21-0x7E), so the two kinds of key never meet, and every other UIDL
 * keeps the key older state files recorded it under.
 */
#define NOUIDL_PREFIX "nouidl/"
#define UIDL_ESCAPE ' '
#define KEY_MAX 300

static bool
internal_key(const char *key)
{
	return strncmp(key, NOUIDL_PREFIX, strlen(NOUIDL_PREFIX)) == 0;
}

static const char *
msg_key(const struct pop3_msg *m, const char *name, char *buf, size_t len)
{
	if (m->uidl[0] && !internal_key(m->uidl))
		return m->uidl;
	if (m->uidl[0])
		snprintf(buf, len, "%c%s", UIDL_ESCAPE, m->uidl);
	else
		snprintf(buf, len, NOUIDL_PREFIX "%s", name ? name : "");
	return buf;
}

/* The UIDL a recorded key stands for; NULL for mailpull's own keys. */
static const char *
key_uidl(const char *key)
{
	if (internal_key(key))
		return NULL;
	return key[0] == UIDL_ESCAPE ? key + 1 : key;
}

/*
 * Whether m was fetched: its UIDL is recorded and, when a size was
 * recorded with it, m has that size. A server may give a UIDL to another
 * message once the first is gone (RFC 1939 asks it not to); a different
 * size shows that, and the message is new. Keys recorded before sizes were
 * kept match on the UIDL alone.
 */
static bool
already_fetched(struct state *st, const struct pop3_msg *m, int64_t *ret_when)
{
	char kbuf[KEY_MAX];
	const char *key;
	uint64_t size;

	if (!m->uidl[0])
		return false;
	key = msg_key(m, NULL, kbuf, sizeof(kbuf));
	if (!state_has(st, key, ret_when))
		return false;
	return !state_get_size(st, key, &size) || size == m->size;
}

/*
 * Records a message as fetched into name, with its LISTed size. A UIDL
 * recorded for an earlier message of another size is forgotten first, so
 * the record (time included, for keep_days) is the new message's.
 */
static int
record_cb(void *ud, const struct deliver_msg *dm, const char *name, struct mp_err *err)
{
	struct run *r = ud;
	const struct pop3_msg *m = dm->ref;
	char kbuf[KEY_MAX];
	const char *key = msg_key(m, name, kbuf, sizeof(kbuf));
	int ret = 0;

	if (m->uidl[0] && state_has(r->st, key, NULL))
		ret = state_remove(r->st, key, err);
	if (ret == 0 && m->uidl[0])
		ret = state_add_sized(r->st, key, (int64_t)r->now, m->size, name, err);
	else if (ret == 0)
		ret = state_add(r->st, key, (int64_t)r->now, name, err);
	return ret;
}

static const struct deliver_ops pop3_ops = { fetch_cb, record_cb };

/* The engine behind session_login(). */
static int
pop3_auth_cb(void *engine, struct sasl_session *cl, const char *user, const char *secret,
	     struct mp_err *err)
{
	return pop3_auth(engine, cl, user, secret, err);
}

static bool
wanted(struct run *r, const struct pop3_msg *m)
{
	if (already_fetched(r->st, m, NULL))
		return false;
	if (m->size > session_msg_cap(r->a)) {
		r->stats->too_large++;
		log_notice("%s: message %u (%llu bytes) is over %s; left on the server",
			   r->a->name, m->num, (unsigned long long)m->size,
			   session_cap_name(r->a));
		return false;
	}
	return true;
}

/*
 * Everything wanted goes to the engine at once (it sizes its pipeline by
 * the LISTed bytes); the choice is made here, before the storage thread
 * owns the state.
 */
static int
fetch_new(struct run *r)
{
	int ret = 0;

	r->d.md = r->md;
	r->want_nums = calloc(r->nmsgs + 1, sizeof(*r->want_nums));
	r->want_sizes = calloc(r->nmsgs + 1, sizeof(*r->want_sizes));
	r->want_idx = calloc(r->nmsgs + 1, sizeof(*r->want_idx));
	if (!r->want_nums || !r->want_sizes || !r->want_idx)
		ret = mp_err_oom(r->err);
	for (size_t i = 0; i < r->nmsgs && ret == 0; i++) {
		if (!already_fetched(r->st, &r->msgs[i], NULL))
			r->d.progress.total++;
		if (!wanted(r, &r->msgs[i]))
			continue;
		r->want_nums[r->nwant] = r->msgs[i].num;
		r->want_sizes[r->nwant] = r->msgs[i].size;
		r->want_idx[r->nwant++] = (uint32_t)i;
	}
	if (ret == 0 && r->nwant)
		ret = deliver_run(&r->d);
	session_progress(&r->d.progress, r->stats, true);
	free(r->want_nums);
	free(r->want_sizes);
	free(r->want_idx);
	r->want_nums = NULL;
	r->want_sizes = NULL;
	r->want_idx = NULL;
	r->nwant = 0;
	return ret;
}

/* Whether the server copy of m may go now (DESIGN: keep, keep_days). */
static bool
deletable(struct run *r, const struct pop3_msg *m)
{
	int64_t when;

	if (!m->uidl[0])
		return m->size <= session_msg_cap(r->a);    /* fetched in this session */
	if (!already_fetched(r->st, m, &when))
		return false;
	if (r->a->keep_days >= 0)
		return (int64_t)r->now - when >= r->a->keep_days * 86400;
	return !r->a->keep;
}

struct prune {
	const char **server;   /* sorted UIDLs on the server */
	size_t nserver;
	struct vec_str gone;
};

static int
prune_cb(void *ud, const char *key, int64_t when)
{
	struct prune *p = ud;
	const char *uidl = key_uidl(key);

	(void)when;
	/* No-UIDL keys served start-up recovery only: drop them (see msg_key). */
	if (uidl && bsearch(&uidl, p->server, p->nserver, sizeof(*p->server), vec_str_cmp))
		return 0;
	return vec_str_push(&p->gone, key);
}

/*
 * Forgets what the server no longer has (deleted here or by another
 * client), so the state stays the size of the mailbox.
 */
static int
prune_state(struct run *r)
{
	struct prune p = { 0 };
	int ret = 0;

	p.server = calloc(r->nmsgs + 1, sizeof(*p.server));
	if (!p.server)
		return mp_err_oom(r->err);
	for (size_t i = 0; i < r->nmsgs; i++)
		if (r->msgs[i].uidl[0])
			p.server[p.nserver++] = r->msgs[i].uidl;
	qsort(p.server, p.nserver, sizeof(*p.server), vec_str_cmp);
	ret = state_foreach(r->st, prune_cb, &p);
	if (ret < 0)
		ret = mp_err_oom(r->err);
	for (size_t i = 0; i < p.gone.n && ret == 0; i++)
		ret = state_remove(r->st, p.gone.v[i], r->err);
	if (ret == 0 && p.gone.n > 0) {
		r->d.changed = true;
		ret = state_sync(r->st, r->err);
	}
	vec_str_free(&p.gone);
	free(p.server);
	return ret;
}

/*
 * DELE what policy allows, then QUIT: the server deletes only on QUIT's +OK
 * (RFC 1939 section 6). The state forgets those messages only once a later
 * UIDL listing no longer has them (prune_state): a server that answers +OK
 * and keeps a message must not make the next run fetch it again.
 */
static int
delete_and_quit(struct run *r)
{
	unsigned *nums = calloc(r->nmsgs + 1, sizeof(*nums));
	size_t n = 0;
	int ret;

	if (!nums)
		return mp_err_oom(r->err);
	for (size_t i = 0; i < r->nmsgs; i++)
		if (deletable(r, &r->msgs[i]))
			nums[n++] = r->msgs[i].num;
	ret = n ? pop3_dele(r->pop, nums, n, r->err) : 0;
	if (ret == 0)
		deliver_crash_point();
	if (ret == 0)
		ret = pop3_quit(r->pop, r->err);
	if (ret == 0) {
		deliver_crash_point();
		r->stats->deleted = (unsigned)n;
	}
	free(nums);
	return ret;
}

/* Finish or discard what an interrupted run left (invariant 2). */
static int
open_local(struct run *r)
{
	int ret = deliver_open(r->a, r->a->maildir, &r->md, r->err);

	if (ret == 0)
		ret = deliver_recover(r->a, r->st, r->md, r->err);
	if (ret == 0)
		ret = deliver_forget_lost(r->a, r->st, r->err);
	return ret;
}

static int
open_session(struct run *r)
{
	const struct mp_account *a = r->a;
	struct session_server srv;
	struct conn *c = NULL;
	int ret = session_connect(a, &c, r->err);

	if (ret == 0)
		ret = pop3_open(c, a->tls == MP_TLS_STARTTLS, &r->pop, r->err);
	if (ret < 0)
		return ret;
	/* c now belongs to r->pop, and lives as long. */
	srv = (struct session_server){
		.c = c, .sasl = pop3_caps(r->pop)->sasl, .user_ok = pop3_caps(r->pop)->user,
		.plain = "USER", .greeting = pop3_greeting(r->pop), .auth = pop3_auth_cb,
		.engine = r->pop,
	};
	return session_login(a, &srv, r->err);
}

static int
run_session(struct run *r)
{
	int ret = open_session(r);

	if (ret < 0)
		return ret;
	ret = pop3_list(r->pop, &r->msgs, &r->nmsgs, r->err);
	if (ret < 0)
		return ret;
	r->stats->on_server = (unsigned)r->nmsgs;
	if (r->nmsgs > 0 && !r->msgs[0].uidl[0] && (r->a->keep || r->a->keep_days >= 0))
		return mp_err_set(r->err, -EPROTO, MP_EX_PROTOCOL,
				  "the server does not support UIDL, so keep = yes and keep_days "
				  "cannot be honoured (messages could not be told apart across runs)");
	ret = prune_state(r);
	if (ret < 0)
		return ret;
	ret = fetch_new(r);
	if (ret < 0)
		return ret;
	return delete_and_quit(r);
}

int
account_pop3_run(const struct mp_account *a, const struct account_opts *o, struct state *st,
		 struct account_stats *stats, struct mp_err *err)
{
	struct run r = { .a = a, .stats = stats, .err = err, .st = st };
	int ret;

	r.now = time(NULL);
	deliver_init(&r.d, a, o, st, stats, err, &pop3_ops, &r);
	ret = open_local(&r);
	if (ret == 0)
		ret = run_session(&r);
	ret = deliver_finish(&r.d, ret);
	pop3_free(r.pop);
	free(r.msgs);
	maildir_close(r.md);
	return ret;
}

struct top_ctx {
	struct hdr_scan hs;
};

static int
top_begin(void *ud, size_t idx)
{
	static const char *const names[] = { "Date", "From", "Subject" };
	struct top_ctx *t = ud;

	(void)idx;
	hdr_scan_init(&t->hs, names, 3);
	return 0;
}

static int
top_data(void *ud, const char *buf, size_t len)
{
	hdr_scan_feed(&((struct top_ctx *)ud)->hs, buf, len);
	return 0;
}

static int
top_end(void *ud)
{
	hdr_scan_finish(&((struct top_ctx *)ud)->hs);
	return 0;
}

int
account_pop3_preview(const struct mp_account *a, struct state *st, preview_cb cb, void *ud,
		     struct mp_err *err)
{
	struct account_stats stats = { 0 };
	struct run r = { .a = a, .stats = &stats, .err = err, .st = st };
	struct top_ctx *t = calloc(1, sizeof(*t));
	struct mp_sink sink = { top_begin, top_data, top_end, t };
	int ret = t ? open_session(&r) : -ENOMEM;

	if (ret == 0)
		ret = pop3_list(r.pop, &r.msgs, &r.nmsgs, err);
	for (size_t i = 0; i < r.nmsgs && ret == 0; i++) {
		struct preview_item it = { .size = r.msgs[i].size };

		if (already_fetched(st, &r.msgs[i], NULL))
			continue;
		/* TOP n 0: the header only (RFC 1939 section 7). */
		ret = pop3_top(r.pop, r.msgs[i].num, 0, &sink, err);
		if (ret < 0)
			break;
		it.date = t->hs.found[0] ? t->hs.values[0] : NULL;
		it.from = t->hs.found[1] ? t->hs.values[1] : NULL;
		it.subject = t->hs.found[2] ? t->hs.values[2] : NULL;
		ret = cb(ud, &it);
	}
	if (ret == 0)
		ret = pop3_quit(r.pop, err);
	pop3_free(r.pop);
	free(r.msgs);
	free(t);
	return ret;
}
