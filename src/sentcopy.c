/*
 * The Sent copy on the server (sentcopy.h): one IMAP session, logged in
 * the way an account run logs in (session.c), that finds the Sent mailbox,
 * looks Message-IDs up there and appends what was sent.
 *
 * Servers known to file what is submitted through their SMTP service into
 * the Sent mailbox by themselves, so that save_sent = auto appends nothing
 * (matched on host or smtp_host, case-insensitively, exact names only):
 *
 *   Gmail: imap.gmail.com, smtp.gmail.com, imap.googlemail.com,
 *     smtp.googlemail.com. Google's help for IMAP clients says Gmail puts
 *     a copy of every message sent through smtp.gmail.com into
 *     [Gmail]/Sent Mail, and that clients should not save one (else it is
 *     there twice).
 *   Microsoft 365 and Outlook.com: outlook.office365.com,
 *     smtp.office365.com, outlook.live.com, smtp-mail.outlook.com,
 *     imap-mail.outlook.com. Exchange Online saves messages submitted by
 *     authenticated SMTP (client submission) to the sender's Sent Items.
 *
 * Others are left out on purpose until their own documentation says so:
 * Yahoo, iCloud, Fastmail and self-hosted servers (Dovecot, Cyrus) do not
 * file SMTP submissions, or do so only behind a setting the user chose;
 * there save_sent = auto appends, and the Message-ID lookup keeps it from
 * ever making a second copy.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mailpull/imap.h"
#include "mailpull/log.h"
#include "mailpull/util.h"
#include "sentcopy.h"
#include "session.h"

#define SENTCOPY_READ 65536            /* bytes read from the message file at once */
#define SENTCOPY_MSGID_MAX 998         /* one header line (RFC 5322 section 2.1.1) */

struct sentcopy {
	const struct mp_account *a;
	struct imap *m;
	char *folder;                  /* UTF-8 */
	bool dirty;                    /* appended since the mailbox was last examined */
};

static const char *const filing_hosts[] = {
	"imap.gmail.com", "smtp.gmail.com", "imap.googlemail.com", "smtp.googlemail.com",
	"outlook.office365.com", "smtp.office365.com", "outlook.live.com",
	"smtp-mail.outlook.com", "imap-mail.outlook.com",
};

/* host (a trailing dot allowed) is one of filing_hosts. */
static bool
host_files(const char *host)
{
	size_t len;

	if (!host)
		return false;
	len = strlen(host);
	if (len && host[len - 1] == '.')
		len--;
	for (size_t i = 0; i < ARRAY_SIZE(filing_hosts); i++)
		if (strlen(filing_hosts[i]) == len && strncasecmp(host, filing_hosts[i], len) == 0)
			return true;
	return false;
}

bool
sentcopy_server_files(const struct mp_account *a)
{
	return host_files(a->host) || host_files(a->smtp_host);
}

const char *
sentcopy_folder(const struct sentcopy *sc)
{
	return sc->folder;
}

/* Connects and logs in as a fetch run does. */
static int
login(struct sentcopy *sc, struct mp_err *err)
{
	return session_imap_open(sc->a, &sc->m, err);
}

static const struct imap_mailbox *
find_name(const struct imap_mailbox *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!v[i].invalid && strcmp(v[i].name, name) == 0)
			return &v[i];
	return NULL;
}

/*
 * sent_folder when configured (it must exist), else the first selectable
 * mailbox with \Sent (RFC 6154), else "Sent", created when create allows.
 */
static int
choose_folder(struct sentcopy *sc, bool create, struct mp_err *err)
{
	const struct mp_account *a = sc->a;
	struct imap_mailbox *v = NULL;
	const struct imap_mailbox *mb = NULL;
	const char *name = NULL;
	size_t n = 0;
	int r = imap_list_special(sc->m, &v, &n, err);

	if (r < 0)
		return r;
	if (a->sent_folder) {
		mb = find_name(v, n, a->sent_folder);
		if (!mb || mb->noselect)
			r = mp_err_set(err, -ENOENT, MP_EX_CONFIG, "sent_folder \"%s\" does not "
				       "exist on the server", a->sent_folder);
		name = a->sent_folder;
	} else {
		for (size_t i = 0; i < n && !name; i++)
			if (v[i].sent && !v[i].noselect && !v[i].invalid)
				name = v[i].name;
		if (!name) {
			name = "Sent";
			mb = find_name(v, n, name);
			if (!mb && create)
				r = imap_create(sc->m, name, err);
			else if (!mb || mb->noselect)
				r = mp_err_set(err, -ENOENT, MP_EX_CONFIG, "the server has no "
					       "\\Sent mailbox and no \"Sent\"");
		}
	}
	if (r == 0) {
		sc->folder = strdup(name);
		if (!sc->folder)
			r = mp_err_oom(err);
	}
	imap_mailboxes_free(v, n);
	return r;
}

/*
 * EXAMINE: nothing is ever changed in Sent but by APPEND, which needs no
 * selected mailbox; SEARCH does. Examined anew after an APPEND, so that
 * the new message is seen by the next SEARCH on any server (RFC 3501
 * section 6.3.2: the session learns of new messages at the server's
 * discretion, an EXAMINE shows the mailbox as it is).
 */
