build-fx/obj/hdr.o: src/hdr.c include/mailpull/hdr.h \
 include/mailpull/common.h
include/mailpull/hdr.h:
include/mailpull/common.h:
