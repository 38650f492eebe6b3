/*
 * One run of an IMAP account. Policy only; the wire is imap.c's. Per
 * folder: SELECT (EXAMINE when nothing will change), compare UIDVALIDITY
 * and UIDNEXT with the state (nothing new and nothing skipped: no FETCH
 * at all, DESIGN invariant 6), list what is new, fetch it in batches with
 * the same durable sequence as POP3 (deliver.c), then
 * delete on the server what keep / keep_days allow, with UID STORE and
 * UID EXPUNGE.
 *
 * Nothing is passed over unseen (invariant 8): a message left on the
 * server for a reason (over max_size, flagged \Deleted, announced by the
 * listing but left out of the body FETCH) goes into the state's skipped
 * set, and every poll asks the server about those UIDs again (UID FETCH
 * set (UID FLAGS RFC822.SIZE): O(skipped), not a listing), fetches what
 * is now wanted, forgets what is gone, and reports the rest. One folder
 * that cannot be worked on (a name the server sent invalid, or one the
 * file system cannot hold) is reported and skipped; the others go on and
 * the run ends with the first such problem (note_partial()).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "mailpull/folder.h"
#include "mailpull/hdr.h"
#include "mailpull/imap.h"
#include "mailpull/log.h"
#include "mailpull/util.h"
#include "account_int.h"
#include "deliver.h"
#include "session.h"
#include "vec.h"

#define IDLE_MAX_S (28 * 60)   /* RFC 2177 section 3: re-issue IDLE at least every 29 minutes */

struct irun {
	const struct mp_account *a;
	struct account_stats *stats;
	struct state *st;
	struct imap *im;
	struct mp_err *err;
	time_t now;
	struct deliver d;

	/* The first problem that leaves the run partial; the other folders go on. */
	int partial;
	struct mp_err perr;

	/* the folder being worked on */
	const char *folder;
	char fname[160];              /* folder, sanitized for messages */
	bool bad_name;                /* the failure is the folder's name: skip it */
	struct maildir *md;
	struct imap_msginfo *msgs;
	size_t nmsgs;

	/* the message being received */
	struct hdr_scan hs;
	uint64_t cur_size;
	uint64_t cur_bytes;        /* decoded bytes of cur so far */
	uint32_t *want;            /* the UIDs fetch_new() asks for */
	size_t nwant;
};

static const char *const msgid_field[] = { "Message-ID" };

static int
body_too_big(struct irun *r, uint64_t size)
{
	uint32_t lo = r->nwant ? r->want[0] : 0, hi = r->nwant ? r->want[r->nwant - 1] : 0;

	if (lo == hi)
		return mp_err_set(r->err, -EFBIG, MP_EX_PROTOCOL,
				  "%s: message UID %" PRIu32 ": the server sends a body of %" PRIu64
				  " bytes, over %" PRIu64 " bytes (%s); cut off, nothing stored "
				  "or deleted", r->folder, lo, size, session_msg_cap(r->a),
				  session_cap_name(r->a));
	return mp_err_set(r->err, -EFBIG, MP_EX_PROTOCOL,
			  "%s: a message among UIDs %" PRIu32 "-%" PRIu32 ": the server sends a "
			  "body of %" PRIu64 " bytes, over %" PRIu64 " bytes (%s); cut off, "
			  "nothing stored or deleted", r->folder, lo, hi, size,
			  session_msg_cap(r->a), session_cap_name(r->a));
}

static int
isink_begin(void *ud, uint64_t size)
{
	struct irun *r = ud;

	/*
	 * The literal's length is the server's real declaration of the body
	 * (RFC822.SIZE is only a claim): over the cap, nothing of it is read.
	 * A stop signal comes first all the same.
	 */
	if (size > session_msg_cap(r->a)) {
		int ret = deliver_check_stop(&r->d);

		return ret < 0 ? ret : body_too_big(r, size);
	}
	hdr_scan_init(&r->hs, msgid_field, 1);
	r->cur_size = size;
	r->cur_bytes = 0;
	return deliver_begin(&r->d);
}

static int
isink_data(void *ud, const char *buf, size_t len)
{
	struct irun *r = ud;

	/* Never more than the literal announced; checked again all the same. */
	r->cur_bytes += len;
	if (r->cur_bytes > session_msg_cap(r->a))
		return body_too_big(r, r->cur_bytes);
	if (!r->hs.done)
		hdr_scan_feed(&r->hs, buf, len);
	return deliver_data(&r->d, buf, len);
}

static uint64_t
fingerprint_of(const char *msgid, size_t len, uint64_t size)
{
	size_t clen;
	const char *core = hdr_msgid_core(msgid, len, &clen);

	return clen ? state_fingerprint(core, clen, size) : 0;
}

/* Maildir info letters in ASCII order (Maildir spec: "2," then flags). */
static void
maildir_flags(unsigned f, char buf[8])
{
	size_t n = 0;

	if (f & IMAP_FLAG_DRAFT)
		buf[n++] = 'D';
	if (f & IMAP_FLAG_FLAGGED)
		buf[n++] = 'F';
	if (f & IMAP_FLAG_ANSWERED)
		buf[n++] = 'R';
	if (f & IMAP_FLAG_SEEN)
		buf[n++] = 'S';
	buf[n] = '\0';
}

static int
isink_end(void *ud, uint32_t uid, unsigned flags)
{
	struct irun *r = ud;
	struct deliver_msg m = { .uid = uid };

	hdr_scan_finish(&r->hs);
	m.fp = fingerprint_of(r->hs.values[0], r->hs.lens[0], r->cur_size);
	maildir_flags(flags, m.flags);
	return deliver_end(&r->d, &m);
}

static void
isink_abort(void *ud)
{
	deliver_abort(&((struct irun *)ud)->d);
}

static int
fetch_cb(void *ud)
{
	struct irun *r = ud;
	struct imap_fetch_sink sink = { isink_begin, isink_data, isink_end, isink_abort, r };

	return imap_fetch_bodies(r->im, r->want, r->nwant, r->a->mark_seen, &sink, r->err);
}

/* The flags first: the journal must never hold the name without them. */
static int
record_cb(void *ud, const struct deliver_msg *m, const char *name, struct mp_err *err)
{
	struct irun *r = ud;
	int ret = state_name_set_flags(r->st, name, m->flags[0] ? m->flags : NULL, err);

	if (ret == 0)
		ret = state_uid_add(r->st, r->folder, m->uid, m->fp, name, err);
	return ret;
}

static const struct deliver_ops imap_ops = { fetch_cb, record_cb };

/* The first problem that leaves the run partial is kept in r->perr; r->err is cleared. */
static void
note_partial(struct irun *r)
{
	if (r->partial == 0) {
		r->perr = *r->err;
		r->partial = r->err->code < 0 ? r->err->code : -EIO;
	}
	mp_err_clear(r->err);
}

enum pick {
	PICK_FETCH,         /* wanted and not here yet */
	PICK_HAVE,          /* fetched already */
	PICK_PASS,          /* not wanted by configuration (only_unseen) */
	PICK_DELETED,       /* skipped: flagged \Deleted */
	PICK_TOO_LARGE,     /* skipped: over max_size */
	PICK_MAX
};

static enum pick
pick(const struct irun *r, const struct imap_msginfo *m)
{
	if (state_uid_has(r->st, r->folder, m->uid))
		return PICK_HAVE;
	/* Marked for deletion by another client: on its way out, not ours to take (yet). */
	if (m->flags & IMAP_FLAG_DELETED)
		return PICK_DELETED;
	if (r->a->only_unseen && (m->flags & IMAP_FLAG_SEEN))
		return PICK_PASS;
	if (m->size > session_msg_cap(r->a))
		return PICK_TOO_LARGE;
	return PICK_FETCH;
}

/* Appends " uid" to a list of UIDs for a message, "..." once it is full. */
static void
uid_list_put(char *buf, size_t size, uint32_t uid)
{
	size_t len = strlen(buf);

	if (len + 16 < size)
		snprintf(buf + len, size - len, "%s%u", len ? ", " : "", uid);
	else if (len + 4 < size && strcmp(buf + len - 3, "...") != 0)
		memcpy(buf + len, "...", 4);
}

/*
 * Every wanted UID goes to the engine at once (it sizes its pipeline);
 * the choice is made here, before the storage thread owns the state.
 */
static int
fetch_new(struct irun *r)
{
	int ret = 0;

	r->d.md = r->md;
	r->want = calloc(r->nmsgs + 1, sizeof(*r->want));
	if (!r->want)
		ret = mp_err_oom(r->err);
	for (size_t i = 0; i < r->nmsgs && ret == 0; i++)
		if (pick(r, &r->msgs[i]) == PICK_FETCH)
			r->want[r->nwant++] = r->msgs[i].uid;
	if (ret == 0 && r->nwant)
		ret = deliver_run(&r->d);
	free(r->want);
	r->want = NULL;
	r->nwant = 0;
	return ret;
}

/* What a pass does with a message's UID in the skipped set, by pick(). */
enum skip_op { SKIP_KEEP, SKIP_ADD, SKIP_REMOVE };

/* The messages a pass reports: how many, and their UIDs (uid_list_put()). */
struct uid_note {
	unsigned n;
	char list[200];
};

/*
 * Applies op[pick()] to each listed message's UID in the skipped set, and
 * notes the messages whose pick() is noted. A message over max_size is
 * reported as it is added (every run: the set is looked at again each
 * time).
 */
static int
apply_skips(struct irun *r, const enum skip_op op[PICK_MAX], enum pick noted,
	    struct uid_note *note)
{
	int ret = 0;

	for (size_t i = 0; i < r->nmsgs && ret == 0; i++) {
		const struct imap_msginfo *m = &r->msgs[i];
		enum pick p = pick(r, m);

		if (p == noted) {
			note->n++;
			uid_list_put(note->list, sizeof(note->list), m->uid);
		}
		if (p == PICK_TOO_LARGE && op[p] == SKIP_ADD) {
			r->stats->too_large++;
			log_notice("%s: %s: message UID %u (%llu bytes) is over %s; left on the "
				   "server", r->a->name, r->fname, m->uid,
				   (unsigned long long)m->size, session_cap_name(r->a));
		}
		if (op[p] == SKIP_ADD)
			ret = state_skip_add(r->st, r->folder, m->uid, r->err);
		else if (op[p] == SKIP_REMOVE)
			ret = state_skip_remove(r->st, r->folder, m->uid, r->err);
	}
	return ret;
}

/*
 * Before the fetch: records what this pass leaves on the server for a
 * reason and reports it, and forgets skipped UIDs that are fetched now or
 * no longer wanted at all. What is to be fetched is left to note_missing().
 */
static int
record_skips(struct irun *r)
{
	static const enum skip_op op[PICK_MAX] = {
		[PICK_FETCH] = SKIP_KEEP, [PICK_HAVE] = SKIP_REMOVE, [PICK_PASS] = SKIP_REMOVE,
		[PICK_DELETED] = SKIP_ADD, [PICK_TOO_LARGE] = SKIP_ADD,
	};
	struct uid_note deleted = { 0 };
	int ret = apply_skips(r, op, PICK_DELETED, &deleted);

	if (deleted.n)
		log_notice("%s: %s: %u message(s) flagged \\Deleted by another client left on the "
			   "server (UID %s)", r->a->name, r->fname, deleted.n, deleted.list);
	return ret;
}

/*
 * After the fetch: a wanted message that did not arrive although the
 * FETCH ended in OK was left out by the server. It is recorded as skipped,
 * so the next run fetches it; this run reports it and ends as temporary.
 */
static int
note_missing(struct irun *r)
{
	static const enum skip_op op[PICK_MAX] = {
		[PICK_FETCH] = SKIP_ADD, [PICK_HAVE] = SKIP_REMOVE,
	};
	struct uid_note missing = { 0 };
	int ret = apply_skips(r, op, PICK_FETCH, &missing);
	unsigned n = missing.n;

	if (ret == 0)
		ret = state_sync(r->st, r->err);
	if (ret < 0 || n == 0)
		return ret;
	r->d.changed = true;
	log_warn("%s: %s: the server listed %u message(s) but did not send them (UID %s); "
		 "the next run fetches them", r->a->name, r->fname, n, missing.list);
	mp_err_set(r->err, -EAGAIN, MP_EX_TEMPFAIL, "folder \"%s\": %u message(s) not sent by "
		   "the server, left for the next run", r->fname, n);
	note_partial(r);
	return 0;
}

/* FETCH responses without a valid UID: those messages cannot be fetched (protocol error). */
static bool
note_bad_uids(struct irun *r)
{
	unsigned n = imap_take_bad_uids(r->im);

	if (n == 0)
		return false;
	log_warn("%s: %s: the server sent %u FETCH response(s) without a valid UID; those "
		 "messages were skipped", r->a->name, r->fname, n);
	mp_err_set(r->err, -EPROTO, MP_EX_PROTOCOL, "folder \"%s\": %u message(s) without a "
		   "valid UID (server error)", r->fname, n);
	note_partial(r);
	return true;
}

static int
cmp_msginfo_uid(const void *a, const void *b)
{
	uint32_t x = ((const struct imap_msginfo *)a)->uid, y = ((const struct imap_msginfo *)b)->uid;

	return x < y ? -1 : x > y;
}

static int
uidvec_cb(void *ud, uint32_t uid)
{
	return vec_u32_push(ud, uid);
}

/*
 * Asks the server again about the folder's skipped UIDs and adds what it
 * still has to r->msgs (kept sorted, one entry per UID); with forget,
 * forgets those it no longer has (expunged).
 */
static int
recheck_skipped(struct irun *r, bool forget)
{
	struct vec_u32 sk = { 0 };
	struct imap_msginfo *info = NULL, *all;
	size_t ninfo = 0, k = 0, j = 0;
	int ret = state_skip_foreach(r->st, r->folder, uidvec_cb, &sk);

	if (ret < 0) {
		free(sk.v);
		return mp_err_oom(r->err);
	}
	if (sk.n == 0)
		return 0;
	ret = imap_fetch_info(r->im, sk.v, sk.n, &info, &ninfo, r->err);
	for (size_t i = 0; i < sk.n && ret == 0 && forget; i++) {
		while (j < ninfo && info[j].uid < sk.v[i])
			j++;
		if (j == ninfo || info[j].uid != sk.v[i])
			ret = state_skip_remove(r->st, r->folder, sk.v[i], r->err);
	}
	free(sk.v);
	all = ret == 0 ? realloc(r->msgs, (r->nmsgs + ninfo + 1) * sizeof(*all)) : NULL;
	if (ret == 0 && !all)
		ret = mp_err_oom(r->err);
	if (ret < 0) {
		free(info);
		return ret;
	}
	if (ninfo)
		memcpy(all + r->nmsgs, info, ninfo * sizeof(*info));
	free(info);
	r->msgs = all;
	r->nmsgs += ninfo;
	qsort(r->msgs, r->nmsgs, sizeof(*r->msgs), cmp_msginfo_uid);
	for (size_t i = 0; i < r->nmsgs; i++)
		if (k == 0 || r->msgs[k - 1].uid != r->msgs[i].uid)
			r->msgs[k++] = r->msgs[i];
	r->nmsgs = k;
	return 0;
}

/*
 * After a UIDVALIDITY change the old UIDs mean nothing: re-identify the
 * folder's messages by fingerprint (Message-ID and size, from ENVELOPE,
 * no body) and record the matches as fetched, so only the rest is fetched.
 */
static int
revalidate(struct irun *r)
{
	struct imap_envelope *env = NULL;
	uint32_t *uids = calloc(r->nmsgs + 1, sizeof(*uids));
	size_t nenv = 0, matched = 0;
	int ret;

	if (!uids)
		return mp_err_oom(r->err);
	for (size_t i = 0; i < r->nmsgs; i++)
		uids[i] = r->msgs[i].uid;
	ret = r->nmsgs ? imap_fetch_envelopes(r->im, uids, r->nmsgs, &env, &nenv, r->err) : 0;
	for (size_t i = 0; i < nenv && ret == 0; i++) {
		uint64_t fp;

		if (!env[i].message_id)
			continue;
		fp = fingerprint_of(env[i].message_id, strlen(env[i].message_id), env[i].size);
		if (fp && state_fp_has(r->st, r->folder, fp)) {
			ret = state_uid_add(r->st, r->folder, env[i].uid, fp, NULL, r->err);
			matched++;
		}
	}
	if (ret == 0)
		ret = state_sync(r->st, r->err);
	if (ret == 0) {
		r->d.changed = true;
		log_warn("%s: %s: UIDVALIDITY changed on the server; %zu of %zu messages "
			 "recognised as already fetched, the rest will be fetched", r->a->name,
			 r->fname, matched, r->nmsgs);
	}
	imap_envelopes_free(env, nenv);
	free(uids);
	return ret;
}

/* The fetched UIDs the policy lets go now. */
static int
deletable(struct irun *r, struct vec_u32 *out)
{
	struct vec_u32 all = { 0 };
	uint32_t *old = NULL;
	size_t nold = 0;
	int ret;

	if (r->a->keep && r->a->keep_days < 0)
		return 0;
	ret = state_uid_foreach(r->st, r->folder, uidvec_cb, &all);
	if (ret < 0 || all.n == 0) {
		free(all.v);
		return ret < 0 ? mp_err_oom(r->err) : 0;
	}
	if (r->a->keep_days < 0) {
		*out = all;
		return 0;
	}
	/* keep_days counts from INTERNALDATE: the server's arrival time. */
	{
		static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
						   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
		time_t t = r->now - (time_t)r->a->keep_days * 86400;
		struct tm tm;
		char crit[40];

		gmtime_r(&t, &tm);
		snprintf(crit, sizeof(crit), "BEFORE %d-%s-%d", tm.tm_mday, mon[tm.tm_mon],
			 tm.tm_year + 1900);
		ret = imap_search(r->im, crit, all.v[0], all.v[all.n - 1], &old, &nold, r->err);
	}
	for (size_t i = 0; i < nold && ret == 0; i++)
		if (state_uid_has(r->st, r->folder, old[i]))
			ret = vec_u32_push(out, old[i]);
	free(old);
	free(all.v);
	return ret;
}

static int
delete_fetched(struct irun *r)
{
	struct vec_u32 del = { 0 };
	int ret = deletable(r, &del);

	if (ret < 0 || del.n == 0)
		goto out;
	ret = imap_store_flag(r->im, del.v, del.n, false, r->err);
	if (ret < 0)
		goto out;
	deliver_crash_point();
	if (imap_caps(r->im)->uidplus) {
		ret = imap_uid_expunge(r->im, del.v, del.n, r->err);
	} else if (r->a->expunge) {
		ret = imap_expunge(r->im, r->err);
	} else {
		/* A plain EXPUNGE would also remove what other clients marked \Deleted. */
		log_warn("%s: %s: the server lacks UIDPLUS: %zu message(s) marked \\Deleted but "
			 "not expunged (set expunge = yes to allow a plain EXPUNGE)",
			 r->a->name, r->fname, del.n);
		goto out;
	}
	if (ret < 0)
		goto out;
	deliver_crash_point();
	for (size_t i = 0; i < del.n && ret == 0; i++)
		ret = state_uid_remove(r->st, r->folder, del.v[i], r->err);
	if (ret == 0)
		ret = state_sync(r->st, r->err);
	r->d.changed = true;
	r->stats->deleted += (unsigned)del.n;
out:
	free(del.v);
	return ret;
}

/*
 * A name too long for the file system is a local limit (74); any other
 * name that cannot be mapped came invalid from the server (76). Either
 * way only this folder is skipped (r->bad_name).
 */
static int
open_folder_maildir(struct irun *r, const char *name, char delim)
{
	char *dir = NULL, *path;
	int ret = folder_to_maildir(name, delim, &dir);

	if (ret == -ENOMEM)
		return mp_err_oom(r->err);
	r->bad_name = ret < 0;
	if (ret == -E2BIG)
		return mp_err_set(r->err, -ENAMETOOLONG, MP_EX_IOERR, "folder \"%s\" skipped: its "
				  "Maildir folder name would be longer than the file system allows",
				  r->fname);
	if (ret < 0)
		return mp_err_set(r->err, ret, MP_EX_PROTOCOL,
				  "folder \"%s\" skipped: it cannot be mapped to a Maildir folder",
				  r->fname);
	if (asprintf(&path, "%s%s%s", r->a->maildir, *dir ? "/" : "", dir) < 0) {
		free(dir);
		return mp_err_oom(r->err);
	}
	free(dir);
	ret = deliver_open(r->a, path, &r->md, r->err);
	free(path);
	r->bad_name = ret == -ENAMETOOLONG;
	return ret;
}

/* Whether the folder needs any work beyond SELECT (invariant 6). */
static bool
folder_unchanged(struct irun *r, const struct imap_folder *f, uint32_t uidnext)
{
	if (!uidnext || f->uidnext != uidnext)
		return false;
	if (r->a->keep_days >= 0)
		return false;
	return r->a->keep || state_uid_count(r->st, r->folder) == 0;
}

/*
 * Works on one folder. *ret_gone tells a folder that vanished since LIST
 * (SELECT refused) from any other failure, local ones included.
 */
static int
do_folder(struct irun *r, const struct imap_mailbox *mb, bool *ret_gone)
{
	struct imap_folder f;
	uint32_t uv = 0, uidnext = 0;
	bool fresh = false, read_only, unchanged, bad_uids;
	int ret;

	r->folder = mb->name;
	util_sanitize(r->fname, sizeof(r->fname), mb->name, strlen(mb->name));
	read_only = r->a->keep && r->a->keep_days < 0 && !r->a->mark_seen;
	ret = imap_select(r->im, mb->name, read_only, &f, r->err);
	*ret_gone = ret == -ENOENT;
	if (ret < 0)
		return ret;
	if (state_folder_get(r->st, mb->name, &uv, &uidnext) < 0 || uv != f.uidvalidity) {
		fresh = uv != 0;      /* known folder, new UIDVALIDITY */
		ret = state_folder_reset(r->st, mb->name, f.uidvalidity, r->err);
		if (ret == 0)
			ret = state_sync(r->st, r->err);
		if (ret < 0)
			return ret;
		r->d.changed = true;
		uidnext = 0;
	}
	r->stats->on_server += f.exists;
	unchanged = folder_unchanged(r, &f, uidnext);
	if (unchanged && state_skip_count(r->st, r->folder) == 0)
		return 0;
	ret = open_folder_maildir(r, mb->name, mb->delim);
	if (ret == 0)
		ret = deliver_recover(r->a, r->st, r->md, r->err);
	if (ret == 0 && !unchanged)
		ret = imap_list_messages(r->im, fresh || !uidnext ? 1 : uidnext, &r->msgs,
					 &r->nmsgs, r->err);
	/* A message the listing could not name holds UIDNEXT back: every run reports it. */
	bad_uids = ret == 0 && note_bad_uids(r);
	if (ret == 0 && fresh)
		ret = revalidate(r);
	if (ret == 0)
		ret = recheck_skipped(r, true);
	if (ret == 0)
		ret = record_skips(r);
	if (ret == 0) {
		for (size_t i = 0; i < r->nmsgs; i++)
			if (pick(r, &r->msgs[i]) == PICK_FETCH)
				r->d.progress.total++;
		ret = fetch_new(r);
	}
	if (ret == 0) {
		note_bad_uids(r);
		ret = note_missing(r);
	}
	/* DESIGN: a UIDVALIDITY change deletes nothing; the next run may. */
	if (ret == 0 && !fresh)
		ret = delete_fetched(r);
	if (ret == 0 && f.uidnext && !bad_uids) {
		ret = state_folder_set_uidnext(r->st, mb->name, f.uidnext, r->err);
		if (ret == 0)
			ret = state_sync(r->st, r->err);
		r->d.changed = true;
	}
	free(r->msgs);
	r->msgs = NULL;
	r->nmsgs = 0;
	maildir_close(r->md);
	r->md = NULL;
	return ret;
}

static bool
matches_any(char *const *pats, size_t n, const char *name, char delim)
{
	for (size_t i = 0; i < n; i++)
		if (folder_match(pats[i], name, delim) == 1)
			return true;
	return false;
}

static int
cmp_name_at(const void *a, const void *b, void *ud)
{
	const struct imap_mailbox *mb = ud;
	const size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int c = strcmp(mb[x].name, mb[y].name);

	return c ? c : x < y ? -1 : x > y;
}

/*
 * A folder both the patterns and a namespace reach comes twice from the
 * LISTs: keeps the first of each name, in order, so no folder is worked on
 * twice in a run. *n becomes the new count. -ENOMEM.
 */
static int
dedup_folders(struct imap_mailbox *mb, size_t *n)
{
	size_t *ix, k = 0;

	if (*n < 2)
		return 0;
	ix = calloc(*n, sizeof(*ix));
	if (!ix)
		return -ENOMEM;
	for (size_t i = 0; i < *n; i++)
		ix[i] = i;
	/* Ties keep LIST order, so the first of equal names comes first. */
	qsort_r(ix, *n, sizeof(*ix), cmp_name_at, mb);
	for (size_t i = *n - 1; i > 0; i--) {
		if (strcmp(mb[ix[i]].name, mb[ix[i - 1]].name) == 0) {
			free(mb[ix[i]].name);
			mb[ix[i]].name = NULL;
		}
	}
	free(ix);
	for (size_t i = 0; i < *n; i++)
		if (mb[i].name)
			mb[k++] = mb[i];
	*n = k;
	return 0;
}

/*
 * The folders to work on: LIST "" "*" (and each other-users and shared
 * namespace when the account asks), filtered by folders and exclude. A
 * folder named without wildcards that does not exist is an error for
 * that folder only.
 */
static int
expand_folders(struct irun *r, struct imap_mailbox **ret_mb, size_t *ret_n)
{
	struct imap_mailbox *all = NULL;
	size_t nall = 0, keep = 0;
	int ret = imap_list(r->im, "*", &all, &nall, r->err);

	if (ret == 0 && r->a->namespaces) {
		struct imap_namespace *ns = NULL;
		size_t nns = 0;

		ret = imap_namespaces(r->im, &ns, &nns, r->err);
		for (size_t i = 0; i < nns && ret == 0; i++) {
			struct imap_mailbox *more = NULL, *grown;
			size_t nmore = 0;
			char *pat;

			if (asprintf(&pat, "%s*", ns[i].prefix) < 0) {
				ret = -ENOMEM;
				break;
			}
			ret = imap_list(r->im, pat, &more, &nmore, r->err);
			free(pat);
			grown = ret == 0 ? realloc(all, (nall + nmore + 1) * sizeof(*all)) : NULL;
			if (ret == 0 && !grown)
				ret = -ENOMEM;
			if (ret == 0) {
				all = grown;
				memcpy(all + nall, more, nmore * sizeof(*more));
				nall += nmore;
				free(more);
			} else {
				imap_mailboxes_free(more, nmore);
			}
		}
		imap_namespaces_free(ns, nns);
	}
	if (ret < 0) {
		imap_mailboxes_free(all, nall);
		return ret == -ENOMEM ? mp_err_oom(r->err) : ret;
	}
	for (size_t i = 0; i < nall; i++) {
		struct imap_mailbox *m = &all[i];
		bool take = !m->noselect && matches_any(r->a->folders, r->a->nfolders, m->name, m->delim)
			    && !matches_any(r->a->exclude, r->a->nexclude, m->name, m->delim);

		if (take) {
			struct imap_mailbox t = *m;

			*m = all[keep];
			all[keep++] = t;
		}
	}
	for (size_t i = keep; i < nall; i++) {
		free(all[i].name);
		all[i].name = NULL;
	}
	if (dedup_folders(all, &keep) < 0) {
		imap_mailboxes_free(all, keep);
		return mp_err_oom(r->err);
	}
	*ret_mb = all;
	*ret_n = keep;
	return 0;
}

static bool
has_wildcard(const char *p)
{
	return strpbrk(p, "*%") != NULL;
}

/* Configured folders without wildcards that LIST did not return. */
static int
check_missing(struct irun *r, const struct imap_mailbox *mb, size_t n)
{
	for (size_t i = 0; i < r->a->nfolders; i++) {
		const char *want = r->a->folders[i];
		bool found = false;

		if (has_wildcard(want))
			continue;
		for (size_t j = 0; j < n && !found; j++)
			found = folder_match(want, mb[j].name, mb[j].delim) == 1;
		if (!found)
			return mp_err_set(r->err, -ENOENT, MP_EX_CONFIG,
					  "folder \"%s\" does not exist on the server (or is excluded)",
					  want);
	}
	return 0;
}

/* A polite end of the session, when there is one; a failure changes nothing. */
static void
logout(struct irun *r)
{
	struct mp_err lerr = { 0 };

	if (r->im && imap_logout(r->im, &lerr) < 0)
		log_debug("%s: LOGOUT: %s", r->a->name, lerr.msg);
}

static int
open_session(struct irun *r)
{
	return session_imap_open(r->a, &r->im, r->err);
}

static int
recover_one(void *ud, const char *path)
{
	struct irun *r = ud;
	struct maildir *md = NULL;
	int ret = deliver_open(r->a, path, &md, r->err);

	if (ret == 0)
		ret = deliver_recover(r->a, r->st, md, r->err);
	maildir_close(md);
	return ret;
}

/* Finishes what an interrupted run left in the root and every subfolder. */
static int
recover_all(struct irun *r)
{
	return maildir_tree_foreach(r->a->maildir, recover_one, r, r->err);
}

/*
 * A folder whose name is not valid modified UTF-7 (or UTF-8, once UTF8=ACCEPT
 * is enabled) cannot be selected: reported, skipped.
 */
static void
skip_invalid_name(struct irun *r, const struct imap_mailbox *mb)
{
	char name[160];

	util_sanitize(name, sizeof(name), mb->name, strlen(mb->name));
	log_warn("%s: folder \"%s\" skipped: its name from the server is not valid modified "
		 "UTF-7 (RFC 3501 section 5.1.3), nor UTF-8 where UTF8=ACCEPT is enabled",
		 r->a->name, name);
	mp_err_set(r->err, -EBADMSG, MP_EX_PROTOCOL, "folder \"%s\" skipped: invalid name from "
		   "the server", name);
	note_partial(r);
}

static int
run_folders(struct irun *r)
{
	struct imap_mailbox *mb = NULL;
	size_t n = 0;
	int ret = expand_folders(r, &mb, &n);

	if (ret == 0 && check_missing(r, mb, n) < 0)
		note_partial(r);
	for (size_t i = 0; i < n && ret == 0; i++) {
		bool gone = false;

		if (mb[i].invalid) {
			skip_invalid_name(r, &mb[i]);
			continue;
		}
		r->bad_name = false;
		ret = do_folder(r, &mb[i], &gone);
		if (ret == -ENOENT && gone) {
			/* Vanished between LIST and SELECT: that folder only. */
			log_warn("%s: %s: %s", r->a->name, r->fname, r->err->msg);
			mp_err_clear(r->err);
			ret = 0;
		} else if (ret < 0 && r->bad_name) {
			/* Its name cannot be a Maildir folder here: that folder only. */
			log_warn("%s: %s", r->a->name, r->err->msg);
			note_partial(r);
			ret = 0;
		} else if (ret == -EREMOTE) {
			/* On another server (a referral): the other folders go on, the run fails. */
			char msg[sizeof(r->err->msg)];

			snprintf(msg, sizeof(msg), "folder \"%s\": %.*s", r->fname,
				 (int)(sizeof(msg) - sizeof(r->fname) - 16), r->err->msg);
			memcpy(r->err->msg, msg, sizeof(msg));
			note_partial(r);
			ret = 0;
		}
	}
	imap_mailboxes_free(mb, n);
	if (ret == 0 && r->partial < 0) {
		/* The other folders were worked on: the next run comes at the interval. */
		*r->err = r->perr;
		r->err->retry = MP_RETRY_INTERVAL;
		ret = r->partial;
	}
	return ret;
}

int
account_imap_run(const struct mp_account *a, const struct account_opts *o, struct state *st,
		 struct account_stats *stats, struct mp_err *err)
{
	struct irun r = { .a = a, .stats = stats, .st = st, .err = err };
	int ret;

	r.now = time(NULL);
	deliver_init(&r.d, a, o, st, stats, err, &imap_ops, &r);
	ret = recover_all(&r);
	if (ret == 0)
		ret = deliver_forget_lost(a, st, err);
	if (ret == 0)
		ret = open_session(&r);
	if (ret == 0)
		ret = run_folders(&r);
	session_progress(&r.d.progress, stats, true);
	if (ret == 0 || err->ex == MP_EX_CONFIG)
		logout(&r);
	ret = deliver_finish(&r.d, ret);
	imap_free(r.im);
	maildir_close(r.md);
	free(r.msgs);
	return ret;
}

static int
preview_folder(struct irun *r, const struct imap_mailbox *mb, preview_cb cb, void *ud)
{
	struct imap_folder f;
	struct imap_envelope *env = NULL;
	uint32_t uv = 0, uidnext = 0, *uids = NULL;
	size_t nenv = 0, n = 0, skipped;
	int ret = 0;

	r->folder = mb->name;
	util_sanitize(r->fname, sizeof(r->fname), mb->name, strlen(mb->name));
	ret = imap_select(r->im, mb->name, true, &f, r->err);
	if (ret < 0)
		return ret;
	if (state_folder_get(r->st, mb->name, &uv, &uidnext) < 0 || uv != f.uidvalidity)
		uidnext = 0;
	/* Skipped messages are still waiting: listed too (after a new UIDVALIDITY, all are). */
	skipped = uidnext ? state_skip_count(r->st, mb->name) : 0;
	if (uidnext && uidnext == f.uidnext && skipped == 0)
		return 0;
	if (!uidnext || uidnext != f.uidnext)
		ret = imap_list_messages(r->im, uidnext ? uidnext : 1, &r->msgs, &r->nmsgs,
					 r->err);
	/* The state is not changed by a preview: nothing is recorded or forgotten. */
	if (ret == 0 && skipped)
		ret = recheck_skipped(r, false);
	if (ret == 0 && !(uids = calloc(r->nmsgs + 1, sizeof(*uids))))
		ret = mp_err_oom(r->err);
	for (size_t i = 0; i < r->nmsgs && ret == 0; i++) {
		const struct imap_msginfo *m = &r->msgs[i];

		if (!state_uid_has(r->st, mb->name, m->uid) && !(m->flags & IMAP_FLAG_DELETED) &&
		    !(r->a->only_unseen && (m->flags & IMAP_FLAG_SEEN)))
			uids[n++] = m->uid;
	}
	if (ret == 0 && n > 0)
		ret = imap_fetch_envelopes(r->im, uids, n, &env, &nenv, r->err);
	for (size_t i = 0; i < nenv && ret == 0; i++) {
		struct preview_item it = {
			.folder = mb->name, .date = env[i].date, .from = env[i].from,
			.subject = env[i].subject, .size = env[i].size,
		};

		ret = cb(ud, &it);
	}
	imap_envelopes_free(env, nenv);
	free(uids);
	free(r->msgs);
	r->msgs = NULL;
	r->nmsgs = 0;
	return ret;
}

int
account_imap_preview(const struct mp_account *a, struct state *st, const char *folder,
		     preview_cb cb, void *ud, struct mp_err *err)
{
	struct account_stats stats = { 0 };
	struct irun r = { .a = a, .stats = &stats, .st = st, .err = err };
	struct imap_mailbox *mb = NULL;
	size_t n = 0;
	bool seen = false;
	int ret = open_session(&r);

	if (ret == 0)
		ret = expand_folders(&r, &mb, &n);
	for (size_t i = 0; i < n && ret == 0; i++) {
		if (folder && folder_match(folder, mb[i].name, mb[i].delim) != 1)
			continue;
		seen = true;
		if (mb[i].invalid) {
			skip_invalid_name(&r, &mb[i]);
			continue;
		}
		ret = preview_folder(&r, &mb[i], cb, ud);
	}
	if (ret == 0 && folder && !seen)
		ret = mp_err_set(err, -ENOENT, MP_EX_USAGE,
				 "folder \"%s\" is not one of the account's folders on the server",
				 folder);
	if (ret == 0)
		logout(&r);
	imap_mailboxes_free(mb, n);
	imap_free(r.im);
	return ret;
}

/*
 * The folder IDLE watches: the first configured one that exists, INBOX
 * when a wildcard pattern matches it. NULL when none does.
 */
static const struct imap_mailbox *
idle_folder(const struct mp_account *a, const struct imap_mailbox *mb, size_t n)
{
	for (size_t i = 0; i < a->nfolders; i++) {
		const struct imap_mailbox *first = NULL;

		for (size_t j = 0; j < n; j++) {
			if (mb[j].invalid || folder_match(a->folders[i], mb[j].name, mb[j].delim) != 1)
				continue;
			if (strcmp(mb[j].name, "INBOX") == 0)
				return &mb[j];
			if (!first)
				first = &mb[j];
		}
		if (first)
			return first;
	}
	return NULL;
}

/*
 * Whether the watched folder changed since the last complete run: mail
 * that came after that run's SELECT and before our EXAMINE is already in
 * the EXISTS count IDLE starts from, and would wait for the next interval.
 * The lock is only tried: a run in progress (or any doubt) means no.
 */
static bool
changed_since_run(const char *state_dir, const struct mp_account *a, const char *folder,
		  const struct imap_folder *f)
{
	struct mp_err serr = { 0 };
	struct state *st = NULL;
	uint32_t uv = 0, uidnext = 0;
	bool changed;

	if (!f->uidnext || state_open(state_dir, a->name, false, &st, &serr) < 0)
		return false;
	changed = state_folder_get(st, folder, &uv, &uidnext) < 0 || uv != f->uidvalidity ||
		  uidnext != f->uidnext;
	state_close(st);
	return changed;
}

int
account_imap_idle(const char *state_dir, const struct mp_account *a, unsigned max_s,
		  volatile sig_atomic_t *stop, struct mp_err *err)
{
	struct account_stats stats = { 0 };
	struct irun r = { .a = a, .stats = &stats, .err = err };
	struct imap_mailbox *mb = NULL;
	const struct imap_mailbox *watch = NULL;
	struct imap_folder f;
	size_t n = 0;
	int ret = open_session(&r);

	/* Capabilities may change with login (RFC 3501 7.2.1): checked after it. */
	if (ret == 0 && !imap_caps(r.im)->idle)
		ret = mp_err_set(err, -ENOTSUP, MP_EX_PROTOCOL,
				 "server does not offer IDLE (RFC 2177)");
	if (ret == 0)
		ret = expand_folders(&r, &mb, &n);
	if (ret == 0 && !(watch = idle_folder(a, mb, n)))
		ret = mp_err_set(err, -ENOENT, MP_EX_CONFIG,
				 "none of the account's folders exists on the server");
	/* EXAMINE: waiting must not change \Recent or anything else (RFC 3501 6.3.2). */
	if (ret == 0)
		ret = imap_select(r.im, watch->name, true, &f, err);
	if (ret == 0 && changed_since_run(state_dir, a, watch->name, &f))
		ret = 1;
	else if (ret == 0)
		ret = imap_idle(r.im, (max_s < IDLE_MAX_S ? max_s : IDLE_MAX_S) * 1000u, stop, err);
	if (ret >= 0 || ret == -ENOTSUP)
		logout(&r);
	imap_mailboxes_free(mb, n);
	imap_free(r.im);
	return ret;
}
