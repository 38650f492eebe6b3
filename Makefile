# mailpull — plain, non-recursive Makefile.
#   make            build ./build/mailpull
#   make check      unit + integration tests (needs the packages in tests/deps.sh)
#   make asan       the whole test suite again under AddressSanitizer + UBSan
#   make valgrind   the integration tests with mailpull under valgrind memcheck
#   make killtest   KILL_RUNS (50) random SIGKILLs per protocol and keep setting
#   make oomtest    each allocation of mailpull's own failing, at every point
#   make demo       fetch sample mail from a throwaway local Dovecot
#   make bench      mailpull against mpop (POP3) and mbsync (IMAP) on the same local mailbox
#   make install    PREFIX=/usr/local DESTDIR=

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/mailpull
SYSCONFDIR ?= /etc
PYTHON ?= /usr/bin/python3

CC ?= cc
PKG_CONFIG ?= pkg-config
PKGS = openssl libconfuse libsystemd jansson libidn
# libcurl: its headers only; src/http.c loads it at run time (see there why).
CFLAGS_PKGS = libcurl

BUILDDIR ?= build
SAN ?=

WERROR ?= -Werror
WARN = $(WERROR) -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
       -Wno-missing-field-initializers
CFLAGS ?= -O2 -g
ifeq ($(SAN),1)
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
ALL_CFLAGS = -std=c17 -D_GNU_SOURCE -pthread $(WARN) $(CFLAGS) $(SANFLAGS) -Iinclude -Isrc \
	     $(shell $(PKG_CONFIG) --cflags $(PKGS) $(CFLAGS_PKGS)) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS) -pthread
# libsystemd: headers only; src/util.c loads it when the daemon needs it.
LIBS = $(shell $(PKG_CONFIG) --libs $(filter-out libsystemd,$(PKGS)))

SRCS = $(wildcard src/*.c)
OBJS = $(SRCS:src/%.c=$(BUILDDIR)/obj/%.o)
LIBOBJS = $(filter-out $(BUILDDIR)/obj/main.o,$(OBJS))
LIB = $(BUILDDIR)/libmailpull.a
BIN = $(BUILDDIR)/mailpull

UNIT_SRCS = $(wildcard tests/unit/test_*.c)
UNIT_BINS = $(UNIT_SRCS:tests/unit/%.c=$(BUILDDIR)/tests/%)

all: $(BIN)

$(BIN): $(OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $(OBJS) $(LIBS)

$(BUILDDIR)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# Unit tests link against an archive so each pulls in only the modules it uses.
$(LIB): $(LIBOBJS)
	rm -f $@
	$(AR) rcs $@ $(LIBOBJS)

# The unit tests' own helpers (the scripted fake server), also an archive:
# a test that does not use them links none of them.
TESTLIB = $(BUILDDIR)/tests/libunit.a
TESTLIB_OBJS = $(BUILDDIR)/tests/obj/fakeserver.o

$(BUILDDIR)/tests/obj/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

-include $(TESTLIB_OBJS:.o=.d)

$(TESTLIB): $(TESTLIB_OBJS)
	rm -f $@
	$(AR) rcs $@ $(TESTLIB_OBJS)

$(BUILDDIR)/tests/%: tests/unit/%.c $(TESTLIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(TESTLIB) $(LIB) $(ALL_LDFLAGS) $(LIBS) \
		$(shell $(PKG_CONFIG) --libs cmocka)

# LD_PRELOAD library for the local fault tests (disk full, EIO, EROFS). Built
# without sanitizers: under ASan it is preloaded after the ASan runtime.
FAULTINJECT = $(BUILDDIR)/tests/faultinject.so
$(FAULTINJECT): tests/faultinject.c
	@mkdir -p $(dir $@)
	$(CC) -std=c17 $(WARN) -O2 -g -fPIC -shared -o $@ $< -ldl

# LD_PRELOAD library that fails one allocation made by mailpull's own code
# (the allocation-failure tests); used with the plain build only.
FAILMALLOC = $(BUILDDIR)/tests/failmalloc.so
$(FAILMALLOC): tests/failmalloc.c
	@mkdir -p $(dir $@)
	$(CC) -std=c17 $(WARN) -O2 -g -fPIC -shared -o $@ $< -ldl

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# The integration tests wait on servers, disks and timers far more than on
# the CPU, so several run at once (python3-pytest-xdist); PYTEST_JOBS= runs
# them one by one.
PYTEST_JOBS ?= 3
# Where tests/deps.sh unpacks Cyrus IMAP, the second real server.
CYRUS_ROOT ?= /var/cache/mailpull-test/cyrus
# A driver of the Sent-copy module against the real servers (built here, so
# the tests never run make themselves while the binary is in use).
SENTCOPY_DRIVE = $(BUILDDIR)/tests/sentcopy_drive
# A TLS 1.3 IMAP server checking SCRAM-SHA-256-PLUS with tls-exporter (the
# scripted Python servers cannot export keying material); OpenSSL only.
CBSERVER = $(BUILDDIR)/tests/cbserver
$(CBSERVER): tests/unit/cbserver.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(shell $(PKG_CONFIG) --libs openssl)
integration: $(CBSERVER)
integration: $(BIN) $(FAULTINJECT) $(FAILMALLOC) $(SENTCOPY_DRIVE)
	MAILPULL_BIN=$(abspath $(BIN)) MAILPULL_FAULTINJECT=$(abspath $(FAULTINJECT)) \
	MAILPULL_CYRUS_ROOT=$(CYRUS_ROOT) \
	MAILPULL_FAILMALLOC=$(abspath $(FAILMALLOC)) $(PYTHON) -m pytest -q -p no:cacheprovider \
		$(if $(PYTEST_JOBS),-n $(PYTEST_JOBS)) tests/integration $(PYTEST_ARGS)

check: all unit integration

# The crash loops only sample here (every third durability step, fewer
# random kills): the plain pass crashes at every step, and this pass is
# about memory errors on the same paths.
asan:
	MAILPULL_CRASH_STRIDE=3 MAILPULL_KILL_RUNS=8 \
		$(MAKE) BUILDDIR=build-asan SAN=1 CFLAGS="-O1 -g" check

# The integration tests again with every mailpull process under valgrind
# memcheck; a test fails on any memory error or definite leak. Deadlines
# stretch five times and the crash loops sample (every fifth step, five kills).
valgrind: $(BIN)
	MAILPULL_VALGRIND=1 MAILPULL_CRASH_STRIDE=5 MAILPULL_KILL_RUNS=5 $(MAKE) integration

# Many more random SIGKILLs than the default suite: KILL_RUNS per test, for
# POP3 and IMAP, keep = no and keep = yes.
KILL_RUNS ?= 50
killtest: $(BIN)
	MAILPULL_KILL_RUNS=$(KILL_RUNS) $(MAKE) integration PYTEST_ARGS="-k sigkill_at_random"

# Every allocation point of a run fails in turn, and every one from which
# all later ones fail (the default pass samples them).
oomtest: $(BIN)
	MAILPULL_OOM_POINTS=100000 MAILPULL_OOM_FROM_POINTS=100000 $(MAKE) integration \
		PYTEST_ARGS="-k allocation_failure"

# The call-cycle check reads the objects' symbol tables.
lint: $(OBJS)
	sh tests/lint.sh $(BUILDDIR)/obj

demo: $(BIN)
	$(PYTHON) tests/demo.py $(abspath $(BIN))

# The bench's helpers: a delay proxy (no netem here), the raw-wire and the
# file-creation references.
BENCH_TOOLS = $(BUILDDIR)/bench/delayproxy $(BUILDDIR)/bench/rawwire $(BUILDDIR)/bench/filecreate

$(BUILDDIR)/bench/%: tests/bench/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c17 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(shell $(PKG_CONFIG) --cflags openssl) \
		-o $@ $< $(shell $(PKG_CONFIG) --libs openssl)

bench-tools: $(BENCH_TOOLS)
# tests/integration/test_bench_tools.py checks them.
integration: $(BENCH_TOOLS)

bench: $(BIN) $(BENCH_TOOLS)
	$(PYTHON) tests/bench.py $(abspath $(BIN)) --tools $(abspath $(BUILDDIR)/bench) --poll

install: $(BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(DOCDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/mailpull
	ln -sf mailpull $(DESTDIR)$(BINDIR)/mailpull-sendmail
	install -m 0644 man/mailpull.1 $(DESTDIR)$(MANDIR)/man1/mailpull.1
	install -m 0644 man/mailpull.conf.5 $(DESTDIR)$(MANDIR)/man5/mailpull.conf.5
	install -m 0644 conf/mailpull.conf $(DESTDIR)$(DOCDIR)/mailpull.conf.sample

clean:
	rm -rf build build-asan build-clang build-fuzz

.PHONY: all unit integration check asan valgrind killtest oomtest lint demo bench bench-tools install clean

-include $(OBJS:.o=.d)

# libFuzzer harnesses (needs clang): IMAP parser, RFC 2047, mUTF-7, folders,
# POP3 replies and bodies, config loader, state files, address lists and
# outbox messages.
#   make fuzz FUZZ_SECONDS=60      each harness in turn
#   make fuzz-ci FUZZ_SECONDS=60   all of them, two at a time, with a summary;
#                                  fails when any finds a crash, leak or timeout
# New inputs go to build-fuzz/corpus/NAME/; crashes to build-fuzz/artifacts/
# (keep them in tests/fuzz/corpus/NAME/ once fixed).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 2
FUZZ_CFLAGS = -std=c17 -D_GNU_SOURCE $(WARN) -g -O1 -Iinclude -Isrc \
	      -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

FUZZ_TARGETS = imap_parse mimeword mutf7 folder pop3 config state smtp addr scram oauth2
FUZZ_SRCS_imap_parse = src/imap_parse.c
FUZZ_SRCS_mimeword = src/mimeword.c src/utf8.c src/util.c src/err.c
FUZZ_SRCS_mutf7 = src/mutf7.c src/utf8.c src/util.c
FUZZ_SRCS_folder = src/folder.c src/utf8.c src/util.c
FUZZ_SRCS_pop3 = src/pop3.c src/pop3_body.c src/conn.c src/tls.c src/sasl.c src/scram.c \
		 src/log.c src/util.c src/err.c src/utf8.c
FUZZ_PKGS_pop3 = openssl libsystemd libidn
FUZZ_SRCS_smtp = src/smtp.c src/conn.c src/tls.c src/sasl.c src/scram.c src/log.c src/util.c \
		 src/err.c src/utf8.c
FUZZ_PKGS_smtp = openssl libsystemd libidn
FUZZ_SRCS_config = src/config.c src/util.c src/err.c src/utf8.c
FUZZ_PKGS_config = libconfuse
FUZZ_SRCS_state = src/state.c src/state_pop3.c src/state_imap.c src/state_name.c src/state_send.c \
		  src/state_set.c src/util.c src/err.c src/utf8.c
FUZZ_SRCS_scram = src/scram.c src/sasl.c src/util.c src/utf8.c
FUZZ_PKGS_scram = openssl libidn
FUZZ_SRCS_addr = src/addr.c src/outbox.c src/hdr.c src/maildir.c src/util.c src/err.c src/utf8.c
FUZZ_SRCS_oauth2 = src/oauth2.c src/http.c src/log.c src/util.c src/err.c src/utf8.c
FUZZ_PKGS_oauth2 = jansson libcurl openssl libsystemd

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard src/*.c src/*.h include/mailpull/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRCS_$*) \
		$(if $(FUZZ_PKGS_$*),$(shell $(PKG_CONFIG) --cflags --libs $(FUZZ_PKGS_$*)))

# Each harness runs FUZZ_SECONDS; a dictionary is used where one exists.
fuzz: $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p build-fuzz/corpus/$$t build-fuzz/artifacts; \
		dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
		echo "== fuzz_$$t for $(FUZZ_SECONDS) s"; \
		build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
			$$dict -artifact_prefix=build-fuzz/artifacts/$$t- \
			build-fuzz/corpus/$$t tests/fuzz/corpus/$$t; \
	done

fuzz-ci: $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)
	FUZZ_JOBS=$(FUZZ_JOBS) sh tests/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

.PHONY: fuzz fuzz-ci

# systemd units: the user units (daemon, one-shot + timer) and the system-wide
# template, with @bindir@ replaced by $(BINDIR). Installed by `make install`.
SYSTEMDUSERUNITDIR ?= $(PREFIX)/lib/systemd/user
SYSTEMDSYSTEMUNITDIR ?= $(PREFIX)/lib/systemd/system
USER_UNITS = mailpull.service mailpull-once.service mailpull.timer
SYSTEM_UNITS = mailpull@.service

install: install-units

install-units:
	install -d $(DESTDIR)$(SYSTEMDUSERUNITDIR) $(DESTDIR)$(SYSTEMDSYSTEMUNITDIR)
	set -e; for u in $(USER_UNITS); do \
		sed 's|@bindir@|$(BINDIR)|g' systemd/$$u > $(DESTDIR)$(SYSTEMDUSERUNITDIR)/$$u; \
		chmod 0644 $(DESTDIR)$(SYSTEMDUSERUNITDIR)/$$u; done
	set -e; for u in $(SYSTEM_UNITS); do \
		sed 's|@bindir@|$(BINDIR)|g' systemd/$$u > $(DESTDIR)$(SYSTEMDSYSTEMUNITDIR)/$$u; \
		chmod 0644 $(DESTDIR)$(SYSTEMDSYSTEMUNITDIR)/$$u; done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/mailpull $(DESTDIR)$(BINDIR)/mailpull-sendmail
	rm -f $(DESTDIR)$(MANDIR)/man1/mailpull.1 $(DESTDIR)$(MANDIR)/man5/mailpull.conf.5
	rm -f $(DESTDIR)$(DOCDIR)/mailpull.conf.sample
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null
	rm -f $(addprefix $(DESTDIR)$(SYSTEMDUSERUNITDIR)/,$(USER_UNITS))
	rm -f $(addprefix $(DESTDIR)$(SYSTEMDSYSTEMUNITDIR)/,$(SYSTEM_UNITS))

.PHONY: install-units uninstall
