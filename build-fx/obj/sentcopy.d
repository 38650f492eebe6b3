build-fx/obj/sentcopy.o: src/sentcopy.c include/mailpull/imap.h \
 include/mailpull/common.h include/mailpull/conn.h include/mailpull/err.h \
 include/mailpull/sasl.h include/mailpull/log.h include/mailpull/util.h \
 src/sentcopy.h include/mailpull/config.h src/session.h \
 include/mailpull/account.h
include/mailpull/imap.h:
include/mailpull/common.h:
include/mailpull/conn.h:
include/mailpull/err.h:
include/mailpull/sasl.h:
include/mailpull/log.h:
include/mailpull/util.h:
src/sentcopy.h:
include/mailpull/config.h:
src/session.h:
include/mailpull/account.h:
