build-fx/tests/obj/fakeserver.o: tests/unit/fakeserver.c \
 tests/unit/fakeserver.h include/mailpull/conn.h \
 include/mailpull/common.h include/mailpull/err.h
tests/unit/fakeserver.h:
include/mailpull/conn.h:
include/mailpull/common.h:
include/mailpull/err.h:
