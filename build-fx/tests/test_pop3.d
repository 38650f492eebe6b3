build-fx/tests/test_pop3: tests/unit/test_pop3.c tests/unit/fakeserver.h \
 include/mailpull/conn.h include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/log.h include/mailpull/pop3.h include/mailpull/sasl.h \
 include/mailpull/sink.h
tests/unit/fakeserver.h:
include/mailpull/conn.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/log.h:
include/mailpull/pop3.h:
include/mailpull/sasl.h:
include/mailpull/sink.h:
