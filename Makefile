# tornado.h: everything is built next to its sources (the top level is fixed).
#   make run      build and serve examples/hello on http://127.0.0.1:8888
#   make test     the whole suite: epoll, poll, and without threads (TN_NO_THREADS)
#   make check    sanitizers, valgrind, the compile matrix, the symbol check, the fuzzer
#   make bench    benchmarks (bench/README.md)
#   make bench-todo  examples/todo on PostgreSQL with and without its cache
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -std=c99 -Wall -Wextra -Wpedantic -Werror
LDLIBS   = -pthread
HDR      = tornado.h

TEST_SRCS = $(sort $(wildcard tests/test_*.c)) tests/main.c tests/impl.c
TEST_DEPS = $(TEST_SRCS) tests/tn_test.h tests/http_util.h tests/proc_util.h $(HDR)
EXAMPLES  = $(patsubst %.c,%,$(wildcard examples/*.c))
# the TLS suite, once per library (see below)
TLS_SUITES = tests/tn_tests-tls-openssl tests/tn_tests-tls-mbedtls

.PHONY: all test check examples bench bench-todo run clean test-epoll test-poll \
        check-asan check-valgrind check-matrix check-symbols check-macros check-fuzz

all: tests/tn_tests-epoll tests/tn_tests-poll tests/tn_tests-nothreads examples

# Each test binary is built from the suite's files in one compiler call;
# only tests/impl.c defines TORNADO_IMPLEMENTATION.
tests/tn_tests-epoll: $(TEST_DEPS)
	$(CC) $(WARN) $(CFLAGS) -D_GNU_SOURCE -o $@ $(TEST_SRCS) $(LDLIBS)
tests/tn_tests-poll: $(TEST_DEPS)
	$(CC) $(WARN) $(CFLAGS) -D_GNU_SOURCE -DTN_BACKEND_POLL -o $@ $(TEST_SRCS) $(LDLIBS)
# The library without pthreads (the executor runs inline); the tests still
# use threads of their own to play clients.
tests/tn_tests-nothreads: $(TEST_DEPS)
	$(CC) $(WARN) $(CFLAGS) -D_GNU_SOURCE -DTN_NO_THREADS -o $@ $(TEST_SRCS) $(LDLIBS)

test: tests/tn_tests-epoll tests/tn_tests-poll tests/tn_tests-nothreads $(TLS_SUITES) examples
	@sh tests/run.sh tests/tn_tests-epoll tests/tn_tests-poll tests/tn_tests-nothreads $(TLS_SUITES)

# $(call have_lib,PKG,HEADER,LIBS) is y when a library is there (pkg-config,
# or a test compile without it); $(call lib_flags,PKG,FALLBACK) its flags.
HASH := \#
have_lib = $(shell pkg-config --exists $(1) 2>/dev/null && echo y || \
    (printf '$(HASH)include <$(2)>\nint main(void) { return 0; }\n' | \
     $(CC) $(patsubst -l%,,$(3)) -x c - -o /dev/null $(filter -l%,$(3)) 2>/dev/null && echo y))
lib_flags = $(patsubst -I%,-isystem %,$(shell pkg-config --cflags --libs $(1) 2>/dev/null || echo $(2)))
OPENSSL_LIBS = -lssl -lcrypto
MBEDTLS_LIBS = -lmbedtls -lmbedx509 -lmbedcrypto

examples: $(EXAMPLES)
examples/%: examples/%.c $(HDR)
	$(CC) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS)
# fetch, crawler and httpbin speak https when OpenSSL is there (libssl-dev);
# without it they are built plain (https:// is then TN_ENOTLS).
HAVE_OPENSSL := $(call have_lib,openssl,openssl/ssl.h,$(OPENSSL_LIBS))
EX_TLS = $(if $(HAVE_OPENSSL),-DTN_TLS_OPENSSL $(call lib_flags,openssl,$(OPENSSL_LIBS)))
examples/fetch examples/crawler examples/httpbin: %: %.c $(HDR)
	$(CC) $(WARN) $(CFLAGS) -o $@ $< $(EX_TLS) $(LDLIBS)
# examples/todo needs SQLite and cJSON (Debian: libsqlite3-dev libcjson-dev);
# libpq-dev adds its --pg, libhiredis-dev its --redis. It is built only
# when pkg-config (or, without pkg-config, a test compile) finds them; else
# make says which package is missing and goes on.
PQ_FALLBACK = -I/usr/include/postgresql -lpq
examples/todo: examples/todo.c examples/sqlite.h examples/pg.h examples/redis_cache.h $(HDR)
	@if [ -z "$(call have_lib,sqlite3,sqlite3.h,-lsqlite3)" ]; then \
	    echo "skipped: libsqlite3-dev not installed ($@)"; \
	elif [ -z "$(call have_lib,libcjson,cjson/cJSON.h,-lcjson)" ]; then \
	    echo "skipped: libcjson-dev not installed ($@)"; \
	else \
	    flags="-DTODO_SQLITE $(call lib_flags,sqlite3,-lsqlite3) $(call lib_flags,libcjson,-lcjson)"; \
	    if [ -n "$(call have_lib,libpq,libpq-fe.h,$(PQ_FALLBACK))" ]; then \
	        flags="$$flags -DTODO_PG $(call lib_flags,libpq,$(PQ_FALLBACK))"; \
	    else echo "$@: no --pg: libpq-dev not installed"; fi; \
	    if [ -n "$(call have_lib,hiredis,hiredis/async.h,-lhiredis)" ]; then \
	        flags="$$flags -DTODO_REDIS $(call lib_flags,hiredis,-lhiredis)"; \
	    else echo "$@: no --redis: libhiredis-dev not installed"; fi; \
	    echo "$(CC) $(WARN) $(CFLAGS) -o $@ $< $$flags $(LDLIBS)"; \
	    $(CC) $(WARN) $(CFLAGS) -o $@ $< $$flags $(LDLIBS); \
	fi

# The TLS suite (tests/tls.c), once per backend: OpenSSL (Debian:
# libssl-dev) and mbedTLS (libmbedtls-dev). Without the library the suite
# is one skipped test (a failure under CI=true), dated 1970 so that the
# next make tries again.
TLS_SRCS = tests/tls.c tests/main.c tests/impl.c
TLS_DEPS = $(TLS_SRCS) tests/tn_test.h tests/http_util.h tests/proc_util.h $(HDR)
# $(call tls_suite,MACRO,PKG,HEADER,LIBS,DEBIAN PACKAGE,EXTRA FLAGS)
tls_suite = if [ -n "$(call have_lib,$(2),$(3),$(4))" ]; then \
        echo "$(CC) $(WARN) $(6) -D_GNU_SOURCE -D$(1) -o $@ $(TLS_SRCS) $(call lib_flags,$(2),$(4)) $(LDLIBS)"; \
        $(CC) $(WARN) $(6) -D_GNU_SOURCE -D$(1) -o $@ $(TLS_SRCS) $(call lib_flags,$(2),$(4)) $(LDLIBS); \
    else \
        echo "skipped: $(5) not installed ($@)"; \
        $(CC) $(WARN) -O0 -D_GNU_SOURCE '-DTLS_MISSING="$(5)"' -o $@ $(TLS_SRCS) $(LDLIBS) && touch -d @0 $@; \
    fi
tests/tn_tests-tls-openssl: $(TLS_DEPS)
	@$(call tls_suite,TN_TLS_OPENSSL,openssl,openssl/ssl.h,$(OPENSSL_LIBS),libssl-dev,$(CFLAGS))
tests/tn_tests-tls-mbedtls: $(TLS_DEPS)
	@$(call tls_suite,TN_TLS_MBEDTLS,mbedtls,mbedtls/ssl.h,$(MBEDTLS_LIBS),libmbedtls-dev,$(CFLAGS))

run: examples/hello
	@echo "serving http://127.0.0.1:8888  (Ctrl-C stops)"
	./examples/hello

# ---- make check ---------------------------------------------------------
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# Free lists and pools off, so every use after free reaches the checker;
# the poll build keeps them on, so what a pool holds is seen freed too.
NOPOOL = -DTN_FREE_LIST_MAX=0 -DTN_BUF_POOL=0 -DTN_HTTP_REQ_POOL=0
tests/tn_tests-asan: $(TEST_DEPS)
	$(CC) $(WARN) -O1 -g $(SAN) $(NOPOOL) -D_GNU_SOURCE -o $@ $(TEST_SRCS) $(LDLIBS)
tests/tn_tests-asan-poll: $(TEST_DEPS)
	$(CC) $(WARN) -O1 -g $(SAN) -D_GNU_SOURCE -DTN_BACKEND_POLL -o $@ $(TEST_SRCS) $(LDLIBS)
TLS_ASAN = tests/tn_tests-tls-openssl-asan tests/tn_tests-tls-mbedtls-asan
tests/tn_tests-tls-openssl-asan: $(TLS_DEPS)
	@$(call tls_suite,TN_TLS_OPENSSL,openssl,openssl/ssl.h,$(OPENSSL_LIBS),libssl-dev,-O1 -g $(SAN) $(NOPOOL))
tests/tn_tests-tls-mbedtls-asan: $(TLS_DEPS)
	@$(call tls_suite,TN_TLS_MBEDTLS,mbedtls,mbedtls/ssl.h,$(MBEDTLS_LIBS),libmbedtls-dev,-O1 -g $(SAN))
tests/tn_tests-vg: $(TEST_DEPS)
	$(CC) $(WARN) -O0 -g $(NOPOOL) -D_GNU_SOURCE -o $@ $(TEST_SRCS) $(LDLIBS)

check: check-symbols check-macros check-matrix check-asan check-valgrind check-fuzz check-cross

check-asan: tests/tn_tests-asan tests/tn_tests-asan-poll $(TLS_ASAN)
	@ASAN_OPTIONS=detect_leaks=1 TN_TEST_SLOW=1 sh tests/run.sh tests/tn_tests-asan tests/tn_tests-asan-poll $(TLS_ASAN)

check-valgrind: tests/tn_tests-vg
	@TN_VALGRIND=1 sh tests/run.sh tests/tn_tests-vg

check-matrix:
	@sh tests/matrix.sh

# Each feature macro (TN_NO_HTTP_CLIENT, _SERVER, _TCP, _EXECUTOR, _SIGNALS,
# TN_HTTP_MINIMAL) and the smallest combinations, with the suite's files
# they leave valid built and run (tests/features.sh).
.PHONY: check-features
check: check-features
check-features: examples
	@sh tests/features.sh

check-symbols:
	@sh tests/symbols.sh

# TN_NO_MALLOC: the implementation compiled with it references no allocator
# of the C library (nm -u; the ordinary build's object must, or the check
# proves nothing), and the suite runs with every loop on a region of its own
# (tests/features.sh no-malloc, with and without threads).
.PHONY: check-nomalloc
check: check-nomalloc
NOMALLOC_SYMS = malloc|calloc|realloc|reallocarray|free|strdup|strndup|posix_memalign|aligned_alloc|memalign|valloc|pvalloc
check-nomalloc:
	@mkdir -p tests/features
	$(CC) $(WARN) -O2 -D_GNU_SOURCE -c -x c tests/impl.c -o tests/features/impl-malloc.o
	$(CC) $(WARN) -O2 -D_GNU_SOURCE -DTN_NO_MALLOC -c -x c tests/impl.c -o tests/features/impl-nomalloc.o
	$(CC) $(WARN) -O2 -D_GNU_SOURCE -DTN_NO_MALLOC -DTN_NO_THREADS -DTN_BACKEND_POLL -c -x c tests/impl.c -o tests/features/impl-nomalloc-nothreads.o
	@nm -u tests/features/impl-malloc.o | grep -qwE '$(NOMALLOC_SYMS)' || \
	    { echo "check-nomalloc: the ordinary object references no malloc: the check is broken"; exit 1; }
	@for o in tests/features/impl-nomalloc.o tests/features/impl-nomalloc-nothreads.o; do \
	    if nm -u $$o | grep -wE '$(NOMALLOC_SYMS)'; then echo "check-nomalloc: $$o allocates (above)"; exit 1; fi; \
	    echo "$$o: no allocator referenced ($$(nm -u $$o | wc -l) undefined symbols)"; done
	@sh tests/features.sh no-malloc no-malloc-nothreads

# Every configuration macro in the code is in the manual and the README.
check-macros:
	@sh tests/macros.sh

# The suite cross-built for armhf (ILP32) and s390x (big-endian), both
# backends, under qemu-user; and the TN_POSIX_ONLY compile (tests/cross.sh).
.PHONY: check-cross
check-cross:
	@sh tests/cross.sh $(TEST_SRCS)

# libFuzzer (clang): the HTTP parsers, whole server connections and whole
# fetches, FUZZ_SECS seconds (60) in all (tests/fuzz.sh).
check-fuzz:
	@sh tests/fuzz.sh

bench:
	@$(MAKE) -C bench run

# examples/todo on PostgreSQL: GET /todos/{id} with and without the cache,
# and the single-flight count (bench/todo.sh).
bench-todo: examples
	@sh bench/todo.sh

clean:
	rm -f tests/tn_tests-* tests/fuzz_http tests/fuzz_server tests/fuzz_client $(EXAMPLES) tests/*.o
	rm -rf tests/cross tests/features
	-$(MAKE) -C bench clean

# ---- make check-failinject ---------------------------------------------
# Allocation-failure injection (tests/failinject.c): the workload once per
# allocation N with the N-th TN_MALLOC/TN_REALLOC failing, then with every
# one from N on failing; each run under ASan+UBSan+LeakSanitizer, on one
# thread (TN_NO_THREADS), pools off.
.PHONY: check-failinject clean-failinject
check: check-failinject
clean: clean-failinject
tests/failinject: tests/failinject.c $(HDR)
	$(CC) $(WARN) -O1 -g $(SAN) $(NOPOOL) -DTN_NO_THREADS -D_GNU_SOURCE -o $@ tests/failinject.c
check-failinject: tests/failinject
	@ASAN_OPTIONS=detect_leaks=1 ./tests/failinject
clean-failinject:
	rm -f tests/failinject

# ---- make check-abuse, make soak ---------------------------------------
# Hostile and careless peers against examples/httpbin and examples/fetch,
# each measured from /proc (RSS, fds, CPU) against bounds derived from the
# documented limits (tests/abuse.c, ~1 min); and a mixed workload for
# SOAK_SECS seconds (60) with RSS, fds and errors checked (tests/soak.c).
.PHONY: check-abuse soak clean-abuse
check: check-abuse
clean: clean-abuse
ABUSE_DEPS = tests/main.c tests/impl.c tests/tn_test.h tests/abuse.h $(HDR)
tests/tn_abuse: tests/abuse.c $(ABUSE_DEPS)
	$(CC) $(WARN) $(CFLAGS) -D_GNU_SOURCE -o $@ tests/abuse.c tests/main.c tests/impl.c $(LDLIBS)
tests/tn_soak: tests/soak.c $(ABUSE_DEPS)
	$(CC) $(WARN) $(CFLAGS) -D_GNU_SOURCE -o $@ tests/soak.c tests/main.c tests/impl.c $(LDLIBS)
check-abuse: tests/tn_abuse examples
	@sh tests/run.sh tests/tn_abuse
SOAK_SECS ?= 60
soak: tests/tn_soak examples
	@SOAK_SECS=$(SOAK_SECS) sh tests/run.sh tests/tn_soak
clean-abuse:
	rm -f tests/tn_abuse tests/tn_soak
