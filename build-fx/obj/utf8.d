build-fx/obj/utf8.o: src/utf8.c include/mailpull/utf8.h \
 include/mailpull/common.h
include/mailpull/utf8.h:
include/mailpull/common.h:
