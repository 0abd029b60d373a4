#!/bin/sh
# The compile matrix: the whole header, implementation included, warning-free
# under gcc and clang, as C99, C11 and C++, in every configuration.
set -u
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#define TORNADO_IMPLEMENTATION\n#include "tornado.h"\nint main(void) { return 0; }\n' > "$tmp/impl.c"
printf '#include "tornado.h"\nint tn_user(void);\nint tn_user(void) { return TN_OK; }\n' > "$tmp/decl.c"
# A coroutine using every macro, two awaits on one line, and (with
# TN_CO_LABELS) an await inside a switch of its own.
cat > "$tmp/co.c" <<'CO'
#include "tornado.h"
struct frame { tn_co co; int i, flag; };
int tn_matrix_co(tn_co *co);
int tn_matrix_co(tn_co *co) {
    struct frame *f = (struct frame *)co;
    TN_BEGIN(co);
    for (f->i = 0; f->i < 2; f->i++) { TN_SLEEP(co, 1); TN_YIELD(co); }
    TN_AWAIT(co, tn_sleep(co->loop, 1)); TN_AWAIT(co, tn_sleep(co->loop, 1));
    TN_WAIT_UNTIL(co, f->flag);
#ifdef TN_CO_LABELS
    switch (f->i) { case 2: TN_AWAIT(co, tn_sleep(co->loop, 1)); break; default: break; }
#endif
    if (co->err) TN_FAIL(co, co->err);
    TN_END(co);
}
CO
fail=0; n=0
for cc in gcc clang; do
    command -v $cc >/dev/null 2>&1 || { echo "skipped: $cc not installed"; [ "${CI:-}" = true ] && fail=1; continue; }
    cfgs='"" "-DTN_BACKEND_POLL" "-DTN_NO_THREADS" "-DTN_NO_THREADS -DTN_BACKEND_POLL" "-DTN_CO_LABELS"
          "-DTN_NO_HTTP_CLIENT" "-DTN_NO_HTTP_SERVER" "-DTN_NO_TCP" "-DTN_NO_EXECUTOR" "-DTN_NO_SIGNALS"
          "-DTN_HTTP_MINIMAL" "-DTN_HTTP_MINIMAL -DTN_NO_HTTP_CLIENT -DTN_NO_TCP -DTN_NO_EXECUTOR -DTN_NO_SIGNALS -DTN_NO_THREADS -DTN_BACKEND_POLL"
          "-DTN_NO_HTTP_SERVER -DTN_NO_HTTP_CLIENT -DTN_NO_TCP -DTN_NO_EXECUTOR -DTN_NO_SIGNALS"
          "-DTN_NO_MALLOC" "-DTN_NO_MALLOC -DTN_NO_THREADS -DTN_BACKEND_POLL"
          "-DTN_API=static" "-DTN_API=static -DTN_HTTP_MINIMAL -DTN_NO_THREADS -DTN_BACKEND_POLL"'
    # TLS builds need their library's headers (CI installs both)
    for tls in OPENSSL:openssl/ssl.h:libssl-dev MBEDTLS:mbedtls/ssl.h:libmbedtls-dev; do
        if printf '#include <%s>\n' "${tls#*:}" | sed 's/:.*>/>/' | $cc -E -x c - >/dev/null 2>&1; then
            cfgs="$cfgs \"-DTN_TLS_${tls%%:*}\" \"-DTN_TLS_${tls%%:*} -DTN_NO_THREADS -DTN_BACKEND_POLL\" \"-DTN_TLS_${tls%%:*} -DTN_API=static\""
        else
            echo "skipped: ${tls##*:} not installed (TLS builds)"; [ "${CI:-}" = true ] && fail=1
        fi
    done
    eval "set -- $(printf "%s" "$cfgs" | tr "\n" " ")"
    for cfg in "$@"; do
        for std in "-std=c99" "-std=c11" "-x c++ -std=c++11" "-x c++ -std=c++17"; do
            case "$std" in *c++*) comp=$([ $cc = gcc ] && echo g++ || echo clang++) ;; *) comp=$cc ;; esac
            # TN_API=static puts the implementation in the including file:
            # only the implementation build means anything there.
            case "$cfg" in *TN_API=static*) srcs=impl ;; *) srcs="impl decl co" ;; esac
            for src in $srcs; do
                n=$((n + 1))
                if ! $comp $std $cfg -Wall -Wextra -Wpedantic -Werror -I. -c "$tmp/$src.c" -o "$tmp/o.o" 2>"$tmp/err"; then
                    echo "FAIL: $comp $std $cfg ($src)"; sed 's/^/    /' "$tmp/err" | head -20; fail=1
                fi
            done
        done
    done
done
echo "compile matrix: $n builds, $([ $fail = 0 ] && echo all clean || echo FAILURES)"
exit $fail