static int
examine(struct sentcopy *sc, struct mp_err *err)
{
	struct imap_folder f;
	int r = imap_select(sc->m, sc->folder, true, &f, err);

	if (r == 0)
		sc->dirty = false;
	return r;
}

int
sentcopy_open(const struct mp_account *a, bool create, struct sentcopy **ret,
	      struct mp_err *err)
{
	struct sentcopy *sc;
	int r;

	if (a->protocol != MP_PROTO_IMAP)
		return mp_err_set(err, -EINVAL, MP_EX_CONFIG, "a POP3 account has no Sent "
				  "mailbox on the server");
	sc = calloc(1, sizeof(*sc));
	if (!sc)
		return mp_err_oom(err);
	sc->a = a;
	r = login(sc, err);
	if (r == 0)
		r = choose_folder(sc, create, err);
	if (r == 0)
		r = examine(sc, err);
	if (r < 0) {
		/* Nothing to say politely to a server that is out of step or refused us. */
		imap_free(sc->m);
		free(sc->folder);
		free(sc);
		return r;
	}
	log_debug("%s: the Sent copy goes to \"%s\"", a->name, sc->folder);
	*ret = sc;
	return 0;
}

/*
 * HEADER Message-ID "<id>" (RFC 3501 section 6.4.4) as a quoted string:
 * the id must be printable ASCII (RFC 5322 msg-id is), a quote or a
 * backslash escaped. Anything else is refused rather than searched in a
 * form that could miss: a wrong "not found" would make a second copy.
 */
static int
search_criteria(const char *id, char **ret, struct mp_err *err)
{
	size_t len = strlen(id), k = 0;
	char *s;

	if (len == 0 || len > SENTCOPY_MSGID_MAX)
		return mp_err_set(err, -EINVAL, MP_EX_DATAERR, "cannot look up a Message-ID of "
				  "%zu bytes", len);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)id[i] < 0x20 || (unsigned char)id[i] > 0x7e)
			return mp_err_set(err, -EINVAL, MP_EX_DATAERR, "cannot look up a "
					  "Message-ID that is not printable ASCII");
	s = malloc(2 * len + 32);
	if (!s)
		return mp_err_oom(err);
	memcpy(s, "HEADER Message-ID \"", 19);
	k = 19;
	for (size_t i = 0; i < len; i++) {
		if (id[i] == '"' || id[i] == '\\')
			s[k++] = '\\';
		s[k++] = id[i];
	}
	s[k++] = '"';
	s[k] = '\0';
	*ret = s;
	return 0;
}

int
sentcopy_has(struct sentcopy *sc, const char *message_id, bool *ret, struct mp_err *err)
{
	uint32_t *uids = NULL;
	char *crit = NULL;
	size_t n = 0;
	int r = search_criteria(message_id, &crit, err);

	if (r == 0 && sc->dirty)
		r = examine(sc, err);
	if (r == 0)
		r = imap_search(sc->m, crit, 1, UINT32_MAX, &uids, &n, err);
	free(crit);
	free(uids);
	if (r == 0)
		*ret = n > 0;
	return r;
}

/* The message file, read from its start, in SENTCOPY_READ pieces. */
struct file_src {
	int fd;
	off_t off;
	char *buf;
};

static int
file_read(void *ud, const char **ret_data, size_t *ret_len, struct mp_err *err)
{
	struct file_src *f = ud;
	ssize_t n;

	do
		n = pread(f->fd, f->buf, SENTCOPY_READ, f->off);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return mp_err_set(err, -errno, MP_EX_IOERR, "reading the message: %s",
				  strerror(errno));
	f->off += n;
	*ret_data = f->buf;
	*ret_len = (size_t)n;
	return 0;
}

static int
file_rewind(void *ud, struct mp_err *err)
{
	(void)err;
	((struct file_src *)ud)->off = 0;
	return 0;
}

int
sentcopy_put(struct sentcopy *sc, const char *message_id, int fd, uint64_t crlf_size,
	     uint32_t *ret_uid, bool *ret_appended, struct mp_err *err)
{
	struct file_src src = { .fd = fd };
	uint32_t uid = 0;
	bool there = false;
	int r = 0;

	if (message_id)
		r = sentcopy_has(sc, message_id, &there, err);
	if (r < 0)
		return r;
	if (there) {
		log_debug("%s: %s is in \"%s\" already; not appended again", sc->a->name,
			  message_id, sc->folder);
		*ret_uid = 0;
		*ret_appended = false;
		return 0;
	}
	src.buf = malloc(SENTCOPY_READ);
	if (!src.buf)
		return mp_err_oom(err);
	r = imap_append(sc->m, sc->folder, IMAP_FLAG_SEEN, crlf_size, file_read, file_rewind,
			&src, NULL, &uid, err);
	free(src.buf);
	if (r < 0)
		return r;
	sc->dirty = true;
	*ret_uid = uid;
	*ret_appended = true;
	return 0;
}

void
sentcopy_close(struct sentcopy *sc)
{
	struct mp_err err = { 0 };

	if (!sc)
		return;
	if (imap_logout(sc->m, &err) < 0)
		log_debug("%s: LOGOUT: %s", sc->a->name, err.msg);
	imap_free(sc->m);
	free(sc->folder);
	free(sc);
}
