build-fx/obj/account_send.o: src/account_send.c \
 include/mailpull/account.h include/mailpull/common.h \
 include/mailpull/err.h include/mailpull/config.h include/mailpull/hdr.h \
 include/mailpull/log.h include/mailpull/maildir.h \
 include/mailpull/mimeword.h include/mailpull/outbox.h \
 include/mailpull/smtp.h include/mailpull/conn.h include/mailpull/sasl.h \
 include/mailpull/state.h include/mailpull/util.h src/deliver.h \
 src/session.h include/mailpull/imap.h src/sentcopy.h
include/mailpull/account.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/config.h:
include/mailpull/hdr.h:
include/mailpull/log.h:
include/mailpull/maildir.h:
include/mailpull/mimeword.h:
include/mailpull/outbox.h:
include/mailpull/smtp.h:
include/mailpull/conn.h:
include/mailpull/sasl.h:
include/mailpull/state.h:
include/mailpull/util.h:
src/deliver.h:
src/session.h:
include/mailpull/imap.h:
src/sentcopy.h:
