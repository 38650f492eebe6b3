build-fx/tests/test_hdr: tests/unit/test_hdr.c include/mailpull/hdr.h \
 include/mailpull/common.h
include/mailpull/hdr.h:
include/mailpull/common.h:
