build-fx/obj/state_pop3.o: src/state_pop3.c include/mailpull/util.h \
 include/mailpull/common.h src/state_int.h include/mailpull/err.h \
 include/mailpull/state.h
include/mailpull/util.h:
include/mailpull/common.h:
src/state_int.h:
include/mailpull/err.h:
include/mailpull/state.h:
