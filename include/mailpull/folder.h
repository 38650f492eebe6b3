/*
 * IMAP mailbox names to Maildir++ folders, and the LIST wildcards used by
 * the `folders` and `exclude` settings. Pure: no I/O, no struct mp_err:
 * errors are only returned.
 *
 * The layout is Dovecot's default LAYOUT=maildir++ with an empty namespace
 * prefix, so a Dovecot (or mutt, or mbsync with "SubFolders Maildir++")
 * pointed at the same Maildir shows the server's hierarchy unchanged:
 *
 *   "INBOX" (any case)            ""  (the Maildir root itself)
 *   "Archive"                     ".Archive"
 *   "Archive/2024", delim '/'     ".Archive.2024"
 *   "Archive.2024", delim '.'     ".Archive.2024"  (same hierarchy, same folder)
 *   "INBOX/Sub" or "INBOX.Sub"    ".INBOX.Sub"     (Dovecot: INBOX's children
 *                                                   keep INBOX as their first
 *                                                   component; the leading
 *                                                   "inbox" is written "INBOX"
 *                                                   as RFC 3501 section 5.1
 *                                                   makes it case-insensitive)
 *
 * Maildir++ separates levels with '.', so a '.' inside a component, a '/',
 * the escape character '\' itself, control bytes (0x01..0x1f, 0x7f) and a
 * '~' opening the name are written "\xx" (two lower-case hex digits): the
 * escape of Dovecot's listescape plugin, so Dovecot with that plugin shows
 * the original name. A result therefore never holds '/', never is "." or
 * "..", and never starts with "..".
 *
 * (mbsync's own Maildir++ mode writes INBOX's children as "..Sub" and
 * refuses names with '.'; mailpull follows Dovecot instead.)
 */
#ifndef MAILPULL_FOLDER_H
#define MAILPULL_FOLDER_H

#include <limits.h>

#include "mailpull/common.h"

/* Longest directory name produced or accepted, in bytes (one path component). */
#define FOLDER_DIRNAME_MAX NAME_MAX

/* Longest pattern folder_match() takes, in bytes. */
#define FOLDER_PATTERN_MAX 1023

/*
 * Maps the UTF-8 mailbox name, whose hierarchy delimiter is delim ('\0'
 * for NIL: a flat name), to its Maildir++ directory name as described
 * above. On success *ret_dirname is a malloc'd string the caller frees;
 * "" means the Maildir root.
 * Errors:
 *   -EINVAL   name is empty or has an empty component (a leading, doubled
 *             or trailing delimiter: "/a", "a//b", "a/"), or delim is
 *             neither NUL nor ASCII punctuation (RFC 3501 would allow any
 *             QUOTED-CHAR, but a letter or digit would split "INBOX"
 *             itself; servers use '/', '.' or '\\')
 *   -EBADMSG  name is not valid UTF-8
 *   -E2BIG    the result would exceed FOLDER_DIRNAME_MAX bytes
 *   -ENOMEM   out of memory
 * *ret_dirname is left untouched on error.
 */
int folder_to_maildir(const char *name, char delim, char **ret_dirname) MP_WUR;

/*
 * The inverse: maps a Maildir++ directory name ("" for the root, else "."
 * and components) back to the mailbox name with delimiter delim. On success
 * *ret_name is a malloc'd string the caller frees.
 * Errors:
 *   -EBADMSG  dirname is not one folder_to_maildir() can produce: no
 *             leading '.', an empty component, a bad "\xx" escape, a '/'
 *             or control byte, a result that is not valid UTF-8, or longer
 *             than FOLDER_DIRNAME_MAX
 *   -EINVAL   the name cannot be written with delim: several components
 *             and a NIL delimiter, or a component holding delim itself;
 *             or delim is invalid (as above)
 *   -ENOMEM   out of memory
 * *ret_name is left untouched on error.
 */
int folder_from_maildir(const char *dirname, char delim, char **ret_name) MP_WUR;

/*
 * Matches the UTF-8 mailbox name against pattern with the wildcards of IMAP
 * LIST (RFC 3501 section 6.3.8): '*' matches any run of characters, the
 * delimiter included; '%' matches any run without the delimiter (with a NIL
 * delimiter, '%' is '*'). Everything else matches itself, byte for byte,
 * except that a leading "INBOX" component matches in any case in both the
 * pattern and the name (RFC 3501 section 5.1). Time O(strlen(pattern) *
 * strlen(name) / 64), no allocation.
 * Returns 1 on a match, 0 otherwise, or -E2BIG when pattern is longer than
 * FOLDER_PATTERN_MAX (configuration checks should refuse such a pattern).
 */
int folder_match(const char *pattern, const char *name, char delim);

#endif
