build-fx/obj/addr.o: src/addr.c include/mailpull/addr.h \
 include/mailpull/common.h
include/mailpull/addr.h:
include/mailpull/common.h:
