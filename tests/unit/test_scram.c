/*
 * The SCRAM core against the published exchanges (RFC 5802 section 5,
 * RFC 7677 section 3), and every way a server can get it wrong: a wrong or
 * missing signature, a nonce that does not extend ours, iteration counts
 * out of range, m=, e=, malformed base64; plus the GS2 header, user name
 * escaping and SASLprep.
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

#include "mailpull/sasl.h"
#include "scram.h"

#define SHA1_NONCE "fyko+d2lbbFgONRv9qkxdawL"
#define SHA1_FIRST "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
#define SHA1_FINAL "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j," \
		   "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
#define SHA1_V "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="

#define SHA256_NONCE "rOprNGfwEbeRWgbNEkqO"
#define SHA256_FIRST "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
		     "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define SHA256_FINAL "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
		     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define SHA256_V "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static const struct scram_params sha1_params = {
	.hash = SCRAM_SHA_1, .user = "user", .password = "pencil", .saslprep = true,
	.gs2 = SCRAM_GS2_N, .nonce = SHA1_NONCE,
};

static struct scram *
new_client(const struct scram_params *p)
{
	struct scram *s = NULL;
	char *first = NULL;
	size_t len = 0;

	assert_int_equal(scram_new(p, &s), 0);
	assert_int_equal(scram_client_first(s, &first, &len), 0);
	assert_int_equal(len, strlen(first));
	free(first);
	return s;
}

/* A client that has answered server_first; its client-final in *ret_final if asked. */
static struct scram *
after_first(const struct scram_params *p, const char *server_first, char **ret_final)
{
	struct scram *s = new_client(p);
	char *final = NULL;
	size_t len = 0;

	assert_int_equal(scram_server_first(s, server_first, strlen(server_first), &final, &len),
			 0);
	assert_int_equal(len, strlen(final));
	if (ret_final)
		*ret_final = final;
	else
		free(final);
	return s;
}

static void
test_rfc5802_sha1(void **state)
{
	struct scram *s = NULL;
	char *msg = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(scram_new(&sha1_params, &s), 0);
	assert_int_equal(scram_client_first(s, &msg, &len), 0);
	assert_string_equal(msg, "n,,n=user,r=" SHA1_NONCE);
	free(msg);
	assert_int_equal(scram_server_first(s, SHA1_FIRST, strlen(SHA1_FIRST), &msg, &len), 0);
	assert_string_equal(msg, SHA1_FINAL);
	free(msg);
	assert_false(scram_verified(s));
	assert_int_equal(scram_server_final(s, SHA1_V, strlen(SHA1_V)), 0);
	assert_true(scram_verified(s));
	assert_string_equal(scram_error(s), "");
	/* nothing may follow the verified signature */
	assert_int_equal(scram_server_final(s, SHA1_V, strlen(SHA1_V)), -EPROTO);
	scram_free(s);
}

static void
test_rfc7677_sha256(void **state)
{
	struct scram_params p = {
		.hash = SCRAM_SHA_256, .user = "user", .password = "pencil", .saslprep = true,
		.nonce = SHA256_NONCE,
	};
	struct scram *s = NULL;
	char *msg = NULL;
	size_t len;

	(void)state;
	assert_int_equal(scram_new(&p, &s), 0);
	assert_int_equal(scram_client_first(s, &msg, &len), 0);
	assert_string_equal(msg, "n,,n=user,r=" SHA256_NONCE);
	free(msg);
	assert_int_equal(scram_server_first(s, SHA256_FIRST, strlen(SHA256_FIRST), &msg, &len), 0);
	assert_string_equal(msg, SHA256_FINAL);
	free(msg);
	assert_int_equal(scram_server_final(s, SHA256_V, strlen(SHA256_V)), 0);
	assert_true(scram_verified(s));
	scram_free(s);
}

static void
test_wrong_signature(void **state)
{
	/* the SHA-256 signature, right length for neither; then one bit off */
	static const char *const bad[] = {
		"v=rmF9pqV8S7suAoZWja4dJRkFsKA=", SHA256_V, "v=", "v=AAAA",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scram *s = after_first(&sha1_params, SHA1_FIRST, NULL);

		assert_int_equal(scram_server_final(s, bad[i], strlen(bad[i])), -EPROTO);
		assert_false(scram_verified(s));
		assert_non_null(strstr(scram_error(s), "signature is wrong"));
		assert_non_null(strstr(scram_error(s), "in the middle"));
		scram_free(s);
	}
}

static void
test_missing_signature(void **state)
{
	static const char *const bad[] = { "", "x=1", "r=abc", "V=rmF9pqV8S7suAoZWja4dJRkFsKQ=" };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scram *s = after_first(&sha1_params, SHA1_FIRST, NULL);

		assert_int_equal(scram_server_final(s, bad[i], strlen(bad[i])), -EPROTO);
		assert_false(scram_verified(s));
		assert_non_null(strstr(scram_error(s), "no SCRAM signature"));
		scram_free(s);
	}
}

static void
test_signature_extensions(void **state)
{
	const char msg[] = SHA1_V ",x=later";
	struct scram *s = after_first(&sha1_params, SHA1_FIRST, NULL);

	(void)state;
	assert_int_equal(scram_server_final(s, msg, strlen(msg)), 0);
	assert_true(scram_verified(s));
	scram_free(s);
}

static void
expect_first_error(const struct scram_params *p, const char *first, int code, const char *text)
{
	struct scram *s = new_client(p);
	char *out = NULL;
	size_t len;

	if (scram_server_first(s, first, strlen(first), &out, &len) != code)
		fail_msg("server-first \"%s\" not refused with %d", first, code);
	assert_null(out);
	if (text && !strstr(scram_error(s), text))
		fail_msg("error \"%s\" lacks \"%s\"", scram_error(s), text);
	/* a failed exchange stays failed */
	assert_int_equal(scram_server_final(s, SHA1_V, strlen(SHA1_V)), -EPROTO);
	scram_free(s);
}

static void
test_nonce(void **state)
{
	(void)state;
	/* exactly ours: the server added nothing */
	expect_first_error(&sha1_params, "r=" SHA1_NONCE ",s=QSXCR+Q6sek8bf92,i=4096", -EPROTO,
			   "nonce does not extend ours");
	/* shorter than ours */
	expect_first_error(&sha1_params, "r=fyko,s=QSXCR+Q6sek8bf92,i=4096", -EPROTO,
			   "nonce does not extend ours");
	/* a foreign one, as long */
	expect_first_error(&sha1_params,
			   "r=Xyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
			   -EPROTO, "nonce does not extend ours");
	/* not printable */
	expect_first_error(&sha1_params, "r=" SHA1_NONCE "\x7f,s=QSXCR+Q6sek8bf92,i=4096", -EBADMSG,
			   "nonce");
	expect_first_error(&sha1_params, "r=,s=QSXCR+Q6sek8bf92,i=4096", -EBADMSG, "nonce");
}

static void
test_iterations(void **state)
{
	static const struct {
		const char *i;
		int code;
	} v[] = {
		{ "1", -ERANGE }, { "4095", -ERANGE }, { "10000001", -ERANGE },
		{ "4294967296", -ERANGE }, { "99999999999999999999", -ERANGE },
		{ "999999999999999999999", -EBADMSG }, { "04096", -EBADMSG }, { "0", -EBADMSG },
		{ "-4096", -EBADMSG }, { "4096x", -EBADMSG }, { "", -EBADMSG },
		{ " 4096", -EBADMSG },
	};

	(void)state;
	for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
		char msg[256], want[64];

		snprintf(msg, sizeof(msg), "r=" SHA1_NONCE "x,s=QSXCR+Q6sek8bf92,i=%s", v[k].i);
		snprintf(want, sizeof(want), "iteration count of %s;", v[k].i);
		expect_first_error(&sha1_params, msg, v[k].code,
				   v[k].code == -ERANGE ? want : "iteration count (i=)");
	}
}

static void
test_iterations_edges(void **state)
{
	char *final = NULL;
	struct scram *s;

	(void)state;
	/* the lowest count accepted is the RFC's own example */
	s = after_first(&sha1_params, SHA1_FIRST, &final);
	assert_string_equal(final, SHA1_FINAL);
	free(final);
	scram_free(s);
}

static void
test_server_first_syntax(void **state)
{
	static const struct {
		const char *msg;
		int code;
	} v[] = {
		{ "m=ext,r=" SHA1_NONCE "x,s=QSXCR+Q6sek8bf92,i=4096", -EPROTO },
		{ "e=other-error", -EACCES },
		{ "s=QSXCR+Q6sek8bf92,r=" SHA1_NONCE "x,i=4096", -EBADMSG },
		{ "r=" SHA1_NONCE "x,i=4096,s=QSXCR+Q6sek8bf92", -EBADMSG },
		{ "r=" SHA1_NONCE "x,s=,i=4096", -EBADMSG },
		{ "r=" SHA1_NONCE "x,s=QSXCR+Q6sek8bf9,i=4096", -EBADMSG },     /* 4n+3 */
		{ "r=" SHA1_NONCE "x,s=QSXCR+Q6sek8bf9!,i=4096", -EBADMSG },
		{ "r=" SHA1_NONCE "x,s=QQ=A,i=4096", -EBADMSG },
		{ "r=" SHA1_NONCE "x,s=QR==,i=4096", -EBADMSG },               /* pad bits */
		{ "r=" SHA1_NONCE "x,s=QSXCR+Q6sek8bf92", -EBADMSG },
		{ "r=" SHA1_NONCE "x,s=QSXCR+Q6sek8bf92,i=4096,", -EBADMSG },
		{ "r=" SHA1_NONCE "x,s=QSXCR+Q6sek8bf92,i=4096,,x=1", -EBADMSG },
		{ "r=" SHA1_NONCE "x,s=QSXCR+Q6sek8bf92,i=4096,1=x", -EBADMSG },
		{ "", -EBADMSG },
		{ ",", -EBADMSG },
	};

	(void)state;
	for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++)
		expect_first_error(&sha1_params, v[k].msg, v[k].code, NULL);
	/* unknown attributes after i= are tolerated (RFC 5802 section 7) */
	scram_free(after_first(&sha1_params, SHA1_FIRST ",x=y,z=", NULL));
}

static void
test_server_first_caps(void **state)
{
	size_t n = SCRAM_MSG_MAX + 1;
	char *big = malloc(n + 1);
	char nul[] = "r=" SHA1_NONCE "x,s=QSXCR+Q6sek8bf92,i=4096,x=a\0b";
	struct scram *s;
	char *out = NULL;
	size_t len;

	(void)state;
	assert_non_null(big);
	memset(big, 'a', n);
	memcpy(big, "r=" SHA1_NONCE, strlen("r=" SHA1_NONCE));
	big[n] = '\0';
	expect_first_error(&sha1_params, big, -EBADMSG, "longer than");
	/* a nonce over its cap */
	memcpy(big + SCRAM_NONCE_MAX + 3, ",s=QSXCR+Q6sek8bf92,i=4096", 27);
	expect_first_error(&sha1_params, big, -EBADMSG, "nonce");
	free(big);
	s = new_client(&sha1_params);
	assert_int_equal(scram_server_first(s, nul, sizeof(nul) - 1, &out, &len), -EBADMSG);
	assert_non_null(strstr(scram_error(s), "NUL"));
	scram_free(s);
}

static void
test_server_errors(void **state)
{
	const char e1[] = "e=unknown-user";
	const char e2[] = "e=invalid-proof\x1b[31m";
	struct scram *s;
	char *out = NULL;
	size_t len;

	(void)state;
	s = new_client(&sha1_params);
	assert_int_equal(scram_server_first(s, e1, strlen(e1), &out, &len), -EACCES);
	assert_string_equal(scram_server_error(s), "unknown-user");
	assert_non_null(strstr(scram_error(s), "unknown-user"));
	scram_free(s);
	s = after_first(&sha1_params, SHA1_FIRST, NULL);
	assert_int_equal(scram_server_final(s, e2, strlen(e2)), -EACCES);
	/* the server's text is sanitized */
	assert_string_equal(scram_server_error(s), "invalid-proof\\x1b[31m");
	assert_non_null(strstr(scram_error(s), "refused"));
	assert_false(scram_verified(s));
	scram_free(s);
}

static void
test_malformed_signature(void **state)
{
	static const char *const bad[] = {
		"v=rmF9pqV8S7suAoZWja4dJRkFsKQ",   /* not whole quanta */
		"v=rmF9pqV8S7s!AoZWja4dJRkFsKQ=",  /* not the alphabet */
		"v=rmF9pqV8S7suAoZWja4dJRkFsKR=",  /* pad bits set */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scram *s = after_first(&sha1_params, SHA1_FIRST, NULL);

		assert_int_equal(scram_server_final(s, bad[i], strlen(bad[i])), -EBADMSG);
		assert_false(scram_verified(s));
		scram_free(s);
	}
}

static void
test_out_of_order(void **state)
{
	struct scram *s = NULL;
	char *out = NULL;
	size_t len;

	(void)state;
	assert_int_equal(scram_new(&sha1_params, &s), 0);
	assert_int_equal(scram_server_first(s, SHA1_FIRST, strlen(SHA1_FIRST), &out, &len),
			 -EPROTO);
	scram_free(s);
	s = new_client(&sha1_params);
	assert_int_equal(scram_client_first(s, &out, &len), -EPROTO);
	scram_free(s);
	s = new_client(&sha1_params);
	assert_int_equal(scram_server_final(s, SHA1_V, strlen(SHA1_V)), -EPROTO);
	scram_free(s);
	scram_free(NULL);
}

static void
test_escape_user(void **state)
{
	struct scram_params p = sha1_params;
	struct scram *s = NULL;
	char *msg = NULL;
	size_t len;

	(void)state;
	p.user = "a,b=c,=";
	assert_int_equal(scram_new(&p, &s), 0);
	assert_int_equal(scram_client_first(s, &msg, &len), 0);
	assert_string_equal(msg, "n,,n=a=2Cb=3Dc=2C=3D,r=" SHA1_NONCE);
	free(msg);
	scram_free(s);
}

static void
test_gs2_flags(void **state)
{
	static const unsigned char cb[] = { 0x00, 0x01, 0xfe, 0xff, 'x', ',', '=' };
	struct scram_params p = sha1_params;
	struct scram *s = NULL;
	char *msg = NULL, *want = NULL, raw[64];
	size_t len;

	(void)state;
	p.gs2 = SCRAM_GS2_Y;
	assert_int_equal(scram_new(&p, &s), 0);
	assert_int_equal(scram_client_first(s, &msg, &len), 0);
	assert_string_equal(msg, "y,,n=user,r=" SHA1_NONCE);
	free(msg);
	scram_free(s);
	s = after_first(&p, SHA1_FIRST, &msg);
	/* c= is base64("y,,") */
	assert_memory_equal(msg, "c=eSws,r=", 9);
	free(msg);
	scram_free(s);

	p.gs2 = SCRAM_GS2_P;
	p.cb_type = "tls-exporter";
	p.cb_data = cb;
	p.cb_len = sizeof(cb);
	assert_int_equal(scram_new(&p, &s), 0);
	assert_int_equal(scram_client_first(s, &msg, &len), 0);
	assert_string_equal(msg, "p=tls-exporter,,n=user,r=" SHA1_NONCE);
	free(msg);
	scram_free(s);
	s = after_first(&p, SHA1_FIRST, &msg);
	memcpy(raw, "p=tls-exporter,,", 16);
	memcpy(raw + 16, cb, sizeof(cb));
	assert_int_equal(sasl_base64_encode(raw, 16 + sizeof(cb), &want), 0);
	assert_memory_equal(msg, "c=", 2);
	assert_memory_equal(msg + 2, want, strlen(want));
	assert_memory_equal(msg + 2 + strlen(want), ",r=", 3);
	free(want);
	free(msg);
	scram_free(s);

	/* "p" needs a type and data; a type must be a cb-name */
	p.cb_data = NULL;
	assert_int_equal(scram_new(&p, &s), -EINVAL);
	p.cb_data = cb;
	p.cb_type = NULL;
	assert_int_equal(scram_new(&p, &s), -EINVAL);
	p.cb_type = "tls,exporter";
	assert_int_equal(scram_new(&p, &s), -EINVAL);
	p.cb_type = "tls-exporter";
	p.cb_len = 0;
	assert_int_equal(scram_new(&p, &s), -EINVAL);
}

static void
test_bad_params(void **state)
{
	struct scram_params p = sha1_params;
	struct scram *s = NULL;

	(void)state;
	p.user = "";
	assert_int_equal(scram_new(&p, &s), -EINVAL);
	p.user = NULL;
	assert_int_equal(scram_new(&p, &s), -EINVAL);
	p = sha1_params;
	p.password = NULL;
	assert_int_equal(scram_new(&p, &s), -EINVAL);
	p = sha1_params;
	p.nonce = "a,b";
	assert_int_equal(scram_new(&p, &s), -EINVAL);
	p.nonce = "";
	assert_int_equal(scram_new(&p, &s), -EINVAL);
	assert_null(s);
}

static void
test_random_nonce(void **state)
{
	struct scram_params p = sha1_params;
	char *a = NULL, *b = NULL;
	struct scram *s1 = NULL, *s2 = NULL;
	size_t la, lb;
	const char *na;

	(void)state;
	p.nonce = NULL;
	assert_int_equal(scram_new(&p, &s1), 0);
	assert_int_equal(scram_new(&p, &s2), 0);
	assert_int_equal(scram_client_first(s1, &a, &la), 0);
	assert_int_equal(scram_client_first(s2, &b, &lb), 0);
	assert_memory_equal(a, "n,,n=user,r=", 12);
	na = a + 12;
	/* 24 random bytes: 32 printable characters, no ',' and no padding */
	assert_int_equal(strlen(na), 32);
	for (const char *c = na; *c; c++)
		assert_true(*c > 0x20 && *c < 0x7f && *c != ',' && *c != '=');
	assert_string_not_equal(a, b);
	free(a);
	free(b);
	scram_free(s1);
	scram_free(s2);
}

/* The proof sent for password pw (prepared or not) to the SHA-1 example server. */
static char *
final_for(const char *pw, bool saslprep)
{
	struct scram_params p = sha1_params;
	char *final = NULL;

	p.password = pw;
	p.saslprep = saslprep;
	scram_free(after_first(&p, SHA1_FIRST, &final));
	return final;
}

static void
expect_same_proof(const char *a, bool prep_a, const char *b, bool prep_b, bool same)
{
	char *fa = final_for(a, prep_a), *fb = final_for(b, prep_b);

	if ((strcmp(fa, fb) == 0) != same)
		fail_msg("proofs for \"%s\" and \"%s\" %s", a, b, same ? "differ" : "agree");
	free(fa);
	free(fb);
}

static void
test_saslprep(void **state)
{
	(void)state;
	/* RFC 4013 section 2.1: U+00A0 maps to a space, U+00AD to nothing */
	expect_same_proof("pen\xc2\xa0" "cil", true, "pen cil", false, true);
	expect_same_proof("pen\xc2\xa0" "cil", false, "pen cil", false, false);
	expect_same_proof("I\xc2\xad" "X", true, "IX", false, true);
	expect_same_proof("I\xc2\xad" "X", false, "IX", false, false);
	/* ASCII is left alone */
	expect_same_proof("pencil", true, "pencil", false, true);
	/* a password SASLprep refuses (a control character) is hashed as it is */
	expect_same_proof("pen\x07" "cil", true, "pen\x07" "cil", false, true);
	/* bytes that are not UTF-8 too */
	expect_same_proof("pen\xff" "cil", true, "pen\xff" "cil", false, true);
}

static void
test_parse_pure(void **state)
{
	const char msg[] = "r=abc,s=QSXCR+Q6sek8bf92,i=10000000,q=1";
	struct scram_first sf;
	char why[128];

	(void)state;
	assert_int_equal(scram_parse_first(msg, strlen(msg), &sf, why, sizeof(why)), 0);
	assert_int_equal(sf.nonce_len, 3);
	assert_memory_equal(sf.nonce, "abc", 3);
	assert_int_equal(sf.salt_len, 16);
	assert_int_equal(sf.iter, 10000000);
	assert_int_equal(scram_parse_first("m=x", 3, &sf, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "m="));
	assert_int_equal(scram_parse_first("e=x", 3, &sf, why, 0), -EACCES);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc5802_sha1),
		cmocka_unit_test(test_rfc7677_sha256),
		cmocka_unit_test(test_wrong_signature),
		cmocka_unit_test(test_missing_signature),
		cmocka_unit_test(test_signature_extensions),
		cmocka_unit_test(test_nonce),
		cmocka_unit_test(test_iterations),
		cmocka_unit_test(test_iterations_edges),
		cmocka_unit_test(test_server_first_syntax),
		cmocka_unit_test(test_server_first_caps),
		cmocka_unit_test(test_server_errors),
		cmocka_unit_test(test_malformed_signature),
		cmocka_unit_test(test_out_of_order),
		cmocka_unit_test(test_escape_user),
		cmocka_unit_test(test_gs2_flags),
		cmocka_unit_test(test_bad_params),
		cmocka_unit_test(test_random_nonce),
		cmocka_unit_test(test_saslprep),
		cmocka_unit_test(test_parse_pure),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
