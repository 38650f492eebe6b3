build-fx/tests/test_pop3_body: tests/unit/test_pop3_body.c \
 include/mailpull/pop3_body.h include/mailpull/common.h
include/mailpull/pop3_body.h:
include/mailpull/common.h:
