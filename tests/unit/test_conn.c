/*
 * conn_wait() on a loopback connection: buffered bytes, data arriving,
 * a timeout, a signal, and the peer closing. TLS against a forked OpenSSL
 * server with a throw-away CA made here: the client certificate (offered,
 * its key file's mode, a key that does not match) and channel binding
 * (none without TLS; tls-exporter on TLS 1.3 equal to the server's own
 * export; tls-server-end-point on TLS 1.2 with the signature's digest).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fakeserver.h"
#include "mailpull/conn.h"
#include "mailpull/util.h"

struct pair {
	struct conn *c;
	int peer;          /* the server's end */
};

/* A conn to a listener on 127.0.0.1, and the accepted socket. */
static void
pair_open(struct pair *p)
{
	struct mp_err err = { 0 };
	struct fake f;

	fake_listen(&f);
	p->c = fake_connect(&f, 1000, &err);
	p->peer = accept(f.lfd, NULL, NULL);
	assert_true(p->peer >= 0);
	close(f.lfd);
}

static void
pair_close(struct pair *p)
{
	conn_close(p->c);
	close(p->peer);
}

static void
send_str(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static void
test_wait_timeout(void **state)
{
	struct pair p;
	struct mp_err err = { 0 };
	int64_t t0 = util_now_ms(), dt;

	(void)state;
	pair_open(&p);
	assert_int_equal(conn_wait(p.c, 200, &err), -ETIMEDOUT);
	dt = util_now_ms() - t0;
	assert_true(dt >= 200 && dt < 1000);
	/* an expected end of a wait, not an error to report */
	assert_int_equal(err.code, 0);
	assert_int_equal(conn_wait(p.c, 0, &err), -ETIMEDOUT);
	pair_close(&p);
}

static void
test_wait_data_and_buffered(void **state)
{
	struct pair p;
	struct mp_err err = { 0 };
	const char *line;
	size_t len;
	int64_t t0;

	(void)state;
	pair_open(&p);
	send_str(p.peer, "a\r\nb\r\n");
	assert_int_equal(conn_wait(p.c, 1000, &err), 0);
	/* nothing is consumed by the wait */
	assert_int_equal(conn_read_line(p.c, &line, &len, &err), 0);
	assert_string_equal(line, "a");
	/* "b" is buffered, the socket is empty: ready at once */
	assert_true(conn_buffered(p.c) > 0);
	t0 = util_now_ms();
	assert_int_equal(conn_wait(p.c, 1000, &err), 0);
	assert_true(util_now_ms() - t0 < 100);
	assert_int_equal(conn_read_line(p.c, &line, &len, &err), 0);
	assert_string_equal(line, "b");
	pair_close(&p);
}

static void
waitpid_ok(pid_t pid)
{
	int status = 0;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void
test_wait_longer_than_timeout(void **state)
{
	/* The connection's timeout is 1 s; a wait is bounded by its own. */
	struct pair p;
	struct mp_err err = { 0 };
	pid_t pid;

	(void)state;
	pair_open(&p);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		usleep(1500 * 1000);
		send_str(p.peer, "* 1 EXISTS\r\n");
		_exit(0);
	}
	assert_int_equal(conn_wait(p.c, 5000, &err), 0);
	assert_int_equal(err.code, 0);
	pair_close(&p);
	waitpid_ok(pid);
}

static volatile sig_atomic_t ticks;

static void
on_alarm(int sig)
{
	(void)sig;
	ticks++;
}

static void
test_wait_eintr(void **state)
{
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART }, old;
	struct itimerval tv = { .it_value = { 0, 100000 } };
	struct pair p;
	struct mp_err err = { 0 };
	int64_t t0, dt;

	(void)state;
	pair_open(&p);
	ticks = 0;
	/* even with SA_RESTART: the caller must get to look at its flag */
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	t0 = util_now_ms();
	assert_int_equal(setitimer(ITIMER_REAL, &tv, NULL), 0);
	assert_int_equal(conn_wait(p.c, 5000, &err), -EINTR);
	dt = util_now_ms() - t0;
	sigaction(SIGALRM, &old, NULL);
	assert_int_equal(ticks, 1);
	assert_true(dt >= 90 && dt < 2000);
	assert_int_equal(err.code, 0);
	pair_close(&p);
}

static void
test_wait_eof(void **state)
{
	struct pair p;
	struct mp_err err = { 0 };
	const char *line;
	size_t len;

	(void)state;
	pair_open(&p);
	shutdown(p.peer, SHUT_WR);
	/* readable; the end itself is the next read's to report */
	assert_int_equal(conn_wait(p.c, 1000, &err), 0);
	assert_int_equal(err.code, 0);
	assert_int_equal(conn_read_line(p.c, &line, &len, &err), -ECONNRESET);
	pair_close(&p);
}

/* ---- TLS: a throw-away CA, a server, a client certificate ---------------- */

struct pki {
	char dir[64];
	char ca[96], srv_cert[96], srv_key[96], cli_cert[96], cli_key[96], cli_both[96],
	     other_key[96];
	X509 *srv;                 /* the server's certificate, for the end-point hash */
};

static EVP_PKEY *
ec_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* A certificate for key named cn, signed by issuer (self-signed when NULL) with md. */
static X509 *
make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *ikey, const EVP_MD *md,
	  bool ca, long serial)
{
	X509 *x = X509_new();
	X509_NAME *name;

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	add_ext(x, issuer ? issuer : x, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
	if (!ca)
		add_ext(x, issuer, NID_subject_alt_name, "IP:127.0.0.1");
	assert_true(X509_sign(x, ikey ? ikey : key, md) > 0);
	return x;
}

static void
write_pem(const char *path, X509 *cert, EVP_PKEY *key, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	FILE *f;

	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, mode), 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	if (cert)
		assert_int_equal(PEM_write_X509(f, cert), 1);
	if (key)
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(fclose(f), 0);
}

/* The CA, a server certificate signed with SHA-384, a client certificate. */
static void
pki_make(struct pki *k)
{
	EVP_PKEY *cak = ec_key(), *sk = ec_key(), *ck = ec_key(), *ok = ec_key();
	X509 *ca, *cli;

	snprintf(k->dir, sizeof(k->dir), "/tmp/test_conn.XXXXXX");
	assert_non_null(mkdtemp(k->dir));
#define P(f, n) snprintf(k->f, sizeof(k->f), "%s/" n, k->dir)
	P(ca, "ca.pem");
	P(srv_cert, "srv.pem");
	P(srv_key, "srv.key");
	P(cli_cert, "cli.pem");
	P(cli_key, "cli.key");
	P(cli_both, "both.pem");
	P(other_key, "other.key");
#undef P
	ca = make_cert(cak, "test CA", NULL, NULL, EVP_sha256(), true, 1);
	k->srv = make_cert(sk, "server", ca, cak, EVP_sha384(), false, 2);
	cli = make_cert(ck, "client", ca, cak, EVP_sha256(), false, 3);
	write_pem(k->ca, ca, NULL, 0644);
	write_pem(k->srv_cert, k->srv, NULL, 0644);
	write_pem(k->srv_key, NULL, sk, 0600);
	write_pem(k->cli_cert, cli, NULL, 0644);
	write_pem(k->cli_key, NULL, ck, 0600);
	write_pem(k->cli_both, cli, ck, 0600);
	write_pem(k->other_key, NULL, ok, 0600);
	X509_free(ca);
	X509_free(cli);
	EVP_PKEY_free(cak);
	EVP_PKEY_free(sk);
	EVP_PKEY_free(ck);
	EVP_PKEY_free(ok);
}

static void
pki_free(struct pki *k)
{
	const char *files[] = { k->ca, k->srv_cert, k->srv_key, k->cli_cert, k->cli_key,
				k->cli_both, k->other_key };

	for (size_t i = 0; i < ARRAY_SIZE(files); i++)
		unlink(files[i]);
	rmdir(k->dir);
	X509_free(k->srv);
}

/* What the server saw, sent to the test through a pipe. */
struct seen {
	unsigned char exporter[32];
	int version;
	char client_cn[64];        /* "" when no client certificate came */
};

/*
 * The forked server: one TLS handshake (up to max_version; asking for a
 * client certificate signed by the CA when want_client), then it reports
 * what it saw and waits for the client to close.
 */
static pid_t
tls_server(const struct pki *k, int lfd, int max_version, bool want_client, int *ret_rd)
{
	int fds[2];
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct seen seen = { .version = 0 };
		SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
		SSL *ssl;
		X509 *peer;
		char buf[64];
		int cfd;

		alarm(20);
		close(fds[0]);
		if (!ctx || SSL_CTX_use_certificate_file(ctx, k->srv_cert, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, k->srv_key, SSL_FILETYPE_PEM) != 1)
			_exit(2);
		SSL_CTX_set_max_proto_version(ctx, max_version);
		if (want_client) {
			SSL_CTX_load_verify_locations(ctx, k->ca, NULL);
			SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		}
		cfd = accept(lfd, NULL, NULL);
		ssl = SSL_new(ctx);
		if (cfd < 0 || !ssl || SSL_set_fd(ssl, cfd) != 1)
			_exit(2);
		if (SSL_accept(ssl) == 1) {
			seen.version = SSL_version(ssl);
			if (SSL_export_keying_material(ssl, seen.exporter, 32,
						       "EXPORTER-Channel-Binding", 24, NULL, 0, 0) != 1)
				_exit(3);
			peer = SSL_get0_peer_certificate(ssl);
			if (peer)
				X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
							  seen.client_cn, sizeof(seen.client_cn));
		}
		if (write(fds[1], &seen, sizeof(seen)) != (ssize_t)sizeof(seen))
			_exit(4);
		while (seen.version && SSL_read(ssl, buf, sizeof(buf)) > 0)
			;
		_exit(0);
	}
	close(fds[1]);
	*ret_rd = fds[0];
	return pid;
}

static struct seen
read_seen(int fd)
{
	struct seen seen;

	assert_int_equal(read(fd, &seen, sizeof(seen)), (ssize_t)sizeof(seen));
	close(fd);
	return seen;
}

/* conn_open() with TLS to the listener, trusting the test CA. */
static int
tls_open(const struct pki *k, unsigned port, const char *cert, const char *key,
	 struct conn **ret, struct mp_err *err)
{
	const struct conn_opts o = {
		.host = "127.0.0.1", .port = port, .ca_file = k->ca, .timeout_ms = 5000,
		.cert_file = cert, .key_file = key,
	};

	mp_err_clear(err);
	*ret = NULL;
	return conn_open(&o, true, ret, err);
}

static void
test_cb_without_tls(void **state)
{
	unsigned char buf[CONN_CB_MAX];
	const char *type = NULL;
	struct pair p;

	(void)state;
	pair_open(&p);
	assert_int_equal(conn_channel_binding(p.c, &type, buf), -ENOTSUP);
	assert_null(type);
	pair_close(&p);
}

/* TLS 1.3: tls-exporter, the very bytes the server exports (RFC 9266). */
static void
test_cb_tls13_exporter(void **state)
{
	unsigned char buf[CONN_CB_MAX];
	const char *type = NULL;
	struct mp_err err;
	struct pki k;
	struct fake f;
	struct conn *c;
	struct seen seen;
	pid_t pid;
	int rd;

	(void)state;
	pki_make(&k);
	fake_listen(&f);
	pid = tls_server(&k, f.lfd, TLS1_3_VERSION, false, &rd);
	assert_int_equal(tls_open(&k, f.port, NULL, NULL, &c, &err), 0);
	seen = read_seen(rd);
	assert_int_equal(seen.version, TLS1_3_VERSION);
	assert_int_equal(conn_channel_binding(c, &type, buf), 32);
	assert_string_equal(type, "tls-exporter");
	assert_memory_equal(buf, seen.exporter, 32);
	conn_close(c);
	waitpid_ok(pid);
	close(f.lfd);
	pki_free(&k);
}

/* TLS 1.2: tls-server-end-point, hashed with the certificate's own SHA-384 (RFC 5929). */
static void
test_cb_tls12_end_point(void **state)
{
	unsigned char buf[CONN_CB_MAX], want[EVP_MAX_MD_SIZE];
	unsigned int wlen = 0;
	const char *type = NULL;
	struct mp_err err;
	struct pki k;
	struct fake f;
	struct conn *c;
	struct seen seen;
	pid_t pid;
	int rd;

	(void)state;
	pki_make(&k);
	assert_int_equal(X509_digest(k.srv, EVP_sha384(), want, &wlen), 1);
	fake_listen(&f);
	pid = tls_server(&k, f.lfd, TLS1_2_VERSION, false, &rd);
	assert_int_equal(tls_open(&k, f.port, NULL, NULL, &c, &err), 0);
	seen = read_seen(rd);
	assert_int_equal(seen.version, TLS1_2_VERSION);
	assert_int_equal(conn_channel_binding(c, &type, buf), 48);
	assert_string_equal(type, "tls-server-end-point");
	assert_memory_equal(buf, want, wlen);
	conn_close(c);
	waitpid_ok(pid);
	close(f.lfd);
	pki_free(&k);
}

/* The client certificate is offered; the key in its own file or with the chain. */
static void
test_client_cert(void **state)
{
	struct mp_err err;
	struct pki k;
	struct fake f;
	struct conn *c;
	struct seen seen;
	pid_t pid;
	int rd;

	(void)state;
	pki_make(&k);
	fake_listen(&f);
	/* without one, a server that requires it refuses the handshake */
	pid = tls_server(&k, f.lfd, TLS1_2_VERSION, true, &rd);
	assert_int_not_equal(tls_open(&k, f.port, NULL, NULL, &c, &err), 0);
	assert_int_equal(read_seen(rd).version, 0);
	waitpid_ok(pid);

	pid = tls_server(&k, f.lfd, TLS1_3_VERSION, true, &rd);
	assert_int_equal(tls_open(&k, f.port, k.cli_cert, k.cli_key, &c, &err), 0);
	seen = read_seen(rd);
	assert_string_equal(seen.client_cn, "client");
	conn_close(c);
	waitpid_ok(pid);

	pid = tls_server(&k, f.lfd, TLS1_2_VERSION, true, &rd);
	assert_int_equal(tls_open(&k, f.port, k.cli_both, NULL, &c, &err), 0);
	seen = read_seen(rd);
	assert_string_equal(seen.client_cn, "client");
	conn_close(c);
	waitpid_ok(pid);
	close(f.lfd);
	pki_free(&k);
}

/*
 * A key file others can read, a key that is not the certificate's, a file
 * that is not there: refused before the handshake, naming the file.
 */
static void
test_client_cert_refused(void **state)
{
	char want[256];
	struct mp_err err;
	struct pki k;
	struct fake f;
	struct conn *c;

	(void)state;
	pki_make(&k);
	fake_listen(&f);
	/* never accepted: room for every connection in the backlog */
	assert_int_equal(listen(f.lfd, 16), 0);
	assert_int_equal(chmod(k.cli_key, 0640), 0);
	assert_int_equal(tls_open(&k, f.port, k.cli_cert, k.cli_key, &c, &err), -EACCES);
	assert_null(c);
	assert_int_equal(err.ex, MP_EX_CONFIG);
	snprintf(want, sizeof(want), "chmod 600 %s", k.cli_key);
	assert_non_null(strstr(err.msg, want));
	/* the key in the certificate file: that file's mode counts */
	assert_int_equal(chmod(k.cli_both, 0604), 0);
	assert_int_equal(tls_open(&k, f.port, k.cli_both, NULL, &c, &err), -EACCES);
	assert_non_null(strstr(err.msg, k.cli_both));

	assert_int_equal(tls_open(&k, f.port, k.cli_cert, k.other_key, &c, &err), -EINVAL);
	assert_int_equal(err.ex, MP_EX_CONFIG);
	assert_non_null(strstr(err.msg, "does not match"));
	assert_non_null(strstr(err.msg, k.other_key));

	assert_int_equal(tls_open(&k, f.port, "/nonexistent/cert.pem", k.cli_key, &c, &err),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "/nonexistent/cert.pem"));
	/* a certificate file holding no key, and no key file */
	assert_int_equal(tls_open(&k, f.port, k.cli_cert, NULL, &c, &err), -EACCES);
	assert_int_equal(chmod(k.cli_cert, 0600), 0);
	assert_int_equal(tls_open(&k, f.port, k.cli_cert, NULL, &c, &err), -EINVAL);
	assert_non_null(strstr(err.msg, k.cli_cert));
	close(f.lfd);
	pki_free(&k);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wait_timeout),
		cmocka_unit_test(test_wait_data_and_buffered),
		cmocka_unit_test(test_wait_longer_than_timeout),
		cmocka_unit_test(test_wait_eintr),
		cmocka_unit_test(test_wait_eof),
		cmocka_unit_test(test_cb_without_tls),
		cmocka_unit_test(test_cb_tls13_exporter),
		cmocka_unit_test(test_cb_tls12_end_point),
		cmocka_unit_test(test_client_cert),
		cmocka_unit_test(test_client_cert_refused),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
