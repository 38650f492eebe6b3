/*
 * The outbox: a Maildir of messages to send, an envelope file beside a
 * message when `mailpull sendmail` knew more than its header says.
 *
 * Only the header block is ever held in memory (at most OUTBOX_HEAD_MAX
 * and one read past it); bodies stream through a 64 KiB buffer.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mailpull/addr.h"
#include "mailpull/hdr.h"
#include "mailpull/maildir.h"
#include "mailpull/outbox.h"
#include "mailpull/util.h"

#define OB_CHUNK (64 * 1024)
#define OB_ENV_MAGIC "mailpull-envelope 1\n"
/* An envelope holds at most this: every recipient at the longest. */
#define OB_ENV_MAX ((size_t)(OUTBOX_RCPT_MAX + 2) * (ADDR_LEN_MAX + 8))
/* Envelopes whose message never appeared are removed after this long. */
#define OB_TIDY_AGE_S 3600
/* The Maildir tag of messages `mailpull sendmail` queues. */
#define OB_TAG "sendmail"

static int
ob_io(struct mp_err *err, int code, const char *what, const char *path)
{
	if (code == -ENOMEM)
		return mp_err_oom(err);
	return mp_err_set(err, code, MP_EX_IOERR, "%s %s: %s", what, path, strerror(-code));
}

static int
ob_bad(struct mp_err *err, const char *what)
{
	return mp_err_set(err, -EBADMSG, MP_EX_DATAERR, "%s", what);
}

static char *
ob_path(const char *dir, const char *sub, const char *name)
{
	char *p = NULL;

	if (asprintf(&p, "%s/%s%s%s", dir, sub, name ? "/" : "", name ? name : "") < 0)
		return NULL;
	return p;
}

/* ---- the header block ---- */

/* Where a header block ends, found by head_find_end(). */
struct head_end {
	size_t fields_end;         /* the fields are [0, fields_end) */
	size_t body;               /* what follows the header block starts here */
	bool sep;                  /* an empty line ended it */
	bool dot;                  /* a lone "." ended the message */
	bool eof;                  /* the end of the input ended it */
};

/* "Name:" with a name of printable ASCII but ':' (RFC 5322 section 2.2; obs WSP before ':'). */
static bool
line_is_field(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && (unsigned char)p[i] > 32 && (unsigned char)p[i] < 127 && p[i] != ':')
		i++;
	if (i == 0)
		return false;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i < n && p[i] == ':';
}

/*
 * Classifies the lines of buf[*pos..n). Returns 1 when the header block
 * ends (*ret filled), 0 when a line is incomplete and more input is needed
 * (*pos at its start). eof: buf holds all of the input.
 */
static int
head_find_end(const char *buf, size_t n, bool eof, bool dot_ends, size_t *pos,
	      struct head_end *ret)
{
	for (;;) {
		size_t start = *pos, end, clen;
		const char *lf = memchr(buf + start, '\n', n - start);

		if (!lf && !eof)
			return 0;
		if (start == n) {
			*ret = (struct head_end){ .fields_end = n, .body = n, .eof = true };
			return 1;
		}
		end = lf ? (size_t)(lf - buf) + 1 : n;
		clen = end - start;
		if (lf) {
			clen--;
			if (clen > 0 && buf[start + clen - 1] == '\r')
				clen--;
		}
		if (clen == 0) {
			*ret = (struct head_end){ .fields_end = start, .body = end, .sep = true };
			return 1;
		}
		if (dot_ends && clen == 1 && buf[start] == '.') {
			*ret = (struct head_end){ .fields_end = start, .body = end, .dot = true };
			return 1;
		}
		/* A continuation needs a field before it. */
		if (!line_is_field(buf + start, clen) &&
		    !(start > 0 && (buf[start] == ' ' || buf[start] == '\t'))) {
			*ret = (struct head_end){ .fields_end = start, .body = start };
			return 1;
		}
		*pos = end;
	}
}

/* One field of a header block: name, value (continuation lines included), extent. */
struct field {
	const char *name;
	size_t nlen;
	const char *val;
	size_t vlen;
	size_t start, end;
};

/* The field at *pos in t[0..len) (all of whose lines are fields or continuations). */
static bool
field_next(const char *t, size_t len, size_t *pos, struct field *f)
{
	size_t i = *pos, colon;
	const char *lf;

	if (i >= len)
		return false;
	f->start = i;
	f->name = t + i;
	lf = memchr(t + i, '\n', len - i);
	colon = i;
	while (colon < len && t[colon] != ':' && t[colon] != '\n')
		colon++;
	f->nlen = colon - i;
	while (f->nlen > 0 && (f->name[f->nlen - 1] == ' ' || f->name[f->nlen - 1] == '\t'))
		f->nlen--;
	i = lf ? (size_t)(lf - t) + 1 : len;
	while (i < len && (t[i] == ' ' || t[i] == '\t')) {
		lf = memchr(t + i, '\n', len - i);
		i = lf ? (size_t)(lf - t) + 1 : len;
	}
	f->val = colon < i && t[colon] == ':' ? t + colon + 1 : t + i;
	f->vlen = (size_t)(t + i - f->val);
	f->end = i;
	*pos = i;
	return true;
}

static bool
field_is(const struct field *f, const char *name)
{
	return f->nlen == strlen(name) && strncasecmp(f->name, name, f->nlen) == 0;
}

/* What a header block says. */
struct facts {
	char *from_addr;
	char *message_id;
	struct addr_list rcpts;
	bool has_from, has_date, has_mid, has_bcc;
};

static void
facts_free(struct facts *f)
{
	free(f->from_addr);
	free(f->message_id);
	addr_list_free(&f->rcpts);
	*f = (struct facts){ .has_from = false };
}

static int
facts_addr_error(struct mp_err *err, int r, const struct field *f)
{
	if (r == -ENOMEM)
		return mp_err_oom(err);
	if (r == -E2BIG)
		return mp_err_set(err, -EBADMSG, MP_EX_DATAERR,
				  "the %.*s field: over %d addresses, or one over %d bytes",
				  (int)f->nlen, f->name, OUTBOX_RCPT_MAX, ADDR_LEN_MAX);
	return mp_err_set(err, -EBADMSG, MP_EX_DATAERR, "the %.*s field is not an address list",
			  (int)f->nlen, f->name);
}

static int
facts_msgid(struct facts *fa, const struct field *f)
{
	size_t n;
	const char *c = hdr_msgid_core(f->val, f->vlen, &n);

	fa->has_mid = true;
	if (fa->message_id || n < 3 || c[0] != '<')
		return 0;
	/* A folded or spaced one is not kept: it cannot be looked up as written. */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)c[i] <= ' ' || (unsigned char)c[i] == 0x7f)
			return 0;
	fa->message_id = util_strndup(c, n);
	return fa->message_id ? 0 : -ENOMEM;
}

static int
facts_field(struct facts *fa, const struct field *f, struct mp_err *err)
{
	int r = 0;

	if (field_is(f, "From")) {
		if (!fa->has_from)
			r = addr_parse_first(f->val, f->vlen, &fa->from_addr);
		fa->has_from = true;
	} else if (field_is(f, "To") || field_is(f, "Cc") || field_is(f, "Bcc")) {
		fa->has_bcc = fa->has_bcc || field_is(f, "Bcc");
		r = addr_list_parse(&fa->rcpts, f->val, f->vlen, OUTBOX_RCPT_MAX);
	} else if (field_is(f, "Message-ID")) {
		if (facts_msgid(fa, f) < 0)
			return mp_err_oom(err);
	} else if (field_is(f, "Date")) {
		fa->has_date = true;
	}
	return r < 0 ? facts_addr_error(err, r, f) : 0;
}

static int
facts_parse(const char *t, size_t len, struct facts *ret, struct mp_err *err)
{
	struct facts fa = { .has_from = false };
	struct field f;
	size_t pos = 0;
	int r;

	while (field_next(t, len, &pos, &f))
		if ((r = facts_field(&fa, &f, err)) < 0) {
			facts_free(&fa);
			return r;
		}
	*ret = fa;
	return 0;
}

/* Removes the Bcc fields from t[0..len) in place; returns the new length. */
static size_t
strip_bcc(char *t, size_t len)
{
	struct field f;
	size_t pos = 0, out = 0;

	while (field_next(t, len, &pos, &f)) {
		if (field_is(&f, "Bcc"))
			continue;
		memmove(t + out, t + f.start, f.end - f.start);
		out += f.end - f.start;
	}
	return out;
}

/*
 * Reads from fd until the header block ends: *ret_buf (malloc'd, *ret_n
 * bytes read, the header block and maybe more) and where it ends.
 */
static int
head_block_read(int fd, bool dot_ends, char **ret_buf, size_t *ret_n, struct head_end *ret_he,
		struct mp_err *err)
{
	size_t n = 0, cap = 0, pos = 0;
	char *buf = NULL;
	bool eof = false;
	int r = 0;

	for (;;) {
		if (n > 0 || eof) {
			r = head_find_end(buf, n, eof, dot_ends, &pos, ret_he);
			if (r == 1 && ret_he->fields_end > OUTBOX_HEAD_MAX)
				r = 0;
			if (r == 1)
				break;
		}
		if (n > OUTBOX_HEAD_MAX) {
			r = mp_err_set(err, -EBADMSG, MP_EX_DATAERR,
				       "the header block is over %zu bytes", OUTBOX_HEAD_MAX);
			break;
		}
		if (cap - n < OB_CHUNK) {
			char *nb = realloc(buf, cap + OB_CHUNK);

			if (!nb) {
				r = mp_err_oom(err);
				break;
			}
			buf = nb;
			cap += OB_CHUNK;
		}
		ssize_t got = read(fd, buf + n, cap - n);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = mp_err_set(err, -errno, MP_EX_IOERR, "cannot read the message: %s",
				       strerror(errno));
			break;
		}
		eof = got == 0;
		n += (size_t)got;
	}
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret_buf = buf;
	*ret_n = n;
	return 0;
}

void
outbox_head_free(struct outbox_head *h)
{
	if (!h)
		return;
	free(h->text);
	free(h->from_addr);
	for (size_t i = 0; i < h->nrcpts; i++)
		free(h->rcpts[i]);
	free(h->rcpts);
	free(h->rest);
	memset(h, 0, sizeof(*h));
}

int
outbox_head_read(int fd, bool dot_ends, struct outbox_head *ret, struct mp_err *err)
{
	struct outbox_head h = { .text = NULL };
	struct head_end he;
	struct facts fa;
	char *buf;
	size_t n;
	const char *lf;
	int r;

	if ((r = head_block_read(fd, dot_ends, &buf, &n, &he, err)) < 0)
		return r;
	if (memchr(buf, '\0', he.fields_end)) {
		free(buf);
		return ob_bad(err, "a NUL byte in the header block");
	}
	if ((r = facts_parse(buf, he.fields_end, &fa, err)) < 0) {
		free(buf);
		return r;
	}
	lf = memchr(buf, '\n', n);
	h.crlf = lf && lf > buf && lf[-1] == '\r';
	h.fields_len = he.fields_end;
	h.len = he.sep ? he.body : he.fields_end;
	h.ended = he.dot || he.eof;
	if (!h.ended && n > h.len) {
		h.restlen = n - (he.sep ? he.body : he.fields_end);
		h.rest = malloc(h.restlen);
		if (!h.rest) {
			facts_free(&fa);
			free(buf);
			return mp_err_oom(err);
		}
		memcpy(h.rest, buf + n - h.restlen, h.restlen);
	}
	h.text = buf;
	h.from_addr = fa.from_addr;
	fa.from_addr = NULL;
	h.rcpts = addr_list_take(&fa.rcpts, &h.nrcpts);
	h.has_from = fa.has_from;
	h.has_date = fa.has_date;
	h.has_message_id = fa.has_mid;
	facts_free(&fa);
	*ret = h;
	return 0;
}

/* ---- scanning a queued message ---- */

/* Counts LFs not preceded by CR; *prev carries the last byte across calls. */
static uint64_t
bare_lfs(const char *p, size_t n, char *prev)
{
	uint64_t c = 0;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && *prev != '\r')
			c++;
		*prev = p[i];
	}
	return c;
}

static void
bytes_note(const char *p, size_t n, struct outbox_scan *s)
{
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)p[i] > 127)
			s->eightbit = true;
		else if (p[i] == '\0')
			s->has_nul = true;
	}
}

void
outbox_scan_free(struct outbox_scan *s)
{
	if (!s)
		return;
	free(s->from_addr);
	free(s->message_id);
	for (size_t i = 0; i < s->nrcpts; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	memset(s, 0, sizeof(*s));
}

static bool
any_high(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] > 127)
			return true;
	return false;
}

/* The header part of a scan: facts, and the sizes of the fields with and without Bcc. */
static int
scan_head(char *buf, const struct head_end *he, struct outbox_scan *s, uint64_t *ret_wire_fields,
	  char *ret_wire_last, struct mp_err *err)
{
	struct facts fa;
	char prev = '\n';
	size_t stripped;
	int r;

	if ((r = facts_parse(buf, he->fields_end, &fa, err)) < 0)
		return r;
	s->utf8 = any_high(buf, he->body) || (fa.from_addr && any_high(fa.from_addr,
						     strlen(fa.from_addr)));
	s->from_addr = fa.from_addr;
	s->message_id = fa.message_id;
	fa.from_addr = fa.message_id = NULL;
	s->has_bcc = fa.has_bcc;
	s->rcpts = addr_list_take(&fa.rcpts, &s->nrcpts);
	facts_free(&fa);
	for (size_t i = 0; i < s->nrcpts; i++)
		s->utf8 = s->utf8 || any_high(s->rcpts[i], strlen(s->rcpts[i]));
	/* The counts below must see the original bytes: strip a copy's worth in place last. */
	stripped = strip_bcc(buf, he->fields_end);
	*ret_wire_fields = stripped + bare_lfs(buf, stripped, &prev);
	*ret_wire_last = stripped ? buf[stripped - 1] : 0;
	return 0;
}

static int
scan_read(int fd, char *buf, size_t cap, size_t *ret_got, struct mp_err *err)
{
	ssize_t got;

	do
		got = read(fd, buf, cap);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return mp_err_set(err, -errno, MP_EX_IOERR, "cannot read the message: %s",
				  strerror(errno));
	*ret_got = (size_t)got;
	return 0;
}

int
outbox_scan_fd(int fd, struct outbox_scan *ret, struct mp_err *err)
{
	struct outbox_scan s = { .size = 0 };
	struct head_end he;
	char *buf = NULL, prev = '\n', last = 0, wire_last = 0;
	uint64_t wire_fields = 0, fields_crlf;
	size_t n, got;
	int r;

	if (lseek(fd, 0, SEEK_SET) < 0)
		return mp_err_set(err, -errno, MP_EX_IOERR, "cannot rewind the message: %s",
				  strerror(errno));
	if ((r = head_block_read(fd, false, &buf, &n, &he, err)) < 0)
		return r;
	/* Sizes of the whole first read, before Bcc is stripped from it. */
	s.size = n;
	fields_crlf = he.fields_end + bare_lfs(buf, he.fields_end, &prev);
	s.crlf_size = fields_crlf + (n - he.fields_end) +
		      bare_lfs(buf + he.fields_end, n - he.fields_end, &prev);
	bytes_note(buf, n, &s);
	last = n ? buf[n - 1] : 0;
	if ((r = scan_head(buf, &he, &s, &wire_fields, &wire_last, err)) < 0)
		goto out;
	if (n > he.fields_end)
		wire_last = last;
	for (;;) {
		if ((r = scan_read(fd, buf, OB_CHUNK, &got, err)) < 0)
			goto out;
		if (got == 0)
			break;
		s.size += got;
		s.crlf_size += got + bare_lfs(buf, got, &prev);
		bytes_note(buf, got, &s);
		last = wire_last = buf[got - 1];
		if (s.size > OUTBOX_MSG_MAX) {
			r = mp_err_set(err, -EBADMSG, MP_EX_DATAERR, "the message is over %llu bytes",
				       (unsigned long long)OUTBOX_MSG_MAX);
			goto out;
		}
	}
	s.wire_size = s.crlf_size - fields_crlf + wire_fields;
	if (s.size > 0 && last != '\n')
		s.crlf_size += 2;
	if (s.wire_size > 0 && wire_last != '\n')
		s.wire_size += 2;
	free(buf);
	*ret = s;
	return 0;
out:
	free(buf);
	outbox_scan_free(&s);
	return r;
}

/* ---- the transmitted form ---- */

struct outbox_reader {
	int fd;
	bool bcc;
	bool started;
	bool eof;
	char *buf;
	size_t cap;
};

int
outbox_reader_open(int fd, bool bcc, struct outbox_reader **ret, struct mp_err *err)
{
	struct outbox_reader *r = calloc(1, sizeof(*r));

	if (!r)
		return mp_err_oom(err);
	if (lseek(fd, 0, SEEK_SET) < 0) {
		free(r);
		return mp_err_set(err, -errno, MP_EX_IOERR, "cannot rewind the message: %s",
				  strerror(errno));
	}
	r->fd = fd;
	r->bcc = bcc;
	*ret = r;
	return 0;
}

/* The first piece without Bcc: the header block stripped, and what was read past it. */
static int
reader_first(struct outbox_reader *rd, const char **ret_data, size_t *ret_len, struct mp_err *err)
{
	struct head_end he;
	size_t n, stripped;
	int r;

	if ((r = head_block_read(rd->fd, false, &rd->buf, &n, &he, err)) < 0)
		return r;
	/* head_block_read() allocates in whole chunks: at least one, and at least n. */
	rd->cap = n > OB_CHUNK ? n : OB_CHUNK;
	stripped = strip_bcc(rd->buf, he.fields_end);
	memmove(rd->buf + stripped, rd->buf + he.fields_end, n - he.fields_end);
	*ret_data = rd->buf;
	*ret_len = stripped + n - he.fields_end;
	return 0;
}

int
outbox_reader_read(void *reader, const char **ret_data, size_t *ret_len, struct mp_err *err)
{
	struct outbox_reader *rd = reader;
	size_t got = 0;
	int r;

	if (!rd->started) {
		rd->started = true;
		if (!rd->bcc) {
			if ((r = reader_first(rd, ret_data, ret_len, err)) < 0)
				return r;
			if (*ret_len > 0)
				return 0;
		}
	}
	if (!rd->buf) {
		rd->buf = malloc(OB_CHUNK);
		if (!rd->buf)
			return mp_err_oom(err);
		rd->cap = OB_CHUNK;
	}
	if (!rd->eof && (r = scan_read(rd->fd, rd->buf, rd->cap, &got, err)) < 0)
		return r;
	rd->eof = got == 0;
	*ret_data = rd->buf;
	*ret_len = got;
	return 0;
}

void
outbox_reader_free(struct outbox_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	free(r);
}

/* ---- the list of queued messages ---- */

void
outbox_items_free(struct outbox_item *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].base);
		free(v[i].path);
	}
	free(v);
}

struct items {
	struct outbox_item *v;
	size_t n, cap;
};

static int
items_push(struct items *it, const char *dir, const char *sub, const char *name)
{
	const char *info = strstr(name, ":2,");
	struct outbox_item x;

	if (it->n == it->cap) {
		size_t cap = it->cap ? it->cap * 2 : 16;
		struct outbox_item *v = realloc(it->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		it->v = v;
		it->cap = cap;
	}
	x.base = info ? util_strndup(name, (size_t)(info - name)) : strdup(name);
	x.path = ob_path(dir, sub, name);
	if (!x.base || !x.path) {
		free(x.base);
		free(x.path);
		return -ENOMEM;
	}
	it->v[it->n++] = x;
	return 0;
}

static int
items_read_sub(struct items *it, const char *dir, const char *sub, struct mp_err *err)
{
	char *path = ob_path(dir, sub, NULL);
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (!path)
		return mp_err_oom(err);
	d = opendir(path);
	if (!d) {
		r = errno == ENOENT ? 0 : ob_io(err, -errno, "cannot read", path);
		free(path);
		return r;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				r = ob_io(err, -errno, "cannot read", path);
			break;
		}
		if (de->d_name[0] == '.')
			continue;
		if ((r = items_push(it, dir, sub, de->d_name)) < 0) {
			r = mp_err_oom(err);
			break;
		}
	}
	closedir(d);
	free(path);
	return r;
}

static int
item_cmp(const void *a, const void *b)
{
	const struct outbox_item *x = a, *y = b;
	int c = strcmp(x->base, y->base);

	return c ? c : strcmp(x->path, y->path);
}

int
outbox_list(const char *dir, struct outbox_item **ret, size_t *ret_n, struct mp_err *err)
{
	struct items it = { .v = NULL };
	int r;

	if ((r = items_read_sub(&it, dir, "new", err)) < 0 ||
	    (r = items_read_sub(&it, dir, "cur", err)) < 0) {
		outbox_items_free(it.v, it.n);
		return r;
	}
	if (it.n > 1)
		qsort(it.v, it.n, sizeof(*it.v), item_cmp);
	*ret = it.v;
	*ret_n = it.n;
	return 0;
}

/* ---- envelopes ---- */

void
outbox_env_free(struct outbox_env *e)
{
	if (!e)
		return;
	free(e->from);
	for (size_t i = 0; i < e->nrcpts; i++)
		free(e->rcpts[i]);
	free(e->rcpts);
	memset(e, 0, sizeof(*e));
}

static bool
env_addr_ok(const char *p, size_t n, bool empty_ok)
{
	if (n > ADDR_LEN_MAX || (n == 0 && !empty_ok))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return false;
	return true;
}

/* One line of an envelope after the first, [p, p+n) without its LF. */
static int
env_line(struct outbox_env *e, struct addr_list *l, const char *p, size_t n)
{
	if (n >= 5 && memcmp(p, "from ", 5) == 0) {
		if (e->from || !env_addr_ok(p + 5, n - 5, true))
			return -EBADMSG;
		e->from = util_strndup(p + 5, n - 5);
		return e->from ? 0 : -ENOMEM;
	}
	if (n >= 5 && memcmp(p, "rcpt ", 5) == 0) {
		char *a;
		int r;

		if (!env_addr_ok(p + 5, n - 5, false))
			return -EBADMSG;
		a = util_strndup(p + 5, n - 5);
		if (!a)
			return -ENOMEM;
		r = addr_list_add(l, a, OUTBOX_RCPT_MAX);
		free(a);
		return r == -E2BIG ? -EBADMSG : r < 0 ? r : 0;
	}
	return -EBADMSG;
}

static int
env_parse(const char *t, size_t len, struct outbox_env *ret)
{
	struct outbox_env e = { .from = NULL };
	struct addr_list l = { .v = NULL };
	size_t pos = sizeof(OB_ENV_MAGIC) - 1;
	int r = 0;

	if (len < pos || memcmp(t, OB_ENV_MAGIC, pos) != 0 || t[len - 1] != '\n')
		return -EBADMSG;
	while (pos < len && r == 0) {
		const char *lf = memchr(t + pos, '\n', len - pos);

		r = env_line(&e, &l, t + pos, (size_t)(lf - t) - pos);
		pos = (size_t)(lf - t) + 1;
	}
	if (r == 0 && l.n == 0)
		r = -EBADMSG;
	if (r < 0) {
		addr_list_free(&l);
		outbox_env_free(&e);
		return r;
	}
	e.rcpts = addr_list_take(&l, &e.nrcpts);
	*ret = e;
	return 0;
}

static int
read_small(int fd, size_t max, char **ret, size_t *ret_n)
{
	struct stat st;
	size_t n = 0, cap;
	char *buf;

	/* room for what the file holds now (one byte more shows it grew past max) */
	cap = fstat(fd, &st) == 0 && st.st_size >= 0 && (uint64_t)st.st_size < max ?
	      (size_t)st.st_size : max;
	buf = malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	while (n <= cap) {
		ssize_t got = read(fd, buf + n, cap + 1 - n);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int r = -errno;

			free(buf);
			return r;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	*ret = buf;
	*ret_n = n;
	return 0;
}

int
outbox_envelope_read(const char *dir, const char *base, struct outbox_env *ret, struct mp_err *err)
{
	char *path = ob_path(dir, "envelopes", base), *text = NULL;
	size_t n = 0;
	int fd, r;

	if (!path)
		return mp_err_oom(err);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = errno == ENOENT ? -ENOENT : ob_io(err, -errno, "cannot open", path);
		free(path);
		return r;
	}
	r = read_small(fd, OB_ENV_MAX, &text, &n);
	close(fd);
	if (r < 0)
		r = ob_io(err, r, "cannot read", path);
	else if (n > OB_ENV_MAX)
		r = mp_err_set(err, -EBADMSG, MP_EX_DATAERR, "damaged envelope %s: too large", path);
	else if ((r = env_parse(text, n, ret)) == -EBADMSG)
		r = mp_err_set(err, -EBADMSG, MP_EX_DATAERR, "damaged envelope %s", path);
	else if (r < 0)
		r = mp_err_oom(err);
	free(text);
	free(path);
	return r;
}

/* The envelope's text: magic, from, rcpts. */
static char *
env_render(const char *from, char *const *rcpts, size_t n, size_t *ret_len)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return NULL;
	fputs(OB_ENV_MAGIC, f);
	if (from)
		fprintf(f, "from %s\n", from);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "rcpt %s\n", rcpts[i]);
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	*ret_len = len;
	return text;
}

static int
env_write(const char *dir, const char *base, const char *from, char *const *rcpts, size_t n,
	  struct mp_err *err)
{
	char *edir = ob_path(dir, "envelopes", NULL), *tmp = NULL, *path = NULL, *text;
	size_t len = 0;
	int fd = -1, r;

	text = env_render(from, rcpts, n, &len);
	path = ob_path(dir, "envelopes", base);
	if (!edir || !text || !path || asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL;
		r = mp_err_oom(err);
		goto out;
	}
	if ((r = util_mkdir_p(edir, 0700)) < 0) {
		r = ob_io(err, r, "cannot create", edir);
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = ob_io(err, -errno, "cannot create", tmp);
		goto out;
	}
	if ((r = util_write_all(fd, text, len)) < 0 || (fsync(fd) < 0 && (r = -errno) < 0)) {
		r = ob_io(err, r, "cannot write", tmp);
		goto out;
	}
	if (close(fd) < 0 && errno != EINTR) {
		fd = -1;
		r = ob_io(err, -errno, "cannot write", tmp);
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = ob_io(err, -errno, "cannot rename", tmp);
		goto out;
	}
	if ((r = util_fsync_dir(edir)) < 0) {
		unlink(path);
		r = ob_io(err, r, "cannot sync", edir);
	}
out:
	if (fd >= 0)
		close(fd);
	if (r < 0 && tmp)
		unlink(tmp);
	free(edir);
	free(tmp);
	free(path);
	free(text);
	return r;
}

/* ---- queueing ---- */

/* Recipients and sender of a message being queued. */
struct queue_env {
	struct addr_list rcpts;
	char *from;                /* NULL: none given; "" the null sender */
	bool write;                /* an envelope is written */
};

static int
queue_env_make(const struct outbox_head *h, const struct outbox_queue_opts *o,
	       struct queue_env *q, struct mp_err *err)
{
	int r;

	for (size_t i = 0; i < o->nrcpts; i++) {
		r = addr_list_parse(&q->rcpts, o->rcpts[i], strlen(o->rcpts[i]), OUTBOX_RCPT_MAX);
		if (r == -ENOMEM)
			return mp_err_oom(err);
		if (r == -E2BIG)
			return mp_err_set(err, -EBADMSG, MP_EX_DATAERR,
					  "over %d recipients, or one over %d bytes", OUTBOX_RCPT_MAX,
					  ADDR_LEN_MAX);
		if (r < 0)
			return mp_err_set(err, -EBADMSG, MP_EX_DATAERR, "recipient %s: not an address",
					  o->rcpts[i]);
	}
	for (size_t i = 0; o->from_headers && i < h->nrcpts; i++) {
		r = addr_list_add(&q->rcpts, h->rcpts[i], OUTBOX_RCPT_MAX);
		if (r == -ENOMEM)
			return mp_err_oom(err);
		if (r < 0)
			return mp_err_set(err, -EBADMSG, MP_EX_DATAERR, "over %d recipients",
					  OUTBOX_RCPT_MAX);
	}
	if (q->rcpts.n == 0)
		return ob_bad(err, "no recipients");
	if (o->from) {
		const char *f = o->from;

		if (strcmp(f, "") == 0 || strcmp(f, "<>") == 0)
			q->from = strdup("");
		else if ((r = addr_parse_first(f, strlen(f), &q->from)) <= 0)
			return r == -ENOMEM ? mp_err_oom(err)
			     : mp_err_set(err, -EBADMSG, MP_EX_DATAERR, "sender %s: not an address", f);
		if (!q->from)
			return mp_err_oom(err);
	}
	q->write = o->nrcpts > 0 || o->from;
	return 0;
}

/* Whether s is fit for the right side of a Message-ID: a dot-atom or a literal. */
static bool
msgid_domain_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 255)
		return false;
	if (s[0] == '[')
		return s[n - 1] == ']' && strcspn(s, "\\ \t\r\n") == n;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr("-._", s[i]) ||
		      (unsigned char)s[i] > 127))
			return false;
	return s[0] != '.' && s[n - 1] != '.';
}

static void
added_fields(FILE *f, const struct outbox_head *h, const char *domain)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	const char *eol = h->crlf ? "\r\n" : "\n";
	char host[256];

	if (!h->has_message_id) {
		struct timespec ts;
		unsigned char rnd[10];
		char hex[sizeof(rnd) * 2 + 1];

		clock_gettime(CLOCK_REALTIME, &ts);
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
			uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);

			memcpy(rnd, &x, sizeof(x));
			rnd[8] = rnd[9] = 0;
		}
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
		if (!msgid_domain_ok(domain)) {
			domain = "localhost.invalid";
			if (gethostname(host, sizeof(host) - 1) == 0) {
				host[sizeof(host) - 1] = '\0';
				if (msgid_domain_ok(host))
					domain = host;
			}
		}
		fprintf(f, "Message-ID: <%lld.%s@%s>%s", (long long)ts.tv_sec, hex, domain, eol);
	}
	if (!h->has_date) {
		time_t now = time(NULL);
		struct tm tm;
		long off;

		localtime_r(&now, &tm);
		off = tm.tm_gmtoff / 60;
		fprintf(f, "Date: %s, %d %s %04d %02d:%02d:%02d %c%02ld%02ld%s", days[tm.tm_wday],
			tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
			tm.tm_sec, off < 0 ? '-' : '+', labs(off) / 60, labs(off) % 60, eol);
	}
}

/* The header block as it is stored: the fields, the added ones, the empty line. */
static int
queue_head(struct maildir_msg *m, const struct outbox_head *h, const char *domain,
	   struct mp_err *err)
{
	const char *eol = h->crlf ? "\r\n" : "\n";
	char *add = NULL;
	size_t addlen = 0;
	FILE *f = open_memstream(&add, &addlen);
	int r;

	if (!f)
		return mp_err_oom(err);
	/* A last field cut off by the end of the input needs its line end first. */
	if (h->fields_len > 0 && h->text[h->fields_len - 1] != '\n')
		fputs(eol, f);
	added_fields(f, h, domain);
	if (h->fields_len == h->len && !h->ended)
		fputs(eol, f);
	if (fclose(f) != 0) {
		free(add);
		return mp_err_oom(err);
	}
	r = maildir_msg_write(m, h->text, h->fields_len, err);
	if (r == 0)
		r = maildir_msg_write(m, add, addlen, err);
	if (r == 0)
		r = maildir_msg_write(m, h->text + h->fields_len, h->len - h->fields_len, err);
	free(add);
	return r;
}

/*
 * The body, copied with sendmail's end of input: a line holding a lone "."
 * (LF or CRLF) when dot_ends. bol: at a line start; held: the "." or ".\r"
 * held back at one; done: the dot line was seen.
 */
struct body_copy {
	struct maildir_msg *m;
	bool dot_ends;
	bool bol;
	unsigned held;
	bool done;
	uint64_t size;
};

static int
body_emit(struct body_copy *b, const char *p, size_t n, struct mp_err *err)
{
	b->size += n;
	if (b->size > OUTBOX_MSG_MAX)
		return mp_err_set(err, -EBADMSG, MP_EX_DATAERR, "the message is over %llu bytes",
				  (unsigned long long)OUTBOX_MSG_MAX);
	return n ? maildir_msg_write(b->m, p, n, err) : 0;
}

static int
body_feed(struct body_copy *b, const char *p, size_t n, struct mp_err *err)
{
	size_t run = 0;
	int r;

	if (!b->dot_ends)
		return body_emit(b, p, n, err);
	for (size_t i = 0; i < n && !b->done; i++) {
		char c = p[i];

		if (b->held) {
			if (c == '\n') {
				b->done = true;
				break;
			}
			if (c == '\r' && b->held == 1) {
				b->held = 2;
				run = i + 1;
				continue;
			}
			if ((r = body_emit(b, ".\r", b->held, err)) < 0)
				return r;
			b->held = 0;
			run = i;
		} else if (b->bol && c == '.') {
			if ((r = body_emit(b, p + run, i - run, err)) < 0)
				return r;
			b->held = 1;
			b->bol = false;
			run = i + 1;
			continue;
		}
		b->bol = c == '\n';
	}
	if (b->held || b->done)
		return 0;
	return body_emit(b, p + run, n - run, err);
}

static int
queue_body(struct maildir_msg *m, const struct outbox_head *h, int fd, bool dot_ends,
	   struct mp_err *err)
{
	struct body_copy b = { .m = m, .dot_ends = dot_ends, .bol = true };
	char *buf;
	size_t got;
	int r;

	b.size = h->len;
	if ((r = body_feed(&b, h->rest, h->restlen, err)) < 0 || h->ended || b.done)
		return r;
	buf = malloc(OB_CHUNK);
	if (!buf)
		return mp_err_oom(err);
	while (!b.done) {
		if ((r = scan_read(fd, buf, OB_CHUNK, &got, err)) < 0 || got == 0)
			break;
		if ((r = body_feed(&b, buf, got, err)) < 0)
			break;
	}
	free(buf);
	/* A held "." at the end of the input is the end marker; ".\r" is text. */
	if (r == 0 && b.held == 2 && !b.done)
		r = body_emit(&b, ".\r", 2, err);
	return r;
}

/*
 * Writes, syncs and publishes m (freed in every case). On error nothing is
 * left: not the tmp file, nor a message whose new/ entry is not durable
 * (it would be sent though the caller was told it failed).
 */
static int
queue_message(const char *dir, struct maildir *md, struct maildir_msg *m,
	      const struct outbox_head *h, int fd, const struct outbox_queue_opts *o,
	      const char *name, struct mp_err *err)
{
	char *path;
	int r;

	if ((r = queue_head(m, h, o->domain, err)) < 0 ||
	    (r = queue_body(m, h, fd, o->dot_ends, err)) < 0 ||
	    (r = maildir_msg_sync(m, err)) < 0) {
		maildir_msg_discard(m);
		return r;
	}
	if ((r = maildir_msg_publish(m, NULL, err)) < 0) {
		path = ob_path(dir, "tmp", name);
		if (path)
			unlink(path);
		free(path);
		return r;
	}
	if ((r = maildir_sync_new(md, err)) < 0) {
		path = ob_path(dir, "new", name);
		if (path)
			unlink(path);
		free(path);
	}
	return r;
}

int
outbox_queue(const char *dir, const struct outbox_head *h, int fd,
	     const struct outbox_queue_opts *o, char **ret_base, struct mp_err *err)
{
	struct queue_env q = { .from = NULL };
	struct maildir *md = NULL;
	struct maildir_msg *m = NULL;
	char *name = NULL, *envpath = NULL;
	int r;

	if ((r = queue_env_make(h, o, &q, err)) < 0)
		goto out;
	if ((r = maildir_open(dir, OB_TAG, &md, err)) < 0 || (r = maildir_msg_new(md, &m, err)) < 0)
		goto out;
	name = strdup(maildir_msg_name(m));
	if (!name) {
		maildir_msg_discard(m);
		r = mp_err_oom(err);
		goto out;
	}
	if (q.write) {
		envpath = ob_path(dir, "envelopes", name);
		if (!envpath)
			r = mp_err_oom(err);
		else
			r = env_write(dir, name, q.from, q.rcpts.v, q.rcpts.n, err);
		if (r < 0) {
			free(envpath);
			envpath = NULL;   /* not written: nothing to remove */
			maildir_msg_discard(m);
			goto out;
		}
	}
	r = queue_message(dir, md, m, h, fd, o, name, err);
	if (r < 0 && envpath)
		unlink(envpath);
out:
	if (r == 0 && ret_base) {
		*ret_base = name;
		name = NULL;
	}
	free(name);
	free(envpath);
	addr_list_free(&q.rcpts);
	free(q.from);
	maildir_close(md);
	return r;
}

/* ---- after sending ---- */

static int
unlink_sync(const char *path, const char *dir, struct mp_err *err)
{
	int r;

	if (unlink(path) < 0) {
		if (errno == ENOENT)
			return 0;
		return ob_io(err, -errno, "cannot remove", path);
	}
	if ((r = util_fsync_dir(dir)) < 0)
		return ob_io(err, r, "cannot sync", dir);
	return 0;
}

int
outbox_remove(const char *dir, const struct outbox_item *it, struct mp_err *err)
{
	char *env = ob_path(dir, "envelopes", it->base), *edir = ob_path(dir, "envelopes", NULL);
	char *mdir = strdup(it->path), *slash;
	int r;

	if (!env || !edir || !mdir) {
		r = mp_err_oom(err);
		goto out;
	}
	slash = strrchr(mdir, '/');
	if (slash)
		*slash = '\0';
	/* The message first: an envelope without its message is only tidied away. */
	if ((r = unlink_sync(it->path, slash ? mdir : ".", err)) == 0)
		r = unlink_sync(env, edir, err);
out:
	free(env);
	free(edir);
	free(mdir);
	return r;
}

/* Whether base names a message in new/, cur/ or tmp/. */
static bool
tidy_has_message(const char *dir, const struct outbox_item *v, size_t n, const char *base)
{
	char *tmp = ob_path(dir, "tmp", base);
	bool found = !tmp || access(tmp, F_OK) == 0 || errno != ENOENT;

	free(tmp);
	for (size_t i = 0; i < n && !found; i++)
		found = strcmp(v[i].base, base) == 0;
	return found;
}

void
outbox_tidy(const char *dir)
{
	char *edir = ob_path(dir, "envelopes", NULL);
	struct outbox_item *v = NULL;
	struct dirent *de;
	size_t n = 0;
	time_t now = time(NULL);
	bool removed = false;
	DIR *d;

	if (!edir || outbox_list(dir, &v, &n, NULL) < 0 || !(d = opendir(edir))) {
		free(edir);
		outbox_items_free(v, n);
		return;
	}
	while ((de = readdir(d))) {
		struct stat st;
		size_t len = strlen(de->d_name);
		bool is_tmp = len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0;
		char *base;

		if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &st, 0) < 0 ||
		    !S_ISREG(st.st_mode) || now - st.st_mtime < OB_TIDY_AGE_S)
			continue;
		base = util_strndup(de->d_name, is_tmp ? len - 4 : len);
		if (base && (is_tmp || !tidy_has_message(dir, v, n, base)) &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed = true;
		free(base);
	}
	closedir(d);
	if (removed)
		(void)util_fsync_dir(edir);
	free(edir);
	outbox_items_free(v, n);
}
