build-fx/obj/pidfile.o: src/pidfile.c include/mailpull/pidfile.h \
 include/mailpull/common.h include/mailpull/util.h
include/mailpull/pidfile.h:
include/mailpull/common.h:
include/mailpull/util.h:
