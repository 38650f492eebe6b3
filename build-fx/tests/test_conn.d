build-fx/tests/test_conn: tests/unit/test_conn.c tests/unit/fakeserver.h \
 include/mailpull/conn.h include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/util.h
tests/unit/fakeserver.h:
include/mailpull/conn.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/util.h:
