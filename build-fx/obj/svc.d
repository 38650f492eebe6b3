build-fx/obj/svc.o: src/svc.c include/mailpull/svc.h \
 include/mailpull/common.h
include/mailpull/svc.h:
include/mailpull/common.h:
