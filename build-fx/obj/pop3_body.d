build-fx/obj/pop3_body.o: src/pop3_body.c include/mailpull/pop3_body.h \
 include/mailpull/common.h
include/mailpull/pop3_body.h:
include/mailpull/common.h:
