/* The command line: argv to options, with usage errors named. */
#ifndef MAILPULL_CLI_H
#define MAILPULL_CLI_H

#include "mailpull/common.h"

enum cli_mode {
	CLI_FETCH, CLI_CHECK_CONFIG, CLI_PREVIEW, CLI_DAEMON, CLI_POLL_NOW, CLI_HELP, CLI_VERSION,
	CLI_SEND, CLI_AUTHORIZE   /* authorize ACCOUNT: accounts[0] */
};

struct cli_opts {
	enum cli_mode mode;
	const char *config;      /* NULL: the default path */
	bool quiet;
	int verbose;
	bool wait;
	char **accounts;         /* borrowed from argv */
	int naccounts;
	bool json;               /* preview --json */
	const char *folder;      /* preview FOLDER, or NULL */
	bool retry_held;         /* send --retry-held */
};

/*
 * Parses argv into *ret (whose strings point into argv: nothing to free).
 * Returns 0, or -EINVAL (a usage error, exit class MP_EX_USAGE) after
 * printing one line naming the problem and a hint to --help on stderr.
 */
int cli_parse(int argc, char **argv, struct cli_opts *ret);

/* Prints the --help text on stdout. Cannot fail. */
void cli_usage(void);

#endif
