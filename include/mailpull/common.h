/* Small macros shared by every module. */
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
