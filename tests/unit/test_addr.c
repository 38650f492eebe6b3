/* RFC 5322 address lists: the appendix A examples, obsolete forms, garbage, caps. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mailpull/addr.h"

/* Parses s and checks the result is exactly the NULL-terminated want. */
static void
check_list(const char *s, const char *const *want)
{
	struct addr_list l = { .v = NULL };
	size_t n = 0;
	int r = addr_list_parse(&l, s, strlen(s), 100);

	while (want[n])
		n++;
	if (r != (int)n)
		fail_msg("%s: got %d addresses, want %zu", s, r, n);
	assert_int_equal(l.n, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(l.v[i], want[i]);
	addr_list_free(&l);
}

static void
check_bad(const char *s, int code)
{
	struct addr_list l = { .v = NULL };
	int r = addr_list_parse(&l, s, strlen(s), 100);

	if (r != code)
		fail_msg("%s: got %d, want %d", s, r, code);
	addr_list_free(&l);
}

#define LIST(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define NONE ((const char *const[]){ NULL })

static void
test_appendix_a(void **state)
{
	(void)state;
	/* A.1.1 */
	check_list("John Doe <jdoe@machine.example>", LIST("jdoe@machine.example"));
	check_list("Mary Smith <mary@example.net>", LIST("mary@example.net"));
	/* A.1.2 */
	check_list("\"Joe Q. Public\" <john.q.public@example.com>",
		   LIST("john.q.public@example.com"));
	check_list("Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
		   LIST("mary@x.test", "jdoe@example.org", "one@y.test"));
	check_list("<boss@nil.test>, \"Giant; \\\"Big\\\" Box\" <sysservices@example.net>",
		   LIST("boss@nil.test", "sysservices@example.net"));
	/* A.1.3 groups */
	check_list("A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
		   LIST("c@a.test", "joe@where.test", "jdoe@one.test"));
	check_list("Undisclosed recipients:;", NONE);
	check_list("undisclosed-recipients:;", NONE);
	/* A.5 white space, comments */
	check_list("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
		   LIST("pete@silly.test"));
	check_list("A Group(Some people)\r\n     :Chris Jones <c@(Chris's host.)public.example>,\r\n"
		   "         joe@example.org,\r\n  John <jdoe@one.test> (my dear friend); (the end of "
		   "the group)", LIST("c@public.example", "joe@example.org", "jdoe@one.test"));
	check_list("(Empty list)(start)Hidden recipients  :(nobody(that I know))  ;", NONE);
	/* A.6.1 obsolete: a list with empty members */
	check_list("Mary Smith <@node.test:mary@example.net>, , jdoe@test  . example",
		   LIST("mary@example.net", "jdoe@test.example"));
	/* A.6.3 obsolete white space and comments */
	check_list("John Doe <jdoe@machine(comment).  example>", LIST("jdoe@machine.example"));
	check_list("Mary Smith\n    \n\t<mary@example.net>", LIST("mary@example.net"));
}

static void
test_forms(void **state)
{
	(void)state;
	/* Folding, LF or CRLF. */
	check_list("a@b.example,\n c@d.example", LIST("a@b.example", "c@d.example"));
	check_list("a@b.example,\r\n\tc@d.example", LIST("a@b.example", "c@d.example"));
	/* Quoted local parts: canonical form. */
	check_list("\"john\"@x.example", LIST("john@x.example"));
	check_list("\"john doe\"@x.example", LIST("\"john doe\"@x.example"));
	check_list("\"a\\\"b\"@x.example", LIST("\"a\\\"b\"@x.example"));
	check_list("\"a@b\"@x.example", LIST("\"a@b\"@x.example"));
	check_list("john..doe@x.example", LIST("\"john..doe\"@x.example"));
	check_list("\"fo\\o\".bar@x.example", LIST("foo.bar@x.example"));
	/* Domain literals, routes, local names, case kept. */
	check_list("u@[192.0.2.1]", LIST("u@[192.0.2.1]"));
	check_list("<@a.example,@b.example:Joe@C.example>", LIST("Joe@C.example"));
	check_list("root", LIST("root"));
	check_list("Root <root>", LIST("root"));
	check_list("Jo <Jo@Example.COM>", LIST("Jo@Example.COM"));
	/* Encoded words and UTF-8 in display names and addresses. */
	check_list("=?utf-8?q?J=C3=B6rg?= <j@x.example>", LIST("j@x.example"));
	check_list("Jörg <jörg@bücher.example>", LIST("jörg@bücher.example"));
	/* An obsolete phrase with dots. */
	check_list("John Q. Public <jqp@x.example>", LIST("jqp@x.example"));
	/* Empty values, "<>". */
	check_list("", NONE);
	check_list("  \r\n ", NONE);
	check_list("<>", NONE);
}

static void
test_dedupe(void **state)
{
	(void)state;
	/* Domains in any case are the same; local parts are not. */
	check_list("a@X.example, a@x.EXAMPLE, A@x.example", LIST("a@X.example", "A@x.example"));
	check_list("Same <s@x.example>, s@x.example, \"s\"@x.example", LIST("s@x.example"));
	assert_true(addr_equal("a@B", "a@b"));
	assert_false(addr_equal("a@b", "A@b"));
	assert_false(addr_equal("a", "a@b"));
	assert_true(addr_equal("root", "root"));
	assert_string_equal(addr_domain("\"x@y\"@z.example"), "z.example");
	assert_null(addr_domain("\"x@y\""));
	assert_null(addr_domain("root"));
}

static void
test_bad(void **state)
{
	(void)state;
	check_bad("a@b@c", -EBADMSG);
	check_bad("\"unterminated@x", -EBADMSG);
	check_bad("(unterminated comment a@b", -EBADMSG);
	check_bad("((nested) a@b", -EBADMSG);
	check_bad("Joe <joe@x.example", -EBADMSG);
	check_bad("a@[1.2.3.4", -EBADMSG);
	check_bad("John Doe", -EBADMSG);
	check_bad("a@", -EBADMSG);
	check_bad("<a@>", -EBADMSG);
	check_bad("@x.example", -EBADMSG);
	check_bad("a@x..example", -EBADMSG);
	check_bad("a\x01@x.example", -EBADMSG);
	check_bad("a@x.example>", -EBADMSG);
	check_bad("G: a@x.example, H: b@x.example;;", -EBADMSG);
	check_bad("a@x.example; b@x.example", -EBADMSG);
	check_bad("\\a@x.example", -EBADMSG);
	check_bad("a@x.example\\", -EBADMSG);
	check_bad("\"a\\", -EBADMSG);
	check_bad("\"a\x7f\"@x", -EBADMSG);
}

static void
test_caps(void **state)
{
	char big[ADDR_LEN_MAX + 20];
	struct addr_list l = { .v = NULL };
	const char *two = "a@x, b@x, c@x";

	(void)state;
	memset(big, 'a', sizeof(big));
	memcpy(big + sizeof(big) - 11, "@x.example", 11);
	assert_int_equal(addr_list_parse(&l, big, strlen(big), 10), -E2BIG);
	/* Exactly the cap fits. */
	memset(big, 'a', ADDR_LEN_MAX - 2);
	memcpy(big + ADDR_LEN_MAX - 2, "@x", 3);
	assert_int_equal(addr_list_parse(&l, big, strlen(big), 10), 1);
	assert_int_equal(strlen(l.v[0]), ADDR_LEN_MAX);
	addr_list_free(&l);
	assert_int_equal(addr_list_parse(&l, two, strlen(two), 2), -E2BIG);
	assert_int_equal(l.n, 2);   /* kept what was added before */
	addr_list_free(&l);
	/* Duplicates do not count against the cap. */
	assert_int_equal(addr_list_parse(&l, "a@x, a@x, a@x", 13, 1), 1);
	addr_list_free(&l);
}

static void
test_first_and_take(void **state)
{
	struct addr_list l = { .v = NULL };
	char *a = NULL, **v;
	size_t n;

	(void)state;
	assert_int_equal(addr_parse_first("Me <me@x.example>, you@y", 24, &a), 1);
	assert_string_equal(a, "me@x.example");
	free(a);
	a = NULL;
	assert_int_equal(addr_parse_first("G:;", 3, &a), 0);
	assert_null(a);
	assert_int_equal(addr_parse_first("x@@", 3, &a), -EBADMSG);
	v = addr_list_take(&l, &n);
	assert_null(v);
	assert_int_equal(n, 0);
	assert_int_equal(addr_list_add(&l, "q@x", 5), 1);
	assert_int_equal(addr_list_add(&l, "q@X", 5), 0);
	v = addr_list_take(&l, &n);
	assert_int_equal(n, 1);
	assert_string_equal(v[0], "q@x");
	assert_int_equal(l.n, 0);
	free(v[0]);
	free(v);
}

/* Every prefix of valid lists parses or fails cleanly (the sanitizers watch). */
static void
test_prefixes(void **state)
{
	static const char *const inputs[] = {
		"A Group(Some people)\r\n :Chris Jones <c@(Chris's host.)public.example>, joe@x;",
		"\"Giant; \\\"Big\\\" Box\" <@r1,@r2:s@[10.0.0.1]>, a.b.c@d.e",
	};

	(void)state;
	for (size_t k = 0; k < 2; k++)
		for (size_t i = 0; i <= strlen(inputs[k]); i++) {
			struct addr_list l = { .v = NULL };
			char *copy = malloc(i ? i : 1);
			int r;

			memcpy(copy, inputs[k], i);
			r = addr_list_parse(&l, copy, i, 100);
			assert_true(r >= 0 || r == -EBADMSG);
			addr_list_free(&l);
			free(copy);
		}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_appendix_a),
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_dedupe),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_first_and_take),
		cmocka_unit_test(test_prefixes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
