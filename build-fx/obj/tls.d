build-fx/obj/tls.o: src/tls.c include/mailpull/tls.h \
 include/mailpull/common.h include/mailpull/err.h include/mailpull/util.h
include/mailpull/tls.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/util.h:
