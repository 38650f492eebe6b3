/*
 * A one-connection IMAP server over TLS 1.3 that checks SCRAM-SHA-256-PLUS
 * with the tls-exporter channel binding (RFC 9266), for
 * tests/integration/test_scram_faults.py: Python's ssl module cannot export
 * keying material, so the scripted Python servers cannot check it.
 *
 *   cbserver PORT CERT KEY USER PASSWORD
 *
 * listens on 127.0.0.1:PORT (0: any free port), prints "READY <port>", serves
 * one connection (greeting, CAPABILITY, AUTHENTICATE SCRAM-SHA-256-PLUS or
 * SCRAM-SHA-256, LIST (INBOX alone), SELECT or EXAMINE INBOX with no
 * messages, UID SEARCH and FETCH finding nothing, LOGOUT) and exits 0 after
 * it. What it saw goes to stdout, one fact a line:
 *   cmd VERB            each command's name (the tag and arguments left out)
 *   mech MECH           the mechanism of an AUTHENTICATE
 *   gs2 HEADER          the client's GS2 header ("p=tls-exporter,,")
 *   cb ok|bad           c= is the header plus the exported binding (p=) or
 *                       the header alone (n, y)
 *   nonce ok|bad        r= of the client-final is the server's nonce
 *   proof ok|bad        the client proof
 *   auth ok|refused|cancelled
 * A client that waits more than 30 seconds, or a run over 60, ends it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define LINE_MAX_LEN 4096
#define ITERATIONS 4096

struct client {
	SSL *ssl;
	char buf[LINE_MAX_LEN];
	size_t len;
};

/* The SCRAM state of one exchange (RFC 5802 section 3). */
struct scram {
	bool plus;
	bool user_ok;              /* n= names the user of argv */
	char gs2[256];
	char bare[LINE_MAX_LEN];
	char server_first[512];
	char nonce[256];
	unsigned char salt[16];
};

static int
send_line(struct client *c, const char *line)
{
	size_t n = strlen(line);
	char out[LINE_MAX_LEN + 2];

	if (n > LINE_MAX_LEN)
		return -1;
	memcpy(out, line, n);
	memcpy(out + n, "\r\n", 2);
	return SSL_write(c->ssl, out, (int)(n + 2)) == (int)(n + 2) ? 0 : -1;
}

/* One line without its CRLF into line (size bytes); -1 on close or overlong. */
static int
read_line(struct client *c, char *line, size_t size)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		int k;

		if (nl) {
			size_t n = (size_t)(nl - c->buf);
			size_t keep = n > 0 && c->buf[n - 1] == '\r' ? n - 1 : n;

			if (keep >= size)
				return -1;
			memcpy(line, c->buf, keep);
			line[keep] = '\0';
			c->len -= n + 1;
			memmove(c->buf, nl + 1, c->len);
			return 0;
		}
		if (c->len == sizeof(c->buf))
			return -1;
		k = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
		if (k <= 0)
			return -1;
		c->len += (size_t)k;
	}
}

static void
b64_encode(const unsigned char *in, size_t len, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* Strict enough for tests: the decoded length, or -1. */
static int
b64_decode(const char *in, unsigned char *out, size_t size)
{
	size_t n = strlen(in);
	int k;

	if (n % 4 != 0 || n / 4 * 3 > size)
		return -1;
	k = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
	if (k < 0)
		return -1;
	if (n >= 1 && in[n - 1] == '=')
		k--;
	if (n >= 2 && in[n - 2] == '=')
		k--;
	return k;
}

/* The value of attribute key ("r=") in a comma-separated SCRAM message, into out. */
static bool
attr(const char *msg, const char *key, char *out, size_t size)
{
	size_t kl = strlen(key);
	const char *p = msg;

	while (p) {
		if (strncmp(p, key, kl) == 0) {
			const char *end = strchr(p, ',');
			size_t n = end ? (size_t)(end - p) - kl : strlen(p) - kl;

			if (n >= size)
				return false;
			memcpy(out, p + kl, n);
			out[n] = '\0';
			return true;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return false;
}

/* Sends a challenge and reads the answer (decoded, NUL-terminated); 1: cancelled. */
static int
challenge(struct client *c, const char *msg, char *out, size_t size)
{
	char line[LINE_MAX_LEN];
	unsigned char dec[LINE_MAX_LEN];
	int k;

	snprintf(line, sizeof(line), "+ ");
	b64_encode((const unsigned char *)msg, strlen(msg), line + 2);
	if (send_line(c, line) < 0 || read_line(c, line, sizeof(line)) < 0)
		return -1;
	if (strcmp(line, "*") == 0)
		return 1;
	k = b64_decode(line, dec, sizeof(dec) - 1);
	if (k < 0 || (size_t)k >= size)
		return -1;
	memcpy(out, dec, (size_t)k);
	out[k] = '\0';
	return 0;
}

/* Checks the client-first message; 0 and the server-first message in s. */
static int
scram_first(struct scram *s, const char *want_user, const char *msg)
{
	const char *c1 = strchr(msg, ','), *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
	char cnonce[200], user[256];
	unsigned char rnd[18];
	char rnd64[32], salt64[32];

	if (!c2 || (size_t)(c2 - msg + 1) >= sizeof(s->gs2) || strlen(c2 + 1) >= sizeof(s->bare))
		return -1;
	memcpy(s->gs2, msg, (size_t)(c2 - msg + 1));
	s->gs2[c2 - msg + 1] = '\0';
	snprintf(s->bare, sizeof(s->bare), "%s", c2 + 1);
	printf("gs2 %s\n", s->gs2);
	if (attr(s->bare, "n=", user, sizeof(user))) {
		printf("user %s\n", user);
		s->user_ok = strcmp(user, want_user) == 0;
	}
	if (!attr(s->bare, "r=", cnonce, sizeof(cnonce)))
		return -1;
	if (s->plus != (strncmp(s->gs2, "p=", 2) == 0))
		return -1;
	/* RFC 5802 section 6: "y" to a server that can bind means a downgrade. */
	if (strncmp(s->gs2, "y,", 2) == 0)
		return -1;
	if (s->plus && strcmp(s->gs2, "p=tls-exporter,,") != 0)
		return -1;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1 || RAND_bytes(s->salt, sizeof(s->salt)) != 1)
		return -1;
	b64_encode(rnd, sizeof(rnd), rnd64);
	b64_encode(s->salt, sizeof(s->salt), salt64);
	snprintf(s->nonce, sizeof(s->nonce), "%s%s", cnonce, rnd64);
	snprintf(s->server_first, sizeof(s->server_first), "r=%s,s=%s,i=%d", s->nonce, salt64,
		 ITERATIONS);
	return 0;
}

/* Checks the client-final message; 0 and v= in ret_final when all is right. */
static int
scram_final(struct client *c, struct scram *s, const char *pass, const char *msg,
	    char *ret_final, size_t size)
{
	unsigned char salted[32], ckey[32], stored[32], skey[32], csig[32], ssig[32];
	unsigned char proof[64], want[256 + 32], got[256 + 64], cb[32];
	char cval[512], rval[256], pval[128], without[LINE_MAX_LEN], am[3 * LINE_MAX_LEN];
	char ssig64[64];
	const char *pp = strstr(msg, ",p=");
	size_t wl = strlen(s->gs2);
	unsigned int hl = 0;
	int gl, pl;
	bool cb_ok, nonce_ok, proof_ok;

	if (!pp || (size_t)(pp - msg) >= sizeof(without) || !attr(msg, "c=", cval, sizeof(cval))
	    || !attr(msg, "r=", rval, sizeof(rval)) || !attr(pp + 1, "p=", pval, sizeof(pval)))
		return -1;
	memcpy(without, msg, (size_t)(pp - msg));
	without[pp - msg] = '\0';
	memcpy(want, s->gs2, wl);
	if (s->plus) {
		if (SSL_export_keying_material(c->ssl, cb, sizeof(cb), "EXPORTER-Channel-Binding",
					       24, NULL, 0, 0) != 1)
			return -1;
		memcpy(want + wl, cb, sizeof(cb));
		wl += sizeof(cb);
	}
	gl = b64_decode(cval, got, sizeof(got));
	cb_ok = gl >= 0 && (size_t)gl == wl && memcmp(got, want, wl) == 0;
	nonce_ok = strcmp(rval, s->nonce) == 0;
	snprintf(am, sizeof(am), "%s,%s,%s", s->bare, s->server_first, without);
	if (PKCS5_PBKDF2_HMAC(pass, (int)strlen(pass), s->salt, sizeof(s->salt), ITERATIONS,
			      EVP_sha256(), sizeof(salted), salted) != 1)
		return -1;
	HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Client Key", 10,
	     ckey, &hl);
	HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Server Key", 10,
	     skey, &hl);
	SHA256(ckey, sizeof(ckey), stored);
	HMAC(EVP_sha256(), stored, sizeof(stored), (const unsigned char *)am, strlen(am), csig,
	     &hl);
	HMAC(EVP_sha256(), skey, sizeof(skey), (const unsigned char *)am, strlen(am), ssig, &hl);
	pl = b64_decode(pval, proof, sizeof(proof));
	proof_ok = pl == 32;
	for (int i = 0; proof_ok && i < 32; i++)
		proof_ok = (proof[i] ^ csig[i]) == ckey[i];
	printf("cb %s\nnonce %s\nproof %s\n", cb_ok ? "ok" : "bad", nonce_ok ? "ok" : "bad",
	       proof_ok ? "ok" : "bad");
	if (!cb_ok || !nonce_ok || !proof_ok || !s->user_ok)
		return -1;
	b64_encode(ssig, sizeof(ssig), ssig64);
	snprintf(ret_final, size, "v=%s", ssig64);
	return 0;
}

/* AUTHENTICATE MECH [IR]; true when the client logged in. */
static bool
authenticate(struct client *c, const char *tag, const char *args, const char *user,
	     const char *pass)
{
	struct scram s = { 0 };
	char mech[64] = "", msg[LINE_MAX_LEN], final[128], reply[LINE_MAX_LEN + 64];
	const char *ir = strchr(args, ' ');
	size_t ml = ir ? (size_t)(ir - args) : strlen(args);
	int r = -1;

	if (ml < sizeof(mech))
		memcpy(mech, args, ml);
	printf("mech %s\n", mech);
	s.plus = strcasecmp(mech, "SCRAM-SHA-256-PLUS") == 0;
	if (!s.plus && strcasecmp(mech, "SCRAM-SHA-256") != 0)
		goto refuse;
	if (ir) {
		int k = b64_decode(ir + 1, (unsigned char *)msg, sizeof(msg) - 1);

		if (k < 0)
			goto refuse;
		msg[k] = '\0';
	} else {
		r = challenge(c, "", msg, sizeof(msg));
		if (r != 0)
			goto out;
	}
	if (scram_first(&s, user, msg) < 0)
		goto refuse;
	r = challenge(c, s.server_first, msg, sizeof(msg));
	if (r != 0)
		goto out;
	if (scram_final(c, &s, pass, msg, final, sizeof(final)) < 0)
		goto refuse;
	r = challenge(c, final, msg, sizeof(msg));
	if (r != 0)
		goto out;
	printf("auth ok\n");
	snprintf(reply, sizeof(reply), "%s OK logged in", tag);
	return send_line(c, reply) == 0;
refuse:
	r = -1;
out:
	printf("auth %s\n", r == 1 ? "cancelled" : "refused");
	if (r == 1)
		snprintf(reply, sizeof(reply), "%s BAD authentication cancelled", tag);
	else
		snprintf(reply, sizeof(reply), "%s NO [AUTHENTICATIONFAILED] authentication failed",
			 tag);
	send_line(c, reply);
	return false;
}

/* The IMAP session after the handshake; returns when the client logs out or goes. */
static void
session(struct client *c, const char *user, const char *pass)
{
	char line[LINE_MAX_LEN], reply[LINE_MAX_LEN + 64];
	bool authed = false;

	send_line(c, "* OK cbserver ready");
	while (read_line(c, line, sizeof(line)) == 0) {
		char *tag = line, *verb = strchr(line, ' '), *args;

		if (!verb)
			break;
		*verb++ = '\0';
		args = strchr(verb, ' ');
		if (args)
			*args++ = '\0';
		printf("cmd %s\n", verb);
		fflush(stdout);
		if (strcasecmp(verb, "CAPABILITY") == 0) {
			send_line(c, "* CAPABILITY IMAP4rev1 AUTH=SCRAM-SHA-256 "
				  "AUTH=SCRAM-SHA-256-PLUS SASL-IR");
			snprintf(reply, sizeof(reply), "%s OK CAPABILITY completed", tag);
		} else if (strcasecmp(verb, "LOGOUT") == 0) {
			send_line(c, "* BYE logging out");
			snprintf(reply, sizeof(reply), "%s OK LOGOUT completed", tag);
			send_line(c, reply);
			return;
		} else if (strcasecmp(verb, "AUTHENTICATE") == 0 && !authed && args) {
			authed = authenticate(c, tag, args, user, pass);
			fflush(stdout);
			continue;
		} else if (!authed) {
			snprintf(reply, sizeof(reply), "%s NO only SCRAM here", tag);
		} else if ((strcasecmp(verb, "SELECT") == 0 || strcasecmp(verb, "EXAMINE") == 0)
			   && args && (strcasecmp(args, "INBOX") == 0
				       || strcasecmp(args, "\"INBOX\"") == 0)) {
			send_line(c, "* 0 EXISTS");
			send_line(c, "* OK [UIDVALIDITY 1] UIDs valid");
			send_line(c, "* OK [UIDNEXT 1] predicted next UID");
			snprintf(reply, sizeof(reply), "%s OK [READ-WRITE] SELECT completed", tag);
		} else if (strcasecmp(verb, "LIST") == 0) {
			send_line(c, "* LIST (\\HasNoChildren) \"/\" INBOX");
			snprintf(reply, sizeof(reply), "%s OK LIST completed", tag);
		} else if (strcasecmp(verb, "UID") == 0 && args) {
			/* The empty INBOX: nothing to search or fetch. */
			if (strncasecmp(args, "SEARCH", 6) == 0)
				send_line(c, "* SEARCH");
			snprintf(reply, sizeof(reply), "%s OK UID completed", tag);
		} else if (strcasecmp(verb, "NOOP") == 0 || strcasecmp(verb, "ENABLE") == 0
			   || strcasecmp(verb, "ID") == 0) {
			snprintf(reply, sizeof(reply), "%s OK %s completed", tag, verb);
		} else {
			snprintf(reply, sizeof(reply), "%s BAD unknown command", tag);
		}
		send_line(c, reply);
	}
}

static int
listen_on(const char *port_arg, int *ret_port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	char *end;
	long port = strtol(port_arg, &end, 10);
	int one = 1, fd;

	if (*end || port < 0 || port > 65535)
		return -1;
	sa.sin_port = htons((unsigned short)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0
	    || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0
	    || getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
		return -1;
	*ret_port = ntohs(sa.sin_port);
	return fd;
}

static SSL_CTX *
tls_context(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1
	    || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
	    || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

int
main(int argc, char **argv)
{
	struct timeval tv = { .tv_sec = 30 };
	struct client c = { 0 };
	SSL_CTX *ctx;
	int lfd, fd, port = 0;

	if (argc != 6) {
		fputs("usage: cbserver PORT CERT KEY USER PASSWORD\n", stderr);
		return 64;
	}
	signal(SIGPIPE, SIG_IGN);
	alarm(60);
	ctx = tls_context(argv[2], argv[3]);
	lfd = ctx ? listen_on(argv[1], &port) : -1;
	if (lfd < 0) {
		ERR_print_errors_fp(stderr);
		perror("cbserver: setup");
		return 1;
	}
	printf("READY %d\n", port);
	fflush(stdout);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return 1;
	c.ssl = SSL_new(ctx);
	if (!c.ssl || SSL_set_fd(c.ssl, fd) != 1 || SSL_accept(c.ssl) != 1) {
		ERR_print_errors_fp(stderr);
		printf("tls failed\n");
		return 1;
	}
	printf("tls %s\n", SSL_get_version(c.ssl));
	session(&c, argv[4], argv[5]);
	printf("end\n");
	SSL_shutdown(c.ssl);
	SSL_free(c.ssl);
	close(fd);
	close(lfd);
	SSL_CTX_free(ctx);
	return 0;
}
