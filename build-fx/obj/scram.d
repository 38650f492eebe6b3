build-fx/obj/scram.o: src/scram.c src/scram.h include/mailpull/common.h \
 include/mailpull/util.h
src/scram.h:
include/mailpull/common.h:
include/mailpull/util.h:
