build-fx/obj/account_pop3.o: src/account_pop3.c include/mailpull/conn.h \
 include/mailpull/common.h include/mailpull/err.h include/mailpull/hdr.h \
 include/mailpull/log.h include/mailpull/pop3.h include/mailpull/sasl.h \
 include/mailpull/sink.h src/account_int.h include/mailpull/account.h \
 include/mailpull/config.h include/mailpull/state.h src/deliver.h \
 include/mailpull/maildir.h src/session.h include/mailpull/imap.h \
 src/vec.h
include/mailpull/conn.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/hdr.h:
include/mailpull/log.h:
include/mailpull/pop3.h:
include/mailpull/sasl.h:
include/mailpull/sink.h:
src/account_int.h:
include/mailpull/account.h:
include/mailpull/config.h:
include/mailpull/state.h:
src/deliver.h:
include/mailpull/maildir.h:
src/session.h:
include/mailpull/imap.h:
src/vec.h:
