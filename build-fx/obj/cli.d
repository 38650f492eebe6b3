build-fx/obj/cli.o: src/cli.c include/mailpull/cli.h \
 include/mailpull/common.h
include/mailpull/cli.h:
include/mailpull/common.h:
