/*
 * Configuration: the only module that includes <confuse.h>. Loads one file
 * into validated, fully defaulted accounts. Errors read "FILE:LINE: message".
 */
#ifndef MAILPULL_CONFIG_H
#define MAILPULL_CONFIG_H

#include "mailpull/common.h"
#include "mailpull/err.h"

enum mp_proto { MP_PROTO_POP3, MP_PROTO_IMAP, MP_PROTO_MAX };
enum mp_tls { MP_TLS_IMPLICIT, MP_TLS_STARTTLS, MP_TLS_NONE, MP_TLS_MAX };
/* Where the log goes (global `log`); auto: the journal when stderr is connected to it. */
enum mp_log { MP_LOG_AUTO, MP_LOG_STDERR, MP_LOG_JOURNAL, MP_LOG_SYSLOG, MP_LOG_MAX };

/*
 * save_sent: auto appends the Sent copy unless the server is known to file
 * submitted mail itself (and never twice: the Message-ID is looked up
 * first); yes always (still never twice); no never. POP3 accounts keep
 * the copy locally only.
 */
enum mp_save_sent { MP_SAVE_SENT_AUTO, MP_SAVE_SENT_YES, MP_SAVE_SENT_NO, MP_SAVE_SENT_MAX };

/*
 * oauth2: where the account's OAuth2 tokens come from. none: the secret is
 * a password (or a token from password_command); the others: built in,
 * granted once by `mailpull authorize` (oauth2.h).
 */
enum mp_oauth2 { MP_OAUTH2_NONE, MP_OAUTH2_GOOGLE, MP_OAUTH2_MICROSOFT, MP_OAUTH2_CUSTOM,
		 MP_OAUTH2_MAX };

/* The configuration words for each value ("?" out of range). Cannot fail. */
const char *mp_proto_to_string(enum mp_proto p);
const char *mp_tls_to_string(enum mp_tls t);
const char *mp_log_to_string(enum mp_log l);
const char *mp_save_sent_to_string(enum mp_save_sent s);
const char *mp_oauth2_to_string(enum mp_oauth2 o);

struct mp_account {
	char *name;
	enum mp_proto protocol;
	char *host;
	unsigned port;             /* defaulted: 995/110 (pop3), 993/143 (imap) */
	enum mp_tls tls;
	bool allow_plaintext;
	char *tls_ca_file;         /* NULL: system store */
	char *tls_fingerprint;     /* SHA-256, 64 upper-case hex digits; NULL: no pin */
	char *tls_cert;            /* PEM client certificate for mail and submission; NULL: none */
	char *tls_key;             /* its key, mode 0600; NULL: in tls_cert. Both "~" expanded */
	char *user;
	char *password;            /* exactly one of the three is set, unless oauth2 or auth = external */
	char *password_file;       /* "~" expanded */
	char *password_command;
	char *auth;                /* mechanism list as written, NULL: automatic */
	/*
	 * Built-in OAuth2 (auth must then name xoauth2 and/or oauthbearer).
	 * google and microsoft are defaulted from the presets in oauth2.h
	 * (the URLs and scope; client_id is always the user's own); custom
	 * needs token_url and auth_url or device_url. All https:// URLs.
	 */
	enum mp_oauth2 oauth2;     /* default none */
	char *oauth2_token_url;
	char *oauth2_auth_url;     /* authorization endpoint (loopback redirect + PKCE) */
	char *oauth2_device_url;   /* device authorization endpoint (RFC 8628) */
	char *oauth2_client_id;
	char *oauth2_client_secret; /* optional (Google's "installed app" secret) */
	char *oauth2_scope;
	char *oauth2_token_file;   /* not a key: STATE_DIR/NAME.oauth2, NAME escaped as state files are */
	char *maildir;             /* "~" expanded */
	bool keep;                 /* defaulted: no (pop3), yes (imap) */
	int64_t keep_days;         /* -1: unset */
	uint64_t max_size;         /* 0: no limit */
	unsigned timeout_s;        /* default 60 */
	char **folders;            /* imap only; default { "INBOX" } */
	size_t nfolders;
	char **exclude;            /* imap only; patterns removed from folders */
	size_t nexclude;
	bool namespaces;           /* imap: expand patterns in shared/other namespaces too */
	bool mark_seen;            /* imap: fetch with BODY[] (sets \Seen) */
	bool only_unseen;          /* imap: fetch only messages without \Seen */
	bool expunge;              /* imap without UIDPLUS: plain EXPUNGE allowed */
	unsigned interval_s;       /* daemon: seconds between polls; default 300, at least 1 */
	bool idle;                 /* daemon, imap only: wait in IDLE between runs */
	bool sync_per_file;        /* sync = file: fdatasync each message, never syncfs */
	/* Sending. smtp_host NULL: the account does not send, and the rest is unset. */
	char *smtp_host;
	unsigned smtp_port;        /* defaulted: 465 (implicit), 587 (starttls) */
	enum mp_tls smtp_tls;      /* MP_TLS_IMPLICIT or MP_TLS_STARTTLS, never none */
	char *smtp_user;           /* defaulted: user */
	char *smtp_password;       /* at most one of the three; none: the account's own secret */
	char *smtp_password_file;  /* "~" expanded */
	char *smtp_password_command;
	char *from;                /* envelope sender; NULL: the message's From address */
	char *outbox;              /* a Maildir, "~" expanded; defaulted: maildir/.Outbox */
	enum mp_save_sent save_sent; /* defaulted: auto */
	char *sent_folder;         /* imap: NULL: the \Sent mailbox, else "Sent" */
	int line;                  /* where the account section starts */
};

struct mp_config {
	char *path;
	char *state_dir;           /* "~" expanded; default $XDG_STATE_HOME/mailpull */
	unsigned parallel;         /* daemon: worker processes, 1..64; default 4 */
	enum mp_log log;           /* default MP_LOG_AUTO */
	struct mp_account *accounts;
	size_t naccounts;
};

/*
 * Loads and validates path. Every error is "PATH:LINE: message" in err->msg
 * with err->ex = MP_EX_CONFIG. A file owned by another user than the
 * running one or root, or writable by group or others, is refused whatever
 * it holds (-EACCES; the message names the chown or chmod go-w that fixes
 * it); so is one that holds a `password` and is readable by group or
 * others (the message says to chmod 600).
 * *ret is freed with config_free().
 * Errors: -ENOENT or another open()/read() errno (MP_EX_CONFIG: missing or
 * unreadable file), -EINVAL (MP_EX_CONFIG: any content problem, not a
 * regular file, larger than 1 MiB), -EACCES (MP_EX_CONFIG: the ownership
 * and secrecy rules above), -ENOMEM (MP_EX_TEMPFAIL).
 */
int config_load(const char *path, struct mp_config **ret, struct mp_err *err) MP_WUR;

/*
 * The default file: $XDG_CONFIG_HOME/mailpull/config, or
 * ~/.config/mailpull/config. malloc'd; NULL with errno ENOMEM, or ENOENT
 * when neither variable is set.
 */
char *config_default_path(void);

/* Finds an account by name, or NULL; the result points into cfg. Cannot fail. */
const struct mp_account *config_find(const struct mp_config *cfg, const char *name);

/*
 * Whether a and b describe the same account in every key (the line where
 * they are written is not compared). The daemon restarts a long-lived
 * worker after a reload only when its account changed. Cannot fail.
 */
bool config_account_equal(const struct mp_account *a, const struct mp_account *b);

/* Wipes passwords and frees. */
void config_free(struct mp_config *cfg);

#endif
