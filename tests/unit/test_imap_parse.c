/*
 * imap_parse: every response a fetcher reads (RFC 3501 section 7, RFC 9051),
 * each fed whole, one byte at a time and split in two at every offset, all of
 * which must give the same parse; malformed input must give a clear error.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailpull/imap_parse.h"

#define S(lit) lit, sizeof(lit) - 1

struct cfg {
	struct imap_parser_limits lim;
	uint64_t threshold;        /* 0: never stream by size */
	const char *items[2];      /* FETCH items to stream */
};

struct result {
	int rc;                    /* 0 all parsed, 1 input ended mid-response, or -errno */
	char out[8192];            /* formatted responses, one per line */
	char streamed[4096];       /* bytes of streamed literals, as the caller took them */
	size_t streamed_len;
	char err[160];
};

static void
out_add(struct result *res, const struct imap_response *r)
{
	size_t used = strlen(res->out);
	size_t need = imap_response_format(r, res->out + used, sizeof(res->out) - used);

	assert_true(need + 1 < sizeof(res->out) - used);
	memcpy(res->out + used + need, "\n", 2);
}

static struct imap_parser *
parser_for(const struct cfg *cfg)
{
	struct imap_parser *p;

	assert_int_equal(imap_parser_new(cfg ? &cfg->lim : NULL, &p), 0);
	if (cfg && cfg->threshold)
		imap_parser_stream_threshold(p, cfg->threshold);
	for (size_t i = 0; cfg && i < 2 && cfg->items[i]; i++)
		assert_int_equal(imap_parser_stream_item(p, cfg->items[i]), 0);
	return p;
}

/* A streamed literal begins at in[*pos]: take its bytes as a caller would. */
static int
take_literal(struct imap_parser *p, const char *in, size_t len, size_t *pos, struct result *res)
{
	uint64_t size;
	size_t dummy;

	assert_int_equal(imap_parser_literal(p, &size, NULL, NULL), 0);
	/* Feeding during a pending literal is a caller bug. */
	assert_int_equal(imap_parser_feed(p, "x", 1, &dummy, NULL), -EINVAL);
	if (size > len - *pos)
		return 1;
	if (res->streamed_len + size < sizeof(res->streamed)) {
		memcpy(res->streamed + res->streamed_len, in + *pos, (size_t)size);
		res->streamed_len += (size_t)size;
	}
	*pos += (size_t)size;
	return imap_parser_literal_done(p);
}

/*
 * Feeds in[0..len) in chunks of step bytes (0: all at once), also cutting
 * at split, and records every response.
 */
static void
run(const struct cfg *cfg, const char *in, size_t len, size_t step, size_t split,
    struct result *res)
{
	struct imap_parser *p = parser_for(cfg);
	size_t pos = 0;
	int r = 0;

	memset(res, 0, sizeof(*res));
	while (pos < len) {
		size_t end = step ? pos + step : len;
		const struct imap_response *resp = NULL;
		size_t used;

		if (end > len)
			end = len;
		if (split > pos && split < end)
			end = split;
		r = imap_parser_feed(p, in + pos, end - pos, &used, &resp);
		assert_true(used <= end - pos);
		pos += used;
		if (r == IMAP_PARSE_DONE) {
			assert_non_null(resp);
			out_add(res, resp);
		} else if (r == IMAP_PARSE_LITERAL) {
			r = take_literal(p, in, len, &pos, res);
			if (r != 0)
				break;
		} else if (r < 0) {
			break;
		} else {
			assert_int_equal(pos, end);
		}
	}
	if (r >= 0)
		r = imap_parser_eof(p) < 0 ? 1 : 0;
	else
		assert_int_equal(imap_parser_feed(p, "A", 1, &(size_t){0}, NULL), r);
	res->rc = r;
	snprintf(res->err, sizeof(res->err), "%s", imap_parser_error(p));
	imap_parser_free(p);
}

static void
same(const struct result *a, const struct result *b, const char *how, size_t at)
{
	if (a->rc != b->rc || strcmp(a->out, b->out) != 0 || strcmp(a->err, b->err) != 0 ||
	    a->streamed_len != b->streamed_len ||
	    memcmp(a->streamed, b->streamed, a->streamed_len) != 0)
		fail_msg("%s %zu differs:\n%d %s [%s]\nvs\n%d %s [%s]", how, at, a->rc, a->out,
			 a->err, b->rc, b->out, b->err);
}

/* Whole, byte by byte, split at every offset: all the same. */
static void
run_all(const struct cfg *cfg, const char *in, size_t len, struct result *whole)
{
	struct result *other = malloc(sizeof(*other));

	assert_non_null(other);
	run(cfg, in, len, 0, 0, whole);
	run(cfg, in, len, 1, 0, other);
	same(whole, other, "byte by byte", 0);
	for (size_t k = 1; k < len; k++) {
		run(cfg, in, len, 0, k, other);
		same(whole, other, "split at", k);
	}
	free(other);
}

static void
expect_cfg(const struct cfg *cfg, const char *in, size_t len, const char *want)
{
	struct result *res = malloc(sizeof(*res));
	char line[8192];

	assert_non_null(res);
	run_all(cfg, in, len, res);
	if (res->rc != 0)
		fail_msg("rc %d (%s) for %s", res->rc, res->err, in);
	snprintf(line, sizeof(line), "%s\n", want);
	assert_string_equal(res->out, line);
	free(res);
}

static void
expect(const char *in, size_t len, const char *want)
{
	expect_cfg(NULL, in, len, want);
}

static void
expect_err_cfg(const struct cfg *cfg, const char *in, size_t len, int code, const char *msg)
{
	struct result *res = malloc(sizeof(*res));

	assert_non_null(res);
	run_all(cfg, in, len, res);
	if (res->rc != code)
		fail_msg("rc %d (%s), want %d, for %s", res->rc, res->err, code, in);
	if (msg && !strstr(res->err, msg))
		fail_msg("error \"%s\" lacks \"%s\"", res->err, msg);
	free(res);
}

static void
expect_err(const char *in, size_t len, int code, const char *msg)
{
	expect_err_cfg(NULL, in, len, code, msg);
}

/* Parses one response fed whole; the caller frees p. */
static const struct imap_response *
parse1(struct imap_parser **pp, const char *in, size_t len)
{
	const struct imap_response *r = NULL;
	size_t used;

	assert_int_equal(imap_parser_new(NULL, pp), 0);
	assert_int_equal(imap_parser_feed(*pp, in, len, &used, &r), IMAP_PARSE_DONE);
	assert_int_equal(used, len);
	return r;
}

static void
test_greetings(void **state)
{
	(void)state;
	expect(S("* OK IMAP4rev1 Service Ready\r\n"), "* OK IMAP4rev1 Service Ready");
	expect(S("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
		 "AUTH=PLAIN] Dovecot ready.\r\n"),
	       "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
	       "AUTH=PLAIN] Dovecot ready.");
	expect(S("* PREAUTH IMAP4rev1 server logged in as Smith\r\n"),
	       "* PREAUTH IMAP4rev1 server logged in as Smith");
	expect(S("* BYE Autologout; idle for too long\r\n"), "* BYE Autologout; idle for too long");
	expect(S("* BYE\r\n"), "* BYE");
	expect(S("* ok hello\r\n"), "* OK hello");
	/* Bare LF line ends, as some servers send. */
	expect(S("* OK ready\n"), "* OK ready");
}

static void
test_capability(void **state)
{
	(void)state;
	expect(S("* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED\r\n"),
	       "* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED");
	expect(S("A001 OK [CAPABILITY IMAP4rev1 UIDPLUS ENABLE] Logged in\r\n"),
	       "A001 OK [CAPABILITY IMAP4rev1 UIDPLUS ENABLE] Logged in");
	expect(S("* CAPABILITY IMAP4rev2 \r\n"), "* CAPABILITY IMAP4rev2");
}

static void
test_tagged(void **state)
{
	(void)state;
	expect(S("A142 OK [READ-WRITE] SELECT completed\r\n"),
	       "A142 OK [READ-WRITE] SELECT completed");
	expect(S("A932 OK [READ-ONLY] EXAMINE completed\r\n"),
	       "A932 OK [READ-ONLY] EXAMINE completed");
	expect(S("A1 NO [TRYCREATE] Mailbox doesn't exist\r\n"),
	       "A1 NO [TRYCREATE] Mailbox doesn't exist");
	expect(S("A2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
	       "A2 NO [AUTHENTICATIONFAILED] Authentication failed.");
	expect(S("A3 BAD Command unknown or arguments invalid\r\n"),
	       "A3 BAD Command unknown or arguments invalid");
	expect(S("A003 OK [APPENDUID 38505 3955] APPEND completed\r\n"),
	       "A003 OK [APPENDUID 38505 3955] APPEND completed");
	expect(S("A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"),
	       "A004 OK [COPYUID 38505 304,319:320 3956:3958] Done");
	expect(S("A5 OK\r\n"), "A5 OK");
	expect(S("A6 OK \r\n"), "A6 OK");
	expect(S("a7 ok [READ-ONLY]\r\n"), "a7 OK [READ-ONLY]");
	expect(S("A8 OK [READ-ONLY]done\r\n"), "A8 OK [READ-ONLY] done");
	/* Only the first bracket opens a code. */
	expect(S("A9 OK [ALERT] [not a code] (nor a list\r\n"),
	       "A9 OK [ALERT] [not a code] (nor a list");
	expect(S("A10 OK text with \"quotes\" and {braces} and ) parens\r\n"),
	       "A10 OK text with \"quotes\" and {braces} and ) parens");
	expect(S("tag.with]bracket OK x\r\n"), "tag.with]bracket OK x");
}

static void
test_select_codes(void **state)
{
	(void)state;
	expect(S("* 172 EXISTS\r\n* 1 RECENT\r\n* 22 EXPUNGE\r\n"),
	       "* 172 EXISTS\n* 1 RECENT\n* 22 EXPUNGE");
	expect(S("* OK [UNSEEN 12] Message 12 is first unseen\r\n"),
	       "* OK [UNSEEN 12] Message 12 is first unseen");
	expect(S("* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"),
	       "* OK [UIDVALIDITY 3857529045] UIDs valid");
	expect(S("* OK [UIDNEXT 4392] Predicted next UID\r\n"),
	       "* OK [UIDNEXT 4392] Predicted next UID");
	expect(S("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"),
	       "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)");
	expect(S("* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"),
	       "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited");
	expect(S("* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n"),
	       "* OK [PERMANENTFLAGS ()] No permanent flags permitted");
	expect(S("* OK [ALERT] System shutdown in 10 minutes\r\n"),
	       "* OK [ALERT] System shutdown in 10 minutes");
	expect(S("* OK [HIGHESTMODSEQ 715194045007]\r\n"), "* OK [HIGHESTMODSEQ 715194045007]");
	expect(S("* NO [BADCHARSET (UTF-8 \"US-ASCII\")] x\r\n"),
	       "* NO [BADCHARSET (UTF-8 \"US-ASCII\")] x");
	expect(S("* OK [REFERRAL imap://user;AUTH=*@SERVER2/] Remote\r\n"),
	       "* OK [REFERRAL imap://user;AUTH=*@SERVER2/] Remote");
	expect(S("* OK [CAPABILITY IMAP4rev1 ] x\r\n"), "* OK [CAPABILITY IMAP4rev1] x");
}

static void
test_fetch(void **state)
{
	(void)state;
	expect(S("* 12 FETCH (FLAGS (\\Seen) UID 7 RFC822.SIZE 4286 "
		 "INTERNALDATE \"17-Jul-1996 02:44:25 -0700\")\r\n"),
	       "* 12 FETCH (FLAGS (\\Seen) UID 7 RFC822.SIZE 4286 "
	       "INTERNALDATE \"17-Jul-1996 02:44:25 -0700\")");
	/* RFC 3501 section 8: address lists of lists with no space between. */
	expect(S("* 12 FETCH (ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" "
		 "\"IMAP4rev1 WG mtg summary and minutes\" "
		 "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
		 "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
		 "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
		 "((NIL NIL \"imap\" \"cac.washington.edu\")) "
		 "((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")"
		 "(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL "
		 "\"<B27397-0100000@cac.washington.edu>\") "
		 "BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" "
		 "3028 92))\r\n"),
	       "* 12 FETCH (ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" "
	       "\"IMAP4rev1 WG mtg summary and minutes\" "
	       "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
	       "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
	       "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
	       "((NIL NIL \"imap\" \"cac.washington.edu\")) "
	       "((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\") "
	       "(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL "
	       "\"<B27397-0100000@cac.washington.edu>\") "
	       "BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92))");
	/* Envelope with a literal subject and nil case variants. */
	expect(S("* 3 FETCH (UID 9 ENVELOPE (NIL {12}\r\nhello (world ((nil NIL \"a\" \"b\")) "
		 "NIL NIL NIL NIL NIL NIL NIL))\r\n"),
	       "* 3 FETCH (UID 9 ENVELOPE (NIL {12}\"hello (world\" ((nil NIL \"a\" \"b\")) "
	       "NIL NIL NIL NIL NIL NIL NIL))");
	expect(S("* 12 FETCH (UID 7 RFC822.SIZE 4 FLAGS (\\Seen) BODY[] {4}\r\nab\r\n)\r\n"),
	       "* 12 FETCH (UID 7 RFC822.SIZE 4 FLAGS (\\Seen) BODY[] {4}\"ab\\x0d\\x0a\")");
	expect(S("* 2 FETCH (BODY[]<0> {5}\r\nhello UID 3)\r\n"),
	       "* 2 FETCH (BODY[]<0> {5}\"hello\" UID 3)");
	expect(S("* 2 FETCH (BODY[HEADER.FIELDS (FROM SUBJECT)] {9}\r\nFrom: a\r\n UID 3)\r\n"),
	       "* 2 FETCH (BODY[HEADER.FIELDS (FROM SUBJECT)] {9}\"From: a\\x0d\\x0a\" UID 3)");
	expect(S("* 2 FETCH (BODY[1.MIME] NIL BODY[TEXT] \"\")\r\n"),
	       "* 2 FETCH (BODY[1.MIME] NIL BODY[TEXT] \"\")");
	expect(S("* 4 FETCH (BODY[] {3+}\r\nabc)\r\n"), "* 4 FETCH (BODY[] {3}\"abc\")");
	expect(S("* 4 FETCH (BODY[] {0}\r\n)\r\n"), "* 4 FETCH (BODY[] {0}\"\")");
	expect(S("* 5 FETCH (BINARY[] ~{3}\r\na\0b)\r\n"), "* 5 FETCH (BINARY[] ~{3}\"a\\x00b\")");
	expect(S("* 5 FETCH (BINARY.SIZE[1] 42)\r\n"), "* 5 FETCH (BINARY.SIZE[1] 42)");
	expect(S("* 6 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1)"
		 "(\"TEXT\" \"HTML\" NIL NIL NIL \"7BIT\" 2 1) \"ALTERNATIVE\"))\r\n"),
	       "* 6 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1) "
	       "(\"TEXT\" \"HTML\" NIL NIL NIL \"7BIT\" 2 1) \"ALTERNATIVE\"))");
	expect(S("* 7 FETCH (MODSEQ (12121231000))\r\n"), "* 7 FETCH (MODSEQ (12121231000))");
}

static void
test_list_status(void **state)
{
	(void)state;
	expect(S("* LIST (\\Noselect) \"/\" ~/Mail/foo\r\n"),
	       "* LIST (\\Noselect) \"/\" ~/Mail/foo");
	expect(S("* LIST (\\HasNoChildren) \".\" INBOX\r\n"),
	       "* LIST (\\HasNoChildren) \".\" INBOX");
	expect(S("* LIST () NIL INBOX\r\n"), "* LIST () NIL INBOX");
	expect(S("* LIST (\\HasNoChildren) \"/\" \"Sent Items\"\r\n"),
	       "* LIST (\\HasNoChildren) \"/\" \"Sent Items\"");
	expect(S("* LIST () \"/\" {9}\r\nfoo \"bar\"\r\n"),
	       "* LIST () \"/\" {9}\"foo \\\"bar\\\"\"");
	expect(S("* LIST (\\HasNoChildren) \"\\\\\" \"a\\\"b\"\r\n"),
	       "* LIST (\\HasNoChildren) \"\\\\\" \"a\\\"b\"");
	expect(S("* LIST (\\HasChildren \\Noselect) \"/\" [Gmail]\r\n"),
	       "* LIST (\\HasChildren \\Noselect) \"/\" [Gmail]");
	expect(S("* LSUB (\\Noselect) \"/\" \"[Gmail]/All Mail\"\r\n"),
	       "* LSUB (\\Noselect) \"/\" \"[Gmail]/All Mail\"");
	expect(S("* LIST () \"/\" ~\r\n"), "* LIST () \"/\" ~");
	expect(S("* [X] ]y[\r\n"), "* [X] ]y[");
	expect(S("* LIST () \"/\" \"Fran\xc3\xa7ois\"\r\n"),
	       "* LIST () \"/\" \"Fran\xc3\xa7ois\"");
	expect(S("* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"),
	       "* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)");
	expect(S("* STATUS \"INBOX\" (UIDVALIDITY 1 UIDNEXT 5)\r\n"),
	       "* STATUS \"INBOX\" (UIDVALIDITY 1 UIDNEXT 5)");
}

static void
test_search_misc(void **state)
{
	(void)state;
	expect(S("* SEARCH 2 84 882\r\n"), "* SEARCH 2 84 882");
	expect(S("* SEARCH\r\n"), "* SEARCH");
	expect(S("* SEARCH \r\n"), "* SEARCH");
	expect(S("* ESEARCH (TAG \"A282\") UID MIN 2 COUNT 3 ALL 2,10:11\r\n"),
	       "* ESEARCH (TAG \"A282\") UID MIN 2 COUNT 3 ALL 2,10:11");
	expect(S("* NAMESPACE ((\"\" \"/\")) ((\"~\" \"/\")) ((\"#shared/\" \"/\")"
		 "(\"#public/\" \"/\")(\"#news.\" \".\"))\r\n"),
	       "* NAMESPACE ((\"\" \"/\")) ((\"~\" \"/\")) ((\"#shared/\" \"/\") "
	       "(\"#public/\" \"/\") (\"#news.\" \".\"))");
	expect(S("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"), "* NAMESPACE ((\"\" \"/\")) NIL NIL");
	expect(S("* ENABLED CONDSTORE QRESYNC\r\n"), "* ENABLED CONDSTORE QRESYNC");
	expect(S("* ENABLED\r\n"), "* ENABLED");
	expect(S("* 1 EXISTS\r\n* 2 RECENT\r\nA1 OK done\r\n"),
	       "* 1 EXISTS\n* 2 RECENT\nA1 OK done");
}

static void
test_continuation(void **state)
{
	(void)state;
	expect(S("+ \r\n"), "+");
	expect(S("+\r\n"), "+");
	expect(S("+ Ready for additional command text\r\n"), "+ Ready for additional command text");
	expect(S("+ YGgGCSqGSIb3EgECAgIAb1kwV6ADAgEFoQMCAQ+iSzBJoAMCAQ==\r\n"),
	       "+ YGgGCSqGSIb3EgECAgIAb1kwV6ADAgEFoQMCAQ+iSzBJoAMCAQ==");
	expect(S("+ [ALERT] idling\r\n"), "+ [ALERT] idling");
	expect(S("+idling\r\n"), "+ idling");
}

static void
test_fields(void **state)
{
	struct imap_parser *p;
	const struct imap_response *r;
	const struct imap_arg *a;
	const char *s;
	size_t len;
	uint32_t u32;
	uint64_t u64;

	(void)state;
	r = parse1(&p, S("A17 NO [UIDVALIDITY 3857529045] it\\s \"over\"\r\n"));
	assert_int_equal(r->type, IMAP_RESP_TAGGED);
	assert_string_equal(r->tag, "A17");
	assert_int_equal(r->status, IMAP_STATUS_NO);
	assert_true(imap_response_code_is(r, "uidvalidity"));
	assert_false(imap_response_code_is(r, "UIDNEXT"));
	assert_int_equal(r->code_count, 1);
	assert_int_equal(imap_arg_u32(&r->code_args[0], &u32), 0);
	assert_int_equal(u32, 3857529045u);
	assert_string_equal(r->text, "it\\s \"over\"");
	assert_int_equal(r->text_len, strlen(r->text));
	assert_int_equal(r->count, 0);
	imap_parser_free(p);

	r = parse1(&p, S("* 12 FETCH (UID 7 RFC822.SIZE 4294967296 FLAGS (\\Seen $Junk) "
			 "BODY[HEADER.FIELDS (FROM)] {3}\r\na\0b ENVELOPE (NIL) X \"q\")\r\n"));
	assert_int_equal(r->type, IMAP_RESP_UNTAGGED);
	assert_null(r->tag);
	assert_null(r->code);
	assert_string_equal(r->text, "");
	assert_int_equal(r->count, 3);
	assert_int_equal(imap_arg_u32(&r->args[0], &u32), 0);
	assert_int_equal(u32, 12);
	assert_true(imap_arg_atom_is(&r->args[1], "fetch"));
	a = imap_fetch_item(&r->args[2], "uid");
	assert_non_null(a);
	assert_int_equal(imap_arg_u32(a, &u32), 0);
	assert_int_equal(u32, 7);
	a = imap_fetch_item(&r->args[2], "RFC822.SIZE");
	assert_int_equal(imap_arg_u32(a, &u32), -ERANGE);
	assert_int_equal(imap_arg_u64(a, &u64), 0);
	assert_int_equal(u64, 4294967296ull);
	a = imap_fetch_item(&r->args[2], "FLAGS");
	assert_int_equal(a->type, IMAP_ARG_LIST);
	assert_int_equal(a->count, 2);
	assert_true(imap_arg_atom_is(&a->list[1], "$junk"));
	a = imap_fetch_item(&r->args[2], "BODY[HEADER.FIELDS (FROM)]");
	assert_non_null(a);
	assert_int_equal(a->type, IMAP_ARG_LITERAL);
	assert_int_equal(a->len, 3);
	assert_int_equal(a->literal_size, 3);
	assert_memory_equal(a->str, "a\0b", 4);
	a = imap_fetch_item(&r->args[2], "ENVELOPE");
	assert_int_equal(a->list[0].type, IMAP_ARG_NIL);
	assert_int_equal(imap_arg_string(&a->list[0], &s, &len), 0);
	assert_null(s);
	assert_int_equal(imap_arg_string(a, &s, &len), -EBADMSG);
	a = imap_fetch_item(&r->args[2], "X");
	assert_int_equal(a->type, IMAP_ARG_STRING);
	assert_int_equal(imap_arg_string(a, &s, &len), 0);
	assert_string_equal(s, "q");
	assert_int_equal(imap_arg_u32(a, &u32), -EBADMSG);
	assert_null(imap_fetch_item(&r->args[2], "BODY[]"));
	assert_null(imap_fetch_item(&r->args[1], "UID"));
	assert_null(imap_fetch_item(NULL, "UID"));
	imap_parser_free(p);

	r = parse1(&p, S("* OK [PERMANENTFLAGS (\\Seen \\*)]\r\n"));
	assert_int_equal(r->code_count, 1);
	assert_int_equal(r->code_args[0].type, IMAP_ARG_LIST);
	assert_int_equal(r->code_args[0].count, 2);
	assert_string_equal(r->code_args[0].list[1].str, "\\*");
	imap_parser_free(p);

	r = parse1(&p, S("+ dGVzdA==\r\n"));
	assert_int_equal(r->type, IMAP_RESP_CONTINUATION);
	assert_int_equal(r->status, IMAP_STATUS_NONE);
	assert_string_equal(r->text, "dGVzdA==");
	imap_parser_free(p);
}

static void
test_numbers(void **state)
{
	struct imap_arg a = {.type = IMAP_ARG_ATOM};
	static const char *const bad[] = {"", "-1", "+1", "1a", " 1", "1 ", "0x10"};
	uint32_t u32;
	uint64_t u64;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		a.str = bad[i];
		a.len = strlen(bad[i]);
		assert_int_equal(imap_arg_u32(&a, &u32), -EBADMSG);
		assert_int_equal(imap_arg_u64(&a, &u64), -EBADMSG);
	}
	a.str = "4294967295";
	a.len = strlen(a.str);
	assert_int_equal(imap_arg_u32(&a, &u32), 0);
	assert_int_equal(u32, UINT32_MAX);
	a.str = "4294967296";
	a.len = strlen(a.str);
	assert_int_equal(imap_arg_u32(&a, &u32), -ERANGE);
	a.str = "18446744073709551615";
	a.len = strlen(a.str);
	assert_int_equal(imap_arg_u64(&a, &u64), 0);
	assert_true(u64 == UINT64_MAX);
	a.str = "18446744073709551616";
	a.len = strlen(a.str);
	assert_int_equal(imap_arg_u64(&a, &u64), -ERANGE);
	a.str = "007";
	a.len = 3;
	assert_int_equal(imap_arg_u32(&a, &u32), 0);
	assert_int_equal(u32, 7);
	a.type = IMAP_ARG_STRING;
	assert_int_equal(imap_arg_u32(&a, &u32), -EBADMSG);
	assert_int_equal(imap_arg_u32(NULL, &u32), -EBADMSG);
}

static void
test_stream_item(void **state)
{
	struct cfg cfg = {.items = {"BODY[]", "BINARY[]"}};
	struct result *res = malloc(sizeof(*res));
	static const char in[] = "* 12 FETCH (UID 7 RFC822.SIZE 6 FLAGS (\\Seen) BODY[] {6}\r\n"
				 "ab\r\ncd)\r\n"
				 "* 13 FETCH (BODY[]<0> {4}\r\nwxyz UID 8 BODY[TEXT] {2}\r\nkl)\r\n"
				 "* 14 FETCH (BINARY[] ~{3}\r\nq\0r)\r\nA1 OK done\r\n";

	(void)state;
	assert_non_null(res);
	run_all(&cfg, in, sizeof(in) - 1, res);
	assert_int_equal(res->rc, 0);
	assert_string_equal(res->out,
			    "* 12 FETCH (UID 7 RFC822.SIZE 6 FLAGS (\\Seen) BODY[] <lit 6>)\n"
			    "* 13 FETCH (BODY[]<0> <lit 4> UID 8 BODY[TEXT] {2}\"kl\")\n"
			    "* 14 FETCH (BINARY[] <lit8 3>)\n"
			    "A1 OK done\n");
	assert_int_equal(res->streamed_len, 13);
	assert_memory_equal(res->streamed, "ab\r\ncdwxyzq\0r", 13);
	free(res);
}

static void
test_stream_threshold(void **state)
{
	struct cfg cfg = {.threshold = 4, .lim = {.max_literal = 8}};
	struct result *res = malloc(sizeof(*res));
	static const char in[] = "* 1 FETCH (BODY[TEXT] {5}\r\nhello BODY[1] {4}\r\nfour)\r\n"
				 "* LIST () \"/\" {12}\r\nlong mailbox\r\n";

	(void)state;
	assert_non_null(res);
	run_all(&cfg, in, sizeof(in) - 1, res);
	assert_int_equal(res->rc, 0);
	assert_string_equal(res->out, "* 1 FETCH (BODY[TEXT] <lit 5> BODY[1] {4}\"four\")\n"
				      "* LIST () \"/\" <lit 12>\n");
	free(res);
}

/* A 20 MiB body streams with caps of a few KiB; buffered, it hits the cap. */
static void
test_stream_large(void **state)
{
	struct imap_parser_limits lim = {.max_line = 4096, .max_literal = 4096};
	static const char head[] = "* 1 FETCH (UID 5 BODY[] {20971520}\r\n";
	static const char tail[] = " FLAGS ())\r\n";
	const struct imap_response *r = NULL;
	struct imap_parser *p;
	const char *item;
	uint64_t size;
	bool lit8;
	size_t used;

	(void)state;
	assert_int_equal(imap_parser_new(&lim, &p), 0);
	assert_int_equal(imap_parser_literal(p, &size, &lit8, &item), -EINVAL);
	assert_int_equal(imap_parser_literal_done(p), -EINVAL);
	assert_int_equal(imap_parser_stream_item(p, "body[]"), 0);
	assert_int_equal(imap_parser_feed(p, head, sizeof(head) - 1, &used, &r),
			 IMAP_PARSE_LITERAL);
	assert_int_equal(used, sizeof(head) - 1);
	assert_int_equal(imap_parser_literal(p, &size, &lit8, &item), 0);
	assert_true(size == 20971520);
	assert_false(lit8);
	assert_string_equal(item, "BODY[]");
	assert_int_equal(imap_parser_literal_done(p), 0);
	assert_int_equal(imap_parser_feed(p, tail, sizeof(tail) - 1, &used, &r), IMAP_PARSE_DONE);
	assert_int_equal(r->args[2].list[3].type, IMAP_ARG_LITERAL_STREAMED);
	assert_true(r->args[2].list[3].literal_size == 20971520);
	assert_string_equal(r->args[2].list[3].str, "");
	assert_int_equal(imap_parser_eof(p), 0);
	imap_parser_free(p);

	assert_int_equal(imap_parser_new(&lim, &p), 0);
	assert_int_equal(imap_parser_feed(p, head, sizeof(head) - 1, &used, &r), -E2BIG);
	assert_non_null(strstr(imap_parser_error(p), "20971520"));
	imap_parser_reset(p);
	assert_string_equal(imap_parser_error(p), "");
	assert_int_equal(imap_parser_feed(p, S("* 1 EXISTS\r\n"), &used, &r), IMAP_PARSE_DONE);
	imap_parser_free(p);
}

static void
test_stream_item_rules(void **state)
{
	struct imap_parser *p;

	(void)state;
	assert_int_equal(imap_parser_new(NULL, &p), 0);
	assert_int_equal(imap_parser_stream_item(p, ""), -EINVAL);
	for (int i = 0; i < 8; i++)
		assert_int_equal(imap_parser_stream_item(p, "BODY[]"), 0);
	assert_int_equal(imap_parser_stream_item(p, "BODY[]"), -E2BIG);
	imap_parser_free(p);
	imap_parser_free(NULL);
	imap_parser_reset(NULL);
}

static void
test_bad_literals(void **state)
{
	struct cfg small = {.lim = {.max_literal = 16, .max_literal_total = 20}};

	(void)state;
	expect_err(S("* 1 FETCH (BODY[] {-1}\r\n"), -EBADMSG, "negative literal size");
	expect_err(S("* 1 FETCH (BODY[] {99999999999999999999}\r\n"), -E2BIG, "64 bits");
	expect_err(S("* 1 FETCH (BODY[] {18446744073709551615}\r\n"), -E2BIG, "cap");
	expect_err(S("* 1 FETCH (BODY[] {}\r\n"), -EBADMSG, "bad literal size");
	expect_err(S("* 1 FETCH (BODY[] {+}\r\n"), -EBADMSG, "bad literal size");
	expect_err(S("* 1 FETCH (BODY[] {1x}\r\n"), -EBADMSG, "bad literal size");
	expect_err(S("* 1 FETCH (BODY[] {1++}\r\n"), -EBADMSG, "bad literal size");
	expect_err(S("* 1 FETCH (BODY[] {3} \r\nabc)\r\n"), -EBADMSG, "line end");
	expect_err(S("* 1 FETCH (BODY[] {3}\rabc)\r\n"), -EBADMSG, "line end");
	expect_err(S("* 1 FETCH (BODY[] ~x{3}\r\nabc)\r\n"), -EBADMSG, NULL);
	expect_err(S("* 1 FETCH (BODY[] {3}\r\nabcd)\r\n"), -EBADMSG, "space between");
	expect_err_cfg(&small, S("* 1 FETCH (BODY[] {17}\r\n"), -E2BIG, "cap");
	expect_err_cfg(&small, S("* 1 FETCH (A {16}\r\n0123456789abcdef B {5}\r\n"), -E2BIG,
		       "literals in one response");
	/* An unterminated literal is an error once the input ends. */
	expect_err(S("* 1 FETCH (BODY[] {10}\r\nabc)\r\n"), 1, "inside a literal");
	expect_err(S("* 1 FETCH (UID 1"), 1, "inside a response");
}

static void
test_bad_syntax(void **state)
{
	(void)state;
	expect_err(S("* 1 FETCH (UID 1\r\n"), -EBADMSG, "unbalanced '('");
	expect_err(S("* 1 FETCH UID 1)\r\n"), -EBADMSG, "unbalanced ')'");
	expect_err(S("* 1 FETCH (UID 1))\r\n"), -EBADMSG, "unbalanced ')'");
	expect_err(S("* OK [PERMANENTFLAGS (\\Seen] x\r\n"), -EBADMSG, "response code");
	expect_err(S("* OK [UIDNEXT 5\r\n"), -EBADMSG, "unterminated response code");
	expect_err(S("* OK [UIDNEXT\r\n"), -EBADMSG, "response code");
	expect_err(S("* OK [] x\r\n"), -EBADMSG, "empty response code");
	expect_err(S("* OK [A(B)] x\r\n"), -EBADMSG, "response code");
	expect_err(S("* LIST () \"/\" \"abc\r\n"), -EBADMSG, "unterminated quoted");
	expect_err(S("* LIST () \"/\" \"a\\xb\"\r\n"), -EBADMSG, "bad escape");
	expect_err(S("* LIST () \"/\" ab\"c\"\r\n"), -EBADMSG, "quote inside");
	expect_err(S("* LIST () \"/\"\"c\"\r\n"), -EBADMSG, "space between");
	expect_err(S("* 1 FETCH (UID 1)(FLAGS)\r\n"), 0, NULL);
	expect_err(S("* X a(b)\r\n"), -EBADMSG, "space between");
	expect_err(S("* X (a)b\r\n"), -EBADMSG, "space between");
	expect_err(S("* X \"a\"(b)\r\n"), -EBADMSG, "space between");
	expect_err(S("* 1 FETCH (UID 1 BODY[TEXT {3}\r\nabc)\r\n"), -EBADMSG, "unterminated '['");
	expect_err(S("A1 FETCH done\r\n"), -EBADMSG, "not OK, NO or BAD");
	expect_err(S("A1 BYE done\r\n"), -EBADMSG, "not OK, NO or BAD");
	expect_err(S("A1 (OK)\r\n"), -EBADMSG, "not OK, NO or BAD");
	expect_err(S("A1 \r\n"), -EBADMSG, "not OK, NO or BAD");
	expect_err(S("A1\r\n"), -EBADMSG, "tag");
	expect_err(S("A(1 OK\r\n"), -EBADMSG, "tag");
	expect_err(S("*OK\r\n"), -EBADMSG, "space after '*'");
	expect_err(S("* \r\n"), -EBADMSG, "empty untagged");
	expect_err(S("\r\n"), -EBADMSG, "empty response line");
	expect_err(S("* OK(x)\r\n"), -EBADMSG, "no space after the status");
	expect_err(S("* OK x\ry\r\n"), -EBADMSG, "CR not followed by LF");
	expect_err(S("* SEARCH 1\x01 2\r\n"), -EBADMSG, "control character");
	expect_err(S("* SEARCH 1 \x1b[2J\r\n"), -EBADMSG, "control character");
}

static void
test_nul(void **state)
{
	(void)state;
	expect_err(S("\0 OK\r\n"), -EBADMSG, "NUL");
	expect_err(S("A\0 OK\r\n"), -EBADMSG, NULL);
	expect_err(S("* OK hello\0world\r\n"), -EBADMSG, "NUL");
	expect_err(S("* SEARCH 1\0\r\n"), -EBADMSG, "NUL");
	expect_err(S("* SEARCH \0\r\n"), -EBADMSG, "NUL");
	expect_err(S("* LIST () \"/\" \"a\0\"\r\n"), -EBADMSG, "NUL");
	expect_err(S("* 1 FETCH (BODY[\0] {1}\r\nx)\r\n"), -EBADMSG, "NUL");
	expect_err(S("* 1 FETCH (UID 1)\0\r\n"), -EBADMSG, "NUL");
	expect_err(S("* OK [ALERT\0] x\r\n"), -EBADMSG, NULL);
}

static void
test_caps(void **state)
{
	struct cfg line = {.lim = {.max_line = 32}};
	struct cfg depth = {.lim = {.max_depth = 3}};
	struct cfg args = {.lim = {.max_args = 10}};
	char deep[200];
	size_t n = 0;

	(void)state;
	expect_cfg(&line, S("* OK 0123456789012345678901234\r\n"),
		   "* OK 0123456789012345678901234");
	expect_err_cfg(&line, S("* OK 01234567890123456789012345\r\n"), -E2BIG, "longer than 32");
	/* Literal data does not count, the rest of the lines does. */
	expect_cfg(&line,
		   S("* 1 FETCH (BODY[] {40}\r\n0123456789012345678901234567890123456789)\r\n"),
		   "* 1 FETCH (BODY[] {40}\"0123456789012345678901234567890123456789\")");
	expect_err_cfg(&line, S("* 1 FETCH (BODY[] {4}\r\nabcd UID 1 FLAGS (\\Seen))\r\n"),
		       -E2BIG, "longer than");
	expect_cfg(&depth, S("* X (((a)))\r\n"), "* X (((a)))");
	expect_err_cfg(&depth, S("* X ((((a))))\r\n"), -E2BIG, "nested deeper than 3");
	expect_err_cfg(&depth, S("* OK [X ((((a))))] y\r\n"), -E2BIG, "nested deeper");
	expect_cfg(&args, S("* SEARCH 1 2 3 4 5 6 7 8 9\r\n"), "* SEARCH 1 2 3 4 5 6 7 8 9");
	expect_err_cfg(&args, S("* SEARCH 1 2 3 4 5 6 7 8 9 10\r\n"), -E2BIG, "more than 10");
	expect_err_cfg(&args, S("* X ((((((((((()))))))))))\r\n"), -E2BIG, NULL);
	/* Default depth cap. */
	n = (size_t)snprintf(deep, sizeof(deep), "* X ");
	for (int i = 0; i < 40; i++)
		deep[n++] = '(';
	memcpy(deep + n, "\r\n", 2);
	expect_err(deep, n + 2, -E2BIG, "nested deeper than 32");
}

static void
test_errors_stick(void **state)
{
	struct imap_parser *p;
	const struct imap_response *r;
	size_t used;

	(void)state;
	assert_int_equal(imap_parser_new(NULL, &p), 0);
	assert_string_equal(imap_parser_error(p), "");
	assert_int_equal(imap_parser_feed(p, S("* 1 FETCH (UID 1)) \r\n* 1 EXISTS\r\n"), &used, &r),
			 -EBADMSG);
	assert_int_equal(used, 17);
	assert_int_equal(imap_parser_feed(p, S("* 1 EXISTS\r\n"), &used, &r), -EBADMSG);
	assert_int_equal(used, 0);
	assert_int_equal(imap_parser_eof(p), -EBADMSG);
	imap_parser_reset(p);
	assert_int_equal(imap_parser_feed(p, S("* 1 EXISTS\r\n* 2"), &used, &r), IMAP_PARSE_DONE);
	assert_int_equal(used, 12);
	assert_int_equal(imap_parser_eof(p), 0);
	assert_int_equal(imap_parser_feed(p, "", 0, &used, &r), 0);
	assert_int_equal(imap_parser_eof(p), 0);
	imap_parser_free(p);
}

static void
test_format(void **state)
{
	struct imap_parser *p;
	const struct imap_response *r;
	char small[8];
	char big[64];

	(void)state;
	r = parse1(&p, S("* 1 FETCH (UID 1 X \"a\\\\b\")\r\n"));
	assert_int_equal(imap_response_format(r, small, sizeof(small)), 26);
	assert_string_equal(small, "* 1 FET");
	assert_int_equal(imap_response_format(r, big, 0), 26);
	assert_int_equal(imap_args_format(r->args[2].list, r->args[2].count, big, sizeof(big)), 14);
	assert_string_equal(big, "UID 1 X \"a\\\\b\"");
	imap_parser_free(p);
	r = parse1(&p, S("* OK [ALERT] \x1b[2Jgotcha\r\n"));
	imap_response_format(r, big, sizeof(big));
	assert_string_equal(big, "* OK [ALERT] \\x1b[2Jgotcha");
	imap_parser_free(p);
	assert_string_equal(imap_arg_type_to_string(IMAP_ARG_LITERAL_STREAMED), "streamed literal");
	assert_string_equal(imap_arg_type_to_string(IMAP_ARG_TYPE_MAX), "?");
	assert_string_equal(imap_resp_type_to_string(IMAP_RESP_CONTINUATION), "continuation");
	assert_string_equal(imap_status_to_string(IMAP_STATUS_PREAUTH), "PREAUTH");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greetings),
		cmocka_unit_test(test_capability),
		cmocka_unit_test(test_tagged),
		cmocka_unit_test(test_select_codes),
		cmocka_unit_test(test_fetch),
		cmocka_unit_test(test_list_status),
		cmocka_unit_test(test_search_misc),
		cmocka_unit_test(test_continuation),
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_stream_item),
		cmocka_unit_test(test_stream_threshold),
		cmocka_unit_test(test_stream_large),
		cmocka_unit_test(test_stream_item_rules),
		cmocka_unit_test(test_bad_literals),
		cmocka_unit_test(test_bad_syntax),
		cmocka_unit_test(test_nul),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_errors_stick),
		cmocka_unit_test(test_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
