build-fx/obj/session.o: src/session.c include/mailpull/log.h \
 include/mailpull/common.h include/mailpull/oauth2.h \
 include/mailpull/config.h include/mailpull/err.h \
 include/mailpull/secret.h include/mailpull/util.h src/session.h \
 include/mailpull/account.h include/mailpull/conn.h \
 include/mailpull/imap.h include/mailpull/sasl.h
include/mailpull/log.h:
include/mailpull/common.h:
include/mailpull/oauth2.h:
include/mailpull/config.h:
include/mailpull/err.h:
include/mailpull/secret.h:
include/mailpull/util.h:
src/session.h:
include/mailpull/account.h:
include/mailpull/conn.h:
include/mailpull/imap.h:
include/mailpull/sasl.h:
