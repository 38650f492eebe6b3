/*
 * libFuzzer target for the state file reader. The first byte splits the
 * rest into a snapshot (NAME.state) and a journal (NAME.journal): its low
 * seven bits say where, 0 meaning no snapshot file and 127 no journal
 * file. Whatever loads is walked through every query. With the high bit
 * set, the state is compacted and opened again with the same journal put
 * back, then a few changes are made, synced and compacted, and the state
 * is opened once more: each time, what comes back (keys with their times
 * and sizes, folders, UIDs, skipped UIDs) must be what was there, since a
 * state that loses or invents a key, a folder, a UID or a skipped UID
 * would make mailpull fetch twice or skip a message.
 *
 * After compaction the journal must hold its version line and nothing
 * else.
 *
 * The files live in a directory of their own under /dev/shm (or $TMPDIR),
 * made once per process and removed at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailpull/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ACCOUNT "fuzz"
/* UIDs walked per folder: a range like 1-4294967295 must not take hours. */
#define UID_WALK_MAX 4096

static char dir[256];
static char state_path[300], journal_path[300], lock_path[300], new_path[300];

static void
cleanup(void)
{
	unlink(state_path);
	unlink(journal_path);
	unlink(lock_path);
	unlink(new_path);
	rmdir(dir);
}

static void
setup(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/fuzz_state.XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(dir))
		abort();
	snprintf(state_path, sizeof(state_path), "%s/" ACCOUNT ".state", dir);
	snprintf(journal_path, sizeof(journal_path), "%s/" ACCOUNT ".journal", dir);
	snprintf(lock_path, sizeof(lock_path), "%s/" ACCOUNT ".lock", dir);
	snprintf(new_path, sizeof(new_path), "%s/" ACCOUNT ".state.new", dir);
	atexit(cleanup);
}

static void
write_file(const char *path, const uint8_t *p, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		abort();
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			abort();
		p += n;
		len -= (size_t)n;
	}
	close(fd);
}

/*
 * What compaction leaves in the journal: its version line alone (version
 * 2 once it held send records, else 1).
 */
static void
check_empty_journal(void)
{
	static const char header[] = "mailpull-journal 1\n";
	char buf[sizeof(header)];
	int fd = open(journal_path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		abort();
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n == (ssize_t)sizeof(header) - 1 && buf[sizeof(header) - 3] == '2')
		buf[sizeof(header) - 3] = '1';
	if (n != (ssize_t)sizeof(header) - 1 || memcmp(buf, header, sizeof(header) - 1) != 0) {
		fprintf(stderr, "the journal after compaction is not its version line alone\n");
		abort();
	}
}

static uint64_t
fnv(uint64_t h, const void *buf, size_t len)
{
	const unsigned char *b = buf;

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* What a state holds, independent of hash-table order. */
struct digest {
	uint64_t keys;      /* sum of per-key hashes: order-free */
	size_t nkeys;
	uint64_t folders;   /* folders come in strcmp() order, UIDs in increasing order */
	size_t nfolders;
};

struct walk {
	const struct state *s;
	struct digest *d;
	const char *folder;
	uint32_t last;
	size_t n;
	uint64_t h;
};

static int
on_key(void *ud, const char *key, int64_t when)
{
	struct walk *w = ud;
	int64_t w2;
	uint64_t h = fnv(0xcbf29ce484222325ull, key, strlen(key) + 1), size = UINT64_MAX;

	if (!state_has(w->s, key, &w2) || w2 != when)
		abort();
	if (state_get_size(w->s, key, &size) && size == UINT64_MAX)
		abort();
	h = fnv(h, &size, sizeof(size));
	w->d->keys += fnv(h, &when, sizeof(when));
	w->d->nkeys++;
	return 0;
}

static int
on_uid(void *ud, uint32_t uid)
{
	struct walk *w = ud;

	if (uid == 0 || (w->n > 0 && uid <= w->last) || !state_uid_has(w->s, w->folder, uid))
		abort();
	w->last = uid;
	w->h = fnv(w->h, &uid, sizeof(uid));
	return ++w->n >= UID_WALK_MAX;
}

static int
on_skipped(void *ud, uint32_t uid)
{
	struct walk *w = ud;

	if (uid == 0 || (w->n > 0 && uid <= w->last) || !state_skip_has(w->s, w->folder, uid))
		abort();
	w->last = uid;
	w->h = fnv(w->h, &uid, sizeof(uid));
	return ++w->n >= UID_WALK_MAX;
}

static int
on_folder(void *ud, const char *folder)
{
	struct walk *w = ud;
	struct walk u = { .s = w->s, .folder = folder, .h = 0xcbf29ce484222325ull };
	struct walk k = { .s = w->s, .folder = folder, .h = 0xcbf29ce484222325ull };
	uint32_t uv = 0, un = 0;
	size_t count, nskip;

	if (state_folder_get(w->s, folder, &uv, &un) < 0 || uv == 0)
		abort();
	count = state_uid_count(w->s, folder);
	state_uid_foreach(w->s, folder, on_uid, &u);
	if (u.n < UID_WALK_MAX && u.n != count)
		abort();
	if (u.n == 0 && (state_uid_has(w->s, folder, 1) || state_uid_has(w->s, folder, UINT32_MAX)))
		abort();
	nskip = state_skip_count(w->s, folder);
	state_skip_foreach(w->s, folder, on_skipped, &k);
	if (k.n < UID_WALK_MAX && k.n != nskip)
		abort();
	(void)state_fp_has(w->s, folder, 1);
	(void)state_fp_has(w->s, folder, UINT64_MAX);
	w->d->folders = fnv(w->d->folders, folder, strlen(folder) + 1);
	w->d->folders = fnv(w->d->folders, &uv, sizeof(uv));
	w->d->folders = fnv(w->d->folders, &un, sizeof(un));
	w->d->folders = fnv(w->d->folders, &count, sizeof(count));
	w->d->folders = fnv(w->d->folders, &u.h, sizeof(u.h));
	w->d->folders = fnv(w->d->folders, &nskip, sizeof(nskip));
	w->d->folders = fnv(w->d->folders, &k.h, sizeof(k.h));
	w->d->nfolders++;
	return 0;
}

/* Recorded flags must be Maildir info letters, each once, in ASCII order. */
static int
check_flags(void *ud, const char *name)
{
	char flags[STATE_FLAGS_MAX + 1];
	size_t n = state_name_flags(ud, name, flags);

	if (strlen(flags) != n)
		abort();
	for (size_t i = 0; i < n; i++)
		if (!((flags[i] >= 'A' && flags[i] <= 'Z') || (flags[i] >= 'a' && flags[i] <= 'z')) ||
		    (i > 0 && flags[i] <= flags[i - 1]))
			abort();
	return 0;
}

static void
take_digest(const struct state *s, struct digest *d)
{
	struct walk w = { .s = s, .d = d };

	memset(d, 0, sizeof(*d));
	d->folders = 0xcbf29ce484222325ull;
	state_foreach(s, on_key, &w);
	if (d->nkeys != state_count(s))
		abort();
	state_folder_foreach(s, on_folder, &w);
	(void)state_has(s, "", NULL);
	(void)state_name_recorded(s, "-");
	state_name_foreach(s, check_flags, (void *)s);
}

static int
first_folder(void *ud, const char *folder)
{
	*(char **)ud = strdup(folder);
	return 1;
}

static int
first_name(void *ud, const char *name)
{
	*(char **)ud = strdup(name);
	return 1;
}

/* A few changes of each kind; errors are fine, crashes and leaks are not. */
static void
change(struct state *s, uint8_t mode)
{
	struct mp_err err = { 0 };
	char *folder = NULL, *name = NULL;

	/* Forgetting by a name read from the input, before any change. */
	if (mode & 4) {
		state_name_foreach(s, first_name, &name);
		if (name)
			(void)state_forget_name(s, name, &err);
		free(name);
	}
	(void)state_add(s, "new-key", 1700000000, "1700000000.M1P1.host", &err);
	(void)state_add_sized(s, mode & 1 ? "sized" : "new-key", 1700000001, 4096,
			      "1700000001.M2P1.host", &err);
	(void)state_remove(s, mode & 1 ? "new-key" : "0000001", &err);
	(void)state_folder_reset(s, "INBOX/Neu\xc3\xa9 %", 1234, &err);
	(void)state_name_set_flags(s, "m7", "SF", &err);
	(void)state_uid_add(s, "INBOX/Neu\xc3\xa9 %", 7, 0x1234567890abcdefull, "m7", &err);
	(void)state_folder_set_uidnext(s, "INBOX/Neu\xc3\xa9 %", 8, &err);
	if (mode & 4)
		(void)state_forget_name(s, "m7", &err);
	state_folder_foreach(s, first_folder, &folder);
	if (folder) {
		uint32_t uv = 0, un = 0;

		(void)state_folder_get(s, folder, &uv, &un);
		(void)state_uid_add(s, folder, un ? un : 1, 0, NULL, &err);
		(void)state_uid_remove(s, folder, 3, &err);
		(void)state_skip_add(s, folder, 4, &err);
		(void)state_skip_add(s, folder, UINT32_MAX, &err);
		(void)state_skip_remove(s, folder, mode & 1 ? 4 : 5, &err);
		if (mode & 2)
			(void)state_folder_remove(s, folder, &err);
		free(folder);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mp_err err = { 0 };
	struct digest before, after;
	struct state *s = NULL;
	size_t split;
	uint8_t mode;

	if (size < 1)
		return 0;
	if (!dir[0])
		setup();
	mode = data[0];
	data++;
	size--;
	split = size * (mode & 0x7f) / 127;
	unlink(state_path);
	unlink(journal_path);
	if ((mode & 0x7f) != 0)
		write_file(state_path, data, split);
	if ((mode & 0x7f) != 127)
		write_file(journal_path, data + split, size - split);

	if (state_open(dir, ACCOUNT, false, &s, &err) < 0) {
		if (err.code == 0 || !memchr(err.msg, '\0', sizeof(err.msg)))
			abort();
		return 0;
	}
	take_digest(s, &before);
	if (!(mode & 0x80)) {
		state_close(s);
		return 0;
	}
	/*
	 * A crash between the snapshot's rename and the journal's truncation
	 * leaves the old journal next to a snapshot that holds it already:
	 * replaying it again must change nothing (the promise at the top of
	 * state.c).
	 */
	if (state_compact(s, &err) < 0) {
		state_close(s);
		return 0;
	}
	state_close(s);
	s = NULL;
	check_empty_journal();
	if ((mode & 0x7f) != 127)
		write_file(journal_path, data + split, size - split);
	if (state_open(dir, ACCOUNT, false, &s, &err) < 0) {
		fprintf(stderr, "reopen with the journal replayed again failed: %s\n", err.msg);
		abort();
	}
	take_digest(s, &after);
	if (before.nkeys != after.nkeys || before.keys != after.keys ||
	    before.nfolders != after.nfolders || before.folders != after.folders) {
		fprintf(stderr, "replaying the journal again changed the state: keys %zu -> %zu, "
			"folders %zu -> %zu\n", before.nkeys, after.nkeys, before.nfolders,
			after.nfolders);
		abort();
	}
	change(s, mode);
	take_digest(s, &before);
	if (state_sync(s, &err) < 0 || state_compact(s, &err) < 0) {
		state_close(s);
		return 0;
	}
	state_close(s);
	s = NULL;
	if (state_open(dir, ACCOUNT, false, &s, &err) < 0) {
		fprintf(stderr, "reopen after compaction failed: %s\n", err.msg);
		abort();
	}
	take_digest(s, &after);
	if (before.nkeys != after.nkeys || before.keys != after.keys ||
	    before.nfolders != after.nfolders || before.folders != after.folders) {
		fprintf(stderr, "compaction changed the state: keys %zu -> %zu, folders %zu -> %zu\n",
			before.nkeys, after.nkeys, before.nfolders, after.nfolders);
		abort();
	}
	state_close(s);
	return 0;
}
