build-fx/obj/maildir.o: src/maildir.c include/mailpull/maildir.h \
 include/mailpull/common.h include/mailpull/err.h include/mailpull/util.h
include/mailpull/maildir.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/util.h:
