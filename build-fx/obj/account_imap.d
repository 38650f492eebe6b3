build-fx/obj/account_imap.o: src/account_imap.c include/mailpull/folder.h \
 include/mailpull/common.h include/mailpull/hdr.h include/mailpull/imap.h \
 include/mailpull/conn.h include/mailpull/err.h include/mailpull/sasl.h \
 include/mailpull/log.h include/mailpull/util.h src/account_int.h \
 include/mailpull/account.h include/mailpull/config.h \
 include/mailpull/state.h src/deliver.h include/mailpull/maildir.h \
 src/session.h src/vec.h
include/mailpull/folder.h:
include/mailpull/common.h:
include/mailpull/hdr.h:
include/mailpull/imap.h:
include/mailpull/conn.h:
include/mailpull/err.h:
include/mailpull/sasl.h:
include/mailpull/log.h:
include/mailpull/util.h:
src/account_int.h:
include/mailpull/account.h:
include/mailpull/config.h:
include/mailpull/state.h:
src/deliver.h:
include/mailpull/maildir.h:
src/session.h:
src/vec.h:
