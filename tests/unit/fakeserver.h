/*
 * A scripted fake server for the unit tests (the POP3 and IMAP engines,
 * conn): forked on 127.0.0.1, it plays a script step by step, checking
 * every line the client sends against it. When the script ends it fails if
 * the client sends anything more, so a test also proves what was NOT sent.
 * The child exits with 0 when the client followed the script exactly, and
 * fake_wait() returns that verdict.
 */
#ifndef MAILPULL_TESTS_FAKESERVER_H
#define MAILPULL_TESTS_FAKESERVER_H

#include <stddef.h>
#include <sys/types.h>

#include "mailpull/conn.h"

/*
 * Computes the server's answer to the client's line (the text to send,
 * CRLF included), or NULL when the line is wrong (the server then fails).
 * Runs in the server's process: state kept between calls stays there.
 */
typedef const char *(*fake_fn)(const char *line);

struct fake_step {
	char dir;          /* 'S' send text, 'C' expect this line (any line when text
			      is NULL), 'c' expect a line starting with text, 'Q' expect
			      silence, 'P' pause, 'G' send n generated body bytes,
			      'X' close our side, 'W' sleep n ms, 'F' expect a line starting
			      with text (any when NULL) and send what fn makes of it */
	const char *text;
	size_t n;
	fake_fn fn;
};

#define S(t) { 'S', t, 0 }
#define C(t) { 'C', t, 0 }
#define QUIET { 'Q', NULL, 0 }
#define PAUSE { 'P', NULL, 0 }
/* n bytes of "line NNNNNNN\r\n" lines, cut at n. */
#define GEN(n) { 'G', NULL, n }
/* n bytes of the character c[0]. */
#define FILL(c, n) { 'G', c, n }
/* Half-close: the client sees the end, the server still sees what it sends. */
#define CLOSE { 'X', NULL, 0 }
#define SLEEP(ms) { 'W', NULL, ms }
#define END { 0, NULL, 0 }
/* A client line (starting with t, when t is not NULL), answered with fn(line). */
#define ANSWER(t, f) { 'F', t, 0, f }

/*
 * The server side of SCRAM (RFC 5802) for the scripts, set before the
 * server is started. fake_scram_first() takes the client-first-message
 * (the last word of the line, base64) and answers with the
 * server-first-message; fake_scram_final() checks the client-final's
 * channel binding and proof and answers with the server-final-message
 * (v=), both base64 after prefix ("+ " or "334 ").
 */
struct fake_scram {
	const char *prefix;        /* before the base64 challenge: "+ ", "334 " */
	const char *user;
	const char *password;      /* as the server hashes it (no SASLprep here) */
	bool sha1;                 /* SCRAM-SHA-1, else SCRAM-SHA-256 */
	unsigned iter;             /* 0: 4096 */
	const char *gs2;           /* the GS2 header expected: "n,,", "y,,", "p=tls-exporter,," */
	const unsigned char *cb;   /* channel binding data for "p=", else NULL */
	size_t cb_len;
	bool short_nonce;          /* answer with the client's nonce not extended */
	bool bad_signature;        /* a v= that is not the server signature */
};
extern struct fake_scram fake_scram;
const char *fake_scram_first(const char *line);
const char *fake_scram_final(const char *line);

struct fake {
	pid_t pid;
	unsigned port;
	int lfd;
};

/* Binds 127.0.0.1 on a free port (f->port), so a script can name the port. */
void fake_listen(struct fake *f);

/* Forks the server: it accepts one connection on f->lfd and plays script. */
void fake_run(struct fake *f, const struct fake_step *script);

/* fake_listen(), then fake_run(). */
void fake_start(struct fake *f, const struct fake_step *script);

/* The server's verdict: 0 when the client followed the script exactly. */
int fake_wait(struct fake *f);

/*
 * A conn to the fake server (plain TCP, max_line 8192), after clearing err;
 * asserts that the connection is made.
 */
struct conn *fake_connect(struct fake *f, unsigned timeout_ms, struct mp_err *err);

#endif
