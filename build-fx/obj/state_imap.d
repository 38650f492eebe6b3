build-fx/obj/state_imap.o: src/state_imap.c include/mailpull/util.h \
 include/mailpull/common.h src/state_int.h include/mailpull/err.h \
 include/mailpull/state.h
include/mailpull/util.h:
include/mailpull/common.h:
src/state_int.h:
include/mailpull/err.h:
include/mailpull/state.h:
