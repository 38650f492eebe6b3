build-fx/tests/test_imap: tests/unit/test_imap.c tests/unit/fakeserver.h \
 include/mailpull/conn.h include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/imap.h include/mailpull/sasl.h include/mailpull/log.h \
 include/mailpull/util.h
tests/unit/fakeserver.h:
include/mailpull/conn.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/imap.h:
include/mailpull/sasl.h:
include/mailpull/log.h:
include/mailpull/util.h:
