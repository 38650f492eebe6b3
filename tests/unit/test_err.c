/* Error records: first wins or overwrite, the retry class, the account's error line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mailpull/err.h"

static void
test_first_wins_reset_overwrites(void **state)
{
	struct mp_err err = { 0 };

	(void)state;
	assert_int_equal(mp_err_set(&err, -EACCES, MP_EX_NOPERM, "refused %d", 1), -EACCES);
	assert_int_equal(mp_err_set(&err, -EPROTO, MP_EX_PROTOCOL, "later"), -EPROTO);
	assert_string_equal(err.msg, "refused 1");
	assert_int_equal(err.code, -EACCES);
	assert_int_equal(err.retry, MP_RETRY_HOLD);
	assert_int_equal(mp_err_reset(&err, -EPROTO, MP_EX_PROTOCOL, "now %s", "this"), -EPROTO);
	assert_string_equal(err.msg, "now this");
	assert_int_equal(err.retry, MP_RETRY_SLOW);
	assert_int_equal(mp_err_set(NULL, -EIO, MP_EX_IOERR, "x"), -EIO);
	assert_int_equal(mp_err_oom(NULL), -ENOMEM);
}

static void
test_set_srv(void **state)
{
	struct mp_err err = { 0 };

	(void)state;
	mp_err_set_srv(&err, -EACCES, MP_EX_NOPERM, "bad\x1b[1m", 7, "authentication refused");
	assert_string_equal(err.srv, "bad\\x1b[1m");
	/* An error already recorded keeps its server text too. */
	mp_err_set_srv(&err, -EPROTO, MP_EX_PROTOCOL, "other", 5, "later");
	assert_string_equal(err.srv, "bad\\x1b[1m");
	assert_string_equal(err.msg, "authentication refused");
	assert_int_equal(err.retry, MP_RETRY_HOLD);
}

static void
test_retry_from_exit(void **state)
{
	(void)state;
	assert_int_equal(mp_retry_from_exit(MP_EX_NOPERM), MP_RETRY_HOLD);
	assert_int_equal(mp_retry_from_exit(MP_EX_CONFIG), MP_RETRY_HOLD);
	assert_int_equal(mp_retry_from_exit(MP_EX_USAGE), MP_RETRY_HOLD);
	assert_int_equal(mp_retry_from_exit(MP_EX_PROTOCOL), MP_RETRY_SLOW);
	assert_int_equal(mp_retry_from_exit(MP_EX_TEMPFAIL), MP_RETRY_BACKOFF);
	assert_int_equal(mp_retry_from_exit(MP_EX_IOERR), MP_RETRY_BACKOFF);
	/* a refused message is set aside: nothing to retry sooner than the interval */
	assert_int_equal(mp_retry_from_exit(MP_EX_DATAERR), MP_RETRY_INTERVAL);
	/* more severe than a temporary failure, less than a protocol error */
	assert_int_equal(mp_exit_worse(MP_EX_TEMPFAIL, MP_EX_DATAERR), MP_EX_DATAERR);
	assert_int_equal(mp_exit_worse(MP_EX_DATAERR, MP_EX_PROTOCOL), MP_EX_PROTOCOL);
	assert_int_equal(mp_exit_worse(MP_EX_DATAERR, MP_EX_OK), MP_EX_DATAERR);
}

static void
test_line(void **state)
{
	struct mp_err err = { 0 };
	char buf[256], small[16];

	(void)state;
	mp_err_set(&err, -ECONNREFUSED, MP_EX_TEMPFAIL, "cannot connect");
	mp_err_line(buf, sizeof(buf), "work", "mail.example", 995, &err);
	assert_string_equal(buf, "account work (mail.example:995): cannot connect");
	mp_err_server(&err, "-ERR go away", 12);
	mp_err_line(buf, sizeof(buf), "work", "mail.example", 995, &err);
	assert_string_equal(buf, "account work (mail.example:995): cannot connect; "
			    "the server said: -ERR go away");
	/* Truncated, terminated, and the needed length returned. */
	assert_int_equal(mp_err_line(small, sizeof(small), "work", "mail.example", 995, &err),
			 strlen(buf));
	assert_string_equal(small, "account work (m");
	/* No message: the code's text. */
	mp_err_clear(&err);
	err.code = -ETIMEDOUT;
	mp_err_line(buf, sizeof(buf), "a", "h", 1, &err);
	assert_string_equal(buf, "account a (h:1): Connection timed out");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_wins_reset_overwrites),
		cmocka_unit_test(test_set_srv),
		cmocka_unit_test(test_retry_from_exit),
		cmocka_unit_test(test_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
