build-fx/obj/main.o: src/main.c include/mailpull/account.h \
 include/mailpull/common.h include/mailpull/err.h \
 include/mailpull/config.h include/mailpull/cli.h \
 include/mailpull/daemon.h include/mailpull/log.h \
 include/mailpull/oauth2.h include/mailpull/sendmail.h \
 include/mailpull/state.h
include/mailpull/account.h:
include/mailpull/common.h:
include/mailpull/err.h:
include/mailpull/config.h:
include/mailpull/cli.h:
include/mailpull/daemon.h:
include/mailpull/log.h:
include/mailpull/oauth2.h:
include/mailpull/sendmail.h:
include/mailpull/state.h:
