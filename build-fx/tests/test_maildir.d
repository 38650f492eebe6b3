build-fx/tests/test_maildir: tests/unit/test_maildir.c \
 include/mailpull/maildir.h include/mailpull/common.h \
 include/mailpull/err.h
include/mailpull/maildir.h:
include/mailpull/common.h:
include/mailpull/err.h:
