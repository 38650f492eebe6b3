build-fx/tests/test_imap_parse: tests/unit/test_imap_parse.c \
 include/mailpull/imap_parse.h include/mailpull/common.h
include/mailpull/imap_parse.h:
include/mailpull/common.h:
