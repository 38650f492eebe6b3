build-fx/obj/daemon.o: src/daemon.c include/mailpull/daemon.h \
 include/mailpull/config.h include/mailpull/common.h \
 include/mailpull/err.h include/mailpull/log.h include/mailpull/pidfile.h \
 include/mailpull/scheduler.h
include/mailpull/daemon.h:
include/mailpull/config.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/log.h:
include/mailpull/pidfile.h:
include/mailpull/scheduler.h:
