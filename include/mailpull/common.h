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

#define MAILPULL_VERSION "0.1.0"

#endif
