#!/bin/sh
# make check-features: each feature macro (and the smallest combinations)
# builds the suite's files that do not use what it takes out, warning-free
# with -Werror, and runs them. What a configuration drops:
#   TN_NO_HTTP_CLIENT   the client                     -> no test_http_client
#   TN_NO_HTTP_SERVER   the server and the web layer   -> no server, web, client
#                       (its end tests start our server), patterns_db suites
#   TN_NO_TCP           tn_tcp_* and tn_stream_*       -> no tcp, client suites
#   TN_NO_EXECUTOR      tn_run_in_executor             -> no executor suite
#   TN_NO_SIGNALS       tn_signal_*                    -> test_loop without them
#   TN_HTTP_MINIMAL     see the manual                 -> tests/minimal.c instead
#                       of the server and web suites
#   TN_NO_MALLOC        every allocation from the loop's region (each test
#                       loop gets one: tests/tn_test.h) -> every suite file
#                       (tn_http_fetch_sync is TN_EINVAL; test_nomalloc.c
#                       runs out of regions on purpose); with and without
#                       threads
# Names given as arguments build only those configurations
# (make check-nomalloc: sh tests/features.sh no-malloc no-malloc-nothreads).
# The suites that test the examples (built in the default configuration:
# test_examples, test_http_interop, test_httpbin) are not rerun here.
# Ends with "N passed, N failed" (tests/run.sh).
set -u
cd "$(dirname "$0")/.." || exit 1
CC=${CC:-cc}
WARN="-std=c99 -Wall -Wextra -Wpedantic -Werror"
out=tests/features
mkdir -p "$out"
all=$(ls tests/test_*.c | grep -v -e test_examples -e test_http_interop -e test_httpbin)
pick() { # the suite files without the ones named
    files=$all
    for x in "$@"; do files=$(printf '%s\n' $files | grep -v "tests/$x.c"); done
    echo $files
}
bins=""
only="$*"
build() { # name "macros" files...
    name=$1 macros=$2
    shift 2
    if [ -n "$only" ] && ! printf ' %s ' $only | grep -q " $name "; then return; fi
    echo "   build $out/$name ($macros)"
    # shellcheck disable=SC2086
    if $CC $WARN -O1 -g -D_GNU_SOURCE $macros -o "$out/$name" "$@" tests/main.c tests/impl.c -pthread; then
        bins="$bins $out/$name"
    else
        echo "   FAIL: the build of $name"
        printf '#!/bin/sh\necho "build failed"\nexit 1\n' > "$out/$name"
        chmod +x "$out/$name"
        bins="$bins $out/$name"
    fi
}
build no-http-client "-DTN_NO_HTTP_CLIENT" $(pick test_http_client)
build no-http-server "-DTN_NO_HTTP_SERVER" $(pick test_http_server test_http_web test_http_client test_patterns_db)
build no-tcp "-DTN_NO_TCP" $(pick test_tcp test_http_client)
build no-executor "-DTN_NO_EXECUTOR" $(pick test_executor)
build no-signals "-DTN_NO_SIGNALS -DTN_BACKEND_POLL" $all
build http-minimal "-DTN_HTTP_MINIMAL" $(pick test_http_server test_http_web test_patterns_db) tests/minimal.c
# the smallest server: minimal, poll, no client, TCP API, executor, signals or threads
build smallest-server "-DTN_HTTP_MINIMAL -DTN_BACKEND_POLL -DTN_NO_HTTP_CLIENT -DTN_NO_TCP -DTN_NO_EXECUTOR -DTN_NO_SIGNALS -DTN_NO_THREADS" \
    tests/test_co.c tests/test_co_labels.c tests/test_future.c tests/test_loop.c tests/test_locks.c \
    tests/test_http_parser.c tests/minimal.c
# the core alone: the loop, futures, coroutines, locks, the cache
build core "-DTN_NO_HTTP_SERVER -DTN_NO_HTTP_CLIENT -DTN_NO_TCP -DTN_NO_EXECUTOR -DTN_NO_SIGNALS" \
    tests/test_co.c tests/test_co_labels.c tests/test_future.c tests/test_loop.c tests/test_locks.c \
    tests/test_http_parser.c tests/test_patterns.c
# TN_NO_MALLOC: the library's allocations from the loop's region only
build no-malloc "-DTN_NO_MALLOC" $all
build no-malloc-nothreads "-DTN_NO_MALLOC -DTN_NO_THREADS -DTN_BACKEND_POLL" $all
# shellcheck disable=SC2086
sh tests/run.sh $bins
