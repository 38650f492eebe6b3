build-fx/tests/test_smtp: tests/unit/test_smtp.c tests/unit/fakeserver.h \
 include/mailpull/conn.h include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/log.h include/mailpull/smtp.h include/mailpull/sasl.h
tests/unit/fakeserver.h:
include/mailpull/conn.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/log.h:
include/mailpull/smtp.h:
include/mailpull/sasl.h:
