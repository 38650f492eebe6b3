build-fx/tests/test_outbox: tests/unit/test_outbox.c \
 include/mailpull/outbox.h include/mailpull/common.h \
 include/mailpull/err.h
include/mailpull/outbox.h:
include/mailpull/common.h:
include/mailpull/err.h:
