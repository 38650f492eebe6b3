build-fx/obj/state.o: src/state.c include/mailpull/util.h \
 include/mailpull/common.h src/state_int.h include/mailpull/err.h \
 include/mailpull/state.h
include/mailpull/util.h:
include/mailpull/common.h:
src/state_int.h:
include/mailpull/err.h:
include/mailpull/state.h:
