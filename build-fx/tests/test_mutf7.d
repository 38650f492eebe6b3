build-fx/tests/test_mutf7: tests/unit/test_mutf7.c \
 include/mailpull/mutf7.h include/mailpull/common.h \
 include/mailpull/utf8.h
include/mailpull/mutf7.h:
include/mailpull/common.h:
include/mailpull/utf8.h:
