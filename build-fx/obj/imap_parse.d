build-fx/obj/imap_parse.o: src/imap_parse.c include/mailpull/imap_parse.h \
 include/mailpull/common.h
include/mailpull/imap_parse.h:
include/mailpull/common.h:
