build-fx/obj/state_name.o: src/state_name.c src/state_int.h \
 include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/state.h
src/state_int.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/state.h:
