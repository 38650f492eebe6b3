build-fx/obj/secret.o: src/secret.c include/mailpull/secret.h \
 include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/config.h include/mailpull/util.h
include/mailpull/secret.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/config.h:
include/mailpull/util.h:
