build-fx/obj/log.o: src/log.c include/mailpull/log.h \
 include/mailpull/common.h include/mailpull/util.h
include/mailpull/log.h:
include/mailpull/common.h:
include/mailpull/util.h:
