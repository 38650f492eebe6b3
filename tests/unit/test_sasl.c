/* SASL encoders against published vectors, base64 both ways, mechanism choice. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
