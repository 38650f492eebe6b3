/*
 * The sendmail(8) front door: `mailpull [-c FILE] sendmail [options]
 * [--] [RCPT...]`, or mailpull run as `mailpull-sendmail` (or `sendmail`),
 * queues the message on standard input durably into a sending account's
 * outbox (outbox.h) and prints nothing on success, as mail readers, git
 * send-email and cron expect. See mailpull(1), SENDMAIL.
 */
#ifndef MAILPULL_SENDMAIL_H
#define MAILPULL_SENDMAIL_H

#include "mailpull/common.h"

/*
 * Whether argv asks for the sendmail front door: argv[0]'s base name is
 * "mailpull-sendmail" or "sendmail", or the first word after mailpull's
 * own -c FILE / --config FILE (if any) is "sendmail". Cannot fail.
 */
bool sendmail_invoked(int argc, char **argv);

/*
 * Runs it; returns the exit status (sysexits): 0 queued; 64 a usage error
 * (an unknown or unsupported option, no such account); 65 a message that
 * cannot be queued as it is (no recipients, an address that is not one,
 * a header block over the cap); 74 local I/O (the outbox unwritable); 75
 * out of memory; 78 configuration (unreadable, no account that sends).
 * Errors are printed on stderr, naming the account and the path.
 */
int sendmail_main(int argc, char **argv);

#endif
