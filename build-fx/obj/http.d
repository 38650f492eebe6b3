build-fx/obj/http.o: src/http.c include/mailpull/util.h \
 include/mailpull/common.h src/http.h include/mailpull/err.h
include/mailpull/util.h:
include/mailpull/common.h:
src/http.h:
include/mailpull/err.h:
