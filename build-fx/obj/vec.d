build-fx/obj/vec.o: src/vec.c src/vec.h include/mailpull/common.h
src/vec.h:
include/mailpull/common.h:
