/*
 * SASL encoders against published vectors, base64 both ways, mechanism
 * choice, and the client side of whole exchanges for every mechanism,
 * SCRAM against a server written here from RFC 5802 section 3.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "mailpull/sasl.h"

static void
test_plain_rfc4616(void **state)
{
	char *b64 = NULL;

	(void)state;
	/* RFC 4616 section 4: authcid "tim", password "tanstaaftanstaaf". */
	assert_int_equal(sasl_plain("tim", "tanstaaftanstaaf", &b64), 0);
	assert_string_equal(b64, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
	sasl_free(b64);
	assert_int_equal(sasl_plain(NULL, "x", &b64), -EINVAL);
}

static void
test_xoauth2(void **state)
{
	char *b64 = NULL;

	(void)state;
	/* The example in Google's XOAUTH2 protocol documentation. */
	assert_int_equal(sasl_xoauth2("someuser@example.com",
				      "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg", &b64), 0);
	assert_string_equal(b64, "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRm"
			    "dDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==");
	sasl_free(b64);
	assert_int_equal(sasl_xoauth2("a\001b", "t", &b64), -EINVAL);
	assert_int_equal(sasl_xoauth2("a", "t\001", &b64), -EINVAL);
}

static void
test_oauthbearer_rfc7628(void **state)
{
	char *b64 = NULL;

	(void)state;
	/* RFC 7628 section 4.1, the initial client response. */
	assert_int_equal(sasl_oauthbearer("user@example.com", "server.example.com", 143,
					  "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", &b64), 0);
	assert_string_equal(b64, "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBv"
			    "cnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1s"
			    "emRHRXVZMjl0Q2c9PQEB");
	sasl_free(b64);
}

static void
test_oauthbearer_escape(void **state)
{
	char *b64 = NULL, *raw = NULL;
	size_t len;
	const char want[] = "n,a=a=3Db=2Cc,\001host=h\001port=995\001auth=Bearer T\001\001";

	(void)state;
	assert_int_equal(sasl_oauthbearer("a=b,c", "h", 995, "T", &b64), 0);
	assert_string_equal(b64, "bixhPWE9M0RiPTJDYywBaG9zdD1oAXBvcnQ9OTk1AWF1dGg9"
			    "QmVhcmVyIFQBAQ==");
	assert_int_equal(sasl_base64_decode(b64, strlen(b64), &raw, &len), 0);
	assert_int_equal(len, sizeof(want) - 1);
	assert_memory_equal(raw, want, len);
	sasl_free(raw);
	sasl_free(b64);
	assert_int_equal(sasl_oauthbearer("u", "h", 70000, "T", &b64), -EINVAL);
}

static void
test_base64_roundtrip(void **state)
{
	unsigned char data[300];

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 37 + 11);
	for (size_t len = 0; len < sizeof(data); len++) {
		char *enc = NULL, *dec = NULL;
		size_t declen = 0;

		assert_int_equal(sasl_base64_encode(data, len, &enc), 0);
		assert_int_equal(strlen(enc), (len + 2) / 3 * 4);
		assert_int_equal(sasl_base64_decode(enc, strlen(enc), &dec, &declen), 0);
		assert_int_equal(declen, len);
		assert_memory_equal(dec, data, len);
		assert_int_equal(dec[len], '\0');
		free(enc);
		free(dec);
	}
}

static void
test_base64_vectors(void **state)
{
	/* RFC 4648 section 10. */
	static const char *const v[][2] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *enc = NULL;

		assert_int_equal(sasl_base64_encode(v[i][0], strlen(v[i][0]), &enc), 0);
		assert_string_equal(enc, v[i][1]);
		free(enc);
	}
}

static void
test_base64_bad(void **state)
{
	static const char *const bad[] = {
		"Zg=", "Zg", "Z===", "====", "Zm9v!A==", "Zm=v", "Zh==", "Zm9=", "Zg==Zg==",
		"Zm9v\r\n", " Zm9", "Zm-v", "Z\x80==",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *dec = NULL;
		size_t len;

		if (sasl_base64_decode(bad[i], strlen(bad[i]), &dec, &len) != -EBADMSG)
			fail_msg("accepted bad base64 \"%s\"", bad[i]);
		assert_null(dec);
	}
}

static void
test_mech_names(void **state)
{
	enum sasl_mech m;

	(void)state;
	assert_int_equal(sasl_mech_from_string("plain", &m), 0);
	assert_int_equal(m, SASL_PLAIN);
	assert_int_equal(sasl_mech_from_string("OAuthBearer", &m), 0);
	assert_int_equal(m, SASL_OAUTHBEARER);
	assert_int_equal(sasl_mech_from_string("CRAM-MD5", &m), -EINVAL);
	assert_int_equal(sasl_mech_from_string("", &m), -EINVAL);
	assert_int_equal(sasl_mech_from_string("PLAINX", &m), -EINVAL);
	for (int i = 0; i < SASL_MECH_MAX; i++) {
		const char *name = sasl_mech_to_string((enum sasl_mech)i);

		assert_int_equal(sasl_mech_from_string(name, &m), 0);
		assert_int_equal(m, i);
	}
}

static void
test_choose(void **state)
{
	enum sasl_mech m = SASL_MECH_MAX;

	(void)state;
	/* automatic: PLAIN, then LOGIN, then USER; never OAuth by itself */
	assert_int_equal(sasl_choose("LOGIN PLAIN", true, false, NULL, &m), 0);
	assert_int_equal(m, SASL_PLAIN);
	assert_int_equal(sasl_choose("login xoauth2", true, false, NULL, &m), 0);
	assert_int_equal(m, SASL_LOGIN);
	assert_int_equal(sasl_choose("XOAUTH2 OAUTHBEARER", true, false, NULL, &m), 0);
	assert_int_equal(m, SASL_USER);
	assert_int_equal(sasl_choose("XOAUTH2 OAUTHBEARER", false, false, NULL, &m), -ENOENT);
	assert_int_equal(sasl_choose(NULL, false, false, NULL, &m), -ENOENT);
	assert_int_equal(sasl_choose("", true, false, NULL, &m), 0);
	assert_int_equal(m, SASL_USER);
	/* PLAINX is not PLAIN */
	assert_int_equal(sasl_choose("PLAINX", false, false, NULL, &m), -ENOENT);
	/* wanted order wins over the server's order */
	assert_int_equal(sasl_choose("PLAIN XOAUTH2", true, false, "xoauth2, plain", &m), 0);
	assert_int_equal(m, SASL_XOAUTH2);
	assert_int_equal(sasl_choose("PLAIN", true, false, "oauthbearer,plain", &m), 0);
	assert_int_equal(m, SASL_PLAIN);
	assert_int_equal(sasl_choose("PLAIN", true, false, "user", &m), 0);
	assert_int_equal(m, SASL_USER);
	assert_int_equal(sasl_choose("PLAIN", false, false, "user", &m), -ENOENT);
	assert_int_equal(sasl_choose("PLAIN", true, false, "login", &m), -ENOENT);
	/* an unknown name is a configuration error, even after one that fits */
	assert_int_equal(sasl_choose("PLAIN", true, false, "plain cram-md5", &m), -EINVAL);
	assert_int_equal(sasl_choose("PLAIN", true, false, "", &m), -ENOENT);
}

/* ---- sasl_choose() with channel binding, sasl_offered() ------------------------ */

#define ALL_SCRAM "SCRAM-SHA-1 SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-256-PLUS"

static enum sasl_mech
choose(const char *server, bool user_ok, bool cb_ok, const char *wanted)
{
	enum sasl_mech m = SASL_MECH_MAX;
	int r = sasl_choose(server, user_ok, cb_ok, wanted, &m);

	if (r < 0)
		return (enum sasl_mech)(SASL_MECH_MAX + 1 + (r == -EINVAL));
	return m;
}

#define NOTHING ((enum sasl_mech)(SASL_MECH_MAX + 1))
#define UNKNOWN ((enum sasl_mech)(SASL_MECH_MAX + 2))

static void
test_choose_order(void **state)
{
	(void)state;
	/*
	 * automatic: SCRAM-SHA-256-PLUS, SCRAM-SHA-1-PLUS, SCRAM-SHA-256, SCRAM-SHA-1,
	 * PLAIN, LOGIN, USER
	 */
	assert_int_equal(choose("PLAIN LOGIN " ALL_SCRAM, true, true, NULL),
			 SASL_SCRAM_SHA_256_PLUS);
	assert_int_equal(choose("PLAIN LOGIN " ALL_SCRAM, true, false, NULL), SASL_SCRAM_SHA_256);
	/* binding before the hash: a stripped SCRAM-SHA-256-PLUS leaves the other -PLUS */
	assert_int_equal(choose("PLAIN SCRAM-SHA-1 SCRAM-SHA-1-PLUS SCRAM-SHA-256", true, true,
				NULL), SASL_SCRAM_SHA_1_PLUS);
	assert_int_equal(choose("PLAIN SCRAM-SHA-1 SCRAM-SHA-1-PLUS SCRAM-SHA-256", true, false,
				NULL), SASL_SCRAM_SHA_256);
	assert_int_equal(choose("PLAIN SCRAM-SHA-1 SCRAM-SHA-1-PLUS", true, true, NULL),
			 SASL_SCRAM_SHA_1_PLUS);
	assert_int_equal(choose("PLAIN SCRAM-SHA-1 SCRAM-SHA-1-PLUS", true, false, NULL),
			 SASL_SCRAM_SHA_1);
	assert_int_equal(choose("plain scram-sha-1", true, true, NULL), SASL_SCRAM_SHA_1);
	/* a -PLUS alone, without binding data, is never chosen */
	assert_int_equal(choose("SCRAM-SHA-256-PLUS LOGIN", true, false, NULL), SASL_LOGIN);
	assert_int_equal(choose("SCRAM-SHA-256-PLUS", false, false, NULL), NOTHING);
	/* EXTERNAL and the OAuth mechanisms only when named */
	assert_int_equal(choose("EXTERNAL XOAUTH2 OAUTHBEARER", true, true, NULL), SASL_USER);
	assert_int_equal(choose("EXTERNAL PLAIN", true, true, "external"), SASL_EXTERNAL);
	assert_int_equal(choose("PLAIN", true, true, "external"), NOTHING);
}

static void
test_choose_wanted(void **state)
{
	(void)state;
	/* "scram" stands for the four, strongest first */
	assert_int_equal(choose(ALL_SCRAM " PLAIN", true, true, "scram"), SASL_SCRAM_SHA_256_PLUS);
	assert_int_equal(choose(ALL_SCRAM " PLAIN", true, false, "SCRAM"), SASL_SCRAM_SHA_256);
	assert_int_equal(choose("SCRAM-SHA-1 PLAIN", true, true, "scram, plain"), SASL_SCRAM_SHA_1);
	assert_int_equal(choose("PLAIN", true, true, "scram plain"), SASL_PLAIN);
	assert_int_equal(choose("PLAIN", true, true, "scram"), NOTHING);
	assert_int_equal(choose("PLAIN", true, true, "scrams"), UNKNOWN);
	/* the list's order wins */
	assert_int_equal(choose(ALL_SCRAM " PLAIN", true, true, "scram-sha-1 scram"),
			 SASL_SCRAM_SHA_1);
	assert_int_equal(choose(ALL_SCRAM, true, true, "scram-sha-1-plus"), SASL_SCRAM_SHA_1_PLUS);
	/* a -PLUS named but impossible without TLS: the next one */
	assert_int_equal(choose(ALL_SCRAM, true, false, "scram-sha-256-plus scram-sha-1"),
			 SASL_SCRAM_SHA_1);
	assert_int_equal(choose(ALL_SCRAM, true, false, "scram-sha-256-plus"), NOTHING);
	assert_int_equal(choose(ALL_SCRAM, true, true, "plain scram-sha-512"), UNKNOWN);
}

static void
test_offered(void **state)
{
	(void)state;
	assert_true(sasl_offered("PLAIN SCRAM-SHA-256-PLUS", SASL_SCRAM_SHA_256_PLUS));
	assert_true(sasl_offered("plain,scram-sha-256", SASL_SCRAM_SHA_256));
	assert_false(sasl_offered("SCRAM-SHA-256-PLUS", SASL_SCRAM_SHA_256));
	assert_false(sasl_offered("SCRAM-SHA-256", SASL_SCRAM_SHA_256_PLUS));
	assert_false(sasl_offered(NULL, SASL_PLAIN));
	assert_false(sasl_offered("", SASL_PLAIN));
	assert_false(sasl_offered("PLAIN", SASL_USER));
}

/* ---- sasl_session: the simple mechanisms ------------------------------------ */

static struct sasl_session *
client(enum sasl_mech mech, const char *user, const char *secret)
{
	struct sasl_params p = { .mech = mech, .user = user, .secret = secret,
				 .host = "mail.example.org", .port = 993 };
	struct sasl_session *c = NULL;

	assert_int_equal(sasl_session_new(&p, &c), 0);
	assert_int_equal(sasl_session_mech(c), mech);
	assert_string_equal(sasl_session_error(c), "");
	assert_string_equal(sasl_session_detail(c), "");
	return c;
}

/* Answers chal (plain text, base64'd here) and checks the decoded answer. */
static void
step_expect(struct sasl_session *c, const char *chal, const char *want, size_t want_len)
{
	char *c64 = NULL, *resp = NULL, *raw = NULL;
	size_t len = 0;

	assert_int_equal(sasl_base64_encode(chal, strlen(chal), &c64), 0);
	assert_int_equal(sasl_session_step(c, c64, strlen(c64), &resp), 0);
	assert_int_equal(sasl_base64_decode(resp, strlen(resp), &raw, &len), 0);
	assert_int_equal(len, want_len);
	assert_memory_equal(raw, want, len);
	sasl_free(raw);
	sasl_free(resp);
	free(c64);
}

static void
step_fails(struct sasl_session *c, const char *chal_b64, int code)
{
	char *resp = NULL;

	assert_int_equal(sasl_session_step(c, chal_b64, strlen(chal_b64), &resp), code);
	assert_null(resp);
	assert_string_not_equal(sasl_session_error(c), "");
}

static void
test_client_plain(void **state)
{
	struct sasl_session *c;
	char *ir = NULL;

	(void)state;
	c = client(SASL_PLAIN, "tim", "tanstaaftanstaaf");
	assert_int_equal(sasl_session_initial(c, &ir), 0);
	assert_string_equal(ir, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
	sasl_free(ir);
	step_fails(c, "", -EPROTO);
	assert_int_equal(sasl_session_finish(c), -EPROTO);
	sasl_session_free(c);

	/* without SASL-IR: the initial response answers the empty challenge */
	c = client(SASL_PLAIN, "tim", "tanstaaftanstaaf");
	step_expect(c, "", "\0tim\0tanstaaftanstaaf", 21);
	assert_int_equal(sasl_session_finish(c), 0);
	sasl_session_free(c);
}

static void
test_client_login(void **state)
{
	struct sasl_session *c = client(SASL_LOGIN, "tim", "secret");
	char *ir = (char *)"x";

	(void)state;
	assert_int_equal(sasl_session_initial(c, &ir), 0);
	assert_null(ir);
	/* whatever the prompts say */
	step_expect(c, "Password:", "tim", 3);
	step_expect(c, "Username:", "secret", 6);
	step_fails(c, "", -EPROTO);
	sasl_session_free(c);

	c = client(SASL_LOGIN, "tim", "secret");
	step_expect(c, "", "tim", 3);
	step_expect(c, "", "secret", 6);
	assert_int_equal(sasl_session_finish(c), 0);
	sasl_session_free(c);
}

static void
test_client_oauth(void **state)
{
	const char json[] = "{\"status\":\"invalid_token\",\"scope\":\"x\x1b[2J\"}";
	struct sasl_session *c;
	char *ir = NULL, *j64 = NULL, *resp = NULL;

	(void)state;
	assert_int_equal(sasl_base64_encode(json, strlen(json), &j64), 0);
	c = client(SASL_OAUTHBEARER, "user@example.com", "tok");
	assert_int_equal(sasl_session_initial(c, &ir), 0);
	sasl_free(ir);
	/* RFC 7628 section 3.2.3: the error report, answered with %x01 */
	assert_int_equal(sasl_session_step(c, j64, strlen(j64), &resp), 0);
	assert_string_equal(resp, "AQ==");
	sasl_free(resp);
	assert_string_equal(sasl_session_detail(c),
			    "{\"status\":\"invalid_token\",\"scope\":\"x\\x1b[2J\"}");
	step_fails(c, j64, -EPROTO);
	sasl_session_free(c);

	c = client(SASL_XOAUTH2, "user@example.com", "tok");
	assert_int_equal(sasl_session_initial(c, &ir), 0);
	sasl_free(ir);
	assert_int_equal(sasl_session_step(c, j64, strlen(j64), &resp), 0);
	assert_string_equal(resp, "");
	sasl_free(resp);
	assert_non_null(strstr(sasl_session_detail(c), "invalid_token"));
	sasl_session_free(c);

	/* the initial response through the first challenge, then a report not in base64 */
	c = client(SASL_XOAUTH2, "u", "t");
	step_expect(c, "", "user=u\001auth=Bearer t\001\001", 22);
	step_fails(c, "{not base64}", -EBADMSG);
	sasl_session_free(c);
	free(j64);
}

static void
test_client_external(void **state)
{
	struct sasl_params p = { .mech = SASL_EXTERNAL, .user = "" };
	struct sasl_session *c = NULL;
	char *ir = NULL;

	(void)state;
	assert_int_equal(sasl_session_new(&p, &c), 0);
	assert_int_equal(sasl_session_initial(c, &ir), 0);
	assert_string_equal(ir, "");
	sasl_free(ir);
	step_fails(c, "", -EPROTO);
	sasl_session_free(c);

	p.user = NULL;
	assert_int_equal(sasl_session_new(&p, &c), 0);
	step_expect(c, "", "", 0);
	assert_int_equal(sasl_session_finish(c), 0);
	sasl_session_free(c);

	/* RFC 4422 appendix A: an authorization identity when a user is named */
	p.user = "fred@example.org";
	assert_int_equal(sasl_session_new(&p, &c), 0);
	assert_int_equal(sasl_session_initial(c, &ir), 0);
	assert_string_equal(ir, "ZnJlZEBleGFtcGxlLm9yZw==");
	sasl_free(ir);
	sasl_session_free(c);
}

static void
test_client_new_bad(void **state)
{
	static const unsigned char cb[32] = { 1 };
	struct sasl_params p = { .mech = SASL_USER, .user = "u", .secret = "s" };
	struct sasl_session *c = NULL;

	(void)state;
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.mech = SASL_MECH_MAX;
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.mech = SASL_PLAIN;
	p.secret = NULL;
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.secret = "s";
	p.user = NULL;
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.user = "";
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.user = "u\001";
	p.mech = SASL_XOAUTH2;
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.user = "u";
	p.mech = SASL_OAUTHBEARER;
	p.port = 65536;
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.port = 0;
	/* -PLUS needs channel binding data */
	p.mech = SASL_SCRAM_SHA_256_PLUS;
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.cb_type = "tls-exporter";
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.cb_data = cb;
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.cb_type = NULL;
	p.cb_len = sizeof(cb);
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.mech = SASL_SCRAM_SHA_1_PLUS;
	assert_int_equal(sasl_session_new(&p, &c), -EINVAL);
	p.cb_type = "tls-server-end-point";
	assert_int_equal(sasl_session_new(&p, &c), 0);
	sasl_session_free(c);
	sasl_session_free(NULL);
}

/* ---- sasl_session: SCRAM against a server written from RFC 5802 section 3 ------ */

#define SALT "QSXCR+Q6sek8bf92"

struct server {
	const EVP_MD *md;
	unsigned hl;
	const char *password;      /* as the server stored it */
	unsigned iter;
	char first_bare[512];      /* client-first-message-bare */
	char nonce[256];
	char server_first[1024];
	unsigned char server_sig[EVP_MAX_MD_SIZE];
};

static bool
sha1_mech(enum sasl_mech m)
{
	return m == SASL_SCRAM_SHA_1 || m == SASL_SCRAM_SHA_1_PLUS;
}

static struct sasl_session *
scram_client(const struct sasl_params *p, struct server *srv, const char *want_gs2)
{
	struct sasl_session *c = NULL;
	char *ir = NULL, *raw = NULL;
	size_t len = 0, glen = strlen(want_gs2);

	assert_int_equal(sasl_session_new(p, &c), 0);
	assert_int_equal(sasl_session_initial(c, &ir), 0);
	assert_int_equal(sasl_base64_decode(ir, strlen(ir), &raw, &len), 0);
	if (strncmp(raw, want_gs2, glen) != 0)
		fail_msg("client-first \"%s\" does not start with \"%s\"", raw, want_gs2);
	snprintf(srv->first_bare, sizeof(srv->first_bare), "%s", raw + glen);
	assert_non_null(strstr(srv->first_bare, ",r="));
	snprintf(srv->nonce, sizeof(srv->nonce), "%s", strstr(srv->first_bare, ",r=") + 3);
	sasl_free(raw);
	sasl_free(ir);
	srv->md = sha1_mech(p->mech) ? EVP_sha1() : EVP_sha256();
	srv->hl = (unsigned)EVP_MD_get_size(srv->md);
	snprintf(srv->server_first, sizeof(srv->server_first),
		 "r=%s3rfcNHYJY1ZVvWVs7j,s=" SALT ",i=%u", srv->nonce, srv->iter);
	return c;
}

/*
 * Checks the client's final message (c= against want_cbind, the nonce,
 * the proof) and computes the server signature.
 */
static void
server_check_final(struct server *srv, const char *final, const unsigned char *want_cbind,
		   size_t want_cbind_len)
{
	unsigned char salt[16], salted[EVP_MAX_MD_SIZE], ck[EVP_MAX_MD_SIZE], sk[EVP_MAX_MD_SIZE];
	unsigned char cs[EVP_MAX_MD_SIZE], svk[EVP_MAX_MD_SIZE];
	char am[2048], *proof = NULL, *want_c64 = NULL;
	const char *p = strstr(final, ",p=");
	size_t plen = 0, clen = 0;
	unsigned int n;

	assert_non_null(p);
	assert_int_equal(EVP_DecodeBlock(salt, (const unsigned char *)SALT, 16), 12);
	assert_int_equal(PKCS5_PBKDF2_HMAC(srv->password, (int)strlen(srv->password), salt, 12,
					   (int)srv->iter, srv->md, (int)srv->hl, salted), 1);
	HMAC(srv->md, salted, (int)srv->hl, (const unsigned char *)"Client Key", 10, ck, &n);
	EVP_Digest(ck, srv->hl, sk, &n, srv->md, NULL);
	snprintf(am, sizeof(am), "%s,%s,%.*s", srv->first_bare, srv->server_first, (int)(p - final),
		 final);
	HMAC(srv->md, sk, (int)srv->hl, (unsigned char *)am, strlen(am), cs, &n);
	assert_int_equal(sasl_base64_decode(p + 3, strlen(p + 3), &proof, &plen), 0);
	assert_int_equal(plen, srv->hl);
	for (unsigned i = 0; i < srv->hl; i++)
		if (((unsigned char)proof[i] ^ cs[i]) != ck[i])
			fail_msg("the client's proof is wrong");
	HMAC(srv->md, salted, (int)srv->hl, (const unsigned char *)"Server Key", 10, svk, &n);
	HMAC(srv->md, svk, (int)srv->hl, (unsigned char *)am, strlen(am), srv->server_sig, &n);
	/* c= carries the GS2 header and, for "p", the binding data */
	assert_int_equal(sasl_base64_encode(want_cbind, want_cbind_len, &want_c64), 0);
	assert_memory_equal(final, "c=", 2);
	clen = strlen(want_c64);
	assert_memory_equal(final + 2, want_c64, clen);
	assert_memory_equal(final + 2 + clen, ",r=", 3);
	free(want_c64);
	sasl_free(proof);
}

/* The server's step: server-first in, client-final out, checked. */
static void
server_first_step(struct sasl_session *c, struct server *srv, const unsigned char *cbind,
		  size_t cbind_len)
{
	char *sf64 = NULL, *resp = NULL, *final = NULL;

	assert_int_equal(sasl_base64_encode(srv->server_first, strlen(srv->server_first), &sf64),
			 0);
	assert_int_equal(sasl_session_step(c, sf64, strlen(sf64), &resp), 0);
	assert_int_equal(sasl_base64_decode(resp, strlen(resp), &final, NULL), 0);
	server_check_final(srv, final, cbind, cbind_len);
	sasl_free(final);
	sasl_free(resp);
	free(sf64);
}

/* "v=" base64(sig), base64'd as a challenge; sig altered when wrong. */
static char *
server_final_b64(const struct server *srv, bool wrong)
{
	unsigned char sig[EVP_MAX_MD_SIZE];
	char msg[256], *v64 = NULL, *out = NULL;

	memcpy(sig, srv->server_sig, srv->hl);
	if (wrong)
		sig[srv->hl - 1] ^= 1;
	assert_int_equal(sasl_base64_encode(sig, srv->hl, &v64), 0);
	snprintf(msg, sizeof(msg), "v=%s", v64);
	assert_int_equal(sasl_base64_encode(msg, strlen(msg), &out), 0);
	free(v64);
	return out;
}

static void
scram_full(enum sasl_mech mech, const char *password, bool saslprep, const char *stored)
{
	struct sasl_params p = { .mech = mech, .user = "user", .secret = password,
				 .saslprep = saslprep };
	struct server srv = { .password = stored, .iter = 4096 };
	struct sasl_session *c = scram_client(&p, &srv, "n,,");
	char *v = NULL, *resp = NULL;

	server_first_step(c, &srv, (const unsigned char *)"n,,", 3);
	/* before the signature, success is refused */
	v = server_final_b64(&srv, false);
	assert_int_equal(sasl_session_step(c, v, strlen(v), &resp), 0);
	assert_string_equal(resp, "");
	sasl_free(resp);
	assert_int_equal(sasl_session_finish(c), 0);
	assert_string_equal(sasl_session_error(c), "");
	/* a step after the verified signature */
	step_fails(c, v, -EPROTO);
	free(v);
	sasl_session_free(c);
}

static void
test_client_scram_flows(void **state)
{
	(void)state;
	scram_full(SASL_SCRAM_SHA_256, "pencil", true, "pencil");
	scram_full(SASL_SCRAM_SHA_1, "pencil", true, "pencil");
	/* SASLprep: U+00A0 is a space; raw bytes when told so */
	scram_full(SASL_SCRAM_SHA_256, "pen\xc2\xa0" "cil", true, "pen cil");
	scram_full(SASL_SCRAM_SHA_256, "pen\xc2\xa0" "cil", false, "pen\xc2\xa0" "cil");
	scram_full(SASL_SCRAM_SHA_1, "I\xc2\xad" "X", true, "IX");
}

static void
test_client_scram_gs2(void **state)
{
	static const unsigned char cb[32] = { 0xde, 0xad, 0xbe, 0xef, ',', '=' };
	struct sasl_params p = { .mech = SASL_SCRAM_SHA_256, .user = "a,b=c", .secret = "pencil",
				 .cb_type = "tls-exporter", .cb_data = cb, .cb_len = sizeof(cb) };
	struct server srv = { .password = "pencil", .iter = 4096 };
	unsigned char cbind[64];
	struct sasl_session *c;

	(void)state;
	/* could bind, server offered no -PLUS: "y" */
	c = scram_client(&p, &srv, "y,,");
	assert_memory_equal(srv.first_bare, "n=a=2Cb=3Dc,r=", 14);
	server_first_step(c, &srv, (const unsigned char *)"y,,", 3);
	sasl_session_free(c);
	/* the server offers -PLUS, yet plain SCRAM was chosen: "n" */
	p.server_plus = true;
	c = scram_client(&p, &srv, "n,,");
	server_first_step(c, &srv, (const unsigned char *)"n,,", 3);
	sasl_session_free(c);
	/* -PLUS: "p=tls-exporter", and c= binds the data */
	p.mech = SASL_SCRAM_SHA_256_PLUS;
	c = scram_client(&p, &srv, "p=tls-exporter,,");
	memcpy(cbind, "p=tls-exporter,,", 16);
	memcpy(cbind + 16, cb, sizeof(cb));
	server_first_step(c, &srv, cbind, 16 + sizeof(cb));
	sasl_session_free(c);
	p.mech = SASL_SCRAM_SHA_1_PLUS;
	p.cb_type = "tls-server-end-point";
	c = scram_client(&p, &srv, "p=tls-server-end-point,,");
	sasl_session_free(c);
	/* no TLS: "n" */
	p.mech = SASL_SCRAM_SHA_1;
	p.cb_type = NULL;
	p.cb_data = NULL;
	p.cb_len = 0;
	p.server_plus = false;
	c = scram_client(&p, &srv, "n,,");
	sasl_session_free(c);
}

static void
test_client_scram_faults(void **state)
{
	struct sasl_params p = { .mech = SASL_SCRAM_SHA_256, .user = "user", .secret = "pencil" };
	struct server srv = { .password = "pencil", .iter = 4096 };
	struct sasl_session *c;
	char *v, *e64 = NULL;

	(void)state;
	/* a wrong signature */
	c = scram_client(&p, &srv, "n,,");
	server_first_step(c, &srv, (const unsigned char *)"n,,", 3);
	v = server_final_b64(&srv, true);
	step_fails(c, v, -EPROTO);
	assert_non_null(strstr(sasl_session_error(c), "signature is wrong"));
	assert_int_equal(sasl_session_finish(c), -EPROTO);
	free(v);
	sasl_session_free(c);

	/* OK without v=: the server proved nothing */
	c = scram_client(&p, &srv, "n,,");
	server_first_step(c, &srv, (const unsigned char *)"n,,", 3);
	assert_int_equal(sasl_session_finish(c), -EPROTO);
	assert_non_null(strstr(sasl_session_error(c), "without proving"));
	sasl_session_free(c);

	/* an empty final challenge is no signature either */
	c = scram_client(&p, &srv, "n,,");
	server_first_step(c, &srv, (const unsigned char *)"n,,", 3);
	step_fails(c, "", -EPROTO);
	sasl_session_free(c);

	/* i=4095 */
	srv.iter = 4095;
	c = scram_client(&p, &srv, "n,,");
	assert_int_equal(sasl_base64_encode(srv.server_first, strlen(srv.server_first), &e64), 0);
	step_fails(c, e64, -ERANGE);
	assert_non_null(strstr(sasl_session_error(c), "4095"));
	free(e64);
	sasl_session_free(c);
	srv.iter = 4096;

	/* e= from the server */
	c = scram_client(&p, &srv, "n,,");
	assert_int_equal(sasl_base64_encode("e=unknown-user", 14, &e64), 0);
	step_fails(c, e64, -EACCES);
	assert_non_null(strstr(sasl_session_error(c), "unknown-user"));
	assert_string_equal(sasl_session_detail(c), "unknown-user");
	free(e64);
	sasl_session_free(c);

	/* not base64, and an empty server-first */
	c = scram_client(&p, &srv, "n,,");
	step_fails(c, "cj1hYmM", -EBADMSG);
	step_fails(c, "cj1hYmM=", -EPROTO);   /* the exchange failed already */
	sasl_session_free(c);
	c = scram_client(&p, &srv, "n,,");
	step_fails(c, "", -EBADMSG);
	sasl_session_free(c);

	/* the initial response through the first challenge */
	{
		struct sasl_session *c2 = NULL;
		char *resp = NULL, *raw = NULL;

		assert_int_equal(sasl_session_new(&p, &c2), 0);
		assert_int_equal(sasl_session_step(c2, "", 0, &resp), 0);
		assert_int_equal(sasl_base64_decode(resp, strlen(resp), &raw, NULL), 0);
		assert_memory_equal(raw, "n,,n=user,r=", 12);
		sasl_free(raw);
		sasl_free(resp);
		sasl_session_free(c2);
	}
}

static void
test_client_scram_oversize(void **state)
{
	struct sasl_params p = { .mech = SASL_SCRAM_SHA_1, .user = "user", .secret = "pencil" };
	struct server srv = { .password = "pencil", .iter = 4096 };
	struct sasl_session *c = scram_client(&p, &srv, "n,,");
	size_t n = 20000;
	char *big = malloc(n + 1);

	(void)state;
	assert_non_null(big);
	memset(big, 'A', n);
	big[n] = '\0';
	step_fails(c, big, -EBADMSG);
	free(big);
	sasl_session_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_rfc4616),
		cmocka_unit_test(test_xoauth2),
		cmocka_unit_test(test_oauthbearer_rfc7628),
		cmocka_unit_test(test_oauthbearer_escape),
		cmocka_unit_test(test_base64_roundtrip),
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_bad),
		cmocka_unit_test(test_mech_names),
		cmocka_unit_test(test_choose),
		cmocka_unit_test(test_choose_order),
		cmocka_unit_test(test_choose_wanted),
		cmocka_unit_test(test_offered),
		cmocka_unit_test(test_client_plain),
		cmocka_unit_test(test_client_login),
		cmocka_unit_test(test_client_oauth),
		cmocka_unit_test(test_client_external),
		cmocka_unit_test(test_client_new_bad),
		cmocka_unit_test(test_client_scram_flows),
		cmocka_unit_test(test_client_scram_gs2),
		cmocka_unit_test(test_client_scram_faults),
		cmocka_unit_test(test_client_scram_oversize),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
