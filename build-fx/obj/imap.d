build-fx/obj/imap.o: src/imap.c include/mailpull/imap.h \
 include/mailpull/common.h include/mailpull/conn.h include/mailpull/err.h \
 include/mailpull/sasl.h include/mailpull/imap_parse.h \
 include/mailpull/log.h include/mailpull/mutf7.h include/mailpull/utf8.h \
 include/mailpull/util.h
include/mailpull/imap.h:
include/mailpull/common.h:
include/mailpull/conn.h:
include/mailpull/err.h:
include/mailpull/sasl.h:
include/mailpull/imap_parse.h:
include/mailpull/log.h:
include/mailpull/mutf7.h:
include/mailpull/utf8.h:
include/mailpull/util.h:
