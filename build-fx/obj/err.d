build-fx/obj/err.o: src/err.c include/mailpull/err.h \
 include/mailpull/common.h include/mailpull/util.h
include/mailpull/err.h:
include/mailpull/common.h:
include/mailpull/util.h:
