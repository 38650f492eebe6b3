build-fx/tests/test_folder: tests/unit/test_folder.c \
 include/mailpull/folder.h include/mailpull/common.h
include/mailpull/folder.h:
include/mailpull/common.h:
