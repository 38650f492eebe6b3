build-fx/tests/test_secret: tests/unit/test_secret.c \
 include/mailpull/secret.h include/mailpull/common.h \
 include/mailpull/err.h include/mailpull/config.h include/mailpull/util.h
include/mailpull/secret.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/config.h:
include/mailpull/util.h:
