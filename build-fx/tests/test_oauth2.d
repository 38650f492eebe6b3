build-fx/tests/test_oauth2: tests/unit/test_oauth2.c \
 include/mailpull/oauth2.h include/mailpull/common.h \
 include/mailpull/config.h include/mailpull/err.h
include/mailpull/oauth2.h:
include/mailpull/common.h:
include/mailpull/config.h:
include/mailpull/err.h:
