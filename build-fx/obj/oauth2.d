build-fx/obj/oauth2.o: src/oauth2.c include/mailpull/log.h \
 include/mailpull/common.h include/mailpull/oauth2.h \
 include/mailpull/config.h include/mailpull/err.h include/mailpull/util.h \
 src/http.h
include/mailpull/log.h:
include/mailpull/common.h:
include/mailpull/oauth2.h:
include/mailpull/config.h:
include/mailpull/err.h:
include/mailpull/util.h:
src/http.h:
