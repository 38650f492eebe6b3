/*
 * The outbox: a Maildir whose new/ and cur/ hold the messages an account
 * is to send, whoever put them there (`mailpull sendmail`, a mail reader
 * saving into it). A message's name is its identity: the base name, before
 * any ":2," info. What `mailpull sendmail` knows beyond the message (the
 * recipients given as arguments, -f) is kept beside it in an envelope
 * file, DIR/envelopes/BASE, written and synced before the message is
 * published; a message without one is sent to the addresses in its To, Cc
 * and Bcc, from the account's `from` or its From address.
 *
 * The message is stored as written (LF line ends, Bcc included: the Sent
 * copy keeps it); what is transmitted is the same bytes without the Bcc
 * field, with CRLF line ends (the smtp engine adds them).
 *
 * Errors are negative errnos recorded in err: file system calls' errnos
 * with MP_EX_IOERR and the path (-ENOENT for a missing file is MP_EX_IOERR
 * too unless said otherwise), -ENOMEM (MP_EX_TEMPFAIL), -EBADMSG
 * (MP_EX_DATAERR) for a message or envelope that cannot be sent as it is.
 */
#ifndef MAILPULL_OUTBOX_H
#define MAILPULL_OUTBOX_H

#include "mailpull/common.h"
#include "mailpull/err.h"

/* Caps: on a header block, on a message queued or sent, on recipients. */
#define OUTBOX_HEAD_MAX ((size_t)1 << 20)
#define OUTBOX_MSG_MAX ((uint64_t)1 << 30)
#define OUTBOX_RCPT_MAX 1000

/* A message waiting in an outbox. */
struct outbox_item {
	char *base;                /* the unique name, before any ":2," */
	char *path;                /* where the file is now (new/ or cur/) */
};

/*
 * The messages in DIR's new/ and cur/, oldest first (by name, whose first
 * field is the time of queueing for Maildir names). A missing outbox holds
 * nothing. *ret is freed with outbox_items_free().
 * Errors: opendir()/readdir() errnos other than ENOENT, -ENOMEM.
 */
int outbox_list(const char *dir, struct outbox_item **ret, size_t *ret_n, struct mp_err *err) MP_WUR;
void outbox_items_free(struct outbox_item *v, size_t n);

/* What is known about a message's transmission. Strings are malloc'd. */
struct outbox_env {
	char *from;                /* envelope sender (-f), "" the null sender, NULL: decided at send time */
	char **rcpts;              /* forward paths, at least one, each once (addr.h's canonical form) */
	size_t nrcpts;
};

/*
 * Reads DIR/envelopes/BASE: "mailpull-envelope 1", then at most one "from
 * ADDR" line and one or more "rcpt ADDR" lines, every line ending in LF.
 * Returns 0 with *ret filled, or -ENOENT (not recorded) when the message
 * has no envelope. Errors: -EBADMSG (MP_EX_DATAERR: a damaged envelope:
 * anything else, a control byte or an address over ADDR_LEN_MAX, no
 * rcpt line, over OUTBOX_RCPT_MAX of them, a last line cut short),
 * open()/read() errnos (MP_EX_IOERR), -ENOMEM.
 */
int outbox_envelope_read(const char *dir, const char *base, struct outbox_env *ret,
			 struct mp_err *err) MP_WUR;
void outbox_env_free(struct outbox_env *e);

/*
 * A message's header facts, from one pass over the file. The header block
 * is the lines up to the first empty line, or up to the first line that is
 * neither a header field nor a field's continuation, or the whole file.
 */
struct outbox_scan {
	char *from_addr;           /* first address of From, NULL: none */
	char *message_id;          /* Message-ID's "<...>", NULL: none */
	char **rcpts;              /* addresses of To, Cc and Bcc, each once */
	size_t nrcpts;
	bool has_bcc;
	bool eightbit;             /* some byte over 127 */
	bool utf8;                 /* some byte over 127 in the header block or an address */
	bool has_nul;              /* a NUL byte: neither SMTP DATA nor an IMAP literal takes it */
	uint64_t size;             /* bytes of the file */
	uint64_t crlf_size;        /* the whole file with CRLF line ends (the Sent copy's APPEND) */
	uint64_t wire_size;        /* the transmitted form (no Bcc, CRLF; before dot-stuffing) */
};

/*
 * Scans the message in fd from its start (fd's offset is left at the end).
 * The sizes are exact: crlf_size counts each LF not preceded by CR as two
 * bytes and, for a non-empty file whose last byte is not LF, two more for
 * the CRLF the smtp engine (and an APPEND) adds at the end; wire_size is
 * the same count over what outbox_reader_read() gives without Bcc (whose
 * last byte is the file's, unless a Bcc field was the end of the file).
 * -EBADMSG for a header block over OUTBOX_HEAD_MAX, a message over
 * OUTBOX_MSG_MAX, a From, To, Cc or Bcc field that is not an address list
 * (addr.h), more than OUTBOX_RCPT_MAX addresses.
 * Errors: read() errnos (MP_EX_IOERR), -EBADMSG (MP_EX_DATAERR), -ENOMEM
 * (MP_EX_TEMPFAIL).
 */
int outbox_scan_fd(int fd, struct outbox_scan *ret, struct mp_err *err) MP_WUR;
void outbox_scan_free(struct outbox_scan *s);

/*
 * The transmitted form of the message in fd, read from its start: the
 * same bytes without any Bcc field (its continuation lines included).
 * outbox_reader_read() has the signature of smtp_read_fn (smtp.h); with
 * bcc true, the reader gives the whole file instead (the Sent copy).
 */
struct outbox_reader;
int outbox_reader_open(int fd, bool bcc, struct outbox_reader **ret, struct mp_err *err) MP_WUR;
int outbox_reader_read(void *reader, const char **ret_data, size_t *ret_len, struct mp_err *err);
void outbox_reader_free(struct outbox_reader *r);

/* The header block read from standard input by `mailpull sendmail`, and what it says. */
struct outbox_head {
	char *text;                /* the header block: its fields, then the empty line when there is one */
	size_t len;
	size_t fields_len;         /* text[0..fields_len) are the fields, text[fields_len..len) the empty line */
	char *from_addr;           /* first address of From, NULL: none */
	char **rcpts;              /* To, Cc and Bcc addresses, each once */
	size_t nrcpts;
	bool has_message_id, has_date, has_from;
	bool crlf;                 /* the first line ends in CRLF: fields added end so too */
	/*
	 * What was read past the header block: the first bytes of the body,
	 * and whether the input ended there (end of file, or a lone "."). With
	 * no empty line (fields_len == len) and !ended, the body starts with a
	 * line that is not a header field: outbox_queue() puts an empty line
	 * before it.
	 */
	char *rest;
	size_t restlen;
	bool ended;
};

/*
 * Reads the header block (as outbox_scan_fd() defines it; CRLF or LF) from
 * fd, in 64 KiB reads. dot_ends: a line holding a lone "." ends the
 * message (the sendmail default; -i and -oi turn it off).
 * Errors: -EBADMSG (MP_EX_DATAERR: over OUTBOX_HEAD_MAX, a NUL byte in
 * it, a From, To, Cc or Bcc field that is not an address list, more than
 * OUTBOX_RCPT_MAX addresses), read() errnos (MP_EX_IOERR), -ENOMEM.
 */
int outbox_head_read(int fd, bool dot_ends, struct outbox_head *ret, struct mp_err *err) MP_WUR;
void outbox_head_free(struct outbox_head *h);

struct outbox_queue_opts {
	const char *from;          /* -f, NULL: none (decided at send time) */
	const char *const *rcpts;  /* the arguments, each an address list */
	size_t nrcpts;
	bool from_headers;         /* -t: the To, Cc and Bcc addresses are recipients too */
	bool dot_ends;             /* as outbox_head_read() */
	const char *domain;        /* for a Message-ID it adds: the From address's domain, else the host name */
};

/*
 * Queues one message into the outbox DIR (created when missing): the
 * header block h (plus Message-ID and Date when missing, at the end of its
 * fields), then h->rest and the rest of fd (unless h->ended). The
 * recipients are the addresses of the arguments plus, with from_headers,
 * h's. The envelope, when there are arguments or -f, is DIR/envelopes/BASE:
 * "mailpull-envelope 1", "from ADDR" when -f was given (ADDR empty for the
 * null sender "<>"), a "rcpt ADDR" line each; it is written to BASE.tmp,
 * fsynced, renamed, and envelopes/ fsynced first; then the message is
 * written to tmp/, fsynced, renamed into new/, and new/ fsynced before
 * this returns: once it returns 0 the message is durable. Line ends are
 * kept as they came. *ret_base (may be NULL) gets the message's name.
 * Nothing is left behind on error.
 * Errors: -EBADMSG (MP_EX_DATAERR: no recipient at all, a message over
 * OUTBOX_MSG_MAX, over OUTBOX_RCPT_MAX recipients, an argument or -f that
 * is not an address), file system errnos (MP_EX_IOERR, the path named),
 * -ENOMEM (MP_EX_TEMPFAIL).
 */
int outbox_queue(const char *dir, const struct outbox_head *h, int fd,
		 const struct outbox_queue_opts *o, char **ret_base, struct mp_err *err) MP_WUR;

/*
 * Removes a sent message and its envelope, then fsyncs the directories.
 * A file already gone is not an error. Errors: unlink()/fsync() errnos.
 */
int outbox_remove(const char *dir, const struct outbox_item *it, struct mp_err *err) MP_WUR;

/*
 * Removes envelope files whose message is in none of new/, cur/ or tmp/
 * and that are older than an hour (a crash between the two writes of
 * outbox_queue()). Best effort. Cannot fail.
 */
void outbox_tidy(const char *dir);

#endif
