build-fx/obj/util.o: src/util.c include/mailpull/util.h \
 include/mailpull/common.h include/mailpull/utf8.h
include/mailpull/util.h:
include/mailpull/common.h:
include/mailpull/utf8.h:
