/*
 * The account's secret (password or OAuth token): from `password`, the
 * first line of `password_file`, or the first line printed by
 * `password_command` (run by /bin/sh -c, stdin from /dev/null, bounded in
 * time and output size). The returned string is malloc'd, owned by the
 * caller, and must be released with secret_free() (wipes it).
 */
#ifndef MAILPULL_SECRET_H
#define MAILPULL_SECRET_H

#include "mailpull/common.h"
#include "mailpull/err.h"
#include "mailpull/config.h"

/* Cap on what password_command may print. */
#define SECRET_MAX_OUTPUT (64 * 1024)

/*
 * The account's secret into *ret (free with secret_free()).
 * Errors (err->ex = MP_EX_CONFIG unless said otherwise):
 * -ENOENT  no secret configured, or password_file missing
 * -EIO     password_file cannot be opened or read, or is not a regular
 *          file; MP_EX_TEMPFAIL when password_command could not be run
 *          or its output read
 * -EACCES  password_file accessible by group or others (the message says
 *          chmod 600), or owned by another user than the running one or
 *          root (the message says which chown)
 * -ETIMEDOUT password_command ran longer than timeout_ms (killed; MP_EX_TEMPFAIL)
 * -ECHILD  password_command exited non-zero or by a signal (its stderr passes through)
 * -ENODATA empty secret
 * -E2BIG   password_file's first line or the command's output over
 *          SECRET_MAX_OUTPUT
 * -EBADMSG the secret holds a control byte (CR, NUL...), which could end a
 *          protocol command early
 * -ENOMEM  (MP_EX_TEMPFAIL)
 * Error messages never contain the secret, nor the account (the caller
 * names it).
 * password_command runs in a process group of its own; when stdin is a
 * terminal whose foreground group is mailpull's, that terminal is its stdin
 * and its group becomes the foreground one while it runs (so it may
 * prompt), given back however it ends. Otherwise its stdin is /dev/null.
 */
int secret_get(const struct mp_account *a, unsigned timeout_ms, char **ret, struct mp_err *err) MP_WUR;

/* Wipes and frees a secret from secret_get() (util_free_secret()). */
void secret_free(char *s);

#endif
