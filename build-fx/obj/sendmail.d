build-fx/obj/sendmail.o: src/sendmail.c include/mailpull/addr.h \
 include/mailpull/common.h include/mailpull/config.h \
 include/mailpull/err.h include/mailpull/log.h include/mailpull/outbox.h \
 include/mailpull/sendmail.h
include/mailpull/addr.h:
include/mailpull/common.h:
include/mailpull/config.h:
include/mailpull/err.h:
include/mailpull/log.h:
include/mailpull/outbox.h:
include/mailpull/sendmail.h:
