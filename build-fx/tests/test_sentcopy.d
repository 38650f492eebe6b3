build-fx/tests/test_sentcopy: tests/unit/test_sentcopy.c \
 tests/unit/fakeserver.h include/mailpull/conn.h \
 include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/config.h src/sentcopy.h
tests/unit/fakeserver.h:
include/mailpull/conn.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/config.h:
src/sentcopy.h:
