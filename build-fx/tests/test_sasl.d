build-fx/tests/test_sasl: tests/unit/test_sasl.c include/mailpull/sasl.h \
 include/mailpull/common.h
include/mailpull/sasl.h:
include/mailpull/common.h:
