#!/bin/sh
# tests/fuzz.sh: builds three libFuzzer targets with clang (ASan + UBSan) and runs each for its
# share of FUZZ_SECS seconds (60: 20 s each), from seed inputs and a dictionary:
#   tests/fuzz_http.c    the request, response and chunked parsers, whole and in pieces
#   tests/fuzz_server.c  one whole server connection per input (routes of every kind, pipelining,
#                        timeouts, lingering close), its output checked against a model
#   tests/fuzz_client.c  one whole fetch per input: the input is what the server sends
# The server and client targets are built with TN_NO_THREADS and without free lists or pools
# (TN_FREE_LIST_MAX=0 TN_BUF_POOL=0 TN_HTTP_REQ_POOL=0), so a use after free reaches ASan.
# A finding stops the run with the input saved under $FUZZ_OUT (default: tests/, as crash-*,
# leak-*, timeout-*) and fails the check. Without clang's libFuzzer: "skipped: ..." locally, a
# failure under CI=true. What they found is fixed, each with a regression test in the suite
# (tests/test_http_server.c and tests/test_http_client.c, the tests named fuzz_*).
cd "$(dirname "$0")/.." || exit 1
CLANG=${CLANG:-clang}
SECS=${FUZZ_SECS:-60}
skip() {
    echo "skipped: clang's libFuzzer not installed ($1)"
    [ "${CI:-}" = true ] && { echo "fuzz: CI=true, so a missing tool is a failure"; exit 1; }
    exit 0
}
command -v "$CLANG" >/dev/null 2>&1 || skip "no $CLANG"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tnfuzz.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >"$TMP/probe.c"
"$CLANG" -fsanitize=fuzzer -o "$TMP/probe" "$TMP/probe.c" >/dev/null 2>&1 ||
    skip "$CLANG cannot link -fsanitize=fuzzer: Debian's libclang-rt-*-dev"

FLAGS="-std=c99 -Wall -Wextra -Wpedantic -Werror -O1 -g -D_GNU_SOURCE
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
NOPOOL="-DTN_NO_THREADS -DTN_FREE_LIST_MAX=0 -DTN_BUF_POOL=0 -DTN_HTTP_REQ_POOL=0"
# shellcheck disable=SC2086 # the flag lists split on purpose
"$CLANG" $FLAGS -o tests/fuzz_http tests/fuzz_http.c -pthread || { echo "fuzz: build of fuzz_http failed"; exit 1; }
# shellcheck disable=SC2086
"$CLANG" $FLAGS $NOPOOL -o tests/fuzz_server tests/fuzz_server.c || { echo "fuzz: build of fuzz_server failed"; exit 1; }
# shellcheck disable=SC2086
"$CLANG" $FLAGS $NOPOOL -o tests/fuzz_client tests/fuzz_client.c || { echo "fuzz: build of fuzz_client failed"; exit 1; }
OUT=${FUZZ_OUT:-tests}
mkdir -p "$TMP/http" "$TMP/server" "$TMP/client" "$OUT"

# fuzz_http seeds: selector byte (0 request, 1 response, 2 chunked body; +3k varies the split), message
C=$TMP/http
printf '\000GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n' >"$C/req1"
printf '\003POST /up HTTP/1.1\r\nHost: a:80\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n' >"$C/req2"
printf '\006GET http://h:1/p HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello' >"$C/req3"
printf '\001HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc' >"$C/resp1"
printf '\004HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n' >"$C/resp2"
printf '\007HTTP/1.0 204 No Content\r\nTransfer-Encoding: gzip, chunked\r\n\r\n' >"$C/resp3"
printf '\0025\r\nhello\r\n0\r\n\r\n' >"$C/chunk1"
printf '\005a;ext="q;v"\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n' >"$C/chunk2"

# fuzz_server seeds: flags byte (bits 0-1 how the client ends: 0 half-close, 1 close, 2 stay open,
# 3 reset; 4 default limits; 8 read nothing until the end; 16 free the server early; 32 no
# step between pieces; 64 graceful shutdown; 128 error and access hooks), k cuts (+ 56: a timer
# comes due with the client's end) and k piece sizes (byte + 1), the bytes
C=$TMP/server
H='Host: a\r\n'
printf "\\000\\000GET / HTTP/1.1\\r\\n$H\\r\\n" >"$C/get"
printf "\\000\\003\\004\\010\\020GET /p/x%%41?h=v HTTP/1.1\\r\\n$H\\r\\nPOST /echo HTTP/1.1\\r\\n${H}Content-Length: 5\\r\\n\\r\\nhelloGET /s/a/b HTTP/1.1\\r\\n$H\\r\\n" >"$C/pipeline"
printf "\\000\\002\\030\\002POST /echo HTTP/1.1\\r\\n${H}Transfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\n3;x=y\\r\\nabc\\r\\n0\\r\\nT: v\\r\\n\\r\\n" >"$C/chunked"
printf "\\002\\000POST /stream HTTP/1.1\\r\\n${H}Content-Length: 10\\r\\nExpect: 100-continue\\r\\n\\r\\n0123456789" >"$C/continue"
printf "\\000\\000GET /sleep HTTP/1.1\\r\\n$H\\r\\nGET /chunked HTTP/1.1\\r\\n$H\\r\\nGET /drain HTTP/1.1\\r\\n$H\\r\\nHEAD / HTTP/1.1\\r\\n$H\\r\\n" >"$C/coroutines"
printf "\\000\\000PUT /upload HTTP/1.1\\r\\n${H}Transfer-Encoding: chunked\\r\\n\\r\\n4\\r\\nabcd\\r\\n0\\r\\n\\r\\nPOST /small HTTP/1.1\\r\\n${H}Content-Length: 40\\r\\n\\r\\n0123456789012345678901234567890123456789" >"$C/bodies"
printf '\002\000GET /sle' >"$C/timeout"
printf "\\000\\000GET /fail HTTP/1.1\\r\\n$H\\r\\nGET /silent HTTP/1.0\\r\\n\\r\\nGET /cut HTTP/1.1\\r\\n$H\\r\\n" >"$C/errors"
printf "\\010\\000GET /big HTTP/1.1\\r\\n$H\\r\\nGET /big HTTP/1.1\\r\\n$H\\r\\nGET /big HTTP/1.1\\r\\n$H\\r\\n" >"$C/noread"
printf "\\100\\000GET /any HTTP/1.1\\r\\n$H\\r\\nDELETE /any HTTP/1.1\\r\\n${H}Connection: close\\r\\n\\r\\n" >"$C/shutdown"
printf "\\020\\000GET /sleep HTTP/1.1\\r\\n$H\\r\\n" >"$C/free"
printf "\\000\\000GET /nowhere HTTP/1.1\\r\\n$H\\r\\nPOST / HTTP/1.1\\r\\n$H\\r\\nBREW / HTTP/1.1\\r\\n$H\\r\\nGET / HTTP/2.0\\r\\n$H\\r\\n" >"$C/statuses"
printf "\\000\\000GET /static/a.txt HTTP/1.1\\r\\n$H\\r\\nGET /static/b.html HTTP/1.1\\r\\n${H}Range: bytes=10-19\\r\\n\\r\\nGET /static/sub/ HTTP/1.1\\r\\n$H\\r\\nGET /static/link.txt HTTP/1.1\\r\\n$H\\r\\nGET /static/../secret.txt HTTP/1.1\\r\\n$H\\r\\n" >"$C/static"
printf "\\200\\000POST /form?a=1&b=2 HTTP/1.1\\r\\n${H}Content-Type: application/x-www-form-urlencoded\\r\\nContent-Length: 11\\r\\nCookie: s=v; t=q\\r\\nAuthorization: Basic dXNlcjpwYXNz\\r\\n\\r\\na=3&b=4%%205" >"$C/form"
printf "\\200\\000GET /resp?ck=abc&path=/x&ss=Lax&st=60 HTTP/1.1\\r\\n$H\\r\\nGET /resp?to=/y&st=301 HTTP/1.1\\r\\n$H\\r\\nGET /resp?st=418 HTTP/1.1\\r\\n$H\\r\\nGET /resp?realm=r HTTP/1.1\\r\\n$H\\r\\n" >"$C/resp"
printf '\001\070POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc' >"$C/pause"
MP='--XX\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nfile --X data\r\n--XX\r\nContent-Disposition: form-data; name="g"\r\n\r\nvalue\r\n--XX--\r\n'
printf "\\000\\005\\050\\003\\001\\007\\020PUT /upload HTTP/1.1\\r\\n${H}Content-Type: multipart/form-data; boundary=XX\\r\\nContent-Length: 174\\r\\n\\r\\n${MP}POST /form HTTP/1.1\\r\\n${H}Content-Type: multipart/form-data; boundary=XX\\r\\nContent-Length: 174\\r\\n\\r\\n$MP" >"$C/multipart"

