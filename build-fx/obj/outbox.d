build-fx/obj/outbox.o: src/outbox.c include/mailpull/addr.h \
 include/mailpull/common.h include/mailpull/hdr.h \
 include/mailpull/maildir.h include/mailpull/err.h \
 include/mailpull/outbox.h include/mailpull/util.h
include/mailpull/addr.h:
include/mailpull/common.h:
include/mailpull/hdr.h:
include/mailpull/maildir.h:
include/mailpull/err.h:
include/mailpull/outbox.h:
include/mailpull/util.h:
