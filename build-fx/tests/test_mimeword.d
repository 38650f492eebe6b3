build-fx/tests/test_mimeword: tests/unit/test_mimeword.c \
 include/mailpull/mimeword.h include/mailpull/common.h \
 include/mailpull/utf8.h
include/mailpull/mimeword.h:
include/mailpull/common.h:
include/mailpull/utf8.h:
