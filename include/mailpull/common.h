/*
 * Small macros shared by every module, and the conventions every header in
 * include/mailpull/ follows (stated once here, as isync's driver.h does).
 *
 * Errors. A function that can fail returns 0 (or a count) on success and a
 * negative errno with the fixed meaning listed in err.h on failure. When it
 * takes a struct mp_err *err (NULL allowed), the error is recorded there
 * with its exit class, unless an earlier one is (the lowest layer wins). A
 * function's comment lists every error it returns as "-ECODE (CLASS)",
 * CLASS being the MP_EX_* it records; "not recorded" marks one returned
 * without touching err; "Cannot fail" marks a function with no error.
 *
 * Ownership. Unless a function's comment says otherwise:
 * - the caller owns what it passes in, and the callee keeps no pointer to
 *   it beyond the call;
 * - what a function returns through a ret_ pointer is the caller's, freed
 *   with that module's free function (free() where the module has none);
 *   a returned const pointer is borrowed, valid as long as its object;
 * - every destructor and free function accepts NULL;
 * - out-parameters are set only on success.
 */
#ifndef MAILPULL_COMMON_H
#define MAILPULL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define MP_WUR __attribute__((warn_unused_result))
#define MP_UNUSED __attribute__((unused))

/*
 * The name of v in a name table indexed by an enum, for the *_to_string()
 * functions every enum has: "?" for a value outside the table or one it
 * leaves without a name. Cannot fail.
 */
static inline const char *
mp_enum_name(const char *const *names, size_t n, unsigned v)
{
	return v < n && names[v] ? names[v] : "?";
}

#define MP_ENUM_NAME(names, v) mp_enum_name((names), ARRAY_SIZE(names), (unsigned)(v))

#define MAILPULL_VERSION "0.1.0"

#endif
