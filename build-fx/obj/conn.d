build-fx/obj/conn.o: src/conn.c include/mailpull/conn.h \
 include/mailpull/common.h include/mailpull/err.h include/mailpull/tls.h \
 include/mailpull/util.h
include/mailpull/conn.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/tls.h:
include/mailpull/util.h:
