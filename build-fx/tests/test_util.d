build-fx/tests/test_util: tests/unit/test_util.c include/mailpull/util.h \
 include/mailpull/common.h
include/mailpull/util.h:
include/mailpull/common.h:
