# tornado.h: everything is built next to its sources (the top level is fixed).
#   make run      build and serve examples/hello on http://127.0.0.1:8888
#   make test     the whole suite: epoll, poll, and without threads (TN_NO_THREADS)
#   make check    sanitizers, valgrind, the compile matrix, the symbol check, the fuzzer
#   make bench    benchmarks (bench/README.md)
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -std=c99 -Wall -Wextra -Wpedantic -Werror
LDLIBS   = -pthread
HDR      = tornado.h

TEST_SRCS = $(sort $(wildcard tests/test_*.c)) tests/main.c tests/impl.c
TEST_DEPS = $(TEST_SRCS) tests/tn_test.h tests/http_util.h $(HDR)
EXAMPLES  = $(patsubst %.c,%,$(wildcard examples/*.c))

.PHONY: all test check examples bench run clean test-epoll test-poll \
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

test: tests/tn_tests-epoll tests/tn_tests-poll tests/tn_tests-nothreads examples
	@sh tests/run.sh tests/tn_tests-epoll tests/tn_tests-poll tests/tn_tests-nothreads

examples: $(EXAMPLES)
examples/%: examples/%.c $(HDR)
	$(CC) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS)

run: examples/hello
	@echo "serving http://127.0.0.1:8888  (Ctrl-C stops)"
	./examples/hello

# ---- make check ---------------------------------------------------------
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# Free lists and pools off, so every use after free reaches the checker.
NOPOOL = -DTN_FREE_LIST_MAX=0 -DTN_BUF_POOL=0 -DTN_HTTP_REQ_POOL=0
tests/tn_tests-asan: $(TEST_DEPS)
	$(CC) $(WARN) -O1 -g $(SAN) $(NOPOOL) -D_GNU_SOURCE -o $@ $(TEST_SRCS) $(LDLIBS)
tests/tn_tests-asan-poll: $(TEST_DEPS)
	$(CC) $(WARN) -O1 -g $(SAN) $(NOPOOL) -D_GNU_SOURCE -DTN_BACKEND_POLL -o $@ $(TEST_SRCS) $(LDLIBS)
tests/tn_tests-vg: $(TEST_DEPS)
	$(CC) $(WARN) -O0 -g $(NOPOOL) -D_GNU_SOURCE -o $@ $(TEST_SRCS) $(LDLIBS)

check: check-symbols check-macros check-matrix check-asan check-valgrind check-fuzz check-cross

check-asan: tests/tn_tests-asan tests/tn_tests-asan-poll
	@ASAN_OPTIONS=detect_leaks=1 TN_TEST_SLOW=1 sh tests/run.sh tests/tn_tests-asan tests/tn_tests-asan-poll

check-valgrind: tests/tn_tests-vg
	@TN_VALGRIND=1 sh tests/run.sh tests/tn_tests-vg

check-matrix:
	@sh tests/matrix.sh

check-symbols:
	@sh tests/symbols.sh

# Every configuration macro in the code is in the manual and the README.
check-macros:
	@sh tests/macros.sh

# The suite cross-built for armhf (ILP32) and s390x (big-endian), both
# backends, under qemu-user; and the TN_POSIX_ONLY compile (tests/cross.sh).
.PHONY: check-cross
check-cross:
	@sh tests/cross.sh $(TEST_SRCS)

# The HTTP parsers under libFuzzer (clang), FUZZ_SECS seconds (60).
check-fuzz:
	@sh tests/fuzz.sh

bench:
	@$(MAKE) -C bench run

clean:
	rm -f tests/tn_tests-* tests/fuzz_http $(EXAMPLES) tests/*.o
	rm -rf tests/cross
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
