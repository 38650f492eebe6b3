/* Command line parsing. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "mailpull/cli.h"

enum { OPT_CHECK_CONFIG = 256, OPT_WAIT, OPT_DAEMON, OPT_POLL_NOW };

void
cli_usage(void)
{
	fputs("usage: mailpull [-c FILE] [-q] [-v] [--wait] [ACCOUNT...]\n"
	      "       mailpull [-c FILE] [-q] [-v] [--wait] send [--retry-held] [ACCOUNT...]\n"
	      "       mailpull [-c FILE] sendmail [-t] [-i] [-f ADDR] [-a ACCOUNT] [RCPT...]\n"
	      "       mailpull [-c FILE] preview [--json] ACCOUNT [FOLDER]\n"
	      "       mailpull [-c FILE] authorize ACCOUNT\n"
	      "       mailpull --daemon [-c FILE] [-q | -v]\n"
	      "       mailpull --poll-now [-c FILE]\n"
	      "       mailpull --check-config [-c FILE]\n"
	      "\n"
	      "Sends what waits in the outbox of every account in FILE (or only\n"
	      "those named), then fetches their mail into their Maildirs, once, and\n"
	      "exits.\n"
	      "\n"
	      "send only sends; --retry-held also sends the messages held because\n"
	      "they may have been sent already (check the recipient's copy first).\n"
	      "sendmail queues the message on standard input in an account's outbox,\n"
	      "as sendmail(8) does for mutt, git send-email or cron (also as\n"
	      "mailpull-sendmail); it is sent by the next run.\n"
	      "\n"
	      "--daemon stays in the foreground and fetches each account every\n"
	      "`interval` (SIGUSR1: poll now, SIGHUP: reload, SIGTERM: stop);\n"
	      "--poll-now tells the daemon of FILE to poll every account now.\n"
	      "\n"
	      "preview lists what is waiting on the server (date, sender, subject,\n"
	      "size) without downloading it; --json prints one JSON object per line.\n"
	      "\n"
	      "authorize grants mailpull access to an account with oauth2 set: it\n"
	      "prints a URL (and a code) to open in a browser, then saves the tokens.\n"
	      "\n"
	      "  -c, --config FILE   configuration (default $XDG_CONFIG_HOME/mailpull/config)\n"
	      "  -q, --quiet         print only errors\n"
	      "  -v, --verbose       also print a protocol trace (secrets shown as ***)\n"
	      "      --wait          wait for another run on the same account instead of failing\n"
	      "      --daemon        run as a daemon in the foreground (see mailpull(1), DAEMON)\n"
	      "      --poll-now      make the running daemon poll now (exit 75: none runs)\n"
	      "      --check-config  validate FILE and exit\n"
	      "  -h, --help          this text\n"
	      "  -V, --version       the version\n"
	      "\n"
	      "See mailpull(1) and mailpull.conf(5).\n", stdout);
}

/* preview [--json] ACCOUNT [FOLDER] */
static int
parse_preview(int argc, char **argv, struct cli_opts *o, struct cli_opts *ret)
{
	int i = 1;

	o->mode = CLI_PREVIEW;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			o->json = true;
		} else {
			fprintf(stderr, "mailpull: unknown preview option %s (see --help)\n", argv[i]);
			return -EINVAL;
		}
	}
	if (argc - i < 1 || argc - i > 2) {
		fputs("mailpull: preview takes an account name and optionally a folder "
		      "(see --help)\n", stderr);
		return -EINVAL;
	}
	o->accounts = argv + i;
	o->naccounts = 1;
	o->folder = argc - i == 2 ? argv[i + 1] : NULL;
	*ret = *o;
	return 0;
}

/* authorize ACCOUNT */
static int
parse_authorize(int argc, char **argv, struct cli_opts *o, struct cli_opts *ret)
{
	o->mode = CLI_AUTHORIZE;
	if (argc != 2 || argv[1][0] == '-') {
		fputs("mailpull: authorize takes one account name (see --help)\n", stderr);
		return -EINVAL;
	}
	if (o->quiet || o->wait) {
		fprintf(stderr, "mailpull: authorize talks to you on the terminal: no %s\n",
			o->quiet ? "-q" : "--wait");
		return -EINVAL;
	}
	o->accounts = argv + 1;
	o->naccounts = 1;
	*ret = *o;
	return 0;
}

/* send [--retry-held] [ACCOUNT...]; -q, -v and --wait are taken here too. */
static int
parse_send(int argc, char **argv, struct cli_opts *o, struct cli_opts *ret)
{
	int i = 1;

	o->mode = CLI_SEND;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--retry-held") == 0) {
			o->retry_held = true;
		} else if (strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "--quiet") == 0) {
			o->quiet = true;
		} else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) {
			o->verbose++;
		} else if (strcmp(argv[i], "--wait") == 0) {
			o->wait = true;
		} else if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else {
			fprintf(stderr, "mailpull: unknown send option %s (see --help)\n", argv[i]);
			return -EINVAL;
		}
	}
	if (o->quiet && o->verbose) {
		fputs("mailpull: -q and -v exclude each other\n", stderr);
		return -EINVAL;
	}
	o->accounts = argv + i;
	o->naccounts = argc - i;
	*ret = *o;
	return 0;
}

int
cli_parse(int argc, char **argv, struct cli_opts *ret)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "wait", no_argument, NULL, OPT_WAIT },
		{ "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
		{ "daemon", no_argument, NULL, OPT_DAEMON },
		{ "poll-now", no_argument, NULL, OPT_POLL_NOW },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_opts o = { .mode = CLI_FETCH };
	int ch;

	opterr = 0;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+c:qvhV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o.config = optarg;
			break;
		case 'q':
			o.quiet = true;
			break;
		case 'v':
			o.verbose++;
			break;
		case OPT_WAIT:
			o.wait = true;
			break;
		case OPT_CHECK_CONFIG:
			o.mode = CLI_CHECK_CONFIG;
			break;
		case OPT_DAEMON:
			o.mode = CLI_DAEMON;
			break;
		case OPT_POLL_NOW:
			o.mode = CLI_POLL_NOW;
			break;
		case 'h':
			o.mode = CLI_HELP;
			break;
		case 'V':
			o.mode = CLI_VERSION;
			break;
		case ':':
			fprintf(stderr, "mailpull: option %s needs an argument (see --help)\n",
				argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "mailpull: unknown option %s (see --help)\n", argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (o.quiet && o.verbose) {
		fputs("mailpull: -q and -v exclude each other\n", stderr);
		return -EINVAL;
	}
	o.accounts = argv + optind;
	o.naccounts = argc - optind;
	if (o.mode == CLI_FETCH && o.naccounts > 0 && strcmp(o.accounts[0], "preview") == 0)
		return parse_preview(o.naccounts, o.accounts, &o, ret);
	if (o.mode == CLI_FETCH && o.naccounts > 0 && strcmp(o.accounts[0], "send") == 0)
		return parse_send(o.naccounts, o.accounts, &o, ret);
	if (o.mode == CLI_FETCH && o.naccounts > 0 && strcmp(o.accounts[0], "authorize") == 0)
		return parse_authorize(o.naccounts, o.accounts, &o, ret);
	if (o.mode == CLI_CHECK_CONFIG && o.naccounts > 0) {
		fputs("mailpull: --check-config takes no account names\n", stderr);
		return -EINVAL;
	}
	if ((o.mode == CLI_DAEMON || o.mode == CLI_POLL_NOW) && (o.naccounts > 0 || o.wait)) {
		fprintf(stderr, "mailpull: --%s takes no account names and no --wait\n",
			o.mode == CLI_DAEMON ? "daemon" : "poll-now");
		return -EINVAL;
	}
	*ret = o;
	return 0;
}
