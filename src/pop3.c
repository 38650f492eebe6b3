/*
 * POP3 engine: RFC 1939, CAPA and PIPELINING (RFC 2449), AUTH (RFC 5034),
 * STLS (RFC 2595), UTF8 (RFC 6856). A state enum names what the session is doing for
 * traces and errors; each step sends its command and then handles the
 * reply, sequentially over the blocking conn. Message bodies go through
 * the pop3_body byte machine straight into the sink.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mailpull/log.h"
#include "mailpull/pop3.h"
#include "mailpull/pop3_body.h"
#include "mailpull/util.h"

#define POP3_BUFSIZE (64 * 1024)   /* decoded body chunk handed to the sink */
/*
 * The pipeline keeps about twice a round trip's worth of expected reply
 * bytes in flight (bandwidth x delay, measured; twice so that a window
 * too small to fill the path measures a rate that grows it), between
 * these bounds. The bytes in flight sit in the network and the kernels'
 * buffers, not in our memory: bodies are streamed as they come.
 */
#define POP3_WIN_MIN (128 * 1024)
#define POP3_WIN_MAX (16 * 1024 * 1024)
/*
 * Unanswered command bytes at most: under the smallest receive buffer a
 * server's kernel is likely to have (64 KiB), so a server that writes its
 * replies before reading more commands, while we write commands before
 * reading replies, cannot deadlock both TCP windows. Large enough that a
 * DELE of a whole mailbox (~11 bytes a command) costs a few round trips.
 */
#define POP3_QUEUE_MAX (32 * 1024)
#define POP3_INFLIGHT_MAX 4096     /* unanswered commands at most */
#define POP3_SIZE_GUESS 16384      /* expected reply of an unLISTed message at first */
#define POP3_REPLY_EXTRA 32        /* status line and terminator of a reply */
/*
 * Messages in one listing at most: each costs 24 bytes and its UIDL, so a
 * hostile listing costs at most about 100 MB, however long it goes on.
 */
#define POP3_MAX_MSGS 1000000u
#define POP3_MAX_CAPA_LINES 256
#define POP3_CMD_MAX 255           /* RFC 2449 section 4: octets, CRLF included */
#define POP3_UIDL_MAX 70           /* RFC 1939 section 7 */

enum pop3_state {
	POP3_ST_GREETING,
	POP3_ST_CAPA,
	POP3_ST_STLS,
	POP3_ST_UTF8,
	POP3_ST_AUTH,
	POP3_ST_LIST,
	POP3_ST_UIDL,
	POP3_ST_RETR,
	POP3_ST_TOP,
	POP3_ST_DELE,
	POP3_ST_QUIT,
	POP3_ST_MAX
};

static const char *const state_names[POP3_ST_MAX] = {
	[POP3_ST_GREETING] = "greeting",
	[POP3_ST_CAPA] = "CAPA",
	[POP3_ST_STLS] = "STLS",
	[POP3_ST_UTF8] = "UTF8",
	[POP3_ST_AUTH] = "AUTH",
	[POP3_ST_LIST] = "LIST",
	[POP3_ST_UIDL] = "UIDL",
	[POP3_ST_RETR] = "RETR",
	[POP3_ST_TOP] = "TOP",
	[POP3_ST_DELE] = "DELE",
	[POP3_ST_QUIT] = "QUIT",
};

enum pop3_reply {
	REPLY_OK,    /* +OK */
	REPLY_ERR,   /* -ERR */
	REPLY_CONT,  /* "+ " SASL continuation (RFC 5034 section 4) */
};

struct pop3 {
	struct conn *c;
	struct pop3_caps caps;
	bool capa_ok;        /* caps came from a CAPA answer, not a guess */
	bool broken;         /* out of step with the server: refuse further use */
	bool utf8;           /* the server accepted UTF8 (RFC 6856) */
	enum pop3_state state;
	char *buf;           /* POP3_BUFSIZE + 1 decoded body bytes */
	char greeting[256];  /* the greeting's text, sanitized */
	/* the pipeline's estimates, kept across batches */
	int64_t rtt_us;      /* smallest command-to-reply time seen, 0: none yet */
	uint64_t rate;       /* reply bytes per second, recent, 0: none yet */
	uint64_t avg_reply;  /* mean reply bytes seen, for replies of unknown size */
	uint64_t rx;         /* reply bytes received in batches */
};

static const char *
pop3_state_to_string(enum pop3_state s)
{
	return MP_ENUM_NAME(state_names, s);
}

/*
 * Queues one command line. redact_from is the offset of a secret in line
 * (or >= len), so the trace shows "***" instead.
 */
static int
send_line(struct pop3 *p, const char *line, size_t len, size_t redact_from, struct mp_err *err)
{
	int r;

	log_trace("C", line, len, redact_from);
	r = conn_write(p->c, line, len, err);
	if (r < 0)
		return r;
	return conn_write(p->c, "\r\n", 2, err);
}

static int MP_PRINTF(3, 0)
vsend_cmd(struct pop3 *p, struct mp_err *err, const char *fmt, va_list ap)
{
	char line[POP3_CMD_MAX];
	int n = vsnprintf(line, sizeof(line), fmt, ap);

	if (n < 0 || (size_t)n + 2 > sizeof(line))
		return mp_err_set(err, -EINVAL, MP_EX_USAGE, "POP3 command too long");
	return send_line(p, line, (size_t)n, SIZE_MAX, err);
}

/* A command without a secret. */
static int MP_PRINTF(3, 4)
send_cmd(struct pop3 *p, struct mp_err *err, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsend_cmd(p, err, fmt, ap);
	va_end(ap);
	return r;
}

/* Whether line starts with word followed by a space or the end. */
static bool
starts_word(const char *line, size_t len, const char *word, size_t *ret_rest)
{
	size_t wl = strlen(word);

	if (len < wl || memcmp(line, word, wl) != 0 || (len > wl && line[wl] != ' '))
		return false;
	*ret_rest = len > wl ? wl + 1 : wl;
	return true;
}

/* One line from the server, traced; body lines under the minimum-rate rule. */
static int
read_traced(struct pop3 *p, bool body, const char **ret_line, size_t *ret_len,
	    struct mp_err *err)
{
	int r = body ? conn_read_body_line(p->c, ret_line, ret_len, err) :
		       conn_read_line(p->c, ret_line, ret_len, err);

	if (r >= 0)
		log_trace("S", *ret_line, *ret_len, SIZE_MAX);
	return r;
}

/*
 * Reads a status line: REPLY_OK, REPLY_ERR, or (when cont_ok) REPLY_CONT.
 * *ret_text is the text after the indicator, valid until the next read.
 * Anything else is -EPROTO: a reply we cannot place means we are out of
 * step with the server.
 */
static int
read_reply(struct pop3 *p, bool cont_ok, const char **ret_text, size_t *ret_len,
	   struct mp_err *err)
{
	const char *line;
	size_t len, rest;
	int kind;
	int r;

	r = read_traced(p, false, &line, &len, err);
	if (r < 0)
		return r;
	if (starts_word(line, len, "+OK", &rest))
		kind = REPLY_OK;
	else if (starts_word(line, len, "-ERR", &rest))
		kind = REPLY_ERR;
	else if (cont_ok && starts_word(line, len, "+", &rest))
		kind = REPLY_CONT;
	else
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, line, len,
				"unexpected POP3 reply in %s state",
				pop3_state_to_string(p->state));
	*ret_text = line + rest;
	*ret_len = len - rest;
	return kind;
}

/*
 * One command without a secret, sent at once, and its status line: as
 * read_reply(). For the commands that wait for their answer (no pipelining).
 */
static int MP_PRINTF(6, 7)
command(struct pop3 *p, bool cont_ok, const char **ret_text, size_t *ret_len,
	struct mp_err *err, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsend_cmd(p, err, fmt, ap);
	va_end(ap);
	if (r == 0)
		r = conn_flush(p->c, err);
	if (r == 0)
		r = read_reply(p, cont_ok, ret_text, ret_len, err);
	return r;
}

/* Sends what is queued, then expects +OK; -ERR becomes -EPROTO naming what. */
static int
expect_ok(struct pop3 *p, const char *what, struct mp_err *err)
{
	const char *text;
	size_t len;
	int r;

	r = conn_flush(p->c, err);
	if (r < 0)
		return r;
	r = read_reply(p, false, &text, &len, err);
	if (r == REPLY_ERR)
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, text, len, "server refused %s", what);
	return r < 0 ? r : 0;
}

/*
 * One line of a multi-line response (RFC 1939 section 3): 1 with the line
 * (dot-stuffing undone), 0 at the terminating ".", or a negative errno.
 * The caller starts the minimum-rate window after the status line, so a
 * server sending a line at a time, each just within the timeout, cannot
 * hold the session for ever.
 */
static int
read_ml_line(struct pop3 *p, const char **ret_line, size_t *ret_len, struct mp_err *err)
{
	const char *line;
	size_t len;
	int r;

	r = read_traced(p, true, &line, &len, err);
	if (r < 0)
		return r;
	if (len > 0 && line[0] == '.') {
		if (len == 1)
			return 0;
		line++;
		len--;
	}
	*ret_line = line;
	*ret_len = len;
	return 1;
}

/*
 * Appends the mechanism names of a "SASL" capability line. Only names in
 * the RFC 4422 section 3.1 form are kept, so nothing odd reaches a message.
 */
static void
capa_sasl(struct pop3_caps *caps, const char *args, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t start, n;
		bool ok = true;

		while (i < len && args[i] == ' ')
			i++;
		start = i;
		while (i < len && args[i] != ' ')
			i++;
		n = i - start;
		for (size_t k = start; k < i; k++) {
			char ch = args[k];

			if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
			      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
				ok = false;
		}
		size_t used = strlen(caps->sasl);

		if (!ok || n == 0 || n > 20 || used + n + 2 > sizeof(caps->sasl))
			continue;
		if (used > 0)
			caps->sasl[used++] = ' ';
		memcpy(caps->sasl + used, args + start, n);
		caps->sasl[used + n] = '\0';
	}
}

/* One capability line (RFC 2449 section 6): a case-insensitive tag and arguments. */
static void
capa_line(struct pop3_caps *caps, const char *line, size_t len)
{
	static const struct {
		const char *tag;
		size_t off;
	} flags[] = {
		{ "STLS", offsetof(struct pop3_caps, stls) },
		{ "UIDL", offsetof(struct pop3_caps, uidl) },
		{ "TOP", offsetof(struct pop3_caps, top) },
		{ "USER", offsetof(struct pop3_caps, user) },
		{ "PIPELINING", offsetof(struct pop3_caps, pipelining) },
		{ "RESP-CODES", offsetof(struct pop3_caps, resp_codes) },
		{ "UTF8", offsetof(struct pop3_caps, utf8) },
	};
	const char *sp = memchr(line, ' ', len);
	size_t tl = sp ? (size_t)(sp - line) : len;

	if (tl == 4 && strncasecmp(line, "SASL", 4) == 0) {
		capa_sasl(caps, line + tl, len - tl);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++)
		if (strlen(flags[i].tag) == tl && strncasecmp(line, flags[i].tag, tl) == 0)
			*(bool *)((char *)caps + flags[i].off) = true;
}

/*
 * CAPA (RFC 2449 section 5). What was known before is forgotten first:
 * after STLS the earlier answer came over an unprotected channel.
 */
static int
pop3_capa(struct pop3 *p, struct mp_err *err)
{
	const char *line;
	size_t len;
	int r;

	memset(&p->caps, 0, sizeof(p->caps));
	p->capa_ok = false;
	p->state = POP3_ST_CAPA;
	r = command(p, false, &line, &len, err, "CAPA");
	if (r < 0)
		return r;
	if (r == REPLY_ERR) {
		/*
		 * An RFC 1939-only server: USER, UIDL and TOP are optional
		 * there and may exist; they are tried and their -ERR believed.
		 * Pipelining is never assumed.
		 */
		p->caps.user = p->caps.uidl = p->caps.top = true;
		return 0;
	}
	conn_body_start(p->c);
	for (unsigned n = 0;; n++) {
		r = read_ml_line(p, &line, &len, err);
		if (r <= 0)
			break;
		if (n >= POP3_MAX_CAPA_LINES)
			return mp_err_set(err, -E2BIG, MP_EX_PROTOCOL,
					  "CAPA answer longer than %d lines", POP3_MAX_CAPA_LINES);
		capa_line(&p->caps, line, len);
	}
	if (r < 0)
		return r;
	p->capa_ok = true;
	return 0;
}

/*
 * STLS (RFC 2595 section 4). Mandatory once asked for: any outcome but
 * +OK ends the session before a credential is sent. Nothing else is sent
 * until the reply; conn_starttls() refuses if bytes follow the +OK, since
 * they came before the handshake and could be injected.
 */
static int
pop3_stls(struct pop3 *p, struct mp_err *err)
{
	const char *text;
	size_t len;
	int r;

	if (!p->caps.stls)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server does not offer STLS; refusing to continue without TLS");
	p->state = POP3_ST_STLS;
	r = command(p, false, &text, &len, err, "STLS");
	if (r < 0)
		return r;
	if (r != REPLY_OK)
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, text, len,
				"server refused STLS; refusing to continue without TLS");
	r = conn_starttls(p->c, err);
	if (r < 0)
		return r;
	/* Nothing said before the handshake is believed after it (DESIGN, TLS rules). */
	p->greeting[0] = '\0';
	return pop3_capa(p, err);
}

/*
 * UTF8 (RFC 6856 section 2), in the AUTHORIZATION state it is only valid
 * in, once any STLS is done: without it a server may hand out a message
 * whose header holds raw UTF-8 replaced or downgraded, so it is asked for
 * whenever offered. A refusal leaves the session as it was.
 */
static int
pop3_utf8(struct pop3 *p, struct mp_err *err)
{
	const char *text;
	size_t len;
	int r;

	p->state = POP3_ST_UTF8;
	r = command(p, false, &text, &len, err, "UTF8");
	if (r < 0)
		return r;
	p->utf8 = r == REPLY_OK;
	if (!p->utf8)
		log_debug("server refused UTF8 although it offered it");
	return 0;
}

int
pop3_open(struct conn *c, bool stls, struct pop3 **ret, struct mp_err *err)
{
	struct pop3 *p;
	const char *text;
	size_t len;
	int r;

	p = calloc(1, sizeof(*p));
	if (!p) {
		conn_close(c);
		return mp_err_oom(err);
	}
	p->c = c;
	p->state = POP3_ST_GREETING;
	p->buf = malloc(POP3_BUFSIZE + 1);
	if (!p->buf) {
		r = mp_err_oom(err);
		goto fail;
	}
	r = read_reply(p, false, &text, &len, err);
	if (r < 0)
		goto fail;
	if (r != REPLY_OK) {
		r = mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, text, len, "server greeting is not +OK");
		goto fail;
	}
	util_sanitize(p->greeting, sizeof(p->greeting), text, len);
	r = pop3_capa(p, err);
	if (r == 0 && stls)
		r = pop3_stls(p, err);
	if (r == 0 && p->caps.utf8)
		r = pop3_utf8(p, err);
	if (r < 0)
		goto fail;
	*ret = p;
	return 0;
fail:
	pop3_free(p);
	return r;
}

const struct pop3_caps *
pop3_caps(const struct pop3 *p)
{
	return &p->caps;
}

const char *
pop3_greeting(const struct pop3 *p)
{
	return p->greeting;
}

bool
pop3_utf8_mode(const struct pop3 *p)
{
	return p->utf8;
}

void
pop3_free(struct pop3 *p)
{
	if (!p)
		return;
	conn_close(p->c);
	free(p->buf);
	free(p);
}

static int
check_usable(struct pop3 *p, struct mp_err *err)
{
	if (p->broken)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "POP3 session unusable after an earlier error");
	return 0;
}

/*
 * After a transport or protocol error the reply stream can no longer be
 * trusted to line up with our commands. A refused login or a rejected
 * argument leaves the session in step.
 */
static int
settle(struct pop3 *p, int r)
{
	if (r < 0 && r != -EACCES && r != -EINVAL)
		p->broken = true;
	return r;
}

/* ---- authentication ---------------------------------------------------- */

/*
 * A refused login. RFC 2449 section 8.1 [IN-USE], [LOGIN-DELAY] and RFC
 * 3206 [SYS/TEMP] say the credentials may be fine: retry later rather
 * than ask the user to fix the password.
 */
static const char *const temp_codes[] = { "[IN-USE]", "[LOGIN-DELAY]", "[SYS/TEMP]" };

/* The temporary response code text starts with, or NULL. */
static const char *
temp_code(const char *text, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(temp_codes); i++) {
		size_t tl = strlen(temp_codes[i]);

		if (len >= tl && strncasecmp(text, temp_codes[i], tl) == 0)
			return temp_codes[i];
	}
	return NULL;
}

static int
auth_refused(struct pop3 *p, const char *text, size_t len, struct mp_err *err)
{
	const char *temp = temp_code(text, len);

	(void)p;
	if (temp)
		return mp_err_set_srv(err, -EACCES, MP_EX_TEMPFAIL, text, len,
				"login refused for now (%s); will retry", temp);
	return mp_err_set_srv(err, -EACCES, MP_EX_NOPERM, text, len, "authentication refused");
}

/* Reads the reply that ends an authentication exchange: 0 for +OK. */
static int
auth_final(struct pop3 *p, struct mp_err *err)
{
	const char *text;
	size_t len;
	int r = conn_flush(p->c, err);

	if (r == 0)
		r = read_reply(p, false, &text, &len, err);
	if (r == REPLY_ERR)
		return auth_refused(p, text, len, err);
	return r < 0 ? r : 0;
}

/* Queues a whole-line SASL response, traced as "***". */
static int
send_secret(struct pop3 *p, const char *s, struct mp_err *err)
{
	return send_line(p, s, strlen(s), 0, err);
}

/*
 * Queues "AUTH mech", with the initial response when there is one and
 * the line fits in 255 octets (RFC 5034 section 4; an empty one is "=").
 * Sets *ret_sent when it went on the line.
 */
static int
auth_command(struct pop3 *p, const char *name, const char *ir, bool *ret_sent,
	     struct mp_err *err)
{
	size_t nl = strlen(name), rl = ir ? strlen(ir) : 0;
	char line[POP3_CMD_MAX];
	int r;

	*ret_sent = false;
	if (!ir || 5 + nl + 1 + (rl ? rl : 1) + 2 > POP3_CMD_MAX)
		return send_cmd(p, err, "AUTH %s", name);
	memcpy(line, "AUTH ", 5);
	memcpy(line + 5, name, nl);
	line[5 + nl] = ' ';
	memcpy(line + 6 + nl, rl ? ir : "=", rl ? rl : 1);
	r = send_line(p, line, 6 + nl + (rl ? rl : 1), 6 + nl, err);
	explicit_bzero(line, sizeof(line));
	*ret_sent = true;
	return r;
}

/*
 * A step failed: cancel with "*" (RFC 5034 section 4), read the server's
 * final reply, and report the step's error, whatever that reply says.
 */
static int
auth_cancel(struct pop3 *p, struct sasl_session *cl, int step, struct mp_err *err)
{
	const char *text;
	size_t len;
	int r = send_cmd(p, err, "*");

	if (r == 0)
		r = conn_flush(p->c, err);
	if (r == 0)
		r = read_reply(p, false, &text, &len, err);
	if (r < 0)
		return r;
	if (step == -ENOMEM)
		return mp_err_oom(err);
	/* +OK to a cancel logged us in after all: the session is not what we think. */
	if (r == REPLY_OK)
		step = -EPROTO;
	/* The session stays in step after the cancel: -EACCES keeps it usable. */
	return mp_err_set(err, step, step == -EACCES ? MP_EX_NOPERM :
			  step == -EINVAL ? MP_EX_CONFIG : MP_EX_PROTOCOL,
			  "%s authentication failed: %s",
			  sasl_mech_to_string(sasl_session_mech(cl)), sasl_session_error(cl));
}

/*
 * The server's -ERR ending an exchange. An OAuth error report heard before
 * it (RFC 7628) says more than the -ERR text, unless that names a
 * temporary refusal.
 */
static int
auth_sasl_refused(struct pop3 *p, struct sasl_session *cl, const char *text, size_t len,
		  struct mp_err *err)
{
	const char *detail = sasl_session_detail(cl);

	if (detail[0] && !temp_code(text, len))
		return mp_err_set_srv(err, -EACCES, MP_EX_NOPERM, detail, strlen(detail),
				"authentication refused");
	return auth_refused(p, text, len, err);
}

/* +OK ends the exchange: the mechanism decides whether the server proved itself. */
static int
auth_sasl_ok(struct sasl_session *cl, bool answered, struct mp_err *err)
{
	const char *name = sasl_mech_to_string(sasl_session_mech(cl));

	if (!answered)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server accepted AUTH %s without a response", name);
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
 * The SASL exchange (RFC 5034): the engine only carries base64 lines
 * between cl and the server. An initial response too long for the AUTH
 * line answers the server's first (empty) challenge; every other
 * challenge goes to sasl_session_step().
 */
static int
auth_sasl(struct pop3 *p, struct sasl_session *cl, struct mp_err *err)
{
	const char *name = sasl_mech_to_string(sasl_session_mech(cl)), *text;
	char *pending = NULL, *resp = NULL;
	size_t len;
	bool answered;
	int r, rounds = 0;

	r = sasl_session_initial(cl, &pending);
	if (r < 0)
		return initial_failed(cl, r, err);
	r = auth_command(p, name, pending, &answered, err);
	if (answered) {
		sasl_free(pending);
		pending = NULL;
	}
	while (r == 0) {
		r = conn_flush(p->c, err);
		if (r == 0)
			r = read_reply(p, true, &text, &len, err);
		if (r < 0)
			break;
		if (r == REPLY_OK) {
			r = auth_sasl_ok(cl, answered, err);
			break;
		}
		if (r == REPLY_ERR) {
			r = auth_sasl_refused(p, cl, text, len, err);
			break;
		}
		/* RFC 4422 section 3: no mechanism needs this many rounds. */
		if (++rounds > 16) {
			r = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				       "server kept challenging AUTH %s", name);
			break;
		}
		if (!pending) {
			r = sasl_session_step(cl, text, len, &resp);
			if (r < 0) {
				r = auth_cancel(p, cl, r, err);
				break;
			}
		}
		r = send_secret(p, pending ? pending : resp, err);
		sasl_free(pending);
		sasl_free(resp);
		pending = resp = NULL;
		answered = true;
	}
	sasl_free(pending);
	return r;
}

/* USER/PASS (RFC 1939 section 7). */
static int
auth_user(struct pop3 *p, const char *user, const char *pass, struct mp_err *err)
{
	size_t pl = strlen(pass);
	char *line;
	int r;

	r = send_cmd(p, err, "USER %s", user);
	if (r == 0)
		r = auth_final(p, err);
	if (r < 0)
		return r;
	line = malloc(5 + pl + 1);
	if (!line)
		return mp_err_oom(err);
	memcpy(line, "PASS ", 5);
	memcpy(line + 5, pass, pl);
	r = send_line(p, line, 5 + pl, 5, err);
	explicit_bzero(line, 5 + pl);
	free(line);
	if (r == 0)
		r = auth_final(p, err);
	return r;
}

/* No CR or LF may reach a command line: it would end it and start another. */
static bool
line_safe(const char *s)
{
	return strpbrk(s, "\r\n") == NULL;
}

int
pop3_auth(struct pop3 *p, struct sasl_session *cl, const char *user, const char *secret,
	  struct mp_err *err)
{
	int r;

	r = check_usable(p, err);
	if (r < 0)
		return r;
	p->state = POP3_ST_AUTH;
	if (cl)
		return settle(p, auth_sasl(p, cl, err));
	if (!user || !secret)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "user name or secret is missing");
	/* Only USER/PASS put them on the line as they are. */
	if (!line_safe(user) || !line_safe(secret))
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "user name or password holds a line break, which USER/PASS "
				  "cannot carry");
	return settle(p, auth_user(p, user, secret, err));
}

/* ---- listing ------------------------------------------------------------ */

/* Splits "a b..." into its first token and the rest; false if a is empty. */
static bool
split_token(const char *line, size_t len, size_t *ret_toklen, const char **ret_rest,
	    size_t *ret_restlen)
{
	const char *sp = memchr(line, ' ', len);
	size_t tl = sp ? (size_t)(sp - line) : len;

	if (tl == 0)
		return false;
	*ret_toklen = tl;
	*ret_rest = sp ? sp + 1 : line + len;
	*ret_restlen = sp ? len - tl - 1 : 0;
	return true;
}

static int
parse_num(const char *s, size_t len, unsigned *ret)
{
	uint64_t v;

	if (util_parse_u64(s, len, &v) < 0 || v == 0 || v > UINT32_MAX)
		return -EBADMSG;
	*ret = (unsigned)v;
	return 0;
}

/*
 * A scan listing line (RFC 1939 section 5): number, one space, size.
 * Whatever follows the size after a space is allowed and ignored.
 */
static int
parse_list_line(const char *line, size_t len, unsigned *ret_num, uint64_t *ret_size)
{
	const char *rest, *more;
	size_t tl, rl, sl, ml;

	if (!split_token(line, len, &tl, &rest, &rl) || parse_num(line, tl, ret_num) < 0)
		return -EBADMSG;
	if (!split_token(rest, rl, &sl, &more, &ml))
		return -EBADMSG;
	return util_parse_u64(rest, sl, ret_size) < 0 ? -EBADMSG : 0;
}

static int
grow_msgs(struct pop3_msg **msgs, size_t *cap, size_t n)
{
	struct pop3_msg *m;
	size_t nc;

	if (n < *cap)
		return 0;
	nc = *cap ? *cap * 2 : 64;
	m = reallocarray(*msgs, nc, sizeof(*m));
	if (!m)
		return -ENOMEM;
	*msgs = m;
	*cap = nc;
	return 0;
}

/* LIST: every message's number and size, numbers strictly increasing. */
static int
read_list(struct pop3 *p, bool uidl_too, struct pop3_msg **ret, size_t *ret_n,
	  struct mp_err *err)
{
	struct pop3_msg *msgs = NULL;
	size_t n = 0, cap = 0, len;
	const char *line;
	int r;

	p->state = POP3_ST_LIST;
	r = send_cmd(p, err, "LIST");
	/* Pipelined, UIDL's answer follows LIST's: one round trip saved. */
	if (r == 0 && uidl_too)
		r = send_cmd(p, err, "UIDL");
	if (r == 0)
		r = expect_ok(p, "LIST", err);
	conn_body_start(p->c);
	while (r == 0) {
		struct pop3_msg m = { .uidl = "" };

		r = read_ml_line(p, &line, &len, err);
		if (r <= 0)
			break;
		r = 0;
		if (parse_list_line(line, len, &m.num, &m.size) < 0)
			r = mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, line, len,
				     "malformed LIST line from server");
		else if (n > 0 && m.num <= msgs[n - 1].num)
			r = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				       "server LISTed message %u after %u", m.num, msgs[n - 1].num);
		else if (n >= POP3_MAX_MSGS)
			r = mp_err_set(err, -E2BIG, MP_EX_PROTOCOL,
				       "server lists more than %u messages, the most one POP3 "
				       "mailbox may hold for mailpull", POP3_MAX_MSGS);
		else if (grow_msgs(&msgs, &cap, n) < 0)
			r = mp_err_oom(err);
		else
			msgs[n++] = m;
	}
	if (r < 0) {
		free(msgs);
		return r;
	}
	*ret = msgs;
	*ret_n = n;
	return 0;
}

/* RFC 1939 section 7: a unique-id is 1 to 70 characters in 0x21-0x7E. */
static bool
uidl_valid(const char *s, size_t len)
{
	if (len == 0 || len > POP3_UIDL_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* One unique-id listing line, matched against the LIST entry at *pos. */
static int
merge_uidl_line(struct pop3_msg *msgs, size_t n, size_t *pos, char *ids, size_t *used,
		const char *line, size_t len, struct mp_err *err)
{
	const char *uid;
	size_t tl, ul;
	unsigned num;

	if (!split_token(line, len, &tl, &uid, &ul) || parse_num(line, tl, &num) < 0)
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, line, len,
				"malformed UIDL line from server");
	/* Trailing blanks are not part of the id (they are outside 0x21-0x7E). */
	while (ul > 0 && (uid[ul - 1] == ' ' || uid[ul - 1] == '\t'))
		ul--;
	if (!uidl_valid(uid, ul))
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, line, len,
				"server sent an invalid UIDL for message %u", num);
	/*
	 * LIST and UIDL come from the same locked maildrop (RFC 1939 section
	 * 8), so they must name the same messages in the same order.
	 */
	if (*pos >= n || msgs[*pos].num != num)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server's UIDL and LIST disagree at message %u", num);
	memcpy(ids + *used, uid, ul);
	ids[*used + ul] = '\0';
	*used += ul + 1;
	(*pos)++;
	return 0;
}

/*
 * Makes room for n UIDLs of the longest kind behind the array of n entries,
 * so the listing is one block the caller frees at once. Pages nobody
 * writes cost no memory; attach_uidls() gives back what is left over.
 */
static int
reserve_uidls(struct pop3_msg **msgs, size_t n, struct mp_err *err)
{
	struct pop3_msg *m = realloc(*msgs, n * (sizeof(*m) + POP3_UIDL_MAX + 1));

	if (!m)
		return mp_err_oom(err);
	*msgs = m;
	return 0;
}

/* Trims the block to the UIDLs received and points each entry at its own. */
static void
attach_uidls(struct pop3_msg **msgs, size_t n, size_t used)
{
	struct pop3_msg *m = realloc(*msgs, n * sizeof(*m) + used);
	const char *u;

	if (m)
		*msgs = m;
	m = *msgs;
	u = (const char *)(m + n);
	for (size_t i = 0; i < n; i++) {
		m[i].uidl = u;
		u += strlen(u) + 1;
	}
}

static int
cmp_uidl_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Two messages with one UIDL would look like one: the second would be
 * taken as already fetched and could be deleted unread.
 */
static int
check_unique(const struct pop3_msg *msgs, size_t n, struct mp_err *err)
{
	const char **v;
	int r = 0;

	if (n < 2)
		return 0;
	v = calloc(n, sizeof(*v));
	if (!v)
		return mp_err_oom(err);
	for (size_t i = 0; i < n; i++)
		v[i] = msgs[i].uidl;
	qsort(v, n, sizeof(*v), cmp_uidl_ptr);
	for (size_t i = 1; i < n && r == 0; i++)
		if (strcmp(v[i - 1], v[i]) == 0)
			r = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				       "server listed UIDL %s twice; refusing to tell "
				       "messages apart by it", v[i]);
	free(v);
	return r;
}

/* UIDL: every LIST entry gets its unique id, or none when the server lacks UIDL. */
static int
read_uidl(struct pop3 *p, bool sent, struct pop3_msg **msgs, size_t n, struct mp_err *err)
{
	size_t len, pos = 0, used = 0;
	const char *line;
	int r;

	p->state = POP3_ST_UIDL;
	if (sent)
		r = read_reply(p, false, &line, &len, err);
	else
		r = command(p, false, &line, &len, err, "UIDL");
	if (r < 0)
		return r;
	if (r == REPLY_ERR) {
		/* Without CAPA, UIDL was only a guess, and -ERR settles it. */
		if (!p->capa_ok) {
			p->caps.uidl = false;
			return 0;
		}
		return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, line, len,
				"server advertised UIDL but refused it");
	}
	r = n ? reserve_uidls(msgs, n, err) : 0;
	if (r < 0)
		return r;
	conn_body_start(p->c);
	while ((r = read_ml_line(p, &line, &len, err)) > 0) {
		char *ids = n ? (char *)(*msgs + n) : NULL;

		r = merge_uidl_line(*msgs, n, &pos, ids, &used, line, len, err);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	if (pos < n)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server listed no UIDL for message %u", (*msgs)[pos].num);
	if (n)
		attach_uidls(msgs, n, used);
	return check_unique(*msgs, n, err);
}

int
pop3_list(struct pop3 *p, struct pop3_msg **ret, size_t *ret_n, struct mp_err *err)
{
	struct pop3_msg *msgs = NULL;
	size_t n = 0;
	int r;

	r = check_usable(p, err);
	if (r < 0)
		return r;
	/*
	 * Only when CAPA named both: a guessed UIDL may be refused, and a
	 * server without PIPELINING may drop the second command.
	 */
	bool both = p->capa_ok && p->caps.pipelining && p->caps.uidl;

	r = read_list(p, both, &msgs, &n, err);
	if (r == 0 && p->caps.uidl)
		r = read_uidl(p, both, &msgs, n, err);
	if (r < 0) {
		free(msgs);
		return settle(p, r);
	}
	*ret = msgs;
	*ret_n = n;
	return 0;
}

/* ---- transfer ----------------------------------------------------------- */

static int
sink_failed(struct mp_err *err, int r, size_t idx)
{
	return mp_err_set(err, r, mp_exit_from_errno(r), "storing message %zu failed: %s", idx,
			  strerror(-r));
}

/*
 * Streams one multi-line body into the sink through the byte machine,
 * a bounded chunk at a time: memory does not grow with message size.
 */
static int
stream_body(struct pop3 *p, size_t idx, const struct mp_sink *sink, uint64_t *ret_wire,
	    struct mp_err *err)
{
	struct pop3_body b;
	char note[48];
	int done = 0, r, n;

	r = sink->begin(sink->ud, idx);
	if (r < 0)
		return sink_failed(err, r, idx);
	pop3_body_init(&b);
	conn_body_start(p->c);
	while (!done) {
		const char *data;
		size_t len, outlen, used;

		r = conn_peek(p->c, &data, &len, err);
		if (r < 0)
			return r;
		if (len > POP3_BUFSIZE)
			len = POP3_BUFSIZE;
		done = pop3_body_feed(&b, data, len, p->buf, &outlen, &used);
		if (outlen > 0) {
			r = sink->data(sink->ud, p->buf, outlen);
			if (r < 0)
				return sink_failed(err, r, idx);
		}
		conn_consume(p->c, used);
		*ret_wire += used;
	}
	n = snprintf(note, sizeof(note), "<%" PRIu64 " octets>", b.bytes);
	log_trace("S", note, (size_t)n, SIZE_MAX);
	r = sink->end(sink->ud);
	return r < 0 ? sink_failed(err, r, idx) : 0;
}

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The pipeline of one batch: what is sent and unanswered, and the samples. */
struct pipe {
	const unsigned *nums;
	const uint64_t *sizes;    /* NULL: unknown */
	size_t n, sent, done;
	uint64_t flight;          /* expected reply bytes sent for and unanswered */
	size_t cmd_bytes;         /* bytes of unanswered commands */
	int64_t probe_at;         /* when command `probe` left, into an idle pipe */
	size_t probe;             /* SIZE_MAX: no RTT probe running */
	int64_t mark_at;          /* start of the current rate sample */
	uint64_t mark_rx;
};

static size_t
cmd_len(const char *verb, unsigned num)
{
	char tmp[16];

	return strlen(verb) + 1 + (size_t)snprintf(tmp, sizeof(tmp), "%u", num) + 2;
}

static uint64_t
expected_reply(const struct pop3 *p, const struct pipe *q, size_t i, bool body)
{
	if (!body)
		return POP3_REPLY_EXTRA;
	if (q->sizes)
		return q->sizes[i] + POP3_REPLY_EXTRA;
	return p->avg_reply ? p->avg_reply : POP3_SIZE_GUESS;
}

/* Twice the measured bandwidth x delay, within the bounds. */
static uint64_t
window_bytes(const struct pop3 *p)
{
	uint64_t w = p->rate * (uint64_t)p->rtt_us / 1000000 * 2;

	return w < POP3_WIN_MIN ? POP3_WIN_MIN : w > POP3_WIN_MAX ? POP3_WIN_MAX : w;
}

/*
 * Whether to queue more commands now. Never with every limit more than
 * three quarters used, so the window is refilled in chunks: many commands
 * in one write (one TLS record) rather than one per reply.
 */
static bool
refill_due(const struct pop3 *p, const struct pipe *q, size_t depth)
{
	size_t inflight = q->sent - q->done;

	if (q->sent == q->n)
		return false;
	if (inflight == 0)
		return true;
	return inflight <= depth - depth / 4 && q->cmd_bytes <= POP3_QUEUE_MAX - POP3_QUEUE_MAX / 4 &&
	       q->flight <= window_bytes(p) - window_bytes(p) / 4;
}

/* Queues commands while every limit allows, then sends them in one write. */
static int
refill(struct pop3 *p, struct pipe *q, const char *verb, size_t depth, bool body,
       struct mp_err *err)
{
	uint64_t win = window_bytes(p);
	bool idle = q->sent == q->done;
	int r;

	while (q->sent < q->n && q->sent - q->done < depth) {
		size_t cl = cmd_len(verb, q->nums[q->sent]);
		char cmd[32];

		/* One command always goes out into an idle pipe, whatever its reply's size. */
		if (q->sent > q->done && (q->cmd_bytes + cl > POP3_QUEUE_MAX || q->flight >= win))
			break;
		snprintf(cmd, sizeof(cmd), "%s %u", verb, q->nums[q->sent]);
		r = send_line(p, cmd, cl - 2, SIZE_MAX, err);
		if (r < 0)
			return r;
		q->cmd_bytes += cl;
		q->flight += expected_reply(p, q, q->sent, body);
		q->sent++;
	}
	r = conn_flush(p->c, err);
	if (r < 0)
		return r;
	/* Into an idle pipe the first reply comes one round trip later. */
	if (idle && q->probe == SIZE_MAX) {
		q->probe = q->done;
		q->probe_at = now_us();
	}
	return 0;
}

/* Takes one answered command out of the pipe and updates the estimates. */
static void
answered(struct pop3 *p, struct pipe *q, const char *verb, bool body, uint64_t got)
{
	int64_t now = now_us();

	q->cmd_bytes -= cmd_len(verb, q->nums[q->done]);
	q->flight -= expected_reply(p, q, q->done, body);
	q->done++;
	p->rx += got;
	if (body)
		p->avg_reply = p->avg_reply ? (p->avg_reply * 7 + got) / 8 : got;
	/* Rate samples over at least a round trip (and 2 ms), the recent peak kept. */
	if (now - q->mark_at >= (p->rtt_us > 2000 ? p->rtt_us : 2000)) {
		uint64_t sample = (p->rx - q->mark_rx) * 1000000 / (uint64_t)(now - q->mark_at);

		p->rate = sample > p->rate ? sample : (p->rate * 3 + sample) / 4;
		q->mark_at = now;
		q->mark_rx = p->rx;
	}
}

/* The reply to the probe's command has begun: one round trip sample. */
static void
rtt_sample(struct pop3 *p, struct pipe *q)
{
	int64_t rtt;

	if (q->probe != q->done)
		return;
	rtt = now_us() - q->probe_at;
	if (rtt < 1)
		rtt = 1;
	if (p->rtt_us == 0 || rtt < p->rtt_us)
		p->rtt_us = rtt;
	q->probe = SIZE_MAX;
}

/*
 * Sends "verb num" for each of nums[0..n) and handles the replies in
 * order; with a sink each reply carries a body. With PIPELINING (RFC 2449
 * section 6.6) the commands in flight are bounded by the expected reply
 * bytes (window_bytes()), by POP3_QUEUE_MAX bytes of commands and by
 * POP3_INFLIGHT_MAX; without it, one command at a time.
 */
static int
run_batch(struct pop3 *p, const char *verb, const unsigned *nums, const uint64_t *sizes,
	  size_t n, const struct mp_sink *sink, struct mp_err *err)
{
	size_t depth = p->caps.pipelining ? POP3_INFLIGHT_MAX : 1;
	struct pipe q = { .nums = nums, .sizes = sizes, .n = n, .probe = SIZE_MAX,
			  .mark_at = now_us(), .mark_rx = p->rx };
	const char *text;
	size_t len;
	int r;

	for (size_t i = 0; i < n; i++)
		if (nums[i] == 0)
			return mp_err_set(err, -EINVAL, MP_EX_USAGE, "message number 0");
	while (q.done < n) {
		uint64_t got = 0;

		if (refill_due(p, &q, depth)) {
			r = refill(p, &q, verb, depth, sink != NULL, err);
			if (r < 0)
				return r;
		}
		r = read_reply(p, false, &text, &len, err);
		if (r < 0)
			return r;
		rtt_sample(p, &q);
		if (r == REPLY_ERR)
			return mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, text, len,
					"server refused %s %u", verb, nums[q.done]);
		if (sink) {
			r = stream_body(p, q.done, sink, &got, err);
			if (r < 0)
				return r;
		}
		answered(p, &q, verb, sink != NULL, got + len + 6);
	}
	return 0;
}

/* RETR or DELE over nums, on a session still in step. */
static int
batch_cmd(struct pop3 *p, enum pop3_state state, const char *verb, const unsigned *nums,
	  const uint64_t *sizes, size_t n, const struct mp_sink *sink, struct mp_err *err)
{
	int r = check_usable(p, err);

	if (r < 0)
		return r;
	p->state = state;
	return settle(p, run_batch(p, verb, nums, sizes, n, sink, err));
}

int
pop3_retr(struct pop3 *p, const unsigned *nums, const uint64_t *sizes, size_t n,
	  const struct mp_sink *sink, struct mp_err *err)
{
	return batch_cmd(p, POP3_ST_RETR, "RETR", nums, sizes, n, sink, err);
}

int
pop3_top(struct pop3 *p, unsigned num, unsigned lines, const struct mp_sink *sink,
	 struct mp_err *err)
{
	int r = check_usable(p, err);

	if (r < 0)
		return r;
	if (num == 0)
		return mp_err_set(err, -EINVAL, MP_EX_USAGE, "message number 0");
	p->state = POP3_ST_TOP;
	r = send_cmd(p, err, "TOP %u %u", num, lines);
	if (r == 0)
		r = expect_ok(p, "TOP", err);
	if (r == 0) {
		uint64_t wire = 0;

		r = stream_body(p, 0, sink, &wire, err);
	}
	return settle(p, r);
}

int
pop3_dele(struct pop3 *p, const unsigned *nums, size_t n, struct mp_err *err)
{
	return batch_cmd(p, POP3_ST_DELE, "DELE", nums, NULL, n, NULL, err);
}

int
pop3_quit(struct pop3 *p, struct mp_err *err)
{
	const char *text;
	size_t len;
	int r = check_usable(p, err);

	if (r < 0)
		return r;
	p->state = POP3_ST_QUIT;
	r = command(p, false, &text, &len, err, "QUIT");
	if (r == REPLY_ERR)
		r = mp_err_set_srv(err, -EPROTO, MP_EX_PROTOCOL, text, len,
			     "server did not confirm QUIT; deletions may not have happened");
	/* RFC 1939 section 6: the session is over either way. */
	p->broken = true;
	return r < 0 ? r : 0;
}
