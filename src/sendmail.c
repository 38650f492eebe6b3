/*
 * The sendmail(8) command line: options parsed as sendmail's own getopt
 * does (flags may be bundled, "-fADDR" or "-f ADDR"), the options programs
 * pass by habit accepted and ignored, anything that asks for more than
 * queueing one message (-bs, -bp, -bd, -q...) refused by name.
 * It never takes an account's state lock: a daemon may be running.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mailpull/addr.h"
#include "mailpull/config.h"
#include "mailpull/log.h"
#include "mailpull/outbox.h"
#include "mailpull/sendmail.h"

struct sm_opts {
	const char *config;        /* -C, else mailpull's -c; NULL: the default file */
	const char *account;       /* -a */
	const char *from;          /* -f, -r */
	bool from_headers;         /* -t */
	bool dot_ends;             /* off with -i, -oi */
	char **rcpts;              /* borrowed from argv */
	int nrcpts;
};

static const char *
sm_basename(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

/*
 * Where sendmail's own arguments start in argv (0: not a sendmail call),
 * and the -c FILE given to mailpull before the word "sendmail".
 */
static int
sm_start(int argc, char **argv, const char **ret_config)
{
	const char *config = NULL;
	int i = 1;

	if (argc < 1 || !argv[0])
		return 0;
	if (strcmp(sm_basename(argv[0]), "mailpull-sendmail") == 0 ||
	    strcmp(sm_basename(argv[0]), "sendmail") == 0) {
		*ret_config = NULL;
		return 1;
	}
	/* The spellings cli.c's getopt_long accepts for -c. */
	while (i < argc) {
		const char *a = argv[i];

		if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc) {
			config = argv[i + 1];
			i += 2;
		} else if (strncmp(a, "--config=", 9) == 0) {
			config = a + 9;
			i++;
		} else if (a[0] == '-' && a[1] == 'c' && a[2] != '\0') {
			config = a + 2;
			i++;
		} else {
			break;
		}
	}
	if (i >= argc || strcmp(argv[i], "sendmail") != 0)
		return 0;
	*ret_config = config;
	return i + 1;
}

bool
sendmail_invoked(int argc, char **argv)
{
	const char *config;

	return sm_start(argc, argv, &config) > 0;
}

static bool
word_in(const char *w, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(w, *list) == 0)
			return true;
	return false;
}

/* An option that takes a value: records it, or refuses what mailpull does not do. */
static int
sm_value(struct sm_opts *o, char opt, const char *v)
{
	/* -oem -oee -oep...: error reporting and delivery modes, all moot for a queue. */
	static const char *const o_ignored[] = { "em", "ee", "ep", "eq", "ew", "m", "di", "db",
						 "dq", NULL };
	static const char *const bodies[] = { "8BITMIME", "7BIT", "BINARYMIME", NULL };

	switch (opt) {
	case 'f':
	case 'r':
		o->from = v;
		return 0;
	case 'F':
		return 0;   /* the full name: the From field is never rewritten */
	case 'a':
		o->account = v;
		return 0;
	case 'C':
		o->config = v;
		return 0;
	case 'o':
		if (strcmp(v, "i") == 0)
			o->dot_ends = false;
		else if (!word_in(v, o_ignored))
			break;
		return 0;
	case 'B':
		if (!word_in(v, bodies))
			break;
		return 0;
	case 'b':
		if (strcmp(v, "m") != 0) {
			log_err("sendmail: -b%s is not supported: mailpull only queues a message "
				"(-bm)", v);
			return -EINVAL;
		}
		return 0;
	}
	log_err("sendmail: option -%c%s is not supported", opt, v);
	return -EINVAL;
}

static int
sm_parse(int argc, char **argv, int start, struct sm_opts *o)
{
	int i = start;

	for (; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || a[1] == '\0')
			break;
		if (a[1] == '-') {
			log_err("sendmail: unknown option %s", a);
			return -EINVAL;
		}
		for (const char *p = a + 1; *p; p++) {
			const char *v;

			if (*p == 't') {
				o->from_headers = true;
			} else if (*p == 'i') {
				o->dot_ends = false;
			} else if (*p == 'v' || *p == 'm') {
				continue;   /* verbose, me too: nothing to do for a queue */
			} else if (strchr("frFaCoBb", *p)) {
				v = p[1] ? p + 1 : i + 1 < argc ? argv[++i] : NULL;
				if (!v) {
					log_err("sendmail: option -%c needs an argument", *p);
					return -EINVAL;
				}
				if (sm_value(o, *p, v) < 0)
					return -EINVAL;
				break;
			} else if (*p == 'q') {
				log_err("sendmail: %s is not supported: `mailpull send` sends the "
					"outbox", a);
				return -EINVAL;
			} else {
				log_err("sendmail: unknown option -%c (in %s)", *p, a);
				return -EINVAL;
			}
		}
	}
	o->rcpts = argv + i;
	o->nrcpts = argc - i;
	return 0;
}

static bool
sm_same(const char *a, const char *b)
{
	return a && b && strcasecmp(a, b) == 0;
}

/*
 * The sending account: -a NAME; else the one whose `from` is the message's
 * address, else whose smtp_user or user is; else the first that sends.
 */
static const struct mp_account *
sm_account(const struct mp_config *cfg, const char *name, const char *addr, int *ret_ex)
{
	const struct mp_account *a;

	if (name) {
		a = config_find(cfg, name);
		if (a && a->smtp_host && a->outbox)
			return a;
		*ret_ex = a ? MP_EX_CONFIG : MP_EX_USAGE;
		if (!a)
			log_err("sendmail: no account named \"%s\" in %s", name, cfg->path);
		else
			log_err("sendmail: account %s has no smtp_host in %s: it does not send",
				name, cfg->path);
		return NULL;
	}
	for (int pass = 0; pass < 3; pass++)
		for (size_t i = 0; i < cfg->naccounts; i++) {
			a = &cfg->accounts[i];
			if (!a->smtp_host || !a->outbox)
				continue;
			if (pass == 2 || (pass == 0 && sm_same(a->from, addr)) ||
			    (pass == 1 && (sm_same(a->smtp_user, addr) || sm_same(a->user, addr))))
				return a;
		}
	*ret_ex = MP_EX_CONFIG;
	log_err("sendmail: no account has smtp_host in %s: none can send", cfg->path);
	return NULL;
}

/* The domain for a Message-ID: the From address's, else -f's, else the account's from. */
static const char *
sm_domain(const struct outbox_head *h, const char *from_arg, const struct mp_account *a,
	  char **ret_owned)
{
	const char *cand[] = { h->from_addr, from_arg, a->from };

	*ret_owned = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(cand); i++) {
		char *addr = NULL;
		const char *d;

		if (!cand[i] || addr_parse_first(cand[i], strlen(cand[i]), &addr) != 1)
			continue;
		d = addr_domain(addr);
		if (d && *d) {
			*ret_owned = addr;
			return d;
		}
		free(addr);
	}
	return NULL;
}

static int
sm_queue(const struct mp_config *cfg, const struct sm_opts *o)
{
	struct outbox_head h;
	struct mp_err err = { 0 };
	const struct mp_account *a;
	char *owned = NULL;
	int ex = 0;

	if (outbox_head_read(STDIN_FILENO, o->dot_ends, &h, &err) < 0) {
		log_err("sendmail: cannot read the message: %s", err.msg);
		return err.ex ? (int)err.ex : MP_EX_DATAERR;
	}
	/* Without a From field, -f's address picks the account. */
	if (!h.from_addr && o->from && addr_parse_first(o->from, strlen(o->from), &owned) < 0)
		owned = NULL;
	a = sm_account(cfg, o->account, h.from_addr ? h.from_addr : owned, &ex);
	free(owned);
	owned = NULL;
	if (a) {
		struct outbox_queue_opts qo = {
			.from = o->from,
			.rcpts = (const char *const *)o->rcpts,
			.nrcpts = (size_t)o->nrcpts,
			.from_headers = o->from_headers,
			.dot_ends = o->dot_ends,
			.domain = sm_domain(&h, o->from, a, &owned),
		};

		if (outbox_queue(a->outbox, &h, STDIN_FILENO, &qo, NULL, &err) < 0) {
			log_err("sendmail: account %s: cannot queue the message in %s: %s", a->name,
				a->outbox, err.msg);
			ex = err.ex ? (int)err.ex : MP_EX_IOERR;
		}
	}
	free(owned);
	outbox_head_free(&h);
	return ex;
}

int
sendmail_main(int argc, char **argv)
{
	struct sm_opts o = { .dot_ends = true };
	struct mp_config *cfg = NULL;
	struct mp_err err = { 0 };
	char *path;
	int start = sm_start(argc, argv, &o.config), ex;

	log_set_level(LOG_LVL_WARN);
	if (start == 0 || sm_parse(argc, argv, start, &o) < 0)
		return MP_EX_USAGE;
	path = o.config ? strdup(o.config) : config_default_path();
	if (!path && (o.config || errno == ENOMEM)) {
		log_err("sendmail: out of memory");
		return MP_EX_TEMPFAIL;
	}
	if (!path) {
		log_err("sendmail: cannot find the configuration: set HOME or use -C FILE");
		return MP_EX_CONFIG;
	}
	if (config_load(path, &cfg, &err) < 0) {
		log_err("%s", err.msg);
		free(path);
		return err.ex ? (int)err.ex : MP_EX_CONFIG;
	}
	ex = sm_queue(cfg, &o);
	config_free(cfg);
	free(path);
	return ex;
}
