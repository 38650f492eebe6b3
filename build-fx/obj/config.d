build-fx/obj/config.o: src/config.c include/mailpull/config.h \
 include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/oauth2.h include/mailpull/state.h \
 include/mailpull/util.h
include/mailpull/config.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/oauth2.h:
include/mailpull/state.h:
include/mailpull/util.h:
