build-fx/obj/state_send.o: src/state_send.c src/state_int.h \
 include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/state.h
src/state_int.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/state.h:
