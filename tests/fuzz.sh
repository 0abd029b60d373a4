#!/bin/sh
# tests/fuzz.sh: builds tests/fuzz_http.c with clang's libFuzzer (ASan + UBSan) and runs it for
# FUZZ_SECS seconds (60) from a few seed messages and tests/fuzz_http.dict. A finding stops the run
# with the input saved under $FUZZ_OUT (default: tests/, as crash-*) and fails the check.
# Without clang's libFuzzer: "skipped: ..." locally, a failure under CI=true.
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
BIN=tests/fuzz_http
"$CLANG" -std=c99 -Wall -Wextra -Wpedantic -Werror -O1 -g -D_GNU_SOURCE \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -o "$BIN" tests/fuzz_http.c -pthread || { echo "fuzz: build failed"; exit 1; }
OUT=${FUZZ_OUT:-tests}
mkdir -p "$TMP/corpus" "$OUT"
# seeds: selector byte (0 request, 1 response, 2 chunked body; +3k varies the split), message
printf '\000GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n' >"$TMP/corpus/req1"
printf '\003POST /up HTTP/1.1\r\nHost: a:80\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n' >"$TMP/corpus/req2"
printf '\006GET http://h:1/p HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello' >"$TMP/corpus/req3"
printf '\001HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc' >"$TMP/corpus/resp1"
printf '\004HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n' >"$TMP/corpus/resp2"
printf '\007HTTP/1.0 204 No Content\r\nTransfer-Encoding: gzip, chunked\r\n\r\n' >"$TMP/corpus/resp3"
printf '\0025\r\nhello\r\n0\r\n\r\n' >"$TMP/corpus/chunk1"
printf '\005a;ext="q;v"\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n' >"$TMP/corpus/chunk2"
echo "fuzz: $BIN for ${SECS}s (libFuzzer, ASan + UBSan)"
"./$BIN" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -dict=tests/fuzz_http.dict -artifact_prefix="$OUT/" -print_final_stats=1 \
    "$TMP/corpus" >"$TMP/log" 2>&1
rc=$?
runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$TMP/log")
if [ $rc -ne 0 ]; then
    tail -n 40 "$TMP/log"
    echo "fuzz: FAILED after ${runs:-?} inputs; the input is saved under $OUT/ (rerun: ./$BIN FILE)"
    exit 1
fi
echo "fuzz: ${runs:-?} inputs in ${SECS}s, no failure"
exit 0
