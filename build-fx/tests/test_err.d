build-fx/tests/test_err: tests/unit/test_err.c include/mailpull/err.h \
 include/mailpull/common.h
include/mailpull/err.h:
include/mailpull/common.h:
