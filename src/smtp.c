/*
 * SMTP submission engine: RFC 5321 and RFC 6409, STARTTLS (RFC 3207),
 * AUTH (RFC 4954), PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME
 * (RFC 6152), SMTPUTF8 (RFC 6531), enhanced status codes (RFC 2034,
 * RFC 3463). A state enum names what the session is doing for traces and
 * errors; each step queues its command, flushes, and handles the reply,
 * sequentially over the blocking conn. The reply parser and the DATA
 * encoder are pure functions (smtp.h) so they can be fed bytes directly.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailpull/log.h"
#include "mailpull/smtp.h"
#include "mailpull/util.h"

#define SMTP_CHUNK (64 * 1024)     /* message bytes encoded per conn_write */
#define SMTP_CMD_MAX 1200          /* a command line we build, CRLF excluded */
/* A path we send at most: RFC 5321 section 4.5.3.1.3 says 256 octets, servers take more. */
#define SMTP_ADDR_MAX 1000
/* Pipelined commands in one group: RFC 2920 section 3.1 warns of deadlock. */
#define SMTP_WINDOW 100
#define SMTP_MECH_MAX 20           /* RFC 4422 section 3.1 */
#define SMTP_AUTH_LINE 512         /* RFC 4954 section 4: the AUTH line, CRLF included */

enum smtp_state {
	SMTP_ST_GREETING,
	SMTP_ST_EHLO,
	SMTP_ST_HELO,
	SMTP_ST_STARTTLS,
	SMTP_ST_AUTH,
	SMTP_ST_MAIL,
	SMTP_ST_RCPT,
	SMTP_ST_DATA,
	SMTP_ST_BODY,
	SMTP_ST_DOT,
	SMTP_ST_RSET,
	SMTP_ST_QUIT,
	SMTP_ST_MAX
};

static const char *const state_names[SMTP_ST_MAX] = {
	[SMTP_ST_GREETING] = "greeting",
	[SMTP_ST_EHLO] = "EHLO",
	[SMTP_ST_HELO] = "HELO",
	[SMTP_ST_STARTTLS] = "STARTTLS",
	[SMTP_ST_AUTH] = "AUTH",
	[SMTP_ST_MAIL] = "MAIL",
	[SMTP_ST_RCPT] = "RCPT",
	[SMTP_ST_DATA] = "DATA",
	[SMTP_ST_BODY] = "message",
	[SMTP_ST_DOT] = "end of data",
	[SMTP_ST_RSET] = "RSET",
	[SMTP_ST_QUIT] = "QUIT",
};

struct smtp {
	struct conn *c;
	struct smtp_caps caps;
	bool broken;         /* out of step with the server: refuse further use */
	enum smtp_state state;
	char *obuf;          /* 2 * SMTP_CHUNK encoded message bytes, allocated by the first send */
	char greeting[sizeof(((struct smtp_reply *)0)->text)]; /* the 220's text, sanitized */
};

static const char *
smtp_state_to_string(enum smtp_state st)
{
	return MP_ENUM_NAME(state_names, st);
}

/* ---- the reply parser ---------------------------------------------------- */

static bool
is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/*
 * An enhanced status code (RFC 3463 section 2: class "." subject "."
 * detail, 1 to 3 digits each) at the start of text, followed by a space or
 * the end, whose class matches the reply's first digit (RFC 2034 section
 * 4). Returns its length, 0 when there is none.
 */
static size_t
enh_code(const char *text, size_t len, int code)
{
	size_t i = 0;

	if (len < 5 || text[0] != (char)('0' + code / 100) ||
	    (text[0] != '2' && text[0] != '4' && text[0] != '5') || text[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t start = i;

		while (i < len && is_digit(text[i]) && i - start < 4)
			i++;
		if (i == start || i - start > 3)
			return 0;
		if (part == 0) {
			if (i >= len || text[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && text[i] != ' ')
		return 0;
	return i;
}

void
smtp_reply_init(struct smtp_reply_parser *p)
{
	memset(p, 0, sizeof(*p));
}

/* Appends a line's text to the reply's, joined by "; ", sanitized and truncated. */
static void
reply_add_text(struct smtp_reply_parser *p, const char *text, size_t len)
{
	struct smtp_reply *rep = &p->rep;
	size_t room;

	if (len == 0)
		return;
	if (p->textlen > 0) {
		if (p->textlen + 3 >= sizeof(rep->text))
			return;
		memcpy(rep->text + p->textlen, "; ", 3);
		p->textlen += 2;
	}
	room = sizeof(rep->text) - p->textlen;
	p->textlen += util_sanitize(rep->text + p->textlen, room, text, len);
}

int
smtp_reply_feed(struct smtp_reply_parser *p, const char *line, size_t len,
		const char **ret_text, size_t *ret_len)
{
	const char *text;
	size_t tlen, el;
	bool last;
	int code;

	if (p->done)
		return -EPROTO;
	if (len > SMTP_LINE_MAX || p->nlines >= SMTP_REPLY_LINES)
		return -E2BIG;
	/* RFC 5321 section 4.2: the first digit 2-5, the second 0-5. */
	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' ||
	    !is_digit(line[2]) || (len > 3 && line[3] != ' ' && line[3] != '-'))
		return -EPROTO;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (p->nlines > 0 && code != p->rep.code)
		return -EPROTO;
	p->rep.code = code;
	last = len == 3 || line[3] == ' ';
	text = len > 3 ? line + 4 : line + 3;
	tlen = len > 3 ? len - 4 : 0;
	if (ret_text)
		*ret_text = text;
	if (ret_len)
		*ret_len = tlen;
	/* Each line repeats the enhanced code (RFC 2034 section 4): kept once. */
	el = enh_code(text, tlen, code);
	if (el > 0 && p->nlines == 0) {
		memcpy(p->rep.enh, text, el);
		p->rep.enh[el] = '\0';
	}
	if (el > 0 && strlen(p->rep.enh) == el && memcmp(p->rep.enh, text, el) == 0) {
		text += el;
		tlen -= el;
		while (tlen > 0 && *text == ' ') {
			text++;
			tlen--;
		}
	}
	reply_add_text(p, text, tlen);
	p->nlines++;
	p->done = last;
	return last ? 1 : 0;
}

/* ---- EHLO keywords -------------------------------------------------------- */

/* Adds one SASL mechanism name (RFC 4422 section 3.1 characters only), upper-cased, once. */
static void
caps_add_mech(struct smtp_caps *caps, const char *name, size_t n)
{
	char up[SMTP_MECH_MAX + 1];
	size_t used = strlen(caps->sasl);
	const char *p;

	if (n == 0 || n > SMTP_MECH_MAX)
		return;
	for (size_t k = 0; k < n; k++) {
		char ch = name[k];

		if (ch >= 'a' && ch <= 'z')
			ch = (char)(ch - 'a' + 'A');
		if (!((ch >= 'A' && ch <= 'Z') || is_digit(ch) || ch == '-' || ch == '_'))
			return;
		up[k] = ch;
	}
	up[n] = '\0';
	for (p = caps->sasl; (p = strstr(p, up)) != NULL; p++)
		if ((p == caps->sasl || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return;
	if (used + n + 2 > sizeof(caps->sasl))
		return;
	if (used > 0)
		caps->sasl[used++] = ' ';
	memcpy(caps->sasl + used, up, n + 1);
}

static void
caps_add_mechs(struct smtp_caps *caps, const char *args, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t start;

		while (i < len && args[i] == ' ')
			i++;
		start = i;
		while (i < len && args[i] != ' ')
			i++;
		caps_add_mech(caps, args + start, i - start);
	}
}

/* SIZE's argument (RFC 1870 section 4): decimal octets; anything else counts as none. */
static uint64_t
size_arg(const char *args, size_t len)
{
	size_t i = 0, end;
	uint64_t v;

	while (i < len && args[i] == ' ')
		i++;
	for (end = i; end < len && args[end] != ' '; end++)
		;
	return util_parse_u64(args + i, end - i, &v) == 0 ? v : 0;
}

void
smtp_ehlo_line(struct smtp_caps *caps, const char *text, size_t len)
{
	static const struct {
		const char *kw;
		size_t off;
	} flags[] = {
		{ "PIPELINING", offsetof(struct smtp_caps, pipelining) },
		{ "STARTTLS", offsetof(struct smtp_caps, starttls) },
		{ "8BITMIME", offsetof(struct smtp_caps, eightbitmime) },
		{ "SMTPUTF8", offsetof(struct smtp_caps, smtputf8) },
		{ "ENHANCEDSTATUSCODES", offsetof(struct smtp_caps, enhancedstatuscodes) },
	};
	const char *sp = memchr(text, ' ', len);
	size_t kl = sp ? (size_t)(sp - text) : len;

	/* The pre-RFC 2554 form some servers still send: "AUTH=LOGIN PLAIN". */
	if (kl > 5 && strncasecmp(text, "AUTH=", 5) == 0) {
		caps_add_mechs(caps, text + 5, len - 5);
		return;
	}
	if (kl == 4 && strncasecmp(text, "AUTH", 4) == 0) {
		caps_add_mechs(caps, text + kl, len - kl);
		return;
	}
	if (kl == 4 && strncasecmp(text, "SIZE", 4) == 0) {
		caps->size = true;
		caps->size_max = size_arg(text + kl, len - kl);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++)
		if (strlen(flags[i].kw) == kl && strncasecmp(text, flags[i].kw, kl) == 0)
			*(bool *)((char *)caps + flags[i].off) = true;
}

/* ---- the DATA encoder ------------------------------------------------------ */

void
smtp_dot_init(struct smtp_dot *d)
{
	d->bol = true;
	d->cr = false;
}

size_t
smtp_dot_encode(struct smtp_dot *d, const char *in, size_t len, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char ch = in[i];

		if (ch == '\n') {
			/* A CR already written makes this a CRLF; else one is added. */
			if (!d->cr)
				out[o++] = '\r';
			out[o++] = '\n';
			d->bol = true;
			d->cr = false;
			continue;
		}
		/* RFC 5321 section 4.5.2: a line starting with "." gets another. */
		if (d->bol && ch == '.')
			out[o++] = '.';
		out[o++] = ch;
		d->bol = false;
		d->cr = ch == '\r';
	}
	return o;
}

size_t
smtp_dot_finish(struct smtp_dot *d, char *out)
{
	size_t o = 0;

	/* A last line without its end gets one, so the dot stands on its own line. */
	if (!d->bol) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	d->bol = true;
	d->cr = false;
	return o + 3;
}

/* ---- commands and replies ------------------------------------------------- */

/* Queues one command line; the trace shows "***" from redact_from on. */
static int
send_line(struct smtp *s, const char *line, size_t len, size_t redact_from, struct mp_err *err)
{
	int r;

	log_trace("C", line, len, redact_from);
	r = conn_write(s->c, line, len, err);
	if (r < 0)
		return r;
	return conn_write(s->c, "\r\n", 2, err);
}

/* Queues a command without a secret. */
static int MP_PRINTF(3, 4)
send_cmd(struct smtp *s, struct mp_err *err, const char *fmt, ...)
{
	char line[SMTP_CMD_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return mp_err_set(err, -EINVAL, MP_EX_DATAERR, "SMTP command too long");
	return send_line(s, line, (size_t)n, SIZE_MAX, err);
}

/* The server's words for err->srv: the enhanced code first, then the text. */
static int
reply_srv(const struct smtp_reply *rep, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s%s%s", rep->enh, rep->enh[0] ? " " : "", rep->text);

	return n < 0 ? 0 : (size_t)n >= size ? (int)size - 1 : n;
}

/*
 * Records an error with the reply's text; a failed session step also
 * marks the session unusable (done by the callers through settle()).
 */
static int MP_PRINTF(5, 6)
reply_error(const struct smtp_reply *rep, int code, enum mp_exit ex, struct mp_err *err,
	    const char *fmt, ...)
{
	char srv[sizeof(rep->enh) + sizeof(rep->text) + 2];
	char msg[400];
	int n = reply_srv(rep, srv, sizeof(srv));
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return mp_err_set_srv(err, code, ex, srv, (size_t)n, "%s (%d)", msg, rep->code);
}

/*
 * Reads one whole reply into *rep; with caps, every line after the first
 * is an EHLO keyword line; with raw (SMTP_LINE_MAX + 1 bytes), the last
 * line's text is copied there as it came (a SASL challenge, which rep's
 * sanitized and truncated text cannot carry). Returns the reply code. A
 * 421 (RFC 5321 section 3.8: the server is closing) is -ECONNRESET,
 * except for the greeting, which the caller judges.
 */
static int
read_reply_raw(struct smtp *s, struct smtp_reply *rep, struct smtp_caps *caps, char *raw,
	       size_t *raw_len, struct mp_err *err)
{
	struct smtp_reply_parser p;
	const char *line, *text;
	size_t len, tlen;
	int r;

	smtp_reply_init(&p);
	do {
		r = conn_read_line(s->c, &line, &len, err);
		if (r < 0)
			return r;
		log_trace("S", line, len, SIZE_MAX);
		r = smtp_reply_feed(&p, line, len, &text, &tlen);
		if (r == -E2BIG)
			return mp_err_set(err, r, MP_EX_PROTOCOL,
					  "SMTP reply in %s state over %d lines or %d bytes a line",
					  smtp_state_to_string(s->state), SMTP_REPLY_LINES,
					  SMTP_LINE_MAX);
		if (r < 0)
			return mp_err_set_srv(err, r, MP_EX_PROTOCOL, line, len,
					      "malformed SMTP reply in %s state",
					      smtp_state_to_string(s->state));
		if (caps && p.nlines > 1)
			smtp_ehlo_line(caps, text, tlen);
		if (raw) {
			memcpy(raw, text, tlen);
			raw[tlen] = '\0';
			*raw_len = tlen;
		}
	} while (r == 0);
	*rep = p.rep;
	if (rep->code == 421 && s->state != SMTP_ST_GREETING)
		return reply_error(rep, -ECONNRESET, MP_EX_TEMPFAIL, err,
				   "server closing the connection in %s state",
				   smtp_state_to_string(s->state));
	return rep->code;
}

static int
read_reply(struct smtp *s, struct smtp_reply *rep, struct smtp_caps *caps, struct mp_err *err)
{
	return read_reply_raw(s, rep, caps, NULL, NULL, err);
}

/* Sends what is queued and reads the reply. */
static int
flush_reply(struct smtp *s, struct smtp_reply *rep, struct smtp_caps *caps, struct mp_err *err)
{
	int r = conn_flush(s->c, err);

	return r < 0 ? r : read_reply(s, rep, caps, err);
}

/*
 * After a transport or protocol error the replies can no longer be
 * trusted to line up with our commands. A refusal (-EACCES, -EAGAIN,
 * -EPERM and the checks done before sending) leaves the session in step.
 */
static int
settle(struct smtp *s, int r)
{
	if (r < 0 && r != -EACCES && r != -EAGAIN && r != -EPERM && r != -EINVAL &&
	    r != -EMSGSIZE && r != -EILSEQ)
		s->broken = true;
	return r;
}

static int
check_usable(struct smtp *s, struct mp_err *err)
{
	if (s->broken)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "SMTP session unusable after an earlier error");
	return 0;
}

/* ---- opening ---------------------------------------------------------------- */

/*
 * EHLO (RFC 5321 section 4.1.1.1), what was known before forgotten first;
 * HELO only when EHLO is not known (500/502), and then no extension.
 */
static int
hello(struct smtp *s, const char *name, struct mp_err *err)
{
	struct smtp_reply rep;
	int r;

	memset(&s->caps, 0, sizeof(s->caps));
	s->state = SMTP_ST_EHLO;
	r = send_cmd(s, err, "EHLO %s", name);
	if (r == 0)
		r = flush_reply(s, &rep, &s->caps, err);
	if (r < 0)
		return r;
	if (r / 100 == 2)
		return 0;
	memset(&s->caps, 0, sizeof(s->caps));
	if (r != 500 && r != 502)
		return reply_error(&rep, -EPROTO, MP_EX_PROTOCOL, err, "server refused EHLO");
	s->state = SMTP_ST_HELO;
	r = send_cmd(s, err, "HELO %s", name);
	if (r == 0)
		r = flush_reply(s, &rep, NULL, err);
	if (r < 0)
		return r;
	if (r / 100 != 2)
		return reply_error(&rep, -EPROTO, MP_EX_PROTOCOL, err, "server refused HELO");
	return 0;
}

/*
 * STARTTLS (RFC 3207 section 4). Mandatory once asked for: any outcome but
 * 220 ends the session before a credential is sent. conn_starttls()
 * refuses bytes that followed the reply: they came before the handshake.
 * Then EHLO again, trusting nothing learned in clear (section 4.2).
 */
static int
starttls(struct smtp *s, const char *name, struct mp_err *err)
{
	struct smtp_reply rep;
	int r;

	if (!s->caps.starttls)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server does not offer STARTTLS; "
				  "refusing to continue without TLS");
	s->state = SMTP_ST_STARTTLS;
	r = send_cmd(s, err, "STARTTLS");
	if (r == 0)
		r = flush_reply(s, &rep, NULL, err);
	if (r < 0)
		return r;
	if (r != 220)
		return reply_error(&rep, -EPROTO, MP_EX_PROTOCOL, err,
				   "server refused STARTTLS; refusing to continue without TLS");
	r = conn_starttls(s->c, err);
	if (r < 0)
		return r;
	/* Nothing said before the handshake is believed after it (DESIGN, TLS rules). */
	s->greeting[0] = '\0';
	return hello(s, name, err);
}

/* A host name or address literal, sent on the EHLO line: nothing that could end or split it. */
static bool
ehlo_name_ok(const char *name)
{
	if (!name || !name[0] || strlen(name) > 255)
		return false;
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return false;
	return true;
}

static int
greeting(struct smtp *s, struct mp_err *err)
{
	struct smtp_reply rep;
	int r;

	s->state = SMTP_ST_GREETING;
	r = read_reply(s, &rep, NULL, err);
	if (r < 0)
		return r;
	if (r == 220) {
		memcpy(s->greeting, rep.text, sizeof(s->greeting));
		return 0;
	}
	if (r / 100 == 4 || r / 100 == 5) {
		/* RFC 5321 section 3.1: after a 554 greeting the server waits for QUIT. */
		if (r == 554 && send_cmd(s, NULL, "QUIT") == 0 && conn_flush(s->c, NULL) < 0)
			log_debug("QUIT after the 554 greeting not sent");
		return reply_error(&rep, -ECONNREFUSED, MP_EX_TEMPFAIL, err,
				   "server refused the session");
	}
	return reply_error(&rep, -EPROTO, MP_EX_PROTOCOL, err, "unexpected SMTP greeting");
}

int
smtp_open(struct conn *c, const char *ehlo_name, bool tls, struct smtp **ret, struct mp_err *err)
{
	struct smtp *s;
	int r;

	if (!ehlo_name_ok(ehlo_name)) {
		conn_close(c);
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "invalid EHLO name");
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		conn_close(c);
		return mp_err_oom(err);
	}
	s->c = c;
	r = greeting(s, err);
	if (r == 0)
		r = hello(s, ehlo_name, err);
	if (r == 0 && tls)
		r = starttls(s, ehlo_name, err);
	if (r < 0) {
		smtp_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

const struct smtp_caps *
smtp_caps(const struct smtp *s)
{
	return &s->caps;
}

const char *
smtp_greeting(const struct smtp *s)
{
	return s->greeting;
}

void
smtp_free(struct smtp *s)
{
	if (!s)
		return;
	conn_close(s->c);
	free(s->obuf);
	free(s);
}

/* ---- authentication --------------------------------------------------------- */

/* The reply that ends an exchange (RFC 4954 section 6): 235, else refused or out of step. */
static int
auth_result(const struct smtp_reply *rep, struct mp_err *err)
{
	if (rep->code == 235)
		return 0;
	if (rep->code / 100 == 5)
		return reply_error(rep, -EACCES, MP_EX_NOPERM, err, "authentication refused");
	if (rep->code / 100 == 4)
		return reply_error(rep, -EAGAIN, MP_EX_TEMPFAIL, err,
				   "authentication failed for now; will retry");
	return reply_error(rep, -EPROTO, MP_EX_PROTOCOL, err, "unexpected reply to AUTH");
}

/*
 * A step failed: cancel with "*" (RFC 4954 section 4), read the final
 * reply, and report the step's error, whatever that reply says.
 */
static int
auth_cancel(struct smtp *s, struct sasl_session *cl, int step, struct mp_err *err)
{
	struct smtp_reply rep;
	int r = send_line(s, "*", 1, SIZE_MAX, err);

	if (r == 0)
		r = flush_reply(s, &rep, NULL, err);
	if (r < 0)
		return r;
	if (step == -ENOMEM)
		return mp_err_oom(err);
	/*
	 * A 334 to the cancel leaves us out of step, a 235 logged us in after
	 * all: either way settle() marks the session.
	 */
	if (r == 334 || r == 235)
		step = -EPROTO;
	return mp_err_set(err, step, step == -EACCES ? MP_EX_NOPERM :
			  step == -EINVAL ? MP_EX_CONFIG : MP_EX_PROTOCOL,
			  "%s authentication failed: %s",
			  sasl_mech_to_string(sasl_session_mech(cl)), sasl_session_error(cl));
}

/*
 * The reply that ends the exchange. 235: the mechanism decides whether
 * the server proved itself. A 5xx quotes the error report the server
 * sent in a challenge (RFC 7628 section 3.2.2), which names the failure
 * where the reply says little.
 */
static int
auth_end(struct sasl_session *cl, const struct smtp_reply *rep, bool answered,
	 struct mp_err *err)
{
	const char *name = sasl_mech_to_string(sasl_session_mech(cl));
	const char *detail = sasl_session_detail(cl);

	if (rep->code == 235 && !answered)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "server accepted AUTH %s without a response", name);
	if (rep->code == 235 && sasl_session_finish(cl) < 0)
		return mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				  "%s: %s", name, sasl_session_error(cl));
	if (rep->code / 100 == 5 && detail[0])
		return mp_err_set_srv(err, -EACCES, MP_EX_NOPERM, detail, strlen(detail),
				      "authentication refused (%d)", rep->code);
	return auth_result(rep, err);
}

/*
 * Queues "AUTH mech", with the initial response when there is one and the
 * line fits in 512 octets (RFC 4954 section 4, RFC 5321 section 4.5.3.1.4;
 * an empty one is "="). Sets *ret_sent when it went on the line.
 */
static int
auth_command(struct smtp *s, const char *name, const char *ir, bool *ret_sent,
	     struct mp_err *err)
{
	size_t nl = strlen(name), rl = ir ? strlen(ir) : 0, ll = 5 + nl + 1 + (rl ? rl : 1);
	char *line;
	int r;

	*ret_sent = false;
	if (!ir || ll + 2 > SMTP_AUTH_LINE)
		return send_cmd(s, err, "AUTH %s", name);
	line = malloc(ll + 1);
	if (!line)
		return mp_err_oom(err);
	snprintf(line, ll + 1, "AUTH %s %s", name, rl ? ir : "=");
	r = send_line(s, line, ll, 6 + nl, err);
	explicit_bzero(line, ll);
	free(line);
	*ret_sent = true;
	return r;
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
 * The SASL exchange (RFC 4954): the engine only carries base64 lines
 * between cl and the server. An initial response too long for the AUTH
 * line answers the server's first (empty) 334; every other 334 goes to
 * sasl_session_step().
 */
static int
auth_sasl(struct smtp *s, struct sasl_session *cl, struct mp_err *err)
{
	const char *name = sasl_mech_to_string(sasl_session_mech(cl));
	char *pending = NULL, *resp = NULL, *chal;
	struct smtp_reply rep;
	size_t clen = 0;
	bool answered;
	int r, rounds = 0;

	chal = malloc(SMTP_LINE_MAX + 1);
	if (!chal)
		return mp_err_oom(err);
	r = sasl_session_initial(cl, &pending);
	if (r < 0) {
		free(chal);
		return initial_failed(cl, r, err);
	}
	r = auth_command(s, name, pending, &answered, err);
	if (answered) {
		sasl_free(pending);
		pending = NULL;
	}
	while (r == 0) {
		r = conn_flush(s->c, err);
		if (r == 0)
			r = read_reply_raw(s, &rep, NULL, chal, &clen, err);
		if (r < 0)
			break;
		if (r != 334) {
			r = auth_end(cl, &rep, answered, err);
			break;
		}
		/* RFC 4422 section 3: no mechanism needs this many rounds. */
		if (++rounds > 16) {
			r = mp_err_set(err, -EPROTO, MP_EX_PROTOCOL,
				       "server kept challenging AUTH %s", name);
			break;
		}
		if (!pending) {
			r = sasl_session_step(cl, chal, clen, &resp);
			if (r < 0) {
				r = auth_cancel(s, cl, r, err);
				break;
			}
		}
		r = send_line(s, pending ? pending : resp, strlen(pending ? pending : resp), 0, err);
		sasl_free(pending);
		sasl_free(resp);
		pending = resp = NULL;
		answered = true;
	}
	sasl_free(pending);
	free(chal);
	return r;
}

int
smtp_auth(struct smtp *s, struct sasl_session *cl, const char *user, const char *secret,
	  struct mp_err *err)
{
	int r = check_usable(s, err);

	(void)user;
	(void)secret;
	if (r < 0)
		return r;
	if (!cl)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG,
				  "SMTP has no plain login; use a SASL mechanism");
	s->state = SMTP_ST_AUTH;
	return settle(s, auth_sasl(s, cl, err));
}

/* ---- one transaction ---------------------------------------------------------- */

/* A path we can put between <> on a command line: no control byte, space, <, > or overlong. */
static bool
path_ok(const char *a, bool *nonascii)
{
	size_t n = 0;

	if (!a)
		return false;
	for (; a[n]; n++) {
		unsigned char ch = (unsigned char)a[n];

		if (ch < 0x21 || ch == 0x7f || ch == '<' || ch == '>')
			return false;
		if (ch >= 0x80)
			*nonascii = true;
	}
	return n <= SMTP_ADDR_MAX;
}

/*
 * The checks made before anything is sent: the envelope is well formed,
 * the message fits SIZE (RFC 1870 section 6.1) and the server can carry
 * its 8-bit or UTF-8 content. *ret_utf8: the SMTPUTF8 parameter is needed.
 */
static int
check_envelope(struct smtp *s, const struct smtp_envelope *env, bool *ret_utf8, struct mp_err *err)
{
	bool nonascii = false;

	if (!env->rcpts || env->nrcpts == 0)
		return mp_err_set(err, -EINVAL, MP_EX_DATAERR, "no recipient");
	if (!path_ok(env->from, &nonascii))
		return mp_err_set(err, -EINVAL, MP_EX_DATAERR, "invalid sender address");
	for (size_t i = 0; i < env->nrcpts; i++)
		if (!path_ok(env->rcpts[i], &nonascii) || !env->rcpts[i][0])
			return mp_err_set(err, -EINVAL, MP_EX_DATAERR,
					  "invalid recipient address (number %zu)", i + 1);
	if (s->caps.size && s->caps.size_max > 0 && env->size > s->caps.size_max)
		return mp_err_set(err, -EMSGSIZE, MP_EX_DATAERR,
				  "message of %" PRIu64 " bytes over the server's limit of %"
				  PRIu64,
				  env->size, s->caps.size_max);
	/* Addresses beyond ASCII need SMTPUTF8 whatever the caller said (RFC 6531 section 3.3). */
	if ((env->utf8 || nonascii) && !s->caps.smtputf8)
		return mp_err_set(err, -EILSEQ, MP_EX_DATAERR,
				  "message needs SMTPUTF8, which the server does not offer");
	if (env->eightbit && !s->caps.eightbitmime && !s->caps.smtputf8)
		return mp_err_set(err, -EILSEQ, MP_EX_DATAERR,
				  "8-bit message and the server offers neither 8BITMIME "
				  "nor SMTPUTF8");
	/* A server with SMTPUTF8 takes 8-bit data under it (RFC 6531 section 3.1 item 8). */
	*ret_utf8 = env->utf8 || nonascii || (env->eightbit && !s->caps.eightbitmime);
	return 0;
}

/* Queues command k of the transaction: 0 MAIL, 1..nrcpts RCPT, nrcpts + 1 DATA. */
static int
queue_step(struct smtp *s, const struct smtp_envelope *env, bool utf8, size_t k,
	   struct mp_err *err)
{
	char size[32] = "";

	if (k == 0) {
		if (s->caps.size)
			snprintf(size, sizeof(size), " SIZE=%" PRIu64, env->size);
		return send_cmd(s, err, "MAIL FROM:<%s>%s%s%s", env->from, size,
				env->eightbit && s->caps.eightbitmime ? " BODY=8BITMIME" : "",
				utf8 ? " SMTPUTF8" : "");
	}
	if (k <= env->nrcpts)
		return send_cmd(s, err, "RCPT TO:<%s>", env->rcpts[k - 1]);
	return send_cmd(s, err, "DATA");
}

/* Where the reply to command k goes, and the state it is read in. */
static struct smtp_reply *
step_reply(struct smtp *s, const struct smtp_envelope *env, struct smtp_result *res, size_t k,
	   struct smtp_reply *scratch)
{
	if (k == 0) {
		s->state = SMTP_ST_MAIL;
		return &res->mail;
	}
	if (k <= env->nrcpts) {
		s->state = SMTP_ST_RCPT;
		return res->rcpt ? &res->rcpt[k - 1] : scratch;
	}
	s->state = SMTP_ST_DATA;
	return &res->data;
}

/*
 * MAIL, the RCPTs and DATA, with their replies. With PIPELINING they go in
 * groups of SMTP_WINDOW commands, one write each, and every reply of a
 * group is read in order (RFC 2920 section 3.1: all of them must be
 * checked); without, one at a time, stopping at a refused MAIL or before
 * DATA when no recipient was accepted.
 */
static int
envelope(struct smtp *s, const struct smtp_envelope *env, bool utf8, struct smtp_result *res,
	 struct mp_err *err)
{
	size_t total = env->nrcpts + 2, window = s->caps.pipelining ? SMTP_WINDOW : 1;
	size_t sent = 0, got = 0;
	struct smtp_reply scratch;
	bool stop = false;
	int r;

	while (got < sent || (!stop && sent < total)) {
		struct smtp_reply *rep;

		while (!stop && sent < total && sent - got < window) {
			r = queue_step(s, env, utf8, sent, err);
			if (r < 0)
				return r;
			sent++;
		}
		rep = step_reply(s, env, res, got, &scratch);
		r = flush_reply(s, rep, NULL, err);
		if (r < 0)
			return r;
		if (got >= 1 && got <= env->nrcpts && r / 100 == 2)
			res->naccepted++;
		/* Nothing more is sent once the outcome is known to be a refusal. */
		if ((got == 0 && r / 100 != 2) || (got == env->nrcpts && res->naccepted == 0))
			stop = true;
		got++;
	}
	return 0;
}

static int
rset(struct smtp *s, struct mp_err *err)
{
	struct smtp_reply rep;
	int r;

	s->state = SMTP_ST_RSET;
	r = send_cmd(s, err, "RSET");
	if (r == 0)
		r = flush_reply(s, &rep, NULL, err);
	if (r >= 0 && r / 100 != 2)
		r = reply_error(&rep, -EPROTO, MP_EX_PROTOCOL, err, "server refused RSET");
	return r < 0 ? r : 0;
}

/* The class of a refusal: 5xx permanent, 4xx for later, anything else out of step. */
static int
refusal(const struct smtp_reply *rep, struct mp_err *err, const char *what)
{
	if (rep->code / 100 == 5)
		return reply_error(rep, -EPERM, MP_EX_DATAERR, err, "server refused %s", what);
	if (rep->code / 100 == 4)
		return reply_error(rep, -EAGAIN, MP_EX_TEMPFAIL, err,
				   "server refused %s for now; will retry", what);
	return reply_error(rep, -EPROTO, MP_EX_PROTOCOL, err, "unexpected reply to %s", what);
}

/* Every recipient refused: temporary only when none was refused for good. */
static int
all_refused(const struct smtp_envelope *env, const struct smtp_result *res, struct mp_err *err)
{
	const struct smtp_reply *last = NULL;
	bool perm = false;

	for (size_t i = 0; res->rcpt && i < env->nrcpts; i++) {
		if (res->rcpt[i].code / 100 == 5)
			perm = true;
		if (res->rcpt[i].code && (!last || res->rcpt[i].code / 100 == 5))
			last = &res->rcpt[i];
	}
	if (!last)
		return mp_err_set(err, -EPERM, MP_EX_DATAERR, "server refused every recipient");
	if (perm)
		return reply_error(last, -EPERM, MP_EX_DATAERR, err,
				   "server refused every recipient");
	return reply_error(last, -EAGAIN, MP_EX_TEMPFAIL, err,
			   "server refused every recipient for now; will retry");
}

/*
 * After a refused envelope: the transaction is ended, so the session
 * stays usable. A DATA that got 354 anyway is answered with the lone dot
 * RFC 2920 section 3.1 asks for (no recipient can receive it), else RSET.
 * The refusal, already recorded, is what the caller learns; a failed
 * clean-up only makes the session unusable.
 */
static int
end_refused(struct smtp *s, struct smtp_result *res, int refused, struct mp_err *err)
{
	struct smtp_reply rep;
	int r;

	if (res->data.code == 354) {
		s->state = SMTP_ST_DOT;
		r = send_line(s, ".", 1, SIZE_MAX, err);
		if (r == 0)
			r = flush_reply(s, &rep, NULL, err);
	} else {
		r = rset(s, err);
	}
	if (r < 0)
		s->broken = true;
	return settle(s, refused);
}

/* Streams the message from read, encoded, in large writes; then the final dot. */
static int
body(struct smtp *s, smtp_read_fn read, void *ud, struct smtp_result *res, struct mp_err *err)
{
	struct smtp_dot d;
	size_t n;
	int r;

	if (!s->obuf) {
		s->obuf = malloc(2 * SMTP_CHUNK);
		if (!s->obuf)
			return mp_err_oom(err);
	}
	s->state = SMTP_ST_BODY;
	smtp_dot_init(&d);
	for (;;) {
		const char *data;
		size_t len;

		r = read(ud, &data, &len, err);
		if (r < 0)
			return r;
		if (len == 0)
			break;
		while (len > 0) {
			size_t part = len < SMTP_CHUNK ? len : SMTP_CHUNK;

			n = smtp_dot_encode(&d, data, part, s->obuf);
			r = conn_write(s->c, s->obuf, n, err);
			if (r < 0)
				return r;
			data += part;
			len -= part;
		}
	}
	log_trace("C", "[message]", 9, SIZE_MAX);
	n = smtp_dot_finish(&d, s->obuf);
	s->state = SMTP_ST_DOT;
	/* From here the server may take the message, whatever we learn next. */
	res->dot_sent = true;
	r = conn_write(s->c, s->obuf, n, err);
	if (r == 0)
		r = flush_reply(s, &res->final, NULL, err);
	if (r < 0)
		return r;
	if (r / 100 == 2)
		return 0;
	return refusal(&res->final, err, "the message");
}

static void
result_clear(const struct smtp_envelope *env, struct smtp_result *res)
{
	struct smtp_reply *rcpt = res->rcpt;

	memset(res, 0, sizeof(*res));
	res->rcpt = rcpt;
	if (rcpt)
		memset(rcpt, 0, env->nrcpts * sizeof(*rcpt));
}

int
smtp_send(struct smtp *s, const struct smtp_envelope *env, smtp_read_fn read, void *ud,
	  struct smtp_result *res, struct mp_err *err)
{
	bool utf8 = false;
	int r;

	result_clear(env, res);
	r = check_usable(s, err);
	if (r == 0)
		r = check_envelope(s, env, &utf8, err);
	if (r < 0)
		return r;
	r = envelope(s, env, utf8, res, err);
	if (r < 0)
		return settle(s, r);
	if (res->mail.code / 100 != 2)
		return end_refused(s, res, refusal(&res->mail, err, "the sender (MAIL FROM)"), err);
	if (res->naccepted == 0)
		return end_refused(s, res, all_refused(env, res, err), err);
	if (res->data.code != 354)
		return end_refused(s, res, refusal(&res->data, err, "DATA"), err);
	r = body(s, read, ud, res, err);
	/* The read callback failing mid-DATA leaves the transaction cut: unusable. */
	if (r < 0 && s->state == SMTP_ST_BODY)
		s->broken = true;
	return settle(s, r);
}

int
smtp_quit(struct smtp *s, struct mp_err *err)
{
	struct smtp_reply rep;
	int r = check_usable(s, err);

	if (r < 0)
		return r;
	s->state = SMTP_ST_QUIT;
	r = send_cmd(s, err, "QUIT");
	if (r == 0)
		r = flush_reply(s, &rep, NULL, err);
	/* Whatever the reply, the session is over. */
	s->broken = true;
	return r < 0 ? r : 0;
}