# fuzz_client seeds: flags byte (bits 0-1 GET, POST, HEAD, GET with headers; 4 on_chunk; 8 follow
# redirects; bits 4-5 how the server ends: 0 FIN, 16 half-close, 32 reset, 48 close unread;
# 64 max_body_bytes 100; 128 on_chunk fails past 64 bytes), k cuts (+ 56: 2 ms timeouts, due
# before the last piece) and k piece sizes, then what
# the server sends, one segment per connection, separated by <NEXT>
C=$TMP/client
printf '\000\000HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello' >"$C/length"
printf '\001\003\010\004\001HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\r\n\r\n' >"$C/chunked"
printf '\004\000HTTP/1.0 200 OK\r\n\r\nclose-delimited body' >"$C/close"
printf '\002\000HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' >"$C/head"
printf '\010\001\071HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok' >"$C/redirect"
printf '\010\000HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1/x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n<NEXT>HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok' >"$C/redirect2"
printf '\224\002\010\020HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n' >"$C/stream"
printf '\100\000HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n' >"$C/toolarge"
printf '\020\000HTTP/1.1 204 No Content\r\n\r\n' >"$C/nocontent"
printf '\043\000HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabcjunk' >"$C/reset"
printf '\000\000HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello<NEXT>HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond' >"$C/second"
printf '\000\071\020HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n0123456789012345678901234567890123456789012345678' >"$C/pause"

cat tests/fuzz_http.dict >"$TMP/http.dict"
cat tests/fuzz_http.dict tests/fuzz_server.dict >"$TMP/server.dict"
cat tests/fuzz_http.dict tests/fuzz_client.dict >"$TMP/client.dict"

EACH=$((SECS / 3))
[ "$EACH" -ge 1 ] || EACH=1
FIRST=$((SECS - 2 * EACH))
[ "$FIRST" -ge 1 ] || FIRST=1
# run NAME SECONDS MAX_LEN: one target; a finding ends the whole check
run() {
    name=$1
    echo "fuzz: tests/$name for ${2}s (libFuzzer, ASan + UBSan)"
    "./tests/$name" -max_total_time="$2" -timeout=10 -rss_limit_mb=2048 -max_len="$3" \
        -dict="$TMP/${name#fuzz_}.dict" -artifact_prefix="$OUT/" -print_final_stats=1 \
        "$TMP/${name#fuzz_}" >"$TMP/$name.log" 2>&1
    rc=$?
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$TMP/$name.log")
    rate=$(awk '/stat::average_exec_per_sec/ { print $2 }' "$TMP/$name.log")
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$TMP/$name.log" | tail -n 1)
    if [ $rc -ne 0 ]; then
        tail -n 40 "$TMP/$name.log"
        echo "fuzz: $name FAILED after ${runs:-?} inputs; the input is saved under $OUT/ (rerun: ./tests/$name FILE)"
        exit 1
    fi
    echo "fuzz: $name: ${runs:-?} inputs in ${2}s (${rate:-?}/s), ${cov:-cov: ?}, no failure"
}
run fuzz_http "$FIRST" 4096
run fuzz_server "$EACH" 4096
run fuzz_client "$EACH" 4096
exit 0
