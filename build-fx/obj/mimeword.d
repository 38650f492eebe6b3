build-fx/obj/mimeword.o: src/mimeword.c include/mailpull/mimeword.h \
 include/mailpull/common.h include/mailpull/utf8.h \
 include/mailpull/util.h
include/mailpull/mimeword.h:
include/mailpull/common.h:
include/mailpull/utf8.h:
include/mailpull/util.h:
