build-fx/obj/preview.o: src/preview.c include/mailpull/mimeword.h \
 include/mailpull/common.h include/mailpull/util.h src/account_int.h \
 include/mailpull/account.h include/mailpull/err.h \
 include/mailpull/config.h include/mailpull/state.h src/vec.h
include/mailpull/mimeword.h:
include/mailpull/common.h:
include/mailpull/util.h:
src/account_int.h:
include/mailpull/account.h:
include/mailpull/err.h:
include/mailpull/config.h:
include/mailpull/state.h:
src/vec.h:
