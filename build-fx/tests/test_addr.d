build-fx/tests/test_addr: tests/unit/test_addr.c include/mailpull/addr.h \
 include/mailpull/common.h
include/mailpull/addr.h:
include/mailpull/common.h:
