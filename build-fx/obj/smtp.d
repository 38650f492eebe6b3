build-fx/obj/smtp.o: src/smtp.c include/mailpull/log.h \
 include/mailpull/common.h include/mailpull/smtp.h \
 include/mailpull/conn.h include/mailpull/err.h include/mailpull/sasl.h \
 include/mailpull/util.h
include/mailpull/log.h:
include/mailpull/common.h:
include/mailpull/smtp.h:
include/mailpull/conn.h:
include/mailpull/err.h:
include/mailpull/sasl.h:
include/mailpull/util.h:
