# imapgw: privilege-separated IMAP security gateway.
#
#   make            build build/imapgwd and build/imapgwctl
#   make deps       install the Debian packages build and tests need
#   make check      deps, build, unit tests (plain and ASan/UBSan),
#                   integration tests against a real Dovecot
#   make demo       deps, build, run the gateway in front of a demo Dovecot
#   make bench      regress/bench (benchmarks, not tests)
#   make install    install binaries, man pages and the sample config

CC	?= cc
PKG_CONFIG ?= pkg-config
PKGS	= openssl libclamav libseccomp gmime-3.0 libpcre2-8 yaml-0.1 \
	  libevent libarchive libmagic lmdb
PREFIX	?= /usr/local
DESTDIR	?=
B	= build

# Debian packages needed to build and to run every test.
DEB_BUILD = build-essential pkg-config clang libssl-dev libclamav-dev \
	    libseccomp-dev libgmime-3.0-dev libpcre2-dev libyaml-dev \
	    libevent-dev libclang-rt-14-dev libarchive-dev libmagic-dev \
	    liblmdb-dev
DEB_TEST  = dovecot-imapd python3 python3-pytest isync fetchmail curl clamav \
	    clamav-testfiles clamav-daemon clamdscan spamd spamc rspamd zip \
	    openssl mandoc procps iproute2 nftables stunnel4
DEB_ALL   = $(DEB_BUILD) $(DEB_TEST)

PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)

WARN	= -Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes \
	  -Wmissing-prototypes -Wno-unused-parameter
CFLAGS	?= -O2 -g
CFLAGS	+= -std=gnu11 -D_GNU_SOURCE -fstack-protector-strong \
	   -D_FORTIFY_SOURCE=2 -fPIE $(WARN) -Icommon -Iparent -Inetd -I$(B)/gen $(PKG_CFLAGS)
LDFLAGS	+= -pie -Wl,-z,relro,-z,now
LIBS	= $(PKG_LIBS)

COMMON_SRC = $(wildcard common/*.c)
DAEMON_SRC = $(wildcard parent/*.c netd/*.c scand/*.c tlsd/*.c)
CTL_SRC	   = $(wildcard imapgwctl/*.c)
GEN_SRC	   = $(B)/gen/default_config.c

COMMON_OBJ = $(COMMON_SRC:%.c=$(B)/obj/%.o) $(B)/obj/gen/default_config.o
DAEMON_OBJ = $(DAEMON_SRC:%.c=$(B)/obj/%.o)
CTL_OBJ	   = $(CTL_SRC:%.c=$(B)/obj/%.o)
HOOK_OBJ   = $(DAEMON_SRC:%.c=$(B)/obj-hooks/%.o) \
	     $(COMMON_SRC:%.c=$(B)/obj-hooks/%.o) $(B)/obj/gen/default_config.o

UNIT_SRC   = $(wildcard regress/unit/test_*.c)
UNIT_BIN   = $(UNIT_SRC:regress/unit/%.c=$(B)/test/%)
ASAN_BIN   = $(UNIT_SRC:regress/unit/%.c=$(B)/test-asan/%)
# Unit tests link the library code of every role except the mains.
LIB_SRC	   = $(COMMON_SRC) $(filter-out %/main.c,$(DAEMON_SRC))
LIB_OBJ	   = $(LIB_SRC:%.c=$(B)/obj/%.o) \
	     $(B)/obj/gen/default_config.o
ASAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	     -fno-sanitize-recover=undefined

all: $(B)/imapgwd $(B)/imapgwctl

$(B)/imapgwd: $(COMMON_OBJ) $(DAEMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(B)/imapgwctl: $(CTL_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# Test-only daemon: the same code plus the sandbox-violation hook.
$(B)/test/imapgwd-hooks: $(HOOK_OBJ)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(B)/obj/%.o: %.c $(wildcard common/*.h) $(wildcard */*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/obj-hooks/%.o: %.c $(wildcard common/*.h) $(wildcard */*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -DIMAPGW_TEST_HOOKS -c -o $@ $<

$(B)/obj/gen/default_config.o: $(GEN_SRC)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(GEN_SRC): etc/imapgwd.yaml
	@mkdir -p $(@D)
	{ echo '#include <stddef.h>'; \
	  echo 'const char config_default_yaml[] = {'; \
	  od -An -v -tx1 $< | sed -e 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '0x00 };'; \
	  echo 'const size_t config_default_yaml_len = sizeof(config_default_yaml) - 1;'; \
	} > $@

$(B)/test/%: regress/unit/%.c $(LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iregress/unit -Inetd -Iparent $(LDFLAGS) -o $@ $^ $(LIBS)

# The library code is compiled once with the sanitizers, then linked into
# every sanitized test.
ASAN_CFLAGS = $(filter-out -O2 -D_FORTIFY_SOURCE=2,$(CFLAGS)) $(ASAN_FLAGS)
ASAN_OBJ   = $(LIB_SRC:%.c=$(B)/obj-asan/%.o) $(B)/obj-asan/gen/default_config.o

$(B)/obj-asan/%.o: %.c $(wildcard common/*.h) $(wildcard */*.h)
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) -c -o $@ $<

$(B)/obj-asan/gen/default_config.o: $(GEN_SRC)
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) -c -o $@ $<

$(B)/test-asan/%: regress/unit/%.c $(ASAN_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) -Iregress/unit -Inetd -Iparent -o $@ $^ $(LIBS)

deps:
	@sh regress/deps.sh $(DEB_ALL)

unit: $(UNIT_BIN)
unit-asan: $(ASAN_BIN)

check: deps
	$(MAKE) all $(B)/test/imapgwd-hooks unit unit-asan fuzz-build
	$(MAKE) fuzz-smoke
	sh regress/run-checks.sh

demo: deps all
	sh regress/demo.sh

bench: all
	sh regress/bench/run.sh

format:
	clang-format -i $(wildcard */*.c */*.h regress/unit/*.c regress/unit/*.h)

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/man/man8 \
	    $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)/etc/imapgw
	install -m 755 $(B)/imapgwd $(B)/imapgwctl $(DESTDIR)$(PREFIX)/sbin/
	install -m 644 parent/imapgwd.8 imapgwctl/imapgwctl.8 \
	    $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 644 parent/imapgwd.yaml.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	test -e $(DESTDIR)/etc/imapgw/imapgwd.yaml || \
	    install -m 640 etc/imapgwd.yaml $(DESTDIR)/etc/imapgw/

clean:
	rm -rf $(B)

.PHONY: all deps unit unit-asan check demo bench format install clean

# ---- fuzz: libFuzzer harnesses for netd/imap_parse.c and netd/sni.c (regress/fuzz) ----
#   make fuzz-smoke   each harness FUZZ_SMOKE_TIME seconds (default 10),
#                     ASan/UBSan; fails on any crash or broken invariant
#   make fuzz         each harness FUZZ_TIME seconds (default 600)
FUZZ_CC		?= clang
FUZZ_TIME	?= 600
FUZZ_SMOKE_TIME	?= 10
FUZZ_CFLAGS	= -std=gnu11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
		  -fsanitize=fuzzer,address,undefined \
		  -fno-sanitize-recover=undefined -Wall -Wextra -Inetd
FUZZ_BIN	= $(B)/fuzz/fuzz_command $(B)/fuzz/fuzz_response $(B)/fuzz/fuzz_sni

$(B)/fuzz/fuzz_sni: regress/fuzz/fuzz_sni.c netd/sni.c netd/sni.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< netd/sni.c

$(B)/fuzz/fuzz_%: regress/fuzz/fuzz_%.c regress/fuzz/fuzz_common.h \
		  netd/imap_parse.c netd/imap_parse.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< netd/imap_parse.c

fuzz-build: $(FUZZ_BIN)

fuzz-smoke: $(FUZZ_BIN)
	FUZZ_TIME=$(FUZZ_SMOKE_TIME) sh regress/fuzz/run.sh $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	FUZZ_TIME=$(FUZZ_TIME) sh regress/fuzz/run.sh $(FUZZ_BIN)

.PHONY: fuzz fuzz-smoke fuzz-build
# ---- end fuzz ----
