build-fx/obj/scheduler.o: src/scheduler.c include/mailpull/account.h \
 include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/config.h include/mailpull/log.h \
 include/mailpull/scheduler.h include/mailpull/svc.h \
 include/mailpull/util.h
include/mailpull/account.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/config.h:
include/mailpull/log.h:
include/mailpull/scheduler.h:
include/mailpull/svc.h:
include/mailpull/util.h:
