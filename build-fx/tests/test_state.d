build-fx/tests/test_state: tests/unit/test_state.c \
 include/mailpull/state.h include/mailpull/common.h \
 include/mailpull/err.h
include/mailpull/state.h:
include/mailpull/common.h:
include/mailpull/err.h:
