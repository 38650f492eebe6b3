build-fx/obj/folder.o: src/folder.c include/mailpull/folder.h \
 include/mailpull/common.h include/mailpull/utf8.h \
 include/mailpull/util.h
include/mailpull/folder.h:
include/mailpull/common.h:
include/mailpull/utf8.h:
include/mailpull/util.h:
