build-fx/tests/test_scram: tests/unit/test_scram.c \
 include/mailpull/sasl.h include/mailpull/common.h src/scram.h
include/mailpull/sasl.h:
include/mailpull/common.h:
src/scram.h:
