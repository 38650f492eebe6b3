/*
 * IMAP4 engine: RFC 3501 / RFC 9051 over one blocking conn. Commands are
 * built whole (tag, arguments, literals), sent, and their responses read
 * through imap_parse until the tagged completion; untagged data is handled
 * whenever it comes (RFC 3501 section 2.2.2: the client must accept any
 * untagged response at any time). Message bodies are FETCH literals the
 * parser hands over by size: they go from the connection through a
 * CRLF-to-LF converter straight into the sink.
 */
#include <errno.h>
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mailpull/imap.h"
#include "mailpull/imap_parse.h"
#include "mailpull/log.h"
#include "mailpull/mutf7.h"
#include "mailpull/utf8.h"
#include "mailpull/util.h"

#define IMAP_BUFSIZE (64 * 1024)       /* decoded body chunk handed to the sink */
#define IMAP_MAX_LINE (1024 * 1024)    /* one response outside literal data */
#define IMAP_MAX_LITERAL (64 * 1024)   /* a literal held in memory (names, envelopes) */
#define IMAP_MAX_LITERAL_TOTAL (1024 * 1024)
#define IMAP_MAX_CMD (1024 * 1024)     /* one command we build */
#define IMAP_SET_MAX 1000              /* bytes of a UID set in one command */
/*
 * Unanswered command bytes at most: well under any socket buffer, so a
 * server that writes its responses before reading more commands, while we
 * write commands before reading responses, cannot deadlock both TCP
 * windows. Within it, a large set's commands all go out in a few writes.
 */
#define IMAP_QUEUE_MAX (32 * 1024)
#define IMAP_INFLIGHT_MAX 512          /* unanswered commands at most */
#define IMAP_MAX_MSGS 10000000u
#define IMAP_MAX_MAILBOXES 100000u
#define IMAP_MAX_NAMESPACES 1000u
#define IMAP_MAX_BREAKS 4              /* synchronizing literals in one command */
#define IMAP_QUOTED_MAX 1024           /* longer strings go as literals */
#define IDLE_SLICE_MS 5000             /* longest wait between looks at *stop */
#define IMAP_APPEND_MAX ((uint64_t)1 << 30)  /* one appended message */
#define READ_CONT 100                  /* read_until(): a continuation request came */

enum imap_state {
	IMAP_ST_GREETING,
	IMAP_ST_CAPABILITY,
	IMAP_ST_ENABLE,
	IMAP_ST_STARTTLS,
	IMAP_ST_AUTH,
	IMAP_ST_LIST,
	IMAP_ST_NAMESPACE,
	IMAP_ST_SELECT,
	IMAP_ST_FETCH,
	IMAP_ST_SEARCH,
	IMAP_ST_STORE,
	IMAP_ST_EXPUNGE,
	IMAP_ST_CREATE,
	IMAP_ST_APPEND,
	IMAP_ST_IDLE,
	IMAP_ST_LOGOUT,
	IMAP_ST_MAX
};

static const char *const state_names[IMAP_ST_MAX] = {
	[IMAP_ST_GREETING] = "greeting",
	[IMAP_ST_CAPABILITY] = "CAPABILITY",
	[IMAP_ST_ENABLE] = "ENABLE",
	[IMAP_ST_STARTTLS] = "STARTTLS",
	[IMAP_ST_AUTH] = "authentication",
	[IMAP_ST_LIST] = "LIST",
	[IMAP_ST_NAMESPACE] = "NAMESPACE",
	[IMAP_ST_SELECT] = "SELECT",
	[IMAP_ST_FETCH] = "FETCH",
	[IMAP_ST_SEARCH] = "SEARCH",
	[IMAP_ST_STORE] = "STORE",
	[IMAP_ST_EXPUNGE] = "EXPUNGE",
	[IMAP_ST_CREATE] = "CREATE",
	[IMAP_ST_APPEND] = "APPEND",
	[IMAP_ST_IDLE] = "IDLE",
	[IMAP_ST_LOGOUT] = "LOGOUT",
};

struct imap {
	struct conn *c;
	struct imap_parser *p;
	struct imap_caps caps;
	bool caps_seen;      /* a CAPABILITY list arrived since caps were forgotten */
	bool preauth;
	bool broken;         /* out of step with the server: refuse further use */
	bool refused;        /* the last error was a tagged NO/BAD: still in step */
	bool logout;         /* BYE is expected now */
	bool bye;            /* and came */
	bool utf8;           /* UTF8=ACCEPT enabled (RFC 6855): names travel as UTF-8 */
	bool enabled_utf8;   /* the ENABLED response named UTF8=ACCEPT */
	enum imap_state state;
	unsigned tag;        /* number of the last tag used */
	uint32_t exists;
	unsigned bad_uids;   /* FETCH responses without a valid UID, since imap_take_bad_uids() */
	char *buf;           /* IMAP_BUFSIZE decoded body bytes */
	char greeting[256];  /* the greeting's text, sanitized */
};

/*
 * Untagged data for the command running: called after the common handling
 * of each untagged response. A negative errno ends the command.
 */
typedef int (*resp_fn)(struct imap *m, const struct imap_response *r, void *ud,
		       struct mp_err *err);

/* A streamed literal begins: take exactly size bytes from the connection. */
typedef int (*literal_fn)(struct imap *m, uint64_t size, const char *item, void *ud,
			  struct mp_err *err);

static const char *
imap_state_to_string(enum imap_state s)
{
	return MP_ENUM_NAME(state_names, s);
}

/* ---- commands ------------------------------------------------------------ */

/*
 * A command being built: "Annnn verb args". brk[] are the offsets just
 * after each synchronizing literal's "{n}\r\n", where we must wait for the
 * server's "+" (RFC 3501 section 7.5). Bytes from secret on never reach a
 * trace.
 */
struct cmd {
	char *buf;
	size_t len, cap;
	size_t brk[IMAP_MAX_BREAKS];
	size_t nbrk;
	size_t secret;
	unsigned tag;
	int err;             /* first error while building */
};

static void
cmd_free(struct cmd *cmd)
{
	if (cmd->buf) {
		/* It may hold a password. */
		explicit_bzero(cmd->buf, cmd->cap);
		free(cmd->buf);
	}
	cmd->buf = NULL;
}

static void
cmd_add(struct cmd *cmd, const char *s, size_t len)
{
	if (cmd->err)
		return;
	if (len > IMAP_MAX_CMD - cmd->len) {
		cmd->err = -E2BIG;
		return;
	}
	if (cmd->len + len + 1 > cmd->cap) {
		size_t nc = cmd->cap ? cmd->cap : 256;
		char *nb;

		while (nc < cmd->len + len + 1)
			nc *= 2;
		nb = malloc(nc);
		if (!nb) {
			cmd->err = -ENOMEM;
			return;
		}
		if (cmd->buf) {
			memcpy(nb, cmd->buf, cmd->len);
			explicit_bzero(cmd->buf, cmd->cap);
			free(cmd->buf);
		}
		cmd->buf = nb;
		cmd->cap = nc;
	}
	memcpy(cmd->buf + cmd->len, s, len);
	cmd->len += len;
	cmd->buf[cmd->len] = '\0';
}

static void
cmd_str(struct cmd *cmd, const char *s)
{
	cmd_add(cmd, s, strlen(s));
}

static void MP_PRINTF(2, 3)
cmd_fmt(struct cmd *cmd, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		cmd->err = cmd->err ? cmd->err : -E2BIG;
		return;
	}
	cmd_add(cmd, tmp, (size_t)n);
}

/* Starts a command with a fresh tag ("A0001", "A0002", ...). */
static void
cmd_start(struct imap *m, struct cmd *cmd, const char *verb)
{
	memset(cmd, 0, sizeof(*cmd));
	cmd->secret = SIZE_MAX;
	cmd->tag = ++m->tag;
	cmd_fmt(cmd, "A%04u ", cmd->tag);
	cmd_str(cmd, verb);
}

/*
 * Appends s as an astring (RFC 3501 section 9): a quoted string when it
 * can be one (7-bit, no CR/LF, short), else a literal, non-synchronizing
 * with LITERAL+ (RFC 7888), or LITERAL- for small ones, else synchronizing.
 * NUL cannot travel in either form.
 */
static void
cmd_astring(struct imap *m, struct cmd *cmd, const char *s, size_t len)
{
	bool quoted = len <= IMAP_QUOTED_MAX;

	if (memchr(s, '\0', len)) {
		cmd->err = cmd->err ? cmd->err : -EINVAL;
		return;
	}
	/* With UTF8=ACCEPT a quoted string may hold UTF-8 (RFC 6855 section 3). */
	if (m->utf8 && !utf8_valid(s, len))
		quoted = false;
	for (size_t i = 0; i < len && quoted; i++)
		if ((!m->utf8 && (unsigned char)s[i] >= 0x80) || s[i] == '\r' || s[i] == '\n')
			quoted = false;
	if (quoted) {
		size_t start = 0;

		cmd_add(cmd, "\"", 1);
		for (size_t i = 0; i < len; i++) {
			if (s[i] != '\\' && s[i] != '"')
				continue;
			cmd_add(cmd, s + start, i - start);
			cmd_add(cmd, "\\", 1);
			start = i;
		}
		cmd_add(cmd, s + start, len - start);
		cmd_add(cmd, "\"", 1);
		return;
	}
	if (m->caps.literal_plus || (m->caps.literal_minus && len <= 4096)) {
		cmd_fmt(cmd, "{%zu+}\r\n", len);
	} else {
		cmd_fmt(cmd, "{%zu}\r\n", len);
		if (cmd->nbrk == IMAP_MAX_BREAKS) {
			cmd->err = cmd->err ? cmd->err : -E2BIG;
			return;
		}
		cmd->brk[cmd->nbrk++] = cmd->len;
	}
	cmd_add(cmd, s, len);
}

/*
 * A mailbox name (UTF-8) in modified UTF-7 (RFC 3501 section 5.1.3), or,
 * once UTF8=ACCEPT is enabled, as it is (RFC 6855 section 3: the server
 * then takes and gives mailbox names in UTF-8 only).
 */
static void
cmd_mailbox(struct imap *m, struct cmd *cmd, const char *name)
{
	char *enc = NULL;
	int r;

	if (m->utf8) {
		if (!utf8_valid(name, strlen(name))) {
			cmd->err = cmd->err ? cmd->err : -EINVAL;
			return;
		}
		cmd_astring(m, cmd, name, strlen(name));
		return;
	}
	r = mutf7_encode(name, strlen(name), &enc);
	if (r < 0) {
		cmd->err = cmd->err ? cmd->err : (r == -ENOMEM ? r : -EINVAL);
		return;
	}
	cmd_astring(m, cmd, enc, strlen(enc));
	free(enc);
}

/* Traces buf[a..b) line by line, hiding what lies at or after secret. */
static void
trace_out(const char *buf, size_t a, size_t b, size_t secret)
{
	while (a < b) {
		const char *nl = memchr(buf + a, '\n', b - a);
		size_t end = nl ? (size_t)(nl - buf) + 1 : b, len = end - a;

		if (len >= 2 && buf[end - 2] == '\r' && buf[end - 1] == '\n')
			len -= 2;
		log_trace("C", buf + a, len, secret <= a ? 0 : secret - a);
		a = end;
	}
}

/* ---- responses ----------------------------------------------------------- */

static void
trace_in(const struct imap_response *r)
{
	char line[1024];
	size_t n;

	if (!log_enabled(LOG_LVL_TRACE))
		return;
	n = imap_response_format(r, line, sizeof(line));
	log_trace("S", line, n < sizeof(line) ? n : sizeof(line) - 1, SIZE_MAX);
}

/* Discards a streamed literal nobody asked for (a body in an unsolicited FETCH). */
static int
skip_literal(struct imap *m, uint64_t size, struct mp_err *err)
{
	conn_body_start(m->c);
	while (size > 0) {
		const char *data;
		size_t len;
		int r = conn_peek(m->c, &data, &len, err);

		if (r < 0)
			return r;
		if (len > size)
			len = (size_t)size;
		conn_consume(m->c, len);
		size -= len;
	}
	return 0;
}

/*
 * Reads one whole response. Only the bytes that belong to it are taken
 * from the connection, so after a tagged OK to STARTTLS anything the
 * server sent on is still buffered, and conn_starttls() refuses it.
 * Streamed literals go to lit (or are skipped). *ret is valid until the
 * next read.
 */
static int
read_resp(struct imap *m, literal_fn lit, void *ud, const struct imap_response **ret,
	  struct mp_err *err)
{
	for (;;) {
		const char *data, *item;
		uint64_t size;
		size_t len, used;
		int r;

		r = conn_peek(m->c, &data, &len, err);
		if (r < 0)
			return r;
		r = imap_parser_feed(m->p, data, len, &used, ret);
		conn_consume(m->c, used);
		if (r == IMAP_PARSE_DONE) {
			trace_in(*ret);
			return 0;
		}
		if (r == -ENOMEM)
			return mp_err_set(err, r, MP_EX_TEMPFAIL, "out of memory reading "
					  "a response from %s", conn_peer(m->c));
		/* Malformed is a protocol violation here; a cap hit stays -E2BIG. */
		if (r < 0)
			return mp_err_set(err, r == -EBADMSG ? -EPROTO : r, MP_EX_PROTOCOL,
					  "bad response from %s in %s: %s", conn_peer(m->c),
					  imap_state_to_string(m->state), imap_parser_error(m->p));
		if (r != IMAP_PARSE_LITERAL)
			continue;
		r = imap_parser_literal(m->p, &size, NULL, &item);
		if (r == 0)
			r = lit ? lit(m, size, item, ud, err) : skip_literal(m, size, err);
		if (r < 0)
			return r;
		r = imap_parser_literal_done(m->p);
		if (r == -ENOMEM)
			return mp_err_set(err, r, MP_EX_TEMPFAIL, "out of memory reading "
					  "a response from %s", conn_peer(m->c));
		if (r < 0)
			return mp_err_set(err, r == -EBADMSG ? -EPROTO : r, MP_EX_PROTOCOL,
					  "bad response from %s: %s", conn_peer(m->c),
					  imap_parser_error(m->p));
	}
}

/* Reads the CAPABILITY atoms (RFC 3501 section 7.2.1) into caps. */
static void
caps_parse(struct imap_caps *caps, const struct imap_arg *a, size_t n)
{
	static const struct {
		const char *name;
		size_t off;
	} names[] = {
		{ "IMAP4REV1", offsetof(struct imap_caps, rev1) },
		{ "IMAP4REV2", offsetof(struct imap_caps, rev2) },
		{ "STARTTLS", offsetof(struct imap_caps, starttls) },
		{ "LOGINDISABLED", offsetof(struct imap_caps, logindisabled) },
		{ "SASL-IR", offsetof(struct imap_caps, sasl_ir) },
		{ "UIDPLUS", offsetof(struct imap_caps, uidplus) },
		{ "IDLE", offsetof(struct imap_caps, idle) },
		{ "NAMESPACE", offsetof(struct imap_caps, namespace_) },
		{ "LITERAL+", offsetof(struct imap_caps, literal_plus) },
		{ "LITERAL-", offsetof(struct imap_caps, literal_minus) },
		{ "ENABLE", offsetof(struct imap_caps, enable) },
		{ "UTF8=ACCEPT", offsetof(struct imap_caps, utf8_accept) },
		{ "MOVE", offsetof(struct imap_caps, move) },
		{ "ESEARCH", offsetof(struct imap_caps, esearch) },
		{ "SPECIAL-USE", offsetof(struct imap_caps, special_use) },
		{ "LIST-EXTENDED", offsetof(struct imap_caps, list_extended) },
	};

	memset(caps, 0, sizeof(*caps));
	for (size_t i = 0; i < n; i++) {
		const char *s = a[i].str;
		size_t used = strlen(caps->sasl), ml;
		bool ok = true;

		if (a[i].type != IMAP_ARG_ATOM)
			continue;
		for (size_t k = 0; k < ARRAY_SIZE(names); k++)
			if (strcasecmp(s, names[k].name) == 0)
				*(bool *)((char *)caps + names[k].off) = true;
		if (strncasecmp(s, "AUTH=", 5) != 0)
			continue;
		/* RFC 4422 section 3.1 names only, so nothing odd reaches a message. */
		ml = strlen(s + 5);
		for (size_t k = 5; s[k]; k++)
			if (!((s[k] >= 'A' && s[k] <= 'Z') || (s[k] >= 'a' && s[k] <= 'z') ||
			      (s[k] >= '0' && s[k] <= '9') || s[k] == '-' || s[k] == '_'))
				ok = false;
		if (!ok || ml == 0 || ml > 20 || used + ml + 2 > sizeof(caps->sasl))
			continue;
		if (used > 0)
			caps->sasl[used++] = ' ';
		memcpy(caps->sasl + used, s + 5, ml);
		caps->sasl[used + ml] = '\0';
	}
}

/* A status response's code, when it is [CAPABILITY ...], updates caps. */
static void
code_caps(struct imap *m, const struct imap_response *r)
{
	if (imap_response_code_is(r, "CAPABILITY")) {
		caps_parse(&m->caps, r->code_args, r->code_count);
		m->caps_seen = true;
	}
}

/*
 * What every untagged response may bring, whatever command runs: new
 * capabilities, mailbox size changes, alerts, and BYE. [REFERRAL] (RFC
 * 2221) is never acted on, and an [ALERT] is the server's text: it is
 * sanitized and only logged as the server's (DESIGN.md, TLS rules).
 */
static int
untagged_common(struct imap *m, const struct imap_response *r, struct mp_err *err)
{
	uint32_t n;

	if (r->status == IMAP_STATUS_BYE) {
		if (m->logout) {
			m->bye = true;
			return 0;
		}
		return mp_err_set_srv(err, -ECONNRESET, MP_EX_TEMPFAIL, r->text, r->text_len,
				"server closed the session (BYE) in %s",
				imap_state_to_string(m->state));
	}
	if (r->status == IMAP_STATUS_PREAUTH)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "unexpected PREAUTH from server");
	if (r->status != IMAP_STATUS_NONE) {
		code_caps(m, r);
		if (imap_response_code_is(r, "ALERT")) {
			char text[256];

			util_sanitize(text, sizeof(text), r->text, r->text_len);
			log_debug("%s says (ALERT): %s", conn_peer(m->c), text);
		}
		return 0;
	}
	if (imap_arg_atom_is(&r->args[0], "CAPABILITY")) {
		caps_parse(&m->caps, r->args + 1, r->count - 1);
		m->caps_seen = true;
		return 0;
	}
	if (r->count >= 2 && imap_arg_u32(&r->args[0], &n) == 0) {
		if (imap_arg_atom_is(&r->args[1], "EXISTS"))
			m->exists = n;
		else if (imap_arg_atom_is(&r->args[1], "EXPUNGE") && m->exists > 0)
			m->exists--;
	}
	return 0;
}

/* The number in tag "Annnn", or 0 when it is not one of ours. */
static unsigned
tag_number(const char *tag)
{
	uint64_t v;

	if (!tag || tag[0] != 'A' || util_parse_u64(tag + 1, strlen(tag + 1), &v) < 0 ||
	    v == 0 || v > UINT32_MAX)
		return 0;
	return (unsigned)v;
}

/*
 * Reads responses until a continuation request (returns READ_CONT) or the
 * tagged completion of one of the tags lo..hi-1 (returns its status:
 * IMAP_STATUS_OK/NO/BAD, *ret set). Untagged responses get the common
 * handling, then fn's.
 */
static int
read_until_range(struct imap *m, unsigned lo, unsigned hi, bool cont_ok, resp_fn fn,
		 literal_fn lit, void *ud, const struct imap_response **ret, struct mp_err *err)
{
	/*
	 * Responses are read with conn_peek(), so the minimum-rate rule bounds
	 * every wait: a server that drips bytes, or untagged chatter, cannot
	 * hold a command open longer than the timeout allows.
	 */
	conn_body_start(m->c);
	for (;;) {
		const struct imap_response *r;
		int rc = read_resp(m, lit, ud, &r, err);

		if (rc < 0)
			return rc;
		switch (r->type) {
		case IMAP_RESP_CONTINUATION:
			if (!cont_ok)
				return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, r->text, r->text_len,
						"unexpected continuation request in %s",
						imap_state_to_string(m->state));
			*ret = r;
			return READ_CONT;
		case IMAP_RESP_TAGGED:
			if (tag_number(r->tag) < lo || tag_number(r->tag) >= hi)
				return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
						  "server answered a command we did not send "
						  "(in %s)", imap_state_to_string(m->state));
			*ret = r;
			return (int)r->status;
		default:
			rc = untagged_common(m, r, err);
			if (rc == 0 && fn)
				rc = fn(m, r, ud, err);
			if (rc < 0)
				return rc;
		}
	}
}

static int
read_until(struct imap *m, unsigned tag, bool cont_ok, resp_fn fn, literal_fn lit, void *ud,
	   const struct imap_response **ret, struct mp_err *err)
{
	return read_until_range(m, tag, tag + 1, cont_ok, fn, lit, ud, ret, err);
}

/*
 * Queues the command; at each synchronizing literal flushes and waits for
 * the server's "+". Returns 0 when all is queued, or the tagged status
 * (positive) when the server refused the command before its end (*ret set).
 * cmd_send_part() leaves out the final CRLF (a literal streamed by the
 * caller follows).
 */
static int
cmd_send_part(struct imap *m, struct cmd *cmd, const struct imap_response **ret,
	      struct mp_err *err)
{
	size_t start = 0;
	int r;

	if (cmd->err)
		return mp_err_set(err, cmd->err, mp_exit_from_errno(cmd->err),
				  "cannot build the %s command: %s", imap_state_to_string(m->state),
				  strerror(-cmd->err));
	for (size_t i = 0; i <= cmd->nbrk; i++) {
		size_t end = i < cmd->nbrk ? cmd->brk[i] : cmd->len;

		trace_out(cmd->buf, start, end, cmd->secret);
		r = conn_write(m->c, cmd->buf + start, end - start, err);
		if (r < 0)
			return r;
		start = end;
		if (i == cmd->nbrk)
			break;
		r = conn_flush(m->c, err);
		if (r == 0)
			r = read_until(m, cmd->tag, true, NULL, NULL, NULL, ret, err);
		if (r != READ_CONT)
			return r;
	}
	return 0;
}

static int
cmd_send(struct imap *m, struct cmd *cmd, const struct imap_response **ret, struct mp_err *err)
{
	int r = cmd_send_part(m, cmd, ret, err);

	return r != 0 ? r : conn_write(m->c, "\r\n", 2, err);
}

/*
 * Sends the command and reads up to its completion. 0 for OK; the status
 * (IMAP_STATUS_NO / _BAD) with *ret set for a refusal; negative errno.
 */
static int
run_cmd(struct imap *m, struct cmd *cmd, resp_fn fn, literal_fn lit, void *ud,
	const struct imap_response **ret, struct mp_err *err)
{
	const struct imap_response *tmp;
	int r;

	if (!ret)
		ret = &tmp;
	r = cmd_send(m, cmd, ret, err);
	if (r == 0)
		r = conn_flush(m->c, err);
	/* A positive r: the server completed the command before its end. */
	if (r == 0)
		r = read_until(m, cmd->tag, false, fn, lit, ud, ret, err);
	cmd_free(cmd);
	if (r == IMAP_STATUS_OK)
		return 0;
	return r;
}

/*
 * A NO with [REFERRAL url]: a login referral (RFC 2221) or a mailbox
 * referral (RFC 2193). mailpull never connects where a server says to
 * (DESIGN.md, TLS rules), so the error says that, with the URL shown as
 * the server's words for the user to judge.
 */
static int
referral(struct imap *m, const struct imap_response *r, int code, enum mp_exit ex,
	 const char *what, struct mp_err *err)
{
	const char *url = NULL;
	size_t ulen = 0;
	char srv[512];

	m->refused = true;
	if (r->code_count < 1 || imap_arg_string(&r->code_args[0], &url, &ulen) < 0 || !url)
		ulen = 0;
	snprintf(srv, sizeof(srv), "[REFERRAL %.*s] %.*s", ulen > 300 ? 300 : (int)ulen,
		 url ? url : "", r->text_len > 200 ? 200 : (int)r->text_len, r->text);
	return mp_err_set_srv(err, code, ex, srv, strlen(srv),
			"server refers %s to another server, which mailpull never follows", what);
}

/* A tagged NO or BAD that ends what we were doing, the server's text kept apart. */
static int
refused(struct imap *m, const struct imap_response *r, int code, const char *what,
	struct mp_err *err)
{
	/* A mailbox referral is not a folder that vanished (-ENOENT): it lives elsewhere. */
	if (r->status == IMAP_STATUS_NO && imap_response_code_is(r, "REFERRAL"))
		return code == -ENOENT ? referral(m, r, -EREMOTE, MP_EX_PROTOCOL, what, err) :
			referral(m, r, code, mp_exit_from_errno(code), what, err);
	m->refused = true;
	return mp_err_set_srv(err, code, mp_exit_from_errno(code), r->text, r->text_len,
			"server refused %s (%s)", what, imap_status_to_string(r->status));
}

/*
 * A command whose untagged data, if any, goes to fn: 0, or -EPROTO when
 * refused.
 */
static int
simple_cmd(struct imap *m, struct cmd *cmd, resp_fn fn, void *ud, const char *what,
	   struct mp_err *err)
{
	const struct imap_response *r;
	int rc = run_cmd(m, cmd, fn, NULL, ud, &r, err);

	if (rc > 0)
		return refused(m, r, -EPROTO, what, err);
	return rc;
}

/* ---- session ------------------------------------------------------------- */

static int
check_usable(struct imap *m, struct mp_err *err)
{
	m->refused = false;
	if (m->broken)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "IMAP session unusable after an earlier error");
	return 0;
}

/*
 * After a transport or protocol error the responses can no longer be
 * trusted to line up with our commands. A tagged NO or BAD, or an argument
 * refused before sending, leaves the session in step.
 */
static int
settle(struct imap *m, int r)
{
	if (r < 0 && !m->refused && r != -EINVAL && r != -ENOTSUP)
		m->broken = true;
	return r;
}

/* CAPABILITY (RFC 3501 section 6.1.1), forgetting what was known. */
static int
ask_caps(struct imap *m, struct mp_err *err)
{
	enum imap_state saved = m->state;
	struct cmd cmd;
	int r;

	memset(&m->caps, 0, sizeof(m->caps));
	m->caps_seen = false;
	m->state = IMAP_ST_CAPABILITY;
	cmd_start(m, &cmd, "CAPABILITY");
	r = simple_cmd(m, &cmd, NULL, NULL, "CAPABILITY", err);
	m->state = saved;
	if (r == 0 && !m->caps_seen)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server answered CAPABILITY without capabilities");
	return r;
}

/*
 * STARTTLS (RFC 2595 section 3.1, RFC 9051 section 6.2.1). Mandatory once
 * asked for: any outcome but OK ends the session before a credential is
 * sent. Then every capability learned in clear is forgotten and asked again
 * (RFC 9051 section 6.2.1: the client MUST discard cached capabilities).
 */
static int
do_starttls(struct imap *m, struct mp_err *err)
{
	const struct imap_response *r;
	struct cmd cmd;
	int rc;

	if (!m->caps_seen) {
		rc = ask_caps(m, err);
		if (rc < 0)
			return rc;
	}
	if (!m->caps.starttls)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "server does not offer STARTTLS; "
				  "refusing to continue without TLS");
	m->state = IMAP_ST_STARTTLS;
	cmd_start(m, &cmd, "STARTTLS");
	rc = run_cmd(m, &cmd, NULL, NULL, NULL, &r, err);
	if (rc > 0)
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, r->text, r->text_len,
				"server refused STARTTLS; refusing to continue without TLS");
	if (rc < 0)
		return rc;
	imap_parser_reset(m->p);
	rc = conn_starttls(m->c, err);
	if (rc < 0)
		return rc;
	/* Nothing said before the handshake is believed after it (DESIGN, TLS rules). */
	m->greeting[0] = '\0';
	return ask_caps(m, err);
}

/*
 * One response without literals, under the minimum-rate rule: read_resp()
 * waits afresh for each byte, so a server dripping a greeting or an IDLE
 * line would otherwise hold the connection until the line cap.
 */
static int
read_paced(struct imap *m, const struct imap_response **ret, struct mp_err *err)
{
	conn_body_start(m->c);
	return read_resp(m, NULL, NULL, ret, err);
}

/* The greeting (RFC 3501 section 7.1): untagged OK, PREAUTH or BYE. */
static int
read_greeting(struct imap *m, bool starttls, struct mp_err *err)
{
	const struct imap_response *r;
	int rc;

	rc = read_paced(m, &r, err);
	if (rc < 0)
		return rc;
	if (r->type != IMAP_RESP_UNTAGGED)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "server greeting is not untagged");
	switch (r->status) {
	case IMAP_STATUS_BYE:
		return mp_err_set_srv(err, -ECONNREFUSED, MP_EX_TEMPFAIL, r->text, r->text_len,
				"server refused the connection (BYE)");
	case IMAP_STATUS_PREAUTH:
		/* Authenticated in clear: nothing we send could be protected. */
		if (starttls)
			return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, r->text, r->text_len,
					"server sent PREAUTH before STARTTLS; refusing a session "
					"without TLS");
		m->preauth = true;
		break;
	case IMAP_STATUS_OK:
		break;
	default:
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, r->text, r->text_len,
				"server greeting is not OK");
	}
	util_sanitize(m->greeting, sizeof(m->greeting), r->text, r->text_len);
	code_caps(m, r);
	return 0;
}

int
imap_open(struct conn *c, bool starttls, struct imap **ret, struct mp_err *err)
{
	const struct imap_parser_limits lim = {
		.max_line = IMAP_MAX_LINE, .max_literal = IMAP_MAX_LITERAL,
		.max_literal_total = IMAP_MAX_LITERAL_TOTAL,
	};
	struct imap *m;
	int r;

	m = calloc(1, sizeof(*m));
	if (!m) {
		conn_close(c);
		return mp_err_oom(err);
	}
	m->c = c;
	m->state = IMAP_ST_GREETING;
	m->buf = malloc(IMAP_BUFSIZE);
	r = m->buf ? imap_parser_new(&lim, &m->p) : -ENOMEM;
	if (r == 0)
		r = imap_parser_stream_item(m->p, "BODY[]");
	if (r < 0) {
		r = mp_err_oom(err);
		goto fail;
	}
	r = read_greeting(m, starttls, err);
	if (r == 0 && starttls)
		r = do_starttls(m, err);
	else if (r == 0 && !m->caps_seen)
		r = ask_caps(m, err);
	if (r < 0)
		goto fail;
	*ret = m;
	return 0;
fail:
	imap_free(m);
	return r;
}

const struct imap_caps *
imap_caps(const struct imap *m)
{
	return &m->caps;
}

const char *
imap_greeting(const struct imap *m)
{
	return m->greeting;
}

bool
imap_preauthenticated(const struct imap *m)
{
	return m->preauth;
}

void
imap_free(struct imap *m)
{
	if (!m)
		return;
	conn_close(m->c);
	imap_parser_free(m->p);
	free(m->buf);
	free(m);
}

/* ---- authentication ------------------------------------------------------ */

/*
 * A refused login. RFC 5530 [UNAVAILABLE], [INUSE] and [LIMIT] say the
 * credentials may be fine: retry later rather than ask for a new password.
 */
static int
auth_refused(struct imap *m, const struct imap_response *r, const char *detail,
	     struct mp_err *err)
{
	static const char *const temp[] = { "UNAVAILABLE", "INUSE", "LIMIT" };
	const char *text = r->text;
	size_t len = r->text_len;

	m->refused = true;
	if (r->status == IMAP_STATUS_BAD)
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, text, len,
				"server rejected the authentication command (BAD)");
	if (imap_response_code_is(r, "REFERRAL"))
		return referral(m, r, -EACCES, MP_EX_NOPERM, "the login", err);
	/* An OAuth error report (RFC 7628) says more than "Authentication failed". */
	if (detail && detail[0]) {
		text = detail;
		len = strlen(detail);
	}
	for (size_t i = 0; i < ARRAY_SIZE(temp); i++)
		if (imap_response_code_is(r, temp[i]))
			return mp_err_set_srv(err, -EACCES, MP_EX_TEMPFAIL, text, len,
					"login refused for now ([%s]); will retry", temp[i]);
	return mp_err_set_srv(err, -EACCES, MP_EX_NOPERM, text, len, "authentication refused");
}

/* Sends one line of an authentication exchange; secret ones trace as "***". */
static int
send_auth_line(struct imap *m, const char *s, bool secret, struct mp_err *err)
{
	size_t len = strlen(s);
	int r;

	log_trace("C", s, len, secret ? 0 : SIZE_MAX);
	r = conn_write(m->c, s, len, err);
	if (r == 0)
		r = conn_write(m->c, "\r\n", 2, err);
	if (r == 0)
		r = conn_flush(m->c, err);
	return r;
}

/*
 * A step failed: cancel with "*" (RFC 3501 section 6.2.2), read the tagged
 * reply, and report the step's error, whatever that reply says.
 */
static int
auth_cancel(struct imap *m, unsigned tag, struct sasl_session *cl, int step,
	    struct mp_err *err)
{
	const struct imap_response *r;
	int rc = send_auth_line(m, "*", false, err);

	if (rc == 0)
		rc = read_until(m, tag, false, NULL, NULL, NULL, &r, err);
	if (rc < 0)
		return rc;
	if (step == -ENOMEM)
		return mp_err_oom(err);
	/* In step again: a NO or BAD after "*" is the expected end. */
	m->refused = rc != IMAP_STATUS_OK;
	return mp_err_set(err, step, step == -EACCES ? MP_EX_NOPERM :
			  step == -EINVAL ? MP_EX_CONFIG : MP_EX_PROTOCOL,
			  "%s authentication failed: %s",
			  sasl_mech_to_string(sasl_session_mech(cl)), sasl_session_error(cl));
}

/* The tagged OK: the mechanism decides whether the server proved itself. */
static int
auth_sasl_ok(struct sasl_session *cl, bool answered, struct mp_err *err)
{
	const char *name = sasl_mech_to_string(sasl_session_mech(cl));

	if (!answered)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server accepted AUTHENTICATE %s without a response", name);
	if (sasl_session_finish(cl) < 0)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "%s: %s", name, sasl_session_error(cl));
	return 0;
}

/* sasl_session_initial() failed: memory, or what the mechanism cannot carry. */
static int
initial_failed(struct sasl_session *cl, int r, struct mp_err *err)
{
	if (r == -ENOMEM)
		return mp_err_oom(err);
	return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "cannot build the %s response: %s",
			  sasl_mech_to_string(sasl_session_mech(cl)),
			  sasl_session_error(cl)[0] ? sasl_session_error(cl) : strerror(-r));
}

/*
 * AUTHENTICATE (RFC 3501 section 6.2.2): the engine only carries base64
 * lines between cl and the server. With SASL-IR (RFC 4959) the initial
 * response goes on the command line ("=" when empty); else the first
 * (empty) challenge goes to sasl_session_step(), which gives it. Returns 0
 * on OK (*ret_ok the tagged response), or an error.
 */
static int
auth_sasl(struct imap *m, struct sasl_session *cl, const struct imap_response **ret_ok,
	  struct mp_err *err)
{
	const char *name = sasl_mech_to_string(sasl_session_mech(cl));
	const struct imap_response *r = NULL;
	char *resp = NULL;
	struct cmd cmd;
	unsigned tag;
	bool answered = false;
	int rc, rounds = 0;

	cmd_start(m, &cmd, "AUTHENTICATE ");
	cmd_str(&cmd, name);
	tag = cmd.tag;
	if (m->caps.sasl_ir) {
		rc = sasl_session_initial(cl, &resp);
		if (rc < 0) {
			cmd_free(&cmd);
			return initial_failed(cl, rc, err);
		}
		if (resp) {
			cmd_str(&cmd, " ");
			cmd.secret = cmd.len;
			cmd_str(&cmd, resp[0] ? resp : "=");
			answered = true;
		}
		sasl_free(resp);
		resp = NULL;
	}
	rc = cmd_send(m, &cmd, &r, err);
	if (rc == 0)
		rc = conn_flush(m->c, err);
	cmd_free(&cmd);
	while (rc == 0) {
		rc = read_until(m, tag, true, NULL, NULL, NULL, &r, err);
		if (rc != READ_CONT)
			break;
		/* RFC 4422 section 3: no mechanism needs this many rounds. */
		if (++rounds > 16)
			return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
					  "server kept challenging AUTHENTICATE %s", name);
		rc = sasl_session_step(cl, r->text, r->text_len, &resp);
		if (rc < 0)
			return auth_cancel(m, tag, cl, rc, err);
		rc = send_auth_line(m, resp, true, err);
		sasl_free(resp);
		resp = NULL;
		answered = true;
	}
	if (rc < 0)
		return rc;
	if (rc != IMAP_STATUS_OK)
		return auth_refused(m, r, sasl_session_detail(cl), err);
	rc = auth_sasl_ok(cl, answered, err);
	if (rc == 0)
		*ret_ok = r;
	return rc;
}

/*
 * LOGIN (RFC 3501 section 6.2.3), refused by us under LOGINDISABLED. User
 * and password are astrings: quoted, or literals when they hold CR, LF or
 * 8-bit bytes.
 */
static int
auth_login_cmd(struct imap *m, const char *user, const char *pass,
	       const struct imap_response **ret_ok, struct mp_err *err)
{
	const struct imap_response *r;
	struct cmd cmd;
	int rc;

	if (m->caps.logindisabled)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server disabled LOGIN (LOGINDISABLED); choose a SASL mechanism");
	cmd_start(m, &cmd, "LOGIN ");
	cmd_astring(m, &cmd, user, strlen(user));
	cmd_str(&cmd, " ");
	cmd.secret = cmd.len;
	cmd_astring(m, &cmd, pass, strlen(pass));
	if (cmd.err == -EINVAL) {
		cmd_free(&cmd);
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "user name or password holds a NUL");
	}
	rc = run_cmd(m, &cmd, NULL, NULL, NULL, &r, err);
	if (rc < 0)
		return rc;
	if (rc > 0)
		return auth_refused(m, r, NULL, err);
	*ret_ok = r;
	return 0;
}

/* "* ENABLED cap..." (RFC 5161 section 3.2): what the server turned on. */
static int
enabled_resp(struct imap *m, const struct imap_response *r, void *ud, struct mp_err *err)
{
	(void)ud;
	(void)err;
	if (r->status != IMAP_STATUS_NONE || !imap_arg_atom_is(&r->args[0], "ENABLED"))
		return 0;
	for (size_t i = 1; i < r->count; i++)
		if (imap_arg_atom_is(&r->args[i], "UTF8=ACCEPT"))
			m->enabled_utf8 = true;
	return 0;
}

/*
 * ENABLE UTF8=ACCEPT (RFC 6855 section 3, RFC 5161) whenever the server
 * offers it in the authenticated state, where ENABLE is valid and before
 * any mailbox is selected: otherwise it may replace or downgrade messages
 * whose headers hold raw UTF-8. Mailbox names then travel as UTF-8, which
 * cmd_mailbox() and decode_name() follow. A refusal is no error: the
 * session goes on as before.
 */
static int
enable_utf8(struct imap *m, struct mp_err *err)
{
	const struct imap_response *r;
	struct cmd cmd;
	int rc;

	if (!m->caps.enable || !m->caps.utf8_accept || m->utf8)
		return 0;
	m->state = IMAP_ST_ENABLE;
	m->enabled_utf8 = false;
	cmd_start(m, &cmd, "ENABLE UTF8=ACCEPT");
	rc = run_cmd(m, &cmd, enabled_resp, NULL, NULL, &r, err);
	if (rc > 0) {
		log_debug("server refused ENABLE UTF8=ACCEPT (%s)", imap_status_to_string(rc));
		return 0;
	}
	if (rc == 0)
		m->utf8 = m->enabled_utf8;
	return rc;
}

bool
imap_utf8_enabled(const struct imap *m)
{
	return m->utf8;
}

int
imap_auth(struct imap *m, struct sasl_session *cl, const char *user, const char *secret,
	  struct mp_err *err)
{
	const struct imap_response *ok = NULL;
	int r;

	r = check_usable(m, err);
	if (r < 0)
		return r;
	if (!cl && (!user || !secret))
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "user name or secret is missing");
	/* RFC 3501 section 7.1.4: PREAUTH already is the authenticated state. */
	if (m->preauth)
		return settle(m, enable_utf8(m, err));
	m->state = IMAP_ST_AUTH;
	m->caps_seen = false;
	if (cl)
		r = auth_sasl(m, cl, &ok, err);
	else
		r = auth_login_cmd(m, user, secret, &ok, err);
	if (r < 0)
		return settle(m, r);
	/*
	 * The capabilities may change with authentication (RFC 3501 section
	 * 7.2.1): take them from the OK, else from an untagged CAPABILITY
	 * sent meanwhile, else ask.
	 */
	if (imap_response_code_is(ok, "CAPABILITY"))
		code_caps(m, ok);
	else if (!m->caps_seen)
		r = ask_caps(m, err);
	if (r == 0)
		r = enable_utf8(m, err);
	return settle(m, r);
}

/* ---- mailboxes ----------------------------------------------------------- */

/*
 * A mailbox name from the server (astring, modified UTF-7, or UTF-8 once
 * UTF8=ACCEPT is enabled) into UTF-8. INBOX is case-insensitive (RFC 3501
 * section 5.1): any case becomes "INBOX". -EBADMSG when it is not canonical
 * modified UTF-7 (or, with utf8, valid UTF-8 without NUL).
 */
static int
decode_name(const struct imap_arg *a, bool utf8, char **ret)
{
	const char *s;
	size_t len;
	int r;

	if (imap_arg_string(a, &s, &len) < 0 || !s)
		return -EBADMSG;
	if (len == 5 && strncasecmp(s, "INBOX", 5) == 0)
		s = "INBOX";
	if (utf8) {
		if (!utf8_valid(s, len) || memchr(s, '\0', len))
			return -EBADMSG;
		*ret = strndup(s, len);
		return *ret ? 0 : -ENOMEM;
	}
	r = mutf7_decode(s, len, ret);
	return r == -ENOMEM ? r : r < 0 ? -EBADMSG : 0;
}

/* A hierarchy delimiter: a one-character quoted string, or NIL ('\0'). */
static int
decode_delim(const struct imap_arg *a, char *ret)
{
	if (a->type == IMAP_ARG_NIL) {
		*ret = '\0';
		return 0;
	}
	if ((a->type != IMAP_ARG_STRING && a->type != IMAP_ARG_ATOM) || a->len != 1 ||
	    (unsigned char)a->str[0] < 0x20 || (unsigned char)a->str[0] >= 0x7f)
		return -EBADMSG;
	*ret = a->str[0];
	return 0;
}

struct list_ctx {
	struct imap_mailbox *v;
	size_t n, cap;
};

void
imap_mailboxes_free(struct imap_mailbox *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* Grows *v (elements of size sz) to hold n + 1, within max. */
static int
grow(void **v, size_t *cap, size_t n, size_t sz, size_t max)
{
	size_t nc;
	void *nv;

	if (n < *cap)
		return 0;
	if (n >= max)
		return -E2BIG;
	nc = *cap ? *cap * 2 : 64;
	if (nc > max)
		nc = max;
	nv = reallocarray(*v, nc, sz);
	if (!nv)
		return -ENOMEM;
	*v = nv;
	*cap = nc;
	return 0;
}

/* "* LIST (flags) delim name" (RFC 3501 section 7.2.2). */
static int
list_resp(struct imap *m, const struct imap_response *r, void *ud, struct mp_err *err)
{
	struct list_ctx *x = ud;
	struct imap_mailbox mb = { 0 };
	const struct imap_arg *flags;
	int rc;

	if (r->status != IMAP_STATUS_NONE || !imap_arg_atom_is(&r->args[0], "LIST"))
		return 0;
	if (r->count < 4 || r->args[1].type != IMAP_ARG_LIST ||
	    decode_delim(&r->args[2], &mb.delim) < 0)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "malformed LIST response");
	rc = decode_name(&r->args[3], m->utf8, &mb.name);
	if (rc == -ENOMEM)
		return mp_err_oom(err);
	if (rc < 0) {
		/* Kept under its raw name, so the policy can report it and go on. */
		const char *raw;
		size_t rlen;

		if (imap_arg_string(&r->args[3], &raw, &rlen) < 0 || !raw)
			return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "malformed LIST response");
		mb.name = strndup(raw, rlen);
		if (!mb.name)
			return mp_err_oom(err);
		mb.invalid = true;
	}
	flags = &r->args[1];
	for (size_t i = 0; i < flags->count; i++) {
		if (imap_arg_atom_is(&flags->list[i], "\\Noselect") ||
		    imap_arg_atom_is(&flags->list[i], "\\NonExistent"))
			mb.noselect = true;
		/* RFC 6154 section 2; attributes are case-insensitive (RFC 3501 9). */
		if (imap_arg_atom_is(&flags->list[i], "\\Sent"))
			mb.sent = true;
	}
	rc = grow((void **)&x->v, &x->cap, x->n, sizeof(*x->v), IMAP_MAX_MAILBOXES);
	if (rc < 0) {
		free(mb.name);
		return rc == -ENOMEM ? mp_err_oom(err)
				     : mp_err_set(err, rc, MP_EX_PROTOCOL,
						  "server lists more than %u mailboxes",
						  IMAP_MAX_MAILBOXES);
	}
	x->v[x->n++] = mb;
	return 0;
}

/* "LIST "" pattern" followed by tail (a return option, or ""). */
static int
list_cmd(struct imap *m, const char *pattern, const char *tail, struct imap_mailbox **ret,
	 size_t *ret_n, struct mp_err *err)
{
	struct list_ctx x = { 0 };
	struct cmd cmd;
	int rc;

	rc = check_usable(m, err);
	if (rc < 0)
		return rc;
	m->state = IMAP_ST_LIST;
	cmd_start(m, &cmd, "LIST \"\" ");
	cmd_mailbox(m, &cmd, pattern);
	cmd_str(&cmd, tail);
	rc = settle(m, simple_cmd(m, &cmd, list_resp, &x, "LIST", err));
	if (rc < 0) {
		imap_mailboxes_free(x.v, x.n);
		return rc;
	}
	*ret = x.v;
	*ret_n = x.n;
	return 0;
}

int
imap_list(struct imap *m, const char *pattern, struct imap_mailbox **ret, size_t *ret_n,
	  struct mp_err *err)
{
	return list_cmd(m, pattern, "", ret, ret_n, err);
}

/*
 * RFC 6154 section 5.1: the SPECIAL-USE return option lists every mailbox
 * with its special-use attributes (the SPECIAL-USE selection option would
 * list only the special ones, and the caller also looks for plain names).
 * A server without the capability may still give the attributes unasked
 * (section 2), so its plain LIST is read the same way.
 */
int
imap_list_special(struct imap *m, struct imap_mailbox **ret, size_t *ret_n,
		  struct mp_err *err)
{
	return list_cmd(m, "*", m->caps.special_use ? " RETURN (SPECIAL-USE)" : "", ret, ret_n,
			err);
}

struct ns_ctx {
	struct imap_namespace *v;
	size_t n, cap;
	bool seen;
	bool utf8;
};

void
imap_namespaces_free(struct imap_namespace *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].prefix);
	free(v);
}

/* One namespace list: NIL or ((prefix delim ext...) ...) (RFC 2342 section 5). */
static int
ns_list(struct ns_ctx *x, const struct imap_arg *a, struct mp_err *err)
{
	if (a->type == IMAP_ARG_NIL)
		return 0;
	if (a->type != IMAP_ARG_LIST)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "malformed NAMESPACE response");
	for (size_t i = 0; i < a->count; i++) {
		const struct imap_arg *d = &a->list[i];
		struct imap_namespace ns = { 0 };
		int rc;

		if (d->type != IMAP_ARG_LIST || d->count < 2 ||
		    decode_delim(&d->list[1], &ns.delim) < 0)
			return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
					  "malformed NAMESPACE response");
		rc = decode_name(&d->list[0], x->utf8, &ns.prefix);
		if (rc == -ENOMEM)
			return mp_err_oom(err);
		if (rc < 0) {
			log_debug("skipping a namespace whose prefix is not modified UTF-7");
			continue;
		}
		rc = grow((void **)&x->v, &x->cap, x->n, sizeof(*x->v), IMAP_MAX_NAMESPACES);
		if (rc < 0) {
			free(ns.prefix);
			return rc == -ENOMEM ? mp_err_oom(err)
					     : mp_err_set(err, rc, MP_EX_PROTOCOL,
							  "too many namespaces");
		}
		x->v[x->n++] = ns;
	}
	return 0;
}

/* "* NAMESPACE personal other shared": the last two are kept. */
static int
ns_resp(struct imap *m, const struct imap_response *r, void *ud, struct mp_err *err)
{
	struct ns_ctx *x = ud;
	int rc;

	(void)m;
	if (r->status != IMAP_STATUS_NONE || !imap_arg_atom_is(&r->args[0], "NAMESPACE"))
		return 0;
	if (r->count < 4 || x->seen)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "malformed NAMESPACE response");
	x->seen = true;
	rc = ns_list(x, &r->args[2], err);
	if (rc == 0)
		rc = ns_list(x, &r->args[3], err);
	return rc;
}

int
imap_namespaces(struct imap *m, struct imap_namespace **ret, size_t *ret_n,
		struct mp_err *err)
{
	struct ns_ctx x = { .utf8 = m->utf8 };
	struct cmd cmd;
	int rc;

	rc = check_usable(m, err);
	if (rc < 0)
		return rc;
	*ret = NULL;
	*ret_n = 0;
	if (!m->caps.namespace_)
		return 0;
	m->state = IMAP_ST_NAMESPACE;
	cmd_start(m, &cmd, "NAMESPACE");
	rc = settle(m, simple_cmd(m, &cmd, ns_resp, &x, "NAMESPACE", err));
	if (rc < 0) {
		imap_namespaces_free(x.v, x.n);
		return rc;
	}
	*ret = x.v;
	*ret_n = x.n;
	return 0;
}

/* A response code's single number argument, e.g. [UIDVALIDITY 3857529045]. */
static int
code_u32(const struct imap_response *r, uint32_t *ret)
{
	if (r->code_count < 1)
		return -EBADMSG;
	return imap_arg_u32(&r->code_args[0], ret);
}

struct select_ctx {
	struct imap_folder f;
	bool have_uidvalidity;
};

/* Untagged OK [UIDVALIDITY n] / [UIDNEXT n] (RFC 3501 section 7.1). */
static int
select_resp(struct imap *m, const struct imap_response *r, void *ud, struct mp_err *err)
{
	struct select_ctx *x = ud;

	(void)m;
	if (r->status != IMAP_STATUS_OK)
		return 0;
	if (imap_response_code_is(r, "UIDVALIDITY")) {
		if (code_u32(r, &x->f.uidvalidity) < 0 || x->f.uidvalidity == 0)
			return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "malformed UIDVALIDITY");
		x->have_uidvalidity = true;
	} else if (imap_response_code_is(r, "UIDNEXT")) {
		if (code_u32(r, &x->f.uidnext) < 0)
			return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "malformed UIDNEXT");
	}
	return 0;
}

int
imap_select(struct imap *m, const char *name, bool read_only, struct imap_folder *ret,
	    struct mp_err *err)
{
	const struct imap_response *r;
	struct select_ctx x = { 0 };
	struct cmd cmd;
	int rc;

	rc = check_usable(m, err);
	if (rc < 0)
		return rc;
	m->state = IMAP_ST_SELECT;
	m->exists = 0;
	cmd_start(m, &cmd, read_only ? "EXAMINE " : "SELECT ");
	cmd_mailbox(m, &cmd, name);
	rc = run_cmd(m, &cmd, select_resp, NULL, &x, &r, err);
	/* RFC 3501 section 6.3.1: after a failed SELECT no mailbox is selected. */
	if (rc == IMAP_STATUS_NO)
		rc = refused(m, r, -ENOENT, "SELECT", err);
	else if (rc > 0)
		rc = refused(m, r, -EPROTO, "SELECT", err);
	if (rc < 0)
		return settle(m, rc);
	if (!x.have_uidvalidity)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server sent no UIDVALIDITY for the mailbox");
	x.f.exists = m->exists;
	x.f.read_only = read_only || imap_response_code_is(r, "READ-ONLY");
	*ret = x.f;
	return 0;
}

/* ---- CREATE and APPEND --------------------------------------------------- */

int
imap_create(struct imap *m, const char *name, struct mp_err *err)
{
	const struct imap_response *r;
	struct cmd cmd;
	int rc;

	rc = check_usable(m, err);
	if (rc < 0)
		return rc;
	m->state = IMAP_ST_CREATE;
	cmd_start(m, &cmd, "CREATE ");
	cmd_mailbox(m, &cmd, name);
	rc = run_cmd(m, &cmd, NULL, NULL, NULL, &r, err);
	/* RFC 5530 section 3: the mailbox is there, which is all we wanted. */
	if (rc == IMAP_STATUS_NO && imap_response_code_is(r, "ALREADYEXISTS"))
		return 0;
	if (rc > 0)
		rc = refused(m, r, -EPROTO, "CREATE", err);
	return settle(m, rc);
}

/* Message flags as an APPEND flag list (" (\\Seen)"), nothing for none. */
static void
append_flags(struct cmd *cmd, unsigned flags)
{
	static const struct {
		unsigned flag;
		const char *name;
	} map[] = {
		{ IMAP_FLAG_SEEN, "\\Seen" }, { IMAP_FLAG_ANSWERED, "\\Answered" },
		{ IMAP_FLAG_FLAGGED, "\\Flagged" }, { IMAP_FLAG_DELETED, "\\Deleted" },
		{ IMAP_FLAG_DRAFT, "\\Draft" },
	};
	bool any = false;

	for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
		if (!(flags & map[i].flag))
			continue;
		cmd_str(cmd, any ? " " : " (");
		cmd_str(cmd, map[i].name);
		any = true;
	}
	if (any)
		cmd_str(cmd, ")");
}

/* Bare LFs in d[0..len) (a CR ending the previous chunk counts, *cr), counted as CRLF adds one. */
static uint64_t
bare_lfs(const char *d, size_t len, bool *cr)
{
	uint64_t n = 0;

	for (size_t i = 0; i < len; i++)
		if (d[i] == '\n' && !(i ? d[i - 1] == '\r' : *cr))
			n++;
	if (len)
		*cr = d[len - 1] == '\r';
	return n;
}

/*
 * The first pass over the message, before anything is sent: its size once
 * its line ends are CRLF, and no NUL (RFC 3501 section 4.3: a literal is
 * CHAR8, which excludes NUL; RFC 3516 binary literals would be needed).
 */
static int
append_measure(imap_read_fn read, void *ud, uint64_t *ret, struct mp_err *err)
{
	uint64_t total = 0;
	bool cr = false;

	for (;;) {
		const char *d;
		size_t len;
		int r = read(ud, &d, &len, err);

		if (r < 0)
			return r;
		if (len == 0)
			break;
		if (memchr(d, '\0', len))
			return mp_err_set(err, -EINVAL, MP_EX_DATAERR, "the message holds a NUL "
					  "byte, which an IMAP literal cannot carry");
		total += len + bare_lfs(d, len, &cr);
		if (total > IMAP_APPEND_MAX)
			break;
	}
	*ret = total;
	return 0;
}

struct append_out {
	uint64_t size;       /* announced */
	uint64_t sent;       /* queued so far */
	size_t out;          /* bytes waiting in m->buf */
	bool cr;             /* the last source byte was a CR */
};

/* Queues s[0..len) of the literal, never past its announced size. */
static int
append_put(struct imap *m, struct append_out *o, const char *s, size_t len, struct mp_err *err)
{
	if (len > o->size - o->sent)
		return mp_err_set(err, -EMSGSIZE, MP_EX_PROTOCOL, "the message grew while it was "
				  "appended (over the %" PRIu64 " octets announced)", o->size);
	o->sent += len;
	while (len > 0) {
		size_t room = IMAP_BUFSIZE - o->out, n = len < room ? len : room;
		int r;

		memcpy(m->buf + o->out, s, n);
		o->out += n;
		s += n;
		len -= n;
		if (o->out < IMAP_BUFSIZE)
			continue;
		r = conn_write(m->c, m->buf, o->out, err);
		o->out = 0;
		if (r < 0)
			return r;
	}
	return 0;
}

/* One chunk of the message, bare LF turned into CRLF. */
static int
append_chunk(struct imap *m, struct append_out *o, const char *d, size_t len,
	     struct mp_err *err)
{
	size_t i = 0;

	if (memchr(d, '\0', len))
		return mp_err_set(err, -EMSGSIZE, MP_EX_PROTOCOL, "the message changed while it "
				  "was appended (a NUL byte appeared)");
	while (i < len) {
		const char *lf = memchr(d + i, '\n', len - i);
		size_t run = lf ? (size_t)(lf - (d + i)) : len - i;
		bool bare = lf && !(run ? d[i + run - 1] == '\r' : o->cr);
		int r = append_put(m, o, d + i, run, err);

		if (r == 0 && bare)
			r = append_put(m, o, "\r", 1, err);
		if (r == 0 && lf)
			r = append_put(m, o, "\n", 1, err);
		if (r < 0)
			return r;
		if (run)
			o->cr = d[i + run - 1] == '\r';
		if (lf)
			o->cr = false;
		i += run + (lf ? 1 : 0);
	}
	return 0;
}

/* The literal's data: exactly o->size octets, in IMAP_BUFSIZE writes. */
static int
append_body(struct imap *m, struct append_out *o, imap_read_fn read, void *ud,
	    struct mp_err *err)
{
	char note[48];
	int r, n;

	for (;;) {
		const char *d;
		size_t len;

		r = read(ud, &d, &len, err);
		if (r < 0)
			return r;
		if (len == 0)
			break;
		r = append_chunk(m, o, d, len, err);
		if (r < 0)
			return r;
	}
	if (o->sent != o->size)
		return mp_err_set(err, -EMSGSIZE, MP_EX_PROTOCOL, "the message shrank while it "
				  "was appended (%" PRIu64 " of the %" PRIu64 " octets announced)",
				  o->sent, o->size);
	if (o->out) {
		r = conn_write(m->c, m->buf, o->out, err);
		o->out = 0;
		if (r < 0)
			return r;
	}
	n = snprintf(note, sizeof(note), "<%" PRIu64 " octets>", o->size);
	log_trace("C", note, (size_t)n, SIZE_MAX);
	return conn_write(m->c, "\r\n", 2, err);
}

/* The tagged end of APPEND: [APPENDUID uidvalidity uid] (RFC 4315 section 3), [TRYCREATE]. */
static int
append_done(struct imap *m, int rc, const struct imap_response *r, uint32_t *ret_uidvalidity,
	    uint32_t *ret_uid, struct mp_err *err)
{
	uint32_t v = 0, uid = 0;

	if (rc == IMAP_STATUS_NO && imap_response_code_is(r, "TRYCREATE")) {
		m->refused = true;
		return mp_err_set_srv(err, -ENOENT, MP_EX_PROTOCOL, r->text, r->text_len,
				"the mailbox to append to does not exist (TRYCREATE)");
	}
	if (rc > 0 && rc != IMAP_STATUS_OK)
		return refused(m, r, -EPROTO, "APPEND", err);
	if (rc < 0)
		return rc;
	/* A malformed or multi-message APPENDUID is no failure: the copy is there. */
	if (imap_response_code_is(r, "APPENDUID") && r->code_count >= 2 &&
	    (imap_arg_u32(&r->code_args[0], &v) < 0 || imap_arg_u32(&r->code_args[1], &uid) < 0))
		v = uid = 0;
	if (ret_uidvalidity)
		*ret_uidvalidity = v;
	if (ret_uid)
		*ret_uid = uid;
	return 0;
}

/*
 * APPEND mailbox (flags) {size}: the literal is synchronizing unless
 * LITERAL+ (RFC 7888 section 4) or, up to 4096 octets, LITERAL- (section
 * 5) lets it follow at once. A server may refuse a synchronizing literal
 * instead of asking for it (RFC 3501 section 7.5): nothing of the message
 * is sent then.
 */
static int
append_send(struct imap *m, const char *mailbox, unsigned flags, uint64_t size,
	    imap_read_fn read, void *ud, const struct imap_response **ret, struct mp_err *err)
{
	bool plus = m->caps.literal_plus || (m->caps.literal_minus && size <= 4096);
	struct append_out o = { .size = size };
	struct cmd cmd;
	unsigned tag;
	int rc;

	m->state = IMAP_ST_APPEND;
	cmd_start(m, &cmd, "APPEND ");
	cmd_mailbox(m, &cmd, mailbox);
	append_flags(&cmd, flags);
	cmd_fmt(&cmd, " {%" PRIu64 "%s}", size, plus ? "+" : "");
	tag = cmd.tag;
	if (cmd.err) {
		/* A mailbox name that cannot go on the wire: nothing sent. */
		rc = cmd_send_part(m, &cmd, ret, err);
		cmd_free(&cmd);
		return rc;
	}
	rc = cmd_send_part(m, &cmd, ret, err);
	cmd_free(&cmd);
	if (rc == IMAP_STATUS_OK)
		rc = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "server completed APPEND before "
				"taking the message");
	if (rc == 0)
		rc = conn_write(m->c, "\r\n", 2, err);
	if (rc == 0 && !plus) {
		rc = conn_flush(m->c, err);
		if (rc == 0)
			rc = read_until(m, tag, true, NULL, NULL, NULL, ret, err);
		if (rc == READ_CONT)
			rc = 0;
		else if (rc == IMAP_STATUS_OK)
			rc = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "server completed APPEND "
					"before taking the message");
		else if (rc > 0)
			return rc;
	}
	if (rc == 0)
		rc = append_body(m, &o, read, ud, err);
	if (rc == 0)
		rc = conn_flush(m->c, err);
	if (rc == 0)
		rc = read_until(m, tag, false, NULL, NULL, NULL, ret, err);
	/* Out of step once any of it went out, whatever the error (the reader's too). */
	if (rc < 0)
		m->broken = true;
	return rc;
}

int
imap_append(struct imap *m, const char *mailbox, unsigned flags, uint64_t size,
	    imap_read_fn read, imap_rewind_fn rewind, void *ud, uint32_t *ret_uidvalidity,
	    uint32_t *ret_uid, struct mp_err *err)
{
	const struct imap_response *r = NULL;
	uint64_t have = 0;
	int rc;

	rc = check_usable(m, err);
	if (rc < 0)
		return rc;
	if (size == 0 || size > IMAP_APPEND_MAX)
		return mp_err_set(err, -EINVAL, MP_EX_DATAERR, "cannot append a message of %"
				  PRIu64 " octets (1 to %" PRIu64 ")", size, IMAP_APPEND_MAX);
	/* Measured before anything is sent: a wrong size or a NUL leaves the session in step. */
	rc = append_measure(read, ud, &have, err);
	if (rc == 0 && have != size)
		rc = mp_err_set(err, -EMSGSIZE, MP_EX_PROTOCOL, "the message has %s%" PRIu64
				" octets with CRLF line ends, not the %" PRIu64 " announced",
				have > IMAP_APPEND_MAX ? "over " : "", have, size);
	if (rc == 0)
		rc = rewind(ud, err);
	if (rc < 0)
		return rc;
	rc = append_send(m, mailbox, flags, size, read, ud, &r, err);
	return settle(m, append_done(m, rc, r, ret_uidvalidity, ret_uid, err));
}

/* ---- UID sets and pipelined batches -------------------------------------- */

/*
 * Also orders the records that begin with their UID (a pointer to a struct
 * points to its first member, C17 6.7.2.1).
 */
static_assert(offsetof(struct imap_msginfo, uid) == 0, "msginfo sorts by its UID");
static_assert(offsetof(struct imap_envelope, uid) == 0, "envelope sorts by its UID");

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Sorts v[0..n) (elements of sz bytes) by cmp and keeps one of each run of
 * equal elements, handing the others to drop when not NULL. Returns how
 * many are kept, at the front of v.
 */
static size_t
sort_unique(void *v, size_t n, size_t sz, int (*cmp)(const void *, const void *),
	    void (*drop)(void *))
{
	unsigned char *p = v;
	size_t k = 0;

	if (n > 1)
		qsort(v, n, sz, cmp);
	for (size_t i = 0; i < n; i++) {
		unsigned char *e = p + i * sz;

		if (k > 0 && cmp(p + (k - 1) * sz, e) == 0) {
			if (drop)
				drop(e);
			continue;
		}
		if (k != i)
			memcpy(p + k * sz, e, sz);
		k++;
	}
	return k;
}

/* A sorted copy of uids without duplicates. UID 0 does not exist (RFC 3501 2.3.1.1). */
static int
uids_sorted(const uint32_t *uids, size_t n, uint32_t **ret, size_t *ret_n, struct mp_err *err)
{
	uint32_t *v;

	if (n > IMAP_MAX_MSGS)
		return mp_err_set(err, -E2BIG, MP_EX_USAGE, "more than %u UIDs at once",
				  IMAP_MAX_MSGS);
	v = malloc((n ? n : 1) * sizeof(*v));
	if (!v)
		return mp_err_oom(err);
	for (size_t i = 0; i < n; i++) {
		if (uids[i] == 0) {
			free(v);
			return mp_err_set(err, -EINVAL, MP_EX_USAGE, "UID 0");
		}
		v[i] = uids[i];
	}
	*ret_n = sort_unique(v, n, sizeof(*v), cmp_u32, NULL);
	*ret = v;
	return 0;
}

/*
 * Writes the next part of the set v[*pos..n) as ranges ("1:5,7,9:12") into
 * buf (IMAP_SET_MAX + 32 bytes), stopping before IMAP_SET_MAX bytes so that
 * every command stays far below the 8000 octets servers must accept (RFC
 * 7162 section 4).
 */
static size_t
set_next(const uint32_t *v, size_t n, size_t *pos, char *buf)
{
	size_t len = 0, i = *pos;

	while (i < n && len + 24 <= IMAP_SET_MAX) {
		size_t j = i;
		int w;

		while (j + 1 < n && v[j + 1] == v[j] + 1)
			j++;
		if (j == i)
			w = snprintf(buf + len, 24, "%s%" PRIu32, len ? "," : "", v[i]);
		else
			w = snprintf(buf + len, 24, "%s%" PRIu32 ":%" PRIu32, len ? "," : "",
				     v[i], v[j]);
		len += (size_t)w;
		i = j + 1;
	}
	*pos = i;
	return len;
}

/* A sorted UID set, borrowed. */
struct uid_set {
	const uint32_t *v;
	size_t n;
};

struct batch {
	enum imap_state state;
	const char *verb;      /* "UID FETCH" */
	const char *tail;      /* " (UID FLAGS BODY.PEEK[])", or "" */
	const char *what;      /* for messages */
	resp_fn fn;
	literal_fn lit;
	void *ud;
	/* When not NULL: set to the sorted UIDs, valid until the batches end. */
	struct uid_set *set;
	/* When not NULL: called once *set is known, before the first command goes out. */
	int (*prepare)(void *ud, struct mp_err *err);
};

/* The commands of run_batches() in flight: tags [lo, hi), each open until completed. */
struct flight {
	unsigned lo, hi;
	size_t bytes;                           /* of the open commands */
	bool open[IMAP_INFLIGHT_MAX];           /* by tag % IMAP_INFLIGHT_MAX */
	unsigned short len[IMAP_INFLIGHT_MAX];
};

/*
 * Whether to queue more commands now: into an empty pipe, or once a
 * quarter of the command bytes or count is free again, so the commands go
 * out in chunks (one write, one TLS record) rather than one per completion.
 */
static bool
refill_due(const struct flight *f)
{
	return f->hi == f->lo ||
	       (f->bytes <= IMAP_QUEUE_MAX - IMAP_QUEUE_MAX / 4 &&
		f->hi - f->lo <= IMAP_INFLIGHT_MAX - IMAP_INFLIGHT_MAX / 4);
}

/* Queues "verb set tail" commands for v[*pos..n) while the bounds allow, then sends them. */
static int
refill(struct imap *m, struct flight *f, const uint32_t *v, size_t n, size_t *pos,
       const struct batch *b, struct mp_err *err)
{
	char set[IMAP_SET_MAX + 32];
	size_t extra = strlen(b->verb) + strlen(b->tail) + 16;

	while (*pos < n && f->hi - f->lo < IMAP_INFLIGHT_MAX) {
		const struct imap_response *r;
		size_t from = *pos, sl = set_next(v, n, pos, set);
		struct cmd cmd;
		int rc;

		/* One command always goes into an empty pipe. */
		if (f->hi > f->lo && f->bytes + sl + extra > IMAP_QUEUE_MAX) {
			*pos = from;
			break;
		}
		cmd_start(m, &cmd, b->verb);
		cmd_str(&cmd, " ");
		cmd_add(&cmd, set, sl);
		cmd_str(&cmd, b->tail);
		rc = cmd_send(m, &cmd, &r, err);
		cmd_free(&cmd);
		if (rc < 0)
			return rc;
		f->open[cmd.tag % IMAP_INFLIGHT_MAX] = true;
		f->len[cmd.tag % IMAP_INFLIGHT_MAX] = (unsigned short)(sl + extra);
		f->bytes += sl + extra;
		f->hi = cmd.tag + 1;
	}
	return conn_flush(m->c, err);
}

/*
 * Sends "verb set tail" for the whole of v[0..n), one command per
 * IMAP_SET_MAX bytes of set, all of them pipelined within IMAP_QUEUE_MAX
 * bytes and IMAP_INFLIGHT_MAX commands in flight, and reads every
 * response until each tagged completion is in: a large set costs about
 * one round trip plus its transfer. Completions may come in any order
 * (RFC 3501 section 5.5); each is accepted once. After a NO or BAD no
 * further command is sent, those in flight are awaited.
 */
static int
run_batches(struct imap *m, const uint32_t *v, size_t n, const struct batch *b,
	    struct mp_err *err)
{
	struct flight f = { .lo = m->tag + 1, .hi = m->tag + 1 };
	size_t pos = 0;
	int fail = 0, rc;

	while ((pos < n && !fail) || f.hi > f.lo) {
		const struct imap_response *r;
		unsigned t;

		if (pos < n && !fail && refill_due(&f)) {
			rc = refill(m, &f, v, n, &pos, b, err);
			if (rc < 0)
				return rc;
		}
		rc = read_until_range(m, f.lo, f.hi, false, b->fn, b->lit, b->ud, &r, err);
		if (rc < 0)
			return rc;
		t = tag_number(r->tag);
		if (!f.open[t % IMAP_INFLIGHT_MAX])
			return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
					  "server completed one command twice");
		f.open[t % IMAP_INFLIGHT_MAX] = false;
		f.bytes -= f.len[t % IMAP_INFLIGHT_MAX];
		if (rc != IMAP_STATUS_OK && !fail)
			fail = refused(m, r, -EPROTO, b->what, err);
		while (f.lo < f.hi && !f.open[f.lo % IMAP_INFLIGHT_MAX])
			f.lo++;
	}
	return fail;
}

/*
 * Every command over a UID set takes this path: refuse a session already out
 * of step, sort the UIDs, let b->prepare see them, run the batches and settle.
 * Errors found before anything is sent leave the session in step.
 */
static int
uid_set_cmd(struct imap *m, const uint32_t *uids, size_t n, const struct batch *b,
	    struct mp_err *err)
{
	uint32_t *v = NULL;
	size_t k = 0;
	int rc;

	rc = check_usable(m, err);
	if (rc < 0)
		return rc;
	rc = uids_sorted(uids, n, &v, &k, err);
	if (rc < 0)
		return rc;
	if (b->set)
		*b->set = (struct uid_set){ v, k };
	if (b->prepare) {
		rc = b->prepare(b->ud, err);
		if (rc < 0) {
			free(v);
			return rc;
		}
	}
	m->state = b->state;
	rc = run_batches(m, v, k, b, err);
	free(v);
	return settle(m, rc);
}

/* Message flags we keep (RFC 3501 section 2.3.2), from a FLAGS list. */
static unsigned
parse_flags(const struct imap_arg *a)
{
	static const struct {
		const char *name;
		unsigned flag;
	} map[] = {
		{ "\\Seen", IMAP_FLAG_SEEN }, { "\\Answered", IMAP_FLAG_ANSWERED },
		{ "\\Flagged", IMAP_FLAG_FLAGGED }, { "\\Deleted", IMAP_FLAG_DELETED },
		{ "\\Draft", IMAP_FLAG_DRAFT },
	};
	unsigned flags = 0;

	if (!a || a->type != IMAP_ARG_LIST)
		return 0;
	for (size_t i = 0; i < a->count; i++)
		for (size_t k = 0; k < ARRAY_SIZE(map); k++)
			if (imap_arg_atom_is(&a->list[i], map[k].name))
				flags |= map[k].flag;
	return flags;
}

/* The attribute list of "* n FETCH (...)", or NULL for any other response. */
static const struct imap_arg *
fetch_list(const struct imap_response *r)
{
	uint32_t seq;

	if (r->status != IMAP_STATUS_NONE || r->count < 3 ||
	    !imap_arg_atom_is(&r->args[1], "FETCH") || r->args[2].type != IMAP_ARG_LIST ||
	    imap_arg_u32(&r->args[0], &seq) < 0)
		return NULL;
	return &r->args[2];
}

/* The UID item of a FETCH list; false when absent or malformed. */
static bool
fetch_uid(const struct imap_arg *list, uint32_t *ret)
{
	const struct imap_arg *a = imap_fetch_item(list, "UID");

	return a && imap_arg_u32(a, ret) == 0 && *ret != 0;
}

/* Index of uid in the sorted v, or SIZE_MAX. */
static size_t
uid_index(const uint32_t *v, size_t n, uint32_t uid)
{
	const uint32_t *p = bsearch(&uid, v, n, sizeof(*v), cmp_u32);

	return p ? (size_t)(p - v) : SIZE_MAX;
}

/* ---- listing and searching ----------------------------------------------- */

/*
 * INTERNALDATE (RFC 3501 section 9, date-time): "dd-Mon-yyyy hh:mm:ss
 * +zzzz", the day possibly space-padded. Strict: anything else, or a date
 * that does not exist, gives -EBADMSG.
 */
static int
parse_internaldate(const char *s, size_t len, int64_t *ret)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	struct tm tm = { 0 }, chk;
	int v[7], mon = -1;
	static const int pos[7] = { 0, 7, 12, 15, 18, 22, 24 };
	static const int wid[7] = { 2, 4, 2, 2, 2, 2, 2 };
	time_t t;

	if (len != 26 || s[2] != '-' || s[6] != '-' || s[11] != ' ' || s[14] != ':' ||
	    s[17] != ':' || s[20] != ' ' || (s[21] != '+' && s[21] != '-'))
		return -EBADMSG;
	for (int i = 0; i < 7; i++) {
		v[i] = 0;
		for (int k = 0; k < wid[i]; k++) {
			char ch = s[pos[i] + k];

			if (i == 0 && k == 0 && ch == ' ')
				continue;
			if (ch < '0' || ch > '9')
				return -EBADMSG;
			v[i] = v[i] * 10 + (ch - '0');
		}
	}
	for (int i = 0; i < 12; i++)
		if (strncasecmp(s + 3, months + 3 * i, 3) == 0)
			mon = i;
	if (mon < 0 || v[0] < 1 || v[1] < 1900 || v[2] > 23 || v[3] > 59 || v[4] > 60 ||
	    v[5] > 23 || v[6] > 59)
		return -EBADMSG;
	tm.tm_mday = v[0];
	tm.tm_mon = mon;
	tm.tm_year = v[1] - 1900;
	tm.tm_hour = v[2];
	tm.tm_min = v[3];
	/* A leap second counts as the second before it. */
	tm.tm_sec = v[4] == 60 ? 59 : v[4];
	t = timegm(&tm);
	if (t == (time_t)-1 || !gmtime_r(&t, &chk) || chk.tm_mday != v[0] || chk.tm_mon != mon)
		return -EBADMSG;
	/* The zone is the offset from UTC: local minus offset gives UTC. */
	*ret = (int64_t)t - (s[21] == '-' ? -1 : 1) * (int64_t)(v[5] * 3600 + v[6] * 60);
	return 0;
}

struct msgs_ctx {
	struct imap_msginfo *v;
	size_t n, cap;
	uint32_t from;
	struct uid_set want;     /* when .v is not NULL: only these UIDs */
};

/* "* n FETCH (UID u FLAGS (...) RFC822.SIZE s INTERNALDATE "...")". */
static int
msgs_resp(struct imap *m, const struct imap_response *r, void *ud, struct mp_err *err)
{
	struct msgs_ctx *x = ud;
	const struct imap_arg *l = fetch_list(r), *a;
	struct imap_msginfo mi = { 0 };
	const char *s;
	size_t len;
	int rc;

	/* Unsolicited FETCH FLAGS and the like carry no size: not ours. */
	if (!l || !imap_fetch_item(l, "RFC822.SIZE"))
		return 0;
	if (imap_arg_u64(imap_fetch_item(l, "RFC822.SIZE"), &mi.size) < 0)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "malformed FETCH response");
	/* A message we cannot name cannot be fetched: counted for the policy to report. */
	if (!fetch_uid(l, &mi.uid)) {
		m->bad_uids++;
		return 0;
	}
	/* RFC 3501 section 6.4.8: "n:*" always includes the last message, even below n. */
	if (mi.uid < x->from || (x->want.v && uid_index(x->want.v, x->want.n, mi.uid) == SIZE_MAX))
		return 0;
	mi.flags = parse_flags(imap_fetch_item(l, "FLAGS"));
	a = imap_fetch_item(l, "INTERNALDATE");
	if (a && imap_arg_string(a, &s, &len) == 0 && s &&
	    parse_internaldate(s, len, &mi.internaldate) < 0)
		mi.internaldate = 0;
	rc = grow((void **)&x->v, &x->cap, x->n, sizeof(*x->v), IMAP_MAX_MSGS);
	if (rc < 0)
		return rc == -ENOMEM ? mp_err_oom(err)
				     : mp_err_set(err, rc, MP_EX_PROTOCOL, "mailbox holds more "
						  "than %u messages", IMAP_MAX_MSGS);
	x->v[x->n++] = mi;
	return 0;
}

/* Sorts by UID; a message reported twice (a FLAGS change meanwhile) is one message. */
static void
msgs_finish(struct msgs_ctx *x, struct imap_msginfo **ret, size_t *ret_n)
{
	*ret_n = sort_unique(x->v, x->n, sizeof(*x->v), cmp_u32, NULL);
	*ret = x->v;
}

int
imap_list_messages(struct imap *m, uint32_t from_uid, struct imap_msginfo **ret,
		   size_t *ret_n, struct mp_err *err)
{
	struct msgs_ctx x = { .from = from_uid ? from_uid : 1 };
	struct cmd cmd;
	int rc;

	rc = check_usable(m, err);
	if (rc < 0)
		return rc;
	m->state = IMAP_ST_FETCH;
	cmd_start(m, &cmd, "UID FETCH ");
	cmd_fmt(&cmd, "%" PRIu32 ":* (UID FLAGS RFC822.SIZE INTERNALDATE)", x.from);
	rc = settle(m, simple_cmd(m, &cmd, msgs_resp, &x, "UID FETCH", err));
	if (rc < 0) {
		free(x.v);
		return rc;
	}
	msgs_finish(&x, ret, ret_n);
	return 0;
}

int
imap_fetch_info(struct imap *m, const uint32_t *uids, size_t n, struct imap_msginfo **ret,
		size_t *ret_n, struct mp_err *err)
{
	struct msgs_ctx x = { .from = 1 };
	struct batch b = {
		.state = IMAP_ST_FETCH, .verb = "UID FETCH", .tail = " (UID FLAGS RFC822.SIZE)",
		.what = "UID FETCH", .fn = msgs_resp, .ud = &x, .set = &x.want,
	};
	int rc = uid_set_cmd(m, uids, n, &b, err);

	if (rc < 0) {
		free(x.v);
		return rc;
	}
	msgs_finish(&x, ret, ret_n);
	return 0;
}

unsigned
imap_take_bad_uids(struct imap *m)
{
	unsigned n = m->bad_uids;

	m->bad_uids = 0;
	return n;
}

struct search_ctx {
	uint32_t *v;
	size_t n, cap;
	uint32_t lo, hi;
};

/* "* SEARCH n n n" (RFC 3501 section 7.2.5); several may come. */
static int
search_resp(struct imap *m, const struct imap_response *r, void *ud, struct mp_err *err)
{
	struct search_ctx *x = ud;

	(void)m;
	if (r->status != IMAP_STATUS_NONE || !imap_arg_atom_is(&r->args[0], "SEARCH"))
		return 0;
	for (size_t i = 1; i < r->count; i++) {
		uint32_t uid;
		int rc;

		if (imap_arg_u32(&r->args[i], &uid) < 0 || uid == 0)
			return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
					  "malformed SEARCH response");
		if (uid < x->lo || uid > x->hi)
			continue;
		rc = grow((void **)&x->v, &x->cap, x->n, sizeof(*x->v), IMAP_MAX_MSGS);
		if (rc < 0)
			return rc == -ENOMEM ? mp_err_oom(err)
					     : mp_err_set(err, rc, MP_EX_PROTOCOL,
							  "SEARCH found more than %u messages",
							  IMAP_MAX_MSGS);
		x->v[x->n++] = uid;
	}
	return 0;
}

int
imap_search(struct imap *m, const char *criteria, uint32_t lo, uint32_t hi, uint32_t **ret,
	    size_t *ret_n, struct mp_err *err)
{
	struct search_ctx x = { .lo = lo ? lo : 1, .hi = hi };
	struct cmd cmd;
	int rc;

	rc = check_usable(m, err);
	if (rc < 0)
		return rc;
	if (!criteria || x.hi < x.lo)
		return mp_err_set(err, -EINVAL, MP_EX_USAGE, "bad SEARCH arguments");
	/* Criteria are ours, not the user's text: printable ASCII on one line. */
	for (const char *p = criteria; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			return mp_err_set(err, -EINVAL, MP_EX_USAGE, "bad SEARCH criteria");
	m->state = IMAP_ST_SEARCH;
	cmd_start(m, &cmd, "UID SEARCH ");
	cmd_str(&cmd, criteria);
	cmd_fmt(&cmd, " UID %" PRIu32 ":%" PRIu32, x.lo, x.hi);
	rc = settle(m, simple_cmd(m, &cmd, search_resp, &x, "UID SEARCH", err));
	if (rc < 0) {
		free(x.v);
		return rc;
	}
	*ret_n = sort_unique(x.v, x.n, sizeof(*x.v), cmp_u32, NULL);
	*ret = x.v;
	return 0;
}

/* ---- bodies -------------------------------------------------------------- */

struct fetch_ctx {
	const struct imap_fetch_sink *sink;
	struct uid_set uids;     /* requested */
	bool *got;               /* delivered already: a second copy is not taken */
	bool begun;              /* begin() called for the response being read */
	bool cr;                 /* a CR ended the last chunk */
	size_t out;              /* decoded bytes waiting in m->buf */
};

static int
sink_failed(struct mp_err *err, int r, const char *what)
{
	return mp_err_set(err, r, mp_exit_from_errno(r), "storing a message failed (%s): %s",
			  what, strerror(-r));
}

static int
body_flush(struct imap *m, struct fetch_ctx *x, struct mp_err *err)
{
	int r;

	if (x->out == 0)
		return 0;
	r = x->sink->data(x->sink->ud, m->buf, x->out);
	x->out = 0;
	return r < 0 ? sink_failed(err, r, "data") : 0;
}

static int
body_put(struct imap *m, struct fetch_ctx *x, const char *s, size_t len, struct mp_err *err)
{
	while (len > 0) {
		size_t room = IMAP_BUFSIZE - x->out, n = len < room ? len : room;
		int r;

		memcpy(m->buf + x->out, s, n);
		x->out += n;
		s += n;
		len -= n;
		if (x->out == IMAP_BUFSIZE) {
			r = body_flush(m, x, err);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/*
 * CRLF into LF (DESIGN.md: messages are stored with LF line ends); a bare
 * CR stays. A CR at the end of a chunk waits for the next byte.
 */
static int
body_chunk(struct imap *m, struct fetch_ctx *x, const char *data, size_t len,
	   struct mp_err *err)
{
	size_t i = 0;
	int r;

	while (i < len) {
		const char *cr;
		size_t run;

		if (x->cr) {
			x->cr = false;
			if (data[i] != '\n') {
				r = body_put(m, x, "\r", 1, err);
				if (r < 0)
					return r;
			}
		}
		cr = memchr(data + i, '\r', len - i);
		run = cr ? (size_t)(cr - (data + i)) : len - i;
		r = body_put(m, x, data + i, run, err);
		if (r < 0)
			return r;
		i += run;
		if (cr) {
			x->cr = true;
			i++;
		}
	}
	return 0;
}

/* The end of one body: a pending CR was a bare one. */
static int
body_finish(struct imap *m, struct fetch_ctx *x, struct mp_err *err)
{
	int r = 0;

	if (x->cr)
		r = body_put(m, x, "\r", 1, err);
	x->cr = false;
	return r < 0 ? r : body_flush(m, x, err);
}

/*
 * A BODY[] literal begins (RFC 3501 section 7.4.2): exactly size bytes go
 * from the connection through the converter to the sink, never more than
 * a chunk of them in memory.
 */
static int
body_literal(struct imap *m, uint64_t size, const char *item, void *ud, struct mp_err *err)
{
	struct fetch_ctx *x = ud;
	uint64_t left = size;
	char note[48];
	int r, n;

	if (!item || strncasecmp(item, "BODY[]", 6) != 0)
		return skip_literal(m, size, err);
	if (x->begun)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL, "two bodies in one FETCH response");
	r = x->sink->begin(x->sink->ud, size);
	if (r < 0)
		return sink_failed(err, r, "begin");
	x->begun = true;
	x->cr = false;
	x->out = 0;
	conn_body_start(m->c);
	while (left > 0) {
		const char *data;
		size_t len;

		r = conn_peek(m->c, &data, &len, err);
		if (r < 0)
			return r;
		if (len > left)
			len = (size_t)left;
		r = body_chunk(m, x, data, len, err);
		if (r < 0)
			return r;
		conn_consume(m->c, len);
		left -= len;
	}
	n = snprintf(note, sizeof(note), "<%" PRIu64 " octets>", size);
	log_trace("S", note, (size_t)n, SIZE_MAX);
	return body_finish(m, x, err);
}

/*
 * A FETCH response is complete: the body, if one came, is handed over
 * with the UID and FLAGS the response carried (they may follow the body).
 * A body without a UID we asked for, or a second copy of one, is aborted.
 */
static int
body_resp(struct imap *m, const struct imap_response *r, void *ud, struct mp_err *err)
{
	struct fetch_ctx *x = ud;
	const struct imap_arg *l = fetch_list(r), *body = l ? imap_fetch_item(l, "BODY[]") : NULL;
	const char *s;
	size_t len, idx;
	uint32_t uid = 0;
	int rc;

	if (!x->begun && body && imap_arg_string(body, &s, &len) == 0 && s) {
		/* A quoted or in-memory body: the same path, in one chunk. */
		rc = x->sink->begin(x->sink->ud, len);
		if (rc < 0)
			return sink_failed(err, rc, "begin");
		x->begun = true;
		x->cr = false;
		x->out = 0;
		rc = body_chunk(m, x, s, len, err);
		if (rc == 0)
			rc = body_finish(m, x, err);
		if (rc < 0)
			return rc;
	}
	if (!x->begun)
		return 0;
	x->begun = false;
	if (!l || !fetch_uid(l, &uid))
		m->bad_uids++;
	idx = uid ? uid_index(x->uids.v, x->uids.n, uid) : SIZE_MAX;
	if (idx == SIZE_MAX || x->got[idx]) {
		log_debug("discarding a FETCH body %s",
			  idx == SIZE_MAX ? "without a UID we asked for" : "sent twice");
		x->sink->abort(x->sink->ud);
		return 0;
	}
	x->got[idx] = true;
	rc = x->sink->end(x->sink->ud, uid, parse_flags(imap_fetch_item(l, "FLAGS")));
	return rc < 0 ? sink_failed(err, rc, "end") : 0;
}

static int
body_want(void *ud, struct mp_err *err)
{
	struct fetch_ctx *x = ud;

	x->got = calloc(x->uids.n ? x->uids.n : 1, sizeof(*x->got));
	return x->got ? 0 : mp_err_oom(err);
}

int
imap_fetch_bodies(struct imap *m, const uint32_t *uids, size_t n, bool mark_seen,
		  const struct imap_fetch_sink *sink, struct mp_err *err)
{
	struct fetch_ctx x = { .sink = sink };
	struct batch b = {
		.state = IMAP_ST_FETCH, .verb = "UID FETCH",
		.tail = mark_seen ? " (UID FLAGS BODY[])" : " (UID FLAGS BODY.PEEK[])",
		.what = "UID FETCH", .fn = body_resp, .lit = body_literal, .ud = &x,
		.set = &x.uids, .prepare = body_want,
	};
	int rc = uid_set_cmd(m, uids, n, &b, err);

	if (x.begun)
		sink->abort(sink->ud);
	free(x.got);
	return rc;
}

/* ---- envelopes ----------------------------------------------------------- */

static void
envelope_clear(struct imap_envelope *e)
{
	free(e->date);
	free(e->from);
	free(e->subject);
	free(e->message_id);
	memset(e, 0, sizeof(*e));
}

static void
envelope_drop(void *e)
{
	envelope_clear(e);
}

void
imap_envelopes_free(struct imap_envelope *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		envelope_clear(&v[i]);
	free(v);
}

/* An nstring as a C string (cut at a NUL a literal may hold); NULL for NIL. */
static int
nstring_dup(const struct imap_arg *a, char **ret)
{
	const char *s;
	size_t len;

	*ret = NULL;
	if (imap_arg_string(a, &s, &len) < 0)
		return -EBADMSG;
	if (!s)
		return 0;
	*ret = util_strndup(s, strnlen(s, len));
	return *ret ? 0 : -ENOMEM;
}

/*
 * The first real address of an address list (RFC 3501 section 7.4.2,
 * ENVELOPE): "name <mailbox@host>" or "mailbox@host". Group markers (host
 * NIL) are passed over.
 */
static int
envelope_from(const struct imap_arg *a, char **ret)
{
	*ret = NULL;
	if (a->type == IMAP_ARG_NIL)
		return 0;
	if (a->type != IMAP_ARG_LIST)
		return -EBADMSG;
	for (size_t i = 0; i < a->count; i++) {
		const struct imap_arg *ad = &a->list[i];
		const char *name, *mbox, *host;
		size_t nl, ml, hl, cap;
		char *out;

		if (ad->type != IMAP_ARG_LIST || ad->count != 4 ||
		    imap_arg_string(&ad->list[0], &name, &nl) < 0 ||
		    imap_arg_string(&ad->list[2], &mbox, &ml) < 0 ||
		    imap_arg_string(&ad->list[3], &host, &hl) < 0)
			return -EBADMSG;
		if (!mbox || !host)
			continue;
		nl = name ? strnlen(name, nl) : 0;
		ml = strnlen(mbox, ml);
		hl = strnlen(host, hl);
		cap = nl + ml + hl + 8;
		out = malloc(cap);
		if (!out)
			return -ENOMEM;
		if (nl)
			snprintf(out, cap, "%.*s <%.*s@%.*s>", (int)nl, name, (int)ml, mbox,
				 (int)hl, host);
		else
			snprintf(out, cap, "%.*s@%.*s", (int)ml, mbox, (int)hl, host);
		*ret = out;
		return 0;
	}
	return 0;
}

struct env_ctx {
	struct imap_envelope *v;
	size_t n, cap;
	struct uid_set uids;
};

/* ENVELOPE: (date subject from sender reply-to to cc bcc in-reply-to message-id). */
static int
envelope_parse(const struct imap_arg *e, struct imap_envelope *ev)
{
	int r;

	if (!e || e->type != IMAP_ARG_LIST || e->count < 10)
		return -EBADMSG;
	r = nstring_dup(&e->list[0], &ev->date);
	if (r == 0)
		r = nstring_dup(&e->list[1], &ev->subject);
	if (r == 0)
		r = envelope_from(&e->list[2], &ev->from);
	if (r == 0)
		r = nstring_dup(&e->list[9], &ev->message_id);
	return r;
}

static int
env_resp(struct imap *m, const struct imap_response *r, void *ud, struct mp_err *err)
{
	struct env_ctx *x = ud;
	const struct imap_arg *l = fetch_list(r), *e;
	struct imap_envelope ev = { 0 };
	int rc;

	(void)m;
	if (!l || !(e = imap_fetch_item(l, "ENVELOPE")))
		return 0;
	if (!fetch_uid(l, &ev.uid)) {
		m->bad_uids++;
		return 0;
	}
	if (uid_index(x->uids.v, x->uids.n, ev.uid) == SIZE_MAX)
		return 0;
	if (imap_arg_u64(imap_fetch_item(l, "RFC822.SIZE"), &ev.size) < 0)
		ev.size = 0;
	rc = envelope_parse(e, &ev);
	if (rc == 0)
		rc = grow((void **)&x->v, &x->cap, x->n, sizeof(*x->v), IMAP_MAX_MSGS);
	if (rc < 0) {
		envelope_clear(&ev);
		return rc == -ENOMEM ? mp_err_oom(err) : mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
							      "malformed ENVELOPE");
	}
	x->v[x->n++] = ev;
	return 0;
}

int
imap_fetch_envelopes(struct imap *m, const uint32_t *uids, size_t n,
		     struct imap_envelope **ret, size_t *ret_n, struct mp_err *err)
{
	struct env_ctx x = { 0 };
	struct batch b = {
		.state = IMAP_ST_FETCH, .verb = "UID FETCH", .tail = " (UID RFC822.SIZE ENVELOPE)",
		.what = "UID FETCH", .fn = env_resp, .ud = &x, .set = &x.uids,
	};
	int rc = uid_set_cmd(m, uids, n, &b, err);

	if (rc < 0) {
		imap_envelopes_free(x.v, x.n);
		return rc;
	}
	/* One envelope per UID: a repeated one is dropped. */
	*ret_n = sort_unique(x.v, x.n, sizeof(*x.v), cmp_u32, envelope_drop);
	*ret = x.v;
	return 0;
}

/* ---- flags, expunge, logout ---------------------------------------------- */

int
imap_store_flag(struct imap *m, const uint32_t *uids, size_t n, bool seen, struct mp_err *err)
{
	/* .SILENT: no FETCH answer per message (RFC 3501 section 6.4.6). */
	struct batch b = {
		.state = IMAP_ST_STORE, .verb = "UID STORE", .what = "UID STORE",
		.tail = seen ? " +FLAGS.SILENT (\\Seen)" : " +FLAGS.SILENT (\\Deleted)",
	};

	return uid_set_cmd(m, uids, n, &b, err);
}

int
imap_uid_expunge(struct imap *m, const uint32_t *uids, size_t n, struct mp_err *err)
{
	struct batch b = {
		.state = IMAP_ST_EXPUNGE, .verb = "UID EXPUNGE", .tail = "", .what = "UID EXPUNGE",
	};

	/*
	 * Plain EXPUNGE would also remove what other clients marked
	 * \Deleted; without UIDPLUS (RFC 4315) we do not expunge at all.
	 * A session already out of step says so first (uid_set_cmd).
	 */
	if (!m->caps.uidplus && !m->broken)
		return mp_err_set(err, -ENOTSUP, MP_EX_PROTOCOL,
				  "server lacks UIDPLUS; not expunging");
	return uid_set_cmd(m, uids, n, &b, err);
}

int
imap_expunge(struct imap *m, struct mp_err *err)
{
	struct cmd cmd;
	int rc = check_usable(m, err);

	if (rc < 0)
		return rc;
	m->state = IMAP_ST_EXPUNGE;
	cmd_start(m, &cmd, "EXPUNGE");
	return settle(m, simple_cmd(m, &cmd, NULL, NULL, "EXPUNGE", err));
}

/* ---- IDLE ---------------------------------------------------------------- */

struct idle_ctx {
	uint32_t known;      /* messages in the mailbox as last reported */
	bool new_mail;
};

/*
 * RFC 2177 section 3: the server reports changes with untagged EXISTS
 * and EXPUNGE while idling. Only a count above the last known one means
 * a new message; an EXPUNGE lowers the count first, so a later EXISTS
 * at the same count is not new mail. FETCH (flag changes) is ignored.
 */
static int
idle_resp(struct imap *m, const struct imap_response *r, void *ud, struct mp_err *err)
{
	struct idle_ctx *x = ud;
	uint32_t n;

	(void)err;
	if (r->status != IMAP_STATUS_NONE || r->count < 2 || imap_arg_u32(&r->args[0], &n) < 0)
		return 0;
	if (imap_arg_atom_is(&r->args[1], "EXISTS") && n > x->known)
		x->new_mail = true;
	/* untagged_common() has counted this EXISTS or EXPUNGE already. */
	x->known = m->exists;
	return 0;
}

/* Sends IDLE and reads up to the server's "+" (RFC 2177 section 3). */
static int
idle_start(struct imap *m, struct idle_ctx *x, unsigned *ret_tag, struct mp_err *err)
{
	const struct imap_response *r;
	struct cmd cmd;
	int rc;

	cmd_start(m, &cmd, "IDLE");
	*ret_tag = cmd.tag;
	rc = cmd_send(m, &cmd, &r, err);
	if (rc == 0)
		rc = conn_flush(m->c, err);
	cmd_free(&cmd);
	if (rc == 0)
		rc = read_until(m, *ret_tag, true, idle_resp, NULL, x, &r, err);
	if (rc == READ_CONT)
		return 0;
	if (rc == IMAP_STATUS_OK) {
		/* Completed without idling: trying again at once would only spin. */
		m->refused = true;
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, r->text, r->text_len,
				"server ended IDLE before entering it");
	}
	if (rc > 0)
		return refused(m, r, -EPROTO, "IDLE", err);
	return rc;
}

/*
 * One response that arrived while idling. Once its first byte is in, the
 * rest comes under the normal rules (the minimum rate included); only the
 * silence before it is unbounded. Returns the status of the tagged
 * completion (IMAP_STATUS_OK/NO/BAD, *ret set), 0 for untagged data, or a
 * negative errno.
 */
static int
idle_read_one(struct imap *m, unsigned tag, struct idle_ctx *x,
	      const struct imap_response **ret, struct mp_err *err)
{
	const struct imap_response *r;
	int rc;

	rc = read_paced(m, &r, err);
	if (rc < 0)
		return rc;
	switch (r->type) {
	case IMAP_RESP_CONTINUATION:
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, r->text, r->text_len,
				"unexpected continuation request in IDLE");
	case IMAP_RESP_TAGGED:
		if (tag_number(r->tag) != tag)
			return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
					  "server answered a command we did not send (in IDLE)");
		*ret = r;
		return (int)r->status;
	default:
		rc = untagged_common(m, r, err);
		return rc < 0 ? rc : idle_resp(m, r, x, err);
	}
}

/*
 * Waits for news until max_ms passes or a signal comes with *stop set.
 * The silence is waited out with conn_wait(), outside the minimum-rate
 * rule: hours without a byte are normal in IDLE. The wait is cut into
 * slices so that a signal landing between the look at *stop and poll()
 * delays the stop by one slice at most. Returns 0 (send DONE), the
 * tagged status when the server completed IDLE on its own (*ret set), or
 * a negative errno.
 */
static int
idle_wait(struct imap *m, unsigned tag, unsigned max_ms, volatile sig_atomic_t *stop,
	  struct idle_ctx *x, const struct imap_response **ret, struct mp_err *err)
{
	int64_t deadline = util_now_ms() + max_ms;

	while (!x->new_mail && !(stop && *stop)) {
		int64_t left = deadline - util_now_ms();
		int rc;

		if (left <= 0)
			return 0;
		rc = conn_wait(m->c, left > IDLE_SLICE_MS ? IDLE_SLICE_MS : (unsigned)left, err);
		if (rc == -ETIMEDOUT || rc == -EINTR)
			continue;
		if (rc == 0)
			rc = idle_read_one(m, tag, x, ret, err);
		if (rc != 0)
			return rc;
	}
	return 0;
}

int
imap_idle(struct imap *m, unsigned max_ms, volatile sig_atomic_t *stop, struct mp_err *err)
{
	const struct imap_response *r;
	struct idle_ctx x;
	unsigned tag;
	int rc = check_usable(m, err);

	if (rc < 0)
		return rc;
	if (!m->caps.idle)
		return mp_err_set(err, -ENOTSUP, MP_EX_PROTOCOL, "server does not offer IDLE");
	/* A stop asked for before we began: no need to enter IDLE at all. */
	if (stop && *stop)
		return 0;
	m->state = IMAP_ST_IDLE;
	x = (struct idle_ctx){ .known = m->exists };
	rc = idle_start(m, &x, &tag, err);
	if (rc == 0)
		rc = idle_wait(m, tag, max_ms, stop, &x, &r, err);
	if (rc == 0) {
		/* RFC 2177 section 3: DONE ends IDLE; the tagged OK follows. */
		log_trace("C", "DONE", 4, SIZE_MAX);
		rc = conn_write(m->c, "DONE\r\n", 6, err);
		if (rc == 0)
			rc = conn_flush(m->c, err);
		if (rc == 0)
			rc = read_until(m, tag, false, idle_resp, NULL, &x, &r, err);
	}
	if (rc == IMAP_STATUS_OK)
		return x.new_mail ? 1 : 0;
	if (rc > 0)
		rc = refused(m, r, -EPROTO, "IDLE", err);
	return settle(m, rc);
}

int
imap_logout(struct imap *m, struct mp_err *err)
{
	struct cmd cmd;
	int rc = check_usable(m, err);

	if (rc < 0)
		return rc;
	m->state = IMAP_ST_LOGOUT;
	/* RFC 3501 section 6.1.3: BYE comes first, then the tagged OK. */
	m->logout = true;
	cmd_start(m, &cmd, "LOGOUT");
	rc = simple_cmd(m, &cmd, NULL, NULL, "LOGOUT", err);
	/* A server that closes right after its BYE has logged us out all the same. */
	if (rc == -ECONNRESET && m->bye)
		rc = 0;
	/* The session is over either way. */
	m->broken = true;
	return rc;
}
