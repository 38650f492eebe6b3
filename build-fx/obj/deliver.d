build-fx/obj/deliver.o: src/deliver.c include/mailpull/log.h \
 include/mailpull/common.h include/mailpull/util.h src/deliver.h \
 include/mailpull/account.h include/mailpull/err.h \
 include/mailpull/config.h include/mailpull/maildir.h \
 include/mailpull/state.h src/session.h include/mailpull/conn.h \
 include/mailpull/imap.h include/mailpull/sasl.h src/vec.h
include/mailpull/log.h:
include/mailpull/common.h:
include/mailpull/util.h:
src/deliver.h:
include/mailpull/account.h:
include/mailpull/err.h:
include/mailpull/config.h:
include/mailpull/maildir.h:
include/mailpull/state.h:
src/session.h:
include/mailpull/conn.h:
include/mailpull/imap.h:
include/mailpull/sasl.h:
src/vec.h:
