build-fx/obj/pop3.o: src/pop3.c include/mailpull/log.h \
 include/mailpull/common.h include/mailpull/pop3.h \
 include/mailpull/conn.h include/mailpull/err.h include/mailpull/sasl.h \
 include/mailpull/sink.h include/mailpull/pop3_body.h \
 include/mailpull/util.h
include/mailpull/log.h:
include/mailpull/common.h:
include/mailpull/pop3.h:
include/mailpull/conn.h:
include/mailpull/err.h:
include/mailpull/sasl.h:
include/mailpull/sink.h:
include/mailpull/pop3_body.h:
include/mailpull/util.h:
