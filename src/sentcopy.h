/*
 * The server's copy of sent mail (IMAP accounts): a session with the
 * account's IMAP server that finds the Sent mailbox (sent_folder, else the
 * \Sent special-use mailbox, RFC 6154, else "Sent", created when missing),
 * looks a Message-ID up there and appends a copy with \Seen. Used by the
 * send run only, after a message was accepted, and to prove that a held
 * message was not accepted by a server that files submitted mail itself.
 * Not for other modules.
 */
#ifndef MAILPULL_SENTCOPY_H
#define MAILPULL_SENTCOPY_H

#include "mailpull/config.h"
#include "mailpull/err.h"

struct sentcopy;

/*
 * Whether a's server files what is submitted into Sent by itself (Gmail,
 * Microsoft 365, Outlook.com, by the exact host or smtp_host name: the
 * list and its reasons head sentcopy.c), so that save_sent = auto appends
 * nothing. Cannot fail.
 */
bool sentcopy_server_files(const struct mp_account *a);

/*
 * Connects to a's IMAP server, logs in and examines (read-only: APPEND
 * needs no selected mailbox, SEARCH does) the Sent mailbox: sent_folder,
 * else the first \Sent one, else "Sent", created when missing and create
 * is true. *ret is freed with sentcopy_close().
 * Errors: those of account_run() for connecting and logging in, -ENOENT
 * (MP_EX_CONFIG: sent_folder names no mailbox; or none and create false),
 * -EINVAL (MP_EX_CONFIG: a POP3 account), the IMAP engine's.
 */
int sentcopy_open(const struct mp_account *a, bool create, struct sentcopy **ret,
		  struct mp_err *err) MP_WUR;

/* The selected mailbox's name (UTF-8). Valid while sc lives. Cannot fail. */
const char *sentcopy_folder(const struct sentcopy *sc);

/*
 * Whether a message with this Message-ID ("<...>") is in the Sent mailbox
 * (UID SEARCH HEADER Message-ID "<...>"; after an APPEND of this session
 * the mailbox is examined anew first, so the new message is seen).
 * Errors: -EINVAL (MP_EX_DATAERR: an empty Message-ID, one over 998 bytes
 * or not printable ASCII: it cannot be looked up reliably, nothing sent),
 * the IMAP engine's.
 */
int sentcopy_has(struct sentcopy *sc, const char *message_id, bool *ret, struct mp_err *err) MP_WUR;

/*
 * Appends the message in fd (read from its start with pread(), twice: see
 * imap_append(); size octets once its line ends are CRLF) with \Seen,
 * unless message_id (may be NULL: no check) is already there. *ret_uid
 * gets the APPENDUID UID (0: unknown or not appended), *ret_appended
 * whether it appended. Errors: sentcopy_has()'s, imap_append()'s (-EINVAL
 * MP_EX_DATAERR for a NUL byte, -EMSGSIZE for a wrong size, -ENOENT when
 * the mailbox vanished), pread() errnos (MP_EX_IOERR).
 */
int sentcopy_put(struct sentcopy *sc, const char *message_id, int fd, uint64_t crlf_size,
		 uint32_t *ret_uid, bool *ret_appended, struct mp_err *err) MP_WUR;

/* LOGOUT (best effort), close and free. NULL-safe. */
void sentcopy_close(struct sentcopy *sc);

#endif
