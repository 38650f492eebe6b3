build-fx/obj/sasl.o: src/sasl.c include/mailpull/sasl.h \
 include/mailpull/common.h include/mailpull/util.h src/scram.h
include/mailpull/sasl.h:
include/mailpull/common.h:
include/mailpull/util.h:
src/scram.h:
