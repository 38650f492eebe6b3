build-fx/obj/mutf7.o: src/mutf7.c include/mailpull/mutf7.h \
 include/mailpull/common.h include/mailpull/utf8.h \
 include/mailpull/util.h
include/mailpull/mutf7.h:
include/mailpull/common.h:
include/mailpull/utf8.h:
include/mailpull/util.h:
