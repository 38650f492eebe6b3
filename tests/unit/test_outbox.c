/* The outbox: head reading, queueing, scanning sizes, the Bcc-less reader, envelopes, list, tidy. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mailpull/outbox.h"

struct fixture {
	char dir[64];
	char ob[128];
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	memcpy(fx->dir, "/tmp/mp-outbox-XXXXXX", sizeof("/tmp/mp-outbox-XXXXXX"));
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->ob, sizeof(fx->ob), "%s/Mail/.Outbox", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

/* A file holding data[0..len), offset 0. */
static int
mem_fd(const void *data, size_t len)
{
	int fd = memfd_create("msg", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static char *
slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*ret_len = (size_t)n;
	return buf;
}

static void
spit(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
test_head_lf(void **state)
{
	const char *msg = "From: Me <me@x.example>\nTo: b@y.example,\n c@z.example\nCc: d@w.example\n"
			  "Bcc: e@v.example\nSubject: hi\n\nbody\nmore\n";
	struct outbox_head h;
	int fd = mem_fd(msg, strlen(msg));

	(void)state;
	assert_int_equal(outbox_head_read(fd, true, &h, NULL), 0);
	assert_string_equal(h.from_addr, "me@x.example");
	assert_int_equal(h.nrcpts, 4);
	assert_string_equal(h.rcpts[0], "b@y.example");
	assert_string_equal(h.rcpts[3], "e@v.example");
	assert_true(h.has_from);
	assert_false(h.has_message_id);
	assert_false(h.has_date);
	assert_false(h.crlf);
	assert_false(h.ended);
	assert_int_equal(h.len, strlen(msg) - strlen("body\nmore\n"));
	assert_int_equal(h.fields_len, h.len - 1);
	assert_int_equal(h.restlen, strlen("body\nmore\n"));
	assert_memory_equal(h.rest, "body\nmore\n", h.restlen);
	outbox_head_free(&h);
	close(fd);
}

static void
test_head_crlf_folded(void **state)
{
	const char *msg = "Message-ID: <id@x>\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n"
			  "TO:\r\n  \"A B\" <a@x.example>,\r\n\tc@x.example\r\n\r\nbody\r\n";
	struct outbox_head h;
	int fd = mem_fd(msg, strlen(msg));

	(void)state;
	assert_int_equal(outbox_head_read(fd, false, &h, NULL), 0);
	assert_true(h.crlf);
	assert_true(h.has_message_id);
	assert_true(h.has_date);
	assert_false(h.has_from);
	assert_null(h.from_addr);
	assert_int_equal(h.nrcpts, 2);
	assert_string_equal(h.rcpts[0], "a@x.example");
	assert_string_equal(h.rcpts[1], "c@x.example");
	assert_int_equal(h.len - h.fields_len, 2);
	outbox_head_free(&h);
	close(fd);
}

static void
test_head_ends(void **state)
{
	struct outbox_head h;
	int fd;

	(void)state;
	/* No empty line: the whole input is the header block. */
	fd = mem_fd("Subject: x\nTo: a@b", 18);
	assert_int_equal(outbox_head_read(fd, true, &h, NULL), 0);
	assert_true(h.ended);
	assert_int_equal(h.len, 18);
	assert_int_equal(h.fields_len, 18);
	assert_int_equal(h.restlen, 0);
	outbox_head_free(&h);
	close(fd);
	/* A lone dot ends the message, LF or CRLF... */
	fd = mem_fd("To: a@b\n.\nmore\n", 15);
	assert_int_equal(outbox_head_read(fd, true, &h, NULL), 0);
	assert_true(h.ended);
	assert_int_equal(h.len, 8);
	outbox_head_free(&h);
	close(fd);
	fd = mem_fd("To: a@b\r\n.\r\nmore\r\n", 18);
	assert_int_equal(outbox_head_read(fd, true, &h, NULL), 0);
	assert_true(h.ended);
	assert_int_equal(h.len, 9);
	outbox_head_free(&h);
	close(fd);
	/* ...unless -i: then it is a line that is not a field, the body's first. */
	fd = mem_fd("To: a@b\n.\nmore\n", 15);
	assert_int_equal(outbox_head_read(fd, false, &h, NULL), 0);
	assert_false(h.ended);
	assert_int_equal(h.len, 8);
	assert_int_equal(h.fields_len, 8);
	assert_int_equal(h.restlen, 7);
	assert_memory_equal(h.rest, ".\nmore\n", 7);
	outbox_head_free(&h);
	close(fd);
	/* Empty input. */
	fd = mem_fd("", 0);
	assert_int_equal(outbox_head_read(fd, true, &h, NULL), 0);
	assert_true(h.ended);
	assert_int_equal(h.len, 0);
	outbox_head_free(&h);
	close(fd);
}

static void
test_head_bad(void **state)
{
	struct mp_err err = { 0 };
	struct outbox_head h;
	char *big;
	size_t n = OUTBOX_HEAD_MAX + 100;
	int fd;

	(void)state;
	fd = mem_fd("To: a@b\nX: a\0b\n\n", 17);
	assert_int_equal(outbox_head_read(fd, true, &h, &err), -EBADMSG);
	assert_int_equal(err.ex, MP_EX_DATAERR);
	close(fd);
	mp_err_clear(&err);
	fd = mem_fd("To: a@b@c\n\n", 11);
	assert_int_equal(outbox_head_read(fd, true, &h, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "To"));
	close(fd);
	/* Over the cap, one long folded field. */
	big = malloc(n);
	memset(big, ' ', n);
	memcpy(big, "X-Big: a\n", 9);
	for (size_t i = 100; i < n; i += 100)
		big[i] = '\n';
	fd = mem_fd(big, n);
	assert_int_equal(outbox_head_read(fd, true, &h, NULL), -EBADMSG);
	close(fd);
	free(big);
}

/* Reads a queued message back from new/. */
static char *
queued(const struct fixture *fx, const char *base, size_t *len)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/new/%s", fx->ob, base);
	return slurp(path, len);
}

/* Queues msg; returns the base name. */
static char *
queue_one(const struct fixture *fx, const char *msg, size_t len, const struct outbox_queue_opts *o,
	  int want)
{
	struct outbox_head h;
	struct mp_err err = { 0 };
	char *base = NULL;
	int fd = mem_fd(msg, len);

	assert_int_equal(outbox_head_read(fd, o->dot_ends, &h, NULL), 0);
	if (outbox_queue(fx->ob, &h, fd, o, &base, &err) != want)
		fail_msg("outbox_queue: %s", err.msg);
	outbox_head_free(&h);
	close(fd);
	return base;
}

static size_t
count_dir(const struct fixture *fx, const char *sub)
{
	char cmd[512];
	size_t n = 0;
	FILE *p;
	int c;

	snprintf(cmd, sizeof(cmd), "ls -A '%s/%s' 2>/dev/null", fx->ob, sub);
	p = popen(cmd, "r");
	while ((c = fgetc(p)) != EOF)
		n += c == '\n';
	pclose(p);
	return n;
}

static void
test_queue_adds_fields(void **state)
{
	struct fixture *fx = *state;
	const char *msg = "From: Me <me@x.example>\nTo: b@y.example\nSubject: hi\n\nbody\n";
	const char *rcpt[] = { "z@y.example" };
	struct outbox_queue_opts o = { .rcpts = rcpt, .nrcpts = 1, .dot_ends = true,
				       .domain = "x.example" };
	char *base = queue_one(fx, msg, strlen(msg), &o, 0), *text, *mid, *date;
	struct outbox_env env;
	size_t len;

	text = queued(fx, base, &len);
	assert_non_null(text);
	/* The fields, then Message-ID and Date, then the rest as it came. */
	assert_memory_equal(text, msg, 52);
	mid = text + 52;
	assert_memory_equal(mid, "Message-ID: <", 13);
	assert_non_null(strstr(mid, "@x.example>\nDate: "));
	date = strstr(mid, "\nDate: ") + 1;
	assert_string_equal(strchr(date, '\n'), "\n\nbody\n");
	/* "Date: Sat, 5 Dec 2026 07:00:18 +0000": day, month, numeric zone. */
	assert_true(date[9] == ',' && (date[strcspn(date, "+-")] == '+' ||
					date[strcspn(date, "+-")] == '-'));
	assert_int_equal(outbox_envelope_read(fx->ob, base, &env, NULL), 0);
	assert_null(env.from);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0], "z@y.example");
	outbox_env_free(&env);
	assert_int_equal(count_dir(fx, "tmp"), 0);
	assert_int_equal(count_dir(fx, "envelopes"), 1);
	free(text);
	free(base);
}

static void
test_queue_keeps_existing(void **state)
{
	struct fixture *fx = *state;
	const char *msg = "Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nTo: a@x\r\nMessage-Id: <a@b>\r\n"
			  "\r\nbody\r\n.\r\nafter\r\n";
	struct outbox_queue_opts o = { .from_headers = true, .dot_ends = true };
	char *base = queue_one(fx, msg, strlen(msg), &o, 0), *text;
	struct outbox_env env;
	size_t len;

	text = queued(fx, base, &len);
	/* Nothing added, the dot line and what follows dropped; no envelope. */
	assert_int_equal(len, strlen(msg) - strlen(".\r\nafter\r\n"));
	assert_memory_equal(text, msg, len);
	assert_int_equal(outbox_envelope_read(fx->ob, base, &env, NULL), -ENOENT);
	free(text);
	free(base);
}

static void
test_queue_crlf_and_cut_field(void **state)
{
	struct fixture *fx = *state;
	const char *msg = "To: a@x\r\nSubject: s\r\n\r\nbody\r\n";
	struct outbox_queue_opts o = { .from_headers = true, .dot_ends = true, .domain = "d.example" };
	char *base = queue_one(fx, msg, strlen(msg), &o, 0), *text, *date;
	size_t len;

	text = queued(fx, base, &len);
	/* Added fields end as the message's lines do. */
	assert_memory_equal(text, "To: a@x\r\nSubject: s\r\nMessage-ID: <", 34);
	date = strstr(text, "@d.example>\r\nDate: ");
	assert_non_null(date);
	assert_string_equal(strstr(date, "\r\n\r\n"), "\r\n\r\nbody\r\n");
	free(text);
	free(base);
	/* A last field cut off by the end of input gets its line end before the added ones. */
	base = queue_one(fx, "To: a@x\nSubject: no end", 23, &o, 0);
	text = queued(fx, base, &len);
	assert_memory_equal(text, "To: a@x\nSubject: no end\nMessage-ID: <", 37);
	assert_int_equal(text[len - 1], '\n');
	assert_null(strstr(text, "\n\n"));
	free(text);
	free(base);
}

static void
test_queue_dot_handling(void **state)
{
	struct fixture *fx = *state;
	const char *msg = "Date: x\nMessage-ID: <a@b>\n\n..stuffed\n.x\nline\n.\r\nrest\n";
	const char *rcpt[] = { "a@b" };
	struct outbox_queue_opts o = { .rcpts = rcpt, .nrcpts = 1, .dot_ends = true };
	char *base, *text;
	size_t len;

	(void)state;
	base = queue_one(fx, msg, strlen(msg), &o, 0);
	text = queued(fx, base, &len);
	assert_string_equal(text, "Date: x\nMessage-ID: <a@b>\n\n..stuffed\n.x\nline\n");
	free(text);
	free(base);
	/* -i: everything, byte for byte. */
	o.dot_ends = false;
	base = queue_one(fx, msg, strlen(msg), &o, 0);
	text = queued(fx, base, &len);
	assert_string_equal(text, msg);
	free(text);
	free(base);
	/* A final "." without a line end ends the input too; ".\r" is kept. */
	o.dot_ends = true;
	base = queue_one(fx, "Date: x\nMessage-ID: <a@b>\n\nz\n.", 30, &o, 0);
	text = queued(fx, base, &len);
	assert_string_equal(text, "Date: x\nMessage-ID: <a@b>\n\nz\n");
	free(text);
	free(base);
}

/* The dot line split across reads: the last byte of the first read is the ".". */
static void
test_queue_dot_across_reads(void **state)
{
	struct fixture *fx = *state;
	const char *head = "Date: x\nMessage-ID: <a@b>\n\n";
	size_t n = 65536 + 100, len;
	char *msg = malloc(n), *base, *text;
	const char *rcpt[] = { "a@b" };
	struct outbox_queue_opts o = { .rcpts = rcpt, .nrcpts = 1, .dot_ends = true };

	memset(msg, 'a', n);
	memcpy(msg, head, strlen(head));
	for (size_t i = 100; i < 65534; i += 100)
		msg[i] = '\n';
	msg[65534] = '\n';
	msg[65535] = '.';
	msg[65536] = '\n';
	base = queue_one(fx, msg, n, &o, 0);
	text = queued(fx, base, &len);
	assert_int_equal(len, 65535);
	assert_memory_equal(text, msg, len);
	free(text);
	free(base);
	/* Not a dot line: ".a" across the boundary is kept whole. */
	msg[65536] = 'a';
	base = queue_one(fx, msg, n, &o, 0);
	text = queued(fx, base, &len);
	assert_int_equal(len, n);
	assert_memory_equal(text, msg, n);
	free(text);
	free(base);
	free(msg);
}

static void
test_queue_no_header_block(void **state)
{
	struct fixture *fx = *state;
	const char *rcpt[] = { "Root <root>, b@x" };
	struct outbox_queue_opts o = { .rcpts = rcpt, .nrcpts = 1, .from = "<>", .dot_ends = true };
	char *base = queue_one(fx, "hello\nworld\n", 12, &o, 0), *text, *blank;
	struct outbox_env env;
	size_t len;

	text = queued(fx, base, &len);
	assert_memory_equal(text, "Message-ID: <", 13);
	blank = strstr(text, "\n\n");
	assert_non_null(blank);
	assert_string_equal(blank, "\n\nhello\nworld\n");
	assert_int_equal(outbox_envelope_read(fx->ob, base, &env, NULL), 0);
	assert_string_equal(env.from, "");
	assert_int_equal(env.nrcpts, 2);
	assert_string_equal(env.rcpts[0], "root");
	assert_string_equal(env.rcpts[1], "b@x");
	outbox_env_free(&env);
	free(text);
	free(base);
}

static void
test_queue_errors(void **state)
{
	struct fixture *fx = *state;
	struct outbox_queue_opts o = { .dot_ends = true };
	const char *bad[] = { "a@b@c" };
	const char *msg = "To: a@x\n\nbody\n";

	/* No recipient: not the To without -t, nothing left behind. */
	free(queue_one(fx, msg, strlen(msg), &o, -EBADMSG));
	o.rcpts = bad;
	o.nrcpts = 1;
	free(queue_one(fx, msg, strlen(msg), &o, -EBADMSG));
	o.rcpts = NULL;
	o.nrcpts = 0;
	o.from_headers = true;
	o.from = "not an address";
	free(queue_one(fx, msg, strlen(msg), &o, -EBADMSG));
	o.from = NULL;
	free(queue_one(fx, "Subject: x\n\n", 12, &o, -EBADMSG));
	assert_int_equal(count_dir(fx, "new"), 0);
	assert_int_equal(count_dir(fx, "tmp"), 0);
	assert_int_equal(count_dir(fx, "envelopes"), 0);
}

/* What the reader gives, all of it. */
static char *
read_all(int fd, bool bcc, size_t *ret_len)
{
	struct outbox_reader *rd;
	const char *p;
	char *out = NULL;
	size_t len = 0, n;

	assert_int_equal(outbox_reader_open(fd, bcc, &rd, NULL), 0);
	for (;;) {
		assert_int_equal(outbox_reader_read(rd, &p, &n, NULL), 0);
		if (n == 0)
			break;
		out = realloc(out, len + n + 1);
		memcpy(out + len, p, n);
		len += n;
	}
	outbox_reader_free(rd);
	if (!out)
		out = calloc(1, 1);
	out[len] = '\0';
	*ret_len = len;
	return out;
}

/* The transmitted size of data, counted independently: CRLF line ends, a final CRLF added. */
static uint64_t
wire_count(const char *p, size_t n)
{
	uint64_t c = n;

	for (size_t i = 0; i < n; i++)
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			c++;
	if (n > 0 && p[n - 1] != '\n')
		c += 2;
	return c;
}

static void
check_scan_and_reader(const char *msg, const char *want_wire)
{
	size_t len = strlen(msg);
	struct outbox_scan s;
	struct mp_err err = { 0 };
	char *out;
	size_t n;
	int fd = mem_fd(msg, len);

	if (outbox_scan_fd(fd, &s, &err) != 0)
		fail_msg("%s: %s", msg, err.msg);
	assert_int_equal(s.size, len);
	assert_int_equal(s.crlf_size, wire_count(msg, len));
	out = read_all(fd, false, &n);
	assert_int_equal(n, strlen(want_wire));
	assert_memory_equal(out, want_wire, n);
	assert_int_equal(s.wire_size, wire_count(out, n));
	free(out);
	out = read_all(fd, true, &n);
	assert_int_equal(n, len);
	assert_memory_equal(out, msg, len);
	free(out);
	outbox_scan_free(&s);
	close(fd);
}

static void
test_bcc_strip_and_sizes(void **state)
{
	(void)state;
	check_scan_and_reader("From: a@x\nBcc: b@x,\n c@x\nTo: d@x\nbcc:e@x\n\nBcc: body\n", "From: a@x\nTo: d@x\n\nBcc: body\n");
	check_scan_and_reader("To: d@x\r\nBCC : b@x,\r\n\t c@x\r\nSubject: s\r\n\r\nbody", "To: d@x\r\nSubject: s\r\n\r\nbody");
	/* The Bcc field ends the file: the wire form ends in LF, nothing added. */
	check_scan_and_reader("To: a\nBcc: b", "To: a\n");
	check_scan_and_reader("Bcc: b\n", "");
	check_scan_and_reader("", "");
	/* Mixed line ends and a lone CR. */
	check_scan_and_reader("To: a\r\nX: \r\n\nb\rc\r\n\nd", "To: a\r\nX: \r\n\nb\rc\r\n\nd");
	/* "Bcc-Copy" and a body line are not Bcc. */
	check_scan_and_reader("Bcc-Copy: x\n\nBcc: y\n", "Bcc-Copy: x\n\nBcc: y\n");
}

static void
test_scan_facts(void **state)
{
	const char *msg = "From: \"Jö\" <jo@x.example>\nTo: a@y, b@y\nBcc: A@Y\nCc: c@z\n"
			  "Message-ID:  <id-1@x.example>  (c)\n\nbody \xc3\xa9\n";
	struct outbox_scan s;
	int fd = mem_fd(msg, strlen(msg));

	(void)state;
	assert_int_equal(outbox_scan_fd(fd, &s, NULL), 0);
	assert_string_equal(s.from_addr, "jo@x.example");
	assert_string_equal(s.message_id, "<id-1@x.example>");
	assert_int_equal(s.nrcpts, 4);
	assert_string_equal(s.rcpts[2], "A@Y");
	assert_true(s.has_bcc);
	assert_true(s.eightbit);
	assert_true(s.utf8);
	assert_false(s.has_nul);
	outbox_scan_free(&s);
	close(fd);
	fd = mem_fd("To: a@y\n\nbody \xc3\xa9\0\n", 18);
	assert_int_equal(outbox_scan_fd(fd, &s, NULL), 0);
	assert_true(s.eightbit);
	assert_false(s.utf8);
	assert_true(s.has_nul);
	assert_null(s.message_id);
	assert_false(s.has_bcc);
	outbox_scan_free(&s);
	close(fd);
}

/* A large body streams: sizes over many reads. */
static void
test_scan_large(void **state)
{
	size_t n = 300000;
	char *msg = malloc(n);
	struct outbox_scan s;
	int fd;

	(void)state;
	memset(msg, 'x', n);
	memcpy(msg, "Bcc: a@b\nTo: c@d\n\n", 18);
	for (size_t i = 100; i < n; i += 77)
		msg[i] = '\n';
	fd = mem_fd(msg, n);
	assert_int_equal(outbox_scan_fd(fd, &s, NULL), 0);
	assert_int_equal(s.size, n);
	assert_int_equal(s.crlf_size, wire_count(msg, n));
	assert_int_equal(s.wire_size, wire_count(msg + 9, n - 9));
	outbox_scan_free(&s);
	close(fd);
	free(msg);
}

static void
mk_outbox(const struct fixture *fx)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/Mail", fx->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(mkdir(fx->ob, 0700), 0);
}

static void
test_envelope_damaged(void **state)
{
	struct fixture *fx = *state;
	static const char *const bad[] = {
		"mailpull-envelope 1\nrcpt a@b",            /* torn: no final newline */
		"mailpull-envelope 2\nrcpt a@b\n",
		"mailpull-envelope 1\n",                    /* no recipient */
		"mailpull-envelope 1\nfrom a@b\n",
		"mailpull-envelope 1\nrcpt a@b\nhello\n",
		"mailpull-envelope 1\nrcpt \n",
		"mailpull-envelope 1\nrcpt a\rb\n",
		"mailpull-envelope 1\nfrom a\nfrom b\nrcpt a@b\n",
		"mailpull-envelope 1\n\nrcpt a@b\n",
		"",
	};
	char path[512];
	struct outbox_env env;
	struct mp_err err = { 0 };

	snprintf(path, sizeof(path), "%s/envelopes", fx->ob);
	assert_int_equal(outbox_envelope_read(fx->ob, "x", &env, &err), -ENOENT);
	assert_int_equal(err.code, 0);
	mk_outbox(fx);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/envelopes/x", fx->ob);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		spit(path, bad[i]);
		mp_err_clear(&err);
		if (outbox_envelope_read(fx->ob, "x", &env, &err) != -EBADMSG)
			fail_msg("envelope %zu read", i);
		assert_int_equal(err.ex, MP_EX_DATAERR);
	}
	spit(path, "mailpull-envelope 1\nrcpt a@b\nfrom s@t\nrcpt \"x y\"@c\n");
	assert_int_equal(outbox_envelope_read(fx->ob, "x", &env, NULL), 0);
	assert_string_equal(env.from, "s@t");
	assert_int_equal(env.nrcpts, 2);
	assert_string_equal(env.rcpts[1], "\"x y\"@c");
	outbox_env_free(&env);
}

static void
test_list_remove_tidy(void **state)
{
	struct fixture *fx = *state;
	static const char *const files[] = {
		"new/300.b", "cur/100.a:2,S", "new/.hidden", "cur/200.c", "envelopes/100.a",
		"envelopes/old-orphan", "envelopes/new-orphan", "envelopes/200.c",
		"envelopes/old.tmp", "tmp/250.t", "envelopes/250.t",
	};
	struct timespec old[2] = { { .tv_sec = time(NULL) - 7200 }, { .tv_sec = time(NULL) - 7200 } };
	struct outbox_item *v;
	char path[512];
	size_t n;

	assert_int_equal(outbox_list(fx->ob, &v, &n, NULL), 0);   /* missing: empty */
	assert_int_equal(n, 0);
	outbox_items_free(v, n);
	mk_outbox(fx);
	for (size_t i = 0; i < 3; i++) {
		static const char *const dirs[] = { "/new", "/cur", "/tmp" };

		snprintf(path, sizeof(path), "%s%s", fx->ob, dirs[i]);
		mkdir(path, 0700);
	}
	snprintf(path, sizeof(path), "%s/envelopes", fx->ob);
	mkdir(path, 0700);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", fx->ob, files[i]);
		spit(path, "x\n");
		if (strncmp(files[i], "envelopes/", 10) == 0 && strcmp(files[i], "envelopes/new-orphan"))
			utimensat(AT_FDCWD, path, old, 0);
	}
	assert_int_equal(outbox_list(fx->ob, &v, &n, NULL), 0);
	assert_int_equal(n, 3);
	assert_string_equal(v[0].base, "100.a");
	assert_string_equal(v[1].base, "200.c");
	assert_string_equal(v[2].base, "300.b");
	snprintf(path, sizeof(path), "%s/cur/100.a:2,S", fx->ob);
	assert_string_equal(v[0].path, path);
	assert_int_equal(outbox_remove(fx->ob, &v[0], NULL), 0);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/envelopes/100.a", fx->ob);
	assert_int_equal(access(path, F_OK), -1);
	/* Gone already: not an error. */
	assert_int_equal(outbox_remove(fx->ob, &v[0], NULL), 0);
	outbox_items_free(v, n);
	outbox_tidy(fx->ob);
	/* Kept: a message's (200.c, in tmp/ 250.t), a fresh orphan. Gone: old orphan, old .tmp. */
	assert_int_equal(count_dir(fx, "envelopes"), 3);
	snprintf(path, sizeof(path), "%s/envelopes/old-orphan", fx->ob);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/envelopes/250.t", fx->ob);
	assert_int_equal(access(path, F_OK), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_head_lf),
		cmocka_unit_test(test_head_crlf_folded),
		cmocka_unit_test(test_head_ends),
		cmocka_unit_test(test_head_bad),
		cmocka_unit_test_setup_teardown(test_queue_adds_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_keeps_existing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_crlf_and_cut_field, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_dot_handling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_dot_across_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_no_header_block, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_errors, setup, teardown),
		cmocka_unit_test(test_bcc_strip_and_sizes),
		cmocka_unit_test(test_scan_facts),
		cmocka_unit_test(test_scan_large),
		cmocka_unit_test_setup_teardown(test_envelope_damaged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_remove_tidy, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
