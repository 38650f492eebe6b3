build-fx/obj/account.o: src/account.c include/mailpull/account.h \
 include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/config.h include/mailpull/log.h \
 include/mailpull/state.h include/mailpull/util.h src/account_int.h
include/mailpull/account.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/config.h:
include/mailpull/log.h:
include/mailpull/state.h:
include/mailpull/util.h:
src/account_int.h:
