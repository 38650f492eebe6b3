build-fx/obj/state_set.o: src/state_set.c include/mailpull/util.h \
 include/mailpull/common.h src/state_int.h include/mailpull/err.h \
 include/mailpull/state.h
include/mailpull/util.h:
include/mailpull/common.h:
src/state_int.h:
include/mailpull/err.h:
include/mailpull/state.h:
