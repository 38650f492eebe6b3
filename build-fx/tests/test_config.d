build-fx/tests/test_config: tests/unit/test_config.c \
 include/mailpull/config.h include/mailpull/common.h \
 include/mailpull/err.h
include/mailpull/config.h:
include/mailpull/common.h:
include/mailpull/err.h:
