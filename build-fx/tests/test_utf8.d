build-fx/tests/test_utf8: tests/unit/test_utf8.c include/mailpull/utf8.h \
 include/mailpull/common.h
include/mailpull/utf8.h:
include/mailpull/common.h:
