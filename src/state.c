/*
 * Per-account state: a snapshot plus an append-only journal, both plain
 * text with one record per line, and an in-memory hash set of the keys.
 *
 *   NAME.state    "mailpull-state 1", then "<when> <key>" lines
 *   NAME.journal  "mailpull-journal 1", then "+ <when> <key> <maildir_name
 *                 or ->" and "- <key>" lines
 *
 * The journal's version line is written when the journal is created (and
 * again when compaction empties it), durable before any record follows.
 * A journal without one was written before it existed and is read as
 * version 1; one with a higher version than JOURNAL_VERSION is refused,
 * since its records could mean something this version does not know.
 *
 * IMAP folders add records that start with an upper-case tag, which no key
 * record can (those start with a digit, '-', '+'):
 *
 *   NAME.state    "F <folder> <uidvalidity> <uidnext> <ranges or ->"
 *                 "R <folder> <ranges>"        more ranges, after its F line
 *                 "P <folder> <fp>[,<fp>...]"  fingerprints, after its F line
 *                 "S <folder> <ranges>"        skipped UIDs, after its F line
 *   NAME.journal  "V <folder> <uidvalidity>"   start or restart the folder
 *                 "N <folder> <uidnext>"
 *                 "U <folder> <uid> <fp or -> <maildir_name or ->"
 *                 "E <folder> <uid>"           expunged
 *                 "X <folder> <fp>"            fingerprint forgotten (its
 *                                              message never arrived here)
 *                 "D <folder>"                 folder gone
 *                 "S <folder> <uid>"           skipped: to look at again
 *                 "T <folder> <uid>"           no longer skipped
 *                 "G <maildir_name> <flags>"   the Maildir info letters
 *                                              (as "FS") the name is to be
 *                                              published with, written
 *                                              before the U line recording
 *                                              the name, so recovery
 *                                              publishes it into cur/ with
 *                                              them as a normal run does
 *
 * A name with no G line (every file written before G existed, POP3
 * messages, IMAP messages without flags) is published into new/.
 * Ranges are "1-500,502,510-900" in increasing order; fp is 16 hex digits
 * and never 0. Long range and fingerprint lists are cut into lines of a few
 * kilobytes so no line grows with the mailbox.
 *
 * Keys, names and folders are escaped (%XX for control bytes, space, '%',
 * DEL and bytes >= 0x80) so a record never contains a space or newline of
 * its own and any string but one holding NUL round-trips. Replaying a
 * journal over a snapshot that already contains it yields the same state,
 * which makes a crash between the snapshot rename and the journal
 * truncation harmless: for folders, everything after a folder's last V or D
 * line is replayed onto the same starting point, UID adds and expunges are
 * last-writer-wins per UID, and so are fingerprints (added by U, removed by
 * X, all dropped by D) and skipped UIDs (added by S, removed by T, all
 * dropped by V and D). State files written before S and T existed simply
 * have no skipped UIDs.
 *
 * POP3 keys may carry the size the server LISTed for the message when it
 * was fetched, so that a UIDL the server hands to another message later is
 * told from the one fetched (tag 'L', which no other record starts with):
 *
 *   NAME.state    "L <when> <key> <size>"      a key with its size, instead
 *                                              of "<when> <key>"
 *   NAME.journal  "L <when> <key> <maildir_name or -> <size>"
 *                                              "+" that also sets the size
 *
 * A key recorded without a size (all keys of files written before sizes
 * were kept) has none; adding an existing key keeps its time, and an "L"
 * record replaces its size. Since sizes only come with additions, a key's
 * size after a journal is the last "L" since its last "-", or what it had
 * before, which keeps a replay over a snapshot that holds it harmless.
 *
 * The outbox's send records (tag 'O', state_send.c) came with journal
 * version 2 and snapshot version 2:
 *
 *   NAME.state    "O <base> <state> <text or ->"
 *   NAME.journal  "O <base> <state> <text or ->"   state "queued" removes it
 *
 * Older mailpulls read neither, so a file gets version 2 only once it
 * holds a send record: the snapshot's first line says 2 when it holds
 * one, and a version 1 journal (or one without a version line) is
 * rewritten whole as version 2 (NAME.journal.new, fsync, rename, fsync
 * the directory) before the first send record is written into it. An
 * account that never sends keeps files every mailpull reads; one that
 * sent is refused by an older mailpull with a clear message.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailpull/util.h"
#include "state_int.h"

/* ---- paths and the lock ---- */

static char *
make_path(const char *dir, const char *name, const char *suffix)
{
	size_t len = strlen(dir) + strlen(name) + strlen(suffix) + 2;
	char *p = malloc(len);

	if (p)
		snprintf(p, len, "%s/%s%s", dir, name, suffix);
	return p;
}

static int
state_paths(struct state *s, const char *dir, const char *account)
{
	char *esc = state_escape_account(account);

	s->dir = strdup(dir);
	s->account = strdup(account);
	if (esc) {
		s->state_path = make_path(dir, esc, ".state");
		s->new_path = make_path(dir, esc, ".state.new");
		s->journal_path = make_path(dir, esc, ".journal");
		s->journal_new_path = make_path(dir, esc, ".journal.new");
		s->lock_path = make_path(dir, esc, ".lock");
	}
	free(esc);
	if (!s->dir || !s->account || !s->state_path || !s->new_path || !s->journal_path ||
	    !s->journal_new_path || !s->lock_path)
		return -ENOMEM;
	return 0;
}

static int
state_lock(struct state *s, bool wait, struct mp_err *err)
{
	s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_NOCTTY | O_CLOEXEC, 0600);
	if (s->lock_fd < 0)
		return st_fail(err, -errno, "cannot open lock file", s->lock_path);
	/* flock(), not fcntl(): it conflicts within one process too. */
	while (flock(s->lock_fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno == EWOULDBLOCK)
			return mp_err_set(err, -EAGAIN, MP_EX_TEMPFAIL, "another mailpull process"
					  " is working on account '%s' (lock %s)",
					  s->account, s->lock_path);
		return st_fail(err, -errno, "cannot lock", s->lock_path);
	}
	return 0;
}

/* ---- loading ---- */

static int
load_line(struct state *s, bool journal, unsigned long lineno, char *line)
{
	if (!journal) {
		if (lineno == 1)
			return strcmp(line, STATE_HEADER) == 0 ||
			       strcmp(line, STATE_HEADER_SEND) == 0 ? 0 : -EBADMSG;
		if (line[0] == 'O')
			return st_send_load(s, line);
		/* Folder records start with an upper-case tag, key records never do. */
		if (st_imap_is_record(line[0], false))
			return st_imap_load_snapshot(s, line);
		return st_pop3_load_snapshot(s, line);
	}
	if (st_imap_is_record(line[0], true))
		return st_imap_load_journal(s, line);
	if (line[0] == 'G')
		return st_name_load_flags(s, line);
	if (line[0] == 'O')
		return st_send_load(s, line);
	return st_pop3_load_journal(s, line);
}

/*
 * The journal's "mailpull-journal <version>" line. A version this code
 * does not know is refused (MP_EX_CONFIG: retrying cannot help, only the
 * mailpull that wrote it can read it) rather than misread, which could
 * fetch mail twice or delete what was never stored.
 */
static int
load_journal_version(struct state *s, const char *path, const char *line, struct mp_err *err)
{
	const char *v = line + strlen(JOURNAL_MAGIC " ");
	uint64_t version;

	/* Written as "%d": a leading zero (or anything else) is damage, never ours. */
	if (v[0] == '0' || util_parse_u64(v, strlen(v), &version) < 0 || version == 0)
		return -EBADMSG;
	if (version > JOURNAL_VERSION)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "%s: journal version %" PRIu64
				  " is newer than this mailpull reads (%d): it was written by a"
				  " newer mailpull", path, version, JOURNAL_VERSION);
	s->journal_version = (unsigned)version;
	return 0;
}

/*
 * Loads the snapshot or replays the journal. A journal's last line without
 * '\n' is a write a crash cut short: it is skipped and *ret_valid (the
 * length of the whole lines) lets the caller cut it off.
 */
static int
load_file(struct state *s, const char *path, bool journal, off_t *ret_valid, struct mp_err *err)
{
	unsigned long lineno = 0;
	char *line = NULL;
	size_t cap = 0;
	off_t valid = 0;
	ssize_t n;
	int r = 0;
	FILE *f = fopen(path, "re");

	if (!f) {
		if (errno != ENOENT)
			return st_fail(err, -errno, "cannot open", path);
		*ret_valid = 0;
		return 0;
	}
	while (r == 0 && (n = getline(&line, &cap, f)) > 0) {
		lineno++;
		/* Only the journal is appended to; the snapshot is renamed whole. */
		if (line[n - 1] != '\n') {
			if (!journal)
				r = -EBADMSG;
			break;
		}
		line[n - 1] = '\0';
		/* A NUL inside a line is damage, never something we wrote. */
		if (strlen(line) != (size_t)n - 1) {
			r = -EBADMSG;
		} else if (journal && lineno == 1 &&
			   strncmp(line, JOURNAL_MAGIC " ", strlen(JOURNAL_MAGIC " ")) == 0) {
			r = load_journal_version(s, path, line, err);
			s->journal_base = n;
		} else {
			r = load_line(s, journal, lineno, line);
		}
		valid += n;
	}
	if (r == 0 && ferror(f))
		r = st_fail(err, -EIO, "cannot read", path);
	if (r == 0 && !journal && lineno == 0) {
		r = -EBADMSG;
		lineno = 1;
	}
	if (r == -EBADMSG)
		mp_err_set(err, r, MP_EX_IOERR, "%s:%lu: malformed state record", path, lineno);
	else if (r == -ENOMEM)
		st_fail(err, r, "cannot load", path);
	free(line);
	fclose(f);
	if (r == 0)
		*ret_valid = valid;
	return r;
}

/*
 * Writes the version line into the empty journal and makes it durable
 * before any record can follow it.
 */
static int
journal_start(struct state *s, struct mp_err *err)
{
	/* Version 2 only once there is a send record: older mailpulls read 1. */
	bool v2 = s->nsends > 0;
	const char *header = v2 ? JOURNAL_HEADER_SEND "\n" : JOURNAL_HEADER "\n";
	size_t len = strlen(header);
	int r = util_write_all(s->journal_fd, header, len);

	if (r < 0) {
		/* A torn version line is cut off by the next open. */
		return st_fail(err, r, "cannot write", s->journal_path);
	}
	if (fsync(s->journal_fd) < 0)
		return st_fail(err, -errno, "cannot sync", s->journal_path);
	s->journal_base = s->journal_len = (off_t)len;
	s->journal_version = v2 ? JOURNAL_VERSION_SEND : 1;
	return 0;
}

static int
open_journal(struct state *s, off_t valid, struct mp_err *err)
{
	struct stat st;
	int r;

	s->journal_fd = open(s->journal_path, O_WRONLY | O_APPEND | O_NOCTTY | O_CLOEXEC);
	if (s->journal_fd < 0 && errno == ENOENT) {
		/*
		 * A new journal's records count only once its directory entry
		 * is durable too: sync the directory (after the version line)
		 * before anything is recorded in it.
		 */
		s->journal_fd = open(s->journal_path,
				     O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOCTTY | O_CLOEXEC,
				     0600);
		if (s->journal_fd < 0)
			return st_fail(err, -errno, "cannot create", s->journal_path);
		r = journal_start(s, err);
		if (r < 0)
			return r;
		r = util_fsync_dir(s->dir);
		if (r < 0)
			return st_fail(err, r, "cannot sync", s->dir);
		return 0;
	}
	if (s->journal_fd < 0)
		return st_fail(err, -errno, "cannot open", s->journal_path);
	if (fstat(s->journal_fd, &st) < 0)
		return st_fail(err, -errno, "cannot stat", s->journal_path);
	/* Cut a torn tail now, or the next append would glue onto it. */
	if (st.st_size > valid) {
		if (ftruncate(s->journal_fd, valid) < 0)
			return st_fail(err, -errno, "cannot truncate", s->journal_path);
		if (fdatasync(s->journal_fd) < 0)
			return st_fail(err, -errno, "cannot sync", s->journal_path);
	}
	s->journal_len = valid;
	/*
	 * Empty (a crash or a full disk cut its creation or compaction short):
	 * it gets its version line now. An older journal with records keeps
	 * none until the next compaction empties it.
	 */
	return valid == 0 ? journal_start(s, err) : 0;
}

int
state_open(const char *dir, const char *account, bool wait, struct state **ret,
	   struct mp_err *err)
{
	struct state *s;
	off_t valid;
	int r;

	if (!dir || !*dir || !account || !*account)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "state: empty directory or account name");
	s = calloc(1, sizeof(*s));
	if (!s)
		return mp_err_oom(err);
	s->lock_fd = -1;
	s->journal_fd = -1;
	s->journal_version = 1;
	r = state_paths(s, dir, account);
	if (r < 0) {
		st_fail(err, r, "cannot open state in", dir);
		goto fail;
	}
	r = util_mkdir_p(dir, 0700);
	if (r < 0) {
		st_fail(err, r, "cannot create state directory", dir);
		goto fail;
	}
	r = state_lock(s, wait, err);
	if (r == 0)
		r = load_file(s, s->state_path, false, &valid, err);
	if (r == 0)
		r = load_file(s, s->journal_path, true, &valid, err);
	if (r == 0)
		r = open_journal(s, valid, err);
	if (r < 0)
		goto fail;
	s->interrupted = s->names.count > 0;
	*ret = s;
	return 0;
fail:
	state_close(s);
	return r;
}

/* ---- changes made durable ---- */

/* Copies the journal's records after the version line into fd. */
static int
journal_copy_records(struct state *s, int fd)
{
	char buf[16384];
	off_t off = s->journal_base;
	int in = open(s->journal_path, O_RDONLY | O_NOCTTY | O_CLOEXEC), r = 0;

	if (in < 0)
		return -errno;
	while (r == 0 && off < s->journal_len) {
		size_t want = (size_t)(s->journal_len - off) < sizeof(buf) ?
			      (size_t)(s->journal_len - off) : sizeof(buf);
		ssize_t n = pread(in, buf, want, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			r = n < 0 ? -errno : -EIO;
		else
			r = util_write_all(fd, buf, (size_t)n);
		off += n > 0 ? n : 0;
	}
	close(in);
	return r;
}

/*
 * Rewrites a version 1 journal as version 2 before a send record goes
 * into it (see the head of this file): NAME.journal.new gets the new
 * version line and the same records, is synced and renamed over the
 * journal, then the directory is synced. Until the rename the old journal
 * stands; once the rename may be durable, appends go to the new one, so a
 * failed directory sync is final (MP_EX_IOERR, sticky).
 */
static int
journal_upgrade(struct state *s, struct mp_err *err)
{
	static const char header[] = JOURNAL_HEADER_SEND "\n";
	off_t records = s->journal_len - s->journal_base;
	int fd, r;

	fd = open(s->journal_new_path,
		  O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOCTTY | O_CLOEXEC, 0600);
	if (fd < 0)
		return st_fail(err, -errno, "cannot create", s->journal_new_path);
	r = util_write_all(fd, header, sizeof(header) - 1);
	if (r == 0)
		r = journal_copy_records(s, fd);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && rename(s->journal_new_path, s->journal_path) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		unlink(s->journal_new_path);
		return st_fail(err, r, "cannot rewrite", s->journal_path);
	}
	close(s->journal_fd);
	s->journal_fd = fd;
	s->journal_base = (off_t)(sizeof(header) - 1);
	s->journal_len = s->journal_base + records;
	s->journal_version = JOURNAL_VERSION_SEND;
	r = util_fsync_dir(s->dir);
	if (r < 0) {
		s->broken = r;
		return st_fail(err, r, "cannot sync", s->dir);
	}
	return 0;
}

int
state_sync(struct state *s, struct mp_err *err)
{
	int r = st_writable(s, err);

	if (r < 0 || s->pending.len == 0)
		return r;
	if (s->send_pending && s->journal_version < JOURNAL_VERSION_SEND) {
		r = journal_upgrade(s, err);
		if (r < 0)
			return r;
	}
	r = util_write_all(s->journal_fd, s->pending.p, s->pending.len);
	if (r < 0) {
		/* Take back a partial record so a retry does not follow garbage. */
		if (ftruncate(s->journal_fd, s->journal_len) < 0)
			s->broken = r;
		return st_fail(err, r, "cannot write", s->journal_path);
	}
	/*
	 * After a failed fdatasync the kernel may have dropped the dirty pages:
	 * nothing written since can be trusted, so refuse further changes.
	 */
	if (fdatasync(s->journal_fd) < 0) {
		s->broken = -errno;
		return st_fail(err, s->broken, "cannot sync", s->journal_path);
	}
	s->journal_len += (off_t)s->pending.len;
	s->pending.len = 0;
	s->send_pending = false;
	return 0;
}

bool
state_interrupted(const struct state *s)
{
	return s->interrupted;
}

void
state_names_release(struct state *s)
{
	st_names_clear(s);
}

int
state_forget_name(struct state *s, const char *maildir_name, struct mp_err *err)
{
	const char *id = st_name_owner(s, maildir_name);

	if (!id)
		return 0;
	return id[0] == 'k' ? st_pop3_forget(s, id + 1, err) : st_imap_forget(s, id + 1, err);
}

/* ---- compaction ---- */

static int
write_snapshot(struct state *s, int fd)
{
	struct snap w = { .fd = fd };
	int r = st_dbuf_reserve(&w.b, STATE_FLUSH_SIZE);

	if (r < 0)
		return r;
	if (s->nsends > 0)
		st_dbuf_put(&w.b, STATE_HEADER_SEND "\n", sizeof(STATE_HEADER_SEND));
	else
		st_dbuf_put(&w.b, STATE_HEADER "\n", sizeof(STATE_HEADER));
	r = st_pop3_snapshot(&w, s);
	if (r == 0)
		r = st_imap_snapshot(&w, s);
	if (r == 0)
		r = st_send_snapshot(&w, s);
	if (r == 0)
		r = util_write_all(fd, w.b.p, w.b.len);
	free(w.b.p);
	return r;
}

/* NAME.state.new, fsync, rename over NAME.state, fsync the directory. */
static int
replace_snapshot(struct state *s, struct mp_err *err)
{
	int fd, r;

	fd = open(s->new_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY | O_CLOEXEC, 0600);
	if (fd < 0)
		return st_fail(err, -errno, "cannot create", s->new_path);
	r = write_snapshot(s, fd);
	if (r < 0)
		st_fail(err, r, "cannot write", s->new_path);
	else if (fsync(fd) < 0)
		r = st_fail(err, -errno, "cannot sync", s->new_path);
	if (close(fd) < 0 && r == 0 && errno != EINTR)
		r = st_fail(err, -errno, "cannot close", s->new_path);
	if (r == 0 && rename(s->new_path, s->state_path) < 0)
		r = st_fail(err, -errno, "cannot rename to", s->state_path);
	if (r < 0) {
		unlink(s->new_path);
		return r;
	}
	r = util_fsync_dir(s->dir);
	if (r < 0)
		return st_fail(err, r, "cannot sync", s->dir);
	return 0;
}

int
state_compact(struct state *s, struct mp_err *err)
{
	int r = st_writable(s, err);

	if (r == 0)
		r = replace_snapshot(s, err);
	if (r < 0)
		return r;
	/* The snapshot holds every change now, buffered ones included. */
	s->pending.len = 0;
	s->send_pending = false;
	/* Keep the version line; a journal from before it gets one now. */
	if (ftruncate(s->journal_fd, s->journal_base) < 0 || fsync(s->journal_fd) < 0) {
		s->broken = -errno;
		return st_fail(err, s->broken, "cannot empty", s->journal_path);
	}
	s->journal_len = s->journal_base;
	if (s->journal_base == 0) {
		r = journal_start(s, err);
		if (r < 0) {
			s->broken = r;
			return r;
		}
	}
	st_names_clear(s);
	return 0;
}

void
state_close(struct state *s)
{
	if (!s)
		return;
	if (s->journal_fd >= 0)
		close(s->journal_fd);
	/* Closing the last descriptor of the lock file releases the flock. */
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	st_kv_free(&s->keys);
	st_names_clear(s);
	st_imap_free(s);
	st_send_free(s);
	free(s->pending.p);
	free(s->dir);
	free(s->account);
	free(s->state_path);
	free(s->new_path);
	free(s->journal_path);
	free(s->journal_new_path);
	free(s->lock_path);
	free(s);
}
